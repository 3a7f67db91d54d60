//! Wiring: configuration watcher, engine, gRPC ingest, admin endpoint, background tasks.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_admin::{AdminError, AdminServer, MetricsBody, Readiness, Streamed, CHUNK_BYTES};
use meshmeter_config::{ConfigWatcher, Diagnostics, LoadOptions};
use meshmeter_engine::{
    spawn_reloader, Engine, EngineError, EngineOptions, RegistrySource, Workloads,
};
use meshmeter_selfmetrics::SelfMetrics;
use meshmeter_stdio::Output;
use meshmeter_wire::{Deduplicator, MixerServer, DEFAULT_MAX_MESSAGE_BYTES};
use meshmeter_workloads::{FileRegistry, WorkloadError};
use tokio::net::TcpListener;

use crate::ingest::Ingest;
use crate::limits::{GrpcLimits, Port};
use crate::workers::{default_threads, Workers};

/// How long a shutdown waits for calls in flight before closing what is left.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run the telemetry server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Where proxies send `Report` calls (Mixer v1 gRPC).
    pub grpc_addr: SocketAddr,
    /// Where Prometheus scrapes `/metrics` (also `/healthz` and `/ready`).
    pub metrics_addr: SocketAddr,
    /// Configuration files and directories (watched for changes).
    pub config_paths: Vec<PathBuf>,
    /// Refuse to start when the initial configuration has any error; by default it is
    /// accepted object by object, as every later change is.
    pub strict_config: bool,
    /// Rules in this namespace apply to every report.
    pub default_namespace: String,
    /// Load Istio's default TCP telemetry before the given configuration.
    pub include_defaults: bool,
    /// The workloads file that gives reports their identity.
    pub workloads: Option<PathBuf>,
    /// Larger `Report` requests are refused.
    pub max_message_bytes: usize,
    /// `Report` requests with more bags are refused (RESOURCE_EXHAUSTED).
    pub max_bags_per_request: usize,
    /// The most series one metric keeps.
    pub series_limit: usize,
    /// Send every access log here instead of where its handler says.
    pub log_output: Option<Output>,
    /// How often the configuration and the workloads file are checked for changes.
    pub reload_interval: Duration,
    /// How many reporting clients the duplicate-report filter remembers.
    pub dedup_clients: usize,
    /// Threads (each with a single-threaded runtime) serving report connections; 0 means
    /// one per core this process may run on.
    pub ingest_threads: usize,
    /// How long a metric a reload removed keeps its series, so that restoring it continues
    /// its counters; zero drops it at once.
    pub removed_metric_grace: Duration,
    /// After shutdown is asked for, how long calls in flight may take to finish; then every
    /// connection still open (idle, without the HTTP/2 preface, stalled) is closed.
    pub drain_timeout: Duration,
    /// Bounds on the report port's connections, calls and buffered request bodies.
    pub grpc_limits: GrpcLimits,
    /// Identity kept up to date by another component (the Kubernetes watches), used instead
    /// of `workloads`.
    pub identity: Option<Arc<dyn RegistrySource>>,
    /// Configuration documents from elsewhere (Kubernetes objects), loaded after the files
    /// and again whenever they change.
    pub config_documents: Option<tokio::sync::watch::Receiver<Arc<Vec<meshmeter_config::Input>>>>,
    /// Told, after every load of `config_documents`, which of them are not in force as
    /// written and why (the Kubernetes source records Warning Events from it).
    pub on_object_problems: Option<ObjectProblemHook>,
    /// `/ready` stays false until every one of these is true (the watches' first sync).
    pub ready_gates: Vec<tokio::sync::watch::Receiver<bool>>,
    /// Self metrics shared with other components, which register their own series in it;
    /// a fresh registry when `None`.
    pub self_metrics: Option<Arc<SelfMetrics>>,
}

/// Called with the objects of another source that are not in force as written, after every
/// load of them.
#[derive(Clone)]
pub struct ObjectProblemHook(pub Arc<dyn Fn(Vec<meshmeter_config::ObjectProblem>) + Send + Sync>);

impl std::fmt::Debug for ObjectProblemHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectProblemHook")
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 9091)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 42422)),
            config_paths: Vec::new(),
            strict_config: false,
            default_namespace: "istio-system".to_owned(),
            include_defaults: true,
            workloads: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_bags_per_request: meshmeter_wire::DEFAULT_MAX_BAGS_PER_REQUEST,
            series_limit: meshmeter_prometheus::DEFAULT_SERIES_LIMIT,
            log_output: None,
            reload_interval: Duration::from_secs(1),
            dedup_clients: 10_000,
            ingest_threads: 0,
            removed_metric_grace: meshmeter_engine::DEFAULT_REMOVED_METRIC_GRACE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            grpc_limits: GrpcLimits::default(),
            identity: None,
            config_documents: None,
            on_object_problems: None,
            ready_gates: Vec::new(),
            self_metrics: None,
        }
    }
}

