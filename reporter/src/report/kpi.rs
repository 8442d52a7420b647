//! Key figures and weekly trends, computed from the view rows and the report's clock.
//!
//! Every figure carries the ids behind it (`*_ids`), so a reader can drill from a number down
//! to the rows and events that produced it. Trends are rebuilt from event-time stamps in the
//! rows (opened, closed, due, first seen, granted, expires), so a replay gives the same series.
//! Overdue, expired, within SLA and unreviewed are [`aispm_schemas::clock`]'s rules.

use crate::state::TenantState;
use aispm_schemas::{
    ControlState, CoverageKind, ExceptionKind, FindingRow, FindingStatus, Risk, SignatureState,
    Timestamp, clock,
};
use serde::Serialize;

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;

/// The key figures of one tenant at one moment.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Kpis {
    /// Assets (agents, repos, workflows, MCP servers and tools, model endpoints) seen deciding.
    pub assets_seen: u64,
    /// Of those, registered and governed.
    pub assets_governed: u64,
    /// `assets_governed / assets_seen` in percent; none when nothing was seen.
    pub coverage_pct: Option<f64>,
    /// Agents seen deciding that were never registered.
    pub shadow_ai: u64,
    pub shadow_ai_ids: Vec<String>,
    /// MCP tools and servers registered as risky, untrusted or quarantined.
    pub risky_tools: u64,
    pub risky_tool_ids: Vec<String>,
    pub controls_total: u64,
    pub controls_enforced: u64,
    pub controls_shadowed: u64,
    pub controls_missing: u64,
    pub controls_blocked: u64,
    /// Controls not enforced (shadowed, missing or blocked).
    pub control_gap_ids: Vec<String>,
    pub enforced_pct: Option<f64>,
    pub findings_open: u64,
    pub findings_open_critical: u64,
    pub findings_open_high: u64,
    pub findings_open_medium: u64,
    pub findings_open_low: u64,
    pub open_critical_ids: Vec<String>,
    /// Open high or critical findings whose due date is reached and that no unexpired
    /// exception covers ([`clock::finding_overdue`], the `finding_overdue` blocker).
    pub findings_overdue: u64,
    pub overdue_ids: Vec<String>,
    /// Open critical findings without an owner or a due date.
    pub critical_unowned: u64,
    pub critical_unowned_ids: Vec<String>,
    /// Closed high or critical findings.
    pub high_risk_closed: u64,
    /// Of those, closed before their due date ([`clock::closed_within_sla`]).
    pub high_risk_closed_within_sla: u64,
    pub high_risk_within_sla_pct: Option<f64>,
    /// Mean hours from opened to closed over closed findings.
    pub mean_time_to_remediate_hours: Option<f64>,
    /// Unrevoked exceptions in force ([`clock::exception_active`]) and past their expiry
    /// ([`clock::exception_expired`]).
    pub exceptions_active: u64,
    pub exceptions_expired: u64,
    pub expired_exception_ids: Vec<String>,
    /// Mean age in days of active exceptions.
    pub exception_mean_age_days: Option<f64>,
    pub exception_oldest_age_days: Option<f64>,
    pub break_glass_total: u64,
    /// Break-glass without a review once the review window is over
    /// ([`clock::break_glass_unreviewed`], the `break_glass_unreviewed` blocker).
    pub break_glass_unreviewed: u64,
    pub break_glass_unreviewed_ids: Vec<String>,
    /// Break-glass not reviewed yet, inside its review window.
    pub break_glass_pending_review: u64,
    /// Break-glass reviewed, but after its review window.
    pub break_glass_reviewed_late: u64,
    pub break_glass_reviewed_late_ids: Vec<String>,
    pub evidence_total: u64,
    pub evidence_verified: u64,
    pub evidence_unsigned: u64,
    pub evidence_invalid: u64,
    pub evidence_unknown_key: u64,
    /// Recording time of the newest evidence that counts for freshness
    /// ([`clock::counts_for_freshness`]: not synthetic, signature not invalid).
    pub newest_evidence_at: Option<Timestamp>,
    pub deliveries_delivered: u64,
    pub deliveries_failed: u64,
    /// Deliveries with outcome delivered to approved recipients with evidence.
    pub deliveries_verified: u64,
}

/// Percent with one decimal.
pub fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| round1(part as f64 * 100.0 / whole as f64))
}

/// Rounds to one decimal.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn is_high_risk(f: &FindingRow) -> bool {
    clock::severity_can_be_overdue(f.severity)
}

