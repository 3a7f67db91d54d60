//! Per-object acceptance: a bad object never blocks the good ones.
//!
//! [`Loader::load`] compiles every input. When some documents have errors, each error is
//! attributed to the document it points into (every check reports at a position inside the
//! object it blames: a rule's unresolved handler at the rule's `handler:` line, a duplicate at
//! the second definition), those documents are left out, the previous good version of each
//! (same kind family, namespace and name, from the last [`Loader::commit`]) is put in their
//! place, and the rest is compiled again, until what is left compiles. Leaving an object out
//! can make others fail (a rule naming a handler that is now absent): they are dropped in the
//! next round the same way. Each round removes at least one document, so this ends.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::compile::{compile_documents, DocInfo};
use crate::diagnostic::{Code, Diagnostic, Diagnostics, Severity};
use crate::load::{LoadOptions, ISTIO_DEFAULTS, ISTIO_DEFAULTS_NAME};
use crate::objects::family_of_kind;
use crate::snapshot::{Origin, Snapshot};
use crate::source::{FileId, SourceFile, Sources};

/// One piece of configuration text handed to a [`Loader`], with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A file's text, which may hold many `---`-separated documents.
    File {
        /// The path, as diagnostics print it.
        path: String,
        /// The file's content.
        text: String,
    },
    /// A file that could not be read; the objects it held before keep their versions.
    Unreadable {
        /// The path.
        path: String,
        /// Why, in words.
        error: String,
    },
    /// One object from the Kubernetes API server, as YAML or JSON text (JSON is YAML).
    Kubernetes {
        /// The resource kind (`rule`, `handler`, `metric`, ...).
        kind: String,
        /// `metadata.namespace`.
        namespace: String,
        /// `metadata.name`.
        name: String,
        /// `metadata.resourceVersion`, for the per-object results (Warning Events).
        resource_version: String,
        /// The object.
        text: String,
    },
}

impl Input {
    /// The name diagnostics give this input's text: the path, or
    /// `kubernetes:NAMESPACE/KIND/NAME`.
    pub fn display_name(&self) -> String {
        match self {
            Input::File { path, .. } | Input::Unreadable { path, .. } => path.clone(),
            Input::Kubernetes {
                kind,
                namespace,
                name,
                ..
            } => format!("kubernetes:{namespace}/{kind}/{name}"),
        }
    }
}

/// Where an object came from, for logs and per-object results.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ObjectSource {
    /// The embedded Istio defaults, at this position.
    Defaults {
        /// 1-based line of `metadata.name` (or of the document).
        line: u32,
        /// 1-based column.
        column: u32,
    },
    /// A file, at this position (0:0 for a problem with the file as a whole).
    File {
        /// The path.
        path: String,
        /// 1-based line of `metadata.name` (or of the document).
        line: u32,
        /// 1-based column.
        column: u32,
    },
    /// An object of the Kubernetes API server.
    Kubernetes {
        /// `metadata.namespace`.
        namespace: String,
        /// `metadata.name`.
        name: String,
        /// `metadata.resourceVersion` of the version the result is about.
        resource_version: String,
    },
}

impl fmt::Display for ObjectSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectSource::Defaults { line, column } => {
                write!(f, "{ISTIO_DEFAULTS_NAME}:{line}:{column}")
            }
            ObjectSource::File { path, line, column } => write!(f, "{path}:{line}:{column}"),
            ObjectSource::Kubernetes {
                namespace,
                name,
                resource_version,
            } => write!(
                f,
                "kubernetes {namespace}/{name} (resourceVersion {resource_version})"
            ),
        }
    }
}

