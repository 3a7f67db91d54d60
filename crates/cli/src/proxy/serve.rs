//! How `meshmeter proxy` serves, one decision per function: which listeners forward where,
//! where reports go, the admin endpoint, and the order in which everything stops.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meshmeter_admin::{AdminServer, Readiness, Streamed};
use meshmeter_attributes::Manifest;
use meshmeter_ca::Rotator;
use meshmeter_proxy::ListenerTls;
use meshmeter_proxy::{
    BindError, ConnectionIds, ConnectionReport, ForwardOptions, Identity, ListenerConfig,
    MixerTransport, Proxy, ProxyStats, ReportInterval, ReportQueue, ReportSchema, ReportSender,
    ReportSink, ReporterKind, SenderConfig, Upstream,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::local::{local_telemetry, scrape, LocalParts, ScrapeParts};
use super::mtls::mtls;
use super::routing::{control_plane, ControlPlane, ListenerRouting};
use super::{identity, usage, Args, Failure};
use crate::supervise::noticed;

/// Drops reports when no telemetry server is configured; they are still reflected in the
/// proxy's own byte and connection counters.
struct Discard;

impl ReportSink for Discard {
    fn submit(&self, _report: ConnectionReport) {}
}

pub(super) async fn serve(args: Args) -> Result<(), Failure> {
    let interval = ReportInterval::new(args.report_interval)
        .map_err(|e| usage(format!("--report-interval: {e}")))?;
    let identity = identity(&args)?;
    if args.control_plane.as_deref().is_some_and(|a| !a.is_empty()) {
        // Flag mistakes first: fetching a certificate may take a while.
        super::routing::node(&args)?;
    }
    let planned = if args.transparent {
        transparent(&args, identity)
    } else {
        explicit(&args, identity).await?
    };
    let stats = Arc::new(ProxyStats::default());
    let (stop_reload, stop_reload_rx) = watch::channel(false);
    let reporting = reporting(&args, &stats, stop_reload_rx)?;
    let mtls = mtls(&args).await?;
    let tls = mtls.as_ref().map(|m| &m.tls);
    let upstreams = mtls.as_ref().map(|m| Arc::clone(&m.upstreams));
    let control = control_plane(&args, upstreams)?;
    let proxies = bind_listeners(
        &args,
        interval,
        &reporting.sink,
        &stats,
        planned,
        tls,
        control.as_ref().map(|c| &c.listeners),
    )
    .await?;
    let first_view = control.as_ref().map(ControlPlane::first_view);
    let readiness = Readiness::new();
    let admin = match args.metrics_addr {
        Some(addr) => {
            let engine = reporting.local.as_ref().map(|l| Arc::clone(&l.engine));
            let rotation = mtls.as_ref().map(|m| Arc::clone(&m.rotation));
            let parts = ScrapeParts {
                engine,
                stats: Arc::clone(&stats),
                rotation,
                control: control.as_ref().map(ControlPlane::status),
            };
            Some(bind_admin(addr, parts, readiness.clone()).await?)
        }
        None => None,
    };
    let rotator = mtls.map(|m| m.rotator);
    let mut running = Running::start(
        proxies,
        reporting.sender,
        rotator,
        control,
        admin,
        args.drain_timeout,
    );
    // Under a control plane the sidecar is ready once it holds a view (as Istio's sidecar
    // once it has its first configuration); until then connections pass through.
    let becoming_ready = match first_view {
        None => {
            readiness.set(true);
            None
        }
        Some(mut first) => {
            let readiness = readiness.clone();
            Some(tokio::spawn(async move {
                if first.wait_for(|&held| held).await.is_ok() {
                    tracing::info!("first view from the control plane applied: ready");
                    readiness.set(true);
                }
            }))
        }
    };
    let failed = running.until_stopped().await;
    if let Some(task) = becoming_ready {
        task.abort();
    }
    readiness.set(false);
    running.shut_down(reporting.local, stop_reload).await;
    tracing::info!("stopped");
    match failed {
        None => Ok(()),
        Some(name) => Err(Failure::Runtime(anyhow::anyhow!(
            "{name} stopped while serving"
        ))),
    }
}

async fn resolve(addr: &str) -> Result<SocketAddr, Failure> {
    match tokio::net::lookup_host(addr).await {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| usage(format!("upstream '{addr}' resolves to no address"))),
        Err(e) => Err(usage(format!("cannot resolve upstream '{addr}': {e}"))),
    }
}

