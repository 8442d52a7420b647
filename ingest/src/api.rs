//! `POST /v1/events`: authenticate, bound memory, parse and validate, authorize every tenant,
//! produce, and answer `202` only once the broker acknowledged every record.
//!
//! A request is all-or-nothing with respect to validation and authorization: one invalid item
//! (400) or one tenant the token may not write (403) rejects the whole request and nothing is
//! produced. See `docs/ingest.md` for the answers.
//!
//! `POST /v1/traces` takes OTLP/HTTP traces (protobuf or JSON) through the same steps: its
//! tool, agent, model and MCP spans become decisions ([`crate::otlp`]), and the answer is the
//! OTLP export response. Either route takes a gzip body (`Content-Encoding: gzip`), bounded
//! after decompression by the same body limit.
//!
//! `GET /openapi.json` answers the API's OpenAPI 3.1 document, generated from [`router`]'s
//! route table.

use crate::body::{self, BodyError, Format, Generated, ItemError, MAX_LISTED_ERRORS, Parsed};
use crate::metrics::{IngestMetrics, Outcome};
use crate::otlp;
use crate::publish::{self, Encoded, PublishError, Publisher};
use aispm_runtime::auth::{Access, Auth, Scope};
use aispm_runtime::http::ApiError;
use aispm_runtime::limit::{Buckets, Slots, retry_after_secs};
use aispm_runtime::openapi::{self, Op};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How long a refused upload is read (and discarded) so that the client sees the answer.
const DRAIN_FOR: Duration = Duration::from_secs(5);

/// What the handler needs.
#[derive(Debug)]
pub struct App {
    pub auth: Auth,
    pub publisher: Arc<Publisher>,
    pub metrics: IngestMetrics,
    /// Requests being parsed at once (one per core).
    pub parse_slots: Semaphore,
    /// Set once the input topics exist.
    pub topics_ready: Arc<AtomicBool>,
    /// Requests in progress per token (`--per-token-concurrency`).
    pub token_slots: Slots<String>,
    /// Events per second per token (`--per-token-events-per-second`).
    pub token_rate: Option<Buckets<String>>,
    /// How long a client has to send its body.
    pub body_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    pub retry_after_secs: u64,
    /// How far `occurred_at` may lie after this service's clock.
    pub future_tolerance: Duration,
}

impl App {
    /// The handler's state for `config`: one parse slot per core, the per-token quotas.
    pub fn new(
        config: &crate::Config,
        auth: Auth,
        publisher: Arc<Publisher>,
        metrics: IngestMetrics,
        topics_ready: Arc<AtomicBool>,
    ) -> App {
        App {
            auth,
            publisher,
            metrics,
            parse_slots: Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
            topics_ready,
            token_slots: Slots::new(config.per_token_concurrency),
            token_rate: (config.per_token_events_per_second > 0).then(|| {
                let rate = f64::from(config.per_token_events_per_second);
                Buckets::new(rate, rate)
            }),
            body_timeout: config.body_timeout,
            max_body_bytes: config.max_body_bytes,
            max_batch_events: config.max_batch_events,
            retry_after_secs: config.retry_after_secs(),
            future_tolerance: config.future_tolerance,
        }
    }
}

/// The `202` body.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub accepted: usize,
    /// Per event type, e.g. `{"decision": 98, "approval": 2}`.
    pub by_type: BTreeMap<&'static str, u64>,
    /// The `event_id`s generated for items that had none, by index.
    pub generated: Vec<Generated>,
    /// OTLP: spans that were not actions, by reason (not part of the JSON answer).
    #[serde(skip)]
    pub ignored: BTreeMap<&'static str, u64>,
}

