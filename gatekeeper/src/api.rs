//! The readiness API.
//!
//! - `GET /v1/tenants/{tenant}/readiness?stage=production` (stage defaults to production):
//!   `{"tenant_id","stage","ready","ready_for_aispm_<stage>","blockers":[{"id","kind","meaning",
//!   "resolution","subject","evidence","detected_at"}],"evaluated_at"}` for a token bound to the
//!   tenant (or an operator token); 401/403 otherwise.
//! - `GET /v1/readiness[?stage=…]`: every tenant this instance holds, for an operator token, with
//!   ready/unready counts per stage.
//! - `GET /v1/principal`: who the token is: `{"name","tenants":"*"|[…],"scopes":[…]}`, for any
//!   valid token (the console signs in with it).
//! - `GET /openapi.json`: this API's OpenAPI 3.1 document, generated from the route table below.

use crate::as_of;
use crate::readiness::{StageVerdict, Verdicts};
use aispm_runtime::auth::{Access, Auth, Scope};
use aispm_runtime::http::ApiError;
use aispm_runtime::openapi::{self, Op, Ty};
use aispm_schemas::Stage;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Debug, Clone)]
struct Api {
    auth: Auth,
    verdicts: Verdicts,
    /// Where readiness as of a past instant reads its rows.
    as_of: Arc<as_of::Source>,
}

#[derive(Debug, Deserialize)]
struct StageQuery {
    stage: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AsOfQuery {
    as_of: Option<String>,
}

/// Most blockers one answer lists (and the default): a tenant with 100k unowned critical
/// findings has as many blockers, and an answer must stay bounded. `blocker_count` says how
/// many there are; `next_cursor`, passed as `after`, pages on.
pub(crate) const BLOCKER_PAGE: usize = 1000;

/// Blockers per tenant and stage in the every-tenant answer.
pub(crate) const SUMMARY_BLOCKERS: usize = 20;

#[derive(Debug, Deserialize)]
struct BlockerPage {
    limit: Option<usize>,
    after: Option<String>,
}

/// The gatekeeper's routes, each with its OpenAPI operation.
fn api() -> openapi::Api<Api> {
    let stage = || Ty::one_of(Stage::ALL.iter().map(|s| s.as_str()));
    openapi::Api::new(
        "aispm gatekeeper",
        env!("CARGO_PKG_VERSION"),
        "Production readiness per tenant and stage, with the blockers that stand in the way.",
    )
    .get(
        "/v1/tenants/{tenant}/readiness",
        tenant_readiness,
        Op::new("A tenant's readiness for a stage, with its blockers")
            .query("stage", stage(), "The stage judged (default `production`).")
            .query(
                "limit",
                Ty::Integer {
                    min: 1,
                    max: BLOCKER_PAGE as i64,
                },
                "Blockers in this answer, 1 to 1000 (default 1000); `blocker_count` counts them all.",
            )
            .query(
                "after",
                Ty::String,
                "The `next_cursor` of the answer before: the blockers after it.",
            )
            .query(
                "as_of",
                Ty::DateTime,
                "Judge as of this past instant: the tenant's view rows as of then, read from \
                 the projector (`/rows?as_of=`) with this request's token, and the same rules \
                 at that instant; `as_of` in the answer says what the projector's replay \
                 included. Nothing is published.",
            )
            .tenant(Scope::Read)
            .error(404, "This instance holds no view rows for the tenant.")
            .error(
                429,
                "The projector is replaying another instant (`Retry-After`).",
            )
            .error(502, "The projector could not be reached or answered wrongly.")
            .error(503, "Still replaying the views; try again shortly."),
    )
    .get(
        "/v1/readiness",
        all_readiness,
        Op::new("Every tenant's readiness, with ready/unready counts per stage")
            .query("stage", stage(), "Only this stage (default: every stage).")
            .operator(),
    )
    .get(
        "/v1/principal",
        principal,
        Op::new("Who the token is: its name, tenants and scopes").any_token(),
    )
}

/// The gatekeeper's routes (and `GET /openapi.json`, their document).
pub(crate) fn routes(auth: Auth, verdicts: Verdicts, as_of: as_of::Source) -> Router {
    api().into_router().with_state(Api {
        auth,
        verdicts,
        as_of: Arc::new(as_of),
    })
}

fn parse_stage(q: &StageQuery) -> Result<Option<Stage>, ApiError> {
    q.stage
        .as_deref()
        .map(|s| s.parse::<Stage>().map_err(ApiError::bad_request))
        .transpose()
}

async fn tenant_readiness(
    State(api): State<Api>,
    Path(tenant): Path<String>,
    Query(q): Query<StageQuery>,
    Query(page): Query<BlockerPage>,
    Query(when): Query<AsOfQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    api.auth.for_tenant(&headers, &tenant, Scope::Read)?;
    let stage = parse_stage(&q)?.unwrap_or(Stage::Production);
    let limit = page.limit.unwrap_or(BLOCKER_PAGE);
    if limit == 0 || limit > BLOCKER_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {BLOCKER_PAGE}"
        )));
    }
    if let Some(at) = when.as_of.as_deref() {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::bad_request("as_of needs the request's bearer token"))?;
        let (verdicts, included) = as_of::verdicts(&api.as_of, token, &tenant, at).await?;
        let mut v = verdict_json(
            &tenant,
            stage,
            &verdicts[stage.index()],
            limit,
            page.after.as_deref(),
        );
        v["as_of"] = json!(included);
        return Ok(Json(v));
    }
    match api.verdicts.get(&tenant) {
        Some(v) => Ok(Json(verdict_json(
            &tenant,
            stage,
            &v[stage.index()],
            limit,
            page.after.as_deref(),
        ))),
        None if api.verdicts.restoring() => Err(ApiError::unavailable(
            "the gatekeeper is still replaying the views; try again shortly",
        )),
        None => Err(ApiError::not_found(format!(
            "no view rows for tenant {tenant} on this gatekeeper instance"
        ))),
    }
}

