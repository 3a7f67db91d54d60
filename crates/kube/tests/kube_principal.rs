//! Identity from the principal with the Kubernetes registry: host-network pods on the node's
//! address, replicas running as one service account, a finished Job's pod beside a running
//! one of the same account.

use std::sync::Arc;
use std::time::Duration;

use meshmeter_attributes::{Bag, Manifest, Value};
use meshmeter_kube::standin::StandIn;
use meshmeter_kube::{IdentityOptions, IdentitySource, KubeRegistry, WatchMetrics};
use meshmeter_selfmetrics::SelfMetrics;
use meshmeter_workloads::{Account, Enricher, WorkloadRegistry};
use serde_json::json;

/// A pod `NAMESPACE/NAME` running as `sa`.
fn pod(
    id: &str,
    sa: &str,
    ip: &str,
    host_network: bool,
    phase: &str,
    owner: (&str, &str),
    labels: serde_json::Value,
) -> serde_json::Value {
    let (ns, name) = id.split_once('/').expect("NAMESPACE/NAME");
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.0, "name": owner.1,
                "uid": "u", "controller": true}]},
        "spec": {"containers": [], "serviceAccountName": sa, "hostNetwork": host_network},
        "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

async fn cluster() -> (StandIn, IdentitySource) {
    let api = StandIn::start().await;
    let node = "10.0.0.1";
    api.apply(
        "pods",
        pod(
            "monitoring/node-exporter-x1",
            "node-exporter",
            node,
            true,
            "Running",
            ("DaemonSet", "node-exporter"),
            json!({"app": "node-exporter"}),
        ),
    );
    api.apply(
        "pods",
        pod(
            "kube-system/kube-proxy-y2",
            "kube-proxy",
            node,
            true,
            "Running",
            ("DaemonSet", "kube-proxy"),
            json!({"k8s-app": "kube-proxy"}),
        ),
    );
    api.apply("replicasets", json!({"metadata": {"name": "ratings-v2-66648f8776", "namespace": "default",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "ratings-v2", "uid": "d", "controller": true}]}}));
    for (name, ip, zone) in [
        ("ratings-v2-66648f8776-aaaaa", "10.244.0.12", "a"),
        ("ratings-v2-66648f8776-bbbbb", "10.244.0.14", "b"),
    ] {
        api.apply(
            "pods",
            pod(
                &format!("default/{name}"),
                "bookinfo-ratings",
                ip,
                false,
                "Running",
                ("ReplicaSet", "ratings-v2-66648f8776"),
                json!({"app": "ratings", "version": "v2", "zone": zone}),
            ),
        );
    }
    api.apply(
        "pods",
        pod(
            "default/mongodb-v1-0",
            "default",
            "10.244.0.13",
            false,
            "Running",
            ("StatefulSet", "mongodb-v1"),
            json!({"app": "mongodb"}),
        ),
    );
    api.apply(
        "pods",
        pod(
            "default/migrate-x9",
            "default",
            "10.244.0.99",
            false,
            "Succeeded",
            ("StatefulSet", "migrate"),
            json!({"app": "migrate"}),
        ),
    );
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
    tokio::time::timeout(Duration::from_secs(10), source.synced().wait())
        .await
        .expect("synced");
    (api, source)
}