/// The service's routes, each with its OpenAPI operation.
fn table() -> openapi::Api<Arc<App>> {
    let events = serde_json::json!({
        "description": "An input event (decision, approval or registry), or an array of them.",
        "type": ["object", "array"],
    });
    let lines = serde_json::json!({"type": "string", "description": "One input event per line."});
    let body = "The events: one JSON event or an array (application/json), or one event per \
                line (application/x-ndjson). All-or-nothing: one invalid item rejects the request.";
    openapi::Api::new(
        "aispm ingest",
        env!("CARGO_PKG_VERSION"),
        "Receives input events over HTTP and produces them to Kafka, answering once the broker \
         acknowledged every record.",
    )
    .post(
        "/v1/events",
        post_events,
        Op::new("Send input events")
            .body("application/json", events, body)
            .body("application/x-ndjson", lines, body)
            .body(
                "application/cloudevents+json",
                serde_json::json!({"type": "object", "description": "One CloudEvent 1.0 (structured mode) whose type is aispm.decision.v1, aispm.approval.v1 or aispm.registry.v1 and whose data is the event."}),
                body,
            )
            .body(
                "application/cloudevents-batch+json",
                serde_json::json!({"type": "array", "description": "CloudEvents 1.0 (structured mode)."}),
                body,
            )
            .scopes(
                &[
                    Scope::Emit,
                    Scope::Approve,
                    Scope::Register,
                    Scope::Validate,
                    Scope::Admin,
                ],
                "A bearer token that may write every tenant the events name, with the scope each \
                 event needs: `emit` for decisions, `approve` for approval events, `validate` for \
                 validation results, `admin` for trust roots and report providers, `register` \
                 for other assets.",
            )
            .ok(
                202,
                "application/json",
                "Every event acknowledged by the broker: `{accepted, by_type, generated}`.",
            )
            .error(
                400,
                "Malformed body, or invalid events (listed in `details`); none accepted.",
            )
            .error(408, "The body did not arrive in time; none accepted.")
            .error(413, "The body or the batch is too large; none accepted.")
            .error(415, "Not JSON, NDJSON or CloudEvents JSON, or an unknown Content-Encoding.")
            .error(
                429,
                "Over the token's quotas or the service's buffers, or too many failed \
                 authentications from this address; retry after Retry-After.",
            )
            .error(
                503,
                "Starting, or the broker did not acknowledge; resend the same request after \
                 Retry-After (events apply once per event_id).",
            ),
    )
    .post(
        "/v1/traces",
        post_traces,
        Op::new("Send OTLP/HTTP traces")
            .body(
                "application/x-protobuf",
                serde_json::json!({"type": "string", "format": "binary", "description": "An OTLP ExportTraceServiceRequest."}),
                "OTLP traces: tool, agent, model and MCP spans become decisions (verdict from aispm.* attributes; without one, an ungoverned action); other spans are counted and ignored. All-or-nothing.",
            )
            .body(
                "application/json",
                serde_json::json!({"type": "object", "description": "An OTLP ExportTraceServiceRequest in the OTLP JSON mapping."}),
                "OTLP traces in the OTLP JSON mapping.",
            )
            .scopes(
                &[Scope::Emit],
                "A bearer token with `emit` for the spans' tenants (`aispm.tenant_id`, or the token's only tenant).",
            )
            .ok(
                200,
                "application/json",
                "An ExportTraceServiceResponse, encoded as the request; its partial success names the spans that were not actions.",
            )
            .error(400, "Not an OTLP export, or spans that cannot be decisions (listed); none accepted.")
            .error(408, "The body did not arrive in time; none accepted.")
            .error(413, "The body or the batch is too large; none accepted.")
            .error(415, "Neither application/x-protobuf nor application/json, or an unknown Content-Encoding.")
            .error(429, "Over the token's quotas or the service's buffers; retry after Retry-After.")
            .error(503, "Starting, or the broker did not acknowledge; resend after Retry-After."),
    )
}

/// The service's routes (and `GET /openapi.json`, their document; `/metrics`, `/healthz` and
/// `/readyz` are added by `aispm_runtime::http`).
pub fn router(app: Arc<App>) -> Router {
    let limit = app.max_body_bytes;
    table()
        .into_router()
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

/// A refused request: its answer, and how it is counted.
struct Refusal {
    outcome: Outcome,
    reason: &'static str,
    error: ApiError,
    /// `Some(None)`: Retry-After with the configured delay; `Some(Some(s))`: `s` seconds.
    retry_after: Option<Option<u64>>,
}

impl Refusal {
    fn new(outcome: Outcome, reason: &'static str, error: ApiError) -> Self {
        Refusal {
            outcome,
            reason,
            error,
            retry_after: None,
        }
    }

    fn retry_later(mut self) -> Self {
        self.retry_after = Some(None);
        self
    }

    fn retry_in(mut self, wait: Duration) -> Self {
        self.retry_after = Some(Some(retry_after_secs(wait)));
        self
    }
}

/// Which route a request came to: how its body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Events,
    Traces,
}

async fn post_events(State(app): State<Arc<App>>, req: Request) -> Response {
    match handle(&app, req, Route::Events).await {
        Ok(accepted) => {
            app.metrics.request(Outcome::Accepted, "ok");
            (StatusCode::ACCEPTED, Json(accepted)).into_response()
        }
        Err(refusal) => refusal.into_response(&app, None),
    }
}

