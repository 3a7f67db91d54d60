//! The workloads file: parsing with precise errors, and reloading when it changes.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use meshmeter_attributes::StringMap;
use meshmeter_fswatch::fsread::FileReadError;
use meshmeter_fswatch::{read_fingerprinted, Settle};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;
use yaml_rust2::{Yaml, YamlLoader};

use super::{DeclaredPort, DeclaredService, Service, TableError, Workload, WorkloadTable};

/// What is wrong with one field of one workload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    /// A required field is absent.
    #[error("is required")]
    Missing,
    /// The field is not one the format knows.
    #[error("is not a known field (expected name, namespace, labels, ips, services, pod, uid, service_account, owner)")]
    Unknown,
    /// Expected text.
    #[error("must be a string")]
    NotAString,
    /// Expected a list.
    #[error("must be a list")]
    NotAList,
    /// Expected a map of text to text.
    #[error("must be a map of names to strings")]
    NotAMap,
    /// Text that must not be empty.
    #[error("must not be empty")]
    Empty,
    /// Not an IP address.
    #[error("'{0}' is not an IP address")]
    NotAnIp(String),
    /// A field a service entry does not have.
    #[error("is not a known field (expected host, addresses, ports)")]
    UnknownServiceField,
    /// A field a service port does not have.
    #[error("is not a known field (expected port, name, targetPort)")]
    UnknownPortField,
    /// Not a port number (the position points at the value).
    #[error("is not a port number (1-65535)")]
    NotAPort,
    /// A service without ports.
    #[error("must list at least one port")]
    NoPorts,
}

/// A workloads file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Not YAML.
    #[error("{path}:{line}:{column}: invalid YAML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// The document is not a map with a `workloads` list (and an optional `services` list).
    #[error("{path}: expected a map with a 'workloads' list (and an optional 'services' list)")]
    Shape {
        /// The file.
        path: PathBuf,
    },
    /// One field of one workload is wrong.
    #[error("{path}:{line}:{column}: workload {index}{}: field '{field}' {problem}", name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default())]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based line of the field's value (of its key for an unknown field, of the
        /// workload for a missing one).
        line: usize,
        /// 1-based column.
        column: usize,
        /// 0-based position in the `workloads` list.
        index: usize,
        /// The workload's name, when it has one.
        name: Option<String>,
        /// The field (`ips[1]`, `labels.app`).
        field: String,
        /// What is wrong.
        problem: FieldProblem,
    },
    /// One field of one entry of the `services` list is wrong.
    #[error("{path}:{line}:{column}: service {index}{}: field '{field}' {problem}", host.as_ref().map(|n| format!(" ({n})")).unwrap_or_default())]
    ServiceField {
        /// The file.
        path: PathBuf,
        /// 1-based line of the field's value (of its key for an unknown field, of the
        /// entry for a missing one).
        line: u32,
        /// 1-based column.
        column: u32,
        /// 0-based position in the `services` list.
        index: u32,
        /// The service's host, when it has one.
        host: Option<String>,
        /// The field (`ports[0].port`, `addresses[1]`).
        field: String,
        /// What is wrong.
        problem: FieldProblem,
    },
    /// On reload, the file holds no YAML document at all (likely caught mid-write); the last
    /// good table stays in force. Write `workloads: []` to really remove every workload.
    #[error("{path}: holds no document (caught mid-write?); keeping the last good workloads")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Workloads that contradict each other.
    #[error("{path}: {error}")]
    Conflict {
        /// The file.
        path: PathBuf,
        /// The conflict.
        error: TableError,
    },
}

