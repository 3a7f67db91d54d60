//! The compile step: parsed files in, a snapshot or every diagnostic out.
//!
//! Order matters: attribute manifests first (expressions are checked against them), then each
//! object on its own, then references across objects. Every stage keeps going after a problem
//! so that one run reports all of them. References are not checked when a file has a YAML
//! syntax error: its objects are missing, and "not defined" errors for them would be noise.

use std::collections::HashMap;

use meshmeter_attributes::{Manifest, ValueType};

use crate::diagnostic::{Code, Diagnostics, Sink, WithHint};
use crate::fields::{self, suggest};
use crate::handlers::{self, RawHandler};
use crate::instances;
use crate::objects::{self, Category, Object};
use crate::prom;
use crate::resolve::Table;
use crate::rules::{self, RawAction, RawRule};
use crate::snapshot::{
    Action, Counts, Handler, HandlerParams, IdentityAttrs, Instance, InstanceParams, ObjectName,
    Origin, PrometheusParams, Rule, Snapshot,
};
use crate::source::{FileId, Sources};
use crate::yaml::{self, Node};

/// Compiles the files (defaults first, then the operator's, in load order). Diagnostics come
/// out ordered by file, line and column.
pub(crate) fn compile(
    sources: &Sources,
    files: &[(FileId, Origin)],
    default_namespace: &str,
    diagnostics: Diagnostics,
) -> Result<(Snapshot, Diagnostics), Diagnostics> {
    compile_documents(sources, files, &|_, _| true, default_namespace, diagnostics).result
}

/// What [`compile_documents`] gives.
pub(crate) struct Compiled {
    pub(crate) result: Result<(Snapshot, Diagnostics), Diagnostics>,
    /// Every kept document.
    pub(crate) docs: Vec<DocInfo>,
    /// Per file, whether it parsed to its end.
    pub(crate) complete: Vec<(FileId, bool)>,
}

/// A document of a compiled file: where it is and, as far as its header tells, what it is.
/// The per-object loader attributes diagnostics to documents by these line ranges.
#[derive(Clone, Debug)]
pub(crate) struct DocInfo {
    pub(crate) file: FileId,
    /// Position among the file's documents.
    pub(crate) index: usize,
    /// The line the document's content starts on, and the start of the next one (or
    /// `u32::MAX`).
    pub(crate) lines: (u32, u32),
    /// `kind`, `metadata.namespace` (`default` when absent) and `metadata.name`, when they are
    /// text.
    pub(crate) kind: Option<String>,
    pub(crate) namespace: String,
    pub(crate) name: Option<String>,
    /// Where `metadata.name` is (the document start without one).
    pub(crate) line: u32,
    pub(crate) col: u32,
}

/// [`compile`] over the documents `keep(file, index)` selects, also returning every document
/// seen (kept ones only) and whether each file parsed to its end.
pub(crate) fn compile_documents(
    sources: &Sources,
    files: &[(FileId, Origin)],
    keep: &dyn Fn(FileId, usize) -> bool,
    default_namespace: &str,
    diagnostics: Diagnostics,
) -> Compiled {
    let order = |name: &str| sources.position(name);
    let mut docs = Vec::new();
    let mut complete = Vec::new();
    let result = compile_unsorted(
        sources,
        files,
        keep,
        default_namespace,
        diagnostics,
        &mut docs,
        &mut complete,
    );
    let result = match result {
        Ok((snapshot, mut d)) => {
            d.sort(order);
            Ok((snapshot, d))
        }
        Err(mut d) => {
            d.sort(order);
            Err(d)
        }
    };
    Compiled {
        result,
        docs,
        complete,
    }
}

