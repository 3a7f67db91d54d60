//! The compiled form: a tree of typed nodes with attribute ids resolved and constants built,
//! evaluated by matching on the node. A few fused nodes cover the shapes telemetry
//! configuration uses most (`attr | constant`, `map["key"]`, `attr == "text"`).

use std::borrow::Cow;
use std::sync::Arc;

use meshmeter_attributes::{AttrId, Bag, StringMap, Timestamp, Value, ValueType};
use regex::Regex;

use crate::error::{EvalError, Failure};
use crate::semantics;

/// An attribute reference resolved against the manifest.
#[derive(Clone, Debug)]
pub(crate) struct Attr {
    pub(crate) id: AttrId,
    pub(crate) name: Arc<str>,
    pub(crate) ty: ValueType,
}

/// Comparison operators with an ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// Built-in functions and methods, evaluated strictly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Ip,
    Timestamp,
    DnsName,
    Email,
    Uri,
    Match,
    Matches,
    StartsWith,
    EndsWith,
    ToLower,
    Size,
    EmptyStringMap,
}

#[derive(Debug)]
pub(crate) enum Node {
    Const(Value<'static>),
    Attr(Attr),
    /// `attr | constant`: the constant is never absent, so the whole never fails.
    AttrOr(Attr, Value<'static>),
    /// `attr["key"] | constant` (`source.labels["version"] | "unknown"`).
    AttrKeyOr {
        attr: Attr,
        key: Box<str>,
        fallback: Value<'static>,
    },
    Index {
        map: Box<Node>,
        key: Box<Node>,
    },
    IndexConst {
        map: Box<Node>,
        key: Box<str>,
    },
    Or(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    LOr(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Eq {
        left: Box<Node>,
        right: Box<Node>,
        negate: bool,
    },
    /// `a == "x" && b == "y" && ...` on STRING attributes: the usual rule `match`, checked in
    /// one loop, left to right, stopping at the first mismatch.
    AllEqAttrStr(Box<[(Attr, Box<str>)]>),
    /// `attr == "text"` on a STRING attribute.
    EqAttrStr {
        attr: Attr,
        text: Box<str>,
        negate: bool,
    },
    Cmp {
        op: CmpOp,
        left: Box<Node>,
        right: Box<Node>,
    },
    Add(Box<Node>, Box<Node>),
    Conditional(Box<[Node; 3]>),
    Call {
        func: Func,
        args: Box<[Node]>,
    },
    /// `"constant pattern".matches(text)`, the pattern compiled once.
    MatchesConst {
        regex: Regex,
        text: Box<Node>,
    },
}

type Result<T> = std::result::Result<T, EvalError>;

/// Bounds the memory one pattern compiled at evaluation time may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(crate) fn compile_regex(pattern: &str) -> std::result::Result<Regex, EvalError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| EvalError::InvalidRegex {
            failure: Failure::boxed(pattern, e.to_string()),
        })
}

#[inline]
fn lookup<'s, 'b>(a: &Attr, bag: &'s Bag<'b>) -> Result<Option<&'s Value<'b>>> {
    match bag.get(a.id) {
        Some(v) if v.value_type() == a.ty => Ok(Some(v)),
        Some(v) => Err(EvalError::WrongType {
            name: a.name.clone(),
            expected: a.ty,
            found: v.value_type(),
        }),
        None => Ok(None),
    }
}

/// A bag value as expressions see it: IPv4-mapped IPv6 addresses read as IPv4, as Go printed
/// them.
#[inline]
fn read<'s>(v: &'s Value<'_>) -> Value<'s> {
    match v {
        Value::IpAddress(ip) => Value::IpAddress(semantics::canonical_ip(*ip)),
        v => v.borrowed(),
    }
}

#[cold]
fn missing(a: &Attr) -> EvalError {
    EvalError::MissingAttribute {
        name: a.name.clone(),
    }
}

/// A key's lookup in a map value, borrowing from the bag when the map does.
fn index<'s>(map: Value<'s>, key: &str) -> Option<Value<'s>> {
    match map {
        Value::StringMap(Cow::Borrowed(m)) => m.get(key).map(|v| Value::String(Cow::Borrowed(v))),
        Value::StringMap(Cow::Owned(m)) => {
            m.get(key).map(|v| Value::String(Cow::Owned(v.to_owned())))
        }
        _ => None,
    }
}

