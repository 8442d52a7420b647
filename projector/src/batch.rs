//! The working set of one epoch: reads go through the epoch's own writes, then a bounded cache
//! of recent values, then RocksDB; writes stay here until the epoch is committed in one
//! `WriteBatch` (see `consumer.rs`). An epoch is one batch or several: its aggregates, rows,
//! event ids and index markers stay in memory from batch to batch, and each key is written
//! once when the epoch ends, whatever number of batches touched it. Rows marked dirty are
//! re-derived once per batch (their changes are published per batch), or, for the tenants a
//! catch-up owes, once per epoch.
//!
//! Aggregates are decoded once per epoch on first touch and kept typed in the working set;
//! every later touch updates them in place, and each changed one is encoded once when the
//! epoch is written (not once per event, nor once per batch).

use crate::error::Result;
use crate::filter::MayExist;
use crate::state::{Stamp, Tag, state_key};
use crate::store::{Store, columns, decode, encode};
use aispm_schemas::ViewName;
use aispm_schemas::views::SignatureState;
use lru::LruCache;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The working set's hash maps: foldhash (randomly seeded, several times faster than the
/// standard SipHash on these short string keys, which showed at 6% of the apply path).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A decoded aggregate of any type, encodable when the batch is written.
trait Agg: Any + Send {
    fn encode(&self) -> Vec<u8>;
    /// Encodes at the end of `out` (a buffer reused from write to write: no allocation, and
    /// no growth once it is as long as the longest aggregate).
    fn encode_into(&self, out: &mut Vec<u8>);
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Serialize + Any + Send> Agg for T {
    fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    fn encode_into(&self, out: &mut Vec<u8>) {
        crate::store::encode_into(self, out);
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// An aggregate in the working set, and whether this epoch changed it.
struct Slot {
    value: Box<dyn Agg>,
    changed: bool,
    /// Bytes of its encoding when it was read, or for an aggregate new to the store when the
    /// batch that created it ended ([`Overlay::weigh_new`]; 0 until then): what the epoch and the
    /// cache weigh it by.
    encoded: usize,
    /// What the cache's budget is charged for it while the epoch holds it
    /// ([`Cache::hold`], [`Cache::release`]).
    weight: usize,
    /// The epoch's batch that touched it last ([`Epoch::touched`]).
    batch: u32,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("changed", &self.changed)
            .finish()
    }
}

/// A row to re-derive: tenant, view, row key.
pub(crate) type Dirty = (String, ViewName, String);

/// One write of an epoch as `Overlay::drain_writes` hands it over, borrowed, into the epoch's
/// RocksDB `WriteBatch`: column family, key, value (`None` deletes).
pub(crate) type WriteRef<'w> = (&'static str, &'w [u8], Option<&'w [u8]>);

/// What the cache keeps of a stored row: a digest of its bytes (`None`: no row), and of its
/// state without its running counts (`ViewRow::hash_state`) when that was computed as it was
/// written (`--counters-per-epoch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowDigest {
    bytes: Option<u128>,
    state: Option<u128>,
}

/// Values recently read or written, across batches (bounded: memory does not grow with state):
/// a digest of each stored row (enough to tell whether a re-derived row changed), and
/// aggregates decoded, ready to update without decoding again.
pub(crate) struct Cache {
    rows: LruCache<Vec<u8>, RowDigest>,
    aggs: LruCache<Vec<u8>, Cached>,
    /// The estimated heap bytes of `aggs`, with the aggregates the worker's epoch holds
    /// (taken out of `aggs` or read from the store, until the epoch's end gives them back),
    /// and of `rows` (`cache_bytes` sums every cache's).
    agg_bytes: usize,
    row_bytes: usize,
    /// Most estimated bytes of decoded aggregates, cached or held by the epoch: an
    /// aggregate's decoded size grows with its history (an agent's reach, a control's
    /// environments), so a bound on entries alone lets the cache grow for as long as the
    /// state does. Held aggregates cannot be evicted: past the budget they count against the
    /// epoch's bound instead ([`Cache::over_budget`]).
    agg_budget: usize,
    /// The keys of this worker's tenants that may exist: a read of any other is skipped.
    pub exists: MayExist,
    /// Signature verdicts by exactly what each was computed from ([`Overlay::verdict`]).
    verdicts: LruCache<Vec<u8>, SignatureState>,
    /// The estimated heap bytes of `verdicts`.
    verdict_bytes: usize,
}

/// Two independently seeded hashers, fixed for the life of the process (the digests only live
/// in this process's cache); random seeds, so input cannot be crafted to collide.
static DIGEST: LazyLock<[foldhash::quality::RandomState; 2]> = LazyLock::new(Default::default);

/// 128 bits identifying a row's bytes (two seeded passes): equal digests, equal rows.
pub(crate) fn digest(bytes: &[u8]) -> u128 {
    let [a, b] = &*DIGEST;
    (u128::from(a.hash_one(bytes)) << 64) | u128::from(b.hash_one(bytes))
}

/// The digest of a row's state without its running counts (`ViewRow::hash_state`); `None`
/// for the views that keep none. Two independently seeded hashers, as [`digest`].
pub(crate) fn state_digest(row: &aispm_schemas::ViewRow) -> Option<u128> {
    use std::hash::Hasher;
    let [a, b] = &*DIGEST;
    let (mut ha, mut hb) = (a.build_hasher(), b.build_hasher());
    if !row.hash_state(&mut ha) {
        return None;
    }
    row.hash_state(&mut hb);
    Some((u128::from(ha.finish()) << 64) | u128::from(hb.finish()))
}

/// A decoded aggregate kept across batches, with its weight in the cache.
struct Cached {
    value: Box<dyn Agg>,
    /// Bytes of its encoding.
    encoded: usize,
    /// Its estimated heap bytes ([`Cache::weigh`]).
    weight: usize,
}

/// Estimated bytes of all caches in this process (`state_memory_bytes{part="aggregate_cache"}`).
static CACHE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Moves the process's total by a cache part's change from `old` to `new` bytes.
fn move_total(old: usize, new: usize) {
    if new >= old {
        CACHE_BYTES.fetch_add(new - old, Ordering::Relaxed);
    } else {
        CACHE_BYTES.fetch_sub(old - new, Ordering::Relaxed);
    }
}

/// Estimated bytes of every aggregate cache alive in this process (the metrics' gauge).
pub(crate) fn cache_bytes() -> usize {
    CACHE_BYTES.load(Ordering::Relaxed)
}

/// Signature verdicts kept per cache: about 300 bytes each, at most [`VERDICT_INPUTS`] of
/// inputs, so about 2.5 MiB and at most 9 MiB.
const VERDICTS: usize = 8192;
/// Most bytes of inputs a verdict is kept for. A key, a digest and a signature that can verify
/// are 200 bytes of text; inputs longer than this (very long evidence ids, or a signature that
/// cannot be one) are verified each time they are asked for, so no input fills the cache.
const VERDICT_INPUTS: usize = 1024;

/// Decoded bytes per encoded byte, about: collections, boxed strings and their headers make a
/// decoded aggregate several times its postcard encoding.
const DECODED_PER_ENCODED: usize = 4;
/// Bytes per cache entry besides key and value: the LRU's node and hash slot.
const ENTRY_OVERHEAD: usize = 96;
/// The decoded-aggregate budget per aggregate entry of `--cache-entries` (a tenth of the
/// entries are aggregates): 4 KiB, so 100 000 entries hold at most about 40 MiB of them.
const AGG_BYTES_PER_ENTRY: usize = 4096;

