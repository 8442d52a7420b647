//! The projection engine, without Kafka: a batch of input records becomes one atomic RocksDB
//! write (aggregates, rows, the view changes to publish, and the next offsets) plus the dead
//! letters to send first. The consumer loop (`consumer.rs`) feeds it; tests and the apply-only
//! benchmark drive it directly.

use crate::apply::{self, Event};
use crate::batch::{Cache, Dirty, Epoch, Overlay};
use crate::derive;
use crate::error::{Error, Result};
use crate::rules::Settings;
use crate::store::{Store, columns, encode};
use aispm_runtime::dlq::Stage;
use aispm_schemas::{Codec, Timestamp, Topics, ViewChange, ViewName, ViewRow};
use std::collections::HashMap;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// One input record.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The record's timestamp (ms), when it has one: future-dated events are judged against it,
    /// not against the wall clock, so a replay decides the same way.
    pub timestamp: Option<i64>,
    /// The `aispm.principal` header: who asserted the event (kept as `asserted_by`).
    pub principal: Option<&'a str>,
}

impl<'a> Input<'a> {
    /// A record with a key, a value and nothing else (tests and benchmarks).
    pub fn new(
        topic: &'a str,
        partition: i32,
        offset: i64,
        key: &'a [u8],
        payload: &'a [u8],
    ) -> Self {
        Input {
            topic,
            partition,
            offset,
            key: Some(key),
            payload: Some(payload),
            timestamp: None,
            principal: None,
        }
    }
}

/// A valid event on its way to its worker: its topic's kind and who asserted it.
struct Asserted {
    kind: Kind,
    event: Event,
    by: Option<String>,
    /// The record's value, kept by id in `seen` ([`stored_event`]).
    payload: Vec<u8>,
    /// The record's timestamp, kept with it.
    arrived: Option<i64>,
}

/// A record the projector cannot use, to be dead-lettered before the batch commits.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub stage: Stage,
    pub reason: &'static str,
    pub error: String,
}

/// The compacted topic an outgoing record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// `aispm.views.v1`: every view change.
    Views,
    /// `aispm.ocsf.v1`: each finding as OCSF JSON (`aispm_schemas::ocsf`).
    Ocsf,
}

/// A record ready to publish: where, tenant (for the partition), record key, and its value
/// ([`Outgoing::value`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub sink: Sink,
    pub tenant: String,
    pub key: String,
    payload: Payload,
}

/// An outgoing record's value as it is held until published.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Payload {
    /// Encoded: a view change.
    Bytes(Vec<u8>),
    /// A finding whose OCSF record is written when it is published. The JSON (about 2.6 KB)
    /// is three times the row's Avro, and a batch's records are all held until its epoch is
    /// written and they are published (about 15k OCSF records, 38 MiB of JSON, per batch at
    /// 100k entities): written as librdkafka takes it, each is held only while it is copied.
    Ocsf(Box<aispm_schemas::FindingRow>),
    /// A tombstone.
    Tombstone,
}

impl Outgoing {
    /// The records of one view change: the change itself and, for a finding, its OCSF record
    /// (a tombstone when the row is gone). Both are functions of the row, so a replay of the
    /// outbox publishes the same bytes.
    fn of(codec: &Codec, change: ViewChange, out: &mut Vec<Outgoing>) -> Result<()> {
        Self::view(codec, &change, out)?;
        if change.view == ViewName::Findings {
            Self::ocsf(change, out);
        }
        Ok(())
    }

    /// The view change itself.
    fn view(codec: &Codec, change: &ViewChange, out: &mut Vec<Outgoing>) -> Result<()> {
        out.push(Outgoing {
            sink: Sink::Views,
            tenant: change.tenant_id.clone(),
            key: change.record_key(),
            payload: Payload::Bytes(codec.encode(change)?),
        });
        Ok(())
    }

    /// A finding's OCSF record, a tombstone when the row is gone.
    fn ocsf(change: ViewChange, out: &mut Vec<Outgoing>) {
        let payload = match change.row {
            Some(ViewRow::Finding(f)) => Payload::Ocsf(Box::new(f)),
            _ => Payload::Tombstone,
        };
        out.push(Outgoing {
            sink: Sink::Ocsf,
            key: aispm_schemas::ocsf::record_key(&change.tenant_id, &change.key),
            tenant: change.tenant_id,
            payload,
        });
    }

    /// The record's value (`None`: a tombstone); a finding's OCSF record is written now, the
    /// same bytes each time.
    pub fn value(&self) -> Result<Option<std::borrow::Cow<'_, [u8]>>> {
        use std::borrow::Cow;
        Ok(match &self.payload {
            Payload::Bytes(b) => Some(Cow::Borrowed(b.as_slice())),
            Payload::Ocsf(f) => Some(Cow::Owned(
                aispm_schemas::ocsf::finding_json(&self.tenant, f)
                    .map_err(|e| Error::Other(format!("OCSF record: {e}")))?,
            )),
            Payload::Tombstone => None,
        })
    }
}

/// A view change as the outbox keeps it until the views topic acknowledges it: which row, and
/// the stamp of the change, not the row itself. The row is already in its view's column family,
/// written by the same epoch; after a crash the change is published again with the row as it
/// is then (the same row, or a newer one, which is what a compacted topic keeps anyway). The
/// row bytes are not written twice, which had cost a ninth of the apply path and 60 MiB of
/// memtable at 100k entities.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Pending {
    /// Index into `columns::VIEWS`.
    view: u8,
    tenant: String,
    key: String,
    changed_at: i64,
    cause_event_id: String,
}

impl Pending {
    fn of(change: &ViewChange) -> Self {
        Pending {
            view: view_index(change.view),
            tenant: change.tenant_id.clone(),
            key: change.key.clone(),
            changed_at: change.changed_at.0,
            cause_event_id: change.cause_event_id.clone(),
        }
    }
}

/// What a batch did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub applied: HashMap<String, u64>,
    pub duplicates: u64,
    pub skipped: u64,
    pub rejected: u64,
    /// Rows changed: by the batch, and (once committed) by its epoch's end.
    pub changes: HashMap<ViewName, u64>,
    /// Distinct aggregates the batch touched (its share of the epoch's working set).
    pub aggregates: usize,
}

/// A prepared batch, applied to the open epoch: publish its view changes; commit it (which
/// writes its whole epoch) after its dead letters are acknowledged, or leave it to a later
/// batch's commit.
pub struct Prepared {
    pub rejected: Vec<Rejected>,
    /// Outbox sequence numbers `[first, end)` its commit wrote (one record; none when it was
    /// not committed or had no change).
    pub outbox: (u64, u64),
    pub outgoing: Vec<Outgoing>,
    pub stats: Stats,
    /// Its view changes as the outbox keeps them, written only if this batch is committed:
    /// an epoch's earlier batches were published before it is written.
    pending: Vec<Pending>,
}

/// The memory the state holds, by part, in bytes ([`Engine::memory`]): the parts of the
/// projector's `state_memory_bytes` gauge, whose help text says what bounds each.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    /// RocksDB's block cache (bounded by `--block-cache`).
    pub block_cache: u64,
    /// RocksDB's memtables (bounded by the write buffers).
    pub memtables: u64,
    /// RocksDB's index and filter blocks outside the block cache (grow with the state).
    pub table_readers: u64,
    /// The may-exist filter over the stored keys (grows with the distinct keys).
    pub key_filter: u64,
    /// The decoded aggregates and row digests kept across batches (bounded by
    /// `--cache-entries`).
    pub aggregate_cache: u64,
    /// What the open epoch holds beyond the cache's budget (bounded by `--epoch-bytes`).
    pub epoch: u64,
}

