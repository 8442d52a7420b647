//! Replay checkpoints: a tenant's views as of instants along its history, kept on disk, so
//! that a replay as of T (`as_of.rs`) starts from the newest one at or before T and applies
//! only the events it lacks, not every event the tenant has.
//!
//! [`extend`] makes them: it copies the tenant's newest checkpoint (or starts from nothing),
//! applies the kept events that checkpoint lacks in the order they occurred, and checkpoints
//! the database (RocksDB's checkpoint: table files hard-linked) every `every` events, at an
//! instant no later event shares. The views are a function of the set of events, so a
//! checkpoint as of S holds the views of the events that occurred by S and had arrived when it
//! was made; a replay from it adds those that occurred in (S, T] and the late ones that
//! occurred by S but arrived after. A replay applies about `every` events plus those since the
//! newest checkpoint, whatever the length of the history.
//!
//! [`Checkpoints`] is the set the projector keeps under `--state-dir` and extends in the
//! background (`History::keep_checkpoints`). It survives restarts; a checkpoint made with
//! other settings or another version is removed when the set is opened.

use crate::error::{Error, Result};
use crate::project::split_stored_event;
use crate::replay::{Feed, copy_database, scratch_engine, scratch_store};
use crate::rules::Settings;
use crate::store::{FNV_OFFSET, Store, VIEW_VERSION, columns, fnv1a};
use aispm_schemas::{Codec, Timestamp, Topics};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The file beside a checkpoint's database that says what it is.
const META_FILE: &str = "checkpoint.json";

/// Checkpoints kept per tenant, at most: past it the one whose removal leaves the shortest
/// gap goes, so a long history keeps evenly spaced checkpoints further apart.
pub const MAX_PER_TENANT: usize = 32;

/// A tenant's views as of an instant, in a closed database on disk.
#[derive(Debug)]
pub struct Checkpoint {
    pub tenant: String,
    pub at: Timestamp,
    /// The events it holds.
    pub events: u64,
    dir: PathBuf,
    /// Set when it leaves the kept set: its directory goes once nothing copies it.
    discarded: AtomicBool,
}

/// What [`META_FILE`] holds.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    tenant: String,
    at: i64,
    events: u64,
    fingerprint: String,
}

impl Checkpoint {
    /// Copies the database into `dir` (`replay::copy_database`).
    pub fn copy_to(&self, dir: &Path) -> Result<()> {
        copy_database(&self.dir, dir)
    }

    /// The directory its database is in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn load(dir: &Path, fingerprint: &str) -> Option<Checkpoint> {
        let meta: Meta = serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).ok()?).ok()?;
        (meta.fingerprint == fingerprint).then(|| Checkpoint {
            tenant: meta.tenant,
            at: Timestamp(meta.at),
            events: meta.events,
            dir: dir.to_owned(),
            discarded: AtomicBool::new(false),
        })
    }
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        if self.discarded.load(Ordering::Relaxed)
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "Could not remove a replay checkpoint.");
        }
    }
}

/// What the views of a checkpoint depend on besides its events: the view version, the
/// projector's version and the settings that shape findings.
pub fn fingerprint(settings: &Settings) -> String {
    let text = format!("{VIEW_VERSION}/{}/{settings:?}", env!("CARGO_PKG_VERSION"));
    format!("{:016x}", fnv1a(FNV_OFFSET, text.as_bytes()))
}

/// What [`extend`] did.
#[derive(Debug)]
pub struct Extended {
    /// The checkpoints made, in the order of their instants.
    pub made: Vec<Checkpoint>,
    /// The events it found to apply and left for a later call (after the last checkpoint).
    pub left: u64,
}

