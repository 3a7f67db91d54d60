//! A real Redis behind meshmeter's sidecar, driven by redis-benchmark through it: the bytes
//! the sidecar reports must equal the bytes Redis itself counted. Needs Debian's
//! `redis-server` and `redis-tools`; `scripts/test.sh` installs them.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use meshmeter_e2e::{metric_sum, require, Mesh};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Kills the server when the test ends, however it ends.
struct Redis(std::process::Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `INFO stats` over a direct connection: (total_net_input_bytes, total_net_output_bytes,
/// the exact bytes of the request and of the reply on the wire).
async fn info_stats(addr: SocketAddr) -> (u64, u64, usize, usize) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n";
    s.write_all(request).await.unwrap();
    // The reply is one bulk string: `$LEN\r\n<LEN bytes>\r\n`.
    let mut reply = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "redis closed the connection");
        reply.extend_from_slice(&chunk[..n]);
        if let Some(end) = reply.windows(2).position(|w| w == b"\r\n") {
            let len: usize = std::str::from_utf8(&reply[1..end])
                .unwrap()
                .parse()
                .unwrap();
            if reply.len() >= end + 2 + len + 2 {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{name} missing in INFO"))
            .trim()
            .parse()
            .unwrap()
    };
    (
        field("total_net_input_bytes"),
        field("total_net_output_bytes"),
        request.len(),
        reply.len(),
    )
}

/// Starts redis-server on a free port. Redis cannot bind port 0 and say which port it got, so
/// a port is picked first; another process may take it meanwhile, so the server that answers
/// must be ours (its `process_id`), and a Redis that could not bind is started again elsewhere.
async fn start_redis() -> (Redis, SocketAddr) {
    for _ in 0..20 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis(
            Command::new(require("redis-server"))
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if redis.0.try_wait().unwrap().is_some() {
                break; // could not bind: try another port
            }
            if let Some(pid) = redis_pid(addr).await {
                assert_eq!(pid, redis.0.id(), "{addr} is another process's Redis");
                return (redis, addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("redis-server did not start");
}

/// The `process_id` of the Redis answering at `addr`.
async fn redis_pid(addr: SocketAddr) -> Option<u32> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        .await
        .ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(rest) = text.split("process_id:").nth(1) {
            if let Some((pid, _)) = rest.split_once("\r\n") {
                return pid.trim().parse().ok();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server and redis-benchmark; run by scripts/test.sh"]
async fn sidecar_totals_equal_what_redis_counted() {
    let (redis, addr) = start_redis().await;
    let mesh = Mesh::start(addr).await;
    let (in_before, out_before, _, before_reply) = info_stats(addr).await;
    let status = tokio::task::spawn_blocking({
        let proxy = mesh.proxy;
        move || {
            Command::new(require("redis-benchmark"))
                .args(["-h", "127.0.0.1", "-p", &proxy.port().to_string()])
                .args([
                    "-n",
                    "5000",
                    "-c",
                    "20",
                    "-d",
                    "100",
                    "-t",
                    "set,get,lpush,lrange_100",
                    "-q",
                ])
                .stdout(Stdio::null())
                .status()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "redis-benchmark failed: {status}");
    let (in_after, out_after, after_request, _) = info_stats(addr).await;
    // Redis counted our two INFO calls too: the second request (after the first snapshot) and
    // the first reply (written after its own snapshot was taken).
    let into_redis = in_after - in_before - after_request as u64;
    let out_of_redis = out_after - out_before - before_reply as u64;
    assert!(
        into_redis > 100_000,
        "benchmark moved too little: {into_redis}"
    );

    // The sidecar reports every second and at each close; wait for the closes.
    let text = mesh
        .scrape_until(Duration::from_secs(15), |t| {
            metric_sum(t, "istio_tcp_received_bytes_total") == into_redis as f64
                && metric_sum(t, "istio_tcp_sent_bytes_total") == out_of_redis as f64
        })
        .await;
    assert_eq!(
        metric_sum(&text, "istio_tcp_received_bytes_total"),
        into_redis as f64,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "istio_tcp_sent_bytes_total"),
        out_of_redis as f64,
        "{text}"
    );
    let opened = metric_sum(&text, "istio_tcp_connections_opened_total");
    assert_eq!(
        opened,
        metric_sum(&text, "istio_tcp_connections_closed_total"),
        "{text}"
    );
    assert!(opened >= 20.0, "{text}");
    mesh.stop().await;
    drop(redis);
}
