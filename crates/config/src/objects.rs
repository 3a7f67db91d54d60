//! Kubernetes-style documents into typed objects: header checks and kind dispatch.

use crate::diagnostic::{Code, Sink, WithHint};
use crate::fields::{self, suggest};
use crate::snapshot::Origin;
use crate::source::Span;
use crate::yaml::{Node, Value};

/// The API group telemetry objects belong to.
pub(crate) const API_VERSION: &str = "config.istio.io/v1alpha2";

/// Templates meshmeter implements.
pub(crate) const TEMPLATES: [&str; 3] = ["metric", "logentry", "kubernetes"];
/// Adapters meshmeter implements.
pub(crate) const ADAPTERS: [&str; 3] = ["prometheus", "stdio", "kubernetesenv"];

/// What an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Category {
    Manifest,
    /// An instance of the template (index into [`TEMPLATES`]).
    Instance(usize),
    /// A handler for the adapter (index into [`ADAPTERS`]).
    Handler(usize),
    Rule,
}

impl Category {
    /// The word used in messages ("instance", "handler", ...), shared by both spellings.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Category::Manifest => "attribute manifest",
            Category::Instance(_) => "instance",
            Category::Handler(_) => "handler",
            Category::Rule => "rule",
        }
    }

    /// Objects of one family share one name space per Kubernetes namespace.
    pub(crate) fn family(self) -> u8 {
        match self {
            Category::Manifest => 0,
            Category::Instance(_) => 1,
            Category::Handler(_) => 2,
            Category::Rule => 3,
        }
    }
}

/// One telemetry object, header checked.
#[derive(Debug)]
pub(crate) struct Object<'n> {
    pub(crate) category: Category,
    /// The kind as written.
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) namespace: String,
    /// The kind-specific fields: `spec` for legacy kinds, `spec.params` for generic ones.
    pub(crate) body: Option<&'n Node>,
    /// What the body is called in messages (`spec` or `spec.params`).
    pub(crate) body_name: &'static str,
    /// `metadata.name`'s value, or the document start.
    pub(crate) span: Span,
    pub(crate) origin: Origin,
    /// The header was wrong (reported); the object only stands in for references.
    pub(crate) broken: bool,
}

const KNOWN_KINDS: [&str; 10] = [
    "attributemanifest",
    "instance",
    "metric",
    "logentry",
    "kubernetes",
    "handler",
    "prometheus",
    "stdio",
    "kubernetesenv",
    "rule",
];

/// The traffic kinds (API version, kind) that `meshmeter-netconfig` reads from the same files
/// and objects; telemetry skips them with an informational line that says so.
const TRAFFIC_KINDS: [(&str, &str); 4] = [
    ("networking.istio.io/v1alpha3", "DestinationRule"),
    ("networking.istio.io/v1alpha3", "VirtualService"),
    ("authentication.istio.io/v1alpha1", "MeshPolicy"),
    ("authentication.istio.io/v1alpha1", "Policy"),
];

/// Istio 1.1 templates meshmeter does not implement (policy checks, quotas, tracing, ...).
const OTHER_TEMPLATES: [&str; 9] = [
    "apikey",
    "authorization",
    "checknothing",
    "edge",
    "listentry",
    "quota",
    "reportnothing",
    "tracespan",
    "servicecontrolreport",
];

/// Istio 1.1 adapters meshmeter does not implement.
const OTHER_ADAPTERS: [&str; 18] = [
    "bypass",
    "circonus",
    "cloudwatch",
    "denier",
    "dogstatsd",
    "fluentd",
    "listchecker",
    "memquota",
    "noop",
    "opa",
    "rbac",
    "redisquota",
    "signalfx",
    "solarwinds",
    "stackdriver",
    "statsd",
    "zipkin",
    "servicecontrol",
];

/// Whether `kind` is an Istio 1.1 config.istio.io kind that meshmeter skips on purpose (as
/// opposed to a typo of one of ours).
fn other_istio_kind(kind: &str) -> bool {
    OTHER_TEMPLATES.contains(&kind)
        || OTHER_ADAPTERS.contains(&kind)
        || [
            "template",
            "adapter",
            "HTTPAPISpec",
            "HTTPAPISpecBinding",
            "QuotaSpec",
            "QuotaSpecBinding",
        ]
        .contains(&kind)
}

/// The family ([`Category::family`]) of objects of `kind`, as written; `None` for kinds
/// telemetry does not know.
pub(crate) fn family_of_kind(kind: &str) -> Option<u8> {
    let instance =
        kind == "instance" || TEMPLATES.contains(&kind) || OTHER_TEMPLATES.contains(&kind);
    let handler = kind == "handler" || ADAPTERS.contains(&kind) || OTHER_ADAPTERS.contains(&kind);
    match kind {
        "attributemanifest" => Some(Category::Manifest.family()),
        "rule" => Some(Category::Rule.family()),
        _ if instance => Some(Category::Instance(0).family()),
        _ if handler => Some(Category::Handler(0).family()),
        _ => None,
    }
}

