//! The control plane's service catalog from the stand-in API server: Services, their
//! EndpointSlices and the pods behind them; a change is published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_kube::standin::StandIn;
use meshmeter_kube::{IdentityOptions, IdentitySource, WatchMetrics};
use meshmeter_routing::catalog::{CatalogEndpoint, CatalogPort, CatalogService};
use meshmeter_selfmetrics::SelfMetrics;
use serde_json::json;

fn mongodb_endpoint(ip: &str, version: &str, hash: &str, workload: &str) -> CatalogEndpoint {
    CatalogEndpoint {
        ip: ip.parse().unwrap(),
        ports: BTreeMap::from([(27017, 27017)]),
        labels: BTreeMap::from([
            ("app".to_owned(), "mongodb".to_owned()),
            ("pod-template-hash".to_owned(), hash.to_owned()),
            ("version".to_owned(), version.to_owned()),
        ]),
        workload: workload.into(),
        namespace: "default".into(),
        service_account: "default".into(),
    }
}

#[tokio::test]
async fn services_endpoint_slices_and_pods_make_the_catalog_and_changes_are_published() {
    let api = StandIn::start().await;
    api.apply_list("pods", include_str!("data/pods.json"));
    api.apply_list("replicasets", include_str!("data/replicasets.json"));
    api.apply_list("services", include_str!("data/services.json"));
    api.apply_list("endpointslices", include_str!("data/endpointslices.json"));
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
    source.synced().wait().await;
    let mut catalog = source.catalog();

    let current = Arc::clone(&catalog.borrow_and_update());
    let hosts: Vec<&str> = current.services.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(
        hosts,
        [
            "kubernetes.default.svc.cluster.local",
            "mongodb.default.svc.cluster.local",
            "ratings.default.svc.cluster.local"
        ]
    );
    let mongodb = CatalogService {
        host: "mongodb.default.svc.cluster.local".into(),
        name: "mongodb".into(),
        namespace: "default".into(),
        addresses: vec!["10.96.119.29".parse().unwrap()],
        ports: vec![CatalogPort {
            port: 27017,
            name: "mongo".into(),
        }],
        endpoints: vec![mongodb_endpoint(
            "10.244.0.13",
            "v1",
            "5b85cdf57c",
            "mongodb-v1",
        )],
    };
    assert_eq!(current.services[1], mongodb);
    // No EndpointSlice recorded for the API server's own Service.
    assert!(current.services[0].endpoints.is_empty());

    // A second version of MongoDB arrives, its address joins the slice.
    api.apply(
        "pods",
        json!({
            "metadata": {"name": "mongodb-v2-7f8c9d6b5-abcde", "namespace": "default",
                "labels": {"app": "mongodb", "version": "v2", "pod-template-hash": "7f8c9d6b5"},
                "creationTimestamp": "2026-12-07T10:00:00Z",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "mongodb-v2-7f8c9d6b5", "uid": "y", "controller": true}]},
            "spec": {"containers": [{"name": "mongodb", "image": "mongo"}],
                     "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": "10.244.0.14",
                       "podIPs": [{"ip": "10.244.0.14"}]}
        }),
    );
    api.apply(
        "endpointslices",
        json!({"metadata": {"name": "mongodb-cvp9m", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "mongodb"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.13"], "conditions": {"ready": true}},
                          {"addresses": ["10.244.0.14"], "conditions": {"ready": true}},
                          {"addresses": ["10.244.0.15"], "conditions": {"ready": false}}],
            "ports": [{"name": "mongo", "port": 27017, "protocol": "TCP"}]}),
    );
    let want = {
        let mut m = mongodb.clone();
        m.endpoints.push(mongodb_endpoint(
            "10.244.0.14",
            "v2",
            "7f8c9d6b5",
            "mongodb-v2-7f8c9d6b5",
        ));
        m
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if catalog.borrow_and_update().services.get(1) == Some(&want) {
            break;
        }
        tokio::time::timeout_at(deadline, catalog.changed())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out waiting for the second endpoint: {:?}",
                    catalog.borrow().services.get(1)
                )
            })
            .unwrap();
    }
}
