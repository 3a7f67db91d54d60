//! Files and Kubernetes objects into a [`NetworkConfig`], object by object.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use meshmeter_config::syntax::{self, Sink, SourceFile, Sources, Span};
use meshmeter_config::{
    Diagnostic, Diagnostics, Input, ObjectProblem, ObjectSource, Outcome, Severity,
};

use crate::codes::Code;
use crate::model::NetworkConfig;
use crate::parse::{self, Kind, Object, SubsetRef};

/// What identifies an object across versions: kind, namespace, name.
type Key = (Kind, String, String);

/// A version in force, and the input it came from (a file's path or a Kubernetes object's
/// display name), so that an input that cannot be read keeps its objects.
#[derive(Clone, Debug)]
struct Kept {
    object: Object,
    from: Arc<str>,
}

/// Reads traffic objects object by object, remembering the versions in force: an object
/// with an error is rejected alone and its previous good version (same kind, namespace and
/// name, from the last [`Loader::commit`]) stays in force; a file that cannot be read or
/// parsed to the end keeps every object it held.
///
/// ```
/// use meshmeter_config::Input;
/// use meshmeter_netconfig::Loader;
///
/// let rule = |subset: &str| Input::File {
///     path: "ratings.yaml".into(),
///     text: format!("apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: ratings\nspec:\n  host: ratings\n  subsets:\n  - name: {subset}\n    labels: {{version: v1}}\n"),
/// };
/// let mut loader = Loader::new();
/// let loaded = loader.load(vec![rule("v1")]);
/// assert!(loaded.problems.is_empty());
/// loader.commit(&loaded);
///
/// let loaded = loader.load(vec![rule("\"\"")]); // an empty subset name
/// assert_eq!(loaded.problems.len(), 1);
/// assert!(loaded.problems[0].previous_in_force);
/// assert_eq!(loaded.config.destination_rules[0].subsets[0].name, "v1");
/// ```
#[derive(Debug, Default)]
pub struct Loader {
    in_force: HashMap<Key, Kept>,
    /// Each input's text and what it gave, from the last load.
    cache: Mutex<HashMap<String, (String, Arc<Parsed>)>>,
}

/// The result of one [`Loader::load`].
#[derive(Debug)]
pub struct Loaded {
    /// The objects in force: every good object, and the previous version of each rejected
    /// one.
    pub config: NetworkConfig,
    /// Every diagnostic of the inputs as given (errors, warnings, informational lines), in
    /// input order, then line and column.
    pub diagnostics: Diagnostics,
    /// The objects (and whole inputs) not in force as written, and why.
    pub problems: Vec<ObjectProblem>,
    in_force: HashMap<Key, Kept>,
}

impl Loaded {
    /// How many objects are not in force as written.
    pub fn rejected_objects(&self) -> usize {
        self.problems.len()
    }
}

/// One position in the result: an accepted object, or the place of a rejected one (filled
/// with its previous version, if any, once every input is read).
enum Slot {
    Accepted(Key, Kept),
    Rejected(Key),
}

/// What reading one input's text gives: a function of its name and text only, so kept
/// between loads for the inputs that did not change (a Kubernetes source hands in every
/// object on every change).
#[derive(Debug)]
enum Parsed {
    /// Cut short by a syntax error: the input's diagnostics.
    Lost(Vec<Diagnostic>),
    /// Every document, in order.
    Documents(Vec<DocOutcome>),
}

#[derive(Debug)]
struct DocOutcome {
    /// The document's diagnostics: YAML problems within it, then its fields'.
    diagnostics: Vec<Diagnostic>,
    /// Where the document starts.
    line: u32,
    column: u32,
    /// `None` for documents of other kinds.
    read: Option<ReadDoc>,
}

#[derive(Debug)]
struct ReadDoc {
    kind: Kind,
    namespace: String,
    name: String,
    /// `metadata.name`'s value (or the document), where "defined twice" points.
    name_at: Place,
    object: Option<Object>,
    /// The subsets its routes name, and where.
    refs: Vec<(SubsetRef, Place)>,
}

