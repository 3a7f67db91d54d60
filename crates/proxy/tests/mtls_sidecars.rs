//! Two sidecars and the CA on loopback: the client's sidecar originates mutual TLS with a
//! certificate it obtained from the CA by CSR, the server's sidecar terminates it; bytes,
//! principals and refusals are checked exactly.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshmeter_attributes::Value;
use meshmeter_ca::{
    Backoff, BootstrapTokens, CaClient, CaServer, CaStats, RotationStats, Rotator, TtlPolicy,
};
use meshmeter_certs::{
    client_config, server_config, Authority, CertStore, ExpectedPeer, HandshakeFailure, SpiffeId,
    TrustBundle,
};
use meshmeter_proxy::{
    ConnectionEvent, ConnectionReport, Identity, InboundTls, ListenerConfig, ListenerTls,
    PeerAuthentication, Proxy, ProxyStats, ReportSchema, ReporterKind,
};
use support::{check_connection, eventually, Collect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const RATINGS_TOKEN: &str = "ratings-bootstrap-token-1";
const MONGODB_TOKEN: &str = "mongodb-bootstrap-token-1";
const LONG: Duration = Duration::from_secs(15);

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "default", sa).unwrap()
}

struct Mesh {
    ca_addr: String,
    bundle: TrustBundle,
    _stop_ca: watch::Sender<bool>,
}

async fn start_ca() -> Mesh {
    let authority = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let bundle = TrustBundle::new(vec![authority.root().clone()], "root").unwrap();
    let tokens = BootstrapTokens::parse(
        &format!("{RATINGS_TOKEN} default/ratings\n{MONGODB_TOKEN} default/mongodb\n"),
        "tokens",
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ca_addr = listener.local_addr().unwrap().to_string();
    let server = CaServer::new(
        authority,
        Arc::new(tokens),
        TtlPolicy::default(),
        Arc::new(CaStats::default()),
    );
    let (stop, mut rx) = watch::channel(false);
    tokio::spawn(server.serve(listener, async move {
        let _ = rx.wait_for(|&s| s).await;
    }));
    Mesh {
        ca_addr,
        bundle,
        _stop_ca: stop,
    }
}

/// A workload certificate from the CA, kept fresh by a rotator until the test ends.
struct Workload {
    store: Arc<CertStore>,
    rotation: Arc<RotationStats>,
    _stop: watch::Sender<bool>,
}

async fn workload(mesh: &Mesh, sa: &str, token: &str, ttl: Option<Duration>) -> Workload {
    let store = Arc::new(CertStore::new());
    let rotation = Arc::new(RotationStats::default());
    let rotator = Rotator::new(
        CaClient::lazy(&mesh.ca_addr, token).unwrap(),
        id(sa),
        ttl,
        Arc::clone(&store),
        mesh.bundle.clone(),
        Arc::clone(&rotation),
    )
    .with_backoff(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    });
    rotator.initial(Duration::from_secs(10)).await.unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(rotator.run(rx));
    Workload {
        store,
        rotation,
        _stop: stop,
    }
}

struct Sidecar {
    addr: SocketAddr,
    reports: Arc<Collect>,
    stats: Arc<ProxyStats>,
    _stop: watch::Sender<bool>,
}

async fn sidecar(upstream: SocketAddr, kind: ReporterKind, tls: ListenerTls) -> Sidecar {
    let mut config = ListenerConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    config.connect_timeout = Duration::from_secs(5);
    let reports = Arc::new(Collect::default());
    let stats = Arc::new(ProxyStats::default());
    let identity = Arc::new(Identity {
        kind,
        ..Identity::default()
    });
    let proxy = Proxy::bind(config, identity, reports.clone(), stats.clone())
        .await
        .unwrap()
        .with_tls(tls);
    let addr = proxy.local_addr();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(proxy.run(rx, Duration::from_secs(5)));
    Sidecar {
        addr,
        reports,
        stats,
        _stop: stop,
    }
}

fn inbound(mesh: &Mesh, w: &Workload, mode: PeerAuthentication, sa: &str) -> ListenerTls {
    ListenerTls {
        inbound: Some(InboundTls {
            mode,
            config: server_config(
                &mesh.bundle,
                Arc::clone(&w.store),
                ExpectedPeer::TrustDomain("cluster.local".into()),
            )
            .unwrap(),
            handshake_timeout: Duration::from_secs(5),
            detect_timeout: Duration::from_millis(500),
        }),
        upstream: None,
        local_principal: Some(Arc::from(id(sa).principal())),
    }
}

