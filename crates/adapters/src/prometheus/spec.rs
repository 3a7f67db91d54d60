//! What a metric is: the plain data the engine hands over from the handler's params.

use std::time::Duration;

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

/// The most buckets a generated (linear or exponential) bucket scheme may ask for.
pub const MAX_BUCKETS: u32 = 1_000;

/// Prometheus' default histogram buckets, used when a distribution names none.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One Prometheus metric of a handler.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSpec {
    /// The full metric name, namespace included (`istio_mongo_sent_bytes`).
    pub name: String,
    /// The `# HELP` text: the metric's description, or its name when it has none.
    pub help: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
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
    /// A spec with no expiry and the default series limit; `help` defaults to the name.
    pub fn new(name: impl Into<String>, kind: MetricKind, label_names: Vec<String>) -> Self {
        let name = name.into();
        MetricSpec {
            help: name.clone(),
            name,
            kind,
            label_names,
            expiry: None,
            series_limit: DEFAULT_SERIES_LIMIT,
            label_bytes_limit: DEFAULT_LABEL_BYTES_LIMIT,
        }
    }

    /// Whether `other` keeps this metric's series meaningful: same name, kind, buckets and
    /// label names. Help text, expiry and limit may change without resetting anything.
    pub fn same_definition(&self, other: &MetricSpec) -> bool {
        self.name == other.name && self.kind == other.kind && self.label_names == other.label_names
    }
}

/// The Prometheus metric type and, for histograms, the bucket scheme.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricKind {
    /// A monotonic total: each record adds its value.
    Counter,
    /// A level: each record sets it.
    Gauge,
    /// A histogram: each record observes its value.
    Distribution {
        /// The bucket scheme.
        buckets: Buckets,
    },
}

impl MetricKind {
    /// The word `# TYPE` uses.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Distribution { .. } => "histogram",
        }
    }
}

/// A histogram's bucket scheme (Istio's `buckets` param).
#[derive(Clone, Debug, PartialEq)]
pub enum Buckets {
    /// Prometheus' defaults ([`DEFAULT_BUCKETS`]).
    Default,
    /// `explicit_buckets.bounds`: strictly increasing finite upper bounds.
    Explicit(Vec<f64>),
    /// `linear_buckets`: `num_finite_buckets + 1` bounds `offset + i * width`.
    Linear {
        /// Buckets between the first and the last bound.
        num_finite_buckets: u32,
        /// Distance between bounds; positive.
        width: f64,
        /// The first bound.
        offset: f64,
    },
    /// `exponential_buckets`: `num_finite_buckets + 1` bounds `scale * growth_factor^i`.
    Exponential {
        /// Buckets between the first and the last bound.
        num_finite_buckets: u32,
        /// Ratio between bounds; greater than 1.
        growth_factor: f64,
        /// The first bound; positive.
        scale: f64,
    },
}

impl Buckets {
    /// The finite upper bounds, increasing (the `+Inf` bucket is implied).
    pub fn bounds(&self) -> Result<Vec<f64>, BucketError> {
        let bounds = match *self {
            Buckets::Default => DEFAULT_BUCKETS.to_vec(),
            Buckets::Explicit(ref b) => b.clone(),
            Buckets::Linear {
                num_finite_buckets: n,
                width,
                offset,
            } => {
                check_count(n)?;
                if !(width > 0.0 && width.is_finite()) {
                    return Err(BucketError::Width(width));
                }
                // Repeated addition, as Mixer's client built them (the last digit is `le` text).
                std::iter::successors(Some(offset), |b| Some(b + width))
                    .take(n as usize + 1)
                    .collect()
            }
            Buckets::Exponential {
                num_finite_buckets: n,
                growth_factor,
                scale,
            } => {
                check_count(n)?;
                if !(growth_factor > 1.0 && growth_factor.is_finite()) {
                    return Err(BucketError::GrowthFactor(growth_factor));
                }
                if !(scale > 0.0 && scale.is_finite()) {
                    return Err(BucketError::Scale(scale));
                }
                std::iter::successors(Some(scale), |b| Some(b * growth_factor))
                    .take(n as usize + 1)
                    .collect()
            }
        };
        if bounds.is_empty() {
            return Err(BucketError::Empty);
        }
        for (i, &b) in bounds.iter().enumerate() {
            if !b.is_finite() {
                return Err(BucketError::NotFinite { index: i, bound: b });
            }
            if i > 0 && bounds[i - 1] >= b {
                return Err(BucketError::NotIncreasing {
                    index: i,
                    previous: bounds[i - 1],
                    bound: b,
                });
            }
        }
        Ok(bounds)
    }
}

