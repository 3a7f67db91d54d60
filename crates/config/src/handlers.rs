//! Handler objects (`kind: handler` and the legacy `prometheus`, `stdio`, `kubernetesenv`).
//!
//! The field reference (the user documentation) is in the crate docs; keep them in step.

use meshmeter_attributes::Duration;
use meshmeter_prommodel::{check_bounds, MAX_BUCKETS};

use crate::diagnostic::{Code, Sink, WithHint};
use crate::fields;
use crate::objects::{Category, Object};
use crate::snapshot::{Buckets, ExpiryPolicy, LogLevel, LogStream, MetricKind, StdioParams};
use crate::source::Span;
use crate::yaml::Node;

/// A prometheus metric before its instance is resolved.
#[derive(Debug)]
pub(crate) struct RawMetric<'n> {
    pub(crate) entry: Span,
    pub(crate) name: Option<&'n Node>,
    pub(crate) instance_name: &'n Node,
    pub(crate) kind: MetricKind,
    pub(crate) label_names: Vec<&'n Node>,
    /// The `label_names` key, or the entry when absent.
    pub(crate) labels_at: Span,
    pub(crate) buckets: Option<Buckets>,
    pub(crate) description: String,
    /// The namespace prefix and where it was written (the entry when defaulted).
    pub(crate) namespace: (String, Span),
}

/// A handler's parameters before references are resolved.
#[derive(Debug)]
pub(crate) enum RawHandler<'n> {
    Prometheus {
        metrics: Vec<RawMetric<'n>>,
        expiry: Option<ExpiryPolicy>,
    },
    Stdio(StdioParams),
    KubernetesEnv,
}

const PROMETHEUS: &[&str] = &["metrics", "metrics_expiration_policy"];
const METRIC: &[&str] = &[
    "name",
    "instance_name",
    "kind",
    "label_names",
    "buckets",
    "description",
    "namespace",
];
const STDIO: &[&str] = &[
    "severity_levels",
    "metric_level",
    "output_as_json",
    "log_stream",
    "output_path",
    "max_megabytes_before_rotation",
    "max_days_before_rotation",
    "max_rotated_files",
];
const KUBERNETESENV: &[&str] = &[
    "kubeconfig_path",
    "cache_refresh_duration",
    "cluster_registries_namespace",
    "cluster_domain_name",
];
const LEVELS: [&str; 3] = ["INFO", "WARNING", "ERROR"];

/// Reads a handler object's params; `None` when anything is wrong (reported).
pub(crate) fn read<'n>(obj: &Object<'n>, sink: &mut Sink<'_>) -> Option<RawHandler<'n>> {
    let Category::Handler(adapter) = obj.category else {
        return None;
    };
    let before = sink.out.error_count();
    let body = obj.body;
    let what = |a: &str| format!("the {} of {a} handler '{}'", obj.body_name, obj.name);
    let handler = match adapter {
        0 => {
            let f = fields::read_opt(body, &what("prometheus"), PROMETHEUS, sink)?;
            let mut metrics = Vec::new();
            if let Some(list) = f.get(0).and_then(|n| fields::list(n, "metrics", sink)) {
                for m in list {
                    if let Some(m) = metric(m, sink) {
                        metrics.push(m);
                    }
                }
            }
            let expiry = f.get(1).and_then(|n| expiry(n, sink));
            RawHandler::Prometheus { metrics, expiry }
        }
        1 => RawHandler::Stdio(stdio(body, obj.span, &what("stdio"), sink)?),
        _ => {
            fields::read_opt(body, &what("kubernetesenv"), KUBERNETESENV, sink)?;
            RawHandler::KubernetesEnv
        }
    };
    (sink.out.error_count() == before).then_some(handler)
}

fn metric<'n>(node: &'n Node, sink: &mut Sink<'_>) -> Option<RawMetric<'n>> {
    let f = fields::read(node, "a prometheus metric", METRIC, sink)?;
    let name = f.get(0);
    if let Some(n) = name {
        fields::text(n, "name", sink)?;
    }
    let Some(instance_name) = f.get(1) else {
        if f.misspelled(1) {
            return None;
        }
        sink.report(
            Code::MissingField,
            node.span,
            "metric has no 'instance_name'",
        )
        .hint(
            "name the metric instance that feeds it, e.g. `instance_name: mysize.instance.default`",
        );
        return None;
    };
    fields::text(instance_name, "instance_name", sink)?;
    let kind = metric_kind(&f, node, sink)?;
    let mut label_names = Vec::new();
    if let Some(list) = f.get(3).and_then(|n| fields::list(n, "label_names", sink)) {
        for l in list {
            if fields::text(l, "a label name", sink).is_some() {
                label_names.push(l);
            }
        }
    }
    let buckets = match (f.get(4), kind) {
        (Some(b), Some(MetricKind::Distribution)) => Some(buckets(b, sink)?),
        (Some(_), Some(k)) => {
            ignored_buckets(k, f.key(4).map_or(node.span, |k| k.span), sink);
            None
        }
        _ => None,
    };
    let description = match f.get(5) {
        Some(n) => fields::text(n, "description", sink)?.to_owned(),
        None => String::new(),
    };
    let namespace = match f.get(6) {
        Some(n) => (fields::text(n, "namespace", sink)?.to_owned(), n.span),
        None => ("istio".to_owned(), node.span),
    };
    Some(RawMetric {
        entry: node.span,
        name,
        instance_name,
        kind: kind?,
        label_names,
        labels_at: f.key(3).map_or(node.span, |k| k.span),
        buckets,
        description,
        namespace,
    })
}

