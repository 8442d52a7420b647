//! The clock rules: "overdue", "expired", "covered by an exception", "stale" and "inside a
//! review window", defined once. The gatekeeper (blockers), the reporter (packet figures and
//! rows) and the projector (API states, the break-glass and expiry findings) all judge time
//! with these functions and nothing else, so a packet never calls a finding overdue that the
//! gate does not.
//!
//! # The one boundary
//! Every rule compares an instant `now` with a deadline (a due date, an expiry, the end of a
//! freshness or review window), and every deadline is **reached at its own instant**: a window
//! that starts at `s` and lasts `w` holds the instants `s <= t < s + w`, half-open. So:
//!
//! | rule | holds when |
//! |---|---|
//! | [`finding_overdue`] | open, high or critical, `now >= due_at`, and not [`finding_covered`] |
//! | [`expired`] (an exception) | `now >= expires_at` (no expiry: never) |
//! | [`exception_active`] | an unrevoked exception (not break-glass) that has not [`expired`] |
//! | [`finding_covered`] | the finding carries an exception that has not [`expired`] |
//! | [`stale`] (evidence, validations) | `now >= recorded_at + window` |
//! | [`evidence_stale`] | no evidence [`counts_for_freshness`], or the newest is [`stale`] |
//! | [`break_glass_unreviewed`] | break-glass, no review, `now >= granted_at + review window` |
//! | [`approval_overdue`] | a request for approval unanswered, `now >= requested_at + decision window` (as a bound on request times: [`approval_overdue_before`]) |
//! | [`reviewed_in_time`] | `reviewed_at < granted_at + review window` |
//! | [`closed_within_sla`] | `closed_at < due_at` (no due date: within) |
//!
//! At the boundary instant itself the rule already holds: a finding due at 10:00:00.000 is
//! overdue at 10:00:00.000, an exception expiring then no longer covers anything then, and a
//! review recorded then is late. The gatekeeper schedules its re-evaluation for exactly that
//! instant ([`Deadline`]s are the instants where time alone changes an answer).
//!
//! The windows ([`Windows`]) are configuration: every service that judges them takes the same
//! flags (`--{trial,pilot,production}-evidence-freshness`, `--break-glass-review-window`,
//! `--tenant-isolation-freshness`, see `aispm_runtime::config::ClockArgs`), with the defaults
//! defined here.
//!
//! Pure functions over the view rows ([`crate::views`]) and [`Timestamp`]; no I/O, no wall
//! clock: `now` is always a parameter.

use crate::events::Risk;
use crate::readiness::Stage;
use crate::time::Timestamp;
use crate::views::{
    EvidenceRow, ExceptionKind, ExceptionRow, FindingRow, FindingStatus, SignatureState,
};
use std::time::Duration;

const DAY: u64 = 86_400;

/// Default evidence freshness window of the trial stage.
pub const DEFAULT_TRIAL_EVIDENCE_FRESHNESS: Duration = Duration::from_secs(30 * DAY);
/// Default evidence freshness window of the pilot stage.
pub const DEFAULT_PILOT_EVIDENCE_FRESHNESS: Duration = Duration::from_secs(7 * DAY);
/// Default evidence freshness window of the production stage.
pub const DEFAULT_PRODUCTION_EVIDENCE_FRESHNESS: Duration = Duration::from_secs(DAY);
/// Default time allowed to review a break-glass event.
pub const DEFAULT_BREAK_GLASS_REVIEW_WINDOW: Duration = Duration::from_secs(DAY);
/// Default time a request for approval may wait for its answer.
pub const DEFAULT_APPROVAL_DECISION_WINDOW: Duration = Duration::from_secs(4 * 3600);
/// Default time a passing `tenant_isolation` validation proves isolation for.
pub const DEFAULT_TENANT_ISOLATION_FRESHNESS: Duration = Duration::from_secs(30 * DAY);

