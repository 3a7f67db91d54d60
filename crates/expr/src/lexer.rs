//! Go's tokens, as far as expressions need them, with exact byte spans.

use std::ops::Range;

use crate::error::{CompileError, ErrorKind};

/// One token of Go expression syntax.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    /// An integer literal, as written (Mixer reads it as decimal).
    Int(String),
    /// A floating-point literal, as written.
    Float(String),
    /// An interpreted, raw or rune literal, already unquoted.
    Str(String),
    /// An operator or punctuation mark.
    Op(&'static str),
    Eof,
}

/// A token and where it is.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) span: Range<usize>,
}

/// Longest first, so that `&&` wins over `&` and `&^` over `&`.
const OPERATORS: &[&str] = &[
    "&&", "||", "==", "!=", "<=", ">=", "<<", ">>", "&^", "<-", "...", ":=", "++", "--", "+", "-",
    "*", "/", "%", "&", "|", "^", "<", ">", "!", "(", ")", "[", "]", "{", "}", ",", ".", ":", ";",
    "=", "~",
];

/// Splits `src` into tokens; the last one is always [`Tok::Eof`].
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, CompileError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if src[i..].starts_with("//") {
            i = src[i..].find('\n').map_or(bytes.len(), |n| i + n);
            continue;
        }
        if src[i..].starts_with("/*") {
            match src[i + 2..].find("*/") {
                Some(n) => i += n + 4,
                None => {
                    return Err(CompileError::new(
                        ErrorKind::Unterminated { what: "comment" },
                        i..bytes.len(),
                    ))
                }
            }
            continue;
        }
        let start = i;
        let ch = src[i..].chars().next().unwrap_or('\0');
        let tok = if ch.is_alphabetic() || ch == '_' {
            let len = src[i..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(bytes.len() - i);
            i += len;
            Tok::Ident(src[start..i].to_owned())
        } else if c.is_ascii_digit()
            || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let (tok, len) = number(&src[i..]);
            i += len;
            tok
        } else if c == b'"' || c == b'\'' {
            let (text, len) = quoted(src, i)?;
            i += len;
            Tok::Str(text)
        } else if c == b'`' {
            match src[i + 1..].find('`') {
                Some(n) => {
                    // Go drops carriage returns from raw strings.
                    let text = src[i + 1..i + 1 + n].replace('\r', "");
                    i += n + 2;
                    Tok::Str(text)
                }
                None => {
                    return Err(CompileError::new(
                        ErrorKind::Unterminated { what: "raw string" },
                        i..bytes.len(),
                    ))
                }
            }
        } else if let Some(op) = OPERATORS.iter().find(|op| src[i..].starts_with(**op)) {
            i += op.len();
            Tok::Op(op)
        } else {
            return Err(CompileError::new(
                ErrorKind::IllegalCharacter(ch),
                i..i + ch.len_utf8(),
            ));
        };
        out.push(Token {
            tok,
            span: start..i,
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        span: bytes.len()..bytes.len(),
    });
    Ok(out)
}

/// Scans a Go number literal (decimal, hex, octal, binary, float, imaginary) and says how long it
/// is; whether its form is one Mixer accepts is decided when it becomes a constant.
fn number(s: &str) -> (Tok, usize) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut float = false;
    let hex = b.len() > 1 && b[0] == b'0' && matches!(b[1], b'x' | b'X');
    if hex || (b.len() > 1 && b[0] == b'0' && matches!(b[1], b'b' | b'B' | b'o' | b'O')) {
        i = 2;
    }
    while let Some(&c) = b.get(i) {
        let exp = if hex { b"pP" } else { b"eE" };
        if c.is_ascii_digit() || c == b'_' || (hex && c.is_ascii_hexdigit()) {
            i += 1;
        } else if c == b'.' && !float && b.get(i + 1) != Some(&b'.') {
            float = true;
            i += 1;
        } else if exp.contains(&c) {
            float = true;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() {
            // A letter glued to a number (`1i`, `12abc`) makes it one malformed literal.
            i += 1;
        } else {
            break;
        }
    }
    let text = s[..i].to_owned();
    (
        if float {
            Tok::Float(text)
        } else {
            Tok::Int(text)
        },
        i,
    )
}

