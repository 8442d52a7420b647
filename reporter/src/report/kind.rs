//! The report types: who reads each one, the period it covers, and the sections it carries.
//!
//! Adding a report type: add the symbol to `ReportType` in the schemas (append only), give it
//! an [`info`] entry, choose its sections in [`fill`] and its headline in [`headline`], and
//! lay it out in `render/html.rs`.

use super::{Document, Layer};
use crate::state::TenantState;
use aispm_schemas::{ExceptionKind, FindingStatus, ReportType, Stage, clock};
use std::time::Duration;

const DAY: u64 = 86_400;

/// What a report type is for.
#[derive(Debug, Clone, Copy)]
pub struct Info {
    pub title: &'static str,
    pub audience: &'static str,
    /// The window "in the period" sections cover.
    pub period: Duration,
    /// The stage the report speaks to: its evidence freshness check uses that stage's window
    /// (as the gatekeeper's `evidence_stale` for that stage does).
    pub stage: Stage,
}

/// Title, audience and period of each type.
pub fn info(t: ReportType) -> Info {
    let (title, audience, days) = match t {
        ReportType::Cso => (
            "CSO posture report",
            "Chief Security Officer: posture at a glance, top risks, readiness",
            30,
        ),
        ReportType::Ciso => (
            "CISO operational report",
            "CISO and security leads: control state, findings and SLAs, exceptions, owners",
            30,
        ),
        ReportType::BoardKpi => (
            "Board KPI pack",
            "Board and executive committee: KPIs and trends",
            56,
        ),
        ReportType::Soc2Evidence => (
            "SOC 2 evidence packet",
            "Auditors: controls, the evidence behind each, and its integrity",
            90,
        ),
        ReportType::IncidentClosure => (
            "Incident and closure report",
            "Incident responders and risk owners: break-glass, closures, what remains open",
            30,
        ),
        ReportType::TrialHandoff => (
            "Trial evaluator handoff packet",
            "Trial evaluators: what was proven, what is synthetic, what to do next",
            30,
        ),
        ReportType::PilotLaunch => (
            "Pilot launch board pack",
            "Pilot sponsors: pilot scope, control readiness, accepted risks, go/no-go",
            30,
        ),
        ReportType::ProductionReadiness => (
            "Production readiness packet",
            "Release and risk approvers: verdict per stage, every blocker and its evidence",
            90,
        ),
        ReportType::BlockersDigest => (
            "Daily blockers digest",
            "Operators: new blockers, failed connectors, critical findings (daily)",
            1,
        ),
        ReportType::CoverageFindings => (
            "Weekly coverage and findings review",
            "Security engineering: control coverage, open findings, report readiness (weekly)",
            7,
        ),
    };
    let stage = match t {
        ReportType::TrialHandoff => Stage::Trial,
        ReportType::PilotLaunch => Stage::Pilot,
        _ => Stage::Production,
    };
    Info {
        title,
        audience,
        period: Duration::from_secs(days * DAY),
        stage,
    }
}