/// A located span, self-contained (no [`Sources`] needed to report at it).
#[derive(Clone, Debug)]
struct Place {
    file: Arc<str>,
    line: u32,
    column: u32,
    width: u32,
    source_line: String,
}

impl Place {
    fn of(sources: &Sources, span: Span) -> Place {
        let file = sources.get(span.file);
        Place {
            file: Arc::clone(&file.name),
            line: span.line,
            column: span.col,
            width: span.width.max(1),
            source_line: file.line(span.line).to_owned(),
        }
    }

    fn diagnostic(&self, code: Code, message: String, hint: String) -> Diagnostic {
        Diagnostic {
            file: Arc::clone(&self.file),
            line: self.line,
            column: self.column,
            width: self.width,
            code: code.as_str(),
            severity: code.severity(),
            message,
            hint: Some(hint),
            source_line: self.source_line.clone(),
        }
    }
}

/// An input, its display name, and what its text gave (`None`: it could not be read).
type ReadInput<'i> = (&'i Input, Arc<str>, Option<Arc<Parsed>>);

/// Reads one input's text.
fn parse_input(name: &str, text: &str) -> Parsed {
    let mut sources = Sources::default();
    let id = sources.add(SourceFile::new(name, text.to_owned()));
    let parsed = syntax::parse(sources.get(id), id);
    let mut yaml = Sink::new(&sources);
    syntax::report_problems(&parsed, &mut yaml);
    let yaml: Vec<Diagnostic> = yaml.finish().into_iter().collect();
    if !parsed.complete {
        return Parsed::Lost(yaml);
    }
    // Problems of the text (duplicate keys, aliases) belong to the document they are in.
    let starts: Vec<u32> = parsed.documents.iter().map(|d| d.span.line).collect();
    let mut out = Vec::with_capacity(parsed.documents.len());
    for (index, doc) in parsed.documents.iter().enumerate() {
        let end = starts.get(index + 1).copied().unwrap_or(u32::MAX);
        let mut sink = Sink::new(&sources);
        let read = parse::read(doc, &mut sink);
        let own = sink.finish();
        let Some(read) = read else {
            // Not a traffic object: only a misspelt kind of ours is reported.
            out.push(DocOutcome {
                diagnostics: own.into_iter().collect(),
                line: doc.span.line,
                column: doc.span.col,
                read: None,
            });
            continue;
        };
        let mut diagnostics: Vec<Diagnostic> = yaml
            .iter()
            .filter(|d| starts[index] <= d.line && d.line < end)
            .cloned()
            .collect();
        diagnostics.extend(own);
        let refs = read
            .refs
            .into_iter()
            .map(|r| {
                let at = Place::of(&sources, r.span);
                (r, at)
            })
            .collect();
        out.push(DocOutcome {
            diagnostics,
            line: doc.span.line,
            column: doc.span.col,
            read: Some(ReadDoc {
                kind: read.kind,
                namespace: read.namespace,
                name: read.name,
                name_at: Place::of(&sources, read.span),
                object: read.object,
                refs,
            }),
        });
    }
    Parsed::Documents(out)
}

impl Loader {
    /// A loader with no previous versions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `loaded`'s objects the previous good versions of later loads. Objects absent
    /// from it are forgotten: deleted.
    pub fn commit(&mut self, loaded: &Loaded) {
        self.in_force = loaded.in_force.clone();
    }

