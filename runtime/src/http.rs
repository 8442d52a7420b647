//! The HTTP side of every service: the service's own routes beside `/metrics`, `/healthz` and
//! `/readyz`, request metrics by route and status, and JSON API errors.

use crate::Result;
use crate::health::Health;
use crate::limit::{Buckets, retry_after_secs};
use crate::metrics::{Metrics, latency_buckets};
use crate::tls::Reloading;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{HistogramVec, IntCounterVec};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// An error answered as `{"error": code, "message": …}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
    /// Sent as `Retry-After` (whole seconds, at least 1).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Tells the client when to try again (429, 503).
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": self.code, "message": self.message});
        if let Some(d) = self.details {
            body["details"] = d;
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        }
        response
    }
}

#[derive(Clone)]
struct RequestMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
}

/// Binds the HTTP listener (use port 0 in tests and read [`TcpListener::local_addr`]).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    Ok(TcpListener::bind(addr).await?)
}

/// The flags of every HTTP server (flattened into each service's configuration).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Failed authentications (answers 401) one client address may cause per minute. Past
    /// it, every request from that address is answered 429 with Retry-After until the
    /// allowance refills, so guessing tokens costs the guesser time; other clients are served
    /// as before. 0: no limit.
    #[arg(long, env = "AISPM_AUTH_FAILURES_PER_MINUTE", default_value_t = 30)]
    pub auth_failures_per_minute: u32,

    /// Client addresses never throttled for failed authentications: the console and any
    /// reverse proxy in front of this service, which pass on their users' tokens (and their
    /// users' mistakes) from one address. An address or a CIDR block; repeatable, or
    /// comma-separated in the environment.
    #[arg(long = "auth-throttle-exempt", env = "AISPM_AUTH_THROTTLE_EXEMPT", value_delimiter = ',', value_parser = Cidr::parse)]
    pub auth_throttle_exempt: Vec<Cidr>,

    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first); with
    /// `--tls-key`. Re-read when the file changes. Without both, plain HTTP: bearer tokens
    /// then cross the network in clear, so only on loopback or behind a TLS proxy.
    #[arg(long, env = "AISPM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1). Re-read when it changes.
    #[arg(long, env = "AISPM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpArgs {
    fn default() -> Self {
        HttpArgs {
            auth_failures_per_minute: 30,
            auth_throttle_exempt: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> std::result::Result<Cidr, String> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|e| format!("'{s}' is not an address or CIDR block: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}': the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let mask = |bits: u32, len: u8| -> u128 {
            if len == 0 {
                0
            } else {
                (u128::MAX << (bits - u32::from(len))) & (u128::MAX >> (128 - bits))
            }
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let m = mask(32, self.prefix);
                u128::from(u32::from(a)) & m == u128::from(u32::from(b)) & m
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let m = mask(128, self.prefix);
                u128::from(a) & m == u128::from(b) & m
            }
            _ => false,
        }
    }
}

/// Serves `routes` plus `/metrics`, `/healthz` and `/readyz` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    routes: Router,
    metrics: Metrics,
    health: Health,
    shutdown: CancellationToken,
    args: HttpArgs,
) -> Result<()> {
    let request_metrics = RequestMetrics {
        requests: metrics.counter(
            "http_requests_total",
            "HTTP requests by route and status.",
            &["route", "status"],
        )?,
        latency: metrics.histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route.",
            &["route"],
            latency_buckets(),
        )?,
    };
    let auth_guard = Arc::new(AuthGuard {
        failures: (args.auth_failures_per_minute > 0)
            .then(|| Buckets::per(args.auth_failures_per_minute, Duration::from_secs(60))),
        exempt: args.auth_throttle_exempt.clone(),
        throttled: metrics.counter(
            "auth_throttled_total",
            "Requests refused because their client address failed authentication too often.",
            &[],
        )?,
    });
    let metrics_route = {
        let metrics = metrics.clone();
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    metrics.render(),
                )
            }
        })
    };
    let app = routes
        .route("/metrics", metrics_route)
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "alive"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let health = health.clone();
                async move {
                    let (ok, conditions) = health.ready();
                    let status = if ok {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (
                        status,
                        Json(serde_json::json!({"ready": ok, "conditions": conditions})),
                    )
                }
            }),
        )
        .layer(middleware::from_fn_with_state(auth_guard, guard_auth))
        .layer(middleware::from_fn_with_state(request_metrics, record));
    let addr = listener.local_addr().ok();
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        if addr.is_some_and(|a| !a.ip().is_loopback()) {
            tracing::warn!(
                ?addr,
                "Serving plain HTTP on a non-loopback address: bearer tokens cross the network in clear. Give --tls-cert and --tls-key, or put a TLS proxy in front."
            );
        }
        tracing::info!(?addr, service = metrics.service(), "Serving HTTP.");
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
        return Ok(());
    };
    let certs = Reloading::new(cert, key)?;
    let acceptor = certs.acceptor()?;
    tokio::spawn(Arc::clone(&certs).watch(metrics.clone(), shutdown.clone()));
    tracing::info!(?addr, service = metrics.service(), cert = %cert.display(), "Serving HTTPS.");
    serve_tls(listener, app, acceptor, shutdown).await;
    Ok(())
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The accept loop of an HTTPS server: a task per connection, so a slow or failing handshake
/// (a plaintext client, a scanner) holds nothing but its own task; on shutdown, new connections
/// stop and open ones finish their requests.
async fn serve_tls(
    listener: TcpListener,
    app: Router,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "A TLS handshake failed.");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "A TLS handshake timed out.");
                    return;
                }
            };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new))
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "An HTTPS connection ended with an error.");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Failed authentications per client address.
#[derive(Debug)]
struct AuthGuard {
    failures: Option<Buckets<IpAddr>>,
    exempt: Vec<Cidr>,
    throttled: IntCounterVec,
}

/// Refuses requests from an address that failed authentication too often, and counts each
/// answer 401 against its address. Health, metrics and the API's document stay open to everyone.
async fn guard_auth(State(g): State<Arc<AuthGuard>>, req: Request, next: Next) -> Response {
    let Some(failures) = &g.failures else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json") {
        return next.run(req).await;
    }
    // An IPv4 client of a dual-stack listener is counted (and exempted) by its IPv4 address.
    let Some(ip) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
    else {
        return next.run(req).await;
    };
    if g.exempt.iter().any(|c| c.contains(ip)) {
        return next.run(req).await;
    }
    if let Err(wait) = failures.check(&ip) {
        g.throttled.with_label_values::<&str>(&[]).inc();
        let secs = retry_after_secs(wait);
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "auth_throttled",
            format!("too many failed authentications from this address; retry after {secs} s"),
        )
        .with_retry_after(wait)
        .into_response();
    }
    let response = next.run(req).await;
    if response.status() == StatusCode::UNAUTHORIZED && failures.take(&ip, 1.0).is_err() {
        tracing::warn!(%ip, "A client address failed authentication too often; throttling it.");
    }
    response
}

async fn record(State(m): State<RequestMetrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    m.latency
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    response
}

/// The address a service listens on by default, per service.
pub fn default_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Cidr;

    #[test]
    fn cidr_blocks_contain_their_addresses() {
        let ip = |s: &str| s.parse().unwrap();
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.255.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(!c.contains(ip("::1")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.2")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}
