//! The reference configurations load, and compile into the snapshot the engine expects.

use std::path::PathBuf;

use meshmeter_attributes::{Bag, Value, ValueType};
use meshmeter_config::{
    load_paths, load_str, Buckets, Counts, HandlerParams, InstanceParams, LoadOptions, LogStream,
    MetricKind, Origin, Severity,
};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn without_defaults() -> LoadOptions {
    LoadOptions {
        include_defaults: false,
        ..LoadOptions::default()
    }
}

const SEED_COUNTS: Counts = Counts {
    instances: 2,
    handlers: 1,
    rules: 1,
};
const DEFAULT_COUNTS: Counts = Counts {
    instances: 11,
    handlers: 3,
    rules: 8,
};

#[test]
fn both_seed_spellings_load_alone_and_over_the_defaults() {
    for file in ["tcp-metrics.yaml", "tcp-metrics-crd.yaml"] {
        let alone = load_paths(&[data(file)], &without_defaults()).unwrap();
        assert_eq!(alone.user_counts(), SEED_COUNTS, "{file}");
        assert!(
            alone.diagnostics().is_empty(),
            "{file}: {}",
            alone.diagnostics()
        );
        let with = load_paths(&[data(file)], &LoadOptions::default()).unwrap();
        assert_eq!(with.user_counts(), SEED_COUNTS, "{file}");
        assert_eq!(with.default_counts(), DEFAULT_COUNTS, "{file}");
    }
}

