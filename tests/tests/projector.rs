//! The projector as a user runs it: the real binary against the real broker, fed over Kafka,
//! read over HTTP and from the views and dead-letter topics.

use aispm_schemas::codec::encode_single_object;
use aispm_schemas::topics::dlq_headers;
use aispm_schemas::*;
use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::kafka::{create_contract_topics, produce, producer, random_prefix, read_all};
use aispm_tests::process::Service;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use std::time::{Duration, Instant};

const T0: i64 = 1_763_719_200_000;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn decision(tenant: &str, id: &str, agent: &str, kind: ActionKind) -> DecisionEvent {
    DecisionEvent {
        event_id: id.into(),
        tenant_id: tenant.into(),
        occurred_at: Timestamp(T0),
        source: "gateway-eu".into(),
        agent_id: agent.into(),
        actor: "alice".into(),
        environment: Environment::Production,
        action_kind: kind,
        target: "x".into(),
        repo: None,
        workflow: None,
        mcp_server: None,
        mcp_tool: None,
        model_endpoint: None,
        control_id: None,
        policy_id: None,
        mode: Mode::Enforced,
        verdict: Verdict::Allow,
        risk: Risk::Low,
        data_classes: vec![],
        synthetic: false,
        approval_id: None,
        api_key_id: None,
        scopes_used: vec![],
        evidence: None,
    }
}

fn asset(tenant: &str, id: &str, kind: AssetKind, f: impl FnOnce(&mut Asset)) -> RegistryEvent {
    let mut a = Asset {
        owner: Some("platform".into()),
        ..Asset::registered(kind, id)
    };
    f(&mut a);
    RegistryEvent {
        event_id: format!("reg-{kind}-{id}"),
        tenant_id: tenant.into(),
        occurred_at: Timestamp(T0 - 60_000),
        source: "registry".into(),
        asset: Some(a),
        validation: None,
    }
}

struct Rig {
    broker: Broker,
    topics: Topics,
    prefix: String,
    dir: tempfile::TempDir,
    projector: Service,
    client: reqwest::Client,
}

const TOKENS: &str = "[[tokens]]\ntoken = \"acme-token\"\ntenants = [\"acme\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\n\n[[tokens]]\ntoken = \"globex-token\"\ntenants = [\"globex\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\n\n[[tokens]]\ntoken = \"ops-token\"\ntenants = [\"*\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\n";

async fn rig() -> Rig {
    rig_with(&[]).await
}

/// A rig whose projector also takes `extra` flags.
async fn rig_with(extra: &[&str]) -> Rig {
    let broker = Broker::start().unwrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&broker.bootstrap(), &prefix, 3)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens.toml"), TOKENS).unwrap();
    let args: Vec<String> = [
        "--brokers",
        &broker.bootstrap(),
        "--topic-prefix",
        &prefix,
        "--state-dir",
        &dir.path().join("state").display().to_string(),
        "--tokens-file",
        &dir.path().join("tokens.toml").display().to_string(),
    ]
    .iter()
    .chain(extra)
    .map(|s| (*s).to_owned())
    .collect();
    let mut projector = Service::start(
        "aispm-projector",
        &format!("127.0.0.1:{}", free_port()),
        &args,
        dir.path(),
    )
    .unwrap();
    projector.wait_ready(Duration::from_secs(60)).await.unwrap();
    Rig {
        broker,
        topics,
        prefix,
        dir,
        projector,
        client: reqwest::Client::new(),
    }
}

impl Rig {
    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.projector.http))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls until `check` holds on the response of `path`.
    async fn eventually(&self, token: &str, path: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, v) = self.get(token, path).await;
            if status == 200 && check(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out on {path}: {v:#}\n{}",
                self.projector.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn has(v: &Value, list: &str, field: &str, id: &str) -> bool {
    v[list]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x[field] == id))
}

