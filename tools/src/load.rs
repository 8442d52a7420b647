//! Random but realistic load: decisions from a tenant's agents on every action path (most
//! allowed and low-risk, some denied, some needing approval, a few break-glass), the approvals
//! that follow, occasional registry upserts and validations, and the remediation a security
//! team does: once a tenant has more than its backlog of open items (high-risk actions allowed
//! without approval, unreviewed break-glass, unsigned evidence), the oldest is resolved or
//! reviewed. Most evidence is signed with the tenant's demo key, whose trust root is each
//! tenant's first event. Seeded: the same seed gives the same events (apart from
//! `occurred_at`, which is the wall clock when generated).

use crate::scenario::{demo_key, ids};
use aispm_schemas::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

const AGENTS: [&str; 6] = [
    "coder-agent",
    "review-agent",
    "triage-agent",
    "deploy-agent",
    "notebook-agent",
    "support-agent",
];
const ACTORS: [&str; 5] = [
    "dev-alice",
    "dev-bob",
    "sre-carol",
    "data-dan",
    "svc-automation",
];
const REPOS: [&str; 4] = ["payments-api", "web-frontend", "ml-pipelines", "infra-live"];
const WORKFLOWS: [&str; 3] = ["ci", "deploy-prod", "nightly-retrain"];
const FILES: [&str; 5] = [
    "src/main.rs",
    "config/prod.yaml",
    ".github/workflows/deploy.yml",
    "/etc/hosts",
    "README.md",
];
const COMMANDS: [&str; 5] = [
    "cargo test",
    "npm install",
    "terraform plan",
    "kubectl rollout restart deploy/api",
    "psql -c 'select 1'",
];
const MCP_TOOLS: [(&str, &str); 4] = [
    ("github-mcp", "list_issues"),
    ("github-mcp", "create_pull_request"),
    ("jira-mcp", "search"),
    ("filesystem-mcp", "read_file"),
];
const MODELS: [&str; 3] = ["openai-gpt-4o", "anthropic-claude", "internal-llama"];
const DATA_CLASSES: [&str; 4] = ["internal", "pii", "secret", "phi"];

/// A generator of events for `tenants` tenants (`tenant-000`, `tenant-001`, …).
#[derive(Debug)]
pub struct LoadGen {
    rng: StdRng,
    tenants: Vec<String>,
    /// Per tenant, decisions that required approval and await one.
    pending: Vec<Vec<String>>,
    /// Per tenant, open items that can block readiness, oldest first.
    open: Vec<VecDeque<Remedy>>,
    /// Open items per tenant above which the oldest is remediated.
    backlog: usize,
    /// Per tenant, the evidence-signing key once its trust root was sent.
    keys: Vec<Option<SigningKey>>,
    seq: u64,
    run: String,
}

/// What remediates an open item.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Remedy {
    /// `finding_resolved` for this finding id.
    Resolve(String),
    /// `break_glass_reviewed` for this break-glass decision id.
    Review(String),
}

/// The projector's finding id for a high-risk action allowed without approval (rule
/// AISPM-APR-001): one per agent and control, every such decision an occurrence of it.
fn no_approval_finding(d: &DecisionEvent) -> String {
    format!("AISPM-APR-001:{}", d.finding_subject())
}

impl LoadGen {
    /// `run` goes into every event id, so separate runs do not collide (consumers apply an
    /// event id once).
    pub fn new(tenants: usize, seed: u64, run: &str) -> Self {
        let tenants: Vec<String> = (0..tenants.max(1))
            .map(|i| format!("tenant-{i:03}"))
            .collect();
        LoadGen {
            rng: StdRng::seed_from_u64(seed),
            pending: vec![Vec::new(); tenants.len()],
            open: vec![VecDeque::new(); tenants.len()],
            backlog: usize::MAX,
            keys: vec![None; tenants.len()],
            tenants,
            seq: 0,
            run: run.to_owned(),
        }
    }

    /// Remediates the oldest open item of a tenant whenever it has more than `backlog` (by
    /// default nothing is ever remediated, and open findings grow with the load).
    pub fn with_backlog(mut self, backlog: usize) -> Self {
        self.backlog = backlog;
        self
    }

    pub fn tenants(&self) -> &[String] {
        &self.tenants
    }

    /// The next `n` events.
    pub fn batch(&mut self, n: usize) -> Vec<InputEvent> {
        (0..n).map(|_| self.next_event()).collect()
    }

