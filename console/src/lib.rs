//! `aispm-console`: the web console. It shows what the gatekeeper, projector and reporter
//! answer, to a person, and links every number to the rows behind it and every row to its
//! events.
//!
//! - Server-rendered HTML ([`pages`], maud: every interpolation escaped), usable without
//!   JavaScript; the one stylesheet is served by the binary; every answer carries a strict
//!   Content-Security-Policy (no script at all, styles from the console only, no framing).
//! - No data of its own and no token of its own: a viewer signs in with an aispm bearer token
//!   ([`session`]), which the console checks with the gatekeeper (`GET /v1/principal`) and then
//!   uses for every read ([`upstream`]), so a token sees exactly what its tenants and scopes
//!   allow, and a refusal by a service is a refusal page with none of the data.
//! - One write, requesting a report packet, behind the session's CSRF token.
//!
//! Routes: `/sign-in`, `/sign-out`, `/` (tenants: every tenant's verdict per stage for an
//! operator token), `/t/{tenant}` (overview), `/t/{tenant}/findings`, `/t/{tenant}/finding?id=`,
//! `/t/{tenant}/go?id=` (whatever row or event an id names), `/t/{tenant}/event?id=` (a
//! decision, approval or registry event), `/t/{tenant}/coverage`, `/controls`,
//! `/exceptions`, `/evidence`, `/t/{tenant}/validations`,
//! `/t/{tenant}/reports`, `/assets/console.css`, and `/metrics`, `/healthz`, `/readyz`.

#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the module map above is for developers of aispm: `cargo doc --document-private-items`"
)]

mod config;
mod pages;
mod session;
mod upstream;

pub use config::Config;

use crate::pages::{Chrome, FindingFilter};
use crate::session::{Session, Sessions};
use crate::upstream::{Service, Upstream, UpstreamError, encode, query};
use aispm_runtime::health::Health;
use aispm_runtime::metrics::Metrics;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use maud::Markup;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The Content-Security-Policy of every answer: nothing runs, nothing loads from elsewhere,
/// forms post to the console only, and no other site may frame it.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The stages, as the gatekeeper names them, in the order the overview shows them.
const STAGES: [&str; 3] = ["production", "pilot", "trial"];

/// The console's state.
#[derive(Debug, Clone)]
pub struct App {
    up: Upstream,
    sessions: Sessions,
    secure_cookie: bool,
    session_max: Duration,
    metrics: ConsoleMetrics,
}

#[derive(Debug, Clone)]
struct ConsoleMetrics {
    sign_ins: prometheus::IntCounterVec,
    refusals: prometheus::IntCounterVec,
    sessions: prometheus::IntGaugeVec,
}

impl App {
    pub fn new(config: &Config, metrics: &Metrics) -> aispm_runtime::Result<Self> {
        Ok(App {
            up: Upstream::new(
                &config.apis,
                config.client_tls.client_builder()?,
                config.upstream_timeout,
            ),
            sessions: Sessions::new(config.session_idle, config.session_max),
            secure_cookie: config.secure_cookie,
            session_max: config.session_max,
            metrics: ConsoleMetrics {
                sign_ins: metrics.counter(
                    "sign_ins_total",
                    "Sign-in attempts by outcome (ok, refused, unavailable).",
                    &["outcome"],
                )?,
                refusals: metrics.counter(
                    "refusals_total",
                    "Pages refused: a service answered 403 to the viewer's token, or a form came without its CSRF token.",
                    &["reason"],
                )?,
                sessions: metrics.gauge("sessions", "Live sign-in sessions.", &["kind"])?,
            },
        })
    }
}