fn find<'a>(v: &'a Value, list: &str, field: &str, id: &str) -> &'a Value {
    v[list]
        .as_array()
        .and_then(|a| a.iter().find(|x| x[field] == id))
        .unwrap_or_else(|| panic!("no {id} in {list}: {v:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_tenant_scenario_produces_the_expected_views() {
    multi_tenant_scenario(&[]).await;
}

/// The same scenario with changed rows published at most every 300 ms (`--publish-interval`):
/// rows wait in the epoch, and whatever waits when the input goes idle is derived, written
/// and published then.
#[tokio::test(flavor = "multi_thread")]
async fn a_multi_tenant_scenario_produces_the_expected_views_with_rows_published_per_interval() {
    multi_tenant_scenario(&["--publish-interval", "300ms"]).await;
}

async fn multi_tenant_scenario(extra: &[&str]) {
    let rig = rig_with(extra).await;
    let p = producer(&rig.broker.bootstrap()).unwrap();
    let t = &rig.topics;
    let root = SigningKey::from_bytes(&[9u8; 32]);
    let forger = SigningKey::from_bytes(&[10u8; 32]);

    // The registry: a registered agent, a trusted and a quarantined MCP tool, an endpoint
    // approved for PII, a public endpoint without auth, an admin API key, a trust root.
    let registry = [
        asset("acme", "agent-reg", AssetKind::Agent, |_| {}),
        asset("acme", "github/create_pr", AssetKind::McpTool, |a| {
            a.trust = Some(Trust::Trusted)
        }),
        asset("acme", "shady/exec", AssetKind::McpTool, |a| {
            a.trust = Some(Trust::Quarantined)
        }),
        asset("acme", "openai", AssetKind::ModelEndpoint, |a| {
            a.approved_data_classes = vec!["pii".into()];
            a.public = Some(true);
            a.auth_required = Some(true);
        }),
        asset("acme", "rogue", AssetKind::ModelEndpoint, |a| {
            a.public = Some(true);
            a.auth_required = Some(false);
        }),
        asset("acme", "ci-key", AssetKind::ApiKey, |a| {
            a.scopes = vec!["repo:read".into(), "*".into()]
        }),
        asset("acme", "root-1", AssetKind::TrustRoot, |a| {
            a.public_key = Some(b64(&root.verifying_key().to_bytes()))
        }),
    ];
    for r in &registry {
        produce(&p, &t.registry, "acme", &encode_single_object(r).unwrap())
            .await
            .unwrap();
    }

    let digest = [0x5au8; 32];
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut d1 = decision("acme", "d1", "agent-reg", ActionKind::Mcp);
    d1.mcp_server = Some("github".into());
    d1.mcp_tool = Some("create_pr".into());
    d1.risk = Risk::High;
    d1.approval_id = Some("appr-1".into());
    d1.control_id = Some("ctl-mcp".into());
    d1.evidence = Some(Evidence {
        evidence_id: "ev-good".into(),
        sha256: hex.clone(),
        uri: "s3://e/1".into(),
        signature: Some(signature::sign(&root, "acme", "ev-good", &digest)),
        key_id: Some("root-1".into()),
    });
    let mut d2 = decision("acme", "d2", "agent-shadow", ActionKind::Mcp);
    d2.mcp_server = Some("shady".into());
    d2.mcp_tool = Some("exec".into());
    d2.risk = Risk::Critical;
    d2.mode = Mode::Shadow;
    d2.control_id = Some("ctl-mcp".into());
    d2.occurred_at = Timestamp(T0 + 1000);
    let mut d3 = decision("acme", "d3", "agent-reg", ActionKind::Model);
    d3.model_endpoint = Some("openai".into());
    d3.data_classes = vec!["pii".into(), "phi".into()];
    d3.evidence = Some(Evidence {
        evidence_id: "ev-forged".into(),
        sha256: hex,
        uri: "s3://e/2".into(),
        signature: Some(signature::sign(&forger, "acme", "ev-forged", &digest)),
        key_id: Some("root-1".into()),
    });
    let d4 = decision("globex", "g1", "globex-agent", ActionKind::File);
    // Three high-risk commands by the registered agent under one control, allowed without
    // approval: three occurrences of one finding, each reachable by cursor.
    let commands: Vec<DecisionEvent> = (0..3)
        .map(|i| {
            let mut d = decision("acme", &format!("cmd{i}"), "agent-reg", ActionKind::Command);
            d.risk = Risk::High;
            d.control_id = Some("ctl-shell".into());
            d.occurred_at = Timestamp(T0 + 2000 + i);
            d
        })
        .collect();
    for d in [&d1, &d2, &d3].into_iter().chain(&commands) {
        produce(&p, &t.decisions, "acme", &encode_single_object(d).unwrap())
            .await
            .unwrap();
    }
    produce(
        &p,
        &t.decisions,
        "globex",
        &encode_single_object(&d4).unwrap(),
    )
    .await
    .unwrap();
    // A duplicate of d2 changes nothing.
    produce(
        &p,
        &t.decisions,
        "acme",
        &encode_single_object(&d2).unwrap(),
    )
    .await
    .unwrap();
    let assign = ApprovalEvent {
        event_id: "ap-1".into(),
        tenant_id: "acme".into(),
        occurred_at: Timestamp(T0 + 5000),
        source: "jira".into(),
        kind: ApprovalKind::FindingAssigned,
        decision_id: None,
        finding_id: Some("AISPM-MCP-001:shady/exec".into()),
        control_id: None,
        exception_id: None,
        actor: "ciso".into(),
        owner: Some("secops".into()),
        reason: None,
        due_at: Some(Timestamp(T0 + 86_400_000)),
        expires_at: None,
    };
    produce(
        &p,
        &t.approvals,
        "acme",
        &encode_single_object(&assign).unwrap(),
    )
    .await
    .unwrap();

    let findings = rig
        .eventually("acme-token", "/v1/tenants/acme/findings?status=open", |v| {
            has(v, "findings", "finding_id", "AISPM-EV-003:ev-forged")
                && find(v, "findings", "finding_id", "AISPM-MCP-001:shady/exec")["owner"]
                    == "secops"
        })
        .await;
    let open: std::collections::BTreeSet<&str> = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["finding_id"].as_str().unwrap())
        .collect();
    for expected in [
        "AISPM-MCP-001:shady/exec",
        "AISPM-SHADOW-001:agent-shadow",
        "AISPM-CTRL-001:ctl-mcp",
        "AISPM-APR-001:agent-shadow/ctl-mcp",
        "AISPM-EV-001:agent-shadow/ctl-mcp",
        "AISPM-EP-001:rogue",
        "AISPM-KEY-001:ci-key",
        "AISPM-DATA-001:openai/phi",
        "AISPM-EV-003:ev-forged",
    ] {
        assert!(open.contains(expected), "{expected} missing from {open:?}");
    }
    for absent in [
        "AISPM-DATA-001:openai/pii",
        "AISPM-APR-001:agent-reg/ctl-mcp",
        "AISPM-MCP-001:github/create_pr",
        "AISPM-EV-003:ev-good",
    ] {
        assert!(!open.contains(absent), "{absent} should not be open");
    }
    // One finding per agent and control; its events by cursor, a page at a time.
    let path = "/v1/tenants/acme/findings/AISPM-APR-001:agent-reg%2Fctl-shell";
    let (status, one) = rig.get("acme-token", path).await;
    assert_eq!(status, 200, "{one:#}");
    assert_eq!(one["occurrences"], 3);
    assert_eq!(one["subject"], "agent-reg/ctl-shell");
    assert_eq!(one["environments"], serde_json::json!(["production"]));
    assert!(one["sla_state"].is_string());
    let mut seen = Vec::new();
    let mut next = format!("{path}/events?limit=2");
    loop {
        let (status, page) = rig.get("acme-token", &next).await;
        assert_eq!(status, 200, "{page:#}");
        assert_eq!(page["indexed"], true);
        for e in page["events"].as_array().unwrap() {
            seen.push(e["event_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => next = format!("{path}/events?limit=2&after={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["cmd0", "cmd1", "cmd2"], "oldest first, each once");
    for (bad, status) in [
        (format!("{path}/events?limit=0"), 400),
        (format!("{path}/events?after=zz"), 400),
        (
            "/v1/tenants/acme/findings/AISPM-APR-001:nobody".to_owned(),
            404,
        ),
    ] {
        assert_eq!(rig.get("acme-token", &bad).await.0, status, "{bad}");
    }
    assert_eq!(rig.get("globex-token", path).await.0, 403);
    let mcp = find(
        &findings,
        "findings",
        "finding_id",
        "AISPM-MCP-001:shady/exec",
    );
    assert_eq!(mcp["severity"], "high");
    assert!(
        mcp["frameworks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().starts_with("OWASP-LLM"))
    );
    assert!(
        mcp["event_ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "d2"),
        "drill-down to the decision"
    );

    let coverage = rig
        .get("acme-token", "/v1/tenants/acme/coverage?kind=agent")
        .await
        .1;
    assert_eq!(
        find(&coverage, "coverage", "id", "agent-shadow")["shadow_ai"],
        true
    );
    assert_eq!(
        find(&coverage, "coverage", "id", "agent-reg")["registered"],
        true
    );
    assert_eq!(
        find(&coverage, "coverage", "id", "agent-shadow")["decisions"],
        1,
        "the duplicate is not counted"
    );
    let controls = rig.get("acme-token", "/v1/tenants/acme/controls").await.1;
    assert_eq!(
        find(&controls, "controls", "control_id", "ctl-mcp")["state"],
        "shadowed"
    );
    let (status, good) = rig
        .get("acme-token", "/v1/tenants/acme/evidence/ev-good")
        .await;
    assert_eq!(
        (status, good["signature_state"].as_str()),
        (200, Some("verified"))
    );
    let forged = rig
        .get("acme-token", "/v1/tenants/acme/evidence/ev-forged")
        .await
        .1;
    assert_eq!(forged["signature_state"], "invalid");
    // The posture is kept: under load (a computation over FRESH_BUDGET) a request gets the
    // kept one, recomputed within MIN_EVERY of a change, so wait for the change to show.
    let posture = rig
        .eventually("acme-token", "/v1/tenants/acme/posture", |p| {
            p["layers"]["coverage"]["drill_down"]["shadow_assets"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a == "agent/agent-shadow"))
        })
        .await;
    assert!(posture["layers"]["findings"]["score"].as_f64().unwrap() < 100.0);

    // Tenant isolation: globex sees only its own data; reading acme is refused and counted.
    let (status, _) = rig.get("globex-token", "/v1/tenants/acme/findings").await;
    assert_eq!(status, 403);
    let (status, _) = rig.get("nobody", "/v1/tenants/acme/findings").await;
    assert_eq!(status, 401);
    let globex = rig
        .eventually("globex-token", "/v1/tenants/globex/coverage", |v| {
            v["count"].as_u64() > Some(0)
        })
        .await;
    assert!(!globex.to_string().contains("acme"));
    let metrics = rig
        .client
        .get(format!("{}/metrics", rig.projector.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("aispm_projector_auth_denied_total{reason=\"wrong_tenant\",scope=\"\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("aispm_projector_events_total"),
        "{metrics}"
    );

    // Every view change is on the views topic, keyed {tenant}/{view}/{row}.
    let changes = read_all(
        &rig.broker.bootstrap(),
        &t.views,
        usize::MAX,
        Duration::from_secs(8),
    )
    .unwrap();
    let keys: Vec<String> = changes
        .iter()
        .filter_map(|r| {
            r.key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned())
        })
        .collect();
    assert!(
        keys.iter()
            .any(|k| k == "acme/findings/AISPM-MCP-001:shady/exec"),
        "{keys:?}"
    );
    let codec = Codec::new();
    for c in &changes {
        let change: ViewChange = codec.decode(c.value.as_deref().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8_lossy(c.key.as_deref().unwrap())
                .split('/')
                .next(),
            Some(change.tenant_id.as_str())
        );
    }
    drop(rig.dir);
    let _ = rig.prefix;
}

/// Posture and findings as of a past instant, over HTTP: the events that occurred by then,
/// replayed, with the answer saying how many of them arrived after it; the token is checked
/// before any replay, and an instant in the future or not in RFC 3339 is a `400`.
#[tokio::test(flavor = "multi_thread")]
async fn posture_and_findings_as_of_a_past_instant() {
    let rig = rig().await;
    let p = producer(&rig.broker.bootstrap()).unwrap();
    let t = &rig.topics;
    // High-risk commands allowed without approval under ctl-shell: agent-a's at T0, agent-b's
    // two hours later. As of T0 + 1h only agent-a's finding exists.
    for (id, agent, at) in [
        ("cmd-a", "agent-a", T0),
        ("cmd-b", "agent-b", T0 + 7_200_000),
    ] {
        let mut d = decision("acme", id, agent, ActionKind::Command);
        d.risk = Risk::High;
        d.control_id = Some("ctl-shell".into());
        d.occurred_at = Timestamp(at);
        produce(&p, &t.decisions, "acme", &encode_single_object(&d).unwrap())
            .await
            .unwrap();
    }
    let finding = |agent: &str| format!("AISPM-APR-001:{agent}/ctl-shell");
    rig.eventually("acme-token", "/v1/tenants/acme/findings", |v| {
        has(v, "findings", "finding_id", &finding("agent-b"))
    })
    .await;

    let at = Timestamp(T0 + 3_600_000).to_string();
    let started = Instant::now();
    let r = rig
        .client
        .get(format!(
            "{}/v1/tenants/acme/findings?as_of={at}",
            rig.projector.http
        ))
        .bearer_auth("acme-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let header = r
        .headers()
        .get("aispm-as-of")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .expect("an answer as of a past instant says so");
    let findings: Value = r.json().await.unwrap();
    println!(
        "as of {at}: replay and findings in {} ms; {header}",
        started.elapsed().as_millis()
    );
    assert!(has(
        &findings,
        "findings",
        "finding_id",
        &finding("agent-a")
    ));
    assert!(
        !has(&findings, "findings", "finding_id", &finding("agent-b")),
        "{findings:#}"
    );
    // Both records reached the broker now, long after T0 + 1h: the one included is late.
    assert_eq!(
        header,
        format!("at={at}; events=1; after=1; late=1; arrival_unknown=0")
    );

    let (status, posture) = rig
        .get(
            "acme-token",
            &format!("/v1/tenants/acme/posture?as_of={at}"),
        )
        .await;
    assert_eq!(status, 200, "{posture:#}");
    assert_eq!(posture["computed_at"], at.as_str());
    assert_eq!(posture["as_of"]["events"], 1);
    assert_eq!(posture["as_of"]["late"], 1);
    let now = rig.get("acme-token", "/v1/tenants/acme/posture").await.1;
    assert!(
        now["layers"]["findings"]["score"].as_f64()
            <= posture["layers"]["findings"]["score"].as_f64(),
        "one open finding then, two now: {posture:#}\n{now:#}"
    );
    // One row, as of then and now.
    let row = |when: &str| {
        format!(
            "/v1/tenants/acme/findings/{}{when}",
            finding("agent-b").replace('/', "%2F")
        )
    };
    assert_eq!(rig.get("acme-token", &row("")).await.0, 200);
    assert_eq!(
        rig.get("acme-token", &row(&format!("?as_of={at}"))).await.0,
        404
    );

    // Another tenant's token is refused before any replay; bad instants are 400s.
    let (status, _) = rig
        .get(
            "globex-token",
            &format!("/v1/tenants/acme/posture?as_of={at}"),
        )
        .await;
    assert_eq!(status, 403);
    let future = Timestamp(Timestamp::now().0 + 3_600_000).to_string();
    for bad in [future.as_str(), "yesterday"] {
        let (status, v) = rig
            .get(
                "acme-token",
                &format!("/v1/tenants/acme/posture?as_of={bad}"),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {v:#}");
    }
}

/// A past instant replayed from a replay checkpoint the projector made in the background,
/// over HTTP: the same findings and counts as the events say, the answer naming the
/// checkpoint and how few events it applied; the checkpoints survive a kill -9 and serve the
/// restarted projector at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_past_instant_is_replayed_from_a_checkpoint_that_survives_a_restart() {
    let mut rig = rig_with(&[
        "--as-of-checkpoint-events",
        "4",
        "--as-of-checkpoint-interval",
        "1s",
    ])
    .await;
    let p = producer(&rig.broker.bootstrap()).unwrap();
    // Twelve agents, each a high-risk command allowed without approval, ten minutes apart.
    const MIN: i64 = 60_000;
    for i in 0..12i64 {
        let mut d = decision(
            "acme",
            &format!("cmd-{i}"),
            &format!("agent-{i}"),
            ActionKind::Command,
        );
        d.risk = Risk::High;
        d.control_id = Some("ctl-shell".into());
        d.occurred_at = Timestamp(T0 + i * 10 * MIN);
        produce(
            &p,
            &rig.topics.decisions,
            "acme",
            &encode_single_object(&d).unwrap(),
        )
        .await
        .unwrap();
    }
    // Checkpoints after events 4, 8 and 12 by event time.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig
        .projector
        .sample("aispm_projector_as_of_checkpoints")
        .await
        < 3.0
    {
        assert!(Instant::now() < deadline, "{}", rig.projector.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finding = |i: i64| format!("AISPM-APR-001:agent-{i}/ctl-shell");
    // As of 95 minutes: agents 0 to 9, from the checkpoint as of minute 70 (events 0 to 7),
    // applying the two after it.
    let at = Timestamp(T0 + 95 * MIN);
    let (status, posture) = rig
        .get(
            "acme-token",
            &format!("/v1/tenants/acme/posture?as_of={at}"),
        )
        .await;
    assert_eq!(status, 200, "{posture:#}");
    let a = &posture["as_of"];
    assert_eq!(a["events"], 10, "{a:#}");
    assert_eq!(a["after"], 2, "{a:#}");
    assert_eq!(a["applied"], 2, "{a:#}");
    assert_eq!(
        a["from_checkpoint"],
        Timestamp(T0 + 70 * MIN).to_string(),
        "{a:#}"
    );
    let (status, findings) = rig
        .get(
            "acme-token",
            &format!("/v1/tenants/acme/findings?as_of={at}&limit=100"),
        )
        .await;
    assert_eq!(status, 200);
    for i in 0..12 {
        assert_eq!(
            has(&findings, "findings", "finding_id", &finding(i)),
            i < 10,
            "agent-{i}: {findings:#}"
        );
    }
    rig.projector.restart().unwrap(); // kill -9, then start
    rig.projector
        .wait_ready(Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        rig.projector
            .log()
            .contains("Replay checkpoints kept from before"),
        "{}",
        rig.projector.log_tail()
    );
    // Another instant, not served from the replays kept in memory before the restart.
    let at = Timestamp(T0 + 95 * MIN + 1);
    let (status, posture) = rig
        .get(
            "acme-token",
            &format!("/v1/tenants/acme/posture?as_of={at}"),
        )
        .await;
    assert_eq!(status, 200, "{posture:#}");
    assert_eq!(posture["as_of"]["applied"], 2, "{posture:#}");
    assert_eq!(posture["as_of"]["events"], 10, "{posture:#}");
    // Before the first checkpoint: from nothing.
    let at = Timestamp(T0 + 25 * MIN);
    let posture = loop {
        // Refused with 429 until the tenant's gap between two replays has passed.
        match rig
            .get(
                "acme-token",
                &format!("/v1/tenants/acme/posture?as_of={at}"),
            )
            .await
        {
            (429, _) => tokio::time::sleep(Duration::from_millis(500)).await,
            (status, posture) => {
                assert_eq!(status, 200, "{posture:#}");
                break posture;
            }
        }
    };
    assert_eq!(posture["as_of"]["events"], 3, "{posture:#}");
    assert_eq!(posture["as_of"]["applied"], 3, "{posture:#}");
    assert!(
        posture["as_of"].get("from_checkpoint").is_none(),
        "{posture:#}"
    );
}

/// Requests for approval per control and agent against hand-computed figures: each request
/// counted by its first answer by event time (a later grant produced before an earlier denial
/// is taken back), a grant that arrives before its request, pending requests overdue or not
/// by the wall clock, and the time to decision's mean and bucketed quantiles.
#[tokio::test(flavor = "multi_thread")]
async fn approval_stats_count_each_request_by_its_first_answer() {
    let rig = rig().await;
    let p = producer(&rig.broker.bootstrap()).unwrap();
    let t = &rig.topics;
    let now = Timestamp::now().0;
    let base = now - 12 * 3_600_000;
    const MIN: i64 = 60_000;
    let answer = |id: &str, decision: &str, at: i64, granted: bool| ApprovalEvent {
        event_id: id.into(),
        tenant_id: "acme".into(),
        occurred_at: Timestamp(at),
        source: "approvals-ui".into(),
        kind: if granted {
            ApprovalKind::ApprovalGranted
        } else {
            ApprovalKind::ApprovalDenied
        },
        decision_id: Some(decision.into()),
        finding_id: None,
        control_id: None,
        exception_id: None,
        actor: "lead".into(),
        owner: None,
        reason: None,
        due_at: None,
        expires_at: None,
    };
    // r3's grant arrives before r3 itself; r2's later grant before its earlier denial.
    for a in [
        answer("a-r3", "r3", base + 2 * MIN + 2 * 3_600_000, true),
        answer("a-r2-late", "r2", base + 21 * MIN, true),
        answer("a-r2", "r2", base + 11 * MIN, false),
        answer("a-r1", "r1", base + 30_000, true),
    ] {
        produce(&p, &t.approvals, "acme", &encode_single_object(&a).unwrap())
            .await
            .unwrap();
    }
    let request = |id: &str, agent: &str, at: i64| {
        let mut d = decision("acme", id, agent, ActionKind::Git);
        d.occurred_at = Timestamp(at);
        d.control_id = Some("ctl-deploy".into());
        d.verdict = Verdict::RequireApproval;
        d.risk = Risk::High;
        d
    };
    for d in [
        request("r1", "agent-a", base),
        request("r2", "agent-a", base + MIN),
        request("r3", "agent-b", base + 2 * MIN),
        request("r4", "agent-a", now - 10 * 3_600_000),
        request("r5", "agent-b", now - MIN),
    ] {
        produce(&p, &t.decisions, "acme", &encode_single_object(&d).unwrap())
            .await
            .unwrap();
    }

    let v = rig
        .eventually("acme-token", "/v1/tenants/acme/approval-stats", |v| {
            v["stats"].as_array().is_some_and(|s| {
                s.iter()
                    .map(|r| r["requested"].as_i64().unwrap_or(0))
                    .sum::<i64>()
                    == 5
                    && s.iter()
                        .map(|r| r["denied"].as_i64().unwrap_or(0))
                        .sum::<i64>()
                        == 1
                    && s.iter()
                        .map(|r| r["granted"].as_i64().unwrap_or(0))
                        .sum::<i64>()
                        == 2
            })
        })
        .await;
    assert_eq!(v["approval_decision_window_ms"], 4 * 3_600_000);
    let a = find(&v, "stats", "agent_id", "agent-a");
    assert_eq!(a["control_id"], "ctl-deploy");
    let counts = |r: &Value| {
        [
            "requested",
            "granted",
            "denied",
            "pending",
            "pending_overdue",
        ]
        .map(|f| r[f].as_i64().unwrap())
    };
    assert_eq!(counts(a), [3, 1, 1, 1, 1], "{a:#}");
    assert_eq!(a["oldest_pending"]["decision_id"], "r4", "{a:#}");
    // r1 after 30 s, r2 denied after 10 min: mean 315 s; the median in the first bucket
    // (a minute), the 90th percentile in the 15-minute one.
    let ttd = &a["time_to_decision"];
    assert_eq!(ttd["answered"], 2, "{a:#}");
    assert_eq!(ttd["mean_ms"], 315_000, "{a:#}");
    assert_eq!(ttd["p50_at_most_ms"], 60_000, "{a:#}");
    assert_eq!(ttd["p90_at_most_ms"], 900_000, "{a:#}");
    let b = find(&v, "stats", "agent_id", "agent-b");
    assert_eq!(counts(b), [2, 1, 0, 1, 0], "{b:#}");
    assert_eq!(b["oldest_pending"]["decision_id"], "r5", "{b:#}");
    assert_eq!(b["time_to_decision"]["mean_ms"], 7_200_000, "{b:#}");
    assert_eq!(b["time_to_decision"]["p50_at_most_ms"], 14_400_000, "{b:#}");

    // AISPM-APR-002 by event time, agent-a's newest decision its clock. Acting (under another
    // control) a millisecond before r4's window ends raises nothing; exactly at its end, r4 is
    // overdue: one occurrence, opened then.
    let r4_due = now - 10 * 3_600_000 + 4 * 3_600_000;
    let act = |id: &str, at: i64| {
        let mut d = decision("acme", id, "agent-a", ActionKind::Git);
        d.occurred_at = Timestamp(at);
        d.control_id = Some("ctl-read".into());
        d
    };
    let apr = "/v1/tenants/acme/findings/AISPM-APR-002:agent-a%2Fctl-deploy";
    produce(
        &p,
        &t.decisions,
        "acme",
        &encode_single_object(&act("a-early", r4_due - 1)).unwrap(),
    )
    .await
    .unwrap();
    rig.eventually(
        "acme-token",
        "/v1/tenants/acme/agents/agent-a/identity",
        |v| v["decisions"] == 4,
    )
    .await;
    let (status, _) = rig.get("acme-token", apr).await;
    assert_eq!(
        status, 404,
        "r4's window has not ended at agent-a's newest decision"
    );
    produce(
        &p,
        &t.decisions,
        "acme",
        &encode_single_object(&act("a-due", r4_due)).unwrap(),
    )
    .await
    .unwrap();
    let f = rig
        .eventually("acme-token", apr, |f| f["status"] == "open")
        .await;
    assert_eq!(f["occurrences"], 1, "{f:#}");
    assert_eq!(f["opened_at"], Timestamp(r4_due).to_string(), "{f:#}");
    assert_eq!(
        f["last_occurrence_at"],
        Timestamp(r4_due).to_string(),
        "{f:#}"
    );
    assert_eq!(f["event_ids"], serde_json::json!(["r4"]), "{f:#}");
    assert_eq!(f["severity"], "medium", "{f:#}");
    let (status, _) = rig
        .get(
            "acme-token",
            "/v1/tenants/acme/findings/AISPM-APR-002:agent-b%2Fctl-deploy",
        )
        .await;
    assert_eq!(status, 404, "agent-b's pending r5 is its newest decision");

    // Answering the overdue request takes it out of the pending ones, and the finding out of
    // the view.
    produce(
        &p,
        &t.approvals,
        "acme",
        &encode_single_object(&answer("a-r4", "r4", now - 9 * 3_600_000, false)).unwrap(),
    )
    .await
    .unwrap();
    let v = rig
        .eventually(
            "acme-token",
            "/v1/tenants/acme/approval-stats?control=ctl-deploy",
            |v| v["stats"][0]["denied"] == 2,
        )
        .await;
    let a = find(&v, "stats", "agent_id", "agent-a");
    assert_eq!(counts(a), [3, 1, 2, 0, 0], "{a:#}");
    assert!(a["oldest_pending"].is_null(), "{a:#}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.get("acme-token", apr).await.0 != 404 {
        assert!(Instant::now() < deadline, "AISPM-APR-002 never left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, none) = rig
        .get(
            "acme-token",
            "/v1/tenants/acme/approval-stats?control=other",
        )
        .await;
    assert_eq!(none["count"], 0, "{none:#}");
    let (status, _) = rig
        .get("globex-token", "/v1/tenants/acme/approval-stats")
        .await;
    assert_eq!(status, 403);
}

/// The data-exposure map against hand-computed rows: each (data class, destination) with its
/// decisions, denials and agents, approved or not by the destination's registration, the
/// unapproved model endpoint's finding named; filters and pages of one; another tenant's
/// flows to a destination of the same name appear only under its own token.
#[tokio::test(flavor = "multi_thread")]
async fn identity_maps_keys_and_scopes_and_flags_the_unused() {
    const DAY: i64 = 86_400_000;
    let rig = rig_with(&["--actors-per-agent", "3"]).await;
    let p = producer(&rig.broker.bootstrap()).unwrap();
    let t = &rig.topics;
    let key = |id: &str, agent: &str, scopes: &[&str]| {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let agent = agent.to_owned();
        asset("acme", id, AssetKind::ApiKey, move |a| {
            a.scopes = scopes;
            a.attributes.insert("agent_id".into(), agent);
        })
    };
    // Registered at T0 - 1 min: agent-a with two keys (one never used), agent-b with one.
    let registrations = [
        asset("acme", "agent-a", AssetKind::Agent, |a| {
            a.owner = Some("dev-platform".into());
        }),
        key(
            "key-a",
            "agent-a",
            &["repo:read", "repo:write", "issues:write"],
        ),
        key("key-idle", "agent-a", &["repo:read"]),
        key("key-b", "agent-b", &["repo:read", "repo:write"]),
    ];
    for r in &registrations {
        produce(&p, &t.registry, "acme", &encode_single_object(r).unwrap())
            .await
            .unwrap();
    }
    let used = |id: &str, agent: &str, actor: &str, at: i64, key: &str, scopes: &[&str]| {
        let mut d = decision("acme", id, agent, ActionKind::Git);
        d.occurred_at = Timestamp(at);
        d.actor = actor.into();
        d.repo = Some("acme/api".into());
        d.api_key_id = Some(key.into());
        d.scopes_used = scopes.iter().map(|s| (*s).to_owned()).collect();
        d
    };
    // key-a: repo:read at T0 only, repo:write up to T0 + 35 days, issues:write never, and a
    // scope it was never granted. Its newest use is 35 days after T0: repo:read (35 days) and
    // issues:write (35 days and a minute) are past the 30-day window.
    let first = [
        used("i1", "agent-a", "alice", T0, "key-a", &["repo:read"]),
        used(
            "i2",
            "agent-a",
            "bob",
            T0 + 10 * DAY,
            "key-a",
            &["repo:write"],
        ),
        used(
            "i3",
            "agent-a",
            "carol",
            T0 + 35 * DAY,
            "key-a",
            &["repo:write", "deploy"],
        ),
        // key-b: repo:read at T0, repo:write a millisecond short of 30 days later.
        used("i4", "agent-b", "alice", T0, "key-b", &["repo:read"]),
        used(
            "i5",
            "agent-b",
            "alice",
            T0 + 30 * DAY - 1,
            "key-b",
            &["repo:write"],
        ),
    ];
    for d in &first {
        produce(&p, &t.decisions, "acme", &encode_single_object(d).unwrap())
            .await
            .unwrap();
    }
    let v = rig
        .eventually(
            "acme-token",
            "/v1/tenants/acme/agents/agent-a/identity",
            |v| v["decisions"] == 3 && v["keys"].as_array().is_some_and(|k| k.len() == 2),
        )
        .await;
    assert_eq!(v["registration"]["owner"], "dev-platform", "{v:#}");
    assert_eq!(v["actors"], 3);
    assert_eq!(v["many_actors"], true, "3 actors, --actors-per-agent 3");
    assert_eq!(v["relations"]["actor"]["targets"], 3);
    assert_eq!(v["relations"]["repo"]["targets"], 1);
    assert_eq!(v["relations"]["repo"]["decisions"], 3);
    assert_eq!(v["relations"]["api_key"]["targets"], 1);
    assert_eq!(v["unused_scope_window_ms"], 30 * DAY);
    let a = find(&v, "keys", "key_id", "key-a");
    assert_eq!(a["registered_to_this_agent"], true);
    assert_eq!(a["decisions"], 3);
    assert_eq!(a["last_used_at"], Timestamp(T0 + 35 * DAY).to_string());
    let scopes: Vec<(String, bool, i64)> = a["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["scope"].as_str().unwrap().to_owned(),
                s["granted"].as_bool().unwrap(),
                s["decisions"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        scopes,
        [
            ("deploy".to_owned(), false, 1),
            ("issues:write".to_owned(), true, 0),
            ("repo:read".to_owned(), true, 1),
            ("repo:write".to_owned(), true, 2),
        ]
    );
    let unused: Vec<&str> = a["unused_scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scope"].as_str().unwrap())
        .collect();
    assert_eq!(unused, ["repo:read", "issues:write"], "{a:#}");
    assert_eq!(a["findings"]["unused_scopes"], "AISPM-KEY-002:key-a");
    let idle = find(&v, "keys", "key_id", "key-idle");
    assert_eq!(idle["decisions"], 0);
    assert_eq!(
        idle["unused_scopes"].as_array().map(Vec::len),
        Some(0),
        "a key never used is not over-privileged by use: {idle:#}"
    );

    // The finding: key-a's, opened when issues:write (never used since the registration at
    // T0 - 1 min) reached the end of its window; none for key-b (a millisecond short).
    let f = rig
        .eventually(
            "acme-token",
            "/v1/tenants/acme/findings/AISPM-KEY-002:key-a",
            |f| f["status"] == "open",
        )
        .await;
    assert_eq!(f["occurrences"], 2, "two scopes unused: {f:#}");
    assert_eq!(
        f["opened_at"],
        Timestamp(T0 - 60_000 + 30 * DAY).to_string()
    );
    assert_eq!(f["severity"], "medium");
    let b = rig
        .eventually(
            "acme-token",
            "/v1/tenants/acme/agents/agent-b/identity",
            |v| v["decisions"] == 2,
        )
        .await;
    assert_eq!(b["many_actors"], false);
    assert_eq!(
        find(&b, "keys", "key_id", "key-b")["unused_scopes"],
        serde_json::json!([])
    );
    let (status, _) = rig
        .get(
            "acme-token",
            "/v1/tenants/acme/findings/AISPM-KEY-002:key-b",
        )
        .await;
    assert_eq!(status, 404, "key-b used repo:read within the window");

    // key-b used again exactly 30 days after its repo:read: now past the window, raised.
    let at_window = used(
        "i6",
        "agent-b",
        "alice",
        T0 + 30 * DAY,
        "key-b",
        &["repo:write"],
    );
    produce(
        &p,
        &t.decisions,
        "acme",
        &encode_single_object(&at_window).unwrap(),
    )
    .await
    .unwrap();
    let f = rig
        .eventually(
            "acme-token",
            "/v1/tenants/acme/findings/AISPM-KEY-002:key-b",
            |f| f["status"] == "open",
        )
        .await;
    assert_eq!(f["occurrences"], 1, "{f:#}");
    // Then repo:read used again: nothing left unused, the finding leaves the view.
    let again = used(
        "i7",
        "agent-b",
        "alice",
        T0 + 31 * DAY,
        "key-b",
        &["repo:read"],
    );
    produce(
        &p,
        &t.decisions,
        "acme",
        &encode_single_object(&again).unwrap(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = rig
            .get(
                "acme-token",
                "/v1/tenants/acme/findings/AISPM-KEY-002:key-b",
            )
            .await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "AISPM-KEY-002:key-b never left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Another tenant's token reads nothing of it.
    let (status, _) = rig
        .get("globex-token", "/v1/tenants/acme/agents/agent-a/identity")
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_flows_map_each_class_to_its_destinations_and_agents() {
    let rig = rig().await;
    let p = producer(&rig.broker.bootstrap()).unwrap();
    let t = &rig.topics;
    let registrations = [
        asset("acme", "eu-llm", AssetKind::ModelEndpoint, |a| {
            a.approved_data_classes = vec!["pii".into()];
        }),
        asset("acme", "crm.export", AssetKind::McpTool, |_| {}),
    ];
    for r in registrations {
        produce(&p, &t.registry, "acme", &encode_single_object(&r).unwrap())
            .await
            .unwrap();
    }
    let mut decisions = Vec::new();
    let flow = |tenant: &str, id: &str, agent: &str, to: (&str, &str), classes: &[&str]| {
        let mut d = decision(tenant, id, agent, ActionKind::Model);
        if to.0 == "model_endpoint" {
            d.model_endpoint = Some(to.1.into());
        } else {
            d.action_kind = ActionKind::Mcp;
            d.mcp_server = Some("tools".into());
            d.mcp_tool = Some(to.1.into());
        }
        d.data_classes = classes.iter().map(|c| (*c).to_owned()).collect();
        d
    };
    decisions.push(flow(
        "acme",
        "f1",
        "agent-a",
        ("model_endpoint", "eu-llm"),
        &["pii", "phi"],
    ));
    decisions.push(flow(
        "acme",
        "f2",
        "agent-b",
        ("model_endpoint", "eu-llm"),
        &["pii"],
    ));
    let mut denied = flow(
        "acme",
        "f3",
        "agent-a",
        ("mcp_tool", "crm.export"),
        &["pii"],
    );
    denied.verdict = Verdict::Deny;
    decisions.push(denied);
    decisions.push(flow(
        "acme",
        "f4",
        "agent-b",
        ("mcp_tool", "crm.export"),
        &["secret"],
    ));
    decisions.push(flow(
        "acme",
        "f5",
        "agent-a",
        ("mcp_tool", "web.fetch"),
        &["secret"],
    ));
    decisions.push(flow(
        "acme",
        "f6",
        "agent-b",
        ("mcp_tool", "web.fetch"),
        &["secret"],
    ));
    decisions.push(flow(
        "acme",
        "f7",
        "agent-b",
        ("mcp_tool", "web.fetch"),
        &["secret"],
    ));
    decisions.push(flow(
        "acme",
        "f8",
        "agent-c",
        ("model_endpoint", "eu-llm"),
        &[],
    ));
    decisions.push(flow(
        "globex",
        "g1",
        "agent-a",
        ("model_endpoint", "eu-llm"),
        &["pii"],
    ));
    for d in &decisions {
        produce(
            &p,
            &t.decisions,
            &d.tenant_id,
            &encode_single_object(d).unwrap(),
        )
        .await
        .unwrap();
    }

    let v = rig
        .eventually("acme-token", "/v1/tenants/acme/data-flows", |v| {
            v["flows"].as_array().is_some_and(|f| {
                f.iter()
                    .map(|r| r["decisions"].as_i64().unwrap_or(0))
                    .sum::<i64>()
                    == 8
            })
        })
        .await;
    let rows: Vec<(String, i64, i64, i64, bool, bool)> = v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                format!(
                    "{}/{}/{}",
                    r["data_class"].as_str().unwrap(),
                    r["destination_kind"].as_str().unwrap(),
                    r["destination"].as_str().unwrap()
                ),
                r["decisions"].as_i64().unwrap(),
                r["denied"].as_i64().unwrap(),
                r["agent_count"].as_i64().unwrap(),
                r["registered"].as_bool().unwrap(),
                r["approved"].as_bool().unwrap(),
            )
        })
        .collect();
    let expect = |k: &str, n, d, a, reg, ok| (k.to_owned(), n, d, a, reg, ok);
    assert_eq!(
        rows,
        [
            expect("phi/model_endpoint/eu-llm", 1, 0, 1, true, false),
            expect("pii/mcp_tool/crm.export", 1, 1, 1, true, false),
            expect("pii/model_endpoint/eu-llm", 2, 0, 2, true, true),
            expect("secret/mcp_tool/crm.export", 1, 0, 1, true, false),
            expect("secret/mcp_tool/web.fetch", 3, 0, 2, false, false),
        ],
        "{v:#}"
    );
    // The busiest agent first; the unapproved model endpoint names its finding, which exists.
    let web = &v["flows"][4];
    assert_eq!(web["agents"][0]["agent_id"], "agent-b", "{web:#}");
    assert_eq!(web["agents"][0]["decisions"], 2, "{web:#}");
    assert!(web["finding_id"].is_null(), "{web:#}");
    assert_eq!(v["flows"][0]["finding_id"], "AISPM-DATA-001:eu-llm/phi");
    assert!(v["flows"][2]["finding_id"].is_null());
    let (status, f) = rig
        .get(
            "acme-token",
            "/v1/tenants/acme/findings/AISPM-DATA-001%3Aeu-llm%2Fphi",
        )
        .await;
    assert_eq!(status, 200, "{f:#}");

    // Filters, and pages of one that cover the map without a gap or an overlap.
    let (_, pii) = rig
        .get("acme-token", "/v1/tenants/acme/data-flows?class=pii")
        .await;
    assert_eq!(pii["count"], 2, "{pii:#}");
    let (_, ok) = rig
        .get("acme-token", "/v1/tenants/acme/data-flows?approved=true")
        .await;
    assert_eq!(ok["count"], 1, "{ok:#}");
    assert_eq!(ok["flows"][0]["destination"], "eu-llm");
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let (_, page) = rig
            .get(
                "acme-token",
                &format!("/v1/tenants/acme/data-flows?limit=1{after}"),
            )
            .await;
        for r in page["flows"].as_array().unwrap() {
            paged.push(format!(
                "{}/{}/{}",
                r["data_class"].as_str().unwrap(),
                r["destination_kind"].as_str().unwrap(),
                r["destination"].as_str().unwrap()
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => after = format!("&after={c}"),
            None => break,
        }
    }
    assert_eq!(paged, rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>());

    // Another tenant's flow is its own; a tenant's token does not read another's map.
    let g = rig
        .eventually("globex-token", "/v1/tenants/globex/data-flows", |v| {
            v["count"] == 1
        })
        .await;
    assert_eq!(g["flows"][0]["approved"], false, "{g:#}");
    let (status, _) = rig.get("acme-token", "/v1/tenants/globex/data-flows").await;
    assert_eq!(status, 403);
    let (status, err) = rig
        .get("acme-token", "/v1/tenants/acme/data-flows?limit=0")
        .await;
    assert_eq!(status, 400, "{err:#}");
}

/// Findings rank by risk over HTTP: each finding's score is the hand-computed sum of its
/// factors (`docs/risk.md`), the list comes highest risk first by default, pages of two follow
/// the ranking without a gap or an overlap, `sort=id` keeps the key order, and another
/// tenant's facts about a resource of the same name move nothing.
#[tokio::test(flavor = "multi_thread")]
async fn findings_rank_by_risk_and_show_their_factors() {
    let rig = rig().await;
    let p = producer(&rig.broker.bootstrap()).unwrap();
    let t = &rig.topics;
    for (tenant, crit) in [("acme", Risk::Critical), ("globex", Risk::Low)] {
        // A public endpoint without authentication (AISPM-EP-001) and an agent registered
        // without an owner (AISPM-OWN-001).
        let endpoint = asset(tenant, "pub-llm", AssetKind::ModelEndpoint, |a| {
            a.criticality = Some(crit);
            a.public = Some(true);
            a.auth_required = Some(false);
        });
        let unowned = asset(tenant, "tidy-bot", AssetKind::Agent, |a| {
            a.owner = None;
            a.criticality = Some(Risk::Low);
        });
        for r in [endpoint, unowned] {
            produce(&p, &t.registry, tenant, &encode_single_object(&r).unwrap())
                .await
                .unwrap();
        }
    }
    // An unregistered agent runs a command in production, sending PII to that endpoint from
    // one repo: a shadow agent (AISPM-SHADOW-001) and PII to an endpoint not approved for it
    // (AISPM-DATA-001).
    let mut d = decision("acme", "d-shadow", "shadow-bot", ActionKind::Command);
    d.model_endpoint = Some("pub-llm".into());
    d.repo = Some("acme/api".into());
    d.data_classes = vec!["pii".into()];
    produce(&p, &t.decisions, "acme", &encode_single_object(&d).unwrap())
        .await
        .unwrap();

    let v = rig
        .eventually("acme-token", "/v1/tenants/acme/findings", |v| {
            v["count"].as_u64() == Some(4)
        })
        .await;
    assert_eq!(v["sort"], "risk");
    let ids: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["finding_id"].as_str().unwrap())
        .collect();
    let scores: Vec<i64> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["risk"]["score"].as_i64().unwrap())
        .collect();
    // EP-001: critical 35, critical asset 15, every stage 10, public without auth 10, PII
    // seen 7, a command through it 5. DATA-001: 35 + 15 + production 10 + 10 + PII 7.
    // SHADOW-001: high 25, not registered 10, production 10, not stated 0, PII 7, command 5,
    // one endpoint and one repo 2. OWN-001: medium 15, low 0, every stage 10.
    assert_eq!(
        ids,
        [
            "AISPM-EP-001:pub-llm",
            "AISPM-DATA-001:pub-llm/pii",
            "AISPM-SHADOW-001:shadow-bot",
            "AISPM-OWN-001:tidy-bot"
        ],
        "{v:#}"
    );
    assert_eq!(scores, [82, 77, 59, 25], "{v:#}");
    for f in v["findings"].as_array().unwrap() {
        let factors = f["risk"]["factors"].as_array().unwrap();
        assert_eq!(factors.len(), 7, "{f:#}");
        let sum: i64 = factors.iter().map(|x| x["points"].as_i64().unwrap()).sum();
        assert_eq!(sum, f["risk"]["score"].as_i64().unwrap(), "{f:#}");
    }
    let shadow = find(&v, "findings", "finding_id", "AISPM-SHADOW-001:shadow-bot");
    let blast = shadow["risk"]["factors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["factor"] == "blast_radius")
        .unwrap();
    assert_eq!(
        blast["value"], "0 MCP tools, 1 repo, 1 model endpoint in 30 days",
        "{shadow:#}"
    );

    // Pages of two follow the ranking.
    let (_, first) = rig
        .get("acme-token", "/v1/tenants/acme/findings?limit=2")
        .await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, second) = rig
        .get(
            "acme-token",
            &format!("/v1/tenants/acme/findings?limit=2&after={cursor}"),
        )
        .await;
    let paged: Vec<&str> = first["findings"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["findings"].as_array().unwrap())
        .map(|f| f["finding_id"].as_str().unwrap())
        .collect();
    assert_eq!(paged, ids);
    assert!(second["next_cursor"].is_null(), "{second:#}");

    // By id on request; a sort it does not know is a 400 naming the choices.
    let (_, by_id) = rig
        .get("acme-token", "/v1/tenants/acme/findings?sort=id")
        .await;
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    let got: Vec<&str> = by_id["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["finding_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, sorted);
    let (status, err) = rig
        .get("acme-token", "/v1/tenants/acme/findings?sort=loudest")
        .await;
    assert_eq!(status, 400, "{err:#}");
    let (status, _) = rig
        .get("acme-token", "/v1/tenants/acme/findings?after=zz")
        .await;
    assert_eq!(status, 400);

    // globex: the same endpoint name, registered low, never used: 35 + 0 + 10 + 10.
    let g = rig
        .eventually("globex-token", "/v1/tenants/globex/findings", |v| {
            v["count"].as_u64() == Some(2)
        })
        .await;
    let ep = find(&g, "findings", "finding_id", "AISPM-EP-001:pub-llm");
    assert_eq!(ep["risk"]["score"], 55, "{ep:#}");
    drop(rig.dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_are_dead_lettered_and_the_stream_goes_on() {
    let rig = rig().await;
    let p = producer(&rig.broker.bootstrap()).unwrap();
    let t = &rig.topics;
    // 1. Not Avro at all. 2. A valid record of another type. 3. Valid Avro, invalid content.
    produce(&p, &t.decisions, "acme", b"{\"not\":\"avro\"}")
        .await
        .unwrap();
    let wrong = ApprovalEvent {
        event_id: "ap".into(),
        tenant_id: "acme".into(),
        occurred_at: Timestamp(T0),
        source: "s".into(),
        kind: ApprovalKind::FindingResolved,
        decision_id: None,
        finding_id: Some("f".into()),
        control_id: None,
        exception_id: None,
        actor: "a".into(),
        owner: None,
        reason: None,
        due_at: None,
        expires_at: None,
    };
    produce(
        &p,
        &t.decisions,
        "acme",
        &encode_single_object(&wrong).unwrap(),
    )
    .await
    .unwrap();
    let invalid = decision("acme/evil", "d-bad", "agent", ActionKind::File);
    produce(
        &p,
        &t.decisions,
        "acme",
        &encode_single_object(&invalid).unwrap(),
    )
    .await
    .unwrap();
    // The partition is not blocked: a good record after them is applied.
    produce(
        &p,
        &t.decisions,
        "acme",
        &encode_single_object(&decision("acme", "d-ok", "agent-after", ActionKind::File)).unwrap(),
    )
    .await
    .unwrap();
    rig.eventually("acme-token", "/v1/tenants/acme/coverage?kind=agent", |v| {
        has(v, "coverage", "id", "agent-after")
    })
    .await;

    let dead = read_all(&rig.broker.bootstrap(), &t.dlq, 3, Duration::from_secs(30)).unwrap();
    assert_eq!(dead.len(), 3, "three dead letters");
    let header = |r: &aispm_tests::kafka::Record, k: &str| {
        r.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let mut seen: Vec<(String, String)> = dead
        .iter()
        .map(|r| {
            (
                header(r, dlq_headers::STAGE),
                header(r, dlq_headers::REASON),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("decode".into(), "framing".into()),
            ("decode".into(), "incompatible_schema".into()),
            ("validate".into(), "invalid_field".into())
        ]
    );
    for r in &dead {
        assert_eq!(header(r, dlq_headers::SOURCE_TOPIC), t.decisions);
        assert!(header(r, dlq_headers::SOURCE_OFFSET).parse::<i64>().is_ok());
        assert!(!header(r, dlq_headers::ERROR).is_empty());
        assert_eq!(r.key.as_deref(), Some(&b"acme"[..]), "original key kept");
    }
    assert!(
        dead.iter()
            .any(|r| r.value.as_deref() == Some(&b"{\"not\":\"avro\"}"[..])),
        "original bytes kept"
    );
    let validate = dead
        .iter()
        .find(|r| header(r, dlq_headers::STAGE) == "validate")
        .unwrap();
    assert!(header(validate, dlq_headers::ERROR).contains("tenant_id"));
    let metrics = rig
        .client
        .get(format!("{}/metrics", rig.projector.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("aispm_projector_dead_letters_total"),
        "{metrics}"
    );
}

/// The size policy's poison pill: a record over `limits::MAX_EVENT_BYTES` on an input topic
/// (created by hand with a higher limit than aispm's) is dead-lettered by reference, and every
/// other record of every tenant, before and after it on the same partition, is applied.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_record_is_dead_lettered_by_reference_and_the_stream_goes_on() {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    use sha2::{Digest, Sha256};

    let rig = rig().await;
    let t = &rig.topics;
    let brokers = rig.broker.bootstrap();
    let mut big = decision("acme", "d-pill", "agent-pill", ActionKind::File);
    big.data_classes = (0..120_000).map(|i| format!("class-{i}")).collect();
    let pill = encode_single_object(&big).unwrap();
    assert!(pill.len() > 1_048_588, "{} bytes", pill.len());
    let mut wide = aispm_runtime::kafka::KafkaConfig::local(&brokers).producer_config();
    wide.set("message.max.bytes", "4000000");
    let wide: rdkafka::producer::FutureProducer = wide.create().unwrap();

    // The topics aispm creates refuse it at the door.
    let refused = produce(&wide, &t.decisions, "acme", &pill).await;
    assert!(refused.is_err(), "the broker took an oversized record");
    println!(
        "size policy: a {}-byte record refused by the topic aispm created: {:?}",
        pill.len(),
        refused.err().map(|e| e.to_string())
    );

    // An operator raised the topic's limit by hand: the record gets in.
    let admin: AdminClient<DefaultClientContext> =
        aispm_runtime::kafka::KafkaConfig::local(&brokers)
            .client_config()
            .create()
            .unwrap();
    let raised = AlterConfig::new(ResourceSpecifier::Topic(&t.decisions))
        .set("max.message.bytes", "4000000")
        .set("retention.ms", "-1");
    let altered = admin
        .alter_configs(&[raised], &AdminOptions::new())
        .await
        .unwrap();
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");

    let ok = |tenant: &str, id: &str, agent: &str| {
        encode_single_object(&decision(tenant, id, agent, ActionKind::File)).unwrap()
    };
    produce(
        &wide,
        &t.decisions,
        "acme",
        &ok("acme", "d-1", "agent-before"),
    )
    .await
    .unwrap();
    let mut placed = None;
    for attempt in 0..30 {
        match produce(&wide, &t.decisions, "acme", &pill).await {
            Ok(at) => {
                placed = Some(at);
                break;
            }
            // The new limit reaches the partition leader a moment after the answer.
            Err(e) if attempt < 29 => {
                eprintln!("retrying the pill: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the raised topic still refuses the pill: {e}"),
        }
    }
    let (partition, offset) = placed.unwrap();
    let after = Instant::now();
    produce(
        &wide,
        &t.decisions,
        "acme",
        &ok("acme", "d-2", "agent-after"),
    )
    .await
    .unwrap();
    produce(
        &wide,
        &t.decisions,
        "globex",
        &ok("globex", "d-3", "agent-globex"),
    )
    .await
    .unwrap();
    rig.eventually("acme-token", "/v1/tenants/acme/coverage?kind=agent", |v| {
        has(v, "coverage", "id", "agent-before") && has(v, "coverage", "id", "agent-after")
    })
    .await;
    rig.eventually(
        "globex-token",
        "/v1/tenants/globex/coverage?kind=agent",
        |v| has(v, "coverage", "id", "agent-globex"),
    )
    .await;
    let flowing = after.elapsed();
    let (_, acme) = rig
        .get("acme-token", "/v1/tenants/acme/coverage?kind=agent")
        .await;
    assert!(
        !has(&acme, "coverage", "id", "agent-pill"),
        "the oversized record was applied: {acme:#}"
    );

    let dead = read_all(&brokers, &t.dlq, 1, Duration::from_secs(30)).unwrap();
    assert_eq!(dead.len(), 1, "one dead letter");
    let r = &dead[0];
    let header = |k: &str| {
        r.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    assert_eq!(header(dlq_headers::REASON), "record_too_large");
    assert_eq!(header(dlq_headers::STAGE), "validate");
    assert_eq!(header(dlq_headers::RECORD), "by_reference");
    assert_eq!(header(dlq_headers::SOURCE_TOPIC), t.decisions);
    assert_eq!(header(dlq_headers::SOURCE_PARTITION), partition.to_string());
    assert_eq!(header(dlq_headers::SOURCE_OFFSET), offset.to_string());
    assert_eq!(header(dlq_headers::VALUE_BYTES), pill.len().to_string());
    assert_eq!(
        header(dlq_headers::VALUE_SHA256),
        hex::encode(Sha256::digest(&pill))
    );
    assert!(r.value.is_none(), "the pill travels by reference");
    println!(
        "size policy: a {}-byte pill dead-lettered by reference ({} bytes of headers); both tenants' next records applied {} ms after it",
        pill.len(),
        r.headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>(),
        flowing.as_millis()
    );
}
