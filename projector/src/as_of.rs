//! The views as of a past instant T: the tenant's applied events (kept by id in `seen`) whose
//! event time is at or before T, replayed through a fresh engine into a scratch RocksDB
//! database. Views are functions of the set of events (any order, any batching), so the
//! replay in key order gives the rows a projector fed only those events would have made.
//!
//! Event time decides: an event that occurred by T but reached the broker after T (its record
//! timestamp, kept with it) is included, and [`Summary::late`] counts it, so an answer says
//! how much of it was not known at T. The query API serves any tenant route from a replay
//! (`?as_of=`, `api.rs`), with its clock-dependent states judged at T.
//!
//! A replay costs what the engine costs per event (see `docs/performance.md`), so [`History`]
//! runs one at a time, keeps the last few for the pages that follow, and answers `429` to a
//! request for another while one runs.

use crate::apply::Settings;
use crate::error::{Error, Result};
use crate::project::{Engine, Input, split_stored_event};
use crate::store::{Store, columns};
use aispm_schemas::{Codec, Timestamp, Topics};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Records per batch of a replay, at most, and the decoded aggregates a batch may hold (the
/// projector's `--batch-max` and `--batch-max-aggregates` defaults): large batches are what
/// makes the engine cheap per event, the aggregates bound what one costs in memory.
const BATCH: usize = crate::Config::DEFAULT_BATCH_MAX;
const BATCH_AGGREGATES: usize = crate::Config::DEFAULT_BATCH_MAX_AGGREGATES;
/// The scratch database's block cache.
const CACHE_BYTES: usize = 16 << 20;
/// The scratch engine's aggregate cache (entries).
const CACHE_ENTRIES: usize = 50_000;

/// What a replay as of `at` included, and what it says about lateness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The instant the views are as of.
    pub at: Timestamp,
    /// The tenant's events that occurred at or before `at`: the ones replayed.
    pub events: u64,
    /// The tenant's events that occurred after `at`: left out.
    pub after: u64,
    /// Replayed events whose records reached the broker after `at`: included by event time,
    /// though not known at `at`.
    pub late: u64,
    /// Replayed events kept before arrival times were (no record timestamp to judge by).
    pub arrival_unknown: u64,
    /// When the replay ran, and how long it took.
    pub replayed_at: Timestamp,
    pub replay_ms: u64,
}

/// Replays the events of `tenant` kept in `source` that occurred at or before `at` into a
/// new database under `dir` (which must not exist or be empty), with `settings`: the views as
/// of `at`.
pub fn replay(
    source: &Store,
    topics: &Topics,
    settings: &Settings,
    tenant: &str,
    at: Timestamp,
    dir: &Path,
) -> Result<(Store, Summary)> {
    let started = Instant::now();
    let store = Arc::new(Store::open(dir, CACHE_BYTES, false)?);
    store.check_version()?;
    let mut engine = Engine::new(
        Arc::clone(&store),
        topics.clone(),
        settings.clone(),
        CACHE_ENTRIES,
    )?
    .without_publishing()?;
    let codec = Codec::new();
    let mut summary = Summary {
        at,
        events: 0,
        after: 0,
        late: 0,
        arrival_unknown: 0,
        replayed_at: Timestamp::now(),
        replay_ms: 0,
    };
    // Owned parts of one batch: (kind's topic, principal, payload).
    let mut batch: Vec<(&str, Option<String>, Vec<u8>)> = Vec::new();
    let mut offset = 0i64;
    let mut limit = engine.batch_limit(BATCH, BATCH_AGGREGATES);
    let prefix = columns::tenant_prefix(tenant);
    source.for_each_prefix(columns::SEEN, &prefix, |_, value| {
        let Some(parts) = split_stored_event(value)? else {
            // An id applied before events were kept: there is nothing to replay.
            return Ok(());
        };
        if parts.decode(&codec)?.occurred_at() > at {
            summary.after += 1;
            return Ok(());
        }
        summary.events += 1;
        match parts.arrived {
            Some(a) if a > at.0 => summary.late += 1,
            Some(_) => {}
            None => summary.arrival_unknown += 1,
        }
        batch.push((
            parts.topic(topics),
            parts.by.map(str::to_owned),
            parts.payload.to_vec(),
        ));
        if batch.len() >= limit {
            apply(&mut engine, tenant, &mut batch, &mut offset)?;
            limit = engine.batch_limit(BATCH, BATCH_AGGREGATES);
        }
        Ok(())
    })?;
    apply(&mut engine, tenant, &mut batch, &mut offset)?;
    drop(engine);
    summary.replay_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let store = Arc::try_unwrap(store)
        .map_err(|_| Error::Other("the replay's database is still shared".into()))?;
    Ok((store, summary))
}

/// Applies a replay's batch of kept events (their topic, principal and value) and empties it;
/// `offset` numbers the records of the replay.
fn apply(
    engine: &mut Engine,
    tenant: &str,
    batch: &mut Vec<(&str, Option<String>, Vec<u8>)>,
    offset: &mut i64,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let inputs: Vec<Input<'_>> = batch
        .iter()
        .map(|(topic, by, payload)| {
            *offset += 1;
            Input {
                topic,
                partition: 0,
                offset: *offset - 1,
                key: Some(tenant.as_bytes()),
                payload: Some(payload),
                // Kept events were accepted once: the future-dated check is not made again (a
                // changed `--future-tolerance` must not drop what was applied).
                timestamp: None,
                principal: by.as_deref(),
            }
        })
        .collect();
    let mut prepared = engine.prepare(&inputs)?;
    if let Some(r) = prepared.rejected.first() {
        return Err(Error::Other(format!(
            "a kept event was rejected on replay ({}): {}",
            r.reason, r.error
        )));
    }
    engine.commit(&mut prepared)?;
    batch.clear();
    Ok(())
}

