//! `meshmeter inject`: add the transparent sidecar to Kubernetes manifests (as `istioctl
//! kube-inject`), and the sidecar flags the admission webhook shares.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use meshmeter_inject::{
    inject_stream, InjectOptions, Outcome, DEFAULT_CA_ADDR, DEFAULT_CONTROL_PLANE, DEFAULT_IMAGE,
    DEFAULT_MIXER,
};

/// Largest manifest stream read (bytes).
const MAX_INPUT: u64 = 64 << 20;

/// Add the meshmeter sidecar (`meshmeter proxy --transparent`) and the `meshmeter capture` init
/// container to every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob of a
/// multi-document YAML stream, and print the result for `kubectl apply -f -`.
///
/// Other documents, workloads annotated or labelled `sidecar.istio.io/inject: "false"`,
/// host-network pods and workloads already injected are printed byte for byte, so injecting
/// twice changes nothing. Inbound capture covers the TCP ports the containers declare unless
/// Istio's annotations say otherwise: `traffic.sidecar.istio.io/includeInboundPorts` (`*` or a
/// list), `excludeInboundPorts`, `excludeOutboundPorts`, `excludeOutboundIPRanges`,
/// `includeOutboundIPRanges`. A changed document is re-emitted: its comments are not kept.
///
/// Exit codes: 0 success, 1 the file cannot be read or the output written, 2 invalid input
/// (bad YAML, a malformed workload or annotation: nothing is printed).
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The manifests to inject, or `-` for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
    file: PathBuf,

    #[command(flatten)]
    sidecar: SidecarArgs,
}

/// What the injected containers look like (shared with `meshmeter injector`).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct SidecarArgs {
    /// Image of the sidecar and capture containers.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,

    /// imagePullPolicy of the injected containers.
    #[arg(long, default_value = "IfNotPresent", value_parser = ["Always", "IfNotPresent", "Never"])]
    image_pull_policy: String,

    /// Telemetry server the sidecars report to, `host:port` (what `meshmeter install`
    /// deploys, by default).
    #[arg(long, default_value = DEFAULT_MIXER)]
    mixer: String,

    /// Control plane the sidecars take their routing from (`meshmeter control`), `host:port`
    /// (what `meshmeter install` deploys, by default); empty: none, every connection goes to
    /// its original destination.
    #[arg(long, default_value = DEFAULT_CONTROL_PLANE)]
    control_plane: String,

    /// Certificate authority the sidecars get their workload certificates from (`meshmeter
    /// ca`), `host:port` (what `meshmeter install` deploys, by default). The sidecar also gets
    /// a projected service-account token for the CA and the trust bundle from the ConfigMap
    /// `meshmeter-ca-root` of its namespace. Empty: no mTLS setup at all.
    #[arg(long, default_value = DEFAULT_CA_ADDR)]
    ca_addr: String,

    /// The sidecar's uid; the capture never redirects its traffic.
    #[arg(long, default_value_t = 1337)]
    proxy_uid: u32,

    /// The sidecar's admin port (`/ready` probe, `/metrics`); never captured inbound.
    #[arg(long, default_value_t = 15090)]
    admin_port: u16,
}

impl SidecarArgs {
    pub(crate) fn options(&self) -> InjectOptions {
        InjectOptions {
            image: self.image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            mixer: self.mixer.clone(),
            control_plane: (!self.control_plane.is_empty()).then(|| self.control_plane.clone()),
            ca_addr: (!self.ca_addr.is_empty()).then(|| self.ca_addr.clone()),
            proxy_uid: self.proxy_uid,
            admin_port: self.admin_port,
            ..InjectOptions::default()
        }
    }
}

fn read(file: &PathBuf) -> Result<String, String> {
    let mut text = String::new();
    let name = file.display();
    let result = if file.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_INPUT + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_INPUT + 1).read_to_string(&mut text))
    };
    result.map_err(|e| format!("cannot read {name}: {e}"))?;
    if text.len() as u64 > MAX_INPUT {
        return Err(format!("{name}: larger than {MAX_INPUT} bytes"));
    }
    Ok(text)
}

pub(crate) fn run(args: Args) -> ExitCode {
    let text = match read(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let injected = match inject_stream(&text, &args.sidecar.options()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    for d in &injected.documents {
        let what = format!(
            "{} {}",
            d.kind.as_deref().unwrap_or("(no kind)"),
            d.name.as_deref().unwrap_or("(no name)")
        );
        match &d.outcome {
            Outcome::Injected => {
                tracing::info!(document = d.index, line = d.line, "injected {what}")
            }
            Outcome::Skipped(why) => {
                tracing::debug!(document = d.index, line = d.line, "left {what}: {why}")
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out
        .write_all(injected.output.as_bytes())
        .and_then(|()| out.flush())
    {
        eprintln!("error: cannot write the output: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
