//! Latency bench: event to view change on the views topic, and event to blocker on the blockers
//! topic, under a steady input rate (a bench binary printing figures and writing JSON, not a
//! timed test).
//!
//! One run against one broker (Apache Kafka, one KRaft node on 127.0.0.1,
//! `aispm_tests::Broker::start()`), with the real `aispm-projector` and `aispm-gatekeeper`
//! binaries as children with their default settings:
//! 1. a producer thread sends generated events (`LoadGen::keyed`, `AISPM_LATENCY_TENANTS`
//!    tenants, default 100, and `AISPM_LATENCY_ENTITIES` entities, default 1 000; wall-clock
//!    `occurred_at`) at `AISPM_LATENCY_RATE` events/s (default 10 000), paced per 10 ms, with
//!    librdkafka's default `linger.ms` (5 ms), as an agent or gateway would;
//! 2. after `AISPM_LATENCY_WARMUP` seconds (default 10: the tenants' state is new), it adds
//!    `AISPM_LATENCY_PROBES` probe decisions per second (default 20) for
//!    `AISPM_LATENCY_SECONDS` (default 60), each in a load tenant, counted in the rate. A probe
//!    names an agent and a model endpoint never seen before and sends PII to that endpoint, so
//!    it must open a coverage row (`{tenant}/coverage/agent/probe-agent-{n}`) and a critical
//!    AISPM-DATA-001 finding without an owner, which the gatekeeper turns into a
//!    `critical_finding_unowned` blocker keyed by that finding (`…/probe-ep-{n}/pii`);
//! 3. a consumer thread reads the views and blockers topics from their start
//!    (`fetch.wait.max.ms` 5) and notes when each probe's row and blocker first arrive.
//!
//! Each probe's latency is measured from just before its `produce` call to its arrival at that
//! subscriber, all on this process's monotonic clock: what a downstream system sees, broker
//! and fetch included. A probe not seen within `AISPM_LATENCY_DRAIN` seconds (default 30) after
//! the load stops is reported as missing, and the percentiles then count it as slower than
//! every probe seen. The children's CPU (user + sys, `/proc`) over the measured window is
//! reported per event sent in it.
//!
//! Targets (issue 17): event to view change p99 at most 250 ms, event to blocker p99 at most
//! 500 ms, under 10k events/s.
//!
//! Writes `bench/latency.json` and `bench/latency.md`.
//!
//! Run: `source ~/.cache/aispm/env.sh && cargo build --release --bins &&
//! cargo bench -p aispm-tests --bench latency` (about 2 minutes).

use aispm_schemas::json::InputEvent;
use aispm_schemas::{Environment, Timestamp, Topics};
use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::kafka::{create_contract_topics, random_prefix, send_waiting};
use aispm_tests::measure::{env_or, pid_cpu, pid_peak_rss_mib, round};
use aispm_tests::process::Service;
use aispm_tools::load::{Clock, LoadGen};
use aispm_tools::records::Generated;
use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 6;
const SEED: u64 = 11;
/// Not yet seen (or sent): the slot's initial value.
const NEVER: u64 = u64::MAX;

/// When each probe was sent and first seen, in nanoseconds since the run's start.
struct Probes {
    sent: Vec<AtomicU64>,
    view: Vec<AtomicU64>,
    blocker: Vec<AtomicU64>,
}

impl Probes {
    fn new(n: usize) -> Probes {
        let slots = || (0..n).map(|_| AtomicU64::new(NEVER)).collect();
        Probes {
            sent: slots(),
            view: slots(),
            blocker: slots(),
        }
    }

