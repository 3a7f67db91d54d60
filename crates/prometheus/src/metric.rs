//! The per-metric handle the engine records through.

use std::sync::Arc;

use meshmeter_attributes::Value;

use super::series::{LimitReached, Limits, Store, Update};
use super::spec::{Checked, MetricKind, MetricSpec};
use super::value::{capped, escape_label_value, label_text};

/// A record that changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// The number of label values differs from the metric's label names.
    #[error("{got} label values for a metric with {expected} labels")]
    LabelCount {
        /// The metric's label count.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A counter cannot go down (or by NaN).
    #[error("a counter cannot be increased by {0}")]
    InvalidIncrement(f64),
    /// The metric holds its series limit; the new series was dropped and counted.
    #[error("the metric already holds its limit of {limit} series")]
    SeriesLimit {
        /// The limit.
        limit: usize,
    },
    /// The new series' label text would take the metric past its label bytes budget; the
    /// series was dropped and counted with those over the series limit.
    #[error("the metric's series already hold its limit of {limit} bytes of label text")]
    LabelBytesLimit {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// Whether `v` may exceed the label value cap: text longer than it, or a map or bytes value
/// (whose rendered length is only known by rendering it).
fn needs_cap(v: &Value<'_>) -> bool {
    match v.as_text() {
        Some(text) => text.len() > super::MAX_LABEL_VALUE_BYTES,
        None => matches!(v, Value::StringMap(_) | Value::Bytes(_)),
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) spec: MetricSpec,
    pub(crate) bounds: Arc<[f64]>,
    /// Label positions in name order, for rendering.
    sorted: Box<[usize]>,
    pub(crate) store: Arc<Store>,
}

/// One metric of a [`super::Registry`]. Cloning is cheap; clones share the series.
#[derive(Clone, Debug)]
pub struct Metric(pub(crate) Arc<Inner>);

impl Metric {
    pub(crate) fn new(checked: Checked, store: Option<Arc<Store>>) -> Self {
        let Checked { spec, bounds } = checked;
        let mut sorted: Vec<usize> = (0..spec.label_names.len()).collect();
        sorted.sort_by(|&a, &b| spec.label_names[a].cmp(&spec.label_names[b]));
        let buckets = if bounds.is_empty() {
            0
        } else {
            bounds.len() + 1
        };
        Metric(Arc::new(Inner {
            store: store.unwrap_or_else(|| Arc::new(Store::new(buckets))),
            spec,
            bounds: bounds.into(),
            sorted: sorted.into(),
        }))
    }

    /// Records `value` for the series of `labels` (dimension values in `label_names` order):
    /// a counter adds it, a gauge takes it, a histogram observes it.
    ///
    /// Recording to an existing series neither allocates nor takes a write lock; only a new
    /// series renders its label text.
    pub fn record(&self, labels: &[Value<'_>], value: f64) -> Result<(), RecordError> {
        let inner = &*self.0;
        let expected = inner.spec.label_names.len();
        if labels.len() != expected {
            return Err(RecordError::LabelCount {
                expected,
                got: labels.len(),
            });
        }
        let update = match inner.spec.kind {
            MetricKind::Counter => {
                // NaN is refused too: it is neither negative nor non-negative.
                if value.is_nan() || value < 0.0 {
                    return Err(RecordError::InvalidIncrement(value));
                }
                Update::Add(value)
            }
            MetricKind::Gauge => Update::Set(value),
            MetricKind::Distribution => Update::Observe(value, &inner.bounds),
        };
        let limits = Limits {
            series: inner.spec.series_limit,
            label_bytes: inner.spec.label_bytes_limit,
        };
        let refused = |why| match why {
            LimitReached::Series => RecordError::SeriesLimit {
                limit: limits.series,
            },
            LimitReached::LabelBytes => RecordError::LabelBytesLimit {
                limit: limits.label_bytes,
            },
        };
        // The common case (every value within the cap) neither copies nor allocates.
        if labels.iter().all(|v| !needs_cap(v)) {
            return inner
                .store
                .update(labels, update, limits, || self.render(labels))
                .map_err(refused);
        }
        let mut cut = 0;
        let labels: Vec<Value<'_>> = labels
            .iter()
            .map(|v| match capped(v) {
                Some(c) => {
                    cut += 1;
                    c
                }
                None => v.borrowed(),
            })
            .collect();
        inner.store.count_truncated(cut);
        inner
            .store
            .update(&labels, update, limits, || self.render(&labels))
            .map_err(refused)
    }

    fn render(&self, labels: &[Value<'_>]) -> Box<str> {
        let inner = &*self.0;
        let mut out = String::new();
        let mut text = String::new();
        for (n, &i) in inner.sorted.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(&inner.spec.label_names[i]);
            out.push_str("=\"");
            text.clear();
            label_text(&labels[i], &mut text);
            escape_label_value(&text, &mut out);
            out.push('"');
        }
        out.into_boxed_str()
    }

    /// The spec this metric was built from.
    pub fn spec(&self) -> &MetricSpec {
        &self.0.spec
    }

    /// The metric's full name.
    pub fn name(&self) -> &str {
        &self.0.spec.name
    }

    /// The number of series it holds.
    pub fn series_count(&self) -> usize {
        self.0.store.len()
    }

    /// Label values cut to [`super::MAX_LABEL_VALUE_BYTES`], since the definition appeared.
    pub fn truncated_label_values(&self) -> u64 {
        self.0.store.truncated()
    }

    /// Bytes of label text its series hold (bounded by [`MetricSpec::label_bytes_limit`]).
    pub fn label_bytes(&self) -> usize {
        self.0.store.label_bytes()
    }

    /// New series refused because of the series limit or the label bytes limit, since the
    /// definition appeared.
    pub fn dropped_series(&self) -> u64 {
        self.0.store.dropped()
    }
}
