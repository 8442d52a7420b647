//! The demo scenario: one tenant (default `acme`) whose posture starts with every blocker kind
//! the ingest API can cause, then the events that clear each of them.
//!
//! Phase [`Phase::Open`] (times are relative to the moment it runs, `at`):
//!
//! | blocker | caused by |
//! |---|---|
//! | `missing_live_connector_evidence` | the `okta-connector` `connector_live` validation failed (9 days ago) |
//! | `tenant_isolation_not_proven` | the only passing `tenant_isolation` validation is 45 days old |
//! | `report_delivery_unverified` | no report was ever delivered (the `acme-smtp` provider validation failed) |
//! | `runtime_workflow_synthetic_only` | the git path has synthetic (fixture) decisions only in production; the real git pushes of the last hour went through the staging gateway (environment `trial`), which counts for the trial stage only |
//! | `evidence_stale` | the newest production evidence is 8 days old (the staging pushes' evidence is fresh, for trial) |
//! | `critical_finding_unowned` | the shadow agent `slack-summarizer` sent PII to `openai-gpt-4o`, which is approved for `internal` only: finding `AISPM-DATA-001:openai-gpt-4o/pii`, critical, no owner |
//! | `finding_overdue` | that critical finding is past its 3-day SLA, and `AISPM-APR-001:coder-agent/ctl-shell-exec` (a high-risk command allowed without approval) is past the due date it was assigned |
//! | `exception_expired` | exception `<tenant>-exc-mcp-guard-rollout` covering `AISPM-CTRL-001:ctl-mcp-guard` expired 2 days ago |
//! | `control_missing` | `ctl-mcp-guard` runs in shadow mode while the shadow agent `notebook-agent` calls the risky MCP tool `github-mcp/delete_repo` |
//! | `break_glass_unreviewed` | a break-glass `kubectl delete namespace` 9 days ago was never reviewed |
//!
//! Phase [`Phase::Remediate`] clears what the tenant's own people and systems can: a fresh
//! passing `runtime_workflow` validation for the staging (trial) and production deployments,
//! signed by the validator key `aispm-demo-validator` (registered in the open phase with
//! `scopes: ["validator"]`); the shadow agents registered with owners; real (non-synthetic) git
//! decisions; `ctl-mcp-guard` enforcing (denying `delete_repo`); the critical finding assigned
//! with a due date; the overdue findings resolved; the expired exception revoked; the
//! break-glass reviewed. Three blockers remain, for aispm's validators to clear by doing the
//! work, never for the scenario to claim:
//! `missing_live_connector_evidence` until the connector probe (`aispm-validate connector`)
//! reads the live system with the connector's credential and signs a pass;
//! `tenant_isolation_not_proven` until the isolation probe (`aispm-validate isolation`) has
//! tried every cross-tenant read and signed a pass; and `report_delivery_unverified` until the
//! reporter delivers a packet (`POST /v1/tenants/{tenant}/reports` on the reporter), which
//! also proves the `report_provider` it reached.
//!
//! Evidence is signed with a demo Ed25519 key derived from the tenant name and registered as
//! the trust root `<tenant>-evidence-key`, so evidence rows verify. Event ids are
//! deterministic (`<tenant>-open-…`, `<tenant>-fix-…`): replaying a phase is idempotent, and
//! the remediation can name the open phase's decisions and findings.

use aispm_schemas::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A scenario phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// The events that open every blocker.
    Open,
    /// The events that clear them.
    Remediate,
    /// Both, one after the other (remediation one second after the open phase's `at`).
    All,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Where the demo's blockers come from; public so tests and the README can name them.
pub mod ids {
    use aispm_schemas::finding_subject;

    /// The critical finding left unowned (and overdue) in the open phase.
    pub const CRITICAL_FINDING: &str = "AISPM-DATA-001:openai-gpt-4o/pii";
    /// The shadow-mode control's finding the expired exception covers.
    pub const SHADOW_CONTROL_FINDING: &str = "AISPM-CTRL-001:ctl-mcp-guard";
    /// The control in shadow mode on the high-risk MCP path.
    pub const SHADOW_CONTROL: &str = "ctl-mcp-guard";
    /// coder-agent's API key: granted `repo:read`, `repo:write` and `actions:write`, used
    /// with `repo:write` only (AISPM-KEY-002).
    pub const CODER_KEY: &str = "coder-agent-ci-key";
    /// The risky MCP tool (`server/tool`).
    pub const RISKY_TOOL: &str = "github-mcp/delete_repo";
    /// Agents seen deciding but not registered in the open phase.
    pub const SHADOW_AGENTS: [&str; 2] = ["notebook-agent", "slack-summarizer"];

    /// The expired exception.
    pub fn exception(tenant: &str) -> String {
        format!("{tenant}-exc-mcp-guard-rollout")
    }

    /// The decision behind the critical finding: a shadow agent sent PII to a model endpoint.
    pub fn critical_decision(tenant: &str) -> String {
        format!("{tenant}-open-d14-model-pii")
    }

    /// The break-glass decision (also the break-glass exception's id).
    pub fn break_glass_decision(tenant: &str) -> String {
        format!("{tenant}-open-d15-break-glass-kubectl")
    }

    /// The high-risk command allowed without approval whose finding is overdue.
    pub fn unapproved_command_decision(tenant: &str) -> String {
        format!("{tenant}-open-d10-curl-pipe-sh")
    }

    /// The shadow-mode MCP decision allowed without approval.
    pub fn shadow_mcp_decision(tenant: &str) -> String {
        format!("{tenant}-open-d12-mcp-delete-repo-shadow")
    }

    /// The finding the unapproved command raised: high-risk actions allowed without approval
    /// by `coder-agent` under `ctl-shell-exec` (one finding per agent and control).
    pub fn unapproved_command_finding() -> String {
        format!(
            "AISPM-APR-001:{}",
            finding_subject(&["coder-agent", "ctl-shell-exec"])
        )
    }

