//! The monthly review's own content (the `cso` report, which the default cadence runs on the
//! 1st of each month): how long the exceptions in force have stood and which end soon, and
//! which controls drifted in the period (from enforced to shadow mode, or to a new policy).
//!
//! Pure functions of the view rows and the report's clock, judged with `aispm_schemas::clock`
//! like every other report figure.

use crate::state::TenantState;
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
}
