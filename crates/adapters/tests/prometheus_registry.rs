//! The Prometheus registry end to end: records in, exposition text out, reloads and expiry.

use std::time::{Duration, Instant};

use meshmeter_adapters::prometheus::{
    Buckets, MetricKind, MetricSpec, RecordError, Registry, SpecError,
};
use meshmeter_attributes::{StringMap, Value};

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn seed_specs() -> Vec<MetricSpec> {
    let names = labels(&["source_service", "source_version", "destination_version"]);
    let mut sent = MetricSpec::new("istio_mongo_sent_bytes", MetricKind::Counter, names.clone());
    sent.help = "mongo_sent_bytes".into();
    let mut received = MetricSpec::new("istio_mongo_received_bytes", MetricKind::Counter, names);
    received.help = "mongo_received_bytes".into();
    vec![sent, received]
}

fn text(registry: &Registry) -> String {
    let mut out = String::new();
    registry.encode(&mut out);
    out
}

#[test]
fn matches_mixers_output_for_the_seed_report() {
    let registry = Registry::new(seed_specs()).unwrap();
    assert_eq!(text(&registry), "", "empty body before the first report");
    let dims = [
        Value::from("ratings-v2"),
        Value::from("v2"),
        Value::from("v1"),
    ];
    registry.metrics()[0].record(&dims, 100.0).unwrap();
    registry.metrics()[1].record(&dims, 250.0).unwrap();
    // Mixer's own output for this report (reference/mixer-wire/seed-single/expected-metrics.txt).
    let golden = "# HELP istio_mongo_received_bytes mongo_received_bytes\n\
# TYPE istio_mongo_received_bytes counter\n\
istio_mongo_received_bytes{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"} 250\n\
# HELP istio_mongo_sent_bytes mongo_sent_bytes\n\
# TYPE istio_mongo_sent_bytes counter\n\
istio_mongo_sent_bytes{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"} 100\n";
    assert_eq!(text(&registry), golden);
}

#[test]
fn counters_add_gauges_set_and_labels_escape() {
    let registry = Registry::new([
        MetricSpec::new("c", MetricKind::Counter, labels(&["b", "a"])),
        MetricSpec::new("g", MetricKind::Gauge, vec![]),
    ])
    .unwrap();
    let c = &registry.metrics()[0];
    let g = &registry.metrics()[1];
    let map: StringMap<'_> = [("version", "v1"), ("app", "x")].into_iter().collect();
    c.record(&[Value::from("q\"b\\s\nn"), Value::from(map)], 1.5)
        .unwrap();
    c.record(&[Value::Int64(7), Value::Bool(true)], 2.0)
        .unwrap();
    c.record(&[Value::Int64(7), Value::Bool(true)], 3.0)
        .unwrap();
    g.record(&[], 5.0).unwrap();
    g.record(&[], -2.5).unwrap();
    assert_eq!(
        text(&registry),
        "# HELP c c\n# TYPE c counter\n\
         c{a=\"app=x&version=v1\",b=\"q\\\"b\\\\s\\nn\"} 1.5\n\
         c{a=\"true\",b=\"7\"} 5\n\
         # HELP g g\n# TYPE g gauge\ng -2.5\n"
    );
    assert_eq!(
        c.record(&[Value::Int64(7)], 1.0),
        Err(RecordError::LabelCount {
            expected: 2,
            got: 1
        })
    );
    assert_eq!(
        c.record(&[Value::Int64(7), Value::Bool(true)], -1.0),
        Err(RecordError::InvalidIncrement(-1.0))
    );
}

