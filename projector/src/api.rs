//! The read-only query API, tenant-scoped by bearer token:
//! `GET /v1/tenants/{tenant}/coverage|controls|findings|exceptions|evidence|validations|report-deliveries`,
//! one row of each by its key (`/coverage/{kind}%2F{id}`, `/controls/{control_id}`,
//! `/findings/{finding_id}`, `/exceptions/{id}`, `/validations/{key}`,
//! `/report-deliveries/{report_id}`, `/evidence/{evidence_id}`: a key's `/` percent-encoded),
//! `/findings/{finding_id}/events` (every event that raised it, by cursor), `/events/{event_id}`
//! (an applied event, with the rows it names and changed), `/approvals` (newest first) and
//! `/approvals/{event_id}`, `/agents/{agent_id}/links` (what an agent acted for and with),
//! `/agents/{agent_id}/identity` (its owner, what it acted for and with, its API keys and
//! their scopes, used and unused), `/data-flows` (which data classes went to which model endpoints and MCP tools, by which
//! agents), `/approval-stats` (requests for approval per control and agent: answered, pending,
//! overdue, time to decision), `/posture`, and `/rows?view=` (one view's rows as stored, with
//! their keys). Every one answers as of a past instant with `as_of=` ([`as_of_layer`]).
//! Clock-dependent states (SLA, expiry, review, staleness, age) are computed at read time from
//! the rows' event times, by the clock rules of [`aispm_schemas::clock`] with the windows in
//! [`Api::windows`] (the gatekeeper's flags), at now or at the `as_of` instant.
//!
//! Every list route answers a page: at most `limit` rows (default and most [`LIST_PAGE`]) in
//! key order, after `after` (the `next_cursor` of the page before; `null` on the last page);
//! `/findings` comes highest risk first (`FindingRow::by_rank`; `sort=id` for key
//! order), its cursor the last row's rank key.
//! `/findings` filters by `status`, `severity`, `rule`, `owner`, `sla` and `about`, `/coverage` by `kind`
//! and `shadow_ai`, `/evidence` by `signature_state`, `environment`, `synthetic`, the `agent`
//! and `control` whose decision carried it and the time it was recorded (`since`, `until`).
//!
//! `GET /openapi.json` answers the API's OpenAPI 3.1 document, generated from the route table
//! ([`routes`]) that registers each route.

use crate::as_of::{History, Refused, Replayed};
use crate::posture;
use crate::project::decode_row;
use crate::state::{
    ApprovalStats, AssetAgg, DESTINATIONS, DecisionFacts, FlowAgg, RELATIONS, Tag, Usage,
    flow_prefix, link_prefix, occurrence_prefix, parse_approval_index, state_key,
};
use crate::store::{Store, columns};
use aispm_runtime::auth::{Auth, Scope};
use aispm_runtime::http::ApiError;
use aispm_runtime::openapi::{self, Op, Ty};
use aispm_schemas::*;
use axum::extract::{FromRequestParts, Path, Query, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub store: Arc<Store>,
    pub auth: Auth,
    /// What the identity view judges by: AISPM-KEY-002's window (the projector's settings) and
    /// `--actors-per-agent`.
    pub identity: IdentityLimits,
    /// The clock rules' windows the API's states are judged with.
    pub windows: clock::Windows,
    /// Decodes the events kept by id.
    pub codec: Arc<Codec>,
    /// Each tenant's posture, kept computed.
    pub posture: Arc<posture::Keeper>,
    /// Replays of the views as of past instants (`?as_of=`).
    pub history: Arc<History>,
    /// The replay this request reads, when it asked `as_of=`: `store` is its database.
    pub as_of: Option<Arc<Replayed>>,
}

impl Api {
    /// The instant clock-dependent states are judged at: the request's `as_of`, or now.
    pub(crate) fn now(&self) -> Timestamp {
        self.as_of
            .as_ref()
            .map_or_else(Timestamp::now, |r| r.summary.at)
    }
}

/// The API as the request reads it: the views now, or, when it asked `as_of=`, as of then
/// (the replay [`as_of_layer`] found or ran).
pub(crate) struct At(pub Api);

impl FromRequestParts<Api> for At {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
        Ok(At(match parts.extensions.get::<Arc<Replayed>>() {
            Some(r) => Api {
                store: r.store(),
                as_of: Some(Arc::clone(r)),
                ..api.clone()
            },
            None => api.clone(),
        }))
    }
}

#[derive(Debug, Deserialize)]
struct AsOfQuery {
    as_of: Option<String>,
}

/// The header of an answer as of a past instant: what the replay included
/// (`at=…; events=…; after=…; late=…; arrival_unknown=…`).
pub(crate) const AS_OF_HEADER: &str = "aispm-as-of";

/// Serves a request with `as_of=T` (RFC 3339, not in the future) from the views as of T: checks
/// the token for the tenant first (a replay is work), then finds or runs the replay
/// ([`History`]) and hands it to the route, which judges clock-dependent states at T; the
/// answer carries [`AS_OF_HEADER`]. `429` with `Retry-After` while another replay runs.
async fn as_of_layer(State(api): State<Api>, req: Request, next: Next) -> Response {
    let at = match Query::<AsOfQuery>::try_from_uri(req.uri()) {
        Ok(Query(AsOfQuery { as_of: Some(t) })) => t,
        _ => return next.run(req).await,
    };
    let (mut parts, body) = req.into_parts();
    let tenant = match RawPathParams::from_request_parts(&mut parts, &api).await {
        Ok(p) => p
            .iter()
            .find(|(name, _)| *name == "tenant")
            .map(|(_, v)| v.to_owned()),
        Err(_) => None,
    };
    let Some(tenant) = tenant else {
        return ApiError::bad_request("as_of applies to a tenant's routes").into_response();
    };
    if let Err(e) = check(&api, &parts.headers, &tenant) {
        return e.into_response();
    }
    let at = match Timestamp::parse_rfc3339(&at) {
        Ok(t) if t <= Timestamp::now() => t,
        Ok(t) => {
            return ApiError::bad_request(format!("as_of {t} is in the future")).into_response();
        }
        Err(e) => return ApiError::bad_request(format!("as_of: {e}")).into_response(),
    };
    let replayed = match api.history.get(&tenant, at).await {
        Ok(r) => r,
        Err(Refused::Busy(wait)) => {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "as_of_busy",
                "another replay of the views as of a past instant is running; retry after it",
            )
            .with_retry_after(wait)
            .into_response();
        }
        Err(Refused::Failed(e)) => return ApiError::internal(e.to_string()).into_response(),
    };
    let s = replayed.summary;
    parts.extensions.insert(Arc::clone(&replayed));
    let mut res = next.run(Request::from_parts(parts, body)).await;
    let header = format!(
        "at={}; events={}; after={}; late={}; arrival_unknown={}",
        s.at, s.events, s.after, s.late, s.arrival_unknown
    );
    if let Ok(v) = HeaderValue::from_str(&header) {
        res.headers_mut().insert(AS_OF_HEADER, v);
    }
    res
}

