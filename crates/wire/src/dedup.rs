//! Idempotent reports: the `x-meshmeter-report-id` scheme and the server's memory of it.
//!
//! A client picks a random id when its process starts and numbers its requests from 1; a
//! retry of a request reuses its number. The server remembers, per client, which numbers it
//! has counted in a sliding window, so a retry after an ambiguous failure (the request
//! arrived but the answer was lost) is acknowledged without being counted again. Istio's
//! clients send no id and are never deduplicated.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::Mutex;

/// The gRPC metadata key carrying a [`ReportId`].
pub const REPORT_ID_HEADER: &str = "x-meshmeter-report-id";

/// `<client-id>/<seq>`: who sent a request and its number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReportId {
    /// The client's id, random per client process (a UUID in meshmeter's client).
    pub client: String,
    /// The request's number, increasing per client; retries reuse it.
    pub seq: u64,
}

/// Text that is not `<client-id>/<seq>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseReportIdError {
    /// No `/`, an empty client id, or a client id over 128 bytes.
    #[error("report id '{0}' is not <client-id>/<seq>")]
    Shape(String),
    /// The sequence number is not a decimal u64.
    #[error("report id '{0}' has an invalid sequence number")]
    Seq(String),
}

impl FromStr for ReportId {
    type Err = ParseReportIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (client, seq) = s
            .rsplit_once('/')
            .filter(|(c, _)| !c.is_empty() && c.len() <= 128)
            .ok_or_else(|| ParseReportIdError::Shape(s.to_owned()))?;
        let seq = seq
            .parse()
            .map_err(|_| ParseReportIdError::Seq(s.to_owned()))?;
        Ok(ReportId {
            client: client.to_owned(),
            seq,
        })
    }
}

impl fmt::Display for ReportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.client, self.seq)
    }
}

/// A random version-4 UUID in its text form: meshmeter's one generator, for report clients'
/// ids and the proxy's process id.
///
/// `RandomState` is seeded from the operating system's randomness, which is all these ids
/// need (they must not collide, not resist prediction), and saves a dependency.
pub fn random_uuid() -> String {
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.finish()
    };
    let (hi, lo) = (word(1), word(2));
    let hi = (hi & !0xf000) | 0x4000; // version 4
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// What a [`DedupWindow`] says about a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen: count it (it is now remembered).
    New,
    /// Seen before: acknowledge without counting.
    Duplicate,
    /// Older than the window: whether it was seen is forgotten, so it is not counted (never
    /// counting twice wins over never dropping a request this stale).
    TooOld,
}

/// The sequence numbers one client has had counted: the highest, and a bitmap of the
/// [`DedupWindow::SPAN`] numbers below it. Fixed size whatever the input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DedupWindow {
    /// The highest sequence number seen, or `None`.
    top: Option<u64>,
    /// Bit `i` is set when `top - i` has been seen (bit 0 is `top` itself).
    bits: [u64; Self::WORDS],
}

impl DedupWindow {
    const WORDS: usize = 16;
    /// How many numbers (ending at the highest seen) the window remembers.
    pub const SPAN: u64 = 64 * Self::WORDS as u64;

    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    fn bit(&self, back: u64) -> bool {
        self.bits[(back / 64) as usize] & (1 << (back % 64)) != 0
    }

    fn set_bit(&mut self, back: u64, on: bool) {
        let word = &mut self.bits[(back / 64) as usize];
        if on {
            *word |= 1 << (back % 64);
        } else {
            *word &= !(1 << (back % 64));
        }
    }

    /// Moves the window so that `top` becomes the highest number.
    fn advance(&mut self, by: u64) {
        if by >= Self::SPAN {
            self.bits = [0; Self::WORDS];
            return;
        }
        // Shift the whole bitmap towards higher "back" distances by `by` bits.
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..Self::WORDS).rev() {
            let lo = i.checked_sub(words).map_or(0, |j| self.bits[j]);
            let carry = i
                .checked_sub(words + 1)
                .filter(|_| bits > 0)
                .map_or(0, |j| self.bits[j] >> (64 - bits));
            self.bits[i] = if bits == 0 { lo } else { (lo << bits) | carry };
        }
    }

    /// Records `seq` unless it was seen (or is too old to tell).
    pub fn check_and_insert(&mut self, seq: u64) -> Verdict {
        let Some(top) = self.top else {
            self.top = Some(seq);
            self.set_bit(0, true);
            return Verdict::New;
        };
        if seq > top {
            self.advance(seq - top);
            self.top = Some(seq);
            self.set_bit(0, true);
            return Verdict::New;
        }
        let back = top - seq;
        if back >= Self::SPAN {
            return Verdict::TooOld;
        }
        if self.bit(back) {
            return Verdict::Duplicate;
        }
        self.set_bit(back, true);
        Verdict::New
    }

    /// Forgets `seq` (its processing failed, so a retry must be counted).
    pub fn forget(&mut self, seq: u64) {
        if let Some(top) = self.top {
            if seq <= top && top - seq < Self::SPAN {
                self.set_bit(top - seq, false);
            }
        }
    }
}

