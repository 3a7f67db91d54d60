//! `WebhookCaBundle` through kube's client against a small stand-in API server: it reads the
//! MutatingWebhookConfiguration, merges the CA into every webhook's caBundle, writes it back
//! with the resourceVersion it read, and merges again when that write conflicts (409).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::ByteString;
use meshmeter_kube::WebhookCaBundle;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/meshmeter-injector";

fn cert(n: u32) -> String {
    format!("-----BEGIN CERTIFICATE-----\nMII{n}\n-----END CERTIFICATE-----\n")
}

#[derive(Default)]
struct Fake {
    object: Option<Value>,
    log: Vec<String>,
    /// PUTs to refuse with 409 before accepting (another writer got there first).
    conflicts: u32,
}

fn webhook_config(rv: &str, bundle: Option<&str>) -> Value {
    let mut client = json!({"service": {"name": "meshmeter-injector", "namespace": "meshmeter-system", "path": "/inject"}});
    if let Some(b) = bundle {
        client["caBundle"] = serde_json::to_value(ByteString(b.as_bytes().to_vec())).unwrap();
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "meshmeter-injector", "resourceVersion": rv},
        "webhooks": [
            {"name": "a.meshmeter.io", "clientConfig": client, "admissionReviewVersions": ["v1"], "sideEffects": "None"},
            {"name": "b.meshmeter.io", "clientConfig": {"service": {"name": "meshmeter-injector", "namespace": "meshmeter-system"}}, "admissionReviewVersions": ["v1"], "sideEffects": "None"}
        ]
    })
}

async fn handle(
    req: http::Request<hyper::body::Incoming>,
    fake: Arc<Mutex<Fake>>,
) -> http::Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut f = fake.lock().unwrap();
    f.log.push(format!("{method} {path}"));
    let reply = |code: u16, v: &Value| {
        http::Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap()
    };
    if path != PATH {
        return reply(
            404,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        );
    }
    match method.as_str() {
        "GET" => reply(200, f.object.as_ref().unwrap()),
        "PUT" => {
            let sent: Value = serde_json::from_slice(&body).unwrap();
            let current_rv = f.object.as_ref().unwrap()["metadata"]["resourceVersion"].clone();
            if f.conflicts > 0 {
                f.conflicts -= 1;
                // Someone else wrote in between: their CA is there now, with a new version.
                let rv = (current_rv.as_str().unwrap().parse::<u32>().unwrap() + 1).to_string();
                f.object = Some(webhook_config(&rv, Some(&cert(7))));
                return reply(
                    409,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "the object has been modified", "reason": "Conflict", "code": 409}),
                );
            }
            assert_eq!(
                sent["metadata"]["resourceVersion"], current_rv,
                "PUT must carry the version read"
            );
            let mut stored = sent.clone();
            stored["metadata"]["resourceVersion"] = json!("100");
            f.object = Some(stored.clone());
            reply(200, &stored)
        }
        _ => reply(405, &json!({})),
    }
}

async fn fake_api(fake: Arc<Mutex<Fake>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let fake = fake.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fake = fake.clone();
                    async move { Ok::<_, Infallible>(handle(req, fake).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn bundles(object: &Value) -> Vec<String> {
    object["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let b64 = w["clientConfig"]["caBundle"].as_str().unwrap_or_default();
            let decoded = decode64(b64);
            String::from_utf8(decoded).unwrap()
        })
        .collect()
}

fn decode64(text: &str) -> Vec<u8> {
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
    for c in text.chars().filter(|&c| c != '=') {
        bits = (bits << 6) | alphabet.find(c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

async fn publisher(url: &str) -> WebhookCaBundle {
    let config = kube::Config::new(url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    WebhookCaBundle::new(client, "meshmeter-injector")
}

#[tokio::test]
async fn the_ca_is_merged_into_every_webhook_and_conflicts_are_retried() {
    let fake = Arc::new(Mutex::new(Fake {
        object: Some(webhook_config("5", Some(&cert(1)))),
        conflicts: 1,
        ..Fake::default()
    }));
    let url = fake_api(fake.clone()).await;
    let p = publisher(&url).await;
    p.publish(&cert(9)).await.unwrap();
    let f = fake.lock().unwrap();
    assert_eq!(
        f.log,
        [
            format!("GET {PATH}"),
            format!("PUT {PATH}"),
            format!("GET {PATH}"),
            format!("PUT {PATH}")
        ]
    );
    // The conflicting writer's CA (7) is kept after ours; the second webhook had none.
    assert_eq!(
        bundles(f.object.as_ref().unwrap()),
        [format!("{}{}", cert(9), cert(7)), cert(9)]
    );
}

#[tokio::test]
async fn publishing_the_same_ca_again_writes_nothing_and_errors_name_the_object() {
    let fake = Arc::new(Mutex::new(Fake {
        object: Some(webhook_config("5", Some(&cert(1)))),
        ..Fake::default()
    }));
    let url = fake_api(fake.clone()).await;
    let p = publisher(&url).await;
    p.publish(&cert(1)).await.unwrap();
    fake.lock().unwrap().log.clear();
    // Both webhooks hold it now only after a write; the second publish reads and stops.
    p.publish(&cert(9)).await.unwrap();
    p.publish(&cert(9)).await.unwrap();
    assert_eq!(
        fake.lock().unwrap().log.len(),
        3,
        "{:?}",
        fake.lock().unwrap().log
    );

    let missing = WebhookCaBundle::new(
        kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap(),
        "other",
    );
    let err = missing.publish(&cert(9)).await.unwrap_err().to_string();
    assert!(
        err.starts_with("MutatingWebhookConfiguration other: "),
        "{err}"
    );
}

/// YAML to JSON, enough for the manifests `meshmeter install` writes.
fn to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::String(s) => json!(s),
        Yaml::Integer(i) => json!(i),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| (k.as_str().unwrap().to_string(), to_json(v)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

#[tokio::test]
async fn the_configuration_meshmeter_install_writes_gets_the_ca_in_both_webhooks() {
    let yaml = meshmeter_install::render(&meshmeter_install::InstallOptions::default()).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&yaml).unwrap();
    let mut mwc = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("MutatingWebhookConfiguration"))
        .map(to_json)
        .unwrap();
    mwc["metadata"]["resourceVersion"] = json!("1");
    let fake = Arc::new(Mutex::new(Fake {
        object: Some(mwc),
        ..Fake::default()
    }));
    let url = fake_api(fake.clone()).await;
    publisher(&url).await.publish(&cert(3)).await.unwrap();
    let f = fake.lock().unwrap();
    let stored = f.object.as_ref().unwrap();
    assert_eq!(bundles(stored), [cert(3), cert(3)]);
    // Nothing else of the configuration changed.
    assert_eq!(stored["webhooks"][0]["failurePolicy"], "Ignore");
    assert_eq!(
        stored["webhooks"][1]["namespaceSelector"]["matchExpressions"][0]["key"],
        "istio-injection"
    );
}
