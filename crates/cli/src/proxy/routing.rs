//! `--control-plane`: who this sidecar is to the control plane (its [`Node`]), and the routing
//! the control plane's views drive.

use std::sync::Arc;

use meshmeter_proxy::{Identity, PeerAuthentication, PeerModes, PeerPolicy, Router};
use meshmeter_routing::view::{Inbound, Node, PeerMode};

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

#[cfg(test)]
mod tests {
    use clap::Parser;

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

    #[test]
    fn node_needs_the_pod() {
        let args = parse(&["--namespace", "default"]);
        match node(&args) {
            Err(Failure::Usage(u)) => assert!(u.0.contains("--name"), "{}", u.0),
            _ => panic!("a usage error expected"),
        }
    }
}
