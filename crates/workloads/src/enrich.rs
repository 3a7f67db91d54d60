//! Filling identity attributes into a bag.

use std::borrow::Cow;
use std::net::IpAddr;

use meshmeter_attributes::{AttrId, Bag, Manifest, Value};

use super::{Account, AccountGroup, Service, Workload, WorkloadRegistry};

/// The namespace and service account a principal names: `TRUST_DOMAIN/ns/N/sa/S`, with or
/// without `spiffe://` in front; `None` for any other shape.
///
/// ```
/// use meshmeter_workloads::principal_account;
/// assert_eq!(principal_account("cluster.local/ns/default/sa/ratings"), Some(("default", "ratings")));
/// assert_eq!(principal_account("spiffe://example.org/ns/shop/sa/db"), Some(("shop", "db")));
/// assert_eq!(principal_account("cluster.local/ns/default"), None);
/// ```
pub fn principal_account(principal: &str) -> Option<(&str, &str)> {
    let path = principal.strip_prefix("spiffe://").unwrap_or(principal);
    let mut parts = path.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(domain), Some("ns"), Some(ns), Some("sa"), Some(sa), None)
            if !domain.is_empty() && !ns.is_empty() && !sa.is_empty() =>
        {
            Some((ns, sa))
        }
        _ => None,
    }
}

/// Who a side turned out to be.
#[derive(Clone, Copy, Debug)]
enum Found<'a> {
    /// One workload; `by_address` when its address (rather than its uid or principal) told.
    Workload { w: &'a Workload, by_address: bool },
    /// Several workloads run as the side's principal: what they share.
    Group(&'a AccountGroup),
}

impl<'a> Found<'a> {
    fn workload(self) -> Option<&'a Workload> {
        match self {
            Found::Workload { w, .. } => Some(w),
            Found::Group(_) => None,
        }
    }
}

/// The attribute ids of one side (`source` or `destination`).
#[derive(Clone, Debug)]
struct Side {
    /// Looked up by (inputs).
    ip: Option<AttrId>,
    uid: Option<AttrId>,
    principal: Option<AttrId>,
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
            principal: id("principal"),
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

    /// The workload by uid; else by address, unless the address is shared or the workload
    /// there contradicts the principal; else by principal; else the address's workload if
    /// shared but not contradicted.
    fn find<'a, R: WorkloadRegistry + ?Sized>(
        &self,
        bag: &Bag<'_>,
        registry: &'a R,
    ) -> Option<Found<'a>> {
        let by_uid = self
            .uid
            .and_then(|id| bag.get(id))
            .and_then(Value::as_text)
            .and_then(|uid| registry.by_uid(uid));
        if let Some(w) = by_uid {
            return Some(Found::Workload {
                w,
                by_address: false,
            });
        }
        let ip = self.address(bag);
        let at = ip.and_then(|ip| registry.by_ip(ip));
        let account = self
            .principal
            .and_then(|id| bag.get(id))
            .and_then(Value::as_text)
            .and_then(principal_account);
        let by_address = |w| Found::Workload {
            w,
            by_address: true,
        };
        let Some((ns, sa)) = account else {
            return at.map(by_address);
        };
        // An address's workload in another namespace or running as another account is not
        // the peer the handshake proved (NAT, a reused address).
        let agrees = at
            .filter(|w| w.namespace == ns && w.service_account.as_deref().is_none_or(|s| s == sa));
        if let (Some(w), Some(ip)) = (agrees, ip) {
            if !registry.ip_shared(ip) {
                return Some(by_address(w));
            }
        }
        match registry.by_service_account(ns, sa) {
            Some(Account::One(w)) => Some(Found::Workload {
                w,
                by_address: false,
            }),
            Some(Account::Several(group)) => Some(Found::Group(group)),
            None => agrees.map(by_address),
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

    fn fill<'a>(&self, bag: &mut Bag<'a>, found: Found<'a>) {
        match found {
            Found::Workload { w, .. } => self.fill_workload(bag, w),
            Found::Group(g) => self.fill_group(bag, g),
        }
    }

    /// What several workloads share; never `*.uid` or `*.name`, which name one pod.
    fn fill_group<'a>(&self, bag: &mut Bag<'a>, g: &'a AccountGroup) {
        let text = |s: &'a str| Value::String(Cow::Borrowed(s));
        set(bag, self.namespace, || text(&g.namespace));
        set(bag, self.workload_namespace, || text(&g.namespace));
        set(bag, self.service_account, || text(&g.service_account));
        set(bag, self.labels, || {
            Value::StringMap(Cow::Borrowed(&g.labels))
        });
        if let Some(name) = &g.workload_name {
            set(bag, self.workload_name, || text(name));
        }
        if let Some(uid) = &g.workload_uid {
            set(bag, self.workload_uid, || text(uid));
        }
        if let Some(owner) = &g.owner {
            set(bag, self.owner, || text(owner));
        }
    }

    fn fill_workload<'a>(&self, bag: &mut Bag<'a>, w: &'a Workload) {
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
    /// A workload (or the workloads running as its principal) matched the source.
    pub source: bool,
    /// A workload (or the workloads running as its principal) matched the destination.
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
    /// a bag costs no more than what is used. Lookups still use `*.ip`, `*.uid` and
    /// `*.principal`.
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
        if let Some(found) = self.source.find(bag, registry) {
            self.source.fill(bag, found);
            done.source = true;
        }
        let found = self.destination.find(bag, registry);
        if let Some(found) = found {
            self.destination.fill(bag, found);
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
    /// named by `destination.uid` (or its principal) is not the one at that address (then its
    /// first service).
    fn service<'a, R: WorkloadRegistry + ?Sized>(
        &self,
        bag: &Bag<'_>,
        registry: &'a R,
        found: Option<Found<'a>>,
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
        let first = || {
            found
                .and_then(Found::workload)
                .and_then(|w| w.services.first())
        };
        let Some(ip) = self.destination.address(bag) else {
            return first();
        };
        if let Some(Found::Workload {
            w,
            by_address: false,
        }) = found
        {
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
