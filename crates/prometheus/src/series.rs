//! Series storage: sharded hash tables keyed by typed label values, so that recording to an
//! existing series hashes and compares the values it is given without rendering or allocating.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use hashbrown::{DefaultHashBuilder, HashTable};
use meshmeter_attributes::Value;

/// Shards spread writers' lock traffic; 16 keeps the read path's shared counter from being a
/// single contended cache line across workers while costing little memory per metric.
const SHARDS: usize = 16;

/// The instant series update times count from (milliseconds), process-wide so that stores
/// carried over a reload keep comparable stamps.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn millis_since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_millis() as u64
}

/// One label combination of one metric.
#[derive(Debug)]
pub(crate) struct Series {
    hash: u64,
    key: Box<[Value<'static>]>,
    /// `a="x",b="y"`: label pairs sorted by name, escaped, rendered once at creation.
    pub(crate) labels: Box<str>,
    pub(crate) state: State,
    /// Milliseconds since [`epoch`] per the store's coarse clock at the last update.
    pub(crate) last_update: AtomicU64,
}

/// A series' numbers; f64s are kept as their bits in atomics.
#[derive(Debug)]
pub(crate) enum State {
    /// A counter's total or a gauge's level: `float` (f64 bits) plus `whole`. Whole-number
    /// counter increments go to the integer `whole`, as Istio's Prometheus client kept them, so
    /// a counter stays exact beyond 2^53; gauges use `float` only.
    Scalar { float: AtomicU64, whole: AtomicU64 },
    /// Per-bucket (not cumulative) counts, the last being `+Inf`, and the sum of observations.
    Histogram {
        buckets: Box<[AtomicU64]>,
        sum: AtomicU64,
    },
}

/// How a record changes a series.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Update<'b> {
    Add(f64),
    Set(f64),
    Observe(f64, &'b [f64]),
}

fn add_f64(cell: &AtomicU64, v: f64) {
    // A CAS loop rather than a lock: contention is per series and the loop rarely retries.
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        Some((f64::from_bits(bits) + v).to_bits())
    });
}

/// Adds a whole number in `0..2^64` to the integer part, anything else (or an addition that
/// would wrap, where Mixer's counter wrapped and ours does not) to the float part.
fn add_counter(float: &AtomicU64, whole: &AtomicU64, v: f64) {
    // 2^64 as f64; `v as u64` saturates, so check the range first.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    if (0.0..LIMIT).contains(&v) && v.fract() == 0.0 {
        let n = v as u64;
        let added = whole.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| w.checked_add(n));
        if added.is_ok() {
            return;
        }
    }
    add_f64(float, v);
}

impl State {
    /// The scalar's value: float part plus integer part, as Istio's client read it.
    pub(crate) fn scalar(float: &AtomicU64, whole: &AtomicU64) -> f64 {
        f64::from_bits(float.load(Ordering::Relaxed)) + whole.load(Ordering::Relaxed) as f64
    }
}

impl Series {
    fn apply(&self, update: Update<'_>, now: u64) {
        match (&self.state, update) {
            (State::Scalar { float, whole }, Update::Add(v)) => add_counter(float, whole, v),
            (State::Scalar { float, .. }, Update::Set(v)) => {
                float.store(v.to_bits(), Ordering::Relaxed)
            }
            (State::Histogram { buckets, sum }, Update::Observe(v, bounds)) => {
                // `le` is inclusive; NaN belongs only in +Inf.
                let i = if v.is_nan() {
                    bounds.len()
                } else {
                    bounds.partition_point(|&b| b < v)
                };
                if let Some(b) = buckets.get(i) {
                    b.fetch_add(1, Ordering::Relaxed);
                }
                add_f64(sum, v);
            }
            // A store's kind never changes (a changed kind makes a new store), so other pairs
            // cannot occur.
            _ => {}
        }
        if self.last_update.load(Ordering::Relaxed) != now {
            self.last_update.store(now, Ordering::Relaxed);
        }
    }

