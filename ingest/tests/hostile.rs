//! Hostile but well-formed request bodies, in process and without a broker: deep nesting, huge
//! strings and arrays, unknown enum symbols, timestamps far in the past and future, duplicated
//! and reordered events, events for tenants nobody knows. The body parser is called directly;
//! the HTTP answers come from the service's own router served on a loopback port, with a
//! publisher whose in-flight budget is zero, so a request that passes every check ends in
//! `429 in_flight_full` and nothing is ever produced.

use aispm_ingest::Config;
use aispm_ingest::api::{self, App};
use aispm_ingest::body::{self, BodyError, Format};
use aispm_ingest::metrics::IngestMetrics;
use aispm_ingest::publish::Publisher;
use aispm_runtime::auth::{Auth, Tokens};
use aispm_runtime::health::Health;
use aispm_runtime::kafka::KafkaMetrics;
use aispm_runtime::metrics::Metrics;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

const MAX_EVENTS: usize = 100;
/// No event in these bodies is dated in the future.
const LATEST: aispm_schemas::Timestamp = aispm_schemas::Timestamp(i64::MAX);

fn decision(id: Option<&str>, tenant: &str) -> Value {
    let mut v = json!({"type":"decision","tenant_id":tenant,"occurred_at":"2026-11-21T10:00:00Z",
        "source":"gw","agent_id":"a","actor":"alice","environment":"production","action_kind":"file",
        "target":"/etc/passwd","mode":"enforced","verdict":"deny","risk":"high"});
    if let Some(id) = id {
        v["event_id"] = json!(id);
    }
    v
}

fn with(mut v: Value, field: &str, x: Value) -> Value {
    v[field] = x;
    v
}

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for open in ["[", "{\"a\":", "[{\"a\":"] {
        let deep = format!("{}1", open.repeat(100_000));
        assert!(
            matches!(
                body::parse(deep.as_bytes(), Format::Json, MAX_EVENTS, LATEST),
                Err(BodyError::Json(_))
            ),
            "{open}…"
        );
        // In NDJSON the line is one rejected item, the others are still parsed.
        let nd = format!("{}\n{deep}\n", decision(Some("e1"), "acme"));
        let p = body::parse(nd.as_bytes(), Format::Ndjson, MAX_EVENTS, LATEST).unwrap();
        assert_eq!((p.events.len(), p.rejected), (1, 1));
        assert_eq!(p.errors[0].line, Some(2));
    }
    // Nesting the parser accepts, inside a field, is a type error naming the field.
    let mut deep = json!("pii");
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let body = json_body(&with(decision(Some("e1"), "acme"), "data_classes", deep));
    let p = body::parse(&body, Format::Json, MAX_EVENTS, LATEST).unwrap();
    assert_eq!(p.rejected, 1);
    assert_eq!(p.errors[0].field, "data_classes[0]");
}

#[test]
fn huge_strings_and_arrays_are_item_errors_naming_the_field() {
    let huge = "x".repeat(2 << 20);
    for field in ["agent_id", "event_id", "target", "source"] {
        let body = json_body(&with(decision(None, "acme"), field, json!(huge)));
        let p = body::parse(&body, Format::Json, MAX_EVENTS, LATEST).unwrap();
        assert_eq!(p.rejected, 1, "{field}");
        assert_eq!(p.errors[0].field, field);
        // The answer does not echo the huge value.
        assert!(p.errors[0].reason.len() < 200, "{}", p.errors[0].reason);
    }
    // A huge tenant name is refused, and a generated event_id is still reported.
    let body = json_body(&decision(None, &huge));
    let p = body::parse(&body, Format::Json, MAX_EVENTS, LATEST).unwrap();
    assert_eq!(p.errors[0].field, "tenant_id");
    assert!(p.errors[0].event_id.is_some());
}

#[test]
fn more_items_than_the_limit_are_refused_whole() {
    let items: Vec<Value> = (0..=MAX_EVENTS)
        .map(|i| decision(Some(&format!("e{i}")), "acme"))
        .collect();
    assert_eq!(
        body::parse(
            &json_body(&Value::Array(items.clone())),
            Format::Json,
            MAX_EVENTS,
            LATEST
        )
        .unwrap_err(),
        BodyError::TooManyEvents {
            count: MAX_EVENTS + 1,
            max: MAX_EVENTS
        }
    );
    let nd: String = items.iter().map(|v| format!("{v}\n")).collect();
    assert!(matches!(
        body::parse(nd.as_bytes(), Format::Ndjson, MAX_EVENTS, LATEST),
        Err(BodyError::TooManyEvents { .. })
    ));
}

