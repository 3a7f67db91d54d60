//! The syntax tree, with a byte span on every node, and its printer.
//!
//! The printer writes text that parses back to the same tree: binary expressions are fully
//! parenthesised and strings are quoted with Go's escapes.

use std::fmt;
use std::ops::Range;

/// One node of the syntax tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What the node is.
    pub kind: ExprKind,
    /// Where it is in the source, in bytes.
    pub span: Range<usize>,
    /// Nodes on the longest path down from this one (a leaf is 1).
    pub(crate) height: usize,
}

/// The kinds of node.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// An integer literal.
    Int(i64),
    /// A floating-point literal.
    Float(f64),
    /// A string, raw string or rune literal, unquoted. A string that reads as a Go duration
    /// becomes a DURATION constant when checked.
    Str(String),
    /// `true` or `false`, in any letter case.
    Bool(bool),
    /// An attribute, by its dotted name.
    Attr(String),
    /// A unary operator (`!`, and the Go operators the language rejects when checked).
    Unary {
        /// The operator.
        op: &'static str,
        /// The operand.
        expr: Box<Expr>,
    },
    /// A binary operator.
    Binary {
        /// The operator.
        op: &'static str,
        /// Where the operator is.
        op_span: Range<usize>,
        /// The left side.
        left: Box<Expr>,
        /// The right side.
        right: Box<Expr>,
    },
    /// `target[key]`.
    Index {
        /// The map.
        target: Box<Expr>,
        /// The key.
        key: Box<Expr>,
    },
    /// `name(args)` or `receiver.name(args)`.
    Call {
        /// The function or method name.
        name: String,
        /// Where the name is.
        name_span: Range<usize>,
        /// The value a method is called on.
        receiver: Option<Box<Expr>>,
        /// The arguments.
        args: Vec<Expr>,
    },
}

impl Expr {
    pub(crate) fn new(kind: ExprKind, span: Range<usize>) -> Self {
        let height = 1 + match &kind {
            ExprKind::Unary { expr, .. } => expr.height,
            ExprKind::Binary { left, right, .. } => left.height.max(right.height),
            ExprKind::Index { target, key } => target.height.max(key.height),
            ExprKind::Call { receiver, args, .. } => receiver
                .iter()
                .map(|r| r.height)
                .chain(args.iter().map(|a| a.height))
                .max()
                .unwrap_or(0),
            _ => 0,
        };
        Expr { kind, span, height }
    }

    /// The nodes on the longest path from this one down to a leaf.
    pub fn height(&self) -> usize {
        self.height
    }
}

/// Writes `s` as a Go interpreted string literal.
pub(crate) fn write_go_string(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    write!(f, "\\u{:04x}", c as u32)?
                } else {
                    write!(f, "\\U{:08x}", c as u32)?
                }
            }
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Whether `e` can be followed by `.name(`, `[` or `(` without parentheses and still mean
/// the same.
fn is_postfix_safe(e: &Expr) -> bool {
    matches!(
        e.kind,
        ExprKind::Attr(_) | ExprKind::Str(_) | ExprKind::Call { .. } | ExprKind::Index { .. }
    )
}

fn write_operand(f: &mut fmt::Formatter<'_>, e: &Expr) -> fmt::Result {
    if is_postfix_safe(e) {
        write!(f, "{e}")
    } else {
        write!(f, "({e})")
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Int(v) => write!(f, "{v}"),
            ExprKind::Float(v) => write!(f, "{v:?}"),
            ExprKind::Str(s) => write_go_string(f, s),
            ExprKind::Bool(b) => write!(f, "{b}"),
            ExprKind::Attr(name) => f.write_str(name),
            ExprKind::Unary { op, expr } => write!(f, "{op}({expr})"),
            ExprKind::Binary {
                op, left, right, ..
            } => write!(f, "({left} {op} {right})"),
            ExprKind::Index { target, key } => {
                write_operand(f, target)?;
                write!(f, "[{key}]")
            }
            ExprKind::Call {
                name,
                receiver,
                args,
                ..
            } => {
                if let Some(r) = receiver {
                    write_operand(f, r)?;
                    f.write_str(".")?;
                }
                write!(f, "{name}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}
