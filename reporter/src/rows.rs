//! The view rows the reporter follows, spilled to a RocksDB database under
//! `<state-dir>/views-db` so that the reporter's memory does not grow with the number of rows.
//!
//! The database is derived, like the rest of the reporter's state: it is destroyed at every
//! start and refilled by replaying `aispm.views.v1` from the beginning. Writes therefore skip
//! the write-ahead log, and nothing here survives a restart on purpose.
//!
//! One column family (the default), one key space:
//!
//! `{tenant} \0 {view} \0 {row key}` → the row (postcard of the view's row type:
//! `CoverageRow` for `coverage`, `FindingRow` for `findings`, …).
//!
//! `{view}` is the view's name (`findings`, `evidence`, …). Tenant ids never contain NUL (the
//! follower refuses such records), so `{tenant} \0` is a tenant's prefix and a scan of it reads
//! every row of the tenant and no other tenant's.
//!
//! Memory is bounded by the options: a small block cache that also holds the index and filter
//! blocks, and a small total memtable budget. Neither depends on the number of rows.

use crate::{Error, Result};
use aispm_schemas::{ViewName, ViewRow};
use rocksdb::{
    BlockBasedOptions, Cache, DB, DBCompressionType, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A point-in-time view of the rows.
pub(crate) type Snapshot<'a> = rocksdb::SnapshotWithThreadMode<'a, DB>;

/// Block cache, shared by data, index and filter blocks.
pub(crate) const BLOCK_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// One memtable; at most [`MEMTABLES`] exist at a time.
pub(crate) const WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Memtables (the active one plus those being flushed).
pub(crate) const MEMTABLES: i32 = 2;

/// The reporter's view-row database.
pub struct Rows {
    db: DB,
    cache: Cache,
    path: PathBuf,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows").field("path", &self.path).finish()
    }
}

/// What the database holds in memory, by part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Active and immutable memtables.
    pub memtables: u64,
    /// Block cache usage (data, index and filter blocks).
    pub block_cache: u64,
    /// Table readers' memory outside the block cache.
    pub table_readers: u64,
}

impl Memory {
    pub fn total(&self) -> u64 {
        self.memtables + self.block_cache + self.table_readers
    }
}

fn options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Index and filter blocks are charged to the block cache, so the cache bounds them too
    // (kept out of it, they grow with the number of table files). L0's stay pinned: they are
    // read by every scan.
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    // No bloom filter: the reporter never looks a single row up; it writes, and scans tenants.
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_block_based_table_factory(&table);
    o.set_write_buffer_size(WRITE_BUFFER_BYTES);
    o.set_max_write_buffer_number(MEMTABLES);
    o.set_db_write_buffer_size(WRITE_BUFFER_BYTES * MEMTABLES as usize);
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_max_background_jobs(2);
    o.set_max_open_files(256);
    o.set_keep_log_file_num(2);
    o
}

/// `{tenant} \0` — the prefix of every key of a tenant.
pub(crate) fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k
}