/// Reads one document. Documents of kinds telemetry does not use give one informational
/// diagnostic and `None`; broken headers are reported and give `None`.
pub(crate) fn read<'n>(doc: &'n Node, origin: Origin, sink: &mut Sink<'_>) -> Option<Object<'n>> {
    match &doc.value {
        Value::Null | Value::Invalid => return None,
        Value::Map(_) => {}
        _ => {
            sink.report(
                Code::BadHeader,
                doc.span,
                format!(
                    "a configuration document must be a mapping, found {}",
                    doc.describe()
                ),
            );
            return None;
        }
    }
    let Some(kind_node) = doc.get("kind") else {
        sink.report(Code::BadHeader, doc.span, "document has no 'kind'")
            .hint("telemetry objects start with 'apiVersion: config.istio.io/v1alpha2' and 'kind: ...'");
        return None;
    };
    let kind = fields::text(kind_node, "kind", sink)?;
    if !KNOWN_KINDS.contains(&kind) {
        return unknown_kind(doc, kind_node, kind, origin, sink);
    }
    let (name_node, namespace) = header(doc, kind, sink)?;
    let name = name_node.as_str().unwrap_or_default().to_owned();
    let spec = doc.get("spec").filter(|s| s.value != Value::Null);
    let (category, body, body_name) = match kind {
        "attributemanifest" => (Category::Manifest, spec, "spec"),
        "rule" => (Category::Rule, spec, "spec"),
        "instance" | "handler" => match generic(kind, &name, spec, doc.span, sink) {
            Some(g) => g,
            None => {
                // Keep a placeholder so that references to it do not report it missing again.
                let category = if kind == "instance" {
                    Category::Instance(0)
                } else {
                    Category::Handler(0)
                };
                return Some(Object {
                    category,
                    kind: kind.to_owned(),
                    name,
                    namespace,
                    body: None,
                    body_name: "spec.params",
                    span: name_node.span,
                    origin,
                    broken: true,
                });
            }
        },
        legacy => {
            let category = match TEMPLATES.iter().position(|t| *t == legacy) {
                Some(i) => Category::Instance(i),
                None => Category::Handler(ADAPTERS.iter().position(|a| *a == legacy)?),
            };
            (category, spec, "spec")
        }
    };
    Some(Object {
        category,
        kind: kind.to_owned(),
        name,
        namespace,
        body,
        body_name,
        span: name_node.span,
        origin,
        broken: false,
    })
}

/// The header of a document of a kind telemetry knows: top-level fields, `apiVersion`
/// (another version is read as ours, with a warning), `metadata.name` (required) and
/// `metadata.namespace` (`default` when absent).
fn header<'n>(doc: &'n Node, kind: &str, sink: &mut Sink<'_>) -> Option<(&'n Node, String)> {
    fields::read(
        doc,
        "the document",
        &["api_version", "kind", "metadata", "spec", "status"],
        sink,
    )?;
    match doc.get("apiVersion").and_then(Node::as_str) {
        None => {
            sink.report(Code::BadHeader, doc.span, "document has no 'apiVersion'")
                .hint(format!("add 'apiVersion: {API_VERSION}'"));
        }
        Some(v) if v != API_VERSION => {
            let node = doc.get("apiVersion").map_or(doc.span, |n| n.span);
            sink.report(
                Code::UnknownApiVersion,
                node,
                format!("apiVersion '{v}' for kind '{kind}'; reading it as {API_VERSION}"),
            );
        }
        Some(_) => {}
    }
    let Some(name_node) = metadata_name(doc) else {
        let at = doc.get("metadata").map_or(doc.span, |m| m.span);
        sink.report(Code::MissingField, at, "metadata.name is missing or empty");
        return None;
    };
    let namespace = match doc.get("metadata").and_then(|m| m.get("namespace")) {
        None => "default".to_owned(),
        Some(n) => fields::text(n, "metadata.namespace", sink)?.to_owned(),
    };
    Some((name_node, namespace))
}

/// `metadata.name` when it is non-empty text.
fn metadata_name(doc: &Node) -> Option<&Node> {
    doc.get("metadata")
        .and_then(|m| m.get("name"))
        .filter(|n| n.as_str().is_some_and(|s| !s.is_empty()))
}

