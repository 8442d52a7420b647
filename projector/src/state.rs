//! Aggregates: the facts view rows are derived from. Every update is commutative (counters,
//! min/max event times, last-writer-wins registers ordered by `(occurred_at, event_id)`, bounded
//! sets of the newest ids), so the final state depends on the set of events applied and not on
//! the order the input topics interleave in. Rows are pure functions of aggregates (`derive.rs`).
//!
//! Stored in the `state` column family under `{tenant} \0 {tag} \0 {id}`; the tag says which
//! aggregate (see [`Tag`]).

use aispm_schemas::Environment;
use aispm_schemas::views::{ApprovalMonth, KEEP_APPROVAL_MONTHS, month_index, month_name};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Which aggregate a state key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Tag {
    /// [`AssetAgg`], id `{kind}/{asset_id}` (coverage kinds, api_key, trust_root, …).
    Asset,
    /// [`ControlAgg`], id = control id or `(none):{action_kind}`.
    Control,
    /// [`FindingFacts`], id = finding id.
    Finding,
    /// [`ExceptionAgg`], id = exception id.
    Exception,
    /// [`EvidenceAgg`], id = evidence id.
    Evidence,
    /// [`DecisionFacts`], id = decision event id (approvals seen for it).
    Decision,
    /// [`ExposureAgg`], id = `{endpoint}/{data class}`.
    Exposure,
    /// [`FlowAgg`], id = `{data class} \0 {destination kind} \0 {destination} \0 {agent}`
    /// ([`flow_id`]): the data-exposure map, one class sent by one agent to one model endpoint
    /// or MCP tool.
    Flow,
    /// [`RateAgg`], id = `{agent}@{minute}`: an agent's decisions in one minute, what the
    /// runtime signals count.
    Rate,
    /// Empty marker, id = `{key_id} \0 {evidence_id}`: evidence signed by a trust root.
    EvidenceByKey,
    /// `Lww<ValidationRecord>`, id = validations row key.
    Validation,
    /// `Lww<DeliveryRow>`, id = report id.
    Delivery,
    /// Empty marker, id = `{finding_id} \0 {occurred_at: 20 digits} \0 {event_id}`: an event
    /// that raised an event-raised finding ([`occurrence_id`]), in event-time order: every
    /// event behind the finding, read by cursor through the API.
    Occurrence,
    /// [`Usage`], id = `{agent_id} \0 {relation} \0 {target}` ([`link_id`]): what an agent
    /// acted for and with (the identity-to-action map).
    Link,
    /// Empty marker, id = [`approval_index_id`]: every approval event, newest first.
    Approval,
    /// [`ApprovalStats`], id = `{control} \0 {agent}` ([`pair_id`]): the requests for approval
    /// of one agent under one control, how they were answered and how fast.
    ApprovalStats,
    /// Empty marker, id = `{control} \0 {agent} \0 {requested_at: 20 digits} \0 {decision id}`
    /// ([`pending_id`]): a request for approval not answered yet, oldest first; deleted when a
    /// grant or a denial names its decision.
    Pending,
    /// Empty marker, id = `{agent} \0 {requested_at: 20 digits} \0 {control} \0 {decision id}`
    /// ([`pending_by_agent_id`]): the same pending requests by agent, oldest first, so that
    /// those an agent's newer decision makes overdue are one range read.
    PendingByAgent,
    /// Empty marker, id = `{agent_id} \0 {key_id}`: an API key registered to an agent (its
    /// registration's `attributes.agent_id`), so that an agent's keys are a key prefix even
    /// before it used them.
    KeyOf,
    /// `posture::TrendSample`, id = the hour's start (ms, 20 digits): the tenant's posture
    /// trend, written by `posture::Keeper`, not by events.
    Trend,
}

impl Tag {
    /// Whether `apply` lists this tag's aggregates by id prefix (`Overlay::ids_with_prefix`):
    /// the overlay keeps the keys of those a batch changes in key order, so that a listing
    /// reads a range of them, not every aggregate the batch holds.
    pub(crate) fn listed(self) -> bool {
        matches!(self, Tag::Exposure | Tag::Validation)
    }

    pub(crate) fn byte(self) -> u8 {
        match self {
            Tag::Asset => b'A',
            Tag::Control => b'C',
            Tag::Finding => b'F',
            Tag::Exception => b'X',
            Tag::Evidence => b'E',
            Tag::Decision => b'D',
            Tag::Exposure => b'P',
            Tag::Flow => b'W',
            Tag::Rate => b'R',
            Tag::EvidenceByKey => b'K',
            Tag::Validation => b'V',
            Tag::Delivery => b'L',
            Tag::Occurrence => b'O',
            Tag::Link => b'N',
            Tag::Approval => b'Q',
            Tag::Trend => b'H',
            Tag::ApprovalStats => b'U',
            Tag::Pending => b'G',
            Tag::PendingByAgent => b'B',
            Tag::KeyOf => b'Y',
        }
    }
}

