//! A sidecar's view as a keyed resource set: what the control plane compiles, what a sidecar
//! holds, and the updates between two of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshmeter_routing::view::{Cluster, Inbound, Service, ViewUpdate};

/// The resources of one sidecar's view, keyed as on the wire: services by `host`, clusters by
/// `name`. Resources are shared (`Arc`): the control plane keeps one copy of a cluster however
/// many views hold it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Services by host.
    pub services: BTreeMap<String, Arc<Service>>,
    /// Clusters by name.
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// The inbound side's peer authentication; `None` when no policy applies.
    pub inbound: Option<Inbound>,
}

/// An update that cannot be applied to the view a sidecar holds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A resource with an empty key.
    #[error("{kind} {index} of update {version} has an empty {key}")]
    EmptyKey {
        /// `service` or `cluster`.
        kind: &'static str,
        /// Its position in the update.
        index: usize,
        /// The field that must be set (`host`, `name`).
        key: &'static str,
        /// The update's version.
        version: u64,
    },
    /// One key twice in one update.
    #[error("{kind} '{name}' appears twice in update {version}")]
    Duplicate {
        /// `service` or `cluster`.
        kind: &'static str,
        /// The key.
        name: String,
        /// The update's version.
        version: u64,
    },
    /// A full update that also removes resources.
    #[error("update {version} is full but removes resources")]
    FullWithRemovals {
        /// The update's version.
        version: u64,
    },
}

impl View {
    /// A view of these resources (a later duplicate key replaces an earlier one).
    pub fn new(
        services: impl IntoIterator<Item = Service>,
        clusters: impl IntoIterator<Item = Cluster>,
        inbound: Option<Inbound>,
    ) -> Self {
        View {
            services: services
                .into_iter()
                .map(|s| (s.host.clone(), Arc::new(s)))
                .collect(),
            clusters: clusters
                .into_iter()
                .map(|c| (c.name.clone(), Arc::new(c)))
                .collect(),
            inbound,
        }
    }

    /// Whether the view holds nothing.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.clusters.is_empty() && self.inbound.is_none()
    }

    /// The update that replaces whatever a sidecar holds with this view.
    pub fn full_update(&self, version: u64) -> ViewUpdate {
        ViewUpdate {
            version,
            full: true,
            services: self.services.values().map(|s| Service::clone(s)).collect(),
            removed_services: Vec::new(),
            clusters: self.clusters.values().map(|c| Cluster::clone(c)).collect(),
            removed_clusters: Vec::new(),
            inbound: Some(self.inbound.clone().unwrap_or_default()),
        }
    }

    /// The incremental update that turns `self` into `new` (resources compared by key and
    /// content), or `None` when they are equal.
    pub fn diff(&self, new: &View, version: u64) -> Option<ViewUpdate> {
        let (services, removed_services) = diff_map(&self.services, &new.services);
        let (clusters, removed_clusters) = diff_map(&self.clusters, &new.clusters);
        // On the wire an absent `inbound` means "unchanged", so a policy that went away is sent
        // as the default (no policy: plaintext).
        let inbound =
            (self.inbound != new.inbound).then(|| new.inbound.clone().unwrap_or_default());
        if services.is_empty()
            && removed_services.is_empty()
            && clusters.is_empty()
            && removed_clusters.is_empty()
            && inbound.is_none()
        {
            return None;
        }
        Some(ViewUpdate {
            version,
            full: false,
            services,
            removed_services,
            clusters,
            removed_clusters,
            inbound,
        })
    }

    /// Applies `update` as a sidecar does: all of it or, on error, nothing.
    pub fn apply(&mut self, update: &ViewUpdate) -> Result<(), ApplyError> {
        let version = update.version;
        if update.full
            && !(update.removed_services.is_empty() && update.removed_clusters.is_empty())
        {
            return Err(ApplyError::FullWithRemovals { version });
        }
        let services = keyed(&update.services, "service", "host", version, |s| &s.host)?;
        let clusters = keyed(&update.clusters, "cluster", "name", version, |c| &c.name)?;
        if update.full {
            self.services = services;
            self.clusters = clusters;
            self.inbound = update.inbound.clone().filter(|i| *i != Inbound::default());
            return Ok(());
        }
        for host in &update.removed_services {
            self.services.remove(host);
        }
        for name in &update.removed_clusters {
            self.clusters.remove(name);
        }
        self.services.extend(services);
        self.clusters.extend(clusters);
        if let Some(inbound) = &update.inbound {
            self.inbound = Some(inbound.clone()).filter(|i| *i != Inbound::default());
        }
        Ok(())
    }
}

