//! `--control-plane`: who this sidecar is to the control plane (its [`Node`]), and the routing
//! the control plane's views drive.

use std::net::SocketAddr;
use std::sync::Arc;

use meshmeter_control::{ClientConfig, ClientStatus, ControlClient};
use meshmeter_proxy::{
    ConnectOutcome, ControlPlaneState, Decision, Forward, Identity, PeerAuthentication, PeerModes,
    PeerPolicy, RoutedDestination, Router, UpstreamTls,
};
use meshmeter_routing::view::{Inbound, Node, PeerMode, TlsMode, ViewUpdate};
use meshmeter_routing::{Decision as RouterDecision, ServiceInfo};
use tokio::sync::watch;

use super::mtls::UpstreamConfigs;
use super::{usage, Args, Failure};

/// What the control plane's views drive in the listeners: outbound ones ask the router,
/// inbound ones follow the peer policy.
pub(super) struct ListenerRouting {
    pub(super) router: Arc<dyn Router>,
    pub(super) policy: PeerPolicy,
}

/// The node this sidecar subscribes as: `<pod>.<namespace>`, labels, addresses and service
/// account from the flags (and the environment a Kubernetes sidecar gets).
pub(super) fn node(args: &Args) -> Result<Node, Failure> {
    let (Some(name), Some(namespace)) = (&args.name, &args.namespace) else {
        return Err(usage(
            "--control-plane needs the pod's --name and --namespace (POD_NAME, POD_NAMESPACE)",
        ));
    };
    let labels = match &args.labels {
        Some(text) => Identity::parse_labels(text)
            .map_err(|e| usage(format!("--labels: {e}")))?
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        None => Default::default(),
    };
    Ok(Node {
        id: format!("{name}.{namespace}"),
        namespace: namespace.clone(),
        labels,
        ips: args.pod_ips.iter().map(ToString::to_string).collect(),
        service_account: args.mtls.service_account.clone().unwrap_or_default(),
    })
}

/// The inbound listener's modes from a view's `Inbound`; an unknown mode refuses the update.
pub(super) fn peer_modes(inbound: &Inbound) -> Result<PeerModes, String> {
    let mode = |value: i32| match PeerMode::try_from(value) {
        Ok(PeerMode::Disable) => Ok(PeerAuthentication::Disable),
        Ok(PeerMode::Permissive) => Ok(PeerAuthentication::Permissive),
        Ok(PeerMode::Strict) => Ok(PeerAuthentication::Strict),
        Err(_) => Err(format!("unknown inbound peer authentication mode {value}")),
    };
    let mut modes = PeerModes::all(mode(inbound.default_mode)?);
    for p in &inbound.ports {
        let port = u16::try_from(p.port)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("inbound port {} is not a TCP port", p.port))?;
        modes.ports.insert(port, mode(p.mode)?);
    }
    Ok(modes)
}

/// The control plane's router as the proxy's [`Router`]: its decisions with the routed
/// identity for reports and the TLS each endpoint gets.
struct ViewRouter {
    router: Arc<meshmeter_routing::Router>,
    /// Client configurations for `ISTIO_MUTUAL` clusters; `None` without the --ca-* flags.
    tls: Option<Arc<UpstreamConfigs>>,
}

/// Holds the router's slot for the connection's life and tells it how connecting went.
struct PickedGuard(meshmeter_routing::Picked);

impl ConnectOutcome for PickedGuard {
    fn connected(&self) {
        self.0.connected();
    }
    fn connect_failed(&self) {
        self.0.connect_failed();
    }
}

fn service_only(service: &ServiceInfo) -> RoutedDestination {
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    RoutedDestination {
        service_host: text(&service.host),
        service_name: text(&service.name),
        service_namespace: text(&service.namespace),
        ..RoutedDestination::default()
    }
}

impl Router for ViewRouter {
    fn route(&self, original: SocketAddr) -> Decision {
        match self.router.route(original) {
            RouterDecision::Passthrough => Decision::Passthrough,
            RouterDecision::Overflow(refused) => {
                Decision::Overflow(Some(Arc::new(service_only(refused.service()))))
            }
            RouterDecision::NoEndpoint(refused) => {
                Decision::NoEndpoint(Some(Arc::new(service_only(refused.service()))))
            }
            RouterDecision::Forward(picked) => {
                let mut destination = service_only(picked.service());
                let (namespace, account) = match picked.endpoint() {
                    Some(e) => {
                        let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
                        destination.workload_name = text(&e.workload);
                        destination.workload_namespace = text(&e.namespace);
                        destination.labels = e
                            .labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        (e.namespace.as_str(), e.service_account.as_str())
                    }
                    None => ("", ""),
                };
                let tls = match picked.tls() {
                    TlsMode::Disable => UpstreamTls::Plain,
                    TlsMode::IstioMutual => match self
                        .tls
                        .as_ref()
                        .and_then(|t| t.for_endpoint(namespace, account))
                    {
                        Some(config) => UpstreamTls::Mutual(config),
                        None => UpstreamTls::MutualUnavailable,
                    },
                };
                Decision::Forward(Forward {
                    endpoint: picked.address(),
                    connect_timeout: picked.connect_timeout(),
                    tls,
                    destination: Arc::new(destination),
                    guard: Box::new(PickedGuard(picked)),
                })
            }
        }
    }
}