/// Chooses and fills the sections of `doc`'s type.
pub fn fill(doc: &mut Document, t: &TenantState) {
    let now = doc.instant();
    let start = doc.period_start;
    match doc.report_type {
        ReportType::Cso => {
            doc.layers = Some(layers(doc));
            // The monthly review (the default cadence runs this report monthly).
            doc.exception_aging = Some(super::monthly::exception_aging(t, now, start));
            doc.policy_drift = Some(super::monthly::policy_drift(t, now, start));
            doc.approval_trends = Some(super::monthly::approval_trends(t, now));
        }
        ReportType::Ciso => {
            doc.layers = Some(layers(doc));
            doc.controls = Some(t.controls.values().cloned().collect());
            doc.findings = Some(super::open_findings(t));
            doc.owners = Some(super::owners(t, now));
            doc.exceptions = Some(exceptions(t));
            doc.break_glass = Some(super::break_glass(t));
            doc.coverage = Some(
                t.coverage
                    .values()
                    .filter(|c| {
                        c.shadow_ai
                            || matches!(
                                c.trust.as_deref(),
                                Some("risky" | "untrusted" | "quarantined")
                            )
                    })
                    .cloned()
                    .collect(),
            );
        }
        ReportType::BoardKpi => {
            doc.trends = Some(super::kpi::trends(t, now, 8));
        }
        ReportType::Soc2Evidence => {
            let matrix = super::control_evidence(t);
            doc.criteria = Some(super::criteria(&matrix));
            doc.control_evidence = Some(matrix);
            doc.controls = Some(t.controls.values().cloned().collect());
            doc.exceptions = Some(exceptions(t));
            doc.validations = Some(t.validations.values().cloned().collect());
            doc.deliveries = Some(t.deliveries.values().cloned().collect());
        }
        ReportType::IncidentClosure => {
            doc.break_glass = Some(super::break_glass(t));
            let mut closed: Vec<_> = t
                .findings
                .values()
                .filter(|f| {
                    f.status == FindingStatus::Closed && f.closed_at.is_some_and(|c| c > start)
                })
                .cloned()
                .collect();
            closed.sort_by_key(|f| f.closed_at);
            doc.closed_findings = Some(closed);
            doc.findings = Some(
                super::open_findings(t)
                    .into_iter()
                    .filter(|f| {
                        matches!(
                            f.severity,
                            aispm_schemas::Risk::High | aispm_schemas::Risk::Critical
                        )
                    })
                    .collect(),
            );
            doc.exceptions = Some(
                t.exceptions
                    .values()
                    .filter(|e| {
                        e.kind == ExceptionKind::Exception
                            && (e.revoked || clock::exception_expired(e, now))
                    })
                    .cloned()
                    .collect(),
            );
            doc.trends = Some(super::kpi::trends(t, now, 4));
        }
        ReportType::TrialHandoff => {
            doc.action_paths = Some(super::action_paths(t));
            doc.validations = Some(t.validations.values().cloned().collect());
            doc.coverage = Some(
                t.coverage
                    .values()
                    .filter(|c| c.kind != aispm_schemas::CoverageKind::ActionPath)
                    .cloned()
                    .collect(),
            );
        }
        ReportType::PilotLaunch => {
            doc.coverage = Some(
                t.coverage
                    .values()
                    .filter(|c| c.kind != aispm_schemas::CoverageKind::ActionPath && c.registered)
                    .cloned()
                    .collect(),
            );
            doc.controls = Some(t.controls.values().cloned().collect());
            doc.action_paths = Some(super::action_paths(t));
            doc.exceptions = Some(exceptions(t));
        }
        ReportType::ProductionReadiness => {
            doc.validations = Some(t.validations.values().cloned().collect());
            doc.deliveries = Some(t.deliveries.values().cloned().collect());
            doc.action_paths = Some(super::action_paths(t));
            doc.controls = Some(t.controls.values().cloned().collect());
        }
        ReportType::BlockersDigest => {
            let mut new: Vec<_> = t
                .blockers
                .values()
                .flat_map(|m| m.values())
                .filter(|b| b.detected_at > start)
                .map(|b| super::blocker_item(t, b))
                .collect();
            new.sort_by_key(|b| b.detected_at);
            doc.new_blockers = Some(new);
            doc.validations = Some(
                t.validations
                    .values()
                    .filter(|v| v.result == "fail")
                    .cloned()
                    .collect(),
            );
            doc.findings = Some(
                super::open_findings(t)
                    .into_iter()
                    .filter(|f| f.severity == aispm_schemas::Risk::Critical)
                    .collect(),
            );
        }
        ReportType::CoverageFindings => {
            doc.coverage = Some(t.coverage.values().cloned().collect());
            doc.controls = Some(t.controls.values().cloned().collect());
            doc.findings = Some(super::open_findings(t));
            doc.deliveries = Some(t.deliveries.values().cloned().collect());
            doc.trends = Some(super::kpi::trends(t, now, 4));
        }
    }
}

fn exceptions(t: &TenantState) -> Vec<aispm_schemas::ExceptionRow> {
    t.exceptions
        .values()
        .filter(|e| e.kind == ExceptionKind::Exception)
        .cloned()
        .collect()
}

