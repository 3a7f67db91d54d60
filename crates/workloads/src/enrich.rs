//! Filling identity attributes into a bag.

use std::borrow::Cow;
use std::net::IpAddr;

use meshmeter_attributes::{AttrId, Bag, Manifest, Value};

use super::{Service, Workload, WorkloadRegistry};

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

    /// The side's address, when the bag has it.
    fn address(&self, bag: &Bag<'_>) -> Option<IpAddr> {
        match self.ip.and_then(|id| bag.get(id)) {
            Some(Value::IpAddress(ip)) => Some(*ip),
            _ => None,
        }
    }

    /// The workload by uid, else by address; and whether it was found by uid.
    fn find<'a, R: WorkloadRegistry + ?Sized>(
        &self,
        bag: &Bag<'_>,
        registry: &'a R,
    ) -> Option<(&'a Workload, bool)> {
        let by_uid = self
            .uid
            .and_then(|id| bag.get(id))
            .and_then(Value::as_text)
            .and_then(|uid| registry.by_uid(uid));
        match by_uid {
            Some(w) => Some((w, true)),
            None => self
                .address(bag)
                .and_then(|ip| registry.by_ip(ip))
                .map(|w| (w, false)),
        }
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
    /// A service matched the destination (a workload's, or the one whose address it is).
    pub service: bool,
}

/// Fills identity attributes; made once per manifest so that a bag costs id lookups only.
#[derive(Clone, Debug)]
pub struct Enricher {
    source: Side,
    destination: Side,
    /// `destination.port`: picks among the services of the destination.
    destination_port: Option<AttrId>,
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
            destination_port: manifest.id("destination.port"),
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
    /// replacing what it has, and `destination.service.*` from the service that
    /// `destination.ip` and `destination.port` reach (a workload's address or a service's
    /// own). Values borrow from `registry`; nothing is allocated.
    pub fn enrich<'a, R: WorkloadRegistry + ?Sized>(
        &self,
        bag: &mut Bag<'a>,
        registry: &'a R,
    ) -> Enriched {
        let mut done = Enriched::default();
        if let Some((w, _)) = self.source.find(bag, registry) {
            self.source.fill(bag, w);
            done.source = true;
        }
        let found = self.destination.find(bag, registry);
        if let Some((w, _)) = found {
            self.destination.fill(bag, w);
            done.destination = true;
        }
        if let Some(s) = self.service(bag, registry, found) {
            let text = |s: &'a str| Value::String(Cow::Borrowed(s));
            set(bag, self.service_host, || text(&s.host));
            set(bag, self.service_name, || text(&s.name));
            set(bag, self.service_namespace, || text(&s.namespace));
            set(bag, self.service_uid, || text(&s.uid));
            done.service = true;
        }
        done
    }

    /// The destination's service: the one its address and port reach, unless the workload
    /// named by `destination.uid` is not the one at that address (then its first service).
    fn service<'a, R: WorkloadRegistry + ?Sized>(
        &self,
        bag: &Bag<'_>,
        registry: &'a R,
        found: Option<(&'a Workload, bool)>,
    ) -> Option<&'a Service> {
        let outputs = [
            self.service_host,
            self.service_name,
            self.service_namespace,
            self.service_uid,
        ];
        if outputs.iter().all(Option::is_none) {
            return None;
        }
        let first = || found.and_then(|(w, _)| w.services.first());
        let Some(ip) = self.destination.address(bag) else {
            return first();
        };
        if let Some((w, true)) = found {
            if registry.by_ip(ip).is_some_and(|at| !std::ptr::eq(at, w)) {
                return first();
            }
        }
        let port = match self.destination_port.and_then(|id| bag.get(id)) {
            Some(Value::Int64(p)) => u16::try_from(*p).ok(),
            _ => None,
        };
        registry.service_for(ip, port).or_else(first)
    }
}
