//! Argument helpers shared by the subcommands: Go-style durations and attribute manifest files.

use std::path::PathBuf;
use std::time::Duration;

use meshmeter_attributes::Manifest;

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

/// `base` extended by the attributes of the `kind: attributemanifest` documents in `paths`,
/// read and checked by the configuration crate's loader; on failure, its rendered diagnostics
/// (each with file, line and column).
pub(crate) fn load_manifests(paths: &[PathBuf], base: Manifest) -> Result<Manifest, String> {
    meshmeter_config::load_manifests(paths, base).map_err(|d| d.to_string().trim_end().to_owned())
}

/// Why a long-running subcommand (`ca`, `control`) stopped: bad flags or input (exit 2), or
/// a failure while running (exit 1).
pub(crate) enum Failure {
    Usage(String),
    Runtime(String),
}

/// Runs `serve` on a two-thread runtime and turns its outcome into the exit code.
pub(crate) fn run_server(
    serve: impl std::future::Future<Output = Result<(), Failure>>,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshmeter_attributes::ValueType;

    #[test]
    fn reads_attribute_manifests_with_the_config_loader() {
        let dir = std::env::temp_dir().join(format!("meshmeter-manifests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        std::fs::write(&good, "apiVersion: config.istio.io/v1alpha2\nkind: attributemanifest\nmetadata:\n  name: kubernetes\nspec:\n  attributes:\n    source.ip:\n      valueType: IP_ADDRESS\n    source.labels:\n      valueType: STRING_MAP\n---\nkind: rule\n").unwrap();
        let m = load_manifests(std::slice::from_ref(&good), Manifest::new()).unwrap();
        assert_eq!(
            m.lookup("source.ip").map(|(_, t)| t),
            Some(ValueType::IpAddress)
        );
        assert_eq!(m.len(), 2);
        // The config crate's checks apply: a misspelt type is located and explained.
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "apiVersion: config.istio.io/v1alpha2\nkind: attributemanifest\nmetadata:\n  name: x\nspec:\n  attributes:\n    my.count:\n      valueType: INT46\n").unwrap();
        let err = load_manifests(std::slice::from_ref(&bad), Manifest::new()).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "{}:8:18: error[C0061]: 'INT46' is not a value type",
                bad.display()
            )),
            "{err}"
        );
        assert!(err.contains("did you mean 'INT64'?"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
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