impl Drop for Cache {
    fn drop(&mut self) {
        CACHE_BYTES.fetch_sub(
            self.agg_bytes + self.row_bytes + self.verdict_bytes,
            Ordering::Relaxed,
        );
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("rows", &self.rows.len())
            .field("aggs", &self.aggs.len())
            .field("exists", &self.exists.len())
            .finish()
    }
}

impl Cache {
    /// Room for `entries` row digests and a tenth as many decoded aggregates (a decoded
    /// aggregate is several times its encoded size; the block cache keeps the encoded ones).
    pub(crate) fn new(entries: usize) -> Self {
        let size = |n: usize| NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN);
        Cache {
            rows: LruCache::new(size(entries)),
            aggs: LruCache::new(size(entries / 10)),
            agg_bytes: 0,
            row_bytes: 0,
            agg_budget: (entries / 10).max(1) * AGG_BYTES_PER_ENTRY,
            exists: MayExist::default(),
            verdicts: LruCache::new(size(VERDICTS)),
            verdict_bytes: 0,
        }
    }

    /// Drops the cached values. The may-exist filter stays: it only ever over-approximates
    /// the stored keys, so it stays right whatever was rolled back or wiped; and so do the
    /// signature verdicts, functions of their inputs alone.
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
        self.aggs.clear();
        self.account(0, 0);
    }

    /// Sets the estimates, and the process's total by as much.
    fn account(&mut self, agg_bytes: usize, row_bytes: usize) {
        move_total(self.agg_bytes + self.row_bytes, agg_bytes + row_bytes);
        (self.agg_bytes, self.row_bytes) = (agg_bytes, row_bytes);
    }

    /// The estimated heap bytes of a cached aggregate.
    fn weigh(key: &[u8], encoded: usize) -> usize {
        key.len() + encoded.saturating_mul(DECODED_PER_ENCODED) + ENTRY_OVERHEAD
    }

    /// The estimated heap bytes of a row digest.
    fn weigh_row(key: &[u8]) -> usize {
        key.len() + std::mem::size_of::<Option<u128>>() + ENTRY_OVERHEAD
    }

    /// Takes an aggregate out for the epoch to hold: its value and encoded size. Its weight
    /// stays charged until the epoch gives it back ([`Cache::release`]).
    fn take(&mut self, key: &[u8]) -> Option<(Box<dyn Agg>, usize)> {
        let c = self.aggs.pop(key)?;
        Some((c.value, c.encoded))
    }

    /// Charges `weight` for an aggregate the epoch now holds, read from the store or new,
    /// evicting the least recently used cached ones past the budget.
    fn hold(&mut self, weight: usize) {
        let bytes = self.evict(self.agg_bytes + weight, 0);
        self.account(bytes, self.row_bytes);
    }

    /// Uncharges an aggregate the epoch held, `weight` as charged.
    fn release(&mut self, weight: usize) {
        self.account(self.agg_bytes.saturating_sub(weight), self.row_bytes);
    }

    /// The estimated bytes of the aggregates held past the budget: the cache holds nothing
    /// more, and the epoch holds that much besides ([`Overlay::epoch_bytes`] counts it).
    pub(crate) fn over_budget(&self) -> usize {
        self.agg_bytes.saturating_sub(self.agg_budget)
    }

    /// Evicts the least recently used cached aggregates, but the last `keep`, while `bytes` is
    /// past the budget; the bytes left.
    fn evict(&mut self, mut bytes: usize, keep: usize) -> usize {
        while bytes > self.agg_budget && self.aggs.len() > keep {
            match self.aggs.pop_lru() {
                Some((_, old)) => bytes = bytes.saturating_sub(old.weight),
                None => break,
            }
        }
        bytes
    }

    /// Keeps an aggregate, evicting the least recently used past the entry or byte bound.
    fn keep(&mut self, key: Vec<u8>, value: Box<dyn Agg>, encoded: usize) {
        let weight = Self::weigh(&key, encoded);
        let mut bytes = self.agg_bytes + weight;
        // `push` hands back the entry it replaced or, when full, the one it evicted.
        if let Some((_, old)) = self.aggs.push(
            key,
            Cached {
                value,
                encoded,
                weight,
            },
        ) {
            bytes = bytes.saturating_sub(old.weight);
        }
        // The one just kept (the most recently used) stays, even alone past the budget.
        let bytes = self.evict(bytes, 1);
        self.account(bytes, self.row_bytes);
    }

    /// [`Overlay::verdict`].
    fn verdict(
        &mut self,
        inputs: &[&str],
        verify: impl FnOnce() -> SignatureState,
    ) -> SignatureState {
        let mut key = Vec::with_capacity(inputs.iter().map(|i| i.len() + 4).sum());
        for i in inputs {
            // Length-prefixed: no two lists of inputs make the same key.
            key.extend_from_slice(&u32::try_from(i.len()).unwrap_or(u32::MAX).to_le_bytes());
            key.extend_from_slice(i.as_bytes());
        }
        if key.len() > VERDICT_INPUTS {
            return verify();
        }
        if let Some(v) = self.verdicts.get(&key) {
            return *v;
        }
        let v = verify();
        self.keep_verdict(key, v);
        v
    }

    /// Keeps a signature verdict, evicting the least recently used past [`VERDICTS`].
    fn keep_verdict(&mut self, key: Vec<u8>, verdict: SignatureState) {
        let weigh = |k: &[u8]| k.len() + std::mem::size_of::<SignatureState>() + ENTRY_OVERHEAD;
        let mut bytes = self.verdict_bytes + weigh(&key);
        if let Some((old, _)) = self.verdicts.push(key, verdict) {
            bytes = bytes.saturating_sub(weigh(&old));
        }
        move_total(std::mem::replace(&mut self.verdict_bytes, bytes), bytes);
    }

    /// Keeps a row's digest, evicting the least recently used past the entry bound.
    fn keep_row(&mut self, key: Vec<u8>, digest: RowDigest) {
        let mut bytes = self.row_bytes + Self::weigh_row(&key);
        if let Some((old, _)) = self.rows.push(key, digest) {
            bytes = bytes.saturating_sub(Self::weigh_row(&old));
        }
        self.account(self.agg_bytes, bytes);
    }
}

/// The filter byte of a column family: the cache-key byte for `state` and the views, and
/// `CF_SEEN` for `seen`; `None` for the others (never filtered).
pub(crate) fn filter_byte(cf: &str) -> Option<u8> {
    if cf == columns::STATE {
        return Some(CF_STATE);
    }
    if cf == columns::SEEN {
        return Some(CF_SEEN);
    }
    columns::VIEWS
        .iter()
        .find(|(_, name)| *name == cf)
        .map(|(view, _)| cf_row(*view))
}

/// Cache keys carry the column family as a first byte.
fn cache_key(cf: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(cf);
    k.extend_from_slice(key);
    k
}

const CF_STATE: u8 = 0;
const CF_SEEN: u8 = 1;
fn cf_row(view: ViewName) -> u8 {
    2 + view as u8
}

/// A view row's cache key, with its view ([`Overlay::row_key`]).
#[derive(Debug)]
pub(crate) struct RowKey {
    view: ViewName,
    key: Vec<u8>,
}