/// Extends `tenant`'s checkpoints from `base` (or from nothing): the kept events of `source`
/// that `base` lacks and that occurred by `up_to` are applied in the order they occurred, and
/// a checkpoint is made every `every` of them (at least) in a new directory under `dir`, at an
/// instant no event left for later shares. The events after the last one are left for a
/// later call. `work` is scratch space (it must not exist).
#[allow(clippy::too_many_arguments)]
pub fn extend(
    source: &Store,
    topics: &Topics,
    settings: &Settings,
    tenant: &str,
    base: Option<&Checkpoint>,
    up_to: Timestamp,
    every: usize,
    dir: &Path,
    work: &Path,
) -> Result<Extended> {
    /// Removes the scratch database when `extend` returns, after it is closed (declared
    /// first, dropped last).
    struct Scratch<'p>(&'p Path);
    impl Drop for Scratch<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _scratch = Scratch(work);
    let every = every.max(1);
    // The engine is made below, once there is a checkpoint to make: most walks find none.
    let store = scratch_store(base.map(Checkpoint::dir), work)?;
    let prefix = columns::tenant_prefix(tenant);
    let codec = Codec::new();
    // The events to apply: (occurred, where the key starts in `keys`, its length).
    let mut keys: Vec<u8> = Vec::new();
    let mut todo: Vec<(i64, usize, usize)> = Vec::new();
    let mut held_events = 0u64;
    {
        let mut held = store.key_cursor(columns::SEEN, &prefix)?;
        source.for_each_prefix(columns::SEEN, &prefix, |key, value| {
            let Some(parts) = split_stored_event(value)? else {
                return Ok(());
            };
            if held.reaches(key)? {
                held_events += 1;
                return Ok(());
            }
            let occurred = parts.decode(&codec)?.occurred_at();
            if occurred <= up_to {
                todo.push((occurred.0, keys.len(), key.len()));
                keys.extend_from_slice(key);
            }
            Ok(())
        })?;
    }
    todo.sort_by_key(|t| t.0);
    // Cut after every `every` events where the next occurred later, and not before the base's
    // instant: a checkpoint holds the base's events, so it is as of that instant at least
    // (events that occurred by it and arrived since are applied before the first cut).
    let not_before = base.map_or(i64::MIN, |b| b.at.0);
    let mut cuts = Vec::new();
    let mut since = 0;
    for (i, t) in todo.iter().enumerate() {
        since += 1;
        if since >= every && t.0 >= not_before && todo.get(i + 1).is_none_or(|n| n.0 > t.0) {
            cuts.push(i);
            since = 0;
        }
    }
    let mut made = Vec::new();
    let Some(&last) = cuts.last() else {
        return Ok(Extended {
            made,
            left: todo.len() as u64,
        });
    };
    let fingerprint = fingerprint(settings);
    std::fs::create_dir_all(dir)?;
    let mut engine = scratch_engine(&store, topics, settings)?;
    let mut feed = Feed::new(&mut engine, topics, tenant);
    let mut cuts = cuts.into_iter().peekable();
    for (i, &(occurred, start, len)) in todo[..=last].iter().enumerate() {
        let key = &keys[start..start + len];
        let value = source
            .get_raw(columns::SEEN, key)?
            .ok_or_else(|| Error::Other("a kept event went while it was replayed".into()))?;
        if let Some(parts) = split_stored_event(&value)? {
            feed.push(&parts)?;
        }
        if cuts.next_if_eq(&i).is_none() {
            continue;
        }
        feed.flush()?;
        let events = held_events + i as u64 + 1;
        let at = Timestamp(occurred);
        let path = dir.join(format!("{occurred}-{events}"));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        store.checkpoint(&path)?;
        let meta = Meta {
            tenant: tenant.to_owned(),
            at: occurred,
            events,
            fingerprint: fingerprint.clone(),
        };
        // Written last, durably: a checkpoint without it is incomplete and removed at start.
        aispm_runtime::fs::write_atomic(
            &path.join(META_FILE),
            &serde_json::to_vec(&meta).unwrap_or_default(),
        )?;
        made.push(Checkpoint {
            tenant: tenant.to_owned(),
            at,
            events,
            dir: path,
            discarded: AtomicBool::new(false),
        });
    }
    Ok(Extended {
        made,
        left: (todo.len() - last - 1) as u64,
    })
}

/// The checkpoints the projector keeps, per tenant in the order of their instants.
#[derive(Debug)]
pub(crate) struct Checkpoints {
    dir: PathBuf,
    /// Events between two checkpoints; 0: none are made.
    every: usize,
    kept: Mutex<HashMap<String, Vec<Arc<Checkpoint>>>>,
    /// Per tenant: refreshes to skip before its events are walked again, and how many its last
    /// walk left for a later checkpoint.
    due: Mutex<HashMap<String, (u32, u64)>>,
}

/// Refreshes a tenant's walk is skipped at most: a tenant whose events arrive slowly is walked
/// again only once an interval of them has likely arrived, judged by the growth between its
/// last two walks, and at least every this many refreshes.
const MAX_SKIPPED: u32 = 12;