impl Memory {
    /// Each part by its name in `state_memory_bytes{part}`.
    pub fn parts(&self) -> [(&'static str, u64); 6] {
        [
            ("block_cache", self.block_cache),
            ("memtables", self.memtables),
            ("table_readers", self.table_readers),
            ("key_filter", self.key_filter),
            ("aggregate_cache", self.aggregate_cache),
            ("epoch", self.epoch),
        ]
    }
}

/// What writing an epoch did (`Engine::end_epoch`).
#[derive(Debug, Default, Clone)]
pub struct Ended {
    /// Outbox sequence numbers `[first, end)` written (the committed batch's changes).
    pub outbox: (u64, u64),
    /// Tenants whose changed rows were written as owed by a catch-up (`catchup.rs`).
    pub owed: Vec<String>,
    /// Tenants whose rows changed in the epoch (published or owed), each once.
    pub tenants: Vec<String>,
    /// Rows changed when it ended (the rows waiting for a publication and the owed rows,
    /// derived then).
    pub changes: HashMap<ViewName, u64>,
    /// Batches it held.
    pub batches: u64,
    /// The view changes of the rows that waited for a publication (`--publish-interval`),
    /// derived when it ended: in its outbox record, to publish now.
    pub outgoing: Vec<Outgoing>,
}

/// The epoch under way: batches applied in memory since the last write.
#[derive(Debug, Default)]
struct Open {
    batches: u64,
    /// When its first batch was prepared.
    started: Option<Instant>,
    /// Each worker's epoch's estimated bytes (what `--epoch-bytes` bounds), and of them the
    /// aggregates it holds past its cache's budget, as of its last batch.
    bytes: Vec<(usize, usize)>,
    /// Next offsets its batches reached, written with it.
    offsets: HashMap<(String, i32), i64>,
    /// Tenants whose rows its batches changed.
    tenants: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("rejected", &self.rejected.len())
            .field("outgoing", &self.outgoing.len())
            .finish()
    }
}

/// The engine: store, caches, settings, and the next offset of every partition it has applied.
#[derive(Debug)]
pub struct Engine {
    store: Arc<Store>,
    /// The cache of the first worker, whose tenants are applied on the calling thread.
    cache: Cache,
    /// The first worker's share of the open epoch (the others keep theirs on their threads).
    epoch: Epoch,
    /// The open epoch.
    open: Open,
    /// The other workers (`with_workers`): threads that own their caches.
    pool: Vec<Worker>,
    cache_entries: usize,
    settings: Settings,
    codec: Codec,
    topics: Topics,
    next_seq: u64,
    /// Aggregates touched per record, smoothed over recent batches (`batch_limit`).
    touch_rate: f64,
    /// Next offset per topic-partition: the stored ones, advanced by prepared batches.
    pub next_offsets: HashMap<(String, i32), i64>,
    /// Whether changed rows become view changes (outgoing records and the outbox).
    publishing: bool,
    /// How often live batches' changed rows are derived and published
    /// ([`Engine::with_publish_interval`]); zero: every batch.
    publish_every: Duration,
    /// When they last were.
    last_publish: Option<Instant>,
    /// Whether a changed row whose state did not change waits for the epoch's end
    /// ([`Engine::with_counters_per_epoch`]).
    counters_per_epoch: bool,
    /// [`Engine::with_judged_counts`].
    judged_counts: bool,
    /// Tenants whose changed rows are owed instead of published, and the input partition
    /// number whose catch-up owes them ([`Engine::owe`]).
    owing: HashMap<String, i32>,
    /// Partition numbers with owed rows in [`columns::OWED`].
    owed: std::collections::BTreeSet<i32>,
}

/// An input topic's event type, in the order of `Topics::inputs`.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Decision,
    Approval,
    Registry,
    Delivery,
}

impl Engine {
    pub fn new(
        store: Arc<Store>,
        topics: Topics,
        settings: Settings,
        cache_entries: usize,
    ) -> Result<Self> {
        let next_offsets = store.offsets()?;
        let owed = owed_partitions(&store)?;
        let next_seq = store
            .scan_prefix(columns::OUTBOX, b"")?
            .last()
            .and_then(|(k, _)| <[u8; 8]>::try_from(&k[..]).ok())
            .map_or(0, |k| u64::from_be_bytes(k) + 1);
        let engine = Engine {
            store,
            cache: Cache::new(cache_entries),
            epoch: Epoch::default(),
            open: Open::default(),
            pool: Vec::new(),
            cache_entries,
            settings,
            codec: Codec::new(),
            topics,
            next_seq,
            touch_rate: INITIAL_TOUCH_RATE,
            next_offsets,
            publishing: true,
            publish_every: Duration::ZERO,
            last_publish: None,
            counters_per_epoch: false,
            judged_counts: true,
            owing: HashMap::new(),
            owed,
        };
        // One worker until `with_workers` says otherwise; its cache knows the stored keys.
        engine.with_workers(1)
    }

    /// How many records the next batch may take: `max_records`, or fewer when recent batches
    /// touched so many distinct aggregates per record that a full batch would hold more than
    /// `max_aggregates` of them decoded at once.
    ///
    /// Big batches are what makes the engine cheap per event (an aggregate or row touched many
    /// times in a batch is decoded, derived, encoded and written once), but the working set
    /// is what a batch costs in memory, and it depends on how many distinct entities the
    /// records touch. With few entities (or a steady live trickle) batches fill to
    /// `max_records`; over many entities they are cut to keep memory bounded.
    pub fn batch_limit(&self, max_records: usize, max_aggregates: usize) -> usize {
        let by_memory = (max_aggregates as f64 / self.touch_rate.max(1e-3)) as usize;
        by_memory.clamp(MIN_BATCH.min(max_records), max_records.max(1))
    }

    /// Applies each batch on `workers` threads, tenants split between them: the calling
    /// thread and `workers - 1` long-lived threads, each with its own cache (the caches' total
    /// size stays the same).
    ///
    /// Each worker's cache starts with the may-exist filter of its tenants' stored keys
    /// (`filter.rs`): one scan of the keys of `state`, `seen` and the views.
    pub fn with_workers(mut self, workers: usize) -> Result<Self> {
        let workers = workers.max(1);
        let entries = self.cache_entries.div_ceil(workers);
        if self.epoch_open() {
            return Err(Error::Other(
                "the workers cannot change while an epoch is open".into(),
            ));
        }
        self.pool.clear(); // stops the old threads
        let mut caches: Vec<Cache> = (0..workers).map(|_| Cache::new(entries)).collect();
        let mut cfs = vec![columns::STATE, columns::SEEN];
        cfs.extend(columns::VIEWS.iter().map(|(_, cf)| *cf));
        for cf in cfs {
            let Some(byte) = crate::batch::filter_byte(cf) else {
                continue;
            };
            self.store.for_each_key(cf, |key| {
                let tenant = columns::split_tenant_key(key).map_or("", |(t, _)| t);
                caches[worker_of(tenant, workers)].exists.insert(byte, key);
            })?;
        }
        let mut caches = caches.into_iter();
        self.cache = caches.next().unwrap_or_else(|| Cache::new(entries));
        for (i, cache) in (1..workers).zip(caches) {
            self.pool.push(Worker::start(
                i,
                Arc::clone(&self.store),
                self.settings.clone(),
                self.codec.clone(),
                cache,
                self.publishing,
            )?);
        }
        Ok(self)
    }

    pub fn workers(&self) -> usize {
        1 + self.pool.len()
    }

    /// Derives and publishes the rows live batches changed at most once per `every`, not
    /// after each batch: a row changed by several batches within it (an agent's coverage, a
    /// control's row, a finding that keeps occurring) is derived and published once, with the
    /// values the state has then. Rows wait in the open epoch; a batch that comes `every` after
    /// the last publication derives them with its own, and so does the epoch's end
    /// ([`Ended::outgoing`]). What a catch-up owes waits for its end as before. Zero (the
    /// default): every batch publishes its rows.
    pub fn with_publish_interval(mut self, every: Duration) -> Self {
        self.publish_every = every;
        self
    }

    /// An engine that publishes a changed row at once only when its state changed
    /// (`ViewRow::hash_state`: a new row or a deleted one, a status, an owner, a mode, a count
    /// leaving zero…), and leaves a change of its running counts alone (one more decision on
    /// an agent's coverage, one more occurrence of an open finding) to the epoch's end, where
    /// the row is derived and published once with the values it has then. A verdict reads
    /// state, so it is as fresh as before; a busy row is published once per epoch
    /// (`--epoch-interval`) instead of once per batch.
    pub fn with_counters_per_epoch(mut self, per_epoch: bool) -> Self {
        self.counters_per_epoch = per_epoch;
        self
    }

    /// With counts once per epoch ([`Engine::with_counters_per_epoch`]), whether a row that an
    /// event is known, from its aggregate, to change only the counts of (`Overlay::dirty_as`:
    /// `AssetAgg::named_moves_state`, `ControlAgg::decision_moves_state`,
    /// `FindingFacts::raise_moves_state`) goes to the epoch's end without being derived in its
    /// batch (`true`, the default). `false` derives every changed row in its batch and compares
    /// its state, as before those judgements: the same state changes go out in the same
    /// batches, which the determinism tests check, and a pair of benchmark runs measures.
    pub fn with_judged_counts(mut self, judged: bool) -> Self {
        self.judged_counts = judged;
        self
    }

