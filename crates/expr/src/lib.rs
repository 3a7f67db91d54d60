//! Istio Mixer 1.1's attribute expression language: `connection.sent.bytes | 0`,
//! `source.labels["version"] | "unknown"`, `context.protocol == "tcp" && ...`.
//!
//! Text goes through a lexer and a precedence-climbing parser (Go's syntax and precedence) to
//! a syntax tree ([`ast`]), then a type checker against a [`Manifest`] that resolves attribute
//! names to ids and lowers the tree to a compiled program, evaluated against a [`Bag`]
//! without hashing names or allocating for the common shapes.
//!
//! ```
//! use meshmeter_attributes::{Bag, Manifest, Value};
//! use meshmeter_expr::Expression;
//!
//! let manifest = Manifest::istio();
//! let expr = Expression::compile(r#"source.labels["version"] | "unknown""#, &manifest).unwrap();
//! let bag = Bag::new(&manifest);
//! assert_eq!(expr.eval(&bag).unwrap(), Value::from("unknown"));
//!
//! let err = Expression::compile("conection.sent.bytes | 0", &manifest).unwrap_err();
//! assert_eq!(err.code(), "E101");
//! assert_eq!(err.hint().unwrap(), "did you mean 'connection.sent.bytes'?");
//! ```
//!
//! # Semantics
//! - `a | b` is `a`, or `b` when `a` is an absent attribute or a missing map key (directly,
//!   or inside `a`'s own map lookups and `|` chains). Errors inside function arguments and
//!   operands are not caught, as in Mixer.
//! - Outside `|`, a missing map key reads as the empty string (Mixer's `NLookup`; its table
//!   pins `match(m["absent"], "x*")` to `false`). An absent map attribute is an error.
//! - A string literal that reads as a Go duration (`"10s"`, `"0"`) is a DURATION constant.
//! - Equality of IP_ADDRESS, TIMESTAMP, DNS_NAME, EMAIL_ADDRESS and URI is by meaning; see
//!   the module notes in the source (`semantics.rs`).
//! - INT64 `+` wraps on overflow, as Go's did. `+` and ordering also work on the text of
//!   DNS_NAME, EMAIL_ADDRESS and URI values, as Mixer compiled them as strings.
//! - Integer literals are decimal only (Mixer parsed them with base 10); `true`/`false` may be
//!   written in any letter case.
//! - Nesting is limited to [`MAX_DEPTH`] levels (a chain of one operator counts a level per
//!   operand), so no input can exhaust the stack; deeper input is error E005.
//!
//! # Differences from Mixer 1.1 (deliberate)
//! - DURATION supports `==`, `!=`, `<`, `<=`, `>`, `>=` (Mixer: "not yet implemented").
//! - Functions given more arguments than they take are rejected (Mixer ignored the extra).
//! - Methods may be called on any value, e.g. `m["k"].startsWith("x")` (Mixer: only on
//!   attributes, literals, calls and parenthesised expressions).
//! - BYTES values compare with `==` by content.
//! - `(x == y) | z`: Mixer's code generator returned `z` here; the left value is used.
//!
//! # Error codes
//! E001 illegal character, E002 unterminated literal or comment, E003 invalid literal,
//! E004 unexpected token, E005 nesting too deep, E006 Go syntax outside the language,
//! E101 unknown attribute, E102 operands of different types, E103 unsupported operator,
//! E104 unknown function, E105 wrong number of arguments, E106 argument of the wrong type,
//! E107 method called as a function or the reverse.

#![warn(missing_docs)]

pub mod ast;
mod check;
mod error;
mod expression;
mod lexer;
mod parser;
mod program;
mod semantics;

pub use error::{CompileError, ErrorKind, EvalError, Failure};
pub use expression::Expression;
pub use parser::{parse, MAX_DEPTH};

#[doc(no_inline)]
pub use meshmeter_attributes::{AttrId, Bag, Manifest, Value, ValueType};