/// `{tenant} \0 {tag} \0 {id}`.
pub(crate) fn state_key(tenant: &str, tag: Tag, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 3 + id.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.push(tag.byte());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The id of an occurrence marker: `{finding_id} \0 {occurred_at} \0 {event_id}`, the time
/// zero-padded to 20 digits so that markers sort by event time (times before 1970 sort first).
pub(crate) fn occurrence_id(finding_id: &str, at: &Stamp) -> String {
    format!("{finding_id}\0{:020}\0{}", at.0.max(0), at.1)
}

/// The prefix of a finding's occurrence markers.
pub(crate) fn occurrence_prefix(finding_id: &str) -> String {
    format!("{finding_id}\0")
}

/// The id of an agent's approval statistics under a control: `{control} \0 {agent}`, so one
/// control's agents are a key prefix.
pub(crate) fn pair_id(control: &str, agent: &str) -> String {
    format!("{control}\0{agent}")
}

/// The id of a pending request's marker: its pair, then its time zero-padded to 20 digits
/// (oldest first; times before 1970 sort first), then the decision id.
pub(crate) fn pending_id(control: &str, agent: &str, at: &Stamp) -> String {
    format!("{}\0{:020}\0{}", pair_id(control, agent), at.0.max(0), at.1)
}

/// The bound of a pair's pending markers requested before `before` (ms): every [`pending_id`]
/// of the pair below it was requested earlier.
pub(crate) fn pending_before(control: &str, agent: &str, before: i64) -> String {
    format!("{}\0{:020}", pair_id(control, agent), before.max(0))
}

/// Requests for approval made before this (ms) are overdue at `clock` under a decision window
/// of `window_ms` (`aispm_schemas::clock::approval_overdue_before`): the bound of both pending
/// indexes' range reads.
pub(crate) fn overdue_before(window_ms: i64, clock: i64) -> i64 {
    let window = std::time::Duration::from_millis(u64::try_from(window_ms).unwrap_or(0));
    aispm_schemas::clock::approval_overdue_before(window, aispm_schemas::Timestamp(clock)).0
}

/// The id of a pending request's marker by agent ([`Tag::PendingByAgent`]): the agent, its time
/// zero-padded to 20 digits, the control, the decision id.
pub(crate) fn pending_by_agent_id(control: &str, agent: &str, at: &Stamp) -> String {
    format!(
        "{}\0{}\0{}",
        pending_by_agent_before(agent, at.0),
        control,
        at.1
    )
}

/// The bound of an agent's pending markers by agent requested before `before` (ms).
pub(crate) fn pending_by_agent_before(agent: &str, before: i64) -> String {
    format!("{agent}\0{:020}", before.max(0))
}

/// The control of a [`pending_by_agent_id`], after its `{agent} \0`.
pub(crate) fn pending_by_agent_control(rest: &str) -> Option<&str> {
    let mut parts = rest.splitn(3, '\0');
    let _at = parts.next()?;
    parts.next()
}

/// The request time and decision id of a pending marker's id, after its pair's `{control} \0
/// {agent} \0`.
pub(crate) fn split_pending(rest: &str) -> Option<(i64, &str)> {
    let (at, decision) = rest.split_once('\0')?;
    Some((at.parse().ok()?, decision))
}

/// Most pending requests of one pair counted as overdue (the approvals view's
/// `pending_overdue`, AISPM-APR-002's occurrences); past it the count reads this many and says
/// it is capped.
pub(crate) const OVERDUE_COUNTED: usize = 1000;

/// Where a decision's data can go: the kinds of destination of the data-exposure map.
pub(crate) const DESTINATIONS: [&str; 2] = ["model_endpoint", "mcp_tool"];

/// The id of a data flow: `{class} \0 {kind} \0 {destination} \0 {agent}`, so that one
/// class's flows, and one destination's agents, are key prefixes ([`flow_prefix`]).
pub(crate) fn flow_id(class: &str, kind: &str, destination: &str, agent: &str) -> String {
    format!("{class}\0{kind}\0{destination}\0{agent}")
}

/// The prefix of every flow (`None`), of one class's flows, or of one destination's agents.
pub(crate) fn flow_prefix(class: Option<&str>, destination: Option<(&str, &str)>) -> String {
    match (class, destination) {
        (None, _) => String::new(),
        (Some(c), None) => format!("{c}\0"),
        (Some(c), Some((kind, dest))) => format!("{c}\0{kind}\0{dest}\0"),
    }
}

/// What an agent's decision names besides the agent: the relations of the identity map. An
/// `api_key` link is the key the agent authenticated with; a `scope` link is
/// `{key_id}/{scope}`, a scope of that key the action exercised.
pub(crate) const RELATIONS: [&str; 7] = [
    "actor",
    "mcp_tool",
    "model_endpoint",
    "repo",
    "workflow",
    "api_key",
    "scope",
];

/// The id of an agent's link to a target: `{agent_id} \0 {relation} \0 {target}`, so that one
/// agent's links, and one relation of them, are a key prefix ([`link_prefix`]).
pub(crate) fn link_id(agent_id: &str, relation: &str, target: &str) -> String {
    format!("{agent_id}\0{relation}\0{target}")
}

/// The prefix of an agent's links, or of one relation of them.
pub(crate) fn link_prefix(agent_id: &str, relation: Option<&str>) -> String {
    match relation {
        Some(r) => format!("{agent_id}\0{r}\0"),
        None => format!("{agent_id}\0"),
    }
}

/// The id of an approval event's index marker: the time inverted and zero-padded to 20 digits,
/// then the event id, so that markers sort newest first.
pub(crate) fn approval_index_id(at: &Stamp) -> String {
    format!("{:020}\0{}", i64::MAX - at.0.max(0), at.1)
}

/// The event time an approval index marker names ([`approval_index_id`]), and its event id.
pub(crate) fn parse_approval_index(id: &str) -> Option<(i64, &str)> {
    let (inverted, event_id) = id.split_once('\0')?;
    Some((i64::MAX - inverted.parse::<i64>().ok()?, event_id))
}

/// An event's position in event time: `(occurred_at, event_id)`; ties broken by id.
pub(crate) type Stamp = (i64, String);

/// Last-writer-wins register by event time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lww<T> {
    pub at: Stamp,
    pub value: T,
}