#[test]
fn histograms_bucket_inclusively() {
    let registry = Registry::new([
        MetricSpec::new(
            "h",
            MetricKind::Distribution {
                buckets: Buckets::Explicit(vec![1.0, 2.5]),
            },
            labels(&["x"]),
        ),
        MetricSpec::new(
            "d",
            MetricKind::Distribution {
                buckets: Buckets::Default,
            },
            vec![],
        ),
    ])
    .unwrap();
    let h = &registry.metrics()[0];
    for v in [0.5, 1.0, 2.0, 3.0, f64::NAN] {
        h.record(&[Value::from("a")], v).unwrap();
    }
    registry.metrics()[1].record(&[], 0.02).unwrap();
    let out = text(&registry);
    assert!(
        out.ends_with(
            "# HELP h h\n# TYPE h histogram\n\
         h_bucket{x=\"a\",le=\"1\"} 2\n\
         h_bucket{x=\"a\",le=\"2.5\"} 3\n\
         h_bucket{x=\"a\",le=\"+Inf\"} 5\n\
         h_sum{x=\"a\"} NaN\n\
         h_count{x=\"a\"} 5\n"
        ),
        "{out}"
    );
    assert!(
        out.starts_with(
            "# HELP d d\n# TYPE d histogram\n\
         d_bucket{le=\"0.005\"} 0\n\
         d_bucket{le=\"0.01\"} 0\n\
         d_bucket{le=\"0.025\"} 1\n"
        ),
        "{out}"
    );
    assert!(out.contains("d_bucket{le=\"10\"} 1\nd_bucket{le=\"+Inf\"} 1\nd_sum 0.02\nd_count 1\n"));
}

#[test]
fn series_limit_drops_and_counts() {
    let mut spec = MetricSpec::new("c", MetricKind::Counter, labels(&["port"]));
    spec.series_limit = 2;
    let registry = Registry::new([spec]).unwrap();
    let c = &registry.metrics()[0];
    for port in 0..5 {
        let r = c.record(&[Value::Int64(port)], 1.0);
        if port < 2 {
            assert_eq!(r, Ok(()));
        } else {
            assert_eq!(r, Err(RecordError::SeriesLimit { limit: 2 }));
        }
    }
    c.record(&[Value::Int64(1)], 1.0).unwrap();
    assert_eq!(c.series_count(), 2);
    assert_eq!(c.dropped_series(), 3);
    assert_eq!(
        registry.dropped_series().collect::<Vec<_>>(),
        vec![("c", 3)]
    );
    assert_eq!(
        text(&registry),
        "# HELP c c\n# TYPE c counter\nc{port=\"0\"} 1\nc{port=\"1\"} 2\n"
    );
    let mut own = String::new();
    registry.encode_self(&mut own);
    assert_eq!(
        own,
        "# HELP meshmeter_prometheus_dropped_series_total New series refused because the metric held its series limit.\n\
         # TYPE meshmeter_prometheus_dropped_series_total counter\n\
         meshmeter_prometheus_dropped_series_total{metric=\"c\"} 3\n\
         # HELP meshmeter_prometheus_series Series held per configured metric.\n\
         # TYPE meshmeter_prometheus_series gauge\n\
         meshmeter_prometheus_series{metric=\"c\"} 2\n"
    );
}

