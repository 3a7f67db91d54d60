//! The push service: `meshmeter.control.v1.Discovery/Stream`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes};
use futures_util::{FutureExt, StreamExt};
use meshmeter_routing::view::{
    Cluster, Node, Service, Subscribe, ViewUpdate, SERVICE_NAME, STREAM_PATH,
};
use meshmeter_selfmetrics::{Counter, Gauge, SelfMetrics};
use tokio::sync::{mpsc, watch, OnceCell};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Code, Status, Streaming};

use crate::source::{Shape, ViewSource};
use crate::view::View;

/// Settings of a [`ControlServer`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long after an input change the server waits for more before pushing: a burst of
    /// changes (a `kubectl apply` of many objects) becomes one push.
    pub coalesce: Duration,
    /// The largest `Subscribe` message accepted; a larger one ends its stream with
    /// `OUT_OF_RANGE`. A node is a few hundred bytes.
    pub max_message_bytes: usize,
    /// How long a new stream may take to send its first `Subscribe`.
    pub first_message_timeout: Duration,
    /// How many compiled views are remembered by version, so that a sidecar reconnecting with
    /// one of them gets only what changed since. Only views some sidecar still holds, or that
    /// were current one input change ago, stay in memory; the rest are forgotten.
    pub history: usize,
    /// HTTP/2 keepalive pings towards sidecars (a vanished sidecar's stream is ended after
    /// this plus 10 s without an answer).
    pub keepalive: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            coalesce: Duration::from_millis(50),
            max_message_bytes: 1 << 20,
            first_message_timeout: Duration::from_secs(10),
            history: 4096,
            keepalive: Duration::from_secs(30),
        }
    }
}

/// Why a stream was refused before it started, as a fixed label set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The first `Subscribe` had no node, or a node without an id.
    NoNode,
    /// The first message could not be decoded (malformed or over the size limit).
    BadMessage,
    /// No first message within [`ServerConfig::first_message_timeout`].
    Timeout,
}

impl Refusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoNode => "no_node",
            Refusal::BadMessage => "bad_message",
            Refusal::Timeout => "timeout",
        }
    }
}

/// The control plane's own metrics (`meshmeter_control_*`), registered in a
/// [`SelfMetrics`] registry.
#[derive(Clone, Debug)]
pub struct ControlStats {
    /// Sidecars with an open stream.
    pub connected: Gauge,
    /// Full updates sent.
    pub pushes_full: Counter,
    /// Incremental updates sent.
    pub pushes_incremental: Counter,
    /// Updates acknowledged.
    pub acks: Counter,
    /// Updates refused by a sidecar.
    pub nacks: Counter,
    /// Sum of the times from sending an update to its acknowledgement, microseconds.
    pub ack_latency_us: Counter,
    /// Views compiled.
    pub compiles: Counter,
    /// Input changes pushed (after coalescing).
    pub generations: Counter,
    refused: [Counter; 3],
}

impl ControlStats {
    /// Registers the metrics in `metrics`.
    pub fn new(metrics: &SelfMetrics) -> Self {
        let pushes = |kind| {
            metrics.counter(
                "meshmeter_control_pushes_total",
                "View updates sent to sidecars, by kind (full or incremental).",
                &[("kind", kind)],
            )
        };
        let refused = |why: Refusal| {
            metrics.counter(
                "meshmeter_control_streams_refused_total",
                "Streams refused before their first update, by reason.",
                &[("reason", why.as_str())],
            )
        };
        ControlStats {
            connected: metrics.gauge(
                "meshmeter_control_connected_sidecars",
                "Sidecars with an open stream.",
                &[],
            ),
            pushes_full: pushes("full"),
            pushes_incremental: pushes("incremental"),
            acks: metrics.counter(
                "meshmeter_control_acks_total",
                "View updates sidecars acknowledged.",
                &[],
            ),
            nacks: metrics.counter(
                "meshmeter_control_nacks_total",
                "View updates sidecars refused (they keep their previous view).",
                &[],
            ),
            ack_latency_us: metrics.counter(
                "meshmeter_control_push_ack_microseconds_total",
                "Sum of the times from sending an update to its acknowledgement (divide by meshmeter_control_acks_total for the mean).",
                &[],
            ),
            compiles: metrics.counter(
                "meshmeter_control_compiles_total",
                "Views compiled (once per workload shape and input change).",
                &[],
            ),
            generations: metrics.counter(
                "meshmeter_control_input_changes_total",
                "Input changes pushed to sidecars (bursts coalesced into one).",
                &[],
            ),
            refused: [
                refused(Refusal::NoNode),
                refused(Refusal::BadMessage),
                refused(Refusal::Timeout),
            ],
        }
    }

