//! The load generator of `bench/control-fanout.sh`: many simulated sidecars on one control
//! plane, and how long one change takes to reach the last of them.
//!
//! ```text
//! control_fanout init FILE [SERVICES] [ENDPOINTS]    write a workloads file
//! control_fanout run ADDR FILE PID [SIDECARS] [SHAPES] [ROUNDS]
//! ```
//!
//! `run` connects SIDECARS clients (each its own HTTP/2 connection, as real sidecars have)
//! spread over SHAPES namespaces, waits until every one holds its full view, then ROUNDS times
//! rewrites FILE with one endpoint more and times from the write to the last sidecar's
//! acknowledgement of the resulting update (the control plane's file poll and settle
//! included), and from the first sidecar's acknowledgement to the last one's (the fan-out
//! alone). It prints `key=value` lines: the control plane's RSS (from /proc/PID/status)
//! after the initial sync and at the end, and each round's times.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshmeter_control::{ClientConfig, ControlClient};
use meshmeter_routing::view::{Node, ViewUpdate};

fn workloads(services: usize, endpoints: usize, extra: usize) -> String {
    let mut out = String::from("services:\n");
    for s in 0..services {
        let _ = writeln!(
            out,
            "- host: svc{s}.default.svc.cluster.local\n  addresses: [10.96.{}.{}]\n  ports: [{{port: 9000, name: tcp, targetPort: 9000}}]",
            s / 250,
            s % 250 + 1
        );
    }
    out.push_str("workloads:\n");
    let mut n = 0;
    for s in 0..services {
        let count = endpoints + if s == 0 { extra } else { 0 };
        for e in 0..count {
            let _ = writeln!(
                out,
                "- name: svc{s}-v{}\n  pod: svc{s}-v{}-{e}\n  namespace: default\n  labels: {{app: svc{s}, version: v{}}}\n  ips: [10.{}.{}.{}]\n  services: [svc{s}.default.svc.cluster.local]",
                e % 3 + 1,
                e % 3 + 1,
                e % 3 + 1,
                n / 65536 + 1,
                n / 256 % 256,
                n % 256
            );
            n += 1;
        }
    }
    out
}

fn rss_kib(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// Rewrites `path` through a rename, so the control plane never reads it half-written.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write the workloads file");
    std::fs::rename(&tmp, path).expect("rename the workloads file");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("init") => {
            let path = Path::new(args.get(2).expect("FILE"));
            write_atomically(path, &workloads(arg(&args, 3, 50), arg(&args, 4, 20), 0));
        }
        Some("run") => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(run(&args));
        }
        _ => {
            eprintln!("usage: control_fanout init FILE [SERVICES] [ENDPOINTS] | run ADDR FILE PID [SIDECARS] [SHAPES] [ROUNDS] [SERVICES] [ENDPOINTS]");
            std::process::exit(2);
        }
    }
}

async fn run(args: &[String]) {
    let addr = args.get(2).expect("ADDR").clone();
    let file = Path::new(args.get(3).expect("FILE")).to_owned();
    let pid = args.get(4).expect("PID").clone();
    let sidecars: usize = arg(args, 5, 1000);
    let shapes: usize = arg(args, 6, 20);
    let rounds: usize = arg(args, 7, 3);
    let (services, endpoints) = (arg(args, 8, 50), arg(args, 9, 20));

    // Per sidecar: updates applied; and the latest time any sidecar applied one.
    let applied: Arc<Vec<AtomicU64>> = Arc::new((0..sidecars).map(|_| AtomicU64::new(0)).collect());
    let last_apply = Arc::new(Mutex::new(Instant::now()));
    // The first sidecar to apply an update since the last reset.
    let first_apply: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut stops = Vec::with_capacity(sidecars);
    let started = Instant::now();
    for i in 0..sidecars {
        let ns = format!("ns{}", i % shapes);
        let node = Node {
            id: format!("pod-{i}.{ns}"),
            namespace: ns,
            labels: [("app".to_owned(), format!("client{}", i % shapes))].into(),
            ips: vec![format!("10.200.{}.{}", i / 250, i % 250 + 1)],
            service_account: "client".into(),
        };
        let mut config = ClientConfig::new(addr.clone(), node);
        config.backoff_max = Duration::from_secs(2);
        let client = ControlClient::new(config).expect("a client");
        let (applied, last_apply) = (Arc::clone(&applied), Arc::clone(&last_apply));
        let first_apply = Arc::clone(&first_apply);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        tokio::spawn(async move {
            client
                .run(
                    move |_u: &ViewUpdate| {
                        applied[i].fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        *last_apply.lock().unwrap() = now;
                        first_apply.lock().unwrap().get_or_insert(now);
                        Ok(())
                    },
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
    }
    let wait_all = |want: u64, limit: Duration| {
        let applied = Arc::clone(&applied);
        async move {
            let deadline = Instant::now() + limit;
            loop {
                let done = applied
                    .iter()
                    .filter(|a| a.load(Ordering::Relaxed) >= want)
                    .count();
                if done == applied.len() {
                    return true;
                }
                if Instant::now() > deadline {
                    eprintln!(
                        "only {done} of {} sidecars have update {want}",
                        applied.len()
                    );
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    if !wait_all(1, Duration::from_secs(120)).await {
        std::process::exit(1);
    }
    let synced = *last_apply.lock().unwrap() - started;
    let (rss_synced, _) = rss_kib(&pid);
    println!("sidecars={sidecars}");
    println!("shapes={shapes}");
    println!("services={services}");
    println!("endpoints={}", services * endpoints);
    println!("initial_sync_ms={}", synced.as_millis());
    println!("rss_synced_kib={rss_synced}");
    for round in 1..=rounds {
        // Let the previous round's acknowledgements settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        *first_apply.lock().unwrap() = None;
        let written = Instant::now();
        write_atomically(&file, &workloads(services, endpoints, round));
        if !wait_all(1 + round as u64, Duration::from_secs(60)).await {
            std::process::exit(1);
        }
        let last = *last_apply.lock().unwrap();
        let first = first_apply.lock().unwrap().unwrap_or(last);
        println!("round{round}_ms={}", (last - written).as_millis());
        println!("round{round}_spread_ms={}", (last - first).as_millis());
    }
    let (rss_end, hwm) = rss_kib(&pid);
    println!("rss_end_kib={rss_end}");
    println!("rss_peak_kib={hwm}");
    for stop in stops {
        let _ = stop.send(());
    }
}
