//! Findings exported in OCSF 1.1: a finding mapped to a compliance framework becomes a
//! Compliance Finding (class 2003), any other a Detection Finding (class 2004).

use crate::report::Document;
use aispm_schemas::{FindingRow, FindingStatus, Risk, Timestamp};
use serde_json::{Value, json};

/// OCSF schema version the records follow.
pub const OCSF_VERSION: &str = "1.1.0";
const COMPLIANCE_FINDING: u32 = 2003;
const DETECTION_FINDING: u32 = 2004;

fn severity(r: Risk) -> (u32, &'static str) {
    match r {
        Risk::Low => (2, "Low"),
        Risk::Medium => (3, "Medium"),
        Risk::High => (4, "High"),
        Risk::Critical => (5, "Critical"),
    }
}

/// One finding as an OCSF record.
pub fn finding(doc: &Document, f: &FindingRow) -> Value {
    let compliance = !f.frameworks.is_empty();
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
    let time = f.closed_at.unwrap_or(doc.generated_at);
    let mut v = json!({
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": class_uid,
        "class_name": if compliance { "Compliance Finding" } else { "Detection Finding" },
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": status_id,
        "status": status,
        "time": time.0,
        "time_dt": time.to_rfc3339(),
        "message": f.title,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": format!("{}/{}", doc.report_id, f.finding_id),
            "product": {"name": "aispm", "vendor_name": "aispm", "version": env!("CARGO_PKG_VERSION")},
            "tenant_uid": doc.tenant_id,
            "logged_time": doc.generated_at.0,
        },
        "finding_info": {
            "uid": f.finding_id,
            "title": f.title,
            "desc": format!("{} on {} ({} occurrence(s))", f.rule_id, f.subject, f.occurrences),
            "types": [f.rule_id],
            "created_time": f.opened_at.0,
            "first_seen_time": f.opened_at.0,
            "modified_time": time.0,
            "related_events": f.event_ids.iter().map(|e| json!({"uid": e})).collect::<Vec<_>>(),
        },
        "resources": [{"uid": f.subject, "name": f.subject, "type": "ai_asset"}],
        "unmapped": {
            "owner": f.owner,
            "due_time": f.due_at.map(Timestamp::millis),
            "exception_uid": f.exception_id,
            "exception_expiration_time": f.exception_expires_at.map(Timestamp::millis),
            "resolution": f.resolution,
        },
    });
    if compliance {
        let (cstatus_id, cstatus) = match f.status {
            FindingStatus::Open => (3, "Fail"),
            FindingStatus::Closed => (1, "Pass"),
        };
        v["compliance"] = json!({
            "standards": f.frameworks,
            "requirements": f.frameworks,
            "control": f.rule_id,
            "status_id": cstatus_id,
            "status": cstatus,
        });
    }
    v
}

/// Every finding the document carries (open, closed in the period, blocking), deduplicated.
pub fn findings(doc: &Document, all: &[FindingRow]) -> Value {
    Value::Array(all.iter().map(|f| finding(doc, f)).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_ids() {
        let doc = crate::render::tests::doc();
        let mut f = crate::render::tests::finding();
        let v = finding(&doc, &f);
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["type_uid"], 200401);
        assert_eq!(v["severity_id"], 5);
        assert!(v.get("compliance").is_none());
        f.frameworks = vec!["SOC2:CC6.1".into()];
        f.status = FindingStatus::Closed;
        f.closed_at = Some(Timestamp(9));
        let v = finding(&doc, &f);
        assert_eq!(v["class_uid"], 2003);
        assert_eq!(v["type_uid"], 200303);
        assert_eq!(v["status"], "Resolved");
        assert_eq!(v["compliance"]["standards"][0], "SOC2:CC6.1");
        assert_eq!(v["compliance"]["status"], "Pass");
        assert_eq!(v["time"], 9);
    }
}
