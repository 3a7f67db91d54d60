//! Bidirectional forwarding between a downstream and an upstream socket.
//!
//! The forwarder knows nothing about reports or metrics: it adds the bytes it has written to a
//! [`ByteMeter`] and says how it ended. Each direction runs until its source reaches EOF, then
//! shuts down the write side of its destination (so a half-close travels through the proxy
//! while the other direction keeps flowing). An I/O error in either direction ends both.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::meter::ByteMeter;

/// One end of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client that connected to the proxy.
    Downstream,
    /// The server the proxy connected to.
    Upstream,
}

impl Side {
    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Downstream => Side::Upstream,
            Side::Upstream => Side::Downstream,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
        })
    }
}

/// How bytes move from one socket to the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CopyMode {
    /// Read into a user-space buffer, then write it out.
    #[default]
    Copy,
    /// Adaptive: small messages are copied, bulk transfers go through a kernel pipe with
    /// `splice(2)`, the payload never entering user space (Linux only).
    Splice,
}

/// Tunables of the forwarder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardOptions {
    /// How bytes move.
    pub mode: CopyMode,
    /// Bytes moved per read (copy mode: the buffer, allocated only while data flows; splice
    /// mode: the most asked of one `splice` call).
    pub chunk_size: usize,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            mode: CopyMode::Copy,
            chunk_size: 64 * 1024,
        }
    }
}