fn outbound(
    bundle: &TrustBundle,
    store: &Arc<CertStore>,
    server_sa: &str,
    sa: &str,
) -> ListenerTls {
    ListenerTls {
        inbound: None,
        upstream: Some(
            client_config(
                bundle,
                Arc::clone(store),
                ExpectedPeer::OneOf(vec![id(server_sa)]),
            )
            .unwrap(),
        ),
        local_principal: Some(Arc::from(id(sa).principal())),
    }
}

/// An echo server that counts the connections it accepted.
async fn echo() -> (SocketAddr, Arc<AtomicU64>) {
    let accepted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&accepted);
    let addr = support::server(move |mut s| {
        count.fetch_add(1, Ordering::Relaxed);
        async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        }
    })
    .await;
    (addr, accepted)
}

/// Sends `payload`, half-closes, and returns everything read back until EOF.
async fn round_trip(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    let (mut r, mut w) = s.split();
    let write = async {
        w.write_all(payload).await?;
        w.shutdown().await
    };
    let mut back = Vec::new();
    let (written, read) = tokio::join!(write, r.read_to_end(&mut back));
    // A refused connection may fail either way; what came back is what matters.
    let _ = written;
    read.map(|_| back)
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn text(report: &ConnectionReport, name: &str) -> Option<String> {
    let schema = ReportSchema::istio();
    let bag = report.to_bag(&schema);
    bag.get(schema.manifest().id(name).unwrap())
        .map(|v| match v {
            Value::Bool(b) => b.to_string(),
            other => other.to_string(),
        })
}

async fn closes(reports: &Collect, n: usize) -> Vec<ConnectionReport> {
    eventually(LONG, || {
        let c = reports.closes();
        (c.len() >= n).then_some(c)
    })
    .await
}

#[tokio::test]
async fn two_sidecars_carry_exact_bytes_over_mtls_with_both_principals() {
    let mesh = start_ca().await;
    let mongodb = workload(&mesh, "mongodb", MONGODB_TOKEN, None).await;
    let ratings = workload(&mesh, "ratings", RATINGS_TOKEN, None).await;
    let (db, _) = echo().await;
    let server = sidecar(
        db,
        ReporterKind::Inbound,
        inbound(&mesh, &mongodb, PeerAuthentication::Strict, "mongodb"),
    )
    .await;
    let client = sidecar(
        server.addr,
        ReporterKind::Outbound,
        outbound(&mesh.bundle, &ratings.store, "mongodb", "ratings"),
    )
    .await;

    let data = payload(1_000_003);
    let back = round_trip(client.addr, &data).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");

    for (side, reports) in [("server", &server.reports), ("client", &client.reports)] {
        let close = closes(reports, 1).await.pop().unwrap();
        let all = reports.of(&close.connection_id);
        assert_eq!(check_connection(&all), (1_000_003, 1_000_003), "{side}");
        for r in &all {
            assert_eq!(
                text(r, "connection.mtls").as_deref(),
                Some("true"),
                "{side}"
            );
            assert_eq!(
                text(r, "source.principal").as_deref(),
                Some("cluster.local/ns/default/sa/ratings"),
                "{side}"
            );
            assert_eq!(
                text(r, "destination.principal").as_deref(),
                Some("cluster.local/ns/default/sa/mongodb"),
                "{side}"
            );
        }
        assert_eq!(close.event, ConnectionEvent::Close);
        assert_eq!(close.error, None, "{side}");
    }
    assert_eq!(server.stats.tls.inbound_mtls.load(Ordering::Relaxed), 1);
    assert_eq!(client.stats.tls.upstream_mtls.load(Ordering::Relaxed), 1);
    let mut metrics = String::new();
    server.stats.render_prometheus(&mut metrics);
    assert!(metrics.contains("meshmeter_proxy_mtls_connections_total{side=\"inbound\"} 1\n"));
}

#[tokio::test]
async fn strict_refuses_plaintext_and_forwards_nothing() {
    let mesh = start_ca().await;
    let mongodb = workload(&mesh, "mongodb", MONGODB_TOKEN, None).await;
    let (db, accepted) = echo().await;
    let server = sidecar(
        db,
        ReporterKind::Inbound,
        inbound(&mesh, &mongodb, PeerAuthentication::Strict, "mongodb"),
    )
    .await;

    let back = round_trip(server.addr, b"db.ratings.find({id: 1})\n").await;
    // At most a TLS alert record (content type 21) comes back, never the echo.
    assert!(
        back.map_or(true, |b| b.is_empty() || (b[0] == 0x15 && b.len() <= 7)),
        "plaintext got an answer"
    );
    eventually(LONG, || {
        (server.stats.tls.inbound_refused(HandshakeFailure::NotTls) == 1).then_some(())
    })
    .await;
    assert_eq!(accepted.load(Ordering::Relaxed), 0);
    assert!(server.reports.all().is_empty());
}

#[tokio::test]
async fn permissive_serves_plaintext_and_mtls_on_one_port() {
    let mesh = start_ca().await;
    let mongodb = workload(&mesh, "mongodb", MONGODB_TOKEN, None).await;
    let ratings = workload(&mesh, "ratings", RATINGS_TOKEN, None).await;
    let (db, accepted) = echo().await;
    let server = sidecar(
        db,
        ReporterKind::Inbound,
        inbound(&mesh, &mongodb, PeerAuthentication::Permissive, "mongodb"),
    )
    .await;
    let client = sidecar(
        server.addr,
        ReporterKind::Outbound,
        outbound(&mesh.bundle, &ratings.store, "mongodb", "ratings"),
    )
    .await;

    let plain = payload(70_001);
    assert!(round_trip(server.addr, &plain).await.unwrap() == plain);
    let secure = payload(90_001);
    assert!(round_trip(client.addr, &secure).await.unwrap() == secure);

    let reports = closes(&server.reports, 2).await;
    let mut seen: Vec<(u64, Option<String>, Option<String>)> = reports
        .iter()
        .map(|r| {
            (
                r.bytes.received_total,
                text(r, "connection.mtls"),
                text(r, "source.principal"),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (70_001, Some("false".into()), None),
            (
                90_001,
                Some("true".into()),
                Some("cluster.local/ns/default/sa/ratings".into())
            ),
        ]
    );
    assert_eq!(
        server.stats.tls.inbound_plaintext.load(Ordering::Relaxed),
        1
    );
    assert_eq!(server.stats.tls.inbound_mtls.load(Ordering::Relaxed), 1);
    assert_eq!(accepted.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_sidecar_with_a_certificate_from_another_ca_is_refused() {
    let mesh = start_ca().await;
    let mongodb = workload(&mesh, "mongodb", MONGODB_TOKEN, None).await;
    let (db, accepted) = echo().await;
    let server = sidecar(
        db,
        ReporterKind::Inbound,
        inbound(&mesh, &mongodb, PeerAuthentication::Strict, "mongodb"),
    )
    .await;

    // An impostor mesh: same trust domain and name, another root. It trusts the real root
    // too, so that it gets as far as presenting its certificate.
    let other = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let store = Arc::new(CertStore::with(
        other
            .issue_workload(&id("ratings"), Duration::from_secs(600))
            .unwrap(),
    ));
    let both = TrustBundle::new(
        vec![mesh.bundle.certificates()[0].clone(), other.root().clone()],
        "both roots",
    )
    .unwrap();
    let client = sidecar(
        server.addr,
        ReporterKind::Outbound,
        outbound(&both, &store, "mongodb", "ratings"),
    )
    .await;

    let back = round_trip(client.addr, &payload(10_000)).await;
    assert!(
        back.map_or(true, |b| b.is_empty()),
        "the impostor got an answer"
    );
    eventually(LONG, || {
        (server
            .stats
            .tls
            .inbound_refused(HandshakeFailure::UnknownCa)
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(accepted.load(Ordering::Relaxed), 0);
    assert!(server.reports.all().is_empty());
}

#[tokio::test]
async fn rotation_every_few_seconds_under_continuous_traffic_loses_nothing() {
    let mesh = start_ca().await;
    let ttl = Some(Duration::from_secs(3));
    let mongodb = workload(&mesh, "mongodb", MONGODB_TOKEN, ttl).await;
    let ratings = workload(&mesh, "ratings", RATINGS_TOKEN, ttl).await;
    let (db, _) = echo().await;
    let server = sidecar(
        db,
        ReporterKind::Inbound,
        inbound(&mesh, &mongodb, PeerAuthentication::Strict, "mongodb"),
    )
    .await;
    let client = sidecar(
        server.addr,
        ReporterKind::Outbound,
        outbound(&mesh.bundle, &ratings.store, "mongodb", "ratings"),
    )
    .await;

    // One long-lived connection streams through every rotation...
    let mut long = TcpStream::connect(client.addr).await.unwrap();
    let chunk = payload(4096);
    let mut long_bytes = 0u64;
    // ...while new connections keep opening, each needing a handshake with whatever
    // certificates are current.
    let mut short = 0u64;
    let start = tokio::time::Instant::now();
    while mongodb.rotation.installed.load(Ordering::Relaxed) < 4
        || ratings.rotation.installed.load(Ordering::Relaxed) < 4
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "rotations too slow"
        );
        long.write_all(&chunk).await.unwrap();
        let mut back = vec![0u8; chunk.len()];
        long.read_exact(&mut back).await.unwrap();
        assert!(back == chunk);
        long_bytes += chunk.len() as u64;
        let data = payload(1000 + short as usize);
        assert!(
            round_trip(client.addr, &data).await.unwrap() == data,
            "connection {short}"
        );
        short += 1;
    }
    long.shutdown().await.unwrap();
    let mut rest = Vec::new();
    long.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    let n = short as usize + 1;
    for (side, reports) in [("server", &server.reports), ("client", &client.reports)] {
        let all = closes(reports, n).await;
        assert_eq!(all.len(), n, "{side}");
        let mut totals: Vec<u64> = all.iter().map(|r| r.bytes.received_total).collect();
        totals.sort();
        let mut want: Vec<u64> = (0..short).map(|i| 1000 + i).chain([long_bytes]).collect();
        want.sort();
        assert_eq!(totals, want, "{side}");
        assert!(
            all.iter().all(|r| r.error.is_none() && r.tls.is_some()),
            "{side}"
        );
    }
    assert_eq!(
        server.stats.tls.inbound_mtls.load(Ordering::Relaxed),
        short + 1
    );
    assert_eq!(mongodb.rotation.failures.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_sidecar_with_an_expired_certificate_is_refused() {
    let (db, accepted) = echo().await;
    // The mesh's CA, signing directly: the CSR API grants no lifetime in the past.
    let authority = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let pending = meshmeter_certs::PendingKey::generate(id("ratings")).unwrap();
    let now = std::time::SystemTime::now();
    let issued = authority
        .issue_with_validity(
            &pending.csr_der().unwrap(),
            &id("ratings"),
            now - Duration::from_secs(120),
            now - Duration::from_secs(60),
        )
        .unwrap();
    let expired = Arc::new(CertStore::with(
        pending.into_workload_cert(issued.chain).unwrap(),
    ));
    let bundle = TrustBundle::new(vec![authority.root().clone()], "expired's root").unwrap();
    let server_for_expired = sidecar(
        db,
        ReporterKind::Inbound,
        ListenerTls {
            inbound: Some(InboundTls {
                mode: PeerAuthentication::Strict,
                config: server_config(
                    &bundle,
                    Arc::new(CertStore::with(
                        authority
                            .issue_workload(&id("mongodb"), Duration::from_secs(600))
                            .unwrap(),
                    )),
                    ExpectedPeer::TrustDomain("cluster.local".into()),
                )
                .unwrap(),
                handshake_timeout: Duration::from_secs(5),
                detect_timeout: Duration::from_millis(500),
            }),
            upstream: None,
            local_principal: None,
        },
    )
    .await;
    let client = sidecar(
        server_for_expired.addr,
        ReporterKind::Outbound,
        outbound(&bundle, &expired, "mongodb", "ratings"),
    )
    .await;
    let back = round_trip(client.addr, &payload(5_000)).await;
    assert!(
        back.map_or(true, |b| b.is_empty()),
        "the expired certificate got an answer"
    );
    eventually(LONG, || {
        (server_for_expired
            .stats
            .tls
            .inbound_refused(HandshakeFailure::Expired)
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(accepted.load(Ordering::Relaxed), 0);
    assert!(server_for_expired.reports.all().is_empty());
}

#[tokio::test]
async fn an_upstream_with_the_wrong_identity_is_refused_by_the_client_sidecar() {
    let mesh = start_ca().await;
    // The upstream proves "ratings", the client sidecar expects "mongodb".
    let impostor = workload(&mesh, "ratings", RATINGS_TOKEN, None).await;
    let ratings = workload(&mesh, "ratings", RATINGS_TOKEN, None).await;
    let (db, accepted) = echo().await;
    let server = sidecar(
        db,
        ReporterKind::Inbound,
        inbound(&mesh, &impostor, PeerAuthentication::Strict, "ratings"),
    )
    .await;
    let client = sidecar(
        server.addr,
        ReporterKind::Outbound,
        outbound(&mesh.bundle, &ratings.store, "mongodb", "ratings"),
    )
    .await;

    let back = round_trip(client.addr, &payload(5_000)).await;
    assert!(back.map_or(true, |b| b.is_empty()));
    eventually(LONG, || {
        (client
            .stats
            .tls
            .upstream_refused(HandshakeFailure::BadIdentity)
            == 1)
            .then_some(())
    })
    .await;
    let closes = closes(&client.reports, 1).await;
    assert_eq!(closes[0].error.map(|e| e.as_str()), Some("UF"));
    assert_eq!(closes[0].bytes.received_total, 0);
    assert_eq!(accepted.load(Ordering::Relaxed), 0);
}