    fn next_id(&mut self, t: usize) -> String {
        self.seq += 1;
        format!("load-{}-{}-{:010}", self.run, self.tenants[t], self.seq)
    }

    pub fn next_event(&mut self) -> InputEvent {
        let t = self.rng.gen_range(0..self.tenants.len());
        if self.keys[t].is_none() {
            return self.trust_root(t);
        }
        if self.open[t].len() > self.backlog
            && let Some(remedy) = self.open[t].pop_front()
        {
            return self.remediate(t, remedy);
        }
        let roll: f64 = self.rng.r#gen();
        if roll < 0.04 && !self.pending[t].is_empty() {
            self.approval(t)
        } else if roll < 0.07 {
            self.registry(t)
        } else {
            self.decision(t)
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).unwrap_or(&items[0])
    }

    fn decision(&mut self, t: usize) -> InputEvent {
        let event_id = self.next_id(t);
        let tenant = self.tenants[t].clone();
        let kind = match self.rng.gen_range(0..100) {
            0..30 => ActionKind::File,
            30..55 => ActionKind::Command,
            55..70 => ActionKind::Git,
            70..85 => ActionKind::Mcp,
            85..97 => ActionKind::Model,
            _ => ActionKind::Network,
        };
        let risk = match self.rng.gen_range(0..100) {
            0..60 => Risk::Low,
            60..85 => Risk::Medium,
            85..97 => Risk::High,
            _ => Risk::Critical,
        };
        let verdict = match (risk, self.rng.gen_range(0..100)) {
            (_, 0..2) => Verdict::BreakGlass,
            (Risk::High | Risk::Critical, 2..40) => Verdict::RequireApproval,
            (Risk::High | Risk::Critical, 40..70) => Verdict::Deny,
            (_, 2..8) => Verdict::Deny,
            _ => Verdict::Allow,
        };
        let repo = format!("{tenant}/{}", self.pick(&REPOS));
        let mut d = DecisionEvent {
            event_id: event_id.clone(),
            tenant_id: tenant.clone(),
            occurred_at: Timestamp::now(),
            source: "load-gateway".into(),
            agent_id: self.pick(&AGENTS).into(),
            actor: format!("{}@{tenant}.example", self.pick(&ACTORS)),
            environment: Environment::Production,
            action_kind: kind,
            target: String::new(),
            repo: None,
            workflow: None,
            mcp_server: None,
            mcp_tool: None,
            model_endpoint: None,
            control_id: Some(format!("ctl-{kind}")),
            policy_id: Some(format!("pol-{kind}-{risk}")),
            mode: if self.rng.gen_bool(0.9) {
                Mode::Enforced
            } else {
                Mode::Shadow
            },
            verdict,
            risk,
            data_classes: vec![],
            synthetic: self.rng.gen_bool(0.05),
            approval_id: None,
            api_key_id: None,
            scopes_used: vec![],
            evidence: None,
        };
        match kind {
            ActionKind::File => {
                d.target = self.pick(&FILES).into();
                d.repo = Some(repo);
            }
            ActionKind::Command => {
                d.target = self.pick(&COMMANDS).into();
                d.workflow = Some(self.pick(&WORKFLOWS).into());
            }
            ActionKind::Git => {
                d.target = "git push origin main".into();
                d.repo = Some(repo);
            }
            ActionKind::Mcp => {
                let (server, tool) = self.pick(&MCP_TOOLS);
                d.target = format!("{tool} {repo}");
                d.mcp_server = Some(server.into());
                d.mcp_tool = Some(tool.into());
            }
            ActionKind::Model => {
                let model = self.pick(&MODELS);
                d.target = "chat.completions".into();
                d.model_endpoint = Some(model.into());
                d.data_classes = vec![self.pick(&DATA_CLASSES).into()];
            }
            ActionKind::Network => {
                d.target = "https://api.partner.example/v2/orders".into();
            }
        }
        if risk != Risk::Low || self.rng.gen_bool(0.3) {
            let digest: [u8; 32] = Sha256::digest(event_id.as_bytes()).into();
            let evidence_id = format!("ev-{event_id}");
            // Nine in ten gateways sign their evidence; the rest raise AISPM-EV-002.
            let signature = match &self.keys[t] {
                Some(key) if self.rng.gen_bool(0.9) => Some(aispm_schemas::signature::sign(
                    key,
                    &tenant,
                    &evidence_id,
                    &digest,
                )),
                _ => {
                    if self.backlog != usize::MAX {
                        self.open[t]
                            .push_back(Remedy::Resolve(format!("AISPM-EV-002:{evidence_id}")));
                    }
                    None
                }
            };
            d.evidence = Some(Evidence {
                key_id: signature.as_ref().map(|_| ids::trust_root(&tenant)),
                evidence_id,
                sha256: hex::encode(digest),
                uri: format!("s3://{tenant}-aispm-evidence/{event_id}.json"),
                signature,
            });
        }
        if verdict == Verdict::RequireApproval && self.pending[t].len() < 1000 {
            self.pending[t].push(event_id.clone());
        }
        if self.backlog != usize::MAX {
            if matches!(risk, Risk::High | Risk::Critical) && verdict == Verdict::Allow {
                // One finding per agent and control: queued once until it is resolved.
                let remedy = Remedy::Resolve(no_approval_finding(&d));
                if !self.open[t].contains(&remedy) {
                    self.open[t].push_back(remedy);
                }
            }
            if verdict == Verdict::BreakGlass {
                self.open[t].push_back(Remedy::Review(event_id));
            }
        }
        InputEvent::Decision(d)
    }

