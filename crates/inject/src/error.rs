//! Why injection refused its input.

/// An input injection cannot transform. Nothing is returned half-injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The stream is not valid YAML.
    #[error("line {line}, column {column}: invalid YAML: {message}")]
    Yaml {
        /// 1-based line in the whole stream.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// A problem inside one document of a stream.
    #[error("document {index} (line {line}): {source}")]
    InDocument {
        /// 1-based position of the document.
        index: usize,
        /// 1-based line where it starts.
        line: usize,
        /// The problem.
        source: Box<InjectError>,
    },
    /// A field of a workload has the wrong shape (e.g. `containers` is not a list).
    #[error("{kind} '{name}': field '{field}' must be {expected}")]
    Shape {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// The field, as a dotted path from the pod template.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// A `traffic.sidecar.istio.io/*` annotation that cannot be used.
    #[error("{kind} '{name}': annotation {annotation}: {value:?}: {reason}")]
    Annotation {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// The annotation's name.
        annotation: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The YAML emitter failed (a value it cannot represent).
    #[error("cannot write the injected document: {0}")]
    Emit(String),
}
