//! The `config.istio.io/v1alpha2` CustomResourceDefinitions (apiextensions.k8s.io/v1), one per
//! kind Istio 1.1 defined in that group, so any Istio 1.1 telemetry configuration applies.

use std::fmt::Write as _;

/// Kinds of `config.istio.io`, their plural resource names, and their second category
/// (`policy-istio-io` for Mixer's kinds, `apim-istio-io` for the API-management ones).
pub const CONFIG_KINDS: &[(&str, &str, &str)] = &[
    ("adapter", "adapters", "policy-istio-io"),
    ("apikey", "apikeys", "policy-istio-io"),
    ("attributemanifest", "attributemanifests", "policy-istio-io"),
    ("authorization", "authorizations", "policy-istio-io"),
    ("bypass", "bypasses", "policy-istio-io"),
    ("checknothing", "checknothings", "policy-istio-io"),
    ("circonus", "circonuses", "policy-istio-io"),
    ("denier", "deniers", "policy-istio-io"),
    ("edge", "edges", "policy-istio-io"),
    ("fluentd", "fluentds", "policy-istio-io"),
    ("handler", "handlers", "policy-istio-io"),
    ("HTTPAPISpec", "httpapispecs", "apim-istio-io"),
    ("HTTPAPISpecBinding", "httpapispecbindings", "apim-istio-io"),
    ("instance", "instances", "policy-istio-io"),
    ("kubernetes", "kuberneteses", "policy-istio-io"),
    ("kubernetesenv", "kubernetesenvs", "policy-istio-io"),
    ("listchecker", "listcheckers", "policy-istio-io"),
    ("listentry", "listentries", "policy-istio-io"),
    ("logentry", "logentries", "policy-istio-io"),
    ("memquota", "memquotas", "policy-istio-io"),
    ("metric", "metrics", "policy-istio-io"),
    ("noop", "noops", "policy-istio-io"),
    ("opa", "opas", "policy-istio-io"),
    ("prometheus", "prometheuses", "policy-istio-io"),
    ("quota", "quotas", "policy-istio-io"),
    ("QuotaSpec", "quotaspecs", "apim-istio-io"),
    ("QuotaSpecBinding", "quotaspecbindings", "apim-istio-io"),
    ("rbac", "rbacs", "policy-istio-io"),
    ("redisquota", "redisquotas", "policy-istio-io"),
    ("reportnothing", "reportnothings", "policy-istio-io"),
    ("rule", "rules", "policy-istio-io"),
    ("signalfx", "signalfxs", "policy-istio-io"),
    ("solarwinds", "solarwindses", "policy-istio-io"),
    ("stackdriver", "stackdrivers", "policy-istio-io"),
    ("statsd", "statsds", "policy-istio-io"),
    ("stdio", "stdios", "policy-istio-io"),
    ("template", "templates", "policy-istio-io"),
    ("tracespan", "tracespans", "policy-istio-io"),
];

/// Appends every CRD as a YAML document. The schemas keep unknown fields, as Istio 1.1's
/// (which had none) did: validation is the telemetry server's, with diagnostics.
pub(crate) fn render(out: &mut String) {
    for (kind, plural, category) in CONFIG_KINDS {
        let singular = kind.to_ascii_lowercase();
        let _ = write!(
            out,
            "---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.config.istio.io
  labels:
    app.kubernetes.io/part-of: meshmeter
spec:
  group: config.istio.io
  names:
    kind: {kind}
    listKind: {kind}List
    plural: {plural}
    singular: {singular}
    categories:
    - istio-io
    - {category}
  scope: Namespaced
  versions:
  - name: v1alpha2
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"
        );
    }
}
