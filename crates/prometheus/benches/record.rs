//! `Metric::record` on an existing series with three string labels, single-threaded.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use meshmeter_attributes::Value;
use meshmeter_prometheus::{MetricKind, MetricSpec, Registry};

fn record(c: &mut Criterion) {
    let labels = vec![
        "source_service".to_string(),
        "source_version".to_string(),
        "destination_version".to_string(),
    ];
    let registry = Registry::new([
        MetricSpec::new("istio_counter", MetricKind::Counter, labels.clone()),
        MetricSpec::new("istio_histogram", MetricKind::Distribution, labels),
    ])
    .expect("valid specs");
    let values = [
        Value::from("ratings-v2"),
        Value::from("v2"),
        Value::from("v1"),
    ];
    let counter = &registry.metrics()[0];
    let histogram = &registry.metrics()[1];
    counter.record(&values, 1.0).expect("recorded");
    histogram.record(&values, 1.0).expect("recorded");
    c.bench_function("counter_record_existing_3_string_labels", |b| {
        b.iter(|| counter.record(black_box(&values), black_box(100.0)))
    });
    c.bench_function("histogram_record_existing_3_string_labels", |b| {
        b.iter(|| histogram.record(black_box(&values), black_box(0.3)))
    });
    // Two workers hammering the same series: the worst case for the shared read lock and the
    // CAS add. Reported time is per record (wall time / total records).
    c.bench_function("counter_record_same_series_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters / 2 {
                            let _ = counter.record(black_box(&values), black_box(1.0));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
