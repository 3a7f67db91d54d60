//! The type checker: gives every node its static type against a manifest and lowers the tree
//! to the compiled form, resolving attribute names to ids and folding constant subtrees.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use meshmeter_attributes::{AttrId, Bag, Duration, Manifest, StringMap, Value, ValueType};

use crate::ast::{Expr, ExprKind};
use crate::error::{CompileError, ErrorKind, EvalError};
use crate::program::{compile_regex, Attr, CmpOp, Func, Node};

/// A parameter type: fixed, or the type variable `T` shared by the parameters that name it.
#[derive(Clone, Copy)]
enum Param {
    Is(ValueType),
    T,
}

struct Signature {
    name: &'static str,
    func: Option<Func>,
    /// The receiver type of a method; `None` for a plain function.
    receiver: Option<ValueType>,
    params: &'static [Param],
    /// `None`: the type `T` stands for.
    returns: Option<ValueType>,
}

const S: Param = Param::Is(ValueType::String);

const SIGNATURES: &[Signature] = &[
    sig("ip", Func::Ip, &[S], ValueType::IpAddress),
    sig("timestamp", Func::Timestamp, &[S], ValueType::Timestamp),
    sig("dnsName", Func::DnsName, &[S], ValueType::DnsName),
    sig("email", Func::Email, &[S], ValueType::EmailAddress),
    sig("uri", Func::Uri, &[S], ValueType::Uri),
    sig("match", Func::Match, &[S, S], ValueType::Bool),
    sig("toLower", Func::ToLower, &[S], ValueType::String),
    sig("size", Func::Size, &[S], ValueType::Int64),
    sig(
        "emptyStringMap",
        Func::EmptyStringMap,
        &[],
        ValueType::StringMap,
    ),
    method("matches", Func::Matches),
    method("startsWith", Func::StartsWith),
    method("endsWith", Func::EndsWith),
    Signature {
        name: "conditional",
        func: None,
        receiver: None,
        params: &[Param::Is(ValueType::Bool), Param::T, Param::T],
        returns: None,
    },
];

const fn sig(
    name: &'static str,
    func: Func,
    params: &'static [Param],
    returns: ValueType,
) -> Signature {
    Signature {
        name,
        func: Some(func),
        receiver: None,
        params,
        returns: Some(returns),
    }
}

const fn method(name: &'static str, func: Func) -> Signature {
    Signature {
        name,
        func: Some(func),
        receiver: Some(ValueType::String),
        params: &[S],
        returns: Some(ValueType::Bool),
    }
}

/// Walks the tree once; `attrs` collects the attributes read.
pub(crate) struct Checker<'m> {
    pub(crate) manifest: &'m Manifest,
    pub(crate) attrs: Vec<AttrId>,
}

fn err<T>(kind: ErrorKind, span: Range<usize>) -> Result<T, CompileError> {
    Err(CompileError::new(kind, span))
}

fn is_const(n: &Node) -> bool {
    matches!(n, Node::Const(_))
}

/// Evaluates a constant subtree now; an evaluation error is left for run time, so that it is
/// reported at the stage Mixer reported it.
fn fold(node: Node) -> Node {
    let empty = Bag::with_slots(0);
    let folded = match node.eval(&empty) {
        Ok(v) => Some(v.into_owned()),
        Err(_) => None,
    };
    match folded {
        Some(v) => Node::Const(v),
        None => node,
    }
}

