//! The compiled, immutable configuration the engine reads on the hot path.
//!
//! Everything is plain data indexed by position: rules name their handler and instances by
//! index into [`Snapshot::handlers`] and [`Snapshot::instances`], so dispatch needs no lookups
//! by name and no locks.

use std::fmt;

use meshmeter_attributes::{AttrId, Bag, Manifest, Value};
use meshmeter_expr::Expression;
pub use meshmeter_prommodel::{Buckets, MetricKind};

use crate::diagnostic::Diagnostics;

/// Where an object came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The embedded Istio default configuration.
    Default,
    /// A file the operator gave.
    User,
}

/// An object's identity: `name.kind.namespace` as Mixer printed it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectName {
    /// `metadata.name`.
    pub name: String,
    /// The kind as written (`metric`, `instance`, `prometheus`, `handler`, `rule`, ...).
    pub kind: String,
    /// `metadata.namespace` (`default` when absent).
    pub namespace: String,
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.name, self.kind, self.namespace)
    }
}

/// A named expression: a dimension, a log variable or an identity input.
#[derive(Clone, Debug)]
pub struct NamedExpression {
    /// The name as configured.
    pub name: String,
    /// The compiled expression.
    pub expression: Expression,
}

/// An instance: how to build one piece of telemetry from a report's attributes.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Its identity.
    pub name: ObjectName,
    /// Where it came from.
    pub origin: Origin,
    /// What it builds.
    pub params: InstanceParams,
}

/// The template-specific part of an [`Instance`].
#[derive(Clone, Debug)]
pub enum InstanceParams {
    /// Template `metric`.
    Metric(MetricInstance),
    /// Template `logentry`.
    LogEntry(LogEntryInstance),
    /// Template `kubernetes`: inputs to workload identity (Mixer's `kubernetesenv`).
    Kubernetes(KubernetesInstance),
}

impl InstanceParams {
    /// The template name: `metric`, `logentry` or `kubernetes`.
    pub fn template(&self) -> &'static str {
        match self {
            InstanceParams::Metric(_) => "metric",
            InstanceParams::LogEntry(_) => "logentry",
            InstanceParams::Kubernetes(_) => "kubernetes",
        }
    }
}

/// A `metric` instance.
#[derive(Clone, Debug)]
pub struct MetricInstance {
    /// The measured value; INT64, DOUBLE, DURATION or (parsed per report) STRING.
    pub value: Expression,
    /// Dimensions in the order written.
    pub dimensions: Vec<NamedExpression>,
    /// `monitored_resource_type`, kept for completeness (Prometheus ignores it).
    pub monitored_resource_type: Option<Expression>,
    /// `monitored_resource_dimensions`, likewise.
    pub monitored_resource_dimensions: Vec<NamedExpression>,
}

impl MetricInstance {
    /// The position of dimension `name`.
    pub fn dimension(&self, name: &str) -> Option<usize> {
        self.dimensions.iter().position(|d| d.name == name)
    }
}

/// A `logentry` instance.
#[derive(Clone, Debug)]
pub struct LogEntryInstance {
    /// The severity text (e.g. `"Info"`); `None` when not configured.
    pub severity: Option<Expression>,
    /// The entry's time (TIMESTAMP); `None` means the time of the report.
    pub timestamp: Option<Expression>,
    /// Variables in the order written.
    pub variables: Vec<NamedExpression>,
    /// `monitored_resource_type`, kept for completeness.
    pub monitored_resource_type: Option<Expression>,
    /// `monitored_resource_dimensions`, likewise.
    pub monitored_resource_dimensions: Vec<NamedExpression>,
}

/// A `kubernetes` instance: which attributes identify the peers. meshmeter's workload registry
/// fills identity itself; this records what the configuration asked for.
#[derive(Clone, Debug)]
pub struct KubernetesInstance {
    /// `source_uid`, `source_ip`, `destination_uid`, `destination_ip`, `destination_port`, ...
    pub inputs: Vec<NamedExpression>,
    /// `attribute_bindings`: attribute to fill and the `$out` expression text Mixer used.
    pub attribute_bindings: Vec<AttributeBinding>,
}

/// One `attribute_bindings` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeBinding {
    /// The attribute the identity provider fills.
    pub attribute: AttrId,
    /// Its name.
    pub name: String,
    /// The binding as written (e.g. `$out.source_pod_ip | ip("0.0.0.0")`); not compiled.
    pub source: String,
}

/// A handler: an adapter with its parameters.
#[derive(Clone, Debug)]
pub struct Handler {
    /// Its identity.
    pub name: ObjectName,
    /// Where it came from.
    pub origin: Origin,
    /// The adapter and its parameters.
    pub params: HandlerParams,
}