/// One replay's database, removed from disk once nothing reads it any more.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub(crate) tenant: String,
    pub(crate) summary: Summary,
    store: Option<Arc<Store>>,
    dir: PathBuf,
    made: Instant,
}

impl Replayed {
    /// The database the views as of `summary.at` are in.
    pub(crate) fn store(&self) -> Arc<Store> {
        self.store
            .as_ref()
            .map(Arc::clone)
            .unwrap_or_else(|| unreachable!("a replay's database is taken only when it is dropped"))
    }
}

impl Drop for Replayed {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let weak: Weak<Store> = Arc::downgrade(&store);
        drop(store);
        let dir = std::mem::take(&mut self.dir);
        // A request may still read it: the directory goes once the database is closed.
        std::thread::spawn(move || {
            while weak.strong_count() > 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "Could not remove a replay's database.");
            }
        });
    }
}

/// Why [`History::get`] did not answer.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Another replay is running; try again after about this long.
    Busy(Duration),
    Failed(Error),
}

/// The replays the API serves: one at a time, the last [`History::KEEP`] kept for
/// [`History::KEEP_FOR`] so that the pages and routes a person opens as of the same instant
/// share one.
#[derive(Debug)]
pub(crate) struct History {
    source: Arc<Store>,
    topics: Topics,
    settings: Settings,
    dir: PathBuf,
    kept: Mutex<Vec<Arc<Replayed>>>,
    /// Held while a replay runs; names what it replays.
    running: Mutex<Option<(String, Timestamp)>>,
    turn: tokio::sync::Mutex<()>,
    seq: AtomicU64,
    /// How long the last replay took (ms), for the `Retry-After` of a refused request.
    last_ms: AtomicU64,
}

impl History {
    pub(crate) const KEEP: usize = 4;
    pub(crate) const KEEP_FOR: Duration = Duration::from_secs(600);

    /// Replays into directories under `dir`, which is emptied first (a crash may have left a
    /// replay's database behind).
    pub(crate) fn new(
        source: Arc<Store>,
        topics: Topics,
        settings: Settings,
        dir: PathBuf,
    ) -> Result<History> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(History {
            source,
            topics,
            settings,
            dir,
            kept: Mutex::new(Vec::new()),
            running: Mutex::new(None),
            turn: tokio::sync::Mutex::new(()),
            seq: AtomicU64::new(0),
            last_ms: AtomicU64::new(1000),
        })
    }

    fn lookup(&self, tenant: &str, at: Timestamp) -> Option<Arc<Replayed>> {
        let mut kept = self.kept.lock().ok()?;
        kept.retain(|r| r.made.elapsed() < Self::KEEP_FOR);
        kept.iter()
            .find(|r| r.tenant == tenant && r.summary.at == at)
            .map(Arc::clone)
    }

    /// The views of `tenant` as of `at`: a kept replay, the one running for the same instant
    /// once it ends, or a new one. Refused while a replay of something else runs.
    pub(crate) async fn get(&self, tenant: &str, at: Timestamp) -> Result<Arc<Replayed>, Refused> {
        if let Some(r) = self.lookup(tenant, at) {
            return Ok(r);
        }
        let turn = match self.turn.try_lock() {
            Ok(turn) => turn,
            Err(_) => {
                let same = self
                    .running
                    .lock()
                    .ok()
                    .and_then(|r| r.clone())
                    .is_some_and(|(t, a)| t == tenant && a == at);
                if !same {
                    let ms = self.last_ms.load(Ordering::Relaxed).max(1000);
                    return Err(Refused::Busy(Duration::from_millis(ms)));
                }
                let turn = self.turn.lock().await;
                if let Some(r) = self.lookup(tenant, at) {
                    return Ok(r);
                }
                turn
            }
        };
        if let Ok(mut r) = self.running.lock() {
            *r = Some((tenant.to_owned(), at));
        }
        let dir = self
            .dir
            .join(format!("{}", self.seq.fetch_add(1, Ordering::Relaxed)));
        let (source, topics, settings) = (
            Arc::clone(&self.source),
            self.topics.clone(),
            self.settings.clone(),
        );
        let (t, d) = (tenant.to_owned(), dir.clone());
        let done = tokio::task::spawn_blocking(move || {
            let out = replay(&source, &topics, &settings, &t, at, &d);
            if out.is_err() {
                let _ = std::fs::remove_dir_all(&d);
            }
            out
        })
        .await;
        if let Ok(mut r) = self.running.lock() {
            *r = None;
        }
        let (store, summary) = done
            .map_err(|e| Refused::Failed(Error::Other(e.to_string())))?
            .map_err(Refused::Failed)?;
        self.last_ms.store(summary.replay_ms, Ordering::Relaxed);
        let replayed = Arc::new(Replayed {
            tenant: tenant.to_owned(),
            summary,
            store: Some(Arc::new(store)),
            dir,
            made: Instant::now(),
        });
        if let Ok(mut kept) = self.kept.lock() {
            kept.push(Arc::clone(&replayed));
            while kept.len() > Self::KEEP {
                kept.remove(0);
            }
        }
        drop(turn);
        Ok(replayed)
    }
}
