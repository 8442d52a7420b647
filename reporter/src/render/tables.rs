//! The packet's `tables/*.csv`: one typed row per table, its fields the table's columns in
//! order (see [`super::csv`] for how cells are written).

use super::csv::{List, Text, Time, opt, table};
use super::exception_state;
use crate::packet::PacketFile;
use crate::report::Document;
use aispm_schemas::{FindingRow, clock};
use serde::Serialize;

type Ids<'a> = List<&'a [String]>;

fn ids(v: &[String]) -> Ids<'_> {
    List(v)
}

#[derive(Default, Serialize)]
struct Finding<'a> {
    finding_id: Text<&'a str>,
    rule_id: Text<&'a str>,
    title: Text<&'a str>,
    severity: Text<String>,
    status: Text<String>,
    subject: Text<&'a str>,
    owner: Text<&'a str>,
    due_at: Time,
    opened_at: Time,
    closed_at: Time,
    resolution: Text<&'a str>,
    frameworks: Ids<'a>,
    exception_id: Text<&'a str>,
    exception_expires_at: Time,
    event_ids: Ids<'a>,
    sla_state: Text<String>,
    /// `aispm_schemas::risk`: the score, and each factor as `name=value:points`.
    risk_score: i64,
    risk_factors: Text<String>,
}

#[derive(Default, Serialize)]
struct BlockingFinding<'a> {
    finding_id: Text<&'a str>,
    title: Text<&'a str>,
    severity: Text<String>,
    owner: Text<&'a str>,
    due_at: Time,
    overdue: bool,
    reasons: Ids<'a>,
    event_ids: Ids<'a>,
    risk_score: i64,
}

#[derive(Default, Serialize)]
struct AcceptedRisk<'a> {
    exception_id: Text<&'a str>,
    finding_id: Text<&'a str>,
    control_id: Text<&'a str>,
    owner: Text<&'a str>,
    reason: Text<&'a str>,
    granted_at: Time,
    expires_at: Time,
    days_to_expiry: Option<f64>,
    expired: bool,
}

#[derive(Default, Serialize)]
struct Blocker<'a> {
    stage: Text<String>,
    ready: bool,
    blocker_id: Text<&'a str>,
    kind: Text<&'a str>,
    subject: Text<&'a str>,
    detected_at: Time,
    meaning: Text<&'a str>,
    resolution: Text<&'a str>,
    evidence: List<Vec<&'a str>>,
}

/// A control with one of its evidence items (a control without evidence: one row, the
/// evidence columns empty).
#[derive(Default, Serialize)]
struct ControlEvidence<'a> {
    control_id: Text<&'a str>,
    state: Text<String>,
    frameworks: Ids<'a>,
    enforced_decisions: i64,
    shadow_decisions: i64,
    evidence_id: Text<&'a str>,
    decision_id: Text<&'a str>,
    sha256: Text<&'a str>,
    signature_state: Text<String>,
    recorded_at: Time,
    uri: Text<&'a str>,
}

#[derive(Default, Serialize)]
struct Control<'a> {
    control_id: Text<&'a str>,
    state: Text<String>,
    registered: bool,
    enforced_decisions: i64,
    shadow_decisions: i64,
    high_risk_decisions: i64,
    action_kinds: Ids<'a>,
    framework_mappings: Ids<'a>,
    last_decision_at: Time,
    decision_ids: Ids<'a>,
}

#[derive(Default, Serialize)]
struct Exception<'a> {
    exception_id: Text<&'a str>,
    kind: Text<String>,
    finding_id: Text<&'a str>,
    control_id: Text<&'a str>,
    owner: Text<&'a str>,
    reason: Text<&'a str>,
    granted_at: Time,
    expires_at: Time,
    revoked: bool,
    state: Text<String>,
}

/// The monthly review's exception aging ([`crate::report::monthly::ExceptionAging`]).
#[derive(Default, Serialize)]
struct Aging<'a> {
    exception_id: Text<&'a str>,
    covers: Text<&'a str>,
    owner: Text<&'a str>,
    granted_at: Time,
    age_days: i64,
    expires_at: Time,
    days_left: Option<i64>,
    state: Text<&'a str>,
}

/// The monthly review's policy drift ([`crate::report::monthly::Drift`]).
#[derive(Default, Serialize)]
struct Drift<'a> {
    control_id: Text<&'a str>,
    change: Text<&'a str>,
    at: Time,
    from: Text<&'a str>,
    to: Text<&'a str>,
    decision_ids: Ids<'a>,
}