/// The console's routes (without `/metrics`, `/healthz`, `/readyz`, which
/// [`aispm_runtime::http::serve`] adds).
pub fn routes(app: App) -> Router {
    Router::new()
        .route("/assets/console.css", get(stylesheet))
        .route("/sign-in", get(sign_in_form).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/", get(home))
        .route("/t/{tenant}", get(overview))
        .route("/t/{tenant}/findings", get(findings))
        .route("/t/{tenant}/finding", get(finding))
        .route("/t/{tenant}/go", get(go))
        .route("/t/{tenant}/event", get(event))
        .route("/t/{tenant}/coverage", get(coverage))
        .route(
            "/t/{tenant}/controls",
            get(|a, h, t, q| list_page(a, h, t, q, "/controls", pages::controls)),
        )
        .route(
            "/t/{tenant}/exceptions",
            get(|a, h, t, q| list_page(a, h, t, q, "/exceptions", pages::exceptions)),
        )
        .route("/t/{tenant}/blockers", get(blockers))
        .route("/t/{tenant}/approvals", get(approvals))
        .route("/t/{tenant}/data-flows", get(data_flows))
        .route("/t/{tenant}/approval-stats", get(approval_stats))
        .route("/t/{tenant}/asset", get(asset))
        .route("/t/{tenant}/evidence", get(evidence))
        .route("/t/{tenant}/validations", get(validations))
        .route("/t/{tenant}/reports", get(reports).post(request_report))
        .layer(middleware::map_response(security_headers))
        .with_state(app)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

/// Runs the console until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> aispm_runtime::Result<()> {
    let metrics = Metrics::new("console")?;
    let health = Health::new();
    health.set(
        "serving",
        true,
        "pages are read from the services per request",
    );
    let app = App::new(&config, &metrics)?;
    let listener = aispm_runtime::http::bind(config.http_addr).await?;
    tracing::info!(
        projector = %config.apis.projector, gatekeeper = %config.apis.gatekeeper,
        reporter = %config.apis.reporter,
        "The console reads the services with each viewer's own token."
    );
    let http = config.http.clone();
    aispm_runtime::http::serve(listener, routes(app), metrics, health, shutdown, http).await
}

fn html(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        pages::CSS,
    )
        .into_response()
}

fn chrome<'a>(s: &'a Session, tenant: Option<&'a str>) -> Chrome<'a> {
    Chrome {
        viewer: Some(&s.principal.name),
        csrf: Some(&s.csrf),
        tenant,
    }
}

/// The signed-in viewer: the session id and the session.
fn viewer(app: &App, headers: &HeaderMap) -> Option<(String, Session)> {
    session::cookie_id(headers).and_then(|id| app.sessions.get(&id).map(|s| (id, s)))
}

fn to_sign_in() -> Response {
    Redirect::to("/sign-in").into_response()
}

/// A service's refusal or failure as a page, without any of the data.
fn failure(app: &App, id: &str, s: &Session, tenant: Option<&str>, e: UpstreamError) -> Response {
    let c = chrome(s, tenant);
    match e {
        UpstreamError::Unauthorized => {
            // Revoked since sign-in: the session ends with it.
            app.sessions.end(id);
            let mut r = Redirect::to("/sign-in").into_response();
            clear_cookie(app, &mut r);
            r
        }
        UpstreamError::Forbidden(why) => {
            app.metrics.refusals.with_label_values(&["forbidden"]).inc();
            let detail = match tenant {
                Some(t) => format!(
                    "Your token ({}) may not read tenant {t}{}.",
                    s.principal.name,
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {why}")
                    }
                ),
                None => format!("Your token ({}) may not read this.", s.principal.name),
            };
            html(
                StatusCode::FORBIDDEN,
                pages::problem(&c, "Refused", &detail),
            )
        }
        UpstreamError::NotFound(why) => {
            html(StatusCode::NOT_FOUND, pages::problem(&c, "Not found", &why))
        }
        UpstreamError::Unavailable(why) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::problem(
                &c,
                "A service is unavailable",
                &format!("{why} Try again shortly."),
            ),
        ),
        UpstreamError::Invalid(status, why) => html(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            pages::problem(&c, "Not accepted", &why),
        ),
        UpstreamError::Busy(why, retry_after) => {
            let wait = retry_after.unwrap_or(1).max(1);
            let mut r = html(
                StatusCode::TOO_MANY_REQUESTS,
                pages::problem(&c, "Busy", &format!("{why}. Try again in {wait} s.")),
            );
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            r
        }
        UpstreamError::Other(why) => html(
            StatusCode::BAD_GATEWAY,
            pages::problem(&c, "A service failed", &why),
        ),
    }
}

fn clear_cookie(app: &App, r: &mut Response) {
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        None,
        app.secure_cookie,
        app.session_max,
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
}

