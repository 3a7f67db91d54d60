//! A stand-in Kubernetes API server for tests (feature `stand-in`): plain HTTP on
//! 127.0.0.1, behaving as the recordings of a real 1.26 API server show.
//!
//! - LIST: `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"N"},"items":[...]}`;
//!   built-in list items carry no `kind`/`apiVersion`, custom-resource items do and their list
//!   is `KINDList` with `"continue":""`. `limit`/`continue` paging, an expired token is a 410
//!   Status.
//! - WATCH (`watch=1|true`, `resourceVersion`, `allowWatchBookmarks`, `timeoutSeconds`):
//!   status 200 at once, then one chunk per event (`{"type":...,"object":...}\n`); a
//!   resourceVersion older than the window is a single `ERROR` event with a 410 `Expired`
//!   Status, then the end; at the timeout a BOOKMARK (when asked for and newer), then a clean
//!   end.
//! - One resourceVersion counter shared by every resource; DELETED carries the last state.
//! - POST creates (Events) are recorded and echoed back; a TokenReview
//!   (`/apis/authentication.k8s.io/v1/tokenreviews`) is answered from the tokens programmed
//!   with [`StandIn::review_token`]: authenticated ones get their username and the requested
//!   audiences back, any other token `authenticated: false` with an error.
//! - Namespaces (cluster-scoped) and ConfigMaps; for namespaced resources a GET of one object,
//!   a POST that stores it (409 `AlreadyExists` when it exists) and a PUT that replaces it
//!   when its resourceVersion is the stored one (409 `Conflict` otherwise).
//! - 401 (bad token), 403 (forbidden resources) as JSON Status, and the plain-text
//!   `404 page not found` of a group whose CRDs are not installed.
//!
//! Tests add, change and delete objects, stop and restart the server on the same port (a
//! restart begins a new watch window, as a real restart does), and compact the history.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, Infallible>;

/// A resource the stand-in serves.
#[derive(Clone, Debug)]
struct Resource {
    /// `/api/v1` or `/apis/GROUP/VERSION`.
    prefix: &'static str,
    plural: &'static str,
    kind: &'static str,
    api_version: &'static str,
    /// A CRD: list kind `KINDList`, items carry kind/apiVersion, served only once installed.
    custom: bool,
}

const BUILTIN: [(&str, &str, &str, &str); 7] = [
    ("/api/v1", "pods", "Pod", "v1"),
    ("/api/v1", "namespaces", "Namespace", "v1"),
    ("/api/v1", "configmaps", "ConfigMap", "v1"),
    ("/api/v1", "services", "Service", "v1"),
    ("/apis/apps/v1", "replicasets", "ReplicaSet", "apps/v1"),
    ("/apis/batch/v1", "jobs", "Job", "batch/v1"),
    (
        "/apis/discovery.k8s.io/v1",
        "endpointslices",
        "EndpointSlice",
        "discovery.k8s.io/v1",
    ),
];

