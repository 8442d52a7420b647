//! Readiness as of a past instant T (`GET /v1/tenants/{tenant}/readiness?as_of=T`): the tenant's
//! view rows as of T, read from the projector's `/rows` route (which replays the tenant's events
//! that occurred by T, `projector/src/as_of.rs`) with the caller's own token, folded into a
//! fresh [`TenantState`] and judged by the same [`rules`] at T. Nothing is published: the
//! blocker and readiness topics hold the verdicts as they were made.

use crate::readiness::StageVerdict;
use crate::rules::{self, Policy};
use crate::state::TenantState;
use aispm_runtime::http::ApiError;
use aispm_runtime::peer::Peer;
use aispm_schemas::views::AsOf;
use aispm_schemas::{Stage, Timestamp};
use axum::http::HeaderValue;
use std::num::NonZeroUsize;

/// Where the rows come from, and how readiness is judged.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub projector: Peer,
    pub policy: Policy,
    pub tracked_evidence: NonZeroUsize,
}

/// The tenant's verdict per stage as of `at` (RFC 3339, as the caller gave it), and what the
/// projector's replay included.
pub(crate) async fn verdicts(
    source: &Source,
    token: &HeaderValue,
    tenant: &str,
    at: &str,
) -> Result<([StageVerdict; 3], AsOf), ApiError> {
    let when =
        Timestamp::parse_rfc3339(at).map_err(|e| ApiError::bad_request(format!("as_of: {e}")))?;
    let mut state = TenantState::new(source.tracked_evidence);
    let included = source
        .projector
        .rows_as_of(token, tenant, at, |view, key, row| {
            state
                .apply(view, key, Some(row))
                .map(|_| ())
                .map_err(|e| ApiError::internal(format!("{e:?}")))
        })
        .await?;
    let eval = rules::evaluate(&state, &source.policy, when);
    let verdicts = [Stage::Trial, Stage::Pilot, Stage::Production].map(|stage| {
        let drafts = &eval.stages[stage.index()];
        StageVerdict {
            ready: drafts.is_empty(),
            blockers: drafts
                .iter()
                .map(|d| d.blocker(tenant, stage, when))
                .collect(),
            evaluated_at: when,
        }
    });
    Ok((verdicts, included))
}
