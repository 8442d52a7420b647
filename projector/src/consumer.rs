//! The consumer loop: poll a batch (by count and by time), apply it to the open epoch,
//! dead-letter the rejects, write the epoch with its offsets in one RocksDB write when it ends
//! (with the WAL: every batch), publish the batch's view changes, and only then commit offsets
//! to Kafka (for lag visibility; our own offsets are the truth): without the WAL, the offsets
//! of the last flush that ended, which a crash cannot take back.
//!
//! Without the WAL a write is durable only at the next flush anyway, so an epoch of several
//! batches loses nothing a crash would not: its batches are written together, each key once,
//! and what a crash takes is replayed from the flushed offsets (`docs/reliability.md`). An
//! epoch ends after `--epoch-interval` (while catching up, `--flush-interval`), past
//! `--epoch-bytes`, when the input is idle, before a flush, before a catch-up's rows are
//! published, and at a stop.
//!
//! On every partition assignment the rebalance hook seeks each partition to the next offset
//! stored in RocksDB (or the beginning): a partition that moves to this instance is rebuilt by
//! replaying from where this instance's state stands, and its tenants' view changes are held
//! until it reaches the end it had when taken (`catchup.rs`).

use crate::catchup::{CatchUp, Partition};
use crate::error::{Error, Result};
use crate::metrics::ProjectorMetrics;
use crate::project::{Engine, Input};
use crate::publish::Publisher;
use crate::store::Durability;
use aispm_runtime::dlq::{DeadLetter, DeadLetters};
use aispm_runtime::health::Health;
use aispm_runtime::kafka::KafkaMetrics;
use rdkafka::bindings::rd_kafka_resp_err_t as RespErr;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::message::Headers;
use rdkafka::statistics::Statistics;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

type Offsets = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// How many owed rows a catch-up publishes at a time (`Loop::publish_owed`).
const OWED_PAGE: usize = 5_000;

/// The consumer's context: metrics, the stored offsets to seek to on assignment, and what the
/// rebalances assigned, took and revoked.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub kafka: KafkaMetrics,
    pub offsets: Offsets,
    pub assigned: Arc<Mutex<BTreeSet<(String, i32)>>>,
    pub health: Health,
    /// Partitions assigned that this instance did not own just before, not yet looked at by
    /// the loop (`catchup.rs`).
    pub taken: Mutex<Vec<Partition>>,
    /// What the last eager revocation took, until the assignment after it: a partition in it
    /// that comes back was never away (no other instance can have owned it in between).
    revoked: Mutex<BTreeSet<Partition>>,
    /// Revocations so far: a batch filled across one keeps only what is still assigned.
    revocations: AtomicU64,
}

impl Ctx {
    pub(crate) fn new(kafka: KafkaMetrics, offsets: Offsets, health: Health) -> Self {
        Ctx {
            kafka,
            offsets,
            assigned: Arc::default(),
            health,
            taken: Mutex::default(),
            revoked: Mutex::default(),
            revocations: AtomicU64::new(0),
        }
    }
}