/// Why the server cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid (the diagnostics say where).
    #[error("invalid configuration:\n{0}")]
    Config(Diagnostics),
    /// The workloads file is invalid.
    #[error(transparent)]
    Workloads(#[from] WorkloadError),
    /// The engine cannot put the configuration in force.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The gRPC address cannot be bound.
    #[error("cannot listen for reports on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The admin endpoint failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The gRPC server failed.
    #[error("report server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// A subsystem (report server, admin endpoint, reloader, sweeper) stopped while serving.
    #[error("{subsystem} stopped: {reason}")]
    Subsystem {
        /// Which one.
        subsystem: &'static str,
        /// Why (its error, its panic, or that it returned).
        reason: String,
    },
    /// Every thread serving report connections has ended.
    #[error("no report runtime is running")]
    NoRuntime,
    /// A background thread could not be started.
    #[error("cannot start a background thread: {0}")]
    Thread(std::io::Error),
}

/// A started telemetry server: listeners bound, configuration loaded, not yet serving.
pub struct TelemetryServer {
    grpc: TcpListener,
    grpc_addr: SocketAddr,
    admin: AdminServer,
    watcher: ConfigWatcher,
    engine: Arc<Engine>,
    ingest: Arc<Ingest>,
    dedup: Arc<Deduplicator>,
    ready: Readiness,
    max_message_bytes: usize,
    ingest_threads: usize,
    drain_timeout: Duration,
    port: Arc<Port>,
    _workloads_watch: Option<meshmeter_workloads::Watch>,
    ready_gates: Vec<tokio::sync::watch::Receiver<bool>>,
}

impl std::fmt::Debug for TelemetryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryServer")
            .field("grpc_addr", &self.grpc_addr)
            .field("metrics_addr", &self.admin.local_addr())
            .finish_non_exhaustive()
    }
}

impl TelemetryServer {
    /// Loads the configuration and the workloads, and binds both addresses (port 0 picks a
    /// free port: see [`TelemetryServer::grpc_addr`] and [`TelemetryServer::metrics_addr`]).
    pub async fn start(options: ServerOptions) -> Result<Self, ServerError> {
        let load = LoadOptions {
            default_namespace: options.default_namespace.clone(),
            include_defaults: options.include_defaults,
        };
        let mut watcher = if options.strict_config {
            ConfigWatcher::new(options.config_paths.clone(), load)
        } else {
            ConfigWatcher::accepting(options.config_paths.clone(), load)
        }
        .map_err(ServerError::Config)?;
        for d in watcher.current().diagnostics().iter() {
            tracing::info!("{d}");
        }

        let (workloads, watch) = match (&options.identity, &options.workloads) {
            (Some(source), _) => (Workloads::Dynamic(Arc::clone(source)), None),
            (None, Some(path)) => {
                let registry = Arc::new(FileRegistry::open(path)?);
                let watch = registry
                    .watch(options.reload_interval, |e| {
                        tracing::warn!(error = %e, "workloads file change rejected; keeping the last good one")
                    })
                    .map_err(ServerError::Thread)?;
                (Workloads::File(registry), Some(watch))
            }
            (None, None) => (Workloads::none(), None),
        };

        let self_metrics = options
            .self_metrics
            .clone()
            .unwrap_or_else(|| Arc::new(SelfMetrics::new()));
        let engine = Arc::new(Engine::new(
            watcher.current(),
            workloads,
            Arc::clone(&self_metrics),
            EngineOptions {
                series_limit: options.series_limit,
                log_output: options.log_output.clone(),
                removed_metric_grace: options.removed_metric_grace,
            },
        )?);
        let ingest = Arc::new(
            Ingest::new(Arc::clone(&engine), options.max_message_bytes)
                .with_max_bags(options.max_bags_per_request),
        );

        let grpc = TcpListener::bind(options.grpc_addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: options.grpc_addr,
                source,
            })?;
        let grpc_addr = grpc.local_addr().map_err(|source| ServerError::Bind {
            addr: options.grpc_addr,
            source,
        })?;

        let ready = Readiness::new();
        let metrics_engine = Arc::clone(&engine);
        let admin = AdminServer::bind(
            options.metrics_addr,
            Streamed(move || scrape(&metrics_engine)),
            ready.clone(),
        )
        .await?;

