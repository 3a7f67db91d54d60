//! Workload identity from the stand-in API server: recorded pods, owners, Services and
//! EndpointSlices; changes; restarts; 410 Gone.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_kube::standin::StandIn;
use meshmeter_kube::{IdentityOptions, IdentitySource, WatchMetrics};
use meshmeter_selfmetrics::SelfMetrics;
use meshmeter_workloads::{Workload, WorkloadRegistry};
use serde_json::json;

/// Retries `check` until it holds or 10 s pass.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn recorded() -> StandIn {
    let api = StandIn::start().await;
    api.apply_list("pods", include_str!("data/pods.json"));
    api.apply_list("replicasets", include_str!("data/replicasets.json"));
    api.apply_list("services", include_str!("data/services.json"));
    api.apply_list("endpointslices", include_str!("data/endpointslices.json"));
    api
}

fn lookup(
    source: &IdentitySource,
    f: impl Fn(&dyn WorkloadRegistry) -> Option<&Workload>,
) -> Option<Workload> {
    let table = source.current();
    f(&*table).cloned()
}

fn pod(
    name: &str,
    ip: &str,
    labels: serde_json::Value,
    phase: &str,
    created: &str,
) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "labels": labels,
                     "creationTimestamp": created,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "ratings-v2-66648f8776", "uid": "x", "controller": true}]},
        "spec": {"containers": [{"name": "ratings", "image": "ratings"}],
                 "serviceAccountName": "bookinfo-ratings-v2"},
        "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

#[tokio::test]
async fn recorded_pods_resolve_by_uid_and_ip_with_owner_service_and_account() {
    let api = recorded().await;
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
    tokio::time::timeout(Duration::from_secs(10), source.synced().wait())
        .await
        .expect("synced");

    let ratings = lookup(&source, |t| t.by_ip(ip("10.244.0.12"))).expect("ratings by IP");
    assert_eq!(ratings.pod, "ratings-v2-66648f8776-kxshs");
    assert_eq!(
        ratings.uid,
        "kubernetes://ratings-v2-66648f8776-kxshs.default"
    );
    assert_eq!(ratings.name, "ratings-v2");
    assert_eq!(ratings.namespace, "default");
    assert_eq!(ratings.workload_uid, "istio://default/workloads/ratings-v2");
    assert_eq!(
        ratings.owner.as_deref(),
        Some("kubernetes://apis/apps/v1/namespaces/default/deployments/ratings-v2")
    );
    assert_eq!(
        ratings.service_account.as_deref(),
        Some("bookinfo-ratings-v2")
    );
    assert_eq!(ratings.labels.get("app"), Some("ratings"));
    assert_eq!(ratings.labels.get("version"), Some("v2"));
    assert_eq!(ratings.services.len(), 1);
    assert_eq!(
        ratings.services[0].host,
        "ratings.default.svc.cluster.local"
    );
    assert_eq!(ratings.services[0].uid, "istio://default/services/ratings");

    let mongo = lookup(&source, |t| {
        t.by_uid("kubernetes://mongodb-v1-5b85cdf57c-vf44b.default")
    })
    .expect("mongodb by uid");
    assert_eq!(mongo.name, "mongodb-v1");
    assert_eq!(mongo.ips, vec![ip("10.244.0.13")]);
    assert_eq!(mongo.service_account.as_deref(), Some("default"));
    assert_eq!(mongo.services[0].host, "mongodb.default.svc.cluster.local");
    assert_eq!(mongo.services[0].name, "mongodb");
    assert_eq!(mongo.services[0].namespace, "default");
    assert_eq!(metrics.restart_count("pods"), 0);
}

