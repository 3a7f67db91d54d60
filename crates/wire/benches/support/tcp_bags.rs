//! TCP connection reports shaped like those Istio 1.1's proxy sends (16 attributes: byte
//! counts, ids, identity, two label maps), shared by the decode bench and `decode_loop`.

use std::borrow::Cow;

use meshmeter_attributes::{Bag, Duration, Manifest, StringMap, Value};

/// `n` bags; values vary with the bag's position.
pub(crate) fn tcp_bags(manifest: &Manifest, n: usize) -> Vec<Bag<'static>> {
    let id = |name: &str| manifest.id(name).unwrap();
    (0..n)
        .map(|i| {
            let mut bag = Bag::new(manifest);
            let labels = |app: &str, v: usize| -> Value<'static> {
                let m: StringMap<'static> = [("app", app.to_owned()), ("version", format!("v{v}"))]
                    .into_iter()
                    .collect();
                Value::StringMap(Cow::Owned(m))
            };
            bag.set(id("context.protocol"), Value::from("tcp"));
            bag.set(id("connection.event"), Value::from("continue"));
            bag.set(id("connection.id"), Value::from(format!("8f1c-{}", i % 7)));
            bag.set(id("connection.sent.bytes"), Value::Int64(100 + i as i64));
            bag.set(id("connection.received.bytes"), Value::Int64(50 + i as i64));
            bag.set(
                id("connection.sent.bytes_total"),
                Value::Int64(10_000 + i as i64),
            );
            bag.set(
                id("connection.received.bytes_total"),
                Value::Int64(5_000 + i as i64),
            );
            bag.set(
                id("connection.duration"),
                Value::Duration(Duration::from_secs(10)),
            );
            bag.set(
                id("source.ip"),
                Value::IpAddress([10, 0, 0, (i % 250) as u8].into()),
            );
            bag.set(id("destination.port"), Value::Int64(27017));
            bag.set(
                id("source.workload.name"),
                Value::from(format!("ratings-v{}", i % 2 + 1)),
            );
            bag.set(
                id("destination.service.host"),
                Value::from("mongodb.default.svc.cluster.local"),
            );
            bag.set(id("destination.namespace"), Value::from("default"));
            bag.set(id("context.reporter.kind"), Value::from("inbound"));
            bag.set(id("source.labels"), labels("ratings", i % 2 + 1));
            bag.set(id("destination.labels"), labels("mongodb", i % 3 + 1));
            bag
        })
        .collect()
}
