//! The sidecar injector: ServiceAccount, a ClusterRole limited to its own
//! MutatingWebhookConfiguration, Deployment, Service, and the MutatingWebhookConfiguration.

use std::fmt::Write as _;

use crate::ca::{CA, CA_PORT};
use crate::control::{CONTROL, CONTROL_PORT};
use crate::server::{GRPC_PORT, RUN_AS, TELEMETRY};
use crate::InstallOptions;
use crate::CONTAINER_SECURITY;

/// Name of the injector's ServiceAccount, ClusterRole(Binding), Deployment, Service and
/// MutatingWebhookConfiguration.
pub const INJECTOR: &str = "meshmeter-injector";
/// The port the injector serves HTTPS on (the Service exposes it as 443).
pub const INJECTOR_PORT: u16 = 9443;

/// Appends the injector's objects.
pub(crate) fn render(out: &mut String, o: &InstallOptions) {
    let ns = &o.namespace;
    let image = crate::quoted(&o.image);
    let labels = format!(
        "  labels:
    app.kubernetes.io/name: {INJECTOR}
    app.kubernetes.io/part-of: meshmeter"
    );
    // One webhook per namespace label: a selector's terms are all required, and a namespace
    // with both labels is served by the first only.
    let webhook = |name: &str, selector: &str| {
        format!(
            "- name: {name}
  admissionReviewVersions: [v1]
  sideEffects: None
  # A down injector must not stop pods from starting: they start without a sidecar.
  failurePolicy: Ignore
  timeoutSeconds: 5
  reinvocationPolicy: Never
  clientConfig:
    # caBundle is written by the injector itself (its CA is generated at start).
    service:
      name: {INJECTOR}
      namespace: {ns}
      path: /inject
      port: 443
  rules:
  - operations: [CREATE]
    apiGroups: ['']
    apiVersions: [v1]
    resources: [pods]
    scope: Namespaced
  namespaceSelector:
{selector}
  objectSelector:
    matchExpressions:
    - key: sidecar.istio.io/inject
      operator: NotIn
      values: ['false']
"
        )
    };
    let meshmeter_ns = webhook(
        "namespace.sidecar-injector.meshmeter.io",
        "    matchLabels:
      meshmeter-injection: enabled",
    );
    let istio_ns = webhook(
        "istio-namespace.sidecar-injector.meshmeter.io",
        "    matchExpressions:
    - key: istio-injection
      operator: In
      values: [enabled]
    - key: meshmeter-injection
      operator: NotIn
      values: [enabled]",
    );
    crate::account(
        out,
        INJECTOR,
        ns,
        &format!(
            "# Only its own webhook configuration, to keep its caBundle current.
- apiGroups: [admissionregistration.k8s.io]
  resources: [mutatingwebhookconfigurations]
  resourceNames: [{INJECTOR}]
  verbs: [get, update]"
        ),
    );
    let _ = write!(
        out,
        "---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {INJECTOR}
  namespace: {ns}
{labels}
spec:
  # Each replica publishes its own CA beside the others' (the bundle keeps four).
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {INJECTOR}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {INJECTOR}
        app.kubernetes.io/part-of: meshmeter
      annotations:
        sidecar.istio.io/inject: \"false\"
    spec:
      serviceAccountName: {INJECTOR}
      securityContext:
        runAsNonRoot: true
        runAsUser: {RUN_AS}
        runAsGroup: {RUN_AS}
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: injector
        image: {image}
        imagePullPolicy: IfNotPresent
        args:
        - injector
        - --listen=0.0.0.0:{INJECTOR_PORT}
        - --service={INJECTOR}
        - --webhook-config={INJECTOR}
        - {image_arg}
        - --mixer={TELEMETRY}.{ns}.svc:{GRPC_PORT}
        - {ca_arg}
        - {control_arg}
        env:
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        ports:
        - name: https-webhook
          containerPort: {INJECTOR_PORT}
          protocol: TCP
        livenessProbe:
          httpGet:
            path: /healthz
            port: https-webhook
            scheme: HTTPS
          periodSeconds: 10
        readinessProbe:
          httpGet:
            path: /ready
            port: https-webhook
            scheme: HTTPS
          periodSeconds: 2
        resources:
          requests:
            cpu: 50m
            memory: 64Mi
          limits:
            memory: 256Mi
{CONTAINER_SECURITY}
---
apiVersion: v1
kind: Service
metadata:
  name: {INJECTOR}
  namespace: {ns}
{labels}
spec:
  selector:
    app.kubernetes.io/name: {INJECTOR}
  ports:
  - name: https-webhook
    port: 443
    targetPort: https-webhook
    protocol: TCP
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {INJECTOR}
{labels}
webhooks:
{meshmeter_ns}{istio_ns}",
        image_arg = crate::quoted(&format!("--image={}", o.image)),
        // Without the CA the sidecars get no token, trust bundle or CA address at all.
        ca_arg = if o.skip_ca {
            "--ca-addr=".to_owned()
        } else {
            format!("--ca-addr={CA}.{ns}.svc:{CA_PORT}")
        },
        // Sidecars follow the control plane installed beside the injector, or none.
        control_arg = if o.skip_control {
            "--control-plane=".to_owned()
        } else {
            format!("--control-plane={CONTROL}.{ns}.svc:{CONTROL_PORT}")
        },
    );
}
