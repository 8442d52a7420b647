//! A finding as an OCSF record (pinned to [`OCSF_VERSION`]), the one mapping used by the
//! projector's compacted `aispm.ocsf.v1` topic (one record per finding, keyed
//! `{tenant}/{finding_id}`) and by the packets' `findings.ocsf.json`.
//!
//! - The class follows the rule ([`crate::rules::FindingClass`]): what an agent did at runtime
//!   is a **Detection Finding** (2004); the state of an asset, control, exception or evidence
//!   is a **Compliance Finding** (2003), whose `compliance` object carries the standards and
//!   whether the check passes.
//! - MITRE ATLAS techniques go to `finding_info.attacks`; the framework standards (OWASP Top 10
//!   for LLM Applications, NIST AI RMF) to `compliance.standards` (2003) or
//!   `unmapped.standards` (2004): techniques and standards are never mixed.
//! - `remediation` is the rule's; `evidences` name the events behind the finding (the newest
//!   ids the row keeps; every one is reachable through the projector's API by cursor).
//! - Nothing reads the wall clock: the record is a function of the row, so a replay publishes
//!   the same bytes and the compacted topic absorbs it.

use crate::rules::{self, FindingClass};
use crate::{FindingRow, FindingStatus, Risk, Timestamp};
use serde_json::{Value, json};

/// The OCSF schema version the records follow.
pub const OCSF_VERSION: &str = "1.5.0";
pub const COMPLIANCE_FINDING: u32 = 2003;
pub const DETECTION_FINDING: u32 = 2004;

/// The record key on `aispm.ocsf.v1` ([`crate::keys::FindingKey`]).
pub fn record_key(tenant: &str, finding_id: &str) -> String {
    crate::keys::FindingKey { tenant, finding_id }.to_string()
}

fn severity(r: Risk) -> (u32, &'static str) {
    match r {
        Risk::Low => (2, "Low"),
        Risk::Medium => (3, "Medium"),
        Risk::High => (4, "High"),
        Risk::Critical => (5, "Critical"),
    }
}

/// An ATLAS framework entry (`MITRE-ATLAS AML.T0010 ML Supply Chain Compromise`) as an OCSF
/// attack; `None` for any other framework.
fn attack(framework: &str) -> Option<Value> {
    let rest = framework.strip_prefix("MITRE-ATLAS ")?;
    let (uid, name) = rest.split_once(' ').unwrap_or((rest, rest));
    Some(json!({
        "technique": {
            "uid": uid,
            "name": name,
            "src_url": format!("https://atlas.mitre.org/techniques/{uid}"),
        },
    }))
}

/// The finding's class: its rule's, or for a rule this build does not know, a detection.
pub fn class(f: &FindingRow) -> FindingClass {
    rules::by_id(&f.rule_id).map_or(FindingClass::Detection, |r| r.class)
}