/// The monthly review's approval trends ([`crate::report::monthly::ApprovalTrends`]): one
/// row per month over the tenant (`control_id` empty), then one per control for the last
/// month.
#[derive(Default, Serialize)]
struct ApprovalTrend<'a> {
    month: Text<&'a str>,
    control_id: Text<&'a str>,
    requested: i64,
    granted: i64,
    denied: i64,
    pending: i64,
    /// The bucket bound (ms) of the median and the 90th percentile time to decision; empty
    /// without answers, `over_a_week` past a week.
    median_decision_ms: Text<String>,
    p90_decision_ms: Text<String>,
}

impl<'a> ApprovalTrend<'a> {
    fn of(m: &'a crate::report::monthly::MonthFigures, control_id: &'a str) -> Self {
        use crate::report::monthly::DecisionBound;
        let bound = |b: Option<DecisionBound>| {
            Text(match b {
                None => String::new(),
                Some(DecisionBound::OverAWeek) => "over_a_week".to_owned(),
                Some(DecisionBound::WithinMs(ms)) => ms.to_string(),
            })
        };
        ApprovalTrend {
            month: Text(&m.month),
            control_id: Text(control_id),
            requested: m.requested,
            granted: m.granted,
            denied: m.denied,
            pending: m.pending,
            median_decision_ms: bound(m.median),
            p90_decision_ms: bound(m.p90),
        }
    }
}

#[derive(Default, Serialize)]
struct BreakGlass<'a> {
    exception_id: Text<&'a str>,
    decision_id: Text<&'a str>,
    actor: Text<&'a str>,
    reason: Text<&'a str>,
    invoked_at: Time,
    reviewed_at: Time,
    reviewed_by: Text<&'a str>,
    state: Text<String>,
}

#[derive(Default, Serialize)]
struct Coverage<'a> {
    kind: Text<String>,
    id: Text<&'a str>,
    registered: bool,
    retired: bool,
    shadow_ai: bool,
    trust: Text<&'a str>,
    owner: Text<&'a str>,
    decisions: i64,
    synthetic_decisions: i64,
    first_seen: Time,
    last_seen: Time,
}

#[derive(Default, Serialize)]
struct Validation<'a> {
    check_kind: Text<&'a str>,
    subject: Text<&'a str>,
    result: Text<&'a str>,
    evidence_id: Text<&'a str>,
    validated_at: Time,
    event_id: Text<&'a str>,
    detail: Text<&'a str>,
}

#[derive(Default, Serialize)]
struct Delivery<'a> {
    report_id: Text<&'a str>,
    report_type: Text<&'a str>,
    channel: Text<&'a str>,
    outcome: Text<&'a str>,
    recipients: Ids<'a>,
    approved_recipients: bool,
    message_id: Text<&'a str>,
    packet_sha256: Text<&'a str>,
    attempt: i32,
    delivered_at: Time,
    evidence_id: Text<&'a str>,
    error: Text<&'a str>,
}

#[derive(Default, Serialize)]
struct ActionPath<'a> {
    path: Text<&'a str>,
    decisions: i64,
    real_decisions: i64,
    synthetic_decisions: i64,
    synthetic_only: bool,
    last_real_decision_id: Text<&'a str>,
}

#[derive(Default, Serialize)]
struct Trend {
    week_end: Text<String>,
    open_findings: u64,
    open_critical: u64,
    high_risk_closed: u64,
    high_risk_closed_within_sla: u64,
    within_sla_pct: Option<f64>,
    mean_time_to_remediate_hours: Option<f64>,
    governed_assets: u64,
    active_exceptions: u64,
}

