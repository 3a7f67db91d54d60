//! A listener: accept loop with a connection limit, per-connection tasks that connect the
//! upstream, forward, and report, and graceful drain on shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshmeter_attributes::Timestamp;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use crate::config::{ConfigError, ListenerConfig, Upstream};
use crate::forward::{forward, Side};
use crate::id::ConnectionIds;
use crate::identity::Identity;
use crate::meter::{ByteMeter, DeltaCursor};
use crate::original::{self, Refusal, Registration};
use crate::peer::PeerPolicy;
use crate::report::{ConnectionEvent, ConnectionReport, ErrorFlag, ReportSink};
use crate::route::{ConnectOutcome, Decision, RoutedDestination, Router, UpstreamTls};
use crate::stats::ProxyStats;
use crate::tls::{forward_io, starts_with_tls, Io, ListenerTls, PeerAuthentication, TlsPeers};
use meshmeter_certs::rustls::client::UnbufferedClientConnection;
use meshmeter_certs::rustls::server::UnbufferedServerConnection;
use meshmeter_certs::rustls::ClientConfig;
use meshmeter_certs::HandshakeFailure;

use crate::lean::LeanTls;

/// A listener that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

struct Shared {
    config: ListenerConfig,
    identity: Arc<Identity>,
    sink: Arc<dyn ReportSink>,
    stats: Arc<ProxyStats>,
    ids: Arc<ConnectionIds>,
    tls: ListenerTls,
    router: Option<Arc<dyn Router>>,
    peer_policy: Option<PeerPolicy>,
}

