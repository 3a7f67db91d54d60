//! The real binary: a proxy reporting to `meshmeter mixer` and a proxy running the same
//! configuration in-process must serve the same metrics for the same traffic.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

const BIN: &str = env!("CARGO_BIN_EXE_meshmeter");
const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/tcp-metrics.yaml"
);

/// Kills the process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and reads its log (stderr) until every message in `wanted` has been
/// logged; returns the process and, per message, its `key=value` fields. Children bind port 0
/// and say where they listen, so no port is chosen before the child binds it.
fn spawn(args: &[&str], wanted: &[&str]) -> (Process, Vec<Vec<(String, String)>>) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("MESHMETER_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let process = Process(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keeps draining after the wanted lines so the child never blocks on a full pipe.
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(strip_ansi(&line));
        }
    });
    let mut found: Vec<Option<Vec<(String, String)>>> = vec![None; wanted.len()];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = Vec::new();
    while found.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|e| {
            panic!(
                "{args:?}: {wanted:?} not logged ({e}); log:\n{}",
                log.join("\n")
            )
        });
        for (i, message) in wanted.iter().enumerate() {
            if found[i].is_none() && line.contains(message) {
                found[i] = Some(fields(&line));
            }
        }
        log.push(line);
    }
    (process, found.into_iter().map(Option::unwrap).collect())
}

/// The `key=value` fields of a log line.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn field(fields: &[(String, String)], key: &str) -> String {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
}

/// The text without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some(body.to_owned());
    }
    // /metrics is sent in chunks.
    let (mut rest, mut text) = (body, String::new());
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            return Some(text);
        }
        text.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

/// The configured (istio_*) samples, sorted.
fn istio_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("istio_"))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

async fn wait_ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(addr, "/ready").await.is_none() {
        assert!(Instant::now() < deadline, "{addr} not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One connection from 127.0.0.2 (ratings-v2) carrying `payload` and reading its echo.
async fn talk(proxy: &str, payload: &[u8]) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        match socket.connect(proxy.parse::<SocketAddr>().unwrap()).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot reach {proxy}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    drop(socket);
    stream.write_all(payload).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_proxy_metrics_equal_the_servers() {
    let dir = std::env::temp_dir().join(format!("meshmeter-cli-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let workloads = dir.join("workloads.yaml");
    std::fs::write(
        &workloads,
        "workloads:\n- name: ratings-v2\n  namespace: default\n  labels: {app: ratings, version: v2}\n  ips: [127.0.0.2]\n\
         - name: mongodb-v1\n  namespace: default\n  labels: {app: mongodb, version: v1}\n  ips: [127.0.0.3]\n  services: [mongodb.default.svc.cluster.local]\n",
    )
    .unwrap();
    let workloads = workloads.to_str().unwrap();
    let log = dir.join("access.log");

    // An echo server stands in for MongoDB.
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = echo.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });

    let (_server, logged) = spawn(
        &[
            "mixer",
            "--config-dir",
            CONFIG,
            "--workloads",
            workloads,
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--access-log",
            log.to_str().unwrap(),
        ],
        &["telemetry server listening"],
    );
    let grpc = field(&logged[0], "grpc");
    let server_metrics = field(&logged[0], "metrics")
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let identity = [
        "--report-interval",
        "1s",
        "--uid",
        "kubernetes://mongodb-v1.default",
    ];
    let mut a = vec![
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--mixer",
        &grpc,
    ];
    a.extend(identity);
    let (_reporting, logged) = spawn(&a, &["proxy listening"]);
    let reporting = field(&logged[0], "listen");
    let mut b = vec![
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--telemetry-config",
        CONFIG,
        "--workloads",
        workloads,
        "--metrics-addr",
        "127.0.0.1:0",
        "--access-log",
        log.to_str().unwrap(),
    ];
    b.extend(identity);
    let (_local, logged) = spawn(&b, &["proxy listening", "serving /metrics and /ready"]);
    let local = field(&logged[0], "listen");
    let local_metrics = field(&logged[1], "addr");
    wait_ready(&server_metrics).await;
    wait_ready(&local_metrics).await;

    for payload in [&b"db.ratings.find({})"[..], &[7u8; 100_000][..], b"x"] {
        talk(&reporting, payload).await;
        talk(&local, payload).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let server = istio_lines(&get(&server_metrics, "/metrics").await.unwrap_or_default());
        let proxy = istio_lines(&get(&local_metrics, "/metrics").await.unwrap_or_default());
        let done = server
            .iter()
            .any(|l| l.starts_with("istio_tcp_connections_closed_total{") && l.ends_with(" 3"));
        if done && server == proxy {
            assert!(server.contains(
                &"istio_mongo_received_bytes{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"} 100020".to_owned()
            ), "{server:#?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server:\n{server:#?}\nin-proxy:\n{proxy:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_and_configuration_exit_2_with_a_message() {
    let out = Command::new(BIN)
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--report-interval",
            "500ms",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--report-interval"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("meshmeter-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(CONFIG)
            .unwrap()
            .replace("kind: COUNTER", "kind: COUNTR"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "mixer",
            "--strict-config",
            "--config-dir",
            bad.to_str().unwrap(),
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml:47:13: error[C0013]: kind 'COUNTR' is not one of"),
        "{stderr}"
    );

    // A path that does not exist is a usage error, not an empty configuration.
    let missing = dir.join("no-such-dir");
    let out = Command::new(BIN)
        .args([
            "mixer",
            "--config-dir",
            missing.to_str().unwrap(),
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "--config-dir {}: no such file or directory",
            missing.display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
