//! The compiled dispatch plan: for every rule, the steps its actions take, with the
//! Prometheus metrics and log writers already resolved.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshmeter_config::{HandlerParams, InstanceParams, Snapshot};
use meshmeter_prometheus::{Metric, MetricSpec, Registry};
use meshmeter_selfmetrics::{Counter, SelfMetrics};
use meshmeter_stdio::StdioWriter;
use meshmeter_workloads::Enricher;

use crate::engine::{EngineError, EngineOptions, Writers};

/// A configuration compiled for dispatch. Immutable; the engine swaps whole runtimes.
#[derive(Debug)]
pub struct Runtime {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) generation: u64,
    pub(crate) prometheus: Registry,
    pub(crate) enricher: Enricher,
    /// Parallel to `snapshot.rules`.
    pub(crate) rules: Vec<Vec<Step>>,
    /// Parallel to `snapshot.instances`.
    pub(crate) instance_errors: Vec<ErrorCounter>,
    /// Parallel to `snapshot.rules`.
    pub(crate) match_errors: Vec<ErrorCounter>,
}

/// What one action does with one instance.
#[derive(Debug)]
pub(crate) enum Step {
    /// Evaluate a metric instance once and record it into each metric it feeds.
    Metrics {
        instance: usize,
        targets: Vec<MetricTarget>,
    },
    /// Write a logentry (or metric) instance as one line.
    Log {
        instance: usize,
        writer: Arc<StdioWriter>,
        /// `name.kind.namespace`, the `instance` field of the line.
        name: String,
    },
}

/// One metric fed by an instance, and which of the instance's dimensions feed its labels.
#[derive(Debug)]
pub(crate) struct MetricTarget {
    pub(crate) metric: Metric,
    pub(crate) dimensions: Vec<usize>,
    /// The labels are the instance's dimensions in their own order (the usual case), so the
    /// evaluated dimensions can be passed as they are.
    pub(crate) in_order: bool,
}

/// A counter of evaluation failures with a once-a-second log budget.
#[derive(Debug)]
pub(crate) struct ErrorCounter {
    pub(crate) name: String,
    pub(crate) count: Counter,
    last_logged_sec: AtomicU64,
}

impl ErrorCounter {
    fn new(name: String, count: Counter) -> Self {
        ErrorCounter {
            name,
            count,
            last_logged_sec: AtomicU64::new(0),
        }
    }