    /// The finding the shadow-mode MCP decision raised (`notebook-agent` under the guard).
    pub fn shadow_mcp_finding() -> String {
        format!(
            "AISPM-APR-001:{}",
            finding_subject(&["notebook-agent", SHADOW_CONTROL])
        )
    }

    /// The trust root whose key signs the demo evidence.
    pub fn trust_root(tenant: &str) -> String {
        format!("{tenant}-evidence-key")
    }

    /// The trust root (scopes `validator`) whose key signs the demo's validation results
    /// ([`super::demo_validator_key`]): the scenario registers it in its tenant; the same key
    /// signs the isolation probe's results in the demo.
    pub const VALIDATOR_KEY: &str = "aispm-demo-validator";
}

/// The events of `phase` for `tenant`, in event-time order, anchored at `at` ("now").
pub fn demo(tenant: &str, phase: Phase, at: Timestamp) -> Vec<InputEvent> {
    let demo = Demo::new(tenant, at);
    match phase {
        Phase::Open => demo.open(),
        Phase::Remediate => demo.remediate(),
        Phase::All => {
            let mut events = demo.open();
            events.extend(Demo::new(tenant, at.plus(Duration::from_secs(1))).remediate());
            events
        }
    }
}

/// The blockers the open phase raises for the production stage: (kind, subject).
pub fn expected_open_blockers(tenant: &str) -> Vec<(BlockerKind, Option<String>)> {
    use BlockerKind::*;
    let s = |v: &str| Some(v.to_owned());
    vec![
        (MissingLiveConnectorEvidence, s("okta-connector")),
        (TenantIsolationNotProven, None),
        (ReportDeliveryUnverified, None),
        (RuntimeWorkflowSyntheticOnly, s("git")),
        (EvidenceStale, None),
        (CriticalFindingUnowned, s(ids::CRITICAL_FINDING)),
        (FindingOverdue, s(ids::CRITICAL_FINDING)),
        (FindingOverdue, Some(ids::unapproved_command_finding())),
        (ExceptionExpired, Some(ids::exception(tenant))),
        (ControlMissing, s(ids::SHADOW_CONTROL)),
        (
            BreakGlassUnreviewed,
            Some(ids::break_glass_decision(tenant)),
        ),
    ]
}

/// The production blockers left after the remediation phase, for aispm's validators: the live
/// connector needs the connector probe (`aispm-validate connector`), report delivery the
/// reporter, and tenant isolation the isolation probe (`aispm-validate isolation`).
pub fn expected_remediated_blockers() -> Vec<(BlockerKind, Option<String>)> {
    vec![
        (
            BlockerKind::MissingLiveConnectorEvidence,
            Some("okta-connector".to_owned()),
        ),
        (BlockerKind::TenantIsolationNotProven, None),
        (BlockerKind::ReportDeliveryUnverified, None),
    ]
}

/// The scenario's building blocks for one tenant at one instant.
#[derive(Debug)]
struct Demo {
    tenant: String,
    at: Timestamp,
    key: SigningKey,
    validator: SigningKey,
}

const SOURCE_GATEWAY: &str = "cavra-gateway";
const SOURCE_REGISTRY: &str = "asset-registry";
const SOURCE_VALIDATOR: &str = "aispm-validator";
const SOURCE_APPROVALS: &str = "approvals-service";

impl Demo {
    fn new(tenant: &str, at: Timestamp) -> Self {
        Demo {
            tenant: tenant.to_owned(),
            at,
            key: demo_key(tenant),
            validator: demo_validator_key(),
        }
    }

    fn ago(&self, secs: u64) -> Timestamp {
        self.at.minus(Duration::from_secs(secs))
    }

    fn id(&self, phase: &str, slug: &str) -> String {
        format!("{}-{phase}-{slug}", self.tenant)
    }

    /// Signed evidence for an artefact named `what`.
    fn evidence(&self, slug: &str, what: &str) -> Evidence {
        let digest: [u8; 32] =
            Sha256::digest(format!("{}/{slug}/{what}", self.tenant).as_bytes()).into();
        let evidence_id = format!("ev-{}-{slug}", self.tenant);
        Evidence {
            signature: Some(signature::sign(
                &self.key,
                &self.tenant,
                &evidence_id,
                &digest,
            )),
            evidence_id,
            sha256: hex::encode(digest),
            uri: format!("s3://{}-aispm-evidence/{slug}.json", self.tenant),
            key_id: Some(ids::trust_root(&self.tenant)),
        }
    }

    fn asset(&self, id: String, when: Timestamp, asset: Asset) -> InputEvent {
        InputEvent::Registry(RegistryEvent {
            event_id: id,
            tenant_id: self.tenant.clone(),
            occurred_at: when,
            source: SOURCE_REGISTRY.into(),
            asset: Some(asset),
            validation: None,
        })
    }

    /// A validation of `environment`'s deployment, signed by the demo's validator key.
    #[allow(clippy::too_many_arguments)]
    fn validation(
        &self,
        environment: Environment,
        id: String,
        when: Timestamp,
        check_kind: CheckKind,
        result: CheckResult,
        subject: Option<&str>,
        detail: &str,
        evidence: Option<Evidence>,
    ) -> InputEvent {
        let mut r = RegistryEvent {
            event_id: id,
            tenant_id: self.tenant.clone(),
            occurred_at: when,
            source: SOURCE_VALIDATOR.into(),
            asset: None,
            validation: Some(Validation {
                check_kind,
                result,
                subject: subject.map(str::to_owned),
                detail: Some(detail.to_owned()),
                evidence,
                environment: Some(environment),
            }),
        };
        // The validator signs its claim with the evidence: only then does the result count.
        signature::sign_validation(&self.validator, ids::VALIDATOR_KEY, &mut r);
        InputEvent::Registry(r)
    }

    fn approval(
        &self,
        id: String,
        when: Timestamp,
        kind: ApprovalKind,
        actor: &str,
        f: impl FnOnce(&mut ApprovalEvent),
    ) -> InputEvent {
        let mut a = ApprovalEvent {
            event_id: id,
            tenant_id: self.tenant.clone(),
            occurred_at: when,
            source: SOURCE_APPROVALS.into(),
            kind,
            decision_id: None,
            finding_id: None,
            control_id: None,
            exception_id: None,
            actor: actor.into(),
            owner: None,
            reason: None,
            due_at: None,
            expires_at: None,
        };
        f(&mut a);
        InputEvent::Approval(a)
    }

