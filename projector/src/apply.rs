//! Applying one event: update the aggregates it touches (commutatively) and mark the rows that
//! derive from them dirty. Nothing here reads a clock.

use crate::batch::Overlay;
use crate::error::Result;
use crate::rules::{self, On, Rule, Settings};
use crate::state::*;
use aispm_schemas::*;
use std::collections::BTreeSet;

/// An input event of any type.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    Decision(DecisionEvent),
    Approval(ApprovalEvent),
    Registry(RegistryEvent),
    Delivery(ReportDeliveryEvent),
}

impl Event {
    pub(crate) fn tenant_id(&self) -> &str {
        match self {
            Event::Decision(e) => &e.tenant_id,
            Event::Approval(e) => &e.tenant_id,
            Event::Registry(e) => &e.tenant_id,
            Event::Delivery(e) => &e.tenant_id,
        }
    }

    pub(crate) fn event_id(&self) -> &str {
        match self {
            Event::Decision(e) => &e.event_id,
            Event::Approval(e) => &e.event_id,
            Event::Registry(e) => &e.event_id,
            Event::Delivery(e) => &e.event_id,
        }
    }

    pub(crate) fn occurred_at(&self) -> Timestamp {
        match self {
            Event::Decision(e) => e.occurred_at,
            Event::Approval(e) => e.occurred_at,
            Event::Registry(e) => e.occurred_at,
            Event::Delivery(e) => e.occurred_at,
        }
    }

    pub(crate) fn validate(&self) -> Vec<FieldError> {
        match self {
            Event::Decision(e) => e.validate(),
            Event::Approval(e) => e.validate(),
            Event::Registry(e) => e.validate(),
            Event::Delivery(e) => e.validate(),
        }
    }
}

/// One more (`delta` 1) or one fewer (-1) pending request of `agent` under `control`: kept by
/// control on the agent, whose decisions derive AISPM-APR-002 of those pairs again; that
/// finding of the pair is derived again now.
fn pending_changed(
    ov: &mut Overlay<'_>,
    tenant: &str,
    agent: &str,
    control: &str,
    delta: i64,
) -> Result<()> {
    ov.update(
        tenant,
        Tag::Asset,
        &format!("agent/{agent}"),
        |a: &mut AssetAgg| {
            let n = a.pending.entry(control.to_owned()).or_default();
            *n += delta;
            if *n <= 0 {
                a.pending.remove(control);
            }
        },
    )?;
    rules::fire(ov, tenant, On::Pending, &finding_subject(&[agent, control]));
    Ok(())
}

/// How a decision moved its agent's clock, the newest decision, which judges the agent's
/// pending requests (AISPM-APR-002).
struct PendingClock {
    before: Option<i64>,
    after: i64,
    /// Every control with a pending request of the agent, when all its pairs' rows changed.
    every_pair: Option<Vec<String>>,
    /// Whether the agent had a request pending as its clock moved. Without one, the move
    /// makes none overdue: a request added later in the batch marks its pair dirty itself
    /// (`pending_changed`), so [`settle`] need not read the agent's requests for this move.
    any_pending: bool,
}

impl PendingClock {
    /// Marks dirty the pending findings of all of the agent's pairs when their rows changed
    /// otherwise, and notes the move of the clock for [`settle`].
    fn moved(self, ov: &mut Overlay<'_>, t: &str, agent: &str) {
        for control in self.every_pair.into_iter().flatten() {
            rules::fire(ov, t, On::Pending, &finding_subject(&[agent, &control]));
        }
        if self.any_pending && self.before.is_none_or(|b| b < self.after) {
            ov.clocks
                .entry((t.to_owned(), agent.to_owned()))
                .and_modify(|(_, after)| *after = (*after).max(self.after))
                .or_insert((self.before, self.after));
        }
    }
}

/// What a batch's events leave to its end: AISPM-APR-002 of the pairs with a request that the
/// moves of their agent's clock made overdue, one range read of [`Tag::PendingByAgent`] per
/// agent (from the deadline before the batch's first move to the one after its last), not one
/// per decision; none while that range lies before the agent's next request as an earlier
/// read of the epoch found it (`Overlay::marks_passed`). An agent with requests pending under many controls so costs only the requests
/// that became overdue: a pair's row does not name the clock itself.
///
/// Reading once at the end sees the requests the batch added and not those it answered; a
/// request added or answered in the batch marked its pair dirty itself (`pending_changed`), so
/// the rows derived are those a read per decision would have derived. A move while the agent
/// had no request pending is not noted at all (`PendingClock::any_pending`): it made none
/// overdue.
pub(crate) fn settle(ov: &mut Overlay<'_>, s: &Settings) -> Result<()> {
    let deadline = |clock: i64| overdue_before(s.approval_decision_ms, clock);
    // In any order: the pairs are marked in a set, and the dirty rows derived in key order.
    for ((t, agent), (before, after)) in std::mem::take(&mut ov.clocks) {
        let prefix = format!("{agent}\0");
        let start = before.map_or_else(
            || prefix.clone(),
            |b| pending_by_agent_before(&agent, deadline(b)),
        );
        let end = pending_by_agent_before(&agent, deadline(after));
        if start >= end {
            continue;
        }
        let ids = ov.marks_passed(&t, Tag::PendingByAgent, &prefix, &start, &end)?;
        let controls: BTreeSet<&str> = ids
            .iter()
            .filter_map(|id| pending_by_agent_control(&id[prefix.len()..]))
            .collect();
        for control in controls {
            rules::fire(ov, &t, On::Pending, &finding_subject(&[&agent, control]));
        }
    }
    Ok(())
}

