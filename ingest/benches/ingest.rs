//! Ingest benchmark (a bench binary, not a timed test): the real `aispm-ingest` binary against
//! a real broker (Apache Kafka, one node), driven over HTTP by concurrent clients.
//!
//! Prints, then writes as JSON to `target/ingest-bench.json`:
//! - sustained accepted events/s over HTTP with batches of 100 and of 1000, with p50/p99/max
//!   request latency;
//! - overload: many more concurrent clients than the budgets allow: how many 429s, and the
//!   service's resident memory before and after (bounded, not growing);
//! - the raw producer rate straight to Kafka (pre-encoded records, same producer settings), in
//!   the same run, for comparison.
//!
//! Run: `source ~/.cache/aispm/env.sh && cargo bench -p aispm-ingest --bench ingest`.
//! Tunables (environment): `AISPM_BENCH_SECONDS` (per phase, default 15),
//! `AISPM_BENCH_CLIENTS_100` (default 8), `AISPM_BENCH_CLIENTS_1000` (default 4),
//! `AISPM_BENCH_OVERLOAD_CLIENTS` (default 128), `AISPM_BENCH_RAW_EVENTS` (default 300000).

use aispm_ingest::publish;
use aispm_runtime::kafka::{KafkaConfig, TopicSpec};
use aispm_schemas::{Codec, InputEvent, InputKind, Topics};
use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::kafka::random_prefix;
use aispm_tests::process::Service;
use aispm_tools::load::LoadGen;
use anyhow::{Context, Result, bail};
use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pre-serialized request bodies, so the client spends its time sending, not encoding JSON.
fn bodies(batch: usize, count: usize, tenants: usize) -> Vec<Arc<Vec<u8>>> {
    let mut g = LoadGen::new(tenants, 42, &format!("bench{batch}"));
    (0..count)
        .map(|_| {
            let items: Vec<serde_json::Value> =
                g.batch(batch).iter().map(InputEvent::to_json).collect();
            Arc::new(serde_json::to_vec(&items).expect("JSON"))
        })
        .collect()
}

#[derive(Debug, Default)]
struct PhaseResult {
    accepted: u64,
    requests: u64,
    throttled: u64,
    errors: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl PhaseResult {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let mut l = self.latencies.clone();
        l.sort();
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i].as_secs_f64() * 1000.0
    }

    fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "accepted_events": self.accepted,
            "requests": self.requests,
            "throttled_429": self.throttled,
            "errors": self.errors,
            "seconds": self.elapsed.as_secs_f64(),
            "events_per_second": self.rate(),
            "latency_ms": {"p50": self.percentile(0.50), "p99": self.percentile(0.99), "max": self.percentile(1.0)},
        })
    }
}

/// `clients` concurrent clients POST the bodies round-robin for `seconds`.
async fn drive(
    url: &str,
    bodies: &[Arc<Vec<u8>>],
    clients: usize,
    seconds: u64,
) -> Result<PhaseResult> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(60))
        .build()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let url = url.to_owned();
        let bodies: Vec<Arc<Vec<u8>>> = bodies.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut r = PhaseResult::default();
            let mut i = c;
            while Instant::now() < deadline {
                let body = bodies[i % bodies.len()].as_ref().clone();
                i += clients;
                let sent = Instant::now();
                let resp = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                r.requests += 1;
                match resp {
                    Ok(resp) if resp.status() == 202 => {
                        let v: serde_json::Value = resp.json().await.unwrap_or_default();
                        r.latencies.push(sent.elapsed());
                        r.accepted += v["accepted"].as_u64().unwrap_or(0);
                    }
                    Ok(resp) if resp.status() == 429 => {
                        r.throttled += 1;
                        let _ = resp.bytes().await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(resp) => {
                        r.errors += 1;
                        eprintln!(
                            "unexpected {}: {}",
                            resp.status(),
                            resp.text().await.unwrap_or_default()
                        );
                    }
                    Err(e) => {
                        r.errors += 1;
                        eprintln!("request failed: {e}");
                    }
                }
            }
            r
        }));
    }
    let mut total = PhaseResult::default();
    for t in tasks {
        let r = t.await?;
        total.accepted += r.accepted;
        total.requests += r.requests;
        total.throttled += r.throttled;
        total.errors += r.errors;
        total.latencies.extend(r.latencies);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// `process_resident_memory_bytes` of the service, from its `/metrics`.
async fn rss_mib(base: &str) -> Result<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("process_resident_memory_bytes "))
        .context("no process_resident_memory_bytes")?;
    let bytes: f64 = line.split_whitespace().nth(1).unwrap_or("0").parse()?;
    Ok(bytes / (1024.0 * 1024.0))
}

