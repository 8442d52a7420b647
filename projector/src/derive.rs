//! Rows as pure functions of aggregates. Each derivation also returns the newest event stamp
//! behind the row, which becomes the `ViewChange`'s `changed_at` and `cause_event_id`: the same
//! aggregates always give the same record, whatever the batching.

use crate::batch::Overlay;
use crate::error::Result;
use crate::rules::{self, Condition, Ctx, DAY_MS, Other, Rule, Settings, newest};
use crate::signatures::{claim_state, signature_state};
use crate::state::*;
use aispm_schemas::*;
use std::collections::BTreeSet;

/// A derived row (or its absence) with the newest stamp behind it, and the rows that read
/// this one and must be derived again when it changes.
#[derive(Debug)]
pub(crate) struct Derived {
    pub row: Option<ViewRow>,
    pub stamp: Stamp,
    pub follow: Vec<(ViewName, String)>,
}

impl Derived {
    fn new(row: Option<ViewRow>, stamp: Stamp) -> Self {
        Derived {
            row,
            stamp,
            follow: Vec::new(),
        }
    }

    /// The row as the change of `key` of `view` for `tenant`, stamped with the newest event
    /// behind it.
    pub(crate) fn change(self, tenant: &str, view: ViewName, key: &str) -> ViewChange {
        ViewChange::new(
            tenant,
            view,
            key,
            self.row,
            Timestamp(self.stamp.0),
            self.stamp.1,
        )
    }
}

/// Derives the row `key` of `view` for `tenant`.
pub(crate) fn row(
    ov: &mut Overlay<'_>,
    tenant: &str,
    view: ViewName,
    key: &str,
    s: &Settings,
) -> Result<Derived> {
    match view {
        ViewName::Coverage => coverage(ov, tenant, key),
        ViewName::Controls => control(ov, tenant, key),
        ViewName::Findings => finding(ov, tenant, key, s).map(|(d, _)| d),
        ViewName::Exceptions => exception(ov, tenant, key),
        ViewName::Evidence => evidence(ov, tenant, key),
        ViewName::Validations => validation(ov, tenant, key),
        ViewName::ReportDeliveries => {
            let v: Option<Lww<DeliveryRow>> = ov.get(tenant, Tag::Delivery, key)?;
            Ok(match v {
                Some(l) => {
                    let stamp = (l.value.delivered_at.0, l.value.event_id.clone());
                    Derived::new(Some(ViewRow::Delivery(l.value)), stamp)
                }
                None => Derived::new(None, (0, String::new())),
            })
        }
    }
}

fn coverage(ov: &mut Overlay<'_>, tenant: &str, key: &str) -> Result<Derived> {
    ov.with(tenant, Tag::Asset, key, |a: &AssetAgg| coverage_row(a, key))
}

fn coverage_row(a: &AssetAgg, key: &str) -> Derived {
    let stamp = newest([
        a.last_decision.as_ref(),
        a.registration.as_ref().map(|r| &r.at),
    ]);
    let Some((kind, id)) = key.split_once('/') else {
        return Derived::new(None, stamp);
    };
    let Ok(kind) = kind.parse::<CoverageKind>() else {
        return Derived::new(None, stamp);
    };
    if a.decisions == 0 && a.registration.is_none() {
        return Derived::new(None, stamp);
    }
    let reg = a.registration.as_ref().map(|r| &r.value);
    let row = CoverageRow {
        kind,
        id: id.to_owned(),
        registered: reg.is_some_and(|r| !r.retired),
        retired: reg.is_some_and(|r| r.retired),
        owner: reg.and_then(|r| r.owner.clone()),
        trust: reg.and_then(|r| r.trust.clone()),
        decisions: a.decisions,
        synthetic_decisions: a.synthetic_decisions,
        first_seen: a.first_seen.map(Timestamp),
        last_seen: a.last_decision.as_ref().map(|l| Timestamp(l.0)),
        last_decision_id: a.last_decision.as_ref().map(|l| l.1.clone()),
        last_real_decision_id: a.last_real_decision.as_ref().map(|l| l.1.clone()),
        shadow_ai: kind != CoverageKind::ActionPath
            && a.decisions > 0
            && a.registered_since.is_none(),
        asserted_by: reg.and_then(|r| r.asserted_by.clone()),
        environments: a
            .environments
            .iter()
            .map(|(env, e)| EnvironmentActivity {
                environment: *env,
                decisions: e.decisions,
                synthetic_decisions: e.synthetic_decisions,
                last_seen: e.last_decision.as_ref().map(|l| Timestamp(l.0)),
                last_decision_id: e.last_decision.as_ref().map(|l| l.1.clone()),
                last_real_decision_id: e.last_real_decision.as_ref().map(|l| l.1.clone()),
            })
            .collect(),
    };
    Derived::new(Some(ViewRow::Coverage(row)), stamp)
}

