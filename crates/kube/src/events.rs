//! Warning Events on configuration objects the loaders did not put in force, so that
//! `kubectl describe rule NAME` (or `destinationrule NAME`) shows why.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use meshmeter_config::{ObjectProblem, ObjectSource, Outcome};

/// The component Events name as their source, unless [`ProblemEvents::with_component`] says
/// otherwise.
pub const EVENT_COMPONENT: &str = "meshmeter-mixer";

/// Longest message an Event carries; the API server refuses longer ones (1 KiB for
/// `core/v1` Events' notes in practice), and the log has the whole text.
const MAX_MESSAGE: usize = 1024;

/// The API version of an object of `kind` the loaders read.
fn api_version(kind: &str) -> &'static str {
    match kind {
        "DestinationRule" | "VirtualService" => "networking.istio.io/v1alpha3",
        "MeshPolicy" | "Policy" => "authentication.istio.io/v1alpha1",
        _ => "config.istio.io/v1alpha2",
    }
}

/// Records one Warning Event per problem of a Kubernetes object and version: the same
/// rejection is not recorded again on every reload, a new version's is.
#[derive(Clone)]
pub struct ProblemEvents {
    client: Client,
    runtime: tokio::runtime::Handle,
    recorded: Arc<Mutex<HashSet<Key>>>,
    serial: Arc<AtomicU64>,
    component: &'static str,
}

impl std::fmt::Debug for ProblemEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProblemEvents").finish_non_exhaustive()
    }
}

/// What makes an Event new: the object's version and what happened to it.
type Key = (String, String, String, String, Outcome);

impl ProblemEvents {
    /// Posts Events with `client` on `runtime` (callers may be blocking threads).
    pub fn new(client: Client, runtime: tokio::runtime::Handle) -> Self {
        ProblemEvents {
            client,
            runtime,
            recorded: Arc::default(),
            serial: Arc::default(),
            component: EVENT_COMPONENT,
        }
    }

    /// The same, naming another component as the Events' source (the control plane,
    /// `meshmeter-control`, for traffic objects).
    pub fn with_component(mut self, component: &'static str) -> Self {
        self.component = component;
        self
    }

    /// Records what is new in `problems` (every object not in force as written, after one
    /// load); problems of files are left to the log.
    pub fn record(&self, problems: &[ObjectProblem]) {
        let mut events = Vec::new();
        {
            let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
            let mut now = HashSet::new();
            for p in problems {
                let ObjectSource::Kubernetes {
                    namespace,
                    name,
                    resource_version,
                } = &p.source
                else {
                    continue;
                };
                let key = (
                    p.kind.clone(),
                    namespace.clone(),
                    name.clone(),
                    resource_version.clone(),
                    p.outcome,
                );
                if !recorded.contains(&key) {
                    events.push(self.event(p, namespace, name, resource_version));
                }
                now.insert(key);
            }
            // Forget what is fixed, so that breaking it again is recorded again.
            *recorded = now;
        }
        for event in events {
            // A cluster-scoped object's (a MeshPolicy's) Events go to `default`.
            let namespace = event
                .metadata
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or("default");
            let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
            self.runtime.spawn(async move {
                let object = event.involved_object.name.clone().unwrap_or_default();
                if let Err(e) = api.create(&PostParams::default(), &event).await {
                    tracing::warn!(object, error = %e, "cannot record a Warning Event on a rejected configuration object");
                }
            });
        }
    }

    fn event(
        &self,
        p: &ObjectProblem,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> Event {
        let (reason, verb) = match p.outcome {
            Outcome::Rejected => ("Rejected", "rejected"),
            Outcome::Dropped => ("Dropped", "dropped"),
        };
        let mut message = format!("{} {name} {verb} by meshmeter", p.kind);
        if p.previous_in_force {
            message.push_str("; its previous version stays in force");
        }
        for d in p.diagnostics.iter() {
            message.push_str(": ");
            message.push_str(d.to_string().lines().next().unwrap_or_default());
        }
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE - 3;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        let now = Time(Timestamp::now());
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let nanos = Timestamp::now().as_nanosecond();
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{nanos:x}{serial:x}")),
                namespace: Some(
                    if namespace.is_empty() {
                        "default"
                    } else {
                        namespace
                    }
                    .to_owned(),
                ),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(api_version(&p.kind).to_owned()),
                kind: Some(p.kind.clone()),
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()).filter(|n| !n.is_empty()),
                resource_version: Some(resource_version.to_owned()),
                ..ObjectReference::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message),
            type_: Some("Warning".to_owned()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(self.component.to_owned()),
                host: None,
            }),
            reporting_component: Some(self.component.to_owned()),
            reporting_instance: std::env::var("POD_NAME").ok(),
            ..Event::default()
        }
    }
}