async fn sign_in_form(State(app): State<App>, headers: HeaderMap) -> Response {
    if viewer(&app, &headers).is_some() {
        return Redirect::to("/").into_response();
    }
    sign_in_page(&app, StatusCode::OK, None)
}

/// The sign-in form with a fresh nonce, and the cookie that carries it.
fn sign_in_page(app: &App, status: StatusCode, error: Option<&str>) -> Response {
    let nonce = session::sign_in_nonce();
    let mut r = html(status, pages::sign_in(error, &nonce));
    if let Ok(v) = HeaderValue::from_str(&session::sign_in_cookie(Some(&nonce), app.secure_cookie))
    {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
    #[serde(default)]
    sign_in: String,
}

async fn sign_in(State(app): State<App>, headers: HeaderMap, Form(form): Form<SignIn>) -> Response {
    if !session::sign_in_nonce_ok(&headers, &form.sign_in) {
        app.metrics.refusals.with_label_values(&["csrf"]).inc();
        return sign_in_page(
            &app,
            StatusCode::FORBIDDEN,
            Some(
                "This sign-in form expired or was not served to this browser: sign in again here.",
            ),
        );
    }
    let token = form.token.trim().to_owned();
    if token.is_empty() {
        return sign_in_page(
            &app,
            StatusCode::BAD_REQUEST,
            Some("Paste a token to sign in."),
        );
    }
    match app
        .up
        .get(Service::Gatekeeper, "/v1/principal", &token)
        .await
    {
        Ok(p) => match serde_json::from_value::<session::Principal>(p) {
            Ok(principal) => {
                tracing::info!(principal = %principal.name, "Signed in.");
                app.metrics.sign_ins.with_label_values(&["ok"]).inc();
                let id = app.sessions.start(token, principal);
                app.metrics
                    .sessions
                    .with_label_values(&["live"])
                    .set(app.sessions.len() as i64);
                let mut r = Redirect::to("/").into_response();
                for cookie in [
                    session::set_cookie(Some(&id), app.secure_cookie, app.session_max),
                    session::sign_in_cookie(None, app.secure_cookie),
                ] {
                    if let Ok(v) = HeaderValue::from_str(&cookie) {
                        r.headers_mut().append(header::SET_COOKIE, v);
                    }
                }
                r
            }
            Err(e) => sign_in_page(
                &app,
                StatusCode::BAD_GATEWAY,
                Some(&format!("The gatekeeper's answer was not understood: {e}")),
            ),
        },
        Err(UpstreamError::Unauthorized | UpstreamError::Forbidden(_)) => {
            app.metrics.sign_ins.with_label_values(&["refused"]).inc();
            sign_in_page(
                &app,
                StatusCode::UNAUTHORIZED,
                Some("That token is not accepted."),
            )
        }
        Err(e) => {
            app.metrics
                .sign_ins
                .with_label_values(&["unavailable"])
                .inc();
            sign_in_page(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&format!("The gatekeeper could not be asked: {e}")),
            )
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Refuses a form without the session's CSRF token.
fn csrf_refused(app: &App, s: &Session, form: &str, tenant: Option<&str>) -> Option<Response> {
    if s.csrf_ok(form) {
        return None;
    }
    app.metrics.refusals.with_label_values(&["csrf"]).inc();
    Some(html(
        StatusCode::FORBIDDEN,
        pages::problem(
            &chrome(s, tenant),
            "Refused",
            "This form did not come from your console session (its CSRF token is missing or wrong). Reload the page and try again.",
        ),
    ))
}

async fn sign_out(State(app): State<App>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    if let Some(r) = csrf_refused(&app, &s, &f.csrf, None) {
        return r;
    }
    app.sessions.end(&id);
    app.metrics
        .sessions
        .with_label_values(&["live"])
        .set(app.sessions.len() as i64);
    let mut r = Redirect::to("/sign-in").into_response();
    clear_cookie(&app, &mut r);
    r
}

#[derive(Deserialize)]
struct SortQuery {
    sort: Option<String>,
}

async fn home(State(app): State<App>, headers: HeaderMap, Query(q): Query<SortQuery>) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    if s.principal.is_operator() {
        return match app
            .up
            .get(Service::Gatekeeper, "/v1/readiness", &s.token)
            .await
        {
            Ok(all) => html(
                StatusCode::OK,
                pages::tenants(&chrome(&s, None), &all, q.sort.as_deref().unwrap_or("")),
            ),
            Err(e) => failure(&app, &id, &s, None, e),
        };
    }
    let tenants = s.principal.tenant_ids();
    if let [only] = tenants.as_slice() {
        return Redirect::to(&format!("/t/{}", encode(only))).into_response();
    }
    html(
        StatusCode::OK,
        pages::my_tenants(&chrome(&s, None), &tenants),
    )
}

fn tenant_path(tenant: &str, rest: &str) -> String {
    format!("/v1/tenants/{}{rest}", encode(tenant))
}

#[derive(Debug, Default, Deserialize)]
struct AsOf {
    /// A past instant (RFC 3339) to show the tenant as of; empty or absent: now.
    as_of: Option<String>,
}

async fn overview(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(when): Query<AsOf>,
) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    // As of a past instant: every read asks the services for that instant (the projector
    // replays the tenant's events that occurred by then, the gatekeeper judges its rows then).
    let as_of = when
        .as_of
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let at = query([("as_of", as_of)]);
    let and_at = if at.is_empty() {
        String::new()
    } else {
        format!("&{at}")
    };
    let readiness = |stage: &'static str| {
        let path = tenant_path(
            &tenant,
            &format!("/readiness?stage={stage}&limit={OVERVIEW_BLOCKERS}{and_at}"),
        );
        let up = app.up.clone();
        let token = s.token.clone();
        async move { up.get(Service::Gatekeeper, &path, &token).await }
    };
    let posture_path = tenant_path(
        &tenant,
        &if at.is_empty() {
            "/posture".to_owned()
        } else {
            format!("/posture?{at}")
        },
    );
    let trend_path = tenant_path(&tenant, &format!("/posture/trend?days=7{and_at}"));
    let (production, pilot, trial, posture, trend) = tokio::join!(
        readiness(STAGES[0]),
        readiness(STAGES[1]),
        readiness(STAGES[2]),
        app.up.get(Service::Projector, &posture_path, &s.token),
        app.up.get(Service::Projector, &trend_path, &s.token),
    );
    let all = (|| Ok::<_, UpstreamError>((production?, pilot?, trial?, posture?, trend?)))();
    match all {
        Ok((production, pilot, trial, posture, trend)) => {
            let stages = [
                (STAGES[0], production),
                (STAGES[1], pilot),
                (STAGES[2], trial),
            ];
            html(
                StatusCode::OK,
                pages::overview(
                    &chrome(&s, Some(&tenant)),
                    &tenant,
                    &stages,
                    &posture,
                    &trend,
                    as_of,
                ),
            )
        }
        Err(e) => failure(&app, &id, &s, Some(&tenant), e),
    }
}

