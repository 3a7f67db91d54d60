//! Reading traffic objects as a Kubernetes source hands them in: 1,000 DestinationRules and
//! 1,000 VirtualServices, first all of them, then again with one changed (what every watch
//! event costs the control plane).
//!
//! `cargo bench -p meshmeter-netconfig --bench netconfig_load`

use criterion::{criterion_group, criterion_main, Criterion};
use meshmeter_config::Input;
use meshmeter_netconfig::Loader;

fn objects(weight: u32) -> Vec<Input> {
    let mut out = Vec::new();
    for i in 0..1000 {
        let ns = format!("ns{}", i % 10);
        let rule = format!("apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: r{i}, namespace: {ns}}}\nspec:\n  host: svc{i}\n  trafficPolicy:\n    connectionPool: {{tcp: {{maxConnections: 100}}}}\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n  - name: v2\n    labels: {{version: v2}}\n");
        let w = if i == 7 { weight } else { 80 };
        let service = format!("apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: r{i}, namespace: {ns}}}\nspec:\n  hosts: [svc{i}]\n  tcp:\n  - route:\n    - destination: {{host: svc{i}, subset: v1}}\n      weight: {w}\n    - destination: {{host: svc{i}, subset: v2}}\n      weight: {}\n", 100 - w);
        for (kind, text) in [("DestinationRule", rule), ("VirtualService", service)] {
            out.push(Input::Kubernetes {
                kind: kind.into(),
                namespace: ns.clone(),
                name: format!("r{i}"),
                resource_version: "1".into(),
                text,
            });
        }
    }
    out
}

fn load(c: &mut Criterion) {
    let (a, b) = (objects(80), objects(70));
    c.bench_function("netconfig_load/2000_objects_first", |bench| {
        bench.iter(|| Loader::new().load(a.clone()))
    });
    let loader = Loader::new();
    let mut flip = false;
    c.bench_function("netconfig_load/2000_objects_one_changed", |bench| {
        bench.iter(|| {
            flip = !flip;
            loader.load(if flip { b.clone() } else { a.clone() })
        })
    });
}

criterion_group!(benches, load);
criterion_main!(benches);