/// One listening proxy: every accepted connection is forwarded to one upstream, or, in
/// transparent mode ([`Upstream::OriginalDestination`]), to where its client meant to go.
pub struct Proxy {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// Owned until [`Proxy::run`] shares it with the connections, so that settings such as
    /// [`Proxy::with_connection_ids`] always take effect.
    shared: Shared,
    /// In transparent mode, keeps this listener in the loop guard while it lives.
    _own: Option<Registration>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("local_addr", &self.local_addr)
            .field("upstream", &self.shared.config.upstream)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Binds the listener. Reports go to `sink`; connection ids are drawn from a fresh
    /// process id (see [`Proxy::with_connection_ids`] to share one between listeners).
    pub async fn bind(
        config: ListenerConfig,
        identity: Arc<Identity>,
        sink: Arc<dyn ReportSink>,
        stats: Arc<ProxyStats>,
    ) -> Result<Proxy, BindError> {
        if config.max_connections == 0 {
            return Err(ConfigError::ZeroConnectionLimit.into());
        }
        let addr = config.listen;
        let transparent = config.upstream == Upstream::OriginalDestination;
        let listener = listen(addr, config.backlog, transparent)
            .map_err(|source| BindError::Listen { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BindError::Listen { addr, source })?;
        Ok(Proxy {
            listener,
            local_addr,
            _own: transparent.then(|| original::register(local_addr)),
            shared: Shared {
                config,
                identity,
                sink,
                stats,
                ids: Arc::new(ConnectionIds::new()),
                tls: ListenerTls::default(),
                router: None,
                peer_policy: None,
            },
        })
    }

    /// Uses `ids` for connection ids, so that several listeners of one process share a
    /// process id and a counter.
    pub fn with_connection_ids(mut self, ids: Arc<ConnectionIds>) -> Self {
        self.shared.ids = ids;
        self
    }

    /// Terminates and/or originates mutual TLS on this listener's connections.
    pub fn with_tls(mut self, tls: ListenerTls) -> Self {
        self.shared.tls = tls;
        self
    }

    /// Asks `router` where each new connection goes (see [`Router`]): an outbound
    /// listener's routing. Without one, every connection goes to the listener's upstream.
    pub fn with_router(mut self, router: Arc<dyn Router>) -> Self {
        self.shared.router = Some(router);
        self
    }

    /// Takes the peer authentication of each new connection from `policy`, by the port the
    /// client connected to, instead of the fixed mode of [`ListenerTls::inbound`]. A mode
    /// asking for mTLS on a listener without a server configuration (no workload
    /// certificate) refuses TLS clients, and under STRICT every client.
    pub fn with_peer_policy(mut self, policy: PeerPolicy) -> Self {
        self.shared.peer_policy = Some(policy);
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts and forwards until `shutdown` becomes true (or its sender is dropped). Then it
    /// stops accepting, lets open connections finish for up to `drain`, resets those still
    /// open, and returns once every connection has sent its close report.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, drain: Duration) {
        let Proxy {
            listener,
            local_addr,
            shared,
            _own: own,
        } = self;
        let shared = Arc::new(shared);
        let max = u32::try_from(shared.config.max_connections)
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        let limit = Arc::new(Semaphore::new(max as usize));
        let (abort_tx, abort_rx) = watch::channel(false);
        tracing::info!(listen = %local_addr, upstream = %shared.config.upstream, "proxy listening");
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|&stop| stop) => break,
            };
            match accepted {
                Ok((client, peer)) => {
                    shared
                        .stats
                        .connections_accepted
                        .fetch_add(1, Ordering::Relaxed);
                    match Arc::clone(&limit).try_acquire_owned() {
                        Ok(permit) => {
                            let task =
                                serve(Arc::clone(&shared), client, peer, permit, abort_rx.clone());
                            tokio::spawn(task);
                        }
                        Err(_) => refuse(&shared, client, peer),
                    }
                }
                Err(e) => {
                    // Out of descriptors or memory: pause instead of spinning on a listener
                    // that stays readable.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        drop(own);
        let open = max - limit.available_permits() as u32;
        tracing::info!(listen = %local_addr, open, ?drain, "draining connections");
        if tokio::time::timeout(drain, limit.acquire_many(max))
            .await
            .is_err()
        {
            let left = max - limit.available_permits() as u32;
            tracing::warn!(listen = %local_addr, left, "drain deadline passed: resetting open connections");
            let _ = abort_tx.send(true);
            // Aborted connections end at once; this only waits for their close reports.
            let _ = limit.acquire_many(max).await;
        }
        tracing::info!(listen = %local_addr, "proxy stopped");
    }
}

fn listen(addr: SocketAddr, backlog: u32, transparent: bool) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // A restarted proxy must be able to bind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    if transparent && addr.is_ipv6() {
        // Transparent listeners come in pairs, `0.0.0.0:P` and `[::]:P`, one per family of
        // capture rules; the original destination is read with the family's own option.
        socket2::SockRef::from(&socket).set_only_v6(true)?;
    }
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Over the limit: the connection is closed at once and reported as `UO`.
fn refuse(shared: &Shared, client: TcpStream, peer: SocketAddr) {
    shared
        .stats
        .connections_overflow
        .fetch_add(1, Ordering::Relaxed);
    let accepted_on = client.local_addr().unwrap_or(shared.config.listen);
    // A transparent listener reports where the client meant to go, even for a refusal.
    let destination = match shared.config.upstream {
        Upstream::OriginalDestination => original::route(&client).unwrap_or(accepted_on),
        Upstream::Fixed(_) => accepted_on,
    };
    let conn = Conn::new(shared, destination, peer);
    tracing::debug!(id = %conn.id, %peer, "connection limit reached: closing (UO)");
    conn.report(shared, ConnectionEvent::Open, None);
    drop(client);
    conn.report(
        shared,
        ConnectionEvent::Close,
        Some(ErrorFlag::UpstreamOverflow),
    );
}

/// What a connection's reports need between events.
struct Conn {
    id: Arc<str>,
    source: SocketAddr,
    destination: SocketAddr,
    started: Instant,
    meter: ByteMeter,
    cursor: std::sync::Mutex<DeltaCursor>,
    tls: Option<Arc<TlsPeers>>,
    routed: Option<Arc<RoutedDestination>>,
}

impl Conn {
    /// `destination`: where the client connected, or meant to before capture redirected it.
    fn new(shared: &Shared, destination: SocketAddr, peer: SocketAddr) -> Conn {
        let number = shared.ids.next_number();
        Conn {
            id: Arc::from(shared.ids.format(number)),
            source: peer,
            destination,
            started: Instant::now(),
            meter: ByteMeter::default(),
            cursor: std::sync::Mutex::new(DeltaCursor::default()),
            tls: None,
            routed: None,
        }
    }

