//! What a certificate says: its SPIFFE identity and its validity period.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// A certificate that does not carry a usable workload identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The DER bytes are not an X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    Unparsable(String),
    /// No URI SAN starting with `spiffe://`.
    #[error("the certificate carries no spiffe:// URI SAN")]
    NoSpiffeId,
    /// More than one `spiffe://` URI SAN: which is the peer would be ambiguous.
    #[error("the certificate carries {0} spiffe:// URI SANs; exactly one is allowed")]
    SeveralSpiffeIds(usize),
    /// The URI SAN is not a workload identity.
    #[error(transparent)]
    Malformed(#[from] SpiffeIdError),
}

/// The SPIFFE identity in `cert`'s URI SAN (exactly one `spiffe://` URI).
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, IdentityError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let uris: Vec<&str> = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) if u.starts_with("spiffe://") => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match uris.as_slice() {
        [] => Err(IdentityError::NoSpiffeId),
        [one] => Ok(SpiffeId::parse_uri(one)?),
        many => Err(IdentityError::SeveralSpiffeIds(many.len())),
    }
}

/// When a certificate is valid: `[not_before, not_after]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// The first instant it is valid.
    pub not_before: SystemTime,
    /// The last instant it is valid.
    pub not_after: SystemTime,
}

impl Validity {
    /// The whole period's length.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// Whether `now` falls inside the period.
    pub fn contains(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// The instant `fraction` (0..=1) of the lifetime has passed.
    pub fn point(&self, fraction: f64) -> SystemTime {
        self.not_before + self.lifetime().mul_f64(fraction.clamp(0.0, 1.0))
    }
}

fn to_system_time(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// `cert`'s validity period.
pub fn validity_of(cert: &CertificateDer<'_>) -> Result<Validity, IdentityError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let v = parsed.validity();
    Ok(Validity {
        not_before: to_system_time(v.not_before),
        not_after: to_system_time(v.not_after),
    })
}
