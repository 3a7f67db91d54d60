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