#[test]
fn the_default_config_replaces_the_embedded_one_object_by_object() {
    let s = load_paths(
        &[data("default-telemetry-config.yaml")],
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(s.user_counts(), DEFAULT_COUNTS);
    assert_eq!(s.default_counts(), Counts::default());
    let alone = load_paths(
        &[data("default-telemetry-config.yaml")],
        &without_defaults(),
    )
    .unwrap();
    assert_eq!(alone.user_counts(), DEFAULT_COUNTS);
}

#[test]
fn a_directory_is_read_recursively_and_other_kinds_are_skipped() {
    let dir = std::env::temp_dir().join(format!("meshmeter-config-dir-{}", std::process::id()));
    let nested = dir.join("nested");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(
        nested.join("seed.yml"),
        include_str!("data/tcp-metrics.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.join("vs.yaml"),
        include_str!("data/virtual-service-ratings-db.yaml"),
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not: [yaml").unwrap();
    std::fs::create_dir_all(dir.join("..data")).unwrap();
    std::fs::write(
        dir.join("..data/seed.yaml"),
        include_str!("data/tcp-metrics.yaml"),
    )
    .unwrap();
    let s = load_paths(std::slice::from_ref(&dir), &without_defaults()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(s.user_counts(), SEED_COUNTS);
    let infos: Vec<_> = s
        .diagnostics()
        .iter()
        .map(|d| (d.severity, d.code, d.line))
        .collect();
    assert_eq!(
        infos,
        [(Severity::Info, "I0001", 2), (Severity::Info, "I0001", 15)]
    );
}

#[test]
fn the_seed_compiles_to_the_expected_snapshot() {
    let s = load_paths(&[data("tcp-metrics.yaml")], &without_defaults()).unwrap();
    assert_eq!(s.instances.len(), 2);
    assert_eq!(
        s.instances[0].name.to_string(),
        "mongosentbytes.instance.default"
    );
    assert_eq!(s.instances[0].origin, Origin::User);
    let InstanceParams::Metric(m) = &s.instances[0].params else {
        panic!("not a metric");
    };
    assert_eq!(m.value.source(), "connection.sent.bytes | 0");
    assert_eq!(m.value.result_type(), ValueType::Int64);
    let dims: Vec<_> = m.dimensions.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        dims,
        ["source_service", "source_version", "destination_version"]
    );

    let HandlerParams::Prometheus(p) = &s.handlers[0].params else {
        panic!("not prometheus");
    };
    let names: Vec<_> = p.metrics.iter().map(|m| m.full_name.as_str()).collect();
    assert_eq!(
        names,
        ["istio_mongo_sent_bytes", "istio_mongo_received_bytes"]
    );
    assert_eq!(p.metrics[0].kind, MetricKind::Counter);
    assert_eq!(p.metrics[0].instance, 0);
    assert_eq!(p.metrics[1].instance, 1);
    assert_eq!(p.metrics[0].label_dimensions, [0, 1, 2]);
    // Mixer's HELP without a description is the configured name, without the namespace.
    assert_eq!(p.metrics[0].help, "mongo_sent_bytes");
    assert!(p.metrics[0].bounds.is_empty());

    let rule = &s.rules[0];
    assert_eq!(
        rule.match_.as_ref().map(|m| m.source()),
        Some("context.protocol == \"tcp\" && destination.service.host == \"mongodb.default.svc.cluster.local\"")
    );
    assert_eq!(rule.actions.len(), 1);
    assert_eq!(rule.actions[0].handler, 0);
    assert_eq!(rule.actions[0].instances, [1, 0]);
    assert!(!s.uses_workload_identity());
}

#[test]
fn the_defaults_compile_with_their_buckets_expiry_and_log_entries() {
    let s = load_paths(&[], &LoadOptions::default()).unwrap();
    let prom = s
        .handlers
        .iter()
        .find_map(|h| match &h.params {
            HandlerParams::Prometheus(p) => Some(p),
            _ => None,
        })
        .unwrap();
    let expiry = prom.expiry.unwrap();
    assert_eq!(expiry.expiry, std::time::Duration::from_secs(600));
    assert_eq!(expiry.check_interval, std::time::Duration::from_secs(300));
    let by_name = |n: &str| prom.metrics.iter().find(|m| m.full_name == n).unwrap();
    assert_eq!(
        by_name("istio_request_bytes").bounds,
        [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8]
    );
    assert_eq!(
        by_name("istio_request_duration_seconds").bounds,
        Buckets::DEFAULT_BOUNDS
    );
    assert_eq!(by_name("istio_tcp_sent_bytes_total").label_names.len(), 16);
    let stdio = s
        .handlers
        .iter()
        .find_map(|h| match &h.params {
            HandlerParams::Stdio(p) => Some(p),
            _ => None,
        })
        .unwrap();
    assert!(stdio.output_as_json);
    assert_eq!(stdio.log_stream, LogStream::Stdout);
    let log = s
        .instances
        .iter()
        .find(|i| i.name.name == "tcpaccesslog")
        .unwrap();
    let InstanceParams::LogEntry(l) = &log.params else {
        panic!("not a logentry");
    };
    assert_eq!(l.variables.len(), 26);
    assert_eq!(
        l.timestamp.as_ref().unwrap().result_type(),
        ValueType::Timestamp
    );
    let k = s
        .instances
        .iter()
        .find(|i| i.name.to_string() == "attributes.kubernetes.istio-system")
        .unwrap();
    let InstanceParams::Kubernetes(k) = &k.params else {
        panic!("not kubernetes");
    };
    assert_eq!(k.inputs.len(), 4);
    assert_eq!(k.attribute_bindings.len(), 21);
    assert_eq!(k.attribute_bindings[0].name, "source.ip");
    assert!(s.uses_workload_identity());
    let kube_rule = s
        .rules
        .iter()
        .find(|r| r.name.name == "kubeattrgenrulerule")
        .unwrap();
    assert!(kube_rule.match_.is_none());
}

#[test]
fn rules_are_scoped_by_namespace() {
    let s = load_paths(&[data("tcp-metrics.yaml")], &LoadOptions::default()).unwrap();
    let seed_rule = s
        .rules
        .iter()
        .position(|r| r.name.name == "mongoprom")
        .unwrap();
    let global: Vec<usize> = s.rules_for(Some("istio-system")).collect();
    assert_eq!(global.len(), 8);
    assert!(!global.contains(&seed_rule));
    let in_default: Vec<usize> = s.rules_for(Some("default")).collect();
    assert_eq!(in_default.len(), 9);
    assert_eq!(in_default.last(), Some(&seed_rule));
    assert_eq!(s.rules_for(Some("other")).count(), 8);
    assert_eq!(s.rules_for(None).count(), 8);

    let m = &s.manifest;
    let set = |bag: &mut Bag<'_>, name: &str, v: &'static str| {
        bag.set(m.id(name).unwrap(), Value::from(v));
    };
    let mut inbound = Bag::new(m);
    set(&mut inbound, "destination.namespace", "default");
    set(&mut inbound, "source.namespace", "other");
    assert_eq!(s.identity_namespace(&inbound), Some("default"));
    assert_eq!(s.rules_for_bag(&inbound).count(), 9);
    set(&mut inbound, "context.reporter.kind", "inbound");
    assert_eq!(s.identity_namespace(&inbound), Some("default"));
    set(&mut inbound, "context.reporter.kind", "outbound");
    assert_eq!(s.identity_namespace(&inbound), Some("other"));
    assert_eq!(s.rules_for_bag(&inbound).count(), 8);
    // Anything but exactly `inbound`/`outbound` is the empty namespace in Mixer: the rule
    // namespaced `default` does not apply, whichever side is `default`.
    set(&mut inbound, "source.namespace", "default");
    for kind in ["Outbound", "Inbound", "", "outbound "] {
        set(&mut inbound, "context.reporter.kind", kind);
        assert_eq!(s.identity_namespace(&inbound), None, "kind {kind:?}");
        assert_eq!(s.rules_for_bag(&inbound).count(), 8, "kind {kind:?}");
    }
    inbound.set(m.id("context.reporter.kind").unwrap(), Value::Int64(1));
    assert_eq!(s.identity_namespace(&inbound), None);
}

#[test]
fn a_custom_default_namespace_makes_the_seed_rule_global() {
    let options = LoadOptions {
        default_namespace: "default".into(),
        include_defaults: false,
    };
    let s = load_paths(&[data("tcp-metrics.yaml")], &options).unwrap();
    assert_eq!(s.rules_for(Some("elsewhere")).count(), 1);
    assert_eq!(s.default_namespace(), "default");
}

#[test]
fn references_resolve_in_every_form() {
    let doc = |handler: &str, instance: &str| {
        format!(
            "{}---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata:\n  name: r2\n  namespace: default\nspec:\n  actions:\n  - handler: {handler}\n    instances: [{instance}]\n",
            include_str!("data/tcp-metrics-crd.yaml")
        )
    };
    // The last number: W0005 warnings, references Istio 1.1.7 would not resolve (bare names
    // of the legacy kinds `prometheus` and `metric`).
    for (h, i, not_in_istio) in [
        ("mongohandler", "mongosentbytes", 2),
        ("mongohandler.prometheus", "mongosentbytes.metric", 0),
        ("mongohandler.handler", "mongosentbytes.instance", 0),
        ("mongohandler.default", "mongosentbytes.default", 0),
        (
            "mongohandler.prometheus.default",
            "mongosentbytes.metric.default",
            0,
        ),
    ] {
        let text = doc(h, i);
        let s = load_str(&[("x.yaml", &text)], &without_defaults())
            .unwrap_or_else(|d| panic!("{h} {i}: {d}"));
        assert_eq!(s.rules[1].actions[0].instances, [0], "{h} {i}");
        let warnings = s.diagnostics().iter().filter(|d| d.code == "W0005").count();
        assert_eq!(warnings, not_in_istio, "{h} {i}: {}", s.diagnostics());
    }
    let text = doc("mongohandler", "mongosentbytes.metric.istio-system");
    let err = load_str(&[("x.yaml", &text)], &without_defaults()).unwrap_err();
    let codes: Vec<_> = err.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["W0005", "C0041"]);
    let message = &err.iter().next().unwrap().message;
    assert_eq!(
        message,
        "'mongohandler' resolves here, but Istio 1.1 would not resolve a bare name of a \
         'prometheus' handler"
    );
}

#[test]
fn instance_names_not_written_as_mixer_needed_resolve_with_a_warning() {
    let seed = include_str!("data/tcp-metrics.yaml");
    for (written, warned) in [
        ("mongosentbytes.instance.default", false),
        ("mongosentbytes.metric.default", true),
        ("mongosentbytes.instance", true),
        ("mongosentbytes.default", true),
    ] {
        let text = seed.replacen(
            "instance_name: mongosentbytes.instance.default",
            &format!("instance_name: {written}"),
            1,
        );
        let s = load_str(&[("t.yaml", &text)], &without_defaults())
            .unwrap_or_else(|d| panic!("{written}: {d}"));
        let HandlerParams::Prometheus(p) = &s.handlers[0].params else {
            panic!("not prometheus");
        };
        assert_eq!(p.metrics[0].instance, 0, "{written}");
        let messages: Vec<_> = s
            .diagnostics()
            .iter()
            .filter(|d| d.code == "W0005")
            .map(|d| d.message.clone())
            .collect();
        let expected = format!(
            "'{written}' resolves here, but Istio 1.1 would not resolve an instance_name not \
             written as 'name.kind.namespace'"
        );
        assert_eq!(
            messages,
            if warned { vec![expected] } else { vec![] },
            "{written}"
        );
    }
}

#[test]
fn metric_definitions_identify_series() {
    let a = load_paths(&[data("tcp-metrics.yaml")], &without_defaults()).unwrap();
    let b = load_paths(&[data("tcp-metrics-crd.yaml")], &without_defaults()).unwrap();
    let defs = |s: &meshmeter_config::Snapshot| {
        s.prometheus_metrics()
            .map(|(_, m)| format!("{:?}", m.definition()))
            .collect::<Vec<_>>()
    };
    assert_eq!(defs(&a), defs(&b));
}

#[test]
fn linear_and_exponential_bounds_are_built_as_mixer_built_them() {
    use meshmeter_config::Buckets;
    let linear = Buckets::Linear {
        num_finite_buckets: 8,
        width: 0.1,
        offset: 0.0,
    };
    // Repeated addition: 0.1+0.1+... carries the rounding into the `le` text.
    assert_eq!(
        linear.bounds(),
        vec![
            0.0,
            0.1,
            0.2,
            0.30000000000000004,
            0.4,
            0.5,
            0.6,
            0.7,
            0.7999999999999999
        ]
    );
    let exp = Buckets::Exponential {
        num_finite_buckets: 3,
        growth_factor: 1.5,
        scale: 0.001,
    };
    assert_eq!(
        exp.bounds(),
        vec![0.001, 0.0015, 0.0022500000000000003, 0.0033750000000000004]
    );
}

/// The seed with its first metric's `name:` line replaced (or removed) and a namespace line.
fn served_names(name_line: &str, namespace_line: &str) -> (Vec<(String, String)>, String) {
    let seed = include_str!("data/tcp-metrics.yaml");
    let text = seed.replacen(
        "    - name: mongo_sent_bytes # Prometheus metric name\n      instance_name",
        &format!("    - {name_line}{namespace_line}\n      instance_name"),
        1,
    );
    assert_ne!(text, seed);
    let s = load_str(&[("t.yaml", &text)], &without_defaults()).unwrap();
    let HandlerParams::Prometheus(p) = &s.handlers[0].params else {
        panic!("not prometheus");
    };
    let names = p
        .metrics
        .iter()
        .map(|m| (m.full_name.clone(), m.help.clone()))
        .collect();
    let warnings = s
        .diagnostics()
        .iter()
        .filter(|d| d.code == "W0004")
        .map(|d| d.message.clone())
        .collect::<Vec<_>>()
        .join("\n");
    (names, warnings)
}

#[test]
fn metric_names_are_built_and_sanitised_as_mixer_did() {
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    // `name` absent: the whole instance_name, sanitised; HELP keeps the original text.
    let (names, warnings) = served_names("description: \"\"\n     ", "");
    assert_eq!(
        names[0],
        pair(
            "istio_mongosentbytes_instance_default",
            "mongosentbytes.instance.default"
        )
    );
    assert_eq!(
        warnings,
        "metric has no name: served as 'istio_mongosentbytes_instance_default', \
         from instance_name 'mongosentbytes.instance.default'"
    );
    // `namespace: ""` is `istio`; the name is sanitised, not refused.
    let (names, warnings) = served_names("name: my-metric.total", "\n      namespace: \"\"");
    assert_eq!(names[0], pair("istio_mymetric_total", "my-metric.total"));
    assert_eq!(
        warnings,
        "metric 'istio_my-metric.total' is served as 'istio_mymetric_total'"
    );
    let (names, warnings) = served_names("name: m2", "\n      namespace: my-ns");
    assert_eq!(names[0], pair("myns_m2", "m2"));
    assert_eq!(warnings, "metric 'my-ns_m2' is served as 'myns_m2'");
    let (names, warnings) = served_names("name: m2", "\n      namespace: custom");
    assert_eq!(names[0], pair("custom_m2", "m2"));
    assert_eq!(warnings, "");
}
