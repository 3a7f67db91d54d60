//! Byte counters for one connection, and the cursor that turns their running totals into
//! per-report deltas.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Running byte totals of one proxied connection, seen from the downstream client.
///
/// The forwarder adds to these as bytes are *written* to their destination, so a total is
/// always the number of bytes actually forwarded, never bytes read but then lost to an error.
#[derive(Debug, Default)]
pub struct ByteMeter {
    received: AtomicU64,
    sent: AtomicU64,
    half_closed: AtomicBool,
}

impl ByteMeter {
    /// Counts bytes forwarded from the downstream client to the upstream.
    #[inline]
    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts bytes forwarded from the upstream to the downstream client.
    #[inline]
    pub fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes received from the client so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Bytes sent to the client so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Records that one direction has ended (its source sent EOF) while the other may still
    /// flow; the listener's half-close timeout applies from then on.
    pub fn set_half_closed(&self) {
        self.half_closed.store(true, Ordering::Relaxed);
    }

    /// Whether one direction has ended.
    pub fn half_closed(&self) -> bool {
        self.half_closed.load(Ordering::Relaxed)
    }
}

/// What one report carries about bytes: the change since the previous report and the totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deltas {
    /// Bytes received from the client since the previous report.
    pub received: u64,
    /// Bytes sent to the client since the previous report.
    pub sent: u64,
    /// Bytes received from the client since the connection began.
    pub received_total: u64,
    /// Bytes sent to the client since the connection began.
    pub sent_total: u64,
}

/// The totals a connection's previous report carried.
///
/// Deltas are computed by subtracting the last reported totals from one snapshot of the
/// running totals, and the snapshot becomes the new baseline. Because each report's delta
/// ends exactly where the next one starts, the deltas of a connection always sum to the totals
/// of its last report: nothing is counted twice or lost, whatever the forwarder does
/// concurrently. [`DeltaCursor::advance`] takes `&mut self`: the cursor holds no atomics, so
/// whoever reports for a connection from more than one task (the periodic reporter and the
/// close; the listener keeps the cursor in a `Mutex`) must serialise the calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaCursor {
    received: u64,
    sent: u64,
}

impl DeltaCursor {
    /// The deltas since the previous call, and the totals, from one snapshot of `meter`.
    pub fn advance(&mut self, meter: &ByteMeter) -> Deltas {
        let (received_total, sent_total) = (meter.received(), meter.sent());
        let deltas = Deltas {
            // Totals only grow, so these never underflow.
            received: received_total - self.received,
            sent: sent_total - self.sent,
            received_total,
            sent_total,
        };
        self.received = received_total;
        self.sent = sent_total;
        deltas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_sum_to_totals() {
        let meter = ByteMeter::default();
        let mut cursor = DeltaCursor::default();
        assert_eq!(cursor.advance(&meter), Deltas::default());
        meter.add_received(10);
        meter.add_sent(3);
        let first = cursor.advance(&meter);
        assert_eq!(
            first,
            Deltas {
                received: 10,
                sent: 3,
                received_total: 10,
                sent_total: 3
            }
        );
        meter.add_received(5);
        let second = cursor.advance(&meter);
        assert_eq!(
            second,
            Deltas {
                received: 5,
                sent: 0,
                received_total: 15,
                sent_total: 3
            }
        );
        assert_eq!(cursor.advance(&meter).received, 0);
    }
}
