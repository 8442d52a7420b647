//! Calls one aispm service makes to another's HTTP API on behalf of a caller, with a bearer
//! token that may read the tenant: JSON answers, pages followed by their `next_cursor`, and a
//! refusal passed on with its status, reason and `Retry-After` (so a `403` names what the
//! token lacks and a `429` says when to come back). The gatekeeper and the reporter read the
//! projector's view rows as of a past instant this way, and the reporter the gatekeeper's
//! verdicts as of then.

use crate::http::ApiError;
use aispm_schemas::views::AsOf;
use aispm_schemas::{ViewName, ViewRow};
use axum::http::{HeaderValue, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// Rows per page read from the projector's `/rows` (its most).
pub const ROWS_PAGE: usize = 1000;

/// Another service's HTTP API: its base URL, and the client (its trust, its timeout).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The service's name in errors (`projector`, `gatekeeper`).
    pub name: &'static str,
    base: String,
    http: reqwest::Client,
}

impl Peer {
    /// The service at `base_url` (a trailing `/` is ignored).
    pub fn new(name: &'static str, base_url: &str, http: reqwest::Client) -> Peer {
        Peer {
            name,
            base: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// `GET {base}{path}?{query}` with `token` as the `Authorization` header: the JSON answer,
    /// or the service's refusal as an [`ApiError`] (`502` when it cannot be reached or its
    /// answer is not JSON).
    pub async fn get_json(
        &self,
        path: &str,
        token: &HeaderValue,
        query: &[(&str, String)],
    ) -> Result<Value, ApiError> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, token.as_bytes())
            .query(query)
            .send()
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "peer_unreachable",
                    format!("the {}'s {path}: {e}", self.name),
                )
            })?;
        if !r.status().is_success() {
            return Err(self.refused(r).await);
        }
        r.json().await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "peer_answer",
                format!("the {}'s {path}: {e}", self.name),
            )
        })
    }

    /// The service's refusal, passed on with its status and reason (a `429`'s `Retry-After`
    /// too). A server error becomes `peer_failed`, any other refusal `peer_refused`.
    async fn refused(&self, r: reqwest::Response) -> ApiError {
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let message = body["message"].as_str().unwrap_or("refused").to_owned();
        let code = if status.is_server_error() {
            "peer_failed"
        } else {
            "peer_refused"
        };
        let mut e = ApiError::new(status, code, format!("{}: {message}", self.name));
        if let Some(s) = retry {
            e = e.with_retry_after(Duration::from_secs(s));
        }
        e
    }

    /// Every page of a paged route: `GET {path}?{query}&limit={limit}`, then with `after` set
    /// to each answer's `next_cursor` until it is `null`; each page is handed to `each`.
    pub async fn pages(
        &self,
        path: &str,
        token: &HeaderValue,
        query: &[(&str, String)],
        limit: usize,
        mut each: impl FnMut(&Value) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let mut after: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            q.push(("limit", limit.to_string()));
            if let Some(a) = after.take() {
                q.push(("after", a));
            }
            let page = self.get_json(path, token, &q).await?;
            each(&page)?;
            match page["next_cursor"].as_str() {
                Some(c) => after = Some(c.to_owned()),
                None => return Ok(()),
            }
        }
    }

    /// Every row of every view of `tenant` as of `at` (RFC 3339), from the projector's
    /// `GET /v1/tenants/{tenant}/rows?view=&as_of=` page by page, each handed to `each` with
    /// its view and key. Returns what the projector's replay included (its answers' `as_of`).
    pub async fn rows_as_of(
        &self,
        token: &HeaderValue,
        tenant: &str,
        at: &str,
        mut each: impl FnMut(ViewName, &str, ViewRow) -> Result<(), ApiError>,
    ) -> Result<AsOf, ApiError> {
        let path = format!("/v1/tenants/{tenant}/rows");
        let mut included: Option<AsOf> = None;
        for view in ViewName::ALL {
            let query = [("view", view.as_str().to_owned()), ("as_of", at.to_owned())];
            self.pages(&path, token, &query, ROWS_PAGE, |page| {
                if included.is_none() {
                    included =
                        Some(serde_json::from_value(page["as_of"].clone()).map_err(|e| {
                            ApiError::new(
                                StatusCode::BAD_GATEWAY,
                                "peer_answer",
                                format!(
                                    "the {}'s rows say not what they are as of: {e}",
                                    self.name
                                ),
                            )
                        })?);
                }
                for item in page["rows"].as_array().into_iter().flatten() {
                    let key = item["key"].as_str().unwrap_or_default();
                    let row = ViewRow::from_json(*view, item["row"].clone()).map_err(|e| {
                        ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            "peer_answer",
                            format!(
                                "the {}'s {view} row '{key}' does not decode: {e}",
                                self.name
                            ),
                        )
                    })?;
                    each(*view, key, row)?;
                }
                Ok(())
            })
            .await?;
        }
        included.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "peer_answer",
                format!("the {} answered no page of rows", self.name),
            )
        })
    }
}
