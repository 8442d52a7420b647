//! Tenant isolation and hostile input, across every service as deployed: every route but health
//! and metrics needs a token; another tenant's token is refused (403), counted, and learns
//! nothing; tokens never reach the logs; well-formed but hostile events get a precise 400.

use aispm_tests::demo::{OPERATOR_TOKEN, OTHER_TENANT_TOKEN, Pipeline, TENANT_TOKEN};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

fn decision(event_id: &str, tenant: &str) -> Value {
    json!({"type": "decision", "event_id": event_id, "tenant_id": tenant, "occurred_at": "2026-11-21T10:00:00Z",
           "source": "gw", "agent_id": "agent-secret-name", "actor": "alice", "environment": "production",
           "action_kind": "file", "target": "/etc/shadow", "mode": "enforced", "verdict": "deny", "risk": "high"})
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_isolated_on_every_route_and_hostile_input_is_refused_precisely() {
    let work = tempfile::tempdir().unwrap();
    let p = Pipeline::start(work.path()).await.unwrap();
    let client = reqwest::Client::new();
    p.emit("open").unwrap();
    p.readiness_until(Duration::from_secs(120), |v| {
        v["blockers"].as_array().is_some_and(|b| b.len() >= 8)
    })
    .await
    .unwrap();

    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::GET,
            format!("{}/v1/tenants/acme/coverage", p.projector.http),
            None,
        ),
        (
            Method::GET,
            format!("{}/v1/tenants/acme/controls", p.projector.http),
            None,
        ),
        (
            Method::GET,
            format!("{}/v1/tenants/acme/findings?status=open", p.projector.http),
            None,
        ),
        (
            Method::GET,
            format!("{}/v1/tenants/acme/exceptions", p.projector.http),
            None,
        ),
        (
            Method::GET,
            format!("{}/v1/tenants/acme/validations", p.projector.http),
            None,
        ),
        (
            Method::GET,
            format!("{}/v1/tenants/acme/report-deliveries", p.projector.http),
            None,
        ),
        (
            Method::GET,
            format!("{}/v1/tenants/acme/evidence/ev-acme-d14", p.projector.http),
            None,
        ),
        (
            Method::GET,
            format!("{}/v1/tenants/acme/posture", p.projector.http),
            None,
        ),
        (
            Method::GET,
            format!(
                "{}/v1/tenants/acme/readiness?stage=production",
                p.gatekeeper.http
            ),
            None,
        ),
        (
            Method::GET,
            format!("{}/v1/tenants/acme/reports", p.reporter.http),
            None,
        ),
        (
            Method::POST,
            format!("{}/v1/tenants/acme/reports", p.reporter.http),
            Some(json!({"type": "cso"})),
        ),
        (
            Method::POST,
            format!("{}/v1/events", p.ingest.http),
            Some(decision("sec-1", "acme")),
        ),
    ];
    for (method, url, body) in &routes {
        let send = |token: Option<&str>| {
            let mut r = client.request(method.clone(), url);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r.json(b);
            }
            r.send()
        };
        let none = send(None).await.unwrap();
        assert_eq!(
            none.status().as_u16(),
            401,
            "{method} {url} without a token"
        );
        let wrong = send(Some("not-a-token")).await.unwrap();
        assert_eq!(
            wrong.status().as_u16(),
            401,
            "{method} {url} with an unknown token"
        );
        let other = send(Some(OTHER_TENANT_TOKEN)).await.unwrap();
        assert_eq!(
            other.status().as_u16(),
            403,
            "{method} {url} with another tenant's token"
        );
        let text = other.text().await.unwrap();
        for secret in [
            "AISPM-",
            "agent-shadow",
            "ev-acme",
            "openai",
            "acme-open",
            "/etc/",
        ] {
            assert!(
                !text.contains(secret),
                "{method} {url}: a refusal leaks '{secret}': {text}"
            );
        }
    }
    // The operator listing is for operator tokens only.
    let listing = format!("{}/v1/readiness", p.gatekeeper.http);
    assert_eq!(
        client
            .get(&listing)
            .bearer_auth(TENANT_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        client
            .get(&listing)
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // The tenant's own token reads its data; health and metrics need none.
    let own = client
        .get(format!("{}/v1/tenants/acme/findings", p.projector.http))
        .bearer_auth(TENANT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status().as_u16(), 200);
    for s in [&p.ingest, &p.projector, &p.gatekeeper, &p.reporter] {
        for path in ["/healthz", "/metrics"] {
            assert_eq!(
                client
                    .get(format!("{}{path}", s.http))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
                200,
                "{}{path}",
                s.http
            );
        }
        let metrics = client
            .get(format!("{}/metrics", s.http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("auth_denied_total{reason=\"wrong_tenant\",scope=\"\"}"),
            "{}: refusals are counted",
            s.http
        );
    }

    // Hostile but well-formed events: each a 400 naming the problem, nothing accepted.
    let ingest = format!("{}/v1/events", p.ingest.http);
    let post = |body: String| {
        client
            .post(&ingest)
            .bearer_auth(TENANT_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut v = decision("h1", "acme");
    v["risk"] = json!("apocalyptic");
    cases.push(("unknown enum symbol", v, "risk"));
    let mut v = decision("h2", "acme");
    v["occurred_at"] = json!("1970-01-01T00:00:00Z");
    cases.push(("timestamp far in the past", v, "occurred_at"));
    let mut v = decision("h3", "acme");
    v["occurred_at"] = json!("2999-01-01T00:00:00Z");
    cases.push(("timestamp far in the future", v, "occurred_at"));
    let mut v = decision("h4", "acme");
    v["agent_id"] = json!("a".repeat(100_000));
    cases.push(("huge string", v, "agent_id"));
    let mut v = decision("h5", "acme");
    v["tenant_id"] = json!("acme\u{0}globex");
    cases.push(("control characters in the tenant", v, "tenant_id"));
    for (what, body, field) in cases {
        let r = post(body.to_string()).await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(status == 400 || status == 403, "{what}: {status} {text}");
        if status == 400 {
            assert!(
                text.contains(field),
                "{what}: the error names {field}: {text}"
            );
        }
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = post(deep).await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        400,
        "deep nesting is a 400, not a crash"
    );
    // Still alive and well after all of it.
    assert_eq!(
        client
            .get(format!("{}/readyz", p.ingest.http))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    // No token ever reaches a log.
    for entry in std::fs::read_dir(p.work.join("logs")).unwrap() {
        let log = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        for token in [
            TENANT_TOKEN,
            OTHER_TENANT_TOKEN,
            OPERATOR_TOKEN,
            "not-a-token",
        ] {
            assert!(!log.contains(token), "a log contains a token");
        }
    }
}
