//! Decoder throughput in bags per second.
//!
//! - `recorded/batch100`: the 100-bag request recorded from Istio's load client (every word
//!   per-message, DELTA_ENCODING, every bag complete);
//! - `synthetic/*`: TCP connection reports as Istio 1.1's proxy sends them (global dictionary,
//!   `default_words`, INDEPENDENT_ENCODING), and the same bags delta-encoded by our encoder;
//! - `synthetic/batch1`: one bag per request.

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshmeter_attributes::{Bag, Duration, Manifest, StringMap, Value};
use meshmeter_wire::{BagDecoder, Encoding, ReportEncoder};

fn tcp_bags(manifest: &Manifest, n: usize) -> Vec<Bag<'static>> {
    let id = |name: &str| manifest.id(name).unwrap();
    (0..n)
        .map(|i| {
            let mut bag = Bag::new(manifest);
            let labels = |app: &str, v: usize| -> Value<'static> {
                let m: StringMap<'static> = [("app", app.to_owned()), ("version", format!("v{v}"))]
                    .into_iter()
                    .collect();
                Value::StringMap(Cow::Owned(m))
            };
            bag.set(id("context.protocol"), Value::from("tcp"));
            bag.set(id("connection.event"), Value::from("continue"));
            bag.set(id("connection.id"), Value::from(format!("8f1c-{}", i % 7)));
            bag.set(id("connection.sent.bytes"), Value::Int64(100 + i as i64));
            bag.set(id("connection.received.bytes"), Value::Int64(50 + i as i64));
            bag.set(
                id("connection.sent.bytes_total"),
                Value::Int64(10_000 + i as i64),
            );
            bag.set(
                id("connection.received.bytes_total"),
                Value::Int64(5_000 + i as i64),
            );
            bag.set(
                id("connection.duration"),
                Value::Duration(Duration::from_secs(10)),
            );
            bag.set(
                id("source.ip"),
                Value::IpAddress([10, 0, 0, (i % 250) as u8].into()),
            );
            bag.set(id("destination.port"), Value::Int64(27017));
            bag.set(
                id("source.workload.name"),
                Value::from(format!("ratings-v{}", i % 2 + 1)),
            );
            bag.set(
                id("destination.service.host"),
                Value::from("mongodb.default.svc.cluster.local"),
            );
            bag.set(id("destination.namespace"), Value::from("default"));
            bag.set(id("context.reporter.kind"), Value::from("inbound"));
            bag.set(id("source.labels"), labels("ratings", i % 2 + 1));
            bag.set(id("destination.labels"), labels("mongodb", i % 3 + 1));
            bag
        })
        .collect()
}

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
