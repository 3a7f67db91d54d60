//! The ratings-v2 client: steady queries over one long-lived connection, plus a short-lived
//! connection every few seconds, all from ratings-v2's own address. It counts every byte it
//! sends and receives, so the demo can show that the metrics agree.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::mongo::{message, read_message, reply_len};

/// What the client saw.
#[derive(Debug, Default)]
pub struct ClientCounts {
    /// Bytes written to the database (through the sidecar).
    pub sent: AtomicU64,
    /// Bytes read back.
    pub received: AtomicU64,
    /// Connections opened.
    pub connections: AtomicU64,
    /// Connections that failed (connect refused, unexpected reply).
    pub errors: AtomicU64,
}

async fn connect(source: SocketAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(source)?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `queries` queries on `stream`; each waits for its reply.
async fn query(
    stream: &mut TcpStream,
    queries: u64,
    pause: Duration,
    counts: &ClientCounts,
    stop: &watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for n in 0..queries {
        if *stop.borrow() {
            return Ok(());
        }
        let len = 64 + (n as usize * 13) % 96;
        stream.write_all(&message(len, b'q')).await?;
        counts.sent.fetch_add(len as u64, Ordering::Relaxed);
        if !read_message(stream, &mut buf).await? || buf.len() != reply_len(len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unexpected reply",
            ));
        }
        counts
            .received
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(())
}

/// Runs until `stop` turns true; every connection is closed cleanly before it returns.
pub(crate) async fn run(
    source: SocketAddr,
    target: SocketAddr,
    counts: Arc<ClientCounts>,
    stop: watch::Receiver<bool>,
) {
    let steady = {
        let counts = Arc::clone(&counts);
        let stop = stop.clone();
        async move {
            while !*stop.borrow() {
                match connect(source, target).await {
                    Ok(mut stream) => {
                        counts.connections.fetch_add(1, Ordering::Relaxed);
                        let result = query(
                            &mut stream,
                            u64::MAX,
                            Duration::from_millis(50),
                            &counts,
                            &stop,
                        )
                        .await;
                        let _ = stream.shutdown().await;
                        let mut rest = Vec::new();
                        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await;
                        if result.is_err() {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    Err(_) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    };
    let bursts = {
        let counts = Arc::clone(&counts);
        let stop = stop.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            let mut stopping = stop.clone();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopping.wait_for(|s| *s) => break,
                }
                match connect(source, target).await {
                    Ok(mut stream) => {
                        counts.connections.fetch_add(1, Ordering::Relaxed);
                        if query(&mut stream, 3, Duration::ZERO, &counts, &stop)
                            .await
                            .is_err()
                        {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = stream.shutdown().await;
                        // Wait for the server's side of the close so the connection is done.
                        let mut rest = Vec::new();
                        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await;
                    }
                    Err(_) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    };
    // Both loops finish their query in flight before they stop, so every byte the proxy
    // forwarded was also counted here.
    tokio::join!(steady, bursts);
}