/// One read of a tenant's data for the signed-in viewer, rendered by `render`; a refusal or a
/// failure becomes its page.
async fn tenant_page(
    app: &App,
    sid: &str,
    s: &Session,
    tenant: &str,
    service: Service,
    path: &str,
    render: impl FnOnce(&Chrome<'_>, &Value) -> Markup,
) -> Response {
    match app
        .up
        .get(service, &tenant_path(tenant, path), &s.token)
        .await
    {
        Ok(v) => html(StatusCode::OK, render(&chrome(s, Some(tenant)), &v)),
        Err(e) => failure(app, sid, s, Some(tenant), e),
    }
}

async fn findings(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(filter): Query<FindingFilter>,
) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    let path = format!(
        "/findings?limit={}&{}",
        pages::PAGE,
        filter.query(filter.after.as_deref())
    );
    tenant_page(&app, &id, &s, &tenant, Service::Projector, &path, |c, v| {
        pages::findings(c, &tenant, v, &filter)
    })
    .await
}

#[derive(Deserialize)]
struct IdQuery {
    id: String,
    after: Option<String>,
}

async fn finding(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<IdQuery>,
) -> Response {
    let Some((sid, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    let base = tenant_path(&tenant, &format!("/findings/{}", encode(&q.id)));
    let events_path = match &q.after {
        Some(a) => format!("{base}/events?after={}", encode(a)),
        None => format!("{base}/events"),
    };
    let (row, events) = tokio::join!(
        app.up.get(Service::Projector, &base, &s.token),
        app.up.get(Service::Projector, &events_path, &s.token),
    );
    match row.and_then(|r| events.map(|e| (r, e))) {
        Ok((row, events)) => html(
            StatusCode::OK,
            pages::finding(&chrome(&s, Some(&tenant)), &tenant, &row, &events),
        ),
        Err(e) => failure(&app, &sid, &s, Some(&tenant), e),
    }
}

/// The lists searched for a row an id names, and what the rows are called.
/// The rows an id may name, tried in this order by the resolver: (the projector's route of one
/// row, what the page calls it). Coverage rows are keyed `kind/id`, tried for every kind.
const BY_KEY: [(&str, &str); 5] = [
    ("/evidence/", "Evidence"),
    ("/controls/", "Control"),
    ("/exceptions/", "Exception"),
    ("/report-deliveries/", "Report delivery"),
    ("/validations/", "Validation"),
];

async fn event(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<IdQuery>,
) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    let path = format!("/events/{}", encode(&q.id));
    tenant_page(&app, &id, &s, &tenant, Service::Projector, &path, |c, v| {
        pages::event(c, &tenant, v)
    })
    .await
}

async fn go(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<IdQuery>,
) -> Response {
    let Some((sid, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    let c = chrome(&s, Some(&tenant));
    let finding = tenant_path(&tenant, &format!("/findings/{}", encode(&q.id)));
    match app.up.get(Service::Projector, &finding, &s.token).await {
        Ok(_) => {
            return Redirect::to(&format!(
                "/t/{}/finding?id={}",
                encode(&tenant),
                encode(&q.id)
            ))
            .into_response();
        }
        Err(UpstreamError::NotFound(_)) => {}
        Err(e) => return failure(&app, &sid, &s, Some(&tenant), e),
    }
    let event = tenant_path(&tenant, &format!("/events/{}", encode(&q.id)));
    match app.up.get(Service::Projector, &event, &s.token).await {
        Ok(_) => {
            return Redirect::to(&format!(
                "/t/{}/event?id={}",
                encode(&tenant),
                encode(&q.id)
            ))
            .into_response();
        }
        Err(UpstreamError::NotFound(_)) => {}
        Err(e) => return failure(&app, &sid, &s, Some(&tenant), e),
    }
    let assets: Vec<String> = if q.id.contains('/') {
        vec![q.id.clone()]
    } else {
        aispm_schemas::CoverageKind::ALL
            .iter()
            .map(|k| format!("{k}/{}", q.id))
            .collect()
    };
    for key in &assets {
        let path = tenant_path(&tenant, &format!("/coverage/{}", encode(key)));
        match app.up.get(Service::Projector, &path, &s.token).await {
            Ok(_) => {
                return Redirect::to(&format!("/t/{}/asset?key={}", encode(&tenant), encode(key)))
                    .into_response();
            }
            Err(UpstreamError::NotFound(_)) => {}
            Err(e) => return failure(&app, &sid, &s, Some(&tenant), e),
        }
    }
    let probes = BY_KEY
        .iter()
        .map(|(path, kind)| (format!("{path}{}", encode(&q.id)), *kind));
    for (path, kind) in probes {
        match app
            .up
            .get(Service::Projector, &tenant_path(&tenant, &path), &s.token)
            .await
        {
            Ok(v) => return html(StatusCode::OK, pages::row(&c, &tenant, kind, &q.id, &v)),
            Err(UpstreamError::NotFound(_)) => {}
            Err(e) => return failure(&app, &sid, &s, Some(&tenant), e),
        }
    }
    let mut searched = vec!["findings", "events"];
    searched.extend(BY_KEY.iter().map(|(p, _)| p.trim_matches('/')));
    searched.push("coverage");
    html(
        StatusCode::NOT_FOUND,
        pages::unresolved(&c, &tenant, &q.id, &searched),
    )
}

/// Blockers per stage on the overview; the blockers page pages through the rest.
const OVERVIEW_BLOCKERS: usize = 50;

#[derive(Deserialize)]
struct BlockersQuery {
    stage: Option<String>,
    after: Option<String>,
}

async fn blockers(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<BlockersQuery>,
) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    let stage = q
        .stage
        .as_deref()
        .filter(|st| STAGES.contains(st))
        .unwrap_or(STAGES[0]);
    let limit = pages::PAGE.to_string();
    let path = format!(
        "/readiness?{}",
        query([
            ("stage", Some(stage)),
            ("limit", Some(&limit)),
            ("after", q.after.as_deref()),
        ])
    );
    tenant_page(
        &app,
        &id,
        &s,
        &tenant,
        Service::Gatekeeper,
        &path,
        |c, v| pages::blockers(c, &tenant, stage, v),
    )
    .await
}

#[derive(Deserialize)]
struct ApprovalsFilter {
    kind: Option<String>,
    after: Option<String>,
}

async fn approvals(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(f): Query<ApprovalsFilter>,
) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    let kind = f.kind.as_deref().filter(|k| !k.is_empty());
    let path = format!(
        "/approvals?{}",
        page_query(f.after.as_deref(), [("kind", kind)])
    );
    tenant_page(&app, &id, &s, &tenant, Service::Projector, &path, |c, v| {
        pages::approvals(c, &tenant, v, kind)
    })
    .await
}

#[derive(Deserialize)]
struct FlowsFilter {
    class: Option<String>,
    approved: Option<String>,
    after: Option<String>,
}

async fn data_flows(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(f): Query<FlowsFilter>,
) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    let class = f.class.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let approved = f
        .approved
        .as_deref()
        .filter(|a| matches!(*a, "true" | "false"));
    let filters = [("class", class), ("approved", approved)];
    let path = format!("/data-flows?{}", page_query(f.after.as_deref(), filters));
    tenant_page(&app, &id, &s, &tenant, Service::Projector, &path, |c, v| {
        pages::data_flows(c, &tenant, v, class, approved)
    })
    .await
}

