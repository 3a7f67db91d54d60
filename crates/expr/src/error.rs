//! Compile-time diagnostics (with stable codes and spans) and evaluation errors.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use meshmeter_attributes::ValueType;

/// What is wrong with an expression, found before evaluation.
///
/// Codes are stable: E0xx are syntax errors, E1xx type errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// E001: a character that starts no token.
    #[error("illegal character {0:?}")]
    IllegalCharacter(char),
    /// E002: a string, raw string, rune literal or comment without its end.
    #[error("unterminated {what}")]
    Unterminated {
        /// What was left open.
        what: &'static str,
    },
    /// E003: a malformed or out-of-range literal.
    #[error("invalid literal: {reason}")]
    InvalidLiteral {
        /// Why it was rejected.
        reason: String,
    },
    /// E004: a token where another was needed.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the grammar wanted.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// E005: nesting deeper than the parser allows.
    #[error("expression nests deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// E006: Go syntax the language does not have (slices, composite literals, field access on
    /// values, ...).
    #[error("{what} is not part of the expression language")]
    Unsupported {
        /// The construct.
        what: String,
    },
    /// E101: an attribute no manifest declares.
    #[error("unknown attribute '{name}'")]
    UnknownAttribute {
        /// The name as written.
        name: String,
        /// The closest declared name.
        suggestion: Option<String>,
    },
    /// E102: a binary operator whose sides have different types.
    #[error("'{op}' needs both sides of one type, found {left} and {right}")]
    OperandTypes {
        /// The operator.
        op: &'static str,
        /// The left side's type.
        left: ValueType,
        /// The right side's type.
        right: ValueType,
    },
    /// E103: an operator that does not exist in the language, or not for this type.
    #[error("{}", match .ty { Some(t) => format!("'{op}' is not defined for {t}"), None => format!("operator '{op}' is not supported") })]
    UnsupportedOperator {
        /// The operator.
        op: &'static str,
        /// The operand type, when the operator exists for other types.
        ty: Option<ValueType>,
    },
    /// E104: a call of a function that does not exist.
    #[error("unknown function '{name}'")]
    UnknownFunction {
        /// The name as written.
        name: String,
    },
    /// E105: a call with too few or too many arguments.
    #[error("{name}() takes {expected} argument{}, found {found}", if *.expected == 1 { "" } else { "s" })]
    Arity {
        /// The function.
        name: &'static str,
        /// How many it takes.
        expected: usize,
        /// How many were given.
        found: usize,
    },
    /// E106: an argument, method receiver or map key of the wrong type.
    #[error("{what} must be {expected}, found {found}")]
    ArgumentType {
        /// `argument 2 of ip()`, `the receiver of matches()`, `the map key`, ...
        what: String,
        /// The type it needs.
        expected: ValueType,
        /// The type given.
        found: ValueType,
    },
    /// E107: a method called as a function (`matches("x")`) or a function as a method.
    #[error("{}", if *.method { format!("{name}() is a method: call it on a value, as in x.{name}(y)") } else { format!("{name}() is a function, not a method: call it as {name}(x)") })]
    CallStyle {
        /// The function.
        name: &'static str,
        /// Whether it is a method.
        method: bool,
    },
    /// E108: a constant `matches()` pattern that does not compile (bad syntax, or beyond the
    /// size limit); refused at load instead of failing on every bag.
    #[error("invalid regular expression {pattern:?}: {reason}")]
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// The regex compiler's complaint.
        reason: String,
    },
}

impl ErrorKind {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ErrorKind::IllegalCharacter(_) => "E001",
            ErrorKind::Unterminated { .. } => "E002",
            ErrorKind::InvalidLiteral { .. } => "E003",
            ErrorKind::Unexpected { .. } => "E004",
            ErrorKind::TooDeep { .. } => "E005",
            ErrorKind::Unsupported { .. } => "E006",
            ErrorKind::UnknownAttribute { .. } => "E101",
            ErrorKind::OperandTypes { .. } => "E102",
            ErrorKind::UnsupportedOperator { .. } => "E103",
            ErrorKind::UnknownFunction { .. } => "E104",
            ErrorKind::Arity { .. } => "E105",
            ErrorKind::ArgumentType { .. } => "E106",
            ErrorKind::CallStyle { .. } => "E107",
            ErrorKind::InvalidRegex { .. } => "E108",
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            ErrorKind::UnknownAttribute {
                suggestion: Some(s),
                ..
            } => Some(format!("did you mean '{s}'?")),
            ErrorKind::UnknownAttribute { .. } => {
                Some("attributes must be declared in an attributemanifest".into())
            }
            ErrorKind::OperandTypes { op, left, right } => {
                conversion_hint(*left, *right).or_else(|| {
                    (*op == "|").then(|| {
                        "the fallback after '|' must have the type of the value before it".into()
                    })
                })
            }
            ErrorKind::ArgumentType {
                expected, found, ..
            } => conversion_hint(*expected, *found),
            ErrorKind::UnsupportedOperator { op, ty: None } => Some(match *op {
                "-" => "Mixer's language has no subtraction or negation".into(),
                "=" => "use '==' to compare".into(),
                _ => "the operators are || && == != < <= > >= | + ! and m[k]".into(),
            }),
            ErrorKind::UnknownFunction { .. } => Some(
                "the functions are ip, timestamp, dnsName, email, uri, match, toLower, size, \
                 emptyStringMap, conditional and the methods matches, startsWith, endsWith"
                    .into(),
            ),
            ErrorKind::Unexpected { found, .. } if found == "'='" => {
                Some("use '==' to compare".into())
            }
            _ => None,
        }
    }
}

