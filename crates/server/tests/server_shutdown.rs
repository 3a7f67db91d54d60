//! Shutdown: a drain deadline bounds how long connections that never finish can hold it.

mod common;

use std::time::{Duration, Instant};

use common::Running;
use meshmeter_server::ServerOptions;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A connection that never sends the HTTP/2 preface, and an admin connection that never sends
/// its request, are closed at the drain deadline and shutdown completes soon after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_silent_connections_at_the_drain_deadline() {
    let running = Running::start(ServerOptions {
        include_defaults: false,
        ingest_threads: 1,
        drain_timeout: Duration::from_millis(500),
        ..ServerOptions::default()
    })
    .await;
    let mut silent_grpc = TcpStream::connect(running.grpc).await.unwrap();
    let mut silent_admin = TcpStream::connect(running.metrics).await.unwrap();
    // Let the runtime pick the connection up before shutdown starts.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    running.stop().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "shutdown took {took:?}; expected the 500ms deadline"
    );

    // Both connections were closed by the server (EOF or reset), not left open; the report
    // port may first have sent its HTTP/2 SETTINGS (and GOAWAY).
    for stream in [&mut silent_grpc, &mut silent_admin] {
        let mut sink = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut sink))
            .await
            .expect("the server closed the connection");
        assert!(
            sink.len() < 200,
            "unexpected data: {read:?}, {} bytes",
            sink.len()
        );
    }
}

/// Without anything held open, shutdown does not wait for the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_connections_does_not_wait_for_the_deadline() {
    let running = Running::start(ServerOptions {
        include_defaults: false,
        ingest_threads: 1,
        drain_timeout: Duration::from_secs(30),
        ..ServerOptions::default()
    })
    .await;
    let started = Instant::now();
    running.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
}
