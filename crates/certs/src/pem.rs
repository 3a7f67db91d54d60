//! PEM text to DER and back, and the trust bundle (fixed, or shared and replaceable).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// PEM text that does not hold what it should.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// A PEM block could not be decoded.
    #[error("{what}: bad PEM: {reason}")]
    Malformed {
        /// What was being read (a file name or a role such as "CA certificate").
        what: String,
        /// The decoder's reason.
        reason: String,
    },
    /// No block of the expected kind was found.
    #[error("{what}: no {kind} found in the PEM text")]
    Missing {
        /// What was being read.
        what: String,
        /// The kind of block expected ("CERTIFICATE", "PRIVATE KEY").
        kind: &'static str,
    },
    /// A certificate could not be used as a trust anchor.
    #[error("{what}: certificate {index} cannot be a trust anchor: {reason}")]
    BadAnchor {
        /// What was being read.
        what: String,
        /// Its position (0-based) in the text.
        index: usize,
        /// Why.
        reason: String,
    },
}

/// Every `CERTIFICATE` block of `text`, in order; at least one.
pub fn certificates_from_pem(
    text: &str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Malformed {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::Missing {
            what: what.to_owned(),
            kind: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) of `text`.
pub fn private_key_from_pem(text: &str, what: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => PemError::Missing {
            what: what.to_owned(),
            kind: "PRIVATE KEY",
        },
        e => PemError::Malformed {
            what: what.to_owned(),
            reason: e.to_string(),
        },
    })
}

/// Certificates as PEM text, one `CERTIFICATE` block each.
pub fn certificates_to_pem(certs: &[CertificateDer<'_>]) -> String {
    let mut out = String::new();
    for cert in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64(cert.as_ref());
        for line in b64.as_bytes().chunks(64) {
            // base64 output is ASCII.
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The roots a mesh trusts: peers' chains must end at one of them.
#[derive(Clone, Debug)]
pub struct TrustBundle {
    certs: Vec<CertificateDer<'static>>,
    store: Arc<RootCertStore>,
    /// rustls' client-certificate verification against these roots, built once per bundle
    /// (every inbound handshake uses it).
    clients: Arc<dyn ClientCertVerifier>,
}

impl TrustBundle {
    /// A bundle of the given root certificates.
    pub fn new(certs: Vec<CertificateDer<'static>>, what: &str) -> Result<Self, PemError> {
        let mut store = RootCertStore::empty();
        for (index, cert) in certs.iter().enumerate() {
            store.add(cert.clone()).map_err(|e| PemError::BadAnchor {
                what: what.to_owned(),
                index,
                reason: e.to_string(),
            })?;
        }
        if certs.is_empty() {
            return Err(PemError::Missing {
                what: what.to_owned(),
                kind: "CERTIFICATE",
            });
        }
        let store = Arc::new(store);
        // It fails only without roots (ruled out above) or on CRLs (none are given).
        let clients =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&store), crate::provider())
                .build()
                .map_err(|e| PemError::BadAnchor {
                    what: what.to_owned(),
                    index: 0,
                    reason: e.to_string(),
                })?;
        Ok(TrustBundle {
            certs,
            store,
            clients,
        })
    }

    /// A bundle of every certificate of the PEM `text`.
    pub fn from_pem(text: &str, what: &str) -> Result<Self, PemError> {
        Self::new(certificates_from_pem(text, what)?, what)
    }

    /// The roots.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The roots as PEM text.
    pub fn to_pem(&self) -> String {
        certificates_to_pem(&self.certs)
    }

    /// The roots as rustls holds them.
    pub fn root_store(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.store)
    }

    pub(crate) fn roots(&self) -> &RootCertStore {
        &self.store
    }

    pub(crate) fn client_verifier(&self) -> &dyn ClientCertVerifier {
        self.clients.as_ref()
    }
}

/// The trust bundle TLS configurations verify peers against, replaceable while they are in use
/// (a root rotation: the new root is added, later the old one removed). Every handshake
/// verifies against the bundle current when it runs; established connections are untouched.
/// Clones share one bundle.
///
/// Session resumption follows it too: a resumed handshake verifies no certificate, so the
/// configurations of this crate forget their sessions when the bundle changes.
#[derive(Clone, Debug)]
pub struct SharedBundle(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    current: ArcSwap<TrustBundle>,
    /// Bumped by every replacement.
    generation: AtomicU64,
}

impl SharedBundle {
    /// A shared bundle holding `bundle`.
    pub fn new(bundle: TrustBundle) -> Self {
        SharedBundle(Arc::new(Shared {
            current: ArcSwap::from_pointee(bundle),
            generation: AtomicU64::new(0),
        }))
    }

    /// The bundle now.
    pub fn current(&self) -> Arc<TrustBundle> {
        self.0.current.load_full()
    }

    /// Makes `bundle` the one new handshakes verify against; `false` (and nothing done) when
    /// it holds the same roots in the same order.
    pub fn replace(&self, bundle: TrustBundle) -> bool {
        if self.0.current.load().certs == bundle.certs {
            return false;
        }
        self.0.current.store(Arc::new(bundle));
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<TrustBundle>> {
        self.0.current.load()
    }

    /// How many times the bundle was replaced.
    pub(crate) fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }
}

impl From<TrustBundle> for SharedBundle {
    fn from(bundle: TrustBundle) -> Self {
        SharedBundle::new(bundle)
    }
}

/// A bundle that will not change (a snapshot of `bundle`).
impl From<&TrustBundle> for SharedBundle {
    fn from(bundle: &TrustBundle) -> Self {
        SharedBundle::new(bundle.clone())
    }
}

impl From<&SharedBundle> for SharedBundle {
    fn from(bundle: &SharedBundle) -> Self {
        bundle.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0x00]), "//79AA==");
    }

    #[test]
    fn pem_without_certificates_names_what_was_read() {
        let e = certificates_from_pem("hello", "ca.pem").unwrap_err();
        assert_eq!(
            e.to_string(),
            "ca.pem: no CERTIFICATE found in the PEM text"
        );
        let e = private_key_from_pem("", "key.pem").unwrap_err();
        assert_eq!(
            e.to_string(),
            "key.pem: no PRIVATE KEY found in the PEM text"
        );
    }
}
