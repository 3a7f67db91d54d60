//! The report queue and batching sender: batches, retries with the same sequence number,
//! bounded buffering that drops the oldest, and a flush on shutdown.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshmeter_attributes::Timestamp;
use meshmeter_proxy::{
    ConnectionEvent, ConnectionReport, Deltas, Identity, ProxyStats, ReportBatch, ReportQueue,
    ReportSchema, ReportSender, ReportTransport, SenderConfig, TransportError,
};
use support::eventually;
use tokio::sync::watch;

/// Each delivered batch: its sequence number and its connection ids.
type Deliveries = Arc<Mutex<Vec<(u64, Vec<String>)>>>;

/// A transport that fails while `down` is set, and records each attempt and each delivery.
#[derive(Clone, Default)]
struct Flaky {
    down: Arc<AtomicBool>,
    reject: Arc<AtomicBool>,
    /// A server message limit, in "report units" (0: none): each report weighs 1, except the
    /// ids in `heavy`, which weigh 100.
    limit: Arc<AtomicUsize>,
    heavy: Arc<Mutex<Vec<String>>>,
    attempts: Arc<Mutex<Vec<u64>>>,
    delivered: Deliveries,
}

impl ReportTransport for Flaky {
    async fn send(&self, batch: &ReportBatch, schema: &ReportSchema) -> Result<(), TransportError> {
        self.attempts.lock().unwrap().push(batch.seq);
        if self.reject.load(Ordering::SeqCst) {
            return Err(TransportError::Rejected {
                reason: "bad".into(),
            });
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(TransportError::Retryable {
                reason: "connection refused".into(),
            });
        }
        let id = schema.manifest().id("connection.id").unwrap();
        let ids: Vec<String> = batch
            .bags(schema)
            .iter()
            .map(|b| b.get(id).unwrap().to_string())
            .collect();
        let limit = self.limit.load(Ordering::SeqCst);
        let heavy = self.heavy.lock().unwrap().clone();
        let weight: usize = ids
            .iter()
            .map(|id| if heavy.contains(id) { 100 } else { 1 })
            .sum();
        if limit > 0 && weight > limit {
            return Err(TransportError::TooLarge {
                reason: format!("weight {weight} over {limit}"),
            });
        }
        self.delivered.lock().unwrap().push((batch.seq, ids));
        Ok(())
    }
}

impl Flaky {
    fn delivered_ids(&self) -> Vec<String> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, ids)| ids.clone())
            .collect()
    }
}

fn report(n: usize) -> ConnectionReport {
    let addr: SocketAddr = "127.0.0.1:1000".parse().unwrap();
    ConnectionReport {
        event: ConnectionEvent::Open,
        connection_id: Arc::from(format!("c-{n}")),
        source: addr,
        destination: addr,
        time: Timestamp::new(0, 0),
        bytes: Deltas::default(),
        duration: None,
        error: None,
        identity: Arc::new(Identity::default()),
        tls: None,
        routed: None,
    }
}

fn config() -> SenderConfig {
    SenderConfig {
        max_batch: 10,
        max_delay: Duration::from_millis(20),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        request_timeout: Duration::from_secs(5),
        flush_timeout: Duration::from_secs(5),
    }
}

struct Setup {
    queue: Arc<ReportQueue>,
    stats: Arc<ProxyStats>,
    transport: Flaky,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(capacity: usize, config: SenderConfig, transport: Flaky) -> Setup {
    let stats = Arc::new(ProxyStats::default());
    let queue = Arc::new(ReportQueue::new(capacity, stats.clone()));
    let sender = ReportSender::new(
        queue.clone(),
        transport.clone(),
        ReportSchema::istio(),
        config,
        stats.clone(),
    );
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(sender.run(rx));
    Setup {
        queue,
        stats,
        transport,
        stop,
        task,
    }
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("c-{n}")).collect()
}

#[tokio::test]
async fn batches_in_order_up_to_the_size_limit() {
    let s = start(1000, config(), Flaky::default());
    for n in 0..25 {
        s.queue.push(report(n));
    }
    let t = s.transport.clone();
    eventually(Duration::from_secs(5), || {
        (t.delivered_ids().len() == 25).then_some(())
    })
    .await;
    assert_eq!(t.delivered_ids(), names(0..25));
    let sizes: Vec<usize> = t
        .delivered
        .lock()
        .unwrap()
        .iter()
        .map(|(_, ids)| ids.len())
        .collect();
    assert!(sizes.iter().all(|&n| n <= 10), "{sizes:?}");
    let seqs: Vec<u64> = t
        .delivered
        .lock()
        .unwrap()
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(s.stats.reports_sent.load(Ordering::Relaxed), 25);
    s.stop.send(true).unwrap();
    s.task.await.unwrap();
}

