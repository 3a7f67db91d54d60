//! The transformation of one pod template: the decision (inject or skip, and why), the capture
//! parameters, and the containers and volume added.

use meshmeter_capture::Cidr;
use yaml_rust2::Yaml;

use crate::tree::{entry, get, int, map, path, s, seq, str_at, strs};
use crate::{InjectError, InjectOptions};

/// Name of the sidecar container added to every injected pod.
pub const SIDECAR_CONTAINER: &str = "meshmeter-proxy";
/// Name of the init container that installs the traffic capture.
pub const CAPTURE_CONTAINER: &str = "meshmeter-capture";
/// Name of the downward-API volume holding the pod's labels and annotations.
pub const PODINFO_VOLUME: &str = "meshmeter-podinfo";
/// Where the sidecar sees [`PODINFO_VOLUME`]: files `labels` and `annotations`.
pub const PODINFO_PATH: &str = "/etc/meshmeter/podinfo";
/// Audience of the projected token the sidecar shows the CA; `meshmeter ca --kubernetes`
/// requires it by default (`meshmeter_kube::DEFAULT_TOKEN_AUDIENCE`).
pub const CA_TOKEN_AUDIENCE: &str = "meshmeter-ca";
/// Lifetime asked for the projected CA token; the kubelet renews it at 80% of that, and the
/// sidecar reads the file again before every certificate renewal.
pub const CA_TOKEN_EXPIRATION_SECONDS: i64 = 3600;
/// Name of the projected service-account token volume for the CA.
pub const CA_TOKEN_VOLUME: &str = "meshmeter-ca-token";
/// Where the sidecar sees [`CA_TOKEN_VOLUME`] (file `token`).
pub const CA_TOKEN_PATH: &str = "/var/run/secrets/meshmeter/ca-token";
/// The ConfigMap holding the mesh's trust bundle in every namespace (published by
/// `meshmeter ca --kubernetes`).
pub const CA_ROOT_CONFIGMAP: &str = "meshmeter-ca-root";
/// The key of [`CA_ROOT_CONFIGMAP`] holding the root certificate(s), PEM.
pub const CA_ROOT_KEY: &str = "root-cert.pem";
/// Name of the volume of [`CA_ROOT_CONFIGMAP`].
pub const CA_ROOT_VOLUME: &str = "meshmeter-ca-root";
/// Where the sidecar sees [`CA_ROOT_VOLUME`] (file [`CA_ROOT_KEY`]).
pub const CA_ROOT_PATH: &str = "/etc/meshmeter/ca-root";
/// Annotation and label that opt a pod out of injection when `"false"` (Istio's name).
pub const INJECT_ANNOTATION: &str = "sidecar.istio.io/inject";
/// Annotation: inbound ports captured, `*` or a comma-separated list (Istio's name). Default:
/// the ports the pod's containers declare.
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
/// Annotation: inbound ports never captured, comma-separated (Istio's name).
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// Annotation: outbound destination ports never captured, comma-separated (Istio's name).
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
/// Annotation: outbound CIDRs never captured, comma-separated (Istio's name).
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
/// Annotation: only outbound traffic to these CIDRs is captured; `*` = all (Istio's name).
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";

/// Why a pod template was left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not a kind that holds a pod template (Service, ConfigMap, ...), or not a map at all.
    NotAWorkload,
    /// The template already has meshmeter's sidecar: injecting again changes nothing.
    AlreadyInjected,
    /// The template has Istio's sidecar (`istio-proxy` or `sidecar.istio.io/status`): two
    /// captures in one network namespace would fight.
    IstioSidecar,
    /// `sidecar.istio.io/inject` says no (the value found).
    OptedOut(String),
    /// `hostNetwork: true`: capture would rewrite the node's own iptables.
    HostNetwork,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NotAWorkload => f.write_str("not a workload"),
            Skip::AlreadyInjected => f.write_str("already injected"),
            Skip::IstioSidecar => f.write_str("has Istio's sidecar"),
            Skip::OptedOut(v) => write!(f, "{INJECT_ANNOTATION} is {v:?}"),
            Skip::HostNetwork => f.write_str("uses the host network"),
        }
    }
}

