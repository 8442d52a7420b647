//! The report document: what a packet says, built from one tenant's state at one moment.
//!
//! Every report follows the report path: the freshness and trust-root checks, the blocking
//! findings and the accepted risks (with owner and expiry) are stated in every packet; then
//! each type adds the sections its reader needs (see [`kind`]). The document is the packet's
//! `report.json`; the HTML, CSV and OCSF files are renderings of it.
//!
//! Every judgement against the clock (overdue, expired, covered, stale, reviewed in time) is a
//! call into [`aispm_schemas::clock`] with the packet's instant ([`Document::instant`]: its
//! `generated_at`, or the past instant it is as of) and the windows in
//! [`Request::windows`] (the gatekeeper's flags), so a packet agrees with the gate.

pub mod checks;
pub mod kind;
pub mod kpi;
pub mod monthly;

use crate::state::TenantState;
use aispm_schemas::views::AsOf;
use aispm_schemas::{
    Blocker, ControlRow, ControlState, CoverageRow, DeliveryRow, ExceptionKind, ExceptionRow,
    FindingRow, FindingStatus, ReportType, SignatureState, Stage, Timestamp, ValidationRow, clock,
};
use checks::{AcceptedRisk, BlockingFinding, Freshness, TrustRoots};
use kpi::{Kpis, TrendPoint};
use serde::Serialize;
use std::collections::BTreeMap;

/// The `format` of `report.json`.
pub const FORMAT: &str = "aispm.report.v1";

/// Inputs of one report besides the tenant's state.
#[derive(Debug, Clone)]
pub struct Request {
    pub report_id: String,
    pub tenant_id: String,
    pub report_type: ReportType,
    pub generated_at: Timestamp,
    /// The clock rules' windows: the report's stage's evidence freshness window decides the
    /// freshness check, the break-glass review window which break-glass is unreviewed.
    pub windows: clock::Windows,
    /// Base64 public key of the key that signs the packet, and the key id to name otherwise.
    pub signer_public_key: String,
    pub fallback_key_id: String,
    /// What asked for it: `api:<principal>` or `cadence:<period>`.
    pub requested_by: String,
    /// A packet as of a past instant: the instant and what the projector's replay included.
    /// The clock rules judge at it; `None`: as of `generated_at`.
    pub as_of: Option<AsOf>,
}

impl Request {
    /// The instant the packet describes: `as_of`'s, or its generation.
    pub fn instant(&self) -> Timestamp {
        self.as_of.map_or(self.generated_at, |a| a.at)
    }
}

/// The readiness verdict of one stage with every blocker and its evidence.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageReadiness {
    pub stage: Stage,
    /// True only when the gatekeeper said ready and no blocker is open.
    pub ready: bool,
    /// `ready_for_aispm_<stage>` as the gatekeeper's API names it.
    pub key: String,
    pub evaluated: bool,
    pub evaluated_at: Option<Timestamp>,
    pub blockers: Vec<BlockerItem>,
}

/// A blocker with its evidence resolved against the evidence and findings views.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BlockerItem {
    pub blocker_id: String,
    pub kind: String,
    pub meaning: String,
    pub resolution: String,
    pub subject: Option<String>,
    pub detected_at: Timestamp,
    pub evidence: Vec<EvidenceRef>,
}

/// One id a blocker names, and what it is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvidenceRef {
    pub id: String,
    /// `evidence`, `finding`, `validation` or `unknown`.
    pub kind: &'static str,
    pub detail: String,
}

/// One row of the control-to-evidence matrix.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MatrixRow {
    pub control_id: String,
    pub state: ControlState,
    pub frameworks: Vec<String>,
    pub enforced_decisions: i64,
    pub shadow_decisions: i64,
    pub decision_ids: Vec<String>,
    pub evidence: Vec<MatrixEvidence>,
    pub verified: u64,
    pub unverified: u64,
}

/// Evidence behind one control.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MatrixEvidence {
    pub evidence_id: String,
    pub decision_id: String,
    pub sha256: String,
    pub signature_state: SignatureState,
    pub recorded_at: Timestamp,
    pub uri: String,
}

/// One framework criterion and the controls that map to it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Criterion {
    pub framework: String,
    pub controls: Vec<String>,
    pub enforced: u64,
    pub evidence: u64,
}

/// One action path (file, command, git, mcp, …) with real and synthetic traffic.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActionPath {
    pub path: String,
    pub decisions: i64,
    pub real_decisions: i64,
    pub synthetic_decisions: i64,
    pub synthetic_only: bool,
    pub last_real_decision_id: Option<String>,
}

/// Open findings per owner.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OwnerLoad {
    pub owner: String,
    pub open: u64,
    pub critical: u64,
    pub overdue: u64,
}

