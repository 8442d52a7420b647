//! The projector's RocksDB: column families, keys, and typed reads. The projector's source of
//! truth for progress is here (the `offsets` column family), not in Kafka.

pub mod columns;

use crate::error::{Error, Result};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteOptions,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::Path;

/// Bumped whenever the rows or aggregates change shape or meaning: a different stored version
/// wipes the views and replays them from the input topics.
pub const VIEW_VERSION: u32 = 15; // 6: rows keep `asserted_by`; 7: facts per environment (stage);
// 8: one finding per (rule, resource), with its occurrences' environments; 9: evidence rows
// name the decision's agent and control; 10: findings carry their risk score and factors;
// 11: data flows, requests for approval and their answers (DecisionFacts grew); 12: API keys: their agent
// and scopes used (Registration grew); a flow's use is a link's (`Usage`); 13: an agent's pending
// requests by control (AssetAgg grew), AISPM-APR-002; a control's policies and last enforced
// decision (ControlAgg and ControlRow grew); 14: a control's requests for approval by month
// (ControlAgg and ControlRow grew); 15: pending requests indexed by agent too, AISPM-APR-002's
// last occurrence is the newest overdue request's window end

/// When a write ([`Store::write`]) becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// At the next flush: no write-ahead log, and every flush atomic across the column
    /// families, so what a crash leaves is one consistent instant: the state and the offsets it
    /// stands at, from which the input topics are replayed (`docs/reliability.md`). The
    /// service's default: the input topics are the log.
    Flushed,
    /// At once: each write logged in RocksDB's write-ahead log (a process crash loses nothing
    /// written).
    Logged,
    /// As `Logged`, and the log fsynced at each write (survives power loss too; slower).
    Synced,
}

/// What RocksDB may hold in memory for the state: its block cache and its memtables. The
/// projector's memory beyond them is its own (`--cache-entries`, `--epoch-bytes`,
/// `--batch-max-aggregates`; docs/operations.md sizes them together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The block cache's bytes: data blocks, and the index and filter partitions.
    pub block_cache: usize,
    /// The memtables' bytes, all column families together (RocksDB's
    /// `db_write_buffer_size`, at least 2 MiB): a flush begins when they fill. Memtables
    /// being flushed still hold their memory until written, so RocksDB can briefly hold more.
    pub write_buffers: usize,
}

impl Budget {
    /// `--block-cache-bytes`' default.
    pub const DEFAULT_BLOCK_CACHE: usize = 64 * 1024 * 1024;
    /// `--write-buffer-bytes`' default.
    pub const DEFAULT_WRITE_BUFFERS: usize = 64 * 1024 * 1024;

    /// A block cache of `block_cache` bytes, the memtables' default budget.
    pub fn with_cache(block_cache: usize) -> Budget {
        Budget {
            block_cache,
            write_buffers: Budget::DEFAULT_WRITE_BUFFERS,
        }
    }
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::with_cache(Budget::DEFAULT_BLOCK_CACHE)
    }
}

/// Every view row by (column family, key).
pub type ViewDump = std::collections::BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// Keys of one prefix in order, stepped by [`KeyCursor::reaches`] (`Store::key_cursor`).
pub struct KeyCursor<'a> {
    iter: rocksdb::DBRawIterator<'a>,
    prefix: Vec<u8>,
}

impl std::fmt::Debug for KeyCursor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCursor")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl KeyCursor<'_> {
    /// Steps past every key before `key` and answers whether `key` is there: called with keys
    /// in ascending order, one walk of both.
    pub fn reaches(&mut self, key: &[u8]) -> Result<bool> {
        loop {
            match self.iter.key() {
                Some(k) if k.starts_with(&self.prefix) && k < key => self.iter.next(),
                Some(k) => return Ok(k == key),
                None => {
                    self.iter.status()?;
                    return Ok(false);
                }
            }
        }
    }
}

/// The projector's database.
pub struct Store {
    db: DB,
    durability: Durability,
    /// The block cache every column family shares (its usage, for the metrics: RocksDB's
    /// `block-cache-usage` property did not report it here).
    cache: Cache,
    /// RocksDB's count of background errors already found recovered from
    /// ([`Store::background_error`]).
    recovered_errors: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.db.path())
            .field("durability", &self.durability)
            .finish()
    }
}

