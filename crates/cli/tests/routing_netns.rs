//! TCP traffic management end to end (`meshmeter-podnet`): a client pod (productpage), three
//! server pods `reviews-v1/v2/v3` (label `version`), the service `reviews` on an address no
//! pod holds (a VIP in the pods' subnet), the control plane and the telemetry server in the
//! switch, and transparent sidecars (`capture` + `proxy --transparent`) in every pod:
//!
//! ```text
//!   productpage (.2)                    switch (.1)                       reviews-vN (.3-.5)
//!   client -> VIP:9080 -> :15001   meshmeter control (views)        :15006 -> echo :9080
//!             routed to reviews-vN  meshmeter mixer (reports)
//! ```
//!
//! The client connects to the VIP only; its sidecar picks the endpoint from the view the
//! control plane compiled from `DestinationRule`/`VirtualService` files, which the test edits
//! while traffic flows. Checked: 80/20 weights over 1,000 connections (within 4 sigma), a
//! connection limit's `UO`, a subset change applied to new connections while an open one
//! carries on, an endpoint that dies being ejected, and the routed version in the telemetry
//! server's series with byte counts equal to what the servers received. Needs root, `ip
//! netns`, iptables and setpriv (`scripts/install-test-deps.sh`); skips with a message
//! otherwise.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshmeter_podnet::{unavailable, PodNet, SIDECAR_UID, SWITCH};

const BIN: &str = env!("CARGO_BIN_EXE_meshmeter");
const ADMIN: &str = "127.0.0.1:15020";
const PORT: u16 = 9080;
const CLIENT: &str = "productpage-v1";
const VERSIONS: [&str; 3] = ["v1", "v2", "v3"];
const HOST: &str = "reviews.default.svc.cluster.local";

fn server_pod(version: &str) -> String {
    format!("reviews-{version}")
}

/// The pod's service account (its application's name).
fn account(pod: &str) -> &'static str {
    match pod.starts_with("reviews-") {
        true => "reviews",
        false => "productpage",
    }
}

/// The traffic configuration the control plane reads: one DestinationRule with a subset per
/// version (`max_connections`, outlier detection), and a VirtualService sending the `tcp`
/// route to `weights` (subset, weight); no weights: no VirtualService (every endpoint).
fn traffic(max_connections: u32, weights: &[(&str, u32)]) -> String {
    let mut text = format!(
        "apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: {max_connections}
        connectTimeout: 2s
    outlierDetection:
      consecutiveErrors: 1
      interval: 1s
      baseEjectionTime: 5m
      maxEjectionPercent: 50
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
  - name: v3
    labels: {{version: v3}}
"
    );
    if !weights.is_empty() {
        text.push_str(
            "---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  tcp:
  - route:
",
        );
        for (subset, weight) in weights {
            text.push_str(&format!(
                "    - destination: {{host: reviews, subset: {subset}}}\n      weight: {weight}\n"
            ));
        }
    }
    text
}

/// The workloads file (identity for the telemetry server, the service catalog for the control
/// plane): the client, the three versions backing `reviews`, and the service on the VIP.
fn workloads(net: &PodNet) -> String {
    let mut text = format!(
        "services:\n- host: {HOST}\n  addresses: [{vip}]\n  ports:\n  - {{port: {PORT}, name: tcp-reviews}}\nworkloads:\n- name: {CLIENT}\n  namespace: default\n  labels: {{app: productpage, version: v1}}\n  ips: [{ip}]\n",
        vip = net.vip(0),
        ip = net.ip(CLIENT),
    );
    for v in VERSIONS {
        let pod = server_pod(v);
        text.push_str(&format!(
            "- name: {pod}\n  namespace: default\n  labels: {{app: reviews, version: {v}}}\n  ips: [{ip}]\n  services: [{HOST}]\n  service_account: reviews\n",
            ip = net.ip(&pod),
        ));
    }
    text
}

/// What one server pod's application received.
#[derive(Default)]
struct Served {
    connections: AtomicU64,
    bytes: AtomicU64,
}