/// Locks, whatever a panicking holder left.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClientContext for Ctx {
    fn stats(&self, statistics: Statistics) {
        self.kafka.observe(&statistics);
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.kafka.rebalance(&Rebalance::Assign(tpl));
                let offsets = self.offsets.lock().unwrap_or_else(PoisonError::into_inner);
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                for (topic, partition) in &parts {
                    let stored = offsets.get(&(topic.clone(), *partition)).copied();
                    let offset = stored.map_or(Offset::Beginning, Offset::Offset);
                    let _ = tpl.set_partition_offset(topic, *partition, offset);
                }
                drop(offsets);
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "Assigning partitions failed.");
                }
                let mut revoked = lock(&self.revoked);
                lock(&self.taken).extend(
                    parts
                        .iter()
                        .filter(|tp| cooperative || !revoked.contains(*tp))
                        .cloned(),
                );
                revoked.clear();
                drop(revoked);
                let mut assigned = self.assigned.lock().unwrap_or_else(PoisonError::into_inner);
                if !cooperative {
                    assigned.clear();
                }
                assigned.extend(parts);
                self.note_assigned(assigned.len());
                tracing::info!(
                    partitions = assigned.len(),
                    "Partitions assigned; resuming from stored offsets."
                );
            }
            RespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.kafka.rebalance(&Rebalance::Revoke(tpl));
                self.revocations.fetch_add(1, Ordering::AcqRel);
                let mut assigned = self.assigned.lock().unwrap_or_else(PoisonError::into_inner);
                if !cooperative {
                    lock(&self.revoked).clone_from(&assigned);
                }
                if cooperative {
                    let _ = consumer.incremental_unassign(tpl);
                    for e in tpl.elements() {
                        assigned.remove(&(e.topic().to_owned(), e.partition()));
                    }
                } else {
                    let _ = consumer.unassign();
                    assigned.clear();
                }
                self.note_assigned(assigned.len());
                tracing::info!(partitions = assigned.len(), "Partitions revoked.");
            }
            other => {
                tracing::warn!(error = ?other, "Rebalance error.");
                self.revocations.fetch_add(1, Ordering::AcqRel);
                lock(&self.revoked).clear();
                let _ = consumer.unassign();
                self.assigned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
                self.note_assigned(0);
            }
        }
    }
}

impl Ctx {
    /// Publishes how many partitions this instance owns: the metric, and readiness (an
    /// instance with none, e.g. mid-rebalance or a standby beside busier peers, is not ready).
    fn note_assigned(&self, partitions: usize) {
        self.kafka.set_assigned(partitions);
        self.health.set(
            "partitions_assigned",
            partitions > 0,
            format!("{partitions} partitions"),
        );
    }
}

/// Batch limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    pub max_records: usize,
    /// Cuts batches so one holds about this many aggregates (`Engine::batch_limit`).
    pub max_aggregates: usize,
    pub max_wait: Duration,
    /// An epoch's longest life while records keep coming (`--epoch-interval`).
    pub epoch_interval: Duration,
    /// An epoch's most estimated bytes in memory (`--epoch-bytes`).
    pub epoch_bytes: usize,
}

/// Everything the loop needs.
pub(crate) struct Loop {
    pub consumer: BaseConsumer<Ctx>,
    pub engine: Engine,
    pub publisher: Publisher,
    pub dead_letters: DeadLetters,
    pub metrics: ProjectorMetrics,
    pub batching: Batching,
    pub handle: Handle,
    /// Stop once every partition reached these offsets (rebuild); `None` runs until shutdown.
    pub until: Option<BTreeMap<(String, i32), i64>>,
    /// Told which tenants each committed batch changed (the service's posture keeper).
    pub posture: Option<std::sync::Arc<crate::posture::Keeper>>,
    /// The partitions taken that are catching up (`catchup.rs`).
    pub catch_up: CatchUp,
    /// With the WAL off, the longest time between two flushes of the state.
    pub flush_interval: Duration,
    /// Whether what a stop left in the outbox is still to be published ([`Loop::drain_outbox`]).
    pub outbox_left: bool,
    /// Without the WAL, the offsets the state stands at in table files (the last flush that
    /// ended), the ones committed to the group: the group is never told of records a crash
    /// would make the projector apply again.
    pub durable: HashMap<Partition, i64>,
    /// The offsets the flush under way will make durable.
    pub flushing: Option<HashMap<Partition, i64>>,
    /// The partitions `unflushed_records` has a value for.
    pub gauged: Vec<Partition>,
}

impl std::fmt::Debug for Loop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loop")
            .field("batching", &self.batching)
            .finish()
    }
}

/// What the loop did, for `rebuild` and the benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub applied: u64,
    pub records: u64,
    pub batches: u64,
}

