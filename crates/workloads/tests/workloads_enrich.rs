//! Workload identity: the file format's errors, enrichment, and reload on change.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshmeter_attributes::{Bag, Manifest, StringMap, Value};
use meshmeter_workloads::{
    parse, Enriched, Enricher, FileRegistry, Service, Workload, WorkloadError, WorkloadRegistry,
    WorkloadTable,
};

const SEED: &str = "\
workloads:
- name: ratings-v2
  namespace: default
  labels: {app: ratings, version: v2}
  ips: [127.0.0.2]
- name: mongodb-v1
  namespace: default
  labels: {app: mongodb, version: 1}
  ips: [127.0.0.3, '::1']
  services: [mongodb.default.svc.cluster.local]
  service_account: mongo
";

fn err(text: &str) -> String {
    parse(Path::new("w.yaml"), text).unwrap_err().to_string()
}

#[test]
fn file_errors_name_file_entry_and_field() {
    assert_eq!(
        err("workloads:\n- name: a\n  namespace: d\n  ips: [1.2.3]\n"),
        "w.yaml:4:9: workload 0 (a): field 'ips[0]' '1.2.3' is not an IP address"
    );
    assert_eq!(
        err("workloads:\n- name: a\n  namespace: d\n- namespace: d\n"),
        "w.yaml:4:3: workload 1: field 'name' is required"
    );
    assert_eq!(
        err("workloads:\n- name: a\n  namespace: d\n  lables: {}\n"),
        "w.yaml:4:3: workload 0 (a): field 'lables' is not a known field (expected name, namespace, \
         labels, ips, services, pod, uid, service_account, owner)"
    );
    assert_eq!(
        err("workloads:\n- name: a\n  namespace: d\n  ips: [10.0.0.1]\n- name: b\n  namespace: d\n  ips: ['::ffff:10.0.0.1']\n"),
        "w.yaml: IP ::ffff:10.0.0.1 is listed by both a.d and b.d"
    );
    assert_eq!(
        err("workloads:\n- name: a\n  namespace: d\n  labels: [x]\n"),
        "w.yaml:4:11: workload 0 (a): field 'labels' must be a map of names to strings"
    );
    // Nested fields point at their own value; a second workload at its own lines.
    assert_eq!(
        err("workloads:\n- name: a\n  namespace: d\n- name: b\n  namespace: d\n  labels:\n    app: [x]\n"),
        "w.yaml:7:10: workload 1 (b): field 'labels.app' must be a string"
    );
    assert_eq!(
        err("workloads:\n- name: a\n  namespace: d\n  services: [ok.svc, 7, x]\n"),
        "w.yaml:4:22: workload 0 (a): field 'services[1]' must be a string"
    );
    assert_eq!(
        err("# inventory\nworkloads:\n- {name: a, namespace: ''}\n"),
        "w.yaml:3:24: workload 0 (a): field 'namespace' must not be empty"
    );
    assert_eq!(
        err("workloads:\n- 3\n"),
        "w.yaml:2:3: workload 0: field 'name' is required"
    );
    assert_eq!(
        err("workloads: 3\n"),
        "w.yaml: expected a map with a 'workloads' list (and an optional 'services' list)"
    );
    assert_eq!(
        err("workloads: [\n"),
        "w.yaml:2:1: invalid YAML: while parsing a node, did not find expected node content"
    );
    assert_eq!(parse(Path::new("w.yaml"), "").unwrap().workloads().len(), 0);
}

fn bag_with<'a>(m: &Manifest, attrs: &[(&str, Value<'a>)]) -> Bag<'a> {
    let mut bag = Bag::new(m);
    for (name, v) in attrs {
        bag.set(m.id(name).unwrap(), v.clone());
    }
    bag
}

fn get(m: &Manifest, bag: &Bag<'_>, name: &str) -> Option<String> {
    bag.get(m.id(name).unwrap()).map(|v| v.to_string())
}