    /// A low-risk git push by `coder-agent` to `acme/payments-api`, allowed by the enforcing
    /// `ctl-git-push`; `f` fills in the rest.
    fn git_push(
        &self,
        id: String,
        when: Timestamp,
        target: &str,
        f: impl FnOnce(&mut DecisionEvent),
    ) -> InputEvent {
        self.decision(
            id,
            when,
            "coder-agent",
            ActionKind::Git,
            target,
            Some("ctl-git-push"),
            Mode::Enforced,
            Verdict::Allow,
            Risk::Low,
            |d| {
                d.repo = Some("acme/payments-api".into());
                d.api_key_id = Some(ids::CODER_KEY.into());
                d.scopes_used = vec!["repo:write".into()];
                f(d);
            },
        )
    }

    /// A decision with the common fields; `f` fills in the rest.
    #[allow(clippy::too_many_arguments)]
    fn decision(
        &self,
        id: String,
        when: Timestamp,
        agent: &str,
        action_kind: ActionKind,
        target: &str,
        control: Option<&str>,
        mode: Mode,
        verdict: Verdict,
        risk: Risk,
        f: impl FnOnce(&mut DecisionEvent),
    ) -> InputEvent {
        let mut d = DecisionEvent {
            event_id: id,
            tenant_id: self.tenant.clone(),
            occurred_at: when,
            source: SOURCE_GATEWAY.into(),
            agent_id: agent.into(),
            actor: "dev-alice@acme.example".into(),
            environment: Environment::Production,
            action_kind,
            target: target.into(),
            repo: None,
            workflow: None,
            mcp_server: None,
            mcp_tool: None,
            model_endpoint: None,
            control_id: control.map(str::to_owned),
            policy_id: control.map(|c| format!("pol-{c}")),
            mode,
            verdict,
            risk,
            data_classes: vec![],
            synthetic: false,
            approval_id: None,
            api_key_id: None,
            scopes_used: vec![],
            evidence: None,
        };
        f(&mut d);
        InputEvent::Decision(d)
    }

    fn open(&self) -> Vec<InputEvent> {
        let mut ev = self.registrations();
        ev.extend(self.old_governance());
        ev.extend(self.enforced_traffic());
        ev.extend(self.ungoverned_traffic());
        ev.extend(self.live_traffic());
        sort_by_time(&mut ev);
        ev
    }

