//! Hot reload: poll the configuration, swap in a new snapshot when a valid change appears.
//!
//! Polling (every second by default) is the portable choice and catches every kind of edit,
//! including a ConfigMap's symlink swap. The fingerprint hashes the files' contents, not
//! their mtimes, so two edits within one mtime tick are not missed; configuration is small.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use meshmeter_fswatch::Settle;
use tokio::sync::watch;

use crate::diagnostic::Diagnostics;
use crate::load::{
    config_files, load_paths, load_paths_and_documents, LoadOptions, MAX_FILE_BYTES,
};
use crate::snapshot::{Counts, Snapshot};

/// Documents from elsewhere than the files: `(name, text)` pairs loaded as if they were files
/// (see [`ConfigWatcher::follow_documents`]).
pub type Documents = Arc<Vec<(String, String)>>;

/// A snapshot and the generation that produced it (1 for the initial load, +1 per reload).
#[derive(Clone, Debug)]
pub struct Published {
    /// Increases by one with every successful (re)load.
    pub generation: u64,
    /// The configuration now in force.
    pub snapshot: Arc<Snapshot>,
}

struct Shared {
    paths: Vec<PathBuf>,
    options: LoadOptions,
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
    failures: AtomicU64,
    tx: watch::Sender<Published>,
    /// The settle rule over the files' fingerprint (a change is loaded once two consecutive
    /// polls agree on it); the lock also serialises reloads (a poll and `reload_now` racing
    /// would publish out of order).
    reload: Mutex<Settle>,
    /// Documents from elsewhere than the files (the Kubernetes API), loaded after them.
    documents: Mutex<Documents>,
}

/// Owns the configuration in force and keeps it up to date.
///
/// Readers on the hot path call [`ConfigWatcher::load`] (lock-free); components that must
/// rebuild state on change (the metric registry) [`ConfigWatcher::subscribe`].
pub struct ConfigWatcher {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
    follow: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher")
            .field("paths", &self.shared.paths)
            .field("generation", &self.generation())
            .finish()
    }
}

impl ConfigWatcher {
    /// Loads `paths`; fails with the diagnostics when the initial configuration is invalid.
    /// Does not watch until [`ConfigWatcher::spawn_polling`] is called.
    pub fn new(paths: Vec<PathBuf>, options: LoadOptions) -> Result<Self, Diagnostics> {
        let snapshot = Arc::new(load_paths(&paths, &options)?);
        let (tx, _) = watch::channel(Published {
            generation: 1,
            snapshot: Arc::clone(&snapshot),
        });
        let fingerprint = fingerprint(&paths);
        Ok(Self {
            shared: Arc::new(Shared {
                paths,
                options,
                current: ArcSwap::new(snapshot),
                generation: AtomicU64::new(1),
                failures: AtomicU64::new(0),
                tx,
                reload: Mutex::new(Settle::new(fingerprint)),
                documents: Mutex::new(Arc::default()),
            }),
            task: None,
            follow: None,
        })
    }

    /// Starts polling every `interval` on the current tokio runtime. The task stops when the
    /// watcher is dropped.
    pub fn spawn_polling(&mut self, interval: Duration) {
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let s = Arc::clone(&shared);
                // Reading and compiling is blocking work; keep it off the reactor threads.
                let _ = tokio::task::spawn_blocking(move || s.poll()).await;
            }
        });
        if let Some(old) = self.task.replace(task) {
            old.abort();
        }
    }

    /// Loads `documents` (`(name, text)` pairs, such as Kubernetes objects) with the files
    /// from now on: at once with their current value, and again whenever it changes, without
    /// waiting for the settle rule (each value is complete). A change that does not compile is
    /// rejected as a file change is: the configuration in force stays. The task stops when the
    /// watcher is dropped or the sender is.
    pub fn follow_documents(&mut self, mut documents: watch::Receiver<Documents>) {
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            loop {
                let docs = Arc::clone(&documents.borrow_and_update());
                let s = Arc::clone(&shared);
                let _ = tokio::task::spawn_blocking(move || {
                    let _settle = lock(&s.reload);
                    let same = {
                        let mut current = s
                            .documents
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        std::mem::replace(&mut *current, Arc::clone(&docs)) == docs
                    };
                    if !same {
                        // Deleting every object is a real change here, not a file caught
                        // mid-write.
                        let _ = s.reload(false);
                    }
                })
                .await;
                if documents.changed().await.is_err() {
                    break;
                }
            }
        });
        if let Some(old) = self.follow.replace(task) {
            old.abort();
        }
    }

    /// The configuration in force; lock-free, for the hot path.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.shared.current.load()
    }

    /// The configuration in force, as an owned `Arc`.
    pub fn current(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// The generation in force.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// How many reloads were rejected since start.
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// Notified with every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Published> {
        self.shared.tx.subscribe()
    }

    /// Reloads now, whether or not anything changed. On success returns the new generation;
    /// on failure the old snapshot stays in force and the diagnostics are returned (and
    /// logged).
    pub fn reload_now(&self) -> Result<u64, Diagnostics> {
        let mut settle = lock(&self.shared.reload);
        settle.loaded(fingerprint(&self.shared.paths));
        // Asked for explicitly: an emptied configuration is taken as meant.
        self.shared.reload(false)
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        for task in [self.task.take(), self.follow.take()].into_iter().flatten() {
            task.abort();
        }
    }
}

