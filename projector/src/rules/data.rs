//! AISPM-DATA-001: a data class (PII, PHI, a secret) sent to a model endpoint not approved
//! for it. One finding per endpoint and class; closed by the endpoint's approval of the
//! class, and kept as a finding when the class was sent before that approval.

use super::{Condition, Ctx, Logic, On, newest};
use crate::batch::Overlay;
use crate::error::Result;
use crate::state::{AssetAgg, ExposureAgg, Tag, ids};
use aispm_schemas::rules as catalog;

pub(super) const RULES: &[Logic] = &[DATA_CLASS];

const DATA_CLASS: Logic = Logic::new(catalog::DATA_CLASS, &[On::Exposure], unapproved);

fn unapproved(ov: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    let class = ctx.subject.rsplit_once('/').map_or("", |(_, c)| c);
    // Read in place: an endpoint's aggregate holds its reach and every class it was sent.
    let (approved_now, since, registered) =
        ov.with(ctx.tenant, Tag::Asset, &ctx.asset(), |a: &AssetAgg| {
            (
                a.approves(class),
                a.approved_since.get(class).copied(),
                a.registration.as_ref().map(|r| r.at.clone()),
            )
        })?;
    ov.with(ctx.tenant, Tag::Exposure, ctx.subject, |e: &ExposureAgg| {
        let first = e.first.unwrap_or(0);
        Condition {
            exists: e.decisions > 0 && (!approved_now || since.is_none_or(|s| first < s)),
            active: e.decisions > 0 && !approved_now,
            opened_at: first,
            last_trigger: e.last.unwrap_or(0),
            cleared_at: if approved_now { since } else { None },
            ids: ids(&e.ids),
            occurrences: e.decisions,
            stamp: newest([e.ids.last(), registered.as_ref()]),
            recent: e.ids.clone(),
            environments: e.environments.clone(),
        }
    })
}