fn check_count(n: u32) -> Result<(), BucketError> {
    if n == 0 || n > MAX_BUCKETS {
        return Err(BucketError::Count(n));
    }
    Ok(())
}

/// A bucket scheme that yields no usable bounds.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BucketError {
    /// Explicit bounds are empty.
    #[error("explicit buckets need at least one bound")]
    Empty,
    /// A bound is infinite or NaN (or a generated bound overflowed).
    #[error("bucket bound {index} is {bound}, not a finite number")]
    NotFinite {
        /// Position among the bounds.
        index: usize,
        /// The bound.
        bound: f64,
    },
    /// A bound is not greater than the one before it.
    #[error("bucket bound {index} ({bound}) is not greater than the one before it ({previous})")]
    NotIncreasing {
        /// Position among the bounds.
        index: usize,
        /// The bound before it.
        previous: f64,
        /// The bound.
        bound: f64,
    },
    /// `num_finite_buckets` is 0 or above [`MAX_BUCKETS`].
    #[error("num_finite_buckets is {0}; it must be between 1 and {MAX_BUCKETS}")]
    Count(u32),
    /// A linear width that is not positive.
    #[error("linear bucket width is {0}; it must be positive")]
    Width(f64),
    /// An exponential growth factor not above 1.
    #[error("exponential growth_factor is {0}; it must be greater than 1")]
    GrowthFactor(f64),
    /// An exponential scale that is not positive.
    #[error("exponential scale is {0}; it must be positive")]
    Scale(f64),
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

fn valid_name(name: &str, colon: bool) -> bool {
    let mut chars = name.chars();
    let ok_start = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    let ok_rest = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
    matches!(chars.next(), Some(c) if ok_start(c)) && chars.all(ok_rest)
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
    if !valid_name(&spec.name, true) {
        return Err(SpecError::MetricName(metric()));
    }
    for (i, label) in spec.label_names.iter().enumerate() {
        if !valid_name(label, false) || label.starts_with("__") {
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
    let bounds = match &spec.kind {
        MetricKind::Distribution { buckets } => {
            if spec.label_names.iter().any(|l| l == "le") {
                return Err(SpecError::ReservedLe { metric: metric() });
            }
            buckets.bounds().map_err(|error| SpecError::Buckets {
                metric: metric(),
                error,
            })?
        }
        _ => Vec::new(),
    };
    Ok(Checked { spec, bounds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_bounds() {
        let linear = Buckets::Linear {
            num_finite_buckets: 3,
            width: 10.0,
            offset: 1.0,
        };
        assert_eq!(linear.bounds(), Ok(vec![1.0, 11.0, 21.0, 31.0]));
        let exp = Buckets::Exponential {
            num_finite_buckets: 2,
            growth_factor: 10.0,
            scale: 0.5,
        };
        assert_eq!(exp.bounds(), Ok(vec![0.5, 5.0, 50.0]));
        assert_eq!(Buckets::Default.bounds().unwrap().len(), 11);
    }

    #[test]
    fn bad_bounds() {
        assert_eq!(Buckets::Explicit(vec![]).bounds(), Err(BucketError::Empty));
        assert_eq!(
            Buckets::Explicit(vec![1.0, 1.0]).bounds(),
            Err(BucketError::NotIncreasing {
                index: 1,
                previous: 1.0,
                bound: 1.0
            })
        );
        assert_eq!(
            Buckets::Linear {
                num_finite_buckets: 0,
                width: 1.0,
                offset: 0.0
            }
            .bounds(),
            Err(BucketError::Count(0))
        );
        assert_eq!(
            Buckets::Exponential {
                num_finite_buckets: 2,
                growth_factor: 1.0,
                scale: 1.0
            }
            .bounds(),
            Err(BucketError::GrowthFactor(1.0))
        );
        assert_eq!(
            Buckets::Exponential {
                num_finite_buckets: 1000,
                growth_factor: 1e300,
                scale: 1.0
            }
            .bounds(),
            Err(BucketError::NotFinite {
                index: 2,
                bound: f64::INFINITY
            })
        );
    }

    #[test]
    fn spec_checks() {
        let s = |name: &str, labels: &[&str]| {
            check(MetricSpec::new(
                name,
                MetricKind::Distribution {
                    buckets: Buckets::Default,
                },
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
