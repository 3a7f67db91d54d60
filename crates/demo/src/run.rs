//! The demo's orchestration: start everything, show the metrics, stop cleanly, check.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshmeter_attributes::Manifest;
use meshmeter_proxy::{
    Identity, ListenerConfig, MixerTransport, Proxy, ProxyStats, ReportInterval, ReportQueue,
    ReportSchema, ReportSender, SenderConfig,
};
use meshmeter_server::{ServerOptions, TelemetryServer};
use tokio::sync::watch;

use crate::client::{self, ClientCounts};
use crate::mongo::{self, ServerCounts};
use crate::prometheus::{self, Prometheus};
use meshmeter_httpget::http_get;

/// The seed's configuration (`examples/tcp-metrics.yaml`), used when no `--config` is given.
pub const SEED_CONFIG: &str = include_str!("../../../examples/tcp-metrics.yaml");

/// The Bookinfo workloads of the scenario, by loopback address.
const WORKLOADS: &str = "# The demo's workloads, as Kubernetes would describe the Bookinfo pods.
workloads:
- name: ratings-v2
  namespace: default
  labels: {app: ratings, version: v2}
  ips: [127.0.0.2]
- name: mongodb-v1
  namespace: default
  labels: {app: mongodb, version: v1}
  ips: [127.0.0.3]
  services: [mongodb.default.svc.cluster.local]
";

const RATINGS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const MONGODB_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// How to run the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Stop after this long; `None` runs until the shutdown future completes.
    pub duration: Option<Duration>,
    /// The sidecar's report interval (the seed's minimum, 1 s, by default).
    pub report_interval: Duration,
    /// Configuration files or directories instead of the seed's `tcp-metrics.yaml`.
    pub config: Vec<PathBuf>,
    /// Start this Prometheus binary against the server.
    pub prometheus: Option<PathBuf>,
    /// Where the server serves /metrics (port 0: any free port).
    pub metrics_addr: SocketAddr,
    /// How often the display refreshes.
    pub refresh: Duration,
    /// Working files (configuration copy, workloads, access log, Prometheus data) go here;
    /// a fresh temporary directory when `None`.
    pub work_dir: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            duration: None,
            report_interval: Duration::from_secs(1),
            config: Vec::new(),
            prometheus: None,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            refresh: Duration::from_secs(1),
            work_dir: None,
        }
    }
}

/// What the demo measured, for the caller to check or print.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DemoSummary {
    /// Bytes the ratings client sent.
    pub client_sent: u64,
    /// Bytes the ratings client received.
    pub client_received: u64,
    /// Connections the client opened.
    pub connections: u64,
    /// The final `istio_mongo_received_bytes` samples (series text -> value).
    pub received_bytes: BTreeMap<String, f64>,
    /// The final `istio_mongo_sent_bytes` samples.
    pub sent_bytes: BTreeMap<String, f64>,
    /// Every sample of the final scrape (name{labels} -> value).
    pub samples: BTreeMap<String, f64>,
    /// Whether the metrics equal what the client counted.
    pub agree: bool,
    /// Prometheus' answer to `istio_mongo_received_bytes`, when Prometheus ran.
    pub prometheus_result: Option<String>,
    /// The server's /metrics URL.
    pub metrics_url: String,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A working file could not be written.
    #[error("cannot prepare {path}: {source}")]
    Files {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The telemetry server did not start (invalid configuration, ...).
    #[error("telemetry server: {0}")]
    Server(#[from] meshmeter_server::ServerError),
    /// An address could not be bound (loopback aliases 127.0.0.2/3 need Linux).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The sidecar did not start.
    #[error("sidecar proxy: {0}")]
    Proxy(String),
    /// Prometheus did not start.
    #[error("prometheus: {0}")]
    Prometheus(std::io::Error),
    /// Writing the display failed (a closed pipe).
    #[error("output: {0}")]
    Output(std::io::Error),
}

fn write_file(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|source| DemoError::Files {
        path: path.to_owned(),
        source,
    })
}

