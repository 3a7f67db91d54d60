//! Golden tests of rendered diagnostics: code, message, the expression, the caret line and the
//! hint, exactly as a user sees them.

use meshmeter_attributes::{Bag, Manifest, Value};
use meshmeter_expr::{Expression, MAX_DEPTH};

fn render(src: &str) -> String {
    let err = Expression::compile(src, &Manifest::istio()).unwrap_err();
    err.render(src)
}

#[test]
fn unknown_attribute_suggests_the_closest_name() {
    assert_eq!(
        render("conection.sent.bytes | 0"),
        "error[E101]: unknown attribute 'conection.sent.bytes'\n\
         \x20 | conection.sent.bytes | 0\n\
         \x20 | ^^^^^^^^^^^^^^^^^^^^\n\
         \x20 = hint: did you mean 'connection.sent.bytes'?\n"
    );
}

#[test]
fn fallback_of_another_type() {
    assert_eq!(
        render(r#"connection.sent.bytes | "unknown""#),
        "error[E102]: '|' needs both sides of one type, found INT64 and STRING\n\
         \x20 | connection.sent.bytes | \"unknown\"\n\
         \x20 |                         ^^^^^^^^^\n\
         \x20 = hint: the fallback after '|' must have the type of the value before it\n"
    );
}

#[test]
fn comparing_typed_values_with_text() {
    assert_eq!(
        render(r#"source.ip == "10.0.0.1""#),
        "error[E102]: '==' needs both sides of one type, found IP_ADDRESS and STRING\n\
         \x20 | source.ip == \"10.0.0.1\"\n\
         \x20 |              ^^^^^^^^^^\n\
         \x20 = hint: convert the text with ip(...) to compare it as IP_ADDRESS\n"
    );
}

#[test]
fn assignment_instead_of_equality() {
    assert_eq!(
        render(r#"context.protocol = "tcp""#),
        "error[E004]: expected '==' or the end of the expression, found '='\n\
         \x20 | context.protocol = \"tcp\"\n\
         \x20 |                  ^\n\
         \x20 = hint: use '==' to compare\n"
    );
}

#[test]
fn unsupported_operator_and_functions() {
    let err = Expression::compile("connection.sent.bytes - 1", &Manifest::istio()).unwrap_err();
    assert_eq!((err.code(), err.span()), ("E103", 22..23));
    assert_eq!(
        err.hint().unwrap(),
        "Mixer's language has no subtraction or negation"
    );

    let err = Expression::compile(r#"lower("A")"#, &Manifest::istio()).unwrap_err();
    assert_eq!(
        (err.code(), err.span(), err.message()),
        ("E104", 0..5, "unknown function 'lower'".into())
    );

    let err = Expression::compile(r#"matches("a")"#, &Manifest::istio()).unwrap_err();
    assert_eq!(err.code(), "E107");
    assert_eq!(
        err.message(),
        "matches() is a method: call it on a value, as in x.matches(y)"
    );

    let err = Expression::compile("size()", &Manifest::istio()).unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        ("E105", "size() takes 1 argument, found 0".into())
    );

    let err = Expression::compile("ip(destination.port)", &Manifest::istio()).unwrap_err();
    assert_eq!((err.code(), err.span()), ("E106", 3..19));
    assert_eq!(
        err.message(),
        "argument 1 of ip() must be STRING, found INT64"
    );
}

#[test]
fn spans_are_byte_offsets_in_multibyte_text() {
    let src = r#""é" == sourc.uid"#;
    let err = Expression::compile(src, &Manifest::istio()).unwrap_err();
    assert_eq!(err.span(), 8..17);
    assert_eq!(&src[err.span()], "sourc.uid");
    assert_eq!(
        err.render(src),
        "error[E101]: unknown attribute 'sourc.uid'\n\
         \x20 | \"é\" == sourc.uid\n\
         \x20 |        ^^^^^^^^^\n\
         \x20 = hint: did you mean 'source.uid'?\n"
    );
}

#[test]
fn nesting_limit() {
    let src = format!("{}true", "!".repeat(MAX_DEPTH));
    let err = Expression::compile(&src, &Manifest::istio()).unwrap_err();
    assert_eq!(err.code(), "E005");
    assert_eq!(err.message(), "expression nests deeper than 64 levels");
}

#[test]
fn evaluation_errors_name_what_failed() {
    let m = Manifest::istio();
    let bag = Bag::new(&m);
    let e = Expression::compile(r#"source.labels["app"] == "x""#, &m).unwrap();
    assert_eq!(
        e.eval(&bag).unwrap_err().to_string(),
        "attribute 'source.labels' is absent"
    );
    let e = Expression::compile(r#"ip("10.1.12")"#, &m).unwrap();
    assert_eq!(
        e.eval(&bag).unwrap_err().to_string(),
        "ip(\"10.1.12\"): not an IP address"
    );
    let mut bag = Bag::new(&m);
    bag.set(m.id("source.uid").unwrap(), Value::Int64(3));
    let e = Expression::compile(r#"source.uid | "x""#, &m).unwrap();
    assert_eq!(
        e.eval(&bag).unwrap_err().to_string(),
        "attribute 'source.uid' should be STRING, but the bag holds a INT64"
    );
}
