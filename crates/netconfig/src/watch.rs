//! The traffic configuration in force, kept up to date from files and other sources.
//!
//! Files are polled like the telemetry configuration's (`meshmeter-fswatch`: a change is
//! read once two consecutive polls see the same content); objects from the Kubernetes API
//! server are handed in whole on every change and read with the files.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use meshmeter_config::{config_files, read_inputs, Input, ObjectProblem, Outcome, MAX_FILE_BYTES};
use meshmeter_fswatch::Settle;
use tokio::sync::watch;

use crate::load::{Loaded, Loader};
use crate::model::NetworkConfig;

struct State {
    loader: Loader,
    settle: Settle,
    /// Objects from elsewhere than the files, read after them on every load.
    objects: Vec<Input>,
    problems: Vec<ObjectProblem>,
}

struct Shared {
    paths: Vec<PathBuf>,
    /// Also serialises loads, so that they publish in order.
    state: Mutex<State>,
    tx: watch::Sender<Arc<NetworkConfig>>,
}

/// Owns the traffic configuration in force and publishes each accepted change.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use meshmeter_netconfig::NetWatcher;
///
/// let dir = std::env::temp_dir().join(format!("netwatcher-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let mut watcher = NetWatcher::new(vec![dir.clone()]);
/// let mut rx = watcher.subscribe();
/// watcher.spawn_polling(Duration::from_millis(50));
/// std::fs::write(dir.join("dr.yaml"), "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: db}\nspec: {host: mongodb}\n").unwrap();
/// rx.changed().await.unwrap();
/// assert_eq!(rx.borrow().destination_rules[0].host, "mongodb");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # }
/// ```
pub struct NetWatcher {
    shared: Arc<Shared>,
    poll: Option<tokio::task::JoinHandle<()>>,
    follow: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for NetWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetWatcher")
            .field("paths", &self.shared.paths)
            .finish_non_exhaustive()
    }
}

impl NetWatcher {
    /// Reads `paths` (files and directories) now, object by object: rejected objects are
    /// logged and left out ([`NetWatcher::problems`]), the rest is in force. Does not watch
    /// until [`NetWatcher::spawn_polling`].
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let mut loader = Loader::new();
        let loaded = loader.load(read_inputs(&paths));
        log_problems(&loaded);
        loader.commit(&loaded);
        let (tx, _) = watch::channel(Arc::new(loaded.config));
        let settle = Settle::new(fingerprint(&paths));
        NetWatcher {
            shared: Arc::new(Shared {
                paths,
                state: Mutex::new(State {
                    loader,
                    settle,
                    objects: Vec::new(),
                    problems: loaded.problems,
                }),
                tx,
            }),
            poll: None,
            follow: None,
        }
    }

    /// Polls the files every `interval` on the current tokio runtime, until dropped.
    pub fn spawn_polling(&mut self, interval: Duration) {
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let s = Arc::clone(&shared);
                // Reading files is blocking work; keep it off the reactor threads.
                let _ = tokio::task::spawn_blocking(move || s.poll()).await;
            }
        });
        if let Some(old) = self.poll.replace(task) {
            old.abort();
        }
    }

    /// The configuration now, and a new value on every change of what is in force (a
    /// rejected edit that leaves the previous version in force publishes nothing).
    pub fn subscribe(&self) -> watch::Receiver<Arc<NetworkConfig>> {
        self.shared.tx.subscribe()
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<NetworkConfig> {
        Arc::clone(&self.shared.tx.borrow())
    }

    /// Reads the files (and the objects handed in) now, whether or not they changed;
    /// returns what is not in force as written.
    pub fn reload_now(&self) -> Vec<ObjectProblem> {
        let mut state = self.shared.lock();
        let now = fingerprint(&self.shared.paths);
        state.settle.loaded(now);
        self.shared.reload(&mut state)
    }

    /// Replaces the objects from elsewhere than the files (every object a Kubernetes source
    /// has, each an [`Input::Kubernetes`]) and reads them with the files now; returns what is
    /// not in force as written (for Warning Events).
    pub fn set_objects(&self, objects: Vec<Input>) -> Vec<ObjectProblem> {
        self.shared.set_objects(objects)
    }

    /// Follows another source's objects from now on: reads them with the files at once and
    /// whenever the value changes, and hands what is not in force as written to
    /// `on_problems` after each read. Stops when the watcher or the sender is dropped.
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
                let _ = tokio::task::spawn_blocking(move || {
                    report(s.set_objects(value.as_ref().clone()));
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

    /// The objects not in force as written, as of the last read, and why.
    pub fn problems(&self) -> Vec<ObjectProblem> {
        self.shared.lock().problems.clone()
    }

    /// How many objects are not in force as written, as of the last read.
    pub fn rejected_objects(&self) -> usize {
        self.shared.lock().problems.len()
    }
}

impl Drop for NetWatcher {
    fn drop(&mut self) {
        for task in [self.poll.take(), self.follow.take()].into_iter().flatten() {
            task.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poll(&self) {
        let mut state = self.lock();
        if state.settle.poll(fingerprint(&self.paths)) {
            self.reload(&mut state);
        }
    }

    fn set_objects(&self, objects: Vec<Input>) -> Vec<ObjectProblem> {
        let mut state = self.lock();
        state.objects = objects;
        let now = fingerprint(&self.paths);
        state.settle.loaded(now);
        self.reload(&mut state)
    }

    fn reload(&self, state: &mut State) -> Vec<ObjectProblem> {
        let mut inputs = read_inputs(&self.paths);
        inputs.extend(state.objects.iter().cloned());
        let loaded = state.loader.load(inputs);
        log_problems(&loaded);
        state.loader.commit(&loaded);
        state.problems = loaded.problems.clone();
        let config = loaded.config;
        self.tx.send_if_modified(|current| {
            if **current == config {
                return false;
            }
            *current = Arc::new(config);
            tracing::info!(
                destination_rules = current.destination_rules.len(),
                virtual_services = current.virtual_services.len(),
                peer_policies = current.peer_policies.len(),
                "traffic configuration changed"
            );
            true
        });
        loaded.problems
    }
}

/// One warning per object not in force, with its kind, namespace, name, where and why.
fn log_problems(loaded: &Loaded) {
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
