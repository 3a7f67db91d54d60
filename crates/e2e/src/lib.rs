//! Helpers for meshmeter's end-to-end tests (the tests are in `tests/`): finding external
//! programs, a telemetry server with a sidecar in front of a real service.
//!
//! Tests that need software we did not write (Prometheus, Redis) are `#[ignore]`d so that a
//! plain `cargo test` passes without it; `scripts/test.sh` installs it and runs them.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_attributes::Manifest;
use meshmeter_proxy::{
    Identity, ListenerConfig, MixerTransport, Proxy, ProxyStats, ReportInterval, ReportQueue,
    ReportSchema, ReportSender, SenderConfig,
};
use meshmeter_server::{ServerOptions, TelemetryServer};
use meshmeter_stdio::Output;
use tokio::sync::watch;

pub use meshmeter_httpget::http_get;

/// The path of `program` on PATH (or in /usr/sbin), or a panic that says how to get it.
pub fn require(program: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{program} is not installed: run scripts/install-test-deps.sh (or scripts/test.sh)"
            )
        })
}

/// Sums the samples of metric `name` in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A telemetry server (Istio's default TCP metrics) and a sidecar proxy reporting to it every
/// second, in front of `upstream`.
pub struct Mesh {
    /// Where clients connect (the sidecar).
    pub proxy: SocketAddr,
    /// The server's /metrics address.
    pub metrics: SocketAddr,
    stop_proxy: watch::Sender<bool>,
    stop_server: Option<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Mesh {
    /// Starts the server and the sidecar.
    pub async fn start(upstream: SocketAddr) -> Mesh {
        let server = TelemetryServer::start(ServerOptions {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            log_output: Some(access_log()),
            ..ServerOptions::default()
        })
        .await
        .expect("server starts");
        let (grpc, metrics) = (server.grpc_addr(), server.metrics_addr());
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let server_task = tokio::spawn(async move {
            server
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        let manifest = Manifest::istio();
        let stats = Arc::new(ProxyStats::default());
        let queue = Arc::new(ReportQueue::new(1_000_000, Arc::clone(&stats)));
        let mut config = ListenerConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
        config.report_interval = ReportInterval::new(Duration::from_secs(1)).unwrap();
        let identity = Identity {
            uid: Some(Identity::kubernetes_uid("redis-0", "default")),
            ..Identity::default()
        };
        let sink: Arc<dyn meshmeter_proxy::ReportSink> = queue.clone();
        let proxy = Proxy::bind(config, Arc::new(identity), sink, Arc::clone(&stats))
            .await
            .unwrap();
        let proxy_addr = proxy.local_addr();
        let sender = ReportSender::new(
            Arc::clone(&queue),
            MixerTransport::lazy(&grpc.to_string(), &manifest).unwrap(),
            ReportSchema::new(&manifest).unwrap(),
            SenderConfig {
                max_delay: Duration::from_millis(50),
                ..SenderConfig::default()
            },
            stats,
        );
        let (stop_proxy, stop) = watch::channel(false);
        let tasks = vec![
            server_task,
            tokio::spawn(proxy.run(stop.clone(), Duration::from_secs(5))),
            tokio::spawn(sender.run(stop)),
        ];
        Mesh {
            proxy: proxy_addr,
            metrics,
            stop_proxy,
            stop_server: Some(stop_server),
            tasks,
        }
    }

    /// The server's current /metrics text.
    pub async fn scrape(&self) -> String {
        http_get(self.metrics, "/metrics").await.expect("scrape").1
    }

    /// Waits (at most `limit`) until `check` holds for a scrape; returns that scrape.
    pub async fn scrape_until(&self, limit: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let text = self.scrape().await;
            if check(&text) || tokio::time::Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the sidecar (final reports flushed) and the server.
    pub async fn stop(mut self) {
        let _ = self.stop_proxy.send(true);
        let mut tasks = std::mem::take(&mut self.tasks);
        let server = tasks.remove(0);
        for t in tasks {
            t.await.unwrap();
        }
        let _ = self.stop_server.take().unwrap().send(());
        server.await.unwrap();
    }
}

/// The access log of tests goes to a file, not the test output.
fn access_log() -> Output {
    Output::File(std::env::temp_dir().join(format!("meshmeter-e2e-{}.log", std::process::id())))
}