impl Kpis {
    /// The figures of `t` at `now`, judged with `windows`.
    pub fn compute(t: &TenantState, now: Timestamp, windows: &clock::Windows) -> Kpis {
        let mut k = Kpis::default();
        for c in t.coverage.values() {
            if c.kind == CoverageKind::ActionPath || c.retired {
                continue;
            }
            if c.decisions > 0 {
                k.assets_seen += 1;
                if c.registered && !c.shadow_ai {
                    k.assets_governed += 1;
                }
            }
            if c.shadow_ai && c.kind == CoverageKind::Agent {
                k.shadow_ai += 1;
                k.shadow_ai_ids.push(c.id.clone());
            }
            if matches!(c.kind, CoverageKind::McpTool | CoverageKind::McpServer)
                && matches!(
                    c.trust.as_deref(),
                    Some("risky" | "untrusted" | "quarantined")
                )
            {
                k.risky_tools += 1;
                k.risky_tool_ids.push(c.id.clone());
            }
        }
        k.coverage_pct = pct(k.assets_governed, k.assets_seen);

        for c in t.controls.values() {
            k.controls_total += 1;
            match c.state {
                ControlState::Enforced => k.controls_enforced += 1,
                ControlState::Shadowed => k.controls_shadowed += 1,
                ControlState::Missing => k.controls_missing += 1,
                ControlState::Blocked => k.controls_blocked += 1,
            }
            if c.state != ControlState::Enforced {
                k.control_gap_ids.push(c.control_id.clone());
            }
        }
        k.enforced_pct = pct(k.controls_enforced, k.controls_total);

        let mut ttr_sum = 0i64;
        let mut ttr_n = 0i64;
        for f in t.findings.values() {
            match f.status {
                FindingStatus::Open => {
                    k.findings_open += 1;
                    match f.severity {
                        Risk::Critical => {
                            k.findings_open_critical += 1;
                            k.open_critical_ids.push(f.finding_id.clone());
                            if f.owner.is_none() || f.due_at.is_none() {
                                k.critical_unowned += 1;
                                k.critical_unowned_ids.push(f.finding_id.clone());
                            }
                        }
                        Risk::High => k.findings_open_high += 1,
                        Risk::Medium => k.findings_open_medium += 1,
                        Risk::Low => k.findings_open_low += 1,
                    }
                    if clock::row_overdue(f, now) {
                        k.findings_overdue += 1;
                        k.overdue_ids.push(f.finding_id.clone());
                    }
                }
                FindingStatus::Closed => {
                    if let Some(closed) = f.closed_at {
                        ttr_sum += (closed.0 - f.opened_at.0).max(0);
                        ttr_n += 1;
                        if is_high_risk(f) {
                            k.high_risk_closed += 1;
                            if clock::closed_within_sla(f.into()) {
                                k.high_risk_closed_within_sla += 1;
                            }
                        }
                    }
                }
            }
        }
        k.high_risk_within_sla_pct = pct(k.high_risk_closed_within_sla, k.high_risk_closed);
        k.mean_time_to_remediate_hours =
            (ttr_n > 0).then(|| round1(ttr_sum as f64 / ttr_n as f64 / 3_600_000.0));

        let mut ages = Vec::new();
        for e in t.exceptions.values() {
            match e.kind {
                ExceptionKind::Exception => {
                    if e.revoked {
                        continue;
                    }
                    if clock::exception_active(e, now) {
                        k.exceptions_active += 1;
                        ages.push((now.0 - e.granted_at.0).max(0) as f64 / DAY_MS as f64);
                    } else {
                        k.exceptions_expired += 1;
                        k.expired_exception_ids.push(e.exception_id.clone());
                    }
                }
                ExceptionKind::BreakGlass => {
                    k.break_glass_total += 1;
                    match clock::exception_state(e, windows.break_glass_review_window, now) {
                        clock::ExceptionState::ReviewOverdue => {
                            k.break_glass_unreviewed += 1;
                            k.break_glass_unreviewed_ids.push(e.exception_id.clone());
                        }
                        clock::ExceptionState::PendingReview => k.break_glass_pending_review += 1,
                        clock::ExceptionState::ReviewedLate => {
                            k.break_glass_reviewed_late += 1;
                            k.break_glass_reviewed_late_ids.push(e.exception_id.clone());
                        }
                        _ => {}
                    }
                }
            }
        }
        if !ages.is_empty() {
            k.exception_mean_age_days = Some(round1(ages.iter().sum::<f64>() / ages.len() as f64));
            k.exception_oldest_age_days = ages.iter().copied().reduce(f64::max).map(round1);
        }

        for e in t.evidence.values() {
            k.evidence_total += 1;
            match e.signature_state {
                SignatureState::Verified => k.evidence_verified += 1,
                SignatureState::Unsigned => k.evidence_unsigned += 1,
                SignatureState::Invalid => k.evidence_invalid += 1,
                SignatureState::UnknownKey => k.evidence_unknown_key += 1,
            }
        }
        k.newest_evidence_at = clock::newest_evidence(t.evidence.values()).map(|e| e.recorded_at);

        for d in t.deliveries.values() {
            match d.outcome.as_str() {
                "delivered" => {
                    k.deliveries_delivered += 1;
                    if d.approved_recipients && d.evidence_id.is_some() {
                        k.deliveries_verified += 1;
                    }
                }
                _ => k.deliveries_failed += 1,
            }
        }
        k
    }
}

