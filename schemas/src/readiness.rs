//! Readiness verdicts and blockers, published by the gatekeeper.

use crate::time::Timestamp;
use crate::{avro_enum, avro_record};
use serde::{Deserialize, Serialize};

avro_enum!(
    /// Readiness stages, in the order a tenant goes through them.
    Stage { Trial = "trial", Pilot = "pilot", Production = "production" }
);
avro_enum!(
    /// Stable blocker kinds (the design brief's table).
    BlockerKind {
        MissingLiveConnectorEvidence = "missing_live_connector_evidence",
        TenantIsolationNotProven = "tenant_isolation_not_proven",
        ReportDeliveryUnverified = "report_delivery_unverified",
        RuntimeWorkflowSyntheticOnly = "runtime_workflow_synthetic_only",
        EvidenceStale = "evidence_stale",
        CriticalFindingUnowned = "critical_finding_unowned",
        FindingOverdue = "finding_overdue",
        ExceptionExpired = "exception_expired",
        ControlMissing = "control_missing",
        BreakGlassUnreviewed = "break_glass_unreviewed",
    }
);

impl Stage {
    /// The stage's position in [`Stage::ALL`]: per-stage arrays are indexed by it.
    pub const fn index(self) -> usize {
        match self {
            Stage::Trial => 0,
            Stage::Pilot => 1,
            Stage::Production => 2,
        }
    }
}

/// One blocker between a tenant and a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    pub tenant_id: String,
    pub stage: Stage,
    pub blocker_id: String,
    pub kind: BlockerKind,
    pub meaning: String,
    pub resolution: String,
    pub subject: Option<String>,
    pub evidence: Vec<String>,
    pub detected_at: Timestamp,
}
avro_record!(Blocker {
    tenant_id,
    stage,
    blocker_id,
    kind,
    meaning,
    resolution,
    subject,
    evidence,
    detected_at
});

/// The readiness verdict of one tenant for one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub tenant_id: String,
    pub stage: Stage,
    pub ready: bool,
    pub blocker_ids: Vec<String>,
    pub evaluated_at: Timestamp,
}
avro_record!(Readiness {
    tenant_id,
    stage,
    ready,
    blocker_ids,
    evaluated_at
});