/// Refreshes to skip before walking a tenant again whose last walk left `left` events, `before`
/// the walk before: about as many as it takes to reach `every` at the growth seen.
fn skip(every: usize, left: u64, before: u64) -> u32 {
    let grown = left.saturating_sub(before);
    let needed = (every as u64).saturating_sub(left);
    if grown == 0 {
        return MAX_SKIPPED;
    }
    u32::try_from(needed / grown)
        .unwrap_or(MAX_SKIPPED)
        .saturating_sub(1)
        .min(MAX_SKIPPED)
}

impl Checkpoints {
    /// The checkpoints under `dir` made with `settings` by this version; any other is removed.
    pub(crate) fn open(dir: PathBuf, settings: &Settings, every: usize) -> Result<Checkpoints> {
        let fingerprint = fingerprint(settings);
        let mut kept: HashMap<String, Vec<Arc<Checkpoint>>> = HashMap::new();
        std::fs::create_dir_all(&dir)?;
        for tenant_dir in std::fs::read_dir(&dir)? {
            let tenant_dir = tenant_dir?.path();
            if !tenant_dir.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&tenant_dir)? {
                let path = entry?.path();
                if !path.is_dir() {
                    continue;
                }
                match Checkpoint::load(&path, &fingerprint) {
                    Some(c) if every > 0 => {
                        kept.entry(c.tenant.clone()).or_default().push(Arc::new(c));
                    }
                    _ => std::fs::remove_dir_all(&path)?,
                }
            }
        }
        for list in kept.values_mut() {
            list.sort_by_key(|c| (c.at, c.events));
        }
        let n: usize = kept.values().map(Vec::len).sum();
        if n > 0 {
            tracing::info!(checkpoints = n, "Replay checkpoints kept from before.");
        }
        Ok(Checkpoints {
            dir,
            every,
            kept: Mutex::new(kept),
            due: Mutex::new(HashMap::new()),
        })
    }

    /// `tenant`'s newest checkpoint at or before `at`.
    pub(crate) fn at_or_before(&self, tenant: &str, at: Timestamp) -> Option<Arc<Checkpoint>> {
        let kept = self.kept.lock().ok()?;
        kept.get(tenant)?
            .iter()
            .rev()
            .find(|c| c.at <= at)
            .map(Arc::clone)
    }

    /// Every checkpoint kept: (tenant, instant, events).
    pub(crate) fn list(&self) -> Vec<(String, Timestamp, u64)> {
        let Ok(kept) = self.kept.lock() else {
            return Vec::new();
        };
        let mut out: Vec<_> = kept
            .values()
            .flatten()
            .map(|c| (c.tenant.clone(), c.at, c.events))
            .collect();
        out.sort();
        out
    }

    /// Extends every tenant's checkpoints up to now from its newest (`work`: scratch space);
    /// the checkpoints made.
    pub(crate) fn refresh(
        &self,
        source: &Store,
        topics: &Topics,
        settings: &Settings,
        work: &Path,
    ) -> Result<usize> {
        if self.every == 0 {
            return Ok(0);
        }
        let mut made = 0;
        for tenant in source.tenants(columns::SEEN)? {
            let before = match self.due.lock() {
                Ok(mut due) => match due.get_mut(&tenant) {
                    Some((skipped, _)) if *skipped > 0 => {
                        *skipped -= 1;
                        continue;
                    }
                    Some((_, before)) => *before,
                    None => 0,
                },
                Err(_) => 0,
            };
            let newest = self
                .kept
                .lock()
                .ok()
                .and_then(|k| k.get(&tenant).and_then(|l| l.last().map(Arc::clone)));
            let dir = self.dir.join(hex(&tenant));
            std::fs::create_dir_all(&dir)?;
            let new = extend(
                source,
                topics,
                settings,
                &tenant,
                newest.as_deref(),
                Timestamp::now(),
                self.every,
                &dir,
                work,
            )?;
            made += new.made.len();
            let wait = if new.made.is_empty() {
                skip(self.every, new.left, before)
            } else {
                0
            };
            if let Ok(mut due) = self.due.lock() {
                due.insert(tenant.clone(), (wait, new.left));
            }
            self.add(&tenant, new.made);
        }
        Ok(made)
    }

    fn add(&self, tenant: &str, new: Vec<Checkpoint>) {
        if new.is_empty() {
            return;
        }
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        let list = kept.entry(tenant.to_owned()).or_default();
        for c in new {
            tracing::info!(tenant, at = %c.at, events = c.events, "Replay checkpoint made.");
            // One made again at the same instant (late events arrived) supersedes the other.
            list.retain(|old| {
                let same = old.at == c.at;
                if same {
                    old.discarded.store(true, Ordering::Relaxed);
                }
                !same
            });
            list.push(Arc::new(c));
        }
        list.sort_by_key(|c| (c.at, c.events));
        while list.len() > MAX_PER_TENANT {
            // The interior one whose neighbours are closest in events.
            let Some(i) = (1..list.len() - 1)
                .min_by_key(|&i| list[i + 1].events.saturating_sub(list[i - 1].events))
            else {
                break;
            };
            list.remove(i).discarded.store(true, Ordering::Relaxed);
        }
    }
}

