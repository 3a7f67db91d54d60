//! `meshmeter control`: the control plane that streams every sidecar its routing view.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::shared::Failure;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_admin::{AdminServer, Readiness};
use meshmeter_control::{ControlServer, ServerConfig, Shape, View, WatchSource};
use meshmeter_netconfig::{NetWatcher, NetworkConfig};
use meshmeter_routing::catalog::ServiceCatalog;
use meshmeter_routing::view::Node;
use meshmeter_selfmetrics::SelfMetrics;
use meshmeter_workloads::FileRegistry;
use tokio::sync::watch;

/// Run the control plane: stream every sidecar its TCP routing view over gRPC, compiled from the
/// traffic configuration and the service catalog.
///
/// It watches its inputs once and serves `meshmeter.control.v1.Discovery/Stream` on --listen, so
/// that sidecars never watch the Kubernetes API themselves.
///
/// A sidecar's first message names it (id, namespace, labels, addresses); it gets its full
/// view (the services it may call with their TCP routes, the clusters those lead to with their
/// endpoints and policies, its inbound peer authentication), then only what changed whenever
/// the inputs change (bursts within 50 ms are pushed once). Views are compiled once per
/// workload shape (namespace, labels and the services the pod backs) and change, however many
/// sidecars share it. A sidecar that reconnects with the version it holds gets only what
/// differs, or nothing.
///
/// Inputs: the networking configuration (DestinationRule, VirtualService, MeshPolicy, Policy)
/// from --config-dir; services and endpoints from the workloads file (--workloads: its
/// `services` list, endpoints from the workloads naming each service) or from Kubernetes
/// (--kubernetes: Services, EndpointSlices and pods, read with get/list/watch). Both are
/// reloaded when they change.
///
/// Metrics on --admin (`/metrics`, `/healthz`, `/ready`, ready once the inputs are loaded):
/// meshmeter_control_connected_sidecars,
/// meshmeter_control_pushes_total{kind="full"|"incremental"},
/// meshmeter_control_acks_total, meshmeter_control_nacks_total,
/// meshmeter_control_push_ack_microseconds_total, meshmeter_control_compiles_total,
/// meshmeter_control_input_changes_total, meshmeter_control_streams_refused_total{reason}.
///
/// Exit codes: 0 after SIGTERM/SIGINT, 1 runtime failure (address in use), 2 bad flags or
/// unusable inputs at start (a workloads file with an error, a missing --config-dir).
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("catalog").required(true).args(["workloads", "kubernetes"]))]
pub(crate) struct Args {
    /// Where sidecars connect.
    #[arg(long, default_value = "0.0.0.0:15010", value_name = "ADDR")]
    listen: SocketAddr,

    /// A directory (or file) of networking configuration: DestinationRule, VirtualService,
    /// MeshPolicy, Policy (YAML; reloaded when it changes; other kinds are skipped).
    /// Repeatable. With --kubernetes, the API server's objects of those kinds are added.
    #[arg(long = "config-dir", value_name = "DIR")]
    config_dirs: Vec<PathBuf>,

    /// Services and endpoints from this workloads file (its `services` list). Either this or
    /// --kubernetes.
    #[arg(long, value_name = "FILE")]
    workloads: Option<PathBuf>,

    /// Services and endpoints from the Kubernetes API server (in-cluster credentials, or
    /// --kubeconfig).
    #[arg(long)]
    kubernetes: bool,

    /// A kubeconfig file for --kubernetes (default: in-cluster credentials).
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    kubeconfig: Option<PathBuf>,

    /// The kubeconfig context for --kubernetes (default: its current-context).
    #[arg(long, value_name = "NAME", requires = "kubernetes")]
    context: Option<String>,

    /// The cluster's DNS domain: a Service's host is NAME.NAMESPACE.svc.DOMAIN.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    cluster_domain: String,

    /// Where to serve /metrics, /healthz and /ready.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,

    /// How often files are checked for changes (a change is loaded once two checks agree).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    reload_interval: Duration,
}

pub(crate) fn run(args: Args) -> ExitCode {
    crate::shared::run_server(serve(args))
}

