//! The ingest service end to end: the real `aispm-ingest` binary against a real broker (Apache Kafka),
//! driven with a real HTTP client, then the input topics consumed and decoded.
//!
//! Build the binary first: `cargo build --bins -p aispm-ingest`.
#![allow(clippy::unwrap_used)]

use aispm_runtime::kafka::KafkaConfig;
use aispm_schemas::{
    ApprovalEvent, Codec, DecisionEvent, InputEvent, RegistryEvent, Topics, codec,
};
use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::kafka::{Record, random_prefix};
use aispm_tests::process::{Service, binary};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const ACME: &str = "acme-secret";
const OPS: &str = "ops-secret";

struct Fixture {
    broker: Broker,
    service: Service,
    topics: Topics,
    prefix: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(broker: Broker, extra: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(
            &tokens,
            format!(
                "[[tokens]]\ntoken = \"{ACME}\"\ntenants = [\"acme\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\n\n[[tokens]]\ntoken = \"{OPS}\"\ntenants = [\"*\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\nname = \"ops\"\n"
            ),
        )
        .unwrap();
        let prefix = random_prefix();
        let mut args: Vec<String> = vec![
            "--brokers".into(),
            broker.bootstrap(),
            "--tokens-file".into(),
            tokens.display().to_string(),
            "--topic-prefix".into(),
            prefix.clone(),
            "--partitions".into(),
            "3".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let addr = format!("127.0.0.1:{}", free_port());
        let mut service = Service::start("aispm-ingest", &addr, &args, dir.path()).unwrap();
        service.wait_ready(Duration::from_secs(60)).await.unwrap();
        Fixture {
            broker,
            service,
            topics: Topics::with_prefix(&prefix),
            prefix,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("{}/v1/events", self.service.http)
    }

    async fn post(
        &self,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self
            .client
            .post(self.url())
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body, headers)
    }

    async fn post_json(&self, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let (s, b, _) = self
            .post(token, "application/json", serde_json::to_vec(body).unwrap())
            .await;
        (s, b)
    }

    /// Every record on the three input topics: reads until `expect` arrived, then keeps
    /// reading for a quiet period so that extra records would be seen too.
    fn records(&self, expect: usize, wait: Duration) -> Vec<(String, Record)> {
        read_inputs(&self.broker.bootstrap(), &self.topics, expect, wait)
    }

    async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.service.http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn decision(id: Option<&str>, tenant: &str, target: &str) -> Value {
    let mut v = json!({
        "type": "decision", "tenant_id": tenant, "occurred_at": "2026-11-21T10:00:00Z",
        "source": "gw-1", "agent_id": "coder-agent", "actor": "alice", "environment": "production",
        "action_kind": "mcp", "target": target, "mcp_server": "github-mcp", "mcp_tool": "delete_repo",
        "control_id": "ctl-mcp-guard", "mode": "shadow", "verdict": "allow", "risk": "high",
        "data_classes": ["secret"],
        "evidence": {"evidence_id": "ev-1", "sha256": "ab".repeat(32), "uri": "s3://b/ev-1"}
    });
    if let Some(id) = id {
        v["event_id"] = json!(id);
    }
    v
}

fn approval(id: &str, tenant: &str) -> Value {
    json!({"type": "approval", "event_id": id, "tenant_id": tenant, "occurred_at": "2026-11-21T10:05:00Z",
           "source": "approvals", "kind": "finding_assigned", "finding_id": "AISPM-DATA-001:x/pii",
           "actor": "lead", "owner": "privacy-team", "due_at": "2026-11-24T00:00:00Z"})
}

fn registry(id: &str, tenant: &str) -> Value {
    json!({"type": "registry", "event_id": id, "tenant_id": tenant, "occurred_at": "2026-11-21T09:00:00Z",
           "source": "registry", "asset": {"asset_kind": "mcp_tool", "asset_id": "github-mcp/delete_repo",
           "status": "registered", "trust": "risky", "owner": "platform-team"}})
}

fn read_inputs(
    brokers: &str,
    topics: &Topics,
    expect: usize,
    wait: Duration,
) -> Vec<(String, Record)> {
    let consumer: BaseConsumer = KafkaConfig::local(brokers)
        .consumer_config(&format!("check-{}", random_prefix()))
        .create()
        .unwrap();
    consumer
        .subscribe(&[&topics.decisions, &topics.approvals, &topics.registry])
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut quiet_until: Option<Instant> = None;
    let mut out = Vec::new();
    loop {
        let now = Instant::now();
        if quiet_until.is_some_and(|q| now > q) || (quiet_until.is_none() && now > deadline) {
            break;
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            out.push((m.topic().to_owned(), Record::of(&m)));
        }
        if out.len() >= expect && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_secs(3));
        }
    }
    out
}

