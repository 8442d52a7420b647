//! The one load generator: random but realistic events for `emit`, the soak, the benches, the
//! crash and fault tests and the fuzz seeds. Decisions from a tenant's agents on every action
//! path (most allowed and low-risk, some denied, some needing approval, a few break-glass), the
//! approvals that follow, occasional registry upserts, and the work a security team does:
//! triage (owners, due dates and exceptions on the findings raised) and remediation (once a
//! tenant has more than its backlog of open items, the oldest is resolved or reviewed). Most
//! evidence is signed with the tenant's demo key, whose trust root is each tenant's first event.
//!
//! Seeded: the same seed gives the same events, and with a [`Clock::Fixed`] the same bytes.
//! Its knobs, each off by default:
//! - [`LoadGen::with_entities`]: a bounded key space that scales (agents, repos, tools, models
//!   and controls numbered within it) instead of a few named ones, for scale runs;
//! - [`LoadGen::with_clock`]: event times from a fixed start, for runs compared byte for byte;
//! - [`LoadGen::with_duplicates`]: re-sent events (the same event id), as at-least-once
//!   producers do;
//! - [`LoadGen::with_triage`], [`LoadGen::with_backlog`]: the security team's work;
//! - [`LoadGen::unsigned`]: no trust roots and unsigned evidence (signatures dominate the cost
//!   of an event in a debug build).
//!
//! [`LoadGen::keyed`] sets them all as the crash tests and the benches use them.

use crate::records::Generated;
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

/// How a generator dates its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The wall clock when each event is generated.
    Wall,
    /// `start`, then `step_ms` later for each new event: the same seed gives the same bytes.
    Fixed { start: Timestamp, step_ms: i64 },
}

/// [`LoadGen::keyed`]'s first event time: 2025-11-21T10:00:00Z.
pub const KEYED_START: Timestamp = Timestamp(1_763_719_200_000);

/// Re-sent events are drawn from this many recent ones.
const RECENT: usize = 1000;

