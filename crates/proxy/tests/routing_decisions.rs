//! A listener with a router: each decision (passthrough, forward to an endpoint, overflow,
//! no endpoint) and what its reports say; connect outcomes reach the router's guard, which is
//! released when the connection ends. Peer authentication changed while the listener runs
//! applies to new connections.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshmeter_proxy::{
    ConnectOutcome, Decision, ErrorFlag, Forward, Identity, PeerAuthentication, PeerModes,
    PeerPolicy, RoutedDestination, Router, UpstreamTls,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the test router answers, and what its guards saw.
#[derive(Default)]
struct Script {
    answer: Mutex<Option<Answer>>,
    asked: Mutex<Vec<SocketAddr>>,
    connected: AtomicUsize,
    failed: AtomicUsize,
    released: AtomicUsize,
}

#[derive(Clone)]
enum Answer {
    Passthrough,
    Forward(SocketAddr, UpstreamTls),
    Overflow,
    NoEndpoint,
}

struct TestRouter(Arc<Script>);

struct Guard(Arc<Script>);

impl ConnectOutcome for Guard {
    fn connected(&self) {
        self.0.connected.fetch_add(1, Ordering::SeqCst);
    }
    fn connect_failed(&self) {
        self.0.failed.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.released.fetch_add(1, Ordering::SeqCst);
    }
}

fn ratings() -> Arc<RoutedDestination> {
    Arc::new(RoutedDestination {
        service_host: Some("ratings.default.svc.cluster.local".into()),
        service_name: Some("ratings".into()),
        service_namespace: Some("default".into()),
        workload_name: Some("ratings-v2".into()),
        workload_namespace: Some("default".into()),
        labels: Identity::parse_labels("app=ratings,version=v2").unwrap(),
    })
}

impl Router for TestRouter {
    fn route(&self, original: SocketAddr) -> Decision {
        self.0.asked.lock().unwrap().push(original);
        match self.0.answer.lock().unwrap().clone().expect("an answer") {
            Answer::Passthrough => Decision::Passthrough,
            Answer::Forward(endpoint, tls) => Decision::Forward(Forward {
                endpoint,
                connect_timeout: Some(Duration::from_secs(2)),
                tls,
                destination: ratings(),
                guard: Box::new(Guard(Arc::clone(&self.0))),
            }),
            Answer::Overflow => Decision::Overflow(Some(ratings())),
            Answer::NoEndpoint => Decision::NoEndpoint(Some(ratings())),
        }
    }
}

async fn routed_proxy(upstream: SocketAddr, answer: Answer) -> (Running, Arc<Script>) {
    let script = Arc::new(Script::default());
    *script.answer.lock().unwrap() = Some(answer);
    let router = Arc::new(TestRouter(Arc::clone(&script)));
    let p = proxy_built(
        upstream,
        Duration::from_secs(10),
        |_| {},
        |p| p.with_router(router),
    )
    .await;
    (p, script)
}

/// Sends a message to a proxy that will not forward it: the answer is an immediate end
/// (EOF, or a reset when the unread message was still in the proxy's buffer).
async fn refused(addr: SocketAddr, message: &[u8]) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let _ = c.write_all(message).await;
    let mut buf = Vec::new();
    let got = c.read_to_end(&mut buf).await;
    assert!(got.is_err() || buf.is_empty(), "{got:?} {buf:?}");
}

async fn echo_once(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(message).await.unwrap();
    c.shutdown().await.unwrap();
    read_all(&mut c).await.unwrap()
}

