//! The reporter end to end against a real broker (Apache Kafka), a real SMTP server (Python's
//! aiosmtpd) and a real browser (headless Chromium). The views, blockers, readiness and registry
//! records the projector and gatekeeper would publish are produced here directly.
//!
//! Needs the binary: `cargo build -p aispm-reporter`.

#![allow(clippy::unwrap_used)]

use aispm_reporter::minisign;
use aispm_reporter::packet::{self, PacketFile};
use aispm_reporter::sign::Signer;
use aispm_schemas::{
    ApprovalMonth, Asset, AssetKind, Blocker, BlockerKind, Codec, ControlRow, ControlState,
    CoverageKind, CoverageRow, Environment, EvidenceRow, ExceptionKind, ExceptionRow, FindingRow,
    FindingStatus, PolicyUse, Readiness, RegistryEvent, ReportDeliveryEvent, Risk, SignatureState,
    Stage, Timestamp, Topics, ValidationRow, ViewChange, ViewOp, ViewRow,
};
use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::kafka::{create_contract_topics, produce, producer, random_prefix, read_all};
use aispm_tests::process::{Service, binary};
use aispm_tests::webhooks::WebhookSink;
use rdkafka::producer::FutureProducer;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const ACME_TOKEN: &str = "acme-token";
const GLOBEX_TOKEN: &str = "globex-token";
/// acme's ticketing system: it may request packets, and read nothing.
const REQUEST_ONLY_TOKEN: &str = "acme-requests-token";
const RECIPIENTS: [&str; 2] = ["ciso@acme.example", "board@acme.example"];

/// A real SMTP server that saves every message it accepts: `msg-N.json` (envelope, headers,
/// attachments with their SHA-256) and the attachments' bytes.
const SMTP_SINK: &str = include_str!("../../scripts/smtp_sink.py");

struct SmtpSink {
    child: Child,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    fn start(port: u16) -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("sink.py");
        std::fs::write(&script, SMTP_SINK).unwrap();
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (scripts/setup.sh installs python3-aiosmtpd)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
        SmtpSink { child, dir }
    }

    fn messages(&self) -> Vec<Value> {
        let mut v: Vec<(u32, Value)> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                let n: u32 = name
                    .strip_prefix("msg-")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                let text = std::fs::read_to_string(self.dir.path().join(&name)).ok()?;
                Some((n, serde_json::from_str(&text).ok()?))
            })
            .collect();
        v.sort_by_key(|m| m.0);
        v.into_iter().map(|m| m.1).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ts(ms: i64) -> Timestamp {
    Timestamp(ms)
}

async fn view(p: &FutureProducer, topics: &Topics, tenant: &str, key: &str, row: ViewRow) {
    let vc = ViewChange {
        tenant_id: tenant.into(),
        view: row.view(),
        key: key.into(),
        op: ViewOp::Upsert,
        row: Some(row),
        changed_at: Timestamp::now(),
        cause_event_id: format!("cause-{key}"),
    };
    let k = format!("{tenant}/{}/{key}", vc.view);
    produce(p, &topics.views, &k, &Codec::new().encode(&vc).unwrap())
        .await
        .unwrap();
}

fn coverage(
    kind: CoverageKind,
    id: &str,
    registered: bool,
    decisions: i64,
    synthetic: i64,
    now: i64,
) -> ViewRow {
    ViewRow::Coverage(
        CoverageRow {
            asserted_by: None,
            kind,
            id: id.into(),
            registered,
            retired: false,
            owner: registered.then(|| "platform-team".into()),
            trust: None,
            decisions,
            synthetic_decisions: synthetic,
            first_seen: Some(ts(now - 20 * DAY)),
            last_seen: Some(ts(now - HOUR)),
            last_decision_id: Some(format!("d-{id}")),
            last_real_decision_id: (decisions > synthetic).then(|| format!("d-{id}")),
            shadow_ai: !registered && decisions > 0,
            environments: vec![],
        }
        .only_in(Environment::Production),
    )
}

#[allow(clippy::too_many_arguments)]
fn finding(
    id: &str,
    title: &str,
    severity: Risk,
    owner: Option<&str>,
    opened: i64,
    due: Option<i64>,
    closed: Option<i64>,
    frameworks: &[&str],
) -> ViewRow {
    ViewRow::Finding(FindingRow {
        asserted_by: None,
        finding_id: id.into(),
        rule_id: id.split(':').next().unwrap().into(),
        title: title.into(),
        severity,
        status: if closed.is_some() {
            FindingStatus::Closed
        } else {
            FindingStatus::Open
        },
        subject: id.split(':').nth(1).unwrap_or("x").into(),
        owner: owner.map(Into::into),
        due_at: due.map(ts),
        opened_at: ts(opened),
        closed_at: closed.map(ts),
        resolution: closed.map(|_| "fixed".into()),
        frameworks: frameworks.iter().map(|f| (*f).into()).collect(),
        event_ids: vec![format!("d-{id}")],
        occurrences: 1,
        exception_id: None,
        exception_expires_at: None,
        first_occurrence_at: ts(opened),
        last_occurrence_at: ts(opened),
        environments: Vec::new(),
        risk: Default::default(),
    })
}