    /// Streams refused for `why`.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize].get()
    }
}

/// An update encoded once, sent to every sidecar it is for.
#[derive(Clone, Debug)]
struct Encoded {
    version: u64,
    full: bool,
    bytes: Bytes,
}

impl Encoded {
    fn new(update: &ViewUpdate) -> Self {
        Encoded {
            version: update.version,
            full: update.full,
            bytes: Bytes::from(prost::Message::encode_to_vec(update)),
        }
    }
}

/// One compiled view and the version that names it.
#[derive(Debug)]
struct Compiled {
    version: u64,
    view: View,
    /// Equal for equal interned views (see [`fingerprint`]).
    fingerprint: u64,
    full: OnceLock<Encoded>,
}

/// A hash of an interned view: its keys and the addresses of its resources (interning makes
/// equal resources one allocation), so that finding an equal view compares numbers first.
fn fingerprint(view: &View) -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hash, Hasher};
    // One hasher for the process: fingerprints are only compared within it.
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    let mut h = KEYS.get_or_init(RandomState::new).build_hasher();
    for (k, v) in &view.services {
        k.hash(&mut h);
        (Arc::as_ptr(v) as usize).hash(&mut h);
    }
    for (k, v) in &view.clusters {
        k.hash(&mut h);
        (Arc::as_ptr(v) as usize).hash(&mut h);
    }
    view.inbound.hash(&mut h);
    h.finish()
}

impl Compiled {
    fn full(&self) -> Encoded {
        self.full
            .get_or_init(|| Encoded::new(&self.view.full_update(self.version)))
            .clone()
    }
}

type DiffCell = Arc<OnceLock<Option<Encoded>>>;

#[derive(Default)]
struct Cache {
    generation: u64,
    views: HashMap<Shape, Arc<OnceCell<Arc<Compiled>>>>,
    /// The previous generation's views: an unchanged recompilation keeps its version.
    last: HashMap<Shape, Arc<Compiled>>,
    diffs: HashMap<(u64, u64), DiffCell>,
    /// One copy of each distinct resource across all views.
    services: HashSet<Arc<Service>>,
    clusters: HashSet<Arc<Cluster>>,
}

impl Cache {
    /// Replaces `view`'s resources with equal ones already held.
    fn intern(&mut self, view: &mut View) {
        for s in view.services.values_mut() {
            match self.services.get(&**s) {
                Some(held) => *s = Arc::clone(held),
                None => {
                    self.services.insert(Arc::clone(s));
                }
            }
        }
        for c in view.clusters.values_mut() {
            match self.clusters.get(&**c) {
                Some(held) => *c = Arc::clone(held),
                None => {
                    self.clusters.insert(Arc::clone(c));
                }
            }
        }
    }

    /// A compiled view equal to `view` (interned, with that fingerprint): this shape's last
    /// one, or another shape's.
    fn same_as(&self, shape: &Shape, view: &View, fingerprint: u64) -> Option<Arc<Compiled>> {
        let last = self.last.get(shape).into_iter();
        let current = self.views.values().filter_map(|cell| cell.get());
        last.chain(current)
            .chain(self.last.values())
            .find(|c| c.fingerprint == fingerprint && c.view == *view)
            .cloned()
    }
}

#[derive(Default)]
struct History {
    by_version: HashMap<u64, std::sync::Weak<Compiled>>,
    order: VecDeque<u64>,
}