/// The projector's routes, each with its OpenAPI operation.
fn table() -> openapi::Api<Api> {
    let symbols = |all: &[&'static str]| Ty::one_of(all.iter().copied());
    let read = |summary| {
        Op::new(summary)
            .tenant(Scope::Read)
            .query(
                "as_of",
                Ty::DateTime,
                "Answer as of this past instant: the tenant's events that occurred by then, \
                 replayed, with clock-dependent states judged then. The `aispm-as-of` header \
                 says what the replay included (`late`: events that occurred by then but \
                 arrived after it).",
            )
            .error(
                429,
                "Another replay as of a past instant is running (`Retry-After`).",
            )
    };
    let list = |summary| read(summary).paged("after", LIST_PAGE);
    let indexed = |summary| read(summary).paged("after", MAX_PAGE);
    let row = |summary, key| read(summary).path("key", key);
    openapi::Api::new(
        "aispm projector",
        env!("CARGO_PKG_VERSION"),
        "The read-only query API over the views: coverage, controls, findings, exceptions, \
         evidence, validations, report deliveries, approvals, agent links and posture, per tenant.",
    )
    .get(
        "/v1/tenants/{tenant}/coverage",
        coverage,
        list("List coverage rows")
            .query(
                "kind",
                Ty::one_of(CoverageKind::ALL.iter().map(|k| k.as_str())),
                "Only this kind.",
            )
            .query(
                "shadow_ai",
                Ty::Boolean,
                "`true`: only shadow AI (seen deciding, never registered); `false`: none of it.",
            ),
    )
    .get(
        "/v1/tenants/{tenant}/coverage/{key}",
        |a, h, p| row_route(a, h, p, ViewName::Coverage),
        row(
            "One coverage row",
            "`{kind}%2F{id}` (a `/` in the key percent-encoded).",
        ),
    )
    .get(
        "/v1/tenants/{tenant}/controls",
        controls,
        list("List controls"),
    )
    .get(
        "/v1/tenants/{tenant}/controls/{key}",
        |a, h, p| row_route(a, h, p, ViewName::Controls),
        row("One control", "The control id (a `/` percent-encoded)."),
    )
    .get(
        "/v1/tenants/{tenant}/findings",
        findings,
        list("List findings")
            .query(
                "status",
                Ty::one_of(FindingStatus::ALL.iter().map(|s| s.as_str()).chain(["all"])),
                "Only open or closed findings (default: all).",
            )
            .query(
                "severity",
                Ty::one_of(Risk::ALL.iter().map(|r| r.as_str())),
                "Only this severity.",
            )
            .query(
                "rule",
                Ty::String,
                "Only this rule id (e.g. `AISPM-APR-001`).",
            )
            .query("owner", Ty::String, "Only findings assigned to this owner.")
            .query(
                "sla",
                Ty::one_of(clock::Sla::ALL.iter().map(|s| s.as_str())),
                "Only findings in this SLA state now.",
            )
            .query(
                "about",
                Ty::String,
                "Only findings about this resource (one part of the subject, or all of it).",
            )
            .query(
                "sort",
                Ty::one_of(["risk", "id"]),
                "`risk` (default): highest risk score first (`FindingRow::by_rank`); \
                 `id`: by finding id.",
            ),
    )
    .get(
        "/v1/tenants/{tenant}/findings/{key}",
        |a, h, p| row_route(a, h, p, ViewName::Findings),
        row("One finding", "The finding id (a `/` percent-encoded)."),
    )
    .get(
        "/v1/tenants/{tenant}/findings/{finding_id}/events",
        finding_events,
        indexed("Every event that raised a finding, oldest first"),
    )
    .get(
        "/v1/tenants/{tenant}/exceptions",
        exceptions,
        list("List exceptions, with their state now"),
    )
    .get(
        "/v1/tenants/{tenant}/exceptions/{key}",
        |a, h, p| row_route(a, h, p, ViewName::Exceptions),
        row("One exception", "The exception id (a `/` percent-encoded)."),
    )
    .get(
        "/v1/tenants/{tenant}/validations",
        validations,
        list("List validation results"),
    )
    .get(
        "/v1/tenants/{tenant}/validations/{key}",
        |a, h, p| row_route(a, h, p, ViewName::Validations),
        row(
            "One validation result",
            "The validation's key (a `/` percent-encoded).",
        ),
    )
    .get(
        "/v1/tenants/{tenant}/report-deliveries",
        deliveries,
        list("List report deliveries"),
    )
    .get(
        "/v1/tenants/{tenant}/report-deliveries/{key}",
        |a, h, p| row_route(a, h, p, ViewName::ReportDeliveries),
        row("One report delivery", "The report id."),
    )
    .get(
        "/v1/tenants/{tenant}/evidence",
        evidence_list,
        list("List evidence")
            .query(
                "signature_state",
                Ty::one_of(SignatureState::ALL.iter().map(|s| s.as_str())),
                "Only evidence in this signature state.",
            )
            .query(
                "environment",
                Ty::one_of(Environment::ALL.iter().map(|e| e.as_str())),
                "Only evidence from this environment.",
            )
            .query(
                "synthetic",
                Ty::Boolean,
                "Only synthetic (or only real) evidence.",
            )
            .query(
                "agent",
                Ty::String,
                "Only evidence carried by this agent's decisions.",
            )
            .query(
                "control",
                Ty::String,
                "Only evidence carried by decisions of this control.",
            )
            .query("since", Ty::DateTime, "Recorded at or after this time.")
            .query("until", Ty::DateTime, "Recorded before this time."),
    )
    .get(
        "/v1/tenants/{tenant}/evidence/{key}",
        |a, h, p| row_route(a, h, p, ViewName::Evidence),
        row(
            "One evidence row",
            "The evidence id (a `/` percent-encoded).",
        ),
    )
    .get(
        "/v1/tenants/{tenant}/events/{event_id}",
        event,
        read("An applied input event, with the rows it names and changed"),
    )
    .get(
        "/v1/tenants/{tenant}/approvals",
        approvals,
        indexed("List approval events, newest first").query(
            "kind",
            Ty::one_of(ApprovalKind::ALL.iter().map(|k| k.as_str())),
            "Only this kind.",
        ),
    )
    .get(
        "/v1/tenants/{tenant}/approvals/{event_id}",
        approval,
        read("One approval event"),
    )
    .get(
        "/v1/tenants/{tenant}/agents/{agent_id}/links",
        agent_links,
        indexed("What an agent acted for and with").query(
            "relation",
            symbols(&RELATIONS),
            "Only this relation.",
        ),
    )
    .get(
        "/v1/tenants/{tenant}/agents/{agent_id}/identity",
        agent_identity,
        read(
            "An agent's identity and access: owner, what it acted for and with, its API keys and \
             their scopes (used, and granted but unused for the window)",
        ),
    )
    .get(
        "/v1/tenants/{tenant}/approval-stats",
        approval_stats,
        indexed(
            "Requests for approval per control and agent: answered, pending, overdue, time to decision",
        )
        .query("control", Ty::String, "Only this control's agents."),
    )
    .get(
        "/v1/tenants/{tenant}/data-flows",
        data_flows,
        indexed("The data-exposure map: per data class and destination, its agents and decisions")
            .query("class", Ty::String, "Only this data class (e.g. `pii`).")
            .query(
                "approved",
                Ty::Boolean,
                "Only destinations whose registration approves (`true`) or does not approve \
                 (`false`) the class.",
            ),
    )
    .get(
        "/v1/tenants/{tenant}/rows",
        rows,
        list("One view's rows as stored, each with its key (for services that fold view rows)")
            .query(
                "view",
                Ty::one_of(ViewName::ALL.iter().map(|v| v.as_str())),
                "The view (required).",
            ),
    )
    .get(
        "/v1/tenants/{tenant}/posture",
        posture_route,
        read("The tenant's posture: scores per layer and overall"),
    )
    .get(
        "/v1/tenants/{tenant}/posture/trend",
        trend_route,
        read("The posture's hourly samples, oldest first").query(
            "days",
            Ty::Integer {
                min: 1,
                max: posture::Keeper::TREND_DAYS,
            },
            "How many days back (default 7).",
        ),
    )
}

/// The projector's routes (and `GET /openapi.json`, their document).
pub(crate) fn routes(api: Api) -> Router {
    table()
        .into_router()
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            as_of_layer,
        ))
        .with_state(api)
}