        let port = Port::new(options.grpc_limits.clone(), engine.self_metrics());
        watcher.spawn_polling(options.reload_interval);
        if let Some(documents) = &options.config_documents {
            let report = options.on_object_problems.clone();
            watcher.follow_objects(documents.clone(), move |problems| {
                if let Some(ObjectProblemHook(report)) = &report {
                    report(problems);
                }
            });
        }
        Ok(TelemetryServer {
            grpc,
            grpc_addr,
            admin,
            watcher,
            engine,
            ingest,
            dedup: Arc::new(Deduplicator::new(options.dedup_clients)),
            ready,
            max_message_bytes: options.max_message_bytes,
            ingest_threads: match options.ingest_threads {
                0 => default_threads(),
                n => n,
            },
            drain_timeout: options.drain_timeout,
            port,
            _workloads_watch: watch,
            ready_gates: options.ready_gates.clone(),
        })
    }

    /// Where `Report` calls are served.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// The engine (for in-process use and tests).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Serves until `shutdown` completes; then stops accepting, finishes calls in flight,
    /// flushes the access log and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let TelemetryServer {
            grpc,
            admin,
            watcher,
            engine,
            ingest,
            dedup,
            ready,
            max_message_bytes,
            ingest_threads,
            drain_timeout,
            port,
            _workloads_watch,
            ready_gates,
            ..
        } = self;

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Turns true when the drain deadline has passed: connections still open are dropped.
        let (force_tx, force_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        // Configuration changes: rebuild the runtime (keeping unchanged series), then the
        // decoder for its manifest.
        let reload = {
            let ingest = Arc::clone(&ingest);
            spawn_reloader(
                Arc::clone(&engine),
                watcher,
                move |_| ingest.refresh(),
                stop_rx.clone(),
            )
        };

        // Idle series expiry.
        let sweeper = {
            let engine = Arc::clone(&engine);
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    let every = engine
                        .runtime()
                        .sweep_interval()
                        .unwrap_or(Duration::from_secs(5));
                    tokio::select! {
                        _ = tokio::time::sleep(every) => { engine.sweep(); }
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
            })
        };

        let grpc_server = MixerServer::from_arc(Arc::clone(&ingest))
            .max_message_bytes(max_message_bytes)
            .with_dedup(dedup);
        let workers = Workers::start(ingest_threads, &grpc_server, &port, &stop_rx, &force_rx)?;
        let mut grpc_task = tokio::spawn(workers.serve(grpc, port, stopped(stop_rx.clone())));
        let mut admin_task = tokio::spawn(admin.serve(stopped(stop_rx.clone())));
        let (mut reload, mut sweeper) = (reload, sweeper);
        // Ready once every gate (the Kubernetes watches' first sync) is open; a shutdown
        // before that leaves it unready.
        let gate = {
            let ready = ready.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                for mut g in ready_gates {
                    tokio::select! {
                        _ = g.wait_for(|open| *open) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
                if !*stop.borrow() {
                    ready.set(true);
                    tracing::info!("telemetry server ready");
                }
            })
        };

        // Every subsystem runs until shutdown: one that ends before is a failure, which makes
        // the server unready and stops it (the orchestrator restarts it) instead of serving
        // half-alive.
        let failed = first_failure(
            shutdown,
            &mut grpc_task,
            &mut admin_task,
            &mut reload,
            &mut sweeper,
        )
        .await;
        if let Some((subsystem, reason)) = failed {
            ready.set(false);
            tracing::error!(subsystem, reason = %reason, "a subsystem stopped; shutting down");
            let _ = stop_tx.send(true);
            let _ = force_tx.send(true);
            for task in [
                &admin_task.abort_handle(),
                &reload.abort_handle(),
                &sweeper.abort_handle(),
            ] {
                task.abort();
            }
            gate.abort();
            engine.flush_logs();
            return Err(ServerError::Subsystem { subsystem, reason });
        }
        tracing::info!("shutting down");
        gate.abort();
        ready.set(false);
        let _ = stop_tx.send(true);
        let (grpc_result, admin_result) =
            drain(grpc_task, admin_task, drain_timeout, &force_tx).await;
        let _ = tokio::join!(reload, sweeper);
        engine.flush_logs();
        match grpc_result {
            Ok(r) => r?,
            Err(e) => tracing::error!(error = %e, "report server task failed"),
        }
        match admin_result {
            Ok(r) => r?,
            // Stopped at the drain deadline (already logged).
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::error!(error = %e, "admin server task failed"),
        }
        Ok(())
    }
}

/// One scrape's body: the configured metrics a chunk at a time (the large part), then the
/// registry's and the engine's own metrics.
fn scrape(engine: &Arc<Engine>) -> Box<dyn MetricsBody> {
    let engine = Arc::clone(engine);
    let mut configured = engine.runtime().prometheus().exposition();
    let mut own_written = false;
    Box::new(move |out: &mut String| {
        if configured.next_chunk(out, CHUNK_BYTES) {
            return true;
        }
        if std::mem::replace(&mut own_written, true) {
            return false;
        }
        engine.runtime().prometheus().encode_self(out);
        engine.self_metrics().encode(out);
        true
    })
}

