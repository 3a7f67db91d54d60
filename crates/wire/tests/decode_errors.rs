//! Exact outcomes of the decoder on hand-built requests: semantics, word lists, and every
//! kind of bad input.

use std::collections::BTreeMap;

use meshmeter_attributes::vocabulary::GLOBAL_DICTIONARY;
use meshmeter_attributes::{Manifest, ValueType};
use meshmeter_wire::proto::{self, CompressedAttributes, ReportRequest};
use meshmeter_wire::{BadValue, BagDecoder, DecodeError, Malformed, WireKind};
use prost::Message;

fn g(word: &str) -> i32 {
    GLOBAL_DICTIONARY.iter().position(|w| *w == word).unwrap() as i32
}

/// Decodes and renders each visited bag as sorted `name=value` pairs.
fn decode(req: &ReportRequest) -> Result<Vec<Vec<String>>, DecodeError> {
    decode_bytes(&req.encode_to_vec())
}

fn decode_bytes(bytes: &[u8]) -> Result<Vec<Vec<String>>, DecodeError> {
    let m = Manifest::istio();
    let mut out = Vec::new();
    BagDecoder::new(&m).decode_report(bytes, |i, bag| {
        assert_eq!(i, out.len());
        let mut pairs: Vec<String> = bag
            .iter()
            .map(|(id, v)| format!("{}={v}", m.name(id)))
            .collect();
        pairs.sort();
        out.push(pairs);
    })?;
    Ok(out)
}

fn bag(f: impl FnOnce(&mut CompressedAttributes)) -> CompressedAttributes {
    let mut b = CompressedAttributes::default();
    f(&mut b);
    b
}

#[test]
fn delta_adds_and_overrides_independent_starts_empty() {
    let first = bag(|b| {
        b.int64s.insert(g("connection.sent.bytes"), 1);
        b.strings.insert(g("context.protocol"), g("tcp"));
    });
    let second = bag(|b| {
        b.int64s.insert(g("connection.sent.bytes"), 2);
        b.int64s.insert(g("connection.received.bytes"), 3);
    });
    let mut req = ReportRequest {
        attributes: vec![first, second],
        ..Default::default()
    };
    assert_eq!(
        decode(&req).unwrap(),
        [
            vec!["connection.sent.bytes=1", "context.protocol=tcp"],
            vec![
                "connection.received.bytes=3",
                "connection.sent.bytes=2",
                "context.protocol=tcp"
            ],
        ]
    );
    req.repeated_attributes_semantics =
        proto::RepeatedAttributesSemantics::IndependentEncoding as i32;
    assert_eq!(
        decode(&req).unwrap(),
        [
            vec!["connection.sent.bytes=1", "context.protocol=tcp"],
            vec!["connection.received.bytes=3", "connection.sent.bytes=2"],
        ]
    );
}

#[test]
fn own_words_win_over_default_words() {
    let req = ReportRequest {
        attributes: vec![
            bag(|b| {
                b.strings.insert(-1, -2);
            }),
            bag(|b| {
                b.words = vec!["source.workload.name".into(), "own".into()];
                b.strings.insert(-1, -2);
            }),
        ],
        default_words: vec!["destination.namespace".into(), "from-defaults".into()],
        repeated_attributes_semantics: 1,
        ..Default::default()
    };
    assert_eq!(
        decode(&req).unwrap(),
        [
            vec!["destination.namespace=from-defaults"],
            vec!["source.workload.name=own"]
        ]
    );
}