/// Decodes a record from an input topic into the event it carries.
fn decode(topic: &str, topics: &Topics, bytes: &[u8]) -> InputEvent {
    assert_eq!(
        &bytes[..2],
        &codec::SINGLE_OBJECT_MAGIC,
        "single-object encoding"
    );
    let c = Codec::new();
    if topic == topics.decisions {
        InputEvent::Decision(c.decode::<DecisionEvent>(bytes).unwrap())
    } else if topic == topics.approvals {
        InputEvent::Approval(c.decode::<ApprovalEvent>(bytes).unwrap())
    } else {
        InputEvent::Registry(c.decode::<RegistryEvent>(bytes).unwrap())
    }
}

fn decoded(f: &Fixture, records: &[(String, Record)]) -> BTreeMap<String, InputEvent> {
    records
        .iter()
        .map(|(topic, r)| {
            let e = decode(topic, &f.topics, r.value.as_deref().unwrap());
            assert_eq!(
                r.key.as_deref(),
                Some(e.tenant_id().as_bytes()),
                "keyed by tenant_id"
            );
            (e.event_id().to_owned(), e)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn accepted_events_reach_their_topics_and_decode_to_the_same_events() {
    let f = Fixture::start(Broker::start().unwrap(), &[]).await;

    // An array of all three types.
    let batch = json!([
        decision(Some("d-1"), "acme", "delete_repo acme/a"),
        approval("a-1", "acme"),
        registry("r-1", "acme")
    ]);
    let (status, body) = f.post_json(Some(ACME), &batch).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 3);
    assert_eq!(
        body["by_type"],
        json!({"approval": 1, "decision": 1, "registry": 1})
    );
    assert_eq!(body["generated"], json!([]));

    // One object without an event_id: the generated id is reported.
    let (status, body) = f
        .post_json(Some(ACME), &decision(None, "acme", "delete_repo acme/b"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["generated"][0]["index"], 0);
    let generated = body["generated"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // NDJSON from the operator token, two tenants, a blank line.
    let nd = format!(
        "{}\n\n{}\n",
        decision(Some("d-2"), "acme", "delete_repo acme/c"),
        decision(Some("d-3"), "globex", "delete_repo globex/d")
    );
    let (status, body, _) = f.post(Some(OPS), "application/x-ndjson", nd).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 2);

    let records = f.records(6, Duration::from_secs(30));
    let got = decoded(&f, &records);
    assert_eq!(records.len(), 6, "each accepted event exactly once");
    let mut sent: Vec<Value> = batch.as_array().unwrap().clone();
    let mut with_id = decision(None, "acme", "delete_repo acme/b");
    with_id["event_id"] = json!(generated);
    sent.push(with_id);
    sent.push(decision(Some("d-2"), "acme", "delete_repo acme/c"));
    sent.push(decision(Some("d-3"), "globex", "delete_repo globex/d"));
    for v in sent {
        let e = InputEvent::from_json(v).unwrap();
        assert_eq!(
            got.get(e.event_id()),
            Some(&e),
            "{} round-trips",
            e.event_id()
        );
    }
    // The topic matches the type.
    for (topic, r) in &records {
        let e = decode(topic, &f.topics, r.value.as_deref().unwrap());
        let expected = match e.kind() {
            "decision" => &f.topics.decisions,
            "approval" => &f.topics.approvals,
            _ => &f.topics.registry,
        };
        assert_eq!(topic, expected);
    }
    let m = f.metrics().await;
    assert!(
        m.contains(
            r#"aispm_ingest_events_total{outcome="accepted",reason="ok",type="decision"} 4"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"aispm_ingest_requests_total{outcome="accepted",reason="ok"} 3"#),
        "{m}"
    );
    assert!(
        m.contains("aispm_ingest_produce_duration_seconds_count"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_gets_its_documented_answer_and_writes_nothing() {
    let f = Fixture::start(
        Broker::start().unwrap(),
        &[
            "--max-body-bytes",
            "20000",
            "--max-batch-events",
            "5",
            "--max-in-flight-events",
            "100",
            "--max-buffered-bytes",
            "100000",
        ],
    )
    .await;

    // No token, an unknown token, a malformed header: 401.
    let (s, b) = f.post_json(None, &decision(Some("x-1"), "acme", "t")).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, _) = f
        .post_json(Some("not-a-token"), &decision(Some("x-2"), "acme", "t"))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Wrong tenant, alone or hidden in a batch of valid events: 403, nothing written.
    let (s, b) = f
        .post_json(Some(ACME), &decision(Some("x-3"), "globex", "t"))
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{b}"
    );
    assert!(b["message"].as_str().unwrap().contains("globex"));
    let (s, _) = f
        .post_json(
            Some(ACME),
            &json!([
                decision(Some("x-4"), "acme", "t"),
                decision(Some("x-5"), "globex", "t")
            ]),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Bad JSON: 400 malformed_json; NDJSON with one bad line: 400 naming the line.
    let (s, b, _) = f
        .post(Some(ACME), "application/json", "{\"type\": \"decision\",")
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_json")),
        "{b}"
    );
    let nd = format!("{}\n{{oops\n", decision(Some("x-6"), "acme", "t"));
    let (s, b, _) = f.post(Some(ACME), "application/x-ndjson", nd).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["details"]["errors"][0]["line"], 2, "{b}");
    assert_eq!(b["details"]["errors"][0]["index"], 1, "{b}");

    // Wrong types in one item of a batch: 400 with index, field and reason; all or nothing.
    let mut bad = decision(Some("x-8"), "acme", "t");
    bad["risk"] = json!(7);
    bad["mcp_tool"] = Value::Null;
    let mut worse = decision(Some("x-9"), "acme", "t");
    worse["evidence"]["sha256"] = json!("nothex");
    let (s, b) = f
        .post_json(
            Some(ACME),
            &json!([
                decision(Some("x-7"), "acme", "t"),
                bad,
                worse,
                "not an object"
            ]),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_events")),
        "{b}"
    );
    assert_eq!(b["details"]["rejected"], 3);
    assert_eq!(b["details"]["items"], 4);
    let errors = b["details"]["errors"].as_array().unwrap();
    assert_eq!(
        (
            errors[0]["index"].as_u64(),
            errors[0]["field"].as_str(),
            errors[0]["event_id"].as_str()
        ),
        (Some(1), Some("risk"), Some("x-8"))
    );
    assert!(
        errors[0]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid type"),
        "{b}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e["index"] == 2 && e["field"] == "evidence.sha256"),
        "{b}"
    );
    assert!(errors.iter().any(|e| e["index"] == 3), "{b}");
    let (s, b) = f.post_json(Some(ACME), &json!(42)).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_body"))
    );

    // Oversize body and too many events: 413. Unsupported content type: 415.
    let big = json!([decision(Some("x-10"), "acme", &"x".repeat(30_000))]);
    let (s, b) = f.post_json(Some(ACME), &big).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")),
        "{b}"
    );
    let six: Vec<Value> = (0..6)
        .map(|i| decision(Some(&format!("x-s{i}")), "acme", "t"))
        .collect();
    let (s, b) = f.post_json(Some(ACME), &Value::Array(six)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    let (s, _, _) = f
        .post(
            Some(ACME),
            "text/plain",
            serde_json::to_vec(&decision(Some("x-11"), "acme", "t")).unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Then one good event: it is the only record on any input topic.
    let (s, b) = f
        .post_json(Some(ACME), &decision(Some("ok-1"), "acme", "t"))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let records = f.records(20, Duration::from_secs(8));
    let ids: Vec<String> = decoded(&f, &records).into_keys().collect();
    assert_eq!(ids, ["ok-1"], "nothing of a refused request was written");

    let m = f.metrics().await;
    for line in [
        r#"aispm_ingest_requests_total{outcome="forbidden",reason="tenant"} 2"#,
        r#"aispm_ingest_requests_total{outcome="unauthorized",reason="token"} 2"#,
        r#"aispm_ingest_requests_total{outcome="invalid",reason="invalid_events"} 2"#,
        r#"aispm_ingest_requests_total{outcome="too_large",reason="body_too_large"} 1"#,
        r#"aispm_ingest_requests_total{outcome="too_large",reason="too_many_events"} 1"#,
        r#"aispm_ingest_auth_denied_total{reason="wrong_tenant",scope=""} 2"#,
    ] {
        assert!(m.contains(line), "missing {line} in\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backpressure_answers_429_with_retry_after_and_frees_the_budget() {
    // The byte budget holds exactly one full body: a slow upload occupies it.
    let f = Fixture::start(
        Broker::start().unwrap(),
        &[
            "--max-body-bytes",
            "4000",
            "--max-buffered-bytes",
            "4000",
            "--retry-after",
            "2s",
        ],
    )
    .await;
    let slow_body = serde_json::to_vec(&decision(Some("slow-1"), "acme", "t")).unwrap();
    let mut padded = slow_body.clone();
    padded.resize(4000, b' ');
    let addr = f.service.http.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ACME}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        padded.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&padded[..100]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (s, b, h) = f
        .post(
            Some(ACME),
            "application/json",
            serde_json::to_vec(&decision(Some("fast-1"), "acme", "t")).unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(b["error"], "too_many_requests");
    assert_eq!(
        h.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("2")
    );

    // The slow upload finishes and is accepted; the budget is free again.
    stream.write_all(&padded[100..]).await.unwrap();
    let mut response = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response)
        .await
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    let (s, b, _) = f
        .post(
            Some(ACME),
            "application/json",
            serde_json::to_vec(&decision(Some("fast-2"), "acme", "t")).unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");

    let records = f.records(10, Duration::from_secs(8));
    let ids: BTreeSet<String> = decoded(&f, &records).into_keys().collect();
    assert_eq!(
        ids,
        BTreeSet::from(["slow-1".to_owned(), "fast-2".to_owned()]),
        "the throttled request wrote nothing"
    );
    let m = f.metrics().await;
    assert!(
        m.contains(r#"aispm_ingest_requests_total{outcome="throttled",reason="buffer_full"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_that_is_down_gets_an_error_never_a_202() {
    let mut f = Fixture::start(Broker::start().unwrap(), &["--produce-timeout", "3s"]).await;
    let (s, b) = f
        .post_json(Some(ACME), &decision(Some("before-1"), "acme", "t"))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");

    f.broker.stop();
    let started = Instant::now();
    let batch: Vec<Value> = (0..5)
        .map(|i| decision(Some(&format!("during-{i}")), "acme", "t"))
        .collect();
    let (s, b, h) = f
        .post(
            Some(ACME),
            "application/json",
            serde_json::to_vec(&batch).unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(h.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "answered within the produce timeout"
    );
    // Readiness follows the broker.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = f
            .client
            .get(format!("{}/readyz", f.service.http))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readyz still 200 with the broker down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // While it is down, every attempt fails fast (the probe knows).
    let (s, _) = f
        .post_json(Some(ACME), &decision(Some("during-x"), "acme", "t"))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);

    // The broker comes back; the service's idempotent producer carries on where it was.
    f.broker.start_again().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, b) = f
            .post_json(Some(ACME), &decision(Some("after-1"), "acme", "t"))
            .await;
        if s == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert!(
            Instant::now() < deadline,
            "never accepted again after the broker came back: {b}\n{}",
            f.service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let records = f.records(20, Duration::from_secs(10));
    let ids: BTreeSet<String> = decoded(&f, &records).into_keys().collect();
    assert_eq!(
        ids,
        BTreeSet::from(["before-1".to_owned(), "after-1".to_owned()]),
        "only acknowledged events were written"
    );
    assert_eq!(records.len(), 2, "each once");
}

#[tokio::test(flavor = "multi_thread")]
async fn emit_sends_the_demo_scenario_over_http_and_load_straight_to_kafka() {
    let f = Fixture::start(Broker::start().unwrap(), &[]).await;
    let bin = binary("aispm-ingest").unwrap();
    let at = "2026-11-21T12:00:00Z";

    // What the scenario is, as NDJSON.
    let printed = std::process::Command::new(&bin)
        .args(["emit", "--to", "stdout", "--phase", "all", "--at", at])
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let expected: BTreeMap<String, InputEvent> = String::from_utf8(printed.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let e = InputEvent::from_json(serde_json::from_str(l).unwrap()).unwrap();
            (e.event_id().to_owned(), e)
        })
        .collect();
    assert!(expected.len() > 40);
    assert!(expected.values().all(|e| e.tenant_id() == "acme"));

    // The same over HTTP through the service.
    let url = f.service.http.clone();
    let out = std::process::Command::new(&bin)
        .args([
            "emit", "--phase", "all", "--at", at, "--batch", "20", "--url", &url, "--token", ACME,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["accepted"].as_u64(),
        Some(expected.len() as u64),
        "{summary}"
    );
    let records = f.records(expected.len(), Duration::from_secs(30));
    assert_eq!(
        decoded(&f, &records),
        expected,
        "the topics hold exactly the scenario"
    );

    // A token that may not write the tenant: emit fails with the 403.
    let out = std::process::Command::new(&bin)
        .args(["emit", "--tenant", "globex", "--url", &url, "--token", ACME])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));

    // Load for 3 tenants straight to Kafka, under another prefix.
    let prefix = random_prefix();
    let out = std::process::Command::new(&bin)
        .args([
            "emit",
            "--scenario",
            "load",
            "--to",
            "kafka",
            "--tenants",
            "3",
            "--count",
            "500",
            "--rate",
            "0",
            "--batch",
            "100",
        ])
        .args([
            "--brokers",
            &f.broker.bootstrap(),
            "--topic-prefix",
            &prefix,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let topics = Topics::with_prefix(&prefix);
    let mut tenants = BTreeSet::new();
    let records = read_inputs(&f.broker.bootstrap(), &topics, 500, Duration::from_secs(30));
    let n = records.len();
    for (topic, r) in &records {
        let e = decode(topic, &topics, r.value.as_deref().unwrap());
        assert_eq!(r.key.as_deref(), Some(e.tenant_id().as_bytes()));
        tenants.insert(e.tenant_id().to_owned());
    }
    assert_eq!(n, 500);
    assert_eq!(tenants.len(), 3);
    assert_ne!(prefix, f.prefix);
}
