//! Cross-object checks of prometheus handlers: instances, labels, names.

use std::collections::HashMap;

use meshmeter_prommodel::{valid_label_name, valid_metric_name};

use crate::diagnostic::{Code, Sink, WithHint};
use crate::fields::suggest;
use crate::handlers::RawMetric;
use crate::objects::Object;
use crate::resolve::Table;
use crate::snapshot::{Buckets, InstanceParams, MetricInstance, MetricKind, PrometheusMetric};
use crate::source::Span;

/// Mixer's name cleaning for the namespace prefix and label names: a leading `/` trimmed,
/// `/`, `.` and space turned into `_`, `-` removed.
pub(crate) fn mangle(name: &str) -> String {
    name.trim_start_matches('/')
        .chars()
        .filter(|&c| c != '-')
        .map(|c| if matches!(c, '/' | '.' | ' ') { '_' } else { c })
        .collect()
}

/// A name made valid, for hints.
fn sanitized(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// What the checks need to know about the instances.
pub(crate) struct Instances<'a> {
    /// Built params per object (`None` for non-instances and failed ones).
    pub(crate) params: &'a [Option<InstanceParams>],
    /// Snapshot index per object.
    pub(crate) index: &'a HashMap<usize, usize>,
}

/// Full metric names already taken, across every handler (one /metrics endpoint).
pub(crate) type Taken = HashMap<String, Span>;

/// Resolves and checks one handler's metrics. Returns, per metric, the object index of its
/// instance when that resolved, and the metric when every check passed (else reported).
pub(crate) fn check(
    handler: &Object<'_>,
    metrics: &[RawMetric<'_>],
    table: &Table<'_, '_>,
    instances: &Instances<'_>,
    taken: &mut Taken,
    sink: &mut Sink<'_>,
) -> Vec<(Option<usize>, Option<PrometheusMetric>)> {
    metrics
        .iter()
        .map(|m| {
            let obj = table.resolve_instance_name(m.instance_name, &handler.namespace, sink);
            (obj, one(obj, m, instances, taken, sink))
        })
        .collect()
}

/// The metric's served name as Mixer built it: `namespace` (`istio` when absent or empty) +
/// `_` + `name` (the whole `instance_name` when absent), both sanitised by [`mangle`]. A name
/// that changes on the way is served with a warning naming the served name; one that is still
/// not a Prometheus name is refused. Returns the full name, the unsanitised name (for `# HELP`)
/// and its span.
fn served_name<'m>(
    m: &'m RawMetric<'_>,
    instance_name: &'m str,
    sink: &mut Sink<'_>,
) -> Option<(String, &'m str, Span)> {
    let named = m.name.and_then(|n| n.as_str().map(|s| (s, n.span)));
    let (name, name_span) = match named {
        Some((s, span)) if !s.is_empty() => (s, span),
        _ => (instance_name, m.entry),
    };
    let namespace = if m.namespace.0.is_empty() {
        "istio"
    } else {
        m.namespace.0.as_str()
    };
    let full_name = format!("{}_{}", mangle(namespace), mangle(name));
    if !valid_metric_name(&full_name) {
        sink.report(
            Code::BadMetricName,
            name_span,
            format!("'{full_name}' is not a valid Prometheus metric name"),
        )
        .hint(format!(
            "use letters, digits, '_' and ':' in namespace and name, e.g. '{}'",
            sanitized(&full_name)
        ));
        return None;
    }
    if named.is_none_or(|(s, _)| s.is_empty()) {
        sink.report(
            Code::SanitisedName,
            name_span,
            format!(
                "metric has no name: served as '{full_name}', from instance_name '{instance_name}'"
            ),
        )
        .hint("set `name` to choose the served name");
    } else if full_name != format!("{namespace}_{name}") {
        sink.report(
            Code::SanitisedName,
            name_span,
            format!("metric '{namespace}_{name}' is served as '{full_name}'"),
        )
        .hint("Prometheus names hold letters, digits, '_' and ':'; '-' is removed and '.', '/' and space become '_'");
    }
    Some((full_name, name, name_span))
}

/// Checks one metric: its served name, labels, instance and label-to-dimension mapping.
fn one(
    obj: Option<usize>,
    m: &RawMetric<'_>,
    instances: &Instances<'_>,
    taken: &mut Taken,
    sink: &mut Sink<'_>,
) -> Option<PrometheusMetric> {
    let before = sink.out.error_count();
    let instance_name = m.instance_name.as_str().unwrap_or_default();
    let (full_name, name, name_span) = served_name(m, instance_name, sink)?;
    claim(&full_name, name_span, taken, sink);
    let labels = labels(m, sink);
    let obj = obj?;
    let metric = metric_instance(obj, m, instances, sink)?;
    let label_dimensions = label_dimensions(&labels, metric, instance_name, m.labels_at, sink);
    if sink.out.error_count() != before {
        return None;
    }
    let bounds = match (&m.buckets, m.kind) {
        (Some(b), MetricKind::Distribution) => b.bounds(),
        (None, MetricKind::Distribution) => Buckets::DEFAULT_BOUNDS.to_vec(),
        _ => Vec::new(),
    };
    Some(PrometheusMetric {
        // Mixer's HELP is the description, else the metric's own name (without namespace).
        help: if m.description.is_empty() {
            name.to_owned()
        } else {
            m.description.clone()
        },
        full_name,
        kind: m.kind,
        label_names: labels.into_iter().map(|l| l.exposed).collect(),
        label_dimensions: label_dimensions?,
        bounds,
        instance: *instances.index.get(&obj)?,
    })
}