/// The adapter-specific part of a [`Handler`].
#[derive(Clone, Debug, PartialEq)]
pub enum HandlerParams {
    /// Adapter `prometheus`.
    Prometheus(PrometheusParams),
    /// Adapter `stdio`.
    Stdio(StdioParams),
    /// Adapter `kubernetesenv`: workload identity, provided by meshmeter's registry.
    KubernetesEnv,
}

impl HandlerParams {
    /// The adapter name.
    pub fn adapter(&self) -> &'static str {
        match self {
            HandlerParams::Prometheus(_) => "prometheus",
            HandlerParams::Stdio(_) => "stdio",
            HandlerParams::KubernetesEnv => "kubernetesenv",
        }
    }

    /// Whether this adapter consumes instances of `template`.
    pub fn accepts(&self, template: &str) -> bool {
        match self {
            HandlerParams::Prometheus(_) => template == "metric",
            HandlerParams::Stdio(_) => matches!(template, "logentry" | "metric"),
            HandlerParams::KubernetesEnv => template == "kubernetes",
        }
    }
}

/// The prometheus adapter's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusParams {
    /// The metrics, in the order written.
    pub metrics: Vec<PrometheusMetric>,
    /// `metricsExpirationPolicy`, when set.
    pub expiry: Option<ExpiryPolicy>,
}

/// Evicting series that stopped being updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// A series not updated for this long is removed.
    pub expiry: std::time::Duration,
    /// How often to look; half of `expiry` when not configured.
    pub check_interval: std::time::Duration,
}

/// One metric of a prometheus handler, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusMetric {
    /// The exposed name: namespace + `_` + name, as Mixer built it.
    pub full_name: String,
    /// `description` (the `# HELP` text); the metric name (without namespace) when empty.
    pub help: String,
    /// Counter, gauge or distribution.
    pub kind: MetricKind,
    /// Label names in the configured order.
    pub label_names: Vec<String>,
    /// For each label, the index of the instance dimension that feeds it.
    pub label_dimensions: Vec<usize>,
    /// Bounds for distributions (the defaults when none were configured); empty otherwise.
    pub bounds: Vec<f64>,
    /// The feeding instance (index into [`Snapshot::instances`]).
    pub instance: usize,
}

impl PrometheusMetric {
    /// What makes two metrics "the same" for keeping series across a reload: the name, kind,
    /// label names and buckets. Help text and the feeding expression may change freely.
    pub fn definition(&self) -> MetricDefinition<'_> {
        MetricDefinition {
            full_name: &self.full_name,
            kind: self.kind,
            label_names: &self.label_names,
            bounds: &self.bounds,
        }
    }
}

/// The identity of a metric's series, see [`PrometheusMetric::definition`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricDefinition<'a> {
    /// Exposed name.
    pub full_name: &'a str,
    /// Kind.
    pub kind: MetricKind,
    /// Label names in order.
    pub label_names: &'a [String],
    /// Distribution bounds (empty for counters and gauges).
    pub bounds: &'a [f64],
}

/// Log levels of the stdio adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// `INFO`.
    Info,
    /// `WARNING`.
    Warning,
    /// `ERROR`.
    Error,
}

/// Where the stdio adapter writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output (the default).
    Stdout,
    /// Standard error.
    Stderr,
    /// `output_path`.
    File,
    /// `output_path`, rotated.
    RotatedFile,
}

/// The stdio adapter's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct StdioParams {
    /// Severity text (as the instance produces it) to level; unknown severities are INFO.
    pub severity_levels: Vec<(String, LogLevel)>,
    /// Level for metric instances.
    pub metric_level: LogLevel,
    /// JSON lines (true) or console text.
    pub output_as_json: bool,
    /// Destination.
    pub log_stream: LogStream,
    /// File for `File`/`RotatedFile` streams.
    pub output_path: String,
    /// Rotation: size limit in MiB (0 = none).
    pub max_megabytes_before_rotation: u32,
    /// Rotation: age limit in days (0 = none).
    pub max_days_before_rotation: u32,
    /// Rotation: files kept (0 = all).
    pub max_rotated_files: u32,
}

/// A rule's action: which instances go to which handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// `actions[].name`, when given.
    pub name: Option<String>,
    /// Index into [`Snapshot::handlers`].
    pub handler: usize,
    /// Indexes into [`Snapshot::instances`], in the order written.
    pub instances: Vec<usize>,
}

/// A rule: when it applies and what it dispatches.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Its identity.
    pub name: ObjectName,
    /// Where it came from.
    pub origin: Origin,
    /// The condition (BOOL); `None` always matches.
    pub match_: Option<Expression>,
    /// What to do when it matches.
    pub actions: Vec<Action>,
}

