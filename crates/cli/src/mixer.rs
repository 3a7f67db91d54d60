//! `meshmeter mixer`: the telemetry server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_selfmetrics::SelfMetrics;

use meshmeter_server::{GrpcLimits, ServerError, ServerOptions, TelemetryServer};

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
/// metrics keep their values; a removed metric's series are held for --removed-metric-grace).
/// Changes are accepted object by object: an object with an error is logged with its
/// diagnostics and rejected alone (its previous version stays in force; counted in
/// meshmeter_config_rejected_objects), objects naming a rejected or absent one are dropped with
/// a warning, and the rest applies. The configuration at start is accepted the same way (a
/// restart with one broken object still serves the others); --strict-config refuses to start
/// on any error instead (exit 2). A --config-dir path that does not exist is exit 2. A
/// change is loaded once two consecutive polls see the same content, and one that leaves no
/// instance, handler or rule at all is refused as a file caught mid-write.
///
/// Endpoints on --metrics-addr: /metrics, /healthz, /ready. SIGTERM or SIGINT stops
/// accepting, finishes calls in flight (for at most --drain-timeout, then closes the
/// connections still open), flushes the access log and exits 0.
///
/// A subsystem (report server, admin endpoint, configuration reloader, series sweeper) that
/// stops while serving makes /ready answer 503 and the process exit 1, naming it and why.
///
/// Report-port limits (the --grpc-* flags): each hit is counted in
/// meshmeter_grpc_limit_hits_total{limit="connections"|"handshake_timeout"|"idle_timeout"|
/// "keepalive_timeout"|"body_timeout"|"buffered_bytes"|"connection_buffered_bytes"}; open
/// connections and buffered request-body bytes are the gauges meshmeter_grpc_connections and
/// meshmeter_grpc_buffered_bytes. Calls refused for overload (a body budget, the body timeout)
/// get UNAVAILABLE, which clients retry.
///
/// With --kubernetes, configuration also comes from the API server: every
/// config.istio.io/v1alpha2 object of the kinds the files may hold (rule, instance, handler,
/// attributemanifest; metric, prometheus, logentry, stdio, kubernetes, kubernetesenv) in all
/// namespaces or those of --watch-namespace, loaded after the --config-dir files through
/// the same validation, and applied as soon as it changes. Identity comes from pods, their
/// owners, Services and EndpointSlices instead of --workloads. /ready stays 503 until
/// everything has been listed once; when the API server is unreachable, the last state stays
/// in force and the watches reconnect with backoff (counted in
/// meshmeter_kubernetes_watch_restarts_total{resource}). A config.istio.io group that is
/// not installed (404) counts as empty and is asked again later.
///
/// Exit codes: 0 after a clean shutdown, 1 on a runtime failure (address in use, a stopped
/// subsystem, ...), 2 when the configuration or the workloads file is invalid at start, or
/// no Kubernetes credentials are found with --kubernetes.
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

    /// Read configuration and identity from the Kubernetes API server: in-cluster service
    /// account credentials, or --kubeconfig.
    #[arg(long, conflicts_with = "workloads")]
    kubernetes: bool,

    /// A kubeconfig file for --kubernetes (default: in-cluster credentials); several
    /// `:`-separated files are merged as kubectl merges them. Ignored without --kubernetes.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    kubeconfig: Option<PathBuf>,

    /// The kubeconfig context for --kubernetes (default: its current-context).
    #[arg(long, value_name = "NAME", requires = "kubernetes")]
    context: Option<String>,

    /// With --kubernetes, read configuration objects in this namespace only; repeatable
    /// (default: all namespaces). Identity is always read from all namespaces.
    #[arg(
        long = "watch-namespace",
        value_name = "NAMESPACE",
        requires = "kubernetes"
    )]
    watch_namespaces: Vec<String>,

    /// With --kubernetes, the cluster's DNS domain: a Service's destination.service.host is
    /// NAME.NAMESPACE.svc.DOMAIN.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    cluster_domain: String,

    /// Do not load Istio's default TCP telemetry configuration.
    #[arg(long)]
    no_default_config: bool,

    /// Refuse to start (exit 2) when the configuration at start has any error, instead of
    /// rejecting the broken objects alone as every later change does.
    #[arg(long)]
    strict_config: bool,

    /// Refuse Report requests larger than this many bytes.
    #[arg(long, default_value_t = meshmeter_wire::DEFAULT_MAX_MESSAGE_BYTES, value_name = "BYTES")]
    max_message_bytes: usize,

    /// Refuse Report requests holding more attribute bags than this (RESOURCE_EXHAUSTED,
    /// counted in meshmeter_decode_errors_total{reason="too_many_bags"}).
    #[arg(long, default_value_t = meshmeter_wire::DEFAULT_MAX_BAGS_PER_REQUEST as u32, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_bags_per_request: u32,

    /// The most series one metric keeps; new label combinations beyond it (or beyond 64 MiB of
    /// label text per metric) are dropped and counted in
    /// meshmeter_prometheus_dropped_series_total.
    #[arg(long, default_value_t = meshmeter_prometheus::DEFAULT_SERIES_LIMIT, value_name = "N")]
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

    /// When a reload removes a metric, keep its series (not exposed) this long, so that
    /// restoring the metric within it continues its counters instead of restarting them at
    /// 0; after it they are dropped. 0 drops them at once.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    removed_metric_grace: Duration,

    /// On SIGTERM or SIGINT, how long calls in flight may take to finish; then connections
    /// still open (idle, without the HTTP/2 preface, stalled) are closed, the access log is
    /// flushed and the process exits 0.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    drain_timeout: Duration,

    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: calls one report connection may have open at once.
    #[arg(long, default_value_t = meshmeter_server::DEFAULT_MAX_CONCURRENT_STREAMS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    grpc_max_concurrent_streams: u32,

    /// Report connections open at once (gauge meshmeter_grpc_connections); a new connection
    /// over it is closed at once. Every limit hit is counted in
    /// meshmeter_grpc_limit_hits_total{limit=...}, this one as limit="connections".
    #[arg(long, default_value_t = meshmeter_server::DEFAULT_MAX_CONNECTIONS as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    grpc_max_connections: u64,

    /// A connection that has not sent the HTTP/2 preface and SETTINGS within this is closed
    /// (limit="handshake_timeout").
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    grpc_handshake_timeout: Duration,

    /// A connection without a call open for this long is sent GOAWAY (limit="idle_timeout").
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    grpc_idle_timeout: Duration,

    /// How often the server sends an HTTP/2 PING on each report connection.
    #[arg(long, default_value = "1m", value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    grpc_keepalive_interval: Duration,

    /// A connection whose client does not answer a PING within this is closed
    /// (limit="keepalive_timeout").
    #[arg(long, default_value = "20s", value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    grpc_keepalive_timeout: Duration,

    /// A call whose request body has not fully arrived within this is refused with UNAVAILABLE
    /// (limit="body_timeout").
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    grpc_body_timeout: Duration,

    /// Request-body bytes received but not yet decoded, over all report connections (gauge
    /// meshmeter_grpc_buffered_bytes); a call that would go over it is refused with
    /// UNAVAILABLE, which clients retry (limit="buffered_bytes").
    #[arg(long, default_value_t = meshmeter_server::DEFAULT_MAX_BUFFERED_BYTES as u64, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..))]
    grpc_max_buffered_bytes: u64,

    /// The same budget for one connection (limit="connection_buffered_bytes"); keep it at
    /// least --max-message-bytes, or the largest messages are always refused.
    #[arg(long, default_value_t = meshmeter_server::DEFAULT_MAX_CONNECTION_BUFFERED_BYTES as u64,
          value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    grpc_max_connection_buffered_bytes: u64,
}

