//! Per-tenant state folded from `aispm.views.v1`: the rows the blocker rules read, by view and
//! row key. Only what a rule can use is kept, so memory follows what can block, not the event
//! volume:
//!
//! - findings: open findings a rule iterates (high or critical, or carrying an exception) as a
//!   compact [`Finding`]; every other open finding only as a 128-bit fingerprint of its id,
//!   which is all the `exception_expired` rule asks of it (see [`OpenFindings`]);
//! - exceptions that can still block (unrevoked with an expiry and a finding; break-glass not
//!   yet reviewed);
//! - per stage ([`StageFacts`]), only what the stage's own environment shows: action-path
//!   coverage, controls, the latest validation per check, and the newest `K` real evidence rows,
//!   enough to know the newest one (see [`EvidenceIndex`]);
//! - the latest delivery per report, for every stage.

use crate::config::DEFAULT_TRACKED_EVIDENCE;
use aispm_schemas::clock::{self, FindingTimes};
use aispm_schemas::views::{
    ControlRow, CoverageKind, CoverageRow, DeliveryRow, ExceptionKind, ExceptionRow, FindingRow,
    FindingStatus, ValidationRow, ViewName, ViewRow,
};
use aispm_schemas::{Risk, Stage, Timestamp};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};

/// At most this many ids are listed behind one blocker (the first, in row order).
pub(crate) const MAX_EVIDENCE_IDS: usize = 50;

/// The stages a finding row counts for ([`FindingRow::counts_for`]), a bit per
/// [`Stage::index`] (`rules::Draft::stages`).
pub(crate) fn stages_of(r: &FindingRow) -> u8 {
    Stage::ALL
        .iter()
        .filter(|s| r.counts_for(**s))
        .fold(0, |m, s| m | 1 << s.index())
}

/// The state of one tenant, as the blocker rules see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantState {
    /// Open findings, by finding id; closed ones are dropped.
    pub open_findings: OpenFindings,
    /// Exceptions that can still block: unrevoked exceptions with an expiry and a finding, and
    /// break-glass events not yet reviewed.
    pub exceptions: BTreeMap<String, ExceptionRow>,
    /// Latest delivery per report id.
    pub deliveries: BTreeMap<String, DeliveryRow>,
    /// The facts each stage reads of its own environment (trial, pilot, production): every
    /// coverage, control, evidence and validation row as [`ViewRow::for_stage`] restricts it.
    pub stages: [StageFacts; 3],
}

/// What one stage reads of its own environment's facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageFacts {
    /// Coverage rows of kind `action_path`, by action kind (`file`, `command`, …; the row key
    /// is `action_path/{kind}`).
    pub action_paths: BTreeMap<String, CoverageRow>,
    /// Control rows by row key (`{control_id}` or `(none):{action_kind}`).
    pub controls: BTreeMap<String, ControlRow>,
    /// Real evidence (not synthetic, signature not invalid): the newest rows, by recording time.
    pub evidence: EvidenceIndex,
    /// Latest validation per row key (`{check_kind}/{environment}/{subject}`).
    pub validations: BTreeMap<String, ValidationRow>,
}

impl StageFacts {
    fn new(tracked_evidence: NonZeroUsize) -> Self {
        StageFacts {
            evidence: EvidenceIndex::new(tracked_evidence),
            ..StageFacts::default()
        }
    }

    /// Applies a row already restricted to this stage (`None`: none of it counts here).
    fn apply(&mut self, view: ViewName, key: &str, row: Option<ViewRow>) -> bool {
        match (view, row) {
            (ViewName::Coverage, Some(ViewRow::Coverage(r)))
                if r.kind == CoverageKind::ActionPath =>
            {
                let path = key.strip_prefix(ACTION_PATH).unwrap_or(&r.id).to_owned();
                replace(&mut self.action_paths, &path, Some(r))
            }
            (ViewName::Coverage, _) => match key.strip_prefix(ACTION_PATH) {
                Some(path) => replace(&mut self.action_paths, path, None),
                None => false,
            },
            (ViewName::Controls, Some(ViewRow::Control(r))) => {
                replace(&mut self.controls, key, Some(r))
            }
            (ViewName::Controls, _) => replace(&mut self.controls, key, None),
            (ViewName::Evidence, row) => {
                let before = self.evidence.newest().owned();
                match row {
                    Some(ViewRow::Evidence(r)) if clock::evidence_counts(&r) => {
                        self.evidence.upsert(key, r.recorded_at);
                    }
                    _ => self.evidence.remove(key),
                }
                before != self.evidence.newest().owned()
            }
            (ViewName::Validations, Some(ViewRow::Validation(r))) => {
                replace(&mut self.validations, key, Some(r))
            }
            (ViewName::Validations, _) => replace(&mut self.validations, key, None),
            _ => false,
        }
    }
}

