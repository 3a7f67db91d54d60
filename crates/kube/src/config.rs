//! Telemetry configuration from `config.istio.io/v1alpha2` objects.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::Event;
use kube::{Api, Client, ResourceExt};
use meshmeter_config::Input;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::follow::{follow, Sink, SyncGroup, Synced, WatchMetrics};

/// The kinds the configuration loader understands and their resource (plural) names, in the
/// order their documents are handed to it.
pub const CONFIG_RESOURCES: [(&str, &str); 10] = [
    ("attributemanifest", "attributemanifests"),
    ("instance", "instances"),
    ("metric", "metrics"),
    ("logentry", "logentries"),
    ("kubernetes", "kuberneteses"),
    ("handler", "handlers"),
    ("prometheus", "prometheuses"),
    ("stdio", "stdios"),
    ("kubernetesenv", "kubernetesenvs"),
    ("rule", "rules"),
];

const GROUP: &str = "config.istio.io";
const VERSION: &str = "v1alpha2";

/// Every configuration object seen, each an [`Input::Kubernetes`] for the configuration
/// loader, which accepts or rejects it on its own and says why (for Warning Events).
pub type ConfigDocuments = Arc<Vec<Input>>;

/// Renders one object as the loader's input: its kind, namespace, name and resourceVersion,
/// and its text (JSON, which is YAML, indented so that diagnostics point at a line of their
/// own). Only `apiVersion`, `kind`, `metadata.name`, `metadata.namespace` and `spec` are kept.
pub fn render_document(kind: &str, object: &DynamicObject) -> Input {
    render_object(&format!("{GROUP}/{VERSION}"), kind, true, object)
}

/// [`render_document`] for any API version; a cluster-scoped object (`namespaced` false) has
/// no namespace (empty in the input, absent from the text).
pub(crate) fn render_object(
    api_version: &str,
    kind: &str,
    namespaced: bool,
    object: &DynamicObject,
) -> Input {
    let name = object.name_any();
    let namespace = if namespaced {
        object.namespace().unwrap_or_else(|| "default".to_owned())
    } else {
        String::new()
    };
    let mut doc = serde_json::Map::new();
    doc.insert("apiVersion".into(), api_version.into());
    doc.insert("kind".into(), kind.into());
    let metadata = if namespaced {
        serde_json::json!({"name": name, "namespace": namespace})
    } else {
        serde_json::json!({ "name": name })
    };
    doc.insert("metadata".into(), metadata);
    if let Some(spec) = object.data.get("spec") {
        doc.insert("spec".into(), spec.clone());
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(doc))
        .unwrap_or_else(|_| String::from("{}"));
    Input::Kubernetes {
        kind: kind.to_owned(),
        namespace,
        name,
        resource_version: object.resource_version().unwrap_or_default(),
        text: text + "\n",
    }
}

/// One kind a document source watches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Watched {
    /// `GROUP/VERSION`.
    pub(crate) api_version: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) plural: &'static str,
    /// False for cluster-scoped kinds: watched once, whatever the namespaces.
    pub(crate) namespaced: bool,
}

/// Objects per watch, keyed by `(namespace, name)`, each already rendered.
type Objects = BTreeMap<(String, String), Input>;

struct Shared {
    /// One map per watch, in [`CONFIG_RESOURCES`] order (times the namespaces watched).
    watches: Mutex<Vec<Objects>>,
    tx: watch::Sender<ConfigDocuments>,
    /// Set once every kind has been listed: before that, a rule listed before the handler it
    /// names would be published (and rejected) on its own.
    listed: AtomicBool,
}

impl Shared {
    fn publish(&self) {
        if !self.listed.load(Ordering::Acquire) {
            return;
        }
        let docs: Vec<Input> = {
            let watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
            watches
                .iter()
                .flat_map(|objects| objects.values().cloned())
                .collect()
        };
        self.tx.send_if_modified(|current| {
            if **current == docs {
                return false;
            }
            *current = Arc::new(docs);
            true
        });
    }
}

struct ConfigSink {
    shared: Arc<Shared>,
    index: usize,
    watched: Watched,
    /// Objects of a relist in progress; they replace the watch's map at `InitDone`, so a watch
    /// that breaks and relists never shows an empty configuration in between.
    relist: Option<Objects>,
}

