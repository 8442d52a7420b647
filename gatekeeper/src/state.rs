//! Per-tenant state folded from `aispm.views.v1`: the rows the blocker rules read, by view and
//! row key. Only what a rule can use is kept (open findings, unreviewed break-glass, live
//! exceptions, real evidence), so memory follows what can block, not the event volume.

use aispm_schemas::Timestamp;
use aispm_schemas::views::{
    ControlRow, CoverageKind, CoverageRow, DeliveryRow, ExceptionKind, ExceptionRow, FindingRow,
    FindingStatus, SignatureState, ValidationRow, ViewName, ViewRow,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The state of one tenant, as the blocker rules see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantState {
    /// Coverage rows of kind `action_path`, by action kind (`file`, `command`, …; the row key
    /// is `action_path/{kind}`).
    pub action_paths: BTreeMap<String, CoverageRow>,
    /// Control rows by row key (`{control_id}` or `(none):{action_kind}`).
    pub controls: BTreeMap<String, ControlRow>,
    /// Open findings by finding id; closed ones are dropped.
    pub open_findings: BTreeMap<String, FindingRow>,
    /// Exceptions that can still block: unrevoked exceptions with an expiry and a finding, and
    /// break-glass events not yet reviewed.
    pub exceptions: BTreeMap<String, ExceptionRow>,
    /// Real evidence (not synthetic, signature not invalid), by recording time.
    pub evidence: EvidenceIndex,
    /// Latest validation per `{check_kind}/{subject}`.
    pub validations: BTreeMap<String, ValidationRow>,
    /// Latest delivery per report id.
    pub deliveries: BTreeMap<String, DeliveryRow>,
}

/// Row-key prefix of action-path coverage rows.
const ACTION_PATH: &str = "action_path/";

/// The evidence that counts for freshness, ordered by recording time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvidenceIndex {
    by_id: HashMap<String, Timestamp>,
    by_time: BTreeSet<(Timestamp, String)>,
}

impl EvidenceIndex {
    pub fn upsert(&mut self, id: &str, recorded_at: Timestamp) {
        self.remove(id);
        self.by_id.insert(id.to_owned(), recorded_at);
        self.by_time.insert((recorded_at, id.to_owned()));
    }

    pub fn remove(&mut self, id: &str) {
        if let Some(t) = self.by_id.remove(id) {
            self.by_time.remove(&(t, id.to_owned()));
        }
    }