/// Sets `slot` to `value` if `at` is newer than what it holds; true if it changed.
pub(crate) fn lww<T>(slot: &mut Option<Lww<T>>, at: &Stamp, value: T) -> bool {
    match slot {
        Some(cur) if &cur.at >= at => false,
        _ => {
            *slot = Some(Lww {
                at: at.clone(),
                value,
            });
            true
        }
    }
}

pub(crate) fn min_opt(slot: &mut Option<i64>, t: i64) {
    *slot = Some(slot.map_or(t, |c| c.min(t)));
}

pub(crate) fn max_opt(slot: &mut Option<i64>, t: i64) {
    *slot = Some(slot.map_or(t, |c| c.max(t)));
}

/// Keeps the later of `slot` and `at` (by event time, then id).
pub(crate) fn latest(slot: &mut Option<Stamp>, at: &Stamp) {
    if slot.as_ref().is_none_or(|l| at > l) {
        *slot = Some(at.clone());
    }
}

/// How many ids a bounded list keeps.
pub(crate) const KEEP_IDS: usize = 20;

/// Keeps the newest `KEEP_IDS` stamps (by event time, then id), oldest first.
pub(crate) fn keep_newest(list: &mut Vec<Stamp>, at: &Stamp) {
    match list.binary_search(at) {
        Ok(_) => {}
        Err(i) => {
            list.insert(i, at.clone());
            if list.len() > KEEP_IDS {
                list.remove(0);
            }
        }
    }
}

/// The ids of a bounded stamp list.
pub(crate) fn ids(list: &[Stamp]) -> Vec<String> {
    list.iter().map(|(_, id)| id.clone()).collect()
}

/// An asset's registration as last registered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Registration {
    /// The principal that asserted this registration.
    pub asserted_by: Option<String>,
    pub retired: bool,
    pub owner: Option<String>,
    pub trust: Option<String>,
    pub public: Option<bool>,
    pub auth_required: Option<bool>,
    pub public_key: Option<String>,
    pub scopes: Vec<String>,
    pub approved_data_classes: Vec<String>,
    pub recipients: Vec<String>,
    pub framework_mappings: Vec<String>,
    /// The criticality the registry gave it (a risk factor of its findings).
    pub criticality: Option<aispm_schemas::Risk>,
    /// An API key's agent (`attributes.agent_id`).
    pub agent: Option<String>,
}

/// A registry-derived condition: the newest registration (by event time, then id) that made it
/// true and the newest that made it false. The condition holds now when `bad` is newer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Flag {
    pub bad: Option<Stamp>,
    pub good: Option<Stamp>,
}

impl Flag {
    pub(crate) fn observe(&mut self, bad: bool, at: &Stamp) {
        latest(if bad { &mut self.bad } else { &mut self.good }, at);
    }

