//! Keeping slow clients from starving scrapes: a connection table that evicts the oldest idle
//! connection when full, and a socket wrapper that fails a write stalled for too long.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use meshmeter_selfmetrics::Snapshot;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{sleep, Sleep};

/// What the admin endpoint refused or cut, exported as `meshmeter_admin_*` on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Idle connections closed to make room for a new one.
    pub(crate) evicted: AtomicU64,
    /// New connections refused because every slot was serving a request.
    pub(crate) refused: AtomicU64,
    /// Connections closed because the request head was not complete in time.
    pub(crate) header_timeouts: AtomicU64,
    /// Connections closed because the client stopped reading the response.
    pub(crate) write_stalls: AtomicU64,
}

impl Counts {
    /// Appends the counters in the text exposition format.
    pub(crate) fn render(&self, out: &mut String) {
        let rows = [
            (
                "meshmeter_admin_connections_evicted_total",
                "Idle admin connections closed to make room for a new one (connection limit).",
                &self.evicted,
            ),
            (
                "meshmeter_admin_connections_refused_total",
                "Admin connections refused because every slot was serving a request.",
                &self.refused,
            ),
            (
                "meshmeter_admin_header_timeouts_total",
                "Admin connections closed because the request head did not arrive in time.",
                &self.header_timeouts,
            ),
            (
                "meshmeter_admin_write_stalls_total",
                "Admin connections closed because the client stopped reading the response.",
                &self.write_stalls,
            ),
        ];
        let mut snapshot = Snapshot::new();
        for (name, help, c) in rows {
            snapshot.counter(name, help, &[], c.load(Ordering::Relaxed));
        }
        snapshot.encode(out);
    }
}

/// One open connection: whether it is serving a request, and how to close it.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    busy: AtomicBool,
    close: Notify,
}

impl Slot {
    /// Marks a request in progress (not evictable) or finished.
    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Relaxed);
    }

    /// Completes when the table evicts this connection.
    pub(crate) async fn evicted(&self) {
        self.close.notified().await;
    }
}

/// The open connections, oldest first, at most `cap`.
#[derive(Debug)]
pub(crate) struct Table {
    cap: usize,
    open: Mutex<VecDeque<Arc<Slot>>>,
}

impl Table {
    pub(crate) fn new(cap: usize) -> Self {
        Table {
            cap,
            open: Mutex::new(VecDeque::new()),
        }
    }

    /// A slot for a new connection; when full, the oldest idle connection is evicted to make
    /// room (a scraper then always gets in while slow clients hang). `None` when every
    /// connection is serving a request.
    pub(crate) fn admit(&self, counts: &Counts) -> Option<Arc<Slot>> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        // Closed connections leave their slot with one reference: ours.
        open.retain(|s| Arc::strong_count(s) > 1);
        if open.len() >= self.cap {
            let idle = open.iter().position(|s| !s.busy.load(Ordering::Relaxed))?;
            let victim = open.remove(idle)?;
            // notify_one stores a permit, so a connection not yet waiting still sees it.
            victim.close.notify_one();
            counts.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let slot = Arc::new(Slot::default());
        open.push_back(Arc::clone(&slot));
        Some(slot)
    }
}

/// A socket whose writes fail with `TimedOut` once one has been pending for `limit`.
pub(crate) struct StallTimeout<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    counts: Arc<Counts>,
}

impl<S> StallTimeout<S> {
    pub(crate) fn new(inner: S, limit: Duration, counts: Arc<Counts>) -> Self {
        StallTimeout {
            inner,
            limit,
            stalled: None,
            counts,
        }
    }

    /// Turns a pending write into an error once it has waited `limit`.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            self.counts.write_stalls.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "admin client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