fn control(ov: &mut Overlay<'_>, tenant: &str, key: &str) -> Result<Derived> {
    ov.with(tenant, Tag::Control, key, |c: &ControlAgg| {
        control_row(c, key)
    })
}

fn control_row(c: &ControlAgg, key: &str) -> Derived {
    let stamp = newest([c.recent.last(), c.registration.as_ref().map(|r| &r.at)]);
    let decisions = c.enforced + c.shadow;
    if decisions == 0 && c.registration.is_none() {
        return Derived::new(None, stamp);
    }
    let reg = c.registration.as_ref();
    let state = control_state(
        c.registration.as_ref(),
        key,
        decisions,
        c.last_decision_at,
        c.mode.as_ref(),
    );
    let row = ControlRow {
        control_id: key.to_owned(),
        state,
        registered: reg.is_some_and(|r| !r.value.retired),
        enforced_decisions: c.enforced,
        shadow_decisions: c.shadow,
        high_risk_decisions: c.high_risk,
        action_kinds: c.action_kinds.iter().cloned().collect(),
        framework_mappings: reg
            .map(|r| r.value.framework_mappings.clone())
            .unwrap_or_default(),
        decision_ids: ids(&c.recent),
        last_decision_at: c.last_decision_at.map(Timestamp),
        asserted_by: reg.and_then(|r| r.value.asserted_by.clone()),
        environments: c
            .environments
            .iter()
            .map(|(env, e)| ControlActivity {
                environment: *env,
                state: control_state(
                    reg,
                    key,
                    e.enforced + e.shadow,
                    e.last_decision_at,
                    e.mode.as_ref(),
                ),
                enforced_decisions: e.enforced,
                shadow_decisions: e.shadow,
                high_risk_decisions: e.high_risk,
                decision_ids: ids(&e.recent),
                last_decision_at: e.last_decision_at.map(Timestamp),
            })
            .collect(),
        last_enforced_at: c.last_enforced_at.map(Timestamp),
        policies: {
            let mut p: Vec<PolicyUse> = c
                .policies
                .iter()
                .map(|(id, p)| PolicyUse {
                    policy_id: id.clone(),
                    first_seen_at: Timestamp(p.first),
                    last_seen_at: Timestamp(p.last),
                    decisions: p.decisions,
                })
                .collect();
            p.sort_by(|a, b| (a.first_seen_at, &a.policy_id).cmp(&(b.first_seen_at, &b.policy_id)));
            p
        },
        approvals: c.approvals.values().cloned().collect(),
    };
    Derived::new(Some(ViewRow::Control(row)), stamp)
}

