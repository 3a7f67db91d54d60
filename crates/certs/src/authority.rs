//! The signing side: a CA key and certificate that issue workload certificates from CSRs.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::inspect::{validity_of, Validity};
use crate::pem::{certificates_from_pem, certificates_to_pem, PemError};
use crate::serving::ServingCert;
use crate::spiffe::SpiffeId;
use crate::workload::{PendingKey, WorkloadCert, WorkloadCertError};

/// A CA that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// The certificate or key text is unusable.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The key cannot be loaded.
    #[error("{what}: cannot load the CA key: {reason}")]
    Key {
        /// The file or role.
        what: String,
        /// Why.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("the CA key does not belong to the CA certificate (the first certificate of {what})")]
    KeyMismatch {
        /// The certificate file or role.
        what: String,
    },
    /// The chain does not end at a self-signed root.
    #[error("{what}: the chain must end with the root certificate (self-signed); its last certificate is issued by '{issuer}'")]
    NoRoot {
        /// The certificate file or role.
        what: String,
        /// The last certificate's issuer.
        issuer: String,
    },
    /// The first certificate is not a CA certificate.
    #[error(
        "{what}: the first certificate is not a CA certificate (basicConstraints CA:TRUE missing)"
    )]
    NotCa {
        /// The certificate file or role.
        what: String,
    },
    /// The CA certificate has expired or is not valid yet.
    #[error("{what}: the CA certificate is not valid now")]
    NotValidNow {
        /// The certificate file or role.
        what: String,
    },
    /// Generating or signing failed.
    #[error("cannot generate the CA certificate: {0}")]
    Generate(String),
}

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CSR cannot be parsed, or its signature does not verify.
    #[error("bad certificate signing request: {0}")]
    BadCsr(String),
    /// The CSR asks for names other than the caller's identity.
    #[error("the CSR asks for '{asked}', but the caller is '{identity}'")]
    NameMismatch {
        /// What the CSR asked for (its SANs, comma-separated).
        asked: String,
        /// The authenticated identity.
        identity: String,
    },
    /// The identity is in another trust domain.
    #[error("identity '{identity}' is outside this CA's trust domain '{trust_domain}'")]
    ForeignTrustDomain {
        /// The identity.
        identity: String,
        /// This CA's trust domain.
        trust_domain: String,
    },
    /// The lifetime asked for is zero.
    #[error("a certificate lifetime must be longer than zero")]
    ZeroLifetime,
    /// Signing failed.
    #[error("cannot sign the certificate: {0}")]
    Sign(String),
}

/// What the CA hands back for a CSR.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The workload certificate first, then the intermediates up to (not including) the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// The root of the chain (the trust bundle).
    pub root: CertificateDer<'static>,
}

/// A certificate authority: a signing key and its certificate, and the chain up to a root.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
    /// The signing certificate, then its parents up to and including the root.
    chain: Vec<CertificateDer<'static>>,
    trust_domain: String,
    validity: Validity,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("chain_len", &self.chain.len())
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

fn ca_params(trust_domain: &str, common_name: &str, ttl: Duration) -> CertificateParams {
    let now = SystemTime::now();
    ca_params_between(
        trust_domain,
        common_name,
        now - Duration::from_secs(60),
        now + ttl,
    )
}

fn ca_params_between(
    trust_domain: &str,
    common_name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = to_offset(not_before);
    params.not_after = to_offset(not_after);
    params.serial_number = Some(random_serial());
    params
}

/// A positive 127-bit serial number, as RFC 5280 asks (unique, at most 20 bytes).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    let random = crate::provider().secure_random;
    // The system's random source failing is not recoverable; a time-based serial stays unique.
    if random.fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = nanos.to_be_bytes();
    }
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

fn is_self_signed(cert: &CertificateDer<'_>) -> Result<(bool, String), String> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| e.to_string())?;
    Ok((
        parsed.subject() == parsed.issuer(),
        parsed.issuer().to_string(),
    ))
}

impl Authority {
    /// A new self-signed root CA for `trust_domain`, valid for `ttl`.
    pub fn generate_root(trust_domain: &str, ttl: Duration) -> Result<Self, AuthorityError> {
        Self::self_signed(
            ca_params(trust_domain, "meshmeter root CA", ttl),
            trust_domain,
        )
    }

