use serde_json::{json, Value};

use super::*;
use meshmeter_inject::InjectOptions;

#[test]
fn base64_matches_rfc_4648_vectors() {
    let cases = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in cases {
        assert_eq!(base64(plain.as_bytes()), encoded);
    }
    assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
}

fn decode64(text: &str) -> Vec<u8> {
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.chars().filter(|&c| c != '=') {
        bits = (bits << 6) | alphabet.find(c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn admission(object: Value, operation: &str, kind: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "operation": operation,
            "namespace": "default",
            "object": object,
        }
    }))
    .unwrap()
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "w", "ports": [{"containerPort": 8080}]}]}
    })
}

#[test]
fn a_pod_creation_is_answered_with_its_json_patch() {
    let (out, decision) = review(
        &admission(pod(), "CREATE", "Pod"),
        &InjectOptions::default(),
    )
    .unwrap();
    assert_eq!(decision, Decision::Injected(3));
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = &out["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: Value =
        serde_json::from_slice(&decode64(response["patch"].as_str().unwrap())).unwrap();
    let paths: Vec<_> = patch
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/spec/containers/1",
            "/spec/initContainers",
            "/spec/volumes"
        ]
    );
    assert_eq!(patch[0]["value"]["name"], "meshmeter-proxy");
}

#[test]
fn other_operations_opt_outs_and_bad_pods_are_allowed_unchanged() {
    let opts = InjectOptions::default();
    let unchanged = |body: Vec<u8>| {
        let (out, decision) = review(&body, &opts).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"].get("patch").is_none());
        (out, decision)
    };
    let (_, d) = unchanged(admission(pod(), "UPDATE", "Pod"));
    assert_eq!(d, Decision::Unchanged("UPDATE of Pod".to_string()));
    let mut opted_out = pod();
    opted_out["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
    let (_, d) = unchanged(admission(opted_out, "CREATE", "Pod"));
    assert_eq!(
        d,
        Decision::Unchanged("sidecar.istio.io/inject is \"false\"".to_string())
    );
    let mut bad = pod();
    bad["metadata"]["annotations"] = json!({"traffic.sidecar.istio.io/excludeOutboundPorts": "x"});
    let (out, d) = unchanged(admission(bad, "CREATE", "Pod"));
    assert!(matches!(d, Decision::Refused(_)));
    assert_eq!(
        out["response"]["warnings"][0],
        "meshmeter-injector: sidecar not injected: Pod '': annotation traffic.sidecar.istio.io/excludeOutboundPorts: \"x\": \"x\" is not a port (1-65535)"
    );
}

#[test]
fn bodies_that_are_not_reviews_are_errors() {
    let opts = InjectOptions::default();
    assert!(matches!(review(b"{", &opts), Err(ReviewError::Json(_))));
    assert_eq!(
        review(
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#,
            &opts
        )
        .unwrap_err(),
        ReviewError::NotAReview {
            api_version: "admission.k8s.io/v1beta1".into(),
            kind: "AdmissionReview".into()
        }
    );
    assert_eq!(
        review(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#,
            &opts
        )
        .unwrap_err(),
        ReviewError::NoUid
    );
}
