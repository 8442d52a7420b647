//! Shadow AI: AISPM-SHADOW-001, decisions from an agent nobody registered, and
//! AISPM-SHADOW-002, decisions to a model endpoint nobody registered. Open while the asset is
//! unregistered (or retired and still used); closed by its registration, and kept as a
//! finding when it was used before it was registered.

use super::{Condition, Ctx, Logic, On, newest};
use crate::batch::Overlay;
use crate::error::Result;
use crate::state::{AssetAgg, Tag};
use aispm_schemas::rules as catalog;
use aispm_schemas::{AssetKind, CoverageKind};

pub(super) const RULES: &[Logic] = &[SHADOW_AGENT, SHADOW_MODEL];

const SHADOW_AGENT: Logic = Logic {
    named_counts: Some(not_retired),
    ..Logic::new(
        catalog::SHADOW_AGENT,
        &[
            On::Named(CoverageKind::Agent),
            On::RiskOf(CoverageKind::Agent),
        ],
        unregistered,
    )
};

const SHADOW_MODEL: Logic = Logic {
    named_counts: Some(not_retired),
    ..Logic::new(
        catalog::SHADOW_MODEL,
        &[
            On::Named(CoverageKind::ModelEndpoint),
            // Its risk reads the endpoint's data classes: a new one moves the row's state
            // even when the decision moved only the endpoint's counts.
            On::RiskOf(CoverageKind::ModelEndpoint),
            On::Registered(AssetKind::ModelEndpoint),
        ],
        unregistered,
    )
};

/// Their state reads the asset's first sighting, environments and registration, as its
/// coverage row does (the rest of a decision is counts and newest ids), and, once the asset is
/// retired, whether a decision came after the retirement.
fn not_retired(a: &AssetAgg) -> bool {
    !a.registration.as_ref().is_some_and(|r| r.value.retired)
}

fn unregistered(ov: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    ov.with(ctx.tenant, Tag::Asset, &ctx.asset(), shadow_condition)
}

fn shadow_condition(a: &AssetAgg) -> Condition {
    let stamp = newest([
        a.last_decision.as_ref(),
        a.registration.as_ref().map(|r| &r.at),
    ]);
    let Some(first) = a.first_seen else {
        return Condition::none(stamp);
    };
    let last = a.last_decision.as_ref().map_or(first, |l| l.0);
    let unregistered = match &a.registration {
        None => true,
        Some(r) => r.value.retired && last > r.at.0,
    };
    let was_shadow = a.registered_since.is_none_or(|since| first < since);
    Condition {
        exists: unregistered || was_shadow,
        active: unregistered,
        opened_at: first,
        last_trigger: last,
        cleared_at: if unregistered {
            None
        } else {
            a.registered_since
        },
        ids: crate::state::ids(&a.recent),
        occurrences: a.decisions,
        stamp,
        recent: a.recent.clone(),
        environments: a.environments.keys().copied().collect(),
    }
}
