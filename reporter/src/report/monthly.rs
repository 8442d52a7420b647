//! The monthly review's own content (the `cso` report, which the default cadence runs on the
//! 1st of each month): how long the exceptions in force have stood and which end soon, which
//! controls drifted in the period (from enforced to shadow mode, or to a new policy), and how
//! requests for approval were answered month by month.
//!
//! Pure functions of the view rows and the report's clock, judged with `aispm_schemas::clock`
//! like every other report figure.

use crate::state::TenantState;
use aispm_schemas::views::{ApprovalMonth, month_index, month_name};
use aispm_schemas::{ControlRow, ControlState, ExceptionKind, ExceptionRow, Timestamp, clock};
use serde::Serialize;

const DAY_MS: i64 = 86_400_000;

/// Exceptions in force at the report's time, by age, and those that end soon or ended in the
/// period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExceptionAging {
    /// Exceptions in force (`clock::exception_active`).
    pub in_force: u64,
    /// Of those, granted less than 30 days ago, 30 to 90 days ago, and 90 days ago or more.
    pub under_30_days: u64,
    pub from_30_to_90_days: u64,
    pub over_90_days: u64,
    /// Of those, without an expiry: standing until revoked.
    pub without_expiry: u64,
    /// Of those, expiring within 30 days.
    pub expiring_within_30_days: u64,
    /// Unrevoked exceptions that expired within the period and were not renewed (no exception
    /// in force covers the same finding or control).
    pub expired_unrenewed: u64,
    /// Every exception in force, the oldest first, and the expired unrenewed ones after them.
    pub items: Vec<AgingItem>,
}

/// One exception of [`ExceptionAging`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgingItem {
    pub exception_id: String,
    /// The finding or control it covers.
    pub covers: Option<String>,
    pub owner: Option<String>,
    pub granted_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// Days since it was granted, at the report's time.
    pub age_days: i64,
    /// Whole days until it expires (negative: expired that long ago); none without expiry.
    pub days_left: Option<i64>,
    /// `in_force` or `expired_unrenewed`.
    pub state: &'static str,
}

fn covers(x: &ExceptionRow) -> Option<&str> {
    x.finding_id.as_deref().or(x.control_id.as_deref())
}

/// The exception aging of `t` at `now`, for a period starting at `start`.
pub fn exception_aging(t: &TenantState, now: Timestamp, start: Timestamp) -> ExceptionAging {
    let exceptions: Vec<&ExceptionRow> = t
        .exceptions
        .values()
        .filter(|x| x.kind == ExceptionKind::Exception)
        .collect();
    let in_force: Vec<&ExceptionRow> = exceptions
        .iter()
        .copied()
        .filter(|x| clock::exception_active(x, now))
        .collect();
    let covered: std::collections::BTreeSet<&str> =
        in_force.iter().filter_map(|x| covers(x)).collect();
    let expired: Vec<&ExceptionRow> = exceptions
        .iter()
        .copied()
        .filter(|x| {
            !x.revoked
                && x.expires_at
                    .is_some_and(|e| e >= start && clock::expired(Some(e), now))
                && covers(x).is_none_or(|c| !covered.contains(c))
        })
        .collect();
    let item = |x: &ExceptionRow, state| AgingItem {
        exception_id: x.exception_id.clone(),
        covers: covers(x).map(str::to_owned),
        owner: x.owner.clone(),
        granted_at: x.granted_at,
        expires_at: x.expires_at,
        age_days: (now.0 - x.granted_at.0).div_euclid(DAY_MS),
        days_left: x.expires_at.map(|e| (e.0 - now.0).div_euclid(DAY_MS)),
        state,
    };
    let mut items: Vec<AgingItem> = in_force.iter().map(|x| item(x, "in_force")).collect();
    items.sort_by(|a, b| (a.granted_at, &a.exception_id).cmp(&(b.granted_at, &b.exception_id)));
    let mut gone: Vec<AgingItem> = expired
        .iter()
        .map(|x| item(x, "expired_unrenewed"))
        .collect();
    gone.sort_by(|a, b| (a.expires_at, &a.exception_id).cmp(&(b.expires_at, &b.exception_id)));
    let count = |f: &dyn Fn(&AgingItem) -> bool| items.iter().filter(|i| f(i)).count() as u64;
    ExceptionAging {
        in_force: items.len() as u64,
        under_30_days: count(&|i| i.age_days < 30),
        from_30_to_90_days: count(&|i| (30..90).contains(&i.age_days)),
        over_90_days: count(&|i| i.age_days >= 90),
        without_expiry: count(&|i| i.expires_at.is_none()),
        expiring_within_30_days: count(&|i| {
            i.expires_at.is_some_and(|e| e.0 < now.0 + 30 * DAY_MS)
        }),
        expired_unrenewed: gone.len() as u64,
        items: items.into_iter().chain(gone).collect(),
    }
}