/// A tenant's directory name: its id in hex (any id is a valid file name then).
fn hex(tenant: &str) -> String {
    hex::encode(tenant)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_slowly_growing_tenant_is_walked_again_once_an_interval_has_likely_arrived() {
        // 1,000 more events a refresh, 10,000 short of an interval: nine refreshes skipped.
        assert_eq!(skip(100_000, 90_000, 89_000), 9);
        // Growing fast enough to fill an interval by the next refresh: none skipped.
        assert_eq!(skip(100_000, 90_000, 40_000), 0);
        // Quiet, or slower than the cap allows for: walked again after the cap.
        assert_eq!(skip(100_000, 500, 500), MAX_SKIPPED);
        assert_eq!(skip(100_000, 501, 500), MAX_SKIPPED);
    }

    #[test]
    fn only_checkpoints_made_with_the_same_settings_and_version_are_kept_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::default();
        let tenant = dir.path().join(hex("acme"));
        let make = |name: &str, fingerprint: Option<String>| {
            let d = tenant.join(name);
            std::fs::create_dir_all(&d).unwrap();
            if let Some(fingerprint) = fingerprint {
                let meta = Meta {
                    tenant: "acme".into(),
                    at: 5,
                    events: 7,
                    fingerprint,
                };
                std::fs::write(d.join(META_FILE), serde_json::to_vec(&meta).unwrap()).unwrap();
            }
            d
        };
        let kept = make("5-7", Some(fingerprint(&settings)));
        let other = Settings {
            loop_repeats: settings.loop_repeats + 1,
            ..Settings::default()
        };
        let stale = make("5-8", Some(fingerprint(&other)));
        let unfinished = make("6-9", None);
        std::fs::write(dir.path().join("stray"), b"").unwrap();
        let set = Checkpoints::open(dir.path().to_owned(), &settings, 10).unwrap();
        assert_eq!(set.list(), [("acme".to_owned(), Timestamp(5), 7)]);
        assert!(kept.exists() && !stale.exists() && !unfinished.exists());
        // With checkpoints turned off, none is kept.
        drop(set);
        let set = Checkpoints::open(dir.path().to_owned(), &settings, 0).unwrap();
        assert!(set.list().is_empty() && !kept.exists());
    }

    #[test]
    fn a_tenant_keeps_evenly_spaced_checkpoints_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let set = Checkpoints::open(dir.path().to_owned(), &Settings::default(), 10).unwrap();
        let fake = |i: i64| {
            let d = dir.path().join(format!("c{i}"));
            std::fs::create_dir_all(&d).unwrap();
            Checkpoint {
                tenant: "acme".into(),
                at: Timestamp(i * 1000),
                events: u64::try_from(i).unwrap() * 10,
                dir: d,
                discarded: AtomicBool::new(false),
            }
        };
        set.add("acme", (1..=MAX_PER_TENANT as i64 * 2).map(fake).collect());
        let list = set.list();
        assert_eq!(list.len(), MAX_PER_TENANT);
        // The first and the newest stay; the gaps between the rest are at most two apart.
        assert_eq!(list.first().unwrap().2, 10);
        assert_eq!(list.last().unwrap().2, MAX_PER_TENANT as u64 * 20);
        let gaps: Vec<u64> = list.windows(2).map(|w| w[1].2 - w[0].2).collect();
        assert!(gaps.iter().all(|g| (10..=40).contains(g)), "{gaps:?}");
        // The removed ones' directories are gone, the kept ones' are not.
        let dirs = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('c')
            })
            .count();
        assert_eq!(dirs, MAX_PER_TENANT);
        assert_eq!(
            set.at_or_before("acme", Timestamp(4_500)).unwrap().at,
            list.iter()
                .rev()
                .find(|c| c.1 <= Timestamp(4_500))
                .unwrap()
                .1
        );
        assert!(set.at_or_before("acme", Timestamp(999)).is_none());
        assert!(set.at_or_before("globex", Timestamp(i64::MAX)).is_none());
    }
}