/// One listener to bind: where, where its connections go, and whom its reports name.
struct Planned {
    listen: SocketAddr,
    upstream: Upstream,
    identity: Arc<Identity>,
    /// A listener the host may not support (IPv6 beside IPv4): warn and go on without it.
    optional: bool,
}

/// The listener/upstream pairs of `--listen`/`--upstream` and every `--route`.
async fn explicit(args: &Args, identity: Identity) -> Result<Vec<Planned>, Failure> {
    let identity = Arc::new(identity);
    let (Some(listen), Some(upstream)) = (args.listen, &args.upstream) else {
        return Err(usage(
            "--listen and --upstream are required without --transparent",
        ));
    };
    let mut pairs = vec![(listen, resolve(upstream).await?)];
    for route in &args.routes {
        let (listen, upstream) = route
            .split_once('=')
            .ok_or_else(|| usage(format!("--route '{route}': expected LISTEN=UPSTREAM")))?;
        let listen: SocketAddr = listen
            .parse()
            .map_err(|e| usage(format!("--route '{route}': listen address: {e}")))?;
        pairs.push((listen, resolve(upstream).await?));
    }
    Ok(pairs
        .into_iter()
        .map(|(listen, upstream)| Planned {
            listen,
            upstream: Upstream::Fixed(upstream),
            identity: Arc::clone(&identity),
            optional: false,
        })
        .collect())
}

/// The transparent sidecar's listeners: inbound reports name the proxy's workload as the
/// destination, outbound ones as the source (and leave the destination's service to the
/// telemetry server, which finds it from the address). Each `0.0.0.0:P` gets a `[::]:P`
/// twin for IPv6 capture.
fn transparent(args: &Args, identity: Identity) -> Vec<Planned> {
    let inbound = Arc::new(Identity {
        kind: ReporterKind::Inbound,
        ..identity.clone()
    });
    let outbound = Arc::new(Identity {
        kind: ReporterKind::Outbound,
        service_host: None,
        ..identity
    });
    let mut planned = Vec::new();
    for (listen, identity) in [
        (args.inbound_listen, inbound),
        (args.outbound_listen, outbound),
    ] {
        let both = listen.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED) && listen.port() != 0;
        let twin = SocketAddr::from((Ipv6Addr::UNSPECIFIED, listen.port()));
        planned.push(Planned {
            listen,
            upstream: Upstream::OriginalDestination,
            identity: Arc::clone(&identity),
            optional: false,
        });
        if both {
            planned.push(Planned {
                listen: twin,
                upstream: Upstream::OriginalDestination,
                identity,
                optional: true,
            });
        }
    }
    planned
}

/// Where reports go: the telemetry server (through the queue and its sender), the in-proxy
/// engine, both, or nowhere.
struct Reporting {
    sink: Arc<dyn ReportSink>,
    sender: Option<ReportSender<MixerTransport>>,
    local: Option<LocalParts>,
}