/// Samples of the metrics named `name` in Prometheus text.
fn samples_of(text: &str, name: &str) -> BTreeMap<String, f64> {
    all_samples(text)
        .into_iter()
        .filter(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.is_empty())
        })
        .collect()
}

fn all_samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Runs the scenario until `options.duration` passes or `shutdown` completes, printing to
/// `out`.
pub async fn run(
    options: DemoOptions,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()> + Send,
) -> Result<DemoSummary, DemoError> {
    let started = Instant::now();
    let files = Files::prepare(&options)?;
    // 1. The telemetry server, with the seed's configuration and Istio's defaults.
    let server = Server::start(&options, &files).await?;
    // 2. mongodb-v1: the database stand-in and its inbound sidecar, both on 127.0.0.3.
    let mongodb = Mongodb::start(options.report_interval, server.grpc_addr).await?;
    // 3. Optionally, Prometheus scraping the server as job istio-mesh.
    let prometheus = start_prometheus(&options, server.metrics_addr, &files.dir).await?;
    // 4. ratings-v2 sends traffic from 127.0.0.2.
    let client_counts = Arc::new(ClientCounts::default());
    let (stop_client, client_stop) = watch::channel(false);
    let client_task = tokio::spawn(client::run(
        SocketAddr::new(IpAddr::V4(RATINGS_IP), 0),
        mongodb.sidecar_addr,
        Arc::clone(&client_counts),
        client_stop,
    ));
    let metrics_url = format!("http://{}/metrics", server.metrics_addr);
    print_banner(out, &files, &server, &mongodb, prometheus.as_ref())?;

    // 5. Show the seed's metrics while traffic flows.
    show_while_running(
        out,
        &options,
        shutdown,
        server.metrics_addr,
        started,
        &client_counts,
    )
    .await?;

    // 6. Stop the client, let the sidecar send its close reports, and check.
    let _ = stop_client.send(true);
    let _ = client_task.await;
    let counted = Counted::of(&client_counts);
    let last = final_scrape(server.metrics_addr, options.report_interval, &counted).await;
    print_final(out, &last, &counted)?;
    let prometheus_result = match prometheus {
        Some(prom) => query_prometheus(out, prom).await?,
        None => None,
    };

    mongodb.stop().await;
    server.stop().await?;
    Ok(DemoSummary {
        client_sent: counted.sent,
        client_received: counted.received,
        connections: counted.connections,
        samples: all_samples(&last.text),
        agree: last.agree,
        received_bytes: last.received_bytes,
        sent_bytes: last.sent_bytes,
        prometheus_result,
        metrics_url,
    })
}

/// The demo's working files.
struct Files {
    dir: PathBuf,
    /// What the server loads: the seed's configuration (copied into `dir`) or the user's.
    config: Vec<PathBuf>,
    workloads: PathBuf,
    access_log: PathBuf,
}

impl Files {
    fn prepare(options: &DemoOptions) -> Result<Self, DemoError> {
        let dir = match &options.work_dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("meshmeter-demo-{}", std::process::id())),
        };
        std::fs::create_dir_all(dir.join("config")).map_err(|source| DemoError::Files {
            path: dir.clone(),
            source,
        })?;
        let config = if options.config.is_empty() {
            let path = dir.join("config/tcp-metrics.yaml");
            write_file(&path, SEED_CONFIG)?;
            vec![dir.join("config")]
        } else {
            options.config.clone()
        };
        let workloads = dir.join("workloads.yaml");
        write_file(&workloads, WORKLOADS)?;
        let access_log = dir.join("access.log");
        Ok(Files {
            dir,
            config,
            workloads,
            access_log,
        })
    }
}

/// The telemetry server, running until [`Server::stop`].
struct Server {
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), meshmeter_server::ServerError>>,
}

