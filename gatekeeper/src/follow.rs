//! Following `aispm.views.v1`: the consumer loop that folds view changes into the engine,
//! evaluates the tenants due, publishes what changed, and commits.
//!
//! The views topic is compacted, so it *is* the gatekeeper's state: on every assignment the
//! consumer starts the assigned partitions from the beginning and replays them to their end
//! (librdkafka's partition EOF), after reading back what was already published on the
//! blockers and readiness topics. Tenants of a replaying partition are not evaluated until the
//! replay ends; then every one of them is evaluated once, and only differences from the
//! published records go out. Offsets are committed only so that lag is visible.

use crate::metrics::GatekeeperMetrics;
use crate::publish::Publisher;
use crate::readiness::{Change, Engine, Verdicts};
use crate::recover::{self, KeyedRecord};
use crate::{Error, Result};
use aispm_runtime::clock::SharedClock;
use aispm_runtime::dlq::{DeadLetter, DeadLetters, Stage as DlqStage};
use aispm_runtime::health::Health;
use aispm_runtime::kafka::partition_for;
use aispm_runtime::kafka::{KafkaConfig, KafkaMetrics};
use aispm_schemas::keys::ViewKey;
use aispm_schemas::views::ViewOp;
use aispm_schemas::{Blocker, Codec, Readiness, Topics, ViewChange};
use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
    StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::OwnedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most view changes folded before evaluating.
const MAX_BATCH: usize = 5_000;
/// Longest time spent folding one batch before evaluating.
const MAX_BATCH_TIME: Duration = Duration::from_millis(5);
/// The bounds of a batch while evaluating is slow: a tenant of 100k findings takes about a
/// second to evaluate, and evaluating it after every 5 ms of records had the gatekeeper fold a
/// few hundred view changes a second (an hour behind after a burst of 1M decisions). The loop
/// now folds for as long as its last evaluation took (at most `SLOW_BATCH_TIME`), so evaluating
/// costs at most about half of its time; a verdict waits at most about twice an evaluation.
const SLOW_BATCH: usize = 200_000;
const SLOW_BATCH_TIME: Duration = Duration::from_secs(2);
/// How often the loop wakes while a replay is settling.
const RESTORE_POLL: Duration = Duration::from_millis(200);
/// How long reading back the published topics may take.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(120);

/// A change of the consumer's assignment, sent from the rebalance callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Assignment {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// The consumer's context: statistics, rebalance metrics, and the "replay from the beginning"
/// rebalance strategy.
#[derive(Debug)]
pub(crate) struct FollowContext {
    metrics: KafkaMetrics,
    events: UnboundedSender<Assignment>,
}

impl ClientContext for FollowContext {
    fn stats(&self, statistics: Statistics) {
        self.metrics.observe(&statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::recover::log_client_error(&error, reason);
    }
}

impl ConsumerContext for FollowContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.metrics.rebalance(&Rebalance::Assign(tpl));
                // The views topic is the state: every assigned partition replays from the start.
                if let Err(e) = tpl.set_all_offsets(Offset::Beginning) {
                    tracing::error!(error = %e, "Cannot rewind the assigned partitions.");
                }
                let _ = self.events.send(Assignment::Assigned(partitions.clone()));
                let res = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                match res {
                    Ok(()) => {
                        tracing::info!(?partitions, "Assigned view partitions; replaying them.")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, ?partitions, "Assigning partitions failed.")
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.metrics.rebalance(&Rebalance::Revoke(tpl));
                let _ = self.events.send(Assignment::Revoked(partitions.clone()));
                let res = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                match res {
                    Ok(()) => tracing::info!(?partitions, "Revoked view partitions."),
                    Err(e) => {
                        tracing::error!(error = %e, ?partitions, "Unassigning partitions failed.")
                    }
                }
            }
            other => {
                let e = KafkaError::Rebalance(other.into());
                self.metrics.rebalance(&Rebalance::Error(e.clone()));
                tracing::error!(error = %e, "Rebalance failed.");
                let _ = consumer.unassign();
            }
        }
    }
}

/// Everything the loop needs.
#[derive(Debug)]
pub(crate) struct Parts {
    pub kafka: KafkaConfig,
    pub group_id: String,
    pub topics: Topics,
    pub engine: Engine,
    pub publisher: Publisher,
    pub dead_letters: DeadLetters,
    pub health: Health,
    pub metrics: GatekeeperMetrics,
    pub kafka_metrics: KafkaMetrics,
    pub verdicts: Verdicts,
    pub views_partitions: i32,
    pub sweep_every: Duration,
    /// The wall clock the rules read and the tenant timers wait on.
    pub clock: SharedClock,
}