/// Takes `full_name` for this metric, or reports that another metric has it: all handlers
/// share one /metrics endpoint.
fn claim(full_name: &str, name_span: Span, taken: &mut Taken, sink: &mut Sink<'_>) {
    if let Some(first) = taken.get(full_name) {
        let file = &sink.sources.get(first.file).name;
        let at = format!("{file}:{}:{}", first.line, first.col);
        sink.report(
            Code::DuplicateMetric,
            name_span,
            format!("metric '{full_name}' is defined twice"),
        )
        .hint(format!("it is first defined at {at}; metric names must be unique across all prometheus handlers"));
    } else {
        taken.insert(full_name.to_owned(), name_span);
    }
}

/// A label as exposed, as written, and where.
struct Label<'m> {
    exposed: String,
    raw: &'m str,
    span: Span,
}

/// The metric's labels, mangled as Mixer did; invalid names are reported (and kept, so the
/// mapping to dimensions is still checked), names listed twice are reported and dropped.
fn labels<'m>(m: &'m RawMetric<'_>, sink: &mut Sink<'_>) -> Vec<Label<'m>> {
    let mut labels: Vec<Label<'m>> = Vec::new();
    for l in &m.label_names {
        let raw = l.as_str().unwrap_or_default();
        let exposed = mangle(raw);
        if !valid_label_name(&exposed) {
            sink.report(
                Code::BadLabelName,
                l.span,
                format!("'{raw}' is not a valid Prometheus label name"),
            )
            .hint(format!(
                "use letters, digits and '_', not starting with a digit or '__', e.g. '{}'",
                sanitized(exposed.trim_start_matches('_'))
            ));
        }
        if let Some(first) = labels.iter().find(|f| f.exposed == exposed) {
            sink.report(
                Code::DuplicateLabel,
                l.span,
                format!(
                    "label '{raw}' is listed twice (as '{}' on line {})",
                    first.raw, first.span.line
                ),
            )
            .hint("each label name may appear once");
        } else {
            labels.push(Label {
                exposed,
                raw,
                span: l.span,
            });
        }
    }
    labels
}

/// The metric instance feeding the metric; `None` when it failed to compile (reported
/// already) or is of another template (reported here).
fn metric_instance<'i>(
    obj: usize,
    m: &RawMetric<'_>,
    instances: &Instances<'i>,
    sink: &mut Sink<'_>,
) -> Option<&'i MetricInstance> {
    let params = instances.params[obj].as_ref()?;
    let InstanceParams::Metric(metric) = params else {
        sink.report(
            Code::IncompatibleInstance,
            m.instance_name.span,
            format!(
                "'{}' is a {} instance; prometheus metrics need a metric instance",
                m.instance_name.as_str().unwrap_or_default(),
                params.template()
            ),
        );
        return None;
    };
    Some(metric)
}

/// For each label, the instance dimension that feeds it. Labels that are no dimension and
/// dimensions no label lists are reported (with a suggestion for a misspelt label); `None`
/// then.
fn label_dimensions(
    labels: &[Label<'_>],
    metric: &MetricInstance,
    instance_name: &str,
    labels_at: Span,
    sink: &mut Sink<'_>,
) -> Option<Vec<usize>> {
    let before = sink.out.error_count();
    let mut label_dimensions = Vec::with_capacity(labels.len());
    // Dimensions a misspelt label was matched to; "lacks 'x'" would repeat that diagnostic.
    let mut suggested: Vec<&str> = Vec::new();
    let names = || metric.dimensions.iter().map(|d| d.name.as_str());
    for label in labels {
        if let Some(i) = metric.dimension(label.raw) {
            label_dimensions.push(i);
            continue;
        }
        let d = sink.report(
            Code::LabelMismatch,
            label.span,
            format!(
                "label '{}' is not a dimension of instance '{instance_name}'",
                label.raw
            ),
        );
        match suggest(label.raw, names()) {
            Some(s) => {
                d.hint(format!("did you mean '{s}'?"));
                suggested.push(s);
            }
            None => d.hint(format!(
                "its dimensions are: {}",
                names().collect::<Vec<_>>().join(", ")
            )),
        }
    }
    let missing: Vec<&str> = names()
        .filter(|d| !labels.iter().any(|l| l.raw == *d) && !suggested.contains(d))
        .collect();
    if !missing.is_empty() {
        sink.report(
            Code::LabelMismatch,
            labels_at,
            format!(
                "label_names lacks dimension{} {} of instance '{instance_name}'",
                if missing.len() == 1 { "" } else { "s" },
                missing
                    .iter()
                    .map(|d| format!("'{d}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .hint("label_names must list every dimension of the instance exactly once");
    }
    (sink.out.error_count() == before).then_some(label_dimensions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(mangle("/my.ns-x y"), "my_nsx_y");
        assert_eq!(sanitized("mongo-sent"), "mongo_sent");
    }
}
