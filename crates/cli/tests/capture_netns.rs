//! `meshmeter capture` applied in a fresh network namespace: idempotent, and `--clean`
//! removes exactly what it added.

use std::process::Command;

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run")
}

fn count(ns: &str, save: &str) -> usize {
    let o = sh(&["ip", "netns", "exec", ns, save, "-t", "nat"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("MESHMETER"))
        .count()
}

#[test]
#[ignore = "needs root and netns"]
fn capture_is_idempotent_and_clean_removes_it() {
    let ns = format!("mm-capture-{}", std::process::id());
    if !sh(&["ip", "netns", "add", &ns]).status.success() {
        eprintln!("SKIP: cannot create a network namespace (needs root and iproute2)");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_meshmeter");
    let run = |extra: &[&str]| {
        let mut a = vec!["ip", "netns", "exec", &ns, bin, "capture"];
        a.extend_from_slice(extra);
        sh(&a).status.success()
    };
    let result = std::panic::catch_unwind(|| {
        assert!(run(&[]));
        assert!(run(&[]));
        // 4 chain declarations + 9 rules per family, not doubled by the second run.
        assert_eq!(count(&ns, "iptables-save"), 13);
        assert_eq!(count(&ns, "ip6tables-save"), 13);
        assert!(run(&["--clean"]));
        assert_eq!(count(&ns, "iptables-save"), 0);
        assert_eq!(count(&ns, "ip6tables-save"), 0);
    });
    sh(&["ip", "netns", "del", &ns]);
    result.unwrap();
}