/// One control's drift in the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    pub control_id: String,
    /// `enforced_to_shadow`: its newest decision is in shadow mode and it last enforced within
    /// the period; `policy_changed`: its decisions named a policy for the first time within
    /// the period, after naming another.
    pub change: &'static str,
    /// When: the last enforced decision, or the new policy's first use.
    pub at: Timestamp,
    pub from: String,
    pub to: String,
    /// The control's newest decisions (drill-down).
    pub decision_ids: Vec<String>,
}

/// The drift of each control of `t` in the period from `start` to `now`, oldest first.
pub fn policy_drift(t: &TenantState, now: Timestamp, start: Timestamp) -> Vec<Drift> {
    let mut out: Vec<Drift> = t
        .controls
        .values()
        .flat_map(|c| control_drift(c, now, start))
        .collect();
    out.sort_by(|a, b| (a.at, &a.control_id, a.change).cmp(&(b.at, &b.control_id, b.change)));
    out
}

fn control_drift(c: &ControlRow, now: Timestamp, start: Timestamp) -> Vec<Drift> {
    let in_period = |t: Timestamp| t >= start && t <= now;
    let mut out = Vec::new();
    if c.state == ControlState::Shadowed
        && let Some(e) = c.last_enforced_at.filter(|e| in_period(*e))
    {
        out.push(Drift {
            control_id: c.control_id.clone(),
            change: "enforced_to_shadow",
            at: e,
            from: "enforced".into(),
            to: "shadow".into(),
            decision_ids: c.decision_ids.clone(),
        });
    }
    // Policies oldest first by first use: each first used in the period replaced the one
    // before it.
    for pair in c.policies.windows(2) {
        let (before, new) = (&pair[0], &pair[1]);
        if in_period(new.first_seen_at) && before.first_seen_at < new.first_seen_at {
            out.push(Drift {
                control_id: c.control_id.clone(),
                change: "policy_changed",
                at: new.first_seen_at,
                from: before.policy_id.clone(),
                to: new.policy_id.clone(),
                decision_ids: c.decision_ids.clone(),
            });
        }
    }
    out
}

/// How many calendar months the approval trends show: the period's last month and the five
/// before it.
pub const TREND_MONTHS: i64 = 6;

/// Requests for approval, month by month over the tenant, and by control for the period's
/// last month: the monthly review's approval trends.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApprovalTrends {
    /// [`TREND_MONTHS`] calendar months (UTC) ending with the one holding the period's last
    /// instant, oldest first, each summed over every control.
    pub months: Vec<MonthFigures>,
    /// Every control with requests in that last month or the one before, most requests
    /// first.
    pub controls: Vec<ControlApprovals>,
}

/// The requests for approval of one month (by the request's event time).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MonthFigures {
    /// `YYYY-MM`.
    pub month: String,
    pub requested: i64,
    pub granted: i64,
    pub denied: i64,
    /// Not answered at the report's time.
    pub pending: i64,
    /// Granted, of the answered, in percent (none without answers).
    pub granted_pct: Option<f64>,
    /// The time to decision that half of the answers (`median`) and nine in ten (`p90`)
    /// stayed within; `None` without answers.
    pub median: Option<DecisionBound>,
    pub p90: Option<DecisionBound>,
}

