//! `meshmeter inject` end to end: stdin to stdout, exit codes, and the injected init
//! container's arguments accepted by the real `meshmeter capture`.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn meshmeter(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshmeter"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meshmeter");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: db
  annotations:
    traffic.sidecar.istio.io/excludeOutboundIPRanges: 10.0.0.0/8
spec:
  containers:
  - name: db
    image: mongo
    ports:
    - containerPort: 27017
";

#[test]
fn inject_reads_stdin_and_its_capture_args_are_valid_capture_flags() {
    let out = meshmeter(&["inject", "-f", "-", "--image", "reg/mm:1"], POD);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("image: \"reg/mm:1\"").count(), 2, "{text}");
    // The init container's args, as written, run `meshmeter capture --dry-run`.
    let args: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("- capture"))
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim_start().trim_start_matches("- ").trim_matches('"'))
        .collect();
    assert_eq!(
        args,
        [
            "capture",
            "--inbound-ports=27017",
            "--exclude-inbound-ports=15090",
            "--exclude-outbound-cidrs=10.0.0.0/8",
            "--proxy-uid=1337",
            "--inbound-proxy-port=15006",
            "--outbound-proxy-port=15001"
        ]
    );
    let mut dry: Vec<&str> = args.clone();
    dry.push("--dry-run");
    let rules = meshmeter(&dry, "");
    assert_eq!(
        rules.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rules.stderr)
    );
    let rules = String::from_utf8(rules.stdout).unwrap();
    assert!(
        rules.contains("-A MESHMETER_INBOUND -p tcp --dport 27017 -j MESHMETER_IN_REDIRECT"),
        "{rules}"
    );
    assert!(
        rules.contains("-A MESHMETER_OUTPUT -d 10.0.0.0/8 -j RETURN"),
        "{rules}"
    );
    // Injecting the output again prints it unchanged.
    let again = meshmeter(&["inject", "-f", "-", "--image", "reg/mm:1"], &text);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
}

#[test]
fn inject_exits_2_on_bad_input_and_prints_nothing() {
    let out = meshmeter(&["inject", "-f", "-"], "kind: Pod\nspec: {containers: 1}\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: -: document 1 (line 1): Pod '': field 'containers' must be a list\n"
    );
    // An empty inbound list is a valid capture flag (no inbound capture).
    let out = meshmeter(&["capture", "--inbound-ports=", "--dry-run"], "");
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8(out.stdout)
        .unwrap()
        .contains("MESHMETER_IN_REDIRECT -p tcp --dport"));
}

#[test]
fn injector_refuses_certificate_lifetimes_it_cannot_rotate() {
    let out = meshmeter(&["injector", "--no-publish", "--cert-validity", "10s"], "");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: --cert-validity must be at least 1m\n"
    );
    let out = meshmeter(
        &[
            "injector",
            "--no-publish",
            "--cert-validity",
            "1h",
            "--ca-validity",
            "2h",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
}
