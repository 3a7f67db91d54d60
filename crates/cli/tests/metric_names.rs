//! Every `meshmeter_*` metric name the README or `--help` mentions is one the code serves.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const SUBCOMMANDS: &[&str] = &[
    "demo", "proxy", "eval", "report", "loadgen", "mixer", "validate", "ca", "control",
];

/// `meshmeter_[a-z0-9_]+` tokens of `text`; prefixes (`meshmeter_proxy_*`) and log filter
/// targets (`meshmeter_proxy=debug`) are left out.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("meshmeter_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        // `meshmeter_proxy=debug` is a log filter's crate name, not a metric.
        let filter = tail[end..].starts_with('=');
        if !name.ends_with('_') && !filter {
            out.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// The text of every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// Whether the library code names `name`: as a string literal, or (for the proxy's
/// `meshmeter_proxy_*`, rendered from a prefix) by its suffix in the proxy's stats table.
fn served(name: &str, code: &str, proxy_stats: &str) -> bool {
    code.contains(&format!("\"{name}\""))
        || name
            .strip_prefix("meshmeter_proxy_")
            .is_some_and(|s| proxy_stats.contains(&format!("\"{s}\"")))
}

#[test]
fn every_metric_named_in_readme_and_help_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut mentioned = names(&std::fs::read_to_string(root.join("README.md")).unwrap());
    for sub in SUBCOMMANDS {
        let help = Command::new(env!("CARGO_BIN_EXE_meshmeter"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(help.status.success(), "meshmeter {sub} --help failed");
        mentioned.extend(names(&String::from_utf8(help.stdout).unwrap()));
    }
    let mut code = String::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() && !src.ends_with("cli/src") {
            sources(&src, &mut code);
        }
    }
    let proxy_stats = std::fs::read_to_string(root.join("crates/proxy/src/stats.rs")).unwrap();
    let missing: Vec<&String> = mentioned
        .iter()
        .filter(|n| !served(n, &code, &proxy_stats))
        .collect();
    assert!(!mentioned.is_empty());
    assert!(missing.is_empty(), "named but not served: {missing:?}");
}

#[test]
fn names_finds_metric_tokens_only() {
    let found = names("see `meshmeter_*`, `meshmeter_proxy_*`, meshmeter_a_total{x}, `meshmeter_x=debug` and meshmeter_proxy_b.");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["meshmeter_a_total", "meshmeter_proxy_b"]
    );
}