impl Loop {
    /// Runs until `shutdown` (finishing the batch in flight) or until caught up with `until`.
    pub(crate) fn run(mut self, shutdown: &CancellationToken) -> Result<Totals> {
        let mut totals = Totals::default();
        let mut last_stats = Instant::now();
        let mut last_kafka_commit = Instant::now();
        let mut last_flush = Instant::now();
        let unlogged = self.engine.store().durability() == Durability::Flushed;
        // Batches written since the last flush.
        let mut unflushed = false;
        self.durable = self.engine.next_offsets.clone();
        loop {
            if shutdown.is_cancelled() || self.caught_up() {
                break;
            }
            let n = self.one_batch(&mut totals, shutdown)?;
            if n == 0 {
                // Idle: what the epoch holds is written, so the API reads it.
                self.end_epoch(shutdown)?;
            }
            // What a catch-up that ended owes is published before the group learns the
            // offsets: a group caught up is views published.
            self.settle(shutdown)?;
            unflushed |= n > 0;
            if self.flushing.is_some() {
                if self.engine.store().flushed()? {
                    self.durable = self.flushing.take().unwrap_or_default();
                } else {
                    // A flush that failed (a full disk) stops here, even when no batch comes
                    // to find the database refusing writes.
                    self.engine.store().background_error()?;
                }
            }
            if unlogged && unflushed && last_flush.elapsed() >= self.flush_interval {
                // The state and the offsets it stands at, at one instant: what a crash keeps
                // (`Durability::Flushed`). Only started here; RocksDB's threads write it.
                self.end_epoch(shutdown)?;
                let started = Instant::now();
                self.engine.store().flush(false)?;
                self.flushing = Some(self.engine.next_offsets.clone());
                crate::crash::reached(crate::crash::FLUSHING);
                last_flush = Instant::now();
                unflushed = false;
                self.metrics
                    .stage_seconds
                    .with_label_values(&["flush"])
                    .observe(started.elapsed().as_secs_f64());
            }
            if n > 0 {
                let kc = Instant::now();
                self.commit_to_kafka();
                last_kafka_commit = kc;
                self.metrics
                    .stage_seconds
                    .with_label_values(&["kafka_commit"])
                    .observe(kc.elapsed().as_secs_f64());
            }
            // Idle: make sure the group knows our stored offsets. After a restart from a
            // kill -9 whose last commit to Kafka was lost, every record may already be applied
            // (nothing to poll, so no batch commits), and the group's offsets, and the lag
            // read from them, would stay behind until new records came.
            if n == 0 && last_kafka_commit.elapsed() > Duration::from_secs(5) {
                self.commit_to_kafka();
                last_kafka_commit = Instant::now();
            }
            if n > 0 || last_stats.elapsed() > Duration::from_secs(5) {
                let store = self.engine.store();
                let (sst, mem) = store.sizes();
                let gauge = |g: &prometheus::IntGaugeVec, label: &str, v: u64| {
                    g.with_label_values(&[label])
                        .set(i64::try_from(v).unwrap_or(i64::MAX));
                };
                gauge(&self.metrics.state_bytes, "sst", sst);
                gauge(&self.metrics.state_bytes, "memtable", mem);
                for (part, bytes) in self.engine.memory().parts() {
                    gauge(&self.metrics.state_memory, part, bytes);
                }
                last_stats = Instant::now();
            }
        }
        self.end_epoch(shutdown)?;
        if self.until.is_some() {
            // A rebuild stops at the ends it read at start: what it owes is published as of
            // there.
            for partition in self.engine.owing_partitions() {
                self.publish_owed(partition, shutdown)?;
            }
            if self.outbox_left {
                self.drain_outbox(shutdown)?;
            }
        }
        // A stop leaves nothing to replay.
        self.engine.store().flush(true)?;
        self.flushing = None;
        self.durable = self.engine.next_offsets.clone();
        self.commit_to_kafka();
        Ok(totals)
    }

    /// Looks at the partitions taken since the last look ([`note_taken`]).
    fn note_taken(&mut self, shutdown: &CancellationToken) -> Result<()> {
        note_taken(
            &self.consumer,
            &self.handle,
            self.until.as_ref(),
            &self.engine.next_offsets,
            &mut self.catch_up,
            &self.metrics,
            shutdown,
        )
    }

