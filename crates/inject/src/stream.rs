//! Multi-document YAML streams: split on document boundaries, inject into each workload, and
//! re-emit only the documents that changed.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

use crate::pod::{inject_template, Outcome, Skip, Subject};
use crate::tree::{get, get_mut, path, path_mut, str_at};
use crate::{InjectError, InjectOptions};

/// One document of the input and what injection did to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocReport {
    /// 1-based position of the document in the stream.
    pub index: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    /// Its `kind`, when it has one.
    pub kind: Option<String>,
    /// Its `metadata.name`, when it has one.
    pub name: Option<String>,
    /// What happened to it (for a `List`, to its first workload that changed, else the first).
    pub outcome: Outcome,
}

/// The injected stream and a report per document.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The output: unchanged documents byte for byte, changed ones re-emitted.
    pub output: String,
    /// One entry per document (comment-only pieces are not documents).
    pub documents: Vec<DocReport>,
}

/// Injects the sidecar into every workload of a multi-document YAML stream.
///
/// Documents that are not changed (other kinds, opted-out or already injected workloads) are
/// copied byte for byte, comments included; a changed document is re-emitted from its parsed
/// form, so its comments are lost and its formatting normalised. Any error stops the whole
/// stream: nothing half-injected is returned.
pub fn inject_stream(input: &str, opts: &InjectOptions) -> Result<Injected, InjectError> {
    let mut output = String::with_capacity(input.len() * 2);
    let mut documents = Vec::new();
    for piece in split(input) {
        check_supported(piece.text).map_err(|(line, column, message)| InjectError::Yaml {
            line: piece.first_line + line.saturating_sub(1),
            column,
            message: message.to_string(),
        })?;
        let docs = YamlLoader::load_from_str(piece.text).map_err(|e| InjectError::Yaml {
            line: piece.first_line + e.marker().line().saturating_sub(1),
            column: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let mut docs = docs.into_iter();
        // Comments only, an empty document (a trailing `---`), or several documents run
        // together without `---` (after `...`): nothing we should rewrite.
        let (Some(mut doc), None) = (docs.next(), docs.next()) else {
            output.push_str(piece.text);
            continue;
        };
        if doc.is_null() {
            output.push_str(piece.text);
            continue;
        }
        let index = documents.len() + 1;
        let outcome = inject_object(&mut doc, opts).map_err(|e| InjectError::InDocument {
            index,
            line: piece.first_line,
            source: Box::new(e),
        })?;
        documents.push(DocReport {
            index,
            line: piece.first_line,
            kind: str_at(&doc, "kind").map(String::from),
            name: path(&doc, &["metadata", "name"])
                .and_then(Yaml::as_str)
                .map(String::from),
            outcome: outcome.clone(),
        });
        if outcome == Outcome::Injected {
            output.push_str(&emit(&doc)?);
        } else {
            output.push_str(piece.text);
        }
    }
    Ok(Injected { output, documents })
}

/// Emits one document, starting with `---` and ending with a newline.
pub(crate) fn emit(doc: &Yaml) -> Result<String, InjectError> {
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter.multiline_strings(true);
    emitter
        .dump(doc)
        .map_err(|e| InjectError::Emit(format!("{e:?}")))?;
    out.push('\n');
    Ok(out)
}

/// Injects into one parsed object: a workload, a `List` of objects, or anything else (left
/// alone). Returns [`Outcome::Injected`] when the object changed.
pub fn inject_object(obj: &mut Yaml, opts: &InjectOptions) -> Result<Outcome, InjectError> {
    let kind = str_at(obj, "kind").unwrap_or_default().to_string();
    let api_version = str_at(obj, "apiVersion").unwrap_or_default().to_string();
    let name = path(obj, &["metadata", "name"])
        .and_then(Yaml::as_str)
        .unwrap_or_default()
        .to_string();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    if kind == "List" && group.is_empty() {
        let mut first = None;
        if let Some(Yaml::Array(items)) = get_mut(obj, "items") {
            for item in items {
                let o = inject_object(item, opts)?;
                if o == Outcome::Injected || first.is_none() {
                    first = Some(o);
                }
            }
        }
        return Ok(first.unwrap_or(Outcome::Skipped(Skip::NotAWorkload)));
    }
    let template_path: &[&str] = match (group, kind.as_str()) {
        ("", "Pod") => &[],
        ("", "ReplicationController")
        | ("apps" | "extensions", "Deployment" | "DaemonSet" | "ReplicaSet")
        | ("apps", "StatefulSet")
        | ("batch", "Job") => &["spec", "template"],
        ("batch", "CronJob") => &["spec", "jobTemplate", "spec", "template"],
        _ => return Ok(Outcome::Skipped(Skip::NotAWorkload)),
    };
    let subject = Subject {
        kind: &kind,
        name: &name,
    };
    let workload = if kind == "Pod" {
        pod_workload(obj)
    } else {
        Some(name.clone()).filter(|n| !n.is_empty())
    };
    let outer_meta = if template_path.is_empty() {
        None
    } else {
        get(obj, "metadata").cloned()
    };
    let Some(template) = path_mut(obj, template_path) else {
        return Err(InjectError::Shape {
            kind: kind.clone(),
            name: name.clone(),
            field: template_path.join("."),
            expected: "a map (the pod template)",
        });
    };
    inject_template(
        template,
        outer_meta.as_ref(),
        &subject,
        workload.as_deref(),
        opts,
    )
}

/// The workload a pod belongs to, as Istio named it: its controller's name, with a
/// ReplicaSet's `-<pod-template-hash>` removed (the Deployment's name); the pod's own name (or
/// `generateName` stem) for a bare pod.
fn pod_workload(pod: &Yaml) -> Option<String> {
    let meta = get(pod, "metadata")?;
    if let Some(Yaml::Array(owners)) = get(meta, "ownerReferences") {
        let owner = owners
            .iter()
            .find(|o| get(o, "controller") == Some(&Yaml::Boolean(true)))
            .or(owners.first());
        if let Some(o) = owner {
            let name = str_at(o, "name")?;
            if str_at(o, "kind") == Some("ReplicaSet") {
                if let Some(hash) =
                    path(meta, &["labels", "pod-template-hash"]).and_then(Yaml::as_str)
                {
                    if let Some(stem) = name.strip_suffix(hash).and_then(|n| n.strip_suffix('-')) {
                        return Some(stem.to_string());
                    }
                }
            }
            return Some(name.to_string());
        }
    }
    str_at(meta, "name")
        .map(String::from)
        .or_else(|| str_at(meta, "generateName").map(|g| g.trim_end_matches('-').to_string()))
        .filter(|n| !n.is_empty())
}

/// A piece of the stream holding at most one document, with the line where it starts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Piece<'a> {
    pub(crate) text: &'a str,
    pub(crate) first_line: usize,
}

/// Splits a stream before every `---` line (a document marker at column 0, alone or followed
/// by a space). A marker cannot occur inside a document's content at column 0, so this is
/// exact; concatenating the pieces gives the input back.
pub(crate) fn split(input: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let (mut start, mut start_line, mut offset) = (0usize, 1usize, 0usize);
    for (i, line) in input.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let marker = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if marker && offset > start {
            pieces.push(Piece {
                text: &input[start..offset],
                first_line: start_line,
            });
            start = offset;
            start_line = i + 1;
        }
        offset += line.len();
    }
    if offset > start {
        pieces.push(Piece {
            text: &input[start..],
            first_line: start_line,
        });
    }
    pieces
}