    fn report(&self, shared: &Shared, event: ConnectionEvent, error: Option<ErrorFlag>) {
        let bytes = self
            .cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .advance(&self.meter);
        shared
            .stats
            .received_bytes
            .fetch_add(bytes.received, Ordering::Relaxed);
        shared
            .stats
            .sent_bytes
            .fetch_add(bytes.sent, Ordering::Relaxed);
        let duration = (event == ConnectionEvent::Close)
            .then(|| meshmeter_attributes::Duration::from_std(self.started.elapsed()));
        shared.sink.submit(ConnectionReport {
            event,
            connection_id: Arc::clone(&self.id),
            source: self.source,
            destination: self.destination,
            time: Timestamp::now(),
            bytes,
            duration,
            error,
            identity: Arc::clone(&shared.identity),
            tls: self.tls.clone(),
            routed: self.routed.clone(),
        });
    }
}

/// Decrements the active gauge however the connection task ends.
struct ActiveGuard(Arc<ProxyStats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a forwarded connection ended.
enum End {
    Done,
    Failed(crate::forward::ForwardError),
    Idle,
    Aborted,
}

/// Where one connection goes, after the router (if any) had its say.
struct Plan {
    /// The address to connect to.
    target: SocketAddr,
    connect_timeout: Duration,
    /// Originate mTLS with this configuration.
    tls: Option<Arc<ClientConfig>>,
    /// The router asked for mTLS that this proxy cannot originate.
    tls_unavailable: bool,
    /// The router's hold on the destination, told how connecting went; released when the
    /// connection ends.
    guard: Option<Box<dyn ConnectOutcome>>,
}

async fn serve(
    shared: Arc<Shared>,
    client: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    mut abort: watch::Receiver<bool>,
) {
    let Some((mut destination, target)) = route(&shared, &client, peer) else {
        return;
    };
    let mut plan = Plan {
        target,
        connect_timeout: shared.config.connect_timeout,
        tls: shared.tls.upstream.clone(),
        tls_unavailable: false,
        guard: None,
    };
    let mut routed = None;
    if let Some(router) = &shared.router {
        match router.route(target) {
            Decision::Passthrough => {}
            Decision::Forward(f) => {
                destination = f.endpoint;
                plan.target = f.endpoint;
                if let Some(t) = f.connect_timeout {
                    plan.connect_timeout = t;
                }
                match f.tls {
                    UpstreamTls::Plain => plan.tls = None,
                    UpstreamTls::Mutual(config) => plan.tls = Some(config),
                    UpstreamTls::MutualUnavailable => {
                        plan.tls = None;
                        plan.tls_unavailable = true;
                    }
                }
                plan.guard = Some(f.guard);
                routed = Some(f.destination);
            }
            Decision::Overflow(d) => {
                return refuse_routed(
                    &shared,
                    client,
                    target,
                    peer,
                    d,
                    ErrorFlag::UpstreamOverflow,
                )
            }
            Decision::NoEndpoint(d) => {
                return refuse_routed(
                    &shared,
                    client,
                    target,
                    peer,
                    d,
                    ErrorFlag::NoHealthyUpstream,
                )
            }
        }
    }
    shared
        .stats
        .connections_active
        .fetch_add(1, Ordering::Relaxed);
    let _active = ActiveGuard(Arc::clone(&shared.stats));
    let mut conn = Conn::new(&shared, destination, peer);
    conn.routed = routed;
    let span = tracing::debug_span!("conn", id = %conn.id, %peer, upstream = %plan.target);
    async move {
        // A client refused by the handshake gets nothing: no upstream connection and no report.
        let Some(mut client) = accept_tls(&shared, &mut conn, client, destination.port()).await
        else {
            return;
        };
        // Originating mTLS, the open report waits for the upstream's handshake so that it
        // carries the upstream's principal like the later ones.
        let open_early = plan.tls.is_none();
        let open_late = |conn: &Conn| {
            if !open_early {
                conn.report(&shared, ConnectionEvent::Open, None);
            }
        };
        if open_early {
            conn.report(&shared, ConnectionEvent::Open, None);
        }
        let outcome = |ok: bool| {
            if let Some(guard) = &plan.guard {
                if ok {
                    guard.connected();
                } else {
                    guard.connect_failed();
                }
            }
        };
        if plan.tls_unavailable {
            tracing::debug!("mutual TLS asked for without a workload certificate (UF)");
            return upstream_failed(&shared, &conn, client.tcp());
        }
        let config = &shared.config;
        let timeout = plan.connect_timeout;
        let connect = tokio::time::timeout(timeout, TcpStream::connect(plan.target));
        let upstream = tokio::select! {
            connected = connect => match connected {
                Ok(Ok(upstream)) => upstream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "upstream connect failed (UF)");
                    outcome(false);
                    open_late(&conn);
                    return upstream_failed(&shared, &conn, client.tcp());
                }
                Err(_) => {
                    tracing::debug!(?timeout, "upstream connect timed out (UF)");
                    outcome(false);
                    open_late(&conn);
                    return upstream_failed(&shared, &conn, client.tcp());
                }
            },
            _ = abort.wait_for(|&stop| stop) => {
                open_late(&conn);
                return conn.report(&shared, ConnectionEvent::Close, None);
            }
        };
        // Small request/response exchanges must not wait for Nagle; the proxy writes whatever
        // it read at once, so coalescing is the endpoints' business.
        let _ = client.tcp().set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let tls = plan.tls.as_ref();
        let Some(mut upstream) = connect_tls(&shared, &mut conn, upstream, tls, timeout).await
        else {
            outcome(false);
            open_late(&conn);
            return upstream_failed(&shared, &conn, client.tcp());
        };
        outcome(true);
        open_late(&conn);
        tracing::debug!("connected");

        let meter = &conn.meter;
        let forwarding: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>> =
            match (&mut client, &mut upstream) {
                (Io::Plain(c), Io::Plain(u)) => Box::pin(forward(c, u, meter, config.forward)),
                (c, u) => Box::pin(forward_io(c, u, meter)),
            };
        let end = pump_and_report(&shared, &conn, forwarding, &mut abort).await;
        match &end {
            End::Done => tracing::debug!("closed"),
            End::Idle => tracing::debug!("idle timeout"),
            End::Failed(error) => {
                tracing::debug!(%error, "connection failed: resetting the other side");
                reset(match error.side.other() {
                    Side::Downstream => client.tcp(),
                    Side::Upstream => upstream.tcp(),
                });
            }
            End::Aborted => {
                // Bytes may be in flight; a reset tells both peers the stream is incomplete,
                // where a FIN would pass a truncated stream off as complete.
                reset(client.tcp());
                reset(upstream.tcp());
            }
        }
        drop((client, upstream));
        conn.report(&shared, ConnectionEvent::Close, None);
        // The guard (dropped with `plan` after this) releases the destination's slot only
        // once the close report is out.
    }
    .instrument(span)
    .await;
}