/// A layer of the posture (coverage, control state, findings, evidence, reports).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Layer {
    pub layer: &'static str,
    pub question: &'static str,
    /// 0–100, none when there is nothing to measure.
    pub score: Option<f64>,
    pub healthy: bool,
    pub statement: String,
    /// The ids behind the number.
    pub drill_down: Vec<String>,
}

/// The report document (`report.json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Document {
    pub format: &'static str,
    pub report_id: String,
    pub tenant_id: String,
    pub report_type: ReportType,
    pub title: String,
    pub audience: String,
    pub generated_at: Timestamp,
    /// A packet as of a past instant: the instant its posture, findings and readiness are as
    /// of, and what the projector's replay of the tenant's events included (those that
    /// occurred by then; late ones counted). Absent: as of `generated_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<AsOf>,
    pub period_start: Timestamp,
    pub requested_by: String,
    /// The windows the packet judged time with (humantime, e.g. `1day`).
    #[serde(serialize_with = "windows_json")]
    pub windows: clock::Windows,
    /// One sentence a reader takes away.
    pub headline: String,
    pub freshness: Freshness,
    pub trust_roots: TrustRoots,
    pub blocking_findings: Vec<BlockingFinding>,
    pub accepted_risks: Vec<AcceptedRisk>,
    pub kpis: Kpis,
    pub readiness: Vec<StageReadiness>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<Layer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trends: Option<Vec<TrendPoint>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Vec<CoverageRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_paths: Option<Vec<ActionPath>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controls: Option<Vec<ControlRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_evidence: Option<Vec<MatrixRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub criteria: Option<Vec<Criterion>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<Vec<FindingRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_findings: Option<Vec<FindingRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owners: Option<Vec<OwnerLoad>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exceptions: Option<Vec<ExceptionRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<Vec<ExceptionRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validations: Option<Vec<ValidationRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<DeliveryRow>>,
    /// Blockers detected within the period (the daily digest's "new").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_blockers: Option<Vec<BlockerItem>>,
    /// The monthly review: exceptions in force by age, and those ending soon or ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception_aging: Option<monthly::ExceptionAging>,
    /// The monthly review: controls that drifted to shadow mode or to a new policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_drift: Option<Vec<monthly::Drift>>,
    /// The monthly review: requests for approval month by month, and by control.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_trends: Option<monthly::ApprovalTrends>,
}

impl Document {
    /// The instant the packet describes and the clock rules judge at: `as_of`'s, or its
    /// generation.
    pub fn instant(&self) -> Timestamp {
        self.as_of.map_or(self.generated_at, |a| a.at)
    }
}

/// Builds the document for `req` from `t`.
pub fn build(t: &TenantState, req: &Request) -> Document {
    let now = req.instant();
    let info = kind::info(req.report_type);
    let kpis = Kpis::compute(t, now, &req.windows);
    let readiness = readiness(t);
    let mut doc = Document {
        format: FORMAT,
        report_id: req.report_id.clone(),
        tenant_id: req.tenant_id.clone(),
        report_type: req.report_type,
        title: info.title.to_owned(),
        audience: info.audience.to_owned(),
        generated_at: req.generated_at,
        as_of: req.as_of,
        period_start: now.minus(info.period),
        requested_by: req.requested_by.clone(),
        windows: req.windows,
        headline: String::new(),
        freshness: checks::freshness(
            t,
            now,
            info.stage,
            req.windows.evidence_freshness(info.stage),
        ),
        trust_roots: checks::trust_roots(t, &req.signer_public_key, &req.fallback_key_id),
        blocking_findings: checks::blocking_findings(t, now),
        accepted_risks: checks::accepted_risks(t, now),
        kpis,
        readiness,
        layers: None,
        trends: None,
        coverage: None,
        action_paths: None,
        controls: None,
        control_evidence: None,
        criteria: None,
        findings: None,
        closed_findings: None,
        owners: None,
        exceptions: None,
        break_glass: None,
        validations: None,
        deliveries: None,
        new_blockers: None,
        exception_aging: None,
        policy_drift: None,
        approval_trends: None,
    };
    kind::fill(&mut doc, t);
    doc.headline = kind::headline(&doc);
    doc
}

impl Document {
    /// The readiness of one stage.
    pub fn stage(&self, stage: Stage) -> Option<&StageReadiness> {
        self.readiness.iter().find(|r| r.stage == stage)
    }
}