/// An object that is not in force as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectProblem {
    /// The kind as written (`rule`, `metric`, ...); empty when the document has none.
    pub kind: String,
    /// `metadata.namespace` (`default` when absent).
    pub namespace: String,
    /// `metadata.name`; empty when the document has none (or for a whole file that could not
    /// be read or parsed).
    pub name: String,
    /// Where this version came from.
    pub source: ObjectSource,
    /// What happened to it.
    pub outcome: Outcome,
    /// Why: each diagnostic names the field and its file:line:column.
    pub diagnostics: Diagnostics,
    /// Whether the previous good version of the object (same kind family, namespace and
    /// name) stays in force instead.
    pub previous_in_force: bool,
}

/// Why an object is not in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The object itself is wrong (or its file could not be read or parsed).
    Rejected,
    /// The object is fine but refers to one that is rejected or absent (a rule's handler or
    /// instance, a prometheus metric's instance); dropped with a warning naming the reference.
    Dropped,
}

impl fmt::Display for ObjectProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.outcome {
            Outcome::Rejected => "rejected",
            Outcome::Dropped => "dropped",
        };
        write!(
            f,
            "{} '{}' in namespace '{}' ({}) {what}",
            if self.kind.is_empty() {
                "document"
            } else {
                &self.kind
            },
            self.name,
            self.namespace,
            self.source
        )?;
        if self.previous_in_force {
            write!(f, "; its previous version stays in force")?;
        }
        Ok(())
    }
}

/// The result of [`Loader::load`]: what compiled, and what did not.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration to put in force: every good object, previous versions of rejected
    /// ones. Its [`Snapshot::diagnostics`] are the warnings about what is in force.
    pub snapshot: Snapshot,
    /// The objects not in force as written (empty when everything compiled).
    pub problems: Vec<ObjectProblem>,
    /// Every diagnostic of the inputs as given, as `meshmeter validate` reports them; has
    /// errors exactly when `problems` is not empty.
    pub diagnostics: Diagnostics,
    in_force: HashMap<Key, Kept>,
    fingerprint: u64,
}

impl Loaded {
    /// How many objects are rejected or dropped.
    pub fn rejected_objects(&self) -> usize {
        self.problems.len()
    }

    /// A hash of the documents in force (their names and text): equal for two loads that put
    /// the same configuration in force, whatever else changed in the inputs.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// An object's identity across versions: kind family, namespace, name.
type Key = (u8, String, String);

/// A version of an object in force: the whole text it came from (shared by the objects of
/// one file version) and which document it is.
#[derive(Clone, Debug)]
struct Kept {
    name: Arc<str>,
    text: Arc<str>,
    index: usize,
    from: FileKind,
}

/// What a source file of one load is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FileKind {
    Defaults,
    File,
    Kubernetes {
        kind: String,
        namespace: String,
        name: String,
        resource_version: String,
    },
}

/// Compiles configuration object by object, remembering the versions in force.
///
/// Stateless between loads except for [`Loader::commit`], so a caller can look at a result
/// before deciding to put it in force.
#[derive(Debug)]
pub struct Loader {
    options: LoadOptions,
    in_force: HashMap<Key, Kept>,
}

/// The sources of one load and what each is.
struct Files {
    sources: Sources,
    order: Vec<(FileId, Origin)>,
    kinds: Vec<FileKind>,
    /// Documents of kept copies that are to be compiled.
    selected: HashSet<(FileId, usize)>,
    /// Kept copies already added, by their text's address.
    copies: HashMap<*const u8, FileId>,
}

impl Files {
    fn add(&mut self, name: &str, text: String, origin: Origin, kind: FileKind) -> FileId {
        let id = self.sources.add(SourceFile::new(name, text));
        self.order.push((id, origin));
        self.kinds.push(kind);
        id
    }

    /// Adds the previous version `kept` to the load (its file once, then only its document).
    fn put_back(&mut self, kept: &Kept) -> FileId {
        let ptr = kept.text.as_ptr();
        let id = match self.copies.get(&ptr) {
            Some(&id) => id,
            None => {
                let id = self.add(
                    &kept.name,
                    kept.text.to_string(),
                    Origin::User,
                    kept.from.clone(),
                );
                self.copies.insert(ptr, id);
                id
            }
        };
        self.selected.insert((id, kept.index));
        id
    }

