//! Bags -> `ReportRequest`, for meshmeter's own clients (the proxy and the load generator).

use std::collections::HashMap;

use meshmeter_attributes::vocabulary::GLOBAL_DICTIONARY;
use meshmeter_attributes::{Bag, Manifest, Value};
use prost::Message;

use crate::proto::{
    CompressedAttributes, DurationEntry, RepeatedAttributesSemantics, ReportRequest,
    StringMap as ProtoMap, TimestampEntry,
};

/// How the bags of one request relate on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Each bag after the first carries only what changed since the previous bag. Removal
    /// cannot be expressed, so a request in which some bag lacks an attribute that the bag
    /// before it had is sent with [`Encoding::Independent`] instead.
    Delta,
    /// Every bag carries all its attributes.
    Independent,
}

impl std::str::FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "delta" => Ok(Encoding::Delta),
            "independent" => Ok(Encoding::Independent),
            other => Err(format!(
                "unknown encoding '{other}' (expected 'delta' or 'independent')"
            )),
        }
    }
}

/// Builds `ReportRequest`s from bags.
///
/// Names and text use global dictionary words where the dictionary has them (unless turned
/// off) and per-message words otherwise: per bag by default, or one `default_words` list for
/// the whole request.
#[derive(Clone, Debug)]
pub struct ReportEncoder {
    manifest: Manifest,
    encoding: Encoding,
    globals: Option<HashMap<&'static str, i32>>,
    default_words: bool,
}

/// A per-message dictionary under construction.
#[derive(Default)]
struct Dict<'g> {
    globals: Option<&'g HashMap<&'static str, i32>>,
    words: Vec<String>,
    index: HashMap<String, i32>,
}

impl Dict<'_> {
    fn word(&mut self, text: &str) -> i32 {
        if let Some(&i) = self.globals.and_then(|g| g.get(text)) {
            return i;
        }
        if let Some(&i) = self.index.get(text) {
            return i;
        }
        // Per-message word `slot` is sent as `-slot - 1`.
        let i = -(self.words.len() as i32) - 1;
        self.words.push(text.to_owned());
        self.index.insert(text.to_owned(), i);
        i
    }
}

impl ReportEncoder {
    /// An encoder for bags of `manifest`, using the global dictionary and per-bag words.
    pub fn new(manifest: &Manifest, encoding: Encoding) -> Self {
        let mut globals = HashMap::with_capacity(GLOBAL_DICTIONARY.len());
        for (i, &word) in GLOBAL_DICTIONARY.iter().enumerate() {
            // Should the dictionary repeat a word, the first index is canonical.
            globals.entry(word).or_insert(i as i32);
        }
        ReportEncoder {
            manifest: manifest.clone(),
            encoding,
            globals: Some(globals),
            default_words: false,
        }
    }

    /// Whether to use the global dictionary (on by default). Off, every word is sent as a
    /// per-message word and `global_word_count` is 0.
    pub fn with_global_dictionary(mut self, on: bool) -> Self {
        if !on {
            self.globals = None;
        } else if self.globals.is_none() {
            self.globals = Self::new(&self.manifest, self.encoding).globals;
        }
        self
    }

    /// Whether to put every per-message word in the request's `default_words` instead of
    /// each bag's own `words` (off by default).
    pub fn with_default_words(mut self, on: bool) -> Self {
        self.default_words = on;
        self
    }

