//! Evaluation cost of the seed's three expressions (Mixer measured 129-136 ns, 167-253 ns and
//! 174-245 ns for them on this machine kind), against a bag of realistic TCP attributes, and
//! with the attribute absent to measure the fallback path.

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use meshmeter_attributes::{Bag, Duration, Manifest, StringMap, Value};
use meshmeter_expr::Expression;

const SENT: &str = "connection.sent.bytes | 0";
const VERSION: &str = r#"source.labels["version"] | "unknown""#;
const MATCH: &str = r#"context.protocol == "tcp" && destination.service.host == "mongodb.default.svc.cluster.local""#;

/// What a server-side proxy reports for a MongoDB connection, after identity enrichment.
fn tcp_bag(m: &Manifest) -> Bag<'static> {
    let mut bag = Bag::new(m);
    let mut set = |name: &str, v: Value<'static>| {
        bag.set(m.id(name).expect("declared"), v);
    };
    set("connection.sent.bytes", Value::Int64(4096));
    set("connection.received.bytes", Value::Int64(512));
    set("connection.sent.bytes_total", Value::Int64(1 << 20));
    set("connection.received.bytes_total", Value::Int64(1 << 16));
    set(
        "connection.duration",
        Value::Duration(Duration::from_secs(12)),
    );
    set("connection.event", Value::from("continue"));
    set("context.protocol", Value::from("tcp"));
    set("context.reporter.kind", Value::from("inbound"));
    set(
        "destination.service.host",
        Value::from("mongodb.default.svc.cluster.local"),
    );
    set("destination.port", Value::Int64(27017));
    set("source.workload.name", Value::from("ratings-v2"));
    set(
        "source.ip",
        Value::IpAddress("10.44.0.7".parse().expect("ip")),
    );
    let labels: StringMap<'static> = [
        ("app", "ratings"),
        ("version", "v2"),
        ("pod-template-hash", "6b9f8c9d4"),
    ]
    .into_iter()
    .collect();
    set("source.labels", Value::StringMap(Cow::Owned(labels)));
    bag
}

fn bench(c: &mut Criterion) {
    let m = Manifest::istio();
    let full = tcp_bag(&m);
    let mut absent = full.clone();
    absent.remove(m.id("connection.sent.bytes").expect("declared"));
    absent.remove(m.id("source.labels").expect("declared"));
    let mut group = c.benchmark_group("eval");
    for (name, src) in [
        ("sent_bytes_or_0", SENT),
        ("labels_version_or_unknown", VERSION),
        ("seed_rule_match", MATCH),
    ] {
        let expr = Expression::compile(src, &m).expect("compiles");
        group.bench_function(format!("{name}/present"), |b| {
            b.iter(|| {
                let v = black_box(&expr).eval(black_box(&full));
                black_box(v.is_ok())
            })
        });
        if name != "seed_rule_match" {
            group.bench_function(format!("{name}/absent"), |b| {
                b.iter(|| {
                    let v = black_box(&expr).eval(black_box(&absent));
                    black_box(v.is_ok())
                })
            });
        }
    }
    let rule = Expression::compile(MATCH, &m).expect("compiles");
    group.bench_function("seed_rule_match/eval_bool", |b| {
        b.iter(|| black_box(&rule).eval_bool(black_box(&full)))
    });
    group.finish();
    c.bench_function("compile/seed_rule_match", |b| {
        b.iter(|| Expression::compile(black_box(MATCH), &m))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