/// The posture of tenant `acme` as the projector and gatekeeper would publish it, plus its
/// registered report provider and (optionally) the reporter's key as a trust root.
async fn seed(brokers: &str, topics: &Topics, tenant: &str, trust_root: Option<&str>) {
    let p = producer(brokers).unwrap();
    let now = Timestamp::now().0;
    let codec = Codec::new();
    let mut assets = vec![Asset {
        owner: Some("secops".into()),
        recipients: RECIPIENTS.iter().map(|r| (*r).into()).collect(),
        ..Asset::registered(AssetKind::ReportProvider, "smtp-main")
    }];
    if let Some(key) = trust_root {
        let mut a = assets[0].clone();
        a.asset_kind = AssetKind::TrustRoot;
        a.asset_id = "reporter-key".into();
        a.recipients = vec![];
        a.public_key = Some(key.into());
        assets.push(a);
    }
    for (i, asset) in assets.into_iter().enumerate() {
        let e = RegistryEvent {
            event_id: format!("reg-{tenant}-{i}"),
            tenant_id: tenant.into(),
            occurred_at: ts(now - DAY),
            source: "test".into(),
            asset: Some(asset),
            validation: None,
        };
        produce(&p, &topics.registry, tenant, &codec.encode(&e).unwrap())
            .await
            .unwrap();
    }

    for (key, row) in [
        (
            "agent/a1",
            coverage(CoverageKind::Agent, "a1", true, 10, 0, now),
        ),
        (
            "agent/shadow-bot",
            coverage(CoverageKind::Agent, "shadow-bot", false, 3, 0, now),
        ),
        (
            "action_path/file",
            coverage(CoverageKind::ActionPath, "file", false, 6, 1, now),
        ),
        (
            "action_path/command",
            coverage(CoverageKind::ActionPath, "command", false, 4, 0, now),
        ),
        (
            "action_path/git",
            coverage(CoverageKind::ActionPath, "git", false, 2, 0, now),
        ),
        (
            "action_path/mcp",
            coverage(CoverageKind::ActionPath, "mcp", false, 5, 5, now),
        ),
    ] {
        view(&p, topics, tenant, key, row).await;
    }
    let control = |id: &str, state, decisions: &[&str], frameworks: &[&str]| {
        ViewRow::Control(
            ControlRow {
                asserted_by: None,
                control_id: id.into(),
                state,
                registered: true,
                enforced_decisions: if state == ControlState::Enforced {
                    decisions.len() as i64
                } else {
                    0
                },
                shadow_decisions: if state == ControlState::Shadowed {
                    decisions.len() as i64
                } else {
                    0
                },
                high_risk_decisions: 1,
                action_kinds: vec!["file".into()],
                framework_mappings: frameworks.iter().map(|f| (*f).into()).collect(),
                decision_ids: decisions.iter().map(|d| (*d).into()).collect(),
                last_decision_at: Some(ts(now - HOUR)),
                environments: vec![],
                // The shadowed control enforced 3 days ago (drift to shadow); the enforced one
                // moved to a new policy 5 days ago (the CSO report's monthly review).
                last_enforced_at: (state == ControlState::Shadowed).then(|| ts(now - 3 * DAY)),
                policies: if state == ControlState::Enforced {
                    [("pol-2025", 60), ("pol-2026", 5)]
                        .map(|(p, days)| PolicyUse {
                            policy_id: p.into(),
                            first_seen_at: ts(now - days * DAY),
                            last_seen_at: ts(now - HOUR),
                            decisions: 1,
                        })
                        .to_vec()
                } else {
                    vec![]
                },
                // The enforced control's requests for approval: 5 last month; 3 this month,
                // granted after 2 and 10 minutes and one pending (the monthly review's
                // approval trends).
                approvals: if state == ControlState::Enforced {
                    let this = aispm_schemas::views::month_index(now);
                    let mut months = [(this - 1, 5, &[][..]), (this, 3, &[120_000, 600_000][..])]
                        .map(|(m, requested, answers)| {
                            let mut month = ApprovalMonth {
                                month: aispm_schemas::views::month_name(m),
                                requested,
                                ..ApprovalMonth::default()
                            };
                            for ms in answers {
                                month.count_answer(*ms, true, 1);
                            }
                            month
                        })
                        .to_vec();
                    months[0].count_answer(30_000, false, 1);
                    months
                } else {
                    vec![]
                },
            }
            .only_in(Environment::Production),
        )
    };
    for (key, row) in [
        (
            "ctl-file-write",
            control(
                "ctl-file-write",
                ControlState::Enforced,
                &["d-1", "d-2"],
                &["SOC2:CC6.1"],
            ),
        ),
        (
            "ctl-mcp-tools",
            control(
                "ctl-mcp-tools",
                ControlState::Shadowed,
                &["d-3"],
                &["SOC2:CC7.2"],
            ),
        ),
        (
            "ctl-git-push",
            control("ctl-git-push", ControlState::Missing, &[], &["SOC2:CC8.1"]),
        ),
    ] {
        view(&p, topics, tenant, key, row).await;
    }
    for (key, row) in [
        (
            "AISPM-OWN-001:agent-7",
            finding(
                "AISPM-OWN-001:agent-7",
                "Critical command without an owner",
                Risk::Critical,
                None,
                now - 2 * DAY,
                None,
                None,
                &["SOC2:CC7.2"],
            ),
        ),
        (
            "shadow_ai:shadow-bot",
            finding(
                "shadow_ai:shadow-bot",
                "Unregistered agent acting",
                Risk::High,
                Some("alice"),
                now - 10 * DAY,
                Some(now - DAY),
                None,
                &[],
            ),
        ),
        (
            "AISPM-DATA-001:a1",
            finding(
                "AISPM-DATA-001:a1",
                "Secret sent to a model",
                Risk::High,
                Some("bob"),
                now - 9 * DAY,
                Some(now - 5 * DAY),
                Some(now - 8 * DAY),
                &[],
            ),
        ),
        (
            "AISPM-EV-002:a1",
            finding(
                "AISPM-EV-002:a1",
                "Unsigned evidence",
                Risk::Critical,
                Some("carol"),
                now - 8 * DAY,
                Some(now - 7 * DAY),
                Some(now - 5 * DAY),
                &[],
            ),
        ),
        (
            "risky_tool:fs",
            finding(
                "risky_tool:fs",
                "Risky MCP tool in use",
                Risk::Medium,
                Some("dave"),
                now - 4 * DAY,
                Some(now + 10 * DAY),
                None,
                &[],
            ),
        ),
    ] {
        view(&p, topics, tenant, key, row).await;
    }
    let exception =
        |id: &str, kind, finding: Option<&str>, expires: Option<i64>, reviewed: Option<i64>| {
            ViewRow::Exception(ExceptionRow {
                asserted_by: None,
                exception_id: id.into(),
                kind,
                finding_id: finding.map(Into::into),
                control_id: None,
                decision_id: Some("d-9".into()),
                owner: Some("dave".into()),
                actor: Some("oncall".into()),
                reason: Some("vendor fix pending".into()),
                granted_at: ts(now - 6 * DAY),
                expires_at: expires.map(ts),
                revoked: false,
                reviewed_at: reviewed.map(ts),
                reviewed_by: reviewed.map(|_| "ciso".into()),
                event_ids: vec![format!("ap-{id}")],
            })
        };
    for (key, row) in [
        (
            "exc-risky-tool",
            exception(
                "exc-risky-tool",
                ExceptionKind::Exception,
                Some("risky_tool:fs"),
                Some(now + 20 * DAY),
                None,
            ),
        ),
        (
            "bg-1",
            exception("bg-1", ExceptionKind::BreakGlass, None, None, None),
        ),
    ] {
        view(&p, topics, tenant, key, row).await;
    }
    // One item per stage's environment: each packet's freshness check reads its stage's.
    let evidence = |id: &str, decision: &str, state, env| {
        ViewRow::Evidence(EvidenceRow {
            asserted_by: None,
            evidence_id: id.into(),
            event_id: decision.into(),
            sha256: format!("{:0>64}", id.len()),
            uri: format!("s3://evidence/{id}"),
            signature_state: state,
            key_id: Some("gw-key".into()),
            recorded_at: ts(now - 2 * HOUR),
            synthetic: false,
            action_kind: Some("file".into()),
            environment: Some(env),
            agent_id: None,
            control_id: None,
        })
    };
    for (key, row) in [
        (
            "ev-1",
            evidence(
                "ev-1",
                "d-1",
                SignatureState::Verified,
                Environment::Production,
            ),
        ),
        (
            "ev-2",
            evidence("ev-2", "d-2", SignatureState::Verified, Environment::Pilot),
        ),
        (
            "ev-3",
            evidence("ev-3", "d-3", SignatureState::Unsigned, Environment::Trial),
        ),
    ] {
        view(&p, topics, tenant, key, row).await;
    }
    for (key, check, result) in [
        ("tenant_isolation/-", "tenant_isolation", "pass"),
        ("connector_live/crm", "connector_live", "fail"),
    ] {
        let row = ViewRow::Validation(ValidationRow {
            asserted_by: None,
            check_kind: check.into(),
            subject: key.split('/').nth(1).filter(|s| *s != "-").map(Into::into),
            result: result.into(),
            evidence_id: Some(format!("val-{check}")),
            validated_at: ts(now - 3 * HOUR),
            event_id: format!("reg-val-{check}"),
            detail: None,
            environment: Some(Environment::Production),
            signature_state: SignatureState::Verified,
            key_id: Some("validator-key".into()),
        });
        view(&p, topics, tenant, key, row).await;
    }

    let blocker = |stage, id: &str, kind, evidence: &[&str]| Blocker {
        tenant_id: tenant.into(),
        stage,
        blocker_id: id.into(),
        kind,
        meaning: format!("meaning of {kind}"),
        resolution: format!("resolve {kind}"),
        subject: None,
        evidence: evidence.iter().map(|e| (*e).into()).collect(),
        detected_at: ts(now - HOUR),
    };
    for b in [
        blocker(
            Stage::Pilot,
            "missing_live_connector_evidence",
            BlockerKind::MissingLiveConnectorEvidence,
            &["val-connector_live"],
        ),
        blocker(
            Stage::Production,
            "missing_live_connector_evidence",
            BlockerKind::MissingLiveConnectorEvidence,
            &["val-connector_live"],
        ),
        blocker(
            Stage::Production,
            "report_delivery_unverified",
            BlockerKind::ReportDeliveryUnverified,
            &[],
        ),
        blocker(
            Stage::Production,
            "critical_finding_unowned",
            BlockerKind::CriticalFindingUnowned,
            &["AISPM-OWN-001:agent-7"],
        ),
        blocker(
            Stage::Production,
            "runtime_workflow_synthetic_only",
            BlockerKind::RuntimeWorkflowSyntheticOnly,
            &["ev-3"],
        ),
    ] {
        produce(&p, &topics.blockers, &b.key(), &codec.encode(&b).unwrap())
            .await
            .unwrap();
    }
    // A resolved blocker: published, then tombstoned.
    let gone = blocker(
        Stage::Trial,
        "evidence_stale",
        BlockerKind::EvidenceStale,
        &[],
    );
    produce(
        &p,
        &topics.blockers,
        &gone.key(),
        &codec.encode(&gone).unwrap(),
    )
    .await
    .unwrap();
    p.send(
        rdkafka::producer::FutureRecord::<str, [u8]>::to(&topics.blockers).key(&gone.key()),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    for (stage, ready, blockers) in [
        (Stage::Trial, true, 0),
        (Stage::Pilot, false, 1),
        (Stage::Production, false, 4),
    ] {
        let r = Readiness {
            tenant_id: tenant.into(),
            stage,
            ready,
            blocker_ids: (0..blockers).map(|i| format!("b{i}")).collect(),
            evaluated_at: ts(now - HOUR),
        };
        produce(&p, &topics.readiness, &r.key(), &codec.encode(&r).unwrap())
            .await
            .unwrap();
    }
}

struct Setup {
    broker: Broker,
    topics: Topics,
    reporter: Service,
    dirs: tempfile::TempDir,
    state: PathBuf,
    /// The reporter's arguments, for a restart with other keys.
    args: Vec<String>,
    /// The signing key's base64 public key (a trust_root's form).
    public_key: String,
    key: Key,
}

/// A key made by `aispm-reporter keygen`.
struct Key {
    pem: PathBuf,
    /// The minisign public key file, `<pem>.pub`.
    pub_file: PathBuf,
    /// The minisign public key string (`minisign -P`).
    minisign: String,
    key_id: String,
    /// Base64 of the raw Ed25519 public key.
    base64: String,
}

/// `aispm-reporter keygen`.
fn keygen(path: &Path) -> Key {
    let out = Command::new(binary("aispm-reporter").unwrap())
        .args(["keygen", "--out"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
            .trim()
            .to_owned()
    };
    let key = Key {
        pem: path.to_owned(),
        pub_file: path.with_extension("pub"),
        minisign: field("minisign public key (pin it): "),
        key_id: field("key id: "),
        base64: field("public_key (base64, for a trust_root asset): "),
    };
    // The .pub file is a minisign public key file of that key.
    assert_eq!(
        std::fs::read_to_string(&key.pub_file).unwrap(),
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            key.key_id, key.minisign
        )
    );
    key
}

async fn setup(extra: &[&str], smtp: Option<u16>) -> Setup {
    let broker = Broker::start().unwrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&broker.bootstrap(), &prefix, 2)
        .await
        .unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let key = keygen(&dirs.path().join("reporter-key.pem"));
    let public_key = key.base64.clone();
    seed(&broker.bootstrap(), &topics, "acme", Some(&public_key)).await;
    let tokens = dirs.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[tokens]]\ntoken = \"{ACME_TOKEN}\"\ntenants = [\"acme\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\n\n[[tokens]]\ntoken = \"{GLOBEX_TOKEN}\"\ntenants = [\"globex\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\n\n[[tokens]]\ntoken = \"{REQUEST_ONLY_TOKEN}\"\ntenants = [\"acme\"]\nscopes = [\"reports\"]\n"
        ),
    )
    .unwrap();
    let state = dirs.path().join("state");
    let mut args: Vec<String> = vec![
        "--brokers".into(),
        broker.bootstrap(),
        "--topic-prefix".into(),
        prefix,
        "--partitions".into(),
        "2".into(),
        "--state-dir".into(),
        state.display().to_string(),
        "--tokens-file".into(),
        tokens.display().to_string(),
        "--signing-key".into(),
        key.pem.display().to_string(),
        "--smtp-from".into(),
        "aispm reporter <reports@aispm.example>".into(),
    ];
    if let Some(port) = smtp {
        args.push("--smtp-url".into());
        args.push(format!("smtp://127.0.0.1:{port}"));
        args.push("--smtp-timeout".into());
        args.push("5s".into());
    }
    if !extra.contains(&"--schedule") {
        args.extend(["--schedule".into(), "none".into()]);
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut reporter = Service::start("aispm-reporter", &addr, &args, dirs.path()).unwrap();
    reporter.wait_ready(Duration::from_secs(60)).await.unwrap();
    Setup {
        broker,
        topics,
        reporter,
        dirs,
        state,
        args,
        public_key,
        key,
    }
}