    /// Ends the catch-up of the partitions that reached their end or were revoked, and
    /// publishes what each partition number whose catch-up ended owes.
    fn settle(&mut self, shutdown: &CancellationToken) -> Result<()> {
        self.note_taken(shutdown)?;
        let owing = self.engine.owing_partitions();
        if self.catch_up.is_empty() && owing.is_empty() {
            // Partitions taken and looked at (a rebuild assigns its own), and none catching up.
            let started =
                self.until.is_some() || !lock(&self.consumer.context().assigned).is_empty();
            if self.outbox_left && started {
                self.drain_outbox(shutdown)?;
            }
            return Ok(());
        }
        let ctx = self.consumer.context();
        // Ours: assigned, or revoked by an eager rebalance whose assignment is still to come.
        let mut ours = lock(&ctx.assigned).clone();
        ours.extend(lock(&ctx.revoked).iter().cloned());
        let positions = self.consumer.position().ok();
        let next = &self.engine.next_offsets;
        // Where a partition stands: its next offset to apply, or the consumer's position when
        // that is farther (past records that are not data, such as transaction markers).
        let at = |tp: &Partition| {
            let position = positions
                .as_ref()
                .and_then(|l| l.find_partition(&tp.0, tp.1))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            next.get(tp).copied().unwrap_or(0).max(position)
        };
        self.catch_up.advance(at, &ours);
        self.metrics
            .catching_up
            .with_label_values::<&str>(&[])
            .set(i64::try_from(self.catch_up.len()).unwrap_or(i64::MAX));
        let assigned = lock(&ctx.assigned).clone();
        for partition in owing {
            if self.catch_up.catching(partition) {
                continue;
            }
            if assigned.iter().any(|(_, p)| *p == partition) {
                self.publish_owed(partition, shutdown)?;
            } else if !ours.iter().any(|(_, p)| *p == partition) {
                // Rows of its tenants in the open epoch are owed under its number first.
                self.end_epoch(shutdown)?;
                self.engine.forget(partition)?;
            }
        }
        Ok(())
    }

    /// Publishes the rows the catch-up of partition number `partition` owes, as stored now,
    /// then removes them.
    fn publish_owed(&mut self, partition: i32, shutdown: &CancellationToken) -> Result<()> {
        // The rows owed are read from the store: the open epoch's first.
        self.end_epoch(shutdown)?;
        let started = Instant::now();
        let mut from: Option<Vec<u8>> = None;
        let mut records = 0;
        loop {
            let (page, next) = self
                .engine
                .owed_page(partition, from.as_deref(), OWED_PAGE)?;
            self.publish("publishing owed view changes", &page, shutdown)?;
            records += page.len();
            match next {
                Some(k) => from = Some(k),
                None => break,
            }
        }
        crate::crash::reached(crate::crash::CAUGHT_UP);
        self.engine.settle(partition)?;
        tracing::info!(
            partition,
            records,
            seconds = started.elapsed().as_secs_f64(),
            "Caught up: published the view changes the partition number's catch-up held."
        );
        Ok(())
    }

    /// Publishes `records` and waits for every acknowledgement, retrying (`what` names it in
    /// the log) until it succeeds or `shutdown`.
    fn publish(
        &mut self,
        what: &str,
        records: &[crate::project::Outgoing],
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let publisher = &mut self.publisher;
        retrying(&self.handle, what, shutdown, || {
            std::future::ready(publisher.publish(records))
        })
    }

    /// Publishes what a stop left in the outbox, as the rows stand now, then clears it, and
    /// says the state is restored (readiness). Not at start: the state a crash leaves may be
    /// older than what the crashed run published (`Durability::Flushed`), so the outbox waits
    /// until the partitions taken have caught up to the ends they had when taken, and
    /// publishes rows as of there.
    fn drain_outbox(&mut self, shutdown: &CancellationToken) -> Result<()> {
        self.end_epoch(shutdown)?;
        let (pending, range) = self.engine.pending_outbox()?;
        if !pending.is_empty() {
            tracing::info!(
                changes = pending.len(),
                "Publishing view changes left in the outbox."
            );
            self.publish("publishing the outbox a stop left", &pending, shutdown)?;
            crate::crash::reached(crate::crash::DRAINED);
        }
        self.engine.clear_outbox(range)?;
        self.outbox_left = false;
        self.consumer.context().health.set(
            "state_restored",
            true,
            "caught up with the ends the input partitions had at start",
        );
        Ok(())
    }

