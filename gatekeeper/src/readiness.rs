//! The readiness engine: tenants' state, what is already published, and the diff between the
//! two. Evaluating a tenant turns rule drafts into [`Blocker`]s and a [`Readiness`] per stage and
//! yields a [`Change`] only for a record whose value differs from the published one:
//! an upsert for a new or changed blocker, a tombstone for a resolved one, a readiness record
//! when the verdict or its blocker list changed.
//!
//! Values are deterministic: a blocker keeps the `detected_at` it was first published with, and a
//! readiness record keeps its `evaluated_at` until the verdict changes. So re-evaluating an
//! unchanged tenant, even after a restart that recovered the published state from the topics,
//! yields no change at all.
//!
//! The engine also keeps one timer per tenant, at the next instant time alone changes one of its
//! blockers (a due date, an expiry, the end of a freshness or review window).

use crate::config::DEFAULT_TRACKED_EVIDENCE;
use crate::metrics::GatekeeperMetrics;
use crate::rules::{self, Policy};
use crate::state::{RowCounts, TenantState, WrongRow};
use aispm_schemas::keys::{BlockerKey, ReadinessKey};
use aispm_schemas::views::{ViewName, ViewRow};
use aispm_schemas::{Blocker, Readiness, Stage, Timestamp};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, PoisonError, RwLock};

/// Most blocker ids a verdict's record on the readiness topic names (the first in id order):
/// a tenant can have 100k blockers (one per unowned critical finding), and the record must fit a
/// Kafka message (about 60 KB at this many). `ready` counts them all; the blockers topic holds
/// every one, and the readiness API pages through them.
pub(crate) const MAX_READINESS_IDS: usize = 1000;

/// Why a tenant is evaluated (the `trigger` label of `evaluations_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Trigger {
    /// A relevant view change arrived.
    Change,
    /// Its partition finished replaying after an assignment.
    Restore,
    /// A timer fired: a due date, an expiry or a window ended.
    Clock,
    /// The periodic sweep over every tenant.
    Sweep,
}

impl Trigger {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Trigger::Change => "change",
            Trigger::Restore => "restore",
            Trigger::Clock => "clock",
            Trigger::Sweep => "sweep",
        }
    }
}

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// On the blockers topic: the blocker, or `None` (a tombstone) when it resolved.
    Blocker { key: String, value: Option<Blocker> },
    /// On the readiness topic: the verdict, or `None` when the tenant disappeared.
    Readiness {
        key: String,
        value: Option<Readiness>,
    },
}

impl Record {
    pub fn key(&self) -> &str {
        match self {
            Record::Blocker { key, .. } | Record::Readiness { key, .. } => key,
        }
    }
}

/// One record to publish, with what was published before (to undo if delivery fails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub tenant: String,
    pub stage: Stage,
    pub record: Record,
    /// The record timestamp (ms) of the oldest view change this evaluation answered.
    pub since: Option<i64>,
    prev: Prev,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Prev {
    Blocker(Option<Blocker>),
    Readiness(Option<Readiness>),
}

/// What is published for one tenant and stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StagePublished {
    pub blockers: BTreeMap<String, Blocker>,
    pub readiness: Option<Readiness>,
}

/// What is published for one tenant, per stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    pub stages: [StagePublished; 3],
}

/// The verdict the API serves for one tenant and stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageVerdict {
    pub ready: bool,
    pub blockers: Vec<Blocker>,
    /// When this tenant was last evaluated (wall clock).
    pub evaluated_at: Timestamp,
}

/// The API's view of every tenant this instance owns, shared with the HTTP handlers.
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    inner: Arc<RwLock<VerdictsInner>>,
}

#[derive(Debug, Default)]
struct VerdictsInner {
    tenants: BTreeMap<String, Arc<[StageVerdict; 3]>>,
    restoring: bool,
}

impl Verdicts {
    pub fn get(&self, tenant: &str) -> Option<Arc<[StageVerdict; 3]>> {
        self.read().tenants.get(tenant).cloned()
    }