/// The windows of the clock rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Newest evidence older than this is stale for the trial stage.
    pub trial_evidence_freshness: Duration,
    /// Newest evidence older than this is stale for the pilot stage.
    pub pilot_evidence_freshness: Duration,
    /// Newest evidence older than this is stale for the production stage.
    pub production_evidence_freshness: Duration,
    /// A break-glass event must be reviewed within this long after it was invoked.
    pub break_glass_review_window: Duration,
    /// A passing `tenant_isolation` validation proves isolation for this long.
    pub tenant_isolation_freshness: Duration,
    /// A request for approval should be answered within this long ([`approval_overdue`]).
    pub approval_decision_window: Duration,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            trial_evidence_freshness: DEFAULT_TRIAL_EVIDENCE_FRESHNESS,
            pilot_evidence_freshness: DEFAULT_PILOT_EVIDENCE_FRESHNESS,
            production_evidence_freshness: DEFAULT_PRODUCTION_EVIDENCE_FRESHNESS,
            break_glass_review_window: DEFAULT_BREAK_GLASS_REVIEW_WINDOW,
            tenant_isolation_freshness: DEFAULT_TENANT_ISOLATION_FRESHNESS,
            approval_decision_window: DEFAULT_APPROVAL_DECISION_WINDOW,
        }
    }
}

impl Windows {
    /// The evidence freshness window of `stage`.
    pub fn evidence_freshness(&self, stage: Stage) -> Duration {
        match stage {
            Stage::Trial => self.trial_evidence_freshness,
            Stage::Pilot => self.pilot_evidence_freshness,
            Stage::Production => self.production_evidence_freshness,
        }
    }
}

/// An instant at which a rule's answer changes by time alone.
pub type Deadline = Timestamp;

/// Whether `deadline` has been reached at `now`: `now >= deadline`. The one boundary every
/// rule below uses.
pub fn reached(deadline: Deadline, now: Timestamp) -> bool {
    now >= deadline
}

/// The end of a window of length `window` starting at `start` (saturating): the first instant
/// outside it.
pub fn window_end(start: Timestamp, window: Duration) -> Deadline {
    start.plus(window)
}

// ---------------------------------------------------------------------------------------------
// Findings: overdue, covered, SLA.

/// What the finding rules read of a finding: built from a [`FindingRow`] (`From`), or by a
/// service that keeps findings in a compact form of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FindingTimes {
    pub severity: Risk,
    pub open: bool,
    pub due_at: Option<Timestamp>,
    pub closed_at: Option<Timestamp>,
    /// The exception (accepted risk) the finding carries: `None` when none, `Some(None)` for
    /// one without an expiry, `Some(Some(t))` for one expiring at `t`.
    pub exception: Option<Option<Timestamp>>,
}

impl From<&FindingRow> for FindingTimes {
    fn from(f: &FindingRow) -> Self {
        FindingTimes {
            severity: f.severity,
            open: f.status == FindingStatus::Open,
            due_at: f.due_at,
            closed_at: f.closed_at,
            exception: f.exception_id.as_ref().map(|_| f.exception_expires_at),
        }
    }
}

/// Whether a finding of this severity can be overdue (and block production): high or critical.
/// Lower severities have due dates too, but passing them is [`Sla::PastDue`], not overdue.
pub fn severity_can_be_overdue(severity: Risk) -> bool {
    matches!(severity, Risk::High | Risk::Critical)
}

/// Whether an open finding's due date has been reached at `now` (any severity).
pub fn past_due(f: FindingTimes, now: Timestamp) -> bool {
    f.open && f.due_at.is_some_and(|due| reached(due, now))
}

/// Whether the exception a finding carries still covers it at `now`: it has one and it has
/// not [`expired`]. (The exception row's own state is [`exception_active`]; the finding row
/// carries its exception only while that exception is not revoked.)
pub fn finding_covered(f: FindingTimes, now: Timestamp) -> bool {
    f.exception
        .is_some_and(|expires_at| !expired(expires_at, now))
}

/// `finding_overdue`: an open high or critical finding whose due date has been reached
/// (`now >= due_at`) and that no unexpired exception covers. When the exception expires, the
/// finding is overdue again (and the exception [`expired`]).
pub fn finding_overdue(f: FindingTimes, now: Timestamp) -> bool {
    severity_can_be_overdue(f.severity) && past_due(f, now) && !finding_covered(f, now)
}

/// [`finding_overdue`] of a row.
pub fn row_overdue(f: &FindingRow, now: Timestamp) -> bool {
    finding_overdue(f.into(), now)
}