/// What injection did to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar and capture were added.
    Injected,
    /// Left unchanged, and why.
    Skipped(Skip),
}

/// The object being injected, for error messages and the workload identity.
pub(crate) struct Subject<'a> {
    pub(crate) kind: &'a str,
    pub(crate) name: &'a str,
}

/// Injects into one pod template (`metadata` + `spec` of a Pod or of a controller's template).
/// `outer_meta` is the controller's own metadata (also consulted for the opt-out), `workload`
/// the workload name the sidecar reports.
pub(crate) fn inject_template(
    template: &mut Yaml,
    outer_meta: Option<&Yaml>,
    subject: &Subject<'_>,
    workload: Option<&str>,
    opts: &InjectOptions,
) -> Result<Outcome, InjectError> {
    // Borrowed, not cloned: a pod from the API server carries managedFields, often the
    // largest part of its metadata.
    let null = Yaml::Null;
    let meta = get(template, "metadata").unwrap_or(&null);
    for m in [Some(meta), outer_meta].into_iter().flatten() {
        for place in ["annotations", "labels"] {
            if let Some(v) = path(m, &[place, INJECT_ANNOTATION]) {
                let text = scalar_text(v);
                if is_false(&text) {
                    return Ok(Outcome::Skipped(Skip::OptedOut(text)));
                }
            }
        }
    }
    let Some(spec) = get(template, "spec") else {
        return Err(shape(subject, "spec", "a map (the pod spec)"));
    };
    if !matches!(spec, Yaml::Hash(_)) {
        return Err(shape(subject, "spec", "a map (the pod spec)"));
    }
    if get(spec, "hostNetwork") == Some(&Yaml::Boolean(true)) {
        return Ok(Outcome::Skipped(Skip::HostNetwork));
    }
    let containers = list(spec, "containers", subject)?;
    let init_containers = list(spec, "initContainers", subject)?;
    let volumes = list(spec, "volumes", subject)?;
    let named = |items: &[Yaml], n: &str| items.iter().any(|c| str_at(c, "name") == Some(n));
    if named(containers, SIDECAR_CONTAINER)
        || named(init_containers, CAPTURE_CONTAINER)
        || named(volumes, PODINFO_VOLUME)
    {
        return Ok(Outcome::Skipped(Skip::AlreadyInjected));
    }
    if named(containers, "istio-proxy")
        || path(meta, &["annotations", "sidecar.istio.io/status"]).is_some()
    {
        return Ok(Outcome::Skipped(Skip::IstioSidecar));
    }

    let capture = capture_args(meta, containers, subject, opts)?;
    let labels: Vec<String> = match get(meta, "labels") {
        Some(Yaml::Hash(h)) => h
            .keys()
            .filter_map(|k| k.as_str())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    };
    let sidecar = sidecar_container(&labels, workload, opts);
    let init = capture_container(capture, opts);

    let spec = crate::tree::get_mut(template, "spec").expect("checked above");
    push(spec, "containers", sidecar);
    push(spec, "initContainers", init);
    push(spec, "volumes", podinfo_volume());
    if opts.ca_addr.is_some() {
        push(spec, "volumes", ca_token_volume());
        push(spec, "volumes", ca_root_volume());
    }
    Ok(Outcome::Injected)
}

fn push(spec: &mut Yaml, key: &str, item: Yaml) {
    if let Some(Yaml::Array(items)) = entry(spec, key, Yaml::Array(Vec::new())) {
        items.push(item);
    }
}

fn list<'a>(spec: &'a Yaml, key: &str, subject: &Subject<'_>) -> Result<&'a [Yaml], InjectError> {
    match get(spec, key) {
        None | Some(Yaml::Null) => Ok(&[]),
        Some(Yaml::Array(items)) => Ok(items),
        Some(_) => Err(shape(subject, key, "a list")),
    }
}

fn shape(subject: &Subject<'_>, field: &str, expected: &'static str) -> InjectError {
    InjectError::Shape {
        kind: subject.kind.to_string(),
        name: subject.name.to_string(),
        field: field.to_string(),
        expected,
    }
}

