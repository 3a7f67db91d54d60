//! Mutual TLS between sidecars (`--tls-mode`, `--peer-authentication`): the workload
//! certificate from the CA, its rotation, and the TLS settings each listener gets.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use meshmeter_ca::{CaClient, RotationStats, Rotator};
use meshmeter_certs::rustls::ClientConfig;
use meshmeter_certs::{
    client_config, server_config, CertStore, ExpectedPeer, SharedBundle, SpiffeId, TrustBundle,
};
use meshmeter_proxy::{InboundTls, ListenerTls, PeerAuthentication};

use super::{usage, Args, Failure};

/// Mutual TLS between sidecars.
#[derive(clap::Args, Debug)]
pub(crate) struct MtlsArgs {
    /// TLS toward the upstream: `disable`, or `istio-mutual` (originate TLS 1.3 with the
    /// workload certificate and verify the upstream's, as Istio's DestinationRule
    /// `tls.mode: ISTIO_MUTUAL`). Needs the --ca-* flags.
    #[arg(long, default_value = "disable", value_name = "MODE", value_parser = parse_tls_mode)]
    tls_mode: TlsMode,

    /// TLS from clients: `disable` (plaintext only), `permissive` (mTLS and plaintext on one
    /// port, told apart by the first bytes) or `strict` (mTLS only; plaintext and bad
    /// certificates refused). Needs the --ca-* flags unless `disable`.
    #[arg(long, default_value = "disable", value_name = "MODE")]
    pub(super) peer_authentication: PeerAuthentication,

    /// The certificate authority (`meshmeter ca`), `host:port`.
    #[arg(long, env = "MESHMETER_CA_ADDR", value_name = "ADDR")]
    ca_addr: Option<String>,

    /// File holding this workload's token for the CA (a bootstrap token, or a projected
    /// service-account token on Kubernetes); read again before every renewal.
    #[arg(long, env = "MESHMETER_CA_TOKEN_FILE", value_name = "FILE")]
    ca_token_file: Option<PathBuf>,

    /// The mesh's trust bundle: root certificate(s), PEM (`meshmeter ca --write-root-cert`).
    /// The CA itself is verified against it too. Read again every --ca-root-reload-interval:
    /// a changed bundle applies to new handshakes (to rotate the root: add the new one, let
    /// certificates renew under it, then remove the old one).
    #[arg(long, env = "MESHMETER_CA_ROOT", value_name = "FILE")]
    ca_root: Option<PathBuf>,

    /// How long to wait at start for the first workload certificate before exiting 1 (the
    /// CA is retried meanwhile, 0.5 s doubling to 30 s). `0s`: wait until the CA answers,
    /// which suits a cluster whose CA may start after the workloads (no restart loop).
    #[arg(long, env = "MESHMETER_CA_START_TIMEOUT", default_value = "30s", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    ca_start_timeout: Duration,

    /// How often --ca-root is read again.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    ca_root_reload_interval: Duration,

    /// Talk to a CA started with `meshmeter ca --plaintext` (the token crosses in clear).
    #[arg(long)]
    ca_plaintext: bool,

    /// This workload's identity, `spiffe://DOMAIN/ns/N/sa/S` or `DOMAIN/ns/N/sa/S`. Default:
    /// --trust-domain, --namespace and --service-account.
    #[arg(long, env = "MESHMETER_WORKLOAD_IDENTITY", value_name = "ID")]
    workload_identity: Option<String>,

    /// The pod's service account (with --namespace, the default workload identity).
    #[arg(long, env = "MESHMETER_SERVICE_ACCOUNT", value_name = "NAME")]
    pub(super) service_account: Option<String>,

    /// The mesh's trust domain.
    #[arg(long, default_value = meshmeter_certs::DEFAULT_TRUST_DOMAIN, value_name = "DOMAIN")]
    trust_domain: String,

    /// With --tls-mode istio-mutual: the identity the upstream must prove (repeatable: any of
    /// them). Default: any workload of the trust domain.
    #[arg(long, value_name = "ID")]
    upstream_identity: Vec<String>,

    /// Workload certificate lifetime to ask the CA for (default: the CA's). The certificate
    /// is renewed at two thirds of its lifetime.
    #[arg(long, value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    workload_cert_ttl: Option<Duration>,