/// `f`, a finding of `tenant`, as an OCSF record.
pub fn finding(tenant: &str, f: &FindingRow) -> Value {
    let rule = rules::by_id(&f.rule_id);
    let compliance = class(f) == FindingClass::Compliance;
    let class_uid = if compliance {
        COMPLIANCE_FINDING
    } else {
        DETECTION_FINDING
    };
    let (activity_id, activity_name, status_id, status) = match f.status {
        FindingStatus::Open if f.exception_id.is_some() => (2, "Update", 3, "Suppressed"),
        FindingStatus::Open if f.owner.is_some() => (2, "Update", 2, "In Progress"),
        FindingStatus::Open => (1, "Create", 1, "New"),
        FindingStatus::Closed => (3, "Close", 4, "Resolved"),
    };
    let (severity_id, severity_name) = severity(f.severity);
    let time = f.closed_at.unwrap_or(f.last_occurrence_at.max(f.opened_at));
    let attacks: Vec<Value> = f.frameworks.iter().filter_map(|fw| attack(fw)).collect();
    let standards: Vec<&String> = f
        .frameworks
        .iter()
        .filter(|fw| !fw.starts_with("MITRE-ATLAS "))
        .collect();
    let mut finding_info = json!({
        "uid": f.finding_id,
        "title": f.title,
        "desc": format!("{} on {} ({} occurrence(s))", f.rule_id, f.subject, f.occurrences),
        "types": [f.rule_id],
        "created_time": f.opened_at.0,
        "first_seen_time": f.first_occurrence_at.0,
        "last_seen_time": f.last_occurrence_at.0,
        "modified_time": time.0,
        "related_events": f.event_ids.iter().map(|e| json!({"uid": e})).collect::<Vec<_>>(),
        "data_sources": ["aispm"],
    });
    if !attacks.is_empty() {
        finding_info["attacks"] = Value::Array(attacks);
    }
    let mut resource = json!({"uid": f.subject, "name": f.subject, "type": "AI asset"});
    if !f.environments.is_empty() {
        resource["labels"] = json!(
            f.environments
                .iter()
                .map(|e| format!("environment:{e}"))
                .collect::<Vec<_>>()
        );
    }
    let mut unmapped = json!({
        "owner": f.owner,
        "due_time": f.due_at.map(Timestamp::millis),
        "exception_uid": f.exception_id,
        "exception_expiration_time": f.exception_expires_at.map(Timestamp::millis),
        "resolution": f.resolution,
        "occurrences": f.occurrences,
        "asserted_by": f.asserted_by,
    });
    let mut v = json!({
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": class_uid,
        "class_name": if compliance { "Compliance Finding" } else { "Detection Finding" },
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": format!("{}: {activity_name}", if compliance { "Compliance Finding" } else { "Detection Finding" }),
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": status_id,
        "status": status,
        "time": time.0,
        "time_dt": time.to_rfc3339(),
        "start_time": f.first_occurrence_at.0,
        "end_time": f.last_occurrence_at.0,
        "message": format!("{}: {}", f.title, f.subject),
        "metadata": {
            "version": OCSF_VERSION,
            "uid": record_key(tenant, &f.finding_id),
            "product": {"name": "aispm", "vendor_name": "aispm", "version": env!("CARGO_PKG_VERSION")},
            "tenant_uid": tenant,
        },
        "finding_info": finding_info,
        "resources": [resource],
        "evidences": f.event_ids.iter().map(|e| json!({
            "name": "aispm event",
            "data": {"event_id": e, "tenant_id": tenant},
        })).collect::<Vec<_>>(),
    });
    if let Some(rule) = rule {
        v["remediation"] = json!({"desc": rule.remediation});
    }
    if compliance {
        // Compliance status: 1 Pass, 3 Fail.
        let cstatus_id = match f.status {
            FindingStatus::Open => 3,
            FindingStatus::Closed => 1,
        };
        v["compliance"] = json!({
            "standards": standards,
            "requirements": standards,
            "control": f.rule_id,
            "status_id": cstatus_id,
        });
    } else {
        v["count"] = json!(f.occurrences);
        unmapped["standards"] = json!(standards);
    }
    v["unmapped"] = unmapped;
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub(crate) fn row(rule: &str) -> FindingRow {
        let r = rules::by_id(rule).unwrap();
        FindingRow {
            finding_id: format!("{rule}:agent-1"),
            rule_id: rule.into(),
            title: r.title.into(),
            severity: r.severity,
            status: FindingStatus::Open,
            subject: "agent-1".into(),
            owner: None,
            due_at: None,
            opened_at: Timestamp(1_000),
            closed_at: None,
            resolution: None,
            frameworks: r.frameworks.iter().map(|s| (*s).to_owned()).collect(),
            event_ids: vec!["e1".into(), "e2".into()],
            occurrences: 2,
            exception_id: None,
            exception_expires_at: None,
            asserted_by: None,
            first_occurrence_at: Timestamp(1_000),
            last_occurrence_at: Timestamp(2_000),
            environments: vec![],
            risk: Default::default(),
        }
    }

    #[test]
    fn runtime_findings_are_detections_and_state_findings_compliance() {
        let v = finding("acme", &row(rules::UNTRUSTED_MCP_TOOL.id));
        assert_eq!(
            (v["class_uid"].as_u64(), v["type_uid"].as_u64()),
            (Some(2004), Some(200401))
        );
        assert_eq!(
            v["finding_info"]["attacks"][0]["technique"]["uid"],
            "AML.T0010"
        );
        assert!(v.get("compliance").is_none());
        assert!(
            v["unmapped"]["standards"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| !s.as_str().unwrap().contains("ATLAS"))
        );
        assert_eq!(v["count"], 2);
        assert_eq!(v["evidences"][1]["data"]["event_id"], "e2");
        assert!(v["remediation"]["desc"].as_str().unwrap().len() > 10);
        assert_eq!(v["metadata"]["uid"], "acme/AISPM-MCP-001:agent-1");

        let mut f = row(rules::PUBLIC_ENDPOINT.id);
        let v = finding("acme", &f);
        assert_eq!(v["class_uid"], 2003);
        assert_eq!(v["compliance"]["status_id"], 3, "fail");
        assert!(v["finding_info"]["attacks"][0]["technique"]["uid"] == "AML.T0040");
        f.status = FindingStatus::Closed;
        f.closed_at = Some(Timestamp(9_000));
        let v = finding("acme", &f);
        assert_eq!(
            (v["type_uid"].as_u64(), v["time"].as_i64()),
            (Some(200303), Some(9_000))
        );
        assert_eq!(v["compliance"]["status_id"], 1, "pass");
        assert_eq!(v["status"], "Resolved");
    }

    #[test]
    fn every_rule_maps_and_the_record_is_a_function_of_the_row() {
        for r in rules::ALL {
            let f = row(r.id);
            assert_eq!(finding("t", &f), finding("t", &f));
            let v = finding("t", &f);
            assert!(v["remediation"]["desc"].is_string(), "{}", r.id);
        }
    }
}
