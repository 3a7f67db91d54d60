//! Thousands of concurrent short connections, each forwarded and reported exactly.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_concurrent_short_connections() {
    let upstream = echo_server().await;
    let p = proxy(upstream, |c| c.max_connections = CONNECTIONS).await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
    let mut tasks = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let addr = p.addr;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let msg = format!("connection {i} says hello {}", "x".repeat(i % 97));
            // Every connection is open at once before any finishes.
            barrier.wait().await;
            c.write_all(msg.as_bytes()).await.unwrap();
            c.shutdown().await.unwrap();
            let mut back = Vec::new();
            c.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, msg.as_bytes());
            msg.len() as u64
        }));
    }
    let mut expected_total = 0;
    for t in tasks {
        expected_total += t.await.unwrap();
    }
    let reports = p.reports.clone();
    eventually(Duration::from_secs(30), || {
        (reports.closes().len() == CONNECTIONS).then_some(())
    })
    .await;
    let mut by_conn: HashMap<String, Vec<_>> = HashMap::new();
    for r in reports.all() {
        by_conn
            .entry(r.connection_id.to_string())
            .or_default()
            .push(r);
    }
    assert_eq!(by_conn.len(), CONNECTIONS, "connection ids are unique");
    let mut total = 0;
    for conn in by_conn.values() {
        let (received, sent) = check_connection(conn);
        assert_eq!(received, sent);
        assert!(conn.iter().all(|r| r.error.is_none()));
        total += received;
    }
    assert_eq!(total, expected_total);
    assert_eq!(
        p.stats
            .connections_overflow
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    p.stop().await;
}