/// Why forwarding stopped before both directions reached EOF.
#[derive(Debug, thiserror::Error)]
#[error("{side} connection failed: {source}")]
pub struct ForwardError {
    /// The end whose socket failed (reset by its peer, or otherwise unusable).
    pub side: Side,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

/// An error in one direction, before it is known which end that direction reads from.
#[derive(Debug)]
pub(crate) enum PumpError {
    /// Reading the source failed.
    Read(io::Error),
    /// Writing (or shutting down) the destination failed.
    Write(io::Error),
}

/// Forwards bytes between `downstream` and `upstream` until both directions reach EOF
/// (`Ok`) or one socket fails (`Err`, naming it). Bytes written to the upstream are counted as
/// received, bytes written to the downstream as sent.
///
/// On error nothing is closed here: the caller decides (see [`crate::Proxy`], which resets the
/// surviving side so that a reset propagates).
///
/// The sockets are borrowed mutably only to split each into its read and write half (a
/// half's reads go through tokio's `AsyncRead`, see `read_once`); nothing else touches them
/// while forwarding runs.
pub async fn forward(
    downstream: &mut TcpStream,
    upstream: &mut TcpStream,
    meter: &ByteMeter,
    options: ForwardOptions,
) -> Result<(), ForwardError> {
    let (down_read, down_write) = downstream.split();
    let (up_read, up_write) = upstream.split();
    let inbound = pump(down_read, up_write, options, |n| meter.add_received(n));
    let outbound = pump(up_read, down_write, options, |n| meter.add_sent(n));
    both_ways(inbound, outbound, meter).await
}

/// Runs both directions of a connection to their ends (plain TCP or TLS alike): each half-close
/// is recorded, and the first failure decides which side is blamed.
pub(crate) async fn both_ways(
    inbound: impl std::future::Future<Output = Result<(), PumpError>>,
    outbound: impl std::future::Future<Output = Result<(), PumpError>>,
    meter: &ByteMeter,
) -> Result<(), ForwardError> {
    tokio::pin!(inbound, outbound);
    let (mut inbound_done, mut outbound_done) = (false, false);
    while !(inbound_done && outbound_done) {
        // Whichever direction fails first decides; the other is dropped mid-flight, which is
        // safe because nothing it holds is owed to anyone once the connection is broken.
        tokio::select! {
            result = &mut inbound, if !inbound_done => {
                result.map_err(|e| blame(e, Side::Downstream))?;
                inbound_done = true;
                meter.set_half_closed();
            }
            result = &mut outbound, if !outbound_done => {
                result.map_err(|e| blame(e, Side::Upstream))?;
                outbound_done = true;
                meter.set_half_closed();
            }
        }
    }
    Ok(())
}

fn blame(error: PumpError, source_side: Side) -> ForwardError {
    match error {
        PumpError::Read(source) => ForwardError {
            side: source_side,
            source,
        },
        PumpError::Write(source) => ForwardError {
            side: source_side.other(),
            source,
        },
    }
}

async fn pump(
    src: ReadHalf<'_>,
    dst: WriteHalf<'_>,
    options: ForwardOptions,
    count: impl Fn(u64),
) -> Result<(), PumpError> {
    match options.mode {
        CopyMode::Copy => pump_copy(src, dst, options.chunk_size, count).await,
        CopyMode::Splice => crate::splice::pump_splice(src, dst, options.chunk_size, count).await,
    }
}

/// Copies through a user-space buffer that is held only while data is flowing, so an idle
/// connection holds none. Buffers come from a small per-thread pool: allocating and freeing
/// 64 KiB per message would make the allocator return and re-fault the pages each time.
pub(crate) async fn pump_copy(
    mut src: ReadHalf<'_>,
    dst: WriteHalf<'_>,
    chunk_size: usize,
    count: impl Fn(u64),
) -> Result<(), PumpError> {
    let chunk_size = chunk_size.max(1);
    let dst = dst.as_ref();
    let mut buf: Option<Box<[u8]>> = None;
    let result = loop {
        if let Err(e) = read_ready(src.as_ref()).await {
            break Err(PumpError::Read(e));
        }
        let chunk = buf.get_or_insert_with(|| pool::take(chunk_size));
        let n = match read_once(&mut src, chunk).await {
            Ok(0) => break shutdown_write(dst),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(b) = buf.take() {
                    pool::give(b);
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(PumpError::Read(e)),
        };
        let drained = n < chunk.len();
        if let Err(e) = write_all(dst, &chunk[..n], &count).await {
            break Err(e);
        }
        // A short read emptied the socket (see `read_once`): it will wait for its next bytes
        // without holding a buffer. After a full read more is likely pending: keep it.
        if drained {
            if let Some(b) = buf.take() {
                pool::give(b);
            }
        }
    };
    if let Some(b) = buf {
        pool::give(b);
    }
    result
}

/// Idle copy buffers of the current thread.
pub(crate) mod pool {
    use std::cell::RefCell;

    /// Enough for the connections one thread moves data for at the same instant; beyond it
    /// buffers are freed, bounding what an idle thread holds (16 of the plaintext pumps' 64 KiB
    /// buffers, or 7 of mutual TLS's 256 KiB ones).
    const KEEP_BYTES: usize = 2 * 1024 * 1024;

    thread_local! {
        static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn take(size: usize) -> Box<[u8]> {
        FREE.with(|free| {
            let mut free = free.borrow_mut();
            match free.iter().rposition(|b| b.len() == size) {
                Some(i) => free.swap_remove(i),
                None => vec![0; size].into_boxed_slice(),
            }
        })
    }

    pub(crate) fn give(buf: Box<[u8]>) {
        FREE.with(|free| {
            let mut free = free.borrow_mut();
            let kept: usize = free.iter().map(|b| b.len()).sum();
            if kept + buf.len() <= KEEP_BYTES {
                free.push(buf);
            }
        });
    }
}

pub(crate) async fn write_all(
    dst: &TcpStream,
    mut data: &[u8],
    count: &impl Fn(u64),
) -> Result<(), PumpError> {
    while !data.is_empty() {
        match dst.try_write(data) {
            Ok(n) => {
                count(n as u64);
                data = &data[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                write_ready(dst).await.map_err(PumpError::Write)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PumpError::Write(e)),
        }
    }
    Ok(())
}

/// One read into `buf` if `src` has bytes now (`WouldBlock` if not; the task is then woken
/// when it has).
///
/// This goes through tokio's `AsyncRead` rather than `try_read` for one reason: a read that
/// fills only part of the buffer has emptied the socket's receive queue, and `poll_read`
/// (unlike `try_read`) then marks the socket not readable. `try_read` leaves it readable, so
/// every message cost a second `recv` that returned `EAGAIN` before the task could park: one
/// syscall in three, per message and direction. The epoll registration is edge-triggered, so
/// bytes arriving after the short read still wake the task. (The one exception is TCP urgent
/// data: a read stops short at the urgent mark, and the bytes after it then wait for the
/// peer's next segment. tokio's own `AsyncRead` makes the same assumption, see
/// tokio-rs/tokio#5866; the proxy never forwarded the urgent byte itself either.)
pub(crate) async fn read_once(src: &mut ReadHalf<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let mut buf = ReadBuf::new(buf);
    std::future::poll_fn(|cx| match Pin::new(&mut *src).poll_read(cx, &mut buf) {
        Poll::Ready(result) => Poll::Ready(result),
        // A stale readiness: the read found nothing (and the waker is registered).
        Poll::Pending => Poll::Ready(Err(io::ErrorKind::WouldBlock.into())),
    })
    .await?;
    Ok(buf.filled().len())
}

/// Waits until `s` may be readable. Unlike `TcpStream::readable`, this uses the socket's
/// single reader waker slot instead of a locked waiter list; each socket has exactly one
/// reader (one direction's pump), so the slot is never contended.
pub(crate) async fn read_ready(s: &TcpStream) -> io::Result<()> {
    std::future::poll_fn(|cx| s.poll_read_ready(cx)).await
}

/// Waits until `s` may be writable; see [`read_ready`] (one writer per socket, too).
pub(crate) async fn write_ready(s: &TcpStream) -> io::Result<()> {
    std::future::poll_fn(|cx| s.poll_write_ready(cx)).await
}

/// Propagates a half-close: the destination's peer sees EOF, and may keep sending.
pub(crate) fn shutdown_write(dst: &TcpStream) -> Result<(), PumpError> {
    match socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write) {
        Ok(()) => Ok(()),
        Err(e) => Err(PumpError::Write(e)),
    }
}
