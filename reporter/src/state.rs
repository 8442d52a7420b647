//! The reporter's own model of every tenant, folded from the topics it follows: view rows
//! (`aispm.views.v1`), blockers (`aispm.blockers.v1`), readiness (`aispm.readiness.v1`) and the
//! report providers and trust roots registered on `aispm.registry.v1`.
//!
//! Everything here is derived: the follower rebuilds it by replaying the compacted state topics
//! and the registry from the beginning at start, so it is never persisted.
//!
//! The view rows, which grow with the events, are not held in memory: they go to a RocksDB
//! database ([`crate::rows`]) that is wiped at start, and are read back per report
//! ([`Shared::tenant`]). What stays in memory per tenant ([`TenantMeta`]) is small and does not
//! grow with the events: blockers, readiness, report providers, trust roots.

use crate::Result;
use crate::rows::{self, Rows};
use aispm_schemas::{
    AssetKind, AssetStatus, Blocker, ControlRow, CoverageRow, DeliveryRow, EvidenceRow,
    ExceptionRow, FindingRow, Readiness, RegistryEvent, Stage, Timestamp, ValidationRow,
    ViewChange, ViewName, ViewOp, ViewRow,
};
use rocksdb::WriteBatch;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

/// One update the follower decoded from a topic.
#[derive(Debug, Clone)]
pub enum Update {
    /// A view row changed (upsert or delete).
    View(ViewChange),
    /// A null record on the views topic: the row under `{tenant}/{view}/{row key}` is gone.
    ViewTombstone {
        tenant_id: String,
        view: ViewName,
        key: String,
    },
    /// A blocker is open.
    Blocker(Blocker),
    /// A null record on the blockers topic: the blocker was resolved.
    BlockerResolved {
        tenant_id: String,
        stage: Stage,
        blocker_id: String,
    },
    /// A readiness verdict.
    Readiness(Readiness),
    /// An asset or validation registered for a tenant.
    Registry(RegistryEvent),
}

/// A change an update made to the state that someone may want to hear about
/// ([`crate::webhooks`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// A blocker that was not open is now.
    BlockerOpened(Blocker),
    /// An open blocker was resolved (its last record before the tombstone).
    BlockerResolved(Blocker),
    /// A stage's verdict differs from the last one (`None`: the stage's first verdict).
    ReadinessChanged {
        before: Option<bool>,
        after: Readiness,
    },
    /// A finding row changed (`None`: it is gone).
    Finding {
        tenant_id: String,
        key: String,
        row: Option<Box<FindingRow>>,
    },
}

/// Everything the reporter knows about one tenant: the view rows read back from the row
/// store and the in-memory rest. Built per report ([`Shared::tenant`]), never kept.
#[derive(Debug, Clone, Default)]
pub struct TenantState {
    pub coverage: BTreeMap<String, CoverageRow>,
    pub controls: BTreeMap<String, ControlRow>,
    pub findings: BTreeMap<String, FindingRow>,
    pub exceptions: BTreeMap<String, ExceptionRow>,
    pub evidence: BTreeMap<String, EvidenceRow>,
    pub validations: BTreeMap<String, ValidationRow>,
    pub deliveries: BTreeMap<String, DeliveryRow>,
    /// Open blockers by stage, then blocker id.
    pub blockers: BTreeMap<Stage, BTreeMap<String, Blocker>>,
    pub readiness: BTreeMap<Stage, Readiness>,
    /// Registered report providers (`report_provider` assets) and their approved recipients.
    pub providers: BTreeMap<String, Vec<String>>,
    /// Registered trust roots (`trust_root` assets) and their base64 Ed25519 public keys.
    pub trust_roots: BTreeMap<String, String>,
    /// Event time of the latest change folded in.
    pub updated_at: Option<Timestamp>,
}

