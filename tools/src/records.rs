//! A deterministic generator of realistic input events for load, crash and scale tests and the
//! benchmarks: many tenants, a bounded set of entities per tenant, a mix of decisions,
//! approvals and registry changes, and occasional re-sent duplicates.

use aispm_schemas::codec::encode_single_object;
use aispm_schemas::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One generated record.
#[derive(Debug, Clone)]
pub struct Generated {
    pub kind: InputKind,
    pub tenant: String,
    pub bytes: Vec<u8>,
}

impl Generated {
    /// The record of an event: its input topic, key and Avro single-object bytes.
    pub fn of(event: &InputEvent) -> Generated {
        let (kind, bytes) = match event {
            InputEvent::Decision(d) => (InputKind::Decision, encode_single_object(d)),
            InputEvent::Approval(a) => (InputKind::Approval, encode_single_object(a)),
            InputEvent::Registry(r) => (InputKind::Registry, encode_single_object(r)),
        };
        Generated {
            kind,
            tenant: event.tenant_id().to_owned(),
            bytes: bytes.expect("encodes"),
        }
    }
}

/// The generator.
#[derive(Debug)]
pub struct Gen {
    rng: StdRng,
    tenants: usize,
    entities: usize,
    seed: u64,
    seq: u64,
    t0: i64,
    recent: Vec<InputEvent>,
    /// Fraction of records that re-send an earlier event (same event id).
    pub duplicate_rate: f64,
}

const T0: i64 = 1_763_719_200_000;

impl Gen {
    /// `tenants` tenants with about `entities` distinct entities (agents, tools, endpoints,
    /// controls) in all.
    pub fn new(seed: u64, tenants: usize, entities: usize) -> Self {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            seed,
            tenants: tenants.max(1),
            entities: entities.max(4),
            seq: 0,
            t0: T0,
            recent: Vec::new(),
            duplicate_rate: 0.01,
        }
    }

    fn pick(&mut self, n: usize) -> usize {
        self.rng.gen_range(0..n.max(1))
    }

    /// The next record.
    pub fn next_record(&mut self) -> Generated {
        Generated::of(&self.next_event())
    }

    /// The next event (its JSON form, `to_json`, is what the ingest API takes).
    pub fn next_event(&mut self) -> InputEvent {
        if !self.recent.is_empty() && self.rng.gen_bool(self.duplicate_rate) {
            let i = self.pick(self.recent.len());
            return self.recent[i].clone();
        }
        self.seq += 1;
        let tenant = format!("tenant-{:05}", self.pick(self.tenants));
        let per_tenant = (self.entities / self.tenants).max(4);
        let e = self.pick(per_tenant);
        let at = Timestamp(self.t0 + (self.seq as i64) * 10);
        // Event ids are unique across generators: the seed is part of them.
        let id = format!("g{}-{}", self.seed, self.seq);
        let roll = self.pick(100);
        let g = if roll < 84 {
            let kinds = [
                ActionKind::File,
                ActionKind::Command,
                ActionKind::Git,
                ActionKind::Mcp,
                ActionKind::Model,
            ];
            let action = kinds[self.pick(kinds.len())];
            let risk = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical][self.pick(4)];
            let d = DecisionEvent {
                event_id: id.clone(),
                tenant_id: tenant.clone(),
                occurred_at: at,
                source: "gateway".into(),
                agent_id: format!("agent-{}", e % 50),
                actor: format!("user-{}", self.pick(20)),
                environment: Environment::Production,
                action_kind: action,
                target: format!("target-{e}"),
                repo: Some(format!("repo-{}", e % 30)),
                workflow: (e.is_multiple_of(3)).then(|| format!("wf-{}", e % 10)),
                mcp_server: (action == ActionKind::Mcp).then(|| format!("srv-{}", e % 8)),
                mcp_tool: (action == ActionKind::Mcp).then(|| format!("tool-{e}")),
                model_endpoint: (action == ActionKind::Model).then(|| format!("model-{}", e % 6)),
                control_id: (!e.is_multiple_of(5)).then(|| format!("ctl-{}", e % 12)),
                policy_id: Some("pol-1".into()),
                mode: if e.is_multiple_of(7) {
                    Mode::Shadow
                } else {
                    Mode::Enforced
                },
                verdict: [
                    Verdict::Allow,
                    Verdict::Allow,
                    Verdict::Deny,
                    Verdict::RequireApproval,
                ][self.pick(4)],
                risk,
                data_classes: if action == ActionKind::Model && e.is_multiple_of(4) {
                    vec!["pii".into()]
                } else {
                    vec![]
                },
                synthetic: self.rng.gen_bool(0.1),
                approval_id: None,
                api_key_id: None,
                scopes_used: vec![],
                evidence: (e.is_multiple_of(2)).then(|| Evidence {
                    evidence_id: format!("ev-{id}"),
                    sha256: format!("{:064x}", self.seq),
                    uri: format!("s3://evidence/{id}"),
                    signature: None,
                    key_id: None,
                }),
            };
            InputEvent::Decision(d)
        } else if roll < 92 {
            let kinds = [
                ApprovalKind::ApprovalGranted,
                ApprovalKind::FindingAssigned,
                ApprovalKind::FindingResolved,
                ApprovalKind::ExceptionGranted,
            ];
            let kind = kinds[self.pick(kinds.len())];
            let back = self.seq.saturating_sub(self.rng.gen_range(1..200));
            let a = ApprovalEvent {
                event_id: id,
                tenant_id: tenant.clone(),
                occurred_at: at,
                source: "approvals".into(),
                kind,
                decision_id: Some(format!("g{}-{back}", self.seed)),
                finding_id: Some(format!("AISPM-APR-001:g{}-{back}", self.seed)),
                control_id: None,
                exception_id: None,
                actor: "approver".into(),
                owner: Some(format!("owner-{}", e % 9)),
                reason: Some("reviewed".into()),
                due_at: Some(Timestamp(at.0 + 7 * 86_400_000)),
                expires_at: Some(Timestamp(at.0 + 86_400_000)),
            };
            InputEvent::Approval(a)
        } else {
            let asset_kinds = [
                AssetKind::Agent,
                AssetKind::McpTool,
                AssetKind::ModelEndpoint,
                AssetKind::Control,
            ];
            let kind = asset_kinds[self.pick(asset_kinds.len())];
            let asset_id = match kind {
                AssetKind::Agent => format!("agent-{}", e % 50),
                AssetKind::McpTool => format!("srv-{}/tool-{e}", e % 8),
                AssetKind::ModelEndpoint => format!("model-{}", e % 6),
                _ => format!("ctl-{}", e % 12),
            };
            let r = RegistryEvent {
                event_id: id,
                tenant_id: tenant.clone(),
                occurred_at: at,
                source: "registry".into(),
                asset: Some(Asset {
                    owner: (!e.is_multiple_of(3)).then(|| "platform".into()),
                    trust: Some(if e.is_multiple_of(11) {
                        Trust::Quarantined
                    } else {
                        Trust::Trusted
                    }),
                    public: Some(e.is_multiple_of(13)),
                    auth_required: Some(!e.is_multiple_of(13)),
                    approved_data_classes: if e.is_multiple_of(2) {
                        vec!["pii".into()]
                    } else {
                        vec![]
                    },
                    ..Asset::registered(kind, asset_id)
                }),
                validation: None,
            };
            InputEvent::Registry(r)
        };
        if self.recent.len() < 1000 {
            self.recent.push(g.clone());
        } else {
            let i = self.pick(1000);
            self.recent[i] = g.clone();
        }
        g
    }
}