fn keyed<T: Clone>(
    items: &[T],
    kind: &'static str,
    key: &'static str,
    version: u64,
    key_of: impl Fn(&T) -> &String,
) -> Result<BTreeMap<String, Arc<T>>, ApplyError> {
    let mut map = BTreeMap::new();
    for (index, item) in items.iter().enumerate() {
        let name = key_of(item);
        if name.is_empty() {
            return Err(ApplyError::EmptyKey {
                kind,
                index,
                key,
                version,
            });
        }
        if map.insert(name.clone(), Arc::new(item.clone())).is_some() {
            return Err(ApplyError::Duplicate {
                kind,
                name: name.clone(),
                version,
            });
        }
    }
    Ok(map)
}

fn diff_map<T: Clone + PartialEq>(
    old: &BTreeMap<String, Arc<T>>,
    new: &BTreeMap<String, Arc<T>>,
) -> (Vec<T>, Vec<String>) {
    let upserts = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_none_or(|o| !Arc::ptr_eq(o, v) && o != *v))
        .map(|(_, v)| T::clone(v))
        .collect();
    let removals = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    (upserts, removals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshmeter_routing::view::{PeerMode, ServicePort};

    fn service(host: &str, port: u32) -> Service {
        Service {
            host: host.into(),
            ports: vec![ServicePort {
                port,
                name: "tcp".into(),
            }],
            ..Default::default()
        }
    }

    fn cluster(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn diff_upserts_changed_and_removes_missing() {
        let old = View::new(
            [service("a", 1), service("b", 2)],
            [cluster("c1"), cluster("c2")],
            None,
        );
        let new = View::new(
            [service("a", 1), service("b", 3), service("d", 4)],
            [cluster("c1")],
            Some(Inbound {
                default_mode: PeerMode::Strict as i32,
                ports: vec![],
            }),
        );
        let u = old.diff(&new, 7).expect("they differ");
        assert_eq!(u.version, 7);
        assert!(!u.full);
        assert_eq!(u.services, vec![service("b", 3), service("d", 4)]);
        assert_eq!(u.removed_services, Vec::<String>::new());
        assert_eq!(u.clusters, Vec::<Cluster>::new());
        assert_eq!(u.removed_clusters, vec!["c2".to_owned()]);
        assert_eq!(u.inbound.as_ref().map(|i| i.default_mode), Some(2));
        let mut held = old.clone();
        held.apply(&u).expect("applies");
        assert_eq!(held, new);
        assert_eq!(new.diff(&new, 8), None);
    }

    #[test]
    fn inbound_going_away_is_sent_as_default() {
        let old = View::new(
            [],
            [],
            Some(Inbound {
                default_mode: 1,
                ports: vec![],
            }),
        );
        let new = View::default();
        let u = old.diff(&new, 2).expect("differs");
        assert_eq!(u.inbound, Some(Inbound::default()));
        let mut held = old;
        held.apply(&u).expect("applies");
        assert_eq!(held, new);
    }

    #[test]
    fn full_update_replaces_everything() {
        let mut held = View::new([service("x", 1)], [cluster("y")], None);
        let new = View::new([service("a", 1)], [], None);
        held.apply(&new.full_update(3)).expect("applies");
        assert_eq!(held, new);
    }

    #[test]
    fn bad_updates_change_nothing() {
        let mut held = View::new([service("x", 1)], [], None);
        let before = held.clone();
        let dup = ViewUpdate {
            version: 4,
            services: vec![service("a", 1), service("a", 2)],
            removed_services: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(
            held.apply(&dup).unwrap_err().to_string(),
            "service 'a' appears twice in update 4"
        );
        let empty = ViewUpdate {
            version: 5,
            clusters: vec![cluster("")],
            ..Default::default()
        };
        assert_eq!(
            held.apply(&empty).unwrap_err().to_string(),
            "cluster 0 of update 5 has an empty name"
        );
        assert_eq!(held, before);
    }
}
