//! The HTTP side of every service: the service's own routes beside `/metrics`, `/healthz` and
//! `/readyz`, request metrics by route and status, and JSON API errors.

use crate::Result;
use crate::health::Health;
use crate::metrics::{Metrics, latency_buckets};
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{HistogramVec, IntCounterVec};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// An error answered as `{"error": code, "message": …}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": self.code, "message": self.message});
        if let Some(d) = self.details {
            body["details"] = d;
        }
        (self.status, Json(body)).into_response()
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

/// Serves `routes` plus `/metrics`, `/healthz` and `/readyz` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    routes: Router,
    metrics: Metrics,
    health: Health,
    shutdown: CancellationToken,
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
        .layer(middleware::from_fn_with_state(request_metrics, record));
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, service = metrics.service(), "Serving HTTP.");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
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
