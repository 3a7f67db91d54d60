//! `meshmeter proxy`: the sidecar TCP proxy. Forwards every byte between clients and an
//! upstream, reports each connection (open / continue / close) to a telemetry server, and
//! serves its own metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_adapters::selfmetrics::SelfMetrics;
use meshmeter_adapters::stdio::Output;
use meshmeter_adapters::workloads::{FileRegistry, Watch};
use meshmeter_admin::{AdminServer, MetricsBody, Readiness, Streamed, CHUNK_BYTES};
use meshmeter_attributes::Manifest;
use meshmeter_config::{ConfigWatcher, LoadOptions};
use meshmeter_engine::{spawn_reloader, Engine, EngineOptions, Workloads};

use crate::supervise::noticed;
use meshmeter_ca::{CaClient, RotationStats, Rotator};
use meshmeter_certs::{
    client_config, server_config, CertStore, ExpectedPeer, SpiffeId, TrustBundle,
};
use meshmeter_proxy::LocalTelemetry;
use meshmeter_proxy::{
    ConnectionReport, CopyMode, ForwardOptions, Identity, ListenerConfig, MixerTransport, Proxy,
    ProxyStats, ReportInterval, ReportQueue, ReportSchema, ReportSender, ReportSink, ReporterKind,
    SenderConfig,
};
use meshmeter_proxy::{InboundTls, ListenerTls, PeerAuthentication};
use tokio::sync::watch;

/// Run the sidecar TCP proxy: forward connections from `--listen` to `--upstream`, measuring
/// every byte, and report TCP attributes to a telemetry server (`--mixer`) the way Istio's
/// server-side proxy did.
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
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
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

    #[command(flatten)]
    mtls: MtlsArgs,
}

/// Mutual TLS between sidecars.
#[derive(clap::Args, Debug)]
pub(crate) struct MtlsArgs {
    /// TLS toward the upstream: `disable`, or `istio-mutual` (originate TLS 1.3 with the
    /// workload certificate and verify the upstream's, as Istio's DestinationRule
    /// `tls.mode: ISTIO_MUTUAL`). Needs the --ca-* flags.
    #[arg(long, default_value = "disable", value_name = "MODE", value_parser = parse_tls_mode)]
    tls_mode: TlsMode,

    /// TLS from clients: `disable` (plaintext only), `permissive` (mTLS and plaintext on one
    /// port, told apart by the first bytes) or `strict` (mTLS only; plaintext and bad
    /// certificates refused). Needs the --ca-* flags unless `disable`.
    #[arg(long, default_value = "disable", value_name = "MODE")]
    peer_authentication: PeerAuthentication,

    /// The certificate authority (`meshmeter ca`), `host:port`.
    #[arg(long, env = "MESHMETER_CA_ADDR", value_name = "ADDR")]
    ca_addr: Option<String>,

    /// File holding this workload's bootstrap token for the CA.
    #[arg(long, env = "MESHMETER_CA_TOKEN_FILE", value_name = "FILE")]
    ca_token_file: Option<PathBuf>,

    /// The mesh's trust bundle: root certificate(s), PEM (`meshmeter ca --write-root-cert`).
    /// The CA itself is verified against it too.
    #[arg(long, env = "MESHMETER_CA_ROOT", value_name = "FILE")]
    ca_root: Option<PathBuf>,

    /// Talk to a CA started with `meshmeter ca --plaintext` (the token crosses in clear).
    #[arg(long)]
    ca_plaintext: bool,

    /// This workload's identity, `spiffe://DOMAIN/ns/N/sa/S` or `DOMAIN/ns/N/sa/S`. Default:
    /// --trust-domain, --namespace and --service-account.
    #[arg(long, env = "MESHMETER_WORKLOAD_IDENTITY", value_name = "ID")]
    workload_identity: Option<String>,

    /// The pod's service account (with --namespace, the default workload identity).
    #[arg(long, env = "SERVICE_ACCOUNT", value_name = "NAME")]
    service_account: Option<String>,

    /// The mesh's trust domain.
    #[arg(long, default_value = meshmeter_certs::DEFAULT_TRUST_DOMAIN, value_name = "DOMAIN")]
    trust_domain: String,

    /// With --tls-mode istio-mutual: the identity the upstream must prove (repeatable: any of
    /// them). Default: any workload of the trust domain.
    #[arg(long, value_name = "ID")]
    upstream_identity: Vec<String>,

