//! The runtime signals, raised per agent and minute of event time when one of its counts
//! crosses a threshold (`--runaway-per-minute`, `--loop-repeats`, `--denials-per-minute`,
//! `--retries-per-minute`): AISPM-RUN-001, a runaway rate of decisions; AISPM-RUN-002, the
//! same call on the same target repeated (a loop); AISPM-RUN-003, many actions denied (a
//! denial storm); AISPM-RUN-004, a denied call retried again and again. Each count only
//! grows, so each threshold is crossed exactly once per minute whatever the order.

use super::{Condition, Ctx, Logic, On, Settings, newest};
use crate::batch::Overlay;
use crate::error::Result;
use crate::state::{AssetAgg, Tag, ids};
use aispm_schemas::CoverageKind;
use aispm_schemas::rules as catalog;

pub(super) const RULES: &[Logic] = &[RUNAWAY_AGENT, AGENT_LOOP, DENIAL_STORM, RETRY_BURST];

const ON: &[On] = &[On::RiskOf(CoverageKind::Agent)];

const RUNAWAY_AGENT: Logic = Logic {
    signal: Some(|m, s| m.decisions == s.runaway_per_minute + 1),
    ..Logic::new(catalog::RUNAWAY_AGENT, ON, fired)
};

const AGENT_LOOP: Logic = Logic {
    signal: Some(|m, s| m.call.0 == s.loop_repeats),
    ..Logic::new(catalog::AGENT_LOOP, ON, fired)
};

const DENIAL_STORM: Logic = Logic {
    signal: Some(|m, s| m.this_denied && m.denied == s.denials_per_minute),
    ..Logic::new(catalog::DENIAL_STORM, ON, fired)
};

const RETRY_BURST: Logic = Logic {
    signal: Some(|m, s| retrying(m.call, s) && !retrying(m.call_before, s)),
    ..Logic::new(catalog::RETRY_BURST, ON, fired)
};

/// A call denied at least once and attempted `--retries-per-minute` times in the minute.
fn retrying((attempts, denied): (i64, i64), s: &Settings) -> bool {
    denied > 0 && attempts >= s.retries_per_minute
}

/// The minutes the signal fired, with the agent's newest decisions (`apply.rs` derives it
/// again on every decision of an agent it fired for).
fn fired(ov: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    ov.with(ctx.tenant, Tag::Asset, &ctx.asset(), |a: &AssetAgg| {
        let Some(sig) = a.signals.get(ctx.rule.id).filter(|s| s.minutes > 0) else {
            return Condition::none(newest([a.last_decision.as_ref()]));
        };
        Condition {
            exists: true,
            active: true,
            opened_at: sig.first.unwrap_or(0),
            last_trigger: sig.last.unwrap_or(0),
            cleared_at: None,
            ids: ids(&a.recent),
            occurrences: sig.minutes,
            stamp: newest([a.last_decision.as_ref()]),
            recent: a.recent.clone(),
            environments: a.environments.keys().copied().collect(),
        }
    })
}
