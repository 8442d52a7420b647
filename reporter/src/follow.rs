//! Follows `aispm.views.v1`, `aispm.blockers.v1`, `aispm.readiness.v1` and `aispm.registry.v1`
//! into the reporter's state. Every partition is read from the beginning at start (the state
//! topics are compacted; the registry is small), so the state is rebuilt rather than stored.
//! The reporter is ready once it has read up to each partition's end offset as of start.
//!
//! Records are folded in batches (up to 1000 records or 20 ms), each one write to the view-row
//! store ([`crate::rows`]); an error writing it stops the service.
//!
//! A record that does not decode is dead-lettered once: the next offsets read are saved in
//! `<state-dir>/follow-offsets.json`, and a bad record below them is a replay, counted and
//! skipped without a second dead letter. Partitions added after start are picked up at the
//! next restart.

use crate::metrics::ReporterMetrics;
use crate::state::{Shared, Update};
use crate::webhooks::Webhooks;
use crate::{Error, Result};
use aispm_runtime::dlq::{DeadLetter, DeadLetters, Stage as DlqStage};
use aispm_runtime::health::Health;
use aispm_runtime::kafka::partition_ends;
use aispm_runtime::kafka::{KafkaConfig, MeteredContext};
use aispm_schemas::keys::{BlockerKey, ViewKey};
use aispm_schemas::{Blocker, Codec, Readiness, RegistryEvent, TenantId, Topics, ViewChange};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Which followed topic a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    Views,
    Blockers,
    Readiness,
    Registry,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Views => "views",
            Source::Blockers => "blockers",
            Source::Readiness => "readiness",
            Source::Registry => "registry",
        }
    }
}

/// A record naming no valid tenant is poison: its producer validated the tenant, and view rows
/// are stored under `{tenant} \0 …` keys (see [`crate::rows`]) and packets in a directory named
/// after it.
fn valid_tenant(tenant: &str) -> Result<(), (&'static str, String)> {
    TenantId::parse(tenant).map_err(|e| ("bad_tenant", e.to_string()))?;
    Ok(())
}

