//! What the injected containers look like: image, telemetry server, ports, uid.

/// The image `meshmeter inject` and `meshmeter install` use unless told otherwise.
pub const DEFAULT_IMAGE: &str = concat!("meshmeter/meshmeter:", env!("CARGO_PKG_VERSION"));

/// The telemetry server `meshmeter install` deploys, as the sidecars address it.
pub const DEFAULT_MIXER: &str = "meshmeter-telemetry.meshmeter-system.svc:9091";

/// The control plane `meshmeter install` deploys, as the sidecars address it.
pub const DEFAULT_CONTROL_PLANE: &str = "meshmeter-control.meshmeter-system.svc:15010";

/// The certificate authority `meshmeter install` deploys, as the sidecars address it.
pub const DEFAULT_CA_ADDR: &str = "meshmeter-ca.meshmeter-system.svc:8060";

/// Settings of the injected sidecar and capture init container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectOptions {
    /// Image of both containers (the one `meshmeter` binary).
    pub image: String,
    /// `imagePullPolicy` of both containers.
    pub image_pull_policy: String,
    /// Telemetry server the sidecar reports to, `host:port`.
    pub mixer: String,
    /// Control plane the sidecar takes its routing from, `host:port`; `None`: the sidecar
    /// forwards every connection to its original destination.
    pub control_plane: Option<String>,
    /// Certificate authority the sidecar gets its workload certificate from, `host:port`;
    /// `None`: no mTLS setup (no CA address, token or trust bundle in the pod).
    pub ca_addr: Option<String>,
    /// The sidecar's uid (and gid); its own traffic is never captured.
    pub proxy_uid: u32,
    /// The sidecar's inbound listener port (`meshmeter capture --inbound-proxy-port`).
    pub inbound_proxy_port: u16,
    /// The sidecar's outbound listener port (`meshmeter capture --outbound-proxy-port`).
    pub outbound_proxy_port: u16,
    /// The sidecar's admin port: `/metrics`, `/healthz`, `/ready` (the readiness probe). Never
    /// captured inbound.
    pub admin_port: u16,
}

impl Default for InjectOptions {
    fn default() -> Self {
        InjectOptions {
            image: DEFAULT_IMAGE.to_string(),
            image_pull_policy: "IfNotPresent".to_string(),
            mixer: DEFAULT_MIXER.to_string(),
            control_plane: Some(DEFAULT_CONTROL_PLANE.to_string()),
            ca_addr: Some(DEFAULT_CA_ADDR.to_string()),
            proxy_uid: 1337,
            inbound_proxy_port: 15006,
            outbound_proxy_port: 15001,
            admin_port: 15090,
        }
    }
}
