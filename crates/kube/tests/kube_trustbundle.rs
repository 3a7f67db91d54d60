//! The trust-bundle publisher against the stand-in API server: a ConfigMap in every namespace
//! (those listed at start and those added later), updated when the root changes, a foreign
//! ConfigMap of the same name left alone, and a concurrent write retried.

use std::sync::Arc;
use std::time::Duration;

use meshmeter_kube::standin::StandIn;
use meshmeter_kube::{
    Published, TrustBundlePublisher, WatchMetrics, MANAGED_BY_LABEL, TRUST_BUNDLE_CONFIGMAP,
    TRUST_BUNDLE_KEY,
};
use meshmeter_selfmetrics::SelfMetrics;
use serde_json::{json, Value};

const ROOT_A: &str = "-----BEGIN CERTIFICATE-----\nMIIA\n-----END CERTIFICATE-----\n";
const ROOT_B: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn namespace(name: &str) -> Value {
    json!({"metadata": {"name": name}})
}

/// The bundle in `ns`'s ConfigMap, when there is one.
fn bundle(api: &StandIn, ns: &str) -> Option<String> {
    api.object("configmaps", ns, TRUST_BUNDLE_CONFIGMAP)
        .and_then(|cm| cm["data"][TRUST_BUNDLE_KEY].as_str().map(str::to_owned))
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within 10 s: {what}");
}

#[tokio::test]
async fn every_namespace_gets_the_bundle_and_later_ones_too() {
    let api = StandIn::start().await;
    for ns in ["default", "kube-system", "bookinfo"] {
        api.apply("namespaces", namespace(ns));
    }
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let task = TrustBundlePublisher::new(api.client(), ROOT_A).start(&metrics);
    eventually("three ConfigMaps", || {
        ["default", "kube-system", "bookinfo"]
            .iter()
            .all(|ns| bundle(&api, ns).as_deref() == Some(ROOT_A))
    })
    .await;
    let cm = api
        .object("configmaps", "bookinfo", TRUST_BUNDLE_CONFIGMAP)
        .unwrap();
    assert_eq!(
        cm["metadata"]["labels"][MANAGED_BY_LABEL.0],
        json!(MANAGED_BY_LABEL.1)
    );
    assert_eq!(cm["data"].as_object().unwrap().len(), 1);

    api.apply("namespaces", namespace("team-b"));
    eventually("the new namespace's ConfigMap", || {
        bundle(&api, "team-b").as_deref() == Some(ROOT_A)
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn a_new_root_updates_ours_and_a_foreign_configmap_is_left_alone() {
    let api = StandIn::start().await;
    api.apply("namespaces", namespace("default"));
    api.apply("namespaces", namespace("legacy"));
    let foreign = json!({
        "metadata": {"name": TRUST_BUNDLE_CONFIGMAP, "namespace": "legacy",
                     "labels": {"app": "someone-else"}},
        "data": {TRUST_BUNDLE_KEY: "theirs"},
    });
    api.apply("configmaps", foreign);

    let a = TrustBundlePublisher::new(api.client(), ROOT_A);
    assert_eq!(a.publish("default").await.unwrap(), Published::Created);
    assert_eq!(a.publish("default").await.unwrap(), Published::Unchanged);
    assert_eq!(a.publish("legacy").await.unwrap(), Published::Foreign);
    let before = api.resource_version();
    assert_eq!(a.publish("default").await.unwrap(), Published::Unchanged);
    assert_eq!(
        api.resource_version(),
        before,
        "an unchanged bundle writes nothing"
    );

    // A CA restarted with another root (a generated one), through the watch.
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let task = TrustBundlePublisher::new(api.client(), ROOT_B).start(&metrics);
    eventually("the new root in default", || {
        bundle(&api, "default").as_deref() == Some(ROOT_B)
    })
    .await;
    let legacy = api
        .object("configmaps", "legacy", TRUST_BUNDLE_CONFIGMAP)
        .unwrap();
    assert_eq!(legacy["data"][TRUST_BUNDLE_KEY], json!("theirs"));
    assert_eq!(legacy["metadata"]["labels"], json!({"app": "someone-else"}));
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.starts_with("PUT /api/v1/namespaces/legacy/")),
        "{:?}",
        api.requests()
    );
    task.abort();
}

#[tokio::test]
async fn a_conflicting_update_is_retried_on_the_fresh_object() {
    let api = StandIn::start().await;
    let ours = json!({
        "metadata": {"name": TRUST_BUNDLE_CONFIGMAP, "namespace": "default",
                     "labels": {MANAGED_BY_LABEL.0: MANAGED_BY_LABEL.1}},
        "data": {TRUST_BUNDLE_KEY: ROOT_A},
    });
    api.apply("configmaps", ours);
    api.conflict_next_puts(2);
    let b = TrustBundlePublisher::new(api.client(), ROOT_B);
    assert_eq!(b.publish("default").await.unwrap(), Published::Updated);
    assert_eq!(bundle(&api, "default").as_deref(), Some(ROOT_B));
    let path = format!("/api/v1/namespaces/default/configmaps/{TRUST_BUNDLE_CONFIGMAP}");
    let writes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.contains(&path))
        .collect();
    let get = path.clone();
    let put = format!("PUT {path}?");
    assert_eq!(
        writes,
        [&get, &put, &get, &put, &get, &put].map(String::as_str)
    );

    // Conflicting longer than the publisher tries: an error naming the ConfigMap.
    api.conflict_next_puts(10);
    let a = TrustBundlePublisher::new(api.client(), ROOT_A);
    let e = a.publish("default").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "ConfigMap default/meshmeter-ca-root: still conflicting after 5 attempts"
    );
}

#[tokio::test]
async fn a_namespace_that_failed_is_retried_on_its_own() {
    let api = StandIn::start().await;
    api.apply("namespaces", namespace("default"));
    api.forbid("configmaps", true);
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let task = TrustBundlePublisher::new(api.client(), ROOT_A).start(&metrics);
    let path = format!("/api/v1/namespaces/default/configmaps/{TRUST_BUNDLE_CONFIGMAP}");
    eventually("a refused GET", || api.requests().contains(&path)).await;
    assert_eq!(bundle(&api, "default"), None);
    // RBAC fixed: the retry (1 s later) publishes without any namespace event.
    api.forbid("configmaps", false);
    eventually("the ConfigMap after a retry", || {
        bundle(&api, "default").as_deref() == Some(ROOT_A)
    })
    .await;
    task.abort();
}
