//! What a metric is: the plain data the engine hands over from the handler's params.

use std::time::Duration;

use meshmeter_prommodel::{check_bounds, valid_label_name, valid_metric_name};
pub use meshmeter_prommodel::{BucketError, MetricKind, DEFAULT_BOUNDS};

/// The number of series one metric may hold unless its spec says otherwise.
///
/// Generous for a mesh (100,000 label combinations of one metric), yet a bound: a dimension
/// fed by a per-connection value (a port, a request id) cannot grow memory without limit.
pub const DEFAULT_SERIES_LIMIT: usize = 100_000;

/// The default [`MetricSpec::label_bytes_limit`]: 64 MiB of label text per metric.
///
/// The series limit counts series, not bytes; with label values up to
/// [`super::MAX_LABEL_VALUE_BYTES`] each, this keeps one metric's exposition (and the memory
/// behind it) bounded in bytes as well.
pub const DEFAULT_LABEL_BYTES_LIMIT: usize = 64 << 20;

/// One Prometheus metric of a handler.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSpec {
    /// The full metric name, namespace included (`istio_mongo_sent_bytes`).
    pub name: String,
    /// The `# HELP` text: the metric's description, or its name when it has none.
    pub help: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// A histogram's finite upper bounds, strictly increasing (the `+Inf` bucket is implied);
    /// ignored for counters and gauges. [`MetricSpec::new`] gives a histogram
    /// [`DEFAULT_BOUNDS`].
    pub bounds: Vec<f64>,
    /// Label names, in the order the engine passes dimension values to [`super::Metric::record`].
    pub label_names: Vec<String>,
    /// Series not updated for this long are removed by [`super::Registry::sweep`].
    pub expiry: Option<Duration>,
    /// The most series this metric keeps; new label combinations beyond it are dropped and
    /// counted ([`super::Metric::dropped_series`]).
    pub series_limit: usize,
    /// The most bytes of label text (`a="x",b="y"` per series) this metric keeps, which
    /// bounds its share of the exposition; new series beyond it are dropped and counted with
    /// those beyond the series limit.
    pub label_bytes_limit: usize,
}

impl MetricSpec {
    /// A spec with no expiry and the default series limit; `help` defaults to the name and a
    /// histogram's bounds to Prometheus' defaults.
    pub fn new(name: impl Into<String>, kind: MetricKind, label_names: Vec<String>) -> Self {
        let name = name.into();
        let bounds = match kind {
            MetricKind::Distribution => DEFAULT_BOUNDS.to_vec(),
            MetricKind::Counter | MetricKind::Gauge => Vec::new(),
        };
        MetricSpec {
            help: name.clone(),
            name,
            kind,
            bounds,
            label_names,
            expiry: None,
            series_limit: DEFAULT_SERIES_LIMIT,
            label_bytes_limit: DEFAULT_LABEL_BYTES_LIMIT,
        }
    }

    /// A histogram spec with these finite upper bounds (see [`MetricSpec::new`]).
    pub fn histogram(name: impl Into<String>, bounds: Vec<f64>, label_names: Vec<String>) -> Self {
        let mut spec = MetricSpec::new(name, MetricKind::Distribution, label_names);
        spec.bounds = bounds;
        spec
    }

    /// Whether `other` keeps this metric's series meaningful: same name, kind, buckets and
    /// label names. Help text, expiry and limit may change without resetting anything.
    pub fn same_definition(&self, other: &MetricSpec) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.label_names == other.label_names
            && self.histogram_bounds() == other.histogram_bounds()
    }

    /// The bounds that matter: a histogram's, none for counters and gauges.
    fn histogram_bounds(&self) -> &[f64] {
        match self.kind {
            MetricKind::Distribution => &self.bounds,
            MetricKind::Counter | MetricKind::Gauge => &[],
        }
    }
}

