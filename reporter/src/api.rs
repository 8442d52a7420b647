//! The HTTP API:
//!
//! - `POST /v1/tenants/{tenant}/reports` `{"type": "cso", "recipients": [..]?, "as_of": T?}` →
//!   `201` with the packet's id, manifest and where it was delivered (the first attempt's
//!   outcome); with `as_of`, the packet is as of that past instant ([`crate::as_of`]).
//! - `GET /v1/tenants/{tenant}/reports?limit=&before=` → a page of the tenant's reports, newest
//!   first, and its `next_cursor` (the `before` of the next page; `null` after the last).
//! - `GET /v1/tenants/{tenant}/reports/{id}` → one report.
//! - `GET /v1/tenants/{tenant}/reports/{id}/packet.zip` → the packet archive.
//! - `GET /v1/tenants/{tenant}/reports/{id}/packet.zip.minisig` → its minisign signature.
//! - `GET /v1/signing-keys` → the current and previous packet signing keys
//!   ([`crate::keys::KeysDocument`]).
//! - `GET /openapi.json` → this API's OpenAPI 3.1 document, generated from the route table.
//!
//! Every route needs a bearer token bound to the tenant (or an operator token);
//! `/v1/signing-keys` names no tenant and answers any valid token (the keys are public, but
//! the API answers no anonymous caller).

use crate::as_of::Request as AsOfRequest;
use crate::center::{Center, GenerateError, Trigger};
use crate::config::LimitArgs;
use crate::store::{ReportRecord, Status};
use aispm_runtime::auth::{Auth, Scope};
use aispm_runtime::http::ApiError;
use aispm_runtime::limit::{Buckets, Slots, retry_after_secs};
use aispm_runtime::metrics::Metrics;
use aispm_runtime::openapi::{self, Op};
use aispm_schemas::TenantId;
use aispm_schemas::{ReportType, Timestamp};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use prometheus::IntCounterVec;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Clone)]
struct Api {
    center: Arc<Center>,
    auth: Auth,
    limits: Arc<Limits>,
}

/// The per-tenant limits on report requests (see [`LimitArgs`]).
#[derive(Debug)]
pub(crate) struct Limits {
    per_hour: Option<Buckets<String>>,
    per_tenant: Slots<String>,
    all: Semaphore,
    refused: IntCounterVec,
}

impl Limits {
    pub(crate) fn new(args: &LimitArgs, metrics: &Metrics) -> aispm_runtime::Result<Limits> {
        let per_hour = args.reports_per_tenant_per_hour;
        Ok(Limits {
            per_hour: (per_hour > 0).then(|| {
                Buckets::new(
                    f64::from(per_hour) / 3600.0,
                    f64::from((per_hour / 4).max(1)),
                )
            }),
            per_tenant: Slots::new(args.report_concurrency_per_tenant),
            all: Semaphore::new(args.max_concurrent_reports.max(1)),
            refused: metrics.counter(
                "report_requests_throttled_total",
                "Report requests answered 429, by limit.",
                &["limit"],
            )?,
        })
    }

    fn refuse(&self, limit: &str, wait: Duration, message: String) -> ApiError {
        self.refused.with_label_values(&[limit]).inc();
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
            .with_retry_after(wait)
    }
}

/// The reporter's routes, each with its OpenAPI operation.
fn table() -> openapi::Api<Api> {
    let request = json!({
        "type": "object",
        "required": ["type"],
        "additionalProperties": false,
        "properties": {
            "type": {"type": "string", "enum": ReportType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>()},
            "recipients": {"type": "array", "items": {"type": "string"}},
            "as_of": {"type": "string", "format": "date-time", "description": "A past instant (RFC 3339): the packet's posture, findings and readiness as of then, read from the projector's replay and the gatekeeper's rules with the request's token, which must also have `read`."},
        },
    });
    let report = |summary| {
        Op::new(summary)
            .path("id", "The report's id.")
            .tenant(Scope::Read)
            .error(400, "The tenant id is not valid.")
    };
    openapi::Api::new(
        "aispm reporter",
        env!("CARGO_PKG_VERSION"),
        "Generates, signs and delivers report packets per tenant.",
    )
    .post(
        "/v1/tenants/{tenant}/reports",
        create,
        Op::new("Request a report packet")
            .body(
                "application/json",
                request,
                "The report type, recipients (a subset of the approved ones) if not all, and \
                 the past instant the packet is as of, if not now.",
            )
            .tenant(Scope::Reports)
            .ok(
                201,
                "application/json",
                "Generated and delivered: the packet's id, manifest and where it went.",
            )
            .also(
                202,
                "Generated and recorded; delivery failed and is retried (see `delivery`).",
            )
            .error(404, "No view rows for the tenant.")
            .error(422, "A recipient is not an approved one.")
            .error(
                503,
                "Still replaying state, or shutting down; retry shortly.",
            )
            .error(
                429,
                "Over the tenant's report limits, or too many failed authentications from \
                 this address; retry after Retry-After.",
            ),
    )
    .get(
        "/v1/tenants/{tenant}/reports",
        list,
        Op::new("List the tenant's reports, newest first")
            .paged("before", LIST_PAGE)
            .tenant(Scope::Read),
    )
    .get(
        "/v1/tenants/{tenant}/reports/{id}",
        show,
        report("One report"),
    )
    .get(
        "/v1/tenants/{tenant}/reports/{id}/packet.zip",
        archive,
        report("A report's packet archive").ok(200, "application/zip", "The packet (zip)."),
    )
    .get(
        "/v1/tenants/{tenant}/reports/{id}/packet.zip.minisig",
        archive_signature,
        report("The minisign signature of a report's packet archive").ok(
            200,
            "text/plain",
            "The signature (minisign format).",
        ),
    )
    .get(
        "/v1/signing-keys",
        signing_keys,
        Op::new("The current and previous packet signing keys").any_token(),
    )
}

