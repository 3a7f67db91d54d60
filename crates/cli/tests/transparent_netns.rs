//! The seed's two pods as network namespaces (`meshmeter-podnet`), each with
//! `meshmeter capture` and `meshmeter proxy --transparent` (as uid 1337), the telemetry server
//! in a third namespace that also holds the bridge joining them:
//!
//! ```text
//!   ratings pod (.2)                  switch (.1)                   mongodb pod (.3)
//!   client -> capture -> :15001  ->   br0, meshmeter mixer   ->   capture -> :15006 -> server
//! ```
//!
//! The client connects to the mongodb pod's address directly and knows nothing of proxies.
//! Both sides report; every count is checked against what the endpoints counted. Needs root,
//! `ip netns`, iptables and setpriv (`scripts/install-test-deps.sh`); skips with a message
//! otherwise. Namespaces and processes are removed however a test ends (`Pods`' `Drop`).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use meshmeter_podnet::{unavailable, Place, Pods, SIDECAR_UID};

const BIN: &str = env!("CARGO_BIN_EXE_meshmeter");
const SEED: &str = include_str!("../../../examples/tcp-metrics.yaml");
const ADMIN: &str = "127.0.0.1:15020";

/// Pods for test number `n` of this file: names and addresses unique per process and test.
fn pods(n: u8) -> Pods {
    let pid = std::process::id();
    let net = u8::try_from((pid % 120) * 2 + u32::from(n)).expect("below 256");
    Pods::new(&format!("mm{pid}t{n}"), net).unwrap_or_else(|e| panic!("building the pods: {e}"))
}

/// Telemetry server in the switch; a transparent sidecar in each pod, which also runs the
/// seed's configuration in-process, so each side's own view of the seed's series can be read
/// from its `/metrics`. Returns the server's metrics address.
fn start(pods: &mut Pods) -> SocketAddr {
    let bin = Path::new(BIN);
    let workloads = pods.file("workloads.yaml", &pods.workloads_yaml()).unwrap();
    let seed = pods.file("tcp-metrics.yaml", SEED).unwrap();
    let (workloads, seed) = (workloads.to_str().unwrap(), seed.to_str().unwrap());
    let switch = pods.ipv4(Place::Switch);
    let (grpc, metrics) = (format!("{switch}:9091"), SocketAddr::new(switch, 42422));
    let log = [
        ("MESHMETER_LOG", "info,meshmeter_proxy=debug"),
        ("NO_COLOR", "1"),
    ];
    let mixer = [
        "mixer",
        "--config-dir",
        seed,
        "--workloads",
        workloads,
        "--grpc-addr",
        &grpc,
        "--metrics-addr",
        &metrics.to_string(),
    ];
    pods.spawn("mixer", Place::Switch, None, bin, &mixer, &log)
        .unwrap();
    let sides = [
        (
            Place::Ratings,
            "ratings",
            "ratings-v2",
            "app=ratings,version=v2",
            "ratings",
        ),
        (
            Place::Mongodb,
            "mongodb",
            "mongodb-v1",
            "app=mongodb,version=v1",
            "mongodb",
        ),
    ];
    for (place, name, workload, labels, service) in sides {
        pods.exec(place, bin, &["capture"]).unwrap();
        let pod = format!("{workload}-0");
        let service = format!("{service}.default.svc.cluster.local");
        let proxy = [
            "proxy",
            "--transparent",
            "--mixer",
            &grpc,
            "--batch-delay",
            "100ms",
            "--name",
            &pod,
            "--namespace",
            "default",
            "--workload",
            workload,
            "--labels",
            labels,
            "--service-host",
            &service,
            "--metrics-addr",
            ADMIN,
            "--telemetry-config",
            seed,
            "--no-default-config",
            "--workloads",
            workloads,
        ];
        let sidecar = format!("{name}-sidecar");
        pods.spawn(&sidecar, place, Some(SIDECAR_UID), bin, &proxy, &log)
            .unwrap();
    }
    let ready = |place: Place, addr: SocketAddr| {
        eventually(Duration::from_secs(30), || {
            when(get(pods, place, addr, "/ready"), |_| true)
        })
    };
    ready(Place::Switch, metrics);
    ready(Place::Ratings, ADMIN.parse().unwrap());
    ready(Place::Mongodb, ADMIN.parse().unwrap());
    metrics
}

/// `GET path` from inside the place's namespace; the body when the answer is 200.
fn get(pods: &Pods, place: Place, addr: SocketAddr, path: &str) -> Option<String> {
    let connect = move || TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    let mut s = pods.run_in(place, connect).ok()?.ok()?;
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
    let (with_labels, bare) = (format!("{metric}{{"), format!("{metric} "));
    let matching: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with(&with_labels) || l.starts_with(&bare))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        // Counters are floats in the text format (`2.511022e+06`), exact below 2^53.
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| {
            assert!(v.fract() == 0.0 && v >= 0.0, "{metric}: {v} is not a count");
            v as u64
        })
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

