//! `meshmeter proxy`: the sidecar TCP proxy. Forwards every byte between clients and an
//! upstream, reports each connection (open / continue / close) to a telemetry server, and
//! serves its own metrics.

mod local;
mod mtls;
mod routing;
mod serve;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use meshmeter_capture::{DEFAULT_INBOUND_PROXY_PORT, DEFAULT_OUTBOUND_PROXY_PORT};
use meshmeter_proxy::{CopyMode, Identity, ReporterKind};

/// Run the sidecar TCP proxy: forward connections from `--listen` to `--upstream`, measuring
/// every byte, and report TCP attributes to a telemetry server (`--mixer`) the way Istio's
/// server-side proxy did.
///
/// With `--transparent` (after `meshmeter capture` in the pod's network namespace, running as
/// the uid capture exempts, 1337 by default) the proxy needs no addresses: captured inbound
/// connections arrive on `--inbound-listen` and go to the application at the address the
/// client asked for (reported as `inbound`, the proxy's workload the destination); captured
/// outbound ones arrive on `--outbound-listen` and go to their original destination (reported
/// as `outbound`, the proxy's workload the source, the destination found by the telemetry
/// server from the address). A connection to a port nobody listens on is reset, as it would
/// be without the proxy; one that was not redirected, or whose original destination is the
/// proxy itself, is reset and counted, never forwarded.
///
/// Identity flags default from the environment a Kubernetes sidecar gets (POD_NAME,
/// POD_NAMESPACE, ...). On SIGTERM or SIGINT the proxy stops accepting, lets open connections
/// finish for up to `--drain-timeout`, sends their close reports, flushes the report queue,
/// and exits. A listener, the report sender or the admin endpoint that stops while serving
/// turns `/ready` to 503, shuts the rest down the same way and exits 1, naming it.
///
/// Exit codes: 0 after a clean shutdown, 1 runtime failure (e.g. an address in use, or a
/// task that stopped while serving), 2 bad flags (e.g. a report interval below 1s).
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to accept client connections on, e.g. `0.0.0.0:27017`.
    #[arg(
        long,
        env = "MESHMETER_LISTEN",
        value_name = "ADDR",
        required_unless_present = "transparent",
        conflicts_with = "transparent"
    )]
    listen: Option<SocketAddr>,

    /// Address to forward connections to, e.g. `127.0.0.1:27018` (host names are resolved once,
    /// at start).
    #[arg(
        long,
        env = "MESHMETER_UPSTREAM",
        value_name = "ADDR",
        required_unless_present = "transparent",
        conflicts_with = "transparent"
    )]
    upstream: Option<String>,

    /// More listener/upstream pairs in the same process, as `LISTEN=UPSTREAM` (repeatable).
    #[arg(
        long = "route",
        value_name = "LISTEN=UPSTREAM",
        conflicts_with = "transparent"
    )]
    routes: Vec<String>,

    /// Transparent sidecar, after `meshmeter capture` and running as the uid it exempts
    /// (1337): captured inbound connections go to the application at the address the client
    /// asked for (reported as `inbound`), captured outbound ones to their original destination
    /// (reported as `outbound`). A refused upstream resets the client; a connection nothing
    /// redirected, or one addressed to the proxy itself, is reset and counted.
    #[arg(long, env = "MESHMETER_TRANSPARENT")]
    transparent: bool,

    /// With --transparent: where captured inbound connections arrive (capture's
    /// `--inbound-proxy-port`). A `0.0.0.0:PORT` address also listens on `[::]:PORT` when the
    /// host has IPv6.
    #[arg(long, value_name = "ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_INBOUND_PROXY_PORT)))]
    inbound_listen: SocketAddr,

    /// With --transparent: where captured outbound connections arrive (capture's
    /// `--outbound-proxy-port`); IPv6 as for --inbound-listen.
    #[arg(long, value_name = "ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_OUTBOUND_PROXY_PORT)))]
    outbound_listen: SocketAddr,

    /// Telemetry server (Mixer v1 gRPC) to report to, `host:port`. Without it, reports are
    /// only counted in the proxy's own metrics.
    #[arg(long, env = "MESHMETER_MIXER", value_name = "ADDR")]
    mixer: Option<String>,

    /// Period of `continue` reports for live connections (Go duration: `10s`, `1m30s`).
    /// Below 1s is refused.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    report_interval: Duration,

    /// Which side the proxy reports for: `inbound` (its workload is the destination) or
    /// `outbound` (its workload is the source). With --transparent each listener has its own.
    #[arg(
        long,
        default_value = "inbound",
        value_name = "KIND",
        conflicts_with = "transparent"
    )]
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
    /// (`destination.service.host`). With --transparent only inbound reports carry it: an
    /// outbound connection's service is the telemetry server's to find from the address.
    #[arg(long, env = "MESHMETER_SERVICE_HOST")]
    service_host: Option<String>,

    /// Address for the proxy's own `/metrics`, `/healthz` and `/ready`.
    #[arg(long, env = "MESHMETER_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Longest wait for the upstream to accept a connection; then the client is closed (`UF`).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    connect_timeout: Duration,

    /// Close connections idle (no byte either way) this long, including half-closed ones
    /// whose upstream stalled (`0s`: never). Checked once per period, so a connection closes
    /// between one and two periods after its last byte.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    idle_timeout: Duration,

    /// Close half-closed connections (one side sent EOF) after this long without a byte from
    /// the other side (`0s`: only `--idle-timeout` applies). Frees connections whose client
    /// left while the upstream stalled.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    half_close_timeout: Duration,

    /// Most connections forwarded at once per listener; beyond it new ones are closed (`UO`).
    #[arg(long, default_value_t = 16_384)]
    max_connections: usize,

    /// On shutdown, how long open connections may take to finish before they are reset.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    drain_timeout: Duration,

    /// Reports held while the telemetry server is unreachable; beyond it the oldest are
    /// dropped (and counted).
    #[arg(long, default_value_t = 100_000)]
    queue_capacity: usize,

    /// Most reports per request to the telemetry server.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,

    /// Longest a report waits for others to share its request.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    batch_delay: Duration,

    /// How bytes are moved: `splice` (small messages copied through a pooled buffer, bulk
    /// transfers moved zero-copy through a kernel pipe) or `copy` (always through a
    /// user-space buffer).
    #[arg(long, default_value = "splice", value_parser = parse_copy_mode)]
    copy_mode: CopyMode,

    /// Threads that forward connections. Default: the CPUs this process may run on (its
    /// affinity mask and cgroup quota). With 1, everything runs on one thread with no
    /// cross-thread hand-offs, which suits a sidecar pinned to one core.
    #[arg(long, env = "MESHMETER_PROXY_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    /// Run the telemetry configuration inside the proxy: Istio YAML (instances, handlers,
    /// rules), files or directories, reloaded on change. Reports become metrics on
    /// --metrics-addr with no telemetry server; the output is what `meshmeter mixer` would
    /// serve for the same configuration. Repeatable; may be combined with --mixer.
    #[arg(
        long = "telemetry-config",
        value_name = "PATH",
        requires = "metrics_addr"
    )]
    telemetry_config: Vec<PathBuf>,

    /// With --telemetry-config: a workloads file giving reports their identity (see
    /// `meshmeter mixer --help`), reloaded on change.
    #[arg(long, value_name = "FILE", requires = "telemetry_config")]
    workloads: Option<PathBuf>,

    /// With --telemetry-config: do not load Istio's default TCP telemetry.
    #[arg(long, requires = "telemetry_config")]
    no_default_config: bool,

    /// With --telemetry-config: rules in this namespace apply to every report.
    #[arg(long, default_value = "istio-system", value_name = "NAMESPACE")]
    config_default_namespace: String,

    /// With --telemetry-config: write access logs (stdio handlers) to this file instead of
    /// where the handler says.
    #[arg(long, value_name = "FILE", requires = "telemetry_config")]
    access_log: Option<PathBuf>,

    /// Control plane (`meshmeter control`) to take routing from, `host:port`: outbound
    /// connections to a service's address are sent to the endpoints its DestinationRules and
    /// VirtualServices choose (weights, subsets, connection limits: `UO`; no healthy endpoint:
    /// `UH`; outlier ejection; `tls.mode: ISTIO_MUTUAL` with the --ca-* flags), and the
    /// inbound side's peer authentication follows MeshPolicy/Policy. The proxy subscribes with
    /// its pod's name, namespace, labels, addresses and service account, keeps the last view
    /// while the control plane is away, and forwards everything to its original destination
    /// until a first view arrives. With --transparent the outbound listener is routed;
    /// otherwise the listeners of `--reporter-kind outbound`.
    #[arg(long, env = "MESHMETER_CONTROL_PLANE", value_name = "ADDR")]
    control_plane: Option<String>,

    /// The pod's addresses (comma-separated; the downward API's `status.podIPs`), sent to the
    /// control plane, which finds the pod's own services and inbound policy by them.
    #[arg(
        long,
        env = "MESHMETER_POD_IPS",
        value_name = "IP,...",
        value_delimiter = ','
    )]
    pod_ips: Vec<IpAddr>,

    #[command(flatten)]
    mtls: mtls::MtlsArgs,
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

/// A usage error: printed, exit 2.
struct Usage(String);

pub(crate) fn run(args: Args) -> ExitCode {
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    // One thread: a current-thread runtime. A multi-thread runtime with one worker still
    // pays for work stealing (atomic run queues, a second thread driving `block_on`, waking
    // the worker across threads), per message and direction, for nothing to steal.
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve::serve(args)) {
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