enum Wake {
    Shutdown,
    Assignment(Assignment),
    Message(KafkaResult<OwnedMessage>),
    Timer,
}

struct Follower {
    consumer: Arc<StreamConsumer<FollowContext>>,
    events: UnboundedReceiver<Assignment>,
    codec: Codec,
    p: Parts,
    assigned: BTreeSet<i32>,
    /// Partitions still replaying (until their partition EOF).
    targets: HashSet<i32>,
    next_offsets: BTreeMap<i32, i64>,
    uncommitted: bool,
    /// Set on assignment; cleared once every partition replayed and orphans were retracted.
    settle_pending: bool,
    /// How long the last evaluation took (the batch's budget follows it).
    last_evaluation: Duration,
}

/// Follows the views topic until `shutdown`.
pub(crate) async fn run(parts: Parts, shutdown: CancellationToken) -> Result<()> {
    let (tx, rx) = unbounded_channel();
    let context = FollowContext {
        metrics: parts.kafka_metrics.clone(),
        events: tx,
    };
    let mut config = parts.kafka.consumer_config(&parts.group_id);
    // The end of a replay is the partition EOF of the fetch responses.
    config.set("enable.partition.eof", "true");
    // Low fetch wait: a view change should reach the gatekeeper in milliseconds.
    if !parts
        .kafka
        .options
        .iter()
        .any(|(k, _)| k == "fetch.wait.max.ms")
    {
        config.set("fetch.wait.max.ms", "10");
    }
    let consumer: StreamConsumer<FollowContext> = config.create_with_context(context)?;
    consumer.subscribe(&[&parts.topics.views])?;
    parts.health.set(
        "views_restored",
        false,
        "waiting for a partition assignment",
    );
    parts.verdicts.set_restoring(true);
    let mut f = Follower {
        consumer: Arc::new(consumer),
        events: rx,
        codec: Codec::new(),
        p: parts,
        assigned: BTreeSet::new(),
        targets: HashSet::new(),
        next_offsets: BTreeMap::new(),
        uncommitted: false,
        settle_pending: false,
        last_evaluation: Duration::ZERO,
    };
    f.run(shutdown).await
}

