//! Istio telemetry configuration: documents, validation with diagnostics, compiled snapshots,
//! reload.
//!
//! meshmeter reads the files operators `kubectl apply` to Istio 1.1: Kubernetes-style YAML
//! documents (`apiVersion`, `kind`, `metadata`, `spec`) of kinds `attributemanifest`,
//! `instance` (templates `metric`, `logentry`, `kubernetes`; also the legacy kinds of those
//! names), `handler` (adapters `prometheus`, `stdio`, `kubernetesenv`; also the legacy kinds)
//! and `rule`. Other kinds (VirtualService, Deployment, ...) are skipped with one
//! informational line each. Fields are accepted in snake_case and camelCase.
//!
//! Loading collects every problem before failing and renders each one as
//! `file:line:column: error[CODE]: message`, the offending line and a caret:
//!
//! ```
//! use meshmeter_config::{load_str, LoadOptions};
//!
//! let yaml = r#"
//! apiVersion: config.istio.io/v1alpha2
//! kind: metric
//! metadata:
//!   name: sent
//!   namespace: default
//! spec:
//!   vaule: connection.sent.bytes | 0
//! "#;
//! let options = LoadOptions { include_defaults: false, ..LoadOptions::default() };
//! let errors = load_str(&[("sent.yaml", yaml)], &options).unwrap_err();
//! let first = errors.iter().next().unwrap().to_string();
//! assert_eq!(first, "sent.yaml:8:3: error[C0011]: unknown field 'vaule' in the spec of metric instance 'sent'
//!   vaule: connection.sent.bytes | 0
//!   ^^^^^
//!   = hint: did you mean 'value'?");
//! ```
//!
//! A valid configuration compiles into an immutable [`Snapshot`]: compiled expressions,
//! resolved handlers and rules indexed by namespace, all plain `Vec`s and indexes. A
//! [`ConfigWatcher`] keeps one in force and swaps in a new one when the files change.
//!
//! # A bad object never blocks the good ones
//!
//! [`load_paths`] and `meshmeter validate` refuse a configuration with any error. A running
//! server instead accepts and rejects object by object through a [`Loader`]: an object with
//! errors is rejected (and logged with its kind, namespace, name, source and diagnostics), the
//! previous good version of it (same kind family, namespace and name) stays in force, objects
//! that refer to a rejected or absent object (a rule's handler or instance, a prometheus
//! metric's instance) are dropped with a warning naming the reference, and everything else
//! applies. [`ConfigWatcher`] does this for files (a file that cannot be read or parsed keeps
//! the objects it held); its initial load is strict with [`ConfigWatcher::new`] and accepts
//! object by object too with [`ConfigWatcher::accepting`] (what the server uses by default).
//!
//! A Kubernetes source hands each object in as an [`Input::Kubernetes`] and gets back, per
//! object not in force, an [`ObjectProblem`] with its [`ObjectSource`] (namespace, name,
//! resourceVersion) to record a Warning Event on:
//!
//! ```
//! use meshmeter_config::{Input, LoadOptions, Loader, ObjectSource, Outcome};
//!
//! let rule = |handler: &str| Input::Kubernetes {
//!     kind: "rule".into(),
//!     namespace: "default".into(),
//!     name: "r".into(),
//!     resource_version: "42".into(),
//!     text: format!(
//!         "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata:\n  name: r\n  namespace: default\nspec:\n  actions:\n  - handler: {handler}\n    instances: [requestcount.metric.istio-system]\n"
//!     ),
//! };
//! let mut loader = Loader::new(LoadOptions::default());
//! let loaded = loader.load(vec![rule("prometheus.istio-system")]).unwrap();
//! assert!(loaded.problems.is_empty());
//! loader.commit(&loaded); // now in force: the previous version of later loads
//!
//! let loaded = loader.load(vec![rule("nope")]).unwrap();
//! let problem = &loaded.problems[0];
//! assert_eq!(problem.outcome, Outcome::Dropped); // it names an absent handler
//! assert!(matches!(&problem.source, ObjectSource::Kubernetes { resource_version, .. } if resource_version == "42"));
//! assert_eq!(problem.diagnostics.iter().next().unwrap().code, "C0040");
//! assert_eq!(loaded.rejected_objects(), 1);
//! ```
//!
//! To combine such objects with the files, hand them to a running watcher with
//! [`ConfigWatcher::set_objects`] (every object the source has, each time): they are loaded with
//! the files through the same [`Loader`], and the objects not in force come back
//! ([`ConfigWatcher::problems`]).
//!
//! The number of objects not in force is [`ConfigWatcher::rejected_objects`] (the
//! `meshmeter_config_rejected_objects` gauge of the telemetry server): a gauge of the current
//! state, so it returns to 0 once every object is fixed.
//!
//! # Scoping
//! Rules in the default configuration namespace ([`LoadOptions::default_namespace`],
//! `istio-system` by default) apply to every report; a rule in namespace N applies only to
//! reports whose identity namespace is N ([`Snapshot::identity_namespace`]).
//!
//! # References
//! `name.kind.namespace`, `name.kind` and `name` (the short forms in the referring object's
//! namespace). The kind part may be the kind as written, the generic `instance`/`handler`, or
//! the template/adapter name.
//!
//! # Field reference
//!
//! Every field may be spelled in snake_case or camelCase. Legacy kinds (`kind: metric`,
//! `kind: prometheus`, ...) carry these fields directly in `spec`; generic kinds carry them in
//! `spec.params` beside `spec.compiledTemplate` / `spec.compiledAdapter`.
//!
//! ## Instances
//!
//! The fields, in both spellings (`monitored_resource_type` = `monitoredResourceType`):
//!
//! `metric`:
//! - `value` (required): expression, INT64, DOUBLE or DURATION (seconds in Prometheus); a
//!   STRING is accepted with warning W0002 and parsed as a number per report, as Mixer did.
//! - `dimensions`: name -> expression of any type; the names must equal the `label_names` of
//!   every prometheus metric fed by the instance.
//! - `monitored_resource_type`, `monitored_resource_dimensions`: expressions, checked and kept;
//!   Prometheus does not use them.
//!
//! `logentry`:
//! - `variables`: name -> expression of any type.
//! - `timestamp`: TIMESTAMP expression (the report time when absent).
//! - `severity`: expression, usually a constant like `'"Info"'`.
//! - `monitored_resource_type`, `monitored_resource_dimensions`: as for `metric`.
//!
//! `kubernetes` (workload identity inputs, Mixer's `kubernetesenv`):
//! - `source_uid`, `source_ip`, `destination_uid`, `destination_ip`, `origin_uid`,
//!   `origin_ip`, `destination_port`: expressions.
//! - `attribute_bindings`: attribute name -> `$out.<field> | default` text; the attribute must
//!   be declared; the text is kept as written (meshmeter's registry fills identity itself).
//!
//! ## Handlers
//!
//! The fields, in both spellings (`label_names` = `labelNames`):
//!
//! `prometheus`:
//! - `metrics` (list), each with
//!   - `name`: the metric name after the namespace (`mongo_sent_bytes`); the instance's name
//!     when empty;
//!   - `instance_name` (required): the instance that feeds it, `name.kind.namespace`,
//!     `name.kind` or `name` (the last two in the handler's namespace);
//!   - `kind` (required): `COUNTER`, `GAUGE` or `DISTRIBUTION`;
//!   - `label_names`: the instance's dimension names, each exactly once, in exposition order;
//!   - `buckets` (DISTRIBUTION only): exactly one of `explicit_buckets {bounds}`,
//!     `linear_buckets {num_finite_buckets, width, offset}`,
//!     `exponential_buckets {num_finite_buckets, growth_factor, scale}`; Prometheus' default
//!     bounds when absent;
//!   - `description`: the `# HELP` text;
//!   - `namespace`: the name prefix, `istio` by default.
//! - `metrics_expiration_policy`: `metrics_expiry_duration` (Go duration, e.g. `10m`) and
//!   `expiry_check_interval_duration` (half the expiry when absent).
//!
//! `stdio`: `severity_levels` (severity text -> `INFO`|`WARNING`|`ERROR`), `metric_level`,
//! `output_as_json`, `log_stream` (`STDOUT`|`STDERR`|`FILE`|`ROTATED_FILE`), `output_path`,
//! `max_megabytes_before_rotation`, `max_days_before_rotation`, `max_rotated_files`.
//!
//! `kubernetesenv`: `kubeconfig_path`, `cache_refresh_duration`,
//! `cluster_registries_namespace`, `cluster_domain_name` are accepted and ignored: identity
//! comes from meshmeter's workload registry.
//!
//! ## Rules
//!
//! The fields:
//! - `match`: BOOL expression; absent or empty means "always".
//! - `actions` (list), each with `handler` (required; `name.kind.namespace`, `name.kind` or
//!   `name`), `instances` (list of instance references, same forms) and an optional `name`.
//! - `request_header_operations`, `response_header_operations`, `sampling`: accepted for
//!   compatibility and ignored (they concern HTTP and Mixer's own sampling).
//!
//! ## Attribute manifests
//!
//! `spec.attributes`: attribute name -> `{valueType, description}`. They extend the built-in
//! Istio vocabulary; declaring a built-in name again with the same type is fine, with another
//! type it is an error (C0060).
//!
//! # Diagnostic codes
//! | code | meaning |
//! |---|---|
//! | C0001 | YAML syntax error |
//! | C0002 | duplicate key (also a field given in both spellings) |
//! | C0003 | unsupported YAML (aliases, nesting deeper than 64) |
//! | C0004 | a file cannot be read (missing, too big, not UTF-8) |
//! | C0010 | required field missing |
//! | C0011 | unknown field (with a suggestion) |
//! | C0012 | wrong kind of value (a list where text is needed, ...) |
//! | C0013 | value not among an enumeration's names (`kind: COUNTR`) |
//! | C0014 | bad document header (no kind, unknown kind in config.istio.io, not a mapping) |
//! | C0015 | template or adapter not supported |
//! | C0016 | not a number |
//! | C0020 | object defined twice |
//! | C0031 | expression of the wrong type for its field (match not BOOL, metric value not INT64, DOUBLE, DURATION or STRING, timestamp not TIMESTAMP) |
//! | C0040 | handler not defined |
//! | C0041 | instance not defined |
//! | C0042 | instance of a template the handler cannot take |
//! | C0043 | malformed reference, or one naming the wrong kind |
//! | C0050 | prometheus `label_names` differ from the instance's dimension names |
//! | C0051 | metric name defined twice (across all prometheus handlers) |
//! | C0052 | Prometheus metric name still invalid after Mixer's sanitising (`istio_a@b`) |
//! | C0053 | invalid Prometheus label name |
//! | C0054 | buckets that make no sense |
//! | C0055 | a label listed twice |
//! | C0056 | a rule sends an instance to a prometheus handler with no metric for it |
//! | C0057 | invalid duration |
//! | C0060 | attribute declared with a type that conflicts with the built-in one |
//! | C0061 | unknown value type name |
//! | C0062 | attribute binding names an undeclared attribute |
//! | C0063 | a file given as attribute manifests ([`load_manifests`]) holds no `attributemanifest` |
//! | E0xx, E1xx | expression syntax and type errors, from `meshmeter-expr` |
//! | W0001 | buckets on a COUNTER or GAUGE (ignored) |
//! | W0002 | a STRING metric value (parsed as a number for each report, as Mixer did) |
//! | W0003 | unexpected apiVersion |
//! | W0004 | a metric served under a sanitised or derived name (`my-metric.total` as `istio_mymetric_total`; no `name`) |
//! | W0005 | a reference Istio 1.1 would not resolve (bare name of a legacy kind, `instance_name` not `name.kind.namespace`), resolved anyway |
//! | I0001 | a document of a kind telemetry does not use, skipped |