/// FNV-1a's starting value.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `bytes`, continuing from `h` (`FNV_OFFSET` to start): a fixed, seedless hash for
/// digests and for placing tenants, stable across processes.
pub fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Encodes a stored value (aggregates and rows).
/// Read options for a walk over the keys under `prefix` (before `end`, when given): RocksDB's
/// upper bound is the lower of `end` and the first key past the prefix.
fn bounded(prefix: &[u8], end: Option<&[u8]>) -> ReadOptions {
    let past = past_prefix(prefix);
    let upper = match (past, end) {
        (Some(p), Some(e)) => Some(p.min(e.to_vec())),
        (p, e) => p.or_else(|| e.map(<[u8]>::to_vec)),
    };
    let mut opts = ReadOptions::default();
    if let Some(upper) = upper {
        opts.set_iterate_upper_bound(upper);
    }
    opts
}

/// The first key after every key that starts with `prefix`; none when no key is (an empty
/// prefix, or one of only `0xff` bytes).
pub(crate) fn past_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut past = prefix.to_vec();
    while let Some(last) = past.pop() {
        if last < u8::MAX {
            past.push(last + 1);
            return Some(past);
        }
    }
    None
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Our own types always serialize; an error here would be a bug in a derive.
    postcard::to_stdvec(v).unwrap_or_default()
}

/// Encodes a value for storage at the end of `out`.
pub(crate) fn encode_into<T: Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    // As `encode`: our own types always serialize.
    let _ = postcard::to_extend(v, std::mem::take(out)).map(|full| *out = full);
}

/// Decodes a stored value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corrupt(e.to_string()))
}

impl Store {
    /// Opens (or creates) the database under `dir` with a bounded block cache, each write
    /// logged (and fsynced when `sync`): for tools and tests; the service opens it
    /// [`Store::open_with`] its `--wal` setting.
    pub fn open(dir: &Path, cache_bytes: usize, sync: bool) -> Result<Store> {
        let durability = if sync {
            Durability::Synced
        } else {
            Durability::Logged
        };
        Store::open_with(dir, Budget::with_cache(cache_bytes), durability)
    }

    /// Opens (or creates) the database under `dir` with its memory bounded by `budget`, its
    /// writes made durable as `durability` says.
    pub fn open_with(dir: &Path, budget: Budget, durability: Durability) -> Result<Store> {
        std::fs::create_dir_all(dir)?;
        let cache = Cache::new_lru_cache(budget.block_cache);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        // Index and filters partitioned (4 KiB pieces under a small top-level index) and kept
        // in the block cache, so their memory is bounded by the cache: held by their table
        // readers instead, they grew with the state (~10 bits per key: the soak's 1,000
        // events/s added 0.6 MiB a minute, without end). Whole (unpartitioned) filter blocks
        // in the cache were worse: once the state outgrew the cache most point lookups evicted
        // and re-read a filter block of megabytes; a partition is one 4 KiB block. The top
        // levels and L0's filters and indexes stay pinned; index and filter blocks enter the
        // cache at high priority (RocksDB's default).
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_top_level_index_and_filter(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let cf_opts = || {
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            // Each memtable half the whole budget (`db_write_buffer_size` below), so that a
            // flush is called by the budget (or the flush interval), not by one busy column
            // family's small memtable filling first; a row rewritten by many batches is then
            // written to a table file once per flush, not once per small memtable.
            o.set_write_buffer_size((budget.write_buffers / 2).max(1 << 20));
            o.set_max_write_buffer_number(3);
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            // Universal (tiered) compaction: each key is rewritten by a few merges of sorted
            // runs, not once per level. The rows and aggregates are rewritten batch after batch
            // and the event ids only grow, so leveled compaction's write amplification had
            // RocksDB's background threads spending a third of the process's CPU at 1M events;
            // the price is space (up to twice the live data during a full merge), and a point
            // read checks a few more sorted runs, behind their bloom filters.
            o.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
            // A bloom filter over whole keys in the memtables too: most lookups (a new event
            // id, an aggregate touched for the first time) are misses.
            o.set_memtable_whole_key_filtering(true);
            o.set_memtable_prefix_bloom_ratio(0.05);
            o
        };
        let mut db_opts = cf_opts();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_db_write_buffer_size(budget.write_buffers.max(2 << 20));
        // Without the log, a flush of one column family alone would leave the others' state
        // of that instant in memory only: every flush takes them all, at one sequence number.
        db_opts.set_atomic_flush(durability == Durability::Flushed);
        let cfs = columns::all()
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_opts()));
        let db = DB::open_cf_descriptors(&db_opts, dir, cfs)?;
        Ok(Store {
            db,
            durability,
            cache,
            recovered_errors: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::Corrupt(format!("column family {name} is missing")))
    }

