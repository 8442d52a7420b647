//! View rows and the `ViewChange` record the projector publishes on `aispm.views.v1`.

use crate::avro::{AvroReader, FromAvro, ToAvro};
use crate::error::DecodeError;
use crate::events::{Environment, Risk};
use crate::readiness::Stage;
use crate::risk::RiskScore;
use crate::time::Timestamp;
use crate::{avro_enum, avro_record};
use apache_avro::types::Value;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

avro_enum!(
    /// The materialized views.
    ViewName {
        Coverage = "coverage",
        Controls = "controls",
        Findings = "findings",
        Exceptions = "exceptions",
        Evidence = "evidence",
        Validations = "validations",
        ReportDeliveries = "report_deliveries",
    }
);
avro_enum!(
    /// Upsert or delete of one row.
    ViewOp { Upsert = "upsert", Delete = "delete" }
);
avro_enum!(
    /// What a coverage row counts.
    CoverageKind {
        Agent = "agent",
        Repo = "repo",
        Workflow = "workflow",
        McpServer = "mcp_server",
        McpTool = "mcp_tool",
        ModelEndpoint = "model_endpoint",
        ActionPath = "action_path",
    }
);
avro_enum!(
    /// Control state.
    ControlState { Enforced = "enforced", Shadowed = "shadowed", Missing = "missing", Blocked = "blocked" }
);
avro_enum!(
    /// Finding lifecycle state.
    FindingStatus { Open = "open", Closed = "closed" }
);
avro_enum!(
    /// Exception kinds.
    ExceptionKind { Exception = "exception", BreakGlass = "break_glass" }
);
avro_enum!(
    /// Whether an evidence signature verifies against a registered trust root.
    SignatureState { Verified = "verified", Unsigned = "unsigned", Invalid = "invalid", UnknownKey = "unknown_key" }
);

/// Coverage of one asset or action path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageRow {
    pub kind: CoverageKind,
    pub id: String,
    pub registered: bool,
    pub retired: bool,
    pub owner: Option<String>,
    pub trust: Option<String>,
    pub decisions: i64,
    pub synthetic_decisions: i64,
    pub first_seen: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    pub last_decision_id: Option<String>,
    pub last_real_decision_id: Option<String>,
    pub shadow_ai: bool,
    /// The principal that asserted the event behind this row (the `aispm.principal` header:
    /// the ingest token's name, or the service that produced it); `None` when the record
    /// carried none (a producer writing straight to Kafka without stamping it).
    #[serde(default)]
    pub asserted_by: Option<String>,
    /// The decisions behind the counts, per environment (the stage each counts for).
    #[serde(default)]
    pub environments: Vec<EnvironmentActivity>,
}
avro_record!(CoverageRow {
    kind,
    id,
    registered,
    retired,
    owner,
    trust,
    decisions,
    synthetic_decisions,
    first_seen,
    last_seen,
    last_decision_id,
    last_real_decision_id,
    shadow_ai,
    asserted_by,
    environments,
});

/// What a coverage row counts in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentActivity {
    pub environment: Environment,
    pub decisions: i64,
    pub synthetic_decisions: i64,
    pub last_seen: Option<Timestamp>,
    pub last_decision_id: Option<String>,
    pub last_real_decision_id: Option<String>,
}
avro_record!(EnvironmentActivity {
    environment,
    decisions,
    synthetic_decisions,
    last_seen,
    last_decision_id,
    last_real_decision_id,
});

/// A control in one environment: its state there and the decisions it made there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlActivity {
    pub environment: Environment,
    pub state: ControlState,
    pub enforced_decisions: i64,
    pub shadow_decisions: i64,
    pub high_risk_decisions: i64,
    pub decision_ids: Vec<String>,
    pub last_decision_at: Option<Timestamp>,
}
avro_record!(ControlActivity {
    environment,
    state,
    enforced_decisions,
    shadow_decisions,
    high_risk_decisions,
    decision_ids,
    last_decision_at,
});

/// A policy a control's decisions named (`policy_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyUse {
    pub policy_id: String,
    pub first_seen_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub decisions: i64,
}
avro_record!(PolicyUse {
    policy_id,
    first_seen_at,
    last_seen_at,
    decisions,
});