/// An echo server on `PORT` of the pod: each connection's bytes are sent back as they come,
/// then the connection is closed after the client's end. Returns what it counts and a handle
/// on its listening socket (shut down to kill the server).
fn echo_server(net: &PodNet, pod: &str) -> (Arc<Served>, TcpListener) {
    let listener = net
        .run_in(pod, || TcpListener::bind(("0.0.0.0", PORT)))
        .unwrap()
        .unwrap();
    let handle = listener.try_clone().unwrap();
    let served = Arc::new(Served::default());
    let counts = Arc::clone(&served);
    std::thread::spawn(move || {
        // Ends when the listening socket is shut down (accept fails).
        while let Ok((mut conn, _)) = listener.accept() {
            let counts = Arc::clone(&counts);
            std::thread::spawn(move || {
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            counts.bytes.fetch_add(n as u64, Ordering::SeqCst);
                            if conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    (served, handle)
}

/// Kills a server: its listening socket stops listening (new connections are refused).
fn kill_server(listener: &TcpListener) {
    socket2::SockRef::from(listener)
        .shutdown(Shutdown::Both)
        .unwrap();
}

struct Mesh {
    net: PodNet,
    config: PathBuf,
    metrics: SocketAddr,
    served: Vec<Arc<Served>>,
    listeners: Vec<TcpListener>,
}

/// Everything up and ready: the servers, the telemetry server and control plane in the
/// switch, a transparent sidecar in every pod; with `mtls`, the CA in the switch too and
/// sidecars holding workload certificates of their service accounts.
fn start(n: u8, traffic_config: &str, mtls: bool) -> Mesh {
    let pid = std::process::id();
    let netno = u8::try_from((pid % 60) * 4 + u32::from(n) + 10).expect("below 256");
    let pods: Vec<String> = std::iter::once(CLIENT.to_owned())
        .chain(VERSIONS.iter().map(|v| server_pod(v)))
        .collect();
    let names: Vec<&str> = pods.iter().map(String::as_str).collect();
    let mut net = PodNet::new(&format!("mr{pid}t{n}"), netno, &names)
        .unwrap_or_else(|e| panic!("building the pods: {e}"));
    let bin = Path::new(BIN);
    let workloads = net.file("workloads.yaml", &workloads(&net)).unwrap();
    let config_dir = workloads.parent().unwrap().join("traffic");
    std::fs::create_dir_all(&config_dir).unwrap();
    let config = config_dir.join("reviews.yaml");
    std::fs::write(&config, traffic_config).unwrap();
    let switch = net.ip(SWITCH);
    let (grpc, metrics) = (format!("{switch}:9091"), SocketAddr::new(switch, 42422));
    let control = format!("{switch}:15010");
    let control_admin = SocketAddr::new(switch, 15014);
    let log = [
        ("MESHMETER_LOG", "info,meshmeter_proxy=debug"),
        ("NO_COLOR", "1"),
    ];
    let (workloads, config_dir) = (workloads.to_str().unwrap(), config_dir.to_str().unwrap());
    let mixer = [
        "mixer",
        "--workloads",
        workloads,
        "--grpc-addr",
        &grpc,
        "--metrics-addr",
        &metrics.to_string(),
    ];
    net.spawn("mixer", SWITCH, None, bin, &mixer, &log).unwrap();
    let control_args = [
        "control",
        "--listen",
        &control,
        "--config-dir",
        config_dir,
        "--workloads",
        workloads,
        "--admin",
        &control_admin.to_string(),
        // A file change is loaded once two checks agree: within 0.4 s.
        "--reload-interval",
        "200ms",
    ];
    net.spawn("control", SWITCH, None, bin, &control_args, &log)
        .unwrap();
    let ca = format!("{switch}:8060");
    let root = workloads.replace("workloads.yaml", "root.pem");
    if mtls {
        let tokens: String = pods
            .iter()
            .map(|pod| format!("token-for-{pod}-0123456789 default/{}\n", account(pod)))
            .collect();
        let tokens = net.file("tokens", &tokens).unwrap();
        let ca_admin = SocketAddr::new(switch, 15015);
        let ca_args = [
            "ca",
            "--listen",
            &ca,
            "--bootstrap-token-file",
            tokens.to_str().unwrap(),
            "--write-root-cert",
            &root,
            "--metrics-addr",
            &ca_admin.to_string(),
        ];
        net.spawn("ca", SWITCH, None, bin, &ca_args, &log).unwrap();
        eventually(Duration::from_secs(60), || {
            when(get(&net, SWITCH, ca_admin, "/ready"), |_| true)
        });
        for pod in &pods {
            net.file(
                &format!("{pod}.token"),
                &format!("token-for-{pod}-0123456789\n"),
            )
            .unwrap();
        }
    }
    let mut served = Vec::new();
    let mut listeners = Vec::new();
    for v in VERSIONS {
        let (s, l) = echo_server(&net, &server_pod(v));
        served.push(s);
        listeners.push(l);
    }
    for pod in &pods {
        net.exec(pod, bin, &["capture"]).unwrap();
        let (app, version) = match pod.strip_prefix("reviews-") {
            Some(v) => ("reviews", v),
            None => ("productpage", "v1"),
        };
        let labels = format!("app={app},version={version}");
        let ip = net.ip(pod).to_string();
        let token = workloads.replace("workloads.yaml", &format!("{pod}.token"));
        let name = format!("{pod}-0");
        let mut proxy = vec![
            "proxy",
            "--transparent",
            "--mixer",
            &grpc,
            "--control-plane",
            &control,
            "--batch-delay",
            "100ms",
            "--report-interval",
            "1s",
            "--name",
            &name,
            "--namespace",
            "default",
            "--workload",
            pod,
            "--labels",
            &labels,
            "--pod-ips",
            &ip,
            "--service-account",
            account(pod),
            "--metrics-addr",
            ADMIN,
        ];
        if mtls {
            proxy.extend([
                "--ca-addr",
                &ca,
                "--ca-token-file",
                &token,
                "--ca-root",
                &root,
            ]);
        }
        net.spawn(
            &format!("{pod}-sidecar"),
            pod,
            Some(SIDECAR_UID),
            bin,
            &proxy,
            &log,
        )
        .unwrap();
    }
    let ready = |net: &PodNet, pod: &str, addr: SocketAddr| {
        eventually(Duration::from_secs(60), || {
            when(get(net, pod, addr, "/ready"), |_| true)
        })
    };
    ready(&net, SWITCH, metrics);
    ready(&net, SWITCH, control_admin);
    for pod in &pods {
        ready(&net, pod, ADMIN.parse().unwrap());
    }
    Mesh {
        net,
        config,
        metrics,
        served,
        listeners,
    }
}

impl Mesh {
    fn vip(&self) -> SocketAddr {
        SocketAddr::new(self.net.vip(0), PORT)
    }

    /// Connections each version's server accepted so far.
    fn connections(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.served[i].connections.load(Ordering::SeqCst))
    }

    /// Bytes each version's server received so far.
    fn bytes(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.served[i].bytes.load(Ordering::SeqCst))
    }

    /// Rewrites the traffic configuration (atomically: the control plane never reads half).
    fn configure(&self, text: &str) {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// A client socket in the client pod, connected to the VIP.
    fn connect(&self) -> std::io::Result<TcpStream> {
        let vip = self.vip();
        let s = self
            .net
            .run_in(CLIENT, move || {
                TcpStream::connect_timeout(&vip, Duration::from_secs(5))
            })
            .unwrap()?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(s)
    }

    fn metrics(&self) -> Option<String> {
        get(&self.net, SWITCH, self.metrics, "/metrics")
    }
}

/// One short exchange over `s`: `len` bytes out, half-close, the echo back to the end.
/// `Ok(false)` when the proxy ended the connection without forwarding (refused, `UO`, `UF`).
fn exchange_on(mut s: TcpStream, len: usize) -> std::io::Result<bool> {
    let message = vec![b'r'; len];
    if let Err(e) = s.write_all(&message) {
        return refused(e);
    }
    if let Err(e) = s.shutdown(Shutdown::Write) {
        return refused(e);
    }
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) if got.is_empty() => Ok(false),
        Ok(_) => {
            assert_eq!(got, message, "the echo, unchanged");
            Ok(true)
        }
        Err(e) => refused(e),
    }
}

fn refused(e: std::io::Error) -> std::io::Result<bool> {
    match e.kind() {
        // A connection the proxy closed at once may be gone before the client's FIN.
        ErrorKind::ConnectionReset
        | ErrorKind::BrokenPipe
        | ErrorKind::ConnectionRefused
        | ErrorKind::NotConnected => Ok(false),
        _ => Err(e),
    }
}

/// `GET path` from inside the pod's namespace; the body when the answer is 200.
fn get(net: &PodNet, pod: &str, addr: SocketAddr, path: &str) -> Option<String> {
    let connect = move || TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    let mut s = net.run_in(pod, connect).ok()?.ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_owned())
}

/// Polls `check` until it yields a value or `limit` passes; then fails showing the last thing
/// it saw.
fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("condition not met within {limit:?}; last seen:\n{seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `Ok(text)` when `good`, else the text as what was seen.
fn when(text: Option<String>, good: impl FnOnce(&str) -> bool) -> Result<String, String> {
    match text {
        Some(text) if good(&text) => Ok(text),
        Some(text) => Err(text),
        None => Err("(no answer)".into()),
    }
}

/// The sum of the samples of `metric` whose labels include every `labels` pair (0 when none).
fn sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> u64 {
    let with_labels = format!("{metric}{{");
    text.lines()
        .filter(|l| l.starts_with(&with_labels))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| {
            assert!(v.fract() == 0.0 && v >= 0.0, "{metric}: {v} is not a count");
            v as u64
        })
        .sum()
}

/// The client side's (`reporter="source"`) series of traffic routed to `version`.
fn routed(version: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("reporter", "source"),
        ("source_workload", CLIENT),
        ("destination_service", HOST),
        ("destination_version", version),
    ]
}