/// Whether a closed finding was closed before its due date was reached (`closed_at <
/// due_at`); one without a due date never had one to miss. False while open.
pub fn closed_within_sla(f: FindingTimes) -> bool {
    match (f.open, f.closed_at, f.due_at) {
        (true, _, _) | (false, None, _) => false,
        (false, Some(_), None) => true,
        (false, Some(closed), Some(due)) => !reached(due, closed),
    }
}

/// A finding's SLA state at an instant: what the projector API calls `sla_state` and the
/// reporter's tables show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sla {
    /// Open, with no due date or before it.
    OnTrack,
    /// Open, high or critical, due date reached, not covered: [`finding_overdue`].
    Overdue,
    /// Open, due date reached, but covered by an unexpired exception (accepted risk).
    RiskAccepted,
    /// Open, due date reached, below high severity: late, but not a blocker.
    PastDue,
    /// Closed before its due date (or without one).
    ClosedWithinSla,
    /// Closed at or after its due date.
    ClosedLate,
}

impl Sla {
    /// Every state (the projector API's `sla` filter takes one).
    pub const ALL: [Sla; 6] = [
        Sla::OnTrack,
        Sla::Overdue,
        Sla::RiskAccepted,
        Sla::PastDue,
        Sla::ClosedWithinSla,
        Sla::ClosedLate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Sla::OnTrack => "on_track",
            Sla::Overdue => "overdue",
            Sla::RiskAccepted => "risk_accepted",
            Sla::PastDue => "past_due",
            Sla::ClosedWithinSla => "closed_within_sla",
            Sla::ClosedLate => "closed_late",
        }
    }
}

impl std::fmt::Display for Sla {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SLA state of a finding at `now`.
pub fn finding_sla(f: FindingTimes, now: Timestamp) -> Sla {
    if !f.open {
        return if closed_within_sla(f) {
            Sla::ClosedWithinSla
        } else {
            Sla::ClosedLate
        };
    }
    if !past_due(f, now) {
        Sla::OnTrack
    } else if finding_covered(f, now) {
        Sla::RiskAccepted
    } else if finding_overdue(f, now) {
        Sla::Overdue
    } else {
        Sla::PastDue
    }
}

/// [`finding_sla`] of a row.
pub fn row_sla(f: &FindingRow, now: Timestamp) -> Sla {
    finding_sla(f.into(), now)
}

// ---------------------------------------------------------------------------------------------
// Exceptions: expired, active.

/// Whether an expiry has been reached at `now` (`now >= expires_at`); `None` (no expiry)
/// never expires.
pub fn expired(expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    expires_at.is_some_and(|e| reached(e, now))
}

/// Whether an exception row (kind `exception`, i.e. an accepted risk) is in force at `now`:
/// not revoked and not [`expired`]. Break-glass rows are never "active" exceptions.
pub fn exception_active(x: &ExceptionRow, now: Timestamp) -> bool {
    x.kind == ExceptionKind::Exception && !x.revoked && !expired(x.expires_at, now)
}

/// Whether an exception row was in force at an earlier instant `at` (for trends): granted by
/// then and [`exception_active`] at `at`. (Revocations carry no time in the row, so a revoked
/// exception counts as never in force.)
pub fn exception_in_force_at(x: &ExceptionRow, at: Timestamp) -> bool {
    x.granted_at <= at && exception_active(x, at)
}

/// Whether an unrevoked exception row (kind `exception`) has [`expired`] at `now`.
pub fn exception_expired(x: &ExceptionRow, now: Timestamp) -> bool {
    x.kind == ExceptionKind::Exception && !x.revoked && expired(x.expires_at, now)
}

// ---------------------------------------------------------------------------------------------
// Break-glass: the review window.

/// The end of a break-glass event's review window: `granted_at + window`.
pub fn review_deadline(granted_at: Timestamp, window: Duration) -> Deadline {
    window_end(granted_at, window)
}

/// Whether a review at `reviewed_at` of a break-glass invoked at `granted_at` was in time:
/// before the review deadline was reached (`reviewed_at < granted_at + window`).
pub fn review_in_time(granted_at: Timestamp, reviewed_at: Timestamp, window: Duration) -> bool {
    !reached(review_deadline(granted_at, window), reviewed_at)
}

/// Whether a break-glass row was reviewed, and in time ([`review_in_time`]).
pub fn reviewed_in_time(x: &ExceptionRow, window: Duration) -> bool {
    x.reviewed_at
        .is_some_and(|r| review_in_time(x.granted_at, r, window))
}

/// `break_glass_unreviewed`: a break-glass row with no review once its review deadline is
/// reached (`now >= granted_at + window`). A review, even a late one, ends it (a late review
/// is [`ExceptionState::ReviewedLate`]).
pub fn break_glass_unreviewed(x: &ExceptionRow, window: Duration, now: Timestamp) -> bool {
    x.kind == ExceptionKind::BreakGlass
        && x.reviewed_at.is_none()
        && reached(review_deadline(x.granted_at, window), now)
}

/// `approval_overdue`: a request for approval made at `requested_at` and not answered is
/// overdue once the end of its decision window is reached (`now >= requested_at + window`).
pub fn approval_overdue(requested_at: Timestamp, window: Duration, now: Timestamp) -> bool {
    reached(window_end(requested_at, window), now)
}

/// The first request time that is not [`approval_overdue`] at `now`: the requests made before
/// it are overdue, a range bound for an index of pending requests by time.
pub fn approval_overdue_before(window: Duration, now: Timestamp) -> Timestamp {
    Timestamp(now.minus(window).0.saturating_add(1))
}

/// The state of an exception or break-glass row at `now`: what the projector API calls
/// `state` and the reporter's tables show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionState {
    /// An exception in force ([`exception_active`]).
    Active,
    /// An unrevoked exception past its expiry ([`exception_expired`]).
    Expired,
    /// A revoked exception.
    Revoked,
    /// Break-glass not yet reviewed, inside its review window.
    PendingReview,
    /// Break-glass not reviewed, its review window over ([`break_glass_unreviewed`]).
    ReviewOverdue,
    /// Break-glass reviewed within its window ([`reviewed_in_time`]).
    Reviewed,
    /// Break-glass reviewed after its window.
    ReviewedLate,
}