/// State of one control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRow {
    pub control_id: String,
    pub state: ControlState,
    pub registered: bool,
    pub enforced_decisions: i64,
    pub shadow_decisions: i64,
    pub high_risk_decisions: i64,
    pub action_kinds: Vec<String>,
    pub framework_mappings: Vec<String>,
    pub decision_ids: Vec<String>,
    pub last_decision_at: Option<Timestamp>,
    /// The principal that asserted the event behind this row (the `aispm.principal` header:
    /// the ingest token's name, or the service that produced it); `None` when the record
    /// carried none (a producer writing straight to Kafka without stamping it).
    #[serde(default)]
    pub asserted_by: Option<String>,
    /// The control per environment: its state and decisions there (the stage each counts for).
    #[serde(default)]
    pub environments: Vec<ControlActivity>,
    /// Its newest enforced-mode decision (event time).
    #[serde(default)]
    pub last_enforced_at: Option<Timestamp>,
    /// The policies its decisions named, oldest first by first use (at most
    /// [`KEEP_POLICIES`]): a policy first named after another is a policy change.
    #[serde(default)]
    pub policies: Vec<PolicyUse>,
    /// Its requests for approval by calendar month (UTC) of the request's event time, oldest
    /// first: the month of the newest request and at most [`KEEP_APPROVAL_MONTHS`] − 1
    /// before it. The monthly review's approval trends.
    #[serde(default)]
    pub approvals: Vec<ApprovalMonth>,
}

/// How many policies a control row keeps (the least recently named dropped first).
pub const KEEP_POLICIES: usize = 32;

/// How many calendar months of requests for approval a control row keeps: the newest
/// request's month and the 23 before it.
pub const KEEP_APPROVAL_MONTHS: i64 = 24;

/// The upper bounds (ms) of the time-to-decision buckets of requests for approval: a minute,
/// 5 and 15 minutes, an hour, 4 hours, a day, 3 days, a week; one more bucket holds the rest.
pub const DECISION_BUCKETS_MS: [i64; 8] = [
    60_000,
    300_000,
    900_000,
    3_600_000,
    14_400_000,
    86_400_000,
    259_200_000,
    604_800_000,
];

/// The requests for approval made in one calendar month, and how each was answered: counted
/// by its first answer (by event time), whenever that came.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalMonth {
    /// `YYYY-MM`, UTC, of the requests' event time ([`month_of`]).
    pub month: String,
    pub requested: i64,
    pub granted: i64,
    pub denied: i64,
    /// Time from request to first answer: the sum (ms) and how many answers fell in each
    /// bucket of [`DECISION_BUCKETS_MS`] (one more for longer).
    pub decide_ms_sum: i64,
    pub decide_buckets: Vec<i64>,
}
avro_record!(ApprovalMonth {
    month,
    requested,
    granted,
    denied,
    decide_ms_sum,
    decide_buckets,
});

impl ApprovalMonth {
    /// Adds (`sign` 1) or takes back (`sign` -1) an answer given `ms` after its request.
    pub fn count_answer(&mut self, ms: i64, granted: bool, sign: i64) {
        count_answer(
            &mut self.granted,
            &mut self.denied,
            &mut self.decide_ms_sum,
            &mut self.decide_buckets,
            ms,
            granted,
            sign,
        );
    }

    /// Requests not answered yet.
    pub fn pending(&self) -> i64 {
        (self.requested - self.granted - self.denied).max(0)
    }

    /// The time-to-decision bucket bound holding the `q` quantile ([`decision_quantile`]).
    pub fn quantile_bound(&self, q: f64) -> Option<Option<i64>> {
        decision_quantile(&self.decide_buckets, self.granted + self.denied, q)
    }
}

/// Adds (`sign` 1) or takes back (`sign` -1) an answer given `ms` (at least 0) after its
/// request, to grant and denial counts and a time-to-decision sum and histogram over
/// [`DECISION_BUCKETS_MS`]: the one way every approvals aggregate counts an answer.
pub fn count_answer(
    granted_n: &mut i64,
    denied_n: &mut i64,
    ms_sum: &mut i64,
    buckets: &mut Vec<i64>,
    ms: i64,
    granted: bool,
    sign: i64,
) {
    let ms = ms.max(0);
    if granted {
        *granted_n += sign;
    } else {
        *denied_n += sign;
    }
    *ms_sum += sign * ms;
    if buckets.len() <= DECISION_BUCKETS_MS.len() {
        buckets.resize(DECISION_BUCKETS_MS.len() + 1, 0);
    }
    let bucket = DECISION_BUCKETS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(DECISION_BUCKETS_MS.len());
    buckets[bucket] += sign;
}

/// The bound of the time-to-decision bucket that holds the `q` quantile (0 < q ≤ 1) of
/// `answered` answers; `None` without answers, `Some(None)` when it is past the last bound
/// (over a week).
pub fn decision_quantile(buckets: &[i64], answered: i64, q: f64) -> Option<Option<i64>> {
    if answered <= 0 {
        return None;
    }
    let rank = ((q * answered as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (i, c) in buckets.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(DECISION_BUCKETS_MS.get(i).copied());
        }
    }
    Some(None)
}

