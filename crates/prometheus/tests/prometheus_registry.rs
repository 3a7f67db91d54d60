//! The Prometheus registry end to end: records in, exposition text out, reloads and expiry.

use std::time::{Duration, Instant};

use meshmeter_attributes::{StringMap, Value};
use meshmeter_prometheus::{
    MetricKind, MetricSpec, RecordError, Registry, SpecError, MAX_LABEL_VALUE_BYTES,
};

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
         c{a=\"stringmap[app:x version:v1]\",b=\"q\\\"b\\\\s\\nn\"} 1.5\n\
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
        MetricSpec::histogram("h", vec![1.0, 2.5], labels(&["x"])),
        MetricSpec::new("d", MetricKind::Distribution, vec![]),
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
        "# HELP meshmeter_prometheus_dropped_series_total New series refused because the metric held its series limit or label bytes limit.\n\
         # TYPE meshmeter_prometheus_dropped_series_total counter\n\
         meshmeter_prometheus_dropped_series_total{metric=\"c\"} 3\n\
         # HELP meshmeter_prometheus_series Series held per configured metric.\n\
         # TYPE meshmeter_prometheus_series gauge\n\
         meshmeter_prometheus_series{metric=\"c\"} 2\n\
         # HELP meshmeter_prometheus_truncated_label_values_total Label values cut to the longest kept length (1024 bytes).\n\
         # TYPE meshmeter_prometheus_truncated_label_values_total counter\n\
         meshmeter_prometheus_truncated_label_values_total{metric=\"c\"} 0\n"
    );
}