/// Row-key prefix of action-path coverage rows.
const ACTION_PATH: &str = "action_path/";

/// An open finding as the rules and the blockers they raise read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub finding_id: Arc<str>,
    /// Shared by every finding of the tenant with the same title (rule titles repeat).
    pub title: Arc<str>,
    pub severity: Risk,
    pub owner: Option<Arc<str>>,
    pub due_at: Option<Timestamp>,
    pub exception_id: Option<Box<str>>,
    pub exception_expires_at: Option<Timestamp>,
    /// The row's event ids without empty ones and repeats, in order, at most
    /// [`MAX_EVIDENCE_IDS`]: a blocker lists no more, so its list is the same as from the row.
    pub event_ids: Box<[Box<str>]>,
    /// The stages it counts for ([`stages_of`]: those of the environments that raised it).
    pub stages: u8,
}

impl Finding {
    /// What the clock rules ([`aispm_schemas::clock`]) read of this open finding.
    pub fn times(&self) -> FindingTimes {
        FindingTimes {
            severity: self.severity,
            open: true,
            due_at: self.due_at,
            closed_at: None,
            exception: self
                .exception_id
                .as_ref()
                .map(|_| self.exception_expires_at),
        }
    }
}

/// The open findings of a tenant.
///
/// Which rules read findings, and what they read:
/// - `critical_finding_unowned` iterates critical findings (owner, due date, ids);
/// - `finding_overdue` iterates high and critical findings (due date, exception, ids);
/// - `exception_expired` iterates findings with an `exception_id` (the finding's side), and
///   looks up the finding an exception row names (the exception's side): whether it is open,
///   and which exception it carries.
///
/// So an open finding is kept in full iff it is high or critical or carries an exception id.
/// Any other open finding is kept only as a fingerprint: a lookup then answers "open, carrying
/// no exception", which is everything the exception's side reads of it. That stays exact
/// whichever of the finding row and the exception row naming it arrives first. Fingerprints are
/// 128 bits, keyed per process (ids are chosen by event senders, the keys are not), so two ids
/// sharing one is not a practical concern; if it happened, a lookup of an id never opened
/// could answer "open" (a spurious `exception_expired`, failing closed).
#[derive(Debug, Clone, Default)]
pub struct OpenFindings {
    rows: BTreeMap<Arc<str>, Finding>,
    others: HashSet<u128>,
    strings: Interner,
}

impl PartialEq for OpenFindings {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows && self.others == other.others
    }
}

impl Eq for OpenFindings {}

/// Whether a rule iterates this open finding (and so needs it in full).
pub(crate) fn finding_kept_in_full(r: &FindingRow) -> bool {
    clock::severity_can_be_overdue(r.severity) || r.exception_id.is_some()
}

impl OpenFindings {
    /// Applies the finding row `key`: an open one is kept (in full or as a fingerprint), a
    /// closed one dropped. Returns whether what a rule reads changed.
    pub fn upsert(&mut self, key: &str, r: &FindingRow) -> bool {
        if r.status != FindingStatus::Open {
            return self.remove(key);
        }
        if !finding_kept_in_full(r) {
            let was_full = self.rows.remove(key).is_some();
            return self.others.insert(fingerprint(key)) || was_full;
        }
        let was_other = self.others.remove(&fingerprint(key));
        let (id, f) = self.compact(key, r);
        if self.rows.get(key) == Some(&f) {
            return was_other;
        }
        self.rows.insert(id, f);
        true
    }

    /// Drops the finding `key`; whether it was open.
    pub fn remove(&mut self, key: &str) -> bool {
        let was_full = self.rows.remove(key).is_some();
        self.others.remove(&fingerprint(key)) || was_full
    }

    /// The open finding `key` if it is kept in full.
    pub fn get(&self, key: &str) -> Option<&Finding> {
        self.rows.get(key)
    }

    /// Open findings kept in full (high or critical, or carrying an exception), by id.
    pub fn values(&self) -> impl Iterator<Item = &Finding> {
        self.rows.values()
    }