    pub fn all(&self) -> Vec<(String, Arc<[StageVerdict; 3]>)> {
        self.read()
            .tenants
            .iter()
            .map(|(t, v)| (t.clone(), v.clone()))
            .collect()
    }

    /// Whether some assigned partition is still replaying.
    pub fn restoring(&self) -> bool {
        self.read().restoring
    }

    fn set(&self, tenant: &str, v: [StageVerdict; 3]) {
        self.write().tenants.insert(tenant.to_owned(), Arc::new(v));
    }

    fn remove(&self, tenant: &str) {
        self.write().tenants.remove(tenant);
    }

    pub fn set_restoring(&self, restoring: bool) {
        self.write().restoring = restoring;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, VerdictsInner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, VerdictsInner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Moves the `state_rows` gauges from `before` to `after`.
fn count_rows(m: &GatekeeperMetrics, before: &RowCounts, after: &RowCounts) {
    for ((kind, b), (_, a)) in before.iter().zip(after) {
        if a != b {
            let delta =
                i64::try_from(*a).unwrap_or(i64::MAX) - i64::try_from(*b).unwrap_or(i64::MAX);
            m.state_rows.with_label_values(&[*kind]).add(delta);
        }
    }
}

#[derive(Debug, Default)]
struct Tenant {
    state: TenantState,
    partition: i32,
    /// Record timestamp (ms) of the oldest change not yet evaluated.
    pending_since: Option<i64>,
}

/// Tenants, published state, timers and the diff between them.
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    metrics: GatekeeperMetrics,
    verdicts: Verdicts,
    tenants: HashMap<String, Tenant>,
    published: HashMap<String, Published>,
    dirty: HashMap<String, Trigger>,
    timers: BTreeSet<(Timestamp, String)>,
    timer_of: HashMap<String, Timestamp>,
    /// View partitions still replaying: their tenants are not evaluated yet.
    restoring: HashSet<i32>,
    /// Evidence rows each tenant's state tracks.
    tracked_evidence: NonZeroUsize,
}

impl Engine {
    pub fn new(policy: Policy, metrics: GatekeeperMetrics, verdicts: Verdicts) -> Self {
        Engine {
            policy,
            metrics,
            verdicts,
            tenants: HashMap::new(),
            published: HashMap::new(),
            dirty: HashMap::new(),
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
            restoring: HashSet::new(),
            tracked_evidence: DEFAULT_TRACKED_EVIDENCE,
        }
    }

    /// Tracks at most `n` evidence rows per tenant (the newest; see
    /// [`crate::state::EvidenceIndex`]).
    pub fn tracked_evidence(mut self, n: NonZeroUsize) -> Self {
        self.tracked_evidence = n;
        self
    }

    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// Applies one view change of `tenant`, read from view partition `partition` with record
    /// timestamp `ts_ms`. Returns whether anything a rule reads changed.
    pub fn apply(
        &mut self,
        tenant: &str,
        partition: i32,
        view: ViewName,
        key: &str,
        row: Option<ViewRow>,
        ts_ms: Option<i64>,
    ) -> Result<bool, WrongRow> {
        let t = match self.tenants.get_mut(tenant) {
            Some(t) => t,
            None => {
                // A new tenant is evaluated even if this first row is irrelevant: it exists now.
                self.dirty.insert(tenant.to_owned(), Trigger::Change);
                self.tenants
                    .entry(tenant.to_owned())
                    .or_insert_with(|| Tenant {
                        state: TenantState::new(self.tracked_evidence),
                        partition,
                        pending_since: None,
                    })
            }
        };
        t.partition = partition;
        let (rows, untracked) = (t.state.row_counts(), t.state.evidence_untracked());
        let changed = t.state.apply(view, key, row)?;
        count_rows(&self.metrics, &rows, &t.state.row_counts());
        let untracked = t.state.evidence_untracked() - untracked;
        if untracked > 0 {
            self.metrics
                .evidence_untracked
                .with_label_values::<&str>(&[])
                .inc_by(untracked);
        }
        if changed || self.dirty.contains_key(tenant) {
            if let Some(ts) = ts_ms {
                t.pending_since = Some(t.pending_since.map_or(ts, |p| p.min(ts)));
            }
            mark(&mut self.dirty, tenant, Trigger::Change);
        }
        Ok(changed)
    }