async fn principal(State(api): State<Api>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let p = api.auth.principal(&headers)?;
    let tenants = match &p.access {
        Access::All => json!("*"),
        Access::Tenants(t) => json!(t),
    };
    let scopes: Vec<&str> = p.scopes.iter().map(|s| s.as_str()).collect();
    Ok(Json(
        json!({"name": p.name, "tenants": tenants, "scopes": scopes}),
    ))
}

async fn all_readiness(
    State(api): State<Api>,
    Query(q): Query<StageQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    api.auth.operator(&headers)?;
    let only = parse_stage(&q)?;
    let stages: Vec<Stage> = match only {
        Some(s) => vec![s],
        None => Stage::ALL.to_vec(),
    };
    let mut summary = serde_json::Map::new();
    let mut items = Vec::new();
    let all = api.verdicts.all();
    for stage in &stages {
        let ready = all.iter().filter(|(_, v)| v[stage.index()].ready).count();
        summary.insert(
            stage.as_str().to_owned(),
            json!({"ready": ready, "unready": all.len() - ready}),
        );
    }
    for (tenant, v) in &all {
        for stage in &stages {
            items.push(verdict_json(
                tenant,
                *stage,
                &v[stage.index()],
                SUMMARY_BLOCKERS,
                None,
            ));
        }
    }
    Ok(Json(json!({
        "tenants": all.len(),
        "restoring": api.verdicts.restoring(),
        "summary": summary,
        "readiness": items,
    })))
}

