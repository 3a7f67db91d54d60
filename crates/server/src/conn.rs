//! One report connection served with hyper's HTTP/2 server and the port's limits: stream cap
//! and keepalive (hyper), handshake and idle timeouts (here), body budgets ([`Budgeted`]).
//!
//! Why not tonic's `Server`: it has no handshake or idle timeout and no hook to account for
//! buffered request bodies; the gRPC service itself is unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use meshmeter_wire::MixerServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ingest::Ingest;
use crate::limits::{Budgeted, ConnSlot, Port};

/// The client preface (24 bytes) and the 9-byte header of the SETTINGS frame that must follow.
const HANDSHAKE_BYTES: u64 = 24 + 9;

/// What the connection task and its calls share.
struct ConnState {
    /// Bytes read from the client so far.
    read: AtomicU64,
    /// Calls open.
    active: AtomicUsize,
    /// When the last call ended (milliseconds since `start`).
    idle_since_ms: AtomicU64,
    /// Request-body bytes buffered on this connection.
    buffered: Arc<AtomicUsize>,
    start: Instant,
}

/// Serves `stream` until it closes, a limit closes it, or `stop` asks for a graceful end.
pub(crate) async fn serve(
    stream: TcpStream,
    service: MixerServer<Ingest>,
    port: Arc<Port>,
    slot: ConnSlot,
    mut stop: watch::Receiver<bool>,
) {
    let state = Arc::new(ConnState {
        read: AtomicU64::new(0),
        active: AtomicUsize::new(0),
        idle_since_ms: AtomicU64::new(0),
        buffered: Arc::new(AtomicUsize::new(0)),
        start: Instant::now(),
    });
    let limits = &port.limits;
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let io = TokioIo::new(Counted {
        inner: stream,
        state: Arc::clone(&state),
    });
    let svc = Calls {
        inner: service,
        port: Arc::clone(&port),
        state: Arc::clone(&state),
    };
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let check = next_check(&state, &port);
        tokio::select! {
            r = conn.as_mut() => {
                match r {
                    Err(e) if e.is_timeout() => {
                        port.hits.keepalive_timeout.inc();
                        tracing::debug!("report connection closed: no answer to a keepalive ping");
                    }
                    Err(e) => tracing::debug!(error = %e, "report connection ended with an error"),
                    Ok(()) => {}
                }
                break;
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(check), if !closing => {
                if state.read.load(Ordering::Acquire) < HANDSHAKE_BYTES {
                    port.hits.handshake_timeout.inc();
                    tracing::debug!("report connection closed: no HTTP/2 handshake in time");
                    break; // dropping the connection closes the socket
                }
                if idle_for(&state) >= port.limits.idle_timeout {
                    port.hits.idle_timeout.inc();
                    tracing::debug!("report connection idle; sending GOAWAY");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    drop(slot);
}

/// When to look at the connection again: at the handshake deadline until the handshake has
/// arrived, then when it will have been idle for the idle timeout.
fn next_check(state: &ConnState, port: &Port) -> Instant {
    let limits = &port.limits;
    if state.read.load(Ordering::Acquire) < HANDSHAKE_BYTES {
        // Also wake at the idle deadline, when it is the sooner, to look again then.
        return state.start + limits.handshake_timeout.min(limits.idle_timeout);
    }
    if state.active.load(Ordering::Acquire) > 0 {
        return Instant::now() + limits.idle_timeout;
    }
    let since = Duration::from_millis(state.idle_since_ms.load(Ordering::Acquire));
    state.start + since + limits.idle_timeout
}

/// How long the connection has had no call open (zero while one is).
fn idle_for(state: &ConnState) -> Duration {
    if state.active.load(Ordering::Acquire) > 0 {
        return Duration::ZERO;
    }
    let since = Duration::from_millis(state.idle_since_ms.load(Ordering::Acquire));
    state.start.elapsed().saturating_sub(since)
}

/// The gRPC service, with each call's body budgeted and open calls counted.
struct Calls {
    inner: MixerServer<Ingest>,
    port: Arc<Port>,
    state: Arc<ConnState>,
}

/// Counts a call as open until dropped.
struct Open(Arc<ConnState>);

impl Drop for Open {
    fn drop(&mut self) {
        let ms = self.0.start.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

type Reply = http::Response<tonic::body::Body>;

impl hyper::service::Service<http::Request<Incoming>> for Calls {
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        self.state.active.fetch_add(1, Ordering::AcqRel);
        let open = Open(Arc::clone(&self.state));
        let port = Arc::clone(&self.port);
        let buffered = Arc::clone(&self.state.buffered);
        let req = req.map(|body| Budgeted::new(body, port, buffered));
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let reply = tower::Service::call(&mut inner, req).await;
            drop(open);
            reply
        })
    }
}

/// The socket, counting the bytes read (to tell when the handshake has arrived).
struct Counted {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.state.read.fetch_add(n, Ordering::Release);
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
