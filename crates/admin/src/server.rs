use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::body::{Exposition, MetricsBody, Whole};
use crate::conn::{Counts, Slot, StallTimeout, Table};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The `Content-Type` of `/metrics`: the Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections held at once, so a flood of clients cannot exhaust file descriptors or
/// memory. A new connection beyond it evicts the oldest idle one, so scrapes get through while
/// slow clients hang.
const MAX_CONNECTIONS: usize = 512;

/// A client that sends no complete request head within this long is disconnected.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A client that reads none of a response for this long is disconnected.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Produces the `/metrics` body (text exposition format).
///
/// A closure `Fn(&mut String)` renders the whole body per scrape; a large exposition should be
/// a [`Streamed`] source instead, which the endpoint sends as a chunked body pulled a part at a
/// time, so a slow scraper does not pin a full copy of it.
pub trait MetricsSource: Send + Sync + 'static {
    /// Starts one scrape: the parts of its body, produced as the client takes them.
    fn scrape(&self) -> Box<dyn MetricsBody>;
}

impl<F: Fn(&mut String) + Send + Sync + 'static> MetricsSource for F {
    fn scrape(&self) -> Box<dyn MetricsBody> {
        let mut text = String::new();
        self(&mut text);
        Box::new(Whole(Some(text)))
    }
}

/// A source that starts each scrape with its closure, which returns the scrape's parts.
#[derive(Debug)]
pub struct Streamed<F>(pub F);

impl<F: Fn() -> Box<dyn MetricsBody> + Send + Sync + 'static> MetricsSource for Streamed<F> {
    fn scrape(&self) -> Box<dyn MetricsBody> {
        (self.0)()
    }
}

/// Whether `/ready` answers 200 (ready) or 503. Clones share the flag; it starts not ready.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A flag that is not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// The flag.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The admin server cannot start or stopped accepting.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

struct State {
    metrics: Box<dyn MetricsSource>,
    ready: Readiness,
    counts: Arc<Counts>,
}

/// A bound admin endpoint, serving once [`AdminServer::serve`] runs.
pub struct AdminServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<State>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port; see [`AdminServer::local_addr`]).
    pub async fn bind(
        addr: SocketAddr,
        metrics: impl MetricsSource,
        ready: Readiness,
    ) -> Result<Self, AdminError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| AdminError::Bind { addr, source })?;
        Ok(AdminServer {
            listener,
            local_addr,
            state: Arc::new(State {
                metrics: Box::new(metrics),
                ready,
                counts: Arc::default(),
            }),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests in flight
    /// finish (idle keep-alive connections are closed) and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AdminError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let table = Table::new(MAX_CONNECTIONS);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Per-connection failures (ECONNABORTED, EMFILE) must not end
                            // the endpoint; back off briefly in case of descriptor exhaustion.
                            tracing::warn!(error = %e, "admin accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Some(slot) = table.admit(&self.state.counts) else {
                        self.state.counts.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "admin connection refused: all busy");
                        continue;
                    };
                    let state = Arc::clone(&self.state);
                    conns.spawn(connection(stream, peer, state, slot, stop_rx.clone()));
                    // Reap finished connections so the set does not grow with history.
                    while conns.try_join_next().is_some() {}
                }
            }
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        while conns.join_next().await.is_some() {}
        Ok(())
    }
}

/// Serves one connection until it ends, is evicted, or the endpoint stops.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    slot: Arc<Slot>,
    mut stop: watch::Receiver<bool>,
) {
    let io = StallTimeout::new(stream, WRITE_STALL_TIMEOUT, Arc::clone(&state.counts));
    let svc_state = Arc::clone(&state);
    let svc_slot = Arc::clone(&slot);
    let svc = service_fn(move |req| {
        // Busy from the request head until the response is handed over; the body's write is
        // bounded by the stall timeout instead.
        svc_slot.set_busy(true);
        let resp = route(&svc_state, &req);
        svc_slot.set_busy(false);
        async move { Ok::<_, Infallible>(resp) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                if e.is_timeout() {
                    state.counts.header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
            return;
        }
        () = slot.evicted() => return,
        _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

type AdminBody = Either<Full<Bytes>, Exposition>;

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<AdminBody> {
    respond(status, content_type, Either::Left(Full::new(body.into())))
}

fn respond(status: StatusCode, content_type: &'static str, body: AdminBody) -> Response<AdminBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

const PLAIN: &str = "text/plain; charset=utf-8";

fn route(state: &State, req: &Request<Incoming>) -> Response<AdminBody> {
    let path = req.uri().path();
    let known = matches!(path, "/metrics" | "/healthz" | "/ready");
    if !known {
        return text(StatusCode::NOT_FOUND, PLAIN, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "method not allowed\n",
        );
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/metrics" => {
            let parts = state.metrics.scrape();
            let body = Exposition::new(parts, Arc::clone(&state.counts));
            respond(StatusCode::OK, METRICS_CONTENT_TYPE, Either::Right(body))
        }
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n"),
        _ if state.ready.is_ready() => text(StatusCode::OK, PLAIN, "ready\n"),
        _ => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "not ready\n"),
    }
}
