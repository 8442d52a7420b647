//! The projection engine, without Kafka: a batch of input records becomes one atomic RocksDB
//! write (aggregates, rows, the view changes to publish, and the next offsets) plus the dead
//! letters to send first. The consumer loop (`consumer.rs`) feeds it; tests and the apply-only
//! benchmark drive it directly.

use crate::apply::{self, Event, Settings};
use crate::batch::{Cache, Overlay};
use crate::derive;
use crate::error::Result;
use crate::store::{Store, columns, encode};
use aispm_runtime::dlq::Stage;
use aispm_schemas::{Codec, Timestamp, Topics, ViewChange, ViewName, ViewOp, ViewRow};
use std::collections::HashMap;
use std::sync::Arc;

/// One input record.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
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

/// A view change ready to publish: tenant (for the partition), record key, encoded value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outgoing {
    pub tenant: String,
    pub key: String,
    pub value: Vec<u8>,
}

/// What a batch did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub applied: HashMap<String, u64>,
    pub duplicates: u64,
    pub skipped: u64,
    pub rejected: u64,
    pub changes: HashMap<ViewName, u64>,
}

/// A prepared batch: commit it after the dead letters are acknowledged.
pub struct Prepared {
    pub batch: rocksdb::WriteBatch,
    pub rejected: Vec<Rejected>,
    /// Outbox sequence numbers `[first, end)` written by this batch (one record per batch).
    pub outbox: (u64, u64),
    pub outgoing: Vec<Outgoing>,
    pub stats: Stats,
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
    cache: Cache,
    settings: Settings,
    codec: Codec,
    topics: Topics,
    next_seq: u64,
    /// Next offset per topic-partition: the stored ones, advanced by prepared batches.
    pub next_offsets: HashMap<(String, i32), i64>,
}

#[derive(Clone, Copy)]
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
        let next_seq = store
            .scan_prefix(columns::OUTBOX, b"")?
            .last()
            .and_then(|(k, _)| <[u8; 8]>::try_from(&k[..]).ok())
            .map_or(0, |k| u64::from_be_bytes(k) + 1);
        Ok(Engine {
            store,
            cache: Cache::new(cache_entries),
            settings,
            codec: Codec::new(),
            topics,
            next_seq,
            next_offsets,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Applies a batch of records to a working set and prepares its atomic write.
    pub fn prepare(&mut self, inputs: &[Input<'_>]) -> Result<Prepared> {
        let mut stats = Stats::default();
        let mut rejected = Vec::new();
        // Next offset per partition of this batch (a handful: searched, not hashed, so no key
        // is allocated per record).
        let mut offsets: Vec<((String, i32), i64)> = Vec::new();
        let store = Arc::clone(&self.store);
        let (topics, codec, settings) = (&self.topics, &self.codec, &self.settings);
        let mut ov = Overlay::new(&store, &mut self.cache);
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
            let Some(kind) = kind(topics, input.topic) else {
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
            let event = match decode(codec, kind, payload) {
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
                rejected.push(reject(Stage::Validate, "invalid_field", msg));
                continue;
            }
            if !ov.first_sighting(event.tenant_id(), event.event_id())? {
                stats.duplicates += 1;
                continue;
            }
            apply::apply(&mut ov, &event, settings)?;
            match stats.applied.get_mut(input.topic) {
                Some(n) => *n += 1,
                None => {
                    stats.applied.insert(input.topic.to_owned(), 1);
                }
            }
        }
        stats.rejected = rejected.len() as u64;

        // Re-derive every dirty row once; publish only rows that changed.
        let mut outgoing = Vec::new();
        // In rounds, each in key order: the rows the batch marked, then the rows those read
        // (`follow`), until none is left.
        let mut done: crate::batch::HashSet<crate::batch::Dirty> = crate::batch::HashSet::default();
        let mut round: Vec<crate::batch::Dirty> = ov.dirty.drain().collect();
        while !round.is_empty() {
            round.sort_unstable();
            let mut next_round = Vec::new();
            for dirty in std::mem::take(&mut round) {
                if !done.insert(dirty.clone()) {
                    continue;
                }
                let (tenant, view, key) = dirty;
                let derived = derive::row(&mut ov, &tenant, view, &key, settings)?;
                for (v, k) in &derived.follow {
                    let follow = (tenant.clone(), *v, k.clone());
                    if !done.contains(&follow) {
                        next_round.push(follow);
                    }
                }
                let new_bytes = derived.row.as_ref().map(encode_row);
                if ov.row_is(&tenant, view, &key, new_bytes.as_deref())? {
                    continue;
                }
                ov.set_row(&tenant, view, &key, new_bytes);
                let change = ViewChange {
                    tenant_id: tenant.clone(),
                    view,
                    key: key.clone(),
                    op: if derived.row.is_some() {
                        ViewOp::Upsert
                    } else {
                        ViewOp::Delete
                    },
                    row: derived.row,
                    changed_at: Timestamp(derived.stamp.0),
                    cause_event_id: derived.stamp.1,
                };
                *stats.changes.entry(view).or_default() += 1;
                outgoing.push(Outgoing {
                    key: format!("{tenant}/{view}/{key}"),
                    tenant,
                    value: codec.encode(&change)?,
                });
            }
            round = next_round;
        }

        let mut batch = ov.into_write_batch()?;
        // The batch's view changes as one outbox record: one write and one delete per batch.
        let first = self.next_seq;
        if !outgoing.is_empty() {
            self.store.batch_put(
                &mut batch,
                columns::OUTBOX,
                &self.next_seq.to_be_bytes(),
                &encode(&outgoing),
            )?;
            self.next_seq += 1;
        }
        for ((topic, partition), next) in &offsets {
            self.store.batch_put(
                &mut batch,
                columns::OFFSETS,
                &columns::offset_key(topic, *partition),
                &next.to_be_bytes(),
            )?;
        }
        self.next_offsets.extend(offsets);
        Ok(Prepared {
            batch,
            rejected,
            outbox: (first, self.next_seq),
            outgoing,
            stats,
        })
    }

    /// Makes a prepared batch durable (one atomic write).
    pub fn commit(&self, prepared: &mut Prepared) -> Result<()> {
        let batch = std::mem::take(&mut prepared.batch);
        self.store.write(batch)
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

    /// View changes committed but not yet acknowledged (after a crash), with their range.
    pub fn pending_outbox(&self) -> Result<(Vec<Outgoing>, (u64, u64))> {
        let entries = self.store.scan_prefix(columns::OUTBOX, b"")?;
        let first = entries
            .first()
            .and_then(|(k, _)| <[u8; 8]>::try_from(&k[..]).ok())
            .map_or(self.next_seq, u64::from_be_bytes);
        let mut out = Vec::new();
        for (_, v) in &entries {
            out.extend(crate::store::decode::<Vec<Outgoing>>(v)?);
        }
        Ok((out, (first, self.next_seq)))
    }

    /// Drops cached values (after the store is wiped).
    pub fn reset(&mut self) -> Result<()> {
        self.cache.clear();
        self.next_offsets = self.store.offsets()?;
        self.next_seq = 0;
        Ok(())
    }
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

/// Rows are stored as their own type (the column family says which), not as the tagged union.
pub fn encode_row(row: &ViewRow) -> Vec<u8> {
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