    /// The approval event that closes an open item.
    fn remediate(&mut self, t: usize, remedy: Remedy) -> InputEvent {
        let tenant = self.tenants[t].clone();
        let (kind, finding_id, decision_id, reason) = match remedy {
            Remedy::Resolve(f) => (
                ApprovalKind::FindingResolved,
                Some(f),
                None,
                "change reviewed after the fact and accepted",
            ),
            Remedy::Review(d) => (
                ApprovalKind::BreakGlassReviewed,
                None,
                Some(d),
                "break-glass use reviewed",
            ),
        };
        InputEvent::Approval(ApprovalEvent {
            event_id: self.next_id(t),
            tenant_id: tenant.clone(),
            occurred_at: Timestamp::now(),
            source: "load-remediation".into(),
            kind,
            decision_id,
            finding_id,
            control_id: None,
            exception_id: None,
            actor: format!("sec-erin@{tenant}.example"),
            owner: None,
            reason: Some(reason.into()),
            due_at: None,
            expires_at: None,
        })
    }

    fn approval(&mut self, t: usize) -> InputEvent {
        let i = self.rng.gen_range(0..self.pending[t].len());
        let decision = self.pending[t].swap_remove(i);
        let granted = self.rng.gen_bool(0.8);
        let tenant = self.tenants[t].clone();
        InputEvent::Approval(ApprovalEvent {
            event_id: self.next_id(t),
            tenant_id: tenant.clone(),
            occurred_at: Timestamp::now(),
            source: "load-approvals".into(),
            kind: if granted {
                ApprovalKind::ApprovalGranted
            } else {
                ApprovalKind::ApprovalDenied
            },
            decision_id: Some(decision),
            finding_id: None,
            control_id: None,
            exception_id: None,
            actor: format!("{}@{tenant}.example", self.pick(&ACTORS)),
            owner: None,
            reason: Some(
                if granted {
                    "change approved"
                } else {
                    "not justified"
                }
                .into(),
            ),
            due_at: None,
            expires_at: None,
        })
    }

    /// Registers the tenant's evidence-signing key as a trust root.
    fn trust_root(&mut self, t: usize) -> InputEvent {
        let key = demo_key(&self.tenants[t]);
        let asset = Asset {
            public_key: Some(STANDARD.encode(key.verifying_key().to_bytes())),
            ..asset(
                AssetKind::TrustRoot,
                ids::trust_root(&self.tenants[t]),
                "security-team",
                Risk::High,
            )
        };
        self.keys[t] = Some(key);
        self.register(t, asset)
    }

    fn registry(&mut self, t: usize) -> InputEvent {
        let (kind, id) = match self.rng.gen_range(0..4) {
            0 => (AssetKind::Agent, self.pick(&AGENTS).to_owned()),
            1 => {
                let repo = self.pick(&REPOS);
                (AssetKind::Repo, format!("{}/{repo}", self.tenants[t]))
            }
            2 => {
                let (server, tool) = self.pick(&MCP_TOOLS);
                (AssetKind::McpTool, format!("{server}/{tool}"))
            }
            _ => (AssetKind::ModelEndpoint, self.pick(&MODELS).to_owned()),
        };
        let trust = match kind {
            AssetKind::McpTool | AssetKind::ModelEndpoint => Some(if self.rng.gen_bool(0.9) {
                Trust::Trusted
            } else {
                Trust::Risky
            }),
            _ => None,
        };
        let asset = Asset {
            trust,
            approved_data_classes: if kind == AssetKind::ModelEndpoint {
                vec!["internal".into()]
            } else {
                vec![]
            },
            ..asset(kind, id, "platform-team", Risk::Medium)
        };
        self.register(t, asset)
    }