    /// Whether the newest registration made the condition true.
    pub(crate) fn holds(&self) -> bool {
        match (&self.bad, &self.good) {
            (Some(b), Some(g)) => b > g,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// An asset: what the registry says of it, and what decisions show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AssetAgg {
    pub registration: Option<Lww<Registration>>,
    /// Earliest event time it was registered (not retired).
    pub registered_since: Option<i64>,
    /// Registry-derived conditions by rule id.
    pub flags: BTreeMap<String, Flag>,
    /// Per data class: earliest event time a registration approved it (model endpoints).
    pub approved_since: BTreeMap<String, i64>,
    pub decisions: i64,
    pub synthetic_decisions: i64,
    pub first_seen: Option<i64>,
    pub last_decision: Option<Stamp>,
    pub last_real_decision: Option<Stamp>,
    /// Newest decision ids (runaway bursts, drill-down).
    pub recent: Vec<Stamp>,
    /// The runtime signals it raised (`aispm_schemas::rules::SIGNALS`), by rule id.
    pub signals: BTreeMap<String, SignalAgg>,
    /// The decisions per environment (the stage each counts for).
    pub environments: BTreeMap<Environment, EnvDecisions>,
    /// Data classes in the decisions that named it (a risk factor of its findings).
    pub data_classes: BTreeSet<String>,
    /// Privileged action kinds (`aispm_schemas::risk::privileged_action`) in those decisions.
    pub privileged_actions: BTreeSet<String>,
    /// An agent's reach: relation → target → the newest event time it used the target, for
    /// the MCP tools, repos and model endpoints it used (at most [`KEEP_REACH`] targets, the
    /// least recently used dropped first): its blast radius. An API key's: under
    /// [`KEY_SCOPES`], each scope its decisions exercised → the newest event time.
    pub reach: BTreeMap<String, BTreeMap<String, i64>>,
    /// An agent's findings about it and a control it acted under (AISPM-APR-001,
    /// AISPM-APR-002, AISPM-EV-001, AISPM-EV-002), derived again when its risk factors change.
    pub findings: BTreeSet<String>,
    /// An agent's requests for approval not answered yet, by control: the pairs whose
    /// AISPM-APR-002 is derived again when the agent acts (its newest decision is that rule's
    /// clock).
    pub pending: BTreeMap<String, i64>,
}

/// The relation of an API key's [`AssetAgg::reach`]: the scopes it was used with.
pub(crate) const KEY_SCOPES: &str = "scope";

/// The relations of an agent's reach, its blast radius.
pub(crate) const REACH_RELATIONS: [&str; 3] = ["mcp_tool", "repo", "model_endpoint"];

/// How many targets an agent's reach keeps: far above the points the blast radius can give
/// (`aispm_schemas::risk::MAX_REACH_POINTS`), so the counts it shows are exact up to here.
pub(crate) const KEEP_REACH: usize = 256;

impl AssetAgg {
    /// Whether counting decision `d` (at `at`, [`AssetAgg::named_by`]) would change the state
    /// of the asset's coverage row (`ViewRow::hash_state`), not only its running counts and
    /// newest decisions: its first decision, first synthetic or real one, an earlier first
    /// sighting, or the same firsts in the decision's environment. The row of a decision that
    /// does not can wait for the epoch's end (`Overlay::dirty_as`). Asked before counting.
    pub(crate) fn named_moves_state(&self, d: &aispm_schemas::DecisionEvent, at: &Stamp) -> bool {
        let firsts = |decisions: i64, synthetic: i64, real: bool| {
            decisions == 0 || if d.synthetic { synthetic == 0 } else { !real }
        };
        firsts(
            self.decisions,
            self.synthetic_decisions,
            self.last_real_decision.is_some(),
        ) || self.first_seen.is_none_or(|first| at.0 < first)
            || self.environments.get(&d.environment).is_none_or(|e| {
                firsts(
                    e.decisions,
                    e.synthetic_decisions,
                    e.last_real_decision.is_some(),
                ) || e.last_decision.is_none()
            })
    }

    /// Counts a decision that named the asset (at `at`): its decisions, first and newest, the
    /// newest ids, and its environment's share.
    pub(crate) fn named_by(&mut self, d: &aispm_schemas::DecisionEvent, at: &Stamp) {
        self.decisions += 1;
        if d.synthetic {
            self.synthetic_decisions += 1;
        } else {
            latest(&mut self.last_real_decision, at);
        }
        min_opt(&mut self.first_seen, at.0);
        latest(&mut self.last_decision, at);
        keep_newest(&mut self.recent, at);
        self.environments
            .entry(d.environment)
            .or_default()
            .count(at, d.synthetic);
    }

    /// Whether the asset's registration approves data of `class` now (registered, not retired,
    /// the class among its `approved_data_classes`): what AISPM-DATA-001 and the data-exposure
    /// map judge a destination by.
    pub(crate) fn approves(&self, class: &str) -> bool {
        self.registration.as_ref().is_some_and(|r| {
            !r.value.retired && r.value.approved_data_classes.iter().any(|c| c == class)
        })
    }

    /// Notes that the agent used `target` (of `relation`) at `at`, its newest decision now
    /// being at `newest`; true if its blast radius may have changed: a new target, or one back
    /// inside the window. No allocation for a target it used before.
    pub(crate) fn reached(&mut self, relation: &str, target: &str, at: i64, newest: i64) -> bool {
        let since = aispm_schemas::risk::reach_since(newest);
        if !self.reach.contains_key(relation) {
            self.reach.insert(relation.to_owned(), BTreeMap::new());
        }
        let Some(targets) = self.reach.get_mut(relation) else {
            return false;
        };
        let changed = match targets.get_mut(target) {
            Some(last) => {
                let was_in = *last >= since;
                *last = (*last).max(at);
                !was_in && *last >= since
            }
            None => {
                targets.insert(target.to_owned(), at);
                true
            }
        };
        if self.reach.values().map(BTreeMap::len).sum::<usize>() > KEEP_REACH {
            // Drop the least recently used (ties: the first by relation and target), as any
            // order of the same events would.
            let oldest = self
                .reach
                .iter()
                .flat_map(|(r, ts)| ts.iter().map(move |(t, at)| (*at, r, t)))
                .min()
                .map(|(_, r, t)| (r.clone(), t.clone()));
            if let Some((r, t)) = oldest
                && let Some(ts) = self.reach.get_mut(&r)
            {
                ts.remove(&t);
            }
        }
        changed
    }

    /// The blast radius: distinct MCP tools, repos and model endpoints used in the window
    /// that ends with the day of the newest decision (`aispm_schemas::risk::reach_since`).
    pub(crate) fn reach_counts(&self) -> aispm_schemas::risk::Reach {
        let newest = self.last_decision.as_ref().map_or(0, |l| l.0);
        let since = aispm_schemas::risk::reach_since(newest);
        let count = |relation: &str| {
            self.reach.get(relation).map_or(0, |ts| {
                i64::try_from(ts.values().filter(|at| **at >= since).count()).unwrap_or(i64::MAX)
            })
        };
        aispm_schemas::risk::Reach {
            mcp_tools: count("mcp_tool"),
            repos: count("repo"),
            model_endpoints: count("model_endpoint"),
        }
    }
}

/// The decisions an asset or action path saw in one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EnvDecisions {
    pub decisions: i64,
    pub synthetic_decisions: i64,
    pub last_decision: Option<Stamp>,
    pub last_real_decision: Option<Stamp>,
}

impl EnvDecisions {
    /// Counts one decision made at `at`.
    pub(crate) fn count(&mut self, at: &Stamp, synthetic: bool) {
        self.decisions += 1;
        if synthetic {
            self.synthetic_decisions += 1;
        } else {
            latest(&mut self.last_real_decision, at);
        }
        latest(&mut self.last_decision, at);
    }
}

/// A control's decisions in one environment: what its state there is derived from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ControlEnv {
    pub enforced: i64,
    pub shadow: i64,
    pub high_risk: i64,
    /// The mode of the newest decision in this environment.
    pub mode: Option<Lww<bool>>,
    pub recent: Vec<Stamp>,
    pub last_decision_at: Option<i64>,
}