fn reporting(
    args: &Args,
    stats: &Arc<ProxyStats>,
    stop_reload: watch::Receiver<bool>,
) -> Result<Reporting, Failure> {
    let queue = Arc::new(ReportQueue::new(args.queue_capacity, Arc::clone(stats)));
    let (remote, sender): (Arc<dyn ReportSink>, _) = match &args.mixer {
        Some(addr) => {
            let transport = MixerTransport::lazy(addr, &Manifest::istio())
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
                Arc::clone(stats),
            );
            tracing::info!(mixer = %addr, "reporting to the telemetry server");
            (queue, Some(sender))
        }
        None => {
            tracing::warn!("no --mixer: connection reports are not sent anywhere");
            (Arc::new(Discard), None)
        }
    };
    let (sink, local): (Arc<dyn ReportSink>, _) =
        match (local_telemetry(args, stop_reload)?, sender.is_some()) {
            (None, _) => (remote, None),
            (Some((telemetry, parts)), false) => (Arc::new(telemetry), Some(parts)),
            (Some((telemetry, parts)), true) => (Arc::new((remote, telemetry)), Some(parts)),
        };
    Ok(Reporting {
        sink,
        sender,
        local,
    })
}

/// The settings every listener shares, from the flags.
fn listener_config(
    args: &Args,
    interval: ReportInterval,
    listen: SocketAddr,
    upstream: Upstream,
) -> ListenerConfig {
    let mut config = match upstream {
        Upstream::Fixed(addr) => ListenerConfig::new(listen, addr),
        Upstream::OriginalDestination => ListenerConfig::transparent(listen),
    };
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
    config
}

async fn bind_listeners(
    args: &Args,
    interval: ReportInterval,
    sink: &Arc<dyn ReportSink>,
    stats: &Arc<ProxyStats>,
    planned: Vec<Planned>,
    tls: Option<&ListenerTls>,
    routing: Option<&ListenerRouting>,
) -> Result<Vec<Proxy>, Failure> {
    let ids = Arc::new(ConnectionIds::new());
    let mut proxies = Vec::new();
    for p in planned {
        let config = listener_config(args, interval, p.listen, p.upstream);
        let kind = p.identity.kind;
        let bound = Proxy::bind(config, p.identity, Arc::clone(sink), Arc::clone(stats)).await;
        let proxy = match bound {
            Ok(proxy) => proxy,
            Err(BindError::Config(c)) => return Err(usage(c.to_string())),
            Err(e) if p.optional => {
                tracing::warn!(error = %e, "IPv6 listener unavailable; IPv4 only");
                continue;
            }
            Err(e) => return Err(Failure::Runtime(e.into())),
        };
        // The bound address, so that `--listen 127.0.0.1:0` is usable (tests read this line).
        tracing::info!(listen = %proxy.local_addr(), upstream = %p.upstream, "proxy listening");
        let proxy = match tls {
            Some(tls) => proxy.with_tls(listener_tls(tls, &p.upstream, kind)),
            None => proxy,
        };
        // Under a control plane, outbound listeners route and inbound ones follow its peer
        // authentication.
        let proxy = match (routing, kind) {
            (Some(r), ReporterKind::Outbound) => proxy.with_router(Arc::clone(&r.router)),
            (Some(r), ReporterKind::Inbound) => proxy.with_peer_policy(r.policy.clone()),
            (None, _) => proxy,
        };
        proxies.push(proxy.with_connection_ids(Arc::clone(&ids)));
    }
    Ok(proxies)
}

/// The TLS a listener gets: in explicit mode all that the flags ask for; in transparent mode
/// the inbound listener terminates mTLS from peers and the outbound one originates it.
fn listener_tls(tls: &ListenerTls, upstream: &Upstream, kind: ReporterKind) -> ListenerTls {
    let mut tls = tls.clone();
    if matches!(upstream, Upstream::OriginalDestination) {
        match kind {
            ReporterKind::Inbound => tls.upstream = None,
            _ => tls.inbound = None,
        }
    }
    tls
}

async fn bind_admin(
    addr: SocketAddr,
    parts: ScrapeParts,
    readiness: Readiness,
) -> Result<AdminServer, Failure> {
    let server = AdminServer::bind(addr, Streamed(move || scrape(parts.clone())), readiness)
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    tracing::info!(addr = %server.local_addr(), "serving /metrics and /ready");
    Ok(server)
}

