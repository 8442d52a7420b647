//! The working set of one batch: reads go through the batch's own writes, then a bounded cache
//! of recent values, then RocksDB; writes stay here until the batch is committed in one
//! `WriteBatch` (see `consumer.rs`). Rows marked dirty are re-derived once per batch.
//!
//! Aggregates are decoded once per batch on first touch and kept typed in the working set;
//! every later touch in the batch updates them in place, and each changed one is encoded once
//! when the batch is written (not once per event).

use crate::error::Result;
use crate::filter::MayExist;
use crate::state::{Tag, state_key};
use crate::store::{Store, columns, decode, encode};
use aispm_schemas::ViewName;
use lru::LruCache;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::LazyLock;

/// The working set's hash maps: foldhash (randomly seeded, several times faster than the
/// standard SipHash on these short string keys, which showed at 6% of the apply path).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A decoded aggregate of any type, encodable when the batch is written.
trait Agg: Any + Send {
    fn encode(&self) -> Vec<u8>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Serialize + Any + Send> Agg for T {
    fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// An aggregate in the working set, and whether this batch changed it.
struct Slot {
    value: Box<dyn Agg>,
    changed: bool,
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

/// One write of a batch: column family, key, value (`None` deletes).
pub(crate) type Write = (&'static str, Vec<u8>, Option<Vec<u8>>);

/// Values recently read or written, across batches (bounded: memory does not grow with state):
/// a digest of each stored row (enough to tell whether a re-derived row changed), and
/// aggregates decoded, ready to update without decoding again.
pub(crate) struct Cache {
    rows: LruCache<Vec<u8>, Option<u128>>,
    aggs: LruCache<Vec<u8>, Box<dyn Agg>>,
    /// The keys of this worker's tenants that may exist: a read of any other is skipped.
    pub exists: MayExist,
}

/// Two independently seeded hashers, fixed for the life of the process (the digests only live
/// in this process's cache); random seeds, so input cannot be crafted to collide.
static DIGEST: LazyLock<[foldhash::quality::RandomState; 2]> = LazyLock::new(Default::default);

/// 128 bits identifying a row's bytes (two seeded passes): equal digests, equal rows.
fn digest(bytes: &[u8]) -> u128 {
    let [a, b] = &*DIGEST;
    (u128::from(a.hash_one(bytes)) << 64) | u128::from(b.hash_one(bytes))
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
            exists: MayExist::default(),
        }
    }

    /// Drops the cached values. The may-exist filter stays: it only ever over-approximates
    /// the stored keys, so it stays right whatever was rolled back or wiped.
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
        self.aggs.clear();
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

/// One batch's reads and writes.
#[derive(Debug)]
pub(crate) struct Overlay<'a> {
    store: &'a Store,
    cache: &'a mut Cache,
    /// Writes by cache key (rows and index markers); `None` deletes.
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Aggregates touched by this batch, by state key.
    aggs: HashMap<Vec<u8>, Slot>,
    /// Event ids first seen in this batch, and the event each is kept with.
    seen: HashMap<Vec<u8>, Vec<u8>>,
    pub dirty: HashSet<Dirty>,
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(store: &'a Store, cache: &'a mut Cache) -> Self {
        Overlay {
            store,
            cache,
            writes: HashMap::default(),
            aggs: HashMap::default(),
            seen: HashMap::default(),
            dirty: HashSet::default(),
        }
    }

    /// The slot of an aggregate, decoded on first touch in this batch (its default when absent);
    /// `touch` marks it changed.
    fn slot<T>(&mut self, tenant: &str, tag: Tag, id: &str, touch: bool) -> Result<&mut T>
    where
        T: DeserializeOwned + Serialize + Default + Send + 'static,
    {
        let key = state_key(tenant, tag, id);
        let slot = match self.aggs.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let value = match self.cache.aggs.pop(e.key()) {
                    Some(value) => value,
                    None if !self.cache.exists.may_contain(CF_STATE, e.key()) => {
                        Box::new(T::default())
                    }
                    None => match self.store.get_raw(columns::STATE, e.key())? {
                        Some(b) => Box::new(decode::<T>(&b)?),
                        None => Box::new(T::default()),
                    },
                };
                e.insert(Slot {
                    value,
                    changed: false,
                })
            }
        };
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
        self.slot::<T>(tenant, tag, id, false).map(|v| v.clone())
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
        self.slot::<T>(tenant, tag, id, false).map(|v| f(v))
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
        self.writes.insert(
            cache_key(CF_STATE, &state_key(tenant, tag, id)),
            Some(Vec::new()),
        );
    }

