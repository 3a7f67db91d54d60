//! Argument helpers shared by the subcommands: Go-style durations and attribute manifest files.

use std::path::PathBuf;
use std::time::Duration;

use meshmeter_attributes::{Manifest, ValueType};
use yaml_rust2::{Yaml, YamlLoader};

/// A non-negative Go-style duration (`500ms`, `10s`, `1m30s`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: meshmeter_attributes::Duration = text.parse().map_err(|e| format!("{e}"))?;
    d.to_std()
        .ok_or_else(|| format!("duration '{text}' is negative"))
}

/// A positive Go-style duration.
pub(crate) fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).and_then(|d| {
        if d.is_zero() {
            Err(format!("'{text}' is not a positive duration"))
        } else {
            Ok(d)
        }
    })
}

/// `base` extended by the attributes of the `kind: attributemanifest` documents
/// (`spec.attributes.<name>.valueType`) in `paths`. The configuration crate has the full
/// loader with located diagnostics; this reads only what the tools need.
pub(crate) fn load_manifests(paths: &[PathBuf], base: Manifest) -> Result<Manifest, String> {
    let mut m = base;
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        declare_all(&mut m, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(m)
}

fn declare_all(m: &mut Manifest, text: &str) -> Result<usize, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let mut found = 0;
    for doc in &docs {
        if doc["kind"].as_str() != Some("attributemanifest") {
            continue;
        }
        found += 1;
        let Some(attrs) = doc["spec"]["attributes"].as_hash() else {
            continue;
        };
        for (name, info) in attrs {
            let name = name.as_str().ok_or("an attribute name is not a string")?;
            let t = match &info["valueType"] {
                Yaml::String(t) => t
                    .parse::<ValueType>()
                    .map_err(|e| format!("attribute '{name}': {e}"))?,
                _ => return Err(format!("attribute '{name}' has no valueType")),
            };
            m.declare(name, t).map_err(|e| e.to_string())?;
        }
    }
    if found == 0 {
        return Err("no `kind: attributemanifest` document".into());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_attribute_manifests() {
        let text = "apiVersion: config.istio.io/v1alpha2\nkind: attributemanifest\nmetadata:\n  name: kubernetes\nspec:\n  attributes:\n    source.ip:\n      valueType: IP_ADDRESS\n    source.labels:\n      valueType: STRING_MAP\n---\nkind: rule\n";
        let mut m = Manifest::new();
        assert_eq!(declare_all(&mut m, text), Ok(1));
        assert_eq!(
            m.lookup("source.ip").map(|(_, t)| t),
            Some(ValueType::IpAddress)
        );
        assert_eq!(m.len(), 2);
        assert!(declare_all(&mut m, "kind: rule\n").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("-1s"),
            Err("duration '-1s' is negative".into())
        );
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_duration("10").is_err());
    }
}