/// A control's state from its registration and the decisions it made (all of them, or one
/// environment's): blocked when retired or quarantined yet still deciding, missing without
/// decisions or without a control id, shadowed when the newest decision was in shadow mode.
fn control_state(
    reg: Option<&Lww<Registration>>,
    key: &str,
    decisions: i64,
    last_decision_at: Option<i64>,
    mode: Option<&Lww<bool>>,
) -> ControlState {
    let retired_yet_deciding = reg.is_some_and(|r| {
        (r.value.retired || r.value.trust.as_deref() == Some("quarantined"))
            && last_decision_at.is_some_and(|l| l > r.at.0)
    });
    if retired_yet_deciding {
        ControlState::Blocked
    } else if decisions == 0 || key.starts_with("(none):") {
        ControlState::Missing
    } else if mode.is_some_and(|m| m.value) {
        ControlState::Shadowed
    } else {
        ControlState::Enforced
    }
}

/// What a condition reads of another finding ([`Ctx::other`]).
fn other(ov: &mut Overlay<'_>, tenant: &str, id: &str, s: &Settings) -> Result<Other> {
    let (derived, last_trigger) = finding(ov, tenant, id, s)?;
    Ok(Other {
        exists: derived.row.is_some(),
        open: matches!(&derived.row, Some(ViewRow::Finding(f)) if f.status == FindingStatus::Open),
        last_trigger,
        stamp: derived.stamp,
    })
}

/// Derives a finding, the same for every rule around the rule's condition
/// (`rules::condition`); also returns its last trigger time (for the exception-expiry rule).
fn finding(ov: &mut Overlay<'_>, tenant: &str, key: &str, s: &Settings) -> Result<(Derived, i64)> {
    let facts: FindingFacts = ov.get(tenant, Tag::Finding, key)?;
    // The findings whose condition reads this one, whether this one exists or not.
    let follow = rules::followers(&facts);
    let Some((rule, subject)) = rules::split_finding_id(key) else {
        return Ok((Derived::new(None, (0, String::new())), 0));
    };
    let ctx = Ctx {
        tenant,
        rule,
        subject,
        facts: &facts,
        settings: s,
        other,
    };
    let cond: Condition = rules::condition(ov, &ctx)?;
    // The row changed because of what its risk reads too: name the newest of that, whether
    // the row exists or not.
    let risk_stamp = risk_stamp(ov, tenant, rule, subject)?;
    let stamp = newest([
        Some(&cond.stamp),
        facts.owner.as_ref().map(|o| &o.at),
        facts.due_at.as_ref().map(|o| &o.at),
        facts.resolved.as_ref().map(|o| &o.at),
        facts.exception.as_ref().map(|o| &o.at),
        Some(&risk_stamp),
    ]);
    if !cond.exists {
        let derived = Derived {
            row: None,
            stamp,
            follow,
        };
        return Ok((derived, cond.last_trigger));
    }
    // A resolution closes the finding unless the condition fired again after it.
    let resolved_after = facts
        .resolved
        .as_ref()
        .filter(|r| r.at.0 >= cond.last_trigger);
    let open = cond.active && resolved_after.is_none();
    // A resolution followed by new occurrences: the finding reopened with the first of them,
    // and its SLA runs from there.
    let opened_at = match &facts.resolved {
        Some(r) if r.at.0 < cond.last_trigger && r.at.0 >= cond.opened_at => {
            reopened_at(&cond.recent, r.at.0)
        }
        _ => cond.opened_at,
    };
    let (closed_at, resolution) = match (open, resolved_after, cond.cleared_at) {
        (true, _, _) => (None, None),
        (false, Some(r), _) => (
            Some(r.at.0),
            Some(r.value.clone().unwrap_or_else(|| "resolved".to_owned())),
        ),
        (false, None, cleared) => (
            Some(cleared.unwrap_or(cond.last_trigger)),
            Some("condition no longer holds".to_owned()),
        ),
    };
    let (exception_id, exception_expires_at) = match &facts.exception {
        Some(e) => {
            let x: ExceptionAgg = ov.get(tenant, Tag::Exception, &e.value)?;
            let expires = x.grant.as_ref().and_then(|g| g.value.expires_at);
            if x.revoked_at.is_some() {
                (None, None)
            } else {
                (Some(e.value.clone()), expires.map(Timestamp))
            }
        }
        None => (None, None),
    };
    let mut event_ids = cond.ids.clone();
    event_ids.extend(ids(&facts.approval_ids));
    let environments: Vec<Environment> = cond.environments.into_iter().collect();
    let risk = risk_score(ov, tenant, rule, subject, &environments)?;
    let row = FindingRow {
        finding_id: key.to_owned(),
        rule_id: rule.id.to_owned(),
        title: rule.title.to_owned(),
        severity: rule.severity,
        status: if open {
            FindingStatus::Open
        } else {
            FindingStatus::Closed
        },
        subject: subject.to_owned(),
        owner: facts.owner.as_ref().map(|o| o.value.clone()),
        due_at: Some(Timestamp(
            facts
                .due_at
                .as_ref()
                .map_or(opened_at + rules::sla_days(rule.severity) * DAY_MS, |d| {
                    d.value
                }),
        )),
        opened_at: Timestamp(opened_at),
        closed_at: closed_at.map(Timestamp),
        resolution,
        frameworks: rule.frameworks.iter().map(|f| (*f).to_owned()).collect(),
        event_ids,
        occurrences: cond.occurrences,
        exception_id,
        exception_expires_at,
        asserted_by: facts.asserted.as_ref().and_then(|a| a.value.clone()),
        first_occurrence_at: Timestamp(cond.opened_at),
        last_occurrence_at: Timestamp(cond.last_trigger),
        environments,
        risk,
    };
    let derived = Derived {
        row: Some(ViewRow::Finding(row)),
        stamp,
        follow,
    };
    Ok((derived, cond.last_trigger))
}

