//! The gatekeeper's metrics (`aispm_gatekeeper_*`). Labels come from fixed sets (kind, stage,
//! verdict, trigger, view, outcome, topic); never tenant ids.

use crate::Result;
use aispm_runtime::metrics::{Metrics, latency_buckets, size_buckets};
use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};

/// Every metric the gatekeeper exports besides the shared HTTP and Kafka ones.
#[derive(Debug, Clone)]
pub struct GatekeeperMetrics {
    /// Blockers currently published (open), by kind and stage.
    pub blockers_open: IntGaugeVec,
    /// Tenants by stage and verdict (`ready` or `unready`), as published.
    pub tenants: IntGaugeVec,
    /// Tenant evaluations by trigger (`change`, `clock`, `sweep`, `restore`).
    pub evaluations: IntCounterVec,
    /// Seconds one evaluation pass (all due tenants) took.
    pub evaluation_seconds: HistogramVec,
    /// Tenants evaluated per pass.
    pub evaluation_tenants: HistogramVec,
    /// From a view change's record timestamp to the acknowledgement of the blocker or
    /// readiness record it caused.
    pub change_to_publish_seconds: HistogramVec,
    /// View changes read, by view and outcome (`applied`, `unchanged`, `dead_letter`).
    pub view_changes: IntCounterVec,
    /// Records published, by topic (`blockers`, `readiness`) and op (`upsert`, `tombstone`).
    pub published: IntCounterVec,
    /// Records whose delivery failed (they are re-evaluated and sent again).
    pub publish_errors: IntCounterVec,
    /// View partitions still replaying after an assignment.
    pub partitions_restoring: IntGaugeVec,
    /// Rows held in the tenants' state, by kind (`findings`, `finding_fingerprints`,
    /// `evidence`, `exceptions`, `controls`, `action_paths`, `validations`, `deliveries`).
    pub state_rows: IntGaugeVec,
    /// Evidence upserts not tracked because newer evidence of the tenant is (they cannot be
    /// the newest).
    pub evidence_untracked: IntCounterVec,
}

impl GatekeeperMetrics {
    pub fn new(m: &Metrics) -> Result<Self> {
        Ok(GatekeeperMetrics {
            blockers_open: m.gauge(
                "blockers_open",
                "Blockers currently open (published), by kind and stage.",
                &["kind", "stage"],
            )?,
            tenants: m.gauge(
                "tenants",
                "Tenants by stage and published verdict (ready, unready).",
                &["stage", "verdict"],
            )?,
            evaluations: m.counter(
                "evaluations_total",
                "Tenant evaluations (all stages of one tenant), by trigger (change, clock, sweep, restore).",
                &["trigger"],
            )?,
            evaluation_seconds: m.histogram(
                "evaluation_pass_seconds",
                "Duration of one evaluation pass over the tenants due.",
                &[],
                latency_buckets(),
            )?,
            evaluation_tenants: m.histogram(
                "evaluation_pass_tenants",
                "Tenants evaluated in one pass.",
                &[],
                size_buckets(),
            )?,
            change_to_publish_seconds: m.histogram(
                "change_to_publish_seconds",
                "From a view change's record timestamp to the acknowledged blocker or readiness record it caused, by topic.",
                &["topic"],
                latency_buckets(),
            )?,
            view_changes: m.counter(
                "view_changes_total",
                "View changes read, by view and outcome (applied, unchanged, dead_letter).",
                &["view", "outcome"],
            )?,
            published: m.counter(
                "published_total",
                "Records published, by topic (blockers, readiness) and op (upsert, tombstone).",
                &["topic", "op"],
            )?,
            publish_errors: m.counter(
                "publish_errors_total",
                "Records whose delivery failed, by topic; the tenant is evaluated and published again.",
                &["topic"],
            )?,
            partitions_restoring: m.gauge(
                "partitions_restoring",
                "View partitions still replaying from the beginning after an assignment.",
                &[],
            )?,
            state_rows: m.gauge(
                "state_rows",
                "Rows held in the tenants' state, by kind (findings, finding_fingerprints, evidence, exceptions, controls, action_paths, validations, deliveries).",
                &["kind"],
            )?,
            evidence_untracked: m.counter(
                "evidence_untracked_total",
                "Evidence upserts left untracked because newer evidence of the tenant is tracked.",
                &[],
            )?,
        })
    }
}
