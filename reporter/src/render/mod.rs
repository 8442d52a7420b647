//! Renders a report document into the files of a packet: `report.html` (for people),
//! `report.json` (for machines), `tables/*.csv` (for auditors) and `ocsf/findings.ocsf.json`.

pub mod csv;
pub mod html;
pub mod ocsf;
pub mod svg;

use crate::Result;
use crate::packet::PacketFile;
use crate::report::Document;
use aispm_schemas::{FindingRow, Timestamp, clock};
use html::ts;

fn t(x: Option<Timestamp>) -> String {
    x.map(Timestamp::to_rfc3339).unwrap_or_default()
}

fn o(x: Option<&str>) -> String {
    x.unwrap_or_default().to_owned()
}

/// An exception's or break-glass event's state when the packet was generated, with the
/// packet's review window.
pub fn exception_state(doc: &Document, e: &aispm_schemas::ExceptionRow) -> clock::ExceptionState {
    clock::exception_state(e, doc.windows.break_glass_review_window, doc.generated_at)
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
    let mut csv = |name: &str, bytes: Vec<u8>| {
        out.push(PacketFile::new(&format!("tables/{name}.csv"), bytes));
    };
    csv(
        "findings",
        csv::table(
            &[
                "finding_id",
                "rule_id",
                "title",
                "severity",
                "status",
                "subject",
                "owner",
                "due_at",
                "opened_at",
                "closed_at",
                "resolution",
                "frameworks",
                "exception_id",
                "exception_expires_at",
                "event_ids",
                "sla_state",
            ],
            findings.iter().map(|f| {
                vec![
                    f.finding_id.clone(),
                    f.rule_id.clone(),
                    f.title.clone(),
                    f.severity.to_string(),
                    f.status.to_string(),
                    f.subject.clone(),
                    o(f.owner.as_deref()),
                    t(f.due_at),
                    t(Some(f.opened_at)),
                    t(f.closed_at),
                    o(f.resolution.as_deref()),
                    f.frameworks.join(";"),
                    o(f.exception_id.as_deref()),
                    t(f.exception_expires_at),
                    f.event_ids.join(";"),
                    clock::row_sla(f, doc.generated_at).to_string(),
                ]
            }),
        ),
    );
    csv(
        "blocking_findings",
        csv::table(
            &[
                "finding_id",
                "title",
                "severity",
                "owner",
                "due_at",
                "overdue",
                "reasons",
                "event_ids",
            ],
            doc.blocking_findings.iter().map(|f| {
                vec![
                    f.finding_id.clone(),
                    f.title.clone(),
                    f.severity.to_string(),
                    o(f.owner.as_deref()),
                    t(f.due_at),
                    f.overdue.to_string(),
                    f.reasons.join(";"),
                    f.event_ids.join(";"),
                ]
            }),
        ),
    );
    csv(
        "accepted_risks",
        csv::table(
            &[
                "exception_id",
                "finding_id",
                "control_id",
                "owner",
                "reason",
                "granted_at",
                "expires_at",
                "days_to_expiry",
                "expired",
            ],
            doc.accepted_risks.iter().map(|r| {
                vec![
                    r.exception_id.clone(),
                    o(r.finding_id.as_deref()),
                    o(r.control_id.as_deref()),
                    o(r.owner.as_deref()),
                    o(r.reason.as_deref()),
                    t(Some(r.granted_at)),
                    t(r.expires_at),
                    r.days_to_expiry.map(|d| d.to_string()).unwrap_or_default(),
                    r.expired.to_string(),
                ]
            }),
        ),
    );
    csv(
        "blockers",
        csv::table(
            &[
                "stage",
                "ready",
                "blocker_id",
                "kind",
                "subject",
                "detected_at",
                "meaning",
                "resolution",
                "evidence",
            ],
            doc.readiness.iter().flat_map(|r| {
                r.blockers.iter().map(move |b| {
                    vec![
                        r.stage.to_string(),
                        r.ready.to_string(),
                        b.blocker_id.clone(),
                        b.kind.clone(),
                        o(b.subject.as_deref()),
                        t(Some(b.detected_at)),
                        b.meaning.clone(),
                        b.resolution.clone(),
                        b.evidence
                            .iter()
                            .map(|e| e.id.as_str())
                            .collect::<Vec<_>>()
                            .join(";"),
                    ]
                })
            }),
        ),
    );
    if let Some(m) = &doc.control_evidence {
        csv(
            "control_evidence_matrix",
            csv::table(
                &[
                    "control_id",
                    "state",
                    "frameworks",
                    "enforced_decisions",
                    "shadow_decisions",
                    "evidence_id",
                    "decision_id",
                    "sha256",
                    "signature_state",
                    "recorded_at",
                    "uri",
                ],
                m.iter().flat_map(|r| {
                    let head = vec![
                        r.control_id.clone(),
                        r.state.to_string(),
                        r.frameworks.join(";"),
                        r.enforced_decisions.to_string(),
                        r.shadow_decisions.to_string(),
                    ];
                    if r.evidence.is_empty() {
                        let mut row = head;
                        row.extend(std::iter::repeat_n(String::new(), 6));
                        vec![row]
                    } else {
                        r.evidence
                            .iter()
                            .map(|e| {
                                let mut row = head.clone();
                                row.extend([
                                    e.evidence_id.clone(),
                                    e.decision_id.clone(),
                                    e.sha256.clone(),
                                    e.signature_state.to_string(),
                                    t(Some(e.recorded_at)),
                                    e.uri.clone(),
                                ]);
                                row
                            })
                            .collect()
                    }
                }),
            ),
        );
    }
    if let Some(c) = &doc.controls {
        csv(
            "controls",
            csv::table(
                &[
                    "control_id",
                    "state",
                    "registered",
                    "enforced_decisions",
                    "shadow_decisions",
                    "high_risk_decisions",
                    "action_kinds",
                    "framework_mappings",
                    "last_decision_at",
                    "decision_ids",
                ],
                c.iter().map(|c| {
                    vec![
                        c.control_id.clone(),
                        c.state.to_string(),
                        c.registered.to_string(),
                        c.enforced_decisions.to_string(),
                        c.shadow_decisions.to_string(),
                        c.high_risk_decisions.to_string(),
                        c.action_kinds.join(";"),
                        c.framework_mappings.join(";"),
                        t(c.last_decision_at),
                        c.decision_ids.join(";"),
                    ]
                }),
            ),
        );
    }
    if let Some(e) = &doc.exceptions {
        csv(
            "exceptions",
            csv::table(
                &[
                    "exception_id",
                    "kind",
                    "finding_id",
                    "control_id",
                    "owner",
                    "reason",
                    "granted_at",
                    "expires_at",
                    "revoked",
                    "state",
                ],
                e.iter().map(|e| {
                    vec![
                        e.exception_id.clone(),
                        e.kind.to_string(),
                        o(e.finding_id.as_deref()),
                        o(e.control_id.as_deref()),
                        o(e.owner.as_deref()),
                        o(e.reason.as_deref()),
                        t(Some(e.granted_at)),
                        t(e.expires_at),
                        e.revoked.to_string(),
                        exception_state(doc, e).to_string(),
                    ]
                }),
            ),
        );
    }
    if let Some(b) = &doc.break_glass {
        csv(
            "break_glass",
            csv::table(
                &[
                    "exception_id",
                    "decision_id",
                    "actor",
                    "reason",
                    "invoked_at",
                    "reviewed_at",
                    "reviewed_by",
                    "state",
                ],
                b.iter().map(|e| {
                    vec![
                        e.exception_id.clone(),
                        o(e.decision_id.as_deref()),
                        o(e.actor.as_deref()),
                        o(e.reason.as_deref()),
                        t(Some(e.granted_at)),
                        t(e.reviewed_at),
                        o(e.reviewed_by.as_deref()),
                        exception_state(doc, e).to_string(),
                    ]
                }),
            ),
        );
    }
    if let Some(c) = &doc.coverage {
        csv(
            "coverage",
            csv::table(
                &[
                    "kind",
                    "id",
                    "registered",
                    "retired",
                    "shadow_ai",
                    "trust",
                    "owner",
                    "decisions",
                    "synthetic_decisions",
                    "first_seen",
                    "last_seen",
                ],
                c.iter().map(|c| {
                    vec![
                        c.kind.to_string(),
                        c.id.clone(),
                        c.registered.to_string(),
                        c.retired.to_string(),
                        c.shadow_ai.to_string(),
                        o(c.trust.as_deref()),
                        o(c.owner.as_deref()),
                        c.decisions.to_string(),
                        c.synthetic_decisions.to_string(),
                        t(c.first_seen),
                        t(c.last_seen),
                    ]
                }),
            ),
        );
    }
    if let Some(v) = &doc.validations {
        csv(
            "validations",
            csv::table(
                &[
                    "check_kind",
                    "subject",
                    "result",
                    "evidence_id",
                    "validated_at",
                    "event_id",
                    "detail",
                ],
                v.iter().map(|v| {
                    vec![
                        v.check_kind.clone(),
                        o(v.subject.as_deref()),
                        v.result.clone(),
                        o(v.evidence_id.as_deref()),
                        t(Some(v.validated_at)),
                        v.event_id.clone(),
                        o(v.detail.as_deref()),
                    ]
                }),
            ),
        );
    }
    if let Some(d) = &doc.deliveries {
        csv(
            "deliveries",
            csv::table(
                &[
                    "report_id",
                    "report_type",
                    "channel",
                    "outcome",
                    "recipients",
                    "approved_recipients",
                    "message_id",
                    "packet_sha256",
                    "attempt",
                    "delivered_at",
                    "evidence_id",
                    "error",
                ],
                d.iter().map(|d| {
                    vec![
                        d.report_id.clone(),
                        d.report_type.clone(),
                        d.channel.clone(),
                        d.outcome.clone(),
                        d.recipients.join(";"),
                        d.approved_recipients.to_string(),
                        o(d.message_id.as_deref()),
                        d.packet_sha256.clone(),
                        d.attempt.to_string(),
                        t(Some(d.delivered_at)),
                        o(d.evidence_id.as_deref()),
                        o(d.error.as_deref()),
                    ]
                }),
            ),
        );
    }
    if let Some(p) = &doc.action_paths {
        csv(
            "action_paths",
            csv::table(
                &[
                    "path",
                    "decisions",
                    "real_decisions",
                    "synthetic_decisions",
                    "synthetic_only",
                    "last_real_decision_id",
                ],
                p.iter().map(|p| {
                    vec![
                        p.path.clone(),
                        p.decisions.to_string(),
                        p.real_decisions.to_string(),
                        p.synthetic_decisions.to_string(),
                        p.synthetic_only.to_string(),
                        o(p.last_real_decision_id.as_deref()),
                    ]
                }),
            ),
        );
    }
    if let Some(tr) = &doc.trends {
        csv(
            "trends",
            csv::table(
                &[
                    "week_end",
                    "open_findings",
                    "open_critical",
                    "high_risk_closed",
                    "high_risk_closed_within_sla",
                    "within_sla_pct",
                    "mean_time_to_remediate_hours",
                    "governed_assets",
                    "active_exceptions",
                ],
                tr.iter().map(|p| {
                    vec![
                        ts(Some(p.week_end)),
                        p.open_findings.to_string(),
                        p.open_critical.to_string(),
                        p.high_risk_closed.to_string(),
                        p.high_risk_closed_within_sla.to_string(),
                        p.within_sla_pct.map(|x| x.to_string()).unwrap_or_default(),
                        p.mean_time_to_remediate_hours
                            .map(|x| x.to_string())
                            .unwrap_or_default(),
                        p.governed_assets.to_string(),
                        p.active_exceptions.to_string(),
                    ]
                }),
            ),
        );
    }
    Ok(out)
}

/// The findings a packet exports: every open finding, and those closed within the period.
pub fn exported_findings(t: &crate::state::TenantState, doc: &Document) -> Vec<FindingRow> {
    t.findings
        .values()
        .filter(|f| {
            f.status == aispm_schemas::FindingStatus::Open
                || f.closed_at.is_some_and(|c| c > doc.period_start)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::report::{Request, build};
    use crate::state::TenantState;
    use aispm_schemas::{FindingStatus, ReportType, Risk};

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
}