/// The text of a scalar as the API server would see it (`false` and `"false"` alike).
fn scalar_text(v: &Yaml) -> String {
    match v {
        Yaml::String(t) | Yaml::Real(t) => t.clone(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Integer(i) => i.to_string(),
        _ => String::new(),
    }
}

/// Istio's spellings of "no".
fn is_false(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "false" | "n" | "no" | "off" | "0"
    )
}

/// The `meshmeter capture` flags for this pod, from its declared ports and annotations.
fn capture_args(
    meta: &Yaml,
    containers: &[Yaml],
    subject: &Subject<'_>,
    opts: &InjectOptions,
) -> Result<Vec<String>, InjectError> {
    let annotation = |name: &str| path(meta, &["annotations", name]).map(scalar_text);
    let bad = |annotation: &str, value: &str, reason: String| InjectError::Annotation {
        kind: subject.kind.to_string(),
        name: subject.name.to_string(),
        annotation: annotation.to_string(),
        value: value.to_string(),
        reason,
    };
    let ports = |name: &str| -> Result<Option<Vec<u16>>, InjectError> {
        let Some(v) = annotation(name) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n != 0 => out.push(n),
                _ => return Err(bad(name, &v, format!("{p:?} is not a port (1-65535)"))),
            }
        }
        Ok(Some(out))
    };
    let cidrs = |name: &str| -> Result<Option<Vec<String>>, InjectError> {
        let Some(v) = annotation(name) else {
            return Ok(None);
        };
        if v.trim() == "*" {
            return Ok(None);
        }
        let mut out = Vec::new();
        for c in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let parsed: Cidr = c.parse().map_err(|e| bad(name, &v, format!("{e}")))?;
            out.push(parsed.to_string());
        }
        Ok(Some(out))
    };

    let inbound = match annotation(INCLUDE_INBOUND_PORTS) {
        Some(v) if v.trim() == "*" => "*".to_string(),
        Some(_) => join(&ports(INCLUDE_INBOUND_PORTS)?.unwrap_or_default()),
        None => join(&declared_ports(containers)),
    };
    let mut exclude_inbound = vec![opts.admin_port];
    for p in ports(EXCLUDE_INBOUND_PORTS)?.unwrap_or_default() {
        if !exclude_inbound.contains(&p) {
            exclude_inbound.push(p);
        }
    }
    let mut args = vec![
        "capture".to_string(),
        format!("--inbound-ports={inbound}"),
        format!("--exclude-inbound-ports={}", join(&exclude_inbound)),
    ];
    if let Some(p) = ports(EXCLUDE_OUTBOUND_PORTS)?.filter(|p| !p.is_empty()) {
        args.push(format!("--exclude-outbound-ports={}", join(&p)));
    }
    if let Some(c) = cidrs(EXCLUDE_OUTBOUND_IP_RANGES)?.filter(|c| !c.is_empty()) {
        args.push(format!("--exclude-outbound-cidrs={}", c.join(",")));
    }
    if let Some(c) = cidrs(INCLUDE_OUTBOUND_IP_RANGES)? {
        if c.is_empty() {
            // An empty include list means no outbound capture at all; the loopback block
            // says that to `meshmeter capture` (loopback is never captured anyway).
            args.push("--include-outbound-cidrs=127.0.0.1/32".to_string());
        } else {
            args.push(format!("--include-outbound-cidrs={}", c.join(",")));
        }
    }
    args.push(format!("--proxy-uid={}", opts.proxy_uid));
    args.push(format!("--inbound-proxy-port={}", opts.inbound_proxy_port));
    args.push(format!(
        "--outbound-proxy-port={}",
        opts.outbound_proxy_port
    ));
    Ok(args)
}

