//! The finding rules: what each rule is (its metadata, the contract's catalog
//! [`aispm_schemas::rules`], which the reporter and the OCSF records read too), what makes its
//! row worth deriving again (its triggers), and when its finding holds (its condition). Each
//! rule's trigger and condition live in one file of this folder, beside the rules of the same
//! family; [`logics`] lists them, and the catalog test below checks that every rule of the
//! catalog has exactly one.
//!
//! `apply.rs` updates aggregates and says what changed, as a [`On`] and the subject it changed
//! for ([`fire`]); each rule lists the changes its condition reads. `derive.rs` derives a
//! finding's row, the same for every rule (status, resolution, SLA, exception, risk), around the
//! rule's [`Condition`].
//!
//! Adding a rule: its entry in the catalog (`schemas/src/rules.rs`: id, title, severity,
//! frameworks, class, remediation, subject), then its [`Logic`] in the file of its family here (a new
//! family: a new file, listed in `FAMILIES`). Nothing in `apply.rs` or `derive.rs` names a rule unless an event's own shape
//! needs it (an exception naming a control covers the control's finding).

pub(crate) use aispm_schemas::rules::*;

use crate::batch::Overlay;
use crate::error::Result;
use crate::state::{AssetAgg, ControlAgg, FindingFacts, Stamp, Tag};
use aispm_schemas::{Asset, AssetKind, CoverageKind, DecisionEvent, Environment, ViewName};
use std::collections::BTreeSet;
use std::sync::LazyLock;

mod approval;
mod control;
mod data;
mod endpoint;
mod evidence;
mod exception;
mod keys;
mod mcp;
mod owner;
mod shadow;
mod signals;

pub(crate) use keys::unused_scopes;

/// Tunables that shape findings (deterministic: same settings, same views).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Decisions per agent per minute above which the agent is runaway.
    pub runaway_per_minute: i64,
    /// Attempts of the same call (action kind, tool, target) in a minute that make a loop.
    pub loop_repeats: i64,
    /// Denied decisions of one agent in a minute that make a denial storm.
    pub denials_per_minute: i64,
    /// Attempts of a call denied at least once in a minute that make a retry burst.
    pub retries_per_minute: i64,
    /// A break-glass event reviewed this long or later after it was invoked (event time)
    /// raises a finding (`aispm_schemas::clock::review_in_time`).
    pub break_glass_review_ms: i64,
    /// How far `occurred_at` may lie after the record's timestamp.
    pub future_tolerance: std::time::Duration,
    /// A scope of an API key unused this long before the key's newest use raises
    /// AISPM-KEY-002.
    pub unused_scope_ms: i64,
    /// A request for approval still pending this long before its agent's newest decision
    /// raises AISPM-APR-002 (`aispm_schemas::clock::approval_overdue`, event time).
    pub approval_decision_ms: i64,
}

/// `--unused-scope-window`'s default: 30 days.
pub(crate) const DEFAULT_UNUSED_SCOPE_MS: i64 = 30 * DAY_MS;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            runaway_per_minute: 120,
            loop_repeats: 30,
            denials_per_minute: 20,
            retries_per_minute: 5,
            break_glass_review_ms: i64::try_from(
                aispm_schemas::clock::DEFAULT_BREAK_GLASS_REVIEW_WINDOW.as_millis(),
            )
            .unwrap_or(i64::MAX),
            future_tolerance: aispm_schemas::time::DEFAULT_FUTURE_TOLERANCE,
            unused_scope_ms: DEFAULT_UNUSED_SCOPE_MS,
            approval_decision_ms: i64::try_from(
                aispm_schemas::clock::DEFAULT_APPROVAL_DECISION_WINDOW.as_millis(),
            )
            .unwrap_or(i64::MAX),
        }
    }
}

/// What changed, for a subject in the form of the findings it concerns: `apply.rs` says it
/// ([`fire`]); a rule lists those its condition reads ([`Logic::on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum On {
    /// A decision named the asset (its coverage facts, newest decisions); subject: its id.
    Named(CoverageKind),
    /// A registration of the asset (or its retirement); subject: its id.
    Registered(AssetKind),
    /// What an agent's or an endpoint's risk reads from it changed: a data class or a
    /// privileged action seen first, its reach, its registration; subject: its id.
    RiskOf(CoverageKind),
    /// A decision under the control, or its registration; subject: the control's key.
    Control,
    /// A decision used the API key; subject: its id.
    KeyUsed,
    /// A decision sent a data class to a model endpoint, or the endpoint's approved classes
    /// changed; subject: `{endpoint}/{class}`.
    Exposure,
    /// An evidence item recorded, or a trust root that may have signed it registered; subject:
    /// its evidence id.
    Evidence,
    /// An exception or break-glass changed; subject: its id.
    Exception,
    /// A request for approval of the agent under the control added, answered or made overdue
    /// by the agent's newest decision; subject: `finding_subject([agent, control])`.
    Pending,
}