    /// The inputs read: each with what its text gives, reused from the last load when the
    /// same input had the same text.
    fn parse_all<'i>(&self, inputs: &'i [Input]) -> Vec<ReadInput<'i>> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = std::mem::take(&mut *cache);
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            let name: Arc<str> = Arc::from(input.display_name());
            let parsed = match input {
                Input::File { text, .. } | Input::Kubernetes { text, .. } => {
                    let parsed = match previous.get(&*name) {
                        Some((old, parsed)) if old == text => Arc::clone(parsed),
                        _ => Arc::new(parse_input(&name, text)),
                    };
                    cache.insert(name.to_string(), (text.clone(), Arc::clone(&parsed)));
                    Some(parsed)
                }
                Input::Unreadable { .. } => None,
            };
            out.push((input, name, parsed));
        }
        out
    }

    /// Reads `inputs` (files, unreadable files, Kubernetes objects), object by object.
    pub fn load(&self, inputs: Vec<Input>) -> Loaded {
        let mut diagnostics = Vec::new();
        let mut problems = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        // Inputs lost whole (unreadable, or cut short by a syntax error): their objects keep
        // the versions in force.
        let mut lost: Vec<Arc<str>> = Vec::new();
        let mut first_at: HashMap<Key, (Arc<str>, u32)> = HashMap::new();
        // The subsets named by the routes of accepted VirtualServices, with their namespace.
        let mut refs: Vec<(&str, &[(SubsetRef, Place)])> = Vec::new();
        let parsed = self.parse_all(&inputs);
        for (input, name, parsed) in &parsed {
            let docs = match parsed.as_deref() {
                Some(Parsed::Documents(docs)) => docs,
                Some(Parsed::Lost(found)) => {
                    diagnostics.extend(found.iter().cloned());
                    problems.push(ObjectProblem {
                        kind: kubernetes_kind(input),
                        namespace: kubernetes_namespace(input),
                        name: kubernetes_name(input),
                        source: object_source(input, 0, 0),
                        outcome: Outcome::Rejected,
                        diagnostics: found.iter().filter(|d| d.is_error()).cloned().collect(),
                        previous_in_force: self.in_force.values().any(|k| k.from == *name),
                    });
                    lost.push(Arc::clone(name));
                    continue;
                }
                None => {
                    let error = match input {
                        Input::Unreadable { error, .. } => error.as_str(),
                        _ => "",
                    };
                    let d = whole_file(name, Code::Io, format!("cannot read: {error}"));
                    diagnostics.push(d.clone());
                    problems.push(ObjectProblem {
                        kind: String::new(),
                        namespace: String::new(),
                        name: String::new(),
                        source: ObjectSource::File {
                            path: name.to_string(),
                            line: 0,
                            column: 0,
                        },
                        outcome: Outcome::Rejected,
                        diagnostics: std::iter::once(d).collect(),
                        previous_in_force: self.in_force.values().any(|k| k.from == *name),
                    });
                    lost.push(Arc::clone(name));
                    continue;
                }
            };
            for doc in docs {
                let Some(read) = &doc.read else {
                    if doc.diagnostics.iter().any(Diagnostic::is_error) {
                        problems.push(ObjectProblem {
                            kind: String::new(),
                            namespace: String::new(),
                            name: String::new(),
                            source: object_source(input, doc.line, doc.column),
                            outcome: Outcome::Rejected,
                            diagnostics: doc.diagnostics.iter().cloned().collect(),
                            previous_in_force: false,
                        });
                    }
                    diagnostics.extend(doc.diagnostics.iter().cloned());
                    continue;
                };
                let mut found = doc.diagnostics.clone();
                let key = (read.kind, read.namespace.clone(), read.name.clone());
                let mut errors = found.iter().any(Diagnostic::is_error) || read.object.is_none();
                if !errors {
                    if let Some((file, line)) = first_at.get(&key) {
                        found.push(read.name_at.diagnostic(
                            Code::DuplicateObject,
                            format!(
                                "{} {} is defined twice",
                                read.kind.as_str(),
                                shown(&read.namespace, &read.name)
                            ),
                            format!("the first definition ({file}:{line}) is the one in force"),
                        ));
                        errors = true;
                    }
                }
                let source = object_source(input, read.name_at.line, read.name_at.column);
                if errors {
                    let previous = !read.name.is_empty()
                        && self.in_force.contains_key(&key)
                        && !first_at.contains_key(&key);
                    problems.push(ObjectProblem {
                        kind: read.kind.as_str().to_owned(),
                        namespace: read.namespace.clone(),
                        name: read.name.clone(),
                        source,
                        outcome: Outcome::Rejected,
                        diagnostics: found.iter().filter(|d| d.is_error()).cloned().collect(),
                        previous_in_force: previous,
                    });
                    if !read.name.is_empty() && !first_at.contains_key(&key) {
                        slots.push(Slot::Rejected(key));
                    }
                } else if let Some(object) = &read.object {
                    first_at.insert(key.clone(), (Arc::clone(name), read.name_at.line));
                    refs.push((&read.namespace, &read.refs));
                    slots.push(Slot::Accepted(
                        key,
                        Kept {
                            object: object.clone(),
                            from: Arc::clone(name),
                        },
                    ));
                }
                diagnostics.extend(found);
            }
        }
        // The previous versions of lost inputs' objects, where nothing else defines them.
        for (key, kept) in &self.in_force {
            if lost.contains(&kept.from) && !first_at.contains_key(key) {
                slots.push(Slot::Rejected(key.clone()));
            }
        }
        let mut in_force = HashMap::new();
        let mut config = NetworkConfig::default();
        for slot in slots {
            let (key, kept) = match slot {
                Slot::Accepted(key, kept) => (key, kept),
                Slot::Rejected(key) => {
                    if first_at.contains_key(&key) || in_force.contains_key(&key) {
                        continue;
                    }
                    match self.in_force.get(&key) {
                        Some(kept) => (key, kept.clone()),
                        None => continue,
                    }
                }
            };
            match &kept.object {
                Object::DestinationRule(r) => config.destination_rules.push(r.clone()),
                Object::VirtualService(v) => config.virtual_services.push(v.clone()),
                Object::PeerPolicy(p) => config.peer_policies.push(p.clone()),
            }
            in_force.insert(key, kept);
        }
        let index = SubsetIndex::new(&config);
        for (namespace, refs) in refs {
            for (r, at) in refs {
                diagnostics.extend(undefined_subset(&index, namespace, r, at));
            }
        }
        let position: HashMap<&str, usize> = parsed
            .iter()
            .enumerate()
            .map(|(i, (_, name, _))| (&**name, i))
            .collect();
        diagnostics.sort_by_key(|d| {
            let file = position.get(&*d.file).copied().unwrap_or(usize::MAX);
            (file, d.line, d.column)
        });
        Loaded {
            config,
            diagnostics: diagnostics.into_iter().collect(),
            problems,
            in_force,
        }
    }
}

