//! `meshmeter demo`: the seed's scenario on one machine.

mod transparent;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use meshmeter_demo::{DemoError, DemoOptions};

/// Run Istio's "Collecting Metrics for TCP Services" scenario on this machine, with nothing to
/// install: a telemetry server loaded with the seed's tcp-metrics.yaml (plus Istio's default
/// TCP telemetry), a MongoDB stand-in (mongodb-v1 on 127.0.0.3) behind an inbound sidecar
/// that reports every second, and a ratings-v2 client (127.0.0.2) sending steady traffic.
///
/// It prints the Prometheus samples the seed shows, e.g.
/// istio_mongo_received_bytes{destination_version="v1",source_service="ratings-v2",source_version="v2"} N,
/// refreshed every second, beside the byte counts the client itself saw. At the end it waits
/// for the sidecar's final reports and checks that metrics and client agree byte for byte.
///
/// All ports are chosen free at start; the URL to scrape is printed. Needs Linux (the
/// 127.0.0.2 and 127.0.0.3 loopback addresses).
///
/// With --transparent the pods are network namespaces instead: in each, `meshmeter capture`
/// and `meshmeter proxy --transparent` (as uid 1337); the client connects to the mongodb pod's
/// address and both sides report, told apart by the `reporter` label. Needs root, iproute2,
/// iptables and setpriv.
///
/// Exit codes: 0 when the metrics agree with the client, 1 when they do not or something
/// failed while running, 2 for bad arguments or an invalid --config (and, with
/// --transparent, when network namespaces cannot be created here).
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Stop by itself after this long (e.g. 10s, 1m); without it, run until Ctrl-C.
    #[arg(long, value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    duration: Option<Duration>,

    /// The sidecar's report interval (at least 1s, as Istio required).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    report_interval: Duration,

    /// Use this configuration (file or directory) instead of the seed's tcp-metrics.yaml,
    /// e.g. examples/tcp-metrics-crd.yaml for the legacy `kind: metric` spelling. Repeatable.
    #[arg(long, value_name = "PATH")]
    config: Vec<PathBuf>,

    /// Also start this Prometheus binary, scraping the server as job istio-mesh every second,
    /// and print its URL and its answer to `istio_mongo_received_bytes`. Without a value, the
    /// `prometheus` found on PATH.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "", conflicts_with = "transparent")]
    prometheus: Option<PathBuf>,

    /// Serve /metrics here instead of on a free port.
    #[arg(
        long,
        default_value = "127.0.0.1:0",
        value_name = "ADDR",
        conflicts_with = "transparent"
    )]
    metrics_addr: SocketAddr,

    /// Run the pods as network namespaces with capture and the transparent sidecar on both
    /// sides (see above); the telemetry server listens inside the namespaces, and the command
    /// to scrape it is printed.
    #[arg(long)]
    transparent: bool,

    /// Keep working files (configuration copy, workloads, access log, Prometheus data) here.
    #[arg(long, value_name = "DIR", conflicts_with = "transparent")]
    work_dir: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> ExitCode {
    if args.report_interval < Duration::from_secs(1) {
        eprintln!("error: --report-interval must be at least 1s (Istio's minimum)");
        return ExitCode::from(2);
    }
    if args.transparent {
        return transparent::run(&args);
    }
    let options = DemoOptions {
        duration: args.duration,
        report_interval: args.report_interval,
        config: args.config,
        prometheus: args.prometheus,
        metrics_addr: args.metrics_addr,
        work_dir: args.work_dir,
        ..DemoOptions::default()
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(meshmeter_demo::run(
        options,
        &mut stdout,
        crate::signals::terminated(),
    )) {
        Ok(summary) if summary.agree => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e @ DemoError::Server(meshmeter_server::ServerError::Config(_))) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