fn compile_unsorted(
    sources: &Sources,
    files: &[(FileId, Origin)],
    keep: &dyn Fn(FileId, usize) -> bool,
    default_namespace: &str,
    diagnostics: Diagnostics,
    docs: &mut Vec<DocInfo>,
    complete: &mut Vec<(FileId, bool)>,
) -> Result<(Snapshot, Diagnostics), Diagnostics> {
    let mut sink = Sink::new(sources);
    sink.out = diagnostics;
    let (parsed, syntax_ok) = parse(sources, files, &mut sink);
    let mut objects: Vec<Object<'_>> = Vec::new();
    for (file, origin, p) in &parsed {
        complete.push((*file, p.complete));
        let kept = p
            .documents
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*file, *i));
        for (index, doc) in kept {
            docs.push(doc_info(*file, index, doc, &p.documents));
            objects.extend(objects::read(doc, *origin, &mut sink));
        }
    }
    let alive = dedupe(&objects, &mut sink);
    let manifest = manifest(Manifest::istio(), &objects, &alive, &mut sink);
    let raw = read_bodies(&objects, &alive, &manifest, &mut sink);
    if !syntax_ok {
        return Err(sink.out);
    }
    let table = Table::new(&objects, &alive);
    let (instances, instance_index) = instances(&objects, &raw.params);
    let inst = prom::Instances {
        params: &raw.params,
        index: &instance_index,
    };
    let handlers = handlers(&objects, &raw.handlers, &table, &inst, &mut sink);
    let rules = rules(&objects, &raw.rules, &table, &inst, &handlers, &mut sink);
    if sink.has_errors() {
        return Err(sink.out);
    }
    let snapshot = assemble(
        manifest,
        instances,
        handlers.handlers,
        rules,
        default_namespace,
    );
    Ok((snapshot, sink.out))
}

/// Parses every file; reports YAML problems. The flag says whether every file parsed to its
/// end (a syntax error loses the documents after it).
fn parse(
    sources: &Sources,
    files: &[(FileId, Origin)],
    sink: &mut Sink<'_>,
) -> (Vec<(FileId, Origin, yaml::Parsed)>, bool) {
    let mut syntax_ok = true;
    let mut parsed = Vec::with_capacity(files.len());
    for &(file, origin) in files {
        let p = yaml::parse(sources.get(file), file);
        for problem in &p.problems {
            let d = sink.report(problem.code, problem.span, problem.message.clone());
            if let Some(h) = &problem.hint {
                d.hint(h.clone());
            }
        }
        syntax_ok &= p.complete;
        parsed.push((file, origin, p));
    }
    (parsed, syntax_ok)
}

/// Each object's own part, read and checked on its own; parallel to the objects, `None` for
/// objects of other categories, objects not in force and objects with errors (reported).
struct RawBodies<'n> {
    params: Vec<Option<InstanceParams>>,
    handlers: Vec<Option<RawHandler<'n>>>,
    rules: Vec<Option<RawRule<'n>>>,
}

fn read_bodies<'n>(
    objects: &[Object<'n>],
    alive: &[bool],
    manifest: &Manifest,
    sink: &mut Sink<'_>,
) -> RawBodies<'n> {
    let mut raw = RawBodies {
        params: Vec::with_capacity(objects.len()),
        handlers: Vec::with_capacity(objects.len()),
        rules: Vec::with_capacity(objects.len()),
    };
    for (i, o) in objects.iter().enumerate() {
        let live = alive[i] && !o.broken;
        raw.params.push(match o.category {
            Category::Instance(_) if live => instances::build(o, manifest, sink),
            _ => None,
        });
        raw.handlers.push(match o.category {
            Category::Handler(_) if live => handlers::read(o, sink),
            _ => None,
        });
        raw.rules.push(match o.category {
            Category::Rule if live => rules::read(o, manifest, sink),
            _ => None,
        });
    }
    raw
}