    fn caught_up(&self) -> bool {
        self.until.as_ref().is_some_and(|until| {
            until
                .iter()
                .all(|(tp, high)| self.engine.next_offsets.get(tp).copied().unwrap_or(0) >= *high)
        })
    }

    /// [`retrying`] on this loop's runtime.
    fn retrying<T, E, F, Fut>(
        &self,
        what: &str,
        shutdown: &CancellationToken,
        attempt: F,
    ) -> Result<T>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, E>>,
    {
        retrying(&self.handle, what, shutdown, attempt)
    }

    fn one_batch(&mut self, totals: &mut Totals, shutdown: &CancellationToken) -> Result<usize> {
        let started = Instant::now();
        let deadline = started + self.batching.max_wait;
        let limit = self
            .engine
            .batch_limit(self.batching.max_records, self.batching.max_aggregates);
        let mut messages = Vec::with_capacity(limit.min(4096));
        let revocations = ctx_revocations(&self.consumer);
        while messages.len() < limit {
            let now = Instant::now();
            let wait = if messages.is_empty() {
                Duration::from_millis(100)
            } else if now >= deadline {
                break;
            } else {
                deadline - now
            };
            match self.consumer.poll(wait) {
                Some(Ok(m)) => messages.push(m),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Consumer error; continuing.");
                    break;
                }
                None if messages.is_empty() => return Ok(0),
                None => break,
            }
        }
        if ctx_revocations(&self.consumer) != revocations {
            // Revoked while the batch filled: what is no longer ours is its new owner's to
            // apply and publish (if it comes back, the assignment's seek fetches it again).
            let assigned = lock(&self.consumer.context().assigned).clone();
            messages.retain(|m| assigned.contains(&(m.topic().to_owned(), m.partition())));
        }
        note_taken(
            &self.consumer,
            &self.handle,
            self.until.as_ref(),
            &self.engine.next_offsets,
            &mut self.catch_up,
            &self.metrics,
            shutdown,
        )?;
        if !self.catch_up.is_empty() {
            for m in &messages {
                if self.catch_up.catching(m.partition())
                    && let Some(tenant) = m.key().and_then(|k| std::str::from_utf8(k).ok())
                {
                    self.engine.owe(tenant, m.partition());
                }
            }
        }
        let inputs: Vec<Input<'_>> = messages
            .iter()
            .map(|m| Input {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key(),
                payload: m.payload(),
                timestamp: m.timestamp().to_millis(),
                principal: principal(m),
            })
            .collect();
        let apply_started = Instant::now();
        let mut prepared = self.engine.prepare(&inputs)?;
        drop(inputs);
        let n = messages.len();
        drop(messages);
        self.metrics
            .stage_seconds
            .with_label_values(&["apply"])
            .observe(apply_started.elapsed().as_secs_f64());
        self.metrics
            .batch_size
            .with_label_values::<&str>(&[])
            .observe(n as f64);
        self.metrics
            .batch_aggregates
            .with_label_values::<&str>(&[])
            .observe(prepared.stats.aggregates as f64);

        crate::crash::reached(crate::crash::APPLIED);
        // Dead letters first: once the batch commits, their offsets are behind us.
        for r in &prepared.rejected {
            self.retrying("dead-lettering a record", shutdown, || {
                self.dead_letters.send(DeadLetter {
                    topic: &r.topic,
                    partition: r.partition,
                    offset: r.offset,
                    key: r.key.as_deref(),
                    payload: r.payload.as_deref(),
                    stage: r.stage,
                    reason: r.reason,
                    error: r.error.clone(),
                })
            })?;
        }

        crate::crash::reached(crate::crash::DEAD_LETTERED);
        // With the WAL every batch is written (each is durable once logged); without it, the
        // epoch is written when it ends, this batch with it.
        let unlogged = self.engine.store().durability() == Durability::Flushed;
        // Partitions catching up publish nothing of theirs until they end: their epochs last
        // longer (rows owed but no longer catching up, after a revocation, do not count).
        let lifetime = if !self.catch_up.is_empty() {
            self.flush_interval.max(self.batching.epoch_interval)
        } else {
            self.batching.epoch_interval
        };
        let committed = !unlogged
            || self.engine.epoch_age() >= lifetime
            || self.engine.epoch_bytes() >= self.batching.epoch_bytes;
        if committed {
            let commit_started = Instant::now();
            let ended = self.engine.commit(&mut prepared)?;
            self.epoch_written(&ended, commit_started);
        }
        self.share_offsets();
        self.metrics
            .outbox_pending
            .with_label_values::<&str>(&[])
            .set(i64::try_from(prepared.outgoing.len()).unwrap_or(i64::MAX));