/// The calendar month (UTC) of an instant in ms: months since January 1970 (negative before).
pub fn month_index(ms: i64) -> i64 {
    use chrono::Datelike;
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(d) => i64::from(d.year() - 1970) * 12 + i64::from(d.month0()),
        // Beyond chrono's range (±262 000 years): by the mean Gregorian month.
        None => ms.div_euclid(2_629_746_000),
    }
}

/// A [`month_index`] as `YYYY-MM` (the year as many digits as it takes).
pub fn month_name(index: i64) -> String {
    format!(
        "{:04}-{:02}",
        1970 + index.div_euclid(12),
        index.rem_euclid(12) + 1
    )
}

/// `YYYY-MM` of an instant in ms, UTC.
pub fn month_of(ms: i64) -> String {
    month_name(month_index(ms))
}

avro_record!(ControlRow {
    control_id,
    state,
    registered,
    enforced_decisions,
    shadow_decisions,
    high_risk_decisions,
    action_kinds,
    framework_mappings,
    decision_ids,
    last_decision_at,
    asserted_by,
    environments,
    last_enforced_at,
    policies,
    approvals,
});

/// A finding and its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRow {
    pub finding_id: String,
    pub rule_id: String,
    pub title: String,
    pub severity: Risk,
    pub status: FindingStatus,
    pub subject: String,
    pub owner: Option<String>,
    pub due_at: Option<Timestamp>,
    pub opened_at: Timestamp,
    pub closed_at: Option<Timestamp>,
    pub resolution: Option<String>,
    pub frameworks: Vec<String>,
    pub event_ids: Vec<String>,
    pub occurrences: i64,
    pub exception_id: Option<String>,
    pub exception_expires_at: Option<Timestamp>,
    /// The principal that asserted the event behind this row (the `aispm.principal` header:
    /// the ingest token's name, or the service that produced it); `None` when the record
    /// carried none (a producer writing straight to Kafka without stamping it).
    #[serde(default)]
    pub asserted_by: Option<String>,
    /// The event time of its first occurrence ever (`opened_at` is the first since it last
    /// opened).
    pub first_occurrence_at: Timestamp,
    /// The event time of its newest occurrence.
    pub last_occurrence_at: Timestamp,
    /// The environments (stages) whose events raised it; empty: facts of no one environment
    /// (a registration, an exception), which count for every stage.
    #[serde(default)]
    pub environments: Vec<Environment>,
    /// Its risk score and the factors behind it ([`crate::risk`]): what findings are ranked by.
    #[serde(default)]
    pub risk: RiskScore,
}

impl FindingRow {
    /// Its place in the ranking ([`crate::risk::RankKey`]): highest risk first.
    pub fn rank_key(&self) -> crate::risk::RankKey {
        crate::risk::RankKey::new(
            self.risk.score,
            self.severity,
            self.last_occurrence_at.0,
            &self.finding_id,
        )
    }

    /// The order findings are listed in everywhere (API, console, packets).
    pub fn by_rank(a: &Self, b: &Self) -> std::cmp::Ordering {
        a.rank_key().cmp(&b.rank_key())
    }

    /// Whether the finding counts for `stage`: raised by events of its environment, or by
    /// facts of no one environment (empty `environments`: it counts for every stage).
    pub fn counts_for(&self, stage: Stage) -> bool {
        self.environments.is_empty() || self.environments.contains(&Environment::of(stage))
    }
}

avro_record!(FindingRow {
    finding_id,
    rule_id,
    title,
    severity,
    status,
    subject,
    owner,
    due_at,
    opened_at,
    closed_at,
    resolution,
    frameworks,
    event_ids,
    occurrences,
    exception_id,
    exception_expires_at,
    asserted_by,
    first_occurrence_at,
    last_occurrence_at,
    environments,
    risk,
});

/// An exception or a break-glass event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionRow {
    pub exception_id: String,
    pub kind: ExceptionKind,
    pub finding_id: Option<String>,
    pub control_id: Option<String>,
    pub decision_id: Option<String>,
    pub owner: Option<String>,
    pub actor: Option<String>,
    pub reason: Option<String>,
    pub granted_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
    pub reviewed_at: Option<Timestamp>,
    pub reviewed_by: Option<String>,
    pub event_ids: Vec<String>,
    /// The principal that asserted the event behind this row (the `aispm.principal` header:
    /// the ingest token's name, or the service that produced it); `None` when the record
    /// carried none (a producer writing straight to Kafka without stamping it).
    #[serde(default)]
    pub asserted_by: Option<String>,
}
avro_record!(ExceptionRow {
    exception_id,
    kind,
    finding_id,
    control_id,
    decision_id,
    owner,
    actor,
    reason,
    granted_at,
    expires_at,
    revoked,
    reviewed_at,
    reviewed_by,
    event_ids,
    asserted_by,
});

