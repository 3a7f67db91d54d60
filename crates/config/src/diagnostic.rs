//! Located, coded, rendered problems with a configuration.

use std::fmt;
use std::sync::Arc;

use crate::source::{Sources, Span};

/// How bad a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Something was skipped on purpose; nothing to fix.
    Info,
    /// Loaded, but probably not what was meant.
    Warning,
    /// The configuration cannot be used.
    Error,
}

impl Severity {
    /// The word printed before the code.
    pub const fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// The stable diagnostic codes of this crate. The table in the crate docs is the reference;
/// codes are never reused for another meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Code {
    YamlSyntax,
    DuplicateKey,
    UnsupportedYaml,
    Io,
    MissingField,
    UnknownField,
    WrongNodeType,
    InvalidEnum,
    BadHeader,
    UnknownTemplate,
    DuplicateObject,
    ExpressionType,
    UnknownHandler,
    UnknownInstance,
    IncompatibleInstance,
    BadReference,
    LabelMismatch,
    DuplicateMetric,
    BadMetricName,
    BadLabelName,
    BadBuckets,
    DuplicateLabel,
    UnroutedInstance,
    BadDuration,
    AttributeConflict,
    BadValueType,
    UnknownAttribute,
    NoManifest,
    BadNumber,
    BucketsIgnored,
    StringMetricValue,
    UnknownApiVersion,
    SkippedKind,
    SanitisedName,
    NotResolvedByIstio,
}

impl Code {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Code::YamlSyntax => "C0001",
            Code::DuplicateKey => "C0002",
            Code::UnsupportedYaml => "C0003",
            Code::Io => "C0004",
            Code::MissingField => "C0010",
            Code::UnknownField => "C0011",
            Code::WrongNodeType => "C0012",
            Code::InvalidEnum => "C0013",
            Code::BadHeader => "C0014",
            Code::UnknownTemplate => "C0015",
            Code::BadNumber => "C0016",
            Code::DuplicateObject => "C0020",
            Code::ExpressionType => "C0031",
            Code::UnknownHandler => "C0040",
            Code::UnknownInstance => "C0041",
            Code::IncompatibleInstance => "C0042",
            Code::BadReference => "C0043",
            Code::LabelMismatch => "C0050",
            Code::DuplicateMetric => "C0051",
            Code::BadMetricName => "C0052",
            Code::BadLabelName => "C0053",
            Code::BadBuckets => "C0054",
            Code::DuplicateLabel => "C0055",
            Code::UnroutedInstance => "C0056",
            Code::BadDuration => "C0057",
            Code::AttributeConflict => "C0060",
            Code::BadValueType => "C0061",
            Code::UnknownAttribute => "C0062",
            Code::NoManifest => "C0063",
            Code::BucketsIgnored => "W0001",
            Code::StringMetricValue => "W0002",
            Code::UnknownApiVersion => "W0003",
            Code::SanitisedName => "W0004",
            Code::NotResolvedByIstio => "W0005",
            Code::SkippedKind => "I0001",
        }
    }

    const fn severity(self) -> Severity {
        match self {
            Code::BucketsIgnored
            | Code::StringMetricValue
            | Code::UnknownApiVersion
            | Code::SanitisedName
            | Code::NotResolvedByIstio => Severity::Warning,
            Code::SkippedKind => Severity::Info,
            _ => Severity::Error,
        }
    }
}

/// One problem, located in a file, ready to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as given on the command line (or `<istio-defaults>` for the embedded config).
    pub file: Arc<str>,
    /// 1-based line; 0 when the problem is with the file as a whole (it could not be read).
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// Characters the caret line underlines (at least 1).
    pub width: u32,
    /// Stable code: `C....` for configuration errors, `W....` warnings, `I....` information, and
    /// the expression crate's own codes for expression syntax and type errors.
    pub code: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// What is wrong, in one sentence.
    pub message: String,
    /// How to fix it, when we can tell.
    pub hint: Option<String>,
    /// The text of the offending line, without its line ending.
    pub source_line: String,
}

