//! The seed's two pods as network namespaces, each with `meshmeter capture` and
//! `meshmeter proxy --transparent` (as uid 1337), the telemetry server in a third namespace
//! that also holds the bridge joining them:
//!
//! ```text
//!   ratings pod (10.213.N.2)          switch (10.213.N.1)           mongodb pod (10.213.N.3)
//!   client -> capture -> :15001  ->   br0, meshmeter mixer   ->   capture -> :15006 -> server
//! ```
//!
//! The client connects to the mongodb pod's address directly and knows nothing of proxies.
//! Both sides report; every count is checked against what the endpoints counted. Needs root,
//! `ip netns` and iptables (`scripts/install-test-deps.sh`); skips with a message otherwise.
//! Namespaces and processes are removed however the test ends (a `Drop` guard).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

const BIN: &str = env!("CARGO_BIN_EXE_meshmeter");
const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/tcp-metrics.yaml"
);
const SIDECAR_UID: &str = "1337";

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Why the test cannot run here, if it cannot.
fn missing_facility() -> Option<String> {
    for tool in ["ip", "iptables-restore", "setpriv"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!(
                "{tool} is not installed (scripts/install-test-deps.sh)"
            ));
        }
    }
    let probe = format!("mmprobe{}", std::process::id());
    if let Err(e) = run(&["ip", "netns", "add", &probe]) {
        return Some(format!(
            "cannot create a network namespace (needs root): {e}"
        ));
    }
    let _ = run(&["ip", "netns", "del", &probe]);
    None
}

