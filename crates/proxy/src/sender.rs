//! The background task that drains the [`ReportQueue`] in batches to a telemetry server.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_attributes::Bag;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::queue::ReportQueue;
use crate::report::{ConnectionReport, ReportSchema};
use crate::stats::ProxyStats;

/// One request's worth of reports.
#[derive(Clone, Debug)]
pub struct ReportBatch {
    /// This sender's sequence number for the batch, from 0, fixed when the batch is formed and
    /// reused by every retry: with the sender's client id it is the idempotency key that lets
    /// the server count a retried batch once.
    pub seq: u64,
    /// The reports, oldest first.
    pub reports: Vec<ConnectionReport>,
}

impl ReportBatch {
    /// The reports as attribute bags, borrowing from the batch.
    pub fn bags<'a>(&'a self, schema: &ReportSchema) -> Vec<Bag<'a>> {
        self.reports.iter().map(|r| r.to_bag(schema)).collect()
    }
}

/// Why a batch was not delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Not delivered, or not known to be: the server was unreachable, the call failed or
    /// timed out. The same batch (same key) is sent again later.
    #[error("report not delivered (will retry): {reason}")]
    Retryable {
        /// What failed, for the log.
        reason: String,
    },
    /// The server refused the content; sending it again cannot help, so it is dropped.
    #[error("report rejected by the telemetry server: {reason}")]
    Rejected {
        /// The server's explanation.
        reason: String,
    },
    /// The request is over the server's message size limit: the sender splits the batch in
    /// halves and sends each (a single report that still does not fit is dropped).
    #[error("report request too large for the telemetry server: {reason}")]
    TooLarge {
        /// The server's explanation.
        reason: String,
    },
}

/// How one batch's delivery ended.
enum Delivery {
    /// Delivered, or rejected and dropped.
    Done,
    /// Over the server's size limit; the reason is the server's.
    TooLarge(String),
    /// Still undelivered at the flush deadline.
    Expired,
}

/// How batches reach a telemetry server (the Mixer gRPC client; in tests, a sink that fails on
/// demand).
pub trait ReportTransport: Send + Sync + 'static {
    /// Delivers one batch. Called again with the same batch after a [`TransportError::Retryable`].
    fn send(
        &self,
        batch: &ReportBatch,
        schema: &ReportSchema,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// Batching and retry settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderConfig {
    /// The most reports in one request.
    pub max_batch: usize,
    /// How long the first report of a batch may wait for others to join it.
    pub max_delay: Duration,
    /// The first wait after a failed request; doubled after each further failure.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// How long one request may take before it counts as failed (and is retried).
    pub request_timeout: Duration,
    /// After shutdown is signalled, how long to keep trying to deliver what is queued.
    pub flush_timeout: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            max_batch: 1000,
            max_delay: Duration::from_millis(1000),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(5),
        }
    }
}

/// Drains a [`ReportQueue`] to a [`ReportTransport`].
#[derive(Debug)]
pub struct ReportSender<T> {
    queue: Arc<ReportQueue>,
    transport: T,
    schema: ReportSchema,
    config: SenderConfig,
    stats: Arc<ProxyStats>,
    next_seq: u64,
}

impl<T: ReportTransport> ReportSender<T> {
    /// A sender for `queue`.
    pub fn new(
        queue: Arc<ReportQueue>,
        transport: T,
        schema: ReportSchema,
        config: SenderConfig,
        stats: Arc<ProxyStats>,
    ) -> Self {
        ReportSender {
            queue,
            transport,
            schema,
            config,
            stats,
            next_seq: 0,
        }
    }