/// Counts of what was loaded, per origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Instances.
    pub instances: usize,
    /// Handlers.
    pub handlers: usize,
    /// Rules.
    pub rules: usize,
}

/// A validated, compiled configuration. Immutable; share it as `Arc<Snapshot>`.
#[derive(Debug)]
pub struct Snapshot {
    /// The attribute vocabulary expressions were compiled against.
    pub manifest: Manifest,
    /// Every instance.
    pub instances: Vec<Instance>,
    /// Every handler.
    pub handlers: Vec<Handler>,
    /// Every rule.
    pub rules: Vec<Rule>,
    pub(crate) default_namespace: String,
    pub(crate) global_rules: Vec<usize>,
    /// Looked up once per report: hashbrown's default hasher, several times faster than
    /// SipHash on short names.
    pub(crate) rules_by_namespace: hashbrown::HashMap<String, Vec<usize>>,
    pub(crate) identity: IdentityAttrs,
    pub(crate) user_counts: Counts,
    pub(crate) default_counts: Counts,
    pub(crate) diagnostics: Diagnostics,
}

/// The attributes that decide a report's namespace, resolved once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdentityAttrs {
    pub(crate) reporter_kind: Option<AttrId>,
    pub(crate) source_namespace: Option<AttrId>,
    pub(crate) destination_namespace: Option<AttrId>,
}

impl Snapshot {
    /// The namespace whose rules apply to every report (`--config-default-namespace`).
    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    /// The warnings and informational diagnostics of the load that built this snapshot.
    pub fn diagnostics(&self) -> &Diagnostics {
        &self.diagnostics
    }

    /// Counts of the operator's objects.
    pub fn user_counts(&self) -> Counts {
        self.user_counts
    }

    /// Counts of the embedded defaults' objects that are in force (not overridden).
    pub fn default_counts(&self) -> Counts {
        self.default_counts
    }

    /// A report's identity namespace, as Mixer scoped rules: `destination.namespace` when
    /// `context.reporter.kind` is absent or exactly `inbound`, `source.namespace` when it is
    /// exactly `outbound`. Any other kind (`Outbound`, empty, not a string) gives the empty
    /// namespace (`None`), so only the default namespace's rules apply, as in Mixer.
    pub fn identity_namespace<'b>(&self, bag: &'b Bag<'_>) -> Option<&'b str> {
        let kind = self.identity.reporter_kind.and_then(|id| bag.get(id));
        let id = match kind.map(Value::as_text) {
            None | Some(Some("inbound")) => self.identity.destination_namespace,
            Some(Some("outbound")) => self.identity.source_namespace,
            Some(_) => return None,
        };
        id.and_then(|id| bag.get(id)).and_then(Value::as_text)
    }

    /// Indexes of the rules that apply to a report in `namespace`: those of the default
    /// namespace, then those of `namespace` (each in load order).
    pub fn rules_for<'a>(&'a self, namespace: Option<&str>) -> impl Iterator<Item = usize> + 'a {
        // Skip hashing the bag's namespace when every rule is in the default namespace.
        let scoped = namespace
            .filter(|_| !self.rules_by_namespace.is_empty())
            .filter(|ns| *ns != self.default_namespace)
            .and_then(|ns| self.rules_by_namespace.get(ns))
            .map_or(&[][..], Vec::as_slice);
        self.global_rules.iter().chain(scoped).copied()
    }

    /// The rules that apply to `bag`, by its identity namespace.
    pub fn rules_for_bag<'a>(&'a self, bag: &Bag<'_>) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules_for(self.identity_namespace(bag))
            .map(move |i| &self.rules[i])
    }

    /// The instance named `name.kind.namespace` (kind `instance` matches any template).
    pub fn instance(&self, fully_qualified: &str) -> Option<usize> {
        self.instances
            .iter()
            .position(|i| i.name.to_string() == fully_qualified)
    }

    /// Whether any rule dispatches to a `kubernetesenv` handler, i.e. whether the
    /// configuration asks for workload identity to be filled in (Istio's default does).
    pub fn uses_workload_identity(&self) -> bool {
        self.rules.iter().flat_map(|r| &r.actions).any(|a| {
            matches!(
                self.handlers.get(a.handler).map(|h| &h.params),
                Some(HandlerParams::KubernetesEnv)
            )
        })
    }

    /// Every prometheus metric of every handler, with its handler's index.
    pub fn prometheus_metrics(&self) -> impl Iterator<Item = (usize, &PrometheusMetric)> + '_ {
        self.handlers
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match &h.params {
                HandlerParams::Prometheus(p) => Some((i, p)),
                _ => None,
            })
            .flat_map(|(i, p)| p.metrics.iter().map(move |m| (i, m)))
    }
}