/// One evidence artefact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRow {
    pub evidence_id: String,
    pub event_id: String,
    pub sha256: String,
    pub uri: String,
    pub signature_state: SignatureState,
    pub key_id: Option<String>,
    pub recorded_at: Timestamp,
    pub synthetic: bool,
    /// The action kind of the decision that carried it; `None` when a validation (its
    /// transcript) or a delivery carried it.
    pub action_kind: Option<String>,
    /// The principal that asserted the event behind this row (the `aispm.principal` header:
    /// the ingest token's name, or the service that produced it); `None` when the record
    /// carried none (a producer writing straight to Kafka without stamping it).
    #[serde(default)]
    pub asserted_by: Option<String>,
    /// The environment of the event that carried it: the stage whose freshness it proves.
    /// `None` (delivery evidence, older rows) counts for no stage.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// The agent whose decision carried it; `None` when a validation or a delivery did.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The control that made the decision carrying it; `None` when none did.
    #[serde(default)]
    pub control_id: Option<String>,
}
avro_record!(EvidenceRow {
    evidence_id,
    event_id,
    sha256,
    uri,
    signature_state,
    key_id,
    recorded_at,
    synthetic,
    action_kind,
    asserted_by,
    environment,
    agent_id,
    control_id,
});

/// The latest validation per check kind and subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationRow {
    pub check_kind: String,
    pub subject: Option<String>,
    pub result: String,
    pub evidence_id: Option<String>,
    pub validated_at: Timestamp,
    pub event_id: String,
    pub detail: Option<String>,
    /// The principal that asserted the event behind this row (the `aispm.principal` header:
    /// the ingest token's name, or the service that produced it); `None` when the record
    /// carried none (a producer writing straight to Kafka without stamping it).
    #[serde(default)]
    pub asserted_by: Option<String>,
    /// The stage whose deployment was validated; `None` (older rows) counts for no stage.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// The validator's signature over the claim ([`crate::signature::ValidationClaim`]):
    /// `verified` only with a registered, unretired trust root whose scopes include
    /// `validator`. Only a verified result counts for readiness ([`ValidationRow::proven`]).
    #[serde(default = "unsigned")]
    pub signature_state: SignatureState,
    /// The validator key the signature names.
    #[serde(default)]
    pub key_id: Option<String>,
}
avro_record!(ValidationRow {
    check_kind,
    subject,
    result,
    evidence_id,
    validated_at,
    event_id,
    detail,
    asserted_by,
    environment,
    signature_state,
    key_id,
});

fn unsigned() -> SignatureState {
    SignatureState::Unsigned
}

/// The scope a `trust_root` must list to sign validation results.
pub const VALIDATOR_SCOPE: &str = "validator";

/// The latest delivery outcome per report packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRow {
    pub report_id: String,
    pub report_type: String,
    pub channel: String,
    pub outcome: String,
    pub recipients: Vec<String>,
    pub approved_recipients: bool,
    pub message_id: Option<String>,
    pub packet_sha256: String,
    pub attempt: i32,
    pub delivered_at: Timestamp,
    pub event_id: String,
    pub evidence_id: Option<String>,
    pub error: Option<String>,
    /// The principal that asserted the event behind this row (the `aispm.principal` header:
    /// the ingest token's name, or the service that produced it); `None` when the record
    /// carried none (a producer writing straight to Kafka without stamping it).
    #[serde(default)]
    pub asserted_by: Option<String>,
}
avro_record!(DeliveryRow {
    report_id,
    report_type,
    channel,
    outcome,
    recipients,
    approved_recipients,
    message_id,
    packet_sha256,
    attempt,
    delivered_at,
    event_id,
    evidence_id,
    error,
    asserted_by,
});

/// A row of any view: the `row` union of `ViewChange`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ViewRow {
    Coverage(CoverageRow),
    Control(ControlRow),
    Finding(FindingRow),
    Exception(ExceptionRow),
    Evidence(EvidenceRow),
    Validation(ValidationRow),
    Delivery(DeliveryRow),
}