/// What a rule's condition is given.
pub(crate) struct Ctx<'a> {
    pub tenant: &'a str,
    pub rule: Rule,
    pub subject: &'a str,
    /// The finding's own facts (occurrences of an event-raised finding, triage).
    pub facts: &'a FindingFacts,
    pub settings: &'a Settings,
    /// Derives another finding of the tenant by id, for a condition that reads one
    /// (AISPM-EXC-001 reads the finding its exception covers): `derive::finding`.
    pub other: fn(&mut Overlay<'_>, &str, &str, &Settings) -> Result<Other>,
}

/// What a condition reads of another finding ([`Ctx::other`]).
#[derive(Debug)]
pub(crate) struct Other {
    /// It has a row.
    pub exists: bool,
    /// Its row is open.
    pub open: bool,
    /// When its condition last fired.
    pub last_trigger: i64,
    /// The newest event stamp behind it.
    pub stamp: Stamp,
}

impl Ctx<'_> {
    /// The asset key (`{kind}/{id}`) the finding is about; empty when it is about none.
    pub(crate) fn asset(&self) -> String {
        self.rule.asset_key(self.subject).unwrap_or_default()
    }
}

/// A rule's condition over its aggregates: whether its finding exists and holds, since when,
/// and the events behind it.
#[derive(Debug, Default)]
pub(crate) struct Condition {
    pub exists: bool,
    pub active: bool,
    pub opened_at: i64,
    pub last_trigger: i64,
    pub cleared_at: Option<i64>,
    pub ids: Vec<String>,
    pub occurrences: i64,
    /// The newest event stamp behind what the condition reads.
    pub stamp: Stamp,
    /// The newest occurrences (event time, id), oldest first: when a resolution is followed
    /// by new occurrences, the first of them reopened the finding.
    pub recent: Vec<Stamp>,
    /// The environments of the events behind it; empty: every stage.
    pub environments: BTreeSet<Environment>,
}

impl Condition {
    /// Not a finding, as of `stamp`.
    pub(crate) fn none(stamp: Stamp) -> Self {
        Condition {
            stamp,
            ..Condition::default()
        }
    }
}

/// The counts of one agent's minute of decisions after one more, what the runtime signals'
/// thresholds read ([`Logic::signal`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Minute {
    /// Decisions of the agent in the minute, this one included.
    pub decisions: i64,
    /// Of them denied.
    pub denied: i64,
    /// Whether this decision was denied.
    pub this_denied: bool,
    /// Attempts of this decision's call (action kind, tool, target) in the minute, and of them
    /// denied: before this decision and with it.
    pub call_before: (i64, i64),
    pub call: (i64, i64),
}

/// How one rule is raised and decided.
pub(crate) struct Logic {
    /// Its metadata, from the catalog.
    pub rule: Rule,
    /// The changes its condition reads: its row is derived again after each of them.
    pub on: &'static [On],
    /// Whether its finding holds.
    pub condition: fn(&mut Overlay<'_>, &Ctx<'_>) -> Result<Condition>,
    /// A rule decided by the registration of its asset (`Subject::Asset`): whether a
    /// registration makes it true. `apply.rs` keeps, per asset, when it last turned true and
    /// false (`AssetAgg::flags`), whatever order registrations arrive in.
    pub flag: Option<fn(&Asset) -> bool>,
    /// A rule decisions raise one by one ([`Rule::raised_by_events`]): whether this decision
    /// is an occurrence of it (about the decision's agent and control).
    pub raise: Option<fn(&DecisionEvent) -> bool>,
    /// An occurrence is cleared by an approval granted for its decision, before or after the
    /// decision arrives (one rule at most: a decision's facts keep one finding raised).
    pub cleared_by_approval: bool,
    /// A runtime signal (`SIGNALS`): whether this decision crossed its threshold in its
    /// agent's minute (once per minute: each count only grows).
    pub signal: Option<fn(&Minute, &Settings) -> bool>,
    /// Findings of this rule whose condition reads another finding, from that finding's facts
    /// (derived again when it changes).
    pub follows: Option<fn(&FindingFacts) -> Vec<String>>,
    /// On [`On::Named`]: whether, for the asset as it is after the decision, its row's state
    /// moves only when the asset's coverage row's state does (`AssetAgg::named_moves_state`).
    /// Then a decision that moves neither changes only the row's counts and newest
    /// decisions, and the row may wait for the epoch's end ([`fire_named`]).
    pub named_counts: Option<fn(&AssetAgg) -> bool>,
    /// On [`On::Control`]: whether, for the control as it is after a decision that moved only
    /// its counts (`ControlAgg::decision_moves_state`), the rule's row stays as it was but for
    /// its counts ([`fire_control`]).
    pub control_counts: Option<fn(&ControlAgg) -> bool>,
}

