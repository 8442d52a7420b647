//! View rows as the projector publishes them, for the gatekeeper's tests and its bench: action
//! paths, controls, evidence, findings, exceptions, validations and report deliveries, each
//! with the facts of a tenant in production unless a test says otherwise.

use aispm_schemas::views::*;
use aispm_schemas::{Environment, Risk, Timestamp};

const H: i64 = 3_600_000;

/// An action path with `decisions` decisions, `synthetic` of them synthetic, in every stage.
pub fn action_path(kind: &str, decisions: i64, synthetic: i64) -> ViewRow {
    ViewRow::Coverage(
        CoverageRow {
            asserted_by: None,
            kind: CoverageKind::ActionPath,
            id: kind.to_owned(),
            registered: false,
            retired: false,
            owner: None,
            trust: None,
            decisions,
            synthetic_decisions: synthetic,
            first_seen: Some(Timestamp(0)),
            last_seen: Some(Timestamp::now()),
            last_decision_id: Some(format!("d-{kind}-{decisions}")),
            last_real_decision_id: (decisions > synthetic).then(|| format!("d-{kind}-{decisions}")),
            shadow_ai: false,
            environments: vec![],
        }
        .only_in(Environment::Production)
        .in_every_stage(),
    )
}

/// Rows whose decisions count the same in every stage's environment.
pub trait EveryStage {
    fn in_every_stage(self) -> Self;
}

impl EveryStage for CoverageRow {
    fn in_every_stage(self) -> Self {
        let one = self.environments[0].clone();
        let environments = Environment::ALL
            .iter()
            .map(|e| EnvironmentActivity {
                environment: *e,
                ..one.clone()
            })
            .collect();
        CoverageRow {
            environments,
            ..self
        }
    }
}

impl EveryStage for ControlRow {
    fn in_every_stage(self) -> Self {
        let one = self.environments[0].clone();
        let environments = Environment::ALL
            .iter()
            .map(|e| ControlActivity {
                environment: *e,
                ..one.clone()
            })
            .collect();
        ControlRow {
            environments,
            ..self
        }
    }
}

/// `row` (an evidence or validation row) as `env`'s.
pub fn in_env(row: ViewRow, env: Environment) -> ViewRow {
    match row {
        ViewRow::Evidence(r) => ViewRow::Evidence(EvidenceRow {
            environment: Some(env),
            evidence_id: format!("{}-{env}", r.evidence_id),
            ..r
        }),
        ViewRow::Validation(r) => ViewRow::Validation(ValidationRow {
            environment: Some(env),
            ..r
        }),
        other => other,
    }
}

/// Signed evidence of a production command, recorded `at`.
pub fn evidence(id: &str, at: Timestamp) -> ViewRow {
    ViewRow::Evidence(evidence_row(id, at))
}

/// [`evidence`]'s row.
pub fn evidence_row(id: &str, at: Timestamp) -> EvidenceRow {
    EvidenceRow {
        asserted_by: None,
        evidence_id: id.to_owned(),
        event_id: format!("d-{id}"),
        sha256: "ab".repeat(32),
        uri: format!("s3://evidence/{id}"),
        signature_state: SignatureState::Verified,
        key_id: Some("k1".into()),
        recorded_at: at,
        synthetic: false,
        action_kind: Some("command".into()),
        environment: Some(Environment::Production),
        agent_id: None,
        control_id: None,
    }
}

/// A finding opened three days ago.
pub fn finding(
    id: &str,
    severity: Risk,
    owner: Option<&str>,
    due_at: Option<Timestamp>,
    status: FindingStatus,
) -> FindingRow {
    FindingRow {
        asserted_by: None,
        finding_id: id.to_owned(),
        rule_id: "AISPM-TEST-001".into(),
        title: format!("test finding {id}"),
        severity,
        status,
        subject: "repo/acme".into(),
        owner: owner.map(str::to_owned),
        due_at,
        opened_at: Timestamp(Timestamp::now().0 - 72 * H),
        closed_at: None,
        resolution: None,
        frameworks: vec!["OWASP-LLM06:2025".into()],
        event_ids: vec![format!("d-{id}")],
        occurrences: 1,
        exception_id: None,
        exception_expires_at: None,
        first_occurrence_at: Timestamp(Timestamp::now().0 - 72 * H),
        last_occurrence_at: Timestamp(Timestamp::now().0 - 72 * H),
        environments: Vec::new(),
        risk: Default::default(),
    }
}

/// An exception of `kind` granted `granted_at`, never expiring.
pub fn exception(id: &str, kind: ExceptionKind, granted_at: Timestamp) -> ExceptionRow {
    ExceptionRow {
        asserted_by: None,
        exception_id: id.to_owned(),
        kind,
        finding_id: None,
        control_id: None,
        decision_id: Some(format!("d-{id}")),
        owner: Some("carol".into()),
        actor: Some("alice".into()),
        reason: Some("incident".into()),
        granted_at,
        expires_at: None,
        revoked: false,
        reviewed_at: None,
        reviewed_by: None,
        event_ids: vec![format!("a-{id}")],
    }
}

/// A registered control in `state` in every stage, with high-risk decisions.
pub fn control(id: &str, state: ControlState) -> ViewRow {
    ViewRow::Control(
        ControlRow {
            asserted_by: None,
            control_id: id.to_owned(),
            state,
            registered: true,
            enforced_decisions: i64::from(state == ControlState::Enforced),
            shadow_decisions: 3,
            high_risk_decisions: 3,
            action_kinds: vec!["command".into()],
            framework_mappings: vec![],
            decision_ids: vec!["d-shell-1".into(), "d-shell-2".into()],
            last_decision_at: Some(Timestamp::now()),
            environments: vec![],
            last_enforced_at: None,
            policies: vec![],
            approvals: vec![],
        }
        .only_in(Environment::Production)
        .in_every_stage(),
    )
}

/// A production validation of `kind` (and `subject`) with `result`, made now.
pub fn validation(kind: &str, subject: Option<&str>, result: &str) -> ViewRow {
    ViewRow::Validation(ValidationRow {
        asserted_by: None,
        check_kind: kind.to_owned(),
        subject: subject.map(str::to_owned),
        result: result.to_owned(),
        evidence_id: Some(format!("ev-{kind}")),
        validated_at: Timestamp::now(),
        event_id: format!("r-{kind}"),
        detail: None,
        environment: Some(Environment::Production),
        signature_state: SignatureState::Verified,
        key_id: Some("validator-key".into()),
    })
}

/// A production readiness packet delivered by SMTP to approved recipients.
pub fn delivery() -> ViewRow {
    ViewRow::Delivery(DeliveryRow {
        asserted_by: None,
        report_id: "rep-1".into(),
        report_type: "production_readiness".into(),
        channel: "smtp".into(),
        outcome: "delivered".into(),
        recipients: vec!["ciso@acme.example".into()],
        approved_recipients: true,
        message_id: Some("<rep-1@mail.acme.example>".into()),
        packet_sha256: "cd".repeat(32),
        attempt: 1,
        delivered_at: Timestamp::now(),
        event_id: "rd-1".into(),
        evidence_id: None,
        error: None,
    })
}
