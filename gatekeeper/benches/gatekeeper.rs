//! Gatekeeper benchmark (a bench binary printing JSON, not a timed test):
//!
//! 1. Evaluations per second for 10 000 tenants with realistic state (the engine alone: rules,
//!    diff against the published state, timers): the first pass (everything is new) and
//!    steady-state sweeps (nothing changed).
//! 2. Latency from producing a view change that opens or resolves a blocker to the blocker
//!    record (upsert or tombstone) arriving at a consumer of the blockers topic, p50/p99, at
//!    rest and under a background load of view changes, against a real broker (Apache Kafka)
//!    on loopback with the gatekeeper running in-process.
//!
//! Run: `cargo bench -p aispm-gatekeeper`. It starts a single-node Apache Kafka (the setup
//! script's, `aispm_tests::Broker`) on a free loopback port, or uses `$AISPM_BENCH_BROKERS` if
//! set. `$AISPM_BENCH_RATE` sets the background load (default
//! 10 000 view changes per second).

use aispm_gatekeeper::Config;
use aispm_gatekeeper::{Engine, GatekeeperMetrics, Policy, Verdicts};
use aispm_runtime::kafka::partition_for;
use aispm_runtime::kafka::{KafkaConfig, TopicSpec};
use aispm_runtime::metrics::Metrics;
use aispm_schemas::views::*;
use aispm_schemas::{Codec, Risk, Timestamp, ViewChange};
use aispm_tests::rows::{action_path, control, delivery, evidence, finding, validation};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const H: i64 = 3_600_000;
const PARTITIONS: i32 = 3;

/// A tenant's rows: ready for production, plus findings and controls that keep rules busy
/// (and, for every tenth tenant, a shadowed high-risk control: one blocker).
fn tenant_rows(i: usize, now: Timestamp) -> Vec<(String, ViewRow)> {
    let mut rows = vec![];
    for p in ["file", "command", "git", "mcp", "model", "network"] {
        rows.push((format!("action_path/{p}"), action_path(p, 10, 2)));
    }
    rows.push((
        "connector_live/-".into(),
        validation("connector_live", None, "pass"),
    ));
    rows.push((
        "tenant_isolation/-".into(),
        validation("tenant_isolation", None, "pass"),
    ));
    rows.push(("rep-1".into(), delivery()));
    for c in 0..10 {
        let state = if c == 0 && matches!(i % 10, 0) {
            ControlState::Shadowed
        } else {
            ControlState::Enforced
        };
        rows.push((format!("ctl-{c}"), control(&format!("ctl-{c}"), state)));
    }
    for f in 0..20 {
        let sev = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical][f % 4];
        rows.push((
            format!("f-{f}"),
            ViewRow::Finding(finding(
                &format!("f-{f}"),
                sev,
                Some("o"),
                Some(Timestamp(now.0 + (f as i64 + 1) * H)),
                FindingStatus::Open,
            )),
        ));
    }
    for e in 0..50 {
        rows.push((
            format!("ev-{e}"),
            evidence(&format!("ev-{e}"), Timestamp(now.0 - e * 60_000)),
        ));
    }
    rows
}

fn evaluations(report: &mut serde_json::Map<String, Value>) {
    const TENANTS: usize = 10_000;
    let m = Metrics::new("gatekeeper").expect("metrics");
    let mut engine = Engine::new(
        Policy::default(),
        GatekeeperMetrics::new(&m).expect("metrics"),
        Verdicts::default(),
    );
    let now = Timestamp::now();
    let started = Instant::now();
    let mut rows = 0;
    for i in 0..TENANTS {
        let t = format!("tenant-{i:05}");
        for (key, row) in tenant_rows(i, now) {
            engine
                .apply(&t, 0, row.view(), &key, Some(row), None)
                .expect("row fits its view");
            rows += 1;
        }
    }
    let fold = started.elapsed();

    let started = Instant::now();
    let first = engine.evaluate_due(now);
    let first_pass = started.elapsed();

    let mut steady = vec![];
    for k in 1..=5 {
        engine.sweep();
        let started = Instant::now();
        let changes = engine.evaluate_due(Timestamp(now.0 + k * 1000));
        steady.push(started.elapsed().as_secs_f64());
        assert!(
            changes.is_empty(),
            "a sweep of unchanged tenants publishes nothing"
        );
    }
    steady.sort_by(f64::total_cmp);
    let median = steady[steady.len() / 2];
    report.insert(
        "evaluations".into(),
        json!({
            "tenants": TENANTS,
            "view_rows": rows,
            "fold_rows_per_second": (rows as f64 / fold.as_secs_f64()).round(),
            "first_pass_seconds": first_pass.as_secs_f64(),
            "first_pass_records": first.len(),
            "first_pass_tenants_per_second": (TENANTS as f64 / first_pass.as_secs_f64()).round(),
            "steady_sweep_seconds_median": median,
            "steady_tenants_per_second": (TENANTS as f64 / median).round(),
            "steady_tenant_stage_evaluations_per_second": (3.0 * TENANTS as f64 / median).round(),
        }),
    );
}

