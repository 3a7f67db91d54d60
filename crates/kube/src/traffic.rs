//! Traffic configuration from `networking.istio.io/v1alpha3` and
//! `authentication.istio.io/v1alpha1` objects.

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{start_documents, ConfigDocuments, Watched};
use crate::follow::{Synced, WatchMetrics};

/// The traffic kinds: API version, kind, resource (plural) name, and whether the kind is
/// namespaced (a `MeshPolicy` is cluster-scoped).
pub const TRAFFIC_RESOURCES: [(&str, &str, &str, bool); 4] = [
    (
        "networking.istio.io/v1alpha3",
        "DestinationRule",
        "destinationrules",
        true,
    ),
    (
        "networking.istio.io/v1alpha3",
        "VirtualService",
        "virtualservices",
        true,
    ),
    (
        "authentication.istio.io/v1alpha1",
        "MeshPolicy",
        "meshpolicies",
        false,
    ),
    (
        "authentication.istio.io/v1alpha1",
        "Policy",
        "policies",
        true,
    ),
];

/// The traffic objects in the API server (`DestinationRule`, `VirtualService`, `MeshPolicy`,
/// `Policy`), each rendered as an [`meshmeter_config::Input::Kubernetes`] (named
/// `kubernetes:NAMESPACE/KIND/NAME`) for `meshmeter-netconfig`'s loader, kept up to date by one
/// watch per kind (and namespace, when limited to some).
///
/// A group whose CRDs are not installed counts as synced and empty; its watch keeps retrying.
/// Hand the documents to `meshmeter_netconfig::NetWatcher::follow_objects`, and what it
/// rejects to [`crate::ProblemEvents::record`]:
///
/// ```no_run
/// use std::sync::Arc;
/// use meshmeter_kube::{ProblemEvents, TrafficSource, WatchMetrics};
/// use meshmeter_netconfig::NetWatcher;
/// use meshmeter_selfmetrics::SelfMetrics;
///
/// # async fn run(client: kube::Client) {
/// let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
/// let source = TrafficSource::start(client.clone(), &[], &metrics);
/// let mut watcher = NetWatcher::new(vec!["/etc/meshmeter/traffic".into()]); // files too
/// let events = ProblemEvents::new(client, tokio::runtime::Handle::current());
/// watcher.follow_objects(source.documents(), move |problems| events.record(&problems));
/// source.synced().wait().await;
/// let mut config = watcher.subscribe(); // watch::Receiver<Arc<NetworkConfig>>
/// while config.changed().await.is_ok() {
///     println!("{} destination rules", config.borrow().destination_rules.len());
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct TrafficSource {
    rx: watch::Receiver<ConfigDocuments>,
    synced: Synced,
    tasks: Vec<JoinHandle<()>>,
}

impl TrafficSource {
    /// Starts the watches on the current tokio runtime: namespaced kinds in `namespaces` (all
    /// namespaces when empty), `MeshPolicy` cluster-wide.
    pub fn start(client: Client, namespaces: &[String], metrics: &WatchMetrics) -> Self {
        let watched: Vec<Watched> = TRAFFIC_RESOURCES
            .iter()
            .map(|&(api_version, kind, plural, namespaced)| Watched {
                api_version,
                kind,
                plural,
                namespaced,
            })
            .collect();
        let (rx, synced, tasks) = start_documents(client, namespaces, metrics, &watched);
        TrafficSource { rx, synced, tasks }
    }

    /// The objects now, and every change: a new value only when an object was added,
    /// changed (its spec) or deleted.
    pub fn documents(&self) -> watch::Receiver<ConfigDocuments> {
        self.rx.clone()
    }

    /// Turns true once every kind has been listed once.
    pub fn synced(&self) -> Synced {
        self.synced.clone()
    }
}

impl Drop for TrafficSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