impl ViewRow {
    /// Feeds `h` the row's state without its running counts, and answers whether the view
    /// keeps any (`false`: exceptions, evidence, validations and deliveries, fed nothing).
    /// A count feeds only whether it is zero, the newest events (times, ids) only whether
    /// there are any; every other field is state. Two versions of a row with the same state
    /// differ only in how many events they count and which came last: the projector may
    /// publish such a change once per epoch instead of at once (`--counters-per-epoch`),
    /// since nothing a verdict reads changed. A new row, a status, an owner, a mode, a shadow
    /// flag, a risk score, an environment or a count leaving zero is a change of state. Each
    /// row is taken apart field by field, so a field added to a row must be placed here.
    pub fn hash_state<H: Hasher>(&self, h: &mut H) -> bool {
        let any = |n: &i64| n.signum();
        match self {
            ViewRow::Coverage(CoverageRow {
                kind,
                id,
                registered,
                retired,
                owner,
                trust,
                decisions,
                synthetic_decisions,
                first_seen,
                last_seen,
                last_decision_id,
                last_real_decision_id,
                shadow_ai,
                asserted_by,
                environments,
            }) => {
                (kind, id, registered, retired, owner, trust).hash(h);
                (any(decisions), any(synthetic_decisions), first_seen).hash(h);
                (last_seen.is_some(), last_decision_id.is_some()).hash(h);
                (last_real_decision_id.is_some(), shadow_ai, asserted_by).hash(h);
                environments.len().hash(h);
                for EnvironmentActivity {
                    environment,
                    decisions,
                    synthetic_decisions,
                    last_seen,
                    last_decision_id,
                    last_real_decision_id,
                } in environments
                {
                    (environment, any(decisions), any(synthetic_decisions)).hash(h);
                    (last_seen.is_some(), last_decision_id.is_some()).hash(h);
                    last_real_decision_id.is_some().hash(h);
                }
            }
            ViewRow::Control(ControlRow {
                control_id,
                state,
                registered,
                enforced_decisions,
                shadow_decisions,
                high_risk_decisions,
                action_kinds,
                framework_mappings,
                decision_ids,
                last_decision_at,
                asserted_by,
                environments,
                last_enforced_at,
                policies,
                approvals,
            }) => {
                (
                    control_id,
                    state,
                    registered,
                    action_kinds,
                    framework_mappings,
                )
                    .hash(h);
                (any(enforced_decisions), any(shadow_decisions)).hash(h);
                (any(high_risk_decisions), decision_ids.is_empty()).hash(h);
                (
                    last_decision_at.is_some(),
                    asserted_by,
                    last_enforced_at.is_some(),
                )
                    .hash(h);
                environments.len().hash(h);
                for ControlActivity {
                    environment,
                    state,
                    enforced_decisions,
                    shadow_decisions,
                    high_risk_decisions,
                    decision_ids,
                    last_decision_at,
                } in environments
                {
                    (environment, state, any(enforced_decisions)).hash(h);
                    (any(shadow_decisions), any(high_risk_decisions)).hash(h);
                    (decision_ids.is_empty(), last_decision_at.is_some()).hash(h);
                }
                policies.len().hash(h);
                for PolicyUse {
                    policy_id,
                    first_seen_at,
                    last_seen_at: _,
                    decisions,
                } in policies
                {
                    (policy_id, first_seen_at, any(decisions)).hash(h);
                }
                approvals.len().hash(h);
                for ApprovalMonth {
                    month,
                    requested,
                    granted,
                    denied,
                    decide_ms_sum,
                    decide_buckets,
                } in approvals
                {
                    (month, any(requested), any(granted), any(denied)).hash(h);
                    any(decide_ms_sum).hash(h);
                    decide_buckets.len().hash(h);
                    for bucket in decide_buckets {
                        any(bucket).hash(h);
                    }
                }
            }
            ViewRow::Finding(FindingRow {
                finding_id,
                rule_id,
                title,
                severity,
                status,
                subject,
                owner,
                due_at,
                opened_at,
                closed_at,
                resolution,
                frameworks,
                event_ids,
                occurrences,
                exception_id,
                exception_expires_at,
                asserted_by,
                first_occurrence_at,
                last_occurrence_at: _,
                environments,
                risk,
            }) => {
                (finding_id, rule_id, title, severity, status, subject, owner).hash(h);
                (due_at, opened_at, closed_at, resolution, frameworks).hash(h);
                (event_ids.is_empty(), any(occurrences), exception_id).hash(h);
                (exception_expires_at, asserted_by, first_occurrence_at).hash(h);
                (environments, risk).hash(h);
            }
            ViewRow::Exception(_)
            | ViewRow::Evidence(_)
            | ViewRow::Validation(_)
            | ViewRow::Delivery(_) => return false,
        }
        true
    }
}

impl CoverageRow {
    /// The row with every decision it counts made in `env`: its per-environment list holds that
    /// one entry, carrying the row's totals.
    pub fn only_in(self, env: Environment) -> Self {
        let a = EnvironmentActivity {
            environment: env,
            decisions: self.decisions,
            synthetic_decisions: self.synthetic_decisions,
            last_seen: self.last_seen,
            last_decision_id: self.last_decision_id.clone(),
            last_real_decision_id: self.last_real_decision_id.clone(),
        };
        CoverageRow {
            environments: vec![a],
            ..self
        }
    }
}

