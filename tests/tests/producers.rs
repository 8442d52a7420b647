//! Producers where they are: an agent instrumented with the real OpenTelemetry Python SDK
//! exporting OTLP/HTTP to a running ingest, OTLP JSON and protobuf sent by hand, and CloudEvents
//! single and batched; each checked in the projector's views. Bad envelopes are refused with
//! reasons, and nothing of a refused request is recorded.

use aispm_ingest::otlp::{self, pb};
use aispm_tests::demo::{GATEWAY_TOKEN, Pipeline, TENANT, TENANT_TOKEN};
use aispm_tests::process::{run_json, venv_python};
use prost::Message as _;
use serde_json::{Value, json};
use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

/// Waits until the projector has applied event `id` and answers it.
async fn applied(p: &Pipeline, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match p
            .get(
                &p.projector.http,
                &format!("/v1/tenants/{TENANT}/events/{id}"),
            )
            .await
        {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => {
                panic!("event {id} never applied: {e}\n{}", p.projector.log_tail())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn post(
    p: &Pipeline,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    gzip: bool,
) -> (u16, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", p.ingest.http))
        .bearer_auth(GATEWAY_TOKEN)
        .header("content-type", content_type);
    let body = if gzip {
        req = req.header("content-encoding", "gzip");
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&body).unwrap();
        z.finish().unwrap()
    } else {
        body
    };
    let r = req.body(body).send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

fn span_json(span_id: &str, attrs: &[(&str, &str)]) -> Value {
    json!({
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": span_id, "name": "x", "kind": 3,
        "startTimeUnixNano": (aispm_schemas::Timestamp::now().0 * 1_000_000).to_string(),
        "attributes": attrs.iter().map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})).collect::<Vec<_>>(),
    })
}

