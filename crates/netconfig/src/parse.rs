//! One YAML document into one typed traffic object, checking every field.
//!
//! Every message names the field by its path in the object (`spec.subsets[1].name`) and the
//! object by kind, namespace and name; the diagnostic itself carries file:line:column.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use meshmeter_config::syntax::fields::{self, Fields};
use meshmeter_config::syntax::{Node, Sink, Span, Value, WithHint};

use crate::codes::{report, Code};
use crate::model::*;

/// The kinds this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    DestinationRule,
    VirtualService,
    MeshPolicy,
    Policy,
}

pub(crate) const NETWORKING: &str = "networking.istio.io/v1alpha3";
pub(crate) const AUTHENTICATION: &str = "authentication.istio.io/v1alpha1";

const KINDS: [&str; 4] = ["DestinationRule", "VirtualService", "MeshPolicy", "Policy"];

/// Kinds of the two API groups that meshmeter leaves alone (not typos of ours).
const OTHER_KINDS: [&str; 4] = ["Gateway", "ServiceEntry", "Sidecar", "EnvoyFilter"];

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        KINDS[self as usize]
    }

    pub(crate) fn api_version(self) -> &'static str {
        match self {
            Kind::DestinationRule | Kind::VirtualService => NETWORKING,
            Kind::MeshPolicy | Kind::Policy => AUTHENTICATION,
        }
    }

    pub(crate) fn from_name(kind: &str) -> Option<Kind> {
        Some(match kind {
            "DestinationRule" => Kind::DestinationRule,
            "VirtualService" => Kind::VirtualService,
            "MeshPolicy" => Kind::MeshPolicy,
            "Policy" => Kind::Policy,
            _ => return None,
        })
    }
}

/// A typed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Object {
    DestinationRule(DestinationRule),
    VirtualService(VirtualService),
    PeerPolicy(PeerPolicy),
}

/// What one document held: its identity (as far as it could be read) and, when every field
/// read, the object. Whether it has errors is up to the caller's sink.
#[derive(Debug)]
pub(crate) struct Document {
    pub(crate) kind: Kind,
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// `metadata.name`'s value, or the document's start.
    pub(crate) span: Span,
    pub(crate) object: Option<Object>,
    /// The subsets its routes name, to check against the DestinationRules once all are read.
    pub(crate) refs: Vec<SubsetRef>,
}

/// A route's `destination.subset`, where it is written.
#[derive(Debug)]
pub(crate) struct SubsetRef {
    pub(crate) host: String,
    pub(crate) subset: String,
    /// The field's path and the object, as messages name them.
    pub(crate) what: String,
    pub(crate) span: Span,
}