    /// If the finding `key` is open: the exception it carries (`Some(None)`: none).
    pub fn exception_of(&self, key: &str) -> Option<Option<&str>> {
        match self.rows.get(key) {
            Some(f) => Some(f.exception_id.as_deref()),
            None => self.others.contains(&fingerprint(key)).then_some(None),
        }
    }

    /// Findings kept in full.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.others.is_empty()
    }

    /// Open findings kept only as a fingerprint.
    pub fn fingerprints(&self) -> usize {
        self.others.len()
    }

    pub fn clear(&mut self) {
        self.rows.clear();
        self.others.clear();
    }

    fn compact(&mut self, key: &str, r: &FindingRow) -> (Arc<str>, Finding) {
        let id: Arc<str> = match self.rows.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => Arc::from(key),
        };
        let finding_id = if r.finding_id == key {
            id.clone()
        } else {
            Arc::from(r.finding_id.as_str())
        };
        let mut seen = HashSet::new();
        let event_ids = r
            .event_ids
            .iter()
            .filter(|e| !e.is_empty() && seen.insert(e.as_str()))
            .take(MAX_EVIDENCE_IDS)
            .map(|e| Box::from(e.as_str()))
            .collect();
        let f = Finding {
            finding_id,
            title: self.strings.get(&r.title),
            severity: r.severity,
            owner: r.owner.as_deref().map(|o| self.strings.get(o)),
            due_at: r.due_at,
            exception_id: r.exception_id.as_deref().map(Box::from),
            exception_expires_at: r.exception_expires_at,
            event_ids,
            stages: stages_of(r),
        };
        (id, f)
    }
}

/// A finding id's fingerprint: two SipHash-1-3 values under independent per-process keys.
fn fingerprint(id: &str) -> u128 {
    static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    let (a, b) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
    (u128::from(a.hash_one(id)) << 64) | u128::from(b.hash_one(id))
}

/// One shared copy of each title and owner. Strings no finding uses any more are swept when
/// the set has doubled since the last sweep.
#[derive(Debug, Clone, Default)]
struct Interner {
    set: HashSet<Arc<str>>,
    sweep_at: usize,
}

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.set.get(s) {
            return a.clone();
        }
        if self.set.len() >= self.sweep_at {
            self.set.retain(|a| Arc::strong_count(a) > 1);
            self.sweep_at = (2 * self.set.len()).max(64);
        }
        let a: Arc<str> = Arc::from(s);
        self.set.insert(a.clone());
        a
    }
}

/// The newest evidence that counts for freshness, as far as the index knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Newest<'a> {
    /// No real evidence has been recorded (or all of it was removed or invalidated).
    None,
    /// The newest real evidence: its recording time and id.
    Known(Timestamp, &'a str),
    /// Every tracked row was removed or invalidated after older rows had been left untracked:
    /// the newest real evidence, if any remains, is unknown. The rules treat it as stale.
    Unknown,
}

impl Newest<'_> {
    fn owned(self) -> Option<Option<(Timestamp, String)>> {
        match self {
            Newest::None => Some(None),
            Newest::Known(t, id) => Some(Some((t, id.to_owned()))),
            Newest::Unknown => None,
        }
    }
}

/// The evidence that counts for freshness: only the newest `K` rows of the tenant (by
/// recording time, then id), since the rules read only the newest.
///
/// Invariant: every counting row not tracked sorts at or below the *floor*, the newest row ever
/// left untracked, and every tracked row sorts above it. So while anything is tracked, the
/// newest tracked row is the exact newest. An upsert at or below the floor is not tracked
/// (counted in [`EvidenceIndex::untracked`]); one above it is, and when that makes more than
/// `K`, the oldest tracked row becomes the new floor.
///
/// When removals and invalidations empty the tracked set: if nothing was ever left untracked
/// there is no evidence; if the floor row still exists unchanged it is the exact newest (every
/// untracked row sorts at or below it); otherwise the newest is unknown ([`Newest::Unknown`])
/// and the rules fail closed (`evidence_stale`) until newer evidence arrives. A replay of the
/// compacted views topic (a restart) rebuilds the index exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceIndex {
    limit: NonZeroUsize,
    by_id: HashMap<Box<str>, Timestamp>,
    by_time: BTreeSet<(Timestamp, Box<str>)>,
    floor: Option<Floor>,
    untracked: u64,
}

/// The newest evidence row ever left untracked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Floor {
    at: Timestamp,
    id: Box<str>,
    /// The row still counts, with this recording time.
    live: bool,
}