fn lock(m: &Mutex<Settle>) -> std::sync::MutexGuard<'_, Settle> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn poll(&self) {
        let mut settle = lock(&self.reload);
        if settle.poll(fingerprint(&self.paths)) {
            let _ = self.reload(true);
        }
    }

    /// Loads and publishes. With `suspect_empty`, a configuration that suddenly holds no
    /// object of the operator's (where the one in force has some) is refused: a file being
    /// rewritten in place (truncated, then written) can look empty for longer than two polls,
    /// and dropping every rule would reset every counter.
    fn reload(&self, suspect_empty: bool) -> Result<u64, Diagnostics> {
        let documents = Arc::clone(
            &self
                .documents
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        match load_paths_and_documents(&self.paths, &documents, &self.options) {
            Ok(snapshot)
                if suspect_empty
                    && snapshot.user_counts() == Counts::default()
                    && self.current.load().user_counts() != Counts::default() =>
            {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    generation = self.generation.load(Ordering::Acquire),
                    "the configuration files suddenly hold no instance, handler or rule (caught mid-write?); the previous configuration stays in force"
                );
                Err(Diagnostics::default())
            }
            Ok(snapshot) => {
                let snapshot = Arc::new(snapshot);
                let generation = self.generation.load(Ordering::Acquire) + 1;
                self.current.store(Arc::clone(&snapshot));
                self.generation.store(generation, Ordering::Release);
                self.tx.send_replace(Published {
                    generation,
                    snapshot,
                });
                tracing::info!(generation, "configuration reloaded");
                Ok(generation)
            }
            Err(diagnostics) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    errors = diagnostics.error_count(),
                    generation = self.generation.load(Ordering::Acquire),
                    "configuration change rejected; the previous configuration stays in force\n{diagnostics}"
                );
                Err(diagnostics)
            }
        }
    }
}

/// A hash of the set of configuration files and their contents.
fn fingerprint(paths: &[PathBuf]) -> u64 {
    match config_files(paths) {
        Ok(files) => {
            meshmeter_fswatch::fingerprint(files.iter().map(PathBuf::as_path), MAX_FILE_BYTES)
        }
        Err((p, e)) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            p.hash(&mut h);
            e.kind().hash(&mut h);
            h.finish()
        }
    }
}

#[cfg(test)]
mod settle_tests {
    use super::*;

    const SEED: &str = include_str!("../tests/data/tcp-metrics.yaml");

    /// A fresh directory holding the seed's file, and a watcher over it without the defaults.
    fn watched_seed(name: &str) -> (std::path::PathBuf, std::path::PathBuf, ConfigWatcher) {
        let dir = std::env::temp_dir().join(format!("meshmeter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("seed.yaml");
        std::fs::write(&file, SEED).unwrap();
        let options = LoadOptions {
            include_defaults: false,
            ..LoadOptions::default()
        };
        let w = ConfigWatcher::new(vec![dir.clone()], options).unwrap();
        (dir, file, w)
    }

    #[test]
    fn a_change_is_loaded_only_once_it_has_settled() {
        let (dir, file, w) = watched_seed("settle");
        // A truncating write caught half way: an empty file, seen by one poll only.
        std::fs::write(&file, "").unwrap();
        w.shared.poll();
        assert_eq!(w.generation(), 1, "an unsettled change is not loaded");
        std::fs::write(&file, SEED).unwrap();
        w.shared.poll();
        w.shared.poll();
        assert_eq!(
            w.generation(),
            1,
            "back to the loaded content: nothing to do"
        );
        assert_eq!(w.current().prometheus_metrics().count(), 2);
        // A real change is loaded on the second poll that sees it.
        std::fs::write(&file, SEED.replace("mongo_sent_bytes", "mongo_sent_v2")).unwrap();
        w.shared.poll();
        assert_eq!(w.generation(), 1);
        w.shared.poll();
        assert_eq!(w.generation(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_emptied_configuration_is_suspect_and_keeps_the_last_good() {
        let (dir, file, w) = watched_seed("empty");
        // Empty (only a comment) for longer than the settle rule covers.
        std::fs::write(&file, "# being rewritten\n").unwrap();
        for _ in 0..4 {
            w.shared.poll();
        }
        assert_eq!(w.generation(), 1, "an emptied configuration is not loaded");
        assert_eq!(w.failures(), 1, "refused once, not on every poll");
        assert_eq!(w.current().prometheus_metrics().count(), 2);
        // The rewrite completes (same content): loaded again, same metrics, no more refusals.
        std::fs::write(&file, SEED).unwrap();
        w.shared.poll();
        w.shared.poll();
        assert_eq!(w.generation(), 2);
        assert_eq!(w.failures(), 1);
        assert_eq!(w.current().prometheus_metrics().count(), 2);
        // Asked for explicitly, an empty configuration is taken as meant.
        std::fs::write(&file, "").unwrap();
        assert_eq!(w.reload_now().unwrap(), 3);
        assert_eq!(w.current().prometheus_metrics().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
