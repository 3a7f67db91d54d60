use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use meshmeter_attributes::{Bag, Timestamp, Value};
use meshmeter_config::{InstanceParams, LogLevel, LogStream, Snapshot, StdioParams};
use meshmeter_prometheus::{metric_value, SpecError};
use meshmeter_selfmetrics::{Counter, SelfMetrics};
use meshmeter_stdio::{Level, Output, StdioCounts, StdioError, StdioOptions, StdioWriter};
use meshmeter_workloads::WorkloadRegistry;
use smallvec::SmallVec;

use crate::plan::{Runtime, Step};
use crate::workloads::Workloads;

/// Why a configuration cannot be put in force.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The Prometheus metrics cannot be built (the configuration's validation should have
    /// caught this).
    #[error("cannot build the Prometheus metrics: {0}")]
    Metrics(#[source] SpecError),
    /// An access-log destination cannot be opened.
    #[error(transparent)]
    Stdio(#[from] StdioError),
}

/// Engine settings that are not part of the Istio configuration.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// The most series a metric keeps (the cardinality guard).
    pub series_limit: usize,
    /// Where every stdio handler writes, overriding its own `log_stream` (the demo sends the
    /// access log to a file so that it does not drown its display).
    pub log_output: Option<Output>,
    /// How long a metric a reload removed keeps its series (held, not exposed), so that
    /// restoring it continues its counters; zero drops it at once.
    pub removed_metric_grace: Duration,
}

/// The default [`EngineOptions::removed_metric_grace`]: five minutes.
pub const DEFAULT_REMOVED_METRIC_GRACE: Duration = Duration::from_secs(300);

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            series_limit: meshmeter_prometheus::DEFAULT_SERIES_LIMIT,
            log_output: None,
            removed_metric_grace: DEFAULT_REMOVED_METRIC_GRACE,
        }
    }
}

/// What one dispatch did, for tests and self-telemetry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchOutcome {
    /// Rules whose `match` held.
    pub rules_matched: u32,
    /// Instances built and handed to a handler.
    pub instances: u32,
    /// Instances not produced (an expression failed) and matches that failed.
    pub errors: u32,
}

/// Open log writers, shared across reloads so that a reload does not reopen files.
#[derive(Debug, Default)]
pub(crate) struct Writers {
    open: Mutex<Vec<(Output, Arc<StdioWriter>)>>,
    override_output: Option<Output>,
    /// Where each writer's drops and write errors are exported.
    self_metrics: Arc<SelfMetrics>,
}

impl Writers {
    pub(crate) fn get(&self, params: &StdioParams) -> Result<Arc<StdioWriter>, EngineError> {
        let output = self
            .override_output
            .clone()
            .unwrap_or_else(|| match params.log_stream {
                LogStream::Stdout => Output::Stdout,
                LogStream::Stderr => Output::Stderr,
                LogStream::File | LogStream::RotatedFile => {
                    Output::File(params.output_path.clone().into())
                }
            });
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, w)) = open.iter().find(|(o, _)| *o == output) {
            return Ok(Arc::clone(w));
        }
        let mut options = StdioOptions::default();
        if !params.severity_levels.is_empty() {
            options.severity_levels = params
                .severity_levels
                .iter()
                .map(|(s, l)| (s.clone(), level(*l)))
                .collect();
        }
        options.counts = self.counts(&output);
        let writer = Arc::new(StdioWriter::open(&output, options)?);
        open.push((output, Arc::clone(&writer)));
        Ok(writer)
    }

    /// The loss counters of the writer to `output`, labelled with where it writes.
    fn counts(&self, output: &Output) -> StdioCounts {
        let path;
        let label = match output {
            Output::Stdout => "stdout",
            Output::Stderr => "stderr",
            Output::File(p) => {
                path = p.display().to_string();
                path.as_str()
            }
        };
        StdioCounts {
            dropped: self.self_metrics.counter(
                "meshmeter_access_log_dropped_lines_total",
                "Access-log lines dropped because the writer's queue was full.",
                &[("output", label)],
            ),
            write_errors: self.self_metrics.counter(
                "meshmeter_access_log_write_errors_total",
                "Access-log writes and flushes the output refused.",
                &[("output", label)],
            ),
        }
    }

    fn flush(&self) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for (_, w) in open.iter() {
            w.flush();
        }
    }
}