#[tokio::test]
async fn pods_created_relabelled_replaced_and_deleted_change_identity() {
    let api = recorded().await;
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
    source.synced().wait().await;

    api.apply(
        "pods",
        pod(
            "ratings-v2-new",
            "10.244.0.14",
            json!({"app": "ratings", "version": "v2"}),
            "Running",
            "2026-12-02T11:00:00Z",
        ),
    );
    eventually("the new pod", || {
        lookup(&source, |t| t.by_ip(ip("10.244.0.14"))).is_some_and(|w| w.pod == "ratings-v2-new")
    })
    .await;

    api.apply(
        "pods",
        pod(
            "ratings-v2-new",
            "10.244.0.14",
            json!({"app": "ratings", "version": "v3"}),
            "Running",
            "2026-12-02T11:00:00Z",
        ),
    );
    eventually("the new label", || {
        lookup(&source, |t| t.by_ip(ip("10.244.0.14")))
            .is_some_and(|w| w.labels.get("version") == Some("v3"))
    })
    .await;

    // The IP reused: the old pod terminating, a newer running pod at the same address.
    let mut old = pod(
        "ratings-v2-new",
        "10.244.0.14",
        json!({"version": "v3"}),
        "Running",
        "2026-12-02T11:00:00Z",
    );
    old["metadata"]["deletionTimestamp"] = json!("2026-12-02T12:00:30Z");
    api.apply("pods", old);
    api.apply(
        "pods",
        pod(
            "ratings-v2-newer",
            "10.244.0.14",
            json!({"version": "v4"}),
            "Running",
            "2026-12-02T12:00:00Z",
        ),
    );
    eventually("the live pod at a reused IP", || {
        lookup(&source, |t| t.by_ip(ip("10.244.0.14"))).is_some_and(|w| w.pod == "ratings-v2-newer")
    })
    .await;
    // The old one still answers by its uid.
    assert!(lookup(&source, |t| t.by_uid("kubernetes://ratings-v2-new.default")).is_some());

    // A host-network pod on the node's address does not take it from a pod of its own.
    let mut host = pod(
        "node-agent",
        "10.244.0.13",
        json!({}),
        "Running",
        "2026-12-02T13:00:00Z",
    );
    host["spec"]["hostNetwork"] = json!(true);
    host["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "d", "controller": true}]);
    api.apply("pods", host);
    eventually("the host-network pod by uid", || {
        lookup(&source, |t| t.by_uid("kubernetes://node-agent.default")).is_some_and(|w| {
            w.owner.as_deref()
                == Some("kubernetes://apis/apps/v1/namespaces/default/daemonsets/agent")
                && w.ips.is_empty()
        })
    })
    .await;
    assert_eq!(
        lookup(&source, |t| t.by_ip(ip("10.244.0.13"))).unwrap().pod,
        "mongodb-v1-5b85cdf57c-vf44b"
    );

    assert!(api.delete("pods", "default", "ratings-v2-newer"));
    assert!(api.delete("pods", "default", "ratings-v2-new"));
    eventually("the deleted pods gone", || {
        lookup(&source, |t| t.by_ip(ip("10.244.0.14"))).is_none()
    })
    .await;

    // A bare pod is its own workload.
    api.apply("pods", json!({"metadata": {"name": "debug", "namespace": "tools"}, "spec": {"containers": []}, "status": {"phase": "Running", "podIP": "10.244.1.2"}}));
    eventually("the bare pod", || {
        lookup(&source, |t| t.by_ip(ip("10.244.1.2"))).is_some_and(|w| {
            w.name == "debug"
                && w.owner.as_deref() == Some("kubernetes://apis/v1/namespaces/tools/pods/debug")
        })
    })
    .await;
}

#[tokio::test]
async fn a_restarted_api_server_loses_nothing_and_the_watch_relists_after_410() {
    let api = recorded().await;
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
    source.synced().wait().await;

    api.stop();
    // While it is down, identity is served from the cache.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(lookup(&source, |t| t.by_ip(ip("10.244.0.12"))).is_some());
    // Changes made meanwhile arrive after the restart (the old watches get 410 and relist).
    api.apply(
        "pods",
        pod(
            "ratings-v2-outage",
            "10.244.0.20",
            json!({"app": "ratings"}),
            "Running",
            "2026-12-02T11:00:00Z",
        ),
    );
    assert!(api.delete("pods", "default", "mongodb-v1-5b85cdf57c-vf44b"));
    api.restart().await;
    eventually("changes made during the outage", || {
        lookup(&source, |t| t.by_ip(ip("10.244.0.20"))).is_some()
            && lookup(&source, |t| t.by_ip(ip("10.244.0.13"))).is_none()
    })
    .await;
    assert!(
        lookup(&source, |t| t.by_ip(ip("10.244.0.12"))).is_some(),
        "nothing else lost"
    );
    assert!(metrics.restart_count("pods") >= 1, "restarts counted");
    let relists = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("/api/v1/pods?") && !r.contains("watch="))
        .count();
    assert!(relists >= 2, "listed again after 410: {:?}", api.requests());
}

