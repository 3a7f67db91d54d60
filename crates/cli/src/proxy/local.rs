//! `--telemetry-config`: the configuration engine inside the proxy, fed by its reports, and
//! the `/metrics` body that shows its metrics beside the proxy's own.

use std::sync::Arc;
use std::time::Duration;

use meshmeter_admin::{MetricsBody, CHUNK_BYTES};
use meshmeter_ca::RotationStats;
use meshmeter_config::{ConfigWatcher, LoadOptions};
use meshmeter_control::ClientStatus;
use meshmeter_engine::{spawn_reloader, Engine, EngineOptions, Workloads};
use meshmeter_proxy::ProxyStats;
use meshmeter_proxy_telemetry::LocalTelemetry;
use meshmeter_selfmetrics::SelfMetrics;
use meshmeter_stdio::Output;
use meshmeter_workloads::{FileRegistry, Watch};
use tokio::sync::watch;

use super::{usage, Args, Failure};

/// The in-proxy telemetry of `--telemetry-config`, beside the sink that feeds it.
pub(super) struct LocalParts {
    pub(super) engine: Arc<Engine>,
    /// Applies configuration changes.
    pub(super) reloader: tokio::task::JoinHandle<()>,
    /// Reloads the workloads file while it lives.
    pub(super) workloads_watch: Option<Watch>,
}

impl LocalParts {
    /// After the reloader was told to stop: waits for it and flushes access logs.
    pub(super) async fn finish(self) {
        let _ = self.reloader.await;
        self.engine.flush_logs();
        drop(self.workloads_watch);
    }
}

/// The engine of `--telemetry-config` and the sink that feeds it, or `None` without the flag.
pub(super) fn local_telemetry(
    args: &Args,
    stop: watch::Receiver<bool>,
) -> Result<Option<(LocalTelemetry, LocalParts)>, Failure> {
    if args.telemetry_config.is_empty() {
        return Ok(None);
    }
    let options = LoadOptions {
        default_namespace: args.config_default_namespace.clone(),
        include_defaults: !args.no_default_config,
    };
    if let Some(missing) = args.telemetry_config.iter().find(|p| !p.exists()) {
        return Err(usage(format!(
            "--telemetry-config {}: no such file or directory",
            missing.display()
        )));
    }
    // As the telemetry server does: a broken object is rejected alone (logged, counted), so
    // that one bad object never keeps a sidecar, and its application, from starting.
    let mut watcher = ConfigWatcher::accepting(args.telemetry_config.clone(), options)
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
    Ok(Some((
        telemetry,
        LocalParts {
            engine,
            reloader,
            workloads_watch,
        },
    )))
}

/// What the proxy's `/metrics` shows.
#[derive(Clone)]
pub(super) struct ScrapeParts {
    /// The in-proxy engine of `--telemetry-config`.
    pub(super) engine: Option<Arc<Engine>>,
    pub(super) stats: Arc<ProxyStats>,
    /// Certificate rotation, with mTLS.
    pub(super) rotation: Option<Arc<RotationStats>>,
    /// The control plane client's state, with `--control-plane`.
    pub(super) control: Option<watch::Receiver<ClientStatus>>,
}

/// One scrape's body: the in-proxy engine's configured metrics a chunk at a time (the large
/// part), then its own metrics and the proxy's counters.
pub(super) fn scrape(parts: ScrapeParts) -> Box<dyn MetricsBody> {
    let ScrapeParts {
        engine,
        stats,
        rotation,
        control,
    } = parts;
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
        if let Some(control) = &control {
            super::routing::control_plane_state(&control.borrow()).render_prometheus(out);
        }
        true
    })
}