/// Reads one document; `None` for documents of other kinds (skipped; the telemetry loader
/// says so) and empty ones. A misspelt kind of one of the two API groups is an error
/// (reported, `None`).
pub(crate) fn read(doc: &Node, sink: &mut Sink<'_>) -> Option<Document> {
    if !matches!(doc.value, Value::Map(_)) {
        // Not a mapping: the telemetry loader reports it (C0014) for the same files; a
        // Kubernetes object is always a mapping.
        return None;
    }
    let kind_node = doc.get("kind")?;
    let kind_text = kind_node.as_str()?;
    let api_version = doc.get("apiVersion").and_then(Node::as_str);
    let Some(kind) = Kind::from_name(kind_text) else {
        let ours = api_version.is_some_and(|v| {
            v.starts_with("networking.istio.io/") || v.starts_with("authentication.istio.io/")
        });
        if ours && !OTHER_KINDS.contains(&kind_text) {
            if let Some(s) = fields::suggest(kind_text, KINDS) {
                report(
                    sink,
                    Code::BadHeader,
                    kind_node.span,
                    format!(
                        "unknown kind '{kind_text}' in {}",
                        api_version.unwrap_or_default()
                    ),
                )
                .hint(format!("did you mean '{s}'?"));
            }
        }
        return None;
    };
    let metadata = doc.get("metadata");
    let written_name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .unwrap_or("(unnamed)");
    let written_namespace = match kind {
        Kind::MeshPolicy => None,
        _ => Some(
            metadata
                .and_then(|m| m.get("namespace"))
                .and_then(Node::as_str)
                .unwrap_or("default"),
        ),
    };
    let written = match written_namespace {
        Some(ns) => format!("{} {ns}/{written_name}", kind.as_str()),
        None => format!("{} {written_name}", kind.as_str()),
    };
    match api_version {
        None => {
            report(
                sink,
                Code::BadHeader,
                kind_node.span,
                format!("{written} has no 'apiVersion'"),
            )
            .hint(format!("add 'apiVersion: {}'", kind.api_version()));
        }
        Some(v) if v != kind.api_version() => {
            let at = doc.get("apiVersion").map_or(doc.span, |n| n.span);
            report(
                sink,
                Code::UnknownApiVersion,
                at,
                format!(
                    "apiVersion '{v}' of {written}; reading it as {}",
                    kind.api_version()
                ),
            );
        }
        Some(_) => {}
    }
    let top = fields::read(
        doc,
        &written,
        &["api_version", "kind", "metadata", "spec", "status"],
        sink,
    );
    let spec_misspelt = top.as_ref().is_some_and(|f| f.misspelled(3));
    let name_node = metadata
        .and_then(|m| m.get("name"))
        .filter(|n| n.as_str().is_some_and(|s| !s.is_empty()));
    let namespace = match (kind, metadata.and_then(|m| m.get("namespace"))) {
        // Cluster-scoped: whatever is written, there is no namespace.
        (Kind::MeshPolicy, _) => String::new(),
        (_, Some(n)) if n.value != Value::Null => fields::text(n, "metadata.namespace", sink)
            .unwrap_or("default")
            .to_owned(),
        _ => "default".to_owned(),
    };
    let Some(name_node) = name_node else {
        let at = top
            .as_ref()
            .and_then(|f| f.key(2))
            .map_or(kind_node.span, |k| k.span);
        report(
            sink,
            Code::MissingField,
            at,
            format!("metadata.name of a {} is missing or empty", kind.as_str()),
        );
        return Some(Document {
            kind,
            namespace,
            name: String::new(),
            span: at,
            object: None,
            refs: Vec::new(),
        });
    };
    let name = name_node.as_str().unwrap_or_default().to_owned();
    let meta = ObjectMeta {
        name: name.clone(),
        namespace: namespace.clone(),
    };
    let mut refs = Vec::new();
    let object = {
        let shown = if namespace.is_empty() {
            format!("{} {name}", kind.as_str())
        } else {
            format!("{} {namespace}/{name}", kind.as_str())
        };
        let mut cx = Cx {
            sink,
            obj: shown,
            refs: &mut refs,
        };
        let spec = doc.get("spec").filter(|s| s.value != Value::Null);
        match (kind, spec) {
            (Kind::MeshPolicy | Kind::Policy, None) => Some(Object::PeerPolicy(PeerPolicy {
                meta,
                mesh_wide: kind == Kind::MeshPolicy,
                targets: Vec::new(),
                mtls: None,
            }))
            .filter(|_| cx.policy_name(kind, &name, false, name_node.span)),
            (_, None) => {
                if !spec_misspelt {
                    let what = cx.what("spec");
                    report(
                        cx.sink,
                        Code::MissingField,
                        name_node.span,
                        format!("{what} is missing"),
                    );
                }
                None
            }
            (Kind::DestinationRule, Some(spec)) => {
                cx.destination_rule(meta, spec).map(Object::DestinationRule)
            }
            (Kind::VirtualService, Some(spec)) => {
                cx.virtual_service(meta, spec).map(Object::VirtualService)
            }
            (Kind::MeshPolicy | Kind::Policy, Some(spec)) => cx
                .peer_policy(meta, kind, spec, name_node.span)
                .map(Object::PeerPolicy),
        }
    };
    Some(Document {
        kind,
        namespace,
        name,
        span: name_node.span,
        object,
        refs,
    })
}

/// Reading one object: the sink and how messages name the object.
struct Cx<'a, 's> {
    sink: &'a mut Sink<'s>,
    /// `DestinationRule default/reviews`.
    obj: String,
    /// The subsets a VirtualService's routes name.
    refs: &'a mut Vec<SubsetRef>,
}

const DESTINATION_RULE: &[&str] = &["host", "traffic_policy", "subsets", "export_to"];
const TRAFFIC_POLICY: &[&str] = &[
    "load_balancer",
    "connection_pool",
    "outlier_detection",
    "tls",
    "port_level_settings",
];
const PORT_TRAFFIC_POLICY: &[&str] = &[
    "port",
    "load_balancer",
    "connection_pool",
    "outlier_detection",
    "tls",
];
const LOAD_BALANCER: &[&str] = &["simple", "consistent_hash"];
const SIMPLE: [&str; 4] = ["ROUND_ROBIN", "LEAST_CONN", "RANDOM", "PASSTHROUGH"];
const CONNECTION_POOL: &[&str] = &["tcp", "http"];
const TCP_POOL: &[&str] = &["max_connections", "connect_timeout", "tcp_keepalive"];
const KEEPALIVE: &[&str] = &["probes", "time", "interval"];
const HTTP_POOL: &[&str] = &[
    "http1_max_pending_requests",
    "http2_max_requests",
    "max_requests_per_connection",
    "max_retries",
    "idle_timeout",
];
const OUTLIER: &[&str] = &[
    "consecutive_errors",
    "interval",
    "base_ejection_time",
    "max_ejection_percent",
    "min_health_percent",
];
const TLS: &[&str] = &[
    "mode",
    "client_certificate",
    "private_key",
    "ca_certificates",
    "subject_alt_names",
    "sni",
];
const TLS_MODES: [&str; 4] = ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];
const SUBSET: &[&str] = &["name", "labels", "traffic_policy"];
const VIRTUAL_SERVICE: &[&str] = &["hosts", "gateways", "http", "tls", "tcp", "export_to"];
const TCP_ROUTE: &[&str] = &["match", "route"];
const L4_MATCH: &[&str] = &[
    "destination_subnets",
    "port",
    "source_subnet",
    "source_labels",
    "gateways",
];
const ROUTE_DESTINATION: &[&str] = &["destination", "weight"];
const DESTINATION: &[&str] = &["host", "subset", "port"];
const PORT_SELECTOR: &[&str] = &["number", "name"];
const POLICY: &[&str] = &[
    "targets",
    "peers",
    "peer_is_optional",
    "origins",
    "origin_is_optional",
    "principal_binding",
];
const TARGET: &[&str] = &["name", "ports"];
const PEER: &[&str] = &["mtls", "jwt"];
const MTLS: &[&str] = &["mode", "allow_tls"];
const MTLS_MODES: [&str; 2] = ["STRICT", "PERMISSIVE"];
const PRINCIPAL_BINDING: [&str; 2] = ["USE_PEER", "USE_ORIGIN"];

