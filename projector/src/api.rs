//! The read-only query API, tenant-scoped by bearer token:
//! `GET /v1/tenants/{tenant}/coverage|controls|findings|exceptions|evidence|validations|report-deliveries`,
//! one row of each by its key (`/coverage/{kind}%2F{id}`, `/controls/{control_id}`,
//! `/findings/{finding_id}`, `/exceptions/{id}`, `/validations/{key}`,
//! `/report-deliveries/{report_id}`, `/evidence/{evidence_id}`: a key's `/` percent-encoded),
//! `/findings/{finding_id}/events` (every event that raised it, by cursor) and `/posture`. Clock-dependent states (SLA, expiry, review,
//! staleness, age) are computed at read time from the rows' event times, by the clock rules of
//! [`aispm_schemas::clock`] with the windows in [`Api::windows`] (the gatekeeper's flags).
//!
//! Every list route answers a page: at most `limit` rows (default and most [`LIST_PAGE`]) in
//! key order, after `after` (the `next_cursor` of the page before; `null` on the last page).
//! `/findings` filters by `status`, `severity`, `rule`, `owner` and `sla`, `/coverage` by `kind`
//! and `shadow_ai`, `/evidence` by `signature_state`, `environment`, `synthetic` and the time it
//! was recorded (`since`, `until`).

use crate::posture;
use crate::project::decode_row;
use crate::state::{Tag, occurrence_prefix, state_key};
use crate::store::{Store, columns};
use aispm_runtime::auth::{Auth, Scope};
use aispm_runtime::http::ApiError;
use aispm_schemas::*;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Api {
    pub store: Arc<Store>,
    pub auth: Auth,
    /// The clock rules' windows the API's states are judged with.
    pub windows: clock::Windows,
    /// Decodes the events kept by id.
    pub codec: Arc<Codec>,
}

pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/v1/tenants/{tenant}/coverage", get(coverage))
        .route(
            "/v1/tenants/{tenant}/coverage/{key}",
            get(|a, h, p| row_route(a, h, p, ViewName::Coverage)),
        )
        .route("/v1/tenants/{tenant}/controls", get(controls))
        .route(
            "/v1/tenants/{tenant}/controls/{key}",
            get(|a, h, p| row_route(a, h, p, ViewName::Controls)),
        )
        .route("/v1/tenants/{tenant}/findings", get(findings))
        .route(
            "/v1/tenants/{tenant}/findings/{key}",
            get(|a, h, p| row_route(a, h, p, ViewName::Findings)),
        )
        .route(
            "/v1/tenants/{tenant}/findings/{finding_id}/events",
            get(finding_events),
        )
        .route("/v1/tenants/{tenant}/exceptions", get(exceptions))
        .route(
            "/v1/tenants/{tenant}/exceptions/{key}",
            get(|a, h, p| row_route(a, h, p, ViewName::Exceptions)),
        )
        .route("/v1/tenants/{tenant}/validations", get(validations))
        .route(
            "/v1/tenants/{tenant}/validations/{key}",
            get(|a, h, p| row_route(a, h, p, ViewName::Validations)),
        )
        .route("/v1/tenants/{tenant}/report-deliveries", get(deliveries))
        .route(
            "/v1/tenants/{tenant}/report-deliveries/{key}",
            get(|a, h, p| row_route(a, h, p, ViewName::ReportDeliveries)),
        )
        .route("/v1/tenants/{tenant}/evidence", get(evidence_list))
        .route(
            "/v1/tenants/{tenant}/evidence/{key}",
            get(|a, h, p| row_route(a, h, p, ViewName::Evidence)),
        )
        .route("/v1/tenants/{tenant}/events/{event_id}", get(event))
        .route("/v1/tenants/{tenant}/posture", get(posture_route))
        .with_state(api)
}

/// Every row of a view for a tenant (read off the async runtime).
pub async fn rows(
    store: &Arc<Store>,
    tenant: &str,
    view: ViewName,
) -> Result<Vec<ViewRow>, ApiError> {
    let store = Arc::clone(store);
    let prefix = columns::tenant_prefix(tenant);
    tokio::task::spawn_blocking(move || -> crate::error::Result<Vec<ViewRow>> {
        store
            .scan_prefix(columns::view_cf(view), &prefix)?
            .iter()
            .map(|(_, v)| decode_row(view, v))
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))
}