impl ExceptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionState::Active => "active",
            ExceptionState::Expired => "expired",
            ExceptionState::Revoked => "revoked",
            ExceptionState::PendingReview => "pending_review",
            ExceptionState::ReviewOverdue => "review_overdue",
            ExceptionState::Reviewed => "reviewed",
            ExceptionState::ReviewedLate => "reviewed_late",
        }
    }
}

impl std::fmt::Display for ExceptionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of `x` at `now`, with `review_window` for break-glass.
pub fn exception_state(
    x: &ExceptionRow,
    review_window: Duration,
    now: Timestamp,
) -> ExceptionState {
    match x.kind {
        ExceptionKind::BreakGlass => match x.reviewed_at {
            Some(_) if reviewed_in_time(x, review_window) => ExceptionState::Reviewed,
            Some(_) => ExceptionState::ReviewedLate,
            None if break_glass_unreviewed(x, review_window, now) => ExceptionState::ReviewOverdue,
            None => ExceptionState::PendingReview,
        },
        ExceptionKind::Exception if x.revoked => ExceptionState::Revoked,
        ExceptionKind::Exception if exception_expired(x, now) => ExceptionState::Expired,
        ExceptionKind::Exception => ExceptionState::Active,
    }
}

// ---------------------------------------------------------------------------------------------
// Evidence and validations: staleness.

/// Whether evidence counts for freshness: real traffic (not synthetic) with a signature that is
/// not invalid (verified, unsigned, or by a key not registered).
pub fn counts_for_freshness(synthetic: bool, signature: SignatureState) -> bool {
    !synthetic && signature != SignatureState::Invalid
}

/// [`counts_for_freshness`] of a row. Evidence no decision carried (no `action_kind`: a
/// validation's transcript) counts only when its signature is verified: an unproven claim shows
/// nothing, not even that the tenant's systems are alive.
pub fn evidence_counts(e: &EvidenceRow) -> bool {
    counts_for_freshness(e.synthetic, e.signature_state)
        && (e.action_kind.is_some() || e.signature_state == SignatureState::Verified)
}

