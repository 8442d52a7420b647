//! Evidence signatures end to end: the projector binary against the real broker, fed over Kafka,
//! read over HTTP and from the dead-letter topic. A signature binds tenant, evidence id and
//! digest (`aispm_schemas::signature`); weak keys never register; the documented Python signer
//! (`docs/examples/sign_evidence.py`, Python's `cryptography`) produces evidence that verifies.

use aispm_schemas::codec::encode_single_object;
use aispm_schemas::topics::dlq_headers;
use aispm_schemas::*;
use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::kafka::{Record, create_contract_topics, produce, producer, read_all};
use aispm_tests::process::Service;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes};
use rdkafka::producer::FutureProducer;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T0: i64 = 1_763_719_200_000;
const TOKENS: &str = "[[tokens]]\ntoken = \"acme-token\"\ntenants = [\"acme\"]\nscopes = [\"read\"]\n\n[[tokens]]\ntoken = \"globex-token\"\ntenants = [\"globex\"]\nscopes = [\"read\"]\n";
/// The identity point, `01 00 … 00`: a key of small order.
const IDENTITY_KEY: [u8; 32] = {
    let mut k = [0u8; 32];
    k[0] = 1;
    k
};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn trust_root(tenant: &str, event_id: &str, id: &str, key_b64: &str, at: i64) -> RegistryEvent {
    RegistryEvent {
        event_id: event_id.into(),
        tenant_id: tenant.into(),
        occurred_at: Timestamp(at),
        source: "security-team".into(),
        asset: Some(Asset {
            owner: Some("security".into()),
            public_key: Some(key_b64.into()),
            ..Asset::registered(AssetKind::TrustRoot, id)
        }),
        validation: None,
    }
}

fn decision(tenant: &str, id: &str, evidence: Evidence) -> DecisionEvent {
    DecisionEvent {
        event_id: id.into(),
        tenant_id: tenant.into(),
        occurred_at: Timestamp(T0),
        source: "gateway-eu".into(),
        agent_id: "agent-1".into(),
        actor: "alice".into(),
        environment: Environment::Production,
        action_kind: ActionKind::File,
        target: "/srv/app/config.yaml".into(),
        repo: None,
        workflow: None,
        mcp_server: None,
        mcp_tool: None,
        model_endpoint: None,
        control_id: None,
        policy_id: None,
        mode: Mode::Enforced,
        verdict: Verdict::Deny,
        risk: Risk::High,
        data_classes: vec![],
        synthetic: false,
        approval_id: None,
        api_key_id: None,
        scopes_used: vec![],
        evidence: Some(evidence),
    }
}

/// The key as PKCS#8 v1 PEM (`openssl genpkey -algorithm ed25519` writes this form; the v2
/// form, with the public key, that `SigningKey::to_pkcs8_pem` writes is refused by
/// `cryptography`'s parser).
fn pkcs8_v1_pem(key: &SigningKey) -> String {
    KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .unwrap()
    .to_string()
}

fn example_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/sign_evidence.py")
}

struct Rig {
    broker: Broker,
    topics: Topics,
    _dir: tempfile::TempDir,
    projector: Service,
    client: reqwest::Client,
    producer: FutureProducer,
}

impl Rig {
    async fn start() -> Rig {
        let broker = Broker::start().unwrap();
        let prefix = aispm_tests::kafka::random_prefix();
        let topics = create_contract_topics(&broker.bootstrap(), &prefix, 3)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokens.toml"), TOKENS).unwrap();
        let state = dir.path().join("state").display().to_string();
        let tokens = dir.path().join("tokens.toml").display().to_string();
        let args: Vec<String> = [
            "--brokers",
            &broker.bootstrap(),
            "--topic-prefix",
            &prefix,
            "--state-dir",
            &state,
            "--tokens-file",
            &tokens,
        ]
        .iter()
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
        let producer = producer(&broker.bootstrap()).unwrap();
        Rig {
            broker,
            topics,
            _dir: dir,
            projector,
            client: reqwest::Client::new(),
            producer,
        }
    }

    async fn registry(&self, e: &RegistryEvent) {
        let bytes = encode_single_object(e).unwrap();
        produce(&self.producer, &self.topics.registry, &e.tenant_id, &bytes)
            .await
            .unwrap();
    }

    async fn decision(&self, d: &DecisionEvent) {
        let bytes = encode_single_object(d).unwrap();
        produce(&self.producer, &self.topics.decisions, &d.tenant_id, &bytes)
            .await
            .unwrap();
    }

