//! The blocker rules: one function per blocker kind, reading a tenant's [`TenantState`] at a
//! wall-clock instant. Pure and deterministic: the same state, windows and instant give the same
//! drafts, in the same order, with the same words. Nothing here mentions "now" in a meaning, so
//! a blocker's value changes only when its cause changes, never merely because time passed.
//!
//! Each rule also reports the next instant at which time alone would change its answer (a due
//! date, an expiry, the end of a window), so the evaluator can wake up exactly then.
//!
//! What "overdue", "expired", "covered", "stale" and "reviewed in time" mean, and on which side
//! of its boundary an instant falls, is not decided here: every comparison with the clock is a
//! call into [`aispm_schemas::clock`], which the reporter and the projector's API use too.

use crate::config::StageBlockers;
use crate::state::{Finding, MAX_EVIDENCE_IDS, Newest, StageFacts, TenantState};
use aispm_schemas::clock::{self, Windows};
use aispm_schemas::views::{ControlState, ExceptionKind, ValidationRow};
use aispm_schemas::{Blocker, BlockerKind, Environment, Risk, Stage, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The action paths that must carry real (non-synthetic) decisions.
pub(crate) const GOVERNED_PATHS: [&str; 4] = ["file", "command", "git", "mcp"];

/// A blocker as a rule raises it, before it is stamped with tenant, stage and detection time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// `{kind}` or `{kind}/{subject}`; unique per tenant and stage.
    pub id: String,
    pub kind: BlockerKind,
    pub subject: Option<String>,
    pub meaning: String,
    pub resolution: String,
    /// Evidence, finding, exception, validation and decision ids behind the blocker.
    pub evidence: Vec<String>,
    /// The stages it counts for, a bit per [`Stage::index`] (a shared rule's blocker about a
    /// finding counts only where the finding does: [`crate::state::stages_of`]).
    pub stages: u8,
}

impl Draft {
    /// The blocker this draft is for `tenant` at `stage`, detected at `detected_at`.
    pub fn blocker(&self, tenant: &str, stage: Stage, detected_at: Timestamp) -> Blocker {
        Blocker {
            tenant_id: tenant.to_owned(),
            stage,
            blocker_id: self.id.clone(),
            kind: self.kind,
            meaning: self.meaning.clone(),
            resolution: self.resolution.clone(),
            subject: self.subject.clone(),
            evidence: self.evidence.clone(),
            detected_at,
        }
    }
}

/// Every stage, as [`Draft::stages`] bits.
pub(crate) const ALL_STAGES: u8 = 0b111;

/// What the rules need besides the state: the windows and which kinds apply to which stage.
#[derive(Debug, Clone)]
pub struct Policy {
    pub windows: Windows,
    kinds: [BTreeSet<BlockerKind>; 3],
}

impl Policy {
    pub fn new(windows: Windows, stages: &StageBlockers) -> Self {
        Policy {
            windows,
            kinds: [
                stages.kinds(Stage::Trial),
                stages.kinds(Stage::Pilot),
                stages.kinds(Stage::Production),
            ],
        }
    }

    /// Whether `kind` applies to `stage`.
    pub fn applies(&self, stage: Stage, kind: BlockerKind) -> bool {
        self.kinds[stage.index()].contains(&kind)
    }

    fn any_stage(&self, kind: BlockerKind) -> bool {
        self.kinds.iter().any(|k| k.contains(&kind))
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Windows::default(), &StageBlockers::default())
    }
}

/// The blockers of one tenant for every stage, and when to look again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Per stage (trial, pilot, production), sorted by id.
    pub stages: [Vec<Draft>; 3],
    /// The next instant at which time alone changes some stage's blockers.
    pub next_change: Option<Timestamp>,
}

/// Collects drafts and the earliest future deadline.
struct Out {
    now: Timestamp,
    drafts: Vec<Draft>,
    next: Option<Timestamp>,
}

impl Out {
    /// Time alone changes an answer at the deadline `t` (ignored once reached).
    fn wake_at(&mut self, t: clock::Deadline) {
        if !clock::reached(t, self.now) {
            self.next = Some(self.next.map_or(t, |n| n.min(t)));
        }
    }

    fn raise(
        &mut self,
        kind: BlockerKind,
        subject: Option<&str>,
        meaning: String,
        resolution: &str,
        evidence: Vec<String>,
    ) {
        self.raise_in(ALL_STAGES, kind, subject, meaning, resolution, evidence);
    }

    /// [`Out::raise`] for the `stages` bits only.
    fn raise_in(
        &mut self,
        stages: u8,
        kind: BlockerKind,
        subject: Option<&str>,
        meaning: String,
        resolution: &str,
        evidence: Vec<String>,
    ) {
        let id = match subject {
            Some(s) => format!("{kind}/{s}"),
            None => kind.as_str().to_owned(),
        };
        self.drafts.push(Draft {
            id,
            kind,
            subject: subject.map(str::to_owned),
            meaning,
            resolution: resolution.to_owned(),
            evidence: cap(evidence),
            stages,
        });
    }
}

/// Dedups ids (first occurrence wins) and keeps at most [`MAX_EVIDENCE_IDS`].
fn cap(ids: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(ids.len().min(MAX_EVIDENCE_IDS));
    for id in ids {
        if out.len() == MAX_EVIDENCE_IDS {
            break;
        }
        if !id.is_empty() && seen.insert(id.clone()) {
            out.push(id);
        }
    }
    out
}

