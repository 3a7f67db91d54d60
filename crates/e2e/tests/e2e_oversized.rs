//! A telemetry server with a small message limit: the sidecar's batches that exceed it are
//! split, a report too large on its own is dropped and counted, and every other report, before
//! and after it, is counted exactly once.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_attributes::Manifest;
use meshmeter_e2e::{http_get, metric_sum};
use meshmeter_proxy::{
    Identity, ListenerConfig, MixerTransport, Proxy, ProxyStats, ReportQueue, ReportSchema,
    ReportSender, ReportSink, SenderConfig,
};
use meshmeter_server::{ServerOptions, TelemetryServer};
use meshmeter_stdio::Output;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The server's limit: a few normal reports fit, a report with `HUGE_UID` does not.
const LIMIT: usize = 2048;

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// One connection through `proxy` carrying `n` bytes each way.
async fn exchange(proxy: SocketAddr, n: usize) {
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(&vec![7; n]).await.unwrap();
    c.shutdown().await.unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).await.unwrap();
    assert_eq!(back.len(), n);
}

async fn sidecar(
    upstream: SocketAddr,
    uid: String,
    queue: &Arc<ReportQueue>,
    stats: &Arc<ProxyStats>,
    stop: &watch::Receiver<bool>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let identity = Identity {
        uid: Some(uid),
        ..Identity::default()
    };
    let sink: Arc<dyn ReportSink> = queue.clone();
    let config = ListenerConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    let proxy = Proxy::bind(config, Arc::new(identity), sink, Arc::clone(stats))
        .await
        .unwrap();
    let addr = proxy.local_addr();
    (
        addr,
        tokio::spawn(proxy.run(stop.clone(), Duration::from_secs(5))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batches_are_split_and_an_oversized_report_is_dropped() {
    let log = std::env::temp_dir().join(format!(
        "meshmeter-e2e-oversized-{}.log",
        std::process::id()
    ));
    let server = TelemetryServer::start(ServerOptions {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        max_message_bytes: LIMIT,
        log_output: Some(Output::File(log.clone())),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let (grpc, metrics) = (server.grpc_addr(), server.metrics_addr());
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    let upstream = echo_server().await;
    let stats = Arc::new(ProxyStats::default());
    let queue = Arc::new(ReportQueue::new(10_000, Arc::clone(&stats)));
    let (stop, stop_rx) = watch::channel(false);
    let (normal, normal_task) = sidecar(
        upstream,
        "kubernetes://ratings-v1.default".into(),
        &queue,
        &stats,
        &stop_rx,
    )
    .await;
    let huge_uid = format!("kubernetes://{}.default", "x".repeat(2 * LIMIT));
    let (huge, huge_task) = sidecar(upstream, huge_uid, &queue, &stats, &stop_rx).await;
    let sender = ReportSender::new(
        Arc::clone(&queue),
        MixerTransport::lazy(&grpc.to_string(), &Manifest::istio()).unwrap(),
        ReportSchema::istio(),
        SenderConfig {
            max_batch: 1000,
            // Long enough for each wave to land in one batch, far over the limit.
            max_delay: Duration::from_millis(500),
            ..SenderConfig::default()
        },
        Arc::clone(&stats),
    );
    let sender_task = tokio::spawn(sender.run(stop_rx.clone()));

    // Wave one: 20 connections with one from the oversized identity in the middle.
    for i in 1..=20 {
        exchange(normal, i * 10).await;
        if i == 10 {
            exchange(huge, 5).await;
        }
    }
    let wait = |closed: f64, received: f64| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, text) = http_get(metrics, "/metrics").await.unwrap();
            let now = (
                metric_sum(&text, "istio_tcp_connections_closed_total"),
                metric_sum(&text, "istio_tcp_received_bytes_total"),
            );
            if now == (closed, received) || tokio::time::Instant::now() > deadline {
                return (now, text);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let ((closed, received), text) = wait(20.0, 2100.0).await;
    assert_eq!((closed, received), (20.0, 2100.0), "{text}");
    assert_eq!(
        metric_sum(&text, "istio_tcp_connections_opened_total"),
        20.0
    );
    // Its open and its close report, each alone over the limit.
    assert_eq!(stats.reports_too_large.load(Ordering::Relaxed), 2);
    assert_eq!(stats.reports_dropped.load(Ordering::Relaxed), 2);

    // Wave two: reporting is not wedged.
    for i in 1..=5 {
        exchange(normal, i).await;
    }
    let ((closed, received), text) = wait(25.0, 2115.0).await;
    assert_eq!((closed, received), (25.0, 2115.0), "{text}");

    let _ = stop.send(true);
    for task in [normal_task, huge_task, sender_task] {
        task.await.unwrap();
    }
    assert_eq!(stats.reports_sent.load(Ordering::Relaxed), 50);
    assert_eq!(stats.reports_too_large.load(Ordering::Relaxed), 2);
    assert_eq!(stats.reports_dropped.load(Ordering::Relaxed), 2);
    // The first wave's 42 reports could not go in one request.
    assert!(stats.report_requests_failed.load(Ordering::Relaxed) >= 3);
    let _ = stop_server.send(());
    server_task.await.unwrap().unwrap();
    let _ = std::fs::remove_file(log);
}
