//! `meshmeter ca`: the mesh's certificate authority.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::shared::Failure;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_admin::{AdminServer, Readiness};
use meshmeter_ca::{Authenticator, BootstrapTokens, CaServer, CaStats, TtlPolicy};
use meshmeter_certs::rustls::pki_types::CertificateDer;
use meshmeter_certs::Authority;
use meshmeter_kube::TokenReviewer;

/// Run the mesh's certificate authority: issue short-lived workload certificates carrying the
/// caller's SPIFFE identity (`spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`) over a
/// gRPC CSR API (`istio.v1.auth.IstioCertificateService/CreateCertificate`). Sidecars generate
/// their keys themselves and send only a certificate signing request: private keys never leave
/// them. A CSR naming anyone but the caller is refused.
///
/// The signing CA is generated at start (a self-signed root, valid --root-cert-ttl), or read
/// from --ca-cert and --ca-key: the CA certificate first, then its parents up to and including
/// the root (an intermediate under an organisation's root carries the whole chain).
/// --write-root-cert writes the root for sidecars' --ca-root.
///
/// Callers authenticate with `authorization: Bearer TOKEN`. Off Kubernetes the tokens come
/// from --bootstrap-token-file: one `TOKEN NAMESPACE/SERVICE_ACCOUNT` per line (at least 16
/// characters, no spaces, unique; blank lines and `#` comments ignored). On Kubernetes
/// (--kubernetes, instead of the file) they are projected service-account tokens, checked by
/// the API server's TokenReview for one of the --token-audience audiences: a token of
/// `system:serviceaccount:NAMESPACE:NAME` gets certificates for that service account only;
/// other users are refused (permission_denied), and an API server that cannot be asked makes
/// requests fail as unavailable. The CA's own service account needs `create` on
/// `tokenreviews.authentication.k8s.io` (`meshmeter install` grants it).
///
/// With --kubernetes the CA also publishes its root certificate into the ConfigMap
/// `meshmeter-ca-root` (key `root-cert.pem`) of every namespace, watching for new ones, for
/// injected sidecars' trust bundle. It creates the ConfigMaps labelled
/// `app.kubernetes.io/managed-by=meshmeter-ca` and only ever updates those; this needs `list`
/// and `watch` on namespaces and `get`, `create`, `update` on configmaps. --no-trust-bundle
/// turns it off.
///
/// The gRPC port speaks TLS 1.3: the CA presents a certificate for
/// `spiffe://TRUST_DOMAIN/ns/istio-system/sa/meshmeter-ca` (issued by itself at start, valid as
/// long as the CA's own certificate, at most a year), which sidecars verify against --ca-root
/// before sending their token. --plaintext turns TLS off (loopback or trusted networks only:
/// tokens cross it in clear).
///
/// Metrics on --metrics-addr: meshmeter_ca_certificates_issued_total,
/// meshmeter_ca_requests_refused_total{reason="unauthenticated"|"bad_request"|
/// "permission_denied"|"unavailable"}.
///
/// Exit codes: 0 after SIGTERM/SIGINT, 1 runtime failure (address in use), 2 bad flags or
/// unusable files (certificate, key, token file).
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("authentication").required(true).args(["bootstrap_token_file", "kubernetes"]))]
pub(crate) struct Args {
    /// Where to accept certificate requests.
    #[arg(long, default_value = "127.0.0.1:8060", value_name = "ADDR")]
    listen: SocketAddr,

    /// The trust domain of issued identities.
    #[arg(long, default_value = meshmeter_certs::DEFAULT_TRUST_DOMAIN, value_name = "DOMAIN")]
    trust_domain: String,

    /// The CA certificate (PEM), followed by its chain up to the root. Requires --ca-key.
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    ca_cert: Option<PathBuf>,

    /// The CA certificate's private key (PEM, PKCS#8). Requires --ca-cert.
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    ca_key: Option<PathBuf>,

    /// Lifetime of a generated root.
    #[arg(long, default_value = "87600h", value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    root_cert_ttl: Duration,

    /// Lifetime of workload certificates when the caller asks for none.
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    workload_cert_ttl: Duration,

    /// The longest workload certificate lifetime granted, whatever is asked.
    #[arg(long, default_value = "2160h", value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    max_workload_cert_ttl: Duration,

    /// Bootstrap tokens: `TOKEN NAMESPACE/SERVICE_ACCOUNT` per line. Either this or
    /// --kubernetes.
    #[arg(long, value_name = "FILE")]
    bootstrap_token_file: Option<PathBuf>,

    /// Authenticate callers' projected service-account tokens with the Kubernetes API
    /// server's TokenReview (in-cluster credentials, or --kubeconfig).
    #[arg(long)]
    kubernetes: bool,

