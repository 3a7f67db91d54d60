//! Per-object acceptance: a bad object is rejected alone, the good ones apply, a broken edit
//! keeps the previous version, objects referring to rejected or absent ones are dropped.

use meshmeter_config::{
    HandlerParams, Input, LoadOptions, Loaded, Loader, MetricKind, ObjectSource, Outcome, Severity,
};

const SEED: &str = include_str!("data/tcp-metrics.yaml");

/// An independent set: a metric instance, a prometheus handler and a rule.
const CONNS: &str = include_str!("data/conns.yaml");

fn loader() -> Loader {
    Loader::new(LoadOptions {
        include_defaults: false,
        ..LoadOptions::default()
    })
}

fn file(path: &str, text: &str) -> Input {
    Input::File {
        path: path.into(),
        text: text.into(),
    }
}

fn metric_names(loaded: &Loaded) -> Vec<String> {
    loaded
        .snapshot
        .prometheus_metrics()
        .map(|(_, m)| m.full_name.clone())
        .collect()
}

/// (kind, name, outcome, previous in force, codes) per problem.
fn problems(loaded: &Loaded) -> Vec<(String, String, Outcome, bool, Vec<&'static str>)> {
    loaded
        .problems
        .iter()
        .map(|p| {
            (
                p.kind.clone(),
                p.name.clone(),
                p.outcome,
                p.previous_in_force,
                p.diagnostics.iter().map(|d| d.code).collect(),
            )
        })
        .collect()
}

#[test]
fn a_broken_object_is_rejected_alone_and_what_refers_to_it_is_dropped() {
    let broken = CONNS.replace("connection.sent.bytes | 0", "connection.sent.byte | 0");
    let loaded = loader()
        .load(vec![file("seed.yaml", SEED), file("conns.yaml", &broken)])
        .unwrap();
    assert_eq!(
        metric_names(&loaded),
        ["istio_mongo_sent_bytes", "istio_mongo_received_bytes"]
    );
    let counts = loaded.snapshot.user_counts();
    assert_eq!((counts.instances, counts.handlers, counts.rules), (2, 1, 1));
    assert_eq!(
        problems(&loaded),
        [
            (
                "instance".into(),
                "conns".into(),
                Outcome::Rejected,
                false,
                vec!["E101"]
            ),
            (
                "handler".into(),
                "connhandler".into(),
                Outcome::Dropped,
                false,
                vec!["C0041"]
            ),
            (
                "rule".into(),
                "connrule".into(),
                Outcome::Dropped,
                false,
                vec!["C0041"]
            ),
        ]
    );
    assert_eq!(loaded.rejected_objects(), 3);
    let instance = &loaded.problems[0];
    assert_eq!(
        instance.source,
        ObjectSource::File {
            path: "conns.yaml".into(),
            line: 4,
            column: 9
        }
    );
    let rendered = instance.diagnostics.iter().next().unwrap().to_string();
    assert!(
        rendered.starts_with("conns.yaml:9:12: error[E101]: "),
        "{rendered}"
    );
    assert!(rendered.contains("did you mean 'connection.sent.bytes'?"));
    // Dropped objects are warnings naming the reference.
    let dropped = loaded.problems[2].diagnostics.iter().next().unwrap();
    assert_eq!(dropped.severity, Severity::Warning);
    assert!(dropped.message.contains("conns"), "{}", dropped.message);
    assert_eq!(
        loaded.problems[1].to_string(),
        "handler 'connhandler' in namespace 'default' (conns.yaml:16:9) dropped"
    );
    // What `meshmeter validate` reports: the object's own error only.
    assert_eq!(loaded.diagnostics.error_count(), 1);
}

#[test]
fn a_broken_edit_keeps_the_previous_version_until_it_is_fixed() {
    let mut loader = loader();
    let first = loader
        .load(vec![file("seed.yaml", SEED), file("conns.yaml", CONNS)])
        .unwrap();
    assert!(first.problems.is_empty());
    loader.commit(&first);

    // The handler is broken (twice: both metrics), the instances and rule are edited fine.
    let edited = SEED
        .replace("kind: COUNTER", "kind: COUNTR")
        .replace("| \"unknown\"", "| \"none\"");
    let broken = loader
        .load(vec![file("seed.yaml", &edited), file("conns.yaml", CONNS)])
        .unwrap();
    assert_eq!(
        problems(&broken),
        [(
            "handler".into(),
            "mongohandler".into(),
            Outcome::Rejected,
            true,
            vec!["C0013", "C0013"]
        )]
    );
    assert_eq!(
        broken.problems[0].to_string(),
        "handler 'mongohandler' in namespace 'default' (seed.yaml:39:9) rejected; its previous version stays in force"
    );
    let lines: Vec<u32> = broken.diagnostics.iter().map(|d| d.line).collect();
    assert_eq!(lines, [47, 54]);
    // The previous handler (counters) serves the new instances.
    let seed_handler = |loaded: &Loaded| {
        let h = loaded
            .snapshot
            .handlers
            .iter()
            .find(|h| h.name.name == "mongohandler");
        match &h.expect("mongohandler in force").params {
            HandlerParams::Prometheus(p) => p.clone(),
            _ => panic!("not prometheus"),
        }
    };
    let p = seed_handler(&broken);
    assert_eq!(p.metrics.len(), 2);
    assert_eq!(p.metrics[0].kind, MetricKind::Counter);
    // A previous version put back is compiled after the files: same metrics, another order
    // (the exposition sorts by name anyway).
    let mut names = metric_names(&broken);
    names.sort();
    assert_eq!(
        names,
        [
            "istio_conn_bytes",
            "istio_mongo_received_bytes",
            "istio_mongo_sent_bytes"
        ]
    );
    assert_ne!(broken.fingerprint(), first.fingerprint());
    loader.commit(&broken);

    // The same broken edit again puts the same objects in force.
    let again = loader
        .load(vec![file("seed.yaml", &edited), file("conns.yaml", CONNS)])
        .unwrap();
    assert_eq!(again.fingerprint(), broken.fingerprint());
    assert_eq!(again.rejected_objects(), 1);
    loader.commit(&again);

    // The fix applies.
    let fixed = loader
        .load(vec![
            file("seed.yaml", &edited.replace("kind: COUNTR", "kind: GAUGE")),
            file("conns.yaml", CONNS),
        ])
        .unwrap();
    assert!(fixed.problems.is_empty());
    let p = seed_handler(&fixed);
    assert_eq!(p.metrics[0].kind, MetricKind::Gauge);
}

