//! Recovery of what is already published: the compacted blockers and readiness topics are read
//! from the beginning up to their high watermarks, so that after a restart (or a rebalance) the
//! engine diffs against what downstream consumers already have and publishes no spurious change.

use crate::{Error, Result};
use aispm_runtime::kafka::KafkaConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One record read back: key and value (`None` for a tombstone).
pub(crate) type KeyedRecord = (String, Option<Vec<u8>>);

/// A consumer context that does not report partition EOF (an expected event here) as an error.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QuietContext;

impl ClientContext for QuietContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&error, reason);
    }
}

impl ConsumerContext for QuietContext {}

/// Logs a librdkafka client error, except partition EOF, which the gatekeeper asks for.
pub(crate) fn log_client_error(error: &KafkaError, reason: &str) {
    if matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
    {
        return;
    }
    tracing::error!(%error, reason, "librdkafka reported an error.");
}

/// Number of partitions of `topic`.
pub(crate) fn partition_count(kafka: &KafkaConfig, topic: &str) -> Result<i32> {
    let consumer: BaseConsumer = kafka
        .consumer_config("aispm-gatekeeper-metadata")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| Error::MissingTopic(topic.to_owned()))?;
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(Error::MissingTopic(topic.to_owned()));
    }
    Ok(i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
}

/// Reads every partition of a compacted topic from the beginning to its end (blocking; run it
/// off the async runtime). Records come in offset order per partition.
///
/// "The end" is where librdkafka reports partition EOF, i.e. the high watermark of the fetch
/// responses, which also takes in records written while the replay runs.
pub(crate) fn read_compacted(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<KeyedRecord>> {
    let fail = |reason: String| Error::Recover {
        topic: topic.to_owned(),
        reason,
    };
    let partitions = partition_count(kafka, topic)?;
    let mut config = kafka.consumer_config("aispm-gatekeeper-recover");
    config.set("enable.partition.eof", "true");
    // No group membership: the partitions are assigned by hand and nothing is committed.
    let consumer: BaseConsumer<QuietContext> = config.create_with_context(QuietContext)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut pending: HashSet<i32> = (0..partitions).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(fail(format!(
                "{} partition(s) not read to their end within {timeout:?}",
                pending.len()
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let key = m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                out.push((key, m.payload().map(<[u8]>::to_vec)));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) if !aispm_runtime::kafka::is_transient(&e) => {
                return Err(fail(e.to_string()));
            }
            Some(Err(_)) => {}
            None => {}
        }
    }
    Ok(out)
}
