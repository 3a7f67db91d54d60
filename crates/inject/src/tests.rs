use serde_json::{json, Value};

use super::*;
use crate::stream::split;
use yaml_rust2::Yaml;

fn opts() -> InjectOptions {
    InjectOptions {
        image: "img:1".to_string(),
        ..InjectOptions::default()
    }
}

fn deployment(template_meta: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    metadata:
{template_meta}
    spec:
{extra_spec}
      containers:
      - name: app
        image: app
        ports:
        - containerPort: 8080
        - containerPort: 8080
        - containerPort: 53
          protocol: UDP
        - containerPort: 9090
"
    )
}

fn outcome(input: &str) -> Outcome {
    inject_stream(input, &opts()).unwrap().documents[0]
        .outcome
        .clone()
}

fn capture_args(output: &str) -> Vec<String> {
    let docs = yaml_rust2::YamlLoader::load_from_str(output).unwrap();
    let init = crate::tree::path(&docs[0], &["spec", "template", "spec", "initContainers"])
        .unwrap()
        .as_vec()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    crate::tree::get(&init, "args")
        .unwrap()
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn declared_tcp_ports_are_the_inbound_ports_once_each() {
    let out = inject_stream(&deployment("      labels: {app: web}", ""), &opts()).unwrap();
    assert_eq!(
        capture_args(&out.output),
        [
            "capture",
            "--inbound-ports=8080,9090",
            "--exclude-inbound-ports=15090",
            "--proxy-uid=1337",
            "--inbound-proxy-port=15006",
            "--outbound-proxy-port=15001"
        ]
    );
}

#[test]
fn istio_traffic_annotations_override_the_ports_and_ranges() {
    let meta = "      annotations:
        traffic.sidecar.istio.io/includeInboundPorts: \"*\"
        traffic.sidecar.istio.io/excludeInboundPorts: \"9090, 15090\"
        traffic.sidecar.istio.io/excludeOutboundPorts: \"3306\"
        traffic.sidecar.istio.io/excludeOutboundIPRanges: \"10.0.0.0/8,fd00::/8\"
        traffic.sidecar.istio.io/includeOutboundIPRanges: \"*\"";
    let out = inject_stream(&deployment(meta, ""), &opts()).unwrap();
    assert_eq!(
        capture_args(&out.output)[1..5],
        [
            "--inbound-ports=*",
            "--exclude-inbound-ports=15090,9090",
            "--exclude-outbound-ports=3306",
            "--exclude-outbound-cidrs=10.0.0.0/8,fd00::/8",
        ]
    );
    let meta = "      annotations:
        traffic.sidecar.istio.io/includeInboundPorts: \"\"
        traffic.sidecar.istio.io/includeOutboundIPRanges: \"10.96.0.0/12\"";
    let out = inject_stream(&deployment(meta, ""), &opts()).unwrap();
    let args = capture_args(&out.output);
    assert_eq!(args[1], "--inbound-ports=");
    assert_eq!(args[3], "--include-outbound-cidrs=10.96.0.0/12");
}

#[test]
fn a_bad_annotation_names_the_document_object_and_value() {
    let meta = "      annotations:
        traffic.sidecar.istio.io/excludeOutboundPorts: \"3306,http\"";
    let input = format!("kind: ConfigMap\n---\n{}", deployment(meta, ""));
    let err = inject_stream(&input, &opts()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "document 2 (line 2): Deployment 'web': annotation traffic.sidecar.istio.io/excludeOutboundPorts: \"3306,http\": \"http\" is not a port (1-65535)"
    );
    let meta = "      annotations:
        traffic.sidecar.istio.io/excludeOutboundIPRanges: \"10.0.0.0/33\"";
    let err = inject_stream(&deployment(meta, ""), &opts()).unwrap_err();
    assert!(
        err.to_string().contains("invalid CIDR \"10.0.0.0/33\""),
        "{err}"
    );
}

#[test]
fn opt_out_by_annotation_or_label_in_any_spelling_leaves_the_bytes() {
    for meta in [
        "      annotations: {sidecar.istio.io/inject: \"false\"}",
        "      annotations: {sidecar.istio.io/inject: false}",
        "      labels: {sidecar.istio.io/inject: \"false\"}",
        "      annotations: {sidecar.istio.io/inject: \"No\"}",
    ] {
        let input = deployment(meta, "");
        let out = inject_stream(&input, &opts()).unwrap();
        assert_eq!(out.output, input);
        assert!(matches!(
            out.documents[0].outcome,
            Outcome::Skipped(Skip::OptedOut(_))
        ));
    }
    let input = deployment("      annotations: {sidecar.istio.io/inject: \"true\"}", "");
    assert_eq!(outcome(&input), Outcome::Injected);
}

#[test]
fn host_network_and_istio_sidecars_are_skipped() {
    let input = deployment("      labels: {}", "      hostNetwork: true");
    assert_eq!(outcome(&input), Outcome::Skipped(Skip::HostNetwork));
    let input = deployment("      annotations: {sidecar.istio.io/status: '{}'}", "");
    assert_eq!(outcome(&input), Outcome::Skipped(Skip::IstioSidecar));
}

#[test]
fn every_workload_kind_and_list_items_are_injected() {
    let template = "    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: i}]}";
    for (api, kind) in [
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "ReplicaSet"),
        ("batch/v1", "Job"),
        ("v1", "ReplicationController"),
    ] {
        let input = format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\nspec:\n  template:\n{template}\n");
        assert_eq!(outcome(&input), Outcome::Injected, "{kind}");
    }
    let cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: x}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec: {containers: [{name: c, image: i}]}\n";
    assert_eq!(outcome(cron), Outcome::Injected);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\n";
    assert_eq!(outcome(pod), Outcome::Injected);
    let list = format!("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {{name: s}}\n- {}", pod.replace('\n', "\n  "));
    let out = inject_stream(&list, &opts()).unwrap();
    assert_eq!(out.documents[0].outcome, Outcome::Injected);
    assert_eq!(out.output.matches("name: meshmeter-proxy").count(), 1);
    // Not a workload group: a CRD that happens to be called Deployment.
    let other = "apiVersion: example.com/v1\nkind: Deployment\nspec: {template: {spec: {containers: []}}}\n";
    assert_eq!(outcome(other), Outcome::Skipped(Skip::NotAWorkload));
}

