//! In-proxy telemetry: the configuration engine runs inside the proxy, so reports become
//! metrics without a telemetry server (the placement Istio reached later, with the
//! configuration model operators already have).

use std::sync::Arc;

use arc_swap::ArcSwap;
use meshmeter_engine::Engine;

use crate::report::{ConnectionReport, ReportSchema, ReportSink};

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
    pub fn new(engine: Arc<Engine>) -> Result<Self, crate::MissingAttribute> {
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