/// The mongodb pod's server on `port` of every address: for each of `connections`, reads to
/// the end (the client half-closes), checks the bytes, answers `response(request length)` and
/// closes. Returns the bytes it received in total.
fn server(
    pods: &Pods,
    port: u16,
    connections: usize,
    response: fn(usize) -> usize,
) -> std::thread::JoinHandle<usize> {
    let bind = move || {
        let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
        // Dual stack: IPv4 clients arrive as mapped addresses.
        socket.set_only_v6(false)?;
        socket.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
        socket.listen(1024)?;
        Ok::<TcpListener, std::io::Error>(socket.into())
    };
    let listener = pods.run_in(Place::Mongodb, bind).unwrap().unwrap();
    std::thread::spawn(move || {
        let handlers: Vec<_> = (0..connections)
            .map(|_| {
                let (mut conn, _) = listener.accept().unwrap();
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    let mut got = Vec::new();
                    conn.read_to_end(&mut got).unwrap();
                    assert_eq!(got, payload(got.len(), 1), "the client's bytes, unchanged");
                    conn.write_all(&payload(response(got.len()), 2)).unwrap();
                    got.len()
                })
            })
            .collect();
        handlers.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

/// One exchange from the ratings pod, counted by the client: sends `request` bytes,
/// half-closes, reads the answer to the end and checks it. Returns the answer's length.
fn exchange(pods: &Pods, target: SocketAddr, request: usize) -> usize {
    let mut client = pods
        .run_in(Place::Ratings, move || TcpStream::connect(target))
        .unwrap()
        .unwrap_or_else(|e| panic!("connect {target}: {e}"));
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    client.write_all(&payload(request, 1)).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got, payload(got.len(), 2), "the server's bytes, unchanged");
    got.len()
}

