//! Connection ids: `<process uuid>-<n>`, unique across processes and within one.

use std::hash::{BuildHasher, Hasher};
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
        Self::with_process_id(random_uuid())
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

/// A version-4 UUID. The standard library's per-process random hash keys are seeded from the
/// operating system's entropy, which is all a process identifier needs (it is not a secret).
pub(crate) fn random_uuid() -> String {
    let mut words = [0u64; 2];
    for (i, word) in words.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i as u64);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        *word = h.finish();
    }
    let hi = (words[0] & !0xf000) | 0x4000; // version 4
    let lo = (words[1] & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape_and_uniqueness() {
        let a = random_uuid();
        let b = random_uuid();
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn ids_count_up() {
        let ids = ConnectionIds::with_process_id("p");
        assert_eq!(ids.format(ids.next_number()), "p-0");
        assert_eq!(ids.format(ids.next_number()), "p-1");
    }
}