impl Default for EvidenceIndex {
    fn default() -> Self {
        EvidenceIndex::new(DEFAULT_TRACKED_EVIDENCE)
    }
}

impl EvidenceIndex {
    /// An index tracking at most `limit` rows.
    pub fn new(limit: NonZeroUsize) -> Self {
        EvidenceIndex {
            limit,
            by_id: HashMap::new(),
            by_time: BTreeSet::new(),
            floor: None,
            untracked: 0,
        }
    }

    /// Records that evidence `id`, recorded at `recorded_at`, counts.
    pub fn upsert(&mut self, id: &str, recorded_at: Timestamp) {
        self.untrack(id);
        if let Some(f) = &mut self.floor {
            match (recorded_at, id).cmp(&(f.at, &*f.id)) {
                std::cmp::Ordering::Greater => {
                    if *f.id == *id {
                        f.live = false;
                    }
                }
                std::cmp::Ordering::Equal => {
                    // The floor row itself, unchanged (again): it is not tracked.
                    if !f.live {
                        f.live = true;
                        self.untracked += 1;
                    }
                    return;
                }
                std::cmp::Ordering::Less => {
                    if *f.id == *id {
                        f.live = false;
                    }
                    self.untracked += 1;
                    return;
                }
            }
        }
        self.by_id.insert(id.into(), recorded_at);
        self.by_time.insert((recorded_at, id.into()));
        if self.by_time.len() > self.limit.get()
            && let Some((at, oldest)) = self.by_time.pop_first()
        {
            self.by_id.remove(&oldest);
            self.floor = Some(Floor {
                at,
                id: oldest,
                live: true,
            });
            self.untracked += 1;
        }
    }

    /// Records that evidence `id` no longer counts (deleted, synthetic or invalidly signed).
    pub fn remove(&mut self, id: &str) {
        self.untrack(id);
        if let Some(f) = &mut self.floor
            && *f.id == *id
        {
            f.live = false;
        }
    }

    fn untrack(&mut self, id: &str) {
        if let Some(t) = self.by_id.remove(id) {
            self.by_time.remove(&(t, Box::from(id)));
        }
    }

    /// The newest evidence (latest recording time, then greatest id).
    pub fn newest(&self) -> Newest<'_> {
        match (self.by_time.last(), &self.floor) {
            (Some((t, id)), _) => Newest::Known(*t, id),
            (None, None) => Newest::None,
            (None, Some(f)) if f.live => Newest::Known(f.at, &f.id),
            (None, Some(_)) => Newest::Unknown,
        }
    }

    /// Rows tracked.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Upserts left untracked so far (older than what is tracked, or evicted by newer rows).
    pub fn untracked(&self) -> u64 {
        self.untracked
    }
}

/// A view row that does not belong to the view it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongRow {
    pub view: ViewName,
    pub row: ViewName,
}

