//! Mixer 1.1.7's own conformance table for the expression language (tests/data, copied from
//! the shared conformance set): every case must give the same type and value, or fail at the
//! same stage.

use meshmeter_attributes::json::{bag_from_json, value_from_json};
use meshmeter_attributes::{Manifest, Value, ValueType};
use meshmeter_expr::Expression;
use serde_json::Value as Json;

const CASES: &str = include_str!("data/istio-il-tests.jsonl");

/// Cases where we deliberately differ from Mixer, by name, with the reason. Empty: the table
/// passes as it is.
const DELIBERATE_DIFFERENCES: &[(&str, &str)] = &[];

fn manifest_of(case: &Json) -> Manifest {
    let mut m = Manifest::new();
    for (name, t) in case["manifest"].as_object().expect("manifest object") {
        let t: ValueType = t.as_str().unwrap().parse().unwrap();
        m.declare(name, t).unwrap();
    }
    m
}

fn same(actual: &Value<'static>, expected: &Value<'static>) -> bool {
    match (actual, expected) {
        (Value::Double(a), Value::Double(b)) => a == b || ((a - b) / b).abs() < 1e-9,
        (a, b) => a == b,
    }
}

/// Runs one case; `Err` describes the disagreement.
fn run(case: &Json) -> Result<(), String> {
    let manifest = manifest_of(case);
    let src = case["expr"].as_str().unwrap();
    let expect = &case["expect"];
    let bag = bag_from_json(&manifest, &case["bag"]).map_err(|e| format!("bad bag: {e}"))?;
    let outcome = Expression::compile(src, &manifest)
        .map_err(|e| ("compile", e.render(src)))
        .and_then(|expr| {
            let t = expr.result_type();
            expr.eval(&bag)
                .map(|v| (t, v.into_owned()))
                .map_err(|e| ("eval", e.to_string()))
        });
    match (outcome, expect.get("stage")) {
        (Err((stage, _)), Some(want)) if want == stage => Ok(()),
        (Err((stage, msg)), _) => Err(format!("{stage} error: {msg}; expected {expect}")),
        (Ok((t, v)), None) => {
            let want_t: ValueType = expect["type"].as_str().unwrap().parse().unwrap();
            if t != want_t || v.value_type() != want_t {
                return Err(format!("got {t} {v}; expected {expect}"));
            }
            let want = value_from_json("expect", want_t, &expect["value"]).unwrap();
            if same(&v, &want) {
                Ok(())
            } else {
                Err(format!("got {t} {v}; expected {expect}"))
            }
        }
        (Ok((t, v)), Some(_)) => Err(format!("got {t} {v}; expected {expect}")),
    }
}

#[test]
fn every_mixer_case_agrees() {
    let mut failures = Vec::new();
    let mut count = 0;
    for line in CASES.lines().filter(|l| !l.trim().is_empty()) {
        let case: Json = serde_json::from_str(line).unwrap();
        count += 1;
        let name = case["name"].as_str().unwrap_or("?");
        if DELIBERATE_DIFFERENCES.iter().any(|(n, _)| *n == name) {
            continue;
        }
        if let Err(why) = run(&case) {
            failures.push(format!(
                "{name} `{}`: {why}",
                case["expr"].as_str().unwrap()
            ));
        }
    }
    assert_eq!(count, 419);
    assert!(
        failures.is_empty(),
        "{} of {count} cases disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