fn check(api: &Api, headers: &HeaderMap, tenant: &str) -> Result<(), ApiError> {
    api.auth.for_tenant(headers, tenant, Scope::Read)?;
    Ok(())
}

/// Rows per page of a list route, at most (and by default).
pub(crate) const LIST_PAGE: usize = 1000;

/// A list route's page: `limit` rows (1 to [`LIST_PAGE`]) after the `next_cursor` of the page
/// before (`after`).
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// One page of a tenant's rows of `view` with their keys, in key order, and the cursor of the
/// next page (`None` after the last).
async fn page_rows(
    store: &Arc<Store>,
    tenant: &str,
    view: ViewName,
    page: &PageQuery,
) -> Result<(Vec<(String, ViewRow)>, Option<String>), ApiError> {
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
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((key, decode_row(view, v)?))
            })
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
    let items: Vec<T> = rows.into_iter().filter_map(|(_, r)| pick(r)).collect();
    Ok(Json(
        json!({"tenant_id": tenant, "count": items.len(), name: items, "next_cursor": next}),
    ))
}

#[derive(Debug, Deserialize)]
struct RowsQuery {
    view: Option<String>,
}

/// `GET /v1/tenants/{tenant}/rows?view=`: one view's rows as stored, each with its key, in key
/// order, by page: what a service that folds view rows reads (the gatekeeper's readiness as of a
/// past instant), the same rows as the views topic carries.
async fn rows(
    At(api): At,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(page): Query<PageQuery>,
    Query(q): Query<RowsQuery>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let view = one_of::<ViewName>(q.view.as_deref())?
        .ok_or_else(|| ApiError::bad_request("view is required"))?;
    let (rows, next) = page_rows(&api.store, &tenant, view, &page).await?;
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(key, row)| json!({"key": key, "row": row}))
        .collect();
    Ok(Json(json!({
        "tenant_id": tenant, "view": view, "count": rows.len(), "rows": rows, "next_cursor": next,
        // As of a past instant: what the replay included (the `aispm-as-of` header's figures).
        "as_of": api.as_of.as_ref().map(|r| r.summary),
    })))
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
    At(api): At,
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
    At(api): At,
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
    /// A resource the finding is about: one part of its subject ([`about`]).
    about: Option<String>,
    /// `risk` (default) or `id`.
    sort: Option<String>,
}

/// Whether a finding's subject names `resource`: as one of its parts (an agent, a control, a
/// tool…, percent-decoded as [`finding_subject`] encoded them) or as the whole subject.
pub(crate) fn about(subject: &str, resource: &str) -> bool {
    let parts = finding_subject_parts(subject);
    parts.iter().any(|p| p == resource) || parts.join("/") == resource
}

/// A finding's SLA state at `now` ([`clock::finding_sla`]): `on_track`, `overdue` (the
/// `finding_overdue` blocker), `risk_accepted`, `past_due`, `closed_within_sla`, `closed_late`.
pub fn sla_state(f: &FindingRow, now: Timestamp) -> &'static str {
    clock::row_sla(f, now).as_str()
}

async fn findings(
    At(api): At,
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
    let now = api.now();
    let keep = move |f: &FindingRow| {
        status.is_none_or(|s| s == f.status)
            && severity.is_none_or(|s| s == f.severity)
            && q.rule.as_deref().is_none_or(|r| r == f.rule_id)
            && q.about.as_deref().is_none_or(|a| about(&f.subject, a))
            && q.owner
                .as_deref()
                .is_none_or(|o| f.owner.as_deref() == Some(o))
            && q.sla
                .as_deref()
                .is_none_or(|want| want == sla_state(f, now))
    };
    match q.sort.as_deref() {
        None | Some("") | Some("risk") => {
            check(&api, &headers, &tenant)?;
            let (rows, next) = ranked_findings(&api.store, &tenant, &page, keep).await?;
            let items: Vec<Value> = rows
                .into_iter()
                .filter_map(|f| present(&api.windows, ViewRow::Finding(f), now))
                .collect();
            Ok(Json(json!({
                "tenant_id": tenant, "count": items.len(), "findings": items,
                "sort": "risk", "next_cursor": next,
            })))
        }
        Some("id") => {
            list(
                &api,
                &headers,
                &tenant,
                ViewName::Findings,
                "findings",
                &page,
                |r| match r {
                    ViewRow::Finding(f) if keep(&f) => {
                        present(&api.windows, ViewRow::Finding(f), now)
                    }
                    _ => None,
                },
            )
            .await
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "sort: {other:?} is not one of risk, id"
        ))),
    }
}