    /// Replaces what is recorded as published for tenants this instance does not hold yet
    /// (their state is about to be replayed), from records read back from the topics.
    pub fn recover(
        &mut self,
        blockers: Vec<(String, Option<Blocker>)>,
        readiness: Vec<(String, Option<Readiness>)>,
    ) {
        let mut recovered: HashMap<String, Published> = HashMap::new();
        for (key, value) in blockers {
            let k = match BlockerKey::parse(&key) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "Ignored a blocker record with a malformed key.");
                    continue;
                }
            };
            let slot = &mut recovered.entry(k.tenant.to_owned()).or_default().stages
                [k.stage.index()]
            .blockers;
            match value {
                Some(b) => slot.insert(k.blocker_id.to_owned(), b),
                None => slot.remove(k.blocker_id),
            };
        }
        for (key, value) in readiness {
            let k = match ReadinessKey::parse(&key) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "Ignored a readiness record with a malformed key.");
                    continue;
                }
            };
            recovered.entry(k.tenant.to_owned()).or_default().stages[k.stage.index()].readiness =
                value;
        }
        for (tenant, p) in recovered {
            if self.tenants.contains_key(&tenant) {
                continue;
            }
            self.set_published(&tenant, Some(p));
        }
    }

    /// Marks a view partition as replaying (its tenants wait) or done (its tenants are due).
    pub fn set_restoring(&mut self, partition: i32, restoring: bool) {
        if restoring {
            self.restoring.insert(partition);
        } else if self.restoring.remove(&partition) {
            for (name, t) in &self.tenants {
                if t.partition == partition {
                    mark(&mut self.dirty, name, Trigger::Restore);
                }
            }
        }
        self.metrics
            .partitions_restoring
            .with_label_values::<&str>(&[])
            .set(i64::try_from(self.restoring.len()).unwrap_or(i64::MAX));
    }

    pub fn is_restoring(&self) -> bool {
        !self.restoring.is_empty()
    }

    /// Forgets the tenants of a revoked partition (another instance owns them now).
    pub fn drop_partition(&mut self, partition: i32) {
        self.restoring.remove(&partition);
        let gone: Vec<String> = self
            .tenants
            .iter()
            .filter(|(_, t)| t.partition == partition)
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            if let Some(t) = self.tenants.remove(&name) {
                let rows = t.state.row_counts();
                count_rows(&self.metrics, &rows, &rows.map(|(kind, _)| (kind, 0)));
            }
            self.dirty.remove(&name);
            self.set_timer(&name, None);
            self.set_published(&name, None);
            self.verdicts.remove(&name);
        }
    }

    /// After every assigned partition replayed: tenants published but without any view row.
    /// Those this instance owns (`owns`) are retracted (tombstones for their blockers and
    /// verdicts); the others belong to another instance and are forgotten.
    pub fn retract_orphans(&mut self, owns: impl Fn(&str) -> bool) -> Vec<Change> {
        let orphans: Vec<String> = self
            .published
            .keys()
            .filter(|t| !self.tenants.contains_key(*t))
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for tenant in orphans {
            if owns(&tenant)
                && let Some(p) = self.published.get(&tenant).cloned()
            {
                for stage in Stage::ALL {
                    let sp = &p.stages[stage.index()];
                    for (id, b) in &sp.blockers {
                        changes.push(Change {
                            tenant: tenant.clone(),
                            stage: *stage,
                            record: Record::Blocker {
                                key: b.key(),
                                value: None,
                            },
                            since: None,
                            prev: Prev::Blocker(Some(b.clone())),
                        });
                        let _ = id;
                    }
                    if let Some(r) = &sp.readiness {
                        changes.push(Change {
                            tenant: tenant.clone(),
                            stage: *stage,
                            record: Record::Readiness {
                                key: r.key(),
                                value: None,
                            },
                            since: None,
                            prev: Prev::Readiness(Some(r.clone())),
                        });
                    }
                }
                tracing::info!(%tenant, records = changes.len(), "Retracted the verdicts of a tenant without view rows.");
            }
            self.set_published(&tenant, None);
        }
        changes
    }

    /// Marks every tenant due (the periodic sweep).
    pub fn sweep(&mut self) {
        for name in self.tenants.keys() {
            mark(&mut self.dirty, name, Trigger::Sweep);
        }
    }

    /// The earliest timer.
    pub fn next_timer(&self) -> Option<Timestamp> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Evaluates every tenant due at `now` (changed, timer fired, swept) outside replaying
    /// partitions, and returns the records to publish.
    pub fn evaluate_due(&mut self, now: Timestamp) -> Vec<Change> {
        while let Some((t, name)) = self.timers.first().cloned() {
            // A timer is a rule's deadline: it fires once the deadline is reached.
            if !aispm_schemas::clock::reached(t, now) {
                break;
            }
            self.timers.pop_first();
            self.timer_of.remove(&name);
            mark(&mut self.dirty, &name, Trigger::Clock);
        }
        if self.dirty.is_empty() {
            return Vec::new();
        }
        let started = std::time::Instant::now();
        let due: Vec<(String, Trigger)> = {
            let restoring = &self.restoring;
            let tenants = &self.tenants;
            let mut due = Vec::new();
            self.dirty.retain(|name, trigger| match tenants.get(name) {
                Some(t) if restoring.contains(&t.partition) => true,
                Some(_) => {
                    due.push((name.clone(), *trigger));
                    false
                }
                None => false,
            });
            due
        };
        let mut changes = Vec::new();
        for (name, trigger) in &due {
            self.metrics
                .evaluations
                .with_label_values(&[trigger.as_str()])
                .inc();
            self.evaluate_tenant(name, now, &mut changes);
        }
        if !due.is_empty() {
            self.metrics
                .evaluation_seconds
                .with_label_values::<&str>(&[])
                .observe(started.elapsed().as_secs_f64());
            self.metrics
                .evaluation_tenants
                .with_label_values::<&str>(&[])
                .observe(due.len() as f64);
        }
        changes
    }

    fn evaluate_tenant(&mut self, name: &str, now: Timestamp, changes: &mut Vec<Change>) {
        let Some(t) = self.tenants.get_mut(name) else {
            return;
        };
        let since = t.pending_since.take();
        let eval = rules::evaluate(&t.state, &self.policy, now);
        self.set_timer(name, eval.next_change);
        let mut published = self.published.get(name).cloned().unwrap_or_default();
        let mut verdicts: Vec<StageVerdict> = Vec::with_capacity(3);
        for stage in Stage::ALL {
            let i = stage.index();
            let drafts = &eval.stages[i];
            let sp = &mut published.stages[i];
            let mut ids = Vec::with_capacity(drafts.len());
            for d in drafts {
                let prev = sp.blockers.get(&d.id);
                let b = d.blocker(name, *stage, prev.map_or(now, |p| p.detected_at));
                ids.push(d.id.clone());
                if prev != Some(&b) {
                    let prev = sp.blockers.insert(d.id.clone(), b.clone());
                    changes.push(Change {
                        tenant: name.to_owned(),
                        stage: *stage,
                        record: Record::Blocker {
                            key: b.key(),
                            value: Some(b),
                        },
                        since,
                        prev: Prev::Blocker(prev),
                    });
                }
            }
            let resolved: Vec<String> = sp
                .blockers
                .keys()
                .filter(|id| drafts.binary_search_by(|d| d.id.as_str().cmp(id)).is_err())
                .cloned()
                .collect();
            for id in resolved {
                if let Some(b) = sp.blockers.remove(&id) {
                    changes.push(Change {
                        tenant: name.to_owned(),
                        stage: *stage,
                        record: Record::Blocker {
                            key: b.key(),
                            value: None,
                        },
                        since,
                        prev: Prev::Blocker(Some(b)),
                    });
                }
            }
            let ready = ids.is_empty();
            // The verdict's record names at most MAX_READINESS_IDS blockers (in id order), so it
            // always fits a Kafka message: the blockers topic holds every one of them.
            ids.truncate(MAX_READINESS_IDS);
            let same = sp
                .readiness
                .as_ref()
                .is_some_and(|r| r.ready == ready && r.blocker_ids == ids);
            if !same {
                let r = Readiness {
                    tenant_id: name.to_owned(),
                    stage: *stage,
                    ready,
                    blocker_ids: ids,
                    evaluated_at: now,
                };
                let prev = sp.readiness.replace(r.clone());
                changes.push(Change {
                    tenant: name.to_owned(),
                    stage: *stage,
                    record: Record::Readiness {
                        key: r.key(),
                        value: Some(r),
                    },
                    since,
                    prev: Prev::Readiness(prev),
                });
            }
            verdicts.push(StageVerdict {
                ready,
                blockers: sp.blockers.values().cloned().collect(),
                evaluated_at: now,
            });
        }
        self.set_published(name, Some(published));
        if let Ok(v) = <[StageVerdict; 3]>::try_from(verdicts) {
            self.verdicts.set(name, v);
        }
    }

    /// Undoes a change whose delivery failed, so the next evaluation sends it again.
    pub fn undo(&mut self, change: &Change) {
        let mut p = self
            .published
            .get(&change.tenant)
            .cloned()
            .unwrap_or_default();
        let sp = &mut p.stages[change.stage.index()];
        match (&change.record, &change.prev) {
            (Record::Blocker { value, .. }, Prev::Blocker(prev)) => {
                let id = value
                    .as_ref()
                    .or(prev.as_ref())
                    .map(|b| b.blocker_id.clone());
                if let Some(id) = id
                    && sp.blockers.get(&id) == value.as_ref()
                {
                    match prev {
                        Some(b) => sp.blockers.insert(id, b.clone()),
                        None => sp.blockers.remove(&id),
                    };
                }
            }
            (Record::Readiness { value, .. }, Prev::Readiness(prev))
                if sp.readiness.as_ref() == value.as_ref() =>
            {
                sp.readiness.clone_from(prev);
            }
            _ => {}
        }
        if self.tenants.contains_key(&change.tenant) {
            self.set_published(&change.tenant, Some(p));
            mark(&mut self.dirty, &change.tenant, Trigger::Change);
        }
    }

    fn set_timer(&mut self, name: &str, at: Option<Timestamp>) {
        if let Some(old) = self.timer_of.remove(name) {
            self.timers.remove(&(old, name.to_owned()));
        }
        if let Some(at) = at {
            self.timers.insert((at, name.to_owned()));
            self.timer_of.insert(name.to_owned(), at);
        }
    }

    /// Replaces a tenant's published state, keeping the open-blocker and verdict gauges exact.
    fn set_published(&mut self, tenant: &str, new: Option<Published>) {
        let old = match new {
            Some(p) => self.published.insert(tenant.to_owned(), p),
            None => self.published.remove(tenant),
        };
        let m = &self.metrics;
        let account = |p: &Published, delta: i64| {
            for stage in Stage::ALL {
                let sp = &p.stages[stage.index()];
                for b in sp.blockers.values() {
                    m.blockers_open
                        .with_label_values(&[b.kind.as_str(), stage.as_str()])
                        .add(delta);
                }
                if let Some(r) = &sp.readiness {
                    let verdict = if r.ready { "ready" } else { "unready" };
                    m.tenants
                        .with_label_values(&[stage.as_str(), verdict])
                        .add(delta);
                }
            }
        };
        if let Some(old) = &old {
            account(old, -1);
        }
        if let Some(new) = self.published.get(tenant) {
            account(new, 1);
        }
    }

    /// What is published for `tenant` (tests and diagnostics).
    pub fn published(&self, tenant: &str) -> Option<&Published> {
        self.published.get(tenant)
    }
}

