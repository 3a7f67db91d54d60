use std::hint::black_box;
use std::time::Instant;
use meshmeter_attributes::{Bag, Manifest, StringMap, Value};
use meshmeter_expr::Expression;
fn main() {
    let m = Manifest::istio();
    let mut bag = Bag::new(&m);
    bag.set(m.id("connection.sent.bytes").unwrap(), Value::Int64(4096));
    bag.set(m.id("context.protocol").unwrap(), Value::from("tcp"));
    bag.set(m.id("destination.service.host").unwrap(), Value::from("mongodb.default.svc.cluster.local"));
    let labels: StringMap<'static> = [("app", "ratings"), ("version", "v2"), ("pod-template-hash", "x")].into_iter().collect();
    bag.set(m.id("source.labels").unwrap(), Value::from(labels));
    let id = m.id("connection.sent.bytes").unwrap();
    let mut best = f64::MAX;
    for _ in 0..200 {
        let n = 20_000;
        let t = Instant::now();
        for _ in 0..n { black_box(matches!(black_box(&bag).get(black_box(id)), Some(Value::Int64(_)))); }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    println!("{best:.2} ns  baseline bag.get");
    println!("sizes: value {} err {} result {}", std::mem::size_of::<Value<'static>>(), std::mem::size_of::<meshmeter_expr::EvalError>(), std::mem::size_of::<Result<Value<'static>, meshmeter_expr::EvalError>>());
    for src in ["connection.sent.bytes | 0", r#"source.labels["version"] | "unknown""#, r#"context.protocol == "tcp" && destination.service.host == "mongodb.default.svc.cluster.local""#] {
        let e = Expression::compile(src, &m).unwrap();
        let mut best = f64::MAX;
        for _ in 0..200 {
            let n = 20_000;
            let t = Instant::now();
            for _ in 0..n { black_box(black_box(&e).eval(black_box(&bag)).is_ok()); }
            best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
        }
        println!("{best:.2} ns  {src}");
        let mut best = f64::MAX;
        for _ in 0..200 {
            let n = 20_000;
            let t = Instant::now();
            for _ in 0..n { black_box(black_box(&e).eval_bool(black_box(&bag)).is_ok()); }
            best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
        }
        println!("{best:.2} ns  eval_bool");
    }
}