impl Server {
    async fn start(options: &DemoOptions, files: &Files) -> Result<Self, DemoError> {
        let server = TelemetryServer::start(ServerOptions {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: options.metrics_addr,
            config_paths: files.config.clone(),
            workloads: Some(files.workloads.clone()),
            log_output: Some(meshmeter_stdio::Output::File(files.access_log.clone())),
            ..ServerOptions::default()
        })
        .await?;
        let (grpc_addr, metrics_addr) = (server.grpc_addr(), server.metrics_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Ok(Server {
            grpc_addr,
            metrics_addr,
            stop,
            task,
        })
    }

    /// Stops the server; its error, if it failed while serving.
    async fn stop(self) -> Result<(), DemoError> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => tracing::error!(error = %e, "server task failed"),
            Ok(Ok(())) => {}
        }
        Ok(())
    }
}

/// The MongoDB stand-in and its inbound sidecar (listener and report sender).
struct Mongodb {
    mongo_addr: SocketAddr,
    sidecar_addr: SocketAddr,
    report_interval: Duration,
    stop_proxy: watch::Sender<bool>,
    proxy_task: tokio::task::JoinHandle<()>,
    sender_task: tokio::task::JoinHandle<()>,
    mongo_task: tokio::task::JoinHandle<()>,
}

impl Mongodb {
    async fn start(report_interval: Duration, grpc_addr: SocketAddr) -> Result<Self, DemoError> {
        let bind_error = |source| DemoError::Bind {
            addr: SocketAddr::new(IpAddr::V4(MONGODB_IP), 0),
            source,
        };
        let mongo_listener = mongo::bind(SocketAddr::new(IpAddr::V4(MONGODB_IP), 0))
            .await
            .map_err(bind_error)?;
        let mongo_addr = mongo_listener.local_addr().map_err(bind_error)?;
        let mongo_counts = Arc::new(ServerCounts::default());
        let mongo_task = tokio::spawn(mongo::serve(mongo_listener, mongo_counts));

        let proxy_error = |e: &dyn std::fmt::Display| DemoError::Proxy(e.to_string());
        let manifest = Manifest::istio();
        let stats = Arc::new(ProxyStats::default());
        let queue = Arc::new(ReportQueue::new(100_000, Arc::clone(&stats)));
        let mut listener =
            ListenerConfig::new(SocketAddr::new(IpAddr::V4(MONGODB_IP), 0), mongo_addr);
        listener.report_interval =
            ReportInterval::new(report_interval).map_err(|e| proxy_error(&e))?;
        // Like Istio's sidecar, the proxy knows only its own pod; the server derives the rest
        // (labels, workload, service) from the workloads file.
        let identity = Identity {
            uid: Some(Identity::kubernetes_uid("mongodb-v1", "default")),
            ..Identity::default()
        };
        let sink: Arc<dyn meshmeter_proxy::ReportSink> = queue.clone();
        let proxy = Proxy::bind(listener, Arc::new(identity), sink, Arc::clone(&stats))
            .await
            .map_err(|e| proxy_error(&e))?;
        let sidecar_addr = proxy.local_addr();
        let transport =
            MixerTransport::lazy(&grpc_addr.to_string(), &manifest).map_err(|e| proxy_error(&e))?;
        let schema = ReportSchema::new(&manifest).map_err(|e| proxy_error(&e))?;
        let sender = ReportSender::new(
            Arc::clone(&queue),
            transport,
            schema,
            SenderConfig {
                max_delay: Duration::from_millis(100),
                ..SenderConfig::default()
            },
            Arc::clone(&stats),
        );
        let (stop_proxy, proxy_stop) = watch::channel(false);
        let proxy_task = tokio::spawn(proxy.run(proxy_stop.clone(), Duration::from_secs(5)));
        let sender_task = tokio::spawn(sender.run(proxy_stop));
        Ok(Mongodb {
            mongo_addr,
            sidecar_addr,
            report_interval,
            stop_proxy,
            proxy_task,
            sender_task,
            mongo_task,
        })
    }

