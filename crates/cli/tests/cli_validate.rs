//! `meshmeter validate` stays all-or-nothing while the server accepts objects one by one: one
//! broken object among good ones exits 2 with its located diagnostic.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_meshmeter");
const SEED: &str = include_str!("../../../examples/tcp-metrics.yaml");

#[test]
fn validate_exits_2_on_any_broken_object() {
    let dir = std::env::temp_dir().join(format!("meshmeter-cli-validate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a-seed.yaml"), SEED).unwrap();
    let run = || {
        Command::new(BIN)
            .args(["validate", "--no-default-config", dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 2 instances, 1 handler, 1 rule\n"
    );

    let broken = "apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: other
  namespace: default
spec:
  actions:
  - handler: nope
    instances: [mongosentbytes]
";
    std::fs::write(dir.join("b-broken.yaml"), broken).unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = dir.join("b-broken.yaml");
    assert!(
        stderr.starts_with(&format!("{}:8:14: error[C0040]: ", path.display())),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const RULES: &str = include_str!("../../netconfig/tests/data/destination-rule-all.yaml");

#[test]
fn validate_checks_traffic_objects_beside_telemetry_ones() {
    let dir = std::env::temp_dir().join(format!(
        "meshmeter-cli-validate-traffic-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a-seed.yaml"), SEED).unwrap();
    std::fs::write(dir.join("b-rules.yaml"), RULES).unwrap();
    let run = || {
        Command::new(BIN)
            .args(["validate", "--no-default-config", dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 2 instances, 1 handler, 1 rule; traffic: 4 destination rules, 0 virtual services, 0 peer authentication policies\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    std::fs::write(
        dir.join("c-vs.yaml"),
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata:\n  name: db\nspec:\n  hosts: [mongodb]\n  tcp:\n  - route:\n    - destination: {host: mongodb, subset: v1}\n      weight: 80\n    - destination: {host: mongodb, subset: v2}\n      weight: 30\n",
    )
    .unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let path = dir.join("c-vs.yaml");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{}:8:5: error[N0004]: the weights of spec.tcp[0].route of VirtualService default/db sum to 110, not 100
  - route:
    ^^^^^
  = hint: the weights of a route with several destinations are percentages adding up to 100

1 error, 0 warnings
",
            path.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}