    fn is_copy(&self, id: FileId) -> bool {
        self.copies.values().any(|&c| c == id)
    }

    fn source(&self, id: FileId, line: u32, column: u32) -> ObjectSource {
        match &self.kinds[id.0 as usize] {
            FileKind::Defaults => ObjectSource::Defaults { line, column },
            FileKind::File => ObjectSource::File {
                path: self.sources.get(id).name.to_string(),
                line,
                column,
            },
            FileKind::Kubernetes {
                namespace,
                name,
                resource_version,
                ..
            } => ObjectSource::Kubernetes {
                namespace: namespace.clone(),
                name: name.clone(),
                resource_version: resource_version.clone(),
            },
        }
    }
}

/// Codes of a reference to an object that is not there: the referring object is dropped,
/// not rejected.
const DANGLING: [&str; 2] = [
    Code::UnknownHandler.as_str(),
    Code::UnknownInstance.as_str(),
];

impl Loader {
    /// A loader with no previous versions.
    pub fn new(options: LoadOptions) -> Self {
        Self {
            options,
            in_force: HashMap::new(),
        }
    }

    /// The options it loads with.
    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    /// Makes `loaded`'s objects the previous good versions of later loads (call it when
    /// putting `loaded.snapshot` in force). Objects absent from it are forgotten: deleted.
    pub fn commit(&mut self, loaded: &Loaded) {
        self.in_force = loaded.in_force.clone();
    }

    /// Compiles `inputs` object by object (after the Istio defaults when the options say so).
    ///
    /// Fails only when errors cannot be pinned on any object (none known today); then
    /// nothing of this load can be trusted and the diagnostics are returned.
    pub fn load(&self, inputs: Vec<Input>) -> Result<Loaded, Diagnostics> {
        let mut attempt = Attempt::new(self, inputs);
        loop {
            let keep = |id: FileId, index: usize| {
                !attempt.excluded.contains(&(id, index))
                    && (!attempt.files.is_copy(id) || attempt.files.selected.contains(&(id, index)))
            };
            let order: Vec<(FileId, Origin)> = attempt
                .files
                .order
                .iter()
                .copied()
                .filter(|(id, _)| !attempt.lost_files.contains(id))
                .collect();
            let compiled = compile_documents(
                &attempt.files.sources,
                &order,
                &keep,
                &self.options.default_namespace,
                Diagnostics::default(),
            );
            match compiled.result {
                Ok((snapshot, warnings)) => {
                    return Ok(attempt.finish(snapshot, warnings, &compiled.docs));
                }
                Err(errors) => {
                    if !attempt.blame(&errors, &compiled.docs, &compiled.complete) {
                        return Err(errors);
                    }
                }
            }
        }
    }
}

/// One load across its rounds: what is left out so far, and why.
struct Attempt<'l> {
    loader: &'l Loader,
    files: Files,
    /// Unreadable inputs, reported first as `load_paths` does.
    unreadable: Diagnostics,
    problems: Vec<ObjectProblem>,
    /// Documents left out.
    excluded: HashSet<(FileId, usize)>,
    /// Files left out whole (cut short by a syntax error).
    lost_files: HashSet<FileId>,
    /// The first round's diagnostics: every problem of the inputs as given.
    first: Option<Diagnostics>,
}