/// Connects from the ratings pod to `target` and expects the connection to end in a reset
/// (or a refusal), with no byte delivered: what the client would see without proxies.
fn expect_refused(pods: &Pods, target: SocketAddr) {
    let connected = pods.run_in(Place::Ratings, move || TcpStream::connect(target));
    let mut client = match connected.unwrap() {
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

/// The telemetry server's Istio default series for ratings-v2 -> mongodb-v1, by reporter.
fn tcp_labels(reporter: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("reporter", reporter),
        ("source_workload", "ratings-v2"),
        ("source_version", "v2"),
        ("destination_workload", "mongodb-v1"),
        ("destination_version", "v1"),
        ("destination_service", "mongodb.default.svc.cluster.local"),
        ("response_flags", "-"),
    ]
}

/// Waits until the server shows `received`/`sent` bytes from both reporters; returns its text.
fn both_sides(pods: &Pods, metrics: SocketAddr, received: u64, sent: u64) -> String {
    let text = eventually(Duration::from_secs(30), || {
        when(get(pods, Place::Switch, metrics, "/metrics"), |text| {
            ["destination", "source"].iter().all(|r| {
                sample(text, "istio_tcp_received_bytes_total", &tcp_labels(r)) == Some(received)
            })
        })
    });
    for reporter in ["destination", "source"] {
        let labels = tcp_labels(reporter);
        let value = sample(&text, "istio_tcp_sent_bytes_total", &labels);
        assert_eq!(value, Some(sent), "{reporter}:\n{text}");
    }
    text
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

#[test]
#[ignore = "needs root, ip netns, iptables and setpriv"]
fn seed_pods_report_both_sides_exactly() {
    if skip() {
        return;
    }
    let mut pods = pods(0);
    let metrics = start(&mut pods);
    let mongodb = pods.ipv4(Place::Mongodb);

    let (request, response) = (100_003, 54_321);
    let served = server(&pods, 27017, 1, |_| 54_321);
    assert_eq!(
        exchange(&pods, SocketAddr::new(mongodb, 27017), request),
        response
    );
    assert_eq!(served.join().unwrap(), request);
    // Nobody listens on 27018 in the mongodb pod; 15006 is its sidecar's own inbound port.
    expect_refused(&pods, SocketAddr::new(mongodb, 27018));
    expect_refused(&pods, SocketAddr::new(mongodb, 15006));

    let (req, resp) = (request as u64, response as u64);
    // Each side's own view of the seed's series (in-proxy telemetry), exact.
    let seed = [
        ("destination_version", "v1"),
        ("source_service", "ratings-v2"),
        ("source_version", "v2"),
    ];
    for (place, side) in [(Place::Mongodb, "inbound"), (Place::Ratings, "outbound")] {
        let text = eventually(Duration::from_secs(30), || {
            when(
                get(&pods, place, ADMIN.parse().unwrap(), "/metrics"),
                |text| sample(text, "istio_mongo_received_bytes", &seed) == Some(req),
            )
        });
        let sent = sample(&text, "istio_mongo_sent_bytes", &seed);
        assert_eq!(sent, Some(resp), "{side}:\n{text}");
    }

    // The telemetry server: Istio's default metrics keep the sides apart by `reporter`, and
    // both name the same bytes; the seed's metric has no such label and adds both sides.
    let text = both_sides(&pods, metrics, req, resp);
    let seed_both = sample(&text, "istio_mongo_received_bytes", &seed);
    assert_eq!(seed_both, Some(2 * req), "{text}");

    // The refused port: the mongodb side could not connect its application (UF); the
    // connection to its own inbound port was refused as a loop.
    let admin = ADMIN.parse().unwrap();
    let mongodb = get(&pods, Place::Mongodb, admin, "/metrics").unwrap();
    let ratings = get(&pods, Place::Ratings, admin, "/metrics").unwrap();
    let count = |text: &str, name: &str| sample(text, &format!("meshmeter_proxy_{name}"), &[]);
    assert_eq!(count(&mongodb, "upstream_connect_failures_total"), Some(1));
    assert_eq!(count(&mongodb, "loops_refused_total"), Some(1));
    assert_eq!(count(&mongodb, "not_redirected_total"), Some(0));
    // The sidecars' own traffic (reports to the telemetry server, the forwarded connections)
    // is never captured: each sidecar accepted exactly the three client connections.
    assert_eq!(count(&ratings, "connections_accepted_total"), Some(3));
    assert_eq!(count(&mongodb, "connections_accepted_total"), Some(3));
    assert_eq!(count(&ratings, "loops_refused_total"), Some(0));
}

#[test]
#[ignore = "needs root, ip netns, iptables and setpriv"]
fn many_ipv6_and_ipv4_connections_on_another_port_report_exactly() {
    if skip() {
        return;
    }
    let mut pods = pods(1);
    let metrics = start(&mut pods);
    // Sizes from empty to a few hundred KiB; the answer's size depends on the request's.
    let sizes: Vec<usize> = (0..24).map(|i| (i * i * 997) % 300_001).collect();
    let answer = |n: usize| (n * 7) % 65_537 + 1;
    let served = server(&pods, 6379, sizes.len(), answer);
    let clients: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let ip: IpAddr = if i % 2 == 0 {
                pods.ipv6(Place::Mongodb)
            } else {
                pods.ipv4(Place::Mongodb)
            };
            let target = SocketAddr::new(ip, 6379);
            let ns = pods.ns(Place::Ratings);
            std::thread::spawn(move || {
                let mut client = meshmeter_podnet::in_ns(&ns, move || TcpStream::connect(target))
                    .unwrap()
                    .unwrap_or_else(|e| panic!("connect {target}: {e}"));
                client
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                client.write_all(&payload(size, 1)).unwrap();
                client.shutdown(Shutdown::Write).unwrap();
                let mut got = Vec::new();
                client.read_to_end(&mut got).unwrap();
                assert_eq!(got, payload(answer(size), 2));
                got.len()
            })
        })
        .collect();
    let client_got: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let sent: usize = sizes.iter().sum();
    assert_eq!(served.join().unwrap(), sent);
    assert_eq!(client_got, sizes.iter().map(|&n| answer(n)).sum::<usize>());
    both_sides(&pods, metrics, sent as u64, client_got as u64);

    // Over IPv6 too: a port nobody listens on is reset (UF), the sidecar's own port is a loop.
    let v6 = pods.ipv6(Place::Mongodb);
    expect_refused(&pods, SocketAddr::new(v6, 27018));
    expect_refused(&pods, SocketAddr::new(v6, 15006));
    let mongodb = get(&pods, Place::Mongodb, ADMIN.parse().unwrap(), "/metrics").unwrap();
    let count = |name: &str| sample(&mongodb, &format!("meshmeter_proxy_{name}"), &[]);
    assert_eq!(count("upstream_connect_failures_total"), Some(1));
    assert_eq!(count("loops_refused_total"), Some(1));
    assert_eq!(
        count("connections_accepted_total"),
        Some(sizes.len() as u64 + 2)
    );
}

#[test]
#[ignore = "needs root, ip netns, iptables and setpriv"]
fn demo_transparent_agrees_with_its_client() {
    if skip() {
        return;
    }
    let out = std::process::Command::new(BIN)
        .args(["demo", "--transparent", "--duration", "3s"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("agree: yes"), "{stdout}");
    assert!(stdout.contains(", 0 errors"), "{stdout}");
}
