//! Publishing view changes to the compacted views topic, after the batch that made them is
//! durable. Record key `{tenant}/{view}/{row key}`; partition chosen by tenant (murmur2), so a
//! tenant's changes stay in order on one partition. A crash between commit and acknowledgement
//! leaves them in the outbox, and they are published again at start: the same rows, the same
//! bytes, so the compacted topic absorbs the duplicates.

use crate::error::{Error, Result};
use crate::project::Outgoing;
use aispm_runtime::kafka::partition_for;
use futures::future::try_join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// Sends view changes and waits for every acknowledgement.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
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
    pub fn new(producer: FutureProducer, topic: String, partitions: i32) -> Self {
        Publisher {
            producer,
            topic,
            partitions,
        }
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    pub async fn publish(&self, changes: &[Outgoing]) -> Result<()> {
        let sends = changes.iter().map(|c| {
            let record = FutureRecord::to(&self.topic)
                .partition(partition_for(c.tenant.as_bytes(), self.partitions))
                .key(c.key.as_bytes())
                .payload(&c.value);
            self.producer.send(record, Duration::from_secs(60))
        });
        try_join_all(sends)
            .await
            .map_err(|(e, _)| Error::Kafka(e))?;
        Ok(())
    }
}