#[test]
fn rebuild_keeps_unchanged_definitions_only() {
    let mut specs = seed_specs();
    specs.push(MetricSpec::new("gone", MetricKind::Gauge, vec![]));
    let old = Registry::new(specs).unwrap();
    let dims = [Value::from("r"), Value::from("v2"), Value::from("v1")];
    old.metrics()[0].record(&dims, 10.0).unwrap();
    old.metrics()[1].record(&dims, 20.0).unwrap();
    old.metrics()[2].record(&[], 1.0).unwrap();

    let mut new_specs = seed_specs();
    new_specs[0].help = "new help".into(); // help is not part of the definition
    new_specs[1].label_names.pop(); // changed labels: starts fresh
    new_specs.push(MetricSpec::new("added", MetricKind::Counter, vec![]));
    let new = old.rebuild(new_specs).unwrap();
    assert_eq!(new.metrics().len(), 3);
    // A worker still holding the old handle keeps recording into the carried-over series.
    old.metrics()[0].record(&dims, 1.0).unwrap();
    new.metrics()[0].record(&dims, 1.0).unwrap();
    assert_eq!(
        text(&new),
        "# HELP istio_mongo_sent_bytes new help\n# TYPE istio_mongo_sent_bytes counter\n\
         istio_mongo_sent_bytes{destination_version=\"v1\",source_service=\"r\",source_version=\"v2\"} 12\n"
    );
    assert_eq!(
        new.get("istio_mongo_received_bytes")
            .unwrap()
            .series_count(),
        0
    );
    assert!(new.get("gone").is_none());

    // A changed kind or buckets resets too.
    let h = |b: Vec<f64>| {
        MetricSpec::new(
            "h",
            MetricKind::Distribution {
                buckets: Buckets::Explicit(b),
            },
            vec![],
        )
    };
    let r1 = Registry::new([h(vec![1.0])]).unwrap();
    r1.metrics()[0].record(&[], 0.5).unwrap();
    assert_eq!(r1.rebuild([h(vec![1.0])]).unwrap().series_count(), 1);
    assert_eq!(r1.rebuild([h(vec![2.0])]).unwrap().series_count(), 0);
    let counter = MetricSpec::new("h", MetricKind::Counter, vec![]);
    assert_eq!(r1.rebuild([counter]).unwrap().series_count(), 0);
}

#[test]
fn invalid_specs_are_refused() {
    let c = |n: &str| MetricSpec::new(n, MetricKind::Counter, vec![]);
    assert_eq!(
        Registry::new([c("a"), c("a")]).unwrap_err(),
        SpecError::DuplicateMetric("a".into())
    );
    assert_eq!(
        Registry::new([c("a-b")]).unwrap_err(),
        SpecError::MetricName("a-b".into())
    );
}

#[test]
fn idle_series_expire() {
    let mut spec = MetricSpec::new("g", MetricKind::Gauge, labels(&["k"]));
    spec.expiry = Some(Duration::from_secs(60));
    let registry =
        Registry::new([spec, MetricSpec::new("c", MetricKind::Counter, vec![])]).unwrap();
    assert_eq!(registry.sweep_interval(), Some(Duration::from_secs(30)));
    let start = Instant::now();
    let g = &registry.metrics()[0];
    g.record(&[Value::from("old")], 1.0).unwrap();
    registry.metrics()[1].record(&[], 1.0).unwrap();
    assert_eq!(registry.sweep_at(start + Duration::from_secs(40)), 0);
    g.record(&[Value::from("fresh")], 2.0).unwrap(); // created now: stamped with real time
    g.record(&[Value::from("old")], 3.0).unwrap(); // stamped with the sweep clock (+40 s)
    assert_eq!(registry.sweep_at(start + Duration::from_secs(90)), 0);
    // `fresh` was created at about `start`, so at +125 s it has idled for more than 60 s;
    // `old` was last stamped at +40 s: 85 s idle.
    assert_eq!(registry.sweep_at(start + Duration::from_secs(125)), 2);
    assert_eq!(g.series_count(), 0);
    assert_eq!(text(&registry), "# HELP c c\n# TYPE c counter\nc 1\n");
}

#[test]
fn concurrent_records_are_all_counted() {
    let registry =
        Registry::new([MetricSpec::new("c", MetricKind::Counter, labels(&["k"]))]).unwrap();
    let c = registry.metrics()[0].clone();
    std::thread::scope(|s| {
        for t in 0..4 {
            let c = c.clone();
            s.spawn(move || {
                for i in 0..10_000i64 {
                    c.record(&[Value::Int64((i + t) % 8)], 1.0).unwrap();
                }
            });
        }
    });
    assert_eq!(c.series_count(), 8);
    let out = text(&registry);
    let total: f64 = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 40_000.0);
}