    /// A kubeconfig file for --kubernetes (default: in-cluster credentials); several
    /// `:`-separated files are merged as kubectl merges them. Ignored without --kubernetes.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    kubeconfig: Option<PathBuf>,

    /// The kubeconfig context for --kubernetes (default: its current-context).
    #[arg(long, value_name = "NAME", requires = "kubernetes")]
    context: Option<String>,

    /// With --kubernetes, an audience callers' tokens must be projected for; repeatable (a
    /// token for any of them is accepted).
    #[arg(
        long = "token-audience",
        value_name = "AUDIENCE",
        default_value = meshmeter_kube::DEFAULT_TOKEN_AUDIENCE,
        requires = "kubernetes"
    )]
    token_audiences: Vec<String>,

    /// With --kubernetes, do not publish the root into every namespace's ConfigMap
    /// `meshmeter-ca-root`.
    #[arg(long, requires = "kubernetes")]
    no_trust_bundle: bool,

    /// Write the root certificate (PEM) here at start, for sidecars' --ca-root (with the
    /// --extra-root-certs after it).
    #[arg(long, value_name = "FILE")]
    write_root_cert: Option<PathBuf>,

    /// Further root certificates (PEM) to publish with the CA's own, in the ConfigMaps and
    /// --write-root-cert: during a root rotation, the other root, so that sidecars trust
    /// certificates under both while they renew (sidecars read their bundle file again every
    /// few seconds).
    #[arg(long, value_name = "FILE")]
    extra_root_certs: Option<PathBuf>,

    /// Where to serve /metrics, /healthz and /ready.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Serve the CSR API without TLS (sidecars then need --ca-plaintext).
    #[arg(long)]
    plaintext: bool,
}

/// The trust bundle the CA hands out: its root, then the --extra-root-certs (each once).
fn published_roots(
    root: &CertificateDer<'static>,
    extra: Option<&Path>,
) -> Result<String, Failure> {
    let mut roots = vec![root.clone()];
    if let Some(path) = extra {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::Usage(format!(
                "--extra-root-certs: cannot read {}: {e}",
                path.display()
            ))
        })?;
        let what = path.display().to_string();
        let bundle = meshmeter_certs::TrustBundle::from_pem(&text, &what)
            .map_err(|e| Failure::Usage(format!("--extra-root-certs: {e}")))?;
        for cert in bundle.certificates() {
            if !roots.contains(cert) {
                roots.push(cert.clone());
            }
        }
    }
    Ok(meshmeter_certs::certificates_to_pem(&roots))
}

pub(crate) fn run(args: Args) -> ExitCode {
    crate::shared::run_server(serve(args))
}

fn read(path: &PathBuf, flag: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("{flag}: cannot read {}: {e}", path.display())))
}

fn authority(args: &Args) -> Result<Authority, Failure> {
    match (&args.ca_cert, &args.ca_key) {
        (Some(cert), Some(key)) => Authority::from_pem(
            &read(cert, "--ca-cert")?,
            &read(key, "--ca-key")?,
            &args.trust_domain,
            &cert.display().to_string(),
        )
        .map_err(|e| Failure::Usage(format!("--ca-cert/--ca-key: {e}"))),
        _ => {
            let a = Authority::generate_root(&args.trust_domain, args.root_cert_ttl)
                .map_err(|e| Failure::Runtime(e.to_string()))?;
            tracing::info!(trust_domain = %args.trust_domain, ttl = ?args.root_cert_ttl, "generated a self-signed root CA");
            Ok(a)
        }
    }
}