    /// What becomes of a change of running counts alone, from the two settings above.
    fn counters(&self) -> Counters {
        if self.counters_per_epoch {
            Counters::Coalesce {
                underived: self.judged_counts,
            }
        } else {
            Counters::AtOnce
        }
    }

    /// An engine whose changed rows are written but never become view changes: no outgoing
    /// records, nothing in the outbox (a replay into a scratch database, `as_of.rs`, which
    /// nobody subscribes to).
    pub fn without_publishing(mut self) -> Result<Self> {
        self.publishing = false;
        if self.pool.is_empty() {
            // No worker thread was told otherwise: nothing to restart (nor its caches to fill
            // again from a scan of every key).
            return Ok(self);
        }
        let workers = self.workers();
        self.with_workers(workers)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Applies a batch of records to the open epoch (opening one if none is), and returns its
    /// view changes to publish; [`Engine::commit`] writes the epoch.
    ///
    /// Records are decoded and validated in order on the calling thread, then split by tenant
    /// over the engine's workers (`with_workers`): tenants share no state, so each worker
    /// applies its tenants' events in their order to its share of the epoch and re-derives
    /// their rows, with its own cache, while the others do the same. The views do not depend on
    /// the number of workers, nor on where epochs end; the order of the view changes differs
    /// only between tenants.
    ///
    /// On an error the open epoch is dropped whole: the engine stands where the store does.
    pub fn prepare(&mut self, inputs: &[Input<'_>]) -> Result<Prepared> {
        let prepared = self.try_prepare(inputs);
        if prepared.is_err() {
            self.abandon_epoch();
        }
        prepared
    }

    fn try_prepare(&mut self, inputs: &[Input<'_>]) -> Result<Prepared> {
        let mut stats = Stats::default();
        let mut rejected = Vec::new();
        // Next offset per partition of this batch (a handful: searched, not hashed, so no key
        // is allocated per record).
        let mut offsets: Vec<((String, i32), i64)> = Vec::new();
        let workers = self.workers();
        let mut shards: Vec<Vec<Asserted>> = (0..workers).map(|_| Vec::new()).collect();
        for input in inputs {
            let slot = match offsets
                .iter()
                .position(|((t, p), _)| *p == input.partition && t == input.topic)
            {
                Some(i) => i,
                None => {
                    let tp = (input.topic.to_owned(), input.partition);
                    let stored = self.next_offsets.get(&tp).copied().unwrap_or(0);
                    offsets.push((tp, stored));
                    offsets.len() - 1
                }
            };
            if input.offset < offsets[slot].1 {
                stats.skipped += 1; // redelivered after a rebalance: already applied
                continue;
            }
            offsets[slot].1 = input.offset + 1;
            let reject = |stage, reason, error: String| Rejected {
                topic: input.topic.to_owned(),
                partition: input.partition,
                offset: input.offset,
                key: input.key.map(<[u8]>::to_vec),
                payload: input.payload.map(<[u8]>::to_vec),
                stage,
                reason,
                error,
            };
            let Some(kind) = kind(&self.topics, input.topic) else {
                rejected.push(reject(
                    Stage::Decode,
                    "unknown_topic",
                    format!("not an input topic: {}", input.topic),
                ));
                continue;
            };
            let Some(payload) = input.payload else {
                rejected.push(reject(Stage::Decode, "empty", "record has no value".into()));
                continue;
            };
            // The size policy: a record over it is refused whole (and dead-lettered by
            // reference), never decoded into rows that could not be published.
            if let Some(why) = aispm_schemas::limits::oversized_event(payload.len()) {
                rejected.push(reject(
                    Stage::Validate,
                    aispm_schemas::limits::RECORD_TOO_LARGE,
                    why,
                ));
                continue;
            }
            let event = match decode(&self.codec, kind, payload) {
                Ok(e) => e,
                Err(e) => {
                    rejected.push(reject(Stage::Decode, e.reason(), e.to_string()));
                    continue;
                }
            };
            let errors = event.validate();
            if !errors.is_empty() {
                let msg = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                let reason = aispm_schemas::FieldError::code_of(&errors);
                rejected.push(reject(Stage::Validate, reason, msg));
                continue;
            }
            // The key places the record (a tenant's events in order on one partition) and is
            // what topic-level tooling and consumers route by: it must name the payload's
            // tenant, or a producer could file one tenant's events under another's key.
            if input.key != Some(event.tenant_id().as_bytes()) {
                let key = input.key.map_or_else(
                    || "no key".to_owned(),
                    |k| format!("key '{}'", String::from_utf8_lossy(k)),
                );
                rejected.push(reject(
                    Stage::Validate,
                    "tenant_mismatch",
                    format!(
                        "the record has {key} but its payload names tenant '{}'; records are keyed by tenant_id",
                        event.tenant_id()
                    ),
                ));
                continue;
            }
            if let Some(ts) = input.timestamp
                && aispm_schemas::time::dated_in_future(
                    event.occurred_at(),
                    Timestamp(ts),
                    self.settings.future_tolerance,
                )
            {
                rejected.push(reject(
                    Stage::Validate,
                    "future_occurred_at",
                    format!(
                        "occurred_at {} is more than {} after the record's timestamp {}",
                        event.occurred_at(),
                        humantime::format_duration(self.settings.future_tolerance),
                        Timestamp(ts)
                    ),
                ));
                continue;
            }
            shards[worker_of(event.tenant_id(), workers)].push(Asserted {
                kind,
                event,
                by: input.principal.map(str::to_owned),
                payload: payload.to_vec(),
                arrived: input.timestamp,
            });
        }
        stats.rejected = rejected.len() as u64;

        // A catch-up owes some tenants' rows: their rows wait for the epoch's end. The others'
        // are derived now if a publication is due, else they wait for the next.
        let owing = self.owing_set();
        let publish_now = self.publication_due();
        let counters = self.counters();
        let outs = on_workers(
            &self.pool,
            shards,
            |events| Job::Apply(events, owing.clone(), publish_now, counters),
            |mine| {
                apply_shard(
                    &self.store,
                    &mut self.cache,
                    &mut self.epoch,
                    &self.settings,
                    &self.codec,
                    &mine,
                    self.publishing.then_some(counters),
                    owing.as_deref(),
                    publish_now,
                )
            },
        );
        if publish_now {
            self.last_publish = Some(Instant::now());
        }

        let mut outgoing = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        let outs = outs.into_iter().collect::<Result<Vec<Shard>>>()?;
        self.open.bytes.resize(self.workers(), (0, 0));
        for out in outs {
            // `Kind` follows the order of `Topics::inputs`.
            for (topic, n) in self.topics.inputs().into_iter().zip(out.applied) {
                if n > 0 {
                    *stats.applied.entry(topic.to_owned()).or_default() += n;
                }
            }
            stats.duplicates += out.duplicates;
            stats.aggregates += out.aggregates;
            for (view, n) in out.changes {
                *stats.changes.entry(view).or_default() += n;
            }
            if let Some(b) = self.open.bytes.get_mut(out.worker) {
                *b = (out.epoch_bytes, out.over_budget);
            }
            // The owed tenants' changes are left out by the workers.
            pending.extend(out.pending);
            outgoing.extend(out.outgoing);
        }
        for p in &pending {
            if !self.open.tenants.contains(&p.tenant) {
                self.open.tenants.insert(p.tenant.clone());
            }
        }

        // Only batches big enough to say something move the rate (a live trickle of a few
        // records touches everything once: the rate of a tiny batch is its worst case).
        if inputs.len() >= MIN_BATCH {
            let rate = stats.aggregates as f64 / inputs.len() as f64;
            self.touch_rate = (self.touch_rate + rate) / 2.0;
        }
        for (tp, next) in offsets {
            self.next_offsets.insert(tp.clone(), next);
            self.open.offsets.insert(tp, next);
        }
        self.open.batches += 1;
        self.open.started.get_or_insert_with(Instant::now);
        Ok(Prepared {
            rejected,
            outbox: (self.next_seq, self.next_seq),
            outgoing,
            stats,
            pending,
        })
    }

    /// Whether the batch being prepared derives the rows waiting and its own: always with a
    /// zero `--publish-interval`, else once the interval has passed since the last publication
    /// (so a batch after a quiet spell publishes at once).
    fn publication_due(&self) -> bool {
        self.publish_every.is_zero()
            || self
                .last_publish
                .is_none_or(|at| at.elapsed() >= self.publish_every)
    }

    /// The tenants a catch-up owes, as the workers are told them.
    fn owing_set(&self) -> Option<Owing> {
        (!self.owing.is_empty()).then(|| Arc::new(self.owing.keys().cloned().collect()))
    }

    /// Whether an epoch is open: batches prepared and not yet written.
    pub fn epoch_open(&self) -> bool {
        self.open.batches > 0
    }

    /// How long ago the open epoch's first batch was prepared (zero when none is open).
    pub fn epoch_age(&self) -> Duration {
        self.open.started.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// The open epoch's estimated bytes in memory, over all workers: what bounds it.
    pub fn epoch_bytes(&self) -> usize {
        self.open.bytes.iter().map(|b| b.0).sum()
    }

    /// Of [`Engine::epoch_bytes`], the aggregates the open epoch holds past the caches'
    /// budgets (the caches' estimate counts them too).
    pub fn epoch_over_budget(&self) -> usize {
        self.open.bytes.iter().map(|b| b.1).sum()
    }

    /// The memory the state holds now, by part (`state_memory_bytes{part}`).
    pub fn memory(&self) -> Memory {
        let (memtables, table_readers, block_cache) = self.store.memory();
        let u = |v: usize| v as u64;
        Memory {
            block_cache,
            memtables,
            table_readers,
            key_filter: u(crate::filter::total_bytes()),
            aggregate_cache: u(crate::batch::cache_bytes().saturating_sub(self.epoch_over_budget())),
            epoch: u(self.epoch_bytes()),
        }
    }

    /// Commits `prepared`'s epoch: writes every batch prepared since the last commit, its
    /// view changes in the outbox (the epoch's earlier batches' were published before), and
    /// the offsets, in one atomic write. `prepared` learns its outbox range and the rows the
    /// epoch's end changed; the tenants owed are in what it returns.
    pub fn commit(&mut self, prepared: &mut Prepared) -> Result<Ended> {
        let mut ended = self.end_epoch_with(std::mem::take(&mut prepared.pending))?;
        prepared.outbox = ended.outbox;
        for (view, n) in &ended.changes {
            *prepared.stats.changes.entry(*view).or_default() += n;
        }
        // The rows that waited go out with the batch's.
        prepared.outgoing.append(&mut ended.outgoing);
        Ok(ended)
    }

    /// Writes the open epoch, if one is open (a commit without a batch: the input is idle, a
    /// flush or a catch-up's end is due, or the engine stops).
    pub fn end_epoch(&mut self) -> Result<Ended> {
        if !self.epoch_open() {
            return Ok(Ended::default());
        }
        self.end_epoch_with(Vec::new())
    }

    fn end_epoch_with(&mut self, pending: Vec<Pending>) -> Result<Ended> {
        let ended = self.try_end_epoch(pending);
        if ended.is_err() {
            self.abandon_epoch();
        }
        ended
    }

    /// Each worker derives the rows its epoch left to the end and hands its writes over; they
    /// go into one `WriteBatch` with the owed rows' keys, the outbox record and the offsets.
    fn try_end_epoch(&mut self, mut pending: Vec<Pending>) -> Result<Ended> {
        let mut batch = rocksdb::WriteBatch::default();
        let everyone: Vec<Vec<()>> = (0..self.workers()).map(|_| vec![()]).collect();
        let owing = self.owing_set();
        let counters = self.counters();
        let outs = on_workers(
            &self.pool,
            everyone,
            |_| Job::End(owing.clone(), counters),
            |_| {
                end_shard(
                    &self.store,
                    &mut self.cache,
                    &mut self.epoch,
                    &self.settings,
                    self.publishing
                        .then_some((&self.codec, counters.at_the_end())),
                    owing.as_deref(),
                )
            },
        );
        self.last_publish = Some(Instant::now());
        let outs = outs.into_iter().collect::<Result<Vec<Shard>>>()?;
        // Every worker derived in parallel; now each puts its writes into the one batch in
        // turn, the calling thread's first.
        drain_shard(&self.store, &mut self.cache, &mut self.epoch, &mut batch)?;
        for (i, worker) in self.pool.iter().enumerate() {
            let sent = worker.jobs.as_ref().map(|j| j.send(Job::Drain(batch)));
            if !matches!(sent, Some(Ok(()))) {
                return Err(worker_stopped(i + 1));
            }
            batch = worker
                .results
                .recv()
                .unwrap_or_else(|_| Err(worker_stopped(i + 1)))?
                .batch
                .ok_or_else(|| worker_stopped(i + 1))?;
        }
        let mut ended = Ended {
            batches: self.open.batches,
            ..Ended::default()
        };
        for out in outs {
            for (view, n) in out.changes {
                *ended.changes.entry(view).or_default() += n;
            }
            // The rows that waited for a publication: in the outbox record, published next.
            pending.extend(out.pending);
            ended.outgoing.extend(out.outgoing);
            // A catch-up owes these tenants' rows: each row derived, changed or not, is noted
            // under its partition number, to be derived and published once when the catch-up
            // ends. Changed or not: a row the previous owner published may have come and gone
            // here within one epoch (no change to publish, yet the topic must lose it).
            for (tenant, view, key) in &out.derived {
                let Some(&partition) = self.owing.get(tenant.as_str()) else {
                    return Err(Error::Other(format!(
                        "an epoch derived rows of tenant '{tenant}' for a catch-up that no longer owes them"
                    )));
                };
                self.store.batch_put(
                    &mut batch,
                    columns::OWED,
                    &columns::owed_key(partition, view_index(*view), tenant, key),
                    b"",
                )?;
                self.owed.insert(partition);
                if !ended.owed.contains(tenant) {
                    ended.owed.push(tenant.clone());
                }
            }
        }
        // The committed batch's view changes as one outbox record: one write and one delete.
        let first = self.next_seq;
        if !pending.is_empty() {
            self.store.batch_put(
                &mut batch,
                columns::OUTBOX,
                &self.next_seq.to_be_bytes(),
                &encode(&pending),
            )?;
            self.next_seq += 1;
        }
        ended.outbox = (first, self.next_seq);
        for ((topic, partition), next) in &self.open.offsets {
            self.store.batch_put(
                &mut batch,
                columns::OFFSETS,
                &columns::offset_key(topic, *partition),
                &next.to_be_bytes(),
            )?;
        }
        self.store.write(batch)?;
        let open = std::mem::take(&mut self.open);
        ended.tenants = open.tenants.into_iter().collect();
        for t in &ended.owed {
            if !ended.tenants.contains(t) {
                ended.tenants.push(t.clone());
            }
        }
        Ok(ended)
    }

    /// Drops the open epoch (after an error): every worker's epoch and cache, and the offsets
    /// it had reached. The engine stands where the store does.
    fn abandon_epoch(&mut self) {
        self.clear_caches();
        self.open = Open::default();
        match self.store.offsets() {
            Ok(o) => self.next_offsets = o,
            Err(e) => tracing::error!(error = %e, "Reading the stored offsets failed."),
        }
    }

    /// From now on `tenant`'s changed rows are owed by the catch-up of input partition number
    /// `partition` (`catchup.rs`): written to [`columns::OWED`] with the batch instead of the
    /// outbox, and published by `Engine::owed_page` once that catch-up ends. A tenant already
    /// owed keeps its first partition number. Public for the bench, which applies as a
    /// catch-up does.
    pub fn owe(&mut self, tenant: &str, partition: i32) {
        if !self.owing.contains_key(tenant) {
            self.owing.insert(tenant.to_owned(), partition);
        }
    }

    /// The partition numbers that owe rows: tenants held ([`Engine::owe`]) or rows stored.
    pub(crate) fn owing_partitions(&self) -> std::collections::BTreeSet<i32> {
        let mut out = self.owed.clone();
        out.extend(self.owing.values().copied());
        out
    }

    /// Up to `limit` rows owed under `partition`, from the key `from` on (`None`: the first),
    /// and the key to continue from (`None`: no more), as view changes derived from the state
    /// now, each on the worker that owns its tenant.
    ///
    /// Derived now, not as they were when they last changed: a row's stamp names the newest
    /// event behind what it reads, and can move on while its bytes stay the same. Whoever
    /// published the row before published it as of a state this one contains, so the stamp
    /// derived now is never older than theirs.
    pub(crate) fn owed_page(
        &mut self,
        partition: i32,
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Outgoing>, Option<Vec<u8>>)> {
        let prefix = partition.to_be_bytes();
        let workers = self.workers();
        let mut shards: Vec<Vec<OwedRow>> = (0..workers).map(|_| Vec::new()).collect();
        let mut rows = 0;
        let mut next = None;
        self.store
            .walk_from(columns::OWED, &prefix, from.unwrap_or(&prefix), |k, _| {
                if rows == limit {
                    next = Some(k.to_vec());
                    return Ok(false);
                }
                let (_, view, tenant, key) = columns::split_owed_key(k)
                    .ok_or_else(|| Error::Corrupt("an owed row's key".into()))?;
                let Some(&(view, _)) = columns::VIEWS.get(usize::from(view)) else {
                    return Err(Error::Corrupt(format!("an owed row names view {view}")));
                };
                shards[worker_of(tenant, workers)].push((tenant.to_owned(), view, key.to_owned()));
                rows += 1;
                Ok(true)
            })?;
        Ok((self.derive_now(shards)?, next))
    }

    /// The view changes of rows derived from the state now, each share on the worker that
    /// owns its tenants (`shards[i]`: worker i's rows).
    fn derive_now(&mut self, shards: Vec<Vec<OwedRow>>) -> Result<Vec<Outgoing>> {
        let outs = on_workers(&self.pool, shards, Job::Derive, |mine| {
            derive_owed(
                &self.store,
                &mut self.cache,
                &mut self.epoch,
                &self.settings,
                &self.codec,
                &mine,
            )
        });
        let mut out = Vec::new();
        for shard in outs {
            out.extend(shard?.outgoing);
        }
        Ok(out)
    }

    /// The rows owed under `partition` are published: they are removed, and its tenants' rows
    /// are published as they change again.
    pub(crate) fn settle(&mut self, partition: i32) -> Result<()> {
        self.forget(partition)?;
        if self.owed.remove(&partition) {
            self.store.delete_prefix(columns::OWED, partition)?;
        }
        Ok(())
    }

    /// The catch-up of `partition` stopped without ending (the partitions were revoked): its
    /// tenants' rows are published as they change again; what they owe stays stored until a
    /// catch-up of that number ends here again (the new owner publishes its own).
    pub(crate) fn forget(&mut self, partition: i32) -> Result<()> {
        if self.epoch_open() {
            // Its rows still wait for the epoch's end, owed under this number.
            return Err(Error::Other(
                "a catch-up cannot end while an epoch is open".into(),
            ));
        }
        self.owing.retain(|_, p| *p != partition);
        Ok(())
    }

    /// Removes published view changes from the outbox.
    pub fn clear_outbox(&self, range: (u64, u64)) -> Result<()> {
        if range.0 == range.1 {
            return Ok(());
        }
        let mut batch = rocksdb::WriteBatch::default();
        for seq in range.0..range.1 {
            self.store
                .batch_delete(&mut batch, columns::OUTBOX, &seq.to_be_bytes())?;
        }
        self.store.write(batch)
    }

    /// View changes committed but not yet acknowledged (after a crash), with their range: each
    /// changed row once (the last change of it), derived from the state now (as the rows a
    /// catch-up owes, [`Engine::owed_page`]: a stamp derived now is never older than one
    /// published before from a state this one contains), in the order of those last changes
    /// on each worker.
    pub fn pending_outbox(&mut self) -> Result<(Vec<Outgoing>, (u64, u64))> {
        let entries = self.store.scan_prefix(columns::OUTBOX, b"")?;
        let first = entries
            .first()
            .and_then(|(k, _)| <[u8; 8]>::try_from(&k[..]).ok())
            .map_or(self.next_seq, u64::from_be_bytes);
        let mut changes: Vec<Pending> = Vec::new();
        for (_, v) in &entries {
            changes.extend(crate::store::decode::<Vec<Pending>>(v)?);
        }
        let mut last: crate::batch::HashMap<(u8, &str, &str), usize> = Default::default();
        for (i, p) in changes.iter().enumerate() {
            last.insert((p.view, &p.tenant, &p.key), i);
        }
        let workers = self.workers();
        let mut shards: Vec<Vec<OwedRow>> = (0..workers).map(|_| Vec::new()).collect();
        for (i, p) in changes.iter().enumerate() {
            if last.get(&(p.view, p.tenant.as_str(), p.key.as_str())) != Some(&i) {
                continue;
            }
            let Some(&(view, _)) = columns::VIEWS.get(usize::from(p.view)) else {
                return Err(Error::Corrupt(format!("outbox names view {}", p.view)));
            };
            shards[worker_of(&p.tenant, workers)].push((p.tenant.clone(), view, p.key.clone()));
        }
        Ok((self.derive_now(shards)?, (first, self.next_seq)))
    }

    /// Empties every worker's cache and epoch (a stopped worker says so at the next batch).
    fn clear_caches(&mut self) {
        self.cache.clear();
        self.epoch = Epoch::default();
        for w in &self.pool {
            if let Some(jobs) = &w.jobs {
                let _ = jobs.send(Job::Clear);
            }
        }
    }

    /// Drops cached values (after the store is wiped).
    pub fn reset(&mut self) -> Result<()> {
        self.clear_caches();
        self.open = Open::default();
        self.next_offsets = self.store.offsets()?;
        self.next_seq = 0;
        self.owing.clear();
        self.owed = owed_partitions(&self.store)?;
        Ok(())
    }
}

/// The partition numbers that have rows in [`columns::OWED`]: one seek per number.
fn owed_partitions(store: &Store) -> Result<std::collections::BTreeSet<i32>> {
    let mut out = std::collections::BTreeSet::new();
    let mut from = 0i32.to_be_bytes().to_vec();
    loop {
        let mut found = None;
        store.walk_from(columns::OWED, b"", &from, |k, _| {
            found = k.get(..4).and_then(|p| <[u8; 4]>::try_from(p).ok());
            Ok(false)
        })?;
        let Some(p) = found.map(i32::from_be_bytes) else {
            return Ok(out);
        };
        out.insert(p);
        match p.checked_add(1) {
            Some(next) if next >= 0 => from = next.to_be_bytes().to_vec(),
            _ => return Ok(out),
        }
    }
}

/// An owed row: tenant, view, row key.
type OwedRow = (String, ViewName, String);

/// The tenants whose rows a catch-up owes, as the workers are told them for one batch.
type Owing = Arc<crate::batch::HashSet<String>>;

/// What a worker thread is asked to do.
enum Job {
    /// Apply these events (all of the batch's events of the worker's tenants, in order) to
    /// the epoch; the rows of the tenants a catch-up owes wait for its end, the others are
    /// derived now if a publication is due (`true`), else wait for the next; what becomes of
    /// a change of running counts alone.
    Apply(Vec<Asserted>, Option<Owing>, bool, Counters),
    /// End the epoch: derive the rows left to its end (`end_shard`); the rows of the tenants a
    /// catch-up owes stay unpublished.
    End(Option<Owing>, Counters),
    /// Put the ended epoch's writes into this `WriteBatch` and hand it back (`drain_shard`).
    Drain(rocksdb::WriteBatch),
    /// Derive these owed rows of the worker's tenants as view changes (`Engine::owed_page`).
    Derive(Vec<OwedRow>),
    /// Drop the cache and the epoch (the store was wiped, or the epoch failed).
    Clear,
}

/// A long-lived apply thread and its channels; it owns its cache, so what it caches stays in
/// its own allocator heap from batch to batch.
struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    results: mpsc::Receiver<Result<Shard>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

impl Worker {
    fn start(
        index: usize,
        store: Arc<Store>,
        settings: Settings,
        codec: Codec,
        mut cache: Cache,
        publishing: bool,
    ) -> Result<Worker> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (outbox, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("apply-{index}"))
            .spawn(move || {
                let mut epoch = Epoch::default();
                for job in inbox {
                    let out = match job {
                        Job::Apply(events, owing, publish_now, counters) => apply_shard(
                            &store,
                            &mut cache,
                            &mut epoch,
                            &settings,
                            &codec,
                            &events,
                            publishing.then_some(counters),
                            owing.as_deref(),
                            publish_now,
                        ),
                        Job::End(owing, counters) => end_shard(
                            &store,
                            &mut cache,
                            &mut epoch,
                            &settings,
                            publishing.then_some((&codec, counters.at_the_end())),
                            owing.as_deref(),
                        ),
                        Job::Drain(mut batch) => {
                            drain_shard(&store, &mut cache, &mut epoch, &mut batch).map(|()| {
                                Shard {
                                    batch: Some(batch),
                                    ..Shard::default()
                                }
                            })
                        }
                        Job::Derive(owed) => {
                            derive_owed(&store, &mut cache, &mut epoch, &settings, &codec, &owed)
                        }
                        Job::Clear => {
                            cache.clear();
                            epoch = Epoch::default();
                            continue;
                        }
                    };
                    let out = out.map(|mut shard| {
                        shard.worker = index;
                        shard
                    });
                    if outbox.send(out).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Worker {
            jobs: Some(jobs),
            results,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.jobs = None; // ends the thread's loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs each worker's share of a job: `shards[0]` with `mine` on the calling thread, each other
/// non-empty share on its worker's thread (`job` makes the message) meanwhile. Every worker
/// asked is answered before this returns, errors included, so no answer is left for the next
/// job to read.
fn on_workers<T>(
    pool: &[Worker],
    shards: Vec<Vec<T>>,
    job: impl Fn(Vec<T>) -> Job,
    mine: impl FnOnce(Vec<T>) -> Result<Shard>,
) -> Vec<Result<Shard>> {
    let mut shards = shards.into_iter();
    let first = shards.next().unwrap_or_default();
    let mut asked = Vec::new();
    let mut outs: Vec<Result<Shard>> = Vec::with_capacity(pool.len() + 1);
    for (i, share) in shards.enumerate() {
        if share.is_empty() {
            continue;
        }
        match pool[i].jobs.as_ref().map(|j| j.send(job(share))) {
            Some(Ok(())) => asked.push(i),
            _ => outs.push(Err(worker_stopped(i + 1))),
        }
    }
    if !first.is_empty() {
        outs.push(mine(first));
    }
    for i in asked {
        outs.push(
            pool[i]
                .results
                .recv()
                .unwrap_or_else(|_| Err(worker_stopped(i + 1))),
        );
    }
    outs
}

/// One write into a batch (`None` deletes).
fn put(
    store: &Store,
    batch: &mut rocksdb::WriteBatch,
    cf: &str,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<()> {
    match value {
        Some(v) => store.batch_put(batch, cf, key, v),
        None => store.batch_delete(batch, cf, key),
    }
}

fn worker_stopped(index: usize) -> Error {
    Error::Other(format!("apply worker {index} stopped"))
}

/// What one worker made of its tenants' events in a batch, or of its epoch when it ended.
#[derive(Default)]
struct Shard {
    /// The epoch's `WriteBatch`, handed back by a worker that drained its writes into it
    /// (`Job::Drain`).
    batch: Option<rocksdb::WriteBatch>,
    pending: Vec<Pending>,
    outgoing: Vec<Outgoing>,
    /// Applied events by `Kind`.
    applied: [u64; 4],
    duplicates: u64,
    changes: HashMap<ViewName, u64>,
    /// Distinct aggregates the batch touched.
    aggregates: usize,
    /// Every owed row derived when the epoch ended, changed or not (`end_shard`).
    derived: crate::batch::HashSet<Dirty>,
    /// The worker's epoch's estimated bytes after the batch (`Overlay::epoch_bytes`), and of
    /// them the aggregates held past the cache's budget.
    epoch_bytes: usize,
    over_budget: usize,
    /// The worker it comes from.
    worker: usize,
}

/// Derives owed rows from the state now (the worker's open epoch, then its cache and the
/// store): their view changes, in `Shard::outgoing`. Nothing is written.
fn derive_owed(
    store: &Store,
    cache: &mut Cache,
    epoch: &mut Epoch,
    settings: &Settings,
    codec: &Codec,
    owed: &[OwedRow],
) -> Result<Shard> {
    let mut ov = Overlay::new(store, cache, epoch);
    let mut outgoing = Vec::new();
    for (tenant, view, key) in owed {
        let derived = derive::row(&mut ov, tenant, *view, key, settings)?;
        let change = derived.change(tenant, *view, key);
        Outgoing::of(codec, change, &mut outgoing)?;
    }
    Ok(Shard {
        outgoing,
        ..Shard::default()
    })
}

/// Where the changes of rows derived go: to publish (with the tenants a catch-up owes left
/// out), or nowhere (the epoch's end derives only owed rows; a replay publishes nothing).
struct Publishing<'p> {
    codec: &'p Codec,
    pending: Vec<Pending>,
    outgoing: Vec<Outgoing>,
    counters: Counters,
}

/// What becomes of a changed row whose state (`ViewRow::hash_state`) did not change: only
/// its running counts did ([`Engine::with_counters_per_epoch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counters {
    /// Published at once, like any change (the default); no state is compared.
    AtOnce,
    /// Left to the epoch's end (`Overlay::coalesce`); the state of each row published is
    /// kept, to compare the row's next change with. `underived`: a row an event is known to
    /// change only the counts of goes there without being derived
    /// ([`Engine::with_judged_counts`]).
    Coalesce { underived: bool },
    /// Published now, its state kept: the epoch's end.
    Record,
}

impl Counters {
    /// What the epoch's end does: publishes every row, keeping its state if states are kept.
    fn at_the_end(self) -> Counters {
        match self {
            Counters::AtOnce => Counters::AtOnce,
            Counters::Coalesce { .. } | Counters::Record => Counters::Record,
        }
    }
}

/// Derives `round` of dirty rows, then the rows those read (`follow`), in rounds, each in key
/// order, until none is left; keeps each row that changed (`Overlay::set_row`), counts it in
/// `changes` and, when `publishing`, makes it a view change (a finding's OCSF record waits for
/// the epoch's end, `Overlay::ocsf_due`). Returns every row derived.
fn derive_rounds(
    ov: &mut Overlay<'_>,
    mut round: Vec<Dirty>,
    settings: &Settings,
    mut publishing: Option<&mut Publishing<'_>>,
    changes: &mut HashMap<ViewName, u64>,
) -> Result<crate::batch::HashSet<Dirty>> {
    let mut done: crate::batch::HashSet<Dirty> = crate::batch::HashSet::default();
    while !round.is_empty() {
        round.sort_unstable();
        round.dedup();
        let mut next_round = Vec::new();
        for dirty in &round {
            if done.contains(dirty) {
                continue;
            }
            let (tenant, view, key) = (dirty.0.as_str(), dirty.1, dirty.2.as_str());
            let derived = derive::row(ov, tenant, view, key, settings)?;
            for (v, k) in &derived.follow {
                let follow = (tenant.to_owned(), *v, k.clone());
                if !done.contains(&follow) {
                    next_round.push(follow);
                }
            }
            let counters = publishing.as_ref().map_or(Counters::AtOnce, |p| p.counters);
            let state = match (counters, &derived.row) {
                (Counters::AtOnce, _) | (_, None) => None,
                (_, Some(row)) => crate::batch::state_digest(row),
            };
            let row_key = Overlay::row_key(tenant, view, key);
            // Its state as written: only its counts may have changed, which the epoch's end
            // publishes (re-derived then; unchanged, nothing goes out). Known before encoding
            // the row or reading what was written of it.
            if matches!(counters, Counters::Coalesce { .. })
                && state.is_some()
                && ov.written_state(&row_key) == state
            {
                ov.coalesce(dirty.clone());
                continue;
            }
            let new_bytes = derived.row.as_ref().map(encode_row);
            if ov.row_is(&row_key, new_bytes.as_deref())? {
                continue;
            }
            ov.set_row(row_key, new_bytes, state);
            *changes.entry(view).or_default() += 1;
            let Some(p) = publishing.as_deref_mut() else {
                continue;
            };
            if view == ViewName::Findings {
                ov.ocsf_due(dirty.clone(), &derived.stamp);
            }
            let change = derived.change(tenant, view, key);
            p.pending.push(Pending::of(&change));
            Outgoing::view(p.codec, &change, &mut p.outgoing)?;
        }
        // Derived (or skipped as derived in an earlier round): not again.
        done.extend(round.drain(..));
        round = next_round;
    }
    Ok(done)
}

/// Applies one worker's events of a batch (all of its tenants' events of the batch, in order)
/// to its epoch, re-derives every row they made dirty once, and returns the view changes to
/// publish. Nothing is written: the epoch keeps it all until it ends (`end_shard`).
///
/// The rows of the tenants a catch-up owes (`owing`) are not derived here but once, when the
/// epoch ends: nothing of theirs is published before the catch-up ends (`Engine::owed_page`),
/// so deriving them batch after batch was work thrown away. The others are derived with the
/// rows earlier batches left waiting when a publication is due (`publish_now`), else they
/// wait too (`Engine::with_publish_interval`).
#[allow(
    clippy::too_many_arguments,
    reason = "the worker's parts and the batch's switches; a struct would only rename them"
)]
fn apply_shard(
    store: &Store,
    cache: &mut Cache,
    epoch: &mut Epoch,
    settings: &Settings,
    codec: &Codec,
    events: &[Asserted],
    publishing: Option<Counters>,
    owing: Option<&crate::batch::HashSet<String>>,
    publish_now: bool,
) -> Result<Shard> {
    epoch.next_batch();
    let mut ov = Overlay::new(store, cache, epoch);
    ov.counts_wait = publishing == Some(Counters::Coalesce { underived: true });
    let mut applied = [0u64; 4];
    let mut duplicates = 0;
    for Asserted {
        kind,
        event,
        by,
        payload,
        arrived,
    } in events
    {
        let stored = || stored_event(*kind, by.as_deref(), *arrived, payload);
        if !ov.first_sighting(event.tenant_id(), event.event_id(), stored)? {
            duplicates += 1;
            continue;
        }
        apply::apply(&mut ov, event, by.as_deref(), settings)?;
        applied[*kind as usize] += 1;
    }
    apply::settle(&mut ov, settings)?;

    // Re-derive every dirty row once; publish only rows that changed. A catch-up's rows wait
    // for the epoch's end; the others for the next publication, unless it is now.
    let mut dirty = std::mem::take(&mut ov.dirty);
    if publish_now {
        dirty.extend(ov.take_held());
    }
    let now = derive_now(&mut ov, dirty, owing, publish_now);
    let mut changes: HashMap<ViewName, u64> = HashMap::new();
    let mut out = Publishing {
        codec,
        pending: Vec::new(),
        outgoing: Vec::new(),
        counters: publishing.unwrap_or(Counters::AtOnce),
    };
    derive_rounds(
        &mut ov,
        now,
        settings,
        publishing.is_some().then_some(&mut out),
        &mut changes,
    )?;
    let aggregates = ov.touched();
    ov.weigh_new();
    let epoch_bytes = ov.epoch_bytes();
    let over_budget = ov.over_budget();
    Ok(Shard {
        pending: out.pending,
        outgoing: out.outgoing,
        applied,
        duplicates,
        changes,
        aggregates,
        epoch_bytes,
        over_budget,
        ..Shard::default()
    })
}

/// Of `dirty`, the rows to derive now: a tenant's a catch-up owes wait for the epoch's end
/// (`Overlay::defer`); the others wait for the next publication (`Overlay::hold_row`) unless
/// it is now.
fn derive_now(
    ov: &mut Overlay<'_>,
    dirty: impl IntoIterator<Item = Dirty>,
    owing: Option<&crate::batch::HashSet<String>>,
    publish_now: bool,
) -> Vec<Dirty> {
    let dirty = dirty.into_iter();
    let mut now = Vec::with_capacity(dirty.size_hint().0);
    for d in dirty {
        if owing.is_some_and(|o| o.contains(&d.0)) {
            ov.defer(d);
        } else if publish_now {
            now.push(d);
        } else {
            ov.hold_row(d);
        }
    }
    now
}

/// Ends one worker's epoch: derives the rows left to its end (those waiting for a publication,
/// as view changes when `publishing` gives the codec; and the tenants a catch-up owes,
/// returned in `Shard::derived` with the rows they read). Its writes stay in the epoch until
/// [`drain_shard`] puts them into the epoch's one `WriteBatch`.
fn end_shard(
    store: &Store,
    cache: &mut Cache,
    epoch: &mut Epoch,
    settings: &Settings,
    publishing: Option<(&Codec, Counters)>,
    owing: Option<&crate::batch::HashSet<String>>,
) -> Result<Shard> {
    let mut ov = Overlay::new(store, cache, epoch);
    let mut changes: HashMap<ViewName, u64> = HashMap::new();
    // Waiting rows, and rows whose counts alone changed; of a tenant a catch-up came to owe
    // since, they wait with its owed ones.
    let mut held = ov.take_held();
    held.extend(ov.take_coalesced());
    let held = derive_now(&mut ov, held, owing, true);
    let mut out = publishing.map(|(codec, counters)| Publishing {
        codec,
        pending: Vec::new(),
        outgoing: Vec::new(),
        counters,
    });
    derive_rounds(&mut ov, held, settings, out.as_mut(), &mut changes)?;
    ocsf_records(&mut ov, owing, out.as_mut())?;
    let deferred: Vec<Dirty> = ov.take_deferred().into_iter().collect();
    let derived = derive_rounds(&mut ov, deferred, settings, None, &mut changes)?;
    let (pending, outgoing) = out.map_or_else(Default::default, |o| (o.pending, o.outgoing));
    Ok(Shard {
        pending,
        outgoing,
        changes,
        derived,
        ..Shard::default()
    })
}

/// Puts one worker's ended epoch into the epoch's `WriteBatch`, each key once, and empties it.
/// The workers drain one after the other into the one batch (their keys are disjoint: each
/// owns its tenants), so no worker's writes are held twice, once encoded apart and once in
/// the batch.
fn drain_shard(
    store: &Store,
    cache: &mut Cache,
    epoch: &mut Epoch,
    batch: &mut rocksdb::WriteBatch,
) -> Result<()> {
    Overlay::new(store, cache, epoch)
        .drain_writes(|(cf, key, value)| put(store, batch, cf, key, value))
}

/// The OCSF records of the findings whose view changes the epoch's batches published, each
/// once, from its row as the epoch last wrote it: a SIEM subscribes to a finding's latest
/// state, so a finding that keeps occurring is one record per epoch instead of one per batch
/// (in batches of 100 events, 62 % fewer OCSF records). Every row left to the epoch's end is
/// derived before this, so the row written is the row now; decoding it costs a fraction of
/// deriving it again. Their names go into the outbox record with the epoch's, stamped as their
/// last view change, so a crash after the epoch is written publishes them again (derived
/// then, `Engine::pending_outbox`). A finding of a tenant a catch-up came to owe since waits
/// with its owed rows (`derive_now`; published with its OCSF record when the catch-up ends).
fn ocsf_records(
    ov: &mut Overlay<'_>,
    owing: Option<&crate::batch::HashSet<String>>,
    publishing: Option<&mut Publishing<'_>>,
) -> Result<()> {
    let mut stamps = ov.take_ocsf_due();
    let Some(p) = publishing else {
        return Ok(());
    };
    let mut due = derive_now(ov, stamps.keys().cloned(), owing, true);
    due.sort_unstable();
    for dirty in due {
        let (changed_at, cause) = stamps.remove(&dirty).unwrap_or_default();
        let (tenant, view, key) = (dirty.0.as_str(), dirty.1, dirty.2.as_str());
        let bytes = ov.row_bytes(&Overlay::row_key(tenant, view, key))?;
        let row = bytes.map(|b| decode_row(view, &b)).transpose()?;
        let change = ViewChange::new(tenant, view, key, row, Timestamp(changed_at), cause);
        p.pending.push(Pending::of(&change));
        Outgoing::ocsf(change, &mut p.outgoing);
    }
    Ok(())
}

/// The worker a tenant's events go to: a fixed hash (FNV-1a), so a tenant stays with one
/// worker, and its cache, from batch to batch.
fn worker_of(tenant: &str, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let h = crate::store::fnv1a(crate::store::FNV_OFFSET, tenant.as_bytes());
    (h % workers as u64) as usize
}

/// `batch_limit` never cuts a batch below this many records.
const MIN_BATCH: usize = 500;
/// Aggregates per record assumed before the first batch says otherwise: about what a
/// decision touches when every entity it names is new (the worst case).
const INITIAL_TOUCH_RATE: f64 = 8.0;

/// A view's index in `columns::VIEWS` (every view has one).
fn view_index(view: ViewName) -> u8 {
    columns::VIEWS
        .iter()
        .position(|(v, _)| *v == view)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

fn kind(topics: &Topics, topic: &str) -> Option<Kind> {
    if topic == topics.decisions {
        Some(Kind::Decision)
    } else if topic == topics.approvals {
        Some(Kind::Approval)
    } else if topic == topics.registry {
        Some(Kind::Registry)
    } else if topic == topics.report_deliveries {
        Some(Kind::Delivery)
    } else {
        None
    }
}

fn decode(codec: &Codec, kind: Kind, bytes: &[u8]) -> Result<Event, aispm_schemas::DecodeError> {
    Ok(match kind {
        Kind::Decision => Event::Decision(codec.decode(bytes)?),
        Kind::Approval => Event::Approval(codec.decode(bytes)?),
        Kind::Registry => Event::Registry(codec.decode(bytes)?),
        Kind::Delivery => Event::Delivery(codec.decode(bytes)?),
    })
}

/// The formats of an event kept in `seen` by its id: version 1 (no arrival time), version 2.
const STORED_EVENT_V1: u8 = 1;
const STORED_EVENT_V2: u8 = 2;
/// A version 2 event without a record timestamp.
const NO_ARRIVAL: i64 = i64::MIN;

/// An applied event as `seen` keeps it, so that it can be fetched by id and replayed
/// (`as_of.rs`): the format version (2), its kind, the record's timestamp (i64 LE; `i64::MIN`
/// for none), the principal that asserted it (length-prefixed, `0xffff` for none) and the
/// record's value as it arrived (Avro single-object encoding).
fn stored_event(kind: Kind, by: Option<&str>, arrived: Option<i64>, payload: &[u8]) -> Vec<u8> {
    let by = by.map(str::as_bytes);
    let mut v = Vec::with_capacity(12 + by.map_or(0, <[u8]>::len) + payload.len());
    v.push(STORED_EVENT_V2);
    v.push(kind as u8);
    v.extend_from_slice(&arrived.unwrap_or(NO_ARRIVAL).to_le_bytes());
    match by {
        Some(b) => {
            let n = u16::try_from(b.len()).unwrap_or(u16::MAX - 1);
            v.extend_from_slice(&n.to_le_bytes());
            v.extend_from_slice(&b[..usize::from(n)]);
        }
        None => v.extend_from_slice(&u16::MAX.to_le_bytes()),
    }
    v.extend_from_slice(payload);
    v
}

/// An event kept in `seen`, not yet decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredParts<'a> {
    kind: Kind,
    /// Who asserted it.
    pub(crate) by: Option<&'a str>,
    /// Its record's timestamp: when it reached the broker (`None` for version 1 and for a
    /// record without one).
    pub(crate) arrived: Option<i64>,
    /// The record's value (Avro single-object encoding).
    pub(crate) payload: &'a [u8],
}

impl StoredParts<'_> {
    /// The input topic the event came from.
    pub(crate) fn topic<'t>(&self, topics: &'t Topics) -> &'t str {
        match self.kind {
            Kind::Decision => &topics.decisions,
            Kind::Approval => &topics.approvals,
            Kind::Registry => &topics.registry,
            Kind::Delivery => &topics.report_deliveries,
        }
    }

    pub(crate) fn decode(&self, codec: &Codec) -> Result<Event> {
        decode(codec, self.kind, self.payload)
            .map_err(|e| Error::Other(format!("a stored event that does not decode: {e}")))
    }
}

/// Splits an event kept in `seen` into its parts. `None` for an id seen before events were
/// kept (an empty value); an error for anything that is not one of the formats.
pub(crate) fn split_stored_event(bytes: &[u8]) -> Result<Option<StoredParts<'_>>> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Ok(None);
    };
    let bad = |why: &str| Error::Other(format!("a stored event {why}"));
    let (kind, rest) = rest.split_first().ok_or_else(|| bad("cut short"))?;
    let kind = match kind {
        0 => Kind::Decision,
        1 => Kind::Approval,
        2 => Kind::Registry,
        3 => Kind::Delivery,
        _ => return Err(bad("of an unknown kind")),
    };
    let (arrived, rest) = match version {
        STORED_EVENT_V1 => (None, rest),
        STORED_EVENT_V2 => {
            let (ts, rest) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| bad("cut short"))?;
            let ts = i64::from_le_bytes(*ts);
            ((ts != NO_ARRIVAL).then_some(ts), rest)
        }
        _ => return Err(bad("of an unknown format")),
    };
    let (n, rest) = rest
        .split_first_chunk::<2>()
        .ok_or_else(|| bad("cut short"))?;
    let n = u16::from_le_bytes(*n);
    let (by, payload) = if n == u16::MAX {
        (None, rest)
    } else {
        let n = usize::from(n);
        if rest.len() < n {
            return Err(bad("cut short"));
        }
        let by = std::str::from_utf8(&rest[..n]).map_err(|_| bad("with a bad principal"))?;
        (Some(by), &rest[n..])
    };
    Ok(Some(StoredParts {
        kind,
        by,
        arrived,
        payload,
    }))
}

