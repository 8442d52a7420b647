//! The projector's metrics (`aispm_projector_*`); consumer lag and rebalances come from
//! `aispm_runtime::kafka::KafkaMetrics`. Its heap is jemalloc's (`main.rs`), reported by
//! [`aispm_jemalloc::JemallocCollector`] in place of glibc's heap.

use aispm_runtime::metrics::{Metrics, latency_buckets, size_buckets};
use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};

#[derive(Debug, Clone)]
pub(crate) struct ProjectorMetrics {
    /// Input records by topic and outcome (applied, duplicate, skipped, dead_lettered).
    pub events: IntCounterVec,
    pub batch_size: HistogramVec,
    /// Distinct aggregates a batch held decoded (what `--batch-max-aggregates` bounds).
    pub batch_aggregates: HistogramVec,
    /// Batches per epoch written (`--epoch-interval`, `--epoch-bytes`).
    pub epoch_batches: HistogramVec,
    /// Seconds per stage of a batch (apply, commit, publish, kafka_commit).
    pub stage_seconds: HistogramVec,
    pub view_changes: IntCounterVec,
    pub outbox_pending: IntGaugeVec,
    /// Input partitions catching up (`catchup.rs`).
    pub catching_up: IntGaugeVec,
    pub state_bytes: IntGaugeVec,
    pub state_memory: IntGaugeVec,
    /// Replay checkpoints kept on disk (`checkpoints.rs`).
    pub as_of_checkpoints: IntGaugeVec,
    /// Records applied per input partition and not yet durable (`consumer.rs`).
    pub unflushed_records: IntGaugeVec,
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
            epoch_batches: m.histogram(
                "epoch_batches",
                "Batches per epoch written: what an epoch's batches changed is written to RocksDB once, each key once, when it ends (--epoch-interval, --epoch-bytes, an idle input, a flush).",
                &[],
                size_buckets(),
            )?,
            stage_seconds: m.histogram(
                "batch_stage_duration_seconds",
                "Time per batch stage: apply (decode, fold, derive), commit (the epoch's RocksDB write with its offsets, when the batch ends one), publish (view changes acknowledged), kafka_commit.",
                &["stage"],
                latency_buckets(),
            )?,
            view_changes: m.counter("view_changes_total", "View rows changed, by view.", &["view"])?,
            outbox_pending: m.gauge("outbox_pending_changes", "View changes durable but not yet acknowledged by the views topic.", &[])?,
            catching_up: m.gauge(
                "catching_up_partitions",
                "Input partitions taken (at start, or from another instance) and replayed to the end they had then: their tenants' view changes are published once each reaches it.",
                &[],
            )?,
            state_bytes: m.gauge("state_bytes", "RocksDB size: sst files and memtables.", &["kind"])?,
            state_memory: m.gauge(
                "state_memory_bytes",
                "Memory RocksDB holds for the state, by part: block_cache (bounded by --block-cache-bytes), memtables (bounded by --write-buffer-bytes) and table_readers (index and filter blocks, which grow with the state); key_filter, the projector's own may-exist filter over the stored keys (grows with the distinct keys, 10 bits a key); aggregate_cache, the estimated heap of the decoded aggregates kept across batches or held by the open epoch, and of the row digests (bounded by --cache-entries: about 4 KiB of decoded aggregates per ten entries); and epoch, the estimated heap of what the open epoch holds until it is written beyond that budget: its row writes, event ids, index markers and deferred rows, and the aggregates it holds once the cache's budget is full (bounded by --epoch-bytes).",
                &["part"],
            )?,
            as_of_checkpoints: m.gauge(
                "as_of_checkpoints",
                "Replay checkpoints kept on disk: a request as of a past instant replays from the newest at or before it (--as-of-checkpoint-events).",
                &[],
            )?,
            unflushed_records: m.gauge(
                "unflushed_records",
                "Records of an assigned input partition applied but not yet durable (without --wal: since the last flush that ended; what a crash would make the projector apply again). The group's committed offsets, and so consumer_lag_messages, stand at the last flush: the lag minus this is what waits to be applied.",
                &["topic", "partition"],
            )?,
        })
    }

    /// Adds rows changed, by view, to `view_changes_total`.
    pub(crate) fn count_view_changes(
        &self,
        changes: &std::collections::HashMap<aispm_schemas::ViewName, u64>,
    ) {
        for (view, count) in changes {
            self.view_changes
                .with_label_values(&[view.as_str()])
                .inc_by(*count);
        }
    }
}