/// One week of the trend series, ending at `week_end`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrendPoint {
    pub week_end: Timestamp,
    /// Findings open at the end of the week.
    pub open_findings: u64,
    /// Critical findings open at the end of the week.
    pub open_critical: u64,
    /// High/critical findings closed during the week, and how many of them within SLA.
    pub high_risk_closed: u64,
    pub high_risk_closed_within_sla: u64,
    pub within_sla_pct: Option<f64>,
    /// Mean hours to remediate over findings closed during the week.
    pub mean_time_to_remediate_hours: Option<f64>,
    /// Registered assets first seen by the end of the week.
    pub governed_assets: u64,
    /// Exceptions in force at the end of the week (granted, not yet expired).
    pub active_exceptions: u64,
}

/// `weeks` weekly points ending at `now`, oldest first.
pub fn trends(t: &TenantState, now: Timestamp, weeks: u32) -> Vec<TrendPoint> {
    (0..weeks)
        .rev()
        .map(|i| {
            let end = Timestamp(now.0 - i64::from(i) * WEEK_MS);
            let start = Timestamp(end.0 - WEEK_MS);
            let mut p = TrendPoint {
                week_end: end,
                open_findings: 0,
                open_critical: 0,
                high_risk_closed: 0,
                high_risk_closed_within_sla: 0,
                within_sla_pct: None,
                mean_time_to_remediate_hours: None,
                governed_assets: 0,
                active_exceptions: 0,
            };
            let (mut ttr, mut n) = (0i64, 0i64);
            for f in t.findings.values() {
                let open_at_end = f.opened_at <= end && f.closed_at.is_none_or(|c| c > end);
                if open_at_end {
                    p.open_findings += 1;
                    if f.severity == Risk::Critical {
                        p.open_critical += 1;
                    }
                }
                if let Some(c) = f.closed_at
                    && c > start
                    && c <= end
                {
                    ttr += (c.0 - f.opened_at.0).max(0);
                    n += 1;
                    if is_high_risk(f) {
                        p.high_risk_closed += 1;
                        if clock::closed_within_sla(f.into()) {
                            p.high_risk_closed_within_sla += 1;
                        }
                    }
                }
            }
            p.within_sla_pct = pct(p.high_risk_closed_within_sla, p.high_risk_closed);
            p.mean_time_to_remediate_hours =
                (n > 0).then(|| round1(ttr as f64 / n as f64 / 3_600_000.0));
            p.governed_assets = t
                .coverage
                .values()
                .filter(|c| {
                    c.kind != CoverageKind::ActionPath
                        && c.registered
                        && c.first_seen.is_some_and(|s| s <= end)
                })
                .count() as u64;
            p.active_exceptions = t
                .exceptions
                .values()
                .filter(|e| clock::exception_in_force_at(e, end))
                .count() as u64;
            p
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aispm_schemas::{ControlRow, CoverageRow, Environment, ExceptionRow};

    fn finding(
        id: &str,
        sev: Risk,
        opened: i64,
        closed: Option<i64>,
        due: Option<i64>,
    ) -> FindingRow {
        FindingRow {
            asserted_by: None,
            finding_id: id.into(),
            rule_id: "rule".into(),
            title: id.into(),
            severity: sev,
            status: if closed.is_some() {
                FindingStatus::Closed
            } else {
                FindingStatus::Open
            },
            subject: "s".into(),
            owner: Some("o".into()),
            due_at: due.map(Timestamp),
            opened_at: Timestamp(opened),
            closed_at: closed.map(Timestamp),
            resolution: None,
            frameworks: vec![],
            event_ids: vec![],
            occurrences: 1,
            exception_id: None,
            exception_expires_at: None,
            first_occurrence_at: Timestamp(opened),
            last_occurrence_at: Timestamp(opened),
            environments: Vec::new(),
            risk: Default::default(),
        }
    }

    fn coverage(kind: CoverageKind, id: &str, registered: bool, decisions: i64) -> CoverageRow {
        CoverageRow {
            asserted_by: None,
            kind,
            id: id.into(),
            registered,
            retired: false,
            owner: None,
            trust: None,
            decisions,
            synthetic_decisions: 0,
            first_seen: Some(Timestamp(0)),
            last_seen: Some(Timestamp(0)),
            last_decision_id: None,
            last_real_decision_id: None,
            shadow_ai: !registered && decisions > 0,
            environments: vec![],
        }
        .only_in(Environment::Production)
    }

    #[test]
    fn figures_from_rows() {
        let now = Timestamp(100 * DAY_MS);
        let mut t = TenantState::default();
        for f in [
            // closed in 2 days, within SLA
            finding("a", Risk::High, 0, Some(2 * DAY_MS), Some(3 * DAY_MS)),
            // closed in 4 days, after its due date
            finding("b", Risk::Critical, 0, Some(4 * DAY_MS), Some(3 * DAY_MS)),
            // open critical, overdue
            finding("c", Risk::Critical, 0, None, Some(50 * DAY_MS)),
            finding("d", Risk::Low, 0, None, None),
        ] {
            t.findings.insert(f.finding_id.clone(), f);
        }
        for c in [
            coverage(CoverageKind::Agent, "a1", true, 3),
            coverage(CoverageKind::Agent, "shadow", false, 2),
            coverage(CoverageKind::Repo, "never-seen", true, 0),
            coverage(CoverageKind::ActionPath, "file", false, 5),
        ] {
            t.coverage.insert(c.id.clone(), c);
        }
        t.controls.insert(
            "c1".into(),
            ControlRow {
                asserted_by: None,
                control_id: "c1".into(),
                state: ControlState::Shadowed,
                registered: true,
                enforced_decisions: 0,
                shadow_decisions: 1,
                high_risk_decisions: 0,
                action_kinds: vec![],
                framework_mappings: vec![],
                decision_ids: vec![],
                last_decision_at: None,
                environments: vec![],
                last_enforced_at: None,
                policies: vec![],
                approvals: vec![],
            }
            .only_in(Environment::Production),
        );
        t.exceptions.insert(
            "x1".into(),
            ExceptionRow {
                asserted_by: None,
                exception_id: "x1".into(),
                kind: ExceptionKind::Exception,
                finding_id: Some("c".into()),
                control_id: None,
                decision_id: None,
                owner: Some("o".into()),
                actor: None,
                reason: None,
                granted_at: Timestamp(90 * DAY_MS),
                expires_at: Some(Timestamp(120 * DAY_MS)),
                revoked: false,
                reviewed_at: None,
                reviewed_by: None,
                event_ids: vec![],
            },
        );
        let k = Kpis::compute(&t, now, &clock::Windows::default());
        assert_eq!((k.assets_seen, k.assets_governed), (2, 1));
        assert_eq!(k.coverage_pct, Some(50.0));
        assert_eq!(k.shadow_ai_ids, ["shadow"]);
        assert_eq!((k.findings_open, k.findings_open_critical), (2, 1));
        assert_eq!(k.overdue_ids, ["c"]);
        assert_eq!((k.high_risk_closed, k.high_risk_closed_within_sla), (2, 1));
        assert_eq!(k.high_risk_within_sla_pct, Some(50.0));
        assert_eq!(k.mean_time_to_remediate_hours, Some(72.0));
        assert_eq!(k.control_gap_ids, ["c1"]);
        assert_eq!(k.enforced_pct, Some(0.0));
        assert_eq!(k.exceptions_active, 1);
        assert_eq!(k.exception_mean_age_days, Some(10.0));
        // After the exception's expiry it counts as expired.
        let later = Kpis::compute(&t, Timestamp(121 * DAY_MS), &clock::Windows::default());
        assert_eq!(later.expired_exception_ids, ["x1"]);

        let series = trends(&t, Timestamp(7 * DAY_MS), 2);
        assert_eq!(series.len(), 2);
        // Week ending day 0: every finding just opened, none closed.
        assert_eq!(series[0].open_findings, 4);
        // Week ending day 7: a and b closed during it, one of two within SLA.
        assert_eq!(series[1].open_findings, 2);
        assert_eq!(series[1].high_risk_closed, 2);
        assert_eq!(series[1].within_sla_pct, Some(50.0));
    }
}
