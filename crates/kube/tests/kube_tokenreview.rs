//! The CA with the TokenReview authenticator, over real gRPC, against the stand-in API server.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_ca::{CaClient, CaClientError, CaServer, CaStats, Refusal, TtlPolicy};
use meshmeter_certs::{Authority, PendingKey, SpiffeId};
use meshmeter_kube::standin::StandIn;
use meshmeter_kube::TokenReviewer;
use tokio::net::TcpListener;
use tokio::sync::watch;

const RATINGS_TOKEN: &str = "projected-token-of-ratings";
const ADMIN_TOKEN: &str = "token-of-a-person";

struct Ca {
    addr: String,
    stats: Arc<CaStats>,
    _stop: watch::Sender<bool>,
}

async fn start_ca(reviewer: TokenReviewer) -> Ca {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stats = Arc::new(CaStats::default());
    let authority = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let server = CaServer::new(
        authority,
        Arc::new(reviewer),
        TtlPolicy::default(),
        Arc::clone(&stats),
    );
    let (stop, mut rx) = watch::channel(false);
    tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = rx.wait_for(|&s| s).await;
            })
            .await
            .unwrap();
    });
    Ca {
        addr,
        stats,
        _stop: stop,
    }
}

fn ratings() -> SpiffeId {
    SpiffeId::new("cluster.local", "default", "ratings").unwrap()
}

fn code(e: &CaClientError) -> Option<(tonic::Code, String)> {
    match e {
        CaClientError::Status { code, message } => Some((*code, message.clone())),
        _ => None,
    }
}

#[tokio::test]
async fn a_service_account_token_gets_its_own_identity_and_others_are_refused() {
    let api = StandIn::start().await;
    api.review_token(RATINGS_TOKEN, true, "system:serviceaccount:default:ratings");
    api.review_token(ADMIN_TOKEN, true, "kubernetes-admin");
    api.review_token("revoked-token", false, "");
    let ca = start_ca(TokenReviewer::new(api.client(), vec!["istio-ca".into()])).await;

    let issued = CaClient::lazy(&ca.addr, RATINGS_TOKEN)
        .unwrap()
        .issue(PendingKey::generate(ratings()).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(issued.cert.identity(), &ratings());
    assert_eq!(ca.stats.issued.load(Ordering::Relaxed), 1);

    // What the CA asked: the token, for the configured audience.
    let reviews: Vec<_> = api
        .posted()
        .into_iter()
        .filter(|(path, _)| path == "/apis/authentication.k8s.io/v1/tokenreviews")
        .collect();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].1["kind"], "TokenReview");
    assert_eq!(reviews[0].1["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(reviews[0].1["spec"]["token"], RATINGS_TOKEN);
    assert_eq!(
        reviews[0].1["spec"]["audiences"],
        serde_json::json!(["istio-ca"])
    );

    for (token, want) in [
        (
            "revoked-token",
            (tonic::Code::Unauthenticated, "the token is not valid"),
        ),
        (
            "never-issued-token",
            (tonic::Code::Unauthenticated, "the token is not valid"),
        ),
        (
            ADMIN_TOKEN,
            (
                tonic::Code::PermissionDenied,
                "'kubernetes-admin' is not a service account",
            ),
        ),
    ] {
        let e = CaClient::lazy(&ca.addr, token)
            .unwrap()
            .issue(PendingKey::generate(ratings()).unwrap(), None)
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some((want.0, want.1.to_owned())), "{token}: {e}");
    }
    // Ratings' valid token, asking for mongodb's identity.
    let mongodb = SpiffeId::new("cluster.local", "default", "mongodb").unwrap();
    let e = CaClient::lazy(&ca.addr, RATINGS_TOKEN)
        .unwrap()
        .issue(PendingKey::generate(mongodb).unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(
        code(&e).map(|c| c.0),
        Some(tonic::Code::PermissionDenied),
        "{e}"
    );

    assert_eq!(ca.stats.refused(Refusal::Unauthenticated), 2);
    assert_eq!(ca.stats.refused(Refusal::PermissionDenied), 2);
    assert_eq!(ca.stats.issued.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn an_api_server_that_cannot_be_asked_makes_the_ca_unavailable() {
    let api = StandIn::start().await;
    api.review_token(RATINGS_TOKEN, true, "system:serviceaccount:default:ratings");
    let client = api.client();
    api.stop();
    let ca = start_ca(TokenReviewer::new(client, Vec::new())).await;
    let e = CaClient::lazy(&ca.addr, RATINGS_TOKEN)
        .unwrap()
        .issue(PendingKey::generate(ratings()).unwrap(), None)
        .await
        .unwrap_err();
    let (c, message) = code(&e).expect("a gRPC status");
    assert_eq!(c, tonic::Code::Unavailable, "{e}");
    assert!(
        message.starts_with("cannot check the token: TokenReview: "),
        "{message}"
    );
    assert_eq!(ca.stats.refused(Refusal::Unavailable), 1);
    assert_eq!(ca.stats.issued.load(Ordering::Relaxed), 0);
}
