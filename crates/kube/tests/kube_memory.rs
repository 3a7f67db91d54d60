//! What the identity caches hold per pod: 10,000 pods, 1,000 Services (each with an
//! EndpointSlice of 10 endpoints) and their ReplicaSets, measured with dhat as the heap the
//! identity source keeps once synced (stores, the published table, the client and its tasks).
//! The target is at most 2 KiB per pod; measured 1,685 bytes (2026-12-07; 1,624 before the
//! index by namespace and service account, here 1,000 accounts of 10 replicas each).

use std::sync::Arc;
use std::time::Duration;

use meshmeter_kube::standin::StandIn;
use meshmeter_kube::{IdentityOptions, IdentitySource, WatchMetrics};
use meshmeter_selfmetrics::SelfMetrics;
use meshmeter_workloads::WorkloadRegistry;
use serde_json::json;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const PODS: usize = 10_000;
const SERVICES: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (about 40 s under dhat in a debug build); run by scripts/test.sh"]
async fn identity_caches_hold_at_most_2_kib_per_pod() {
    let api = StandIn::start().await;
    for s in 0..SERVICES {
        let ns = format!("team-{}", s % 50);
        let app = format!("service-{s}");
        api.apply("services", json!({"metadata": {"name": app, "namespace": ns},
            "spec": {"selector": {"app": app}, "ports": [{"name": "tcp", "port": 27017}], "clusterIP": format!("10.96.{}.{}", s / 250, s % 250)}}));
        api.apply("replicasets", json!({"metadata": {"name": format!("{app}-v1-5b85cdf57c"), "namespace": ns,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("{app}-v1"), "uid": "u", "controller": true}]}}));
        let endpoints: Vec<_> = (0..PODS / SERVICES)
            .map(|i| {
                let n = s * (PODS / SERVICES) + i;
                json!({"addresses": [format!("10.{}.{}.{}", 100 + n / 65536, (n / 256) % 256, n % 256)], "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{app}-v1-5b85cdf57c-{i:05}")}})
            })
            .collect();
        api.apply("endpointslices", json!({"metadata": {"name": format!("{app}-abcde"), "namespace": ns,
            "labels": {"kubernetes.io/service-name": app}}, "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "tcp", "port": 27017, "protocol": "TCP"}]}));
        for i in 0..PODS / SERVICES {
            let n = s * (PODS / SERVICES) + i;
            let ip = format!("10.{}.{}.{}", 100 + n / 65536, (n / 256) % 256, n % 256);
            api.apply("pods", json!({
                "metadata": {"name": format!("{app}-v1-5b85cdf57c-{i:05}"), "namespace": ns,
                    "labels": {"app": app, "version": "v1", "pod-template-hash": "5b85cdf57c", "security.istio.io/tlsMode": "istio"},
                    "annotations": {"sidecar.istio.io/status": "{\"version\":\"1.1.7\",\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"]}"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-v1-5b85cdf57c"), "uid": "u", "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"containers": [{"name": "app", "image": "docker.io/library/mongo:4.0", "ports": [{"containerPort": 27017}]}],
                         "serviceAccountName": format!("{app}-sa"), "nodeName": "node-1"},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.0.0.1"},
            }));
        }
    }
    // Only what is allocated from here on is tracked (the stand-in's objects are not).
    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get().curr_bytes;

    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
    tokio::time::timeout(Duration::from_secs(120), source.synced().wait())
        .await
        .expect("synced");
    let ratings = source.current();
    assert_eq!(ratings.len(), PODS);
    let w = ratings
        .by_ip("10.100.0.11".parse().unwrap())
        .expect("a pod by IP");
    assert_eq!(w.name, "service-1-v1");
    assert_eq!(w.services[0].host, "service-1.team-1.svc.cluster.local");
    drop(ratings);
    // Let connection buffers of the lists settle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = dhat::HeapStats::get().curr_bytes;
    let per_pod = (after.saturating_sub(before)) / PODS;
    println!("identity caches: {} bytes for {PODS} pods and {SERVICES} services: {per_pod} bytes per pod", after - before);
    assert!(per_pod <= 2048, "{per_pod} bytes per pod");
    drop(source);
}
