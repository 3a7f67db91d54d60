//! The deliberate differences from Istio 1.1.7's Mixer that the README lists, each held by a
//! test: configuration text in, bags in, exact Prometheus text out.

use std::sync::Arc;

use meshmeter_attributes::{json::bag_from_json, Manifest};
use meshmeter_config::{load_str, LoadOptions};
use meshmeter_engine::{DispatchOutcome, Engine, EngineOptions, Workloads};
use meshmeter_selfmetrics::SelfMetrics;
use meshmeter_workloads::WorkloadTable;
use serde_json::json;

/// One instance `ii` (value `a + b | 7`, dimensions named with `-` and `.`, one `size(x) | 99`)
/// in two metrics of handler `h1` and in handler `h2`; the rule's match uses unary `!`.
const CONFIG: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: ii, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: connection.sent.bytes + connection.received.bytes | 7
    dimensions:
      src-app.name: source.workload.name | "unknown"
      n: size(context.protocol) | 99
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: h1, namespace: istio-system}
spec:
  compiledAdapter: prometheus
  params:
    metrics:
    - {name: a_total, instance_name: ii.instance.istio-system, kind: COUNTER, label_names: [src-app.name, n]}
    - {name: b_total, instance_name: ii.instance.istio-system, kind: COUNTER, label_names: [src-app.name, n]}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: h2, namespace: istio-system}
spec:
  compiledAdapter: prometheus
  params:
    metrics:
    - {name: c_total, instance_name: ii.instance.istio-system, kind: COUNTER, label_names: [src-app.name, n]}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: r, namespace: istio-system}
spec:
  match: '!(context.protocol == "http")'
  actions:
  - {handler: h1, instances: [ii]}
  - {handler: h2, instances: [ii]}
"#;

fn engine() -> Engine {
    let options = LoadOptions {
        include_defaults: false,
        ..LoadOptions::default()
    };
    let snapshot = load_str(&[("c.yaml", CONFIG)], &options).unwrap_or_else(|d| panic!("{d}"));
    Engine::new(
        Arc::new(snapshot),
        Workloads::Static(Arc::new(WorkloadTable::new(vec![]).unwrap())),
        Arc::new(SelfMetrics::new()),
        EngineOptions::default(),
    )
    .unwrap()
}

fn dispatch(engine: &Engine, bag: serde_json::Value) -> DispatchOutcome {
    engine.dispatch_bag(&bag_from_json(&Manifest::istio(), &bag).unwrap())
}

fn metrics(engine: &Engine) -> String {
    let mut out = String::new();
    engine.encode_metrics(&mut out);
    out
}

fn series(names: &[&str], value: &str) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "# HELP istio_{n} {n}\n# TYPE istio_{n} counter\n\
                 istio_{n}{{n=\"3\",srcapp_name=\"ratings\"}} {value}\n"
            )
        })
        .collect()
}

/// Unary `!` compiles and works (Mixer 1.1.7: "unknown function: NOT"); `a + b | 7` is `a + b`
/// and `size(x) | 99` is `size(x)` (Mixer's code generator returned the right side); dimension
/// names with `-` and `.` work (Mixer panicked); one instance feeds two metrics of one handler
/// and a metric of another handler, all served (Mixer served one of them).
#[test]
fn kept_improvements_hold_end_to_end() {
    let engine = engine();
    let bag = json!({
        "context.protocol": "tcp",
        "connection.sent.bytes": 100,
        "connection.received.bytes": 250,
        "source.workload.name": "ratings",
    });
    let outcome = dispatch(&engine, bag.clone());
    assert_eq!(
        outcome,
        DispatchOutcome {
            rules_matched: 1,
            instances: 2,
            errors: 0
        }
    );
    assert_eq!(
        metrics(&engine),
        series(&["a_total", "b_total", "c_total"], "350")
    );
    // `!` excludes http.
    let mut http = bag;
    http["context.protocol"] = json!("http");
    assert_eq!(dispatch(&engine, http).rules_matched, 0);
}

/// Negative and NaN counter increments are skipped and counted as errors (Mixer panicked and
/// lost the batch's other metrics, or stuck at NaN); the others still count.
#[test]
fn negative_and_nan_increments_are_skipped_and_counted() {
    let engine = engine();
    let bag = |sent: serde_json::Value| {
        json!({
            "context.protocol": "tcp",
            "connection.sent.bytes": sent,
            "connection.received.bytes": 0,
            "source.workload.name": "ratings",
        })
    };
    assert_eq!(dispatch(&engine, bag(json!(5))).errors, 0);
    // One error per handler; the instance records nowhere.
    assert_eq!(
        dispatch(&engine, bag(json!(-9))),
        DispatchOutcome {
            rules_matched: 1,
            instances: 0,
            errors: 2
        }
    );
    assert_eq!(
        metrics(&engine),
        series(&["a_total", "b_total", "c_total"], "5")
    );
}