#[derive(Deserialize)]
struct AssetQuery {
    /// `{kind}/{id}`, a coverage row's key.
    key: String,
    /// The links page's cursor (agents).
    after: Option<String>,
}

/// An asset's coverage row; for an agent also what it acted for and with (its links), a page
/// at a time.
async fn asset(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<AssetQuery>,
) -> Response {
    let Some((sid, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    let row_path = tenant_path(&tenant, &format!("/coverage/{}", encode(&q.key)));
    let agent = q.key.strip_prefix("agent/");
    let links = async {
        let Some(agent) = agent else {
            return Ok(serde_json::Value::Null);
        };
        let path = tenant_path(
            &tenant,
            &format!(
                "/agents/{}/links?{}",
                encode(agent),
                page_query(q.after.as_deref(), [])
            ),
        );
        app.up.get(Service::Projector, &path, &s.token).await
    };
    let identity = async {
        let Some(agent) = agent else {
            return Ok(serde_json::Value::Null);
        };
        let path = tenant_path(&tenant, &format!("/agents/{}/identity", encode(agent)));
        app.up.get(Service::Projector, &path, &s.token).await
    };
    let (row, links, identity) = tokio::join!(
        app.up.get(Service::Projector, &row_path, &s.token),
        links,
        identity
    );
    match row.and_then(|r| links.and_then(|l| identity.map(|i| (r, l, i)))) {
        Ok((row, links, identity)) => html(
            StatusCode::OK,
            pages::asset(
                &chrome(&s, Some(&tenant)),
                &tenant,
                &q.key,
                &row,
                &links,
                &identity,
            ),
        ),
        Err(e) => failure(&app, &sid, &s, Some(&tenant), e),
    }
}

#[derive(Deserialize)]
struct CoverageFilter {
    kind: Option<String>,
    shadow_ai: Option<String>,
    after: Option<String>,
}

/// The query of a page of a projector list: `limit`, `after` and `filters`.
fn page_query<'a>(
    after: Option<&'a str>,
    filters: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> String {
    let limit = pages::PAGE.to_string();
    let mut pairs = vec![("limit", Some(limit.as_str())), ("after", after)];
    for pair in filters {
        pairs.push(pair);
    }
    query(pairs)
}

async fn coverage(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(f): Query<CoverageFilter>,
) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    let kind = f.kind.as_deref().filter(|k| !k.is_empty());
    let shadow = f.shadow_ai.as_deref() == Some("true");
    let filters = [("kind", kind), ("shadow_ai", shadow.then_some("true"))];
    let path = format!("/coverage?{}", page_query(f.after.as_deref(), filters));
    tenant_page(&app, &id, &s, &tenant, Service::Projector, &path, |c, v| {
        pages::coverage(c, &tenant, v, kind, shadow)
    })
    .await
}

#[derive(Deserialize)]
struct AfterQuery {
    after: Option<String>,
}

/// A page of one of the projector's unfiltered lists (`list`, e.g. `/controls`), by its
/// cursor, as `render` shows it.
async fn list_page(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<AfterQuery>,
    list: &str,
    render: fn(&Chrome<'_>, &str, &Value) -> Markup,
) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    let path = format!("{list}?{}", page_query(q.after.as_deref(), []));
    tenant_page(&app, &id, &s, &tenant, Service::Projector, &path, |c, v| {
        render(c, &tenant, v)
    })
    .await
}

#[derive(Deserialize)]
struct ApprovalStatsQuery {
    after: Option<String>,
    control: Option<String>,
}

/// The requests for approval per control and agent, of one control with `control=`.
async fn approval_stats(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<ApprovalStatsQuery>,
) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    let control = q.control.as_deref().filter(|c| !c.is_empty());
    let path = format!(
        "/approval-stats?{}",
        page_query(q.after.as_deref(), [("control", control)])
    );
    tenant_page(&app, &id, &s, &tenant, Service::Projector, &path, |c, v| {
        pages::approval_stats(c, &tenant, control, v)
    })
    .await
}