/// A control: its registration and the decisions it made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ControlAgg {
    pub registration: Option<Lww<Registration>>,
    pub enforced: i64,
    pub shadow: i64,
    pub high_risk: i64,
    /// The mode of the newest decision.
    pub mode: Option<Lww<bool>>,
    pub action_kinds: BTreeSet<String>,
    pub recent: Vec<Stamp>,
    pub last_decision_at: Option<i64>,
    /// High or critical actions allowed in shadow mode.
    pub shadow_high_allows: i64,
    pub shadow_high_first: Option<i64>,
    pub shadow_high_last: Option<i64>,
    pub shadow_high_ids: Vec<Stamp>,
    pub last_enforced_at: Option<i64>,
    /// The decisions per environment (the stage each counts for).
    pub environments: BTreeMap<Environment, ControlEnv>,
    /// The policies its decisions named, by policy id (at most
    /// [`aispm_schemas::views::KEEP_POLICIES`]).
    pub policies: BTreeMap<String, PolicyAgg>,
    /// Its requests for approval by calendar month of the request ([`month_index`]): the
    /// newest request's month and [`KEEP_APPROVAL_MONTHS`] − 1 before it.
    pub approvals: BTreeMap<i64, ApprovalMonth>,
}

/// One policy a control's decisions named: first and newest event time, and how often.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PolicyAgg {
    pub first: i64,
    pub last: i64,
    pub decisions: i64,
}

impl ControlAgg {
    /// Whether counting decision `d` (at `at`, [`ControlAgg::decided`]) would change the state
    /// of the control's row (`ViewRow::hash_state`), not only its running counts and newest
    /// decisions: its first enforced, shadow or high-risk decision, a new mode (the newest
    /// decision's), a new action kind, a new policy or an earlier first use of one, the same
    /// in the decision's environment, or any decision of a retired or quarantined control
    /// (whose state reads when it last decided). The row of a decision that does not can wait
    /// for the epoch's end (`Overlay::dirty_as`). Asked before counting; requests for approval
    /// are counted apart (`approval_requested`), and mark the row themselves.
    pub(crate) fn decision_moves_state(
        &self,
        d: &aispm_schemas::DecisionEvent,
        at: &Stamp,
    ) -> bool {
        let shadow = d.mode == aispm_schemas::Mode::Shadow;
        let high = matches!(
            d.risk,
            aispm_schemas::Risk::High | aispm_schemas::Risk::Critical
        );
        // The newest decision's mode changes, or is set for the first time.
        let mode_moves = |mode: &Option<Lww<bool>>| {
            mode.as_ref()
                .is_none_or(|m| *at > m.at && m.value != shadow)
        };
        let firsts = |enforced: i64, shadow_n: i64, high_n: i64| {
            (if shadow { shadow_n } else { enforced }) == 0 || (high && high_n == 0)
        };
        let blocked_reads = self
            .registration
            .as_ref()
            .is_some_and(|r| r.value.retired || r.value.trust.as_deref() == Some("quarantined"));
        blocked_reads
            || firsts(self.enforced, self.shadow, self.high_risk)
            || mode_moves(&self.mode)
            || !self.action_kinds.contains(d.action_kind.as_str())
            || d.policy_id
                .as_ref()
                .is_some_and(|p| self.policies.get(p).is_none_or(|p| at.0 < p.first))
            || self
                .environments
                .get(&d.environment)
                .is_none_or(|e| firsts(e.enforced, e.shadow, e.high_risk) || mode_moves(&e.mode))
    }

