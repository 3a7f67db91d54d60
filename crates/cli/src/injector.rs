//! `meshmeter injector`: the mutating admission webhook that injects the sidecar into pods.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_certs::{https_server_config, CertStore, ServingCert};
use meshmeter_injector::{keep_certificates, serve, CaBundlePublisher, CertConfig, Shared};

use meshmeter_kube::{CaBundleError, WebhookCaBundle};

use crate::inject::SidecarArgs;

/// Run the sidecar injector: a mutating admission webhook (admission.k8s.io/v1) that adds the
/// sidecar and capture init container to pods created in namespaces labelled
/// `meshmeter-injection=enabled` or `istio-injection=enabled` (the selection is the
/// MutatingWebhookConfiguration's, from `meshmeter install`), by the transformation of
/// `meshmeter inject`, answered as a JSON Patch.
///
/// Serves HTTPS (rustls) on --listen: POST /inject, GET /healthz, GET /ready (200 once a
/// certificate is served and its CA published). The certificate is generated at start (a CA
/// held in memory and a serving certificate for the Service's names), renewed at two thirds of
/// --cert-validity, and the CA is written into the caBundle of every webhook of
/// --webhook-config through the Kubernetes API (in-cluster service account or KUBECONFIG),
/// keeping the other replicas' CAs (at most 4). Every review is allowed: a pod that cannot be
/// injected is created as it is, with a warning.
///
/// Exit codes: 0 after SIGTERM/SIGINT, 1 runtime failure (address in use, no Kubernetes API),
/// 2 bad flags.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:9443", value_name = "ADDR")]
    listen: SocketAddr,

    /// The injector's Service (names in the serving certificate).
    #[arg(long, default_value = "meshmeter-injector")]
    service: String,

    /// The injector's namespace (names in the serving certificate).
    #[arg(long, env = "POD_NAMESPACE", default_value = "meshmeter-system")]
    namespace: String,

    /// The MutatingWebhookConfiguration whose caBundle the injector keeps.
    #[arg(long, default_value = "meshmeter-injector")]
    webhook_config: String,

    /// Do not touch the Kubernetes API (outside a cluster; see --ca-out).
    #[arg(long)]
    no_publish: bool,

    /// Also write the CA certificate (PEM) to this file whenever a new one is made.
    #[arg(long, value_name = "FILE")]
    ca_out: Option<PathBuf>,

    /// Lifetime of a serving certificate (renewed at two thirds of it). At least 1m.
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    cert_validity: Duration,

    /// Lifetime of the CA (a new one is published beside the old when less than twice
    /// --cert-validity is left). At least three times --cert-validity.
    #[arg(long, default_value = "8760h", value_name = "DURATION", value_parser = crate::shared::parse_duration)]
    ca_validity: Duration,

    #[command(flatten)]
    sidecar: SidecarArgs,
}

/// The API server's copy, a file, both or neither.
struct Publishers {
    kube: Option<WebhookCaBundle>,
    file: Option<PathBuf>,
}

impl CaBundlePublisher for Publishers {
    type Error = CaBundleError;

    async fn publish(&self, ca_pem: &str) -> Result<(), CaBundleError> {
        if let Some(path) = &self.file {
            if let Err(e) = std::fs::write(path, ca_pem) {
                tracing::error!(path = %path.display(), error = %e, "cannot write the CA");
            }
        }
        match &self.kube {
            Some(k) => k.publish(ca_pem).await,
            None => Ok(()),
        }
    }
}

pub(crate) fn run(args: Args) -> ExitCode {
    if args.cert_validity < Duration::from_secs(60) {
        eprintln!("error: --cert-validity must be at least 1m");
        return ExitCode::from(2);
    }
    if args.ca_validity < args.cert_validity * 3 {
        eprintln!("error: --ca-validity must be at least three times --cert-validity");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve_until_stopped(args))
}

async fn serve_until_stopped(args: Args) -> ExitCode {
    let kube = if args.no_publish {
        None
    } else {
        match kube::Client::try_default().await {
            Ok(client) => Some(WebhookCaBundle::new(client, args.webhook_config.clone())),
            Err(e) => {
                eprintln!(
                    "error: cannot reach the Kubernetes API to publish the CA: {e} \
                     (use --no-publish outside a cluster)"
                );
                return ExitCode::from(1);
            }
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    let local = listener.local_addr().unwrap_or(args.listen);
    let store = Arc::new(CertStore::<ServingCert>::default());
    let shared = Arc::new(Shared {
        options: args.sidecar.options(),
        ready: AtomicBool::new(false),
    });
    let config = CertConfig {
        dns_names: CertConfig::service_names(&args.service, &args.namespace),
        ca_validity: args.ca_validity,
        cert_validity: args.cert_validity,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let tls = match https_server_config(store.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let server = tokio::spawn(serve(listener, acceptor, shared.clone(), stopped()));
    let publisher = Publishers {
        kube,
        file: args.ca_out.clone(),
    };
    let certs = tokio::spawn(keep_certificates(
        config,
        store,
        publisher,
        shared,
        stopped(),
    ));
    tracing::info!(addr = %local, "injector listening");
    let code = tokio::select! {
        () = crate::signals::terminated() => ExitCode::SUCCESS,
        done = certs => {
            let why = match done {
                Ok(Ok(())) => "stopped".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            tracing::error!(reason = %why, "certificate keeper stopped");
            ExitCode::from(1)
        }
    };
    let _ = stop_tx.send(true);
    let _ = server.await;
    code
}
