//! Finding and reading configuration files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::compile;
use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::snapshot::{Origin, Snapshot};
use crate::source::{FileId, SourceFile, Sources};
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
    load_paths_and_documents(paths, &[], options)
}

/// Loads `paths` and, after their files, in-memory `documents` (`(name, text)` pairs, e.g.
/// objects from the Kubernetes API named `kubernetes:KIND/NAMESPACE/NAME`) as one
/// configuration.
pub fn load_paths_and_documents(
    paths: &[PathBuf],
    documents: &[(String, String)],
    options: &LoadOptions,
) -> Result<Snapshot, Diagnostics> {
    let mut texts = Vec::new();
    let mut io = Vec::new();
    match config_files(paths) {
        Ok(files) => {
            for f in files {
                match read_limited(&f) {
                    Ok(t) => texts.push((f.display().to_string(), t)),
                    Err(e) => io.push((f.display().to_string(), e)),
                }
            }
        }
        Err((p, e)) => io.push((p.display().to_string(), e.to_string())),
    }
    texts.extend(documents.iter().cloned());
    load_texts(texts, io, options)
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
        early.push(Diagnostic {
            file: name.into(),
            line: 0,
            column: 0,
            width: 1,
            code: Code::Io.as_str(),
            severity: crate::diagnostic::Severity::Error,
            message: format!("cannot read: {error}"),
            hint: None,
            source_line: String::new(),
        });
    }
    let (mut snapshot, diagnostics) =
        compile::compile(&sources, &files, &options.default_namespace, early)?;
    snapshot.diagnostics = diagnostics;
    Ok(snapshot)
}