        let publish_started = Instant::now();
        let publisher = &mut self.publisher;
        let outgoing = &prepared.outgoing;
        retrying(&self.handle, "publishing view changes", shutdown, || {
            std::future::ready(publisher.publish(outgoing))
        })?;
        crate::crash::reached(crate::crash::PUBLISHED);
        if committed {
            self.engine.clear_outbox(prepared.outbox)?;
        }
        crate::crash::reached(crate::crash::OUTBOX_CLEARED);
        self.metrics
            .outbox_pending
            .with_label_values::<&str>(&[])
            .set(0);
        self.metrics
            .stage_seconds
            .with_label_values(&["publish"])
            .observe(publish_started.elapsed().as_secs_f64());

        let s = &prepared.stats;
        for (topic, count) in &s.applied {
            self.metrics
                .events
                .with_label_values(&[topic, "applied"])
                .inc_by(*count);
            totals.applied += count;
        }
        for (outcome, count) in [("duplicate", s.duplicates), ("skipped", s.skipped)] {
            if count > 0 {
                self.metrics
                    .events
                    .with_label_values(&["all", outcome])
                    .inc_by(count);
            }
        }
        for r in &prepared.rejected {
            self.metrics
                .events
                .with_label_values(&[&r.topic, "dead_lettered"])
                .inc();
        }
        self.metrics.count_view_changes(&s.changes);
        totals.records += n as u64;
        totals.batches += 1;
        Ok(n)
    }

    /// Writes the open epoch, if one is open, outside a batch (idle input, a flush or a
    /// catch-up's end due, a stop).
    fn end_epoch(&mut self, shutdown: &CancellationToken) -> Result<()> {
        if !self.engine.epoch_open() {
            return Ok(());
        }
        let started = Instant::now();
        let ended = self.engine.end_epoch()?;
        self.epoch_written(&ended, started);
        self.metrics.count_view_changes(&ended.changes);
        // The rows that waited for a publication, in the outbox the epoch wrote.
        if !ended.outgoing.is_empty() {
            self.publish("publishing view changes", &ended.outgoing, shutdown)?;
            crate::crash::reached(crate::crash::PUBLISHED);
            self.engine.clear_outbox(ended.outbox)?;
        }
        Ok(())
    }

    /// After an epoch's write: the crash point, the posture keeper told, the metrics.
    fn epoch_written(&self, ended: &crate::project::Ended, started: Instant) {
        crate::crash::reached(crate::crash::COMMITTED);
        if let Some(k) = &self.posture {
            k.changed(ended.tenants.iter().map(String::as_str));
        }
        self.metrics
            .stage_seconds
            .with_label_values(&["commit"])
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .epoch_batches
            .with_label_values::<&str>(&[])
            .observe(ended.batches as f64);
    }

    fn share_offsets(&self) {
        let ctx = self.consumer.context();
        let mut shared = ctx.offsets.lock().unwrap_or_else(PoisonError::into_inner);
        shared.clone_from(&self.engine.next_offsets);
    }

    /// Commits our stored offsets of the partitions we own to the group, so lag is visible,
    /// and sets `unflushed_records`: what each has applied beyond them.
    fn commit_to_kafka(&mut self) {
        if self.until.is_some() {
            return;
        }
        let assigned = self
            .consumer
            .context()
            .assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // The offsets of the state a crash would leave: with the WAL, every batch's.
        let offsets = match self.engine.store().durability() {
            Durability::Flushed => &self.durable,
            Durability::Logged | Durability::Synced => &self.engine.next_offsets,
        };
        let mut tpl = TopicPartitionList::new();
        for tp in &assigned {
            if let Some(o) = offsets.get(tp) {
                let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(*o));
            }
        }
        // What each partition has applied beyond what the group is told (a crash's replay).
        let gauge = &self.metrics.unflushed_records;
        self.gauged.retain(|tp| {
            let kept = assigned.contains(tp);
            if !kept {
                let _ = gauge.remove_label_values(&[&tp.0, &tp.1.to_string()]);
            }
            kept
        });
        for tp in &assigned {
            let (Some(next), Some(committed)) = (self.engine.next_offsets.get(tp), offsets.get(tp))
            else {
                continue;
            };
            gauge
                .with_label_values(&[&tp.0, &tp.1.to_string()])
                .set((next - committed).max(0));
            if !self.gauged.contains(tp) {
                self.gauged.push(tp.clone());
            }
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!(error = %e, "Offset commit to Kafka failed; our stored offsets are unaffected.");
        }
    }
}