impl ControlRow {
    /// The row with every decision it counts made in `env`: its per-environment list holds that
    /// one entry, carrying the row's state and totals.
    pub fn only_in(self, env: Environment) -> Self {
        let a = ControlActivity {
            environment: env,
            state: self.state,
            enforced_decisions: self.enforced_decisions,
            shadow_decisions: self.shadow_decisions,
            high_risk_decisions: self.high_risk_decisions,
            decision_ids: self.decision_ids.clone(),
            last_decision_at: self.last_decision_at,
        };
        ControlRow {
            environments: vec![a],
            ..self
        }
    }
}

impl EvidenceRow {
    /// Whether the evidence counts for `stage`: it was carried by an event of the stage's
    /// environment (evidence without an environment counts for no stage).
    pub fn counts_for(&self, stage: Stage) -> bool {
        self.environment == Some(Environment::of(stage))
    }
}

impl ValidationRow {
    /// Whether the result is proven: signed by a registered validator key over exactly this
    /// claim. An unproven result, pass or fail, counts for no stage.
    pub fn proven(&self) -> bool {
        self.signature_state == SignatureState::Verified
    }

    /// Whether the validation counts for `stage`: it validated the stage's environment (a
    /// validation without an environment counts for no stage).
    pub fn counts_for(&self, stage: Stage) -> bool {
        self.environment == Some(Environment::of(stage))
    }
}

impl ViewRow {
    /// A row of `view` from its JSON form (the projector's `/rows` route): the view says which
    /// type it is.
    pub fn from_json(view: ViewName, v: serde_json::Value) -> Result<ViewRow, serde_json::Error> {
        Ok(match view {
            ViewName::Coverage => ViewRow::Coverage(serde_json::from_value(v)?),
            ViewName::Controls => ViewRow::Control(serde_json::from_value(v)?),
            ViewName::Findings => ViewRow::Finding(serde_json::from_value(v)?),
            ViewName::Exceptions => ViewRow::Exception(serde_json::from_value(v)?),
            ViewName::Evidence => ViewRow::Evidence(serde_json::from_value(v)?),
            ViewName::Validations => ViewRow::Validation(serde_json::from_value(v)?),
            ViewName::ReportDeliveries => ViewRow::Delivery(serde_json::from_value(v)?),
        })
    }

    /// The view this row belongs to.
    pub fn view(&self) -> ViewName {
        match self {
            ViewRow::Coverage(_) => ViewName::Coverage,
            ViewRow::Control(_) => ViewName::Controls,
            ViewRow::Finding(_) => ViewName::Findings,
            ViewRow::Exception(_) => ViewName::Exceptions,
            ViewRow::Evidence(_) => ViewName::Evidence,
            ViewRow::Validation(_) => ViewName::Validations,
            ViewRow::Delivery(_) => ViewName::ReportDeliveries,
        }
    }

    /// The row as readiness for `stage` reads it: only the facts of that stage's environment
    /// ("stages read their own facts", `shared/DESIGN.md`). `None` when nothing in the row
    /// counts for the stage.
    ///
    /// - coverage and controls: the counts, ids and state of the stage's environment only;
    ///   `None` when the row has no decision there;
    /// - evidence and validations: the row itself if its environment is the stage, else `None`
    ///   (a row without an environment counts for no stage);
    /// - findings: the row itself if events of the stage's environment raised it, or if it
    ///   names no environment (raised by a registration or an exception: it counts everywhere);
    /// - exceptions and deliveries: the row itself for every stage. They can only raise
    ///   blockers (or, for deliveries, prove the tenant's report channel, which is the same for
    ///   every stage), so reading them everywhere fails closed.
    pub fn for_stage(&self, stage: Stage) -> Option<ViewRow> {
        let env = Environment::of(stage);
        match self {
            ViewRow::Coverage(r) => {
                let a = r.environments.iter().find(|a| a.environment == env)?;
                Some(ViewRow::Coverage(CoverageRow {
                    decisions: a.decisions,
                    synthetic_decisions: a.synthetic_decisions,
                    last_seen: a.last_seen,
                    last_decision_id: a.last_decision_id.clone(),
                    last_real_decision_id: a.last_real_decision_id.clone(),
                    environments: vec![a.clone()],
                    ..r.clone()
                }))
            }
            ViewRow::Control(r) => {
                let a = r.environments.iter().find(|a| a.environment == env)?;
                Some(ViewRow::Control(ControlRow {
                    state: a.state,
                    enforced_decisions: a.enforced_decisions,
                    shadow_decisions: a.shadow_decisions,
                    high_risk_decisions: a.high_risk_decisions,
                    decision_ids: a.decision_ids.clone(),
                    last_decision_at: a.last_decision_at,
                    environments: vec![a.clone()],
                    ..r.clone()
                }))
            }
            ViewRow::Evidence(r) => r.counts_for(stage).then(|| self.clone()),
            ViewRow::Validation(r) => r.counts_for(stage).then(|| self.clone()),
            ViewRow::Finding(r) => r.counts_for(stage).then(|| self.clone()),
            ViewRow::Exception(_) | ViewRow::Delivery(_) => Some(self.clone()),
        }
    }