    /// Sends batches until `shutdown` becomes true, then flushes the queue (within
    /// [`SenderConfig::flush_timeout`]) and returns. Reports still undelivered at the flush
    /// deadline are counted as dropped.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut flush_deadline: Option<Instant> = None;
        // Halves of batches the server found too large, the next to send last; they go before
        // anything newer so that reports stay in order.
        let mut halves: Vec<Vec<ConnectionReport>> = Vec::new();
        loop {
            start_flush_deadline_on_shutdown(&shutdown, &mut flush_deadline, &self.config);
            let reports = match halves.pop() {
                Some(reports) => reports,
                None => {
                    if flush_deadline.is_none() {
                        self.wait_for_batch(&mut shutdown).await;
                        start_flush_deadline_on_shutdown(
                            &shutdown,
                            &mut flush_deadline,
                            &self.config,
                        );
                    }
                    let reports = self.queue.take(self.config.max_batch.max(1));
                    if reports.is_empty() {
                        if flush_deadline.is_some() {
                            return;
                        }
                        continue;
                    }
                    reports
                }
            };
            // A half is a new request: its content differs, so it takes a new key.
            let batch = ReportBatch {
                seq: self.next_seq,
                reports,
            };
            self.next_seq += 1;
            match self
                .deliver(&batch, &mut shutdown, &mut flush_deadline)
                .await
            {
                Delivery::Done => {}
                Delivery::TooLarge(reason) => self.split(batch, &reason, &mut halves),
                Delivery::Expired => {
                    // Past the flush deadline: everything left is lost.
                    let left = batch.reports.len()
                        + halves.iter().map(Vec::len).sum::<usize>()
                        + self.queue.take(usize::MAX).len();
                    self.stats
                        .reports_dropped
                        .fetch_add(left as u64, Ordering::Relaxed);
                    tracing::warn!(
                        dropped = left,
                        "shutdown: reports not delivered before the flush deadline"
                    );
                    return;
                }
            }
        }
    }

    /// Splits a batch over the server's size limit into halves to send next; a single report
    /// that does not fit can never be delivered, so it is dropped and counted.
    fn split(&self, batch: ReportBatch, reason: &str, halves: &mut Vec<Vec<ConnectionReport>>) {
        let mut first = batch.reports;
        if first.len() > 1 {
            let second = first.split_off(first.len() / 2);
            tracing::debug!(
                seq = batch.seq,
                reports = first.len() + second.len(),
                "report batch too large for the telemetry server; sending it in halves"
            );
            halves.push(second);
            halves.push(first);
            return;
        }
        self.stats
            .reports_too_large
            .fetch_add(first.len() as u64, Ordering::Relaxed);
        self.stats
            .reports_dropped
            .fetch_add(first.len() as u64, Ordering::Relaxed);
        let id = first.first().map(|r| r.connection_id.to_string());
        tracing::warn!(
            seq = batch.seq,
            connection = id.as_deref().unwrap_or(""),
            %reason,
            "one report is over the telemetry server's message limit on its own; dropped"
        );
    }

    /// Waits for a first report, then up to `max_delay` for a full batch; returns early on
    /// shutdown.
    async fn wait_for_batch(&self, shutdown: &mut watch::Receiver<bool>) {
        while self.queue.is_empty() {
            tokio::select! {
                _ = self.queue.pushed() => {}
                _ = shutdown.wait_for(|&stop| stop) => return,
            }
        }
        let deadline = Instant::now() + self.config.max_delay;
        while self.queue.len() < self.config.max_batch {
            tokio::select! {
                _ = self.queue.pushed() => {}
                _ = tokio::time::sleep_until(deadline) => return,
                _ = shutdown.wait_for(|&stop| stop) => return,
            }
        }
    }

    /// Sends until delivered, rejected or found too large, or until the flush deadline passes.
    async fn deliver(
        &self,
        batch: &ReportBatch,
        shutdown: &mut watch::Receiver<bool>,
        flush_deadline: &mut Option<Instant>,
    ) -> Delivery {
        let mut backoff = self.config.initial_backoff;
        let mut failures = 0u32;
        loop {
            let attempt = tokio::time::timeout(
                self.config.request_timeout,
                self.transport.send(batch, &self.schema),
            );
            let error = match attempt.await {
                Ok(Ok(())) => {
                    self.stats
                        .reports_sent
                        .fetch_add(batch.reports.len() as u64, Ordering::Relaxed);
                    if failures > 0 {
                        tracing::info!(
                            seq = batch.seq,
                            failures,
                            "telemetry server reachable again"
                        );
                    }
                    return Delivery::Done;
                }
                Ok(Err(e)) => e,
                Err(_) => TransportError::Retryable {
                    reason: format!("no answer within {:?}", self.config.request_timeout),
                },
            };
            self.stats
                .report_requests_failed
                .fetch_add(1, Ordering::Relaxed);
            match error {
                TransportError::Rejected { reason } => {
                    self.stats
                        .reports_dropped
                        .fetch_add(batch.reports.len() as u64, Ordering::Relaxed);
                    tracing::warn!(seq = batch.seq, reports = batch.reports.len(), %reason, "report batch rejected; dropped");
                    return Delivery::Done;
                }
                // Not worth a backoff: the halves are smaller, the server is not in trouble.
                TransportError::TooLarge { reason } => return Delivery::TooLarge(reason),
                TransportError::Retryable { .. } => {}
            }
            failures += 1;
            if failures == 1 {
                tracing::warn!(seq = batch.seq, %error, "report batch not delivered; retrying with backoff");
            } else {
                tracing::debug!(seq = batch.seq, failures, %error, "report batch retry failed");
            }
            let wake = Instant::now() + backoff;
            backoff = (backoff * 2).min(self.config.max_backoff);
            loop {
                start_flush_deadline_on_shutdown(shutdown, flush_deadline, &self.config);
                if let Some(deadline) = *flush_deadline {
                    if Instant::now() >= deadline {
                        return Delivery::Expired;
                    }
                }
                let until = flush_deadline.map_or(wake, |d| d.min(wake));
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {
                        if Instant::now() >= wake {
                            break;
                        }
                    }
                    _ = shutdown.wait_for(|&stop| stop), if flush_deadline.is_none() => {}
                }
            }
        }
    }
}

/// Starts the flush deadline (now + `flush_timeout`) the first time shutdown is seen; later
/// calls leave it as it is.
fn start_flush_deadline_on_shutdown(
    shutdown: &watch::Receiver<bool>,
    flush_deadline: &mut Option<Instant>,
    config: &SenderConfig,
) {
    // A dropped signal sender counts as shutdown, so a forgotten handle cannot make the
    // sender spin on a closed channel.
    let stopping = *shutdown.borrow() || shutdown.has_changed().is_err();
    if flush_deadline.is_none() && stopping {
        *flush_deadline = Some(Instant::now() + config.flush_timeout);
    }
}