/// The test's namespaces and processes; dropping it kills the processes, then deletes the
/// namespaces (and with them every interface, address and capture rule the test made).
struct Lab {
    /// Namespace names: switch, ratings pod, mongodb pod.
    switch: String,
    ratings: String,
    mongodb: String,
    /// `10.213.N.0/24`: N distinct per test and process.
    net: u8,
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                let log = std::fs::read_to_string(self.dir.join(format!("{name}.log")));
                eprintln!("--- {name} log ---\n{}", log.unwrap_or_default());
            }
        }
        for ns in [&self.ratings, &self.mongodb, &self.switch] {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    fn new(tag: &str, test_no: u8) -> Lab {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("meshmeter-transparent-{pid}-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        // The sidecar runs as uid 1337 and reads its files from here.
        run(&["chmod", "755", dir.to_str().unwrap()]).unwrap();
        let lab = Lab {
            switch: format!("mm{pid}{tag}s"),
            ratings: format!("mm{pid}{tag}r"),
            mongodb: format!("mm{pid}{tag}m"),
            net: u8::try_from((pid % 120) * 2 + u32::from(test_no)).unwrap(),
            dir,
            children: Vec::new(),
        };
        lab.wire()
            .unwrap_or_else(|e| panic!("building the namespaces: {e}"));
        lab
    }

    fn ip(&self, host: u8) -> String {
        format!("10.213.{}.{host}", self.net)
    }

    /// Namespaces, a bridge in the switch, one veth per pod; nothing in the root namespace.
    fn wire(&self) -> Result<(), String> {
        let s = self.switch.as_str();
        for ns in [s, &self.ratings, &self.mongodb] {
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        run(&["ip", "-n", s, "link", "add", "br0", "type", "bridge"])?;
        run(&[
            "ip",
            "-n",
            s,
            "addr",
            "add",
            &format!("{}/24", self.ip(1)),
            "dev",
            "br0",
        ])?;
        run(&["ip", "-n", s, "link", "set", "br0", "up"])?;
        for (pod, host, port) in [(&self.ratings, 2, "v-r"), (&self.mongodb, 3, "v-m")] {
            run(&[
                "ip", "-n", s, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", pod,
            ])?;
            run(&["ip", "-n", s, "link", "set", port, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.ip(host));
            run(&["ip", "-n", pod, "addr", "add", &addr, "dev", "eth0"])?;
            run(&["ip", "-n", pod, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        run(&["chmod", "644", path.to_str().unwrap()]).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn workloads(&self) -> String {
        let text = format!(
            "workloads:\n\
             - name: ratings-v2\n  namespace: default\n  labels: {{app: ratings, version: v2}}\n  ips: [{}]\n\
             - name: mongodb-v1\n  namespace: default\n  labels: {{app: mongodb, version: v1}}\n  ips: [{}]\n  services: [mongodb.default.svc.cluster.local]\n",
            self.ip(2),
            self.ip(3)
        );
        self.file("workloads.yaml", &text)
    }

    /// Runs `meshmeter ARGS` in namespace `ns`, as `uid` when given; its log goes to a file
    /// shown if the test fails.
    fn spawn(&mut self, name: &str, ns: &str, uid: Option<&str>, args: &[&str]) {
        let log = File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        if let Some(uid) = uid {
            cmd.args(["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"]);
        }
        let child = cmd
            .arg(BIN)
            .args(args)
            .env("MESHMETER_LOG", "info,meshmeter_proxy=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push((name.to_owned(), child));
    }

    fn capture(&self, ns: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, BIN, "capture"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "meshmeter capture in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Telemetry server in the switch; a transparent sidecar in each pod, which also runs the
    /// seed's configuration in-process, so each side's own view of the seed's series can be
    /// read from its `/metrics`.
    fn start(&mut self) {
        let workloads = self.workloads();
        let seed = self.file("tcp-metrics.yaml", &std::fs::read_to_string(SEED).unwrap());
        let (grpc, metrics) = (
            format!("{}:9091", self.ip(1)),
            format!("{}:42422", self.ip(1)),
        );
        let switch = self.switch.clone();
        self.spawn(
            "mixer",
            &switch,
            None,
            &[
                "mixer",
                "--config-dir",
                &seed,
                "--workloads",
                &workloads,
                "--grpc-addr",
                &grpc,
                "--metrics-addr",
                &metrics,
            ],
        );
        let pods = [
            (
                self.ratings.clone(),
                "ratings",
                [
                    "ratings-v2-0",
                    "ratings-v2",
                    "app=ratings,version=v2",
                    "ratings.default.svc.cluster.local",
                ],
            ),
            (
                self.mongodb.clone(),
                "mongodb",
                [
                    "mongodb-v1-0",
                    "mongodb-v1",
                    "app=mongodb,version=v1",
                    "mongodb.default.svc.cluster.local",
                ],
            ),
        ];
        for (ns, name, [pod, workload, labels, service]) in pods {
            self.capture(&ns);
            self.spawn(
                &format!("{name}-sidecar"),
                &ns,
                Some(SIDECAR_UID),
                &[
                    "proxy",
                    "--transparent",
                    "--mixer",
                    &grpc,
                    "--batch-delay",
                    "100ms",
                    "--name",
                    pod,
                    "--namespace",
                    "default",
                    "--workload",
                    workload,
                    "--labels",
                    labels,
                    "--service-host",
                    service,
                    "--metrics-addr",
                    "127.0.0.1:15020",
                    "--telemetry-config",
                    &seed,
                    "--no-default-config",
                    "--workloads",
                    &workloads,
                ],
            );
        }
        let ready = |ns: &str, addr: &str| {
            let (ns, addr) = (ns.to_owned(), addr.to_owned());
            eventually(Duration::from_secs(30), move || {
                when(get(&ns, &addr, "/ready"), |_| true)
            })
        };
        ready(&self.switch, &metrics);
        ready(&self.ratings, "127.0.0.1:15020");
        ready(&self.mongodb, "127.0.0.1:15020");
    }
}

/// Runs `f` on a thread that entered namespace `ns`: sockets it makes belong to `ns` and can
/// be used from any thread afterwards.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        setns(&fd, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .expect("thread in the namespace")
}

/// `GET path` from inside `ns`; the body when the answer is 200.
fn get(ns: &str, addr: &str, path: &str) -> Option<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut s = in_ns(ns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    // HTTP/1.0: the body is delimited by the close, never chunked.
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

/// The value of the one sample of `metric` whose labels include every `labels` pair; `None`
/// when there is no such sample.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let matching: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        matching.len() <= 1,
        "{metric} {labels:?} matches several samples:\n{text}"
    );
    matching.first().copied()
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// One exchange, counted by both endpoints: the client sends `request` and half-closes, the
/// server reads to the end, answers `response` and closes. Returns (server got, client got).
fn exchange(lab: &Lab, request: usize, response: usize) -> (usize, usize) {
    let listener = in_ns(&lab.mongodb, || TcpListener::bind("0.0.0.0:27017")).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        assert_eq!(
            got,
            payload(request, 1),
            "the server got the client's bytes, unchanged"
        );
        conn.write_all(&payload(response, 2)).unwrap();
        got.len()
    });
    let target: SocketAddr = format!("{}:27017", lab.ip(3)).parse().unwrap();
    let mut client = in_ns(&lab.ratings, move || TcpStream::connect(target)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    client.write_all(&payload(request, 1)).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(
        got,
        payload(response, 2),
        "the client got the server's bytes, unchanged"
    );
    (server.join().unwrap(), got.len())
}

/// Connects from the ratings pod to `target` and expects the connection to end in a reset
/// (or a refusal), with no byte delivered: what the client would see without proxies.
fn expect_refused(lab: &Lab, target: String) {
    let target: SocketAddr = target.parse().unwrap();
    let connected = in_ns(&lab.ratings, move || TcpStream::connect(target));
    let mut client = match connected {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
        other => other.unwrap(),
    };
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // No write: a write that meets the reset would consume it, and the read would then see a
    // plain end of stream.
    let mut buf = [0u8; 16];
    let err = client
        .read(&mut buf)
        .expect_err("reset, not data or a clean end");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{target}: {err}");
}

#[test]
#[ignore = "needs root, ip netns and iptables"]
fn seed_pods_report_both_sides_exactly() {
    if let Some(why) = missing_facility() {
        eprintln!("SKIP: {why}");
        return;
    }
    let mut lab = Lab::new("a", 0);
    lab.start();

    let (request, response) = (100_003, 54_321);
    assert_eq!(exchange(&lab, request, response), (request, response));
    // Nobody listens on 27018 in the mongodb pod; 15006 is its sidecar's own inbound port.
    expect_refused(&lab, format!("{}:27018", lab.ip(3)));
    expect_refused(&lab, format!("{}:15006", lab.ip(3)));

    let (req, resp) = (request as u64, response as u64);
    // Each side's own view of the seed's series (in-proxy telemetry), exact.
    for (ns, side) in [(&lab.mongodb, "inbound"), (&lab.ratings, "outbound")] {
        let labels = [
            ("destination_version", "v1"),
            ("source_service", "ratings-v2"),
            ("source_version", "v2"),
        ];
        let text = eventually(Duration::from_secs(30), || {
            when(get(ns, "127.0.0.1:15020", "/metrics"), |text| {
                sample(text, "istio_mongo_received_bytes", &labels) == Some(req)
            })
        });
        assert_eq!(
            sample(&text, "istio_mongo_sent_bytes", &labels),
            Some(resp),
            "{side}:\n{text}"
        );
    }

    // The telemetry server: Istio's default metrics keep the sides apart by `reporter`, and
    // both name the same bytes; the seed's metric has no such label and adds both sides.
    let mixer = format!("{}:42422", lab.ip(1));
    let pair = [
        ("source_workload", "ratings-v2"),
        ("source_version", "v2"),
        ("destination_workload", "mongodb-v1"),
        ("destination_version", "v1"),
        ("destination_service", "mongodb.default.svc.cluster.local"),
        ("response_flags", "-"),
    ];
    let text = eventually(Duration::from_secs(30), || {
        when(get(&lab.switch, &mixer, "/metrics"), |text| {
            ["destination", "source"].iter().all(|reporter| {
                let mut labels = pair.to_vec();
                labels.push(("reporter", reporter));
                sample(text, "istio_tcp_received_bytes_total", &labels) == Some(req)
            })
        })
    });
    for reporter in ["destination", "source"] {
        let mut labels = pair.to_vec();
        labels.push(("reporter", reporter));
        assert_eq!(
            sample(&text, "istio_tcp_sent_bytes_total", &labels),
            Some(resp),
            "{text}"
        );
    }
    let seed = [
        ("destination_version", "v1"),
        ("source_service", "ratings-v2"),
    ];
    assert_eq!(
        sample(&text, "istio_mongo_received_bytes", &seed),
        Some(2 * req),
        "{text}"
    );

    // The refused port: the mongodb side could not connect its application (UF); the
    // connection to its own inbound port was refused as a loop.
    let mongodb = get(&lab.mongodb, "127.0.0.1:15020", "/metrics").unwrap();
    let ratings = get(&lab.ratings, "127.0.0.1:15020", "/metrics").unwrap();
    assert_eq!(
        sample(
            &mongodb,
            "meshmeter_proxy_upstream_connect_failures_total",
            &[]
        ),
        Some(1)
    );
    assert_eq!(
        sample(&mongodb, "meshmeter_proxy_loops_refused_total", &[]),
        Some(1)
    );
    assert_eq!(
        sample(&mongodb, "meshmeter_proxy_not_redirected_total", &[]),
        Some(0)
    );
    // The sidecars' own traffic (reports to the telemetry server, the forwarded connections)
    // is never captured: each sidecar accepted exactly the three client connections.
    assert_eq!(
        sample(&ratings, "meshmeter_proxy_connections_accepted_total", &[]),
        Some(3)
    );
    assert_eq!(
        sample(&mongodb, "meshmeter_proxy_connections_accepted_total", &[]),
        Some(3)
    );
    assert_eq!(
        sample(&ratings, "meshmeter_proxy_loops_refused_total", &[]),
        Some(0)
    );
}
