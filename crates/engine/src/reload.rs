//! Following configuration changes: every snapshot the watcher publishes is put in force, with
//! the generation, the changes with errors and the rejected objects mirrored into
//! self-telemetry.

use std::sync::Arc;
use std::time::Duration;

use meshmeter_config::ConfigWatcher;
use tokio::sync::watch;

use crate::Engine;

/// Spawns the task that applies `watcher`'s new snapshots to `engine` until `stop` turns
/// true. `applied` runs after each successful apply (the server refreshes its decoder). The
/// watcher must be polling already; the task keeps it alive.
pub fn spawn_reloader(
    engine: Arc<Engine>,
    watcher: ConfigWatcher,
    applied: impl Fn(u64) + Send + 'static,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let metrics = Arc::clone(engine.self_metrics());
    let generation = metrics.gauge(
        "meshmeter_config_generation",
        "The configuration generation in force (1 at start, +1 per accepted change).",
        &[],
    );
    generation.set(watcher.generation() as i64);
    let failures = metrics.counter(
        "meshmeter_config_errors_total",
        "Configuration changes with errors: refused as a whole, or with objects rejected (the valid objects were applied).",
        &[],
    );
    let rejected_objects = metrics.gauge(
        "meshmeter_config_rejected_objects",
        "Configuration objects not in force as written: rejected, or dropped for referring to a rejected or absent object.",
        &[],
    );
    rejected_objects.set(watcher.rejected_objects() as i64);
    let mut changes = watcher.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Rejected changes are counted (and their diagnostics logged) by the watcher.
        let mut rejected_seen = 0;
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let published = changes.borrow_and_update().clone();
                    rejected_objects.set(watcher.rejected_objects() as i64);
                    match engine.apply(published.snapshot, published.generation) {
                        Ok(()) => {
                            generation.set(published.generation as i64);
                            applied(published.generation);
                            tracing::info!(generation = published.generation, "configuration reloaded");
                        }
                        Err(e) => {
                            failures.inc();
                            tracing::error!(error = %e, "configuration change could not be applied");
                        }
                    }
                }
                _ = tick.tick() => {
                    rejected_objects.set(watcher.rejected_objects() as i64);
                    let rejected = watcher.failures();
                    if rejected > rejected_seen {
                        failures.inc_by(rejected - rejected_seen);
                        rejected_seen = rejected;
                    }
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        drop(watcher);
    })
}
