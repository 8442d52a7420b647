//! Kafka clients: librdkafka configuration with `--kafka-option` pass-through, topic creation at
//! start, the statistics callback that exports consumer lag and rebalances, and where each
//! partition ends.

use crate::health::Health;
use crate::metrics::Metrics;
use crate::{Error, Result};
use aispm_schemas::limits;
use prometheus::{IntCounterVec, IntGaugeVec};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the brokers are and how to talk to them.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    /// librdkafka properties applied last, so they override our defaults.
    pub options: Vec<(String, String)>,
    pub partitions: i32,
    pub replication_factor: i32,
}

/// A topic a service needs.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    /// Compacted (`cleanup.policy=compact`) for state topics; otherwise retained forever.
    pub compacted: bool,
}

impl TopicSpec {
    pub fn events(name: &str) -> Self {
        TopicSpec {
            name: name.to_owned(),
            compacted: false,
        }
    }

    pub fn compacted(name: &str) -> Self {
        TopicSpec {
            name: name.to_owned(),
            compacted: true,
        }
    }
}

impl KafkaConfig {
    pub fn local(brokers: &str) -> Self {
        KafkaConfig {
            brokers: brokers.to_owned(),
            options: vec![],
            partitions: 6,
            replication_factor: 1,
        }
    }

    /// The base client configuration: bootstrap servers, then the pass-through options.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "aispm");
        self.apply_options(&mut c);
        c
    }

    fn apply_options(&self, c: &mut ClientConfig) {
        for (k, v) in &self.options {
            c.set(k, v);
        }
    }

    /// An idempotent producer (`acks=all`): an acknowledged record is written exactly once.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "aispm")
            .set("enable.idempotence", "true")
            // The Java client's partitioner, so a tenant's records land on the same partition
            // whichever client produced them.
            .set("partitioner", "murmur2_random")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            // The size policy (`aispm_schemas::limits`): the same bound as the topics'.
            .set("message.max.bytes", limits::MAX_RECORD_BYTES.to_string());
        self.apply_options(&mut c);
        c
    }

    /// A consumer in `group` that never auto-commits and starts from the earliest offset.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "aispm")
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            // Also the rebalance timeout. Long enough that a loop starved of CPU is not evicted;
            // in-place restarts reclaim partitions through static membership instead.
            .set("max.poll.interval.ms", "60000")
            .set("heartbeat.interval.ms", "1000")
            .set("statistics.interval.ms", "5000")
            // What a consumer prefetches ahead of its loop: 16 MiB instead of librdkafka's
            // 64 MiB default, so a follower that falls behind for a moment does not grow its
            // resident memory by the difference (the projector, which reads in big batches,
            // raises it again). Options given with --kafka-option still win.
            .set("queued.max.messages.kbytes", "16384");
        self.apply_options(&mut c);
        c
    }

    /// Creates the topics that do not exist yet; existing ones are left as they are.
    /// Retries until `deadline` while the broker is unreachable.
    pub async fn ensure_topics(&self, topics: &[TopicSpec], deadline: Duration) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let started = std::time::Instant::now();
        let mut pending: Vec<TopicSpec> = topics.to_vec();
        let mut last_error = String::new();
        let max_record = limits::MAX_RECORD_BYTES.to_string();
        while !pending.is_empty() {
            let new: Vec<NewTopic<'_>> = pending
                .iter()
                .map(|t| {
                    let topic = NewTopic::new(
                        &t.name,
                        self.partitions,
                        TopicReplication::Fixed(self.replication_factor),
                    );
                    // A producer writing straight to the topic meets aispm's own bound.
                    let topic = topic.set("max.message.bytes", &max_record);
                    if t.compacted {
                        topic.set("cleanup.policy", "compact")
                    } else {
                        topic.set("retention.ms", "-1")
                    }
                })
                .collect();
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
            let mut retry = Vec::new();
            match admin.create_topics(&new, &opts).await {
                Ok(results) => {
                    for (spec, result) in pending.iter().zip(results) {
                        match result {
                            Ok(_) => {
                                tracing::info!(topic = %spec.name, compacted = spec.compacted, "Created topic.")
                            }
                            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                            Err((_, code)) => {
                                last_error = code.to_string();
                                retry.push(spec.clone());
                            }
                        }
                    }
                }
                Err(e) => {
                    last_error = e.to_string();
                    retry = pending.clone();
                }
            }
            pending = retry;
            if !pending.is_empty() {
                if started.elapsed() > deadline {
                    return Err(Error::CreateTopic {
                        topic: pending[0].name.clone(),
                        reason: last_error,
                    });
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        // The controller has created them; brokers learn of new topics a moment later, and a
        // metadata request answered in between says they do not exist. Wait until they show.
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        let config = self.client_config();
        let remaining = deadline
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(10));
        tokio::task::spawn_blocking(move || wait_visible(&config, &names, remaining))
            .await
            .map_err(|e| Error::Config(format!("waiting for topic metadata: {e}")))?
    }
}