/// `POST /v1/traces`: answers in the OTLP/HTTP shape (`200` with an export response; errors
/// as `google.rpc.Status` for protobuf clients).
async fn post_traces(State(app): State<Arc<App>>, req: Request) -> Response {
    let encoding = otlp::Encoding::from_content_type(
        req.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
    .ok();
    match handle(&app, req, Route::Traces).await {
        Ok(accepted) => {
            app.metrics.request(Outcome::Accepted, "ok");
            for (reason, n) in &accepted.ignored {
                app.metrics.events("span", "ignored", reason, *n);
            }
            let encoding = encoding.unwrap_or(otlp::Encoding::Json);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, encoding.content_type())],
                otlp::response(encoding, &accepted.ignored),
            )
                .into_response()
        }
        Err(refusal) => refusal.into_response(&app, encoding),
    }
}

impl Refusal {
    /// The answer: JSON, or `google.rpc.Status` to an OTLP protobuf client.
    fn into_response(self, app: &App, encoding: Option<otlp::Encoding>) -> Response {
        app.metrics.request(self.outcome, self.reason);
        let retry_after = self.retry_after;
        let mut response = if encoding == Some(otlp::Encoding::Protobuf) {
            let mut message = self.error.message.clone();
            if let Some(errors) = self
                .error
                .details
                .as_ref()
                .and_then(|d| d.get("errors"))
                .and_then(Value::as_array)
            {
                for e in errors.iter().take(20) {
                    message.push_str(&format!(
                        "; span {} {}: {}",
                        e["index"], e["field"], e["reason"]
                    ));
                }
            }
            (
                self.error.status,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                otlp::status(self.error.status.as_u16(), &message),
            )
                .into_response()
        } else {
            self.error.into_response()
        };
        if let Some(secs) = retry_after {
            let secs = secs.unwrap_or(app.retry_after_secs);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

async fn handle(app: &App, req: Request, route: Route) -> Result<Accepted, Refusal> {
    if !app.topics_ready.load(Ordering::Relaxed) {
        return Err(Refusal::new(
            Outcome::Unavailable,
            "starting",
            ApiError::unavailable("the service is starting: the input topics are not ready yet"),
        )
        .retry_later());
    }
    let headers = req.headers().clone();
    let principal = app
        .auth
        .principal(&headers)
        .map_err(|e| Refusal::new(Outcome::Unauthorized, "token", e))?;
    // Per-token quotas: one token's flood or slow uploads meet 429 without touching the
    // budgets every other token shares. The slot is held until the answer.
    let Some(_slot) = app.token_slots.try_acquire(&principal.name) else {
        drain(req.into_body(), app.max_body_bytes).await;
        return Err(throttled(
            "token_concurrency",
            &format!(
                "this token already has {} requests in progress",
                app.token_slots.max()
            ),
        ));
    };
    if let Some(rate) = &app.token_rate
        && let Err(wait) = rate.check(&principal.name)
    {
        drain(req.into_body(), app.max_body_bytes).await;
        return Err(throttled("token_rate", "this token is over its event rate").retry_in(wait));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = match route {
        Route::Events => Format::from_content_type(content_type),
        Route::Traces => otlp::Encoding::from_content_type(content_type).map(Format::Otlp),
    }
    .and_then(|f| content_encoding(&headers).map(|gzip| (f, gzip)))
    .map_err(|m| {
        Refusal::new(
            Outcome::UnsupportedMediaType,
            "content_type",
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                m,
            ),
        )
    })?;

    // Reserve the body's bytes before reading it, so concurrent requests cannot buffer
    // more than --max-buffered-bytes between them.
    let declared = content_length(&headers);
    if let Some(n) = declared
        && n > app.max_body_bytes
    {
        // A moderately oversize upload is read and discarded first, so that the client reads
        // the 413 instead of a connection reset in the middle of sending; a far larger one is
        // cut off.
        if n <= app.max_body_bytes.saturating_mul(4) {
            drain(req.into_body(), n).await;
        }
        return Err(too_large(app.max_body_bytes));
    }
    let Some(_bytes) = app
        .publisher
        .try_reserve_bytes(declared.unwrap_or(app.max_body_bytes).max(1))
    else {
        // Read and discard the body (no buffering) so that the client sees the 429 rather
        // than a connection reset in the middle of its upload.
        drain(req.into_body(), app.max_body_bytes).await;
        return Err(throttled(
            "buffer_full",
            "too many request bytes are in flight",
        ));
    };
    let body = tokio::time::timeout(app.body_timeout, Bytes::from_request(req, &()))
        .await
        .map_err(|_| {
            Refusal::new(
                Outcome::Timeout,
                "body_timeout",
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the body did not arrive within {}; no event was accepted",
                        humantime::format_duration(app.body_timeout)
                    ),
                ),
            )
        })?
        .map_err(|e| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                too_large(app.max_body_bytes)
            }
            other => Refusal::new(
                Outcome::Invalid,
                "unreadable_body",
                ApiError::bad_request(format!("the body could not be read: {other}")),
            ),
        })?;

    // Parsing, validation and Avro encoding are CPU work: off the async workers, and at most
    // one request per core at a time, so that parsed bodies (several times their size) do not
    // pile up under overload; waiting requests hold only their raw bytes.
    let max_events = app.max_batch_events;
    let latest = aispm_schemas::Timestamp::now().plus(app.future_tolerance);
    let codec = app.publisher.codec().clone();
    let (format, gzip) = format;
    let max_body = app.max_body_bytes;
    // OTLP spans that name no tenant belong to the token's tenant, if it has exactly one.
    let default_tenant = match &principal.access {
        Access::Tenants(t) if t.len() == 1 => t.iter().next().cloned(),
        _ => None,
    };
    let parse_slot = app.parse_slots.acquire().await.map_err(|_| {
        Refusal::new(
            Outcome::Unavailable,
            "shutting_down",
            ApiError::unavailable("the service is shutting down"),
        )
        .retry_later()
    })?;
    let (parsed, encoded) = tokio::task::spawn_blocking(move || {
        let body = if gzip { gunzip(&body, max_body)? } else { body };
        let mut parsed =
            body::parse_with(&body, format, max_events, latest, default_tenant.as_deref())?;
        drop(body);
        let encoded = if parsed.errors.is_empty() {
            let encoded = publish::encode(&codec, &parsed.events);
            if let Ok(records) = &encoded {
                let sizes: Vec<usize> = records.iter().map(|r| r.payload.len()).collect();
                body::check_sizes(&mut parsed, &sizes);
            }
            // Only the encoded records are needed from here on.
            parsed.events = Vec::new();
            encoded
        } else {
            Ok(Vec::new())
        };
        Ok::<_, BodyError>((parsed, encoded))
    })
    .await
    .map_err(|e| {
        Refusal::new(
            Outcome::Unavailable,
            "internal",
            ApiError::internal(format!("parsing failed: {e}")),
        )
    })?
    .map_err(|e| body_refusal(&e))?;
    drop(parse_slot);

    // Every tenant any item names must be one the token may write, valid item or not.
    if let Some(tenant) = parsed.tenants.iter().find(|t| !principal.may_access(t)) {
        // Counted as a refusal for the tenant, like a read of another tenant's data.
        let error = app
            .auth
            .check(&principal, tenant, Scope::Emit)
            .err()
            .unwrap_or_else(|| {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the token may not access this tenant",
                )
            });
        count_discarded(&app.metrics, &parsed, "rejected", "forbidden");
        return Err(Refusal::new(
            Outcome::Forbidden,
            "tenant",
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{}: the token may not write events for tenant '{tenant}'; no event was accepted",
                    error.message
                ),
            ),
        ));
    }

    // And every scope its items need: a token that may emit decisions may not resolve
    // findings, register trust roots or report validations.
    if let Some(error) = parsed
        .scopes
        .iter()
        .find_map(|s| app.auth.check_scope(&principal, *s).err())
    {
        count_discarded(&app.metrics, &parsed, "rejected", "forbidden");
        return Err(Refusal::new(
            Outcome::Forbidden,
            "scope",
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{}; no event was accepted", error.message),
            ),
        ));
    }

    if !parsed.errors.is_empty() {
        return Err(invalid(&app.metrics, &parsed));
    }
    let encoded: Vec<Encoded> = encoded.map_err(|e| {
        count_discarded(&app.metrics, &parsed, "failed", "encode");
        Refusal::new(
            Outcome::Unavailable,
            "encode",
            ApiError::internal(e.to_string()),
        )
    })?;

    let n = encoded.len();
    if let Some(rate) = &app.token_rate
        && let Err(wait) = rate.take(&principal.name, n as f64)
    {
        count_discarded(&app.metrics, &parsed, "rejected", "throttled");
        return Err(throttled(
            "token_rate",
            &format!("{n} events would put this token over its event rate"),
        )
        .retry_in(wait));
    }
    let _events = app.publisher.try_reserve_events(n).ok_or_else(|| {
        count_discarded(&app.metrics, &parsed, "rejected", "throttled");
        throttled(
            "in_flight_full",
            "too many events are waiting for the broker",
        )
    })?;
    if let Err(e) = app.publisher.publish(&encoded, &principal.name).await {
        let reason = e.reason();
        count_discarded(&app.metrics, &parsed, "failed", reason);
        tracing::warn!(events = n, error = %e, "A batch was not acknowledged by the broker.");
        return Err(match e {
            PublishError::QueueFull => {
                throttled(reason, "the producer queue is full; retry after the delay")
            }
            PublishError::BrokerDown(m) | PublishError::NotAcknowledged(m) => Refusal::new(
                Outcome::Unavailable,
                reason,
                ApiError::unavailable(format!(
                    "the broker did not acknowledge the events ({m}); resend the same request: events are applied once per event_id"
                )),
            )
            .retry_later(),
        });
    }

    for (kind, count) in &parsed.by_type {
        app.metrics.events(kind, "accepted", "ok", *count);
    }
    app.metrics
        .batch_size
        .with_label_values(&[format.as_str()])
        .observe(n as f64);
    Ok(Accepted {
        accepted: n,
        by_type: parsed.by_type,
        generated: parsed.generated,
        ignored: parsed.ignored,
    })
}

