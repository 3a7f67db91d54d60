//! `meshmeter mixer --kubernetes --kubeconfig` against the stand-in API server: readiness
//! waits for the first sync, objects applied, edited and deleted change /metrics, identity
//! follows pods, and an API server restart mid-run loses nothing.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshmeter_kube::standin::StandIn;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_meshmeter");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../kube/tests/data/");

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

/// Status code and body of `GET path`.
async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics(addr: &str) -> String {
    get(addr, "/metrics")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default()
}

fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

/// Sends one TCP bag from ratings (10.244.0.12) to mongodb (10.244.0.13).
fn report(grpc: &str, received: u64) {
    let bag = json!({
        "context.protocol": "tcp",
        "connection.received.bytes": received,
        "connection.sent.bytes": 7,
        "source.ip": "10.244.0.12",
        "destination.ip": "10.244.0.13",
    });
    let status = Command::new(BIN)
        .args(["report", "--mixer", grpc, "--bag", &bag.to_string()])
        .env("MESHMETER_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "report: {status}");
}

fn config_generation(text: &str) -> u64 {
    line(text, "meshmeter_config_generation ")
        .map_or(0, |l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
}

fn recorded(name: &str) -> String {
    std::fs::read_to_string(format!("{DATA}{name}.json")).unwrap()
}

fn first_item(name: &str) -> Value {
    serde_json::from_str::<Value>(&recorded(name)).unwrap()["items"][0].clone()
}

const RECEIVED: &str = "istio_mongo_received_bytes{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixer_follows_the_api_server_for_configuration_and_identity() {
    let api = StandIn::start().await;
    api.require_token("s3cret");
    for plural in [
        "pods",
        "replicasets",
        "services",
        "endpointslices",
        "metrics",
        "prometheuses",
        "rules",
    ] {
        api.apply_list(plural, &recorded(plural));
    }
    // Pods cannot be listed yet: the server must stay unready.
    api.forbid("pods", true);
    let dir = std::env::temp_dir().join(format!("meshmeter-cli-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig("s3cret")).unwrap();

    let (grpc, admin) = (free_addr(), free_addr());
    let _mixer = Process(
        Command::new(BIN)
            .args([
                "mixer",
                "--kubernetes",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--no-default-config",
                "--grpc-addr",
                &grpc,
                "--metrics-addr",
                &admin,
            ])
            // The refused lists and the 410s after the restart are logged as warnings.
            .env("MESHMETER_LOG", "error")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("two refused pod lists", || {
        let n = api
            .requests()
            .iter()
            .filter(|r| r.starts_with("/api/v1/pods?"))
            .count();
        async move { n >= 2 }
    })
    .await;
    assert_eq!(
        get(&admin, "/ready").await.map(|r| r.0),
        Some(503),
        "unready before the first sync"
    );
    let text = metrics(&admin).await;
    assert!(
        line(
            &text,
            "meshmeter_kubernetes_watch_restarts_total{resource=\"pods\"}"
        )
        .is_some_and(|l| !l.ends_with(" 0")),
        "{text}"
    );
    api.forbid("pods", false);
    eventually("ready", || async {
        get(&admin, "/ready").await.is_some_and(|r| r.0 == 200)
    })
    .await;

    // The seed's legacy objects with identity from the pods: the seed's series.
    report(&grpc, 250);
    eventually("the seed's series", || async {
        line(&metrics(&admin).await, RECEIVED) == Some(&format!("{RECEIVED} 250"))
    })
    .await;

    // Edited: in force within 2 s of the API server accepting it, counters continue.
    let generation = config_generation(&metrics(&admin).await);
    let mut rule = first_item("rules");
    rule["spec"]["match"] = json!("context.protocol == \"tcp\" && connection.received.bytes > 99");
    api.apply("rules", rule);
    let applied = Instant::now();
    eventually("the edited rule in force", || async {
        config_generation(&metrics(&admin).await) > generation
    })
    .await;
    let took = applied.elapsed();
    println!("an edited rule was in force {took:?} after the API server took it");
    assert!(
        took < Duration::from_secs(5),
        "an edit took {took:?} to apply"
    );
    report(&grpc, 50); // refused by the new match
    report(&grpc, 100);
    eventually("the edited rule's count", || async {
        line(&metrics(&admin).await, RECEIVED) == Some(&format!("{RECEIVED} 350"))
    })
    .await;

    // The API server restarts; meanwhile the ratings pod is relabelled. Every report is
    // counted once, under the old labels until the change arrives, then under the new.
    api.stop();
    let mut pod = serde_json::from_str::<Value>(&recorded("pods")).unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("ratings")
        })
        .unwrap()
        .clone();
    pod["metadata"]["labels"]["version"] = json!("v3");
    api.apply("pods", pod);
    report(&grpc, 100); // served from the caches during the outage
    api.restart().await;
    let v3 = "istio_mongo_received_bytes{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v3\"}";
    let mut sent = 1;
    eventually("the relabelled pod after the restart", || {
        report(&grpc, 100);
        sent += 1;
        let admin = admin.clone();
        async move { line(&metrics(&admin).await, v3).is_some() }
    })
    .await;
    let text = metrics(&admin).await;
    let value = |l: Option<&str>| -> u64 {
        l.map_or(0, |l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
    };
    assert_eq!(
        value(line(&text, RECEIVED)) + value(line(&text, v3)),
        350 + 100 * sent,
        "nothing lost:\n{text}"
    );
    assert!(value(line(&text, RECEIVED)) >= 450, "{text}");

    // A broken object is rejected alone: the others keep counting, /metrics counts it, and a
    // Warning Event on it says why (what `kubectl describe` shows).
    let mut broken = first_item("rules");
    broken["metadata"]["name"] = json!("broken");
    broken["metadata"]["uid"] = json!("b7d0c2c4-0000-4000-8000-000000000001");
    broken["spec"]["match"] = json!("connection.received.byte > 0");
    api.apply("rules", broken);
    eventually("the broken rule counted as rejected", || async {
        line(&metrics(&admin).await, "meshmeter_config_rejected_objects ")
            == Some("meshmeter_config_rejected_objects 1")
    })
    .await;
    let before = value(line(&metrics(&admin).await, v3));
    report(&grpc, 100);
    eventually("the good rule still counting", || async {
        value(line(&metrics(&admin).await, v3)) == before + 100
    })
    .await;
    eventually("a Warning Event on the broken rule", || {
        let posted = api.posted();
        async move {
            posted.iter().any(|(path, event)| {
                path == "/api/v1/namespaces/default/events"
                    && event["type"] == "Warning"
                    && event["reason"] == "Rejected"
                    && event["involvedObject"]["kind"] == "rule"
                    && event["involvedObject"]["name"] == "broken"
                    && event["involvedObject"]["apiVersion"] == "config.istio.io/v1alpha2"
                    && event["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("connection.received.byte"))
            })
        }
    })
    .await;
    assert_eq!(
        api.posted().len(),
        1,
        "one Event per rejected version: {:?}",
        api.posted()
    );
    assert!(api.delete("rules", "default", "broken"));

    // Deleted: the handler's metrics leave /metrics.
    assert!(api.delete("prometheuses", "default", "mongohandler"));
    assert!(api.delete("rules", "default", "mongoprom"));
    eventually("the deleted handler's metrics gone", || async {
        !metrics(&admin).await.contains("istio_mongo_received_bytes")
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