#[test]
fn every_transport_type() {
    let mut words = vec!["source.labels".to_owned(), "app".into(), "db".into()];
    words.push("destination.ip".into());
    words.push("connection.duration".into());
    words.push("request.time".into());
    words.push("connection.mtls".into());
    let b = CompressedAttributes {
        words,
        string_maps: BTreeMap::from([(
            -1,
            proto::StringMap {
                entries: BTreeMap::from([(-2, -3)]),
            },
        )]),
        bytes: BTreeMap::from([(-4, vec![10, 0, 0, 7])]),
        durations: vec![proto::DurationEntry {
            key: -5,
            value: Some(proto::Duration {
                seconds: -90,
                nanos: -500_000_000,
            }),
        }],
        timestamps: vec![proto::TimestampEntry {
            key: -6,
            value: Some(proto::Timestamp {
                seconds: 1_420_211_075,
                nanos: 250_000_000,
            }),
        }],
        bools: BTreeMap::from([(-7, true)]),
        ..Default::default()
    };
    let req = ReportRequest {
        attributes: vec![b],
        ..Default::default()
    };
    assert_eq!(
        decode(&req).unwrap(),
        [vec![
            "connection.duration=-1m30.5s",
            "connection.mtls=true",
            "destination.ip=10.0.0.7",
            "request.time=2015-01-02T15:04:35.25Z",
            "source.labels=app=db",
        ]]
    );
}

#[test]
fn undeclared_names_are_skipped_and_counted() {
    let req = ReportRequest {
        attributes: vec![bag(|b| {
            b.words = vec!["no.such.attribute".into()];
            b.int64s.insert(-1, 5);
            b.int64s.insert(g("connection.sent.bytes"), 1);
            // A global word that is not an attribute name; map keys are sent in sorted order, so
            // the per-message name (-1) comes first.
            b.int64s.insert(g("gzip"), 1);
        })],
        ..Default::default()
    };
    let m = Manifest::istio();
    let summary = BagDecoder::new(&m)
        .decode_report(&req.encode_to_vec(), |_, bag| assert_eq!(bag.len(), 1))
        .unwrap();
    assert_eq!(summary.bags, 1);
    assert_eq!(summary.skipped, 2);
    assert_eq!(summary.first_skipped.as_deref(), Some("no.such.attribute"));
}

#[test]
fn unknown_word_indexes() {
    let req = ReportRequest {
        attributes: vec![
            bag(|b| {
                b.int64s.insert(g("connection.sent.bytes"), 1);
            }),
            bag(|b| {
                b.words = vec!["context.protocol".into()];
                b.strings.insert(-1, -5);
            }),
        ],
        ..Default::default()
    };
    let err = decode(&req).unwrap_err();
    assert_eq!(
        err,
        DecodeError::WordIndex {
            index: -5,
            bag: 1,
            words: 1,
            globals: GLOBAL_DICTIONARY.len()
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "bag 1: word index -5 is not defined (1 per-message words, {} global words)",
            GLOBAL_DICTIONARY.len()
        )
    );
    assert_eq!(err.to_status().code(), tonic::Code::InvalidArgument);

    let beyond = GLOBAL_DICTIONARY.len() as i32;
    let req = ReportRequest {
        attributes: vec![bag(|b| {
            b.int64s.insert(beyond, 1);
        })],
        ..Default::default()
    };
    assert!(matches!(
        decode(&req),
        Err(DecodeError::WordIndex { index, bag: 0, words: 0, .. }) if index == beyond
    ));
}

#[test]
fn wrong_value_types() {
    let req = ReportRequest {
        attributes: vec![bag(|b| {
            b.strings.insert(g("connection.sent.bytes"), g("tcp"));
        })],
        ..Default::default()
    };
    let err = decode(&req).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TypeMismatch {
            attribute: "connection.sent.bytes".into(),
            bag: 0,
            declared: ValueType::Int64,
            wire: WireKind::Strings
        }
    );
    assert_eq!(
        err.to_string(),
        "bag 0: attribute 'connection.sent.bytes' is declared INT64 but was sent in 'strings'"
    );

    let req = ReportRequest {
        attributes: vec![bag(|b| {
            b.bytes.insert(g("source.ip"), vec![1, 2, 3]);
        })],
        ..Default::default()
    };
    assert_eq!(
        decode(&req).unwrap_err().to_string(),
        "bag 0: attribute 'source.ip': an IP address is 4 or 16 bytes, not 3"
    );

    let req = ReportRequest {
        attributes: vec![bag(|b| {
            b.timestamps.push(proto::TimestampEntry {
                key: g("context.time"),
                value: Some(proto::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
            });
        })],
        ..Default::default()
    };
    assert!(matches!(
        decode(&req),
        Err(DecodeError::BadValue {
            reason: BadValue::TimestampNanos(-1),
            ..
        })
    ));
}

