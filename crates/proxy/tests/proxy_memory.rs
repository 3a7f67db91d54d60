//! Memory held per idle proxied connection stays under 32 KiB.

mod support;

use std::time::Duration;

use meshmeter_proxy::CopyMode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 2000;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

async fn per_connection(mode: CopyMode) -> u64 {
    // The upstream answers one byte and then just holds its sockets: no task, no buffer.
    let (tx, mut held) = tokio::sync::mpsc::unbounded_channel();
    let upstream = server(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).await.is_ok() && s.write_all(&b).await.is_ok() {
                let _ = tx.send(s);
            }
        }
    })
    .await;
    let p = proxy(upstream, |c| {
        c.forward.mode = mode;
        c.max_connections = CONNECTIONS;
    })
    .await;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    let mut upstreams = Vec::with_capacity(CONNECTIONS);
    // Warm up allocator pools and the runtime before the baseline.
    for _ in 0..50 {
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        c.write_all(b"w").await.unwrap();
        c.read_exact(&mut [0u8; 1]).await.unwrap();
        clients.push(c);
        upstreams.push(held.recv().await.unwrap());
    }
    let before = rss_bytes();
    for _ in 50..CONNECTIONS {
        // One byte each way, so both directions have been active and gone idle again.
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        c.write_all(b"x").await.unwrap();
        c.read_exact(&mut [0u8; 1]).await.unwrap();
        clients.push(c);
        upstreams.push(held.recv().await.unwrap());
    }
    let stats = p.stats.clone();
    eventually(Duration::from_secs(10), || {
        (stats
            .connections_active
            .load(std::sync::atomic::Ordering::Relaxed)
            == CONNECTIONS as u64)
            .then_some(())
    })
    .await;
    let after = rss_bytes();
    let per = after.saturating_sub(before) / (CONNECTIONS as u64 - 50);
    drop((clients, upstreams));
    p.stop().await;
    per
}

// One test, so no other test in this binary allocates while RSS is measured.
#[tokio::test(flavor = "current_thread")]
async fn idle_connection_memory_is_under_32_kib() {
    for mode in [CopyMode::Copy, CopyMode::Splice] {
        let per = per_connection(mode).await;
        eprintln!("{mode:?}: {per} bytes per idle connection (proxy + test client/server)");
        assert!(
            per <= 32 * 1024,
            "{mode:?}: {per} bytes per idle connection"
        );
    }
}
