//! Special entries in a configuration directory: FIFOs and devices are skipped (never opened
//! in a blocking way, never read without bound) and symlink loops are walked once.

use std::path::PathBuf;

use meshmeter_config::{config_files, load_paths, LoadOptions};

const SEED: &str = include_str!("data/tcp-metrics.yaml");

fn temp_dir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("meshmeter-special-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn options() -> LoadOptions {
    LoadOptions {
        include_defaults: false,
        ..LoadOptions::default()
    }
}

#[test]
fn fifos_and_dev_zero_links_are_skipped() {
    let dir = temp_dir("fifo");
    std::fs::write(dir.join("seed.yaml"), SEED).unwrap();
    let fifo = dir.join("pipe.yaml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.yaml")).unwrap();

    assert_eq!(
        config_files(std::slice::from_ref(&dir)).unwrap(),
        [dir.join("seed.yaml")]
    );
    let snap = load_paths(std::slice::from_ref(&dir), &options()).unwrap();
    assert_eq!(snap.prometheus_metrics().count(), 2);

    // Named explicitly, they are refused with a located error instead of hanging.
    let err = load_paths(std::slice::from_ref(&fifo), &options()).unwrap_err();
    let msg = err.iter().next().unwrap().message.clone();
    assert_eq!(msg, "cannot read: not a regular file (a FIFO)");
    let err = load_paths(&[dir.join("zero.yaml")], &options()).unwrap_err();
    let msg = err.iter().next().unwrap().message.clone();
    assert_eq!(msg, "cannot read: not a regular file (a device)");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn symlink_loops_are_walked_once() {
    let dir = temp_dir("loops");
    std::fs::write(dir.join("seed.yaml"), SEED).unwrap();
    for name in ["a", "b", "c"] {
        std::os::unix::fs::symlink(".", dir.join(name)).unwrap();
    }
    // Before: every path through the loops up to depth 16 (3^16 directories) was walked.
    assert_eq!(
        config_files(std::slice::from_ref(&dir)).unwrap(),
        [dir.join("seed.yaml")]
    );
    let snap = load_paths(std::slice::from_ref(&dir), &options()).unwrap();
    assert_eq!(snap.prometheus_metrics().count(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