struct Shared {
    source: Arc<dyn ViewSource>,
    config: ServerConfig,
    stats: ControlStats,
    cache: Mutex<Cache>,
    history: Mutex<History>,
    next_version: AtomicU64,
    generation: watch::Sender<u64>,
    /// Bumped to end every open stream.
    closing: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new_generation(&self) {
        let generation = {
            let mut cache = lock(&self.cache);
            let ready: HashMap<Shape, Arc<Compiled>> = cache
                .views
                .drain()
                .filter_map(|(shape, cell)| cell.get().map(|c| (shape, Arc::clone(c))))
                .collect();
            cache.last = ready;
            cache.diffs.clear();
            // Resources no view holds any more.
            cache.services.retain(|s| Arc::strong_count(s) > 1);
            cache.clusters.retain(|c| Arc::strong_count(c) > 1);
            cache.generation += 1;
            cache.generation
        };
        self.stats.generations.inc();
        self.generation.send_replace(generation);
    }

    /// The current view for `shape`, compiled on first demand in this generation.
    async fn compiled(&self, shape: &Shape, node: &Node) -> Arc<Compiled> {
        let cell = Arc::clone(lock(&self.cache).views.entry(shape.clone()).or_default());
        let compiled = cell
            .get_or_init(|| async {
                let mut view = self.source.view(node);
                self.stats.compiles.inc();
                let fingerprint = {
                    let mut cache = lock(&self.cache);
                    cache.intern(&mut view);
                    let fingerprint = fingerprint(&view);
                    if let Some(same) = cache.same_as(shape, &view, fingerprint) {
                        return same;
                    }
                    fingerprint
                };
                let compiled = Arc::new(Compiled {
                    version: self.next_version.fetch_add(1, Ordering::Relaxed),
                    view,
                    fingerprint,
                    full: OnceLock::new(),
                });
                self.remember(&compiled);
                compiled
            })
            .await;
        Arc::clone(compiled)
    }

    fn remember(&self, compiled: &Arc<Compiled>) {
        let mut history = lock(&self.history);
        history
            .by_version
            .insert(compiled.version, Arc::downgrade(compiled));
        history.order.push_back(compiled.version);
        while history.order.len() > self.config.history.max(1) {
            if let Some(old) = history.order.pop_front() {
                history.by_version.remove(&old);
            }
        }
    }

    fn by_version(&self, version: u64) -> Option<Arc<Compiled>> {
        lock(&self.history)
            .by_version
            .get(&version)
            .and_then(std::sync::Weak::upgrade)
    }

    /// The update from `old` to `new`, computed and encoded once per pair and generation.
    fn diff(&self, old: &Compiled, new: &Compiled) -> Option<Encoded> {
        let cell = Arc::clone(
            lock(&self.cache)
                .diffs
                .entry((old.version, new.version))
                .or_default(),
        );
        cell.get_or_init(|| {
            old.view
                .diff(&new.view, new.version)
                .map(|u| Encoded::new(&u))
        })
        .clone()
    }
}

/// The control plane's push service as a `tower::Service` (what tonic's generated code would
/// provide), to run with [`ControlServer::serve`].
///
/// Every stream starts with a `Subscribe` naming the sidecar's [`Node`]; the server answers
/// with the full view (or, when the sidecar says which version it holds and that version is
/// remembered, with only what differs, or nothing), then with an incremental update whenever
/// its view changes. Views are compiled once per [`Shape`] and input change; a burst of
/// changes within [`ServerConfig::coalesce`] is pushed once.
#[derive(Clone)]
pub struct ControlServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl ControlServer {
    /// A server of `source`'s views; its metrics go into `metrics`. Must be called within a
    /// Tokio runtime: a task follows the source's changes (it ends with the source's change
    /// stream, or when the server is dropped).
    pub fn new(source: Arc<dyn ViewSource>, metrics: &SelfMetrics, config: ServerConfig) -> Self {
        // Versions start at the clock (microseconds) so that a restarted control plane never
        // mistakes a version a sidecar got from its predecessor for one of its own.
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX >> 1))
            .max(1);
        let mut changes = source.changes();
        let shared = Arc::new(Shared {
            source,
            stats: ControlStats::new(metrics),
            cache: Mutex::new(Cache::default()),
            history: Mutex::new(History::default()),
            next_version: AtomicU64::new(start),
            generation: watch::Sender::new(0),
            closing: watch::Sender::new(0),
            config,
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        let coalesce = shared.config.coalesce;
        tokio::spawn(async move {
            while changes.next().await.is_some() {
                tokio::time::sleep(coalesce).await;
                // Whatever else arrived meanwhile is part of this push.
                while let Some(Some(())) = changes.next().now_or_never() {}
                let Some(shared) = weak.upgrade() else { break };
                shared.new_generation();
                tracing::debug!(
                    generation = *shared.generation.borrow(),
                    "inputs changed; pushing"
                );
            }
        });
        ControlServer { shared }
    }

    /// The server's counters.
    pub fn stats(&self) -> &ControlStats {
        &self.shared.stats
    }

    /// Ends every stream open now (sidecars then reconnect, here or elsewhere); later ones
    /// are accepted as usual. [`ControlServer::serve`] calls it at shutdown, since a graceful HTTP/2
    /// shutdown waits for open streams to end.
    pub fn close_streams(&self) {
        self.shared.closing.send_modify(|epoch| *epoch += 1);
    }

    /// Serves on `listener` until `shutdown` completes, then ends every stream.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let me = self.clone();
        let keepalive = self.shared.config.keepalive;
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(keepalive))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .serve_with_incoming_shutdown(self, incoming, async move {
                shutdown.await;
                me.close_streams();
            })
            .await
    }
}