impl<'l> Attempt<'l> {
    fn new(loader: &'l Loader, inputs: Vec<Input>) -> Self {
        let mut attempt = Attempt {
            loader,
            files: Files {
                sources: Sources::default(),
                order: Vec::new(),
                kinds: Vec::new(),
                selected: HashSet::new(),
                copies: HashMap::new(),
            },
            unreadable: Diagnostics::default(),
            problems: Vec::new(),
            excluded: HashSet::new(),
            lost_files: HashSet::new(),
            first: None,
        };
        if loader.options.include_defaults {
            let text = ISTIO_DEFAULTS.to_owned();
            let (origin, kind) = (Origin::Default, FileKind::Defaults);
            attempt.files.add(ISTIO_DEFAULTS_NAME, text, origin, kind);
        }
        for input in inputs {
            let name = input.display_name();
            match input {
                Input::File { text, .. } => {
                    attempt.files.add(&name, text, Origin::User, FileKind::File);
                }
                Input::Kubernetes {
                    kind,
                    namespace,
                    name: object,
                    resource_version,
                    text,
                } => {
                    let from = FileKind::Kubernetes {
                        kind,
                        namespace,
                        name: object,
                        resource_version,
                    };
                    attempt.files.add(&name, text, Origin::User, from);
                }
                Input::Unreadable { error, .. } => {
                    let message = format!("cannot read: {error}");
                    let d = crate::load::file_error(name.clone(), Code::Io, message);
                    attempt.unreadable.push(d.clone());
                    let source = ObjectSource::File {
                        path: name.clone(),
                        line: 0,
                        column: 0,
                    };
                    attempt.lose(&name, source, (String::new(), String::new()), vec![d]);
                }
            }
        }
        attempt
    }

    /// A whole input is lost: its objects keep their previous versions.
    fn lose(
        &mut self,
        name: &str,
        source: ObjectSource,
        (namespace, object): (String, String),
        diagnostics: Vec<Diagnostic>,
    ) {
        let mut any = false;
        for kept in self.loader.in_force.values().filter(|k| &*k.name == name) {
            self.files.put_back(kept);
            any = true;
        }
        self.problems.push(ObjectProblem {
            kind: String::new(),
            namespace,
            name: object,
            source,
            outcome: Outcome::Rejected,
            diagnostics: diagnostics.into_iter().collect(),
            previous_in_force: any,
        });
    }

    /// Leaves out what `errors` blame (whole files cut short, then documents); whether
    /// anything was left out (else no further round can do better).
    fn blame(
        &mut self,
        errors: &Diagnostics,
        docs: &[DocInfo],
        complete: &[(FileId, bool)],
    ) -> bool {
        self.first.get_or_insert_with(|| errors.clone());
        let mut progress = false;
        for &(id, parsed_to_end) in complete {
            if parsed_to_end || !self.lost_files.insert(id) {
                continue;
            }
            progress = true;
            let name = self.files.sources.get(id).name.clone();
            let in_file = errors
                .iter()
                .filter(|d| d.is_error() && Arc::ptr_eq(&d.file, &name));
            let identity = match &self.files.kinds[id.0 as usize] {
                FileKind::Kubernetes {
                    namespace, name, ..
                } => (namespace.clone(), name.clone()),
                _ => (String::new(), String::new()),
            };
            let source = self.files.source(id, 0, 0);
            self.lose(&name, source, identity, in_file.cloned().collect());
        }
        for (doc, diagnostics) in attribute(errors, docs, &self.files) {
            if self.lost_files.contains(&doc.file) || !self.excluded.insert((doc.file, doc.index)) {
                continue;
            }
            progress = true;
            self.blame_document(doc, diagnostics);
        }
        progress
    }

