//! The real binaries on loopback, no root: `meshmeter control` serving a view compiled from a
//! DestinationRule and a VirtualService, and an explicit outbound `meshmeter proxy
//! --control-plane` in front of a service address that no server holds. The proxy routes each
//! new connection to the subset's endpoint, follows a change of the VirtualService, refuses
//! over the connection limit (`UO`), and its in-proxy telemetry shows the routed version with
//! the bytes each server received.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_meshmeter");
const HOST: &str = "reviews.default.svc.cluster.local";

/// Kills the process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], log: &Path) -> Process {
    let out = std::fs::File::create(log).unwrap();
    Process(
        Command::new(BIN)
            .args(args)
            .env("MESHMETER_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    )
}

fn free_addr() -> String {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// A deadline for a bounded retry loop: `check(what)` fails the test once it has passed.
struct Deadline(Instant, Duration);

impl Deadline {
    fn after(limit: Duration) -> Self {
        Deadline(Instant::now() + limit, limit)
    }

    async fn check(&self, what: &str) {
        assert!(Instant::now() < self.0, "{what}: not within {:?}", self.1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An echo server on `ip:port` counting connections and bytes.
async fn echo(addr: SocketAddr) -> Arc<[AtomicU64; 2]> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let c = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                c[0].fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            c[1].fetch_add(n as u64, Ordering::SeqCst);
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    counts
}

/// One exchange: `payload` out, half-close, the echo back; `false` when the proxy closed the
/// connection without forwarding anything.
async fn exchange(addr: &str, payload: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(payload).await;
    let _ = s.shutdown().await;
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back).await;
    if back.is_empty() {
        return false;
    }
    assert_eq!(back, payload);
    true
}

fn traffic(max_connections: u32, subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: {max_connections}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  tcp:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"
    )
}

/// The sum of the samples of `metric` whose labels include every `labels` pair.
fn sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> u64 {
    let with_labels = format!("{metric}{{");
    text.lines()
        .filter(|l| l.starts_with(&with_labels))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_outbound_proxy_routes_by_the_control_plane() {
    let dir = std::env::temp_dir().join(format!("meshmeter-cli-routing-{}", std::process::id()));
    let config_dir = dir.join("traffic");
    std::fs::create_dir_all(&config_dir).unwrap();
    let config = config_dir.join("reviews.yaml");
    std::fs::write(&config, traffic(100, "v2")).unwrap();
    // Two versions on two loopback addresses, one port; the service address is a third.
    let port = StdListener::bind("127.0.0.11:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v1 = echo(SocketAddr::from(([127, 0, 0, 11], port))).await;
    let v2 = echo(SocketAddr::from(([127, 0, 0, 12], port))).await;
    let workloads = dir.join("workloads.yaml");
    std::fs::write(
        &workloads,
        format!(
            "services:
- host: {HOST}
  addresses: [127.0.0.50]
  ports: [{{port: 9080, name: tcp-reviews, targetPort: {port}}}]
workloads:
- {{name: reviews-v1, namespace: default, labels: {{app: reviews, version: v1}}, ips: [127.0.0.11], services: [{HOST}]}}
- {{name: reviews-v2, namespace: default, labels: {{app: reviews, version: v2}}, ips: [127.0.0.12], services: [{HOST}]}}
"
        ),
    )
    .unwrap();
    let telemetry = dir.join("telemetry");
    std::fs::create_dir_all(&telemetry).unwrap();

    let (control, control_admin) = (free_addr(), free_addr());
    let _control = spawn(
        &[
            "control",
            "--listen",
            &control,
            "--config-dir",
            config_dir.to_str().unwrap(),
            "--workloads",
            workloads.to_str().unwrap(),
            "--admin",
            &control_admin,
            "--reload-interval",
            "200ms",
        ],
        &dir.join("control.log"),
    );
    let (listen, admin) = (free_addr(), free_addr());
    let _proxy = spawn(
        &[
            "proxy",
            "--listen",
            &listen,
            "--upstream",
            "127.0.0.50:9080",
            "--reporter-kind",
            "outbound",
            "--control-plane",
            &control,
            "--name",
            "productpage-v1-0",
            "--namespace",
            "default",
            "--workload",
            "productpage-v1",
            "--labels",
            "app=productpage,version=v1",
            "--metrics-addr",
            &admin,
            "--telemetry-config",
            telemetry.to_str().unwrap(),
            "--report-interval",
            "1s",
        ],
        &dir.join("proxy.log"),
    );
    let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    // Ready once it holds its first view.
    let deadline = Deadline::after(Duration::from_secs(30));
    while get(&admin, "/ready").await.is_none() {
        let logs = format!(
            "proxy not ready\n{}\n{}",
            log("control.log"),
            log("proxy.log")
        );
        deadline.check(&logs).await;
    }

    for i in 0..10u8 {
        assert!(exchange(&listen, &[i; 100]).await, "{}", log("proxy.log"));
    }
    assert_eq!(v2[0].load(Ordering::SeqCst), 10);
    assert_eq!(v1[0].load(Ordering::SeqCst), 0);

    // The VirtualService now sends everything to v1: new connections follow.
    std::fs::write(&config, traffic(1, "v1")).unwrap();
    let switched = Instant::now();
    let deadline = Deadline::after(Duration::from_secs(10));
    while !(exchange(&listen, b"which one?").await && v1[0].load(Ordering::SeqCst) > 0) {
        deadline.check("routed to v1").await;
    }
    eprintln!("change in force after {:?}", switched.elapsed());

    // maxConnections 1: one held connection, the next refused (UO).
    let mut held = TcpStream::connect(&listen).await.unwrap();
    held.write_all(b"hold").await.unwrap();
    let mut four = [0u8; 4];
    held.read_exact(&mut four).await.unwrap();
    assert!(!exchange(&listen, b"over the limit").await);
    held.shutdown().await.unwrap();
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).await.unwrap();

    // In-proxy telemetry: the routed version, and exactly the bytes each server received.
    let bytes = |v: &Arc<[AtomicU64; 2]>| v[1].load(Ordering::SeqCst);
    let (b1, b2) = (bytes(&v1), bytes(&v2));
    let series = |version: &'static str| {
        [
            ("reporter", "source"),
            ("destination_service", HOST),
            ("destination_version", version),
        ]
    };
    let deadline = Deadline::after(Duration::from_secs(20));
    let text = loop {
        let text = get(&admin, "/metrics").await.unwrap_or_default();
        if sum(&text, "istio_tcp_received_bytes_total", &series("v1")) == b1
            && sum(&text, "istio_tcp_received_bytes_total", &series("v2")) == b2
        {
            break text;
        }
        deadline
            .check(&format!("exact routed bytes {b1} {b2}\n{text}"))
            .await;
    };
    // Ten 100-byte exchanges, then 10-byte probes until the change was in force.
    let probes = v2[0].load(Ordering::SeqCst) - 10;
    assert_eq!(b2, 1000 + 10 * probes);
    let uo = sum(
        &text,
        "istio_tcp_connections_closed_total",
        &[("reporter", "source"), ("response_flags", "UO")],
    );
    assert_eq!(uo, 1, "{text}");
    let overflow = text
        .lines()
        .find(|l| l.starts_with("meshmeter_proxy_connections_overflow_total "))
        .unwrap_or_default();
    assert_eq!(overflow, "meshmeter_proxy_connections_overflow_total 1");
    let _ = std::fs::remove_dir_all(&dir);
}
