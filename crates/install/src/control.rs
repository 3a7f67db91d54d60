//! The control plane (`meshmeter control --kubernetes`): ServiceAccount, read-only RBAC for
//! what views are compiled from, Deployment and Service.

use std::fmt::Write as _;

use crate::CONTAINER_SECURITY;
use crate::{InstallOptions, RUN_AS};

/// Name of the control plane's ServiceAccount, ClusterRole(Binding), Deployment and Service.
pub const CONTROL: &str = "meshmeter-control";
/// The port sidecars stream their views from (`meshmeter control --listen`).
pub const CONTROL_PORT: u16 = 15010;
/// The control plane's `/metrics`, `/healthz` and `/ready` port.
pub const CONTROL_ADMIN_PORT: u16 = 15014;

/// The traffic kinds the control plane reads: group, version, kind, plural, scope, category.
pub const TRAFFIC_KINDS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "networking.istio.io",
        "v1alpha3",
        "DestinationRule",
        "destinationrules",
        "Namespaced",
        "networking-istio-io",
    ),
    (
        "networking.istio.io",
        "v1alpha3",
        "VirtualService",
        "virtualservices",
        "Namespaced",
        "networking-istio-io",
    ),
    (
        "authentication.istio.io",
        "v1alpha1",
        "MeshPolicy",
        "meshpolicies",
        "Cluster",
        "authentication-istio-io",
    ),
    (
        "authentication.istio.io",
        "v1alpha1",
        "Policy",
        "policies",
        "Namespaced",
        "authentication-istio-io",
    ),
];

/// Appends the CRDs of [`TRAFFIC_KINDS`] (unknown fields kept: validation is the control
/// plane's, with diagnostics and Events).
pub(crate) fn render_crds(out: &mut String) {
    for (group, version, kind, plural, scope, category) in TRAFFIC_KINDS {
        let singular = kind.to_ascii_lowercase();
        let _ = write!(
            out,
            "---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}
  labels:
    app.kubernetes.io/part-of: meshmeter
spec:
  group: {group}
  names:
    kind: {kind}
    listKind: {kind}List
    plural: {plural}
    singular: {singular}
    categories:
    - istio-io
    - {category}
  scope: {scope}
  versions:
  - name: {version}
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"
        );
    }
}

/// Appends the control plane: ServiceAccount, ClusterRole + binding (get/list/watch of
/// Services, EndpointSlices, pods, ReplicaSets, Jobs and the networking and authentication
/// objects; create/patch of Events), Deployment and Service.
pub(crate) fn render(out: &mut String, o: &InstallOptions) {
    let ns = &o.namespace;
    let image = crate::quoted(&o.image);
    crate::account(
        out,
        CONTROL,
        ns,
        "# Services and their endpoints, and the pods' labels (subsets) and service accounts.
- apiGroups: [\"\"]
  resources: [services, pods]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
# Pods' owners name their workloads (ReplicaSet -> Deployment, Job -> CronJob).
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [get, list, watch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch]
# The traffic configuration compiled into every sidecar's view.
- apiGroups: [networking.istio.io]
  resources: [destinationrules, virtualservices]
  verbs: [get, list, watch]
- apiGroups: [authentication.istio.io]
  resources: [meshpolicies, policies]
  verbs: [get, list, watch]
# Warning events on traffic objects it rejects.
- apiGroups: ['', events.k8s.io]
  resources: [events]
  verbs: [create, patch]",
    );
    let _ = write!(
        out,
        "---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {CONTROL}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: {CONTROL}
    app.kubernetes.io/part-of: meshmeter
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {CONTROL}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {CONTROL}
        app.kubernetes.io/part-of: meshmeter
      annotations:
        sidecar.istio.io/inject: \"false\"
    spec:
      serviceAccountName: {CONTROL}
      securityContext:
        runAsNonRoot: true
        runAsUser: {RUN_AS}
        runAsGroup: {RUN_AS}
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: control
        image: {image}
        imagePullPolicy: IfNotPresent
        args:
        - control
        - --kubernetes
        - --listen=0.0.0.0:{CONTROL_PORT}
        - --admin=0.0.0.0:{CONTROL_ADMIN_PORT}
        ports:
        - name: grpc-control
          containerPort: {CONTROL_PORT}
          protocol: TCP
        - name: http-metrics
          containerPort: {CONTROL_ADMIN_PORT}
          protocol: TCP
        livenessProbe:
          httpGet:
            path: /healthz
            port: http-metrics
          periodSeconds: 10
          failureThreshold: 3
        readinessProbe:
          httpGet:
            path: /ready
            port: http-metrics
          periodSeconds: 2
          failureThreshold: 3
        resources:
          requests:
            cpu: 50m
            memory: 64Mi
          limits:
            memory: 512Mi
{CONTAINER_SECURITY}
      # Open streams are ended at SIGTERM; sidecars reconnect to the next replica.
      terminationGracePeriodSeconds: 10
---
apiVersion: v1
kind: Service
metadata:
  name: {CONTROL}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: {CONTROL}
    app.kubernetes.io/part-of: meshmeter
  annotations:
    prometheus.io/scrape: \"true\"
    prometheus.io/port: \"{CONTROL_ADMIN_PORT}\"
    prometheus.io/path: /metrics
spec:
  selector:
    app.kubernetes.io/name: {CONTROL}
  ports:
  - name: grpc-control
    port: {CONTROL_PORT}
    targetPort: grpc-control
    protocol: TCP
  - name: http-metrics
    port: {CONTROL_ADMIN_PORT}
    targetPort: http-metrics
    protocol: TCP
"
    );
}