/// The router refused the connection (`UO`: the destination's limit; `UH`: no endpoint):
/// it is closed at once and reported as the listener's own overflow is, naming the address
/// the client asked for.
fn refuse_routed(
    shared: &Shared,
    client: TcpStream,
    destination: SocketAddr,
    peer: SocketAddr,
    routed: Option<Arc<RoutedDestination>>,
    flag: ErrorFlag,
) {
    let counter = match flag {
        ErrorFlag::NoHealthyUpstream => &shared.stats.no_healthy_upstream,
        _ => &shared.stats.connections_overflow,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn::new(shared, destination, peer);
    conn.routed = routed;
    tracing::debug!(id = %conn.id, %peer, %destination, flag = flag.as_str(), "routed destination refused the connection");
    conn.report(shared, ConnectionEvent::Open, None);
    if flag == ErrorFlag::NoHealthyUpstream
        && shared.config.upstream == Upstream::OriginalDestination
    {
        // As for an upstream that refuses: nothing is there to reach.
        reset(&client);
    }
    drop(client);
    conn.report(shared, ConnectionEvent::Close, Some(flag));
}

/// The reported destination and the address to connect to; `None` when a transparent
/// listener refused the connection (reset at once, counted, not reported: it was going
/// nowhere the proxy may forward to).
fn route(
    shared: &Shared,
    client: &TcpStream,
    peer: SocketAddr,
) -> Option<(SocketAddr, SocketAddr)> {
    match shared.config.upstream {
        Upstream::Fixed(upstream) => {
            let destination = client.local_addr().unwrap_or(shared.config.listen);
            Some((destination, upstream))
        }
        Upstream::OriginalDestination => match original::route(client) {
            Ok(original) => Some((original, original)),
            Err(refusal) => {
                let counter = match refusal {
                    Refusal::NotRedirected(_) => &shared.stats.not_redirected,
                    Refusal::Loop(_) => &shared.stats.loops_refused,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, reason = %refusal, "connection refused");
                reset(client);
                None
            }
        },
    }
}

/// Terminates TLS from the client as the listener's peer authentication says (the policy's
/// mode for `port` when the listener has one); `None` when the client is refused (counted)
/// or left before sending anything under PERMISSIVE.
async fn accept_tls(shared: &Shared, conn: &mut Conn, client: TcpStream, port: u16) -> Option<Io> {
    let mode = match (&shared.peer_policy, &shared.tls.inbound) {
        (Some(policy), _) => policy.mode_for(port),
        (None, Some(inbound)) => inbound.mode,
        (None, None) => return Some(Io::Plain(client)),
    };
    let stats = &shared.stats.tls;
    let detect = match &shared.tls.inbound {
        Some(inbound) => inbound.detect_timeout,
        None => DEFAULT_DETECT_TIMEOUT,
    };
    let terminate = match mode {
        PeerAuthentication::Disable => return Some(Io::Plain(client)),
        PeerAuthentication::Strict => true,
        PeerAuthentication::Permissive => match starts_with_tls(&client, detect).await {
            Ok(Some(tls)) => tls,
            // Nothing to forward, nobody to report: the client came and went.
            Ok(None) | Err(_) => return None,
        },
    };
    if !terminate {
        stats.inbound_plaintext.fetch_add(1, Ordering::Relaxed);
        return Some(Io::Plain(client));
    }
    let Some(inbound) = &shared.tls.inbound else {
        // mTLS asked for, but no workload certificate to answer with: refused, never
        // forwarded as if it were plaintext.
        stats.refuse_inbound(HandshakeFailure::Other);
        tracing::debug!(mode = %mode, "client refused: mutual TLS required but no workload certificate");
        reset(&client);
        return None;
    };
    let session = match UnbufferedServerConnection::new(Arc::clone(&inbound.config)) {
        Ok(session) => session,
        Err(e) => {
            stats.refuse_inbound(HandshakeFailure::of_tls(&e));
            return None;
        }
    };
    let mut tls = Box::new(LeanTls::new(client, session));
    let why = match tokio::time::timeout(inbound.handshake_timeout, tls.handshake()).await {
        Ok(Ok(())) => {
            let source = meshmeter_certs::peer_identity(tls.peer_certificates())
                .map(|id| Arc::from(id.principal()));
            stats.inbound_mtls.fetch_add(1, Ordering::Relaxed);
            conn.tls = Some(Arc::new(TlsPeers {
                source_principal: source,
                destination_principal: shared.tls.local_principal.clone(),
            }));
            return Some(Io::Server(tls));
        }
        Ok(Err(e)) => HandshakeFailure::of_io(&e),
        Err(_) => HandshakeFailure::Other,
    };
    stats.refuse_inbound(why);
    tracing::debug!(reason = why.as_str(), "client refused in the TLS handshake");
    None
}

/// PERMISSIVE without a server configuration: how long to wait for a client's first bytes.
const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Originates TLS to the upstream with `config` when there is one; `None` when the handshake
/// fails (counted; the connection then ends as an upstream failure).
async fn connect_tls(
    shared: &Shared,
    conn: &mut Conn,
    upstream: TcpStream,
    config: Option<&Arc<ClientConfig>>,
    timeout: Duration,
) -> Option<Io> {
    let Some(config) = config else {
        return Some(Io::Plain(upstream));
    };
    let session =
        match UnbufferedClientConnection::new(Arc::clone(config), meshmeter_certs::server_name()) {
            Ok(session) => session,
            Err(e) => {
                shared
                    .stats
                    .tls
                    .refuse_upstream(HandshakeFailure::of_tls(&e));
                return None;
            }
        };
    let mut tls = Box::new(LeanTls::new(upstream, session));
    let handshake = tls.handshake();
    let why = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(())) => {
            let destination = meshmeter_certs::peer_identity(tls.peer_certificates())
                .map(|id| Arc::from(id.principal()));
            shared
                .stats
                .tls
                .upstream_mtls
                .fetch_add(1, Ordering::Relaxed);
            let source = match &conn.tls {
                // Inbound mTLS on this listener too: the source is the client that came in.
                Some(t) => t.source_principal.clone(),
                None => shared.tls.local_principal.clone(),
            };
            conn.tls = Some(Arc::new(TlsPeers {
                source_principal: source,
                destination_principal: destination,
            }));
            return Some(Io::Client(tls));
        }
        Ok(Err(e)) => HandshakeFailure::of_io(&e),
        Err(_) => HandshakeFailure::Other,
    };
    shared.stats.tls.refuse_upstream(why);
    tracing::debug!(reason = why.as_str(), "upstream TLS handshake failed (UF)");
    None
}

