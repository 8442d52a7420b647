//! The reporter's own model of every tenant, folded from the topics it follows: view rows
//! (`aispm.views.v1`), blockers (`aispm.blockers.v1`), readiness (`aispm.readiness.v1`) and the
//! report providers and trust roots registered on `aispm.registry.v1`.
//!
//! Everything here is derived: the follower rebuilds it by replaying the compacted state topics
//! and the registry from the beginning at start, so it is never persisted.

use aispm_schemas::{
    AssetKind, AssetStatus, Blocker, ControlRow, CoverageRow, DeliveryRow, EvidenceRow,
    ExceptionRow, FindingRow, Readiness, RegistryEvent, Stage, Timestamp, ValidationRow,
    ViewChange, ViewName, ViewOp, ViewRow,
};
use std::collections::BTreeMap;
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

/// Everything the reporter knows about one tenant.
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

impl TenantState {
    /// Approved recipients: every recipient of every registered report provider, deduplicated
    /// and compared case-insensitively.
    pub fn approved_recipients(&self) -> Vec<String> {
        let mut seen = BTreeMap::new();
        for r in self.providers.values().flatten() {
            seen.entry(r.trim().to_ascii_lowercase())
                .or_insert_with(|| r.trim().to_owned());
        }
        seen.into_values().filter(|r| !r.is_empty()).collect()
    }

    /// Whether `recipient` is approved for this tenant.
    pub fn is_approved(&self, recipient: &str) -> bool {
        let r = recipient.trim().to_ascii_lowercase();
        self.approved_recipients()
            .iter()
            .any(|a| a.to_ascii_lowercase() == r)
    }

    /// The trust root whose key is `public_key_b64`, if this tenant registered it.
    pub fn trust_root_for(&self, public_key_b64: &str) -> Option<&str> {
        self.trust_roots
            .iter()
            .find(|(_, k)| k.trim() == public_key_b64)
            .map(|(id, _)| id.as_str())
    }

    fn touch(&mut self, at: Timestamp) {
        self.updated_at = Some(self.updated_at.map_or(at, |u| u.max(at)));
    }

    fn apply_row(&mut self, view: ViewName, key: String, row: Option<ViewRow>) {
        macro_rules! put {
            ($map:ident, $variant:ident) => {
                match row {
                    Some(ViewRow::$variant(r)) => {
                        self.$map.insert(key, r);
                    }
                    None => {
                        self.$map.remove(&key);
                    }
                    Some(_) => {
                        tracing::warn!(%key, %view, "Ignored a view row of another view's type.")
                    }
                }
            };
        }
        match view {
            ViewName::Coverage => put!(coverage, Coverage),
            ViewName::Controls => put!(controls, Control),
            ViewName::Findings => put!(findings, Finding),
            ViewName::Exceptions => put!(exceptions, Exception),
            ViewName::Evidence => put!(evidence, Evidence),
            ViewName::Validations => put!(validations, Validation),
            ViewName::ReportDeliveries => put!(deliveries, Delivery),
        }
    }
}

/// Every tenant's state.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub tenants: BTreeMap<String, TenantState>,
}

impl State {
    /// Folds one update in.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::View(vc) => {
                let t = self.tenants.entry(vc.tenant_id).or_default();
                t.touch(vc.changed_at);
                let row = match vc.op {
                    ViewOp::Upsert => vc.row,
                    ViewOp::Delete => None,
                };
                t.apply_row(vc.view, vc.key, row);
            }
            Update::ViewTombstone {
                tenant_id,
                view,
                key,
            } => {
                if let Some(t) = self.tenants.get_mut(&tenant_id) {
                    t.apply_row(view, key, None);
                }
            }
            Update::Blocker(b) => {
                let t = self.tenants.entry(b.tenant_id.clone()).or_default();
                t.touch(b.detected_at);
                t.blockers
                    .entry(b.stage)
                    .or_default()
                    .insert(b.blocker_id.clone(), b);
            }
            Update::BlockerResolved {
                tenant_id,
                stage,
                blocker_id,
            } => {
                if let Some(t) = self.tenants.get_mut(&tenant_id)
                    && let Some(stage) = t.blockers.get_mut(&stage)
                {
                    stage.remove(&blocker_id);
                }
            }
            Update::Readiness(r) => {
                let t = self.tenants.entry(r.tenant_id.clone()).or_default();
                t.touch(r.evaluated_at);
                t.readiness.insert(r.stage, r);
            }
            Update::Registry(e) => {
                let Some(asset) = e.asset else { return };
                if !matches!(
                    asset.asset_kind,
                    AssetKind::ReportProvider | AssetKind::TrustRoot
                ) {
                    return;
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
    }
}

