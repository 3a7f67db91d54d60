//! Reading mappings against a list of known fields, in both spellings Istio accepted.
//!
//! Istio's YAML went through the protobuf JSON mapping, so `label_names` and `labelNames` are
//! the same field. A schema lists the snake_case names; camelCase is derived.

use crate::diagnostic::{Code, Sink, WithHint};
use crate::yaml::{Node, Value};

/// The camelCase spelling of a snake_case field name.
pub fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Edit distance over chars where swapping two neighbours counts as one edit (optimal string
/// alignment), so `vaule` is one typo away from `value`. Names are short; quadratic is fine.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for (j, cell) in d.iter_mut().take(w).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        d[i * w] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The candidate closest to `name` when it is close enough to be a typo. Case differences
/// count as half a typo so that `COUNTR` still finds `COUNTER` and `Counter` finds it first.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).clamp(1, 4);
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let exact = edit_distance(name, c);
            let folded = edit_distance(&lower, &c.to_lowercase());
            (exact.min(folded + 1), c)
        })
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// The fields found in one mapping, indexed like the schema.
pub struct Fields<'n> {
    found: Vec<Option<(&'n Node, &'n Node)>>,
    /// Fields an unknown key was taken to be a typo of.
    suggested: Vec<bool>,
}

impl<'n> Fields<'n> {
    /// The value of schema field `i`, if given (an explicit `null` counts as absent).
    pub fn get(&self, i: usize) -> Option<&'n Node> {
        self.found[i]
            .map(|(_, v)| v)
            .filter(|v| v.value != Value::Null)
    }

    /// Whether field `i` is absent but an unknown key was reported as a likely typo of it, so
    /// that "missing" would only repeat that diagnostic.
    pub fn misspelled(&self, i: usize) -> bool {
        self.suggested[i]
    }

    /// The key node of schema field `i`, if given.
    pub fn key(&self, i: usize) -> Option<&'n Node> {
        self.found[i].map(|(k, _)| k)
    }
}

/// Reads `node` as a mapping of the `schema` fields (snake_case names). Unknown keys and a
/// field given in both spellings are reported. `Null` reads as an empty mapping; anything else
/// that is not a mapping is reported and gives `None`.
pub fn read<'n>(
    node: &'n Node,
    what: &str,
    schema: &[&str],
    sink: &mut Sink<'_>,
) -> Option<Fields<'n>> {
    let mut found: Vec<Option<(&'n Node, &'n Node)>> = vec![None; schema.len()];
    let entries = match &node.value {
        Value::Null => {
            return Some(Fields {
                suggested: vec![false; found.len()],
                found,
            })
        }
        Value::Map(entries) => entries,
        Value::Invalid => return None,
        _ => {
            sink.report(
                Code::WrongNodeType,
                node.span,
                format!("{what} must be a mapping, found {}", node.describe()),
            );
            return None;
        }
    };
    let camels: Vec<String> = schema.iter().map(|s| camel(s)).collect();
    let mut suggested = vec![false; schema.len()];
    for (key, value) in entries {
        let Some(name) = key.as_str() else {
            sink.report(
                Code::WrongNodeType,
                key.span,
                format!("keys of {what} must be text"),
            );
            continue;
        };
        let index = schema
            .iter()
            .zip(&camels)
            .position(|(s, c)| *s == name || c == name);
        match index {
            Some(i) => {
                if let Some((first, _)) = found[i] {
                    sink.report(
                        Code::DuplicateKey,
                        key.span,
                        format!(
                            "'{}' is given twice (also as '{}' at line {})",
                            name,
                            first.as_str().unwrap_or_default(),
                            first.span.line
                        ),
                    )
                    .hint("snake_case and camelCase spellings name the same field; keep one");
                } else {
                    found[i] = Some((key, value));
                }
            }
            None => {
                let spellings = schema
                    .iter()
                    .copied()
                    .chain(camels.iter().map(String::as_str));
                let d = sink.report(
                    Code::UnknownField,
                    key.span,
                    format!("unknown field '{name}' in {what}"),
                );
                match suggest(name, spellings) {
                    Some(s) => {
                        d.hint(format!("did you mean '{s}'?"));
                        if let Some(i) = schema
                            .iter()
                            .zip(&camels)
                            .position(|(a, b)| *a == s || b == s)
                        {
                            suggested[i] = true;
                        }
                    }
                    None if schema.is_empty() => d.hint(format!("{what} takes no fields")),
                    None => d.hint(format!("the fields of {what} are: {}", schema.join(", "))),
                }
            }
        }
    }
    Some(Fields { found, suggested })
}