    /// Deletes an index entry ([`Overlay::mark`]).
    pub(crate) fn unmark(&mut self, tenant: &str, tag: Tag, id: &str) {
        self.writes
            .insert(cache_key(CF_STATE, &state_key(tenant, tag, id)), None);
    }

    /// Ids under `{tenant} \0 {tag} \0 {prefix}` (stored or written in this batch).
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
            if let Ok(id) = std::str::from_utf8(&k[strip..]) {
                out.insert(id.to_owned());
            }
        }
        for (k, slot) in &self.aggs {
            if slot.changed
                && k.starts_with(&key_prefix)
                && let Ok(id) = std::str::from_utf8(&k[strip..])
            {
                out.insert(id.to_owned());
            }
        }
        let ck_prefix = cache_key(CF_STATE, &key_prefix);
        for (k, v) in &self.writes {
            if v.is_some()
                && k.starts_with(&ck_prefix)
                && let Ok(id) = std::str::from_utf8(&k[1 + strip..])
            {
                out.insert(id.to_owned());
            }
        }
        Ok(out)
    }

    /// Distinct aggregates this batch holds decoded.
    pub(crate) fn aggregates(&self) -> usize {
        self.aggs.len()
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
        if self.seen.contains_key(&key) {
            return Ok(false);
        }
        // A new id is usually answered by the may-exist filter; else straight to RocksDB:
        // event ids would only evict aggregates from the cache.
        if self.cache.exists.may_contain(CF_SEEN, &key)
            && self.store.get_raw(columns::SEEN, &key)?.is_some()
        {
            return Ok(false);
        }
        self.seen.insert(key, stored());
        Ok(true)
    }

    /// Whether the row stored (or written by this batch) is exactly `new` (postcard bytes;
    /// `None`: no row).
    pub(crate) fn row_is(
        &mut self,
        tenant: &str,
        view: ViewName,
        key: &str,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        let ck = cache_key(cf_row(view), &columns::tenant_key(tenant, key));
        if let Some(v) = self.writes.get(&ck) {
            return Ok(v.as_deref() == new);
        }
        if let Some(d) = self.cache.rows.get(&ck) {
            return Ok(*d == new.map(digest));
        }
        let stored = if self.cache.exists.may_contain(ck[0], &ck[1..]) {
            self.store.get_raw(columns::view_cf(view), &ck[1..])?
        } else {
            None
        };
        let same = stored.as_deref() == new;
        self.cache.rows.put(ck, stored.as_deref().map(digest));
        Ok(same)
    }

    pub(crate) fn set_row(
        &mut self,
        tenant: &str,
        view: ViewName,
        key: &str,
        row: Option<Vec<u8>>,
    ) {
        self.writes.insert(
            cache_key(cf_row(view), &columns::tenant_key(tenant, key)),
            row,
        );
    }

    pub(crate) fn dirty(&mut self, tenant: &str, view: ViewName, key: impl Into<String>) {
        self.dirty.insert((tenant.to_owned(), view, key.into()));
    }

    /// Hands every write to `put` in turn (each changed aggregate encoded once) and moves what
    /// was read or written into the cache. In key order per column family: RocksDB's memtable
    /// skip list inserts a run of ascending keys far faster than the same keys in hash order.
    pub(crate) fn drain_writes(self, mut put: impl FnMut(Write) -> Result<()>) -> Result<()> {
        let mut seen: Vec<(Vec<u8>, Vec<u8>)> = self.seen.into_iter().collect();
        seen.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut aggs: Vec<(Vec<u8>, Slot)> = self.aggs.into_iter().collect();
        aggs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = self.writes.into_iter().collect();
        writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));

        for (key, event) in seen {
            self.cache.exists.insert(CF_SEEN, &key);
            put((columns::SEEN, key, Some(event)))?;
        }
        for (key, slot) in aggs {
            if slot.changed {
                self.cache.exists.insert(CF_STATE, &key);
                put((columns::STATE, key.clone(), Some(slot.value.encode())))?;
            }
            self.cache.aggs.put(key, slot.value);
        }
        for (mut ck, v) in writes {
            let cf = match ck[0] {
                CF_STATE => columns::STATE,
                n => columns::VIEWS
                    .get(usize::from(n - 2))
                    .map(|(_, cf)| *cf)
                    .unwrap_or(columns::STATE),
            };
            if v.is_some() {
                self.cache.exists.insert(ck[0], &ck[1..]);
            }
            if ck[0] != CF_STATE {
                self.cache.rows.put(ck.clone(), v.as_deref().map(digest));
            }
            ck.remove(0);
            put((cf, ck, v))?;
        }
        Ok(())
    }
}
