//! The `Report` handler: decode, then dispatch every bag with one runtime.
//!
//! Two guards keep one client from holding an ingest runtime: a request may hold at most
//! `max_bags` bags (refused whole beyond), and a request with more than [`HEAVY_BAGS`] bags is
//! dispatched on a blocking thread, a few at a time ([`Ingest::heavy`]), so that the runtime
//! keeps answering other connections meanwhile.
//!
//! A panic while decoding or dispatching refuses the request with INTERNAL (the caller then
//! forgets its deduplication key, so a retry is counted). The bags dispatched before the
//! panic stay counted: dispatch has no undo. Out-of-range input is refused at decode, so a
//! panic here is a bug, counted in `meshmeter_ingest_panics_total`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use meshmeter_engine::{Engine, Runtime};
use meshmeter_selfmetrics::{Counter, SelfMetrics};
use meshmeter_wire::{BagDecoder, DecodeError, MixerService};
use tonic::metadata::MetadataMap;
use tonic::Status;

/// A runtime and the decoder for its manifest, swapped together on reload.
#[derive(Debug)]
struct Decoding {
    runtime: Arc<Runtime>,
    decoder: BagDecoder,
}

/// Counters of what arrived, by a small fixed set of outcomes.
#[derive(Debug)]
struct IngestStats {
    reports: Counter,
    bags: Counter,
    skipped_attributes: Counter,
    malformed: Counter,
    unknown_word: Counter,
    wrong_type: Counter,
    too_large: Counter,
    dictionary: Counter,
    too_many_bags: Counter,
    panics: Counter,
}

impl IngestStats {
    fn new(m: &SelfMetrics) -> Self {
        let errors = |reason: &str| {
            m.counter(
                "meshmeter_decode_errors_total",
                "Report requests rejected because they could not be decoded, by reason.",
                &[("reason", reason)],
            )
        };
        IngestStats {
            reports: m.counter(
                "meshmeter_reports_received_total",
                "Report requests accepted.",
                &[],
            ),
            bags: m.counter(
                "meshmeter_bags_received_total",
                "Attribute bags in accepted Report requests.",
                &[],
            ),
            skipped_attributes: m.counter(
                "meshmeter_skipped_attributes_total",
                "Attribute values ignored because no manifest declares their names.",
                &[],
            ),
            malformed: errors("malformed"),
            unknown_word: errors("unknown_word"),
            wrong_type: errors("wrong_type"),
            too_large: errors("too_large"),
            dictionary: errors("dictionary_mismatch"),
            too_many_bags: errors("too_many_bags"),
            panics: m.counter(
                "meshmeter_ingest_panics_total",
                "Report requests refused because decoding or dispatching them panicked (a bug).",
                &[],
            ),
        }
    }

    fn count_error(&self, e: &DecodeError) {
        let reason = match e {
            DecodeError::Malformed { .. } | DecodeError::Semantics(_) => &self.malformed,
            DecodeError::WordIndex { .. } => &self.unknown_word,
            DecodeError::TypeMismatch { .. } | DecodeError::BadValue { .. } => &self.wrong_type,
            DecodeError::TooLarge { .. } => &self.too_large,
            DecodeError::TooManyBags { .. } => &self.too_many_bags,
            DecodeError::GlobalWordCount { .. } => &self.dictionary,
        };
        reason.inc();
    }
}

/// The server's [`MixerService`]: every accepted request is checked in full before any of
/// its bags is dispatched, so a request is counted entirely or not at all.
#[derive(Debug)]
pub struct Ingest {
    shared: Arc<Shared>,
}

/// The handler's state, shared with the blocking threads of heavy requests.
#[derive(Debug)]
struct Shared {
    engine: Arc<Engine>,
    decoding: ArcSwap<Decoding>,
    max_message_bytes: usize,
    max_bags: usize,
    stats: IngestStats,
    /// Requests with many bags dispatched at once (each on a blocking thread).
    heavy: Arc<tokio::sync::Semaphore>,
}

/// Requests with more bags than this are dispatched off the ingest runtime. Proxies send
/// up to 1000 bags per request; most requests are far smaller and stay on the fast path.
pub(crate) const HEAVY_BAGS: usize = 256;

impl Ingest {
    /// Ingest into `engine`, refusing requests over `max_message_bytes`.
    pub fn new(engine: Arc<Engine>, max_message_bytes: usize) -> Self {
        Ingest {
            shared: Arc::new(Shared::new(engine, max_message_bytes)),
        }
    }