fn level(l: LogLevel) -> Level {
    match l {
        LogLevel::Info => Level::Info,
        LogLevel::Warning => Level::Warn,
        LogLevel::Error => Level::Error,
    }
}

/// Dispatches reports through the configuration in force.
#[derive(Debug)]
pub struct Engine {
    runtime: ArcSwap<Runtime>,
    workloads: Workloads,
    self_metrics: Arc<SelfMetrics>,
    options: EngineOptions,
    writers: Writers,
    bags: Counter,
    reload_lock: Mutex<()>,
}

impl Engine {
    /// An engine running `snapshot` (generation 1).
    pub fn new(
        snapshot: Arc<Snapshot>,
        workloads: Workloads,
        self_metrics: Arc<SelfMetrics>,
        options: EngineOptions,
    ) -> Result<Self, EngineError> {
        let writers = Writers {
            open: Mutex::default(),
            override_output: options.log_output.clone(),
            self_metrics: Arc::clone(&self_metrics),
        };
        let runtime = Runtime::build(snapshot, 1, None, &options, &self_metrics, &writers)?;
        let bags = self_metrics.counter(
            "meshmeter_bags_dispatched_total",
            "Attribute bags run through the configuration.",
            &[],
        );
        Ok(Engine {
            runtime: ArcSwap::from_pointee(runtime),
            workloads,
            self_metrics,
            options,
            writers,
            bags,
            reload_lock: Mutex::new(()),
        })
    }

    /// Puts `snapshot` in force as `generation`. Metrics whose definition is unchanged keep
    /// their series; reports in flight finish on the runtime they started with.
    pub fn apply(&self, snapshot: Arc<Snapshot>, generation: u64) -> Result<(), EngineError> {
        let _serial = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.runtime.load_full();
        let runtime = Runtime::build(
            snapshot,
            generation,
            Some(&previous),
            &self.options,
            &self.self_metrics,
            &self.writers,
        )?;
        self.runtime.store(Arc::new(runtime));
        Ok(())
    }

    /// The runtime in force. Load it once per request and dispatch every bag of the request
    /// with it.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The workload registry.
    pub fn workloads(&self) -> &Workloads {
        &self.workloads
    }

    /// The self metrics registry the engine counts into.
    pub fn self_metrics(&self) -> &Arc<SelfMetrics> {
        &self.self_metrics
    }

    /// Writes the configured metrics in the Prometheus text format.
    pub fn encode_metrics(&self, out: &mut String) {
        self.runtime.load().prometheus.encode(out);
    }

    /// Removes series idle beyond their metric's expiry; returns how many.
    pub fn sweep(&self) -> usize {
        self.runtime.load().prometheus.sweep()
    }

    /// Waits until every access-log line written so far is out.
    pub fn flush_logs(&self) {
        self.writers.flush();
    }

    /// Dispatches one bag that the caller holds (the proxy's in-process telemetry, tests).
    pub fn dispatch_bag(&self, bag: &Bag<'_>) -> DispatchOutcome {
        let runtime = self.runtime();
        let table = self.workloads.current();
        // A view that borrows from `bag` and may also borrow identity from `table` (values
        // are invariant over their lifetime, so the caller's bag cannot be enriched in place).
        let mut view = Bag::with_slots(runtime.snapshot.manifest.len());
        for (id, value) in bag.iter() {
            view.set(id, value.borrowed());
        }
        self.dispatch(&runtime, &table, &mut view)
    }

    /// Dispatches one bag with `runtime`, identity from `table`. The bag is left as it came
    /// (identity attributes are added for the dispatch and removed after it), so a decoder
    /// can apply the next delta-encoded bag to it.
    pub fn dispatch<'a>(
        &self,
        runtime: &Runtime,
        table: &'a dyn WorkloadRegistry,
        bag: &mut Bag<'a>,
    ) -> DispatchOutcome {
        self.bags.inc();
        let mark = bag.mark();
        runtime.enricher.enrich(bag, table);
        let outcome = run_rules(runtime, bag);
        bag.rollback(mark);
        outcome
    }
}

