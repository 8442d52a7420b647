//! Dead letters: a record a consumer cannot use goes to the dead-letter topic with its original
//! key and bytes, and headers naming where it came from and why. It is counted, and the
//! partition moves on: one bad record never blocks the stream and never disappears silently.
//! A record too large to carry is dead-lettered by reference (see [`DeadLetters::send`]).

use crate::metrics::Metrics;
use crate::publish::{Outgoing, WhenFull, send_acked};
use crate::{Error, Result};
use aispm_schemas::limits;
use aispm_schemas::topics::dlq_headers as h;
use prometheus::IntCounterVec;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use sha2::{Digest, Sha256};
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
    /// It could not be delivered to an outside destination (a webhook) within its retry window.
    Deliver,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Validate => "validate",
            Stage::Apply => "apply",
            Stage::Deliver => "deliver",
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

impl<'a> DeadLetter<'a> {
    /// Consumed record `m`, rejected at `stage` for `reason`.
    pub fn of(
        m: &'a impl Message,
        stage: Stage,
        reason: &'static str,
        error: String,
    ) -> DeadLetter<'a> {
        DeadLetter {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
            stage,
            reason,
            error,
        }
    }
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
    ///
    /// The record travels inline while its key and value fit the size policy
    /// (`aispm_schemas::limits`), and by reference otherwise: the source coordinates, sizes and
    /// SHA-256 of key and value. A broker that refuses an inline dead letter as too large (a
    /// dead-letter topic created with a smaller limit) gets it by reference instead, so a
    /// dead letter can always be written and never blocks the partition.
    pub async fn send(&self, d: DeadLetter<'_>) -> Result<()> {
        let inline_bytes = d.key.map_or(0, <[u8]>::len) + d.payload.map_or(0, <[u8]>::len);
        let inline = inline_bytes <= limits::MAX_DEAD_LETTER_INLINE_BYTES;
        tracing::warn!(
            topic = d.topic, partition = d.partition, offset = d.offset,
            stage = d.stage.as_str(), reason = d.reason, error = %d.error,
            bytes = inline_bytes, inline,
            "Dead-lettered a record."
        );
        let sent = if inline {
            match self.produce(&d, true).await {
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                    tracing::warn!(
                        topic = d.topic,
                        partition = d.partition,
                        offset = d.offset,
                        "The dead-letter topic refused the record inline; sending it by reference."
                    );
                    self.produce(&d, false).await
                }
                other => other,
            }
        } else {
            self.produce(&d, false).await
        };
        sent.map_err(Error::Kafka)?;
        self.counter
            .with_label_values(&[d.topic, d.stage.as_str(), d.reason])
            .inc();
        Ok(())
    }

    async fn produce(
        &self,
        d: &DeadLetter<'_>,
        inline: bool,
    ) -> std::result::Result<(), KafkaError> {
        let partition = d.partition.to_string();
        let offset = d.offset.to_string();
        let error = cut(&d.error, limits::MAX_DEAD_LETTER_HEADER_BYTES / 2);
        let mut headers = OwnedHeaders::new()
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
                value: Some(error),
            })
            .insert(Header {
                key: h::SERVICE,
                value: Some(self.service),
            })
            .insert(Header {
                key: h::RECORD,
                value: Some(if inline { "inline" } else { "by_reference" }),
            });
        let record = if inline {
            Outgoing::new(&self.topic, d.key, d.payload)
        } else {
            for (bytes_key, sha_key, part) in [
                (h::KEY_BYTES, h::KEY_SHA256, d.key),
                (h::VALUE_BYTES, h::VALUE_SHA256, d.payload),
            ] {
                if let Some(part) = part {
                    headers = headers
                        .insert(Header {
                            key: bytes_key,
                            value: Some(&part.len().to_string()),
                        })
                        .insert(Header {
                            key: sha_key,
                            value: Some(&hex::encode(Sha256::digest(part))),
                        });
                }
            }
            Outgoing::new(&self.topic, None, None)
        };
        send_acked(
            &self.producer,
            vec![record.headers(headers)],
            WhenFull::Wait(Duration::from_secs(30)),
        )
        .await
        .into_result()
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("abc", 8), "abc");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aé", 3), "aé");
    }
}
