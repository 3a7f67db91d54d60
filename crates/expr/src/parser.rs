//! Precedence climbing over Go's binary operators, with a nesting limit so that no input can
//! exhaust the stack here or in the passes that walk the tree afterwards.

use std::ops::Range;

use crate::ast::{Expr, ExprKind};
use crate::error::{CompileError, ErrorKind};
use crate::lexer::{tokenize, Tok, Token};

/// The deepest tree the parser builds.
pub const MAX_DEPTH: usize = 64;

/// The parser's own recursion limit, counted in nested sub-expressions. Fully parenthesised
/// text (what the printer writes) nests at most two per tree level, so this admits every tree
/// of `MAX_DEPTH` while still bounding the stack.
const MAX_RECURSION: usize = 2 * MAX_DEPTH + 2;

const KEYWORDS: &[&str] = &[
    "break",
    "case",
    "chan",
    "const",
    "continue",
    "default",
    "defer",
    "else",
    "fallthrough",
    "for",
    "func",
    "go",
    "goto",
    "if",
    "import",
    "interface",
    "map",
    "package",
    "range",
    "return",
    "select",
    "struct",
    "switch",
    "type",
    "var",
];

/// Go's binary precedence, loosest 1 to tightest 5.
fn precedence(op: &str) -> Option<u8> {
    Some(match op {
        "||" => 1,
        "&&" => 2,
        "==" | "!=" | "<" | "<=" | ">" | ">=" => 3,
        "+" | "-" | "|" | "^" => 4,
        "*" | "/" | "%" | "<<" | ">>" | "&" | "&^" => 5,
        _ => return None,
    })
}