/// A bound of the time to decision: a bucket bound of
/// [`aispm_schemas::views::DECISION_BUCKETS_MS`] (`{"within_ms": 300000}`), or past the last
/// one (`"over_a_week"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionBound {
    WithinMs(i64),
    OverAWeek,
}

impl DecisionBound {
    fn of(q: Option<Option<i64>>) -> Option<Self> {
        q.map(|b| b.map_or(DecisionBound::OverAWeek, DecisionBound::WithinMs))
    }
}

impl MonthFigures {
    fn of(month: &ApprovalMonth) -> Self {
        let answered = month.granted + month.denied;
        MonthFigures {
            month: month.month.clone(),
            requested: month.requested,
            granted: month.granted,
            denied: month.denied,
            pending: month.pending(),
            granted_pct: (answered > 0).then(|| 100.0 * month.granted as f64 / answered as f64),
            median: DecisionBound::of(month.quantile_bound(0.5)),
            p90: DecisionBound::of(month.quantile_bound(0.9)),
        }
    }
}

/// One control's requests in the period's last month, against the month before.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlApprovals {
    pub control_id: String,
    pub this_month: MonthFigures,
    /// Requests in the month before.
    pub previous_requested: i64,
}

/// Sums `into` and `m` (the month name kept from `into`).
fn add(into: &mut ApprovalMonth, m: &ApprovalMonth) {
    into.requested += m.requested;
    into.granted += m.granted;
    into.denied += m.denied;
    into.decide_ms_sum += m.decide_ms_sum;
    if into.decide_buckets.len() < m.decide_buckets.len() {
        into.decide_buckets.resize(m.decide_buckets.len(), 0);
    }
    for (a, b) in into.decide_buckets.iter_mut().zip(&m.decide_buckets) {
        *a += b;
    }
}

