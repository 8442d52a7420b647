//! Publishing: blockers to the compacted `aispm.blockers.v1` (key `{tenant}/{stage}/{blocker_id}`,
//! a null value when a blocker resolved) and verdicts to the compacted `aispm.readiness.v1`
//! (key `{tenant}/{stage}`). Every record of a tenant goes to the tenant's partition (the Java
//! client's murmur2 of the tenant id), so one tenant's records stay in order on one partition.
//!
//! A batch is sent as a whole and every acknowledgement awaited before the next batch: the
//! in-memory "published" state the engine diffs against is what the topics hold.

use crate::metrics::GatekeeperMetrics;
use crate::readiness::{Change, Record};
use crate::{Error, Result};
use aispm_runtime::kafka::partition_for;
use aispm_runtime::publish::{Outgoing, WhenFull, send_acked};
use aispm_schemas::Codec;
use rdkafka::producer::FutureProducer;
use std::time::Duration;

/// Sends changes and waits for their acknowledgements.
#[derive(Clone)]
pub(crate) struct Publisher {
    producer: FutureProducer,
    codec: Codec,
    blockers_topic: String,
    readiness_topic: String,
    blockers_partitions: i32,
    readiness_partitions: i32,
    metrics: GatekeeperMetrics,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("blockers_topic", &self.blockers_topic)
            .field("readiness_topic", &self.readiness_topic)
            .finish()
    }
}

/// A change ready to send: topic, partition, key and encoded value.
struct Encoded<'a> {
    topic: &'a str,
    label: &'static str,
    partition: i32,
    key: &'a str,
    value: Option<Vec<u8>>,
}

impl Publisher {
    pub(crate) fn new(
        producer: FutureProducer,
        codec: Codec,
        (blockers_topic, blockers_partitions): (String, i32),
        (readiness_topic, readiness_partitions): (String, i32),
        metrics: GatekeeperMetrics,
    ) -> Self {
        Publisher {
            producer,
            codec,
            blockers_topic,
            readiness_topic,
            blockers_partitions,
            readiness_partitions,
            metrics,
        }
    }

    fn encode<'a>(&'a self, c: &'a Change) -> Result<Encoded<'a>> {
        Ok(match &c.record {
            Record::Blocker { key, value } => Encoded {
                topic: &self.blockers_topic,
                label: "blockers",
                partition: partition_for(c.tenant.as_bytes(), self.blockers_partitions),
                key,
                value: value
                    .as_ref()
                    .map(|b| self.codec.encode(b))
                    .transpose()
                    .map_err(|e| Error::Encode {
                        what: "blocker",
                        reason: e.to_string(),
                    })?,
            },
            Record::Readiness { key, value } => Encoded {
                topic: &self.readiness_topic,
                label: "readiness",
                partition: partition_for(c.tenant.as_bytes(), self.readiness_partitions),
                key,
                value: value
                    .as_ref()
                    .map(|r| self.codec.encode(r))
                    .transpose()
                    .map_err(|e| Error::Encode {
                        what: "readiness",
                        reason: e.to_string(),
                    })?,
            },
        })
    }

    /// Sends every change and waits for all acknowledgements. Returns the indices of the changes
    /// whose delivery failed for a transient reason (the caller undoes them so they are sent
    /// again); a non-transient failure is fatal.
    pub(crate) async fn publish(&self, changes: &[Change]) -> Result<Vec<usize>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = changes
            .iter()
            .map(|c| self.encode(c))
            .collect::<Result<Vec<_>>>()?;
        let records = encoded
            .iter()
            .map(|e| {
                Outgoing::new(e.topic, Some(e.key.as_bytes()), e.value.as_deref())
                    .partition(e.partition)
            })
            .collect();
        let results = send_acked(
            &self.producer,
            records,
            WhenFull::Wait(Duration::from_secs(30)),
        )
        .await
        .outcomes(encoded.len());
        let acked_ms = aispm_schemas::Timestamp::now().millis();
        let mut failed = Vec::new();
        for (i, (result, (e, c))) in results
            .into_iter()
            .zip(encoded.iter().zip(changes))
            .enumerate()
        {
            match result {
                Ok(_) => {
                    let op = if e.value.is_some() {
                        "upsert"
                    } else {
                        "tombstone"
                    };
                    self.metrics
                        .published
                        .with_label_values(&[e.label, op])
                        .inc();
                    if let Some(since) = c.since {
                        self.metrics
                            .change_to_publish_seconds
                            .with_label_values(&[e.label])
                            .observe((acked_ms - since).max(0) as f64 / 1000.0);
                    }
                }
                Err(err) => {
                    self.metrics
                        .publish_errors
                        .with_label_values(&[e.label])
                        .inc();
                    if !aispm_runtime::kafka::is_transient(&err) {
                        return Err(Error::Kafka(err));
                    }
                    tracing::warn!(topic = e.topic, key = e.key, error = %err, "Delivery failed; the record will be sent again.");
                    failed.push(i);
                }
            }
        }
        Ok(failed)
    }
}