impl Logic {
    /// A rule with only triggers and a condition; the other fields are set where needed.
    pub(crate) const fn new(
        rule: Rule,
        on: &'static [On],
        condition: fn(&mut Overlay<'_>, &Ctx<'_>) -> Result<Condition>,
    ) -> Self {
        Logic {
            rule,
            on,
            condition,
            flag: None,
            raise: None,
            cleared_by_approval: false,
            signal: None,
            follows: None,
            named_counts: None,
            control_counts: None,
        }
    }
}

/// Every rule's logic, by family: each file here lists its own rules (`RULES`), so a rule
/// added to a family touches that file alone (and the catalog).
const FAMILIES: &[&[Logic]] = &[
    mcp::RULES,
    shadow::RULES,
    control::RULES,
    approval::RULES,
    exception::RULES,
    endpoint::RULES,
    keys::RULES,
    data::RULES,
    owner::RULES,
    evidence::RULES,
    signals::RULES,
];

/// Every rule's logic.
pub(crate) fn logics() -> impl Iterator<Item = &'static Logic> {
    FAMILIES.iter().flat_map(|family| family.iter())
}

/// Each change's rules' logics, computed once.
static BY_CHANGE: LazyLock<Vec<(On, Vec<&'static Logic>)>> = LazyLock::new(|| {
    let mut out: Vec<(On, Vec<&'static Logic>)> = Vec::new();
    for l in logics() {
        for on in l.on {
            match out.iter_mut().find(|(o, _)| o == on) {
                Some((_, rules)) => rules.push(l),
                None => out.push((*on, vec![l])),
            }
        }
    }
    out
});

/// The logic of a rule of the catalog.
pub(crate) fn logic(rule: Rule) -> Option<&'static Logic> {
    logics().find(|l| l.rule.id == rule.id)
}

/// The logics of the rules that read `change`.
pub(crate) fn reading(change: On) -> &'static [&'static Logic] {
    BY_CHANGE
        .iter()
        .find(|(o, _)| *o == change)
        .map_or(&[], |(_, rules)| rules.as_slice())
}

/// Marks dirty, in `tenant`, the finding about `subject` of every rule that reads `change`.
pub(crate) fn fire(ov: &mut Overlay<'_>, tenant: &str, change: On, subject: &str) {
    for l in reading(change) {
        ov.dirty(tenant, ViewName::Findings, finding_id(l.rule, subject));
    }
}

/// [`fire`] for a decision that named an asset of `kind` (`subject`, state key `asset`): when
/// it changed only the asset's running counts (`counts_only`), the rows of the rules whose
/// state then stays ([`Logic::named_counts`]) may wait for the epoch's end
/// (`Overlay::dirty_as`).
pub(crate) fn fire_named(
    ov: &mut Overlay<'_>,
    tenant: &str,
    kind: CoverageKind,
    (subject, asset): (&str, &str),
    counts_only: bool,
) -> Result<()> {
    let read = (Tag::Asset, asset, counts_only);
    fire_counted(ov, tenant, On::Named(kind), subject, read, |l| {
        l.named_counts
    })
}

/// [`fire`] for a decision counted under control `control`: when it changed only the
/// control's running counts (`counts_only`), the rows of the rules whose state then stays
/// ([`Logic::control_counts`]) may wait for the epoch's end (`Overlay::dirty_as`).
pub(crate) fn fire_control(
    ov: &mut Overlay<'_>,
    tenant: &str,
    control: &str,
    counts_only: bool,
) -> Result<()> {
    let read = (Tag::Control, control, counts_only);
    fire_counted(ov, tenant, On::Control, control, read, |l| l.control_counts)
}

