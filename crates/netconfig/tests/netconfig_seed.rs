//! The seed's traffic files load with exactly the expected model.

use std::collections::BTreeMap;
use std::path::Path;

use meshmeter_netconfig::*;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.into(),
        namespace: "default".into(),
    }
}

fn subset(name: &str) -> Subset {
    Subset {
        name: name.into(),
        labels: BTreeMap::from([("version".to_owned(), name.to_owned())]),
        traffic_policy: None,
    }
}

fn rules(policy: Option<TrafficPolicy>) -> Vec<DestinationRule> {
    let rule = |name: &str, subsets: &[&str]| DestinationRule {
        meta: meta(name),
        host: name.into(),
        traffic_policy: policy.clone(),
        subsets: subsets.iter().map(|s| subset(s)).collect(),
    };
    vec![
        rule("productpage", &["v1"]),
        rule("reviews", &["v1", "v2", "v3"]),
        rule("ratings", &["v1", "v2", "v2-mysql", "v2-mysql-vm"]),
        rule("details", &["v1", "v2"]),
    ]
}

#[test]
fn destination_rule_all() {
    let (config, diagnostics) = load_dir(&data("destination-rule-all.yaml"));
    assert_eq!(diagnostics, vec![]);
    assert_eq!(
        config,
        NetworkConfig {
            destination_rules: rules(None),
            virtual_services: vec![],
            peer_policies: vec![],
        }
    );
}

#[test]
fn destination_rule_all_mtls() {
    let (config, diagnostics) = load_dir(&data("destination-rule-all-mtls.yaml"));
    assert_eq!(diagnostics, vec![]);
    let mtls = TrafficPolicy {
        tls: Some(TlsMode::IstioMutual),
        ..TrafficPolicy::default()
    };
    assert_eq!(config.destination_rules, rules(Some(mtls)));
    assert!(config.virtual_services.is_empty() && config.peer_policies.is_empty());
}

#[test]
fn virtual_service_ratings_db() {
    let path = data("virtual-service-ratings-db.yaml");
    let (config, diagnostics) = load_dir(&path);
    let vs = |name: &str| VirtualService {
        meta: meta(name),
        hosts: vec![name.into()],
        gateways: vec![],
        tcp: vec![],
        http_routes: 1,
    };
    assert_eq!(config.virtual_services, vec![vs("reviews"), vs("ratings")]);
    assert!(config.destination_rules.is_empty());
    let shown: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    let p = path.display();
    assert_eq!(
        shown,
        vec![
            format!("{p}:8:3: info[N0901]: 1 http route of VirtualService default/reviews ignored: meshmeter routes TCP"),
            format!("{p}:21:3: info[N0901]: 1 http route of VirtualService default/ratings ignored: meshmeter routes TCP"),
        ]
    );
}

#[test]
fn a_directory_holds_traffic_and_telemetry_objects() {
    let dir = std::env::temp_dir().join(format!("netconfig-mixed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(data("destination-rule-all.yaml"), dir.join("a-rules.yaml")).unwrap();
    std::fs::write(
        dir.join("b-telemetry.yaml"),
        "apiVersion: config.istio.io/v1alpha2\nkind: metric\nmetadata:\n  name: sent\nspec:\n  value: connection.sent.bytes | 0\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n",
    )
    .unwrap();
    let (config, diagnostics) = load_dir(&dir);
    assert_eq!(diagnostics, vec![]);
    assert_eq!(config.destination_rules, rules(None));
    // And the telemetry loader reads the same directory, skipping the traffic objects.
    let options = meshmeter_config::LoadOptions {
        include_defaults: false,
        ..Default::default()
    };
    let snapshot = meshmeter_config::load_paths(std::slice::from_ref(&dir), &options).unwrap();
    assert_eq!(snapshot.user_counts().instances, 1);
    let first = snapshot.diagnostics().iter().next().unwrap().to_string();
    assert_eq!(
        first,
        format!("{}:2:7: info[I0001]: skipping DestinationRule 'productpage' (networking.istio.io/v1alpha3): traffic configuration, not telemetry", dir.join("a-rules.yaml").display())
    );
    let _ = std::fs::remove_dir_all(&dir);
}
