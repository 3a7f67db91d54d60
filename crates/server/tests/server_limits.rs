//! The report port's limits, hit by real HTTP/2 clients over real sockets: handshake and idle
//! timeouts, connection cap, concurrent streams, buffered-body budgets, body timeout.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{eventually, samples, Running};
use meshmeter_server::{GrpcLimits, ServerOptions};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

async fn start(limits: GrpcLimits) -> Running {
    Running::start(ServerOptions {
        include_defaults: false,
        ingest_threads: 1,
        drain_timeout: Duration::from_millis(500),
        grpc_limits: limits,
        ..ServerOptions::default()
    })
    .await
}

/// The `meshmeter_grpc_*` samples of a scrape.
async fn grpc_metrics(running: &Running) -> std::collections::BTreeMap<String, f64> {
    samples(&running.scrape().await, "meshmeter_grpc_")
}

fn hits(limit: &str) -> String {
    format!("meshmeter_grpc_limit_hits_total{{limit=\"{limit}\"}}")
}

type Client = h2::client::SendRequest<Bytes>;

/// An HTTP/2 connection (handshake done); the task ends when the connection does.
async fn connect(addr: SocketAddr) -> (Client, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    (client, tokio::spawn(connection))
}

/// Opens a Report call; the body is sent by the caller.
async fn open_report(
    client: &mut Client,
    addr: SocketAddr,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::post(format!("http://{addr}/istio.mixer.v1.Mixer/Report"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    ready.send_request(request, false).unwrap()
}

/// A gRPC message header announcing `len` bytes (uncompressed).
fn message_header(len: u32) -> Bytes {
    let mut h = vec![0u8];
    h.extend_from_slice(&len.to_be_bytes());
    Bytes::from(h)
}

/// The call's grpc-status (from the headers of a trailers-only answer, else the trailers).
async fn grpc_status(response: h2::client::ResponseFuture) -> (u32, String) {
    let response = response.await.unwrap();
    let read = |h: &http::HeaderMap| {
        h.get("grpc-status").map(|v| {
            let code = v.to_str().unwrap().parse().unwrap();
            // grpc-message is percent-encoded; the messages here only have spaces to decode.
            let message = h
                .get("grpc-message")
                .map(|m| m.to_str().unwrap().replace("%20", " "))
                .unwrap_or_default();
            (code, message)
        })
    };
    if let Some(s) = read(response.headers()) {
        return s;
    }
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        let n = data.unwrap().len();
        let _ = body.flow_control().release_capacity(n);
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    read(&trailers).expect("grpc-status in trailers")
}

/// A complete, empty Report call: answered OK.
async fn report_empty(client: &mut Client, addr: SocketAddr) -> (u32, String) {
    let (response, mut body) = open_report(client, addr).await;
    body.send_data(message_header(0), true).unwrap();
    grpc_status(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_the_preface_are_closed_at_the_handshake_timeout_and_counted() {
    let running = start(GrpcLimits {
        handshake_timeout: Duration::from_millis(300),
        ..GrpcLimits::default()
    })
    .await;
    let mut silent = TcpStream::connect(running.grpc).await.unwrap();
    // A client that completes its handshake in time is not closed by that timeout.
    let (mut client, _conn) = connect(running.grpc).await;
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), silent.read_to_end(&mut sink))
        .await
        .expect("the server closed the preface-less connection")
        .ok();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "closed after {took:?}, before the 300ms timeout"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        report_empty(&mut client, running.grpc).await,
        (0, String::new())
    );
    let m = grpc_metrics(&running).await;
    assert_eq!(m[&hits("handshake_timeout")], 1.0);
    assert_eq!(m["meshmeter_grpc_connections"], 1.0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let running = start(GrpcLimits {
        max_connections: 2,
        ..GrpcLimits::default()
    })
    .await;
    let (mut first, _c1) = connect(running.grpc).await;
    let (second, c2) = connect(running.grpc).await;
    eventually(Duration::from_secs(3), || async {
        (grpc_metrics(&running).await["meshmeter_grpc_connections"] == 2.0).then_some(())
    })
    .await;

    let mut over = TcpStream::connect(running.grpc).await.unwrap();
    let mut sink = Vec::new();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(2), over.read_to_end(&mut sink))
        .await
        .expect("the connection over the cap is closed")
        .ok();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(sink.is_empty(), "nothing is served over the cap");
    // The clients within the cap are served.
    assert_eq!(
        report_empty(&mut first, running.grpc).await,
        (0, String::new())
    );
    let m = grpc_metrics(&running).await;
    assert_eq!(m[&hits("connections")], 1.0);
    assert_eq!(m["meshmeter_grpc_connections"], 2.0);

    // A place freed is a place for a new connection.
    drop(second);
    c2.abort();
    eventually(Duration::from_secs(3), || async {
        (grpc_metrics(&running).await["meshmeter_grpc_connections"] == 1.0).then_some(())
    })
    .await;
    let (mut third, _c3) = connect(running.grpc).await;
    assert_eq!(
        report_empty(&mut third, running.grpc).await,
        (0, String::new())
    );
    assert_eq!(grpc_metrics(&running).await[&hits("connections")], 1.0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gets_at_most_max_concurrent_streams() {
    let running = start(GrpcLimits {
        max_concurrent_streams: 2,
        ..GrpcLimits::default()
    })
    .await;
    let tcp = TcpStream::connect(running.grpc).await.unwrap();
    let (mut client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    // Drive the connection until the server's SETTINGS are in.
    let _ = tokio::time::timeout(Duration::from_millis(200), &mut connection).await;
    assert_eq!(connection.max_concurrent_send_streams(), 2);
    tokio::spawn(connection);

    // Two calls with half-sent bodies take both streams...
    let (r1, mut b1) = open_report(&mut client, running.grpc).await;
    b1.send_data(message_header(0), false).unwrap();
    let (r2, mut b2) = open_report(&mut client, running.grpc).await;
    b2.send_data(message_header(0), false).unwrap();
    // ...so a third, complete one waits for a stream.
    let third = tokio::spawn({
        let mut client = client.clone();
        let addr = running.grpc;
        async move { report_empty(&mut client, addr).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third stream was served while two were open"
    );
    b1.send_data(Bytes::new(), true).unwrap();
    assert_eq!(grpc_status(r1).await, (0, String::new()));
    let answered = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .expect("the third call is served once a stream is free")
        .unwrap();
    assert_eq!(answered, (0, String::new()));
    b2.send_data(Bytes::new(), true).unwrap();
    assert_eq!(grpc_status(r2).await, (0, String::new()));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_buffer_budgets_are_refused_unavailable_and_counted() {
    const PART: usize = 100 * 1024;
    let running = start(GrpcLimits {
        max_connection_buffered_bytes: 256 * 1024,
        max_buffered_bytes: 400 * 1024,
        ..GrpcLimits::default()
    })
    .await;
    // Calls announcing a 1 MiB message and sending 100 KiB of it (plus the 5-byte header).
    let partial = |body: &mut h2::SendStream<Bytes>| {
        body.send_data(message_header(1 << 20), false).unwrap();
        body.send_data(Bytes::from(vec![0u8; PART]), false).unwrap();
    };
    let buffered_is = |want: usize| {
        let running = &running;
        async move {
            eventually(Duration::from_secs(3), || async {
                let m = grpc_metrics(running).await;
                (m["meshmeter_grpc_buffered_bytes"] == want as f64).then_some(())
            })
            .await
        }
    };

    let (mut a, _ca) = connect(running.grpc).await;
    let (ra1, mut a1) = open_report(&mut a, running.grpc).await;
    partial(&mut a1);
    let (ra2, mut a2) = open_report(&mut a, running.grpc).await;
    partial(&mut a2);
    buffered_is(2 * (PART + 5)).await;
    // A third on the same connection would take it over its 256 KiB.
    let (ra3, mut a3) = open_report(&mut a, running.grpc).await;
    partial(&mut a3);
    let (code, message) = grpc_status(ra3).await;
    assert_eq!(code, 14, "UNAVAILABLE: {message}");
    assert!(message.contains("262144 bytes"), "{message}");
    buffered_is(2 * (PART + 5)).await;

    // Another connection: its first call fits the port's 400 KiB, its second does not.
    let (mut b, _cb) = connect(running.grpc).await;
    let (rb1, mut b1) = open_report(&mut b, running.grpc).await;
    partial(&mut b1);
    buffered_is(3 * (PART + 5)).await;
    let (rb2, mut b2) = open_report(&mut b, running.grpc).await;
    partial(&mut b2);
    let (code, message) = grpc_status(rb2).await;
    assert_eq!(code, 14, "UNAVAILABLE: {message}");
    assert!(message.contains("409600 bytes"), "{message}");

    let m = grpc_metrics(&running).await;
    assert_eq!(m[&hits("connection_buffered_bytes")], 1.0);
    assert_eq!(m[&hits("buffered_bytes")], 1.0);
    // Calls that end (here: cancelled by the client) give their bytes back.
    drop((ra1, a1, ra2, a2, rb1, b1));
    buffered_is(0).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_past_the_body_timeout_is_refused_and_counted() {
    let running = start(GrpcLimits {
        body_timeout: Duration::from_millis(300),
        ..GrpcLimits::default()
    })
    .await;
    let (mut client, _conn) = connect(running.grpc).await;
    let (response, mut body) = open_report(&mut client, running.grpc).await;
    body.send_data(message_header(10), false).unwrap();
    let started = Instant::now();
    let (code, message) = grpc_status(response).await;
    assert_eq!(code, 14, "UNAVAILABLE: {message}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(grpc_metrics(&running).await[&hits("body_timeout")], 1.0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_gets_goaway_at_the_idle_timeout_and_is_counted() {
    let running = start(GrpcLimits {
        idle_timeout: Duration::from_millis(400),
        ..GrpcLimits::default()
    })
    .await;
    let (mut client, conn) = connect(running.grpc).await;
    assert_eq!(
        report_empty(&mut client, running.grpc).await,
        (0, String::new())
    );
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(300));
    let m = grpc_metrics(&running).await;
    assert_eq!(m[&hits("idle_timeout")], 1.0);
    assert_eq!(m["meshmeter_grpc_connections"], 0.0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_answer_pings_is_closed_at_the_keepalive_timeout_and_counted() {
    use tokio::io::AsyncWriteExt;
    let running = start(GrpcLimits {
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_millis(200),
        ..GrpcLimits::default()
    })
    .await;
    let mut deaf = TcpStream::connect(running.grpc).await.unwrap();
    // The preface and an empty SETTINGS frame, then nothing: PINGs go unanswered.
    deaf.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), deaf.read_to_end(&mut sink))
        .await
        .expect("the server closed the connection")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(300));
    // What the server sent, frame by frame: it pinged (type 6) before giving up.
    let mut types = Vec::new();
    let mut rest = &sink[..];
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        types.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert!(types.contains(&6), "frame types sent: {types:?}");
    // The client saw the close before the server's connection task ended: the gauge may
    // still count it, and the reason not yet be counted, for a moment.
    let mut m = grpc_metrics(&running).await;
    for _ in 0..100 {
        if m["meshmeter_grpc_connections"] == 0.0 && m[&hits("keepalive_timeout")] == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = grpc_metrics(&running).await;
    }
    assert_eq!(m[&hits("keepalive_timeout")], 1.0);
    assert_eq!(m[&hits("handshake_timeout")], 0.0);
    assert_eq!(m["meshmeter_grpc_connections"], 0.0);
    running.stop().await;
}