/// A finding and its rank key, ordered by the key alone (unique per finding).
struct Ranked(risk::RankKey, Box<FindingRow>);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// One page of a tenant's findings that `keep` keeps, ranked by risk
/// ([`FindingRow::by_rank`]), after the rank key the cursor `after` names, and the
/// cursor of the next page. Every finding row of the tenant is read (a page holds at most
/// `limit + 1` of them at a time): the cost of a page grows with the tenant's findings.
async fn ranked_findings(
    store: &Arc<Store>,
    tenant: &str,
    page: &PageQuery,
    keep: impl Fn(&FindingRow) -> bool + Send + 'static,
) -> Result<(Vec<FindingRow>, Option<String>), ApiError> {
    let limit = page.limit.unwrap_or(LIST_PAGE);
    if limit == 0 || limit > LIST_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {LIST_PAGE}"
        )));
    }
    let after = match &page.after {
        Some(c) => Some(
            decode_cursor(c)
                .and_then(|b| risk::RankKey::decode(&b))
                .ok_or_else(|| ApiError::bad_request("after: not a cursor this API returned"))?,
        ),
        None => None,
    };
    let prefix = columns::tenant_prefix(tenant);
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || -> crate::error::Result<_> {
        // The `limit + 1` first by rank after the cursor: a max-heap whose top is the last.
        let mut best: std::collections::BinaryHeap<Ranked> = std::collections::BinaryHeap::new();
        store.for_each_prefix(columns::view_cf(ViewName::Findings), &prefix, |_, v| {
            let ViewRow::Finding(f) = decode_row(ViewName::Findings, v)? else {
                return Ok(());
            };
            let key = f.rank_key();
            if after.as_ref().is_some_and(|a| &key <= a) || !keep(&f) {
                return Ok(());
            }
            if best.len() <= limit {
                best.push(Ranked(key, Box::new(f)));
            } else if best.peek().is_some_and(|top| key < top.0) {
                best.pop();
                best.push(Ranked(key, Box::new(f)));
            }
            Ok(())
        })?;
        let mut rows = best.into_sorted_vec();
        let next = (rows.len() > limit).then(|| encode_cursor(&rows[limit - 1].0.encode()));
        rows.truncate(limit);
        Ok((rows.into_iter().map(|r| *r.1).collect(), next))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))
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
    At(api): At,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let now = api.now();
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
    /// Carried by this agent's decisions.
    agent: Option<String>,
    /// Carried by decisions of this control.
    control: Option<String>,
    /// Recorded at or after this time (RFC 3339).
    since: Option<String>,
    /// Recorded before this time (RFC 3339).
    until: Option<String>,
}

