//! The hot-path decoder: `ReportRequest` bytes -> bags, without building protobuf structs.
//!
//! A [`BagDecoder`] is built once per configuration snapshot from a [`Manifest`]: it
//! precomputes, for every global dictionary word, the attribute id and type it names, and a
//! hash table for names sent as per-message words. Decoding then walks the request bytes
//! once to find the request-level fields (they may follow the bags), and once more to type and
//! check every value of every bag, staging them; only when the whole request is valid are the
//! staged values applied, bag after bag, to one reused [`Bag`] whose values borrow from the
//! request bytes and the static dictionary. A request is therefore visited entirely or not at
//! all, with one walk over its bytes.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meshmeter_attributes::vocabulary::GLOBAL_DICTIONARY;
use meshmeter_attributes::{AttrId, Bag, Duration, Manifest, Timestamp, Value, ValueType};

use crate::error::{BadValue, DecodeError, Malformed, WireKind};
use crate::proto::RepeatedAttributesSemantics;
use crate::reader::{zigzag32, Reader, WireType};

/// The default limit on a request's size: 4 MiB, gRPC's usual default.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// The default for the most bags one request may hold. Each bag costs one dispatch however
/// few bytes it takes (with DELTA_ENCODING a 2-byte empty bag repeats the previous one), so
/// the byte limit alone does not bound a request's work. Proxies send 100-1000 per request.
pub const DEFAULT_MAX_BAGS_PER_REQUEST: usize = 10_000;

/// The most entries one STRING_MAP value may have. `StringMap` keeps entries in a list (a scan
/// beats hashing for label maps), so inserting is linear; the cap keeps a hostile map from
/// costing quadratic time.
pub const MAX_MAP_ENTRIES: usize = 1024;

/// The most STRING_MAP entries one request may carry in all (same reason as above).
pub const MAX_MAP_ENTRIES_PER_REQUEST: usize = 65_536;

/// What a decode did besides visiting bags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeSummary {
    /// Bags visited.
    pub bags: usize,
    /// Attribute values skipped because the manifest does not declare their names.
    pub skipped: usize,
    /// The first skipped name, for a log line.
    pub first_skipped: Option<String>,
    /// Whether the request was delta-encoded.
    pub delta: bool,
}

/// How a name word resolves against the manifest; cached per word slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolved {
    Pending,
    Undeclared,
    Attr(AttrId, ValueType),
}

/// Decodes `ReportRequest` bytes into bags typed by one manifest.
///
/// Cheap to share (`&self` everywhere, no interior mutability): build one per configuration
/// snapshot and use it from every thread.
///
/// ```
/// use meshmeter_attributes::{Manifest, Value};
/// use meshmeter_wire::{BagDecoder, Encoding, ReportEncoder};
///
/// let manifest = Manifest::istio();
/// let sent = manifest.id("connection.sent.bytes").unwrap();
/// let mut bag = meshmeter_attributes::Bag::new(&manifest);
/// bag.set(sent, Value::Int64(42));
/// let bytes = ReportEncoder::new(&manifest, Encoding::Delta).encode_to_vec(&[bag]);
///
/// let decoder = BagDecoder::new(&manifest);
/// let mut seen = Vec::new();
/// let summary = decoder
///     .decode_report(&bytes, |i, bag| seen.push((i, bag.get(sent).cloned().map(Value::into_owned))))
///     .unwrap();
/// assert_eq!(summary.bags, 1);
/// assert_eq!(seen, [(0, Some(Value::Int64(42)))]);
/// ```
#[derive(Clone, Debug)]
pub struct BagDecoder {
    manifest: Manifest,
    global: Box<[Option<(AttrId, ValueType)>]>,
    by_name: hashbrown::HashMap<Box<[u8]>, (AttrId, ValueType)>,
    max_message_bytes: usize,
    max_bags: usize,
}

/// Per-request state: the word lists in force and their name resolutions.
///
/// Words are kept as bytes: a word that names a declared attribute is valid UTF-8 by
/// construction, so only words used as text are validated, when used.
struct Words<'a, 'd> {
    request: &'a [u8],
    defaults: &'d [&'a [u8]],
    default_names: Vec<Resolved>,
    /// Words already checked as UTF-8 (a request's words are used by many bags).
    default_texts: Vec<Option<&'a str>>,
    own: Vec<&'a [u8]>,
    own_names: Vec<Resolved>,
    own_texts: Vec<Option<&'a str>>,
    /// The current bag's map entries, staged until its words are known.
    entries: Vec<Entry<'a>>,
    map_entries: usize,
    /// The entries of the label map being decoded.
    scratch: Vec<(&'a str, &'a str)>,
}