fn window(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A rule over tenant-wide facts (findings, exceptions, break-glass, deliveries): the same
/// answer for every stage it applies to.
type SharedRule = fn(&TenantState, &Policy, &mut Out);

/// A rule over one stage's own facts (its environment's coverage, controls, evidence and
/// validations): evaluated once per stage it applies to.
type StagedRule = fn(&StageFacts, &Policy, Stage, &mut Out);

/// Rules over tenant-wide facts. A finding's blockers count for the stages of the environments
/// whose events raised it (a finding of no one environment, e.g. from a registration, for
/// every stage); exceptions and break-glass events block every stage (fail closed).
const SHARED_RULES: [(BlockerKind, SharedRule); 5] = [
    (BlockerKind::ReportDeliveryUnverified, report_delivery),
    (BlockerKind::CriticalFindingUnowned, critical_unowned),
    (BlockerKind::FindingOverdue, finding_overdue),
    (BlockerKind::ExceptionExpired, exception_expired),
    (BlockerKind::BreakGlassUnreviewed, break_glass),
];

/// Rules over the facts of the stage's own environment: trial traffic, trial validations and
/// trial evidence never make pilot or production ready.
const STAGED_RULES: [(BlockerKind, StagedRule); 5] = [
    (BlockerKind::MissingLiveConnectorEvidence, live_connector),
    (BlockerKind::TenantIsolationNotProven, tenant_isolation),
    (BlockerKind::RuntimeWorkflowSyntheticOnly, synthetic_only),
    (BlockerKind::ControlMissing, control_missing),
    (BlockerKind::EvidenceStale, evidence_stale),
];

/// Evaluates every rule for `state` at `now`.
pub fn evaluate(state: &TenantState, policy: &Policy, now: Timestamp) -> Evaluation {
    let mut shared = Out {
        now,
        drafts: Vec::new(),
        next: None,
    };
    for (kind, rule) in SHARED_RULES {
        if policy.any_stage(kind) {
            rule(state, policy, &mut shared);
        }
    }
    let mut eval = Evaluation::default();
    let mut next = shared.next;
    for stage in Stage::ALL {
        let mut out = Out {
            now,
            drafts: shared
                .drafts
                .iter()
                .filter(|d| policy.applies(*stage, d.kind) && d.stages & 1 << stage.index() != 0)
                .cloned()
                .collect(),
            next: None,
        };
        let facts = state.stage(*stage);
        for (kind, rule) in STAGED_RULES {
            if policy.applies(*stage, kind) {
                rule(facts, policy, *stage, &mut out);
            }
        }
        if let Some(t) = out.next {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        let mut drafts = out.drafts;
        drafts.sort_by(|a, b| a.id.cmp(&b.id));
        eval.stages[stage.index()] = drafts;
    }
    eval.next_change = next;
    eval
}

/// The validations of `check_kind` in the stage's facts: those proven by a validator's
/// signature (the only ones that count), and the others.
fn results<'a>(
    facts: &'a StageFacts,
    check_kind: &str,
) -> (Vec<&'a ValidationRow>, Vec<&'a ValidationRow>) {
    facts
        .validations
        .values()
        .filter(|v| v.check_kind == check_kind)
        .partition(|v| v.proven())
}

/// What a blocker's meaning adds about results that were ignored as unproven.
fn ignored(unproven: &[&ValidationRow]) -> String {
    if unproven.is_empty() {
        return String::new();
    }
    let states: BTreeSet<&str> = unproven
        .iter()
        .map(|v| v.signature_state.as_str())
        .collect();
    format!(
        " {} result(s) were ignored as unproven (signature {}): a result counts only when signed by a registered validator key.",
        unproven.len(),
        states.into_iter().collect::<Vec<_>>().join(", ")
    )
}

const CONNECTOR_FIX: &str = "Connect a live system and run its connector_live validation until it passes with evidence, signed by a registered validator key (a trust_root whose scopes include validator).";

/// `missing_live_connector_evidence`: no passing `connector_live` validation with evidence, or
/// the latest validation of a connector failed (one blocker per failing connector).
fn live_connector(facts: &StageFacts, _: &Policy, stage: Stage, out: &mut Out) {
    let env = Environment::of(stage);
    let (rows, unproven) = results(facts, "connector_live");
    let mut failing = 0;
    for v in rows.iter().filter(|v| v.result != "pass") {
        failing += 1;
        let subject = v.subject.as_deref().unwrap_or("-");
        let detail = v
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        out.raise(
            BlockerKind::MissingLiveConnectorEvidence,
            Some(subject),
            format!(
                "The latest live-connector validation of {subject} in the {env} environment failed at {}{detail}.",
                v.validated_at
            ),
            CONNECTOR_FIX,
            v.evidence_id
                .iter()
                .cloned()
                .chain([v.event_id.clone()])
                .collect(),
        );
    }
    let passing = rows
        .iter()
        .any(|v| v.result == "pass" && v.evidence_id.is_some());
    if !passing && failing == 0 {
        let meaning = if rows.is_empty() {
            format!(
                "No proven connector_live validation has been recorded in the {env} environment: nothing shows the tenant's connectors reach live systems."
            )
        } else {
            format!(
                "Live-connector validations in the {env} environment passed without evidence: nothing proves the tenant's connectors reach live systems."
            )
        };
        out.raise(
            BlockerKind::MissingLiveConnectorEvidence,
            None,
            meaning + &ignored(&unproven),
            CONNECTOR_FIX,
            rows.iter()
                .chain(&unproven)
                .map(|v| v.event_id.clone())
                .collect(),
        );
    }
}

const ISOLATION_FIX: &str = "Run the tenant-isolation probe (aispm-validate isolation: cross-tenant reads must be refused everywhere) so that it records a passing result signed by a registered validator key; repeat it within the freshness window.";

/// `tenant_isolation_not_proven`: no passing `tenant_isolation` validation within the freshness
/// window, or the latest validation of some subject failed.
fn tenant_isolation(facts: &StageFacts, policy: &Policy, stage: Stage, out: &mut Out) {
    let env = Environment::of(stage);
    let window_len = policy.windows.tenant_isolation_freshness;
    let (rows, unproven) = results(facts, "tenant_isolation");
    let mut failing = 0;
    for v in rows.iter().filter(|v| v.result != "pass") {
        failing += 1;
        let subject = v.subject.as_deref().unwrap_or("-");
        out.raise(
            BlockerKind::TenantIsolationNotProven,
            Some(subject),
            format!(
                "The latest tenant-isolation validation of {subject} in the {env} environment failed at {}.",
                v.validated_at
            ),
            ISOLATION_FIX,
            v.evidence_id
                .iter()
                .cloned()
                .chain([v.event_id.clone()])
                .collect(),
        );
    }
    let newest_pass = rows
        .iter()
        .filter(|v| v.result == "pass")
        .max_by(|a, b| (a.validated_at, &a.event_id).cmp(&(b.validated_at, &b.event_id)));
    let fresh = match newest_pass {
        Some(v) => {
            out.wake_at(clock::fresh_until(v.validated_at, window_len));
            !clock::stale(v.validated_at, window_len, out.now)
        }
        None => false,
    };
    if !fresh && failing == 0 {
        let (meaning, evidence) = match newest_pass {
            Some(v) => (
                format!(
                    "The newest passing tenant-isolation validation in the {env} environment ({}) is older than the {} freshness window.",
                    v.validated_at,
                    window(window_len)
                ),
                v.evidence_id
                    .iter()
                    .cloned()
                    .chain([v.event_id.clone()])
                    .collect(),
            ),
            None => (
                format!(
                    "No proven tenant-isolation validation has passed in the {env} environment: nothing proves one tenant cannot read another's data."
                ),
                vec![],
            ),
        };
        out.raise(
            BlockerKind::TenantIsolationNotProven,
            None,
            meaning + &ignored(&unproven),
            ISOLATION_FIX,
            evidence
                .into_iter()
                .chain(unproven.iter().map(|v| v.event_id.clone()))
                .collect(),
        );
    }
}

/// `report_delivery_unverified`: no report delivered to approved recipients with audit evidence
/// (an evidence reference, or the mail server's message id).
fn report_delivery(state: &TenantState, _: &Policy, out: &mut Out) {
    let verified = state.deliveries.values().any(|d| {
        d.outcome == "delivered"
            && d.approved_recipients
            && (d.evidence_id.is_some() || d.message_id.is_some())
    });
    if verified {
        return;
    }
    let meaning = if state.deliveries.is_empty() {
        "No report packet has been delivered: nobody has verifiably received the tenant's reports."
            .to_owned()
    } else {
        "No report packet was delivered to approved recipients with delivery audit evidence; the listed attempts failed, went to unapproved recipients, or carry no audit evidence.".to_owned()
    };
    out.raise(
        BlockerKind::ReportDeliveryUnverified,
        None,
        meaning,
        "Register the report recipients as approved, deliver a report packet (the reporter records a delivery event with the server's message id or an evidence reference), and check the delivery outcome.",
        state
            .deliveries
            .values()
            .flat_map(|d| [d.report_id.clone(), d.event_id.clone()])
            .collect(),
    );
}

/// `runtime_workflow_synthetic_only`, per governed path: the path has no decision, or only
/// synthetic (fixture) decisions.
fn synthetic_only(facts: &StageFacts, _: &Policy, stage: Stage, out: &mut Out) {
    let env = Environment::of(stage);
    for path in GOVERNED_PATHS {
        let row = facts.action_paths.get(path);
        let (meaning, evidence) = match row {
            Some(r) if r.decisions > r.synthetic_decisions => continue,
            Some(r) if r.decisions > 0 => (
                format!(
                    "Every decision on the {path} path in the {env} environment so far is synthetic (fixtures): no real workload has exercised its runtime governance."
                ),
                r.last_decision_id.iter().cloned().collect(),
            ),
            _ => (
                format!(
                    "No decision has been recorded on the {path} path in the {env} environment: its runtime governance has never been exercised."
                ),
                vec![],
            ),
        };
        out.raise(
            BlockerKind::RuntimeWorkflowSyntheticOnly,
            Some(path),
            meaning,
            "Route real (non-synthetic) agent traffic on this path through a gateway that reports its decisions.",
            evidence,
        );
    }
}

/// `critical_finding_unowned`: an open critical finding without an owner or a due date.
fn critical_unowned(state: &TenantState, _: &Policy, out: &mut Out) {
    for f in state.open_findings.values() {
        if f.severity != Risk::Critical || (f.owner.is_some() && f.due_at.is_some()) {
            continue;
        }
        let missing = match (&f.owner, &f.due_at) {
            (None, None) => "an owner or a due date",
            (None, Some(_)) => "an owner",
            _ => "a due date",
        };
        out.raise_in(
            f.stages,
            BlockerKind::CriticalFindingUnowned,
            Some(&*f.finding_id),
            format!(
                "Critical finding {} ({}) is open without {missing}.",
                f.finding_id, f.title
            ),
            "Assign an owner and a due date (approval event finding_assigned), or resolve the finding (finding_resolved).",
            finding_ids(f),
        );
    }
}

fn finding_ids(f: &Finding) -> Vec<String> {
    std::iter::once(&*f.finding_id)
        .chain(f.exception_id.as_deref())
        .chain(f.event_ids.iter().map(|e| &**e))
        .map(str::to_owned)
        .collect()
}

/// `finding_overdue`: an open high or critical finding past its due date, unless an active
/// exception (accepted risk) covers it; when that exception expires, `exception_expired` and
/// this blocker take over.
fn finding_overdue(state: &TenantState, _: &Policy, out: &mut Out) {
    for f in state.open_findings.values() {
        if !clock::severity_can_be_overdue(f.severity) {
            continue;
        }
        let Some(due) = f.due_at else { continue };
        let times = f.times();
        out.wake_at(due);
        if let Some(Some(expires)) = times.exception {
            out.wake_at(expires);
        }
        if !clock::finding_overdue(times, out.now) {
            continue;
        }
        out.raise_in(
            f.stages,
            BlockerKind::FindingOverdue,
            Some(&*f.finding_id),
            format!(
                "{} finding {} ({}) was due at {due} and is still open.",
                capitalize(f.severity.as_str()),
                f.finding_id,
                f.title
            ),
            "Resolve the finding (finding_resolved), or record an accepted risk with an owner and an expiry (risk_accepted).",
            finding_ids(f),
        );
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `exception_expired`: an exception past its expiry that still covers an open finding, from
/// the finding's side (its `exception_id`/`exception_expires_at`) or the exception's side (an
/// unrevoked exception row naming an open finding). One blocker per exception.
fn exception_expired(state: &TenantState, _: &Policy, out: &mut Out) {
    // exception id -> (expiry, findings, exception event ids)
    let mut expired: BTreeMap<&str, (Timestamp, BTreeSet<&str>, Vec<String>)> = BTreeMap::new();
    for f in state.open_findings.values() {
        if let (Some(x), Some(e)) = (f.exception_id.as_deref(), f.exception_expires_at) {
            out.wake_at(e);
            if clock::expired(Some(e), out.now) {
                expired
                    .entry(x)
                    .or_insert_with(|| (e, BTreeSet::new(), vec![]))
                    .1
                    .insert(&*f.finding_id);
            }
        }
    }
    for x in state.exceptions.values() {
        if x.kind != ExceptionKind::Exception || x.revoked {
            continue;
        }
        let (Some(e), Some(fid)) = (x.expires_at, &x.finding_id) else {
            continue;
        };
        let Some(covered_by) = state.open_findings.exception_of(fid) else {
            continue;
        };
        // A finding now covered by another exception is no longer this one's.
        if covered_by.is_some_and(|other| other != x.exception_id) {
            continue;
        }
        out.wake_at(e);
        if clock::exception_expired(x, out.now) {
            let entry = expired
                .entry(&x.exception_id)
                .or_insert_with(|| (e, BTreeSet::new(), vec![]));
            entry.0 = entry.0.max(e);
            entry.1.insert(fid);
            entry.2.clone_from(&x.event_ids);
        }
    }
    for (x, (e, findings, events)) in expired {
        let list: Vec<&str> = findings.iter().copied().collect();
        out.raise(
            BlockerKind::ExceptionExpired,
            Some(x),
            format!(
                "Exception {x} expired at {e} but still covers open finding(s) {}.",
                list.join(", ")
            ),
            "Resolve the finding(s), renew the exception with a new expiry (exception_granted or risk_accepted), or revoke it (exception_revoked) and treat the finding as due.",
            std::iter::once(x.to_owned())
                .chain(list.iter().map(|f| (*f).to_owned()))
                .chain(events)
                .collect(),
        );
    }
}

/// `control_missing`: high-risk decisions on a path no enforced control covers: a control that
/// only logs (shadowed), one registered but never enforcing, decisions no control covered
/// (`(none):{kind}` rows), or a retired/quarantined control still deciding (blocked).
fn control_missing(facts: &StageFacts, _: &Policy, stage: Stage, out: &mut Out) {
    let env = Environment::of(stage);
    for (key, c) in &facts.controls {
        if c.state == ControlState::Enforced || c.high_risk_decisions <= 0 {
            continue;
        }
        let kinds = if c.action_kinds.is_empty() {
            "unknown".to_owned()
        } else {
            c.action_kinds.join(", ")
        };
        let id = &c.control_id;
        let meaning = match c.state {
            ControlState::Missing if key.starts_with("(none):") => {
                format!(
                    "High-risk {kinds} actions were decided in the {env} environment with no control covering them."
                )
            }
            ControlState::Missing => format!(
                "Control {id} is registered but has never enforced a decision, while high-risk {kinds} actions occur in the {env} environment."
            ),
            ControlState::Shadowed => format!(
                "Control {id} runs in shadow mode (log only) on the high-risk {kinds} path in the {env} environment: high-risk actions are not enforced."
            ),
            ControlState::Blocked => format!(
                "Control {id} is retired or quarantined yet still decides high-risk {kinds} actions in the {env} environment."
            ),
            ControlState::Enforced => continue,
        };
        out.raise(
            BlockerKind::ControlMissing,
            Some(key),
            meaning,
            "Put an enforced control (mode enforced, registered and trusted) in front of this high-risk path, so high-risk actions are denied or require approval.",
            c.decision_ids.clone(),
        );
    }
}

/// `break_glass_unreviewed`: a break-glass event still unreviewed after the review window.
fn break_glass(state: &TenantState, policy: &Policy, out: &mut Out) {
    let review = policy.windows.break_glass_review_window;
    for x in state.exceptions.values() {
        if x.kind != ExceptionKind::BreakGlass || x.reviewed_at.is_some() {
            continue;
        }
        out.wake_at(clock::review_deadline(x.granted_at, review));
        if !clock::break_glass_unreviewed(x, review, out.now) {
            continue;
        }
        let by = x
            .actor
            .as_deref()
            .map(|a| format!(" by {a}"))
            .unwrap_or_default();
        out.raise(
            BlockerKind::BreakGlassUnreviewed,
            Some(&x.exception_id),
            format!(
                "Break-glass {} invoked{by} at {} was not reviewed within the {} review window.",
                x.exception_id,
                x.granted_at,
                window(review)
            ),
            "Review the break-glass use and record it (approval event break_glass_reviewed).",
            std::iter::once(x.exception_id.clone())
                .chain(x.decision_id.iter().cloned())
                .chain(x.event_ids.iter().cloned())
                .collect(),
        );
    }
}

/// `evidence_stale`: the newest real evidence is older than the stage's freshness window, or
/// there is none, or it is unknown (the tracked evidence was all removed or invalidated after
/// older rows were left untracked; see [`crate::state::EvidenceIndex`]): that fails closed.
fn evidence_stale(facts: &StageFacts, policy: &Policy, stage: Stage, out: &mut Out) {
    let freshness = policy.windows.evidence_freshness(stage);
    let env = Environment::of(stage);
    let fix = "Make sure governed agents keep producing decisions with evidence (evidence id, SHA-256, URI, signature); stale evidence usually means a gateway stopped reporting.";
    match facts.evidence.newest() {
        Newest::None => out.raise(
            BlockerKind::EvidenceStale,
            None,
            format!("No real evidence has been recorded in the {env} environment (synthetic and invalidly signed evidence does not count)."),
            fix,
            vec![],
        ),
        Newest::Unknown => out.raise(
            BlockerKind::EvidenceStale,
            None,
            format!("The newest {env} evidence is unknown: every evidence row tracked for freshness was removed or invalidated, and older rows were not tracked; it is treated as stale until newer evidence arrives."),
            fix,
            vec![],
        ),
        Newest::Known(recorded, id) => {
            out.wake_at(clock::fresh_until(recorded, freshness));
            if clock::evidence_stale(Some(recorded), freshness, out.now) {
                out.raise(
                    BlockerKind::EvidenceStale,
                    None,
                    format!(
                        "The newest {env} evidence ({id}, recorded {recorded}) is older than the {stage} freshness window of {}.",
                        window(freshness)
                    ),
                    fix,
                    vec![id.to_owned()],
                );
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aispm_schemas::views::*;

    const H: i64 = 3_600_000;
    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    pub(crate) fn finding(
        id: &str,
        severity: Risk,
        owner: Option<&str>,
        due_at: Option<Timestamp>,
    ) -> FindingRow {
        FindingRow {
            asserted_by: None,
            finding_id: id.to_owned(),
            rule_id: "R1".into(),
            title: "t".into(),
            severity,
            status: FindingStatus::Open,
            subject: "s".into(),
            owner: owner.map(str::to_owned),
            due_at,
            opened_at: Timestamp(0),
            closed_at: None,
            resolution: None,
            frameworks: vec![],
            event_ids: vec![format!("ev-{id}")],
            occurrences: 1,
            exception_id: None,
            exception_expires_at: None,
            first_occurrence_at: Timestamp(0),
            last_occurrence_at: Timestamp(0),
            environments: Vec::new(),
            risk: Default::default(),
        }
    }

    pub(crate) fn exception(
        id: &str,
        kind: ExceptionKind,
        granted_at: Timestamp,
        expires_at: Option<Timestamp>,
        finding_id: Option<&str>,
    ) -> ExceptionRow {
        ExceptionRow {
            asserted_by: None,
            exception_id: id.to_owned(),
            kind,
            finding_id: finding_id.map(str::to_owned),
            control_id: None,
            decision_id: Some(format!("d-{id}")),
            owner: Some("o".into()),
            actor: Some("alice".into()),
            reason: None,
            granted_at,
            expires_at,
            revoked: false,
            reviewed_at: None,
            reviewed_by: None,
            event_ids: vec![format!("ev-{id}")],
        }
    }

    pub(crate) fn evidence(
        id: &str,
        at: Timestamp,
        synthetic: bool,
        sig: SignatureState,
    ) -> EvidenceRow {
        EvidenceRow {
            asserted_by: None,
            evidence_id: id.to_owned(),
            event_id: format!("d-{id}"),
            sha256: "00".repeat(32),
            uri: format!("s3://e/{id}"),
            signature_state: sig,
            key_id: None,
            recorded_at: at,
            synthetic,
            action_kind: Some("file".into()),
            environment: Some(Environment::Production),
            agent_id: None,
            control_id: None,
        }
    }

    pub(crate) fn validation(
        kind: &str,
        subject: Option<&str>,
        result: &str,
        at: Timestamp,
    ) -> ValidationRow {
        ValidationRow {
            asserted_by: None,
            check_kind: kind.to_owned(),
            subject: subject.map(str::to_owned),
            result: result.to_owned(),
            evidence_id: Some(format!("ev-{kind}")),
            validated_at: at,
            event_id: format!("r-{kind}-{}", subject.unwrap_or("-")),
            detail: None,
            environment: Some(Environment::Production),
            signature_state: SignatureState::Verified,
            key_id: Some("validator-key".into()),
        }
    }

    pub(crate) fn path(kind: &str, decisions: i64, synthetic: i64) -> CoverageRow {
        CoverageRow {
            asserted_by: None,
            kind: CoverageKind::ActionPath,
            id: kind.to_owned(),
            registered: false,
            retired: false,
            owner: None,
            trust: None,
            decisions,
            synthetic_decisions: synthetic,
            first_seen: Some(Timestamp(0)),
            last_seen: Some(Timestamp(0)),
            last_decision_id: Some(format!("d-{kind}")),
            last_real_decision_id: None,
            shadow_ai: false,
            environments: Stage::ALL
                .iter()
                .map(|s| EnvironmentActivity {
                    environment: Environment::of(*s),
                    decisions,
                    synthetic_decisions: synthetic,
                    last_seen: Some(Timestamp(0)),
                    last_decision_id: Some(format!("d-{kind}")),
                    last_real_decision_id: None,
                })
                .collect(),
        }
    }

    pub(crate) fn control(id: &str, state: ControlState, high_risk: i64) -> ControlRow {
        ControlRow {
            asserted_by: None,
            control_id: id.to_owned(),
            state,
            registered: true,
            enforced_decisions: 0,
            shadow_decisions: 1,
            high_risk_decisions: high_risk,
            action_kinds: vec!["command".into()],
            framework_mappings: vec![],
            decision_ids: vec!["d1".into(), "d2".into()],
            last_decision_at: Some(Timestamp(0)),
            environments: Stage::ALL
                .iter()
                .map(|s| ControlActivity {
                    environment: Environment::of(*s),
                    state,
                    enforced_decisions: 0,
                    shadow_decisions: 1,
                    high_risk_decisions: high_risk,
                    decision_ids: vec!["d1".into(), "d2".into()],
                    last_decision_at: Some(Timestamp(0)),
                })
                .collect(),
            last_enforced_at: None,
            policies: vec![],
            approvals: vec![],
        }
    }

    fn delivery(outcome: &str, approved: bool, message_id: Option<&str>) -> DeliveryRow {
        DeliveryRow {
            asserted_by: None,
            report_id: "rep-1".into(),
            report_type: "board_kpi".into(),
            channel: "smtp".into(),
            outcome: outcome.to_owned(),
            recipients: vec!["board@acme.example".into()],
            approved_recipients: approved,
            message_id: message_id.map(str::to_owned),
            packet_sha256: "ab".repeat(32),
            attempt: 1,
            delivered_at: Timestamp(0),
            event_id: "rd-1".into(),
            evidence_id: None,
            error: None,
        }
    }

    /// Sets the same facts in every environment (a test's tenant is uniform unless it says
    /// otherwise).
    pub(crate) fn everywhere(s: &mut TenantState, set: impl Fn(&mut StageFacts)) {
        s.stages.iter_mut().for_each(set);
    }

    /// A tenant with nothing in the way of production.
    pub(crate) fn ready_state(now: Timestamp) -> TenantState {
        let mut s = TenantState::default();
        for p in GOVERNED_PATHS {
            everywhere(&mut s, |f| {
                f.action_paths.insert(p.into(), path(p, 10, 2));
            });
        }
        everywhere(&mut s, |f| {
            f.validations.insert(
                "connector_live/jira".into(),
                validation("connector_live", Some("jira"), "pass", now),
            );
        });
        everywhere(&mut s, |f| {
            f.validations.insert(
                "tenant_isolation/-".into(),
                validation("tenant_isolation", None, "pass", now),
            );
        });
        s.deliveries
            .insert("rep-1".into(), delivery("delivered", true, Some("<m@x>")));
        everywhere(&mut s, |f| f.evidence.upsert("ev-1", now));
        everywhere(&mut s, |f| {
            f.controls
                .insert("ctl-1".into(), control("ctl-1", ControlState::Enforced, 5));
        });
        s
    }

    fn production(s: &TenantState, now: Timestamp) -> Vec<Draft> {
        evaluate(s, &Policy::default(), now).stages[2].clone()
    }

    fn ids(d: &[Draft]) -> Vec<&str> {
        d.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn a_ready_tenant_has_no_blockers_at_any_stage() {
        let e = evaluate(&ready_state(NOW), &Policy::default(), NOW);
        assert!(e.stages.iter().all(Vec::is_empty), "{e:?}");
        // Evidence goes stale first in production (24 h), isolation after 30 days.
        assert_eq!(e.next_change, Some(NOW.plus(Duration::from_secs(86_400))));
    }

    #[test]
    fn an_empty_tenant_is_blocked_everywhere_with_stage_specific_kinds() {
        let e = evaluate(&TenantState::default(), &Policy::default(), NOW);
        assert_eq!(
            ids(&e.stages[0]),
            [
                "evidence_stale",
                "missing_live_connector_evidence",
                "tenant_isolation_not_proven"
            ]
        );
        assert_eq!(e.stages[1].len(), 7);
        assert_eq!(
            ids(&e.stages[2]),
            [
                "evidence_stale",
                "missing_live_connector_evidence",
                "report_delivery_unverified",
                "runtime_workflow_synthetic_only/command",
                "runtime_workflow_synthetic_only/file",
                "runtime_workflow_synthetic_only/git",
                "runtime_workflow_synthetic_only/mcp",
                "tenant_isolation_not_proven",
            ]
        );
        assert_eq!(e.next_change, None);
    }

    #[test]
    fn live_connector_needs_a_pass_with_evidence_and_no_failure() {
        let mut s = ready_state(NOW);
        let mut v = validation("connector_live", Some("jira"), "pass", NOW);
        v.evidence_id = None;
        everywhere(&mut s, |f| {
            f.validations
                .insert("connector_live/jira".into(), v.clone());
        });
        let d = production(&s, NOW);
        assert_eq!(ids(&d), ["missing_live_connector_evidence"]);
        assert!(d[0].meaning.contains("without evidence"));
        assert_eq!(d[0].evidence, ["r-connector_live-jira"]);

        everywhere(&mut s, |f| {
            f.validations.insert(
                "connector_live/slack".into(),
                validation("connector_live", Some("slack"), "fail", NOW),
            );
        });
        let d = production(&s, NOW);
        assert_eq!(ids(&d), ["missing_live_connector_evidence/slack"]);
        assert_eq!(d[0].subject.as_deref(), Some("slack"));
        assert_eq!(
            d[0].evidence,
            ["ev-connector_live", "r-connector_live-slack"]
        );
    }

    #[test]
    fn only_results_signed_by_a_validator_count() {
        for state in [
            SignatureState::Unsigned,
            SignatureState::Invalid,
            SignatureState::UnknownKey,
        ] {
            let mut s = ready_state(NOW);
            everywhere(&mut s, |f| {
                for v in f.validations.values_mut() {
                    v.signature_state = state;
                }
            });
            let d = production(&s, NOW);
            assert_eq!(
                ids(&d),
                [
                    "missing_live_connector_evidence",
                    "tenant_isolation_not_proven"
                ]
            );
            for b in &d {
                assert!(b.meaning.contains("ignored as unproven"), "{b:?}");
                assert!(b.meaning.contains(state.as_str()), "{b:?}");
            }
            assert_eq!(d[1].evidence, ["r-tenant_isolation--"]);
        }
        // An unproven failure does not block either: it proves nothing.
        let mut s = ready_state(NOW);
        let mut v = validation("connector_live", Some("slack"), "fail", NOW);
        v.signature_state = SignatureState::Unsigned;
        everywhere(&mut s, |f| {
            f.validations
                .insert("connector_live/slack".into(), v.clone());
        });
        assert!(production(&s, NOW).is_empty());
    }

    #[test]
    fn tenant_isolation_expires_after_its_window() {
        let s = ready_state(NOW);
        let mut p = Policy::default();
        p.windows.tenant_isolation_freshness = Duration::from_secs(3600);
        p.windows.production_evidence_freshness = Duration::from_secs(100 * 86_400);
        let e = evaluate(&s, &p, NOW);
        assert!(e.stages[2].is_empty());
        assert_eq!(e.next_change, Some(Timestamp(NOW.0 + H)));
        let later = evaluate(&s, &p, Timestamp(NOW.0 + H));
        assert_eq!(ids(&later.stages[2]), ["tenant_isolation_not_proven"]);
        assert!(
            later.stages[2][0]
                .meaning
                .contains("older than the 1h freshness window")
        );
        assert_eq!(
            later.stages[2][0].evidence,
            ["ev-tenant_isolation", "r-tenant_isolation--"]
        );

        let mut s = ready_state(NOW);
        everywhere(&mut s, |f| {
            f.validations.insert(
                "tenant_isolation/eu".into(),
                validation("tenant_isolation", Some("eu"), "fail", NOW),
            );
        });
        assert_eq!(
            ids(&production(&s, NOW)),
            ["tenant_isolation_not_proven/eu"]
        );
    }

    #[test]
    fn report_delivery_needs_approved_recipients_and_audit_evidence() {
        let mut s = ready_state(NOW);
        for (outcome, approved, mid, blocked) in [
            ("delivered", true, Some("<m@x>"), false),
            ("delivered", false, Some("<m@x>"), true),
            ("failed", true, Some("<m@x>"), true),
            ("delivered", true, None, true),
        ] {
            s.deliveries
                .insert("rep-1".into(), delivery(outcome, approved, mid));
            let d = production(&s, NOW);
            assert_eq!(!d.is_empty(), blocked, "{outcome} {approved} {mid:?}");
            if blocked {
                assert_eq!(ids(&d), ["report_delivery_unverified"]);
                assert_eq!(d[0].evidence, ["rep-1", "rd-1"]);
            }
        }
        let mut d = delivery("delivered", true, None);
        d.evidence_id = Some("ev-audit".into());
        s.deliveries.insert("rep-1".into(), d);
        assert!(production(&s, NOW).is_empty());
    }

    #[test]
    fn synthetic_only_is_per_path() {
        let mut s = ready_state(NOW);
        everywhere(&mut s, |f| {
            f.action_paths.insert("git".into(), path("git", 4, 4));
        });
        everywhere(&mut s, |f| {
            f.action_paths.remove("mcp");
        });
        // Other paths (model, network) do not count.
        everywhere(&mut s, |f| {
            f.action_paths.insert("model".into(), path("model", 4, 4));
        });
        let d = production(&s, NOW);
        assert_eq!(
            ids(&d),
            [
                "runtime_workflow_synthetic_only/git",
                "runtime_workflow_synthetic_only/mcp"
            ]
        );
        assert_eq!(d[0].evidence, ["d-git"]);
        assert!(d[0].meaning.contains("synthetic"));
        assert!(d[1].meaning.contains("No decision"));
        // Pilot blocks on it too; trial does not.
        let e = evaluate(&s, &Policy::default(), NOW);
        assert_eq!(e.stages[1].len(), 2);
        assert!(e.stages[0].is_empty());
    }

    #[test]
    fn critical_findings_need_an_owner_and_a_due_date() {
        let mut s = ready_state(NOW);
        let due = Some(Timestamp(NOW.0 + H));
        s.open_findings
            .upsert("c1", &finding("c1", Risk::Critical, None, due));
        s.open_findings
            .upsert("c2", &finding("c2", Risk::Critical, Some("bob"), None));
        s.open_findings
            .upsert("c3", &finding("c3", Risk::Critical, Some("bob"), due));
        s.open_findings
            .upsert("h1", &finding("h1", Risk::High, None, None));
        let d = production(&s, NOW);
        assert_eq!(
            ids(&d),
            ["critical_finding_unowned/c1", "critical_finding_unowned/c2"]
        );
        assert!(d[0].meaning.ends_with("without an owner."));
        assert!(d[1].meaning.ends_with("without a due date."));
        assert_eq!(d[0].evidence, ["c1", "ev-c1"]);
    }

    #[test]
    fn high_findings_become_overdue_at_their_due_date() {
        let mut s = ready_state(NOW);
        let due = Timestamp(NOW.0 + H);
        s.open_findings
            .upsert("h1", &finding("h1", Risk::High, Some("bob"), Some(due)));
        s.open_findings.upsert(
            "m1",
            &finding("m1", Risk::Medium, Some("bob"), Some(Timestamp(0))),
        );
        let e = evaluate(&s, &Policy::default(), NOW);
        assert!(e.stages[2].is_empty());
        assert_eq!(e.next_change, Some(due));
        let d = production(&s, due);
        assert_eq!(ids(&d), ["finding_overdue/h1"]);
        assert!(d[0].meaning.starts_with("High finding h1"));
        // Not a pilot blocker by default.
        assert!(evaluate(&s, &Policy::default(), due).stages[1].is_empty());

        // An active accepted risk holds it off until it expires.
        let mut f = finding("h1", Risk::High, Some("bob"), Some(due));
        f.exception_id = Some("x1".into());
        f.exception_expires_at = Some(Timestamp(NOW.0 + 2 * H));
        s.open_findings.upsert("h1", &f);
        assert!(production(&s, due).is_empty());
        assert_eq!(
            ids(&production(&s, Timestamp(NOW.0 + 2 * H))),
            ["exception_expired/x1", "finding_overdue/h1"]
        );
    }

    #[test]
    fn exceptions_expire_while_covering_an_open_finding() {
        let mut s = ready_state(NOW);
        let expires = Timestamp(NOW.0 + H);
        s.open_findings
            .upsert("m1", &finding("m1", Risk::Medium, Some("bob"), None));
        s.exceptions.insert(
            "x1".into(),
            exception(
                "x1",
                ExceptionKind::Exception,
                Timestamp(0),
                Some(expires),
                Some("m1"),
            ),
        );
        let e = evaluate(&s, &Policy::default(), NOW);
        assert!(e.stages[2].is_empty());
        assert_eq!(e.next_change, Some(expires));
        let d = production(&s, expires);
        assert_eq!(ids(&d), ["exception_expired/x1"]);
        assert_eq!(d[0].evidence, ["x1", "m1", "ev-x1"]);
        assert!(d[0].meaning.contains("open finding(s) m1"));
        // Closing the finding resolves it; so does a newer exception on the finding.
        let mut f = finding("m1", Risk::Medium, Some("bob"), None);
        f.exception_id = Some("x2".into());
        f.exception_expires_at = Some(Timestamp(expires.0 + H));
        s.open_findings.upsert("m1", &f);
        assert!(production(&s, expires).is_empty());
        s.open_findings.clear();
        assert!(production(&s, expires).is_empty());
    }

    #[test]
    fn high_risk_paths_need_an_enforced_control() {
        let mut s = ready_state(NOW);
        everywhere(&mut s, |f| {
            f.controls
                .insert("ctl-2".into(), control("ctl-2", ControlState::Shadowed, 3));
        });
        everywhere(&mut s, |f| {
            f.controls
                .insert("ctl-3".into(), control("ctl-3", ControlState::Shadowed, 0));
        });
        everywhere(&mut s, |f| {
            f.controls.insert(
                "(none):git".into(),
                control("(none):git", ControlState::Missing, 1),
            );
        });
        everywhere(&mut s, |f| {
            f.controls
                .insert("ctl-4".into(), control("ctl-4", ControlState::Blocked, 1));
        });
        let d = production(&s, NOW);
        assert_eq!(
            ids(&d),
            [
                "control_missing/(none):git",
                "control_missing/ctl-2",
                "control_missing/ctl-4"
            ]
        );
        assert!(d[0].meaning.contains("no control covering"));
        assert!(d[1].meaning.contains("shadow mode"));
        assert!(d[2].meaning.contains("retired or quarantined"));
        assert_eq!(d[1].evidence, ["d1", "d2"]);
    }

    #[test]
    fn break_glass_must_be_reviewed_within_the_window() {
        let mut s = ready_state(NOW);
        let granted = Timestamp(NOW.0 - 12 * H);
        s.exceptions.insert(
            "bg1".into(),
            exception("bg1", ExceptionKind::BreakGlass, granted, None, None),
        );
        let e = evaluate(&s, &Policy::default(), NOW);
        assert!(e.stages[2].is_empty());
        let deadline = Timestamp(NOW.0 + 12 * H);
        assert_eq!(e.next_change, Some(deadline));
        let e = evaluate(&s, &Policy::default(), deadline);
        assert_eq!(ids(&e.stages[2]), ["break_glass_unreviewed/bg1"]);
        assert_eq!(ids(&e.stages[1]), ["break_glass_unreviewed/bg1"]);
        assert!(e.stages[0].is_empty());
        assert_eq!(e.stages[2][0].evidence, ["bg1", "d-bg1", "ev-bg1"]);
        assert!(e.stages[2][0].meaning.contains("by alice"));
    }

    #[test]
    fn a_stage_reads_only_its_own_environment() {
        // Everything production needs, but only in trial: trial is ready, production is not.
        let ready = ready_state(NOW);
        let mut s = ready.clone();
        s.stages[1] = StageFacts::default();
        s.stages[2] = StageFacts::default();
        let e = evaluate(&s, &Policy::default(), NOW);
        assert!(e.stages[0].is_empty(), "{:?}", e.stages[0]);
        assert_eq!(
            ids(&e.stages[2]),
            [
                "evidence_stale",
                "missing_live_connector_evidence",
                "runtime_workflow_synthetic_only/command",
                "runtime_workflow_synthetic_only/file",
                "runtime_workflow_synthetic_only/git",
                "runtime_workflow_synthetic_only/mcp",
                "tenant_isolation_not_proven",
            ]
        );
        for d in &e.stages[2] {
            assert!(d.meaning.contains("production environment"), "{d:?}");
        }
        // Production's own facts make it ready, whatever trial lacks.
        let mut s = ready.clone();
        s.stages[0] = StageFacts::default();
        let e = evaluate(&s, &Policy::default(), NOW);
        assert!(e.stages[2].is_empty(), "{:?}", e.stages[2]);
        assert!(!e.stages[0].is_empty());
        // A shadowed high-risk control in production blocks production only.
        let mut s = ready.clone();
        s.stages[2]
            .controls
            .insert("ctl-9".into(), control("ctl-9", ControlState::Shadowed, 2));
        let e = evaluate(&s, &Policy::default(), NOW);
        assert_eq!(ids(&e.stages[2]), ["control_missing/ctl-9"]);
        assert!(e.stages[1].is_empty());
        // A finding of no one environment (a registration's) blocks every stage it applies to.
        let mut s = ready.clone();
        s.open_findings
            .upsert("c1", &finding("c1", Risk::Critical, None, None));
        let e = evaluate(&s, &Policy::default(), NOW);
        assert_eq!(ids(&e.stages[1]), ["critical_finding_unowned/c1"]);
        assert_eq!(ids(&e.stages[2]), ["critical_finding_unowned/c1"]);
        // A finding raised by pilot traffic blocks pilot only; one raised in pilot and
        // production blocks both (trial does not apply the kind by default).
        let mut s = ready;
        let pilot_only = FindingRow {
            environments: vec![Environment::Pilot],
            ..finding("c2", Risk::Critical, None, None)
        };
        s.open_findings.upsert("c2", &pilot_only);
        let both = FindingRow {
            environments: vec![Environment::Pilot, Environment::Production],
            ..finding("c3", Risk::Critical, None, None)
        };
        s.open_findings.upsert("c3", &both);
        let e = evaluate(&s, &Policy::default(), NOW);
        assert!(e.stages[0].is_empty(), "{:?}", e.stages[0]);
        assert_eq!(
            ids(&e.stages[1]),
            ["critical_finding_unowned/c2", "critical_finding_unowned/c3"]
        );
        assert_eq!(ids(&e.stages[2]), ["critical_finding_unowned/c3"]);
    }

    #[test]
    fn evidence_staleness_depends_on_the_stage() {
        let s = ready_state(NOW);
        let later = NOW.plus(Duration::from_secs(2 * 86_400));
        let e = evaluate(&s, &Policy::default(), later);
        assert!(e.stages[0].is_empty() && e.stages[1].is_empty());
        assert_eq!(ids(&e.stages[2]), ["evidence_stale"]);
        assert_eq!(e.stages[2][0].evidence, ["ev-1"]);
        assert!(
            e.stages[2][0]
                .meaning
                .contains("production freshness window of 1day")
        );
        assert_eq!(
            e.next_change,
            Some(NOW.plus(Duration::from_secs(7 * 86_400)))
        );
    }

    #[test]
    fn drafts_are_deterministic_and_do_not_mention_the_clock() {
        let mut s = TenantState::default();
        s.open_findings.upsert(
            "c1",
            &finding("c1", Risk::Critical, None, Some(Timestamp(0))),
        );
        let a = evaluate(&s, &Policy::default(), NOW);
        let b = evaluate(&s, &Policy::default(), Timestamp(NOW.0 + 5 * H));
        assert_eq!(a.stages, b.stages);
    }

    #[test]
    fn evidence_lists_are_capped_and_deduplicated() {
        let ids: Vec<String> = (0..200).map(|i| format!("d{}", i % 120)).collect();
        let c = cap(ids);
        assert_eq!(c.len(), MAX_EVIDENCE_IDS);
        assert_eq!(c[0], "d0");
        assert_eq!(cap(vec!["a".into(), "a".into(), String::new()]), ["a"]);
    }

    #[test]
    fn stage_configuration_limits_the_kinds() {
        let stages = StageBlockers {
            trial_blockers: vec![],
            pilot_blockers: vec![BlockerKind::ReportDeliveryUnverified],
            production_blockers: vec![BlockerKind::ReportDeliveryUnverified],
        };
        let p = Policy::new(Windows::default(), &stages);
        let e = evaluate(&TenantState::default(), &p, NOW);
        assert!(e.stages[0].is_empty());
        assert_eq!(ids(&e.stages[1]), ["report_delivery_unverified"]);
    }
}
