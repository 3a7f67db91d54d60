//! Finding and reading configuration files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use meshmeter_attributes::Manifest;

use crate::accept::Input;
use crate::compile;
use crate::diagnostic::{Code, Diagnostic, Diagnostics, Sink, WithHint};
use crate::objects;
use crate::snapshot::{Origin, Snapshot};
use crate::source::{FileId, SourceFile, Sources};
use crate::yaml::{self, Node};
use meshmeter_fswatch::fsread::{is_regular_file, read_regular_file};

/// Istio 1.1's default telemetry configuration (standard TCP and HTTP metrics, the access
/// logs, workload identity), rendered for namespace `istio-system`.
pub const ISTIO_DEFAULTS: &str = include_str!("../data/istio-default.yaml");

/// The name diagnostics give the embedded defaults.
pub const ISTIO_DEFAULTS_NAME: &str = "<istio-defaults>";

/// Files larger than this are refused: no telemetry configuration is that big, and reading
/// one should not be able to exhaust memory.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Directory walks stop after this many files or this depth.
const MAX_FILES: usize = 10_000;
const MAX_DEPTH: usize = 16;

/// How to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Rules in this namespace apply to every report (Mixer's `--configDefaultNamespace`).
    pub default_namespace: String,
    /// Load [`ISTIO_DEFAULTS`] before the operator's files. The operator's objects replace
    /// default ones of the same kind family, name and namespace.
    pub include_defaults: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            default_namespace: "istio-system".to_owned(),
            include_defaults: true,
        }
    }
}