/// Every attribute of a bag of `attrs` after enrichment from `registry`, sorted.
fn enrich(registry: &KubeRegistry, attrs: &[(&str, Value<'static>)]) -> Vec<String> {
    let m = Manifest::istio();
    let mut bag = Bag::new(&m);
    for (name, v) in attrs {
        bag.set(m.id(name).unwrap(), v.borrowed());
    }
    Enricher::new(&m).enrich(&mut bag, registry);
    let mut all: Vec<String> = bag
        .iter()
        .map(|(id, v)| format!("{}={v}", m.name(id)))
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn the_registry_indexes_pods_by_account_and_knows_shared_addresses() {
    let (_api, source) = cluster().await;
    let registry = source.current();
    assert!(registry.ip_shared("10.0.0.1".parse().unwrap()));
    assert!(registry.ip_shared("::ffff:10.0.0.1".parse().unwrap()));
    assert!(!registry.ip_shared("10.244.0.12".parse().unwrap()));
    match registry.by_service_account("monitoring", "node-exporter") {
        Some(Account::One(w)) => assert_eq!(w.uid, "kubernetes://node-exporter-x1.monitoring"),
        other => panic!("{other:?}"),
    }
    // The finished pod does not make the running one's account ambiguous.
    match registry.by_service_account("default", "default") {
        Some(Account::One(w)) => assert_eq!(w.pod, "mongodb-v1-0"),
        other => panic!("{other:?}"),
    }
    match registry.by_service_account("default", "bookinfo-ratings") {
        Some(Account::Several(g)) => {
            assert_eq!(g.workloads, 2);
            assert_eq!(g.workload_name.as_deref(), Some("ratings-v2"));
        }
        other => panic!("{other:?}"),
    }
    assert!(registry.by_service_account("default", "nobody").is_none());
    assert!(registry.by_service_account("nowhere", "default").is_none());
}

#[tokio::test]
async fn a_host_network_pod_is_named_by_its_principal_and_replicas_by_what_they_share() {
    let (_api, source) = cluster().await;
    let registry = source.current();
    let node = Value::IpAddress("10.0.0.1".parse().unwrap());
    assert_eq!(
        enrich(
            &registry,
            &[
                ("source.ip", node.clone()),
                (
                    "source.principal",
                    Value::from("spiffe://cluster.local/ns/monitoring/sa/node-exporter")
                ),
            ]
        ),
        [
            "source.ip=10.0.0.1",
            "source.labels=app=node-exporter",
            "source.name=node-exporter-x1",
            "source.namespace=monitoring",
            "source.owner=kubernetes://apis/apps/v1/namespaces/monitoring/daemonsets/node-exporter",
            "source.principal=spiffe://cluster.local/ns/monitoring/sa/node-exporter",
            "source.serviceAccount=node-exporter",
            "source.uid=kubernetes://node-exporter-x1.monitoring",
            "source.workload.name=node-exporter",
            "source.workload.namespace=monitoring",
            "source.workload.uid=istio://monitoring/workloads/node-exporter",
        ]
    );
    // The same address with the other host-network pod's principal: that pod.
    let other = enrich(
        &registry,
        &[
            ("source.ip", node),
            (
                "source.principal",
                Value::from("cluster.local/ns/kube-system/sa/kube-proxy"),
            ),
        ],
    );
    assert!(
        other.contains(&"source.uid=kubernetes://kube-proxy-y2.kube-system".to_owned()),
        "{other:?}"
    );
    // Replicas behind NAT: the Deployment, its shared labels; no pod.
    assert_eq!(
        enrich(
            &registry,
            &[
                (
                    "source.ip",
                    Value::IpAddress("192.168.7.7".parse().unwrap())
                ),
                (
                    "source.principal",
                    Value::from("cluster.local/ns/default/sa/bookinfo-ratings")
                ),
            ]
        ),
        [
            "source.ip=192.168.7.7",
            "source.labels=app=ratings&version=v2",
            "source.namespace=default",
            "source.owner=kubernetes://apis/apps/v1/namespaces/default/deployments/ratings-v2",
            "source.principal=cluster.local/ns/default/sa/bookinfo-ratings",
            "source.serviceAccount=bookinfo-ratings",
            "source.workload.name=ratings-v2",
            "source.workload.namespace=default",
            "source.workload.uid=istio://default/workloads/ratings-v2",
        ]
    );
    // A replica's own address: that replica.
    let own = enrich(
        &registry,
        &[
            (
                "source.ip",
                Value::IpAddress("10.244.0.14".parse().unwrap()),
            ),
            (
                "source.principal",
                Value::from("cluster.local/ns/default/sa/bookinfo-ratings"),
            ),
        ],
    );
    assert!(
        own.contains(&"source.name=ratings-v2-66648f8776-bbbbb".to_owned()),
        "{own:?}"
    );
}
