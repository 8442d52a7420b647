//! The report path's checks, stated in every packet: evidence freshness, trust roots, the
//! findings that block and the risks accepted instead (with owner and expiry).

use crate::state::TenantState;
use aispm_schemas::{FindingStatus, Risk, SignatureState, Stage, Timestamp, clock};
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::Duration;

/// Outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// Is the evidence behind the report fresh? Judged as the gatekeeper's `evidence_stale` for
/// the report's stage ([`clock::evidence_stale`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Freshness {
    pub status: Status,
    /// The stage whose freshness window applies.
    pub stage: Stage,
    pub window_hours: f64,
    /// Newest evidence that counts for freshness (not synthetic, signature not invalid), and
    /// its age.
    pub newest_evidence_id: Option<String>,
    pub newest_evidence_at: Option<Timestamp>,
    pub age_hours: Option<f64>,
    /// When the reporter last folded in a change for this tenant.
    pub state_updated_at: Option<Timestamp>,
    pub statement: String,
}

/// Are evidence signatures anchored to registered trust roots?
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrustRoots {
    pub status: Status,
    pub registered: Vec<String>,
    pub verified: u64,
    pub unsigned: u64,
    pub invalid: u64,
    pub unknown_key: u64,
    /// Evidence whose signature is invalid or names an unknown key.
    pub failing_evidence_ids: Vec<String>,
    /// Whether the key signing this packet is registered as one of the tenant's trust roots.
    pub packet_key_registered: bool,
    pub packet_key_id: String,
    /// The minisign key id (fingerprint) of the key signing this packet.
    pub packet_key_fingerprint: String,
    pub statement: String,
}

/// An open finding that stands between the tenant and its next stage.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BlockingFinding {
    pub finding_id: String,
    pub title: String,
    pub severity: Risk,
    pub owner: Option<String>,
    pub due_at: Option<Timestamp>,
    pub overdue: bool,
    /// Why it blocks: `critical_unowned`, `overdue`, `named_by_blocker`, `open_critical`.
    pub reasons: Vec<String>,
    pub event_ids: Vec<String>,
    /// Its risk score (`aispm_schemas::risk`): the list is ranked by it.
    pub risk_score: i64,
}

/// A risk accepted instead of resolved: an active exception, with owner and expiry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AcceptedRisk {
    pub exception_id: String,
    pub finding_id: Option<String>,
    pub control_id: Option<String>,
    pub owner: Option<String>,
    pub reason: Option<String>,
    pub granted_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// Days until expiry (negative when expired).
    pub days_to_expiry: Option<f64>,
    /// [`clock::exception_expired`] at the report's time.
    pub expired: bool,
}

/// The evidence-freshness check at `now`, with `stage`'s freshness `window`: only evidence of the
/// stage's own environment counts ([`aispm_schemas::EvidenceRow::counts_for`]), as for the gatekeeper.
pub fn freshness(t: &TenantState, now: Timestamp, stage: Stage, window: Duration) -> Freshness {
    let newest = clock::newest_evidence(t.evidence.values().filter(|e| e.counts_for(stage)));
    let window_hours = window.as_secs_f64() / 3600.0;
    let age_hours = newest.map(|e| super::kpi::round1((now.0 - e.recorded_at.0) as f64 / 3.6e6));
    let stale = clock::evidence_stale(newest.map(|e| e.recorded_at), window, now);
    let (status, statement) = match (newest, age_hours) {
        (Some(e), Some(age)) if !stale => (
            Status::Pass,
            format!(
                "Evidence is fresh: the newest real {stage} evidence ({}) is {age} h old, within the {stage} window of {window_hours} h.",
                e.evidence_id
            ),
        ),
        (Some(e), Some(age)) => (
            Status::Fail,
            format!(
                "Evidence is stale: the newest real {stage} evidence ({}) is {age} h old, beyond the {stage} window of {window_hours} h.",
                e.evidence_id
            ),
        ),
        _ => (
            Status::Fail,
            format!(
                "No real evidence has been recorded in this tenant's {stage} environment (synthetic and invalidly signed evidence does not count)."
            ),
        ),
    };
    Freshness {
        status,
        stage,
        window_hours,
        newest_evidence_id: newest.map(|e| e.evidence_id.clone()),
        newest_evidence_at: newest.map(|e| e.recorded_at),
        age_hours,
        state_updated_at: t.updated_at,
        statement,
    }
}