    /// Leaves out one document with errors; puts back the previous version of its object.
    fn blame_document(&mut self, doc: &DocInfo, diagnostics: Vec<Diagnostic>) {
        let key = key_of(doc);
        if self.files.is_copy(doc.file) {
            // The previous version fails now too (what it refers to is gone).
            for p in self.problems.iter_mut().filter(|p| p.previous_in_force) {
                let family = family_of_kind(&p.kind);
                if key
                    .as_ref()
                    .is_some_and(|k| Some(k.0) == family && k.1 == p.namespace && k.2 == p.name)
                {
                    p.previous_in_force = false;
                }
            }
            return;
        }
        let dangling = diagnostics.iter().all(|d| DANGLING.contains(&d.code));
        let previous = key.and_then(|k| self.loader.in_force.get(&k));
        if let Some(kept) = previous {
            self.files.put_back(kept);
        }
        let (outcome, diagnostics) = if dangling {
            let warnings = diagnostics.into_iter().map(as_warning).collect();
            (Outcome::Dropped, warnings)
        } else {
            (Outcome::Rejected, diagnostics.into_iter().collect())
        };
        self.problems.push(ObjectProblem {
            kind: doc.kind.clone().unwrap_or_default(),
            namespace: doc.namespace.clone(),
            name: doc.name.clone().unwrap_or_default(),
            source: self.files.source(doc.file, doc.line, doc.col),
            outcome,
            diagnostics,
            previous_in_force: previous.is_some(),
        });
    }

    /// The result, once what is left compiled.
    fn finish(self, mut snapshot: Snapshot, warnings: Diagnostics, docs: &[DocInfo]) -> Loaded {
        let all = self.first.unwrap_or_else(|| warnings.clone());
        snapshot.diagnostics = warnings;
        let (in_force, fingerprint) = in_force(&self.files, docs);
        Loaded {
            snapshot,
            problems: self.problems,
            diagnostics: self.unreadable.into_iter().chain(all).collect(),
            in_force,
            fingerprint,
        }
    }
}

fn as_warning(mut d: Diagnostic) -> Diagnostic {
    d.severity = Severity::Warning;
    d
}

fn key_of(doc: &DocInfo) -> Option<Key> {
    let family = family_of_kind(doc.kind.as_deref()?)?;
    Some((family, doc.namespace.clone(), doc.name.clone()?))
}

/// The errors grouped by the document they point into; errors outside every kept document
/// (a file that could not be read, one cut short by a syntax error) are left out.
fn attribute<'d>(
    errors: &Diagnostics,
    docs: &'d [DocInfo],
    files: &Files,
) -> Vec<(&'d DocInfo, Vec<Diagnostic>)> {
    let mut out: Vec<(&DocInfo, Vec<Diagnostic>)> = Vec::new();
    for d in errors.iter().filter(|d| d.is_error() && d.line > 0) {
        let Some(id) = files.sources.by_name_ptr(&d.file) else {
            continue;
        };
        let doc = docs
            .iter()
            .rfind(|doc| doc.file == id && doc.lines.0 <= d.line && d.line < doc.lines.1);
        let Some(doc) = doc else { continue };
        match out.iter_mut().find(|(o, _)| std::ptr::eq(*o, doc)) {
            Some((_, list)) => list.push(d.clone()),
            None => out.push((doc, vec![d.clone()])),
        }
    }
    out
}

/// The versions in force after a successful compile of `docs`, and their fingerprint.
fn in_force(files: &Files, docs: &[DocInfo]) -> (HashMap<Key, Kept>, u64) {
    let mut kept = HashMap::new();
    // Order-independent: a previous version put back is compiled after the files.
    let mut hashes = Vec::with_capacity(docs.len());
    let mut texts: HashMap<FileId, Arc<str>> = HashMap::new();
    for doc in docs {
        let file = files.sources.get(doc.file);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        file.name.hash(&mut hasher);
        file.lines_text(doc.lines.0, doc.lines.1).hash(&mut hasher);
        hashes.push(hasher.finish());
        let from = &files.kinds[doc.file.0 as usize];
        if *from == FileKind::Defaults {
            continue;
        }
        let Some(key) = key_of(doc) else { continue };
        let whole = texts
            .entry(doc.file)
            .or_insert_with(|| Arc::from(file.text.as_str()));
        kept.insert(
            key,
            Kept {
                name: file.name.clone(),
                text: Arc::clone(whole),
                index: doc.index,
                from: from.clone(),
            },
        );
    }
    hashes.sort_unstable();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hashes.hash(&mut hasher);
    (kept, hasher.finish())
}
