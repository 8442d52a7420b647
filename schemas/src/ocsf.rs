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
use serde::Serialize;
use serde_json::Value;

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
fn attack(framework: &str) -> Option<Attack<'_>> {
    let rest = framework.strip_prefix("MITRE-ATLAS ")?;
    let (uid, name) = rest.split_once(' ').unwrap_or((rest, rest));
    Some(Attack {
        technique: Technique {
            name,
            src_url: format!("https://atlas.mitre.org/techniques/{uid}"),
            uid,
        },
    })
}

/// The finding's class: its rule's, or for a rule this build does not know, a detection.
pub fn class(f: &FindingRow) -> FindingClass {
    rules::by_id(&f.rule_id).map_or(FindingClass::Detection, |r| r.class)
}

/// `f`, a finding of `tenant`, as an OCSF record.
pub fn finding(tenant: &str, f: &FindingRow) -> Value {
    // A record of plain strings, numbers and objects always converts.
    serde_json::to_value(record(tenant, f)).unwrap_or(Value::Null)
}

/// `f`, a finding of `tenant`, as the bytes of its OCSF record: what [`finding`] holds, written
/// without building it as a JSON value first (the projector writes one per finding change).
pub fn finding_json(tenant: &str, f: &FindingRow) -> serde_json::Result<Vec<u8>> {
    crate::codec::exact_bytes(|out| serde_json::to_writer(out, &record(tenant, f)))
}

// The record's objects. Each object's fields are in the order of their names, the order a JSON
// value writes them in, so `finding_json` writes the bytes `finding` serializes to.

#[derive(Serialize)]
struct Record<'a> {
    activity_id: u32,
    activity_name: &'static str,
    category_name: &'static str,
    category_uid: u32,
    class_name: &'static str,
    class_uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    compliance: Option<Compliance<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<i64>,
    end_time: i64,
    evidences: Vec<EvidenceRef<'a>>,
    finding_info: FindingInfo<'a>,
    message: String,
    metadata: Metadata<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remediation: Option<Remediation>,
    resources: [Resource<'a>; 1],
    severity: &'static str,
    severity_id: u32,
    start_time: i64,
    status: &'static str,
    status_id: u32,
    time: i64,
    time_dt: String,
    type_name: String,
    type_uid: u32,
    unmapped: Unmapped<'a>,
}

#[derive(Serialize)]
struct Compliance<'a> {
    control: &'a str,
    requirements: Vec<&'a String>,
    standards: Vec<&'a String>,
    status_id: u32,
}

#[derive(Serialize)]
struct EvidenceRef<'a> {
    data: EvidenceData<'a>,
    name: &'static str,
}

#[derive(Serialize)]
struct EvidenceData<'a> {
    event_id: &'a str,
    tenant_id: &'a str,
}

#[derive(Serialize)]
struct FindingInfo<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attacks: Vec<Attack<'a>>,
    created_time: i64,
    data_sources: [&'static str; 1],
    desc: String,
    first_seen_time: i64,
    last_seen_time: i64,
    modified_time: i64,
    related_events: Vec<Uid<'a>>,
    title: &'a str,
    types: [&'a str; 1],
    uid: &'a str,
}

#[derive(Serialize)]
struct Attack<'a> {
    technique: Technique<'a>,
}

#[derive(Serialize)]
struct Technique<'a> {
    name: &'a str,
    src_url: String,
    uid: &'a str,
}

#[derive(Serialize)]
struct Uid<'a> {
    uid: &'a str,
}

#[derive(Serialize)]
struct Metadata<'a> {
    product: Product,
    tenant_uid: &'a str,
    uid: String,
    version: &'static str,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Remediation {
    desc: &'static str,
}

#[derive(Serialize)]
struct Resource<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    labels: Vec<String>,
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    uid: &'a str,
}

#[derive(Serialize)]
struct Unmapped<'a> {
    asserted_by: Option<&'a str>,
    due_time: Option<i64>,
    exception_expiration_time: Option<i64>,
    exception_uid: Option<&'a str>,
    occurrences: i64,
    owner: Option<&'a str>,
    resolution: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    standards: Option<Vec<&'a String>>,
}