/// `{tenant} \0 {view} \0 {row key}`.
pub(crate) fn row_key(tenant: &str, view: ViewName, key: &str) -> Vec<u8> {
    let view = view.as_str();
    let mut k = Vec::with_capacity(tenant.len() + view.len() + key.len() + 2);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(view.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Splits what follows a tenant's prefix: `{view} \0 {row key}`.
fn split_view_key(rest: &[u8]) -> Option<(ViewName, &str)> {
    let at = rest.iter().position(|b| *b == 0)?;
    let view = std::str::from_utf8(&rest[..at]).ok()?;
    let view = ViewName::from_symbol(view)?;
    let key = std::str::from_utf8(&rest[at + 1..]).ok()?;
    Some((view, key))
}

fn encode<T: Serialize>(row: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(row).map_err(|e| Error::Corrupt(format!("encoding a view row: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8], key: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| {
        Error::Corrupt(format!(
            "view row {} does not decode: {e}",
            String::from_utf8_lossy(key).replace('\0', "/")
        ))
    })
}

/// The encoded row, if it belongs to `view`; `None` for a row of another view's type.
pub(crate) fn encode_row(view: ViewName, row: &ViewRow) -> Result<Option<Vec<u8>>> {
    if row.view() != view {
        return Ok(None);
    }
    let bytes = match row {
        ViewRow::Coverage(r) => encode(r)?,
        ViewRow::Control(r) => encode(r)?,
        ViewRow::Finding(r) => encode(r)?,
        ViewRow::Exception(r) => encode(r)?,
        ViewRow::Evidence(r) => encode(r)?,
        ViewRow::Validation(r) => encode(r)?,
        ViewRow::Delivery(r) => encode(r)?,
    };
    Ok(Some(bytes))
}

impl Rows {
    /// Destroys whatever database is at `dir` (rows of an earlier run) and opens an empty one.
    pub fn open_empty(dir: &Path) -> Result<Rows> {
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let opts = options(&cache);
        if dir.exists() {
            DB::destroy(&opts, dir)?;
            // DestroyDB leaves the directory and files it does not know about.
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
        }
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let db = DB::open(&opts, dir)?;
        Ok(Rows {
            db,
            cache,
            path: dir.to_owned(),
        })
    }

    /// Applies a batch atomically. No WAL: the database is rebuilt from the topic at start.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    /// A consistent view of the rows as they are now, for [`Rows::load`].
    pub fn snapshot(&self) -> Snapshot<'_> {
        self.db.snapshot()
    }

    /// Reads every row of `tenant` as of `snapshot`, handing each to `each` with its key.
    pub fn load(
        &self,
        snapshot: &Snapshot<'_>,
        tenant: &str,
        mut each: impl FnMut(String, ViewRow),
    ) -> Result<()> {
        let prefix = tenant_prefix(tenant);
        let mut upper = prefix.clone();
        if let Some(last) = upper.last_mut() {
            *last = 1; // `{tenant} \x01`: just past every `{tenant} \0 …` key.
        }
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(upper);
        opts.set_snapshot(snapshot);
        // A report reads each row once: do not push the hot blocks out of the cache for it.
        opts.fill_cache(false);
        let iter = self
            .db
            .iterator_opt(IteratorMode::From(&prefix, Direction::Forward), opts);
        for item in iter {
            let (k, v) = item?;
            let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let Some((view, key)) = split_view_key(rest) else {
                return Err(Error::Corrupt(format!(
                    "view row key {} is not tenant/view/row",
                    String::from_utf8_lossy(&k).replace('\0', "/")
                )));
            };
            let key = key.to_owned();
            let row = match view {
                ViewName::Coverage => ViewRow::Coverage(decode(&v, &k)?),
                ViewName::Controls => ViewRow::Control(decode(&v, &k)?),
                ViewName::Findings => ViewRow::Finding(decode(&v, &k)?),
                ViewName::Exceptions => ViewRow::Exception(decode(&v, &k)?),
                ViewName::Evidence => ViewRow::Evidence(decode(&v, &k)?),
                ViewName::Validations => ViewRow::Validation(decode(&v, &k)?),
                ViewName::ReportDeliveries => ViewRow::Delivery(decode(&v, &k)?),
            };
            each(key, row);
        }
        Ok(())
    }

    fn property(&self, name: &str) -> u64 {
        self.db.property_int_value(name).ok().flatten().unwrap_or(0)
    }

    /// What the database holds in memory now.
    pub fn memory(&self) -> Memory {
        Memory {
            memtables: self.property("rocksdb.cur-size-all-mem-tables"),
            block_cache: self.cache.get_usage() as u64,
            table_readers: self.property("rocksdb.estimate-table-readers-mem"),
        }
    }

    /// Bytes of table files on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.property("rocksdb.total-sst-files-size")
    }

    /// RocksDB's estimate of the rows stored.
    pub fn estimated_rows(&self) -> u64 {
        self.property("rocksdb.estimate-num-keys")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_and_stay_in_their_tenant() {
        let k = row_key("acme", ViewName::Findings, "rule:agent/x\0y");
        let rest = k.strip_prefix(tenant_prefix("acme").as_slice()).unwrap();
        assert_eq!(
            split_view_key(rest),
            Some((ViewName::Findings, "rule:agent/x\0y"))
        );
        assert!(!k.starts_with(&tenant_prefix("acm")));
        assert!(!row_key("acme-eu", ViewName::Coverage, "a").starts_with(&tenant_prefix("acme")));
    }

    #[test]
    fn open_empty_wipes_an_earlier_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("views-db");
        {
            let rows = Rows::open_empty(&path).unwrap();
            let mut b = WriteBatch::default();
            b.put(row_key("acme", ViewName::Findings, "k"), b"junk");
            rows.write(b).unwrap();
        }
        let rows = Rows::open_empty(&path).unwrap();
        let mut n = 0;
        rows.load(&rows.snapshot(), "acme", |_, _| n += 1).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn a_row_that_does_not_decode_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let rows = Rows::open_empty(&dir.path().join("views-db")).unwrap();
        let mut b = WriteBatch::default();
        b.put(row_key("acme", ViewName::Findings, "k"), b"\xff");
        rows.write(b).unwrap();
        assert!(matches!(
            rows.load(&rows.snapshot(), "acme", |_, _| {}),
            Err(Error::Corrupt(_))
        ));
    }
}
