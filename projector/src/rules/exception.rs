//! Exceptions: AISPM-BG-001, a break-glass reviewed at or after the end of its review window
//! (`clock::review_in_time`), and AISPM-EXC-001, the finding an exception covers firing again
//! once the exception had expired (`clock::expired`).

use super::{Condition, Ctx, Logic, On, finding_id, newest, split_finding_id};
use crate::batch::Overlay;
use crate::error::Result;
use crate::state::{ExceptionAgg, FindingFacts, Tag, ids};
use aispm_schemas::rules as catalog;
use aispm_schemas::{Timestamp, clock};
use std::collections::BTreeSet;

pub(super) const RULES: &[Logic] = &[BREAK_GLASS_LATE, EXCEPTION_EXPIRED];

const BREAK_GLASS_LATE: Logic =
    Logic::new(catalog::BREAK_GLASS_LATE, &[On::Exception], reviewed_late);

const EXCEPTION_EXPIRED: Logic = Logic {
    follows: Some(exceptions_of),
    ..Logic::new(catalog::EXCEPTION_EXPIRED, &[On::Exception], expired)
};

/// Every exception granted for a finding has an expiry finding that reads it, whether that
/// finding exists or not.
fn exceptions_of(facts: &FindingFacts) -> Vec<String> {
    facts
        .exceptions
        .iter()
        .map(|x| finding_id(catalog::EXCEPTION_EXPIRED, x))
        .collect()
}

fn reviewed_late(ov: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    let x: ExceptionAgg = ov.get(ctx.tenant, Tag::Exception, ctx.subject)?;
    let stamp = newest([x.ids.last()]);
    // Late as `clock::review_in_time` says: at or after the end of the review window.
    let window = std::time::Duration::from_millis(
        u64::try_from(ctx.settings.break_glass_review_ms).unwrap_or(0),
    );
    Ok(match (x.invoked_at, &x.reviewed) {
        (Some(inv), Some(rev))
            if !clock::review_in_time(Timestamp(inv), Timestamp(rev.at.0), window) =>
        {
            Condition {
                exists: true,
                active: true,
                opened_at: clock::review_deadline(Timestamp(inv), window).0,
                last_trigger: rev.at.0,
                cleared_at: None,
                ids: ids(&x.ids),
                occurrences: 1,
                stamp,
                recent: vec![rev.at.clone()],
                environments: BTreeSet::new(),
            }
        }
        _ => Condition::none(stamp),
    })
}

fn expired(ov: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    let x: ExceptionAgg = ov.get(ctx.tenant, Tag::Exception, ctx.subject)?;
    let stamp = newest([x.ids.last()]);
    let grant = x.grant.as_ref().map(|g| &g.value);
    Ok(
        match (
            grant.and_then(|g| g.finding_id.clone()),
            grant.and_then(|g| g.expires_at),
        ) {
            (Some(fid), Some(expires))
                if x.revoked_at.is_none()
                    && split_finding_id(&fid)
                        .is_some_and(|(r, _)| r.id != catalog::EXCEPTION_EXPIRED.id) =>
            {
                let covered = (ctx.other)(ov, ctx.tenant, &fid, ctx.settings)?;
                // The finding fired again once the exception had expired (`clock::expired`).
                let exists = covered.exists
                    && clock::expired(Some(Timestamp(expires)), Timestamp(covered.last_trigger));
                Condition {
                    exists,
                    active: exists && covered.open,
                    opened_at: expires,
                    last_trigger: covered.last_trigger,
                    cleared_at: None,
                    ids: vec![fid.clone(), ctx.subject.to_owned()],
                    occurrences: 1,
                    stamp: stamp.max(covered.stamp),
                    recent: Vec::new(),
                    environments: BTreeSet::new(),
                }
            }
            _ => Condition::none(stamp),
        },
    )
}