impl Checker<'_> {
    pub(crate) fn check(&mut self, e: &Expr) -> Result<(Node, ValueType), CompileError> {
        match &e.kind {
            ExprKind::Int(v) => Ok((Node::Const(Value::Int64(*v)), ValueType::Int64)),
            ExprKind::Float(v) => Ok((Node::Const(Value::Double(*v)), ValueType::Double)),
            ExprKind::Bool(b) => Ok((Node::Const(Value::Bool(*b)), ValueType::Bool)),
            ExprKind::Str(s) => Ok(match s.parse::<Duration>() {
                // Mixer's rule: text that reads as a Go duration is a DURATION constant.
                Ok(d) => (Node::Const(Value::Duration(d)), ValueType::Duration),
                Err(_) => (
                    Node::Const(Value::String(Cow::Owned(s.clone()))),
                    ValueType::String,
                ),
            }),
            ExprKind::Attr(name) => {
                let Some((id, ty)) = self.manifest.lookup(name) else {
                    return err(
                        ErrorKind::UnknownAttribute {
                            name: name.clone(),
                            suggestion: self.manifest.suggest(name).map(str::to_owned),
                        },
                        e.span.clone(),
                    );
                };
                self.attrs.push(id);
                Ok((
                    Node::Attr(Attr {
                        id,
                        name: Arc::from(name.as_str()),
                        ty,
                    }),
                    ty,
                ))
            }
            ExprKind::Unary { op, expr } => {
                if *op != "!" {
                    return err(
                        ErrorKind::UnsupportedOperator { op, ty: None },
                        e.span.clone(),
                    );
                }
                let (n, t) = self.check(expr)?;
                if t != ValueType::Bool {
                    return err(
                        ErrorKind::UnsupportedOperator { op, ty: Some(t) },
                        expr.span.clone(),
                    );
                }
                Ok((fold_if(Node::Not(Box::new(n))), ValueType::Bool))
            }
            ExprKind::Binary {
                op,
                op_span,
                left,
                right,
            } => self.binary(op, op_span, left, right),
            ExprKind::Index { target, key } => {
                let (map, mt) = self.check(target)?;
                if mt != ValueType::StringMap {
                    return err(
                        ErrorKind::UnsupportedOperator {
                            op: "[]",
                            ty: Some(mt),
                        },
                        target.span.clone(),
                    );
                }
                let (k, kt) = self.check(key)?;
                if kt != ValueType::String {
                    return err(
                        ErrorKind::ArgumentType {
                            what: "a map key".into(),
                            expected: ValueType::String,
                            found: kt,
                        },
                        key.span.clone(),
                    );
                }
                let node = match k {
                    Node::Const(Value::String(s)) => Node::IndexConst {
                        map: Box::new(map),
                        key: s.into(),
                    },
                    k => Node::Index {
                        map: Box::new(map),
                        key: Box::new(k),
                    },
                };
                Ok((fold_if(node), ValueType::String))
            }
            ExprKind::Call {
                name,
                name_span,
                receiver,
                args,
            } => self.call(e, name, name_span, receiver.as_deref(), args),
        }
    }

    fn binary(
        &mut self,
        op: &'static str,
        op_span: &Range<usize>,
        left: &Expr,
        right: &Expr,
    ) -> Result<(Node, ValueType), CompileError> {
        let supported = matches!(
            op,
            "||" | "&&" | "|" | "==" | "!=" | "<" | "<=" | ">" | ">=" | "+"
        );
        if !supported {
            return err(
                ErrorKind::UnsupportedOperator { op, ty: None },
                op_span.clone(),
            );
        }
        let (l, lt) = self.check(left)?;
        let (r, rt) = self.check(right)?;
        if matches!(op, "||" | "&&") {
            for (t, span) in [(lt, &left.span), (rt, &right.span)] {
                if t != ValueType::Bool {
                    return err(
                        ErrorKind::UnsupportedOperator { op, ty: Some(t) },
                        span.clone(),
                    );
                }
            }
        } else if lt != rt {
            return err(
                ErrorKind::OperandTypes {
                    op,
                    left: lt,
                    right: rt,
                },
                right.span.clone(),
            );
        }
        let allowed = match op {
            "||" | "&&" | "|" => true,
            "==" | "!=" => lt != ValueType::StringMap,
            // Mixer compiled the textual types as strings, so `+` and ordering work on their
            // text.
            "+" => lt.is_textual() || matches!(lt, ValueType::Int64 | ValueType::Double),
            _ => {
                lt.is_textual()
                    || matches!(
                        lt,
                        ValueType::Int64
                            | ValueType::Double
                            | ValueType::Timestamp
                            | ValueType::Duration
                    )
            }
        };
        if !allowed {
            return err(
                ErrorKind::UnsupportedOperator { op, ty: Some(lt) },
                op_span.clone(),
            );
        }
        let (l, r) = (Box::new(l), Box::new(r));
        let node = match op {
            "||" => Node::LOr(l, r),
            "&&" => match (eq_pairs(*l), eq_pairs(*r)) {
                (Ok(mut a), Ok(b)) => {
                    a.extend(b);
                    Node::AllEqAttrStr(a.into())
                }
                (l, r) => Node::And(Box::new(unpairs(l)), Box::new(unpairs(r))),
            },
            "|" => match (*l, *r) {
                // A constant always has a value: the right side is never needed.
                (c @ Node::Const(_), _) => c,
                (Node::Attr(a), Node::Const(c)) => Node::AttrOr(a, c),
                (Node::IndexConst { map, key }, Node::Const(fallback))
                    if matches!(*map, Node::Attr(_)) =>
                {
                    match *map {
                        Node::Attr(attr) => Node::AttrKeyOr {
                            attr,
                            key,
                            fallback,
                        },
                        map => Node::Or(
                            Box::new(Node::IndexConst {
                                map: Box::new(map),
                                key,
                            }),
                            Box::new(Node::Const(fallback)),
                        ),
                    }
                }
                (l, r) => Node::Or(Box::new(l), Box::new(r)),
            },
            "==" | "!=" => {
                let negate = op == "!=";
                match (*l, *r) {
                    (Node::Attr(a), Node::Const(Value::String(s)))
                    | (Node::Const(Value::String(s)), Node::Attr(a))
                        if a.ty == ValueType::String =>
                    {
                        Node::EqAttrStr {
                            attr: a,
                            text: s.into(),
                            negate,
                        }
                    }
                    (l, r) => Node::Eq {
                        left: Box::new(l),
                        right: Box::new(r),
                        negate,
                    },
                }
            }
            "+" => Node::Add(l, r),
            _ => Node::Cmp {
                op: match op {
                    "<" => CmpOp::Lt,
                    "<=" => CmpOp::Le,
                    ">" => CmpOp::Gt,
                    _ => CmpOp::Ge,
                },
                left: l,
                right: r,
            },
        };
        let ty = match op {
            "|" | "+" => lt,
            _ => ValueType::Bool,
        };
        Ok((fold_if(node), ty))
    }

    fn call(
        &mut self,
        e: &Expr,
        name: &str,
        name_span: &Range<usize>,
        receiver: Option<&Expr>,
        args: &[Expr],
    ) -> Result<(Node, ValueType), CompileError> {
        let Some(sig) = SIGNATURES.iter().find(|s| s.name == name) else {
            return err(
                ErrorKind::UnknownFunction {
                    name: name.to_owned(),
                },
                name_span.clone(),
            );
        };
        if sig.receiver.is_some() != receiver.is_some() {
            return err(
                ErrorKind::CallStyle {
                    name: sig.name,
                    method: sig.receiver.is_some(),
                },
                e.span.clone(),
            );
        }
        if args.len() != sig.params.len() {
            return err(
                ErrorKind::Arity {
                    name: sig.name,
                    expected: sig.params.len(),
                    found: args.len(),
                },
                e.span.clone(),
            );
        }
        let mut nodes = Vec::with_capacity(args.len() + 1);
        if let (Some(r), Some(want)) = (receiver, sig.receiver) {
            let (n, t) = self.check(r)?;
            if t != want {
                return err(
                    ErrorKind::ArgumentType {
                        what: format!("the receiver of {}()", sig.name),
                        expected: want,
                        found: t,
                    },
                    r.span.clone(),
                );
            }
            nodes.push(n);
        }
        let mut type_var = None;
        for (i, (arg, param)) in args.iter().zip(sig.params).enumerate() {
            let (n, t) = self.check(arg)?;
            let want = match param {
                Param::Is(t) => Some(*t),
                Param::T => type_var,
            };
            match want {
                Some(w) if w != t => {
                    return err(
                        ErrorKind::ArgumentType {
                            what: format!("argument {} of {}()", i + 1, sig.name),
                            expected: w,
                            found: t,
                        },
                        arg.span.clone(),
                    )
                }
                None => type_var = Some(t),
                _ => {}
            }
            nodes.push(n);
        }
        let ty = sig.returns.or(type_var).unwrap_or(ValueType::String);
        let node = match sig.func {
            None => {
                let mut it = nodes.into_iter();
                match (it.next(), it.next(), it.next()) {
                    (Some(c), Some(a), Some(b)) => Node::Conditional(Box::new([c, a, b])),
                    // Arity was checked above.
                    _ => Node::Const(Value::Bool(false)),
                }
            }
            Some(Func::Matches) => {
                // A constant pattern is compiled once, here; one that does not compile is a
                // located error (else it would be compiled again, and fail, for every bag).
                let regex = match nodes.first() {
                    Some(Node::Const(Value::String(p))) => match compile_regex(p) {
                        Ok(regex) => Some(regex),
                        Err(e) => {
                            let span = receiver.map_or(0..0, |r| r.span.clone());
                            let reason = match e {
                                EvalError::InvalidRegex { failure } => failure.reason,
                                other => other.to_string(),
                            };
                            return err(
                                ErrorKind::InvalidRegex {
                                    pattern: p.to_string(),
                                    reason,
                                },
                                span,
                            );
                        }
                    },
                    _ => None,
                };
                match (regex, nodes.len()) {
                    (Some(regex), 2) => match nodes.pop() {
                        Some(text) => Node::MatchesConst {
                            regex,
                            text: Box::new(text),
                        },
                        None => Node::Const(Value::Bool(false)),
                    },
                    _ => Node::Call {
                        func: Func::Matches,
                        args: nodes.into(),
                    },
                }
            }
            Some(Func::EmptyStringMap) => {
                Node::Const(Value::StringMap(Cow::Owned(StringMap::new())))
            }
            Some(func) => Node::Call {
                func,
                args: nodes.into(),
            },
        };
        Ok((fold_if(node), ty))
    }
}

