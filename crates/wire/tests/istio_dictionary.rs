//! The global dictionary as Istio 1.1.7's Mixer and clients index it (four entries keep their
//! YAML quotes), and zero-valued timestamps sent so Mixer reads the epoch.

use meshmeter_attributes::vocabulary::GLOBAL_DICTIONARY;
use meshmeter_attributes::{Bag, Manifest, Timestamp, Value};
use meshmeter_wire::proto::{self, CompressedAttributes, ReportRequest};
use meshmeter_wire::{BagDecoder, Encoding, ReportEncoder};
use prost::Message;

/// Indexes of the quoted entries in Istio's generated list (YAML lines `- '200'`, `- '0'`,
/// `- '1'`, `- "-"`).
const QUOTED: [(usize, &str); 4] = [(94, "'200'"), (111, "'0'"), (112, "'1'"), (218, "\"-\"")];

fn decode(req: &ReportRequest) -> Vec<String> {
    let m = Manifest::istio();
    let mut out = Vec::new();
    BagDecoder::new(&m)
        .decode_report(&req.encode_to_vec(), |_, bag| {
            for (id, v) in bag.iter() {
                out.push(format!("{}={v}", m.name(id)));
            }
        })
        .unwrap();
    out.sort();
    out
}

#[test]
fn quoted_entries_keep_their_quotes() {
    for (i, word) in QUOTED {
        assert_eq!(GLOBAL_DICTIONARY[i], word);
    }
    // The plain words exist at their own indexes.
    assert_eq!(GLOBAL_DICTIONARY[134], "0");
    assert_eq!(GLOBAL_DICTIONARY[135], "1");
    assert_eq!(GLOBAL_DICTIONARY[136], "200");
    assert!(!GLOBAL_DICTIONARY.contains(&"-"));
}

#[test]
fn server_decodes_istio_clients_quoted_indexes() {
    let code = GLOBAL_DICTIONARY
        .iter()
        .position(|w| *w == "response.grpc_status")
        .or_else(|| GLOBAL_DICTIONARY.iter().position(|w| *w == "request.path"))
        .unwrap() as i32;
    let name = GLOBAL_DICTIONARY[code as usize];
    for (i, word) in QUOTED {
        let mut bag = CompressedAttributes::default();
        bag.strings.insert(code, i as i32);
        let req = ReportRequest {
            attributes: vec![bag],
            global_word_count: GLOBAL_DICTIONARY.len() as u32,
            ..Default::default()
        };
        assert_eq!(decode(&req), vec![format!("{name}={word}")]);
    }
}

#[test]
fn client_never_sends_plain_words_as_quoted_indexes() {
    let m = Manifest::istio();
    let path = m.id("request.path").unwrap();
    let enc = ReportEncoder::new(&m, Encoding::Independent);
    for text in ["0", "1", "200", "-", "'1'", "\"-\""] {
        let mut bag = Bag::new(&m);
        bag.set(path, Value::from(text));
        let req = enc.encode(&[bag]);
        let word = req.attributes[0].strings.values().next().copied().unwrap();
        let sent = if word >= 0 {
            GLOBAL_DICTIONARY[word as usize].to_owned()
        } else {
            req.attributes[0].words[(-word - 1) as usize].clone()
        };
        assert_eq!(sent, text, "the word sent for {text:?}");
        assert_eq!(decode(&req), vec![format!("request.path={text}")]);
    }
}

#[test]
fn epoch_timestamp_is_sent_with_its_value() {
    let m = Manifest::istio();
    let time = m.id("context.time").unwrap();
    let mut bag = Bag::new(&m);
    bag.set(time, Value::Timestamp(Timestamp::new(0, 0)));
    let req = ReportEncoder::new(&m, Encoding::Independent).encode(&[bag]);
    let bytes = req.attributes[0].encode_to_vec();
    let key = GLOBAL_DICTIONARY
        .iter()
        .position(|w| *w == "context.time")
        .unwrap() as u32;
    // Field 6 (timestamps) holding an entry {1: key (sint32), 2: empty Timestamp message}:
    // the value field is present, as Go's clients write it.
    let zigzag = key << 1;
    let mut expected = vec![0x32];
    let mut entry = vec![0x08];
    let mut v = zigzag;
    while v >= 0x80 {
        entry.push((v as u8) | 0x80);
        v >>= 7;
    }
    entry.push(v as u8);
    entry.extend([0x12, 0x00]);
    expected.push(entry.len() as u8);
    expected.extend(entry);
    assert_eq!(bytes, expected);
    assert_eq!(
        req.attributes[0].timestamps,
        vec![proto::TimestampEntry {
            key: key as i32,
            value: Some(proto::Timestamp::default())
        }]
    );
    assert_eq!(decode(&req), vec!["context.time=1970-01-01T00:00:00Z"]);
}
