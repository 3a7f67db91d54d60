//! Identity from `source.principal` when the address does not tell: unknown, shared, or
//! contradicted by the principal; one workload, replicas of one, or unrelated workloads
//! running as the account.

use std::net::IpAddr;
use std::path::Path;

use meshmeter_attributes::{Bag, Manifest, Value};
use meshmeter_workloads::{
    parse, principal_account, Account, Enriched, Enricher, Service, Workload, WorkloadRegistry,
    WorkloadTable,
};

/// `ratings` runs alone as its account; `reviews` v1 and v2 (two workloads, v2 with two
/// replicas) share `bookinfo-reviews`; `details` has no account.
const FILE: &str = "\
workloads:
- name: ratings-v2
  namespace: default
  labels: {app: ratings, version: v2}
  ips: [10.0.0.2]
  service_account: bookinfo-ratings
- name: reviews-v1
  namespace: default
  labels: {app: reviews, version: v1, tier: backend}
  ips: [10.0.0.5]
  service_account: bookinfo-reviews
  owner: kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1
- name: reviews-v2
  namespace: default
  pod: reviews-v2-aaaaa
  labels: {app: reviews, version: v2, tier: backend}
  ips: [10.0.0.6]
  service_account: bookinfo-reviews
  owner: kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v2
- name: reviews-v2
  namespace: default
  pod: reviews-v2-bbbbb
  labels: {app: reviews, version: v2}
  ips: [10.0.0.7]
  service_account: bookinfo-reviews-v2
  owner: kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v2
- name: reviews-v2
  namespace: default
  pod: reviews-v2-ccccc
  labels: {app: reviews, version: v2, canary: 'yes'}
  ips: [10.0.0.8]
  service_account: bookinfo-reviews-v2
  owner: kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v2
- name: details-v1
  namespace: default
  ips: [10.0.0.9]
";

fn table() -> WorkloadTable {
    parse(Path::new("w.yaml"), FILE).unwrap()
}

fn ip(s: &str) -> Value<'static> {
    Value::IpAddress(s.parse().unwrap())
}

