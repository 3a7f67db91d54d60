//! Traffic objects from the API server (the stand-in) reach the traffic configuration's
//! watch channel through the same parser as files, merged with the files; a rejected object
//! keeps its previous version and gets a Warning Event.

use std::sync::Arc;
use std::time::Duration;

use meshmeter_kube::standin::StandIn;
use meshmeter_kube::{ProblemEvents, TrafficSource, WatchMetrics};
use meshmeter_netconfig::{NetWatcher, NetworkConfig, PeerMtlsMode, TlsMode};
use meshmeter_selfmetrics::SelfMetrics;
use serde_json::json;
use tokio::sync::watch;

/// Waits (bounded) until the published configuration satisfies `check`.
async fn until(
    rx: &mut watch::Receiver<Arc<NetworkConfig>>,
    what: &str,
    check: impl Fn(&NetworkConfig) -> bool,
) -> Arc<NetworkConfig> {
    let found = {
        let wait = rx.wait_for(|c| check(c));
        match tokio::time::timeout(Duration::from_secs(10), wait).await {
            Ok(Ok(c)) => Some(Arc::clone(&c)),
            _ => None,
        }
    };
    found.unwrap_or_else(|| panic!("timed out waiting for {what}: {:?}", rx.borrow()))
}

fn rule(subset: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": "mongodb", "namespace": "db"},
        "spec": {
            "host": "mongodb.db.svc.cluster.local",
            "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
            "subsets": [{"name": subset, "labels": {"version": "v1"}}]
        }
    })
}

#[tokio::test]
async fn kubernetes_objects_reach_the_watch_channel_merged_with_the_files() {
    let server = StandIn::start().await;
    server.apply("destinationrules", rule("v1"));
    server.apply(
        "meshpolicies",
        json!({"metadata": {"name": "default"}, "spec": {"peers": [{"mtls": {"mode": "PERMISSIVE"}}]}}),
    );
    let dir = std::env::temp_dir().join(format!("kube-traffic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("vs.yaml"),
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: ratings}\nspec:\n  hosts: [ratings]\n  tcp:\n  - route:\n    - destination: {host: ratings, subset: v2}\n",
    )
    .unwrap();

    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = TrafficSource::start(server.client(), &[], &metrics);
    let mut watcher = NetWatcher::new(vec![dir.clone()]);
    let mut rx = watcher.subscribe();
    let events = ProblemEvents::new(server.client(), tokio::runtime::Handle::current())
        .with_component("meshmeter-control");
    watcher.follow_objects(source.documents(), move |problems| events.record(&problems));
    source.synced().wait().await;

    let config = until(&mut rx, "the listed objects", |c| {
        c.destination_rules.len() == 1 && c.peer_policies.len() == 1
    })
    .await;
    assert_eq!(config.virtual_services[0].meta.name, "ratings");
    let dr = &config.destination_rules[0];
    assert_eq!(
        (dr.meta.namespace.as_str(), dr.host.as_str()),
        ("db", "mongodb.db.svc.cluster.local")
    );
    assert_eq!(dr.subsets[0].name, "v1");
    assert_eq!(
        dr.traffic_policy.as_ref().unwrap().tls,
        Some(TlsMode::IstioMutual)
    );
    let mesh = &config.peer_policies[0];
    assert!(mesh.mesh_wide);
    assert_eq!(mesh.meta.namespace, "");
    assert_eq!(mesh.mtls, Some(PeerMtlsMode::Permissive));

    // An edit reaches the channel.
    server.apply("destinationrules", rule("v2"));
    until(&mut rx, "the edit", |c| {
        c.destination_rules
            .first()
            .is_some_and(|r| r.subsets[0].name == "v2")
    })
    .await;

    // A broken edit: rejected, v2 stays, and the object gets a Warning Event.
    let mut broken = rule("v3");
    broken["spec"]["trafficPolicy"]["tls"]["mode"] = json!("ISTIO_MUTUL");
    server.apply("destinationrules", broken);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let event = loop {
        let posted = server.posted();
        if let Some((_, e)) = posted.iter().find(|(path, _)| path.contains("/events")) {
            break e.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no Warning Event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(event["reason"], "Rejected");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["source"]["component"], "meshmeter-control");
    assert_eq!(event["involvedObject"]["kind"], "DestinationRule");
    assert_eq!(
        event["involvedObject"]["apiVersion"],
        "networking.istio.io/v1alpha3"
    );
    let message = event["message"].as_str().unwrap();
    assert!(
        message.starts_with("DestinationRule mongodb rejected by meshmeter; its previous version stays in force: kubernetes:db/DestinationRule/mongodb:"),
        "{message}"
    );
    assert!(
        message.contains("error[C0013]: spec.trafficPolicy.tls.mode of DestinationRule db/mongodb 'ISTIO_MUTUL' is not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL"),
        "{message}"
    );
    assert_eq!(watcher.rejected_objects(), 1);
    assert_eq!(watcher.current().destination_rules[0].subsets[0].name, "v2");

    // Deleted: gone from the channel.
    assert!(server.delete("destinationrules", "db", "mongodb"));
    until(&mut rx, "the delete", |c| c.destination_rules.is_empty()).await;
    assert_eq!(watcher.rejected_objects(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn namespaces_limit_the_namespaced_kinds_and_the_mesh_policy_is_read_cluster_wide() {
    let server = StandIn::start().await;
    server.apply("destinationrules", rule("v1"));
    let mut elsewhere = rule("v1");
    elsewhere["metadata"]["namespace"] = json!("other");
    server.apply("destinationrules", elsewhere);
    server.apply(
        "meshpolicies",
        json!({"metadata": {"name": "default"}, "spec": {"peers": [{"mtls": {}}]}}),
    );
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = TrafficSource::start(server.client(), &["db".to_owned()], &metrics);
    source.synced().wait().await;
    let docs = source.documents().borrow().clone();
    let names: Vec<String> = docs.iter().map(|d| d.display_name()).collect();
    assert_eq!(
        names,
        [
            "kubernetes:db/DestinationRule/mongodb",
            "kubernetes:/MeshPolicy/default"
        ]
    );
    let watcher = NetWatcher::new(vec![]);
    assert_eq!(watcher.set_objects(docs.as_ref().clone()), vec![]);
    let config = watcher.current();
    assert_eq!(config.destination_rules.len(), 1);
    assert_eq!(config.peer_policies[0].mtls, Some(PeerMtlsMode::Strict));
}