/// The reporter's routes (and `GET /openapi.json`, their document).
pub(crate) fn routes(center: Arc<Center>, auth: Auth, limits: Arc<Limits>) -> Router {
    table().into_router().with_state(Api {
        center,
        auth,
        limits,
    })
}

/// Tenant ids as the contract allows them ([`TenantId`]).
fn check_tenant(t: &str) -> Result<(), ApiError> {
    TenantId::parse(t).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(rename = "type")]
    report_type: String,
    #[serde(default)]
    recipients: Option<Vec<String>>,
    #[serde(default)]
    as_of: Option<String>,
}

/// The JSON answer for a report.
pub(crate) fn view(r: &ReportRecord) -> Value {
    let last = r.attempts.last();
    json!({
        "id": r.id,
        "tenant_id": r.tenant_id,
        "type": r.report_type,
        "title": r.title,
        "headline": r.headline,
        "requested_by": r.requested_by,
        "created_at": r.created_at,
        "as_of": r.as_of,
        "packet": {
            "dir": r.packet.dir,
            "zip": r.packet.zip,
            "sha256": r.packet.zip_sha256,
            "bytes": r.packet.zip_bytes,
            "files": r.packet.manifest.files.len(),
        },
        "manifest": r.packet.manifest,
        "manifest_sha256": r.packet.manifest_sha256,
        "signature": r.packet.signature,
        "minisign": {
            "key_id": r.packet.manifest.signer.minisign_key_id,
            "public_key": r.packet.manifest.signer.minisign_public_key,
            "archive_signature": r.packet.zip_minisig,
        },
        "evidence_id": r.evidence_id(),
        "delivery": {
            "status": r.status,
            "channel": last.map(|a| a.channel),
            "outcome": last.map(|a| a.outcome),
            "recipients": last.map(|a| a.recipients.clone()).unwrap_or_default(),
            "approved_recipients": last.is_some_and(|a| a.approved_recipients),
            "message_id": last.and_then(|a| a.message_id.clone()),
            "server_response": last.and_then(|a| a.server_response.clone()),
            "error": last.and_then(|a| a.error.clone()),
            "next_attempt_at": r.next_attempt_at,
            "attempts": r.attempts,
        },
    })
}

async fn create(
    State(api): State<Api>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Result<Response, ApiError> {
    check_tenant(&tenant)?;
    let principal = api.auth.for_tenant(&headers, &tenant, Scope::Reports)?;
    let Some(Json(body)) = body else {
        return Err(ApiError::bad_request(
            "the body must be JSON: {\"type\": \"<report type>\"}",
        ));
    };
    let body: CreateBody = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    let report_type: ReportType = body.report_type.parse().map_err(ApiError::bad_request)?;
    // As of a past instant: the state is read with the requester's own token, so it must
    // also read the tenant; checked before any limit is spent.
    let as_of = match body.as_of.as_deref() {
        None => None,
        Some(at) => {
            let at = Timestamp::parse_rfc3339(at)
                .map_err(|e| ApiError::bad_request(format!("as_of: {e}")))?;
            api.auth.check(&principal, &tenant, Scope::Read)?;
            let token = headers
                .get(header::AUTHORIZATION)
                .cloned()
                .ok_or_else(|| ApiError::bad_request("as_of needs the request's bearer token"))?;
            Some(AsOfRequest { at, token })
        }
    };
    let limits = &api.limits;
    let Some(_slot) = limits.per_tenant.try_acquire(&tenant) else {
        return Err(limits.refuse(
            "tenant_concurrency",
            Duration::from_secs(1),
            format!(
                "tenant '{tenant}' already has {} report(s) in generation; retry when it is done",
                limits.per_tenant.max()
            ),
        ));
    };
    if let Some(per_hour) = &limits.per_hour
        && let Err(wait) = per_hour.check(&tenant)
    {
        return Err(limits.refuse(
            "tenant_rate",
            wait,
            format!(
                "tenant '{tenant}' is over its report allowance; retry after {} s",
                retry_after_secs(wait)
            ),
        ));
    }
    let _turn = limits
        .all
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("the reporter is shutting down"))?;
    let generated = api
        .center
        .generate(
            &tenant,
            report_type,
            Trigger::Api(principal.name),
            body.recipients,
            as_of,
        )
        .await;
    // The allowance counts reports made (checked above, taken here): a request refused as
    // unknown, unapproved or not ready costs nothing. One at a time per tenant (the slot), so
    // the check and the take cannot be raced past the allowance.
    if let (Ok(_), Some(per_hour)) = (&generated, &limits.per_hour) {
        let _ = per_hour.take(&tenant, 1.0);
    }
    match generated {
        Ok(r) => {
            let status = if r.status == Status::Delivered {
                StatusCode::CREATED
            } else {
                // Generated and recorded; delivery failed and is being retried (or gave up).
                StatusCode::ACCEPTED
            };
            Ok((status, Json(view(&r))).into_response())
        }
        Err(GenerateError::NotReady) => Err(ApiError::unavailable(
            "the reporter is still replaying its state; retry shortly",
        )),
        Err(e @ GenerateError::UnknownTenant(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e @ GenerateError::Unapproved(_)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unapproved_recipients",
            e.to_string(),
        )),
        Err(GenerateError::AsOf(e)) => Err(e),
        Err(GenerateError::Failed(e)) => {
            tracing::error!(tenant_id = %tenant, error = %e, "Report generation failed.");
            Err(ApiError::internal(format!("report generation failed: {e}")))
        }
    }
}