impl Diagnostic {
    /// Whether this diagnostic makes the configuration unusable.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// Errors and warnings: `file:line:col: error[CODE]: message`, the source line as it is, a
    /// caret line under the span and `  = hint: ...`. Informational diagnostics are the first line only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // Not about a place in the file (it could not be read): no position, no excerpt.
            return write!(
                f,
                "{}: {}[{}]: {}",
                self.file,
                self.severity.label(),
                self.code,
                self.message
            );
        }
        write!(
            f,
            "{}:{}:{}: {}[{}]: {}",
            self.file,
            self.line,
            self.column,
            self.severity.label(),
            self.code,
            self.message
        )?;
        if self.severity == Severity::Info {
            return Ok(());
        }
        write!(f, "\n{}\n", self.source_line)?;
        // Tabs before the caret are copied so the caret lines up however tabs are rendered.
        for c in self
            .source_line
            .chars()
            .take(self.column.saturating_sub(1) as usize)
        {
            f.write_str(if c == '\t' { "\t" } else { " " })?;
        }
        f.write_str(&"^".repeat(self.width.max(1) as usize))?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every diagnostic of one load, in the order found. It is the error type of loading when
/// any of them is an error.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// All diagnostics, errors, warnings and informational ones.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }

    /// How many are errors.
    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    /// Whether any is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// The number of diagnostics.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds one at the end.
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    /// Orders diagnostics by file (in load order), line and column, so they read top to bottom
    /// whatever stage found them.
    pub(crate) fn sort(&mut self, file_order: impl Fn(&str) -> usize) {
        self.items
            .sort_by_key(|d| (file_order(&d.file), d.line, d.column));
    }
}

impl fmt::Display for Diagnostics {
    /// Every diagnostic, separated by blank lines, then a count of errors and warnings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            if d.severity == Severity::Info {
                writeln!(f, "{d}")?;
            } else {
                writeln!(f, "{d}\n")?;
            }
        }
        let errors = self.error_count();
        let warnings = self
            .items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count();
        write!(
            f,
            "{} error{}, {} warning{}",
            errors,
            if errors == 1 { "" } else { "s" },
            warnings,
            if warnings == 1 { "" } else { "s" }
        )
    }
}

impl FromIterator<Diagnostic> for Diagnostics {
    fn from_iter<I: IntoIterator<Item = Diagnostic>>(iter: I) -> Self {
        Self {
            items: iter.into_iter().collect(),
        }
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// Collects diagnostics while a load runs, materialising file names and source lines.
pub struct Sink<'s> {
    pub(crate) sources: &'s Sources,
    pub(crate) out: Diagnostics,
}

impl<'s> Sink<'s> {
    /// A sink for problems in `sources`.
    pub fn new(sources: &'s Sources) -> Self {
        Self {
            sources,
            out: Diagnostics::default(),
        }
    }

    /// Reports `message` at `span`; returns the diagnostic so a hint can be attached.
    pub(crate) fn report(
        &mut self,
        code: Code,
        span: Span,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.report_raw(code.as_str(), code.severity(), span, message.into())
    }

    /// Reports `message` at `span` with a code and severity of the caller's own (another
    /// crate's diagnostics); returns the diagnostic so a hint can be attached.
    pub fn report_raw(
        &mut self,
        code: &'static str,
        severity: Severity,
        span: Span,
        message: String,
    ) -> &mut Diagnostic {
        let file = self.sources.get(span.file);
        self.out.push(Diagnostic {
            file: file.name.clone(),
            line: span.line,
            column: span.col,
            width: span.width.max(1),
            code,
            severity,
            message,
            hint: None,
            source_line: file.line(span.line).to_owned(),
        });
        let last = self.out.items.len() - 1;
        &mut self.out.items[last]
    }

    /// Whether any error was reported.
    pub fn has_errors(&self) -> bool {
        self.out.has_errors()
    }

    /// Everything reported, in the order reported.
    pub fn finish(self) -> Diagnostics {
        self.out
    }
}

/// Attaches a hint to a just-reported diagnostic.
pub trait WithHint {
    /// Sets the hint.
    fn hint(&mut self, hint: impl Into<String>);
}

impl WithHint for Diagnostic {
    fn hint(&mut self, hint: impl Into<String>) {
        self.hint = Some(hint.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceFile;

    #[test]
    fn renders_with_caret_and_hint() {
        let mut sources = Sources::default();
        let f = sources.add(SourceFile::new("a.yaml", "spec:\n  vaule: x\n".into()));
        let mut sink = Sink::new(&sources);
        sink.report(
            Code::UnknownField,
            Span {
                file: f,
                line: 2,
                col: 3,
                width: 5,
            },
            "unknown field 'vaule'",
        )
        .hint("did you mean 'value'?");
        let text = sink.out.iter().next().unwrap().to_string();
        assert_eq!(
            text,
            "a.yaml:2:3: error[C0011]: unknown field 'vaule'\n  vaule: x\n  ^^^^^\n  = hint: did you mean 'value'?"
        );
    }
}