#[tokio::test]
async fn forward_goes_to_the_endpoint_and_reports_it() {
    let service = closed_port().await; // the "VIP": nothing may connect there
    let endpoint = echo_server().await;
    let (p, script) = routed_proxy(service, Answer::Forward(endpoint, UpstreamTls::Plain)).await;
    assert_eq!(echo_once(p.addr, b"hello, v2").await, b"hello, v2");
    let reports = p.stop().await;
    let all = reports.all();
    assert_eq!(check_connection(&all), (9, 9));
    for r in &all {
        assert_eq!(r.destination, endpoint);
        assert_eq!(r.routed, Some(ratings()));
        assert_eq!(r.error, None);
    }
    assert_eq!(*script.asked.lock().unwrap(), vec![service]);
    assert_eq!(script.connected.load(Ordering::SeqCst), 1);
    assert_eq!(script.failed.load(Ordering::SeqCst), 0);
    assert_eq!(script.released.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn passthrough_goes_to_the_upstream_unrouted() {
    let upstream = echo_server().await;
    let (p, script) = routed_proxy(upstream, Answer::Passthrough).await;
    assert_eq!(echo_once(p.addr, b"abc").await, b"abc");
    let addr = p.addr;
    let reports = p.stop().await;
    let all = reports.all();
    assert_eq!(check_connection(&all), (3, 3));
    // An explicit listener reports where the client connected, as without a router.
    assert!(all
        .iter()
        .all(|r| r.destination == addr && r.routed.is_none()));
    assert_eq!(*script.asked.lock().unwrap(), vec![upstream]);
}

#[tokio::test]
async fn failed_connect_is_uf_and_told_to_the_guard() {
    let service = closed_port().await;
    let dead = closed_port().await;
    let (p, script) = routed_proxy(service, Answer::Forward(dead, UpstreamTls::Plain)).await;
    refused(p.addr, b"x").await;
    let reports = p.stop().await;
    let closes = reports.closes();
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].error, Some(ErrorFlag::UpstreamConnectFailure));
    assert_eq!(closes[0].destination, dead);
    assert_eq!(script.failed.load(Ordering::SeqCst), 1);
    assert_eq!(script.connected.load(Ordering::SeqCst), 0);
    assert_eq!(script.released.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn mutual_tls_without_a_certificate_is_never_plaintext() {
    let service = closed_port().await;
    let endpoint = server(|_s| async move {
        panic!("nothing may reach the endpoint");
    })
    .await;
    let answer = Answer::Forward(endpoint, UpstreamTls::MutualUnavailable);
    let (p, script) = routed_proxy(service, answer).await;
    refused(p.addr, b"secret").await;
    let stats = Arc::clone(&p.stats);
    let reports = p.stop().await;
    let closes = reports.closes();
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].error, Some(ErrorFlag::UpstreamConnectFailure));
    assert_eq!(stats.upstream_connect_failures.load(Ordering::SeqCst), 1);
    // Not the endpoint's fault: outlier detection is not told.
    assert_eq!(script.failed.load(Ordering::SeqCst), 0);
    assert_eq!(script.released.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn overflow_closes_at_once_with_uo() {
    let service = closed_port().await;
    let (p, _script) = routed_proxy(service, Answer::Overflow).await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(c.read(&mut buf).await.unwrap(), 0);
    let stats = Arc::clone(&p.stats);
    let reports = p.stop().await;
    let all = reports.all();
    assert_eq!(all.len(), 2, "open and close: {all:?}");
    assert_eq!(all[1].error, Some(ErrorFlag::UpstreamOverflow));
    assert_eq!(all[1].error.unwrap().as_str(), "UO");
    assert_eq!(all[1].destination, service);
    assert_eq!(all[1].routed, Some(ratings()));
    assert_eq!(check_connection(&all), (0, 0));
    assert_eq!(stats.connections_overflow.load(Ordering::SeqCst), 1);
    assert_eq!(stats.connections_active.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn no_endpoint_closes_with_uh() {
    let service = closed_port().await;
    let (p, _script) = routed_proxy(service, Answer::NoEndpoint).await;
    refused(p.addr, b"anyone?").await;
    let stats = Arc::clone(&p.stats);
    let reports = p.stop().await;
    let all = reports.all();
    assert_eq!(all.len(), 2, "open and close: {all:?}");
    assert_eq!(all[1].error.map(ErrorFlag::as_str), Some("UH"));
    assert_eq!(all[1].destination, service);
    assert_eq!(stats.no_healthy_upstream.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn routing_changes_apply_to_new_connections_only() {
    let service = closed_port().await;
    let (v1, v2) = (echo_server().await, echo_server().await);
    let (p, script) = routed_proxy(service, Answer::Forward(v1, UpstreamTls::Plain)).await;
    let mut open = TcpStream::connect(p.addr).await.unwrap();
    open.write_all(b"1").await.unwrap();
    let mut one = [0u8; 1];
    open.read_exact(&mut one).await.unwrap();
    *script.answer.lock().unwrap() = Some(Answer::Forward(v2, UpstreamTls::Plain));
    assert_eq!(echo_once(p.addr, b"22").await, b"22");
    // The first connection carries on to v1.
    open.write_all(b"333").await.unwrap();
    let mut three = [0u8; 3];
    open.read_exact(&mut three).await.unwrap();
    open.shutdown().await.unwrap();
    assert_eq!(read_all(&mut open).await.unwrap(), b"");
    let reports = p.stop().await;
    let closes = reports.closes();
    let to = |addr| closes.iter().find(|r| r.destination == addr).unwrap();
    assert_eq!(to(v1).bytes.received_total, 4);
    assert_eq!(to(v2).bytes.received_total, 2);
}

#[tokio::test]
async fn peer_policy_changes_apply_to_new_connections() {
    let upstream = echo_server().await;
    let policy = PeerPolicy::new(PeerModes::all(PeerAuthentication::Strict));
    let handle = policy.clone();
    let p = proxy_built(
        upstream,
        Duration::from_secs(10),
        |_| {},
        |p| p.with_peer_policy(handle),
    )
    .await;
    // STRICT without a workload certificate: a plaintext client gets nothing through.
    refused(p.addr, b"plain").await;
    policy.set(PeerModes::all(PeerAuthentication::Disable));
    assert_eq!(echo_once(p.addr, b"plain").await, b"plain");
    // PERMISSIVE on another port than the one used: the default applies.
    let port = p.addr.port();
    policy.set(PeerModes {
        default: PeerAuthentication::Disable,
        ports: [(port.wrapping_add(1), PeerAuthentication::Strict)].into(),
    });
    assert_eq!(echo_once(p.addr, b"again").await, b"again");
    let stats = Arc::clone(&p.stats);
    let reports = p.stop().await;
    // The refused client is not reported; the two others are.
    assert_eq!(reports.closes().len(), 2);
    assert_eq!(
        stats
            .tls
            .inbound_refused(meshmeter_certs::HandshakeFailure::Other),
        1
    );
}

/// A router choosing mutual TLS per endpoint: the endpoint's identity is checked against the
/// one its configuration expects; a mismatch fails the connect (`UF`, told to the guard).
#[tokio::test]
async fn forward_originates_mutual_tls_checked_against_the_endpoint() {
    use meshmeter_certs::{
        client_config, server_config, Authority, CertStore, ExpectedPeer, SpiffeId, TrustBundle,
    };
    use meshmeter_proxy::{InboundTls, ListenerTls, ProxyStats};
    let hour = Duration::from_secs(3600);
    let ca = Authority::generate_root("cluster.local", hour).unwrap();
    let bundle = TrustBundle::new(vec![ca.root().clone()], "root").unwrap();
    let id = |sa: &str| SpiffeId::new("cluster.local", "default", sa).unwrap();
    let store = |sa: &str| Arc::new(CertStore::with(ca.issue_workload(&id(sa), hour).unwrap()));
    let (client_store, server_store) = (store("productpage"), store("ratings"));
    // The endpoint's sidecar: STRICT, in front of an echo server.
    let app = echo_server().await;
    let mut config = meshmeter_proxy::ListenerConfig::new("127.0.0.1:0".parse().unwrap(), app);
    config.connect_timeout = Duration::from_secs(5);
    let inbound_reports = Arc::new(Collect::default());
    let inbound = meshmeter_proxy::Proxy::bind(
        config,
        Arc::new(Identity::default()),
        inbound_reports.clone(),
        Arc::new(ProxyStats::default()),
    )
    .await
    .unwrap()
    .with_tls(ListenerTls {
        inbound: Some(InboundTls {
            mode: PeerAuthentication::Strict,
            config: server_config(
                &bundle,
                server_store,
                ExpectedPeer::TrustDomain("cluster.local".into()),
            )
            .unwrap(),
            handshake_timeout: Duration::from_secs(5),
            detect_timeout: Duration::from_secs(1),
        }),
        upstream: None,
        local_principal: Some(Arc::from(id("ratings").principal())),
    });
    let endpoint = inbound.local_addr();
    let (_stop_inbound, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(inbound.run(rx, Duration::from_secs(5)));

    let expecting = |sa: &str| {
        let expected = ExpectedPeer::OneOf(vec![id(sa)]);
        UpstreamTls::Mutual(client_config(&bundle, Arc::clone(&client_store), expected).unwrap())
    };
    let service = closed_port().await;
    let (p, script) = routed_proxy(service, Answer::Forward(endpoint, expecting("ratings"))).await;
    assert_eq!(echo_once(p.addr, b"over mtls").await, b"over mtls");
    *script.answer.lock().unwrap() = Some(Answer::Forward(endpoint, expecting("reviews")));
    refused(p.addr, b"wrong peer").await;
    let stats = Arc::clone(&p.stats);
    let reports = p.stop().await;
    let closes = reports.closes();
    assert_eq!(closes.len(), 2);
    let ok = closes.iter().find(|r| r.error.is_none()).unwrap();
    let tls = ok.tls.as_deref().expect("mTLS");
    assert_eq!(
        tls.destination_principal.as_deref(),
        Some("cluster.local/ns/default/sa/ratings")
    );
    assert_eq!(ok.bytes.received_total, 9);
    assert_eq!(ok.routed, Some(ratings()));
    let bad = closes.iter().find(|r| r.error.is_some()).unwrap();
    assert_eq!(bad.error, Some(ErrorFlag::UpstreamConnectFailure));
    assert_eq!(
        stats
            .tls
            .upstream_refused(meshmeter_certs::HandshakeFailure::BadIdentity),
        1
    );
    assert_eq!(script.connected.load(Ordering::SeqCst), 1);
    assert_eq!(script.failed.load(Ordering::SeqCst), 1);
}
