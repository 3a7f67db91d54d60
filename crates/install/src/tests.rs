use std::collections::BTreeMap;

use meshmeter_config::{load_str, LoadOptions};
use yaml_rust2::YamlLoader;

use super::*;

fn kinds(yaml: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for doc in YamlLoader::load_from_str(yaml).unwrap() {
        if doc.is_null() {
            continue;
        }
        let kind = doc["kind"].as_str().unwrap().to_string();
        *out.entry(kind).or_default() += 1;
    }
    out
}

#[test]
fn every_document_parses_and_the_kinds_are_exact() {
    let yaml = render(&InstallOptions::default()).unwrap();
    let want: BTreeMap<String, usize> = [
        ("Namespace", 1),
        ("CustomResourceDefinition", 42),
        ("ServiceAccount", 4),
        ("ClusterRole", 4),
        ("ClusterRoleBinding", 4),
        ("Deployment", 4),
        ("Service", 4),
        ("MutatingWebhookConfiguration", 1),
        ("attributemanifest", 2),
        ("handler", 3),
        ("logentry", 1),
        ("metric", 4),
        ("rule", 5),
        ("kubernetes", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(kinds(&yaml), want);
    let skipped = render(&InstallOptions {
        skip_crds: true,
        ..InstallOptions::default()
    })
    .unwrap();
    assert_eq!(kinds(&skipped).get("CustomResourceDefinition"), None);
    let without = render(&InstallOptions {
        skip_injector: true,
        ..InstallOptions::default()
    })
    .unwrap();
    let k = kinds(&without);
    assert_eq!(k.get("MutatingWebhookConfiguration"), None);
    assert_eq!(k.get("Deployment"), Some(&3));
    assert!(!without.contains("meshmeter-injector"));
    let without = render(&InstallOptions {
        skip_ca: true,
        ..InstallOptions::default()
    })
    .unwrap();
    let k = kinds(&without);
    assert_eq!(k.get("Deployment"), Some(&3));
    assert!(!without.contains("meshmeter-ca"));
    assert!(!without.contains("tokenreviews"));
    // Sidecars injected without a CA get no mTLS setup.
    assert!(without.contains("        - --ca-addr=\n"));
    let without = render(&InstallOptions {
        skip_control: true,
        ..InstallOptions::default()
    })
    .unwrap();
    // Sidecars injected without a control plane forward to original destinations.
    assert!(without.contains("        - --control-plane=\n"));
    let k = kinds(&without);
    assert_eq!(k.get("Deployment"), Some(&3));
    assert!(!without.contains("meshmeter-control"));
    let with = render(&InstallOptions::default()).unwrap();
    assert!(with
        .contains("        - control\n        - --kubernetes\n        - --listen=0.0.0.0:15010\n"));
    assert!(with.contains(
        "- apiGroups: [networking.istio.io]\n  resources: [destinationrules, virtualservices]\n  verbs: [get, list, watch]\n"
    ));
}

#[test]
fn the_default_tcp_telemetry_loads_with_no_error_in_the_install_namespace() {
    let yaml = render(&InstallOptions {
        namespace: "mesh".to_string(),
        ..InstallOptions::default()
    })
    .unwrap();
    let options = LoadOptions {
        default_namespace: "mesh".to_string(),
        include_defaults: false,
    };
    let snapshot = load_str(&[("install.yaml", &yaml)], &options).unwrap();
    let c = snapshot.user_counts();
    // 4 TCP metrics + tcpaccesslog + the kubernetes attributes; prometheus, stdio,
    // kubernetesenv; promtcp, open, closed, stdiotcp, tcpkubeattrgenrulerule.
    assert_eq!((c.instances, c.handlers, c.rules), (6, 3, 5));
    assert!(
        !yaml.contains("istio-system"),
        "a default object stayed in istio-system"
    );
    assert!(!yaml.contains("requestcount"));
    for metric in [
        "tcp_sent_bytes_total",
        "tcp_received_bytes_total",
        "tcp_connections_opened_total",
        "tcp_connections_closed_total",
    ] {
        assert!(yaml.contains(&format!("name: {metric}\n")), "{metric}");
    }
    assert!(yaml.contains("instance_name: tcpbytesent.metric.mesh\n"));
}

#[test]
fn flags_reach_the_server_and_bad_values_are_refused() {
    let yaml = render(&InstallOptions {
        namespace: "obs".to_string(),
        image: "reg.example/mm:2".to_string(),
        replicas: 3,
        skip_crds: true,
        skip_injector: false,
        skip_ca: false,
        skip_control: false,
    })
    .unwrap();
    assert!(yaml.contains("  replicas: 3\n"));
    assert!(yaml.contains("        image: \"reg.example/mm:2\"\n"));
    assert!(yaml.contains("        - --config-default-namespace=obs\n"));
    assert!(yaml.contains("  namespace: obs\n"));
    assert!(yaml.contains("        - --mixer=meshmeter-telemetry.obs.svc:9091\n"));
    assert!(yaml.contains("        - \"--image=reg.example/mm:2\"\n"));
    assert!(yaml.contains("        - --ca-addr=meshmeter-ca.obs.svc:8060\n"));
    assert!(yaml.contains("        - --control-plane=meshmeter-control.obs.svc:15010\n"));
    // The CA publishes the trust bundle in every namespace: it watches namespaces and
    // writes (only) ConfigMaps.
    assert!(yaml.contains(
        "- apiGroups: [\"\"]\n  resources: [namespaces]\n  verbs: [list, watch]\n- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get, create, update]\n"
    ));
    let bad = |namespace: &str, image: &str| {
        render(&InstallOptions {
            namespace: namespace.to_string(),
            image: image.to_string(),
            ..InstallOptions::default()
        })
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        bad("Mesh", "x"),
        "namespace \"Mesh\": must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
    );
    assert_eq!(bad("-a", "x").split(':').next(), Some("namespace \"-a\""));
    assert_eq!(
        bad("ok", "a b"),
        "image \"a b\": must be a non-empty image reference without spaces"
    );
}