/// Pre-encodes `n` events and produces them with the same producer settings as the service.
async fn raw_producer(brokers: &str, n: usize) -> Result<(f64, f64)> {
    let prefix = random_prefix();
    let topics = Topics::with_prefix(&prefix);
    let kafka = KafkaConfig::local(brokers);
    kafka
        .ensure_topics(
            &InputKind::ALL.map(|k| TopicSpec::events(k.topic(&topics))),
            Duration::from_secs(30),
        )
        .await?;
    let mut config = kafka.producer_config();
    config.set("queue.buffering.max.messages", "1000000");
    let producer: FutureProducer = config.create()?;
    let codec = Codec::new();
    let events = LoadGen::new(50, 7, "raw").batch(n);
    let encode_started = Instant::now();
    let encoded = publish::encode(&codec, &events)?;
    let encode_rate = n as f64 / encode_started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(n);
    for r in &encoded {
        let record = FutureRecord::to(r.kind.topic(&topics))
            .key(r.tenant_id.as_bytes())
            .payload(&r.payload[..]);
        match producer.send_result(record) {
            Ok(d) => deliveries.push(d),
            Err((e, _)) => bail!("enqueue failed: {e}"),
        }
    }
    for d in join_all(deliveries).await {
        match d {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("delivery failed: {e}"),
            Err(_) => bail!("the producer was closed"),
        }
    }
    Ok((n as f64 / started.elapsed().as_secs_f64(), encode_rate))
}

#[tokio::main]
async fn main() -> Result<()> {
    let seconds = env_or("AISPM_BENCH_SECONDS", 15);
    let clients_100 = env_or("AISPM_BENCH_CLIENTS_100", 8) as usize;
    let clients_1000 = env_or("AISPM_BENCH_CLIENTS_1000", 4) as usize;
    let overload_clients = env_or("AISPM_BENCH_OVERLOAD_CLIENTS", 128) as usize;
    let raw_events = env_or("AISPM_BENCH_RAW_EVENTS", 300_000) as usize;

    let broker = Broker::start()?;
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[tokens]]\ntoken = \"{TOKEN}\"\ntenants = [\"*\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\n"
        ),
    )?;
    let addr = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "--brokers",
        &broker.bootstrap(),
        "--tokens-file",
        &tokens.display().to_string(),
        "--topic-prefix",
        &random_prefix(),
        "--partitions",
        "6",
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut service = Service::start("aispm-ingest", &addr, &args, dir.path())?;
    service.wait_ready(Duration::from_secs(60)).await?;
    let url = format!("{}/v1/events", service.http);

    eprintln!("preparing request bodies");
    let small = bodies(100, 200, 50);
    let large = bodies(1000, 40, 50);
    // Warm up (connections, metadata, allocator).
    drive(&url, &small, 2, 2).await?;
    let rss_start = rss_mib(&service.http).await?;

    eprintln!("batches of 100: {clients_100} clients for {seconds}s");
    let b100 = drive(&url, &small, clients_100, seconds).await?;
    eprintln!("batches of 1000: {clients_1000} clients for {seconds}s");
    let b1000 = drive(&url, &large, clients_1000, seconds).await?;
    let rss_steady = rss_mib(&service.http).await?;
    eprintln!("overload: {overload_clients} clients with batches of 1000 for {seconds}s");
    let overload = drive(&url, &large, overload_clients, seconds).await?;
    let rss_overload = rss_mib(&service.http).await?;
    eprintln!("raw producer: {raw_events} pre-encoded events");
    let (raw_rate, encode_rate) = raw_producer(&broker.bootstrap(), raw_events).await?;

    let report = json!({
        "machine_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "http_batch_100": b100.json(),
        "http_batch_1000": b1000.json(),
        "overload_batch_1000": overload.json(),
        "service_rss_mib": {"start": rss_start, "after_steady": rss_steady, "after_overload": rss_overload},
        "raw_producer_events_per_second": raw_rate,
        "avro_encode_events_per_second": encode_rate,
    });
    println!(
        "\nHTTP, batches of 100 ({clients_100} clients): {:>9.0} events/s  p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  429s {}",
        b100.rate(),
        b100.percentile(0.5),
        b100.percentile(0.99),
        b100.percentile(1.0),
        b100.throttled
    );
    println!(
        "HTTP, batches of 1000 ({clients_1000} clients): {:>8.0} events/s  p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  429s {}",
        b1000.rate(),
        b1000.percentile(0.5),
        b1000.percentile(0.99),
        b1000.percentile(1.0),
        b1000.throttled
    );
    println!(
        "Overload ({overload_clients} clients, batches of 1000): {:>8.0} events/s accepted, {} of {} requests answered 429, {} errors; RSS {:.0} -> {:.0} -> {:.0} MiB",
        overload.rate(),
        overload.throttled,
        overload.requests,
        overload.errors,
        rss_start,
        rss_steady,
        rss_overload
    );
    println!(
        "Raw producer straight to Kafka: {raw_rate:>9.0} events/s (Avro encoding alone: {encode_rate:.0} events/s)"
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ingest-bench.json");
    if let Some(dir) = out.parent() {
        // `target/` may not exist when builds go to another CARGO_TARGET_DIR.
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("\n{}", serde_json::to_string_pretty(&report)?);
    service.terminate(Duration::from_secs(15))?;
    Ok(())
}