/// Enriches a bag of `attrs` from `registry`; what was found and every attribute of the
/// bag afterwards, sorted, as `name=value`.
fn enrich<R: WorkloadRegistry>(
    registry: &R,
    attrs: &[(&str, Value<'static>)],
) -> (Enriched, Vec<String>) {
    let m = Manifest::istio();
    let mut bag = Bag::new(&m);
    for (name, v) in attrs {
        bag.set(m.id(name).unwrap(), v.borrowed());
    }
    let done = Enricher::new(&m).enrich(&mut bag, registry);
    let mut all: Vec<String> = bag
        .iter()
        .map(|(id, v)| format!("{}={v}", m.name(id)))
        .collect();
    all.sort();
    (done, all)
}

const SOURCE: Enriched = Enriched {
    source: true,
    destination: false,
    service: false,
};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn principals_parse_in_both_forms_and_nothing_else() {
    assert_eq!(
        principal_account("cluster.local/ns/default/sa/ratings"),
        Some(("default", "ratings"))
    );
    assert_eq!(
        principal_account("spiffe://cluster.local/ns/default/sa/ratings"),
        Some(("default", "ratings"))
    );
    for bad in [
        "",
        "cluster.local",
        "cluster.local/ns/default",
        "cluster.local/ns/default/sa/",
        "cluster.local/ns//sa/ratings",
        "/ns/default/sa/ratings",
        "cluster.local/sa/default/ns/ratings",
        "cluster.local/ns/default/sa/ratings/extra",
        "spiffe://",
        "kubernetes://ratings.default",
    ] {
        assert_eq!(principal_account(bad), None, "{bad}");
    }
}

#[test]
fn an_unknown_address_is_identified_by_its_one_workload_principal() {
    let table = table();
    for principal in [
        "cluster.local/ns/default/sa/bookinfo-ratings",
        "spiffe://cluster.local/ns/default/sa/bookinfo-ratings",
    ] {
        let (done, bag) = enrich(
            &table,
            &[
                ("source.ip", ip("192.168.1.10")),
                ("source.principal", Value::from(principal)),
            ],
        );
        assert_eq!(done, SOURCE);
        assert_eq!(
            bag,
            strings(&[
                "source.ip=192.168.1.10",
                "source.labels=app=ratings&version=v2",
                "source.name=ratings-v2",
                "source.namespace=default",
                &format!("source.principal={principal}"),
                "source.serviceAccount=bookinfo-ratings",
                "source.uid=kubernetes://ratings-v2.default",
                "source.workload.name=ratings-v2",
                "source.workload.namespace=default",
                "source.workload.uid=istio://default/workloads/ratings-v2",
            ])
        );
    }
}

#[test]
fn what_the_bag_has_is_never_replaced() {
    let (done, bag) = enrich(
        &table(),
        &[
            (
                "source.principal",
                Value::from("cluster.local/ns/default/sa/bookinfo-ratings"),
            ),
            ("source.namespace", Value::from("kept")),
            ("source.workload.name", Value::from("kept-too")),
        ],
    );
    assert_eq!(done, SOURCE);
    assert_eq!(
        bag,
        strings(&[
            "source.labels=app=ratings&version=v2",
            "source.name=ratings-v2",
            "source.namespace=kept",
            "source.principal=cluster.local/ns/default/sa/bookinfo-ratings",
            "source.serviceAccount=bookinfo-ratings",
            "source.uid=kubernetes://ratings-v2.default",
            "source.workload.name=kept-too",
            "source.workload.namespace=default",
            "source.workload.uid=istio://default/workloads/ratings-v2",
        ])
    );
}

#[test]
fn several_workloads_fill_only_what_they_share() {
    let table = table();
    // Two workloads (reviews-v1 and a reviews-v2 replica): namespace, account and the labels
    // both carry; no workload name, uid or owner.
    let (done, bag) = enrich(
        &table,
        &[
            ("source.ip", ip("192.168.1.10")),
            (
                "source.principal",
                Value::from("cluster.local/ns/default/sa/bookinfo-reviews"),
            ),
        ],
    );
    assert_eq!(done, SOURCE);
    assert_eq!(
        bag,
        strings(&[
            "source.ip=192.168.1.10",
            "source.labels=app=reviews&tier=backend",
            "source.namespace=default",
            "source.principal=cluster.local/ns/default/sa/bookinfo-reviews",
            "source.serviceAccount=bookinfo-reviews",
            "source.workload.namespace=default",
        ])
    );
    // Two replicas of one workload: its name, uid and owner too, but no pod's name or uid.
    let (done, bag) = enrich(
        &table,
        &[(
            "source.principal",
            Value::from("cluster.local/ns/default/sa/bookinfo-reviews-v2"),
        )],
    );
    assert_eq!(done, SOURCE);
    assert_eq!(
        bag,
        strings(&[
            "source.labels=app=reviews&version=v2",
            "source.namespace=default",
            "source.owner=kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v2",
            "source.principal=cluster.local/ns/default/sa/bookinfo-reviews-v2",
            "source.serviceAccount=bookinfo-reviews-v2",
            "source.workload.name=reviews-v2",
            "source.workload.namespace=default",
            "source.workload.uid=istio://default/workloads/reviews-v2",
        ])
    );
    match table.by_service_account("default", "bookinfo-reviews-v2") {
        Some(Account::Several(group)) => assert_eq!(group.workloads, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_address_decides_unless_the_principal_contradicts_it() {
    let table = table();
    // reviews-v1's address with its own principal: the address's workload, pod and all.
    let (_, bag) = enrich(
        &table,
        &[
            ("source.ip", ip("10.0.0.5")),
            (
                "source.principal",
                Value::from("cluster.local/ns/default/sa/bookinfo-reviews"),
            ),
        ],
    );
    assert!(
        bag.contains(&"source.uid=kubernetes://reviews-v1.default".to_owned()),
        "{bag:?}"
    );
    // An address without an account in the file (details-v1) agrees with any principal of
    // its namespace; one the registry does not know keeps the address's workload.
    let (_, bag) = enrich(
        &table,
        &[
            ("source.ip", ip("10.0.0.9")),
            (
                "source.principal",
                Value::from("cluster.local/ns/default/sa/unknown"),
            ),
        ],
    );
    assert!(
        bag.contains(&"source.workload.name=details-v1".to_owned()),
        "{bag:?}"
    );
    // ratings' address (NAT, a reused address) but reviews-v2's principal: the principal.
    let (_, bag) = enrich(
        &table,
        &[
            ("source.ip", ip("10.0.0.2")),
            (
                "source.principal",
                Value::from("cluster.local/ns/default/sa/bookinfo-reviews-v2"),
            ),
        ],
    );
    assert!(
        bag.contains(&"source.workload.name=reviews-v2".to_owned()),
        "{bag:?}"
    );
    assert!(!bag.iter().any(|a| a.starts_with("source.uid=")), "{bag:?}");
    // Contradicted, and the principal names nobody known: nothing at all.
    let (done, bag) = enrich(
        &table,
        &[
            ("source.ip", ip("10.0.0.2")),
            (
                "source.principal",
                Value::from("cluster.local/ns/other/sa/bookinfo-ratings"),
            ),
        ],
    );
    assert_eq!(done, Enriched::default());
    assert_eq!(bag.len(), 2);
    // A uid wins over both.
    let (_, bag) = enrich(
        &table,
        &[
            ("source.uid", Value::from("kubernetes://details-v1.default")),
            ("source.ip", ip("10.0.0.2")),
            (
                "source.principal",
                Value::from("cluster.local/ns/default/sa/bookinfo-ratings"),
            ),
        ],
    );
    assert!(
        bag.contains(&"source.workload.name=details-v1".to_owned()),
        "{bag:?}"
    );
    // An unknown address and an unparsable principal: nothing.
    let (done, _) = enrich(
        &table,
        &[
            ("source.ip", ip("192.168.1.10")),
            ("source.principal", Value::from("bookinfo-ratings")),
        ],
    );
    assert_eq!(done, Enriched::default());
}

/// The file's table where two addresses are shared (a node's, host network).
struct Shared(WorkloadTable);

impl WorkloadRegistry for Shared {
    fn by_ip(&self, ip: IpAddr) -> Option<&Workload> {
        self.0.by_ip(ip)
    }
    fn by_uid(&self, uid: &str) -> Option<&Workload> {
        self.0.by_uid(uid)
    }
    fn service_for(&self, ip: IpAddr, port: Option<u16>) -> Option<&Service> {
        self.0.service_for(ip, port)
    }
    fn ip_shared(&self, ip: IpAddr) -> bool {
        ["10.0.0.5", "10.0.0.9"].contains(&ip.to_string().as_str())
    }
    fn by_service_account(&self, ns: &str, sa: &str) -> Option<Account<'_>> {
        self.0.by_service_account(ns, sa)
    }
}

#[test]
fn a_shared_address_defers_to_the_principal_and_is_the_fallback() {
    let shared = Shared(table());
    // The address's likeliest workload agrees, but the address is shared: the principal's
    // group (two workloads) rather than a guess at one pod.
    let (_, bag) = enrich(
        &shared,
        &[
            ("source.ip", ip("10.0.0.5")),
            (
                "source.principal",
                Value::from("cluster.local/ns/default/sa/bookinfo-reviews"),
            ),
        ],
    );
    assert!(
        !bag.iter().any(|a| a.starts_with("source.workload.name=")),
        "{bag:?}"
    );
    assert!(
        bag.contains(&"source.labels=app=reviews&tier=backend".to_owned()),
        "{bag:?}"
    );
    // The principal names nobody known and does not contradict (details-v1 has no account
    // in the file): the likeliest workload.
    let (_, bag) = enrich(
        &shared,
        &[
            ("source.ip", ip("10.0.0.9")),
            (
                "source.principal",
                Value::from("cluster.local/ns/default/sa/unknown"),
            ),
        ],
    );
    assert!(
        bag.contains(&"source.workload.name=details-v1".to_owned()),
        "{bag:?}"
    );
    // It contradicts (reviews-v1 runs as bookinfo-reviews) and names nobody: nothing.
    let (done, bag) = enrich(
        &shared,
        &[
            ("source.ip", ip("10.0.0.5")),
            (
                "source.principal",
                Value::from("cluster.local/ns/default/sa/bookinfo-reviews-old"),
            ),
        ],
    );
    assert_eq!(done, Enriched::default());
    assert_eq!(bag.len(), 2, "{bag:?}");
    // Without a principal the shared address still answers as before.
    let (done, bag) = enrich(&shared, &[("source.ip", ip("10.0.0.5"))]);
    assert_eq!(done, SOURCE);
    assert!(
        bag.contains(&"source.uid=kubernetes://reviews-v1.default".to_owned()),
        "{bag:?}"
    );
}

#[test]
fn the_destination_side_reads_its_principal_too() {
    let (done, bag) = enrich(
        &table(),
        &[
            ("destination.ip", ip("192.168.1.20")),
            (
                "destination.principal",
                Value::from("cluster.local/ns/default/sa/bookinfo-ratings"),
            ),
        ],
    );
    assert_eq!(
        done,
        Enriched {
            source: false,
            destination: true,
            service: false
        }
    );
    assert!(
        bag.contains(&"destination.workload.name=ratings-v2".to_owned()),
        "{bag:?}"
    );
}
