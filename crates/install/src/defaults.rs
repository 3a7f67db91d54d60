//! Istio 1.1's default TCP telemetry as objects in the install namespace: the standard
//! `istio_tcp_*` metrics, the TCP access log and the attribute vocabulary, taken from the
//! defaults the telemetry server embeds, without the HTTP parts.

use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

use meshmeter_config::ISTIO_DEFAULTS;

/// Objects of the defaults that serve HTTP only (instances, rules), left out.
const HTTP_ONLY: &[&str] = &[
    "accesslog",
    "stdio",
    "requestcount",
    "requestduration",
    "requestsize",
    "responsesize",
    "promhttp",
    "kubeattrgenrulerule",
];

/// The namespace the embedded defaults were rendered for.
const DEFAULTS_NAMESPACE: &str = "istio-system";

fn key(k: &str) -> Yaml {
    Yaml::String(k.to_string())
}

/// Appends the default TCP telemetry objects, moved to `namespace`.
pub(crate) fn render(out: &mut String, namespace: &str) {
    let docs = YamlLoader::load_from_str(ISTIO_DEFAULTS).expect("the embedded defaults parse");
    for mut doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // `stdio` is both the HTTP access-log rule and the handler the TCP one uses.
        if HTTP_ONLY.contains(&name.as_str()) && !(kind == "handler" && name == "stdio") {
            continue;
        }
        if let Yaml::Hash(meta) = &mut doc_mut(&mut doc, "metadata") {
            if meta.get(&key("namespace")) == Some(&key(DEFAULTS_NAMESPACE)) {
                meta.insert(key("namespace"), key(namespace));
            }
        }
        if kind == "handler" && name == "prometheus" {
            keep_tcp_metrics(&mut doc, namespace);
        }
        let mut text = String::new();
        YamlEmitter::new(&mut text)
            .dump(&doc)
            .expect("the defaults emit");
        out.push_str(&text);
        out.push('\n');
    }
}

fn doc_mut<'a>(doc: &'a mut Yaml, k: &str) -> &'a mut Yaml {
    match doc {
        Yaml::Hash(h) => h.entry(key(k)).or_insert(Yaml::Null),
        other => other,
    }
}

/// The prometheus handler's metrics fed by the TCP instances only, their references moved to
/// `namespace`.
fn keep_tcp_metrics(doc: &mut Yaml, namespace: &str) {
    let params = doc_mut(doc_mut(doc, "spec"), "params");
    let Yaml::Array(metrics) = doc_mut(params, "metrics") else {
        return;
    };
    let suffix = format!(".metric.{DEFAULTS_NAMESPACE}");
    metrics.retain(|m| {
        m["instance_name"]
            .as_str()
            .and_then(|n| n.strip_suffix(&suffix))
            .is_some_and(|n| !HTTP_ONLY.contains(&n))
    });
    for m in metrics {
        if let Yaml::Hash(h) = m {
            let moved = h[&key("instance_name")]
                .as_str()
                .map(|n| n.replace(&suffix, &format!(".metric.{namespace}")));
            if let Some(moved) = moved {
                h.insert(key("instance_name"), key(&moved));
            }
        }
    }
}
