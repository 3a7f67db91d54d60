//! `meshmeter install`: print the Kubernetes manifests of meshmeter's control plane.

use std::io::Write as _;
use std::process::ExitCode;

use meshmeter_install::{render, InstallOptions};

/// Print what `kubectl apply -f -` needs to run meshmeter on Kubernetes (as `linkerd install`):
/// the namespace, the `config.istio.io` CRDs and the traffic ones (`networking.istio.io`
/// DestinationRule and VirtualService, `authentication.istio.io` MeshPolicy and Policy;
/// apiextensions.k8s.io/v1), the telemetry server's
/// ServiceAccount, least-privilege ClusterRole and binding, Deployment (probes on /healthz and
/// /ready, resource requests, non-root, read-only root filesystem) and Service (9091 gRPC
/// reports, 42422 metrics, Prometheus scrape annotations), the sidecar injector (`meshmeter
/// injector`: Deployment, Service, MutatingWebhookConfiguration for namespaces labelled
/// meshmeter-injection=enabled or istio-injection=enabled, failurePolicy Ignore, RBAC limited
/// to its own caBundle), the certificate authority (`meshmeter ca --kubernetes`: Deployment
/// with probes, non-root, read-only root filesystem; Service 8060 gRPC, 15014 metrics;
/// RBAC limited to `create tokenreviews`; its CA certificate and key from the Secret
/// meshmeter-ca, which you create), the control plane (`meshmeter control --kubernetes`:
/// Deployment with probes, Service 15010 gRPC and 15014 metrics, RBAC limited to reading
/// services, pods, endpointslices and the networking objects), and Istio's default TCP telemetry
/// (istio_tcp_* metrics, TCP access log) as objects in the namespace, whose rules apply to
/// every report.
///
///     meshmeter install | kubectl apply -f -
///
/// Exit codes: 0 printed, 1 the output could not be written, 2 a bad flag value.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Image of the meshmeter containers.
    #[arg(long, default_value = meshmeter_inject::DEFAULT_IMAGE)]
    image: String,

    /// Namespace of the control plane and of the default telemetry objects.
    #[arg(long, default_value = "meshmeter-system")]
    namespace: String,

    /// Telemetry server replicas (each serves its own counters; Prometheus sums them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    replicas: u32,

    /// Leave out the config.istio.io, networking.istio.io and authentication.istio.io CRDs
    /// (when Istio's own are installed).
    #[arg(long)]
    skip_crds: bool,

    /// Leave out the sidecar injector (its Deployment, Service, MutatingWebhookConfiguration
    /// and RBAC); `meshmeter inject` still works.
    #[arg(long)]
    skip_injector: bool,

    /// Leave out the certificate authority (its Deployment, Service and RBAC).
    #[arg(long)]
    skip_ca: bool,

    /// Leave out the control plane (`meshmeter control`: its Deployment, Service and RBAC).
    #[arg(long)]
    skip_control: bool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let options = InstallOptions {
        namespace: args.namespace,
        image: args.image,
        replicas: args.replicas,
        skip_crds: args.skip_crds,
        skip_injector: args.skip_injector,
        skip_ca: args.skip_ca,
        skip_control: args.skip_control,
    };
    let yaml = match render(&options) {
        Ok(y) => y,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(yaml.as_bytes()).and_then(|()| out.flush()) {
        eprintln!("error: cannot write the output: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