/// A document of a kind meshmeter does not read: a typo of one of ours is an error (with a
/// suggestion), any other kind is skipped with one informational line. Other Istio templates
/// and adapters stay as placeholders: a rule may name them, and that part of the rule is then
/// skipped rather than reported as undefined. A misspelt kind stands in as what it was
/// probably meant to be, for the same reason.
fn unknown_kind<'n>(
    doc: &'n Node,
    kind_node: &Node,
    kind: &str,
    origin: Origin,
    sink: &mut Sink<'_>,
) -> Option<Object<'n>> {
    let api_version = doc.get("apiVersion").and_then(Node::as_str);
    let name = metadata_name(doc);
    let what = name.and_then(Node::as_str).unwrap_or("(unnamed)");
    let istio_group = api_version.is_some_and(|v| v.starts_with("config.istio.io/"));
    let typo = istio_group && !other_istio_kind(kind);
    let meant = suggest(kind, KNOWN_KINDS).filter(|_| typo);
    match meant {
        Some(s) => {
            sink.report(
                Code::BadHeader,
                kind_node.span,
                format!("unknown kind '{kind}' in {API_VERSION}"),
            )
            .hint(format!("did you mean '{s}'?"));
        }
        None => {
            let why = if TRAFFIC_KINDS.contains(&(api_version.unwrap_or_default(), kind)) {
                "traffic configuration, not telemetry"
            } else {
                "not a kind meshmeter's telemetry uses"
            };
            sink.report(
                Code::SkippedKind,
                kind_node.span,
                format!(
                    "skipping {kind} '{what}' ({}): {why}",
                    api_version.unwrap_or("no apiVersion")
                ),
            );
        }
    }
    let like = meant.unwrap_or(kind);
    let placeholder =
        if OTHER_TEMPLATES.contains(&like) || TEMPLATES.contains(&like) || like == "instance" {
            Category::Instance(0)
        } else if OTHER_ADAPTERS.contains(&like) || ADAPTERS.contains(&like) || like == "handler" {
            Category::Handler(0)
        } else {
            return None;
        };
    let namespace = doc
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Node::as_str)
        .unwrap_or("default");
    Some(Object {
        category: placeholder,
        kind: kind.to_owned(),
        name: what.to_owned(),
        namespace: namespace.to_owned(),
        body: None,
        body_name: "spec",
        span: name.map_or(kind_node.span, |n| n.span),
        origin,
        broken: true,
    })
}

/// `kind: instance` / `kind: handler`: the template or adapter is named inside `spec`.
fn generic<'n>(
    kind: &str,
    object: &str,
    spec: Option<&'n Node>,
    at: Span,
    sink: &mut Sink<'_>,
) -> Option<(Category, Option<&'n Node>, &'static str)> {
    let instance = kind == "instance";
    let (field, known): (&str, &[&str]) = if instance {
        ("compiled_template", &TEMPLATES)
    } else {
        ("compiled_adapter", &ADAPTERS)
    };
    let schema: &[&str] = if instance {
        &["compiled_template", "template", "params"]
    } else {
        &["compiled_adapter", "adapter", "params", "connection"]
    };
    let Some(spec) = spec else {
        sink.report(Code::MissingField, at, format!("a {kind} needs a spec"))
            .hint(format!(
                "add 'spec: {{{}: ..., params: ...}}'",
                fields::camel(field)
            ));
        return None;
    };
    let f = fields::read(spec, &format!("the spec of a {kind}"), schema, sink)?;
    let Some(named) = f.get(0).or_else(|| f.get(1)) else {
        sink.report(
            Code::MissingField,
            spec.span,
            format!("'{}' is missing", fields::camel(field)),
        )
        .hint(format!("one of: {}", known.join(", ")));
        return None;
    };
    let name = fields::text(named, &fields::camel(field), sink)?;
    let Some(i) = known.iter().position(|k| *k == name) else {
        let others: &[&str] = if instance {
            &OTHER_TEMPLATES
        } else {
            &OTHER_ADAPTERS
        };
        if others.contains(&name) {
            sink.report(
                Code::SkippedKind,
                named.span,
                format!(
                    "skipping {kind} '{object}' of {} '{name}': meshmeter does not implement it",
                    if instance { "template" } else { "adapter" }
                ),
            );
            return None;
        }
        let d = sink.report(
            Code::UnknownTemplate,
            named.span,
            format!(
                "{} '{name}' is not supported",
                if instance { "template" } else { "adapter" }
            ),
        );
        match suggest(name, known.iter().copied()) {
            Some(s) => d.hint(format!("did you mean '{s}'?")),
            None => d.hint(format!("meshmeter supports: {}", known.join(", "))),
        }
        return None;
    };
    let category = if instance {
        Category::Instance(i)
    } else {
        Category::Handler(i)
    };
    Some((category, f.get(2), "spec.params"))
}
