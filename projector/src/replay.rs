//! A scratch database and the engine that kept events are fed into: what a replay as of a past
//! instant (`as_of.rs`) and the making of replay checkpoints (`checkpoints.rs`) both run.

use crate::error::{Error, Result};
use crate::project::{Engine, Input, StoredParts};
use crate::rules::Settings;
use crate::store::Store;
use aispm_schemas::Topics;
use std::path::Path;
use std::sync::Arc;

/// Records per batch of a replay, at most, and the decoded aggregates a batch may hold (the
/// projector's `--batch-max` and `--batch-max-aggregates` defaults): large batches are what
/// makes the engine cheap per event, the aggregates bound what one costs in memory.
const BATCH: usize = crate::Config::DEFAULT_BATCH_MAX;
const BATCH_AGGREGATES: usize = crate::Config::DEFAULT_BATCH_MAX_AGGREGATES;
/// The scratch database's block cache.
const CACHE_BYTES: usize = 16 << 20;
/// The scratch engine's aggregate cache (entries).
const CACHE_ENTRIES: usize = 50_000;

/// Copies the closed database in `from` into `to`, its table files hard-linked (they are never
/// changed in place, only replaced by compaction), the rest copied (a file that is not the
/// database's, such as a checkpoint's `checkpoint.json`, is copied too, and ignored).
pub(crate) fn copy_database(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let (src, dst) = (entry.path(), to.join(&name));
        let linked =
            name.to_string_lossy().ends_with(".sst") && std::fs::hard_link(&src, &dst).is_ok();
        if !linked {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// A scratch database under `dir`: a copy of the closed database in `base`, or empty.
pub(crate) fn scratch_store(base: Option<&Path>, dir: &Path) -> Result<Arc<Store>> {
    if let Some(b) = base {
        copy_database(b, dir)?;
    }
    let store = Arc::new(Store::open(dir, CACHE_BYTES, false)?);
    store.check_version()?;
    Ok(store)
}

/// An engine over a scratch database that publishes nothing. Made only when there is
/// something to apply: it reads every key of the database into its may-exist filter.
pub(crate) fn scratch_engine(
    store: &Arc<Store>,
    topics: &Topics,
    settings: &Settings,
) -> Result<Engine> {
    Engine::new(
        Arc::clone(store),
        topics.clone(),
        settings.clone(),
        CACHE_ENTRIES,
    )?
    .without_publishing()
}

/// Kept events on their way into a scratch engine, applied in batches as large as the
/// engine's memory bound allows.
pub(crate) struct Feed<'a> {
    engine: &'a mut Engine,
    topics: &'a Topics,
    tenant: &'a str,
    /// Owned parts of one batch: (kind's topic, principal, payload).
    batch: Vec<(&'a str, Option<String>, Vec<u8>)>,
    limit: usize,
    /// The next record's offset: after the base's, which the engine would skip as applied.
    offset: i64,
}

impl<'a> Feed<'a> {
    pub(crate) fn new(engine: &'a mut Engine, topics: &'a Topics, tenant: &'a str) -> Self {
        let offset = engine.next_offsets.values().copied().max().unwrap_or(0);
        let limit = engine.batch_limit(BATCH, BATCH_AGGREGATES);
        Feed {
            engine,
            topics,
            tenant,
            batch: Vec::new(),
            limit,
            offset,
        }
    }

    /// Queues one kept event; applies the batch once it is full.
    pub(crate) fn push(&mut self, parts: &StoredParts<'_>) -> Result<()> {
        self.batch.push((
            parts.topic(self.topics),
            parts.by.map(str::to_owned),
            parts.payload.to_vec(),
        ));
        if self.batch.len() >= self.limit {
            self.flush()?;
            self.limit = self.engine.batch_limit(BATCH, BATCH_AGGREGATES);
        }
        Ok(())
    }

    /// Applies what is queued.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let inputs: Vec<Input<'_>> = self
            .batch
            .iter()
            .map(|(topic, by, payload)| {
                self.offset += 1;
                Input {
                    topic,
                    partition: 0,
                    offset: self.offset - 1,
                    key: Some(self.tenant.as_bytes()),
                    payload: Some(payload),
                    // Kept events were accepted once: the future-dated check is not made
                    // again (a changed `--future-tolerance` must not drop what was applied).
                    timestamp: None,
                    principal: by.as_deref(),
                }
            })
            .collect();
        let mut prepared = self.engine.prepare(&inputs)?;
        if let Some(r) = prepared.rejected.first() {
            return Err(Error::Other(format!(
                "a kept event was rejected on replay ({}): {}",
                r.reason, r.error
            )));
        }
        self.engine.commit(&mut prepared)?;
        self.batch.clear();
        Ok(())
    }
}