/// How many rows a tenant's state holds, by kind (the `kind` label of `state_rows`).
pub(crate) type RowCounts = [(&'static str, usize); 8];

impl TenantState {
    /// An empty state tracking at most `tracked_evidence` evidence rows per stage.
    pub fn new(tracked_evidence: NonZeroUsize) -> Self {
        TenantState {
            stages: std::array::from_fn(|_| StageFacts::new(tracked_evidence)),
            ..TenantState::default()
        }
    }

    /// The facts `stage` reads.
    pub fn stage(&self, stage: Stage) -> &StageFacts {
        &self.stages[stage.index()]
    }

    /// Evidence upserts left untracked so far, over every stage.
    pub fn evidence_untracked(&self) -> u64 {
        self.stages.iter().map(|f| f.evidence.untracked()).sum()
    }

    /// Rows held, by kind (a row held for several stages counts once per stage).
    pub fn row_counts(&self) -> RowCounts {
        let sum = |f: fn(&StageFacts) -> usize| self.stages.iter().map(f).sum::<usize>();
        [
            ("action_paths", sum(|f| f.action_paths.len())),
            ("controls", sum(|f| f.controls.len())),
            ("findings", self.open_findings.len()),
            ("finding_fingerprints", self.open_findings.fingerprints()),
            ("exceptions", self.exceptions.len()),
            ("evidence", sum(|f| f.evidence.len())),
            ("validations", sum(|f| f.validations.len())),
            ("deliveries", self.deliveries.len()),
        ]
    }

    /// Applies the upsert (`Some(row)`) or delete (`None`) of the row `key` of `view`.
    /// Returns whether anything a rule reads changed.
    pub fn apply(
        &mut self,
        view: ViewName,
        key: &str,
        row: Option<ViewRow>,
    ) -> Result<bool, WrongRow> {
        if let Some(r) = &row
            && r.view() != view
        {
            return Err(WrongRow {
                view,
                row: r.view(),
            });
        }
        Ok(match (view, row) {
            // Facts of an environment: each stage takes the row as restricted to it.
            (
                ViewName::Coverage
                | ViewName::Controls
                | ViewName::Evidence
                | ViewName::Validations,
                row,
            ) => {
                let mut changed = false;
                for (facts, stage) in self.stages.iter_mut().zip(Stage::ALL) {
                    let own = row.as_ref().and_then(|r| r.for_stage(*stage));
                    changed |= facts.apply(view, key, own);
                }
                changed
            }
            (ViewName::Findings, Some(ViewRow::Finding(r))) => self.open_findings.upsert(key, &r),
            (ViewName::Findings, None) => self.open_findings.remove(key),
            (ViewName::Exceptions, Some(ViewRow::Exception(r))) => {
                let keep = exception_can_block(&r).then_some(r);
                replace(&mut self.exceptions, key, keep)
            }
            (ViewName::Exceptions, None) => replace(&mut self.exceptions, key, None),
            (ViewName::ReportDeliveries, Some(ViewRow::Delivery(r))) => {
                replace(&mut self.deliveries, key, Some(r))
            }
            (ViewName::ReportDeliveries, None) => replace(&mut self.deliveries, key, None),
            // Every (view, row) pair was matched above once the row's view equals `view`.
            (_, Some(_)) => false,
        })
    }
}

/// An exception row a rule may still act on.
fn exception_can_block(r: &ExceptionRow) -> bool {
    match r.kind {
        ExceptionKind::BreakGlass => r.reviewed_at.is_none(),
        ExceptionKind::Exception => !r.revoked && r.expires_at.is_some() && r.finding_id.is_some(),
    }
}

/// Sets or removes `key`; whether the map changed.
fn replace<T: PartialEq>(map: &mut BTreeMap<String, T>, key: &str, value: Option<T>) -> bool {
    match value {
        Some(v) => {
            if map.get(key) == Some(&v) {
                false
            } else {
                map.insert(key.to_owned(), v);
                true
            }
        }
        None => map.remove(key).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::{evidence, exception, finding};
    use crate::rules::{Policy, evaluate};
    use aispm_schemas::views::SignatureState;
    use aispm_schemas::{BlockerKind, Environment};
    use rand::{Rng, SeedableRng};

    fn upsert_finding(s: &mut TenantState, r: &FindingRow) -> Result<bool, WrongRow> {
        s.apply(
            ViewName::Findings,
            &r.finding_id,
            Some(ViewRow::Finding(r.clone())),
        )
    }

    fn limit(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn a_medium_finding_is_kept_only_as_a_fingerprint() {
        let mut s = TenantState::default();
        let m = finding("m1", Risk::Medium, Some("bob"), Some(Timestamp(0)));
        assert_eq!(upsert_finding(&mut s, &m), Ok(true));
        assert_eq!(upsert_finding(&mut s, &m), Ok(false));
        // Nothing a rule iterates, but the exception rule can still look it up.
        assert_eq!(s.open_findings.len(), 0);
        assert_eq!(s.open_findings.values().count(), 0);
        assert!(s.open_findings.get("m1").is_none());
        assert_eq!(s.open_findings.fingerprints(), 1);
        assert_eq!(s.open_findings.exception_of("m1"), Some(None));
        assert_eq!(s.open_findings.exception_of("m2"), None);
        // Fields no rule reads change nothing.
        let mut again = m.clone();
        again.occurrences = 7;
        again.event_ids.push("ev-2".into());
        assert_eq!(upsert_finding(&mut s, &again), Ok(false));

        // An exception naming it after the finding arrived still sees it open.
        let expires = Timestamp(1_000);
        let x = exception(
            "x1",
            ExceptionKind::Exception,
            Timestamp(0),
            Some(expires),
            Some("m1"),
        );
        assert_eq!(
            s.apply(ViewName::Exceptions, "x1", Some(ViewRow::Exception(x))),
            Ok(true)
        );
        let e = evaluate(&s, &Policy::default(), expires);
        let d: Vec<_> = e.stages[2]
            .iter()
            .filter(|d| d.kind == BlockerKind::ExceptionExpired)
            .collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].evidence, ["x1", "m1", "ev-x1"]);

        // Carrying an exception, it is kept in full; without one again, as a fingerprint.
        let mut covered = m.clone();
        covered.exception_id = Some("x2".into());
        covered.exception_expires_at = Some(Timestamp(2_000));
        assert_eq!(upsert_finding(&mut s, &covered), Ok(true));
        assert_eq!(s.open_findings.fingerprints(), 0);
        assert_eq!(s.open_findings.exception_of("m1"), Some(Some("x2")));
        assert_eq!(upsert_finding(&mut s, &m), Ok(true));
        assert_eq!(
            (s.open_findings.len(), s.open_findings.fingerprints()),
            (0, 1)
        );

        // Closed, it is gone.
        let mut closed = m;
        closed.status = FindingStatus::Closed;
        assert_eq!(upsert_finding(&mut s, &closed), Ok(true));
        assert!(s.open_findings.is_empty());
        assert_eq!(s.open_findings.exception_of("m1"), None);
        assert_eq!(upsert_finding(&mut s, &closed), Ok(false));
        assert_eq!(s.apply(ViewName::Findings, "m1", None), Ok(false));
    }

    #[test]
    fn a_high_finding_is_kept_compact_until_it_closes() {
        let mut s = TenantState::default();
        let mut h1 = finding("h1", Risk::High, Some("bob"), Some(Timestamp(9)));
        h1.title = "Allowed without approval".into();
        h1.event_ids = vec!["e1".into(), String::new(), "e2".into(), "e1".into()];
        h1.event_ids.extend((0..100).map(|i| format!("e{i}")));
        let mut h2 = h1.clone();
        h2.finding_id = "h2".into();
        assert_eq!(upsert_finding(&mut s, &h1), Ok(true));
        assert_eq!(upsert_finding(&mut s, &h2), Ok(true));
        let (f1, f2) = (
            s.open_findings.get("h1").unwrap(),
            s.open_findings.get("h2").unwrap(),
        );
        // One copy of a title or owner per tenant.
        assert!(Arc::ptr_eq(&f1.title, &f2.title));
        assert!(Arc::ptr_eq(
            f1.owner.as_ref().unwrap(),
            f2.owner.as_ref().unwrap()
        ));
        assert_eq!(&*f1.finding_id, "h1");
        assert_eq!(f1.due_at, Some(Timestamp(9)));
        // Repeats and empty ids dropped, at most as many as a blocker lists.
        assert_eq!(f1.event_ids.len(), MAX_EVIDENCE_IDS);
        assert_eq!(
            f1.event_ids[..4].iter().map(|e| &**e).collect::<Vec<_>>(),
            ["e1", "e2", "e0", "e3"]
        );

        let mut closed = h1.clone();
        closed.status = FindingStatus::Closed;
        assert_eq!(upsert_finding(&mut s, &closed), Ok(true));
        assert!(s.open_findings.get("h1").is_none());
        assert_eq!(s.open_findings.exception_of("h1"), None);
        assert_eq!(s.open_findings.len(), 1);
        assert_eq!(s.apply(ViewName::Findings, "h2", None), Ok(true));
        assert!(s.open_findings.is_empty());
        // Titles no finding uses any more are eventually let go.
        for i in 0..200 {
            let mut f = finding(&format!("c{i}"), Risk::Critical, None, None);
            f.title = format!("title {i}");
            upsert_finding(&mut s, &f).unwrap();
            s.apply(ViewName::Findings, &f.finding_id, None).unwrap();
        }
        assert!(s.open_findings.strings.set.len() <= 128);
    }

    #[test]
    fn evidence_keeps_the_newest_k_and_knows_the_newest() {
        let mut ix = EvidenceIndex::new(limit(3));
        for i in 1..=4 {
            ix.upsert(&format!("e{i}"), Timestamp(i * 10));
        }
        // K + 1 upserts keep K; the oldest became the floor.
        assert_eq!((ix.len(), ix.untracked()), (3, 1));
        assert_eq!(ix.newest(), Newest::Known(Timestamp(40), "e4"));
        // Older than everything tracked: not tracked.
        ix.upsert("e0", Timestamp(5));
        assert_eq!((ix.len(), ix.untracked()), (3, 2));
        // Newer: tracked, the oldest tracked (e2) becomes the floor.
        ix.upsert("e5", Timestamp(50));
        assert_eq!((ix.len(), ix.untracked()), (3, 3));
        assert_eq!(ix.newest(), Newest::Known(Timestamp(50), "e5"));
        for id in ["e5", "e4"] {
            ix.remove(id);
        }
        assert_eq!(ix.newest(), Newest::Known(Timestamp(30), "e3"));
        // Tracked set emptied, floor row intact: it is the exact newest.
        ix.remove("e3");
        assert!(ix.is_empty());
        assert_eq!(ix.newest(), Newest::Known(Timestamp(20), "e2"));
        // The floor row invalidated too: the newest is unknown (e1 or e0 may remain).
        ix.remove("e2");
        assert_eq!(ix.newest(), Newest::Unknown);
        // The same row counting again, unchanged, is the newest again.
        ix.upsert("e2", Timestamp(20));
        assert_eq!(ix.newest(), Newest::Known(Timestamp(20), "e2"));
        ix.remove("e2");
        // Newer evidence makes it known again.
        ix.upsert("e6", Timestamp(60));
        assert_eq!(ix.newest(), Newest::Known(Timestamp(60), "e6"));
        // Nothing ever left untracked: an emptied index has no evidence.
        let mut ix = EvidenceIndex::new(limit(3));
        ix.upsert("a", Timestamp(1));
        ix.remove("a");
        assert_eq!(ix.newest(), Newest::None);
    }

    #[test]
    fn an_unknown_newest_evidence_fails_closed() {
        let mut s = TenantState::new(limit(2));
        let now = Timestamp(100);
        for (id, at) in [("e1", 97), ("e2", 98), ("e3", 99)] {
            let ev = evidence(id, Timestamp(at), false, SignatureState::Verified);
            s.apply(ViewName::Evidence, id, Some(ViewRow::Evidence(ev)))
                .unwrap();
        }
        let stale = |s: &TenantState| {
            evaluate(s, &Policy::default(), now).stages[2]
                .iter()
                .find(|d| d.kind == BlockerKind::EvidenceStale)
                .cloned()
        };
        assert!(stale(&s).is_none());
        // A trust root rotation invalidates everything tracked, and then the floor.
        for id in ["e3", "e2", "e1"] {
            let ev = evidence(id, Timestamp(0), false, SignatureState::Invalid);
            assert_eq!(
                s.apply(ViewName::Evidence, id, Some(ViewRow::Evidence(ev))),
                Ok(true),
                "{id}"
            );
        }
        assert_eq!(
            s.stage(Stage::Production).evidence.newest(),
            Newest::Unknown
        );
        let d = stale(&s).unwrap();
        assert!(
            d.meaning
                .starts_with("The newest production evidence is unknown"),
            "{}",
            d.meaning
        );
        assert!(d.evidence.is_empty());
    }

    /// The bounded index against every row kept: whenever it knows the newest, it is the
    /// true newest; it is unknown only when rows were left untracked.
    #[test]
    fn bounded_evidence_agrees_with_an_unbounded_index() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for k in [1, 2, 5] {
            let mut ix = EvidenceIndex::new(limit(k));
            let mut all: HashMap<String, Timestamp> = HashMap::new();
            for _ in 0..20_000 {
                let id = format!("e{}", rng.gen_range(0..30));
                if rng.gen_bool(0.3) {
                    ix.remove(&id);
                    all.remove(&id);
                } else {
                    let at = Timestamp(rng.gen_range(0..50));
                    ix.upsert(&id, at);
                    all.insert(id, at);
                }
                let truth = all.iter().map(|(id, t)| (*t, id.as_str())).max();
                match ix.newest() {
                    Newest::Known(t, id) => assert_eq!(Some((t, id)), truth),
                    Newest::None => assert_eq!(truth, None),
                    Newest::Unknown => assert!(ix.untracked() > 0),
                }
            }
        }
    }

    #[test]
    fn keeps_only_what_can_block() {
        let mut s = TenantState::default();
        let f = finding("f1", Risk::High, None, None);
        assert_eq!(
            s.apply(ViewName::Findings, "f1", Some(ViewRow::Finding(f.clone()))),
            Ok(true)
        );
        assert_eq!(
            s.apply(ViewName::Findings, "f1", Some(ViewRow::Finding(f.clone()))),
            Ok(false)
        );
        let mut closed = f;
        closed.status = FindingStatus::Closed;
        assert_eq!(
            s.apply(ViewName::Findings, "f1", Some(ViewRow::Finding(closed))),
            Ok(true)
        );
        assert!(s.open_findings.is_empty());

        let mut bg = exception("bg1", ExceptionKind::BreakGlass, Timestamp(0), None, None);
        assert_eq!(
            s.apply(
                ViewName::Exceptions,
                "bg1",
                Some(ViewRow::Exception(bg.clone()))
            ),
            Ok(true)
        );
        bg.reviewed_at = Some(Timestamp(5));
        assert_eq!(
            s.apply(ViewName::Exceptions, "bg1", Some(ViewRow::Exception(bg))),
            Ok(true)
        );
        assert!(s.exceptions.is_empty());

        // Synthetic and invalidly signed evidence does not count for freshness.
        let ev = evidence("e1", Timestamp(10), true, SignatureState::Verified);
        assert_eq!(
            s.apply(ViewName::Evidence, "e1", Some(ViewRow::Evidence(ev))),
            Ok(false)
        );
        let ev = evidence("e2", Timestamp(10), false, SignatureState::Invalid);
        assert_eq!(
            s.apply(ViewName::Evidence, "e2", Some(ViewRow::Evidence(ev))),
            Ok(false)
        );
        let ev = evidence("e3", Timestamp(10), false, SignatureState::Unsigned);
        assert_eq!(
            s.apply(ViewName::Evidence, "e3", Some(ViewRow::Evidence(ev))),
            Ok(true)
        );
        let ev = evidence("e4", Timestamp(5), false, SignatureState::Verified);
        assert_eq!(
            s.apply(ViewName::Evidence, "e4", Some(ViewRow::Evidence(ev))),
            Ok(false)
        );
        let production = |s: &TenantState| s.stage(Stage::Production).evidence.newest().owned();
        assert_eq!(production(&s), Newest::Known(Timestamp(10), "e3").owned());
        assert_eq!(s.apply(ViewName::Evidence, "e3", None), Ok(true));
        assert_eq!(production(&s), Newest::Known(Timestamp(5), "e4").owned());
        assert_eq!(s.stage(Stage::Production).evidence.len(), 1);
        // Evidence counts for its own stage only.
        assert_eq!(s.stage(Stage::Trial).evidence.len(), 0);
    }

    #[test]
    fn action_paths_are_keyed_by_action_kind() {
        let mut s = TenantState::default();
        let mut row = crate::rules::tests::path("git", 3, 3);
        assert_eq!(
            s.apply(
                ViewName::Coverage,
                "action_path/git",
                Some(ViewRow::Coverage(row.clone()))
            ),
            Ok(true)
        );
        assert!(s.stage(Stage::Production).action_paths.contains_key("git"));
        // Other coverage kinds are not kept.
        row.kind = CoverageKind::Repo;
        assert_eq!(
            s.apply(ViewName::Coverage, "repo/git", Some(ViewRow::Coverage(row))),
            Ok(false)
        );
        assert_eq!(s.apply(ViewName::Coverage, "repo/git", None), Ok(false));
        assert_eq!(
            s.apply(ViewName::Coverage, "action_path/git", None),
            Ok(true)
        );
        assert!(s.stages.iter().all(|f| f.action_paths.is_empty()));

        // A row whose decisions were all made in trial exists for trial only, with trial's
        // counts; production reads nothing of it.
        let mut row = crate::rules::tests::path("git", 0, 0).only_in(Environment::Trial);
        row.environments[0].decisions = 5;
        row.environments[0].synthetic_decisions = 1;
        assert_eq!(
            s.apply(
                ViewName::Coverage,
                "action_path/git",
                Some(ViewRow::Coverage(row))
            ),
            Ok(true)
        );
        let trial = &s.stage(Stage::Trial).action_paths["git"];
        assert_eq!((trial.decisions, trial.synthetic_decisions), (5, 1));
        assert!(s.stage(Stage::Production).action_paths.is_empty());
        assert!(s.stage(Stage::Pilot).action_paths.is_empty());
    }

    #[test]
    fn a_row_of_another_view_is_refused() {
        let mut s = TenantState::default();
        let f = finding("f1", Risk::High, None, None);
        assert_eq!(
            s.apply(ViewName::Controls, "f1", Some(ViewRow::Finding(f))),
            Err(WrongRow {
                view: ViewName::Controls,
                row: ViewName::Findings
            })
        );
    }
}