/// TCP ports the containers declare, in order, once each.
fn declared_ports(containers: &[Yaml]) -> Vec<u16> {
    let mut out = Vec::new();
    for c in containers {
        let Some(Yaml::Array(ports)) = get(c, "ports") else {
            continue;
        };
        for p in ports {
            let tcp = str_at(p, "protocol").is_none_or(|proto| proto == "TCP");
            let port = get(p, "containerPort").and_then(Yaml::as_i64);
            if let (true, Some(n)) = (tcp, port.and_then(|n| u16::try_from(n).ok())) {
                if n != 0 && !out.contains(&n) {
                    out.push(n);
                }
            }
        }
    }
    out
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn field_env(name: &str, field: &str) -> Yaml {
    map(vec![
        ("name", s(name)),
        (
            "valueFrom",
            map(vec![("fieldRef", map(vec![("fieldPath", s(field))]))]),
        ),
    ])
}

fn value_env(name: &str, value: &str) -> Yaml {
    map(vec![("name", s(name)), ("value", s(value))])
}

fn security(pairs: Vec<(&str, Yaml)>) -> Yaml {
    map(pairs)
}

/// The sidecar: `meshmeter proxy --transparent`, identity from the downward API.
fn sidecar_container(labels: &[String], workload: Option<&str>, opts: &InjectOptions) -> Yaml {
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("MESHMETER_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        // Comma-separated, both families on a dual-stack pod: the control plane matches the
        // pod's own endpoints (its inbound policy) by them.
        field_env("MESHMETER_POD_IPS", "status.podIPs"),
    ];
    // The proxy takes its labels as one `k=v,...` value; the kubelet builds it from one
    // downward-API variable per label key ($(VAR) expands variables defined earlier), so the
    // values are the pod's own at start, not the template's at injection time.
    let mut pairs = Vec::new();
    for (i, key) in labels.iter().enumerate() {
        let var = format!("MESHMETER_LABEL_{i}");
        env.push(field_env(&var, &format!("metadata.labels['{key}']")));
        pairs.push(format!("{key}=$({var})"));
    }
    if !pairs.is_empty() {
        env.push(value_env("MESHMETER_LABELS", &pairs.join(",")));
    }
    if let Some(w) = workload {
        env.push(value_env("MESHMETER_WORKLOAD", w));
    }
    env.push(value_env("MESHMETER_MIXER", &opts.mixer));
    if let Some(control) = &opts.control_plane {
        env.push(value_env("MESHMETER_CONTROL_PLANE", control));
    }
    if let Some(ca) = &opts.ca_addr {
        env.push(value_env("MESHMETER_CA_ADDR", ca));
        env.push(value_env(
            "MESHMETER_CA_TOKEN_FILE",
            &format!("{CA_TOKEN_PATH}/token"),
        ));
        env.push(value_env(
            "MESHMETER_CA_ROOT",
            &format!("{CA_ROOT_PATH}/{CA_ROOT_KEY}"),
        ));
    }
    env.push(value_env(
        "MESHMETER_METRICS_ADDR",
        &format!("0.0.0.0:{}", opts.admin_port),
    ));
    let admin = int(i64::from(opts.admin_port));
    let mount = |name: &str, at: &str| {
        map(vec![
            ("name", s(name)),
            ("mountPath", s(at)),
            ("readOnly", Yaml::Boolean(true)),
        ])
    };
    let mut mounts = vec![mount(PODINFO_VOLUME, PODINFO_PATH)];
    if opts.ca_addr.is_some() {
        mounts.push(mount(CA_TOKEN_VOLUME, CA_TOKEN_PATH));
        mounts.push(mount(CA_ROOT_VOLUME, CA_ROOT_PATH));
    }
    map(vec![
        ("name", s(SIDECAR_CONTAINER)),
        ("image", s(&opts.image)),
        ("imagePullPolicy", s(&opts.image_pull_policy)),
        ("args", strs(&["proxy", "--transparent"])),
        ("env", seq(env)),
        (
            "ports",
            seq(vec![map(vec![
                ("name", s("meshmeter-admin")),
                ("containerPort", admin.clone()),
                ("protocol", s("TCP")),
            ])]),
        ),
        (
            "readinessProbe",
            map(vec![
                ("httpGet", map(vec![("path", s("/ready")), ("port", admin)])),
                ("periodSeconds", int(2)),
                ("failureThreshold", int(30)),
            ]),
        ),
        (
            "resources",
            map(vec![
                (
                    "requests",
                    map(vec![("cpu", s("10m")), ("memory", s("32Mi"))]),
                ),
                ("limits", map(vec![("memory", s("256Mi"))])),
            ]),
        ),
        (
            "securityContext",
            security(vec![
                ("runAsUser", int(i64::from(opts.proxy_uid))),
                ("runAsGroup", int(i64::from(opts.proxy_uid))),
                ("runAsNonRoot", Yaml::Boolean(true)),
                ("allowPrivilegeEscalation", Yaml::Boolean(false)),
                ("readOnlyRootFilesystem", Yaml::Boolean(true)),
                ("capabilities", map(vec![("drop", strs(&["ALL"]))])),
            ]),
        ),
        ("volumeMounts", seq(mounts)),
    ])
}

/// The init container: `meshmeter capture` as root with NET_ADMIN and NET_RAW only.
fn capture_container(args: Vec<String>, opts: &InjectOptions) -> Yaml {
    map(vec![
        ("name", s(CAPTURE_CONTAINER)),
        ("image", s(&opts.image)),
        ("imagePullPolicy", s(&opts.image_pull_policy)),
        ("args", strs(&args)),
        (
            "resources",
            map(vec![
                (
                    "requests",
                    map(vec![("cpu", s("10m")), ("memory", s("16Mi"))]),
                ),
                (
                    "limits",
                    map(vec![("cpu", s("100m")), ("memory", s("64Mi"))]),
                ),
            ]),
        ),
        (
            "securityContext",
            // iptables needs root in the pod's network namespace, but nothing beyond the two
            // network capabilities; its lock file needs a writable /run.
            security(vec![
                ("runAsUser", int(0)),
                ("runAsNonRoot", Yaml::Boolean(false)),
                ("privileged", Yaml::Boolean(false)),
                ("allowPrivilegeEscalation", Yaml::Boolean(false)),
                (
                    "capabilities",
                    map(vec![
                        ("add", strs(&["NET_ADMIN", "NET_RAW"])),
                        ("drop", strs(&["ALL"])),
                    ]),
                ),
            ]),
        ),
    ])
}

fn podinfo_volume() -> Yaml {
    let item = |p: &str, f: &str| {
        map(vec![
            ("path", s(p)),
            ("fieldRef", map(vec![("fieldPath", s(f))])),
        ])
    };
    map(vec![
        ("name", s(PODINFO_VOLUME)),
        (
            "downwardAPI",
            map(vec![(
                "items",
                seq(vec![
                    item("labels", "metadata.labels"),
                    item("annotations", "metadata.annotations"),
                ]),
            )]),
        ),
    ])
}

/// The service-account token the CA checks: for its audience only, short-lived, renewed by
/// the kubelet (the pod's default token is never shown to the CA).
fn ca_token_volume() -> Yaml {
    map(vec![
        ("name", s(CA_TOKEN_VOLUME)),
        (
            "projected",
            map(vec![(
                "sources",
                seq(vec![map(vec![(
                    "serviceAccountToken",
                    map(vec![
                        ("audience", s(CA_TOKEN_AUDIENCE)),
                        ("expirationSeconds", int(CA_TOKEN_EXPIRATION_SECONDS)),
                        ("path", s("token")),
                    ]),
                )])]),
            )]),
        ),
    ])
}

/// The trust bundle; optional, so pods start in a namespace where the CA has not published it
/// yet (the kubelet fills the volume in once the ConfigMap exists).
fn ca_root_volume() -> Yaml {
    map(vec![
        ("name", s(CA_ROOT_VOLUME)),
        (
            "configMap",
            map(vec![
                ("name", s(CA_ROOT_CONFIGMAP)),
                (
                    "items",
                    seq(vec![map(vec![
                        ("key", s(CA_ROOT_KEY)),
                        ("path", s(CA_ROOT_KEY)),
                    ])]),
                ),
                ("optional", Yaml::Boolean(true)),
            ]),
        ),
    ])
}
