//! JSON Patch (RFC 6902) for the admission webhook: the same transformation as
//! [`crate::inject_stream`], applied to a pod given as JSON, expressed as the operations that
//! turn the pod into its injected form.

use serde_json::{json, Value};

use crate::pod::Outcome;
use crate::tree::{from_json, to_json};
use crate::{inject_object, InjectError, InjectOptions};

/// Injects into a pod (or any object [`inject_object`] understands) given as JSON and returns
/// what happened and the JSON Patch that does it (empty unless [`Outcome::Injected`]).
pub fn inject_json(
    object: &Value,
    opts: &InjectOptions,
) -> Result<(Outcome, Vec<Value>), InjectError> {
    let mut tree = from_json(object);
    // The diff compares two trees that went through the same conversion, so a number the
    // conversion writes differently (1e3 vs 1000.0) can never show up as a change.
    let before = to_json(&tree);
    let outcome = inject_object(&mut tree, opts)?;
    if outcome != Outcome::Injected {
        return Ok((outcome, Vec::new()));
    }
    let after = to_json(&tree);
    let mut ops = Vec::new();
    diff(&before, &after, &mut String::new(), &mut ops);
    Ok((outcome, ops))
}

/// Appends to `ops` the RFC 6902 operations that turn `a` into `b`: objects key by key, arrays
/// element by element over their common prefix, then appends or removals at the end.
pub fn diff(a: &Value, b: &Value, at: &mut String, ops: &mut Vec<Value>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let len = at.len();
                push_token(at, k);
                match y.get(k) {
                    Some(vb) => diff(va, vb, at, ops),
                    None => ops.push(json!({"op": "remove", "path": at.as_str()})),
                }
                at.truncate(len);
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    let len = at.len();
                    push_token(at, k);
                    ops.push(json!({"op": "add", "path": at.as_str(), "value": vb}));
                    at.truncate(len);
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            let common = x.len().min(y.len());
            for i in 0..common {
                let len = at.len();
                push_token(at, &i.to_string());
                diff(&x[i], &y[i], at, ops);
                at.truncate(len);
            }
            for (i, vb) in y.iter().enumerate().skip(common) {
                ops.push(json!({"op": "add", "path": format!("{at}/{i}"), "value": vb}));
            }
            // Highest index first, so each removal leaves the earlier indexes valid.
            for i in (common..x.len()).rev() {
                ops.push(json!({"op": "remove", "path": format!("{at}/{i}")}));
            }
        }
        _ if a == b => {}
        _ => ops.push(json!({"op": "replace", "path": at.as_str(), "value": b})),
    }
}

/// Appends `/token` to a JSON Pointer, escaped as RFC 6901 requires (`~` → `~0`, `/` → `~1`).
fn push_token(at: &mut String, token: &str) {
    at.push('/');
    for c in token.chars() {
        match c {
            '~' => at.push_str("~0"),
            '/' => at.push_str("~1"),
            c => at.push(c),
        }
    }
}
