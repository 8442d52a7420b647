//! Publishing view changes to the compacted views topic, after the batch that made them is
//! durable. Record key `{tenant}/{view}/{row key}`; partition chosen by tenant (murmur2), so a
//! tenant's changes stay in order on one partition. A crash between commit and acknowledgement
//! leaves them in the outbox, and they are published again at start: the same rows, the same
//! bytes, so the compacted topic absorbs the duplicates.
//!
//! The producer is librdkafka's own (`BaseProducer`), driven from the calling thread: a batch's
//! records are handed to librdkafka one after the other, and the delivery callback counts the
//! acknowledgements (and keeps the first error) instead of completing one future per record.
//! A batch is published when its count is back to zero with no error; otherwise the caller
//! publishes it again (same bytes), which the compacted topic absorbs.

use crate::error::{Error, Result};
use crate::project::{Outgoing, Sink};
use aispm_runtime::kafka::partition_for;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a batch may wait for its acknowledgements before it is published again.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// What the delivery callback counts.
#[derive(Debug, Default)]
struct Acks {
    /// Records handed to librdkafka and not yet acknowledged or failed.
    outstanding: AtomicU64,
    /// The first delivery error since the batch started.
    failed: Mutex<Option<KafkaError>>,
}

/// The producer's context: counts deliveries.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counting(Arc<Acks>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0
                .failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(|| e.clone());
        }
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
        crate::crash::reached(crate::crash::PUBLISHING);
    }
}

/// Sends view changes and waits until every one is acknowledged. One thread publishes at a
/// time (`&mut self`): the loop's, or the outbox drain before the loop starts.
pub(crate) struct Publisher {
    producer: BaseProducer<Counting>,
    acks: Arc<Acks>,
    topic: String,
    ocsf_topic: String,
    partitions: i32,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Publisher {
    /// A publisher with its own producer, made from `config` (the services' producer settings):
    /// view changes to `topic`, OCSF findings to `ocsf_topic` (same partition count).
    pub(crate) fn new(
        config: &ClientConfig,
        topic: String,
        ocsf_topic: String,
        partitions: i32,
    ) -> Result<Self> {
        let context = Counting::default();
        let acks = Arc::clone(&context.0);
        let producer: BaseProducer<Counting> = config.create_with_context(context)?;
        Ok(Publisher {
            producer,
            acks,
            topic,
            ocsf_topic,
            partitions,
        })
    }

    /// Publishes `changes`; `Ok` once the broker acknowledged every one.
    pub(crate) fn publish(&mut self, changes: &[Outgoing]) -> Result<()> {
        // A batch that failed before may still have records in flight: wait them out, so the
        // counts below are this batch's alone.
        self.wait_acks(Instant::now() + ACK_TIMEOUT)?;
        self.acks
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for c in changes {
            let topic = match c.sink {
                Sink::Views => &self.topic,
                Sink::Ocsf => &self.ocsf_topic,
            };
            let value = c.value()?;
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
                .partition(partition_for(c.tenant.as_bytes(), self.partitions))
                .key(c.key.as_bytes());
            record.payload = value.as_deref();
            loop {
                self.acks.outstanding.fetch_add(1, Ordering::AcqRel);
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // librdkafka's queue is full: serve deliveries, then hand it again.
                        self.acks.outstanding.fetch_sub(1, Ordering::AcqRel);
                        record = r;
                        self.producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => {
                        self.acks.outstanding.fetch_sub(1, Ordering::AcqRel);
                        return Err(Error::Kafka(e));
                    }
                }
            }
        }
        self.wait_acks(Instant::now() + ACK_TIMEOUT)?;
        match self
            .acks
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some(e) => Err(Error::Kafka(e)),
            None => Ok(()),
        }
    }

    /// Serves delivery callbacks until nothing is outstanding, or `deadline`.
    fn wait_acks(&self, deadline: Instant) -> Result<()> {
        while self.acks.outstanding.load(Ordering::Acquire) > 0 {
            if Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "{} view changes not acknowledged within {ACK_TIMEOUT:?}",
                    self.acks.outstanding.load(Ordering::Acquire)
                )));
            }
            self.producer.poll(Duration::from_millis(10));
        }
        Ok(())
    }
}