#[test]
fn the_errors_kept_for_a_hostile_body_are_bounded() {
    // Every item wrong in many small ways (256 empty data classes each: the most an array may
    // hold, each item an error): the answer lists at most MAX_LISTED_ERRORS of them, and the
    // parser keeps no more than that either, whatever the body's size.
    let bad = with(
        decision(Some("e"), "acme"),
        "data_classes",
        json!(vec![""; aispm_schemas::validate::MAX_ITEMS]),
    );
    let body = json_body(&Value::Array(vec![bad; MAX_EVENTS]));
    let p = body::parse(&body, Format::Json, MAX_EVENTS, LATEST).unwrap();
    assert_eq!(p.rejected, MAX_EVENTS, "the count is exact");
    assert_eq!(p.errors.len(), body::MAX_KEPT_ERRORS);
    assert_eq!(body::MAX_KEPT_ERRORS, body::MAX_LISTED_ERRORS + 1);
    // The same for lines that are not JSON at all.
    let nd = "x\n".repeat(5_000);
    let p = body::parse(nd.as_bytes(), Format::Ndjson, 10_000, LATEST).unwrap();
    assert_eq!(p.rejected, 5_000);
    assert_eq!(p.errors.len(), body::MAX_KEPT_ERRORS);
}

#[test]
fn duplicated_and_reordered_events_get_the_same_ids() {
    let a = decision(None, "acme");
    let b = with(decision(None, "acme"), "target", json!("/etc/shadow"));
    let ab = body::parse(
        &json_body(&json!([a, b, a])),
        Format::Json,
        MAX_EVENTS,
        LATEST,
    )
    .unwrap();
    let ba = body::parse(&json_body(&json!([b, a])), Format::Json, MAX_EVENTS, LATEST).unwrap();
    // A duplicate in one request is accepted (consumers apply an event_id once) and gets the
    // same generated id as its twin; reordering does not change any item's id.
    assert_eq!(ab.events.len(), 3);
    assert_eq!(ab.events[0].event_id(), ab.events[2].event_id());
    assert_ne!(ab.events[0].event_id(), ab.events[1].event_id());
    assert_eq!(ab.events[0].event_id(), ba.events[1].event_id());
    assert_eq!(ab.events[1].event_id(), ba.events[0].event_id());
    // The same in NDJSON, and with the client's own ids.
    let nd = format!("{a}\n{a}\n");
    let p = body::parse(nd.as_bytes(), Format::Ndjson, MAX_EVENTS, LATEST).unwrap();
    assert_eq!(p.events[0].event_id(), ab.events[0].event_id());
    assert_eq!(p.events[0].event_id(), p.events[1].event_id());
    let same = decision(Some("dup"), "acme");
    let p = body::parse(
        &json_body(&json!([same, same])),
        Format::Json,
        MAX_EVENTS,
        LATEST,
    )
    .unwrap();
    assert_eq!((p.events.len(), p.generated.len()), (2, 0));
}

#[test]
fn every_tenant_named_is_collected_for_authorization_valid_or_not() {
    let body = json!([
        decision(Some("e1"), "acme"),
        decision(Some("e2"), "never-configured"),
        with(decision(Some("e3"), "globex"), "risk", json!("apocalyptic")),
    ]);
    let p = body::parse(&json_body(&body), Format::Json, MAX_EVENTS, LATEST).unwrap();
    let tenants: Vec<&str> = p.tenants.iter().map(String::as_str).collect();
    assert_eq!(tenants, ["acme", "globex", "never-configured"]);
}

