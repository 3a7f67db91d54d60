//! The certificate authority: ServiceAccount, RBAC for TokenReview and the trust-bundle
//! ConfigMaps, Deployment and Service.

use std::fmt::Write as _;

use crate::CONTAINER_SECURITY;
use crate::{InstallOptions, RUN_AS};

/// Name of the CA's ServiceAccount, ClusterRole(Binding), Deployment and Service.
pub const CA: &str = "meshmeter-ca";
/// The CA's gRPC CSR port (`meshmeter ca --listen`).
pub const CA_PORT: u16 = 8060;
/// The CA's `/metrics`, `/healthz` and `/ready` port.
pub const CA_METRICS_PORT: u16 = 15014;
/// The audience the CA accepts callers' projected service-account tokens for
/// (`meshmeter ca --token-audience`; sidecars project theirs with it).
pub const CA_TOKEN_AUDIENCE: &str = meshmeter_inject::CA_TOKEN_AUDIENCE;
/// The Secret (type `kubernetes.io/tls`) holding the CA certificate (`tls.crt`: the CA
/// certificate, then its chain up to the root) and its PKCS#8 key (`tls.key`). The operator
/// creates it: the root must outlive the CA's pods, since every sidecar trusts it.
pub const CA_SECRET: &str = "meshmeter-ca";

/// Appends the CA: ServiceAccount, ClusterRole + binding (`create tokenreviews`; `list`,
/// `watch` namespaces and `get`, `create`, `update` configmaps for the trust bundle it
/// publishes in every namespace), Deployment and Service.
pub(crate) fn render(out: &mut String, o: &InstallOptions) {
    let ns = &o.namespace;
    let image = crate::quoted(&o.image);
    crate::account(
        out,
        CA,
        ns,
        "# Callers prove their service account with a projected token: the API server says whose.
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
# The trust bundle: the root certificate in a ConfigMap of every namespace, for sidecars.
- apiGroups: [\"\"]
  resources: [namespaces]
  verbs: [list, watch]
- apiGroups: [\"\"]
  resources: [configmaps]
  verbs: [get, create, update]",
    );
    let _ = write!(
        out,
        "---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {CA}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: {CA}
    app.kubernetes.io/part-of: meshmeter
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {CA}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {CA}
        app.kubernetes.io/part-of: meshmeter
      annotations:
        sidecar.istio.io/inject: \"false\"
    spec:
      serviceAccountName: {CA}
      securityContext:
        runAsNonRoot: true
        runAsUser: {RUN_AS}
        runAsGroup: {RUN_AS}
        # The Secret's files are group-readable by it (defaultMode 0440 below).
        fsGroup: {RUN_AS}
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: ca
        image: {image}
        imagePullPolicy: IfNotPresent
        args:
        - ca
        - --kubernetes
        - --token-audience={CA_TOKEN_AUDIENCE}
        - --ca-cert=/etc/meshmeter/ca/tls.crt
        - --ca-key=/etc/meshmeter/ca/tls.key
        - --listen=0.0.0.0:{CA_PORT}
        - --metrics-addr=0.0.0.0:{CA_METRICS_PORT}
        ports:
        - name: grpc-ca
          containerPort: {CA_PORT}
          protocol: TCP
        - name: http-metrics
          containerPort: {CA_METRICS_PORT}
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
            cpu: 10m
            memory: 32Mi
          limits:
            memory: 256Mi
{CONTAINER_SECURITY}
        volumeMounts:
        - name: ca
          mountPath: /etc/meshmeter/ca
          readOnly: true
      volumes:
      # Create it first (see the README's Mutual TLS section); the pod waits for it.
      - name: ca
        secret:
          secretName: {CA_SECRET}
          defaultMode: 0440
      terminationGracePeriodSeconds: 10
---
apiVersion: v1
kind: Service
metadata:
  name: {CA}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: {CA}
    app.kubernetes.io/part-of: meshmeter
  annotations:
    prometheus.io/scrape: \"true\"
    prometheus.io/port: \"{CA_METRICS_PORT}\"
    prometheus.io/path: /metrics
spec:
  selector:
    app.kubernetes.io/name: {CA}
  ports:
  - name: grpc-ca
    port: {CA_PORT}
    targetPort: grpc-ca
    protocol: TCP
  - name: http-metrics
    port: {CA_METRICS_PORT}
    targetPort: http-metrics
    protocol: TCP
"
    );
}