/// Whether the body is gzip-compressed (`Content-Encoding: gzip`; `identity` or none: not).
fn content_encoding(headers: &HeaderMap) -> Result<bool, String> {
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("identity" | "") => Ok(false),
        Some("gzip" | "x-gzip") => Ok(true),
        Some(other) => Err(format!(
            "unsupported content encoding '{other}': send gzip or an uncompressed body"
        )),
    }
}

/// Decompresses a gzip body, refusing one that inflates past `max` bytes (a small
/// compressed body must not buy a large buffer).
fn gunzip(body: &[u8], max: usize) -> Result<Bytes, BodyError> {
    use std::io::Read as _;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max));
    let mut reader = flate2::read::MultiGzDecoder::new(body).take(max as u64 + 1);
    reader.read_to_end(&mut out).map_err(|e| {
        BodyError::Envelope(format!("the gzip body could not be decompressed: {e}"))
    })?;
    if out.len() > max {
        return Err(BodyError::Inflated { max });
    }
    Ok(Bytes::from(out))
}

/// Discards up to `max` bytes of a body, for at most a few seconds.
async fn drain(body: axum::body::Body, max: usize) {
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_FOR;
    while seen <= max {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => seen += chunk.len(),
            _ => break,
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn too_large(max: usize) -> Refusal {
    Refusal::new(
        Outcome::TooLarge,
        "body_too_large",
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds {max} bytes; split it into smaller requests"),
        ),
    )
}

fn throttled(reason: &'static str, message: &str) -> Refusal {
    Refusal::new(
        Outcome::Throttled,
        reason,
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            format!("{message}; no event was accepted, retry after the delay"),
        ),
    )
    .retry_later()
}

