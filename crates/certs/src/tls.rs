//! rustls configurations for mutual TLS between workloads: TLS 1.3 only, peers verified
//! against the trust bundle and identified by their SPIFFE URI SAN.

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};

use crate::inspect::{spiffe_id_of, IdentityError};
use crate::pem::SharedBundle;
use crate::sessions::{ClientSessions, ServerSessions};
use crate::spiffe::SpiffeId;
use crate::store::{CertStore, Presented};

/// The crypto provider everything here uses: *ring*, with X25519 as the preferred key
/// exchange (then P-256, then P-384) and AES-128-GCM as the preferred cipher (then
/// AES-256-GCM, then ChaCha20-Poly1305).
///
/// The cipher order is Envoy's: BoringSSL, which Istio's sidecars use, fixes TLS 1.3's order
/// to AES-128-GCM first on hardware with AES instructions, so pod-to-pod traffic in Istio runs
/// AES-128-GCM. rustls' default puts AES-256-GCM first, about a third dearer per byte, and the
/// cipher is most of what mutual TLS adds to every byte a sidecar forwards.
///
/// rustls 0.23.48 deprecates it for lacking post-quantum key exchange (only aws-lc-rs has
/// it); the project builds without aws-lc's C toolchain on purpose, so it stays. Its default
/// order puts P-384 first, whose *ring* arithmetic is generic code: between two sidecars
/// that made every handshake's key exchange several times dearer than X25519's (the first
/// group is the one a client sends a key share for).
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    use rustls::CipherSuite::{TLS13_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256};
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    // AES-128-GCM ahead of the rest in each version, the rest in rustls' order (TLS 1.2 stays
    // for the admission webhook's HTTPS server).
    let first = [
        TLS13_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    provider.cipher_suites.sort_by_key(|s| {
        (
            s.version() != &rustls::version::TLS13,
            !first.contains(&s.suite()),
        )
    });
    Arc::new(provider)
}

/// A configuration rustls refused.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the TLS configuration: {0}")]
pub struct TlsConfigError(String);

/// Which server identities a client accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectedPeer {
    /// Any workload of this trust domain (Istio's `ISTIO_MUTUAL` without `subjectAltNames`).
    TrustDomain(String),
    /// Exactly one of these identities.
    OneOf(Vec<SpiffeId>),
}

impl ExpectedPeer {
    fn admits(&self, id: &SpiffeId) -> bool {
        match self {
            ExpectedPeer::TrustDomain(td) => id.trust_domain() == td,
            ExpectedPeer::OneOf(ids) => ids.contains(id),
        }
    }
}

