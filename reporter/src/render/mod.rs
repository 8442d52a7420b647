//! Renders a report document into the files of a packet: `report.html` (for people),
//! `report.json` (for machines), `tables/*.csv` (for auditors) and `ocsf/findings.ocsf.json`.

pub mod csv;
pub mod html;
pub mod ocsf;
pub mod svg;
mod tables;

use crate::Result;
use crate::packet::PacketFile;
use crate::report::Document;
use aispm_schemas::{FindingRow, clock};

/// An exception's or break-glass event's state when the packet was generated, with the
/// packet's review window.
pub fn exception_state(doc: &Document, e: &aispm_schemas::ExceptionRow) -> clock::ExceptionState {
    clock::exception_state(e, doc.windows.break_glass_review_window, doc.instant())
}

/// Every file of the packet except the manifest and its signature. `findings` are the findings
/// exported in OCSF and `tables/findings.csv`.
pub fn files(doc: &Document, findings: &[FindingRow]) -> Result<Vec<PacketFile>> {
    let mut out = vec![
        PacketFile::new("report.html", html::render(doc).into_bytes()),
        PacketFile::new("report.json", serde_json::to_vec_pretty(doc)?),
        PacketFile::new(
            "ocsf/findings.ocsf.json",
            serde_json::to_vec_pretty(&ocsf::findings(doc, findings))?,
        ),
    ];
    out.extend(tables::files(doc, findings)?);
    Ok(out)
}

/// The findings a packet exports: every open finding, and those closed within the period,
/// highest risk first ([`FindingRow::by_rank`]).
pub fn exported_findings(t: &crate::state::TenantState, doc: &Document) -> Vec<FindingRow> {
    let mut v: Vec<FindingRow> = t
        .findings
        .values()
        .filter(|f| {
            f.status == aispm_schemas::FindingStatus::Open
                || f.closed_at.is_some_and(|c| c > doc.period_start)
        })
        .cloned()
        .collect();
    v.sort_by(FindingRow::by_rank);
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::report::{Request, build};
    use crate::state::TenantState;
    use aispm_schemas::{FindingStatus, ReportType, Risk, Timestamp};

    pub(crate) fn finding() -> FindingRow {
        FindingRow {
            asserted_by: None,
            finding_id: "unowned_critical:agent-7".into(),
            rule_id: "unowned_critical".into(),
            title: "Critical action by <script>".into(),
            severity: Risk::Critical,
            status: FindingStatus::Open,
            subject: "agent-7".into(),
            owner: None,
            due_at: None,
            opened_at: Timestamp(1_000),
            closed_at: None,
            resolution: None,
            frameworks: vec![],
            event_ids: vec!["d-1".into()],
            occurrences: 1,
            exception_id: None,
            exception_expires_at: None,
            first_occurrence_at: Timestamp(1_000),
            last_occurrence_at: Timestamp(1_000),
            environments: Vec::new(),
            risk: Default::default(),
        }
    }

    pub(crate) fn doc_of(t: &TenantState, ty: ReportType) -> Document {
        build(
            t,
            &Request {
                report_id: "r1".into(),
                tenant_id: "acme".into(),
                report_type: ty,
                generated_at: Timestamp(1_763_719_200_000),
                windows: clock::Windows::default(),
                signer_public_key: "PUB".into(),
                fallback_key_id: "aispm-reporter".into(),
                requested_by: "test".into(),
                as_of: None,
            },
        )
    }

    pub(crate) fn doc() -> Document {
        let mut t = TenantState::default();
        let f = finding();
        t.findings.insert(f.finding_id.clone(), f);
        doc_of(&t, ReportType::Cso)
    }

    #[test]
    fn every_type_renders_self_contained_html_and_its_tables() {
        let mut t = TenantState::default();
        let f = finding();
        t.findings.insert(f.finding_id.clone(), f);
        for &ty in ReportType::ALL {
            let doc = doc_of(&t, ty);
            let files = files(&doc, &exported_findings(&t, &doc)).unwrap();
            let html = String::from_utf8(files[0].bytes.clone()).unwrap();
            assert!(html.starts_with("<!DOCTYPE html>"), "{ty}");
            assert!(
                html.contains("<h2 id=\"report-path\">Report path checks</h2>"),
                "{ty}"
            );
            // Self-contained: nothing to fetch, nothing to run, user text escaped.
            for bad in ["http://", "https://", "<script", "src=", "<link", "url("] {
                assert!(!html.contains(bad), "{ty} contains {bad}");
            }
            assert!(html.contains("Critical action by &lt;script&gt;"), "{ty}");
            let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
            for n in [
                "report.json",
                "ocsf/findings.ocsf.json",
                "tables/findings.csv",
                "tables/blockers.csv",
            ] {
                assert!(names.contains(&n), "{ty} lacks {n}");
            }
            if ty == ReportType::Soc2Evidence {
                assert!(names.contains(&"tables/control_evidence_matrix.csv"));
            }
            let json: serde_json::Value = serde_json::from_slice(&files[1].bytes).unwrap();
            assert_eq!(json["report_type"], ty.as_str());
            assert_eq!(json["kpis"]["findings_open_critical"], 1);
        }
    }

    #[test]
    fn the_findings_table_has_its_columns_and_each_finding() {
        let mut t = TenantState::default();
        let f = finding();
        t.findings.insert(f.finding_id.clone(), f);
        let doc = doc_of(&t, ReportType::Cso);
        let files = files(&doc, &exported_findings(&t, &doc)).unwrap();
        let table = |name: &str| {
            let f = files.iter().find(|f| f.path == name).unwrap();
            String::from_utf8(f.bytes.clone()).unwrap()
        };
        let findings = table("tables/findings.csv");
        let mut lines = findings.split("\r\n");
        assert_eq!(
            lines.next().unwrap(),
            "finding_id,rule_id,title,severity,status,subject,owner,due_at,opened_at,closed_at,\
             resolution,frameworks,exception_id,exception_expires_at,event_ids,sla_state,\
             risk_score,risk_factors"
        );
        let row = lines.next().unwrap();
        assert!(
            row.starts_with(
                "unowned_critical:agent-7,unowned_critical,Critical action by <script>,critical,open,\
                 agent-7,,,1970-01-01T00:00:01.000Z,"
            ),
            "{row}"
        );
        // A table without rows keeps its header.
        assert_eq!(
            table("tables/accepted_risks.csv"),
            "exception_id,finding_id,control_id,owner,reason,granted_at,expires_at,days_to_expiry,expired\r\n"
        );
    }
}