fn mark(dirty: &mut HashMap<String, Trigger>, tenant: &str, trigger: Trigger) {
    match dirty.get_mut(tenant) {
        Some(t) => *t = (*t).min(trigger),
        None => {
            dirty.insert(tenant.to_owned(), trigger);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::{evidence, finding, ready_state};
    use aispm_runtime::metrics::Metrics;
    use aispm_schemas::views::{SignatureState, ValidationRow};
    use aispm_schemas::{BlockerKind, Environment, Risk};

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn engine() -> (Engine, Metrics) {
        let m = Metrics::new("gatekeeper").unwrap();
        let gm = GatekeeperMetrics::new(&m).unwrap();
        (Engine::new(Policy::default(), gm, Verdicts::default()), m)
    }

    fn seed_ready(e: &mut Engine, tenant: &str) {
        let s = ready_state(NOW);
        for (k, r) in &s.stage(Stage::Production).action_paths {
            e.apply(
                tenant,
                0,
                ViewName::Coverage,
                &format!("action_path/{k}"),
                Some(ViewRow::Coverage(r.clone())),
                Some(1),
            )
            .unwrap();
        }
        // Validations and evidence belong to one environment each: one row per environment.
        for stage in Stage::ALL {
            let env = Environment::of(*stage);
            for (k, r) in &s.stage(*stage).validations {
                let row = ValidationRow {
                    environment: Some(env),
                    ..r.clone()
                };
                e.apply(
                    tenant,
                    0,
                    ViewName::Validations,
                    &format!("{k}/{env}"),
                    Some(ViewRow::Validation(row)),
                    Some(1),
                )
                .unwrap();
            }
            // Production's evidence is `ev-1`; the other stages' are their own items.
            let id = if *stage == Stage::Production {
                "ev-1".to_owned()
            } else {
                format!("ev-1-{env}")
            };
            let mut ev = evidence(&id, NOW, false, SignatureState::Verified);
            ev.environment = Some(env);
            e.apply(
                tenant,
                0,
                ViewName::Evidence,
                &id,
                Some(ViewRow::Evidence(ev)),
                Some(1),
            )
            .unwrap();
        }
        for (k, r) in &s.deliveries {
            e.apply(
                tenant,
                0,
                ViewName::ReportDeliveries,
                k,
                Some(ViewRow::Delivery(r.clone())),
                Some(1),
            )
            .unwrap();
        }
        for (k, r) in &s.stage(Stage::Production).controls {
            e.apply(
                tenant,
                0,
                ViewName::Controls,
                k,
                Some(ViewRow::Control(r.clone())),
                Some(1),
            )
            .unwrap();
        }
    }

    fn blockers(changes: &[Change]) -> Vec<(String, bool)> {
        changes
            .iter()
            .filter_map(|c| match &c.record {
                Record::Blocker { key, value } => Some((key.clone(), value.is_some())),
                Record::Readiness { .. } => None,
            })
            .collect()
    }

    #[test]
    fn publishes_only_what_changed() {
        let (mut e, m) = engine();
        seed_ready(&mut e, "acme");
        let first = e.evaluate_due(NOW);
        // Ready everywhere: three readiness records and no blocker.
        assert_eq!(first.len(), 3);
        assert!(
            first
                .iter()
                .all(|c| matches!(&c.record, Record::Readiness { value: Some(r), .. } if r.ready))
        );
        assert_eq!(first[0].since, Some(1));
        // Nothing changed: nothing to publish, even when swept later.
        e.sweep();
        assert!(e.evaluate_due(Timestamp(NOW.0 + 1000)).is_empty());

        // A critical finding without owner: one blocker for pilot and production, two verdicts.
        let f = finding("c1", Risk::Critical, None, None);
        assert_eq!(
            e.apply(
                "acme",
                0,
                ViewName::Findings,
                "c1",
                Some(ViewRow::Finding(f)),
                Some(7)
            ),
            Ok(true)
        );
        let ch = e.evaluate_due(Timestamp(NOW.0 + 2000));
        assert_eq!(
            blockers(&ch),
            [
                ("acme/pilot/critical_finding_unowned/c1".to_owned(), true),
                (
                    "acme/production/critical_finding_unowned/c1".to_owned(),
                    true
                )
            ]
        );
        assert_eq!(ch.len(), 4);
        assert!(ch.iter().all(|c| c.since == Some(7)));
        let text = m.render();
        assert!(text.contains("aispm_gatekeeper_blockers_open{kind=\"critical_finding_unowned\",stage=\"production\"} 1"), "{text}");
        assert!(
            text.contains("aispm_gatekeeper_tenants{stage=\"production\",verdict=\"unready\"} 1")
        );
        assert!(text.contains("aispm_gatekeeper_tenants{stage=\"trial\",verdict=\"ready\"} 1"));

        // The finding closes: a tombstone per stage and the verdicts flip back.
        assert_eq!(
            e.apply("acme", 0, ViewName::Findings, "c1", None, Some(8)),
            Ok(true)
        );
        let ch = e.evaluate_due(Timestamp(NOW.0 + 3000));
        assert_eq!(
            blockers(&ch),
            [
                ("acme/pilot/critical_finding_unowned/c1".to_owned(), false),
                (
                    "acme/production/critical_finding_unowned/c1".to_owned(),
                    false
                )
            ]
        );
        assert!(m.render().contains("aispm_gatekeeper_blockers_open{kind=\"critical_finding_unowned\",stage=\"production\"} 0"));
    }

    #[test]
    fn timers_fire_without_events() {
        let (mut e, _m) = engine();
        seed_ready(&mut e, "acme");
        e.evaluate_due(NOW);
        let stale_at = NOW.plus(std::time::Duration::from_secs(86_400));
        assert_eq!(e.next_timer(), Some(stale_at));
        assert!(e.evaluate_due(Timestamp(stale_at.0 - 1)).is_empty());
        let ch = e.evaluate_due(stale_at);
        assert_eq!(
            blockers(&ch),
            [("acme/production/evidence_stale".to_owned(), true)]
        );
        match &ch[0].record {
            Record::Blocker { value: Some(b), .. } => {
                assert_eq!(b.kind, BlockerKind::EvidenceStale);
                assert_eq!(b.detected_at, stale_at);
                assert_eq!(b.evidence, ["ev-1"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn recovered_state_yields_no_change_and_keeps_detection_times() {
        let (mut a, _m) = engine();
        let f = finding("c1", Risk::Critical, None, None);
        a.apply(
            "acme",
            0,
            ViewName::Findings,
            "c1",
            Some(ViewRow::Finding(f.clone())),
            Some(1),
        )
        .unwrap();
        let published = a.evaluate_due(NOW);
        assert!(!published.is_empty());

        // A new instance reads the topics back, then replays the views, later.
        let (mut b, _m2) = engine();
        let mut bl = vec![];
        let mut rd = vec![];
        for c in &published {
            match &c.record {
                Record::Blocker { key, value } => bl.push((key.clone(), value.clone())),
                Record::Readiness { key, value } => rd.push((key.clone(), value.clone())),
            }
        }
        b.recover(bl, rd);
        b.set_restoring(0, true);
        b.apply(
            "acme",
            0,
            ViewName::Findings,
            "c1",
            Some(ViewRow::Finding(f)),
            Some(1),
        )
        .unwrap();
        assert!(
            b.evaluate_due(Timestamp(NOW.0 + 60_000)).is_empty(),
            "waits for the replay"
        );
        b.set_restoring(0, false);
        assert!(b.evaluate_due(Timestamp(NOW.0 + 60_000)).is_empty());
        assert_eq!(a.published("acme"), b.published("acme"));
        assert!(b.retract_orphans(|_| true).is_empty());
    }

    #[test]
    fn orphans_are_retracted_only_when_owned() {
        let (mut e, _m) = engine();
        let b = Blocker {
            tenant_id: "gone".into(),
            stage: Stage::Production,
            blocker_id: "evidence_stale".into(),
            kind: BlockerKind::EvidenceStale,
            meaning: "m".into(),
            resolution: "r".into(),
            subject: None,
            evidence: vec![],
            detected_at: NOW,
        };
        let mut other = b.clone();
        other.tenant_id = "elsewhere".into();
        e.recover(
            vec![(b.key(), Some(b.clone())), (other.key(), Some(other))],
            vec![],
        );
        let ch = e.retract_orphans(|t| t == "gone");
        assert_eq!(ch.len(), 1);
        assert_eq!(
            ch[0].record,
            Record::Blocker {
                key: b.key(),
                value: None
            }
        );
        assert!(e.published("elsewhere").is_none() && e.published("gone").is_none());
    }

    #[test]
    fn a_failed_delivery_is_sent_again() {
        let (mut e, _m) = engine();
        let f = finding("c1", Risk::Critical, None, None);
        e.apply(
            "acme",
            0,
            ViewName::Findings,
            "c1",
            Some(ViewRow::Finding(f)),
            Some(1),
        )
        .unwrap();
        let ch = e.evaluate_due(NOW);
        for c in &ch {
            e.undo(c);
        }
        let again = e.evaluate_due(NOW);
        assert_eq!(
            again.iter().map(|c| c.record.clone()).collect::<Vec<_>>(),
            ch.iter().map(|c| c.record.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn revoked_partitions_are_forgotten() {
        let (mut e, m) = engine();
        seed_ready(&mut e, "acme");
        e.evaluate_due(NOW);
        assert!(e.verdicts.get("acme").is_some());
        let rows = |m: &Metrics, kind: &str| {
            let line = format!("aispm_gatekeeper_state_rows{{kind=\"{kind}\"}} ");
            m.render()
                .lines()
                .find_map(|l| l.strip_prefix(line.as_str()).map(str::to_owned))
        };
        // One evidence item per stage; the four action paths in every stage.
        assert_eq!(rows(&m, "evidence").as_deref(), Some("3"));
        assert_eq!(rows(&m, "action_paths").as_deref(), Some("12"));
        e.drop_partition(0);
        assert_eq!(e.tenant_count(), 0);
        assert!(e.verdicts.get("acme").is_none());
        assert!(e.next_timer().is_none());
        assert_eq!(rows(&m, "evidence").as_deref(), Some("0"));
        assert_eq!(rows(&m, "action_paths").as_deref(), Some("0"));
    }

    #[test]
    fn tenants_track_the_configured_evidence_rows() {
        let (e, m) = engine();
        let mut e = e.tracked_evidence(NonZeroUsize::new(2).unwrap());
        for i in 0..5 {
            let id = format!("ev-{i}");
            let ev = evidence(&id, Timestamp(NOW.0 + i), false, SignatureState::Verified);
            e.apply(
                "acme",
                0,
                ViewName::Evidence,
                &id,
                Some(ViewRow::Evidence(ev)),
                None,
            )
            .unwrap();
        }
        let text = m.render();
        assert!(
            text.contains("aispm_gatekeeper_state_rows{kind=\"evidence\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("aispm_gatekeeper_evidence_untracked_total 3"),
            "{text}"
        );
    }
}