type Joined<T> = Result<T, tokio::task::JoinError>;

/// Waits up to `deadline` for both servers to finish their calls in flight; past it, tells the
/// report runtimes to drop their connections and stops the admin endpoint, so that a client
/// that never speaks (or never stops) cannot hold the process past its shutdown budget.
async fn drain(
    mut grpc: tokio::task::JoinHandle<Result<(), ServerError>>,
    mut admin: tokio::task::JoinHandle<Result<(), AdminError>>,
    deadline: Duration,
    force: &tokio::sync::watch::Sender<bool>,
) -> (
    Joined<Result<(), ServerError>>,
    Joined<Result<(), AdminError>>,
) {
    let (mut grpc_done, mut admin_done) = (None, None);
    let expired = tokio::time::sleep(deadline);
    tokio::pin!(expired);
    while grpc_done.is_none() || admin_done.is_none() {
        tokio::select! {
            r = &mut grpc, if grpc_done.is_none() => grpc_done = Some(r),
            r = &mut admin, if admin_done.is_none() => admin_done = Some(r),
            () = &mut expired => break,
        }
    }
    if grpc_done.is_none() || admin_done.is_none() {
        tracing::warn!(
            deadline = ?deadline,
            "drain deadline passed; closing the connections still open"
        );
        let _ = force.send(true);
        admin.abort();
    }
    // Past the deadline the runtimes return as soon as they see `force`: these waits are short.
    let g = match grpc_done {
        Some(g) => g,
        None => grpc.await,
    };
    let a = match admin_done {
        Some(a) => a,
        None => admin.await,
    };
    (g, a)
}

/// Why a subsystem's task ended: its error, its panic, or a return it should not have made.
fn ended(joined: Joined<Result<(), String>>) -> String {
    match joined {
        Ok(Ok(())) => "it returned before shutdown".to_owned(),
        Ok(Err(e)) => e,
        Err(e) if e.is_panic() => format!("it panicked: {e}"),
        Err(e) => e.to_string(),
    }
}

/// Waits for `shutdown`, or for one of the subsystems to end first: then names it and why.
async fn first_failure(
    shutdown: impl Future<Output = ()>,
    grpc: &mut tokio::task::JoinHandle<Result<(), ServerError>>,
    admin: &mut tokio::task::JoinHandle<Result<(), AdminError>>,
    reload: &mut tokio::task::JoinHandle<()>,
    sweeper: &mut tokio::task::JoinHandle<()>,
) -> Option<(&'static str, String)> {
    tokio::select! {
        () = shutdown => None,
        r = grpc => Some(("report server", ended(r.map(|r| r.map_err(|e| e.to_string()))))),
        r = admin => Some(("admin endpoint", ended(r.map(|r| r.map_err(|e| e.to_string()))))),
        r = reload => Some(("configuration reloader", ended(r.map(Ok)))),
        r = sweeper => Some(("series sweeper", ended(r.map(Ok)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forever<T: Send + 'static>() -> tokio::task::JoinHandle<T> {
        tokio::spawn(std::future::pending())
    }

    #[tokio::test]
    async fn shutdown_first_is_no_failure() {
        let (mut g, mut a, mut r, mut s) = (forever(), forever(), forever(), forever());
        assert_eq!(
            first_failure(async {}, &mut g, &mut a, &mut r, &mut s).await,
            None
        );
    }

    #[tokio::test]
    async fn a_subsystem_that_ends_early_is_named_with_its_reason() {
        let (mut g, mut a, mut r) = (forever(), forever(), forever());
        let mut s = tokio::spawn(async { panic!("sweep broke") });
        let failed = first_failure(std::future::pending(), &mut g, &mut a, &mut r, &mut s).await;
        let (which, why) = failed.expect("a failure");
        assert_eq!(which, "series sweeper");
        assert!(
            why.starts_with("it panicked") && why.contains("sweep broke"),
            "{why}"
        );

        let (mut r, mut s) = (tokio::spawn(async {}), forever());
        let failed = first_failure(std::future::pending(), &mut g, &mut a, &mut r, &mut s).await;
        assert_eq!(
            failed,
            Some((
                "configuration reloader",
                "it returned before shutdown".to_owned()
            ))
        );

        let mut g = tokio::spawn(async { Err(ServerError::NoRuntime) });
        let mut r = forever();
        let failed = first_failure(std::future::pending(), &mut g, &mut a, &mut r, &mut s).await;
        assert_eq!(
            failed,
            Some(("report server", "no report runtime is running".to_owned()))
        );
    }
}