    /// Encodes `bags` as one request.
    pub fn encode(&self, bags: &[Bag<'_>]) -> ReportRequest {
        let delta = self.encoding == Encoding::Delta
            && bags
                .windows(2)
                .all(|w| w[0].iter().all(|(id, _)| w[1].contains(id)));
        let globals = self.globals.as_ref();
        let mut shared = Dict {
            globals,
            ..Dict::default()
        };
        let mut out = ReportRequest {
            global_word_count: globals.map_or(0, |_| GLOBAL_DICTIONARY.len() as u32),
            repeated_attributes_semantics: if delta {
                RepeatedAttributesSemantics::DeltaEncoding
            } else {
                RepeatedAttributesSemantics::IndependentEncoding
            } as i32,
            ..ReportRequest::default()
        };
        let mut prev: Option<&Bag<'_>> = None;
        for bag in bags {
            let mut own = Dict {
                globals,
                ..Dict::default()
            };
            let dict = if self.default_words {
                &mut shared
            } else {
                &mut own
            };
            let mut msg = CompressedAttributes::default();
            for (id, value) in bag.iter() {
                if id.index() >= self.manifest.len() {
                    continue;
                }
                if delta && prev.and_then(|p| p.get(id)) == Some(value) {
                    continue;
                }
                let name = dict.word(self.manifest.name(id));
                put(&mut msg, dict, name, value);
            }
            // Same entry order as the other (sorted) maps.
            msg.timestamps.sort_unstable_by_key(|e| e.key);
            msg.durations.sort_unstable_by_key(|e| e.key);
            msg.words = own.words;
            out.attributes.push(msg);
            prev = Some(bag);
        }
        out.default_words = shared.words;
        out
    }

    /// Encodes `bags` as one request's bytes.
    pub fn encode_to_vec(&self, bags: &[Bag<'_>]) -> Vec<u8> {
        self.encode(bags).encode_to_vec()
    }
}

fn put(msg: &mut CompressedAttributes, dict: &mut Dict<'_>, name: i32, value: &Value<'_>) {
    match value {
        Value::String(s) | Value::EmailAddress(s) | Value::DnsName(s) | Value::Uri(s) => {
            let w = dict.word(s);
            msg.strings.insert(name, w);
        }
        Value::Int64(v) => {
            msg.int64s.insert(name, *v);
        }
        Value::Double(v) => {
            msg.doubles.insert(name, *v);
        }
        Value::Bool(v) => {
            msg.bools.insert(name, *v);
        }
        Value::Timestamp(t) => {
            msg.timestamps.push(TimestampEntry {
                key: name,
                value: Some((*t).into()),
            });
        }
        Value::Duration(d) => {
            msg.durations.push(DurationEntry {
                key: name,
                value: Some((*d).into()),
            });
        }
        Value::IpAddress(ip) => {
            let octets = match ip {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            msg.bytes.insert(name, octets);
        }
        Value::Bytes(b) => {
            msg.bytes.insert(name, b.to_vec());
        }
        Value::StringMap(m) => {
            let entries = m
                .iter()
                .map(|(k, v)| (dict.word(k), dict.word(v)))
                .collect();
            msg.string_maps.insert(name, ProtoMap { entries });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_words_and_delta() {
        let m = Manifest::istio();
        let sent = m.id("connection.sent.bytes").unwrap();
        let proto = m.id("context.protocol").unwrap();
        let ns = m.id("destination.namespace").unwrap();
        let mut a = Bag::new(&m);
        a.set(sent, Value::Int64(1));
        a.set(proto, Value::from("tcp"));
        a.set(ns, Value::from("default"));
        let mut b = a.clone();
        b.set(sent, Value::Int64(2));
        let req = ReportEncoder::new(&m, Encoding::Delta).encode(&[a.clone(), b]);
        assert_eq!(req.global_word_count, GLOBAL_DICTIONARY.len() as u32);
        assert_eq!(req.repeated_attributes_semantics, 0);
        let g = |w: &str| GLOBAL_DICTIONARY.iter().position(|x| *x == w).unwrap() as i32;
        let first = &req.attributes[0];
        assert_eq!(first.words, ["default"]);
        assert_eq!(first.strings.get(&g("context.protocol")), Some(&g("tcp")));
        assert_eq!(first.strings.get(&g("destination.namespace")), Some(&-1));
        // The second bag carries only what changed.
        let second = &req.attributes[1];
        assert!(second.strings.is_empty() && second.words.is_empty());
        assert_eq!(second.int64s.get(&g("connection.sent.bytes")), Some(&2));

        // A bag that drops an attribute forces independent encoding.
        let mut c = Bag::new(&m);
        c.set(sent, Value::Int64(3));
        let req = ReportEncoder::new(&m, Encoding::Delta).encode(&[a, c]);
        assert_eq!(req.repeated_attributes_semantics, 1);
        assert_eq!(req.attributes[1].int64s.len(), 1);
    }

    #[test]
    fn default_words_without_globals() {
        let m = Manifest::istio();
        let proto = m.id("context.protocol").unwrap();
        let mut a = Bag::new(&m);
        a.set(proto, Value::from("tcp"));
        let req = ReportEncoder::new(&m, Encoding::Independent)
            .with_global_dictionary(false)
            .with_default_words(true)
            .encode(&[a.clone(), a]);
        assert_eq!(req.default_words, ["context.protocol", "tcp"]);
        assert_eq!(req.global_word_count, 0);
        assert!(req.attributes.iter().all(|b| b.words.is_empty()));
        assert_eq!(req.attributes[1].strings.get(&-1), Some(&-2));
    }
}