/// Every recipient of every provider, deduplicated and compared case-insensitively.
fn approved_recipients(providers: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut seen = BTreeMap::new();
    for r in providers.values().flatten() {
        seen.entry(r.trim().to_ascii_lowercase())
            .or_insert_with(|| r.trim().to_owned());
    }
    seen.into_values().filter(|r| !r.is_empty()).collect()
}

/// Whether `recipient` is one of `approved` (case-insensitively).
pub fn is_approved(approved: &[String], recipient: &str) -> bool {
    let r = recipient.trim().to_ascii_lowercase();
    approved.iter().any(|a| a.to_ascii_lowercase() == r)
}

impl TenantState {
    /// Puts a view row, by its key, into its view's map.
    pub fn insert(&mut self, key: String, row: ViewRow) {
        match row {
            ViewRow::Coverage(r) => {
                self.coverage.insert(key, r);
            }
            ViewRow::Control(r) => {
                self.controls.insert(key, r);
            }
            ViewRow::Finding(r) => {
                self.findings.insert(key, r);
            }
            ViewRow::Exception(r) => {
                self.exceptions.insert(key, r);
            }
            ViewRow::Evidence(r) => {
                self.evidence.insert(key, r);
            }
            ViewRow::Validation(r) => {
                self.validations.insert(key, r);
            }
            ViewRow::Delivery(r) => {
                self.deliveries.insert(key, r);
            }
        }
    }

    /// Approved recipients: every recipient of every registered report provider, deduplicated
    /// and compared case-insensitively.
    pub fn approved_recipients(&self) -> Vec<String> {
        approved_recipients(&self.providers)
    }

    /// Whether `recipient` is approved for this tenant.
    pub fn is_approved(&self, recipient: &str) -> bool {
        is_approved(&self.approved_recipients(), recipient)
    }

    /// The trust root whose key is `public_key_b64`, if this tenant registered it.
    pub fn trust_root_for(&self, public_key_b64: &str) -> Option<&str> {
        self.trust_roots
            .iter()
            .find(|(_, k)| k.trim() == public_key_b64)
            .map(|(id, _)| id.as_str())
    }
}

/// The part of a tenant's state kept in memory: everything but the view rows. Its size does
/// not grow with the events (blockers and readiness are per stage, providers and trust roots
/// are a handful of registry assets).
#[derive(Debug, Clone, Default)]
pub struct TenantMeta {
    /// Open blockers by stage, then blocker id.
    pub blockers: BTreeMap<Stage, BTreeMap<String, Blocker>>,
    pub readiness: BTreeMap<Stage, Readiness>,
    /// Registered report providers and their approved recipients.
    pub providers: BTreeMap<String, Vec<String>>,
    /// Registered trust roots and their base64 Ed25519 public keys.
    pub trust_roots: BTreeMap<String, String>,
    /// Event time of the latest change folded in.
    pub updated_at: Option<Timestamp>,
}

impl TenantMeta {
    /// Approved recipients (see [`TenantState::approved_recipients`]).
    pub fn approved_recipients(&self) -> Vec<String> {
        approved_recipients(&self.providers)
    }

    fn touch(&mut self, at: Timestamp) {
        self.updated_at = Some(self.updated_at.map_or(at, |u| u.max(at)));
    }

    /// The full state, with no rows yet.
    fn to_state(&self) -> TenantState {
        TenantState {
            blockers: self.blockers.clone(),
            readiness: self.readiness.clone(),
            providers: self.providers.clone(),
            trust_roots: self.trust_roots.clone(),
            updated_at: self.updated_at,
            ..TenantState::default()
        }
    }
}

/// Every tenant's in-memory state.
#[derive(Debug, Default)]
struct State {
    tenants: BTreeMap<String, TenantMeta>,
}

