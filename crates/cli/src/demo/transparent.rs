//! `meshmeter demo --transparent`: the seed's scenario with the transparent sidecar. The two
//! pods are network namespaces (`meshmeter-podnet`); in each, `meshmeter capture` redirects TCP
//! and `meshmeter proxy --transparent` runs as uid 1337; the ratings client connects to the
//! mongodb pod's address and knows nothing of the proxies; the telemetry server runs beside
//! the bridge. Both sides report, so the server shows each connection twice, told apart by
//! the `reporter` label of Istio's default metrics.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshmeter_podnet::{unavailable, Place, Pods, SIDECAR_UID};

use super::Args;

/// The mongodb stand-in's port, as in the seed.
const MONGODB_PORT: u16 = 27017;

/// What the ratings client counted.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    received: AtomicU64,
    connections: AtomicU64,
    errors: AtomicU64,
}

pub(super) fn run(args: &Args) -> ExitCode {
    if let Some(why) = unavailable() {
        eprintln!("error: demo --transparent builds pods as network namespaces: {why}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(demo(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The pods, the telemetry server and both sidecars, started and ready.
fn start(args: &Args, bin: &Path) -> anyhow::Result<(Pods, SocketAddr)> {
    let mut pods = Pods::new(&format!("mmdemo{}", std::process::id()), 1)?;
    let workloads = pods.file("workloads.yaml", &pods.workloads_yaml())?;
    let configs: Vec<PathBuf> = if args.config.is_empty() {
        vec![pods.file("tcp-metrics.yaml", meshmeter_demo::SEED_CONFIG)?]
    } else {
        args.config.clone()
    };
    let switch = pods.ipv4(Place::Switch);
    let grpc = format!("{switch}:9091");
    let metrics = SocketAddr::new(switch, 42422);
    let mut mixer = vec!["mixer".to_owned()];
    for c in &configs {
        mixer.extend(["--config-dir".to_owned(), c.display().to_string()]);
    }
    let workloads = workloads.display().to_string();
    mixer.extend(["--workloads", &workloads, "--grpc-addr", &grpc].map(str::to_owned));
    mixer.extend(["--metrics-addr".to_owned(), metrics.to_string()]);
    let mixer: Vec<&str> = mixer.iter().map(String::as_str).collect();
    pods.spawn("mixer", Place::Switch, None, bin, &mixer, &[])?;
    let interval = format!("{}ms", args.report_interval.as_millis());
    let sides = [
        (
            Place::Ratings,
            "ratings-v2",
            "app=ratings,version=v2",
            "ratings",
        ),
        (
            Place::Mongodb,
            "mongodb-v1",
            "app=mongodb,version=v1",
            "mongodb",
        ),
    ];
    for (place, workload, labels, service) in sides {
        pods.exec(place, bin, &["capture"])?;
        let pod = format!("{workload}-0");
        let service = format!("{service}.default.svc.cluster.local");
        let proxy = [
            "proxy",
            "--transparent",
            "--mixer",
            &grpc,
            "--report-interval",
            &interval,
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
        ];
        pods.spawn(
            &format!("{workload}-sidecar"),
            place,
            Some(SIDECAR_UID),
            bin,
            &proxy,
            &[],
        )?;
    }
    wait_ready(&pods, metrics)?;
    Ok((pods, metrics))
}

/// Waits until the telemetry server answers and both sidecars accept on their inbound port.
fn wait_ready(pods: &Pods, metrics: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let inbound = SocketAddr::from((
        [127, 0, 0, 1],
        meshmeter_capture::DEFAULT_INBOUND_PROXY_PORT,
    ));
    loop {
        let server = get(pods, metrics, "/ready").is_some();
        let sidecars = [Place::Ratings, Place::Mongodb].iter().all(|&place| {
            let probe = move || TcpStream::connect_timeout(&inbound, Duration::from_secs(1));
            matches!(pods.run_in(place, probe), Ok(Ok(_)))
        });
        if server && sidecars {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs = ["mixer", "ratings-v2-sidecar", "mongodb-v1-sidecar"]
                .map(|name| format!("--- {name} ---\n{}", pods.log(name)));
            anyhow::bail!(
                "the pods did not become ready within 20s:\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn demo(args: &Args) -> anyhow::Result<bool> {
    let bin = std::env::current_exe()?;
    let (pods, metrics) = start(args, &bin)?;
    let mongodb = SocketAddr::new(pods.ipv4(Place::Mongodb), MONGODB_PORT);
    let listener = pods.run_in(Place::Mongodb, move || {
        TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], MONGODB_PORT)))
    })??;
    std::thread::spawn(move || serve(listener));
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (ns, counts, stop) = (
            pods.ns(Place::Ratings),
            Arc::clone(&counts),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || ratings(&ns, mongodb, &counts, &stop))
    };
    println!(
        "pods: ratings-v2 {} -> mongodb-v1 {mongodb}, both with capture and a transparent sidecar",
        pods.ipv4(Place::Ratings)
    );
    println!(
        "telemetry server: ip netns exec {} curl -s http://{metrics}/metrics",
        pods.ns(Place::Switch)
    );
    let started = Instant::now();
    loop {
        let done = args.duration.is_some_and(|d| started.elapsed() >= d);
        if done {
            break;
        }
        tokio::select! {
            () = crate::signals::terminated() => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        show(&pods, metrics, &counts);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = client.join();
    Ok(verdict(&pods, metrics, &counts, args.report_interval))
}

/// The mongodb stand-in: every connection gets back what it sends, byte for byte.
fn serve(listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
}

/// The ratings client: one long-lived connection with a query every 100 ms, and a short
/// connection every second, all to the mongodb pod's address.
fn ratings(ns: &str, mongodb: SocketAddr, counts: &Counts, stop: &AtomicBool) {
    let connect = || {
        counts.connections.fetch_add(1, Ordering::Relaxed);
        let ns = ns.to_owned();
        meshmeter_podnet::in_ns(&ns, move || TcpStream::connect(mongodb))
            .and_then(|c| c)
            .inspect_err(|_| {
                counts.errors.fetch_add(1, Ordering::Relaxed);
            })
            .ok()
    };
    let mut long = connect();
    let mut last_short = Instant::now();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if let Some(conn) = &mut long {
            if query(conn, 64 + (n * 13) % 96, counts).is_err() {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                long = None;
            }
        }
        if last_short.elapsed() >= Duration::from_secs(1) {
            last_short = Instant::now();
            if let Some(mut short) = connect() {
                let ok = query(&mut short, 200 + n % 300, counts).is_ok();
                let closed = short.shutdown(Shutdown::Write).is_ok();
                let mut rest = Vec::new();
                if !(ok && closed && short.read_to_end(&mut rest).is_ok() && rest.is_empty()) {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(conn) = long {
        let _ = conn.shutdown(Shutdown::Both);
    }
}

fn query(conn: &mut TcpStream, len: usize, counts: &Counts) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let message = vec![b'q'; len];
    conn.write_all(&message)?;
    counts.sent.fetch_add(len as u64, Ordering::Relaxed);
    let mut back = vec![0u8; len];
    conn.read_exact(&mut back)?;
    counts.received.fetch_add(len as u64, Ordering::Relaxed);
    Ok(())
}

/// What the telemetry server shows: the seed's series (both sides added) and Istio's default
/// TCP series per reporter.
struct Seen {
    seed_received: Option<u64>,
    destination: (Option<u64>, Option<u64>),
    source: (Option<u64>, Option<u64>),
}

fn seen(pods: &Pods, metrics: SocketAddr) -> Option<Seen> {
    let text = get(pods, metrics, "/metrics")?;
    let seed = [
        ("source_service", "ratings-v2"),
        ("destination_version", "v1"),
    ];
    let side = |reporter: &str| {
        let labels = [
            ("reporter", reporter),
            ("source_workload", "ratings-v2"),
            ("destination_workload", "mongodb-v1"),
        ];
        (
            sample(&text, "istio_tcp_received_bytes_total", &labels),
            sample(&text, "istio_tcp_sent_bytes_total", &labels),
        )
    };
    Some(Seen {
        seed_received: sample(&text, "istio_mongo_received_bytes", &seed),
        destination: side("destination"),
        source: side("source"),
    })
}

fn show(pods: &Pods, metrics: SocketAddr, counts: &Counts) {
    let (sent, received) = (
        counts.sent.load(Ordering::Relaxed),
        counts.received.load(Ordering::Relaxed),
    );
    let Some(s) = seen(pods, metrics) else {
        println!("client sent {sent} received {received}; telemetry server not answering");
        return;
    };
    let n = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    println!(
        "client sent {sent} received {received} | istio_mongo_received_bytes {} (both sides) | istio_tcp_received_bytes_total reporter=destination {} reporter=source {}",
        n(s.seed_received), n(s.destination.0), n(s.source.0)
    );
}

/// After the client stopped: waits for the final reports, then checks that each side's
/// series equal what the client counted.
fn verdict(pods: &Pods, metrics: SocketAddr, counts: &Counts, interval: Duration) -> bool {
    let sent = counts.sent.load(Ordering::Relaxed);
    let received = counts.received.load(Ordering::Relaxed);
    let want = (Some(sent), Some(received));
    let deadline = Instant::now() + interval * 3 + Duration::from_secs(10);
    let last = loop {
        let s = seen(pods, metrics);
        let agree = s
            .as_ref()
            .is_some_and(|s| s.destination == want && s.source == want);
        if agree || Instant::now() > deadline {
            break s.filter(|_| agree);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let errors = counts.errors.load(Ordering::Relaxed);
    let connections = counts.connections.load(Ordering::Relaxed);
    println!("client: {connections} connections, {sent} bytes sent, {received} received, {errors} errors");
    match last {
        Some(s) => {
            println!(
                "telemetry server: reporter=destination and reporter=source each {sent} received / {received} sent; the seed's istio_mongo_received_bytes {} counts both sides",
                s.seed_received.unwrap_or(0)
            );
            println!("agree: yes");
            errors == 0
        }
        None => {
            println!(
                "agree: NO (the telemetry server's series differ from what the client counted)"
            );
            false
        }
    }
}

/// `GET path` from the switch's namespace; the body when the answer is 200.
fn get(pods: &Pods, addr: SocketAddr, path: &str) -> Option<String> {
    let connect = move || TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    let mut s = pods.run_in(Place::Switch, connect).ok()?.ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    // HTTP/1.0: the body is delimited by the close, never chunked.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_owned())
}

/// The one sample of `metric` whose labels include every pair (counters are written as
/// floats, exact below 2^53).
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let prefix = format!("{metric}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
}
