//! API keys: AISPM-KEY-001, a key registered with wildcard or admin scopes (a registration
//! decides it), and AISPM-KEY-002, a key in use with scopes it has not used for the window
//! (`--unused-scope-window`).

use super::{Condition, Ctx, Logic, On, newest, registered};
use crate::batch::Overlay;
use crate::error::Result;
use crate::state::{AssetAgg, KEY_SCOPES, Tag};
use aispm_schemas::rules as catalog;
use aispm_schemas::{Asset, AssetKind, AssetStatus, risk};
use std::collections::BTreeSet;

pub(super) const RULES: &[Logic] = &[WILDCARD_KEY, UNUSED_SCOPE];

const WILDCARD_KEY: Logic = Logic {
    flag: Some(privileged),
    ..Logic::new(
        catalog::WILDCARD_KEY,
        &[On::Registered(AssetKind::ApiKey)],
        registered,
    )
};

const UNUSED_SCOPE: Logic = Logic::new(
    catalog::UNUSED_SCOPE,
    &[On::KeyUsed, On::Registered(AssetKind::ApiKey)],
    unused_scope,
);

fn privileged(a: &Asset) -> bool {
    a.status == AssetStatus::Registered && a.scopes.iter().any(|s| risk::privileged_scope(s))
}

fn unused_scope(ov: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    let window = ctx.settings.unused_scope_ms;
    ov.with(ctx.tenant, Tag::Asset, &ctx.asset(), |a: &AssetAgg| {
        unused_scope_condition(a, window)
    })
}

/// The scopes of an API key's registration that its decisions did not exercise within `window`
/// before the key's newest use (since it was first registered, for a scope never used): by
/// event time only, so the same events give the same answer in any order. A key not used at
/// all has none (nothing to compare with: its staleness is not over-privilege).
pub(crate) fn unused_scopes(a: &AssetAgg, window: i64) -> Vec<(String, Option<i64>)> {
    let (Some(reg), Some(used)) = (&a.registration, &a.last_decision) else {
        return Vec::new();
    };
    if reg.value.retired {
        return Vec::new();
    }
    let since = a.registered_since.unwrap_or(reg.at.0);
    let last = a.reach.get(KEY_SCOPES);
    // In the registration's order, each scope once (a registration may name one twice).
    let mut named = BTreeSet::new();
    reg.value
        .scopes
        .iter()
        .filter(|s| named.insert(s.as_str()))
        .map(|s| (s.clone(), last.and_then(|l| l.get(s)).copied()))
        .filter(|(_, l)| used.0.saturating_sub(l.unwrap_or(since).max(since)) >= window)
        .collect()
}

/// AISPM-KEY-002: a key in use with scopes it has not used for the window. It stands while
/// that holds, and leaves the view when each of those scopes is used again or removed from
/// the key's registration.
fn unused_scope_condition(a: &AssetAgg, window: i64) -> Condition {
    let reg_at = a.registration.as_ref().map(|r| &r.at);
    let stamp = newest([reg_at, a.last_decision.as_ref()]);
    let unused = unused_scopes(a, window);
    if unused.is_empty() {
        return Condition::none(stamp);
    }
    let since = a
        .registered_since
        .or(reg_at.map(|r| r.0))
        .unwrap_or_default();
    // It opened when the first of its scopes reached the end of its window unused.
    let opened_at = unused
        .iter()
        .map(|(_, l)| l.unwrap_or(since).max(since).saturating_add(window))
        .min()
        .unwrap_or(since);
    let mut ids: Vec<String> = reg_at.map(|r| r.1.clone()).into_iter().collect();
    ids.extend(crate::state::ids(&a.recent));
    Condition {
        exists: true,
        active: true,
        opened_at,
        last_trigger: a.last_decision.as_ref().map_or(opened_at, |l| l.0),
        cleared_at: None,
        ids,
        occurrences: i64::try_from(unused.len()).unwrap_or(i64::MAX),
        stamp,
        recent: a.recent.clone(),
        environments: a.environments.keys().copied().collect(),
    }
}
