//! Instance objects (`kind: instance` and the legacy `metric`, `logentry`, `kubernetes`).
//!
//! The field reference (the user documentation) is in the crate docs; keep them in step.

use meshmeter_attributes::Manifest;

use crate::diagnostic::{Code, Sink, WithHint};
use crate::exprs::{self, Want};
use crate::fields;
use crate::objects::{Category, Object};
use crate::snapshot::{
    AttributeBinding, InstanceParams, KubernetesInstance, LogEntryInstance, MetricInstance,
    NamedExpression,
};
use crate::yaml::Node;

const METRIC: &[&str] = &[
    "value",
    "dimensions",
    "monitored_resource_type",
    "monitored_resource_dimensions",
];
const LOGENTRY: &[&str] = &[
    "variables",
    "timestamp",
    "severity",
    "monitored_resource_type",
    "monitored_resource_dimensions",
];
const KUBERNETES_INPUTS: [&str; 7] = [
    "source_uid",
    "source_ip",
    "destination_uid",
    "destination_ip",
    "origin_uid",
    "origin_ip",
    "destination_port",
];

/// Compiles an instance object's body; `None` when anything in it is wrong (reported).
pub(crate) fn build(
    obj: &Object<'_>,
    manifest: &Manifest,
    sink: &mut Sink<'_>,
) -> Option<InstanceParams> {
    let Category::Instance(template) = obj.category else {
        return None;
    };
    let empty = Node {
        value: crate::yaml::Value::Null,
        span: obj.span,
    };
    let body = obj.body.unwrap_or(&empty);
    let before = sink.out.error_count();
    let what = format!(
        "the {} of {} instance '{}'",
        obj.body_name,
        crate::objects::TEMPLATES[template],
        obj.name
    );
    let params = match template {
        0 => metric(obj, body, &what, manifest, sink)?,
        1 => logentry(body, &what, manifest, sink)?,
        _ => kubernetes(body, &what, manifest, sink)?,
    };
    (sink.out.error_count() == before).then_some(params)
}

/// Template `metric`: `value` is required.
fn metric(
    obj: &Object<'_>,
    body: &Node,
    what: &str,
    manifest: &Manifest,
    sink: &mut Sink<'_>,
) -> Option<InstanceParams> {
    let f = fields::read(body, what, METRIC, sink)?;
    let value = match f.get(0) {
        Some(v) => exprs::compile(v, "the metric value", manifest, Want::MetricValue, sink),
        None if f.misspelled(0) => None,
        None => {
            sink.report(
                Code::MissingField,
                body.span,
                format!("metric instance '{}' has no 'value'", obj.name),
            )
            .hint("add e.g. `value: connection.sent.bytes | 0`");
            None
        }
    };
    let dimensions = named(f.get(1), "dimension", manifest, sink);
    let monitored_resource_type = f
        .get(2)
        .and_then(|n| exprs::compile(n, "monitored_resource_type", manifest, Want::Any, sink));
    let mrd = named(f.get(3), "monitored resource dimension", manifest, sink);
    Some(InstanceParams::Metric(MetricInstance {
        value: value?,
        dimensions,
        monitored_resource_type,
        monitored_resource_dimensions: mrd,
    }))
}

/// Template `logentry`.
fn logentry(
    body: &Node,
    what: &str,
    manifest: &Manifest,
    sink: &mut Sink<'_>,
) -> Option<InstanceParams> {
    let f = fields::read(body, what, LOGENTRY, sink)?;
    let variables = named(f.get(0), "variable", manifest, sink);
    let timestamp = f
        .get(1)
        .and_then(|n| exprs::compile(n, "the timestamp", manifest, Want::Timestamp, sink));
    let severity = f
        .get(2)
        .and_then(|n| exprs::compile(n, "the severity", manifest, Want::Any, sink));
    let monitored_resource_type = f
        .get(3)
        .and_then(|n| exprs::compile(n, "monitored_resource_type", manifest, Want::Any, sink));
    let mrd = named(f.get(4), "monitored resource dimension", manifest, sink);
    Some(InstanceParams::LogEntry(LogEntryInstance {
        severity,
        timestamp,
        variables,
        monitored_resource_type,
        monitored_resource_dimensions: mrd,
    }))
}

/// Template `kubernetes`: identity inputs and attribute bindings.
fn kubernetes(
    body: &Node,
    what: &str,
    manifest: &Manifest,
    sink: &mut Sink<'_>,
) -> Option<InstanceParams> {
    let mut schema = KUBERNETES_INPUTS.to_vec();
    schema.push("attribute_bindings");
    let f = fields::read(body, what, &schema, sink)?;
    let mut inputs = Vec::new();
    for (i, name) in KUBERNETES_INPUTS.iter().enumerate() {
        if let Some(n) = f.get(i) {
            if let Some(e) = exprs::compile(n, name, manifest, Want::Any, sink) {
                inputs.push(NamedExpression {
                    name: (*name).to_owned(),
                    expression: e,
                });
            }
        }
    }
    let attribute_bindings = bindings(f.get(KUBERNETES_INPUTS.len()), manifest, sink);
    Some(InstanceParams::Kubernetes(KubernetesInstance {
        inputs,
        attribute_bindings,
    }))
}

/// A mapping of name -> expression, in the order written.
fn named(
    node: Option<&Node>,
    what: &str,
    manifest: &Manifest,
    sink: &mut Sink<'_>,
) -> Vec<NamedExpression> {
    let Some(node) = node else {
        return Vec::new();
    };
    let Some(entries) = fields::map(node, &format!("the {what}s"), sink) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let Some(name) = fields::text(k, &format!("a {what} name"), sink) else {
            continue;
        };
        if let Some(e) = exprs::compile(v, &format!("{what} '{name}'"), manifest, Want::Any, sink) {
            out.push(NamedExpression {
                name: name.to_owned(),
                expression: e,
            });
        }
    }
    out
}

fn bindings(
    node: Option<&Node>,
    manifest: &Manifest,
    sink: &mut Sink<'_>,
) -> Vec<AttributeBinding> {
    let Some(node) = node else {
        return Vec::new();
    };
    let Some(entries) = fields::map(node, "attribute_bindings", sink) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let (Some(name), Some(source)) = (
            fields::text(k, "an attribute name", sink),
            fields::text(v, "an attribute binding", sink),
        ) else {
            continue;
        };
        match manifest.id(name) {
            Some(attribute) => out.push(AttributeBinding {
                attribute,
                name: name.to_owned(),
                source: source.to_owned(),
            }),
            None => {
                let d = sink.report(
                    Code::UnknownAttribute,
                    k.span,
                    format!("attribute_bindings names undeclared attribute '{name}'"),
                );
                if let Some(s) = manifest.suggest(name) {
                    d.hint(format!("did you mean '{s}'?"));
                }
            }
        }
    }
    out
}