/// A metric's `kind` (required): COUNTER, GAUGE or DISTRIBUTION. `Some(None)` when missing
/// or unset (reported; the rest of the metric is still checked), `None` when not one of the
/// names (reported; reading the metric stops there).
fn metric_kind(
    f: &fields::Fields<'_>,
    node: &Node,
    sink: &mut Sink<'_>,
) -> Option<Option<MetricKind>> {
    let Some(k) = f.get(2) else {
        if !f.misspelled(2) {
            sink.report(Code::MissingField, node.span, "metric has no 'kind'")
                .hint("one of COUNTER, GAUGE, DISTRIBUTION");
        }
        return Some(None);
    };
    let names = ["UNSPECIFIED", "GAUGE", "COUNTER", "DISTRIBUTION"];
    Some(match fields::enumeration(k, "kind", &names, sink)? {
        1 => Some(MetricKind::Gauge),
        2 => Some(MetricKind::Counter),
        3 => Some(MetricKind::Distribution),
        _ => {
            sink.report(Code::InvalidEnum, k.span, "metric kind must be set")
                .hint("one of COUNTER, GAUGE, DISTRIBUTION");
            None
        }
    })
}

/// Warns that `buckets` (at `key`) mean nothing for a COUNTER or GAUGE.
fn ignored_buckets(kind: MetricKind, key: Span, sink: &mut Sink<'_>) {
    sink.report(
        Code::BucketsIgnored,
        key,
        format!(
            "buckets are ignored for a {} metric",
            if kind == MetricKind::Counter {
                "COUNTER"
            } else {
                "GAUGE"
            }
        ),
    )
    .hint("buckets only apply to kind DISTRIBUTION");
}

/// Reads `buckets`: exactly one of the three layouts.
fn buckets(node: &Node, sink: &mut Sink<'_>) -> Option<Buckets> {
    let f = fields::read(
        node,
        "buckets",
        &["explicit_buckets", "linear_buckets", "exponential_buckets"],
        sink,
    )?;
    let given: Vec<usize> = (0..3).filter(|&i| f.get(i).is_some()).collect();
    let &[which] = given.as_slice() else {
        let d = sink.report(
            Code::BadBuckets,
            node.span,
            if given.is_empty() {
                "buckets names no bucket layout".to_owned()
            } else {
                "buckets names more than one layout".to_owned()
            },
        );
        d.hint("give exactly one of explicit_buckets, linear_buckets, exponential_buckets");
        return None;
    };
    let body = f.get(which)?;
    match which {
        0 => explicit_buckets(body, sink),
        1 => linear_buckets(body, sink),
        _ => exponential_buckets(body, sink),
    }
}

/// Reports a bucket layout that makes no sense; always `None`, for `return bad(..)`.
fn bad<T>(sink: &mut Sink<'_>, at: Span, msg: String, hint: &str) -> Option<T> {
    sink.report(Code::BadBuckets, at, msg).hint(hint);
    None
}

/// `explicit_buckets {bounds}`: 1 to [`MAX_BUCKETS`] strictly increasing numbers.
fn explicit_buckets(body: &Node, sink: &mut Sink<'_>) -> Option<Buckets> {
    let f = fields::read(body, "explicit_buckets", &["bounds"], sink)?;
    let Some(list) = f.get(0) else {
        return bad(
            sink,
            body.span,
            "explicit_buckets has no bounds".into(),
            "add `bounds: [0.1, 1, 10]`",
        );
    };
    let items = fields::list(list, "bounds", sink)?;
    if items.is_empty() {
        return bad(
            sink,
            list.span,
            "bounds is empty".into(),
            "list at least one upper bound",
        );
    }
    if items.len() > MAX_BUCKETS as usize {
        return bad(
            sink,
            list.span,
            format!("{} bounds; at most {MAX_BUCKETS} are allowed", items.len()),
            "use fewer, wider buckets",
        );
    }
    let mut bounds = Vec::with_capacity(items.len());
    for item in items {
        let v = fields::number(item, "a bound", sink)?;
        if let Some(&prev) = bounds.last() {
            if v <= prev {
                return bad(
                    sink,
                    item.span,
                    format!("bound {v} is not greater than the bound before it ({prev})"),
                    "bounds must be strictly increasing",
                );
            }
        }
        bounds.push(v);
    }
    Some(Buckets::Explicit(bounds))
}