/// An event kept in `seen`, decoded: the event and who asserted it. `None` for an id seen
/// before events were kept (an empty value).
pub(crate) fn read_stored_event(
    codec: &Codec,
    bytes: &[u8],
) -> Result<Option<(Event, Option<String>)>> {
    let Some(parts) = split_stored_event(bytes)? else {
        return Ok(None);
    };
    Ok(Some((parts.decode(codec)?, parts.by.map(str::to_owned))))
}

/// Rows are stored as their own type (the column family says which), not as the tagged union.
pub(crate) fn encode_row(row: &ViewRow) -> Vec<u8> {
    match row {
        ViewRow::Coverage(r) => encode(r),
        ViewRow::Control(r) => encode(r),
        ViewRow::Finding(r) => encode(r),
        ViewRow::Exception(r) => encode(r),
        ViewRow::Evidence(r) => encode(r),
        ViewRow::Validation(r) => encode(r),
        ViewRow::Delivery(r) => encode(r),
    }
}

/// Inverse of [`encode_row`] for a view's column family.
pub fn decode_row(view: ViewName, bytes: &[u8]) -> Result<ViewRow> {
    use crate::store::decode;
    Ok(match view {
        ViewName::Coverage => ViewRow::Coverage(decode(bytes)?),
        ViewName::Controls => ViewRow::Control(decode(bytes)?),
        ViewName::Findings => ViewRow::Finding(decode(bytes)?),
        ViewName::Exceptions => ViewRow::Exception(decode(bytes)?),
        ViewName::Evidence => ViewRow::Evidence(decode(bytes)?),
        ViewName::Validations => ViewRow::Validation(decode(bytes)?),
        ViewName::ReportDeliveries => ViewRow::Delivery(decode(bytes)?),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod stored_event_tests {
    use super::*;
    use aispm_schemas::{DecisionEvent, InputEvent};

    fn decision() -> DecisionEvent {
        let json = serde_json::json!({"type": "decision", "event_id": "e1", "tenant_id": "acme",
            "occurred_at": "2026-11-21T10:00:00Z", "source": "gw", "agent_id": "a", "actor": "alice",
            "environment": "production", "action_kind": "file", "target": "/etc/passwd",
            "mode": "enforced", "verdict": "deny", "risk": "high"});
        match InputEvent::from_json(json).unwrap() {
            InputEvent::Decision(d) => d,
            _ => unreachable!(),
        }
    }

    #[test]
    fn an_event_kept_by_id_reads_back_with_who_asserted_it() {
        let codec = Codec::new();
        let d = decision();
        let payload = codec.encode(&d).unwrap();
        for by in [None, Some("acme-gateway"), Some("")] {
            for arrived in [None, Some(1_800_000_000_000), Some(-1)] {
                let stored = stored_event(Kind::Decision, by, arrived, &payload);
                let (event, who) = read_stored_event(&codec, &stored).unwrap().unwrap();
                assert!(matches!(event, Event::Decision(ref e) if *e == d));
                assert_eq!(who.as_deref(), by);
                let parts = split_stored_event(&stored).unwrap().unwrap();
                assert_eq!(parts.arrived, arrived);
                assert_eq!(parts.topic(&Topics::default()), Topics::default().decisions);
            }
        }
        // Version 1 (before arrival times were kept) still reads, with no arrival.
        let mut v1 = vec![STORED_EVENT_V1, Kind::Decision as u8];
        v1.extend_from_slice(&u16::MAX.to_le_bytes());
        v1.extend_from_slice(&payload);
        let parts = split_stored_event(&v1).unwrap().unwrap();
        assert_eq!((parts.arrived, parts.by), (None, None));
        assert!(matches!(parts.decode(&codec).unwrap(), Event::Decision(ref e) if *e == d));
        // Ids applied before events were kept: no event, not an error.
        assert!(read_stored_event(&codec, &[]).unwrap().is_none());
        // Anything else that is not the format is an error, never a wrong event.
        let mut stored = stored_event(Kind::Decision, Some("x"), None, &payload);
        stored[0] = 9;
        assert!(read_stored_event(&codec, &stored).is_err());
        let stored = stored_event(Kind::Decision, Some("long principal"), Some(7), &payload);
        assert!(read_stored_event(&codec, &stored[..16]).is_err());
        let stored = stored_event(Kind::Approval, None, None, &payload);
        assert!(
            read_stored_event(&codec, &stored).is_err(),
            "a decision is no approval"
        );
    }
}