#[test]
fn malformed_bytes_say_where() {
    let good = ReportRequest {
        attributes: vec![bag(|b| {
            b.int64s.insert(g("connection.sent.bytes"), 1);
        })],
        ..Default::default()
    }
    .encode_to_vec();
    // Cut inside the bag's map entry: the outer length now overruns.
    let err = decode_bytes(&good[..good.len() - 1]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Malformed {
            kind: Malformed::Truncated,
            offset: 2,
            bag: None
        }
    );
    assert_eq!(
        err.to_string(),
        "malformed protobuf at byte 2: truncated field"
    );

    // A bag whose map entry has a string where a varint key belongs.
    let bad = [0x0a, 0x05, 0x1a, 0x03, 0x0a, 0x01, b'x'];
    assert_eq!(
        decode_bytes(&bad).unwrap_err().to_string(),
        "malformed protobuf at byte 5 (bag 0): field 1 has the wrong wire type"
    );
    assert_eq!(
        decode_bytes(&[0x0f]).unwrap_err(),
        DecodeError::Malformed {
            kind: Malformed::WireType(7),
            offset: 0,
            bag: None
        }
    );
}

#[test]
fn limits_and_request_fields() {
    let m = Manifest::istio();
    let bytes = vec![0u8; 0];
    assert_eq!(decode_bytes(&bytes).unwrap(), Vec::<Vec<String>>::new());
    let req = ReportRequest {
        attributes: vec![CompressedAttributes::default(); 3],
        ..Default::default()
    }
    .encode_to_vec();
    let err = BagDecoder::new(&m)
        .with_max_message_bytes(5)
        .decode_report(&req, |_, _| {})
        .unwrap_err();
    assert_eq!(err, DecodeError::TooLarge { size: 6, limit: 5 });
    assert_eq!(
        err.to_string(),
        "message of 6 bytes exceeds the limit of 5 bytes"
    );
    assert_eq!(err.to_status().code(), tonic::Code::ResourceExhausted);

    let req = ReportRequest {
        global_word_count: GLOBAL_DICTIONARY.len() as u32 + 1,
        ..Default::default()
    };
    assert_eq!(
        decode(&req).unwrap_err().to_status().code(),
        tonic::Code::FailedPrecondition
    );
    let req = ReportRequest {
        repeated_attributes_semantics: 7,
        ..Default::default()
    };
    assert_eq!(decode(&req).unwrap_err(), DecodeError::Semantics(7));
}

#[test]
fn oversized_string_maps_are_refused() {
    let entries: BTreeMap<i32, i32> = (0..=meshmeter_wire::MAX_MAP_ENTRIES as i32)
        .map(|i| (-(i + 2), -1))
        .collect();
    let mut words = vec!["v".to_owned()];
    words.extend((0..=meshmeter_wire::MAX_MAP_ENTRIES).map(|i| format!("k{i}")));
    let req = ReportRequest {
        attributes: vec![bag(|b| {
            b.words = words;
            b.string_maps
                .insert(g("source.labels"), proto::StringMap { entries });
        })],
        ..Default::default()
    };
    assert!(matches!(
        decode(&req),
        Err(DecodeError::BadValue {
            reason: BadValue::MapTooLarge(1024),
            ..
        })
    ));
}

#[test]
fn text_words_must_be_utf8() {
    // Names need no check (they must equal a declared name); text values do.
    let req = ReportRequest {
        attributes: vec![bag(|b| {
            b.words = vec!["context.protocol".into(), "ok".into()];
            b.strings.insert(-1, -2);
        })],
        ..Default::default()
    };
    let mut bytes = req.encode_to_vec();
    let at = bytes.windows(2).position(|w| w == b"ok").unwrap();
    bytes[at] = 0xff;
    assert_eq!(
        decode_bytes(&bytes).unwrap_err(),
        DecodeError::Malformed {
            kind: Malformed::Utf8,
            offset: at,
            bag: Some(0)
        }
    );
}

