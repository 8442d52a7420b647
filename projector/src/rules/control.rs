//! AISPM-CTRL-001: high or critical actions allowed while their control runs in shadow mode.
//! Open while the control's newest mode is shadow; cleared by an enforced decision after the
//! last such action.

use super::{Condition, Ctx, Logic, On, newest};
use crate::batch::Overlay;
use crate::error::Result;
use crate::state::{ControlAgg, Tag, ids};
use aispm_schemas::rules as catalog;

pub(super) const RULES: &[Logic] = &[SHADOW_CONTROL];

const SHADOW_CONTROL: Logic = Logic {
    // No such action yet: no finding, whatever else the decision moved.
    control_counts: Some(no_shadow_high_allows),
    ..Logic::new(catalog::SHADOW_CONTROL, &[On::Control], shadow_high_allows)
};

fn no_shadow_high_allows(c: &ControlAgg) -> bool {
    c.shadow_high_allows == 0
}

fn shadow_high_allows(ov: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    ov.with(ctx.tenant, Tag::Control, ctx.subject, |c: &ControlAgg| {
        Condition {
            exists: c.shadow_high_allows > 0,
            active: c.shadow_high_allows > 0 && c.mode.as_ref().is_some_and(|m| m.value),
            opened_at: c.shadow_high_first.unwrap_or(0),
            last_trigger: c.shadow_high_last.unwrap_or(0),
            cleared_at: c.last_enforced_at.filter(|e| Some(*e) > c.shadow_high_last),
            ids: ids(&c.shadow_high_ids),
            occurrences: c.shadow_high_allows,
            stamp: newest([c.recent.last()]),
            recent: c.shadow_high_ids.clone(),
            // Every environment the control decided in (a superset: fails closed).
            environments: c.environments.keys().copied().collect(),
        }
    })
}