/// The risk of finding `rule` about `subject` raised in `environments`
/// ([`aispm_schemas::risk`]): its resource's registration (criticality, exposure, scopes), the
/// data classes and privileged actions seen with it and, for a finding about an agent, the
/// agent's reach. Every aggregate read here marks the finding dirty when its part of the
/// factors changes (`apply.rs`: `agent_risk_changed`, the registry), so the row stays a pure
/// function of the aggregates. [`risk_stamp`] is the newest event stamp behind what it reads.
fn risk_score(
    ov: &mut Overlay<'_>,
    tenant: &str,
    rule: Rule,
    subject: &str,
    environments: &[Environment],
) -> Result<RiskScore> {
    let mut inputs = risk::Inputs {
        severity: rule.severity,
        asset: risk::Asset::None,
        environments: environments.to_vec(),
        public: None,
        auth_required: None,
        data_classes: BTreeSet::new(),
        privileged_scopes: false,
        privileged_actions: BTreeSet::new(),
        reach: None,
    };
    let from_registration = |inputs: &mut risk::Inputs, reg: Option<&Lww<Registration>>| {
        let reg = reg.map(|r| &r.value);
        inputs.asset = match reg {
            Some(r) => risk::Asset::Registered(r.criticality),
            None => risk::Asset::Unregistered,
        };
        inputs.public = reg.and_then(|r| r.public);
        inputs.auth_required = reg.and_then(|r| r.auth_required);
        inputs.privileged_scopes =
            reg.is_some_and(|r| r.scopes.iter().any(|s| risk::privileged_scope(s)));
    };
    // The asset the finding is about (the catalog's `Rule::subject`); a control's finding
    // reads the control instead.
    let asset = rule.asset_key(subject);
    if rule.subject == rules::Subject::EndpointAndClass {
        let class = subject.rsplit_once('/').map_or("", |(_, c)| c);
        inputs.data_classes.insert(class.to_owned());
    }
    if rule.subject == rules::Subject::Control {
        ov.with(tenant, Tag::Control, subject, |c: &ControlAgg| {
            from_registration(&mut inputs, c.registration.as_ref());
            inputs.privileged_actions = c
                .action_kinds
                .iter()
                .filter(|k| risk::privileged_action(k))
                .cloned()
                .collect();
        })?;
    }
    if let Some(key) = asset {
        let is_agent = key.starts_with("agent/");
        // A finding about one data class reads that class, not every class the asset saw.
        let data_class_rule = rule.subject == rules::Subject::EndpointAndClass;
        ov.with(tenant, Tag::Asset, &key, |a: &AssetAgg| {
            from_registration(&mut inputs, a.registration.as_ref());
            if !data_class_rule {
                inputs.data_classes = a.data_classes.clone();
                inputs.privileged_actions = a.privileged_actions.clone();
            }
            if is_agent {
                inputs.reach = Some(a.reach_counts());
            }
        })?;
    }
    Ok(risk::score(&inputs))
}