#[tokio::test]
async fn retries_reuse_the_sequence_number_and_deliver_once() {
    let transport = Flaky::default();
    transport.down.store(true, Ordering::SeqCst);
    let s = start(1000, config(), transport);
    for n in 0..5 {
        s.queue.push(report(n));
    }
    let t = s.transport.clone();
    eventually(Duration::from_secs(5), || {
        (t.attempts.lock().unwrap().len() >= 3).then_some(())
    })
    .await;
    assert!(t.delivered_ids().is_empty());
    t.down.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(5), || {
        (t.delivered_ids().len() == 5).then_some(())
    })
    .await;
    let attempts = t.attempts.lock().unwrap().clone();
    assert!(
        attempts.iter().all(|&seq| seq == 0),
        "one batch, one key: {attempts:?}"
    );
    assert_eq!(t.delivered_ids(), names(0..5));
    assert_eq!(
        s.stats.report_requests_failed.load(Ordering::Relaxed),
        attempts.len() as u64 - 1
    );
    s.stop.send(true).unwrap();
    s.task.await.unwrap();
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_and_counts_them() {
    let transport = Flaky::default();
    transport.down.store(true, Ordering::SeqCst);
    let s = start(20, config(), transport);
    // The first batch (c-0..c-9) is taken and retried; the queue then holds at most 20.
    for n in 0..10 {
        s.queue.push(report(n));
    }
    let t = s.transport.clone();
    eventually(Duration::from_secs(5), || {
        (!t.attempts.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    for n in 10..60 {
        s.queue.push(report(n));
    }
    assert_eq!(s.queue.len(), 20);
    assert_eq!(s.stats.reports_dropped.load(Ordering::Relaxed), 30);
    assert_eq!(s.stats.reports_queued.load(Ordering::Relaxed), 20);
    t.down.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(5), || {
        (t.delivered_ids().len() == 30).then_some(())
    })
    .await;
    let mut expected = names(0..10);
    expected.extend(names(40..60));
    assert_eq!(t.delivered_ids(), expected);
    s.stop.send(true).unwrap();
    s.task.await.unwrap();
}

#[tokio::test]
async fn shutdown_flushes_everything_queued() {
    let mut cfg = config();
    cfg.max_delay = Duration::from_secs(3600);
    cfg.max_batch = 1000;
    let s = start(1000, cfg, Flaky::default());
    for n in 0..7 {
        s.queue.push(report(n));
    }
    s.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.transport.delivered_ids(), names(0..7));
    assert_eq!(s.stats.reports_queued.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn shutdown_gives_up_at_the_flush_deadline() {
    let transport = Flaky::default();
    transport.down.store(true, Ordering::SeqCst);
    let mut cfg = config();
    cfg.flush_timeout = Duration::from_millis(100);
    let s = start(1000, cfg, transport);
    for n in 0..15 {
        s.queue.push(report(n));
    }
    s.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .unwrap()
        .unwrap();
    assert!(s.transport.delivered_ids().is_empty());
    assert_eq!(s.stats.reports_dropped.load(Ordering::Relaxed), 15);
}

#[tokio::test]
async fn rejected_batches_are_dropped_not_retried() {
    let transport = Flaky::default();
    transport.reject.store(true, Ordering::SeqCst);
    let s = start(1000, config(), transport);
    for n in 0..3 {
        s.queue.push(report(n));
    }
    let stats = s.stats.clone();
    eventually(Duration::from_secs(5), || {
        (stats.reports_dropped.load(Ordering::Relaxed) == 3).then_some(())
    })
    .await;
    assert_eq!(s.transport.attempts.lock().unwrap().clone(), vec![0]);
    s.stop.send(true).unwrap();
    s.task.await.unwrap();
}

#[tokio::test]
async fn batches_over_the_message_limit_are_halved_and_a_lone_oversized_report_is_dropped() {
    let transport = Flaky::default();
    transport.limit.store(4, Ordering::SeqCst);
    transport.heavy.lock().unwrap().push("c-5".into());
    let mut cfg = config();
    cfg.max_delay = Duration::from_secs(3600);
    let s = start(1000, cfg, transport);
    // One full batch of ten: halved to 0..5 (halved again) and 5..10, where c-5 ends alone.
    for n in 0..10 {
        s.queue.push(report(n));
    }
    let t = s.transport.clone();
    eventually(Duration::from_secs(5), || {
        (t.delivered_ids().len() == 9).then_some(())
    })
    .await;
    // Later reports are delivered too.
    for n in 10..13 {
        s.queue.push(report(n));
    }
    s.stop.send(true).unwrap();
    s.task.await.unwrap();
    let delivered = t.delivered.lock().unwrap().clone();
    let batches: Vec<Vec<String>> = delivered.iter().map(|(_, ids)| ids.clone()).collect();
    assert_eq!(
        batches,
        [
            names(0..2),
            names(2..5),
            names(6..7),
            names(7..10),
            names(10..13)
        ]
    );
    // Each request has its own key: 10, 0..5, 0..2, 2..5, 5..10, 5..7, c-5, c-6, 7..10, 10..13.
    assert_eq!(*t.attempts.lock().unwrap(), (0..10).collect::<Vec<u64>>());
    assert_eq!(s.stats.reports_sent.load(Ordering::Relaxed), 12);
    assert_eq!(s.stats.reports_too_large.load(Ordering::Relaxed), 1);
    assert_eq!(s.stats.reports_dropped.load(Ordering::Relaxed), 1);
    assert_eq!(s.stats.report_requests_failed.load(Ordering::Relaxed), 5);
}
