//! In-proxy telemetry: the configuration engine runs inside the proxy, so reports become
//! metrics without a telemetry server (the placement Istio reached later, with the
//! configuration model operators already have).
//!
//! It sits beside the proxy, not in it: `meshmeter-proxy` forwards bytes and hands
//! [`ConnectionReport`]s to any [`ReportSink`], knowing nothing of configuration, and the
//! binary wires a [`LocalTelemetry`] in as that sink (alone or beside the report queue).

#![warn(missing_docs)]

use std::sync::Arc;

use arc_swap::ArcSwap;
use meshmeter_engine::Engine;

use meshmeter_proxy::{ConnectionReport, MissingAttribute, ReportSchema, ReportSink};

/// A [`ReportSink`] that dispatches each report through an [`Engine`] on the spot.
///
/// Dispatch costs a few microseconds per report (a handful per connection), evaluates no
/// more than the configuration asks for, and never blocks: access-log lines go through the
/// stdio writer's bounded queue.
#[derive(Debug)]
pub struct LocalTelemetry {
    engine: Arc<Engine>,
    /// The schema for the manifest of the runtime generation in force.
    schema: ArcSwap<(u64, ReportSchema)>,
}

impl LocalTelemetry {
    /// Reports go to `engine`. Fails when its configuration's manifest lacks an attribute the
    /// proxy reports.
    pub fn new(engine: Arc<Engine>) -> Result<Self, MissingAttribute> {
        let runtime = engine.runtime();
        let schema = ReportSchema::new(&runtime.snapshot().manifest)?;
        Ok(LocalTelemetry {
            engine,
            schema: ArcSwap::from_pointee((runtime.generation(), schema)),
        })
    }
}

impl ReportSink for LocalTelemetry {
    fn submit(&self, report: ConnectionReport) {
        let runtime = self.engine.runtime();
        let mut cached = self.schema.load_full();
        if cached.0 != runtime.generation() {
            // A reload may have declared attributes and moved ids: re-resolve the schema.
            match ReportSchema::new(&runtime.snapshot().manifest) {
                Ok(schema) => {
                    cached = Arc::new((runtime.generation(), schema));
                    self.schema.store(Arc::clone(&cached));
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration in force cannot type the proxy's reports; report dropped");
                    return;
                }
            }
        }
        let table = self.engine.workloads().current();
        let mut bag = report.to_bag(&cached.1);
        self.engine.dispatch(&runtime, &table, &mut bag);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use meshmeter_attributes::Timestamp;
    use meshmeter_config::{load_str, LoadOptions};
    use meshmeter_engine::{EngineOptions, Workloads};
    use meshmeter_proxy::{ConnectionEvent, Deltas, Identity, ReporterKind};
    use meshmeter_selfmetrics::SelfMetrics;

    use super::*;

    const SEED: &str = include_str!("../../../examples/tcp-metrics.yaml");

    fn report(received: u64, sent: u64) -> ConnectionReport {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("test address");
        ConnectionReport {
            event: ConnectionEvent::Close,
            connection_id: Arc::from("t-1"),
            source: addr("10.0.0.1:40000"),
            destination: addr("10.0.0.2:27017"),
            time: Timestamp::now(),
            bytes: Deltas {
                received,
                sent,
                received_total: received,
                sent_total: sent,
            },
            duration: Some(meshmeter_attributes::Duration::from_std(
                Duration::from_secs(1),
            )),
            error: None,
            tls: None,
            routed: None,
            identity: Arc::new(Identity {
                namespace: Some("default".into()),
                labels: Identity::parse_labels("version=v1").expect("labels"),
                service_host: Some("mongodb.default.svc.cluster.local".into()),
                kind: ReporterKind::Inbound,
                ..Identity::default()
            }),
        }
    }

    #[test]
    fn reports_become_the_seeds_metrics() {
        let options = LoadOptions {
            include_defaults: false,
            ..LoadOptions::default()
        };
        let snapshot = load_str(&[("tcp-metrics.yaml", SEED)], &options).expect("seed config");
        let engine = Arc::new(
            Engine::new(
                Arc::new(snapshot),
                Workloads::none(),
                Arc::new(SelfMetrics::new()),
                EngineOptions::default(),
            )
            .expect("engine"),
        );
        let sink = LocalTelemetry::new(Arc::clone(&engine)).expect("schema");
        sink.submit(report(7, 11));
        sink.submit(report(5, 0));
        let mut out = String::new();
        engine.encode_metrics(&mut out);
        let line = |name: &str, value: u64| {
            format!("istio_{name}{{destination_version=\"v1\",source_service=\"unknown\",source_version=\"unknown\"}} {value}\n")
        };
        assert!(out.contains(&line("mongo_received_bytes", 12)), "{out}");
        assert!(out.contains(&line("mongo_sent_bytes", 11)), "{out}");
    }
}