impl State {
    /// Folds one update in: the in-memory part directly, row changes into `batch`. Returns
    /// the change it made, when it is one worth telling.
    fn apply(&mut self, update: Update, batch: &mut WriteBatch) -> Result<Option<Transition>> {
        let mut transition = None;
        match update {
            Update::View(vc) => {
                if vc.tenant_id.contains('\0') {
                    tracing::warn!(view = %vc.view, "Ignored a view row whose tenant id contains NUL.");
                    return Ok(None);
                }
                if vc.view == ViewName::Findings {
                    transition = Some(Transition::Finding {
                        tenant_id: vc.tenant_id.clone(),
                        key: vc.key.clone(),
                        row: match (&vc.op, &vc.row) {
                            (ViewOp::Upsert, Some(ViewRow::Finding(f))) => {
                                Some(Box::new(f.clone()))
                            }
                            _ => None,
                        },
                    });
                }
                let t = self.tenants.entry(vc.tenant_id.clone()).or_default();
                t.touch(vc.changed_at);
                let key = rows::row_key(&vc.tenant_id, vc.view, &vc.key);
                match (vc.op, vc.row) {
                    (ViewOp::Upsert, Some(row)) => match rows::encode_row(vc.view, &row)? {
                        Some(bytes) => batch.put(key, bytes),
                        None => tracing::warn!(
                            key = %vc.key, view = %vc.view,
                            "Ignored a view row of another view's type."
                        ),
                    },
                    // An upsert without a row removes it, as before the rows moved to RocksDB.
                    (ViewOp::Upsert, None) | (ViewOp::Delete, _) => batch.delete(key),
                }
            }
            Update::ViewTombstone {
                tenant_id,
                view,
                key,
            } => {
                if self.tenants.contains_key(&tenant_id) {
                    batch.delete(rows::row_key(&tenant_id, view, &key));
                }
                if view == ViewName::Findings {
                    transition = Some(Transition::Finding {
                        tenant_id,
                        key,
                        row: None,
                    });
                }
            }
            Update::Blocker(b) => {
                let t = self.tenants.entry(b.tenant_id.clone()).or_default();
                t.touch(b.detected_at);
                let opened = b.clone();
                if t.blockers
                    .entry(b.stage)
                    .or_default()
                    .insert(b.blocker_id.clone(), b)
                    .is_none()
                {
                    transition = Some(Transition::BlockerOpened(opened));
                }
            }
            Update::BlockerResolved {
                tenant_id,
                stage,
                blocker_id,
            } => {
                if let Some(t) = self.tenants.get_mut(&tenant_id)
                    && let Some(stage) = t.blockers.get_mut(&stage)
                    && let Some(b) = stage.remove(&blocker_id)
                {
                    transition = Some(Transition::BlockerResolved(b));
                }
            }
            Update::Readiness(r) => {
                let t = self.tenants.entry(r.tenant_id.clone()).or_default();
                t.touch(r.evaluated_at);
                let before = t.readiness.get(&r.stage).map(|p| p.ready);
                if before != Some(r.ready) {
                    transition = Some(Transition::ReadinessChanged {
                        before,
                        after: r.clone(),
                    });
                }
                t.readiness.insert(r.stage, r);
            }
            Update::Registry(e) => {
                let Some(asset) = e.asset else {
                    return Ok(None);
                };
                if !matches!(
                    asset.asset_kind,
                    AssetKind::ReportProvider | AssetKind::TrustRoot
                ) {
                    return Ok(None);
                }
                let t = self.tenants.entry(e.tenant_id).or_default();
                t.touch(e.occurred_at);
                let registered = asset.status == AssetStatus::Registered;
                match asset.asset_kind {
                    AssetKind::ReportProvider if registered => {
                        t.providers.insert(asset.asset_id, asset.recipients);
                    }
                    AssetKind::ReportProvider => {
                        t.providers.remove(&asset.asset_id);
                    }
                    AssetKind::TrustRoot => match asset.public_key {
                        // A key the contract refuses (malformed, weak) registers nothing: the
                        // projector dead-letters that event, and this follows it.
                        Some(key)
                            if registered
                                && aispm_schemas::signature::public_key(&key).is_err() => {}
                        Some(key) if registered => {
                            t.trust_roots.insert(asset.asset_id, key);
                        }
                        _ => {
                            t.trust_roots.remove(&asset.asset_id);
                        }
                    },
                    _ => {}
                }
            }
        }
        Ok(transition)
    }
}