#[test]
fn a_file_that_does_not_parse_keeps_its_objects_in_force() {
    let mut loader = loader();
    let first = loader
        .load(vec![file("seed.yaml", SEED), file("conns.yaml", CONNS)])
        .unwrap();
    loader.commit(&first);
    let cut = format!("{}  - [unclosed\n", &CONNS[..CONNS.len() - 1]);
    let loaded = loader
        .load(vec![
            file("seed.yaml", SEED),
            file("conns.yaml", &cut),
            Input::Unreadable {
                path: "gone.yaml".into(),
                error: "permission denied".into(),
            },
        ])
        .unwrap();
    assert_eq!(metric_names(&loaded), metric_names(&first));
    assert_eq!(loaded.fingerprint(), first.fingerprint());
    let files: Vec<(String, bool)> = loaded
        .problems
        .iter()
        .map(|p| (p.source.to_string(), p.previous_in_force))
        .collect();
    assert_eq!(
        files,
        [
            ("gone.yaml:0:0".to_owned(), false),
            ("conns.yaml:0:0".to_owned(), true)
        ]
    );
    assert_eq!(
        loaded.problems[1].diagnostics.iter().next().unwrap().code,
        "C0001"
    );
}

#[test]
fn a_rule_naming_an_absent_handler_is_dropped_and_a_deleted_object_is_gone() {
    let mut loader = loader();
    let first = loader
        .load(vec![file("seed.yaml", SEED), file("conns.yaml", CONNS)])
        .unwrap();
    loader.commit(&first);
    // The handler is deleted, the rule still names it: dropped (no earlier version of the
    // rule helps: it named the same handler).
    let without_handler: String = CONNS
        .split("---\n")
        .filter(|d| !d.contains("kind: handler"))
        .collect::<Vec<_>>()
        .join("---\n");
    let loaded = loader
        .load(vec![
            file("seed.yaml", SEED),
            file("conns.yaml", &without_handler),
        ])
        .unwrap();
    assert_eq!(
        problems(&loaded),
        [(
            "rule".into(),
            "connrule".into(),
            Outcome::Dropped,
            false,
            vec!["C0040"]
        )]
    );
    assert_eq!(
        metric_names(&loaded),
        ["istio_mongo_sent_bytes", "istio_mongo_received_bytes"]
    );
    assert_eq!(loaded.snapshot.user_counts().instances, 3);
    assert_eq!(loaded.snapshot.user_counts().rules, 1);
}

#[test]
fn kubernetes_objects_are_accepted_one_by_one_with_their_origin() {
    let mut loader = loader();
    let object = |kind: &str, name: &str, rv: &str, text: &str| Input::Kubernetes {
        kind: kind.into(),
        namespace: "default".into(),
        name: name.into(),
        resource_version: rv.into(),
        text: text.into(),
    };
    let docs: Vec<&str> = SEED.split("---\n").collect();
    let inputs = |rule: &str| {
        vec![
            object("instance", "mongosentbytes", "10", docs[0]),
            object("instance", "mongoreceivedbytes", "11", docs[1]),
            object("handler", "mongohandler", "12", docs[2]),
            object("rule", "mongoprom", "13", rule),
        ]
    };
    let first = loader.load(inputs(docs[3])).unwrap();
    assert!(first.problems.is_empty());
    loader.commit(&first);

    let typo = docs[3].replace("instances:", "instancez:");
    let loaded = loader.load(inputs(&typo)).unwrap();
    assert_eq!(loaded.problems.len(), 1);
    let p = &loaded.problems[0];
    assert_eq!(
        p.source,
        ObjectSource::Kubernetes {
            namespace: "default".into(),
            name: "mongoprom".into(),
            resource_version: "13".into()
        }
    );
    assert!(p.previous_in_force);
    let d = p.diagnostics.iter().next().unwrap();
    assert_eq!(
        (&*d.file, d.code),
        ("kubernetes:default/rule/mongoprom", "C0011")
    );
    // The previous rule still routes both instances.
    assert_eq!(loaded.snapshot.rules[0].actions[0].instances.len(), 2);

    // An object that is not even YAML: named by its Kubernetes identity, previous version kept.
    let loaded = loader.load(inputs("spec: [unclosed\n")).unwrap();
    let p = &loaded.problems[0];
    assert_eq!(
        (p.namespace.as_str(), p.name.as_str(), p.previous_in_force),
        ("default", "mongoprom", true)
    );
    assert!(
        matches!(&p.source, ObjectSource::Kubernetes { resource_version, .. } if resource_version == "13")
    );
    assert_eq!(loaded.fingerprint(), first.fingerprint());
}