/// Unquotes a Go interpreted string (`"…"`) or rune literal (`'…'`) starting at `start`.
fn quoted(src: &str, start: usize) -> Result<(String, usize), CompileError> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    let at = |off: usize| start + 1 + off;
    let unterminated = || {
        CompileError::new(
            ErrorKind::Unterminated {
                what: if quote == '"' {
                    "string"
                } else {
                    "rune literal"
                },
            },
            start..src.len(),
        )
    };
    while let Some((off, c)) = chars.next() {
        match c {
            '\n' => return Err(unterminated()),
            c if c == quote => {
                if quote == '\'' && out.chars().count() != 1 {
                    return Err(CompileError::new(
                        ErrorKind::InvalidLiteral {
                            reason: "a rune literal holds exactly one character".into(),
                        },
                        start..at(off) + 1,
                    ));
                }
                return Ok((out, off + 2));
            }
            '\\' => {
                let bad = |end: usize| {
                    CompileError::new(
                        ErrorKind::InvalidLiteral {
                            reason: "invalid escape sequence".into(),
                        },
                        at(off)..end.min(src.len()),
                    )
                };
                let Some((eoff, e)) = chars.next() else {
                    return Err(unterminated());
                };
                let simple = match e {
                    'a' => Some('\u{7}'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    'v' => Some('\u{b}'),
                    '\\' => Some('\\'),
                    '"' if quote == '"' => Some('"'),
                    '\'' if quote == '\'' => Some('\''),
                    _ => None,
                };
                if let Some(s) = simple {
                    out.push(s);
                    continue;
                }
                let (digits, radix) = match e {
                    'x' => (2, 16),
                    'u' => (4, 16),
                    'U' => (8, 16),
                    '0'..='7' => (3, 8),
                    _ => return Err(bad(at(eoff) + e.len_utf8())),
                };
                let mut text = String::new();
                if radix == 8 {
                    text.push(e);
                }
                while text.len() < digits {
                    match chars.next() {
                        Some((_, d)) if d.is_digit(radix) => text.push(d),
                        Some((doff, d)) => return Err(bad(at(doff) + d.len_utf8())),
                        None => return Err(unterminated()),
                    }
                }
                let value = u32::from_str_radix(&text, radix).unwrap_or(u32::MAX);
                let end = at(eoff) + 1 + digits - usize::from(radix == 8);
                if matches!(e, 'x' | '0'..='7') {
                    // A byte escape; in UTF-8 text only ASCII bytes stand on their own.
                    if value > 0x7f {
                        return Err(CompileError::new(
                            ErrorKind::InvalidLiteral {
                                reason: "byte escapes above \\x7f are not supported in text".into(),
                            },
                            at(off)..end,
                        ));
                    }
                }
                match char::from_u32(value) {
                    Some(ch) => out.push(ch),
                    None => return Err(bad(end)),
                }
            }
            c => out.push(c),
        }
    }
    Err(unterminated())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn literals_and_operators() {
        assert_eq!(
            toks(r#"a.b | "x\ty" == `r\n` && 1.5e3 != 'c'"#),
            vec![
                Tok::Ident("a".into()),
                Tok::Op("."),
                Tok::Ident("b".into()),
                Tok::Op("|"),
                Tok::Str("x\ty".into()),
                Tok::Op("=="),
                Tok::Str("r\\n".into()),
                Tok::Op("&&"),
                Tok::Float("1.5e3".into()),
                Tok::Op("!="),
                Tok::Str("c".into()),
                Tok::Eof
            ]
        );
        assert_eq!(toks(r#""\u00e9\101""#)[0], Tok::Str("éA".into()));
        assert_eq!(
            toks("0x1F 1i")[..2],
            [Tok::Int("0x1F".into()), Tok::Int("1i".into())]
        );
    }

    #[test]
    fn errors_have_spans() {
        assert_eq!(tokenize("a @").unwrap_err().span(), 2..3);
        assert_eq!(tokenize("\"abc").unwrap_err().code(), "E002");
        assert_eq!(tokenize(r#""\q""#).unwrap_err().span(), 1..3);
    }
}