    fn matches(&self, labels: &[Value<'_>]) -> bool {
        self.key.len() == labels.len() && self.key.iter().zip(labels).all(|(a, b)| same(a, b))
    }
}

/// Equality for series identity: doubles by bits, so NaN finds its series.
fn same(a: &Value<'_>, b: &Value<'_>) -> bool {
    // `Value`'s own `==` needs one lifetime on both sides, and `Value` is invariant in it.
    match (a, b) {
        (Value::String(x), Value::String(y))
        | (Value::EmailAddress(x), Value::EmailAddress(y))
        | (Value::DnsName(x), Value::DnsName(y))
        | (Value::Uri(x), Value::Uri(y)) => x == y,
        (Value::Int64(x), Value::Int64(y)) => x == y,
        (Value::Double(x), Value::Double(y)) => x.to_bits() == y.to_bits(),
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Timestamp(x), Value::Timestamp(y)) => x == y,
        (Value::Duration(x), Value::Duration(y)) => x == y,
        (Value::IpAddress(x), Value::IpAddress(y)) => x == y,
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        (Value::StringMap(x), Value::StringMap(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k) == Some(v))
        }
        _ => false,
    }
}

fn hash_value<H: Hasher>(v: &Value<'_>, builder: &DefaultHashBuilder, h: &mut H) {
    match v {
        Value::String(s) => text(h, 0, s),
        Value::EmailAddress(s) => text(h, 1, s),
        Value::DnsName(s) => text(h, 2, s),
        Value::Uri(s) => text(h, 3, s),
        Value::Int64(i) => {
            h.write_u8(4);
            h.write_i64(*i);
        }
        Value::Double(d) => {
            h.write_u8(5);
            h.write_u64(d.to_bits());
        }
        Value::Bool(b) => {
            h.write_u8(6);
            h.write_u8(u8::from(*b));
        }
        Value::Timestamp(t) => {
            h.write_u8(7);
            h.write_i64(t.secs());
            h.write_u32(t.subsec_nanos());
        }
        Value::Duration(d) => {
            h.write_u8(8);
            h.write_i64(d.as_nanos());
        }
        Value::IpAddress(ip) => {
            h.write_u8(9);
            match ip {
                std::net::IpAddr::V4(a) => h.write(&a.octets()),
                std::net::IpAddr::V6(a) => h.write(&a.octets()),
            }
        }
        Value::Bytes(b) => {
            h.write_u8(10);
            h.write_usize(b.len());
            h.write(b);
        }
        Value::StringMap(m) => {
            // Map equality ignores entry order, so the hash must too: sum per-entry hashes.
            h.write_u8(11);
            h.write_usize(m.len());
            let mut acc = 0u64;
            for (k, v) in m.iter() {
                let mut eh = builder.build_hasher();
                eh.write(k.as_bytes());
                eh.write_u8(0xff);
                eh.write(v.as_bytes());
                acc = acc.wrapping_add(eh.finish());
            }
            h.write_u64(acc);
        }
    }
}

fn text<H: Hasher>(h: &mut H, tag: u8, s: &str) {
    h.write_u8(tag);
    h.write_usize(s.len());
    h.write(s.as_bytes());
}

/// Why a new series was not created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LimitReached {
    /// The store holds its series limit.
    Series,
    /// The new series' label text would take the store past its label bytes budget.
    LabelBytes,
}

/// How much a store may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Series.
    pub(crate) series: usize,
    /// Bytes of label text (`a="x",b="y"`) across all series.
    pub(crate) label_bytes: usize,
}

/// All series of one metric definition. Shared by the registries of successive reloads while
/// the definition stays the same, so records through an old handle still land.
#[derive(Debug)]
pub(crate) struct Store {
    shards: Box<[RwLock<HashTable<Arc<Series>>>]>,
    hasher: DefaultHashBuilder,
    count: AtomicUsize,
    /// Label text bytes held, bounded by [`Limits::label_bytes`] so that the exposition's size
    /// is bounded too.
    label_bytes: AtomicUsize,
    dropped: AtomicU64,
    /// Label values cut to the length cap.
    truncated: AtomicU64,
    /// Coarse time (ms since [`epoch`]) stamped on updates; advanced by sweeps and by series
    /// creation, so the hot path never reads the clock.
    clock: AtomicU64,
    histogram_buckets: usize,
}

impl Store {
    /// A store for scalar series (`histogram_buckets` 0) or histograms with that many buckets
    /// (finite bounds plus one).
    pub(crate) fn new(histogram_buckets: usize) -> Self {
        Store {
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            hasher: DefaultHashBuilder::default(),
            count: AtomicUsize::new(0),
            label_bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            clock: AtomicU64::new(millis_since_epoch(Instant::now())),
            histogram_buckets,
        }
    }