    /// Counts decision `d` made at `at` under the control: per mode and environment, its
    /// mode, policy, action kind and newest decisions, and a high-risk action it allowed in
    /// shadow mode (AISPM-CTRL-001).
    pub(crate) fn decided(&mut self, d: &aispm_schemas::DecisionEvent, at: &Stamp) {
        let high = matches!(
            d.risk,
            aispm_schemas::Risk::High | aispm_schemas::Risk::Critical
        );
        let allowed = d.verdict == aispm_schemas::Verdict::Allow;
        let shadow = d.mode == aispm_schemas::Mode::Shadow;
        if shadow {
            self.shadow += 1;
        } else {
            self.enforced += 1;
            max_opt(&mut self.last_enforced_at, at.0);
        }
        if high {
            self.high_risk += 1;
        }
        lww(&mut self.mode, at, shadow);
        if let Some(policy) = &d.policy_id {
            self.named_policy(policy, at.0);
        }
        if !self.action_kinds.contains(d.action_kind.as_str()) {
            self.action_kinds.insert(d.action_kind.as_str().to_owned());
        }
        keep_newest(&mut self.recent, at);
        max_opt(&mut self.last_decision_at, at.0);
        let env = self.environments.entry(d.environment).or_default();
        if shadow {
            env.shadow += 1;
        } else {
            env.enforced += 1;
        }
        if high {
            env.high_risk += 1;
        }
        lww(&mut env.mode, at, shadow);
        keep_newest(&mut env.recent, at);
        max_opt(&mut env.last_decision_at, at.0);
        if shadow && high && allowed {
            self.shadow_high_allows += 1;
            min_opt(&mut self.shadow_high_first, at.0);
            max_opt(&mut self.shadow_high_last, at.0);
            keep_newest(&mut self.shadow_high_ids, at);
        }
    }

    /// Counts a request for approval made at `at` (ms) in its month, unless that month is
    /// older than the window ending at the newest request's; months that leave the window are
    /// dropped. Whatever the order of the requests, the months kept are the window of the
    /// newest and each holds every request of its month: a request counts on arrival if its
    /// month is in the window then, which any later window also starts after.
    pub(crate) fn approval_requested(&mut self, at: i64) {
        let month = month_index(at);
        let newest = self.approvals.keys().next_back().copied().unwrap_or(month);
        if month <= newest - KEEP_APPROVAL_MONTHS {
            return;
        }
        // `month` is at least `first_kept`: the window of the newer of the two.
        let first_kept = newest.max(month) - KEEP_APPROVAL_MONTHS + 1;
        self.approvals = self.approvals.split_off(&first_kept);
        self.approvals
            .entry(month)
            .or_insert_with(|| ApprovalMonth {
                month: month_name(month),
                ..ApprovalMonth::default()
            })
            .requested += 1;
    }

    /// Adds (`sign` 1) or takes back (-1) the first answer of a request made at `request`
    /// (ms), at `answer`; nothing when the request's month has left the window.
    pub(crate) fn approval_answered(&mut self, request: i64, answer: &Answer, sign: i64) {
        if let Some(m) = self.approvals.get_mut(&month_index(request)) {
            m.count_answer(answer.at.0 - request, answer.granted, sign);
        }
    }

    /// Counts a decision at `at` that named `policy`; past [`aispm_schemas::views::KEEP_POLICIES`]
    /// policies the one named least recently is dropped (as an agent's reach is bounded).
    pub(crate) fn named_policy(&mut self, policy: &str, at: i64) {
        let p = self.policies.entry(policy.to_owned()).or_insert(PolicyAgg {
            first: at,
            last: at,
            decisions: 0,
        });
        p.first = p.first.min(at);
        p.last = p.last.max(at);
        p.decisions += 1;
        if self.policies.len() > aispm_schemas::views::KEEP_POLICIES
            && let Some(oldest) = self
                .policies
                .iter()
                .min_by(|a, b| (a.1.last, a.0).cmp(&(b.1.last, b.0)))
                .map(|(k, _)| k.clone())
        {
            self.policies.remove(&oldest);
        }
    }
}

/// Facts about one finding from events that name it or raise it directly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FindingFacts {
    /// Raises by events (decision-driven rules): count, first and last event time, newest ids.
    pub raises: i64,
    pub first_raise: Option<i64>,
    pub last_raise: Option<i64>,
    pub raise_ids: Vec<Stamp>,
    pub owner: Option<Lww<String>>,
    pub due_at: Option<Lww<i64>>,
    pub resolved: Option<Lww<Option<String>>>,
    pub exception: Option<Lww<String>>,
    /// Every exception ever granted for the finding (their expiry rules read this finding).
    pub exceptions: BTreeSet<String>,
    /// Approval events about the finding (drill-down).
    pub approval_ids: Vec<Stamp>,
    /// The principal behind the newest approval event about the finding.
    pub asserted: Option<Lww<Option<String>>>,
    /// Raised occurrences since cleared by their own approval (AISPM-APR-001: the decision
    /// was approved after the fact); counted once per decision, whichever arrives first.
    pub cleared: i64,
    /// The approvals that cleared occurrences (newest kept).
    pub cleared_ids: Vec<Stamp>,
    /// The environments of the events that raised it.
    pub environments: BTreeSet<Environment>,
}