/// The five posture layers with a score, a statement and the ids behind them.
pub fn layers(doc: &Document) -> Vec<Layer> {
    let k = &doc.kpis;
    let mut coverage_ids = k.shadow_ai_ids.clone();
    coverage_ids.extend(k.risky_tool_ids.iter().cloned());
    let mut finding_ids = k.critical_unowned_ids.clone();
    finding_ids.extend(k.overdue_ids.iter().cloned());
    let evidence_ok = k.evidence_invalid + k.evidence_unknown_key == 0
        && doc.freshness.status == super::checks::Status::Pass;
    vec![
        Layer {
            layer: "Coverage",
            question: "Which agents, repos, tools and workflows are governed?",
            score: k.coverage_pct,
            healthy: k.coverage_pct == Some(100.0) && k.shadow_ai == 0,
            statement: format!(
                "{} of {} assets seen are registered and governed; {} shadow AI agent(s), {} risky MCP tool(s).",
                k.assets_governed, k.assets_seen, k.shadow_ai, k.risky_tools
            ),
            drill_down: coverage_ids,
        },
        Layer {
            layer: "Control state",
            question: "Are controls enforced, shadowed, missing or blocked?",
            score: k.enforced_pct,
            healthy: k.controls_total > 0 && k.controls_enforced == k.controls_total,
            statement: format!(
                "{} of {} controls enforced; {} shadowed, {} missing, {} blocked.",
                k.controls_enforced,
                k.controls_total,
                k.controls_shadowed,
                k.controls_missing,
                k.controls_blocked
            ),
            drill_down: k.control_gap_ids.clone(),
        },
        Layer {
            layer: "Findings",
            question: "What remains open?",
            score: super::kpi::pct(
                k.findings_open_critical + k.findings_open_high
                    - (k.critical_unowned + k.findings_overdue)
                        .min(k.findings_open_critical + k.findings_open_high),
                k.findings_open_critical + k.findings_open_high,
            )
            .or(Some(100.0)),
            healthy: k.critical_unowned == 0 && k.findings_overdue == 0,
            statement: format!(
                "{} open finding(s), {} critical; {} critical without owner or due date; {} high-risk overdue.",
                k.findings_open, k.findings_open_critical, k.critical_unowned, k.findings_overdue
            ),
            drill_down: finding_ids,
        },
        Layer {
            layer: "Evidence",
            question: "Can the posture be proven?",
            score: super::kpi::pct(k.evidence_verified, k.evidence_total),
            healthy: evidence_ok,
            statement: format!(
                "{} of {} evidence artefacts verified against trust roots; {} {}",
                k.evidence_verified,
                k.evidence_total,
                k.evidence_invalid + k.evidence_unknown_key,
                "invalid or unknown-key. ".to_owned() + &doc.freshness.statement
            ),
            drill_down: doc.trust_roots.failing_evidence_ids.clone(),
        },
        Layer {
            layer: "Reports",
            question: "Can the posture be communicated?",
            score: super::kpi::pct(
                k.deliveries_verified,
                k.deliveries_delivered + k.deliveries_failed,
            ),
            healthy: k.deliveries_verified > 0,
            statement: format!(
                "{} report packet(s) delivered to approved recipients with audit evidence; {} failed delivery attempt(s) on record.",
                k.deliveries_verified, k.deliveries_failed
            ),
            drill_down: vec![],
        },
    ]
}

/// The sentence a reader takes away (after the instant, for a packet as of a past one).
pub fn headline(doc: &Document) -> String {
    let k = &doc.kpis;
    let stage_word = |s: Stage| {
        doc.stage(s).map_or_else(
            || "not evaluated".to_owned(),
            |r| {
                if r.ready {
                    "ready".to_owned()
                } else if !r.evaluated && r.blockers.is_empty() {
                    "not evaluated".to_owned()
                } else {
                    format!("not ready ({} blocker(s))", r.blockers.len())
                }
            },
        )
    };
    let said = match doc.report_type {
        ReportType::Cso | ReportType::PilotLaunch | ReportType::ProductionReadiness => format!(
            "Production {}; pilot {}; {} open critical finding(s).",
            stage_word(Stage::Production),
            stage_word(Stage::Pilot),
            k.findings_open_critical
        ),
        ReportType::TrialHandoff => format!(
            "Trial {}; pilot {}.",
            stage_word(Stage::Trial),
            stage_word(Stage::Pilot)
        ),
        ReportType::Ciso | ReportType::CoverageFindings => format!(
            "{} of {} controls enforced; {} open finding(s), {} overdue.",
            k.controls_enforced, k.controls_total, k.findings_open, k.findings_overdue
        ),
        ReportType::BoardKpi => format!(
            "Coverage {}; {} open critical finding(s); {} of high-risk findings closed within SLA.",
            fmt_pct(k.coverage_pct),
            k.findings_open_critical,
            fmt_pct(k.high_risk_within_sla_pct)
        ),
        ReportType::Soc2Evidence => format!(
            "{} control(s), {} evidence artefact(s), {} verified.",
            k.controls_total, k.evidence_total, k.evidence_verified
        ),
        ReportType::IncidentClosure => format!(
            "{} break-glass event(s), {} unreviewed; {} finding(s) closed in the period.",
            k.break_glass_total,
            k.break_glass_unreviewed,
            doc.closed_findings.as_ref().map_or(0, Vec::len)
        ),
        ReportType::BlockersDigest => format!(
            "{} new blocker(s) in the last 24 h; {} open critical finding(s).",
            doc.new_blockers.as_ref().map_or(0, Vec::len),
            k.findings_open_critical
        ),
    };
    match &doc.as_of {
        Some(a) => format!("As of {}: {said}", a.at.to_rfc3339()),
        None => said,
    }
}

/// A percentage for prose and tables: `87.5%`, or `n/a`.
pub fn fmt_pct(p: Option<f64>) -> String {
    p.map_or_else(|| "n/a".to_owned(), |p| format!("{p}%"))
}
