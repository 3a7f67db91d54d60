//! Decodes one request file N times, for profiling and CPU-time measurement on a busy machine
//! (`perf stat -e task-clock target/release/examples/decode_loop FILE N`): the CPU time
//! divided by N times the bag count is the cost per bag, whatever else the machine runs.

use std::hint::black_box;

use meshmeter_attributes::Manifest;
use meshmeter_wire::BagDecoder;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(n)) = (args.next(), args.next()) else {
        eprintln!("usage: decode_loop FILE ITERATIONS");
        std::process::exit(2);
    };
    let bytes = std::fs::read(&path).expect("readable request file");
    let n: usize = n.parse().expect("ITERATIONS is a number");
    let decoder = BagDecoder::new(&Manifest::istio());
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
