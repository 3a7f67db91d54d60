//! Latency per AdmissionReview: the recorded ratings-v2 pod posted over HTTPS (keep-alive, one
//! request at a time, as the API server sends them) to the injector on 127.0.0.1, plus the
//! transformation alone. Prints percentiles; `cargo bench -p meshmeter-injector`.
//! `MESHMETER_BENCH_REVIEWS` sets the number of reviews (default 5000).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use meshmeter_certs::{https_server_config, Authority, CertStore};
use meshmeter_inject::InjectOptions;
use meshmeter_injector::{review, serve, CertConfig, Shared};
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

fn body() -> Vec<u8> {
    let mut pod: Value =
        serde_json::from_str(include_str!("../tests/data/pod-ratings-v2.json")).unwrap();
    pod.as_object_mut().unwrap().remove("status");
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0a1b2c3d-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "default",
            "object": pod,
        }
    }))
    .unwrap()
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{name:<28} n={:<6} p50={:>8.1?} p90={:>8.1?} p99={:>8.1?} max={:>8.1?}",
        samples.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        samples[samples.len() - 1]
    );
}

fn main() {
    let n: usize = std::env::var("MESHMETER_BENCH_REVIEWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let body = body();
    let opts = InjectOptions::default();

    let mut pure = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(review(&body, &opts).unwrap());
        pure.push(t.elapsed());
    }
    report("review() alone", pure);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let names = CertConfig::service_names("meshmeter-injector", "meshmeter-system");
        let now = std::time::SystemTime::now();
        let hour = Duration::from_secs(3600);
        let ca = Authority::generate_root_between("bench", "bench CA", now, now + hour).unwrap();
        let store = Arc::new(CertStore::default());
        store.install(ca.issue_serving(&names, now, now + hour).unwrap());
        let shared = Arc::new(Shared {
            options: opts.clone(),
            ready: AtomicBool::new(true),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(https_server_config(store).unwrap());
        tokio::spawn(serve(listener, acceptor, shared, std::future::pending()));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.root().clone()).unwrap();
        let provider = meshmeter_certs::provider();
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let host = ServerName::try_from(names[2].clone()).unwrap();

        // n/10 connections of 10 reviews each: the first includes connect and TLS handshake,
        // the nine others reuse the connection.
        let mut https = Vec::with_capacity(n);
        let mut fresh = Vec::with_capacity(n / 10);
        for _ in 0..n.div_ceil(10) {
            let t = Instant::now();
            let tcp = TcpStream::connect(addr).await.unwrap();
            let tls = connector.connect(host.clone(), tcp).await.unwrap();
            let (mut s, conn) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            for k in 0..10 {
                let start = if k == 0 { t } else { Instant::now() };
                let req = http::Request::post("/inject")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.clone())))
                    .unwrap();
                // The previous response was read whole; wait for hyper to take the next one.
                s.ready().await.unwrap();
                let resp = s.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                let _ = resp.into_body().collect().await.unwrap();
                if k == 0 {
                    fresh.push(start.elapsed())
                } else {
                    https.push(start.elapsed())
                }
            }
        }
        report("HTTPS, kept-alive", https);
        report("HTTPS, new connection", fresh);
    });
    println!("body: {} bytes", body.len());
}