/// The serving tasks and the signals that stop each, in the order shutdown needs.
struct Running {
    listeners: Vec<JoinHandle<()>>,
    stop_listeners: watch::Sender<bool>,
    sender: Option<JoinHandle<()>>,
    stop_sender: watch::Sender<bool>,
    rotation: Option<JoinHandle<()>>,
    stop_rotation: watch::Sender<bool>,
    control: Option<JoinHandle<()>>,
    stop_control: watch::Sender<bool>,
    admin: Option<JoinHandle<()>>,
    stop_admin: watch::Sender<bool>,
    /// Every serving task names itself here when it ends; before SIGTERM that is a failure.
    ended: mpsc::UnboundedReceiver<String>,
}

impl Running {
    fn start(
        proxies: Vec<Proxy>,
        sender: Option<ReportSender<MixerTransport>>,
        rotator: Option<Rotator>,
        control: Option<ControlPlane>,
        admin: Option<AdminServer>,
        drain: Duration,
    ) -> Running {
        let (ended_tx, ended) = mpsc::unbounded_channel::<String>();
        // The admin endpoint outlives the drain, so that /ready says 503 and /metrics can
        // still be scraped while connections finish.
        let (stop_admin, mut admin_rx) = watch::channel(false);
        let admin = admin.map(|server| {
            let serve = server.serve(async move {
                let _ = admin_rx.wait_for(|&s| s).await;
            });
            tokio::spawn(noticed("admin endpoint".into(), &ended_tx, async move {
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "admin endpoint failed");
                }
            }))
        });
        let (stop_sender, sender_rx) = watch::channel(false);
        let sender = sender
            .map(|s| tokio::spawn(noticed("report sender".into(), &ended_tx, s.run(sender_rx))));
        let (stop_rotation, rotation_rx) = watch::channel(false);
        let rotation = rotator.map(|r| {
            tokio::spawn(noticed(
                "certificate rotation".into(),
                &ended_tx,
                r.run(rotation_rx),
            ))
        });
        let (stop_control, control_rx) = watch::channel(false);
        let control = control.map(|c| {
            tokio::spawn(noticed(
                "control plane client".into(),
                &ended_tx,
                c.run(control_rx),
            ))
        });
        let (stop_listeners, listeners_rx) = watch::channel(false);
        let listeners = proxies
            .into_iter()
            .map(|p| {
                let name = format!("listener {}", p.local_addr());
                tokio::spawn(noticed(name, &ended_tx, p.run(listeners_rx.clone(), drain)))
            })
            .collect();
        Running {
            listeners,
            stop_listeners,
            sender,
            stop_sender,
            rotation,
            stop_rotation,
            control,
            stop_control,
            admin,
            stop_admin,
            ended,
        }
    }

    /// Waits for SIGTERM/SIGINT (`None`) or for a task that stopped serving (its name).
    async fn until_stopped(&mut self) -> Option<String> {
        let failed = tokio::select! {
            () = crate::signals::terminated() => None,
            Some(name) = self.ended.recv() => Some(name),
        };
        match &failed {
            None => tracing::info!("shutting down: draining connections"),
            Some(name) => {
                tracing::error!(subsystem = %name, "stopped while serving; shutting down")
            }
        }
        failed
    }

    /// Connections drain first, then their close reports are flushed, then the in-proxy
    /// engine stops, and the admin endpoint goes last.
    async fn shut_down(self, local: Option<LocalParts>, stop_reload: watch::Sender<bool>) {
        let _ = self.stop_listeners.send(true);
        for task in self.listeners {
            let _ = task.await;
        }
        let _ = self.stop_sender.send(true);
        if let Some(task) = self.sender {
            let _ = task.await;
        }
        let _ = self.stop_rotation.send(true);
        if let Some(task) = self.rotation {
            let _ = task.await;
        }
        let _ = self.stop_control.send(true);
        if let Some(task) = self.control {
            let _ = task.await;
        }
        let _ = stop_reload.send(true);
        if let Some(local) = local {
            local.finish().await;
        }
        let _ = self.stop_admin.send(true);
        if let Some(task) = self.admin {
            let _ = task.await;
        }
    }
}