    /// The registry event registering `asset` for tenant `t`.
    fn register(&mut self, t: usize, asset: Asset) -> InputEvent {
        InputEvent::Registry(RegistryEvent {
            event_id: self.next_id(t),
            tenant_id: self.tenants[t].clone(),
            occurred_at: Timestamp::now(),
            source: "load-registry".into(),
            asset: Some(asset),
            validation: None,
        })
    }
}

/// A registered production asset: kind, id, owner and criticality; nothing else set.
fn asset(kind: AssetKind, id: String, owner: &str, criticality: Risk) -> Asset {
    Asset {
        owner: Some(owner.to_owned()),
        criticality: Some(criticality),
        environment: Some(Environment::Production),
        ..Asset::registered(kind, id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_unique_and_spread_over_tenants() {
        let mut g = LoadGen::new(5, 7, "r1");
        let events = g.batch(5000);
        let mut ids = std::collections::BTreeSet::new();
        let mut tenants = std::collections::BTreeSet::new();
        let mut kinds = std::collections::BTreeMap::new();
        for e in &events {
            assert_eq!(InputEvent::from_json(e.to_json()).as_ref(), Ok(e));
            assert!(ids.insert(e.event_id().to_owned()));
            tenants.insert(e.tenant_id().to_owned());
            *kinds.entry(e.kind()).or_insert(0) += 1;
        }
        assert_eq!(tenants.len(), 5);
        assert!(kinds["decision"] > 4000 && kinds["approval"] > 10 && kinds["registry"] > 50);
    }

    #[test]
    fn a_backlog_bounds_the_open_items() {
        let mut g = LoadGen::new(2, 3, "r1").with_backlog(20);
        let events = g.batch(20_000);
        let mut open = std::collections::BTreeSet::new();
        let mut remediations = 0;
        for e in &events {
            match e {
                InputEvent::Decision(d)
                    if matches!(d.risk, Risk::High | Risk::Critical)
                        && d.verdict == Verdict::Allow =>
                {
                    open.insert((d.tenant_id.clone(), no_approval_finding(d)));
                }
                InputEvent::Decision(d) if d.verdict == Verdict::BreakGlass => {
                    assert!(open.insert((d.tenant_id.clone(), d.event_id.clone())));
                }
                InputEvent::Decision(_) => {}
                InputEvent::Approval(a) if a.kind == ApprovalKind::FindingResolved => {
                    assert!(open.remove(&(a.tenant_id.clone(), a.finding_id.clone().unwrap())));
                    remediations += 1;
                }
                InputEvent::Approval(a) if a.kind == ApprovalKind::BreakGlassReviewed => {
                    assert!(open.remove(&(a.tenant_id.clone(), a.decision_id.clone().unwrap())));
                    remediations += 1;
                }
                _ => {}
            }
            if let InputEvent::Decision(d) = e
                && let Some(ev) = d.evidence.as_ref().filter(|ev| ev.signature.is_none())
            {
                assert!(open.insert((
                    d.tenant_id.clone(),
                    format!("AISPM-EV-002:{}", ev.evidence_id)
                )));
            }
            // A decision opens at most two items (no approval, unsigned evidence).
            assert!(open.len() <= 2 * (20 + 2), "{}", open.len());
        }
        assert!(remediations > 500, "{remediations}");
        // Without a backlog nothing is remediated.
        let none = LoadGen::new(2, 3, "r1").batch(5_000);
        assert!(
            !none.iter().any(|e| matches!(e, InputEvent::Approval(a)
            if matches!(a.kind, ApprovalKind::FindingResolved | ApprovalKind::BreakGlassReviewed)))
        );
    }

    #[test]
    fn same_seed_same_events() {
        let strip = |e: InputEvent| {
            let mut v = e.to_json();
            v["occurred_at"] = serde_json::Value::Null;
            v
        };
        let a: Vec<_> = LoadGen::new(3, 9, "r1")
            .batch(100)
            .into_iter()
            .map(strip)
            .collect();
        let b: Vec<_> = LoadGen::new(3, 9, "r1")
            .batch(100)
            .into_iter()
            .map(strip)
            .collect();
        assert_eq!(a, b);
    }
}
