//! YAML into a small node tree that remembers where every key and value came from.
//!
//! serde cannot give per-field positions, so we build our own tree from yaml-rust2's event
//! parser. Aliases are rejected rather than expanded: Kubernetes manifests do not need them, and
//! expanding them is how a few bytes of YAML become gigabytes of tree.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diagnostic::Code;
use crate::source::{FileId, SourceFile, Span};

/// Deeper nesting than this is an error: telemetry config is at most ~8 levels deep, and the
/// tree is walked recursively.
const MAX_DEPTH: usize = 64;

/// How a scalar was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Unquoted.
    Plain,
    /// In single or double quotes.
    Quoted,
    /// A literal (`|`) or folded (`>`) block.
    Block,
}

/// A scalar with enough source information to map offsets inside it back to the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The value, escapes and folds resolved.
    pub text: String,
    /// How it was written.
    pub style: Style,
    /// Where the scalar's text lies in the file, when it can be told exactly: one segment for
    /// a plain or quoted scalar on one line without escapes, one per line for a plain scalar
    /// folded over several lines. Empty when the text is not a faithful copy of the source
    /// (escapes, block scalars), so offsets inside it cannot be mapped.
    pub segments: Vec<Segment>,
}

/// A piece of a scalar's text that is a verbatim copy of part of one source line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    /// Byte offset of the piece in the scalar's text.
    pub text_start: usize,
    /// Where the piece is in the file; `width` is its length in characters.
    pub span: Span,
}

/// A YAML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing at all.
    Null,
    /// Text (numbers and booleans too: readers interpret them).
    Scalar(Scalar),
    /// A list.
    Seq(Vec<Node>),
    /// Entries in source order; keys are unique (duplicates are reported and dropped).
    Map(Vec<(Node, Node)>),
    /// Something already reported (an alias, nesting too deep); readers skip it silently.
    Invalid,
}

/// A value and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts (a scalar's span covers it when it is on one line).
    pub span: Span,
}

impl Node {
    /// The scalar text, for plain/quoted/block scalars alike.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    /// The entries of a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// What kind of node this is, for "expected a mapping, found a list" messages.
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing",
            Value::Scalar(_) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Invalid => "an invalid value",
        }
    }
}

/// A problem found while reading YAML.
#[derive(Debug, PartialEq)]
pub struct YamlProblem {
    pub(crate) code: Code,
    pub(crate) span: Span,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

/// What parsing one file gives: its documents (each possibly `Null`) and its problems. When a
/// syntax error stops the parser, `complete` is false and the documents are those before it.
#[derive(Debug)]
pub struct Parsed {
    /// The documents, `---`-separated, in order.
    pub documents: Vec<Node>,
    /// Problems found ([`crate::syntax::report_problems`] reports them).
    pub problems: Vec<YamlProblem>,
    /// Whether the parser reached the end (no syntax error cut it short).
    pub complete: bool,
}

enum Frame {
    Seq(Span, Vec<Node>),
    Map(Span, Vec<(Node, Node)>, Option<Node>),
}

struct Builder<'a> {
    source: &'a SourceFile,
    file: FileId,
    stack: Vec<Frame>,
    /// Nesting levels being skipped because they are too deep.
    skipped: usize,
    documents: Vec<Node>,
    problems: Vec<YamlProblem>,
}

/// Parses every document of `source`.
pub fn parse(source: &SourceFile, file: FileId) -> Parsed {
    let mut b = Builder {
        source,
        file,
        stack: Vec::new(),
        skipped: 0,
        documents: Vec::new(),
        problems: Vec::new(),
    };
    let mut parser = Parser::new_from_str(&source.text);
    let complete = match parser.load(&mut b, true) {
        Ok(()) => true,
        Err(e) => {
            let span = b.span(e.marker());
            let hint = e.info().contains("quoted scalar").then(|| {
                "check that every quote opened here is closed on the same line".to_owned()
            });
            b.problems.push(YamlProblem {
                code: Code::YamlSyntax,
                span,
                message: format!("YAML syntax error: {}", e.info()),
                hint,
            });
            false
        }
    };
    Parsed {
        documents: b.documents,
        problems: b.problems,
        complete,
    }
}

