//! Decodes one request (a file, or a synthetic batch) N times, for profiling and CPU-time measurement on a busy machine
//! (`perf stat -e task-clock target/release/examples/decode_loop FILE N`): the CPU time
//! divided by N times the bag count is the cost per bag, whatever else the machine runs.

use std::hint::black_box;

use meshmeter_attributes::Manifest;
use meshmeter_wire::{BagDecoder, Encoding, ReportEncoder};

#[path = "../benches/support/tcp_bags.rs"]
mod tcp_bags;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(n)) = (args.next(), args.next()) else {
        eprintln!("usage: decode_loop FILE|synthetic-independent|synthetic-delta|synthetic-single ITERATIONS");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("ITERATIONS is a number");
    let manifest = Manifest::istio();
    let synthetic = |count, encoding, defaults| {
        ReportEncoder::new(&manifest, encoding)
            .with_default_words(defaults)
            .encode_to_vec(&tcp_bags::tcp_bags(&manifest, count))
    };
    let bytes = match path.as_str() {
        "synthetic-independent" => synthetic(100, Encoding::Independent, true),
        "synthetic-delta" => synthetic(100, Encoding::Delta, false),
        "synthetic-single" => synthetic(1, Encoding::Independent, false),
        file => std::fs::read(file).expect("readable request file"),
    };
    let decoder = BagDecoder::new(&manifest);
    let mut bags = 0;
    for _ in 0..n {
        let summary = decoder
            .decode_report(black_box(&bytes), |_, bag| {
                black_box(bag.len());
            })
            .expect("a valid request");
        bags += summary.bags;
    }
    println!("{bags} bags decoded");
}
