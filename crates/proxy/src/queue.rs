//! The bounded queue between the data path and the report sender.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::report::{ConnectionReport, ReportSink};
use crate::stats::ProxyStats;

/// Reports waiting to be sent, at most `capacity` of them.
///
/// Submitting never waits: when the queue is full the *oldest* report is dropped (and counted
/// in [`ProxyStats::reports_dropped`]), on the reasoning that a telemetry server that has been
/// away long enough to fill the queue is better served by recent reports. The lock is held
/// only to move a pointer-sized amount of work, never across I/O.
#[derive(Debug)]
pub struct ReportQueue {
    items: Mutex<VecDeque<ConnectionReport>>,
    capacity: usize,
    ready: Notify,
    stats: Arc<ProxyStats>,
}

impl ReportQueue {
    /// An empty queue holding at most `capacity` reports (at least one).
    pub fn new(capacity: usize, stats: Arc<ProxyStats>) -> Self {
        ReportQueue {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ready: Notify::new(),
            stats,
        }
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a report, dropping the oldest when full.
    pub fn push(&self, report: ConnectionReport) {
        let dropped = {
            let mut items = self.lock();
            let dropped = if items.len() >= self.capacity {
                items.pop_front();
                true
            } else {
                false
            };
            items.push_back(report);
            self.stats
                .reports_queued
                .store(items.len() as u64, Ordering::Relaxed);
            dropped
        };
        if dropped {
            let total = self.stats.reports_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // One warning per 10,000 drops keeps the log readable during a long outage.
            if total % 10_000 == 1 {
                tracing::warn!(
                    dropped_total = total,
                    capacity = self.capacity,
                    "report queue full: dropping the oldest reports"
                );
            }
        }
        self.ready.notify_one();
    }

    /// Takes up to `max` reports from the front, oldest first.
    pub fn take(&self, max: usize) -> Vec<ConnectionReport> {
        let mut items = self.lock();
        let n = items.len().min(max);
        let batch: Vec<_> = items.drain(..n).collect();
        self.stats
            .reports_queued
            .store(items.len() as u64, Ordering::Relaxed);
        batch
    }

    /// Waits until a report has been pushed since the last wait (returns at once if one was
    /// pushed while nobody waited).
    pub async fn pushed(&self) {
        self.ready.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<ConnectionReport>> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ReportSink for ReportQueue {
    fn submit(&self, report: ConnectionReport) {
        self.push(report);
    }
}
