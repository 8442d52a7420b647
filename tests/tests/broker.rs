//! The broker itself: what everything else stands on. An idempotent produce, a consumer group
//! with manual commits that resumes where it committed, and durability across a restart.

use aispm_runtime::kafka::{KafkaConfig, TopicSpec};
use aispm_tests::Broker;
use aispm_tests::kafka::{produce, producer, random_prefix};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::Duration;

async fn consume_n(consumer: &StreamConsumer, n: usize) -> Vec<(i32, i64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("records arrive within 30 s")
            .expect("no consumer error");
        let v = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
        out.push((m.partition(), m.offset(), v));
    }
    out
}

async fn round_trip(broker: &mut Broker) {
    let topic = format!("{}roundtrip", random_prefix());
    let mut kafka = KafkaConfig::local(&broker.bootstrap());
    kafka.partitions = 3;
    kafka
        .ensure_topics(&[TopicSpec::events(&topic)], Duration::from_secs(30))
        .await
        .unwrap();

    let p = producer(&broker.bootstrap()).unwrap();
    for i in 0..300 {
        produce(
            &p,
            &topic,
            &format!("tenant-{}", i % 7),
            format!("v{i}").as_bytes(),
        )
        .await
        .unwrap();
    }

    // A group reads half, commits, and goes away.
    let group = format!("g-{}", random_prefix());
    let c: StreamConsumer = kafka.consumer_config(&group).create().unwrap();
    c.subscribe(&[&topic]).unwrap();
    let first = consume_n(&c, 150).await;
    let mut tpl = TopicPartitionList::new();
    let mut next = std::collections::BTreeMap::new();
    for (p, o, _) in &first {
        let e = next.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    for (p, o) in &next {
        tpl.add_partition_offset(&topic, *p, Offset::Offset(*o))
            .unwrap();
    }
    c.commit(&tpl, CommitMode::Sync).unwrap();
    drop(c);

    // The group's next member resumes from the commits: together they read every record once.
    let c: StreamConsumer = kafka.consumer_config(&group).create().unwrap();
    c.subscribe(&[&topic]).unwrap();
    let seen_first: BTreeSet<(i32, i64)> = first.iter().map(|(p, o, _)| (*p, *o)).collect();
    let rest_n: usize = 300 - first.len();
    // Records before a partition's committed offset are never redelivered; some after it may
    // have been read by the first member without being committed, so they come again.
    let uncommitted_seen = first.iter().filter(|(p, o, _)| *o >= next[p]).count();
    let second = consume_n(&c, rest_n + uncommitted_seen).await;
    for (p, o, _) in &second {
        assert!(
            *o >= next.get(p).copied().unwrap_or(0),
            "redelivered committed record {p}/{o}"
        );
    }
    let all: BTreeSet<String> = first
        .iter()
        .chain(&second)
        .map(|(_, _, v)| v.clone())
        .collect();
    assert_eq!(all.len(), 300, "every record read");
    assert!(seen_first.len() == 150);
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_consume_and_commit() {
    let mut broker = Broker::start().unwrap();
    round_trip(&mut broker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn records_and_commits_survive_a_broker_kill_and_restart() {
    let mut broker = Broker::start().unwrap();
    let topic = format!("{}durable", random_prefix());
    let kafka = KafkaConfig::local(&broker.bootstrap());
    kafka
        .ensure_topics(&[TopicSpec::events(&topic)], Duration::from_secs(30))
        .await
        .unwrap();
    let p = producer(&broker.bootstrap()).unwrap();
    for i in 0..50 {
        produce(&p, &topic, "acme", format!("v{i}").as_bytes())
            .await
            .unwrap();
    }
    drop(p);
    let group = format!("g-{}", random_prefix());
    {
        let c: StreamConsumer = kafka.consumer_config(&group).create().unwrap();
        c.subscribe(&[&topic]).unwrap();
        let got = consume_n(&c, 20).await;
        let last = got.last().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, last.0, Offset::Offset(last.1 + 1))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    }

    broker.restart().unwrap();

    let c: StreamConsumer = kafka.consumer_config(&group).create().unwrap();
    c.subscribe(&[&topic]).unwrap();
    let rest = consume_n(&c, 30).await;
    assert_eq!(
        rest.first().map(|r| r.2.as_str()),
        Some("v20"),
        "resumed at the committed offset"
    );
    assert_eq!(rest.last().map(|r| r.2.as_str()), Some("v49"));
}
