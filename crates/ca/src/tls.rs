//! The CSR API over TLS: the CA proves its own SPIFFE identity, callers verify it against the
//! trust bundle before sending their token.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use meshmeter_certs::rustls::{ClientConfig, ServerConfig};
use meshmeter_certs::{SpiffeId, SpiffeIdError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The namespace and service account of the CA's own identity.
pub const CA_NAMESPACE: &str = "istio-system";
/// See [`CA_NAMESPACE`].
pub const CA_SERVICE_ACCOUNT: &str = "meshmeter-ca";

/// The identity the CA's serving certificate carries: `spiffe://DOMAIN/ns/istio-system/sa/meshmeter-ca`.
pub fn ca_identity(trust_domain: &str) -> Result<SpiffeId, SpiffeIdError> {
    SpiffeId::new(trust_domain, CA_NAMESPACE, CA_SERVICE_ACCOUNT)
}

/// An accepted TLS connection, as tonic's server takes it.
pub(crate) struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts on `listener` and completes TLS handshakes off the accept loop (a slow client
/// cannot hold others up); finished connections come out of the returned stream.
pub(crate) fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl futures_util::Stream<Item = Result<TlsConn, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<TlsConn>(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let accepting = tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = acceptor.accept(tcp);
                match tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(TlsConn(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "CA: TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "CA: TLS handshake timed out"),
                }
            });
        }
    });
    // The accept loop ends with the stream (when the server stops).
    let guard = AbortOnDrop(accepting);
    futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|conn| (Ok(conn), (rx, guard)))
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the connector yields: a TLS client stream, as hyper reads it.
pub(crate) type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

/// The connector's future.
pub(crate) type Connecting = Pin<Box<dyn std::future::Future<Output = io::Result<TlsIo>> + Send>>;

/// A tonic connector that dials TCP and runs a TLS client handshake with `config`.
pub(crate) fn connector(
    config: Arc<ClientConfig>,
) -> impl tower::Service<http::Uri, Response = TlsIo, Error = io::Error, Future = Connecting>
       + Clone
       + Send
       + 'static {
    let tls = tokio_rustls::TlsConnector::from(config);
    tower::service_fn(move |uri: http::Uri| {
        let tls = tls.clone();
        let fut: Connecting = Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or("127.0.0.1")
                .trim_matches(['[', ']'])
                .to_owned();
            let port = uri.port_u16().unwrap_or(8060);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let stream = tls.connect(meshmeter_certs::server_name(), tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        });
        fut
    })
}