/// `host` as written in an object of `namespace`, fully qualified as the routing compiler
/// does it (`meshmeter_routing::resolve_host`, which depends on this crate): `name` is
/// `name.namespace.svc.cluster.local`, `name.namespace` is `name.namespace.svc.cluster.local`;
/// the cluster domain is assumed, as this is only for a warning.
fn qualified(host: &str, namespace: &str) -> String {
    let host = host.trim_end_matches('.');
    if host.starts_with('*') {
        return host.to_owned();
    }
    match host.matches('.').count() {
        0 => format!("{host}.{namespace}.svc.cluster.local"),
        1 => format!("{host}.svc.cluster.local"),
        _ => host.to_owned(),
    }
}

/// The subsets each host's DestinationRules define, by qualified host; wildcard hosts
/// (`*.example.com`, `*`) apart.
struct SubsetIndex<'c> {
    exact: HashMap<String, Vec<&'c str>>,
    wildcard: Vec<(String, Vec<&'c str>)>,
}

impl<'c> SubsetIndex<'c> {
    fn new(config: &'c NetworkConfig) -> Self {
        let mut index = SubsetIndex {
            exact: HashMap::new(),
            wildcard: Vec::new(),
        };
        for d in &config.destination_rules {
            let host = qualified(&d.host, &d.meta.namespace);
            let names = d.subsets.iter().map(|s| s.name.as_str());
            match host.strip_prefix('*') {
                Some(suffix) => index.wildcard.push((suffix.to_owned(), names.collect())),
                None => index.exact.entry(host).or_default().extend(names),
            }
        }
        index
    }

