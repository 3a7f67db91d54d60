//! `meshmeter control` as a process: a sidecar client gets the workloads file's services,
//! then only what changed when the file changes; bad inputs exit 2.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshmeter_control::{ClientConfig, ClientStatus, ControlClient, View};
use meshmeter_routing::view::{Node, ViewUpdate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_meshmeter");

/// Kills the process when the test ends, however it ends.
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

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli_control-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A sidecar following the control plane at `listen`, applying updates to its view.
struct Sidecar {
    view: Arc<Mutex<View>>,
    updates: Arc<Mutex<Vec<ViewUpdate>>>,
    status: tokio::sync::watch::Receiver<ClientStatus>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Sidecar {
    fn start(listen: &str, ip: &str) -> Sidecar {
        let node = Node {
            id: "ratings-v2-abc.default".into(),
            namespace: "default".into(),
            labels: [("app".to_owned(), "ratings".to_owned())].into(),
            ips: vec![ip.into()],
            service_account: String::new(),
        };
        let client = ControlClient::new(ClientConfig::new(listen, node)).unwrap();
        let status = client.status();
        let view = Arc::new(Mutex::new(View::default()));
        let updates: Arc<Mutex<Vec<ViewUpdate>>> = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let (view, updates) = (Arc::clone(&view), Arc::clone(&updates));
            async move {
                client
                    .run(
                        move |u: &ViewUpdate| {
                            updates.lock().unwrap().push(u.clone());
                            view.lock().unwrap().apply(u).map_err(|e| e.to_string())
                        },
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await
            }
        });
        Sidecar {
            view,
            updates,
            status,
            stop,
            task,
        }
    }

    async fn wait_applied(&mut self, n: u64) {
        let mut status = self.status.clone();
        let waited =
            tokio::time::timeout(Duration::from_secs(20), status.wait_for(|s| s.applied == n))
                .await
                .is_ok();
        assert!(waited, "update {n} never came: {:?}", *self.status.borrow());
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

const WORKLOADS: &str = "\
services:
- host: mongodb.default.svc.cluster.local
  addresses: [10.96.0.20]
  ports: [{port: 27017, name: tcp-mongo, targetPort: 27018}]
workloads:
- name: ratings-v2
  namespace: default
  labels: {app: ratings, version: v2}
  ips: [127.0.0.2]
- name: mongodb-v1
  namespace: default
  labels: {app: mongodb, version: v1}
  ips: [127.0.0.3]
  services: [mongodb.default.svc.cluster.local]
";

const SECOND_VERSION: &str = "\
- name: mongodb-v2
  namespace: default
  labels: {app: mongodb, version: v2}
  ips: [127.0.0.4]
  services: [mongodb.default.svc.cluster.local]
";

#[tokio::test]
async fn a_sidecar_gets_the_workloads_files_services_and_then_only_changes() {
    let d = dir("serve");
    let file = d.join("workloads.yaml");
    std::fs::write(&file, WORKLOADS).unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let _plane = Process(
        Command::new(BIN)
            .args(["control", "--listen", &listen, "--admin", &admin])
            .args(["--reload-interval", "100ms", "--workloads"])
            .arg(&file)
            .env("MESHMETER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&admin, "/ready").await.is_none() {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut sidecar = Sidecar::start(&listen, "127.0.0.2");
    let (view, updates, status) = (
        Arc::clone(&sidecar.view),
        Arc::clone(&sidecar.updates),
        &mut sidecar.status,
    );
    tokio::time::timeout(Duration::from_secs(20), status.wait_for(|s| s.applied == 1))
        .await
        .expect("the first view")
        .unwrap();
    {
        let view = view.lock().unwrap();
        let service = &view.services["mongodb.default.svc.cluster.local"];
        assert_eq!(service.addresses, ["10.96.0.20"]);
        assert_eq!(service.ports[0].port, 27017);
        let cluster = &view.clusters["outbound|27017||mongodb.default.svc.cluster.local"];
        let endpoints: Vec<&str> = cluster
            .endpoints
            .iter()
            .map(|e| e.address.as_str())
            .collect();
        assert_eq!(endpoints, ["127.0.0.3:27018"]);
        assert_eq!(cluster.endpoints[0].labels["version"], "v1");
    }

    std::fs::write(&file, format!("{WORKLOADS}{SECOND_VERSION}")).unwrap();
    tokio::time::timeout(Duration::from_secs(20), status.wait_for(|s| s.applied == 2))
        .await
        .expect("the change")
        .unwrap();
    let second = updates.lock().unwrap()[1].clone();
    assert!(!second.full);
    assert!(second.services.is_empty());
    assert_eq!(second.clusters.len(), 1);
    let endpoints: Vec<&str> = second.clusters[0]
        .endpoints
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(endpoints, ["127.0.0.3:27018", "127.0.0.4:27018"]);

    let metrics = get(&admin, "/metrics").await.unwrap();
    assert!(
        metrics.contains("meshmeter_control_connected_sidecars 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshmeter_control_pushes_total{kind=\"full\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshmeter_control_pushes_total{kind=\"incremental\"} 1\n"),
        "{metrics}"
    );
    sidecar.stop().await;
}

#[test]
fn bad_inputs_exit_2_with_the_reason() {
    let d = dir("bad");
    let file = d.join("workloads.yaml");
    std::fs::write(&file, "services:\n- host: a.b\n").unwrap();
    let out = Command::new(BIN)
        .args(["control", "--listen", "127.0.0.1:0", "--workloads"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "workloads.yaml:2:3: service 0 (a.b): field 'ports' must list at least one port"
        ),
        "{stderr}"
    );

    let out = Command::new(BIN)
        .args(["control", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--workloads <FILE>|--kubernetes"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kubernetes_services_endpoint_slices_and_pods_make_the_views() {
    use meshmeter_kube::standin::StandIn;
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../kube/tests/data/");
    let api = StandIn::start().await;
    for plural in ["pods", "replicasets", "services", "endpointslices"] {
        let list = std::fs::read_to_string(format!("{data}{plural}.json")).unwrap();
        api.apply_list(plural, &list);
    }
    let d = dir("kube");
    let kubeconfig = d.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig("s3cret")).unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let _plane = Process(
        Command::new(BIN)
            .args(["control", "--kubernetes", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--listen", &listen, "--admin", &admin])
            .env("MESHMETER_LOG", "warn")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&admin, "/ready").await.is_none() {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The ratings pod's sidecar.
    let mut sidecar = Sidecar::start(&listen, "10.244.0.12");
    sidecar.wait_applied(1).await;
    {
        let view = sidecar.view.lock().unwrap();
        let hosts: Vec<&str> = view.services.keys().map(String::as_str).collect();
        assert_eq!(
            hosts,
            [
                "kubernetes.default.svc.cluster.local",
                "mongodb.default.svc.cluster.local",
                "ratings.default.svc.cluster.local"
            ]
        );
        assert_eq!(
            view.services["mongodb.default.svc.cluster.local"].addresses,
            ["10.96.119.29"]
        );
        let mongodb = &view.clusters["outbound|27017||mongodb.default.svc.cluster.local"];
        assert_eq!(mongodb.endpoints.len(), 1);
        assert_eq!(mongodb.endpoints[0].address, "10.244.0.13:27017");
        assert_eq!(mongodb.endpoints[0].labels["version"], "v1");
        assert_eq!(mongodb.endpoints[0].workload, "mongodb-v1");
    }

    // MongoDB's endpoint goes unready: the cluster is updated, nothing else.
    api.apply(
        "endpointslices",
        serde_json::json!({"metadata": {"name": "mongodb-cvp9m", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "mongodb"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.13"], "conditions": {"ready": false}}],
            "ports": [{"name": "mongo", "port": 27017, "protocol": "TCP"}]}),
    );
    sidecar.wait_applied(2).await;
    let second = sidecar.updates.lock().unwrap()[1].clone();
    assert!(!second.full);
    assert!(second.services.is_empty());
    assert_eq!(second.clusters.len(), 1);
    assert_eq!(
        second.clusters[0].name,
        "outbound|27017||mongodb.default.svc.cluster.local"
    );
    assert!(second.clusters[0].endpoints.is_empty());

    // A MeshPolicy applied to the API server: every sidecar's inbound side turns STRICT.
    api.apply(
        "meshpolicies",
        serde_json::json!({"metadata": {"name": "default"}, "spec": {"peers": [{"mtls": {}}]}}),
    );
    sidecar.wait_applied(3).await;
    let third = sidecar.updates.lock().unwrap()[2].clone();
    assert!(third.services.is_empty() && third.clusters.is_empty());
    assert_eq!(
        third.inbound.map(|i| i.default_mode),
        Some(meshmeter_routing::view::PeerMode::Strict as i32)
    );
    sidecar.stop().await;
}

const MONGODB_RULES: &str = "\
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: mongodb
  namespace: default
spec:
  host: mongodb
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 10}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: mongodb
  namespace: default
spec:
  hosts: [mongodb]
  tcp:
  - route:
    - destination: {host: mongodb, subset: v2}
";

#[tokio::test]
async fn networking_configuration_from_files_routes_and_a_change_is_pushed() {
    let d = dir("netconfig");
    let file = d.join("workloads.yaml");
    std::fs::write(&file, format!("{WORKLOADS}{SECOND_VERSION}")).unwrap();
    let config = d.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("mongodb.yaml"), MONGODB_RULES).unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let _plane = Process(
        Command::new(BIN)
            .args(["control", "--listen", &listen, "--admin", &admin])
            .args(["--reload-interval", "100ms", "--workloads"])
            .arg(&file)
            .arg("--config-dir")
            .arg(&config)
            .env("MESHMETER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&admin, "/ready").await.is_none() {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sidecar = Sidecar::start(&listen, "127.0.0.2");
    sidecar.wait_applied(1).await;
    let host = "mongodb.default.svc.cluster.local";
    {
        let view = sidecar.view.lock().unwrap();
        let routes = &view.services[host].routes;
        assert_eq!(routes.len(), 1);
        let to: Vec<(&str, u32)> = routes[0]
            .destinations
            .iter()
            .map(|d| (d.cluster.as_str(), d.weight))
            .collect();
        assert_eq!(
            to,
            [("outbound|27017|v2|mongodb.default.svc.cluster.local", 100)]
        );
        let v2 = &view.clusters["outbound|27017|v2|mongodb.default.svc.cluster.local"];
        let endpoints: Vec<&str> = v2.endpoints.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(endpoints, ["127.0.0.4:27018"]);
        assert_eq!(v2.max_connections, 10);
    }

    // 80/20 between the versions: the route changes, the clusters it uses come along.
    std::fs::write(
        config.join("mongodb.yaml"),
        MONGODB_RULES.replace(
            "    - destination: {host: mongodb, subset: v2}\n",
            "    - {destination: {host: mongodb, subset: v1}, weight: 80}\n    - {destination: {host: mongodb, subset: v2}, weight: 20}\n",
        ),
    )
    .unwrap();
    sidecar.wait_applied(2).await;
    let second = sidecar.updates.lock().unwrap()[1].clone();
    assert!(!second.full);
    assert_eq!(second.services.len(), 1);
    let to: Vec<(&str, u32)> = second.services[0].routes[0]
        .destinations
        .iter()
        .map(|d| (d.cluster.as_str(), d.weight))
        .collect();
    assert_eq!(
        to,
        [
            ("outbound|27017|v1|mongodb.default.svc.cluster.local", 80),
            ("outbound|27017|v2|mongodb.default.svc.cluster.local", 20)
        ]
    );
    let clusters: Vec<&str> = second.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        clusters,
        ["outbound|27017|v1|mongodb.default.svc.cluster.local"]
    );
    sidecar.stop().await;
}
