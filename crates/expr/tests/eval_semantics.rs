//! Semantics beyond Mixer's table: `|` fallback rules, meaning-based equality, durations,
//! regular expressions, constant folding that keeps errors at evaluation time.

use std::borrow::Cow;

use meshmeter_attributes::json::bag_from_json;
use meshmeter_attributes::{Manifest, Value, ValueType};
use meshmeter_expr::{EvalError, Expression};
use serde_json::json;

fn manifest() -> Manifest {
    let mut m = Manifest::new();
    for (n, t) in [
        ("s", ValueType::String),
        ("i", ValueType::Int64),
        ("d", ValueType::Duration),
        ("m", ValueType::StringMap),
        ("ip1", ValueType::IpAddress),
        ("ip2", ValueType::IpAddress),
        ("n1", ValueType::DnsName),
        ("n2", ValueType::DnsName),
        ("e1", ValueType::EmailAddress),
        ("e2", ValueType::EmailAddress),
        ("u1", ValueType::Uri),
        ("u2", ValueType::Uri),
        ("t1", ValueType::Timestamp),
        ("t2", ValueType::Timestamp),
        ("b", ValueType::Bool),
    ] {
        m.declare(n, t).unwrap();
    }
    m
}

fn eval(src: &str, bag: serde_json::Value) -> Result<Value<'static>, EvalError> {
    let m = manifest();
    let bag = bag_from_json(&m, &bag).unwrap();
    let e = Expression::compile(src, &m).unwrap_or_else(|e| panic!("{}", e.render(src)));
    e.eval(&bag).map(Value::into_owned)
}

fn s(text: &str) -> Value<'static> {
    Value::String(Cow::Owned(text.to_owned()))
}