impl FindingFacts {
    /// Whether one more occurrence (at `at`, in `environment`: [`FindingFacts::raised`]) of a
    /// finding events raise would change the state of its row (`ViewRow::hash_state`), not
    /// only its occurrences, newest ids and last occurrence: its first occurrence, an earlier
    /// one, a new environment, one after every earlier occurrence was cleared by its approval
    /// (the finding reopens). The row of an occurrence that does not can wait for the epoch's
    /// end (`Overlay::dirty_as`), unless the finding's facts say a trigger may move it
    /// (`rules::trigger_moves`: a resolution, or findings that read this one). Its risk reads
    /// other aggregates, which mark the row themselves when they change. Asked before
    /// counting.
    pub(crate) fn raise_moves_state(&self, at: &Stamp, environment: Environment) -> bool {
        self.raises == 0
            || self.first_raise.is_none_or(|first| at.0 < first)
            || !self.environments.contains(&environment)
            || self.cleared >= self.raises
    }

    /// Counts one more occurrence, at `at` in `environment`.
    pub(crate) fn raised(&mut self, at: &Stamp, environment: Environment) {
        self.raises += 1;
        min_opt(&mut self.first_raise, at.0);
        max_opt(&mut self.last_raise, at.0);
        keep_newest(&mut self.raise_ids, at);
        self.environments.insert(environment);
    }
}

/// An exception (accepted risk) or a break-glass event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExceptionAgg {
    pub break_glass: bool,
    pub grant: Option<Lww<Grant>>,
    pub invoked_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub reviewed: Option<Lww<String>>,
    pub ids: Vec<Stamp>,
    /// Every finding a grant of this exception ever covered (their rows read its terms).
    pub covers: BTreeSet<String>,
}

/// The granted terms of an exception, or the break-glass invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Grant {
    pub finding_id: Option<String>,
    pub control_id: Option<String>,
    pub decision_id: Option<String>,
    pub owner: Option<String>,
    pub actor: Option<String>,
    pub reason: Option<String>,
    pub expires_at: Option<i64>,
    /// The principal that granted (or invoked) it.
    pub asserted_by: Option<String>,
}

/// An evidence artefact as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EvidenceAgg {
    pub record: Option<Lww<EvidenceRecord>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EvidenceRecord {
    /// The principal that asserted the event carrying it.
    pub asserted_by: Option<String>,
    pub event_id: String,
    pub sha256: String,
    pub uri: String,
    pub signature: Option<String>,
    pub key_id: Option<String>,
    pub recorded_at: i64,
    pub synthetic: bool,
    pub action_kind: Option<String>,
    /// The decision was high or critical (missing evidence matters there).
    pub high_risk: bool,
    /// The environment of the event carrying it (the stage whose freshness it proves).
    pub environment: Option<Environment>,
    /// When a validation carried it: the claim its signature covers (a validator signs the
    /// result with its evidence, `aispm_schemas::signature::ValidationClaim`).
    pub claim: Option<Claim>,
    /// The agent whose decision carried it (`None`: a validation or a delivery did).
    pub agent_id: Option<String>,
    /// The control that made that decision, if one did.
    pub control_id: Option<String>,
}

/// A validation's claim, as its validator signed it (with the tenant, the evidence id and the
/// sha256 kept beside it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claim {
    pub event_id: String,
    pub check_kind: String,
    pub environment: String,
    pub subject: Option<String>,
    pub result: String,
    pub occurred_at: i64,
}

/// A validation as recorded: its row (the signature state is derived) and what its signature
/// is checked with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ValidationRecord {
    pub row: aispm_schemas::views::ValidationRow,
    pub claim: Claim,
    pub sha256: Option<String>,
    pub signature: Option<String>,
}

/// What is known of a decision by id: whether it was seen, and approvals that refer to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DecisionFacts {
    pub denied: Option<Lww<String>>,
    /// The decision asked for approval (verdict require_approval): under which control, for
    /// which agent, when. Set when the decision is applied.
    pub request: Option<Request>,
    /// The first answer by event time (a grant or a denial), whichever arrived first.
    pub answer: Option<Answer>,
    /// Approvals granted for the decision (newest kept; any one approves it).
    pub approvals: Vec<Stamp>,
    /// The finding the decision raised for lack of approval (AISPM-APR-001), once applied.
    pub raised: Option<String>,
}

/// A decision that asked for approval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Request {
    pub control: String,
    pub agent: String,
    pub at: Stamp,
}

/// A grant or a denial of a decision: when, by which event, which.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Answer {
    pub at: Stamp,
    pub granted: bool,
}