#[test]
fn long_label_values_are_cut_at_a_char_boundary_and_counted() {
    let spec = MetricSpec::new("c", MetricKind::Counter, vec!["v".into()]);
    let registry = Registry::new([spec]).unwrap();
    let c = &registry.metrics()[0];
    // 1023 ASCII bytes then a 2-byte 'é': the cut falls inside it, so it goes.
    let base = "a".repeat(MAX_LABEL_VALUE_BYTES - 1);
    let long_a = format!("{base}é and a megabyte more");
    let long_b = format!("{base}é but another tail");
    c.record(&[Value::String(long_a.as_str().into())], 1.0)
        .unwrap();
    c.record(&[Value::String(long_b.into())], 2.0).unwrap();
    c.record(&[Value::String(base.clone().into())], 4.0)
        .unwrap();
    let exact = "b".repeat(MAX_LABEL_VALUE_BYTES);
    c.record(&[Value::String(exact.as_str().into())], 8.0)
        .unwrap();
    // Both long values share the kept prefix, which equals `base`: one series.
    assert_eq!(c.series_count(), 2);
    assert_eq!(c.truncated_label_values(), 2);
    assert_eq!(
        text(&registry),
        format!("# HELP c c\n# TYPE c counter\nc{{v=\"{base}\"}} 7\nc{{v=\"{exact}\"}} 8\n")
    );
    let mut own = String::new();
    registry.encode_self(&mut own);
    assert!(
        own.ends_with("\nmeshmeter_prometheus_truncated_label_values_total{metric=\"c\"} 2\n"),
        "{own}"
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
    let h = |b: Vec<f64>| MetricSpec::histogram("h", b, vec![]);
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

#[test]
fn whole_number_counter_increments_stay_exact_beyond_2_pow_53() {
    let registry = Registry::new([
        MetricSpec::new("c", MetricKind::Counter, vec![]),
        MetricSpec::new("m", MetricKind::Counter, vec![]),
        MetricSpec::new("big", MetricKind::Counter, vec![]),
    ])
    .unwrap();
    let [c, m, big] = registry.metrics() else {
        panic!("three metrics")
    };
    // A float sum would stay at 2^53: 2^53 + 1 rounds back down.
    for v in [9_007_199_254_740_992.0, 1.0, 1.0] {
        c.record(&[], v).unwrap();
    }
    // Fractions go to the float part; whole numbers still add exactly.
    for v in [0.5, 9_007_199_254_740_992.0, 1.0, 1.0, 0.25] {
        m.record(&[], v).unwrap();
    }
    // NaN and negative increments are refused (Mixer stuck at NaN or panicked); the total
    // is untouched.
    assert!(matches!(c.record(&[], f64::NAN), Err(RecordError::InvalidIncrement(v)) if v.is_nan()));
    assert_eq!(
        c.record(&[], -1.0),
        Err(RecordError::InvalidIncrement(-1.0))
    );
    // Past 2^64 the integer part would wrap (Mixer's did): ours goes on in the float part.
    for v in [1.8e19, 1.8e19] {
        big.record(&[], v).unwrap();
    }
    assert_eq!(
        text(&registry),
        "# HELP big big\n# TYPE big counter\nbig 3.6e+19\n\
         # HELP c c\n# TYPE c counter\nc 9.007199254740994e+15\n\
         # HELP m m\n# TYPE m counter\nm 9.007199254740994e+15\n"
    );
}

#[test]
fn samples_and_bounds_print_as_go_does() {
    let h = MetricSpec::histogram("h", vec![-0.0, 1e-7, 0.005, 1e6, 1_234_567.0], vec![]);
    let registry = Registry::new([h, MetricSpec::new("g", MetricKind::Gauge, vec![])]).unwrap();
    registry.metrics()[0].record(&[], 2e6).unwrap();
    registry.metrics()[1]
        .record(&[], 9.223372036854776e18)
        .unwrap();
    assert_eq!(
        text(&registry),
        "# HELP g g\n# TYPE g gauge\ng 9.223372036854776e+18\n\
         # HELP h h\n# TYPE h histogram\n\
         h_bucket{le=\"-0\"} 0\n\
         h_bucket{le=\"1e-07\"} 0\n\
         h_bucket{le=\"0.005\"} 0\n\
         h_bucket{le=\"1e+06\"} 0\n\
         h_bucket{le=\"1.234567e+06\"} 0\n\
         h_bucket{le=\"+Inf\"} 1\n\
         h_sum 2e+06\n\
         h_count 1\n"
    );
}

#[test]
fn exposition_in_chunks_is_the_same_text_and_each_chunk_is_bounded() {
    let counter = MetricSpec::new("a_requests", MetricKind::Counter, labels(&["path"]));
    let empty = MetricSpec::new("b_idle", MetricKind::Gauge, labels(&["path"]));
    let mut hist = MetricSpec::histogram("c_latency", vec![1.0, 10.0, 100.0], labels(&["path"]));
    hist.series_limit = 1_000_000;
    let mut counter = counter;
    counter.series_limit = 1_000_000;
    let registry = Registry::new([counter, empty, hist]).unwrap();
    for n in 0..2000 {
        let path = Value::from(format!("/p/{n:05}"));
        registry.metrics()[0]
            .record(std::slice::from_ref(&path), n as f64)
            .unwrap();
        if n % 5 == 0 {
            registry.metrics()[2].record(&[path], n as f64).unwrap();
        }
    }
    let whole = text(&registry);
    assert_eq!(whole.lines().count(), 2 + 2000 + 2 + 400 * 6);

    const FILL: usize = 4096;
    // The longest series block: a histogram series' six lines.
    let longest = whole
        .lines()
        .filter(|l| l.starts_with("c_latency_bucket"))
        .map(|l| l.len() + 1)
        .max()
        .unwrap()
        * 6;
    let mut exposition = registry.exposition();
    let mut chunks = Vec::new();
    loop {
        let mut chunk = String::new();
        if !exposition.next_chunk(&mut chunk, FILL) {
            assert_eq!(chunk, "", "a finished exposition appends nothing");
            break;
        }
        assert!(
            chunk.len() < FILL + longest,
            "chunk of {} bytes",
            chunk.len()
        );
        chunks.push(chunk);
    }
    assert!(!exposition.next_chunk(&mut String::new(), FILL));
    let (last, full) = chunks.split_last().unwrap();
    assert!(full.iter().all(|c| c.len() >= FILL));
    assert!(!last.is_empty());
    assert!(chunks.len() > whole.len() / (FILL + longest));
    assert!(
        chunks.concat() == whole,
        "chunked text differs from encode's"
    );
}

#[test]
fn label_bytes_limit_drops_and_counts_and_sweeps_free_the_budget() {
    let mut spec = MetricSpec::new("c", MetricKind::Counter, labels(&["path"]));
    assert_eq!(
        spec.label_bytes_limit,
        meshmeter_prometheus::DEFAULT_LABEL_BYTES_LIMIT
    );
    assert_eq!(spec.label_bytes_limit, 64 << 20);
    // `path="/a"` is 9 bytes of label text: three such series fit in 34, a fourth does not.
    spec.label_bytes_limit = 34;
    spec.expiry = Some(Duration::from_secs(60));
    let registry = Registry::new([spec]).unwrap();
    let c = &registry.metrics()[0];
    for p in ["/a", "/b", "/c"] {
        c.record(&[Value::from(p)], 1.0).unwrap();
    }
    assert_eq!(c.label_bytes(), 27);
    assert_eq!(
        c.record(&[Value::from("/d")], 1.0),
        Err(RecordError::LabelBytesLimit { limit: 34 })
    );
    // A shorter one (`path=""`, 7 bytes) still fits: 27 + 7 = 34, the limit is inclusive.
    c.record(&[Value::from("")], 1.0).unwrap();
    assert_eq!(c.label_bytes(), 34);
    assert_eq!(
        c.record(&[Value::from("")], 1.0),
        Ok(()),
        "an existing series records at the limit"
    );
    c.record(&[Value::from("/a")], 2.0).unwrap();
    assert_eq!(
        c.record(&[Value::from("/e")], 1.0),
        Err(RecordError::LabelBytesLimit { limit: 34 })
    );
    assert_eq!(c.series_count(), 4);
    assert_eq!(c.dropped_series(), 2);
    assert_eq!(
        text(&registry),
        "# HELP c c\n# TYPE c counter\nc{path=\"\"} 2\nc{path=\"/a\"} 3\nc{path=\"/b\"} 1\nc{path=\"/c\"} 1\n"
    );
    let mut own = String::new();
    registry.encode_self(&mut own);
    assert!(
        own.contains("meshmeter_prometheus_dropped_series_total{metric=\"c\"} 2\n"),
        "{own}"
    );
    // Expired series give their bytes back.
    assert_eq!(
        registry.sweep_at(Instant::now() + Duration::from_secs(120)),
        4
    );
    assert_eq!(c.label_bytes(), 0);
    c.record(&[Value::from("/d")], 1.0).unwrap();
    assert_eq!(c.label_bytes(), 9);
}
