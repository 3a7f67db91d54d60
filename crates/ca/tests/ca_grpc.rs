//! The CSR service over a real loopback socket: issuance, refusals, rotation.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_ca::proto::CertificateRequest;
use meshmeter_ca::{
    Backoff, BootstrapTokens, CaClient, CaClientError, CaServer, CaStats, Refusal, RotationStats,
    Rotator, TtlPolicy,
};
use meshmeter_certs::{Authority, CertStore, PendingKey, SpiffeId, TrustBundle};
use tokio::net::TcpListener;
use tokio::sync::watch;

const RATINGS_TOKEN: &str = "ratings-token-0123456789";

struct Ca {
    addr: String,
    root: meshmeter_certs::rustls::pki_types::CertificateDer<'static>,
    stats: Arc<CaStats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_ca(listener: Option<TcpListener>, authority: Authority) -> Ca {
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let addr = listener.local_addr().unwrap().to_string();
    let tokens =
        BootstrapTokens::parse(&format!("{RATINGS_TOKEN} default/ratings\n"), "tokens").unwrap();
    let stats = Arc::new(CaStats::default());
    let root = authority.root().clone();
    let server = CaServer::new(
        authority,
        Arc::new(tokens),
        TtlPolicy::default(),
        Arc::clone(&stats),
    );
    let (stop, mut rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = rx.wait_for(|&s| s).await;
            })
            .await
            .unwrap();
    });
    Ca {
        addr,
        root,
        stats,
        stop,
        task,
    }
}

fn ratings() -> SpiffeId {
    SpiffeId::new("cluster.local", "default", "ratings").unwrap()
}

