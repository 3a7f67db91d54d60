//! The exposition passes `promtool check metrics` (Prometheus' own linter).
//!
//! Needs promtool (Debian's `prometheus` package), so it is `#[ignore]`d and run by
//! `scripts/test.sh`, which installs it; without promtool the test fails, never passes unchecked.

use std::io::Write;
use std::process::{Command, Stdio};

use meshmeter_attributes::{Duration, StringMap, Value};
use meshmeter_prometheus::{MetricKind, MetricSpec, Registry};
use meshmeter_prommodel::Buckets;
use meshmeter_selfmetrics::SelfMetrics;

fn exposition() -> String {
    let l = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut sent = MetricSpec::new(
        "istio_tcp_sent_bytes_total",
        MetricKind::Counter,
        l(&["a", "b"]),
    );
    sent.help = "Bytes sent\nby the \\ proxy".into();
    let registry = Registry::new([
        sent,
        MetricSpec::new("istio_level", MetricKind::Gauge, l(&["x"])),
        MetricSpec::histogram(
            "istio_duration_seconds",
            Buckets::Exponential {
                num_finite_buckets: 5,
                growth_factor: 2.0,
                scale: 0.001,
            }
            .bounds(),
            l(&["x"]),
        ),
    ])
    .unwrap();
    let m = registry.metrics();
    let map: StringMap<'_> = [("app", "a\"b"), ("v", "1\n2")].into_iter().collect();
    m[0].record(&[Value::from("q\"\\\n"), Value::from(map)], 3.0)
        .unwrap();
    m[0].record(&[Value::Int64(1), Value::Double(0.5)], 1e22)
        .unwrap();
    m[1].record(&[Value::Duration(Duration::from_nanos(1))], f64::NAN)
        .unwrap();
    m[1].record(
        &[Value::IpAddress("::1".parse().unwrap())],
        f64::NEG_INFINITY,
    )
    .unwrap();
    m[2].record(&[Value::from("é")], 0.003).unwrap();
    let mut out = String::new();
    registry.encode(&mut out);
    let self_metrics = SelfMetrics::new();
    self_metrics
        .counter(
            "meshmeter_reports_total",
            "Reports received.",
            &[("kind", "tcp")],
        )
        .inc();
    self_metrics.encode(&mut out);
    out
}

/// promtool's exit status and output.
fn promtool(text: &str) -> (bool, String) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "promtool is not installed: run scripts/install-test-deps.sh (or scripts/test.sh)"
            )
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut msg = String::from_utf8_lossy(&out.stdout).into_owned();
    msg.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), msg)
}

#[test]
#[ignore = "needs promtool; run by scripts/test.sh"]
fn promtool_accepts_exposition() {
    let text = exposition();
    let (ok, msg) = promtool(&text);
    assert!(ok && msg.trim().is_empty(), "promtool: {msg}\n{text}");
}
