//! meshmeter's own metrics (`meshmeter_*`), declared and rendered with `prometheus-client`.
//!
//! Every component exposes its self-telemetry one of two ways, and both end in
//! `prometheus-client`'s Prometheus text encoder (format 0.0.4):
//!
//! - [`SelfMetrics`]: a registry of live [`Counter`]s and [`Gauge`]s (`prometheus-client`'s
//!   own types) with fixed label sets, registered by name at run time; handles are cheap to
//!   clone and updates are plain atomics.
//! - [`Snapshot`]: values read at scrape time from counters a hot path keeps elsewhere (the
//!   proxy's connection counters, the series store's health).
//!
//! A counter's name ends in `_total`: `prometheus-client` names a counter family by its stem
//! and appends the suffix itself, so a name given here with the suffix is exposed unchanged
//! (and one without it gains the suffix).
//!
//! ```
//! use meshmeter_selfmetrics::SelfMetrics;
//!
//! let metrics = SelfMetrics::new();
//! let reports = metrics.counter("meshmeter_reports_total", "Report requests received.", &[]);
//! let tcp = metrics.counter(
//!     "meshmeter_dispatch_errors_total",
//!     "Instances a handler refused.",
//!     &[("instance", "mongosentbytes.metric.default")],
//! );
//! reports.inc();
//! tcp.inc_by(2);
//! let mut text = String::new();
//! metrics.encode(&mut text);
//! assert_eq!(
//!     text,
//!     concat!(
//!         "# HELP meshmeter_dispatch_errors_total Instances a handler refused.\n",
//!         "# TYPE meshmeter_dispatch_errors_total counter\n",
//!         "meshmeter_dispatch_errors_total{instance=\"mongosentbytes.metric.default\"} 2\n",
//!         "# HELP meshmeter_reports_total Report requests received.\n",
//!         "# TYPE meshmeter_reports_total counter\n",
//!         "meshmeter_reports_total 1\n",
//!     )
//! );
//! ```

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// A monotonic count (`prometheus-client`'s): `inc`, `inc_by`, `get`. Cloning shares it.
pub type Counter = prometheus_client::metrics::counter::Counter;

/// A level that goes up and down (`prometheus-client`'s, `i64`): `set`, `inc`, `dec`, `get`.
/// Cloning shares it.
pub type Gauge = prometheus_client::metrics::gauge::Gauge;

/// Label pairs, sorted by name.
type Labels = Vec<(String, String)>;

fn sorted(labels: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = labels
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    labels.sort_unstable();
    labels
}

#[derive(Clone, Debug)]
enum Cell {
    Counter(Counter),
    Gauge(Gauge),
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: MetricType,
    series: BTreeMap<Labels, Cell>,
}

/// A registry of self metrics. Registration takes a lock; updates are plain atomics.
#[derive(Debug, Default)]
pub struct SelfMetrics {
    families: Mutex<BTreeMap<String, Family>>,
}

impl SelfMetrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter `name{labels}`, registered on first use; asking again returns the same one.
    /// `help` is taken from the first registration of `name`.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        match self.cell(name, help, MetricType::Counter, labels) {
            Some(Cell::Counter(c)) => c,
            // `name` is a gauge already: hand out a detached counter rather than panic.
            _ => Counter::default(),
        }
    }

    /// The gauge `name{labels}`, registered on first use; asking again returns the same one.
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        match self.cell(name, help, MetricType::Gauge, labels) {
            Some(Cell::Gauge(g)) => g,
            _ => Gauge::default(),
        }
    }

    fn cell(
        &self,
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[(&str, &str)],
    ) -> Option<Cell> {
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let family = families.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.to_owned(),
            kind,
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            return None;
        }
        let cell = family
            .series
            .entry(sorted(labels))
            .or_insert_with(|| match kind {
                MetricType::Gauge => Cell::Gauge(Gauge::default()),
                _ => Cell::Counter(Counter::default()),
            });
        Some(cell.clone())
    }

    /// Appends every registered metric in the Prometheus text format, sorted by name, series
    /// sorted by label names and values.
    pub fn encode(&self, out: &mut String) {
        let mut snapshot = Snapshot::new();
        {
            let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
            for (name, family) in families.iter() {
                for (labels, cell) in &family.series {
                    let value = match cell {
                        Cell::Counter(c) => Value::Counter(c.get()),
                        Cell::Gauge(g) => Value::Gauge(g.get()),
                    };
                    snapshot.push(name, &family.help, labels.clone(), value);
                }
            }
        }
        snapshot.encode(out);
    }
}

#[derive(Clone, Copy, Debug)]
enum Value {
    Counter(u64),
    Gauge(i64),
}

impl Value {
    fn kind(self) -> MetricType {
        match self {
            Value::Counter(_) => MetricType::Counter,
            Value::Gauge(_) => MetricType::Gauge,
        }
    }
}