#[test]
fn shape_and_yaml_errors_name_where() {
    let bad = "kind: Service\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n";
    let err = inject_stream(bad, &opts()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "document 2 (line 2): Pod 'p': field 'containers' must be a list"
    );
    let bad = "kind: Service\n---\nkind: Pod\nmetadata: [\n";
    let err = inject_stream(bad, &opts()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("line 5, column 1: invalid YAML"),
        "{err}"
    );
}

#[test]
fn split_gives_the_input_back_and_counts_lines() {
    let input = "# head\na: 1\n---\nb: 2\n--- # c\nc: |\n  ---x\n---\n";
    let pieces = split(input);
    let joined: String = pieces.iter().map(|p| p.text).collect();
    assert_eq!(joined, input);
    let lines: Vec<_> = pieces.iter().map(|p| p.first_line).collect();
    assert_eq!(lines, [1, 3, 5, 8]);
}

fn apply(doc: &mut Value, ops: &[Value]) {
    for op in ops {
        let path = op["path"].as_str().unwrap();
        let (parent, last) = path.rsplit_once('/').unwrap();
        let last = last.replace("~1", "/").replace("~0", "~");
        let target = doc.pointer_mut(parent).unwrap();
        match (op["op"].as_str().unwrap(), target) {
            ("add", Value::Object(m)) => {
                m.insert(last, op["value"].clone());
            }
            ("add", Value::Array(a)) => {
                let i = if last == "-" {
                    a.len()
                } else {
                    last.parse().unwrap()
                };
                a.insert(i, op["value"].clone());
            }
            ("replace", t) => t[&last] = op["value"].clone(),
            (o, _) => panic!("unexpected op {o}"),
        }
    }
}

#[test]
fn json_patch_turns_the_pod_into_its_injected_form() {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "ratings-v2-7d8f9-",
            "labels": {"app": "ratings", "pod-template-hash": "7d8f9"},
            "annotations": {"a/b~c": "x"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "ratings-v2-7d8f9", "controller": true}]
        },
        "spec": {"containers": [{"name": "ratings", "image": "r", "ports": [{"containerPort": 9080}]}]}
    });
    let (outcome, ops) = inject_json(&pod, &opts()).unwrap();
    assert_eq!(outcome, Outcome::Injected);
    let paths: Vec<_> = ops
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["op"].as_str().unwrap(),
                o["path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            "add /spec/containers/1",
            "add /spec/initContainers",
            "add /spec/volumes"
        ]
    );
    let mut patched = pod.clone();
    apply(&mut patched, &ops);
    let env = &patched["spec"]["containers"][1]["env"];
    let workload = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MESHMETER_WORKLOAD")
        .unwrap();
    assert_eq!(workload["value"], "ratings-v2");
    // Injecting the patched pod again changes nothing.
    let (again, ops) = inject_json(&patched, &opts()).unwrap();
    assert_eq!(
        (again, ops.len()),
        (Outcome::Skipped(Skip::AlreadyInjected), 0)
    );
}