#[test]
fn bags_with_many_entries_decode_the_same() {
    // More entries than the decoder stages (1024), with the words last: the second walk
    // must give the same result, duplicate keys resolving to the last value as protobuf says.
    let mut raw = Vec::new();
    for i in 0..3000i64 {
        // Field 3 (int64s) entry {key: -1 (zigzag 1), value: i}.
        let mut entry = vec![0x08, 0x01, 0x10];
        prost::encoding::encode_varint(i as u64, &mut entry);
        raw.push(0x1a);
        raw.push(entry.len() as u8);
        raw.extend(entry);
    }
    raw.push(0x0a);
    raw.push(21);
    raw.extend(b"connection.sent.bytes");
    let mut req = vec![0x0a];
    prost::encoding::encode_varint(raw.len() as u64, &mut req);
    req.extend(raw);
    assert_eq!(
        decode_bytes(&req).unwrap(),
        [vec!["connection.sent.bytes=2999"]]
    );
}

#[test]
fn a_bad_bag_anywhere_means_no_bag_is_visited() {
    let good = |n: i64| {
        bag(|b| {
            b.int64s.insert(g("connection.sent.bytes"), n);
        })
    };
    let bad = bag(|b| {
        // An INT64 attribute sent as a string.
        b.strings.insert(g("connection.received.bytes"), g("tcp"));
    });
    for at in [0, 1, 2] {
        let mut attributes = vec![good(1), good(2)];
        attributes.insert(at, bad.clone());
        let req = ReportRequest {
            attributes,
            ..Default::default()
        };
        let m = Manifest::istio();
        let mut visited = 0;
        let err = BagDecoder::new(&m)
            .decode_report(&req.encode_to_vec(), |_, _| visited += 1)
            .unwrap_err();
        assert!(
            matches!(err, DecodeError::TypeMismatch { bag, .. } if bag == at),
            "{err:?}"
        );
        assert_eq!(visited, 0, "bad bag at {at}");
    }
}

#[test]
fn requests_with_more_values_than_are_staged_decode_the_same() {
    // 70,000 delta bags of one changing value each: more values than the decoder holds at
    // once (65,536), so it checks the request in one walk and visits in a second.
    let bags: Vec<_> = (0..70_000i64)
        .map(|n| {
            bag(|b| {
                b.int64s.insert(g("connection.sent.bytes"), n);
                if n == 0 {
                    b.strings.insert(g("context.protocol"), g("tcp"));
                }
            })
        })
        .collect();
    let req = ReportRequest {
        attributes: bags,
        ..Default::default()
    };
    let m = Manifest::istio();
    let sent = m.id("connection.sent.bytes").unwrap();
    let protocol = m.id("context.protocol").unwrap();
    let mut seen = 0i64;
    let summary = BagDecoder::new(&m)
        .with_max_bags(100_000)
        .decode_report(&req.encode_to_vec(), |i, bag| {
            assert_eq!(i as i64, seen);
            assert_eq!(
                bag.get(sent),
                Some(&meshmeter_attributes::Value::Int64(seen))
            );
            // Delta encoding: the first bag's protocol is still there.
            assert_eq!(
                bag.get(protocol),
                Some(&meshmeter_attributes::Value::from("tcp"))
            );
            seen += 1;
        })
        .unwrap();
    assert_eq!(summary.bags, 70_000);
    assert_eq!(seen, 70_000);

    // The same request with a bad last bag: still nothing visited.
    let mut req = req;
    req.attributes
        .last_mut()
        .unwrap()
        .strings
        .insert(g("connection.received.bytes"), g("tcp"));
    let mut visited = 0;
    assert!(BagDecoder::new(&m)
        .with_max_bags(100_000)
        .decode_report(&req.encode_to_vec(), |_, _| visited += 1)
        .is_err());
    assert_eq!(visited, 0);
}

