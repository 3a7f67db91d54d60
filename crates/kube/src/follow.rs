//! One watch, kept alive: kube's `watcher` (list, then watch from the list's
//! resourceVersion, bookmarks, relist on 410 Gone) with backoff, its restarts counted, its
//! events handed over in batches.

use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use meshmeter_selfmetrics::{Counter, SelfMetrics};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Most events handed to a store at once; a relist of many objects is applied in batches of
/// this size, and the result published once per batch.
const BATCH: usize = 1024;

/// Where watches count their restarts (`meshmeter_kubernetes_watch_restarts_total`).
#[derive(Clone, Debug)]
pub struct WatchMetrics {
    metrics: Arc<SelfMetrics>,
}

impl WatchMetrics {
    /// Counters registered in `metrics` (the server's self metrics).
    pub fn new(metrics: Arc<SelfMetrics>) -> Self {
        WatchMetrics { metrics }
    }

    /// The restart counter of `resource` (`pods`, `rules`, ...).
    pub(crate) fn restarts(&self, resource: &str) -> Counter {
        self.metrics.counter(
            "meshmeter_kubernetes_watch_restarts_total",
            "Kubernetes list/watch calls that failed and were retried with backoff (API server unreachable, 410 Gone, refused), by resource.",
            &[("resource", resource)],
        )
    }

    /// How many times the watch of `resource` was restarted (for tests and logs).
    pub fn restart_count(&self, resource: &str) -> u64 {
        self.restarts(resource).get()
    }
}

/// Whether every watch of a source has completed its first list.
#[derive(Clone, Debug)]
pub struct Synced {
    rx: watch::Receiver<bool>,
}

impl Synced {
    /// True once every watch has listed (or found its resource not installed) once; it never
    /// turns false again: after that, outages are served from the stores.
    pub fn is_synced(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until [`Synced::is_synced`].
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// A receiver that turns true on sync (for readiness gates).
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }
}

/// Called once every watch of a source has synced, before that is announced.
pub(crate) type OnSynced = Box<dyn Fn() + Send + Sync>;

/// Counts down the watches of one source that have not synced yet.
pub(crate) struct SyncGroup {
    remaining: AtomicUsize,
    tx: watch::Sender<bool>,
    on_synced: Option<OnSynced>,
}

impl std::fmt::Debug for SyncGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncGroup")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl SyncGroup {
    pub(crate) fn new(watches: usize, on_synced: Option<OnSynced>) -> (Arc<Self>, Synced) {
        let (tx, rx) = watch::channel(watches == 0);
        (
            Arc::new(SyncGroup {
                remaining: AtomicUsize::new(watches),
                tx,
                on_synced,
            }),
            Synced { rx },
        )
    }

    fn one_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(f) = &self.on_synced {
                f();
            }
            self.tx.send_replace(true);
        }
    }
}

/// A store fed by one watch.
pub(crate) trait Sink<K>: Send + 'static {
    /// Applies events in order; called with at most [`BATCH`] at a time.
    fn apply(&mut self, events: Vec<Event<K>>);
}

/// Runs the watch of `api` until the task is aborted. `resource` names it in logs and in the
/// restart counter.
pub(crate) async fn follow<K, S>(
    api: Api<K>,
    resource: &'static str,
    scope: String,
    metrics: WatchMetrics,
    group: Arc<SyncGroup>,
    mut sink: S,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    S: Sink<K>,
{
    let restarts = metrics.restarts(resource);
    let mut synced = false;
    let mut failing = false;
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .ready_chunks(BATCH);
    futures_util::pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        let mut events = Vec::with_capacity(chunk.len());
        let mut now_synced = false;
        for item in chunk {
            match item {
                Ok(event) => {
                    if matches!(event, Event::InitDone) {
                        if failing {
                            tracing::info!(resource, scope = %scope, "Kubernetes watch listed again");
                            failing = false;
                        }
                        now_synced |= !std::mem::replace(&mut synced, true);
                    }
                    events.push(event);
                }
                Err(e) => {
                    restarts.inc();
                    failing = true;
                    if not_installed(&e) {
                        // A CRD group that is not installed is an empty set of objects, not a
                        // reason to stay unready; keep asking, it may be installed later.
                        tracing::warn!(resource, scope = %scope, "Kubernetes resource not served (CRD not installed?): 404 page not found; retrying with backoff");
                        now_synced |= !std::mem::replace(&mut synced, true);
                    } else if synced {
                        tracing::warn!(resource, scope = %scope, error = %e, "Kubernetes watch failed; serving from the cache, retrying with backoff");
                    } else {
                        tracing::warn!(resource, scope = %scope, error = %e, "Kubernetes list failed before the first sync (not ready); retrying with backoff");
                    }
                }
            }
        }
        if !events.is_empty() {
            sink.apply(events);
        }
        // After the store has published what the list brought: readiness then means "the
        // listed objects are in force".
        if now_synced {
            tracing::debug!(resource, scope = %scope, "Kubernetes resource listed");
            group.one_done();
        }
    }
}

fn not_installed(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}
