//! The admin endpoint over real sockets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshmeter_admin::{AdminServer, Readiness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    addr: SocketAddr,
    ready: Readiness,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn start() -> Running {
    let scrapes = Arc::new(AtomicU64::new(0));
    let ready = Readiness::new();
    let server = AdminServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        move |out: &mut String| {
            let n = scrapes.fetch_add(1, Ordering::Relaxed) + 1;
            out.push_str(&format!("meshmeter_scrapes_total {n}\n"));
        },
        ready.clone(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        ready,
        stop: Some(stop),
        task,
    }
}

/// Sends one request with `Connection: close`; returns the status line, the headers
/// (lower-cased names, `Date` left out) and the body.
async fn request(addr: SocketAddr, method: &str, path: &str) -> (String, Vec<String>, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            format!("{}: {v}", k.to_ascii_lowercase())
        })
        .filter(|h| !h.starts_with("date:"))
        .collect();
    (status, headers, body)
}

/// The body of a chunked response; panics on bad framing.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size, 16).expect("hex chunk size");
        if size == 0 {
            assert_eq!(rest, "\r\n", "after the last chunk");
            return out;
        }
        out.push_str(&rest[..size]);
        assert_eq!(&rest[size..size + 2], "\r\n", "chunk end");
        body = &rest[size + 2..];
    }
}

/// The endpoint's own counters as rendered after the source's text.
fn own(evicted: u64, refused: u64, header_timeouts: u64, write_stalls: u64) -> String {
    let rows = [
        (
            "meshmeter_admin_connections_evicted_total",
            "Idle admin connections closed to make room for a new one (connection limit).",
            evicted,
        ),
        (
            "meshmeter_admin_connections_refused_total",
            "Admin connections refused because every slot was serving a request.",
            refused,
        ),
        (
            "meshmeter_admin_header_timeouts_total",
            "Admin connections closed because the request head did not arrive in time.",
            header_timeouts,
        ),
        (
            "meshmeter_admin_write_stalls_total",
            "Admin connections closed because the client stopped reading the response.",
            write_stalls,
        ),
    ];
    rows.iter()
        .map(|(n, h, v)| format!("# HELP {n} {h}\n# TYPE {n} counter\n{n} {v}\n"))
        .collect()
}

fn hdrs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn routes() {
    let r = start().await;
    let body = format!("meshmeter_scrapes_total 1\n{}", own(0, 0, 0, 0));
    assert_eq!(
        request(r.addr, "GET", "/metrics").await,
        (
            "HTTP/1.1 200 OK".into(),
            hdrs(&[
                "content-type: text/plain; version=0.0.4; charset=utf-8",
                "connection: close",
                "transfer-encoding: chunked",
            ]),
            body
        )
    );
    assert_eq!(
        request(r.addr, "GET", "/healthz").await,
        (
            "HTTP/1.1 200 OK".into(),
            hdrs(&[
                "content-type: text/plain; charset=utf-8",
                "connection: close",
                "content-length: 3"
            ]),
            "ok\n".into()
        )
    );
    assert_eq!(
        request(r.addr, "GET", "/ready").await.0,
        "HTTP/1.1 503 Service Unavailable"
    );
    assert_eq!(request(r.addr, "GET", "/ready").await.2, "not ready\n");
    r.ready.set(true);
    assert_eq!(
        request(r.addr, "GET", "/ready").await,
        (
            "HTTP/1.1 200 OK".into(),
            hdrs(&[
                "content-type: text/plain; charset=utf-8",
                "connection: close",
                "content-length: 6"
            ]),
            "ready\n".into()
        )
    );
    let (status, _, body) = request(r.addr, "GET", "/nope").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 404 Not Found", "not found\n")
    );
    let (status, headers, _) = request(r.addr, "POST", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains(&"allow: GET, HEAD".to_string()));
    let (status, _, body) = request(r.addr, "HEAD", "/metrics").await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    assert_eq!(
        request(r.addr, "GET", "/metrics").await.2,
        format!("meshmeter_scrapes_total 3\n{}", own(0, 0, 0, 0))
    );
}

