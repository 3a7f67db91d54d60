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

/// `(namespace, name)` of the Service that `ip` and `port` reach.
fn service_at(source: &IdentitySource, ip: &str, port: Option<u16>) -> Option<String> {
    let table = source.current();
    table
        .service_for(ip.parse().unwrap(), port)
        .map(|s| format!("{}/{}", s.namespace, s.name))
}

#[tokio::test]
async fn the_service_comes_from_the_address_and_port_and_cluster_ips_resolve_to_their_service() {
    let api = recorded().await;
    // mongodb's pod is also behind `aaa-metrics` (first by name; port 28017 → target 9216) and
    // `zz-admin` (port 80 → target 28017; a UDP port 53 → 5353); a headless one has no address.
    api.apply(
        "services",
        json!({"metadata": {"name": "aaa-metrics", "namespace": "default"},
            "spec": {"clusterIP": "10.96.7.1", "clusterIPs": ["10.96.7.1"],
                     "ports": [{"name": "metrics", "port": 28017, "targetPort": "metrics"}]}}),
    );
    api.apply(
        "endpointslices",
        json!({"metadata": {"name": "aaa-metrics-x1", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "aaa-metrics"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.13"], "conditions": {"ready": true}}],
            "ports": [{"name": "metrics", "port": 9216, "protocol": "TCP"}]}),
    );
    api.apply(
        "services",
        json!({"metadata": {"name": "zz-admin", "namespace": "default"},
            "spec": {"clusterIP": "10.96.7.2", "clusterIPs": ["10.96.7.2", "fd00:10:96::72"],
                     "ports": [{"name": "admin", "port": 80, "targetPort": 28017},
                               {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]}}),
    );
    api.apply(
        "endpointslices",
        json!({"metadata": {"name": "zz-admin-x1", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "zz-admin"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.13"]}],
            "ports": [{"name": "admin", "port": 28017}, {"name": "dns", "port": 5353, "protocol": "UDP"}]}),
    );
    api.apply(
        "services",
        json!({"metadata": {"name": "headless", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}),
    );
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
    source.synced().wait().await;

    let mongo = "10.244.0.13";
    let pod = lookup(&source, |t| t.by_ip(ip(mongo))).expect("mongodb by IP");
    let names: Vec<&str> = pod.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["aaa-metrics", "mongodb", "zz-admin"]);
    for (port, service) in [
        // A target port; then a Service's own port.
        (Some(27017), "default/mongodb"),
        (Some(9216), "default/aaa-metrics"),
        (Some(80), "default/zz-admin"),
        // 28017 is zz-admin's target port and aaa-metrics' port: on a pod's address the
        // target port wins.
        (Some(28017), "default/zz-admin"),
        // No TCP port matches, or no port known: the first by name, as before.
        (Some(5353), "default/aaa-metrics"),
        (Some(1), "default/aaa-metrics"),
        (None, "default/aaa-metrics"),
    ] {
        assert_eq!(
            service_at(&source, mongo, port).as_deref(),
            Some(service),
            "{port:?}"
        );
    }
    // A pod behind one Service gets it whatever the port.
    assert_eq!(
        service_at(&source, "10.244.0.12", Some(1)).as_deref(),
        Some("default/ratings")
    );

    // Cluster IPs (each of a dual-stack Service's): the Service, and no workload.
    for (cluster_ip, port, service) in [
        ("10.96.119.29", Some(27017), "default/mongodb"),
        ("10.96.119.29", None, "default/mongodb"),
        ("10.96.79.156", Some(9080), "default/ratings"),
        ("10.96.0.1", Some(443), "default/kubernetes"),
        ("10.96.7.2", Some(80), "default/zz-admin"),
        ("fd00:10:96::72", Some(80), "default/zz-admin"),
        ("::ffff:10.96.7.1", Some(28017), "default/aaa-metrics"),
    ] {
        assert_eq!(
            service_at(&source, cluster_ip, port).as_deref(),
            Some(service),
            "{cluster_ip}"
        );
        assert!(lookup(&source, |t| t.by_ip(ip(cluster_ip))).is_none());
    }
    let table = source.current();
    let mongodb = table.service_for(ip("10.96.119.29"), Some(27017)).unwrap();
    assert_eq!(mongodb.host, "mongodb.default.svc.cluster.local");
    assert_eq!(mongodb.uid, "istio://default/services/mongodb");
    drop(table);
    assert_eq!(service_at(&source, "10.96.0.99", Some(5432)), None);

    // A Service deleted: its port falls back, its cluster IP resolves no more.
    assert!(api.delete("services", "default", "zz-admin"));
    eventually("zz-admin gone", || {
        service_at(&source, mongo, Some(28017)).as_deref() == Some("default/aaa-metrics")
            && service_at(&source, "10.96.7.2", Some(80)).is_none()
    })
    .await;
    // A cluster IP that changes (a Service re-created) moves with it.
    api.apply(
        "services",
        json!({"metadata": {"name": "aaa-metrics", "namespace": "default"},
            "spec": {"clusterIP": "10.96.7.9", "ports": [{"name": "metrics", "port": 28017}]}}),
    );
    eventually("the new cluster IP", || {
        service_at(&source, "10.96.7.9", None).as_deref() == Some("default/aaa-metrics")
            && service_at(&source, "10.96.7.1", None).is_none()
    })
    .await;
}