    /// With --peer-authentication permissive: how long to wait for a client's first bytes
    /// before taking the connection for plaintext (a protocol whose server speaks first).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    protocol_detect_timeout: Duration,
}

/// `--tls-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    Disable,
    IstioMutual,
}

fn parse_tls_mode(text: &str) -> Result<TlsMode, String> {
    match text.to_ascii_lowercase().as_str() {
        "disable" => Ok(TlsMode::Disable),
        "istio-mutual" | "istio_mutual" => Ok(TlsMode::IstioMutual),
        _ => Err(format!(
            "unknown TLS mode '{text}' (expected 'disable' or 'istio-mutual')"
        )),
    }
}

/// The certificate machinery of `--tls-mode` / `--peer-authentication` (and of routing's
/// `ISTIO_MUTUAL` clusters and inbound policies under `--control-plane`).
pub(super) struct Mtls {
    pub(super) tls: ListenerTls,
    pub(super) rotator: Rotator,
    pub(super) rotation: Arc<RotationStats>,
    /// Client configurations by the identity expected of the upstream.
    pub(super) upstreams: Arc<UpstreamConfigs>,
}

/// Client TLS configurations for routed endpoints, one per expected identity, made on first
/// use and kept (the certificate store they share rotates underneath them).
pub(super) struct UpstreamConfigs {
    bundle: SharedBundle,
    store: Arc<CertStore>,
    trust_domain: String,
    made: Mutex<HashMap<Option<SpiffeId>, Arc<ClientConfig>>>,
}