async fn evidence_list(
    At(api): At,
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
    let named = |want: &Option<String>, have: &Option<String>| match want.as_deref() {
        None | Some("") => true,
        Some(w) => have.as_deref() == Some(w),
    };
    let now = api.now();
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
                    && named(&q.agent, &e.agent_id)
                    && named(&q.control, &e.control_id)
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
    At(api): At,
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
    At(api): At,
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
pub(crate) fn present(windows: &clock::Windows, row: ViewRow, now: Timestamp) -> Option<Value> {
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
    At(api): At,
    headers: HeaderMap,
    Path((tenant, key)): Path<(String, String)>,
    view: ViewName,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let row = one_row(&api.store, &tenant, view, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no {view} row '{key}' for this tenant")))?;
    let mut v = present(&api.windows, row, api.now())
        .ok_or_else(|| ApiError::internal("a row that does not serialize"))?;
    v["tenant_id"] = json!(tenant);
    Ok(Json(v))
}

/// `GET /v1/tenants/{tenant}/events/{event_id}`: an applied input event by its id, every field
/// as it arrived (`type` decision, approval, registry or report_delivery; `asserted_by`, the
/// token that wrote it), and the keys of the rows it names, to follow. `404` for an id never
/// applied, and for one applied before events were kept by id (the answer says which).
async fn event(
    At(api): At,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let (event, by) = stored_event(&api, &tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no event '{id}' for this tenant")))?;
    let mut approvals = Vec::new();
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
            // What later events made of it: the finding it raised for lack of approval, and
            // the approvals granted for it.
            let store = Arc::clone(&api.store);
            let key = state_key(&tenant, Tag::Decision, &id);
            let facts: Option<DecisionFacts> =
                tokio::task::spawn_blocking(move || store.get(columns::STATE, &key))
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            if let Some(f) = facts {
                rows.extend(f.raised.map(|r| format!("findings/{r}")));
                approvals = f.approvals.into_iter().map(|(_, id)| id).collect();
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
        "approvals": approvals,
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
pub(crate) const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// The `next_cursor` of the page before.
    after: Option<String>,
    limit: Option<usize>,
}

/// Every event that raised an event-raised finding (`AISPM-APR-001`, `AISPM-EV-001`,
/// `AISPM-EV-002`), oldest
/// first, a page at a time: `next_cursor` names where the next page starts (`null` after the
/// last). Other findings are derived from an asset's or control's state and name their newest
/// events on the row (`event_ids`); for them `indexed` is false and `events` lists those.
async fn finding_events(
    At(api): At,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let (limit, after) = index_page(&q)?;
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
    let prefix = state_key(&tenant, Tag::Occurrence, &occurrence_prefix(&id));
    let (page, next) = state_page(&api.store, prefix, after, limit).await?;
    let events: Vec<Value> = page
        .iter()
        .filter_map(|(suffix, _)| {
            let text = std::str::from_utf8(suffix).ok()?;
            let (at, event_id) = text.split_once('\0')?;
            let at: i64 = at.parse().unwrap_or(0);
            Some(json!({"event_id": event_id, "occurred_at": Timestamp(at)}))
        })
        .collect();
    Ok(Json(json!({
        "tenant_id": tenant, "finding_id": id, "indexed": true,
        "occurrences": f.occurrences,
        "events": events,
        "next_cursor": next,
    })))
}

/// A page of the state column family under `prefix`, in key order: at most `limit` entries
/// (key suffix after the prefix, value) after the suffix `after`, and the cursor of the next
/// page (`None` after the last).
async fn state_page(
    store: &Arc<Store>,
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    limit: usize,
) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, Option<String>), ApiError> {
    let store = Arc::clone(store);
    let raw = tokio::task::spawn_blocking(move || {
        let mut start = prefix.clone();
        if let Some(suffix) = &after {
            start.extend_from_slice(suffix);
            start.push(0); // strictly after the cursor's entry
        }
        store
            .scan_from(columns::STATE, &prefix, &start, limit + 1)
            .map(|raw| (raw, prefix.len()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let (mut raw, strip) = raw;
    let next = (raw.len() > limit).then(|| encode_cursor(&raw[limit - 1].0[strip..]));
    raw.truncate(limit);
    Ok((
        raw.into_iter()
            .map(|(k, v)| (k[strip..].to_vec(), v))
            .collect(),
        next,
    ))
}

/// `limit` (1 to [`MAX_PAGE`], default [`DEFAULT_PAGE`]) and the decoded `after` of a page of
/// an index.
fn index_page(q: &EventsQuery) -> Result<(usize, Option<Vec<u8>>), ApiError> {
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
    Ok((limit, after))
}

/// An applied event by id with the principal that asserted it (`Ok(None)`: never applied).
async fn stored_event(
    api: &Api,
    tenant: &str,
    id: &str,
) -> Result<Option<(crate::apply::Event, Option<String>)>, ApiError> {
    let store = Arc::clone(&api.store);
    let key = columns::tenant_key(tenant, id);
    let Some(bytes) = tokio::task::spawn_blocking(move || store.get_raw(columns::SEEN, &key))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?
    else {
        return Ok(None);
    };
    crate::project::read_stored_event(&api.codec, &bytes)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "event '{id}' was applied before the projector kept events by id (a rebuild keeps it)"
            ))
        })
        .map(Some)
}

#[derive(Debug, Deserialize)]
struct ApprovalsQuery {
    /// An approval kind (`approval_granted`, `approval_denied`, `exception_granted`, …).
    kind: Option<String>,
}

/// An approval event as the approvals routes answer it: its fields and who asserted it.
fn approval_json(a: &ApprovalEvent, by: Option<String>) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
    v["type"] = json!("approval");
    v["asserted_by"] = json!(by);
    v
}

/// `GET /v1/tenants/{tenant}/approvals`: every approval event (approvals granted and denied,
/// exceptions, risk acceptances, revocations, break-glass and its reviews), newest first by
/// event time, a page at a time; `kind` keeps one kind (a page may then hold fewer).
async fn approvals(
    At(api): At,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(page): Query<EventsQuery>,
    Query(q): Query<ApprovalsQuery>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let kind = one_of::<ApprovalKind>(q.kind.as_deref())?;
    let (limit, after) = index_page(&page)?;
    let prefix = state_key(&tenant, Tag::Approval, "");
    let (markers, next) = state_page(&api.store, prefix, after, limit).await?;
    let mut items = Vec::with_capacity(markers.len());
    for (suffix, _) in &markers {
        let Some((_, id)) = std::str::from_utf8(suffix)
            .ok()
            .and_then(parse_approval_index)
        else {
            continue;
        };
        if let Some((crate::apply::Event::Approval(a), by)) =
            stored_event(&api, &tenant, id).await?
            && kind.is_none_or(|k| k == a.kind)
        {
            items.push(approval_json(&a, by));
        }
    }
    Ok(Json(json!({
        "tenant_id": tenant, "count": items.len(), "approvals": items, "next_cursor": next,
    })))
}

/// `GET /v1/tenants/{tenant}/approvals/{event_id}`: one approval event by its id.
async fn approval(
    At(api): At,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    match stored_event(&api, &tenant, &id).await? {
        Some((crate::apply::Event::Approval(a), by)) => {
            let mut v = approval_json(&a, by);
            v["tenant_id"] = json!(tenant);
            Ok(Json(v))
        }
        _ => Err(ApiError::not_found(format!(
            "no approval event '{id}' for this tenant"
        ))),
    }
}

#[derive(Debug, Deserialize)]
struct LinksQuery {
    /// One of [`RELATIONS`].
    relation: Option<String>,
}

/// `GET /v1/tenants/{tenant}/agents/{agent_id}/links`: what the agent acted for and with (the
/// actors, MCP tools, model endpoints, repos and workflows its decisions named), each with its
/// decision count, first and last use and the newest decision; by relation, then target.
async fn agent_links(
    At(api): At,
    headers: HeaderMap,
    Path((tenant, agent)): Path<(String, String)>,
    Query(page): Query<EventsQuery>,
    Query(q): Query<LinksQuery>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let relation = match q.relation.as_deref() {
        None | Some("") => None,
        Some(r) if RELATIONS.contains(&r) => Some(r),
        Some(r) => {
            return Err(ApiError::bad_request(format!(
                "relation '{r}': expected one of {}",
                RELATIONS.join(", ")
            )));
        }
    };
    let (limit, after) = index_page(&page)?;
    let prefix = state_key(&tenant, Tag::Link, &link_prefix(&agent, relation));
    let (page, next) = state_page(&api.store, prefix, after, limit).await?;
    let mut links = Vec::with_capacity(page.len());
    for (suffix, value) in &page {
        let l: Usage =
            crate::store::decode(value).map_err(|e| ApiError::internal(e.to_string()))?;
        // The suffix is `{relation} \0 {target}` after the agent's prefix (the relation's
        // prefix already stripped when filtering by one).
        let text = String::from_utf8_lossy(suffix);
        let (rel, target) = match relation {
            Some(r) => (r.to_owned(), text.into_owned()),
            None => match text.split_once('\0') {
                Some((r, t)) => (r.to_owned(), t.to_owned()),
                None => continue,
            },
        };
        links.push(json!({
            "relation": rel,
            "target": target,
            "decisions": l.decisions,
            "synthetic_decisions": l.synthetic_decisions,
            "first_at": l.first.map(Timestamp),
            "last_at": l.last.as_ref().map(|s| Timestamp(s.0)),
            "last_decision_id": l.last.map(|s| s.1),
        }));
    }
    Ok(Json(json!({
        "tenant_id": tenant, "agent_id": agent, "count": links.len(), "links": links,
        "next_cursor": next,
    })))
}

/// What the identity view judges an agent's keys and actors by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdentityLimits {
    /// AISPM-KEY-002's window (`--unused-scope-window`), in ms.
    pub unused_scope_ms: i64,
    /// Distinct actors from which an agent acts for unusually many (`--actors-per-agent`).
    pub actors_per_agent: u64,
}

/// Most links the identity view reads for one agent; past it the counts are lower bounds
/// (`links_capped`).
pub(crate) const IDENTITY_LINKS: usize = 100_000;
/// Most API keys the identity view lists for one agent (`keys_capped` past it).
pub(crate) const IDENTITY_KEYS: usize = 100;

/// `GET /v1/tenants/{tenant}/agents/{agent_id}/identity`: who owns the agent, what it acted
/// for and with (per relation: distinct targets, decisions, last use), whether it acted for
/// unusually many actors (`--actors-per-agent`), and its API keys (registered to it with
/// `attributes.agent_id`, or used by it): each key's registration, its scopes with their
/// decisions and last use, and the scopes granted but unused for `--unused-scope-window`
/// before the key's newest use (AISPM-KEY-002, judged by event time like the finding).
async fn agent_identity(
    At(api): At,
    headers: HeaderMap,
    Path((tenant, agent)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let store = Arc::clone(&api.store);
    let limits = api.identity;
    let (t, a) = (tenant.clone(), agent.clone());
    let body = tokio::task::spawn_blocking(move || -> crate::error::Result<Value> {
        identity(&store, &t, &a, limits)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(body))
}

/// Per relation: distinct targets, decisions, newest use.
#[derive(Default)]
struct RelationUse {
    targets: u64,
    decisions: i64,
    last: Option<i64>,
}

fn identity(
    store: &Store,
    tenant: &str,
    agent: &str,
    limits: IdentityLimits,
) -> crate::error::Result<Value> {
    let reg_json = |a: &AssetAgg| {
        a.registration.as_ref().map(|r| {
            json!({
                "status": if r.value.retired { "retired" } else { "registered" },
                "owner": r.value.owner, "criticality": r.value.criticality,
                "registered_at": Timestamp(r.at.0), "registration_event_id": r.at.1,
                "asserted_by": r.value.asserted_by,
            })
        })
    };
    let me: Option<AssetAgg> = store.get(
        columns::STATE,
        &state_key(tenant, Tag::Asset, &format!("agent/{agent}")),
    )?;

    // What it acted for and with, and which keys and scopes it used.
    let prefix = state_key(tenant, Tag::Link, &link_prefix(agent, None));
    let mut relations: BTreeMap<String, RelationUse> = BTreeMap::new();
    let mut scope_use: BTreeMap<(String, String), (i64, Option<i64>)> = BTreeMap::new();
    let mut keys: BTreeSet<String> = BTreeSet::new();
    let (mut read, mut links_capped) = (0usize, false);
    store.walk_from(columns::STATE, &prefix, &prefix, |k, v| {
        read += 1;
        if read > IDENTITY_LINKS {
            links_capped = true;
            return Ok(false);
        }
        let text = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        let Some((relation, target)) = text.split_once('\0') else {
            return Ok(true);
        };
        let l: Usage = crate::store::decode(v)?;
        let last = l.last.as_ref().map(|s| s.0);
        let r = relations.entry(relation.to_owned()).or_default();
        r.targets += 1;
        r.decisions += l.decisions;
        r.last = r.last.max(last);
        match relation {
            "api_key" => {
                keys.insert(target.to_owned());
            }
            "scope" => {
                // `{key}/{scope}`: a key id holds no `/` that matters here, the scope may.
                if let Some(key) = keys.iter().rev().find(|k| {
                    target.len() > k.len()
                        && target.starts_with(k.as_str())
                        && target.as_bytes()[k.len()] == b'/'
                }) {
                    let scope = target[key.len() + 1..].to_owned();
                    scope_use.insert((key.clone(), scope), (l.decisions, last));
                }
            }
            _ => {}
        }
        Ok(true)
    })?;
    // The keys registered to it, used or not.
    let registered = state_key(tenant, Tag::KeyOf, &format!("{agent}\0"));
    store.walk_from(columns::STATE, &registered, &registered, |k, _| {
        keys.insert(String::from_utf8_lossy(&k[registered.len()..]).into_owned());
        Ok(keys.len() <= IDENTITY_KEYS)
    })?;
    let keys_capped = keys.len() > IDENTITY_KEYS;

    let mut key_rows = Vec::new();
    for key in keys.iter().take(IDENTITY_KEYS) {
        let k: AssetAgg = store
            .get(
                columns::STATE,
                &state_key(tenant, Tag::Asset, &format!("api_key/{key}")),
            )?
            .unwrap_or_default();
        let granted: Vec<String> = k
            .registration
            .as_ref()
            .map(|r| r.value.scopes.clone())
            .unwrap_or_default();
        let mut scopes: BTreeMap<String, Value> = BTreeMap::new();
        for g in &granted {
            scopes.insert(
                g.clone(),
                json!({"scope": g, "granted": true, "decisions": 0, "last_used_at": null}),
            );
        }
        for ((sk, scope), (decisions, last)) in scope_use.range((key.clone(), String::new())..) {
            if sk != key {
                break;
            }
            scopes.insert(
                scope.clone(),
                json!({
                    "scope": scope, "granted": granted.contains(scope),
                    "decisions": decisions, "last_used_at": last.map(Timestamp),
                }),
            );
        }
        let unused = crate::rules::unused_scopes(&k, limits.unused_scope_ms);
        let privileged: Vec<&String> = granted
            .iter()
            .filter(|s| aispm_schemas::risk::privileged_scope(s))
            .collect();
        let key_agent = k.registration.as_ref().and_then(|r| r.value.agent.clone());
        key_rows.push(json!({
            "key_id": key,
            "registration": reg_json(&k),
            "agent_id": key_agent,
            "registered_to_this_agent": key_agent.as_deref() == Some(agent),
            "decisions": k.decisions,
            "last_used_at": k.last_decision.as_ref().map(|l| Timestamp(l.0)),
            "scopes": scopes.into_values().collect::<Vec<_>>(),
            "privileged_scopes": privileged,
            "unused_scopes": unused.iter().map(|(s, last)| json!({
                "scope": s, "last_used_at": last.map(Timestamp),
            })).collect::<Vec<_>>(),
            "findings": {
                "unused_scopes": (!unused.is_empty())
                    .then(|| crate::rules::finding_id(crate::rules::UNUSED_SCOPE, key)),
                "privileged_scopes": (!privileged.is_empty() && k.registration.as_ref().is_some_and(|r| !r.value.retired))
                    .then(|| crate::rules::finding_id(crate::rules::WILDCARD_KEY, key)),
            },
        }));
    }
    let actors = relations.get("actor").map_or(0, |r| r.targets);
    let relations: serde_json::Map<String, Value> = RELATIONS
        .iter()
        .map(|r| {
            let u = relations.remove(*r).unwrap_or_default();
            (
                (*r).to_owned(),
                json!({"targets": u.targets, "decisions": u.decisions, "last_at": u.last.map(Timestamp)}),
            )
        })
        .collect();
    Ok(json!({
        "tenant_id": tenant, "agent_id": agent,
        "registration": me.as_ref().and_then(reg_json),
        "decisions": me.as_ref().map_or(0, |m| m.decisions),
        "last_decision_at": me.as_ref().and_then(|m| m.last_decision.as_ref()).map(|l| Timestamp(l.0)),
        "relations": relations, "links_capped": links_capped,
        "actors": actors, "many_actors": actors >= limits.actors_per_agent,
        "actors_per_agent": limits.actors_per_agent,
        "keys": key_rows, "keys_capped": keys_capped,
        "unused_scope_window_ms": limits.unused_scope_ms,
    }))
}

#[derive(Debug, Deserialize)]
struct ApprovalStatsQuery {
    /// Only this control's agents.
    control: Option<String>,
}

/// `GET /v1/tenants/{tenant}/approval-stats`: per control and agent, the requests for approval
/// (decisions with verdict `require_approval`), how many were granted, denied or are pending,
/// the time from request to first answer (mean and a histogram, with the bucket bounds of the
/// median and the 90th percentile), the oldest pending request, and how many pending requests
/// are overdue now ([`clock::approval_overdue`], `--approval-decision-window`).
async fn approval_stats(
    At(api): At,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(page): Query<EventsQuery>,
    Query(q): Query<ApprovalStatsQuery>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let (limit, after) = index_page(&page)?;
    let prefix = match q.control.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => state_key(&tenant, Tag::ApprovalStats, &format!("{c}\0")),
        None => state_key(&tenant, Tag::ApprovalStats, ""),
    };
    let base_len = state_key(&tenant, Tag::ApprovalStats, "").len();
    let (page, next) = state_page(&api.store, prefix.clone(), after, limit).await?;
    let window = api.windows.approval_decision_window;
    let now = api.now();
    let store = Arc::clone(&api.store);
    let t = tenant.clone();
    let strip = prefix.len() - base_len;
    let rows = tokio::task::spawn_blocking(move || -> crate::error::Result<Vec<Value>> {
        let mut rows = Vec::with_capacity(page.len());
        for (suffix, value) in page {
            let s: ApprovalStats = crate::store::decode(&value)?;
            // The suffix is after the page's prefix: put back the control when filtering.
            let full = [&prefix[base_len..base_len + strip], suffix.as_slice()].concat();
            let text = String::from_utf8_lossy(&full).into_owned();
            let Some((control, agent)) = text.split_once('\0') else {
                continue;
            };
            // The pending requests, oldest first: the oldest, and how many are overdue now.
            let pending_prefix = state_key(&t, Tag::Pending, &format!("{text}\0"));
            let (mut oldest, mut overdue, mut capped) = (None, 0usize, false);
            store.walk_from(columns::STATE, &pending_prefix, &pending_prefix, |k, _| {
                let rest = String::from_utf8_lossy(&k[pending_prefix.len()..]).into_owned();
                let Some((at, decision)) = crate::state::split_pending(&rest) else {
                    return Ok(true);
                };
                let at = Timestamp(at);
                if oldest.is_none() {
                    oldest = Some(json!({"decision_id": decision, "requested_at": at}));
                }
                if !clock::approval_overdue(at, window, now) {
                    return Ok(false);
                }
                overdue += 1;
                capped = overdue >= crate::state::OVERDUE_COUNTED;
                Ok(!capped)
            })?;
            let answered = s.answered();
            let bound = |q| match s.quantile_bound(q) {
                None => Value::Null,
                Some(b) => json!(b),
            };
            let buckets: Vec<Value> = s
                .decide_buckets
                .iter()
                .enumerate()
                .map(|(i, n)| json!({"at_most_ms": aispm_schemas::views::DECISION_BUCKETS_MS.get(i), "count": n}))
                .collect();
            rows.push(json!({
                "control_id": control, "agent_id": agent,
                "requested": s.requested, "granted": s.granted, "denied": s.denied,
                "pending": s.requested - answered,
                "pending_overdue": overdue, "pending_overdue_capped": capped,
                "oldest_pending": oldest,
                "last_request_at": s.last_request.as_ref().map(|l| Timestamp(l.0)),
                "time_to_decision": {
                    "answered": answered,
                    "mean_ms": (answered > 0).then(|| s.decide_ms_sum / answered),
                    "p50_at_most_ms": bound(0.5), "p90_at_most_ms": bound(0.9),
                    "buckets": buckets,
                },
            }));
        }
        crate::error::Result::Ok(rows)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({
        "tenant_id": tenant, "approval_decision_window_ms": window.as_millis() as u64,
        "count": rows.len(), "stats": rows, "next_cursor": next,
    })))
}

#[derive(Debug, Deserialize)]
struct FlowsQuery {
    /// Only this data class.
    class: Option<String>,
    /// Only destinations approved (`true`) or not approved (`false`) for the class.
    approved: Option<bool>,
}

/// Most agents a data-flow row lists (the busiest first); `agent_count` counts them all.
pub(crate) const FLOW_AGENTS: usize = 100;

/// One (data class, destination) of the data-exposure map, summed over its agents.
struct FlowGroup {
    /// The key suffix `{class} \0 {kind} \0 {destination}` (the cursor).
    key: Vec<u8>,
    agents: Vec<(String, FlowAgg)>,
}

impl FlowGroup {
    fn parts(&self) -> (String, String, String) {
        let text = String::from_utf8_lossy(&self.key);
        let mut it = text.splitn(3, '\0').map(str::to_owned);
        let mut next = || it.next().unwrap_or_default();
        (next(), next(), next())
    }

    /// The row; `dest` is the destination's asset aggregate (its registration).
    fn row(mut self, dest: &AssetAgg) -> Value {
        let (class, kind, destination) = self.parts();
        let sum = |f: fn(&FlowAgg) -> i64| self.agents.iter().map(|(_, a)| f(a)).sum::<i64>();
        let (decisions, denied) = (sum(|a| a.used.decisions), sum(|a| a.denied));
        let synthetic = sum(|a| a.used.synthetic_decisions);
        let first = self.agents.iter().filter_map(|(_, a)| a.used.first).min();
        let last = self
            .agents
            .iter()
            .filter_map(|(_, a)| a.used.last.clone())
            .max();
        let approved = dest.approves(&class);
        let registered = dest.registration.as_ref().is_some_and(|r| !r.value.retired);
        // AISPM-DATA-001 judges model endpoints (by the same `AssetAgg::approves`).
        let finding = (kind == DESTINATIONS[0] && !approved).then(|| {
            crate::rules::finding_id(crate::rules::DATA_CLASS, &format!("{destination}/{class}"))
        });
        let agent_count = self.agents.len();
        self.agents.sort_by(|a, b| {
            b.1.used
                .decisions
                .cmp(&a.1.used.decisions)
                .then_with(|| a.0.cmp(&b.0))
        });
        self.agents.truncate(FLOW_AGENTS);
        let agents: Vec<Value> = self
            .agents
            .iter()
            .map(|(agent, a)| {
                json!({
                    "agent_id": agent, "decisions": a.used.decisions, "denied": a.denied,
                    "synthetic_decisions": a.used.synthetic_decisions,
                    "last_at": a.used.last.as_ref().map(|l| Timestamp(l.0)),
                })
            })
            .collect();
        json!({
            "data_class": class, "destination_kind": kind, "destination": destination,
            "registered": registered, "approved": approved,
            "decisions": decisions, "denied": denied, "synthetic_decisions": synthetic,
            "first_at": first.map(Timestamp), "last_at": last.as_ref().map(|l| Timestamp(l.0)),
            "last_decision_id": last.map(|l| l.1),
            "agent_count": agent_count, "agents": agents, "finding_id": finding,
        })
    }
}

/// `GET /v1/tenants/{tenant}/data-flows`: the data-exposure map, one row per (data class,
/// destination) a decision sent data of that class to (a model endpoint or an MCP tool), in
/// key order (class, destination kind, destination): the decisions and denials, the agents,
/// whether the destination's registration approves the class, when it was first and last seen.
async fn data_flows(
    At(api): At,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(page): Query<EventsQuery>,
    Query(q): Query<FlowsQuery>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let (limit, after) = index_page(&page)?;
    let class = q.class.filter(|c| !c.is_empty());
    let approved = q.approved;
    let store = Arc::clone(&api.store);
    let t = tenant.clone();
    let (rows, next) = tokio::task::spawn_blocking(
        move || -> crate::error::Result<(Vec<Value>, Option<String>)> {
            let base = state_key(&t, Tag::Flow, "");
            let prefix = state_key(&t, Tag::Flow, &flow_prefix(class.as_deref(), None));
            let start = match &after {
                // Past every agent of the cursor's group: its keys go on with `\0`.
                Some(group) => [base.as_slice(), group.as_slice(), &[1u8][..]].concat(),
                None => prefix.clone(),
            };
            let mut rows: Vec<(Vec<u8>, Value)> = Vec::new();
            let mut current: Option<FlowGroup> = None;
            let finish =
                |g: FlowGroup, rows: &mut Vec<(Vec<u8>, Value)>| -> crate::error::Result<()> {
                    let (_, kind, destination) = g.parts();
                    let dest: AssetAgg = store
                        .get(
                            columns::STATE,
                            &state_key(&t, Tag::Asset, &format!("{kind}/{destination}")),
                        )?
                        .unwrap_or_default();
                    if approved.is_none_or(|want| dest.approves(&g.parts().0) == want) {
                        let key = g.key.clone();
                        rows.push((key, g.row(&dest)));
                    }
                    crate::error::Result::Ok(())
                };
            store.walk_from(columns::STATE, &prefix, &start, |k, v| {
                let suffix = &k[base.len()..];
                let Some(cut) = suffix.iter().rposition(|b| *b == 0) else {
                    return Ok(true);
                };
                let (group, agent) = (&suffix[..cut], &suffix[cut + 1..]);
                if current.as_ref().is_some_and(|c| c.key != group) {
                    finish(current.take().expect("checked"), &mut rows)?;
                    if rows.len() > limit {
                        return Ok(false);
                    }
                }
                let flow: FlowAgg = crate::store::decode(v)?;
                current
                    .get_or_insert_with(|| FlowGroup {
                        key: group.to_vec(),
                        agents: Vec::new(),
                    })
                    .agents
                    .push((String::from_utf8_lossy(agent).into_owned(), flow));
                Ok(true)
            })?;
            if let Some(g) = current.take() {
                finish(g, &mut rows)?;
            }
            let next = (rows.len() > limit).then(|| encode_cursor(&rows[limit - 1].0));
            rows.truncate(limit);
            crate::error::Result::Ok((rows.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), next))
        },
    )
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({
        "tenant_id": tenant, "count": rows.len(), "flows": rows, "next_cursor": next,
    })))
}

