//! The views as of a past instant T: the tenant's applied events (kept by id in `seen`) whose
//! event time is at or before T, replayed through a fresh engine into a scratch RocksDB
//! database. Views are functions of the set of events (any order, any batching), so the
//! replay in key order gives the rows a projector fed only those events would have made.
//!
//! Event time decides: an event that occurred by T but reached the broker after T (its record
//! timestamp, kept with it) is included, and [`AsOf::late`] counts it, so an answer says
//! how much of it was not known at T. The query API serves any tenant route from a replay
//! (`?as_of=`, `api.rs`), with its clock-dependent states judged at T.
//!
//! A replay costs what the engine costs per event (see `docs/performance.md`). It starts from
//! the tenant's newest checkpoint at or before T (`checkpoints.rs`), so it applies the events
//! since that checkpoint, not the whole history. [`History`] runs one at a time, keeps the
//! last few for the pages that follow, and answers `429` to a request for another while one
//! runs.

use crate::checkpoints::{Checkpoint, Checkpoints};
use crate::error::{Error, Result};
use crate::project::split_stored_event;
use crate::replay::{Feed, scratch_engine, scratch_store};
use crate::rules::Settings;
use crate::store::{Store, columns};
use aispm_schemas::views::AsOf;
use aispm_schemas::{Codec, Timestamp, Topics};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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
) -> Result<(Store, AsOf)> {
    replay_from(source, topics, settings, tenant, at, None, dir)
}

/// [`replay`], starting from `base` (a checkpoint of the same tenant as of an instant at or
/// before `at`) instead of from nothing: its database is copied (hard links), and only the
/// kept events it lacks are applied: those that occurred after its instant and by `at`, and
/// those that occurred by its instant but arrived after it was made. The views are a
/// function of the set of events, so the rows are those of a replay from nothing.
///
/// One walk of both `seen` column families in key order tells them apart; an event the base
/// holds is not decoded.
pub fn replay_from(
    source: &Store,
    topics: &Topics,
    settings: &Settings,
    tenant: &str,
    at: Timestamp,
    base: Option<&Checkpoint>,
    dir: &Path,
) -> Result<(Store, AsOf)> {
    let started = Instant::now();
    if let Some(b) = base
        && (b.tenant != tenant || b.at > at)
    {
        return Err(Error::Other(format!(
            "a checkpoint of {} as of {} cannot start a replay of {tenant} as of {at}",
            b.tenant, b.at
        )));
    }
    let store = scratch_store(base.map(Checkpoint::dir), dir)?;
    let mut engine = scratch_engine(&store, topics, settings)?;
    let codec = Codec::new();
    let mut summary = AsOf {
        at,
        events: 0,
        after: 0,
        late: 0,
        arrival_unknown: 0,
        from_checkpoint: base.map(|b| b.at),
        applied: 0,
        replayed_at: Timestamp::now(),
        replay_ms: 0,
    };
    let prefix = columns::tenant_prefix(tenant);
    {
        // The base's events: the copy's `seen` before anything is applied to it.
        let mut held = store.key_cursor(columns::SEEN, &prefix)?;
        let mut feed = Feed::new(&mut engine, topics, tenant);
        source.for_each_prefix(columns::SEEN, &prefix, |key, value| {
            let Some(parts) = split_stored_event(value)? else {
                // An id applied before events were kept: there is nothing to replay.
                return Ok(());
            };
            if !held.reaches(key)? {
                if parts.decode(&codec)?.occurred_at() > at {
                    summary.after += 1;
                    return Ok(());
                }
                feed.push(&parts)?;
                summary.applied += 1;
            }
            summary.events += 1;
            match parts.arrived {
                Some(a) if a > at.0 => summary.late += 1,
                Some(_) => {}
                None => summary.arrival_unknown += 1,
            }
            Ok(())
        })?;
        feed.flush()?;
    }
    drop(engine);
    summary.replay_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let store = Arc::try_unwrap(store)
        .map_err(|_| Error::Other("the replay's database is still shared".into()))?;
    Ok((store, summary))
}

