//! End to end with a real Mixer gRPC server: reports survive a telemetry server that is killed
//! and restarted mid-run, and ambiguous failures (timeouts) are retried without counting a
//! batch twice.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use meshmeter_attributes::{Manifest, Value};
use meshmeter_proxy::{
    Identity, ListenerConfig, MixerTransport, Proxy, ProxyStats, ReportInterval, ReportQueue,
    ReportSchema, ReportSender, SenderConfig,
};
use meshmeter_wire::{BagDecoder, Deduplicator, MixerServer, MixerService};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tonic::metadata::MetadataMap;
use tonic::Status;

/// What the server counted for one report.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    event: String,
    received: i64,
    sent: i64,
    received_total: i64,
    sent_total: i64,
}

/// A telemetry server that records what it counts, optionally answering slowly (after the
/// client's timeout) the first time it sees each request.
struct Recorder {
    manifest: Manifest,
    decoder: BagDecoder,
    counted: Mutex<BTreeMap<String, Vec<Seen>>>,
    slow_first: Option<Duration>,
    seen_requests: Mutex<std::collections::HashSet<Vec<u8>>>,
}

impl Recorder {
    fn new(slow_first: Option<Duration>) -> Arc<Self> {
        let manifest = Manifest::istio();
        Arc::new(Recorder {
            decoder: BagDecoder::new(&manifest),
            manifest,
            counted: Mutex::new(BTreeMap::new()),
            slow_first,
            seen_requests: Mutex::new(Default::default()),
        })
    }

    fn closes(&self) -> usize {
        self.counted
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.iter().any(|s| s.event == "close"))
            .count()
    }
}

impl MixerService for Recorder {
    async fn report(&self, request: Bytes, _metadata: &MetadataMap) -> Result<(), Status> {
        let m = &self.manifest;
        let text = |bag: &meshmeter_attributes::Bag<'_>, name: &str| {
            bag.get(m.id(name).unwrap())
                .map(ToString::to_string)
                .unwrap_or_default()
        };
        let int =
            |bag: &meshmeter_attributes::Bag<'_>, name: &str| match bag.get(m.id(name).unwrap()) {
                Some(Value::Int64(v)) => *v,
                other => panic!("{name}: {other:?}"),
            };
        let mut staged = Vec::new();
        self.decoder.decode_report(&request, |_, bag| {
            staged.push((
                text(bag, "connection.id"),
                Seen {
                    event: text(bag, "connection.event"),
                    received: int(bag, "connection.received.bytes"),
                    sent: int(bag, "connection.sent.bytes"),
                    received_total: int(bag, "connection.received.bytes_total"),
                    sent_total: int(bag, "connection.sent.bytes_total"),
                },
            ));
        })?;
        {
            let mut counted = self.counted.lock().unwrap();
            for (id, seen) in staged {
                counted.entry(id).or_default().push(seen);
            }
        }
        if let Some(delay) = self.slow_first {
            // Counted, but the client gives up before the answer: an ambiguous failure.
            let first = self.seen_requests.lock().unwrap().insert(request.to_vec());
            if first {
                tokio::time::sleep(delay).await;
            }
        }
        Ok(())
    }
}

/// A Mixer server in its own runtime, so that dropping the runtime kills it outright
/// (listener and connections), like a crashed process.
fn start_mixer(
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    dedup: Arc<Deduplicator>,
) -> (SocketAddr, Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(async {
        // Rebinding the port of a server just killed can race its teardown; retry briefly.
        for _ in 0..200 {
            if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("cannot bind {addr}");
    });
    let local = listener.local_addr().unwrap();
    let service = MixerServer::from_arc(recorder).with_dedup(dedup);
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (local, rt)
}

struct Reporting {
    proxy: Running,
    stats: Arc<ProxyStats>,
    sender_stop: watch::Sender<bool>,
    sender: tokio::task::JoinHandle<()>,
}

async fn proxy_reporting_to(mixer: SocketAddr, sender: SenderConfig) -> Reporting {
    let upstream = echo_server().await;
    let stats = Arc::new(ProxyStats::default());
    let queue = Arc::new(ReportQueue::new(100_000, stats.clone()));
    let mut config = ListenerConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    config.report_interval = ReportInterval::new(Duration::from_secs(1)).unwrap();
    let identity = Arc::new(Identity::default());
    let p = Proxy::bind(config, identity, queue.clone(), stats.clone())
        .await
        .unwrap();
    let addr = p.local_addr();
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(p.run(rx, Duration::from_secs(10)));
    let transport = MixerTransport::lazy(&mixer.to_string(), &Manifest::istio()).unwrap();
    let sender = ReportSender::new(
        queue,
        transport,
        ReportSchema::istio(),
        sender,
        stats.clone(),
    );
    let (sender_stop, srx) = watch::channel(false);
    let sender = tokio::spawn(sender.run(srx));
    let proxy = Running {
        addr,
        reports: Arc::default(),
        stats: stats.clone(),
        shutdown,
        task,
    };
    Reporting {
        proxy,
        stats,
        sender_stop,
        sender,
    }
}

fn sender_config() -> SenderConfig {
    SenderConfig {
        max_batch: 16,
        max_delay: Duration::from_millis(20),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        request_timeout: Duration::from_millis(500),
        flush_timeout: Duration::from_secs(10),
    }
}

/// One short connection carrying `n` bytes each way.
async fn exchange(addr: SocketAddr, n: usize) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let data = vec![0x5a; n];
    c.write_all(&data).await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c).await.unwrap(), data);
}