/// The typed record of [`finding`].
fn record<'a>(tenant: &'a str, f: &'a FindingRow) -> Record<'a> {
    let rule = rules::by_id(&f.rule_id);
    let compliance = class(f) == FindingClass::Compliance;
    let (class_uid, class_name) = if compliance {
        (COMPLIANCE_FINDING, "Compliance Finding")
    } else {
        (DETECTION_FINDING, "Detection Finding")
    };
    let (activity_id, activity_name, status_id, status) = match f.status {
        FindingStatus::Open if f.exception_id.is_some() => (2, "Update", 3, "Suppressed"),
        FindingStatus::Open if f.owner.is_some() => (2, "Update", 2, "In Progress"),
        FindingStatus::Open => (1, "Create", 1, "New"),
        FindingStatus::Closed => (3, "Close", 4, "Resolved"),
    };
    let (severity_id, severity_name) = severity(f.severity);
    let time = f.closed_at.unwrap_or(f.last_occurrence_at.max(f.opened_at));
    let standards: Vec<&String> = f
        .frameworks
        .iter()
        .filter(|fw| !fw.starts_with("MITRE-ATLAS "))
        .collect();
    Record {
        activity_id,
        activity_name,
        category_name: "Findings",
        category_uid: 2,
        class_name,
        class_uid,
        compliance: compliance.then(|| Compliance {
            control: &f.rule_id,
            requirements: standards.clone(),
            standards: standards.clone(),
            // Compliance status: 1 Pass, 3 Fail.
            status_id: match f.status {
                FindingStatus::Open => 3,
                FindingStatus::Closed => 1,
            },
        }),
        count: (!compliance).then_some(f.occurrences),
        end_time: f.last_occurrence_at.0,
        evidences: f
            .event_ids
            .iter()
            .map(|e| EvidenceRef {
                data: EvidenceData {
                    event_id: e,
                    tenant_id: tenant,
                },
                name: "aispm event",
            })
            .collect(),
        finding_info: FindingInfo {
            attacks: f.frameworks.iter().filter_map(|fw| attack(fw)).collect(),
            created_time: f.opened_at.0,
            data_sources: ["aispm"],
            desc: format!(
                "{} on {} ({} occurrence(s))",
                f.rule_id, f.subject, f.occurrences
            ),
            first_seen_time: f.first_occurrence_at.0,
            last_seen_time: f.last_occurrence_at.0,
            modified_time: time.0,
            related_events: f.event_ids.iter().map(|e| Uid { uid: e }).collect(),
            title: &f.title,
            types: [&f.rule_id],
            uid: &f.finding_id,
        },
        message: format!("{}: {}", f.title, f.subject),
        metadata: Metadata {
            product: Product {
                name: "aispm",
                vendor_name: "aispm",
                version: env!("CARGO_PKG_VERSION"),
            },
            tenant_uid: tenant,
            uid: record_key(tenant, &f.finding_id),
            version: OCSF_VERSION,
        },
        remediation: rule.map(|r| Remediation {
            desc: r.remediation,
        }),
        resources: [Resource {
            labels: f
                .environments
                .iter()
                .map(|e| format!("environment:{e}"))
                .collect(),
            name: &f.subject,
            kind: "AI asset",
            uid: &f.subject,
        }],
        severity: severity_name,
        severity_id,
        start_time: f.first_occurrence_at.0,
        status,
        status_id,
        time: time.0,
        time_dt: time.to_rfc3339(),
        type_name: format!("{class_name}: {activity_name}"),
        type_uid: class_uid * 100 + activity_id,
        unmapped: Unmapped {
            asserted_by: f.asserted_by.as_deref(),
            due_time: f.due_at.map(Timestamp::millis),
            exception_expiration_time: f.exception_expires_at.map(Timestamp::millis),
            exception_uid: f.exception_id.as_deref(),
            occurrences: f.occurrences,
            owner: f.owner.as_deref(),
            resolution: f.resolution.as_deref(),
            standards: (!compliance).then_some(standards),
        },
    }
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
    fn the_bytes_written_are_those_of_the_value() {
        for r in rules::ALL {
            let mut f = row(r.id);
            let value = serde_json::to_vec(&finding("t", &f)).unwrap();
            let bytes = finding_json("t", &f).unwrap();
            assert_eq!(bytes, value, "{}", r.id);
            // Held until published: no room left over from growing.
            assert_eq!(bytes.capacity(), bytes.len(), "{}", r.id);
            f.status = FindingStatus::Closed;
            f.closed_at = Some(Timestamp(9_000));
            f.owner = Some("sec".into());
            f.environments = vec![crate::Environment::Production];
            let value = serde_json::to_vec(&finding("t", &f)).unwrap();
            assert_eq!(finding_json("t", &f).unwrap(), value, "{}", r.id);
        }
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