/// An agent's risk factors changed (its registration, data classes, privileged actions or
/// reach): every finding whose risk reads them is derived again.
fn agent_risk_changed(ov: &mut Overlay<'_>, tenant: &str, agent: &str, findings: BTreeSet<String>) {
    rules::fire(ov, tenant, On::RiskOf(CoverageKind::Agent), agent);
    for id in findings {
        ov.dirty(tenant, ViewName::Findings, id);
    }
}

/// Notes that finding `id` is about `agent` (and a control), so that it is derived again when
/// the agent's risk factors change.
fn agent_finding(ov: &mut Overlay<'_>, tenant: &str, agent: &str, id: &str) -> Result<()> {
    ov.update(
        tenant,
        Tag::Asset,
        &format!("agent/{agent}"),
        |a: &mut AssetAgg| {
            if !a.findings.contains(id) {
                a.findings.insert(id.to_owned());
            }
        },
    )
}

/// Applies one (new, valid) event, asserted by principal `by` (the record's `aispm.principal`
/// header: ingest's token name, or the reporter), which the rows it shapes keep as
/// `asserted_by`.
pub(crate) fn apply(
    ov: &mut Overlay<'_>,
    event: &Event,
    by: Option<&str>,
    s: &Settings,
) -> Result<()> {
    match event {
        Event::Decision(d) => decision(ov, d, by, s),
        Event::Approval(a) => approval(ov, a, by),
        Event::Registry(r) => registry(ov, r, by),
        Event::Delivery(d) => delivery(ov, d, by),
    }
}

/// The coverage asset ids a decision touches.
fn covered(d: &DecisionEvent) -> Vec<(CoverageKind, String)> {
    let mut out = vec![(CoverageKind::Agent, d.agent_id.clone())];
    let opt = [
        (CoverageKind::Repo, &d.repo),
        (CoverageKind::Workflow, &d.workflow),
        (CoverageKind::McpServer, &d.mcp_server),
        (CoverageKind::ModelEndpoint, &d.model_endpoint),
    ];
    out.extend(
        opt.into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k, v))),
    );
    if let (Some(server), Some(tool)) = (&d.mcp_server, &d.mcp_tool) {
        out.push((CoverageKind::McpTool, format!("{server}/{tool}")));
    }
    out.push((CoverageKind::ActionPath, d.action_kind.as_str().to_owned()));
    out
}

/// What a decision links its agent to ([`RELATIONS`]): the actor it acted for and the tool,
/// model endpoint, repo and workflow it used.
fn links(d: &DecisionEvent) -> Vec<(&'static str, String)> {
    let mut out = vec![("actor", d.actor.clone())];
    if let (Some(server), Some(tool)) = (&d.mcp_server, &d.mcp_tool) {
        out.push(("mcp_tool", format!("{server}/{tool}")));
    }
    let opt = [
        ("model_endpoint", &d.model_endpoint),
        ("repo", &d.repo),
        ("workflow", &d.workflow),
    ];
    out.extend(
        opt.into_iter()
            .filter_map(|(r, v)| v.clone().map(|v| (r, v))),
    );
    if let Some(key) = &d.api_key_id {
        out.push(("api_key", key.clone()));
        out.extend(
            d.scopes_used
                .iter()
                .map(|s| ("scope", format!("{key}/{s}"))),
        );
    }
    out
}

/// A decision event: what it says about the assets it names, the links and keys it used, its
/// agent's runtime signals, its control, a request for approval, the findings it raises
/// itself, a break-glass exception and the data it sent where: each a step below, in this
/// order (a step may read what an earlier one wrote for the same event).
fn decision(ov: &mut Overlay<'_>, d: &DecisionEvent, by: Option<&str>, s: &Settings) -> Result<()> {
    let at: Stamp = (d.occurred_at.0, d.event_id.clone());
    let linked = links(d);
    assets(ov, d, &at, &linked)?;
    usage(ov, d, &at, linked)?;
    runtime_signals(ov, d, s)?;
    let control = control(ov, d, &at)?;
    if d.verdict == Verdict::RequireApproval {
        approval_request(ov, d, &at, &control)?;
    }
    raised(ov, d, &at, by)?;
    if d.verdict == Verdict::BreakGlass {
        break_glass(ov, d, &at, by)?;
    }
    data_exposure(ov, d, &at)
}

