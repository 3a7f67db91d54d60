//! Evaluating the seed's three expressions allocates nothing: names were resolved to ids at
//! compile time, and values borrow from the bag or the expression's constants.

use std::borrow::Cow;

use meshmeter_attributes::{Bag, Manifest, StringMap, Value};
use meshmeter_expr::Expression;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn seed_expressions_evaluate_without_allocating() {
    let m = Manifest::istio();
    let exprs: Vec<Expression> = [
        "connection.sent.bytes | 0",
        r#"source.labels["version"] | "unknown""#,
        r#"context.protocol == "tcp" && destination.service.host == "mongodb.default.svc.cluster.local""#,
    ]
    .iter()
    .map(|s| Expression::compile(s, &m).unwrap())
    .collect();
    let mut full = Bag::new(&m);
    full.set(m.id("connection.sent.bytes").unwrap(), Value::Int64(4096));
    full.set(m.id("context.protocol").unwrap(), Value::from("tcp"));
    full.set(
        m.id("destination.service.host").unwrap(),
        Value::from("mongodb.default.svc.cluster.local"),
    );
    let labels: StringMap<'static> = [("app", "ratings"), ("version", "v2")]
        .into_iter()
        .collect();
    full.set(
        m.id("source.labels").unwrap(),
        Value::StringMap(Cow::Owned(labels)),
    );
    let mut absent = Bag::new(&m);
    absent.set(m.id("context.protocol").unwrap(), Value::from("http"));

    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get().total_blocks;
    let mut ok = 0;
    for _ in 0..1000 {
        for e in &exprs {
            ok += usize::from(e.eval(&full).is_ok());
            ok += usize::from(e.eval(&absent).is_ok());
        }
    }
    let after = dhat::HeapStats::get().total_blocks;
    assert_eq!(ok, 6000);
    assert_eq!(after - before, 0, "allocations during 6000 evaluations");

    // The counter does see allocations: concatenation builds a new string.
    let concat = Expression::compile(r#"context.protocol + "-x""#, &m).unwrap();
    let before = dhat::HeapStats::get().total_blocks;
    assert_eq!(concat.eval(&full).unwrap(), Value::from("tcp-x"));
    assert_eq!(dhat::HeapStats::get().total_blocks - before, 1);
}
