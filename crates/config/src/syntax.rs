//! The YAML-with-positions machinery, for other readers of Kubernetes-style configuration
//! (`meshmeter-netconfig` reads Istio's traffic objects with it): files and their lines, a
//! YAML tree that remembers where every key and value is, mappings read against a schema in
//! both spellings Istio accepted (with "did you mean" hints), and a sink that turns problems
//! into rendered [`Diagnostic`](crate::Diagnostic)s.
//!
//! The codes of problems found here are the telemetry configuration's (C0001 YAML syntax,
//! C0002 duplicate key, C0003 unsupported YAML, C0011 unknown field, C0012 wrong kind of
//! value, C0013 value not in an enumeration, C0016 not a number); a reader adds its own
//! codes with [`Sink::report_raw`].
//!
//! ```
//! use meshmeter_config::syntax::{self, fields, SourceFile, Sources, Sink};
//!
//! let mut sources = Sources::default();
//! let id = sources.add(SourceFile::new("a.yaml", "spec:\n  hots: x\n".into()));
//! let parsed = syntax::parse(sources.get(id), id);
//! let mut sink = Sink::new(&sources);
//! syntax::report_problems(&parsed, &mut sink);
//! let spec = parsed.documents[0].get("spec").unwrap();
//! let f = fields::read(spec, "the spec", &["host"], &mut sink).unwrap();
//! assert!(f.get(0).is_none());
//! let d = sink.finish();
//! assert_eq!(d.iter().next().unwrap().to_string(), "a.yaml:2:3: error[C0011]: unknown field 'hots' in the spec\n  hots: x\n  ^^^^\n  = hint: did you mean 'host'?");
//! ```

pub use crate::diagnostic::{Sink, WithHint};
pub use crate::source::{FileId, SourceFile, Sources, Span};
pub use crate::yaml::{parse, Node, Parsed, Scalar, Segment, Style, Value, YamlProblem};

/// Mappings read against a list of known fields, and scalars read as text, numbers,
/// booleans or enumeration names, each reporting what is wrong.
pub mod fields {
    pub use crate::fields::{
        boolean, camel, count, edit_distance, enumeration, list, map, number, read, read_opt,
        suggest, text, Fields,
    };
}

/// Reports the problems found while parsing (syntax errors, duplicate keys, aliases) into
/// `sink`.
pub fn report_problems(parsed: &Parsed, sink: &mut Sink<'_>) {
    for problem in &parsed.problems {
        let d = sink.report(problem.code, problem.span, problem.message.clone());
        if let Some(h) = &problem.hint {
            d.hint(h.clone());
        }
    }
}