/// The `(attribute, text)` equalities a node tests, when it is nothing but such tests joined by
/// `&&`; otherwise the node back.
fn eq_pairs(node: Node) -> Result<Vec<(Attr, Box<str>)>, Node> {
    match node {
        Node::EqAttrStr {
            attr,
            text,
            negate: false,
        } => Ok(vec![(attr, text)]),
        Node::AllEqAttrStr(pairs) => Ok(pairs.into_vec()),
        other => Err(other),
    }
}

fn unpairs(pairs: Result<Vec<(Attr, Box<str>)>, Node>) -> Node {
    match pairs {
        Err(node) => node,
        Ok(mut one) if one.len() == 1 => match one.pop() {
            Some((attr, text)) => Node::EqAttrStr {
                attr,
                text,
                negate: false,
            },
            None => Node::Const(Value::Bool(true)),
        },
        Ok(many) => Node::AllEqAttrStr(many.into()),
    }
}

/// Folds `node` when all its children are constants.
fn fold_if(node: Node) -> Node {
    let all_const = match &node {
        Node::Not(n) => is_const(n),
        // Not folded: outside `|` a missing key reads as "", inside it falls back, and the
        // node cannot know which it will be.
        Node::Index { .. } | Node::IndexConst { .. } => false,
        Node::Or(l, r) | Node::And(l, r) | Node::LOr(l, r) | Node::Add(l, r) => {
            is_const(l) && is_const(r)
        }
        Node::Eq { left, right, .. } | Node::Cmp { left, right, .. } => {
            is_const(left) && is_const(right)
        }
        Node::Conditional(parts) => parts.iter().all(is_const),
        Node::Call { args, .. } => args.iter().all(is_const),
        Node::MatchesConst { text, .. } => is_const(text),
        Node::Const(_)
        | Node::Attr(_)
        | Node::AttrOr(..)
        | Node::AttrKeyOr { .. }
        | Node::EqAttrStr { .. }
        | Node::AllEqAttrStr(_) => false,
    };
    if all_const {
        fold(node)
    } else {
        node
    }
}
