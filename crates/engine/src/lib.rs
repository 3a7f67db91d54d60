//! Report dispatch: the part of the telemetry server (and of the proxy's in-process telemetry)
//! that turns one report's attributes into metrics and log lines.
//!
//! For every bag the [`Engine`]:
//! 1. fills workload identity (`source.workload.name`, `destination.labels`, ...) from the
//!    workload registry, without replacing what the report carries;
//! 2. picks the rules in scope: those of the default configuration namespace, plus those of the
//!    report's identity namespace;
//! 3. evaluates each rule's `match`, and for each matching action builds the action's instances
//!    and hands them to the handler (a Prometheus metric, an access-log line);
//! 4. removes the identity attributes again, so that the next delta-encoded bag starts from
//!    exactly what the client sent.
//!
//! A failing expression makes its instance absent for that report, is counted per instance in
//! `meshmeter_dispatch_errors_total` and logged at most once a second per instance; it never
//! drops the other instances of the report.
//!
//! The compiled plan ([`Runtime`]) is immutable and swapped atomically when the configuration
//! changes ([`Engine::apply`]); metrics whose definition did not change keep their series.

#![warn(missing_docs)]

mod engine;
mod plan;
mod reload;
mod workloads;

pub use engine::{
    DispatchOutcome, Engine, EngineError, EngineOptions, DEFAULT_REMOVED_METRIC_GRACE,
};
pub use plan::Runtime;
pub use reload::spawn_reloader;
pub use workloads::{Current, RegistrySource, Workloads};