    /// The evidence row's `signature_state` once it is `want`; fails with what it was instead.
    async fn state_becomes(&self, tenant: &str, evidence_id: &str, want: &str) {
        let path = format!("/v1/tenants/{tenant}/evidence/{evidence_id}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self
                .client
                .get(format!("{}{path}", self.projector.http))
                .bearer_auth(format!("{tenant}-token"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if status == 200 && v["signature_state"] == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: wanted {want}, have {status} {v:#}\n{}",
                self.projector.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn header(r: &Record, k: &str) -> String {
    r.headers
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_bind_tenant_and_evidence_id_and_weak_keys_never_register() {
    let rig = Rig::start().await;
    let key = SigningKey::from_bytes(&[21u8; 32]);
    let public = b64(key.verifying_key().as_bytes());
    let sha: [u8; 32] = [0x5a; 32];
    let sha_hex = "5a".repeat(32);
    let evidence = |evidence_id: &str, signature: String, key_id: &str| Evidence {
        evidence_id: evidence_id.into(),
        sha256: sha_hex.clone(),
        uri: format!("s3://acme-evidence/{evidence_id}.json"),
        signature: Some(signature),
        key_id: Some(key_id.into()),
    };

    // Two tenants register the same public key (a gateway shared between them).
    rig.registry(&trust_root(
        "acme",
        "reg-acme-root",
        "root-1",
        &public,
        T0 - 60_000,
    ))
    .await;
    rig.registry(&trust_root(
        "globex",
        "reg-globex-root",
        "root-1",
        &public,
        T0 - 60_000,
    ))
    .await;

    // Signed as the contract says: verified.
    let good = signature::sign(&key, "acme", "ev-good", &sha);
    rig.decision(&decision(
        "acme",
        "d-good",
        evidence("ev-good", good.clone(), "root-1"),
    ))
    .await;
    rig.state_becomes("acme", "ev-good", "verified").await;

    // The same signature replayed onto another evidence id of the tenant: invalid.
    rig.decision(&decision(
        "acme",
        "d-replay",
        evidence("ev-replayed", good.clone(), "root-1"),
    ))
    .await;
    rig.state_becomes("acme", "ev-replayed", "invalid").await;
    // ... and onto the same evidence id of another tenant holding the same key: invalid.
    rig.decision(&decision(
        "globex",
        "g-replay",
        evidence("ev-good", good.clone(), "root-1"),
    ))
    .await;
    rig.state_becomes("globex", "ev-good", "invalid").await;
    // The old scheme (a signature over the bare digest) no longer verifies.
    let bare = {
        use ed25519_dalek::Signer as _;
        b64(&key.sign(&sha).to_bytes())
    };
    rig.decision(&decision(
        "acme",
        "d-bare",
        evidence("ev-bare", bare, "root-1"),
    ))
    .await;
    rig.state_becomes("acme", "ev-bare", "invalid").await;

    // A weak (small-order) key written straight to Kafka: as a new trust root, and as a newer
    // registration of root-1 that would otherwise replace the good key.
    let weak = b64(&IDENTITY_KEY);
    rig.registry(&trust_root(
        "acme",
        "reg-weak",
        "weak-root",
        &weak,
        T0 - 30_000,
    ))
    .await;
    rig.registry(&trust_root(
        "acme",
        "reg-weak-over",
        "root-1",
        &weak,
        T0 - 30_000,
    ))
    .await;
    // The forgery a weak key allows under a lax check: R = identity, s = 0 "verifies" any
    // message for the identity key.
    let mut forged = [0u8; 64];
    forged[0] = 1;
    rig.decision(&decision(
        "acme",
        "d-weak",
        evidence("ev-weak", b64(&forged), "weak-root"),
    ))
    .await;
    rig.decision(&decision(
        "acme",
        "d-weak-over",
        evidence("ev-weak-over", b64(&forged), "root-1"),
    ))
    .await;

    let dead = read_all(
        &rig.broker.bootstrap(),
        &rig.topics.dlq,
        2,
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(dead.len(), 2, "both weak registrations dead-lettered");
    for r in &dead {
        assert_eq!(header(r, dlq_headers::SOURCE_TOPIC), rig.topics.registry);
        assert_eq!(header(r, dlq_headers::STAGE), "validate");
        assert_eq!(header(r, dlq_headers::REASON), "weak_key");
        assert!(
            header(r, dlq_headers::ERROR).contains("asset.public_key"),
            "{}",
            header(r, dlq_headers::ERROR)
        );
        assert_eq!(r.key.as_deref(), Some(&b"acme"[..]));
    }

    // Neither registered: the forged evidence stays unverified, the good key stays in place.
    rig.state_becomes("acme", "ev-weak", "unknown_key").await;
    rig.state_becomes("acme", "ev-weak-over", "invalid").await;
    rig.state_becomes("acme", "ev-good", "verified").await;

    // Evidence signed by the documented Python example with Python's `cryptography`.
    let dir = tempfile::tempdir().unwrap();
    let py_key = SigningKey::from_bytes(&[33u8; 32]);
    let pem = dir.path().join("evidence-key.pem");
    std::fs::write(&pem, pkcs8_v1_pem(&py_key)).unwrap();
    let artefact = dir.path().join("transcript.json");
    std::fs::write(
        &artefact,
        b"{\"check\":\"tenant_isolation\",\"result\":\"pass\"}\n",
    )
    .unwrap();
    let out = std::process::Command::new(aispm_tests::process::venv_python())
        .arg(example_script())
        .arg(&pem)
        .arg("acme")
        .arg("ev-python")
        .arg("py-root")
        .arg(&artefact)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", aispm_tests::process::venv_python()));
    assert!(
        out.status.success(),
        "sign_evidence.py failed (is `cryptography` in the venv? scripts/setup.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let py_evidence: Evidence = serde_json::from_value(signed["evidence"].clone()).unwrap();
    rig.registry(&trust_root(
        "acme",
        "reg-py-root",
        "py-root",
        signed["public_key"].as_str().unwrap(),
        T0 - 60_000,
    ))
    .await;
    rig.decision(&decision("acme", "d-python", py_evidence))
        .await;
    rig.state_becomes("acme", "ev-python", "verified").await;
}
