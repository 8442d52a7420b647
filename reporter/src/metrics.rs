//! The reporter's metrics, `aispm_reporter_*`. Labels come from small fixed sets (report type,
//! trigger, channel, outcome, topic kind), never tenant or report ids.

use crate::Result;
use crate::state::Shared;
use aispm_runtime::metrics::{Metrics, latency_buckets};
use prometheus::{Histogram, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};

/// Every metric the reporter updates.
#[derive(Debug, Clone)]
pub(crate) struct ReporterMetrics {
    pub reports_generated: IntCounterVec,
    pub generation_seconds: HistogramVec,
    pub packet_bytes: Histogram,
    pub deliveries: IntCounterVec,
    pub events_published: IntCounterVec,
    pub publish_errors: IntCounterVec,
    pub deliveries_pending: IntGauge,
    pub records_followed: IntCounterVec,
    pub tenants: IntGauge,
    pub follow_batch_records: Histogram,
    pub views_db_memory_bytes: IntGaugeVec,
    pub views_db_disk_bytes: IntGauge,
    pub view_rows: IntGauge,
}

impl ReporterMetrics {
    pub(crate) fn new(m: &Metrics) -> Result<Self> {
        Ok(ReporterMetrics {
            reports_generated: m.counter(
                "reports_generated_total",
                "Report packets generated, by report type and trigger (api, cadence).",
                &["type", "trigger"],
            )?,
            generation_seconds: m.histogram(
                "report_generation_seconds",
                "Time to build, render, sign and write one packet, by report type.",
                &["type"],
                latency_buckets(),
            )?,
            packet_bytes: m.histogram(
                "packet_bytes",
                "Size of packet archives.",
                &[],
                vec![1e3, 1e4, 1e5, 1e6, 1e7, 1e8],
            )?
            .with_label_values::<&str>(&[]),
            deliveries: m.counter(
                "delivery_attempts_total",
                "Delivery attempts by channel (smtp, export) and outcome (delivered, failed).",
                &["channel", "outcome"],
            )?,
            events_published: m.counter(
                "delivery_events_published_total",
                "ReportDeliveryEvents acknowledged by the broker, by outcome.",
                &["outcome"],
            )?,
            publish_errors: m.counter(
                "delivery_event_publish_errors_total",
                "ReportDeliveryEvents the broker did not acknowledge (retried), by reason.",
                &["reason"],
            )?,
            deliveries_pending: m.gauge(
                "deliveries_pending",
                "Packets not delivered yet with another attempt scheduled.",
                &[],
            )?
            .with_label_values::<&str>(&[]),
            records_followed: m.counter(
                "records_followed_total",
                "Records folded into the reporter's state, by topic (views, blockers, readiness, registry).",
                &["topic"],
            )?,
            tenants: m
                .gauge("tenants", "Tenants the reporter knows.", &[])?
                .with_label_values::<&str>(&[]),
            follow_batch_records: m
                .histogram(
                    "follow_batch_records",
                    "Records folded into the state per batch (one RocksDB write).",
                    &[],
                    vec![1.0, 10.0, 100.0, 500.0, 1000.0],
                )?
                .with_label_values::<&str>(&[]),
            views_db_memory_bytes: m.gauge(
                "views_db_memory_bytes",
                "Memory of the view-row database by part (memtables, block_cache, table_readers); bounded by its options.",
                &["part"],
            )?,
            views_db_disk_bytes: m
                .gauge(
                    "views_db_disk_bytes",
                    "Table files of the view-row database on disk.",
                    &[],
                )?
                .with_label_values::<&str>(&[]),
            view_rows: m
                .gauge(
                    "view_rows",
                    "View rows in the view-row database (RocksDB's estimate).",
                    &[],
                )?
                .with_label_values::<&str>(&[]),
        })
    }
}

impl ReporterMetrics {
    /// Sets the state gauges: tenants, and the view-row database's memory, size and rows.
    pub(crate) fn observe_state(&self, state: &Shared) {
        self.tenants.set(state.tenant_count() as i64);
        let rows = state.rows();
        let memory = rows.memory();
        for (part, bytes) in [
            ("memtables", memory.memtables),
            ("block_cache", memory.block_cache),
            ("table_readers", memory.table_readers),
        ] {
            self.views_db_memory_bytes
                .with_label_values(&[part])
                .set(bytes as i64);
        }
        self.views_db_disk_bytes.set(rows.disk_bytes() as i64);
        self.view_rows.set(rows.estimated_rows() as i64);
    }
}
