//! The namespace, RBAC, and the telemetry server's Deployment and Service.

use std::fmt::Write as _;

use crate::InstallOptions;
use crate::CONTAINER_SECURITY;

/// Name of the telemetry server's ServiceAccount, ClusterRole(Binding), Deployment and Service.
pub const TELEMETRY: &str = "meshmeter-telemetry";
/// The telemetry server's report port (Mixer v1 gRPC).
pub const GRPC_PORT: u16 = 9091;
/// The telemetry server's `/metrics`, `/healthz` and `/ready` port.
pub const METRICS_PORT: u16 = 42422;
/// The uid and gid the meshmeter containers run as (non-root).
pub const RUN_AS: u32 = 65532;

/// Appends the namespace.
pub(crate) fn namespace(out: &mut String, o: &InstallOptions) {
    let ns = &o.namespace;
    let _ = write!(
        out,
        "---
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels:
    app.kubernetes.io/part-of: meshmeter
    # The control plane never gets a sidecar.
    meshmeter-injection: disabled
"
    );
}

/// Appends the telemetry server: ServiceAccount, ClusterRole + binding (read-only on what it
/// watches, plus Events on rejected configuration), Deployment and Service.
pub(crate) fn telemetry(out: &mut String, o: &InstallOptions) {
    let ns = &o.namespace;
    let image = crate::quoted(&o.image);
    let replicas = o.replicas;
    crate::account(
        out,
        TELEMETRY,
        ns,
        "# Telemetry configuration (instances, handlers, rules, ...): read only.
- apiGroups: [config.istio.io]
  resources: ['*']
  verbs: [get, list, watch]
# Workload identity: pods and their owners, services and their endpoints.
- apiGroups: ['']
  resources: [pods, services, namespaces]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [apps]
  resources: [replicasets, deployments, statefulsets, daemonsets]
  verbs: [get, list, watch]
- apiGroups: [batch]
  resources: [jobs, cronjobs]
  verbs: [get, list, watch]
# Warning events on configuration objects it rejects.
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
  name: {TELEMETRY}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: {TELEMETRY}
    app.kubernetes.io/part-of: meshmeter
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app.kubernetes.io/name: {TELEMETRY}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {TELEMETRY}
        app.kubernetes.io/part-of: meshmeter
      annotations:
        sidecar.istio.io/inject: \"false\"
    spec:
      serviceAccountName: {TELEMETRY}
      securityContext:
        runAsNonRoot: true
        runAsUser: {RUN_AS}
        runAsGroup: {RUN_AS}
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: telemetry
        image: {image}
        imagePullPolicy: IfNotPresent
        args:
        - mixer
        - --kubernetes
        - --no-default-config
        - --config-default-namespace={ns}
        - --grpc-addr=0.0.0.0:{GRPC_PORT}
        - --metrics-addr=0.0.0.0:{METRICS_PORT}
        ports:
        - name: grpc-mixer
          containerPort: {GRPC_PORT}
          protocol: TCP
        - name: http-metrics
          containerPort: {METRICS_PORT}
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
            cpu: 100m
            memory: 128Mi
          limits:
            memory: 1Gi
{CONTAINER_SECURITY}
      terminationGracePeriodSeconds: 30
---
apiVersion: v1
kind: Service
metadata:
  name: {TELEMETRY}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: {TELEMETRY}
    app.kubernetes.io/part-of: meshmeter
  annotations:
    # Prometheus' kubernetes-service-endpoints discovery scrapes every replica (each holds
    # its own counters; queries sum them).
    prometheus.io/scrape: \"true\"
    prometheus.io/port: \"{METRICS_PORT}\"
    prometheus.io/path: /metrics
spec:
  selector:
    app.kubernetes.io/name: {TELEMETRY}
  ports:
  - name: grpc-mixer
    port: {GRPC_PORT}
    targetPort: grpc-mixer
    protocol: TCP
  - name: http-metrics
    port: {METRICS_PORT}
    targetPort: http-metrics
    protocol: TCP
"
    );
}
