//! Golden tests: the exact rendered diagnostics for broken variants of the seed configuration.
//!
//! Each case edits one thing in a reference file and compares every rendered diagnostic with
//! `tests/data/golden/<case>.txt`. After an intended change of wording, regenerate with
//! `MESHMETER_BLESS=1 cargo test -p meshmeter-config --test config_diagnostics` and review
//! the diff.

use std::path::PathBuf;

use meshmeter_config::{load_str, LoadOptions};

const SEED: &str = include_str!("data/tcp-metrics.yaml");
const SEED_CRD: &str = include_str!("data/tcp-metrics-crd.yaml");
const DEFAULTS: &str = include_str!("data/default-telemetry-config.yaml");

/// Loads `text` (without the embedded defaults) and renders every diagnostic.
fn render(name: &str, text: &str) -> String {
    let options = LoadOptions {
        include_defaults: false,
        ..LoadOptions::default()
    };
    match load_str(&[(name, text)], &options) {
        Ok(s) => format!("ok\n{}\n", s.diagnostics()),
        Err(d) => format!("{d}\n"),
    }
}

/// `base` with the `nth` (1-based) occurrence of `from` replaced by `to`.
fn edit(base: &str, from: &str, to: &str, nth: usize) -> String {
    let (i, _) = base
        .match_indices(from)
        .nth(nth - 1)
        .unwrap_or_else(|| panic!("'{from}' occurs fewer than {nth} times"));
    format!("{}{}{}", &base[..i], to, &base[i + from.len()..])
}

fn golden(case: &str, name: &str, text: &str) {
    let actual = render(name, text);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/golden")
        .join(format!("{case}.txt"));
    if std::env::var_os("MESHMETER_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with MESHMETER_BLESS=1 to create it)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "golden file {}", path.display());
}

#[test]
fn misspelled_field_with_suggestion() {
    golden(
        "misspelled_field",
        "tcp-metrics.yaml",
        &edit(SEED, "instance_name", "instance_nmae", 1),
    );
}

#[test]
fn misspelled_camel_case_field() {
    golden(
        "misspelled_camel_field",
        "tcp-metrics-crd.yaml",
        &edit(SEED_CRD, "monitoredResourceType", "monitoredResourceTyp", 1),
    );
}

#[test]
fn field_in_both_spellings() {
    golden(
        "both_spellings",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "      label_names:",
            "      labelNames: []\n      label_names:",
            1,
        ),
    );
}

#[test]
fn unknown_attribute_in_expression() {
    golden(
        "unknown_attribute",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "connection.sent.bytes | 0",
            "connection.sent.byte | 0",
            1,
        ),
    );
}

#[test]
fn metric_value_of_wrong_type() {
    golden(
        "value_type",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "connection.sent.bytes | 0",
            "context.protocol == \"tcp\"",
            1,
        ),
    );
}

#[test]
fn match_that_is_not_bool() {
    golden(
        "match_type",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "match: context.protocol == \"tcp\"\n         && destination.service.host == \"mongodb.default.svc.cluster.local\"",
            "match: context.protocol",
            1,
        ),
    );
}

#[test]
fn syntax_error_in_folded_match_is_located_on_its_line() {
    golden(
        "folded_syntax",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "\n         && destination",
            "\n         && && destination",
            1,
        ),
    );
}

#[test]
fn fallback_of_the_wrong_type_in_a_dimension() {
    golden(
        "dimension_type",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "source.labels[\"version\"] | \"unknown\"",
            "source.labels[\"version\"] | 0",
            1,
        ),
    );
}

#[test]
fn missing_handler() {
    golden(
        "missing_handler",
        "tcp-metrics.yaml",
        &edit(SEED, "handler: mongohandler", "handler: mongohandlr", 1),
    );
}

#[test]
fn missing_instance() {
    golden(
        "missing_instance",
        "tcp-metrics.yaml",
        &edit(SEED, "    - mongosentbytes", "    - mongosentbyte", 1),
    );
}

#[test]
fn reference_naming_the_wrong_kind() {
    golden(
        "wrong_kind_reference",
        "tcp-metrics-crd.yaml",
        &edit(
            SEED_CRD,
            "- mongosentbytes.metric",
            "- mongosentbytes.logentry",
            1,
        ),
    );
}

#[test]
fn label_names_differ_from_dimensions() {
    golden(
        "label_mismatch",
        "tcp-metrics.yaml",
        &edit(SEED, "      - source_version", "      - source_versoin", 1),
    );
}

#[test]
fn label_names_lacking_a_dimension() {
    golden(
        "label_missing",
        "tcp-metrics.yaml",
        &edit(SEED, "      - destination_version\n", "", 1),
    );
}

#[test]
fn duplicate_metric_name() {
    golden(
        "duplicate_metric",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "name: mongo_received_bytes",
            "name: mongo_sent_bytes",
            1,
        ),
    );
}

#[test]
fn metric_names_are_sanitised_with_a_warning() {
    // Mixer served this as istio_mongosentbytes; refusing it would break a working config.
    golden(
        "metric_name",
        "tcp-metrics.yaml",
        &edit(SEED, "name: mongo_sent_bytes", "name: mongo-sent-bytes", 1),
    );
}

#[test]
fn invalid_metric_name() {
    // Still not a Prometheus name after Mixer's sanitising.
    golden(
        "metric_name_invalid",
        "tcp-metrics.yaml",
        &edit(SEED, "name: mongo_sent_bytes", "name: mongo@sent", 1),
    );
}

#[test]
fn invalid_label_name() {
    golden(
        "label_name",
        "tcp-metrics.yaml",
        &edit(
            &edit(SEED, "      - source_version", "      - 1source", 1),
            "      source_version:",
            "      1source:",
            1,
        ),
    );
}

