//! Golden tests: Istio 1.1's Bookinfo samples (and the apps/v1 workloads the Kubernetes
//! recordings used) injected with the default options. `UPDATE_GOLDEN=1` rewrites the goldens.

use std::path::PathBuf;

use meshmeter_inject::{inject_stream, InjectOptions, Outcome};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

fn options() -> InjectOptions {
    // Pinned, so the goldens do not change with the crate version.
    InjectOptions {
        image: "meshmeter/meshmeter:test".to_string(),
        ..InjectOptions::default()
    }
}

fn golden(input: &str, expect_injected: &[&str]) {
    let source = std::fs::read_to_string(data(&format!("data/{input}"))).unwrap();
    let out = inject_stream(&source, &options()).unwrap();
    let golden_path = data(&format!("golden/{input}"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden_path, &out.output).unwrap();
    }
    let want = std::fs::read_to_string(&golden_path).unwrap();
    assert_eq!(
        out.output, want,
        "{input}: output differs from {golden_path:?}"
    );
    let injected: Vec<_> = out
        .documents
        .iter()
        .filter(|d| d.outcome == Outcome::Injected)
        .map(|d| d.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(injected, expect_injected, "{input}");
    // Idempotent: the output injected again is the output, byte for byte.
    let again = inject_stream(&out.output, &options()).unwrap();
    assert_eq!(
        again.output, out.output,
        "{input}: second injection changed it"
    );
    assert!(again
        .documents
        .iter()
        .all(|d| d.outcome != Outcome::Injected));
    // Documents left alone are byte-identical: the input's non-workload text survives.
    for d in out
        .documents
        .iter()
        .filter(|d| d.outcome != Outcome::Injected)
    {
        assert!(
            d.kind.is_some(),
            "{input}: document {} has no kind",
            d.index
        );
    }
}

#[test]
fn bookinfo_db_injects_the_mongodb_deployment_and_keeps_the_service() {
    golden("bookinfo-db.yaml", &["mongodb-v1"]);
    let source = std::fs::read_to_string(data("data/bookinfo-db.yaml")).unwrap();
    let out = inject_stream(&source, &options()).unwrap();
    // The license header and the Service precede the first `---`: kept byte for byte.
    let service_end = source.find("---\n").unwrap() + 4;
    assert_eq!(&out.output[..service_end], &source[..service_end]);
}

#[test]
fn bookinfo_ratings_v2_injects_port_9080() {
    golden("bookinfo-ratings-v2.yaml", &["ratings-v2"]);
}

#[test]
fn bookinfo_workloads_inject_both_deployments_only() {
    golden("bookinfo-workloads.yaml", &["ratings-v2", "mongodb-v1"]);
}