/// What an epoch holds until it is written: every write of its batches, merged per key.
/// A worker keeps one beside its cache; [`Overlay::drain_writes`] empties it.
#[derive(Debug, Default)]
pub(crate) struct Epoch {
    /// Row writes by cache key; `None` deletes.
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Index markers by state key, in key order (so a prefix of them is a range): `true`
    /// marks, `false` deletes.
    marks: BTreeMap<Vec<u8>, bool>,
    /// Ranges of state keys known to hold no key, stored or marked by the epoch, by their
    /// first key: each `[from, to)` found by a read of [`Overlay::marks_passed`], dropped when
    /// a marker is set inside it. Disjoint.
    gaps: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Aggregates touched by this epoch, by state key.
    aggs: HashMap<Vec<u8>, Slot>,
    /// The keys of the changed aggregates of [`Tag::listed`] tags, in key order.
    listed: BTreeSet<Vec<u8>>,
    /// Event ids first seen in this epoch, and the event each is kept with.
    seen: HashMap<Vec<u8>, Vec<u8>>,
    /// Rows of the tenants a catch-up owes that the epoch's batches made dirty: derived once,
    /// when the epoch ends (nothing of theirs is published before the catch-up ends).
    pub deferred: HashSet<Dirty>,
    /// Rows the epoch's batches made dirty, waiting for the next publication
    /// (`--publish-interval`): derived and published then, each once, or when the epoch ends.
    held: HashSet<Dirty>,
    /// Rows whose change the epoch's batches left to its end, their state unchanged
    /// (`--counters-per-epoch`): derived and published then, each once.
    coalesced: HashSet<Dirty>,
    /// Digests of the state (`ViewRow::hash_state`) of the rows written in this epoch, by
    /// cache key, where it was computed: what the next change of the row is compared with.
    states: HashMap<Vec<u8>, u128>,
    /// Findings whose view change the epoch's batches published, with the stamp of the last
    /// change: their OCSF records are published once, from the row as the epoch wrote it last
    /// (`aispm.ocsf.v1`), named in the outbox with that stamp.
    ocsf: HashMap<Dirty, Stamp>,
    /// The estimated heap bytes of all of the above but the aggregates, which the cache's
    /// budget counts while the epoch holds them ([`Epoch::bytes`]).
    bytes: usize,
    /// The number of the batch under way (from 1), and how many distinct aggregates it touched.
    batch: u32,
    touched: usize,
}

/// The estimated heap bytes of a dirty row's name kept in a set.
fn dirty_bytes(dirty: &Dirty) -> usize {
    dirty.0.len() + dirty.2.len() + ENTRY_OVERHEAD
}

/// Bytes of encoding an aggregate new to the store is assumed to have until its batch ends
/// ([`Overlay::weigh_new`]).
const NEW_AGGREGATE: usize = 256;

impl Epoch {
    /// The estimated heap bytes of the epoch's writes, event ids, markers and waiting rows;
    /// with the aggregates it holds past the cache's budget, what `--epoch-bytes` bounds
    /// ([`Overlay::epoch_bytes`]).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Starts the next batch: [`Epoch::touched`] counts from zero again.
    pub(crate) fn next_batch(&mut self) {
        self.batch = self.batch.wrapping_add(1);
        self.touched = 0;
    }

    /// Distinct aggregates the batch under way touched (what `Engine::batch_limit` learns from).
    pub(crate) fn touched(&self) -> usize {
        self.touched
    }

    fn grow(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// The estimated heap bytes of a gap ([`Epoch::gaps`]).
    fn gap_bytes(from: &[u8], to: &[u8]) -> usize {
        from.len() + to.len() + ENTRY_OVERHEAD
    }

    /// Whether `[start, end)` lies inside a known gap.
    fn in_gap(&self, start: &[u8], end: &[u8]) -> bool {
        self.gaps
            .range::<[u8], _>((Unbounded, Included(start)))
            .next_back()
            .is_some_and(|(_, to)| end <= to.as_slice())
    }

    /// Notes that `[from, to)` holds no key, in place of the gaps it overlaps (which stay true,
    /// but the gaps are kept disjoint so that a marker falls in one at most).
    fn note_gap(&mut self, from: Vec<u8>, to: Vec<u8>) {
        if from >= to {
            return;
        }
        let mut overlapping: Vec<Vec<u8>> = self
            .gaps
            .range::<[u8], _>((Included(from.as_slice()), Excluded(to.as_slice())))
            .map(|(f, _)| f.clone())
            .collect();
        if let Some((f, t)) = self
            .gaps
            .range::<[u8], _>((Unbounded, Excluded(from.as_slice())))
            .next_back()
            && t.as_slice() > from.as_slice()
        {
            overlapping.push(f.clone());
        }
        for f in overlapping {
            self.drop_gap(&f);
        }
        self.grow(Self::gap_bytes(&from, &to));
        self.gaps.insert(from, to);
    }

    fn drop_gap(&mut self, from: &[u8]) {
        if let Some(to) = self.gaps.remove(from) {
            self.bytes = self.bytes.saturating_sub(Self::gap_bytes(from, &to));
        }
    }

    /// A key is marked: the gap it falls in, if any, no longer is one.
    fn mark_in_gap(&mut self, key: &[u8]) {
        let hit = self
            .gaps
            .range::<[u8], _>((Unbounded, Included(key)))
            .next_back()
            .filter(|(_, to)| key < to.as_slice())
            .map(|(from, _)| from.clone());
        if let Some(from) = hit {
            self.drop_gap(&from);
        }
    }

    /// Adds `dirty` to one of the epoch's sets of rows (`set`), counted in its bytes once.
    fn note(&mut self, set: fn(&mut Epoch) -> &mut HashSet<Dirty>, dirty: Dirty) {
        let bytes = dirty_bytes(&dirty);
        if set(self).insert(dirty) {
            self.grow(bytes);
        }
    }

    /// Takes one of the epoch's sets of rows out of it, and out of its bytes.
    fn take_rows(&mut self, set: fn(&mut Epoch) -> &mut HashSet<Dirty>) -> HashSet<Dirty> {
        let rows = std::mem::take(set(self));
        let bytes: usize = rows.iter().map(dirty_bytes).sum();
        self.bytes = self.bytes.saturating_sub(bytes);
        rows
    }
}

/// The id an index entry's state key names: what follows its `{tenant} \0 {tag} \0`
/// (`strip` bytes, `state_key(tenant, tag, "").len()`); `None` if it is not UTF-8.
fn index_id(key: &[u8], strip: usize) -> Option<&str> {
    std::str::from_utf8(key.get(strip..)?).ok()
}

/// One batch's reads and writes, over its epoch's.
#[derive(Debug)]
pub(crate) struct Overlay<'a> {
    store: &'a Store,
    cache: &'a mut Cache,
    epoch: &'a mut Epoch,
    pub dirty: HashSet<Dirty>,
    /// Agents whose newest decision moved in this batch, by tenant and agent: the newest
    /// decision's time before the batch's first move (`None`: it had none) and after its last.
    /// `apply::settle` reads the pending requests the moves made overdue once per agent and
    /// batch, not once per decision.
    pub clocks: HashMap<(String, String), (Option<i64>, i64)>,
    /// Whether a row whose running counts alone changed waits for the epoch's end
    /// (`--counters-per-epoch`, while publishing): [`Overlay::dirty_as`].
    pub counts_wait: bool,
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(store: &'a Store, cache: &'a mut Cache, epoch: &'a mut Epoch) -> Self {
        Overlay {
            store,
            cache,
            epoch,
            dirty: HashSet::default(),
            clocks: HashMap::default(),
            counts_wait: false,
        }
    }