/// A set of specs that cannot make a registry.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// Not a valid Prometheus metric name.
    #[error("'{0}' is not a valid Prometheus metric name")]
    MetricName(String),
    /// Two specs share a name.
    #[error("metric '{0}' is defined twice")]
    DuplicateMetric(String),
    /// Not a valid Prometheus label name (or a reserved one).
    #[error("metric '{metric}': '{label}' is not a valid label name")]
    LabelName {
        /// The metric.
        metric: String,
        /// The label.
        label: String,
    },
    /// A label name appears twice in one metric.
    #[error("metric '{metric}': label '{label}' appears twice")]
    DuplicateLabel {
        /// The metric.
        metric: String,
        /// The label.
        label: String,
    },
    /// A histogram labelled `le`, which its buckets need.
    #[error("metric '{metric}': a histogram cannot have a label named 'le'")]
    ReservedLe {
        /// The metric.
        metric: String,
    },
    /// The bucket scheme is unusable.
    #[error("metric '{metric}': {error}")]
    Buckets {
        /// The metric.
        metric: String,
        /// Why.
        error: BucketError,
    },
    /// A series limit of zero would drop everything.
    #[error("metric '{metric}': the series limit must be at least 1")]
    ZeroSeriesLimit {
        /// The metric.
        metric: String,
    },
}

/// A spec checked and with its bucket bounds computed.
#[derive(Clone, Debug)]
pub(crate) struct Checked {
    pub(crate) spec: MetricSpec,
    /// Finite bounds for a histogram, empty otherwise.
    pub(crate) bounds: Vec<f64>,
}

pub(crate) fn check(spec: MetricSpec) -> Result<Checked, SpecError> {
    let metric = || spec.name.clone();
    if !valid_metric_name(&spec.name) {
        return Err(SpecError::MetricName(metric()));
    }
    for (i, label) in spec.label_names.iter().enumerate() {
        if !valid_label_name(label) {
            return Err(SpecError::LabelName {
                metric: metric(),
                label: label.clone(),
            });
        }
        if spec.label_names[..i].contains(label) {
            return Err(SpecError::DuplicateLabel {
                metric: metric(),
                label: label.clone(),
            });
        }
    }
    if spec.series_limit == 0 {
        return Err(SpecError::ZeroSeriesLimit { metric: metric() });
    }
    let bounds = match spec.kind {
        MetricKind::Distribution => {
            if spec.label_names.iter().any(|l| l == "le") {
                return Err(SpecError::ReservedLe { metric: metric() });
            }
            check_bounds(&spec.bounds).map_err(|error| SpecError::Buckets {
                metric: metric(),
                error,
            })?;
            spec.bounds.clone()
        }
        MetricKind::Counter | MetricKind::Gauge => Vec::new(),
    };
    Ok(Checked { spec, bounds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bounds() {
        let mut spec = MetricSpec::new("h", MetricKind::Distribution, vec![]);
        spec.bounds = vec![1.0, 1.0];
        assert_eq!(
            check(spec).map(|_| ()),
            Err(SpecError::Buckets {
                metric: "h".into(),
                error: BucketError::NotIncreasing {
                    index: 1,
                    previous: 1.0,
                    bound: 1.0
                }
            })
        );
        let mut counter = MetricSpec::new("c", MetricKind::Counter, vec![]);
        counter.bounds = vec![2.0, 1.0];
        assert!(check(counter).unwrap().bounds.is_empty());
    }

    #[test]
    fn spec_checks() {
        let s = |name: &str, labels: &[&str]| {
            check(MetricSpec::new(
                name,
                MetricKind::Distribution,
                labels.iter().map(|l| l.to_string()).collect(),
            ))
            .map(|_| ())
        };
        assert_eq!(s("istio_x", &["a", "b"]), Ok(()));
        assert_eq!(s("1x", &[]), Err(SpecError::MetricName("1x".into())));
        assert_eq!(
            s("x", &["a-b"]),
            Err(SpecError::LabelName {
                metric: "x".into(),
                label: "a-b".into()
            })
        );
        assert_eq!(
            s("x", &["a", "a"]),
            Err(SpecError::DuplicateLabel {
                metric: "x".into(),
                label: "a".into()
            })
        );
        assert_eq!(
            s("x", &["le"]),
            Err(SpecError::ReservedLe { metric: "x".into() })
        );
    }
}