#[tokio::test]
async fn jobs_of_cronjobs_and_statefulsets_are_their_workloads() {
    let api = StandIn::start().await;
    api.apply("jobs", json!({"metadata": {"name": "backup-28711", "namespace": "ops",
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "backup", "uid": "c", "controller": true}]}}));
    api.apply("pods", json!({"metadata": {"name": "backup-28711-x7k2p", "namespace": "ops",
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "backup-28711", "uid": "j", "controller": true}]},
        "spec": {"containers": []}, "status": {"phase": "Running", "podIP": "10.244.2.1"}}));
    api.apply("pods", json!({"metadata": {"name": "db-0", "namespace": "ops",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "s", "controller": true}]},
        "spec": {"containers": [], "serviceAccountName": "db"}, "status": {"phase": "Running", "podIP": "10.244.2.2"}}));
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
    source.synced().wait().await;
    let job = lookup(&source, |t| t.by_ip(ip("10.244.2.1"))).expect("the job's pod");
    assert_eq!(job.name, "backup");
    assert_eq!(job.workload_uid, "istio://ops/workloads/backup");
    assert_eq!(
        job.owner.as_deref(),
        Some("kubernetes://apis/batch/v1/namespaces/ops/cronjobs/backup")
    );
    let db = lookup(&source, |t| t.by_uid("kubernetes://db-0.ops")).expect("the stateful pod");
    assert_eq!(db.name, "db");
    assert_eq!(
        db.owner.as_deref(),
        Some("kubernetes://apis/apps/v1/namespaces/ops/statefulsets/db")
    );
    assert_eq!(db.service_account.as_deref(), Some("db"));
    // IPv4-mapped IPv6 finds the IPv4 pod.
    assert!(lookup(&source, |t| t.by_ip(ip("::ffff:10.244.2.2"))).is_some());
}

#[tokio::test]
async fn watches_that_end_cleanly_resume_without_a_restart_and_bookmarks_are_taken() {
    let api = recorded().await;
    api.set_max_watch_secs(1);
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
    source.synced().wait().await;
    // Other resources move the shared resourceVersion on; a bookmark carries it to pods.
    api.apply(
        "services",
        json!({"metadata": {"name": "extra", "namespace": "default"}, "spec": {}}),
    );
    api.send_bookmarks();
    // Wait for watches to have ended and been re-opened at least twice.
    let before = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("/api/v1/pods?") && r.contains("watch="))
        .count();
    eventually("re-watches", || {
        api.requests()
            .iter()
            .filter(|r| r.starts_with("/api/v1/pods?") && r.contains("watch="))
            .count()
            >= before + 2
    })
    .await;
    api.apply(
        "pods",
        pod(
            "ratings-v2-late",
            "10.244.0.30",
            json!({"version": "v9"}),
            "Running",
            "2026-12-02T11:00:00Z",
        ),
    );
    eventually("a change after re-watches", || {
        lookup(&source, |t| t.by_ip(ip("10.244.0.30"))).is_some()
    })
    .await;
    assert_eq!(
        metrics.restart_count("pods"),
        0,
        "a clean end of a watch is no restart"
    );
    let lists = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("/api/v1/pods?") && !r.contains("watch="))
        .count();
    assert_eq!(lists, 1, "no relist: {:?}", api.requests());
}

#[tokio::test]
async fn refused_credentials_keep_it_unready_and_count_restarts() {
    let api = recorded().await;
    api.require_token("right");
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
    eventually("refused lists retried", || {
        metrics.restart_count("pods") >= 2
    })
    .await;
    assert!(!source.synced().is_synced());
    assert!(source.current().is_empty());
}

#[tokio::test]
async fn a_list_longer_than_a_page_is_read_in_pages() {
    let api = StandIn::start().await;
    for i in 0..1_200u32 {
        api.apply("pods", json!({"metadata": {"name": format!("p-{i:04}"), "namespace": "bulk"},
            "spec": {"containers": []}, "status": {"phase": "Running", "podIP": format!("10.245.{}.{}", i / 256, i % 256)}}));
    }
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
    source.synced().wait().await;
    assert_eq!(source.current().len(), 1_200);
    let pages: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("/api/v1/pods?") && !r.contains("watch="))
        .collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(
        pages[1].contains("continue=") && pages[2].contains("continue="),
        "{pages:?}"
    );
}
