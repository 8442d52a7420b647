//! The console's pages, as maud templates (every interpolation is HTML-escaped). Pages take
//! the services' JSON answers as they are and never compute a verdict of their own: the
//! gatekeeper, projector and reporter decide, the console shows and links.

use crate::upstream::{encode, query};
use aispm_schemas::Timestamp;
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

/// The stylesheet, served at `/assets/console.css` (no CDN, no inline style: the CSP allows
/// `style-src 'self'` only).
pub(crate) const CSS: &str = include_str!("../assets/console.css");

/// What the layout needs of the signed-in viewer.
#[derive(Debug, Clone)]
pub(crate) struct Chrome<'a> {
    pub viewer: Option<&'a str>,
    pub csrf: Option<&'a str>,
    pub tenant: Option<&'a str>,
}

/// The page frame: header with the viewer and sign-out, the tenant's navigation, the body.
pub(crate) fn layout(title: &str, chrome: &Chrome<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · aispm console" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body {
                header.top {
                    a.brand href="/" { "aispm console" }
                    @if let Some(t) = chrome.tenant {
                        nav aria-label="Tenant" {
                            a href={ "/t/" (encode(t)) } { "Overview" }
                            a href={ "/t/" (encode(t)) "/findings" } { "Findings" }
                            a href={ "/t/" (encode(t)) "/coverage" } { "Coverage" }
                            a href={ "/t/" (encode(t)) "/controls" } { "Controls" }
                            a href={ "/t/" (encode(t)) "/exceptions" } { "Exceptions" }
                            a href={ "/t/" (encode(t)) "/approvals" } { "Approvals" }
                            a href={ "/t/" (encode(t)) "/data-flows" } { "Data flows" }
                            a href={ "/t/" (encode(t)) "/evidence" } { "Evidence" }
                            a href={ "/t/" (encode(t)) "/validations" } { "Validations" }
                            a href={ "/t/" (encode(t)) "/reports" } { "Reports" }
                        }
                    }
                    @if let (Some(v), Some(csrf)) = (chrome.viewer, chrome.csrf) {
                        form.signout method="post" action="/sign-out" {
                            span { "Signed in as " strong { (v) } }
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sign-in form; `error` explains a refused token.
pub(crate) fn sign_in(error: Option<&str>, nonce: &str) -> Markup {
    let chrome = Chrome {
        viewer: None,
        csrf: None,
        tenant: None,
    };
    layout(
        "Sign in",
        &chrome,
        html! {
            h1 { "Sign in" }
            p { "Paste an aispm bearer token. The console reads the services with it and shows exactly what its tenants and scopes allow; the token stays on the server." }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            form method="post" action="/sign-in" {
                input type="hidden" name="sign_in" value=(nonce);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="off" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// A refusal, a missing row or an unavailable service: the status and why, and no data.
pub(crate) fn problem(chrome: &Chrome<'_>, heading: &str, detail: &str) -> Markup {
    layout(
        heading,
        chrome,
        html! {
            h1 { (heading) }
            p.error role="alert" { (detail) }
            p { a href="/" { "Back to your tenants" } }
        },
    )
}

/// A link to whatever row an id names (finding, evidence, asset, control or event): the
/// console's resolver finds it.
pub(crate) fn id_link(tenant: &str, id: &str) -> Markup {
    html! {
        a.id href={ "/t/" (encode(tenant)) "/go?id=" (encode(id)) } { code { (id) } }
    }
}

fn verdict_badge(ready: bool) -> Markup {
    html! {
        @if ready { span.badge.ready { "ready" } } @else { span.badge.unready { "not ready" } }
    }
}

/// How long ago `t` (an RFC 3339 time) was, in words.
pub(crate) fn age(t: &Value) -> String {
    let Some(ts) = t.as_str().and_then(|s| Timestamp::parse_rfc3339(s).ok()) else {
        return "—".into();
    };
    let ms = Timestamp::now().0 - ts.0;
    let words = duration_words(ms.unsigned_abs());
    if ms < 0 {
        format!("in {words}")
    } else {
        format!("{words} ago")
    }
}

/// A duration in words, in the largest unit that keeps two digits: `90 s`, `45 min`, `30 h`, `3 d`.
pub(crate) fn duration_words(ms: u64) -> String {
    let (n, unit) = match ms / 1000 {
        s if s < 120 => (s, "s"),
        s if s < 7200 => (s / 60, "min"),
        s if s < 172_800 => (s / 3600, "h"),
        s => (s / 86_400, "d"),
    };
    format!("{n} {unit}")
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A tenant's stages: (stage, ready, blockers).
type Stages = Vec<(String, bool, usize)>;

/// Every tenant's verdict per stage (an operator token).
pub(crate) fn tenants(chrome: &Chrome<'_>, all: &Value, sort: &str) -> Markup {
    // tenant → [(stage, ready, blockers)]
    let mut rows: std::collections::BTreeMap<String, Stages> = std::collections::BTreeMap::new();
    for r in all["readiness"].as_array().into_iter().flatten() {
        rows.entry(text(&r["tenant_id"])).or_default().push((
            text(&r["stage"]),
            r["ready"].as_bool().unwrap_or(false),
            r["blocker_count"].as_u64().map_or_else(
                || r["blockers"].as_array().map_or(0, Vec::len),
                |n| n as usize,
            ),
        ));
    }
    let mut list: Vec<(String, Stages)> = rows.into_iter().collect();
    let blockers = |stages: &[(String, bool, usize)]| -> usize {
        stages
            .iter()
            .filter(|(s, _, _)| s == "production")
            .map(|(_, _, n)| *n)
            .sum()
    };
    if sort == "blockers" {
        list.sort_by(|a, b| blockers(&b.1).cmp(&blockers(&a.1)).then(a.0.cmp(&b.0)));
    }
    layout(
        "Tenants",
        chrome,
        html! {
            h1 { "Tenants" }
            p { (list.len()) " tenants. "
                @for (stage, s) in all["summary"].as_object().into_iter().flatten() {
                    (stage) ": " (text(&s["ready"])) " ready, " (text(&s["unready"])) " not ready. "
                }
            }
            table {
                thead { tr {
                    th { a href="/?sort=tenant" { "Tenant" } }
                    th { "Production" }
                    th { a href="/?sort=blockers" { "Production blockers" } }
                    th { "Pilot" }
                    th { "Trial" }
                } }
                tbody {
                    @for (tenant, stages) in &list {
                        tr {
                            td { a href={ "/t/" (encode(tenant)) } { (tenant) } }
                            @for stage in ["production"] {
                                @let s = stages.iter().find(|(n, _, _)| n == stage);
                                td { @if let Some((_, ready, _)) = s { (verdict_badge(*ready)) } }
                            }
                            td { (blockers(stages)) }
                            @for stage in ["pilot", "trial"] {
                                @let s = stages.iter().find(|(n, _, _)| n == stage);
                                td { @if let Some((_, ready, n)) = s { (verdict_badge(*ready)) " " (n) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A tenant-bound token's tenants.
pub(crate) fn my_tenants(chrome: &Chrome<'_>, tenants: &[String]) -> Markup {
    layout(
        "Tenants",
        chrome,
        html! {
            h1 { "Your tenants" }
            ul { @for t in tenants { li { a href={ "/t/" (encode(t)) } { (t) } } } }
        },
    )
}

/// One layer's score, its trend, and the ids behind it: each drill-down list with its full
/// count, the first ids linked and, where the projector can list them all, a link to that list.
fn layer(tenant: &str, name: &str, l: &Value, trend: &[(i64, f64)]) -> Markup {
    html! {
        section.layer {
            h3 { (name) " " span.score { (text(&l["score"])) } }
            (sparkline(name, trend))
            p { (text(&l["detail"])) }
            @for (what, ids) in l["drill_down"].as_object().into_iter().flatten() {
                @let ids: Vec<&str> = ids.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                @let count = l["counts"][what].as_u64().unwrap_or(ids.len() as u64);
                @if count > 0 {
                    details {
                        summary { (what.replace('_', " ")) " (" (count) ")" }
                        ul.ids { @for id in &ids { li { (id_link(tenant, id)) } } }
                        @if let Some(list) = l["lists"][what].as_str() {
                            p { a href={ "/t/" (encode(tenant)) (list) } { "all " (count) " →" } }
                        } @else if count > ids.len() as u64 {
                            p.small { "the first " (ids.len()) " of " (count) }
                        }
                    }
                }
            }
        }
    }
}

/// A score's trend (0 to 100) as an inline SVG line, oldest left; described for screen readers.
pub(crate) fn sparkline(name: &str, points: &[(i64, f64)]) -> Markup {
    const W: f64 = 160.0;
    const H: f64 = 32.0;
    let label = match (points.first(), points.last()) {
        (Some(first), Some(last)) if points.len() > 1 => format!(
            "{name} score over the last {} hourly samples: from {} to {}",
            points.len(),
            first.1,
            last.1
        ),
        _ => format!("{name}: not enough samples for a trend yet"),
    };
    let (t0, t1) = (
        points.first().map_or(0, |p| p.0),
        points.last().map_or(1, |p| p.0),
    );
    let span = (t1 - t0).max(1) as f64;
    let path: Vec<String> = points
        .iter()
        .map(|(t, v)| {
            let x = (*t - t0) as f64 / span * W;
            let y = H - v.clamp(0.0, 100.0) / 100.0 * (H - 2.0) - 1.0;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    html! {
        svg.trend role="img" aria-label=(label) viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H) {
            title { (label) }
            @if path.len() > 1 {
                polyline points=(path.join(" ")) {}
            }
        }
    }
}

/// What changed in the last 24 hours, each count linked to the rows behind it.
fn last_day(tenant: &str, d: &Value) -> Markup {
    html! {
        section {
            h2 { "Last 24 hours" }
            p { (text(&d["evidence_recorded"])) " evidence artefacts recorded." }
            ul {
                @for (what, ids) in d["drill_down"].as_object().into_iter().flatten() {
                    @let ids: Vec<&str> = ids.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    @let count = d["counts"][what].as_u64().unwrap_or(ids.len() as u64);
                    li {
                        (what.replace('_', " ")) ": " strong { (count) }
                        @if !ids.is_empty() {
                            details {
                                summary { "which" @if count > ids.len() as u64 { " (the first " (ids.len()) ")" } }
                                ul.ids { @for id in &ids { li { (id_link(tenant, id)) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A page of a stage's blockers (each with its meaning, resolution and the ids behind it), how
/// many there are, and a link to the next page.
fn blocker_list(tenant: &str, stage: &str, v: &Value) -> Markup {
    let blockers = v["blockers"].as_array().cloned().unwrap_or_default();
    let count = v["blocker_count"].as_u64().unwrap_or(blockers.len() as u64);
    html! {
        @if blockers.is_empty() {
            p { "No blockers." }
        } @else {
            @if count > blockers.len() as u64 { p { (count) " blockers; " (blockers.len()) " on this page." } }
            ol.blockers {
                @for b in &blockers {
                    li.blocker {
                        h3 { code { (text(&b["kind"])) }
                            @if let Some(s) = b["subject"].as_str() { " · " (s) } }
                        p { (text(&b["meaning"])) }
                        p.resolution { strong { "Resolution: " } (text(&b["resolution"])) }
                        @let ev: Vec<&str> = b["evidence"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                        @if !ev.is_empty() {
                            p.evidence { "Behind it: "
                                @for id in ev { (id_link(tenant, id)) " " }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = v["next_cursor"].as_str() {
                nav.pages { a href={ "/t/" (encode(tenant)) "/blockers?stage=" (encode(stage)) "&after=" (encode(next)) } { "more " (stage) " blockers →" } }
            }
        }
    }
}

/// One stage's blockers, a page at a time.
pub(crate) fn blockers(chrome: &Chrome<'_>, tenant: &str, stage: &str, v: &Value) -> Markup {
    layout(
        "Blockers",
        chrome,
        html! {
            h1 { "Blockers of " (tenant) " for " (stage) " " (verdict_badge(v["ready"].as_bool().unwrap_or(false))) }
            // The list titles each blocker with an h3, as on the overview under its stage's h2.
            h2 { "What stands between " (tenant) " and " (stage) }
            (blocker_list(tenant, stage, v))
        },
    )
}

/// The tenant overview: verdict per stage with its blockers, the posture score per layer, and
/// open findings by severity.
pub(crate) fn overview(
    chrome: &Chrome<'_>,
    tenant: &str,
    stages: &[(&str, Value)],
    posture: &Value,
    trend: &Value,
    as_of: Option<&str>,
) -> Markup {
    // Each layer's score per sample, from the trend's `layers` order.
    let order: Vec<&str> = trend["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let series = |name: &str| -> Vec<(i64, f64)> {
        let Some(i) = order.iter().position(|l| *l == name) else {
            return vec![];
        };
        trend["samples"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let at = Timestamp::parse_rfc3339(s["at"].as_str()?).ok()?;
                Some((at.0, s["layers"][i].as_f64()?))
            })
            .collect()
    };
    let open = &posture["layers"]["findings"]["open_by_severity"];
    let severities = ["critical", "high", "medium", "low"];
    layout(
        tenant,
        chrome,
        html! {
            h1 { "Tenant " (tenant) }
            form.as-of method="get" action={ "/t/" (encode(tenant)) } {
                label for="as_of" { "As of " }
                input #as_of type="text" name="as_of" value=(as_of.unwrap_or(""))
                    placeholder="2026-09-30T23:59:59Z" aria-describedby="as_of_help";
                " "
                button type="submit" { "Show" }
                @if as_of.is_some() {
                    " " a href={ "/t/" (encode(tenant)) } { "Back to now" }
                }
                p.small #as_of_help { "A past instant (RFC 3339): the verdicts and posture from the events that occurred by then, judged then." }
            }
            @if as_of.is_some() {
                p.notice role="status" {
                    "As of " strong { (text(&posture["as_of"]["at"])) } ": "
                    (text(&posture["as_of"]["events"])) " events that occurred by then, replayed ("
                    (text(&posture["as_of"]["late"])) " of them reached aispm later; event time decides), "
                    (text(&posture["as_of"]["after"])) " later events left out. "
                    @if let Some(from) = posture["as_of"]["from_checkpoint"].as_str() {
                        "The replay started from the projector's checkpoint as of " (from)
                        " and applied " (text(&posture["as_of"]["applied"])) " of them. "
                    }
                    "Links below lead to the tenant now."
                }
            }
            section.verdicts {
                @for (stage, v) in stages {
                    article.verdict {
                        h2 { (stage) " " (verdict_badge(v["ready"].as_bool().unwrap_or(false))) }
                        p.small { "ready_for_aispm_" (stage) ": " code { (text(&v["ready"])) }
                            " · evaluated " (age(&v["evaluated_at"])) }
                        (blocker_list(tenant, stage, v))
                    }
                }
            }
            section {
                h2 { "Posture " span.score { (text(&posture["score"])) } }
                p.small { "Computed " (age(&posture["computed_at"])) "; trends are the last score of each hour over 7 days." }
                div.layers {
                    @for name in ["coverage", "controls", "findings", "evidence", "reports"] {
                        (layer(tenant, name, &posture["layers"][name], &series(name)))
                    }
                }
            }
            (last_day(tenant, &posture["last_24h"]))
            section {
                h2 { "Open findings" }
                table {
                    thead { tr { @for s in severities { th { (s) } } } }
                    tbody { tr { @for s in severities {
                        td { a href={ "/t/" (encode(tenant)) "/findings?status=open&severity=" (s) } { (text(&open[s])) } }
                    } } }
                }
            }
        },
    )
}

/// The filters of the findings list, passed on to the projector, and the page's cursor.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(crate) struct FindingFilter {
    pub status: Option<String>,
    pub severity: Option<String>,
    pub rule: Option<String>,
    pub owner: Option<String>,
    pub sla: Option<String>,
    /// A resource the finding is about (one part of its subject: an agent, control, tool…).
    pub about: Option<String>,
    /// `risk` (the projector's default: highest risk first) or `id`.
    pub sort: Option<String>,
    pub after: Option<String>,
}

/// Findings per page of the list.
pub(crate) const PAGE: usize = 50;

impl FindingFilter {
    /// The query string of these filters (empty ones left out), starting a page `after`.
    pub(crate) fn query(&self, after: Option<&str>) -> String {
        query([
            ("status", self.status.as_deref()),
            ("severity", self.severity.as_deref()),
            ("rule", self.rule.as_deref()),
            ("owner", self.owner.as_deref()),
            ("sla", self.sla.as_deref()),
            ("about", self.about.as_deref()),
            ("sort", self.sort.as_deref()),
            ("after", after),
        ])
    }
}

/// A page of the findings list, as the projector filtered it.
pub(crate) fn findings(
    chrome: &Chrome<'_>,
    tenant: &str,
    page: &Value,
    filter: &FindingFilter,
) -> Markup {
    let rows: Vec<&Value> = page["findings"].as_array().into_iter().flatten().collect();
    let selected = |v: &Option<String>, o: &str| v.as_deref() == Some(o);
    layout(
        "Findings",
        chrome,
        html! {
            h1 { "Findings of " (tenant) }
            form.filters method="get" {
                label { "Status "
                    select name="status" {
                        @for o in ["", "open", "closed"] {
                            option value=(o) selected[selected(&filter.status, o)] { @if o.is_empty() { "any" } @else { (o) } }
                        }
                    }
                }
                label { "Severity "
                    select name="severity" {
                        @for o in ["", "critical", "high", "medium", "low"] {
                            option value=(o) selected[selected(&filter.severity, o)] { @if o.is_empty() { "any" } @else { (o) } }
                        }
                    }
                }
                label { "SLA "
                    select name="sla" {
                        @for o in ["", "overdue", "past_due", "on_track", "risk_accepted", "closed_within_sla", "closed_late"] {
                            option value=(o) selected[selected(&filter.sla, o)] { @if o.is_empty() { "any" } @else { (o) } }
                        }
                    }
                }
                label { "Rule " input type="text" name="rule" value=(filter.rule.clone().unwrap_or_default()); }
                label { "Owner " input type="text" name="owner" value=(filter.owner.clone().unwrap_or_default()); }
                label { "About " input type="text" name="about" value=(filter.about.clone().unwrap_or_default()); }
                label { "Order "
                    select name="sort" {
                        option value="" selected[filter.sort.as_deref().is_none_or(|s| s.is_empty() || s == "risk")] { "highest risk first" }
                        option value="id" selected[selected(&filter.sort, "id")] { "by finding id" }
                    }
                }
                button type="submit" { "Filter" }
            }
            p { (rows.len()) " findings on this page" @if filter.after.is_some() { " (not the first)" }
                @if filter.sort.as_deref() != Some("id") { ", highest risk first" } "." }
            table {
                thead { tr { th { "Risk" } th { "Finding" } th { "Severity" } th { "Status" } th { "Owner" } th { "SLA" } th { "Occurrences" } th { "Last seen" } } }
                tbody {
                    @for f in &rows {
                        tr {
                            td.risk title=(risk_summary(&f["risk"])) { strong { (text(&f["risk"]["score"])) } }
                            td { a href={ "/t/" (encode(tenant)) "/finding?id=" (encode(&text(&f["finding_id"]))) } { (text(&f["title"])) } br; code.small { (text(&f["finding_id"])) } }
                            td { span class={ "sev " (text(&f["severity"])) } { (text(&f["severity"])) } }
                            td { (text(&f["status"])) }
                            td { (text(&f["owner"])) }
                            td { (text(&f["sla_state"])) }
                            td { (text(&f["occurrences"])) }
                            td { (age(&f["last_occurrence_at"])) }
                        }
                    }
                }
            }
            nav.pages {
                @if filter.after.is_some() { a href={ "?" (filter.query(None)) } { "← first page" } " " }
                @if let Some(next) = page["next_cursor"].as_str() { a href={ "?" (filter.query(Some(next))) } { "next page →" } }
            }
        },
    )
}

/// How a table shows one field of a row.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell {
    /// The value as text (a field, or a JSON pointer such as `/time_to_decision/mean_ms`).
    Text(&'static str),
    /// A time, as how long ago (or how soon) it is.
    Age(&'static str),
    /// An id, linked to its row.
    Id(&'static str),
    /// A list of ids, each linked to its row.
    Ids(&'static str),
    /// An asset named by two fields (its kind, its id), linked to its row.
    Asset(&'static str, &'static str),
    /// A duration in milliseconds, in words (null: "over a week" when the row has answers).
    Duration(&'static str),
    /// An agent id, linked to its asset row.
    Agent(&'static str),
    /// A list of `{agent_id, decisions}`, each agent linked to its row.
    Agents(&'static str),
    /// A link's target (`relation`, `target`): an asset linked to its row, an actor as text.
    Target,
}

/// A row's field by name, or by JSON pointer when it starts with `/`.
fn field<'a>(row: &'a Value, f: &str) -> &'a Value {
    if f.starts_with('/') {
        row.pointer(f).unwrap_or(&Value::Null)
    } else {
        &row[f]
    }
}

impl Cell {
    fn render(self, tenant: &str, row: &Value) -> Markup {
        match self {
            Cell::Text(f) => html! { (text(field(row, f))) },
            Cell::Age(f) => html! { (age(field(row, f))) },
            Cell::Id(f) => match row[f].as_str() {
                Some(id) => id_link(tenant, id),
                None => html! { "—" },
            },
            Cell::Ids(f) => html! {
                @for id in row[f].as_array().into_iter().flatten().filter_map(Value::as_str) {
                    (id_link(tenant, id)) " "
                }
            },
            Cell::Asset(kind, id) => {
                let key = format!("{}/{}", text(&row[kind]), text(&row[id]));
                html! { a href={ "/t/" (encode(tenant)) "/asset?key=" (encode(&key)) } { (text(&row[id])) } }
            }
            Cell::Duration(f) => match field(row, f).as_u64() {
                Some(ms) => html! { (duration_words(ms)) },
                None => html! { "—" },
            },
            Cell::Agent(f) => {
                let key = format!("agent/{}", text(&row[f]));
                html! { a href={ "/t/" (encode(tenant)) "/asset?key=" (encode(&key)) } { (text(&row[f])) } }
            }
            Cell::Agents(f) => html! {
                @for a in row[f].as_array().into_iter().flatten() {
                    @let key = format!("agent/{}", text(&a["agent_id"]));
                    a href={ "/t/" (encode(tenant)) "/asset?key=" (encode(&key)) } { (text(&a["agent_id"])) }
                    " (" (text(&a["decisions"])) ") "
                }
            },
            Cell::Target => {
                let target = text(&row["target"]);
                match row["relation"].as_str() {
                    Some("actor") | None => html! { (target) },
                    Some(kind) => {
                        let key = format!("{kind}/{target}");
                        html! { a href={ "/t/" (encode(tenant)) "/asset?key=" (encode(&key)) } { (target) } }
                    }
                }
            }
        }
    }
}

/// A page of one of the projector's lists as a table: `columns` of the rows under `key`, and a
/// link to the next page (`next` makes its query string from the page's `next_cursor`).
pub(crate) fn table(
    tenant: &str,
    page: &Value,
    key: &str,
    columns: &[(&str, Cell)],
    next: impl Fn(&str) -> String,
) -> Markup {
    let rows: Vec<&Value> = page[key].as_array().into_iter().flatten().collect();
    html! {
        p { (rows.len()) " rows on this page." }
        table {
            thead { tr { @for (heading, _) in columns { th { (heading) } } } }
            tbody {
                @for r in &rows {
                    tr { @for (_, cell) in columns { td { (cell.render(tenant, r)) } } }
                }
            }
        }
        @if let Some(n) = page["next_cursor"].as_str() {
            nav.pages { a href={ "?" (next(n)) } { "next page →" } }
        }
    }
}

/// The tenant's inventory: every agent, repo, workflow, MCP server and tool, model endpoint
/// and action path the registry or the decisions name, and which of it is shadow AI.
pub(crate) fn coverage(
    chrome: &Chrome<'_>,
    tenant: &str,
    page: &Value,
    kind: Option<&str>,
    shadow: bool,
) -> Markup {
    let filter = |after: Option<&str>| {
        query([
            ("kind", kind),
            ("shadow_ai", shadow.then_some("true")),
            ("after", after),
        ])
    };
    layout(
        "Coverage",
        chrome,
        html! {
            h1 { "Coverage of " (tenant) }
            p { "Everything the registry or the decisions name. " strong { "Shadow AI" }
                " is what was seen deciding but never registered." }
            form.filters method="get" {
                label { "Kind "
                    select name="kind" {
                        @for o in ["", "agent", "repo", "workflow", "mcp_server", "mcp_tool", "model_endpoint", "action_path"] {
                            option value=(o) selected[kind == Some(o)] { @if o.is_empty() { "any" } @else { (o) } }
                        }
                    }
                }
                label { input type="checkbox" name="shadow_ai" value="true" checked[shadow]; " shadow AI only" }
                button type="submit" { "Filter" }
            }
            (table(tenant, page, "coverage", &[
                ("Kind", Cell::Text("kind")),
                ("Asset", Cell::Asset("kind", "id")),
                ("Registered", Cell::Text("registered")),
                ("Shadow AI", Cell::Text("shadow_ai")),
                ("Owner", Cell::Text("owner")),
                ("Decisions", Cell::Text("decisions")),
                ("Synthetic", Cell::Text("synthetic_decisions")),
                ("Last seen", Cell::Age("last_seen")),
                ("Last decision", Cell::Id("last_decision_id")),
            ], |n| filter(Some(n))))
        },
    )
}

/// The tenant's controls: their state and the decisions that show it.
pub(crate) fn controls(chrome: &Chrome<'_>, tenant: &str, page: &Value) -> Markup {
    layout(
        "Controls",
        chrome,
        html! {
            h1 { "Controls of " (tenant) }
            p { "State: " strong { "enforced" } " (deciding in enforce mode), " strong { "shadowed" }
                " (its latest decision in shadow mode), " strong { "missing" }
                " (registered but never seen deciding, or decisions no control covered), "
                strong { "blocked" } " (retired or quarantined yet still deciding)." }
            (table(tenant, page, "controls", &[
                ("Control", Cell::Id("control_id")),
                ("State", Cell::Text("state")),
                ("Registered", Cell::Text("registered")),
                ("Enforced", Cell::Text("enforced_decisions")),
                ("Shadow", Cell::Text("shadow_decisions")),
                ("High risk", Cell::Text("high_risk_decisions")),
                ("Last decision", Cell::Age("last_decision_at")),
                ("Decisions", Cell::Ids("decision_ids")),
            ], |n| format!("after={}", encode(n))))
        },
    )
}

/// The tenant's exceptions, accepted risks and break-glass uses, with their state on the
/// clock (expiry, review).
pub(crate) fn exceptions(chrome: &Chrome<'_>, tenant: &str, page: &Value) -> Markup {
    layout(
        "Exceptions",
        chrome,
        html! {
            h1 { "Exceptions and break-glass of " (tenant) }
            p { "An exception is " strong { "active" } " until it expires or is revoked; a break-glass use is "
                strong { "pending_review" } " until reviewed, and " strong { "review_overdue" }
                " (a blocker) past the review window." }
            (table(tenant, page, "exceptions", &[
                ("Exception", Cell::Id("exception_id")),
                ("Kind", Cell::Text("kind")),
                ("State", Cell::Text("state")),
                ("Finding", Cell::Id("finding_id")),
                ("Control", Cell::Id("control_id")),
                ("Owner", Cell::Text("owner")),
                ("Granted", Cell::Age("granted_at")),
                ("Expires", Cell::Age("expires_at")),
                ("Reviewed", Cell::Age("reviewed_at")),
                ("Reason", Cell::Text("reason")),
            ], |n| format!("after={}", encode(n))))
        },
    )
}

/// The evidence search's fields, passed on to the projector (the window as `since`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(crate) struct EvidenceFilter {
    pub signature_state: Option<String>,
    pub environment: Option<String>,
    /// Carried by this agent's decisions.
    pub agent: Option<String>,
    /// Carried by decisions of this control.
    pub control: Option<String>,
    /// Recorded within the last `1h`, `24h`, `7d` or `30d`.
    pub within: Option<String>,
    pub after: Option<String>,
}

impl EvidenceFilter {
    /// The window's start, `within` before `now`; `None` for no or an unknown window.
    pub(crate) fn since(&self, now: Timestamp) -> Option<Timestamp> {
        let hours = match self.within.as_deref()? {
            "1h" => 1,
            "24h" => 24,
            "7d" => 24 * 7,
            "30d" => 24 * 30,
            _ => return None,
        };
        Some(Timestamp(now.0 - hours * 3_600_000))
    }

    /// The fields the projector filters by, as its query parameters.
    pub(crate) fn filters(&self) -> [(&'static str, Option<&str>); 4] {
        [
            ("signature_state", self.signature_state.as_deref()),
            ("environment", self.environment.as_deref()),
            ("agent", self.agent.as_deref()),
            ("control", self.control.as_deref()),
        ]
    }

    /// The console's query string of this search (empty fields left out), from `after`.
    pub(crate) fn query(&self, after: Option<&str>) -> String {
        let rest = [("within", self.within.as_deref()), ("after", after)];
        query(self.filters().into_iter().chain(rest))
    }
}

/// The evidence search: by id, signature state, environment, agent, control and when it was
/// recorded.
pub(crate) fn evidence(
    chrome: &Chrome<'_>,
    tenant: &str,
    page: &Value,
    f: &EvidenceFilter,
) -> Markup {
    let selected = |v: &Option<String>, o: &str| v.as_deref() == Some(o);
    layout(
        "Evidence",
        chrome,
        html! {
            h1 { "Evidence of " (tenant) }
            form.filters method="get" action={ "/t/" (encode(tenant)) "/go" } {
                label { "Evidence id " input type="text" name="id" required; }
                button type="submit" { "Open" }
            }
            form.filters method="get" {
                label { "Signature "
                    select name="signature_state" {
                        @for o in ["", "verified", "unsigned", "invalid", "unknown_key"] {
                            option value=(o) selected[selected(&f.signature_state, o)] { @if o.is_empty() { "any" } @else { (o) } }
                        }
                    }
                }
                label { "Environment "
                    select name="environment" {
                        @for o in ["", "production", "pilot", "trial"] {
                            option value=(o) selected[selected(&f.environment, o)] { @if o.is_empty() { "any" } @else { (o) } }
                        }
                    }
                }
                label { "Agent "
                    input type="text" name="agent" value=(f.agent.as_deref().unwrap_or(""));
                }
                label { "Control "
                    input type="text" name="control" value=(f.control.as_deref().unwrap_or(""));
                }
                label { "Recorded within "
                    select name="within" {
                        @for o in ["", "1h", "24h", "7d", "30d"] {
                            option value=(o) selected[selected(&f.within, o)] { @if o.is_empty() { "any time" } @else { (o) } }
                        }
                    }
                }
                button type="submit" { "Search" }
            }
            (table(tenant, page, "evidence", &[
                ("Evidence", Cell::Id("evidence_id")),
                ("Signature", Cell::Text("signature_state")),
                ("Key", Cell::Text("key_id")),
                ("Environment", Cell::Text("environment")),
                ("Agent", Cell::Id("agent_id")),
                ("Control", Cell::Id("control_id")),
                ("Action", Cell::Text("action_kind")),
                ("Synthetic", Cell::Text("synthetic")),
                ("Recorded", Cell::Age("recorded_at")),
                ("Event", Cell::Id("event_id")),
            ], |n| f.query(Some(n))))
        },
    )
}

/// Any JSON object as a definition list; ids in it link to their rows.
pub(crate) fn fields(tenant: &str, v: &Value) -> Markup {
    html! {
        dl.fields {
            @for (k, val) in v.as_object().into_iter().flatten() {
                dt { (k) }
                dd {
                    @match val {
                        Value::String(s) if k.ends_with("_id") && !matches!(k.as_str(), "tenant_id" | "rule_id") => { (id_link(tenant, s)) }
                        Value::Array(a) if k.ends_with("_ids") => {
                            @for id in a.iter().filter_map(Value::as_str) { (id_link(tenant, id)) " " }
                        }
                        Value::Array(_) | Value::Object(_) => { code { (serde_json::to_string(val).unwrap_or_default()) } }
                        other => { (text(other)) }
                    }
                }
            }
        }
    }
}

/// A risk score's factors in one line (`severity critical +35, …`), for a tooltip.
fn risk_summary(risk: &Value) -> String {
    serde_json::from_value::<aispm_schemas::RiskScore>(risk.clone())
        .map(|r| r.explain())
        .unwrap_or_default()
}

/// One finding, with every event behind it.
pub(crate) fn finding(chrome: &Chrome<'_>, tenant: &str, f: &Value, events: &Value) -> Markup {
    let id = text(&f["finding_id"]);
    // Every field but the risk, which has its own table.
    let mut rest = f.clone();
    if let Some(o) = rest.as_object_mut() {
        o.remove("risk");
    }
    layout(
        &id,
        chrome,
        html! {
            h1 { (text(&f["title"])) }
            p { code { (id) } " · risk " strong { (text(&f["risk"]["score"])) } " · "
                span class={ "sev " (text(&f["severity"])) } { (text(&f["severity"])) }
                " · " (text(&f["status"])) " · SLA " (text(&f["sla_state"])) }
            h2 { "Why its risk is " (text(&f["risk"]["score"])) }
            table.risk {
                caption { "Each factor's points; they add up to the score (0 to 100)." }
                thead { tr { th scope="col" { "Factor" } th scope="col" { "What it read" } th scope="col" { "Points" } } }
                tbody {
                    @for x in f["risk"]["factors"].as_array().into_iter().flatten() {
                        tr { th scope="row" { (text(&x["factor"]).replace('_', " ")) } td { (text(&x["value"])) } td { (text(&x["points"])) } }
                    }
                }
            }
            h2 { "Fields" }
            (fields(tenant, &rest))
            h2 { "Events behind it" }
            @let list = events["events"].as_array().cloned().unwrap_or_default();
            @if list.is_empty() { p { "No event is recorded for this finding." } }
            ol.events {
                @for e in &list {
                    li { (id_link(tenant, &text(&e["event_id"])))
                        @if let Some(t) = e["occurred_at"].as_str() { " · " (t) } }
                }
            }
            @if let Some(next) = events["next_cursor"].as_str() {
                p { a href={ "/t/" (encode(tenant)) "/finding?id=" (encode(&id)) "&after=" (encode(next)) } { "more events →" } }
            }
        },
    )
}

/// An input event (a decision, approval, registry or delivery event) with every field as it
/// arrived, who asserted it, and the rows it names.
pub(crate) fn event(chrome: &Chrome<'_>, tenant: &str, v: &Value) -> Markup {
    let id = text(&v["event_id"]);
    let kind = match v["type"].as_str() {
        Some("decision") => "Decision",
        Some("approval") => "Approval",
        Some("registry") => "Registry event",
        Some("report_delivery") => "Report delivery",
        _ => "Event",
    };
    layout(
        &id,
        chrome,
        html! {
            h1 { (kind) " " code { (id) } }
            p { "Asserted by " strong { (text(&v["asserted_by"])) } }
            (fields(tenant, &v["event"]))
            @let rows: Vec<&str> = v["rows"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            @if !rows.is_empty() {
                h2 { "Rows it changed" }
                ul.ids {
                    @for r in rows {
                        @let key = r.split_once('/').map_or(r, |(_, k)| k);
                        li { (r.split('/').next().unwrap_or("")) " " (id_link(tenant, key)) }
                    }
                }
            }
            @let approvals: Vec<&str> = v["approvals"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            @if !approvals.is_empty() {
                h2 { "Approvals granted for it" }
                ul.ids { @for a in approvals { li { (id_link(tenant, a)) } } }
            }
        },
    )
}

/// Every approval event of the tenant, newest first: approvals granted and denied, exceptions
/// and risk acceptances, revocations, break-glass and its reviews, finding assignments.
pub(crate) fn approvals(
    chrome: &Chrome<'_>,
    tenant: &str,
    page: &Value,
    kind: Option<&str>,
) -> Markup {
    let next = |after: Option<&str>| query([("kind", kind), ("after", after)]);
    layout(
        "Approvals",
        chrome,
        html! {
            h1 { "Approvals of " (tenant) }
            p { "Every approval event, newest first: who granted, denied, excepted, accepted, "
                "invoked break-glass, reviewed, assigned or resolved what, and when. "
                a href={ "/t/" (encode(tenant)) "/approval-stats" } { "Requests for approval per control and agent →" } }
            form.filters method="get" {
                label { "Kind "
                    select name="kind" {
                        option value="" selected[kind.is_none()] { "any" }
                        @for o in aispm_schemas::ApprovalKind::ALL.iter().map(|k| k.as_str()) {
                            option value=(o) selected[kind == Some(o)] { (o) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            (table(tenant, page, "approvals", &[
                ("Event", Cell::Id("event_id")),
                ("Kind", Cell::Text("kind")),
                ("When", Cell::Age("occurred_at")),
                ("Actor", Cell::Text("actor")),
                ("Decision", Cell::Id("decision_id")),
                ("Finding", Cell::Id("finding_id")),
                ("Control", Cell::Id("control_id")),
                ("Exception", Cell::Id("exception_id")),
                ("Reason", Cell::Text("reason")),
                ("Asserted by", Cell::Text("asserted_by")),
            ], |n| next(Some(n))))
        },
    )
}

/// Requests for approval per control and agent: answered, pending, overdue, time to decision.
pub(crate) fn approval_stats(
    chrome: &Chrome<'_>,
    tenant: &str,
    control: Option<&str>,
    page: &Value,
) -> Markup {
    let window = page["approval_decision_window_ms"].as_u64().unwrap_or(0);
    layout(
        "Requests for approval",
        chrome,
        html! {
            h1 { "Requests for approval of " (tenant) @if let Some(c) = control { " under " code { (c) } } }
            p { "Decisions that asked for approval (verdict require_approval), per control and agent: "
                "how many were granted or denied (each by its first answer), how many are still pending "
                "and how many of those waited past the decision window (" (duration_words(window)) "), "
                "and how long answers took (the median and 90th percentile as the bucket they fall in). "
                a href={ "/t/" (encode(tenant)) "/approvals" } { "Every approval event →" } }
            (table(tenant, page, "stats", &[
                ("Control", Cell::Id("control_id")),
                ("Agent", Cell::Agent("agent_id")),
                ("Requested", Cell::Text("requested")),
                ("Granted", Cell::Text("granted")),
                ("Denied", Cell::Text("denied")),
                ("Pending", Cell::Text("pending")),
                ("Overdue", Cell::Text("pending_overdue")),
                ("Oldest pending", Cell::Age("/oldest_pending/requested_at")),
                ("Median answer within", Cell::Duration("/time_to_decision/p50_at_most_ms")),
                ("90 % within", Cell::Duration("/time_to_decision/p90_at_most_ms")),
                ("Last request", Cell::Age("last_request_at")),
            ], |n| query([("control", control), ("after", Some(n))])))
        },
    )
}

/// The data-exposure map: which data classes went to which model endpoints and MCP tools, by
/// which agents, and whether each destination is approved for the class.
pub(crate) fn data_flows(
    chrome: &Chrome<'_>,
    tenant: &str,
    page: &Value,
    class: Option<&str>,
    approved: Option<&str>,
) -> Markup {
    let next =
        |after: Option<&str>| query([("class", class), ("approved", approved), ("after", after)]);
    layout(
        "Data flows",
        chrome,
        html! {
            h1 { "Data flows of " (tenant) }
            p { "Each data class the decisions carried, to each model endpoint and MCP tool it went to: "
                "the agents that sent it, how often, how many of those were denied, and whether the "
                "destination's registration approves the class. An unapproved model endpoint is a "
                "finding (AISPM-DATA-001)." }
            form.filters method="get" {
                label { "Data class " input type="text" name="class" value=(class.unwrap_or("")); }
                label { "Approved "
                    select name="approved" {
                        @for (v, l) in [("", "any"), ("true", "approved"), ("false", "not approved")] {
                            option value=(v) selected[approved.unwrap_or("") == v] { (l) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            (table(tenant, page, "flows", &[
                ("Data class", Cell::Text("data_class")),
                ("Kind", Cell::Text("destination_kind")),
                ("Destination", Cell::Asset("destination_kind", "destination")),
                ("Approved", Cell::Text("approved")),
                ("Decisions", Cell::Text("decisions")),
                ("Denied", Cell::Text("denied")),
                ("Agents", Cell::Text("agent_count")),
                ("By agent (decisions)", Cell::Agents("agents")),
                ("Last seen", Cell::Age("last_at")),
                ("Finding", Cell::Id("finding_id")),
            ], |n| next(Some(n))))
        },
    )
}

/// An asset: its coverage row and, for an agent, its identity and access (`identity`: owner,
/// actors, API keys and their scopes used and unused), what it acted for and with (`links`:
/// the actors, MCP tools, model endpoints, repos, workflows, keys and scopes its decisions
/// named) and a link to the findings about it.
pub(crate) fn asset(
    chrome: &Chrome<'_>,
    tenant: &str,
    key: &str,
    row: &Value,
    links: &Value,
    identity: &Value,
) -> Markup {
    let (kind, id) = key.split_once('/').unwrap_or(("asset", key));
    layout(
        id,
        chrome,
        html! {
            h1 { "Asset " code { (id) } }
            p { (kind)
                @if row["shadow_ai"] == Value::Bool(true) { " · " strong { "shadow AI" } " (seen deciding, never registered)" }
                " · " a href={ "/t/" (encode(tenant)) "/findings?about=" (encode(id)) } { "findings about it →" }
                @if kind == "agent" {
                    " · " a href={ "/t/" (encode(tenant)) "/evidence?agent=" (encode(id)) } { "evidence from its decisions →" }
                }
            }
            (fields(tenant, row))
            @if kind == "agent" {
                (identity_section(tenant, identity))
                h2 { "What it acted for and with" }
                p { "The actors it acted for and the tools, model endpoints, repos, workflows, API keys and scopes its decisions named." }
                (table(tenant, links, "links", &[
                    ("Relation", Cell::Text("relation")),
                    ("Target", Cell::Target),
                    ("Decisions", Cell::Text("decisions")),
                    ("Synthetic", Cell::Text("synthetic_decisions")),
                    ("First use", Cell::Age("first_at")),
                    ("Last use", Cell::Age("last_at")),
                    ("Last decision", Cell::Id("last_decision_id")),
                ], |n| format!("key={}&after={}", encode(key), encode(n))))
            }
        },
    )
}

/// An agent's identity and access: who owns it, how many actors it acted for, and its API keys
/// with the scopes it used and those granted but unused for the window (AISPM-KEY-002).
fn identity_section(tenant: &str, v: &Value) -> Markup {
    let scopes = |k: &Value, used: bool| -> String {
        k["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| (s["decisions"].as_i64().unwrap_or(0) > 0) == used)
            .filter_map(|s| {
                let name = s["scope"].as_str()?;
                Some(if s["granted"] == Value::Bool(false) {
                    format!("{name} (not granted)")
                } else {
                    name.to_owned()
                })
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let keys: Vec<Value> = v["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| {
            let unused: Vec<&str> = k["unused_scopes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["scope"].as_str())
                .collect();
            serde_json::json!({
                "key_id": k["key_id"],
                "registered_to": k["agent_id"],
                "decisions": k["decisions"],
                "last_used_at": k["last_used_at"],
                "used": scopes(k, true),
                "never_used": scopes(k, false),
                "unused": unused.join(", "),
                "finding": k["findings"]["unused_scopes"],
            })
        })
        .collect();
    let window_days = v["unused_scope_window_ms"].as_i64().unwrap_or(0) / 86_400_000;
    html! {
        h2 { "Identity and access" }
        p {
            "Owner: " strong { (text(&v["registration"]["owner"])) }
            " · acted for " (text(&v["actors"])) " actor(s)"
            @if v["many_actors"] == Value::Bool(true) {
                " · " strong { "unusually many" } " (at least " (text(&v["actors_per_agent"])) ")"
            }
            " · " (keys.len()) " API key(s)"
        }
        p { "Scopes granted to a key and not used within " (window_days)
            " days before the key's newest use are over-privilege (AISPM-KEY-002)." }
        (table(tenant, &serde_json::json!({"keys": keys}), "keys", &[
            ("Key", Cell::Text("key_id")),
            ("Registered to", Cell::Text("registered_to")),
            ("Decisions", Cell::Text("decisions")),
            ("Last use", Cell::Age("last_used_at")),
            ("Scopes used", Cell::Text("used")),
            ("Never used", Cell::Text("never_used")),
            ("Unused for the window", Cell::Text("unused")),
            ("Finding", Cell::Id("finding")),
        ], |_| String::new()))
    }
}

/// A row found by id (evidence, control, validation…) shown field by field.
pub(crate) fn row(chrome: &Chrome<'_>, tenant: &str, kind: &str, id: &str, v: &Value) -> Markup {
    layout(
        id,
        chrome,
        html! {
            h1 { (kind) " " code { (id) } }
            @if kind == "Control" {
                p { a href={ "/t/" (encode(tenant)) "/evidence?control=" (encode(id)) } { "evidence from its decisions →" } }
                (approval_months(tenant, v))
            }
            (fields(tenant, v))
        },
    )
}

/// A control's requests for approval by calendar month (its row's `approvals`), newest first.
fn approval_months(tenant: &str, v: &Value) -> Markup {
    let months: Vec<&Value> = v["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .collect();
    let n = |m: &Value, f: &str| m[f].as_i64().unwrap_or(0);
    html! {
        @if !months.is_empty() {
            h2 { "Requests for approval by month" }
            p { "By the month (UTC) of the request, each counted by its first answer. "
                a href={ "/t/" (encode(tenant)) "/approval-stats?control=" (encode(v["control_id"].as_str().unwrap_or(""))) } { "per agent →" } }
            table {
                thead { tr { th { "Month" } th { "Requested" } th { "Granted" } th { "Denied" } th { "Pending" } } }
                tbody {
                    @for m in months {
                        tr {
                            td { (text(&m["month"])) }
                            td { (n(m, "requested")) }
                            td { (n(m, "granted")) }
                            td { (n(m, "denied")) }
                            td { ((n(m, "requested") - n(m, "granted") - n(m, "denied")).max(0)) }
                        }
                    }
                }
            }
        }
    }
}

/// An id no view holds a row for: what was searched.
pub(crate) fn unresolved(chrome: &Chrome<'_>, tenant: &str, id: &str, searched: &[&str]) -> Markup {
    layout(
        id,
        chrome,
        html! {
            h1 { "No row named " code { (id) } }
            p { "Searched the tenant's " (searched.join(", ")) "." }
            p { a href={ "/t/" (encode(tenant)) } { "Back to the overview" } }
        },
    )
}

/// The tenant's validations, with their proof.
pub(crate) fn validations(chrome: &Chrome<'_>, tenant: &str, v: &Value) -> Markup {
    layout(
        "Validations",
        chrome,
        html! {
            h1 { "Validations of " (tenant) }
            table {
                thead { tr { th { "Check" } th { "Environment" } th { "Subject" } th { "Result" } th { "Signature" } th { "Asserted by" } th { "Validated" } th { "Evidence" } } }
                tbody {
                    @for r in v["validations"].as_array().into_iter().flatten() {
                        tr {
                            td { (text(&r["check_kind"])) }
                            td { (text(&r["environment"])) }
                            td { (text(&r["subject"])) }
                            td { (text(&r["result"])) }
                            td { (text(&r["signature_state"])) }
                            td { (text(&r["asserted_by"])) }
                            td { (age(&r["validated_at"])) }
                            td { @if let Some(e) = r["evidence_id"].as_str() { (id_link(tenant, e)) } }
                        }
                    }
                }
            }
        },
    )
}

/// The report center: packets, their delivery, and the form to request one.
pub(crate) fn reports(
    chrome: &Chrome<'_>,
    tenant: &str,
    list: &Value,
    may_request: bool,
    notice: Option<&str>,
) -> Markup {
    layout(
        "Reports",
        chrome,
        html! {
            h1 { "Reports of " (tenant) }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            @if may_request {
                form method="post" action={ "/t/" (encode(tenant)) "/reports" } {
                    input type="hidden" name="csrf" value=(chrome.csrf.unwrap_or(""));
                    label { "Type "
                        select name="type" {
                            @for t in ["production_readiness", "blockers_digest", "coverage_findings", "cso"] {
                                option value=(t) { (t) }
                            }
                        }
                    }
                    label { "As of (optional, RFC 3339) "
                        input type="text" name="as_of" placeholder="2026-09-30T23:59:59.999Z";
                    }
                    button type="submit" { "Generate and deliver" }
                }
            } @else {
                p.small { "Your token has no reports scope: it can read packets but not request one." }
            }
            table {
                thead { tr { th { "Report" } th { "Type" } th { "Created" } th { "As of" } th { "Delivery" } th { "Attempts" } th { "Packet sha256" } } }
                tbody {
                    @for r in list["reports"].as_array().into_iter().flatten() {
                        tr {
                            td { code { (text(&r["id"])) } }
                            td { (text(&r["type"])) }
                            td { (age(&r["created_at"])) }
                            td { @if r["as_of"].is_string() { (text(&r["as_of"])) } @else { "now" } }
                            td { (text(&r["status"])) }
                            td { (text(&r["attempts"])) }
                            td { code.small { (text(&r["packet_sha256"])) } }
                        }
                    }
                }
            }
            @if let Some(next) = list["next_cursor"].as_str() {
                p { a href={ "/t/" (encode(tenant)) "/reports?before=" (encode(next)) } { "older reports →" } }
            }
            p.small { "Verify a packet against the reporter's pinned key: "
                code { "minisign -Vm <id>.zip -P <pinned key>" } }
        },
    )
}