#[test]
fn a_word_after_the_maps_still_names_entries_before_it() {
    // int64s {gzip (a global word, not an attribute): 1}, {connection.sent.bytes: 5}, then
    // words ["connection.received.bytes"], then int64s {-1: 7}: the word list applies to the
    // whole bag whatever the field order, and the skipped value is counted once.
    let mut raw = Vec::new();
    for (word, value) in [("gzip", 1u8), ("connection.sent.bytes", 5)] {
        let mut entry = vec![0x08];
        prost::encoding::encode_varint(u64::from((g(word) as u32) << 1), &mut entry);
        entry.extend([0x10, value]);
        raw.push(0x1a);
        raw.push(entry.len() as u8);
        raw.extend(entry);
    }
    raw.push(0x0a);
    raw.push(25);
    raw.extend(b"connection.received.bytes");
    raw.extend([0x1a, 0x04, 0x08, 0x01, 0x10, 0x07]);
    let mut req = vec![0x0a];
    prost::encoding::encode_varint(raw.len() as u64, &mut req);
    req.extend(raw);
    assert_eq!(
        decode_bytes(&req).unwrap(),
        [vec![
            "connection.received.bytes=7",
            "connection.sent.bytes=5"
        ]]
    );
    let m = Manifest::istio();
    let summary = BagDecoder::new(&m).decode_report(&req, |_, _| {}).unwrap();
    assert_eq!(summary.skipped, 1);
    assert_eq!(summary.first_skipped.as_deref(), Some("gzip"));
}

#[test]
fn timestamps_outside_years_1_to_9999_are_refused() {
    let at = |seconds: i64| ReportRequest {
        attributes: vec![bag(|b| {
            b.timestamps.push(proto::TimestampEntry {
                key: g("context.time"),
                value: Some(proto::Timestamp { seconds, nanos: 0 }),
            });
        })],
        ..Default::default()
    };
    // The last and first seconds RFC 3339 can write are accepted.
    assert_eq!(
        decode(&at(253_402_300_799)).unwrap(),
        [vec!["context.time=9999-12-31T23:59:59Z"]]
    );
    assert_eq!(
        decode(&at(-62_135_596_800)).unwrap(),
        [vec!["context.time=0001-01-01T00:00:00Z"]]
    );
    for seconds in [253_402_300_800, -62_135_596_801, i64::MAX, i64::MIN] {
        let e = decode(&at(seconds)).unwrap_err();
        assert_eq!(
            e,
            DecodeError::BadValue {
                attribute: "context.time".into(),
                bag: 0,
                reason: BadValue::TimestampRange(seconds),
            }
        );
        assert_eq!(
            e.to_string(),
            format!(
                "bag 0: attribute 'context.time': timestamp of {seconds}s since the epoch is outside years 0001-9999"
            )
        );
        assert_eq!(e.to_status().code(), tonic::Code::InvalidArgument);
    }
}

#[test]
fn more_bags_than_the_limit_are_refused_before_any_is_visited() {
    // Delta-encoded empty bags: two bytes each, each one a dispatch of the previous bag.
    let first = bag(|b| {
        b.int64s.insert(g("connection.sent.bytes"), 1);
    });
    let mut req = ReportRequest {
        attributes: vec![first],
        ..Default::default()
    };
    req.attributes
        .extend(std::iter::repeat_n(CompressedAttributes::default(), 4));
    let bytes = req.encode_to_vec();
    let m = Manifest::istio();
    let mut visited = 0;
    let summary = BagDecoder::new(&m)
        .with_max_bags(100_000)
        .with_max_bags(5)
        .decode_report(&bytes, |_, _| visited += 1)
        .unwrap();
    assert_eq!((summary.bags, visited), (5, 5));
    assert_eq!(BagDecoder::count_bags(&bytes, 100), 5);

    let e = BagDecoder::new(&m)
        .with_max_bags(100_000)
        .with_max_bags(4)
        .decode_report(&bytes, |_, _| visited += 1)
        .unwrap_err();
    assert_eq!(visited, 5, "no bag of a refused request is visited");
    assert_eq!(e, DecodeError::TooManyBags { limit: 4 });
    assert_eq!(e.to_string(), "request holds more than 4 bags");
    assert_eq!(e.to_status().code(), tonic::Code::ResourceExhausted);
}
