//! The `Report` handler: decode, then dispatch every bag with one runtime.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use meshmeter_adapters::selfmetrics::{Counter, SelfMetrics};
use meshmeter_engine::{Engine, Runtime};
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
        }
    }

    fn count_error(&self, e: &DecodeError) {
        match e {
            DecodeError::Malformed { .. } | DecodeError::Semantics(_) => self.malformed.inc(),
            DecodeError::WordIndex { .. } => self.unknown_word.inc(),
            DecodeError::TypeMismatch { .. } | DecodeError::BadValue { .. } => {
                self.wrong_type.inc()
            }
            DecodeError::TooLarge { .. } => self.too_large.inc(),
            DecodeError::GlobalWordCount { .. } => self.dictionary.inc(),
        }
    }
}

/// The server's [`MixerService`]: every accepted request is checked in full before any of
/// its bags is dispatched, so a request is counted entirely or not at all.
#[derive(Debug)]
pub struct Ingest {
    engine: Arc<Engine>,
    decoding: ArcSwap<Decoding>,
    max_message_bytes: usize,
    stats: IngestStats,
}

impl Ingest {
    /// Ingest into `engine`, refusing requests over `max_message_bytes`.
    pub fn new(engine: Arc<Engine>, max_message_bytes: usize) -> Self {
        let stats = IngestStats::new(engine.self_metrics());
        let decoding = Self::decoding(&engine, max_message_bytes);
        Ingest {
            engine,
            decoding: ArcSwap::from_pointee(decoding),
            max_message_bytes,
            stats,
        }
    }

    fn decoding(engine: &Engine, max_message_bytes: usize) -> Decoding {
        let runtime = engine.runtime();
        let decoder =
            BagDecoder::new(&runtime.snapshot().manifest).with_max_message_bytes(max_message_bytes);
        Decoding { runtime, decoder }
    }

    /// Picks up the engine's current runtime (call after [`Engine::apply`]).
    pub fn refresh(&self) {
        self.decoding.store(Arc::new(Self::decoding(
            &self.engine,
            self.max_message_bytes,
        )));
    }

    /// Decodes and dispatches one `ReportRequest`; returns how many bags it held.
    pub fn ingest(&self, request: &[u8]) -> Result<usize, DecodeError> {
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
        self.stats.bags.add(summary.bags as u64);
        if summary.skipped > 0 {
            self.stats.skipped_attributes.add(summary.skipped as u64);
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
        self.ingest(&request).map(drop).map_err(|e| {
            tracing::debug!(error = %e, "report rejected");
            e.to_status()
        })
    }
}
