//! Istio 1.1's traffic configuration as it applies to TCP: `DestinationRule` and
//! `VirtualService` (`networking.istio.io/v1alpha3`), and the peer-authentication part of
//! `MeshPolicy` and `Policy` (`authentication.istio.io/v1alpha1`).
//!
//! [`model`] holds the validated, typed objects; everything downstream (the routing compiler,
//! the control plane) reads only these types, never YAML.
//!
//! The objects come from YAML files (the same directories as the telemetry configuration:
//! each reader skips the other's kinds) and from the Kubernetes API server (rendered as
//! [`meshmeter_config::Input::Kubernetes`] by `meshmeter-kube`'s `TrafficSource`). They are
//! read with the telemetry configuration's YAML machinery ([`meshmeter_config::syntax`]), so
//! problems are reported the same way: `file:line:column: error[CODE]: message`, the line,
//! a caret and a hint; every message names the field by its path and the object by kind,
//! namespace and name:
//!
//! ```
//! let yaml = "apiVersion: networking.istio.io/v1alpha3
//! kind: DestinationRule
//! metadata:
//!   name: ratings
//! spec:
//!   host: ratings
//!   trafficPolicy:
//!     loadBalancer:
//!       simple: ROUND_ROBN
//! ";
//! let (config, diagnostics) = meshmeter_netconfig::load_str(&[("ratings.yaml", yaml)]);
//! assert!(config.destination_rules.is_empty()); // rejected
//! assert_eq!(diagnostics[0].to_string(), "ratings.yaml:9:15: error[C0013]: spec.trafficPolicy.loadBalancer.simple of DestinationRule default/ratings 'ROUND_ROBN' is not one of ROUND_ROBIN, LEAST_CONN, RANDOM, PASSTHROUGH
//!       simple: ROUND_ROBN
//!               ^^^^^^^^^^
//!   = hint: did you mean 'ROUND_ROBIN'?");
//! ```
//!
//! Objects are accepted one by one ([`Loader`]): an object with an error is rejected alone,
//! the others load, and a running [`NetWatcher`] keeps the previous version of a rejected
//! object in force.
//!
//! # What is read
//!
//! Fields may be written in camelCase or snake_case (Istio read them through the protobuf
//! JSON mapping). Unknown fields are errors with a "did you mean" hint.
//!
//! - `DestinationRule`: `host`; `trafficPolicy` (also per subset) with
//!   `loadBalancer.simple` (`ROUND_ROBIN`, `LEAST_CONN`, `RANDOM`, `PASSTHROUGH`),
//!   `connectionPool.tcp.maxConnections` and `.connectTimeout`, `outlierDetection`
//!   (`consecutiveErrors` >= 1, `interval`, `baseEjectionTime`, `maxEjectionPercent` <= 100),
//!   `tls.mode` (`DISABLE`, `SIMPLE`, `MUTUAL`, `ISTIO_MUTUAL`); `subsets` (`name`, unique;
//!   `labels`, a map of text). Accepted, checked and not applied (warning N0501):
//!   `loadBalancer.consistentHash`, `connectionPool.tcp.tcpKeepalive`,
//!   `outlierDetection.minHealthPercent`, `portLevelSettings`. `connectionPool.http`,
//!   `tls` certificates and `exportTo` are checked and ignored.
//! - `VirtualService`: `hosts` (at least one), `gateways`, `tcp` routes: `match` (`port`
//!   1..65535, `sourceLabels`, `destinationSubnets` as addresses or CIDR blocks, `gateways`;
//!   `sourceSubnet` is checked and not applied) and `route` (`destination` `host`, `subset`,
//!   `port.number`; `weight` 0..100, summing to 100 when there are several destinations; a
//!   lone destination gets 100). `http` and `tls` routes are counted and ignored with one
//!   informational line per object (N0901).
//! - `MeshPolicy` (named `default`, no targets) and `Policy` (named `default` without
//!   targets, another name with them): `targets` (`name`, `ports[].number`) and `peers`:
//!   `- mtls: {}` (or `mtls:` alone) is STRICT, `- mtls: {mode: PERMISSIVE}` PERMISSIVE, no
//!   `peers` no mutual TLS. `origins`, `peerIsOptional`, `originIsOptional`,
//!   `principalBinding` are checked; JWT peers are refused.
//!
//! Durations are Go durations (`1s`, `500ms`, `1m`, `1h`, `1.5s`), positive.
//!
//! # Diagnostic codes
//! | code | meaning |
//! |---|---|
//! | C0001, C0002, C0003 | YAML syntax error, duplicate key, unsupported YAML (as in the telemetry configuration) |
//! | C0004 | a file cannot be read |
//! | C0010 | required field missing or empty |
//! | C0011 | unknown field (with a suggestion) |
//! | C0012 | wrong kind of value (a list where text is needed, ...) |
//! | C0013 | value not among an enumeration's names |
//! | C0014 | bad document header (no apiVersion, misspelt kind) |
//! | C0016 | not a number |
//! | C0020 | object defined twice (the first definition stays) |
//! | C0057 | invalid duration |
//! | W0003 | unexpected apiVersion (read anyway) |
//! | N0001 | port outside 1..65535 |
//! | N0002 | subset name used twice |
//! | N0003 | weight outside 0..100 |
//! | N0004 | weights of several destinations not summing to 100 |
//! | N0005 | not an IP address or CIDR block |
//! | N0006 | percentage above 100 |
//! | N0007 | `consecutiveErrors` of 0 |
//! | N0008 | invalid host name |
//! | N0009 | authentication policy name or targets against Istio's rules |
//! | N0010 | not supported (ports by name, JWT peers) |
//! | N0011 | invalid label name |
//! | N0501 | accepted and not applied (warning) |
//! | N0502 | a route names a subset no DestinationRule of its host defines (warning; short hosts are resolved as the routing compiler does, `NAME` in the object's namespace and `NAME.NAMESPACE` as `NAME.NAMESPACE.svc.cluster.local`) |
//! | N0901 | `http`/`tls` routes ignored (information) |

#![warn(missing_docs)]

mod codes;
mod load;
pub mod model;
mod parse;
mod watch;

pub use load::{load_dir, load_paths, load_str, Loaded, Loader};
pub use model::*;
pub use watch::NetWatcher;