    fn hash(&self, labels: &[Value<'_>]) -> u64 {
        let mut h = self.hasher.build_hasher();
        for v in labels {
            hash_value(v, &self.hasher, &mut h);
        }
        h.finish()
    }

    fn shard(&self, hash: u64) -> &RwLock<HashTable<Arc<Series>>> {
        // The table uses the low bits for its slot and the top 7 for its tag; pick the shard
        // from bits neither relies on much.
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// Applies `update` to the series of `labels`, creating it (rendered by `render`) when
    /// absent and the limits allow.
    pub(crate) fn update(
        &self,
        labels: &[Value<'_>],
        update: Update<'_>,
        limits: Limits,
        render: impl FnOnce() -> Box<str>,
    ) -> Result<(), LimitReached> {
        let hash = self.hash(labels);
        let shard = self.shard(hash);
        let now = self.clock.load(Ordering::Relaxed);
        {
            let table = shard.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = table.find(hash, |s| s.hash == hash && s.matches(labels)) {
                s.apply(update, now);
                return Ok(());
            }
        }
        let mut table = shard.write().unwrap_or_else(PoisonError::into_inner);
        // Another worker may have created it between the two locks.
        if let Some(s) = table.find(hash, |s| s.hash == hash && s.matches(labels)) {
            s.apply(update, now);
            return Ok(());
        }
        if self.count.fetch_add(1, Ordering::Relaxed) >= limits.series {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(LimitReached::Series);
        }
        let text = render();
        let held = self.label_bytes.fetch_add(text.len(), Ordering::Relaxed);
        if held.saturating_add(text.len()) > limits.label_bytes {
            self.label_bytes.fetch_sub(text.len(), Ordering::Relaxed);
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(LimitReached::LabelBytes);
        }
        let now = self.advance_clock(Instant::now());
        let state = if self.histogram_buckets == 0 {
            State::Scalar {
                float: AtomicU64::new(0f64.to_bits()),
                whole: AtomicU64::new(0),
            }
        } else {
            State::Histogram {
                buckets: (0..self.histogram_buckets)
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                sum: AtomicU64::new(0f64.to_bits()),
            }
        };
        let series = Arc::new(Series {
            hash,
            key: labels.iter().map(|v| v.clone().into_owned()).collect(),
            labels: text,
            state,
            last_update: AtomicU64::new(now),
        });
        series.apply(update, now);
        table.insert_unique(hash, series, |s| s.hash);
        Ok(())
    }

    fn advance_clock(&self, now: Instant) -> u64 {
        let ms = millis_since_epoch(now);
        self.clock.fetch_max(ms, Ordering::Relaxed).max(ms)
    }

    /// Every series, in no particular order.
    pub(crate) fn snapshot(&self) -> Vec<Arc<Series>> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            let table = shard.read().unwrap_or_else(PoisonError::into_inner);
            out.extend(table.iter().cloned());
        }
        out
    }

    /// Removes series not updated for `max_idle_ms` as of `now`; returns how many.
    pub(crate) fn sweep(&self, now: Instant, max_idle_ms: Option<u64>) -> usize {
        let now = self.advance_clock(now);
        let Some(max_idle) = max_idle_ms else {
            return 0;
        };
        let mut removed = 0;
        let mut freed = 0;
        for shard in self.shards.iter() {
            let mut table = shard.write().unwrap_or_else(PoisonError::into_inner);
            table.retain(|s| {
                let keep = now.saturating_sub(s.last_update.load(Ordering::Relaxed)) <= max_idle;
                if !keep {
                    removed += 1;
                    freed += s.labels.len();
                }
                keep
            });
        }
        self.count.fetch_sub(removed, Ordering::Relaxed);
        self.label_bytes.fetch_sub(freed, Ordering::Relaxed);
        removed
    }

    /// The number of series held.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Bytes of label text held.
    pub(crate) fn label_bytes(&self) -> usize {
        self.label_bytes.load(Ordering::Relaxed)
    }

    /// Counts `n` label values cut to the length cap.
    pub(crate) fn count_truncated(&self, n: u64) {
        self.truncated.fetch_add(n, Ordering::Relaxed);
    }

    /// Label values cut to the length cap, since the store was made.
    pub(crate) fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// New series refused because of the limit, since the store was made.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