fn export_json(spans: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "gateway"}},
            {"key": "deployment.environment.name", "value": {"stringValue": "pilot"}}]},
        "scopeSpans": [{"spans": spans}]}]}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn otel_spans_and_cloudevents_become_decisions_and_bad_envelopes_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let p = Pipeline::start(work.path()).await.unwrap();
    let traces = format!("{}/v1/traces", p.ingest.http);

    // 1. The real OpenTelemetry SDK (protobuf, gzip) exporting an agent's invocation.
    let run = run_json(
        Command::new(venv_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/otel_agent.py"
            ))
            .args(["--endpoint", &traces, "--token", GATEWAY_TOKEN, "--gzip"]),
        &format!("otel_agent.py (ingest log:\n{})", p.ingest.log_tail()),
    );
    println!("otel_agent: {run}");
    let trace = hex::decode(run["trace_id"].as_str().unwrap()).unwrap();
    let id_of = |name: &str| {
        let span = run["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"].as_str().unwrap().starts_with(name))
            .unwrap();
        otlp::span_event_id(
            &trace,
            &hex::decode(span["span_id"].as_str().unwrap()).unwrap(),
        )
    };
    let governed = applied(&p, &id_of("tools/call")).await;
    let e = &governed["event"];
    assert_eq!(governed["type"], "decision", "{governed}");
    assert_eq!(
        (
            &e["agent_id"],
            &e["action_kind"],
            &e["mcp_server"],
            &e["mcp_tool"]
        ),
        (
            &json!("otel-triage-agent"),
            &json!("mcp"),
            &json!("github-mcp"),
            &json!("create_issue")
        ),
        "{governed}"
    );
    assert_eq!(
        (&e["verdict"], &e["mode"], &e["control_id"]),
        (&json!("allow"), &json!("enforced"), &json!("ctl-otel-mcp"))
    );
    assert_eq!(
        (&e["environment"], &e["actor"]),
        (&json!("production"), &json!("alice@example.com"))
    );
    assert_eq!(governed["asserted_by"], "acme-gateway", "{governed}");
    let ungoverned = applied(&p, &id_of("execute_tool run_shell")).await;
    let e = &ungoverned["event"];
    assert_eq!(
        (&e["action_kind"], &e["mode"], &e["risk"]),
        (&json!("command"), &json!("shadow"), &json!("high")),
        "{ungoverned}"
    );
    assert!(e["control_id"].is_null(), "{ungoverned}");
    let model = applied(&p, &id_of("chat")).await;
    assert_eq!(model["event"]["model_endpoint"], "gpt-4o", "{model}");
    applied(&p, &id_of("invoke_agent")).await;

    // The ungoverned command is a production path no control covers, and the agent is seen.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let control = p
            .get(
                &p.projector.http,
                &format!("/v1/tenants/{TENANT}/controls/%28none%29%3Acommand"),
            )
            .await;
        if let Ok(c) = &control
            && c["high_risk_decisions"].as_i64().unwrap_or(0) >= 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "{control:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let agent = p
        .get(
            &p.projector.http,
            &format!("/v1/tenants/{TENANT}/coverage/agent%2Fotel-triage-agent"),
        )
        .await
        .unwrap();
    assert_eq!(
        agent["decisions"], 4,
        "four actions, the HTTP span ignored: {agent}"
    );

    // 2. OTLP JSON by hand, sent twice: one decision (idempotent by trace and span id); the
    // answer names the ignored span.
    let body = export_json(vec![
        span_json(
            "1111111111111111",
            &[
                ("gen_ai.operation.name", "execute_tool"),
                ("gen_ai.tool.name", "search"),
                ("gen_ai.agent.id", "json-agent"),
                ("aispm.verdict", "deny"),
                ("aispm.risk", "low"),
                ("aispm.mode", "enforced"),
            ],
        ),
        span_json("2222222222222222", &[("db.system.name", "postgresql")]),
    ]);
    for _ in 0..2 {
        let (status, answer) =
            post(&p, "/v1/traces", "application/json", body.clone(), false).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["partialSuccess"]["rejectedSpans"], 0, "{answer}");
        assert!(
            answer["partialSuccess"]["errorMessage"]
                .as_str()
                .unwrap()
                .contains("not_gen_ai: 1"),
            "{answer}"
        );
    }
    let trace = hex::decode("5b8efff798038103d269b633813fc60c").unwrap();
    let id = otlp::span_event_id(&trace, &hex::decode("1111111111111111").unwrap());
    let d = applied(&p, &id).await;
    assert_eq!(
        (&d["event"]["verdict"], &d["event"]["environment"]),
        (&json!("deny"), &json!("pilot")),
        "{d}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agent = p
            .get(
                &p.projector.http,
                &format!("/v1/tenants/{TENANT}/coverage/agent%2Fjson-agent"),
            )
            .await;
        if let Ok(a) = &agent
            && a["decisions"] == 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "{agent:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 3. Spans that cannot be decisions: 400 with the span and the attribute, as JSON to a
    // JSON client and as google.rpc.Status to a protobuf client; nothing recorded.
    let bad = export_json(vec![
        span_json(
            "3333333333333333",
            &[
                ("gen_ai.operation.name", "execute_tool"),
                ("gen_ai.tool.name", "ok"),
            ],
        ),
        span_json(
            "4444444444444444",
            &[
                ("gen_ai.operation.name", "execute_tool"),
                ("aispm.environment", "moon"),
            ],
        ),
    ]);
    let (status, answer) = post(&p, "/v1/traces", "application/json", bad.clone(), true).await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 400, "{answer}");
    let errors = answer["details"]["errors"].as_array().unwrap();
    assert_eq!(
        (errors.len(), &errors[0]["index"], &errors[0]["field"]),
        (1, &json!(1), &json!("aispm.environment")),
        "{answer}"
    );
    let request = otlp::decode(&bad, otlp::Encoding::Json).unwrap();
    let (status, answer) = post(
        &p,
        "/v1/traces",
        "application/x-protobuf",
        request.encode_to_vec(),
        false,
    )
    .await;
    assert_eq!(status, 400);
    let rpc = pb::Status::decode(answer.as_slice()).unwrap();
    assert_eq!(rpc.code, 3);
    assert!(rpc.message.contains("aispm.environment"), "{}", rpc.message);
    let (status, _) = post(
        &p,
        "/v1/traces",
        "application/x-protobuf",
        b"\x0a\xff\xff\xff".to_vec(),
        false,
    )
    .await;
    assert_eq!(status, 400, "garbage protobuf");
    let (status, _) = post(&p, "/v1/traces", "text/plain", b"x".to_vec(), false).await;
    assert_eq!(status, 415);
    // A gzip bomb: 64 MiB of zeros compressed to a few KiB is refused, not inflated.
    let zeros = vec![0u8; 64 << 20];
    let (status, answer) = post(&p, "/v1/traces", "application/json", zeros, true).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    let id = otlp::span_event_id(&trace, &hex::decode("3333333333333333").unwrap());
    let (status, _) = get_status(&p, &format!("/v1/tenants/{TENANT}/events/{id}")).await;
    assert_eq!(status, 404, "a refused export records nothing");

    // 4. CloudEvents, single and batched: the envelope fills the event.
    let now = aispm_schemas::Timestamp::now().to_string();
    let decision = |agent: &str| {
        json!({"agent_id": agent, "actor": "bob", "environment": "trial",
        "action_kind": "git", "target": "acme/infra", "repo": "acme/infra", "mode": "enforced",
        "verdict": "allow", "risk": "low", "tenant_id": TENANT})
    };
    let single = json!({"specversion": "1.0", "id": "ce-1", "source": "//gateway/eu-1",
        "type": "aispm.decision.v1", "time": now, "datacontenttype": "application/json",
        "data": decision("ce-agent")});
    let (status, answer) = post(
        &p,
        "/v1/events",
        "application/cloudevents+json",
        serde_json::to_vec(&single).unwrap(),
        false,
    )
    .await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
    let d = applied(
        &p,
        &aispm_ingest::cloudevents::event_id("//gateway/eu-1", "ce-1"),
    )
    .await;
    assert_eq!(
        (&d["event"]["agent_id"], &d["event"]["source"]),
        (&json!("ce-agent"), &json!("//gateway/eu-1")),
        "{d}"
    );
    let batch = json!([
        {"specversion": "1.0", "id": "ce-2", "source": "//gateway/eu-1", "type": "aispm.decision.v1", "time": now, "data": decision("ce-agent-2")},
        {"specversion": "1.0", "id": "ce-3", "source": "//gateway/eu-1", "type": "aispm.decision.v1", "time": now, "data": decision("ce-agent-3")},
    ]);
    let (status, answer) = post(
        &p,
        "/v1/events",
        "application/cloudevents-batch+json",
        serde_json::to_vec(&batch).unwrap(),
        false,
    )
    .await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
    applied(
        &p,
        &aispm_ingest::cloudevents::event_id("//gateway/eu-1", "ce-3"),
    )
    .await;
    let wrong = json!([batch[0], {"specversion": "1.0", "id": "ce-4", "source": "s", "type": "com.example.order", "data": {}}]);
    let (status, answer) = post(
        &p,
        "/v1/events",
        "application/cloudevents-batch+json",
        serde_json::to_vec(&wrong).unwrap(),
        false,
    )
    .await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["details"]["errors"][0]["field"], "type", "{answer}");

    // 5. The producer guide's other examples, as a user runs them: Python over HTTP and
    // Python over Kafka (confluent-kafka, fastavro, single-object framing, murmur2).
    let example = |name: &str, args: &[&str]| {
        let v = run_json(
            Command::new(venv_python())
                .arg(format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR")))
                .args(args),
            name,
        );
        println!("{name}: {v}");
        v
    };
    let http = example(
        "http_producer.py",
        &[
            "--url",
            &p.ingest.http,
            "--token",
            GATEWAY_TOKEN,
            "--tenant",
            TENANT,
        ],
    );
    assert_eq!(http["bad_errors"][0]["field"], "risk", "{http}");
    for id in http["event_ids"].as_array().unwrap() {
        applied(&p, id.as_str().unwrap()).await;
    }
    let bootstrap = p.broker.bootstrap();
    let kafka = example(
        "kafka_producer.py",
        &["--brokers", &bootstrap, "--tenant", TENANT, "--count", "3"],
    );
    let partition = aispm_runtime::kafka::partition_for(TENANT.as_bytes(), 3);
    for d in kafka["delivered"].as_array().unwrap() {
        assert_eq!(
            d["partition"], partition,
            "murmur2: the tenant's partition, {kafka}"
        );
    }
    for id in kafka["event_ids"].as_array().unwrap() {
        let d = applied(&p, id.as_str().unwrap()).await;
        assert_eq!(d["event"]["verdict"], "deny", "{d}");
    }

    // 6. OCSF out: every finding of the demo scenario (runtime and control-state findings) is
    // on the compacted OCSF topic, one record per finding, and each validates against Prowler's
    // py-ocsf-models (pydantic models of OCSF 1.5, written by nobody here), with no field the
    // class does not define.
    p.emit("open").unwrap();
    let findings = wait_findings(&p, 10).await;
    let check = run_json(
        Command::new(venv_python()).args([
            "-c",
            OCSF_CHECK,
            &p.broker.bootstrap(),
            "aispm.ocsf.v1",
            &findings.len().to_string(),
        ]),
        "the OCSF check (py-ocsf-models)",
    );
    println!("ocsf: {check}");
    assert_eq!(check["errors"], json!([]), "{check}");
    let keys: Vec<&str> = check["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    for f in &findings {
        let key = format!("{TENANT}/{}", f["finding_id"].as_str().unwrap());
        assert!(
            keys.contains(&key.as_str()),
            "{key} missing from the OCSF topic: {check}"
        );
    }
    assert!(check["by_class"]["2003"].as_u64().unwrap() > 0, "{check}");
    assert!(check["by_class"]["2004"].as_u64().unwrap() > 0, "{check}");

    // The OTLP route is scoped like every write: a read-only token is refused.
    let r = reqwest::Client::new()
        .post(&traces)
        .bearer_auth(aispm_tests::demo::READER_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

async fn get_status(p: &Pipeline, path: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", p.projector.http))
        .bearer_auth(TENANT_TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The tenant's findings once there are at least `n` and their number has held for three
/// seconds (the scenario's events are all applied).
async fn wait_findings(p: &Pipeline, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = (0, Instant::now());
    loop {
        let page = p
            .get(
                &p.projector.http,
                &format!("/v1/tenants/{TENANT}/findings?limit=500"),
            )
            .await
            .unwrap();
        let items = page["findings"].as_array().cloned().unwrap_or_default();
        if items.len() != last.0 {
            last = (items.len(), Instant::now());
        } else if items.len() >= n && last.1.elapsed() > Duration::from_secs(3) {
            return items;
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Reads the OCSF topic with confluent-kafka (the latest record per key, as compaction keeps
/// it) and validates each record with py-ocsf-models: the class's model accepts it, and every
/// field it carries, at the top and in the nested objects, is one the model defines.
const OCSF_CHECK: &str = r#"
import json, sys, time
from confluent_kafka import Consumer
from py_ocsf_models.events.findings.detection_finding import DetectionFinding
from py_ocsf_models.events.findings.compliance_finding import ComplianceFinding
from py_ocsf_models.objects.finding_info import FindingInformation
from py_ocsf_models.objects.compliance import Compliance
from py_ocsf_models.objects.remediation import Remediation
from py_ocsf_models.objects.resource_details import ResourceDetails
from py_ocsf_models.objects.evidence_artifacts import EvidenceArtifacts
from py_ocsf_models.objects.metadata import Metadata

brokers, topic, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": brokers, "group.id": "ocsf-check", "auto.offset.reset": "earliest",
              "enable.auto.commit": False})
c.subscribe([topic])
records, deadline, quiet = {}, time.time() + 90, 0
while time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        quiet += 1
        if len(records) >= expected and quiet > 6:
            break
        continue
    if m.error():
        raise SystemExit(str(m.error()))
    quiet = 0
    key = m.key().decode()
    if m.value() is None:
        records.pop(key, None)
    else:
        records[key] = json.loads(m.value())
c.close()
models = {2004: DetectionFinding, 2003: ComplianceFinding}
nested = {"finding_info": FindingInformation, "compliance": Compliance, "remediation": Remediation,
          "metadata": Metadata}
lists = {"resources": ResourceDetails, "evidences": EvidenceArtifacts}
errors, by_class = [], {}
def unknown(where, obj, model):
    extra = sorted(set(obj) - set(model.model_fields))
    if extra:
        errors.append(f"{where}: not in OCSF {model.__name__}: {extra}")
for key, r in records.items():
    model = models.get(r.get("class_uid"))
    if model is None:
        errors.append(f"{key}: class_uid {r.get('class_uid')}")
        continue
    by_class[str(r["class_uid"])] = by_class.get(str(r["class_uid"]), 0) + 1
    try:
        model.model_validate(r)
    except Exception as e:
        errors.append(f"{key}: {e}")
    unknown(key, r, model)
    for field, m in nested.items():
        if field in r:
            unknown(f"{key}.{field}", r[field], m)
    for field, m in lists.items():
        for i, item in enumerate(r.get(field) or []):
            unknown(f"{key}.{field}[{i}]", item, m)
    if r["metadata"]["version"] != "1.5.0":
        errors.append(f"{key}: version {r['metadata']['version']}")
print(json.dumps({"records": len(records), "by_class": by_class, "errors": errors[:20], "keys": sorted(records)}))
"#;
