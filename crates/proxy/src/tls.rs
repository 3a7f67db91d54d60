//! Mutual TLS on a listener: terminating it from downstream clients (STRICT, or PERMISSIVE by
//! looking at the first bytes), originating it to the upstream, and forwarding between
//! streams of either kind.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use meshmeter_certs::rustls::client::UnbufferedClientConnection;
use meshmeter_certs::rustls::server::UnbufferedServerConnection;
use meshmeter_certs::rustls::{ClientConfig, ServerConfig};
use meshmeter_certs::HandshakeFailure;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::forward::{both_ways, ForwardError, PumpError};
use crate::lean::LeanTls;
use crate::meter::ByteMeter;

/// How the inbound side treats clients (Istio 1.1's `peers: - mtls: {mode: ...}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PeerAuthentication {
    /// Plaintext only: TLS is not terminated.
    #[default]
    Disable,
    /// Both on the same port: a connection whose first bytes are a TLS handshake record
    /// (0x16 0x03) is terminated as mTLS, any other is forwarded as plaintext.
    Permissive,
    /// mTLS only: plaintext and bad certificates are refused.
    Strict,
}

impl PeerAuthentication {
    /// `disable`, `permissive` or `strict`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerAuthentication::Disable => "disable",
            PeerAuthentication::Permissive => "permissive",
            PeerAuthentication::Strict => "strict",
        }
    }
}

impl fmt::Display for PeerAuthentication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is not a [`PeerAuthentication`] mode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown peer authentication mode '{0}' (expected 'strict', 'permissive' or 'disable')")]
pub struct UnknownPeerAuthentication(pub String);

impl FromStr for PeerAuthentication {
    type Err = UnknownPeerAuthentication;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "disable" => Ok(PeerAuthentication::Disable),
            "permissive" => Ok(PeerAuthentication::Permissive),
            "strict" => Ok(PeerAuthentication::Strict),
            _ => Err(UnknownPeerAuthentication(s.to_owned())),
        }
    }
}

/// Terminating mTLS from downstream clients.
#[derive(Clone)]
pub struct InboundTls {
    /// STRICT or PERMISSIVE (DISABLE means no `InboundTls` at all).
    pub mode: PeerAuthentication,
    /// The server configuration (see `meshmeter_certs::server_config`).
    pub config: Arc<ServerConfig>,
    /// Longest a client may take to complete its handshake.
    pub handshake_timeout: Duration,
    /// PERMISSIVE: how long to wait for a client's first bytes before treating the
    /// connection as plaintext (protocols where the server speaks first send nothing).
    pub detect_timeout: Duration,
}

/// TLS settings of one listener.
#[derive(Clone, Default)]
pub struct ListenerTls {
    /// Terminate mTLS from clients.
    pub inbound: Option<InboundTls>,
    /// Originate mTLS to the upstream with this configuration (see
    /// `meshmeter_certs::client_config`).
    pub upstream: Option<Arc<ClientConfig>>,
    /// This workload's principal (`cluster.local/ns/N/sa/S`), reported as
    /// `destination.principal` inbound and `source.principal` outbound.
    pub local_principal: Option<Arc<str>>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("inbound", &self.inbound.as_ref().map(|i| i.mode))
            .field("upstream", &self.upstream.is_some())
            .field("local_principal", &self.local_principal)
            .finish()
    }
}

/// Who the two ends of an mTLS connection are (`connection.mtls` is true when a report
/// carries this).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPeers {
    /// `source.principal`: the client workload.
    pub source_principal: Option<Arc<str>>,
    /// `destination.principal`: the server workload.
    pub destination_principal: Option<Arc<str>>,
}

/// mTLS counters, part of [`crate::ProxyStats`].
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Inbound connections terminated as mTLS.
    pub inbound_mtls: AtomicU64,
    /// Inbound connections accepted as plaintext under PERMISSIVE.
    pub inbound_plaintext: AtomicU64,
    /// Upstream connections originated as mTLS.
    pub upstream_mtls: AtomicU64,
    inbound_refused: [AtomicU64; 7],
    upstream_refused: [AtomicU64; 7],
}

fn index(f: HandshakeFailure) -> usize {
    HandshakeFailure::ALL
        .iter()
        .position(|&x| x == f)
        .unwrap_or(HandshakeFailure::ALL.len() - 1)
}