/// Readiness per stage, with each blocker's evidence resolved.
pub fn readiness(t: &TenantState) -> Vec<StageReadiness> {
    Stage::ALL
        .iter()
        .map(|&stage| {
            let verdict = t.readiness.get(&stage);
            let blockers: Vec<BlockerItem> = t
                .blockers
                .get(&stage)
                .map(|m| m.values().map(|b| blocker_item(t, b)).collect())
                .unwrap_or_default();
            StageReadiness {
                stage,
                ready: verdict.is_some_and(|r| r.ready) && blockers.is_empty(),
                key: format!("ready_for_aispm_{stage}"),
                evaluated: verdict.is_some(),
                evaluated_at: verdict.map(|r| r.evaluated_at),
                blockers,
            }
        })
        .collect()
}

/// A blocker with the ids it names looked up.
pub fn blocker_item(t: &TenantState, b: &Blocker) -> BlockerItem {
    let evidence = b
        .evidence
        .iter()
        .map(|id| {
            if let Some(e) = t.evidence.get(id) {
                EvidenceRef {
                    id: id.clone(),
                    kind: "evidence",
                    detail: format!(
                        "sha256 {} · signature {} · recorded {}",
                        short(&e.sha256),
                        e.signature_state,
                        e.recorded_at
                    ),
                }
            } else if let Some(f) = t.findings.get(id) {
                EvidenceRef {
                    id: id.clone(),
                    kind: "finding",
                    detail: format!(
                        "{} · {} · {} · owner {}",
                        f.title,
                        f.severity,
                        f.status,
                        f.owner.as_deref().unwrap_or("none")
                    ),
                }
            } else if let Some(v) = t
                .validations
                .values()
                .find(|v| v.event_id == *id || v.evidence_id.as_deref() == Some(id))
            {
                EvidenceRef {
                    id: id.clone(),
                    kind: "validation",
                    detail: format!("{} {} at {}", v.check_kind, v.result, v.validated_at),
                }
            } else {
                EvidenceRef {
                    id: id.clone(),
                    kind: "unknown",
                    detail: "not in the reporter's views (event id or resolved row)".to_owned(),
                }
            }
        })
        .collect();
    BlockerItem {
        blocker_id: b.blocker_id.clone(),
        kind: b.kind.to_string(),
        meaning: b.meaning.clone(),
        resolution: b.resolution.clone(),
        subject: b.subject.clone(),
        detected_at: b.detected_at,
        evidence,
    }
}

/// First 12 hex digits of a hash, for tables.
pub fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The control-to-evidence matrix: each control, its decisions and the evidence behind them.
pub fn control_evidence(t: &TenantState) -> Vec<MatrixRow> {
    let mut by_decision: BTreeMap<&str, Vec<&aispm_schemas::EvidenceRow>> = BTreeMap::new();
    for e in t.evidence.values() {
        by_decision.entry(e.event_id.as_str()).or_default().push(e);
    }
    t.controls
        .values()
        .map(|c| {
            let evidence: Vec<MatrixEvidence> = c
                .decision_ids
                .iter()
                .flat_map(|d| by_decision.get(d.as_str()).into_iter().flatten())
                .map(|e| MatrixEvidence {
                    evidence_id: e.evidence_id.clone(),
                    decision_id: e.event_id.clone(),
                    sha256: e.sha256.clone(),
                    signature_state: e.signature_state,
                    recorded_at: e.recorded_at,
                    uri: e.uri.clone(),
                })
                .collect();
            let verified = evidence
                .iter()
                .filter(|e| e.signature_state == SignatureState::Verified)
                .count() as u64;
            MatrixRow {
                control_id: c.control_id.clone(),
                state: c.state,
                frameworks: c.framework_mappings.clone(),
                enforced_decisions: c.enforced_decisions,
                shadow_decisions: c.shadow_decisions,
                decision_ids: c.decision_ids.clone(),
                unverified: evidence.len() as u64 - verified,
                verified,
                evidence,
            }
        })
        .collect()
}

/// Framework criteria and the controls mapped to them.
pub fn criteria(matrix: &[MatrixRow]) -> Vec<Criterion> {
    let mut out: BTreeMap<String, Criterion> = BTreeMap::new();
    for m in matrix {
        for f in &m.frameworks {
            let c = out.entry(f.clone()).or_insert_with(|| Criterion {
                framework: f.clone(),
                controls: vec![],
                enforced: 0,
                evidence: 0,
            });
            c.controls.push(m.control_id.clone());
            c.enforced += u64::from(m.state == ControlState::Enforced);
            c.evidence += m.evidence.len() as u64;
        }
    }
    out.into_values().collect()
}

/// The action paths with real versus synthetic decisions.
pub fn action_paths(t: &TenantState) -> Vec<ActionPath> {
    t.coverage
        .values()
        .filter(|c| c.kind == aispm_schemas::CoverageKind::ActionPath)
        .map(|c| ActionPath {
            path: c.id.clone(),
            decisions: c.decisions,
            real_decisions: c.decisions - c.synthetic_decisions,
            synthetic_decisions: c.synthetic_decisions,
            synthetic_only: c.decisions > 0 && c.decisions == c.synthetic_decisions,
            last_real_decision_id: c.last_real_decision_id.clone(),
        })
        .collect()
}