impl Builder<'_> {
    fn span(&self, m: &Marker) -> Span {
        Span {
            file: self.file,
            line: u32::try_from(m.line()).unwrap_or(u32::MAX),
            col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
            width: 1,
        }
    }

    fn scalar(&self, text: String, style: TScalarStyle, span: Span) -> Node {
        let (style, skip) = match style {
            TScalarStyle::Plain => (Style::Plain, 0),
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => (Style::Quoted, 1),
            TScalarStyle::Literal | TScalarStyle::Folded => (Style::Block, usize::MAX),
        };
        if style == Style::Plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
            return Node {
                value: Value::Null,
                span,
            };
        }
        let segments = match style {
            Style::Block => Vec::new(),
            _ => self.segments(&text, span, skip),
        };
        let width = match segments.as_slice() {
            [one] => one.span.width + 2 * skip as u32,
            _ => 1,
        };
        Node {
            value: Value::Scalar(Scalar {
                text,
                style,
                segments,
            }),
            span: span.with_width(width),
        }
    }

    /// Maps `text` back onto the source starting at `span` (after `skip` quote characters).
    /// A plain scalar may continue on following lines: YAML folds each line break and the
    /// next line's indentation into one space, so each line is one segment.
    fn segments(&self, text: &str, span: Span, skip: usize) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut line_no = span.line;
        let mut consumed = 0;
        loop {
            let line = self.source.line(line_no);
            let (start_col, piece_start) = if line_no == span.line {
                let col = span.col as usize - 1 + skip;
                match line.char_indices().nth(col) {
                    Some((i, _)) => (col, i),
                    None => return Vec::new(),
                }
            } else {
                let trimmed = line.trim_start_matches([' ', '\t']);
                let i = line.len() - trimmed.len();
                (line[..i].chars().count(), i)
            };
            let rest = &text[consumed..];
            let source = &line[piece_start..];
            let Some(len) = common_prefix(rest, source) else {
                return Vec::new();
            };
            let piece = &rest[..len];
            out.push(Segment {
                text_start: consumed,
                span: Span {
                    file: span.file,
                    line: line_no,
                    col: u32::try_from(start_col + 1).unwrap_or(u32::MAX),
                    width: u32::try_from(piece.chars().count()).unwrap_or(u32::MAX),
                },
            });
            consumed += len;
            if consumed == text.len() {
                let after = &source[len..];
                let closed = skip == 0 || after.starts_with(['\'', '"']);
                return if closed { out } else { Vec::new() };
            }
            // Only a plain scalar folds like this; a fold is exactly one space in the text.
            if skip != 0 || !text[consumed..].starts_with(' ') || out.len() > 1000 {
                return Vec::new();
            }
            consumed += 1;
            line_no += 1;
        }
    }

    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    let duplicate = entries.iter().find(|(k, _)| same_key(k, &key));
                    if let Some((first, _)) = duplicate {
                        let first = first.span;
                        let name = key.as_str().unwrap_or("(complex key)").to_owned();
                        self.problems.push(YamlProblem {
                            code: Code::DuplicateKey,
                            span: key.span,
                            message: format!("duplicate key '{name}'"),
                            hint: Some(format!(
                                "'{name}' is already set at line {}; remove one of them",
                                first.line
                            )),
                        });
                    } else {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
}

/// The length of the longest prefix of `text` that `source` starts with, ending where the
/// source line's content ends (trailing blanks and a comment are not part of a scalar).
fn common_prefix(text: &str, source: &str) -> Option<usize> {
    let content = match source.find(" #") {
        Some(i) => &source[..i],
        None => source,
    }
    .trim_end_matches([' ', '\t']);
    if source.starts_with(text) {
        Some(text.len())
    } else if text.starts_with(content) {
        Some(content.len())
    } else {
        None
    }
}

fn same_key(a: &Node, b: &Node) -> bool {
    match (a.as_str(), b.as_str()) {
        (Some(x), Some(y)) => x == y,
        _ => a.value == b.value,
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let span = self.span(&mark);
        match ev {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if self.skipped > 0 || self.stack.len() >= MAX_DEPTH {
                    if self.skipped == 0 {
                        self.problems.push(YamlProblem {
                            code: Code::UnsupportedYaml,
                            span,
                            message: format!("nesting deeper than {MAX_DEPTH} levels"),
                            hint: None,
                        });
                    }
                    self.skipped += 1;
                } else if matches!(ev, Event::SequenceStart(..)) {
                    self.stack.push(Frame::Seq(span, Vec::new()));
                } else {
                    self.stack.push(Frame::Map(span, Vec::new(), None));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if self.skipped > 0 {
                    self.skipped -= 1;
                    if self.skipped == 0 {
                        self.push_node(Node {
                            value: Value::Invalid,
                            span,
                        });
                    }
                    return;
                }
                let node = match self.stack.pop() {
                    Some(Frame::Seq(span, items)) => Node {
                        value: Value::Seq(items),
                        span,
                    },
                    Some(Frame::Map(span, entries, _)) => Node {
                        value: Value::Map(entries),
                        span,
                    },
                    None => return,
                };
                self.push_node(node);
            }
            Event::Scalar(text, style, _, _) if self.skipped == 0 => {
                let node = self.scalar(text, style, span);
                self.push_node(node);
            }
            Event::Alias(_) if self.skipped == 0 => {
                self.problems.push(YamlProblem {
                    code: Code::UnsupportedYaml,
                    span,
                    message: "YAML aliases are not supported".into(),
                    hint: Some("write the value out in full".into()),
                });
                self.push_node(Node {
                    value: Value::Invalid,
                    span,
                });
            }
            _ => {}
        }
    }
}