/// Windows for many clients, bounded: beyond `max_clients` the least recently active client
/// is forgotten.
///
/// Why sharded: every report with a key passes here, from every ingest runtime. Clients are
/// spread over [`Deduplicator::SHARDS`] independently locked shards by a hash of their id,
/// each an O(1) LRU (a map into a slab linked in recency order), so that neither a lock nor
/// a scan of all clients is shared by every request. With sharding, "least recently active"
/// is per shard (each holds `max_clients / SHARDS`); small limits use one shard, exact LRU.
#[derive(Debug)]
pub struct Deduplicator {
    shards: Box<[Mutex<Lru>]>,
    hasher: std::collections::hash_map::RandomState,
}

/// One shard: clients by id, linked from most to least recently active.
#[derive(Debug, Default)]
struct Lru {
    index: HashMap<Box<str>, usize>,
    nodes: Vec<Node>,
    /// Most recently active (`NIL` when empty).
    head: usize,
    /// Least recently active.
    tail: usize,
    capacity: usize,
}

#[derive(Debug)]
struct Node {
    client: Box<str>,
    window: DedupWindow,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

impl Lru {
    fn new(capacity: usize) -> Self {
        Lru {
            head: NIL,
            tail: NIL,
            capacity: capacity.max(1),
            ..Lru::default()
        }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
        match prev {
            NIL => self.head = next,
            p => self.nodes[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n].prev = prev,
        }
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].prev = NIL;
        self.nodes[i].next = self.head;
        if self.head != NIL {
            self.nodes[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    /// The window of `client`, made most recently active; a new client takes the least
    /// recently active one's slot when the shard is full.
    fn touch(&mut self, client: &str) -> &mut DedupWindow {
        if let Some(&i) = self.index.get(client) {
            if self.head != i {
                self.unlink(i);
                self.push_front(i);
            }
            return &mut self.nodes[i].window;
        }
        let node = Node {
            client: client.into(),
            window: DedupWindow::new(),
            prev: NIL,
            next: NIL,
        };
        let i = if self.nodes.len() < self.capacity {
            self.nodes.push(node);
            self.nodes.len() - 1
        } else {
            let i = self.tail;
            self.unlink(i);
            self.index.remove(&self.nodes[i].client);
            self.nodes[i] = node;
            i
        };
        self.index.insert(client.into(), i);
        self.push_front(i);
        &mut self.nodes[i].window
    }
}

impl Deduplicator {
    /// How many shards a large deduplicator has.
    pub const SHARDS: usize = 16;

    /// Remembers at most `max_clients` clients (at least 1).
    pub fn new(max_clients: usize) -> Self {
        let max_clients = max_clients.max(1);
        // Below 64 clients per shard, eviction order would differ visibly from exact LRU.
        let shards = if max_clients >= 64 * Self::SHARDS {
            Self::SHARDS
        } else {
            1
        };
        let per_shard = max_clients / shards;
        Deduplicator {
            shards: (0..shards)
                .map(|_| Mutex::new(Lru::new(per_shard)))
                .collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, client: &str) -> std::sync::MutexGuard<'_, Lru> {
        let i = if self.shards.len() == 1 {
            0
        } else {
            (self.hasher.hash_one(client) as usize) % self.shards.len()
        };
        // A poisoned lock only means another request panicked mid-update; the windows are
        // still consistent bitmaps.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `id` unless it was seen; see [`DedupWindow::check_and_insert`].
    pub fn check_and_insert(&self, id: &ReportId) -> Verdict {
        self.shard(&id.client)
            .touch(&id.client)
            .check_and_insert(id.seq)
    }

    /// Forgets `id` after its processing failed.
    pub fn forget(&self, id: &ReportId) {
        let mut shard = self.shard(&id.client);
        if let Some(&i) = shard.index.get(id.client.as_str()) {
            shard.nodes[i].window.forget(id.seq);
        }
    }

    /// How many clients are remembered.
    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).index.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    #[test]
    fn report_id_text() {
        let id: ReportId = "0b5c/42".parse().unwrap();
        assert_eq!(
            id,
            ReportId {
                client: "0b5c".into(),
                seq: 42
            }
        );
        assert_eq!(id.to_string(), "0b5c/42");
        assert_eq!(
            "a/b/7".parse::<ReportId>().map(|i| i.client),
            Ok("a/b".to_owned())
        );
        assert_eq!(
            "nope".parse::<ReportId>(),
            Err(ParseReportIdError::Shape("nope".into()))
        );
        assert_eq!(
            "/1".parse::<ReportId>(),
            Err(ParseReportIdError::Shape("/1".into()))
        );
        assert_eq!(
            "a/-1".parse::<ReportId>(),
            Err(ParseReportIdError::Seq("a/-1".into()))
        );
    }

    #[test]
    fn uuid_shape_and_uniqueness() {
        let a = random_uuid();
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, random_uuid());
    }

    #[test]
    fn window_in_order_and_retries() {
        let mut w = DedupWindow::new();
        assert_eq!(w.check_and_insert(1), New);
        assert_eq!(w.check_and_insert(2), New);
        assert_eq!(w.check_and_insert(2), Duplicate);
        assert_eq!(w.check_and_insert(1), Duplicate);
        // Out of order within the window.
        assert_eq!(w.check_and_insert(5), New);
        assert_eq!(w.check_and_insert(4), New);
        assert_eq!(w.check_and_insert(3), New);
        assert_eq!(w.check_and_insert(4), Duplicate);
        // A failed request is forgotten and may be counted on retry.
        w.forget(4);
        assert_eq!(w.check_and_insert(4), New);
    }

    #[test]
    fn old_entries_fall_out() {
        let mut w = DedupWindow::new();
        assert_eq!(w.check_and_insert(10), New);
        let top = 10 + DedupWindow::SPAN - 1;
        assert_eq!(w.check_and_insert(top), New);
        // 10 is exactly SPAN-1 behind: still remembered.
        assert_eq!(w.check_and_insert(10), Duplicate);
        assert_eq!(w.check_and_insert(11), New);
        assert_eq!(w.check_and_insert(top + 1), New);
        // Now 10 is SPAN behind: forgotten, so too old.
        assert_eq!(w.check_and_insert(10), TooOld);
        assert_eq!(w.check_and_insert(11), Duplicate);
        // A jump beyond the span clears everything but the new top.
        assert_eq!(w.check_and_insert(top + 1 + 5 * DedupWindow::SPAN), New);
        assert_eq!(w.check_and_insert(top + 1), TooOld);
        assert_eq!(w.bits.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
    }

    #[test]
    fn shifts_across_words_keep_bits() {
        let mut w = DedupWindow::new();
        for seq in [1, 2, 3, 70, 200] {
            assert_eq!(w.check_and_insert(seq), New);
        }
        for seq in [1, 2, 3, 70, 200] {
            assert_eq!(w.check_and_insert(seq), Duplicate, "seq {seq}");
        }
        for seq in [4, 69, 71, 199] {
            assert_eq!(w.check_and_insert(seq), New, "seq {seq}");
        }
    }

    #[test]
    fn clients_are_bounded() {
        let d = Deduplicator::new(2);
        let id = |c: &str, seq| ReportId {
            client: c.into(),
            seq,
        };
        assert_eq!(d.check_and_insert(&id("a", 1)), New);
        assert_eq!(d.check_and_insert(&id("b", 1)), New);
        assert_eq!(d.check_and_insert(&id("a", 1)), Duplicate);
        // "b" is now least recently active and makes room for "c".
        assert_eq!(d.check_and_insert(&id("c", 1)), New);
        assert_eq!(d.clients(), 2);
        assert_eq!(d.check_and_insert(&id("a", 1)), Duplicate);
        assert_eq!(d.check_and_insert(&id("b", 1)), New);
        d.forget(&id("b", 1));
        assert_eq!(d.check_and_insert(&id("b", 1)), New);
    }

    #[test]
    fn lru_evicts_in_recency_order_and_reuses_slots() {
        let d = Deduplicator::new(3);
        let id = |c: &str, seq| ReportId {
            client: c.into(),
            seq,
        };
        for c in ["a", "b", "c"] {
            assert_eq!(d.check_and_insert(&id(c, 1)), New);
        }
        // Touch "a" (the oldest), so "b" is least recently active.
        assert_eq!(d.check_and_insert(&id("a", 1)), Duplicate);
        assert_eq!(d.check_and_insert(&id("d", 1)), New);
        assert_eq!(d.check_and_insert(&id("c", 1)), Duplicate);
        assert_eq!(d.check_and_insert(&id("a", 1)), Duplicate);
        assert_eq!(d.check_and_insert(&id("d", 1)), Duplicate);
        // "b" was evicted: its window starts over.
        assert_eq!(d.check_and_insert(&id("b", 1)), New);
        assert_eq!(d.clients(), 3);
    }

    #[test]
    fn sharded_deduplicator_holds_its_limit_and_remembers_recent_clients() {
        let d = Deduplicator::new(64 * Deduplicator::SHARDS);
        assert_eq!(d.shards.len(), Deduplicator::SHARDS);
        for n in 0..10_000u64 {
            let id = ReportId {
                client: format!("client-{n}"),
                seq: 1,
            };
            assert_eq!(d.check_and_insert(&id), New);
            assert_eq!(d.check_and_insert(&id), Duplicate);
        }
        assert_eq!(d.clients(), 64 * Deduplicator::SHARDS);
        let last = ReportId {
            client: "client-9999".into(),
            seq: 1,
        };
        assert_eq!(d.check_and_insert(&last), Duplicate);
    }
}
