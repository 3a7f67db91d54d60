//! A MongoDB stand-in: length-prefixed request/response messages like MongoDB's wire protocol
//! (a little-endian i32 total length, then the body). What matters to the demo is that bytes
//! flow both ways in realistic sizes, and that each side can count them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest message either side sends; anything larger is a protocol error.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// Bytes a stand-in server has seen, for the summary.
#[derive(Debug, Default)]
pub(crate) struct ServerCounts {
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) connections: AtomicU64,
}

/// The size of the reply to a request of `request_len` bytes: a "document" of a few hundred
/// bytes that varies with the query.
pub(crate) fn reply_len(request_len: usize) -> usize {
    180 + (request_len * 7) % 320
}

/// Reads one length-prefixed message into `buf`; `Ok(false)` on a clean end of stream.
pub(crate) async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = i32::from_le_bytes(header);
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| (4..=MAX_MESSAGE).contains(&l))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad message length {len}"),
            )
        })?;
    buf.resize(len, 0);
    buf[..4].copy_from_slice(&header);
    stream.read_exact(&mut buf[4..]).await?;
    Ok(true)
}

/// A message of `len` bytes (header included) whose body is `fill`.
pub(crate) fn message(len: usize, fill: u8) -> Vec<u8> {
    let mut m = vec![fill; len];
    m[..4].copy_from_slice(&(len as i32).to_le_bytes());
    m
}

/// Serves on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, counts: Arc<ServerCounts>) {
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            continue;
        };
        counts.connections.fetch_add(1, Ordering::Relaxed);
        let counts = Arc::clone(&counts);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                match read_message(&mut stream, &mut buf).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "mongodb stand-in: connection ended");
                        break;
                    }
                }
                counts
                    .received
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                let reply = message(reply_len(buf.len()), b'd');
                if stream.write_all(&reply).await.is_err() {
                    break;
                }
                counts.sent.fetch_add(reply.len() as u64, Ordering::Relaxed);
            }
        });
    }
}

/// Binds the stand-in on `addr`.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