/// A hint for comparing a typed value with text: which conversion function to use.
fn conversion_hint(want: ValueType, have: ValueType) -> Option<String> {
    let func = match want {
        ValueType::IpAddress => "ip",
        ValueType::Timestamp => "timestamp",
        ValueType::DnsName => "dnsName",
        ValueType::EmailAddress => "email",
        ValueType::Uri => "uri",
        _ if have == ValueType::Duration && want == ValueType::String => {
            return Some(
                "a string literal that reads as a duration (\"10s\") is a DURATION constant".into(),
            )
        }
        _ => return None,
    };
    (have == ValueType::String)
        .then(|| format!("convert the text with {func}(...) to compare it as {want}"))
}

/// A syntax or type error; `span` is a byte range into the expression text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    kind: ErrorKind,
    span: Range<usize>,
}

impl CompileError {
    pub(crate) fn new(kind: ErrorKind, span: Range<usize>) -> Self {
        CompileError { kind, span }
    }

    /// What went wrong, as data.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The stable code, e.g. `E101` (see [`ErrorKind`] for the list).
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The offending bytes of the expression text.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// One line saying what is wrong (also the `Display` text).
    pub fn message(&self) -> String {
        self.kind.to_string()
    }

    /// A suggestion for fixing it, when there is one.
    pub fn hint(&self) -> Option<String> {
        self.kind.hint()
    }

    /// Multi-line rendering: the message, the expression, a caret line under the span, the
    /// hint.
    ///
    /// ```text
    /// error[E101]: unknown attribute 'conection.sent.bytes'
    ///   | conection.sent.bytes | 0
    ///   | ^^^^^^^^^^^^^^^^^^^^
    ///   = hint: did you mean 'connection.sent.bytes'?
    /// ```
    pub fn render(&self, source: &str) -> String {
        let mut out = format!("error[{}]: {}\n", self.code(), self.message());
        let start = floor_char_boundary(source, self.span.start);
        let end = floor_char_boundary(source, self.span.end.max(start));
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let line = &source[line_start..line_end];
        let pad = source[line_start..start].chars().count();
        let width = source[start..end.min(line_end)].chars().count().max(1);
        out.push_str(&format!("  | {line}\n"));
        out.push_str(&format!("  | {}{}\n", " ".repeat(pad), "^".repeat(width)));
        if let Some(hint) = self.hint() {
            out.push_str(&format!("  = hint: {hint}\n"));
        }
        out
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for CompileError {}

/// An evaluation failure. `|` falls back over absent attributes and missing map keys (which
/// are not errors there); everything else propagates. Outside `|`, a missing map key reads as
/// the empty string, as in Mixer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The bag lacks an attribute the expression needs.
    #[error("attribute '{name}' is absent")]
    MissingAttribute {
        /// The attribute.
        name: Arc<str>,
    },
    /// The bag holds a value of another type than the manifest declares.
    #[error("attribute '{name}' should be {expected}, but the bag holds a {found}")]
    WrongType {
        /// The attribute.
        name: Arc<str>,
        /// Its declared type.
        expected: ValueType,
        /// The type found.
        found: ValueType,
    },
    /// `ip()`, `timestamp()`, `dnsName()`, `email()` or `uri()` got text it cannot convert.
    #[error("{function}({:?}): {}", failure.text, failure.reason)]
    Conversion {
        /// The function.
        function: &'static str,
        /// The text given and why it failed.
        failure: Box<Failure>,
    },
    /// A value that cannot be compared by meaning (an email or URI attribute that does not
    /// parse).
    #[error("cannot compare {ty} value {:?}: {}", failure.text, failure.reason)]
    InvalidValue {
        /// Its type.
        ty: ValueType,
        /// Its text and why it does not parse.
        failure: Box<Failure>,
    },
    /// `pattern.matches(s)` with a pattern that is not a valid regular expression.
    #[error("invalid regular expression {:?}: {}", failure.text, failure.reason)]
    InvalidRegex {
        /// The pattern and the regex compiler's complaint.
        failure: Box<Failure>,
    },
}

/// Text that failed to parse, and why. Boxed inside [`EvalError`] so that evaluation results
/// stay small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The offending text.
    pub text: String,
    /// Why it was rejected.
    pub reason: String,
}

impl Failure {
    pub(crate) fn boxed(text: impl Into<String>, reason: impl Into<String>) -> Box<Failure> {
        Box::new(Failure {
            text: text.into(),
            reason: reason.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_points_at_the_span() {
        let err = CompileError::new(
            ErrorKind::UnknownAttribute {
                name: "conection.sent.bytes".into(),
                suggestion: Some("connection.sent.bytes".into()),
            },
            0..20,
        );
        assert_eq!(
            err.render("conection.sent.bytes | 0"),
            "error[E101]: unknown attribute 'conection.sent.bytes'\n  | conection.sent.bytes | 0\n  | ^^^^^^^^^^^^^^^^^^^^\n  = hint: did you mean 'connection.sent.bytes'?\n"
        );
        let err = CompileError::new(
            ErrorKind::OperandTypes {
                op: "|",
                left: ValueType::Int64,
                right: ValueType::String,
            },
            4..7,
        );
        assert_eq!(
            err.render("a | \"x\""),
            "error[E102]: '|' needs both sides of one type, found INT64 and STRING\n  | a | \"x\"\n  |     ^^^\n  = hint: the fallback after '|' must have the type of the value before it\n"
        );
    }
}