/// Cursors are the marker's bytes after the finding's prefix, hex-encoded (opaque to callers).
fn encode_cursor(suffix: &[u8]) -> String {
    hex::encode(suffix)
}

fn decode_cursor(cursor: &str) -> Option<Vec<u8>> {
    if cursor.len() > 2048 {
        return None;
    }
    hex::decode(cursor).ok()
}

async fn posture_route(
    At(api): At,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    if let Some(replayed) = &api.as_of {
        // As of a past instant: computed from the replay's rows at that instant.
        let (store, windows, at) = (api.store.clone(), api.windows, api.now());
        let t = tenant.clone();
        let mut v =
            tokio::task::spawn_blocking(move || posture::compute_stored(&store, &t, &windows, at))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(|e| ApiError::internal(e.to_string()))?;
        v["computed_at"] = json!(at);
        v["as_of"] = json!(replayed.summary);
        return Ok(Json(v));
    }
    let v = api
        .posture
        .get(&tenant)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(Value::clone(&v)))
}

#[derive(Debug, Deserialize)]
struct TrendQuery {
    /// How many days back (1 to 30, default 7).
    days: Option<i64>,
}

/// `GET /v1/tenants/{tenant}/posture/trend?days=`: the posture's hourly samples (overall score,
/// score per layer in `layers` order, open findings), oldest first.
async fn trend_route(
    At(api): At,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<TrendQuery>,
) -> Result<Json<Value>, ApiError> {
    check(&api, &headers, &tenant)?;
    let days = q.days.unwrap_or(7);
    if !(1..=posture::Keeper::TREND_DAYS).contains(&days) {
        return Err(ApiError::bad_request(format!(
            "days must be between 1 and {}",
            posture::Keeper::TREND_DAYS
        )));
    }
    // As of a past instant: the samples taken up to it.
    let until = api.now();
    let since = Timestamp(until.0 - days * 24 * 3600 * 1000);
    let keeper = Arc::clone(&api.posture);
    let t = tenant.clone();
    let mut samples = tokio::task::spawn_blocking(move || keeper.trend(&t, since))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    samples.retain(|s| s.at <= until);
    Ok(Json(json!({
        "tenant_id": tenant,
        "layers": posture::LAYERS,
        "samples": samples,
    })))
}

#[cfg(test)]
mod tests {
    use super::about;
    use aispm_schemas::finding_subject;

    #[test]
    fn a_finding_is_about_each_part_of_its_subject_and_the_whole() {
        let pair = finding_subject(&["coder-agent", "ctl/shell"]);
        assert!(about(&pair, "coder-agent"));
        assert!(about(&pair, "ctl/shell"));
        assert!(!about(&pair, "ctl"));
        assert!(!about(&pair, "coder"));
        let tool = finding_subject(&["srv/tool"]);
        assert!(about(&tool, "srv/tool"));
        assert!(about(&finding_subject(&["50%/x"]), "50%/x"));
    }
}