/// Looks at the partitions taken since the last look: each whose state (`next`) stands before
/// the end it has now catches up to that end (a rebuild's: to the end it stops at, `until`).
fn note_taken(
    consumer: &BaseConsumer<Ctx>,
    handle: &Handle,
    until: Option<&BTreeMap<Partition, i64>>,
    next: &HashMap<Partition, i64>,
    catch_up: &mut CatchUp,
    metrics: &ProjectorMetrics,
    shutdown: &CancellationToken,
) -> Result<()> {
    let taken = std::mem::take(&mut *lock(&consumer.context().taken));
    let looked_at = taken.len();
    for tp in taken {
        let (low, high) = retrying(handle, "reading a partition's end offset", shutdown, || {
            std::future::ready(consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_secs(10)))
        })?;
        let end = match until {
            Some(until) => until.get(&tp).copied().unwrap_or(0).min(high),
            None => high,
        };
        let from = next.get(&tp).copied().unwrap_or(0).max(low);
        let (topic, partition) = (tp.0.clone(), tp.1);
        if catch_up.begin(tp, from, end) {
            tracing::info!(
                topic,
                partition,
                from,
                end,
                "Catching up a partition taken; its tenants' view changes are published once it reaches the end."
            );
        }
    }
    if looked_at > 0 {
        tracing::info!(
            taken = looked_at,
            catching_up = catch_up.len(),
            "Partitions taken looked at."
        );
    }
    metrics
        .catching_up
        .with_label_values::<&str>(&[])
        .set(i64::try_from(catch_up.len()).unwrap_or(i64::MAX));
    Ok(())
}

fn ctx_revocations(consumer: &BaseConsumer<Ctx>) -> u64 {
    consumer.context().revocations.load(Ordering::Acquire)
}

/// Assigns every partition of `topics` directly (no group), from the stored offsets; each is
/// taken (`catchup.rs`).
pub(crate) fn assign_all(
    consumer: &BaseConsumer<Ctx>,
    topics: &[&str],
    offsets: &HashMap<(String, i32), i64>,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in md.topics() {
            for p in t.partitions() {
                let o = offsets
                    .get(&((*topic).to_owned(), p.id()))
                    .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                tpl.add_partition_offset(topic, p.id(), o)
                    .map_err(Error::Kafka)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    let mut assigned = consumer
        .context()
        .assigned
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut taken = lock(&consumer.context().taken);
    for e in tpl.elements() {
        assigned.insert((e.topic().to_owned(), e.partition()));
        taken.push((e.topic().to_owned(), e.partition()));
    }
    Ok(())
}

/// The record's `aispm.principal` header, if it has one that is text.
fn principal<'a>(m: &'a rdkafka::message::BorrowedMessage<'_>) -> Option<&'a str> {
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == aispm_schemas::topics::record_headers::PRINCIPAL)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Runs `attempt` until it succeeds, backing off while the broker is unreachable; gives up
/// only when shutdown fires (what was committed stays in the outbox for the next start).
fn retrying<T, E, F, Fut>(
    handle: &Handle,
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Result<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match handle.block_on(attempt()) {
            Ok(v) => return Ok(v),
            Err(e) if shutdown.is_cancelled() => {
                return Err(Error::Other(format!("{what} failed during shutdown: {e}")));
            }
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "Retrying after a failure {what}.", what = what);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