/// Deepest nesting of maps and lists accepted (Kubernetes objects need about 15).
const MAX_DEPTH: usize = 64;

/// Refuses what the loader would expand or recurse on without bound: aliases (each one a copy,
/// so a few lines can stand for gigabytes) and nesting deeper than [`MAX_DEPTH`]. Kubernetes
/// manifests need neither. Returns the 1-based line and column within `text`.
fn check_supported(text: &str) -> Result<(), (usize, usize, &'static str)> {
    struct Check {
        depth: usize,
        problem: Option<(usize, usize, &'static str)>,
    }
    impl MarkedEventReceiver for Check {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            if self.problem.is_some() {
                return;
            }
            let at = |m: &'static str| Some((mark.line(), mark.col() + 1, m));
            match ev {
                Event::Alias(_) => self.problem = at("YAML aliases are not supported"),
                Event::SequenceStart(..) | Event::MappingStart(..) => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        self.problem = at("nesting deeper than 64 levels");
                    }
                }
                Event::SequenceEnd | Event::MappingEnd => self.depth -= 1,
                _ => {}
            }
        }
    }
    let mut check = Check {
        depth: 0,
        problem: None,
    };
    // Syntax errors are left to the loader, which reports them with their position.
    let _ = Parser::new_from_str(text).load(&mut check, true);
    check.problem.map_or(Ok(()), Err)
}
