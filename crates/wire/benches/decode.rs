//! Decoder throughput in bags per second.
//!
//! - `recorded/batch100`: the 100-bag request recorded from Istio's load client (every word
//!   per-message, DELTA_ENCODING, every bag complete);
//! - `synthetic/*`: TCP connection reports as Istio 1.1's proxy sends them (global dictionary,
//!   `default_words`, INDEPENDENT_ENCODING), and the same bags delta-encoded by our encoder;
//! - `synthetic/batch1`: one bag per request.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshmeter_attributes::Manifest;
use meshmeter_wire::{BagDecoder, Encoding, ReportEncoder};
use tcp_bags::tcp_bags;

#[path = "support/tcp_bags.rs"]
mod tcp_bags;

fn bench(c: &mut Criterion) {
    let manifest = Manifest::istio();
    let decoder = BagDecoder::new(&manifest);
    let mut group = c.benchmark_group("decode");

    let recorded = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/seed-batch-nodict/0001.pb"
    ))
    .unwrap();
    group.throughput(Throughput::Elements(100));
    group.bench_function("recorded/batch100", |b| {
        b.iter(|| {
            decoder.decode_report(black_box(&recorded), |_, bag| {
                black_box(bag.len());
            })
        })
    });

    let bags = tcp_bags(&manifest, 100);
    let istio_style = ReportEncoder::new(&manifest, Encoding::Independent)
        .with_default_words(true)
        .encode_to_vec(&bags);
    group.bench_function("synthetic/independent-global-batch100", |b| {
        b.iter(|| {
            decoder.decode_report(black_box(&istio_style), |_, bag| {
                black_box(bag.len());
            })
        })
    });
    let delta = ReportEncoder::new(&manifest, Encoding::Delta).encode_to_vec(&bags);
    group.bench_function("synthetic/delta-global-batch100", |b| {
        b.iter(|| {
            decoder.decode_report(black_box(&delta), |_, bag| {
                black_box(bag.len());
            })
        })
    });

    let single = ReportEncoder::new(&manifest, Encoding::Independent).encode_to_vec(&bags[..1]);
    group.throughput(Throughput::Elements(1));
    group.bench_function("synthetic/batch1", |b| {
        b.iter(|| {
            decoder.decode_report(black_box(&single), |_, bag| {
                black_box(bag.len());
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
