//! The manifests `meshmeter install` prints for `kubectl apply -f -`: the namespace, the
//! `config.istio.io` CRDs, the telemetry server (ServiceAccount, least-privilege ClusterRole and
//! binding, Deployment, Service with Prometheus scrape annotations), the sidecar injector
//! (Deployment, Service, MutatingWebhookConfiguration, RBAC for its own caBundle only), the
//! certificate authority (`meshmeter ca --kubernetes`: Deployment, Service, RBAC for
//! `create tokenreviews` only; its CA certificate comes from the Secret [`CA_SECRET`]), the
//! control plane that streams sidecars their routing views (`meshmeter control --kubernetes`:
//! Deployment, Service 15010, read-only RBAC for Services, EndpointSlices, pods and the
//! networking objects) and Istio's default TCP telemetry objects. Pure text: no I/O.
//!
//! ```
//! use meshmeter_install::{render, InstallOptions};
//!
//! let yaml = render(&InstallOptions { replicas: 2, ..InstallOptions::default() }).unwrap();
//! assert!(yaml.contains("kind: CustomResourceDefinition"));
//! assert!(yaml.contains("  replicas: 2\n"));
//! let without = render(&InstallOptions { skip_crds: true, ..InstallOptions::default() }).unwrap();
//! assert!(!without.contains("kind: CustomResourceDefinition"));
//! ```

#![warn(missing_docs)]

/// Every meshmeter container's security settings: no privilege escalation, a read-only root
/// filesystem, no capabilities (the lines of a container's `securityContext`, indented for
/// a Deployment's pod template).
const CONTAINER_SECURITY: &str = "        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop:
            - ALL";

mod ca;
mod control;
mod crds;
mod defaults;
mod injector;
mod server;

pub use ca::{CA, CA_METRICS_PORT, CA_PORT, CA_SECRET, CA_TOKEN_AUDIENCE};
pub use control::{CONTROL, CONTROL_ADMIN_PORT, CONTROL_PORT, TRAFFIC_KINDS};
pub use crds::CONFIG_KINDS;
pub use injector::{INJECTOR, INJECTOR_PORT};
pub use server::{GRPC_PORT, METRICS_PORT, RUN_AS, TELEMETRY};

/// What to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// Namespace of the control plane (and of the default telemetry objects, whose rules
    /// apply to every report).
    pub namespace: String,
    /// Image of every meshmeter container.
    pub image: String,
    /// Telemetry server replicas.
    pub replicas: u32,
    /// Leave the `config.istio.io`, `networking.istio.io` and `authentication.istio.io` CRDs
    /// out (Istio's own are installed).
    pub skip_crds: bool,
    /// Leave the sidecar injector (webhook) out.
    pub skip_injector: bool,
    /// Leave the certificate authority out.
    pub skip_ca: bool,
    /// Leave the control plane (`meshmeter control`) out.
    pub skip_control: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            namespace: "meshmeter-system".to_string(),
            image: meshmeter_inject::DEFAULT_IMAGE.to_string(),
            replicas: 1,
            skip_crds: false,
            skip_injector: false,
            skip_ca: false,
            skip_control: false,
        }
    }
}

/// Options that cannot produce valid manifests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InstallError {
    /// The namespace is not a DNS-1123 label.
    #[error("namespace {0:?}: must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit")]
    Namespace(String),
    /// The image reference is empty or holds whitespace or control characters.
    #[error("image {0:?}: must be a non-empty image reference without spaces")]
    Image(String),
}

/// Renders every manifest, documents separated by `---`.
pub fn render(o: &InstallOptions) -> Result<String, InstallError> {
    validate(o)?;
    let mut out = String::from("# meshmeter install: apply with `kubectl apply -f -`\n");
    server::namespace(&mut out, o);
    if !o.skip_crds {
        crds::render(&mut out);
        control::render_crds(&mut out);
    }
    server::telemetry(&mut out, o);
    if !o.skip_injector {
        injector::render(&mut out, o);
    }
    if !o.skip_ca {
        ca::render(&mut out, o);
    }
    if !o.skip_control {
        control::render(&mut out, o);
    }
    defaults::render(&mut out, &o.namespace);
    Ok(out)
}

fn validate(o: &InstallOptions) -> Result<(), InstallError> {
    let ns = &o.namespace;
    let label_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if ns.is_empty()
        || ns.len() > 63
        || !ns.chars().all(label_char)
        || ns.starts_with('-')
        || ns.ends_with('-')
    {
        return Err(InstallError::Namespace(ns.clone()));
    }
    if o.image.is_empty() || o.image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InstallError::Image(o.image.clone()));
    }
    Ok(())
}

/// Appends a component's ServiceAccount, its ClusterRole with `rules` (YAML list items) and
/// the binding between them, each labelled with the component's name.
pub(crate) fn account(out: &mut String, name: &str, namespace: &str, rules: &str) {
    use std::fmt::Write as _;
    let labels = format!(
        "  labels:\n    app.kubernetes.io/name: {name}\n    app.kubernetes.io/part-of: meshmeter"
    );
    let _ = write!(
        out,
        "---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {name}
  namespace: {namespace}
{labels}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {name}
{labels}
rules:
{rules}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {name}
{labels}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {name}
subjects:
- kind: ServiceAccount
  name: {name}
  namespace: {namespace}
"
    );
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
pub(crate) fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests;