/// One replay's database, removed from disk once nothing reads it any more.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub(crate) tenant: String,
    pub(crate) summary: AsOf,
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
///
/// Hostile use is bounded: a replay runs in a task of its own that holds the one turn until it
/// ends (a client that hangs up does not free the turn for a second replay beside it, and the
/// result is kept for when it asks again), and a tenant may start a replay only once the
/// previous one of its own is as long ago as it took (at least [`History::TENANT_GAP`]), so one
/// tenant asking instant after instant cannot keep every other tenant's request refused.
#[derive(Debug)]
pub(crate) struct History {
    source: Arc<Store>,
    topics: Topics,
    settings: Settings,
    /// Where replays' databases go (emptied at start).
    dir: PathBuf,
    /// Where [`Checkpoints::refresh`] works (emptied at start).
    work: PathBuf,
    checkpoints: Checkpoints,
    kept: Mutex<Vec<Arc<Replayed>>>,
    /// Names what the replay holding the turn replays.
    running: Mutex<Option<(String, Timestamp)>>,
    turn: Arc<tokio::sync::Mutex<()>>,
    /// When each tenant may start its next replay.
    next_for: Mutex<HashMap<String, Instant>>,
    seq: AtomicU64,
    /// How long the last replay took (ms), for the `Retry-After` of a refused request.
    last_ms: AtomicU64,
}

impl History {
    pub(crate) const KEEP: usize = 4;
    pub(crate) const KEEP_FOR: Duration = Duration::from_secs(600);
    pub(crate) const TENANT_GAP: Duration = Duration::from_secs(10);