/// Decodes one record into a state update. `Ok(None)`: nothing to fold (e.g. a readiness
/// tombstone). `Err`: the record is poison.
pub(crate) fn decode(
    codec: &Codec,
    source: Source,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<Option<Update>, (&'static str, String)> {
    let key_str = || {
        key.and_then(|k| std::str::from_utf8(k).ok()).ok_or((
            "bad_key",
            "the record key is missing or not UTF-8".to_owned(),
        ))
    };
    let decode_err = |e: aispm_schemas::DecodeError| ("decode", e.to_string());
    // The size policy, as the projector applies it: an input record over it is no event.
    if let (Source::Registry, Some(p)) = (source, payload)
        && let Some(why) = aispm_schemas::limits::oversized_event(p.len())
    {
        return Err((aispm_schemas::limits::RECORD_TOO_LARGE, why));
    }
    Ok(match (source, payload) {
        (Source::Views, Some(p)) => {
            let change = codec.decode::<ViewChange>(p).map_err(decode_err)?;
            valid_tenant(&change.tenant_id)?;
            Some(Update::View(change))
        }
        (Source::Views, None) => {
            let k = key_str()?;
            let key = ViewKey::parse(k).map_err(|e| ("bad_key", e.to_string()))?;
            Some(Update::ViewTombstone {
                tenant_id: key.tenant.to_owned(),
                view: key.view,
                key: key.row.to_owned(),
            })
        }
        (Source::Blockers, Some(p)) => Some(Update::Blocker(
            codec.decode::<Blocker>(p).map_err(decode_err)?,
        )),
        (Source::Blockers, None) => {
            let k = key_str()?;
            let key = BlockerKey::parse(k).map_err(|e| ("bad_key", e.to_string()))?;
            Some(Update::BlockerResolved {
                tenant_id: key.tenant.to_owned(),
                stage: key.stage,
                blocker_id: key.blocker_id.to_owned(),
            })
        }
        (Source::Readiness, Some(p)) => Some(Update::Readiness(
            codec.decode::<Readiness>(p).map_err(decode_err)?,
        )),
        (Source::Readiness, None) => None,
        (Source::Registry, Some(p)) => Some(Update::Registry(
            codec.decode::<RegistryEvent>(p).map_err(decode_err)?,
        )),
        (Source::Registry, None) => None,
    })
}

/// Everything the follower needs.
#[derive(Debug)]
pub(crate) struct Follower {
    pub kafka: KafkaConfig,
    pub topics: Topics,
    pub state: Shared,
    pub health: Health,
    pub metrics: ReporterMetrics,
    pub kafka_metrics: aispm_runtime::kafka::KafkaMetrics,
    pub dead_letters: DeadLetters,
    pub offsets_file: PathBuf,
    pub restored: watch::Sender<bool>,
    /// Told about every transition the folded records make ([`crate::webhooks`]).
    pub webhooks: Webhooks,
}

type Offsets = BTreeMap<String, i64>;

/// Most records folded in one batch (one RocksDB write).
const MAX_BATCH: usize = 1000;
/// How long a batch waits for more records after its first.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// Records read but not folded in yet.
#[derive(Debug, Default)]
struct Batch {
    updates: Vec<Update>,
    /// Per update: its record's `topic/partition/offset` when the record is new (read for the
    /// first time, not replayed), for the notifications it may cause.
    origins: Vec<Option<String>>,
    /// Records read, poison included.
    records: usize,
    /// Updates per source topic, for `records_followed_total`.
    followed: BTreeMap<Source, u64>,
    /// Highest offset read per (topic, partition).
    positions: BTreeMap<(String, i32), i64>,
}

fn offset_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

impl Follower {
    fn source(&self, topic: &str) -> Option<Source> {
        if topic == self.topics.views {
            Some(Source::Views)
        } else if topic == self.topics.blockers {
            Some(Source::Blockers)
        } else if topic == self.topics.readiness {
            Some(Source::Readiness)
        } else if topic == self.topics.registry {
            Some(Source::Registry)
        } else {
            None
        }
    }

    /// Reads the followed topics until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let ctx = MeteredContext {
            metrics: self.kafka_metrics.clone(),
        };
        let consumer: StreamConsumer<MeteredContext> = self
            .kafka
            .consumer_config("aispm-reporter-follow")
            .create_with_context(ctx)?;
        let topics = [
            self.topics.views.clone(),
            self.topics.blockers.clone(),
            self.topics.readiness.clone(),
            self.topics.registry.clone(),
        ];
        // Assign every partition from the beginning; note where each ends now (from a fetch
        // response: see aispm_runtime::position).
        let (tpl, mut targets) = {
            let consumer = &consumer;
            tokio::task::block_in_place(|| -> Result<_> {
                let mut tpl = TopicPartitionList::new();
                for t in &topics {
                    let md = consumer.fetch_metadata(Some(t), Duration::from_secs(30))?;
                    let Some(mt) = md.topics().iter().find(|m| m.name() == t) else {
                        return Err(Error::Config(format!("topic {t} has no metadata")));
                    };
                    for p in mt.partitions() {
                        tpl.add_partition_offset(t, p.id(), Offset::Beginning)?;
                    }
                }
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                let targets: BTreeMap<(String, i32), i64> =
                    partition_ends(&self.kafka, &names, Duration::from_secs(30))?
                        .into_iter()
                        .filter(|(_, end)| *end > 0)
                        .collect();
                Ok((tpl, targets))
            })?
        };
        consumer.assign(&tpl)?;
        let partitions = tpl.count();
        self.kafka_metrics.set_assigned(partitions);
        tracing::info!(
            partitions,
            to_replay = targets.len(),
            "Following the state topics from the beginning."
        );
        let mut restored = false;
        let mark_restored = |targets: &BTreeMap<(String, i32), i64>, restored: &mut bool| {
            if !*restored && targets.is_empty() {
                *restored = true;
                self.health
                    .set("state_restored", true, "replayed the state topics");
                let _ = self.restored.send(true);
                tracing::info!("Restored the reporter state from the topics.");
            }
        };
        mark_restored(&targets, &mut restored);
        let codec = Codec::new();
        let mut saved: Offsets = match std::fs::read(&self.offsets_file) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => Offsets::new(),
        };
        // Where new records start, per partition: after the position saved by the last run,
        // or (a first start) after the end as of now, so history notifies nobody.
        let new_from: Offsets = targets
            .iter()
            .map(|((t, p), end)| {
                let key = offset_key(t, *p);
                let from = saved.get(&key).copied().unwrap_or(*end);
                (key, from)
            })
            .collect();
        let mut next: Offsets = saved.clone();
        let mut last_save = Instant::now();
        loop {
            let m = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = consumer.recv() => m,
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "Consumer error while following; continuing.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // A batch: this record and whatever follows within the window, one RocksDB write.
            let mut batch = Batch::default();
            self.stage(&codec, &m, &saved, &new_from, &mut batch)
                .await?;
            let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
            while batch.records < MAX_BATCH && !shutdown.is_cancelled() {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(Ok(m)) => {
                        self.stage(&codec, &m, &saved, &new_from, &mut batch)
                            .await?
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "Consumer error while following; continuing.");
                        break;
                    }
                    Err(_) => break,
                }
            }
            let updates = std::mem::take(&mut batch.updates);
            // RocksDB work is blocking. A failed write (disk full, I/O error) is fatal: the
            // state would no longer match the offsets read, so the service stops. So is a
            // notification that cannot be queued: the position must not pass it.
            tokio::task::block_in_place(|| -> Result<()> {
                for (i, t) in self.state.apply_all(updates)? {
                    let origin = batch.origins.get(i).and_then(Option::as_deref);
                    self.webhooks.observe(&t, origin)?;
                }
                Ok(())
            })?;
            self.metrics
                .follow_batch_records
                .observe(batch.records as f64);
            for (source, n) in batch.followed {
                self.metrics
                    .records_followed
                    .with_label_values(&[source.as_str()])
                    .inc_by(n);
            }
            for ((topic, partition), offset) in batch.positions {
                next.insert(offset_key(&topic, partition), offset + 1);
                let key = (topic, partition);
                if let Some(high) = targets.get(&key)
                    && offset + 1 >= *high
                {
                    targets.remove(&key);
                    mark_restored(&targets, &mut restored);
                }
            }
            if last_save.elapsed() > Duration::from_secs(5) && next != saved {
                crate::store::write_atomic(&self.offsets_file, &serde_json::to_vec(&next)?)?;
                saved = next.clone();
                last_save = Instant::now();
                self.metrics.observe_state(&self.state);
            }
        }
        if next != saved {
            crate::store::write_atomic(&self.offsets_file, &serde_json::to_vec(&next)?)?;
        }
        self.metrics.observe_state(&self.state);
        Ok(())
    }

    /// Decodes one record into `batch`; a poison record is dead-lettered (once) instead.
    async fn stage(
        &self,
        codec: &Codec,
        m: &BorrowedMessage<'_>,
        saved: &Offsets,
        new_from: &Offsets,
        batch: &mut Batch,
    ) -> Result<()> {
        batch.records += 1;
        batch
            .positions
            .insert((m.topic().to_owned(), m.partition()), m.offset());
        let Some(source) = self.source(m.topic()) else {
            return Ok(());
        };
        match decode(codec, source, m.key(), m.payload()) {
            Ok(Some(update)) => {
                batch.updates.push(update);
                let key = offset_key(m.topic(), m.partition());
                let new = new_from.get(&key).is_none_or(|from| m.offset() >= *from);
                batch
                    .origins
                    .push(new.then(|| format!("{key}/{}", m.offset())));
                *batch.followed.entry(source).or_default() += 1;
            }
            Ok(None) => {}
            Err((reason, error)) => {
                let replay = saved
                    .get(&offset_key(m.topic(), m.partition()))
                    .is_some_and(|n| m.offset() < *n);
                if replay {
                    tracing::debug!(
                        topic = m.topic(),
                        offset = m.offset(),
                        "Skipped a record dead-lettered before."
                    );
                } else {
                    self.dead_letters
                        .send(DeadLetter::of(m, DlqStage::Decode, reason, error))
                        .await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aispm_schemas::{Stage, ViewName};

    #[test]
    fn tombstones_decode_from_their_keys() {
        let c = Codec::new();
        match decode(&c, Source::Views, Some(b"acme/findings/rule:agent/x"), None) {
            Ok(Some(Update::ViewTombstone {
                tenant_id,
                view,
                key,
            })) => {
                assert_eq!(
                    (tenant_id.as_str(), view, key.as_str()),
                    ("acme", ViewName::Findings, "rule:agent/x")
                );
            }
            other => panic!("{other:?}"),
        }
        match decode(
            &c,
            Source::Blockers,
            Some(b"acme/production/evidence_stale"),
            None,
        ) {
            Ok(Some(Update::BlockerResolved {
                stage, blocker_id, ..
            })) => {
                assert_eq!(
                    (stage, blocker_id.as_str()),
                    (Stage::Production, "evidence_stale")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(&c, Source::Readiness, Some(b"acme/trial"), None),
            Ok(None)
        ));
        assert_eq!(
            decode(&c, Source::Blockers, Some(b"acme/nostage/x"), None)
                .unwrap_err()
                .0,
            "bad_key"
        );
        assert_eq!(
            decode(&c, Source::Views, Some(b"acme"), None)
                .unwrap_err()
                .0,
            "bad_key"
        );
        // A key naming no valid tenant could not have been written by the projector.
        let (reason, why) =
            decode(&c, Source::Views, Some(b"ac\0me/findings/x"), None).unwrap_err();
        assert_eq!(reason, "bad_key");
        assert!(why.contains("tenant_id must be"), "{why}");
        assert_eq!(
            decode(&c, Source::Views, None, Some(b"\x01garbage"))
                .unwrap_err()
                .0,
            "decode"
        );
    }
}
