//! A set of metrics built from specs, rebuilt on reload keeping unchanged definitions' series.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshmeter_selfmetrics::Snapshot;

use super::encode::Cursor;
use super::metric::Metric;
use super::spec::{check, MetricSpec, SpecError};

/// A self-metric family: name, help, type and how to read it from a metric.
type Family = (&'static str, &'static str, MetricType, fn(&Metric) -> u64);

/// The two kinds of self metric the registry reports about itself.
#[derive(Clone, Copy)]
enum MetricType {
    Counter,
    Gauge,
}

/// A [`Registry`]'s exposition being written out chunk by chunk (see [`Registry::exposition`]).
pub struct Exposition {
    registry: Registry,
    /// Position in `registry.by_name` of the next metric to start.
    next_metric: usize,
    current: Option<Cursor>,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition")
            .field("next_metric", &self.next_metric)
            .finish_non_exhaustive()
    }
}

impl Exposition {
    /// Appends the next part of the text to `out`, stopping once `out` holds at least `fill`
    /// bytes (it may exceed `fill` by one series' lines); returns `false`, appending nothing,
    /// when the exposition is complete.
    pub fn next_chunk(&mut self, out: &mut String, fill: usize) -> bool {
        let start = out.len();
        loop {
            if let Some(cursor) = &mut self.current {
                if !cursor.write(out, fill) {
                    return true;
                }
                self.current = None;
            }
            let Some(&i) = self.registry.by_name.get(self.next_metric) else {
                return out.len() > start;
            };
            self.next_metric += 1;
            self.current = Cursor::new(&self.registry.metrics[i]);
            if out.len() >= fill && out.len() > start {
                return true;
            }
        }
    }
}

/// The metrics of one configuration generation.
///
/// The engine records through [`Registry::metrics`] (in spec order); the admin endpoint calls
/// [`Registry::encode`]; the server calls [`Registry::sweep`] every [`Registry::sweep_interval`]
/// and [`Registry::rebuild`] on a configuration change, then swaps the result in.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    metrics: Vec<Metric>,
    /// Indexes into `metrics` sorted by name, for exposition.
    by_name: Vec<usize>,
    /// Metrics a reload removed, held (not exposed, not recorded to) for a grace period so
    /// that restoring them continues their series; see [`Registry::rebuild_holding`].
    held: Arc<Mutex<Vec<Held>>>,
    /// How long `held` metrics are kept.
    grace: Duration,
}

/// A removed metric and when it was removed.
#[derive(Clone, Debug)]
struct Held {
    metric: Metric,
    since: Instant,
}

impl Registry {
    /// A registry of fresh (empty) metrics.
    pub fn new(specs: impl IntoIterator<Item = MetricSpec>) -> Result<Self, SpecError> {
        Self::build(specs, |_| None)
    }

    /// A registry for `specs` that shares the series of every metric of `self` whose
    /// definition (name, kind, buckets, label names) is unchanged; changed and new metrics start
    /// empty, and metrics no longer specified are left out.
    ///
    /// Records made through `self`'s handles after the rebuild still land in the shared
    /// series, so nothing is lost while workers switch over.
    pub fn rebuild(&self, specs: impl IntoIterator<Item = MetricSpec>) -> Result<Self, SpecError> {
        self.rebuild_holding_at(specs, Duration::ZERO, Instant::now())
    }

    /// [`Registry::rebuild`], except that metrics no longer specified are held for `grace`
    /// (not exposed, their series kept): a later rebuild within `grace` that specifies one
    /// again with the same definition continues its series (a metric dropped by an edit
    /// mistake or a file caught mid-rewrite does not restart its counters). Held metrics are
    /// dropped by the first [`Registry::sweep`] or rebuild after `grace`. A zero `grace`
    /// holds nothing.
    pub fn rebuild_holding(
        &self,
        specs: impl IntoIterator<Item = MetricSpec>,
        grace: Duration,
    ) -> Result<Self, SpecError> {
        self.rebuild_holding_at(specs, grace, Instant::now())
    }

    /// [`Registry::rebuild_holding`] as of `now` (for tests and simulated time).
    pub fn rebuild_holding_at(
        &self,
        specs: impl IntoIterator<Item = MetricSpec>,
        grace: Duration,
        now: Instant,
    ) -> Result<Self, SpecError> {
        let mut held = self.held_at(now, grace);
        let mut old: HashMap<&str, &Metric> =
            held.iter().map(|h| (h.metric.name(), &h.metric)).collect();
        old.extend(self.metrics.iter().map(|m| (m.name(), m)));
        let mut registry = Self::build(specs, |spec| {
            old.get(spec.name.as_str())
                .filter(|m| m.spec().same_definition(spec))
                .map(|m| Arc::clone(&m.0.store))
        })?;
        if !grace.is_zero() {
            held.retain(|h| registry.get(h.metric.name()).is_none());
            for m in &self.metrics {
                if registry.get(m.name()).is_none() {
                    held.push(Held {
                        metric: m.clone(),
                        since: now,
                    });
                }
            }
            registry.held = Arc::new(Mutex::new(held));
            registry.grace = grace;
        }
        Ok(registry)
    }

