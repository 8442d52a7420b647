//! The working set of one batch: reads go through the batch's own writes, then a bounded cache
//! of recent values, then RocksDB; writes stay here until the batch is committed in one
//! `WriteBatch` (see `consumer.rs`). Rows marked dirty are re-derived once per batch.

use crate::error::Result;
use crate::state::{Tag, state_key};
use crate::store::{Store, columns, decode, encode};
use aispm_schemas::ViewName;
use lru::LruCache;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;

/// A row to re-derive: tenant, view, row key.
pub type Dirty = (String, ViewName, String);

/// Values recently read or written, across batches (bounded: memory does not grow with state).
#[derive(Debug)]
pub struct Cache {
    values: LruCache<Vec<u8>, Option<Vec<u8>>>,
}

impl Cache {
    pub fn new(entries: usize) -> Self {
        Cache {
            values: LruCache::new(NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    pub fn clear(&mut self) {
        self.values.clear();
    }
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
pub struct Overlay<'a> {
    store: &'a Store,
    cache: &'a mut Cache,
    /// Writes by cache key; `None` deletes.
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
    seen: HashSet<Vec<u8>>,
    pub dirty: BTreeSet<Dirty>,
}

impl<'a> Overlay<'a> {
    pub fn new(store: &'a Store, cache: &'a mut Cache) -> Self {
        Overlay {
            store,
            cache,
            writes: HashMap::new(),
            seen: HashSet::new(),
            dirty: BTreeSet::new(),
        }
    }

    fn read(&mut self, cf: u8, cf_name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let ck = cache_key(cf, key);
        if let Some(v) = self.writes.get(&ck) {
            return Ok(v.clone());
        }
        if let Some(v) = self.cache.values.get(&ck) {
            return Ok(v.clone());
        }
        let v = self.store.get_raw(cf_name, key)?;
        self.cache.values.put(ck, v.clone());
        Ok(v)
    }

    /// An aggregate, or its default when absent.
    pub fn get<T: DeserializeOwned + Default>(
        &mut self,
        tenant: &str,
        tag: Tag,
        id: &str,
    ) -> Result<T> {
        match self.read(CF_STATE, columns::STATE, &state_key(tenant, tag, id))? {
            Some(b) => decode(&b),
            None => Ok(T::default()),
        }
    }

    pub fn put<T: Serialize>(&mut self, tenant: &str, tag: Tag, id: &str, value: &T) {
        self.writes.insert(
            cache_key(CF_STATE, &state_key(tenant, tag, id)),
            Some(encode(value)),
        );
    }

    /// Reads, updates and writes back an aggregate.
    pub fn update<T, F>(&mut self, tenant: &str, tag: Tag, id: &str, f: F) -> Result<T>
    where
        T: DeserializeOwned + Serialize + Default + Clone,
        F: FnOnce(&mut T),
    {
        let mut v: T = self.get(tenant, tag, id)?;
        f(&mut v);
        self.put(tenant, tag, id, &v);
        Ok(v)
    }

    /// Marks an empty index entry.
    pub fn mark(&mut self, tenant: &str, tag: Tag, id: &str) {
        self.writes.insert(
            cache_key(CF_STATE, &state_key(tenant, tag, id)),
            Some(Vec::new()),
        );
    }

    /// Ids under `{tenant} \0 {tag} \0 {prefix}` (stored or written in this batch).
    pub fn ids_with_prefix(
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

    /// True the first time an event id is seen for a tenant (here or in any earlier batch).
    pub fn first_sighting(&mut self, tenant: &str, event_id: &str) -> Result<bool> {
        let key = columns::tenant_key(tenant, event_id);
        if self.seen.contains(&key) {
            return Ok(false);
        }
        if self.read(CF_SEEN, columns::SEEN, &key)?.is_some() {
            return Ok(false);
        }
        self.seen.insert(key);
        Ok(true)
    }

    /// The stored row, as postcard bytes.
    pub fn row(&mut self, tenant: &str, view: ViewName, key: &str) -> Result<Option<Vec<u8>>> {
        self.read(
            cf_row(view),
            columns::view_cf(view),
            &columns::tenant_key(tenant, key),
        )
    }

    pub fn set_row(&mut self, tenant: &str, view: ViewName, key: &str, row: Option<Vec<u8>>) {
        self.writes.insert(
            cache_key(cf_row(view), &columns::tenant_key(tenant, key)),
            row,
        );
    }

    pub fn dirty(&mut self, tenant: &str, view: ViewName, key: impl Into<String>) {
        self.dirty.insert((tenant.to_owned(), view, key.into()));
    }

    /// Moves the writes into a RocksDB batch and the cache; returns the batch.
    pub fn into_write_batch(self) -> Result<rocksdb::WriteBatch> {
        let mut batch = rocksdb::WriteBatch::default();
        for key in &self.seen {
            self.store.batch_put(&mut batch, columns::SEEN, key, &[])?;
            self.cache
                .values
                .put(cache_key(CF_SEEN, key), Some(Vec::new()));
        }
        for (ck, v) in self.writes {
            let cf = match ck[0] {
                CF_STATE => columns::STATE,
                n => columns::VIEWS
                    .get(usize::from(n - 2))
                    .map(|(_, cf)| *cf)
                    .unwrap_or(columns::STATE),
            };
            match &v {
                Some(bytes) => self.store.batch_put(&mut batch, cf, &ck[1..], bytes)?,
                None => self.store.batch_delete(&mut batch, cf, &ck[1..])?,
            }
            self.cache.values.put(ck, v);
        }
        Ok(batch)
    }
}
