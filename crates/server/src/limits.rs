//! The report port's limits: what one client (or many) may hold of the server, and the
//! `meshmeter_grpc_*` metrics that count each time a limit is hit.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use meshmeter_selfmetrics::{Counter, Gauge, SelfMetrics};
use tonic::Status;

/// Default for [`GrpcLimits::max_concurrent_streams`].
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Default for [`GrpcLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default for [`GrpcLimits::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`GrpcLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default for [`GrpcLimits::keepalive_interval`].
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Default for [`GrpcLimits::keepalive_timeout`].
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default for [`GrpcLimits::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`GrpcLimits::max_buffered_bytes`]: 128 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 128 << 20;
/// Default for [`GrpcLimits::max_connection_buffered_bytes`]: 32 MiB.
pub const DEFAULT_MAX_CONNECTION_BUFFERED_BYTES: usize = 32 << 20;

/// Bounds on what clients of the report port may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcLimits {
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: calls one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Connections open at once; a new one over it is closed at once.
    pub max_connections: usize,
    /// A connection that has not sent the HTTP/2 preface and its SETTINGS by then is closed.
    pub handshake_timeout: Duration,
    /// A connection without an open call for this long is sent GOAWAY.
    pub idle_timeout: Duration,
    /// How often the server pings a connection to check that its client is alive.
    pub keepalive_interval: Duration,
    /// A connection whose client does not answer a ping within this is closed.
    pub keepalive_timeout: Duration,
    /// A call whose request body has not fully arrived by then is refused (UNAVAILABLE).
    pub body_timeout: Duration,
    /// Request-body bytes received but not yet decoded, over all connections.
    pub max_buffered_bytes: usize,
    /// Request-body bytes received but not yet decoded, on one connection.
    pub max_connection_buffered_bytes: usize,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        GrpcLimits {
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            max_connection_buffered_bytes: DEFAULT_MAX_CONNECTION_BUFFERED_BYTES,
        }
    }
}

/// One counter per limit in `meshmeter_grpc_limit_hits_total{limit=...}`.
#[derive(Debug)]
pub(crate) struct Hits {
    pub(crate) connections: Counter,
    pub(crate) handshake_timeout: Counter,
    pub(crate) idle_timeout: Counter,
    pub(crate) keepalive_timeout: Counter,
    pub(crate) body_timeout: Counter,
    pub(crate) buffered_bytes: Counter,
    pub(crate) connection_buffered_bytes: Counter,
}

/// The limits plus the state shared by every connection: how many are open, how many
/// body bytes are buffered, and the metrics.
#[derive(Debug)]
pub(crate) struct Port {
    pub(crate) limits: GrpcLimits,
    pub(crate) hits: Hits,
    open: AtomicUsize,
    buffered: AtomicUsize,
    connections: Gauge,
    buffered_gauge: Gauge,
}

impl Port {
    /// Registers the metrics (at 0, so that they are scraped before the first hit).
    pub(crate) fn new(limits: GrpcLimits, metrics: &SelfMetrics) -> Arc<Self> {
        const HELP: &str =
            "Times a limit of the report port was hit (a connection or call refused or closed).";
        let hit =
            |limit| metrics.counter("meshmeter_grpc_limit_hits_total", HELP, &[("limit", limit)]);
        Arc::new(Port {
            limits,
            hits: Hits {
                connections: hit("connections"),
                handshake_timeout: hit("handshake_timeout"),
                idle_timeout: hit("idle_timeout"),
                keepalive_timeout: hit("keepalive_timeout"),
                body_timeout: hit("body_timeout"),
                buffered_bytes: hit("buffered_bytes"),
                connection_buffered_bytes: hit("connection_buffered_bytes"),
            },
            open: AtomicUsize::new(0),
            buffered: AtomicUsize::new(0),
            connections: metrics.gauge(
                "meshmeter_grpc_connections",
                "Report connections open.",
                &[],
            ),
            buffered_gauge: metrics.gauge(
                "meshmeter_grpc_buffered_bytes",
                "Request-body bytes received on the report port and not yet decoded.",
                &[],
            ),
        })
    }

    /// A slot for a new connection, or `None` (counted) when `max_connections` are open.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<ConnSlot> {
        let max = self.limits.max_connections;
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(_) => {
                self.connections.inc();
                Some(ConnSlot(Arc::clone(self)))
            }
            Err(_) => {
                self.hits.connections.inc();
                None
            }
        }
    }

    fn reserve(&self, n: usize) -> bool {
        let max = self.limits.max_buffered_bytes;
        let ok = self
            .buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_add(n).filter(|&t| t <= max)
            })
            .is_ok();
        if ok {
            self.buffered_gauge
                .set(self.buffered.load(Ordering::Relaxed) as i64);
        }
        ok
    }

    fn release(&self, n: usize) {
        let left = self.buffered.fetch_sub(n, Ordering::AcqRel) - n;
        self.buffered_gauge.set(left as i64);
    }
}

/// An open connection's place under the cap; given back when dropped.
#[derive(Debug)]
pub(crate) struct ConnSlot(Arc<Port>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.connections.dec();
    }
}

/// A request body that counts its bytes against the connection's and the port's budgets
/// until the call has decoded it (the body is dropped then), and that must arrive in full
/// within the body timeout.
pub(crate) struct Budgeted<B> {
    inner: B,
    port: Arc<Port>,
    /// The connection's buffered bytes.
    conn: Arc<AtomicUsize>,
    held: usize,
    /// When the body must be complete.
    due: tokio::time::Instant,
    /// Armed the first time the body is not ready (most arrive with their headers: no timer).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Budgeted<B> {
    pub(crate) fn new(inner: B, port: Arc<Port>, conn: Arc<AtomicUsize>) -> Self {
        let due = tokio::time::Instant::now() + port.limits.body_timeout;
        Budgeted {
            inner,
            port,
            conn,
            held: 0,
            due,
            deadline: None,
        }
    }

    /// Takes `n` more bytes from both budgets, or says which one is spent.
    fn take(&mut self, n: usize) -> Result<(), Status> {
        let max = self.port.limits.max_connection_buffered_bytes;
        let conn_ok = self
            .conn
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_add(n).filter(|&t| t <= max)
            })
            .is_ok();
        if !conn_ok {
            self.port.hits.connection_buffered_bytes.inc();
            return Err(Status::unavailable(format!(
                "this connection's request bodies exceed the server's budget of {max} bytes; retry later"
            )));
        }
        if !self.port.reserve(n) {
            self.conn.fetch_sub(n, Ordering::AcqRel);
            self.port.hits.buffered_bytes.inc();
            return Err(Status::unavailable(format!(
                "request bodies in flight exceed the server's budget of {} bytes; retry later",
                self.port.limits.max_buffered_bytes
            )));
        }
        self.held += n;
        Ok(())
    }
}

impl<B> Drop for Budgeted<B> {
    fn drop(&mut self) {
        if self.held > 0 {
            self.conn.fetch_sub(self.held, Ordering::AcqRel);
            self.port.release(self.held);
        }
    }
}

impl<B> Body for Budgeted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                if let Err(status) = this.take(n) {
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(this.due)))
                .as_mut()
                .poll(cx)
            {
                Poll::Ready(()) => {
                    this.port.hits.body_timeout.inc();
                    let within = this.port.limits.body_timeout;
                    Poll::Ready(Some(Err(Box::new(Status::unavailable(format!(
                        "the request body did not arrive within {within:?}"
                    ))))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