impl BagDecoder {
    /// A decoder for `manifest`'s attributes, with the default size limit.
    pub fn new(manifest: &Manifest) -> Self {
        let global = GLOBAL_DICTIONARY
            .iter()
            .map(|word| manifest.lookup(word))
            .collect();
        let by_name = manifest
            .iter()
            .map(|(id, name, t)| (Box::from(name.as_bytes()), (id, t)))
            .collect();
        BagDecoder {
            manifest: manifest.clone(),
            global,
            by_name,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_bags: DEFAULT_MAX_BAGS_PER_REQUEST,
        }
    }

    /// Sets the largest request accepted, in bytes.
    pub fn with_max_message_bytes(mut self, limit: usize) -> Self {
        self.max_message_bytes = limit;
        self
    }

    /// How many bags `bytes` holds, found by reading only field tags and lengths (cheap next
    /// to a decode); stops early at malformed bytes or past `cap`, which the decode reports.
    pub fn count_bags(bytes: &[u8], cap: usize) -> usize {
        let mut r = Reader::new(bytes);
        let mut bags = 0;
        while let Ok(Some((field, wire))) = r.next_field() {
            if field == 1 {
                bags += 1;
                if bags > cap {
                    break;
                }
            }
            if r.skip(wire).is_err() {
                break;
            }
        }
        bags
    }

    /// Sets the most bags one request may hold (more: [`DecodeError::TooManyBags`]).
    pub fn with_max_bags(mut self, limit: usize) -> Self {
        self.max_bags = limit;
        self
    }

    /// The largest request accepted, in bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// The manifest the bags are typed by.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Decodes a `ReportRequest` and calls `visit(bag_index, bag)` for each bag in order.
    ///
    /// With DELTA_ENCODING each bag is applied on top of the previous one (values are added
    /// or overridden; the encoding cannot remove one); with INDEPENDENT_ENCODING each bag
    /// starts empty. Values whose names the manifest does not declare are skipped and counted.
    ///
    /// All or nothing: the whole request is checked before the first bag is visited, so on
    /// error no bag has been visited (a client that retries a rejected request cannot have
    /// had part of it counted).
    pub fn decode_report<'a>(
        &self,
        bytes: &'a [u8],
        mut visit: impl FnMut(usize, &Bag<'a>),
    ) -> Result<DecodeSummary, DecodeError> {
        self.decode_report_mut(bytes, |i, bag| visit(i, bag))
    }