    /// Stops the sidecar (its close reports are flushed first), then the database.
    async fn stop(self) {
        let _ = self.stop_proxy.send(true);
        let _ = self.proxy_task.await;
        let _ = self.sender_task.await;
        self.mongo_task.abort();
    }
}

/// Prometheus when asked for (an empty path: the one on PATH).
async fn start_prometheus(
    options: &DemoOptions,
    metrics_addr: SocketAddr,
    dir: &Path,
) -> Result<Option<Prometheus>, DemoError> {
    let Some(binary) = &options.prometheus else {
        return Ok(None);
    };
    let binary = if binary.as_os_str().is_empty() {
        prometheus::default_binary().ok_or_else(|| {
            DemoError::Prometheus(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no prometheus on PATH",
            ))
        })?
    } else {
        binary.clone()
    };
    Prometheus::start(&binary, metrics_addr, dir)
        .await
        .map(Some)
        .map_err(DemoError::Prometheus)
}

fn print(out: &mut (dyn Write + Send), text: &str) -> Result<(), DemoError> {
    out.write_all(text.as_bytes()).map_err(DemoError::Output)
}

/// What is running where.
fn print_banner(
    out: &mut (dyn Write + Send),
    files: &Files,
    server: &Server,
    mongodb: &Mongodb,
    prometheus: Option<&Prometheus>,
) -> Result<(), DemoError> {
    let (grpc_addr, metrics_addr) = (server.grpc_addr, server.metrics_addr);
    let (mongo_addr, sidecar_addr) = (mongodb.mongo_addr, mongodb.sidecar_addr);
    print(out, &format!(
        "meshmeter demo: Istio's \"Collecting Metrics for TCP Services\" on one machine\n\
         \x20 telemetry server  gRPC {grpc_addr}, metrics http://{metrics_addr}/metrics\n\
         \x20 mongodb-v1        {mongo_addr} behind its sidecar on {sidecar_addr} (reports every {:?})\n\
         \x20 ratings-v2        client from {RATINGS_IP}\n\
         \x20 configuration     {}\n\
         \x20 access log        {}\n",
        mongodb.report_interval,
        files.config.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        files.access_log.display()
    ))?;
    if let Some(prom) = prometheus {
        print(out, &format!(
            "  prometheus        http://{}/graph?g0.expr=istio_mongo_received_bytes (job istio-mesh, scrape every 1s)\n",
            prom.addr
        ))?;
    }
    print(out, "\n")
}

/// Prints the seed's samples every `options.refresh` until the duration passes or `shutdown`
/// completes.
async fn show_while_running(
    out: &mut (dyn Write + Send),
    options: &DemoOptions,
    shutdown: impl Future<Output = ()> + Send,
    metrics_addr: SocketAddr,
    started: Instant,
    client_counts: &ClientCounts,
) -> Result<(), DemoError> {
    let ended = async {
        match options.duration {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown => {}
                }
            }
            None => shutdown.await,
        }
    };
    tokio::pin!(ended);
    let mut tick = tokio::time::interval(options.refresh);
    loop {
        tokio::select! {
            _ = &mut ended => return Ok(()),
            _ = tick.tick() => {}
        }
        let text = scrape(metrics_addr).await;
        let mut block = format!("--- {:>3}s ---\n", started.elapsed().as_secs());
        for name in ["istio_mongo_received_bytes", "istio_mongo_sent_bytes"] {
            for (series, value) in samples_of(&text, name) {
                block.push_str(&format!("{series} {value}\n"));
            }
        }
        block.push_str(&format!(
            "ratings-v2 itself: sent {} bytes, received {} bytes, {} connections (metrics trail by up to one report interval)\n",
            client_counts.sent.load(Ordering::Relaxed),
            client_counts.received.load(Ordering::Relaxed),
            client_counts.connections.load(Ordering::Relaxed),
        ));
        print(out, &block)?;
    }
}

