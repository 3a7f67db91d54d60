//! `admission.k8s.io/v1` AdmissionReview in, AdmissionReview out: the pod's JSON Patch from
//! [`meshmeter_inject::inject_json`], the same transformation as `meshmeter inject`.

use meshmeter_inject::{inject_json, InjectOptions, Outcome};
use serde_json::{json, Value};

/// A request body that is not an AdmissionReview the webhook can answer (HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    /// Not JSON.
    #[error("the body is not JSON: {0}")]
    Json(String),
    /// JSON, but not an `admission.k8s.io/v1` `AdmissionReview`.
    #[error("expected an admission.k8s.io/v1 AdmissionReview, got apiVersion {api_version:?} kind {kind:?}")]
    NotAReview {
        /// The body's `apiVersion`.
        api_version: String,
        /// The body's `kind`.
        kind: String,
    },
    /// No `request.uid` to answer to.
    #[error("the AdmissionReview has no request.uid")]
    NoUid,
}

/// What the webhook decided for one review (for logs and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Patched with this many operations.
    Injected(usize),
    /// Allowed unchanged: not a pod creation, or injection declined (the reason).
    Unchanged(String),
    /// Allowed unchanged with a warning: the pod cannot be injected (the error).
    Refused(String),
}

/// Answers one AdmissionReview body. Every review is allowed: the webhook only adds the
/// sidecar, and a pod it cannot inject is created as it is, with a warning the client sees.
pub fn review(body: &[u8], opts: &InjectOptions) -> Result<(Vec<u8>, Decision), ReviewError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| ReviewError::Json(e.to_string()))?;
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        return Err(ReviewError::NotAReview {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        });
    }
    let request = &doc["request"];
    let uid = request["uid"].as_str().ok_or(ReviewError::NoUid)?;
    let mut response = json!({"uid": uid, "allowed": true});
    let operation = request["operation"].as_str().unwrap_or("CREATE");
    let resource_kind = request["kind"]["kind"].as_str().unwrap_or_default();
    let decision = if operation != "CREATE" || resource_kind != "Pod" {
        Decision::Unchanged(format!("{operation} of {resource_kind}"))
    } else {
        match inject_json(&request["object"], opts) {
            Ok((Outcome::Injected, ops)) => {
                let n = ops.len();
                let patch = serde_json::to_vec(&ops).expect("JSON values serialise");
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64(&patch));
                Decision::Injected(n)
            }
            Ok((Outcome::Skipped(why), _)) => Decision::Unchanged(why.to_string()),
            Err(e) => {
                let text = format!("meshmeter-injector: sidecar not injected: {e}");
                response["warnings"] = json!([text]);
                Decision::Refused(e.to_string())
            }
        }
    };
    let out = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    Ok((
        serde_json::to_vec(&out).expect("JSON values serialise"),
        decision,
    ))
}

/// Standard base64 with padding (RFC 4648 §4), as Kubernetes' `[]byte` fields are encoded.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