#![warn(missing_docs)]

mod accept;
mod compile;
mod diagnostic;
mod exprs;
mod fields;
/// The bounded regular-file reader (now in `meshmeter-fswatch`, shared with the workloads
/// file); re-exported for existing users.
pub use meshmeter_fswatch::fsread;
mod handlers;
mod instances;
mod load;
mod objects;
mod prom;
mod resolve;
mod rules;
mod snapshot;
mod source;
pub mod syntax;
mod watch;
mod yaml;

pub use accept::{Input, Loaded, Loader, ObjectProblem, ObjectSource, Outcome};
pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use load::{
    config_files, load_manifests, load_paths, load_str, read_inputs, LoadOptions, ISTIO_DEFAULTS,
    ISTIO_DEFAULTS_NAME, MAX_FILE_BYTES,
};
pub use snapshot::{
    Action, AttributeBinding, Buckets, Counts, ExpiryPolicy, Handler, HandlerParams, Instance,
    InstanceParams, KubernetesInstance, LogEntryInstance, LogLevel, LogStream, MetricDefinition,
    MetricInstance, MetricKind, NamedExpression, ObjectName, Origin, PrometheusMetric,
    PrometheusParams, Rule, Snapshot, StdioParams,
};
pub use watch::{ConfigWatcher, Published};