/// The server's exposition, or nothing when the scrape fails (the display shows no samples).
async fn scrape(metrics_addr: SocketAddr) -> String {
    http_get(metrics_addr, "/metrics")
        .await
        .map(|r| r.1)
        .unwrap_or_default()
}

/// What the client counted once it stopped.
struct Counted {
    sent: u64,
    received: u64,
    connections: u64,
}

impl Counted {
    fn of(counts: &ClientCounts) -> Self {
        Counted {
            sent: counts.sent.load(Ordering::Relaxed),
            received: counts.received.load(Ordering::Relaxed),
            connections: counts.connections.load(Ordering::Relaxed),
        }
    }

    /// Whether the seed's metrics in `text` equal these counts: the sidecar's received bytes
    /// are what the client sent, and the other way round.
    fn agree(&self, text: &str) -> bool {
        let r = samples_of(text, "istio_mongo_received_bytes");
        let s = samples_of(text, "istio_mongo_sent_bytes");
        r.values().sum::<f64>() == self.sent as f64
            && s.values().sum::<f64>() == self.received as f64
    }
}

/// The last scrape and what it says.
struct FinalScrape {
    text: String,
    agree: bool,
    received_bytes: BTreeMap<String, f64>,
    sent_bytes: BTreeMap<String, f64>,
}

/// Scrapes until the metrics agree with the client's counts, or the close reports have had
/// three report intervals and five seconds to arrive.
async fn final_scrape(
    metrics_addr: SocketAddr,
    report_interval: Duration,
    counted: &Counted,
) -> FinalScrape {
    let deadline = Instant::now() + report_interval * 3 + Duration::from_secs(5);
    let mut text;
    loop {
        text = scrape(metrics_addr).await;
        if counted.agree(&text) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    FinalScrape {
        agree: counted.agree(&text),
        received_bytes: samples_of(&text, "istio_mongo_received_bytes"),
        sent_bytes: samples_of(&text, "istio_mongo_sent_bytes"),
        text,
    }
}

fn print_final(
    out: &mut (dyn Write + Send),
    last: &FinalScrape,
    counted: &Counted,
) -> Result<(), DemoError> {
    let mut block = String::from("--- final ---\n");
    for (series, value) in last.received_bytes.iter().chain(&last.sent_bytes) {
        block.push_str(&format!("{series} {value}\n"));
    }
    for name in [
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
        "istio_tcp_received_bytes_total",
        "istio_tcp_sent_bytes_total",
    ] {
        let total: f64 = samples_of(&last.text, name).values().sum();
        block.push_str(&format!("{name} (all series) {total}\n"));
    }
    let Counted {
        sent,
        received,
        connections,
    } = counted;
    block.push_str(&format!(
        "ratings-v2 itself: sent {sent} bytes, received {received} bytes, {connections} connections\n{}\n",
        if last.agree {
            "the metrics agree with what the client counted, byte for byte"
        } else {
            "MISMATCH: the metrics do not equal what the client counted"
        }
    ));
    print(out, &block)
}

/// Asks Prometheus for the seed's metric once it has scraped the final values, prints the
/// answer and stops it.
async fn query_prometheus(
    out: &mut (dyn Write + Send),
    prom: Prometheus,
) -> Result<Option<String>, DemoError> {
    // Let Prometheus take one more scrape so it holds the final values.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let result = match prom.query("istio_mongo_received_bytes").await {
        Ok(json) => {
            print(
                out,
                &format!("prometheus: istio_mongo_received_bytes -> {json}\n"),
            )?;
            Some(json)
        }
        Err(e) => {
            print(out, &format!("prometheus query failed: {e}\n"))?;
            None
        }
    };
    prom.stop().await;
    Ok(result)
}
