//! Hot reload: valid changes are swapped in, invalid ones are rejected and the last good
//! configuration stays in force.

use std::path::{Path, PathBuf};
use std::time::Duration;

use meshmeter_config::{ConfigWatcher, HandlerParams, LoadOptions};

const SEED: &str = include_str!("data/tcp-metrics.yaml");
/// An independent set: a metric instance, a prometheus handler and a rule.
const CONNS: &str = include_str!("data/conns.yaml");

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("meshmeter-reload-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces `path`'s content atomically: the text is written to a staging file beside the
/// watched directory (never inside it, so the watcher cannot load it) and renamed over
/// `path`. A plain `std::fs::write` truncates first, so a 20 ms poller may see an empty or
/// half-written file and the test would flake.
fn write_atomic(path: &Path, text: impl AsRef<str>) {
    // Tests run in parallel in one process: a counter keeps their staging files apart.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = path
        .parent()
        .and_then(Path::parent)
        .expect("a file inside a directory")
        .join(format!(
            "meshmeter-reload-staging-{}-{n}-{}",
            std::process::id(),
            path.file_name().unwrap().to_string_lossy()
        ));
    std::fs::write(&staging, text.as_ref()).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

fn options() -> LoadOptions {
    LoadOptions {
        include_defaults: false,
        ..LoadOptions::default()
    }
}

fn metric_names(w: &ConfigWatcher) -> Vec<String> {
    w.current()
        .prometheus_metrics()
        .map(|(_, m)| m.full_name.clone())
        .collect()
}

/// Waits (bounded) until `done` holds.
async fn eventually(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 5 s");
}

#[tokio::test]
async fn polling_swaps_valid_changes_and_rejects_invalid_ones() {
    let dir = TempDir::new("poll");
    let file = dir.path().join("seed.yaml");
    std::fs::write(&file, SEED).unwrap();
    let mut w = ConfigWatcher::new(vec![dir.path().to_owned()], options()).unwrap();
    assert_eq!(w.generation(), 1);
    let mut rx = w.subscribe();
    w.spawn_polling(Duration::from_millis(20));

    write_atomic(
        &file,
        SEED.replace("mongo_sent_bytes", "mongo_sent_bytes_v2"),
    );
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("a reload within 5 s")
        .unwrap();
    let published = rx.borrow_and_update().clone();
    assert_eq!(published.generation, 2);
    assert_eq!(w.generation(), 2);
    assert_eq!(
        metric_names(&w),
        ["istio_mongo_sent_bytes_v2", "istio_mongo_received_bytes"]
    );

    write_atomic(&file, SEED.replace("instance_name", "instance_nmae"));
    eventually(|| w.failures() == 1).await;
    assert_eq!(w.generation(), 2);
    assert!(!rx.has_changed().unwrap());
    assert_eq!(
        metric_names(&w),
        ["istio_mongo_sent_bytes_v2", "istio_mongo_received_bytes"]
    );

    // Fixing the file is picked up again.
    write_atomic(&file, SEED);
    eventually(|| w.generation() == 3).await;
    assert_eq!(
        metric_names(&w),
        ["istio_mongo_sent_bytes", "istio_mongo_received_bytes"]
    );
    assert_eq!(w.failures(), 1);
}

#[test]
fn reload_now_reports_diagnostics_and_keeps_the_old_snapshot() {
    let dir = TempDir::new("now");
    let file = dir.path().join("seed.yaml");
    write_atomic(&file, SEED);
    let w = ConfigWatcher::new(vec![file.clone()], options()).unwrap();
    let before = w.current();

    write_atomic(&file, SEED.replace("kind: COUNTER", "kind: COUNTR"));
    let err = w.reload_now().unwrap_err();
    let codes: Vec<_> = err.iter().map(|d| (d.code, d.line)).collect();
    assert_eq!(codes, [("C0013", 47), ("C0013", 54)]);
    assert_eq!(w.generation(), 1);
    assert!(std::sync::Arc::ptr_eq(&before, &w.current()));

    write_atomic(&file, SEED.replace("kind: COUNTER", "kind: GAUGE"));
    assert_eq!(w.reload_now().unwrap(), 2);
    let HandlerParams::Prometheus(p) = &w.load().handlers[0].params else {
        panic!("not prometheus");
    };
    assert_eq!(p.metrics[0].kind, meshmeter_config::MetricKind::Gauge);
}

#[test]
fn an_invalid_initial_configuration_is_refused() {
    let dir = TempDir::new("initial");
    let file = dir.path().join("seed.yaml");
    write_atomic(
        &file,
        SEED.replace("handler: mongohandler", "handler: nope"),
    );
    let err = ConfigWatcher::new(vec![file], options()).unwrap_err();
    assert_eq!(err.error_count(), 1);
    assert_eq!(err.iter().next().unwrap().code, "C0040");
}

/// A misspelt attribute in an instance of its own.
const BROKEN_INSTANCE: &str = "---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: broken
  namespace: default
spec:
  compiledTemplate: metric
  params:
    value: connection.sent.byte | 0
";

#[tokio::test]
async fn a_broken_object_never_blocks_the_good_ones() {
    let dir = TempDir::new("per-object");
    let seed = dir.path().join("seed.yaml");
    let conns = dir.path().join("conns.yaml");
    std::fs::write(&seed, SEED).unwrap();
    let mut w = ConfigWatcher::new(vec![dir.path().to_owned()], options()).unwrap();
    w.spawn_polling(Duration::from_millis(20));

    // A new file: three good objects and a broken one. The good ones apply.
    write_atomic(&conns, format!("{CONNS}{BROKEN_INSTANCE}"));
    eventually(|| w.generation() == 2).await;
    assert_eq!(
        metric_names(&w),
        [
            "istio_conn_bytes",
            "istio_mongo_sent_bytes",
            "istio_mongo_received_bytes"
        ]
    );
    assert_eq!(w.rejected_objects(), 1);
    assert_eq!(w.failures(), 1);
    assert_eq!(w.current().user_counts().instances, 3);

    // The fix applies.
    write_atomic(
        &conns,
        format!("{CONNS}{}", BROKEN_INSTANCE.replace(".byte ", ".bytes ")),
    );
    eventually(|| w.generation() == 3).await;
    assert_eq!(w.rejected_objects(), 0);
    assert_eq!(w.current().user_counts().instances, 4);

    // A broken edit of a good object: its previous version stays in force, nothing is
    // published (what is in force did not change).
    write_atomic(&seed, SEED.replace("kind: COUNTER", "kind: COUNTR"));
    eventually(|| w.failures() == 2).await;
    assert_eq!(w.rejected_objects(), 1);
    assert_eq!(w.generation(), 3);
    let current = w.current();
    let handler = current
        .handlers
        .iter()
        .find(|h| h.name.name == "mongohandler")
        .unwrap();
    let HandlerParams::Prometheus(p) = &handler.params else {
        panic!("not prometheus");
    };
    assert_eq!(p.metrics[0].kind, meshmeter_config::MetricKind::Counter);

    // An edit elsewhere applies while the handler stays at its previous version.
    write_atomic(&conns, CONNS.replace("conn_bytes", "conn_bytes_v2"));
    eventually(|| w.generation() == 4).await;
    assert_eq!(w.rejected_objects(), 1);
    let mut names = metric_names(&w);
    names.sort();
    assert_eq!(
        names,
        [
            "istio_conn_bytes_v2",
            "istio_mongo_received_bytes",
            "istio_mongo_sent_bytes"
        ]
    );
}

#[test]
fn objects_from_another_source_load_with_the_files() {
    let dir = TempDir::new("objects");
    write_atomic(&dir.path().join("seed.yaml"), SEED);
    let w = ConfigWatcher::new(vec![dir.path().to_owned()], options()).unwrap();
    let docs: Vec<&str> = CONNS.split("---\n").collect();
    let object = |kind: &str, name: &str, text: &str| meshmeter_config::Input::Kubernetes {
        kind: kind.into(),
        namespace: "default".into(),
        name: name.into(),
        resource_version: "7".into(),
        text: text.into(),
    };
    let objects = |rule: &str| {
        vec![
            object("instance", "conns", docs[0]),
            object("handler", "connhandler", docs[1]),
            object("rule", "connrule", rule),
        ]
    };
    assert!(w.set_objects(objects(docs[2])).is_empty());
    assert_eq!(w.generation(), 2);
    assert_eq!(
        metric_names(&w),
        [
            "istio_mongo_sent_bytes",
            "istio_mongo_received_bytes",
            "istio_conn_bytes"
        ]
    );

    let problems = w.set_objects(objects(&docs[2].replace("connhandler", "nohandler")));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].name, "connrule");
    assert_eq!(problems[0].outcome, meshmeter_config::Outcome::Dropped);
    assert!(problems[0].previous_in_force);
    assert_eq!(
        problems[0].source.to_string(),
        "kubernetes default/connrule (resourceVersion 7)"
    );
    assert_eq!(w.rejected_objects(), 1);
    assert_eq!(w.problems(), problems);
    // The previous rule still routes the instance.
    assert_eq!(w.current().rules.len(), 2);

    // Deleted from the API server: gone.
    w.set_objects(Vec::new());
    assert_eq!(w.rejected_objects(), 0);
    assert_eq!(
        metric_names(&w),
        ["istio_mongo_sent_bytes", "istio_mongo_received_bytes"]
    );
}