impl NamedService for ControlServer {
    const NAME: &'static str = SERVICE_NAME;
}

/// The response body of one stream: each update as a gRPC message (the 5-byte prefix, then
/// the bytes encoded once for every sidecar they go to, never copied per stream), then the
/// trailers. Nothing per stream outlives the message being written.
struct UpdateBody {
    updates: mpsc::Receiver<Encoded>,
    /// The message whose prefix was just yielded.
    message: Option<Bytes>,
    done: bool,
}

impl http_body::Body for UpdateBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(message))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.updates.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(update)) => {
                let Ok(len) = u32::try_from(update.bytes.len()) else {
                    self.done = true;
                    return Poll::Ready(Some(Err(Status::internal(
                        "a view update over 4 GiB cannot be sent",
                    ))));
                };
                let mut prefix = bytes::BytesMut::with_capacity(5);
                prefix.put_u8(0);
                prefix.put_u32(len);
                self.message = Some(update.bytes);
                Poll::Ready(Some(Ok(http_body::Frame::data(prefix.freeze()))))
            }
            Poll::Ready(None) => {
                self.done = true;
                let mut trailers = http::HeaderMap::new();
                trailers.insert(Status::GRPC_STATUS, (Code::Ok as i32).into());
                Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.message.is_none()
    }
}