/// Parses `src` into a syntax tree.
pub fn parse(src: &str) -> Result<Expr, CompileError> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let e = p.expr(1)?;
    match &p.peek().tok {
        Tok::Eof => Ok(e),
        Tok::Op("=") => Err(p.unexpected("'==' or the end of the expression")),
        _ => Err(p.unexpected("an operator or the end of the expression")),
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Int(s) | Tok::Float(s) => format!("number {s}"),
        Tok::Str(_) => "a string".into(),
        Tok::Op(op) => format!("'{op}'"),
        Tok::Eof => "the end of the expression".into(),
    }
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek().tok, Tok::Op(o) if o == op)
    }

    fn unexpected(&self, expected: &'static str) -> CompileError {
        let t = self.peek();
        CompileError::new(
            ErrorKind::Unexpected {
                expected,
                found: describe(&t.tok),
            },
            t.span.clone(),
        )
    }

    fn expect_op(
        &mut self,
        op: &'static str,
        expected: &'static str,
    ) -> Result<Token, CompileError> {
        if self.is_op(op) {
            Ok(self.next())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn build(&self, kind: ExprKind, span: Range<usize>) -> Result<Expr, CompileError> {
        let e = Expr::new(kind, span);
        if e.height > MAX_DEPTH {
            return Err(CompileError::new(
                ErrorKind::TooDeep { limit: MAX_DEPTH },
                e.span,
            ));
        }
        Ok(e)
    }

    fn enter(&mut self) -> Result<(), CompileError> {
        self.depth += 1;
        if self.depth > MAX_RECURSION {
            return Err(CompileError::new(
                ErrorKind::TooDeep { limit: MAX_DEPTH },
                self.peek().span.clone(),
            ));
        }
        Ok(())
    }

    fn expr(&mut self, min_prec: u8) -> Result<Expr, CompileError> {
        self.enter()?;
        let mut left = self.unary()?;
        while let Tok::Op(op) = self.peek().tok {
            let Some(prec) = precedence(op) else { break };
            if prec < min_prec {
                break;
            }
            let op_span = self.next().span;
            let right = self.expr(prec + 1)?;
            let span = left.span.start..right.span.end;
            left = self.build(
                ExprKind::Binary {
                    op,
                    op_span,
                    left: Box::new(left),
                    right: Box::new(right),
                },
                span,
            )?;
        }
        self.depth -= 1;
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, CompileError> {
        if let Tok::Op(op @ ("!" | "-" | "+" | "^" | "*" | "&" | "<-")) = self.peek().tok {
            self.enter()?;
            let start = self.next().span.start;
            let expr = self.unary()?;
            self.depth -= 1;
            let span = start..expr.span.end;
            return self.build(
                ExprKind::Unary {
                    op,
                    expr: Box::new(expr),
                },
                span,
            );
        }
        self.postfix()
    }

    fn ident(&mut self) -> Result<(String, Range<usize>), CompileError> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Ident(name) if KEYWORDS.contains(&name.as_str()) => Err(CompileError::new(
                ErrorKind::Unsupported {
                    what: format!("the Go keyword '{name}'"),
                },
                t.span,
            )),
            Tok::Ident(name) => {
                self.next();
                Ok((name, t.span))
            }
            _ => Err(self.unexpected("a name")),
        }
    }

    /// A primary expression and its selectors, calls and indexes.
    ///
    /// Split into small functions so that each level of nesting costs little stack, even in
    /// unoptimised builds.
    fn postfix(&mut self) -> Result<Expr, CompileError> {
        // `bare`: `e` is a bare dotted name, which selectors extend and `(` calls.
        let (mut e, mut bare) = self.primary()?;
        while let Tok::Op(op) = self.peek().tok {
            (e, bare) = match op {
                "." => self.selector(e, bare)?,
                "(" => (self.call(e, bare)?, false),
                "[" => (self.index(finish_name(e, bare))?, false),
                "{" => return Err(self.unsupported("a composite literal")),
                _ => break,
            };
        }
        Ok(finish_name(e, bare))
    }

    fn unsupported(&self, what: &str) -> CompileError {
        CompileError::new(
            ErrorKind::Unsupported { what: what.into() },
            self.peek().span.clone(),
        )
    }

    fn primary(&mut self) -> Result<(Expr, bool), CompileError> {
        let span = self.peek().span.clone();
        let kind = match &self.peek().tok {
            Tok::Ident(_) => {
                let (name, span) = self.ident()?;
                return Ok((self.build(ExprKind::Attr(name), span)?, true));
            }
            Tok::Op("(") => return Ok((self.paren()?, false)),
            Tok::Int(text) => ExprKind::Int(int_literal(text, &span)?),
            Tok::Float(text) => ExprKind::Float(float_literal(text, &span)?),
            Tok::Str(s) => ExprKind::Str(s.clone()),
            _ => return Err(self.unexpected("an attribute, a literal or '('")),
        };
        self.next();
        Ok((self.build(kind, span)?, false))
    }

    fn paren(&mut self) -> Result<Expr, CompileError> {
        let open = self.next().span;
        let mut inner = self.expr(1)?;
        let close = self.expect_op(")", "')'")?.span;
        inner.span = open.start..close.end;
        Ok(inner)
    }

    /// `.name` extends a bare name; `.name(` calls a method on what came before.
    fn selector(&mut self, e: Expr, bare: bool) -> Result<(Expr, bool), CompileError> {
        self.next();
        if self.is_op("(") {
            return Err(self.unsupported("a type assertion"));
        }
        let (name, name_span) = self.ident()?;
        if self.is_op("(") {
            let receiver = finish_name(e, bare);
            let (args, end) = self.args()?;
            let span = receiver.span.start..end;
            let call = ExprKind::Call {
                name,
                name_span,
                receiver: Some(Box::new(receiver)),
                args,
            };
            return Ok((self.build(call, span)?, false));
        }
        match (e.kind, bare) {
            (ExprKind::Attr(mut base), true) => {
                base.push('.');
                base.push_str(&name);
                Ok((
                    Expr::new(ExprKind::Attr(base), e.span.start..name_span.end),
                    true,
                ))
            }
            _ => Err(CompileError::new(
                ErrorKind::Unsupported {
                    what: "field access on a value".into(),
                },
                e.span.start..name_span.end,
            )),
        }
    }

    /// `name(args)`: only a one-word bare name can be called.
    fn call(&mut self, e: Expr, bare: bool) -> Result<Expr, CompileError> {
        match e.kind {
            ExprKind::Attr(name) if bare && !name.contains('.') => {
                let name_span = e.span;
                let (args, end) = self.args()?;
                let span = name_span.start..end;
                let call = ExprKind::Call {
                    name,
                    name_span,
                    receiver: None,
                    args,
                };
                self.build(call, span)
            }
            _ => Err(CompileError::new(
                ErrorKind::Unsupported {
                    what: "calling a value".into(),
                },
                e.span.start..self.peek().span.end,
            )),
        }
    }

    fn index(&mut self, target: Expr) -> Result<Expr, CompileError> {
        self.next();
        let key = self.expr(1)?;
        if self.is_op(":") {
            return Err(self.unsupported("slicing"));
        }
        let close = self.expect_op("]", "']'")?.span;
        let span = target.span.start..close.end;
        let index = ExprKind::Index {
            target: Box::new(target),
            key: Box::new(key),
        };
        self.build(index, span)
    }

    /// `( args )` after a function name; returns the arguments and the end of `)`.
    fn args(&mut self) -> Result<(Vec<Expr>, usize), CompileError> {
        self.expect_op("(", "'('")?;
        let mut args = Vec::new();
        while !self.is_op(")") {
            args.push(self.expr(1)?);
            if self.is_op("...") {
                return Err(CompileError::new(
                    ErrorKind::Unsupported {
                        what: "a variadic argument".into(),
                    },
                    self.peek().span.clone(),
                ));
            }
            if !self.is_op(",") {
                break;
            }
            self.next();
        }
        let end = self.expect_op(")", "',' or ')'")?.span.end;
        Ok((args, end))
    }
}

