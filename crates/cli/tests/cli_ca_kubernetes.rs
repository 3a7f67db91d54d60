//! `meshmeter ca --kubernetes --kubeconfig` against the stand-in API server: a projected
//! service-account token gets a certificate over TLS, other tokens are refused and counted,
//! and the reviews the CA posted ask for the configured audience; the root certificate is
//! published into the ConfigMap `meshmeter-ca-root` of every namespace, new ones included.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshmeter_ca::{CaClient, CaClientError};
use meshmeter_certs::{service_client_config, ExpectedPeer, PendingKey, SpiffeId, TrustBundle};
use meshmeter_kube::standin::StandIn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_meshmeter");

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> String {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_authenticates_projected_tokens_with_token_review() {
    let api = StandIn::start().await;
    api.review_token(
        "ratings-projected-token",
        true,
        "system:serviceaccount:default:ratings",
    );
    api.review_token("admin-token", true, "kubernetes-admin");
    for ns in ["default", "bookinfo"] {
        api.apply("namespaces", serde_json::json!({"metadata": {"name": ns}}));
    }
    let dir = std::env::temp_dir().join(format!("meshmeter-cli-ca-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig("ca-token")).unwrap();
    let root = dir.join("root.pem");
    let _ = std::fs::remove_file(&root);

    let (ca, admin) = (free_addr(), free_addr());
    let _ca = Process(
        Command::new(BIN)
            .args(["ca", "--kubernetes", "--token-audience", "istio-ca"])
            .args(["--kubeconfig".as_ref(), kubeconfig.as_os_str()])
            .args(["--listen", &ca, "--metrics-addr", &admin])
            .args(["--write-root-cert".as_ref(), root.as_os_str()])
            .env("MESHMETER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&admin, "/ready").await.is_none() {
        assert!(Instant::now() < deadline, "the CA is not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let bundle = TrustBundle::from_pem(&std::fs::read_to_string(&root).unwrap(), "root").unwrap();
    let ca_id = meshmeter_ca::ca_identity("cluster.local").unwrap();
    let tls = service_client_config(&bundle, ExpectedPeer::OneOf(vec![ca_id])).unwrap();
    let ratings = SpiffeId::new("cluster.local", "default", "ratings").unwrap();
    let issue = |token: &str| {
        let client = CaClient::lazy_tls(&ca, token, tls.clone()).unwrap();
        let key = PendingKey::generate(ratings.clone()).unwrap();
        async move { client.issue(key, None).await }
    };

    let issued = issue("ratings-projected-token").await.unwrap();
    assert_eq!(issued.cert.identity(), &ratings);
    for (token, want) in [
        ("unknown-token", tonic::Code::Unauthenticated),
        ("admin-token", tonic::Code::PermissionDenied),
    ] {
        match issue(token).await {
            Err(CaClientError::Status { code, .. }) => assert_eq!(code, want, "{token}"),
            other => panic!("{token}: {other:?}"),
        }
    }

    let reviews: Vec<_> = api
        .posted()
        .into_iter()
        .filter(|(path, _)| path == "/apis/authentication.k8s.io/v1/tokenreviews")
        .map(|(_, review)| {
            (
                review["spec"]["token"].as_str().unwrap().to_owned(),
                review["spec"]["audiences"].clone(),
            )
        })
        .collect();
    let audiences = serde_json::json!(["istio-ca"]);
    assert_eq!(
        reviews,
        [
            ("ratings-projected-token".to_owned(), audiences.clone()),
            ("unknown-token".to_owned(), audiences.clone()),
            ("admin-token".to_owned(), audiences),
        ]
    );
    // The trust bundle, byte for byte the root the CA wrote, in every namespace.
    let root_pem = std::fs::read_to_string(&root).unwrap();
    api.apply(
        "namespaces",
        serde_json::json!({"metadata": {"name": "team-b"}}),
    );
    let published = |ns: &str| {
        api.object("configmaps", ns, "meshmeter-ca-root")
            .and_then(|cm| cm["data"]["root-cert.pem"].as_str().map(str::to_owned))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while ["default", "bookinfo", "team-b"]
        .iter()
        .any(|ns| published(ns).as_deref() != Some(root_pem.as_str()))
    {
        assert!(
            Instant::now() < deadline,
            "trust bundle not published: {:?}",
            api.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cm = api
        .object("configmaps", "team-b", "meshmeter-ca-root")
        .unwrap();
    assert_eq!(
        cm["metadata"]["labels"],
        serde_json::json!({"app.kubernetes.io/managed-by": "meshmeter-ca"})
    );

    let metrics = get(&admin, "/metrics").await.unwrap();
    for line in [
        "meshmeter_ca_certificates_issued_total 1",
        "meshmeter_ca_requests_refused_total{reason=\"unauthenticated\"} 1",
        "meshmeter_ca_requests_refused_total{reason=\"permission_denied\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no '{line}' in\n{metrics}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ca_needs_exactly_one_way_to_authenticate() {
    for args in [
        &["ca"][..],
        &["ca", "--kubernetes", "--bootstrap-token-file", "/dev/null"][..],
        &[
            "ca",
            "--bootstrap-token-file",
            "/dev/null",
            "--token-audience",
            "x",
        ][..],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