/// Routing under `--control-plane`: what the listeners consult, and the client that keeps it
/// up to date.
pub(super) struct ControlPlane {
    pub(super) listeners: ListenerRouting,
    client: ControlClient,
    router: Arc<meshmeter_routing::Router>,
    first_view: watch::Sender<bool>,
}

/// The control plane's client and what it drives, or `None` without `--control-plane`.
pub(super) fn control_plane(
    args: &Args,
    upstreams: Option<Arc<UpstreamConfigs>>,
) -> Result<Option<ControlPlane>, Failure> {
    let Some(addr) = args.control_plane.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let node = node(args)?;
    tracing::info!(control_plane = %addr, node = %node.id, "routing from the control plane");
    let client = ControlClient::new(ClientConfig::new(addr, node))
        .map_err(|e| usage(format!("--control-plane: {e}")))?;
    let router = Arc::new(meshmeter_routing::Router::new());
    let listeners = ListenerRouting {
        router: Arc::new(ViewRouter {
            router: Arc::clone(&router),
            tls: upstreams,
        }),
        policy: PeerPolicy::new(PeerModes::all(args.mtls.peer_authentication)),
    };
    Ok(Some(ControlPlane {
        listeners,
        client,
        router,
        first_view: watch::Sender::new(false),
    }))
}

impl ControlPlane {
    /// Follows the client's state (for `/metrics`).
    pub(super) fn status(&self) -> watch::Receiver<ClientStatus> {
        self.client.status()
    }

    /// Becomes true once the first view is applied.
    pub(super) fn first_view(&self) -> watch::Receiver<bool> {
        self.first_view.subscribe()
    }

    /// Follows the control plane until `stop` becomes true, applying each update to the
    /// router and the inbound policy (all of it or, refused, none of it).
    pub(super) async fn run(self, mut stop: watch::Receiver<bool>) {
        let ControlPlane {
            listeners,
            client,
            router,
            first_view,
        } = self;
        let policy = listeners.policy;
        let apply = move |update: &ViewUpdate| {
            let modes = update.inbound.as_ref().map(peer_modes).transpose()?;
            router.apply(update).map_err(|e| e.to_string())?;
            if let Some(modes) = modes {
                policy.set(modes);
            }
            first_view.send_replace(true);
            tracing::info!(
                version = update.version,
                full = update.full,
                services = update.services.len(),
                clusters = update.clusters.len(),
                "view update applied"
            );
            Ok(())
        };
        client
            .run(apply, async move {
                let _ = stop.wait_for(|&s| s).await;
            })
            .await;
    }
}

