//! `meshmeter proxy`: the sidecar TCP proxy. Forwards every byte between clients and an
//! upstream, reports each connection (open / continue / close) to a telemetry server, and
//! serves its own metrics.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_admin::{AdminServer, Readiness};
use meshmeter_attributes::Manifest;
use meshmeter_proxy::{
    ConnectionReport, CopyMode, ForwardOptions, Identity, ListenerConfig, MixerTransport, Proxy,
    ProxyStats, ReportInterval, ReportQueue, ReportSchema, ReportSender, ReportSink, ReporterKind,
    SenderConfig,
};
use tokio::sync::watch;

/// Run the sidecar TCP proxy: forward connections from `--listen` to `--upstream`, measuring
/// every byte, and report TCP attributes to a telemetry server (`--mixer`) the way Istio's
/// server-side proxy did.
///
/// Identity flags default from the environment a Kubernetes sidecar gets (POD_NAME,
/// POD_NAMESPACE, ...). On SIGTERM or SIGINT the proxy stops accepting, lets open connections
/// finish for up to `--drain-timeout`, sends their close reports, flushes the report queue,
/// and exits.
///
/// Exit codes: 0 after a clean shutdown, 1 runtime failure (e.g. an address in use), 2 bad
/// flags (e.g. a report interval below 1s).
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to accept client connections on, e.g. `0.0.0.0:27017`.
    #[arg(long, env = "MESHMETER_LISTEN", value_name = "ADDR")]
    listen: SocketAddr,

    /// Address to forward connections to, e.g. `127.0.0.1:27018` (host names are resolved once,
    /// at start).
    #[arg(long, env = "MESHMETER_UPSTREAM", value_name = "ADDR")]
    upstream: String,

    /// More listener/upstream pairs in the same process, as `LISTEN=UPSTREAM` (repeatable).
    #[arg(long = "route", value_name = "LISTEN=UPSTREAM")]
    routes: Vec<String>,

    /// Telemetry server (Mixer v1 gRPC) to report to, `host:port`. Without it, reports are
    /// only counted in the proxy's own metrics.
    #[arg(long, env = "MESHMETER_MIXER", value_name = "ADDR")]
    mixer: Option<String>,

    /// Period of `continue` reports for live connections (Go duration: `10s`, `1m30s`).
    /// Below 1s is refused.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    report_interval: Duration,

    /// Which side the proxy reports for: `inbound` (its workload is the destination) or
    /// `outbound` (its workload is the source).
    #[arg(long, default_value = "inbound", value_name = "KIND")]
    reporter_kind: ReporterKind,

    /// The workload's uid (`destination.uid`, `context.reporter.uid`). Default:
    /// `kubernetes://POD_NAME.POD_NAMESPACE` when both are known.
    #[arg(long, env = "MESHMETER_UID")]
    uid: Option<String>,

    /// The pod's name.
    #[arg(long, env = "POD_NAME")]
    name: Option<String>,

    /// The pod's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,

    /// The workload (deployment) name.
    #[arg(long, env = "MESHMETER_WORKLOAD")]
    workload: Option<String>,

    /// The pod's labels, `k=v,k2=v2`.
    #[arg(long, env = "MESHMETER_LABELS", value_name = "K=V,...")]
    labels: Option<String>,

    /// The service clients address, e.g. `mongodb.default.svc.cluster.local`
    /// (`destination.service.host`).
    #[arg(long, env = "MESHMETER_SERVICE_HOST")]
    service_host: Option<String>,

    /// Address for the proxy's own `/metrics`, `/healthz` and `/ready`.
    #[arg(long, env = "MESHMETER_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Longest wait for the upstream to accept a connection; then the client is closed (`UF`).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// Close connections idle (no byte either way) this long. Default: never.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,

    /// Most connections forwarded at once per listener; beyond it new ones are closed (`UO`).
    #[arg(long, default_value_t = 16_384)]
    max_connections: usize,

    /// On shutdown, how long open connections may take to finish before they are reset.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    drain_timeout: Duration,

    /// Reports held while the telemetry server is unreachable; beyond it the oldest are
    /// dropped (and counted).
    #[arg(long, default_value_t = 100_000)]
    queue_capacity: usize,

    /// Most reports per request to the telemetry server.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,

    /// Longest a report waits for others to share its request.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    batch_delay: Duration,

    /// How bytes are moved: `splice` (zero-copy through a kernel pipe) or `copy` (through a
    /// user-space buffer).
    #[arg(long, default_value = "splice", value_parser = parse_copy_mode)]
    copy_mode: CopyMode,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: meshmeter_attributes::Duration = text.parse().map_err(|e| format!("{e}"))?;
    d.to_std()
        .ok_or_else(|| format!("duration '{text}' is negative"))
}

fn parse_copy_mode(text: &str) -> Result<CopyMode, String> {
    match text {
        "copy" => Ok(CopyMode::Copy),
        "splice" => Ok(CopyMode::Splice),
        other => Err(format!(
            "unknown copy mode '{other}' (expected 'copy' or 'splice')"
        )),
    }
}

/// Drops reports when no telemetry server is configured; they are still reflected in the
/// proxy's own byte and connection counters.
struct Discard;

impl ReportSink for Discard {
    fn submit(&self, _report: ConnectionReport) {}
}