fn skip() -> bool {
    match unavailable() {
        Some(why) => {
            eprintln!("SKIP: {why}");
            true
        }
        None => false,
    }
}

/// Waits until a new connection lands on `version` (index), making connections of `len`
/// bytes; returns how long it took, how many exchanges were made and how many of them the
/// proxy refused.
fn until_routed_to(mesh: &Mesh, version: usize, len: usize) -> (Duration, u64, u64) {
    let start = Instant::now();
    let (mut made, mut refused) = (0, 0);
    eventually(Duration::from_secs(10), || {
        let before = mesh.connections()[version];
        made += 1;
        let ok = exchange_on(mesh.connect().map_err(|e| e.to_string())?, len)
            .map_err(|e| e.to_string())?;
        refused += u64::from(!ok);
        match ok && mesh.connections()[version] > before {
            true => Ok(()),
            false => Err(format!("served so far: {:?}", mesh.connections())),
        }
    });
    (start.elapsed(), made, refused)
}

#[test]
#[ignore = "needs root, ip netns, iptables and setpriv"]
fn weights_limits_subsets_and_ejection_through_a_vip() {
    if skip() {
        return;
    }
    let mut mesh = start(0, &traffic(100, &[("v1", 80), ("v2", 20)]), false);
    // A sidecar is ready once it holds its first view, so the VIP is routed from the start.
    let warmup = mesh.connections();

    // 1. Weights: 1,000 short connections from 8 clients; v1's share is binomial
    //    (n = 1000, p = 0.8): sigma = sqrt(1000 * 0.8 * 0.2) = 12.65, 4 sigma = 51.
    let vip = mesh.vip();
    let ns = mesh.net.ns(CLIENT);
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let ns = ns.clone();
            std::thread::spawn(move || {
                meshmeter_podnet::in_ns(&ns, move || {
                    for i in 0..125 {
                        let s = TcpStream::connect(vip).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                        let served = exchange_on(s, 32 + (w * 125 + i) % 7).unwrap();
                        assert!(served, "connection {w}/{i} was not served");
                    }
                })
                .unwrap()
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let after = mesh.connections();
    let counts = [0, 1, 2].map(|i| after[i] - warmup[i]);
    eprintln!("1,000 connections split {counts:?}");
    assert_eq!(counts[0] + counts[1], 1000, "{counts:?}");
    assert_eq!(counts[2], 0, "{counts:?}");
    assert!(counts[0].abs_diff(800) <= 51, "v1 got {counts:?}");

    // 2. A connection limit of 2 (per cluster: the subsets v1 and v2 each allow two):
    //    connections are held open until one is refused with UO, which happens once the
    //    change is in force and both chosen clusters are full.
    mesh.configure(&traffic(2, &[("v1", 80), ("v2", 20)]));
    let mut held = Vec::new();
    let limit = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < limit, "no UO; {} held", held.len());
        // A UO close can beat the end of the client's own connect.
        let Ok(mut s) = mesh.connect() else {
            break;
        };
        let echoed = s.write_all(b"held").is_ok() && {
            let mut four = [0u8; 4];
            s.read_exact(&mut four).is_ok()
        };
        if !echoed {
            break;
        }
        held.push(s);
    }
    let mut uo = 1;
    eprintln!("UO after {} held connections", held.len());

    // 3. A subset change: everything to v3. The held connections carry on to where they
    //    went; new ones go to v3 within a second of the change reaching the control plane.
    mesh.configure(&traffic(100, &[("v3", 100)]));
    // Until then, the full subsets refuse new connections (UO).
    let (took, made, refused) = until_routed_to(&mesh, 2, 16);
    uo += refused;
    eprintln!("subset change in force after {took:?} ({made} attempts, {refused} UO)");
    assert!(
        took <= Duration::from_secs(1),
        "the change took {took:?} to apply"
    );
    for s in &mut held {
        s.write_all(b"still here").unwrap();
        let mut got = [0u8; 10];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still here");
    }
    for s in held.drain(..) {
        assert!(exchange_on(s, 0).is_ok());
    }
    let before = mesh.connections();
    for _ in 0..20 {
        assert!(exchange_on(mesh.connect().unwrap(), 16).unwrap());
    }
    let after = mesh.connections();
    assert_eq!(
        [0, 1, 2].map(|i| after[i] - before[i]),
        [0, 0, 20],
        "all new connections to v3"
    );

    // 4. Ejection: every endpoint (no VirtualService), then v3's pod dies (its server and
    //    its sidecar): one connect failure ejects it (consecutiveErrors: 1) and the
    //    connections after it succeed on v1 and v2.
    mesh.configure(&traffic(100, &[]));
    eventually(Duration::from_secs(10), || {
        let before = mesh.connections();
        for _ in 0..6 {
            exchange_on(mesh.connect().map_err(|e| e.to_string())?, 8)
                .map_err(|e| e.to_string())?;
        }
        let after = mesh.connections();
        match (0..3).all(|i| after[i] > before[i]) {
            true => Ok(()),
            false => Err(format!("round robin not in force yet: {after:?}")),
        }
    });
    kill_server(&mesh.listeners[2]);
    assert!(mesh.net.kill("reviews-v3-sidecar"));
    let mut failures = 0;
    let before = mesh.connections();
    for _ in 0..30 {
        // The proxy resets a client whose upstream failed; the reset can beat the end of
        // the client's own connect.
        let exchanged = match mesh.connect() {
            Ok(s) => exchange_on(s, 8),
            Err(e) => self::refused(e),
        };
        if !exchanged.unwrap() {
            failures += 1;
        }
    }
    let after = mesh.connections();
    eprintln!("after v3 died: {failures} failed of 30");
    assert!(failures <= 1, "{failures} failures: v3 was not ejected");
    assert_eq!(after[2], before[2], "nothing reached v3");
    assert_eq!(
        (after[0] - before[0]) + (after[1] - before[1]),
        30 - failures
    );

    // 5. The telemetry server: the client side's series name the version each connection
    //    really reached, with the bytes each server received, exactly; the refusals are
    //    counted with their flags.
    let bytes = mesh.bytes();
    let text = eventually(Duration::from_secs(30), || {
        when(mesh.metrics(), |text| {
            (0..3).all(|i| {
                sum(text, "istio_tcp_received_bytes_total", &routed(VERSIONS[i])) == bytes[i]
            })
        })
    });
    for i in 0..3 {
        let sent = sum(&text, "istio_tcp_sent_bytes_total", &routed(VERSIONS[i]));
        assert_eq!(sent, bytes[i], "{}: echo bytes\n{text}", VERSIONS[i]);
    }
    // Istio's default `destination_service` of this metric is the service's short name.
    let flagged = |flag: &'static str, version: &'static str| {
        let labels = [
            ("reporter", "source"),
            ("source_workload", CLIENT),
            ("destination_service_name", "reviews"),
            ("destination_service_namespace", "default"),
            ("destination_version", version),
            ("response_flags", flag),
        ];
        sum(&text, "istio_tcp_connections_closed_total", &labels)
    };
    // A refused connection reached no endpoint: its version is unknown.
    assert_eq!(flagged("UO", "unknown"), uo, "{text}");
    assert_eq!(flagged("UF", "v3"), failures, "{text}");
    let all_flagged = sum(
        &text,
        "istio_tcp_connections_closed_total",
        &[("reporter", "source"), ("response_flags", "UH")],
    );
    assert_eq!(all_flagged, 0, "{text}");
}