    pub fn get_raw(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    pub fn get<T: DeserializeOwned>(&self, cf: &str, key: &[u8]) -> Result<Option<T>> {
        match self.db.get_pinned_cf(self.cf(cf)?, key)? {
            Some(b) => decode(&b).map(Some),
            None => Ok(None),
        }
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, cf: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let iter = self.db.iterator_cf_opt(
            self.cf(cf)?,
            bounded(prefix, None),
            IteratorMode::From(prefix, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Calls `f` with every `(key, value)` whose key starts with `prefix`, in key order,
    /// without holding them all.
    pub fn for_each_prefix(
        &self,
        cf: &str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.walk_from(cf, prefix, prefix, |k, v| f(k, v).map(|()| true))
    }

    /// Calls `f` with each `(key, value)` from `start` on whose key starts with `prefix`, in
    /// key order, until `f` answers false (a scan that stops when a page is full).
    pub fn walk_from(
        &self,
        cf: &str,
        prefix: &[u8],
        start: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.walk_between(cf, prefix, start, None, f)
    }

    /// [`Store::walk_from`], stopping before `end` too. RocksDB is told the bound (the end,
    /// or the first key past the prefix), so a seek skips what lies beyond it instead of
    /// reading it to find the walk's end.
    pub fn walk_between(
        &self,
        cf: &str,
        prefix: &[u8],
        start: &[u8],
        end: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let iter = self.db.iterator_cf_opt(
            self.cf(cf)?,
            bounded(prefix, end),
            IteratorMode::From(start, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) || !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// At most `limit` `(key, value)` pairs from `start` on whose keys start with `prefix`,
    /// in key order (a page of a prefix scan).
    pub fn scan_from(
        &self,
        cf: &str,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let iter = self.db.iterator_cf_opt(
            self.cf(cf)?,
            bounded(prefix, None),
            IteratorMode::From(start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Calls `f` with every key of `cf`, in key order.
    pub fn for_each_key(&self, cf: &str, mut f: impl FnMut(&[u8])) -> Result<()> {
        let mut iter = self.db.raw_iterator_cf(self.cf(cf)?);
        iter.seek_to_first();
        while let Some(k) = iter.key() {
            f(k);
            iter.next();
        }
        Ok(iter.status()?)
    }

    /// A cursor over the keys of `cf` that start with `prefix`, in key order, as they are now:
    /// later writes are not seen (a merge walk against a database being written, `as_of.rs`).
    pub fn key_cursor(&self, cf: &str, prefix: &[u8]) -> Result<KeyCursor<'_>> {
        let mut iter = self.db.raw_iterator_cf(self.cf(cf)?);
        iter.seek(prefix);
        Ok(KeyCursor {
            iter,
            prefix: prefix.to_vec(),
        })
    }

    /// The tenants that have a key in `cf`, in order: one seek per tenant, not a scan.
    pub fn tenants(&self, cf: &str) -> Result<Vec<String>> {
        let mut iter = self.db.raw_iterator_cf(self.cf(cf)?);
        iter.seek_to_first();
        let mut out = Vec::new();
        while let Some(k) = iter.key() {
            let Some((tenant, _)) = columns::split_tenant_key(k) else {
                break;
            };
            // Past every key of `{tenant} \0`: `{tenant} \1`.
            let mut next = tenant.as_bytes().to_vec();
            next.push(1);
            out.push(tenant.to_owned());
            iter.seek(&next);
        }
        iter.status()?;
        Ok(out)
    }

    /// A consistent copy of the database in `dir` (which must not exist), its table files
    /// hard-linked: RocksDB's checkpoint, which flushes the memtables first.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// Stored next offsets per topic-partition.
    pub fn offsets(&self) -> Result<HashMap<(String, i32), i64>> {
        let mut out = HashMap::new();
        for (k, v) in self.scan_prefix(columns::OFFSETS, b"")? {
            if let (Some(tp), Ok(b)) = (columns::split_offset_key(&k), <[u8; 8]>::try_from(&v[..]))
            {
                out.insert(tp, i64::from_be_bytes(b));
            }
        }
        Ok(out)
    }

    /// Applies a batch atomically, durable as the store's [`Durability`] says.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        self.write_as(batch, self.durability == Durability::Flushed)
    }

    /// Applies a batch atomically and logged, whatever the store's [`Durability`]: for what
    /// no replay of the input topics rebuilds (the posture samples taken over time).
    pub fn write_logged(&self, batch: WriteBatch) -> Result<()> {
        self.write_as(batch, false)
    }

    /// One atomic write, without the log when `unlogged`; fsynced when the store syncs.
    fn write_as(&self, batch: WriteBatch, unlogged: bool) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(self.durability == Durability::Synced);
        opts.disable_wal(unlogged);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    /// Whether every flush started has ended: no column family holds a memtable waiting to be
    /// written (what was written before the flush started is then in table files). A failed
    /// flush leaves its memtables waiting, so this stays false.
    pub fn flushed(&self) -> Result<bool> {
        for name in columns::all() {
            let waiting = self
                .db
                .property_int_value_cf(self.cf(name)?, "rocksdb.num-immutable-mem-table")?;
            if waiting.unwrap_or(0) > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether RocksDB's background work failed and left the database stopped (a flush that
    /// could not write: a full disk): it then refuses writes until reopened, and this answers
    /// with its error. Without the log, a failed flush is otherwise silent while no batch
    /// comes: its memtables only stay waiting ([`Store::flushed`]). An error RocksDB
    /// recovered from is not one: the flush then completes.
    pub fn background_error(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let failed = self
            .db
            .property_int_value("rocksdb.background-errors")?
            .unwrap_or(0);
        if failed <= self.recovered_errors.load(Ordering::Relaxed) {
            return Ok(());
        }
        // A flush on a stopped database returns the error that stopped it.
        self.flush(true)?;
        self.recovered_errors.store(failed, Ordering::Relaxed);
        Ok(())
    }

    /// When this store's writes become durable.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Flushes every column family's memtables to table files, all at one instant (a
    /// checkpoint of the state and its offsets, [`Durability::Flushed`]); with `wait` false
    /// the flush is only started: it runs on RocksDB's background threads while the caller
    /// goes on writing into new memtables.
    pub fn flush(&self, wait: bool) -> Result<()> {
        let mut opts = rocksdb::FlushOptions::default();
        opts.set_wait(wait);
        let cfs = columns::all()
            .into_iter()
            .map(|name| self.cf(name))
            .collect::<Result<Vec<_>>>()?;
        self.db.flush_cfs_opt(&cfs, &opts)?;
        Ok(())
    }

    pub fn batch_put(
        &self,
        batch: &mut WriteBatch,
        cf: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        batch.put_cf(self.cf(cf)?, key, value);
        Ok(())
    }

    pub fn batch_delete(&self, batch: &mut WriteBatch, cf: &str, key: &[u8]) -> Result<()> {
        batch.delete_cf(self.cf(cf)?, key);
        Ok(())
    }

    /// Removes every key of `cf` that starts with `partition` (big-endian): one range delete.
    pub fn delete_prefix(&self, cf: &str, partition: i32) -> Result<()> {
        let from = partition.to_be_bytes();
        let mut batch = WriteBatch::default();
        match partition.checked_add(1) {
            Some(to) => batch.delete_range_cf(self.cf(cf)?, &from[..], &to.to_be_bytes()[..]),
            None => batch.delete_range_cf(self.cf(cf)?, &from[..], &[0xff; 5][..]),
        }
        self.write(batch)
    }

    /// Removes every row, aggregate, offset and pending output: the next run replays from the
    /// beginning of the input topics.
    pub fn wipe(&self) -> Result<()> {
        for name in columns::all() {
            let cf = self.cf(name)?;
            let keys: Vec<Vec<u8>> = self
                .db
                .iterator_cf(cf, IteratorMode::Start)
                .map(|i| i.map(|(k, _)| k.to_vec()))
                .collect::<Result<_, _>>()?;
            let mut batch = WriteBatch::default();
            for k in keys {
                batch.delete_cf(cf, k);
            }
            self.db.write(batch)?;
            // Compact the tombstones away now: left in place, every read of the replay that
            // follows (a miss, mostly) wades through one per deleted key, and the rebuild over
            // an existing state directory took 3-4 times the CPU of one into a fresh directory.
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(columns::META)?,
            b"version",
            VIEW_VERSION.to_be_bytes(),
        );
        self.db.write(batch)?;
        // Logged or not, a wipe is durable before anything is replayed over it.
        self.flush(true)
    }

    /// Wipes the views when they were built by another view version; true if it did.
    pub fn check_version(&self) -> Result<bool> {
        let stored = self.get_raw(columns::META, b"version")?;
        let current = VIEW_VERSION.to_be_bytes();
        match stored {
            Some(v) if v == current => Ok(false),
            None if self.offsets()?.is_empty() => {
                self.wipe()?;
                Ok(false)
            }
            _ => {
                tracing::warn!(
                    version = VIEW_VERSION,
                    "View version changed; wiping the views to replay them."
                );
                self.wipe()?;
                Ok(true)
            }
        }
    }

    /// Every view row (column family, key, value), for comparing two stores.
    pub fn dump_views(&self) -> Result<ViewDump> {
        let mut out = std::collections::BTreeMap::new();
        for (_, cf) in columns::VIEWS {
            for (k, v) in self.scan_prefix(cf, b"")? {
                out.insert((cf.to_owned(), k), v);
            }
        }
        Ok(out)
    }

    /// A digest of every view row: equal digests, equal views.
    pub fn view_digest(&self) -> Result<(usize, u64)> {
        let rows = self.dump_views()?;
        // FNV-1a over (cf, key, value) in key order.
        let mut h = FNV_OFFSET;
        for ((cf, k), v) in &rows {
            for part in [cf.as_bytes(), &[0xff][..], k, &[0xfe][..], v, &[0xfd][..]] {
                h = fnv1a(h, part);
            }
        }
        Ok((rows.len(), h))
    }

    /// Approximate bytes on disk (SST files) and in memtables, for metrics: summed over every
    /// column family (a DB-level property would report the default family only).
    pub fn sizes(&self) -> (u64, u64) {
        (
            self.property_sum("rocksdb.total-sst-files-size"),
            self.property_sum("rocksdb.cur-size-all-mem-tables"),
        )
    }

    /// Memory RocksDB holds outside the block cache: memtables and table readers (bloom
    /// filters and indexes); and the block cache's usage.
    pub fn memory(&self) -> (u64, u64, u64) {
        let cache = self.cache.get_usage() as u64;
        (
            self.property_sum("rocksdb.cur-size-all-mem-tables"),
            self.property_sum("rocksdb.estimate-table-readers-mem"),
            cache,
        )
    }

    fn property_sum(&self, name: &str) -> u64 {
        columns::all()
            .into_iter()
            .filter_map(|cf| self.db.cf_handle(cf))
            .filter_map(|cf| self.db.property_int_value_cf(cf, name).ok().flatten())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state directory written before the store compacted by tiers (RocksDB's default,
    /// leveled, with its keys pushed down to the last level) opens and reads the same, with
    /// the atomic flush and the log both ways.
    #[test]
    fn a_store_compacted_by_levels_opens_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let db = DB::open_cf(&opts, dir.path(), columns::all()).unwrap();
            let state = db.cf_handle(columns::STATE).unwrap();
            for i in 0..5_000u32 {
                let key = columns::tenant_key("t1", &format!("agg-{i:05}"));
                db.put_cf(state, &key, i.to_be_bytes()).unwrap();
            }
            db.flush_cf(state).unwrap();
            db.compact_range_cf(state, None::<&[u8]>, None::<&[u8]>);
            let files = db
                .property_value_cf(state, "rocksdb.num-files-at-level0")
                .unwrap();
            assert_eq!(files.as_deref(), Some("0"), "compacted below level 0");
        }
        for durability in [Durability::Flushed, Durability::Logged] {
            let store =
                Store::open_with(dir.path(), Budget::with_cache(1 << 20), durability).unwrap();
            let key = columns::tenant_key("t1", "agg-04321");
            let value = store.get_raw(columns::STATE, &key).unwrap();
            assert_eq!(value.as_deref(), Some(&4321u32.to_be_bytes()[..]));
            let all = store
                .scan_prefix(columns::STATE, &columns::tenant_prefix("t1"))
                .unwrap();
            assert_eq!(all.len(), 5_000);
            let mut batch = WriteBatch::default();
            store
                .batch_put(&mut batch, columns::STATE, b"t2\0new", b"x")
                .unwrap();
            store.write(batch).unwrap();
            store.flush(true).unwrap();
            assert_eq!(
                store
                    .get_raw(columns::STATE, b"t2\0new")
                    .unwrap()
                    .as_deref(),
                Some(&b"x"[..])
            );
        }
    }

    #[test]
    fn the_key_past_a_prefix_follows_every_key_under_it() {
        assert_eq!(past_prefix(b"t1\0"), Some(b"t1\x01".to_vec()));
        assert_eq!(past_prefix(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(past_prefix(b"\xff\xff"), None);
        assert_eq!(past_prefix(b""), None);
    }

    /// A walk that tells RocksDB its bound sees exactly the keys under the prefix from the
    /// start and before the end, in the memtable and in flushed files alike, with neighbours
    /// on both sides and keys ending in `0xff`.
    #[test]
    fn a_bounded_walk_sees_exactly_its_range_stored_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_with(dir.path(), Budget::with_cache(1 << 20), Durability::Flushed).unwrap();
        let keys: Vec<Vec<u8>> = [
            &b"t0\xff"[..],
            b"t1",
            b"t1\0",
            b"t1\0a",
            b"t1\0a\xff",
            b"t1\0b",
            b"t1\0c",
            b"t1\x01",
            b"t2\0a",
        ]
        .iter()
        .map(|k| k.to_vec())
        .collect();
        let walk = |start: &[u8], end: Option<&[u8]>| {
            let mut seen = Vec::new();
            store
                .walk_between(columns::STATE, b"t1\0", start, end, |k, _| {
                    seen.push(k.to_vec());
                    Ok(true)
                })
                .unwrap();
            seen
        };
        for (i, flushed) in [(0, false), (1, true)] {
            let mut batch = WriteBatch::default();
            for k in keys.iter().skip(i).step_by(2) {
                store
                    .batch_put(&mut batch, columns::STATE, k, b"v")
                    .unwrap();
            }
            store.write(batch).unwrap();
            if flushed {
                store.flush(true).unwrap();
            }
        }
        let under = |from: usize, to: usize| keys[from..to].to_vec();
        assert_eq!(walk(b"t1\0", None), under(2, 7));
        assert_eq!(walk(b"t1\0a\xff", None), under(4, 7));
        assert_eq!(walk(b"t1\0", Some(b"t1\0b")), under(2, 5));
        assert_eq!(walk(b"t1\0a", Some(b"t1\0a")), Vec::<Vec<u8>>::new());
        assert_eq!(walk(b"t1\0", Some(b"t9")), under(2, 7));
        let mut all = Vec::new();
        store
            .for_each_prefix(columns::STATE, b"t1", |k, _| {
                all.push(k.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(all, under(1, 8));
    }
}
