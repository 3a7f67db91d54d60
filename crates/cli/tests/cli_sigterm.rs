//! The real binaries under SIGTERM: the proxy flushes its report queue, the telemetry server
//! drains within `--drain-timeout` even while a client holds a silent connection, flushes the
//! access log, and both exit 0.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_meshmeter");

/// Kills the process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    fn spawn(args: &[&str]) -> Process {
        Process(
            Command::new(BIN)
                .args(args)
                .env("MESHMETER_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit.
    async fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "no exit within {limit:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
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

async fn wait_ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(addr, "/ready").await.is_none() {
        assert!(Instant::now() < deadline, "{addr} not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One connection through the proxy carrying `payload` and reading its echo.
async fn talk(proxy: &str, payload: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match TcpStream::connect(proxy).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot reach {proxy}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    stream.write_all(payload).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, payload);
}

fn sample(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_queue_and_the_access_log_and_exits_0_within_the_deadline() {
    let dir = std::env::temp_dir().join(format!("meshmeter-cli-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");

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

    let (grpc, metrics) = (free_addr(), free_addr());
    let mut mixer = Process::spawn(&[
        "mixer",
        "--grpc-addr",
        &grpc,
        "--metrics-addr",
        &metrics,
        "--access-log",
        log.to_str().unwrap(),
        "--drain-timeout",
        "1s",
    ]);
    wait_ready(&metrics).await;
    // A long batch delay: the close report is still queued when SIGTERM arrives.
    let listen = free_addr();
    let mut proxy = Process::spawn(&[
        "proxy",
        "--listen",
        &listen,
        "--upstream",
        &upstream,
        "--mixer",
        &grpc,
        "--batch-delay",
        "60s",
        "--report-interval",
        "60s",
    ]);
    talk(&listen, &[5u8; 1000]).await;
    talk(&listen, b"hello").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, _) = proxy.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "proxy exit");
    let text = get(&metrics, "/metrics").await.expect("scrape");
    assert_eq!(
        sample(&text, "istio_tcp_connections_closed_total{"),
        sample(&text, "istio_tcp_connections_closed_total{")
            .map(|l| format!("{} 2", l.rsplit_once(' ').unwrap().0)),
        "the proxy's queued reports reached the server:\n{text}"
    );
    assert!(
        sample(&text, "istio_tcp_connections_closed_total{").is_some(),
        "{text}"
    );

    // A client that connects and never sends the HTTP/2 preface must not hold the server.
    let _silent = TcpStream::connect(&grpc).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, took) = mixer.terminate(Duration::from_secs(8)).await;
    assert_eq!(status.code(), Some(0), "mixer exit");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "mixer took {took:?} with a 1s drain deadline"
    );
    let written = std::fs::read_to_string(&log).unwrap();
    let entries = written.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(
        entries, 4,
        "one open and one close entry per connection:\n{written}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
