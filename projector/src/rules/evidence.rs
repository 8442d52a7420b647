//! Evidence: AISPM-EV-001, a high or critical decision without evidence, and AISPM-EV-002, a
//! decision whose evidence is not signed (each such decision an occurrence of the finding
//! about its agent and control: the control that should sign, not each item it left
//! unsigned; each item's row says `unsigned`); AISPM-EV-003, an item whose signature does not
//! verify against the tenant's trust roots (or the validators' keys, for a validation's
//! evidence), a finding per item, since a trust root registered later can make it verify.

use super::{Condition, Ctx, Logic, On, raised_condition};
use crate::batch::Overlay;
use crate::error::Result;
use crate::state::{EvidenceAgg, Tag};
use aispm_schemas::rules as catalog;
use aispm_schemas::views::SignatureState;
use aispm_schemas::{DecisionEvent, Risk};

pub(super) const RULES: &[Logic] = &[EVIDENCE_MISSING, EVIDENCE_UNSIGNED, EVIDENCE_SIGNATURE];

const EVIDENCE_MISSING: Logic = Logic {
    raise: Some(high_without_evidence),
    ..Logic::new(catalog::EVIDENCE_MISSING, &[], raised_condition)
};

const EVIDENCE_UNSIGNED: Logic = Logic {
    raise: Some(unsigned),
    ..Logic::new(catalog::EVIDENCE_UNSIGNED, &[], raised_condition)
};

const EVIDENCE_SIGNATURE: Logic =
    Logic::new(catalog::EVIDENCE_SIGNATURE, &[On::Evidence], not_verified);

fn high_without_evidence(d: &DecisionEvent) -> bool {
    matches!(d.risk, Risk::High | Risk::Critical) && d.evidence.is_none()
}

/// Evidence without a signature: unsigned whatever the tenant's trust roots
/// (`signatures::signature_state`), so the decision alone decides it.
fn unsigned(d: &DecisionEvent) -> bool {
    d.evidence.as_ref().is_some_and(|e| e.signature.is_none())
}

/// A finding about one evidence item while its signature does not verify (invalid, or by a
/// key that is no registered trust root).
fn not_verified(ov: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    let ev: EvidenceAgg = ov.get(ctx.tenant, Tag::Evidence, ctx.subject)?;
    Ok(match &ev.record {
        Some(r) => {
            let state = crate::signatures::signature_state(ov, ctx.tenant, ctx.subject, &r.value)?;
            let hit = matches!(state, SignatureState::Invalid | SignatureState::UnknownKey);
            Condition {
                exists: hit,
                active: hit,
                opened_at: r.value.recorded_at,
                last_trigger: r.value.recorded_at,
                cleared_at: None,
                ids: vec![r.value.event_id.clone()],
                occurrences: 1,
                stamp: r.at.clone(),
                recent: vec![(r.value.recorded_at, r.value.event_id.clone())],
                environments: r.value.environment.into_iter().collect(),
            }
        }
        None => Condition::default(),
    })
}
