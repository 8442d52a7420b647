//! The HTML report a person reads in a browser: one self-contained file (inline CSS and SVG,
//! no scripts, no external assets; a Content-Security-Policy forbids fetching anything).

use super::svg;
use crate::report::checks::Status;
use crate::report::kind::fmt_pct;
use crate::report::{Document, StageReadiness, short};
use aispm_schemas::clock::{self, Sla};
use aispm_schemas::{ControlState, ReportType, Stage, Timestamp};
use std::fmt::Write;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A timestamp for tables: `2026-11-21 10:00 UTC`, or `—`.
pub fn ts(t: Option<Timestamp>) -> String {
    t.map_or_else(
        || "—".to_owned(),
        |t| {
            let s = t.to_rfc3339();
            format!(
                "{} {} UTC",
                s.get(..10).unwrap_or(&s),
                s.get(11..16).unwrap_or("")
            )
        },
    )
}

fn opt(s: Option<&str>) -> String {
    s.unwrap_or("—").to_owned()
}

fn num(x: Option<f64>, unit: &str) -> String {
    x.map_or_else(|| "n/a".to_owned(), |x| format!("{x}{unit}"))
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1b1f23;padding:0 1rem}\
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #0072b2;padding-bottom:.2rem;margin-top:2.2rem}\
.meta{color:#586069;font-size:.9rem}.headline{font-size:1.2rem;font-weight:600;background:#f1f8ff;padding:.8rem;border-left:4px solid #0072b2}\
table{border-collapse:collapse;width:100%;margin:.6rem 0;font-size:.88rem}th,td{border:1px solid #d1d5da;padding:.3rem .5rem;text-align:left;vertical-align:top}\
th{background:#f6f8fa}.kpis{display:flex;flex-wrap:wrap;gap:.8rem}.kpi{border:1px solid #d1d5da;border-radius:6px;padding:.6rem 1rem;min-width:150px}\
.kpi .v{font-size:1.6rem;font-weight:700}.kpi .l{color:#586069;font-size:.85rem}\
.pass{color:#22863a;font-weight:700}.warn{color:#b08800;font-weight:700}.fail{color:#cb2431;font-weight:700}\
.chart{display:block;margin:.6rem 0}.ct{font-size:13px;font-weight:700}.cl{font-size:11px;fill:#444}.cv{font-size:11px;fill:#111}\
code{background:#f6f8fa;padding:0 .2rem}.stage{border:1px solid #d1d5da;border-radius:6px;padding:.2rem 1rem;margin:.8rem 0}\
footer{margin-top:3rem;color:#586069;font-size:.8rem}";

struct Html {
    out: String,
}

impl Html {
    fn h2(&mut self, id: &str, title: &str) {
        let _ = write!(self.out, r#"<h2 id="{}">{}</h2>"#, esc(id), esc(title));
    }

    fn h3(&mut self, title: &str) {
        let _ = write!(self.out, "<h3>{}</h3>", esc(title));
    }

    fn p(&mut self, text: &str) {
        let _ = write!(self.out, "<p>{}</p>", esc(text));
    }

    fn raw(&mut self, html: &str) {
        self.out.push_str(html);
    }

    fn status(&mut self, label: &str, status: Status, statement: &str) {
        let _ = write!(
            self.out,
            r#"<p><span class="{s}" data-check="{l}">{S}</span> {t}</p>"#,
            s = status.as_str(),
            l = esc(label),
            S = status.as_str().to_uppercase(),
            t = esc(statement)
        );
    }

    fn table(&mut self, headers: &[&str], rows: Vec<Vec<String>>, empty: &str) {
        if rows.is_empty() {
            let _ = write!(self.out, r#"<p class="meta">{}</p>"#, esc(empty));
            return;
        }
        self.out.push_str("<table><thead><tr>");
        for h in headers {
            let _ = write!(self.out, "<th>{}</th>", esc(h));
        }
        self.out.push_str("</tr></thead><tbody>");
        for r in rows {
            self.out.push_str("<tr>");
            for c in r {
                let _ = write!(self.out, "<td>{}</td>", esc(&c));
            }
            self.out.push_str("</tr>");
        }
        self.out.push_str("</tbody></table>");
    }

    fn kpis(&mut self, tiles: &[(&str, &str, String)]) {
        self.out.push_str(r#"<div class="kpis">"#);
        for (key, label, value) in tiles {
            let _ = write!(
                self.out,
                r#"<div class="kpi"><div class="v" data-kpi="{k}">{v}</div><div class="l">{l}</div></div>"#,
                k = esc(key),
                v = esc(value),
                l = esc(label)
            );
        }
        self.out.push_str("</div>");
    }
}

/// Renders the document as one self-contained HTML page.
pub fn render(doc: &Document) -> String {
    let mut h = Html {
        out: String::with_capacity(64 * 1024),
    };
    let title = format!("{} — {}", doc.title, doc.tenant_id);
    let _ = write!(
        h.out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="generator" content="aispm-reporter"><title>{t}</title><style>{STYLE}</style></head><body>"#,
        t = esc(&title)
    );
    let _ = write!(
        h.out,
        r#"<header><h1>{}</h1><p class="meta">Tenant <b id="tenant">{}</b> · report <code id="report-id">{}</code> · generated {} · period from {} · requested by {}</p><p class="meta">For: {}</p><p class="headline" id="headline">{}</p></header>"#,
        esc(&doc.title),
        esc(&doc.tenant_id),
        esc(&doc.report_id),
        esc(&ts(Some(doc.generated_at))),
        esc(&ts(Some(doc.period_start))),
        esc(&doc.requested_by),
        esc(&doc.audience),
        esc(&doc.headline)
    );
    match doc.report_type {
        ReportType::Cso => cso(&mut h, doc),
        ReportType::Ciso => ciso(&mut h, doc),
        ReportType::BoardKpi => board(&mut h, doc),
        ReportType::Soc2Evidence => soc2(&mut h, doc),
        ReportType::IncidentClosure => incident(&mut h, doc),
        ReportType::TrialHandoff => trial(&mut h, doc),
        ReportType::PilotLaunch => pilot(&mut h, doc),
        ReportType::ProductionReadiness => production(&mut h, doc),
        ReportType::BlockersDigest => digest(&mut h, doc),
        ReportType::CoverageFindings => coverage_findings(&mut h, doc),
    }
    report_path(&mut h, doc);
    let _ = write!(
        h.out,
        "<footer>Packet {} for tenant {}. Every file of this packet is listed with its SHA-256 in manifest.json, signed with minisign (manifest.json.minisig) by the reporter's key {} (trust root key id {}). Check it against the reporter key you pinned, never a key that came with the packet: <code>minisign -Vm manifest.json -P &lt;pinned key&gt;</code> and the hashes, or <code>aispm-reporter verify &lt;packet&gt; --public-key &lt;pinned key&gt;</code>. Machine-readable: report.json; tables: tables/*.csv; findings in OCSF: ocsf/findings.ocsf.json.</footer></body></html>",
        esc(&doc.report_id),
        esc(&doc.tenant_id),
        esc(&doc.trust_roots.packet_key_fingerprint),
        esc(&doc.trust_roots.packet_key_id)
    );
    h.out
}

/// The report path, stated in every packet.
fn report_path(h: &mut Html, doc: &Document) {
    h.h2("report-path", "Report path checks");
    h.h3("Evidence freshness");
    h.status("freshness", doc.freshness.status, &doc.freshness.statement);
    h.h3("Trust roots");
    h.status(
        "trust_roots",
        doc.trust_roots.status,
        &doc.trust_roots.statement,
    );
    if !doc.trust_roots.failing_evidence_ids.is_empty() {
        h.p(&format!(
            "Evidence failing signature checks: {}",
            doc.trust_roots.failing_evidence_ids.join(", ")
        ));
    }
    h.h3("Blocking findings");
    h.table(
        &[
            "Finding",
            "Title",
            "Severity",
            "Owner",
            "Due",
            "Why it blocks",
        ],
        doc.blocking_findings
            .iter()
            .map(|f| {
                vec![
                    f.finding_id.clone(),
                    f.title.clone(),
                    f.severity.to_string(),
                    opt(f.owner.as_deref()),
                    ts(f.due_at),
                    f.reasons.join(", "),
                ]
            })
            .collect(),
        "No blocking findings.",
    );
    h.h3("Accepted risks");
    h.table(
        &[
            "Exception",
            "Finding",
            "Owner",
            "Reason",
            "Granted",
            "Expires",
            "Days to expiry",
        ],
        doc.accepted_risks
            .iter()
            .map(|r| {
                vec![
                    r.exception_id.clone(),
                    opt(r.finding_id.as_deref().or(r.control_id.as_deref())),
                    opt(r.owner.as_deref()),
                    opt(r.reason.as_deref()),
                    ts(Some(r.granted_at)),
                    ts(r.expires_at),
                    if r.expired {
                        "EXPIRED".to_owned()
                    } else {
                        num(r.days_to_expiry, "")
                    },
                ]
            })
            .collect(),
        "No accepted risks.",
    );
}

fn kpi_tiles(h: &mut Html, doc: &Document) {
    let k = &doc.kpis;
    h.kpis(&[
        (
            "coverage_pct",
            "Coverage (governed / seen)",
            fmt_pct(k.coverage_pct),
        ),
        (
            "findings_open_critical",
            "Open critical findings",
            k.findings_open_critical.to_string(),
        ),
        (
            "findings_open",
            "Open findings",
            k.findings_open.to_string(),
        ),
        (
            "high_risk_within_sla_pct",
            "High-risk closed within SLA",
            fmt_pct(k.high_risk_within_sla_pct),
        ),
        (
            "mean_time_to_remediate_hours",
            "Mean time to remediate",
            num(k.mean_time_to_remediate_hours, " h"),
        ),
        ("enforced_pct", "Controls enforced", fmt_pct(k.enforced_pct)),
        (
            "exceptions_active",
            "Active exceptions",
            k.exceptions_active.to_string(),
        ),
        (
            "exception_mean_age_days",
            "Exception mean age",
            num(k.exception_mean_age_days, " d"),
        ),
        (
            "findings_overdue",
            "High-risk overdue",
            k.findings_overdue.to_string(),
        ),
        ("shadow_ai", "Shadow AI agents", k.shadow_ai.to_string()),
    ]);
}

fn layers(h: &mut Html, doc: &Document) {
    let Some(layers) = &doc.layers else { return };
    h.h2("layers", "Posture by layer");
    h.raw(&svg::bars(
        "Layer scores (0–100)",
        &layers
            .iter()
            .map(|l| (l.layer.to_owned(), l.score.unwrap_or(0.0)))
            .collect::<Vec<_>>(),
        Some(100.0),
        "",
    ));
    h.table(
        &[
            "Layer",
            "Question",
            "Score",
            "Healthy",
            "Statement",
            "Drill down",
        ],
        layers
            .iter()
            .map(|l| {
                vec![
                    l.layer.to_owned(),
                    l.question.to_owned(),
                    num(l.score, ""),
                    if l.healthy { "yes" } else { "no" }.to_owned(),
                    l.statement.clone(),
                    l.drill_down.join(", "),
                ]
            })
            .collect(),
        "",
    );
}

fn stage_summary(h: &mut Html, doc: &Document) {
    h.h2("readiness", "Readiness by stage");
    h.table(
        &["Stage", "Verdict", "Blockers", "Evaluated"],
        doc.readiness
            .iter()
            .map(|r| {
                vec![
                    r.stage.to_string(),
                    format!("{} = {}", r.key, r.ready),
                    r.blockers.len().to_string(),
                    ts(r.evaluated_at),
                ]
            })
            .collect(),
        "",
    );
}

fn stage_detail(h: &mut Html, r: &StageReadiness) {
    let _ = write!(
        h.out,
        r#"<div class="stage" id="stage-{s}"><h3>{S}: <span class="{c}">{k} = {v}</span></h3>"#,
        s = r.stage,
        S = esc(&capitalise(r.stage.as_str())),
        c = if r.ready { "pass" } else { "fail" },
        k = esc(&r.key),
        v = r.ready
    );
    if !r.evaluated {
        h.p("The gatekeeper has not published a verdict for this stage yet.");
    }
    for b in &r.blockers {
        let _ = write!(
            h.out,
            r#"<h4>{} <code>{}</code></h4>"#,
            esc(&b.kind),
            esc(&b.blocker_id)
        );
        h.p(&format!("Meaning: {}", b.meaning));
        h.p(&format!("Resolution: {}", b.resolution));
        if let Some(s) = &b.subject {
            h.p(&format!(
                "Subject: {s} · detected {}",
                ts(Some(b.detected_at))
            ));
        }
        h.table(
            &["Evidence", "Kind", "Detail"],
            b.evidence
                .iter()
                .map(|e| vec![e.id.clone(), e.kind.to_owned(), e.detail.clone()])
                .collect(),
            "No evidence ids attached.",
        );
    }
    if r.blockers.is_empty() && r.evaluated {
        h.p("No blockers.");
    }
    h.raw("</div>");
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn findings_table(
    h: &mut Html,
    findings: &[aispm_schemas::FindingRow],
    now: Timestamp,
    empty: &str,
) {
    h.table(
        &[
            "Finding",
            "Title",
            "Severity",
            "Status",
            "Owner",
            "Due",
            "SLA",
            "Frameworks",
            "Events",
        ],
        findings
            .iter()
            .map(|f| {
                let sla = match clock::row_sla(f, now) {
                    Sla::OnTrack if f.due_at.is_none() => "no due date",
                    Sla::OnTrack => "within",
                    Sla::Overdue => "overdue",
                    Sla::RiskAccepted => "past due, risk accepted",
                    Sla::PastDue => "past due",
                    Sla::ClosedWithinSla => "met",
                    Sla::ClosedLate => "missed",
                };
                vec![
                    f.finding_id.clone(),
                    f.title.clone(),
                    f.severity.to_string(),
                    f.status.to_string(),
                    opt(f.owner.as_deref()),
                    ts(f.due_at),
                    sla.to_owned(),
                    f.frameworks.join(", "),
                    f.event_ids.join(", "),
                ]
            })
            .collect(),
        empty,
    );
}

fn controls(h: &mut Html, doc: &Document, heading: &str) {
    let Some(controls) = &doc.controls else {
        return;
    };
    h.h2("controls", heading);
    let k = &doc.kpis;
    h.raw(&svg::bars(
        "Controls by state",
        &[
            ("enforced".to_owned(), k.controls_enforced as f64),
            ("shadowed".to_owned(), k.controls_shadowed as f64),
            ("missing".to_owned(), k.controls_missing as f64),
            ("blocked".to_owned(), k.controls_blocked as f64),
        ],
        None,
        "",
    ));
    let mut rows: Vec<_> = controls.iter().collect();
    rows.sort_by_key(|c| (c.state == ControlState::Enforced, c.control_id.clone()));
    h.table(
        &[
            "Control",
            "State",
            "Enforced",
            "Shadow",
            "High-risk",
            "Action kinds",
            "Frameworks",
            "Last decision",
        ],
        rows.iter()
            .map(|c| {
                vec![
                    c.control_id.clone(),
                    c.state.to_string(),
                    c.enforced_decisions.to_string(),
                    c.shadow_decisions.to_string(),
                    c.high_risk_decisions.to_string(),
                    c.action_kinds.join(", "),
                    c.framework_mappings.join(", "),
                    ts(c.last_decision_at),
                ]
            })
            .collect(),
        "No controls recorded.",
    );
}

fn exceptions(h: &mut Html, doc: &Document, heading: &str) {
    let Some(ex) = &doc.exceptions else { return };
    h.h2("exceptions", heading);
    let now = doc.generated_at;
    h.table(
        &[
            "Exception",
            "Finding / control",
            "Owner",
            "Reason",
            "Granted",
            "Expires",
            "Age (days)",
            "State",
        ],
        ex.iter()
            .map(|e| {
                let state = super::exception_state(doc, e).as_str();
                vec![
                    e.exception_id.clone(),
                    opt(e.finding_id.as_deref().or(e.control_id.as_deref())),
                    opt(e.owner.as_deref()),
                    opt(e.reason.as_deref()),
                    ts(Some(e.granted_at)),
                    ts(e.expires_at),
                    format!("{:.1}", (now.0 - e.granted_at.0) as f64 / 86_400_000.0),
                    state.to_owned(),
                ]
            })
            .collect(),
        "No exceptions.",
    );
}

fn break_glass(h: &mut Html, doc: &Document) {
    let Some(bg) = &doc.break_glass else { return };
    h.h2("break-glass", "Break-glass events");
    h.table(
        &[
            "Event",
            "Decision",
            "Actor",
            "Reason",
            "Invoked",
            "Reviewed",
            "Reviewed by",
            "Hours to review",
            "State",
        ],
        bg.iter()
            .map(|e| {
                vec![
                    e.exception_id.clone(),
                    opt(e.decision_id.as_deref()),
                    opt(e.actor.as_deref()),
                    opt(e.reason.as_deref()),
                    ts(Some(e.granted_at)),
                    e.reviewed_at
                        .map_or_else(|| "UNREVIEWED".to_owned(), |r| ts(Some(r))),
                    opt(e.reviewed_by.as_deref()),
                    e.reviewed_at.map_or_else(
                        || "—".to_owned(),
                        |r| format!("{:.1}", (r.0 - e.granted_at.0) as f64 / 3.6e6),
                    ),
                    super::exception_state(doc, e).as_str().to_owned(),
                ]
            })
            .collect(),
        "No break-glass events.",
    );
}

fn validations(h: &mut Html, doc: &Document, heading: &str) {
    let Some(v) = &doc.validations else { return };
    h.h2("validations", heading);
    h.table(
        &[
            "Check",
            "Subject",
            "Result",
            "Evidence",
            "Validated",
            "Detail",
        ],
        v.iter()
            .map(|v| {
                vec![
                    v.check_kind.clone(),
                    opt(v.subject.as_deref()),
                    v.result.clone(),
                    opt(v.evidence_id.as_deref()),
                    ts(Some(v.validated_at)),
                    opt(v.detail.as_deref()),
                ]
            })
            .collect(),
        "No validations recorded.",
    );
}

fn deliveries(h: &mut Html, doc: &Document, heading: &str) {
    let Some(d) = &doc.deliveries else { return };
    h.h2("deliveries", heading);
    h.table(
        &[
            "Report",
            "Type",
            "Channel",
            "Outcome",
            "Recipients",
            "Approved",
            "Message id",
            "Packet sha256",
            "Attempt",
            "At",
        ],
        d.iter()
            .map(|d| {
                vec![
                    d.report_id.clone(),
                    d.report_type.clone(),
                    d.channel.clone(),
                    d.outcome.clone(),
                    d.recipients.join(", "),
                    d.approved_recipients.to_string(),
                    opt(d.message_id.as_deref()),
                    short(&d.packet_sha256).to_owned(),
                    d.attempt.to_string(),
                    ts(Some(d.delivered_at)),
                ]
            })
            .collect(),
        "No report deliveries recorded.",
    );
}

fn action_paths(h: &mut Html, doc: &Document, heading: &str) {
    let Some(paths) = &doc.action_paths else {
        return;
    };
    h.h2("action-paths", heading);
    h.raw(&svg::stacked(
        "Decisions per action path",
        &["real", "synthetic"],
        &paths
            .iter()
            .map(|p| {
                (
                    p.path.clone(),
                    vec![p.real_decisions as f64, p.synthetic_decisions as f64],
                )
            })
            .collect::<Vec<_>>(),
    ));
    h.table(
        &[
            "Path",
            "Decisions",
            "Real",
            "Synthetic",
            "Synthetic only",
            "Last real decision",
        ],
        paths
            .iter()
            .map(|p| {
                vec![
                    p.path.clone(),
                    p.decisions.to_string(),
                    p.real_decisions.to_string(),
                    p.synthetic_decisions.to_string(),
                    if p.synthetic_only { "YES" } else { "no" }.to_owned(),
                    opt(p.last_real_decision_id.as_deref()),
                ]
            })
            .collect(),
        "No action paths seen.",
    );
}

fn coverage(h: &mut Html, doc: &Document, heading: &str, empty: &str) {
    let Some(rows) = &doc.coverage else { return };
    h.h2("coverage", heading);
    h.table(
        &[
            "Kind",
            "Id",
            "Registered",
            "Shadow AI",
            "Trust",
            "Owner",
            "Decisions",
            "Synthetic",
            "Last seen",
        ],
        rows.iter()
            .map(|c| {
                vec![
                    c.kind.to_string(),
                    c.id.clone(),
                    c.registered.to_string(),
                    c.shadow_ai.to_string(),
                    opt(c.trust.as_deref()),
                    opt(c.owner.as_deref()),
                    c.decisions.to_string(),
                    c.synthetic_decisions.to_string(),
                    ts(c.last_seen),
                ]
            })
            .collect(),
        empty,
    );
}

fn trend_charts(h: &mut Html, doc: &Document, heading: &str) {
    let Some(tr) = &doc.trends else { return };
    h.h2("trends", heading);
    let labels: Vec<String> = tr
        .iter()
        .map(|p| ts(Some(p.week_end)).get(5..10).unwrap_or("").to_owned())
        .collect();
    h.raw(&svg::lines(
        "Open findings at week end",
        &labels,
        &[
            (
                "open",
                tr.iter().map(|p| Some(p.open_findings as f64)).collect(),
            ),
            (
                "critical",
                tr.iter().map(|p| Some(p.open_critical as f64)).collect(),
            ),
        ],
    ));
    h.raw(&svg::lines(
        "High-risk findings closed within SLA (%)",
        &labels,
        &[("within SLA", tr.iter().map(|p| p.within_sla_pct).collect())],
    ));
    h.raw(&svg::lines(
        "Governed assets and active exceptions",
        &labels,
        &[
            (
                "governed assets",
                tr.iter().map(|p| Some(p.governed_assets as f64)).collect(),
            ),
            (
                "active exceptions",
                tr.iter()
                    .map(|p| Some(p.active_exceptions as f64))
                    .collect(),
            ),
        ],
    ));
    h.table(
        &[
            "Week ending",
            "Open",
            "Open critical",
            "High-risk closed",
            "Within SLA",
            "MTTR",
            "Governed assets",
            "Active exceptions",
        ],
        tr.iter()
            .map(|p| {
                vec![
                    ts(Some(p.week_end)),
                    p.open_findings.to_string(),
                    p.open_critical.to_string(),
                    p.high_risk_closed.to_string(),
                    fmt_pct(p.within_sla_pct),
                    num(p.mean_time_to_remediate_hours, " h"),
                    p.governed_assets.to_string(),
                    p.active_exceptions.to_string(),
                ]
            })
            .collect(),
        "",
    );
}

fn cso(h: &mut Html, doc: &Document) {
    h.h2("glance", "Posture at a glance");
    kpi_tiles(h, doc);
    layers(h, doc);
    stage_summary(h, doc);
}

fn ciso(h: &mut Html, doc: &Document) {
    let now = doc.generated_at;
    h.h2("figures", "Key figures");
    kpi_tiles(h, doc);
    layers(h, doc);
    controls(h, doc, "Control state");
    h.h2("findings-sla", "Findings by severity and SLA");
    let k = &doc.kpis;
    h.raw(&svg::bars(
        "Open findings by severity",
        &[
            ("critical".to_owned(), k.findings_open_critical as f64),
            ("high".to_owned(), k.findings_open_high as f64),
            ("medium".to_owned(), k.findings_open_medium as f64),
            ("low".to_owned(), k.findings_open_low as f64),
        ],
        None,
        "",
    ));
    if let Some(f) = &doc.findings {
        h.h2("open-findings", "Open findings");
        findings_table(h, f, now, "No open findings.");
    }
    if let Some(o) = &doc.owners {
        h.h2("owners", "Owners");
        h.table(
            &["Owner", "Open", "Critical", "Overdue"],
            o.iter()
                .map(|o| {
                    vec![
                        o.owner.clone(),
                        o.open.to_string(),
                        o.critical.to_string(),
                        o.overdue.to_string(),
                    ]
                })
                .collect(),
            "No open findings.",
        );
    }
    exceptions(h, doc, "Exceptions and aging");
    break_glass(h, doc);
    coverage(
        h,
        doc,
        "Shadow AI and risky tools",
        "No shadow AI agents or risky tools.",
    );
}

fn board(h: &mut Html, doc: &Document) {
    h.h2("kpis", "Key performance indicators");
    let k = &doc.kpis;
    h.kpis(&[
        (
            "coverage_pct",
            "Coverage (governed / seen)",
            fmt_pct(k.coverage_pct),
        ),
        (
            "findings_open_critical",
            "Open critical findings",
            k.findings_open_critical.to_string(),
        ),
        (
            "high_risk_within_sla_pct",
            "High-risk findings closed within SLA",
            fmt_pct(k.high_risk_within_sla_pct),
        ),
        (
            "mean_time_to_remediate_hours",
            "Mean time to remediate",
            num(k.mean_time_to_remediate_hours, " h"),
        ),
        (
            "exception_mean_age_days",
            "Exception aging (mean age)",
            num(k.exception_mean_age_days, " d"),
        ),
        (
            "exceptions_expired",
            "Expired exceptions",
            k.exceptions_expired.to_string(),
        ),
    ]);
    trend_charts(h, doc, "Trends (8 weeks)");
    stage_summary(h, doc);
}

fn soc2(h: &mut Html, doc: &Document) {
    h.h2("matrix", "Control-to-evidence matrix");
    if let Some(m) = &doc.control_evidence {
        h.raw(&svg::stacked(
            "Evidence per control",
            &["verified", "not verified"],
            &m.iter()
                .map(|r| {
                    (
                        r.control_id.clone(),
                        vec![r.verified as f64, r.unverified as f64],
                    )
                })
                .collect::<Vec<_>>(),
        ));
        h.table(
            &[
                "Control",
                "State",
                "Frameworks",
                "Enforced",
                "Shadow",
                "Evidence",
                "Verified",
                "Not verified",
            ],
            m.iter()
                .map(|r| {
                    vec![
                        r.control_id.clone(),
                        r.state.to_string(),
                        r.frameworks.join(", "),
                        r.enforced_decisions.to_string(),
                        r.shadow_decisions.to_string(),
                        r.evidence.len().to_string(),
                        r.verified.to_string(),
                        r.unverified.to_string(),
                    ]
                })
                .collect(),
            "No controls recorded.",
        );
    }
    if let Some(c) = &doc.criteria {
        h.h2("criteria", "Framework criteria");
        h.table(
            &["Criterion", "Controls", "Enforced", "Evidence"],
            c.iter()
                .map(|c| {
                    vec![
                        c.framework.clone(),
                        c.controls.join(", "),
                        c.enforced.to_string(),
                        c.evidence.to_string(),
                    ]
                })
                .collect(),
            "No framework mappings recorded.",
        );
    }
    if let Some(m) = &doc.control_evidence {
        h.h2("evidence-by-control", "Evidence by control");
        for r in m {
            h.h3(&format!("{} ({})", r.control_id, r.state));
            h.table(
                &[
                    "Evidence",
                    "Decision",
                    "SHA-256",
                    "Signature",
                    "Recorded",
                    "Location",
                ],
                r.evidence
                    .iter()
                    .map(|e| {
                        vec![
                            e.evidence_id.clone(),
                            e.decision_id.clone(),
                            e.sha256.clone(),
                            e.signature_state.to_string(),
                            ts(Some(e.recorded_at)),
                            e.uri.clone(),
                        ]
                    })
                    .collect(),
                "No evidence recorded for this control's decisions.",
            );
        }
    }
    exceptions(h, doc, "Exceptions");
    validations(h, doc, "Validations");
    deliveries(h, doc, "Report deliveries");
}

fn incident(h: &mut Html, doc: &Document) {
    let now = doc.generated_at;
    break_glass(h, doc);
    if let Some(c) = &doc.closed_findings {
        h.h2("closed", "Findings closed in the period");
        h.table(
            &[
                "Finding",
                "Title",
                "Severity",
                "Owner",
                "Opened",
                "Closed",
                "Hours to close",
                "Resolution",
            ],
            c.iter()
                .map(|f| {
                    vec![
                        f.finding_id.clone(),
                        f.title.clone(),
                        f.severity.to_string(),
                        opt(f.owner.as_deref()),
                        ts(Some(f.opened_at)),
                        ts(f.closed_at),
                        f.closed_at.map_or_else(
                            || "—".to_owned(),
                            |c| format!("{:.1}", (c.0 - f.opened_at.0) as f64 / 3.6e6),
                        ),
                        opt(f.resolution.as_deref()),
                    ]
                })
                .collect(),
            "No findings closed in the period.",
        );
    }
    if let Some(f) = &doc.findings {
        h.h2("still-open", "High-risk findings still open");
        findings_table(h, f, now, "No high-risk findings open.");
    }
    exceptions(h, doc, "Revoked and expired exceptions");
    if let Some(tr) = &doc.trends {
        h.h2("closures", "Closures by week");
        h.raw(&svg::bars(
            "High-risk findings closed per week",
            &tr.iter()
                .map(|p| {
                    (
                        ts(Some(p.week_end)).get(..10).unwrap_or("").to_owned(),
                        p.high_risk_closed as f64,
                    )
                })
                .collect::<Vec<_>>(),
            None,
            "",
        ));
    }
}

fn trial(h: &mut Html, doc: &Document) {
    h.h2("verdict", "Trial verdict");
    if let Some(r) = doc.stage(Stage::Trial) {
        stage_detail(h, r);
    }
    action_paths(h, doc, "Action paths: real versus synthetic");
    validations(h, doc, "Validations");
    coverage(h, doc, "Assets seen", "No assets seen yet.");
    h.h2("next-steps", "Next steps");
    let mut steps: Vec<Vec<String>> = vec![];
    for stage in [Stage::Trial, Stage::Pilot] {
        if let Some(r) = doc.stage(stage) {
            for b in &r.blockers {
                steps.push(vec![
                    stage.to_string(),
                    b.kind.clone(),
                    b.resolution.clone(),
                ]);
            }
        }
    }
    h.table(
        &["Stage", "Blocker", "Do this"],
        steps,
        "No blockers stand before the pilot.",
    );
}

fn pilot(h: &mut Html, doc: &Document) {
    h.h2("go-no-go", "Pilot go/no-go");
    if let Some(r) = doc.stage(Stage::Pilot) {
        stage_detail(h, r);
    }
    coverage(h, doc, "Pilot scope", "No registered assets.");
    controls(h, doc, "Control readiness");
    action_paths(h, doc, "Action paths");
    h.h2("figures", "Key figures");
    kpi_tiles(h, doc);
    exceptions(h, doc, "Exceptions");
}

fn production(h: &mut Html, doc: &Document) {
    h.h2("verdict", "Verdict");
    let prod = doc.stage(Stage::Production);
    let ready = prod.is_some_and(|r| r.ready);
    let _ = write!(
        h.out,
        r#"<p class="{}" id="verdict">ready_for_aispm_production: {}</p>"#,
        if ready { "pass" } else { "fail" },
        ready
    );
    h.h2("stages", "Readiness by stage");
    for r in &doc.readiness {
        stage_detail(h, r);
    }
    validations(h, doc, "Validations");
    action_paths(h, doc, "Action paths");
    controls(h, doc, "Controls");
    deliveries(h, doc, "Report deliveries");
}

fn digest(h: &mut Html, doc: &Document) {
    let now = doc.generated_at;
    if let Some(new) = &doc.new_blockers {
        h.h2("new-blockers", "New blockers (last 24 h)");
        h.table(
            &[
                "Blocker",
                "Kind",
                "Subject",
                "Detected",
                "Resolution",
                "Evidence",
            ],
            new.iter()
                .map(|b| {
                    vec![
                        b.blocker_id.clone(),
                        b.kind.clone(),
                        opt(b.subject.as_deref()),
                        ts(Some(b.detected_at)),
                        b.resolution.clone(),
                        b.evidence
                            .iter()
                            .map(|e| e.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ]
                })
                .collect(),
            "No new blockers.",
        );
    }
    h.h2("open-blockers", "Open blockers by stage");
    h.raw(&svg::bars(
        "Open blockers per stage",
        &doc.readiness
            .iter()
            .map(|r| (r.stage.to_string(), r.blockers.len() as f64))
            .collect::<Vec<_>>(),
        None,
        "",
    ));
    stage_summary(h, doc);
    validations(h, doc, "Failed validations and connectors");
    if let Some(f) = &doc.findings {
        h.h2("critical", "Open critical findings");
        findings_table(h, f, now, "No open critical findings.");
    }
}

fn coverage_findings(h: &mut Html, doc: &Document) {
    let now = doc.generated_at;
    h.h2("figures", "Key figures");
    kpi_tiles(h, doc);
    coverage(h, doc, "Coverage", "No assets seen.");
    controls(h, doc, "Control state");
    if let Some(f) = &doc.findings {
        h.h2("open-findings", "Open findings");
        findings_table(h, f, now, "No open findings.");
    }
    deliveries(h, doc, "Report readiness");
    trend_charts(h, doc, "Trends (4 weeks)");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_timestamps() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(
            ts(Some(Timestamp(1_763_719_200_123))),
            "2025-11-21 10:00 UTC"
        );
        assert_eq!(ts(None), "—");
    }
}