#[derive(Debug)]
struct Inner {
    state: RwLock<State>,
    rows: Rows,
}

/// The state shared between the follower (writer), the API and the cadence (readers).
///
/// The in-memory part sits behind a lock; the rows are in [`Rows`]. A writer changes both under
/// the write lock, and a reader copies the in-memory part and takes a row snapshot under the
/// read lock, so a [`Shared::tenant`] is always one consistent state.
#[derive(Debug, Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

impl Shared {
    /// Empty state whose rows live in a RocksDB database at `rows_dir`; a database left there
    /// by an earlier run is destroyed first (the follower replays the topics from the start).
    pub fn open(rows_dir: &Path) -> Result<Self> {
        Ok(Shared {
            inner: Arc::new(Inner {
                state: RwLock::new(State::default()),
                rows: Rows::open_empty(rows_dir)?,
            }),
        })
    }

    /// Folds a batch of updates in: one `WriteBatch` for the rows, under one write lock.
    /// Returns the transitions, each with the index of the update that made it.
    /// Blocking (RocksDB): call it off the async runtime's worker threads.
    pub fn apply_all(
        &self,
        updates: impl IntoIterator<Item = Update>,
    ) -> Result<Vec<(usize, Transition)>> {
        let mut s = self
            .inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut batch = WriteBatch::default();
        let mut transitions = Vec::new();
        for (i, u) in updates.into_iter().enumerate() {
            if let Some(t) = s.apply(u, &mut batch)? {
                transitions.push((i, t));
            }
        }
        self.inner.rows.write(batch)?;
        Ok(transitions)
    }

    /// One tenant's state with every view row, if the reporter has seen the tenant. Reads all
    /// of the tenant's rows from RocksDB: for report generation, not for lookups. Blocking.
    pub fn tenant(&self, tenant_id: &str) -> Result<Option<TenantState>> {
        let (mut t, snapshot) = {
            let s = self
                .inner
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(meta) = s.tenants.get(tenant_id) else {
                return Ok(None);
            };
            (meta.to_state(), self.inner.rows.snapshot())
        };
        self.inner
            .rows
            .load(&snapshot, tenant_id, |key, row| t.insert(key, row))?;
        Ok(Some(t))
    }

    /// One tenant's in-memory state (no view rows), if the reporter has seen the tenant. Cheap.
    pub fn tenant_meta(&self, tenant_id: &str) -> Option<TenantMeta> {
        let s = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        s.tenants.get(tenant_id).cloned()
    }

    /// The tenant's approved recipients (see [`TenantState::approved_recipients`]); empty for
    /// a tenant the reporter has not seen. Cheap.
    pub fn approved_recipients(&self, tenant_id: &str) -> Vec<String> {
        let s = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        s.tenants
            .get(tenant_id)
            .map(TenantMeta::approved_recipients)
            .unwrap_or_default()
    }

    /// Every tenant the reporter has seen.
    pub fn tenant_ids(&self) -> Vec<String> {
        let s = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        s.tenants.keys().cloned().collect()
    }

    /// How many tenants the reporter has seen.
    pub fn tenant_count(&self) -> usize {
        let s = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        s.tenants.len()
    }