#[derive(Debug)]
struct Event {
    resource: usize,
    rv: u64,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct Inner {
    resources: Vec<Resource>,
    rv: u64,
    /// Watches from a resourceVersion older than this get 410 Gone.
    oldest: u64,
    crds_installed: bool,
    objects: BTreeMap<(usize, String, String), Value>,
    history: Vec<Event>,
    forbidden: HashSet<String>,
    token: Option<String>,
    /// TokenReview answers: token → (authenticated, username).
    reviews: std::collections::HashMap<String, (bool, String)>,
    next_uid: u64,
    /// Bumped to make every open watch send a BOOKMARK.
    bookmarks: u64,
    /// Most seconds a watch stays open, whatever its `timeoutSeconds`.
    max_watch_secs: u64,
    /// PUTs answered 409 Conflict before any is applied (another writer's update, as seen
    /// by the client).
    conflicts: u32,
    /// Bumped by every stop: watches of an earlier epoch send nothing more.
    epoch: u64,
}

impl Inner {
    fn resource(&self, plural: &str) -> usize {
        self.resources
            .iter()
            .position(|r| r.plural == plural)
            .unwrap_or_else(|| panic!("the stand-in does not serve {plural}"))
    }
}

#[derive(Debug)]
struct State {
    inner: Mutex<Inner>,
    /// Ticks on every change (object or bookmark request).
    changed: watch::Sender<u64>,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The stand-in API server.
#[derive(Debug)]
pub struct StandIn {
    state: Arc<State>,
    addr: SocketAddr,
    server: Mutex<Option<JoinHandle<()>>>,
    /// Requests served, by path and query (for tests that check what the client asked).
    requests: Arc<Mutex<Vec<String>>>,
    /// Objects created with POST (Events), by path.
    posted: Arc<Mutex<Vec<(String, Value)>>>,
}

impl StandIn {
    /// Starts serving on 127.0.0.1 (a free port) with the built-in resources and the
    /// `config.istio.io/v1alpha2` kinds (CRDs installed).
    pub async fn start() -> Self {
        let mut resources: Vec<Resource> = BUILTIN
            .iter()
            .map(|&(prefix, plural, kind, api_version)| Resource {
                prefix,
                plural,
                kind,
                api_version,
                custom: false,
            })
            .collect();
        for (api_version, kind, plural, _) in crate::TRAFFIC_RESOURCES {
            resources.push(Resource {
                prefix: match api_version {
                    "networking.istio.io/v1alpha3" => "/apis/networking.istio.io/v1alpha3",
                    _ => "/apis/authentication.istio.io/v1alpha1",
                },
                plural,
                kind,
                api_version,
                custom: true,
            });
        }
        for (kind, plural) in crate::CONFIG_RESOURCES {
            resources.push(Resource {
                prefix: "/apis/config.istio.io/v1alpha2",
                plural,
                kind,
                api_version: "config.istio.io/v1alpha2",
                custom: true,
            });
        }
        let state = Arc::new(State {
            inner: Mutex::new(Inner {
                resources,
                rv: 400,
                oldest: 0,
                crds_installed: true,
                max_watch_secs: 290,
                ..Inner::default()
            }),
            changed: watch::channel(0).0,
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in API server");
        let addr = listener.local_addr().expect("stand-in address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let posted = Arc::new(Mutex::new(Vec::new()));
        let server = spawn_server(
            listener,
            Arc::clone(&state),
            Arc::clone(&requests),
            Arc::clone(&posted),
        );
        StandIn {
            state,
            addr,
            server: Mutex::new(Some(server)),
            requests,
            posted,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server (no credentials unless [`StandIn::require_token`]).
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("stand-in URL"));
        config.read_timeout = Some(Duration::from_secs(300));
        kube::Client::try_from(config).expect("a client for the stand-in")
    }

    /// A kubeconfig file's text pointing at this server with `token`.
    pub fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: standin\nclusters:\n- name: standin\n  cluster:\n    server: {}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: tester\nusers:\n- name: tester\n  user:\n    token: {token}\n",
            self.url()
        )
    }

    /// Every object created with POST so far (Events), with the path it was posted to.
    pub fn posted(&self) -> Vec<(String, Value)> {
        self.posted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every request so far, as `PATH?QUERY`.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How TokenReviews of `token` are answered: `authenticated`, as `username` (e.g.
    /// `system:serviceaccount:default:ratings`). Tokens never programmed are not authenticated.
    pub fn review_token(&self, token: &str, authenticated: bool, username: &str) {
        self.state
            .lock()
            .reviews
            .insert(token.to_owned(), (authenticated, username.to_owned()));
    }

    /// Refuses requests without `Authorization: Bearer TOKEN` (401).
    pub fn require_token(&self, token: &str) {
        self.state.lock().token = Some(token.to_owned());
    }

    /// Refuses lists and watches of `plural` with 403 (or stops refusing).
    pub fn forbid(&self, plural: &str, forbidden: bool) {
        let mut inner = self.state.lock();
        if forbidden {
            inner.forbidden.insert(plural.to_owned());
        } else {
            inner.forbidden.remove(plural);
        }
    }

    /// Whether the `config.istio.io` CRDs are installed (when not, its paths are the
    /// plain-text 404).
    pub fn set_crds_installed(&self, installed: bool) {
        self.state.lock().crds_installed = installed;
        self.state.notify();
    }

    /// Ends every watch after at most `secs` seconds (as `timeoutSeconds` does).
    pub fn set_max_watch_secs(&self, secs: u64) {
        self.state.lock().max_watch_secs = secs;
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.lock().rv
    }

    /// Creates or replaces an object of resource `plural` (`metadata.name` and, for namespaced
    /// ones, `metadata.namespace` required): ADDED or MODIFIED. Fills `uid`,
    /// `creationTimestamp` and `resourceVersion` as the server would.
    pub fn apply(&self, plural: &str, object: Value) {
        let r = self.state.lock().resource(plural);
        store(&self.state, r, object);
    }

    /// Answers the next `n` PUTs with 409 Conflict, each after bumping the object's
    /// resourceVersion (as if another writer had updated it in between).
    pub fn conflict_next_puts(&self, n: u32) {
        self.state.lock().conflicts = n;
    }

    /// The stored object of resource `plural` (`namespace` ignored for namespaces).
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.state.lock();
        let r = inner.resource(plural);
        let ns = if CLUSTER_SCOPED.contains(&plural) {
            ""
        } else {
            namespace
        };
        inner
            .objects
            .get(&(r, ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Deletes an object: DELETED with its last state at a new resourceVersion. False when
    /// there was none.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> bool {
        let found = {
            let mut inner = self.state.lock();
            let r = inner.resource(plural);
            match inner
                .objects
                .remove(&(r, namespace.to_owned(), name.to_owned()))
            {
                Some(mut object) => {
                    inner.rv += 1;
                    let rv = inner.rv;
                    object["metadata"]["resourceVersion"] = json!(rv.to_string());
                    inner.history.push(Event {
                        resource: r,
                        rv,
                        kind: "DELETED",
                        object,
                    });
                    true
                }
                None => false,
            }
        };
        self.state.notify();
        found
    }

    /// Adds every item of a recorded list body (`list/pods.json`, `list/rules.json`, ...).
    pub fn apply_list(&self, plural: &str, list: &str) {
        let list: Value = serde_json::from_str(list).expect("a recorded list");
        for item in list["items"].as_array().into_iter().flatten() {
            self.apply(plural, item.clone());
        }
    }

    /// Makes every open watch send a BOOKMARK now (when it asked for them).
    pub fn send_bookmarks(&self) {
        self.state.lock().bookmarks += 1;
        self.state.notify();
    }

    /// Forgets the history: every watch from an older resourceVersion gets 410 Gone, and
    /// continue tokens expire (etcd compaction).
    pub fn compact(&self) {
        {
            let mut inner = self.state.lock();
            inner.oldest = inner.rv + 1;
            inner.history.clear();
        }
        self.state.notify();
    }

    /// Stops serving: the listener and every open connection are closed.
    pub fn stop(&self) {
        // Under the lock before anything else: no change made after `stop` returns can reach
        // a client through a connection that is still being torn down.
        self.state.lock().epoch += 1;
        if let Some(task) = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// Starts serving again on the same port; the watch window begins now (watches from
    /// before get 410 Gone, as after a real restart with etcd kept).
    pub async fn restart(&self) {
        self.stop();
        {
            let mut inner = self.state.lock();
            inner.oldest = inner.rv + 1;
            inner.history.clear();
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the stand-in API server on its port");
        let task = spawn_server(
            listener,
            Arc::clone(&self.state),
            Arc::clone(&self.requests),
            Arc::clone(&self.posted),
        );
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }
}

/// Resources without a namespace.
const CLUSTER_SCOPED: [&str; 1] = ["namespaces"];

/// Creates or replaces an object of resource `r` (ADDED or MODIFIED), filling `uid`,
/// `creationTimestamp` and `resourceVersion` as the server would; the stored object.
fn store(state: &State, r: usize, mut object: Value) -> Value {
    let stored = {
        let mut inner = state.lock();
        let res = inner.resources[r].clone();
        let cluster = CLUSTER_SCOPED.contains(&res.plural);
        let name = object["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_owned();
        let ns = if cluster {
            String::new()
        } else {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        };
        inner.rv += 1;
        let rv = inner.rv;
        let key = (r, ns.clone(), name);
        let old = inner.objects.get(&key).cloned();
        let meta = &mut object["metadata"];
        if !cluster {
            meta["namespace"] = json!(ns);
        }
        meta["resourceVersion"] = json!(rv.to_string());
        match &old {
            Some(o) => {
                meta["uid"] = o["metadata"]["uid"].clone();
                meta["creationTimestamp"] = o["metadata"]["creationTimestamp"].clone();
            }
            None => {
                inner.next_uid += 1;
                if meta.get("uid").is_none() {
                    meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", inner.next_uid));
                }
                if meta.get("creationTimestamp").is_none() {
                    meta["creationTimestamp"] = json!("2026-12-02T10:00:00Z");
                }
            }
        }
        object["kind"] = json!(res.kind);
        object["apiVersion"] = json!(res.api_version);
        inner.history.push(Event {
            resource: r,
            rv,
            kind: if old.is_some() { "MODIFIED" } else { "ADDED" },
            object: object.clone(),
        });
        inner.objects.insert(key, object.clone());
        object
    };
    state.notify();
    stored
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_server(
    listener: TcpListener,
    state: Arc<State>,
    requests: Arc<Mutex<Vec<String>>>,
    posted: Arc<Mutex<Vec<(String, Value)>>>,
) -> JoinHandle<()> {
    // Everything this instance serves belongs to the epoch it started in: `stop` bumps it, and
    // from then on its watches send nothing, even one whose task starts (or whose connection
    // is accepted) in the moment between the bump and the abort taking effect.
    let epoch = state.lock().epoch;
    tokio::spawn(async move {
        // Connections live in the set: aborting this task drops (closes) them all.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    if state.lock().epoch != epoch {
                        continue;
                    }
                    let state = Arc::clone(&state);
                    let requests = Arc::clone(&requests);
                    let posted = Arc::clone(&posted);
                    connections.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let state = Arc::clone(&state);
                            let requests = Arc::clone(&requests);
                            let posted = Arc::clone(&posted);
                            async move {
                                if req.method() == hyper::Method::POST {
                                    return Ok::<_, Infallible>(create(&state, &requests, &posted, req).await);
                                }
                                if req.method() == hyper::Method::PUT {
                                    return Ok::<_, Infallible>(replace(&state, &requests, req).await);
                                }
                                Ok::<_, Infallible>(handle(&state, &requests, &req, epoch))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

fn full(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-cache, private")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    full(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "application/json",
        format!("{body}\n"),
    )
}

fn not_found() -> Response<Body> {
    full(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "404 page not found\n".to_owned(),
    )
}

/// A POST (the server's Events, the CA's TokenReviews): recorded; a TokenReview is answered,
/// anything else echoed back as created.
async fn create(
    state: &State,
    requests: &Mutex<Vec<String>>,
    posted: &Mutex<Vec<(String, Value)>>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!("POST {}", req.uri()));
    let Ok(body) = req.into_body().collect().await else {
        return status(400, "BadRequest", "unreadable body");
    };
    let Ok(object) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return status(400, "BadRequest", "the body is not a JSON object");
    };
    posted
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((path.clone(), object.clone()));
    if path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        return token_review(state, object);
    }
    // A served resource (ConfigMaps): stored, 409 when it exists.
    let target = {
        let inner = state.lock();
        resolve(&inner, &path)
    };
    if let Some((r, Some(ns), None)) = target {
        let mut object = object;
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return status(422, "Invalid", "metadata.name: Required value");
        };
        let exists = state
            .lock()
            .objects
            .contains_key(&(r, ns.clone(), name.clone()));
        if exists {
            let plural = state.lock().resources[r].plural;
            return status(
                409,
                "AlreadyExists",
                &format!("{plural} \"{name}\" already exists"),
            );
        }
        object["metadata"]["namespace"] = json!(ns);
        let stored = store(state, r, object);
        return full(
            StatusCode::CREATED,
            "application/json",
            format!("{stored}\n"),
        );
    }
    full(
        StatusCode::CREATED,
        "application/json",
        format!("{object}\n"),
    )
}

/// The API server's answer to a TokenReview: the review with its `status` filled in.
fn token_review(state: &State, mut review: Value) -> Response<Body> {
    let Some(token) = review["spec"]["token"].as_str() else {
        return status(
            422,
            "Invalid",
            "TokenReview.authentication.k8s.io \"\" is invalid: spec.token: Required value",
        );
    };
    let answer = state.lock().reviews.get(token).cloned();
    review["status"] = match answer {
        Some((true, username)) => {
            let audiences = review["spec"]["audiences"].clone();
            json!({
                "authenticated": true,
                "user": {"username": username, "uid": "00000000-0000-4000-8000-00000000aaaa",
                         "groups": ["system:serviceaccounts", "system:authenticated"]},
                "audiences": audiences,
            })
        }
        _ => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
    };
    review["metadata"] = json!({"creationTimestamp": null});
    full(
        StatusCode::CREATED,
        "application/json",
        format!("{review}\n"),
    )
}

/// A PUT: the object replaced when its `metadata.resourceVersion` is the stored one (409
/// Conflict otherwise, 404 when there is none).
async fn replace(
    state: &State,
    requests: &Mutex<Vec<String>>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!("PUT {}", req.uri()));
    let Ok(body) = req.into_body().collect().await else {
        return status(400, "BadRequest", "unreadable body");
    };
    let Ok(mut object) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return status(400, "BadRequest", "the body is not a JSON object");
    };
    let target = {
        let inner = state.lock();
        resolve(&inner, &path)
    };
    let Some((r, Some(ns), Some(name))) = target else {
        return not_found();
    };
    let (plural, current) = {
        let inner = state.lock();
        (
            inner.resources[r].plural,
            inner.objects.get(&(r, ns.clone(), name.clone())).cloned(),
        )
    };
    let Some(current) = current else {
        return status(404, "NotFound", &format!("{plural} \"{name}\" not found"));
    };
    let conflict = {
        let mut inner = state.lock();
        let c = inner.conflicts > 0;
        inner.conflicts = inner.conflicts.saturating_sub(1);
        c
    };
    if conflict {
        store(state, r, current.clone());
    }
    if conflict || object["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return status(
            409,
            "Conflict",
            &format!("Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
        );
    }
    object["metadata"]["namespace"] = json!(ns);
    let stored = store(state, r, object);
    full(StatusCode::OK, "application/json", format!("{stored}\n"))
}

/// `{prefix}/{plural}`, `{prefix}/namespaces/{ns}/{plural}` or
/// `{prefix}/namespaces/{ns}/{plural}/{name}`: the resource, namespace and name.
fn resolve(inner: &Inner, path: &str) -> Option<(usize, Option<String>, Option<String>)> {
    inner.resources.iter().enumerate().find_map(|(i, r)| {
        let rest = path.strip_prefix(r.prefix)?.strip_prefix('/')?;
        if rest == r.plural {
            return Some((i, None, None));
        }
        let rest = rest.strip_prefix("namespaces/")?;
        let (ns, tail) = rest.split_once('/')?;
        let (plural, name) = match tail.split_once('/') {
            Some((plural, name)) => (plural, Some(name.to_owned())),
            None => (tail, None),
        };
        (plural == r.plural).then(|| (i, Some(ns.to_owned()), name))
    })
}

fn handle(
    state: &Arc<State>,
    requests: &Mutex<Vec<String>>,
    req: &Request<hyper::body::Incoming>,
    epoch: u64,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.replace("%3D", "=").replace("%2F", "/")),
            None => (p.to_owned(), String::new()),
        })
        .collect();
    requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(req.uri().to_string());
    let inner = state.lock();
    if let Some(token) = &inner.token {
        let sent = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if sent != Some(&format!("Bearer {token}")) {
            return status(401, "Unauthorized", "Unauthorized");
        }
    }
    let Some((r, namespace, name)) = resolve(&inner, &path) else {
        return not_found();
    };
    let res = inner.resources[r].clone();
    if res.custom && !inner.crds_installed {
        return not_found();
    }
    let watching = matches!(query.get("watch").map(String::as_str), Some("1" | "true"));
    if inner.forbidden.contains(res.plural) {
        let verb = match (watching, &name) {
            (true, _) => "watch",
            (false, Some(_)) => "get",
            (false, None) => "list",
        };
        let group = res.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        return status(
            403,
            "Forbidden",
            &format!(
                "{} is forbidden: User \"system:serviceaccount:default:no-rbac\" cannot {verb} resource \"{}\" in API group \"{group}\" at the cluster scope",
                res.plural, res.plural
            ),
        );
    }
    if let (Some(ns), Some(name)) = (&namespace, &name) {
        let res = &inner.resources[r];
        return match inner.objects.get(&(r, ns.clone(), name.clone())) {
            Some(object) => full(StatusCode::OK, "application/json", format!("{object}\n")),
            None => status(
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", res.plural),
            ),
        };
    }
    if watching {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(inner.rv);
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
            .min(inner.max_watch_secs);
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true");
        let oldest = inner.oldest;
        drop(inner);
        let watch = WatchRequest {
            r,
            namespace,
            from,
            oldest,
            timeout_secs: timeout,
            bookmarks,
        };
        return start_watch(state, epoch, watch);
    }
    list(&inner, r, &res, namespace.as_deref(), &query)
}

fn list(
    inner: &Inner,
    r: usize,
    res: &Resource,
    namespace: Option<&str>,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let mut start = 0usize;
    if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        let Some((rv, offset)) = token
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)))
        else {
            return status(400, "BadRequest", "invalid continue token");
        };
        if rv < inner.oldest {
            return status(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            );
        }
        start = offset;
    }
    let all: Vec<&Value> = inner
        .objects
        .iter()
        .filter(|((i, ns, _), _)| *i == r && namespace.is_none_or(|n| n == ns))
        .map(|(_, v)| v)
        .collect();
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0 && query.get("resourceVersion").is_none_or(|v| v != "0"))
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|&o| {
            let mut o = o.clone();
            if !res.custom {
                if let Some(m) = o.as_object_mut() {
                    m.remove("kind");
                    m.remove("apiVersion");
                }
            }
            o
        })
        .collect();
    let end = start + page.len();
    let mut metadata = json!({"resourceVersion": inner.rv.to_string()});
    if res.custom {
        metadata["continue"] = json!("");
    }
    if end < all.len() {
        metadata["continue"] = json!(format!("{}-{end}", inner.rv));
        metadata["remainingItemCount"] = json!(all.len() - end);
    }
    let body = json!({
        "kind": format!("{}List", res.kind), "apiVersion": res.api_version, "metadata": metadata, "items": page,
    });
    full(StatusCode::OK, "application/json", format!("{body}\n"))
}