    /// The slot of an aggregate, decoded on first touch in this epoch (its default when
    /// absent); `touch` marks it changed.
    fn slot<T>(&mut self, tenant: &str, tag: Tag, id: &str, touch: bool) -> Result<&mut T>
    where
        T: DeserializeOwned + Serialize + Default + Send + 'static,
    {
        self.slot_at(state_key(tenant, tag, id), tag, touch)
    }

    /// Whether the aggregate under `key` is known not to exist: not in the epoch, not cached,
    /// and not stored (the may-exist filter). A read of it is its default, kept nowhere: most
    /// reads of a batch are of findings' facts that were never raised, and keeping a default
    /// for each in the epoch cost memory and a map insert each.
    fn absent(&self, key: &[u8]) -> bool {
        !self.epoch.aggs.contains_key(key)
            && !self.cache.aggs.contains(key)
            && !self.cache.exists.may_contain(CF_STATE, key)
    }

    /// [`Overlay::slot`] by its state key.
    fn slot_at<T>(&mut self, key: Vec<u8>, tag: Tag, touch: bool) -> Result<&mut T>
    where
        T: DeserializeOwned + Serialize + Default + Send + 'static,
    {
        let epoch = &mut *self.epoch;
        if touch && tag.listed() && !epoch.listed.contains(&key) {
            epoch.grow(key.len() + ENTRY_OVERHEAD);
            epoch.listed.insert(key.clone());
        }
        let batch = epoch.batch;
        let slot = match epoch.aggs.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                // A cached aggregate's weight is charged already; one read from the store or
                // new is charged now.
                let (value, encoded, charged) = match self.cache.take(e.key()) {
                    Some((value, encoded)) => (value, encoded, true),
                    None if !self.cache.exists.may_contain(CF_STATE, e.key()) => {
                        (Box::new(T::default()) as Box<dyn Agg>, 0, false)
                    }
                    None => match self.store.get_raw(columns::STATE, e.key())? {
                        Some(b) => (Box::new(decode::<T>(&b)?) as Box<dyn Agg>, b.len(), false),
                        None => (Box::new(T::default()) as Box<dyn Agg>, 0, false),
                    },
                };
                let weight =
                    Cache::weigh(e.key(), if encoded == 0 { NEW_AGGREGATE } else { encoded });
                if !charged {
                    self.cache.hold(weight);
                }
                e.insert(Slot {
                    value,
                    changed: false,
                    encoded,
                    weight,
                    batch: batch.wrapping_sub(1),
                })
            }
        };
        if slot.batch != batch {
            slot.batch = batch;
            epoch.touched += 1;
        }
        if !slot.value.as_any().is::<T>() {
            // Read as another type (never done by the rules; kept correct anyway): re-decode.
            slot.value = Box::new(decode::<T>(&slot.value.encode())?);
        }
        slot.changed |= touch;
        slot.value
            .as_any_mut()
            .downcast_mut::<T>()
            .ok_or_else(|| crate::error::Error::Other("aggregate slot has another type".into()))
    }

    /// An aggregate, or its default when absent.
    pub(crate) fn get<T>(&mut self, tenant: &str, tag: Tag, id: &str) -> Result<T>
    where
        T: DeserializeOwned + Serialize + Default + Clone + Send + 'static,
    {
        let key = state_key(tenant, tag, id);
        if self.absent(&key) {
            return Ok(T::default());
        }
        self.slot_at::<T>(key, tag, false).map(|v| v.clone())
    }

    /// Reads an aggregate for `f` without copying it.
    pub(crate) fn with<T, R>(
        &mut self,
        tenant: &str,
        tag: Tag,
        id: &str,
        f: impl FnOnce(&T) -> R,
    ) -> Result<R>
    where
        T: DeserializeOwned + Serialize + Default + Send + 'static,
    {
        let key = state_key(tenant, tag, id);
        if self.absent(&key) {
            return Ok(f(&T::default()));
        }
        self.slot_at::<T>(key, tag, false).map(|v| f(v))
    }

    /// Updates an aggregate in place; returns what `f` returns.
    pub(crate) fn update<T, R, F>(&mut self, tenant: &str, tag: Tag, id: &str, f: F) -> Result<R>
    where
        T: DeserializeOwned + Serialize + Default + Send + 'static,
        F: FnOnce(&mut T) -> R,
    {
        Ok(f(self.slot::<T>(tenant, tag, id, true)?))
    }

    /// Marks an empty index entry.
    pub(crate) fn mark(&mut self, tenant: &str, tag: Tag, id: &str) {
        self.set_mark(state_key(tenant, tag, id), true);
    }

    /// Deletes an index entry ([`Overlay::mark`]).
    pub(crate) fn unmark(&mut self, tenant: &str, tag: Tag, id: &str) {
        self.set_mark(state_key(tenant, tag, id), false);
    }

    fn set_mark(&mut self, key: Vec<u8>, marked: bool) {
        if marked && !self.epoch.gaps.is_empty() {
            self.epoch.mark_in_gap(&key);
        }
        let bytes = key.len() + ENTRY_OVERHEAD;
        if self.epoch.marks.insert(key, marked).is_none() {
            self.epoch.grow(bytes);
        }
    }

    /// The first `limit` ids, in key order, of the index entries under `{tenant} \0 {tag} \0
    /// {prefix}` whose id is below `end`, as this batch sees them (stored, marked here, and
    /// not deleted here); and whether more are there. Reads at most `limit` plus the batch's
    /// deletions under the prefix from RocksDB.
    pub(crate) fn marks_below(
        &mut self,
        tenant: &str,
        tag: Tag,
        prefix: &str,
        end: &str,
        limit: usize,
    ) -> Result<(Vec<String>, bool)> {
        self.marks_between(tenant, tag, prefix, prefix, end, limit)
    }

    /// As [`Overlay::marks_below`], from the id `start` (under `prefix`) on.
    pub(crate) fn marks_between(
        &mut self,
        tenant: &str,
        tag: Tag,
        prefix: &str,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<(Vec<String>, bool)> {
        let key_prefix = state_key(tenant, tag, prefix);
        let key_start = state_key(tenant, tag, start);
        let key_end = state_key(tenant, tag, end);
        let strip = state_key(tenant, tag, "").len();
        let here: Vec<(&Vec<u8>, bool)> = self
            .epoch
            .marks
            .range(key_start.clone()..key_end.clone())
            .map(|(k, m)| (k, *m))
            .collect();
        let deleted = here.iter().filter(|(_, m)| !m).count();
        // Among the first `limit + deleted + 1` stored, at most `deleted` are gone here.
        let want = limit.saturating_add(deleted).saturating_add(1);
        let mut keys: BTreeSet<Vec<u8>> = BTreeSet::new();
        self.store.walk_between(
            columns::STATE,
            &key_prefix,
            &key_start,
            Some(&key_end),
            |k, _| {
                keys.insert(k.to_vec());
                Ok(keys.len() < want)
            },
        )?;
        for (k, marked) in here {
            if marked {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        let more = keys.len() > limit;
        let ids = keys
            .iter()
            .take(limit)
            .filter_map(|k| index_id(k, strip).map(str::to_owned))
            .collect();
        Ok((ids, more))
    }

    /// The ids, in key order, of the index entries under `{tenant} \0 {tag} \0 {prefix}` from
    /// `start` to before `end`, as this batch sees them, for a caller whose successive ranges
    /// under one prefix follow each other: a clock moving forward reads the entries it passed,
    /// `[start, end)`, then `[end, later)`. The read goes on to the first entry at or past
    /// `end`, and the epoch keeps the gap up to it ([`Epoch::gaps`], until a marker is set
    /// inside it): a later range inside the gap is answered without reading RocksDB. An agent's
    /// clock moves with each of its decisions, and its requests become overdue far more rarely.
    pub(crate) fn marks_passed(
        &mut self,
        tenant: &str,
        tag: Tag,
        prefix: &str,
        start: &str,
        end: &str,
    ) -> Result<Vec<String>> {
        let key_start = state_key(tenant, tag, start);
        let key_end = state_key(tenant, tag, end);
        if self.epoch.in_gap(&key_start, &key_end) {
            return Ok(Vec::new());
        }
        let key_prefix = state_key(tenant, tag, prefix);
        let strip = state_key(tenant, tag, "").len();
        // Stored: those before `end`, and the first at or past it.
        let mut keys: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut next: Option<Vec<u8>> = None;
        self.store
            .walk_between(columns::STATE, &key_prefix, &key_start, None, |k, _| {
                if k < key_end.as_slice() {
                    keys.insert(k.to_vec());
                    return Ok(true);
                }
                next = Some(k.to_vec());
                Ok(false)
            })?;
        // As this epoch marked or deleted them; a stored entry deleted past `end` still ends
        // the gap (it only ends it sooner).
        for (k, marked) in self
            .epoch
            .marks
            .range::<[u8], _>((Included(key_start.as_slice()), Unbounded))
        {
            if !k.starts_with(&key_prefix) {
                break;
            }
            if k.as_slice() < key_end.as_slice() {
                if *marked {
                    keys.insert(k.clone());
                } else {
                    keys.remove(k);
                }
            } else if *marked {
                if next.as_ref().is_none_or(|n| k < n) {
                    next = Some(k.clone());
                }
                break;
            }
        }
        if let Some(to) = next.or_else(|| crate::store::past_prefix(&key_prefix)) {
            self.epoch.note_gap(key_end, to);
        }
        Ok(keys
            .iter()
            .filter_map(|k| index_id(k, strip).map(str::to_owned))
            .collect())
    }

    /// Ids under `{tenant} \0 {tag} \0 {prefix}` (stored or written in this batch, and not
    /// deleted in it).
    pub(crate) fn ids_with_prefix(
        &mut self,
        tenant: &str,
        tag: Tag,
        prefix: &str,
    ) -> Result<BTreeSet<String>> {
        let key_prefix = state_key(tenant, tag, prefix);
        let strip = state_key(tenant, tag, "").len();
        let mut out = BTreeSet::new();
        for (k, _) in self.store.scan_prefix(columns::STATE, &key_prefix)? {
            if let Some(id) = index_id(&k, strip) {
                out.insert(id.to_owned());
            }
        }
        let mut changed = |k: &[u8]| {
            if let Some(id) = index_id(k, strip) {
                out.insert(id.to_owned());
            }
        };
        if tag.listed() {
            for k in self.epoch.listed.range(key_prefix.clone()..) {
                if !k.starts_with(&key_prefix) {
                    break;
                }
                changed(k);
            }
        } else {
            for (k, slot) in &self.epoch.aggs {
                if slot.changed && k.starts_with(&key_prefix) {
                    changed(k);
                }
            }
        }
        for (k, marked) in self.epoch.marks.range(key_prefix.clone()..) {
            if !k.starts_with(&key_prefix) {
                break;
            }
            if let Some(id) = index_id(k, strip) {
                if *marked {
                    out.insert(id.to_owned());
                } else {
                    out.remove(id);
                }
            }
        }
        Ok(out)
    }

    /// True the first time an event id is seen for a tenant (here or in any earlier batch);
    /// the id is then kept with `stored()` (the event, fetched by id through the API).
    pub(crate) fn first_sighting(
        &mut self,
        tenant: &str,
        event_id: &str,
        stored: impl FnOnce() -> Vec<u8>,
    ) -> Result<bool> {
        let key = columns::tenant_key(tenant, event_id);
        if self.epoch.seen.contains_key(&key) {
            return Ok(false);
        }
        // A new id is usually answered by the may-exist filter; else straight to RocksDB:
        // event ids would only evict aggregates from the cache.
        if self.cache.exists.may_contain(CF_SEEN, &key)
            && self.store.get_raw(columns::SEEN, &key)?.is_some()
        {
            return Ok(false);
        }
        let event = stored();
        self.epoch
            .grow(key.len() + event.capacity() + ENTRY_OVERHEAD);
        self.epoch.seen.insert(key, event);
        Ok(true)
    }

    /// The key a row is cached, written and compared under: built once per derived row and
    /// handed to [`Overlay::row_is`], [`Overlay::written_state`] and [`Overlay::set_row`].
    pub(crate) fn row_key(tenant: &str, view: ViewName, key: &str) -> RowKey {
        RowKey {
            view,
            key: cache_key(cf_row(view), &columns::tenant_key(tenant, key)),
        }
    }

    /// Whether the row stored (or written by this epoch) is exactly `new` (postcard bytes;
    /// `None`: no row).
    pub(crate) fn row_is(&mut self, row: &RowKey, new: Option<&[u8]>) -> Result<bool> {
        let ck = &row.key;
        if let Some(v) = self.epoch.writes.get(ck) {
            return Ok(v.as_deref() == new);
        }
        if let Some(d) = self.cache.rows.get(ck) {
            return Ok(d.bytes == new.map(digest));
        }
        let stored = if self.cache.exists.may_contain(ck[0], &ck[1..]) {
            self.store.get_raw(columns::view_cf(row.view), &ck[1..])?
        } else {
            None
        };
        let same = stored.as_deref() == new;
        let stored = RowDigest {
            bytes: stored.as_deref().map(digest),
            state: None,
        };
        self.cache.keep_row(ck.clone(), stored);
        Ok(same)
    }

    /// The digest of the state of a row as last written (`ViewRow::hash_state`), when it is
    /// known: written in this epoch, or cached with it since.
    pub(crate) fn written_state(&self, row: &RowKey) -> Option<u128> {
        if self.epoch.writes.contains_key(&row.key) {
            return self.epoch.states.get(&row.key).copied();
        }
        self.cache.rows.peek(&row.key).and_then(|d| d.state)
    }

    /// Writes a row (`None` deletes it), with the digest of its state when computed
    /// ([`Overlay::written_state`]).
    pub(crate) fn set_row(&mut self, row: RowKey, bytes: Option<Vec<u8>>, state: Option<u128>) {
        let ck = row.key;
        let entry = ck.len() + ENTRY_OVERHEAD;
        let value = bytes.as_ref().map_or(0, Vec::capacity);
        let epoch = &mut *self.epoch;
        match state {
            Some(state) => {
                if epoch.states.insert(ck.clone(), state).is_none() {
                    epoch.grow(entry);
                }
            }
            None => {
                if epoch.states.remove(&ck).is_some() {
                    epoch.bytes = epoch.bytes.saturating_sub(entry);
                }
            }
        }
        match epoch.writes.insert(ck, bytes) {
            // Replaced: only the value's size changes.
            Some(old) => {
                epoch.bytes = epoch.bytes.saturating_sub(old.map_or(0, |o| o.capacity()));
                epoch.grow(value);
            }
            None => epoch.grow(entry + value),
        }
    }

    /// The verdict `verify` gives on `inputs` (every input it reads: public key, tenant,
    /// evidence id, digest, signature), verified once and then remembered. An evidence item's
    /// verdict is asked for by its row and by its findings, in its first batch and each time
    /// they are derived again, and one Ed25519 verification costs more than the rest of an
    /// event. The verdict is remembered under the inputs themselves, not a hash of them: no
    /// crafted input can be answered with another's verdict.
    pub(crate) fn verdict(
        &mut self,
        inputs: &[&str],
        verify: impl FnOnce() -> SignatureState,
    ) -> SignatureState {
        self.cache.verdict(inputs, verify)
    }

    /// Weighs again, by their encoding, the aggregates new to the store that this batch
    /// created: until then each was charged as [`NEW_AGGREGATE`] encoded bytes, and most (a
    /// link's use, a minute's rate, an event's facts) are a tenth of that. Weighed once, as an
    /// aggregate read from the store is weighed once by its encoding as read.
    pub(crate) fn weigh_new(&mut self) {
        let mut buf = Vec::new();
        let batch = self.epoch.batch;
        for (key, slot) in &mut self.epoch.aggs {
            if slot.encoded != 0 || !slot.changed || slot.batch != batch {
                continue;
            }
            buf.clear();
            slot.value.encode_into(&mut buf);
            slot.encoded = buf.len().max(1);
            self.cache.release(slot.weight);
            slot.weight = Cache::weigh(key, slot.encoded);
            self.cache.hold(slot.weight);
        }
    }

    /// The estimated bytes the epoch holds beyond the cache's budget: its writes, event ids,
    /// markers and deferred rows, and the aggregates it holds past the budget
    /// ([`Overlay::over_budget`]).
    pub(crate) fn epoch_bytes(&self) -> usize {
        self.epoch.bytes() + self.cache.over_budget()
    }

    /// The estimated bytes of the aggregates the epoch holds past the cache's budget.
    pub(crate) fn over_budget(&self) -> usize {
        self.cache.over_budget()
    }

    /// Leaves a dirty row of a tenant a catch-up owes to the epoch's end
    /// ([`Epoch::deferred`]).
    pub(crate) fn defer(&mut self, dirty: Dirty) {
        self.epoch.note(|e| &mut e.deferred, dirty);
    }

    /// The rows left to the epoch's end, taken out of it.
    pub(crate) fn take_deferred(&mut self) -> HashSet<Dirty> {
        self.epoch.take_rows(|e| &mut e.deferred)
    }

    /// Leaves a dirty row to the next publication ([`Epoch::held`]).
    pub(crate) fn hold_row(&mut self, dirty: Dirty) {
        self.epoch.note(|e| &mut e.held, dirty);
    }

    /// The rows waiting for a publication, taken out of the epoch: they are derived now.
    pub(crate) fn take_held(&mut self) -> HashSet<Dirty> {
        self.epoch.take_rows(|e| &mut e.held)
    }

    /// Leaves a changed row whose state did not change to the epoch's end
    /// ([`Epoch::coalesced`]).
    pub(crate) fn coalesce(&mut self, dirty: Dirty) {
        self.epoch.note(|e| &mut e.coalesced, dirty);
    }

    /// The rows left to the epoch's end by [`Overlay::coalesce`], taken out of it.
    pub(crate) fn take_coalesced(&mut self) -> HashSet<Dirty> {
        self.epoch.take_rows(|e| &mut e.coalesced)
    }

    /// Leaves a finding's OCSF record to the epoch's end ([`Epoch::ocsf`]), with the stamp of
    /// the view change just published of it.
    pub(crate) fn ocsf_due(&mut self, finding: Dirty, stamp: &Stamp) {
        let epoch = &mut *self.epoch;
        if let Some(kept) = epoch.ocsf.get_mut(&finding) {
            let before = kept.1.capacity();
            kept.0 = stamp.0;
            kept.1.clone_from(&stamp.1);
            let after = kept.1.capacity();
            epoch.bytes = epoch.bytes.saturating_sub(before);
            epoch.grow(after);
            return;
        }
        let bytes = dirty_bytes(&finding) + stamp.1.capacity();
        epoch.ocsf.insert(finding, stamp.clone());
        epoch.grow(bytes);
    }

    /// The findings whose OCSF records are due, with their stamps, taken out of the epoch.
    pub(crate) fn take_ocsf_due(&mut self) -> HashMap<Dirty, Stamp> {
        let due = std::mem::take(&mut self.epoch.ocsf);
        let bytes: usize = due
            .iter()
            .map(|(d, s)| dirty_bytes(d) + s.1.capacity())
            .sum();
        self.epoch.bytes = self.epoch.bytes.saturating_sub(bytes);
        due
    }

    /// The bytes of a row as this epoch last wrote it, else as stored (`None`: no row).
    pub(crate) fn row_bytes(&self, row: &RowKey) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.epoch.writes.get(&row.key) {
            return Ok(v.clone());
        }
        let ck = &row.key;
        if !self.cache.exists.may_contain(ck[0], &ck[1..]) {
            return Ok(None);
        }
        self.store.get_raw(columns::view_cf(row.view), &ck[1..])
    }

    /// [`Epoch::touched`].
    pub(crate) fn touched(&self) -> usize {
        self.epoch.touched()
    }

    pub(crate) fn dirty(&mut self, tenant: &str, view: ViewName, key: impl Into<String>) {
        self.dirty.insert((tenant.to_owned(), view, key.into()));
    }

    /// Marks a changed row dirty, or, when its running counts alone changed (`counts_only`:
    /// the caller knows it from the aggregate, e.g. `AssetAgg::named_moves_state`) and
    /// [`Overlay::counts_wait`], leaves it to the epoch's end without deriving it now
    /// ([`Overlay::coalesce`]).
    pub(crate) fn dirty_as(
        &mut self,
        tenant: &str,
        view: ViewName,
        key: impl Into<String>,
        counts_only: bool,
    ) {
        if counts_only && self.counts_wait {
            self.coalesce((tenant.to_owned(), view, key.into()));
        } else {
            self.dirty(tenant, view, key);
        }
    }

    /// Hands every write of the epoch to `put` in turn (each changed aggregate encoded once),
    /// moves what was read or written into the cache and leaves the epoch empty. In key order
    /// per column family: RocksDB's memtable skip list inserts a run of ascending keys far
    /// faster than the same keys in hash order.
    pub(crate) fn drain_writes(
        self,
        mut put: impl FnMut(WriteRef<'_>) -> Result<()>,
    ) -> Result<()> {
        let epoch = std::mem::take(self.epoch);
        let mut seen: Vec<(Vec<u8>, Vec<u8>)> = epoch.seen.into_iter().collect();
        seen.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut aggs: Vec<(Vec<u8>, Slot)> = epoch.aggs.into_iter().collect();
        aggs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = epoch.writes.into_iter().collect();
        let states = epoch.states;
        writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));

        for (key, event) in seen {
            self.cache.exists.insert(CF_SEEN, &key);
            put((columns::SEEN, &key, Some(&event)))?;
        }
        let mut bytes = Vec::new();
        for (key, slot) in aggs {
            // Given back: charged again below by what the cache keeps of it.
            self.cache.release(slot.weight);
            let mut encoded = slot.encoded;
            if slot.changed {
                self.cache.exists.insert(CF_STATE, &key);
                bytes.clear();
                slot.value.encode_into(&mut bytes);
                encoded = bytes.len();
                put((columns::STATE, &key, Some(&bytes)))?;
            } else if encoded == 0 {
                // Read, not stored, not written: nothing to keep (the may-exist filter answers
                // the next read of it without RocksDB), and keeping it would push out of the
                // cache an aggregate that is stored.
                continue;
            }
            self.cache.keep(key, slot.value, encoded);
        }
        for (key, marked) in epoch.marks {
            if marked {
                self.cache.exists.insert(CF_STATE, &key);
            }
            put((columns::STATE, &key, marked.then_some(&[][..])))?;
        }
        for (ck, v) in writes {
            let cf = columns::VIEWS
                .get(usize::from(ck[0] - 2))
                .map(|(_, cf)| *cf)
                .unwrap_or(columns::STATE);
            if v.is_some() {
                self.cache.exists.insert(ck[0], &ck[1..]);
            }
            put((cf, &ck[1..], v.as_deref()))?;
            let written = RowDigest {
                bytes: v.as_deref().map(digest),
                state: states.get(&ck).copied(),
            };
            self.cache.keep_row(ck, written);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aggregate_cache_is_bounded_by_its_estimated_bytes_as_well_as_its_entries() {
        // 100 entries: 10 aggregates and 40 KiB of them.
        let mut cache = Cache::new(100);
        let weight = Cache::weigh(b"k0", 5_000);
        for i in 0..5u8 {
            cache.keep(vec![b'k', b'0' + i], Box::new(vec![i; 10]), 5_000);
        }
        // Each weighs about 20 KiB: two fit in 40 KiB, the oldest went first.
        assert_eq!(cache.aggs.len(), 2);
        assert_eq!(cache.agg_bytes, 2 * weight);
        assert!(cache.take(b"k0").is_none() && cache.take(b"k2").is_none());
        let (_, encoded) = cache.take(b"k4").expect("the newest stays");
        assert_eq!(encoded, 5_000);
        assert_eq!(
            cache.agg_bytes,
            2 * weight,
            "taken out for an epoch to hold: still charged"
        );
        cache.release(weight);
        assert_eq!(cache.agg_bytes, weight, "given back: no longer counted");
        // Held aggregates cannot be evicted: past the budget the cache empties, and what is
        // held beyond it is the epoch's to count.
        assert_eq!(cache.over_budget(), 0);
        cache.hold(3 * weight);
        assert!(cache.aggs.is_empty(), "the cached one made room");
        assert_eq!(cache.agg_bytes, 3 * weight);
        assert_eq!(cache.over_budget(), 3 * weight - cache.agg_budget);
        cache.release(3 * weight);
        assert_eq!((cache.agg_bytes, cache.over_budget()), (0, 0));
        // Small ones: the entry bound (10) holds, whatever the bytes.
        for i in 0..30u8 {
            cache.keep(vec![b's', i], Box::new(i), 10);
        }
        assert_eq!(cache.aggs.len(), 10);
        let expected: usize = cache.aggs.iter().map(|(_, c)| c.weight).sum();
        assert_eq!(cache.agg_bytes, expected, "evicted entries are not counted");
        // Row digests are counted, and a replaced digest is not counted twice.
        let row = |d| RowDigest {
            bytes: Some(d),
            state: None,
        };
        cache.keep_row(b"r1".to_vec(), row(1));
        cache.keep_row(b"r1".to_vec(), row(2));
        assert_eq!(cache.row_bytes, Cache::weigh_row(b"r1"));
        cache.clear();
        assert_eq!((cache.agg_bytes, cache.row_bytes), (0, 0));
    }

    #[test]
    fn an_epoch_holds_its_batches_writes_until_drained_and_counts_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, false).unwrap();
        let mut cache = Cache::new(100);
        let mut epoch = Epoch::default();
        // Batch 1: an aggregate, a row, a marker and an event id.
        epoch.next_batch();
        let mut ov = Overlay::new(&store, &mut cache, &mut epoch);
        ov.update::<u64, _, _>("t1", Tag::Asset, "a", |n| *n += 1)
            .unwrap();
        ov.set_row(
            Overlay::row_key("t1", ViewName::Coverage, "r"),
            Some(vec![1; 100]),
            None,
        );
        ov.mark("t1", Tag::Approval, "m");
        assert!(ov.first_sighting("t1", "e1", || vec![7; 50]).unwrap());
        assert_eq!(ov.touched(), 1);
        // The new aggregate is charged to the cache's budget while the epoch holds it: as a
        // guess during the batch, by its encoding once the batch is over.
        let key = state_key("t1", Tag::Asset, "a");
        ov.weigh_new();
        assert_eq!(ov.over_budget(), 0);
        assert_eq!(
            ov.epoch_bytes(),
            ov.epoch.bytes(),
            "nothing held past the budget"
        );
        let one = Cache::weigh(&key, encode(&1u64).len());
        assert_eq!(cache.agg_bytes, one);
        let after_one = epoch.bytes();
        assert!(after_one > 100 + 50, "{after_one}");

        // Batch 2 sees batch 1's writes though nothing is stored yet.
        epoch.next_batch();
        let mut ov = Overlay::new(&store, &mut cache, &mut epoch);
        assert!(!ov.first_sighting("t1", "e1", || vec![7; 50]).unwrap());
        assert_eq!(ov.get::<u64>("t1", Tag::Asset, "a").unwrap(), 1);
        assert!(
            ov.row_is(
                &Overlay::row_key("t1", ViewName::Coverage, "r"),
                Some(&[1; 100])
            )
            .unwrap()
        );
        // A read of an aggregate known not to exist is its default, held nowhere.
        assert_eq!(
            ov.with::<u64, _>("t1", Tag::Finding, "never", |n| *n)
                .unwrap(),
            0
        );
        assert_eq!(ov.touched(), 1, "only the aggregate batch 1 wrote");
        // A row written again changes the bytes by its value alone.
        ov.set_row(
            Overlay::row_key("t1", ViewName::Coverage, "r"),
            Some(vec![2; 40]),
            None,
        );
        assert_eq!(epoch.bytes(), after_one - 60);
        assert!(
            store
                .get_raw(columns::SEEN, &columns::tenant_key("t1", "e1"))
                .unwrap()
                .is_none()
        );

        // Drained: every key once, and the epoch empty.
        let ov = Overlay::new(&store, &mut cache, &mut epoch);
        let mut puts = Vec::new();
        ov.drain_writes(|(cf, key, value)| {
            puts.push((cf, key.to_vec(), value.map(<[u8]>::to_vec)));
            Ok(())
        })
        .unwrap();
        let cfs: Vec<&str> = puts.iter().map(|p| p.0).collect();
        assert_eq!(
            cfs,
            [
                columns::SEEN,
                columns::STATE,
                columns::STATE,
                columns::view_cf(ViewName::Coverage)
            ]
        );
        assert_eq!(puts[3].2.as_deref(), Some(&[2u8; 40][..]));
        assert_eq!(epoch.bytes(), 0);
        assert_eq!(cache.agg_bytes, one, "given back, and charged as cached");
        let mut ov = Overlay::new(&store, &mut cache, &mut epoch);
        assert_eq!(
            ov.get::<u64>("t1", Tag::Asset, "a").unwrap(),
            1,
            "kept in the cache after the write"
        );
    }

    /// A tenant flooding changes of running counts alone (`--counters-per-epoch`) cannot make
    /// an epoch hold rows without bound: each row left to the epoch's end, and each written
    /// row's state digest, counts in the epoch's bytes (what `--epoch-bytes` ends the epoch
    /// by) once, however many batches touch it; taken out at the end, they are given back.
    #[test]
    fn rows_left_to_the_epochs_end_and_their_states_count_in_its_bytes_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, false).unwrap();
        let mut cache = Cache::new(100);
        let mut epoch = Epoch::default();
        let rows = 1_000;
        let row = |i: usize| ("t1".to_owned(), ViewName::Coverage, format!("agent/a{i}"));
        let mut grown = Vec::new();
        for _batch in 0..3 {
            epoch.next_batch();
            let mut ov = Overlay::new(&store, &mut cache, &mut epoch);
            for i in 0..rows {
                ov.coalesce(row(i));
            }
            grown.push(ov.epoch_bytes());
        }
        let least = rows * ("t1".len() + "agent/a0".len());
        assert!(grown[0] >= least, "{} < {least}", grown[0]);
        assert_eq!(grown[1], grown[0], "a row left again is not counted again");
        assert_eq!(grown[2], grown[0]);

        let mut ov = Overlay::new(&store, &mut cache, &mut epoch);
        let key = Overlay::row_key("t1", ViewName::Coverage, "agent/a0");
        ov.set_row(key, Some(vec![1; 10]), Some(7));
        let with_state = ov.epoch_bytes();
        let key = Overlay::row_key("t1", ViewName::Coverage, "agent/a0");
        assert_eq!(ov.written_state(&key), Some(7));
        ov.set_row(key, Some(vec![2; 10]), Some(8));
        assert_eq!(
            ov.epoch_bytes(),
            with_state,
            "a state replaced is counted once"
        );
        let key = Overlay::row_key("t1", ViewName::Coverage, "agent/a0");
        ov.set_row(key, Some(vec![2; 10]), None);
        assert!(
            ov.epoch_bytes() < with_state,
            "a state dropped is given back"
        );

        let taken = ov.take_coalesced();
        assert_eq!(taken.len(), rows);
        assert!(ov.epoch_bytes() < least, "{}", ov.epoch_bytes());
        assert!(ov.take_coalesced().is_empty());
    }

    #[test]
    fn a_clock_reads_the_markers_it_passed_once_and_a_gap_ends_where_one_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, false).unwrap();
        let mut cache = Cache::new(100);
        let mut epoch = Epoch::default();
        let at = |agent: &str, t: i64| format!("{agent}\0{t:04}");
        // Stored: a's requests at 5 and 20 (and b's at 1, and 3 deleted below).
        epoch.next_batch();
        let mut ov = Overlay::new(&store, &mut cache, &mut epoch);
        for id in [at("a", 5), at("a", 20), at("a", 3), at("b", 1)] {
            ov.mark("t1", Tag::PendingByAgent, &id);
        }
        let mut batch = rocksdb::WriteBatch::default();
        ov.drain_writes(|(cf, key, value)| match value {
            Some(v) => store.batch_put(&mut batch, cf, key, v),
            None => store.batch_delete(&mut batch, cf, key),
        })
        .unwrap();
        store.write(batch).unwrap();

        epoch.next_batch();
        let mut ov = Overlay::new(&store, &mut cache, &mut epoch);
        ov.unmark("t1", Tag::PendingByAgent, &at("a", 3));
        let passed = |ov: &mut Overlay<'_>, from: i64, to: i64| {
            ov.marks_passed(
                "t1",
                Tag::PendingByAgent,
                "a\0",
                &at("a", from),
                &at("a", to),
            )
            .unwrap()
        };
        assert!(passed(&mut ov, 0, 4).is_empty(), "3 was deleted");
        // The read went on to 5: the gap [4, 5) is known.
        let gap = |ov: &Overlay<'_>| ov.epoch.gaps.values().cloned().collect::<Vec<_>>();
        assert_eq!(
            gap(&ov),
            [state_key("t1", Tag::PendingByAgent, &at("a", 5))]
        );
        assert!(ov.epoch.in_gap(
            &state_key("t1", Tag::PendingByAgent, &at("a", 4)),
            &state_key("t1", Tag::PendingByAgent, &at("a", 5)),
        ));
        // A request marked inside the gap ends it, and is read.
        ov.mark("t1", Tag::PendingByAgent, &at("a", 4));
        assert!(ov.epoch.gaps.is_empty());
        assert_eq!(passed(&mut ov, 4, 5), [at("a", 4)]);
        assert_eq!(passed(&mut ov, 5, 21), [at("a", 5), at("a", 20)]);
        // Past a's last request the gap runs to the end of a's markers, not into b's.
        assert!(passed(&mut ov, 21, 30).is_empty());
        assert!(passed(&mut ov, 30, 9999).is_empty());
        assert_eq!(
            ov.marks_passed("t1", Tag::PendingByAgent, "b\0", &at("b", 0), &at("b", 2))
                .unwrap(),
            [at("b", 1)]
        );
        // Gaps count in the epoch's bytes, and go with it.
        assert!(ov.epoch_bytes() > 0);
        ov.drain_writes(|_| Ok(())).unwrap();
        assert!(epoch.gaps.is_empty());
    }

    #[test]
    fn a_signature_verdict_is_remembered_under_exactly_its_inputs() {
        let mut cache = Cache::new(100);
        let verified = std::cell::Cell::new(0);
        let ask = |cache: &mut Cache, inputs: &[&str], v: SignatureState| {
            cache.verdict(inputs, || {
                verified.set(verified.get() + 1);
                v
            })
        };
        let valid = ["key", "t1", "ev-1", "ab12", "sig"];
        assert_eq!(
            ask(&mut cache, &valid, SignatureState::Verified),
            SignatureState::Verified
        );
        // Asked again (the row, then a finding): remembered, not verified again.
        assert_eq!(
            ask(&mut cache, &valid, SignatureState::Invalid),
            SignatureState::Verified
        );
        // Any other input is another verdict, including the same bytes split differently.
        for other in [
            ["key", "t1", "ev-1", "ab12", "sig2"],
            ["key", "t2", "ev-1", "ab12", "sig"],
            ["key", "t1e", "v-1", "ab12", "sig"],
            ["key2", "t1", "ev-1", "ab12", "sig"],
        ] {
            assert_eq!(
                ask(&mut cache, &other, SignatureState::Invalid),
                SignatureState::Invalid
            );
        }
        assert_eq!(verified.get(), 5);
        // Verdicts survive a cleared cache (they are functions of their inputs), and count.
        cache.clear();
        assert_eq!(
            ask(&mut cache, &valid, SignatureState::Invalid),
            SignatureState::Verified
        );
        assert!(cache.verdict_bytes > 0 && cache.verdicts.len() == 5);
        // Inputs longer than any that can verify are not kept: verified each time.
        let long = "e".repeat(VERDICT_INPUTS);
        let huge = ["key", "t1", &long, "ab12", "sig"];
        for _ in 0..2 {
            assert_eq!(
                ask(&mut cache, &huge, SignatureState::Invalid),
                SignatureState::Invalid
            );
        }
        assert_eq!((verified.get(), cache.verdicts.len()), (7, 5));
    }
}