#[tokio::test]
async fn a_caller_with_a_valid_token_gets_a_certificate_for_its_own_identity() {
    let ca = start_ca(
        None,
        Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap(),
    )
    .await;
    let client = CaClient::lazy(&ca.addr, RATINGS_TOKEN).unwrap();
    let issued = client
        .issue(
            PendingKey::generate(ratings()).unwrap(),
            Some(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    assert_eq!(issued.cert.identity(), &ratings());
    assert_eq!(issued.root, ca.root);
    let lifetime = issued.cert.validity().lifetime().as_secs();
    assert!((600..=661).contains(&lifetime), "lifetime {lifetime}");
    assert_eq!(ca.stats.issued.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn unknown_tokens_and_other_identities_are_refused_and_counted() {
    let ca = start_ca(
        None,
        Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap(),
    )
    .await;
    let stranger = CaClient::lazy(&ca.addr, "not-a-known-token-at-all").unwrap();
    let e = stranger
        .issue(PendingKey::generate(ratings()).unwrap(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CaClientError::Status { code: tonic::Code::Unauthenticated, message } if message == "the token is not valid"),
        "{e}"
    );
    // Ratings' token, asking for mongodb's identity.
    let client = CaClient::lazy(&ca.addr, RATINGS_TOKEN).unwrap();
    let mongodb = SpiffeId::new("cluster.local", "default", "mongodb").unwrap();
    let e = client
        .issue(PendingKey::generate(mongodb).unwrap(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            CaClientError::Status {
                code: tonic::Code::PermissionDenied,
                ..
            }
        ),
        "{e}"
    );
    let e = client
        .create_certificate(CertificateRequest {
            csr: "garbage".into(),
            validity_duration: 0,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            CaClientError::Status {
                code: tonic::Code::InvalidArgument,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(ca.stats.refused(Refusal::Unauthenticated), 1);
    assert_eq!(ca.stats.refused(Refusal::PermissionDenied), 1);
    assert_eq!(ca.stats.refused(Refusal::BadRequest), 1);
    assert_eq!(ca.stats.issued.load(Ordering::Relaxed), 0);
    let mut text = String::new();
    ca.stats.render_prometheus(&mut text);
    assert!(text.contains("meshmeter_ca_requests_refused_total{reason=\"permission_denied\"} 1\n"));
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn rotation_renews_short_lived_certificates_and_survives_a_ca_outage() {
    let authority = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let chain = authority.chain_pem();
    let key = authority.key_pem().to_owned();
    let ca = start_ca(None, authority).await;
    let bundle = TrustBundle::new(vec![ca.root.clone()], "root").unwrap();
    let store = Arc::new(CertStore::new());
    let stats = Arc::new(RotationStats::default());
    let rotator = Rotator::new(
        CaClient::lazy(&ca.addr, RATINGS_TOKEN).unwrap(),
        ratings(),
        Some(Duration::from_secs(3)),
        Arc::clone(&store),
        bundle,
        Arc::clone(&stats),
    )
    .with_backoff(Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
    });
    rotator.initial(Duration::from_secs(5)).await.unwrap();
    let first = store.current().unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let running = tokio::spawn(rotator.run(stop_rx));
    eventually("a rotation", || {
        stats.installed.load(Ordering::Relaxed) >= 2
    })
    .await;
    assert_ne!(
        store.current().unwrap().certified_key().cert[0],
        first.certified_key().cert[0]
    );

    // The CA goes away: attempts fail and are counted, the certificate in place stays.
    let addr = ca.addr.clone();
    let _ = ca.stop.send(true);
    ca.task.await.unwrap();
    eventually("a failed attempt", || {
        stats.failures.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(stats.ca_unavailable.load(Ordering::Relaxed), 1);
    assert!(store.current().is_some());

    // The CA comes back on the same address (same key): rotation resumes.
    let installed = stats.installed.load(Ordering::Relaxed);
    let listener = TcpListener::bind(&addr).await.unwrap();
    let again = Authority::from_pem(&chain, &key, "cluster.local", "restarted CA").unwrap();
    let _ca = start_ca(Some(listener), again).await;
    eventually("rotation after the outage", || {
        stats.installed.load(Ordering::Relaxed) > installed
    })
    .await;
    assert_eq!(stats.ca_unavailable.load(Ordering::Relaxed), 0);
    let _ = stop.send(true);
    running.await.unwrap();
}

#[tokio::test]
async fn over_tls_the_caller_verifies_the_ca_before_sending_its_token() {
    use meshmeter_certs::{service_client_config, service_server_config, ExpectedPeer};
    let authority = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let ca_id = meshmeter_ca::ca_identity("cluster.local").unwrap();
    let serving = Arc::new(CertStore::with(
        authority
            .issue_workload(&ca_id, Duration::from_secs(3600))
            .unwrap(),
    ));
    let bundle = TrustBundle::new(vec![authority.root().clone()], "root").unwrap();
    let tokens =
        BootstrapTokens::parse(&format!("{RATINGS_TOKEN} default/ratings\n"), "tokens").unwrap();
    let stats = Arc::new(CaStats::default());
    let server = CaServer::new(
        authority,
        Arc::new(tokens),
        TtlPolicy::default(),
        Arc::clone(&stats),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (_stop, mut rx) = watch::channel(false);
    let config = service_server_config(serving).unwrap();
    tokio::spawn(server.serve_tls(listener, config, async move {
        let _ = rx.wait_for(|&s| s).await;
    }));

    let client = CaClient::lazy_tls(
        &addr,
        RATINGS_TOKEN,
        service_client_config(&bundle, ExpectedPeer::OneOf(vec![ca_id])).unwrap(),
    )
    .unwrap();
    let issued = client
        .issue(PendingKey::generate(ratings()).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(issued.cert.identity(), &ratings());

    // A caller that trusts another root never gets as far as sending its token.
    let other = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let other_bundle = TrustBundle::new(vec![other.root().clone()], "other root").unwrap();
    let wary = CaClient::lazy_tls(
        &addr,
        RATINGS_TOKEN,
        service_client_config(
            &other_bundle,
            ExpectedPeer::TrustDomain("cluster.local".into()),
        )
        .unwrap(),
    )
    .unwrap();
    let e = wary
        .issue(PendingKey::generate(ratings()).unwrap(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            CaClientError::Status {
                code: tonic::Code::Unavailable,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(stats.issued.load(Ordering::Relaxed), 1);
    assert_eq!(stats.refused(Refusal::Unauthenticated), 0);
}

#[tokio::test]
async fn a_token_file_is_read_again_before_every_request() {
    let ca = start_ca(
        None,
        Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap(),
    )
    .await;
    let file = std::env::temp_dir().join(format!("meshmeter-ca-token-{}", std::process::id()));
    std::fs::write(&file, "an-expired-token-0123456789\n").unwrap();
    let client = CaClient::lazy(&ca.addr, "an-expired-token-0123456789")
        .unwrap()
        .reread_token_from(file.clone());
    let e = client
        .issue(PendingKey::generate(ratings()).unwrap(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            CaClientError::Status {
                code: tonic::Code::Unauthenticated,
                ..
            }
        ),
        "{e}"
    );
    // The token replaced in place, as the kubelet does with a projected token.
    std::fs::write(&file, format!("{RATINGS_TOKEN}\n")).unwrap();
    let issued = client
        .issue(PendingKey::generate(ratings()).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(issued.cert.identity(), &ratings());
    // Gone: the last token given at construction is sent again.
    std::fs::remove_file(&file).unwrap();
    let e = client
        .issue(PendingKey::generate(ratings()).unwrap(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            CaClientError::Status {
                code: tonic::Code::Unauthenticated,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(ca.stats.refused(Refusal::Unauthenticated), 2);
    assert_eq!(ca.stats.issued.load(Ordering::Relaxed), 1);
}