/// The YAML files under `paths`: files as given, directories walked recursively for
/// `*.yaml`/`*.yml` in name order. Entries starting with `.` are skipped, which also skips the
/// `..data` links of a mounted Kubernetes ConfigMap (the files would otherwise load twice).
pub fn config_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    let mut out = Vec::new();
    // Each real directory is walked once, however many symlinks lead to it (`a -> .` loops).
    let mut seen = HashSet::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| (p.clone(), e))?;
        if meta.is_dir() {
            walk(p, 0, &mut seen, &mut out).map_err(|e| (p.clone(), e))?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(
    dir: &Path,
    depth: usize,
    seen: &mut HashSet<(u64, u64)>,
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)?;
    if depth > MAX_DEPTH || !seen.insert((meta.dev(), meta.ino())) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for p in entries {
        if out.len() >= MAX_FILES {
            break;
        }
        if p.is_dir() {
            walk(&p, depth + 1, seen, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml")
        {
            if is_regular_file(&p) {
                out.push(p);
            } else {
                // A FIFO would block the loader, `/dev/zero` would never end.
                tracing::warn!(file = %p.display(), "skipping configuration entry: not a regular file");
            }
        }
    }
    Ok(())
}

/// Loads, validates and compiles the configuration at `paths` (files and directories).
///
/// On success the snapshot carries the warnings and informational diagnostics
/// ([`Snapshot::diagnostics`]); on failure every diagnostic is returned.
pub fn load_paths(paths: &[PathBuf], options: &LoadOptions) -> Result<Snapshot, Diagnostics> {
    let mut texts = Vec::new();
    let mut io = Vec::new();
    for input in read_inputs(paths) {
        match input {
            Input::File { path, text } => texts.push((path, text)),
            Input::Unreadable { path, error } => io.push((path, error)),
            Input::Kubernetes { .. } => {}
        }
    }
    load_texts(texts, io, options)
}

/// The configuration files at `paths` (as [`config_files`] finds them), read, as inputs of a
/// [`crate::Loader`]; files that cannot be read are [`Input::Unreadable`].
pub fn read_inputs(paths: &[PathBuf]) -> Vec<Input> {
    match config_files(paths) {
        Ok(files) => files
            .into_iter()
            .map(|f| {
                let path = f.display().to_string();
                match read_limited(&f) {
                    Ok(text) => Input::File { path, text },
                    Err(error) => Input::Unreadable { path, error },
                }
            })
            .collect(),
        Err((p, e)) => vec![Input::Unreadable {
            path: p.display().to_string(),
            error: e.to_string(),
        }],
    }
}

/// Loads configuration from in-memory documents: `(name, text)` pairs as if they were files.
pub fn load_str(files: &[(&str, &str)], options: &LoadOptions) -> Result<Snapshot, Diagnostics> {
    let texts = files
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    load_texts(texts, Vec::new(), options)
}

fn read_limited(path: &Path) -> Result<String, String> {
    let bytes = read_regular_file(path, MAX_FILE_BYTES).map_err(|e| e.to_string())?;
    String::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 text (at byte {})", e.utf8_error().valid_up_to()))
}

/// A problem with a file as a whole (no position in it).
pub(crate) fn file_error(name: String, code: Code, message: String) -> Diagnostic {
    Diagnostic {
        file: name.into(),
        line: 0,
        column: 0,
        width: 1,
        code: code.as_str(),
        severity: crate::diagnostic::Severity::Error,
        message,
        hint: None,
        source_line: String::new(),
    }
}

/// `base` extended by the attributes the `attributemanifest` documents in `files` declare,
/// read and checked as [`load_paths`] reads them (positions, value type names, conflicts with
/// the base's types); for tools that take a vocabulary (`meshmeter eval`, `meshmeter report`).
/// Documents of other kinds are ignored; a file with no attribute manifest is an error (C0063).
pub fn load_manifests(files: &[PathBuf], base: Manifest) -> Result<Manifest, Diagnostics> {
    let mut sources = Sources::default();
    let mut early = Diagnostics::default();
    let mut ids = Vec::new();
    for f in files {
        let name = f.display().to_string();
        match read_limited(f) {
            Ok(text) => ids.push(sources.add(SourceFile::new(&name, text))),
            Err(e) => early.push(file_error(name, Code::Io, format!("cannot read: {e}"))),
        }
    }
    let mut sink = Sink::new(&sources);
    sink.out = early;
    let parsed: Vec<_> = ids
        .iter()
        .map(|&id| (id, yaml::parse(sources.get(id), id)))
        .collect();
    let mut objects = Vec::new();
    for (id, p) in &parsed {
        for problem in &p.problems {
            let d = sink.report(problem.code, problem.span, problem.message.clone());
            if let Some(h) = &problem.hint {
                d.hint(h.clone());
            }
        }
        let manifests: Vec<&Node> = p
            .documents
            .iter()
            .filter(|d| d.get("kind").and_then(Node::as_str) == Some("attributemanifest"))
            .collect();
        if manifests.is_empty() && p.complete {
            let name = sources.get(*id).name.to_string();
            sink.out.push(file_error(
                name,
                Code::NoManifest,
                "no `kind: attributemanifest` document".into(),
            ));
        }
        objects.extend(
            manifests
                .into_iter()
                .filter_map(|d| objects::read(d, Origin::User, &mut sink)),
        );
    }
    let alive = vec![true; objects.len()];
    let manifest = compile::manifest(base, &objects, &alive, &mut sink);
    if sink.has_errors() {
        let mut out = sink.out;
        out.sort(|name| sources.position(name));
        return Err(out);
    }
    Ok(manifest)
}

fn load_texts(
    texts: Vec<(String, String)>,
    io: Vec<(String, String)>,
    options: &LoadOptions,
) -> Result<Snapshot, Diagnostics> {
    let mut sources = Sources::default();
    let mut files: Vec<(FileId, Origin)> = Vec::new();
    if options.include_defaults {
        let id = sources.add(SourceFile::new(
            ISTIO_DEFAULTS_NAME,
            ISTIO_DEFAULTS.to_owned(),
        ));
        files.push((id, Origin::Default));
    }
    for (name, text) in texts {
        files.push((sources.add(SourceFile::new(&name, text)), Origin::User));
    }
    let mut early = Diagnostics::default();
    for (name, error) in io {
        early.push(file_error(name, Code::Io, format!("cannot read: {error}")));
    }
    let (mut snapshot, diagnostics) =
        compile::compile(&sources, &files, &options.default_namespace, early)?;
    snapshot.diagnostics = diagnostics;
    Ok(snapshot)
}