async fn serve(args: Args) -> Result<(), Failure> {
    if args.workload_cert_ttl > args.max_workload_cert_ttl {
        return Err(Failure::Usage(format!(
            "--workload-cert-ttl {:?} is longer than --max-workload-cert-ttl {:?}",
            args.workload_cert_ttl, args.max_workload_cert_ttl
        )));
    }
    meshmeter_certs::SpiffeId::new(&args.trust_domain, "ns", "sa")
        .map_err(|e| Failure::Usage(format!("--trust-domain: {e}")))?;
    let mut kube_client = None;
    let authenticator: Arc<dyn Authenticator> = match &args.bootstrap_token_file {
        Some(file) => Arc::new(
            BootstrapTokens::load(file)
                .map_err(|e| Failure::Usage(format!("--bootstrap-token-file: {e}")))?,
        ),
        None => {
            let options = meshmeter_kube::ClientOptions {
                kubeconfig: args
                    .kubeconfig
                    .clone()
                    .filter(|p| !p.as_os_str().is_empty()),
                context: args.context.clone(),
            };
            let client = meshmeter_kube::connect(&options)
                .await
                .map_err(|e| Failure::Usage(format!("--kubernetes: {e}")))?;
            kube_client = Some(client.clone());
            let reviewer = TokenReviewer::new(client, args.token_audiences.clone());
            tracing::info!(audiences = ?reviewer.audiences(), "authenticating callers with TokenReview");
            Arc::new(reviewer)
        }
    };
    let authority = authority(&args)?;
    let root_pem = published_roots(authority.root(), args.extra_root_certs.as_deref())?;
    let self_metrics = Arc::new(meshmeter_selfmetrics::SelfMetrics::new());
    let publisher = match kube_client {
        Some(client) if !args.no_trust_bundle => {
            tracing::info!(
                configmap = meshmeter_kube::TRUST_BUNDLE_CONFIGMAP,
                "publishing the root certificate into every namespace"
            );
            let metrics = meshmeter_kube::WatchMetrics::new(Arc::clone(&self_metrics));
            Some(meshmeter_kube::TrustBundlePublisher::new(client, &root_pem).start(&metrics))
        }
        _ => None,
    };
    if let Some(path) = &args.write_root_cert {
        std::fs::write(path, &root_pem).map_err(|e| {
            Failure::Runtime(format!(
                "--write-root-cert: cannot write {}: {e}",
                path.display()
            ))
        })?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot listen on {}: {e}", args.listen)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let tls = if args.plaintext {
        tracing::warn!("--plaintext: callers' tokens cross the network in clear");
        None
    } else {
        let id = meshmeter_ca::ca_identity(&args.trust_domain)
            .map_err(|e| Failure::Usage(format!("--trust-domain: {e}")))?;
        let year = Duration::from_secs(365 * 24 * 3600);
        let serving = authority.issue_workload(&id, year).map_err(|e| {
            Failure::Runtime(format!("cannot issue the CA's serving certificate: {e}"))
        })?;
        let store = Arc::new(meshmeter_certs::CertStore::with(serving));
        Some(
            meshmeter_certs::service_server_config(store)
                .map_err(|e| Failure::Runtime(e.to_string()))?,
        )
    };
    let stats = Arc::new(CaStats::default());
    let server = CaServer::new(
        authority,
        authenticator,
        TtlPolicy {
            default: args.workload_cert_ttl,
            max: args.max_workload_cert_ttl,
        },
        Arc::clone(&stats),
    );
    let readiness = Readiness::new();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let admin = match args.metrics_addr {
        Some(addr) => {
            let metrics = Arc::clone(&stats);
            let self_metrics = Arc::clone(&self_metrics);
            let admin = AdminServer::bind(
                addr,
                move |out: &mut String| {
                    metrics.render_prometheus(out);
                    self_metrics.encode(out);
                },
                readiness.clone(),
            )
            .await
            .map_err(|e| Failure::Runtime(e.to_string()))?;
            tracing::info!(addr = %admin.local_addr(), "serving /metrics and /ready");
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(admin.serve(async move {
                let _ = rx.wait_for(|&s| s).await;
            })))
        }
        None => None,
    };
    // Tests read this line for the bound address.
    tracing::info!(listen = %bound, "certificate authority listening");
    readiness.set(true);
    let mut rx = stop_rx;
    let stopped = async move {
        let _ = rx.wait_for(|&s| s).await;
    };
    let serving = match tls {
        Some(config) => tokio::spawn(server.serve_tls(listener, config, stopped)),
        None => tokio::spawn(server.serve(listener, stopped)),
    };
    tokio::select! {
        () = crate::signals::terminated() => {}
        result = serving => {
            let _ = stop.send(true);
            return Err(Failure::Runtime(match result {
                Ok(Ok(())) => "the CA server stopped while serving".into(),
                Ok(Err(e)) => format!("the CA server failed: {e}"),
                Err(e) => format!("the CA server task failed: {e}"),
            }));
        }
    }
    readiness.set(false);
    if let Some(task) = publisher {
        task.abort();
    }
    let _ = stop.send(true);
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod audience_tests {
    /// The CA's default TokenReview audience, the audience sidecars project their tokens
    /// with, and the one `install` passes must be one string, or every sidecar is refused.
    #[test]
    fn one_token_audience_everywhere() {
        assert_eq!(
            meshmeter_kube::DEFAULT_TOKEN_AUDIENCE,
            meshmeter_inject::CA_TOKEN_AUDIENCE
        );
        assert_eq!(
            meshmeter_install::CA_TOKEN_AUDIENCE,
            meshmeter_inject::CA_TOKEN_AUDIENCE
        );
    }
}
