//! The bags the load generator sends.

use std::borrow::Cow;

use meshmeter_attributes::{Bag, Duration, Manifest, StringMap, Timestamp, Value};

/// How many attributes each bag carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BagShape {
    /// The 8 attributes of Istio's `mixc report` for the seed: protocol, destination service
    /// and namespace, source workload, both label maps, sent and received bytes.
    Small,
    /// What a sidecar reports for a live connection (~28 attributes): addresses, ports, ids,
    /// event, deltas and totals, reporter, time, and the identity a server would add.
    Full,
}

impl std::str::FromStr for BagShape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "8" | "small" => Ok(BagShape::Small),
            "28" | "full" => Ok(BagShape::Full),
            _ => Err(format!(
                "unknown bag shape '{s}': expected 8 (small) or 28 (full)"
            )),
        }
    }
}

/// The label combinations the bags cycle through: source workload and version, destination
/// version (4 series per metric).
const COMBINATIONS: [(&str, &str, &str); 4] = [
    ("ratings-v1", "v1", "v1"),
    ("ratings-v2", "v2", "v1"),
    ("ratings-v1", "v1", "v2"),
    ("ratings-v2", "v2", "v2"),
];

/// Builds bags of one shape for one manifest.
#[derive(Debug)]
pub struct Workload {
    manifest: Manifest,
    shape: BagShape,
}

fn text(s: impl Into<String>) -> Value<'static> {
    Value::String(Cow::Owned(s.into()))
}

fn labels(app: &str, version: &str) -> Value<'static> {
    let mut m = StringMap::new();
    m.insert("app".to_owned(), app.to_owned());
    m.insert("version".to_owned(), version.to_owned());
    Value::StringMap(Cow::Owned(m))
}

impl Workload {
    /// Bags of `shape` typed by `manifest` (which must declare Istio's TCP attributes).
    pub fn new(manifest: &Manifest, shape: BagShape) -> Self {
        Workload {
            manifest: manifest.clone(),
            shape,
        }
    }

    fn set(&self, bag: &mut Bag<'static>, name: &str, value: Value<'static>) {
        if let Some(id) = self.manifest.id(name) {
            bag.set(id, value);
        }
    }

    /// Bag number `n`; returns it with the `connection.received.bytes` it carries.
    pub fn bag(&self, n: u64) -> (Bag<'static>, i64) {
        let (workload, version, destination_version) = COMBINATIONS[(n % 4) as usize];
        let received = 50 + (n % 97) as i64;
        let sent = 100 + (n % 89) as i64;
        let mut bag = Bag::new(&self.manifest);
        self.set(&mut bag, "context.protocol", text("tcp"));
        self.set(
            &mut bag,
            "destination.service.host",
            text("mongodb.default.svc.cluster.local"),
        );
        self.set(&mut bag, "destination.namespace", text("default"));
        self.set(&mut bag, "source.workload.name", text(workload));
        self.set(&mut bag, "source.labels", labels("ratings", version));
        self.set(
            &mut bag,
            "destination.labels",
            labels("mongodb", destination_version),
        );
        self.set(
            &mut bag,
            "connection.received.bytes",
            Value::Int64(received),
        );
        self.set(&mut bag, "connection.sent.bytes", Value::Int64(sent));
        if self.shape == BagShape::Full {
            let conn = n / 8;
            self.set(&mut bag, "connection.event", text("continue"));
            self.set(
                &mut bag,
                "connection.id",
                text(format!("6f1c0d2e-loadgen-{conn}")),
            );
            self.set(
                &mut bag,
                "connection.received.bytes_total",
                Value::Int64(received * 8),
            );
            self.set(
                &mut bag,
                "connection.sent.bytes_total",
                Value::Int64(sent * 8),
            );
            self.set(&mut bag, "connection.mtls", Value::Bool(false));
            self.set(
                &mut bag,
                "connection.duration",
                Value::Duration(Duration::from_secs(3)),
            );
            self.set(
                &mut bag,
                "source.ip",
                Value::IpAddress([10, 0, (n % 4) as u8, 2].into()),
            );
            self.set(
                &mut bag,
                "source.port",
                Value::Int64(40_000 + (conn % 20_000) as i64),
            );
            self.set(
                &mut bag,
                "origin.ip",
                Value::IpAddress([10, 0, (n % 4) as u8, 2].into()),
            );
            self.set(
                &mut bag,
                "destination.ip",
                Value::IpAddress([10, 0, 9, 3].into()),
            );
            self.set(&mut bag, "destination.port", Value::Int64(27017));
            self.set(
                &mut bag,
                "destination.uid",
                text("kubernetes://mongodb-v1-5d8f.default"),
            );
            self.set(&mut bag, "destination.workload.name", text("mongodb-v1"));
            self.set(&mut bag, "destination.workload.namespace", text("default"));
            self.set(&mut bag, "source.workload.namespace", text("default"));
            self.set(&mut bag, "source.namespace", text("default"));
            self.set(
                &mut bag,
                "source.uid",
                text(format!("kubernetes://{workload}-7c9b.default")),
            );
            self.set(&mut bag, "context.reporter.kind", text("inbound"));
            self.set(
                &mut bag,
                "context.reporter.uid",
                text("kubernetes://mongodb-v1-5d8f.default"),
            );
            self.set(
                &mut bag,
                "context.time",
                Value::Timestamp(Timestamp::new(1_559_118_388, 0)),
            );
        }
        (bag, received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_documented_sizes() {
        let m = Manifest::istio();
        assert_eq!(Workload::new(&m, BagShape::Small).bag(0).0.len(), 8);
        assert_eq!(Workload::new(&m, BagShape::Full).bag(0).0.len(), 28);
        assert_eq!(Workload::new(&m, BagShape::Small).bag(5).1, 55);
    }
}