#[test]
fn enriches_both_sides_without_overwriting() {
    let table = parse(Path::new("w.yaml"), SEED).unwrap();
    let m = Manifest::istio();
    let enricher = Enricher::new(&m);
    let mut bag = bag_with(
        &m,
        &[
            (
                "source.ip",
                Value::IpAddress("::ffff:127.0.0.2".parse().unwrap()),
            ),
            (
                "destination.ip",
                Value::IpAddress("127.0.0.3".parse().unwrap()),
            ),
            ("destination.namespace", Value::from("kept")),
        ],
    );
    assert_eq!(
        enricher.enrich(&mut bag, &table),
        Enriched {
            source: true,
            destination: true,
            service: true
        }
    );
    let g = |n: &str| get(&m, &bag, n);
    assert_eq!(g("source.workload.name").as_deref(), Some("ratings-v2"));
    assert_eq!(g("source.workload.namespace").as_deref(), Some("default"));
    assert_eq!(g("source.namespace").as_deref(), Some("default"));
    assert_eq!(g("source.name").as_deref(), Some("ratings-v2"));
    assert_eq!(
        g("source.uid").as_deref(),
        Some("kubernetes://ratings-v2.default")
    );
    assert_eq!(
        g("source.workload.uid").as_deref(),
        Some("istio://default/workloads/ratings-v2")
    );
    assert_eq!(
        g("source.labels").as_deref(),
        Some("app=ratings&version=v2")
    );
    assert_eq!(g("source.serviceAccount"), None);
    assert_eq!(g("destination.namespace").as_deref(), Some("kept"));
    assert_eq!(
        g("destination.workload.name").as_deref(),
        Some("mongodb-v1")
    );
    assert_eq!(
        g("destination.labels").as_deref(),
        Some("app=mongodb&version=1")
    );
    assert_eq!(g("destination.serviceAccount").as_deref(), Some("mongo"));
    assert_eq!(
        g("destination.service.host").as_deref(),
        Some("mongodb.default.svc.cluster.local")
    );
    assert_eq!(g("destination.service.name").as_deref(), Some("mongodb"));
    assert_eq!(
        g("destination.service.namespace").as_deref(),
        Some("default")
    );
    assert_eq!(
        g("destination.service.uid").as_deref(),
        Some("istio://default/services/mongodb")
    );
    // Values borrow from the registry entry.
    let labels = bag.get(m.id("source.labels").unwrap()).unwrap();
    assert!(matches!(labels, Value::StringMap(Cow::Borrowed(_))));
}