    /// The held metrics still within `grace` at `now`.
    fn held_at(&self, now: Instant, grace: Duration) -> Vec<Held> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.iter()
            .filter(|h| now.saturating_duration_since(h.since) < grace)
            .cloned()
            .collect()
    }

    /// The names of the metrics a reload removed that are held for their grace period.
    pub fn held_metrics(&self) -> Vec<String> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.iter().map(|h| h.metric.name().to_owned()).collect()
    }

    fn build(
        specs: impl IntoIterator<Item = MetricSpec>,
        reuse: impl Fn(&MetricSpec) -> Option<Arc<super::series::Store>>,
    ) -> Result<Self, SpecError> {
        let mut metrics: Vec<Metric> = Vec::new();
        for spec in specs {
            if metrics.iter().any(|m| m.name() == spec.name) {
                return Err(SpecError::DuplicateMetric(spec.name));
            }
            let checked = check(spec)?;
            let store = reuse(&checked.spec);
            metrics.push(Metric::new(checked, store));
        }
        let mut by_name: Vec<usize> = (0..metrics.len()).collect();
        by_name.sort_by(|&a, &b| metrics[a].name().cmp(metrics[b].name()));
        Ok(Registry {
            metrics,
            by_name,
            ..Registry::default()
        })
    }

    /// The metrics, in the order of the specs they were built from.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// The metric named `name`.
    pub fn get(&self, name: &str) -> Option<&Metric> {
        self.by_name
            .binary_search_by(|&i| self.metrics[i].name().cmp(name))
            .ok()
            .map(|i| &self.metrics[self.by_name[i]])
    }

    /// Appends the text exposition format (0.0.4): metrics sorted by name, each with `# HELP`
    /// and `# TYPE`, series sorted by label text; metrics without series are left out.
    pub fn encode(&self, out: &mut String) {
        let mut exposition = self.exposition();
        while exposition.next_chunk(out, usize::MAX) {}
    }

    /// The same text as [`Registry::encode`], produced a chunk at a time by
    /// [`Exposition::next_chunk`], so that a slow reader holds one chunk instead of a copy of
    /// the whole exposition. Each metric's series are read when its turn comes.
    pub fn exposition(&self) -> Exposition {
        Exposition {
            registry: self.clone(),
            next_metric: 0,
            current: None,
        }
    }

    /// Removes series idle for longer than their metric's expiry; returns how many.
    pub fn sweep(&self) -> usize {
        self.sweep_at(Instant::now())
    }

    /// [`Registry::sweep`] as of `now` (for tests and simulated time). Also drops held
    /// metrics whose grace period is over; their series count as removed.
    pub fn sweep_at(&self, now: Instant) -> usize {
        let sweep = |m: &Metric| {
            let idle = m.spec().expiry.map(|e| e.as_millis() as u64);
            m.0.store.sweep(now, idle)
        };
        let mut removed: usize = self.metrics.iter().map(sweep).sum();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|h| {
            if now.saturating_duration_since(h.since) < self.grace {
                removed += sweep(&h.metric);
                true
            } else {
                removed += h.metric.series_count();
                false
            }
        });
        removed
    }

    /// How often to call [`Registry::sweep`]: half the shortest expiry (as Mixer's default
    /// check interval), at least 10 ms; `None` when no metric expires.
    ///
    /// Updates are stamped with a clock that sweeps advance, so a series is removed after
    /// between one and one and a half times its expiry of idleness when sweeps come this often.
    /// While metrics are held, the grace period counts as an expiry too.
    pub fn sweep_interval(&self) -> Option<Duration> {
        let holding = !self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        self.metrics
            .iter()
            .filter_map(|m| m.spec().expiry)
            .chain(holding.then_some(self.grace))
            .min()
            .map(|e| (e / 2).max(Duration::from_millis(10)))
    }

    /// `(metric name, dropped series)` for every metric, in spec order.
    pub fn dropped_series(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.metrics.iter().map(|m| (m.name(), m.dropped_series()))
    }

    /// Appends the registry's own health in the text format:
    /// `meshmeter_prometheus_series{metric=..}` (series held),
    /// `meshmeter_prometheus_dropped_series_total{metric=..}` (new series refused at the
    /// limit) and `meshmeter_prometheus_truncated_label_values_total{metric=..}` (label values
    /// cut to [`super::MAX_LABEL_VALUE_BYTES`]), one sample per metric, sorted by metric name.
    /// Nothing when there are no metrics.
    pub fn encode_self(&self, out: &mut String) {
        let families: [Family; 3] = [
            (
                "meshmeter_prometheus_dropped_series_total",
                "New series refused because the metric held its series limit or label bytes limit.",
                MetricType::Counter,
                Metric::dropped_series,
            ),
            (
                "meshmeter_prometheus_series",
                "Series held per configured metric.",
                MetricType::Gauge,
                |m| m.series_count() as u64,
            ),
            (
                "meshmeter_prometheus_truncated_label_values_total",
                "Label values cut to the longest kept length (1024 bytes).",
                MetricType::Counter,
                Metric::truncated_label_values,
            ),
        ];
        let mut snapshot = Snapshot::new();
        for (name, help, kind, value) in families {
            for &i in &self.by_name {
                let m = &self.metrics[i];
                let labels = [("metric", m.name())];
                match kind {
                    MetricType::Counter => snapshot.counter(name, help, &labels, value(m)),
                    MetricType::Gauge => {
                        let level = i64::try_from(value(m)).unwrap_or(i64::MAX);
                        snapshot.gauge(name, help, &labels, level)
                    }
                }
            }
        }
        snapshot.encode(out);
    }

    /// The number of series across all metrics.
    pub fn series_count(&self) -> usize {
        self.metrics.iter().map(Metric::series_count).sum()
    }
}
