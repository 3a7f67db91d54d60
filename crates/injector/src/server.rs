//! The HTTPS endpoint: `POST /inject` (AdmissionReview), `GET /healthz`, `GET /ready`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use meshmeter_inject::InjectOptions;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::review::{review, Decision};

/// Largest AdmissionReview body accepted. The API server caps objects at 3 MiB in etcd; a
/// review carries the object once (twice for updates, which are not injected).
pub const MAX_BODY: usize = 8 << 20;

/// Longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The path the MutatingWebhookConfiguration calls.
pub const INJECT_PATH: &str = "/inject";

/// What the endpoint shares across connections.
#[derive(Debug)]
pub struct Shared {
    /// How pods are injected.
    pub options: InjectOptions,
    /// `/ready` answers 200 once true: a certificate is served and its CA published.
    pub ready: AtomicBool,
}

/// Accepts TLS connections on `listener` and serves them until `shutdown` completes; then stops
/// accepting (connections in flight finish on their own tasks).
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, &shared).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response parts")
}

/// Routes one request.
pub async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/ready") => {
            if shared.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: no certificate published yet\n",
                )
            }
        }
        (&Method::POST, INJECT_PATH) => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("cannot read the body (at most {MAX_BODY} bytes): {e}\n"),
                    )
                }
            };
            match review(&body, &shared.options) {
                Ok((out, decision)) => {
                    match &decision {
                        Decision::Injected(n) => tracing::debug!(operations = n, "injected"),
                        Decision::Unchanged(why) => tracing::debug!(reason = %why, "not injected"),
                        Decision::Refused(why) => tracing::warn!(reason = %why, "cannot inject"),
                    }
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(out)))
                        .expect("static response parts")
                }
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        (_, "/healthz" | "/ready" | INJECT_PATH) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
