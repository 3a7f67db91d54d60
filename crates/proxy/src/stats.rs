//! The proxy's own counters (`meshmeter_proxy_*`): plain atomics on the forwarding path,
//! read into a [`Snapshot`] and rendered by `prometheus-client` when scraped.

use std::sync::atomic::{AtomicU64, Ordering};

use meshmeter_selfmetrics::Snapshot;

/// Self metrics of one proxy process, shared by its listeners and its reporter.
///
/// Plain relaxed atomics: each is an independent counter, and a scrape needs no consistent
/// snapshot across them.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Downstream connections accepted (including those refused by the limit).
    pub connections_accepted: AtomicU64,
    /// Connections being forwarded now.
    pub connections_active: AtomicU64,
    /// Connections closed at once because the connection limit was reached (`UO`).
    pub connections_overflow: AtomicU64,
    /// Connections whose upstream could not be connected (`UF`).
    pub upstream_connect_failures: AtomicU64,
    /// Connections closed because their routed destination had no healthy endpoint (`UH`).
    pub no_healthy_upstream: AtomicU64,
    /// Connections a transparent listener refused because nothing redirected them there
    /// (no original destination).
    pub not_redirected: AtomicU64,
    /// Connections a transparent listener refused because their original destination is one
    /// of the proxy's own listeners (a loop).
    pub loops_refused: AtomicU64,
    /// Bytes forwarded from clients to upstreams (added at each report).
    pub received_bytes: AtomicU64,
    /// Bytes forwarded from upstreams to clients (added at each report).
    pub sent_bytes: AtomicU64,
    /// Reports waiting in the queue.
    pub reports_queued: AtomicU64,
    /// Reports delivered to the telemetry server.
    pub reports_sent: AtomicU64,
    /// Report requests that failed (each retry counts).
    pub report_requests_failed: AtomicU64,
    /// Reports dropped because the queue was full (or undelivered at the shutdown deadline,
    /// or rejected by the server).
    pub reports_dropped: AtomicU64,
    /// Reports dropped because one alone is over the telemetry server's message limit (also
    /// counted in `reports_dropped`).
    pub reports_too_large: AtomicU64,
    /// Mutual TLS counters.
    pub tls: crate::tls::TlsStats,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl ProxyStats {
    /// Appends the metrics in Prometheus' text exposition format (version 0.0.4).
    pub fn render_prometheus(&self, out: &mut String) {
        use Kind::{Counter, Gauge};
        let rows: [(&str, Kind, &str, &AtomicU64); 14] = [
            ("connections_accepted_total", Counter, "Downstream connections accepted.", &self.connections_accepted),
            ("connections_active", Gauge, "Connections being forwarded.", &self.connections_active),
            ("connections_overflow_total", Counter, "Connections closed at once because the connection limit was reached (UO).", &self.connections_overflow),
            ("upstream_connect_failures_total", Counter, "Connections whose upstream could not be connected (UF).", &self.upstream_connect_failures),
            ("no_healthy_upstream_total", Counter, "Connections closed because their routed destination had no healthy endpoint (UH).", &self.no_healthy_upstream),
            ("not_redirected_total", Counter, "Connections a transparent listener refused (reset) because nothing redirected them there.", &self.not_redirected),
            ("loops_refused_total", Counter, "Connections a transparent listener refused (reset) because their original destination is the proxy's own listener.", &self.loops_refused),
            ("received_bytes_total", Counter, "Bytes forwarded from clients to upstreams, as of each connection's latest report.", &self.received_bytes),
            ("sent_bytes_total", Counter, "Bytes forwarded from upstreams to clients, as of each connection's latest report.", &self.sent_bytes),
            ("report_queue_depth", Gauge, "Reports waiting to be sent.", &self.reports_queued),
            ("reports_sent_total", Counter, "Reports delivered to the telemetry server.", &self.reports_sent),
            ("report_requests_failed_total", Counter, "Report requests that failed; each retry counts.", &self.report_requests_failed),
            ("reports_dropped_total", Counter, "Reports lost: dropped from a full queue, rejected by the server, over its message limit, or undelivered at shutdown.", &self.reports_dropped),
            ("reports_too_large_total", Counter, "Reports dropped because one alone is over the telemetry server's message limit (also in reports_dropped_total).", &self.reports_too_large),
        ];
        let mut snapshot = Snapshot::new();
        for (name, kind, help, value) in rows {
            let name = format!("meshmeter_proxy_{name}");
            match kind {
                Counter => snapshot.counter(&name, help, &[], get(value)),
                Gauge => {
                    let level = i64::try_from(get(value)).unwrap_or(i64::MAX);
                    snapshot.gauge(&name, help, &[], level)
                }
            }
        }
        self.tls.record(&mut snapshot);
        snapshot.encode(out);
    }
}