    /// Notes the first arrival of probe `n` in `slots`.
    fn seen(slots: &[AtomicU64], n: usize, at: u64) {
        if let Some(s) = slots.get(n) {
            let _ = s.compare_exchange(NEVER, at, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The latency of every probe sent, in ms, sorted; `None` for one never seen.
    fn latencies(&self, seen: &[AtomicU64]) -> Vec<Option<f64>> {
        let mut out: Vec<Option<f64>> = self
            .sent
            .iter()
            .zip(seen)
            .filter(|(s, _)| s.load(Ordering::Relaxed) != NEVER)
            .map(|(s, v)| {
                let (s, v) = (s.load(Ordering::Relaxed), v.load(Ordering::Relaxed));
                (v != NEVER).then(|| v.saturating_sub(s) as f64 / 1e6)
            })
            .collect();
        // Missing probes sort last: slower than any seen.
        out.sort_by(|a, b| match (a, b) {
            (Some(a), Some(b)) => a.total_cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        out
    }
}

/// The probe number in `bytes` after `marker` (six digits), if any.
fn probe_number(bytes: &[u8], marker: &[u8]) -> Option<usize> {
    let at = bytes.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let digits = bytes.get(at..at + 6)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Percentile `p` of sorted latencies: a number, or "missing" when it falls on a probe never
/// seen.
fn percentile(sorted: &[Option<f64>], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    match sorted[i] {
        Some(ms) => json!(round(ms, 1)),
        None => json!("missing"),
    }
}

fn summary(sorted: &[Option<f64>]) -> Value {
    json!({
        "probes": sorted.len(),
        "missing": sorted.iter().filter(|l| l.is_none()).count(),
        "p50_ms": percentile(sorted, 0.50),
        "p90_ms": percentile(sorted, 0.90),
        "p99_ms": percentile(sorted, 0.99),
        "max_ms": sorted.iter().rev().find_map(|l| *l).map(|m| round(m, 1)),
    })
}

/// Probe `n`: a decision in `tenant` by an agent never seen, sending PII to a model endpoint
/// never seen (AISPM-DATA-001, critical, no owner: a `critical_finding_unowned` blocker).
fn probe(template: &mut LoadGen, tenant: &str, n: usize) -> Generated {
    loop {
        if let InputEvent::Decision(mut d) = template.next_event() {
            d.event_id = format!("probe-{n:06}");
            d.tenant_id = tenant.to_owned();
            d.agent_id = format!("probe-agent-{n:06}");
            d.model_endpoint = Some(format!("probe-ep-{n:06}"));
            d.data_classes = vec!["pii".to_owned()];
            d.environment = Environment::Production;
            d.occurred_at = Timestamp::now();
            d.approval_id = None;
            return Generated::of(&InputEvent::Decision(d));
        }
    }
}

struct Plan {
    rate: u64,
    tenants: usize,
    entities: usize,
    probes_per_second: u64,
    warmup: Duration,
    measured: Duration,
    drain: Duration,
}

/// What the producer did: events sent during the measured window, and its length.
struct Sent {
    events: u64,
    seconds: f64,
    probes: usize,
}

/// Sends the load and the probes as `plan` says; `mark` is called as the measured window
/// starts and ends.
fn produce(
    brokers: &str,
    topics: &Topics,
    plan: &Plan,
    probes: &Probes,
    start: Instant,
    mut mark: impl FnMut(),
) -> Result<Sent> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("acks", "all")
        .create()?;
    let mut load = LoadGen::keyed(SEED, plan.tenants, plan.entities).with_clock(Clock::Wall);
    let mut template =
        LoadGen::keyed(SEED + 1, plan.tenants, plan.entities).with_clock(Clock::Wall);
    let tenants = load.tenants().to_vec();
    let tick = Duration::from_millis(10);
    let per_tick = plan.rate as f64 / 100.0;
    let probe_every = Duration::from_secs_f64(1.0 / plan.probes_per_second.max(1) as f64);
    let measure_from = start + plan.warmup;
    let until = measure_from + plan.measured;
    let (mut sent, mut in_window, mut next_probe, mut n) = (0f64, 0u64, measure_from, 0usize);
    let mut due = start;
    let mut marked = false;
    while Instant::now() < until {
        due += tick;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if !marked && Instant::now() >= measure_from {
            marked = true;
            mark();
        }
        // The events this tick owes (fractional rates carry over).
        let target = sent + per_tick;
        while sent + 1.0 <= target {
            sent += 1.0;
            let r = if marked && Instant::now() >= next_probe && n < probes.sent.len() {
                next_probe += probe_every;
                let r = probe(&mut template, &tenants[n % tenants.len()], n);
                probes.sent[n].store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                n += 1;
                r
            } else {
                load.next_record()
            };
            send_waiting(
                &producer,
                BaseRecord::to(r.kind.topic(topics))
                    .key(&r.tenant)
                    .payload(&r.bytes),
            )?;
            if marked {
                in_window += 1;
            }
        }
    }
    mark();
    producer.flush(Duration::from_secs(60))?;
    Ok(Sent {
        events: in_window,
        seconds: plan.measured.as_secs_f64(),
        probes: n,
    })
}

/// Reads the views and blockers topics from their start until `stop`, noting each probe's
/// first row and blocker; returns the records read.
fn watch(
    brokers: &str,
    topics: &Topics,
    probes: &Probes,
    start: Instant,
    stop: &AtomicBool,
) -> Result<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("latency-{}", random_prefix()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("fetch.min.bytes", "1")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for topic in [&topics.views, &topics.blockers] {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut read = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(m) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let m = m?;
        let at = start.elapsed().as_nanos() as u64;
        read += 1;
        let key = m.key().unwrap_or_default();
        if m.topic() == topics.views {
            if let Some(n) = probe_number(key, b"/coverage/agent/probe-agent-") {
                Probes::seen(&probes.view, n, at);
            }
        } else if m.payload().is_some()
            && let Some(n) = probe_number(key, b"probe-ep-")
        {
            // `{tenant}/production/critical_finding_unowned/AISPM-DATA-001:probe-ep-{n}/pii`.
            Probes::seen(&probes.blocker, n, at);
        }
    }
    Ok(read)
}

fn tokens_file(dir: &Path) -> Result<String> {
    let p = dir.join("tokens.toml");
    std::fs::write(
        &p,
        "[[tokens]]\ntoken = \"ops-secret\"\ntenants = [\"*\"]\nscopes = [\"read\", \"admin\"]\nname = \"ops\"\n",
    )?;
    Ok(p.display().to_string())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The children's CPU seconds now (projector, gatekeeper).
fn cpu(pids: (u32, u32)) -> (f64, f64) {
    (pid_cpu(pids.0), pid_cpu(pids.1))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let plan = Plan {
        rate: env_or("AISPM_LATENCY_RATE", 10_000),
        tenants: env_or("AISPM_LATENCY_TENANTS", 100).max(1) as usize,
        entities: env_or("AISPM_LATENCY_ENTITIES", 1000).max(1) as usize,
        probes_per_second: env_or("AISPM_LATENCY_PROBES", 20),
        warmup: Duration::from_secs(env_or("AISPM_LATENCY_WARMUP", 10)),
        measured: Duration::from_secs(env_or("AISPM_LATENCY_SECONDS", 60)),
        drain: Duration::from_secs(env_or("AISPM_LATENCY_DRAIN", 30)),
    };
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&brokers, &prefix, PARTITIONS).await?;
    let dir = tempfile::tempdir()?;
    let addr = || format!("127.0.0.1:{}", free_port());
    // Both services with their defaults, but where they find the broker and their topics.
    let start = |name: &str, own: &[&str]| {
        let args = [&["--brokers", &brokers, "--topic-prefix", &prefix][..], own].concat();
        Service::start(name, &addr(), &strings(&args), dir.path())
    };
    let state = dir.path().join("projector").display().to_string();
    let group = format!("proj-{}", random_prefix());
    let mut projector = start(
        "aispm-projector",
        &["--state-dir", &state, "--group", &group],
    )?;
    let (tokens, gk_group) = (tokens_file(dir.path())?, format!("gk-{}", random_prefix()));
    let mut gatekeeper = start(
        "aispm-gatekeeper",
        &["--tokens-file", &tokens, "--group-id", &gk_group],
    )?;
    for s in [&mut projector, &mut gatekeeper] {
        s.wait_ready(Duration::from_secs(60)).await?;
    }
    let pids = (
        projector.pid().context("the projector is not running")?,
        gatekeeper.pid().context("the gatekeeper is not running")?,
    );

    let n = (plan.probes_per_second * plan.measured.as_secs()) as usize;
    let probes = Arc::new(Probes::new(n));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let watcher = {
        let (brokers, topics, probes, stop) = (
            brokers.clone(),
            topics.clone(),
            probes.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || watch(&brokers, &topics, &probes, start, &stop))
    };
    println!(
        "latency: {} events/s for {:?} of warm-up, then {:?} with {} probes/s",
        plan.rate, plan.warmup, plan.measured, plan.probes_per_second
    );
    let mut marks = Vec::new();
    let sent = produce(&brokers, &topics, &plan, &probes, start, || {
        marks.push(cpu(pids));
    })?;
    let (Some(&before), Some(&after)) = (marks.first(), marks.last()) else {
        bail!("the measured window never started");
    };
    // The probes still in flight: until each is seen, or the drain time is up.
    let deadline = Instant::now() + plan.drain;
    let all_seen = |slots: &[AtomicU64]| {
        slots[..sent.probes]
            .iter()
            .all(|s| s.load(Ordering::Relaxed) != NEVER)
    };
    while Instant::now() < deadline && !(all_seen(&probes.view) && all_seen(&probes.blocker)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let read = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the watcher panicked"))??;
    let peak = (pid_peak_rss_mib(pids.0), pid_peak_rss_mib(pids.1));
    let per_event = |cpu: f64| round(cpu * 1e6 / sent.events.max(1) as f64, 1);

    let views = summary(&probes.latencies(&probes.view));
    let blockers = summary(&probes.latencies(&probes.blocker));
    let report = json!({
        "rate_target": plan.rate,
        "rate_sent": round(sent.events as f64 / sent.seconds, 0),
        "measured_seconds": sent.seconds,
        "tenants": plan.tenants,
        "entities": plan.entities,
        "publish_interval": std::env::var("AISPM_PUBLISH_INTERVAL").unwrap_or_else(|_| "default".into()),
        "records_watched": read,
        "event_to_view_change": views,
        "event_to_blocker": blockers,
        "targets": {"view_p99_ms": 250, "blocker_p99_ms": 500},
        "projector": {
            "cpu_us_per_event": per_event(after.0 - before.0),
            "peak_rss_mib": round(peak.0, 1),
        },
        "gatekeeper": {
            "cpu_us_per_event": per_event(after.1 - before.1),
            "peak_rss_mib": round(peak.1, 1),
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    write_report(&report)?;
    drop(projector);
    drop(gatekeeper);
    drop(broker);
    Ok(())
}

fn write_report(report: &Value) -> Result<()> {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench");
    std::fs::create_dir_all(&bench)?;
    std::fs::write(
        bench.join("latency.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    let row = |name: &str, v: &Value, target: u64| {
        format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {target} |",
            v["probes"], v["missing"], v["p50_ms"], v["p90_ms"], v["p99_ms"], v["max_ms"]
        )
    };
    let md = [
        "## Latency under a steady input rate".to_owned(),
        String::new(),
        format!(
            "{} events/s sent (target {}) for {} s over {} tenants and {} entities; the projector and the gatekeeper with their defaults.",
            report["rate_sent"],
            report["rate_target"],
            report["measured_seconds"],
            report["tenants"],
            report["entities"]
        ),
        String::new(),
        "| path | probes | missing | p50 ms | p90 ms | p99 ms | max ms | p99 target ms |".to_owned(),
        "|---|---:|---:|---:|---:|---:|---:|---:|".to_owned(),
        row("event to view change", &report["event_to_view_change"], 250),
        row("event to blocker", &report["event_to_blocker"], 500),
        String::new(),
        format!(
            "Projector {} CPU-µs per event (peak RSS {} MiB); gatekeeper {} CPU-µs per event (peak RSS {} MiB).",
            report["projector"]["cpu_us_per_event"],
            report["projector"]["peak_rss_mib"],
            report["gatekeeper"]["cpu_us_per_event"],
            report["gatekeeper"]["peak_rss_mib"]
        ),
        String::new(),
    ]
    .join("\n");
    std::fs::write(bench.join("latency.md"), md)?;
    Ok(())
}