impl Follower {
    async fn run(&mut self, shutdown: CancellationToken) -> Result<()> {
        let mut next_sweep = Instant::now() + self.p.sweep_every;
        loop {
            let wake_at = self.wake_at(next_sweep);
            let timer = self.p.engine.next_timer();
            let wake = {
                let consumer = &self.consumer;
                let events = &mut self.events;
                let clock = &self.p.clock;
                let timer_due = async {
                    match timer {
                        Some(t) => clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => Wake::Shutdown,
                    ev = events.recv() => match ev {
                        Some(ev) => Wake::Assignment(ev),
                        None => Wake::Shutdown,
                    },
                    m = consumer.recv() => Wake::Message(m.map(|m| m.detach())),
                    _ = tokio::time::sleep_until(wake_at) => Wake::Timer,
                    _ = timer_due => Wake::Timer,
                }
            };
            match wake {
                Wake::Shutdown => break,
                Wake::Assignment(a) => self.on_assignment(a, &shutdown).await?,
                Wake::Message(m) => {
                    // The rebalance callback runs inside the poll that returned this record:
                    // apply the assignment first.
                    while let Ok(ev) = self.events.try_recv() {
                        self.on_assignment(ev, &shutdown).await?;
                    }
                    self.on_message(m).await?;
                    let started = Instant::now();
                    let (max_n, max_time) = if self.last_evaluation > MAX_BATCH_TIME {
                        (SLOW_BATCH, self.last_evaluation.min(SLOW_BATCH_TIME))
                    } else {
                        (MAX_BATCH, MAX_BATCH_TIME)
                    };
                    let mut n = 1;
                    while n < max_n && started.elapsed() < max_time {
                        let Some(m) = self.consumer.recv().now_or_never() else {
                            break;
                        };
                        self.on_message(m.map(|m| m.detach())).await?;
                        n += 1;
                    }
                }
                Wake::Timer => {}
            }
            if Instant::now() >= next_sweep {
                self.p.engine.sweep();
                next_sweep = Instant::now() + self.p.sweep_every;
            }
            let evaluating = Instant::now();
            let changes = self.p.engine.evaluate_due(self.p.clock.now());
            self.last_evaluation = evaluating.elapsed();
            self.publish(changes).await?;
            self.settle().await?;
            self.commit(CommitMode::Async);
        }
        self.commit(CommitMode::Sync);
        tracing::info!(
            tenants = self.p.engine.tenant_count(),
            "Stopped following the views."
        );
        Ok(())
    }

    /// When to wake up with no record, besides the next tenant timer (which waits on the
    /// clock): the sweep and replay checks.
    fn wake_at(&self, next_sweep: Instant) -> Instant {
        let now = Instant::now();
        let mut at = next_sweep;
        if !self.targets.is_empty() || self.settle_pending {
            at = at.min(now + RESTORE_POLL);
        }
        at
    }

    async fn on_assignment(&mut self, a: Assignment, shutdown: &CancellationToken) -> Result<()> {
        match a {
            Assignment::Revoked(parts) => {
                for p in parts {
                    self.assigned.remove(&p);
                    self.targets.remove(&p);
                    self.next_offsets.remove(&p);
                    self.p.engine.drop_partition(p);
                }
                self.p.kafka_metrics.set_assigned(self.assigned.len());
            }
            Assignment::Assigned(parts) => {
                self.p.health.set(
                    "views_restored",
                    false,
                    format!("replaying view partitions {parts:?}"),
                );
                self.p.verdicts.set_restoring(true);
                for p in &parts {
                    self.assigned.insert(*p);
                    self.p.engine.set_restoring(*p, true);
                }
                self.p.kafka_metrics.set_assigned(self.assigned.len());
                self.settle_pending = true;
                let mut backoff = Duration::from_millis(250);
                loop {
                    match self.prepare_replay(&parts).await {
                        Ok(()) => break,
                        Err(e) if e.is_transient() && !shutdown.is_cancelled() => {
                            tracing::warn!(error = %e, ?backoff, "Preparing the replay failed; retrying.");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads back the published records and notes which partitions replay.
    async fn prepare_replay(&mut self, parts: &[i32]) -> Result<()> {
        let kafka = self.p.kafka.clone();
        let (bt, rt) = (
            self.p.topics.blockers.clone(),
            self.p.topics.readiness.clone(),
        );
        let (blockers, readiness) = tokio::task::spawn_blocking(move || {
            Ok::<_, Error>((
                recover::read_compacted(&kafka, &bt, RECOVER_TIMEOUT)?,
                recover::read_compacted(&kafka, &rt, RECOVER_TIMEOUT)?,
            ))
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        let (nb, nr) = (blockers.len(), readiness.len());
        let blockers = decode_all::<Blocker>(&self.codec, blockers);
        let readiness = decode_all::<Readiness>(&self.codec, readiness);
        self.p.engine.recover(blockers, readiness);

        for p in parts {
            if self.assigned.contains(p) {
                self.targets.insert(*p);
            }
        }
        tracing::info!(
            partitions = ?parts, blocker_records = nb, readiness_records = nr,
            "Recovered the published state; replaying the views."
        );
        Ok(())
    }

    /// Once every assigned partition replayed: retract tenants without views, report ready.
    async fn settle(&mut self) -> Result<()> {
        if !self.settle_pending || !self.targets.is_empty() || self.p.engine.is_restoring() {
            return Ok(());
        }
        let (assigned, n) = (&self.assigned, self.p.views_partitions);
        let changes = self
            .p
            .engine
            .retract_orphans(|t| assigned.contains(&partition_for(t.as_bytes(), n)));
        self.publish(changes).await?;
        self.settle_pending = false;
        self.p.verdicts.set_restoring(false);
        self.p.health.set(
            "views_restored",
            true,
            format!(
                "{} view partition(s) replayed, {} tenant(s)",
                self.assigned.len(),
                self.p.engine.tenant_count()
            ),
        );
        tracing::info!(
            partitions = ?self.assigned, tenants = self.p.engine.tenant_count(),
            "Views replayed; evaluating continuously."
        );
        Ok(())
    }

    async fn on_message(&mut self, m: KafkaResult<OwnedMessage>) -> Result<()> {
        let m = match m {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                if self.targets.remove(&p) {
                    self.p.engine.set_restoring(p, false);
                    tracing::debug!(partition = p, "Replayed a view partition.");
                }
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "Consumer error; continuing.");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(());
            }
        };
        let p = m.partition();
        if !self.assigned.contains(&p) {
            return Ok(());
        }
        let offset = m.offset();
        self.next_offsets.insert(p, offset + 1);
        self.uncommitted = true;
        let ts = m.timestamp().to_millis();
        self.fold(&m, ts).await
    }

    /// Applies one view record, or dead-letters it.
    async fn fold(&mut self, m: &OwnedMessage, ts: Option<i64>) -> Result<()> {
        let p = m.partition();
        let (tenant, view, key, row) = match m.payload() {
            // A Kafka tombstone: the row named by the record key is gone.
            None => {
                let parsed = match m.key().map(std::str::from_utf8) {
                    Some(Ok(k)) => ViewKey::parse(k).map_err(|e| e.to_string()),
                    _ => Err("a tombstone whose key is missing or not UTF-8".to_owned()),
                };
                match parsed {
                    Ok(k) => (k.tenant.to_owned(), k.view, k.row.to_owned(), None),
                    Err(why) => {
                        return self
                            .dead_letter(m, DlqStage::Validate, "malformed_key", why)
                            .await;
                    }
                }
            }
            Some(bytes) => match self.codec.decode::<ViewChange>(bytes) {
                Err(e) => {
                    return self
                        .dead_letter(m, DlqStage::Decode, "undecodable", e.to_string())
                        .await;
                }
                Ok(vc) => {
                    let row = match (vc.op, vc.row) {
                        (ViewOp::Delete, _) => None,
                        (ViewOp::Upsert, Some(r)) => Some(r),
                        (ViewOp::Upsert, None) => {
                            return self
                                .dead_letter(
                                    m,
                                    DlqStage::Validate,
                                    "upsert_without_row",
                                    "an upsert must carry a row".into(),
                                )
                                .await;
                        }
                    };
                    (vc.tenant_id, vc.view, vc.key, row)
                }
            },
        };
        match self.p.engine.apply(&tenant, p, view, &key, row, ts) {
            Ok(changed) => {
                tracing::debug!(%tenant, partition = p, offset = m.offset(), %view, %key, changed, "Folded a view change.");
                let outcome = if changed { "applied" } else { "unchanged" };
                self.p
                    .metrics
                    .view_changes
                    .with_label_values(&[view.as_str(), outcome])
                    .inc();
                Ok(())
            }
            Err(wrong) => {
                let msg = format!("a {} row on the {} view", wrong.row, wrong.view);
                self.dead_letter(m, DlqStage::Validate, "row_view_mismatch", msg)
                    .await
            }
        }
    }

    async fn dead_letter(
        &self,
        m: &OwnedMessage,
        stage: DlqStage,
        reason: &'static str,
        error: String,
    ) -> Result<()> {
        self.p
            .metrics
            .view_changes
            .with_label_values(&["unknown", "dead_letter"])
            .inc();
        self.p
            .dead_letters
            .send(DeadLetter::of(m, stage, reason, error))
            .await?;
        Ok(())
    }

    async fn publish(&mut self, changes: Vec<Change>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            records = changes.len(),
            "Publishing changed blockers and verdicts."
        );
        let failed = self.p.publisher.publish(&changes).await?;
        if !failed.is_empty() {
            for i in &failed {
                self.p.engine.undo(&changes[*i]);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Commits the next offsets of the assigned partitions (for lag only).
    fn commit(&mut self, mode: CommitMode) {
        if !self.uncommitted {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, next) in &self.next_offsets {
            if self.assigned.contains(p)
                && let Err(e) =
                    tpl.add_partition_offset(&self.p.topics.views, *p, Offset::Offset(*next))
            {
                tracing::warn!(error = %e, "Cannot build the offsets to commit.");
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match self.consumer.commit(&tpl, mode) {
            Ok(()) => self.uncommitted = false,
            Err(e) => {
                tracing::debug!(error = %e, "Committing offsets failed; retrying with the next batch.")
            }
        }
    }
}

/// Decodes records read back from an output topic; undecodable ones are skipped with a warning
/// (they will be overwritten by the next evaluation of their tenant).
fn decode_all<T: aispm_schemas::Record>(
    codec: &Codec,
    records: Vec<KeyedRecord>,
) -> Vec<(String, Option<T>)> {
    records
        .into_iter()
        .filter_map(|(key, value)| match value {
            None => Some((key, None)),
            Some(bytes) => match codec.decode::<T>(&bytes) {
                Ok(v) => Some((key, Some(v))),
                Err(e) => {
                    tracing::warn!(%key, error = %e, "Ignored an undecodable published record.");
                    None
                }
            },
        })
        .collect()
}