async fn evidence(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(f): Query<pages::EvidenceFilter>,
) -> Response {
    let Some((sid, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    let since = f
        .since(aispm_schemas::Timestamp::now())
        .map(|t| t.to_string());
    let filters = f.filters().into_iter().chain([("since", since.as_deref())]);
    let path = format!("/evidence?{}", page_query(f.after.as_deref(), filters));
    tenant_page(
        &app,
        &sid,
        &s,
        &tenant,
        Service::Projector,
        &path,
        |c, v| pages::evidence(c, &tenant, v, &f),
    )
    .await
}

async fn validations(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    tenant_page(
        &app,
        &id,
        &s,
        &tenant,
        Service::Projector,
        "/validations",
        |c, v| pages::validations(c, &tenant, v),
    )
    .await
}

async fn report_list(
    app: &App,
    sid: &str,
    s: &Session,
    tenant: &str,
    before: Option<&str>,
    notice: Option<&str>,
) -> Response {
    let may_request = s.principal.has("reports");
    let limit = pages::PAGE.to_string();
    let path = format!(
        "/reports?{}",
        query([("limit", Some(limit.as_str())), ("before", before)])
    );
    tenant_page(app, sid, s, tenant, Service::Reporter, &path, |c, v| {
        pages::reports(c, tenant, v, may_request, notice)
    })
    .await
}

#[derive(Deserialize)]
struct BeforeQuery {
    before: Option<String>,
}

async fn reports(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<BeforeQuery>,
) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    report_list(&app, &id, &s, &tenant, q.before.as_deref(), None).await
}

#[derive(Deserialize)]
struct ReportForm {
    #[serde(default)]
    csrf: String,
    #[serde(rename = "type")]
    report_type: String,
    /// A past instant (RFC 3339) the packet is as of; empty: now.
    #[serde(default)]
    as_of: String,
}

async fn request_report(
    State(app): State<App>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Form(f): Form<ReportForm>,
) -> Response {
    let Some((id, s)) = viewer(&app, &headers) else {
        return to_sign_in();
    };
    if let Some(r) = csrf_refused(&app, &s, &f.csrf, Some(&tenant)) {
        return r;
    }
    let mut body = json!({"type": f.report_type});
    if !f.as_of.trim().is_empty() {
        body["as_of"] = json!(f.as_of.trim());
    }
    match app
        .up
        .post(
            Service::Reporter,
            &tenant_path(&tenant, "/reports"),
            &s.token,
            &body,
        )
        .await
    {
        Ok(r) => {
            let notice = format!(
                "Report {} generated; delivery {}.",
                r["id"].as_str().unwrap_or("?"),
                r["delivery"]["status"].as_str().unwrap_or("?")
            );
            report_list(&app, &id, &s, &tenant, None, Some(&notice)).await
        }
        Err(e) => failure(&app, &id, &s, Some(&tenant), e),
    }
}
