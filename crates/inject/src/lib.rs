//! Sidecar injection as a pure transformation of Kubernetes manifests: no I/O, shared by
//! `meshmeter inject` (YAML streams) and `meshmeter injector` (pods as JSON, answered with a
//! JSON Patch).
//!
//! Into every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job
//! and CronJob (and the items of a `List`) it adds:
//! - the sidecar container [`SIDECAR_CONTAINER`]: `meshmeter proxy --transparent`, uid 1337,
//!   identity from the downward API (`POD_NAME`, `POD_NAMESPACE`, the service account, the
//!   pod's addresses `MESHMETER_POD_IPS`, one variable per label joined into
//!   `MESHMETER_LABELS`, and the [`PODINFO_VOLUME`] files), the telemetry server and the
//!   control plane (`MESHMETER_MIXER`, `MESHMETER_CONTROL_PLANE`), readiness on `/ready` of
//!   its admin port;
//! - with a CA address (the default), what the sidecar needs for its workload certificate:
//!   `MESHMETER_CA_ADDR`, a projected service-account token for the CA's audience
//!   ([`CA_TOKEN_AUDIENCE`], [`CA_TOKEN_VOLUME`], `MESHMETER_CA_TOKEN_FILE`) and the trust
//!   bundle from the namespace's ConfigMap [`CA_ROOT_CONFIGMAP`] (optional: the pod starts
//!   before it is published; `MESHMETER_CA_ROOT`);
//! - the init container [`CAPTURE_CONTAINER`]: `meshmeter capture` with only the `NET_ADMIN`
//!   and `NET_RAW` capabilities. Inbound ports are the TCP ports the containers declare unless
//!   Istio's `traffic.sidecar.istio.io/*` annotations say otherwise.
//!
//! Workloads with `sidecar.istio.io/inject: "false"` (annotation or label), host-network pods,
//! pods with Istio's sidecar and pods already injected are left alone, so injecting twice
//! changes nothing.
//!
//! ```
//! use meshmeter_inject::{inject_stream, InjectOptions, Outcome};
//!
//! let input = "\
//! apiVersion: v1
//! kind: Service # left byte for byte
//! metadata: {name: db}
//! ---
//! apiVersion: apps/v1
//! kind: Deployment
//! metadata: {name: db-v1}
//! spec:
//!   template:
//!     metadata: {labels: {app: db}}
//!     spec:
//!       containers:
//!       - {name: db, image: mongo, ports: [{containerPort: 27017}]}
//! ";
//! let out = inject_stream(input, &InjectOptions::default()).unwrap();
//! assert!(out.output.starts_with("apiVersion: v1\nkind: Service # left byte for byte\n"));
//! assert!(out.output.contains("- \"--inbound-ports=27017\""));
//! assert_eq!(out.documents[1].outcome, Outcome::Injected);
//! let again = inject_stream(&out.output, &InjectOptions::default()).unwrap();
//! assert_eq!(again.output, out.output);
//! ```

#![warn(missing_docs)]

mod error;
mod options;
mod patch;
mod pod;
mod stream;
mod tree;

pub use error::InjectError;
pub use options::{
    InjectOptions, DEFAULT_CA_ADDR, DEFAULT_CONTROL_PLANE, DEFAULT_IMAGE, DEFAULT_MIXER,
};
pub use patch::{diff, inject_json};
pub use pod::{
    Outcome, Skip, CAPTURE_CONTAINER, CA_ROOT_CONFIGMAP, CA_ROOT_KEY, CA_ROOT_PATH, CA_ROOT_VOLUME,
    CA_TOKEN_AUDIENCE, CA_TOKEN_EXPIRATION_SECONDS, CA_TOKEN_PATH, CA_TOKEN_VOLUME,
    EXCLUDE_INBOUND_PORTS, EXCLUDE_OUTBOUND_IP_RANGES, EXCLUDE_OUTBOUND_PORTS,
    INCLUDE_INBOUND_PORTS, INCLUDE_OUTBOUND_IP_RANGES, INJECT_ANNOTATION, PODINFO_PATH,
    PODINFO_VOLUME, SIDECAR_CONTAINER,
};
pub use stream::{inject_object, inject_stream, DocReport, Injected};

#[cfg(test)]
mod tests;