/// Each asset the decision names (`covered`): its facts, its coverage row, and the findings
/// about it that those facts decide.
fn assets(
    ov: &mut Overlay<'_>,
    d: &DecisionEvent,
    at: &Stamp,
    linked: &[(&'static str, String)],
) -> Result<()> {
    let t = d.tenant_id.as_str();
    let privileged = risk::privileged_action(d.action_kind.as_str());
    for (kind, id) in covered(d) {
        let key = format!("{kind}/{id}");
        let (signalled, risk_changed, clock, counts_only) =
            ov.update(t, Tag::Asset, &key, |a: &mut AssetAgg| {
                // What this asset's findings' risk reads from it (the registration aside): grows
                // only, so a change is a new data class, privileged action kind or reach event.
                let mut risk_changed = false;
                let window =
                    |a: &AssetAgg| a.last_decision.as_ref().map(|l| risk::reach_since(l.0));
                let window_before = window(a);
                let clock_before = a.last_decision.as_ref().map(|l| l.0);
                let environments_before = a.environments.len();
                let counts_only = !a.named_moves_state(d, at);
                a.named_by(d, at);
                for class in &d.data_classes {
                    if !a.data_classes.contains(class) {
                        a.data_classes.insert(class.clone());
                        risk_changed = true;
                    }
                }
                if privileged && !a.privileged_actions.contains(d.action_kind.as_str()) {
                    a.privileged_actions
                        .insert(d.action_kind.as_str().to_owned());
                    risk_changed = true;
                }
                if kind == CoverageKind::Agent {
                    let newest = a.last_decision.as_ref().map_or(at.0, |l| l.0);
                    for (relation, target) in linked {
                        if REACH_RELATIONS.contains(relation) {
                            risk_changed |= a.reached(relation, target, at.0, newest);
                        }
                    }
                    // The window moved to a new day: targets may have left it.
                    risk_changed |= window(a) != window_before;
                }
                let changed = risk_changed.then(|| a.findings.clone());
                let signalled: Vec<String> = a.signals.keys().cloned().collect();
                let clock = PendingClock {
                    before: clock_before,
                    after: a.last_decision.as_ref().map_or(at.0, |l| l.0),
                    // AISPM-APR-002's rows name the agent's environments: all of them change.
                    every_pair: (a.environments.len() != environments_before)
                        .then(|| a.pending.keys().cloned().collect()),
                    any_pending: !a.pending.is_empty(),
                };
                (signalled, changed, clock, counts_only)
            })?;
        rules::fire_named(ov, t, kind, (&id, &key), counts_only)?;
        ov.dirty_as(t, ViewName::Coverage, key, counts_only);
        match kind {
            CoverageKind::Agent => {
                // A signal's row names the agent's newest decisions: derived again with each.
                // Its state reads the agent's environments besides the signal's own facts
                // (which `runtime_signals` marks when they change).
                for rule in signalled {
                    ov.dirty_as(t, ViewName::Findings, format!("{rule}:{id}"), counts_only);
                }
                if let Some(findings) = risk_changed {
                    agent_risk_changed(ov, t, &id, findings);
                }
                // Its newest decision is the clock of its pending requests (AISPM-APR-002).
                clock.moved(ov, t, &id);
            }
            _ if risk_changed.is_some() => rules::fire(ov, t, On::RiskOf(kind), &id),
            _ => {}
        }
    }

    Ok(())
}

/// The links the decision used (agent to tool, model, repo, workflow, key and scope), and the
/// API key's use of each scope (AISPM-KEY-002).
fn usage(
    ov: &mut Overlay<'_>,
    d: &DecisionEvent,
    at: &Stamp,
    linked: Vec<(&'static str, String)>,
) -> Result<()> {
    let t = d.tenant_id.as_str();
    for (relation, target) in linked {
        let id = link_id(&d.agent_id, relation, &target);
        ov.update(t, Tag::Link, &id, |l: &mut Usage| l.count(at, d.synthetic))?;
    }

    // The API key it used: its use, and each scope's newest use (AISPM-KEY-002).
    if let Some(key) = &d.api_key_id {
        ov.update(
            t,
            Tag::Asset,
            &format!("api_key/{key}"),
            |a: &mut AssetAgg| {
                a.named_by(d, at);
                for scope in &d.scopes_used {
                    a.reached(KEY_SCOPES, scope, at.0, at.0);
                }
            },
        )?;
        rules::fire(ov, t, On::KeyUsed, key);
    }

    Ok(())
}

/// The runtime signals: an agent's decisions per minute of event time. Every count only
/// grows, so each threshold is crossed exactly once per minute whatever the order, and the
/// minutes each signal fired are order-free.
fn runtime_signals(ov: &mut Overlay<'_>, d: &DecisionEvent, s: &Settings) -> Result<()> {
    let t = d.tenant_id.as_str();
    let minute = d.occurred_at.0.div_euclid(60_000) * 60_000;
    let denied = d.verdict == Verdict::Deny;
    let call = call_hash(
        d.action_kind.as_str(),
        d.mcp_server.as_deref().zip(d.mcp_tool.as_deref()),
        &d.target,
    );
    let minute_counts = ov.update(
        t,
        Tag::Rate,
        &format!("{}@{minute}", d.agent_id),
        |r: &mut RateAgg| {
            r.n += 1;
            if denied {
                r.denied += 1;
            }
            let c = r.calls.entry(call).or_default();
            let call_before = (c.attempts, c.denied);
            c.attempts += 1;
            if denied {
                c.denied += 1;
            }
            rules::Minute {
                decisions: r.n,
                denied: r.denied,
                this_denied: denied,
                call_before,
                call: (c.attempts, c.denied),
            }
        },
    )?;
    for rule in rules::crossed(&minute_counts, s) {
        ov.update(
            t,
            Tag::Asset,
            &format!("agent/{}", d.agent_id),
            |a: &mut AssetAgg| {
                let sig = a.signals.entry(rule.id.to_owned()).or_default();
                sig.minutes += 1;
                min_opt(&mut sig.first, minute);
                max_opt(&mut sig.last, minute);
            },
        )?;
        ov.dirty(t, ViewName::Findings, rules::finding_id(rule, &d.agent_id));
    }

    Ok(())
}

/// The control the decision ran under: its counts per mode and environment, policies and
/// newest decisions; the control's key.
fn control(ov: &mut Overlay<'_>, d: &DecisionEvent, at: &Stamp) -> Result<String> {
    let t = d.tenant_id.as_str();
    let control = d.control_key();
    let counts_only = ov.update(t, Tag::Control, &control, |c: &mut ControlAgg| {
        let counts_only = !c.decision_moves_state(d, at);
        c.decided(d, at);
        counts_only
    })?;
    ov.dirty_as(t, ViewName::Controls, control.clone(), counts_only);
    rules::fire_control(ov, t, &control, counts_only)?;

    Ok(control)
}

/// A request for approval: counted for its agent under its control, pending until a grant or
/// a denial names it (which may have arrived first).
fn approval_request(
    ov: &mut Overlay<'_>,
    d: &DecisionEvent,
    at: &Stamp,
    control: &str,
) -> Result<()> {
    let t = d.tenant_id.as_str();
    let request = Request {
        control: control.to_owned(),
        agent: d.agent_id.clone(),
        at: at.clone(),
    };
    let answer = ov.update(t, Tag::Decision, &d.event_id, |f: &mut DecisionFacts| {
        f.request = Some(request.clone());
        f.answer.clone()
    })?;
    let pair = pair_id(control, &d.agent_id);
    ov.update(t, Tag::ApprovalStats, &pair, |s: &mut ApprovalStats| {
        s.requested += 1;
        latest(&mut s.last_request, at);
        if let Some(a) = &answer {
            s.count(&request, a, 1);
        }
    })?;
    ov.update(t, Tag::Control, control, |c: &mut ControlAgg| {
        c.approval_requested(at.0);
        if let Some(a) = &answer {
            c.approval_answered(at.0, a, 1);
        }
    })?;
    // Its month's counts may leave zero: derived in this batch whatever `control` judged.
    ov.dirty(t, ViewName::Controls, control);
    if answer.is_none() {
        ov.mark(t, Tag::Pending, &pending_id(control, &d.agent_id, at));
        let by_agent = pending_by_agent_id(control, &d.agent_id, at);
        ov.mark(t, Tag::PendingByAgent, &by_agent);
        pending_changed(ov, t, &d.agent_id, control, 1)?;
    }
    // The pair's findings that read its pending requests are about the agent: noted on it.
    let subject = d.finding_subject();
    for l in rules::reading(On::Pending) {
        let id = rules::finding_id(l.rule, &subject);
        agent_finding(ov, t, &d.agent_id, &id)?;
        ov.dirty(t, ViewName::Findings, id);
    }
    Ok(())
}

/// The findings the decision raises itself (`rules::raised_by`: a high-risk action allowed
/// without approval, one without evidence), and its evidence.
fn raised(ov: &mut Overlay<'_>, d: &DecisionEvent, at: &Stamp, by: Option<&str>) -> Result<()> {
    let t = d.tenant_id.as_str();
    let high = matches!(d.risk, Risk::High | Risk::Critical);
    // Event-raised findings are about the agent and the control it acted under: one row per
    // pair, every decision an occurrence of it.
    let pair = d.finding_subject();
    for (rule, cleared_by_approval) in rules::raised_by(d) {
        let id = raise(ov, t, rule, &pair, at, d.environment)?;
        agent_finding(ov, t, &d.agent_id, &id)?;
        if !cleared_by_approval {
            continue;
        }
        // An approval granted for this decision (before or after it arrives) clears its
        // occurrence: the pair is counted here or in `approval`, whichever comes second.
        let approvals = ov.update(t, Tag::Decision, &d.event_id, |f: &mut DecisionFacts| {
            f.raised = Some(id.clone());
            f.approvals.clone()
        })?;
        if !approvals.is_empty() {
            ov.update(t, Tag::Finding, &id, |f: &mut FindingFacts| {
                f.cleared += 1;
                for a in &approvals {
                    keep_newest(&mut f.cleared_ids, a);
                }
            })?;
            // A cleared occurrence moves the row's state, whatever `raise` judged.
            ov.dirty(t, ViewName::Findings, id);
        }
    }

    if let Some(e) = &d.evidence {
        let carrier = Carrier {
            at,
            by,
            environment: Some(d.environment),
            synthetic: d.synthetic,
            action_kind: Some(d.action_kind.as_str()),
            high_risk: high,
            claim: None,
            agent_id: Some(d.agent_id.as_str()),
            control_id: d.control_id.as_deref(),
        };
        record_evidence(ov, t, e, &carrier)?;
    }
    Ok(())
}

/// A break-glass decision: the exception it invokes.
fn break_glass(
    ov: &mut Overlay<'_>,
    d: &DecisionEvent,
    at: &Stamp,
    by: Option<&str>,
) -> Result<()> {
    let t = d.tenant_id.as_str();
    let covers = ov.update(t, Tag::Exception, &d.event_id, |x: &mut ExceptionAgg| {
        x.break_glass = true;
        min_opt(&mut x.invoked_at, at.0);
        lww(
            &mut x.grant,
            at,
            Grant {
                decision_id: Some(d.event_id.clone()),
                control_id: d.control_id.clone(),
                actor: Some(d.actor.clone()),
                asserted_by: by.map(str::to_owned),
                ..Grant::default()
            },
        );
        keep_newest(&mut x.ids, at);
        x.covers.clone()
    })?;
    exception_dirty(ov, t, &d.event_id, &covers);
    Ok(())
}

/// The data classes the decision sent: each model endpoint's exposure (AISPM-DATA-001's facts)
/// and the data-exposure map, each class to each destination per agent.
fn data_exposure(ov: &mut Overlay<'_>, d: &DecisionEvent, at: &Stamp) -> Result<()> {
    let t = d.tenant_id.as_str();
    if let Some(endpoint) = &d.model_endpoint {
        for class in &d.data_classes {
            let id = format!("{endpoint}/{class}");
            ov.update(t, Tag::Exposure, &id, |e: &mut ExposureAgg| {
                e.environments.insert(d.environment);
                e.decisions += 1;
                min_opt(&mut e.first, at.0);
                max_opt(&mut e.last, at.0);
                keep_newest(&mut e.ids, at);
            })?;
            rules::fire(ov, t, On::Exposure, &id);
        }
    }

    // The data-exposure map: each class to each destination, per agent.
    // A class named twice in one decision counts once.
    let classes: BTreeSet<&String> = d.data_classes.iter().collect();
    let destinations = [
        (DESTINATIONS[0], &d.model_endpoint),
        (DESTINATIONS[1], &d.mcp_tool),
    ];
    for (kind, destination) in destinations {
        let Some(destination) = destination else {
            continue;
        };
        for class in &classes {
            let id = flow_id(class, kind, destination, &d.agent_id);
            ov.update(t, Tag::Flow, &id, |f: &mut FlowAgg| {
                f.used.count(at, d.synthetic);
                if d.verdict == Verdict::Deny {
                    f.denied += 1;
                }
            })?;
        }
    }
    Ok(())
}

/// An event raises a finding directly: one more occurrence of the finding `(rule, subject)`,
/// indexed by event time (`Tag::Occurrence`). Returns the finding's id.
fn raise(
    ov: &mut Overlay<'_>,
    t: &str,
    rule: Rule,
    subject: &str,
    at: &Stamp,
    environment: Environment,
) -> Result<String> {
    let id = rules::finding_id(rule, subject);
    let counts_only = ov.update(t, Tag::Finding, &id, |f: &mut FindingFacts| {
        let counts_only = !f.raise_moves_state(at, environment) && !rules::trigger_moves(f);
        f.raised(at, environment);
        counts_only
    })?;
    ov.mark(t, Tag::Occurrence, &occurrence_id(&id, at));
    ov.dirty_as(t, ViewName::Findings, id.clone(), counts_only);
    Ok(id)
}

/// The event carrying an evidence item, as far as the evidence row keeps it.
struct Carrier<'a> {
    /// Its `(occurred_at, event_id)`.
    at: &'a Stamp,
    /// The principal that asserted it.
    by: Option<&'a str>,
    /// The stage it counts for (`None`: none, e.g. delivery evidence).
    environment: Option<Environment>,
    synthetic: bool,
    action_kind: Option<&'a str>,
    /// A high or critical decision (missing evidence matters there).
    high_risk: bool,
    /// A validation's claim, which the evidence's signature covers.
    claim: Option<Claim>,
    /// The decision's agent and control (`None` for other carriers).
    agent_id: Option<&'a str>,
    control_id: Option<&'a str>,
}

impl<'a> Carrier<'a> {
    /// A carrier that is not a decision: real, no action kind, not high risk.
    fn other(at: &'a Stamp, by: Option<&'a str>, environment: Option<Environment>) -> Self {
        Carrier {
            at,
            by,
            environment,
            synthetic: false,
            action_kind: None,
            high_risk: false,
            claim: None,
            agent_id: None,
            control_id: None,
        }
    }
}

fn record_evidence(ov: &mut Overlay<'_>, t: &str, e: &Evidence, c: &Carrier<'_>) -> Result<()> {
    let at = c.at;
    let record = EvidenceRecord {
        asserted_by: c.by.map(str::to_owned),
        event_id: at.1.clone(),
        sha256: e.sha256.clone(),
        uri: e.uri.clone(),
        signature: e.signature.clone(),
        key_id: e.key_id.clone(),
        recorded_at: at.0,
        synthetic: c.synthetic,
        action_kind: c.action_kind.map(str::to_owned),
        high_risk: c.high_risk,
        environment: c.environment,
        claim: c.claim.clone(),
        agent_id: c.agent_id.map(str::to_owned),
        control_id: c.control_id.map(str::to_owned),
    };
    ov.update(t, Tag::Evidence, &e.evidence_id, |a: &mut EvidenceAgg| {
        lww(&mut a.record, at, record);
    })?;
    if let Some(key) = &e.key_id {
        ov.mark(t, Tag::EvidenceByKey, &format!("{key}\0{}", e.evidence_id));
    }
    evidence_dirty(ov, t, &e.evidence_id);
    Ok(())
}

fn evidence_dirty(ov: &mut Overlay<'_>, t: &str, evidence_id: &str) {
    ov.dirty(t, ViewName::Evidence, evidence_id.to_owned());
    rules::fire(ov, t, On::Evidence, evidence_id);
}

/// Marks every row derived from an exception aggregate: its own row, the findings about it,
/// and every finding it ever covered.
fn exception_dirty(ov: &mut Overlay<'_>, t: &str, id: &str, covers: &BTreeSet<String>) {
    ov.dirty(t, ViewName::Exceptions, id.to_owned());
    rules::fire(ov, t, On::Exception, id);
    for f in covers {
        ov.dirty(t, ViewName::Findings, f.clone());
    }
}

fn approval(ov: &mut Overlay<'_>, a: &ApprovalEvent, by: Option<&str>) -> Result<()> {
    use ApprovalKind::*;
    let t = a.tenant_id.as_str();
    let at: Stamp = (a.occurred_at.0, a.event_id.clone());
    ov.mark(t, Tag::Approval, &approval_index_id(&at));
    let note = |f: &mut FindingFacts| {
        keep_newest(&mut f.approval_ids, &at);
        lww(&mut f.asserted, &at, by.map(str::to_owned));
    };
    match a.kind {
        ApprovalGranted | ApprovalDenied => {
            let Some(decision) = &a.decision_id else {
                return Ok(());
            };
            let granted = a.kind == ApprovalGranted;
            let answer = Answer {
                at: at.clone(),
                granted,
            };
            let (first, raised, answered) =
                ov.update(t, Tag::Decision, decision, |d: &mut DecisionFacts| {
                    // The request's first answer, by event time: this one if it is earlier.
                    let before = d.answer.clone();
                    if d.answer.as_ref().is_none_or(|a| &answer < a) {
                        d.answer = Some(answer.clone());
                    }
                    let answered = d
                        .request
                        .clone()
                        .filter(|_| before != d.answer)
                        .map(|r| (r, before));
                    if granted {
                        let first = d.approvals.is_empty();
                        keep_newest(&mut d.approvals, &at);
                        (first, d.raised.clone(), answered)
                    } else {
                        lww(&mut d.denied, &at, a.actor.clone());
                        (false, None, answered)
                    }
                })?;
            if let Some((request, before)) = answered {
                let pair = pair_id(&request.control, &request.agent);
                ov.update(t, Tag::ApprovalStats, &pair, |s: &mut ApprovalStats| {
                    if let Some(b) = &before {
                        s.count(&request, b, -1);
                    }
                    s.count(&request, &answer, 1);
                })?;
                ov.update(t, Tag::Control, &request.control, |c: &mut ControlAgg| {
                    if let Some(b) = &before {
                        c.approval_answered(request.at.0, b, -1);
                    }
                    c.approval_answered(request.at.0, &answer, 1);
                })?;
                ov.dirty(t, ViewName::Controls, request.control.clone());
                if before.is_none() {
                    let id = pending_id(&request.control, &request.agent, &request.at);
                    ov.unmark(t, Tag::Pending, &id);
                    let by_agent =
                        pending_by_agent_id(&request.control, &request.agent, &request.at);
                    ov.unmark(t, Tag::PendingByAgent, &by_agent);
                    pending_changed(ov, t, &request.agent, &request.control, -1)?;
                }
            }
            // The decision raised a finding for lack of approval: this approval clears that
            // occurrence (counted once, by the decision's first approval).
            if let Some(finding) = raised {
                ov.update(t, Tag::Finding, &finding, |f: &mut FindingFacts| {
                    if first {
                        f.cleared += 1;
                    }
                    keep_newest(&mut f.cleared_ids, &at);
                })?;
                ov.dirty(t, ViewName::Findings, finding);
            }
        }
        ExceptionGranted | RiskAccepted => {
            let id = a.exception_id.clone().unwrap_or_else(|| a.event_id.clone());
            let covered = a.finding_id.clone().or_else(|| {
                a.control_id
                    .as_ref()
                    .map(|c| rules::finding_id(rules::SHADOW_CONTROL, c))
            });
            let covers = ov.update(t, Tag::Exception, &id, |x: &mut ExceptionAgg| {
                lww(
                    &mut x.grant,
                    &at,
                    Grant {
                        finding_id: a.finding_id.clone(),
                        control_id: a.control_id.clone(),
                        decision_id: a.decision_id.clone(),
                        owner: a.owner.clone(),
                        actor: Some(a.actor.clone()),
                        reason: a.reason.clone(),
                        expires_at: a.expires_at.map(|e| e.0),
                        asserted_by: by.map(str::to_owned),
                    },
                );
                x.covers.extend(covered.clone());
                keep_newest(&mut x.ids, &at);
                x.covers.clone()
            })?;
            exception_dirty(ov, t, &id, &covers);
            if let Some(finding) = covered {
                ov.update(t, Tag::Finding, &finding, |f: &mut FindingFacts| {
                    lww(&mut f.exception, &at, id.clone());
                    f.exceptions.insert(id.clone());
                    note(f);
                })?;
            }
        }
        ExceptionRevoked => {
            let Some(id) = &a.exception_id else {
                return Ok(());
            };
            let covers = ov.update(t, Tag::Exception, id, |x: &mut ExceptionAgg| {
                max_opt(&mut x.revoked_at, at.0);
                keep_newest(&mut x.ids, &at);
                x.covers.clone()
            })?;
            exception_dirty(ov, t, id, &covers);
        }
        BreakGlassInvoked | BreakGlassReviewed => {
            let Some(id) = a.exception_id.clone().or_else(|| a.decision_id.clone()) else {
                return Ok(());
            };
            let covers = ov.update(t, Tag::Exception, &id, |x: &mut ExceptionAgg| {
                x.break_glass = true;
                if a.kind == BreakGlassInvoked {
                    min_opt(&mut x.invoked_at, at.0);
                    lww(
                        &mut x.grant,
                        &at,
                        Grant {
                            decision_id: a.decision_id.clone(),
                            control_id: a.control_id.clone(),
                            actor: Some(a.actor.clone()),
                            owner: a.owner.clone(),
                            reason: a.reason.clone(),
                            asserted_by: by.map(str::to_owned),
                            ..Grant::default()
                        },
                    );
                } else {
                    lww(&mut x.reviewed, &at, a.actor.clone());
                }
                keep_newest(&mut x.ids, &at);
                x.covers.clone()
            })?;
            exception_dirty(ov, t, &id, &covers);
        }
        FindingAssigned | FindingResolved => {
            let Some(finding) = &a.finding_id else {
                return Ok(());
            };
            ov.update(t, Tag::Finding, finding, |f: &mut FindingFacts| {
                if a.kind == FindingAssigned {
                    if let Some(owner) = &a.owner {
                        lww(&mut f.owner, &at, owner.clone());
                    }
                    if let Some(due) = a.due_at {
                        lww(&mut f.due_at, &at, due.0);
                    }
                } else {
                    lww(&mut f.resolved, &at, a.reason.clone());
                }
                note(f);
            })?;
            ov.dirty(t, ViewName::Findings, finding.clone());
        }
    }
    Ok(())
}

fn registration(a: &Asset, by: Option<&str>) -> Registration {
    Registration {
        asserted_by: by.map(str::to_owned),
        retired: a.status == AssetStatus::Retired,
        owner: a.owner.clone(),
        trust: a.trust.map(|t| t.as_str().to_owned()),
        public: a.public,
        auth_required: a.auth_required,
        public_key: a.public_key.clone(),
        scopes: a.scopes.clone(),
        approved_data_classes: a.approved_data_classes.clone(),
        recipients: a.recipients.clone(),
        framework_mappings: a.framework_mappings.clone(),
        criticality: a.criticality,
        agent: (a.asset_kind == AssetKind::ApiKey)
            .then(|| a.attributes.get(KEY_AGENT_ATTRIBUTE).cloned())
            .flatten(),
    }
}

/// The registration attribute that names an API key's agent.
pub(crate) const KEY_AGENT_ATTRIBUTE: &str = "agent_id";

fn registry(ov: &mut Overlay<'_>, r: &RegistryEvent, by: Option<&str>) -> Result<()> {
    let t = r.tenant_id.as_str();
    let at: Stamp = (r.occurred_at.0, r.event_id.clone());
    if let Some(a) = &r.asset {
        if a.asset_kind == AssetKind::Control {
            ov.update(t, Tag::Control, &a.asset_id, |c: &mut ControlAgg| {
                lww(&mut c.registration, &at, registration(a, by));
            })?;
            ov.dirty(t, ViewName::Controls, a.asset_id.clone());
            // Its criticality is a risk factor of the control's findings.
            rules::fire(ov, t, On::Control, &a.asset_id);
            return Ok(());
        }
        let key = format!("{}/{}", a.asset_kind, a.asset_id);
        let findings = ov.update(t, Tag::Asset, &key, |agg: &mut AssetAgg| {
            lww(&mut agg.registration, &at, registration(a, by));
            if a.status == AssetStatus::Registered {
                min_opt(&mut agg.registered_since, at.0);
                for class in &a.approved_data_classes {
                    let since = agg.approved_since.entry(class.clone()).or_insert(at.0);
                    *since = (*since).min(at.0);
                }
            }
            for (rule, holds) in rules::flags(a.asset_kind) {
                agg.flags
                    .entry(rule.id.to_owned())
                    .or_default()
                    .observe(holds(a), &at);
            }
            agg.findings.clone()
        })?;
        let coverage = match a.asset_kind {
            AssetKind::Agent => Some(CoverageKind::Agent),
            AssetKind::Repo => Some(CoverageKind::Repo),
            AssetKind::Workflow => Some(CoverageKind::Workflow),
            AssetKind::McpServer => Some(CoverageKind::McpServer),
            AssetKind::McpTool => Some(CoverageKind::McpTool),
            AssetKind::ModelEndpoint => Some(CoverageKind::ModelEndpoint),
            _ => None,
        };
        if coverage.is_some() {
            ov.dirty(t, ViewName::Coverage, key);
        }
        rules::fire(ov, t, On::Registered(a.asset_kind), &a.asset_id);
        match a.asset_kind {
            // Its criticality, exposure and scopes are risk factors of its findings.
            AssetKind::Agent => agent_risk_changed(ov, t, &a.asset_id, findings),
            // The classes it approves: each class it was sent.
            AssetKind::ModelEndpoint => {
                for exposure in ov.ids_with_prefix(t, Tag::Exposure, &format!("{}/", a.asset_id))? {
                    rules::fire(ov, t, On::Exposure, &exposure);
                }
            }
            AssetKind::ApiKey => {
                if let Some(agent) = a.attributes.get(KEY_AGENT_ATTRIBUTE) {
                    ov.mark(t, Tag::KeyOf, &format!("{agent}\0{}", a.asset_id));
                }
            }
            AssetKind::TrustRoot => {
                for entry in
                    ov.ids_with_prefix(t, Tag::EvidenceByKey, &format!("{}\0", a.asset_id))?
                {
                    if let Some((_, evidence)) = entry.split_once('\0') {
                        evidence_dirty(ov, t, evidence);
                    }
                }
                // A validator key's validations: few rows per tenant (one per check,
                // environment and subject), so all of them.
                for key in ov.ids_with_prefix(t, Tag::Validation, "")? {
                    ov.dirty(t, ViewName::Validations, key);
                }
            }
            _ => {}
        }
    }
    if let Some(v) = &r.validation {
        // The latest result per check, environment (stage) and subject.
        let key = format!(
            "{}/{}/{}",
            v.check_kind,
            v.environment.map_or("-", Environment::as_str),
            v.subject.as_deref().unwrap_or("-")
        );
        let row = ValidationRow {
            check_kind: v.check_kind.as_str().to_owned(),
            subject: v.subject.clone(),
            result: v.result.as_str().to_owned(),
            evidence_id: v.evidence.as_ref().map(|e| e.evidence_id.clone()),
            validated_at: r.occurred_at,
            event_id: r.event_id.clone(),
            detail: v.detail.clone(),
            asserted_by: by.map(str::to_owned),
            environment: v.environment,
            // Derived from the signature and the tenant's validator keys.
            signature_state: SignatureState::Unsigned,
            key_id: v.evidence.as_ref().and_then(|e| e.key_id.clone()),
        };
        let claim = Claim {
            event_id: r.event_id.clone(),
            check_kind: v.check_kind.as_str().to_owned(),
            environment: v.environment.map_or("", Environment::as_str).to_owned(),
            subject: v.subject.clone(),
            result: v.result.as_str().to_owned(),
            occurred_at: r.occurred_at.0,
        };
        let record = ValidationRecord {
            row,
            claim: claim.clone(),
            sha256: v.evidence.as_ref().map(|e| e.sha256.clone()),
            signature: v.evidence.as_ref().and_then(|e| e.signature.clone()),
        };
        ov.update(
            t,
            Tag::Validation,
            &key,
            |slot: &mut Option<Lww<ValidationRecord>>| {
                lww(slot, &at, record);
            },
        )?;
        ov.dirty(t, ViewName::Validations, key);
        if let Some(e) = &v.evidence {
            let carrier = Carrier {
                claim: Some(claim),
                ..Carrier::other(&at, by, v.environment)
            };
            record_evidence(ov, t, e, &carrier)?;
        }
    }
    Ok(())
}

fn delivery(ov: &mut Overlay<'_>, d: &ReportDeliveryEvent, by: Option<&str>) -> Result<()> {
    let t = d.tenant_id.as_str();
    let at: Stamp = (d.occurred_at.0, d.event_id.clone());
    let row = DeliveryRow {
        report_id: d.report_id.clone(),
        report_type: d.report_type.as_str().to_owned(),
        channel: d.channel.as_str().to_owned(),
        outcome: d.outcome.as_str().to_owned(),
        recipients: d.recipients.clone(),
        approved_recipients: d.approved_recipients,
        message_id: d.message_id.clone(),
        packet_sha256: d.packet_sha256.clone(),
        attempt: d.attempt,
        delivered_at: d.occurred_at,
        event_id: d.event_id.clone(),
        evidence_id: d.evidence.as_ref().map(|e| e.evidence_id.clone()),
        error: d.error.clone(),
        asserted_by: by.map(str::to_owned),
    };
    // The latest attempt wins: by attempt number, then event time.
    let order: Stamp = (
        i64::from(d.attempt) << 44 | (d.occurred_at.0 & ((1 << 44) - 1)),
        d.event_id.clone(),
    );
    ov.update(
        t,
        Tag::Delivery,
        &d.report_id,
        |slot: &mut Option<Lww<DeliveryRow>>| {
            lww(slot, &order, row);
        },
    )?;
    ov.dirty(t, ViewName::ReportDeliveries, d.report_id.clone());
    if let Some(e) = &d.evidence {
        record_evidence(ov, t, e, &Carrier::other(&at, by, None))?;
    }
    Ok(())
}