impl TlsStats {
    /// Counts a client refused for `why`.
    pub fn refuse_inbound(&self, why: HandshakeFailure) {
        self.inbound_refused[index(why)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an upstream handshake that failed for `why`.
    pub fn refuse_upstream(&self, why: HandshakeFailure) {
        self.upstream_refused[index(why)].fetch_add(1, Ordering::Relaxed);
    }

    /// Clients refused for `why`.
    pub fn inbound_refused(&self, why: HandshakeFailure) -> u64 {
        self.inbound_refused[index(why)].load(Ordering::Relaxed)
    }

    /// Upstream handshakes that failed for `why`.
    pub fn upstream_refused(&self, why: HandshakeFailure) -> u64 {
        self.upstream_refused[index(why)].load(Ordering::Relaxed)
    }

    /// Adds the mTLS counters to a scrape.
    pub(crate) fn record(&self, snapshot: &mut meshmeter_selfmetrics::Snapshot) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let name = "meshmeter_proxy_mtls_connections_total";
        let help = "Connections carried over mutual TLS, by side.";
        snapshot.counter(name, help, &[("side", "inbound")], get(&self.inbound_mtls));
        snapshot.counter(
            name,
            help,
            &[("side", "upstream")],
            get(&self.upstream_mtls),
        );
        snapshot.counter(
            "meshmeter_proxy_permissive_plaintext_connections_total",
            "Inbound connections accepted as plaintext under PERMISSIVE.",
            &[],
            get(&self.inbound_plaintext),
        );
        let name = "meshmeter_proxy_tls_refused_total";
        let help =
            "Connections refused in the TLS handshake (nothing forwarded), by side and reason.";
        for (side, counters) in [
            ("inbound", &self.inbound_refused),
            ("upstream", &self.upstream_refused),
        ] {
            for (i, why) in HandshakeFailure::ALL.iter().enumerate() {
                let labels = [("side", side), ("reason", why.as_str())];
                snapshot.counter(name, help, &labels, get(&counters[i]));
            }
        }
    }
}

/// Whether the client's first bytes are a TLS handshake record: `Some(true)` for 0x16 0x03,
/// `Some(false)` for anything else, or for nothing within `timeout` (the server may be the
/// one to speak first), `None` when the client closed without a byte.
pub(crate) async fn starts_with_tls(
    stream: &TcpStream,
    timeout: Duration,
) -> io::Result<Option<bool>> {
    let mut head = [0u8; 2];
    match tokio::time::timeout(timeout, stream.peek(&mut head)).await {
        Err(_) => Ok(Some(false)),
        Ok(Ok(0)) => Ok(None),
        // With one byte only, 0x16 (a handshake record) decides: no text protocol starts so.
        Ok(Ok(n)) => Ok(Some(head[0] == 0x16 && (n < 2 || head[1] == 0x03))),
        Ok(Err(e)) => Err(e),
    }
}

/// A connection's socket, plain or inside TLS.
pub(crate) enum Io {
    Plain(TcpStream),
    Server(Box<LeanTls<UnbufferedServerConnection>>),
    Client(Box<LeanTls<UnbufferedClientConnection>>),
}

impl Io {
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Server(s) => &s.tcp,
            Io::Client(s) => &s.tcp,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One read's buffer: as much plaintext as one bulk read of [`crate::lean`] decrypts (16
/// records), so that streaming data moves in 256 KiB system calls.
const TLS_CHUNK: usize = 256 * 1024;

/// Forwards between two streams of which at least one is TLS, with the semantics of
/// [`crate::forward`]: bytes counted as written, EOF travels as a half-close (TLS:
/// `close_notify` then FIN), an error names the side that failed.
pub(crate) async fn forward_io(
    downstream: &mut Io,
    upstream: &mut Io,
    meter: &ByteMeter,
) -> Result<(), ForwardError> {
    let (down_read, down_write) = tokio::io::split(downstream);
    let (up_read, up_write) = tokio::io::split(upstream);
    let inbound = pump_io(down_read, up_write, |n| meter.add_received(n));
    let outbound = pump_io(up_read, down_write, |n| meter.add_sent(n));
    both_ways(inbound, outbound, meter).await
}

/// Moves one direction. A read borrows a record-sized buffer from the thread's pool only for
/// the poll that finds bytes: a read that finds none hands it back before the task parks (the
/// source has registered the wakeup), so an idle connection holds no copy buffer, as in
/// [`crate::forward`]'s plain pumps; a buffer is held across an await only while its bytes
/// wait to be written.
async fn pump_io<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut src: R,
    mut dst: W,
    count: impl Fn(u64),
) -> Result<(), PumpError> {
    let mut buf: Option<Box<[u8]>> = None;
    let result = loop {
        let n = match read_pooled(&mut src, &mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            // A TLS peer that closed its socket without close_notify: its stream ended.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(PumpError::Read(e)),
        };
        let data = match buf.as_deref() {
            Some(b) => &b[..n],
            None => break Ok(()),
        };
        if let Err(e) = dst.write_all(data).await {
            break Err(PumpError::Write(e));
        }
        // A TLS write may leave its record queued (the socket was full): it must leave now,
        // not when the next write comes.
        if let Err(e) = dst.flush().await {
            break Err(PumpError::Write(e));
        }
        count(n as u64);
    };
    if let Some(b) = buf.take() {
        crate::forward::pool::give(b);
    }
    result?;
    dst.shutdown().await.map_err(PumpError::Write)
}

/// One read into `buf`, taken from the pool for the poll and given back when the poll finds
/// nothing (the source then holds the waker); kept, holding the bytes read, when it finds some.
async fn read_pooled<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut Option<Box<[u8]>>,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        let chunk = buf.get_or_insert_with(|| crate::forward::pool::take(TLS_CHUNK));
        let mut read = ReadBuf::new(chunk);
        match Pin::new(&mut *src).poll_read(cx, &mut read) {
            Poll::Ready(result) => Poll::Ready(result.map(|()| read.filled().len())),
            Poll::Pending => {
                if let Some(b) = buf.take() {
                    crate::forward::pool::give(b);
                }
                Poll::Pending
            }
        }
    })
    .await
}
