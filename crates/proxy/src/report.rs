//! Connection reports: a compact record per event, turned into an attribute bag when it is
//! consumed.
//!
//! Reports are queued while the telemetry server is away, possibly 100,000 of them, so the
//! queued form is a small struct (about 170 bytes, one shared identity) rather than a
//! [`Bag`], whose dense slots for the whole vocabulary cost kilobytes each.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use meshmeter_attributes::{AttrId, Bag, Duration, Manifest, Timestamp, Value};

use crate::identity::{Identity, ReporterKind};
use crate::meter::Deltas;
use crate::route::RoutedDestination;
use crate::tls::TlsPeers;

/// `connection.event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionEvent {
    /// The connection was accepted.
    Open,
    /// A periodic report while it lives.
    Continue,
    /// It ended (the final report).
    Close,
}

impl ConnectionEvent {
    /// The attribute's text.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionEvent::Open => "open",
            ConnectionEvent::Continue => "continue",
            ConnectionEvent::Close => "close",
        }
    }
}

/// Why the proxy failed a connection, as Envoy's response flags name it
/// (`context.proxy_error_code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorFlag {
    /// `UF`: the upstream could not be connected (refused, unreachable, or timed out).
    UpstreamConnectFailure,
    /// `UO`: the connection limit was reached (the listener's, or the routed destination's);
    /// the connection was closed at once.
    UpstreamOverflow,
    /// `UH`: the routed destination has no healthy endpoint (none known, or all ejected).
    NoHealthyUpstream,
}

impl ErrorFlag {
    /// Envoy's flag text.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorFlag::UpstreamConnectFailure => "UF",
            ErrorFlag::UpstreamOverflow => "UO",
            ErrorFlag::NoHealthyUpstream => "UH",
        }
    }
}

/// One report about one connection.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionReport {
    /// Which event.
    pub event: ConnectionEvent,
    /// `connection.id`: unique per connection, shared by all its reports.
    pub connection_id: Arc<str>,
    /// The downstream peer (`source.ip`, `source.port`, `origin.ip`).
    pub source: SocketAddr,
    /// The address the peer connected to (`destination.ip`, `destination.port`).
    pub destination: SocketAddr,
    /// `context.time`: when the report was made.
    pub time: Timestamp,
    /// Bytes since the previous report and since the start.
    pub bytes: Deltas,
    /// `connection.duration`, on close only.
    pub duration: Option<Duration>,
    /// `context.proxy_error_code`, when the proxy failed the connection.
    pub error: Option<ErrorFlag>,
    /// The proxy's identity.
    pub identity: Arc<Identity>,
    /// The peers' identities when the connection is mutual TLS (`connection.mtls` true,
    /// `source.principal`, `destination.principal`); `None` for plaintext.
    pub tls: Option<Arc<TlsPeers>>,
    /// The routed destination's identity when a router chose the endpoint
    /// (`destination.service.*`, `destination.workload.*`, `destination.labels`); `None`
    /// otherwise.
    pub routed: Option<Arc<RoutedDestination>>,
}

/// Where connection reports go: the queue of the gRPC reporter, an in-proxy configuration
/// engine (`meshmeter-proxy-telemetry`), or a test recorder.
///
/// `submit` is called on the data path and must not block or fail: a sink that cannot keep
/// up drops and counts, it never pushes back.
pub trait ReportSink: Send + Sync + 'static {
    /// Takes one report.
    fn submit(&self, report: ConnectionReport);
}

impl<T: ReportSink + ?Sized> ReportSink for Arc<T> {
    fn submit(&self, report: ConnectionReport) {
        (**self).submit(report);
    }
}

/// Both sinks get every report (e.g. local metrics beside the telemetry server).
impl<A: ReportSink, B: ReportSink> ReportSink for (A, B) {
    fn submit(&self, report: ConnectionReport) {
        self.0.submit(report.clone());
        self.1.submit(report);
    }
}