/// Open findings per owner, most loaded first.
pub fn owners(t: &TenantState, now: Timestamp) -> Vec<OwnerLoad> {
    let mut m: BTreeMap<String, OwnerLoad> = BTreeMap::new();
    for f in t
        .findings
        .values()
        .filter(|f| f.status == FindingStatus::Open)
    {
        let owner = f.owner.clone().unwrap_or_else(|| "(unowned)".to_owned());
        let o = m.entry(owner.clone()).or_insert(OwnerLoad {
            owner,
            open: 0,
            critical: 0,
            overdue: 0,
        });
        o.open += 1;
        o.critical += u64::from(f.severity == aispm_schemas::Risk::Critical);
        o.overdue += u64::from(clock::row_overdue(f, now));
    }
    let mut v: Vec<_> = m.into_values().collect();
    v.sort_by(|a, b| b.open.cmp(&a.open).then(a.owner.cmp(&b.owner)));
    v
}

/// Open findings, highest risk first ([`FindingRow::by_rank`]).
pub fn open_findings(t: &TenantState) -> Vec<FindingRow> {
    let mut v: Vec<FindingRow> = t
        .findings
        .values()
        .filter(|f| f.status == FindingStatus::Open)
        .cloned()
        .collect();
    v.sort_by(FindingRow::by_rank);
    v
}

/// The windows as `report.json` states them: humantime durations by flag name.
fn windows_json<S: serde::Serializer>(w: &clock::Windows, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let h = |d| humantime::format_duration(d).to_string();
    let mut m = s.serialize_map(Some(5))?;
    m.serialize_entry("trial_evidence_freshness", &h(w.trial_evidence_freshness))?;
    m.serialize_entry("pilot_evidence_freshness", &h(w.pilot_evidence_freshness))?;
    m.serialize_entry(
        "production_evidence_freshness",
        &h(w.production_evidence_freshness),
    )?;
    m.serialize_entry("break_glass_review_window", &h(w.break_glass_review_window))?;
    m.serialize_entry(
        "tenant_isolation_freshness",
        &h(w.tenant_isolation_freshness),
    )?;
    m.end()
}

/// Break-glass events, unreviewed first.
pub fn break_glass(t: &TenantState) -> Vec<ExceptionRow> {
    let mut v: Vec<ExceptionRow> = t
        .exceptions
        .values()
        .filter(|e| e.kind == ExceptionKind::BreakGlass)
        .cloned()
        .collect();
    v.sort_by_key(|e| (e.reviewed_at.is_some(), e.granted_at));
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aispm_schemas::{BlockerKind, Environment, EvidenceRow, Readiness};

    #[test]
    fn readiness_needs_a_ready_verdict_and_no_blockers() {
        let mut t = TenantState::default();
        t.readiness.insert(
            Stage::Trial,
            Readiness {
                tenant_id: "acme".into(),
                stage: Stage::Trial,
                ready: true,
                blocker_ids: vec![],
                evaluated_at: Timestamp(1),
            },
        );
        t.evidence.insert(
            "ev1".into(),
            EvidenceRow {
                asserted_by: None,
                evidence_id: "ev1".into(),
                event_id: "d1".into(),
                sha256: "abcdef0123456789".into(),
                uri: "s3://x".into(),
                signature_state: SignatureState::Verified,
                key_id: None,
                recorded_at: Timestamp(0),
                synthetic: false,
                action_kind: None,
                environment: Some(Environment::Production),
                agent_id: None,
                control_id: None,
            },
        );
        t.blockers.entry(Stage::Production).or_default().insert(
            "b1".into(),
            Blocker {
                tenant_id: "acme".into(),
                stage: Stage::Production,
                blocker_id: "b1".into(),
                kind: BlockerKind::EvidenceStale,
                meaning: "m".into(),
                resolution: "r".into(),
                subject: None,
                evidence: vec!["ev1".into(), "nope".into()],
                detected_at: Timestamp(2),
            },
        );
        let r = readiness(&t);
        assert_eq!(r.len(), 3);
        assert!(r[0].ready && r[0].evaluated);
        assert!(!r[1].ready && !r[1].evaluated);
        assert!(!r[2].ready);
        assert_eq!(r[2].key, "ready_for_aispm_production");
        let ev = &r[2].blockers[0].evidence;
        assert_eq!((ev[0].kind, ev[1].kind), ("evidence", "unknown"));
        assert!(ev[0].detail.contains("abcdef012345"));
    }
}