    /// The row store, for its memory and size figures.
    pub fn rows(&self) -> &Rows {
        &self.inner.rows
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aispm_schemas::{Asset, BlockerKind, Environment, FindingStatus, Risk, ViewRow};

    pub(crate) fn finding(id: &str) -> FindingRow {
        FindingRow {
            asserted_by: None,
            finding_id: id.into(),
            rule_id: "r".into(),
            title: "t".into(),
            severity: Risk::High,
            status: FindingStatus::Open,
            subject: "s".into(),
            owner: None,
            due_at: None,
            opened_at: Timestamp(1),
            closed_at: None,
            resolution: None,
            frameworks: vec![],
            event_ids: vec![],
            occurrences: 1,
            exception_id: None,
            exception_expires_at: None,
            first_occurrence_at: Timestamp(1),
            last_occurrence_at: Timestamp(1),
            environments: Vec::new(),
            risk: Default::default(),
        }
    }

    /// The Ed25519 public key of seed 07×32.
    const KEY: &str = "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";

    fn asset(kind: AssetKind, id: &str, status: AssetStatus) -> Asset {
        Asset {
            status,
            public_key: Some(KEY.into()),
            recipients: vec!["CISO@acme.example".into(), "cso@acme.example".into()],
            ..Asset::registered(kind, id)
        }
    }

    fn registry(asset: Asset) -> Update {
        Update::Registry(RegistryEvent {
            event_id: "e".into(),
            tenant_id: "acme".into(),
            occurred_at: Timestamp(5),
            source: "test".into(),
            asset: Some(asset),
            validation: None,
        })
    }

    /// State over a throwaway row database. Bind it as `let (_dir, s)`: the state is dropped
    /// (the database closed) before its directory is removed.
    pub(crate) fn shared() -> (tempfile::TempDir, Shared) {
        let dir = tempfile::tempdir().unwrap();
        let s = Shared::open(&dir.path().join("views-db")).unwrap();
        (dir, s)
    }

    fn apply(s: &Shared, u: Update) {
        s.apply_all([u]).unwrap();
    }

    fn tenant(s: &Shared) -> TenantState {
        s.tenant("acme").unwrap().unwrap()
    }

    #[test]
    fn views_upsert_delete_and_tombstone() {
        let (_dir, s) = shared();
        let change = |op, row| {
            Update::View(ViewChange {
                tenant_id: "acme".into(),
                view: ViewName::Findings,
                key: "r:s".into(),
                op,
                row,
                changed_at: Timestamp(10),
                cause_event_id: "e1".into(),
            })
        };
        apply(
            &s,
            change(ViewOp::Upsert, Some(ViewRow::Finding(finding("r:s")))),
        );
        assert_eq!(tenant(&s).findings.len(), 1);
        assert_eq!(tenant(&s).findings["r:s"], finding("r:s"));
        assert_eq!(tenant(&s).updated_at, Some(Timestamp(10)));
        apply(&s, change(ViewOp::Delete, None));
        assert!(tenant(&s).findings.is_empty());
        apply(
            &s,
            change(ViewOp::Upsert, Some(ViewRow::Finding(finding("r:s")))),
        );
        apply(
            &s,
            Update::ViewTombstone {
                tenant_id: "acme".into(),
                view: ViewName::Findings,
                key: "r:s".into(),
            },
        );
        assert!(tenant(&s).findings.is_empty());
        // A row of the wrong type for the view is ignored, not filed under the wrong view.
        apply(
            &s,
            Update::View(ViewChange {
                tenant_id: "acme".into(),
                view: ViewName::Controls,
                key: "x".into(),
                op: ViewOp::Upsert,
                row: Some(ViewRow::Finding(finding("x"))),
                changed_at: Timestamp(11),
                cause_event_id: "e2".into(),
            }),
        );
        assert!(tenant(&s).controls.is_empty());
        assert!(s.tenant("other").unwrap().is_none());
    }

    #[test]
    fn one_batch_is_folded_in_order_and_tenants_stay_apart() {
        let (_dir, s) = shared();
        let upsert = |tenant: &str, key: &str| {
            Update::View(ViewChange {
                tenant_id: tenant.into(),
                view: ViewName::Findings,
                key: key.into(),
                op: ViewOp::Upsert,
                row: Some(ViewRow::Finding(finding(key))),
                changed_at: Timestamp(1),
                cause_event_id: "e".into(),
            })
        };
        let delete = |tenant: &str, key: &str| Update::ViewTombstone {
            tenant_id: tenant.into(),
            view: ViewName::Findings,
            key: key.into(),
        };
        s.apply_all([
            upsert("acme", "a"),
            upsert("acme", "b"),
            upsert("acme-eu", "a"),
            delete("acme", "a"),
            upsert("acme", "c/with\0odd:key"),
            // A tombstone for a tenant never seen creates nothing.
            delete("ghost", "a"),
        ])
        .unwrap();
        let keys: Vec<String> = tenant(&s).findings.into_keys().collect();
        assert_eq!(keys, ["b", "c/with\0odd:key"]);
        assert_eq!(s.tenant("acme-eu").unwrap().unwrap().findings.len(), 1);
        assert_eq!(s.tenant_ids(), ["acme", "acme-eu"]);
        assert_eq!(s.tenant_count(), 2);
    }

    #[test]
    fn every_view_round_trips_through_the_row_store() {
        use aispm_schemas::{ControlState, CoverageKind, ExceptionKind, SignatureState};
        let (_dir, s) = shared();
        let rows = [
            ViewRow::Coverage(
                CoverageRow {
                    asserted_by: None,
                    kind: CoverageKind::Agent,
                    id: "a1".into(),
                    registered: true,
                    retired: false,
                    owner: Some("o".into()),
                    trust: None,
                    decisions: 3,
                    synthetic_decisions: 1,
                    first_seen: Some(Timestamp(1)),
                    last_seen: Some(Timestamp(2)),
                    last_decision_id: Some("d".into()),
                    last_real_decision_id: None,
                    shadow_ai: false,
                    environments: vec![],
                }
                .only_in(Environment::Production),
            ),
            ViewRow::Control(
                ControlRow {
                    asserted_by: None,
                    control_id: "c1".into(),
                    state: ControlState::Shadowed,
                    registered: false,
                    enforced_decisions: 0,
                    shadow_decisions: 2,
                    high_risk_decisions: 1,
                    action_kinds: vec!["git".into()],
                    framework_mappings: vec!["soc2:CC6.1".into()],
                    decision_ids: vec!["d1".into(), "d2".into()],
                    last_decision_at: None,
                    environments: vec![],
                    last_enforced_at: None,
                    policies: vec![],
                    approvals: vec![],
                }
                .only_in(Environment::Production),
            ),
            ViewRow::Finding(finding("f1")),
            ViewRow::Exception(ExceptionRow {
                asserted_by: None,
                exception_id: "x1".into(),
                kind: ExceptionKind::BreakGlass,
                finding_id: None,
                control_id: Some("c1".into()),
                decision_id: None,
                owner: None,
                actor: Some("bob".into()),
                reason: Some("outage".into()),
                granted_at: Timestamp(5),
                expires_at: Some(Timestamp(9)),
                revoked: false,
                reviewed_at: None,
                reviewed_by: None,
                event_ids: vec!["e".into()],
            }),
            ViewRow::Evidence(EvidenceRow {
                asserted_by: None,
                evidence_id: "ev1".into(),
                event_id: "d1".into(),
                sha256: "ab".repeat(32),
                uri: "s3://bucket/ev1".into(),
                signature_state: SignatureState::Verified,
                key_id: Some("k".into()),
                recorded_at: Timestamp(7),
                synthetic: true,
                action_kind: Some("file".into()),
                environment: Some(Environment::Production),
                agent_id: None,
                control_id: None,
            }),
            ViewRow::Validation(ValidationRow {
                asserted_by: None,
                check_kind: "tenant_isolation".into(),
                subject: None,
                result: "pass".into(),
                evidence_id: Some("ev1".into()),
                validated_at: Timestamp(8),
                event_id: "v".into(),
                detail: None,
                environment: Some(Environment::Production),
                signature_state: SignatureState::Verified,
                key_id: Some("validator-key".into()),
            }),
            ViewRow::Delivery(DeliveryRow {
                asserted_by: None,
                report_id: "r1".into(),
                report_type: "cso".into(),
                channel: "smtp".into(),
                outcome: "delivered".into(),
                recipients: vec!["ciso@acme.example".into()],
                approved_recipients: true,
                message_id: Some("<m@x>".into()),
                packet_sha256: "cd".repeat(32),
                attempt: 2,
                delivered_at: Timestamp(9),
                event_id: "r1/attempt/2".into(),
                evidence_id: None,
                error: None,
            }),
        ];
        s.apply_all(rows.iter().map(|row| {
            Update::View(ViewChange {
                tenant_id: "acme".into(),
                view: row.view(),
                key: "k".into(),
                op: ViewOp::Upsert,
                row: Some(row.clone()),
                changed_at: Timestamp(1),
                cause_event_id: "e".into(),
            })
        }))
        .unwrap();
        let t = tenant(&s);
        let back = [
            ViewRow::Coverage(t.coverage["k"].clone()),
            ViewRow::Control(t.controls["k"].clone()),
            ViewRow::Finding(t.findings["k"].clone()),
            ViewRow::Exception(t.exceptions["k"].clone()),
            ViewRow::Evidence(t.evidence["k"].clone()),
            ViewRow::Validation(t.validations["k"].clone()),
            ViewRow::Delivery(t.deliveries["k"].clone()),
        ];
        assert_eq!(back, rows);
    }

    #[test]
    fn blockers_open_and_resolve() {
        let (_dir, s) = shared();
        let b = Blocker {
            tenant_id: "acme".into(),
            stage: Stage::Production,
            blocker_id: "b1".into(),
            kind: BlockerKind::EvidenceStale,
            meaning: "m".into(),
            resolution: "r".into(),
            subject: None,
            evidence: vec![],
            detected_at: Timestamp(3),
        };
        apply(&s, Update::Blocker(b));
        assert_eq!(tenant(&s).blockers[&Stage::Production].len(), 1);
        apply(
            &s,
            Update::BlockerResolved {
                tenant_id: "acme".into(),
                stage: Stage::Production,
                blocker_id: "b1".into(),
            },
        );
        assert!(tenant(&s).blockers[&Stage::Production].is_empty());
    }

    #[test]
    fn recipients_come_from_registered_report_providers() {
        let (_dir, s) = shared();
        apply(
            &s,
            registry(asset(
                AssetKind::ReportProvider,
                "smtp-main",
                AssetStatus::Registered,
            )),
        );
        let t = tenant(&s);
        assert_eq!(
            t.approved_recipients(),
            ["CISO@acme.example", "cso@acme.example"]
        );
        assert_eq!(s.approved_recipients("acme"), t.approved_recipients());
        assert!(s.approved_recipients("other").is_empty());
        assert!(t.is_approved("ciso@ACME.example"));
        assert!(!t.is_approved("attacker@evil.example"));
        apply(
            &s,
            registry(asset(
                AssetKind::ReportProvider,
                "smtp-main",
                AssetStatus::Retired,
            )),
        );
        assert!(tenant(&s).approved_recipients().is_empty());
        assert!(s.approved_recipients("acme").is_empty());

        apply(
            &s,
            registry(asset(
                AssetKind::TrustRoot,
                "reporter-key",
                AssetStatus::Registered,
            )),
        );
        assert_eq!(tenant(&s).trust_root_for(KEY), Some("reporter-key"));
        // A weak key (the identity point) registers nothing and replaces nothing.
        let weak = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        for id in ["weak-key", "reporter-key"] {
            apply(
                &s,
                registry(Asset {
                    public_key: Some(weak.into()),
                    ..asset(AssetKind::TrustRoot, id, AssetStatus::Registered)
                }),
            );
        }
        assert_eq!(tenant(&s).trust_root_for(weak), None);
        assert_eq!(tenant(&s).trust_root_for(KEY), Some("reporter-key"));
        assert_eq!(tenant(&s).trust_roots.len(), 1);
        // Other asset kinds are not the reporter's business.
        apply(
            &s,
            registry(asset(AssetKind::Agent, "a1", AssetStatus::Registered)),
        );
        assert_eq!(s.tenant_ids().len(), 1);
    }
}