/// A vocabulary name that the report schema needs but the manifest lacks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the manifest does not declare '{0}', which connection reports need")]
pub struct MissingAttribute(pub &'static str);

#[derive(Clone, Copy, Debug)]
struct PeerIds {
    uid: AttrId,
    name: AttrId,
    namespace: AttrId,
    workload_name: AttrId,
    workload_namespace: AttrId,
    labels: AttrId,
}

/// The attribute ids reports are written with, resolved once per manifest.
#[derive(Clone, Debug)]
pub struct ReportSchema {
    manifest: Manifest,
    protocol: AttrId,
    event: AttrId,
    id: AttrId,
    received: AttrId,
    sent: AttrId,
    received_total: AttrId,
    sent_total: AttrId,
    duration: AttrId,
    mtls: AttrId,
    source_principal: AttrId,
    destination_principal: AttrId,
    source_ip: AttrId,
    source_port: AttrId,
    origin_ip: AttrId,
    destination_ip: AttrId,
    destination_port: AttrId,
    service_host: AttrId,
    service_name: AttrId,
    service_namespace: AttrId,
    reporter_kind: AttrId,
    reporter_uid: AttrId,
    time: AttrId,
    error_code: AttrId,
    source: PeerIds,
    destination: PeerIds,
}

impl ReportSchema {
    /// The schema for `manifest`, which must declare Istio's TCP attributes and `source.port`.
    pub fn new(manifest: &Manifest) -> Result<Self, MissingAttribute> {
        let id = |name: &'static str| manifest.id(name).ok_or(MissingAttribute(name));
        let peer = |side: &'static str| -> Result<PeerIds, MissingAttribute> {
            let pick = |inbound: &'static str, outbound: &'static str| {
                id(if side == "destination" {
                    inbound
                } else {
                    outbound
                })
            };
            Ok(PeerIds {
                uid: pick("destination.uid", "source.uid")?,
                name: pick("destination.name", "source.name")?,
                namespace: pick("destination.namespace", "source.namespace")?,
                workload_name: pick("destination.workload.name", "source.workload.name")?,
                workload_namespace: pick(
                    "destination.workload.namespace",
                    "source.workload.namespace",
                )?,
                labels: pick("destination.labels", "source.labels")?,
            })
        };
        Ok(ReportSchema {
            manifest: manifest.clone(),
            protocol: id("context.protocol")?,
            event: id("connection.event")?,
            id: id("connection.id")?,
            received: id("connection.received.bytes")?,
            sent: id("connection.sent.bytes")?,
            received_total: id("connection.received.bytes_total")?,
            sent_total: id("connection.sent.bytes_total")?,
            duration: id("connection.duration")?,
            mtls: id("connection.mtls")?,
            source_principal: id("source.principal")?,
            destination_principal: id("destination.principal")?,
            source_ip: id("source.ip")?,
            source_port: id("source.port")?,
            origin_ip: id("origin.ip")?,
            destination_ip: id("destination.ip")?,
            destination_port: id("destination.port")?,
            service_host: id("destination.service.host")?,
            service_name: id("destination.service.name")?,
            service_namespace: id("destination.service.namespace")?,
            reporter_kind: id("context.reporter.kind")?,
            reporter_uid: id("context.reporter.uid")?,
            time: id("context.time")?,
            error_code: id("context.proxy_error_code")?,
            source: peer("source")?,
            destination: peer("destination")?,
        })
    }

    /// The schema for [`Manifest::istio`].
    pub fn istio() -> Self {
        Self::new(&Manifest::istio()).expect("Istio's vocabulary declares every TCP attribute")
    }

    /// The manifest the ids belong to.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

fn int<'a>(n: u64) -> Value<'a> {
    // Byte counts beyond i64::MAX (8 EiB) cannot happen; saturate rather than wrap if they do.
    Value::Int64(i64::try_from(n).unwrap_or(i64::MAX))
}

impl ConnectionReport {
    /// The report's attributes, as Istio's server-side proxy sent them. Text borrows from the
    /// report.
    pub fn to_bag<'a>(&'a self, schema: &ReportSchema) -> Bag<'a> {
        let s = schema;
        let mut bag: Bag<'a> = Bag::new(&s.manifest);
        bag.set(s.protocol, Value::from("tcp"));
        bag.set(s.event, Value::from(self.event.as_str()));
        bag.set(s.id, Value::String(Cow::Borrowed(&self.connection_id)));
        bag.set(s.received, int(self.bytes.received));
        bag.set(s.sent, int(self.bytes.sent));
        bag.set(s.received_total, int(self.bytes.received_total));
        bag.set(s.sent_total, int(self.bytes.sent_total));
        if let Some(d) = self.duration {
            bag.set(s.duration, Value::Duration(d));
        }
        bag.set(s.mtls, Value::Bool(self.tls.is_some()));
        if let Some(tls) = &self.tls {
            if let Some(p) = &tls.source_principal {
                bag.set(s.source_principal, Value::String(Cow::Borrowed(p)));
            }
            if let Some(p) = &tls.destination_principal {
                bag.set(s.destination_principal, Value::String(Cow::Borrowed(p)));
            }
        }
        bag.set(s.source_ip, Value::IpAddress(self.source.ip()));
        bag.set(s.source_port, Value::Int64(i64::from(self.source.port())));
        bag.set(s.origin_ip, Value::IpAddress(self.source.ip()));
        bag.set(s.destination_ip, Value::IpAddress(self.destination.ip()));
        bag.set(
            s.destination_port,
            Value::Int64(i64::from(self.destination.port())),
        );
        bag.set(s.time, Value::Timestamp(self.time));
        if let Some(flag) = self.error {
            bag.set(s.error_code, Value::from(flag.as_str()));
        }
        let who = &*self.identity;
        bag.set(s.reporter_kind, Value::from(who.kind.as_str()));
        let peer = match who.kind {
            ReporterKind::Inbound => &s.destination,
            ReporterKind::Outbound => &s.source,
        };
        let text = |v: &'a Option<String>| -> Option<Value<'a>> {
            v.as_deref().map(|t| Value::String(Cow::Borrowed(t)))
        };
        if let Some(uid) = text(&who.uid) {
            bag.set(s.reporter_uid, uid.clone());
            bag.set(peer.uid, uid);
        }
        if let Some(v) = text(&who.name) {
            bag.set(peer.name, v);
        }
        if let Some(v) = text(&who.namespace) {
            bag.set(peer.namespace, v.clone());
            bag.set(peer.workload_namespace, v);
        }
        if let Some(v) = text(&who.workload) {
            bag.set(peer.workload_name, v);
        }
        if !who.labels.is_empty() {
            // `Cow<StringMap>` is invariant in the map's lifetime, so the 'static map cannot be
            // lent as is; a map of borrowed entries copies no text.
            let labels = who.labels.iter().collect();
            bag.set(peer.labels, Value::StringMap(Cow::Owned(labels)));
        }
        if let Some(v) = text(&who.service_host) {
            bag.set(s.service_host, v);
        }
        if let Some(routed) = &self.routed {
            // What the router chose is the destination, whatever the flags said.
            let d = &s.destination;
            for (id, v) in [
                (s.service_host, &routed.service_host),
                (s.service_name, &routed.service_name),
                (s.service_namespace, &routed.service_namespace),
                (d.workload_name, &routed.workload_name),
                (d.workload_namespace, &routed.workload_namespace),
                (d.namespace, &routed.workload_namespace),
            ] {
                if let Some(v) = text(v) {
                    bag.set(id, v);
                }
            }
            if !routed.labels.is_empty() {
                let labels = routed.labels.iter().collect();
                bag.set(d.labels, Value::StringMap(Cow::Owned(labels)));
            }
        }
        bag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(kind: ReporterKind) -> ConnectionReport {
        ConnectionReport {
            event: ConnectionEvent::Close,
            connection_id: Arc::from("p-7"),
            source: "10.0.0.1:50000".parse().unwrap(),
            destination: "10.0.0.2:27017".parse().unwrap(),
            time: Timestamp::new(1_700_000_000, 0),
            bytes: Deltas {
                received: 1,
                sent: 2,
                received_total: 3,
                sent_total: 4,
            },
            duration: Some(Duration::from_secs(5)),
            error: Some(ErrorFlag::UpstreamConnectFailure),
            identity: Arc::new(Identity {
                uid: Some("kubernetes://mongodb-v1.default".into()),
                namespace: Some("default".into()),
                labels: Identity::parse_labels("version=v1").unwrap(),
                service_host: Some("mongodb.default.svc.cluster.local".into()),
                kind,
                ..Identity::default()
            }),
            tls: None,
            routed: None,
        }
    }

    fn text_of(bag: &Bag<'_>, m: &Manifest, name: &str) -> String {
        bag.get(m.id(name).unwrap())
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    #[test]
    fn inbound_bag() {
        let schema = ReportSchema::istio();
        let m = schema.manifest().clone();
        let r = report(ReporterKind::Inbound);
        let bag = r.to_bag(&schema);
        let expect = [
            ("context.protocol", "tcp"),
            ("connection.event", "close"),
            ("connection.id", "p-7"),
            ("connection.received.bytes", "1"),
            ("connection.sent.bytes", "2"),
            ("connection.received.bytes_total", "3"),
            ("connection.sent.bytes_total", "4"),
            ("connection.duration", "5s"),
            ("connection.mtls", "false"),
            ("source.ip", "10.0.0.1"),
            ("source.port", "50000"),
            ("origin.ip", "10.0.0.1"),
            ("destination.ip", "10.0.0.2"),
            ("destination.port", "27017"),
            ("context.time", "2023-11-14T22:13:20Z"),
            ("context.proxy_error_code", "UF"),
            ("context.reporter.kind", "inbound"),
            ("context.reporter.uid", "kubernetes://mongodb-v1.default"),
            ("destination.uid", "kubernetes://mongodb-v1.default"),
            ("destination.namespace", "default"),
            ("destination.workload.namespace", "default"),
            ("destination.labels", "version=v1"),
            (
                "destination.service.host",
                "mongodb.default.svc.cluster.local",
            ),
        ];
        for (name, value) in expect {
            assert_eq!(text_of(&bag, &m, name), value, "{name}");
        }
        assert_eq!(bag.len(), expect.len());
    }

    #[test]
    fn outbound_identity_is_the_source() {
        let schema = ReportSchema::istio();
        let m = schema.manifest().clone();
        let r = report(ReporterKind::Outbound);
        let bag = r.to_bag(&schema);
        assert_eq!(
            text_of(&bag, &m, "source.uid"),
            "kubernetes://mongodb-v1.default"
        );
        assert_eq!(text_of(&bag, &m, "source.labels"), "version=v1");
        assert_eq!(text_of(&bag, &m, "destination.uid"), "");
        assert_eq!(text_of(&bag, &m, "context.reporter.kind"), "outbound");
    }

    #[test]
    fn routed_destination_fills_the_destination() {
        let schema = ReportSchema::istio();
        let m = schema.manifest().clone();
        let mut r = report(ReporterKind::Outbound);
        r.error = Some(ErrorFlag::NoHealthyUpstream);
        r.routed = Some(Arc::new(RoutedDestination {
            service_host: Some("ratings.default.svc.cluster.local".into()),
            service_name: Some("ratings".into()),
            service_namespace: Some("default".into()),
            workload_name: Some("ratings-v2".into()),
            workload_namespace: Some("prod".into()),
            labels: Identity::parse_labels("app=ratings,version=v2").unwrap(),
        }));
        let bag = r.to_bag(&schema);
        let expect = [
            (
                "destination.service.host",
                "ratings.default.svc.cluster.local",
            ),
            ("destination.service.name", "ratings"),
            ("destination.service.namespace", "default"),
            ("destination.workload.name", "ratings-v2"),
            ("destination.workload.namespace", "prod"),
            ("destination.namespace", "prod"),
            ("destination.labels", "app=ratings&version=v2"),
            ("source.labels", "version=v1"),
            ("context.proxy_error_code", "UH"),
        ];
        for (name, value) in expect {
            assert_eq!(text_of(&bag, &m, name), value, "{name}");
        }
    }

    #[test]
    fn missing_attribute() {
        assert_eq!(
            ReportSchema::new(&Manifest::new()).err(),
            Some(MissingAttribute("context.protocol"))
        );
    }
}
