//! The diagnostic codes of the traffic configuration. Problems of YAML and of fields in
//! general share the telemetry configuration's codes (`C....`), so one code means one thing
//! across meshmeter; problems only traffic objects can have are `N....`.

use meshmeter_config::syntax::{Sink, Span};
use meshmeter_config::{Diagnostic, Severity};

/// A code and the severity that goes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    Io,
    MissingField,
    WrongNodeType,
    InvalidEnum,
    BadHeader,
    BadNumber,
    DuplicateObject,
    BadDuration,
    UnknownApiVersion,
    BadPort,
    DuplicateSubset,
    BadWeight,
    WeightSum,
    BadSubnet,
    BadPercent,
    BadCount,
    BadHost,
    PolicyName,
    Unsupported,
    BadLabel,
    Ignored,
    UndefinedSubset,
    RoutesIgnored,
}

impl Code {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Code::Io => "C0004",
            Code::MissingField => "C0010",
            Code::WrongNodeType => "C0012",
            Code::InvalidEnum => "C0013",
            Code::BadHeader => "C0014",
            Code::BadNumber => "C0016",
            Code::DuplicateObject => "C0020",
            Code::BadDuration => "C0057",
            Code::UnknownApiVersion => "W0003",
            Code::BadPort => "N0001",
            Code::DuplicateSubset => "N0002",
            Code::BadWeight => "N0003",
            Code::WeightSum => "N0004",
            Code::BadSubnet => "N0005",
            Code::BadPercent => "N0006",
            Code::BadCount => "N0007",
            Code::BadHost => "N0008",
            Code::PolicyName => "N0009",
            Code::Unsupported => "N0010",
            Code::BadLabel => "N0011",
            Code::Ignored => "N0501",
            Code::UndefinedSubset => "N0502",
            Code::RoutesIgnored => "N0901",
        }
    }

    pub(crate) const fn severity(self) -> Severity {
        match self {
            Code::UnknownApiVersion | Code::Ignored | Code::UndefinedSubset => Severity::Warning,
            Code::RoutesIgnored => Severity::Info,
            _ => Severity::Error,
        }
    }
}

/// Reports `message` at `span` under `code`.
pub(crate) fn report<'d>(
    sink: &'d mut Sink<'_>,
    code: Code,
    span: Span,
    message: impl Into<String>,
) -> &'d mut Diagnostic {
    sink.report_raw(code.as_str(), code.severity(), span, message.into())
}
