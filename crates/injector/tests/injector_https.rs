//! The webhook over real HTTPS: a hyper + rustls client that trusts only the CA the injector
//! published posts AdmissionReviews (the recorded ratings-v2 pod) and checks the answers;
//! certificates rotate, and a new CA is published before anything it signs is served.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use meshmeter_certs::{https_server_config, CertStore};
use meshmeter_inject::InjectOptions;
use meshmeter_injector::{keep_certificates, serve, CaBundlePublisher, CertConfig, Shared};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const HOST: &str = "meshmeter-injector.meshmeter-system.svc";

/// Records every CA the injector publishes.
struct Recorder(mpsc::UnboundedSender<String>);

impl CaBundlePublisher for Recorder {
    type Error = std::convert::Infallible;

    async fn publish(&self, ca_pem: &str) -> Result<(), Self::Error> {
        let _ = self.0.send(ca_pem.to_string());
        Ok(())
    }
}

struct Running {
    addr: std::net::SocketAddr,
    published: mpsc::UnboundedReceiver<String>,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(cert_validity: Duration, ca_validity: Duration) -> Running {
    let store = Arc::new(CertStore::default());
    let shared = Arc::new(Shared {
        options: InjectOptions::default(),
        ready: AtomicBool::new(false),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, published) = mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    };
    let config = CertConfig {
        dns_names: CertConfig::service_names("meshmeter-injector", "meshmeter-system"),
        ca_validity,
        cert_validity,
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(https_server_config(store.clone()).unwrap());
    let (stop_a, stop_b) = tokio::sync::watch::channel(());
    tokio::spawn(async move {
        stopped.await;
        drop(stop_a);
    });
    let mut rx1 = stop_b.clone();
    tokio::spawn(serve(listener, acceptor, shared.clone(), async move {
        let _ = rx1.changed().await;
    }));
    let mut rx2 = stop_b;
    tokio::spawn(keep_certificates(
        config,
        store,
        Recorder(tx),
        shared.clone(),
        async move {
            let _ = rx2.changed().await;
        },
    ));
    Running {
        addr,
        published,
        shared,
        _stop: stop,
    }
}

async fn next_ca(r: &mut Running) -> String {
    tokio::time::timeout(Duration::from_secs(10), r.published.recv())
        .await
        .expect("a CA is published within 10 s")
        .unwrap()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// An HTTP/1.1 connection over TLS that trusts only `ca_pem`.
async fn connect(addr: std::net::SocketAddr, ca_pem: &str) -> Result<Sender, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = meshmeter_certs::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn request(s: &mut Sender, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    s.ready().await.unwrap();
    let resp = s.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

fn recorded_pod_review() -> Vec<u8> {
    let mut pod: Value = serde_json::from_str(include_str!("data/pod-ratings-v2.json")).unwrap();
    // As the API server sends a pod being created: no status, no name yet.
    pod.as_object_mut().unwrap().remove("status");
    pod["metadata"].as_object_mut().unwrap().remove("name");
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0a1b2c3d-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "default",
            "object": pod,
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn reviews_over_https_get_the_sidecar_patch() {
    let mut r = start(Duration::from_secs(3600), Duration::from_secs(86_400)).await;
    let ca = next_ca(&mut r).await;
    let mut s = connect(r.addr, &ca).await.unwrap();
    // Ready once the CA is published (bounded wait, no sleep as synchronisation).
    let deadline = Instant::now() + Duration::from_secs(5);
    while request(&mut s, "GET", "/ready", vec![]).await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::task::yield_now().await;
    }
    assert!(r.shared.ready.load(std::sync::atomic::Ordering::Acquire));
    assert_eq!(
        request(&mut s, "GET", "/healthz", vec![]).await,
        (200, b"ok\n".to_vec())
    );

    let (status, body) = request(&mut s, "POST", "/inject", recorded_pod_review()).await;
    assert_eq!(status, 200);
    let out: Value = serde_json::from_slice(&body).unwrap();
    let response = &out["response"];
    assert_eq!(response["uid"], "0a1b2c3d-0000-4000-8000-000000000001");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    // Same connection, a second review: keep-alive works.
    let (status, again) = request(&mut s, "POST", "/inject", recorded_pod_review()).await;
    assert_eq!((status, again), (200, body));

    assert_eq!(
        request(&mut s, "POST", "/inject", b"{}".to_vec()).await.0,
        400
    );
    assert_eq!(request(&mut s, "GET", "/inject", vec![]).await.0, 405);
    assert_eq!(request(&mut s, "GET", "/nope", vec![]).await.0, 404);
}

#[tokio::test]
async fn certificates_rotate_and_a_new_ca_is_published_first() {
    // A 3 s certificate renews after 2 s; a 5 s CA then has less than twice that left.
    let mut r = start(Duration::from_secs(3), Duration::from_secs(5)).await;
    let first = next_ca(&mut r).await;
    assert!(connect(r.addr, &first).await.is_ok());
    let second = next_ca(&mut r).await;
    assert_ne!(first, second);
    // Once the new CA's certificate is served, clients that trust only the old CA fail and
    // clients with the new one (which the bundle now holds) succeed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if connect(r.addr, &first).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old CA's certificate is still served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = connect(r.addr, &second).await.unwrap();
    assert_eq!(request(&mut s, "GET", "/healthz", vec![]).await.0, 200);
}