/// An agent's requests for approval under one control. Each request counts by its first
/// answer (the earliest grant or denial by event time), whatever order they arrive in: an
/// answer that turns out not to be the first is taken back and the earlier one counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ApprovalStats {
    pub requested: i64,
    pub granted: i64,
    pub denied: i64,
    /// Time from request to first answer: the sum (ms) and a histogram over
    /// [`aispm_schemas::views::DECISION_BUCKETS_MS`] (one more bucket for longer).
    pub decide_ms_sum: i64,
    pub decide_buckets: Vec<i64>,
    pub last_request: Option<Stamp>,
}

impl ApprovalStats {
    /// Adds (`sign` 1) or takes back (`sign` -1) a request's answer.
    pub(crate) fn count(&mut self, request: &Request, answer: &Answer, sign: i64) {
        aispm_schemas::views::count_answer(
            &mut self.granted,
            &mut self.denied,
            &mut self.decide_ms_sum,
            &mut self.decide_buckets,
            answer.at.0 - request.at.0,
            answer.granted,
            sign,
        );
    }

    /// Requests answered.
    pub(crate) fn answered(&self) -> i64 {
        self.granted + self.denied
    }

    /// The bound of the bucket that holds the `q` quantile (0 < q ≤ 1) of the time to decision;
    /// `None` without answers, `Some(None)` when it is past the last bound (over a week).
    pub(crate) fn quantile_bound(&self, q: f64) -> Option<Option<i64>> {
        aispm_schemas::views::decision_quantile(&self.decide_buckets, self.answered(), q)
    }
}

/// The use of one thing by the decisions that name it: how many, of them synthetic, the
/// first and the newest. An agent's link to a target (an actor it acted for, a tool, model
/// endpoint, repo, workflow, key or scope it used) is one, and so is a data flow's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Usage {
    pub decisions: i64,
    pub synthetic_decisions: i64,
    pub first: Option<i64>,
    pub last: Option<Stamp>,
}

impl Usage {
    /// Counts a decision at `at`.
    pub(crate) fn count(&mut self, at: &Stamp, synthetic: bool) {
        self.decisions += 1;
        if synthetic {
            self.synthetic_decisions += 1;
        }
        min_opt(&mut self.first, at.0);
        latest(&mut self.last, at);
    }
}

/// Data of one class sent to one model endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExposureAgg {
    /// The environments of the decisions that sent it.
    pub environments: BTreeSet<Environment>,
    pub decisions: i64,
    pub first: Option<i64>,
    pub last: Option<i64>,
    pub ids: Vec<Stamp>,
}

/// One data class sent by one agent to one destination (a model endpoint or an MCP tool).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FlowAgg {
    pub used: Usage,
    /// Of its decisions, denied (the data did not leave).
    pub denied: i64,
}

/// One agent's decisions in one minute of event time. Every count only grows, so each
/// signal's threshold is crossed exactly once per minute, whatever the order: the minutes a
/// signal fired are order-free.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RateAgg {
    pub n: i64,
    pub denied: i64,
    /// Per call ([`call_hash`]: action kind, MCP tool and target): attempts and denials.
    pub calls: BTreeMap<u64, CallCount>,
}

/// One call's attempts in a minute, and how many were denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CallCount {
    pub attempts: i64,
    pub denied: i64,
}

/// A call's identity for the loop and retry signals: FNV-1a of its action kind, MCP server and
/// tool, and target (a fixed hash, so stored counts read back the same after a restart).
pub(crate) fn call_hash(action_kind: &str, tool: Option<(&str, &str)>, target: &str) -> u64 {
    let mut h = crate::store::FNV_OFFSET;
    let (server, name) = tool.unwrap_or(("", ""));
    for part in [action_kind, server, name, target] {
        h = crate::store::fnv1a(h, part.as_bytes());
        h = crate::store::fnv1a(h, &[0]);
    }
    h
}

/// The minutes one runtime signal fired for an agent: how many, the first and the last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SignalAgg {
    pub minutes: i64,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_markers_sort_newest_first_and_read_back() {
        let ids: Vec<String> = [(5_000, "b"), (9_000, "a"), (5_000, "a"), (-3, "z")]
            .iter()
            .map(|(t, id)| approval_index_id(&(*t, (*id).to_owned())))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        let order: Vec<(i64, &str)> = sorted
            .iter()
            .map(|id| parse_approval_index(id).unwrap())
            .collect();
        // Newest first; a time before 1970 counts as 1970 and sorts last.
        assert_eq!(order, [(9_000, "a"), (5_000, "a"), (5_000, "b"), (0, "z")]);
    }

    #[test]
    fn one_agents_links_and_one_relation_are_key_prefixes() {
        let id = link_id("coder", "repo", "acme/api");
        assert!(id.starts_with(&link_prefix("coder", None)));
        assert!(id.starts_with(&link_prefix("coder", Some("repo"))));
        assert!(!id.starts_with(&link_prefix("code", None)));
        assert!(!id.starts_with(&link_prefix("coder", Some("actor"))));
    }
}
