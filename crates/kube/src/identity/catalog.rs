//! The service catalog the control plane compiles views from, built from the same stores as
//! identity: Services (addresses and TCP ports), their EndpointSlices (ready addresses and
//! target ports), and the pods behind those addresses (labels, workload, service account).

use std::collections::BTreeMap;
use std::net::IpAddr;

use meshmeter_routing::catalog::{CatalogEndpoint, CatalogPort, CatalogService, ServiceCatalog};
use meshmeter_workloads::WorkloadRegistry;

use hashbrown::HashMap;

use super::{IdentityOptions, KubeRegistry, SliceEntry, Stores};

/// Every Service with at least one TCP port, sorted by host, its endpoints sorted by address
/// (so that an unchanged cluster gives an equal catalog). An endpoint address no pod holds
/// (an endpoint outside the cluster) has no labels and no workload.
pub(super) fn build(
    stores: &Stores,
    registry: &KubeRegistry,
    options: &IdentityOptions,
) -> ServiceCatalog {
    let mut slices_of: HashMap<(&str, &str), Vec<&SliceEntry>> = HashMap::new();
    for ((ns, _), slice) in &stores.slices {
        slices_of
            .entry((ns, &slice.service))
            .or_default()
            .push(slice);
    }
    let mut services: Vec<CatalogService> = Vec::with_capacity(stores.services.len());
    for ((ns, name), service) in &stores.services {
        if service.ports.is_empty() {
            continue;
        }
        let mut endpoints: BTreeMap<IpAddr, CatalogEndpoint> = BTreeMap::new();
        let slices = slices_of
            .get(&(&**ns, &**name))
            .map_or(&[][..], Vec::as_slice);
        for slice in slices {
            // A Service port reaches the slice's port of the same name (both unnamed for a
            // Service with one port).
            let ports: BTreeMap<u16, u16> = service
                .ports
                .iter()
                .filter_map(|(port_name, port)| {
                    slice
                        .ports
                        .iter()
                        .find(|(n, _)| n == port_name)
                        .map(|(_, target)| (*port, *target))
                })
                .collect();
            if ports.is_empty() {
                continue;
            }
            for &ip in &slice.ips {
                let endpoint = endpoints.entry(ip).or_insert_with(|| {
                    let w = registry.by_ip(ip);
                    CatalogEndpoint {
                        ip,
                        ports: BTreeMap::new(),
                        labels: w
                            .map(|w| {
                                w.labels
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), v.to_string()))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        workload: w.map(|w| w.name.clone()).unwrap_or_default(),
                        namespace: w.map_or_else(|| ns.to_string(), |w| w.namespace.clone()),
                        service_account: w
                            .and_then(|w| w.service_account.clone())
                            .unwrap_or_default(),
                    }
                });
                endpoint.ports.extend(ports.iter().map(|(p, t)| (*p, *t)));
            }
        }
        services.push(CatalogService {
            host: format!("{name}.{ns}.svc.{}", options.cluster_domain),
            name: name.to_string(),
            namespace: ns.to_string(),
            addresses: service.cluster_ips.to_vec(),
            ports: service
                .ports
                .iter()
                .map(|(n, p)| CatalogPort {
                    port: *p,
                    name: n.to_string(),
                })
                .collect(),
            endpoints: endpoints.into_values().collect(),
        });
    }
    services.sort_by(|a, b| a.host.cmp(&b.host));
    ServiceCatalog { services }
}