    /// [`BagDecoder::decode_report`], handing the visitor the bag mutably so that it can add
    /// attributes for its own use (identity enrichment). The visitor must leave the bag as it
    /// found it ([`Bag::mark`] and [`Bag::rollback`]): with DELTA_ENCODING the next bag is
    /// applied on top of it.
    pub fn decode_report_mut<'a>(
        &self,
        bytes: &'a [u8],
        mut visit: impl FnMut(usize, &mut Bag<'a>),
    ) -> Result<DecodeSummary, DecodeError> {
        if bytes.len() > self.max_message_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                limit: self.max_message_bytes,
            });
        }
        let top = |e| DecodeError::malformed(e, None);
        // Request-level fields may come after the bags, so find them first.
        let mut defaults: Vec<&'a [u8]> = Vec::new();
        let mut global_word_count = 0u64;
        let mut semantics = 0i32;
        let mut r = Reader::new(bytes);
        while let Some((field, wire)) = r.next_field().map_err(top)? {
            match field {
                1 => {
                    r.expect(field, wire, WireType::Len).map_err(top)?;
                    r.bytes().map_err(top)?;
                }
                2 => {
                    r.expect(field, wire, WireType::Len).map_err(top)?;
                    defaults.push(r.bytes().map_err(top)?);
                }
                3 => {
                    r.expect(field, wire, WireType::Varint).map_err(top)?;
                    global_word_count = r.varint().map_err(top)?;
                }
                4 => {
                    r.expect(field, wire, WireType::Varint).map_err(top)?;
                    // proto3 enums are int32 on the wire; truncation is the protobuf rule.
                    semantics = r.varint().map_err(top)? as i32;
                }
                _ => r.skip(wire).map_err(top)?,
            }
        }
        if global_word_count > GLOBAL_DICTIONARY.len() as u64 {
            return Err(DecodeError::GlobalWordCount {
                client: u32::try_from(global_word_count).unwrap_or(u32::MAX),
                server: GLOBAL_DICTIONARY.len(),
            });
        }
        let delta = match RepeatedAttributesSemantics::try_from(semantics) {
            Ok(RepeatedAttributesSemantics::DeltaEncoding) => true,
            Ok(RepeatedAttributesSemantics::IndependentEncoding) => false,
            Err(_) => return Err(DecodeError::Semantics(semantics)),
        };

        let mut words = Words {
            request: bytes,
            default_names: vec![Resolved::Pending; defaults.len()],
            default_texts: vec![None; defaults.len()],
            defaults: &defaults,
            own: Vec::new(),
            own_names: Vec::new(),
            own_texts: Vec::new(),
            // Room for a typical bag's entries, so that growing does not cost a reallocation
            // per doubling on every request.
            entries: Vec::with_capacity(32),
            map_entries: 0,
            scratch: Vec::new(),
        };
        let mut summary = DecodeSummary {
            delta,
            ..DecodeSummary::default()
        };
        // Checking walk: every value typed and staged, nothing visited yet.
        let mut staged = Staged::new(bytes.len());
        self.walk_bags(bytes, &mut words, &mut staged, &mut summary)?;

        let mut bag = Bag::new(&self.manifest);
        if !staged.overflowed {
            let Staged {
                values, ends, maps, ..
            } = staged;
            let mut values = values.into_iter();
            let mut start = 0;
            for (index, &end) in ends.iter().enumerate() {
                if !delta {
                    bag.clear();
                }
                for (id, value) in values.by_ref().take(end - start) {
                    match value {
                        StagedValue::Value(value) => {
                            bag.set(id, value);
                        }
                        StagedValue::Map(from, to) => put_map(&mut bag, id, &maps[from..to]),
                    }
                }
                start = end;
                visit(index, &mut bag);
            }
            return Ok(summary);
        }
        // More values than are worth holding: the request is valid, so walk it again, this
        // time into the bag.
        words.map_entries = 0;
        let mut again = DecodeSummary {
            delta,
            ..DecodeSummary::default()
        };
        let mut sink = Visit {
            bag: &mut bag,
            delta,
            visit,
        };
        self.walk_bags(bytes, &mut words, &mut sink, &mut again)?;
        Ok(summary)
    }

    /// Walks every bag of the request into `sink`.
    fn walk_bags<'a>(
        &self,
        bytes: &'a [u8],
        words: &mut Words<'a, '_>,
        sink: &mut impl Sink<'a>,
        summary: &mut DecodeSummary,
    ) -> Result<(), DecodeError> {
        let top = |e| DecodeError::malformed(e, None);
        let mut r = Reader::new(bytes);
        while let Some((field, wire)) = r.next_field().map_err(top)? {
            if field != 1 {
                r.skip(wire).map_err(top)?;
                continue;
            }
            let index = summary.bags;
            if index >= self.max_bags {
                return Err(DecodeError::TooManyBags {
                    limit: self.max_bags,
                });
            }
            let msg = r.message().map_err(top)?;
            sink.begin();
            self.apply_bag(msg, index, words, sink, summary)?;
            sink.end(index);
            summary.bags += 1;
        }
        Ok(())
    }

    /// Applies one `CompressedAttributes` message to `sink`.
    fn apply_bag<'a>(
        &self,
        msg: Reader<'a>,
        index: usize,
        words: &mut Words<'a, '_>,
        sink: &mut impl Sink<'a>,
        summary: &mut DecodeSummary,
    ) -> Result<(), DecodeError> {
        if let Some(mark) = sink.mark() {
            let (skipped, had_first, map_entries) = (
                summary.skipped,
                summary.first_skipped.is_some(),
                words.map_entries,
            );
            if self.apply_in_order(msg, index, words, sink, summary) {
                return Ok(());
            }
            // Undo what the attempt did; the general walk decides, and names any error.
            sink.rewind(mark);
            summary.skipped = skipped;
            if !had_first {
                summary.first_skipped = None;
            }
            words.map_entries = map_entries;
        }
        self.apply_any_order(msg, index, words, sink, summary)
    }

    /// The common case in one walk: the bag's words come before its maps, as every protobuf
    /// encoder writes fields in number order, so each entry is applied as it is read. Returns
    /// false, having perhaps put part of the bag in `sink`, when a word follows a map entry or
    /// anything is wrong.
    fn apply_in_order<'a>(
        &self,
        msg: Reader<'a>,
        index: usize,
        words: &mut Words<'a, '_>,
        sink: &mut impl Sink<'a>,
        summary: &mut DecodeSummary,
    ) -> bool {
        words.own.clear();
        let mut r = msg;
        let mut entries;
        loop {
            entries = r;
            match r.next_field() {
                Ok(Some((1, WireType::Len))) => match r.bytes() {
                    Ok(word) => words.own.push(word),
                    Err(_) => return false,
                },
                Ok(Some(_)) => break,
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
        let mut cx = self.bag_cx(index, words);
        let mut r = entries;
        loop {
            match r.next_field() {
                Ok(Some((1, _))) | Err(_) => return false,
                Ok(None) => return true,
                Ok(Some((field, wire))) => match map_field(&mut r, field, wire) {
                    Ok(Some((kind, key, raw))) => {
                        if cx.apply(kind, key, raw, sink, summary).is_err() {
                            return false;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => return false,
                },
            }
        }
    }

    /// Any field order: the words may follow the maps that use them, so entries are staged
    /// and resolved once the bag's words are known. Staging is capped so that a hostile bag
    /// of tiny entries cannot make it many times the request's size; a bag with more entries
    /// is walked a second time instead.
    fn apply_any_order<'a>(
        &self,
        msg: Reader<'a>,
        index: usize,
        words: &mut Words<'a, '_>,
        sink: &mut impl Sink<'a>,
        summary: &mut DecodeSummary,
    ) -> Result<(), DecodeError> {
        let m = |e| DecodeError::malformed(e, Some(index));
        words.own.clear();
        words.entries.clear();
        let mut overflow = false;
        let mut r = msg;
        while let Some((field, wire)) = r.next_field().map_err(m)? {
            if field == 1 {
                r.expect(field, wire, WireType::Len).map_err(m)?;
                words.own.push(r.bytes().map_err(m)?);
                continue;
            }
            match map_field(&mut r, field, wire).map_err(m)? {
                Some(_) if overflow => {}
                Some(entry) if words.entries.len() < MAX_STAGED_ENTRIES => {
                    words.entries.push(entry);
                }
                Some(_) => overflow = true,
                None => {}
            }
        }

        let entries = std::mem::take(&mut words.entries);
        let mut cx = self.bag_cx(index, words);
        let applied = if overflow {
            let mut r = msg;
            let mut applied = Ok(());
            while let Some((field, wire)) = r.next_field().map_err(m)? {
                if field == 1 {
                    r.skip(wire).map_err(m)?;
                } else if let Some((kind, key, raw)) = map_field(&mut r, field, wire).map_err(m)? {
                    applied = cx.apply(kind, key, raw, sink, summary);
                    if applied.is_err() {
                        break;
                    }
                }
            }
            applied
        } else {
            entries
                .iter()
                .try_for_each(|&(kind, key, raw)| cx.apply(kind, key, raw, sink, summary))
        };
        words.entries = entries;
        applied
    }

    /// The context for applying one bag's entries, its word list being the bag's own words
    /// when it has any, else the request's default words.
    fn bag_cx<'a, 'x>(&'x self, index: usize, words: &'x mut Words<'a, '_>) -> BagCx<'a, 'x> {
        let own = !words.own.is_empty();
        if own {
            words.own_names.clear();
            words.own_names.resize(words.own.len(), Resolved::Pending);
            words.own_texts.clear();
            words.own_texts.resize(words.own.len(), None);
        }
        BagCx {
            decoder: self,
            request: words.request,
            index,
            dict: if own { &words.own } else { words.defaults },
            names: if own {
                &mut words.own_names
            } else {
                &mut words.default_names
            },
            texts: if own {
                &mut words.own_texts
            } else {
                &mut words.default_texts
            },
            map_entries: &mut words.map_entries,
            scratch: &mut words.scratch,
        }
    }
}

/// Where a walk puts the values it decodes.
trait Sink<'a> {
    /// A bag starts.
    fn begin(&mut self);
    /// One attribute of the current bag.
    fn set(&mut self, id: AttrId, value: Value<'a>);
    /// One label-map attribute of the current bag, by its entries (in wire order; a later
    /// duplicate key wins).
    fn set_map(&mut self, id: AttrId, entries: &[(&'a str, &'a str)]);
    /// Bag `index` is complete.
    fn end(&mut self, index: usize);
    /// A point the current bag's values can be taken back to, if this sink can.
    fn mark(&self) -> Option<(usize, usize)>;
    /// Takes back the values set since `mark`.
    fn rewind(&mut self, mark: (usize, usize));
}

/// Sets a label map, refilling the map the bag already holds for `id` when there is one: with
/// delta encoding that is the previous report's, and reusing it saves an allocation and a free
/// per map per report.
fn put_map<'a>(bag: &mut Bag<'a>, id: AttrId, entries: &[(&'a str, &'a str)]) {
    if let Some(Value::StringMap(Cow::Owned(map))) = bag.get_mut(id) {
        map.clear();
        for &(key, value) in entries {
            map.insert(key, value);
        }
        return;
    }
    bag.set(
        id,
        Value::StringMap(Cow::Owned(entries.iter().copied().collect())),
    );
}

/// A staged value: typed, or a label map kept as a range of the request's map entries.
enum StagedValue<'a> {
    Value(Value<'a>),
    Map(usize, usize),
}

/// The most values a request stages (48 bytes each, about 3 MiB): a request of more tiny
/// values is walked a second time instead, so that memory stays a small multiple of the
/// request's size whatever its shape. A batch of 1,000 sidecar reports stages 28,000.
const MAX_STAGED_VALUES: usize = 65_536;

/// The checking walk's sink: every value of every bag, in order, with where each bag ends.
struct Staged<'a> {
    values: Vec<(AttrId, StagedValue<'a>)>,
    ends: Vec<usize>,
    /// Every staged label map's entries, one after the other.
    maps: Vec<(&'a str, &'a str)>,
    overflowed: bool,
}

impl Staged<'_> {
    fn new(request_bytes: usize) -> Self {
        // A value takes at least 4 bytes on the wire (entry tag, length, key, value); most
        // take 5-10. Reserve for the typical size so that staging rarely reallocates.
        let guess = (request_bytes / 8).min(MAX_STAGED_VALUES);
        Staged {
            values: Vec::with_capacity(guess),
            ends: Vec::new(),
            maps: Vec::new(),
            overflowed: false,
        }
    }
}

