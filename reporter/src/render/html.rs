//! The HTML report a person reads in a browser: one self-contained file (inline CSS and SVG,
//! no scripts, no external assets; a Content-Security-Policy forbids fetching anything).
//!
//! Written as maud templates, like the console's pages: every interpolated value is
//! HTML-escaped by the template engine, so no text reaches the page unescaped and there is
//! no hand-written escaping to get wrong.

use super::svg;
use crate::report::checks::Status;
use crate::report::kind::fmt_pct;
use crate::report::monthly::DecisionBound;
use crate::report::{Document, StageReadiness, short};
use aispm_schemas::clock::{self, Sla};
use aispm_schemas::{ControlState, ReportType, Stage, Timestamp};
use maud::{DOCTYPE, Markup, PreEscaped, html};

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

/// The stylesheet, inlined (the CSP allows inline style and nothing else). A constant of
/// this file, never data: it goes into `<style>` as it is, where HTML escaping would not
/// apply anyway.
const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1b1f23;padding:0 1rem}\
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #0072b2;padding-bottom:.2rem;margin-top:2.2rem}\
.meta{color:#586069;font-size:.9rem}.headline{font-size:1.2rem;font-weight:600;background:#f1f8ff;padding:.8rem;border-left:4px solid #0072b2}\
.as-of{background:#fff8c5;border-left:4px solid #9a6700;padding:.6rem .8rem}\
table{border-collapse:collapse;width:100%;margin:.6rem 0;font-size:.88rem}th,td{border:1px solid #d1d5da;padding:.3rem .5rem;text-align:left;vertical-align:top}\
th{background:#f6f8fa}.kpis{display:flex;flex-wrap:wrap;gap:.8rem}.kpi{border:1px solid #d1d5da;border-radius:6px;padding:.6rem 1rem;min-width:150px}\
.kpi .v{font-size:1.6rem;font-weight:700}.kpi .l{color:#586069;font-size:.85rem}\
.pass{color:#22863a;font-weight:700}.warn{color:#b08800;font-weight:700}.fail{color:#cb2431;font-weight:700}\
.chart{display:block;margin:.6rem 0}.ct{font-size:13px;font-weight:700}.cl{font-size:11px;fill:#444}.cv{font-size:11px;fill:#111}\
code{background:#f6f8fa;padding:0 .2rem}.stage{border:1px solid #d1d5da;border-radius:6px;padding:.2rem 1rem;margin:.8rem 0}\
footer{margin-top:3rem;color:#586069;font-size:.8rem}";

/// The Content-Security-Policy of the page: inline style, nothing else (no scripts, no
/// images, no fetches).
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// One check of the report path: PASS, WARN or FAIL and its statement.
fn status(label: &str, status: Status, statement: &str) -> Markup {
    html! {
        p {
            span class=(status.as_str()) data-check=(label) { (status.as_str().to_uppercase()) }
            " " (statement)
        }
    }
}

/// A table, or the `empty` line when there are no rows.
fn table(headers: &[&str], rows: Vec<Vec<String>>, empty: &str) -> Markup {
    html! {
        @if rows.is_empty() {
            p class="meta" { (empty) }
        } @else {
            table {
                thead { tr { @for h in headers { th { (h) } } } }
                tbody {
                    @for r in &rows {
                        tr { @for c in r { td { (c) } } }
                    }
                }
            }
        }
    }
}

/// KPI tiles: `(key, label, value)`; the key marks the value (`data-kpi`) for readers and tests.
fn kpis(tiles: &[(&str, &str, String)]) -> Markup {
    html! {
        div class="kpis" {
            @for (key, label, value) in tiles {
                div class="kpi" {
                    div class="v" data-kpi=(key) { (value) }
                    div class="l" { (label) }
                }
            }
        }
    }
}

/// Renders the document as one self-contained HTML page.
pub fn render(doc: &Document) -> String {
    page(doc).into_string()
}

fn page(doc: &Document) -> Markup {
    let body = match doc.report_type {
        ReportType::Cso => cso(doc),
        ReportType::Ciso => ciso(doc),
        ReportType::BoardKpi => board(doc),
        ReportType::Soc2Evidence => soc2(doc),
        ReportType::IncidentClosure => incident(doc),
        ReportType::TrialHandoff => trial(doc),
        ReportType::PilotLaunch => pilot(doc),
        ReportType::ProductionReadiness => production(doc),
        ReportType::BlockersDigest => digest(doc),
        ReportType::CoverageFindings => coverage_findings(doc),
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(CSP);
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="generator" content="aispm-reporter";
                title { (doc.title) " — " (doc.tenant_id) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { (doc.title) }
                    p class="meta" {
                        "Tenant " b id="tenant" { (doc.tenant_id) }
                        " · report " code id="report-id" { (doc.report_id) }
                        " · generated " (ts(Some(doc.generated_at)))
                        " · period from " (ts(Some(doc.period_start)))
                        " · requested by " (doc.requested_by)
                    }
                    p class="meta" { "For: " (doc.audience) }
                    @if let Some(a) = &doc.as_of {
                        p class="as-of" id="as-of" {
                            "As of " b { (ts(Some(a.at))) } ": the posture, findings and readiness                              as they stood then, from the " (a.events) " events that occurred by                              then (replayed " (ts(Some(a.replayed_at))) "); " (a.after)
                            " occurred after and are left out"
                            @if a.late > 0 {
                                "; " (a.late) " of those included reached aispm after that                                  instant (event time decides)"
                            }
                            @if a.arrival_unknown > 0 {
                                "; " (a.arrival_unknown) " were kept before arrival times were"
                            }
                            "."
                        }
                    }
                    p class="headline" id="headline" { (doc.headline) }
                }
                (body)
                (report_path(doc))
                footer {
                    "Packet " (doc.report_id) " for tenant " (doc.tenant_id)
                    ". Every file of this packet is listed with its SHA-256 in manifest.json, \
                     signed with minisign (manifest.json.minisig) by the reporter's key "
                    (doc.trust_roots.packet_key_fingerprint)
                    " (trust root key id " (doc.trust_roots.packet_key_id) "). Check it against \
                     the reporter key you pinned, never a key that came with the packet: "
                    code { "minisign -Vm manifest.json -P <pinned key>" }
                    " and the hashes, or "
                    code { "aispm-reporter verify <packet> --public-key <pinned key>" }
                    ". Machine-readable: report.json; tables: tables/*.csv; findings in OCSF: \
                     ocsf/findings.ocsf.json."
                }
            }
        }
    }
}

/// A risk score with the factors that add to it: `62 (severity high +25, environment
/// production +10, …)`.
fn risk_cell(r: &aispm_schemas::RiskScore) -> String {
    match r.explain() {
        why if why.is_empty() => r.score.to_string(),
        why => format!("{} ({why})", r.score),
    }
}

/// The report path, stated in every packet.
fn report_path(doc: &Document) -> Markup {
    let blocking = table(
        &[
            "Risk",
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
                    f.risk_score.to_string(),
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
    let accepted = table(
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
    let tr = &doc.trust_roots;
    html! {
        h2 id="report-path" { "Report path checks" }
        h3 { "Evidence freshness" }
        (status("freshness", doc.freshness.status, &doc.freshness.statement))
        h3 { "Trust roots" }
        (status("trust_roots", tr.status, &tr.statement))
        @if !tr.failing_evidence_ids.is_empty() {
            p { "Evidence failing signature checks: " (tr.failing_evidence_ids.join(", ")) }
        }
        h3 { "Blocking findings" }
        (blocking)
        h3 { "Accepted risks" }
        (accepted)
    }
}

fn kpi_tiles(doc: &Document) -> Markup {
    let k = &doc.kpis;
    kpis(&[
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
    ])
}

fn layers(doc: &Document) -> Markup {
    let Some(layers) = &doc.layers else {
        return html! {};
    };
    let chart = svg::bars(
        "Layer scores (0–100)",
        &layers
            .iter()
            .map(|l| (l.layer.to_owned(), l.score.unwrap_or(0.0)))
            .collect::<Vec<_>>(),
        Some(100.0),
        "",
    );
    let rows = table(
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
    html! {
        h2 id="layers" { "Posture by layer" }
        (chart)
        (rows)
    }
}

fn stage_summary(doc: &Document) -> Markup {
    let rows = table(
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
    html! {
        h2 id="readiness" { "Readiness by stage" }
        (rows)
    }
}

fn stage_detail(r: &StageReadiness) -> Markup {
    html! {
        div class="stage" id={ "stage-" (r.stage) } {
            h3 {
                (capitalise(r.stage.as_str())) ": "
                span class=(if r.ready { "pass" } else { "fail" }) { (r.key) " = " (r.ready) }
            }
            @if !r.evaluated {
                p { "The gatekeeper has not published a verdict for this stage yet." }
            }
            @for b in &r.blockers {
                h4 { (b.kind) " " code { (b.blocker_id) } }
                p { "Meaning: " (b.meaning) }
                p { "Resolution: " (b.resolution) }
                @if let Some(s) = &b.subject {
                    p { "Subject: " (s) " · detected " (ts(Some(b.detected_at))) }
                }
                (table(
                    &["Evidence", "Kind", "Detail"],
                    b.evidence
                        .iter()
                        .map(|e| vec![e.id.clone(), e.kind.to_owned(), e.detail.clone()])
                        .collect(),
                    "No evidence ids attached.",
                ))
            }
            @if r.blockers.is_empty() && r.evaluated {
                p { "No blockers." }
            }
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn findings_table(findings: &[aispm_schemas::FindingRow], now: Timestamp, empty: &str) -> Markup {
    table(
        &[
            "Risk",
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
                    risk_cell(&f.risk),
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
    )
}

fn controls(doc: &Document, heading: &str) -> Markup {
    let Some(controls) = &doc.controls else {
        return html! {};
    };
    let k = &doc.kpis;
    let chart = svg::bars(
        "Controls by state",
        &[
            ("enforced".to_owned(), k.controls_enforced as f64),
            ("shadowed".to_owned(), k.controls_shadowed as f64),
            ("missing".to_owned(), k.controls_missing as f64),
            ("blocked".to_owned(), k.controls_blocked as f64),
        ],
        None,
        "",
    );
    let mut rows: Vec<_> = controls.iter().collect();
    rows.sort_by_key(|c| (c.state == ControlState::Enforced, c.control_id.clone()));
    let rows = table(
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
    html! {
        h2 id="controls" { (heading) }
        (chart)
        (rows)
    }
}

fn exceptions(doc: &Document, heading: &str) -> Markup {
    let Some(ex) = &doc.exceptions else {
        return html! {};
    };
    let now = doc.instant();
    let rows = table(
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
    html! {
        h2 id="exceptions" { (heading) }
        (rows)
    }
}

fn break_glass(doc: &Document) -> Markup {
    let Some(bg) = &doc.break_glass else {
        return html! {};
    };
    let rows = table(
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
    html! {
        h2 id="break-glass" { "Break-glass events" }
        (rows)
    }
}

fn validations(doc: &Document, heading: &str) -> Markup {
    let Some(v) = &doc.validations else {
        return html! {};
    };
    let rows = table(
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
    html! {
        h2 id="validations" { (heading) }
        (rows)
    }
}

fn deliveries(doc: &Document, heading: &str) -> Markup {
    let Some(d) = &doc.deliveries else {
        return html! {};
    };
    let rows = table(
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
    html! {
        h2 id="deliveries" { (heading) }
        (rows)
    }
}

fn action_paths(doc: &Document, heading: &str) -> Markup {
    let Some(paths) = &doc.action_paths else {
        return html! {};
    };
    let chart = svg::stacked(
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
    );
    let rows = table(
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
    html! {
        h2 id="action-paths" { (heading) }
        (chart)
        (rows)
    }
}

fn coverage(doc: &Document, heading: &str, empty: &str) -> Markup {
    let Some(rows) = &doc.coverage else {
        return html! {};
    };
    let rows = table(
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
    html! {
        h2 id="coverage" { (heading) }
        (rows)
    }
}

fn trend_charts(doc: &Document, heading: &str) -> Markup {
    let Some(tr) = &doc.trends else {
        return html! {};
    };
    let labels: Vec<String> = tr
        .iter()
        .map(|p| ts(Some(p.week_end)).get(5..10).unwrap_or("").to_owned())
        .collect();
    let open = svg::lines(
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
    );
    let sla = svg::lines(
        "High-risk findings closed within SLA (%)",
        &labels,
        &[("within SLA", tr.iter().map(|p| p.within_sla_pct).collect())],
    );
    let governed = svg::lines(
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
    );
    let rows = table(
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
    html! {
        h2 id="trends" { (heading) }
        (open)
        (sla)
        (governed)
        (rows)
    }
}

fn cso(doc: &Document) -> Markup {
    html! {
        h2 id="glance" { "Posture at a glance" }
        (kpi_tiles(doc))
        (layers(doc))
        (stage_summary(doc))
        (exception_aging(doc))
        (policy_drift(doc))
        (approval_trends(doc))
    }
}

/// A time-to-decision bound as a reader says it: "≤ 5 min", "> 7 days", or "—".
fn decision_bound(b: Option<DecisionBound>) -> String {
    match b {
        None => "—".to_owned(),
        Some(DecisionBound::OverAWeek) => "> 7 days".to_owned(),
        Some(DecisionBound::WithinMs(ms)) if ms < 3_600_000 => format!("≤ {} min", ms / 60_000),
        Some(DecisionBound::WithinMs(ms)) if ms < 86_400_000 => {
            format!("≤ {} h", ms / 3_600_000)
        }
        Some(DecisionBound::WithinMs(ms)) => format!("≤ {} days", ms / 86_400_000),
    }
}

/// Requests for approval month by month, and by control for the period's last month.
fn approval_trends(doc: &Document) -> Markup {
    let Some(a) = &doc.approval_trends else {
        return html! {};
    };
    let pct = |p: Option<f64>| p.map_or_else(|| "—".to_owned(), |p| format!("{p:.0} %"));
    let chart = svg::bars(
        "Requests for approval by month",
        &a.months
            .iter()
            .map(|m| (m.month.clone(), m.requested as f64))
            .collect::<Vec<_>>(),
        None,
        "",
    );
    let months = table(
        &[
            "Month",
            "Requested",
            "Granted",
            "Denied",
            "Pending",
            "Granted of answered",
            "Median time to decision",
            "90 % decided within",
        ],
        a.months
            .iter()
            .map(|m| {
                vec![
                    m.month.clone(),
                    m.requested.to_string(),
                    m.granted.to_string(),
                    m.denied.to_string(),
                    m.pending.to_string(),
                    pct(m.granted_pct),
                    decision_bound(m.median),
                    decision_bound(m.p90),
                ]
            })
            .collect(),
        "",
    );
    let last = a.months.last().map_or("", |m| m.month.as_str());
    let controls = table(
        &[
            "Control",
            "Requested",
            "The month before",
            "Granted",
            "Denied",
            "Pending",
            "Median time to decision",
        ],
        a.controls
            .iter()
            .map(|c| {
                let m = &c.this_month;
                vec![
                    c.control_id.clone(),
                    m.requested.to_string(),
                    c.previous_requested.to_string(),
                    m.granted.to_string(),
                    m.denied.to_string(),
                    m.pending.to_string(),
                    decision_bound(m.median),
                ]
            })
            .collect(),
        "No control had requests for approval in the month or the month before.",
    );
    let this = a.months.last().cloned().unwrap_or_default();
    html! {
        h2 id="approval-trends" { "Approval trends" }
        p class="meta" {
            "Decisions that required approval, by the calendar month (UTC) of the request, each              counted by its first answer (grant or denial, by event time) whenever it came;              pending: not answered at the report's time. Times to decision are bucket bounds."
        }
        (kpis(&[
            ("approvals_requested", "requests this month", this.requested.to_string()),
            ("approvals_granted_pct", "granted of answered", pct(this.granted_pct)),
            ("approvals_median", "median time to decision", decision_bound(this.median)),
            ("approvals_pending", "still pending", this.pending.to_string()),
        ]))
        (chart)
        (months)
        h3 { "By control, " (last) }
        (controls)
    }
}

/// Exceptions in force by age, those ending soon, and those that ended unrenewed.
fn exception_aging(doc: &Document) -> Markup {
    let Some(a) = &doc.exception_aging else {
        return html! {};
    };
    let rows = table(
        &[
            "Exception",
            "Finding / control",
            "Owner",
            "Granted",
            "Age (days)",
            "Expires",
            "Days left",
            "State",
        ],
        a.items
            .iter()
            .map(|i| {
                vec![
                    i.exception_id.clone(),
                    opt(i.covers.as_deref()),
                    opt(i.owner.as_deref()),
                    ts(Some(i.granted_at)),
                    i.age_days.to_string(),
                    ts(i.expires_at),
                    i.days_left
                        .map_or_else(|| "no expiry".to_owned(), |d| d.to_string()),
                    i.state.replace('_', " "),
                ]
            })
            .collect(),
        "No exceptions in force, and none ended unrenewed in the period.",
    );
    html! {
        h2 id="exception-aging" { "Exception aging" }
        (kpis(&[
            ("exceptions_in_force", "in force", a.in_force.to_string()),
            ("exceptions_under_30_days", "granted under 30 days ago", a.under_30_days.to_string()),
            ("exceptions_30_to_90_days", "30 to 90 days ago", a.from_30_to_90_days.to_string()),
            ("exceptions_over_90_days", "90 days ago or more", a.over_90_days.to_string()),
            ("exceptions_without_expiry", "without expiry", a.without_expiry.to_string()),
            ("exceptions_expiring_30_days", "expiring within 30 days", a.expiring_within_30_days.to_string()),
            ("exceptions_expired_unrenewed", "expired in the period, not renewed", a.expired_unrenewed.to_string()),
        ]))
        (rows)
    }
}

/// Controls that moved from enforced to shadow mode, or to a new policy, in the period.
fn policy_drift(doc: &Document) -> Markup {
    let Some(d) = &doc.policy_drift else {
        return html! {};
    };
    let rows = table(
        &[
            "Control",
            "Change",
            "When",
            "From",
            "To",
            "Newest decisions",
        ],
        d.iter()
            .map(|d| {
                vec![
                    d.control_id.clone(),
                    match d.change {
                        "enforced_to_shadow" => "enforced → shadow mode".to_owned(),
                        "policy_changed" => "new policy".to_owned(),
                        other => other.to_owned(),
                    },
                    ts(Some(d.at)),
                    d.from.clone(),
                    d.to.clone(),
                    d.decision_ids.join(", "),
                ]
            })
            .collect(),
        "No control moved to shadow mode or to a new policy in the period.",
    );
    html! {
        h2 id="policy-drift" { "Policy drift" }
        p class="meta" {
            "A control drifted to shadow mode when its newest decision is in shadow mode and it \
             last enforced within the period (when: that last enforced decision); it changed \
             policy when its decisions named a policy for the first time in the period after \
             naming another (when: that first use)."
        }
        (rows)
    }
}

fn ciso(doc: &Document) -> Markup {
    let now = doc.instant();
    let k = &doc.kpis;
    let by_severity = svg::bars(
        "Open findings by severity",
        &[
            ("critical".to_owned(), k.findings_open_critical as f64),
            ("high".to_owned(), k.findings_open_high as f64),
            ("medium".to_owned(), k.findings_open_medium as f64),
            ("low".to_owned(), k.findings_open_low as f64),
        ],
        None,
        "",
    );
    let owners = doc.owners.as_ref().map(|o| {
        table(
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
        )
    });
    html! {
        h2 id="figures" { "Key figures" }
        (kpi_tiles(doc))
        (layers(doc))
        (controls(doc, "Control state"))
        h2 id="findings-sla" { "Findings by severity and SLA" }
        (by_severity)
        @if let Some(f) = &doc.findings {
            h2 id="open-findings" { "Open findings" }
            (findings_table(f, now, "No open findings."))
        }
        @if let Some(owners) = owners {
            h2 id="owners" { "Owners" }
            (owners)
        }
        (exceptions(doc, "Exceptions and aging"))
        (break_glass(doc))
        (coverage(doc, "Shadow AI and risky tools", "No shadow AI agents or risky tools."))
    }
}

fn board(doc: &Document) -> Markup {
    let k = &doc.kpis;
    let tiles = kpis(&[
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
    html! {
        h2 id="kpis" { "Key performance indicators" }
        (tiles)
        (trend_charts(doc, "Trends (8 weeks)"))
        (stage_summary(doc))
    }
}

fn soc2(doc: &Document) -> Markup {
    let matrix = doc.control_evidence.as_ref().map(|m| {
        let chart = svg::stacked(
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
        );
        let rows = table(
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
        html! { (chart) (rows) }
    });
    let criteria = doc.criteria.as_ref().map(|c| {
        table(
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
        )
    });
    let evidence_table = |r: &crate::report::MatrixRow| {
        table(
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
        )
    };
    html! {
        h2 id="matrix" { "Control-to-evidence matrix" }
        @if let Some(matrix) = matrix {
            (matrix)
        }
        @if let Some(criteria) = criteria {
            h2 id="criteria" { "Framework criteria" }
            (criteria)
        }
        @if let Some(m) = &doc.control_evidence {
            h2 id="evidence-by-control" { "Evidence by control" }
            @for r in m {
                h3 { (r.control_id) " (" (r.state) ")" }
                (evidence_table(r))
            }
        }
        (exceptions(doc, "Exceptions"))
        (validations(doc, "Validations"))
        (deliveries(doc, "Report deliveries"))
    }
}

fn incident(doc: &Document) -> Markup {
    let now = doc.instant();
    let closed = doc.closed_findings.as_ref().map(|c| {
        table(
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
        )
    });
    let closures = doc.trends.as_ref().map(|tr| {
        svg::bars(
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
        )
    });
    html! {
        (break_glass(doc))
        @if let Some(closed) = closed {
            h2 id="closed" { "Findings closed in the period" }
            (closed)
        }
        @if let Some(f) = &doc.findings {
            h2 id="still-open" { "High-risk findings still open" }
            (findings_table(f, now, "No high-risk findings open."))
        }
        (exceptions(doc, "Revoked and expired exceptions"))
        @if let Some(closures) = closures {
            h2 id="closures" { "Closures by week" }
            (closures)
        }
    }
}

fn trial(doc: &Document) -> Markup {
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
    html! {
        h2 id="verdict" { "Trial verdict" }
        @if let Some(r) = doc.stage(Stage::Trial) {
            (stage_detail(r))
        }
        (action_paths(doc, "Action paths: real versus synthetic"))
        (validations(doc, "Validations"))
        (coverage(doc, "Assets seen", "No assets seen yet."))
        h2 id="next-steps" { "Next steps" }
        (table(&["Stage", "Blocker", "Do this"], steps, "No blockers stand before the pilot."))
    }
}

fn pilot(doc: &Document) -> Markup {
    html! {
        h2 id="go-no-go" { "Pilot go/no-go" }
        @if let Some(r) = doc.stage(Stage::Pilot) {
            (stage_detail(r))
        }
        (coverage(doc, "Pilot scope", "No registered assets."))
        (controls(doc, "Control readiness"))
        (action_paths(doc, "Action paths"))
        h2 id="figures" { "Key figures" }
        (kpi_tiles(doc))
        (exceptions(doc, "Exceptions"))
    }
}

fn production(doc: &Document) -> Markup {
    let ready = doc.stage(Stage::Production).is_some_and(|r| r.ready);
    html! {
        h2 id="verdict" { "Verdict" }
        p class=(if ready { "pass" } else { "fail" }) id="verdict" {
            "ready_for_aispm_production: " (ready)
        }
        h2 id="stages" { "Readiness by stage" }
        @for r in &doc.readiness {
            (stage_detail(r))
        }
        (validations(doc, "Validations"))
        (action_paths(doc, "Action paths"))
        (controls(doc, "Controls"))
        (deliveries(doc, "Report deliveries"))
    }
}

fn digest(doc: &Document) -> Markup {
    let now = doc.instant();
    let new = doc.new_blockers.as_ref().map(|new| {
        table(
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
        )
    });
    let per_stage = svg::bars(
        "Open blockers per stage",
        &doc.readiness
            .iter()
            .map(|r| (r.stage.to_string(), r.blockers.len() as f64))
            .collect::<Vec<_>>(),
        None,
        "",
    );
    html! {
        @if let Some(new) = new {
            h2 id="new-blockers" { "New blockers (last 24 h)" }
            (new)
        }
        h2 id="open-blockers" { "Open blockers by stage" }
        (per_stage)
        (stage_summary(doc))
        (validations(doc, "Failed validations and connectors"))
        @if let Some(f) = &doc.findings {
            h2 id="critical" { "Open critical findings" }
            (findings_table(f, now, "No open critical findings."))
        }
    }
}

fn coverage_findings(doc: &Document) -> Markup {
    let now = doc.instant();
    html! {
        h2 id="figures" { "Key figures" }
        (kpi_tiles(doc))
        (coverage(doc, "Coverage", "No assets seen."))
        (controls(doc, "Control state"))
        @if let Some(f) = &doc.findings {
            h2 id="open-findings" { "Open findings" }
            (findings_table(f, now, "No open findings."))
        }
        (deliveries(doc, "Report readiness"))
        (trend_charts(doc, "Trends (4 weeks)"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(
            ts(Some(Timestamp(1_763_719_200_123))),
            "2025-11-21 10:00 UTC"
        );
        assert_eq!(ts(None), "—");
    }

    /// Text a hostile agent, tool or operator could put into any field of the state.
    pub(crate) const HOSTILE: &str = r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>'&"#;

    fn h(tag: &str) -> String {
        format!("{tag}{HOSTILE}")
    }

    /// A tenant whose every free-text field is hostile, with rows for every report section.
    pub(crate) fn hostile_state() -> crate::state::TenantState {
        use aispm_schemas::{
            Blocker, BlockerKind, ControlRow, CoverageKind, CoverageRow, DeliveryRow, EvidenceRow,
            ExceptionKind, ExceptionRow, FindingRow, FindingStatus, Readiness, Risk,
            SignatureState, ValidationRow,
        };
        let now = 1_763_719_200_000;
        let day = 86_400_000;
        let mut t = crate::state::TenantState::default();
        for (i, (severity, status)) in [
            (Risk::Critical, FindingStatus::Open),
            (Risk::High, FindingStatus::Open),
            (Risk::High, FindingStatus::Closed),
            (Risk::Medium, FindingStatus::Open),
        ]
        .into_iter()
        .enumerate()
        {
            let id = h(&format!("finding-{i}"));
            t.findings.insert(
                id.clone(),
                FindingRow {
                    asserted_by: None,
                    finding_id: id,
                    rule_id: h("rule"),
                    title: h("title"),
                    severity,
                    status,
                    subject: h("agent"),
                    owner: (i % 2 == 1).then(|| h("owner")),
                    due_at: (i > 0).then_some(Timestamp(now - day)),
                    opened_at: Timestamp(now - 10 * day),
                    closed_at: (status == FindingStatus::Closed)
                        .then_some(Timestamp(now - 2 * day)),
                    resolution: (status == FindingStatus::Closed).then(|| h("resolution")),
                    frameworks: vec![h("SOC2:CC6.1")],
                    event_ids: vec![h("event")],
                    occurrences: 1,
                    exception_id: None,
                    exception_expires_at: None,
                    first_occurrence_at: Timestamp(now - 10 * day),
                    last_occurrence_at: Timestamp(now - 10 * day),
                    environments: Vec::new(),
                    risk: Default::default(),
                },
            );
        }
        t.coverage.insert(
            "a".into(),
            CoverageRow {
                asserted_by: None,
                kind: CoverageKind::Agent,
                id: h("agent"),
                registered: false,
                retired: false,
                owner: Some(h("owner")),
                trust: Some(h("trust")),
                decisions: 3,
                synthetic_decisions: 1,
                first_seen: Some(Timestamp(now - 3 * day)),
                last_seen: Some(Timestamp(now - day)),
                last_decision_id: Some(h("decision")),
                last_real_decision_id: Some(h("decision")),
                shadow_ai: true,
                environments: vec![],
            },
        );
        t.coverage.insert(
            "p".into(),
            CoverageRow {
                asserted_by: None,
                kind: CoverageKind::ActionPath,
                id: h("path"),
                registered: true,
                retired: false,
                owner: None,
                trust: None,
                decisions: 5,
                synthetic_decisions: 2,
                first_seen: Some(Timestamp(now - 3 * day)),
                last_seen: Some(Timestamp(now - day)),
                last_decision_id: Some(h("decision")),
                last_real_decision_id: Some(h("decision")),
                shadow_ai: false,
                environments: vec![],
            },
        );
        t.controls.insert(
            "c".into(),
            ControlRow {
                asserted_by: None,
                control_id: h("control"),
                state: ControlState::Shadowed,
                registered: true,
                enforced_decisions: 1,
                shadow_decisions: 2,
                high_risk_decisions: 1,
                action_kinds: vec![h("git")],
                framework_mappings: vec![h("SOC2:CC6.1")],
                decision_ids: vec![h("decision")],
                last_decision_at: Some(Timestamp(now - day)),
                environments: vec![],
                // Drifted to shadow in the period, and to a new policy: the monthly review
                // shows both, and the policy ids as text.
                last_enforced_at: Some(Timestamp(now - 2 * day)),
                policies: [(h("policy-old"), 90), (h("policy-new"), 3)]
                    .into_iter()
                    .map(|(policy_id, days)| aispm_schemas::PolicyUse {
                        policy_id,
                        first_seen_at: Timestamp(now - days * day),
                        last_seen_at: Timestamp(now - day),
                        decisions: 1,
                    })
                    .collect(),
                approvals: vec![],
            },
        );
        for (i, kind) in [ExceptionKind::Exception, ExceptionKind::BreakGlass]
            .into_iter()
            .enumerate()
        {
            t.exceptions.insert(
                format!("x{i}"),
                ExceptionRow {
                    asserted_by: None,
                    exception_id: h(&format!("exception-{i}")),
                    kind,
                    finding_id: Some(h("finding-1")),
                    control_id: Some(h("control")),
                    decision_id: Some(h("decision")),
                    owner: Some(h("owner")),
                    actor: Some(h("actor")),
                    reason: Some(h("reason")),
                    granted_at: Timestamp(now - 5 * day),
                    expires_at: Some(Timestamp(now + 5 * day)),
                    revoked: false,
                    reviewed_at: (i == 0).then_some(Timestamp(now - 4 * day)),
                    reviewed_by: Some(h("reviewer")),
                    event_ids: vec![h("event")],
                },
            );
        }
        t.evidence.insert(
            "e".into(),
            EvidenceRow {
                asserted_by: None,
                evidence_id: h("evidence"),
                event_id: h("decision"),
                sha256: h("sha"),
                uri: h("s3://bucket/"),
                signature_state: SignatureState::Invalid,
                key_id: Some(h("key")),
                recorded_at: Timestamp(now - 3_600_000),
                synthetic: false,
                action_kind: Some(h("file")),
                environment: None,
                agent_id: None,
                control_id: None,
            },
        );
        t.validations.insert(
            "v".into(),
            ValidationRow {
                asserted_by: None,
                check_kind: h("connector_live"),
                subject: Some(h("subject")),
                result: h("fail"),
                evidence_id: Some(h("evidence")),
                validated_at: Timestamp(now - day),
                event_id: h("event"),
                detail: Some(h("detail")),
                environment: None,
                signature_state: SignatureState::Verified,
                key_id: None,
            },
        );
        t.deliveries.insert(
            "d".into(),
            DeliveryRow {
                asserted_by: None,
                report_id: h("report"),
                report_type: h("cso"),
                channel: h("smtp"),
                outcome: h("failed"),
                recipients: vec![h("ciso@acme.example")],
                approved_recipients: false,
                message_id: Some(h("message")),
                packet_sha256: h("packet"),
                attempt: 1,
                delivered_at: Timestamp(now - day),
                event_id: h("event"),
                evidence_id: Some(h("evidence")),
                error: Some(h("error")),
            },
        );
        for stage in [Stage::Trial, Stage::Pilot, Stage::Production] {
            t.readiness.insert(
                stage,
                Readiness {
                    tenant_id: h("tenant"),
                    stage,
                    ready: stage == Stage::Trial,
                    blocker_ids: vec![],
                    evaluated_at: Timestamp(now - day),
                },
            );
            if stage != Stage::Trial {
                t.blockers.entry(stage).or_default().insert(
                    "b".into(),
                    Blocker {
                        tenant_id: h("tenant"),
                        stage,
                        blocker_id: h("blocker"),
                        kind: BlockerKind::EvidenceStale,
                        meaning: h("meaning"),
                        resolution: h("resolution"),
                        subject: Some(h("subject")),
                        evidence: vec![h("evidence"), h("unknown")],
                        detected_at: Timestamp(now - 3_600_000),
                    },
                );
            }
        }
        t.trust_roots.insert(h("key"), h("root"));
        t.updated_at = Some(Timestamp(now - 60_000));
        t
    }

    /// Every report type of the hostile tenant, with hostile request fields too.
    pub(crate) fn hostile_documents() -> Vec<Document> {
        let t = hostile_state();
        ReportType::ALL
            .iter()
            .map(|&ty| {
                let mut doc = crate::render::tests::doc_of(&t, ty);
                doc.tenant_id = h("tenant");
                doc.report_id = h("report");
                doc.requested_by = h("requester");
                doc.audience = h("audience");
                doc.headline = h("headline");
                doc
            })
            .collect()
    }

    /// [`HOSTILE`] as the page must show it: text, escaped.
    const ESCAPED: &str =
        "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;'&amp;";

    /// The elements a report is made of; anything else in the page was injected.
    const ELEMENTS: &[&str] = &[
        "!DOCTYPE", "html", "head", "meta", "title", "style", "body", "header", "footer", "h1",
        "h2", "h3", "h4", "p", "b", "code", "span", "div", "table", "thead", "tbody", "tr", "th",
        "td", "svg", "text", "rect", "line", "circle", "path",
    ];

    #[test]
    fn hostile_text_in_every_field_is_escaped_in_every_report_type() {
        for doc in hostile_documents() {
            let ty = doc.report_type;
            let page = render(&doc);
            assert!(page.starts_with("<!DOCTYPE html>"), "{ty}");
            for bad in ["<script", "<img", "</script"] {
                assert!(!page.contains(bad), "{ty}: {bad} got through");
            }
            // Every `<` left in the page opens or closes one of the report's own elements,
            // and no tag carries an injected attribute.
            for tag in page.split('<').skip(1) {
                let tag = tag.split('>').next().unwrap();
                let name = tag
                    .trim_start_matches('/')
                    .split([' ', '/'])
                    .next()
                    .unwrap();
                assert!(ELEMENTS.contains(&name), "{ty}: element <{tag}>");
                assert!(
                    !tag.contains("onerror") && !tag.contains("src="),
                    "{ty}: attribute in <{tag}>"
                );
            }
            // The hostile text is there, shown as text.
            assert!(
                page.contains(&format!(" — tenant{ESCAPED}</title>")),
                "{ty}"
            );
            assert!(
                page.contains(&format!(r#"<b id="tenant">tenant{ESCAPED}</b>"#)),
                "{ty}"
            );
            assert!(
                page.contains(&format!(
                    r#"<p class="headline" id="headline">headline{ESCAPED}</p>"#
                )),
                "{ty}"
            );
            // The blocking finding's title in the report path, in every type.
            assert!(page.contains(&format!("<td>title{ESCAPED}</td>")), "{ty}");
            assert!(page.matches(ESCAPED).count() >= 10, "{ty}");
        }
        let docs = hostile_documents();
        let page = |ty: ReportType| render(docs.iter().find(|d| d.report_type == ty).unwrap());
        // An agent id, in the coverage table and as a chart label.
        let ciso = page(ReportType::Ciso);
        assert!(ciso.contains(&format!("<td>agent{ESCAPED}</td>")), "{ciso}");
        let trial = page(ReportType::TrialHandoff);
        assert!(
            trial.contains(&format!(r#"class="cl">path{ESCAPED}</text>"#)),
            "{trial}"
        );
        // The monthly review: the control drifted to shadow and to a new policy, by its id and
        // the policies' ids.
        let cso = page(ReportType::Cso);
        for cell in ["control", "policy-old", "policy-new"] {
            assert!(
                cso.contains(&format!("<td>{cell}{ESCAPED}</td>")),
                "{cell}: {cso}"
            );
        }
        assert!(cso.contains("enforced → shadow mode"), "{cso}");
        // A blocker's kind and id in the stage detail.
        let production = page(ReportType::ProductionReadiness);
        assert!(
            production.contains(&format!("<code>blocker{ESCAPED}</code></h4>")),
            "{production}"
        );
    }
}