    /// Position in the `row` union (0 is null).
    fn branch(&self) -> (u32, Value) {
        match self {
            ViewRow::Coverage(r) => (1, r.to_avro()),
            ViewRow::Control(r) => (2, r.to_avro()),
            ViewRow::Finding(r) => (3, r.to_avro()),
            ViewRow::Exception(r) => (4, r.to_avro()),
            ViewRow::Evidence(r) => (5, r.to_avro()),
            ViewRow::Validation(r) => (6, r.to_avro()),
            ViewRow::Delivery(r) => (7, r.to_avro()),
        }
    }
}

impl ToAvro for ViewRow {
    fn to_avro(&self) -> Value {
        let (i, v) = self.branch();
        Value::Union(i, Box::new(v))
    }

    fn write_avro(&self, out: &mut Vec<u8>) {
        match self {
            ViewRow::Coverage(r) => {
                crate::avro::write_long(1, out);
                r.write_avro(out);
            }
            ViewRow::Control(r) => {
                crate::avro::write_long(2, out);
                r.write_avro(out);
            }
            ViewRow::Finding(r) => {
                crate::avro::write_long(3, out);
                r.write_avro(out);
            }
            ViewRow::Exception(r) => {
                crate::avro::write_long(4, out);
                r.write_avro(out);
            }
            ViewRow::Evidence(r) => {
                crate::avro::write_long(5, out);
                r.write_avro(out);
            }
            ViewRow::Validation(r) => {
                crate::avro::write_long(6, out);
                r.write_avro(out);
            }
            ViewRow::Delivery(r) => {
                crate::avro::write_long(7, out);
                r.write_avro(out);
            }
        }
    }

    fn write_avro_option(opt: Option<&Self>, out: &mut Vec<u8>) {
        match opt {
            None => crate::avro::write_long(0, out),
            Some(row) => row.write_avro(out),
        }
    }

    fn to_avro_option(opt: Option<&Self>) -> Value {
        match opt {
            None => Value::Union(0, Box::new(Value::Null)),
            Some(row) => row.to_avro(),
        }
    }
}

impl FromAvro for ViewRow {
    fn from_avro(value: Value) -> Result<Self, DecodeError> {
        Self::from_avro_option(value)?
            .ok_or_else(|| DecodeError::Shape("row is null where a row is required".into()))
    }

    fn from_avro_option(value: Value) -> Result<Option<Self>, DecodeError> {
        let Value::Union(i, inner) = value else {
            return Err(crate::avro::mismatch("union", &value));
        };
        Ok(Some(match i {
            0 => return Ok(None),
            1 => ViewRow::Coverage(CoverageRow::from_avro(*inner)?),
            2 => ViewRow::Control(ControlRow::from_avro(*inner)?),
            3 => ViewRow::Finding(FindingRow::from_avro(*inner)?),
            4 => ViewRow::Exception(ExceptionRow::from_avro(*inner)?),
            5 => ViewRow::Evidence(EvidenceRow::from_avro(*inner)?),
            6 => ViewRow::Validation(ValidationRow::from_avro(*inner)?),
            7 => ViewRow::Delivery(DeliveryRow::from_avro(*inner)?),
            other => {
                return Err(DecodeError::Shape(format!(
                    "row union has no branch {other}"
                )));
            }
        }))
    }

    fn read_avro(r: &mut AvroReader<'_>) -> Result<Self, DecodeError> {
        Self::read_avro_option(r)?
            .ok_or_else(|| DecodeError::Shape("row is null where a row is required".into()))
    }

    fn read_avro_option(r: &mut AvroReader<'_>) -> Result<Option<Self>, DecodeError> {
        Ok(Some(match r.union_index(8)? {
            0 => return Ok(None),
            1 => ViewRow::Coverage(CoverageRow::read_avro(r)?),
            2 => ViewRow::Control(ControlRow::read_avro(r)?),
            3 => ViewRow::Finding(FindingRow::read_avro(r)?),
            4 => ViewRow::Exception(ExceptionRow::read_avro(r)?),
            5 => ViewRow::Evidence(EvidenceRow::read_avro(r)?),
            6 => ViewRow::Validation(ValidationRow::read_avro(r)?),
            _ => ViewRow::Delivery(DeliveryRow::read_avro(r)?),
        }))
    }
}