/// The newest evidence that [`counts_for_freshness`]: latest `recorded_at`, then greatest id.
pub fn newest_evidence<'a>(
    rows: impl IntoIterator<Item = &'a EvidenceRow>,
) -> Option<&'a EvidenceRow> {
    rows.into_iter()
        .filter(|e| evidence_counts(e))
        .max_by(|a, b| (a.recorded_at, &a.evidence_id).cmp(&(b.recorded_at, &b.evidence_id)))
}

/// The instant something recorded at `at` goes stale under `window`: `at + window`.
pub fn fresh_until(at: Timestamp, window: Duration) -> Deadline {
    window_end(at, window)
}

/// Whether something recorded (or validated) at `at` is stale at `now` under `window`:
/// `now >= at + window`.
pub fn stale(at: Timestamp, window: Duration, now: Timestamp) -> bool {
    reached(fresh_until(at, window), now)
}

/// `evidence_stale`: no evidence counts (`newest` is `None`), or the newest that does is
/// [`stale`] under `window` at `now`.
pub fn evidence_stale(newest: Option<Timestamp>, window: Duration, now: Timestamp) -> bool {
    newest.is_none_or(|at| stale(at, window, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Environment;

    const MS: i64 = 1;
    const H: i64 = 3_600_000;
    const T: Timestamp = Timestamp(1_800_000_000_000);

    fn at(offset: i64) -> Timestamp {
        Timestamp(T.0 + offset)
    }

    #[test]
    fn the_overdue_bound_agrees_with_the_predicate_on_both_sides() {
        let window = Duration::from_secs(4 * 3600);
        let now = at(0);
        let bound = approval_overdue_before(window, now);
        assert_eq!(bound, at(-4 * H + MS));
        assert!(approval_overdue(Timestamp(bound.0 - MS), window, now));
        assert!(!approval_overdue(bound, window, now));
        // Saturating at the ends of time: nothing is overdue before the epoch's minimum.
        let first = approval_overdue_before(window, Timestamp(i64::MIN));
        assert!(!approval_overdue(first, window, Timestamp(i64::MIN)));
    }

    /// The instants on both sides of a boundary and at it.
    fn around(b: Timestamp) -> [(Timestamp, bool); 3] {
        [
            (Timestamp(b.0 - MS), false),
            (b, true),
            (Timestamp(b.0 + MS), true),
        ]
    }

    fn finding(severity: Risk, due: Option<Timestamp>) -> FindingTimes {
        FindingTimes {
            severity,
            open: true,
            due_at: due,
            closed_at: None,
            exception: None,
        }
    }

    fn exception_row(kind: ExceptionKind, expires_at: Option<Timestamp>) -> ExceptionRow {
        ExceptionRow {
            asserted_by: None,
            exception_id: "x".into(),
            kind,
            finding_id: Some("f".into()),
            control_id: None,
            decision_id: None,
            owner: None,
            actor: None,
            reason: None,
            granted_at: at(-10 * H),
            expires_at,
            revoked: false,
            reviewed_at: None,
            reviewed_by: None,
            event_ids: vec![],
        }
    }

    fn evidence(
        id: &str,
        recorded_at: Timestamp,
        synthetic: bool,
        sig: SignatureState,
    ) -> EvidenceRow {
        EvidenceRow {
            asserted_by: None,
            evidence_id: id.into(),
            event_id: "d".into(),
            sha256: String::new(),
            uri: String::new(),
            signature_state: sig,
            key_id: None,
            recorded_at,
            synthetic,
            action_kind: Some("file".into()),
            environment: Some(Environment::Production),
            agent_id: None,
            control_id: None,
        }
    }

    #[test]
    fn a_deadline_is_reached_at_its_own_instant() {
        for (now, want) in around(T) {
            assert_eq!(reached(T, now), want, "{now}");
        }
        assert_eq!(window_end(T, Duration::from_millis(5)), at(5));
        assert_eq!(
            window_end(Timestamp(i64::MAX - 1), Duration::from_secs(1)),
            Timestamp(i64::MAX)
        );
    }

    #[test]
    fn high_and_critical_findings_are_overdue_from_their_due_instant() {
        for sev in [Risk::High, Risk::Critical] {
            let f = finding(sev, Some(T));
            for (now, want) in around(T) {
                assert_eq!(finding_overdue(f, now), want, "{sev} at {now}");
                let sla = if want { Sla::Overdue } else { Sla::OnTrack };
                assert_eq!(finding_sla(f, now), sla);
            }
        }
        // Lower severities pass their due date without being overdue.
        for sev in [Risk::Low, Risk::Medium] {
            let f = finding(sev, Some(T));
            for (now, late) in around(T) {
                assert!(!finding_overdue(f, now));
                assert_eq!(past_due(f, now), late);
                let sla = if late { Sla::PastDue } else { Sla::OnTrack };
                assert_eq!(finding_sla(f, now), sla);
            }
        }
        // No due date, or closed: never overdue.
        assert!(!finding_overdue(finding(Risk::Critical, None), at(100 * H)));
        let mut closed = finding(Risk::Critical, Some(T));
        closed.open = false;
        assert!(!finding_overdue(closed, at(H)));
    }

    #[test]
    fn an_exception_covers_a_finding_until_its_expiry_instant() {
        let mut f = finding(Risk::High, Some(at(-H)));
        f.exception = Some(Some(T));
        for (now, expired_now) in around(T) {
            assert_eq!(finding_covered(f, now), !expired_now, "{now}");
            assert_eq!(finding_overdue(f, now), expired_now, "{now}");
            let sla = if expired_now {
                Sla::Overdue
            } else {
                Sla::RiskAccepted
            };
            assert_eq!(finding_sla(f, now), sla);
        }
        // Without an expiry it covers for ever.
        f.exception = Some(None);
        assert!(finding_covered(f, Timestamp(i64::MAX)));
        assert!(!finding_overdue(f, Timestamp(i64::MAX)));
        // From a row: the exception id is what makes it covered.
        let row = FindingRow {
            asserted_by: None,
            finding_id: "f".into(),
            rule_id: "r".into(),
            title: "t".into(),
            severity: Risk::High,
            status: FindingStatus::Open,
            subject: "s".into(),
            owner: None,
            due_at: Some(at(-H)),
            opened_at: at(-2 * H),
            closed_at: None,
            resolution: None,
            frameworks: vec![],
            event_ids: vec![],
            occurrences: 1,
            exception_id: None,
            exception_expires_at: Some(at(H)),
            first_occurrence_at: at(-2 * H),
            last_occurrence_at: at(-2 * H),
            environments: Vec::new(),
            risk: Default::default(),
        };
        assert!(row_overdue(&row, T));
        let covered = FindingRow {
            asserted_by: None,
            exception_id: Some("x".into()),
            ..row
        };
        assert!(!row_overdue(&covered, T));
        assert_eq!(row_sla(&covered, T), Sla::RiskAccepted);
    }

    #[test]
    fn a_finding_closed_at_its_due_instant_was_late() {
        let mut f = finding(Risk::High, Some(T));
        f.open = false;
        for (closed, late) in around(T) {
            f.closed_at = Some(closed);
            assert_eq!(closed_within_sla(f), !late, "{closed}");
            let sla = if late {
                Sla::ClosedLate
            } else {
                Sla::ClosedWithinSla
            };
            assert_eq!(finding_sla(f, at(10 * H)), sla);
        }
        f.due_at = None;
        assert!(closed_within_sla(f));
        assert!(!closed_within_sla(finding(Risk::High, Some(T))));
    }

    #[test]
    fn exceptions_expire_at_their_expiry_instant() {
        let x = exception_row(ExceptionKind::Exception, Some(T));
        for (now, want) in around(T) {
            assert_eq!(expired(x.expires_at, now), want);
            assert_eq!(exception_expired(&x, now), want);
            assert_eq!(exception_active(&x, now), !want);
            let state = if want {
                ExceptionState::Expired
            } else {
                ExceptionState::Active
            };
            assert_eq!(
                exception_state(&x, DEFAULT_BREAK_GLASS_REVIEW_WINDOW, now),
                state
            );
        }
        assert!(!expired(None, Timestamp(i64::MAX)));
        let revoked = ExceptionRow {
            asserted_by: None,
            revoked: true,
            ..x.clone()
        };
        assert!(!exception_active(&revoked, at(-H)) && !exception_expired(&revoked, at(H)));
        assert_eq!(
            exception_state(&revoked, DEFAULT_BREAK_GLASS_REVIEW_WINDOW, at(H)),
            ExceptionState::Revoked
        );
        // In force at an earlier instant only once granted.
        assert!(!exception_in_force_at(&x, Timestamp(x.granted_at.0 - MS)));
        assert!(exception_in_force_at(&x, x.granted_at));
        assert!(!exception_in_force_at(&x, T));
        // Break-glass is never an active exception.
        let bg = exception_row(ExceptionKind::BreakGlass, None);
        assert!(!exception_active(&bg, T) && !exception_expired(&bg, T));
    }

    #[test]
    fn break_glass_must_be_reviewed_before_its_review_deadline() {
        let window = Duration::from_secs(3600);
        let mut bg = exception_row(ExceptionKind::BreakGlass, None);
        bg.granted_at = at(-H);
        assert_eq!(review_deadline(bg.granted_at, window), T);
        for (now, want) in around(T) {
            assert_eq!(break_glass_unreviewed(&bg, window, now), want, "{now}");
            let state = if want {
                ExceptionState::ReviewOverdue
            } else {
                ExceptionState::PendingReview
            };
            assert_eq!(exception_state(&bg, window, now), state);
        }
        // A review at the deadline instant is late; any review ends the unreviewed state.
        for (reviewed, late) in around(T) {
            bg.reviewed_at = Some(reviewed);
            assert_eq!(reviewed_in_time(&bg, window), !late, "{reviewed}");
            assert!(!break_glass_unreviewed(&bg, window, at(10 * H)));
            let state = if late {
                ExceptionState::ReviewedLate
            } else {
                ExceptionState::Reviewed
            };
            assert_eq!(exception_state(&bg, window, at(10 * H)), state);
        }
        // An exception row is never an unreviewed break-glass.
        let x = exception_row(ExceptionKind::Exception, None);
        assert!(!break_glass_unreviewed(&x, window, at(100 * H)));
    }

    #[test]
    fn evidence_goes_stale_when_its_window_ends() {
        let window = Duration::from_secs(24 * 3600);
        let recorded = at(-24 * H);
        assert_eq!(fresh_until(recorded, window), T);
        for (now, want) in around(T) {
            assert_eq!(stale(recorded, window, now), want, "{now}");
            assert_eq!(evidence_stale(Some(recorded), window, now), want);
        }
        // No evidence is stale.
        assert!(evidence_stale(None, window, T));
    }

    #[test]
    fn only_real_evidence_with_a_signature_that_is_not_invalid_counts() {
        let rows = [
            evidence("a", at(-3 * H), false, SignatureState::Verified),
            evidence("b", at(-2 * H), false, SignatureState::Unsigned),
            evidence("c", at(-H), true, SignatureState::Verified),
            evidence("d", T, false, SignatureState::Invalid),
            evidence("e", at(-2 * H), false, SignatureState::UnknownKey),
        ];
        // Same time: the greater id is the newest.
        assert_eq!(
            newest_evidence(&rows).map(|e| e.evidence_id.as_str()),
            Some("e")
        );
        assert!(newest_evidence(&rows[2..4]).is_none());
        assert!(counts_for_freshness(false, SignatureState::UnknownKey));
        assert!(!counts_for_freshness(true, SignatureState::Verified));
        // A validation's transcript (no decision carried it) counts only when verified.
        let transcript = |sig| EvidenceRow {
            action_kind: None,
            ..evidence("v", T, false, sig)
        };
        assert!(evidence_counts(&transcript(SignatureState::Verified)));
        for sig in [SignatureState::Unsigned, SignatureState::UnknownKey] {
            assert!(!evidence_counts(&transcript(sig)), "{sig:?}");
        }
    }

    #[test]
    fn windows_per_stage() {
        let w = Windows::default();
        assert_eq!(
            w.evidence_freshness(Stage::Trial),
            DEFAULT_TRIAL_EVIDENCE_FRESHNESS
        );
        assert_eq!(
            w.evidence_freshness(Stage::Pilot),
            Duration::from_secs(7 * DAY)
        );
        assert_eq!(
            w.evidence_freshness(Stage::Production),
            Duration::from_secs(DAY)
        );
        assert_eq!(w.break_glass_review_window, Duration::from_secs(DAY));
        assert_eq!(w.tenant_isolation_freshness, Duration::from_secs(30 * DAY));
    }
}
