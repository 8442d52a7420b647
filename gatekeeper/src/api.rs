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

use crate::readiness::{StageVerdict, Verdicts};
use crate::rules::stage_index;
use aispm_runtime::auth::{Access, Auth, Scope};
use aispm_runtime::http::ApiError;
use aispm_schemas::Stage;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Api {
    auth: Auth,
    verdicts: Verdicts,
}

#[derive(Debug, Deserialize)]
struct StageQuery {
    stage: Option<String>,
}

/// The gatekeeper's routes.
pub fn routes(auth: Auth, verdicts: Verdicts) -> Router {
    Router::new()
        .route("/v1/tenants/{tenant}/readiness", get(tenant_readiness))
        .route("/v1/readiness", get(all_readiness))
        .route("/v1/principal", get(principal))
        .with_state(Api { auth, verdicts })
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
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    api.auth.for_tenant(&headers, &tenant, Scope::Read)?;
    let stage = parse_stage(&q)?.unwrap_or(Stage::Production);
    match api.verdicts.get(&tenant) {
        Some(v) => Ok(Json(verdict_json(&tenant, stage, &v[stage_index(stage)]))),
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
        let ready = all
            .iter()
            .filter(|(_, v)| v[stage_index(*stage)].ready)
            .count();
        summary.insert(
            stage.as_str().to_owned(),
            json!({"ready": ready, "unready": all.len() - ready}),
        );
    }
    for (tenant, v) in &all {
        for stage in &stages {
            items.push(verdict_json(tenant, *stage, &v[stage_index(*stage)]));
        }
    }
    Ok(Json(json!({
        "tenants": all.len(),
        "restoring": api.verdicts.restoring(),
        "summary": summary,
        "readiness": items,
    })))
}

/// The brief's readiness shape for one tenant and stage.
pub fn verdict_json(tenant: &str, stage: Stage, v: &StageVerdict) -> Value {
    let blockers: Vec<Value> = v
        .blockers
        .iter()
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
        let j = verdict_json("acme", Stage::Pilot, &v);
        assert_eq!(
            j,
            json!({
                "tenant_id": "acme", "stage": "pilot", "ready": false,
                "ready_for_aispm_pilot": false,
                "blockers": [{"id": "tenant_isolation_not_proven", "kind": "tenant_isolation_not_proven",
                    "meaning": "m", "resolution": "r", "subject": null, "evidence": ["ev-1"],
                    "detected_at": "1970-01-01T00:00:00.000Z"}],
                "evaluated_at": "1970-01-01T00:00:01.000Z"
            })
        );
    }
}
