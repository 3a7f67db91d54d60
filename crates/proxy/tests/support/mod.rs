//! Shared helpers for the proxy's integration tests: real sockets on 127.0.0.1:0.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshmeter_proxy::{
    ConnectionEvent, ConnectionReport, Identity, ListenerConfig, Proxy, ProxyStats, ReportSink,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Records every report.
#[derive(Default)]
pub struct Collect(pub Mutex<Vec<ConnectionReport>>);

impl ReportSink for Collect {
    fn submit(&self, report: ConnectionReport) {
        self.0.lock().unwrap().push(report);
    }
}

impl Collect {
    pub fn all(&self) -> Vec<ConnectionReport> {
        self.0.lock().unwrap().clone()
    }

    /// The reports of one connection, in order.
    pub fn of(&self, id: &str) -> Vec<ConnectionReport> {
        self.all()
            .into_iter()
            .filter(|r| &*r.connection_id == id)
            .collect()
    }

    pub fn closes(&self) -> Vec<ConnectionReport> {
        self.all()
            .into_iter()
            .filter(|r| r.event == ConnectionEvent::Close)
            .collect()
    }
}

/// Polls `check` until it yields a value or `limit` passes.
pub async fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub struct Running {
    pub addr: SocketAddr,
    pub reports: Arc<Collect>,
    pub stats: Arc<ProxyStats>,
    pub shutdown: watch::Sender<bool>,
    pub task: JoinHandle<()>,
}

impl Running {
    /// Signals shutdown and waits for the proxy to finish draining.
    pub async fn stop(self) -> Arc<Collect> {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("proxy stops")
            .unwrap();
        self.reports
    }
}

/// A proxy to `upstream`, with `tweak` applied to the default settings.
pub async fn proxy(upstream: SocketAddr, tweak: impl FnOnce(&mut ListenerConfig)) -> Running {
    proxy_with_drain(upstream, Duration::from_secs(10), tweak).await
}

pub async fn proxy_with_drain(
    upstream: SocketAddr,
    drain: Duration,
    tweak: impl FnOnce(&mut ListenerConfig),
) -> Running {
    proxy_built(upstream, drain, tweak, |p| p).await
}

/// A proxy to `upstream` with `build` applied to it before it runs (a router, a policy).
pub async fn proxy_built(
    upstream: SocketAddr,
    drain: Duration,
    tweak: impl FnOnce(&mut ListenerConfig),
    build: impl FnOnce(Proxy) -> Proxy,
) -> Running {
    let mut config = ListenerConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    tweak(&mut config);
    let reports = Arc::new(Collect::default());
    let stats = Arc::new(ProxyStats::default());
    let identity = Arc::new(Identity {
        uid: Some("kubernetes://mongodb-v1-0.default".into()),
        ..Identity::default()
    });
    let p = Proxy::bind(config, identity, reports.clone(), stats.clone())
        .await
        .unwrap();
    let p = build(p);
    let addr = p.local_addr();
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(p.run(rx, drain));
    Running {
        addr,
        reports,
        stats,
        shutdown,
        task,
    }
}

/// A server that runs `handle` on each accepted connection.
pub async fn server<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    // Room for the concurrency tests' bursts.
    let listener = socket.listen(4096).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(handle(s));
        }
    });
    addr
}

/// Echoes until EOF, then closes its write side.
pub async fn echo_server() -> SocketAddr {
    server(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// A port with nothing listening (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Reads to EOF.
pub async fn read_all(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(out)
}

/// Asserts the invariant of every connection: open first, close last, deltas summing to the
/// close report's totals. Returns the totals (received, sent).
pub fn check_connection(reports: &[ConnectionReport]) -> (u64, u64) {
    assert!(reports.len() >= 2, "open and close expected: {reports:?}");
    assert_eq!(reports[0].event, ConnectionEvent::Open);
    let last = reports.last().unwrap();
    assert_eq!(last.event, ConnectionEvent::Close);
    assert!(last.duration.is_some());
    let (mut r, mut s) = (0, 0);
    for rep in reports {
        r += rep.bytes.received;
        s += rep.bytes.sent;
        assert_eq!((rep.bytes.received_total, rep.bytes.sent_total), (r, s));
    }
    (r, s)
}
