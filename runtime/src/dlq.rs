//! Dead letters: a record a consumer cannot use goes to the dead-letter topic with its original
//! key and bytes, and headers naming where it came from and why. It is counted, and the
//! partition moves on: one bad record never blocks the stream and never disappears silently.

use crate::metrics::Metrics;
use crate::{Error, Result};
use aispm_schemas::topics::dlq_headers as h;
use prometheus::IntCounterVec;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// Where a record was when it was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The bytes are not a record of the expected schema.
    Decode,
    /// The record decoded but its content is invalid.
    Validate,
    /// Applying it failed for a reason that retrying cannot fix.
    Apply,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Validate => "validate",
            Stage::Apply => "apply",
        }
    }
}

/// One rejected record.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub stage: Stage,
    /// Short stable label (also the metric label), e.g. `unknown_schema`, `invalid_field`, or a
    /// semantic check's own (`weak_key`, `invalid_key`: `FieldError::code`).
    pub reason: &'static str,
    pub error: String,
}

/// Sends dead letters and counts them by source topic, stage and reason.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    service: &'static str,
    counter: IntCounterVec,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish()
    }
}

impl DeadLetters {
    pub fn new(producer: FutureProducer, topic: &str, metrics: &Metrics) -> Result<Self> {
        Ok(DeadLetters {
            producer,
            topic: topic.to_owned(),
            service: metrics.service(),
            counter: metrics.counter(
                "dead_letters_total",
                "Records sent to the dead-letter topic, by source topic, stage and reason.",
                &["topic", "stage", "reason"],
            )?,
        })
    }

    /// Sends one dead letter and waits for the broker's acknowledgement, so that the source
    /// offset may be committed after this returns.
    pub async fn send(&self, d: DeadLetter<'_>) -> Result<()> {
        tracing::warn!(
            topic = d.topic, partition = d.partition, offset = d.offset,
            stage = d.stage.as_str(), reason = d.reason, error = %d.error,
            "Dead-lettered a record."
        );
        let partition = d.partition.to_string();
        let offset = d.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: h::SOURCE_TOPIC,
                value: Some(d.topic),
            })
            .insert(Header {
                key: h::SOURCE_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: h::SOURCE_OFFSET,
                value: Some(&offset),
            })
            .insert(Header {
                key: h::STAGE,
                value: Some(d.stage.as_str()),
            })
            .insert(Header {
                key: h::REASON,
                value: Some(d.reason),
            })
            .insert(Header {
                key: h::ERROR,
                value: Some(&d.error),
            })
            .insert(Header {
                key: h::SERVICE,
                value: Some(self.service),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = d.key {
            record = record.key(k);
        }
        if let Some(p) = d.payload {
            record = record.payload(p);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| Error::Kafka(e))?;
        self.counter
            .with_label_values(&[d.topic, d.stage.as_str(), d.reason])
            .inc();
        Ok(())
    }
}