    /// Whether any rule covers `host`, and whether one defines `subset`.
    fn lookup(&self, host: &str, subset: &str) -> (bool, bool) {
        let mut covered = false;
        let mut defined = false;
        let rules = self.exact.get(host).into_iter().chain(
            self.wildcard
                .iter()
                .filter(|(suffix, _)| host.ends_with(suffix.as_str()))
                .map(|(_, names)| names),
        );
        for names in rules {
            covered = true;
            defined |= names.contains(&subset);
        }
        (covered, defined)
    }
}

/// A warning when a route names a subset that no DestinationRule of its host defines: Istio
/// accepts it, and every connection routed there fails.
fn undefined_subset(
    index: &SubsetIndex<'_>,
    namespace: &str,
    r: &SubsetRef,
    at: &Place,
) -> Option<Diagnostic> {
    let (covered, defined) = index.lookup(&qualified(&r.host, namespace), &r.subset);
    if defined {
        return None;
    }
    let why = if covered {
        format!(
            "the DestinationRule of '{}' has no subset '{}'",
            r.host, r.subset
        )
    } else {
        format!("no DestinationRule has host '{}'", r.host)
    };
    Some(at.diagnostic(
        Code::UndefinedSubset,
        format!("{} '{}' is not defined: {why}", r.what, r.subset),
        "connections routed to an undefined subset fail; define it in the host's DestinationRule"
            .to_owned(),
    ))
}

fn shown(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    }
}

fn object_source(input: &Input, line: u32, column: u32) -> ObjectSource {
    match input {
        Input::Kubernetes {
            namespace,
            name,
            resource_version,
            ..
        } => ObjectSource::Kubernetes {
            namespace: namespace.clone(),
            name: name.clone(),
            resource_version: resource_version.clone(),
        },
        other => ObjectSource::File {
            path: other.display_name(),
            line,
            column,
        },
    }
}

fn kubernetes_kind(input: &Input) -> String {
    match input {
        Input::Kubernetes { kind, .. } => kind.clone(),
        _ => String::new(),
    }
}

fn kubernetes_namespace(input: &Input) -> String {
    match input {
        Input::Kubernetes { namespace, .. } => namespace.clone(),
        _ => String::new(),
    }
}

fn kubernetes_name(input: &Input) -> String {
    match input {
        Input::Kubernetes { name, .. } => name.clone(),
        _ => String::new(),
    }
}

/// A problem with a file as a whole (no position in it).
fn whole_file(name: &str, code: Code, message: String) -> Diagnostic {
    Diagnostic {
        file: name.into(),
        line: 0,
        column: 0,
        width: 1,
        code: code.as_str(),
        severity: Severity::Error,
        message,
        hint: None,
        source_line: String::new(),
    }
}

/// Reads the traffic objects in the YAML files under `paths` (files as given, directories
/// walked for `*.yaml`/`*.yml` as the telemetry configuration's are), object by object:
/// the objects without errors, and every diagnostic. Documents of other kinds (telemetry
/// objects, Deployments) are skipped silently.
pub fn load_paths(paths: &[PathBuf]) -> (NetworkConfig, Vec<Diagnostic>) {
    let loaded = Loader::new().load(meshmeter_config::read_inputs(paths));
    (loaded.config, loaded.diagnostics.into_iter().collect())
}

/// [`load_paths`] of one directory (or file).
pub fn load_dir(path: &Path) -> (NetworkConfig, Vec<Diagnostic>) {
    load_paths(&[path.to_path_buf()])
}

/// [`load_paths`] of in-memory files: `(name, text)` pairs.
pub fn load_str(files: &[(&str, &str)]) -> (NetworkConfig, Vec<Diagnostic>) {
    let inputs = files
        .iter()
        .map(|(path, text)| Input::File {
            path: (*path).to_owned(),
            text: (*text).to_owned(),
        })
        .collect();
    let loaded = Loader::new().load(inputs);
    (loaded.config, loaded.diagnostics.into_iter().collect())
}