impl<'a> Sink<'a> for Staged<'a> {
    fn begin(&mut self) {}

    #[inline]
    fn set(&mut self, id: AttrId, value: Value<'a>) {
        if self.values.len() < MAX_STAGED_VALUES {
            self.values.push((id, StagedValue::Value(value)));
        } else {
            self.overflow();
        }
    }

    fn set_map(&mut self, id: AttrId, entries: &[(&'a str, &'a str)]) {
        // Map entries are bounded per request (MAX_MAP_ENTRIES_PER_REQUEST) by the decoder.
        if self.values.len() < MAX_STAGED_VALUES {
            let from = self.maps.len();
            self.maps.extend_from_slice(entries);
            self.values
                .push((id, StagedValue::Map(from, self.maps.len())));
        } else {
            self.overflow();
        }
    }

    fn end(&mut self, _index: usize) {
        self.ends.push(self.values.len());
    }

    fn mark(&self) -> Option<(usize, usize)> {
        Some((self.values.len(), self.maps.len()))
    }

    fn rewind(&mut self, (values, maps): (usize, usize)) {
        // After an overflow nothing is kept, so there is nothing to take back.
        self.values.truncate(values);
        self.maps.truncate(maps);
    }
}

impl Staged<'_> {
    fn overflow(&mut self) {
        if !self.overflowed {
            self.overflowed = true;
            self.values = Vec::new();
            self.maps = Vec::new();
        }
    }
}

