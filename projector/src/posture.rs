//! The posture: a score per layer (coverage, control state, findings, evidence, reports), each
//! with the row ids behind it so an operator can drill from the number to the events. Overdue,
//! expired, unreviewed and stale are [`aispm_schemas::clock`]'s rules, with the gatekeeper's
//! windows.

use crate::api::{exception_state, sla_state};
use aispm_schemas::*;
use serde_json::{Value, json};

fn pct(good: usize, total: usize) -> f64 {
    if total == 0 {
        100.0
    } else {
        (good as f64 * 1000.0 / total as f64).round() / 10.0
    }
}

/// Computes the posture from a tenant's rows at `now`, judged with `windows`.
pub fn compute(tenant: &str, rows: &[ViewRow], windows: &clock::Windows, now: Timestamp) -> Value {
    let mut seen = 0;
    let mut governed = 0;
    let mut shadow = Vec::new();
    let mut high_paths = 0;
    let mut enforced = 0;
    let mut weak_controls = Vec::new();
    let mut open = Vec::new();
    let mut by_severity: std::collections::BTreeMap<&'static str, u64> =
        [("critical", 0), ("high", 0), ("medium", 0), ("low", 0)].into();
    let mut penalty = 0i64;
    let mut overdue = Vec::new();
    let mut risk_accepted = Vec::new();
    let mut expired_exceptions = Vec::new();
    let mut review_overdue = Vec::new();
    let mut evidence_total = 0;
    let mut verified = 0;
    let mut unverified = Vec::new();
    let mut counting_evidence = Vec::new();
    let mut delivered = Vec::new();
    let mut failed = Vec::new();
    for r in rows {
        match r {
            ViewRow::Coverage(c) if c.kind != CoverageKind::ActionPath && c.decisions > 0 => {
                seen += 1;
                if c.registered {
                    governed += 1;
                } else {
                    shadow.push(format!("{}/{}", c.kind, c.id));
                }
            }
            ViewRow::Control(c) if c.high_risk_decisions > 0 => {
                high_paths += 1;
                if c.state == ControlState::Enforced {
                    enforced += 1;
                } else {
                    weak_controls.push(c.control_id.clone());
                }
            }
            ViewRow::Finding(f) if f.status == FindingStatus::Open => {
                open.push(f.finding_id.clone());
                *by_severity.entry(f.severity.as_str()).or_default() += 1;
                penalty += match f.severity {
                    Risk::Critical => 25,
                    Risk::High => 10,
                    Risk::Medium => 3,
                    Risk::Low => 1,
                };
                match sla_state(f, now) {
                    "overdue" => overdue.push(f.finding_id.clone()),
                    "risk_accepted" => risk_accepted.push(f.finding_id.clone()),
                    _ => {}
                }
            }
            ViewRow::Exception(x) => match exception_state(x, windows, now) {
                "expired" => expired_exceptions.push(x.exception_id.clone()),
                "review_overdue" => review_overdue.push(x.exception_id.clone()),
                _ => {}
            },
            ViewRow::Evidence(e) => {
                evidence_total += 1;
                if e.signature_state == SignatureState::Verified {
                    verified += 1;
                } else {
                    unverified.push(e.evidence_id.clone());
                }
                counting_evidence.push(e);
            }
            ViewRow::Delivery(d)
                if d.outcome == "delivered" && d.approved_recipients && d.evidence_id.is_some() =>
            {
                delivered.push(d.report_id.clone())
            }
            ViewRow::Delivery(d) if d.outcome != "delivered" => failed.push(d.report_id.clone()),
            _ => {}
        }
    }
    // Only evidence that counts for freshness (not synthetic, signature not invalid).
    let newest = clock::newest_evidence(counting_evidence.iter().copied());
    let newest_evidence = newest.map(|e| e.recorded_at);
    // Per stage, only the evidence of its own environment (as the gatekeeper reads it).
    let stale = |stage| {
        let own = clock::newest_evidence(
            counting_evidence
                .iter()
                .copied()
                .filter(|e| e.counts_for(stage)),
        );
        clock::evidence_stale(
            own.map(|e| e.recorded_at),
            windows.evidence_freshness(stage),
            now,
        )
    };
    let layers = json!({
        "coverage": {
            "score": pct(governed, seen),
            "detail": format!("{governed} of {seen} assets seen in decisions are registered"),
            "drill_down": {"shadow_assets": shadow},
        },
        "controls": {
            "score": pct(enforced, high_paths),
            "detail": format!("{enforced} of {high_paths} controls on high-risk paths are enforced"),
            "drill_down": {"not_enforced": weak_controls},
        },
        "findings": {
            "score": (100 - penalty).max(0),
            "detail": format!("{} open findings, {} overdue", open.len(), overdue.len()),
            "open_by_severity": by_severity,
            "drill_down": {
                "open": open,
                "overdue": overdue,
                "risk_accepted": risk_accepted,
                "expired_exceptions": expired_exceptions,
                "break_glass_review_overdue": review_overdue,
            },
        },
        "evidence": {
            "score": pct(verified, evidence_total),
            "detail": format!("{verified} of {evidence_total} evidence artefacts verify against a trust root"),
            "newest_at": newest_evidence,
            "newest_id": newest.map(|e| e.evidence_id.clone()),
            "age_seconds": newest_evidence.map(|t| (now.0 - t.0).max(0) / 1000),
            "stale": {
                "trial": stale(Stage::Trial),
                "pilot": stale(Stage::Pilot),
                "production": stale(Stage::Production),
            },
            "drill_down": {"unverified": unverified},
        },
        "reports": {
            "score": if delivered.is_empty() { 0 } else { 100 },
            "detail": format!("{} packets delivered to approved recipients with audit evidence", delivered.len()),
            "drill_down": {"delivered": delivered, "failed": failed},
        },
    });
    let scores: Vec<f64> = ["coverage", "controls", "findings", "evidence", "reports"]
        .iter()
        .filter_map(|l| layers[l]["score"].as_f64())
        .collect();
    let overall = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
    json!({
        "tenant_id": tenant,
        "score": (overall * 10.0).round() / 10.0,
        "layers": layers,
        "evaluated_at": now,
    })
}