/// The approval trends of `t` for a period ending at `now`.
pub fn approval_trends(t: &TenantState, now: Timestamp) -> ApprovalTrends {
    let last = month_index(now.0 - 1);
    let first = last - TREND_MONTHS + 1;
    let mut months: Vec<ApprovalMonth> = (first..=last)
        .map(|i| ApprovalMonth {
            month: month_name(i),
            ..ApprovalMonth::default()
        })
        .collect();
    let (this, before) = (month_name(last), month_name(last - 1));
    let mut controls = Vec::new();
    for c in t.controls.values() {
        for m in &c.approvals {
            if let Some(sum) = months.iter_mut().find(|s| s.month == m.month) {
                add(sum, m);
            }
        }
        let find = |name: &str| c.approvals.iter().find(|m| m.month == name);
        let previous_requested = find(&before).map_or(0, |m| m.requested);
        let this_month = find(&this).cloned().unwrap_or_else(|| ApprovalMonth {
            month: this.clone(),
            ..ApprovalMonth::default()
        });
        if this_month.requested > 0 || previous_requested > 0 {
            controls.push(ControlApprovals {
                control_id: c.control_id.clone(),
                this_month: MonthFigures::of(&this_month),
                previous_requested,
            });
        }
    }
    controls.sort_by(|a, b| {
        (b.this_month.requested, b.previous_requested, &a.control_id).cmp(&(
            a.this_month.requested,
            a.previous_requested,
            &b.control_id,
        ))
    });
    ApprovalTrends {
        months: months.iter().map(MonthFigures::of).collect(),
        controls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aispm_schemas::PolicyUse;

    const NOW: i64 = 1_000 * DAY_MS;

    fn exception(
        id: &str,
        covers: &str,
        granted_days_ago: i64,
        expires_in: Option<i64>,
    ) -> ExceptionRow {
        ExceptionRow {
            exception_id: id.into(),
            kind: ExceptionKind::Exception,
            finding_id: Some(covers.into()),
            control_id: None,
            decision_id: None,
            owner: Some("risk-owner".into()),
            actor: None,
            reason: None,
            granted_at: Timestamp(NOW - granted_days_ago * DAY_MS),
            expires_at: expires_in.map(|d| Timestamp(NOW + d * DAY_MS)),
            revoked: false,
            reviewed_at: None,
            reviewed_by: None,
            event_ids: vec![],
            asserted_by: None,
        }
    }

    #[test]
    fn exceptions_age_by_their_grant_and_expired_ones_count_until_renewed() {
        let mut t = TenantState::default();
        for x in [
            exception("x-new", "f1", 2, Some(60)),
            exception("x-month", "f2", 30, Some(10)),
            exception("x-old", "f3", 90, None),
            // Expired 5 days ago, its finding uncovered: expired unrenewed.
            exception("x-gone", "f4", 40, Some(-5)),
            // Expired 3 days ago and renewed: x-renew covers f5.
            exception("x-lapsed", "f5", 50, Some(-3)),
            exception("x-renew", "f5", 3, Some(90)),
            // Expired before the period: not counted.
            exception("x-ancient", "f6", 400, Some(-45)),
        ] {
            t.exceptions.insert(x.exception_id.clone(), x);
        }
        let mut revoked = exception("x-revoked", "f7", 20, Some(-1));
        revoked.revoked = true;
        t.exceptions.insert(revoked.exception_id.clone(), revoked);

        let a = exception_aging(&t, Timestamp(NOW), Timestamp(NOW - 30 * DAY_MS));
        assert_eq!(a.in_force, 4);
        assert_eq!(
            (a.under_30_days, a.from_30_to_90_days, a.over_90_days),
            (2, 1, 1),
            "x-new and x-renew; x-month (30 days is the second bucket); x-old"
        );
        assert_eq!(a.without_expiry, 1);
        assert_eq!(a.expiring_within_30_days, 1, "x-month, in 10 days");
        assert_eq!(a.expired_unrenewed, 1, "x-gone: f5 is covered again");
        let order: Vec<(&str, &str)> = a
            .items
            .iter()
            .map(|i| (i.exception_id.as_str(), i.state))
            .collect();
        assert_eq!(
            order,
            [
                ("x-old", "in_force"),
                ("x-month", "in_force"),
                ("x-renew", "in_force"),
                ("x-new", "in_force"),
                ("x-gone", "expired_unrenewed"),
            ]
        );
        let gone = &a.items[4];
        assert_eq!((gone.age_days, gone.days_left), (40, Some(-5)));
    }

    fn control(
        id: &str,
        state: ControlState,
        last_enforced_days_ago: Option<i64>,
        policies: &[(&str, i64)],
    ) -> ControlRow {
        ControlRow {
            asserted_by: None,
            control_id: id.into(),
            state,
            registered: true,
            enforced_decisions: 1,
            shadow_decisions: 1,
            high_risk_decisions: 0,
            action_kinds: vec![],
            framework_mappings: vec![],
            decision_ids: vec![format!("{id}-d1")],
            last_decision_at: Some(Timestamp(NOW - DAY_MS)),
            environments: vec![],
            last_enforced_at: last_enforced_days_ago.map(|d| Timestamp(NOW - d * DAY_MS)),
            policies: policies
                .iter()
                .map(|(p, first_days_ago)| PolicyUse {
                    policy_id: (*p).into(),
                    first_seen_at: Timestamp(NOW - first_days_ago * DAY_MS),
                    last_seen_at: Timestamp(NOW - DAY_MS),
                    decisions: 1,
                })
                .collect(),
            approvals: vec![],
        }
    }

    #[test]
    fn drift_names_controls_gone_to_shadow_and_new_policies_within_the_period() {
        let mut t = TenantState::default();
        for c in [
            // Enforced 10 days ago, shadow now: drifted in the period.
            control("c-drift", ControlState::Shadowed, Some(10), &[]),
            // Shadow since before the period: not a change in it.
            control("c-long-shadow", ControlState::Shadowed, Some(45), &[]),
            // Enforced now: nothing, whatever its last enforced decision.
            control("c-enforced", ControlState::Enforced, Some(1), &[]),
            // p1 from 100 days ago, p2 from 20, p3 from 5: two changes, both in the period.
            control(
                "c-policy",
                ControlState::Enforced,
                Some(1),
                &[("p1", 100), ("p2", 20), ("p3", 5)],
            ),
            // One policy only: no change.
            control("c-one", ControlState::Enforced, Some(1), &[("p9", 3)]),
        ] {
            t.controls.insert(c.control_id.clone(), c);
        }
        let d = policy_drift(&t, Timestamp(NOW), Timestamp(NOW - 30 * DAY_MS));
        let got: Vec<(&str, &str, &str, &str, i64)> = d
            .iter()
            .map(|d| {
                (
                    d.control_id.as_str(),
                    d.change,
                    d.from.as_str(),
                    d.to.as_str(),
                    (NOW - d.at.0) / DAY_MS,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("c-policy", "policy_changed", "p1", "p2", 20),
                ("c-drift", "enforced_to_shadow", "enforced", "shadow", 10),
                ("c-policy", "policy_changed", "p2", "p3", 5),
            ]
        );
    }

    /// A month of `requested` requests whose answers came after the given times (ms),
    /// granted when positive, denied when negative.
    fn month(name: &str, requested: i64, answers: &[i64]) -> ApprovalMonth {
        let mut m = ApprovalMonth {
            month: name.into(),
            requested,
            ..ApprovalMonth::default()
        };
        for a in answers {
            m.count_answer(a.abs(), *a > 0, 1);
        }
        m
    }

    #[test]
    fn approval_trends_sum_months_over_controls_and_compare_the_last_month() {
        // The period ends at 2026-12-01T00:00Z: its last month is November.
        let now = Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        let mut t = TenantState::default();
        let mut shell = control("ctl-shell", ControlState::Enforced, Some(1), &[]);
        shell.approvals = vec![
            // Before the six months: not shown.
            month("2026-05", 7, &[]),
            month("2026-10", 2, &[60_000, -120_000]),
            // 4 requests: 2 granted within a minute and 5 minutes, 1 denied after 2 hours,
            // one pending.
            month("2026-11", 4, &[30_000, 200_000, -7_200_000]),
        ];
        let mut git = control("ctl-git", ControlState::Enforced, Some(1), &[]);
        git.approvals = vec![month("2026-11", 1, &[])];
        let mut quiet = control("ctl-quiet", ControlState::Enforced, Some(1), &[]);
        quiet.approvals = vec![month("2026-08", 3, &[10_000, 10_000, 10_000])];
        for c in [shell, git, quiet] {
            t.controls.insert(c.control_id.clone(), c);
        }
        let a = approval_trends(&t, now);
        let months: Vec<(&str, i64, i64, i64, i64)> = a
            .months
            .iter()
            .map(|m| {
                (
                    m.month.as_str(),
                    m.requested,
                    m.granted,
                    m.denied,
                    m.pending,
                )
            })
            .collect();
        assert_eq!(
            months,
            [
                ("2026-06", 0, 0, 0, 0),
                ("2026-07", 0, 0, 0, 0),
                ("2026-08", 3, 3, 0, 0),
                ("2026-09", 0, 0, 0, 0),
                ("2026-10", 2, 1, 1, 0),
                ("2026-11", 5, 2, 1, 2),
            ]
        );
        let nov = &a.months[5];
        assert_eq!(nov.granted_pct.map(|p| (p * 10.0).round()), Some(667.0));
        // Answers within 1 min, 5 min and 4 h: the median is the 5-minute bucket, the p90 the
        // 4-hour one.
        assert_eq!(nov.median, Some(DecisionBound::WithinMs(300_000)));
        assert_eq!(nov.p90, Some(DecisionBound::WithinMs(14_400_000)));
        assert_eq!(a.months[0].median, None);
        assert_eq!(
            serde_json::to_value(nov).unwrap()["median"],
            serde_json::json!({"within_ms": 300_000})
        );
        let controls: Vec<(&str, i64, i64)> = a
            .controls
            .iter()
            .map(|c| {
                (
                    c.control_id.as_str(),
                    c.this_month.requested,
                    c.previous_requested,
                )
            })
            .collect();
        assert_eq!(controls, [("ctl-shell", 4, 2), ("ctl-git", 1, 0)]);
        // A report at the first instant of December still reviews November; one a
        // millisecond later has December as its last month.
        let later = approval_trends(&t, Timestamp(now.0 + 1));
        assert_eq!(later.months[5].month, "2026-12");
        assert_eq!(later.controls.len(), 2, "November is now the month before");
    }
}