/// A peer certificate whose identity is not acceptable (a rustls `Other` certificate error, so
/// it travels through the handshake's error).
#[derive(Debug, thiserror::Error)]
pub enum PeerIdentityError {
    /// The certificate carries no usable SPIFFE identity.
    #[error("peer certificate: {0}")]
    Unreadable(#[from] IdentityError),
    /// The identity is not one this side accepts.
    #[error("peer identity '{got}' is not accepted (expected {expected})")]
    NotExpected {
        /// The peer's identity.
        got: String,
        /// What was expected.
        expected: String,
    },
}

fn identity_error(e: PeerIdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn check_identity(cert: &CertificateDer<'_>, expected: &ExpectedPeer) -> Result<(), rustls::Error> {
    let id = spiffe_id_of(cert).map_err(|e| identity_error(e.into()))?;
    if !expected.admits(&id) {
        let expected = match expected {
            ExpectedPeer::TrustDomain(td) => format!("an identity of trust domain '{td}'"),
            ExpectedPeer::OneOf(ids) => ids
                .iter()
                .map(|i| format!("'{i}'"))
                .collect::<Vec<_>>()
                .join(" or "),
        };
        return Err(identity_error(PeerIdentityError::NotExpected {
            got: id.to_string(),
            expected,
        }));
    }
    Ok(())
}

/// Verifies a server's chain against the trust bundle and its SPIFFE identity against what
/// is expected; the TLS server name is not used (workload certificates carry no DNS name).
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: SharedBundle,
    provider: Arc<CryptoProvider>,
    expected: ExpectedPeer,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            self.roots.load().roots(),
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        check_identity(end_entity, &self.expected)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Requires a client certificate chaining to the trust bundle and carrying a SPIFFE
/// identity of the trust domain.
#[derive(Debug)]
struct SpiffeClientVerifier {
    roots: SharedBundle,
    provider: Arc<CryptoProvider>,
    expected: ExpectedPeer,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// None: the bundle may change under a configuration, and a sidecar presents its one
    /// workload certificate whatever the hints say.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.roots
            .load()
            .client_verifier()
            .verify_client_cert(end_entity, intermediates, now)?;
        check_identity(end_entity, &self.expected)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The server side of workload mTLS: TLS 1.3, the store's certificate, and a mandatory client
/// certificate verified against `bundle` (a [`TrustBundle`](crate::TrustBundle), or a [`SharedBundle`] followed
/// as it changes) whose identity `clients` admits.
pub fn server_config(
    bundle: impl Into<SharedBundle>,
    store: Arc<CertStore>,
    clients: ExpectedPeer,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = provider();
    let roots: SharedBundle = bundle.into();
    let verifier = SpiffeClientVerifier {
        roots: roots.clone(),
        provider: Arc::clone(&provider),
        expected: clients,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsConfigError(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(store);
    config.session_storage = Arc::new(ServerSessions::new(roots));
    Ok(Arc::new(config))
}

/// The client side of workload mTLS: TLS 1.3, the store's certificate as client certificate,
/// and a server verified against `bundle` (fixed or shared, as for [`server_config`]) whose
/// identity `server` admits. Connect with [`server_name`] (SNI is off: the name is not checked,
/// the SPIFFE identity is).
pub fn client_config(
    bundle: impl Into<SharedBundle>,
    store: Arc<CertStore>,
    server: ExpectedPeer,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = provider();
    let roots: SharedBundle = bundle.into();
    let verifier = SpiffeServerVerifier {
        roots: roots.clone(),
        provider: Arc::clone(&provider),
        expected: server,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsConfigError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(store);
    config.resumption = Resumption::store(Arc::new(ClientSessions::new(roots)));
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// A TLS 1.3 server configuration presenting the store's certificate and asking clients for
/// none (a service such as the CA, whose callers authenticate otherwise).
pub fn service_server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsConfigError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    Ok(Arc::new(config))
}

/// An HTTPS server configuration for a client outside the mesh (the API server calling the
/// admission webhook): TLS 1.2 and 1.3, HTTP/1.1 by ALPN, the store's certificate, no client
/// certificate asked for.
pub fn https_server_config<C: Presented>(
    store: Arc<CertStore<C>>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS 1.3 client configuration with no client certificate that verifies the server against
/// `bundle` and its SPIFFE identity against `server` (a client of such a service).
pub fn service_client_config(
    bundle: impl Into<SharedBundle>,
    server: ExpectedPeer,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = provider();
    let roots: SharedBundle = bundle.into();
    let verifier = SpiffeServerVerifier {
        roots: roots.clone(),
        provider: Arc::clone(&provider),
        expected: server,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsConfigError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.resumption = Resumption::store(Arc::new(ClientSessions::new(roots)));
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The TLS server name clients pass to rustls (not sent, not checked).
pub fn server_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls::pki_types::DnsName::try_from("workload.mesh.invalid")
            .expect("a valid DNS name literal")
            .to_owned(),
    )
}

/// The peer's identity from its verified certificate chain (the first certificate).
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    certs
        .and_then(|c| c.first())
        .and_then(|c| spiffe_id_of(c).ok())
}

/// Why a handshake failed, in a small fixed set fit for a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// The client sent no certificate.
    NoCertificate,
    /// The peer's certificate has expired (or is not valid yet).
    Expired,
    /// The peer's chain does not verify against the trust bundle (another CA, a CA
    /// certificate presented as the peer's own, a missing key usage, a bad signature).
    UnknownCa,
    /// The peer's certificate carries no acceptable SPIFFE identity.
    BadIdentity,
    /// The peer did not speak TLS (or sent a malformed record).
    NotTls,
    /// The peer refused our certificate, or sent an alert.
    PeerRefused,
    /// The connection closed or timed out mid-handshake, or anything else.
    Other,
}

impl HandshakeFailure {
    /// The label value: `no_certificate`, `expired`, `unknown_ca`, `bad_identity`, `not_tls`,
    /// `peer_refused`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::Expired => "expired",
            HandshakeFailure::UnknownCa => "unknown_ca",
            HandshakeFailure::BadIdentity => "bad_identity",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::PeerRefused => "peer_refused",
            HandshakeFailure::Other => "other",
        }
    }

    /// Every value, in label order.
    pub const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::NoCertificate,
        HandshakeFailure::Expired,
        HandshakeFailure::UnknownCa,
        HandshakeFailure::BadIdentity,
        HandshakeFailure::NotTls,
        HandshakeFailure::PeerRefused,
        HandshakeFailure::Other,
    ];

    /// Classifies a rustls error.
    pub fn of_tls(error: &rustls::Error) -> Self {
        use rustls::Error as E;
        match error {
            E::NoCertificatesPresented => HandshakeFailure::NoCertificate,
            E::InvalidCertificate(c) => match c {
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => HandshakeFailure::Expired,
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    HandshakeFailure::UnknownCa
                }
                CertificateError::Other(OtherError(e))
                    if e.downcast_ref::<PeerIdentityError>().is_some() =>
                {
                    HandshakeFailure::BadIdentity
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => HandshakeFailure::BadIdentity,
                // webpki's other chain errors: a CA certificate presented as the peer's own,
                // a missing key usage, ...: the chain does not verify.
                CertificateError::Other(_) => HandshakeFailure::UnknownCa,
                _ => HandshakeFailure::Other,
            },
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. } => HandshakeFailure::NotTls,
            E::AlertReceived(_) => HandshakeFailure::PeerRefused,
            _ => HandshakeFailure::Other,
        }
    }

    /// Classifies an I/O error from a TLS stream (rustls errors travel inside them).
    pub fn of_io(error: &io::Error) -> Self {
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .map(Self::of_tls)
            .unwrap_or(HandshakeFailure::Other)
    }
}