#[test]
fn fallback_catches_absence_only_where_mixer_did() {
    assert_eq!(eval(r#"m["k"] | "x""#, json!({"m": {}})), Ok(s("x")));
    assert_eq!(eval(r#"m["k"]"#, json!({"m": {}})), Ok(s("")));
    assert_eq!(
        eval(r#"emptyStringMap()["k"] | "x""#, json!({})),
        Ok(s("x"))
    );
    assert_eq!(eval(r#"m[s] | "x""#, json!({"m": {"a": "b"}})), Ok(s("x")));
    assert_eq!(eval(r#"(s | "a") + "b""#, json!({})), Ok(s("ab")));
    // Function arguments are strict: the absence inside is an error, not a fallback.
    assert_eq!(
        eval(r#"toLower(s) | "x""#, json!({})),
        Err(EvalError::MissingAttribute { name: "s".into() })
    );
    assert_eq!(
        eval(r#"conditional(b, "y", "n") | "x""#, json!({})),
        Err(EvalError::MissingAttribute { name: "b".into() })
    );
    assert_eq!(
        eval(r#"(i == 1) | false"#, json!({"i": 1})),
        Ok(Value::Bool(true))
    );
}

#[test]
fn equality_by_meaning() {
    let bag = json!({
        "ip1": "::ffff:10.0.0.1", "ip2": "10.0.0.1",
        "n1": "Ratings.Default.svc.cluster.local.", "n2": "ratings.default.svc.cluster.local",
        "e1": "\"istio\"@Istio.IO", "e2": "istio@istio.io",
        "u1": "HTTP://Istio.io:8080/a?b#c", "u2": "http://istio.io.:8080/a?b#c",
        "t1": "2015-01-02T16:04:35+01:00", "t2": "2015-01-02T15:04:35Z"
    });
    for src in [
        "ip1 == ip2",
        "n1 == n2",
        "e1 == e2",
        "u1 == u2",
        "t1 == t2",
        "!(t1 < t2)",
    ] {
        assert_eq!(eval(src, bag.clone()), Ok(Value::Bool(true)), "{src}");
    }
    assert_eq!(
        eval(r#"ip("::ffff:1.2.3.4")"#, json!({})),
        Ok(Value::IpAddress("1.2.3.4".parse().unwrap()))
    );
    assert_eq!(
        eval(r#"uri("urn:a") == uri("urn:A")"#, json!({})),
        Ok(Value::Bool(false))
    );
}

#[test]
fn durations_compare() {
    let bag = json!({"d": "1m30s"});
    assert_eq!(eval(r#"d > "1m""#, bag.clone()), Ok(Value::Bool(true)));
    assert_eq!(eval(r#"d == "90s""#, bag.clone()), Ok(Value::Bool(true)));
    assert_eq!(
        eval(r#"d | "0""#, json!({})),
        Ok(Value::Duration(Default::default()))
    );
    let m = manifest();
    let err = Expression::compile(r#"s == "10s""#, &m).unwrap_err();
    assert_eq!(err.code(), "E102");
    assert_eq!(
        err.hint().unwrap(),
        "a string literal that reads as a duration (\"10s\") is a DURATION constant"
    );
}

#[test]
fn regular_expressions_and_globs() {
    let bag = json!({"s": "ratings-v2"});
    assert_eq!(
        eval(r#""^ratings-v[0-9]+$".matches(s)"#, bag.clone()),
        Ok(Value::Bool(true))
    );
    assert_eq!(
        eval(r#"s.matches("v2")"#, bag.clone()),
        Ok(Value::Bool(false))
    );
    assert_eq!(
        eval(r#"match(s, "ratings*")"#, bag.clone()),
        Ok(Value::Bool(true))
    );
    // A pattern known only at evaluation still fails there.
    assert!(matches!(
        eval(r#"s.matches(s)"#, json!({"s": "["})),
        Err(EvalError::InvalidRegex { .. })
    ));
    drop(bag);
    // A constant pattern is compiled once at load: one that does not compile (bad syntax,
    // or over the size limit) is a located error, never a failure per bag.
    let m = manifest();
    let err = Expression::compile(r#"s == "x" || "[".matches(s)"#, &m).unwrap_err();
    assert_eq!((err.code(), err.span()), ("E108", 12..15));
    assert!(
        err.message()
            .starts_with("invalid regular expression \"[\": regex parse error"),
        "{}",
        err.message()
    );
    let err = Expression::compile(r#""\\w{500}".matches(s)"#, &m).unwrap_err();
    assert_eq!(err.code(), "E108");
    assert!(
        err.message().contains("exceeds size limit"),
        "{}",
        err.message()
    );
}

#[test]
fn constant_errors_stay_evaluation_errors() {
    let m = manifest();
    let e = Expression::compile(r#"timestamp("yesterday")"#, &m).unwrap();
    assert_eq!(e.result_type(), ValueType::Timestamp);
    assert!(matches!(
        eval(r#"timestamp("yesterday")"#, json!({})),
        Err(EvalError::Conversion {
            function: "timestamp",
            ..
        })
    ));
    assert_eq!(eval(r#"size("héllo") + 1"#, json!({})), Ok(Value::Int64(7)));
    assert_eq!(
        eval("9223372036854775807 + 1", json!({})),
        Ok(Value::Int64(i64::MIN))
    );
}

#[test]
fn attributes_lists_what_is_read() {
    let m = manifest();
    let e = Expression::compile(r#"s | m["k"] | s"#, &m).unwrap();
    assert_eq!(e.attributes(), &[m.id("s").unwrap(), m.id("m").unwrap()]);
    assert_eq!(e.source(), r#"s | m["k"] | s"#);
    let clone = e.clone();
    std::thread::spawn(move || clone.result_type())
        .join()
        .unwrap();
}

#[test]
fn conjunctions_of_equalities_short_circuit() {
    let rule = r#"s == "tcp" && s == "tcp" && toLower(s) == "tcp""#;
    assert_eq!(eval(rule, json!({"s": "tcp"})), Ok(Value::Bool(true)));
    let mut m = Manifest::new();
    m.declare("a", ValueType::String).unwrap();
    m.declare("b", ValueType::String).unwrap();
    let e = Expression::compile(r#"a == "x" && b == "y""#, &m).unwrap();
    let bag = |j| bag_from_json(&m, &j).unwrap();
    assert_eq!(e.eval_bool(&bag(json!({"a": "q"}))), Ok(false));
    assert_eq!(e.eval_bool(&bag(json!({"a": "x", "b": "y"}))), Ok(true));
    assert_eq!(
        e.eval_bool(&bag(json!({"a": "x"}))),
        Err(EvalError::MissingAttribute { name: "b".into() })
    );
    assert_eq!(
        e.eval_bool(&bag(json!({"b": "y"}))),
        Err(EvalError::MissingAttribute { name: "a".into() })
    );
    let negated = Expression::compile(r#"a != "x" && b == "y""#, &m).unwrap();
    assert_eq!(negated.eval_bool(&bag(json!({"a": "x"}))), Ok(false));
}