/// A watch request, as [`start_watch`] serves it.
struct WatchRequest {
    /// Index of the resource.
    r: usize,
    namespace: Option<String>,
    /// Changes after this resourceVersion.
    from: u64,
    /// The oldest resourceVersion still in the history.
    oldest: u64,
    timeout_secs: u64,
    bookmarks: bool,
}

fn start_watch(state: &Arc<State>, epoch: u64, watch: WatchRequest) -> Response<Body> {
    let WatchRequest {
        r,
        namespace,
        from,
        oldest,
        timeout_secs,
        bookmarks,
    } = watch;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let state = Arc::clone(state);
    tokio::spawn(async move {
        if from < oldest {
            let line = json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from} ({})", oldest.saturating_sub(1)),
                "reason": "Expired", "code": 410,
            }});
            let _ = tx.send(Bytes::from(format!("{line}\n"))).await;
            return;
        }
        let mut changed = state.changed.subscribe();
        let deadline = tokio::time::sleep(Duration::from_secs(timeout_secs.min(86_400)));
        tokio::pin!(deadline);
        let mut last = from;
        let mut bookmark_seen = state.lock().bookmarks;
        loop {
            let (lines, bookmark_now, res) = {
                let inner = state.lock();
                if inner.epoch != epoch {
                    return;
                }
                let res = inner.resources[r].clone();
                let lines: Vec<(u64, String)> = inner
                    .history
                    .iter()
                    .filter(|e| {
                        e.resource == r
                            && e.rv > last
                            && namespace.as_deref().is_none_or(|n| {
                                e.object["metadata"]["namespace"].as_str() == Some(n)
                            })
                    })
                    .map(|e| {
                        let line = json!({"type": e.kind, "object": e.object});
                        (e.rv, format!("{line}\n"))
                    })
                    .collect();
                // The newest change of this resource type, whatever its namespace.
                let newest = inner
                    .history
                    .iter()
                    .filter(|e| e.resource == r)
                    .map(|e| e.rv)
                    .max();
                (lines, (inner.bookmarks, newest), res)
            };
            for (rv, line) in lines {
                last = rv;
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
            let bookmark = |rv: u64| {
                let object = if res.custom {
                    json!({"apiVersion": res.api_version, "kind": res.kind, "metadata": {"resourceVersion": rv.to_string()}})
                } else {
                    json!({"kind": res.kind, "apiVersion": res.api_version, "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null}})
                };
                Bytes::from(format!(
                    "{}\n",
                    json!({"type": "BOOKMARK", "object": object})
                ))
            };
            if bookmarks && bookmark_now.0 != bookmark_seen {
                bookmark_seen = bookmark_now.0;
                if let Some(rv) = bookmark_now.1.filter(|&rv| rv > last) {
                    last = rv;
                    if tx.send(bookmark(rv)).await.is_err() {
                        return;
                    }
                }
            }
            tokio::select! {
                c = changed.changed() => if c.is_err() { return },
                () = &mut deadline => {
                    if bookmarks {
                        if let Some(rv) = bookmark_now.1.filter(|&rv| rv > last) {
                            let _ = tx.send(bookmark(rv)).await;
                        }
                    }
                    return;
                }
                () = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}