/// The newest event stamp behind what a finding's risk reads ([`risk_score`]): the
/// registration and the newest decision of its control or asset. A finding's change names it
/// whether the finding exists or not, so that the change that deletes a row is never older
/// than the row it deletes (no row's `changed_at` goes backwards on the views topic).
fn risk_stamp(ov: &mut Overlay<'_>, tenant: &str, rule: Rule, subject: &str) -> Result<Stamp> {
    let mut stamp: Stamp = (0, String::new());
    if rule.subject == rules::Subject::Control {
        stamp = ov.with(tenant, Tag::Control, subject, |c: &ControlAgg| {
            newest([c.registration.as_ref().map(|r| &r.at), c.recent.last()])
        })?;
    }
    if let Some(key) = rule.asset_key(subject) {
        stamp = ov.with(tenant, Tag::Asset, &key, |a: &AssetAgg| {
            newest([
                a.registration.as_ref().map(|r| &r.at),
                a.last_decision.as_ref(),
            ])
        })?;
    }
    Ok(stamp)
}

/// The first occurrence after a resolution at `resolved_at`, from the newest occurrences
/// kept (`recent`, oldest first). Exact when they reach back to the resolution; when more
/// occurrences followed it than are kept, the resolution time itself: no later than the true
/// reopening, so the SLA never runs from later than it should.
fn reopened_at(recent: &[Stamp], resolved_at: i64) -> i64 {
    match recent.first() {
        Some(oldest) if oldest.0 <= resolved_at => recent
            .iter()
            .find(|s| s.0 > resolved_at)
            .map_or(resolved_at, |s| s.0),
        _ => resolved_at,
    }
}

fn exception(ov: &mut Overlay<'_>, tenant: &str, key: &str) -> Result<Derived> {
    let x: ExceptionAgg = ov.get(tenant, Tag::Exception, key)?;
    let stamp = newest([x.ids.last()]);
    let granted_at = if x.break_glass {
        x.invoked_at
    } else {
        x.grant.as_ref().map(|g| g.at.0)
    };
    let Some(granted_at) = granted_at else {
        return Ok(Derived::new(None, stamp));
    };
    let g = x
        .grant
        .as_ref()
        .map(|g| g.value.clone())
        .unwrap_or_default();
    let row = ExceptionRow {
        exception_id: key.to_owned(),
        kind: if x.break_glass {
            ExceptionKind::BreakGlass
        } else {
            ExceptionKind::Exception
        },
        finding_id: g.finding_id,
        control_id: g.control_id,
        decision_id: g.decision_id,
        owner: g.owner,
        actor: g.actor,
        reason: g.reason,
        granted_at: Timestamp(granted_at),
        expires_at: g.expires_at.map(Timestamp),
        revoked: x.revoked_at.is_some_and(|r| r >= granted_at),
        reviewed_at: x.reviewed.as_ref().map(|r| Timestamp(r.at.0)),
        reviewed_by: x.reviewed.as_ref().map(|r| r.value.clone()),
        event_ids: ids(&x.ids),
        asserted_by: g.asserted_by,
    };
    Ok(Derived::new(Some(ViewRow::Exception(row)), stamp))
}

