//! Readiness as of a past instant T (`GET /v1/tenants/{tenant}/readiness?as_of=T`): the tenant's
//! view rows as of T, read from the projector's `/rows` route (which replays the tenant's events
//! that occurred by T, `projector/src/as_of.rs`) with the caller's own token, folded into a
//! fresh [`TenantState`] and judged by the same [`rules`] at T. Nothing is published: the
//! blocker and readiness topics hold the verdicts as they were made.

use crate::readiness::StageVerdict;
use crate::rules::{self, Policy};
use crate::state::TenantState;
use aispm_runtime::http::ApiError;
use aispm_schemas::{Stage, Timestamp, ViewName, ViewRow};
use axum::http::{HeaderValue, StatusCode};
use serde_json::Value;
use std::num::NonZeroUsize;
use std::time::Duration;

/// Rows per page read from the projector (its most).
const PAGE: usize = 1000;

/// Where the rows come from, and how readiness is judged.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub projector: String,
    pub http: reqwest::Client,
    pub policy: Policy,
    pub tracked_evidence: NonZeroUsize,
}

/// The projector's refusal, passed on with its status and reason (a `429`'s `Retry-After` too).
async fn refused(r: reqwest::Response) -> ApiError {
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let message = body["message"]
        .as_str()
        .unwrap_or("the projector refused the rows as of that instant")
        .to_owned();
    let code = if status.is_server_error() {
        "projector_failed"
    } else {
        "projector_refused"
    };
    let mut e = ApiError::new(status, code, format!("projector: {message}"));
    if let Some(s) = retry {
        e = e.with_retry_after(Duration::from_secs(s));
    }
    e
}

/// The tenant's verdict per stage as of `at` (RFC 3339, as the caller gave it), and what the
/// projector's replay included.
pub(crate) async fn verdicts(
    source: &Source,
    token: &HeaderValue,
    tenant: &str,
    at: &str,
) -> Result<([StageVerdict; 3], Value), ApiError> {
    let when =
        Timestamp::parse_rfc3339(at).map_err(|e| ApiError::bad_request(format!("as_of: {e}")))?;
    let mut state = TenantState::new(source.tracked_evidence);
    let mut included = Value::Null;
    for view in ViewName::ALL {
        let mut after: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> = vec![
                ("view", view.as_str().to_owned()),
                ("as_of", at.to_owned()),
                ("limit", PAGE.to_string()),
            ];
            if let Some(a) = &after {
                query.push(("after", a.clone()));
            }
            let r = source
                .http
                .get(format!("{}/v1/tenants/{tenant}/rows", source.projector))
                .header(reqwest::header::AUTHORIZATION, token.as_bytes())
                .query(&query)
                .send()
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "projector_unreachable",
                        format!("the projector's rows as of {at}: {e}"),
                    )
                })?;
            if !r.status().is_success() {
                return Err(refused(r).await);
            }
            let page: Value = r.json().await.map_err(|e| {
                ApiError::new(StatusCode::BAD_GATEWAY, "projector_answer", e.to_string())
            })?;
            if included.is_null() {
                included = page["as_of"].clone();
            }
            for item in page["rows"].as_array().into_iter().flatten() {
                let key = item["key"].as_str().unwrap_or_default();
                let row = ViewRow::from_json(*view, item["row"].clone()).map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "projector_answer",
                        format!("a {view} row '{key}' that does not decode: {e}"),
                    )
                })?;
                state
                    .apply(*view, key, Some(row))
                    .map_err(|e| ApiError::internal(format!("{e:?}")))?;
            }
            match page["next_cursor"].as_str() {
                Some(c) => after = Some(c.to_owned()),
                None => break,
            }
        }
    }
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
