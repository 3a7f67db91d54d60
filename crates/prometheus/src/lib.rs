//! The Prometheus handler: metric specs become a [`Registry`] whose per-metric handles the
//! engine records into; the registry renders the text exposition format.
//!
//! The stdio handler is `meshmeter-stdio`, workload identity is `meshmeter-workloads` and
//! meshmeter's own metrics are `meshmeter-selfmetrics`.
//!
//! ```
//! use meshmeter_prometheus::{MetricKind, MetricSpec, Registry};
//! use meshmeter_attributes::Value;
//!
//! let spec = MetricSpec::new(
//!     "istio_mongo_sent_bytes",
//!     MetricKind::Counter,
//!     vec!["source_version".into(), "destination_version".into()],
//! );
//! let registry = Registry::new([spec]).unwrap();
//! let sent = &registry.metrics()[0];
//! sent.record(&[Value::from("v2"), Value::from("v1")], 100.0).unwrap();
//! sent.record(&[Value::from("v2"), Value::from("v1")], 150.0).unwrap();
//!
//! let mut text = String::new();
//! registry.encode(&mut text);
//! assert_eq!(
//!     text,
//!     concat!(
//!         "# HELP istio_mongo_sent_bytes istio_mongo_sent_bytes\n",
//!         "# TYPE istio_mongo_sent_bytes counter\n",
//!         "istio_mongo_sent_bytes{destination_version=\"v1\",source_version=\"v2\"} 250\n",
//!     )
//! );
//! ```

#![warn(missing_docs)]

mod encode;
mod gofloat;
mod metric;
mod registry;
mod series;
mod spec;
mod value;

pub use metric::{Metric, RecordError};
pub use registry::{Exposition, Registry};
pub use spec::{
    BucketError, MetricKind, MetricSpec, SpecError, DEFAULT_BOUNDS, DEFAULT_LABEL_BYTES_LIMIT,
    DEFAULT_SERIES_LIMIT,
};
pub use value::{label_text, metric_value, ValueError, MAX_LABEL_VALUE_BYTES};

/// The `Content-Type` of [`Registry::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