/// Reads the first `Subscribe` and starts the stream's task, or says why not.
async fn open_stream(
    shared: Arc<Shared>,
    mut inbound: Streaming<Subscribe>,
    peer: Option<std::net::SocketAddr>,
) -> Result<mpsc::Receiver<Encoded>, Status> {
    let refuse = |why: Refusal, status: Status| {
        shared.stats.refused[why as usize].inc();
        tracing::warn!(peer = ?peer, reason = why.as_str(), error = %status.message(), "control stream refused");
        Err(status)
    };
    let first =
        match tokio::time::timeout(shared.config.first_message_timeout, inbound.message()).await {
            Err(_) => {
                return refuse(
                    Refusal::Timeout,
                    Status::deadline_exceeded(format!(
                        "no Subscribe message within {:?} of opening the stream",
                        shared.config.first_message_timeout
                    )),
                )
            }
            Ok(Err(status)) => {
                let status = Status::new(
                    status.code(),
                    format!("the first Subscribe message: {}", status.message()),
                );
                return refuse(Refusal::BadMessage, status);
            }
            Ok(Ok(None)) => {
                return refuse(
                    Refusal::NoNode,
                    Status::invalid_argument("the stream ended before its first Subscribe message"),
                )
            }
            Ok(Ok(Some(first))) => first,
        };
    let Some(node) = first.node else {
        return refuse(
            Refusal::NoNode,
            Status::invalid_argument(
                "the first Subscribe message must name the node (field 1, 'node')",
            ),
        );
    };
    if node.id.is_empty() {
        return refuse(
            Refusal::NoNode,
            Status::invalid_argument(
                "the first Subscribe message's node has an empty 'id' (expected <pod>.<namespace>)",
            ),
        );
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(run_stream(shared, node, first.acked_version, inbound, tx));
    Ok(rx)
}

/// Decrements the connected gauge however the stream ends.
struct Connected(Gauge);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn run_stream(
    shared: Arc<Shared>,
    node: Node,
    held_version: u64,
    mut inbound: Streaming<Subscribe>,
    tx: mpsc::Sender<Encoded>,
) {
    shared.stats.connected.inc();
    let _connected = Connected(shared.stats.connected.clone());
    let mut generation = shared.generation.subscribe();
    let mut closing = shared.closing.subscribe();
    // What the sidecar holds (assuming it applies what it is sent), and what it acknowledged.
    let mut holds = (held_version != 0)
        .then(|| shared.by_version(held_version))
        .flatten();
    let mut acked = holds.clone();
    let mut pending: Option<(u64, Instant)> = None;
    tracing::info!(node = %node.id, namespace = %node.namespace, held_version, resync = holds.is_some(), "sidecar connected");
    let mut dirty = true;
    loop {
        if dirty {
            dirty = false;
            generation.borrow_and_update();
            // The shape may depend on the inputs (the services the pod backs), so it is asked
            // again after every change.
            let shape = shared.source.shape(&node);
            let current = shared.compiled(&shape, &node).await;
            let update = match &holds {
                Some(h) if Arc::ptr_eq(h, &current) => None,
                Some(h) => shared.diff(h, &current),
                None => Some(current.full()),
            };
            holds = Some(current);
            if let Some(update) = update {
                let version = update.version;
                if update.full {
                    shared.stats.pushes_full.inc();
                } else {
                    shared.stats.pushes_incremental.inc();
                }
                tracing::debug!(node = %node.id, version, full = update.full, "pushing");
                if tx.send(update).await.is_err() {
                    break;
                }
                pending = Some((version, Instant::now()));
            }
        }
        tokio::select! {
            changed = generation.changed() => match changed {
                Ok(()) => dirty = true,
                Err(_) => break,
            },
            _ = closing.changed() => break,
            () = tx.closed() => break,
            message = inbound.message() => match message {
                Ok(Some(sub)) => {
                    if !sub.error.is_empty() {
                        shared.stats.nacks.inc();
                        tracing::warn!(node = %node.id, version = pending.map(|p| p.0), held_version = sub.acked_version, error = %sub.error, "sidecar refused an update; it keeps its previous view");
                        // It holds what it last acknowledged: later updates start from that.
                        holds = acked.clone();
                        pending = None;
                    } else {
                        shared.stats.acks.inc();
                        if let Some((version, sent)) = pending {
                            if version == sub.acked_version {
                                let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                                shared.stats.ack_latency_us.inc_by(us);
                                acked = holds.clone();
                                pending = None;
                            }
                        }
                        tracing::debug!(node = %node.id, version = sub.acked_version, "ack");
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(node = %node.id, error = %status, "stream read failed");
                    break;
                }
            },
        }
    }
    tracing::info!(node = %node.id, "sidecar disconnected");
}

impl<B> tower::Service<http::Request<B>> for ControlServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == STREAM_PATH {
            let shared = Arc::clone(&self.shared);
            return Box::pin(async move {
                let peer = req
                    .extensions()
                    .get::<tonic::transport::server::TcpConnectInfo>()
                    .and_then(tonic::transport::server::TcpConnectInfo::remote_addr);
                let limit = shared.config.max_message_bytes;
                let inbound = Streaming::new_request(
                    tonic_prost::ProstDecoder::<Subscribe>::default(),
                    req.into_body(),
                    None,
                    Some(limit),
                );
                Ok(match open_stream(shared, inbound, peer).await {
                    Ok(updates) => {
                        let mut response = http::Response::new(Body::new(UpdateBody {
                            updates,
                            message: None,
                            done: false,
                        }));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            tonic::metadata::GRPC_CONTENT_TYPE,
                        );
                        response
                    }
                    Err(status) => status.into_http(),
                })
            });
        }
        Box::pin(async move {
            let mut response = http::Response::new(Body::default());
            let headers = response.headers_mut();
            headers.insert(Status::GRPC_STATUS, (Code::Unimplemented as i32).into());
            headers.insert(
                http::header::CONTENT_TYPE,
                tonic::metadata::GRPC_CONTENT_TYPE,
            );
            Ok(response)
        })
    }
}