/// The brief's readiness shape for one tenant and stage, with at most `limit` of its blockers
/// (in id order, after the id `after`), their total `blocker_count`, and `next_cursor` (the
/// last listed id when more follow, else null).
pub(crate) fn verdict_json(
    tenant: &str,
    stage: Stage,
    v: &StageVerdict,
    limit: usize,
    after: Option<&str>,
) -> Value {
    let mut rest: Vec<_> = v
        .blockers
        .iter()
        .filter(|b| after.is_none_or(|a| b.blocker_id.as_str() > a))
        .collect();
    if !rest.is_sorted_by(|a, b| a.blocker_id <= b.blocker_id) {
        rest.sort_by(|a, b| a.blocker_id.cmp(&b.blocker_id));
    }
    let next = (rest.len() > limit).then(|| rest[limit - 1].blocker_id.clone());
    let blockers: Vec<Value> = rest
        .iter()
        .take(limit)
        .map(|b| {
            json!({
                "id": b.blocker_id,
                "kind": b.kind.as_str(),
                "meaning": b.meaning,
                "resolution": b.resolution,
                "subject": b.subject,
                "evidence": b.evidence,
                "detected_at": b.detected_at,
            })
        })
        .collect();
    let mut o = serde_json::Map::new();
    o.insert("tenant_id".into(), json!(tenant));
    o.insert("stage".into(), json!(stage.as_str()));
    o.insert("ready".into(), json!(v.ready));
    o.insert(format!("ready_for_aispm_{stage}"), json!(v.ready));
    o.insert("blockers".into(), Value::Array(blockers));
    o.insert("blocker_count".into(), json!(v.blockers.len()));
    o.insert("next_cursor".into(), json!(next));
    o.insert("evaluated_at".into(), json!(v.evaluated_at));
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aispm_schemas::{Blocker, BlockerKind, Timestamp};

    #[test]
    fn the_shape_of_the_brief() {
        let b = Blocker {
            tenant_id: "acme".into(),
            stage: Stage::Pilot,
            blocker_id: "tenant_isolation_not_proven".into(),
            kind: BlockerKind::TenantIsolationNotProven,
            meaning: "m".into(),
            resolution: "r".into(),
            subject: None,
            evidence: vec!["ev-1".into()],
            detected_at: Timestamp(0),
        };
        let v = StageVerdict {
            ready: false,
            blockers: vec![b],
            evaluated_at: Timestamp(1000),
        };
        let j = verdict_json("acme", Stage::Pilot, &v, BLOCKER_PAGE, None);
        assert_eq!(
            j,
            json!({
                "tenant_id": "acme", "stage": "pilot", "ready": false,
                "ready_for_aispm_pilot": false,
                "blockers": [{"id": "tenant_isolation_not_proven", "kind": "tenant_isolation_not_proven",
                    "meaning": "m", "resolution": "r", "subject": null, "evidence": ["ev-1"],
                    "detected_at": "1970-01-01T00:00:00.000Z"}],
                "blocker_count": 1, "next_cursor": null,
                "evaluated_at": "1970-01-01T00:00:01.000Z"
            })
        );
    }

    #[test]
    fn blockers_come_a_bounded_page_at_a_time() {
        let blocker = |id: &str| Blocker {
            tenant_id: "acme".into(),
            stage: Stage::Production,
            blocker_id: id.into(),
            kind: BlockerKind::CriticalFindingUnowned,
            meaning: "m".into(),
            resolution: "r".into(),
            subject: Some(id.into()),
            evidence: vec![],
            detected_at: Timestamp(0),
        };
        let v = StageVerdict {
            ready: false,
            blockers: ["c", "a", "e", "b", "d"].map(blocker).to_vec(),
            evaluated_at: Timestamp(0),
        };
        let ids = |j: &Value| -> Vec<String> {
            j["blockers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let first = verdict_json("acme", Stage::Production, &v, 2, None);
        assert_eq!(ids(&first), ["a", "b"]);
        assert_eq!(
            (first["blocker_count"].clone(), first["next_cursor"].clone()),
            (json!(5), json!("b"))
        );
        let second = verdict_json("acme", Stage::Production, &v, 2, Some("b"));
        assert_eq!(ids(&second), ["c", "d"]);
        let last = verdict_json("acme", Stage::Production, &v, 2, Some("d"));
        assert_eq!(ids(&last), ["e"]);
        assert!(last["next_cursor"].is_null());
        assert_eq!(last["ready"], false);
    }
}
