//! Driving the load and checking the result.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use meshmeter_attributes::Manifest;
use meshmeter_httpget::http_get;
use meshmeter_wire::{Encoding, MixerClient, ReportEncoder};

use crate::bags::{BagShape, Workload};

/// What to send, where, and how much.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The server's gRPC address (`host:port`).
    pub target: String,
    /// The server's metrics endpoint to verify against (`host:port` or
    /// `http://host:port/path`); no verification without it.
    pub metrics: Option<String>,
    /// The counter that must grow by the `connection.received.bytes` sent (the seed's).
    pub verify_metric: String,
    /// Bags per request.
    pub batch: usize,
    /// Concurrent senders (requests in flight).
    pub concurrency: usize,
    /// HTTP/2 connections the senders share, round robin (`None`: one per sender). Istio's
    /// proxies multiplex their reports over a few connections; one per sender is the
    /// worst case for a server, which then reads and writes once per request.
    pub connections: Option<usize>,
    /// Stop after this long...
    pub duration: Option<Duration>,
    /// ...or after this many requests (whichever comes first; one of them is required).
    pub requests: Option<u64>,
    /// Attributes per bag.
    pub shape: BagShape,
    /// How many distinct pre-encoded requests to cycle through.
    pub distinct: usize,
    /// Send a fresh `x-meshmeter-report-id` with every request (as meshmeter's proxy does),
    /// so that the server's duplicate filter is on the measured path.
    pub report_id: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            target: "127.0.0.1:9091".into(),
            metrics: None,
            verify_metric: "istio_mongo_received_bytes".into(),
            batch: 100,
            concurrency: 4,
            connections: None,
            duration: Some(Duration::from_secs(10)),
            requests: None,
            shape: BagShape::Small,
            distinct: 16,
            report_id: false,
        }
    }
}

/// The outcome of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadSummary {
    /// Bags accepted per second.
    pub bags_per_sec: f64,
    /// Requests accepted per second.
    pub reports_per_sec: f64,
    /// Request latency percentiles and maximum, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// Requests accepted.
    pub requests: u64,
    /// Bags accepted.
    pub bags: u64,
    /// Requests that failed.
    pub errors: u64,
    /// The first error's text.
    pub first_error: Option<String>,
    /// Wall time of the load.
    pub elapsed: Duration,
    /// `connection.received.bytes` in accepted bags.
    pub expected: u64,
    /// How much the verified counter grew (when verifying).
    pub observed: Option<f64>,
    /// Whether it grew by exactly `expected` (false when not verifying).
    pub verified: bool,
}

impl LoadSummary {
    /// The summary as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "bags_per_sec": self.bags_per_sec,
            "reports_per_sec": self.reports_per_sec,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "requests": self.requests,
            "bags": self.bags,
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed_sec": self.elapsed.as_secs_f64(),
            "expected_received_bytes": self.expected,
            "observed_received_bytes": self.observed,
            "verified": self.verified,
        })
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// The target cannot be reached.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// The address.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The metrics endpoint could not be reached or its answer read.
    #[error("cannot scrape the metrics endpoint: {0}")]
    Get(#[from] meshmeter_httpget::GetError),
    /// The metrics endpoint answered with an error status.
    #[error("cannot scrape {url}: {reason}")]
    Scrape {
        /// The endpoint.
        url: String,
        /// Why.
        reason: String,
    },
}

fn metrics_endpoint(text: &str) -> Result<(SocketAddr, String), LoadError> {
    let rest = text.strip_prefix("http://").unwrap_or(text);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/metrics".to_owned()),
    };
    let addr = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| LoadError::Options(format!("--metrics '{text}' is not host:port[/path]")))?;
    Ok((addr, path))
}