fn scalar_text(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The largest workloads file read: far above any real inventory, small enough that a hostile
/// or runaway file cannot exhaust memory.
pub const MAX_WORKLOADS_FILE_BYTES: u64 = 64 << 20;

/// One open collection while walking the YAML events.
enum Frame {
    Seq { path: String, next: usize },
    Map { path: String, key: Option<String> },
}

/// Where things are in the first document, from one pass over the YAML events (the loaded
/// `Yaml` tree keeps no positions): the first alias, and the start of every node and every
/// mapping key by path (`workloads[0].ips[1]`, `workloads[0].labels.app`).
#[derive(Default)]
struct Positions {
    first_alias: Option<Marker>,
    nodes: HashMap<String, Marker>,
    keys: HashMap<String, Marker>,
    stack: Vec<Frame>,
    /// Past the first document: only aliases are still looked for.
    done: bool,
}

impl Positions {
    fn scan(text: &str) -> Positions {
        let mut p = Positions::default();
        // Syntax errors are reported by the real load, with their position.
        let _ = Parser::new_from_str(text).load(&mut p, true);
        p
    }

    /// The node starting at `mark`: its path, or `None` when it is a mapping key (recorded).
    fn node(&mut self, mark: Marker, key_text: Option<&str>) -> Option<String> {
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Seq { path, next }) => {
                *next += 1;
                format!("{path}[{}]", *next - 1)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => join(path, &k),
                None => {
                    let k = key_text.unwrap_or("?").to_owned();
                    self.keys.insert(join(path, &k), mark);
                    // A block mapping's start is reported after its first key (at the ':');
                    // the mapping starts where that key does.
                    if let Some(start) = self.nodes.get_mut(path.as_str()) {
                        if mark.index() < start.index() {
                            *start = mark;
                        }
                    }
                    *key = Some(k);
                    return None;
                }
            },
        };
        self.nodes.entry(path.clone()).or_insert(mark);
        Some(path)
    }

    /// Where the field `field` of workload `index` is (see [`WorkloadError::Field`]).
    fn field(&self, index: usize, field: &str, problem: &FieldProblem) -> (usize, usize) {
        self.field_in("workloads", index, field, problem)
    }

    /// Where the field `field` of entry `index` of the top-level list `list` is.
    fn field_in(
        &self,
        list: &str,
        index: usize,
        field: &str,
        problem: &FieldProblem,
    ) -> (usize, usize) {
        let item = format!("{list}[{index}]");
        let at = join(&item, field);
        let mark = match problem {
            FieldProblem::Missing | FieldProblem::NoPorts => self.nodes.get(&item),
            FieldProblem::Unknown
            | FieldProblem::UnknownServiceField
            | FieldProblem::UnknownPortField => self.keys.get(&at),
            _ => self.nodes.get(&at).or_else(|| self.keys.get(&at)),
        }
        .or_else(|| self.nodes.get(&item));
        mark.map_or((0, 0), |m| (m.line(), m.col() + 1))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Positions {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if matches!(ev, Event::Alias(_)) && self.first_alias.is_none() {
            self.first_alias = Some(mark);
        }
        if self.done {
            return;
        }
        match ev {
            Event::Scalar(ref text, ..) => {
                self.node(mark, Some(text));
            }
            Event::Alias(_) => {
                self.node(mark, None);
            }
            Event::SequenceStart(..) => {
                if let Some(path) = self.node(mark, None) {
                    self.stack.push(Frame::Seq { path, next: 0 });
                } else {
                    // A collection used as a key: walk it under a path nothing looks up.
                    self.stack.push(Frame::Seq {
                        path: "?".into(),
                        next: 0,
                    });
                }
            }
            Event::MappingStart(..) => {
                let path = self.node(mark, None).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

/// Refuses YAML aliases before building the document: expanding them (billion laughs) could
/// take exponential memory, and the configuration loader refuses them too.
fn refuse_aliases(path: &Path, positions: &Positions) -> Result<(), WorkloadError> {
    match positions.first_alias {
        Some(m) => Err(WorkloadError::Syntax {
            path: path.to_owned(),
            line: m.line(),
            column: m.col() + 1,
            message: "YAML aliases are not supported; write the value out in full".into(),
        }),
        None => Ok(()),
    }
}

/// Parses the text of a workloads file; `path` is only used in errors.
pub fn parse(path: &Path, text: &str) -> Result<WorkloadTable, WorkloadError> {
    let positions = Positions::scan(text);
    refuse_aliases(path, &positions)?;
    let docs = YamlLoader::load_from_str(text).map_err(|e| WorkloadError::Syntax {
        path: path.to_owned(),
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_owned(),
    })?;
    let shape = || WorkloadError::Shape {
        path: path.to_owned(),
    };
    let (list, services) = match docs.first() {
        None | Some(Yaml::Null) => return Ok(WorkloadTable::default()),
        Some(Yaml::Hash(h)) => {
            if h.keys()
                .any(|k| !matches!(k.as_str(), Some("workloads" | "services")))
            {
                return Err(shape());
            }
            let top = |key: &str| match h.get(&Yaml::String(key.into())) {
                Some(Yaml::Array(a)) => Ok(a.as_slice()),
                Some(Yaml::Null) | None => Ok(&[][..]),
                Some(_) => Err(shape()),
            };
            (top("workloads")?, top("services")?)
        }
        Some(_) => return Err(shape()),
    };
    let mut workloads = Vec::with_capacity(list.len());
    for (index, entry) in list.iter().enumerate() {
        workloads.push(parse_entry(path, &positions, index, entry)?);
    }
    let mut declared = Vec::with_capacity(services.len());
    for (index, entry) in services.iter().enumerate() {
        declared.push(parse_service(path, &positions, index, entry)?);
    }
    let conflict = |error| WorkloadError::Conflict {
        path: path.to_owned(),
        error,
    };
    WorkloadTable::new(workloads)
        .and_then(|t| t.with_services(declared))
        .map_err(conflict)
}

fn parse_service(
    path: &Path,
    positions: &Positions,
    index: usize,
    entry: &Yaml,
) -> Result<DeclaredService, WorkloadError> {
    let host = entry["host"].as_str().map(str::to_owned);
    let err = |field: &str, problem: FieldProblem| {
        let (line, column) = positions.field_in("services", index, field, &problem);
        // Narrower than a workload's position fields: the error stays small enough to be
        // returned by value (a file has far fewer than 4 billion lines).
        let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        WorkloadError::ServiceField {
            path: path.to_owned(),
            line: narrow(line),
            column: narrow(column),
            index: narrow(index),
            host: host.clone(),
            field: field.to_owned(),
            problem,
        }
    };
    let Yaml::Hash(map) = entry else {
        return Err(err("host", FieldProblem::Missing));
    };
    for key in map.keys() {
        match key.as_str() {
            Some("host" | "addresses" | "ports") => {}
            Some(k) => return Err(err(k, FieldProblem::UnknownServiceField)),
            None => return Err(err(&format!("{key:?}"), FieldProblem::UnknownServiceField)),
        }
    }
    let host = match &entry["host"] {
        Yaml::BadValue | Yaml::Null => return Err(err("host", FieldProblem::Missing)),
        Yaml::String(s) if s.is_empty() => return Err(err("host", FieldProblem::Empty)),
        Yaml::String(s) => s.clone(),
        _ => return Err(err("host", FieldProblem::NotAString)),
    };
    let mut addresses = Vec::new();
    match &entry["addresses"] {
        Yaml::BadValue | Yaml::Null => {}
        Yaml::Array(list) => {
            for (i, ip) in list.iter().enumerate() {
                let field = || format!("addresses[{i}]");
                let t = scalar_text(ip).ok_or_else(|| err(&field(), FieldProblem::NotAString))?;
                let ip: IpAddr = t
                    .parse()
                    .map_err(|_| err(&field(), FieldProblem::NotAnIp(t.clone())))?;
                addresses.push(ip);
            }
        }
        _ => return Err(err("addresses", FieldProblem::NotAList)),
    }
    let ports = match &entry["ports"] {
        Yaml::BadValue | Yaml::Null => return Err(err("ports", FieldProblem::NoPorts)),
        Yaml::Array(list) if list.is_empty() => return Err(err("ports", FieldProblem::NoPorts)),
        Yaml::Array(list) => list,
        _ => return Err(err("ports", FieldProblem::NotAList)),
    };
    let port_number = |field: &str, y: &Yaml| -> Result<u16, WorkloadError> {
        match y {
            Yaml::Integer(n) => u16::try_from(*n).ok().filter(|p| *p != 0),
            _ => None,
        }
        .ok_or_else(|| err(field, FieldProblem::NotAPort))
    };
    let mut declared_ports = Vec::with_capacity(ports.len());
    for (i, p) in ports.iter().enumerate() {
        let at = |f: &str| format!("ports[{i}].{f}");
        let Yaml::Hash(pm) = p else {
            return Err(err(&format!("ports[{i}]"), FieldProblem::NotAMap));
        };
        for key in pm.keys() {
            match key.as_str() {
                Some("port" | "name" | "targetPort") => {}
                Some(k) => return Err(err(&at(k), FieldProblem::UnknownPortField)),
                None => {
                    return Err(err(
                        &at(&format!("{key:?}")),
                        FieldProblem::UnknownPortField,
                    ))
                }
            }
        }
        let port = match &p["port"] {
            Yaml::BadValue | Yaml::Null => return Err(err(&at("port"), FieldProblem::Missing)),
            y => port_number(&at("port"), y)?,
        };
        let name = match &p["name"] {
            Yaml::BadValue | Yaml::Null => String::new(),
            Yaml::String(s) => s.clone(),
            _ => return Err(err(&at("name"), FieldProblem::NotAString)),
        };
        let target_port = match &p["targetPort"] {
            Yaml::BadValue | Yaml::Null => port,
            y => port_number(&at("targetPort"), y)?,
        };
        declared_ports.push(DeclaredPort {
            port,
            name,
            target_port,
        });
    }
    Ok(DeclaredService {
        service: Service::from_host(&host, "default"),
        addresses,
        ports: declared_ports,
    })
}

fn parse_entry(
    path: &Path,
    positions: &Positions,
    index: usize,
    entry: &Yaml,
) -> Result<Workload, WorkloadError> {
    let name = entry["name"].as_str().map(str::to_owned);
    let err = |field: &str, problem: FieldProblem| {
        let (line, column) = positions.field(index, field, &problem);
        WorkloadError::Field {
            path: path.to_owned(),
            line,
            column,
            index,
            name: name.clone(),
            field: field.to_owned(),
            problem,
        }
    };
    let Yaml::Hash(map) = entry else {
        return Err(err("name", FieldProblem::Missing));
    };
    let text = |field: &str| -> Result<Option<String>, WorkloadError> {
        match &entry[field] {
            Yaml::BadValue | Yaml::Null => Ok(None),
            Yaml::String(s) if s.is_empty() => Err(err(field, FieldProblem::Empty)),
            Yaml::String(s) => Ok(Some(s.clone())),
            _ => Err(err(field, FieldProblem::NotAString)),
        }
    };
    let list = |field: &str| -> Result<&[Yaml], WorkloadError> {
        match &entry[field] {
            Yaml::BadValue | Yaml::Null => Ok(&[]),
            Yaml::Array(a) => Ok(a),
            _ => Err(err(field, FieldProblem::NotAList)),
        }
    };
    for key in map.keys() {
        let known = [
            "name",
            "namespace",
            "labels",
            "ips",
            "services",
            "pod",
            "uid",
            "service_account",
            "serviceAccount",
            "owner",
        ];
        match key.as_str() {
            Some(k) if known.contains(&k) => {}
            Some(k) => return Err(err(k, FieldProblem::Unknown)),
            None => return Err(err(&format!("{key:?}"), FieldProblem::Unknown)),
        }
    }
    let wname = text("name")?.ok_or_else(|| err("name", FieldProblem::Missing))?;
    let namespace = text("namespace")?.ok_or_else(|| err("namespace", FieldProblem::Missing))?;
    let mut w = Workload::new(wname, namespace);
    if let Some(pod) = text("pod")? {
        w.uid = format!("kubernetes://{pod}.{}", w.namespace);
        w.pod = pod;
    }
    if let Some(uid) = text("uid")? {
        w.uid = uid;
    }
    w.service_account = match text("service_account")? {
        Some(sa) => Some(sa),
        None => text("serviceAccount")?,
    };
    w.owner = text("owner")?;
    match &entry["labels"] {
        Yaml::BadValue | Yaml::Null => {}
        Yaml::Hash(labels) => {
            let mut m = StringMap::with_capacity(labels.len());
            for (k, v) in labels {
                let k = scalar_text(k).ok_or_else(|| err("labels", FieldProblem::NotAMap))?;
                let v = scalar_text(v)
                    .ok_or_else(|| err(&format!("labels.{k}"), FieldProblem::NotAString))?;
                m.insert(k, v);
            }
            w.labels = m;
        }
        _ => return Err(err("labels", FieldProblem::NotAMap)),
    }
    for (i, ip) in list("ips")?.iter().enumerate() {
        let field = || format!("ips[{i}]");
        let t = scalar_text(ip).ok_or_else(|| err(&field(), FieldProblem::NotAString))?;
        let ip: IpAddr = t
            .parse()
            .map_err(|_| err(&field(), FieldProblem::NotAnIp(t.clone())))?;
        w.ips.push(ip);
    }
    for (i, host) in list("services")?.iter().enumerate() {
        let field = || format!("services[{i}]");
        let host = host
            .as_str()
            .ok_or_else(|| err(&field(), FieldProblem::NotAString))?;
        if host.is_empty() {
            return Err(err(&field(), FieldProblem::Empty));
        }
        w.services.push(Service::from_host(host, &w.namespace));
    }
    Ok(w)
}

/// A workload table loaded from a file and reloaded when the file changes.
///
/// Readers take [`FileRegistry::load`] (lock-free); a failed reload keeps the last good table.
#[derive(Debug)]
pub struct FileRegistry {
    path: PathBuf,
    table: ArcSwap<WorkloadTable>,
    /// The settle rule over the file's content fingerprint: a change is tried once two
    /// consecutive polls agree on it, and only once (a bad version is reported once).
    settle: Mutex<Settle>,
}

impl FileRegistry {
    /// Loads `path`; it must be valid now.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, WorkloadError> {
        let path = path.into();
        let (fingerprint, bytes) = read_fingerprinted(&path, MAX_WORKLOADS_FILE_BYTES);
        let table = parse(&path, &text_of(&path, bytes)?)?;
        Ok(FileRegistry {
            path,
            table: ArcSwap::from_pointee(table),
            settle: Mutex::new(Settle::new(fingerprint)),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current table.
    pub fn load(&self) -> Guard<Arc<WorkloadTable>> {
        self.table.load()
    }

    /// Reads the file and reloads it when its content changed and has settled (the poll
    /// before saw the same content): `Ok(true)` when a new table is in place, `Ok(false)`
    /// when there is nothing (yet) to load, and an error (once per change) when the new
    /// version is unusable, the last good table staying in place.
    pub fn poll(&self) -> Result<bool, WorkloadError> {
        let mut settle = self.settle.lock().unwrap_or_else(PoisonError::into_inner);
        let (fingerprint, bytes) = read_fingerprinted(&self.path, MAX_WORKLOADS_FILE_BYTES);
        if !settle.poll(fingerprint) {
            return Ok(false);
        }
        let text = text_of(&self.path, bytes)?;
        // A truncated file must not silently strip every workload's identity.
        if no_documents(&text) && !self.table.load().workloads().is_empty() {
            return Err(WorkloadError::Empty {
                path: self.path.clone(),
            });
        }
        let table = parse(&self.path, &text)?;
        self.table.store(Arc::new(table));
        Ok(true)
    }

    /// Polls every `every` on a thread until the returned [`Watch`] is dropped; errors go to
    /// `on_error` (the caller logs them).
    pub fn watch(
        self: &Arc<Self>,
        every: Duration,
        on_error: impl Fn(&WorkloadError) + Send + 'static,
    ) -> io::Result<Watch> {
        let (stop, stopped) = mpsc::channel::<()>();
        let me = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("meshmeter-workloads".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    if let Err(e) = me.poll() {
                        on_error(&e);
                    }
                }
            })?;
        Ok(Watch {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Whether `text` is only blank lines and comments.
fn no_documents(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}

/// The text of a read through the bounded, regular-file-only reader (a FIFO or device named
/// as the workloads file is refused, not read forever).
fn text_of(path: &Path, bytes: Result<Vec<u8>, FileReadError>) -> Result<String, WorkloadError> {
    let read_err = |source| WorkloadError::Read {
        path: path.to_owned(),
        source,
    };
    let bytes = bytes.map_err(|e| match e {
        FileReadError::Io(e) => read_err(e),
        other => read_err(io::Error::other(other.to_string())),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        read_err(io::Error::other(format!(
            "not UTF-8 text (at byte {})",
            e.utf8_error().valid_up_to()
        )))
    })
}

/// A running [`FileRegistry::watch`]; dropping it stops the thread.
#[derive(Debug)]
pub struct Watch {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