/// A validation row, its signature state derived from the tenant's validator keys now.
fn validation(ov: &mut Overlay<'_>, tenant: &str, key: &str) -> Result<Derived> {
    let v: Option<Lww<ValidationRecord>> = ov.get(tenant, Tag::Validation, key)?;
    let Some(l) = v else {
        return Ok(Derived::new(None, (0, String::new())));
    };
    let mut row = l.value.row;
    row.signature_state = match &row.evidence_id {
        Some(evidence_id) => claim_state(
            ov,
            tenant,
            &l.value.claim,
            evidence_id,
            l.value.sha256.as_deref(),
            l.value.signature.as_deref(),
            row.key_id.as_deref(),
        )?,
        None => SignatureState::Unsigned,
    };
    let root_stamp = match &row.key_id {
        Some(k) => {
            let root: AssetAgg = ov.get(tenant, Tag::Asset, &format!("trust_root/{k}"))?;
            root.registration.map(|r| r.at)
        }
        None => None,
    };
    let stamp = newest([Some(&l.at), root_stamp.as_ref()]);
    Ok(Derived::new(Some(ViewRow::Validation(row)), stamp))
}

fn evidence(ov: &mut Overlay<'_>, tenant: &str, key: &str) -> Result<Derived> {
    let ev: EvidenceAgg = ov.get(tenant, Tag::Evidence, key)?;
    let Some(rec) = ev.record else {
        return Ok(Derived::new(None, (0, String::new())));
    };
    let state = signature_state(ov, tenant, key, &rec.value)?;
    let root_stamp = match &rec.value.key_id {
        Some(k) => {
            let root: AssetAgg = ov.get(tenant, Tag::Asset, &format!("trust_root/{k}"))?;
            root.registration.map(|r| r.at)
        }
        None => None,
    };
    let stamp = newest([Some(&rec.at), root_stamp.as_ref()]);
    let r = rec.value;
    let row = EvidenceRow {
        evidence_id: key.to_owned(),
        event_id: r.event_id,
        sha256: r.sha256,
        uri: r.uri,
        signature_state: state,
        key_id: r.key_id,
        recorded_at: Timestamp(r.recorded_at),
        synthetic: r.synthetic,
        action_kind: r.action_kind,
        asserted_by: r.asserted_by,
        environment: r.environment,
        agent_id: r.agent_id,
        control_id: r.control_id,
    };
    Ok(Derived::new(Some(ViewRow::Evidence(row)), stamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Lww, Registration};
    use aispm_schemas::{ActionKind, DecisionEvent, Environment, InputEvent, Mode, Risk, Verdict};
    use proptest::prelude::*;

    fn decision() -> DecisionEvent {
        let json = serde_json::json!({"type": "decision", "event_id": "e1", "tenant_id": "acme",
            "occurred_at": "2026-11-21T10:00:00Z", "source": "gw", "agent_id": "a1",
            "actor": "alice", "environment": "production", "action_kind": "file",
            "target": "/etc/passwd", "mode": "enforced", "verdict": "deny", "risk": "high"});
        match InputEvent::from_json(json) {
            Ok(InputEvent::Decision(d)) => d,
            other => panic!("not a decision: {other:?}"),
        }
    }

    /// Counts `decisions` (each at its minute, ids `e0`, `e1`, …) into `agg` in turn with
    /// `count`, and checks that each that `moves` (asked first) says moves only counts leaves
    /// `state` as it was; the first must move it.
    fn judged<A>(
        agg: &mut A,
        decisions: impl Iterator<Item = (i64, DecisionEvent)>,
        moves: fn(&A, &DecisionEvent, &Stamp) -> bool,
        count: fn(&mut A, &DecisionEvent, &Stamp),
        state: impl Fn(&A) -> Option<u128>,
    ) -> Result<(), TestCaseError> {
        let mut moved = 0;
        for (i, (minute, mut d)) in decisions.enumerate() {
            d.occurred_at = aispm_schemas::Timestamp(minute * 60_000);
            d.event_id = format!("e{i}");
            let at = (d.occurred_at.0, d.event_id.clone());
            let said = moves(agg, &d, &at);
            let before = state(agg);
            count(agg, &d, &at);
            if said {
                moved += 1;
            } else {
                prop_assert_eq!(state(agg), before, "decision {} moved the state", i);
            }
        }
        prop_assert!(moved >= 1, "the first decision moves it");
        Ok(())
    }

    proptest! {
        /// A decision that `AssetAgg::named_moves_state` says moves only the asset's counts
        /// leaves its coverage row's state (`ViewRow::hash_state`) as it was, whatever came
        /// before it and in whatever order: such a row may wait for the epoch's end.
        #[test]
        fn a_decision_said_to_move_only_counts_leaves_the_coverage_rows_state(
            registration in proptest::option::of(any::<bool>()),
            steps in proptest::collection::vec((0i64..20, any::<bool>(), 0usize..3), 1..40),
        ) {
            let mut a = AssetAgg::default();
            if let Some(retired) = registration {
                let value = Registration { retired, ..Registration::default() };
                a.registration = Some(Lww { at: (5 * 60_000, "r".into()), value });
                a.registered_since = (!retired).then_some(5 * 60_000);
            }
            let environments = [Environment::Trial, Environment::Pilot, Environment::Production];
            let state = |a: &AssetAgg| {
                coverage_row(a, "agent/a1").row.as_ref().and_then(crate::batch::state_digest)
            };
            let decisions = steps.into_iter().map(|(minute, synthetic, env)| {
                let mut d = decision();
                d.synthetic = synthetic;
                d.environment = environments[env];
                (minute, d)
            });
            judged(&mut a, decisions, AssetAgg::named_moves_state, AssetAgg::named_by, state)?;
        }

        /// A decision that `ControlAgg::decision_moves_state` says moves only the control's
        /// counts leaves the control row's state as it was, whatever came before it: modes,
        /// risks, environments, action kinds and policies in any order, the control
        /// registered, retired, quarantined or not.
        #[test]
        fn a_decision_said_to_move_only_counts_leaves_the_control_rows_state(
            registration in proptest::option::of(0u8..3),
            steps in proptest::collection::vec(
                (0i64..20, any::<bool>(), 0usize..4, 0usize..3, 0usize..3, 0usize..3),
                1..40,
            ),
        ) {
            let mut c = ControlAgg::default();
            if let Some(which) = registration {
                let value = Registration {
                    retired: which == 1,
                    trust: (which == 2).then(|| "quarantined".to_owned()),
                    ..Registration::default()
                };
                c.registration = Some(Lww { at: (5 * 60_000, "r".into()), value });
            }
            let environments = [Environment::Trial, Environment::Pilot, Environment::Production];
            let risks = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical];
            let kinds = [ActionKind::File, ActionKind::Command, ActionKind::Git];
            let state = |c: &ControlAgg| {
                control_row(c, "c1").row.as_ref().and_then(crate::batch::state_digest)
            };
            let decisions = steps.into_iter().enumerate().map(
                |(i, (minute, shadow, risk, env, kind, policy))| {
                    let mut d = decision();
                    d.mode = if shadow { Mode::Shadow } else { Mode::Enforced };
                    d.risk = risks[risk];
                    d.verdict = if i % 3 == 0 { Verdict::Allow } else { Verdict::Deny };
                    d.environment = environments[env];
                    d.action_kind = kinds[kind];
                    d.policy_id = (policy > 0).then(|| format!("p{policy}"));
                    (minute, d)
                },
            );
            judged(&mut c, decisions, ControlAgg::decision_moves_state, ControlAgg::decided, state)?;
        }
    }
}