#[tokio::test]
async fn scrapes_get_through_while_512_slow_clients_hang() {
    let r = start().await;
    let mut slow = Vec::new();
    for _ in 0..512 {
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        // Half a request head, then nothing: the slowloris pattern.
        s.write_all(b"GET /metrics HTTP/1.1\r\nHo").await.unwrap();
        slow.push(s);
    }
    // The endpoint is full of slow clients; a scrape evicts the oldest and is answered at
    // once (the bound only keeps a regression from hanging the test for the 10 s timeout).
    let (status, _, body) =
        tokio::time::timeout(Duration::from_secs(5), request(r.addr, "GET", "/metrics"))
            .await
            .expect("scrape blocked by slow clients");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        body,
        format!("meshmeter_scrapes_total 1\n{}", own(1, 0, 0, 0))
    );
    // The evicted one is the oldest, and it sees the connection closed.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), slow[0].read_to_end(&mut rest))
        .await
        .expect("oldest slow client not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // Scrapes keep working (whether this one evicts again depends on when the first
    // scrape's connection task ended, so only the answer is checked).
    let (status, _, body) =
        tokio::time::timeout(Duration::from_secs(5), request(r.addr, "GET", "/metrics"))
            .await
            .expect("second scrape blocked");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.starts_with("meshmeter_scrapes_total 2\n"), "{body}");
    drop(slow);
}

#[tokio::test]
async fn graceful_shutdown_closes_idle_connections_and_stops_accepting() {
    let mut r = start().await;
    // A keep-alive connection that has completed one request and sits idle.
    let mut idle = TcpStream::connect(r.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).ends_with("ok\n") {
        let n = idle.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    r.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut r.task)
        .await
        .expect("serve returned")
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("idle connection closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(TcpStream::connect(r.addr).await.is_err(), "listener closed");
}

#[tokio::test]
async fn bind_error_names_the_address() {
    let r = start().await;
    let err = AdminServer::bind(r.addr, |_: &mut String| {}, Readiness::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot listen on {}: ", r.addr)),
        "{err}"
    );
}

/// Part `p` of the big source: one line, exactly 64 KiB.
fn big_part(p: usize) -> String {
    let mut line = format!("part_{p:06} ");
    line.extend(std::iter::repeat_n('x', 64 * 1024 - line.len() - 1));
    line.push('\n');
    line
}

#[tokio::test]
async fn a_slow_scraper_holds_back_rendering_and_blocks_no_one() {
    use meshmeter_admin::{MetricsBody, Streamed};
    const PARTS: usize = 512; // 32 MiB
                              // Bytes rendered so far, per scrape.
    let rendered: Arc<std::sync::Mutex<Vec<Arc<AtomicU64>>>> = Arc::default();
    let log = Arc::clone(&rendered);
    let server = AdminServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Streamed(move || {
            let count = Arc::new(AtomicU64::new(0));
            log.lock().unwrap().push(Arc::clone(&count));
            let mut p = 0;
            Box::new(move |out: &mut String| {
                if p == PARTS {
                    return false;
                }
                let part = big_part(p);
                count.fetch_add(part.len() as u64, Ordering::Relaxed);
                out.push_str(&part);
                p += 1;
                true
            }) as Box<dyn MetricsBody>
        }),
        Readiness::new(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));
    let expected: String = (0..PARTS).map(big_part).chain([own(0, 0, 0, 0)]).collect();

    // The slow scraper: a small receive window, reads the status line, then pauses.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    slow.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Others are served in full meanwhile (the bound only keeps a regression from hanging).
    let (status, _, body) =
        tokio::time::timeout(Duration::from_secs(30), request(addr, "GET", "/metrics"))
            .await
            .expect("scrape blocked by a slow scraper");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        body == expected,
        "full scrape differs ({} bytes)",
        body.len()
    );
    let (status, _, body) = request(addr, "GET", "/healthz").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );

    // The paused scrape has rendered only what the sockets and hyper's write buffer hold
    // (kernel send buffer at most 4 MiB here), not the 32 MiB body.
    let slow_count = Arc::clone(&rendered.lock().unwrap()[0]);
    let held = slow_count.load(Ordering::Relaxed);
    assert!(
        held > 0 && held < 8 << 20,
        "slow scrape rendered {held} bytes"
    );
    assert_eq!(
        rendered.lock().unwrap()[1].load(Ordering::Relaxed),
        (PARTS * 64 * 1024) as u64
    );

    // Resumed, the slow scraper gets the exact body.
    let mut raw = first.to_vec();
    slow.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(dechunk(body) == expected, "slow scrape's body differs");
    assert_eq!(
        slow_count.load(Ordering::Relaxed),
        (PARTS * 64 * 1024) as u64
    );
}