    /// Replays into directories under `dir/replays`, which is emptied first (a crash may have
    /// left a replay's database behind), starting from the checkpoints kept in
    /// `dir/checkpoints`, made every `checkpoint_events` events of a tenant (0: none).
    pub(crate) fn new(
        source: Arc<Store>,
        topics: Topics,
        settings: Settings,
        dir: &Path,
        checkpoint_events: usize,
    ) -> Result<History> {
        let (replays, work) = (dir.join("replays"), dir.join("work"));
        for scratch in [&replays, &work] {
            if scratch.exists() {
                std::fs::remove_dir_all(scratch)?;
            }
        }
        let checkpoints = Checkpoints::open(dir.join("checkpoints"), &settings, checkpoint_events)?;
        Ok(History {
            source,
            topics,
            settings,
            dir: replays,
            work,
            checkpoints,
            kept: Mutex::new(Vec::new()),
            running: Mutex::new(None),
            turn: Arc::new(tokio::sync::Mutex::new(())),
            next_for: Mutex::new(HashMap::new()),
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

    fn is_running(&self, tenant: &str, at: Timestamp) -> bool {
        self.running
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .is_some_and(|(t, a)| t == tenant && a == at)
    }

    /// The views of `tenant` as of `at`: a kept replay, the one running for the same instant
    /// once it ends, or a new one. Refused while a replay of something else runs, and while the
    /// tenant's own last replay is too recent.
    pub(crate) async fn get(
        self: &Arc<Self>,
        tenant: &str,
        at: Timestamp,
    ) -> Result<Arc<Replayed>, Refused> {
        if let Some(r) = self.lookup(tenant, at) {
            return Ok(r);
        }
        let busy = || {
            let ms = self.last_ms.load(Ordering::Relaxed).max(1000);
            Refused::Busy(Duration::from_millis(ms))
        };
        let turn = match Arc::clone(&self.turn).try_lock_owned() {
            Ok(turn) => turn,
            Err(_) if self.is_running(tenant, at) => {
                // The same replay: wait for it to end, then read what it kept.
                drop(self.turn.lock().await);
                return self.lookup(tenant, at).ok_or_else(busy);
            }
            Err(_) => return Err(busy()),
        };
        if let Some(r) = self.lookup(tenant, at) {
            return Ok(r);
        }
        let now = Instant::now();
        if let Some(next) = self
            .next_for
            .lock()
            .ok()
            .and_then(|n| n.get(tenant).copied())
            && next > now
        {
            return Err(Refused::Busy(next - now));
        }
        if let Ok(mut r) = self.running.lock() {
            *r = Some((tenant.to_owned(), at));
        }
        let me = Arc::clone(self);
        let t = tenant.to_owned();
        // The replay owns the turn: it ends, and keeps its result, whether or not the request
        // that started it is still waiting.
        let task = tokio::spawn(async move {
            let _turn = turn;
            let dir = me
                .dir
                .join(format!("{}", me.seq.fetch_add(1, Ordering::Relaxed)));
            let (source, topics, settings) = (
                Arc::clone(&me.source),
                me.topics.clone(),
                me.settings.clone(),
            );
            let (tt, d) = (t.clone(), dir.clone());
            let started = Instant::now();
            let base = me.checkpoints.at_or_before(&t, at);
            let done = tokio::task::spawn_blocking(move || {
                let out = replay_from(&source, &topics, &settings, &tt, at, base.as_deref(), &d);
                if out.is_err() {
                    let _ = std::fs::remove_dir_all(&d);
                }
                out
            })
            .await;
            if let Ok(mut n) = me.next_for.lock() {
                n.insert(
                    t.clone(),
                    Instant::now() + started.elapsed().max(Self::TENANT_GAP),
                );
            }
            if let Ok(mut r) = me.running.lock() {
                *r = None;
            }
            let (store, summary) = done
                .map_err(|e| Refused::Failed(Error::Other(e.to_string())))?
                .map_err(Refused::Failed)?;
            me.last_ms.store(summary.replay_ms, Ordering::Relaxed);
            let replayed = Arc::new(Replayed {
                tenant: t,
                summary,
                store: Some(Arc::new(store)),
                dir,
                made: Instant::now(),
            });
            if let Ok(mut kept) = me.kept.lock() {
                kept.push(Arc::clone(&replayed));
                while kept.len() > Self::KEEP {
                    kept.remove(0);
                }
            }
            Ok(replayed)
        });
        task.await
            .map_err(|e| Refused::Failed(Error::Other(e.to_string())))?
    }

    /// Extends every tenant's replay checkpoints now and then every `every` until `stop`, on
    /// a thread of its own at a lower CPU priority than the consumer's (background work: it
    /// takes what the live projection leaves); `kept` counts them.
    pub(crate) async fn keep_checkpoints(
        self: Arc<Self>,
        every: Duration,
        kept: prometheus::IntGaugeVec,
        stop: CancellationToken,
    ) {
        loop {
            let me = Arc::clone(&self);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let started = std::thread::Builder::new()
                .name("as-of-checkpoints".into())
                .spawn(move || {
                    aispm_runtime::supervise::lower_thread_priority();
                    let _ = tx.send(me.checkpoints.refresh(
                        &me.source,
                        &me.topics,
                        &me.settings,
                        &me.work,
                    ));
                });
            let done = match started {
                Ok(_) => rx.await.map_err(|e| Error::Other(e.to_string())),
                Err(e) => Err(Error::Io(e)),
            };
            match done {
                Ok(Ok(_)) => {}
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!(error = %e, "Could not extend the replay checkpoints; trying again later.");
                }
            }
            let n = self.checkpoints.list().len();
            kept.with_label_values::<&str>(&[])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn history() -> (tempfile::TempDir, Arc<History>) {
        let dir = tempfile::tempdir().unwrap();
        let source = Arc::new(Store::open(&dir.path().join("db"), 8 << 20, false).unwrap());
        source.check_version().unwrap();
        let h = History::new(
            source,
            Topics::default(),
            Settings::default(),
            &dir.path().join("as-of"),
            0,
        )
        .unwrap();
        (dir, Arc::new(h))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_tenant_cannot_hold_the_replays_and_an_instant_replayed_is_kept() {
        let (_dir, h) = history();
        let (t1, t2) = (Timestamp(1_000), Timestamp(2_000));
        let first = h.get("acme", t1).await.unwrap();
        assert_eq!(first.summary.at, t1);
        // The same instant again: the kept replay, not a new one.
        assert!(Arc::ptr_eq(&first, &h.get("acme", t1).await.unwrap()));
        // Another instant for the same tenant right away: refused for the tenant's gap.
        match h.get("acme", t2).await {
            Err(Refused::Busy(wait)) => assert!(wait <= History::TENANT_GAP, "{wait:?}"),
            other => panic!("{other:?}"),
        }
        // Another tenant is served meanwhile.
        assert_eq!(h.get("globex", t2).await.unwrap().tenant, "globex");
        // While a replay holds the turn, another tenant's request is refused at once.
        let held = Arc::clone(&h.turn).try_lock_owned().unwrap();
        assert!(matches!(h.get("initech", t1).await, Err(Refused::Busy(_))));
        drop(held);
        assert_eq!(h.get("initech", t1).await.unwrap().tenant, "initech");
    }
}