fn encode(tenant: &str, key: &str, row: ViewRow) -> (String, Vec<u8>) {
    let change = ViewChange {
        tenant_id: tenant.into(),
        view: row.view(),
        key: key.into(),
        op: ViewOp::Upsert,
        row: Some(row.clone()),
        changed_at: Timestamp::now(),
        cause_event_id: "bench".into(),
    };
    let record_key = format!("{tenant}/{}/{key}", row.view());
    (record_key, Codec::new().encode(&change).expect("encodes"))
}

async fn send(p: &FutureProducer, topic: &str, tenant: &str, key: &str, row: ViewRow) {
    let (k, v) = encode(tenant, key, row);
    p.send(
        FutureRecord::to(topic)
            .key(&k)
            .partition(partition_for(tenant.as_bytes(), PARTITIONS))
            .payload(&v),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .expect("produced");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Toggles the probe tenant's `file` path between synthetic-only (opens a blocker) and real
/// (resolves it) and times each change until its record reaches the blockers consumer.
async fn probe(
    producer: &FutureProducer,
    views: &str,
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<(String, bool, Instant)>,
    samples: usize,
    decisions: &mut i64,
) -> Vec<f64> {
    let key = "probe/production/runtime_workflow_synthetic_only/file";
    let mut out = vec![];
    for i in 0..samples {
        let open = i % 2 == 0;
        *decisions += 1;
        let synthetic = if open { *decisions } else { *decisions - 1 };
        let started = Instant::now();
        send(
            producer,
            views,
            "probe",
            "action_path/file",
            action_path("file", *decisions, synthetic),
        )
        .await;
        loop {
            let (k, present, at) = tokio::time::timeout(Duration::from_secs(30), seen.recv())
                .await
                .expect("the blocker record arrives")
                .expect("watcher alive");
            if k == key && present == open {
                out.push(at.duration_since(started).as_secs_f64() * 1000.0);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.sort_by(f64::total_cmp);
    out
}

async fn latency(report: &mut serde_json::Map<String, Value>) -> anyhow::Result<()> {
    let (_broker, brokers) = match std::env::var("AISPM_BENCH_BROKERS") {
        Ok(b) => (None, b),
        Err(_) => {
            let broker = aispm_tests::Broker::start()?;
            let b = broker.bootstrap();
            (Some(broker), b)
        }
    };
    let prefix = format!("bench{}.", std::process::id());
    let topics = aispm_schemas::Topics::with_prefix(&prefix);
    let mut kafka = KafkaConfig::local(&brokers);
    kafka.partitions = PARTITIONS;
    kafka
        .ensure_topics(
            &[
                TopicSpec::compacted(&topics.views),
                TopicSpec::compacted(&topics.blockers),
                TopicSpec::compacted(&topics.readiness),
                TopicSpec::events(&topics.dlq),
            ],
            Duration::from_secs(60),
        )
        .await?;
    let producer: FutureProducer = kafka.producer_config().set("linger.ms", "1").create()?;

    // The probe tenant and 1 000 background tenants, ready for production.
    let now = Timestamp::now();
    let mut seeds = vec![];
    for (key, row) in tenant_rows(1, now) {
        seeds.push(("probe".to_owned(), key, row));
    }
    for i in 0..1000 {
        for (key, row) in tenant_rows(1, now).into_iter().take(12) {
            seeds.push((format!("bg-{i:04}"), key, row));
        }
        seeds.push((
            format!("bg-{i:04}"),
            "ev-seed".into(),
            evidence("ev-seed", now),
        ));
    }
    let sends = seeds
        .iter()
        .map(|(t, k, r)| send(&producer, &topics.views, t, k, r.clone()));
    futures::future::join_all(sends).await;

    // The watcher: a plain consumer of the blockers topic.
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let watcher: StreamConsumer = {
        let mut c = kafka.consumer_config(&format!("watch-{prefix}"));
        c.set("fetch.wait.max.ms", "5");
        c.create()?
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&topics.blockers, p, Offset::Beginning)?;
    }
    watcher.assign(&tpl)?;
    tokio::spawn(async move {
        loop {
            if let Ok(m) = watcher.recv().await {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                if tx
                    .send((key, m.payload().is_some(), Instant::now()))
                    .is_err()
                {
                    break;
                }
            }
        }
    });

    let mut config = Config::local(&brokers);
    config.common.topic_prefix = prefix.clone();
    config.common.partitions = PARTITIONS;
    config.group_id = format!("gk-{prefix}");
    let stop = CancellationToken::new();
    let gk = tokio::spawn(aispm_gatekeeper::run(config, stop.clone()));
    // Wait until the gatekeeper replayed the seeds and judged the probe (its control_missing
    // blocker from the shadowed control of tenant 1's rows is not there: tenant_rows(1) is clean).
    let mut decisions = 10;
    let warm = probe(&producer, &topics.views, &mut seen, 4, &mut decisions).await;
    // Forget whatever the warm-up left in flight, so every sample waits for its own record.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while seen.try_recv().is_ok() {}
    let at_rest = probe(&producer, &topics.views, &mut seen, 200, &mut decisions).await;

    // Background load: evidence upserts for the background tenants at the target rate.
    let target_rate: u64 = std::env::var("AISPM_BENCH_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10_000);
    let acked = Arc::new(AtomicU64::new(0));
    let load_stop = CancellationToken::new();
    let load = {
        let (producer, views, acked, load_stop) = (
            producer.clone(),
            topics.views.clone(),
            acked.clone(),
            load_stop.clone(),
        );
        tokio::spawn(async move {
            let tick = Duration::from_millis(10);
            let per_tick = (target_rate / 100).max(1);
            let mut n: u64 = 0;
            let mut next = tokio::time::Instant::now();
            while !load_stop.is_cancelled() {
                for _ in 0..per_tick {
                    n += 1;
                    let tenant = format!("bg-{:04}", n % 1000);
                    let id = format!("ev-{n}");
                    let (k, v) = encode(&tenant, &id, evidence(&id, Timestamp::now()));
                    let record = FutureRecord::to(&views)
                        .key(&k)
                        .partition(partition_for(tenant.as_bytes(), PARTITIONS))
                        .payload(&v);
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            let acked = acked.clone();
                            tokio::spawn(async move {
                                if matches!(delivery.await, Ok(Ok(_))) {
                                    acked.fetch_add(1, Ordering::Relaxed);
                                }
                            });
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                next += tick;
                tokio::time::sleep_until(next).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let load_started = Instant::now();
    let acked_before = acked.load(Ordering::Relaxed);
    let under_load = probe(&producer, &topics.views, &mut seen, 300, &mut decisions).await;
    let achieved = (acked.load(Ordering::Relaxed) - acked_before) as f64
        / load_started.elapsed().as_secs_f64();
    load_stop.cancel();
    let _ = load.await;

    let summary = |v: &[f64]| json!({"samples": v.len(), "p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99), "max_ms": v[v.len() - 1]});
    report.insert(
        "latency_view_change_to_blocker_record".into(),
        json!({
            "broker": "Apache Kafka (one KRaft node) on 127.0.0.1",
            "warm_up_ms": warm,
            "at_rest": summary(&at_rest),
            "under_load": summary(&under_load),
            "background_target_view_changes_per_second": target_rate,
            "background_acked_view_changes_per_second": achieved.round(),
        }),
    );
    stop.cancel();
    let _ = gk.await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut report = serde_json::Map::new();
    evaluations(&mut report);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(latency(&mut report))?;
    println!("{}", serde_json::to_string_pretty(&Value::Object(report))?);
    Ok(())
}
