//! Compiling expressions written in YAML, with errors located in the file.

use meshmeter_attributes::{Manifest, ValueType};
use meshmeter_expr::Expression;

use crate::diagnostic::{Code, Severity, Sink, WithHint};
use crate::source::Span;
use crate::yaml::{Node, Value};

/// The result type a field needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    Any,
    Bool,
    Timestamp,
    /// A metric value: INT64, DOUBLE or DURATION (STRING with a warning).
    MetricValue,
}

/// Compiles the scalar `node` as an expression for the field `what`.
pub(crate) fn compile(
    node: &Node,
    what: &str,
    manifest: &Manifest,
    want: Want,
    sink: &mut Sink<'_>,
) -> Option<Expression> {
    let scalar = match &node.value {
        Value::Scalar(s) => s,
        Value::Invalid => return None,
        _ => {
            sink.report(
                Code::WrongNodeType,
                node.span,
                format!(
                    "{what} must be an expression (text), found {}",
                    node.describe()
                ),
            );
            return None;
        }
    };
    let source = scalar.text.as_str();
    let expression = match Expression::compile(source, manifest) {
        Ok(e) => e,
        Err(err) => {
            let span = err.span();
            let (at, located) = locate(node, span.clone());
            let mut message = format!("{what}: {}", err.message());
            if !located {
                let offset = source.get(..span.start).map_or(0, |s| s.chars().count()) + 1;
                message.push_str(&format!(" (at character {offset} of the expression)"));
            }
            let d = sink.report_raw(err.code(), Severity::Error, at, message);
            if let Some(h) = err.hint() {
                d.hint(h);
            }
            return None;
        }
    };
    let t = expression.result_type();
    let problem = match want {
        Want::Any => None,
        Want::Bool => (t != ValueType::Bool).then_some("BOOL"),
        Want::Timestamp => (t != ValueType::Timestamp).then_some("TIMESTAMP"),
        Want::MetricValue => (!matches!(
            t,
            ValueType::Int64 | ValueType::Double | ValueType::Duration | ValueType::String
        ))
        .then_some("a number (INT64, DOUBLE or DURATION)"),
    };
    if want == Want::MetricValue && t == ValueType::String {
        // Mixer accepted STRING and parsed it per report; configurations relying on that keep
        // working, but each report whose text is not a number loses its instance.
        sink.report(
            Code::StringMetricValue,
            node.span,
            format!("{what} `{source}` is STRING: it is parsed as a number for each report"),
        )
        .hint("reports whose text is not a number are counted in meshmeter_dispatch_errors_total; prefer a numeric attribute, e.g. `connection.sent.bytes | 0`");
    }
    if let Some(expected) = problem {
        let d = sink.report(
            Code::ExpressionType,
            node.span,
            format!("{what} must be {expected}, but `{source}` is {t}"),
        );
        if want == Want::Bool {
            d.hint("compare it with something, e.g. `context.protocol == \"tcp\"`");
        }
        return None;
    }
    Some(expression)
}

/// Where a byte range of the expression is in the file: exact when the scalar's text maps
/// onto the source (see [`crate::yaml::Scalar::segments`]); otherwise the start of the scalar,
/// flagged as not located.
fn locate(node: &Node, range: std::ops::Range<usize>) -> (Span, bool) {
    let Value::Scalar(s) = &node.value else {
        return (node.span, false);
    };
    let Some(seg) = s
        .segments
        .iter()
        .rev()
        .find(|seg| seg.text_start <= range.start)
    else {
        return (node.span, false);
    };
    let seg_end = seg.text_start
        + s.text[seg.text_start..]
            .char_indices()
            .nth(seg.span.width as usize)
            .map_or(s.text.len() - seg.text_start, |(i, _)| i);
    let end = range.end.min(seg_end).max(range.start);
    let (Some(before), Some(inside)) = (
        s.text.get(seg.text_start..range.start),
        s.text.get(range.start..end),
    ) else {
        return (node.span, false);
    };
    if range.start > seg_end {
        // In the fold between two lines: that is the end of the earlier line.
        return (node.span, false);
    }
    let col = seg.span.col + u32::try_from(before.chars().count()).unwrap_or(0);
    let width = u32::try_from(inside.chars().count()).unwrap_or(1).max(1);
    (
        Span {
            col,
            width,
            ..seg.span
        },
        true,
    )
}