/// The proxy's subscription to a control plane (`--control-plane`), for its `/metrics`: a
/// snapshot the binary takes from its control plane client at each scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlPlaneState {
    /// Whether the stream to the control plane is open.
    pub connected: bool,
    /// The version of the last view update applied (0: none yet).
    pub view_version: u64,
    /// View updates applied.
    pub updates_applied: u64,
    /// View updates refused (the last view stays in force).
    pub updates_refused: u64,
    /// Streams opened to the control plane.
    pub connects: u64,
}

impl ControlPlaneState {
    /// Appends the metrics in Prometheus' text exposition format.
    pub fn render_prometheus(&self, out: &mut String) {
        let mut snapshot = Snapshot::new();
        snapshot.gauge(
            "meshmeter_proxy_control_plane_connected",
            "Whether the stream to the control plane is open (1) or not (0).",
            &[],
            i64::from(self.connected),
        );
        snapshot.gauge(
            "meshmeter_proxy_view_version",
            "The version of the last view update applied (0: none yet).",
            &[],
            i64::try_from(self.view_version).unwrap_or(i64::MAX),
        );
        let name = "meshmeter_proxy_view_updates_total";
        let help = "View updates from the control plane, applied or refused (a refused one leaves the last view in force).";
        snapshot.counter(name, help, &[("result", "applied")], self.updates_applied);
        snapshot.counter(name, help, &[("result", "refused")], self.updates_refused);
        snapshot.counter(
            "meshmeter_proxy_control_plane_connects_total",
            "Streams opened to the control plane.",
            &[],
            self.connects,
        );
        snapshot.encode(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric() {
        let stats = ProxyStats::default();
        stats.reports_dropped.store(3, Ordering::Relaxed);
        let mut out = String::new();
        stats.render_prometheus(&mut out);
        // 14 metrics of 3 lines; mTLS: 4 + 3 + 2 + 2 x 7 reasons.
        assert_eq!(out.lines().count(), 42 + 4 + 3 + 16);
        assert!(out.contains(
            "# TYPE meshmeter_proxy_reports_dropped_total counter\nmeshmeter_proxy_reports_dropped_total 3\n"
        ));
        assert!(out.contains("\nmeshmeter_proxy_connections_active 0\n"));
    }

    #[test]
    fn control_plane_state() {
        let state = ControlPlaneState {
            connected: true,
            view_version: 42,
            updates_applied: 3,
            updates_refused: 1,
            connects: 2,
        };
        let mut out = String::new();
        state.render_prometheus(&mut out);
        for line in [
            "meshmeter_proxy_control_plane_connected 1",
            "meshmeter_proxy_view_version 42",
            "meshmeter_proxy_view_updates_total{result=\"applied\"} 3",
            "meshmeter_proxy_view_updates_total{result=\"refused\"} 1",
            "meshmeter_proxy_control_plane_connects_total 2",
        ] {
            assert!(out.lines().any(|l| l == line), "{line}\n{out}");
        }
    }
}
