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

use crate::accept::{Input, Loaded, Loader, ObjectProblem, Outcome};
use crate::diagnostic::Diagnostics;
use crate::load::{config_files, read_inputs, LoadOptions, MAX_FILE_BYTES};
use crate::snapshot::{Counts, Snapshot};

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
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
    failures: AtomicU64,
    /// Objects of the files that are not in force as written, as of the last load.
    rejected: AtomicU64,
    /// Compiles object by object and keeps the versions in force; locked inside `reload`.
    loader: Mutex<Loader>,
    /// [`Loaded::fingerprint`] of the configuration in force: a load with errors that puts
    /// the same objects in force (a broken edit whose previous version stays) publishes
    /// nothing.
    in_force: AtomicU64,
    /// Objects from other sources than the files (the Kubernetes API server), loaded with
    /// them on every reload.
    objects: Mutex<Vec<Input>>,
    /// The objects not in force as written, as of the last load.
    problems: Mutex<Vec<ObjectProblem>>,
    tx: watch::Sender<Published>,
    /// The settle rule over the files' fingerprint (a change is loaded once two consecutive
    /// polls agree on it); the lock also serialises reloads (a poll and `reload_now` racing
    /// would publish out of order).
    reload: Mutex<Settle>,
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
    /// Loads `paths`; fails with the diagnostics when the initial configuration has any error
    /// (the operator is there to fix it, as with `meshmeter validate`). Later changes are
    /// accepted object by object. Does not watch until [`ConfigWatcher::spawn_polling`] is
    /// called.
    pub fn new(paths: Vec<PathBuf>, options: LoadOptions) -> Result<Self, Diagnostics> {
        Self::start(paths, options, true)
    }

    /// Like [`ConfigWatcher::new`], but the initial configuration too is accepted object by
    /// object: rejected objects are logged and counted ([`ConfigWatcher::rejected_objects`],
    /// [`ConfigWatcher::problems`]) and everything else is put in force, so that a restart
    /// with one team's broken object still serves every other team's metrics. Fails only
    /// when nothing could be compiled at all.
    pub fn accepting(paths: Vec<PathBuf>, options: LoadOptions) -> Result<Self, Diagnostics> {
        Self::start(paths, options, false)
    }

    fn start(paths: Vec<PathBuf>, options: LoadOptions, strict: bool) -> Result<Self, Diagnostics> {
        let mut loader = Loader::new(options);
        let loaded = loader.load(read_inputs(&paths))?;
        if strict && loaded.diagnostics.has_errors() {
            return Err(loaded.diagnostics);
        }
        log_problems(&loaded, 1);
        let rejected = loaded.rejected_objects() as u64;
        let failures = u64::from(!loaded.problems.is_empty());
        let problems = loaded.problems.clone();
        loader.commit(&loaded);
        let in_force = loaded.fingerprint();
        let snapshot = Arc::new(loaded.snapshot);
        let (tx, _) = watch::channel(Published {
            generation: 1,
            snapshot: Arc::clone(&snapshot),
        });
        let fingerprint = fingerprint(&paths);
        Ok(Self {
            shared: Arc::new(Shared {
                paths,
                current: ArcSwap::new(snapshot),
                generation: AtomicU64::new(1),
                failures: AtomicU64::new(failures),
                rejected: AtomicU64::new(rejected),
                loader: Mutex::new(loader),
                in_force: AtomicU64::new(in_force),
                objects: Mutex::new(Vec::new()),
                problems: Mutex::new(problems),
                tx,
                reload: Mutex::new(Settle::new(fingerprint)),
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

    /// How many reloads had errors since start: refused as a whole, or with objects rejected
    /// or dropped (the rest of those was applied).
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// How many objects of the files are not in force as written (rejected, or dropped for
    /// referring to a rejected or absent one), as of the last load; 0 when all are. What
    /// `meshmeter_config_rejected_objects` shows.
    pub fn rejected_objects(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// Notified with every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Published> {
        self.shared.tx.subscribe()
    }

    /// Reloads now, whether or not anything changed. Returns the generation in force (new when
    /// the objects in force changed), or, when anything had errors, every diagnostic of the
    /// files (also logged per object). Errors never block the good objects: they are in force
    /// either way, and each rejected object keeps its previous version.
    pub fn reload_now(&self) -> Result<u64, Diagnostics> {
        let mut settle = lock(&self.shared.reload);
        settle.loaded(fingerprint(&self.shared.paths));
        // Asked for explicitly: an emptied configuration is taken as meant.
        self.shared.reload(false)
    }

    /// Replaces the objects that come from elsewhere than the files (a Kubernetes source hands
    /// in every object it has, one [`Input::Kubernetes`] each) and reloads now, with the files.
    /// Returns what is not in force as written, for Warning Events (also logged). Errors never
    /// block the good objects.
    pub fn set_objects(&self, objects: Vec<Input>) -> Vec<ObjectProblem> {
        self.shared.set_objects(objects)
    }

    /// Follows another source's objects from now on (the Kubernetes watches): loads them with
    /// the files at once and again whenever the value changes (each value is the source's
    /// complete set, so no settle rule applies), and hands what is not in force as written to
    /// `on_problems` after every load (for Warning Events). The task stops when the watcher
    /// or the sender is dropped.
    pub fn follow_objects<F>(
        &mut self,
        mut objects: watch::Receiver<Arc<Vec<Input>>>,
        on_problems: F,
    ) where
        F: Fn(Vec<ObjectProblem>) + Send + Sync + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let on_problems = Arc::new(on_problems);
        let task = tokio::spawn(async move {
            loop {
                let value = Arc::clone(&objects.borrow_and_update());
                let s = Arc::clone(&shared);
                let report = Arc::clone(&on_problems);
                // Compiling is blocking work; keep it off the reactor threads.
                let _ = tokio::task::spawn_blocking(move || {
                    let problems = s.set_objects(value.as_ref().clone());
                    report(problems);
                })
                .await;
                if objects.changed().await.is_err() {
                    break;
                }
            }
        });
        if let Some(old) = self.follow.replace(task) {
            old.abort();
        }
    }

    /// The objects not in force as written as of the last load, and why.
    pub fn problems(&self) -> Vec<ObjectProblem> {
        self.shared
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
    fn set_objects(&self, objects: Vec<Input>) -> Vec<ObjectProblem> {
        let mut settle = lock(&self.reload);
        settle.loaded(fingerprint(&self.paths));
        *self.objects.lock().unwrap_or_else(|e| e.into_inner()) = objects;
        let _ = self.reload(false);
        drop(settle);
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

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
        let mut loader = self.loader.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation.load(Ordering::Acquire);
        let mut inputs = read_inputs(&self.paths);
        inputs.extend(
            self.objects
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        let loaded = match loader.load(inputs) {
            Ok(loaded) => loaded,
            Err(diagnostics) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    errors = diagnostics.error_count(),
                    generation,
                    "configuration change rejected; the previous configuration stays in force\n{diagnostics}"
                );
                return Err(diagnostics);
            }
        };
        if suspect_empty
            && loaded.snapshot.user_counts() == Counts::default()
            && self.current.load().user_counts() != Counts::default()
        {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                generation,
                "the configuration files suddenly hold no instance, handler or rule (caught mid-write?); the previous configuration stays in force"
            );
            return Err(Diagnostics::default());
        }
        log_problems(&loaded, generation);
        self.rejected
            .store(loaded.rejected_objects() as u64, Ordering::Relaxed);
        *self.problems.lock().unwrap_or_else(|e| e.into_inner()) = loaded.problems.clone();
        loader.commit(&loaded);
        let fingerprint = loaded.fingerprint();
        let Loaded {
            snapshot,
            diagnostics,
            problems,
            ..
        } = loaded;
        // A clean load is published even when nothing changed (as an explicit reload asks);
        // one with errors only when it changes what is in force.
        let unchanged = self.in_force.swap(fingerprint, Ordering::AcqRel) == fingerprint;
        let generation = if unchanged && !problems.is_empty() {
            generation
        } else {
            let snapshot = Arc::new(snapshot);
            let generation = generation + 1;
            self.current.store(Arc::clone(&snapshot));
            self.generation.store(generation, Ordering::Release);
            self.tx.send_replace(Published {
                generation,
                snapshot,
            });
            tracing::info!(generation, "configuration reloaded");
            generation
        };
        if problems.is_empty() {
            Ok(generation)
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
            Err(diagnostics)
        }
    }
}

/// One warning per object not in force, with its kind, namespace, name, where it is and why
/// (each diagnostic rendered with its file:line:column and the offending line).
fn log_problems(loaded: &Loaded, generation: u64) {
    for p in &loaded.problems {
        let outcome = match p.outcome {
            Outcome::Rejected => "rejected",
            Outcome::Dropped => "dropped",
        };
        tracing::warn!(
            kind = %p.kind,
            namespace = %p.namespace,
            name = %p.name,
            at = %p.source,
            outcome,
            previous_in_force = p.previous_in_force,
            generation,
            "{p}\n{}",
            p.diagnostics
        );
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