impl UpstreamConfigs {
    /// The configuration for an endpoint of `namespace` running as `service_account`: its
    /// certificate must name exactly that identity; with the service account unknown, any
    /// identity of the trust domain.
    pub(super) fn for_endpoint(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Option<Arc<ClientConfig>> {
        let id = if service_account.is_empty() {
            None
        } else {
            SpiffeId::new(&self.trust_domain, namespace, service_account).ok()
        };
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = made.get(&id) {
            return Some(Arc::clone(config));
        }
        let expected = match &id {
            Some(id) => ExpectedPeer::OneOf(vec![id.clone()]),
            None => ExpectedPeer::TrustDomain(self.trust_domain.clone()),
        };
        match client_config(&self.bundle, Arc::clone(&self.store), expected) {
            Ok(config) => {
                made.insert(id, Arc::clone(&config));
                Some(config)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot build the TLS configuration for a routed endpoint");
                None
            }
        }
    }
}

/// A CA file the sidecar was pointed at but cannot find.
#[derive(Debug, PartialEq, Eq)]
struct MissingCaFile {
    path: PathBuf,
    what: &'static str,
    hint: &'static str,
}

/// The first of --ca-token-file and --ca-root that is not given or does not exist.
fn missing_ca_file(m: &MtlsArgs) -> Option<MissingCaFile> {
    let files = [
        (
            &m.ca_token_file,
            "no token for the CA",
            "on Kubernetes: the projected token volume meshmeter-ca-token",
        ),
        (
            &m.ca_root,
            "no trust bundle",
            "on Kubernetes: the ConfigMap meshmeter-ca-root of the pod's namespace, published by `meshmeter ca --kubernetes`",
        ),
    ];
    files.into_iter().find_map(|(file, what, hint)| match file {
        Some(path) if path.is_file() => None,
        Some(path) => Some(MissingCaFile {
            path: path.clone(),
            what,
            hint,
        }),
        None => Some(MissingCaFile {
            path: PathBuf::new(),
            what,
            hint,
        }),
    })
}

pub(super) async fn mtls(args: &Args) -> Result<Option<Mtls>, Failure> {
    let m = &args.mtls;
    // Under a control plane, certificates are fetched whenever a CA is given: its views may
    // ask for mutual TLS at any time.
    let ca_given = m.ca_addr.as_deref().is_some_and(|a| !a.is_empty());
    let routed = args.control_plane.as_deref().is_some_and(|a| !a.is_empty()) && ca_given;
    let asked =
        m.tls_mode != TlsMode::Disable || m.peer_authentication != PeerAuthentication::Disable;
    if !asked && !routed {
        if ca_given {
            tracing::debug!(
                "CA settings given but no --tls-mode, --peer-authentication or --control-plane asks for TLS: no workload certificate"
            );
        }
        return Ok(None);
    }
    if !asked {
        // Only the control plane may ask for mutual TLS: a sidecar injected into a namespace
        // the CA has not published its trust bundle to (yet) still carries plaintext.
        if let Some(missing) = missing_ca_file(m) {
            tracing::warn!(
                file = %missing.path.display(),
                "mutual TLS off: {} ({}); destinations the control plane marks ISTIO_MUTUAL fail and STRICT inbound policies refuse, until the sidecar restarts",
                missing.what,
                missing.hint,
            );
            return Ok(None);
        }
    }
    let need = |flag: &str| {
        usage(format!(
            "{flag} is required with --tls-mode istio-mutual or --peer-authentication strict|permissive"
        ))
    };
    let ca_addr = m.ca_addr.as_ref().ok_or_else(|| need("--ca-addr"))?;
    let token_file = m
        .ca_token_file
        .as_ref()
        .ok_or_else(|| need("--ca-token-file"))?;
    let root_file = m.ca_root.as_ref().ok_or_else(|| need("--ca-root"))?;
    let identity = match (&m.workload_identity, &m.service_account, &args.namespace) {
        (Some(text), _, _) => SpiffeId::parse(text).map_err(|e| usage(format!("--workload-identity: {e}")))?,
        (None, Some(sa), Some(ns)) => SpiffeId::new(&m.trust_domain, ns, sa)
            .map_err(|e| usage(format!("--service-account/--namespace: {e}")))?,
        _ => {
            return Err(usage(
                "mTLS needs the workload identity: --workload-identity, or --service-account with --namespace",
            ))
        }
    };
    let read = |path: &PathBuf, flag: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| usage(format!("{flag}: cannot read {}: {e}", path.display())))
    };
    let bundle = SharedBundle::new(
        TrustBundle::from_pem(
            &read(root_file, "--ca-root")?,
            &root_file.display().to_string(),
        )
        .map_err(|e| usage(format!("--ca-root: {e}")))?,
    );
    let token = read(token_file, "--ca-token-file")?;
    let client = if m.ca_plaintext {
        CaClient::lazy(ca_addr, token.trim())
    } else {
        let ca_id = meshmeter_ca::ca_identity(identity.trust_domain())
            .map_err(|e| usage(format!("the CA's identity: {e}")))?;
        let config =
            meshmeter_certs::service_client_config(&bundle, ExpectedPeer::OneOf(vec![ca_id]))
                .map_err(|e| Failure::Runtime(e.into()))?;
        CaClient::lazy_tls(ca_addr, token.trim(), config)
    }
    .map_err(|e| usage(format!("--ca-addr: {e}")))?
    .reread_token_from(token_file.clone());
    let store = Arc::new(CertStore::new());
    let rotation = Arc::new(RotationStats::default());
    let rotator = Rotator::new(
        client,
        identity.clone(),
        m.workload_cert_ttl,
        Arc::clone(&store),
        &bundle,
        Arc::clone(&rotation),
    )
    .follow_bundle_file(root_file.clone(), m.ca_root_reload_interval);
    let start_timeout = match m.ca_start_timeout {
        Duration::ZERO => Duration::MAX,
        timeout => timeout,
    };
    rotator.initial(start_timeout).await.map_err(|e| {
        Failure::Runtime(anyhow::anyhow!(
            "no workload certificate from the CA at {ca_addr}: {e}"
        ))
    })?;
    let domain = ExpectedPeer::TrustDomain(identity.trust_domain().to_owned());
    let inbound = match m.peer_authentication {
        PeerAuthentication::Disable if !routed => None,
        mode => Some(InboundTls {
            mode,
            config: server_config(&bundle, Arc::clone(&store), domain.clone())
                .map_err(|e| Failure::Runtime(e.into()))?,
            handshake_timeout: Duration::from_secs(10),
            detect_timeout: m.protocol_detect_timeout,
        }),
    };
    let upstream = if m.tls_mode == TlsMode::IstioMutual {
        let expected = if m.upstream_identity.is_empty() {
            domain
        } else {
            ExpectedPeer::OneOf(
                m.upstream_identity
                    .iter()
                    .map(|t| {
                        SpiffeId::parse(t).map_err(|e| usage(format!("--upstream-identity: {e}")))
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
        Some(
            client_config(&bundle, Arc::clone(&store), expected)
                .map_err(|e| Failure::Runtime(e.into()))?,
        )
    } else {
        None
    };
    let upstreams = Arc::new(UpstreamConfigs {
        bundle,
        store,
        trust_domain: identity.trust_domain().to_owned(),
        made: Mutex::new(HashMap::new()),
    });
    tracing::info!(identity = %identity, peer_authentication = %m.peer_authentication, tls_mode = ?m.tls_mode, "mutual TLS on");
    Ok(Some(Mtls {
        tls: ListenerTls {
            inbound,
            upstream,
            local_principal: Some(Arc::from(identity.principal())),
        },
        rotator,
        rotation,
        upstreams,
    }))
}

#[cfg(test)]
pub(super) mod tests {
    use meshmeter_certs::Authority;

    use super::*;

    /// Configurations for a workload of a fresh CA.
    pub(in super::super) fn configs() -> UpstreamConfigs {
        let hour = Duration::from_secs(3600);
        let ca = Authority::generate_root("cluster.local", hour).unwrap();
        let id = SpiffeId::new("cluster.local", "default", "productpage").unwrap();
        UpstreamConfigs {
            bundle: SharedBundle::new(TrustBundle::new(vec![ca.root().clone()], "root").unwrap()),
            store: Arc::new(CertStore::with(ca.issue_workload(&id, hour).unwrap())),
            trust_domain: "cluster.local".into(),
            made: Mutex::new(HashMap::new()),
        }
    }

    impl UpstreamConfigs {
        pub(in super::super) fn made_for(&self, id: &Option<SpiffeId>) -> bool {
            self.made.lock().unwrap().contains_key(id)
        }
    }

    #[test]
    fn upstream_configs_are_made_once_per_identity() {
        let configs = configs();
        let reviews = configs.for_endpoint("default", "reviews").unwrap();
        let again = configs.for_endpoint("default", "reviews").unwrap();
        assert!(Arc::ptr_eq(&reviews, &again));
        let ratings = configs.for_endpoint("default", "ratings").unwrap();
        assert!(!Arc::ptr_eq(&reviews, &ratings));
        let unknown = configs.for_endpoint("default", "").unwrap();
        assert!(!Arc::ptr_eq(&reviews, &unknown));
        assert_eq!(configs.made.lock().unwrap().len(), 3);
        assert!(configs.made.lock().unwrap().contains_key(&None));
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(extra: &[&str]) -> Args {
        use clap::Parser as _;
        let mut argv = vec!["meshmeter", "--transparent"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[tokio::test]
    async fn ca_settings_without_anything_asking_for_tls_set_nothing_up() {
        let args = parse(&[
            "--ca-addr",
            "127.0.0.1:1",
            "--ca-token-file",
            "/nonexistent/token",
            "--ca-root",
            "/nonexistent/root-cert.pem",
        ]);
        assert!(matches!(mtls(&args).await, Ok(None)));
    }

    #[tokio::test]
    async fn under_a_control_plane_a_missing_trust_bundle_leaves_mtls_off() {
        let dir = std::env::temp_dir().join(format!("meshmeter-mtls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "t").unwrap();
        let root = dir.join("root-cert.pem");
        let (token_text, root_text) = (token.display().to_string(), root.display().to_string());
        let args = parse(&[
            "--control-plane",
            "127.0.0.1:1",
            "--ca-addr",
            "127.0.0.1:1",
            "--ca-token-file",
            &token_text,
            "--ca-root",
            &root_text,
            "--namespace",
            "default",
            "--service-account",
            "reviews",
        ]);
        assert_eq!(
            missing_ca_file(&args.mtls),
            Some(MissingCaFile {
                path: root.clone(),
                what: "no trust bundle",
                hint: "on Kubernetes: the ConfigMap meshmeter-ca-root of the pod's namespace, published by `meshmeter ca --kubernetes`",
            })
        );
        assert!(matches!(mtls(&args).await, Ok(None)));
        // Asked for explicitly, the same gap is a usage error.
        let mut strict = args;
        strict.mtls.peer_authentication = PeerAuthentication::Strict;
        assert!(matches!(mtls(&strict).await, Err(Failure::Usage(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