fn text<'s>(v: Value<'s>) -> Cow<'s, str> {
    match v {
        Value::String(s) | Value::EmailAddress(s) | Value::DnsName(s) | Value::Uri(s) => s,
        other => Cow::Owned(other.to_string()),
    }
}

impl Node {
    /// Evaluates, treating an absent attribute or missing key as an error.
    pub(crate) fn eval<'s>(&'s self, bag: &'s Bag<'_>) -> Result<Value<'s>> {
        match self {
            Node::Const(v) => Ok(v.borrowed()),
            Node::Attr(a) => lookup(a, bag)?.map(read).ok_or_else(|| missing(a)),
            Node::AttrOr(a, fallback) => Ok(match lookup(a, bag)? {
                Some(v) => read(v),
                None => fallback.borrowed(),
            }),
            Node::AttrKeyOr {
                attr,
                key,
                fallback,
            } => match bag.get(attr.id) {
                Some(Value::StringMap(m)) => Ok(match m.get(key) {
                    Some(v) => Value::String(Cow::Borrowed(v)),
                    None => fallback.borrowed(),
                }),
                Some(_) => lookup(attr, bag).map(|_| fallback.borrowed()),
                None => Ok(fallback.borrowed()),
            },
            Node::And(..)
            | Node::LOr(..)
            | Node::Not(..)
            | Node::Eq { .. }
            | Node::EqAttrStr { .. }
            | Node::AllEqAttrStr(_)
            | Node::Cmp { .. }
            | Node::MatchesConst { .. } => self.eval_bool(bag).map(Value::Bool),
            _ => self.eval_other(bag),
        }
    }

    /// The less common nodes, kept out of [`Node::eval`] so that its frame stays small.
    #[inline(never)]
    fn eval_other<'s>(&'s self, bag: &'s Bag<'_>) -> Result<Value<'s>> {
        match self {
            Node::Index { map, key, .. } => match self.try_eval(bag)? {
                Some(v) => Ok(v),
                None => missing_key(bag, map, Some(key)),
            },
            Node::IndexConst { map, .. } => match self.try_eval(bag)? {
                Some(v) => Ok(v),
                None => missing_key(bag, map, None),
            },
            Node::Or(left, right) => match left.try_eval(bag)? {
                Some(v) => Ok(v),
                None => right.eval(bag),
            },
            Node::Add(left, right) => match (left.eval(bag)?, right.eval(bag)?) {
                (Value::Int64(a), Value::Int64(b)) => Ok(Value::Int64(a.wrapping_add(b))),
                (Value::Double(a), Value::Double(b)) => Ok(Value::Double(a + b)),
                (a, b) => {
                    // STRING, and the textual types Mixer also let `+` concatenate.
                    let ty = a.value_type();
                    let joined = Cow::Owned(format!("{}{}", text(a), text(b)));
                    Ok(match ty {
                        ValueType::DnsName => Value::DnsName(joined),
                        ValueType::EmailAddress => Value::EmailAddress(joined),
                        ValueType::Uri => Value::Uri(joined),
                        _ => Value::String(joined),
                    })
                }
            },
            Node::Conditional(parts) => {
                let [cond, yes, no] = &**parts;
                if cond.eval_bool(bag)? {
                    yes.eval(bag)
                } else {
                    no.eval(bag)
                }
            }
            Node::Call { func, args } => call(*func, args, bag),
            Node::Const(_)
            | Node::Attr(_)
            | Node::AttrOr(..)
            | Node::AttrKeyOr { .. }
            | Node::And(..)
            | Node::LOr(..)
            | Node::Not(..)
            | Node::Eq { .. }
            | Node::EqAttrStr { .. }
            | Node::AllEqAttrStr(_)
            | Node::Cmp { .. }
            | Node::MatchesConst { .. } => self.eval(bag),
        }
    }

    /// Evaluates where `|` may fall back: `Ok(None)` when an attribute is absent or a key
    /// missing. As in Mixer, only attributes, map lookups and nested `|` are tried this way;
    /// other sub-expressions (function arguments, operands) are strict.
    pub(crate) fn try_eval<'s>(&'s self, bag: &'s Bag<'_>) -> Result<Option<Value<'s>>> {
        match self {
            Node::Attr(a) => Ok(lookup(a, bag)?.map(read)),
            Node::IndexConst { map, key, .. } => Ok(map.try_eval(bag)?.and_then(|m| index(m, key))),
            Node::Index { map, key, .. } => {
                let Some(m) = map.try_eval(bag)? else {
                    return Ok(None);
                };
                let Some(k) = key.try_eval(bag)? else {
                    return Ok(None);
                };
                Ok(index(m, &text(k)))
            }
            Node::Or(left, right) => match left.try_eval(bag)? {
                Some(v) => Ok(Some(v)),
                None => right.try_eval(bag),
            },
            other => other.eval(bag).map(Some),
        }
    }

    /// Evaluates a BOOL node without building a [`Value`].
    pub(crate) fn eval_bool(&self, bag: &Bag<'_>) -> Result<bool> {
        match self {
            Node::And(l, r) => Ok(l.eval_bool(bag)? && r.eval_bool(bag)?),
            Node::LOr(l, r) => Ok(l.eval_bool(bag)? || r.eval_bool(bag)?),
            Node::Not(e) => Ok(!e.eval_bool(bag)?),
            Node::AllEqAttrStr(pairs) => {
                for (attr, text) in pairs.iter() {
                    match bag.get(attr.id) {
                        Some(Value::String(s)) if **s == **text => {}
                        Some(Value::String(_)) => return Ok(false),
                        Some(_) => return lookup(attr, bag).map(|_| false),
                        None => return Err(missing(attr)),
                    }
                }
                Ok(true)
            }
            // One tag check instead of `lookup`'s type check plus a text extraction.
            Node::EqAttrStr { attr, text, negate } => match bag.get(attr.id) {
                Some(Value::String(s)) => Ok((**s == **text) != *negate),
                Some(_) => lookup(attr, bag).map(|_| false),
                None => Err(missing(attr)),
            },
            _ => self.eval_bool_other(bag),
        }
    }

    #[inline(never)]
    fn eval_bool_other(&self, bag: &Bag<'_>) -> Result<bool> {
        match self {
            Node::Eq {
                left,
                right,
                negate,
            } => Ok(equal(&left.eval(bag)?, &right.eval(bag)?)? != *negate),
            Node::Cmp { op, left, right } => {
                let ord = order(&left.eval(bag)?, &right.eval(bag)?);
                Ok(match (op, ord) {
                    (_, None) => false,
                    (CmpOp::Lt, Some(o)) => o.is_lt(),
                    (CmpOp::Le, Some(o)) => o.is_le(),
                    (CmpOp::Gt, Some(o)) => o.is_gt(),
                    (CmpOp::Ge, Some(o)) => o.is_ge(),
                })
            }
            Node::MatchesConst { regex, text } => match text.eval(bag)? {
                Value::String(s) => Ok(regex.is_match(&s)),
                _ => Ok(false),
            },
            other => match other.eval(bag)? {
                Value::Bool(b) => Ok(b),
                // The checker only lets BOOL nodes here; a non-bool can only come from a bag
                // value of the wrong type, which `lookup` already reports.
                _ => Ok(false),
            },
        }
    }
}