    /// The open phase's registry: the trust root, agents, tools, endpoints, keys and controls,
    /// registered forty days ago.
    fn registrations(&self) -> Vec<InputEvent> {
        use Risk::*;
        let t = &self.tenant;
        let reg = |slug: &str| self.id("open", slug);
        let registered = |kind, id: &str, owner: &str| Asset {
            owner: Some(owner.to_owned()),
            environment: Some(Environment::Production),
            ..Asset::registered(kind, id)
        };
        let r0 = self.ago(40 * DAY);
        let mut ev = vec![
            self.asset(
                reg("r01-trust-root"),
                r0,
                Asset {
                    public_key: Some(STANDARD.encode(self.key.verifying_key().to_bytes())),
                    ..registered(AssetKind::TrustRoot, &ids::trust_root(t), "security-team")
                },
            ),
            self.asset(
                reg("r01-validator-key"),
                r0,
                Asset {
                    public_key: Some(STANDARD.encode(self.validator.verifying_key().to_bytes())),
                    scopes: vec![VALIDATOR_SCOPE.to_owned()],
                    ..registered(AssetKind::TrustRoot, ids::VALIDATOR_KEY, "security-team")
                },
            ),
            self.asset(
                reg("r02-agent-coder"),
                r0,
                Asset {
                    criticality: Some(High),
                    ..registered(AssetKind::Agent, "coder-agent", "platform-team")
                },
            ),
            // coder-agent's key: its git pushes exercise `repo:write` only, so the other two
            // scopes go unused for the 30-day window (AISPM-KEY-002, over-privilege).
            self.asset(
                reg("r02b-key-coder"),
                r0,
                Asset {
                    scopes: vec![
                        "repo:read".into(),
                        "repo:write".into(),
                        "actions:write".into(),
                    ],
                    attributes: [("agent_id".to_owned(), "coder-agent".to_owned())].into(),
                    ..registered(AssetKind::ApiKey, ids::CODER_KEY, "platform-team")
                },
            ),
            self.asset(
                reg("r03-agent-review"),
                r0,
                registered(AssetKind::Agent, "review-agent", "appsec-team"),
            ),
            self.asset(
                reg("r04-repo"),
                r0,
                Asset {
                    criticality: Some(Critical),
                    ..registered(AssetKind::Repo, "acme/payments-api", "payments-team")
                },
            ),
            self.asset(
                reg("r05-workflow"),
                r0,
                registered(AssetKind::Workflow, "deploy-prod", "platform-team"),
            ),
            self.asset(
                reg("r06-mcp-server"),
                r0,
                Asset {
                    trust: Some(Trust::Trusted),
                    ..registered(AssetKind::McpServer, "github-mcp", "platform-team")
                },
            ),
            self.asset(
                reg("r07-mcp-tool"),
                r0,
                Asset {
                    trust: Some(Trust::Risky),
                    criticality: Some(Critical),
                    scopes: vec!["repo:delete".into()],
                    ..registered(AssetKind::McpTool, ids::RISKY_TOOL, "platform-team")
                },
            ),
            self.asset(
                reg("r07b-mcp-tool-list"),
                r0,
                Asset {
                    trust: Some(Trust::Trusted),
                    scopes: vec!["issues:read".into()],
                    ..registered(
                        AssetKind::McpTool,
                        "github-mcp/list_issues",
                        "platform-team",
                    )
                },
            ),
            self.asset(
                reg("r08-model"),
                r0,
                Asset {
                    trust: Some(Trust::Trusted),
                    public: Some(false),
                    auth_required: Some(true),
                    approved_data_classes: vec!["internal".into()],
                    ..registered(AssetKind::ModelEndpoint, "openai-gpt-4o", "platform-team")
                },
            ),
            self.asset(
                reg("r09-connector"),
                r0,
                Asset {
                    scopes: vec!["users:read".into(), "groups:read".into()],
                    ..registered(AssetKind::Connector, "okta-connector", "identity-team")
                },
            ),
            self.asset(
                reg("r10-report-provider"),
                r0,
                Asset {
                    recipients: vec![
                        format!("ciso@{t}.example"),
                        format!("security-leads@{t}.example"),
                    ],
                    ..registered(
                        AssetKind::ReportProvider,
                        &format!("{t}-smtp"),
                        "security-team",
                    )
                },
            ),
        ];
        for (n, (control, kinds, mapping)) in [
            ("ctl-file-write", "file", "SOC2:CC6.1"),
            ("ctl-shell-exec", "command", "SOC2:CC6.8"),
            ("ctl-git-push", "git", "SOC2:CC8.1"),
            (ids::SHADOW_CONTROL, "mcp", "SOC2:CC6.6"),
            ("ctl-model-egress", "model", "SOC2:CC6.7"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut asset = registered(AssetKind::Control, control, "appsec-team");
            asset.framework_mappings = vec![mapping.into(), "NIST-AI-RMF MANAGE".into()];
            asset.attributes.insert("action_kind".into(), kinds.into());
            ev.push(self.asset(reg(&format!("r{:02}-control", 11 + n)), r0, asset));
        }
        ev
    }

    /// The open phase's governance, long ago: an isolation check now too old, an exception
    /// and an accepted risk, a command allowed without approval and assigned past its due date.
    fn old_governance(&self) -> Vec<InputEvent> {
        use ActionKind::*;
        use Mode::*;
        use Risk::*;
        use Verdict::*;
        let t = &self.tenant;
        let reg = |slug: &str| self.id("open", slug);
        let mut ev = Vec::new();
        // The only passing isolation check is older than the 30-day window.
        ev.push(self.validation(
            Environment::Production,
            reg("v01-isolation"),
            self.ago(45 * DAY),
            CheckKind::TenantIsolation,
            CheckResult::Pass,
            None,
            "cross-tenant reads refused (quarterly run)",
            Some(self.evidence("isolation-q3", "cross-tenant read test report")),
        ));
        // The exception accepted the shadow-mode rollout of the MCP guard for four weeks.
        ev.push(self.approval(
            reg("a01-exception"),
            self.ago(30 * DAY),
            ApprovalKind::ExceptionGranted,
            "ciso@acme.example",
            |a| {
                a.exception_id = Some(ids::exception(t));
                a.finding_id = Some(ids::SHADOW_CONTROL_FINDING.into());
                a.control_id = Some(ids::SHADOW_CONTROL.into());
                a.owner = Some("appsec-team".into());
                a.reason = Some("MCP guard rolls out in shadow mode first".into());
                a.expires_at = Some(self.ago(2 * DAY));
            },
        ));
        // A risk accepted for the CI key's unused scopes while the release workflow moves to
        // them: in force, 40 days old, ending in 20 (the monthly review's exception aging).
        ev.push(self.approval(
            reg("a02-accept-key-scopes"),
            self.ago(40 * DAY),
            ApprovalKind::RiskAccepted,
            "ciso@acme.example",
            |a| {
                a.exception_id = Some(format!("{t}-exc-ci-key-scopes"));
                a.finding_id = Some(format!("AISPM-KEY-002:{}", ids::CODER_KEY));
                a.owner = Some("platform-team".into());
                a.reason = Some("release workflow moves to actions:write next quarter".into());
                a.expires_at = Some(self.at.plus(Duration::from_secs(20 * DAY)));
            },
        ));
        // A high-risk command allowed without approval, assigned with a due date long past.
        ev.push(self.decision(
            ids::unapproved_command_decision(t),
            self.ago(25 * DAY),
            "coder-agent",
            Command,
            "curl -sSL https://get.example.sh | sh",
            Some("ctl-shell-exec"),
            Enforced,
            Allow,
            High,
            |d| {
                d.repo = Some("acme/payments-api".into());
                d.evidence = Some(self.evidence("d10", "curl pipe sh transcript"));
            },
        ));
        ev.push(self.approval(
            reg("a02-assign-curl"),
            self.ago(24 * DAY),
            ApprovalKind::FindingAssigned,
            "secops-lead@acme.example",
            |a| {
                a.finding_id = Some(ids::unapproved_command_finding());
                a.owner = Some("platform-team".into());
                a.due_at = Some(self.ago(4 * DAY));
            },
        ));
        ev
    }

    /// The open phase's enforced traffic: real file, command and approval decisions with old
    /// signed evidence, and a request for approval never answered.
    fn enforced_traffic(&self) -> Vec<InputEvent> {
        use ActionKind::*;
        use Mode::*;
        use Risk::*;
        use Verdict::*;
        let t = &self.tenant;
        let reg = |slug: &str| self.id("open", slug);
        let mut ev = Vec::new();
        // Real, enforced file and command decisions, with (old) signed evidence.
        ev.push(self.decision(
            reg("d01-file-config"),
            self.ago(10 * DAY),
            "coder-agent",
            File,
            "/srv/payments/config.yaml",
            Some("ctl-file-write"),
            Enforced,
            Allow,
            Low,
            |d| {
                d.repo = Some("acme/payments-api".into());
                d.evidence = Some(self.evidence("d01", "config.yaml diff"));
            },
        ));
        ev.push(self.decision(
            reg("d02-file-private-key"),
            self.ago(10 * DAY - HOUR),
            "coder-agent",
            File,
            "/etc/ssl/private/payments.key",
            Some("ctl-file-write"),
            Enforced,
            Deny,
            High,
            |d| {
                d.data_classes = vec!["secret".into()];
                d.evidence = Some(self.evidence("d02", "private key write attempt"));
            },
        ));
        let terraform = reg("d03-terraform-apply");
        ev.push(self.decision(
            terraform.clone(),
            self.ago(9 * DAY + 2 * HOUR),
            "coder-agent",
            Command,
            "terraform apply -auto-approve",
            Some("ctl-shell-exec"),
            Enforced,
            RequireApproval,
            High,
            |d| {
                d.workflow = Some("deploy-prod".into());
                d.evidence = Some(self.evidence("d03", "terraform plan"));
            },
        ));
        let approval = reg("a03-approve-terraform");
        ev.push(self.approval(
            approval.clone(),
            self.ago(9 * DAY + HOUR),
            ApprovalKind::ApprovalGranted,
            "sre-oncall@acme.example",
            |a| {
                a.decision_id = Some(terraform.clone());
                a.reason = Some("change CHG-4312 approved".into());
            },
        ));
        ev.push(self.decision(
            reg("d04-terraform-apply-approved"),
            self.ago(9 * DAY + HOUR - 5 * MINUTE),
            "coder-agent",
            Command,
            "terraform apply -auto-approve",
            Some("ctl-shell-exec"),
            Enforced,
            Allow,
            High,
            |d| {
                d.workflow = Some("deploy-prod".into());
                d.approval_id = Some(approval.clone());
                d.evidence = Some(self.evidence("d04", "terraform apply log"));
            },
        ));
        ev.push(self.validation(
            Environment::Production,
            reg("v02-connector"),
            self.ago(9 * DAY),
            CheckKind::ConnectorLive,
            CheckResult::Fail,
            Some("okta-connector"),
            "GET https://acme.okta.example/api/v1/users answered 401",
            // The probe's transcript, which the validator signs with its result.
            Some(self.evidence("v02-connector", "okta connector probe transcript")),
        ));
        ev.push(self.validation(
            Environment::Production,
            reg("v03-report-provider"),
            self.ago(9 * DAY),
            CheckKind::ReportProvider,
            CheckResult::Fail,
            Some(&format!("{t}-smtp")),
            "SMTP AUTH answered 535 authentication failed",
            Some(self.evidence("v03-report-provider", "smtp provider probe transcript")),
        ));
        // A rollback that asks for approval and is never answered: still pending hours later,
        // when coder-agent goes on acting (AISPM-APR-002, medium: it blocks no stage).
        ev.push(self.decision(
            reg("d16-helm-rollback"),
            self.ago(9 * DAY - 2 * HOUR),
            "coder-agent",
            Command,
            "helm rollback payments 41",
            Some("ctl-shell-exec"),
            Enforced,
            RequireApproval,
            High,
            |d| {
                d.workflow = Some("deploy-prod".into());
                // The control's policy was revised: the monthly review's policy drift.
                d.policy_id = Some("pol-ctl-shell-exec-v2".into());
                d.evidence = Some(self.evidence("d16", "helm rollback plan"));
            },
        ));
        ev
    }

    /// The open phase's ungoverned traffic: unreviewed break-glass, git through fixtures or the
    /// staging gateway only, shadow agents on a risky MCP tool and sending PII.
    fn ungoverned_traffic(&self) -> Vec<InputEvent> {
        use ActionKind::*;
        use Mode::*;
        use Risk::*;
        use Verdict::*;
        let t = &self.tenant;
        let reg = |slug: &str| self.id("open", slug);
        let mut ev = Vec::new();
        // Break-glass, never reviewed.
        ev.push(self.decision(
            ids::break_glass_decision(t),
            self.ago(9 * DAY - HOUR),
            "coder-agent",
            Command,
            "kubectl delete namespace payments-canary",
            Some("ctl-shell-exec"),
            Enforced,
            BreakGlass,
            High,
            |d| {
                d.actor = "sre-bob@acme.example".into();
                d.evidence = Some(self.evidence("d15", "kubectl break-glass session"));
            },
        ));
        ev.push(self.approval(
            reg("a04-break-glass-invoked"),
            self.ago(9 * DAY - HOUR - MINUTE),
            ApprovalKind::BreakGlassInvoked,
            "sre-bob@acme.example",
            |a| {
                a.decision_id = Some(ids::break_glass_decision(t));
                a.reason =
                    Some("canary namespace stuck in a crash loop during incident INC-881".into());
            },
        ));
        // Git only through fixtures.
        for (i, target) in ["git push origin main", "git push origin feature/ci-fixture"]
            .into_iter()
            .enumerate()
        {
            ev.push(self.git_push(
                reg(&format!("d{:02}-git-fixture", 5 + i)),
                self.ago(8 * DAY + HOUR - u64::try_from(i).unwrap_or(0) * MINUTE),
                target,
                |d| {
                    d.synthetic = true;
                    d.source = "ci-fixtures".into();
                },
            ));
        }
        // Real git pushes with fresh evidence, but through the staging gateway: they count for
        // the trial stage only, so production still has synthetic git traffic only and stale
        // evidence (stages read their own facts).
        for (i, target) in [
            "git push origin release/staging",
            "git push origin hotfix/login",
        ]
        .into_iter()
        .enumerate()
        {
            ev.push(self.git_push(
                reg(&format!("d{:02}-git-trial", 7 + i)),
                self.ago(HOUR - u64::try_from(i).unwrap_or(0) * MINUTE),
                target,
                |d| {
                    d.environment = Environment::Trial;
                    d.source = "staging-gateway".into();
                    d.evidence = Some(self.evidence(&format!("open-trial-{i}"), target));
                },
            ));
        }
        // A shadow agent calls the risky MCP tool; the guard only logs.
        ev.push(self.decision(
            ids::shadow_mcp_decision(t),
            self.ago(8 * DAY),
            "notebook-agent",
            Mcp,
            "delete_repo acme/legacy-billing",
            Some(ids::SHADOW_CONTROL),
            Shadow,
            Allow,
            High,
            |d| {
                d.actor = "data-carol@acme.example".into();
                d.mcp_server = Some("github-mcp".into());
                d.mcp_tool = Some("delete_repo".into());
                d.evidence = Some(self.evidence("d12", "delete_repo call transcript"));
            },
        ));
        ev.push(self.decision(
            reg("d13-mcp-list-issues-shadow"),
            self.ago(8 * DAY - 10 * MINUTE),
            "notebook-agent",
            Mcp,
            "list_issues acme/payments-api",
            Some(ids::SHADOW_CONTROL),
            Shadow,
            Allow,
            Low,
            |d| {
                d.actor = "data-carol@acme.example".into();
                d.mcp_server = Some("github-mcp".into());
                d.mcp_tool = Some("list_issues".into());
            },
        ));
        // Another shadow agent sends PII to a model approved for internal data only.
        ev.push(self.decision(
            reg("d14-model-pii"),
            self.ago(8 * DAY - 20 * MINUTE),
            "slack-summarizer",
            Model,
            "chat.completions summarize #support-escalations",
            Some("ctl-model-egress"),
            Enforced,
            Allow,
            Medium,
            |d| {
                d.actor = "svc-slack@acme.example".into();
                d.model_endpoint = Some("openai-gpt-4o".into());
                d.data_classes = vec!["pii".into()];
                d.evidence = Some(self.evidence("d14", "prompt and completion digest"));
            },
        ));
        ev
    }

    /// The open phase's recent, real, low-risk traffic without evidence: the gateways are alive.
    fn live_traffic(&self) -> Vec<InputEvent> {
        use ActionKind::*;
        use Mode::*;
        use Risk::*;
        use Verdict::*;
        let reg = |slug: &str| self.id("open", slug);
        let mut ev = Vec::new();
        // Recent, real, low-risk traffic without evidence: the gateways are alive.
        for (i, (kind, target)) in [
            (File, "/srv/payments/README.md"),
            (Command, "cargo test --workspace"),
            (Mcp, "list_issues acme/payments-api"),
        ]
        .into_iter()
        .enumerate()
        {
            let control = match kind {
                File => "ctl-file-write",
                Command => "ctl-shell-exec",
                _ => ids::SHADOW_CONTROL,
            };
            ev.push(self.decision(
                reg(&format!("d{:02}-recent", 20 + i)),
                self.ago(HOUR - u64::try_from(i).unwrap_or(0) * MINUTE),
                "review-agent",
                kind,
                target,
                Some(control),
                if kind == Mcp { Shadow } else { Enforced },
                Allow,
                Low,
                |d| {
                    if kind == Mcp {
                        d.mcp_server = Some("github-mcp".into());
                        d.mcp_tool = Some("list_issues".into());
                    }
                },
            ));
        }
        ev
    }

    fn remediate(&self) -> Vec<InputEvent> {
        use ActionKind::*;
        use Mode::*;
        use Risk::*;
        use Verdict::*;
        let t = &self.tenant;
        let fix = |slug: &str| self.id("fix", slug);
        let step = |n: u64| self.ago(10 * MINUTE).plus(Duration::from_secs(n * 20));
        let mut ev = Vec::new();
        // Register the shadow agents with owners: they become governed.
        for (i, (agent, owner)) in ids::SHADOW_AGENTS
            .iter()
            .zip(["data-science-team", "support-eng-team"])
            .enumerate()
        {
            ev.push(self.asset(
                fix(&format!("r0{}-register-{agent}", i + 1)),
                step(0),
                Asset {
                    owner: Some(owner.into()),
                    criticality: Some(Medium),
                    environment: Some(Environment::Production),
                    ..Asset::registered(AssetKind::Agent, *agent)
                },
            ));
        }
        // The MCP guard enforces: the risky tool is denied from now on.
        ev.push(self.decision(
            fix("d01-mcp-delete-repo-enforced"),
            step(1),
            "notebook-agent",
            Mcp,
            "delete_repo acme/legacy-billing",
            Some(ids::SHADOW_CONTROL),
            Enforced,
            Deny,
            High,
            |d| {
                d.actor = "data-carol@acme.example".into();
                d.mcp_server = Some("github-mcp".into());
                d.mcp_tool = Some("delete_repo".into());
                d.evidence = Some(self.evidence("fix-d01", "delete_repo denied"));
            },
        ));
        // Real git traffic through the gateway.
        ev.push(self.decision(
            fix("d02-git-push-release"),
            step(2),
            "coder-agent",
            Git,
            "git push origin release/2026-11",
            Some("ctl-git-push"),
            Enforced,
            Allow,
            Low,
            |d| {
                d.repo = Some("acme/payments-api".into());
                d.workflow = Some("deploy-prod".into());
                d.evidence = Some(self.evidence("fix-d02", "git push release"));
            },
        ));
        ev.push(self.decision(
            fix("d03-git-force-push"),
            step(3),
            "coder-agent",
            Git,
            "git push --force origin main",
            Some("ctl-git-push"),
            Enforced,
            Deny,
            High,
            |d| {
                d.repo = Some("acme/payments-api".into());
                d.evidence = Some(self.evidence("fix-d03", "force push denied"));
            },
        ));
        // A fresh, passing validation with signed evidence, for the staging (trial) and the
        // production deployment. Tenant isolation, the live connector and the report provider
        // are not among them: only aispm's validators can prove those, by doing the work.
        for (n, (slug, kind, subject, detail)) in [(
            "v04-runtime-workflow",
            CheckKind::RuntimeWorkflow,
            Some("git".to_owned()),
            "real git pushes observed through the gateway",
        )]
        .into_iter()
        .enumerate()
        {
            for env in [Environment::Production, Environment::Trial] {
                // Production keeps the plain ids; the staging deployment's are suffixed.
                let suffix = if env == Environment::Production {
                    String::new()
                } else {
                    format!("-{env}")
                };
                ev.push(self.validation(
                    env,
                    fix(&format!("{slug}{suffix}")),
                    step(4 + u64::try_from(n).unwrap_or(0)),
                    kind,
                    CheckResult::Pass,
                    subject.as_deref(),
                    detail,
                    Some(self.evidence(&format!("fix-{slug}{suffix}"), detail)),
                ));
            }
        }
        // Findings: the critical one gets an owner and a due date; the overdue ones are resolved.
        ev.push(self.approval(
            fix("a01-assign-critical"),
            step(8),
            ApprovalKind::FindingAssigned,
            "secops-lead@acme.example",
            |a| {
                a.finding_id = Some(ids::CRITICAL_FINDING.into());
                a.owner = Some("privacy-team".into());
                a.due_at = Some(self.at.plus(Duration::from_secs(3 * DAY)));
                a.reason = Some("DPIA for the Slack summarizer; block PII egress meanwhile".into());
            },
        ));
        ev.push(self.approval(
            fix("a02-resolve-curl"),
            step(9),
            ApprovalKind::FindingResolved,
            "platform-lead@acme.example",
            |a| {
                a.finding_id = Some(ids::unapproved_command_finding());
                a.reason = Some(
                    "installer pinned and vendored; pipe-to-shell now requires approval".into(),
                );
            },
        ));
        ev.push(self.approval(
            fix("a03-resolve-shadow-mcp"),
            step(10),
            ApprovalKind::FindingResolved,
            "appsec-lead@acme.example",
            |a| {
                a.finding_id = Some(ids::shadow_mcp_finding());
                a.reason = Some("repository restored from backup; delete_repo now denied".into());
            },
        ));
        ev.push(self.approval(
            fix("a04-revoke-exception"),
            step(11),
            ApprovalKind::ExceptionRevoked,
            "ciso@acme.example",
            |a| {
                a.exception_id = Some(ids::exception(t));
                a.reason = Some(
                    "the MCP guard enforces; the rollout exception is no longer needed".into(),
                );
            },
        ));
        ev.push(self.approval(
            fix("a05-review-break-glass"),
            step(12),
            ApprovalKind::BreakGlassReviewed,
            "sre-lead@acme.example",
            |a| {
                a.decision_id = Some(ids::break_glass_decision(t));
                a.reason = Some("post-incident review of INC-881 done".into());
            },
        ));
        ev.push(self.approval(
            fix("a06-resolve-late-review"),
            step(13),
            ApprovalKind::FindingResolved,
            "sre-lead@acme.example",
            |a| {
                a.finding_id = Some(format!("AISPM-BG-001:{}", ids::break_glass_decision(t)));
                a.reason = Some("review cadence added to the on-call checklist".into());
            },
        ));
        sort_by_time(&mut ev);
        ev
    }
}

/// The demo's evidence-signing key for `tenant` (derived, so every run signs alike). A demo
/// key: never use a derived key for real evidence.
pub fn demo_key(tenant: &str) -> SigningKey {
    let seed: [u8; 32] = Sha256::digest(format!("aispm-demo-evidence-key/{tenant}")).into();
    SigningKey::from_bytes(&seed)
}

/// The demo's validator key (derived from a fixed string, like [`demo_key`]; a demo key only:
/// never register it for real tenants).
pub fn demo_validator_key() -> SigningKey {
    let seed: [u8; 32] = Sha256::digest("aispm-demo-validator-key").into();
    SigningKey::from_bytes(&seed)
}

/// The event time of any input event.
pub fn occurred_at(e: &InputEvent) -> Timestamp {
    match e {
        InputEvent::Decision(d) => d.occurred_at,
        InputEvent::Approval(a) => a.occurred_at,
        InputEvent::Registry(r) => r.occurred_at,
    }
}

fn sort_by_time(events: &mut [InputEvent]) {
    events.sort_by_key(occurred_at);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const AT: Timestamp = Timestamp(1_800_000_000_000);

    fn decisions(events: &[InputEvent]) -> Vec<&DecisionEvent> {
        events
            .iter()
            .filter_map(|e| match e {
                InputEvent::Decision(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_event_is_valid_unique_and_in_time_order() {
        let events = demo("acme", Phase::All, AT);
        let mut seen = BTreeSet::new();
        for e in &events {
            let back = InputEvent::from_json(e.to_json());
            assert_eq!(back.as_ref(), Ok(e), "{} does not validate", e.event_id());
            assert!(
                seen.insert(e.event_id().to_owned()),
                "duplicate {}",
                e.event_id()
            );
            assert_eq!(e.tenant_id(), "acme");
        }
        assert!(
            events
                .windows(2)
                .all(|w| occurred_at(&w[0]) <= occurred_at(&w[1]))
        );
        assert!(
            events
                .iter()
                .all(|e| occurred_at(e) <= AT.plus(Duration::from_secs(1)))
        );
    }

    #[test]
    fn open_phase_sets_up_each_blocker() {
        let events = demo("acme", Phase::Open, AT);
        let ds = decisions(&events);
        // In production, git has synthetic decisions only; file, command and mcp have real
        // ones. Real git traffic exists, in trial only.
        let production: Vec<_> = ds
            .iter()
            .filter(|d| d.environment == Environment::Production)
            .collect();
        assert!(
            production
                .iter()
                .filter(|d| d.action_kind == ActionKind::Git)
                .all(|d| d.synthetic)
        );
        for kind in [ActionKind::File, ActionKind::Command, ActionKind::Mcp] {
            assert!(
                production
                    .iter()
                    .any(|d| d.action_kind == kind && !d.synthetic)
            );
        }
        assert!(ds.iter().any(|d| d.action_kind == ActionKind::Git
            && !d.synthetic
            && d.environment == Environment::Trial));
        // The newest production evidence is older than a week.
        let newest_evidence = events
            .iter()
            .filter(|e| match e {
                InputEvent::Decision(d) => {
                    d.evidence.is_some() && !d.synthetic && d.environment == Environment::Production
                }
                InputEvent::Registry(r) => {
                    r.validation.as_ref().is_some_and(|v| v.evidence.is_some())
                }
                InputEvent::Approval(_) => false,
            })
            .map(occurred_at)
            .max()
            .unwrap();
        assert!(newest_evidence < AT.minus(Duration::from_secs(7 * DAY)));
        // Shadow agents decide without registration; the MCP guard's high-risk decision is shadow.
        let registered: BTreeSet<_> = events
            .iter()
            .filter_map(|e| match e {
                InputEvent::Registry(r) => r.asset.as_ref().map(|a| a.asset_id.clone()),
                _ => None,
            })
            .collect();
        for agent in ids::SHADOW_AGENTS {
            assert!(ds.iter().any(|d| d.agent_id == agent));
            assert!(!registered.contains(agent));
        }
        assert!(
            ds.iter()
                .any(|d| d.control_id.as_deref() == Some(ids::SHADOW_CONTROL)
                    && d.mode == Mode::Shadow
                    && d.risk == Risk::High)
        );
        // Every high-risk decision names a control (no `(none):` control rows).
        assert!(ds.iter().all(|d| d.control_id.is_some()));
        // The exception is expired at AT; the break-glass is older than a day.
        let expired = events.iter().any(|e| {
            matches!(e, InputEvent::Approval(a)
            if a.kind == ApprovalKind::ExceptionGranted && a.expires_at.is_some_and(|x| x < AT))
        });
        assert!(expired);
        let bg = ds
            .iter()
            .find(|d| d.verdict == Verdict::BreakGlass)
            .unwrap();
        assert!(bg.occurred_at < AT.minus(Duration::from_secs(DAY)));
        assert_eq!(expected_open_blockers("acme").len(), 11);
    }

    #[test]
    fn remediation_names_what_the_open_phase_created() {
        let open = demo("acme", Phase::Open, AT);
        let open_ids: BTreeSet<_> = open.iter().map(|e| e.event_id().to_owned()).collect();
        let last_open = open.iter().map(occurred_at).max().unwrap();
        // Even when remediating right away (`--phase all`).
        let fix = demo("acme", Phase::Remediate, AT.plus(Duration::from_secs(1)));
        for e in &fix {
            if let InputEvent::Approval(a) = e {
                if let Some(d) = &a.decision_id {
                    assert!(open_ids.contains(d), "{d}");
                }
                if let Some(f) = &a.finding_id
                    && let Some((_, subject)) = f.split_once(':')
                    && subject.starts_with("acme-open-")
                {
                    assert!(open_ids.contains(subject), "{f}");
                }
            }
            assert!(
                occurred_at(e) > last_open,
                "remediation happens after the open phase"
            );
        }
        let ds = decisions(&fix);
        assert!(
            ds.iter()
                .any(|d| d.action_kind == ActionKind::Git && !d.synthetic)
        );
        assert!(
            ds.iter()
                .any(|d| d.control_id.as_deref() == Some(ids::SHADOW_CONTROL)
                    && d.mode == Mode::Enforced)
        );
        let kinds: BTreeSet<_> = fix
            .iter()
            .filter_map(|e| match e {
                InputEvent::Registry(r) => r
                    .validation
                    .as_ref()
                    .map(|v| (v.check_kind, v.result, v.evidence.is_some())),
                _ => None,
            })
            .collect();
        assert!(kinds.contains(&(CheckKind::RuntimeWorkflow, CheckResult::Pass, true)));
        // Isolation, the live connector and the provider are the validators' to prove, never
        // the scenario's.
        for k in [
            CheckKind::TenantIsolation,
            CheckKind::ConnectorLive,
            CheckKind::ReportProvider,
        ] {
            assert!(!kinds.iter().any(|(kind, _, _)| *kind == k), "{k}");
        }
    }

    #[test]
    fn evidence_is_signed_by_the_registered_trust_root() {
        let events = demo("acme", Phase::Open, AT);
        let key_b64 = events
            .iter()
            .find_map(|e| match e {
                InputEvent::Registry(r) => r.asset.as_ref().and_then(|a| a.public_key.clone()),
                _ => None,
            })
            .unwrap();
        let evidence: Vec<&Evidence> = events
            .iter()
            .filter_map(|e| match e {
                InputEvent::Decision(d) => d.evidence.as_ref(),
                _ => None,
            })
            .collect();
        assert!(evidence.len() > 3, "{evidence:?}");
        for ev in evidence {
            let state = signature::verify(
                &key_b64,
                "acme",
                &ev.evidence_id,
                &ev.sha256,
                ev.signature.as_ref().unwrap(),
            );
            assert_eq!(state, SignatureState::Verified, "{ev:?}");
            assert_eq!(ev.key_id.as_deref(), Some("acme-evidence-key"));
        }
    }

    #[test]
    fn validations_are_signed_by_the_registered_validator_key() {
        let events = demo("acme", Phase::All, AT);
        let validator = events
            .iter()
            .find_map(|e| match e {
                InputEvent::Registry(r) => r
                    .asset
                    .as_ref()
                    .filter(|a| a.scopes.iter().any(|s| s == VALIDATOR_SCOPE)),
                _ => None,
            })
            .unwrap();
        assert_eq!(validator.asset_id, ids::VALIDATOR_KEY);
        let key = validator.public_key.clone().unwrap();
        let mut n = 0;
        for e in &events {
            let InputEvent::Registry(r) = e else { continue };
            let Some(v) = &r.validation else { continue };
            let Some(ev) = &v.evidence else { continue };
            let sha = signature::digest(&ev.sha256).unwrap();
            let claim = signature::ValidationClaim {
                tenant_id: "acme",
                event_id: &r.event_id,
                check_kind: v.check_kind.as_str(),
                environment: v.environment.unwrap().as_str(),
                subject: v.subject.as_deref(),
                result: v.result.as_str(),
                occurred_at_ms: r.occurred_at.0,
                evidence_id: &ev.evidence_id,
                sha256: &sha,
            };
            let state = claim.verify(&key, ev.signature.as_deref().unwrap());
            assert_eq!(state, SignatureState::Verified, "{}", r.event_id);
            assert_eq!(ev.key_id.as_deref(), Some(ids::VALIDATOR_KEY));
            n += 1;
        }
        assert!(n >= 4, "{n}");
    }
}
