//! Mutual TLS handshakes over real loopback sockets between configurations of this crate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshmeter_certs::rustls::pki_types::CertificateDer;
use meshmeter_certs::rustls::{ClientConfig, ServerConfig};
use meshmeter_certs::{
    client_config, peer_identity, server_config, Authority, CertStore, ExpectedPeer,
    HandshakeFailure, PendingKey, SharedBundle, SpiffeId, TrustBundle, WorkloadCert,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const HOUR: Duration = Duration::from_secs(3600);

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "default", sa).unwrap()
}

fn domain() -> ExpectedPeer {
    ExpectedPeer::TrustDomain("cluster.local".into())
}

struct Outcome {
    /// What the server saw: the client's identity, or why the handshake failed.
    server: Result<Option<SpiffeId>, HandshakeFailure>,
    /// What the client saw: the server's identity and the certificate it presented.
    client: Result<(Option<SpiffeId>, CertificateDer<'static>), HandshakeFailure>,
}

/// One connection: the client sends "ping", the server answers "pong" after verifying.
async fn connect(
    bundle: &TrustBundle,
    server_store: Arc<CertStore>,
    client_store: Arc<CertStore>,
    expected_server: ExpectedPeer,
) -> Outcome {
    connect_with(
        server_config(bundle, server_store, domain()).unwrap(),
        client_config(bundle, client_store, expected_server).unwrap(),
    )
    .await
}

/// [`connect`] with configurations made beforehand.
async fn connect_with(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match acceptor.accept(tcp).await {
            Ok(mut tls) => {
                let peer = peer_identity(tls.get_ref().1.peer_certificates());
                let mut buf = [0u8; 4];
                tls.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"ping");
                tls.write_all(b"pong").await.unwrap();
                tls.shutdown().await.unwrap();
                Ok(peer)
            }
            Err(e) => Err(HandshakeFailure::of_io(&e)),
        }
    });
    let connector = TlsConnector::from(client);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = async {
        let mut tls = connector
            .connect(meshmeter_certs::server_name(), tcp)
            .await
            .map_err(|e| HandshakeFailure::of_io(&e))?;
        let certs = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
        // In TLS 1.3 the server judges the client's certificate after the client finished:
        // a refusal shows up on the first read.
        tls.write_all(b"ping")
            .await
            .map_err(|e| HandshakeFailure::of_io(&e))?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf)
            .await
            .map_err(|e| HandshakeFailure::of_io(&e))?;
        assert_eq!(buf, b"pong");
        let certs = certs.unwrap_or_default();
        Ok((peer_identity(Some(&certs)), certs[0].clone().into_owned()))
    }
    .await;
    Outcome {
        server: server.await.unwrap(),
        client,
    }
}

fn workload(ca: &Authority, sa: &str) -> Arc<CertStore> {
    Arc::new(CertStore::with(ca.issue_workload(&id(sa), HOUR).unwrap()))
}

#[tokio::test]
async fn both_peers_learn_each_others_identity() {
    let ca = Authority::generate_root("cluster.local", HOUR).unwrap();
    let bundle = TrustBundle::new(vec![ca.root().clone()], "root").unwrap();
    let out = connect(
        &bundle,
        workload(&ca, "mongodb"),
        workload(&ca, "ratings"),
        ExpectedPeer::OneOf(vec![id("mongodb")]),
    )
    .await;
    assert_eq!(out.server, Ok(Some(id("ratings"))));
    let (server_id, _) = out.client.unwrap();
    assert_eq!(server_id, Some(id("mongodb")));
    assert_eq!(
        id("ratings").principal(),
        "cluster.local/ns/default/sa/ratings"
    );
}