/// Every connection the server counted: open first, close last, each report once, deltas
/// summing to totals equal to `expected(bytes)`.
fn assert_exact(recorder: &Recorder, expected: &BTreeMap<usize, usize>) {
    let counted = recorder.counted.lock().unwrap();
    let mut sizes: Vec<usize> = Vec::new();
    for (id, seen) in counted.iter() {
        assert_eq!(seen.first().unwrap().event, "open", "{id}: {seen:?}");
        assert_eq!(seen.last().unwrap().event, "close", "{id}: {seen:?}");
        assert_eq!(
            seen.iter().filter(|s| s.event == "open").count(),
            1,
            "{id}: {seen:?}"
        );
        assert_eq!(
            seen.iter().filter(|s| s.event == "close").count(),
            1,
            "{id}: {seen:?}"
        );
        let (mut r, mut s) = (0, 0);
        for x in seen {
            r += x.received;
            s += x.sent;
            assert_eq!((x.received_total, x.sent_total), (r, s), "{id}: {seen:?}");
        }
        assert_eq!(r, s);
        sizes.push(r as usize);
    }
    let mut got: BTreeMap<usize, usize> = BTreeMap::new();
    for n in sizes {
        *got.entry(n).or_default() += 1;
    }
    assert_eq!(&got, expected);
}

#[test]
fn totals_stay_exact_across_a_telemetry_server_restart() {
    let main = Runtime::new().unwrap();
    let recorder = Recorder::new(None);
    let dedup = Arc::new(Deduplicator::new(1024));
    let (mixer_addr, mixer) = start_mixer(
        "127.0.0.1:0".parse().unwrap(),
        recorder.clone(),
        dedup.clone(),
    );
    let mut expected: BTreeMap<usize, usize> = BTreeMap::new();

    let (setup, mut long) = main.block_on(async {
        let setup = proxy_reporting_to(mixer_addr, sender_config()).await;
        // A long connection that lives through the outage.
        let mut long = TcpStream::connect(setup.proxy.addr).await.unwrap();
        long.write_all(&[1; 100]).await.unwrap();
        let mut back = [0u8; 100];
        long.read_exact(&mut back).await.unwrap();
        for i in 1..=10 {
            exchange(setup.proxy.addr, i * 100).await;
        }
        let r = recorder.clone();
        eventually(Duration::from_secs(10), || (r.closes() == 10).then_some(())).await;
        (setup, long)
    });
    for i in 1..=10 {
        expected.insert(i * 100, 1);
    }

    mixer.shutdown_timeout(Duration::from_secs(5));

    main.block_on(async {
        for i in 11..=20 {
            exchange(setup.proxy.addr, i * 100).await;
        }
        long.write_all(&[2; 50]).await.unwrap();
        let mut back = [0u8; 50];
        long.read_exact(&mut back).await.unwrap();
        let stats = setup.stats.clone();
        eventually(Duration::from_secs(10), || {
            (stats.report_requests_failed.load(Ordering::Relaxed) >= 2).then_some(())
        })
        .await;
    });
    for i in 11..=20 {
        expected.insert(i * 100, 1);
    }
    assert_eq!(
        recorder.closes(),
        10,
        "nothing is counted while the server is down"
    );

    let (_, mixer) = start_mixer(mixer_addr, recorder.clone(), dedup);
    main.block_on(async {
        long.write_all(&[3; 25]).await.unwrap();
        long.shutdown().await.unwrap();
        let rest = read_all(&mut long).await.unwrap();
        assert_eq!(rest.len(), 25 + 50 + 100 - 150);
        drop(long);
        let r = recorder.clone();
        eventually(Duration::from_secs(20), || (r.closes() == 21).then_some(())).await;
        setup.proxy.shutdown.send(true).unwrap();
        setup.proxy.task.await.unwrap();
        setup.sender_stop.send(true).unwrap();
        setup.sender.await.unwrap();
    });
    expected.insert(175, 1);
    assert_exact(&recorder, &expected);
    assert_eq!(setup.stats.reports_dropped.load(Ordering::Relaxed), 0);
    mixer.shutdown_timeout(Duration::from_secs(5));
}

#[test]
fn ambiguous_timeouts_are_retried_and_counted_once() {
    let main = Runtime::new().unwrap();
    // Every request's first delivery is counted but answered after the client's timeout.
    let recorder = Recorder::new(Some(Duration::from_millis(800)));
    let (mixer_addr, mixer) = start_mixer(
        "127.0.0.1:0".parse().unwrap(),
        recorder.clone(),
        Arc::new(Deduplicator::new(1024)),
    );
    main.block_on(async {
        let mut config = sender_config();
        config.request_timeout = Duration::from_millis(200);
        let setup = proxy_reporting_to(mixer_addr, config).await;
        for i in 1..=8 {
            exchange(setup.proxy.addr, i * 10).await;
        }
        let r = recorder.clone();
        eventually(Duration::from_secs(20), || (r.closes() == 8).then_some(())).await;
        setup.proxy.shutdown.send(true).unwrap();
        setup.proxy.task.await.unwrap();
        setup.sender_stop.send(true).unwrap();
        setup.sender.await.unwrap();
        assert!(setup.stats.report_requests_failed.load(Ordering::Relaxed) >= 1);
    });
    let expected = (1..=8).map(|i| (i * 10, 1)).collect();
    assert_exact(&recorder, &expected);
    mixer.shutdown_timeout(Duration::from_secs(5));
}