    /// Refuses requests with more than `limit` bags (RESOURCE_EXHAUSTED).
    pub fn with_max_bags(self, limit: usize) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|a| Shared::clone_of(&a));
        shared.max_bags = limit.max(1);
        shared.refresh();
        Ingest {
            shared: Arc::new(shared),
        }
    }

    /// Picks up the engine's current runtime (call after [`Engine::apply`]).
    pub fn refresh(&self) {
        self.shared.refresh();
    }

    /// Decodes and dispatches one `ReportRequest`; returns how many bags it held.
    pub fn ingest(&self, request: &[u8]) -> Result<usize, DecodeError> {
        self.shared.ingest(request)
    }
}

impl Shared {
    fn new(engine: Arc<Engine>, max_message_bytes: usize) -> Self {
        let stats = IngestStats::new(engine.self_metrics());
        let max_bags = meshmeter_wire::DEFAULT_MAX_BAGS_PER_REQUEST;
        let decoding = Self::decoding(&engine, max_message_bytes, max_bags);
        // One core's worth fewer than all: heavy requests never take every core.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Shared {
            engine,
            decoding: ArcSwap::from_pointee(decoding),
            max_message_bytes,
            max_bags,
            stats,
            heavy: Arc::new(tokio::sync::Semaphore::new(cores.saturating_sub(1).max(1))),
        }
    }

    /// A fresh state over the same engine (only while building, before serving).
    fn clone_of(other: &Shared) -> Self {
        Shared::new(Arc::clone(&other.engine), other.max_message_bytes)
    }

    fn decoding(engine: &Engine, max_message_bytes: usize, max_bags: usize) -> Decoding {
        let runtime = engine.runtime();
        let decoder = BagDecoder::new(&runtime.snapshot().manifest)
            .with_max_message_bytes(max_message_bytes)
            .with_max_bags(max_bags);
        Decoding { runtime, decoder }
    }

    fn refresh(&self) {
        self.decoding.store(Arc::new(Self::decoding(
            &self.engine,
            self.max_message_bytes,
            self.max_bags,
        )));
    }

    /// [`Ingest::ingest`], refusing the request with INTERNAL if it panics.
    fn ingest_guarded(&self, request: &[u8]) -> Result<(), Status> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.ingest(request))) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "report rejected");
                Err(e.to_status())
            }
            Err(_) => {
                self.stats.panics.inc();
                tracing::error!("dispatching a report panicked; the request is refused");
                Err(Status::internal(
                    "the server failed while dispatching this report (a bug); it was refused",
                ))
            }
        }
    }

    fn ingest(&self, request: &[u8]) -> Result<usize, DecodeError> {
        let decoding = self.decoding.load();
        let table = self.engine.workloads().current();
        // The decoder checks the whole request before it visits the first bag, so a bad bag
        // in the middle cannot leave the bags before it counted (a client would retry and
        // count them twice).
        let summary = decoding
            .decoder
            .decode_report_mut(request, |_, bag| {
                self.engine.dispatch(&decoding.runtime, &table, bag);
            })
            .inspect_err(|e| self.stats.count_error(e))?;
        self.stats.reports.inc();
        self.stats.bags.inc_by(summary.bags as u64);
        if summary.skipped > 0 {
            self.stats.skipped_attributes.inc_by(summary.skipped as u64);
            tracing::debug!(
                skipped = summary.skipped,
                first = summary.first_skipped.as_deref().unwrap_or(""),
                "ignored attributes no manifest declares"
            );
        }
        Ok(summary.bags)
    }
}

impl MixerService for Ingest {
    async fn report(&self, request: Bytes, _metadata: &MetadataMap) -> Result<(), Status> {
        let this = &self.shared;
        let bags = BagDecoder::count_bags(&request, this.max_bags);
        if bags <= HEAVY_BAGS || bags > this.max_bags {
            // Small (the common case), or refused by the decoder before any dispatch.
            return this.ingest_guarded(&request);
        }
        // Many bags: hours of dispatch for an attacker's delta-encoded empty bags if this
        // ran on the runtime, which serves other connections too.
        let _permit = Arc::clone(&this.heavy)
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let this = Arc::clone(this);
        tokio::task::spawn_blocking(move || this.ingest_guarded(&request))
            .await
            .unwrap_or_else(|_| Err(Status::internal("report dispatch was cancelled")))
    }
}
