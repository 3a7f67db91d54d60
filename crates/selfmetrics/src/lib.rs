//! meshmeter's own metrics (`meshmeter_*`): named atomic counters and gauges with fixed label
//! sets, rendered beside the configured metrics on the same endpoint.
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
//! tcp.add(2);
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
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A monotonic count. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A level that goes up and down. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Sets the level.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The current level.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
enum Cell {
    Counter(Counter),
    Gauge(Gauge),
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: &'static str,
    /// Rendered label text (`a="x",b="y"`, sorted by name) to the cell.
    series: BTreeMap<String, Cell>,
}

/// A small registry of self metrics. Registration takes a lock; updates are plain atomics.
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
        match self.cell(name, help, "counter", labels, || {
            Cell::Counter(Counter::default())
        }) {
            Some(Cell::Counter(c)) => c,
            // `name` is a gauge already: hand out a detached counter rather than panic.
            _ => Counter::default(),
        }
    }

    /// The gauge `name{labels}`, registered on first use; asking again returns the same one.
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        match self.cell(
            name,
            help,
            "gauge",
            labels,
            || Cell::Gauge(Gauge::default()),
        ) {
            Some(Cell::Gauge(g)) => g,
            _ => Gauge::default(),
        }
    }

    fn cell(
        &self,
        name: &str,
        help: &str,
        kind: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Cell,
    ) -> Option<Cell> {
        let mut sorted = labels.to_vec();
        sorted.sort_unstable();
        let mut key = String::new();
        for (i, (k, v)) in sorted.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            let _ = write!(key, "{k}=\"");
            for c in v.chars() {
                match c {
                    '\\' => key.push_str("\\\\"),
                    '"' => key.push_str("\\\""),
                    '\n' => key.push_str("\\n"),
                    c => key.push(c),
                }
            }
            key.push('"');
        }
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let family = families.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.replace('\\', "\\\\").replace('\n', "\\n"),
            kind,
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            return None;
        }
        let cell = family.series.entry(key).or_insert_with(make);
        Some(match cell {
            Cell::Counter(c) => Cell::Counter(c.clone()),
            Cell::Gauge(g) => Cell::Gauge(g.clone()),
        })
    }

    /// Appends every registered metric in the text exposition format, sorted by name and
    /// labels.
    pub fn encode(&self, out: &mut String) {
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for (labels, cell) in &family.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    out.push_str(labels);
                    out.push('}');
                }
                let _ = match cell {
                    Cell::Counter(c) => writeln!(out, " {}", c.get()),
                    Cell::Gauge(g) => writeln!(out, " {}", g.get()),
                };
            }
        }
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
}