/// [`fire`] for a change that moved only the running counts of aggregate `(tag, key)` when
/// `counts_only`: each rule's row whose state then stays (`stays`, asked of the aggregate as
/// it is now) goes to the epoch's end ([`Overlay::dirty_as`]), the others are derived now.
fn fire_counted<A>(
    ov: &mut Overlay<'_>,
    tenant: &str,
    change: On,
    subject: &str,
    (tag, key, counts_only): (Tag, &str, bool),
    stays: impl Fn(&Logic) -> Option<fn(&A) -> bool>,
) -> Result<()>
where
    A: serde::de::DeserializeOwned + serde::Serialize + Default + Send + 'static,
{
    for l in reading(change) {
        let id = finding_id(l.rule, subject);
        let waits = match stays(l) {
            Some(stays) if counts_only => {
                ov.with(tenant, tag, key, stays)?
                    && !ov.with(tenant, Tag::Finding, &id, trigger_moves)?
            }
            _ => false,
        };
        ov.dirty_as(tenant, ViewName::Findings, id, waits);
    }
    Ok(())
}

/// Whether one more trigger of a finding with these facts may move its row's state whatever
/// its rule's aggregate says: a resolution (a trigger after it reopens the finding, and its
/// SLA runs from there) or findings that read this one ([`followers`]: an exception's expiry
/// reads its last trigger), whose rows are derived from its derivation.
pub(crate) fn trigger_moves(f: &FindingFacts) -> bool {
    f.resolved.is_some() || !followers(f).is_empty()
}

/// The rules registrations of assets of `kind` decide.
pub(crate) fn flags(kind: AssetKind) -> impl Iterator<Item = (Rule, fn(&Asset) -> bool)> {
    logics().filter_map(move |l| match (l.flag, l.rule.subject) {
        (Some(f), Subject::Asset(k)) if k == kind => Some((l.rule, f)),
        _ => None,
    })
}

/// The rules a decision raises an occurrence of, and whether an approval clears it.
pub(crate) fn raised_by(d: &DecisionEvent) -> impl Iterator<Item = (Rule, bool)> + '_ {
    logics().filter_map(move |l| {
        l.raise
            .filter(|raise| raise(d))
            .map(|_| (l.rule, l.cleared_by_approval))
    })
}

/// The runtime signals a decision crossed the threshold of in its agent's minute.
pub(crate) fn crossed(m: &Minute, s: &Settings) -> Vec<Rule> {
    logics()
        .filter(|l| l.signal.is_some_and(|crossed| crossed(m, s)))
        .map(|l| l.rule)
        .collect()
}

/// The findings that read a finding with these facts ([`Logic::follows`]).
pub(crate) fn followers(facts: &FindingFacts) -> Vec<(ViewName, String)> {
    logics()
        .filter_map(|l| l.follows)
        .flat_map(|f| f(facts))
        .map(|id| (ViewName::Findings, id))
        .collect()
}

/// Whether finding `ctx.rule` about `ctx.subject` holds: its rule's condition (none for a rule
/// without logic, which the catalog test rules out).
pub(crate) fn condition(ov: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    match logic(ctx.rule) {
        Some(l) => (l.condition)(ov, ctx),
        None => Ok(Condition::default()),
    }
}

/// The newest of some stamps (`(0, "")` when there are none).
pub(crate) fn newest<'a>(stamps: impl IntoIterator<Item = Option<&'a Stamp>>) -> Stamp {
    stamps
        .into_iter()
        .flatten()
        .max()
        .cloned()
        .unwrap_or((0, String::new()))
}

/// A finding events raise (`apply::raise`): open while some occurrence is not cleared.
pub(crate) fn raised_condition(_: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    let f = ctx.facts;
    let all_cleared = f.raises > 0 && f.cleared >= f.raises;
    let mut ids = crate::state::ids(&f.raise_ids);
    ids.extend(crate::state::ids(&f.cleared_ids));
    Ok(Condition {
        exists: f.raises > 0,
        active: f.raises > 0 && !all_cleared,
        opened_at: f.first_raise.unwrap_or(0),
        last_trigger: f.last_raise.unwrap_or(0),
        cleared_at: all_cleared
            .then(|| f.cleared_ids.last().map(|c| c.0))
            .flatten(),
        ids,
        occurrences: f.raises,
        stamp: newest([f.raise_ids.last(), f.cleared_ids.last()]),
        recent: f.raise_ids.clone(),
        environments: f.environments.clone(),
    })
}