/// A usage error: printed, exit 2.
struct Usage(String);

pub(crate) fn run(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(Usage(message))) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(Usage),
    Runtime(anyhow::Error),
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(Usage(message.into()))
}

async fn resolve(addr: &str) -> Result<SocketAddr, Failure> {
    match tokio::net::lookup_host(addr).await {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| usage(format!("upstream '{addr}' resolves to no address"))),
        Err(e) => Err(usage(format!("cannot resolve upstream '{addr}': {e}"))),
    }
}

fn identity(args: &Args) -> Result<Identity, Failure> {
    let labels = match &args.labels {
        Some(text) => Identity::parse_labels(text).map_err(|e| usage(format!("--labels: {e}")))?,
        None => Default::default(),
    };
    let uid = args
        .uid
        .clone()
        .or_else(|| match (&args.name, &args.namespace) {
            (Some(pod), Some(ns)) => Some(Identity::kubernetes_uid(pod, ns)),
            _ => None,
        });
    Ok(Identity {
        uid,
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        workload: args.workload.clone(),
        labels,
        service_host: args.service_host.clone(),
        kind: args.reporter_kind,
    })
}

async fn serve(args: Args) -> Result<(), Failure> {
    let interval = ReportInterval::new(args.report_interval)
        .map_err(|e| usage(format!("--report-interval: {e}")))?;
    let identity = Arc::new(identity(&args)?);
    let mut pairs = vec![(args.listen, resolve(&args.upstream).await?)];
    for route in &args.routes {
        let (listen, upstream) = route
            .split_once('=')
            .ok_or_else(|| usage(format!("--route '{route}': expected LISTEN=UPSTREAM")))?;
        let listen: SocketAddr = listen
            .parse()
            .map_err(|e| usage(format!("--route '{route}': listen address: {e}")))?;
        pairs.push((listen, resolve(upstream).await?));
    }

    let stats = Arc::new(ProxyStats::default());
    let queue = Arc::new(ReportQueue::new(args.queue_capacity, Arc::clone(&stats)));
    let (sink, sender): (Arc<dyn ReportSink>, _) = match &args.mixer {
        Some(addr) => {
            let manifest = Manifest::istio();
            let transport = MixerTransport::lazy(addr, &manifest)
                .map_err(|e| usage(format!("--mixer: {e}")))?;
            let config = SenderConfig {
                max_batch: args.batch_size.max(1),
                max_delay: args.batch_delay,
                ..SenderConfig::default()
            };
            let sender = ReportSender::new(
                Arc::clone(&queue),
                transport,
                ReportSchema::istio(),
                config,
                Arc::clone(&stats),
            );
            tracing::info!(mixer = %addr, "reporting to the telemetry server");
            (queue as Arc<dyn ReportSink>, Some(sender))
        }
        None => {
            tracing::warn!("no --mixer: connection reports are not sent anywhere");
            (Arc::new(Discard) as Arc<dyn ReportSink>, None)
        }
    };

    let ids = Arc::new(meshmeter_proxy::ConnectionIds::new());
    let mut proxies = Vec::new();
    for (listen, upstream) in pairs {
        let mut config = ListenerConfig::new(listen, upstream);
        config.report_interval = interval;
        config.connect_timeout = args.connect_timeout;
        config.idle_timeout = args.idle_timeout;
        config.max_connections = args.max_connections;
        config.forward = ForwardOptions {
            mode: args.copy_mode,
            ..ForwardOptions::default()
        };
        let proxy = Proxy::bind(
            config,
            Arc::clone(&identity),
            Arc::clone(&sink),
            Arc::clone(&stats),
        )
        .await
        .map_err(|e| match e {
            meshmeter_proxy::BindError::Config(c) => usage(c.to_string()),
            other => Failure::Runtime(other.into()),
        })?;
        proxies.push(proxy.with_connection_ids(Arc::clone(&ids)));
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // The admin endpoint outlives the drain, so that /ready says 503 and /metrics can still
    // be scraped while connections finish.
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let readiness = Readiness::new();
    let admin = match args.metrics_addr {
        Some(addr) => {
            let metrics = Arc::clone(&stats);
            let server = AdminServer::bind(
                addr,
                move |out: &mut String| metrics.render_prometheus(out),
                readiness.clone(),
            )
            .await
            .map_err(|e| Failure::Runtime(e.into()))?;
            tracing::info!(addr = %server.local_addr(), "serving /metrics and /ready");
            let mut stop = admin_stop_rx;
            Some(tokio::spawn(server.serve(async move {
                let _ = stop.wait_for(|&s| s).await;
            })))
        }
        None => None,
    };

    let (sender_stop, sender_rx) = watch::channel(false);
    let sender_task = sender.map(|s| tokio::spawn(s.run(sender_rx)));
    let drain = args.drain_timeout;
    let tasks: Vec<_> = proxies
        .into_iter()
        .map(|p| tokio::spawn(p.run(shutdown_rx.clone(), drain)))
        .collect();
    readiness.set(true);

    crate::signals::terminated().await;
    tracing::info!("shutting down: draining connections");
    readiness.set(false);
    let _ = shutdown_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = sender_stop.send(true);
    if let Some(task) = sender_task {
        let _ = task.await;
    }
    let _ = admin_stop.send(true);
    if let Some(task) = admin {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}