/// The control plane client's state for the proxy's `/metrics`.
pub(super) fn control_plane_state(status: &ClientStatus) -> ControlPlaneState {
    ControlPlaneState {
        connected: status.connected,
        view_version: status.version,
        updates_applied: status.applied,
        updates_refused: status.refused,
        connects: status.connects,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use meshmeter_routing::view::TlsMode;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(extra: &[&str]) -> Args {
        let mut argv = vec!["meshmeter", "--transparent", "--control-plane", "cp:15010"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn node_from_flags() {
        let args = parse(&[
            "--name",
            "ratings-v2-0",
            "--namespace",
            "default",
            "--labels",
            "version=v2,app=ratings",
            "--pod-ips",
            "10.0.0.7,fd00::7",
            "--service-account",
            "bookinfo-ratings",
        ]);
        let node = node(&args).ok().unwrap();
        assert_eq!(node.id, "ratings-v2-0.default");
        assert_eq!(node.namespace, "default");
        assert_eq!(
            node.labels.into_iter().collect::<Vec<_>>(),
            [
                ("app".to_owned(), "ratings".to_owned()),
                ("version".to_owned(), "v2".to_owned())
            ]
        );
        assert_eq!(node.ips, ["10.0.0.7", "fd00::7"]);
        assert_eq!(node.service_account, "bookinfo-ratings");
    }

    #[test]
    fn inbound_modes() {
        use meshmeter_routing::view::InboundPort;
        let inbound = Inbound {
            default_mode: PeerMode::Strict as i32,
            ports: vec![InboundPort {
                port: 9080,
                mode: PeerMode::Permissive as i32,
            }],
        };
        let modes = peer_modes(&inbound).unwrap();
        assert_eq!(modes.mode_for(27017), PeerAuthentication::Strict);
        assert_eq!(modes.mode_for(9080), PeerAuthentication::Permissive);
        let bad = Inbound {
            default_mode: 7,
            ports: vec![],
        };
        assert_eq!(
            peer_modes(&bad).unwrap_err(),
            "unknown inbound peer authentication mode 7"
        );
        let bad_port = Inbound {
            default_mode: 0,
            ports: vec![InboundPort {
                port: 70000,
                mode: 0,
            }],
        };
        assert_eq!(
            peer_modes(&bad_port).unwrap_err(),
            "inbound port 70000 is not a TCP port"
        );
    }

    fn view(tls: TlsMode) -> ViewUpdate {
        use meshmeter_routing::view::{Cluster, Endpoint, Service, ServicePort};
        let host = "reviews.default.svc.cluster.local";
        ViewUpdate {
            version: 1,
            full: true,
            services: vec![Service {
                host: host.into(),
                name: "reviews".into(),
                namespace: "default".into(),
                addresses: vec!["10.0.0.100".into()],
                ports: vec![ServicePort {
                    port: 9080,
                    name: "tcp".into(),
                }],
                routes: vec![],
            }],
            clusters: vec![Cluster {
                name: format!("outbound|9080||{host}"),
                host: host.into(),
                port: 9080,
                tls: tls as i32,
                endpoints: vec![Endpoint {
                    address: "10.0.0.7:9081".into(),
                    labels: [("version".to_owned(), "v2".to_owned())].into(),
                    workload: "reviews-v2".into(),
                    namespace: "default".into(),
                    service_account: "reviews".into(),
                }],
                ..Cluster::default()
            }],
            ..ViewUpdate::default()
        }
    }

    fn routed(tls: TlsMode, configs: Option<Arc<UpstreamConfigs>>) -> Decision {
        let router = Arc::new(meshmeter_routing::Router::from_view(&view(tls)).unwrap());
        let adapter = ViewRouter {
            router,
            tls: configs,
        };
        assert!(matches!(
            adapter.route("10.0.0.101:9080".parse().unwrap()),
            Decision::Passthrough
        ));
        adapter.route("10.0.0.100:9080".parse().unwrap())
    }

    #[test]
    fn view_decisions_become_the_listeners() {
        let Decision::Forward(f) = routed(TlsMode::Disable, None) else {
            panic!("forward expected")
        };
        assert_eq!(f.endpoint, "10.0.0.7:9081".parse().unwrap());
        assert!(matches!(f.tls, UpstreamTls::Plain));
        let d = &*f.destination;
        assert_eq!(
            d.service_host.as_deref(),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(d.service_name.as_deref(), Some("reviews"));
        assert_eq!(d.service_namespace.as_deref(), Some("default"));
        assert_eq!(d.workload_name.as_deref(), Some("reviews-v2"));
        assert_eq!(d.workload_namespace.as_deref(), Some("default"));
        assert_eq!(d.labels.get("version"), Some("v2"));
        // ISTIO_MUTUAL without a workload certificate: never plaintext.
        let Decision::Forward(f) = routed(TlsMode::IstioMutual, None) else {
            panic!("forward expected")
        };
        assert!(matches!(f.tls, UpstreamTls::MutualUnavailable));
        let configs = Arc::new(super::super::mtls::tests::configs());
        let Decision::Forward(f) = routed(TlsMode::IstioMutual, Some(Arc::clone(&configs))) else {
            panic!("forward expected")
        };
        assert!(matches!(f.tls, UpstreamTls::Mutual(_)));
        // Made for the endpoint's own identity.
        let expected = meshmeter_certs::SpiffeId::new("cluster.local", "default", "reviews").ok();
        assert!(configs.made_for(&expected));
    }

    #[test]
    fn control_plane_state_from_the_client() {
        let status = ClientStatus {
            connected: true,
            version: 42,
            applied: 3,
            refused: 1,
            connects: 2,
        };
        let state = control_plane_state(&status);
        assert_eq!(
            state,
            ControlPlaneState {
                connected: true,
                view_version: 42,
                updates_applied: 3,
                updates_refused: 1,
                connects: 2,
            }
        );
    }

    #[test]
    fn node_needs_the_pod() {
        let args = parse(&["--namespace", "default"]);
        match node(&args) {
            Err(Failure::Usage(u)) => assert!(u.0.contains("--name"), "{}", u.0),
            _ => panic!("a usage error expected"),
        }
    }
}
