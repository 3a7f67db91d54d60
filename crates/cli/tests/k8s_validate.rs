//! `meshmeter install` and `meshmeter inject` output checked against Kubernetes' own schemas by
//! the PyPI package `kubernetes-validate` (strict: unknown fields are errors), which
//! `scripts/install-test-deps.sh` installs into a venv. Skips, saying so, when it is absent.

use std::path::PathBuf;
use std::process::Command;

fn validator() -> Option<PathBuf> {
    let path = match std::env::var_os("MESHMETER_KUBERNETES_VALIDATE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/meshmeter/kubernetes-validate/bin/kubernetes-validate"),
    };
    path.is_file().then_some(path)
}

/// Runs the validator on `yaml` for Kubernetes `version`; returns the resources that passed.
/// Fails on any error, and on any warning other than a config.istio.io kind (whose schema is
/// the CRD's, which keeps unknown fields).
fn validate(kv: &PathBuf, name: &str, yaml: &[u8], version: &str) -> Vec<String> {
    let file = std::env::temp_dir().join(format!("meshmeter-{}-{name}", std::process::id()));
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(kv)
        .args(["--strict", "-k", version])
        .arg(&file)
        .output()
        .expect("run kubernetes-validate");
    let _ = std::fs::remove_file(&file);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} on {version}:\n{text}");
    let mut passed = Vec::new();
    for line in text.lines() {
        if let Some((_, resource)) = line.split_once(" passed for resource ") {
            passed.push(resource.split(' ').next().unwrap().to_string());
        } else if line.starts_with("WARN") {
            assert!(
                line.contains("with api version config.istio.io/v1alpha2"),
                "{name} on {version}: {line}"
            );
        } else if !line.trim().is_empty() {
            panic!("{name} on {version}: unexpected line: {line}");
        }
    }
    passed
}

fn meshmeter(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_meshmeter"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
#[ignore = "needs kubernetes-validate (scripts/install-test-deps.sh)"]
fn install_and_inject_output_pass_kubernetes_schemas() {
    let Some(kv) = validator() else {
        eprintln!("SKIP: kubernetes-validate not installed (run scripts/install-test-deps.sh)");
        return;
    };
    let install = meshmeter(&["install", "--replicas", "2"]);
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../inject/tests/data/bookinfo-workloads.yaml"
    );
    let inject = meshmeter(&["inject", "-f", data]);
    // 1.26: the recordings' API server; 1.33: what the kube crate is built for.
    for version in ["1.26.0", "1.33.0"] {
        let passed = validate(&kv, "install.yaml", &install, version);
        // Namespace, CRDs (telemetry, traffic), telemetry server, injector, certificate
        // authority, control plane.
        assert_eq!(passed.len(), 1 + 38 + 4 + 5 + 6 + 5 + 5, "{passed:?}");
        assert!(passed.contains(&"deployment/meshmeter-control".to_string()));
        assert!(passed.contains(&"clusterrole/meshmeter-control".to_string()));
        assert!(passed.contains(&"deployment/meshmeter-ca".to_string()));
        assert!(passed.contains(&"clusterrole/meshmeter-ca".to_string()));
        assert!(passed.contains(&"deployment/meshmeter-telemetry".to_string()));
        assert!(passed.contains(&"mutatingwebhookconfiguration/meshmeter-injector".to_string()));
        let passed = validate(&kv, "inject.yaml", &inject, version);
        assert_eq!(
            passed,
            [
                "serviceaccount/bookinfo-ratings-v2",
                "service/ratings",
                "deployment/ratings-v2",
                "service/mongodb",
                "deployment/mongodb-v1"
            ]
        );
    }
    // The validator does reject what the API server would: a negative control.
    let broken = String::from_utf8(inject)
        .unwrap()
        .replace("runAsNonRoot: true", "runAsNonRoot: yes-please");
    let file = std::env::temp_dir().join(format!("meshmeter-{}-broken.yaml", std::process::id()));
    std::fs::write(&file, broken).unwrap();
    let status = Command::new(&kv)
        .arg("--strict")
        .arg(&file)
        .output()
        .unwrap()
        .status;
    let _ = std::fs::remove_file(&file);
    assert!(!status.success());
}