/// A lookup outside `|` that found nothing: an absent map or key attribute is an error, but
/// a missing key reads as the empty string (Mixer's `NLookup`; its conformance table pins
/// `match(m["absent"], "x*")` to `false`, not to an error).
fn missing_key<'s>(bag: &'s Bag<'_>, map: &'s Node, key: Option<&'s Node>) -> Result<Value<'s>> {
    map.eval(bag)?;
    if let Some(k) = key {
        k.eval(bag)?;
    }
    Ok(Value::String(Cow::Borrowed("")))
}

fn order(a: &Value<'_>, b: &Value<'_>) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::String(a), Value::String(b))
        | (Value::DnsName(a), Value::DnsName(b))
        | (Value::EmailAddress(a), Value::EmailAddress(b))
        | (Value::Uri(a), Value::Uri(b)) => Some(a.cmp(b)),
        (Value::Int64(a), Value::Int64(b)) => Some(a.cmp(b)),
        (Value::Double(a), Value::Double(b)) => a.partial_cmp(b),
        (Value::Timestamp(a), Value::Timestamp(b)) => Some(a.cmp(b)),
        (Value::Duration(a), Value::Duration(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// Equality by meaning (see [`crate::semantics`]).
#[inline(never)]
pub(crate) fn equal<'a>(a: &Value<'a>, b: &Value<'a>) -> Result<bool> {
    let invalid = |ty: ValueType| {
        move |(text, reason): (String, String)| EvalError::InvalidValue {
            ty,
            failure: Failure::boxed(text, reason),
        }
    };
    Ok(match (a, b) {
        (Value::IpAddress(a), Value::IpAddress(b)) => semantics::ip_equal(*a, *b),
        (Value::DnsName(a), Value::DnsName(b)) => semantics::dns_equal(a, b),
        (Value::EmailAddress(a), Value::EmailAddress(b)) => {
            semantics::email_equal(a, b).map_err(invalid(ValueType::EmailAddress))?
        }
        (Value::Uri(a), Value::Uri(b)) => {
            semantics::uri_equal(a, b).map_err(invalid(ValueType::Uri))?
        }
        (a, b) => a == b,
    })
}

#[cold]
fn conversion(function: &'static str, text: &str, reason: impl Into<String>) -> EvalError {
    EvalError::Conversion {
        function,
        failure: Failure::boxed(text, reason),
    }
}

#[inline(never)]
fn call<'s>(func: Func, args: &'s [Node], bag: &'s Bag<'_>) -> Result<Value<'s>> {
    let arg = |i: usize| -> Result<Cow<'s, str>> {
        match args.get(i) {
            Some(n) => Ok(text(n.eval(bag)?)),
            None => Ok(Cow::Borrowed("")),
        }
    };
    Ok(match func {
        Func::Ip => {
            let s = arg(0)?;
            Value::IpAddress(
                semantics::parse_ip(&s).ok_or_else(|| conversion("ip", &s, "not an IP address"))?,
            )
        }
        Func::Timestamp => {
            let s = arg(0)?;
            Value::Timestamp(s.parse::<Timestamp>().map_err(|_| {
                conversion(
                    "timestamp",
                    &s,
                    "not an RFC 3339 timestamp such as 2006-01-02T15:04:05Z",
                )
            })?)
        }
        Func::DnsName => {
            let s = arg(0)?;
            semantics::validate_dns_name(&s).map_err(|e| conversion("dnsName", &s, e))?;
            Value::DnsName(s)
        }
        Func::Email => {
            let s = arg(0)?;
            semantics::parse_email(&s).map_err(|e| conversion("email", &s, e))?;
            Value::EmailAddress(s)
        }
        Func::Uri => {
            let s = arg(0)?;
            semantics::parse_uri(&s).map_err(|e| conversion("uri", &s, e))?;
            Value::Uri(s)
        }
        Func::Match => Value::Bool(semantics::glob_match(&arg(0)?, &arg(1)?)),
        Func::Matches => {
            let (pattern, s) = (arg(0)?, arg(1)?);
            Value::Bool(compile_regex(&pattern)?.is_match(&s))
        }
        Func::StartsWith => Value::Bool(arg(0)?.starts_with(&*arg(1)?)),
        Func::EndsWith => Value::Bool(arg(0)?.ends_with(&*arg(1)?)),
        Func::ToLower => {
            let s = arg(0)?;
            if s.chars().any(char::is_uppercase) {
                Value::String(Cow::Owned(s.to_lowercase()))
            } else {
                Value::String(s)
            }
        }
        Func::Size => Value::Int64(i64::try_from(arg(0)?.len()).unwrap_or(i64::MAX)),
        Func::EmptyStringMap => Value::StringMap(Cow::Owned(StringMap::new())),
    })
}