/// What views are compiled from.
#[derive(Debug, Default)]
struct Inputs {
    network: Arc<NetworkConfig>,
    catalog: Arc<ServiceCatalog>,
    /// The cluster's DNS domain (short hosts resolve under it).
    domain: Arc<str>,
    /// Compile warnings already logged for these inputs (every shape meets the same ones).
    warned: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Follows the workloads file: its catalog now, and again whenever it changes.
fn follow_workloads(
    path: PathBuf,
    every: Duration,
) -> Result<watch::Receiver<Arc<ServiceCatalog>>, Failure> {
    let registry = FileRegistry::open(&path).map_err(|e| Failure::Usage(e.to_string()))?;
    let (tx, rx) = watch::channel(Arc::new(registry.load().catalog()));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match registry.poll() {
                Ok(true) => {
                    let catalog = registry.load().catalog();
                    tracing::info!(path = %registry.path().display(), services = catalog.services.len(), "workloads file reloaded");
                    tx.send_if_modified(|current| {
                        let changed = **current != catalog;
                        if changed {
                            *current = Arc::new(catalog);
                        }
                        changed
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "workloads file not reloaded; keeping the last good one")
                }
            }
            if tx.is_closed() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Merges the two inputs into one value that changes when either does.
fn combine(
    mut network: watch::Receiver<Arc<NetworkConfig>>,
    mut catalog: watch::Receiver<Arc<ServiceCatalog>>,
    domain: Arc<str>,
) -> watch::Receiver<Arc<Inputs>> {
    let first = Inputs {
        network: Arc::clone(&network.borrow_and_update()),
        catalog: Arc::clone(&catalog.borrow_and_update()),
        domain: Arc::clone(&domain),
        warned: Default::default(),
    };
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        // An input whose sender is gone will not change any more; the other still may.
        let (mut network_open, mut catalog_open) = (true, true);
        while network_open || catalog_open {
            tokio::select! {
                r = network.changed(), if network_open => if r.is_err() {
                    network_open = false;
                    continue;
                },
                r = catalog.changed(), if catalog_open => if r.is_err() {
                    catalog_open = false;
                    continue;
                },
                () = tx.closed() => break,
            }
            tx.send_replace(Arc::new(Inputs {
                network: Arc::clone(&network.borrow_and_update()),
                catalog: Arc::clone(&catalog.borrow_and_update()),
                domain: Arc::clone(&domain),
                warned: Default::default(),
            }));
        }
    });
    rx
}

/// A sidecar's view, from `meshmeter_routing`'s compiler. Its warnings (a route to an unknown
/// host, subset or port, left out) are logged once per input change.
fn compile(inputs: &Inputs, node: &Node) -> View {
    let compiled =
        meshmeter_routing::compile(&inputs.network, &inputs.catalog, node, &inputs.domain);
    if !compiled.warnings.is_empty() {
        let mut warned = inputs
            .warned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for w in &compiled.warnings {
            if warned.insert(w.to_string()) {
                tracing::warn!(code = w.code(), "{w}");
            }
        }
    }
    let mut view = View::default();
    if let Err(e) = view.apply(&compiled.update) {
        // The compiler's own output is consistent; should it not be, the sidecar gets an empty
        // view rather than a half one.
        tracing::error!(node = %node.id, error = %e, "a compiled view is inconsistent");
        return View::default();
    }
    view
}

/// What a sidecar's view depends on: its namespace and labels (routes' `sourceLabels`, short
/// hosts, namespace policies) and the services its addresses back, with their ports there
/// (inbound peer authentication). Replicas of one workload share a shape.
fn shape(inputs: &Inputs, node: &Node) -> Shape {
    let ips: Vec<std::net::IpAddr> = node.ips.iter().filter_map(|ip| ip.parse().ok()).collect();
    let mut backed: Vec<String> = inputs
        .catalog
        .services
        .iter()
        .filter_map(|s| {
            let e = s.endpoints.iter().find(|e| ips.contains(&e.ip))?;
            Some(format!("{} {:?}", s.host, e.ports))
        })
        .collect();
    backed.sort_unstable();
    Shape {
        extra: backed,
        ..Shape::of(node)
    }
}

async fn serve(args: Args) -> Result<(), Failure> {
    if let Some(missing) = args.config_dirs.iter().find(|p| !p.exists()) {
        return Err(Failure::Usage(format!(
            "--config-dir {}: no such file or directory",
            missing.display()
        )));
    }
    let metrics = Arc::new(SelfMetrics::new());
    let readiness = Readiness::new();
    let (stop, stop_rx) = watch::channel(false);
    let admin = match args.admin {
        Some(addr) => {
            let m = Arc::clone(&metrics);
            let admin = AdminServer::bind(
                addr,
                move |out: &mut String| m.encode(out),
                readiness.clone(),
            )
            .await
            .map_err(|e| Failure::Runtime(e.to_string()))?;
            tracing::info!(addr = %admin.local_addr(), "serving /metrics, /healthz and /ready");
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(admin.serve(async move {
                let _ = rx.wait_for(|&s| s).await;
            })))
        }
        None => None,
    };