/// A bag whose values borrow from `attrs`, so that it can also borrow from a registry that
/// lives shorter than `'static` (bags are invariant over their lifetime).
fn bag_borrowing<'a>(m: &Manifest, attrs: &'a [(&str, Value<'static>)]) -> Bag<'a> {
    let mut bag = Bag::new(m);
    for (name, v) in attrs {
        bag.set(m.id(name).unwrap(), v.borrowed());
    }
    bag
}

/// The file's table plus one service address (`10.96.0.9`) and, at mongodb's address, a second
/// service on port 9000: what a registry that knows ports (the Kubernetes one) answers.
struct WithServices {
    table: WorkloadTable,
    mongodb: Service,
    admin: Service,
    cluster: Service,
}

impl WorkloadRegistry for WithServices {
    fn by_ip(&self, ip: std::net::IpAddr) -> Option<&Workload> {
        self.table.by_ip(ip)
    }
    fn by_uid(&self, uid: &str) -> Option<&Workload> {
        self.table.by_uid(uid)
    }
    fn service_for(&self, ip: std::net::IpAddr, port: Option<u16>) -> Option<&Service> {
        match (ip.to_string().as_str(), port) {
            // Ratings serves reviews here, so that a uid naming another workload shows.
            ("10.96.0.9" | "127.0.0.2", _) => Some(&self.cluster),
            ("127.0.0.3", Some(9000)) => Some(&self.admin),
            ("127.0.0.3", _) => Some(&self.mongodb),
            _ => None,
        }
    }
}

#[test]
fn the_service_comes_from_the_destination_address_and_port() {
    let registry = WithServices {
        table: parse(Path::new("w.yaml"), SEED).unwrap(),
        mongodb: Service::from_host("mongodb.default.svc.cluster.local", "default"),
        admin: Service::from_host("mongo-admin.ops.svc.cluster.local", "default"),
        cluster: Service::from_host("reviews.shop.svc.cluster.local", "default"),
    };
    let m = Manifest::istio();
    let enricher = Enricher::new(&m);
    let dispatch = |attrs: &[(&str, Value<'static>)]| {
        let mut bag = bag_borrowing(&m, attrs);
        let done = enricher.enrich(&mut bag, &registry);
        let host = get(&m, &bag, "destination.service.host");
        (done, host, get(&m, &bag, "destination.workload.name"))
    };
    let ip = |s: &str| Value::IpAddress(s.parse().unwrap());
    let only_service = Enriched {
        source: false,
        destination: false,
        service: true,
    };
    let both = Enriched {
        destination: true,
        ..only_service
    };
    // A service's own address: its service, no workload.
    assert_eq!(
        dispatch(&[
            ("destination.ip", ip("10.96.0.9")),
            ("destination.port", Value::Int64(9080))
        ]),
        (
            only_service,
            Some("reviews.shop.svc.cluster.local".to_owned()),
            None
        )
    );
    // A workload's address: the service on that port, else the registry's default.
    for (port, host) in [
        (Some(9000), "mongo-admin.ops.svc.cluster.local"),
        (Some(27017), "mongodb.default.svc.cluster.local"),
        (None, "mongodb.default.svc.cluster.local"),
    ] {
        let mut attrs = vec![("destination.ip", ip("127.0.0.3"))];
        attrs.extend(port.map(|p| ("destination.port", Value::Int64(p))));
        assert_eq!(
            dispatch(&attrs),
            (both, Some(host.to_owned()), Some("mongodb-v1".to_owned())),
            "{port:?}"
        );
    }
    // Found by uid at its own address: the address and port decide.
    assert_eq!(
        dispatch(&[
            (
                "destination.uid",
                Value::from("kubernetes://mongodb-v1.default")
            ),
            ("destination.ip", ip("127.0.0.3")),
            ("destination.port", Value::Int64(9000)),
        ])
        .1
        .as_deref(),
        Some("mongo-admin.ops.svc.cluster.local")
    );
    // Found by uid, but the address is another workload's: the uid's own first service.
    assert_eq!(
        dispatch(&[
            (
                "destination.uid",
                Value::from("kubernetes://mongodb-v1.default")
            ),
            ("destination.ip", ip("127.0.0.2")),
            ("destination.port", Value::Int64(9000)),
        ]),
        (
            both,
            Some("mongodb.default.svc.cluster.local".to_owned()),
            Some("mongodb-v1".to_owned())
        )
    );
    // A port out of range is no port.
    assert_eq!(
        dispatch(&[
            ("destination.ip", ip("127.0.0.3")),
            ("destination.port", Value::Int64(9000 + 65536))
        ])
        .1
        .as_deref(),
        Some("mongodb.default.svc.cluster.local")
    );
    // Nothing reads destination.service.*: no lookup, nothing filled.
    let none = Enricher::new(&m).retain(|id| !m.name(id).starts_with("destination.service"));
    let attrs = [("destination.ip", ip("10.96.0.9"))];
    let mut bag = bag_borrowing(&m, &attrs);
    assert_eq!(none.enrich(&mut bag, &registry), Enriched::default());
    assert_eq!(bag.len(), 1);
}

#[test]
fn uid_wins_over_ip_and_unknown_leaves_bag_alone() {
    let table = parse(Path::new("w.yaml"), SEED).unwrap();
    let m = Manifest::istio();
    let enricher = Enricher::new(&m);
    let mut bag = bag_with(
        &m,
        &[
            ("source.uid", Value::from("kubernetes://mongodb-v1.default")),
            ("source.ip", Value::IpAddress("127.0.0.2".parse().unwrap())),
            (
                "destination.ip",
                Value::IpAddress("10.9.9.9".parse().unwrap()),
            ),
        ],
    );
    assert_eq!(
        enricher.enrich(&mut bag, &table),
        Enriched {
            source: true,
            destination: false,
            service: false
        }
    );
    assert_eq!(
        get(&m, &bag, "source.workload.name").as_deref(),
        Some("mongodb-v1")
    );
    assert_eq!(bag.len(), 3 + 7, "uid kept; seven attributes filled");
    assert!(table.by_ip("::1".parse().unwrap()).is_some());
    let expected: StringMap<'_> = [("app", "mongodb"), ("version", "1")].into_iter().collect();
    assert_eq!(
        table
            .by_uid("kubernetes://mongodb-v1.default")
            .unwrap()
            .labels,
        expected
    );
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshmeter-workloads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Writes a new version whose size differs, so the change is seen whatever the mtime
/// resolution.
fn rewrite(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Polls twice: a change is tried only once two consecutive polls see the same content.
fn poll_settled(registry: &FileRegistry) -> Result<bool, WorkloadError> {
    assert!(
        !registry.poll().unwrap(),
        "a change is not loaded by the first poll that sees it"
    );
    registry.poll()
}

#[test]
fn poll_reloads_changes_and_keeps_the_last_good_table() {
    let path = temp_path("poll.yaml");
    rewrite(&path, SEED);
    let registry = FileRegistry::open(&path).unwrap();
    assert!(!registry.poll().unwrap());
    rewrite(
        &path,
        "workloads:\n- {name: x, namespace: y, ips: [10.1.1.1]}\n",
    );
    assert!(poll_settled(&registry).unwrap());
    assert_eq!(registry.load().workloads()[0].name, "x");
    rewrite(&path, "workloads:\n- {name: x, ips: [10.1.1.1]}\n");
    assert_eq!(
        poll_settled(&registry).unwrap_err().to_string(),
        format!(
            "{}:2:3: workload 0 (x): field 'namespace' is required",
            path.display()
        )
    );
    assert!(!registry.poll().unwrap(), "a bad version is reported once");
    assert_eq!(registry.load().workloads()[0].name, "x");
    std::fs::remove_file(&path).unwrap();
    assert!(poll_settled(&registry)
        .unwrap_err()
        .to_string()
        .contains("cannot read"));
    assert!(!registry.poll().unwrap());
    rewrite(&path, SEED);
    assert!(poll_settled(&registry).unwrap());
    assert_eq!(registry.load().workloads().len(), 2);
    // A version caught once mid-write (truncated, then whole again) is never tried.
    rewrite(&path, "workloads:\n- {name: x");
    assert!(!registry.poll().unwrap());
    rewrite(&path, SEED);
    assert!(!registry.poll().unwrap());
    assert!(!registry.poll().unwrap());
    // Same size, same second: still a change (content, not mtime and length).
    let same_size = SEED.replacen("v1", "v9", 1);
    assert_eq!(same_size.len(), SEED.len());
    rewrite(&path, &same_size);
    assert!(poll_settled(&registry).unwrap());
    assert!(registry
        .load()
        .workloads()
        .iter()
        .any(|w| w.name == "mongodb-v9"));
}

#[test]
fn watch_thread_picks_up_changes() {
    let path = temp_path("watch.yaml");
    rewrite(&path, SEED);
    let registry = Arc::new(FileRegistry::open(&path).unwrap());
    let watch = registry
        .watch(Duration::from_millis(10), |e| panic!("unexpected: {e}"))
        .unwrap();
    rewrite(&path, "workloads: []\n");
    let mut reloaded = false;
    for _ in 0..500 {
        if registry.load().workloads().is_empty() {
            reloaded = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(watch);
    assert!(reloaded, "the watcher did not reload within 5 s");
}

/// A billion-laughs document: nine levels of nine aliases each.
fn billion_laughs() -> String {
    let mut s = String::from("a0: &a0 [lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    s.push_str("workloads: *a9\n");
    s
}

#[test]
fn aliases_are_refused_with_their_position() {
    assert_eq!(
        err(&billion_laughs()),
        "w.yaml:2:10: invalid YAML: YAML aliases are not supported; write the value out in full"
    );
}

#[test]
fn reloading_a_billion_laughs_file_keeps_the_last_good_table() {
    let path = temp_path("laughs.yaml");
    rewrite(&path, SEED);
    let registry = FileRegistry::open(&path).unwrap();
    rewrite(&path, &billion_laughs());
    let e = poll_settled(&registry).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:2:10: invalid YAML: YAML aliases are not supported; write the value out in full",
            path.display()
        )
    );
    assert_eq!(registry.load().workloads().len(), 2);
}

#[test]
fn an_emptied_file_is_suspect_and_keeps_the_last_good_table() {
    let path = temp_path("emptied.yaml");
    rewrite(&path, SEED);
    let registry = FileRegistry::open(&path).unwrap();
    rewrite(&path, "");
    assert_eq!(
        poll_settled(&registry).unwrap_err().to_string(),
        format!(
            "{}: holds no document (caught mid-write?); keeping the last good workloads",
            path.display()
        )
    );
    assert_eq!(registry.load().workloads().len(), 2);
    // Once whole again it reloads; an explicit empty list really empties the table.
    rewrite(&path, "workloads: []\n");
    assert!(poll_settled(&registry).unwrap());
    assert!(registry.load().workloads().is_empty());
}

#[test]
fn special_files_are_refused_without_blocking() {
    assert_eq!(
        FileRegistry::open("/dev/zero").unwrap_err().to_string(),
        "/dev/zero: cannot read: not a regular file (a device)"
    );
    // Replaced on reload by a link to /dev/zero: refused, the last good table stays.
    let path = temp_path("special.yaml");
    rewrite(&path, SEED);
    let registry = FileRegistry::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    assert_eq!(
        poll_settled(&registry).unwrap_err().to_string(),
        format!(
            "{}: cannot read: not a regular file (a device)",
            path.display()
        )
    );
    assert_eq!(registry.load().workloads().len(), 2);
    std::fs::remove_file(&path).unwrap();
}

const WITH_SERVICES: &str = "\
services:
- host: mongodb.default.svc.cluster.local
  addresses: [10.96.0.20]
  ports:
  - {port: 27017, name: tcp-mongo, targetPort: 27018}
  - {port: 28017}
workloads:
- name: ratings-v2
  namespace: default
  labels: {app: ratings, version: v2}
  ips: [127.0.0.2]
- name: mongodb-v1
  namespace: default
  labels: {app: mongodb, version: v1}
  ips: [127.0.0.3]
  services: [mongodb.default.svc.cluster.local]
  service_account: mongo
- name: mongodb-v2
  namespace: default
  labels: {app: mongodb, version: v2}
  ips: [127.0.0.4, 127.0.0.5]
  services: [mongodb.default.svc.cluster.local]
";

#[test]
fn declared_services_become_the_catalog() {
    use meshmeter_routing::catalog::{CatalogEndpoint, CatalogPort, CatalogService};
    use std::collections::BTreeMap;
    let table = parse(Path::new("w.yaml"), WITH_SERVICES).unwrap();
    let catalog = table.catalog();
    let ports = BTreeMap::from([(27017, 27018), (28017, 28017)]);
    let endpoint = |ip: &str, version: &str, workload: &str, sa: &str| CatalogEndpoint {
        ip: ip.parse().unwrap(),
        ports: ports.clone(),
        labels: BTreeMap::from([
            ("app".to_owned(), "mongodb".to_owned()),
            ("version".to_owned(), version.to_owned()),
        ]),
        workload: workload.into(),
        namespace: "default".into(),
        service_account: sa.into(),
    };
    assert_eq!(
        catalog.services,
        vec![CatalogService {
            host: "mongodb.default.svc.cluster.local".into(),
            name: "mongodb".into(),
            namespace: "default".into(),
            addresses: vec!["10.96.0.20".parse().unwrap()],
            ports: vec![
                CatalogPort {
                    port: 27017,
                    name: "tcp-mongo".into()
                },
                CatalogPort {
                    port: 28017,
                    name: String::new()
                },
            ],
            endpoints: vec![
                endpoint("127.0.0.3", "v1", "mongodb-v1", "mongo"),
                endpoint("127.0.0.4", "v2", "mongodb-v2", ""),
                endpoint("127.0.0.5", "v2", "mongodb-v2", ""),
            ],
        }]
    );
}

#[test]
fn a_service_address_resolves_to_its_service() {
    let table = parse(Path::new("w.yaml"), WITH_SERVICES).unwrap();
    let vip = table
        .service_for("10.96.0.20".parse().unwrap(), Some(27017))
        .unwrap();
    assert_eq!(vip.host, "mongodb.default.svc.cluster.local");
    assert_eq!(vip.uid, "istio://default/services/mongodb");
    // IPv4-mapped IPv6 is the same address; a VIP belongs to no workload.
    assert!(table
        .service_for("::ffff:10.96.0.20".parse().unwrap(), None)
        .is_some());
    assert!(table.by_ip("10.96.0.20".parse().unwrap()).is_none());
    // A workload's address on its target port.
    let direct = table
        .service_for("127.0.0.4".parse().unwrap(), Some(27018))
        .unwrap();
    assert_eq!(direct.host, "mongodb.default.svc.cluster.local");
    assert!(table
        .service_for("127.0.0.2".parse().unwrap(), Some(27018))
        .is_none());
}

#[test]
fn service_errors_name_file_entry_and_field() {
    assert_eq!(
        err("services:\n- host: a.b\n  ports: [{port: 0}]\n"),
        "w.yaml:3:18: service 0 (a.b): field 'ports[0].port' is not a port number (1-65535)"
    );
    assert_eq!(
        err("services:\n- host: a.b\n  ports:\n  - port: 80\n    targetport: 81\n"),
        "w.yaml:5:5: service 0 (a.b): field 'ports[0].targetport' is not a known field \
         (expected port, name, targetPort)"
    );
    assert_eq!(
        err("services:\n- host: a.b\n  ports: [{port: 80, targetPort: http}]\n"),
        "w.yaml:3:34: service 0 (a.b): field 'ports[0].targetPort' is not a port number (1-65535)"
    );
    assert_eq!(
        err("services:\n- host: a.b\n"),
        "w.yaml:2:3: service 0 (a.b): field 'ports' must list at least one port"
    );
    assert_eq!(
        err("services:\n- ports: [{port: 80}]\n"),
        "w.yaml:2:3: service 0: field 'host' is required"
    );
    assert_eq!(
        err("services:\n- host: a.b\n  adresses: []\n  ports: [{port: 80}]\n"),
        "w.yaml:3:3: service 0 (a.b): field 'adresses' is not a known field (expected host, addresses, ports)"
    );
    assert_eq!(
        err("services:\n- host: a.b\n  addresses: [10.0.0.256]\n  ports: [{port: 80}]\n"),
        "w.yaml:3:15: service 0 (a.b): field 'addresses[0]' '10.0.0.256' is not an IP address"
    );
    assert_eq!(
        err("services:\n- {host: a.b, ports: [{port: 80}]}\n- {host: a.b, ports: [{port: 81}]}\n"),
        "w.yaml: service a.b is declared twice"
    );
    assert_eq!(
        err("services:\n- {host: a.b, addresses: [10.0.0.1], ports: [{port: 80}]}\n- {host: c.d, addresses: [10.0.0.1], ports: [{port: 81}]}\n"),
        "w.yaml: service address 10.0.0.1 is given to both a.b and c.d"
    );
    assert_eq!(
        err("services:\n- {host: a.b, addresses: [10.0.0.1], ports: [{port: 80}]}\nworkloads:\n- {name: w, namespace: d, ips: [10.0.0.1]}\n"),
        "w.yaml: service address 10.0.0.1 of a.b is also an address of workload w.d"
    );
}

#[test]
fn traffic_to_a_service_address_is_labelled_with_that_service() {
    let table = parse(Path::new("w.yaml"), WITH_SERVICES).unwrap();
    let m = Manifest::istio();
    let enricher = Enricher::new(&m);
    let mut bag = bag_with(
        &m,
        &[
            ("source.ip", Value::IpAddress("127.0.0.2".parse().unwrap())),
            (
                "destination.ip",
                Value::IpAddress("10.96.0.20".parse().unwrap()),
            ),
            ("destination.port", Value::Int64(27017)),
        ],
    );
    assert_eq!(
        enricher.enrich(&mut bag, &table),
        Enriched {
            source: true,
            destination: false,
            service: true
        }
    );
    let g = |n: &str| get(&m, &bag, n);
    assert_eq!(
        g("destination.service.host").as_deref(),
        Some("mongodb.default.svc.cluster.local")
    );
    assert_eq!(g("destination.service.name").as_deref(), Some("mongodb"));
    assert_eq!(
        g("destination.service.namespace").as_deref(),
        Some("default")
    );
    assert_eq!(g("destination.workload.name"), None);
}
