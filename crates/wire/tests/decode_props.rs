//! Property tests: our encoder and decoder round-trip any bags, and no input panics the
//! decoder.

use std::borrow::Cow;
use std::net::IpAddr;

use meshmeter_attributes::{
    AttrId, Bag, Duration, Manifest, StringMap, Timestamp, Value, ValueType,
};
use meshmeter_wire::{BagDecoder, Encoding, ReportEncoder};
use proptest::prelude::*;

/// Raw material for one value; the attribute's type picks what is used.
#[derive(Clone, Debug)]
struct Seed {
    attr: usize,
    int: i64,
    double: f64,
    text: String,
    bytes: Vec<u8>,
    map: Vec<(String, String)>,
    nanos: u32,
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        // Words the global dictionary has, so both index kinds are exercised.
        Just("tcp".to_owned()),
        Just("200".to_owned()),
        Just("source.ip".to_owned()),
        "[a-z0-9.-]{0,10}",
        "\\PC{0,6}",
    ]
}

fn seed() -> impl Strategy<Value = Seed> {
    (
        0..Manifest::istio().len(),
        any::<i64>(),
        any::<f64>().prop_filter("finite", |d| d.is_finite()),
        text(),
        prop::collection::vec(any::<u8>(), 0..20),
        prop::collection::vec((text(), text()), 0..4),
        0..1_000_000_000u32,
    )
        .prop_map(|(attr, int, double, text, bytes, map, nanos)| Seed {
            attr,
            int,
            double,
            text,
            bytes,
            map,
            nanos,
        })
}

fn value(t: ValueType, s: &Seed) -> Value<'static> {
    match t {
        ValueType::Int64 => Value::Int64(s.int),
        ValueType::Double => Value::Double(s.double),
        ValueType::Bool => Value::Bool(s.int & 1 == 1),
        ValueType::Timestamp => Value::Timestamp(Timestamp::new(s.int % 60_000_000_000, s.nanos)),
        ValueType::Duration => Value::Duration(Duration::from_nanos(s.int)),
        ValueType::IpAddress => {
            let mut b = s.bytes.clone();
            b.resize(if s.int & 1 == 1 { 4 } else { 16 }, 0);
            Value::IpAddress(match b.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(b).unwrap()),
                _ => IpAddr::from(<[u8; 16]>::try_from(b).unwrap()),
            })
        }
        ValueType::Bytes => Value::Bytes(Cow::Owned(s.bytes.clone())),
        ValueType::StringMap => {
            let m: StringMap<'static> = s.map.iter().cloned().collect();
            Value::StringMap(Cow::Owned(m))
        }
        t => Value::textual(t, s.text.clone()).unwrap(),
    }
}

fn bags() -> impl Strategy<Value = Vec<Vec<Seed>>> {
    prop::collection::vec(prop::collection::vec(seed(), 0..8), 1..6)
}

fn build(manifest: &Manifest, seeds: &[Vec<Seed>]) -> Vec<Bag<'static>> {
    let ids: Vec<(AttrId, &str, ValueType)> = manifest.iter().collect();
    seeds
        .iter()
        .map(|bag_seeds| {
            let mut bag = Bag::new(manifest);
            for s in bag_seeds {
                let (id, _, t) = ids[s.attr];
                bag.set(id, value(t, s));
            }
            bag
        })
        .collect()
}

fn sorted(bag: &Bag<'_>) -> Vec<(AttrId, Value<'static>)> {
    let mut v: Vec<_> = bag
        .iter()
        .map(|(id, v)| (id, v.clone().into_owned()))
        .collect();
    v.sort_by_key(|(id, _)| *id);
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_then_decode_is_identity(
        seeds in bags(),
        delta in any::<bool>(),
        globals in any::<bool>(),
        defaults in any::<bool>(),
    ) {
        let manifest = Manifest::istio();
        let bags = build(&manifest, &seeds);
        let encoding = if delta { Encoding::Delta } else { Encoding::Independent };
        let bytes = ReportEncoder::new(&manifest, encoding)
            .with_global_dictionary(globals)
            .with_default_words(defaults)
            .encode_to_vec(&bags);
        let mut decoded = Vec::new();
        let summary = BagDecoder::new(&manifest)
            .decode_report(&bytes, |_, bag| decoded.push(sorted(bag)))
            .unwrap();
        prop_assert_eq!(summary.skipped, 0);
        let want: Vec<_> = bags.iter().map(sorted).collect();
        prop_assert_eq!(decoded, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let manifest = Manifest::istio();
        let _ = BagDecoder::new(&manifest).decode_report(&bytes, |_, bag| {
            let _ = bag.len();
        });
    }

    #[test]
    fn corrupted_requests_never_panic(
        seeds in bags(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let manifest = Manifest::istio();
        let mut bytes = ReportEncoder::new(&manifest, Encoding::Delta)
            .with_default_words(true)
            .encode_to_vec(&build(&manifest, &seeds));
        if bytes.is_empty() {
            return Ok(());
        }
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = BagDecoder::new(&manifest).decode_report(&bytes, |_, _| {});
    }
}