/// The trust-root check: evidence signatures and the packet's own signing key.
pub fn trust_roots(t: &TenantState, packet_public_key: &str, fallback_key_id: &str) -> TrustRoots {
    let mut c = TrustRoots {
        status: Status::Pass,
        registered: t.trust_roots.keys().cloned().collect(),
        verified: 0,
        unsigned: 0,
        invalid: 0,
        unknown_key: 0,
        failing_evidence_ids: vec![],
        packet_key_registered: false,
        packet_key_id: fallback_key_id.to_owned(),
        packet_key_fingerprint: crate::minisign::PublicKey::parse(packet_public_key)
            .map(|k| k.key_id.to_string())
            .unwrap_or_default(),
        statement: String::new(),
    };
    for e in t.evidence.values() {
        match e.signature_state {
            SignatureState::Verified => c.verified += 1,
            SignatureState::Unsigned => c.unsigned += 1,
            SignatureState::Invalid => {
                c.invalid += 1;
                c.failing_evidence_ids.push(e.evidence_id.clone());
            }
            SignatureState::UnknownKey => {
                c.unknown_key += 1;
                c.failing_evidence_ids.push(e.evidence_id.clone());
            }
        }
    }
    if let Some(id) = t.trust_root_for(packet_public_key) {
        c.packet_key_registered = true;
        c.packet_key_id = id.to_owned();
    }
    c.status = if c.registered.is_empty() || c.invalid + c.unknown_key > 0 {
        Status::Fail
    } else if c.unsigned > 0 || !c.packet_key_registered {
        Status::Warn
    } else {
        Status::Pass
    };
    c.statement = format!(
        "{} trust root(s) registered; evidence signatures: {} verified, {} unsigned, {} invalid, {} unknown key. This packet's signing key {} a registered trust root (key id {}).",
        c.registered.len(),
        c.verified,
        c.unsigned,
        c.invalid,
        c.unknown_key,
        if c.packet_key_registered {
            "is"
        } else {
            "is not"
        },
        c.packet_key_id
    );
    c
}

/// Open findings that block: critical without owner or due date, overdue
/// ([`clock::finding_overdue`]: high/critical, due date reached, no unexpired exception), any
/// finding a current blocker names, and open criticals not covered by an unexpired exception.
pub fn blocking_findings(t: &TenantState, now: Timestamp) -> Vec<BlockingFinding> {
    let named: BTreeSet<&str> = t
        .blockers
        .values()
        .flat_map(|m| m.values())
        .flat_map(|b| {
            b.evidence
                .iter()
                .map(String::as_str)
                .chain(b.subject.as_deref())
        })
        .collect();
    let mut open: Vec<&aispm_schemas::FindingRow> = t
        .findings
        .values()
        .filter(|f| f.status == FindingStatus::Open)
        .collect();
    open.sort_by(|a, b| aispm_schemas::FindingRow::by_rank(a, b));
    open.into_iter()
        .filter_map(|f| {
            let times = clock::FindingTimes::from(f);
            let covered = clock::finding_covered(times, now);
            let overdue = clock::finding_overdue(times, now);
            let mut reasons = vec![];
            if f.severity == Risk::Critical && (f.owner.is_none() || f.due_at.is_none()) {
                reasons.push("critical_unowned".to_owned());
            }
            if overdue {
                reasons.push("overdue".to_owned());
            }
            if named.contains(f.finding_id.as_str()) {
                reasons.push("named_by_blocker".to_owned());
            }
            if f.severity == Risk::Critical && !covered && reasons.is_empty() {
                reasons.push("open_critical".to_owned());
            }
            (!reasons.is_empty()).then(|| BlockingFinding {
                finding_id: f.finding_id.clone(),
                title: f.title.clone(),
                severity: f.severity,
                owner: f.owner.clone(),
                due_at: f.due_at,
                overdue,
                reasons,
                event_ids: f.event_ids.clone(),
                risk_score: f.risk.score,
            })
        })
        .collect()
}

