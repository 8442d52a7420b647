//! HTTP request handling of `aispm-ingest`, in process: the service's own router
//! (`aispm_ingest::api::router`, `POST /v1/events`) driven with `tower::ServiceExt::oneshot`
//! by requests built from the fuzz input (method, path, `Authorization`, `Content-Type`,
//! `Content-Length`, extra headers, body in one piece or in chunks; see `aispm_fuzz::http`).
//!
//! The publisher is real but has a zero in-flight budget and points at an address where no
//! broker listens, so a request that passes authentication, content type, size limits, parsing,
//! validation, tenant authorization and Avro encoding ends with 429 `in_flight_full` instead of
//! producing: everything up to `Publisher::publish` is covered, `publish` itself is not.
//!
//! Checks: no panic (tokio's caught panics in `spawn_blocking` abort too: libFuzzer's hook), no
//! 500, no 202, only the documented answers, 401 before anything else for a bad token, the
//! JSON error body on every refusal, `Retry-After` on 429 and 503, and no token in any answer.
#![no_main]

use aispm_fuzz::http::{self, FLAG_STARTING, TOKENS};
use aispm_fuzz::{http_seeds, write_seeds};
use aispm_ingest::Config;
use aispm_ingest::api::{self, App};
use aispm_ingest::metrics::IngestMetrics;
use aispm_ingest::publish::Publisher;
use aispm_runtime::auth::{Auth, Tokens};
use aispm_runtime::health::Health;
use aispm_runtime::kafka::KafkaMetrics;
use aispm_runtime::metrics::Metrics;
use axum::Router;
use axum::http::{StatusCode, header};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use tower::ServiceExt;

/// Largest body the fuzzed service accepts (the default is 4 MiB): small, so that 413 is
/// reachable within `-max_len`.
const MAX_BODY_BYTES: usize = 8 * 1024;

struct Service {
    runtime: tokio::runtime::Runtime,
    router: Router,
    topics_ready: Arc<AtomicBool>,
}

static SERVICE: LazyLock<Service> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let metrics = Metrics::new("ingest").expect("metrics");
    let tokens = Tokens::parse(TOKENS).expect("tokens");
    let auth = Auth::new(tokens, &metrics).expect("auth");
    let ingest_metrics = IngestMetrics::new(&metrics).expect("ingest metrics");
    // Port 9 (discard): nothing answers. Nothing is ever sent: the in-flight budget is zero.
    let mut config = Config::local("127.0.0.1:9");
    config.max_body_bytes = MAX_BODY_BYTES;
    config.max_batch_events = 50;
    config.max_in_flight_events = 0;
    config.max_buffered_bytes = 4 * MAX_BODY_BYTES;
    let publisher = runtime.block_on(async {
        Publisher::new(
            &config,
            KafkaMetrics::new(&metrics).expect("kafka metrics"),
            ingest_metrics.clone(),
            Health::new(),
        )
        .expect("a producer (it connects lazily)")
    });
    let topics_ready = Arc::new(AtomicBool::new(true));
    // The service's own constructor (quotas, deadlines, clock tolerance as configured), with
    // one parse slot and a one-second Retry-After.
    let mut app = App::new(
        &config,
        auth,
        Arc::new(publisher),
        ingest_metrics,
        Arc::clone(&topics_ready),
    );
    app.parse_slots = tokio::sync::Semaphore::new(1);
    app.retry_after_secs = 1;
    let app = Arc::new(app);
    Service {
        runtime,
        router: api::router(app),
        topics_ready,
    }
});

const SECRETS: [&str; 3] = ["s3cr3t-acme", "s3cr3t-globex", "ops-secret"];

/// `AISPM_FUZZ_TRACE=1`: print each answer's status and error code (to see which answers a
/// corpus reaches: run the target on it with `-runs=0`).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("AISPM_FUZZ_TRACE").is_some());

fuzz_target!(
    init: {
        write_seeds(http_seeds());
        LazyLock::force(&SERVICE);
    },
    |data: &[u8]| {
        let Some(built) = http::build(data) else { return };
        let service = &*SERVICE;
        let starting = built.shape.flags & FLAG_STARTING != 0;
        service.topics_ready.store(!starting, Ordering::Relaxed);
        let events_route = built.request.method() == axum::http::Method::POST
            && built.request.uri().path() == "/v1/events";
        // The first Authorization header decides (what `Auth::principal` reads).
        let token_ok = built
            .request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .is_some_and(|t| SECRETS.contains(&t.trim()));
        let declared: Option<usize> = built
            .request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let sent_secret = SECRETS
            .iter()
            .any(|s| data.windows(s.len()).any(|w| w == s.as_bytes()));
        let (status, headers, body) = service.runtime.block_on(async {
            let response = service
                .router
                .clone()
                .oneshot(built.request)
                .await
                .expect("the router is infallible");
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .expect("the answer is readable");
            (parts.status, parts.headers, body)
        });

        if *TRACE {
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned));
            eprintln!("aispm-fuzz: answer {} {}", status.as_u16(), code.unwrap_or_default());
        }
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "500: {body:?}");
        assert_ne!(status, StatusCode::ACCEPTED, "202 with no broker: {body:?}");
        if !sent_secret {
            let text = String::from_utf8_lossy(&body);
            for s in SECRETS {
                assert!(!text.contains(s), "a token in an answer: {text}");
            }
        }
        if !events_route {
            assert!(
                matches!(
                    status,
                    StatusCode::NOT_FOUND
                        | StatusCode::METHOD_NOT_ALLOWED
                        // POST /v1/events with a query string reaches the handler.
                        | StatusCode::BAD_REQUEST
                        | StatusCode::UNAUTHORIZED
                        | StatusCode::FORBIDDEN
                        | StatusCode::PAYLOAD_TOO_LARGE
                        | StatusCode::UNSUPPORTED_MEDIA_TYPE
                        | StatusCode::TOO_MANY_REQUESTS
                        | StatusCode::SERVICE_UNAVAILABLE
                ),
                "{status} for a request off the route"
            );
            return;
        }
        assert!(
            matches!(
                status,
                StatusCode::BAD_REQUEST
                    | StatusCode::UNAUTHORIZED
                    | StatusCode::FORBIDDEN
                    | StatusCode::PAYLOAD_TOO_LARGE
                    | StatusCode::UNSUPPORTED_MEDIA_TYPE
                    | StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::SERVICE_UNAVAILABLE
            ),
            "undocumented answer {status}: {body:?}"
        );
        if starting {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        } else if !token_ok {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "a bad token got {status}: {body:?}");
        } else {
            assert_ne!(status, StatusCode::UNAUTHORIZED, "a known token refused: {body:?}");
        }
        if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            assert!(headers.contains_key(header::RETRY_AFTER), "{status} without Retry-After");
        }
        let json: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{status}: the answer is not JSON ({e}): {body:?}"));
        assert!(json["error"].is_string() && json["message"].is_string(), "{json}");
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // Either the declared or read size, or the event count.
            assert!(
                built.body_len > MAX_BODY_BYTES
                    || declared.is_some_and(|d| d > MAX_BODY_BYTES)
                    || json["message"].as_str().is_some_and(|m| m.contains("events")),
                "413 for {} bytes: {json}",
                built.body_len
            );
        }
    }
);
