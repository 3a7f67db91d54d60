//! The push API over real gRPC on 127.0.0.1: full then incremental updates, resync on
//! reconnect, a control plane that goes away, fan-out to many sidecars, refusals.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use meshmeter_control::{
    ClientConfig, ClientStatus, ControlClient, ControlServer, Refusal, ServerConfig, View,
    WatchSource,
};
use meshmeter_routing::view::{
    Cluster, Endpoint, Node, Service, ServicePort, Subscribe, ViewUpdate, STREAM_PATH,
};
use meshmeter_selfmetrics::SelfMetrics;
use tokio::sync::{oneshot, watch};

/// The test's inputs: services by namespace that may see them ("" = everyone).
#[derive(Clone, Debug, Default)]
struct Inputs {
    services: Vec<(String, Service)>,
    clusters: Vec<Cluster>,
}

fn service(host: &str, port: u32) -> Service {
    Service {
        host: host.into(),
        name: host.split('.').next().unwrap_or_default().into(),
        namespace: "default".into(),
        addresses: vec!["10.0.0.1".into()],
        ports: vec![ServicePort {
            port,
            name: "tcp".into(),
        }],
        routes: vec![],
    }
}

fn cluster(name: &str, endpoints: &[&str]) -> Cluster {
    Cluster {
        name: name.into(),
        endpoints: endpoints
            .iter()
            .map(|a| Endpoint {
                address: (*a).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn compile(inputs: &Inputs, node: &Node) -> View {
    View::new(
        inputs
            .services
            .iter()
            .filter(|(ns, _)| ns.is_empty() || *ns == node.namespace)
            .map(|(_, s)| s.clone()),
        inputs.clusters.iter().cloned(),
        None,
    )
}

fn node(id: &str, namespace: &str) -> Node {
    Node {
        id: id.into(),
        namespace: namespace.into(),
        labels: BTreeMap::from([("app".into(), "ratings".into())]),
        ips: vec!["10.1.0.1".into()],
        service_account: "ratings".into(),
    }
}

struct Plane {
    addr: SocketAddr,
    inputs: watch::Sender<Arc<Inputs>>,
    server: ControlServer,
    metrics: Arc<SelfMetrics>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Plane {
    async fn start(inputs: Inputs) -> Plane {
        Plane::start_on("127.0.0.1:0".parse().unwrap(), inputs).await
    }

    async fn start_on(addr: SocketAddr, inputs: Inputs) -> Plane {
        Plane::start_with(addr, inputs, ServerConfig::default()).await
    }

    async fn start_with(addr: SocketAddr, inputs: Inputs, config: ServerConfig) -> Plane {
        let (tx, rx) = watch::channel(Arc::new(inputs));
        let metrics = Arc::new(SelfMetrics::new());
        let server = ControlServer::new(Arc::new(WatchSource::new(rx, compile)), &metrics, config);
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let server = server.clone();
            async move {
                server
                    .serve(listener, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            }
        });
        Plane {
            addr,
            inputs: tx,
            server,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    fn change(&self, f: impl FnOnce(&mut Inputs)) {
        self.inputs.send_modify(|i| f(Arc::make_mut(i)));
    }

    async fn shut_down(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops within 10 s")
            .unwrap();
    }
}

/// A sidecar: a client whose callback applies updates to a shared view and records them.
struct Sidecar {
    view: Arc<Mutex<View>>,
    updates: Arc<Mutex<Vec<ViewUpdate>>>,
    status: watch::Receiver<ClientStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sidecar {
    fn start(addr: SocketAddr, node: Node) -> Sidecar {
        Sidecar::start_refusing(addr, node, |_| None)
    }

    /// `refuse` returns an error for updates the sidecar must refuse.
    fn start_refusing(
        addr: SocketAddr,
        node: Node,
        refuse: impl Fn(&ViewUpdate) -> Option<String> + Send + 'static,
    ) -> Sidecar {
        let mut config = ClientConfig::new(addr.to_string(), node);
        config.backoff_initial = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(400);
        let client = ControlClient::new(config).unwrap();
        let status = client.status();
        let view = Arc::new(Mutex::new(View::default()));
        let updates = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let (view, updates) = (Arc::clone(&view), Arc::clone(&updates));
            async move {
                client
                    .run(
                        move |u: &ViewUpdate| {
                            updates.lock().unwrap().push(u.clone());
                            if let Some(e) = refuse(u) {
                                return Err(e);
                            }
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
            stop: Some(stop),
            task,
        }
    }

    async fn wait(&mut self, what: &str, f: impl FnMut(&ClientStatus) -> bool) -> ClientStatus {
        let mut status = self.status.clone();
        let result = tokio::time::timeout(Duration::from_secs(10), status.wait_for(f))
            .await
            .map(|s| s.unwrap().clone());
        result
            .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", *self.status.borrow()))
    }

    fn updates(&self) -> Vec<ViewUpdate> {
        self.updates.lock().unwrap().clone()
    }

    fn view(&self) -> View {
        self.view.lock().unwrap().clone()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

/// Polls `f` until it holds (bounded).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn two_services() -> Inputs {
    Inputs {
        services: vec![
            (
                String::new(),
                service("mongodb.default.svc.cluster.local", 27017),
            ),
            (
                "team-a".into(),
                service("reviews.team-a.svc.cluster.local", 9080),
            ),
        ],
        clusters: vec![
            cluster(
                "outbound|27017|v1|mongodb.default.svc.cluster.local",
                &["10.1.0.3:27017"],
            ),
            cluster(
                "outbound|27017|v2|mongodb.default.svc.cluster.local",
                &["10.1.0.4:27017"],
            ),
        ],
    }
}

#[tokio::test]
async fn full_update_then_incremental_ones_with_exact_contents() {
    let plane = Plane::start(two_services()).await;
    let mut sidecar = Sidecar::start(plane.addr, node("ratings-v2-1.default", "default"));
    let status = sidecar.wait("the first update", |s| s.applied == 1).await;
    let first = &sidecar.updates()[0];
    assert!(first.full);
    assert_eq!(first.version, status.version);
    assert_eq!(
        first.services,
        vec![service("mongodb.default.svc.cluster.local", 27017)]
    );
    assert_eq!(first.clusters, two_services().clusters);
    assert!(first.removed_services.is_empty() && first.removed_clusters.is_empty());

    // One endpoint moves, one cluster goes, one service arrives for this namespace.
    plane.change(|i| {
        i.clusters[0] = cluster(
            "outbound|27017|v1|mongodb.default.svc.cluster.local",
            &["10.1.0.5:27017"],
        );
        i.clusters.pop();
        i.services.push((
            "default".into(),
            service("redis.default.svc.cluster.local", 6379),
        ));
    });
    sidecar.wait("the second update", |s| s.applied == 2).await;
    let second = &sidecar.updates()[1];
    assert!(!second.full);
    assert!(second.version > first.version);
    assert_eq!(
        second.services,
        vec![service("redis.default.svc.cluster.local", 6379)]
    );
    assert!(second.removed_services.is_empty());
    assert_eq!(
        second.clusters,
        vec![cluster(
            "outbound|27017|v1|mongodb.default.svc.cluster.local",
            &["10.1.0.5:27017"]
        )]
    );
    assert_eq!(
        second.removed_clusters,
        vec!["outbound|27017|v2|mongodb.default.svc.cluster.local".to_owned()]
    );
    assert_eq!(second.inbound, None);
    assert_eq!(
        sidecar.view(),
        compile(&plane.inputs.borrow(), &node("x", "default"))
    );

    // A change that does not touch this sidecar's view sends it nothing.
    plane.change(|i| {
        i.services.push((
            "team-a".into(),
            service("details.team-a.svc.cluster.local", 9080),
        ));
    });
    let generations = plane.server.stats().generations.clone();
    eventually("the change to be pushed", || generations.get() == 2).await;
    // A second sidecar of the same shape, connected after it, is a witness that the push is
    // over: it got its full view from the same compilation.
    let mut witness = Sidecar::start(plane.addr, node("ratings-v2-2.default", "default"));
    witness.wait("the witness' view", |s| s.applied == 1).await;
    assert_eq!(sidecar.updates().len(), 2);
    assert_eq!(plane.server.stats().compiles.get(), 3);
    assert_eq!(plane.server.stats().pushes_full.get(), 2);
    assert_eq!(plane.server.stats().pushes_incremental.get(), 1);
    eventually("the acks", || plane.server.stats().acks.get() == 3).await;

    let mut text = String::new();
    plane.metrics.encode(&mut text);
    assert!(
        text.contains("meshmeter_control_connected_sidecars 2\n"),
        "{text}"
    );
    assert!(
        text.contains("meshmeter_control_pushes_total{kind=\"incremental\"} 1\n"),
        "{text}"
    );
    witness.stop().await;
    sidecar.stop().await;
    eventually("the streams to end", || {
        plane.server.stats().connected.get() == 0
    })
    .await;
    plane.shut_down().await;
}

#[tokio::test]
async fn a_reconnecting_sidecar_gets_only_what_changed() {
    let plane = Plane::start(two_services()).await;
    let mut sidecar = Sidecar::start(plane.addr, node("ratings-v2-1.default", "default"));
    sidecar.wait("the first update", |s| s.applied == 1).await;
    eventually("the ack", || plane.server.stats().acks.get() == 1).await;

    // The stream breaks, nothing changed: the sidecar reconnects and is sent nothing.
    plane.server.close_streams();
    sidecar
        .wait("a reconnection", |s| s.connects == 2 && s.connected)
        .await;
    let compiles = plane.server.stats().compiles.get();
    // The witness is served from the same compilation and version as the reconnected
    // sidecar, after it.
    let mut witness = Sidecar::start(plane.addr, node("ratings-v2-2.default", "default"));
    witness.wait("the witness' view", |s| s.applied == 1).await;
    assert_eq!(plane.server.stats().compiles.get(), compiles);
    assert_eq!(sidecar.updates().len(), 1);
    assert_eq!(plane.server.stats().pushes_full.get(), 2);

    // The stream breaks and the inputs change meanwhile: only the change is sent.
    plane.server.close_streams();
    plane.change(|i| {
        i.clusters.pop();
    });
    sidecar.wait("the change", |s| s.applied == 2).await;
    let second = &sidecar.updates()[1];
    assert!(!second.full);
    assert!(second.services.is_empty() && second.clusters.is_empty());
    assert_eq!(
        second.removed_clusters,
        vec!["outbound|27017|v2|mongodb.default.svc.cluster.local".to_owned()]
    );
    assert_eq!(plane.server.stats().pushes_full.get(), 2);
    witness.stop().await;
    sidecar.stop().await;
    plane.shut_down().await;
}

#[tokio::test]
async fn the_sidecar_keeps_its_view_while_the_control_plane_is_down_and_resyncs() {
    let plane = Plane::start(two_services()).await;
    let addr = plane.addr;
    let mut sidecar = Sidecar::start(addr, node("ratings-v2-1.default", "default"));
    sidecar.wait("the first update", |s| s.applied == 1).await;
    let before = sidecar.view();
    assert_eq!(before.services.len(), 1);
    assert_eq!(before.clusters.len(), 2);

    plane.shut_down().await;
    sidecar.wait("the disconnection", |s| !s.connected).await;
    // Reconnection attempts fail for a while; the view stays.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sidecar.view(), before);
    assert_eq!(sidecar.status.borrow().applied, 1);

    // A new control plane on the same address, with other inputs: the sidecar's version
    // means nothing to it, so it sends the whole view.
    let mut inputs = two_services();
    inputs.clusters.truncate(1);
    let plane = Plane::start_on(addr, inputs).await;
    sidecar.wait("the resync", |s| s.applied == 2).await;
    let resync = &sidecar.updates()[1];
    assert!(resync.full);
    assert_eq!(resync.clusters.len(), 1);
    assert_eq!(
        sidecar.view(),
        compile(&plane.inputs.borrow(), &node("x", "default"))
    );
    sidecar.stop().await;
    plane.shut_down().await;
}

#[tokio::test]
async fn a_change_reaches_fifty_sidecars_within_a_second() {
    let plane = Plane::start(two_services()).await;
    let mut sidecars: Vec<Sidecar> = (0..50)
        .map(|i| {
            // Five shapes: five namespaces.
            let ns = format!("ns{}", i % 5);
            Sidecar::start(plane.addr, node(&format!("pod-{i}.{ns}"), &ns))
        })
        .collect();
    for s in &mut sidecars {
        s.wait("the first update", |s| s.applied == 1).await;
    }
    assert_eq!(plane.server.stats().compiles.get(), 5);
    let started = Instant::now();
    plane.change(|i| {
        i.clusters.push(cluster(
            "outbound|6379||redis.default.svc.cluster.local",
            &["10.1.0.9:6379"],
        ));
    });
    for s in &mut sidecars {
        s.wait("the change", |s| s.applied == 2).await;
    }
    let elapsed = started.elapsed();
    assert!(elapsed <= Duration::from_secs(1), "took {elapsed:?}");
    for s in &sidecars {
        let u = &s.updates()[1];
        assert!(!u.full);
        assert_eq!(
            u.clusters,
            vec![cluster(
                "outbound|6379||redis.default.svc.cluster.local",
                &["10.1.0.9:6379"]
            )]
        );
    }
    assert_eq!(plane.server.stats().compiles.get(), 10);
    for s in sidecars {
        s.stop().await;
    }
    plane.shut_down().await;
}

#[tokio::test]
async fn a_refused_update_is_counted_and_the_next_one_starts_from_the_last_good_view() {
    let plane = Plane::start(two_services()).await;
    let mut sidecar =
        Sidecar::start_refusing(plane.addr, node("ratings-v2-1.default", "default"), |u| {
            u.clusters
                .iter()
                .any(|c| c.name.contains("|bad|"))
                .then(|| "cluster with a bad subset".to_owned())
        });
    sidecar.wait("the first update", |s| s.applied == 1).await;
    let good = sidecar.view();

    plane.change(|i| {
        i.clusters.push(cluster(
            "outbound|27017|bad|mongodb.default.svc.cluster.local",
            &[],
        ));
        i.clusters.remove(0);
    });
    sidecar.wait("the refusal", |s| s.refused == 1).await;
    eventually("the nack", || plane.server.stats().nacks.get() == 1).await;
    assert_eq!(sidecar.view(), good);

    // The next update goes from the view the sidecar kept: it repeats the removal.
    plane.change(|i| {
        i.clusters.pop();
    });
    sidecar.wait("the next update", |s| s.applied == 2).await;
    let updates = sidecar.updates();
    let next = &updates[2];
    assert!(!next.full);
    assert_eq!(
        next.removed_clusters,
        vec!["outbound|27017|v1|mongodb.default.svc.cluster.local".to_owned()]
    );
    assert_eq!(
        sidecar.view(),
        compile(&plane.inputs.borrow(), &node("x", "default"))
    );
    let mut text = String::new();
    plane.metrics.encode(&mut text);
    assert!(text.contains("meshmeter_control_nacks_total 1\n"), "{text}");
    sidecar.stop().await;
    plane.shut_down().await;
}

/// Opens a raw stream with `first` as the first message and returns the status it ends with.
async fn raw_stream_status(addr: SocketAddr, first: Subscribe) -> tonic::Status {
    raw_stream_status_of(addr, vec![first]).await
}

/// Opens a raw stream that sends `messages` and then nothing, and returns the status it ends
/// with.
async fn raw_stream_status_of(addr: SocketAddr, messages: Vec<Subscribe>) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let outbound = futures_util::stream::iter(messages).chain(futures_util::stream::pending());
    let codec = tonic_prost::ProstCodec::<Subscribe, ViewUpdate>::default();
    match grpc
        .streaming(
            tonic::Request::new(outbound),
            PathAndQuery::from_static(STREAM_PATH),
            codec,
        )
        .await
    {
        Err(status) => status,
        Ok(mut r) => match r.get_mut().message().await {
            Err(status) => status,
            Ok(m) => panic!("expected a refusal, got {m:?}"),
        },
    }
}

use futures_util::StreamExt;

#[tokio::test]
async fn hostile_first_messages_get_clear_statuses() {
    let plane = Plane::start(two_services()).await;
    let status = raw_stream_status(plane.addr, Subscribe::default()).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "the first Subscribe message must name the node (field 1, 'node')"
    );

    let status = raw_stream_status(
        plane.addr,
        Subscribe {
            node: Some(Node::default()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "the first Subscribe message's node has an empty 'id' (expected <pod>.<namespace>)"
    );

    let mut big = node("big.default", "default");
    big.labels.insert("blob".into(), "x".repeat(2 << 20));
    let status = raw_stream_status(
        plane.addr,
        Subscribe {
            node: Some(big),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("the first Subscribe message: "),
        "{status:?}"
    );
    assert_eq!(plane.server.stats().refused(Refusal::NoNode), 2);
    assert_eq!(plane.server.stats().refused(Refusal::BadMessage), 1);
    assert_eq!(plane.server.stats().connected.get(), 0);
    plane.shut_down().await;
}

#[tokio::test]
async fn a_stream_that_never_names_its_node_is_ended() {
    let config = ServerConfig {
        first_message_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let plane = Plane::start_with("127.0.0.1:0".parse().unwrap(), two_services(), config).await;
    let status = raw_stream_status_of(plane.addr, vec![]).await;
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert_eq!(
        status.message(),
        "no Subscribe message within 200ms of opening the stream"
    );
    assert_eq!(plane.server.stats().refused(Refusal::Timeout), 1);
    plane.shut_down().await;
}

#[tokio::test]
async fn a_source_may_shape_views_by_more_than_namespace_and_labels() {
    let (_inputs, rx) = watch::channel(Arc::new(two_services()));
    let metrics = SelfMetrics::new();
    // Views that depend on the first address's last octet being odd or even.
    let source = WatchSource::new(rx, compile).with_shape(|_: &Inputs, node: &Node| {
        let mut shape = meshmeter_control::Shape::of(node);
        let odd = node.ips[0].ends_with(['1', '3', '5', '7', '9']);
        shape.extra = vec![if odd { "odd" } else { "even" }.to_owned()];
        shape
    });
    let server = ControlServer::new(Arc::new(source), &metrics, ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    let mut sidecars = Vec::new();
    for ip in ["10.1.0.1", "10.1.0.3", "10.1.0.2"] {
        let mut n = node(&format!("pod-{ip}.default"), "default");
        n.ips = vec![ip.into()];
        let mut s = Sidecar::start(addr, n);
        s.wait("the view", |s| s.applied == 1).await;
        sidecars.push(s);
    }
    assert_eq!(server.stats().compiles.get(), 2);
    // The two shapes' views are equal: they are held once, under one version.
    let versions: Vec<u64> = sidecars.iter().map(|s| s.status.borrow().version).collect();
    assert_eq!(versions[0], versions[2]);
    for s in sidecars {
        s.stop().await;
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