/// [`read`] for an optional node: absent reads as an empty mapping.
pub fn read_opt<'n>(
    node: Option<&'n Node>,
    what: &str,
    schema: &[&str],
    sink: &mut Sink<'_>,
) -> Option<Fields<'n>> {
    match node {
        Some(n) => read(n, what, schema, sink),
        None => Some(Fields {
            found: vec![None; schema.len()],
            suggested: vec![false; schema.len()],
        }),
    }
}

/// A scalar's text, reporting anything else.
pub fn text<'n>(node: &'n Node, what: &str, sink: &mut Sink<'_>) -> Option<&'n str> {
    match node.as_str() {
        Some(s) => Some(s),
        None if node.value == Value::Invalid => None,
        None => {
            sink.report(
                Code::WrongNodeType,
                node.span,
                format!("{what} must be text, found {}", node.describe()),
            );
            None
        }
    }
}

/// A list's items, reporting anything else. `Null` is an empty list.
pub fn list<'n>(node: &'n Node, what: &str, sink: &mut Sink<'_>) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        Value::Null => Some(&[]),
        Value::Invalid => None,
        _ => {
            sink.report(
                Code::WrongNodeType,
                node.span,
                format!("{what} must be a list, found {}", node.describe()),
            );
            None
        }
    }
}

/// A mapping's entries, reporting anything else. `Null` is an empty mapping.
pub fn map<'n>(node: &'n Node, what: &str, sink: &mut Sink<'_>) -> Option<&'n [(Node, Node)]> {
    match &node.value {
        Value::Map(entries) => Some(entries),
        Value::Null => Some(&[]),
        Value::Invalid => None,
        _ => {
            sink.report(
                Code::WrongNodeType,
                node.span,
                format!("{what} must be a mapping, found {}", node.describe()),
            );
            None
        }
    }
}

/// A finite number.
pub fn number(node: &Node, what: &str, sink: &mut Sink<'_>) -> Option<f64> {
    let t = text(node, what, sink)?;
    match t.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Some(v),
        _ => {
            sink.report(
                Code::BadNumber,
                node.span,
                format!("{what} must be a finite number, found '{t}'"),
            );
            None
        }
    }
}

/// A non-negative integer that fits in `u32`.
pub fn count(node: &Node, what: &str, sink: &mut Sink<'_>) -> Option<u32> {
    let t = text(node, what, sink)?;
    match t.trim().parse::<u32>() {
        Ok(v) => Some(v),
        Err(_) => {
            sink.report(
                Code::BadNumber,
                node.span,
                format!("{what} must be a whole number from 0 to 4294967295, found '{t}'"),
            );
            None
        }
    }
}

/// `true` or `false`.
pub fn boolean(node: &Node, what: &str, sink: &mut Sink<'_>) -> Option<bool> {
    match text(node, what, sink)? {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        other => {
            sink.report(
                Code::WrongNodeType,
                node.span,
                format!("{what} must be true or false, found '{other}'"),
            );
            None
        }
    }
}

/// One of a protobuf enum's names, or its number (the JSON mapping accepts both). Returns the
/// index into `names`.
pub fn enumeration(node: &Node, what: &str, names: &[&str], sink: &mut Sink<'_>) -> Option<usize> {
    let t = text(node, what, sink)?;
    if let Some(i) = names.iter().position(|n| *n == t) {
        return Some(i);
    }
    if let Ok(i) = t.parse::<usize>() {
        if i < names.len() {
            return Some(i);
        }
    }
    let d = sink.report(
        Code::InvalidEnum,
        node.span,
        format!("{what} '{t}' is not one of {}", names.join(", ")),
    );
    if let Some(s) = suggest(t, names.iter().copied()) {
        d.hint(format!("did you mean '{s}'?"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!(camel("monitored_resource_type"), "monitoredResourceType");
        assert_eq!(camel("value"), "value");
        assert_eq!(
            suggest("instance_nme", ["instance_name", "instanceName", "kind"]),
            Some("instance_name")
        );
        assert_eq!(
            suggest("labelNames", ["label_names", "labelNames"]),
            Some("labelNames")
        );
        assert_eq!(suggest("Counter", ["COUNTER", "GAUGE"]), Some("COUNTER"));
        assert_eq!(suggest("zzz", ["COUNTER", "GAUGE"]), None);
    }
}
