//! The projector's metrics (`aispm_projector_*`); consumer lag and rebalances come from
//! `aispm_runtime::kafka::KafkaMetrics`.

use aispm_runtime::metrics::{Metrics, latency_buckets, size_buckets};
use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};

#[derive(Debug, Clone)]
pub(crate) struct ProjectorMetrics {
    /// Input records by topic and outcome (applied, duplicate, skipped, dead_lettered).
    pub events: IntCounterVec,
    pub batch_size: HistogramVec,
    /// Distinct aggregates a batch held decoded (what `--batch-max-aggregates` bounds).
    pub batch_aggregates: HistogramVec,
    /// Seconds per stage of a batch (apply, commit, publish, kafka_commit).
    pub stage_seconds: HistogramVec,
    pub view_changes: IntCounterVec,
    pub outbox_pending: IntGaugeVec,
    pub state_bytes: IntGaugeVec,
    pub state_memory: IntGaugeVec,
}

impl ProjectorMetrics {
    pub(crate) fn new(m: &Metrics) -> aispm_runtime::Result<Self> {
        Ok(ProjectorMetrics {
            events: m.counter(
                "events_total",
                "Input records by topic and outcome (applied, duplicate, skipped, dead_lettered).",
                &["topic", "outcome"],
            )?,
            batch_size: m.histogram("batch_records", "Records per batch.", &[], size_buckets())?,
            batch_aggregates: m.histogram(
                "batch_aggregates",
                "Distinct aggregates a batch held decoded in memory (batches are cut to about --batch-max-aggregates).",
                &[],
                size_buckets(),
            )?,
            stage_seconds: m.histogram(
                "batch_stage_duration_seconds",
                "Time per batch stage: apply (decode, fold, derive), commit (RocksDB write with offsets), publish (view changes acknowledged), kafka_commit.",
                &["stage"],
                latency_buckets(),
            )?,
            view_changes: m.counter("view_changes_total", "View rows changed, by view.", &["view"])?,
            outbox_pending: m.gauge("outbox_pending_changes", "View changes durable but not yet acknowledged by the views topic.", &[])?,
            state_bytes: m.gauge("state_bytes", "RocksDB size: sst files and memtables.", &["kind"])?,
            state_memory: m.gauge(
                "state_memory_bytes",
                "Memory RocksDB holds for the state, by part: block_cache (bounded by --block-cache), memtables (bounded by the write buffers) and table_readers (index and filter blocks, which grow with the state); key_filter, the projector's own may-exist filter over the stored keys (grows with the distinct keys, 10 bits a key); and aggregate_cache, the estimated heap of the decoded aggregates and row digests kept across batches (bounded by --cache-entries: about 4 KiB of decoded aggregates per ten entries).",
                &["part"],
            )?,
        })
    }
}
