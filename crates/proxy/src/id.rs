//! Connection ids: `<process uuid>-<n>`, unique across processes and within one.

use std::sync::atomic::{AtomicU64, Ordering};

/// Issues connection ids for one proxy process.
#[derive(Debug)]
pub struct ConnectionIds {
    process: String,
    next: AtomicU64,
}

impl ConnectionIds {
    /// Ids under a fresh random process UUID.
    pub fn new() -> Self {
        Self::with_process_id(meshmeter_wire::random_uuid())
    }

    /// Ids under a given process id (tests; or a pod's uid).
    pub fn with_process_id(process: impl Into<String>) -> Self {
        ConnectionIds {
            process: process.into(),
            next: AtomicU64::new(0),
        }
    }

    /// The process part of every id.
    pub fn process_id(&self) -> &str {
        &self.process
    }

    /// The next connection's number (from 0).
    pub fn next_number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The id of connection number `n`.
    pub fn format(&self, n: u64) -> String {
        format!("{}-{n}", self.process)
    }
}

impl Default for ConnectionIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_count_up() {
        let ids = ConnectionIds::with_process_id("p");
        assert_eq!(ids.format(ids.next_number()), "p-0");
        assert_eq!(ids.format(ids.next_number()), "p-1");
    }
}