#[derive(Debug)]
struct Samples {
    name: String,
    help: String,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

/// Metric values read at scrape time, rendered by `prometheus-client`: for counters that live
/// elsewhere as plain atomics (a hot path's own fields) or are computed per scrape.
///
/// Families appear in the order their first sample was added, samples in the order added.
///
/// ```
/// use meshmeter_selfmetrics::Snapshot;
///
/// let mut snapshot = Snapshot::new();
/// snapshot.counter("meshmeter_proxy_reports_sent_total", "Reports delivered.", &[], 7);
/// snapshot.gauge("meshmeter_proxy_connections_active", "Connections being forwarded.", &[], 2);
/// let mut text = String::new();
/// snapshot.encode(&mut text);
/// assert_eq!(
///     text,
///     concat!(
///         "# HELP meshmeter_proxy_reports_sent_total Reports delivered.\n",
///         "# TYPE meshmeter_proxy_reports_sent_total counter\n",
///         "meshmeter_proxy_reports_sent_total 7\n",
///         "# HELP meshmeter_proxy_connections_active Connections being forwarded.\n",
///         "# TYPE meshmeter_proxy_connections_active gauge\n",
///         "meshmeter_proxy_connections_active 2\n",
///     )
/// );
/// ```
#[derive(Debug, Default)]
pub struct Snapshot {
    families: Vec<Samples>,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the sample `name{labels} value` of a counter. `help` is taken from the first
    /// sample of `name`; a sample whose kind differs from its family's is left out.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.push(name, help, sorted(labels), Value::Counter(value));
    }

    /// Adds the sample `name{labels} value` of a gauge.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: i64) {
        self.push(name, help, sorted(labels), Value::Gauge(value));
    }

    fn push(&mut self, name: &str, help: &str, labels: Labels, value: Value) {
        // Families are few (tens): a linear search keeps the insertion order simply.
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Samples {
                    name: name.to_owned(),
                    help: help.to_owned(),
                    kind: value.kind(),
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        let family = &mut self.families[i];
        if family.kind == value.kind() {
            family.samples.push((labels, value));
        }
    }

    /// Appends the samples in the Prometheus text format (version 0.0.4).
    pub fn encode(self, out: &mut String) {
        if self.families.is_empty() {
            return;
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        // Writing to a String cannot fail, and the collector itself never fails.
        let _ = prometheus_text::encode(out, &registry);
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            // prometheus-client appends `_total` to a counter family's stem.
            let stem = match family.kind {
                MetricType::Counter => family.name.strip_suffix("_total").unwrap_or(&family.name),
                _ => &family.name,
            };
            let mut metric = encoder.encode_descriptor(stem, &family.help, None, family.kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                match *value {
                    Value::Counter(v) => ConstCounter::new(v).encode(sample)?,
                    Value::Gauge(v) => ConstGauge::new(v).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_handle_and_kind_clash() {
        let m = SelfMetrics::new();
        let a = m.counter("meshmeter_x_total", "X.", &[("b", "2"), ("a", "1")]);
        let b = m.counter("meshmeter_x_total", "ignored", &[("a", "1"), ("b", "2")]);
        a.inc();
        b.inc();
        assert_eq!(a.get(), 2);
        let g = m.gauge("meshmeter_x_total", "X.", &[]);
        g.set(5);
        let up = m.gauge("meshmeter_config_generation", "Generation.", &[]);
        up.set(3);
        up.dec();
        let mut text = String::new();
        m.encode(&mut text);
        assert_eq!(
            text,
            "# HELP meshmeter_config_generation Generation.\n\
             # TYPE meshmeter_config_generation gauge\n\
             meshmeter_config_generation 2\n\
             # HELP meshmeter_x_total X.\n\
             # TYPE meshmeter_x_total counter\n\
             meshmeter_x_total{a=\"1\",b=\"2\"} 2\n"
        );
    }

    #[test]
    fn escapes_help_and_label_values_and_keeps_names() {
        let m = SelfMetrics::new();
        m.counter(
            "meshmeter_y",
            "Back\\slash\nnewline.",
            &[("v", "a\"b\\c\nd")],
        )
        .inc();
        m.gauge("meshmeter_level", "Level.", &[("z", "1"), ("a", "2")])
            .set(-3);
        let mut text = String::new();
        m.encode(&mut text);
        assert_eq!(
            text,
            "# HELP meshmeter_level Level.\n\
             # TYPE meshmeter_level gauge\n\
             meshmeter_level{a=\"2\",z=\"1\"} -3\n\
             # HELP meshmeter_y_total Back\\\\slash\\nnewline.\n\
             # TYPE meshmeter_y_total counter\n\
             meshmeter_y_total{v=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn empty_snapshot_and_kind_clash_in_snapshot() {
        let mut text = String::new();
        Snapshot::new().encode(&mut text);
        assert_eq!(text, "");
        let mut s = Snapshot::new();
        s.counter("meshmeter_a_total", "A.", &[("m", "x")], 1);
        s.gauge("meshmeter_a_total", "A.", &[("m", "y")], 2);
        s.counter("meshmeter_a_total", "A.", &[("m", "z")], 3);
        s.encode(&mut text);
        assert_eq!(
            text,
            "# HELP meshmeter_a_total A.\n\
             # TYPE meshmeter_a_total counter\n\
             meshmeter_a_total{m=\"x\"} 1\n\
             meshmeter_a_total{m=\"z\"} 3\n"
        );
    }
}
