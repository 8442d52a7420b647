//! The acknowledged send: records handed to librdkafka in order, then every acknowledgement
//! awaited, each record's outcome reported. Ingest (its accepted events), the gatekeeper
//! (blockers and verdicts), the reporter (delivery events and validations), the dead-letter
//! path and `emit` publish through [`send_acked`]; none of them counts a record as written
//! before the broker acknowledged it.
//!
//! The projector's view publisher is the one exception, by measurement: it publishes from its
//! apply thread with librdkafka's own producer and counts acknowledgements in one delivery
//! callback instead of completing a future per record (`projector/src/publish.rs`,
//! `docs/performance.md`). Its contract is the same: a batch is published when every record
//! is acknowledged, and otherwise sent again whole.

use aispm_schemas::topics::record_headers;
use futures::future::join_all;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, Instant};

/// One record to send.
#[derive(Debug)]
pub struct Outgoing<'a> {
    topic: &'a str,
    partition: Option<i32>,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Option<OwnedHeaders>,
}

impl<'a> Outgoing<'a> {
    /// A record for `topic`; a `None` value is a tombstone.
    pub fn new(topic: &'a str, key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> Self {
        Outgoing {
            topic,
            partition: None,
            key,
            value,
            headers: None,
        }
    }

    /// Sent to `partition` (otherwise librdkafka's partitioner picks it from the key).
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Stamped with the principal that asserted it (the `aispm.principal` header), after any
    /// headers already set.
    pub fn principal(mut self, principal: &str) -> Self {
        let h = self.headers.take().unwrap_or_default();
        self.headers = Some(h.insert(Header {
            key: record_headers::PRINCIPAL,
            value: Some(principal),
        }));
        self
    }

    /// Carries `headers` (replacing any set before).
    pub fn headers(mut self, headers: OwnedHeaders) -> Self {
        self.headers = Some(headers);
        self
    }

    fn record(self) -> FutureRecord<'a, [u8], [u8]> {
        let mut r: FutureRecord<'a, [u8], [u8]> = FutureRecord::to(self.topic);
        r.partition = self.partition;
        r.key = self.key;
        r.payload = self.value;
        r.headers = self.headers;
        r
    }
}

/// What to do when librdkafka's queue is full.
#[derive(Debug, Clone, Copy)]
pub enum WhenFull {
    /// Wait for room, up to this long per record (a background publisher).
    Wait(Duration),
    /// Refuse at once (a request handler that answers "busy" rather than queue behind it).
    Refuse,
}

/// The outcome of a [`send_acked`].
#[derive(Debug)]
pub struct Sent {
    /// The acknowledgement or delivery error of each record handed to librdkafka, in order.
    pub delivered: Vec<Result<(), KafkaError>>,
    /// Why the record after those was refused before it was sent; the records after it were
    /// not sent either.
    pub refused: Option<KafkaError>,
}

impl Sent {
    /// Every record acknowledged.
    pub fn all_acked(&self) -> bool {
        self.refused.is_none() && self.delivered.iter().all(Result::is_ok)
    }

    /// The outcome of each of the `n` records given, in order: a record that was never sent
    /// carries the refusal.
    pub fn outcomes(self, n: usize) -> Vec<Result<(), KafkaError>> {
        let mut out = self.delivered;
        if let Some(e) = self.refused {
            out.resize(n, Err(e));
        }
        out
    }

    /// `Ok` when every record was acknowledged, else the refusal or the first delivery error.
    pub fn into_result(self) -> Result<(), KafkaError> {
        if let Some(e) = self.refused {
            return Err(e);
        }
        self.delivered.into_iter().collect()
    }
}

/// Whether librdkafka refused a record because its queue is full.
pub fn is_queue_full(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
}

/// Hands `records` to `producer` in order and waits for every acknowledgement. A record
/// refused before it was sent (a full queue under [`WhenFull::Refuse`] or past the wait, a
/// record over `message.max.bytes`) stops the sending; what was sent before it is still
/// awaited, as it occupies the queue until the broker answers.
pub async fn send_acked<'a, C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    records: Vec<Outgoing<'a>>,
    when_full: WhenFull,
) -> Sent {
    let mut deliveries = Vec::new();
    let mut refused = None;
    for r in records {
        let mut record = r.record();
        let started = Instant::now();
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((e, back))
                    if is_queue_full(&e)
                        && matches!(when_full, WhenFull::Wait(t) if started.elapsed() < t) =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let delivered = join_all(deliveries)
        .await
        .into_iter()
        .map(|outcome| match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e),
            Err(_) => Err(KafkaError::Canceled),
        })
        .collect();
    Sent { delivered, refused }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> KafkaError {
        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
    }

    #[test]
    fn unsent_records_carry_the_refusal() {
        let s = Sent {
            delivered: vec![Ok(()), Err(KafkaError::Canceled)],
            refused: Some(full()),
        };
        assert!(!s.all_acked());
        let o = s.outcomes(4);
        assert_eq!(o.len(), 4);
        assert!(o[0].is_ok());
        assert_eq!(o[1], Err(KafkaError::Canceled));
        assert!(o[2..].iter().all(|r| r.as_ref().is_err_and(is_queue_full)));
    }

    #[test]
    fn the_result_is_the_refusal_first_then_the_first_delivery_error() {
        let s = Sent {
            delivered: vec![Err(KafkaError::Canceled)],
            refused: Some(full()),
        };
        assert!(s.into_result().is_err_and(|e| is_queue_full(&e)));
        let s = Sent {
            delivered: vec![Ok(()), Err(KafkaError::Canceled), Err(full())],
            refused: None,
        };
        assert_eq!(s.into_result(), Err(KafkaError::Canceled));
        let s = Sent {
            delivered: vec![Ok(()), Ok(())],
            refused: None,
        };
        assert!(s.all_acked());
        assert!(s.into_result().is_ok());
    }

    #[tokio::test]
    async fn a_record_over_the_producer_limit_is_refused_and_stops_the_sending() {
        // No broker is needed to be refused: librdkafka checks `message.max.bytes` itself.
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.max.bytes", "1000")
            .set("message.timeout.ms", "1000")
            .create()
            .unwrap_or_else(|e| panic!("{e}"));
        let big = vec![0u8; 4000];
        let sent = send_acked(
            &producer,
            vec![
                Outgoing::new("t", Some(b"k"), Some(&big)),
                Outgoing::new("t", Some(b"k"), Some(b"small")),
            ],
            WhenFull::Refuse,
        )
        .await;
        assert!(sent.delivered.is_empty(), "{sent:?}");
        assert_eq!(
            sent.refused
                .as_ref()
                .and_then(KafkaError::rdkafka_error_code),
            Some(RDKafkaErrorCode::MessageSizeTooLarge)
        );
    }
}