/// The snapshot's instances, and the snapshot index of each instance object.
fn instances(
    objects: &[Object<'_>],
    params: &[Option<InstanceParams>],
) -> (Vec<Instance>, HashMap<usize, usize>) {
    let mut index = HashMap::new();
    let mut instances = Vec::new();
    for (i, p) in params.iter().enumerate() {
        if let Some(p) = p {
            index.insert(i, instances.len());
            instances.push(Instance {
                name: name_of(&objects[i]),
                origin: objects[i].origin,
                params: p.clone(),
            });
        }
    }
    (instances, index)
}

/// The snapshot's handlers and what rules need to know about them.
struct Handlers {
    handlers: Vec<Handler>,
    /// Snapshot index per handler object.
    index: HashMap<usize, usize>,
    /// Per snapshot handler, the instance objects a prometheus handler has a metric for.
    served: Vec<Vec<usize>>,
}

/// Builds the handlers, resolving prometheus metrics against the instances.
fn handlers(
    objects: &[Object<'_>],
    raw_handlers: &[Option<RawHandler<'_>>],
    table: &Table<'_, '_>,
    inst: &prom::Instances<'_>,
    sink: &mut Sink<'_>,
) -> Handlers {
    let mut taken = prom::Taken::new();
    let mut out = Handlers {
        handlers: Vec::new(),
        index: HashMap::new(),
        served: Vec::new(),
    };
    for (i, raw) in raw_handlers.iter().enumerate() {
        let Some(raw) = raw else { continue };
        let (params, serves) = match raw {
            RawHandler::Prometheus { metrics, expiry } => {
                let checked = prom::check(&objects[i], metrics, table, inst, &mut taken, sink);
                // A metric that failed its checks still serves its instance: saying the rule's
                // instance is unserved too would only echo that failure.
                let serves = checked.iter().filter_map(|(o, _)| *o).collect();
                let metrics = checked.into_iter().filter_map(|(_, m)| m).collect();
                (
                    HandlerParams::Prometheus(PrometheusParams {
                        metrics,
                        expiry: *expiry,
                    }),
                    serves,
                )
            }
            RawHandler::Stdio(p) => (HandlerParams::Stdio(p.clone()), Vec::new()),
            RawHandler::KubernetesEnv => (HandlerParams::KubernetesEnv, Vec::new()),
        };
        out.index.insert(i, out.handlers.len());
        out.served.push(serves);
        out.handlers.push(Handler {
            name: name_of(&objects[i]),
            origin: objects[i].origin,
            params,
        });
    }
    out
}

/// Builds the rules, resolving each action's handler and instances.
fn rules(
    objects: &[Object<'_>],
    raw_rules: &[Option<RawRule<'_>>],
    table: &Table<'_, '_>,
    inst: &prom::Instances<'_>,
    handlers: &Handlers,
    sink: &mut Sink<'_>,
) -> Vec<Rule> {
    let mut out = Vec::new();
    for (i, raw) in raw_rules.iter().enumerate() {
        let Some(raw) = raw else { continue };
        let o = &objects[i];
        let actions = raw
            .actions
            .iter()
            .filter_map(|a| action(a, &o.namespace, table, inst, handlers, sink))
            .collect();
        out.push(Rule {
            name: name_of(o),
            origin: o.origin,
            match_: raw.match_.clone(),
            actions,
        });
    }
    out
}

/// Resolves one action of a rule in `namespace`; `None` when its handler does not resolve.
/// Instances that do not resolve, or that the handler cannot take, are reported and left out.
fn action(
    a: &RawAction<'_>,
    namespace: &str,
    table: &Table<'_, '_>,
    inst: &prom::Instances<'_>,
    handlers: &Handlers,
    sink: &mut Sink<'_>,
) -> Option<Action> {
    let handler = table
        .resolve(a.handler, Category::Handler(0), namespace, sink)
        .and_then(|h| handlers.index.get(&h).copied());
    let mut resolved = Vec::new();
    for r in &a.instances {
        let Some(obj) = table.resolve(r, Category::Instance(0), namespace, sink) else {
            continue;
        };
        let (Some(p), Some(&idx)) = (&inst.params[obj], inst.index.get(&obj)) else {
            continue;
        };
        if let Some(h) = handler {
            if !handler_takes(handlers, h, obj, p, r, sink) {
                continue;
            }
        }
        resolved.push(idx);
    }
    Some(Action {
        name: a.name.clone(),
        handler: handler?,
        instances: resolved,
    })
}

/// Whether snapshot handler `h` can take instance object `obj` (with params `p`, referred to
/// by `r`); reports why not.
fn handler_takes(
    handlers: &Handlers,
    h: usize,
    obj: usize,
    p: &InstanceParams,
    r: &Node,
    sink: &mut Sink<'_>,
) -> bool {
    let hp = &handlers.handlers[h].params;
    let hname = &handlers.handlers[h].name;
    if !hp.accepts(p.template()) {
        sink.report(
            Code::IncompatibleInstance,
            r.span,
            format!(
                "handler '{hname}' ({}) cannot take {} instance '{}'",
                hp.adapter(),
                p.template(),
                r.as_str().unwrap_or_default()
            ),
        );
        return false;
    }
    if matches!(hp, HandlerParams::Prometheus(_)) && !handlers.served[h].contains(&obj) {
        sink.report(
            Code::UnroutedInstance,
            r.span,
            format!(
                "prometheus handler '{hname}' has no metric fed by instance '{}'",
                r.as_str().unwrap_or_default()
            ),
        )
        .hint("add a metric with this instance_name to the handler, or remove the instance from the action");
        return false;
    }
    true
}

/// The snapshot: rules indexed by namespace, counts per origin, identity attributes.
fn assemble(
    manifest: Manifest,
    instances: Vec<Instance>,
    handlers: Vec<Handler>,
    rules: Vec<Rule>,
    default_namespace: &str,
) -> Snapshot {
    let mut global_rules = Vec::new();
    let mut rules_by_namespace: hashbrown::HashMap<String, Vec<usize>> = hashbrown::HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        if r.name.namespace == default_namespace {
            global_rules.push(i);
        } else {
            rules_by_namespace
                .entry(r.name.namespace.clone())
                .or_default()
                .push(i);
        }
    }
    let count = |origin: Origin| Counts {
        instances: instances.iter().filter(|x| x.origin == origin).count(),
        handlers: handlers.iter().filter(|x| x.origin == origin).count(),
        rules: rules.iter().filter(|x| x.origin == origin).count(),
    };
    Snapshot {
        identity: IdentityAttrs {
            reporter_kind: manifest.id("context.reporter.kind"),
            source_namespace: manifest.id("source.namespace"),
            destination_namespace: manifest.id("destination.namespace"),
        },
        user_counts: count(Origin::User),
        default_counts: count(Origin::Default),
        manifest,
        instances,
        handlers,
        rules,
        default_namespace: default_namespace.to_owned(),
        global_rules,
        rules_by_namespace,
        diagnostics: Diagnostics::default(),
    }
}

/// What the loader needs to know about document `index` of `file`, from its header as written.
fn doc_info(file: FileId, index: usize, doc: &Node, all: &[Node]) -> DocInfo {
    let text = |n: Option<&Node>| n.and_then(Node::as_str).map(str::to_owned);
    let metadata = doc.get("metadata");
    let name = metadata.and_then(|m| m.get("name"));
    let at = name.map_or(doc.span, |n| n.span);
    let next = all
        .get(index + 1)
        .map_or(u32::MAX, |n| n.span.line.max(doc.span.line + 1));
    DocInfo {
        file,
        index,
        lines: (doc.span.line, next),
        kind: text(doc.get("kind")),
        namespace: text(metadata.and_then(|m| m.get("namespace")))
            .unwrap_or_else(|| "default".to_owned()),
        name: text(name),
        line: at.line,
        col: at.col,
    }
}

fn name_of(o: &Object<'_>) -> ObjectName {
    ObjectName {
        name: o.name.clone(),
        kind: o.kind.clone(),
        namespace: o.namespace.clone(),
    }
}

/// Which objects are in force. The operator's object replaces a default one of the same
/// family, name and namespace (as `kubectl apply` would); two of one origin are an error.
fn dedupe(objects: &[Object<'_>], sink: &mut Sink<'_>) -> Vec<bool> {
    let mut alive = vec![true; objects.len()];
    let mut seen: HashMap<(u8, &str, &str), usize> = HashMap::new();
    for (i, o) in objects.iter().enumerate() {
        if o.category == Category::Manifest {
            continue;
        }
        let key = (o.category.family(), o.namespace.as_str(), o.name.as_str());
        match seen.get(&key).copied() {
            None => {
                seen.insert(key, i);
            }
            Some(first) if objects[first].origin == Origin::Default && o.origin == Origin::User => {
                alive[first] = false;
                seen.insert(key, i);
            }
            Some(first) => {
                alive[i] = false;
                let f = &objects[first];
                let file = &sink.sources.get(f.span.file).name;
                let at = format!("{file}:{}:{}", f.span.line, f.span.col);
                sink.report(
                    Code::DuplicateObject,
                    o.span,
                    format!(
                        "{} '{}' in namespace '{}' is defined twice",
                        o.category.noun(),
                        o.name,
                        o.namespace
                    ),
                )
                .hint(if f.kind == o.kind {
                    format!("the first definition is at {at}")
                } else {
                    format!(
                        "the first definition (kind {}) is at {at}; the two Istio spellings are alternatives, load only one",
                        f.kind
                    )
                });
            }
        }
    }
    alive
}

/// `base` (the built-in vocabulary) extended by the `attributemanifest` objects.
pub(crate) fn manifest(
    base: Manifest,
    objects: &[Object<'_>],
    alive: &[bool],
    sink: &mut Sink<'_>,
) -> Manifest {
    let mut manifest = base;
    let type_names: Vec<&str> = ValueType::ALL.iter().map(|t| t.name()).collect();
    for (i, o) in objects.iter().enumerate() {
        if o.category != Category::Manifest || !alive[i] {
            continue;
        }
        let Some(body) = o.body else { continue };
        let what = format!("the spec of attributemanifest '{}'", o.name);
        let Some(f) = fields::read(body, &what, &["revision", "name", "attributes"], sink) else {
            continue;
        };
        let Some(entries) = f.get(2).and_then(|n| fields::map(n, "attributes", sink)) else {
            continue;
        };
        for (k, v) in entries {
            let Some(name) = fields::text(k, "an attribute name", sink) else {
                continue;
            };
            let Some(af) = fields::read(
                v,
                &format!("attribute '{name}'"),
                &["value_type", "description"],
                sink,
            ) else {
                continue;
            };
            let Some(tn) = af.get(0) else {
                sink.report(
                    Code::MissingField,
                    k.span,
                    format!("attribute '{name}' has no valueType"),
                )
                .hint("add e.g. `valueType: STRING`");
                continue;
            };
            let Some(text) = fields::text(tn, "valueType", sink) else {
                continue;
            };
            let Some(t) = ValueType::ALL.iter().copied().find(|t| t.name() == text) else {
                let d = sink.report(
                    Code::BadValueType,
                    tn.span,
                    format!("'{text}' is not a value type"),
                );
                match suggest(text, type_names.iter().copied()) {
                    Some(s) => d.hint(format!("did you mean '{s}'?")),
                    None => d.hint(format!("value types are: {}", type_names.join(", "))),
                }
                continue;
            };
            if let Err(e) = manifest.declare(name, t) {
                sink.report(Code::AttributeConflict, tn.span, e.to_string())
                    .hint("an attribute has one type everywhere; keep the built-in one");
            }
        }
    }
    manifest
}
