//! SPIFFE workload identities as Istio names them: `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT`.

use std::fmt;
use std::str::FromStr;

/// The trust domain of a default Istio installation.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A workload identity: a Kubernetes service account in a namespace, under a trust domain.
///
/// Displayed as the SPIFFE URI (`spiffe://cluster.local/ns/default/sa/ratings`), which is what
/// certificates carry in their URI SAN; [`SpiffeId::principal`] gives Istio 1.1's principal form
/// (`cluster.local/ns/default/sa/ratings`) used by `source.principal` and
/// `destination.principal`. Both forms parse.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Text that is not a SPIFFE workload identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The text does not have the shape `[spiffe://]DOMAIN/ns/NAMESPACE/sa/ACCOUNT`.
    #[error("'{text}' is not a workload identity: expected spiffe://DOMAIN/ns/NAMESPACE/sa/ACCOUNT or DOMAIN/ns/NAMESPACE/sa/ACCOUNT")]
    Shape {
        /// The text given.
        text: String,
    },
    /// One part holds a character identities may not contain.
    #[error(
        "'{text}': the {part} '{value}' may only hold ASCII letters, digits, '-', '.' and '_'"
    )]
    BadCharacter {
        /// The text given.
        text: String,
        /// Which part: trust domain, namespace or service account.
        part: &'static str,
        /// The part's value.
        value: String,
    },
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

impl SpiffeId {
    /// The identity of `service_account` in `namespace` under `trust_domain`.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        let text = format!("{trust_domain}/ns/{namespace}/sa/{service_account}");
        for (part, value) in [
            ("trust domain", trust_domain),
            ("namespace", namespace),
            ("service account", service_account),
        ] {
            if !valid_part(value) {
                return Err(SpiffeIdError::BadCharacter {
                    text,
                    part,
                    value: value.to_owned(),
                });
            }
        }
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// Parses the URI form (`spiffe://...`) or the principal form (no scheme).
    pub fn parse(text: &str) -> Result<Self, SpiffeIdError> {
        let rest = text.strip_prefix("spiffe://").unwrap_or(text);
        let shape = || SpiffeIdError::Shape {
            text: text.to_owned(),
        };
        let mut parts = rest.split('/');
        let (Some(domain), Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(shape());
        };
        SpiffeId::new(domain, ns, sa).map_err(|e| match e {
            SpiffeIdError::BadCharacter { part, value, .. } => SpiffeIdError::BadCharacter {
                text: text.to_owned(),
                part,
                value,
            },
            other => other,
        })
    }

    /// Parses only the URI form, as found in a certificate's URI SAN.
    pub fn parse_uri(text: &str) -> Result<Self, SpiffeIdError> {
        if !text.starts_with("spiffe://") {
            return Err(SpiffeIdError::Shape {
                text: text.to_owned(),
            });
        }
        Self::parse(text)
    }

    /// The trust domain (`cluster.local`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// Istio 1.1's principal form: `cluster.local/ns/N/sa/S`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// The URI form, as in [`fmt::Display`].
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse_to_the_same_identity() {
        let uri: SpiffeId = "spiffe://cluster.local/ns/default/sa/ratings"
            .parse()
            .unwrap();
        let principal: SpiffeId = "cluster.local/ns/default/sa/ratings".parse().unwrap();
        assert_eq!(uri, principal);
        assert_eq!(
            uri.to_string(),
            "spiffe://cluster.local/ns/default/sa/ratings"
        );
        assert_eq!(uri.principal(), "cluster.local/ns/default/sa/ratings");
        assert_eq!(uri.namespace(), "default");
        assert_eq!(uri.service_account(), "ratings");
        assert_eq!(uri.trust_domain(), "cluster.local");
    }

    #[test]
    fn malformed_identities_are_refused_with_the_reason() {
        for bad in [
            "",
            "spiffe://cluster.local",
            "spiffe://cluster.local/ns/default",
            "spiffe://cluster.local/ns/default/sa/a/extra",
            "spiffe://cluster.local/sa/a/ns/default",
            "spiffe://cluster.local/ns//sa/a",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} parsed");
        }
        assert_eq!(
            SpiffeId::parse("cluster.local/ns/de fault/sa/a")
                .unwrap_err()
                .to_string(),
            "'cluster.local/ns/de fault/sa/a': the namespace 'de fault' may only hold ASCII letters, digits, '-', '.' and '_'"
        );
        assert!(SpiffeId::parse_uri("cluster.local/ns/default/sa/a").is_err());
    }
}