/// A bare one-word name reading `true` or `false` (any letter case) is a boolean constant, as
/// in Mixer; every other name is an attribute.
fn finish_name(mut e: Expr, bare_name: bool) -> Expr {
    if bare_name {
        if let ExprKind::Attr(name) = &e.kind {
            if name.eq_ignore_ascii_case("true") {
                e.kind = ExprKind::Bool(true);
            } else if name.eq_ignore_ascii_case("false") {
                e.kind = ExprKind::Bool(false);
            }
        }
    }
    e
}

fn invalid(reason: String, span: &Range<usize>) -> CompileError {
    CompileError::new(ErrorKind::InvalidLiteral { reason }, span.clone())
}

/// Mixer reads integer literals as decimal, so hex, octal-prefixed, binary and underscored
/// forms are rejected rather than silently misread.
fn int_literal(text: &str, span: &Range<usize>) -> Result<i64, CompileError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            format!("'{text}' is not a decimal integer (the language has only decimal integers)"),
            span,
        ));
    }
    text.parse()
        .map_err(|_| invalid(format!("integer {text} is out of the INT64 range"), span))
}

fn float_literal(text: &str, span: &Range<usize>) -> Result<f64, CompileError> {
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    let value: Option<f64> = if plain { text.parse().ok() } else { None };
    match value {
        Some(v) if v.is_finite() => Ok(v),
        Some(_) => Err(invalid(
            format!("number {text} is out of the DOUBLE range"),
            span,
        )),
        None => Err(invalid(format!("'{text}' is not a decimal number"), span)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(src: &str) -> String {
        parse(src).unwrap().to_string()
    }

    #[test]
    fn go_precedence() {
        assert_eq!(round("a | b == c"), "((a | b) == c)");
        assert_eq!(round("a || b && c == d"), "(a || (b && (c == d)))");
        assert_eq!(round("x + y | z"), "((x + y) | z)");
        assert_eq!(round("!a && b"), "(!(a) && b)");
        assert_eq!(
            round(r#"source.labels["version"] | "unknown""#),
            r#"(source.labels["version"] | "unknown")"#
        );
    }

    #[test]
    fn calls_methods_and_bools() {
        assert_eq!(round(r#"as.matches(bs)"#), "as.matches(bs)");
        assert_eq!(round(r#""a".startsWith("b",)"#), r#""a".startsWith("b")"#);
        assert_eq!(round("TRUE || False"), "(true || false)");
        assert_eq!(round("true.x"), "true.x");
        assert_eq!(round("(a.b).c(d)"), "a.b.c(d)");
        assert_eq!(round("(1).f()"), "(1).f()");
        let e = parse("  a.b .c ").unwrap();
        assert_eq!(e.span, 2..8);
        assert_eq!(e.kind, ExprKind::Attr("a.b.c".into()));
    }

    #[test]
    fn syntax_errors() {
        let err = parse("a = 2").unwrap_err();
        assert_eq!((err.code(), err.span()), ("E004", 2..3));
        assert_eq!(parse("@23").unwrap_err().code(), "E001");
        assert_eq!(parse("(a).b").unwrap_err().code(), "E006");
        assert_eq!(parse("a[1:2]").unwrap_err().code(), "E006");
        assert_eq!(parse("0x10").unwrap_err().code(), "E003");
        assert_eq!(parse("a.type").unwrap_err().code(), "E006");
        assert_eq!(parse("").unwrap_err().code(), "E004");
        assert_eq!(parse("f(a").unwrap_err().code(), "E004");
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let deep = format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(parse(&deep).unwrap_err().code(), "E005");
        let long = vec!["a"; 100_000].join(" + ");
        assert_eq!(parse(&long).unwrap_err().code(), "E005");
        let bangs = format!("{}a", "!".repeat(100_000));
        assert_eq!(parse(&bangs).unwrap_err().code(), "E005");
        let ok = vec!["a"; MAX_DEPTH].join(" + ");
        assert_eq!(parse(&ok).unwrap().height(), MAX_DEPTH);
        // Redundant parentheses do not deepen the tree; the recursion bound still holds them.
        let parens = format!(
            "{}a{}",
            "(".repeat(2 * MAX_DEPTH),
            ")".repeat(2 * MAX_DEPTH)
        );
        assert_eq!(parse(&parens).unwrap().height(), 1);
        // The printer's fully parenthesised form of the deepest allowed tree parses again.
        let right = format!(
            "{}a{}",
            "a + (".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        let tree = parse(&right).unwrap();
        assert_eq!(tree.height(), MAX_DEPTH);
        assert_eq!(
            parse(&tree.to_string()).unwrap().to_string(),
            tree.to_string()
        );
    }
}
