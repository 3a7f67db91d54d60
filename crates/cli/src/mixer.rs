//! `meshmeter mixer`: the telemetry server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use meshmeter_server::{ServerError, ServerOptions, TelemetryServer};

/// Run the telemetry server: accept Mixer v1 `Report` calls from proxies (Istio's or
/// meshmeter's), apply the Istio telemetry configuration (instances, handlers, rules), and
/// serve the resulting metrics on /metrics for Prometheus.
///
/// Unless --no-default-config is given, Istio 1.1's default TCP telemetry is loaded first:
/// istio_tcp_sent_bytes_total, istio_tcp_received_bytes_total,
/// istio_tcp_connections_opened_total, istio_tcp_connections_closed_total and the TCP access
/// log (JSON lines on stdout).
///
/// The configuration and the workloads file are checked for changes every
/// --reload-interval; a valid change takes effect without a restart (counters of unchanged
/// metrics keep their values), an invalid one is logged with its diagnostics and the last
/// good configuration stays in force.
///
/// Endpoints on --metrics-addr: /metrics, /healthz, /ready. SIGTERM or SIGINT stops
/// accepting, finishes calls in flight, flushes the access log and exits 0.
///
/// Exit codes: 0 after a clean shutdown, 1 on a runtime failure (address in use, ...), 2 when
/// the configuration or the workloads file is invalid at start.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Configuration directory (read recursively, *.yaml and *.yml) or file; repeatable.
    #[arg(long = "config-dir", value_name = "PATH")]
    config_dirs: Vec<PathBuf>,

    /// Where to accept Mixer v1 gRPC `Report` and `Check` calls.
    #[arg(long, default_value = "127.0.0.1:9091", value_name = "ADDR")]
    grpc_addr: SocketAddr,

    /// Where to serve /metrics (Prometheus text format), /healthz and /ready.
    #[arg(long, default_value = "127.0.0.1:42422", value_name = "ADDR")]
    metrics_addr: SocketAddr,

    /// Rules in this namespace apply to every report; rules in another namespace only to
    /// reports whose identity namespace is that one.
    #[arg(long, default_value = "istio-system", value_name = "NAMESPACE")]
    config_default_namespace: String,

    /// YAML file of workloads (name, namespace, labels, ips, services) that gives reports
    /// their identity (source.workload.name, destination.labels, ...). Reloaded on change.
    #[arg(long, value_name = "FILE")]
    workloads: Option<PathBuf>,

    /// Do not load Istio's default TCP telemetry configuration.
    #[arg(long)]
    no_default_config: bool,

    /// Refuse Report requests larger than this many bytes.
    #[arg(long, default_value_t = meshmeter_wire::DEFAULT_MAX_MESSAGE_BYTES, value_name = "BYTES")]
    max_message_bytes: usize,

    /// The most series one metric keeps; new label combinations beyond it (or beyond 64 MiB of
    /// label text per metric) are dropped and counted in
    /// meshmeter_prometheus_dropped_series_total.
    #[arg(long, default_value_t = meshmeter_adapters::prometheus::DEFAULT_SERIES_LIMIT, value_name = "N")]
    series_limit: usize,

    /// Write every access log (stdio handler) to this file instead of where the handler says.
    #[arg(long, value_name = "FILE")]
    access_log: Option<PathBuf>,

    /// Threads serving report connections, each with a runtime of its own (connections are
    /// handed to them in turn). Default: one per core this process may run on.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    ingest_threads: Option<u16>,

    /// How often to check the configuration and the workloads file for changes.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_interval)]
    reload_interval: Duration,
}

/// A Go-style duration (`500ms`, `2s`) of at least 100 ms.
fn parse_interval(text: &str) -> Result<Duration, String> {
    match crate::shared::parse_duration(text)? {
        d if d >= Duration::from_millis(100) => Ok(d),
        _ => Err(format!("'{text}' is too short: at least 100ms")),
    }
}

pub(crate) fn run(args: Args) -> ExitCode {
    let options = ServerOptions {
        grpc_addr: args.grpc_addr,
        metrics_addr: args.metrics_addr,
        config_paths: args.config_dirs,
        default_namespace: args.config_default_namespace,
        include_defaults: !args.no_default_config,
        workloads: args.workloads,
        max_message_bytes: args.max_message_bytes,
        series_limit: args.series_limit,
        log_output: args.access_log.map(meshmeter_adapters::stdio::Output::File),
        reload_interval: args.reload_interval,
        ingest_threads: args.ingest_threads.map_or(0, usize::from),
        ..ServerOptions::default()
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let server = match TelemetryServer::start(options).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(match e {
                    ServerError::Config(_) | ServerError::Workloads(_) => 2,
                    _ => 1,
                });
            }
        };
        tracing::info!(
            grpc = %server.grpc_addr(),
            metrics = %format!("http://{}/metrics", server.metrics_addr()),
            "telemetry server listening"
        );
        match server.run_until(crate::signals::terminated()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    })
}