#[tokio::test]
async fn an_intermediate_ca_from_pem_issues_certificates_peers_verify_against_the_root() {
    let org_root = Authority::generate_root("cluster.local", HOUR).unwrap();
    let intermediate = org_root.generate_intermediate(HOUR).unwrap();
    let loaded = Authority::from_pem(
        &intermediate.chain_pem(),
        intermediate.key_pem(),
        "cluster.local",
        "ca-cert.pem",
    )
    .unwrap();
    assert_eq!(loaded.root(), org_root.root());
    let bundle = TrustBundle::from_pem(&org_root.chain_pem(), "root.pem").unwrap();
    let out = connect(
        &bundle,
        workload(&loaded, "mongodb"),
        workload(&loaded, "ratings"),
        domain(),
    )
    .await;
    assert_eq!(out.server, Ok(Some(id("ratings"))));
    assert_eq!(out.client.unwrap().0, Some(id("mongodb")));
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let ca = Authority::generate_root("cluster.local", HOUR).unwrap();
    let bundle = TrustBundle::new(vec![ca.root().clone()], "root").unwrap();
    let out = connect(
        &bundle,
        workload(&ca, "mongodb"),
        Arc::new(CertStore::new()),
        domain(),
    )
    .await;
    assert_eq!(out.server, Err(HandshakeFailure::NoCertificate));
    assert!(out.client.is_err());
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let ca = Authority::generate_root("cluster.local", HOUR).unwrap();
    let other = Authority::generate_root("cluster.local", HOUR).unwrap();
    let bundle = TrustBundle::new(vec![ca.root().clone()], "root").unwrap();
    // The client trusts both roots so that it gets as far as presenting its certificate.
    let client_bundle =
        TrustBundle::new(vec![ca.root().clone(), other.root().clone()], "roots").unwrap();
    let server_store = workload(&ca, "mongodb");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_config(&bundle, server_store, domain()).unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor
            .accept(tcp)
            .await
            .map(drop)
            .map_err(|e| HandshakeFailure::of_io(&e))
    });
    let connector = TlsConnector::from(
        client_config(&client_bundle, workload(&other, "ratings"), domain()).unwrap(),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let _ = connector.connect(meshmeter_certs::server_name(), tcp).await;
    assert_eq!(server.await.unwrap(), Err(HandshakeFailure::UnknownCa));
}