fn check(api: &Api, headers: &HeaderMap, tenant: &str) -> Result<(), ApiError> {
    api.auth.for_tenant(headers, tenant, Scope::Read)?;
    Ok(())
}

/// Rows per page of a list route, at most (and by default).
pub const LIST_PAGE: usize = 1000;

/// A list route's page: `limit` rows (1 to [`LIST_PAGE`]) after the `next_cursor` of the page
/// before (`after`).
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// One page of a tenant's rows of `view`, in key order, and the cursor of the next page (`None`
/// after the last).
async fn page_rows(
    store: &Arc<Store>,
    tenant: &str,
    view: ViewName,
    page: &PageQuery,
) -> Result<(Vec<ViewRow>, Option<String>), ApiError> {
    let limit = page.limit.unwrap_or(LIST_PAGE);
    if limit == 0 || limit > LIST_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {LIST_PAGE}"
        )));
    }
    let prefix = columns::tenant_prefix(tenant);
    let mut start = prefix.clone();
    if let Some(c) = &page.after {
        start.extend_from_slice(
            &decode_cursor(c)
                .ok_or_else(|| ApiError::bad_request("after: not a cursor this API returned"))?,
        );
        start.push(0); // strictly after the cursor's row
    }
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || -> crate::error::Result<_> {
        let raw = store.scan_from(columns::view_cf(view), &prefix, &start, limit + 1)?;
        let next = (raw.len() > limit).then(|| encode_cursor(&raw[limit - 1].0[prefix.len()..]));
        let rows = raw
            .iter()
            .take(limit)
            .map(|(_, v)| decode_row(view, v))
            .collect::<crate::error::Result<Vec<_>>>()?;
        Ok((rows, next))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))
}

/// A page of a list route: the rows `pick` keeps of the next `limit` rows of the view (a filter
/// may keep fewer; follow `next_cursor` until it is `null`).
async fn list<T: serde::Serialize>(
    api: &Api,
    headers: &HeaderMap,
    tenant: &str,
    view: ViewName,
    name: &str,
    page: &PageQuery,
    pick: impl Fn(ViewRow) -> Option<T>,
) -> Result<Json<Value>, ApiError> {
    check(api, headers, tenant)?;
    let (rows, next) = page_rows(&api.store, tenant, view, page).await?;
    let items: Vec<T> = rows.into_iter().filter_map(pick).collect();
    Ok(Json(
        json!({"tenant_id": tenant, "count": items.len(), name: items, "next_cursor": next}),
    ))
}