fn body_refusal(e: &BodyError) -> Refusal {
    match e {
        BodyError::TooManyEvents { .. } => Refusal::new(
            Outcome::TooLarge,
            "too_many_events",
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            ),
        ),
        BodyError::Json(_) => Refusal::new(
            Outcome::Invalid,
            "malformed_json",
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()),
        ),
        BodyError::Inflated { .. } => Refusal::new(
            Outcome::TooLarge,
            "body_too_large",
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            ),
        ),
        BodyError::Shape | BodyError::Empty | BodyError::Envelope(_) => Refusal::new(
            Outcome::Invalid,
            "malformed_body",
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string()),
        ),
    }
}

fn invalid(metrics: &IngestMetrics, parsed: &Parsed) -> Refusal {
    metrics.events(
        "unknown",
        "rejected",
        "invalid",
        u64::try_from(parsed.rejected).unwrap_or(u64::MAX),
    );
    count_discarded(metrics, parsed, "rejected", "batch_rejected");
    let listed: Vec<&ItemError> = parsed.errors.iter().take(MAX_LISTED_ERRORS).collect();
    Refusal::new(
        Outcome::Invalid,
        "invalid_events",
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_events",
            format!(
                "{} of {} events are invalid; no event was accepted (a request is all-or-nothing)",
                parsed.rejected,
                parsed.items()
            ),
        )
        .with_details(serde_json::json!({
            "rejected": parsed.rejected,
            "items": parsed.items(),
            "errors": listed,
            "errors_truncated": parsed.errors.len() > listed.len(),
        })),
    )
}

/// Counts the request's valid events as not accepted, by type.
fn count_discarded(metrics: &IngestMetrics, parsed: &Parsed, outcome: &str, reason: &str) {
    for (kind, n) in &parsed.by_type {
        metrics.events(kind, outcome, reason, *n);
    }
}