/// The state shared between the follower (writer), the API and the cadence (readers).
#[derive(Debug, Clone, Default)]
pub struct Shared {
    inner: Arc<RwLock<State>>,
}

impl Shared {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds a batch of updates in under one write lock.
    pub fn apply_all(&self, updates: impl IntoIterator<Item = Update>) {
        let mut s = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        for u in updates {
            s.apply(u);
        }
    }

    /// A copy of one tenant's state, if the reporter has seen the tenant.
    pub fn tenant(&self, tenant_id: &str) -> Option<TenantState> {
        let s = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        s.tenants.get(tenant_id).cloned()
    }

    /// Every tenant the reporter has seen.
    pub fn tenant_ids(&self) -> Vec<String> {
        let s = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        s.tenants.keys().cloned().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aispm_schemas::{Asset, BlockerKind, FindingStatus, Risk};

    pub(crate) fn finding(id: &str) -> FindingRow {
        FindingRow {
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
        }
    }

    fn asset(kind: AssetKind, id: &str, status: AssetStatus) -> Asset {
        Asset {
            asset_kind: kind,
            asset_id: id.into(),
            status,
            owner: None,
            criticality: None,
            environment: None,
            trust: None,
            scopes: vec![],
            public: None,
            auth_required: None,
            public_key: Some("a2V5".into()),
            approved_data_classes: vec![],
            recipients: vec!["CISO@acme.example".into(), "cso@acme.example".into()],
            framework_mappings: vec![],
            attributes: Default::default(),
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

    #[test]
    fn views_upsert_delete_and_tombstone() {
        let mut s = State::default();
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
        s.apply(change(
            ViewOp::Upsert,
            Some(ViewRow::Finding(finding("r:s"))),
        ));
        assert_eq!(s.tenants["acme"].findings.len(), 1);
        assert_eq!(s.tenants["acme"].updated_at, Some(Timestamp(10)));
        s.apply(change(ViewOp::Delete, None));
        assert!(s.tenants["acme"].findings.is_empty());
        s.apply(change(
            ViewOp::Upsert,
            Some(ViewRow::Finding(finding("r:s"))),
        ));
        s.apply(Update::ViewTombstone {
            tenant_id: "acme".into(),
            view: ViewName::Findings,
            key: "r:s".into(),
        });
        assert!(s.tenants["acme"].findings.is_empty());
        // A row of the wrong type for the view is ignored, not filed under the wrong view.
        s.apply(Update::View(ViewChange {
            tenant_id: "acme".into(),
            view: ViewName::Controls,
            key: "x".into(),
            op: ViewOp::Upsert,
            row: Some(ViewRow::Finding(finding("x"))),
            changed_at: Timestamp(11),
            cause_event_id: "e2".into(),
        }));
        assert!(s.tenants["acme"].controls.is_empty());
    }

    #[test]
    fn blockers_open_and_resolve() {
        let mut s = State::default();
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
        s.apply(Update::Blocker(b));
        assert_eq!(s.tenants["acme"].blockers[&Stage::Production].len(), 1);
        s.apply(Update::BlockerResolved {
            tenant_id: "acme".into(),
            stage: Stage::Production,
            blocker_id: "b1".into(),
        });
        assert!(s.tenants["acme"].blockers[&Stage::Production].is_empty());
    }

    #[test]
    fn recipients_come_from_registered_report_providers() {
        let mut s = State::default();
        s.apply(registry(asset(
            AssetKind::ReportProvider,
            "smtp-main",
            AssetStatus::Registered,
        )));
        let t = &s.tenants["acme"];
        assert_eq!(
            t.approved_recipients(),
            ["CISO@acme.example", "cso@acme.example"]
        );
        assert!(t.is_approved("ciso@ACME.example"));
        assert!(!t.is_approved("attacker@evil.example"));
        s.apply(registry(asset(
            AssetKind::ReportProvider,
            "smtp-main",
            AssetStatus::Retired,
        )));
        assert!(s.tenants["acme"].approved_recipients().is_empty());

        s.apply(registry(asset(
            AssetKind::TrustRoot,
            "reporter-key",
            AssetStatus::Registered,
        )));
        assert_eq!(
            s.tenants["acme"].trust_root_for("a2V5"),
            Some("reporter-key")
        );
        // Other asset kinds are not the reporter's business.
        s.apply(registry(asset(
            AssetKind::Agent,
            "a1",
            AssetStatus::Registered,
        )));
        assert_eq!(s.tenants.len(), 1);
    }
}