/// Reports per page of the listing, at most (and by default).
pub(crate) const LIST_PAGE: usize = 200;

/// A page of the listing: `limit` reports (1 to [`LIST_PAGE`]), newest first, older than the
/// `next_cursor` of the page before (`before`).
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    before: Option<String>,
}

async fn list(
    State(api): State<Api>,
    Path(tenant): Path<String>,
    Query(page): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_tenant(&tenant)?;
    api.auth.for_tenant(&headers, &tenant, Scope::Read)?;
    let limit = page.limit.unwrap_or(LIST_PAGE);
    if limit == 0 || limit > LIST_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {LIST_PAGE}"
        )));
    }
    let page = api
        .center
        .store()
        .list(&tenant, page.before.as_deref(), limit)
        .ok_or_else(|| ApiError::bad_request("before: not a cursor this API returned"))?;
    let reports: Vec<Value> = page
        .reports
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "type": r.report_type,
                "created_at": r.created_at,
                "as_of": r.as_of,
                "status": r.status,
                "packet_sha256": r.packet_sha256,
                "attempts": r.attempts,
            })
        })
        .collect();
    Ok(Json(
        json!({"tenant_id": tenant, "count": reports.len(), "reports": reports, "next_cursor": page.next}),
    ))
}

async fn show(
    State(api): State<Api>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_tenant(&tenant)?;
    api.auth.for_tenant(&headers, &tenant, Scope::Read)?;
    let r = api
        .center
        .store()
        .get(&tenant, &id)
        .map_err(|e| ApiError::internal(format!("reading the report record: {e}")))?
        .ok_or_else(|| ApiError::not_found(format!("no report {id} for tenant {tenant}")))?;
    Ok(Json(view(&r)))
}

async fn archive(
    State(api): State<Api>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_tenant(&tenant)?;
    api.auth.for_tenant(&headers, &tenant, Scope::Read)?;
    let r = api
        .center
        .store()
        .get(&tenant, &id)
        .map_err(|e| ApiError::internal(format!("reading the report record: {e}")))?
        .ok_or_else(|| ApiError::not_found(format!("no report {id} for tenant {tenant}")))?;
    let bytes = tokio::fs::read(&r.packet.zip)
        .await
        .map_err(|e| ApiError::internal(format!("reading the packet: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.zip\"", r.id),
            ),
        ],
        bytes,
    )
        .into_response())
}

async fn archive_signature(
    State(api): State<Api>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_tenant(&tenant)?;
    api.auth.for_tenant(&headers, &tenant, Scope::Read)?;
    let r = api
        .center
        .store()
        .get(&tenant, &id)
        .map_err(|e| ApiError::internal(format!("reading the report record: {e}")))?
        .ok_or_else(|| ApiError::not_found(format!("no report {id} for tenant {tenant}")))?;
    let path = r.packet.zip_minisig.as_ref().ok_or_else(|| {
        ApiError::not_found(format!(
            "report {id} was written before packets were signed with minisign"
        ))
    })?;
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| ApiError::internal(format!("reading the packet's signature: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.zip.minisig\"", r.id),
            ),
        ],
        text,
    )
        .into_response())
}

/// The packet signing keys: public, but like every `/v1` route, for a valid token only (of any
/// tenant: the keys belong to no tenant).
async fn signing_keys(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<Json<crate::keys::KeysDocument>, ApiError> {
    api.auth.principal(&headers)?;
    Ok(Json(api.center.keys().document()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_cannot_escape_the_packet_directory() {
        assert!(check_tenant("acme").is_ok() && check_tenant("acme-eu.1_x").is_ok());
        for bad in ["", ".", "..", "a/b", "../etc", "a b", "ä", &"a".repeat(65)] {
            assert!(check_tenant(bad).is_err(), "{bad}");
        }
    }
}