async fn post_report(s: &Setup, token: &str, tenant: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/tenants/{tenant}/reports", s.reporter.http))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get_report(s: &Setup, id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/v1/tenants/acme/reports/{id}", s.reporter.http))
        .bearer_auth(ACME_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn delivery_events(s: &Setup, at_least: usize) -> Vec<ReportDeliveryEvent> {
    read_all(
        &s.broker.bootstrap(),
        &s.topics.report_deliveries,
        at_least,
        Duration::from_secs(10),
    )
    .unwrap()
    .into_iter()
    .map(|r| {
        assert_eq!(r.key.as_deref(), Some(&b"acme"[..]), "keyed by tenant");
        Codec::new().decode(&r.value.unwrap()).unwrap()
    })
    .collect()
}

fn run_verify(path: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(binary("aispm-reporter").unwrap())
        .arg("verify")
        .arg(path)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Debian's `minisign -V` on `file` (the signature `-x sig`, default `<file>.minisig`).
fn minisign_verify(file: &Path, sig: Option<&Path>, key: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("minisign");
    cmd.arg("-Vm").arg(file).args(key);
    if let Some(sig) = sig {
        cmd.arg("-x").arg(sig);
    }
    let out = cmd
        .output()
        .expect("Debian's minisign (scripts/setup.sh installs it: apt-get install minisign)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `aispm-reporter verify` with its exit code.
fn run_verify_code(path: &Path, extra: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(binary("aispm-reporter").unwrap())
        .arg("verify")
        .arg(path)
        .args(extra)
        .env_remove("AISPM_REPORTER_PUBLIC_KEY")
        .env_remove("AISPM_REPORTER_KEYS_FILE")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reporter_mails_a_signed_packet_to_approved_recipients_and_records_the_delivery() {
    let smtp_port = free_port();
    let sink = SmtpSink::start(smtp_port);
    let s = setup(&[], Some(smtp_port)).await;

    // A tenant's token never generates or reads another tenant's reports.
    let (status, _) = post_report(&s, GLOBEX_TOKEN, "acme", json!({"type": "cso"})).await;
    assert_eq!(status, 403);
    let (status, _) = post_report(&s, ACME_TOKEN, "acme", json!({"type": "weekly_thing"})).await;
    assert_eq!(status, 400);
    // Never mails anyone the tenant has not approved.
    let (status, body) = post_report(
        &s,
        ACME_TOKEN,
        "acme",
        json!({"type": "cso", "recipients": ["attacker@evil.example"]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(sink.messages().is_empty());
    // A packet as of a past instant reads the tenant's past state with the caller's token: a
    // token that may request packets but not read is refused before anything is read, and a
    // lie about the instant (not RFC 3339, or in the future) is the caller's error.
    let past = json!({"type": "production_readiness", "as_of": "2026-01-01T00:00:00Z"});
    let (status, body) = post_report(&s, REQUEST_ONLY_TOKEN, "acme", past).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("read"), "{body}");
    for (at, why) in [
        ("yesterday", "as_of"),
        ("2999-01-01T00:00:00Z", "in the future"),
    ] {
        let (status, body) = post_report(
            &s,
            ACME_TOKEN,
            "acme",
            json!({"type": "production_readiness", "as_of": at}),
        )
        .await;
        assert_eq!(status, 400, "{at}: {body}");
        assert!(body["message"].as_str().unwrap().contains(why), "{body}");
    }
    assert!(
        sink.messages().is_empty(),
        "no refused request mailed anything"
    );

    let (status, report) = post_report(
        &s,
        ACME_TOKEN,
        "acme",
        json!({"type": "production_readiness"}),
    )
    .await;
    assert_eq!(status, 201, "{report}");
    let id = report["id"].as_str().unwrap().to_owned();
    let packet_sha = report["packet"]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(report["delivery"]["status"], "delivered");
    assert_eq!(report["delivery"]["channel"], "smtp");
    assert_eq!(report["delivery"]["approved_recipients"], true);
    assert_eq!(report["manifest"]["signer"]["key_id"], "reporter-key");
    assert!(
        report["delivery"]["server_response"]
            .as_str()
            .unwrap()
            .starts_with("250"),
        "{report}"
    );

    // The mail: to the approved recipients, with the packet attached, byte for byte.
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let m = &msgs[0];
    let mut rcpt: Vec<&str> = m["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    rcpt.sort_unstable();
    assert_eq!(rcpt, ["board@acme.example", "ciso@acme.example"]);
    assert_eq!(m["mail_from"], "reports@aispm.example");
    assert!(
        m["subject"]
            .as_str()
            .unwrap()
            .contains("Production readiness packet")
    );
    assert_eq!(m["message_id"], report["delivery"]["message_id"]);
    let att = &m["attachments"][0];
    assert_eq!(att["filename"], format!("{id}.zip"));
    assert_eq!(att["content_type"], "application/zip");
    assert_eq!(
        att["sha256"],
        packet_sha.as_str(),
        "attachment hash = packet hash"
    );
    assert!(m["body"].as_str().unwrap().contains(&packet_sha));
    // The mail names the signing key's fingerprint, and attaches the archive's signature.
    let body = m["body"].as_str().unwrap();
    assert!(
        body.contains(&format!("by the aispm reporter's key {}", s.key.key_id)),
        "{body}"
    );
    assert!(
        body.contains(&format!("minisign -Vm {id}.zip -P ")),
        "{body}"
    );
    assert_eq!(report["minisign"]["key_id"], s.key.key_id.as_str());
    let sig_att = &m["attachments"][1];
    assert_eq!(sig_att["filename"], format!("{id}.zip.minisig"));

    // The attachment verifies: signature, every file's hash against the manifest, every byte.
    let attachment = PathBuf::from(att["path"].as_str().unwrap());
    // With Debian's minisign, as a recipient would: the signature lies beside the archive.
    assert_eq!(
        PathBuf::from(sig_att["path"].as_str().unwrap()),
        PathBuf::from(format!("{}.minisig", attachment.display()))
    );
    let (ok, out) = minisign_verify(&attachment, None, &["-P", &s.key.minisign]);
    assert!(ok, "{out}");
    let (ok, out) = run_verify(
        &attachment,
        &["--public-key", &s.public_key, "--sha256", &packet_sha],
    );
    assert!(ok, "{out}");
    let manifest_sha = report["manifest_sha256"].as_str().unwrap();
    assert!(
        out.contains(&format!("manifest sha256 {manifest_sha}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("archive sha256 {packet_sha}")),
        "{out}"
    );

    // The delivery event: delivered, approved recipients, message id, packet hash, and the
    // signed manifest as evidence.
    let events = delivery_events(&s, 1);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.event_id, format!("{id}/attempt/1"));
    assert_eq!(e.report_id, id);
    assert_eq!(e.outcome.as_str(), "delivered");
    assert_eq!(e.channel.as_str(), "smtp");
    assert!(e.approved_recipients);
    assert_eq!(e.attempt, 1);
    assert_eq!(e.packet_sha256, packet_sha);
    assert_eq!(e.message_id.as_deref(), m["message_id"].as_str());
    assert!(e.server_response.as_deref().unwrap().starts_with("250"));
    let mut recipients = e.recipients.clone();
    recipients.sort();
    assert_eq!(recipients, ["board@acme.example", "ciso@acme.example"]);
    let ev = e.evidence.as_ref().unwrap();
    assert_eq!(ev.sha256, manifest_sha);
    assert_eq!(ev.key_id.as_deref(), Some("reporter-key"));
    let dir = PathBuf::from(report["packet"]["dir"].as_str().unwrap());
    // Signed by the packet's key over the contract's evidence message: bound to this tenant
    // and evidence id, so it verifies as this evidence and as no other.
    assert_eq!(ev.evidence_id, format!("report/{id}/manifest"));
    let state = |tenant: &str, evidence_id: &str| {
        aispm_schemas::signature::verify(
            &s.public_key,
            tenant,
            evidence_id,
            &ev.sha256,
            ev.signature.as_deref().unwrap(),
        )
    };
    assert_eq!(state("acme", &ev.evidence_id), SignatureState::Verified);
    assert_eq!(
        state("acme", "report/other/manifest"),
        SignatureState::Invalid
    );
    assert_eq!(state("globex", &ev.evidence_id), SignatureState::Invalid);

    // GET answers the same packet.
    let got = get_report(&s, &id).await;
    assert_eq!(got["packet"]["sha256"], packet_sha.as_str());
    assert_eq!(got["delivery"]["status"], "delivered");

    // verify passes on the packet directory and fails on a tampered copy of either form.
    let pin = ["--public-key", s.key.minisign.as_str()];
    let (ok, out) = run_verify(&dir, &pin);
    assert!(ok, "{out}");
    let tampered = s.state.join("tampered");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&dir)
        .arg(&tampered)
        .status()
        .unwrap();
    assert!(status.success());
    flip_byte(&tampered.join("report.html"), 500);
    let (ok, out) = run_verify(&tampered, &pin);
    assert!(!ok, "a changed byte passed verification: {out}");
    assert!(out.contains("report.html changed"), "{out}");
    let tampered_zip = s.state.join("tampered.zip");
    std::fs::copy(&attachment, &tampered_zip).unwrap();
    let len = std::fs::metadata(&tampered_zip).unwrap().len() as usize;
    for at in [40, len / 2, len - 10] {
        std::fs::copy(&attachment, &tampered_zip).unwrap();
        flip_byte(&tampered_zip, at);
        let (ok, out) = run_verify(&tampered_zip, &pin);
        assert!(!ok, "byte {at} changed unnoticed: {out}");
    }
    // A packet signed by another key than the pinned one fails.
    let other = keygen(&s.dirs.path().join("other-key.pem"));
    let (ok, out) = run_verify(&dir, &["--public-key", &other.minisign]);
    assert!(!ok && out.contains("not a trusted key"), "{out}");
}

/// The files of a packet directory other than the manifest and its signatures, by their
/// `/`-separated paths.
fn packet_content(dir: &Path) -> Vec<PacketFile> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(dir)
                .unwrap()
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if ![
                packet::MANIFEST,
                packet::SIGNATURE,
                packet::MANIFEST_MINISIG,
            ]
            .contains(&rel.as_str())
            {
                out.push(PacketFile::new(&rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

async fn signing_keys_route(s: &Setup, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{}/v1/signing-keys", s.reporter.http));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn packets_verify_with_minisign_and_never_against_the_key_they_carry() {
    let s = setup(&[], None).await;
    let (status, report) = post_report(
        &s,
        ACME_TOKEN,
        "acme",
        json!({"type": "production_readiness"}),
    )
    .await;
    assert_eq!(status, 201, "{report}");
    let id = report["id"].as_str().unwrap().to_owned();
    let zip = PathBuf::from(report["packet"]["zip"].as_str().unwrap());
    let dir = PathBuf::from(report["packet"]["dir"].as_str().unwrap());
    assert_eq!(report["minisign"]["key_id"], s.key.key_id.as_str());
    assert_eq!(report["minisign"]["public_key"], s.key.minisign.as_str());

    // The reporter publishes its key: a minisign public key file and the keys document in the
    // packet directory, and GET /v1/signing-keys (for any valid token, never anonymously).
    let out_dir = s.state.join("packets");
    let published = out_dir.join("aispm-reporter.pub");
    assert_eq!(
        std::fs::read_to_string(&published).unwrap(),
        std::fs::read_to_string(&s.key.pub_file).unwrap()
    );
    let keys_json = out_dir.join("signing-keys.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&keys_json).unwrap()).unwrap();
    assert_eq!(doc["current"], s.key.key_id.as_str());
    assert_eq!(doc["keys"].as_array().unwrap().len(), 1);
    assert_eq!(doc["keys"][0]["status"], "current");
    assert_eq!(
        doc["keys"][0]["minisign_public_key"],
        s.key.minisign.as_str()
    );
    assert_eq!(doc["keys"][0]["ed25519_public_key"], s.key.base64.as_str());
    assert_eq!(signing_keys_route(&s, Some(GLOBEX_TOKEN)).await, (200, doc));
    assert_eq!(signing_keys_route(&s, None).await.0, 401);
    assert_eq!(signing_keys_route(&s, Some("forged-token")).await.0, 401);

    // Debian's minisign checks the delivered archive and the manifest with the published key.
    let (ok, out) = minisign_verify(&zip, None, &["-p", published.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("file:{id}.zip\thashed\treport:{id}\ttenant:acme")),
        "the trusted comment names the packet: {out}"
    );
    let (ok, out) = minisign_verify(&dir.join("manifest.json"), None, &["-P", &s.key.minisign]);
    assert!(ok, "{out}");
    let attacker = keygen(&s.dirs.path().join("attacker-key.pem"));
    let (ok, out) = minisign_verify(&zip, None, &["-P", &attacker.minisign]);
    assert!(!ok, "minisign accepted another key: {out}");

    // The attacker repacks the packet: a changed report, every file signed with their own key,
    // which the manifest now carries.
    let mut files = packet_content(&dir);
    for f in &mut files {
        if f.path == "report.html" {
            f.bytes = b"<html>ready_for_aispm_production: true</html>".to_vec();
        }
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let forged = packet::write(
        &s.dirs.path().join("forged"),
        &packet::Meta {
            report_id: &id,
            tenant_id: "acme",
            report_type: "production_readiness",
            generated_at: manifest["generated_at"].as_str().unwrap().to_owned(),
            key_id: "reporter-key",
        },
        files,
        &Signer::load(&attacker.pem).unwrap(),
    )
    .unwrap();
    assert_eq!(forged.manifest.signer.public_key, attacker.base64);

    // Without a pin, verify refuses, for the forgery and the genuine packet alike.
    for p in [&forged.zip, &forged.dir, &zip] {
        let (code, out) = run_verify_code(p, &[], &[]);
        assert_eq!(code, 2, "{out}");
        assert!(
            out.contains("REFUSED") && out.contains("no pinned public key"),
            "{out}"
        );
    }
    let (_, out) = run_verify_code(&forged.zip, &[], &[]);
    assert!(
        out.contains(&format!("says it is signed by key id {}", attacker.key_id)),
        "{out}"
    );

    // With the real key pinned (flag, file, environment or keys file), the forgery fails and
    // the genuine packet verifies.
    type Pin<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let pins: [Pin<'_>; 5] = [
        (vec!["--public-key", s.key.minisign.as_str()], vec![]),
        (vec!["--public-key", published.to_str().unwrap()], vec![]),
        (vec!["--public-key", s.key.base64.as_str()], vec![]),
        (
            vec![],
            vec![("AISPM_REPORTER_PUBLIC_KEY", s.key.minisign.as_str())],
        ),
        (vec!["--keys-file", keys_json.to_str().unwrap()], vec![]),
    ];
    for (args, envs) in &pins {
        for p in [&forged.zip, &forged.dir] {
            let (code, out) = run_verify_code(p, args, envs);
            assert_eq!(code, 1, "{args:?} {envs:?}: {out}");
            assert!(
                out.contains(&format!(
                    "signed by key id {}, which is not a trusted key",
                    attacker.key_id
                )),
                "{out}"
            );
        }
        let (code, out) = run_verify_code(&zip, args, envs);
        assert_eq!(code, 0, "{args:?} {envs:?}: {out}");
        assert!(
            out.contains(&format!("signed by pinned key {}", s.key.key_id)),
            "{out}"
        );
        assert!(out.contains("archive signature"), "{out}");
    }
    // The forgery is otherwise well made: only the pin tells it apart.
    let (code, out) = run_verify_code(&forged.zip, &["--public-key", &attacker.minisign], &[]);
    assert_eq!(code, 0, "{out}");
    let (ok, _) = minisign_verify(&forged.zip, None, &["-P", &s.key.minisign]);
    assert!(!ok);
    // The genuine archive beside the forgery's signature: refused.
    let swapped = s.dirs.path().join("swapped.zip");
    std::fs::copy(&zip, &swapped).unwrap();
    std::fs::copy(
        forged.zip_minisig.as_ref().unwrap(),
        s.dirs.path().join("swapped.zip.minisig"),
    )
    .unwrap();
    let (code, out) = run_verify_code(&swapped, &["--public-key", &s.key.minisign], &[]);
    assert_eq!(code, 1, "{out}");

    // Keys and signatures made by minisign itself: a `minisign -G` public key file is a pin
    // aispm reads (of another key, so the packet fails rather than being refused), and a
    // `minisign -S` signature verifies with aispm's reader.
    let m = s.dirs.path().join("minisign");
    std::fs::create_dir_all(&m).unwrap();
    let (mpub, msec) = (m.join("m.pub"), m.join("m.key"));
    let out = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&mpub)
        .arg("-s")
        .arg(&msec)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, out) = run_verify_code(&zip, &["--keys-file", mpub.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a trusted key"), "{out}");
    let copy = m.join("p.zip");
    std::fs::copy(&zip, &copy).unwrap();
    let out = Command::new("minisign")
        .args(["-S", "-s"])
        .arg(&msec)
        .arg("-m")
        .arg(&copy)
        .args(["-t", "signed by minisign"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = minisign::PublicKey::parse(&std::fs::read_to_string(&mpub).unwrap()).unwrap();
    let v = minisign::verify(
        &[key],
        &std::fs::read(&copy).unwrap(),
        &std::fs::read_to_string(m.join("p.zip.minisig")).unwrap(),
    )
    .unwrap();
    assert_eq!(v.signature.trusted_comment, "signed by minisign");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_publishes_both_keys_and_old_packets_still_verify() {
    let mut s = setup(&[], None).await;
    let (status, old) = post_report(&s, ACME_TOKEN, "acme", json!({"type": "cso"})).await;
    assert_eq!(status, 201, "{old}");
    assert_eq!(old["minisign"]["key_id"], s.key.key_id.as_str());
    let old_zip = PathBuf::from(old["packet"]["zip"].as_str().unwrap());

    // Rotate: a new current key; the old one is published as previous, from its public key
    // file alone.
    assert!(s.reporter.terminate(Duration::from_secs(30)).unwrap());
    let new = keygen(&s.dirs.path().join("reporter-key-2.pem"));
    let mut args = s.args.clone();
    let at = args.iter().position(|a| a == "--signing-key").unwrap();
    args[at + 1] = new.pem.display().to_string();
    args.extend([
        "--previous-signing-key".to_owned(),
        s.key.pub_file.display().to_string(),
    ]);
    let addr = format!("127.0.0.1:{}", free_port());
    s.reporter = Service::start("aispm-reporter", &addr, &args, s.dirs.path()).unwrap();
    s.reporter
        .wait_ready(Duration::from_secs(60))
        .await
        .unwrap();

    // The route and the file list both keys, the new one current.
    let (status, doc) = signing_keys_route(&s, Some(ACME_TOKEN)).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["current"], new.key_id.as_str());
    let listed: Vec<(&str, &str, &str)> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key_id"].as_str().unwrap(),
                k["status"].as_str().unwrap(),
                k["minisign_public_key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (new.key_id.as_str(), "current", new.minisign.as_str()),
            (s.key.key_id.as_str(), "previous", s.key.minisign.as_str()),
        ]
    );
    let out_dir = s.state.join("packets");
    let keys_json = out_dir.join("signing-keys.json");
    let file: Value = serde_json::from_slice(&std::fs::read(&keys_json).unwrap()).unwrap();
    assert_eq!(file, doc);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("aispm-reporter.pub")).unwrap(),
        std::fs::read_to_string(&new.pub_file).unwrap()
    );

    // A new packet is signed by the new key, and by it only.
    let (status, fresh) = post_report(&s, ACME_TOKEN, "acme", json!({"type": "cso"})).await;
    assert_eq!(status, 201, "{fresh}");
    assert_eq!(fresh["minisign"]["key_id"], new.key_id.as_str());
    let fresh_zip = PathBuf::from(fresh["packet"]["zip"].as_str().unwrap());
    let (code, out) = run_verify_code(&fresh_zip, &["--public-key", &new.minisign], &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_verify_code(&fresh_zip, &["--public-key", &s.key.minisign], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(minisign_verify(&fresh_zip, None, &["-P", &new.minisign]).0);
    assert!(!minisign_verify(&fresh_zip, None, &["-P", &s.key.minisign]).0);

    // The old packet still verifies against the old pin (not the new one), with aispm and
    // with minisign.
    let (code, out) = run_verify_code(&old_zip, &["--public-key", &s.key.minisign], &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_verify_code(&old_zip, &["--public-key", &new.minisign], &[]);
    assert_eq!(code, 1, "{out}");
    let (ok, out) = minisign_verify(&old_zip, None, &["-P", &s.key.minisign]);
    assert!(ok, "{out}");
    // Pinning both (the published document as a keys file) verifies both packets.
    for z in [&old_zip, &fresh_zip] {
        let (code, out) = run_verify_code(z, &["--keys-file", keys_json.to_str().unwrap()], &[]);
        assert_eq!(code, 0, "{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_down_records_failed_deliveries_and_retries_until_delivered() {
    let smtp_port = free_port();
    let s = setup(
        &[
            "--retry-initial",
            "1s",
            "--retry-max",
            "2s",
            "--delivery-attempts",
            "20",
        ],
        Some(smtp_port),
    )
    .await;
    let (status, report) = post_report(&s, ACME_TOKEN, "acme", json!({"type": "cso"})).await;
    assert_eq!(status, 202, "generated, not delivered: {report}");
    let id = report["id"].as_str().unwrap().to_owned();
    assert_eq!(report["delivery"]["status"], "retrying");
    assert_eq!(report["delivery"]["outcome"], "failed");
    assert!(
        report["delivery"]["error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{report}"
    );
    assert!(report["delivery"]["next_attempt_at"].is_string());

    // Failures are recorded as failed events (at least two: the first attempt and a retry),
    // and never as delivered.
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let events = delivery_events(&s, 2);
        if events.len() >= 2 || Instant::now() > deadline {
            break events;
        }
    };
    assert!(failed.len() >= 2, "{failed:?}");
    for (i, e) in failed.iter().enumerate() {
        assert_eq!(e.outcome.as_str(), "failed", "{e:?}");
        assert_eq!(e.attempt, i as i32 + 1);
        assert!(e.error.is_some() && e.message_id.is_none());
        assert_eq!(e.report_id, id);
    }

    // The server comes up: the next retry delivers.
    let sink = SmtpSink::start(smtp_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = get_report(&s, &id).await;
        if got["delivery"]["status"] == "delivered" || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(got["delivery"]["status"], "delivered", "{got}");
    let attempts = got["delivery"]["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 3);
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0]["attachments"][0]["sha256"],
        report["packet"]["sha256"]
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let events = loop {
        let events = delivery_events(&s, attempts.len());
        if events.len() >= attempts.len() || Instant::now() > deadline {
            break events;
        }
    };
    let last = events.last().unwrap();
    assert_eq!(last.outcome.as_str(), "delivered");
    assert_eq!(last.attempt as usize, attempts.len());
    assert_eq!(
        events
            .iter()
            .filter(|e| e.outcome.as_str() == "delivered")
            .count(),
        1,
        "{events:?}"
    );
}

/// Headless Chromium's DOM of an HTML file.
fn chromium_dom(html: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn kpi(dom: &str, key: &str) -> String {
    let marker = format!("data-kpi=\"{key}\">");
    let start = dom.find(&marker).unwrap_or_else(|| panic!("no KPI {key}")) + marker.len();
    dom[start..].split('<').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_report_type_renders_in_headless_chromium_with_its_headings_and_numbers() {
    let s = setup(&[], None).await;
    let expectations: &[(&str, &[&str])] = &[
        (
            "cso",
            &[
                "CSO posture report",
                "Posture at a glance",
                "Posture by layer",
                "Readiness by stage",
                "Exception aging",
                "Policy drift",
                "Approval trends",
            ],
        ),
        (
            "ciso",
            &[
                "CISO operational report",
                "Control state",
                "Findings by severity and SLA",
                "Open findings",
                "Owners",
                "Exceptions and aging",
                "Break-glass events",
                "Shadow AI and risky tools",
            ],
        ),
        (
            "board_kpi",
            &[
                "Board KPI pack",
                "Key performance indicators",
                "Trends (8 weeks)",
                "Readiness by stage",
            ],
        ),
        (
            "soc2_evidence",
            &[
                "SOC 2 evidence packet",
                "Control-to-evidence matrix",
                "Framework criteria",
                "Evidence by control",
                "Validations",
            ],
        ),
        (
            "incident_closure",
            &[
                "Incident and closure report",
                "Break-glass events",
                "Findings closed in the period",
                "High-risk findings still open",
                "Closures by week",
            ],
        ),
        (
            "trial_handoff",
            &[
                "Trial evaluator handoff packet",
                "Trial verdict",
                "Action paths: real versus synthetic",
                "Next steps",
            ],
        ),
        (
            "pilot_launch",
            &[
                "Pilot launch board pack",
                "Pilot go/no-go",
                "Pilot scope",
                "Control readiness",
            ],
        ),
        (
            "production_readiness",
            &[
                "Production readiness packet",
                "Verdict",
                "Readiness by stage",
                "Validations",
            ],
        ),
        (
            "blockers_digest",
            &[
                "Daily blockers digest",
                "New blockers (last 24 h)",
                "Open blockers by stage",
                "Failed validations and connectors",
                "Open critical findings",
            ],
        ),
        (
            "coverage_findings",
            &[
                "Weekly coverage and findings review",
                "Coverage",
                "Control state",
                "Open findings",
                "Report readiness",
            ],
        ),
    ];
    let mut delivered = 0;
    for (ty, headings) in expectations {
        let (status, report) = post_report(&s, ACME_TOKEN, "acme", json!({"type": ty})).await;
        assert_eq!(status, 201, "{ty}: {report}");
        delivered += 1;
        assert_eq!(report["delivery"]["channel"], "export");
        assert_eq!(
            report["delivery"]["approved_recipients"], false,
            "an export is no delivery to approved recipients"
        );
        let dir = PathBuf::from(report["packet"]["dir"].as_str().unwrap());
        if let Ok(keep) = std::env::var("AISPM_KEEP_PACKETS") {
            // For a look at the packets after the test: AISPM_KEEP_PACKETS=/some/dir.
            let _ = Command::new("cp")
                .arg("-r")
                .arg(&dir)
                .arg(Path::new(&keep).join(ty))
                .status();
        }
        let dom = chromium_dom(&dir.join("report.html"));
        for h in *headings {
            assert!(
                dom.contains(&format!(">{h}</h")),
                "{ty}: heading '{h}' not rendered"
            );
        }
        // The report path is stated in every packet.
        for h in [
            "Report path checks",
            "Evidence freshness",
            "Trust roots",
            "Blocking findings",
            "Accepted risks",
        ] {
            assert!(
                dom.contains(&format!(">{h}</h")),
                "{ty}: heading '{h}' not rendered"
            );
        }
        assert!(
            dom.contains("data-check=\"freshness\">PASS<"),
            "{ty}: evidence 2 h old is fresh"
        );
        assert!(
            dom.contains(
                "This packet's signing key is a registered trust root (key id reporter-key)"
            ),
            "{ty}"
        );
        assert!(
            dom.contains("AISPM-OWN-001:agent-7"),
            "{ty}: the blocking finding is listed"
        );
        assert!(
            dom.contains("exc-risky-tool") && dom.contains("dave"),
            "{ty}: accepted risk with owner"
        );
        match *ty {
            "board_kpi" => {
                assert_eq!(kpi(&dom, "coverage_pct"), "50%");
                assert_eq!(kpi(&dom, "findings_open_critical"), "1");
                assert_eq!(kpi(&dom, "high_risk_within_sla_pct"), "50%");
                assert_eq!(kpi(&dom, "mean_time_to_remediate_hours"), "48 h");
                assert_eq!(kpi(&dom, "exception_mean_age_days"), "6 d");
                assert!(dom.matches("<svg").count() >= 3, "trend charts");
            }
            "cso" => {
                assert_eq!(kpi(&dom, "findings_open"), "3");
                assert_eq!(kpi(&dom, "enforced_pct"), "33.3%");
                assert!(dom.contains("<svg"));
                // The monthly review: exc-risky-tool, 6 days old, ending in 20.
                assert_eq!(kpi(&dom, "exceptions_in_force"), "1");
                assert_eq!(kpi(&dom, "exceptions_under_30_days"), "1");
                assert_eq!(kpi(&dom, "exceptions_expiring_30_days"), "1");
                assert_eq!(kpi(&dom, "exceptions_expired_unrenewed"), "0");
                let csv = std::fs::read_to_string(dir.join("tables/policy_drift.csv")).unwrap();
                let rows: Vec<&str> = csv.lines().skip(1).collect();
                assert_eq!(rows.len(), 2, "{csv}");
                assert!(
                    rows[0].starts_with("ctl-file-write,policy_changed,")
                        && rows[0].contains(",pol-2025,pol-2026,"),
                    "{csv}"
                );
                assert!(
                    rows[1].starts_with("ctl-mcp-tools,enforced_to_shadow,")
                        && rows[1].contains(",enforced,shadow,d-3"),
                    "{csv}"
                );
                assert!(dom.contains("enforced → shadow mode") && dom.contains("pol-2026"));
                // Approval trends: six months, the seeded ones summed over the controls.
                let trends =
                    std::fs::read_to_string(dir.join("tables/approval_trends.csv")).unwrap();
                let rows: Vec<Vec<&str>> = trends
                    .lines()
                    .skip(1)
                    .map(|l| l.split(',').collect())
                    .collect();
                let tenant_rows: Vec<&Vec<&str>> =
                    rows.iter().filter(|r| r[1].is_empty()).collect();
                assert_eq!(tenant_rows.len(), 6, "{trends}");
                // month, control, requested, granted, denied, pending, median, p90 (the
                // 5-minute and 15-minute buckets). The seeded month is the report's last
                // unless a month ended between the seeding and the report.
                let at = tenant_rows
                    .iter()
                    .position(|r| r[2..] == ["3", "2", "0", "1", "300000", "900000"])
                    .unwrap_or_else(|| panic!("the seeded month in {trends}"));
                assert!(at >= 4, "{trends}");
                assert_eq!(
                    tenant_rows[at - 1][2..6].to_vec(),
                    ["5", "0", "1", "4"],
                    "{trends}"
                );
                if at == 5 {
                    let this = tenant_rows[5][0];
                    assert_eq!(
                        rows[6][..6].to_vec(),
                        [this, "ctl-file-write", "3", "2", "0", "1"],
                        "{trends}"
                    );
                    assert_eq!(rows.len(), 7, "one control had requests: {trends}");
                    assert_eq!(kpi(&dom, "approvals_requested"), "3");
                    assert_eq!(kpi(&dom, "approvals_granted_pct"), "100 %");
                    assert_eq!(kpi(&dom, "approvals_median"), "≤ 5 min");
                    assert_eq!(kpi(&dom, "approvals_pending"), "1");
                }
                assert!(dom.contains("Approval trends"));
                let aging =
                    std::fs::read_to_string(dir.join("tables/exception_aging.csv")).unwrap();
                let row: Vec<&str> = aging.lines().nth(1).unwrap_or("").split(',').collect();
                assert_eq!(
                    [row[0], row[1], row[2], row[4], row[6], row[7]],
                    [
                        "exc-risky-tool",
                        "risky_tool:fs",
                        "dave",
                        "6",
                        "19",
                        "in_force"
                    ],
                    "{aging}"
                );
            }
            "production_readiness" => {
                assert!(dom.contains("ready_for_aispm_production: false"));
                assert!(dom.contains("ready_for_aispm_trial = true"));
                for k in [
                    "missing_live_connector_evidence",
                    "report_delivery_unverified",
                    "critical_finding_unowned",
                    "runtime_workflow_synthetic_only",
                ] {
                    assert!(dom.contains(k), "blocker {k}");
                }
                assert!(
                    !dom.contains("evidence_stale <code>"),
                    "the tombstoned blocker is gone"
                );
                // Each blocker's evidence is resolved: a validation, a finding, an evidence row.
                assert!(dom.contains("connector_live fail"));
                assert!(dom.contains("Critical command without an owner"));
                assert!(dom.contains("signature unsigned"));
            }
            "soc2_evidence" => {
                assert!(dom.contains("SOC2:CC6.1") && dom.contains("ev-1") && dom.contains("ev-2"));
                let csv = std::fs::read_to_string(dir.join("tables/control_evidence_matrix.csv"))
                    .unwrap();
                assert!(
                    csv.lines()
                        .any(|l| l.starts_with("ctl-file-write,enforced,SOC2:CC6.1,2,0,ev-1,d-1,")),
                    "{csv}"
                );
            }
            "trial_handoff" => {
                assert!(dom.contains("ready_for_aispm_trial = true"));
                assert!(
                    dom.contains("<td>mcp</td><td>5</td><td>0</td><td>5</td><td>YES</td>"),
                    "mcp is synthetic only"
                );
            }
            "incident_closure" => {
                assert!(dom.contains("bg-1") && dom.contains("UNREVIEWED"));
                assert!(
                    dom.contains("Secret sent to a model") && dom.contains("Unsigned evidence")
                );
            }
            "blockers_digest" => {
                assert!(dom.contains("report_delivery_unverified"));
                assert!(dom.contains("connector_live"));
            }
            _ => {}
        }
        // The machine-readable document and OCSF export agree with the page.
        let json: Value =
            serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(json["report_type"], *ty);
        assert_eq!(json["kpis"]["findings_open_critical"], 1);
        let ocsf: Value =
            serde_json::from_slice(&std::fs::read(dir.join("ocsf/findings.ocsf.json")).unwrap())
                .unwrap();
        let classes: Vec<i64> = ocsf
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["class_uid"].as_i64().unwrap())
            .collect();
        assert!(
            classes.contains(&2003) && classes.contains(&2004),
            "{ty}: {classes:?}"
        );
        let (ok, out) = run_verify(&dir, &["--public-key", &s.public_key]);
        assert!(ok, "{out}");
    }
    let events = delivery_events(&s, delivered);
    assert_eq!(events.len(), delivered);
    assert!(events.iter().all(|e| e.outcome.as_str() == "delivered"
        && e.channel.as_str() == "export"
        && !e.approved_recipients));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cadence_generates_and_delivers_scheduled_reports() {
    let s = setup(&["--schedule", "every:2s=blockers_digest"], None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = delivery_events(&s, 1);
        if !events.is_empty() || Instant::now() > deadline {
            break events;
        }
    };
    assert!(!events.is_empty(), "no scheduled report within 30 s");
    assert_eq!(events[0].report_type.as_str(), "blockers_digest");
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/v1/tenants/acme/reports", s.reporter.http))
        .bearer_auth(ACME_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = &listed["reports"].as_array().unwrap().last().unwrap();
    let r = get_report(&s, first["id"].as_str().unwrap()).await;
    assert_eq!(r["requested_by"], "cadence:every:2s");
    assert_eq!(r["type"], "blockers_digest");

    // The listing pages newest first: a page at a time, it walks the same reports as one read.
    let http = reqwest::Client::new();
    let list = |query: String| {
        let http = http.clone();
        let url = format!("{}/v1/tenants/acme/reports?{query}", s.reporter.http);
        async move {
            let r = http.get(url).bearer_auth(ACME_TOKEN).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while list("limit=200".into()).await.1["count"].as_u64().unwrap() < 3 {
        assert!(
            Instant::now() < deadline,
            "fewer than 3 scheduled reports in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ids = |page: &Value| -> Vec<String> {
        page["reports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Read the pages first: a report generated meanwhile is newer than every page.
    let mut paged = vec![];
    let (_, mut page) = list("limit=1".into()).await;
    loop {
        assert!(page["count"].as_u64().unwrap() <= 1, "{page}");
        paged.extend(ids(&page));
        let Some(next) = page["next_cursor"].as_str() else {
            break;
        };
        let (status, p) = list(format!("limit=1&before={next}")).await;
        assert_eq!(status, 200, "{p}");
        page = p;
    }
    let (_, whole) = list("limit=200".into()).await;
    let whole = ids(&whole);
    assert!(paged.len() >= 3, "{paged:?}");
    assert_eq!(
        whole[whole.len() - paged.len()..],
        paged[..],
        "newest first, no gaps"
    );
    for bad in ["limit=0", "limit=201", "before=nonsense"] {
        let (status, body) = list(bad.into()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

/// The sum of the reporter's samples of `name` whose labels contain every one of `labels`.
async fn metric_with(s: &Setup, name: &str, labels: &[&str]) -> f64 {
    let text = reqwest::get(format!("{}/metrics", s.reporter.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_reach_a_receiver_that_was_down_signed_and_once_each_and_dead_letter_when_given_up()
 {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const CHAT_SECRET: &str = "whsec_c2xhY2stY2hhbm5lbC1zZWNyZXQtMzItYnl0ZXMh";
    let hooks = tempfile::tempdir().unwrap();
    let port = free_port();
    let nobody = free_port();
    let file = hooks.path().join("webhooks.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[subscription]]
id = "secops"
url = "http://127.0.0.1:{port}/hooks"
secret = "{SECRET}"
events = ["blocker.opened", "blocker.resolved", "readiness.changed", "finding.sla_breached", "report.delivered"]
tenants = ["acme"]
initial_backoff = "1s"
max_backoff = "2s"

[[subscription]]
id = "chat"
url = "http://127.0.0.1:{port}/slack"
secret = "{CHAT_SECRET}"
events = ["blocker.opened"]
format = "slack"
initial_backoff = "1s"
max_backoff = "2s"

[[subscription]]
id = "doomed"
url = "http://127.0.0.1:{nobody}/hooks"
secret = "{SECRET}"
events = ["readiness.changed"]
retry_for = "4s"
initial_backoff = "1s"
max_backoff = "1s"
"#
        ),
    )
    .unwrap();
    // What `setup` seeds (blockers, readiness, findings) is history: it notifies nobody.
    let mut s = setup(&["--webhooks", &file.display().to_string()], None).await;
    let p = producer(&s.broker.bootstrap()).unwrap();
    let codec = Codec::new();
    let now = Timestamp::now().0;

    // New changes, while the receiver is down.
    let opened = Blocker {
        tenant_id: "acme".into(),
        stage: Stage::Pilot,
        blocker_id: "evidence_stale".into(),
        kind: BlockerKind::EvidenceStale,
        meaning: "evidence is stale".into(),
        resolution: "collect fresh evidence".into(),
        subject: None,
        evidence: vec![],
        detected_at: ts(now),
    };
    produce(
        &p,
        &s.topics.blockers,
        &opened.key(),
        &codec.encode(&opened).unwrap(),
    )
    .await
    .unwrap();
    p.send(
        rdkafka::producer::FutureRecord::<str, [u8]>::to(&s.topics.blockers)
            .key("acme/production/report_delivery_unverified"),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    for (stage, ready, blockers) in [(Stage::Pilot, true, 0), (Stage::Production, false, 4)] {
        // Pilot flips to ready; production says again what it said: no message for it.
        let r = Readiness {
            tenant_id: "acme".into(),
            stage,
            ready,
            blocker_ids: (0..blockers).map(|i| format!("b{i}")).collect(),
            evaluated_at: ts(now),
        };
        produce(
            &p,
            &s.topics.readiness,
            &r.key(),
            &codec.encode(&r).unwrap(),
        )
        .await
        .unwrap();
    }
    view(
        &p,
        &s.topics,
        "acme",
        "AISPM-OWN-001:agent-9",
        finding(
            "AISPM-OWN-001:agent-9",
            "Agent without an owner",
            Risk::Medium,
            None,
            now - DAY,
            Some(now + 3_000),
            None,
            &[],
        ),
    )
    .await;
    let (status, report) =
        post_report(&s, ACME_TOKEN, "acme", json!({"type": "blockers_digest"})).await;
    assert_eq!(status, 201, "{report}");

    // The receiver is down: attempts fail and are retried. Counted: more failed attempts of
    // each subscription than it has messages pending (so some were retried), then it comes up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut retried = true;
        for sub in ["secops", "chat"] {
            let label = format!("subscription=\"{sub}\"");
            let failed = metric_with(
                &s,
                "aispm_reporter_webhook_messages_total",
                &["outcome=\"failed\"", &label],
            )
            .await;
            let pending =
                metric_with(&s, "aispm_reporter_webhook_messages_pending", &[&label]).await;
            retried &= pending > 0.0 && failed > pending;
        }
        if retried {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retried webhook attempts while the receiver is down"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let secrets = json!({"/hooks": SECRET, "/slack": CHAT_SECRET});
    let _receiver = WebhookSink::start(port, hooks.path(), &secrets).unwrap();
    let log = hooks.path().join("received.jsonl");

    // Every change arrives, signed, once.
    let expected = [
        "blocker.opened",
        "blocker.resolved",
        "finding.sla_breached",
        "readiness.changed",
        "report.delivered",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let received = loop {
        let r = WebhookSink::received_in(&log);
        if r.iter().filter(|m| m["path"] == "/hooks").count() >= expected.len()
            && r.iter().any(|m| m["path"] == "/slack")
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "not every message arrived: {r:#?}\n{}",
            s.reporter.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(received.iter().all(|m| m["ok"] == true), "{received:#?}");
    let hooks_msgs: Vec<&Value> = received.iter().filter(|m| m["path"] == "/hooks").collect();
    let mut types: Vec<&str> = hooks_msgs
        .iter()
        .map(|m| m["payload"]["type"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(types, expected, "{hooks_msgs:#?}");
    let of = |t: &str| {
        &hooks_msgs
            .iter()
            .find(|m| m["payload"]["type"] == t)
            .unwrap()["payload"]["data"]
    };
    assert_eq!(of("blocker.opened")["blocker_id"], "evidence_stale");
    assert_eq!(of("blocker.opened")["stage"], "pilot");
    assert_eq!(
        of("blocker.resolved")["blocker_id"],
        "report_delivery_unverified"
    );
    assert_eq!(
        (
            of("readiness.changed")["stage"].as_str(),
            of("readiness.changed")["ready"].as_bool(),
            of("readiness.changed")["was_ready"].as_bool()
        ),
        (Some("pilot"), Some(true), Some(false))
    );
    assert_eq!(
        of("finding.sla_breached")["finding_id"],
        "AISPM-OWN-001:agent-9"
    );
    assert_eq!(of("report.delivered")["report_id"], report["id"]);
    let slack = received.iter().find(|m| m["path"] == "/slack").unwrap();
    assert!(
        slack["payload"]["text"]
            .as_str()
            .unwrap()
            .contains("evidence_stale"),
        "{slack}"
    );

    // A forged message is refused by the receiver: its verification is real.
    let forged = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/hooks"))
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", (now / 1000).to_string())
        .header(
            "webhook-signature",
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .body(r#"{"type":"readiness.changed","data":{"ready":true}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 400);

    // A record on a followed topic that does not decode is dead-lettered, with headers naming
    // where it came from; the reporter carries on.
    produce(&p, &s.topics.blockers, "acme/production/x", b"not avro")
        .await
        .unwrap();

    // The subscription whose endpoint never answers gives up after its retry_for, into the
    // dead-letter topic, with headers naming it.
    let dead = read_all(
        &s.broker.bootstrap(),
        &s.topics.dlq,
        2,
        Duration::from_secs(30),
    )
    .unwrap();
    let header = |r: &aispm_tests::kafka::Record, k: &str| {
        r.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let d = dead
        .iter()
        .find(|r| header(r, "aispm.dlq.source.topic").as_deref() == Some("webhook:doomed"))
        .expect("a dead letter for the doomed subscription");
    assert_eq!(header(d, "aispm.dlq.stage").as_deref(), Some("deliver"));
    assert_eq!(
        header(d, "aispm.dlq.reason").as_deref(),
        Some("webhook_gave_up")
    );
    let body: Value = serde_json::from_slice(d.value.as_ref().unwrap()).unwrap();
    assert_eq!(body["type"], "readiness.changed");
    let d = dead
        .iter()
        .find(|r| header(r, "aispm.dlq.source.topic").as_deref() == Some(&s.topics.blockers))
        .expect("a dead letter for the record that does not decode");
    assert_eq!(d.key.as_deref(), Some(&b"acme/production/x"[..]));
    assert_eq!(d.value.as_deref(), Some(&b"not avro"[..]));
    assert_eq!(header(d, "aispm.dlq.stage").as_deref(), Some("decode"));
    assert_eq!(header(d, "aispm.dlq.service").as_deref(), Some("reporter"));
    assert!(header(d, "aispm.dlq.source.offset").is_some());

    // kill -9 and a restart replay every topic: nothing is sent again, and a new change still
    // is, once.
    let before = WebhookSink::received_in(&log).len();
    s.reporter.kill9();
    let addr = format!("127.0.0.1:{}", free_port());
    s.reporter = Service::start("aispm-reporter", &addr, &s.args, s.dirs.path()).unwrap();
    s.reporter
        .wait_ready(Duration::from_secs(60))
        .await
        .unwrap();
    let another = Blocker {
        stage: Stage::Production,
        blocker_id: "tenant_isolation_not_proven".into(),
        kind: BlockerKind::TenantIsolationNotProven,
        ..opened
    };
    produce(
        &p,
        &s.topics.blockers,
        &another.key(),
        &codec.encode(&another).unwrap(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = WebhookSink::received_in(&log);
        let new: Vec<&Value> = r[before..]
            .iter()
            .filter(|m| m["path"] == "/hooks")
            .collect();
        if !new.is_empty() {
            // The restarted reporter replayed every topic before it was ready: a message sent
            // again would have been queued then. Once nothing is pending, this process has
            // delivered exactly the one new message.
            let secops = "subscription=\"secops\"";
            while metric_with(&s, "aispm_reporter_webhook_messages_pending", &[secops]).await > 0.0
            {
                assert!(Instant::now() < deadline, "secops never drained");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let delivered = metric_with(
                &s,
                "aispm_reporter_webhook_messages_total",
                &["outcome=\"delivered\"", secops],
            )
            .await;
            assert_eq!(delivered, 1.0, "sent again after the restart");
            let r = WebhookSink::received_in(&log);
            let new: Vec<&Value> = r[before..]
                .iter()
                .filter(|m| m["path"] == "/hooks")
                .collect();
            assert_eq!(new.len(), 1, "{new:#?}");
            assert_eq!(
                new[0]["payload"]["data"]["blocker_id"],
                "tenant_isolation_not_proven"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new blocker was not sent after the restart"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all = WebhookSink::received_in(&log);
    let ids: std::collections::BTreeSet<&str> = all
        .iter()
        .filter(|m| m["path"] == "/hooks")
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    println!(
        "webhooks: requests={} distinct_ids={} dead_lettered=1 forged_refused=1",
        all.len(),
        ids.len()
    );
}