async fn counter(endpoint: &(SocketAddr, String), name: &str) -> Result<f64, LoadError> {
    let url = format!("http://{}{}", endpoint.0, endpoint.1);
    let (status, body) = http_get(endpoint.0, &endpoint.1).await?;
    if status != 200 {
        return Err(LoadError::Scrape {
            url,
            reason: format!("HTTP {status}"),
        });
    }
    Ok(body
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// Runs the load; prints nothing (the caller renders the summary).
pub async fn run(options: LoadOptions) -> Result<LoadSummary, LoadError> {
    check(&options)?;
    let pool = request_pool(&options);
    let endpoint = options
        .metrics
        .as_deref()
        .map(metrics_endpoint)
        .transpose()?;
    let before = match &endpoint {
        Some(e) => Some(counter(e, &options.verify_metric).await?),
        None => None,
    };
    let clients = connect(&options).await?;
    let load = drive(&options, clients, pool).await;
    let (observed, verified) = match (&endpoint, before) {
        (Some(e), Some(before)) => {
            let grown = settled_growth(e, &options.verify_metric, before, load.expected).await?;
            (Some(grown), grown == load.expected as f64)
        }
        _ => (None, false),
    };
    Ok(load.summary(options.batch as u64, observed, verified))
}

fn check(options: &LoadOptions) -> Result<(), LoadError> {
    if options.batch == 0
        || options.concurrency == 0
        || options.distinct == 0
        || options.connections == Some(0)
    {
        return Err(LoadError::Options(
            "--batch, --concurrency, --connections and the request pool must be at least 1".into(),
        ));
    }
    if options.duration.is_none() && options.requests.is_none() {
        return Err(LoadError::Options("give --duration or --requests".into()));
    }
    Ok(())
}

/// A pre-encoded request and the `connection.received.bytes` its bags carry.
type Request = (Bytes, u64);

/// `options.distinct` requests of `options.batch` bags each, encoded once so that the load
/// measures the server rather than the encoder.
fn request_pool(options: &LoadOptions) -> Arc<Vec<Request>> {
    let manifest = Manifest::istio();
    let workload = Workload::new(&manifest, options.shape);
    let encoder = ReportEncoder::new(&manifest, Encoding::Delta);
    Arc::new(
        (0..options.distinct as u64)
            .map(|r| {
                let mut received = 0u64;
                let bags: Vec<_> = (0..options.batch as u64)
                    .map(|i| {
                        let (bag, rx) = workload.bag(r * options.batch as u64 + i);
                        received += rx as u64;
                        bag
                    })
                    .collect();
                (Bytes::from(encoder.encode_to_vec(&bags)), received)
            })
            .collect(),
    )
}

/// One client per sender, sharing `options.connections` connections round robin.
async fn connect(options: &LoadOptions) -> Result<Vec<MixerClient>, LoadError> {
    let connections = options
        .connections
        .unwrap_or(options.concurrency)
        .min(options.concurrency);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(
            MixerClient::connect(&options.target)
                .await
                .map_err(|source| LoadError::Connect {
                    target: options.target.clone(),
                    source,
                })?,
        );
    }
    // Clones of a client share its connection: their requests are streams of one HTTP/2
    // connection.
    Ok((0..options.concurrency)
        .map(|i| channels[i % connections].clone())
        .collect())
}

/// What the senders did.
#[derive(Default)]
struct Load {
    /// Latencies of accepted requests, in microseconds, sorted.
    latencies: Vec<u32>,
    requests: u64,
    errors: u64,
    /// `connection.received.bytes` in accepted bags.
    expected: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Load {
    fn summary(self, batch: u64, observed: Option<f64>, verified: bool) -> LoadSummary {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        let latencies = &self.latencies;
        LoadSummary {
            bags_per_sec: (self.requests * batch) as f64 / secs,
            reports_per_sec: self.requests as f64 / secs,
            p50_ms: percentile(latencies, 0.50),
            p99_ms: percentile(latencies, 0.99),
            max_ms: latencies.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
            requests: self.requests,
            bags: self.requests * batch,
            errors: self.errors,
            first_error: self.first_error,
            elapsed: self.elapsed,
            expected: self.expected,
            observed,
            verified,
        }
    }
}

/// What the senders share: the requests, the count of claimed requests, the stop flag and the
/// first error.
#[derive(Clone)]
struct Shared {
    pool: Arc<Vec<Request>>,
    claimed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    first_error: Arc<std::sync::Mutex<Option<String>>>,
    limit: Option<u64>,
    report_id: bool,
}

/// Runs one sender per client until the duration passes or the requests are claimed.
async fn drive(options: &LoadOptions, clients: Vec<MixerClient>, pool: Arc<Vec<Request>>) -> Load {
    let shared = Shared {
        pool,
        claimed: Arc::new(AtomicU64::new(0)),
        stop: Arc::new(AtomicBool::new(false)),
        first_error: Arc::new(std::sync::Mutex::new(None)),
        limit: options.requests,
        report_id: options.report_id,
    };
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(t, client)| tokio::spawn(send(t, client, shared.clone())))
        .collect();
    if let Some(d) = options.duration {
        let stop = Arc::clone(&shared.stop);
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut load = Load::default();
    for task in tasks {
        let sent = task.await.expect("load task");
        load.latencies.extend(sent.latencies);
        load.requests += sent.requests;
        load.errors += sent.errors;
        load.expected += sent.expected;
    }
    load.elapsed = started.elapsed();
    load.latencies.sort_unstable();
    load.first_error = shared
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    load
}

/// One sender: claims requests and sends them one at a time, starting at pool entry `t`.
async fn send(t: usize, client: MixerClient, shared: Shared) -> Load {
    let mut load = Load::default();
    let mut j = t;
    while !shared.stop.load(Ordering::Relaxed) {
        let n = shared.claimed.fetch_add(1, Ordering::Relaxed);
        if shared.limit.is_some_and(|l| n >= l) {
            break;
        }
        let (bytes, rx) = &shared.pool[j % shared.pool.len()];
        j += 1;
        let sent = Instant::now();
        let id = shared.report_id.then(|| client.next_report_id());
        match client.report(bytes.clone(), id.as_ref()).await {
            Ok(()) => {
                load.requests += 1;
                load.expected += rx;
                load.latencies
                    .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            Err(status) => {
                load.errors += 1;
                let mut first = shared.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }
    load
}

/// How much the counter `name` grew since `before`, once it reached `expected` or ten seconds
/// passed (servers may apply reports asynchronously).
async fn settled_growth(
    endpoint: &(SocketAddr, String),
    name: &str,
    before: f64,
    expected: u64,
) -> Result<f64, LoadError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let grown = counter(endpoint, name).await? - before;
        if grown == expected as f64 || Instant::now() > deadline {
            return Ok(grown);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
