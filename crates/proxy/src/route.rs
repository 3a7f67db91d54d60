//! Per-connection routing: a [`Router`] the listener asks, for each new connection, where it
//! goes (the original destination, one endpoint of a service, or nowhere: `UO` / `UH`).
//!
//! The proxy knows no routing configuration: the binary adapts the control plane's router
//! (`meshmeter-routing`) to this trait, the way it wires report sinks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_attributes::StringMap;
use meshmeter_certs::rustls::ClientConfig;

/// Decides where each new connection of a listener goes.
///
/// `route` runs on the accept path of every connection: it must be quick and must not block.
pub trait Router: Send + Sync + 'static {
    /// Where a connection addressed to `original` goes: for a transparent listener the
    /// address the client asked for before capture redirected it, for an explicit listener
    /// its fixed upstream.
    fn route(&self, original: SocketAddr) -> Decision;
}

impl<T: Router + ?Sized> Router for Arc<T> {
    fn route(&self, original: SocketAddr) -> Decision {
        (**self).route(original)
    }
}

/// What a [`Router`] decided for one connection.
pub enum Decision {
    /// Not a routed destination: forward to `original` as if there were no router, with the
    /// listener's own TLS settings.
    Passthrough,
    /// Forward to one endpoint.
    Forward(Forward),
    /// The destination's connection limit is reached: the connection is closed at once and
    /// reported with `UO`, as the listener's own limit does.
    Overflow(Option<Arc<RoutedDestination>>),
    /// The destination has no endpoint to send to (none known, or all ejected): the
    /// connection is closed (reset in transparent mode) and reported with `UH`.
    NoEndpoint(Option<Arc<RoutedDestination>>),
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Passthrough => f.write_str("Passthrough"),
            Decision::Forward(fw) => f.debug_tuple("Forward").field(fw).finish(),
            Decision::Overflow(d) => f.debug_tuple("Overflow").field(d).finish(),
            Decision::NoEndpoint(d) => f.debug_tuple("NoEndpoint").field(d).finish(),
        }
    }
}

/// A connection routed to one endpoint.
pub struct Forward {
    /// The endpoint to connect to; reported as `destination.ip` and `destination.port`.
    pub endpoint: SocketAddr,
    /// How long connecting may take; `None`: the listener's connect timeout.
    pub connect_timeout: Option<Duration>,
    /// TLS towards the endpoint (replaces the listener's own upstream TLS setting).
    pub tls: UpstreamTls,
    /// Who the endpoint is, for the connection's reports.
    pub destination: Arc<RoutedDestination>,
    /// Told how connecting went; dropped when the connection ends, which releases whatever
    /// it holds (a connection slot of the destination, a least-connections count).
    pub guard: Box<dyn ConnectOutcome>,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("endpoint", &self.endpoint)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

/// How a routed connection reaches its endpoint.
#[derive(Clone)]
pub enum UpstreamTls {
    /// Plaintext.
    Plain,
    /// Mutual TLS with this configuration (the workload certificate as client certificate,
    /// the endpoint's identity checked by its verifier).
    Mutual(Arc<ClientConfig>),
    /// Mutual TLS was asked for but this proxy has no workload certificate: the connection
    /// is not attempted and ends as an upstream failure (`UF`), never sent in plaintext.
    MutualUnavailable,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpstreamTls::Plain => "Plain",
            UpstreamTls::Mutual(_) => "Mutual",
            UpstreamTls::MutualUnavailable => "MutualUnavailable",
        })
    }
}

/// Feedback from a routed connection to its router (outlier detection). Dropping it ends the
/// connection's hold on its destination.
pub trait ConnectOutcome: Send + Sync + 'static {
    /// The endpoint was connected (TCP, and the TLS handshake when originating mTLS).
    fn connected(&self);
    /// Connecting failed: refused, unreachable, timed out, or the TLS handshake failed.
    fn connect_failed(&self);
}

/// A guard that reports nowhere.
impl ConnectOutcome for () {
    fn connected(&self) {}
    fn connect_failed(&self) {}
}

/// The identity of a routed destination as the proxy knows it, filled into the reports of
/// the connection (the telemetry server fills only what a report lacks, so these win over
/// what it would find from the address). Absent fields are not reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutedDestination {
    /// `destination.service.host` (`mongodb.default.svc.cluster.local`).
    pub service_host: Option<String>,
    /// `destination.service.name`.
    pub service_name: Option<String>,
    /// `destination.service.namespace`.
    pub service_namespace: Option<String>,
    /// `destination.workload.name`.
    pub workload_name: Option<String>,
    /// `destination.workload.namespace` and `destination.namespace`.
    pub workload_namespace: Option<String>,
    /// `destination.labels` (the endpoint's labels, `version` among them); empty: not
    /// reported.
    pub labels: StringMap<'static>,
}