#[test]
fn decreasing_bucket_bounds() {
    golden(
        "bucket_order",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "      kind: COUNTER\n",
            "      kind: DISTRIBUTION\n      buckets:\n        explicitBuckets:\n          bounds: [1, 0.5]\n",
            1,
        ),
    );
}

#[test]
fn exponential_buckets_that_do_not_grow() {
    golden(
        "bucket_growth",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "      kind: COUNTER\n",
            "      kind: DISTRIBUTION\n      buckets:\n        exponentialBuckets:\n          numFiniteBuckets: 8\n          scale: 1\n          growthFactor: 1\n",
            1,
        ),
    );
}

#[test]
fn linear_buckets_whose_width_is_lost_in_rounding() {
    golden(
        "bucket_rounding",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "      kind: COUNTER\n",
            "      kind: DISTRIBUTION\n      buckets:\n        linearBuckets:\n          numFiniteBuckets: 2\n          offset: 1e20\n          width: 1\n",
            1,
        ),
    );
}

#[test]
fn misspelled_enum_value() {
    golden(
        "metric_kind",
        "tcp-metrics.yaml",
        &edit(SEED, "kind: COUNTER", "kind: COUNTR", 1),
    );
}

#[test]
fn yaml_syntax_error() {
    golden(
        "yaml_syntax",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "  name: mongosentbytes",
            "  name: \"mongosentbytes",
            1,
        ),
    );
}

#[test]
fn duplicate_key() {
    golden(
        "duplicate_key",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "  namespace: default\nspec:\n  compiledTemplate: metric",
            "  namespace: default\n  namespace: default\nspec:\n  compiledTemplate: metric",
            1,
        ),
    );
}

#[test]
fn misspelled_kind() {
    golden(
        "kind_typo",
        "tcp-metrics.yaml",
        &edit(SEED, "kind: rule", "kind: rulee", 1),
    );
}

#[test]
fn unsupported_adapter() {
    golden(
        "adapter",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "compiledAdapter: prometheus",
            "compiledAdapter: promethues",
            1,
        ),
    );
}

#[test]
fn bad_expiry_duration() {
    golden(
        "expiry",
        "default-telemetry-config.yaml",
        &edit(
            DEFAULTS,
            "metricsExpiryDuration: \"10m\"",
            "metricsExpiryDuration: \"10 minutes\"",
            1,
        ),
    );
}

#[test]
fn every_problem_is_reported() {
    let text = edit(
        &edit(
            &edit(SEED, "instance_name", "instance_nmae", 1),
            "connection.received.bytes | 0",
            "connection.recieved.bytes | 0",
            1,
        ),
        "handler: mongohandler",
        "handler: nosuchhandler",
        1,
    );
    golden("several", "tcp-metrics.yaml", &text);
}

#[test]
fn other_kinds_are_skipped_with_one_line_each() {
    let text = format!(
        "{}\n---\n{}",
        include_str!("data/virtual-service-ratings-db.yaml"),
        SEED
    );
    golden("skipped_kinds", "mixed.yaml", &text);
}

const MANIFEST: &str = "apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata:
  name: extra
  namespace: istio-system
spec:
  attributes:
    connection.sent.bytes:
      valueType: STRING
    my.flag:
      valueType: BOOLEAN
    my.count:
      valueType: INT64
";

#[test]
fn attribute_type_conflicts_and_unknown_types() {
    golden("attribute_manifest", "extra.yaml", MANIFEST);
}

#[test]
fn a_string_metric_value_is_a_warning() {
    golden(
        "string_value",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "connection.sent.bytes | 0",
            "source.workload.name | \"none\"",
            1,
        ),
    );
}

#[test]
fn buckets_on_a_counter_are_a_warning() {
    golden(
        "counter_buckets",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "      kind: COUNTER\n",
            "      kind: COUNTER\n      buckets:\n        explicitBuckets:\n          bounds: [1, 2]\n",
            1,
        ),
    );
}

#[test]
fn istio_policy_kinds_are_skipped_and_rules_naming_them_still_load() {
    let text = format!(
        "{SEED}---
apiVersion: config.istio.io/v1alpha2
kind: denier
metadata:
  name: denyall
  namespace: default
spec:
  status:
    code: 7
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: nothing
  namespace: default
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: deny
  namespace: default
spec:
  actions:
  - handler: denyall.denier
    instances: [nothing]
"
    );
    golden("policy_kinds", "mixed.yaml", &text);
}

#[test]
fn error_inside_a_quoted_expression_is_located() {
    golden(
        "quoted_expression",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "monitoredResourceType: '\"UNSPECIFIED\"'",
            "monitoredResourceType: '\"UNSPECIFIED'",
            1,
        ),
    );
}

#[test]
fn error_inside_a_block_scalar_points_at_its_start() {
    golden(
        "block_scalar",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "match: context.protocol == \"tcp\"\n         && destination",
            "match: >-\n    context.protocol == \"tcp\"\n    && && destination",
            1,
        ),
    );
}

#[test]
fn a_misspelt_handler_kind_is_reported_once() {
    golden(
        "handler_kind_typo",
        "tcp-metrics-crd.yaml",
        &edit(SEED_CRD, "kind: prometheus", "kind: prometeus", 1),
    );
}

#[test]
fn constant_regex_that_cannot_compile() {
    golden(
        "invalid_regex",
        "tcp-metrics.yaml",
        &edit(
            SEED,
            "match: context.protocol == \"tcp\"",
            "match: context.protocol == \"tcp\" && \"\\\\w{500}\".matches(source.uid)",
            1,
        ),
    );
}