    /// Counts one failure; returns whether it may be logged (at most once a second).
    pub(crate) fn hit(&self) -> bool {
        self.count.inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_logged_sec.load(Ordering::Relaxed);
        now > last
            && self
                .last_logged_sec
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// How many dimensions a metric instance has.
fn metric_dims(params: &InstanceParams) -> usize {
    match params {
        InstanceParams::Metric(m) => m.dimensions.len(),
        _ => 0,
    }
}

/// The Prometheus specs of every metric of every prometheus handler in `snapshot`.
fn metric_specs(snapshot: &Snapshot, series_limit: usize) -> Vec<MetricSpec> {
    snapshot
        .prometheus_metrics()
        .map(|(handler, m)| {
            let expiry = match &snapshot.handlers[handler].params {
                HandlerParams::Prometheus(p) => p.expiry.map(|e| e.expiry),
                _ => None,
            };
            let mut spec = MetricSpec::new(m.full_name.clone(), m.kind, m.label_names.clone());
            spec.bounds = m.bounds.clone();
            spec.help = m.help.clone();
            spec.expiry = expiry;
            spec.series_limit = series_limit;
            spec
        })
        .collect()
}

/// Which attributes the configuration reads (by id): what its expressions use, and what rule
/// scoping needs. Identity the configuration never reads is not worth filling.
fn attributes_read(snapshot: &Snapshot) -> Vec<bool> {
    let mut read = vec![false; snapshot.manifest.len()];
    let mut mark = |e: &meshmeter_expr::Expression| {
        for id in e.attributes() {
            read[id.index()] = true;
        }
    };
    for instance in &snapshot.instances {
        match &instance.params {
            InstanceParams::Metric(m) => {
                mark(&m.value);
                m.dimensions.iter().for_each(|d| mark(&d.expression));
            }
            InstanceParams::LogEntry(l) => {
                l.severity.iter().chain(&l.timestamp).for_each(&mut mark);
                l.variables.iter().for_each(|v| mark(&v.expression));
            }
            InstanceParams::Kubernetes(_) => {}
        }
    }
    snapshot
        .rules
        .iter()
        .filter_map(|r| r.match_.as_ref())
        .for_each(&mut mark);
    for name in [
        "destination.namespace",
        "source.namespace",
        "context.reporter.kind",
    ] {
        if let Some(id) = snapshot.manifest.id(name) {
            read[id.index()] = true;
        }
    }
    read
}

impl Runtime {
    /// Compiles `snapshot` for dispatch. With `previous`, metrics whose definition did not
    /// change keep their series.
    pub(crate) fn build(
        snapshot: Arc<Snapshot>,
        generation: u64,
        previous: Option<&Runtime>,
        options: &EngineOptions,
        self_metrics: &SelfMetrics,
        writers: &Writers,
    ) -> Result<Runtime, EngineError> {
        let specs = metric_specs(&snapshot, options.series_limit);
        let prometheus = match previous {
            Some(prev) => prev
                .prometheus
                .rebuild_holding(specs, options.removed_metric_grace),
            None => Registry::new(specs),
        }
        .map_err(EngineError::Metrics)?;

        let mut rules = Vec::with_capacity(snapshot.rules.len());
        for rule in &snapshot.rules {
            let mut steps = Vec::new();
            for action in &rule.actions {
                let handler = &snapshot.handlers[action.handler];
                for &instance in &action.instances {
                    let inst = &snapshot.instances[instance];
                    match (&handler.params, &inst.params) {
                        (HandlerParams::Prometheus(p), InstanceParams::Metric(_)) => {
                            let targets = p
                                .metrics
                                .iter()
                                .filter(|m| m.instance == instance)
                                .filter_map(|m| {
                                    prometheus.get(&m.full_name).map(|metric| MetricTarget {
                                        metric: metric.clone(),
                                        dimensions: m.label_dimensions.clone(),
                                        in_order: m
                                            .label_dimensions
                                            .iter()
                                            .copied()
                                            .eq(0..metric_dims(&inst.params)),
                                    })
                                })
                                .collect::<Vec<_>>();
                            if !targets.is_empty() {
                                steps.push(Step::Metrics { instance, targets });
                            }
                        }
                        (
                            HandlerParams::Stdio(params),
                            InstanceParams::LogEntry(_) | InstanceParams::Metric(_),
                        ) => steps.push(Step::Log {
                            instance,
                            writer: writers.get(params)?,
                            name: inst.name.to_string(),
                        }),
                        // kubernetesenv: identity is filled for every bag before rules run.
                        _ => {}
                    }
                }
            }
            rules.push(steps);
        }

        let instance_errors = snapshot
            .instances
            .iter()
            .map(|i| {
                let name = i.name.to_string();
                let count = self_metrics.counter(
                    "meshmeter_dispatch_errors_total",
                    "Instances not produced because an expression failed, per instance.",
                    &[("instance", &name)],
                );
                ErrorCounter::new(name, count)
            })
            .collect();
        let match_errors = snapshot
            .rules
            .iter()
            .map(|r| {
                let name = r.name.to_string();
                let count = self_metrics.counter(
                    "meshmeter_match_errors_total",
                    "Reports for which a rule's match expression failed (the rule did not apply), per rule.",
                    &[("rule", &name)],
                );
                ErrorCounter::new(name, count)
            })
            .collect();

        let read = attributes_read(&snapshot);
        Ok(Runtime {
            enricher: Enricher::new(&snapshot.manifest).retain(|id| read[id.index()]),
            snapshot,
            generation,
            prometheus,
            rules,
            instance_errors,
            match_errors,
        })
    }

    /// The configuration this runtime was built from.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// The configuration generation (1 for the first load).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The Prometheus metrics of the configuration.
    pub fn prometheus(&self) -> &Registry {
        &self.prometheus
    }

    /// How often idle series should be swept, when any metric has an expiry policy.
    pub fn sweep_interval(&self) -> Option<Duration> {
        self.prometheus.sweep_interval()
    }
}