/// Exceptions (accepted risks) not revoked, expired ones included and marked.
pub fn accepted_risks(t: &TenantState, now: Timestamp) -> Vec<AcceptedRisk> {
    t.exceptions
        .values()
        .filter(|e| e.kind == aispm_schemas::ExceptionKind::Exception && !e.revoked)
        .map(|e| AcceptedRisk {
            exception_id: e.exception_id.clone(),
            finding_id: e.finding_id.clone(),
            control_id: e.control_id.clone(),
            owner: e.owner.clone(),
            reason: e.reason.clone(),
            granted_at: e.granted_at,
            expires_at: e.expires_at,
            days_to_expiry: e
                .expires_at
                .map(|x| super::kpi::round1((x.0 - now.0) as f64 / 86_400_000.0)),
            expired: clock::exception_expired(e, now),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aispm_schemas::{Environment, EvidenceRow, FindingRow};

    fn evidence(id: &str, at: i64, synthetic: bool, state: SignatureState) -> EvidenceRow {
        EvidenceRow {
            asserted_by: None,
            evidence_id: id.into(),
            event_id: "d".into(),
            sha256: "00".into(),
            uri: "u".into(),
            signature_state: state,
            key_id: None,
            recorded_at: Timestamp(at),
            synthetic,
            action_kind: None,
            environment: Some(Environment::Production),
            agent_id: None,
            control_id: None,
        }
    }

    #[test]
    fn freshness_uses_real_evidence_only() {
        let mut t = TenantState::default();
        let hour = 3_600_000;
        t.evidence.insert(
            "old".into(),
            evidence("old", 0, false, SignatureState::Verified),
        );
        t.evidence.insert(
            "synthetic".into(),
            evidence("synthetic", 47 * hour, true, SignatureState::Verified),
        );
        t.evidence.insert(
            "forged".into(),
            evidence("forged", 47 * hour, false, SignatureState::Invalid),
        );
        let f = freshness(
            &t,
            Timestamp(48 * hour),
            Stage::Production,
            Duration::from_secs(24 * 3600),
        );
        assert_eq!(f.status, Status::Fail);
        assert_eq!(f.newest_evidence_id.as_deref(), Some("old"));
        assert_eq!(f.age_hours, Some(48.0));
        let f = freshness(
            &t,
            Timestamp(12 * hour),
            Stage::Production,
            Duration::from_secs(24 * 3600),
        );
        assert_eq!(f.status, Status::Pass);
        assert!(f.statement.contains("12 h old"));
        // Stale from the instant the window ends (`aispm_schemas::clock::stale`).
        let day = Duration::from_secs(24 * 3600);
        let at = |ms| freshness(&t, Timestamp(ms), Stage::Production, day).status;
        assert_eq!(at(24 * hour - 1), Status::Pass);
        assert_eq!(at(24 * hour), Status::Fail);
        // Newer evidence of another environment does not make production fresh.
        let mut trial = evidence("trial", 47 * hour, false, SignatureState::Verified);
        trial.environment = Some(Environment::Trial);
        t.evidence.insert("trial".into(), trial);
        let f = freshness(&t, Timestamp(48 * hour), Stage::Production, day);
        assert_eq!(f.newest_evidence_id.as_deref(), Some("old"));
        let f = freshness(&t, Timestamp(48 * hour), Stage::Trial, day);
        assert_eq!(f.newest_evidence_id.as_deref(), Some("trial"));
    }

    #[test]
    fn trust_roots_fail_on_invalid_signatures_and_name_the_packet_key() {
        let mut t = TenantState::default();
        t.evidence.insert(
            "e1".into(),
            evidence("e1", 0, false, SignatureState::Verified),
        );
        let c = trust_roots(&t, "PUB", "fallback");
        assert_eq!(c.status, Status::Fail, "no trust root registered");
        t.trust_roots.insert("reporter".into(), "PUB".into());
        let c = trust_roots(&t, "PUB", "fallback");
        assert_eq!(
            (c.status, c.packet_key_id.as_str()),
            (Status::Pass, "reporter")
        );
        t.evidence.insert(
            "e2".into(),
            evidence("e2", 0, false, SignatureState::Invalid),
        );
        let c = trust_roots(&t, "PUB", "fallback");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.failing_evidence_ids, ["e2"]);
    }

    #[test]
    fn blocking_findings_and_their_reasons() {
        let mut t = TenantState::default();
        let f =
            |id: &str, sev, owner: Option<&str>, due: Option<i64>, exc: Option<i64>| FindingRow {
                asserted_by: None,
                finding_id: id.into(),
                rule_id: "r".into(),
                title: id.into(),
                severity: sev,
                status: FindingStatus::Open,
                subject: "s".into(),
                owner: owner.map(Into::into),
                due_at: due.map(Timestamp),
                opened_at: Timestamp(0),
                closed_at: None,
                resolution: None,
                frameworks: vec![],
                event_ids: vec![],
                occurrences: 1,
                exception_id: exc.map(|_| "x".into()),
                exception_expires_at: exc.map(Timestamp),
                first_occurrence_at: Timestamp(0),
                last_occurrence_at: Timestamp(0),
                environments: Vec::new(),
                risk: Default::default(),
            };
        for r in [
            f("unowned", Risk::Critical, None, None, None),
            f("overdue", Risk::High, Some("o"), Some(5), None),
            f("accepted", Risk::Critical, Some("o"), Some(100), Some(100)),
            f("fine", Risk::Medium, Some("o"), Some(5), None),
        ] {
            t.findings.insert(r.finding_id.clone(), r);
        }
        let b = blocking_findings(&t, Timestamp(10));
        let ids: Vec<_> = b
            .iter()
            .map(|b| (b.finding_id.as_str(), b.reasons.join(",")))
            .collect();
        assert_eq!(
            ids,
            [
                ("unowned", "critical_unowned".to_owned()),
                ("overdue", "overdue".to_owned())
            ]
        );
    }
}
