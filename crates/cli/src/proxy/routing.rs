//! `--control-plane`: who this sidecar is to the control plane (its [`Node`]), and the routing
//! the control plane's views drive.

use meshmeter_proxy::Identity;
use meshmeter_routing::view::Node;

use super::{usage, Args, Failure};

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
    fn node_needs_the_pod() {
        let args = parse(&["--namespace", "default"]);
        match node(&args) {
            Err(Failure::Usage(u)) => assert!(u.0.contains("--name"), "{}", u.0),
            _ => panic!("a usage error expected"),
        }
    }
}