/// Waits until the metadata shows every one of `topics` with its partitions, each with a leader.
fn wait_visible(config: &ClientConfig, topics: &[String], timeout: Duration) -> Result<()> {
    let consumer: BaseConsumer = config.create()?;
    let started = std::time::Instant::now();
    loop {
        let md = consumer.fetch_metadata(None, Duration::from_secs(5))?;
        let missing = topics.iter().find(|name| {
            !md.topics().iter().any(|t| {
                t.name() == name.as_str()
                    && t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            })
        });
        let Some(missing) = missing else {
            return Ok(());
        };
        if started.elapsed() > timeout {
            return Err(Error::CreateTopic {
                topic: missing.clone(),
                reason: "created, but not in the brokers' metadata".to_owned(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A topic-partition.
pub type Tp = (String, i32);

/// The end of every partition of `topics` now (the offset the next record written to it will
/// get: the high watermark, from ListOffsets). No group is joined and nothing is committed.
pub fn partition_ends(
    kafka: &KafkaConfig,
    topics: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<Tp, i64>> {
    let consumer: BaseConsumer = kafka.consumer_config("aispm-partition-ends").create()?;
    let mut ends = BTreeMap::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), timeout)?;
        let Some(t) = md.topics().iter().find(|t| t.name() == *topic) else {
            continue;
        };
        if let Some(e) = t.error() {
            return Err(Error::Config(format!(
                "metadata of topic {topic}: {:?}",
                RDKafkaErrorCode::from(e)
            )));
        }
        for p in t.partitions() {
            // A partition of a topic created a moment ago can answer NotLeaderForPartition
            // until its leader is known everywhere: retried until `timeout`.
            let started = std::time::Instant::now();
            let high = loop {
                match consumer.fetch_watermarks(topic, p.id(), timeout) {
                    Ok((_, high)) => break high,
                    Err(e) if is_transient(&e) && started.elapsed() < timeout => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            ends.insert(((*topic).to_owned(), p.id()), high);
        }
    }
    Ok(ends)
}

/// Consumer and producer health from librdkafka's statistics callback.
#[derive(Debug, Clone)]
pub struct KafkaMetrics {
    lag: IntGaugeVec,
    rebalances: IntCounterVec,
    brokers_up: IntGaugeVec,
    assigned: IntGaugeVec,
    /// Where the consumer reports the `broker` readiness condition, if anywhere.
    health: Option<Health>,
}

impl KafkaMetrics {
    pub fn new(metrics: &Metrics) -> Result<Self> {
        Ok(KafkaMetrics {
            lag: metrics.gauge(
                "consumer_lag_messages",
                "Consumer lag per topic-partition, from librdkafka statistics.",
                &["topic", "partition"],
            )?,
            rebalances: metrics.counter(
                "consumer_rebalances_total",
                "Consumer group rebalances by kind (assign, revoke, error).",
                &["kind"],
            )?,
            brokers_up: metrics.gauge(
                "kafka_brokers_up",
                "Brokers in state UP, per client (consumer, producer).",
                &["client"],
            )?,
            assigned: metrics.gauge(
                "consumer_assigned_partitions",
                "Partitions currently assigned to this instance.",
                &[],
            )?,
            health: None,
        })
    }

    /// Also sets the `broker` readiness condition from the consumer's statistics: ready while
    /// at least one broker of the cluster is connected.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = Some(health);
        self
    }

    /// Records one statistics report.
    pub fn observe(&self, stats: &Statistics) {
        let client = stats.client_type.as_str();
        // Cluster brokers only: librdkafka's internal broker (`source: internal`) is always UP,
        // and a bootstrap entry (node id -1) duplicates the broker it resolves to.
        let up = stats
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0 && b.source != "internal" && b.state == "UP")
            .count();
        self.brokers_up
            .with_label_values(&[client])
            .set(i64::try_from(up).unwrap_or(i64::MAX));
        if client != "consumer" {
            return;
        }
        if let Some(health) = &self.health {
            health.set("broker", up > 0, format!("{up} broker(s) connected"));
        }
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || !p.desired {
                    continue;
                }
                if let Some(lag) = partition_lag(p) {
                    self.lag
                        .with_label_values(&[topic, &partition.to_string()])
                        .set(lag);
                }
            }
        }
    }

    /// Records how many partitions this instance owns.
    pub fn set_assigned(&self, n: usize) {
        self.assigned
            .with_label_values::<&str>(&[])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a rebalance.
    pub fn rebalance(&self, rebalance: &Rebalance<'_>) {
        let kind = match rebalance {
            Rebalance::Assign(_) => "assign",
            Rebalance::Revoke(tpl) => {
                // Partitions we no longer own should not keep reporting stale lag.
                for e in tpl.elements() {
                    let _ = self
                        .lag
                        .remove_label_values(&[e.topic(), &e.partition().to_string()]);
                }
                "revoke"
            }
            Rebalance::Error(_) => "error",
        };
        self.rebalances.with_label_values(&[kind]).inc();
    }
}

/// A partition's lag: librdkafka's `consumer_lag` (end offset minus committed offset) when this
/// consumer committed; otherwise the end offset minus the position handed to the application,
/// for consumers that keep their offsets elsewhere and never commit (the reporter).
fn partition_lag(p: &rdkafka::statistics::Partition) -> Option<i64> {
    if p.consumer_lag >= 0 {
        Some(p.consumer_lag)
    } else if p.app_offset >= 0 && p.hi_offset >= p.app_offset {
        Some(p.hi_offset - p.app_offset)
    } else {
        None
    }
}

/// A client context that exports statistics and rebalances, for consumers and producers that
/// need nothing else from their context.
#[derive(Debug, Clone)]
pub struct MeteredContext {
    pub metrics: KafkaMetrics,
}

impl ClientContext for MeteredContext {
    fn stats(&self, statistics: Statistics) {
        self.metrics.observe(&statistics);
    }
}

impl ConsumerContext for MeteredContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.metrics.rebalance(rebalance);
    }
}

/// Kafka's murmur2 hash (as the Java client and librdkafka's `murmur2_random` partitioner use).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let len = data.len();
    let mut h = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition a key lands on with the Java client's default partitioner.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let n = u32::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from((murmur2(key) & 0x7fff_ffff) % n).unwrap_or(0)
}

/// Whether an error from librdkafka is worth retrying (the broker may come back).
pub fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::QueueFull
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NotEnoughReplicas
                | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::OperationTimedOut,
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Vectors from Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, want) in cases {
            assert_eq!(
                murmur2(input) as i32,
                want,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for t in ["acme", "globex", "initech", ""] {
            let p = partition_for(t.as_bytes(), 6);
            assert!((0..6).contains(&p));
            assert_eq!(p, partition_for(t.as_bytes(), 6));
        }
        assert_eq!(partition_for(b"acme", 1), 0);
    }
}