/// What views as of a past instant `at` include (the projector replays the tenant's events
/// that occurred by then, `projector/src/as_of.rs`), and what that says about lateness: the
/// `as_of` object of the projector's answers, passed on by the gatekeeper and in packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsOf {
    /// The instant the views are as of.
    pub at: Timestamp,
    /// The tenant's events that occurred at or before `at`: the ones replayed.
    pub events: u64,
    /// The tenant's events that occurred after `at`: left out.
    pub after: u64,
    /// Replayed events whose records reached the broker after `at`: included by event time,
    /// though not known at `at`.
    pub late: u64,
    /// Replayed events kept before arrival times were (no record timestamp to judge by).
    pub arrival_unknown: u64,
    /// The instant of the replay checkpoint the replay started from (`None`: from nothing);
    /// it holds the views of `events - applied` of the events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_checkpoint: Option<Timestamp>,
    /// The events the replay applied itself.
    #[serde(default)]
    pub applied: u64,
    /// When the replay ran, and how long it took.
    pub replayed_at: Timestamp,
    pub replay_ms: u64,
}

/// An upsert or delete of one view row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    pub tenant_id: String,
    pub view: ViewName,
    pub key: String,
    pub op: ViewOp,
    pub row: Option<ViewRow>,
    pub changed_at: Timestamp,
    pub cause_event_id: String,
}
avro_record!(ViewChange {
    tenant_id,
    view,
    key,
    op,
    row,
    changed_at,
    cause_event_id
});

impl ViewChange {
    /// The change that sets a row (`Some`: upsert) or removes it (`None`: delete); the op
    /// always agrees with the row.
    pub fn new(
        tenant_id: impl Into<String>,
        view: ViewName,
        key: impl Into<String>,
        row: Option<ViewRow>,
        changed_at: Timestamp,
        cause_event_id: impl Into<String>,
    ) -> Self {
        ViewChange {
            tenant_id: tenant_id.into(),
            view,
            key: key.into(),
            op: if row.is_some() {
                ViewOp::Upsert
            } else {
                ViewOp::Delete
            },
            row,
            changed_at,
            cause_event_id: cause_event_id.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// The hash of a row's state, one seed for every call.
    fn state(row: &ViewRow) -> Option<u64> {
        static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        let mut h = SEED.get_or_init(Default::default).build_hasher();
        row.hash_state(&mut h).then(|| h.finish())
    }

    fn agent(decisions: i64, real: Option<&str>) -> CoverageRow {
        let activity = EnvironmentActivity {
            environment: Environment::Production,
            decisions,
            synthetic_decisions: 1,
            last_seen: Some(Timestamp(decisions)),
            last_decision_id: Some(format!("d{decisions}")),
            last_real_decision_id: real.map(str::to_owned),
        };
        CoverageRow {
            kind: CoverageKind::Agent,
            id: "a1".into(),
            registered: false,
            retired: false,
            owner: None,
            trust: None,
            decisions,
            synthetic_decisions: 1,
            first_seen: Some(Timestamp(1)),
            last_seen: Some(Timestamp(decisions)),
            last_decision_id: Some(format!("d{decisions}")),
            last_real_decision_id: real.map(str::to_owned),
            shadow_ai: true,
            asserted_by: None,
            environments: vec![activity],
        }
    }

    /// More events counted, a newer one last: the same state. A first real decision, a
    /// registration, a new environment, a count leaving zero: another state.
    #[test]
    fn a_rows_state_leaves_out_its_running_counts_and_nothing_else() {
        let base = state(&ViewRow::Coverage(agent(2, Some("d2"))));
        assert!(base.is_some());
        assert_eq!(state(&ViewRow::Coverage(agent(9, Some("d9")))), base);
        assert_ne!(state(&ViewRow::Coverage(agent(9, None))), base);
        let mut registered = agent(9, Some("d9"));
        registered.registered = true;
        assert_ne!(state(&ViewRow::Coverage(registered)), base);
        let mut staged = agent(9, Some("d9"));
        staged.environments.push(EnvironmentActivity {
            environment: Environment::Trial,
            ..staged.environments[0].clone()
        });
        assert_ne!(state(&ViewRow::Coverage(staged)), base);
        let mut no_synthetic = agent(9, Some("d9"));
        no_synthetic.synthetic_decisions = 0;
        assert_ne!(state(&ViewRow::Coverage(no_synthetic)), base);

        let evidence = EvidenceRow {
            evidence_id: "ev".into(),
            event_id: "e".into(),
            sha256: String::new(),
            uri: String::new(),
            signature_state: SignatureState::Unsigned,
            key_id: None,
            recorded_at: Timestamp(0),
            synthetic: false,
            action_kind: None,
            asserted_by: None,
            environment: None,
            agent_id: None,
            control_id: None,
        };
        assert_eq!(
            state(&ViewRow::Evidence(evidence)),
            None,
            "no running counts"
        );
    }
}
