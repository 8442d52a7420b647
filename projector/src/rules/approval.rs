//! Approvals: AISPM-APR-001, a high or critical action allowed without approval (each such
//! decision an occurrence, cleared by an approval granted for it, before or after it
//! arrives), and AISPM-APR-002, requests for approval still pending past the decision window
//! (`--approval-decision-window`) while their agent acts on.

use super::{Condition, Ctx, Logic, On, raised_condition};
use crate::batch::Overlay;
use crate::error::Result;
use crate::state::{
    AssetAgg, KEEP_IDS, OVERDUE_COUNTED, Stamp, Tag, overdue_before, pair_id, pending_before,
    split_pending,
};
use aispm_schemas::rules as catalog;
use aispm_schemas::{DecisionEvent, Risk, Verdict, finding_subject_parts};
use std::collections::BTreeSet;

pub(super) const RULES: &[Logic] = &[NO_APPROVAL, PENDING_APPROVAL];

const NO_APPROVAL: Logic = Logic {
    raise: Some(allowed_without_approval),
    cleared_by_approval: true,
    ..Logic::new(catalog::NO_APPROVAL, &[], raised_condition)
};

const PENDING_APPROVAL: Logic = Logic::new(catalog::PENDING_APPROVAL, &[On::Pending], overdue);

fn allowed_without_approval(d: &DecisionEvent) -> bool {
    matches!(d.risk, Risk::High | Risk::Critical)
        && d.verdict == Verdict::Allow
        && d.approval_id.is_none()
}

/// AISPM-APR-002 about `{agent}/{control}`: the agent's requests under the control still
/// pending at its newest decision, `window` or more after they were made
/// (`clock::approval_overdue` with the agent's newest decision as `now`). Event time only: the
/// pending requests (those no grant or denial names) and the newest decision are the same
/// whatever the order, so is the row. Each overdue request is an occurrence at the end of its
/// window: the row names the overdue requests, not the clock, so a decision of the agent
/// changes only the rows of pairs with a request it made overdue (`apply::PendingClock`).
/// It leaves the view once none is overdue: whether a request was ever overdue before its
/// answer came is not an order-free fact.
fn overdue(ov: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    let (tenant, window) = (ctx.tenant, ctx.settings.approval_decision_ms);
    let [agent, control] = <[String; 2]>::try_from(finding_subject_parts(ctx.subject))
        .unwrap_or_else(|_| [String::new(), String::new()]);
    let (clock, environments) = ov.with(
        tenant,
        Tag::Asset,
        &format!("agent/{agent}"),
        |a: &AssetAgg| {
            (
                a.last_decision.clone(),
                a.environments.keys().copied().collect::<BTreeSet<_>>(),
            )
        },
    )?;
    let Some(clock) = clock else {
        return Ok(Condition::default());
    };
    let prefix = format!("{}\0", pair_id(&control, &agent));
    let end = pending_before(&control, &agent, overdue_before(window, clock.0));
    let (overdue, capped) = ov.marks_below(tenant, Tag::Pending, &prefix, &end, OVERDUE_COUNTED)?;
    let stamps: Vec<Stamp> = overdue
        .iter()
        .filter_map(|id| split_pending(&id[prefix.len()..]))
        .map(|(at, decision)| (at, decision.to_owned()))
        .collect();
    let (Some(oldest), Some(newest)) = (stamps.first(), stamps.last()) else {
        return Ok(Condition::none(clock));
    };
    let occurrences = if capped {
        OVERDUE_COUNTED
    } else {
        stamps.len()
    };
    let recent: Vec<Stamp> = stamps.iter().take(KEEP_IDS).cloned().collect();
    Ok(Condition {
        exists: true,
        active: true,
        opened_at: oldest.0.saturating_add(window),
        // The newest counted request's window end: when it became overdue.
        last_trigger: newest.0.saturating_add(window),
        cleared_at: None,
        ids: crate::state::ids(&recent),
        occurrences: i64::try_from(occurrences).unwrap_or(i64::MAX),
        stamp: clock,
        recent,
        environments,
    })
}