fn run_rules(runtime: &Runtime, bag: &Bag<'_>) -> DispatchOutcome {
    let snapshot = &runtime.snapshot;
    let mut outcome = DispatchOutcome::default();
    for index in snapshot.rules_for(snapshot.identity_namespace(bag)) {
        let rule = &snapshot.rules[index];
        if let Some(condition) = &rule.match_ {
            match condition.eval(bag) {
                Ok(Value::Bool(true)) => {}
                Ok(_) => continue,
                Err(e) => {
                    outcome.errors += 1;
                    let counter = &runtime.match_errors[index];
                    if counter.hit() {
                        tracing::warn!(rule = %counter.name, error = %e, "match failed; rule skipped for this report (logged at most once a second)");
                    }
                    continue;
                }
            }
        }
        outcome.rules_matched += 1;
        for step in &runtime.rules[index] {
            let (instance, result) = match step {
                Step::Metrics { instance, targets } => {
                    (*instance, record_metric(snapshot, *instance, targets, bag))
                }
                Step::Log {
                    instance,
                    writer,
                    name,
                } => (*instance, write_log(snapshot, *instance, writer, name, bag)),
            };
            match result {
                Ok(()) => outcome.instances += 1,
                Err(e) => {
                    outcome.errors += 1;
                    let counter = &runtime.instance_errors[instance];
                    if counter.hit() {
                        tracing::warn!(instance = %counter.name, error = %e, "instance not produced (logged at most once a second)");
                    }
                }
            }
        }
    }
    outcome
}

/// Why one instance was not produced. Only the text reaches the log.
#[derive(Debug, thiserror::Error)]
enum InstanceError {
    #[error("{field}: {source}")]
    Eval {
        field: String,
        #[source]
        source: meshmeter_expr::EvalError,
    },
    #[error("value: {0}")]
    Value(#[from] meshmeter_prometheus::ValueError),
    #[error("{0}")]
    Record(#[from] meshmeter_prometheus::RecordError),
}

fn eval_field<'s>(
    expr: &'s meshmeter_expr::Expression,
    bag: &'s Bag<'_>,
    field: &str,
) -> Result<Value<'s>, InstanceError> {
    expr.eval(bag).map_err(|source| InstanceError::Eval {
        field: field.to_owned(),
        source,
    })
}

fn record_metric(
    snapshot: &Snapshot,
    instance: usize,
    targets: &[crate::plan::MetricTarget],
    bag: &Bag<'_>,
) -> Result<(), InstanceError> {
    let InstanceParams::Metric(metric) = &snapshot.instances[instance].params else {
        return Ok(());
    };
    let value = metric_value(&eval_field(&metric.value, bag, "value")?)?;
    let mut dims: SmallVec<[Value<'_>; 8]> = SmallVec::with_capacity(metric.dimensions.len());
    for d in &metric.dimensions {
        dims.push(eval_field(&d.expression, bag, &d.name)?);
    }
    for target in targets {
        if target.in_order {
            target.metric.record(&dims, value)?;
        } else {
            let labels: SmallVec<[Value<'_>; 8]> = target
                .dimensions
                .iter()
                .map(|&i| dims[i].borrowed())
                .collect();
            target.metric.record(&labels, value)?;
        }
    }
    Ok(())
}

fn write_log(
    snapshot: &Snapshot,
    instance: usize,
    writer: &StdioWriter,
    name: &str,
    bag: &Bag<'_>,
) -> Result<(), InstanceError> {
    let mut variables: SmallVec<[(&str, Value<'_>); 32]> = SmallVec::new();
    let (severity, timestamp) = match &snapshot.instances[instance].params {
        InstanceParams::LogEntry(log) => {
            for v in &log.variables {
                variables.push((&v.name, eval_field(&v.expression, bag, &v.name)?));
            }
            let severity = match &log.severity {
                Some(e) => eval_field(e, bag, "severity")?,
                None => Value::from("Default"),
            };
            let timestamp = match &log.timestamp {
                Some(e) => match eval_field(e, bag, "timestamp")? {
                    Value::Timestamp(t) => t,
                    _ => Timestamp::now(),
                },
                None => Timestamp::now(),
            };
            (severity, timestamp)
        }
        InstanceParams::Metric(metric) => {
            variables.push(("value", eval_field(&metric.value, bag, "value")?));
            for d in &metric.dimensions {
                variables.push((&d.name, eval_field(&d.expression, bag, &d.name)?));
            }
            (Value::from("info"), Timestamp::now())
        }
        InstanceParams::Kubernetes(_) => return Ok(()),
    };
    let severity = severity.to_string();
    writer.write(name, &severity, timestamp, &variables);
    Ok(())
}