/// A filter's value, one of an enum's symbols; absent or empty is no filter, anything else a
/// 400 naming the symbols.
fn one_of<T: std::str::FromStr>(v: Option<&str>) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    match v {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|e: T::Err| ApiError::bad_request(e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
struct CoverageQuery {
    kind: Option<String>,
    /// `true`: only shadow AI (seen deciding, never registered); `false`: none of it.
    shadow_ai: Option<bool>,
}

async fn coverage(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(page): Query<PageQuery>,
    Query(q): Query<CoverageQuery>,
) -> Result<Json<Value>, ApiError> {
    let kind = one_of::<CoverageKind>(q.kind.as_deref())?;
    list(
        &api,
        &headers,
        &tenant,
        ViewName::Coverage,
        "coverage",
        &page,
        |r| match r {
            ViewRow::Coverage(c)
                if kind.is_none_or(|k| k == c.kind)
                    && q.shadow_ai.is_none_or(|s| s == c.shadow_ai) =>
            {
                Some(c)
            }
            _ => None,
        },
    )
    .await
}

async fn controls(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    list(
        &api,
        &headers,
        &tenant,
        ViewName::Controls,
        "controls",
        &page,
        |r| match r {
            ViewRow::Control(c) => Some(c),
            _ => None,
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
struct FindingsQuery {
    status: Option<String>,
    severity: Option<String>,
    rule: Option<String>,
    owner: Option<String>,
    /// An SLA state ([`sla_state`]).
    sla: Option<String>,
}

/// A finding's SLA state at `now` ([`clock::finding_sla`]): `on_track`, `overdue` (the
/// `finding_overdue` blocker), `risk_accepted`, `past_due`, `closed_within_sla`, `closed_late`.
pub fn sla_state(f: &FindingRow, now: Timestamp) -> &'static str {
    clock::row_sla(f, now).as_str()
}

async fn findings(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(page): Query<PageQuery>,
    Query(q): Query<FindingsQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(s.parse::<FindingStatus>().map_err(ApiError::bad_request)?),
    };
    let severity = one_of::<Risk>(q.severity.as_deref())?;
    let now = Timestamp::now();
    list(
        &api,
        &headers,
        &tenant,
        ViewName::Findings,
        "findings",
        &page,
        |r| match r {
            ViewRow::Finding(f)
                if status.is_none_or(|s| s == f.status)
                    && severity.is_none_or(|s| s == f.severity)
                    && q.rule.as_deref().is_none_or(|r| r == f.rule_id)
                    && q.owner
                        .as_deref()
                        .is_none_or(|o| f.owner.as_deref() == Some(o)) =>
            {
                if q.sla
                    .as_deref()
                    .is_some_and(|want| want != sla_state(&f, now))
                {
                    return None;
                }
                present(&api.windows, ViewRow::Finding(f), now)
            }
            _ => None,
        },
    )
    .await
}

/// An exception's state at `now` ([`clock::exception_state`]): `active`, `expired`,
/// `revoked`; for break-glass `pending_review`, `review_overdue` (the `break_glass_unreviewed`
/// blocker), `reviewed`, `reviewed_late`.
pub fn exception_state(x: &ExceptionRow, windows: &clock::Windows, now: Timestamp) -> &'static str {
    clock::exception_state(x, windows.break_glass_review_window, now).as_str()
}

/// Whether an evidence row counts for freshness, and whether it alone is stale per stage
/// ([`clock::counts_for_freshness`], [`clock::stale`]).
pub fn evidence_freshness(e: &EvidenceRow, windows: &clock::Windows, now: Timestamp) -> Value {
    let stale = |stage| clock::stale(e.recorded_at, windows.evidence_freshness(stage), now);
    json!({
        "counts_for_freshness": clock::evidence_counts(e),
        "stale": {
            "trial": stale(Stage::Trial),
            "pilot": stale(Stage::Pilot),
            "production": stale(Stage::Production),
        },
    })
}

async fn exceptions(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let now = Timestamp::now();
    list(
        &api,
        &headers,
        &tenant,
        ViewName::Exceptions,
        "exceptions",
        &page,
        |r| match r {
            r @ ViewRow::Exception(_) => present(&api.windows, r, now),
            _ => None,
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
struct EvidenceQuery {
    signature_state: Option<String>,
    environment: Option<String>,
    synthetic: Option<bool>,
    /// Recorded at or after this time (RFC 3339).
    since: Option<String>,
    /// Recorded before this time (RFC 3339).
    until: Option<String>,
}

async fn evidence_list(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(page): Query<PageQuery>,
    Query(q): Query<EvidenceQuery>,
) -> Result<Json<Value>, ApiError> {
    let state = one_of::<SignatureState>(q.signature_state.as_deref())?;
    let environment = one_of::<Environment>(q.environment.as_deref())?;
    let time = |name: &str, v: &Option<String>| -> Result<Option<Timestamp>, ApiError> {
        match v.as_deref() {
            None | Some("") => Ok(None),
            Some(t) => Timestamp::parse_rfc3339(t)
                .map(Some)
                .map_err(|e| ApiError::bad_request(format!("{name}: {e}"))),
        }
    };
    let (since, until) = (time("since", &q.since)?, time("until", &q.until)?);
    let now = Timestamp::now();
    list(
        &api,
        &headers,
        &tenant,
        ViewName::Evidence,
        "evidence",
        &page,
        |r| match r {
            ViewRow::Evidence(e)
                if state.is_none_or(|s| s == e.signature_state)
                    && environment.is_none_or(|v| e.environment == Some(v))
                    && q.synthetic.is_none_or(|s| s == e.synthetic)
                    && since.is_none_or(|t| e.recorded_at >= t)
                    && until.is_none_or(|t| e.recorded_at < t) =>
            {
                present(&api.windows, ViewRow::Evidence(e), now)
            }
            _ => None,
        },
    )
    .await
}

async fn validations(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    list(
        &api,
        &headers,
        &tenant,
        ViewName::Validations,
        "validations",
        &page,
        |r| match r {
            ViewRow::Validation(v) => Some(v),
            _ => None,
        },
    )
    .await
}

async fn deliveries(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    list(
        &api,
        &headers,
        &tenant,
        ViewName::ReportDeliveries,
        "report_deliveries",
        &page,
        |r| match r {
            ViewRow::Delivery(d) => Some(d),
            _ => None,
        },
    )
    .await
}

/// A row as the API answers it: its fields and the states read off the clock at `now`
/// (a finding's `sla_state`, an exception's `state`, evidence's `age_seconds`,
/// `counts_for_freshness` and `stale` per stage).
pub fn present(windows: &clock::Windows, row: ViewRow, now: Timestamp) -> Option<Value> {
    let mut v = match &row {
        ViewRow::Coverage(r) => serde_json::to_value(r),
        ViewRow::Control(r) => serde_json::to_value(r),
        ViewRow::Finding(r) => serde_json::to_value(r),
        ViewRow::Exception(r) => serde_json::to_value(r),
        ViewRow::Evidence(r) => serde_json::to_value(r),
        ViewRow::Validation(r) => serde_json::to_value(r),
        ViewRow::Delivery(r) => serde_json::to_value(r),
    }
    .ok()?;
    match &row {
        ViewRow::Finding(f) => v["sla_state"] = json!(sla_state(f, now)),
        ViewRow::Exception(x) => v["state"] = json!(exception_state(x, windows, now)),
        ViewRow::Evidence(e) => {
            let freshness = evidence_freshness(e, windows, now);
            v["age_seconds"] = json!((now.0 - e.recorded_at.0).max(0) / 1000);
            v["counts_for_freshness"] = freshness["counts_for_freshness"].clone();
            v["stale"] = freshness["stale"].clone();
        }
        _ => {}
    }
    Some(v)
}

/// `GET /v1/tenants/{tenant}/{view}/{key}`: one row of a view by its key (percent-encoded
/// when it holds a `/`), as [`present`] shapes it; `404` naming the key when there is none.
async fn row_route(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((tenant, key)): Path<(String, String)>,
    view: ViewName,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let row = one_row(&api.store, &tenant, view, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no {view} row '{key}' for this tenant")))?;
    let mut v = present(&api.windows, row, Timestamp::now())
        .ok_or_else(|| ApiError::internal("a row that does not serialize"))?;
    v["tenant_id"] = json!(tenant);
    Ok(Json(v))
}

/// `GET /v1/tenants/{tenant}/events/{event_id}`: an applied input event by its id, every field
/// as it arrived (`type` decision, approval, registry or report_delivery; `asserted_by`, the
/// token that wrote it), and the keys of the rows it names, to follow. `404` for an id never
/// applied, and for one applied before events were kept by id (the answer says which).
async fn event(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let store = Arc::clone(&api.store);
    let key = columns::tenant_key(&tenant, &id);
    let bytes = tokio::task::spawn_blocking(move || store.get_raw(columns::SEEN, &key))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no event '{id}' for this tenant")))?;
    let (event, by) = crate::project::read_stored_event(&api.codec, &bytes)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "event '{id}' was applied before the projector kept events by id (a rebuild keeps it)"
            ))
        })?;
    let (kind, fields, rows) = match &event {
        crate::apply::Event::Decision(d) => {
            let mut rows = vec![format!("coverage/agent/{}", d.agent_id)];
            rows.push(format!(
                "controls/{}",
                d.control_id
                    .clone()
                    .unwrap_or_else(|| format!("(none):{}", d.action_kind))
            ));
            if let Some(m) = &d.model_endpoint {
                rows.push(format!("coverage/model_endpoint/{m}"));
            }
            if let (Some(s), Some(t)) = (&d.mcp_server, &d.mcp_tool) {
                rows.push(format!("coverage/mcp_tool/{s}/{t}"));
            }
            if let Some(e) = &d.evidence {
                rows.push(format!("evidence/{}", e.evidence_id));
            }
            ("decision", serde_json::to_value(d), rows)
        }
        crate::apply::Event::Approval(a) => ("approval", serde_json::to_value(a), vec![]),
        crate::apply::Event::Registry(r) => ("registry", serde_json::to_value(r), vec![]),
        crate::apply::Event::Delivery(r) => ("report_delivery", serde_json::to_value(r), vec![]),
    };
    Ok(Json(json!({
        "tenant_id": tenant,
        "event_id": id,
        "type": kind,
        "asserted_by": by,
        "event": fields.map_err(|e| ApiError::internal(e.to_string()))?,
        "rows": rows,
    })))
}

/// One stored row of a view, by key (read off the async runtime).
async fn one_row(
    store: &Arc<Store>,
    tenant: &str,
    view: ViewName,
    key: &str,
) -> Result<Option<ViewRow>, ApiError> {
    let store = Arc::clone(store);
    let key = columns::tenant_key(tenant, key);
    tokio::task::spawn_blocking(move || -> crate::error::Result<Option<ViewRow>> {
        store
            .get_raw(columns::view_cf(view), &key)?
            .map(|b| decode_row(view, &b))
            .transpose()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))
}

/// Most events per page of `/findings/{id}/events`, and the default.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// The `next_cursor` of the page before.
    after: Option<String>,
    limit: Option<usize>,
}

/// Every event that raised an event-raised finding (`AISPM-APR-001`, `AISPM-EV-001`), oldest
/// first, a page at a time: `next_cursor` names where the next page starts (`null` after the
/// last). Other findings are derived from an asset's or control's state and name their newest
/// events on the row (`event_ids`); for them `indexed` is false and `events` lists those.
async fn finding_events(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let after = match &q.after {
        None => None,
        Some(c) => Some(
            decode_cursor(c)
                .ok_or_else(|| ApiError::bad_request("after: not a cursor this API returned"))?,
        ),
    };
    let Some(ViewRow::Finding(f)) = one_row(&api.store, &tenant, ViewName::Findings, &id).await?
    else {
        return Err(ApiError::not_found(format!(
            "no finding '{id}' for this tenant"
        )));
    };
    let indexed = crate::rules::split_finding_id(&id).is_some_and(|(r, _)| r.raised_by_events);
    if !indexed {
        return Ok(Json(json!({
            "tenant_id": tenant, "finding_id": id, "indexed": false,
            "events": f.event_ids.iter().map(|e| json!({"event_id": e})).collect::<Vec<_>>(),
            "next_cursor": null,
        })));
    }
    let store = Arc::clone(&api.store);
    let prefix = state_key(&tenant, Tag::Occurrence, &occurrence_prefix(&id));
    let page = tokio::task::spawn_blocking(move || {
        let start = match &after {
            Some(suffix) => {
                let mut k = prefix.clone();
                k.extend_from_slice(suffix);
                k.push(0); // strictly after the cursor's marker
                k
            }
            None => prefix.clone(),
        };
        store.scan_from(columns::STATE, &prefix, &start, limit + 1)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let strip = state_key(&tenant, Tag::Occurrence, &occurrence_prefix(&id)).len();
    let more = page.len() > limit;
    let mut events = Vec::with_capacity(limit.min(page.len()));
    let mut last = None;
    for (k, _) in page.iter().take(limit) {
        let suffix = &k[strip..];
        let text = String::from_utf8_lossy(suffix);
        let Some((at, event_id)) = text.split_once('\0') else {
            continue;
        };
        let at: i64 = at.parse().unwrap_or(0);
        events.push(json!({"event_id": event_id, "occurred_at": Timestamp(at)}));
        last = Some(suffix.to_vec());
    }
    Ok(Json(json!({
        "tenant_id": tenant, "finding_id": id, "indexed": true,
        "occurrences": f.occurrences,
        "events": events,
        "next_cursor": if more { last.map(|l| encode_cursor(&l)) } else { None },
    })))
}

/// Cursors are the marker's bytes after the finding's prefix, hex-encoded (opaque to callers).
fn encode_cursor(suffix: &[u8]) -> String {
    suffix.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(cursor: &str) -> Option<Vec<u8>> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 2048 {
        return None;
    }
    (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn posture_route(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let mut all = Vec::new();
    for (view, _) in columns::VIEWS {
        all.extend(rows(&api.store, &tenant, view).await?);
    }
    Ok(Json(posture::compute(
        &tenant,
        &all,
        &api.windows,
        Timestamp::now(),
    )))
}
