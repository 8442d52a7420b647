//! Input events: decisions, approvals, registry changes and report deliveries.
//!
//! Field names are the Avro field names and the JSON field names alike.

use crate::time::Timestamp;
use crate::{avro_enum, avro_record};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

avro_enum!(
    /// Deployment stage an agent acted in (also an asset's approved stage).
    Environment { Trial = "trial", Pilot = "pilot", Production = "production" }
);

impl Environment {
    /// The environment whose facts readiness for `stage` reads (the same three names).
    pub fn of(stage: crate::readiness::Stage) -> Self {
        match stage {
            crate::readiness::Stage::Trial => Environment::Trial,
            crate::readiness::Stage::Pilot => Environment::Pilot,
            crate::readiness::Stage::Production => Environment::Production,
        }
    }
}
avro_enum!(
    /// The governed action path.
    ActionKind { File = "file", Command = "command", Git = "git", Mcp = "mcp", Model = "model", Network = "network" }
);
avro_enum!(
    /// Whether a control enforced its verdict or only logged it.
    Mode { Enforced = "enforced", Shadow = "shadow" }
);
avro_enum!(
    /// What a control decided.
    Verdict { Allow = "allow", Deny = "deny", RequireApproval = "require_approval", BreakGlass = "break_glass" }
);
avro_enum!(
    /// Risk of an action; also finding severity and asset criticality.
    Risk { Low = "low", Medium = "medium", High = "high", Critical = "critical" }
);
avro_enum!(
    /// What an approval event decided.
    ApprovalKind {
        ApprovalGranted = "approval_granted",
        ApprovalDenied = "approval_denied",
        ExceptionGranted = "exception_granted",
        ExceptionRevoked = "exception_revoked",
        BreakGlassInvoked = "break_glass_invoked",
        BreakGlassReviewed = "break_glass_reviewed",
        FindingAssigned = "finding_assigned",
        FindingResolved = "finding_resolved",
        RiskAccepted = "risk_accepted",
    }
);
avro_enum!(
    /// Kinds of registered assets.
    AssetKind {
        Agent = "agent",
        McpServer = "mcp_server",
        McpTool = "mcp_tool",
        Repo = "repo",
        Workflow = "workflow",
        ModelEndpoint = "model_endpoint",
        ApiKey = "api_key",
        Connector = "connector",
        ReportProvider = "report_provider",
        Control = "control",
        TrustRoot = "trust_root",
    }
);
avro_enum!(
    /// Registration state of an asset.
    AssetStatus { Registered = "registered", Retired = "retired" }
);
avro_enum!(
    /// Trust assessment of an asset.
    Trust { Trusted = "trusted", Untrusted = "untrusted", Risky = "risky", Quarantined = "quarantined" }
);
avro_enum!(
    /// Which validator ran.
    CheckKind {
        TenantIsolation = "tenant_isolation",
        ConnectorLive = "connector_live",
        ReportProvider = "report_provider",
        RuntimeWorkflow = "runtime_workflow",
    }
);
avro_enum!(
    /// Outcome of a validation.
    CheckResult { Pass = "pass", Fail = "fail" }
);
avro_enum!(
    /// Report packet types.
    ReportType {
        Cso = "cso",
        Ciso = "ciso",
        BoardKpi = "board_kpi",
        Soc2Evidence = "soc2_evidence",
        IncidentClosure = "incident_closure",
        TrialHandoff = "trial_handoff",
        PilotLaunch = "pilot_launch",
        ProductionReadiness = "production_readiness",
        BlockersDigest = "blockers_digest",
        CoverageFindings = "coverage_findings",
    }
);
avro_enum!(
    /// How a report packet was delivered.
    DeliveryChannel { Smtp = "smtp", Export = "export" }
);
avro_enum!(
    /// Whether delivery succeeded.
    DeliveryOutcome { Delivered = "delivered", Failed = "failed" }
);

/// A reference to a stored evidence artefact and the proof of its integrity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub evidence_id: String,
    /// Lower-case hex SHA-256 of the artefact.
    pub sha256: String,
    pub uri: String,
    /// Base64 Ed25519 signature over the evidence message binding the tenant, `evidence_id` and
    /// the 32 raw bytes of `sha256` ([`crate::signature::message`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The trust_root asset whose key verifies `signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}
avro_record!(Evidence {
    evidence_id,
    sha256,
    uri,
    signature,
    key_id
});

/// One runtime governance decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionEvent {
    pub event_id: String,
    pub tenant_id: String,
    pub occurred_at: Timestamp,
    pub source: String,
    pub agent_id: String,
    pub actor: String,
    pub environment: Environment,
    pub action_kind: ActionKind,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    pub mode: Mode,
    pub verdict: Verdict,
    pub risk: Risk,
    #[serde(default)]
    pub data_classes: Vec<String>,
    #[serde(default)]
    pub synthetic: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// The `api_key` asset the agent authenticated with for this action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    /// The scopes of `api_key_id` the action exercised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_used: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}