fn upstream_failed(shared: &Shared, conn: &Conn, client: &TcpStream) {
    shared
        .stats
        .upstream_connect_failures
        .fetch_add(1, Ordering::Relaxed);
    if shared.config.upstream == Upstream::OriginalDestination {
        // The client asked for that address itself: it must see what it would have seen
        // without the proxy, a refused connection, not a connection that opened and ended.
        reset(client);
    }
    conn.report(
        shared,
        ConnectionEvent::Close,
        Some(ErrorFlag::UpstreamConnectFailure),
    );
}

/// Makes the coming close send RST instead of FIN.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

async fn pump_and_report(
    shared: &Shared,
    conn: &Conn,
    mut forwarding: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), crate::forward::ForwardError>> + Send + '_>,
    >,
    abort: &mut watch::Receiver<bool>,
) -> End {
    let config = &shared.config;
    let period = config.report_interval.get();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Without an idle timeout the check never fires; a year stands in for "never".
    let idle_period = config
        .idle_timeout
        .unwrap_or(Duration::from_secs(365 * 24 * 3600));
    let mut idle = tokio::time::interval_at(tokio::time::Instant::now() + idle_period, idle_period);
    idle.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let half_period = config
        .half_close_timeout
        .unwrap_or(Duration::from_secs(365 * 24 * 3600));
    let mut half = tokio::time::interval_at(tokio::time::Instant::now() + half_period, half_period);
    half.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seen = (0, 0);
    // Bytes at the last half-close check; None until the connection is half-closed.
    let mut seen_half = None;
    // Made once: re-registering with the watch channel on every wake-up costs a lock.
    let aborted = abort.wait_for(|&stop| stop);
    tokio::pin!(aborted);
    loop {
        tokio::select! {
            result = &mut forwarding => return match result {
                Ok(()) => End::Done,
                Err(e) => End::Failed(e),
            },
            _ = ticks.tick() => conn.report(shared, ConnectionEvent::Continue, None),
            _ = idle.tick(), if config.idle_timeout.is_some() => {
                let now = (conn.meter.received(), conn.meter.sent());
                if now == seen {
                    return End::Idle;
                }
                seen = now;
            }
            _ = half.tick(), if config.half_close_timeout.is_some() => {
                if conn.meter.half_closed() {
                    let now = (conn.meter.received(), conn.meter.sent());
                    if seen_half == Some(now) {
                        return End::Idle;
                    }
                    seen_half = Some(now);
                }
            }
            _ = &mut aborted => return End::Aborted,
        }
    }
}
