//! The proxy's own counters, rendered in Prometheus' text format (`meshmeter_proxy_*`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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

impl ProxyStats {
    /// Appends the metrics in Prometheus' text exposition format (version 0.0.4).
    pub fn render_prometheus(&self, out: &mut String) {
        let rows: [(&str, &str, &str, u64); 11] = [
            ("connections_accepted_total", "counter", "Downstream connections accepted.", get(&self.connections_accepted)),
            ("connections_active", "gauge", "Connections being forwarded.", get(&self.connections_active)),
            ("connections_overflow_total", "counter", "Connections closed at once because the connection limit was reached (UO).", get(&self.connections_overflow)),
            ("upstream_connect_failures_total", "counter", "Connections whose upstream could not be connected (UF).", get(&self.upstream_connect_failures)),
            ("received_bytes_total", "counter", "Bytes forwarded from clients to upstreams, as of each connection's latest report.", get(&self.received_bytes)),
            ("sent_bytes_total", "counter", "Bytes forwarded from upstreams to clients, as of each connection's latest report.", get(&self.sent_bytes)),
            ("report_queue_depth", "gauge", "Reports waiting to be sent.", get(&self.reports_queued)),
            ("reports_sent_total", "counter", "Reports delivered to the telemetry server.", get(&self.reports_sent)),
            ("report_requests_failed_total", "counter", "Report requests that failed; each retry counts.", get(&self.report_requests_failed)),
            ("reports_dropped_total", "counter", "Reports lost: dropped from a full queue, rejected by the server, over its message limit, or undelivered at shutdown.", get(&self.reports_dropped)),
            ("reports_too_large_total", "counter", "Reports dropped because one alone is over the telemetry server's message limit (also in reports_dropped_total).", get(&self.reports_too_large)),
        ];
        for (name, kind, help, value) in rows {
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "# HELP meshmeter_proxy_{name} {help}\n# TYPE meshmeter_proxy_{name} {kind}\nmeshmeter_proxy_{name} {value}\n"
            );
        }
        self.tls.render(out);
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
        // 11 counters of 3 lines; mTLS: 4 + 3 + 2 + 2 x 7 reasons.
        assert_eq!(out.lines().count(), 33 + 4 + 3 + 16);
        assert!(out.contains(
            "# TYPE meshmeter_proxy_reports_dropped_total counter\nmeshmeter_proxy_reports_dropped_total 3\n"
        ));
        assert!(out.contains("\nmeshmeter_proxy_connections_active 0\n"));
    }
}