/// The packet's tables: `findings` and `blocking_findings` and `accepted_risks` and `blockers`
/// always, the others when the report type has their section.
pub(super) fn files(doc: &Document, findings: &[FindingRow]) -> csv::Result<Vec<PacketFile>> {
    let mut out = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| {
        out.push(PacketFile::new(&format!("tables/{name}.csv"), bytes));
    };
    add(
        "findings",
        table(findings.iter().map(|f| {
            Finding {
                finding_id: Text(&f.finding_id),
                rule_id: Text(&f.rule_id),
                title: Text(&f.title),
                severity: Text(f.severity.to_string()),
                status: Text(f.status.to_string()),
                subject: Text(&f.subject),
                owner: opt(f.owner.as_deref()),
                due_at: Time(f.due_at),
                opened_at: Time(Some(f.opened_at)),
                closed_at: Time(f.closed_at),
                resolution: opt(f.resolution.as_deref()),
                frameworks: ids(&f.frameworks),
                exception_id: opt(f.exception_id.as_deref()),
                exception_expires_at: Time(f.exception_expires_at),
                event_ids: ids(&f.event_ids),
                sla_state: Text(clock::row_sla(f, doc.instant()).to_string()),
                risk_score: f.risk.score,
                risk_factors: Text(
                    f.risk
                        .factors
                        .iter()
                        .map(|x| format!("{}={}:{}", x.factor, x.value, x.points))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            }
        }))?,
    );
    add(
        "blocking_findings",
        table(doc.blocking_findings.iter().map(|f| BlockingFinding {
            finding_id: Text(&f.finding_id),
            title: Text(&f.title),
            severity: Text(f.severity.to_string()),
            owner: opt(f.owner.as_deref()),
            due_at: Time(f.due_at),
            overdue: f.overdue,
            reasons: ids(&f.reasons),
            event_ids: ids(&f.event_ids),
            risk_score: f.risk_score,
        }))?,
    );
    add(
        "accepted_risks",
        table(doc.accepted_risks.iter().map(|r| AcceptedRisk {
            exception_id: Text(&r.exception_id),
            finding_id: opt(r.finding_id.as_deref()),
            control_id: opt(r.control_id.as_deref()),
            owner: opt(r.owner.as_deref()),
            reason: opt(r.reason.as_deref()),
            granted_at: Time(Some(r.granted_at)),
            expires_at: Time(r.expires_at),
            days_to_expiry: r.days_to_expiry,
            expired: r.expired,
        }))?,
    );
    add(
        "blockers",
        table(doc.readiness.iter().flat_map(|r| {
            r.blockers.iter().map(move |b| Blocker {
                stage: Text(r.stage.to_string()),
                ready: r.ready,
                blocker_id: Text(&b.blocker_id),
                kind: Text(&b.kind),
                subject: opt(b.subject.as_deref()),
                detected_at: Time(Some(b.detected_at)),
                meaning: Text(&b.meaning),
                resolution: Text(&b.resolution),
                evidence: List(b.evidence.iter().map(|e| e.id.as_str()).collect()),
            })
        }))?,
    );
    if let Some(m) = &doc.control_evidence {
        add(
            "control_evidence_matrix",
            table(m.iter().flat_map(|r| {
                let control = || ControlEvidence {
                    control_id: Text(&r.control_id),
                    state: Text(r.state.to_string()),
                    frameworks: ids(&r.frameworks),
                    enforced_decisions: r.enforced_decisions,
                    shadow_decisions: r.shadow_decisions,
                    ..ControlEvidence::default()
                };
                let items = r.evidence.iter().map(move |e| ControlEvidence {
                    evidence_id: Text(&e.evidence_id),
                    decision_id: Text(&e.decision_id),
                    sha256: Text(&e.sha256),
                    signature_state: Text(e.signature_state.to_string()),
                    recorded_at: Time(Some(e.recorded_at)),
                    uri: Text(&e.uri),
                    ..control()
                });
                let bare = r.evidence.is_empty().then(control);
                items.chain(bare)
            }))?,
        );
    }
    if let Some(c) = &doc.controls {
        add(
            "controls",
            table(c.iter().map(|c| Control {
                control_id: Text(&c.control_id),
                state: Text(c.state.to_string()),
                registered: c.registered,
                enforced_decisions: c.enforced_decisions,
                shadow_decisions: c.shadow_decisions,
                high_risk_decisions: c.high_risk_decisions,
                action_kinds: ids(&c.action_kinds),
                framework_mappings: ids(&c.framework_mappings),
                last_decision_at: Time(c.last_decision_at),
                decision_ids: ids(&c.decision_ids),
            }))?,
        );
    }
    if let Some(e) = &doc.exceptions {
        add(
            "exceptions",
            table(e.iter().map(|e| Exception {
                exception_id: Text(&e.exception_id),
                kind: Text(e.kind.to_string()),
                finding_id: opt(e.finding_id.as_deref()),
                control_id: opt(e.control_id.as_deref()),
                owner: opt(e.owner.as_deref()),
                reason: opt(e.reason.as_deref()),
                granted_at: Time(Some(e.granted_at)),
                expires_at: Time(e.expires_at),
                revoked: e.revoked,
                state: Text(exception_state(doc, e).to_string()),
            }))?,
        );
    }
    if let Some(a) = &doc.exception_aging {
        add(
            "exception_aging",
            table(a.items.iter().map(|i| Aging {
                exception_id: Text(&i.exception_id),
                covers: opt(i.covers.as_deref()),
                owner: opt(i.owner.as_deref()),
                granted_at: Time(Some(i.granted_at)),
                age_days: i.age_days,
                expires_at: Time(i.expires_at),
                days_left: i.days_left,
                state: Text(i.state),
            }))?,
        );
    }
    if let Some(d) = &doc.policy_drift {
        add(
            "policy_drift",
            table(d.iter().map(|d| Drift {
                control_id: Text(&d.control_id),
                change: Text(d.change),
                at: Time(Some(d.at)),
                from: Text(&d.from),
                to: Text(&d.to),
                decision_ids: ids(&d.decision_ids),
            }))?,
        );
    }
    if let Some(a) = &doc.approval_trends {
        let rows: Vec<ApprovalTrend<'_>> = a
            .months
            .iter()
            .map(|m| ApprovalTrend::of(m, ""))
            .chain(
                a.controls
                    .iter()
                    .map(|c| ApprovalTrend::of(&c.this_month, &c.control_id)),
            )
            .collect();
        add("approval_trends", table(rows)?);
    }
    if let Some(b) = &doc.break_glass {
        add(
            "break_glass",
            table(b.iter().map(|e| BreakGlass {
                exception_id: Text(&e.exception_id),
                decision_id: opt(e.decision_id.as_deref()),
                actor: opt(e.actor.as_deref()),
                reason: opt(e.reason.as_deref()),
                invoked_at: Time(Some(e.granted_at)),
                reviewed_at: Time(e.reviewed_at),
                reviewed_by: opt(e.reviewed_by.as_deref()),
                state: Text(exception_state(doc, e).to_string()),
            }))?,
        );
    }
    if let Some(c) = &doc.coverage {
        add(
            "coverage",
            table(c.iter().map(|c| Coverage {
                kind: Text(c.kind.to_string()),
                id: Text(&c.id),
                registered: c.registered,
                retired: c.retired,
                shadow_ai: c.shadow_ai,
                trust: opt(c.trust.as_deref()),
                owner: opt(c.owner.as_deref()),
                decisions: c.decisions,
                synthetic_decisions: c.synthetic_decisions,
                first_seen: Time(c.first_seen),
                last_seen: Time(c.last_seen),
            }))?,
        );
    }
    if let Some(v) = &doc.validations {
        add(
            "validations",
            table(v.iter().map(|v| Validation {
                check_kind: Text(&v.check_kind),
                subject: opt(v.subject.as_deref()),
                result: Text(&v.result),
                evidence_id: opt(v.evidence_id.as_deref()),
                validated_at: Time(Some(v.validated_at)),
                event_id: Text(&v.event_id),
                detail: opt(v.detail.as_deref()),
            }))?,
        );
    }
    if let Some(d) = &doc.deliveries {
        add(
            "deliveries",
            table(d.iter().map(|d| Delivery {
                report_id: Text(&d.report_id),
                report_type: Text(&d.report_type),
                channel: Text(&d.channel),
                outcome: Text(&d.outcome),
                recipients: ids(&d.recipients),
                approved_recipients: d.approved_recipients,
                message_id: opt(d.message_id.as_deref()),
                packet_sha256: Text(&d.packet_sha256),
                attempt: d.attempt,
                delivered_at: Time(Some(d.delivered_at)),
                evidence_id: opt(d.evidence_id.as_deref()),
                error: opt(d.error.as_deref()),
            }))?,
        );
    }
    if let Some(p) = &doc.action_paths {
        add(
            "action_paths",
            table(p.iter().map(|p| ActionPath {
                path: Text(&p.path),
                decisions: p.decisions,
                real_decisions: p.real_decisions,
                synthetic_decisions: p.synthetic_decisions,
                synthetic_only: p.synthetic_only,
                last_real_decision_id: opt(p.last_real_decision_id.as_deref()),
            }))?,
        );
    }
    if let Some(tr) = &doc.trends {
        add(
            "trends",
            table(tr.iter().map(|p| Trend {
                week_end: Text(super::html::ts(Some(p.week_end))),
                open_findings: p.open_findings,
                open_critical: p.open_critical,
                high_risk_closed: p.high_risk_closed,
                high_risk_closed_within_sla: p.high_risk_closed_within_sla,
                within_sla_pct: p.within_sla_pct,
                mean_time_to_remediate_hours: p.mean_time_to_remediate_hours,
                governed_assets: p.governed_assets,
                active_exceptions: p.active_exceptions,
            }))?,
        );
    }
    Ok(out)
}