    /// The newest evidence (latest recording time, then greatest id).
    pub fn newest(&self) -> Option<(Timestamp, &str)> {
        self.by_time.last().map(|(t, id)| (*t, id.as_str()))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Whether an evidence row counts for freshness: real traffic, and not a broken signature.
pub fn evidence_counts(synthetic: bool, signature: SignatureState) -> bool {
    !synthetic && signature != SignatureState::Invalid
}

/// A view row that does not belong to the view it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongRow {
    pub view: ViewName,
    pub row: ViewName,
}

impl TenantState {
    /// Applies the upsert (`Some(row)`) or delete (`None`) of the row `key` of `view`.
    /// Returns whether anything a rule reads changed.
    pub fn apply(
        &mut self,
        view: ViewName,
        key: &str,
        row: Option<ViewRow>,
    ) -> Result<bool, WrongRow> {
        if let Some(r) = &row
            && r.view() != view
        {
            return Err(WrongRow {
                view,
                row: r.view(),
            });
        }
        Ok(match (view, row) {
            (ViewName::Coverage, Some(ViewRow::Coverage(r))) => {
                if r.kind == CoverageKind::ActionPath {
                    let path = key.strip_prefix(ACTION_PATH).unwrap_or(&r.id).to_owned();
                    replace(&mut self.action_paths, &path, Some(r))
                } else {
                    false
                }
            }
            (ViewName::Coverage, None) => match key.strip_prefix(ACTION_PATH) {
                Some(path) => replace(&mut self.action_paths, path, None),
                None => false,
            },
            (ViewName::Controls, Some(ViewRow::Control(r))) => {
                replace(&mut self.controls, key, Some(r))
            }
            (ViewName::Controls, None) => replace(&mut self.controls, key, None),
            (ViewName::Findings, Some(ViewRow::Finding(r))) => {
                let keep = (r.status == FindingStatus::Open).then_some(r);
                replace(&mut self.open_findings, key, keep)
            }
            (ViewName::Findings, None) => replace(&mut self.open_findings, key, None),
            (ViewName::Exceptions, Some(ViewRow::Exception(r))) => {
                let keep = exception_can_block(&r).then_some(r);
                replace(&mut self.exceptions, key, keep)
            }
            (ViewName::Exceptions, None) => replace(&mut self.exceptions, key, None),
            (ViewName::Evidence, Some(ViewRow::Evidence(r))) => {
                let before = self.evidence.newest().map(|(t, id)| (t, id.to_owned()));
                if evidence_counts(r.synthetic, r.signature_state) {
                    self.evidence.upsert(key, r.recorded_at);
                } else {
                    self.evidence.remove(key);
                }
                before != self.evidence.newest().map(|(t, id)| (t, id.to_owned()))
            }
            (ViewName::Evidence, None) => {
                let before = self.evidence.newest().map(|(t, id)| (t, id.to_owned()));
                self.evidence.remove(key);
                before != self.evidence.newest().map(|(t, id)| (t, id.to_owned()))
            }
            (ViewName::Validations, Some(ViewRow::Validation(r))) => {
                replace(&mut self.validations, key, Some(r))
            }
            (ViewName::Validations, None) => replace(&mut self.validations, key, None),
            (ViewName::ReportDeliveries, Some(ViewRow::Delivery(r))) => {
                replace(&mut self.deliveries, key, Some(r))
            }
            (ViewName::ReportDeliveries, None) => replace(&mut self.deliveries, key, None),
            // Every (view, row) pair was matched above once the row's view equals `view`.
            (_, Some(_)) => false,
        })
    }
}

/// An exception row a rule may still act on.
fn exception_can_block(r: &ExceptionRow) -> bool {
    match r.kind {
        ExceptionKind::BreakGlass => r.reviewed_at.is_none(),
        ExceptionKind::Exception => !r.revoked && r.expires_at.is_some() && r.finding_id.is_some(),
    }
}

/// Sets or removes `key`; whether the map changed.
fn replace<T: PartialEq>(map: &mut BTreeMap<String, T>, key: &str, value: Option<T>) -> bool {
    match value {
        Some(v) => {
            if map.get(key) == Some(&v) {
                false
            } else {
                map.insert(key.to_owned(), v);
                true
            }
        }
        None => map.remove(key).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::{evidence, exception, finding};
    use aispm_schemas::Risk;

    #[test]
    fn keeps_only_what_can_block() {
        let mut s = TenantState::default();
        let f = finding("f1", Risk::High, None, None);
        assert_eq!(
            s.apply(ViewName::Findings, "f1", Some(ViewRow::Finding(f.clone()))),
            Ok(true)
        );
        assert_eq!(
            s.apply(ViewName::Findings, "f1", Some(ViewRow::Finding(f.clone()))),
            Ok(false)
        );
        let mut closed = f;
        closed.status = FindingStatus::Closed;
        assert_eq!(
            s.apply(ViewName::Findings, "f1", Some(ViewRow::Finding(closed))),
            Ok(true)
        );
        assert!(s.open_findings.is_empty());

        let mut bg = exception("bg1", ExceptionKind::BreakGlass, Timestamp(0), None, None);
        assert_eq!(
            s.apply(
                ViewName::Exceptions,
                "bg1",
                Some(ViewRow::Exception(bg.clone()))
            ),
            Ok(true)
        );
        bg.reviewed_at = Some(Timestamp(5));
        assert_eq!(
            s.apply(ViewName::Exceptions, "bg1", Some(ViewRow::Exception(bg))),
            Ok(true)
        );
        assert!(s.exceptions.is_empty());

        // Synthetic and invalidly signed evidence does not count for freshness.
        let ev = evidence("e1", Timestamp(10), true, SignatureState::Verified);
        assert_eq!(
            s.apply(ViewName::Evidence, "e1", Some(ViewRow::Evidence(ev))),
            Ok(false)
        );
        let ev = evidence("e2", Timestamp(10), false, SignatureState::Invalid);
        assert_eq!(
            s.apply(ViewName::Evidence, "e2", Some(ViewRow::Evidence(ev))),
            Ok(false)
        );
        let ev = evidence("e3", Timestamp(10), false, SignatureState::Unsigned);
        assert_eq!(
            s.apply(ViewName::Evidence, "e3", Some(ViewRow::Evidence(ev))),
            Ok(true)
        );
        let ev = evidence("e4", Timestamp(5), false, SignatureState::Verified);
        assert_eq!(
            s.apply(ViewName::Evidence, "e4", Some(ViewRow::Evidence(ev))),
            Ok(false)
        );
        assert_eq!(s.evidence.newest(), Some((Timestamp(10), "e3")));
        assert_eq!(s.apply(ViewName::Evidence, "e3", None), Ok(true));
        assert_eq!(s.evidence.newest(), Some((Timestamp(5), "e4")));
        assert_eq!(s.evidence.len(), 1);
    }

    #[test]
    fn action_paths_are_keyed_by_action_kind() {
        let mut s = TenantState::default();
        let mut row = crate::rules::tests::path("git", 3, 3);
        assert_eq!(
            s.apply(
                ViewName::Coverage,
                "action_path/git",
                Some(ViewRow::Coverage(row.clone()))
            ),
            Ok(true)
        );
        assert!(s.action_paths.contains_key("git"));
        // Other coverage kinds are not kept.
        row.kind = CoverageKind::Repo;
        assert_eq!(
            s.apply(ViewName::Coverage, "repo/git", Some(ViewRow::Coverage(row))),
            Ok(false)
        );
        assert_eq!(s.apply(ViewName::Coverage, "repo/git", None), Ok(false));
        assert_eq!(
            s.apply(ViewName::Coverage, "action_path/git", None),
            Ok(true)
        );
        assert!(s.action_paths.is_empty());
    }

    #[test]
    fn a_row_of_another_view_is_refused() {
        let mut s = TenantState::default();
        let f = finding("f1", Risk::High, None, None);
        assert_eq!(
            s.apply(ViewName::Controls, "f1", Some(ViewRow::Finding(f))),
            Err(WrongRow {
                view: ViewName::Controls,
                row: ViewName::Findings
            })
        );
    }
}