/// The second walk's sink (requests too large to stage): the bag itself, visited at each end.
struct Visit<'b, 'a, F> {
    bag: &'b mut Bag<'a>,
    delta: bool,
    visit: F,
}

impl<'a, F: FnMut(usize, &mut Bag<'a>)> Sink<'a> for Visit<'_, 'a, F> {
    fn begin(&mut self) {
        if !self.delta {
            self.bag.clear();
        }
    }

    #[inline]
    fn set(&mut self, id: AttrId, value: Value<'a>) {
        self.bag.set(id, value);
    }

    fn set_map(&mut self, id: AttrId, entries: &[(&'a str, &'a str)]) {
        put_map(self.bag, id, entries);
    }

    fn end(&mut self, index: usize) {
        (self.visit)(index, self.bag);
    }

    /// Values set in a bag cannot be taken back (a delta bag replaces earlier values), so
    /// this walk always uses the general path.
    fn mark(&self) -> Option<(usize, usize)> {
        None
    }

    fn rewind(&mut self, _mark: (usize, usize)) {}
}

/// How many map entries of one bag are staged before falling back to a second walk.
const MAX_STAGED_ENTRIES: usize = 1024;

/// A staged map entry: the map it came from, its key (a word index) and its raw value.
type Entry<'a> = (WireKind, i32, Raw<'a>);