avro_record!(DecisionEvent {
    event_id,
    tenant_id,
    occurred_at,
    source,
    agent_id,
    actor,
    environment,
    action_kind,
    target,
    repo,
    workflow,
    mcp_server,
    mcp_tool,
    model_endpoint,
    control_id,
    policy_id,
    mode,
    verdict,
    risk,
    data_classes,
    synthetic,
    approval_id,
    api_key_id,
    scopes_used,
    evidence,
});

impl DecisionEvent {
    /// The control the decision acted under, as the views key it: its `control_id`, or
    /// `(none):{action_kind}` for an action path no control governs.
    pub fn control_key(&self) -> String {
        self.control_id
            .clone()
            .unwrap_or_else(|| format!("(none):{}", self.action_kind))
    }

    /// The subject of the findings this decision raises by itself (AISPM-APR-001,
    /// AISPM-EV-001, AISPM-EV-002): its agent and the control it acted under (`finding_subject`).
    pub fn finding_subject(&self) -> String {
        finding_subject(&[&self.agent_id, &self.control_key()])
    }
}

/// A decision about a decision, a finding, an exception or a break-glass event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalEvent {
    pub event_id: String,
    pub tenant_id: String,
    pub occurred_at: Timestamp,
    pub source: String,
    pub kind: ApprovalKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_id: Option<String>,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}
avro_record!(ApprovalEvent {
    event_id,
    tenant_id,
    occurred_at,
    source,
    kind,
    decision_id,
    finding_id,
    control_id,
    exception_id,
    actor,
    owner,
    reason,
    due_at,
    expires_at,
});

/// An asset as registered by its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    pub asset_kind: AssetKind,
    pub asset_id: String,
    pub status: AssetStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criticality: Option<Risk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<Trust>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default)]
    pub approved_data_classes: Vec<String>,
    #[serde(default)]
    pub recipients: Vec<String>,
    #[serde(default)]
    pub framework_mappings: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}
avro_record!(Asset {
    asset_kind,
    asset_id,
    status,
    owner,
    criticality,
    environment,
    trust,
    scopes,
    public,
    auth_required,
    public_key,
    approved_data_classes,
    recipients,
    framework_mappings,
    attributes,
});

impl Asset {
    /// A registered asset with nothing else said of it: no owner, criticality, environment or
    /// trust, no scopes, keys, data classes, recipients, mappings or attributes. Registrations
    /// spell out only what they set: `Asset { owner: …, ..Asset::registered(kind, id) }`.
    pub fn registered(asset_kind: AssetKind, asset_id: impl Into<String>) -> Self {
        Asset {
            asset_kind,
            asset_id: asset_id.into(),
            status: AssetStatus::Registered,
            owner: None,
            criticality: None,
            environment: None,
            trust: None,
            scopes: vec![],
            public: None,
            auth_required: None,
            public_key: None,
            approved_data_classes: vec![],
            recipients: vec![],
            framework_mappings: vec![],
            attributes: BTreeMap::new(),
        }
    }
}

/// The result of a validator run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    pub check_kind: CheckKind,
    pub result: CheckResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// The stage whose deployment was validated: the result counts for that stage only.
    /// Required ([`crate::validate`]); `None` only in records written before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
}
avro_record!(Validation {
    check_kind,
    result,
    subject,
    detail,
    evidence,
    environment
});

/// An asset upsert or retirement, or a validation result: exactly one of `asset` and `validation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEvent {
    pub event_id: String,
    pub tenant_id: String,
    pub occurred_at: Timestamp,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<Asset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
}
avro_record!(RegistryEvent {
    event_id,
    tenant_id,
    occurred_at,
    source,
    asset,
    validation
});

/// The outcome of delivering one report packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportDeliveryEvent {
    pub event_id: String,
    pub tenant_id: String,
    pub occurred_at: Timestamp,
    pub source: String,
    pub report_id: String,
    pub report_type: ReportType,
    pub channel: DeliveryChannel,
    pub outcome: DeliveryOutcome,
    #[serde(default)]
    pub recipients: Vec<String>,
    #[serde(default)]
    pub approved_recipients: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_response: Option<String>,
    pub packet_sha256: String,
    #[serde(default = "first_attempt")]
    pub attempt: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}
avro_record!(ReportDeliveryEvent {
    event_id,
    tenant_id,
    occurred_at,
    source,
    report_id,
    report_type,
    channel,
    outcome,
    recipients,
    approved_recipients,
    message_id,
    server_response,
    packet_sha256,
    attempt,
    error,
    evidence,
});

fn first_attempt() -> i32 {
    1
}

/// The subject of a finding about several resources at once (e.g. an agent and the control
/// it acted under): the parts joined by `/`, each with `%` and `/` percent-encoded, so that
/// distinct parts never give the same subject. A finding id is `{rule id}:{subject}`.
pub fn finding_subject(parts: &[&str]) -> String {
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        for c in part.chars() {
            match c {
                '%' => out.push_str("%25"),
                '/' => out.push_str("%2F"),
                c => out.push(c),
            }
        }
    }
    out
}

/// The parts of a subject [`finding_subject`] built, decoded.
pub fn finding_subject_parts(subject: &str) -> Vec<String> {
    subject
        .split('/')
        .map(|p| p.replace("%2F", "/").replace("%25", "%"))
        .collect()
}
