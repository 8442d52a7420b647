//! Kafka helpers for tests: random topic prefixes, topic creation, producing and reading back.

use aispm_runtime::kafka::{KafkaConfig, TopicSpec};
use aispm_schemas::Topics;
use anyhow::Result;
use rand::Rng;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, Instant};

/// Sends `rec`, waiting while the producer's queue is full (a bench's bulk fill).
pub fn send_waiting<C, K, P>(
    producer: &rdkafka::producer::ThreadedProducer<C>,
    mut rec: rdkafka::producer::BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> Result<()>
where
    C: rdkafka::producer::ProducerContext + 'static,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// A topic prefix no other test uses, like rust-rdkafka's `rand_test_topic`.
pub fn random_prefix() -> String {
    let n: u64 = rand::thread_rng().r#gen();
    format!("t{n:016x}.")
}

/// Creates every contract topic under `prefix` (replication factor 1).
pub async fn create_contract_topics(
    brokers: &str,
    prefix: &str,
    partitions: i32,
) -> Result<Topics> {
    create_replicated_contract_topics(brokers, prefix, partitions, 1).await
}

/// Creates every contract topic under `prefix` with `replication_factor` replicas (3 on a
/// cluster, where the brokers' `min.insync.replicas` is 2).
pub async fn create_replicated_contract_topics(
    brokers: &str,
    prefix: &str,
    partitions: i32,
    replication_factor: i32,
) -> Result<Topics> {
    let topics = Topics::with_prefix(prefix);
    let mut kafka = KafkaConfig::local(brokers);
    kafka.partitions = partitions;
    kafka.replication_factor = replication_factor;
    let mut specs: Vec<TopicSpec> = topics
        .inputs()
        .iter()
        .map(|t| TopicSpec::events(t))
        .collect();
    specs.push(TopicSpec::events(&topics.dlq));
    for t in [&topics.views, &topics.blockers, &topics.readiness] {
        specs.push(TopicSpec::compacted(t));
    }
    kafka.ensure_topics(&specs, Duration::from_secs(30)).await?;
    Ok(topics)
}

/// An idempotent producer.
pub fn producer(brokers: &str) -> Result<FutureProducer> {
    Ok(KafkaConfig::local(brokers).producer_config().create()?)
}

/// Produces one record and waits for the acknowledgement.
pub async fn produce(
    p: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
) -> Result<(i32, i64)> {
    let d = p
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok((d.partition, d.offset))
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's timestamp (ms since the epoch), if it has one.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A copy of a consumed message.
    pub fn of<M: Message>(m: &M) -> Record {
        use rdkafka::message::Headers;
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: m.timestamp().to_millis(),
        }
    }
}

/// Produces generated records, all enqueued before any is awaited (so they leave in large
/// batches; `send` would enqueue each only when awaited), and waits for every acknowledgement.
pub async fn send_all(
    p: &FutureProducer,
    topics: &Topics,
    records: &[aispm_tools::records::Generated],
) {
    let sends: Vec<_> = records
        .iter()
        .map(|r| {
            p.send_result(
                FutureRecord::to(r.kind.topic(topics))
                    .key(r.tenant.as_bytes())
                    .payload(&r.bytes),
            )
            .map_err(|(e, _)| e)
            .expect("enqueued")
        })
        .collect();
    for s in sends {
        s.await
            .expect("delivery report")
            .map_err(|(e, _)| e)
            .expect("acknowledged");
    }
}

/// Reads `topic` from the beginning (no group commits) until `n` records arrived or `timeout`.
pub fn read_all(brokers: &str, topic: &str, n: usize, timeout: Duration) -> Result<Vec<Record>> {
    let group = format!("reader-{}", random_prefix());
    let consumer: BaseConsumer = KafkaConfig::local(brokers)
        .consumer_config(&group)
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            out.push(Record::of(&m));
        }
    }
    Ok(out)
}

/// Waits until `group` has committed, on every partition of `topics`, the end of the partition
/// (read from a fetch response: see `aispm_runtime::position`).
pub fn wait_caught_up(
    brokers: &str,
    group: &str,
    topics: &[&str],
    timeout: Duration,
) -> Result<()> {
    use rdkafka::TopicPartitionList;
    let kafka = KafkaConfig::local(brokers);
    let c: BaseConsumer = kafka.consumer_config(group).create()?;
    let deadline = Instant::now() + timeout;
    loop {
        let ends = aispm_runtime::kafka::partition_ends(&kafka, topics, Duration::from_secs(30))?;
        let mut tpl = TopicPartitionList::new();
        for (t, p) in ends.keys() {
            tpl.add_partition(t, *p);
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
        let behind: Vec<String> = ends
            .iter()
            .filter(|((t, p), end)| {
                let at = committed
                    .find_partition(t, *p)
                    .and_then(|e| e.offset().to_raw())
                    .unwrap_or(0);
                **end > 0 && at < **end
            })
            .map(|((t, p), end)| format!("{t}/{p}<{end}"))
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("group {group} not caught up: {behind:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Reads every record of `topics` from the beginning up to their ends now (taken from fetch
/// responses, see `aispm_runtime::position`), with the topic of each record. No group commits.
pub fn read_to_end(
    brokers: &str,
    topics: &[&str],
    timeout: Duration,
) -> Result<Vec<(String, Record)>> {
    use rdkafka::{Offset, TopicPartitionList};
    let kafka = KafkaConfig::local(brokers);
    let ends = aispm_runtime::kafka::partition_ends(&kafka, topics, timeout)?;
    let consumer: BaseConsumer = kafka
        .consumer_config(&format!("reader-{}", random_prefix()))
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut next: std::collections::BTreeMap<(String, i32), i64> = Default::default();
    for ((t, p), end) in &ends {
        if *end > 0 {
            tpl.add_partition_offset(t, *p, Offset::Beginning)?;
            next.insert((t.clone(), *p), 0);
        }
    }
    if next.is_empty() {
        return Ok(vec![]);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while next.iter().any(|(tp, at)| *at < ends[tp]) {
        if Instant::now() > deadline {
            let behind: Vec<String> = next
                .iter()
                .filter(|(tp, at)| **at < ends[*tp])
                .map(|((t, p), at)| format!("{t}/{p} at {at} of {}", ends[&(t.clone(), *p)]))
                .collect();
            anyhow::bail!("did not read to the end within {timeout:?}: {behind:?}");
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        let tp = (m.topic().to_owned(), m.partition());
        if let Some(at) = next.get_mut(&tp) {
            *at = (*at).max(m.offset() + 1);
        }
        out.push((tp.0, Record::of(&m)));
    }
    Ok(out)
}

/// The last value of every key of `topics` (compacted topics' state); `None` for a tombstone.
pub fn latest_by_key(
    brokers: &str,
    topics: &[&str],
    timeout: Duration,
) -> Result<std::collections::BTreeMap<String, Option<Vec<u8>>>> {
    let mut records = read_to_end(brokers, topics, timeout)?;
    records.sort_by_key(|(t, r)| (t.clone(), r.partition, r.offset));
    Ok(records
        .into_iter()
        .map(|(_, r)| {
            (
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                r.value,
            )
        })
        .collect())
}