/// The service's router on a loopback port: tokens for `acme` and an operator; a publisher
/// pointed at a port where no broker listens, with no room for events in flight.
async fn serve(max_body_bytes: usize) -> String {
    let metrics = Metrics::new("ingest").unwrap();
    let tokens = Tokens::parse(
        "[[tokens]]\ntoken = \"acme-token\"\ntenants = [\"acme\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\n\n\
         [[tokens]]\ntoken = \"ops-token\"\ntenants = [\"*\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\n",
    )
    .unwrap();
    let mut config = Config::local("127.0.0.1:9");
    config.max_body_bytes = max_body_bytes;
    config.max_batch_events = MAX_EVENTS;
    config.max_in_flight_events = 0;
    let ingest_metrics = IngestMetrics::new(&metrics).unwrap();
    let publisher = Publisher::new(
        &config,
        KafkaMetrics::new(&metrics).unwrap(),
        ingest_metrics.clone(),
        Health::new(),
    )
    .unwrap();
    let app = Arc::new(App::new(
        &config,
        Auth::new(tokens, &metrics).unwrap(),
        Arc::new(publisher),
        ingest_metrics,
        Arc::new(AtomicBool::new(true)),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, api::router(app)).await });
    url
}

async fn post(url: &str, token: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text}: {e}")),
    )
}

#[tokio::test]
async fn hostile_requests_get_precise_refusals_in_process() {
    let url = serve(1 << 20).await;
    let json = "application/json";
    let send = |token: &'static str, body: Value| post(&url, token, json, json_body(&body));

    // A well-formed event passes every check and stops at the (empty) in-flight budget.
    let (status, answer) = send("acme-token", decision(Some("ok"), "acme")).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (429, Some("too_many_requests"))
    );

    // Field-level refusals name the field.
    let d = || decision(Some("h"), "acme");
    for (what, body, field) in [
        (
            "unknown enum symbol",
            with(d(), "risk", json!("apocalyptic")),
            "risk",
        ),
        (
            "unknown event type",
            with(d(), "type", json!("gossip")),
            "type",
        ),
        (
            "far past",
            with(d(), "occurred_at", json!("1970-01-01T00:00:00Z")),
            "occurred_at",
        ),
        (
            "far future",
            with(d(), "occurred_at", json!("2999-01-01T00:00:00Z")),
            "occurred_at",
        ),
        (
            "i64::MAX millis",
            with(d(), "occurred_at", json!(i64::MAX)),
            "occurred_at",
        ),
        (
            "huge string",
            with(d(), "agent_id", json!("a".repeat(500_000))),
            "agent_id",
        ),
        (
            "huge array",
            with(d(), "data_classes", json!(vec!["pii"; 10_000])),
            "data_classes",
        ),
    ] {
        let (status, answer) = send("acme-token", body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(answer["error"], "invalid_events", "{what}");
        assert_eq!(
            answer["details"]["errors"][0]["field"], field,
            "{what}: {answer}"
        );
    }

    // Deep nesting: a 400, and the service still answers.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, answer) = post(&url, "acme-token", json, deep.clone().into_bytes()).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("malformed_json"))
    );
    let (status, answer) = post(
        &url,
        "acme-token",
        "application/x-ndjson",
        deep.into_bytes(),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_events"))
    );

    // Events for a tenant nobody configured: 403 for a tenant token, whatever else the body
    // holds, and before any validation detail is disclosed.
    for body in [
        decision(Some("u1"), "never-configured"),
        json!([
            decision(Some("u2"), "acme"),
            decision(Some("u3"), "never-configured")
        ]),
        with(
            decision(Some("u4"), "never-configured"),
            "risk",
            json!("apocalyptic"),
        ),
    ] {
        let (status, answer) = send("acme-token", body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (403, Some("forbidden")),
            "{answer}"
        );
        assert!(answer.get("details").is_none(), "{answer}");
    }
    // An operator token may write any well-formed tenant: it passes to the budget.
    let (status, _) = send("ops-token", decision(Some("u5"), "never-configured")).await;
    assert_eq!(status, 429);

    // Duplicates in one request pass validation together.
    let (status, _) = send("acme-token", json!([d(), d()])).await;
    assert_eq!(status, 429);

    // Too many events, and too many bytes: 413.
    let many: Vec<Value> = (0..=MAX_EVENTS).map(|_| d()).collect();
    let (status, _) = send("acme-token", Value::Array(many)).await;
    assert_eq!(status, 413);
    let small = serve(1024).await;
    let (status, answer) = post(&small, "acme-token", json, vec![b' '; 2048]).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (413, Some("payload_too_large"))
    );
}
