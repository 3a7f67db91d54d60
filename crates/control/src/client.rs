//! The sidecar's side of the push API.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::time::Duration;

use http::uri::PathAndQuery;
use meshmeter_routing::view::{Node, Subscribe, ViewUpdate, STREAM_PATH};
use tokio::sync::{mpsc, watch};
use tonic::client::Grpc;
use tonic::transport::Endpoint;
use tonic::Request;

/// Settings of a [`ControlClient`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The control plane (`host:port` or `http://host:port`).
    pub addr: String,
    /// Who this sidecar is.
    pub node: Node,
    /// The first wait before reconnecting; it doubles after every failed attempt.
    pub backoff_initial: Duration,
    /// The longest wait between attempts.
    pub backoff_max: Duration,
    /// The largest update accepted (a view with thousands of endpoints is a few MB).
    pub max_message_bytes: usize,
    /// Connect timeout, and the HTTP/2 keepalive timeout that notices a vanished control plane.
    pub timeout: Duration,
}

impl ClientConfig {
    /// Defaults for `node` talking to `addr`: backoff 200 ms doubling to 15 s, 64 MiB
    /// updates, 5 s timeouts.
    pub fn new(addr: impl Into<String>, node: Node) -> Self {
        ClientConfig {
            addr: addr.into(),
            node,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(15),
            max_message_bytes: 64 << 20,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A client that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control plane address is not usable.
    #[error("control plane address '{addr}': {reason}")]
    Address {
        /// The address given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The node has no id.
    #[error("the node has an empty id (expected <pod>.<namespace>)")]
    NoNodeId,
}

/// What a [`ControlClient`] has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStatus {
    /// Whether a stream is open now.
    pub connected: bool,
    /// The version of the last update applied (0: none yet).
    pub version: u64,
    /// Updates applied.
    pub applied: u64,
    /// Updates refused (the callback's error).
    pub refused: u64,
    /// Streams opened.
    pub connects: u64,
}

/// Follows the control plane's updates for one sidecar: connects, names the node, hands each
/// update to a callback, acknowledges it (or refuses it with the callback's error), and
/// reconnects with capped, jittered backoff when the stream ends. While the control plane is
/// away nothing is applied, so the caller's view stays as it was; on return the client sends
/// the version it holds and gets only what changed since (everything, if the control plane
/// does not know that version).
#[derive(Debug)]
pub struct ControlClient {
    config: ClientConfig,
    endpoint: Endpoint,
    status: watch::Sender<ClientStatus>,
}

/// How one stream ended.
enum Ended {
    /// It was open and delivered updates or stayed open: reconnect promptly.
    WasUp(String),
    /// It could not be opened.
    Failed(String),
}

impl ControlClient {
    /// A client for `config`; nothing is connected until [`ControlClient::run`].
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        if config.node.id.is_empty() {
            return Err(ClientError::NoNodeId);
        }
        let uri = if config.addr.contains("://") {
            config.addr.clone()
        } else {
            format!("http://{}", config.addr)
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| ClientError::Address {
                addr: config.addr.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(config.timeout)
            .tcp_nodelay(true)
            // A full view of a few thousand endpoints arrives without waiting for window
            // updates.
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(2 << 20))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(config.timeout)
            .keep_alive_while_idle(true);
        Ok(ControlClient {
            config,
            endpoint,
            status: watch::Sender::new(ClientStatus::default()),
        })
    }

    /// Follows what the client does.
    pub fn status(&self) -> watch::Receiver<ClientStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` completes, calling `apply` with every update in order. `apply`
    /// must apply all of an update or none of it; its `Err` refuses the update (the control
    /// plane logs and counts the reason).
    pub async fn run<F>(&self, mut apply: F, shutdown: impl Future<Output = ()>)
    where
        F: FnMut(&ViewUpdate) -> Result<(), String> + Send,
    {
        tokio::pin!(shutdown);
        let hasher = RandomState::new();
        let mut backoff = self.config.backoff_initial;
        let mut attempt: u64 = 0;
        loop {
            let ended = tokio::select! {
                () = &mut shutdown => return,
                ended = self.session(&mut apply) => ended,
            };
            self.status.send_modify(|s| s.connected = false);
            match ended {
                Ended::WasUp(why) => {
                    tracing::warn!(addr = %self.config.addr, reason = %why, "control plane stream ended; keeping the current view and reconnecting");
                    backoff = self.config.backoff_initial;
                }
                Ended::Failed(why) => {
                    tracing::warn!(addr = %self.config.addr, reason = %why, retry_in = ?backoff, "cannot reach the control plane; keeping the current view");
                }
            }
            // Jitter (50-100 %) keeps a thousand sidecars from reconnecting in lockstep.
            attempt += 1;
            let fraction = 0.5 + (hasher.hash_one(attempt) % 1000) as f64 / 2000.0;
            let wait = backoff.mul_f64(fraction);
            backoff = (backoff * 2).min(self.config.backoff_max);
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn session<F>(&self, apply: &mut F) -> Ended
    where
        F: FnMut(&ViewUpdate) -> Result<(), String> + Send,
    {
        let channel = match self.endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return Ended::Failed(format!("connect: {}", error_chain(&e))),
        };
        let mut grpc = Grpc::new(channel).max_decoding_message_size(self.config.max_message_bytes);
        let (tx, rx) = mpsc::channel::<Subscribe>(4);
        let held = self.status.borrow().version;
        let hello = Subscribe {
            node: Some(self.config.node.clone()),
            acked_version: held,
            error: String::new(),
        };
        if tx.send(hello).await.is_err() {
            return Ended::Failed("request stream closed".into());
        }
        let outbound =
            futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|m| (m, rx)) });
        if let Err(e) = grpc.ready().await {
            return Ended::Failed(format!("connect: {}", error_chain(&e)));
        }
        let codec = tonic_prost::ProstCodec::<Subscribe, ViewUpdate>::default();
        let response = grpc
            .streaming(
                Request::new(outbound),
                PathAndQuery::from_static(STREAM_PATH),
                codec,
            )
            .await;
        let mut inbound = match response {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return Ended::Failed(format!(
                    "the control plane refused the stream: {:?}: {}",
                    status.code(),
                    status.message()
                ))
            }
        };
        self.status.send_modify(|s| {
            s.connected = true;
            s.connects += 1;
        });
        tracing::info!(addr = %self.config.addr, node = %self.config.node.id, held_version = held, "connected to the control plane");
        loop {
            let update = match inbound.message().await {
                Ok(Some(u)) => u,
                Ok(None) => return Ended::WasUp("the control plane closed the stream".into()),
                Err(status) => {
                    return Ended::WasUp(format!("{:?}: {}", status.code(), status.message()))
                }
            };
            let reply = match apply(&update) {
                Ok(()) => {
                    self.status.send_modify(|s| {
                        s.version = update.version;
                        s.applied += 1;
                    });
                    tracing::debug!(
                        version = update.version,
                        full = update.full,
                        "view update applied"
                    );
                    Subscribe {
                        node: None,
                        acked_version: update.version,
                        error: String::new(),
                    }
                }
                Err(error) => {
                    let mut held = 0;
                    self.status.send_modify(|s| {
                        s.refused += 1;
                        held = s.version;
                    });
                    tracing::warn!(version = update.version, error = %error, "view update refused; keeping the previous view");
                    Subscribe {
                        node: None,
                        acked_version: held,
                        error: if error.is_empty() {
                            "refused".into()
                        } else {
                            error
                        },
                    }
                }
            };
            if tx.send(reply).await.is_err() {
                return Ended::WasUp("request stream closed".into());
            }
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