    // The networking configuration from the files, now and whenever they change.
    let mut traffic = NetWatcher::new(args.config_dirs.clone());
    traffic.spawn_polling(args.reload_interval);
    // Kept alive for as long as the server runs: they own the Kubernetes watches.
    let mut _identity = None;
    let mut _traffic_objects = None;
    let catalog = match &args.workloads {
        Some(path) => follow_workloads(path.clone(), args.reload_interval)?,
        None => {
            let options = meshmeter_kube::ClientOptions {
                kubeconfig: args
                    .kubeconfig
                    .clone()
                    .filter(|p| !p.as_os_str().is_empty()),
                context: args.context.clone(),
            };
            let client = meshmeter_kube::connect(&options)
                .await
                .map_err(|e| Failure::Usage(format!("--kubernetes: {e}")))?;
            let watch_metrics = meshmeter_kube::WatchMetrics::new(Arc::clone(&metrics));
            let identity = meshmeter_kube::IdentitySource::start(
                client.clone(),
                meshmeter_kube::IdentityOptions {
                    cluster_domain: args.cluster_domain.clone(),
                },
                &watch_metrics,
            );
            let objects = meshmeter_kube::TrafficSource::start(client.clone(), &[], &watch_metrics);
            let events =
                meshmeter_kube::ProblemEvents::new(client, tokio::runtime::Handle::current())
                    .with_component("meshmeter-control");
            traffic.follow_objects(objects.documents(), move |problems| {
                events.record(&problems)
            });
            let rx = identity.catalog();
            tracing::info!("waiting for the first listing of Services, EndpointSlices, pods and the networking objects");
            identity.synced().wait().await;
            objects.synced().wait().await;
            _identity = Some(identity);
            _traffic_objects = Some(objects);
            rx
        }
    };
    let inputs = combine(
        traffic.subscribe(),
        catalog,
        args.cluster_domain.as_str().into(),
    );

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot listen on {}: {e}", args.listen)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let server = ControlServer::new(
        Arc::new(WatchSource::new(inputs, compile).with_shape(shape)),
        &metrics,
        ServerConfig::default(),
    );
    // Tests read this line for the bound address.
    tracing::info!(listen = %bound, "control plane listening");
    readiness.set(true);
    let mut rx = stop_rx;
    let stopped = async move {
        let _ = rx.wait_for(|&s| s).await;
    };
    let serving = tokio::spawn(server.serve(listener, stopped));
    tokio::select! {
        () = crate::signals::terminated() => {}
        result = serving => {
            let _ = stop.send(true);
            return Err(Failure::Runtime(match result {
                Ok(Ok(())) => "the control plane stopped while serving".into(),
                Ok(Err(e)) => format!("the control plane failed: {e}"),
                Err(e) => format!("the control plane task failed: {e}"),
            }));
        }
    }
    readiness.set(false);
    let _ = stop.send(true);
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    tracing::info!("stopped");
    Ok(())
}