/// A rule a registration decides ([`Logic::flag`]), from the asset's flag: open while the
/// newest registration makes it true. `needs_use`: a finding only once the asset was used
/// (an untrusted MCP tool or server nobody calls is not one).
pub(crate) fn flag_condition(a: &crate::state::AssetAgg, rule: Rule, needs_use: bool) -> Condition {
    let flag = a.flags.get(rule.id).cloned().unwrap_or_default();
    let reg_at = a.registration.as_ref().map(|r| &r.at);
    // Rows are re-derived on what they depend on; the stamp names only that.
    let stamp = if needs_use {
        newest([reg_at, a.last_decision.as_ref()])
    } else {
        newest([reg_at])
    };
    let used = !needs_use || a.decisions > 0;
    let Some((bad_at, bad_event)) = flag.bad.clone() else {
        return Condition::none(stamp);
    };
    let opened_at = if needs_use {
        a.first_seen.map_or(bad_at, |f| f.max(bad_at))
    } else {
        bad_at
    };
    let mut ids = vec![bad_event.clone()];
    let mut last_trigger = bad_at;
    let mut recent = vec![(bad_at, bad_event)];
    if needs_use {
        ids.extend(crate::state::ids(&a.recent));
        last_trigger = a.last_decision.as_ref().map_or(bad_at, |l| l.0.max(bad_at));
        recent.extend(a.recent.iter().cloned());
        recent.sort_unstable();
    }
    Condition {
        exists: used,
        active: used && flag.holds(),
        opened_at,
        last_trigger,
        cleared_at: flag.good.as_ref().map(|g| g.0).filter(|g| *g >= bad_at),
        ids,
        occurrences: if needs_use { a.decisions } else { 1 },
        stamp,
        recent,
        // Used in some environments: those; a registration alone: every stage.
        environments: if needs_use {
            a.environments.keys().copied().collect()
        } else {
            BTreeSet::new()
        },
    }
}

/// A flag rule's condition over the asset the finding is about, from its registrations.
pub(crate) fn registered(ov: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    asset_flag(ov, ctx, false)
}

/// A flag rule's condition over the asset the finding is about, once the asset is used.
pub(crate) fn used(ov: &mut Overlay<'_>, ctx: &Ctx<'_>) -> Result<Condition> {
    asset_flag(ov, ctx, true)
}

/// A flag rule's condition over the asset the finding is about.
fn asset_flag(ov: &mut Overlay<'_>, ctx: &Ctx<'_>, needs_use: bool) -> Result<Condition> {
    ov.with(
        ctx.tenant,
        crate::state::Tag::Asset,
        &ctx.asset(),
        |a: &crate::state::AssetAgg| flag_condition(a, ctx.rule, needs_use),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalog test: every rule of the catalog has exactly one logic, and each logic
    /// agrees with its rule's metadata.
    #[test]
    fn every_rule_of_the_catalog_has_one_logic_that_agrees_with_it() {
        for rule in ALL {
            let n = logics().filter(|l| l.rule.id == rule.id).count();
            assert_eq!(n, 1, "{}: {n} logics", rule.id);
        }
        for l in logics() {
            let r = l.rule;
            assert_eq!(by_id(r.id), Some(r), "{}: not the catalog's rule", r.id);
            assert_eq!(
                l.raise.is_some(),
                r.raised_by_events,
                "{}: raised by events in the catalog, and only then by decisions",
                r.id
            );
            assert!(
                !l.cleared_by_approval || l.raise.is_some(),
                "{}: only an occurrence can be cleared",
                r.id
            );
            assert_eq!(
                l.signal.is_some(),
                SIGNALS.iter().any(|s| s.id == r.id),
                "{}: a signal exactly when the catalog lists it as one",
                r.id
            );
            if l.flag.is_some() {
                assert!(
                    matches!(r.subject, Subject::Asset(_)),
                    "{}: a registration decides only a rule about an asset",
                    r.id
                );
                let Subject::Asset(kind) = r.subject else {
                    continue;
                };
                assert!(
                    l.on.contains(&On::Registered(kind)),
                    "{}: derived again when its asset is registered",
                    r.id
                );
            }
            assert!(
                !l.on.is_empty() || l.raise.is_some() || l.signal.is_some(),
                "{}: nothing ever derives it",
                r.id
            );
        }
        let cleared = logics().filter(|l| l.cleared_by_approval).count();
        assert!(cleared <= 1, "a decision's facts keep one raised finding");
    }

    #[test]
    fn every_change_reaches_the_rules_that_read_it() {
        for l in logics() {
            for on in l.on {
                let (_, rules) = BY_CHANGE
                    .iter()
                    .find(|(o, _)| o == on)
                    .expect("every change of a rule is indexed");
                assert!(
                    rules.iter().any(|r| r.rule.id == l.rule.id),
                    "{}",
                    l.rule.id
                );
            }
        }
    }
}