#[test]
fn reload_while_recording_loses_nothing() {
    use arc_swap::ArcSwap;
    use std::sync::Arc;

    let current = Arc::new(ArcSwap::from_pointee(Registry::new(seed_specs()).unwrap()));
    let per_thread = 20_000u32;
    std::thread::scope(|s| {
        for _ in 0..3 {
            let current = Arc::clone(&current);
            s.spawn(move || {
                let dims = [Value::from("r"), Value::from("v2"), Value::from("v1")];
                for _ in 0..per_thread {
                    current.load().metrics()[0].record(&dims, 1.0).unwrap();
                }
            });
        }
        let current = Arc::clone(&current);
        s.spawn(move || {
            for generation in 0..200 {
                let mut specs = seed_specs();
                specs[0].help = format!("generation {generation}");
                let next = current.load().rebuild(specs).unwrap();
                current.store(Arc::new(next));
            }
        });
    });
    let final_text = text(&current.load());
    let sample = final_text
        .lines()
        .find(|l| l.starts_with("istio_mongo_sent_bytes{"))
        .unwrap();
    assert!(
        sample.ends_with(&format!(" {}", 3 * per_thread)),
        "{sample}"
    );
}

#[test]
fn a_removed_metric_is_held_for_its_grace_and_continues_when_restored() {
    let grace = Duration::from_secs(300);
    let t0 = Instant::now();
    let r1 = Registry::new(seed_specs()).unwrap();
    let dims = [Value::from("r"), Value::from("v2"), Value::from("v1")];
    r1.metrics()[0].record(&dims, 10.0).unwrap();
    r1.metrics()[1].record(&dims, 20.0).unwrap();

    // The reload drops istio_mongo_received_bytes: held, not exposed.
    let r2 = r1
        .rebuild_holding_at(seed_specs()[..1].to_vec(), grace, t0)
        .unwrap();
    assert_eq!(r2.held_metrics(), ["istio_mongo_received_bytes"]);
    assert!(r2.get("istio_mongo_received_bytes").is_none());
    assert!(!text(&r2).contains("received"));
    assert_eq!(r2.sweep_at(t0 + grace / 2), 0, "within the grace: kept");
    assert_eq!(r2.sweep_interval(), Some(grace / 2));

    // Restored within the grace: the counter continues.
    let r3 = r2
        .rebuild_holding_at(seed_specs(), grace, t0 + grace / 2)
        .unwrap();
    assert!(r3.held_metrics().is_empty());
    r3.get("istio_mongo_received_bytes")
        .unwrap()
        .record(&dims, 5.0)
        .unwrap();
    assert!(text(&r3).contains(
        "istio_mongo_received_bytes{destination_version=\"v1\",source_service=\"r\",source_version=\"v2\"} 25\n"
    ));

    // Removed again, then the grace passes: a sweep drops it (1 series) ...
    let r4 = r3
        .rebuild_holding_at(seed_specs()[..1].to_vec(), grace, t0)
        .unwrap();
    assert_eq!(r4.sweep_at(t0 + grace), 1);
    assert!(r4.held_metrics().is_empty());
    let r5 = r4
        .rebuild_holding_at(seed_specs(), grace, t0 + grace)
        .unwrap();
    assert_eq!(
        r5.get("istio_mongo_received_bytes").unwrap().series_count(),
        0
    );
    // ... and so does a rebuild after the grace, without any sweep.
    r5.get("istio_mongo_received_bytes")
        .unwrap()
        .record(&dims, 1.0)
        .unwrap();
    let r6 = r5
        .rebuild_holding_at(seed_specs()[..1].to_vec(), grace, t0)
        .unwrap();
    let r7 = r6
        .rebuild_holding_at(seed_specs(), grace, t0 + grace)
        .unwrap();
    assert_eq!(
        r7.get("istio_mongo_received_bytes").unwrap().series_count(),
        0
    );
    // A zero grace holds nothing.
    let r8 = r1
        .rebuild_holding_at(seed_specs()[..1].to_vec(), Duration::ZERO, t0)
        .unwrap();
    assert!(r8.held_metrics().is_empty());
    assert_eq!(r8.sweep_interval(), None);
}