/// Reads a field of `CompressedAttributes` other than `words`: a map entry with its kind, or
/// `None` for an unknown field (skipped).
#[inline]
fn map_field<'a>(
    r: &mut Reader<'a>,
    field: u32,
    wire: WireType,
) -> Result<Option<Entry<'a>>, (Malformed, usize)> {
    let kind = match field {
        2 => WireKind::Strings,
        3 => WireKind::Int64s,
        4 => WireKind::Doubles,
        5 => WireKind::Bools,
        6 => WireKind::Timestamps,
        7 => WireKind::Durations,
        8 => WireKind::Bytes,
        9 => WireKind::StringMaps,
        _ => {
            r.skip(wire)?;
            return Ok(None);
        }
    };
    r.expect(field, wire, WireType::Len)?;
    let (key, raw) = map_entry(r.message()?, kind)?;
    Ok(Some((kind, key, raw)))
}

/// A map entry's value before it is typed.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Word(i32),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// seconds, nanos
    Time(i64, i32),
    Bytes(&'a [u8]),
    Map(Reader<'a>),
}

/// Reads one map entry (`key = 1`, `value = 2`; either may be absent and then has its
/// default, and fields may come in any order, as protobuf allows).
fn map_entry(mut e: Reader<'_>, kind: WireKind) -> Result<(i32, Raw<'_>), (Malformed, usize)> {
    let mut key = 0i32;
    let mut raw = match kind {
        WireKind::Strings => Raw::Word(0),
        WireKind::Int64s => Raw::Int(0),
        WireKind::Doubles => Raw::Double(0.0),
        WireKind::Bools => Raw::Bool(false),
        WireKind::Timestamps | WireKind::Durations => Raw::Time(0, 0),
        WireKind::Bytes => Raw::Bytes(&[]),
        WireKind::StringMaps => Raw::Map(Reader::new(&[])),
    };
    while let Some((field, wire)) = e.next_field()? {
        match field {
            1 => {
                e.expect(field, wire, WireType::Varint)?;
                let at = e.offset();
                key = zigzag32(e.varint()?).ok_or((Malformed::Sint32Range, at))?;
            }
            2 => {
                raw = match kind {
                    WireKind::Strings => {
                        e.expect(field, wire, WireType::Varint)?;
                        let at = e.offset();
                        Raw::Word(zigzag32(e.varint()?).ok_or((Malformed::Sint32Range, at))?)
                    }
                    WireKind::Int64s => {
                        e.expect(field, wire, WireType::Varint)?;
                        Raw::Int(e.varint()? as i64)
                    }
                    WireKind::Doubles => {
                        e.expect(field, wire, WireType::Fixed64)?;
                        Raw::Double(f64::from_bits(e.fixed64()?))
                    }
                    WireKind::Bools => {
                        e.expect(field, wire, WireType::Varint)?;
                        Raw::Bool(e.varint()? != 0)
                    }
                    WireKind::Timestamps | WireKind::Durations => {
                        e.expect(field, wire, WireType::Len)?;
                        let (s, n) = seconds_nanos(e.message()?)?;
                        Raw::Time(s, n)
                    }
                    WireKind::Bytes => {
                        e.expect(field, wire, WireType::Len)?;
                        Raw::Bytes(e.bytes()?)
                    }
                    WireKind::StringMaps => {
                        e.expect(field, wire, WireType::Len)?;
                        Raw::Map(e.message()?)
                    }
                }
            }
            _ => e.skip(wire)?,
        }
    }
    Ok((key, raw))
}

/// Reads a `google.protobuf.Timestamp` or `Duration` (same fields).
fn seconds_nanos(mut r: Reader<'_>) -> Result<(i64, i32), (Malformed, usize)> {
    let (mut secs, mut nanos) = (0i64, 0i32);
    while let Some((field, wire)) = r.next_field()? {
        match field {
            1 => {
                r.expect(field, wire, WireType::Varint)?;
                secs = r.varint()? as i64;
            }
            2 => {
                r.expect(field, wire, WireType::Varint)?;
                nanos = r.varint()? as i32;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok((secs, nanos))
}

/// One bag's view of the decoder and its word list.
struct BagCx<'a, 'x> {
    decoder: &'x BagDecoder,
    request: &'a [u8],
    index: usize,
    dict: &'x [&'a [u8]],
    names: &'x mut [Resolved],
    texts: &'x mut [Option<&'a str>],
    map_entries: &'x mut usize,
    scratch: &'x mut Vec<(&'a str, &'a str)>,
}

impl<'a> BagCx<'a, '_> {
    fn bad_index(&self, index: i32) -> DecodeError {
        DecodeError::WordIndex {
            index,
            bag: self.index,
            words: self.dict.len(),
            globals: GLOBAL_DICTIONARY.len(),
        }
    }

    /// The bytes of per-message word `index` (< 0).
    #[inline]
    fn word_bytes(&self, index: i32) -> Result<&'a [u8], DecodeError> {
        // -(index + 1) cannot overflow for any negative i32.
        match usize::try_from(-(i64::from(index) + 1)) {
            Ok(slot) => self
                .dict
                .get(slot)
                .copied()
                .ok_or_else(|| self.bad_index(index)),
            Err(_) => Err(self.bad_index(index)),
        }
    }

    /// The text of word `index`.
    #[inline]
    fn word(&mut self, index: i32) -> Result<&'a str, DecodeError> {
        if index >= 0 {
            return GLOBAL_DICTIONARY
                .get(index as usize)
                .copied()
                .ok_or_else(|| self.bad_index(index));
        }
        let bytes = self.word_bytes(index)?;
        let slot = -(index + 1) as usize;
        if let Some(text) = self.texts[slot] {
            return Ok(text);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::Malformed {
            kind: Malformed::Utf8,
            // Where the word is in the request (both point into the same buffer).
            offset: (bytes.as_ptr() as usize).saturating_sub(self.request.as_ptr() as usize),
            bag: Some(self.index),
        })?;
        self.texts[slot] = Some(text);
        Ok(text)
    }

    /// The attribute word `index` names, or `None` when the manifest does not declare it.
    #[inline]
    fn resolve(&mut self, index: i32) -> Result<Option<(AttrId, ValueType)>, DecodeError> {
        if index >= 0 {
            return match self.decoder.global.get(index as usize) {
                Some(found) => Ok(*found),
                None => Err(self.bad_index(index)),
            };
        }
        let slot = -(index + 1) as usize;
        let Some(&name) = self.dict.get(slot) else {
            return Err(self.bad_index(index));
        };
        let cached = &mut self.names[slot];
        if *cached == Resolved::Pending {
            *cached = match self.decoder.by_name.get(name) {
                Some(&(id, t)) => Resolved::Attr(id, t),
                None => Resolved::Undeclared,
            };
        }
        Ok(match *cached {
            Resolved::Attr(id, t) => Some((id, t)),
            _ => None,
        })
    }

    /// Resolves, type-checks and sets one map entry (or counts it as skipped).
    #[inline]
    fn apply(
        &mut self,
        kind: WireKind,
        key: i32,
        raw: Raw<'a>,
        sink: &mut impl Sink<'a>,
        summary: &mut DecodeSummary,
    ) -> Result<(), DecodeError> {
        let Some((id, t)) = self.resolve(key)? else {
            summary.skipped += 1;
            if summary.first_skipped.is_none() {
                // A global word (index >= 0) or one of the bag's words; the name is only
                // logged, so a name that is not UTF-8 is shown lossily rather than refused.
                let name = match usize::try_from(key) {
                    Ok(global) => GLOBAL_DICTIONARY.get(global).map(|w| w.as_bytes()),
                    Err(_) => self.word_bytes(key).ok(),
                };
                summary.first_skipped = name.map(|n| String::from_utf8_lossy(n).into_owned());
            }
            return Ok(());
        };
        if !kind.carries(t) {
            return Err(DecodeError::TypeMismatch {
                attribute: self.decoder.manifest.name(id).to_owned(),
                bag: self.index,
                declared: t,
                wire: kind,
            });
        }
        if let Raw::Map(r) = raw {
            self.read_map(id, r)?;
            sink.set_map(id, self.scratch);
            return Ok(());
        }
        let value = self.value(id, t, raw)?;
        sink.set(id, value);
        Ok(())
    }

    fn bad_value(&self, id: AttrId, reason: BadValue) -> DecodeError {
        DecodeError::BadValue {
            attribute: self.decoder.manifest.name(id).to_owned(),
            bag: self.index,
            reason,
        }
    }

    /// Types a raw value; the caller has checked that its map carries type `t`.
    fn value(&mut self, id: AttrId, t: ValueType, raw: Raw<'a>) -> Result<Value<'a>, DecodeError> {
        Ok(match raw {
            Raw::Word(w) => {
                let text = Cow::Borrowed(self.word(w)?);
                match t {
                    ValueType::EmailAddress => Value::EmailAddress(text),
                    ValueType::DnsName => Value::DnsName(text),
                    ValueType::Uri => Value::Uri(text),
                    _ => Value::String(text),
                }
            }
            Raw::Int(v) => Value::Int64(v),
            Raw::Double(v) => Value::Double(v),
            Raw::Bool(v) => Value::Bool(v),
            Raw::Time(secs, nanos) if t == ValueType::Timestamp => {
                let nanos = u32::try_from(nanos)
                    .ok()
                    .filter(|&n| n < 1_000_000_000)
                    .ok_or_else(|| self.bad_value(id, BadValue::TimestampNanos(nanos)))?;
                if !Timestamp::secs_in_range(secs) {
                    return Err(self.bad_value(id, BadValue::TimestampRange(secs)));
                }
                Value::Timestamp(Timestamp::new(secs, nanos))
            }
            Raw::Time(seconds, nanos) => {
                let total = (nanos.unsigned_abs() < 1_000_000_000)
                    .then(|| seconds.checked_mul(1_000_000_000))
                    .flatten()
                    .and_then(|s| s.checked_add(i64::from(nanos)))
                    .ok_or_else(|| {
                        self.bad_value(id, BadValue::DurationRange { seconds, nanos })
                    })?;
                Value::Duration(Duration::from_nanos(total))
            }
            Raw::Bytes(b) if t == ValueType::IpAddress => Value::IpAddress(match b.len() {
                4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
                16 => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(b);
                    IpAddr::V6(Ipv6Addr::from(octets))
                }
                n => return Err(self.bad_value(id, BadValue::IpLength(n))),
            }),
            Raw::Bytes(b) => Value::Bytes(Cow::Borrowed(b)),
            Raw::Map(r) => {
                self.read_map(id, r)?;
                Value::StringMap(Cow::Owned(self.scratch.iter().copied().collect()))
            }
        })
    }

    /// Checks a STRING_MAP value and leaves its entries, as text, in `scratch`.
    fn read_map(&mut self, id: AttrId, mut r: Reader<'a>) -> Result<(), DecodeError> {
        let bag = self.index;
        let m = |e| DecodeError::malformed(e, Some(bag));
        self.scratch.clear();
        while let Some((field, wire)) = r.next_field().map_err(m)? {
            if field != 1 {
                r.skip(wire).map_err(m)?;
                continue;
            }
            r.expect(field, wire, WireType::Len).map_err(m)?;
            let mut e = r.message().map_err(m)?;
            let (mut k, mut v) = (0i32, 0i32);
            while let Some((field, wire)) = e.next_field().map_err(m)? {
                if field == 1 || field == 2 {
                    e.expect(field, wire, WireType::Varint).map_err(m)?;
                    let at = e.offset();
                    let x = zigzag32(e.varint().map_err(m)?)
                        .ok_or_else(|| m((Malformed::Sint32Range, at)))?;
                    if field == 1 {
                        k = x;
                    } else {
                        v = x;
                    }
                } else {
                    e.skip(wire).map_err(m)?;
                }
            }
            *self.map_entries += 1;
            if self.scratch.len() >= MAX_MAP_ENTRIES
                || *self.map_entries > MAX_MAP_ENTRIES_PER_REQUEST
            {
                return Err(self.bad_value(id, BadValue::MapTooLarge(MAX_MAP_ENTRIES)));
            }
            let (key, value) = (self.word(k)?, self.word(v)?);
            self.scratch.push((key, value));
        }
        Ok(())
    }
}
