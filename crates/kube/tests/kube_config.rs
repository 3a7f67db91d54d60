//! Configuration objects from the stand-in API server, rendered for the loader.

use std::sync::Arc;
use std::time::Duration;

use meshmeter_config::{load_str, Input, LoadOptions};
use meshmeter_kube::standin::StandIn;
use meshmeter_kube::{ConfigDocuments, ConfigSource, WatchMetrics};
use meshmeter_selfmetrics::SelfMetrics;
use serde_json::json;
use tokio::sync::watch;

/// Waits (at most 10 s) for documents for which `check` holds.
async fn until(
    rx: &mut watch::Receiver<ConfigDocuments>,
    what: &str,
    check: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let seen = rx.clone();
    let found = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|d| check(&pairs(d))))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "timed out waiting for {what}; have {:?}",
                names(&pairs(&seen.borrow()))
            )
        });
    pairs(&found.expect("source alive"))
}

/// The objects as `(kubernetes:KIND/NAMESPACE/NAME, text)`.
fn pairs(docs: &[Input]) -> Vec<(String, String)> {
    docs.iter()
        .map(|d| match d {
            Input::Kubernetes {
                kind,
                namespace,
                name,
                text,
                ..
            } => (
                format!("kubernetes:{kind}/{namespace}/{name}"),
                text.clone(),
            ),
            other => panic!("not a Kubernetes object: {other:?}"),
        })
        .collect()
}

fn names(docs: &[(String, String)]) -> Vec<&str> {
    docs.iter().map(|d| d.0.as_str()).collect()
}

fn load(docs: &[(String, String)]) -> meshmeter_config::Snapshot {
    let files: Vec<(&str, &str)> = docs.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let options = LoadOptions {
        include_defaults: false,
        ..LoadOptions::default()
    };
    load_str(&files, &options).unwrap_or_else(|d| panic!("{d}"))
}

#[tokio::test]
async fn recorded_objects_in_both_spellings_load_and_follow_edits_and_deletes() {
    let api = StandIn::start().await;
    api.apply_list("metrics", include_str!("data/metrics.json"));
    api.apply_list("prometheuses", include_str!("data/prometheuses.json"));
    api.apply_list("rules", include_str!("data/rules.json"));
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = ConfigSource::start(api.client(), &[], &metrics);
    tokio::time::timeout(Duration::from_secs(10), source.synced().wait())
        .await
        .expect("synced");
    let mut rx = source.documents();
    let docs = until(&mut rx, "the legacy objects", |d| d.len() == 4).await;
    assert_eq!(
        names(&docs),
        [
            "kubernetes:metric/default/mongoreceivedbytes",
            "kubernetes:metric/default/mongosentbytes",
            "kubernetes:prometheus/default/mongohandler",
            "kubernetes:rule/default/mongoprom",
        ]
    );
    let snapshot = load(&docs);
    let mut metric_names: Vec<String> = snapshot
        .prometheus_metrics()
        .map(|(_, m)| m.full_name.clone())
        .collect();
    metric_names.sort();
    assert_eq!(
        metric_names,
        ["istio_mongo_received_bytes", "istio_mongo_sent_bytes"]
    );

    // The 1.1 spelling replaces the legacy one, as the recorded rules watch shows.
    for (name, plural) in [
        ("mongosentbytes", "metrics"),
        ("mongoreceivedbytes", "metrics"),
        ("mongohandler", "prometheuses"),
    ] {
        assert!(api.delete(plural, "default", name));
    }
    api.apply_list("instances", include_str!("data/instances.json"));
    api.apply_list("handlers", include_str!("data/handlers.json"));
    let mut rule: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(include_str!("data/rules.json")).unwrap()
            ["items"][0]
            .clone();
    rule["spec"]["actions"] =
        json!([{"handler": "mongohandler", "instances": ["mongoreceivedbytes", "mongosentbytes"]}]);
    api.apply("rules", rule);
    let docs = until(&mut rx, "the 1.1 objects", |d| {
        d.iter().any(|(n, t)| {
            n == "kubernetes:rule/default/mongoprom" && t.contains("\"mongohandler\"")
        }) && d.len() == 4
    })
    .await;
    assert_eq!(
        names(&docs),
        [
            "kubernetes:instance/default/mongoreceivedbytes",
            "kubernetes:instance/default/mongosentbytes",
            "kubernetes:handler/default/mongohandler",
            "kubernetes:rule/default/mongoprom",
        ]
    );
    assert_eq!(load(&docs).prometheus_metrics().count(), 2);

    assert!(api.delete("rules", "default", "mongoprom"));
    let docs = until(&mut rx, "the rule deleted", |d| d.len() == 3).await;
    assert!(!names(&docs).contains(&"kubernetes:rule/default/mongoprom"));
    assert_eq!(metrics.restart_count("rules"), 0);
}

#[tokio::test]
async fn namespaces_limit_what_is_read_and_missing_crds_are_retried_not_fatal() {
    let api = StandIn::start().await;
    api.set_crds_installed(false);
    let mut rule: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(include_str!("data/rules.json")).unwrap()
            ["items"][0]
            .clone();
    api.apply("rules", rule.clone());
    rule["metadata"]["namespace"] = json!("team-b");
    api.apply("rules", rule);
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = ConfigSource::start(api.client(), &["team-b".to_owned()], &metrics);
    // Not installed: synced (empty), and asked again.
    tokio::time::timeout(Duration::from_secs(10), source.synced().wait())
        .await
        .expect("synced without the CRDs");
    assert!(source.documents().borrow().is_empty());
    assert!(metrics.restart_count("rules") >= 1);
    api.set_crds_installed(true);
    let mut rx = source.documents();
    let docs = until(&mut rx, "the rule once the CRDs are installed", |d| {
        !d.is_empty()
    })
    .await;
    assert_eq!(names(&docs), ["kubernetes:rule/team-b/mongoprom"]);
    assert!(api.requests().iter().all(
        |r| !r.contains("/config.istio.io/v1alpha2/rules") || r.contains("/namespaces/team-b/")
    ));
}
