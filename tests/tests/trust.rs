//! The verdict as an attacker sees it: with the whole pipeline running, every way to fake
//! readiness without the right to is tried, and each must be refused, counted and leave the
//! verdict as it was. Tokens do exactly what their scopes say; what a token writes is stamped
//! with its name; records filed under another tenant's key or dated in the future are
//! dead-lettered, judged against the record's own timestamp.

use aispm_schemas::topics::dlq_headers;
use aispm_schemas::{
    CheckKind, CheckResult, Codec, Environment, InputEvent, RegistryEvent, Timestamp, Topics,
    Validation, signature,
};
use aispm_tests::demo::{
    self, GATEWAY_TOKEN, OPERATOR_TOKEN, OTHER_TENANT_TOKEN, Pipeline, READER_TOKEN, TENANT,
    TENANT_TOKEN, blocker_kinds,
};
use aispm_tests::kafka::{produce, producer, read_all};
use aispm_tests::process::sample;
use aispm_tools::scenario::{self, demo_key, demo_validator_key};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn header<'a>(r: &'a aispm_tests::kafka::Record, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_scope_or_clock_trick_clears_a_blocker() {
    let work = tempfile::tempdir().unwrap();
    let p = Pipeline::start(work.path()).await.unwrap();
    let client = reqwest::Client::new();
    p.emit("open").unwrap();
    let before = p
        .readiness_until(Duration::from_secs(120), |v| {
            v["blockers"].as_array().is_some_and(|b| b.len() >= 8)
        })
        .await
        .unwrap();
    assert!(blocker_kinds(&before).contains(&"tenant_isolation_not_proven".to_owned()));

    // Through ingest: each forgery is refused with the reason, and nothing is written.
    let hostile = p.hostile().await.unwrap();
    assert!(
        hostile[0].1.starts_with("400 record_too_large"),
        "{hostile:?}"
    );
    assert!(
        hostile[1]
            .1
            .starts_with("30 answered 401, then 10 answered 429")
            && hostile[1].1.ends_with("(400 malformed_body)"),
        "{hostile:?}"
    );
    let forgeries = p.forgeries().await.unwrap();
    let expect = [
        (403, "the token lacks the 'validate' scope"),
        (403, "the token lacks the 'approve' scope"),
        (403, "the token lacks the 'admin' scope"),
        (400, "future_occurred_at"),
        (400, "future_occurred_at"),
        (400, "future_occurred_at"),
    ];
    assert_eq!(forgeries.len(), expect.len());
    for ((what, status, reason), (want_status, want_reason)) in forgeries.iter().zip(expect) {
        assert_eq!(*status, want_status, "{what}: {reason}");
        assert!(reason.contains(want_reason), "{what}: {reason}");
    }

    // The operator's read-everything token cannot write; a tenant's read token cannot approve
    // or request packets, but reads.
    let decision = json!({"type": "decision", "event_id": "op-write", "tenant_id": TENANT,
        "occurred_at": Timestamp::now().to_rfc3339(), "source": "gw", "agent_id": "a",
        "actor": "alice", "environment": "production", "action_kind": "file", "target": "/tmp/x",
        "mode": "enforced", "verdict": "allow", "risk": "low"});
    let (status, body) = p.post_events(OPERATOR_TOKEN, &decision).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("'emit'"),
        "{body}"
    );
    let exception = json!({"type": "approval", "event_id": "reader-exception", "tenant_id": TENANT,
        "occurred_at": Timestamp::now().to_rfc3339(), "source": "dashboard",
        "kind": "exception_granted", "finding_id": "F-ANY", "actor": "mallory", "owner": "mallory",
        "expires_at": "2099-01-01T00:00:00Z"});
    let (status, body) = p.post_events(READER_TOKEN, &exception).await.unwrap();
    assert_eq!(status, 403, "{body}");
    let report = client
        .post(format!("{}/v1/tenants/{TENANT}/reports", p.reporter.http))
        .bearer_auth(READER_TOKEN)
        .json(&json!({"type": "cso"}))
        .send()
        .await
        .unwrap();
    assert_eq!(report.status().as_u16(), 403);
    assert!(report.text().await.unwrap().contains("'reports'"));
    let read = client
        .get(format!("{}/v1/tenants/{TENANT}/findings", p.projector.http))
        .bearer_auth(READER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 200);

    // Counted per scope where the refusals happened.
    let ingest = metrics(&p.ingest.http).await;
    for (scope, at_least) in [
        ("validate", 1.0),
        ("approve", 2.0),
        ("admin", 1.0),
        ("emit", 1.0),
    ] {
        let series =
            format!("aispm_ingest_auth_denied_total{{reason=\"missing_scope\",scope=\"{scope}\"}}");
        assert!(
            sample(&ingest, &series) >= at_least,
            "{series} in\n{ingest}"
        );
    }
    let reporter = metrics(&p.reporter.http).await;
    assert!(
        sample(
            &reporter,
            "aispm_reporter_auth_denied_total{reason=\"missing_scope\",scope=\"reports\"}"
        ) >= 1.0
    );

    // Straight to Kafka: a validation filed under another tenant's key, and one dated an hour
    // after its record's timestamp, are dead-lettered by the projector with the reason.
    let topics = Topics::default();
    let codec = Codec::new();
    let validation = |id: &str, at: Timestamp| RegistryEvent {
        event_id: id.into(),
        tenant_id: TENANT.into(),
        occurred_at: at,
        source: "forger".into(),
        asset: None,
        validation: Some(Validation {
            check_kind: CheckKind::TenantIsolation,
            result: CheckResult::Pass,
            subject: None,
            detail: None,
            evidence: None,
            environment: Some(Environment::Production),
        }),
    };
    let kafka = producer(&p.broker.bootstrap()).unwrap();
    let misfiled = codec
        .encode(&validation("kafka-misfiled", Timestamp::now()))
        .unwrap();
    produce(&kafka, &topics.registry, "globex", &misfiled)
        .await
        .unwrap();
    let future = codec
        .encode(&validation(
            "kafka-future",
            Timestamp::now().plus(Duration::from_secs(3600)),
        ))
        .unwrap();
    produce(&kafka, &topics.registry, TENANT, &future)
        .await
        .unwrap();
    let wanted = ["kafka-future", "kafka-misfiled"];
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let dead: Vec<_> = read_all(
            &p.broker.bootstrap(),
            &topics.dlq,
            usize::MAX,
            Duration::from_secs(3),
        )
        .unwrap()
        .into_iter()
        .filter(|r| {
            let value = r.value.as_deref().unwrap_or_default();
            wanted
                .iter()
                .any(|id| value.windows(id.len()).any(|w| w == id.as_bytes()))
        })
        .collect();
        if dead.len() >= 2 || Instant::now() > deadline {
            break dead;
        }
    };
    let mut reasons: Vec<&str> = dead
        .iter()
        .filter_map(|r| header(r, dlq_headers::REASON))
        .collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        ["future_occurred_at", "tenant_mismatch"],
        "{dead:?}"
    );
    for r in &dead {
        assert_eq!(header(r, dlq_headers::STAGE), Some("validate"));
        assert!(header(r, dlq_headers::ERROR).is_some_and(|e| !e.is_empty()));
    }

    // Trial traffic: real git decisions with fresh evidence and passing validations, all in
    // the trial environment. They make trial ready and leave production exactly as it was.
    let now = Timestamp::now().to_rfc3339();
    let evidence = |id: &str| json!({"evidence_id": id, "sha256": "ab".repeat(32), "uri": format!("s3://trial/{id}")});
    let trial_decision = json!({"type": "decision", "event_id": "trial-git-1", "tenant_id": TENANT,
        "occurred_at": now, "source": "gw", "agent_id": "trial-agent", "actor": "alice",
        "environment": "trial", "action_kind": "git", "target": "acme/site", "mode": "enforced",
        "verdict": "allow", "risk": "low", "evidence": evidence("trial-ev-1")});
    let (status, body) = p.post_events(GATEWAY_TOKEN, &trial_decision).await.unwrap();
    assert_eq!(status, 202, "{body}");
    // A validation result as a validator posts it, signed by `key` (named `key_id`) or not.
    let result =
        |id: &str, check: CheckKind, env: Environment, key: Option<(&SigningKey, &str)>| {
            let mut r = RegistryEvent {
                event_id: id.into(),
                tenant_id: TENANT.into(),
                occurred_at: Timestamp::now(),
                source: "validator".into(),
                asset: None,
                validation: Some(Validation {
                    check_kind: check,
                    result: CheckResult::Pass,
                    subject: Some("probe".into()),
                    detail: None,
                    evidence: Some(aispm_schemas::Evidence {
                        evidence_id: format!("{id}-ev"),
                        sha256: "ab".repeat(32),
                        uri: format!("s3://validator/{id}"),
                        signature: None,
                        key_id: None,
                    }),
                    environment: Some(env),
                }),
            };
            if let Some((key, key_id)) = key {
                assert!(signature::sign_validation(key, key_id, &mut r));
            }
            InputEvent::Registry(r).to_json()
        };
    let validator = demo_validator_key();
    let validator_id = scenario::ids::VALIDATOR_KEY;
    for (id, check) in [
        ("trial-iso", CheckKind::TenantIsolation),
        ("trial-conn", CheckKind::ConnectorLive),
    ] {
        let v = result(
            id,
            check,
            Environment::Trial,
            Some((&validator, validator_id)),
        );
        let (status, body) = p.post_events(TENANT_TOKEN, &v).await.unwrap();
        assert_eq!(status, 202, "{body}");
    }
    let trial_path = format!("/v1/tenants/{TENANT}/readiness?stage=trial");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let trial = p.get(&p.gatekeeper.http, &trial_path).await.unwrap();
        if trial["ready_for_aispm_trial"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "trial never became ready: {trial:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Production passes that prove nothing: unsigned, and signed by the evidence key (a trust
    // root without the validator scope). Accepted as claims, shown unproven, never counted.
    let evidence_key = demo_key(TENANT);
    let evidence_id = scenario::ids::trust_root(TENANT);
    let claims = [
        ("claim-unsigned", None, "unsigned"),
        (
            "claim-evidence-key",
            Some((&evidence_key, evidence_id.as_str())),
            "unknown_key",
        ),
    ];
    for (id, key, _) in &claims {
        let v = result(
            id,
            CheckKind::TenantIsolation,
            Environment::Production,
            *key,
        );
        let (status, body) = p.post_events(TENANT_TOKEN, &v).await.unwrap();
        assert_eq!(status, 202, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = p
            .get(
                &p.projector.http,
                &format!("/v1/tenants/{TENANT}/validations"),
            )
            .await
            .unwrap();
        let state = |id: &str| {
            rows["validations"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["event_id"] == id)
                .map(|v| v["signature_state"].clone())
        };
        // Both land on the same row (tenant_isolation/production/probe): the newer one shows.
        if state("claim-evidence-key").is_some() {
            assert_eq!(state("claim-evidence-key").unwrap(), claims[1].2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the claims never landed: {rows:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let verdict = p.readiness().await.unwrap();
    let isolation = verdict["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "tenant_isolation_not_proven")
        .cloned()
        .unwrap();
    assert!(
        isolation["meaning"]
            .as_str()
            .unwrap()
            .contains("ignored as unproven"),
        "{isolation}"
    );
    let production = blocker_kinds(&verdict);
    for kind in [
        "runtime_workflow_synthetic_only",
        "evidence_stale",
        "tenant_isolation_not_proven",
        "missing_live_connector_evidence",
    ] {
        assert!(
            production.contains(&kind.to_owned()),
            "{kind}: {production:?}"
        );
    }

    // Nothing of it moved the verdict: the same blockers, still not ready.
    let after = p.readiness().await.unwrap();
    assert_eq!(after["ready_for_aispm_production"], false);
    assert_eq!(blocker_kinds(&after), blocker_kinds(&before));

    // Provenance: an assignment by the tenant's token is stamped with the token's name, and
    // the finding row shows who asserted it.
    let findings: Value = p
        .get(
            &p.projector.http,
            &format!("/v1/tenants/{TENANT}/findings?status=open"),
        )
        .await
        .unwrap();
    let finding = findings["findings"][0]["finding_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let assign = json!({"type": "approval", "event_id": "trust-assign", "tenant_id": TENANT,
        "occurred_at": Timestamp::now().to_rfc3339(), "source": "tickets",
        "kind": "finding_assigned", "finding_id": finding, "actor": "ciso",
        "owner": "secops", "due_at": "2027-01-01T00:00:00Z"});
    let (status, body) = p.post_events(TENANT_TOKEN, &assign).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows: Value = p
            .get(&p.projector.http, &format!("/v1/tenants/{TENANT}/findings"))
            .await
            .unwrap();
        let row = rows["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["finding_id"] == finding.as_str())
            .cloned()
            .unwrap();
        if row["owner"] == "secops" {
            assert_eq!(row["asserted_by"], "acme", "{row}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the assignment never applied: {row}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The isolation probe fails where isolation is broken: a read token for the demo tenant
    // that can also read every other tenant (the operator's, misused) answers for the other
    // tenant's routes and sees its canary. The other tenant fails; the demo tenant, whose data
    // nobody else could read, passes.
    let (passed, summary) = demo::isolation_probe_with(
        &reqwest::Client::new(),
        &p.work,
        [
            &p.ingest.http,
            &p.projector.http,
            &p.gatekeeper.http,
            &p.reporter.http,
        ],
        "production",
        &[
            (TENANT, OPERATOR_TOKEN, TENANT_TOKEN),
            (demo::OTHER_TENANT, OTHER_TENANT_TOKEN, OTHER_TENANT_TOKEN),
        ],
    )
    .await
    .unwrap();
    assert!(!passed, "{summary:#}");
    let of = |t: &str| {
        summary["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["tenant"] == t)
            .cloned()
            .unwrap()
    };
    let other = of(demo::OTHER_TENANT);
    assert_eq!(other["passed"], false, "{summary:#}");
    assert!(other["answered"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(other["leaked"].as_u64().unwrap() > 0, "{summary:#}");
    assert_eq!(of(TENANT)["passed"], true, "{summary:#}");
}