    /// Workload certificate lifetime to ask the CA for (default: the CA's). The certificate
    /// is renewed at two thirds of its lifetime.
    #[arg(long, value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    workload_cert_ttl: Option<Duration>,

    /// With --peer-authentication permissive: how long to wait for a client's first bytes
    /// before taking the connection for plaintext (a protocol whose server speaks first).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    protocol_detect_timeout: Duration,
}

/// `--tls-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    Disable,
    IstioMutual,
}

fn parse_tls_mode(text: &str) -> Result<TlsMode, String> {
    match text.to_ascii_lowercase().as_str() {
        "disable" => Ok(TlsMode::Disable),
        "istio-mutual" | "istio_mutual" => Ok(TlsMode::IstioMutual),
        _ => Err(format!(
            "unknown TLS mode '{text}' (expected 'disable' or 'istio-mutual')"
        )),
    }
}

/// The certificate machinery of `--tls-mode` / `--peer-authentication`.
struct Mtls {
    tls: ListenerTls,
    rotator: Rotator,
    rotation: Arc<RotationStats>,
}

async fn mtls(args: &Args) -> Result<Option<Mtls>, Failure> {
    let m = &args.mtls;
    if m.tls_mode == TlsMode::Disable && m.peer_authentication == PeerAuthentication::Disable {
        return Ok(None);
    }
    let need = |flag: &str| {
        usage(format!(
            "{flag} is required with --tls-mode istio-mutual or --peer-authentication strict|permissive"
        ))
    };
    let ca_addr = m.ca_addr.as_ref().ok_or_else(|| need("--ca-addr"))?;
    let token_file = m
        .ca_token_file
        .as_ref()
        .ok_or_else(|| need("--ca-token-file"))?;
    let root_file = m.ca_root.as_ref().ok_or_else(|| need("--ca-root"))?;
    let identity = match (&m.workload_identity, &m.service_account, &args.namespace) {
        (Some(text), _, _) => SpiffeId::parse(text).map_err(|e| usage(format!("--workload-identity: {e}")))?,
        (None, Some(sa), Some(ns)) => SpiffeId::new(&m.trust_domain, ns, sa)
            .map_err(|e| usage(format!("--service-account/--namespace: {e}")))?,
        _ => {
            return Err(usage(
                "mTLS needs the workload identity: --workload-identity, or --service-account with --namespace",
            ))
        }
    };
    let read = |path: &PathBuf, flag: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| usage(format!("{flag}: cannot read {}: {e}", path.display())))
    };
    let bundle = TrustBundle::from_pem(
        &read(root_file, "--ca-root")?,
        &root_file.display().to_string(),
    )
    .map_err(|e| usage(format!("--ca-root: {e}")))?;
    let token = read(token_file, "--ca-token-file")?;
    let client = if m.ca_plaintext {
        CaClient::lazy(ca_addr, token.trim())
    } else {
        let ca_id = meshmeter_ca::ca_identity(identity.trust_domain())
            .map_err(|e| usage(format!("the CA's identity: {e}")))?;
        let config =
            meshmeter_certs::service_client_config(&bundle, ExpectedPeer::OneOf(vec![ca_id]))
                .map_err(|e| Failure::Runtime(e.into()))?;
        CaClient::lazy_tls(ca_addr, token.trim(), config)
    }
    .map_err(|e| usage(format!("--ca-addr: {e}")))?;
    let store = Arc::new(CertStore::new());
    let rotation = Arc::new(RotationStats::default());
    let rotator = Rotator::new(
        client,
        identity.clone(),
        m.workload_cert_ttl,
        Arc::clone(&store),
        bundle.clone(),
        Arc::clone(&rotation),
    );
    rotator
        .initial(Duration::from_secs(30))
        .await
        .map_err(|e| {
            Failure::Runtime(anyhow::anyhow!(
                "no workload certificate from the CA at {ca_addr}: {e}"
            ))
        })?;
    let domain = ExpectedPeer::TrustDomain(identity.trust_domain().to_owned());
    let inbound = match m.peer_authentication {
        PeerAuthentication::Disable => None,
        mode => Some(InboundTls {
            mode,
            config: server_config(&bundle, Arc::clone(&store), domain.clone())
                .map_err(|e| Failure::Runtime(e.into()))?,
            handshake_timeout: Duration::from_secs(10),
            detect_timeout: m.protocol_detect_timeout,
        }),
    };
    let upstream = if m.tls_mode == TlsMode::IstioMutual {
        let expected = if m.upstream_identity.is_empty() {
            domain
        } else {
            ExpectedPeer::OneOf(
                m.upstream_identity
                    .iter()
                    .map(|t| {
                        SpiffeId::parse(t).map_err(|e| usage(format!("--upstream-identity: {e}")))
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
        Some(client_config(&bundle, store, expected).map_err(|e| Failure::Runtime(e.into()))?)
    } else {
        None
    };
    tracing::info!(identity = %identity, peer_authentication = %m.peer_authentication, tls_mode = ?m.tls_mode, "mutual TLS on");
    Ok(Some(Mtls {
        tls: ListenerTls {
            inbound,
            upstream,
            local_principal: Some(Arc::from(identity.principal())),
        },
        rotator,
        rotation,
    }))
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

    let (stop_reload, stop_reload_rx) = watch::channel(false);
    let (sink, local) = match local_telemetry(&args, stop_reload_rx)? {
        Some(parts) => {
            let both: Arc<dyn ReportSink> = match args.mixer {
                Some(_) => Arc::new((sink, parts.telemetry)),
                None => Arc::new(parts.telemetry),
            };
            (
                both,
                Some((parts.engine, parts.reloader, parts.workloads_watch)),
            )
        }
        None => (sink, None),
    };

    let mtls = mtls(&args).await?;

    let ids = Arc::new(meshmeter_proxy::ConnectionIds::new());
    let mut proxies = Vec::new();
    for (listen, upstream) in pairs {
        let mut config = ListenerConfig::new(listen, upstream);
        config.report_interval = interval;
        config.connect_timeout = args.connect_timeout;
        // Never closing idle connections would let clients that left hold descriptors forever.
        config.idle_timeout = (!args.idle_timeout.is_zero()).then_some(args.idle_timeout);
        config.half_close_timeout =
            (!args.half_close_timeout.is_zero()).then_some(args.half_close_timeout);
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
        // The bound address, so that `--listen 127.0.0.1:0` is usable (tests read this line).
        tracing::info!(listen = %proxy.local_addr(), %upstream, "proxy listening");
        let proxy = match &mtls {
            Some(m) => proxy.with_tls(m.tls.clone()),
            None => proxy,
        };
        proxies.push(proxy.with_connection_ids(Arc::clone(&ids)));
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // The admin endpoint outlives the drain, so that /ready says 503 and /metrics can still
    // be scraped while connections finish.
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let readiness = Readiness::new();
    // Every serving task names itself here when it ends; before SIGTERM that is a failure.
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let admin = match args.metrics_addr {
        Some(addr) => {
            let metrics = Arc::clone(&stats);
            let engine = local.as_ref().map(|(engine, _, _)| Arc::clone(engine));
            let rotation = mtls.as_ref().map(|m| Arc::clone(&m.rotation));
            let server = AdminServer::bind(
                addr,
                Streamed(move || scrape(engine.clone(), Arc::clone(&metrics), rotation.clone())),
                readiness.clone(),
            )
            .await
            .map_err(|e| Failure::Runtime(e.into()))?;
            tracing::info!(addr = %server.local_addr(), "serving /metrics and /ready");
            let mut stop = admin_stop_rx;
            let serve = server.serve(async move {
                let _ = stop.wait_for(|&s| s).await;
            });
            Some(tokio::spawn(noticed(
                "admin endpoint".into(),
                &ended_tx,
                async move {
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "admin endpoint failed");
                    }
                },
            )))
        }
        None => None,
    };

    let (sender_stop, sender_rx) = watch::channel(false);
    let sender_task =
        sender.map(|s| tokio::spawn(noticed("report sender".into(), &ended_tx, s.run(sender_rx))));
    let (rotation_stop, rotation_rx) = watch::channel(false);
    let rotation_task = mtls.map(|m| {
        tokio::spawn(noticed(
            "certificate rotation".into(),
            &ended_tx,
            m.rotator.run(rotation_rx),
        ))
    });
    let drain = args.drain_timeout;
    let tasks: Vec<_> = proxies
        .into_iter()
        .map(|p| {
            let name = format!("listener {}", p.local_addr());
            tokio::spawn(noticed(name, &ended_tx, p.run(shutdown_rx.clone(), drain)))
        })
        .collect();
    drop(ended_tx);
    readiness.set(true);

    let failed = tokio::select! {
        () = crate::signals::terminated() => None,
        Some(name) = ended_rx.recv() => Some(name),
    };
    readiness.set(false);
    match &failed {
        None => tracing::info!("shutting down: draining connections"),
        Some(name) => tracing::error!(subsystem = %name, "stopped while serving; shutting down"),
    }
    let _ = shutdown_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = sender_stop.send(true);
    if let Some(task) = sender_task {
        let _ = task.await;
    }
    let _ = rotation_stop.send(true);
    if let Some(task) = rotation_task {
        let _ = task.await;
    }
    let _ = stop_reload.send(true);
    if let Some((engine, reloader, workloads_watch)) = local {
        let _ = reloader.await;
        engine.flush_logs();
        drop(workloads_watch);
    }
    let _ = admin_stop.send(true);
    if let Some(task) = admin {
        let _ = task.await;
    }
    tracing::info!("stopped");
    match failed {
        None => Ok(()),
        Some(name) => Err(Failure::Runtime(anyhow::anyhow!(
            "{name} stopped while serving"
        ))),
    }
}

/// The in-proxy telemetry of `--telemetry-config`.
struct LocalParts {
    /// The sink that feeds the engine.
    telemetry: LocalTelemetry,
    engine: Arc<Engine>,
    /// Applies configuration changes.
    reloader: tokio::task::JoinHandle<()>,
    /// Reloads the workloads file while it lives.
    workloads_watch: Option<Watch>,
}

fn local_telemetry(
    args: &Args,
    stop: watch::Receiver<bool>,
) -> Result<Option<LocalParts>, Failure> {
    if args.telemetry_config.is_empty() {
        return Ok(None);
    }
    let options = LoadOptions {
        default_namespace: args.config_default_namespace.clone(),
        include_defaults: !args.no_default_config,
    };
    let mut watcher = ConfigWatcher::new(args.telemetry_config.clone(), options)
        .map_err(|d| usage(format!("invalid --telemetry-config:\n{d}")))?;
    watcher.spawn_polling(Duration::from_secs(1));
    let (workloads, workloads_watch) = match &args.workloads {
        Some(path) => {
            let registry = Arc::new(FileRegistry::open(path).map_err(|e| usage(e.to_string()))?);
            let watch = registry
                .watch(Duration::from_secs(1), |e| {
                    tracing::warn!(error = %e, "workloads file change rejected; keeping the last good one")
                })
                .map_err(|e| Failure::Runtime(e.into()))?;
            (Workloads::File(registry), Some(watch))
        }
        None => (Workloads::none(), None),
    };
    let engine = Arc::new(
        Engine::new(
            watcher.current(),
            workloads,
            Arc::new(SelfMetrics::new()),
            EngineOptions {
                log_output: args.access_log.clone().map(Output::File),
                ..EngineOptions::default()
            },
        )
        .map_err(|e| usage(e.to_string()))?,
    );
    let telemetry = LocalTelemetry::new(Arc::clone(&engine)).map_err(|e| usage(e.to_string()))?;
    let reloader = spawn_reloader(Arc::clone(&engine), watcher, |_| {}, stop);
    tracing::info!(config = ?args.telemetry_config, "telemetry configuration runs in the proxy");
    Ok(Some(LocalParts {
        telemetry,
        engine,
        reloader,
        workloads_watch,
    }))
}

/// One scrape's body: the in-proxy engine's configured metrics a chunk at a time (the large
/// part), then its own metrics and the proxy's counters.
fn scrape(
    engine: Option<Arc<Engine>>,
    stats: Arc<ProxyStats>,
    rotation: Option<Arc<RotationStats>>,
) -> Box<dyn MetricsBody> {
    let mut configured = engine
        .as_ref()
        .map(|engine| engine.runtime().prometheus().exposition());
    let mut own_written = false;
    Box::new(move |out: &mut String| {
        if let Some(configured) = &mut configured {
            if configured.next_chunk(out, CHUNK_BYTES) {
                return true;
            }
        }
        if std::mem::replace(&mut own_written, true) {
            return false;
        }
        if let Some(engine) = &engine {
            engine.runtime().prometheus().encode_self(out);
            engine.self_metrics().encode(out);
        }
        stats.render_prometheus(out);
        if let Some(rotation) = &rotation {
            rotation.render_prometheus(out);
        }
        true
    })
}