#[test]
fn diff_escapes_pointer_tokens_and_removes_from_the_end() {
    let a = json!({"m": {"a/b": 1, "c~d": [1, 2, 3]}});
    let b = json!({"m": {"a/b": 2, "c~d": [1]}});
    let mut ops = Vec::new();
    diff(&a, &b, &mut String::new(), &mut ops);
    assert_eq!(
        Value::Array(ops),
        json!([
            {"op": "replace", "path": "/m/a~1b", "value": 2},
            {"op": "remove", "path": "/m/c~0d/2"},
            {"op": "remove", "path": "/m/c~0d/1"}
        ])
    );
}

#[test]
fn aliases_and_deep_nesting_are_refused_with_their_place() {
    let bomb = "kind: Service\n---\na: &a [x, x]\nb: &b [*a, *a]\n";
    let err = inject_stream(bomb, &opts()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 4, column 8: invalid YAML: YAML aliases are not supported"
    );
    let deep = format!("kind: Pod\nspec: {}{}\n", "[".repeat(70), "]".repeat(70));
    let err = inject_stream(&deep, &opts()).unwrap_err();
    assert!(
        err.to_string().contains("nesting deeper than 64 levels"),
        "{err}"
    );
}

fn template_spec(output: &str) -> Yaml {
    let docs = yaml_rust2::YamlLoader::load_from_str(output).unwrap();
    crate::tree::path(&docs[0], &["spec", "template", "spec"])
        .unwrap()
        .clone()
}

fn names(spec: &Yaml, keys: &[&str]) -> Vec<String> {
    crate::tree::path(spec, keys)
        .unwrap()
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| crate::tree::str_at(v, "name").unwrap().to_string())
        .collect()
}

#[test]
fn the_ca_address_brings_the_token_and_trust_bundle_and_none_brings_nothing() {
    let input = deployment("      labels: {app: web}", "");
    let out = inject_stream(&input, &opts()).unwrap();
    let spec = template_spec(&out.output);
    assert_eq!(
        names(&spec, &["volumes"]),
        [PODINFO_VOLUME, CA_TOKEN_VOLUME, CA_ROOT_VOLUME]
    );
    let sidecar = crate::tree::get(&spec, "containers")
        .unwrap()
        .as_vec()
        .unwrap()[1]
        .clone();
    assert_eq!(
        names(&sidecar, &["volumeMounts"]),
        [PODINFO_VOLUME, CA_TOKEN_VOLUME, CA_ROOT_VOLUME]
    );
    let env = crate::tree::get(&sidecar, "env").unwrap().as_vec().unwrap();
    let value = |n: &str| {
        env.iter()
            .find(|e| crate::tree::str_at(e, "name") == Some(n))
            .and_then(|e| crate::tree::str_at(e, "value"))
            .map(String::from)
    };
    assert_eq!(value("MESHMETER_CA_ADDR").as_deref(), Some(DEFAULT_CA_ADDR));
    assert_eq!(
        value("MESHMETER_CA_TOKEN_FILE").as_deref(),
        Some("/var/run/secrets/meshmeter/ca-token/token")
    );
    assert_eq!(
        value("MESHMETER_CA_ROOT").as_deref(),
        Some("/etc/meshmeter/ca-root/root-cert.pem")
    );
    let token = crate::tree::path(&spec, &["volumes"])
        .unwrap()
        .as_vec()
        .unwrap()[1]
        .clone();
    let source = crate::tree::path(&token, &["projected", "sources"])
        .unwrap()
        .as_vec()
        .unwrap()[0]
        .clone();
    assert_eq!(
        crate::tree::path(&source, &["serviceAccountToken", "audience"]).and_then(Yaml::as_str),
        Some(CA_TOKEN_AUDIENCE)
    );
    assert_eq!(
        crate::tree::path(&source, &["serviceAccountToken", "expirationSeconds"])
            .and_then(Yaml::as_i64),
        Some(3600)
    );
    let root = crate::tree::path(&spec, &["volumes"])
        .unwrap()
        .as_vec()
        .unwrap()[2]
        .clone();
    assert_eq!(
        crate::tree::path(&root, &["configMap", "optional"]),
        Some(&Yaml::Boolean(true))
    );

    let plain = InjectOptions {
        ca_addr: None,
        ..opts()
    };
    let out = inject_stream(&input, &plain).unwrap();
    assert!(!out.output.contains("MESHMETER_CA_"), "{}", out.output);
    assert!(!out.output.contains("meshmeter-ca-"), "{}", out.output);
    let again = inject_stream(&out.output, &plain).unwrap();
    assert_eq!(again.output, out.output);
}
