//! Validated settings of one listener.

use std::net::SocketAddr;
use std::time::Duration;

use crate::forward::ForwardOptions;

/// The shortest report interval accepted; Istio refused anything below it too.
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Settings that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A report interval below [`MIN_REPORT_INTERVAL`].
    #[error("report interval {given:?} is below the minimum of 1s (Istio required at least 1s between periodic TCP reports)")]
    ReportIntervalTooShort {
        /// The interval asked for.
        given: Duration,
    },
    /// A connection limit of zero would refuse every connection.
    #[error("the connection limit must be at least 1")]
    ZeroConnectionLimit,
}

/// How often a live connection reports (`continue`); at least one second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReportInterval(Duration);

impl ReportInterval {
    /// Istio's default: 10 s.
    pub const DEFAULT: ReportInterval = ReportInterval(Duration::from_secs(10));

    /// The interval `d`, refused below one second.
    pub fn new(d: Duration) -> Result<Self, ConfigError> {
        if d < MIN_REPORT_INTERVAL {
            return Err(ConfigError::ReportIntervalTooShort { given: d });
        }
        Ok(ReportInterval(d))
    }

    /// The length.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl Default for ReportInterval {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Where a listener's connections go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// Every connection to one address (explicit mode: `--listen`/`--upstream`).
    Fixed(SocketAddr),
    /// Each connection to the destination its client asked for before capture redirected
    /// it to the listener (`SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST`): the transparent
    /// sidecar. A connection that was not redirected, or whose original destination is one
    /// of this process's transparent listeners, is refused with a reset, never forwarded.
    OriginalDestination,
}

impl From<SocketAddr> for Upstream {
    fn from(addr: SocketAddr) -> Self {
        Upstream::Fixed(addr)
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Fixed(addr) => addr.fmt(f),
            Upstream::OriginalDestination => f.write_str("original destination"),
        }
    }
}

/// One listener and the upstream its connections go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Where downstream clients connect (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Where their bytes go.
    pub upstream: Upstream,
    /// How long connecting to the upstream may take before the client is closed (`UF`).
    pub connect_timeout: Duration,
    /// Close a connection after this long without a byte in either direction. Activity is
    /// checked once per period, so an idle connection closes between one and two periods
    /// after its last byte.
    pub idle_timeout: Option<Duration>,
    /// Close a half-closed connection (one direction ended with EOF) after this long without a
    /// byte in the other direction: a peer that sent its FIN and left must not be held for
    /// the whole idle timeout by an upstream that stalled. Checked like `idle_timeout`.
    pub half_close_timeout: Option<Duration>,
    /// The most connections forwarded at once; beyond it new ones are closed at once (`UO`).
    pub max_connections: usize,
    /// The kernel's queue of connections not yet accepted (capped by `net.core.somaxconn`).
    /// Bursts of connects beyond it are dropped or reset by the kernel before the proxy sees
    /// them.
    pub backlog: u32,
    /// The period of `continue` reports.
    pub report_interval: ReportInterval,
    /// Forwarder tunables.
    pub forward: ForwardOptions,
}

impl ListenerConfig {
    /// Defaults: 5 s connect timeout, a 1 h idle timeout, a 5 min half-close timeout, 16,384
    /// connections, a backlog of 4096, 10 s reports.
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> Self {
        Self::with_upstream(listen, Upstream::Fixed(upstream))
    }

    /// A transparent listener: each connection goes to its original destination. The same
    /// defaults as [`ListenerConfig::new`].
    pub fn transparent(listen: SocketAddr) -> Self {
        Self::with_upstream(listen, Upstream::OriginalDestination)
    }

    fn with_upstream(listen: SocketAddr, upstream: Upstream) -> Self {
        ListenerConfig {
            listen,
            upstream,
            connect_timeout: Duration::from_secs(5),
            // Long enough for idle database and message-queue connections, short enough that
            // connections whose peers left (a stalled upstream after the client's FIN) are freed.
            idle_timeout: Some(Duration::from_secs(3600)),
            half_close_timeout: Some(Duration::from_secs(300)),
            max_connections: 16_384,
            backlog: 4096,
            report_interval: ReportInterval::DEFAULT,
            forward: ForwardOptions::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_interval_floor() {
        assert_eq!(
            ReportInterval::new(Duration::from_millis(999)),
            Err(ConfigError::ReportIntervalTooShort {
                given: Duration::from_millis(999)
            })
        );
        assert_eq!(
            ReportInterval::new(Duration::from_secs(1)).map(ReportInterval::get),
            Ok(Duration::from_secs(1))
        );
        assert_eq!(ReportInterval::default().get(), Duration::from_secs(10));
    }
}