/// `linear_buckets {num_finite_buckets, width, offset}`.
fn linear_buckets(body: &Node, sink: &mut Sink<'_>) -> Option<Buckets> {
    let f = fields::read(
        body,
        "linear_buckets",
        &["num_finite_buckets", "width", "offset"],
        sink,
    )?;
    let n = finite_count(&f, body, sink)?;
    let width = above(
        &f,
        1,
        body,
        Above {
            layout: "linear_buckets",
            name: "width",
            min: 0.0,
            too_small: "greater than 0",
            hint: "buckets must grow",
            example: "width: 10",
        },
        sink,
    )?;
    let offset = match f.get(2) {
        Some(o) => fields::number(o, "offset", sink)?,
        None => 0.0,
    };
    let linear = Buckets::Linear {
        num_finite_buckets: n,
        width,
        offset,
    };
    usable(linear, f.get(1).map_or(body.span, |w| w.span), sink)
}

/// A generated layout whose bounds can make a histogram (a width lost in the offset's
/// rounding gives equal bounds, a huge one infinite bounds): checked here, where the operator
/// sees it, rather than when the metric is built.
fn usable(buckets: Buckets, at: Span, sink: &mut Sink<'_>) -> Option<Buckets> {
    match check_bounds(&buckets.bounds()) {
        Ok(()) => Some(buckets),
        Err(e) => bad(
            sink,
            at,
            format!("the bounds it generates are unusable: {e}"),
            "generated bounds must be finite and strictly increasing",
        ),
    }
}

/// `exponential_buckets {num_finite_buckets, growth_factor, scale}`, whose largest bound
/// must stay finite.
fn exponential_buckets(body: &Node, sink: &mut Sink<'_>) -> Option<Buckets> {
    let f = fields::read(
        body,
        "exponential_buckets",
        &["num_finite_buckets", "growth_factor", "scale"],
        sink,
    )?;
    let n = finite_count(&f, body, sink)?;
    let growth_factor = above(
        &f,
        1,
        body,
        Above {
            layout: "exponential_buckets",
            name: "growth_factor",
            min: 1.0,
            too_small: "greater than 1",
            hint: "buckets must grow",
            example: "growthFactor: 10",
        },
        sink,
    )?;
    let scale = above(
        &f,
        2,
        body,
        Above {
            layout: "exponential_buckets",
            name: "scale",
            min: 0.0,
            too_small: "greater than 0",
            hint: "the first bound is `scale`",
            example: "scale: 1",
        },
        sink,
    )?;
    let top = scale * growth_factor.powi(n as i32);
    if !top.is_finite() {
        return bad(
            sink,
            body.span,
            "the largest bound overflows".into(),
            "use fewer buckets or a smaller growth_factor",
        );
    }
    let exponential = Buckets::Exponential {
        num_finite_buckets: n,
        growth_factor,
        scale,
    };
    usable(exponential, f.get(1).map_or(body.span, |g| g.span), sink)
}

/// A required bucket parameter that must exceed a minimum, and how to explain it.
struct Above {
    layout: &'static str,
    name: &'static str,
    min: f64,
    too_small: &'static str,
    hint: &'static str,
    example: &'static str,
}

/// Field `i` of a bucket layout: present, a number, and above `rule.min`.
fn above(
    f: &fields::Fields<'_>,
    i: usize,
    body: &Node,
    rule: Above,
    sink: &mut Sink<'_>,
) -> Option<f64> {
    let Some(node) = f.get(i) else {
        return bad(
            sink,
            body.span,
            format!("{} has no {}", rule.layout, rule.name),
            &format!("add e.g. `{}`", rule.example),
        );
    };
    let v = fields::number(node, rule.name, sink)?;
    if v <= rule.min {
        return bad(
            sink,
            node.span,
            format!("{} {v} must be {}", rule.name, rule.too_small),
            rule.hint,
        );
    }
    Some(v)
}