impl Cx<'_, '_> {
    /// `path of KIND NAMESPACE/NAME`: how a field is named in messages.
    fn what(&self, path: &str) -> String {
        format!("{path} of {}", self.obj)
    }

    fn read<'n>(&mut self, node: &'n Node, path: &str, schema: &[&str]) -> Option<Fields<'n>> {
        let what = self.what(path);
        fields::read(node, &what, schema, self.sink)
    }

    fn text<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        let what = self.what(path);
        fields::text(node, &what, self.sink)
    }

    fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        let what = self.what(path);
        fields::list(node, &what, self.sink)
    }

    fn texts(&mut self, node: Option<&Node>, path: &str) -> Vec<String> {
        let Some(node) = node else { return Vec::new() };
        let items = self.list(node, path).unwrap_or_default();
        items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| self.text(n, &format!("{path}[{i}]")).map(str::to_owned))
            .collect()
    }

    fn count(&mut self, node: &Node, path: &str) -> Option<u32> {
        let what = self.what(path);
        fields::count(node, &what, self.sink)
    }

    fn error(
        &mut self,
        code: Code,
        span: Span,
        message: String,
    ) -> &mut meshmeter_config::Diagnostic {
        report(self.sink, code, span, message)
    }

    /// A required field: reports it missing (at `at`) unless an unknown key was already
    /// reported as a typo of it.
    fn required<'n>(
        &mut self,
        f: &Fields<'n>,
        i: usize,
        path: &str,
        within: &Node,
    ) -> Option<&'n Node> {
        let node = f.get(i);
        if node.is_none() && !f.misspelled(i) {
            let what = self.what(path);
            self.error(
                Code::MissingField,
                start(within),
                format!("{what} is missing"),
            );
        }
        node
    }

    fn port(&mut self, node: &Node, path: &str) -> Option<u16> {
        let t = self.text(node, path)?;
        let what = self.what(path);
        match t.trim().parse::<u64>() {
            Ok(p) if (1..=65535).contains(&p) => u16::try_from(p).ok(),
            Ok(_) => {
                self.error(
                    Code::BadPort,
                    node.span,
                    format!("{what} must be a port from 1 to 65535, found '{t}'"),
                );
                None
            }
            Err(_) => {
                self.error(
                    Code::BadNumber,
                    node.span,
                    format!("{what} must be a port number, found '{t}'"),
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let t = self.text(node, path)?;
        let what = self.what(path);
        match t
            .parse::<meshmeter_attributes::Duration>()
            .ok()
            .and_then(|d| d.to_std())
        {
            Some(d) if !d.is_zero() => Some(d),
            _ => {
                self.error(
                    Code::BadDuration,
                    node.span,
                    format!("{what} '{t}' is not a positive duration"),
                )
                .hint("write a duration such as `1s`, `500ms`, `1m`, `1h` or `1.5s`");
                None
            }
        }
    }

    fn percent(&mut self, node: &Node, path: &str) -> Option<u32> {
        let v = self.count(node, path)?;
        if v > 100 {
            let what = self.what(path);
            self.error(
                Code::BadPercent,
                node.span,
                format!("{what} must be from 0 to 100, found {v}"),
            );
            return None;
        }
        Some(v)
    }

    /// A map of label name to text value.
    fn labels(&mut self, node: &Node, path: &str) -> Option<BTreeMap<String, String>> {
        let what = self.what(path);
        let entries = fields::map(node, &what, self.sink)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, v) in entries {
            let Some(key) = self.text(k, &format!("a label name in {path}")) else {
                ok = false;
                continue;
            };
            if key.is_empty() || key.len() > 317 || key.chars().any(char::is_whitespace) {
                self.error(
                    Code::BadLabel,
                    k.span,
                    format!("{what} has an invalid label name '{key}'"),
                );
                ok = false;
                continue;
            }
            let value = match &v.value {
                Value::Null => Some(""),
                Value::Scalar(s) => Some(s.text.as_str()),
                _ => None,
            };
            match value {
                Some(value) => {
                    out.insert(key.to_owned(), value.to_owned());
                }
                None => {
                    self.error(
                        Code::WrongNodeType,
                        v.span,
                        format!(
                            "label '{key}' in {what} must be text, found {}",
                            v.describe()
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// A host as written: a DNS name, optionally with a leading `*` label, or `*`.
    fn host(&mut self, node: &Node, path: &str) -> Option<String> {
        let t = self.text(node, path)?;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let rest = t.strip_prefix("*.").unwrap_or(t);
        let valid = t == "*" || (t.len() <= 255 && rest.split('.').all(label_ok));
        if !valid {
            let what = self.what(path);
            self.error(
                Code::BadHost,
                node.span,
                format!("{what} '{t}' is not a host name"),
            )
            .hint("write a DNS name (`ratings`, `ratings.default.svc.cluster.local`) or a wildcard (`*.example.com`)");
            return None;
        }
        Some(t.to_owned())
    }

    fn subnet(&mut self, node: &Node, path: &str) -> Option<Subnet> {
        let t = self.text(node, path)?;
        let parsed = match t.split_once('/') {
            None => t.parse::<IpAddr>().ok().map(|a| (a, None)),
            Some((a, p)) => match (a.parse::<IpAddr>(), p.parse::<u8>()) {
                (Ok(a), Ok(p)) => Some((a, Some(p))),
                _ => None,
            },
        };
        let subnet = parsed.and_then(|(addr, prefix)| {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = prefix.unwrap_or(max);
            (prefix <= max).then(|| Subnet {
                addr: network(addr, prefix),
                prefix,
            })
        });
        if subnet.is_none() {
            let what = self.what(path);
            self.error(
                Code::BadSubnet,
                node.span,
                format!("{what} '{t}' is not an IP address or CIDR block"),
            )
            .hint("write an address (`10.0.0.7`) or a network (`10.0.0.0/8`, `2001:db8::/32`)");
        }
        subnet
    }

    /// `exportTo`: Istio 1.1 knows `.` (this namespace) and `*` (every namespace).
    fn export_to(&mut self, node: Option<&Node>) -> bool {
        let Some(node) = node else { return true };
        let Some(items) = self.list(node, "spec.exportTo") else {
            return false;
        };
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = format!("spec.exportTo[{i}]");
            match self.text(item, &path) {
                Some("." | "*") => {}
                Some(other) => {
                    let what = self.what(&path);
                    self.error(
                        Code::InvalidEnum,
                        item.span,
                        format!("{what} '{other}' is not one of ., *"),
                    )
                    .hint("'.' exports to the object's own namespace, '*' to every namespace");
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok
    }

    fn ignored(&mut self, node: &Node, path: &str, why: &str) {
        let what = self.what(path);
        self.error(
            Code::Ignored,
            node.span,
            format!("{what} is accepted and not applied: {why}"),
        );
    }

    fn destination_rule(&mut self, meta: ObjectMeta, spec: &Node) -> Option<DestinationRule> {
        let f = self.read(spec, "spec", DESTINATION_RULE)?;
        let host = self
            .required(&f, 0, "spec.host", spec)
            .and_then(|n| self.host(n, "spec.host"));
        let traffic_policy = f
            .get(1)
            .map(|n| self.traffic_policy(n, "spec.trafficPolicy", TRAFFIC_POLICY));
        let mut subsets = Vec::new();
        let mut names: Vec<(String, u32)> = Vec::new();
        let mut ok = true;
        if let Some(list) = f.get(2).and_then(|n| self.list(n, "spec.subsets")) {
            for (i, s) in list.iter().enumerate() {
                let path = format!("spec.subsets[{i}]");
                match self.subset(s, &path, &mut names) {
                    Some(s) => subsets.push(s),
                    None => ok = false,
                }
            }
        }
        let ok_export = self.export_to(f.get(3));
        let traffic_policy = match traffic_policy {
            Some(Some(p)) => Some(p),
            Some(None) => return None,
            None => None,
        };
        Some(DestinationRule {
            meta,
            host: host?,
            traffic_policy,
            subsets,
        })
        .filter(|_| ok && ok_export)
    }

    fn subset(
        &mut self,
        node: &Node,
        path: &str,
        names: &mut Vec<(String, u32)>,
    ) -> Option<Subset> {
        let f = self.read(node, path, SUBSET)?;
        let name = self
            .required(&f, 0, &format!("{path}.name"), node)
            .and_then(|n| Some((n, self.text(n, &format!("{path}.name"))?)));
        let name = match name {
            Some((n, "")) => {
                let what = self.what(&format!("{path}.name"));
                self.error(Code::MissingField, n.span, format!("{what} is empty"));
                None
            }
            Some((n, t)) => {
                if let Some((_, line)) = names.iter().find(|(seen, _)| seen == t) {
                    let what = self.what("spec.subsets");
                    let line = *line;
                    self.error(
                        Code::DuplicateSubset,
                        n.span,
                        format!("subset name '{t}' is used twice in {what}"),
                    )
                    .hint(format!(
                        "the first subset '{t}' is at line {line}; subset names must be unique"
                    ));
                    None
                } else {
                    names.push((t.to_owned(), n.span.line));
                    Some(t.to_owned())
                }
            }
            None => None,
        };
        let labels = match f.get(1) {
            Some(n) => self.labels(n, &format!("{path}.labels")),
            None => Some(BTreeMap::new()),
        };
        let traffic_policy = match f.get(2) {
            Some(n) => {
                Some(self.traffic_policy(n, &format!("{path}.trafficPolicy"), TRAFFIC_POLICY)?)
            }
            None => None,
        };
        Some(Subset {
            name: name?,
            labels: labels?,
            traffic_policy,
        })
    }

    fn traffic_policy(
        &mut self,
        node: &Node,
        path: &str,
        schema: &[&str],
    ) -> Option<TrafficPolicy> {
        let f = self.read(node, path, schema)?;
        let port_level = schema.len() == PORT_TRAFFIC_POLICY.len() && schema[0] == "port";
        let at = |i: usize| if port_level { i + 1 } else { i };
        let mut ok = true;
        if port_level {
            match f.get(0) {
                Some(p) => ok &= self.port_selector(p, &format!("{path}.port")).is_some(),
                None => {
                    let what = self.what(&format!("{path}.port"));
                    self.error(
                        Code::MissingField,
                        start(node),
                        format!("{what} is missing"),
                    );
                    ok = false;
                }
            }
        }
        let mut policy = TrafficPolicy::default();
        if let Some(n) = f.get(at(0)) {
            let p = format!("{path}.loadBalancer");
            match self.read(n, &p, LOAD_BALANCER) {
                Some(lb) => {
                    if let Some(s) = lb.get(0) {
                        let what = self.what(&format!("{p}.simple"));
                        match fields::enumeration(s, &what, &SIMPLE, self.sink) {
                            Some(i) => {
                                policy.load_balancer = Some(
                                    [
                                        LoadBalancer::RoundRobin,
                                        LoadBalancer::LeastConn,
                                        LoadBalancer::Random,
                                        LoadBalancer::Passthrough,
                                    ][i],
                                );
                            }
                            None => ok = false,
                        }
                    }
                    if let Some(c) = lb.get(1) {
                        self.ignored(
                            c,
                            &format!("{p}.consistentHash"),
                            "meshmeter balances TCP connections by `simple` only",
                        );
                    }
                }
                None => ok = false,
            }
        }
        if let Some(n) = f.get(at(1)) {
            match self.connection_pool(n, &format!("{path}.connectionPool")) {
                Some(pool) => policy.tcp_pool = pool,
                None => ok = false,
            }
        }
        if let Some(n) = f.get(at(2)) {
            match self.outlier(n, &format!("{path}.outlierDetection")) {
                Some(o) => policy.outlier_detection = Some(o),
                None => ok = false,
            }
        }
        if let Some(n) = f.get(at(3)) {
            let p = format!("{path}.tls");
            match self.read(n, &p, TLS) {
                Some(tls) => {
                    let mode = match tls.get(0) {
                        None => Some(TlsMode::Disable),
                        Some(m) => {
                            let what = self.what(&format!("{p}.mode"));
                            fields::enumeration(m, &what, &TLS_MODES, self.sink).map(|i| match i {
                                0 => TlsMode::Disable,
                                3 => TlsMode::IstioMutual,
                                _ => TlsMode::Other,
                            })
                        }
                    };
                    for (i, field) in TLS.iter().enumerate().skip(1) {
                        if let Some(v) = tls.get(i) {
                            let field = format!("{p}.{}", fields::camel(field));
                            if i == 4 {
                                self.texts(Some(v), &field);
                            } else {
                                ok &= self.text(v, &field).is_some();
                            }
                        }
                    }
                    match mode {
                        Some(m) => policy.tls = Some(m),
                        None => ok = false,
                    }
                }
                None => ok = false,
            }
        }
        if !port_level {
            if let Some(n) = f.get(4) {
                let p = format!("{path}.portLevelSettings");
                if let Some(list) = self.list(n, &p) {
                    for (i, item) in list.iter().enumerate() {
                        ok &= self
                            .traffic_policy(item, &format!("{p}[{i}]"), PORT_TRAFFIC_POLICY)
                            .is_some();
                    }
                    if ok && !list.is_empty() {
                        self.ignored(
                            n,
                            &p,
                            "meshmeter applies a rule's policy to every port of the host",
                        );
                    }
                } else {
                    ok = false;
                }
            }
        }
        ok.then_some(policy)
    }

    fn port_selector(&mut self, node: &Node, path: &str) -> Option<Option<u16>> {
        let f = self.read(node, path, PORT_SELECTOR)?;
        if let Some(n) = f.get(1) {
            let what = self.what(&format!("{path}.name"));
            self.error(
                Code::Unsupported,
                n.span,
                format!("{what}: ports by name are not supported"),
            )
            .hint("name the port by its number: `port: {number: 27017}`");
            return None;
        }
        match f.get(0) {
            Some(n) => self.port(n, &format!("{path}.number")).map(Some),
            None => Some(None),
        }
    }

    /// `connectionPool`: its `tcp` part, `None` within when there is none.
    fn connection_pool(&mut self, node: &Node, path: &str) -> Option<Option<TcpPool>> {
        let f = self.read(node, path, CONNECTION_POOL)?;
        let mut ok = true;
        if let Some(h) = f.get(1) {
            let p = format!("{path}.http");
            match self.read(h, &p, HTTP_POOL) {
                Some(http) => {
                    for (i, name) in HTTP_POOL.iter().enumerate() {
                        if let Some(v) = http.get(i) {
                            let field = format!("{p}.{}", fields::camel(name));
                            ok &= if *name == "idle_timeout" {
                                self.duration(v, &field).is_some()
                            } else {
                                self.count(v, &field).is_some()
                            };
                        }
                    }
                }
                None => ok = false,
            }
        }
        let Some(t) = f.get(0) else {
            return ok.then_some(None);
        };
        let p = format!("{path}.tcp");
        let tcp = self.read(t, &p, TCP_POOL)?;
        let mut pool = TcpPool::default();
        if let Some(n) = tcp.get(0) {
            match self.count(n, &format!("{p}.maxConnections")) {
                Some(v) => pool.max_connections = Some(v),
                None => ok = false,
            }
        }
        if let Some(n) = tcp.get(1) {
            match self.duration(n, &format!("{p}.connectTimeout")) {
                Some(d) => pool.connect_timeout = Some(d),
                None => ok = false,
            }
        }
        if let Some(n) = tcp.get(2) {
            let k = format!("{p}.tcpKeepalive");
            match self.read(n, &k, KEEPALIVE) {
                Some(ka) => {
                    if let Some(v) = ka.get(0) {
                        ok &= self.count(v, &format!("{k}.probes")).is_some();
                    }
                    for (i, name) in [(1, "time"), (2, "interval")] {
                        if let Some(v) = ka.get(i) {
                            ok &= self.duration(v, &format!("{k}.{name}")).is_some();
                        }
                    }
                    if ok {
                        self.ignored(
                            n,
                            &k,
                            "meshmeter does not set TCP keepalive on upstream connections",
                        );
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(Some(pool))
    }

    fn outlier(&mut self, node: &Node, path: &str) -> Option<OutlierDetection> {
        let f = self.read(node, path, OUTLIER)?;
        let mut o = OutlierDetection::default();
        let mut ok = true;
        if let Some(n) = f.get(0) {
            let p = format!("{path}.consecutiveErrors");
            match self.count(n, &p) {
                Some(0) => {
                    let what = self.what(&p);
                    self.error(
                        Code::BadCount,
                        n.span,
                        format!("{what} must be at least 1, found 0"),
                    )
                    .hint("leave it out for the default, 5");
                    ok = false;
                }
                Some(v) => o.consecutive_errors = v,
                None => ok = false,
            }
        }
        if let Some(n) = f.get(1) {
            match self.duration(n, &format!("{path}.interval")) {
                Some(d) => o.interval = d,
                None => ok = false,
            }
        }
        if let Some(n) = f.get(2) {
            match self.duration(n, &format!("{path}.baseEjectionTime")) {
                Some(d) => o.base_ejection_time = d,
                None => ok = false,
            }
        }
        if let Some(n) = f.get(3) {
            match self.percent(n, &format!("{path}.maxEjectionPercent")) {
                Some(v) => o.max_ejection_percent = v,
                None => ok = false,
            }
        }
        if let Some(n) = f.get(4) {
            let p = format!("{path}.minHealthPercent");
            if self.percent(n, &p).is_some() {
                self.ignored(n, &p, "meshmeter ejects within maxEjectionPercent only");
            } else {
                ok = false;
            }
        }
        ok.then_some(o)
    }

    fn virtual_service(&mut self, meta: ObjectMeta, spec: &Node) -> Option<VirtualService> {
        let f = self.read(spec, "spec", VIRTUAL_SERVICE)?;
        let mut ok = true;
        let mut hosts = Vec::new();
        if let Some(n) = self.required(&f, 0, "spec.hosts", spec) {
            let list = self.list(n, "spec.hosts").unwrap_or_default();
            if list.is_empty() && n.value != Value::Invalid {
                let what = self.what("spec.hosts");
                self.error(Code::MissingField, n.span, format!("{what} is empty"))
                    .hint("name at least one host the routes apply to");
                ok = false;
            }
            for (i, h) in list.iter().enumerate() {
                match self.host(h, &format!("spec.hosts[{i}]")) {
                    Some(h) => hosts.push(h),
                    None => ok = false,
                }
            }
        } else {
            ok = false;
        }
        let gateways = self.texts(f.get(1), "spec.gateways");
        let mut ignored: Vec<(usize, &str)> = Vec::new();
        let mut first_ignored: Option<Span> = None;
        for (i, name) in [(2, "http"), (3, "tls")] {
            if let Some(n) = f.get(i) {
                match self.list(n, &format!("spec.{name}")) {
                    Some(routes) => {
                        ignored.push((routes.len(), name));
                        first_ignored.get_or_insert(f.key(i).map_or(n.span, |k| k.span));
                    }
                    None => ok = false,
                }
            }
        }
        let mut tcp = Vec::new();
        if let Some(n) = f.get(4) {
            if let Some(routes) = self.list(n, "spec.tcp") {
                for (i, r) in routes.iter().enumerate() {
                    match self.tcp_route(r, &format!("spec.tcp[{i}]")) {
                        Some(r) => tcp.push(r),
                        None => ok = false,
                    }
                }
            } else {
                ok = false;
            }
        }
        ok &= self.export_to(f.get(5));
        let counted: Vec<String> = ignored
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, name)| format!("{n} {name} route{}", if *n == 1 { "" } else { "s" }))
            .collect();
        if let (false, Some(at)) = (counted.is_empty(), first_ignored) {
            let message = format!(
                "{} of {} ignored: meshmeter routes TCP",
                counted.join(" and "),
                self.obj
            );
            self.error(Code::RoutesIgnored, at, message);
        }
        let http_routes = ignored
            .iter()
            .find(|(_, name)| *name == "http")
            .map_or(0, |(n, _)| *n);
        Some(VirtualService {
            meta,
            hosts,
            gateways,
            tcp,
            http_routes,
        })
        .filter(|_| ok)
    }

    fn tcp_route(&mut self, node: &Node, path: &str) -> Option<TcpRoute> {
        let f = self.read(node, path, TCP_ROUTE)?;
        let mut ok = true;
        let mut matches = Vec::new();
        if let Some(n) = f.get(0) {
            let p = format!("{path}.match");
            match self.list(n, &p) {
                Some(list) => {
                    for (i, m) in list.iter().enumerate() {
                        match self.l4_match(m, &format!("{p}[{i}]")) {
                            Some(m) => matches.push(m),
                            None => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        }
        let p = format!("{path}.route");
        let list = self
            .required(&f, 1, &p, node)
            .and_then(|n| Some((n, self.list(n, &p)?)));
        let (route_node, list) = list?;
        let route_at = f.key(1).map_or(route_node.span, |k| k.span);
        if list.is_empty() {
            let what = self.what(&p);
            self.error(
                Code::MissingField,
                route_at,
                format!("{what} has no destination"),
            )
            .hint("a route needs at least one `destination`");
            return None;
        }
        let mut route = Vec::new();
        let mut destinations_ok = true;
        for (i, d) in list.iter().enumerate() {
            match self.route_destination(d, &format!("{p}[{i}]")) {
                Some((destination, weight)) => route.push(WeightedDestination {
                    destination,
                    weight: weight.unwrap_or(0),
                }),
                None => destinations_ok = false,
            }
        }
        if !destinations_ok {
            return None;
        }
        if route.len() == 1 {
            route[0].weight = 100;
        } else {
            let sum: u32 = route.iter().map(|d| d.weight).sum();
            if sum != 100 {
                let what = self.what(&p);
                self.error(
                    Code::WeightSum,
                    route_at,
                    format!("the weights of {what} sum to {sum}, not 100"),
                )
                .hint("the weights of a route with several destinations are percentages adding up to 100");
                return None;
            }
        }
        if !ok {
            return None;
        }
        Some(TcpRoute { matches, route })
    }

    fn l4_match(&mut self, node: &Node, path: &str) -> Option<L4Match> {
        let f = self.read(node, path, L4_MATCH)?;
        let mut m = L4Match::default();
        let mut ok = true;
        if let Some(n) = f.get(0) {
            let p = format!("{path}.destinationSubnets");
            for (i, s) in self.list(n, &p).unwrap_or_default().iter().enumerate() {
                match self.subnet(s, &format!("{p}[{i}]")) {
                    Some(s) => m.destination_subnets.push(s),
                    None => ok = false,
                }
            }
        }
        if let Some(n) = f.get(1) {
            match self.port(n, &format!("{path}.port")) {
                Some(p) => m.port = Some(p),
                None => ok = false,
            }
        }
        if let Some(n) = f.get(2) {
            let p = format!("{path}.sourceSubnet");
            if self.subnet(n, &p).is_some() {
                self.ignored(
                    n,
                    &p,
                    "meshmeter matches TCP routes by port, source labels and destination subnets",
                );
            } else {
                ok = false;
            }
        }
        if let Some(n) = f.get(3) {
            match self.labels(n, &format!("{path}.sourceLabels")) {
                Some(l) => m.source_labels = l,
                None => ok = false,
            }
        }
        m.gateways = self.texts(f.get(4), &format!("{path}.gateways"));
        ok.then_some(m)
    }

    fn route_destination(&mut self, node: &Node, path: &str) -> Option<(Destination, Option<u32>)> {
        let f = self.read(node, path, ROUTE_DESTINATION)?;
        let p = format!("{path}.destination");
        let dest = self.required(&f, 0, &p, node);
        let weight = match f.get(1) {
            Some(w) => {
                let wp = format!("{path}.weight");
                let t = self.text(w, &wp)?;
                match t.trim().parse::<i64>() {
                    Ok(v) if (0..=100).contains(&v) => Some(u32::try_from(v).ok()?),
                    _ => {
                        let what = self.what(&wp);
                        self.error(
                            Code::BadWeight,
                            w.span,
                            format!("{what} must be a whole number from 0 to 100, found '{t}'"),
                        );
                        return None;
                    }
                }
            }
            None => None,
        };
        let dest = dest?;
        let d = self.read(dest, &p, DESTINATION)?;
        let host = self
            .required(&d, 0, &format!("{p}.host"), dest)
            .and_then(|n| self.host(n, &format!("{p}.host")));
        let subset = match d.get(1) {
            Some(n) => {
                let subset = self.text(n, &format!("{p}.subset"))?.to_owned();
                if let Some(host) = &host {
                    self.refs.push(SubsetRef {
                        host: host.clone(),
                        subset: subset.clone(),
                        what: self.what(&format!("{p}.subset")),
                        span: n.span,
                    });
                }
                Some(subset)
            }
            None => None,
        };
        let port = match d.get(2) {
            Some(n) => self.port_selector(n, &format!("{p}.port"))?,
            None => None,
        };
        Some((
            Destination {
                host: host?,
                subset,
                port,
            },
            weight,
        ))
    }

    fn peer_policy(
        &mut self,
        meta: ObjectMeta,
        kind: Kind,
        spec: &Node,
        name_span: Span,
    ) -> Option<PeerPolicy> {
        let f = self.read(spec, "spec", POLICY)?;
        let mut ok = true;
        let mut targets = Vec::new();
        if let Some(n) = f.get(0) {
            for (i, t) in self
                .list(n, "spec.targets")
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let p = format!("spec.targets[{i}]");
                let Some(tf) = self.read(t, &p, TARGET) else {
                    ok = false;
                    continue;
                };
                let name = self
                    .required(&tf, 0, &format!("{p}.name"), t)
                    .and_then(|n| self.text(n, &format!("{p}.name")));
                let mut ports = Vec::new();
                if let Some(ps) = tf.get(1) {
                    let pp = format!("{p}.ports");
                    for (j, port) in self.list(ps, &pp).unwrap_or_default().iter().enumerate() {
                        match self.port_selector(port, &format!("{pp}[{j}]")) {
                            Some(Some(n)) => ports.push(n),
                            Some(None) => {}
                            None => ok = false,
                        }
                    }
                }
                match name {
                    Some(name) => targets.push(PolicyTarget {
                        name: name.to_owned(),
                        ports,
                    }),
                    None => ok = false,
                }
            }
        }
        let mut mtls = None;
        if let Some(n) = f.get(1) {
            for (i, peer) in self
                .list(n, "spec.peers")
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let p = format!("spec.peers[{i}]");
                let Some(pf) = self.read(peer, &p, PEER) else {
                    ok = false;
                    continue;
                };
                if let Some(j) = pf.key(1) {
                    let what = self.what(&format!("{p}.jwt"));
                    self.error(
                        Code::Unsupported,
                        j.span,
                        format!("{what}: peers are authenticated by mutual TLS only"),
                    )
                    .hint("use `- mtls: {}`");
                    ok = false;
                }
                if pf.key(0).is_some() {
                    // `mtls:` with nothing after it is `mtls: {}`: STRICT.
                    let mode = match pf.get(0) {
                        None => Some(PeerMtlsMode::Strict),
                        Some(m) => self.mtls(m, &format!("{p}.mtls")),
                    };
                    match mode {
                        Some(mode) => {
                            mtls.get_or_insert(mode);
                        }
                        None => ok = false,
                    }
                }
            }
        }
        for (i, name) in [(2, "peerIsOptional"), (4, "originIsOptional")] {
            if let Some(n) = f.get(i) {
                let what = self.what(&format!("spec.{name}"));
                ok &= fields::boolean(n, &what, self.sink).is_some();
            }
        }
        if let Some(n) = f.get(3) {
            let list = self.list(n, "spec.origins").unwrap_or_default();
            if !list.is_empty() {
                self.ignored(
                    n,
                    "spec.origins",
                    "meshmeter carries TCP and authenticates peers only",
                );
            }
        }
        if let Some(n) = f.get(5) {
            let what = self.what("spec.principalBinding");
            ok &= fields::enumeration(n, &what, &PRINCIPAL_BINDING, self.sink).is_some();
        }
        ok &= self.policy_name(kind, &meta.name, !targets.is_empty(), name_span);
        ok.then_some(PeerPolicy {
            meta,
            mesh_wide: kind == Kind::MeshPolicy,
            targets,
            mtls,
        })
    }

    fn mtls(&mut self, node: &Node, path: &str) -> Option<PeerMtlsMode> {
        let f = self.read(node, path, MTLS)?;
        if let Some(n) = f.get(1) {
            let what = self.what(&format!("{path}.allowTls"));
            fields::boolean(n, &what, self.sink)?;
        }
        match f.get(0) {
            None => Some(PeerMtlsMode::Strict),
            Some(m) => {
                let what = self.what(&format!("{path}.mode"));
                let i = fields::enumeration(m, &what, &MTLS_MODES, self.sink)?;
                Some([PeerMtlsMode::Strict, PeerMtlsMode::Permissive][i])
            }
        }
    }

    /// Istio 1.1's naming rules for authentication policies: the mesh-wide one and a
    /// namespace's without targets are named `default`; one with targets is not.
    fn policy_name(&mut self, kind: Kind, name: &str, has_targets: bool, at: Span) -> bool {
        let problem = match (kind, has_targets) {
            (Kind::MeshPolicy, true) => Some("a MeshPolicy applies to the whole mesh and takes no targets"),
            (Kind::MeshPolicy, false) if name != "default" => {
                Some("a MeshPolicy must be named 'default'")
            }
            (_, false) if name != "default" => {
                Some("a Policy without targets applies to its whole namespace and must be named 'default'")
            }
            (Kind::Policy, true) if name == "default" => {
                Some("a Policy with targets must not be named 'default' (that name is the namespace-wide policy's)")
            }
            _ => None,
        };
        match problem {
            Some(p) => {
                let message = format!("{}: {p}", self.obj);
                self.error(Code::PolicyName, at, message);
                false
            }
            None => true,
        }
    }
}

/// Where a mapping's content starts, for "missing" problems: its first key (the position
/// YAML gives a block mapping itself is not one a reader would point at), or the mapping
/// (a flow mapping's `{`).
fn start(mapping: &Node) -> Span {
    match mapping.as_map() {
        Some([(key, _), ..])
            if mapping.span.line != key.span.line || mapping.span.col > key.span.col =>
        {
            key.span
        }
        _ => mapping.span,
    }
}

/// `addr` with the bits past `prefix` cleared.
fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}