    /// A new self-signed root CA for `trust_domain` whose certificate is named `common_name`,
    /// valid from `not_before` to `not_after` (a CA of serving certificates for a client with
    /// a clock of its own, such as the API server, backdates further than the mesh's minute).
    pub fn generate_root_between(
        trust_domain: &str,
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Self, AuthorityError> {
        let params = ca_params_between(trust_domain, common_name, not_before, not_after);
        Self::self_signed(params, trust_domain)
    }

    fn self_signed(params: CertificateParams, trust_domain: &str) -> Result<Self, AuthorityError> {
        let key = KeyPair::generate().map_err(|e| AuthorityError::Generate(e.to_string()))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| AuthorityError::Generate(e.to_string()))?;
        let der = cert.der().clone();
        let validity = validity_of(&der).map_err(|e| AuthorityError::Generate(e.to_string()))?;
        Ok(Authority {
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            chain: vec![der],
            trust_domain: trust_domain.to_owned(),
            validity,
        })
    }

    /// A new intermediate CA under this one, valid for `ttl` (capped at this CA's expiry).
    pub fn generate_intermediate(&self, ttl: Duration) -> Result<Self, AuthorityError> {
        let key = KeyPair::generate().map_err(|e| AuthorityError::Generate(e.to_string()))?;
        let mut params = ca_params(&self.trust_domain, "meshmeter intermediate CA", ttl);
        params.not_after = params.not_after.min(to_offset(self.validity.not_after));
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| AuthorityError::Generate(e.to_string()))?;
        let der = cert.der().clone();
        let validity = validity_of(&der).map_err(|e| AuthorityError::Generate(e.to_string()))?;
        let mut chain = vec![der];
        chain.extend(self.chain.iter().cloned());
        Ok(Authority {
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            chain,
            trust_domain: self.trust_domain.clone(),
            validity,
        })
    }

    /// A CA from PEM text: `cert_pem` holds the CA certificate first, then its parents up to
    /// and including the root (an intermediate under an organisation's root carries the whole
    /// chain); `key_pem` the CA certificate's private key. `what` names the source in errors.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        trust_domain: &str,
        what: &str,
    ) -> Result<Self, AuthorityError> {
        let chain = certificates_from_pem(cert_pem, what)?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| AuthorityError::Key {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
        let first = &chain[0];
        let (_, parsed) = x509_parser::parse_x509_certificate(first.as_ref()).map_err(|e| {
            AuthorityError::Pem(PemError::Malformed {
                what: what.to_owned(),
                reason: e.to_string(),
            })
        })?;
        if !parsed.is_ca() {
            return Err(AuthorityError::NotCa {
                what: what.to_owned(),
            });
        }
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(AuthorityError::KeyMismatch {
                what: what.to_owned(),
            });
        }
        let last = chain.last().unwrap_or(first);
        let (self_signed, issuer) = is_self_signed(last).map_err(|reason| {
            AuthorityError::Pem(PemError::Malformed {
                what: what.to_owned(),
                reason,
            })
        })?;
        if !self_signed {
            return Err(AuthorityError::NoRoot {
                what: what.to_owned(),
                issuer,
            });
        }
        let validity = validity_of(first).map_err(|e| {
            AuthorityError::Pem(PemError::Malformed {
                what: what.to_owned(),
                reason: e.to_string(),
            })
        })?;
        if !validity.contains(SystemTime::now()) {
            return Err(AuthorityError::NotValidNow {
                what: what.to_owned(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(first, key).map_err(|e| AuthorityError::Key {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Authority {
            issuer,
            key_pem: key_pem.to_owned(),
            chain,
            trust_domain: trust_domain.to_owned(),
            validity,
        })
    }

    /// The trust domain identities are issued under.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificate: what peers must trust.
    pub fn root(&self) -> &CertificateDer<'static> {
        // The chain is never empty: every constructor puts the signing certificate first.
        &self.chain[self.chain.len() - 1]
    }

    /// The signing certificate and its parents, up to and including the root, as PEM.
    pub fn chain_pem(&self) -> String {
        certificates_to_pem(&self.chain)
    }

    /// The signing key as PEM (PKCS#8), to store beside [`Authority::chain_pem`].
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// When the signing certificate is valid.
    pub fn validity(&self) -> Validity {
        self.validity
    }

    /// Signs the DER `csr` for `identity`, valid from now (backdated by a tenth of `ttl`, at
    /// most a minute, for clock skew) for `ttl`, capped at the CA's own expiry.
    pub fn issue(
        &self,
        csr: &[u8],
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<Issued, IssueError> {
        if ttl.is_zero() {
            return Err(IssueError::ZeroLifetime);
        }
        let now = SystemTime::now();
        let backdate = (ttl / 10).min(Duration::from_secs(60));
        self.issue_with_validity(csr, identity, now - backdate, now + ttl)
    }

    /// Signs `csr` for `identity` with an explicit validity period (tests use it to make
    /// expired certificates).
    pub fn issue_with_validity(
        &self,
        csr: &[u8],
        identity: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, IssueError> {
        if identity.trust_domain() != self.trust_domain {
            return Err(IssueError::ForeignTrustDomain {
                identity: identity.to_string(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        let request = CertificateSigningRequestParams::from_der(
            &CertificateSigningRequestDer::from(csr.to_vec()),
        )
        .map_err(|e| IssueError::BadCsr(e.to_string()))?;
        let uri = identity.uri();
        let asked: Vec<String> = request
            .params
            .subject_alt_names
            .iter()
            .map(|san| match san {
                SanType::URI(u) => u.as_str().to_owned(),
                SanType::DnsName(d) => d.as_str().to_owned(),
                SanType::Rfc822Name(m) => m.as_str().to_owned(),
                SanType::IpAddress(ip) => ip.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        if !(asked.is_empty() || asked == [uri.as_str()]) {
            return Err(IssueError::NameMismatch {
                asked: asked.join(", "),
                identity: uri,
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names =
            vec![SanType::URI(uri.as_str().try_into().map_err(
                |e: rcgen::Error| IssueError::Sign(e.to_string()),
            )?)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = to_offset(not_before.max(self.validity.not_before));
        params.not_after = to_offset(not_after.min(self.validity.not_after));
        let cert = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| IssueError::Sign(e.to_string()))?;
        let mut chain = vec![cert.der().clone()];
        // Intermediates (the signing certificate when it is not the root, and its parents).
        chain.extend(self.chain[..self.chain.len() - 1].iter().cloned());
        Ok(Issued {
            chain,
            root: self.root().clone(),
        })
    }

    /// Generates a key and issues a TLS server certificate for `dns_names` (the first is also
    /// the subject's common name), valid from `not_before` to `not_after` within the CA's own
    /// validity: the certificate of an HTTPS endpoint that clients reach by name, such as the
    /// admission webhook the API server calls.
    pub fn issue_serving(
        &self,
        dns_names: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<ServingCert, IssueError> {
        if not_after <= not_before {
            return Err(IssueError::ZeroLifetime);
        }
        let sign = |e: rcgen::Error| IssueError::Sign(e.to_string());
        let mut params = CertificateParams::new(dns_names.to_vec()).map_err(sign)?;
        if let Some(first) = dns_names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        // Never outside the CA's validity: a chain is only as valid as its shortest link.
        params.not_before = to_offset(not_before.max(self.validity.not_before));
        params.not_after = to_offset(not_after.min(self.validity.not_after));
        let key = KeyPair::generate().map_err(sign)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(sign)?;
        // The served chain is the certificate and the whole CA chain, root included: a client
        // trusting the root alone (a caBundle) needs nothing more.
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        ServingCert::new(chain, &key, dns_names.to_vec())
            .map_err(|e| IssueError::Sign(e.to_string()))
    }

    /// Generates a key for `identity` and issues its certificate here, in one step (for the
    /// CA's own use and for tests; a sidecar sends a CSR instead so its key never leaves it).
    pub fn issue_workload(
        &self,
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<WorkloadCert, WorkloadCertError> {
        let pending = PendingKey::generate(identity.clone())?;
        let issued = self
            .issue(&pending.csr_der()?, identity, ttl)
            .map_err(|e| WorkloadCertError::Issue(e.to_string()))?;
        pending.into_workload_cert(issued.chain)
    }
}