impl Sink<DynamicObject> for ConfigSink {
    fn apply(&mut self, events: Vec<Event<DynamicObject>>) {
        let namespaced = self.watched.namespaced;
        let key = |o: &DynamicObject| {
            let namespace = match namespaced {
                true => o.namespace().unwrap_or_else(|| "default".to_owned()),
                false => String::new(),
            };
            (namespace, o.name_any())
        };
        let w = self.watched;
        let render = |o: &DynamicObject| render_object(w.api_version, w.kind, w.namespaced, o);
        let mut changed = false;
        {
            let mut watches = self
                .shared
                .watches
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let objects = &mut watches[self.index];
            for event in events {
                match event {
                    Event::Init => self.relist = Some(Objects::new()),
                    Event::InitApply(o) => {
                        if let Some(relist) = &mut self.relist {
                            relist.insert(key(&o), render(&o));
                        }
                    }
                    Event::InitDone => {
                        if let Some(relist) = self.relist.take() {
                            *objects = relist;
                            changed = true;
                        }
                    }
                    Event::Apply(o) => {
                        objects.insert(key(&o), render(&o));
                        changed = true;
                    }
                    Event::Delete(o) => {
                        changed |= objects.remove(&key(&o)).is_some();
                    }
                }
            }
        }
        if changed {
            self.shared.publish();
        }
    }
}

/// The configuration objects in the API server, kept up to date by one watch per kind (and
/// namespace, when limited to some).
#[derive(Debug)]
pub struct ConfigSource {
    rx: watch::Receiver<ConfigDocuments>,
    synced: Synced,
    tasks: Vec<JoinHandle<()>>,
}

impl ConfigSource {
    /// Starts the watches on the current tokio runtime: every kind of [`CONFIG_RESOURCES`] in
    /// `namespaces` (all namespaces when empty).
    pub fn start(client: Client, namespaces: &[String], metrics: &WatchMetrics) -> Self {
        let watched: Vec<Watched> = CONFIG_RESOURCES
            .iter()
            .map(|&(kind, plural)| Watched {
                api_version: "config.istio.io/v1alpha2",
                kind,
                plural,
                namespaced: true,
            })
            .collect();
        let (rx, synced, tasks) = start_documents(client, namespaces, metrics, &watched);
        ConfigSource { rx, synced, tasks }
    }

    /// The documents now, and every change: a new value only when an object was added,
    /// changed (its spec) or deleted.
    pub fn documents(&self) -> watch::Receiver<ConfigDocuments> {
        self.rx.clone()
    }

    /// Turns true once every kind has been listed once.
    pub fn synced(&self) -> Synced {
        self.synced.clone()
    }
}

impl Drop for ConfigSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Watches every kind of `watched` (namespaced ones in each of `namespaces`, all namespaces
/// when empty) and publishes every object, rendered, once every watch has listed and on
/// every change after that.
pub(crate) fn start_documents(
    client: Client,
    namespaces: &[String],
    metrics: &WatchMetrics,
    watched: &[Watched],
) -> (
    watch::Receiver<ConfigDocuments>,
    Synced,
    Vec<JoinHandle<()>>,
) {
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let mut watches: Vec<(Watched, Option<&str>)> = Vec::new();
    for w in watched {
        if w.namespaced {
            watches.extend(scopes.iter().map(|s| (*w, *s)));
        } else {
            watches.push((*w, None));
        }
    }
    let count = watches.len();
    let (tx, rx) = watch::channel(ConfigDocuments::default());
    let shared = Arc::new(Shared {
        watches: Mutex::new(vec![Objects::new(); count]),
        tx,
        listed: AtomicBool::new(false),
    });
    let first = Arc::clone(&shared);
    let (group, synced) = SyncGroup::new(
        count,
        Some(Box::new(move || {
            first.listed.store(true, Ordering::Release);
            first.publish();
        })),
    );
    let mut tasks = Vec::with_capacity(count);
    for (index, (w, scope)) in watches.into_iter().enumerate() {
        let (group_name, version) = w.api_version.split_once('/').unwrap_or(("", w.api_version));
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group_name, version, w.kind),
            w.plural,
        );
        let api: Api<DynamicObject> = match scope {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let sink = ConfigSink {
            shared: Arc::clone(&shared),
            index,
            watched: w,
            relist: None,
        };
        tasks.push(tokio::spawn(follow(
            api,
            w.plural,
            scope.unwrap_or("*").to_owned(),
            metrics.clone(),
            Arc::clone(&group),
            sink,
        )));
    }
    (rx, synced, tasks)
}