fn finite_count(f: &fields::Fields<'_>, body: &Node, sink: &mut Sink<'_>) -> Option<u32> {
    let Some(node) = f.get(0) else {
        sink.report(Code::BadBuckets, body.span, "num_finite_buckets is missing")
            .hint("add e.g. `numFiniteBuckets: 8`");
        return None;
    };
    let n = fields::count(node, "num_finite_buckets", sink)?;
    if n == 0 || n > MAX_BUCKETS {
        sink.report(
            Code::BadBuckets,
            node.span,
            format!("num_finite_buckets {n} is out of range"),
        )
        .hint(format!("use 1 to {MAX_BUCKETS}"));
        return None;
    }
    Some(n)
}

fn expiry(node: &Node, sink: &mut Sink<'_>) -> Option<ExpiryPolicy> {
    let f = fields::read(
        node,
        "metrics_expiration_policy",
        &["metrics_expiry_duration", "expiry_check_interval_duration"],
        sink,
    )?;
    let Some(e) = f.get(0) else {
        sink.report(
            Code::MissingField,
            node.span,
            "metrics_expiration_policy has no metrics_expiry_duration",
        )
        .hint("add e.g. `metricsExpiryDuration: 10m`");
        return None;
    };
    // Messages name the field as the operator spelled it.
    let spelled =
        |i: usize, default: &'static str| f.key(i).and_then(Node::as_str).unwrap_or(default);
    let expiry = duration(e, spelled(0, "metrics_expiry_duration"), sink)?;
    let check_interval = match f.get(1) {
        Some(c) => duration(c, spelled(1, "expiry_check_interval_duration"), sink)?,
        None => expiry / 2,
    };
    Some(ExpiryPolicy {
        expiry,
        check_interval,
    })
}

fn duration(node: &Node, what: &str, sink: &mut Sink<'_>) -> Option<std::time::Duration> {
    let t = fields::text(node, what, sink)?;
    match t.parse::<Duration>().ok().and_then(Duration::to_std) {
        Some(d) if !d.is_zero() => Some(d),
        _ => {
            sink.report(
                Code::BadDuration,
                node.span,
                format!("{what} '{t}' is not a positive duration"),
            )
            .hint("write a Go duration such as `10m`, `90s` or `1h30m`");
            None
        }
    }
}

fn level(node: Option<&Node>, what: &str, sink: &mut Sink<'_>) -> Option<LogLevel> {
    let Some(node) = node else {
        return Some(LogLevel::Info);
    };
    Some(match fields::enumeration(node, what, &LEVELS, sink)? {
        0 => LogLevel::Info,
        1 => LogLevel::Warning,
        _ => LogLevel::Error,
    })
}

fn stdio(body: Option<&Node>, at: Span, what: &str, sink: &mut Sink<'_>) -> Option<StdioParams> {
    let f = fields::read_opt(body, what, STDIO, sink)?;
    let mut severity_levels = Vec::new();
    if let Some(entries) = f
        .get(0)
        .and_then(|n| fields::map(n, "severity_levels", sink))
    {
        for (k, v) in entries {
            if let (Some(name), Some(l)) = (
                fields::text(k, "a severity", sink),
                level(Some(v), "severity level", sink),
            ) {
                severity_levels.push((name.to_owned(), l));
            }
        }
    }
    let metric_level = level(f.get(1), "metric_level", sink)?;
    let output_as_json = match f.get(2) {
        Some(n) => fields::boolean(n, "output_as_json", sink)?,
        None => false,
    };
    let log_stream = match f.get(3) {
        Some(n) => match fields::enumeration(
            n,
            "log_stream",
            &["STDOUT", "STDERR", "FILE", "ROTATED_FILE"],
            sink,
        )? {
            0 => LogStream::Stdout,
            1 => LogStream::Stderr,
            2 => LogStream::File,
            _ => LogStream::RotatedFile,
        },
        None => LogStream::Stdout,
    };
    let output_path = match f.get(4) {
        Some(n) => fields::text(n, "output_path", sink)?.to_owned(),
        None => String::new(),
    };
    if matches!(log_stream, LogStream::File | LogStream::RotatedFile) && output_path.is_empty() {
        let at = f.get(3).map_or(at, |n| n.span);
        sink.report(
            Code::MissingField,
            at,
            "log_stream FILE needs an output_path",
        )
        .hint("add e.g. `outputPath: /var/log/meshmeter/access.log`");
        return None;
    }
    let mut numbers = [0u32; 3];
    for (i, slot) in numbers.iter_mut().enumerate() {
        if let Some(n) = f.get(5 + i) {
            *slot = fields::count(n, STDIO[5 + i], sink)?;
        }
    }
    Some(StdioParams {
        severity_levels,
        metric_level,
        output_as_json,
        log_stream,
        output_path,
        max_megabytes_before_rotation: numbers[0],
        max_days_before_rotation: numbers[1],
        max_rotated_files: numbers[2],
    })
}