/// ISTIO_MUTUAL from the DestinationRule, STRICT from the MeshPolicy: the client's sidecar
/// originates mutual TLS to each endpoint it picks, checked against the endpoint's service
/// account; the servers' sidecars refuse a plaintext client; the servers' side reports carry
/// the principals and `mutual_tls`, and the bytes still match exactly.
#[test]
#[ignore = "needs root, ip netns, iptables and setpriv"]
fn routed_mutual_tls_and_strict_inbound_from_the_view() {
    if skip() {
        return;
    }
    let config = traffic(100, &[("v1", 50), ("v3", 50)]).replace(
        "  trafficPolicy:\n",
        "  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n",
    ) + "---
apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata:
  name: default
spec:
  peers:
  - mtls: {}
";
    let mesh = start(1, &config, true);
    let before = mesh.connections();
    for i in 0..40 {
        assert!(
            exchange_on(mesh.connect().unwrap(), 10 + i).unwrap(),
            "connection {i}"
        );
    }
    let after = mesh.connections();
    let counts = [0, 1, 2].map(|i| after[i] - before[i]);
    assert_eq!(counts[0] + counts[2], 40, "{counts:?}");
    assert_eq!(counts[1], 0, "{counts:?}");
    // A plaintext client straight to a server pod (no service address, so the client's
    // sidecar passes it through as it is): STRICT refuses it before the application.
    let v2 = SocketAddr::new(mesh.net.ip(&server_pod("v2")), PORT);
    let mut plain = mesh
        .net
        .run_in(CLIENT, move || TcpStream::connect(v2))
        .unwrap()
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = plain.write_all(b"plaintext");
    let _ = plain.shutdown(Shutdown::Write);
    // The answer is a TLS alert (or a reset), never the echo.
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !got.windows(9).any(|w| w == b"plaintext"),
        "plaintext got through: {got:?}"
    );
    assert_eq!(mesh.connections()[1], after[1], "nothing reached v2");

    let bytes = mesh.bytes();
    let server_side = |version: &'static str| {
        vec![
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
            (
                "source_principal",
                "cluster.local/ns/default/sa/productpage",
            ),
            (
                "destination_principal",
                "cluster.local/ns/default/sa/reviews",
            ),
            ("destination_version", version),
        ]
    };
    let text = eventually(Duration::from_secs(30), || {
        when(mesh.metrics(), |text| {
            [0, 2].iter().all(|&i| {
                let version = VERSIONS[i];
                sum(
                    text,
                    "istio_tcp_received_bytes_total",
                    &server_side(version),
                ) == bytes[i]
                    && sum(text, "istio_tcp_received_bytes_total", &routed(version)) == bytes[i]
            })
        })
    });
    assert!(bytes[0] > 0 && bytes[2] > 0, "{bytes:?}");
    let plaintext = sum(
        &text,
        "istio_tcp_received_bytes_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "none"),
        ],
    );
    assert_eq!(plaintext, 0, "{text}");
}
