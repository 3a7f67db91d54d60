//! Who the proxy is: the workload it sits beside, as the reports name it.

use std::fmt;
use std::str::FromStr;

use meshmeter_attributes::StringMap;

/// Which side of the traffic the proxy reports for (`context.reporter.kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReporterKind {
    /// A server-side proxy: its workload is the destination (Istio's default for TCP).
    #[default]
    Inbound,
    /// A client-side proxy: its workload is the source.
    Outbound,
}

impl ReporterKind {
    /// The attribute's text.
    pub fn as_str(self) -> &'static str {
        match self {
            ReporterKind::Inbound => "inbound",
            ReporterKind::Outbound => "outbound",
        }
    }
}

impl fmt::Display for ReporterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is neither `inbound` nor `outbound`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown reporter kind '{0}' (expected 'inbound' or 'outbound')")]
pub struct UnknownReporterKind(pub String);

impl FromStr for ReporterKind {
    type Err = UnknownReporterKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inbound" => Ok(ReporterKind::Inbound),
            "outbound" => Ok(ReporterKind::Outbound),
            other => Err(UnknownReporterKind(other.to_owned())),
        }
    }
}

/// The proxy's own identity, attached to every report.
///
/// For an inbound reporter these become `destination.*` attributes (the proxy's workload is
/// the server), for an outbound one `source.*`. Absent fields are not reported, so that the
/// telemetry server may still derive them (Istio's Mixer did so from `destination.uid`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Identity {
    /// The workload's uid, e.g. `kubernetes://mongodb-v1-7f4.default`: `destination.uid` (or
    /// `source.uid`) and `context.reporter.uid`.
    pub uid: Option<String>,
    /// The pod name: `destination.name`.
    pub name: Option<String>,
    /// The namespace: `destination.namespace` and `destination.workload.namespace`.
    pub namespace: Option<String>,
    /// The workload (deployment) name: `destination.workload.name`.
    pub workload: Option<String>,
    /// The pod's labels: `destination.labels`.
    pub labels: StringMap<'static>,
    /// The service the traffic is addressed to: `destination.service.host` (for both kinds).
    pub service_host: Option<String>,
    /// Which side the proxy reports for.
    pub kind: ReporterKind,
}

/// Text of `--labels` that is not a `k=v,...` list.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid label '{0}': expected key=value")]
pub struct InvalidLabel(pub String);

impl Identity {
    /// Parses `k=v,k2=v2` (empty text is no labels; whitespace around items is ignored).
    pub fn parse_labels(text: &str) -> Result<StringMap<'static>, InvalidLabel> {
        let mut labels = StringMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    labels.insert(k.trim().to_owned(), v.trim().to_owned())
                }
                _ => return Err(InvalidLabel(item.to_owned())),
            }
        }
        Ok(labels)
    }

    /// Kubernetes' uid form for a pod: `kubernetes://NAME.NAMESPACE`.
    pub fn kubernetes_uid(pod: &str, namespace: &str) -> String {
        format!("kubernetes://{pod}.{namespace}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let l = Identity::parse_labels("app=mongodb, version=v1,").unwrap();
        assert_eq!(l.get("app"), Some("mongodb"));
        assert_eq!(l.get("version"), Some("v1"));
        assert_eq!(Identity::parse_labels("").unwrap().len(), 0);
        assert_eq!(
            Identity::parse_labels("app"),
            Err(InvalidLabel("app".into()))
        );
        assert_eq!(Identity::parse_labels("=v"), Err(InvalidLabel("=v".into())));
    }

    #[test]
    fn kinds() {
        assert_eq!("outbound".parse(), Ok(ReporterKind::Outbound));
        assert_eq!(
            "both".parse::<ReporterKind>(),
            Err(UnknownReporterKind("both".into()))
        );
    }
}