/// Configurations built on a shared bundle follow it: a root added is trusted, a root
/// removed is not, on both sides, without building them again.
#[tokio::test]
async fn configurations_on_a_shared_bundle_follow_its_replacement() {
    let old = Authority::generate_root("cluster.local", HOUR).unwrap();
    let new = Authority::generate_root("cluster.local", HOUR).unwrap();
    let bundle = |cas: &[&Authority]| {
        TrustBundle::new(cas.iter().map(|ca| ca.root().clone()).collect(), "roots").unwrap()
    };
    let shared = SharedBundle::new(bundle(&[&old]));
    // A server and a client under the old root, and a client under the new one.
    let server = server_config(&shared, workload(&old, "mongodb"), domain()).unwrap();
    let old_client = client_config(&shared, workload(&old, "ratings"), domain()).unwrap();
    let new_client = client_config(&shared, workload(&new, "reviews"), domain()).unwrap();

    let outcome = connect_with(Arc::clone(&server), Arc::clone(&new_client)).await;
    assert_eq!(outcome.server.unwrap_err(), HandshakeFailure::UnknownCa);
    assert!(outcome.client.is_err());

    assert!(shared.replace(bundle(&[&old, &new])));
    assert!(
        !shared.replace(bundle(&[&old, &new])),
        "the same roots again"
    );
    assert_eq!(shared.current().certificates().len(), 2);
    let outcome = connect_with(Arc::clone(&server), Arc::clone(&new_client)).await;
    assert_eq!(outcome.server.unwrap(), Some(id("reviews")));
    assert_eq!(outcome.client.unwrap().0, Some(id("mongodb")));

    // The old root removed: the server's own certificate (old root) is refused by the client,
    // and a client certificate under the old root by a server under the new one.
    assert!(shared.replace(bundle(&[&new])));
    let outcome = connect_with(Arc::clone(&server), Arc::clone(&new_client)).await;
    assert_eq!(outcome.client.unwrap_err(), HandshakeFailure::UnknownCa);
    let new_server = server_config(&shared, workload(&new, "mongodb"), domain()).unwrap();
    let outcome = connect_with(new_server, old_client).await;
    assert_eq!(outcome.server.unwrap_err(), HandshakeFailure::UnknownCa);
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let ca = Authority::generate_root("cluster.local", HOUR).unwrap();
    let bundle = TrustBundle::new(vec![ca.root().clone()], "root").unwrap();
    let pending = PendingKey::generate(id("ratings")).unwrap();
    let now = SystemTime::now();
    let issued = ca
        .issue_with_validity(
            &pending.csr_der().unwrap(),
            &id("ratings"),
            now - Duration::from_secs(50),
            now - Duration::from_secs(10),
        )
        .unwrap();
    let expired: WorkloadCert = pending.into_workload_cert(issued.chain).unwrap();
    let out = connect(
        &bundle,
        workload(&ca, "mongodb"),
        Arc::new(CertStore::with(expired)),
        domain(),
    )
    .await;
    assert_eq!(out.server, Err(HandshakeFailure::Expired));
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused_by_the_client() {
    let ca = Authority::generate_root("cluster.local", HOUR).unwrap();
    let bundle = TrustBundle::new(vec![ca.root().clone()], "root").unwrap();
    let out = connect(
        &bundle,
        workload(&ca, "impostor"),
        workload(&ca, "ratings"),
        ExpectedPeer::OneOf(vec![id("mongodb")]),
    )
    .await;
    assert_eq!(out.client.unwrap_err(), HandshakeFailure::BadIdentity);
    assert_eq!(out.server, Err(HandshakeFailure::PeerRefused));
}

#[tokio::test]
async fn new_handshakes_use_the_certificate_installed_last() {
    let ca = Authority::generate_root("cluster.local", HOUR).unwrap();
    let bundle = TrustBundle::new(vec![ca.root().clone()], "root").unwrap();
    let server_store = workload(&ca, "mongodb");
    let client_store = workload(&ca, "ratings");
    let first = connect(
        &bundle,
        Arc::clone(&server_store),
        Arc::clone(&client_store),
        domain(),
    )
    .await
    .client
    .unwrap()
    .1;
    server_store.install(ca.issue_workload(&id("mongodb"), HOUR).unwrap());
    let second = connect(&bundle, Arc::clone(&server_store), client_store, domain())
        .await
        .client
        .unwrap()
        .1;
    assert_ne!(first, second);
    assert_eq!(
        second,
        server_store.current().unwrap().certified_key().cert[0]
    );
}

#[test]
fn the_ca_signs_only_the_callers_identity() {
    let ca = Authority::generate_root("cluster.local", HOUR).unwrap();
    let pending = PendingKey::generate(id("ratings")).unwrap();
    let csr = pending.csr_der().unwrap();
    let e = ca.issue(&csr, &id("mongodb"), HOUR).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the CSR asks for 'spiffe://cluster.local/ns/default/sa/ratings', but the caller is 'spiffe://cluster.local/ns/default/sa/mongodb'"
    );
    let foreign = SpiffeId::new("example.org", "default", "ratings").unwrap();
    assert!(ca.issue(&csr, &foreign, HOUR).is_err());
    let mut tampered = csr.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        ca.issue(&tampered, &id("ratings"), HOUR),
        Err(meshmeter_certs::IssueError::BadCsr(_))
    ));
    let issued = ca
        .issue(&csr, &id("ratings"), Duration::from_secs(30))
        .unwrap();
    let validity = meshmeter_certs::validity_of(&issued.chain[0]).unwrap();
    // 30 s plus a 3 s backdate for clock skew; X.509 times have whole seconds.
    let lifetime = validity.lifetime().as_secs();
    assert!((32..=34).contains(&lifetime), "lifetime {lifetime}");
    assert_eq!(issued.chain.len(), 1);
    assert_eq!(&issued.root, ca.root());
}
