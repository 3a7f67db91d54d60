//! Properties over vast inputs: printing and re-parsing is stable, and no expression text or
//! bag makes the parser, checker or evaluator panic.

use std::borrow::Cow;

use meshmeter_attributes::{Bag, Duration, Manifest, StringMap, Timestamp, Value, ValueType};
use meshmeter_expr::{parse, Expression};
use proptest::prelude::*;

fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Source text of syntactically valid expressions.
fn valid_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "as",
            "ai",
            "ar",
            "source.labels",
            "a.b.c",
            "x_1",
            "TRUE",
            "false"
        ])
        .prop_map(str::to_owned),
        (0i64..1_000_000).prop_map(|i| i.to_string()),
        (0.0f64..1e6).prop_map(|f| format!("{f:?}")),
        "[a-zA-Z0-9 _.*\\\\\"é-]{0,8}".prop_map(|s| go_quote(&s)),
    ];
    leaf.prop_recursive(6, 64, 4, |inner| {
        let ops = prop::sample::select(vec![
            "||", "&&", "==", "!=", "<", "<=", ">", ">=", "+", "-", "|", "^", "*", "/", "%", "<<",
            ">>", "&", "&^",
        ]);
        prop_oneof![
            (inner.clone(), ops, inner.clone()).prop_map(|(l, op, r)| format!("{l} {op} ({r})")),
            inner.clone().prop_map(|e| format!("!({e})")),
            (inner.clone(), inner.clone()).prop_map(|(t, k)| format!("({t})[{k}]")),
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|args| format!("f({})", args.join(", "))),
            (inner.clone(), inner).prop_map(|(r, a)| format!("({r}).startsWith({a})")),
        ]
    })
}

/// Token soup: mostly invalid text built from the language's own pieces.
fn soup() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "as",
        "ai",
        "ad",
        "ab",
        "ar",
        "adur",
        "aip",
        "at",
        "adns",
        "amail",
        "auri",
        "abytes",
        "(",
        ")",
        "[",
        "]",
        "|",
        "||",
        "&&",
        "==",
        "!=",
        "<",
        "+",
        "-",
        "!",
        ".",
        ",",
        "\"x\"",
        "\"10s\"",
        "\"*.a\"",
        "\"a*\"",
        "\"[\"",
        "1",
        "2.5",
        "ip",
        "timestamp",
        "dnsName",
        "email",
        "uri",
        "match",
        "matches",
        "startsWith",
        "endsWith",
        "toLower",
        "size",
        "emptyStringMap",
        "conditional",
        "true",
        "\"1.2.3.4\"",
        "\"2015-01-02T15:04:35Z\"",
        "`raw`",
        "'c'",
        "@",
        "\"",
        "/*",
        "0x1",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|p| p.join(" "))
}

fn manifest() -> Manifest {
    let mut m = Manifest::new();
    for (name, t) in [
        ("as", ValueType::String),
        ("ai", ValueType::Int64),
        ("ad", ValueType::Double),
        ("ab", ValueType::Bool),
        ("ar", ValueType::StringMap),
        ("adur", ValueType::Duration),
        ("aip", ValueType::IpAddress),
        ("at", ValueType::Timestamp),
        ("adns", ValueType::DnsName),
        ("amail", ValueType::EmailAddress),
        ("auri", ValueType::Uri),
        ("abytes", ValueType::Bytes),
    ] {
        m.declare(name, t).unwrap();
    }
    m
}

/// Values of every type, and text that is hostile to the textual types' parsers.
fn any_value() -> impl Strategy<Value = Value<'static>> {
    let text = "[ -~é]{0,12}";
    prop_oneof![
        text.prop_map(|s| Value::String(Cow::Owned(s))),
        any::<i64>().prop_map(Value::Int64),
        any::<f64>().prop_map(Value::Double),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Duration(Duration::from_nanos(n))),
        (-10_000_000_000i64..10_000_000_000, 0u32..1_000_000_000)
            .prop_map(|(s, n)| Value::Timestamp(Timestamp::new(s, n))),
        any::<[u8; 16]>().prop_map(|b| Value::IpAddress(std::net::Ipv6Addr::from(b).into())),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| Value::Bytes(Cow::Owned(b))),
        prop::collection::vec((text, text), 0..4).prop_map(|kv| Value::StringMap(Cow::Owned(
            kv.into_iter().collect::<StringMap<'static>>()
        ))),
        text.prop_map(|s| Value::DnsName(Cow::Owned(s))),
        text.prop_map(|s| Value::EmailAddress(Cow::Owned(s))),
        text.prop_map(|s| Value::Uri(Cow::Owned(s))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn print_parse_round_trip(src in valid_expr()) {
        let first = parse(&src).map_err(|e| TestCaseError::fail(e.render(&src)))?;
        let printed = first.to_string();
        let second = parse(&printed).map_err(|e| TestCaseError::fail(e.render(&printed)))?;
        prop_assert_eq!(second.to_string(), printed);
    }

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,40}") {
        let m = manifest();
        if let Ok(e) = Expression::compile(&src, &m) {
            let _ = e.eval(&Bag::new(&m));
        }
    }

    #[test]
    fn token_soup_with_any_bag_never_panics(
        src in soup(),
        values in prop::collection::vec(proptest::option::of(any_value()), 12),
    ) {
        let m = manifest();
        let mut bag = Bag::new(&m);
        // Values land on ids regardless of declared type: a wrong-typed bag must not panic.
        for ((id, _, _), v) in m.iter().zip(values) {
            if let Some(v) = v {
                bag.set(id, v);
            }
        }
        if let Ok(e) = Expression::compile(&src, &m) {
            if let Ok(v) = e.eval(&bag) {
                prop_assert_eq!(v.value_type(), e.result_type());
            }
            let _ = e.eval_bool(&bag);
        }
    }
}
