//! Filling identity attributes into a bag.

use std::borrow::Cow;

use meshmeter_attributes::{AttrId, Bag, Manifest, Value};

use super::{Workload, WorkloadRegistry};

/// The attribute ids of one side (`source` or `destination`).
#[derive(Clone, Debug)]
struct Side {
    /// Looked up by (inputs).
    ip: Option<AttrId>,
    uid: Option<AttrId>,
    /// Filled (outputs); `None` when the manifest lacks it or nothing reads it.
    uid_out: Option<AttrId>,
    name: Option<AttrId>,
    namespace: Option<AttrId>,
    labels: Option<AttrId>,
    workload_name: Option<AttrId>,
    workload_namespace: Option<AttrId>,
    workload_uid: Option<AttrId>,
    owner: Option<AttrId>,
    service_account: Option<AttrId>,
}

impl Side {
    fn new(manifest: &Manifest, prefix: &str) -> Self {
        let id = |suffix: &str| manifest.id(&format!("{prefix}.{suffix}"));
        Side {
            ip: id("ip"),
            uid: id("uid"),
            uid_out: id("uid"),
            name: id("name"),
            namespace: id("namespace"),
            labels: id("labels"),
            workload_name: id("workload.name"),
            workload_namespace: id("workload.namespace"),
            workload_uid: id("workload.uid"),
            owner: id("owner"),
            service_account: id("serviceAccount"),
        }
    }

    fn find<'a, R: WorkloadRegistry + ?Sized>(
        &self,
        bag: &Bag<'_>,
        registry: &'a R,
    ) -> Option<&'a Workload> {
        let by_uid = self
            .uid
            .and_then(|id| bag.get(id))
            .and_then(Value::as_text)
            .and_then(|uid| registry.by_uid(uid));
        by_uid.or_else(|| match self.ip.and_then(|id| bag.get(id)) {
            Some(Value::IpAddress(ip)) => registry.by_ip(*ip),
            _ => None,
        })
    }

    fn retain(&mut self, keep: &impl Fn(AttrId) -> bool) {
        for out in [
            &mut self.uid_out,
            &mut self.name,
            &mut self.namespace,
            &mut self.labels,
            &mut self.workload_name,
            &mut self.workload_namespace,
            &mut self.workload_uid,
            &mut self.owner,
            &mut self.service_account,
        ] {
            *out = out.filter(|&id| keep(id));
        }
    }

    fn fill<'a>(&self, bag: &mut Bag<'a>, w: &'a Workload) {
        let text = |s: &'a str| Value::String(Cow::Borrowed(s));
        set(bag, self.uid_out, || text(&w.uid));
        set(bag, self.name, || text(&w.pod));
        set(bag, self.namespace, || text(&w.namespace));
        set(bag, self.labels, || {
            Value::StringMap(Cow::Borrowed(&w.labels))
        });
        set(bag, self.workload_name, || text(&w.name));
        set(bag, self.workload_namespace, || text(&w.namespace));
        set(bag, self.workload_uid, || text(&w.workload_uid));
        if let Some(owner) = &w.owner {
            set(bag, self.owner, || text(owner));
        }
        if let Some(sa) = &w.service_account {
            set(bag, self.service_account, || text(sa));
        }
    }
}

fn set<'a>(bag: &mut Bag<'a>, id: Option<AttrId>, value: impl FnOnce() -> Value<'a>) {
    if let Some(id) = id {
        if !bag.contains(id) {
            bag.set(id, value());
        }
    }
}

/// Which sides a call to [`Enricher::enrich`] found a workload for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enriched {
    /// A workload matched the source.
    pub source: bool,
    /// A workload matched the destination.
    pub destination: bool,
}

/// Fills identity attributes; made once per manifest so that a bag costs id lookups only.
#[derive(Clone, Debug)]
pub struct Enricher {
    source: Side,
    destination: Side,
    service_host: Option<AttrId>,
    service_name: Option<AttrId>,
    service_namespace: Option<AttrId>,
    service_uid: Option<AttrId>,
}

impl Enricher {
    /// An enricher for bags of `manifest`; attributes it does not declare are not filled.
    pub fn new(manifest: &Manifest) -> Self {
        Enricher {
            source: Side::new(manifest, "source"),
            destination: Side::new(manifest, "destination"),
            service_host: manifest.id("destination.service.host"),
            service_name: manifest.id("destination.service.name"),
            service_namespace: manifest.id("destination.service.namespace"),
            service_uid: manifest.id("destination.service.uid"),
        }
    }

    /// Fills only the attributes for which `keep` holds (those the configuration reads), so
    /// a bag costs no more than what is used. Lookups still use `*.ip` and `*.uid`.
    pub fn retain(mut self, keep: impl Fn(AttrId) -> bool) -> Self {
        self.source.retain(&keep);
        self.destination.retain(&keep);
        for out in [
            &mut self.service_host,
            &mut self.service_name,
            &mut self.service_namespace,
            &mut self.service_uid,
        ] {
            *out = out.filter(|&id| keep(id));
        }
        self
    }

    /// Fills the identity of the source and destination workloads into `bag` without
    /// replacing what it has. Values borrow from `registry`; nothing is allocated.
    pub fn enrich<'a, R: WorkloadRegistry + ?Sized>(
        &self,
        bag: &mut Bag<'a>,
        registry: &'a R,
    ) -> Enriched {
        let mut done = Enriched::default();
        if let Some(w) = self.source.find(bag, registry) {
            self.source.fill(bag, w);
            done.source = true;
        }
        if let Some(w) = self.destination.find(bag, registry) {
            self.destination.fill(bag, w);
            if let Some(s) = w.services.first() {
                let text = |s: &'a str| Value::String(Cow::Borrowed(s));
                set(bag, self.service_host, || text(&s.host));
                set(bag, self.service_name, || text(&s.name));
                set(bag, self.service_namespace, || text(&s.namespace));
                set(bag, self.service_uid, || text(&s.uid));
            }
            done.destination = true;
        }
        done
    }
}