/// A generator of events for `tenants` tenants (`tenant-000`, `tenant-001`, …).
#[derive(Debug)]
pub struct LoadGen {
    rng: StdRng,
    tenants: Vec<String>,
    clock: Clock,
    /// Distinct entities per tenant when the key space is bounded ([`LoadGen::with_entities`]).
    entities: Option<usize>,
    /// Fraction of events that re-send a recent one.
    duplicates: f64,
    recent: Vec<InputEvent>,
    /// Fraction of events that triage a raised finding (an owner and due date, or an exception).
    triage: f64,
    /// Per tenant, findings raised (most recent last, at most [`RECENT`]).
    raised: Vec<VecDeque<String>>,
    signed: bool,
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

/// The finding a decision with unsigned evidence raises: about its agent and control.
fn unsigned_finding(d: &DecisionEvent) -> String {
    format!("AISPM-EV-002:{}", d.finding_subject())
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
            clock: Clock::Wall,
            entities: None,
            duplicates: 0.0,
            recent: Vec::new(),
            triage: 0.0,
            raised: vec![VecDeque::new(); tenants.len()],
            signed: true,
            pending: vec![Vec::new(); tenants.len()],
            open: vec![VecDeque::new(); tenants.len()],
            backlog: usize::MAX,
            keys: vec![None; tenants.len()],
            tenants,
            seq: 0,
            run: run.to_owned(),
        }
    }

    /// The preset of the crash and fault tests and the benches: `tenants` tenants over about
    /// `entities` distinct entities in all, a fixed clock (an event every 10 ms from
    /// [`KEYED_START`]), 1 % re-sent events, 2 % triage, unsigned evidence; event ids carry the
    /// seed (`load-g<seed>-…`), so generators with different seeds never share one.
    pub fn keyed(seed: u64, tenants: usize, entities: usize) -> Self {
        LoadGen::new(tenants, seed, &format!("g{seed}"))
            .with_entities(entities)
            .with_clock(Clock::Fixed {
                start: KEYED_START,
                step_ms: 10,
            })
            .with_duplicates(0.01)
            .with_triage(0.02)
            .unsigned()
    }

    /// Draws agents, repos, tools, models, controls and targets from about `entities` distinct
    /// entities in all (at least 4 per tenant), numbered (`coder-agent-7`, `ctl-git-3`), instead
    /// of a few named ones: the key space of a scale run.
    pub fn with_entities(mut self, entities: usize) -> Self {
        self.entities = Some((entities / self.tenants.len()).max(4));
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Re-sends a recent event (the same event id) as `rate` of all events.
    pub fn with_duplicates(mut self, rate: f64) -> Self {
        self.duplicates = rate.clamp(0.0, 1.0);
        self
    }

    /// Makes `rate` of all events triage a finding the load raised: an owner and a due date in
    /// a week (`finding_assigned`), or one time in four a day's exception (`exception_granted`).
    pub fn with_triage(mut self, rate: f64) -> Self {
        self.triage = rate.clamp(0.0, 1.0);
        self
    }

    /// No trust roots and no signatures on evidence (which then raises AISPM-EV-002).
    pub fn unsigned(mut self) -> Self {
        self.signed = false;
        self
    }

    /// Trust roots, and nine in ten gateways signing their evidence (the default of
    /// [`LoadGen::new`]; undoes [`LoadGen::unsigned`]).
    pub fn signed(mut self) -> Self {
        self.signed = true;
        self
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

    /// The next event's id; it also moves a fixed clock on.
    fn next_id(&mut self, t: usize) -> String {
        self.seq += 1;
        format!("load-{}-{}-{:010}", self.run, self.tenants[t], self.seq)
    }

    /// The time of the event whose id was drawn last.
    fn now(&self) -> Timestamp {
        match self.clock {
            Clock::Wall => Timestamp::now(),
            Clock::Fixed { start, step_ms } => Timestamp(start.0 + self.seq as i64 * step_ms),
        }
    }

    /// The next event as a record of its input topic.
    pub fn next_record(&mut self) -> Generated {
        Generated::of(&self.next_event())
    }

    pub fn next_event(&mut self) -> InputEvent {
        if self.duplicates > 0.0 && !self.recent.is_empty() && self.rng.gen_bool(self.duplicates) {
            let i = self.rng.gen_range(0..self.recent.len());
            return self.recent[i].clone();
        }
        let event = self.fresh_event();
        if self.duplicates > 0.0 {
            if self.recent.len() < RECENT {
                self.recent.push(event.clone());
            } else {
                let i = self.rng.gen_range(0..RECENT);
                self.recent[i] = event.clone();
            }
        }
        event
    }

    fn fresh_event(&mut self) -> InputEvent {
        let t = self.rng.gen_range(0..self.tenants.len());
        if self.signed && self.keys[t].is_none() {
            return self.trust_root(t);
        }
        if self.triage > 0.0 && !self.raised[t].is_empty() && self.rng.gen_bool(self.triage) {
            return self.triage(t);
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

    /// Entity `e`'s item of `items` in a bounded key space, else a random one.
    fn choose<T: Copy>(&mut self, items: &[T], e: Option<usize>) -> T {
        match e {
            Some(e) => items[e % items.len()],
            None => self.pick(items),
        }
    }

    /// `name`, numbered by entity `e` modulo `m` in a bounded key space.
    fn numbered(name: &str, e: Option<usize>, m: usize) -> String {
        match e {
            Some(e) => format!("{name}-{}", e % m),
            None => name.to_owned(),
        }
    }

    /// The entity an event is about, in a bounded key space.
    fn entity(&mut self) -> Option<usize> {
        self.entities.map(|n| self.rng.gen_range(0..n))
    }

    fn agent(&mut self, e: Option<usize>) -> String {
        let agent = self.choose(&AGENTS, e);
        Self::numbered(agent, e, 50)
    }

    fn repo(&mut self, t: usize, e: Option<usize>) -> String {
        let repo = self.choose(&REPOS, e);
        format!("{}/{}", self.tenants[t], Self::numbered(repo, e, 30))
    }

    fn mcp_tool(&mut self, e: Option<usize>) -> (String, String) {
        let (server, tool) = self.choose(&MCP_TOOLS, e);
        (
            Self::numbered(server, e, 8),
            Self::numbered(tool, e, usize::MAX),
        )
    }

    fn model(&mut self, e: Option<usize>) -> String {
        let model = self.choose(&MODELS, e);
        Self::numbered(model, e, 6)
    }

    fn decision(&mut self, t: usize) -> InputEvent {
        let event_id = self.next_id(t);
        let occurred_at = self.now();
        let e = self.entity();
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
        let repo = self.repo(t, e);
        let mut d = DecisionEvent {
            event_id: event_id.clone(),
            tenant_id: tenant.clone(),
            occurred_at,
            source: "load-gateway".into(),
            agent_id: self.agent(e),
            actor: format!("{}@{tenant}.example", self.pick(&ACTORS)),
            environment: Environment::Production,
            action_kind: kind,
            target: String::new(),
            repo: None,
            workflow: None,
            mcp_server: None,
            mcp_tool: None,
            model_endpoint: None,
            control_id: Some(Self::numbered(&format!("ctl-{kind}"), e, 12)),
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
                d.target = Self::numbered(self.pick(&FILES), e, usize::MAX);
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
                let (server, tool) = self.mcp_tool(e);
                d.target = format!("{tool} {repo}");
                d.mcp_server = Some(server);
                d.mcp_tool = Some(tool);
            }
            ActionKind::Model => {
                d.target = "chat.completions".into();
                d.model_endpoint = Some(self.model(e));
                d.data_classes = vec![self.pick(&DATA_CLASSES).into()];
            }
            ActionKind::Network => {
                d.target = "https://api.partner.example/v2/orders".into();
            }
        }
        if risk != Risk::Low || self.rng.gen_bool(0.3) {
            let digest: [u8; 32] = Sha256::digest(event_id.as_bytes()).into();
            let evidence_id = format!("ev-{event_id}");
            // Nine in ten gateways sign their evidence; the rest raise AISPM-EV-002 (one
            // finding per agent and control, queued once until it is resolved).
            let signature = match &self.keys[t] {
                Some(key) if self.rng.gen_bool(0.9) => Some(aispm_schemas::signature::sign(
                    key,
                    &tenant,
                    &evidence_id,
                    &digest,
                )),
                _ => {
                    if self.backlog != usize::MAX {
                        let remedy = Remedy::Resolve(unsigned_finding(&d));
                        if !self.open[t].contains(&remedy) {
                            self.open[t].push_back(remedy);
                        }
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
        if self.triage > 0.0
            && matches!(risk, Risk::High | Risk::Critical)
            && verdict == Verdict::Allow
        {
            let raised = &mut self.raised[t];
            if raised.len() == RECENT {
                raised.pop_front();
            }
            raised.push_back(no_approval_finding(&d));
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

    /// A security engineer's triage of a raised finding: an owner and a due date in a week, or
    /// one time in four a day's exception.
    fn triage(&mut self, t: usize) -> InputEvent {
        let i = self.rng.gen_range(0..self.raised[t].len());
        let finding = self.raised[t][i].clone();
        let tenant = self.tenants[t].clone();
        let event_id = self.next_id(t);
        let at = self.now();
        let exception = self.rng.gen_bool(0.25);
        InputEvent::Approval(ApprovalEvent {
            exception_id: exception.then(|| format!("exc-{event_id}")),
            event_id,
            tenant_id: tenant.clone(),
            occurred_at: at,
            source: "load-triage".into(),
            kind: if exception {
                ApprovalKind::ExceptionGranted
            } else {
                ApprovalKind::FindingAssigned
            },
            decision_id: None,
            finding_id: Some(finding),
            control_id: None,
            actor: format!("sec-erin@{tenant}.example"),
            owner: Some(format!("{}@{tenant}.example", self.pick(&ACTORS))),
            reason: Some(
                if exception {
                    "compensating control in place"
                } else {
                    "triaged"
                }
                .into(),
            ),
            due_at: (!exception).then(|| Timestamp(at.0 + 7 * 86_400_000)),
            expires_at: exception.then(|| Timestamp(at.0 + 86_400_000)),
        })
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
        let event_id = self.next_id(t);
        InputEvent::Approval(ApprovalEvent {
            event_id,
            tenant_id: tenant.clone(),
            occurred_at: self.now(),
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
        let event_id = self.next_id(t);
        InputEvent::Approval(ApprovalEvent {
            event_id,
            tenant_id: tenant.clone(),
            occurred_at: self.now(),
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
        let kind = self.rng.gen_range(0..4);
        let e = self.entity();
        let (kind, id) = match kind {
            0 => (AssetKind::Agent, self.agent(e)),
            1 => (AssetKind::Repo, self.repo(t, e)),
            2 => {
                let (server, tool) = self.mcp_tool(e);
                (AssetKind::McpTool, format!("{server}/{tool}"))
            }
            _ => (AssetKind::ModelEndpoint, self.model(e)),
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
        let event_id = self.next_id(t);
        InputEvent::Registry(RegistryEvent {
            event_id,
            tenant_id: self.tenants[t].clone(),
            occurred_at: self.now(),
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
                && d.evidence.as_ref().is_some_and(|ev| ev.signature.is_none())
            {
                open.insert((d.tenant_id.clone(), unsigned_finding(d)));
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
    fn the_keyed_preset_gives_the_same_bytes_for_the_same_seed_and_none_shared_across_seeds() {
        let records = |seed| -> Vec<Vec<u8>> {
            let mut g = LoadGen::keyed(seed, 4, 400);
            (0..2000).map(|_| g.next_record().bytes).collect()
        };
        assert_eq!(records(5), records(5));
        let ids = |seed| -> std::collections::BTreeSet<String> {
            let mut g = LoadGen::keyed(seed, 4, 400);
            (0..2000)
                .map(|_| g.next_event().event_id().to_owned())
                .collect()
        };
        assert!(ids(5).is_disjoint(&ids(6)));
        // A fixed clock: 10 ms per new event from the start, whatever the wall clock says.
        let mut g = LoadGen::keyed(5, 1, 8).with_duplicates(0.0);
        let times: Vec<i64> = (0..50).map(|_| g.next_event().occurred_at().0).collect();
        let expected: Vec<i64> = (1..=50).map(|i| KEYED_START.0 + 10 * i).collect();
        assert_eq!(times, expected);
    }

    #[test]
    fn a_bounded_key_space_bounds_the_entities_and_registers_the_ones_decisions_use() {
        let events = LoadGen::keyed(3, 2, 40).batch(20_000);
        let mut agents = std::collections::BTreeSet::new();
        let mut registered = std::collections::BTreeSet::new();
        for e in &events {
            match e {
                InputEvent::Decision(d) => {
                    agents.insert((d.tenant_id.clone(), d.agent_id.clone()));
                    assert!(d.evidence.iter().all(|ev| ev.signature.is_none()));
                }
                InputEvent::Registry(r) => {
                    let a = r.asset.as_ref().unwrap();
                    if a.asset_kind == AssetKind::Agent {
                        registered.insert((r.tenant_id.clone(), a.asset_id.clone()));
                    }
                    assert_ne!(a.asset_kind, AssetKind::TrustRoot);
                }
                InputEvent::Approval(_) => {}
            }
        }
        // 20 entities per tenant, numbered: at most 20 agents each, every one of them in use.
        assert!(agents.len() > 30 && agents.len() <= 40, "{}", agents.len());
        assert!(
            agents
                .iter()
                .all(|(_, a)| a.rsplit_once('-').unwrap().1.parse::<u32>().is_ok())
        );
        assert!(registered.is_subset(&agents) && registered.len() > 20);
        // Wider key space, more agents: it scales.
        let wide = LoadGen::keyed(3, 1, 10_000).batch(20_000);
        let wide: std::collections::BTreeSet<_> = wide
            .iter()
            .filter_map(|e| match e {
                InputEvent::Decision(d) => Some(d.control_id.clone()),
                _ => None,
            })
            .collect();
        assert!(wide.len() > 50, "{}", wide.len());
    }

    #[test]
    fn duplicates_re_send_recent_events_and_triage_follows_raised_findings() {
        let events = LoadGen::keyed(9, 3, 300).batch(50_000);
        let mut seen = std::collections::BTreeSet::new();
        let mut raised = std::collections::BTreeSet::new();
        let (mut duplicates, mut assigned, mut excepted) = (0, 0, 0);
        for e in &events {
            // Valid as ingest and the projector check it.
            assert_eq!(InputEvent::from_json(e.to_json()).as_ref(), Ok(e));
            if !seen.insert(e.event_id().to_owned()) {
                duplicates += 1;
                continue;
            }
            match e {
                InputEvent::Decision(d)
                    if matches!(d.risk, Risk::High | Risk::Critical)
                        && d.verdict == Verdict::Allow =>
                {
                    raised.insert((d.tenant_id.clone(), no_approval_finding(d)));
                }
                InputEvent::Approval(a)
                    if matches!(
                        a.kind,
                        ApprovalKind::FindingAssigned | ApprovalKind::ExceptionGranted
                    ) =>
                {
                    let finding = a.finding_id.clone().unwrap();
                    assert!(raised.contains(&(a.tenant_id.clone(), finding)));
                    if a.kind == ApprovalKind::FindingAssigned {
                        assert!(a.owner.is_some() && a.due_at.is_some());
                        assigned += 1;
                    } else {
                        assert!(a.exception_id.is_some() && a.expires_at.is_some());
                        excepted += 1;
                    }
                }
                _ => {}
            }
        }
        // 1 % re-sent, 2 % triage (a quarter of it exceptions), within sampling error.
        assert!((350..650).contains(&duplicates), "{duplicates}");
        assert!((500..1000).contains(&assigned), "{assigned}");
        assert!((150..400).contains(&excepted), "{excepted}");
        // The default generator re-sends nothing and triages nothing.
        let plain = LoadGen::new(3, 9, "r1").batch(20_000);
        let ids: std::collections::BTreeSet<_> = plain.iter().map(InputEvent::event_id).collect();
        assert_eq!(ids.len(), plain.len());
        assert!(!plain.iter().any(|e| matches!(e, InputEvent::Approval(a)
            if matches!(a.kind, ApprovalKind::FindingAssigned | ApprovalKind::ExceptionGranted))));
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