/// A Go-style duration (`500ms`, `2s`) of at least 100 ms.
fn parse_interval(text: &str) -> Result<Duration, String> {
    match crate::shared::parse_duration(text)? {
        d if d >= Duration::from_millis(100) => Ok(d),
        _ => Err(format!("'{text}' is too short: at least 100ms")),
    }
}

pub(crate) fn run(args: Args) -> ExitCode {
    let kubernetes = args.kubernetes.then(|| {
        (
            meshmeter_kube::ClientOptions {
                kubeconfig: args
                    .kubeconfig
                    .clone()
                    .filter(|p| !p.as_os_str().is_empty()),
                context: args.context.clone(),
            },
            args.watch_namespaces.clone(),
            meshmeter_kube::IdentityOptions {
                cluster_domain: args.cluster_domain.clone(),
            },
        )
    });
    if let Some(missing) = args.config_dirs.iter().find(|p| !p.exists()) {
        eprintln!(
            "error: --config-dir {}: no such file or directory",
            missing.display()
        );
        return ExitCode::from(2);
    }
    let mut options = ServerOptions {
        grpc_addr: args.grpc_addr,
        strict_config: args.strict_config,
        metrics_addr: args.metrics_addr,
        config_paths: args.config_dirs,
        default_namespace: args.config_default_namespace,
        include_defaults: !args.no_default_config,
        workloads: args.workloads,
        max_message_bytes: args.max_message_bytes,
        max_bags_per_request: args.max_bags_per_request as usize,
        series_limit: args.series_limit,
        log_output: args.access_log.map(meshmeter_stdio::Output::File),
        reload_interval: args.reload_interval,
        ingest_threads: args.ingest_threads.map_or(0, usize::from),
        removed_metric_grace: args.removed_metric_grace,
        drain_timeout: args.drain_timeout,
        grpc_limits: GrpcLimits {
            max_concurrent_streams: args.grpc_max_concurrent_streams,
            max_connections: usize::try_from(args.grpc_max_connections).unwrap_or(usize::MAX),
            handshake_timeout: args.grpc_handshake_timeout,
            idle_timeout: args.grpc_idle_timeout,
            keepalive_interval: args.grpc_keepalive_interval,
            keepalive_timeout: args.grpc_keepalive_timeout,
            body_timeout: args.grpc_body_timeout,
            max_buffered_bytes: usize::try_from(args.grpc_max_buffered_bytes).unwrap_or(usize::MAX),
            max_connection_buffered_bytes: usize::try_from(args.grpc_max_connection_buffered_bytes)
                .unwrap_or(usize::MAX),
        },
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
        // Kept for as long as the server runs: dropping them stops the watches.
        let mut _sources = None;
        if let Some((client_options, namespaces, identity_options)) = kubernetes {
            let client = match meshmeter_kube::connect(&client_options).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let self_metrics = Arc::new(SelfMetrics::new());
            let metrics = meshmeter_kube::WatchMetrics::new(Arc::clone(&self_metrics));
            let config = meshmeter_kube::ConfigSource::start(client.clone(), &namespaces, &metrics);
            let events = meshmeter_kube::ProblemEvents::new(
                client.clone(),
                tokio::runtime::Handle::current(),
            );
            let identity = meshmeter_kube::IdentitySource::start(client, identity_options, &metrics);
            options.self_metrics = Some(self_metrics);
            options.config_documents = Some(config.documents());
            options.on_object_problems = Some(meshmeter_server::ObjectProblemHook(Arc::new(
                move |problems| events.record(&problems),
            )));
            options.identity = Some(identity.registry());
            options.ready_gates = vec![config.synced().receiver(), identity.synced().receiver()];
            tracing::info!(
                namespaces = %if namespaces.is_empty() { "*".to_owned() } else { namespaces.join(",") },
                "reading configuration and identity from the Kubernetes API server"
            );
            _sources = Some((config, identity));
        }
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
