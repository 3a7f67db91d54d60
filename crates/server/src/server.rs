//! Wiring: configuration watcher, engine, gRPC ingest, admin endpoint, background tasks.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_adapters::selfmetrics::SelfMetrics;
use meshmeter_adapters::stdio::Output;
use meshmeter_adapters::workloads::{FileRegistry, WorkloadError};
use meshmeter_admin::{AdminError, AdminServer, MetricsBody, Readiness, Streamed, CHUNK_BYTES};
use meshmeter_config::{ConfigWatcher, Diagnostics, LoadOptions};
use meshmeter_engine::{spawn_reloader, Engine, EngineError, EngineOptions, Workloads};
use meshmeter_wire::{Deduplicator, MixerServer, DEFAULT_MAX_MESSAGE_BYTES};
use tokio::net::TcpListener;

use crate::ingest::Ingest;
use crate::workers::{default_threads, Workers};

/// How to run the telemetry server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Where proxies send `Report` calls (Mixer v1 gRPC).
    pub grpc_addr: SocketAddr,
    /// Where Prometheus scrapes `/metrics` (also `/healthz` and `/ready`).
    pub metrics_addr: SocketAddr,
    /// Configuration files and directories (watched for changes).
    pub config_paths: Vec<PathBuf>,
    /// Rules in this namespace apply to every report.
    pub default_namespace: String,
    /// Load Istio's default TCP telemetry before the given configuration.
    pub include_defaults: bool,
    /// The workloads file that gives reports their identity.
    pub workloads: Option<PathBuf>,
    /// Larger `Report` requests are refused.
    pub max_message_bytes: usize,
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
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 9091)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 42422)),
            config_paths: Vec::new(),
            default_namespace: "istio-system".to_owned(),
            include_defaults: true,
            workloads: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            series_limit: meshmeter_adapters::prometheus::DEFAULT_SERIES_LIMIT,
            log_output: None,
            reload_interval: Duration::from_secs(1),
            dedup_clients: 10_000,
            ingest_threads: 0,
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
    _workloads_watch: Option<meshmeter_adapters::workloads::Watch>,
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
        let mut watcher =
            ConfigWatcher::new(options.config_paths.clone(), load).map_err(ServerError::Config)?;
        for d in watcher.current().diagnostics().iter() {
            tracing::info!("{d}");
        }

        let (workloads, watch) = match &options.workloads {
            Some(path) => {
                let registry = Arc::new(FileRegistry::open(path)?);
                let watch = registry
                    .watch(options.reload_interval, |e| {
                        tracing::warn!(error = %e, "workloads file change rejected; keeping the last good one")
                    })
                    .map_err(ServerError::Thread)?;
                (Workloads::File(registry), Some(watch))
            }
            None => (Workloads::none(), None),
        };

        let self_metrics = Arc::new(SelfMetrics::new());
        let engine = Arc::new(Engine::new(
            watcher.current(),
            workloads,
            Arc::clone(&self_metrics),
            EngineOptions {
                series_limit: options.series_limit,
                log_output: options.log_output.clone(),
            },
        )?);
        let ingest = Arc::new(Ingest::new(Arc::clone(&engine), options.max_message_bytes));

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

        watcher.spawn_polling(options.reload_interval);
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
            _workloads_watch: watch,
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
            _workloads_watch,
            ..
        } = self;

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
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
        let workers = Workers::start(ingest_threads, &grpc_server, &stop_rx)?;
        let grpc_task = tokio::spawn(workers.serve(grpc, stopped(stop_rx.clone())));
        let admin_task = tokio::spawn(admin.serve(stopped(stop_rx.clone())));
        ready.set(true);
        tracing::info!("telemetry server ready");

        shutdown.await;
        tracing::info!("shutting down");
        ready.set(false);
        let _ = stop_tx.send(true);
        let grpc_result = grpc_task.await;
        let admin_result = admin_task.await;
        let _ = tokio::join!(reload, sweeper);
        engine.flush_logs();
        match grpc_result {
            Ok(r) => r?,
            Err(e) => tracing::error!(error = %e, "report server task failed"),
        }
        match admin_result {
            Ok(r) => r?,
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
