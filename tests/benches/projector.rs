//! Projector benchmark (a bench binary printing figures and writing JSON, not a timed test).
//!
//! For each entity count (default 1 000 and 100 000, over 100 tenants), in one run against one
//! broker (Apache Kafka, one KRaft node on 127.0.0.1, `aispm_tests::Broker::start()`):
//! 1. pre-fills the input topics (6 partitions each) with N generated events (default 1M), produced
//!    fast with rdkafka;
//! 2. **plain reader**: a child process that reads and discards every record of the same topics
//!    with the projector's own consumer settings (events/s, CPU-µs/event, peak RSS);
//! 3. **projector**: the real `aispm-projector rebuild` binary as a child under
//!    `/usr/bin/time -v`, into a fresh RocksDB: every batch is one `WriteBatch` with its offsets,
//!    and its view changes are published to the views topic (events/s, ratio to the plain reader,
//!    CPU-µs/event, peak RSS); with `AISPM_BENCH_REBUILD_TWICE=1` a second `rebuild` over the
//!    now full state (wipe + replay);
//! 4. **apply-only**: the same events, already in memory, through `Engine::prepare`/`commit`
//!    into a fresh RocksDB in this process on one thread, no broker (events/s, CPU-µs/event);
//!    then again with the batch's tenants split over the projector's default apply workers
//!    (one per core, `AISPM_BENCH_WORKERS`), as the service runs;
//! 5. **decision-only comparison with Quix Streams and Kafka Streams** (`AISPM_BENCH_QUIX` and
//!    `AISPM_BENCH_KSTREAMS`, default 1 each; the step runs unless both are 0): the fill also
//!    writes every decision record to a copy of the decision topic under a second prefix; over
//!    exactly those records run, each as a child under `/usr/bin/time -v`, the plain reader,
//!    `bench/quix/projection.py` (Quix Streams, RocksDB state: open findings and last-seen per
//!    tenant and agent) with the project venv's Python (`$AISPM_PYTHON`, else
//!    `~/.cache/aispm/venv/bin/python`; without it or without `quixstreams` the row says
//!    "skipped" and why), the same projection in Kafka Streams (`bench/kafka-streams/`, a
//!    runnable jar run with the `java` on PATH, exactly_once_v2, RocksDB stores; the bench
//!    builds it with `mvn -q -B -f bench/kafka-streams/pom.xml package` when the jar is missing
//!    or older than its sources; without `java` or `mvn` the row says "skipped" and why), and the
//!    projector's `rebuild` (its other inputs empty there): events/s, CPU-µs/event, peak RSS and
//!    the ratios to the projector. With `AISPM_BENCH_QUIX_VERIFY=1` and
//!    `AISPM_BENCH_KSTREAMS_VERIFY=1` (each the default when the copy holds at most 200 000
//!    records) a second, untimed run of that engine dumps its table and `bench/quix/reference.py`
//!    (a plain consumer and a dict) checks every row; and, over the
//!    same records, **the contract's floor**: the reader child again, adding stage by stage
//!    (`AISPM_BENCH_FLOOR`) the least any projector must do per decision: decode it, look its
//!    event id up in RocksDB and store it with its evidence row and the offsets in one
//!    `WriteBatch`, publish the evidence row's view change (CPU-µs/event per stage);
//!
//! and, once, a **memory** run: a child process streams `AISPM_BENCH_MEMORY_EVENTS` (default
//! 2M; 10M takes about ten minutes) generated events over 100 000 entities through the engine with the service's default
//! bounded caches and reports its peak RSS.
//!
//! For a profile, `AISPM_BENCH_ROLE=apply` runs only the one-worker apply-only run (no broker,
//! no files written) and prints its figures: `AISPM_BENCH_ROLE=apply AISPM_BENCH_EVENTS=100000
//! perf record --call-graph dwarf target/release/deps/projector-* --bench`.
//!
//! Writes `bench/projector.json` and `bench/projector.md`, and upserts the `projector` key of
//! `bench/results.json` (`scripts/bench.sh` assembles the whole suite).
//!
//! Run: `source ~/.cache/aispm/env.sh && cargo build --release --bins &&
//! cargo bench -p aispm-tests --bench projector`.
//! Tunables (environment): `AISPM_BENCH_EVENTS` (default 1000000), `AISPM_BENCH_ENTITIES`
//! (comma-separated, default `1000,100000`), `AISPM_BENCH_TENANTS` (default 100),
//! `AISPM_BENCH_MEMORY_EVENTS` (default 2000000; 0 skips the memory run),
//! `AISPM_BENCH_REBUILD_TWICE` (default 0), `AISPM_BENCH_WAL` (default 0: the in-process runs write
//! as the service does by default, without RocksDB's WAL; 1 logs each batch, as `--wal`), `AISPM_BENCH_BATCH` and `AISPM_BENCH_BATCH_AGGREGATES` (in-process
//! batches, default the projector's `--batch-max` and `--batch-max-aggregates`), `AISPM_BENCH_WORKERS`
//! (apply workers of the in-process runs, default the projector's `--apply-workers`), `AISPM_BENCH_QUIX` and
//! `AISPM_BENCH_KSTREAMS` (default 1 each; 0 skips that engine, both 0 skip step 5),
//! `AISPM_BENCH_QUIX_VERIFY` and `AISPM_BENCH_KSTREAMS_VERIFY` (see step 5), `AISPM_BENCH_TAG` (writes only
//! `bench/scale/projector-{tag}.json` and `.md`: one point of `scripts/bench.sh`'s scale table),
//! `AISPM_BENCH_PROJECTOR_BIN` (the `aispm-projector` to measure; default the one beside this
//! bench in `target/release`). The bench copies that binary at start and runs the copy, so a
//! concurrent build cannot change it mid-run; the figures name its build time.
//!
//! CPU figures come from `/proc` (utime + stime, 10 ms ticks) and `/usr/bin/time -v`; they cover
//! every thread of the process (librdkafka's, RocksDB's background threads, the JVM's compiler and
//! garbage collector threads), start-up included.

use aispm_projector::store::Store;
use aispm_projector::{Engine, Settings};
use aispm_runtime::kafka::KafkaConfig;
use aispm_runtime::kafka::partition_ends;
use aispm_schemas::InputKind;
use aispm_schemas::{Environment, Topics};
use aispm_tests::Broker;
use aispm_tests::kafka::{create_contract_topics, random_prefix, send_waiting};
use aispm_tests::measure::{env_or, peak_rss_mib, process_cpu, round, rss_mib, thread_cpu};
use aispm_tests::process::binary;
use aispm_tools::load::LoadGen;
use anyhow::{Context, Result, bail};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The projector binary's allocator, so the in-process figures match the service's.
#[global_allocator]
static GLOBAL: aispm_jemalloc::Jemalloc = aispm_jemalloc::Jemalloc;

const PARTITIONS: i32 = 6;
const SEED: u64 = 7;
/// Records per engine batch in the in-process runs, at most (`AISPM_BENCH_BATCH`; default the
/// projector's own `--batch-max`), cut as the service cuts them (`Engine::batch_limit`, with
/// `AISPM_BENCH_BATCH_AGGREGATES`, default the projector's `--batch-max-aggregates`).
fn batch_limit(engine: &Engine) -> usize {
    use aispm_projector::Config;
    let max = env_or("AISPM_BENCH_BATCH", Config::DEFAULT_BATCH_MAX as u64) as usize;
    let aggs = env_or(
        "AISPM_BENCH_BATCH_AGGREGATES",
        Config::DEFAULT_BATCH_MAX_AGGREGATES as u64,
    ) as usize;
    engine.batch_limit(max, aggs)
}
/// Whether the in-process runs end the open epoch after this batch, as the service does live
/// (`Loop::one_batch`): always with the WAL; else once it is `--epoch-interval` old or holds
/// `--epoch-bytes` (`AISPM_BENCH_EPOCH_MS` and `AISPM_BENCH_EPOCH_BYTES`; a catch-up's epochs
/// last up to `--flush-interval`, 10 000 ms; 0 bytes ends every batch's, as before epochs).
fn epoch_due(engine: &Engine) -> bool {
    let config = aispm_projector::Config::local("", PathBuf::new());
    let bytes = env_or("AISPM_BENCH_EPOCH_BYTES", config.epoch_bytes as u64) as usize;
    // A catch-up's epochs last up to the flush interval, as the service's.
    let interval = if catching_up() {
        config.flush_interval
    } else {
        config.epoch_interval
    };
    let interval = env_or("AISPM_BENCH_EPOCH_MS", interval.as_millis() as u64);
    env_or("AISPM_BENCH_WAL", 0) == 1
        || engine.epoch_age() >= Duration::from_millis(interval)
        || engine.epoch_bytes() >= bytes
}

/// `AISPM_BENCH_CATCHUP=1`: the apply-only run as a catch-up (a `rebuild`, a partition taken
/// over) runs it: every tenant owed, so its changed rows are derived once per epoch and written
/// as owed instead of published per batch (their publication once the catch-up ends is not
/// part of the run), and epochs last up to the flush interval.
fn catching_up() -> bool {
    env_or("AISPM_BENCH_CATCHUP", 0) == 1
}

/// The in-process runs' RocksDB, its writes durable as the service's default makes them (at the
/// next flush, no WAL), or each logged with `AISPM_BENCH_WAL=1` (the service's `--wal`).
fn bench_store(dir: &Path) -> Result<Store> {
    let mut config = aispm_projector::Config::local("", PathBuf::new());
    config.wal = env_or("AISPM_BENCH_WAL", 0) == 1;
    config.block_cache_bytes =
        env_or("AISPM_BENCH_BLOCK_CACHE", config.block_cache_bytes as u64) as usize;
    config.write_buffer_bytes = env_or(
        "AISPM_BENCH_WRITE_BUFFERS",
        config.write_buffer_bytes as u64,
    ) as usize;
    Ok(Store::open_with(
        dir,
        config.store_budget(),
        config.durability(),
    )?)
}

/// Apply workers of the in-process runs but the one-core apply-only figure
/// (`AISPM_BENCH_WORKERS`; default the projector's own `--apply-workers` default, one per core).
fn bench_workers() -> usize {
    let default = aispm_projector::Config::local("", PathBuf::new()).workers();
    env_or("AISPM_BENCH_WORKERS", default as u64).max(1) as usize
}
/// The service defaults (`Config::local`): what the binary runs with.
/// The service's `--cache-entries` default; `AISPM_BENCH_CACHE_ENTRIES` sets another.
const CACHE_ENTRIES: usize = 100_000;

fn cache_entries() -> usize {
    env_or("AISPM_BENCH_CACHE_ENTRIES", CACHE_ENTRIES as u64) as usize
}

/// What `/usr/bin/time -v` says about a child.
#[derive(Debug, Default, Clone, Copy)]
struct TimeV {
    user: f64,
    sys: f64,
    max_rss_kib: f64,
}

fn parse_time_v(text: &str) -> TimeV {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    TimeV {
        user: field("User time (seconds):"),
        sys: field("System time (seconds):"),
        max_rss_kib: field("Maximum resident set size (kbytes):"),
    }
}

/// Runs `cmd` under `/usr/bin/time -v`; returns its stdout, wall seconds and resource use.
fn run_timed(cmd: Command, what: &str) -> Result<(String, f64, TimeV)> {
    let dir = tempfile::tempdir()?;
    let tfile = dir.path().join("time.txt");
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-v")
        .arg("-o")
        .arg(&tfile)
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let started = Instant::now();
    let out = timed.output().with_context(|| format!("running {what}"))?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tv = parse_time_v(&std::fs::read_to_string(&tfile).unwrap_or_default());
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), wall, tv))
}

// ----------------------------------------------------------------------------------------------
// Pre-filling the topics

/// Counts failed deliveries (so the figures say how many records really are in the topics).
#[derive(Debug, Default)]
struct Deliveries {
    failed: AtomicU64,
    /// Next offset after the last delivered record, per topic-partition.
    ends: std::sync::Mutex<HashMap<(String, i32), i64>>,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = result {
            let mut ends = self
                .ends
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let end = ends
                .entry((m.topic().to_owned(), m.partition()))
                .or_default();
            *end = (*end).max(m.offset() + 1);
        }
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self
                .first_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

struct Filled {
    records: u64,
    by_topic: HashMap<String, u64>,
    seconds: f64,
}

/// Produces `events` generated records to `topics`; with `decisions_copy`, every decision
/// record also goes to that topic set's decision topic (the same records in the same order,
/// for the decision-only comparison: plain reader, Quix Streams, projector).
fn fill(
    brokers: &str,
    topics: &Topics,
    decisions_copy: Option<&Topics>,
    events: u64,
    tenants: usize,
    entities: usize,
) -> Result<Filled> {
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("acks", "1")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Deliveries::default())?;
    let mut g = LoadGen::keyed(SEED, tenants, entities);
    let mut by_topic: HashMap<String, u64> = HashMap::new();
    let started = Instant::now();
    for _ in 0..events {
        let r = g.next_record();
        let copy = decisions_copy
            .filter(|_| r.kind == InputKind::Decision)
            .map(|c| c.decisions.as_str());
        for topic in std::iter::once(r.kind.topic(topics)).chain(copy) {
            *by_topic.entry(topic.to_owned()).or_default() += 1;
            send_waiting(
                &producer,
                BaseRecord::to(topic).key(&r.tenant).payload(&r.bytes),
            )?;
        }
    }
    producer.flush(Duration::from_secs(300))?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!(
            "{failed} of {events} records were not delivered: {:?}",
            producer
                .context()
                .first_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
        );
    }
    // The broker's end offsets must cover every record the producer saw delivered.
    let data_ends = producer
        .context()
        .ends
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    let mut filled_topics = topics.inputs().to_vec();
    filled_topics.extend(decisions_copy.map(|c| c.decisions.as_str()));
    for (t, p, high) in watermarks(brokers, &filled_topics)? {
        let end = data_ends.get(&(t.clone(), p)).copied().unwrap_or(0);
        if high < end {
            bail!(
                "{t}/{p}: the broker says the end is {high}, but records were delivered up to {end}"
            );
        }
    }
    Ok(Filled {
        records: events,
        by_topic,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `(topic, partition, end)` of every non-empty input partition.
fn watermarks(brokers: &str, topics: &[&str]) -> Result<Vec<(String, i32, i64)>> {
    Ok(partition_ends(
        &KafkaConfig::local(brokers),
        topics,
        Duration::from_secs(30),
    )?
    .into_iter()
    .filter(|(_, end)| *end > 0)
    .map(|((t, p), end)| (t, p, end))
    .collect())
}

// ----------------------------------------------------------------------------------------------
// Child: the plain reader

/// How much of the projector's per-event work the reader child does (`AISPM_BENCH_FLOOR`). Each
/// stage adds to the one before; together they are the floor the contract sets under any
/// projector: what every decision costs before a single aggregate, finding or coverage row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Floor {
    /// Read and discard: the plain reader.
    Read,
    /// And decode each record into the contract's `DecisionEvent`.
    Decode,
    /// And, per batch, what exactly-once asks of RocksDB of every decision: its event id looked
    /// up (dedup, as the projector does: one point read) and stored, its evidence row if it
    /// carries evidence, the batch's offsets, one `WriteBatch` (WAL on).
    Store,
    /// And that evidence row's view change published to the views topic after the write, every
    /// acknowledgement awaited (the contract: every view change is published).
    Publish,
}

impl Floor {
    const ALL: [(Floor, &'static str); 4] = [
        (Floor::Read, "read"),
        (Floor::Decode, "decode"),
        (Floor::Store, "store"),
        (Floor::Publish, "publish"),
    ];

    fn name(self) -> &'static str {
        Floor::ALL
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("read", |(_, n)| n)
    }

    fn from_env() -> Result<Floor> {
        let v = std::env::var("AISPM_BENCH_FLOOR").unwrap_or_else(|_| "read".into());
        Floor::ALL
            .iter()
            .find(|(_, n)| *n == v)
            .map(|(f, _)| *f)
            .with_context(|| {
                format!("AISPM_BENCH_FLOOR={v}: not one of read, decode, store, publish")
            })
    }
}

/// What the store and publish stages keep of a batch's decisions.
struct FloorSink {
    store: Store,
    _dir: tempfile::TempDir,
    publisher: Option<(rdkafka::producer::FutureProducer, String)>,
    codec: aispm_schemas::Codec,
    /// (tenant, event id, evidence row if it carries evidence) of the batch's decisions.
    pending: Vec<(String, String, Option<aispm_schemas::EvidenceRow>)>,
    offsets: HashMap<(String, i32), i64>,
    applied: u64,
}

impl FloorSink {
    const BATCH: usize = 10_000;

    fn new(floor: Floor, brokers: &str, views_topic: &str) -> Result<FloorSink> {
        let dir = tempfile::tempdir()?;
        let publisher = if floor >= Floor::Publish {
            let p = KafkaConfig::local(brokers).producer_config().create()?;
            Some((p, views_topic.to_owned()))
        } else {
            None
        };
        Ok(FloorSink {
            store: bench_store(dir.path())?,
            _dir: dir,
            publisher,
            codec: aispm_schemas::Codec::new(),
            pending: Vec::with_capacity(Self::BATCH),
            offsets: HashMap::new(),
            applied: 0,
        })
    }

    fn add(&mut self, d: aispm_schemas::DecisionEvent, topic: &str, partition: i32, offset: i64) {
        use aispm_schemas::{EvidenceRow, SignatureState};
        self.offsets
            .insert((topic.to_owned(), partition), offset + 1);
        let row = d.evidence.map(|ev| EvidenceRow {
            asserted_by: None,
            evidence_id: ev.evidence_id,
            event_id: d.event_id.clone(),
            sha256: ev.sha256,
            uri: ev.uri,
            // Taken as verified without the ed25519 check the projector makes: the floor leaves
            // it out (it could only add to the floor).
            signature_state: if ev.signature.is_some() {
                SignatureState::Verified
            } else {
                SignatureState::Unsigned
            },
            key_id: ev.key_id,
            recorded_at: d.occurred_at,
            synthetic: d.synthetic,
            action_kind: Some(d.action_kind.as_str().to_owned()),
            environment: Some(Environment::Production),
            agent_id: None,
            control_id: None,
        });
        self.pending.push((d.tenant_id, d.event_id, row));
    }

    fn flush(&mut self) -> Result<()> {
        use aispm_projector::store::{columns, encode};
        use aispm_schemas::{Timestamp, ViewChange, ViewName, ViewRow};
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut batch = rocksdb::WriteBatch::default();
        let mut fresh = Vec::with_capacity(self.pending.len());
        let mut seen = std::collections::HashSet::with_capacity(self.pending.len());
        for (i, (tenant, event_id, row)) in self.pending.iter().enumerate() {
            let key = columns::tenant_key(tenant, event_id);
            if seen.contains(&key) || self.store.get_raw(columns::SEEN, &key)?.is_some() {
                continue;
            }
            self.store.batch_put(&mut batch, columns::SEEN, &key, &[])?;
            seen.insert(key);
            if let Some(row) = row {
                let view = columns::view_cf(ViewName::Evidence);
                let row_key = columns::tenant_key(tenant, &row.evidence_id);
                self.store
                    .batch_put(&mut batch, view, &row_key, &encode(row))?;
                fresh.push(i);
            }
            self.applied += 1;
        }
        for ((topic, partition), next) in &self.offsets {
            let key = columns::offset_key(topic, *partition);
            self.store
                .batch_put(&mut batch, columns::OFFSETS, &key, &next.to_be_bytes())?;
        }
        self.store.write(batch)?;
        if let Some((producer, topic)) = &self.publisher {
            let now = Timestamp::now();
            let mut sends = Vec::with_capacity(fresh.len());
            for i in fresh {
                let (tenant, event_id, Some(row)) = &self.pending[i] else {
                    continue;
                };
                let change = ViewChange::new(
                    tenant.as_str(),
                    ViewName::Evidence,
                    row.evidence_id.as_str(),
                    Some(ViewRow::Evidence(row.clone())),
                    now,
                    event_id.as_str(),
                );
                let (key, value) = (change.record_key(), self.codec.encode(&change)?);
                let record = rdkafka::producer::FutureRecord::to(topic)
                    .partition(aispm_runtime::kafka::partition_for(
                        tenant.as_bytes(),
                        PARTITIONS,
                    ))
                    .key(key.as_bytes())
                    .payload(&value);
                sends.push(producer.send_result(record).map_err(|(e, _)| e)?);
            }
            for s in sends {
                futures::executor::block_on(s)?.map_err(|(e, _)| e)?;
            }
        }
        self.pending.clear();
        Ok(())
    }
}

/// Reads every record of `AISPM_BENCH_TOPICS` up to the current end, with the projector's
/// consumer settings, does what `AISPM_BENCH_FLOOR` says with each (default: discards it), and
/// prints one JSON line.
fn reader_child() -> Result<()> {
    let brokers = std::env::var("AISPM_BENCH_BROKERS")?;
    let topics_var = std::env::var("AISPM_BENCH_TOPICS")?;
    let topics: Vec<&str> = topics_var.split(',').collect();
    let floor = Floor::from_env()?;
    let cpu0 = process_cpu();
    let codec = aispm_schemas::Codec::new();
    let mut sink = match floor {
        Floor::Store | Floor::Publish => Some(FloorSink::new(
            floor,
            &brokers,
            &std::env::var("AISPM_BENCH_VIEWS_TOPIC").unwrap_or_default(),
        )?),
        _ => None,
    };
    let mut cc =
        KafkaConfig::local(&brokers).consumer_config(&format!("reader-{}", random_prefix()));
    cc.set("fetch.wait.max.ms", "50")
        .set("queued.max.messages.kbytes", "65536");
    let consumer: BaseConsumer = cc.create()?;
    let highs = watermarks(&brokers, &topics)?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<(String, i32), i64> = HashMap::new();
    for (t, p, h) in &highs {
        tpl.add_partition_offset(t, *p, Offset::Beginning)?;
        remaining.insert((t.clone(), *p), *h);
    }
    let started = Instant::now();
    let cpu1 = process_cpu();
    consumer.assign(&tpl)?;
    let (mut records, mut bytes, mut undecoded) = (0u64, 0u64, 0u64);
    while !remaining.is_empty() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                let payload = m.payload().unwrap_or_default();
                bytes += payload.len() as u64;
                if floor >= Floor::Decode {
                    match codec.decode::<aispm_schemas::DecisionEvent>(payload) {
                        Ok(d) => {
                            if let Some(sink) = sink.as_mut() {
                                sink.add(d, m.topic(), m.partition(), m.offset());
                            }
                        }
                        Err(_) => undecoded += 1,
                    }
                }
                let tp = (m.topic().to_owned(), m.partition());
                if remaining.get(&tp).is_some_and(|h| m.offset() + 1 >= *h) {
                    remaining.remove(&tp);
                }
                if let Some(sink) = sink.as_mut()
                    && (sink.pending.len() >= FloorSink::BATCH || remaining.is_empty())
                {
                    sink.flush()?;
                }
            }
            Some(Err(e)) => eprintln!("reader: {e}"),
            None => {
                if let Some(sink) = sink.as_mut() {
                    sink.flush()?;
                }
            }
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the plain reader did not reach the end within 30 minutes");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu2 = process_cpu();
    let highs_after: i64 = watermarks(&brokers, &topics)?.iter().map(|h| h.2).sum();
    println!(
        "{}",
        json!({
            "floor": floor.name(),
            "highs_before": highs.iter().map(|h| h.2).sum::<i64>(), "highs_after": highs_after,
            "records": records, "bytes": bytes, "seconds": seconds, "undecoded": undecoded,
            "applied": sink.as_ref().map(|s| s.applied),
            "cpu_seconds_reading": cpu2 - cpu1, "cpu_seconds_total": cpu2 - cpu0,
        })
    );
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// Child: the memory run

/// Streams generated events through the engine (service defaults) and prints peak RSS.
fn memory_child() -> Result<()> {
    let events = env_or("AISPM_BENCH_MEMORY_EVENTS", 2_000_000);
    let entities = env_or("AISPM_BENCH_MEMORY_ENTITIES", 100_000) as usize;
    let tenants = env_or("AISPM_BENCH_TENANTS", 100) as usize;
    let dir = tempfile::tempdir()?;
    let topics = Topics::with_prefix("bench.");
    let store = Arc::new(bench_store(dir.path())?);
    store.check_version()?;
    let mut engine = Engine::new(
        Arc::clone(&store),
        topics.clone(),
        Settings::default(),
        cache_entries(),
    )?
    .with_workers(bench_workers())?;
    let mut g = LoadGen::keyed(SEED, tenants, entities);
    let mut offsets = [0i64; 3];
    let started = Instant::now();
    let cpu0 = process_cpu();
    let mut done = 0u64;
    let mut rss_at: Vec<Value> = Vec::new();
    let mut next_mark = 1_000_000u64;
    let (mut batches, mut aggregates, mut epochs) = (0u64, 0u64, 0u64);
    while done < events {
        let n = batch_limit(&engine).min(usize::try_from(events - done).unwrap_or(usize::MAX));
        let recs: Vec<_> = (0..n).map(|_| g.next_record()).collect();
        let inputs = aispm_tests::measure::inputs(&recs, &topics, &mut offsets);
        let mut p = engine.prepare(&inputs)?;
        if epoch_due(&engine) || done + n as u64 >= events {
            engine.commit(&mut p)?;
            engine.clear_outbox(p.outbox)?;
            epochs += 1;
        }
        publish_values(&p.outgoing)?;
        done += n as u64;
        batches += 1;
        aggregates += p.stats.aggregates as u64;
        if done >= next_mark {
            let (state, heap) = memory_parts(&engine);
            eprintln!(
                "memory run: {done} events, peak RSS {:.0} MiB, RSS {:.0} MiB; state {state}; \
                 jemalloc {heap}",
                peak_rss_mib(),
                rss_mib()
            );
            rss_at.push(
                json!({"events": done, "peak_rss_mib": round(peak_rss_mib(), 1),
                "rss_mib": round(rss_mib(), 1),
                "seconds": round(started.elapsed().as_secs_f64(), 1),
                "state_mib": state, "jemalloc_mib": heap}),
            );
            next_mark += 1_000_000;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (sst, mem) = engine.store().sizes();
    let (_, table_readers, block_cache) = engine.store().memory();
    println!(
        "{}",
        json!({
            "events": done, "entities": entities, "tenants": tenants,
            "seconds": seconds, "cpu_seconds": process_cpu() - cpu0,
            "peak_rss_mib": peak_rss_mib(), "sst_bytes": sst, "memtable_bytes": mem,
            "table_readers_bytes": table_readers, "block_cache_bytes": block_cache,
            "rss_mib_now": rss_mib(),
            "batches": batches,
            "records_per_batch": round(done as f64 / batches.max(1) as f64, 0),
            "batches_per_epoch": round(batches as f64 / epochs.max(1) as f64, 1),
            "aggregates_per_batch": round(aggregates as f64 / batches.max(1) as f64, 0),
            "by_million": rss_at,
            "heap_held_mib": heap_held(engine, store),
        })
    );
    Ok(())
}

/// Makes each record's value as the publisher does when it hands it to librdkafka, which
/// copies it (a finding's OCSF record is written then).
fn publish_values(outgoing: &[aispm_projector::Outgoing]) -> Result<()> {
    for o in outgoing {
        std::hint::black_box(o.value()?);
    }
    Ok(())
}

/// What each owner really holds of the heap at the end of the memory run, in MiB: jemalloc's
/// allocated bytes given back when the engine (its caches and epochs), then the store
/// (RocksDB, whose C++ allocations jemalloc serves too) is dropped, and what is left.
fn heap_held(engine: Engine, store: Arc<Store>) -> Value {
    let allocated = || {
        aispm_jemalloc::stats()
            .and_then(|s| s.into_iter().find(|(name, _)| *name == "allocated"))
            .map_or(0.0, |(_, bytes)| bytes as f64 / 1_048_576.0)
    };
    let all = allocated();
    drop(engine);
    let without_engine = allocated();
    drop(store);
    let rest = allocated();
    json!({"all": round(all, 1), "engine": round(all - without_engine, 1),
        "rocksdb": round(without_engine - rest, 1), "rest": round(rest, 1)})
}

/// Where the memory is: the state's parts (`state_memory_bytes{part}`) and jemalloc's
/// statistics, in MiB, each by name.
fn memory_parts(engine: &Engine) -> (Value, Value) {
    let mib = |b: u64| round(b as f64 / 1_048_576.0, 1);
    let state: serde_json::Map<String, Value> = engine
        .memory()
        .parts()
        .into_iter()
        .map(|(part, bytes)| (part.to_owned(), json!(mib(bytes))))
        .collect();
    let heap: serde_json::Map<String, Value> = aispm_jemalloc::stats()
        .into_iter()
        .flatten()
        .map(|(name, bytes)| (name.to_owned(), json!(mib(bytes as u64))))
        .collect();
    (Value::Object(state), Value::Object(heap))
}

// ----------------------------------------------------------------------------------------------
// In-process apply-only

/// Applies the events in memory on `workers` threads; the one-worker figure is the target's
/// "on one core" (its thread CPU is the engine's own work, without RocksDB's threads).
fn apply_only(
    topics: &Topics,
    events: u64,
    tenants: usize,
    entities: usize,
    workers: usize,
) -> Result<Value> {
    let mut g = LoadGen::keyed(SEED, tenants, entities);
    if env_or("AISPM_BENCH_SIGNED", 0) == 1 {
        g = g.signed();
    }
    let recs: Vec<_> = (0..events).map(|_| g.next_record()).collect();
    let mut offsets = [0i64; 3];
    let inputs = aispm_tests::measure::inputs(&recs, topics, &mut offsets);
    let dir = tempfile::tempdir()?;
    let store = Arc::new(bench_store(dir.path())?);
    store.check_version()?;
    let mut engine = Engine::new(store, topics.clone(), Settings::default(), cache_entries())?
        .with_workers(workers)?
        .with_counters_per_epoch(env_or("AISPM_BENCH_COUNTERS_PER_EPOCH", 1) == 1)
        .with_judged_counts(env_or("AISPM_BENCH_JUDGED_COUNTS", 1) == 1);
    let (mut applied, mut changes) = (0u64, 0u64);
    let mut by_view = std::collections::BTreeMap::new();
    let (p0, t0) = (process_cpu(), thread_cpu());
    let started = Instant::now();
    let mut rest = &inputs[..];
    let (mut batches, mut epochs) = (0u64, 0u64);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(batch_limit(&engine).min(rest.len()));
        rest = tail;
        if catching_up() {
            for input in chunk {
                if let Some(tenant) = input.key.and_then(|k| std::str::from_utf8(k).ok()) {
                    engine.owe(tenant, input.partition);
                }
            }
        }
        let mut p = engine.prepare(chunk)?;
        batches += 1;
        if epoch_due(&engine) || rest.is_empty() {
            engine.commit(&mut p)?;
            engine.clear_outbox(p.outbox)?;
            epochs += 1;
        }
        applied += p.stats.applied.values().sum::<u64>();
        changes += p.outgoing.len() as u64;
        publish_values(&p.outgoing)?;
        for o in &p.outgoing {
            // `{tenant}/{view}/{row}` on the views topic; OCSF records counted apart.
            let view = match o.sink {
                aispm_projector::Sink::Views => o.key.split('/').nth(1).unwrap_or("?"),
                _ => "ocsf",
            };
            let mut name = view.to_owned();
            if view == "findings" {
                // And by rule: `{rule}:{resource}`.
                let row = o.key.splitn(3, '/').nth(2).unwrap_or("");
                name = format!("findings {}", row.split(':').next().unwrap_or("?"));
            }
            *by_view.entry(name).or_insert(0u64) += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (p1, t1) = (process_cpu(), thread_cpu());
    Ok(json!({
        "records": events, "applied": applied, "view_changes": changes, "workers": workers,
        "batches": batches, "epochs": epochs,
        "view_changes_by_view": by_view,
        "seconds": round(seconds, 3),
        "events_per_second": round(events as f64 / seconds, 0),
        "thread_cpu_us_per_event": round((t1 - t0) * 1e6 / events as f64, 2),
        "process_cpu_us_per_event": round((p1 - p0) * 1e6 / events as f64, 2),
    }))
}

/// `AISPM_BENCH_ROLE=apply`: the apply-only run alone, for profiling (`perf record` on this
/// process), with `AISPM_BENCH_EVENTS` (default 200000), `AISPM_BENCH_ENTITIES` (one count, default
/// 1000), `AISPM_BENCH_TENANTS` and `AISPM_BENCH_WORKERS` (default 1); `AISPM_BENCH_SIGNED=1`
/// signs nine in ten evidence items (`LoadGen::signed`), so that their Ed25519 verification
/// is measured too (the other runs, as the targets, use unsigned evidence);
/// `AISPM_BENCH_CATCHUP=1` runs it as a catch-up (`catching_up`);
/// `AISPM_BENCH_COUNTERS_PER_EPOCH=0` publishes every changed row with its batch
/// (`--counters-per-epoch false`; the default, as the service's, publishes changes of running
/// counts alone once per epoch); `AISPM_BENCH_JUDGED_COUNTS=0` derives every changed row in
/// its batch to find whether its state changed (`Engine::with_judged_counts`; the default
/// leaves the rows an event is judged to change the counts of alone to the epoch's end).
fn apply_child() -> Result<()> {
    let events = env_or("AISPM_BENCH_EVENTS", 200_000);
    let entities = env_or("AISPM_BENCH_ENTITIES", 1_000) as usize;
    let tenants = env_or("AISPM_BENCH_TENANTS", 100) as usize;
    let workers = env_or("AISPM_BENCH_WORKERS", 1).max(1) as usize;
    let topics = Topics::with_prefix("bench.");
    println!(
        "{}",
        apply_only(&topics, events, tenants, entities, workers)?
    );
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// The Quix Streams and Kafka Streams comparison (decision topic only)

/// The project venv's Python (`$AISPM_PYTHON`, else `~/.cache/aispm/venv/bin/python`), if it
/// can import every one of `modules` (comma-separated); otherwise why not.
fn venv_python(modules: &str) -> std::result::Result<PathBuf, String> {
    let python = match std::env::var_os("AISPM_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set")?)
            .join(".cache/aispm/venv/bin/python"),
    };
    if !python.exists() {
        return Err(format!(
            "no Python venv at {} (run scripts/setup.sh)",
            python.display()
        ));
    }
    let out = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot import {} (run scripts/setup.sh)",
            python.display(),
            modules.replace(", ", " and ")
        ));
    }
    Ok(python)
}

/// The Python that runs `bench/quix/projection.py`.
fn quix_python() -> std::result::Result<PathBuf, String> {
    venv_python("quixstreams, fastavro")
}

/// The Python that runs `bench/quix/reference.py`.
fn reference_python() -> std::result::Result<PathBuf, String> {
    venv_python("confluent_kafka, fastavro")
}

fn quix_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/quix")
}

fn kstreams_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/kafka-streams")
}

/// The latest modification time of `path` and, for a directory, of everything under it.
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    let mut newest = meta.modified().ok();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).ok()?.flatten() {
            newest = newest.max(newest_mtime(&entry.path()));
        }
    }
    newest
}

static KSTREAMS_JAR: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
    std::sync::OnceLock::new();

/// The Kafka Streams app's runnable jar, built with Maven when it is missing or older than its
/// sources (`pom.xml`, `src/`); needs `java` (and then `mvn`) on PATH. Once per run; otherwise
/// why not.
fn kstreams_jar() -> std::result::Result<PathBuf, String> {
    KSTREAMS_JAR.get_or_init(build_kstreams_jar).clone()
}

fn build_kstreams_jar() -> std::result::Result<PathBuf, String> {
    let runs = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !runs("java", "-version") {
        return Err("no `java` on PATH (Java 17 or newer)".into());
    }
    let dir = kstreams_dir();
    let jar = dir.join("target/aispm-kstreams-bench.jar");
    let sources = newest_mtime(&dir.join("pom.xml")).max(newest_mtime(&dir.join("src")));
    let built = std::fs::metadata(&jar).and_then(|m| m.modified()).ok();
    if built.is_some() && built >= sources {
        return Ok(jar);
    }
    if !runs("mvn", "-v") {
        return Err("no `mvn` on PATH to build bench/kafka-streams".into());
    }
    eprintln!("building bench/kafka-streams (mvn package)");
    let out = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(dir.join("pom.xml"))
        .arg("package")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("mvn: {e}"))?;
    if !out.status.success() || !jar.exists() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("mvn package failed:\n{text}");
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!("mvn package failed: {last}"));
    }
    Ok(jar)
}

/// The last line of a child's stdout, as JSON.
fn last_json(out: &str, what: &str) -> Result<Value> {
    let line = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
    serde_json::from_str(line).with_context(|| format!("{what} printed no JSON line: {out}"))
}

/// Runs one comparison engine (`cmd`, which prints one JSON line like `projection.py`'s) under
/// `/usr/bin/time -v` until it processed every one of the topic's `records`; its figures, with
/// its `version` field (the engine's version) copied.
fn engine_run(cmd: Command, what: &str, records: u64, version: &str) -> Result<Value> {
    let (out, wall, tv) = run_timed(cmd, what)?;
    let v = last_json(&out, what)?;
    let read = v["records"].as_u64().unwrap_or(0);
    if read < records {
        bail!("{what} processed {read} records of {records}: {v}");
    }
    let cpu = tv.user + tv.sys;
    let run_s = v["seconds"].as_f64().unwrap_or(0.0);
    let run_cpu = v["cpu_seconds_run"].as_f64().unwrap_or(0.0);
    let mut r = json!({
        "records": read,
        "applied": v["applied"], "keys": v["keys"],
        "wall_seconds": round(wall, 3),
        "events_per_second": round(records as f64 / wall, 0),
        "cpu_seconds": round(cpu, 2),
        "cpu_us_per_event": round(cpu * 1e6 / records as f64, 2),
        "peak_rss_mib": round(tv.max_rss_kib / 1024.0, 1),
        "run_seconds": round(run_s, 3),
        "run_events_per_second": round(records as f64 / run_s.max(1e-9), 0),
        "run_cpu_us_per_event": round(run_cpu * 1e6 / records as f64, 2),
    });
    r[version] = v[version].clone();
    Ok(r)
}

/// `bench/quix/projection.py` as a child under `/usr/bin/time -v`, fresh RocksDB state, until
/// it processed every one of the topic's `records`.
fn quix_run(
    python: &Path,
    brokers: &str,
    topic: &str,
    records: u64,
    dump: Option<&Path>,
) -> Result<Value> {
    let state = tempfile::tempdir()?;
    let mut cmd = Command::new(python);
    cmd.arg(quix_dir().join("projection.py"))
        .args(["--brokers", brokers, "--topic", topic])
        .args(["--records", &records.to_string(), "--idle-timeout", "60"])
        .arg("--state-dir")
        .arg(state.path())
        .env("PYTHONWARNINGS", "ignore");
    if let Some(d) = dump {
        cmd.arg("--dump").arg(d);
    }
    engine_run(cmd, "the Quix Streams projection", records, "quixstreams")
}

/// The Kafka Streams app (`java -jar`, the JVM's defaults) as a child under `/usr/bin/time -v`,
/// a fresh application id and state directory, until it processed every one of the topic's
/// `records`.
fn kstreams_run(
    jar: &Path,
    brokers: &str,
    topic: &str,
    records: u64,
    dump: Option<&Path>,
) -> Result<Value> {
    let state = tempfile::tempdir()?;
    let mut cmd = Command::new("java");
    cmd.arg("-jar")
        .arg(jar)
        .args(["--brokers", brokers, "--topic", topic])
        .args(["--records", &records.to_string(), "--idle-timeout", "60"])
        .arg("--state-dir")
        .arg(state.path());
    if let Some(d) = dump {
        cmd.arg("--dump").arg(d);
    }
    engine_run(
        cmd,
        "the Kafka Streams projection",
        records,
        "kafka_streams",
    )
}

/// Checks an engine's dumped table row by row with `bench/quix/reference.py` (a plain consumer
/// and a dict) over the same records; `keys` is what the engine said it holds.
fn reference_check(
    brokers: &str,
    topic: &str,
    records: u64,
    dump: &Path,
    engine: &Value,
) -> Result<Value> {
    let python = reference_python().map_err(anyhow::Error::msg)?;
    let out = Command::new(python)
        .arg(quix_dir().join("reference.py"))
        .args(["--brokers", brokers, "--topic", topic])
        .args(["--records", &records.to_string(), "--compare"])
        .arg(dump)
        .stdin(Stdio::null())
        .output()
        .context("running bench/quix/reference.py")?;
    let mut reference = last_json(&String::from_utf8_lossy(&out.stdout), "reference.py")?;
    reference["engine_keys"] = engine["keys"].clone();
    Ok(reference)
}

/// A second, untimed Quix run that dumps its state, checked against `reference.py`.
fn quix_verify(python: &Path, brokers: &str, topic: &str, records: u64) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let dump = dir.path().join("quix-state.json");
    let quix = quix_run(python, brokers, topic, records, Some(&dump))?;
    reference_check(brokers, topic, records, &dump, &quix)
}

/// A second, untimed Kafka Streams run that dumps its table, checked against `reference.py`.
fn kstreams_verify(jar: &Path, brokers: &str, topic: &str, records: u64) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let dump = dir.path().join("kstreams-table.json");
    let ks = kstreams_run(jar, brokers, topic, records, Some(&dump))?;
    reference_check(brokers, topic, records, &dump, &ks)
}

/// An engine's row: its figures, or `{"skipped": why}` when it cannot run or failed.
fn engine_row(
    name: &str,
    switch: &str,
    prepare: impl FnOnce() -> std::result::Result<PathBuf, String>,
    run: impl FnOnce(&Path) -> Result<Value>,
) -> (Value, Option<PathBuf>) {
    if env_or(switch, 1) != 1 {
        return (json!({ "skipped": format!("{switch}=0") }), None);
    }
    let (v, ready) = match prepare() {
        Err(why) => (json!({ "skipped": why }), None),
        Ok(path) => match run(&path) {
            Ok(v) => (v, Some(path)),
            Err(e) => {
                let e = format!("{e:#}");
                let last = e.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                (
                    json!({ "skipped": format!("failed: {last}"), "error": e }),
                    None,
                )
            }
        },
    };
    match v.get("skipped") {
        Some(why) => eprintln!("{name}: skipped: {why}"),
        None => eprintln!("{name}: {v}"),
    }
    (v, ready)
}

/// The second, untimed run of an engine that ran, checked against `reference.py`, when
/// `switch` (default: at most 200 000 records) says so.
fn engine_verified(
    name: &str,
    switch: &str,
    records: u64,
    ready: Option<PathBuf>,
    verify: impl FnOnce(&Path) -> Result<Value>,
) -> Value {
    let verify_default = u64::from(records <= 200_000);
    match ready {
        Some(path) if env_or(switch, verify_default) == 1 => {
            let v = verify(&path)
                .unwrap_or_else(|e| json!({ "equal": false, "error": format!("{e:#}") }));
            eprintln!("{name} vs reference.py: {v}");
            v
        }
        _ => Value::Null,
    }
}

/// On the decision-only copy: the plain reader, the Quix Streams app, the Kafka Streams app and
/// the projector, each over the same decision records.
fn decision_comparison(brokers: &str, prefix: &str, topics: &Topics) -> Result<Value> {
    let topic = topics.decisions.as_str();
    let records = watermarks(brokers, &[topic])?
        .iter()
        .map(|h| u64::try_from(h.2).unwrap_or(0))
        .sum::<u64>();
    let reader = plain_reader(brokers, &[topic], records)?;
    eprintln!("plain reader (decisions only): {reader}");
    let (quix, quix_ready) = engine_row("Quix Streams", "AISPM_BENCH_QUIX", quix_python, |py| {
        quix_run(py, brokers, topic, records, None)
    });
    let (kstreams, kstreams_ready) = engine_row(
        "Kafka Streams",
        "AISPM_BENCH_KSTREAMS",
        kstreams_jar,
        |jar| kstreams_run(jar, brokers, topic, records, None),
    );
    let state = tempfile::tempdir()?;
    let projector = projector_rebuild(brokers, prefix, state.path(), records)?;
    eprintln!("projector (decisions only): {projector}");
    let mut floor = serde_json::Map::new();
    for (stage, name) in &Floor::ALL[1..] {
        let v = reader_run(brokers, &[topic], records, *stage, &topics.views)?;
        eprintln!("floor ({name}): {v}");
        floor.insert((*name).to_owned(), v);
    }
    let quix_verified = engine_verified(
        "Quix Streams",
        "AISPM_BENCH_QUIX_VERIFY",
        records,
        quix_ready,
        |py| quix_verify(py, brokers, topic, records),
    );
    let kstreams_verified = engine_verified(
        "Kafka Streams",
        "AISPM_BENCH_KSTREAMS_VERIFY",
        records,
        kstreams_ready,
        |jar| kstreams_verify(jar, brokers, topic, records),
    );
    let rate = |v: &Value| v["events_per_second"].as_f64().unwrap_or(0.0);
    let cpu = |v: &Value| v["cpu_us_per_event"].as_f64().unwrap_or(0.0);
    let ratios = |v: &Value| {
        if v.get("skipped").is_some() {
            return Value::Null;
        }
        json!({
            "events_per_second_to_projector": round(rate(v) / rate(&projector), 3),
            "cpu_us_per_event_to_projector": round(cpu(v) / cpu(&projector), 3),
            "peak_rss_to_projector": round(
                v["peak_rss_mib"].as_f64().unwrap_or(0.0)
                    / projector["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
                3,
            ),
        })
    };
    Ok(json!({
        "topic": topic, "records": records,
        "plain_reader": reader, "quix": quix, "kstreams": kstreams, "projector": projector,
        "reader_ratios": ratios(&reader), "quix_ratios": ratios(&quix),
        "kstreams_ratios": ratios(&kstreams),
        "quix_verified": quix_verified, "kstreams_verified": kstreams_verified,
        "floor": floor,
    }))
}

// ----------------------------------------------------------------------------------------------
// The suite

fn projector_rebuild(brokers: &str, prefix: &str, state: &Path, records: u64) -> Result<Value> {
    let mut cmd = Command::new(projector_binary()?);
    cmd.args(["--brokers", brokers, "--topic-prefix", prefix])
        .args(["--http-addr", "127.0.0.1:0", "--partitions", "6"])
        .arg("--state-dir")
        .arg(state)
        .arg("rebuild")
        .env("RUST_LOG", "warn")
        .env("AISPM_WAL", (env_or("AISPM_BENCH_WAL", 0) == 1).to_string());
    let (out, wall, tv) = run_timed(cmd, "aispm-projector rebuild")?;
    // "rebuilt: {applied} events applied from {records} records in {s} s (...)"
    let words: Vec<&str> = out.split_whitespace().collect();
    let num = |i: usize| {
        words
            .get(i)
            .and_then(|w| w.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (applied, read, internal) = (num(1), num(5), num(8));
    if (read as u64) < records {
        bail!("the projector read {read} records of {records}: {out}");
    }
    let cpu = tv.user + tv.sys;
    Ok(json!({
        "records": read, "applied": applied,
        "wall_seconds": round(wall, 3), "rebuild_seconds": round(internal, 3),
        "events_per_second": round(records as f64 / wall, 0),
        "cpu_seconds": round(cpu, 2),
        "cpu_us_per_event": round(cpu * 1e6 / records as f64, 2),
        "peak_rss_mib": round(tv.max_rss_kib / 1024.0, 1),
        "state_mib": round(aispm_tests::process::dir_bytes(state) as f64 / 1_048_576.0, 1),
    }))
}

fn plain_reader(brokers: &str, topics: &[&str], records: u64) -> Result<Value> {
    reader_run(brokers, topics, records, Floor::Read, "")
}

/// The reader child over `topics`, doing `floor`'s share of the projector's work (publishing to
/// `views`).
fn reader_run(
    brokers: &str,
    topics: &[&str],
    records: u64,
    floor: Floor,
    views: &str,
) -> Result<Value> {
    let mut cmd = Command::new(self_exe());
    cmd.env("AISPM_BENCH_ROLE", "reader")
        .env("AISPM_BENCH_FLOOR", floor.name())
        .env("AISPM_BENCH_VIEWS_TOPIC", views)
        .env("AISPM_BENCH_BROKERS", brokers)
        .env("AISPM_BENCH_TOPICS", topics.join(","));
    let (out, wall, tv) = run_timed(cmd, &format!("reader ({})", floor.name()))?;
    let v: Value = serde_json::from_str(out.trim()).context("reader output")?;
    let read = v["records"].as_u64().unwrap_or(0);
    if read < records {
        bail!("the plain reader read {read} records of {records}: {v}");
    }
    if v["undecoded"].as_u64().unwrap_or(0) > 0 {
        bail!(
            "the reader ({}) could not decode every record: {v}",
            floor.name()
        );
    }
    let cpu = tv.user + tv.sys;
    Ok(json!({
        "records": read, "applied": v["applied"],
        "wall_seconds": round(wall, 3),
        "reading_seconds": round(v["seconds"].as_f64().unwrap_or(0.0), 3),
        "events_per_second": round(records as f64 / wall, 0),
        "cpu_seconds": round(cpu, 2),
        "cpu_us_per_event": round(cpu * 1e6 / records as f64, 2),
        "peak_rss_mib": round(tv.max_rss_kib / 1024.0, 1),
    }))
}

fn scenario(events: u64, tenants: usize, entities: usize) -> Result<Value> {
    eprintln!("== {events} events, {entities} entities, {tenants} tenants");
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let prefix = random_prefix();
    let rt = tokio::runtime::Runtime::new()?;
    let topics = rt.block_on(create_contract_topics(&brokers, &prefix, PARTITIONS))?;
    // The decision-only comparison reads a copy of the decision records under its own prefix,
    // so the projector can run over exactly those records too (its other inputs empty there).
    let compare = env_or("AISPM_BENCH_QUIX", 1) == 1 || env_or("AISPM_BENCH_KSTREAMS", 1) == 1;
    let copy_prefix = random_prefix();
    let copy = if compare {
        Some(rt.block_on(create_contract_topics(&brokers, &copy_prefix, PARTITIONS))?)
    } else {
        None
    };
    let filled = fill(&brokers, &topics, copy.as_ref(), events, tenants, entities)?;
    eprintln!(
        "filled: {} records in {:.1} s ({:.0}/s)",
        filled.records,
        filled.seconds,
        filled.records as f64 / filled.seconds
    );
    let reader = plain_reader(&brokers, &topics.inputs(), filled.records)?;
    eprintln!("plain reader: {reader}");
    let state = tempfile::tempdir()?;
    let projector = projector_rebuild(&brokers, &prefix, state.path(), filled.records)?;
    eprintln!("projector (fresh state): {projector}");
    let again = if env_or("AISPM_BENCH_REBUILD_TWICE", 0) == 1 {
        let v = projector_rebuild(&brokers, &prefix, state.path(), filled.records)?;
        eprintln!("projector rebuild (wipe + replay): {v}");
        v
    } else {
        Value::Null
    };
    let decisions_only = match &copy {
        Some(c) => decision_comparison(&brokers, &copy_prefix, c)?,
        None => Value::Null,
    };
    drop(broker);
    let apply = apply_only(&topics, events, tenants, entities, 1)?;
    eprintln!("apply-only: {apply}");
    let workers = bench_workers();
    let apply_workers = if workers > 1 {
        let v = apply_only(&topics, events, tenants, entities, workers)?;
        eprintln!("apply-only on {workers} workers: {v}");
        v
    } else {
        Value::Null
    };
    let rate = |v: &Value| v["events_per_second"].as_f64().unwrap_or(0.0);
    let cpu = |v: &Value| v["cpu_us_per_event"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "events": events, "entities": entities, "tenants": tenants,
        "by_topic": filled.by_topic,
        "fill_events_per_second": round(filled.records as f64 / filled.seconds, 0),
        "plain_reader": reader,
        "projector": projector,
        "projector_rebuild_over_existing_state": again,
        "ratio_projector_to_reader": round(rate(&projector) / rate(&reader), 3),
        "cpu_ratio_projector_to_reader": round(cpu(&projector) / cpu(&reader), 2),
        "apply_only": apply,
        "apply_only_workers": apply_workers,
        "decisions_only": decisions_only,
    }))
}

fn memory_run() -> Result<Value> {
    let mut cmd = Command::new(self_exe());
    cmd.env("AISPM_BENCH_ROLE", "memory");
    let (out, wall, tv) = run_timed(cmd, "memory run")?;
    let mut v: Value = serde_json::from_str(out.trim()).context("memory run output")?;
    v["wall_seconds"] = json!(round(wall, 1));
    v["time_v_max_rss_mib"] = json!(round(tv.max_rss_kib / 1024.0, 1));
    Ok(v)
}

fn markdown(report: &Value) -> String {
    let mut s = String::new();
    s.push_str("### Projector\n\n");
    s.push_str(&format!(
        "{}\n\n",
        report["conditions"].as_str().unwrap_or("")
    ));
    s.push_str("| events | entities | plain reader ev/s | projector ev/s | ratio | reader CPU-µs/ev | projector CPU-µs/ev | projector peak RSS MiB | projector state MiB | rebuild s | apply-only ev/s | apply-only CPU-µs/ev | apply-only ev/s, all workers |\n");
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for sc in report["scenarios"].as_array().into_iter().flatten() {
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} | {} |\n",
            sc["events"],
            sc["entities"],
            f(&sc["plain_reader"]["events_per_second"]),
            f(&sc["projector"]["events_per_second"]),
            f(&sc["ratio_projector_to_reader"]),
            f(&sc["plain_reader"]["cpu_us_per_event"]),
            f(&sc["projector"]["cpu_us_per_event"]),
            f(&sc["projector"]["peak_rss_mib"]),
            f(&sc["projector"]["state_mib"]),
            f(&sc["projector"]["wall_seconds"]),
            f(&sc["apply_only"]["events_per_second"]),
            f(&sc["apply_only"]["thread_cpu_us_per_event"]),
            match sc["apply_only_workers"]["events_per_second"].as_f64() {
                Some(r) => format!("{r:.0} ({})", sc["apply_only_workers"]["workers"]),
                None => "–".into(),
            },
        ));
    }
    let compared: Vec<&Value> = report["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|sc| !sc["decisions_only"].is_null())
        .collect();
    if !compared.is_empty() {
        s.push_str(&comparison_markdown(&compared));
    }
    if let Some(m) = report.get("memory").filter(|m| !m.is_null()) {
        s.push_str(&format!(
            "\nMemory run (engine only, service default caches, events generated on the fly): {} events over {} entities, peak RSS {:.0} MiB, {:.0} s.\n",
            m["events"], m["entities"], m["peak_rss_mib"].as_f64().unwrap_or(0.0),
            m["seconds"].as_f64().unwrap_or(0.0),
        ));
    }
    s
}

/// The decision-only comparison table: plain reader, projector, Quix Streams and Kafka Streams.
fn comparison_markdown(scenarios: &[&Value]) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut s = String::from(
        "\n#### Same projection in Quix Streams and Kafka Streams (decision topic only)\n\n\
         Each over the same decision records (a copy of the scenario's decision topic, 6 partitions), \
         each a child process: the plain reader, the projector (`rebuild`, every view, its other \
         inputs empty), `bench/quix/projection.py` (Quix Streams, its defaults: RocksDB state with \
         changelog topics, at-least-once) and `bench/kafka-streams/` (Kafka Streams, exactly_once_v2: \
         event ids in a persistent RocksDB store, a repartition topic by (tenant, agent), a \
         RocksDB-backed `KTable`, changelog topics for both stores; the JVM's defaults). Both \
         engines count open findings (AISPM-APR-001) and last-seen per tenant and agent. Rates are \
         records / wall time of the whole process; CPU is user + sys of the whole process \
         (`/usr/bin/time -v`), start-up included, so CPU-µs/event is also CPU-s per million \
         events. \"Checked\": a second, untimed run's table against `bench/quix/reference.py`, row \
         by row.\n\n\
         | decision records | entities | engine | ev/s | CPU-µs/ev | peak RSS MiB | ÷ projector ev/s | ÷ projector CPU | ÷ projector RSS | (tenant, agent) keys | checked against reference |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for sc in scenarios {
        let d = &sc["decisions_only"];
        let engines = [
            (
                "plain reader",
                &d["plain_reader"],
                &d["reader_ratios"],
                &Value::Null,
            ),
            ("projector", &d["projector"], &Value::Null, &Value::Null),
            (
                "Quix Streams",
                &d["quix"],
                &d["quix_ratios"],
                &d["quix_verified"],
            ),
            (
                "Kafka Streams",
                &d["kstreams"],
                &d["kstreams_ratios"],
                &d["kstreams_verified"],
            ),
        ];
        for (name, e, ratios, verified) in engines {
            if e.is_null() {
                continue;
            }
            let cells: Vec<String> = match e.get("skipped").and_then(Value::as_str) {
                Some(why) => std::iter::once(format!("skipped: {why}"))
                    .chain(std::iter::repeat_n("–".to_owned(), 7))
                    .collect(),
                None => {
                    let ratio = |k: &str| {
                        if name == "projector" {
                            "1".to_owned()
                        } else {
                            format!("{:.2}", f(&ratios[k]))
                        }
                    };
                    let checked = if name == "plain reader" || name == "projector" {
                        "–".to_owned()
                    } else if verified.is_null() {
                        "not run".to_owned()
                    } else if verified["equal"].as_bool() == Some(true) {
                        format!("equal ({} rows)", verified["keys"])
                    } else {
                        format!("DIFFERS: {verified}")
                    };
                    vec![
                        format!("{:.0}", f(&e["events_per_second"])),
                        format!("{:.2}", f(&e["cpu_us_per_event"])),
                        format!("{:.0}", f(&e["peak_rss_mib"])),
                        ratio("events_per_second_to_projector"),
                        ratio("cpu_us_per_event_to_projector"),
                        ratio("peak_rss_to_projector"),
                        e.get("keys").map_or("–".to_owned(), Value::to_string),
                        checked,
                    ]
                }
            };
            s.push_str(&format!(
                "| {} | {} | {name} | {} |\n",
                d["records"],
                sc["entities"],
                cells.join(" | "),
            ));
        }
    }
    s.push_str(
        "\n#### The contract's floor (decision topic only)\n\n\
         What every decision costs any projector before a single aggregate, finding or coverage \
         row, measured stage by stage by the reader child over the same decision records (each \
         stage adds to the one before; CPU is user + sys of the whole process): **read** (the \
         plain reader), **decode** (into `DecisionEvent`), **store** (per 10 000-record batch: \
         each event id looked up in RocksDB and stored, the evidence row of each decision that \
         carries evidence, the offsets, one `WriteBatch` with the WAL, the projector's RocksDB \
         settings), **publish** (each evidence row's view change Avro-encoded and published to \
         the views topic after the write, every acknowledgement awaited).\n\n\
         | decision records | entities | read CPU-µs/ev | decode | store | publish | publish ev/s | projector CPU-µs/ev | projector ÷ floor |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for sc in scenarios {
        let d = &sc["decisions_only"];
        let cpu = |v: &Value| f(&v["cpu_us_per_event"]);
        let fl = &d["floor"];
        if fl.get("publish").is_none() {
            continue;
        }
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.1} |\n",
            d["records"],
            sc["entities"],
            cpu(&d["plain_reader"]),
            cpu(&fl["decode"]),
            cpu(&fl["store"]),
            cpu(&fl["publish"]),
            f(&fl["publish"]["events_per_second"]),
            cpu(&d["projector"]),
            cpu(&d["projector"]) / cpu(&fl["publish"]).max(f64::MIN_POSITIVE),
        ));
    }
    s
}

/// When a binary was built (its modification time, UTC), so figures name the build they measured.
fn built_at(path: &Path) -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ", "-r"])
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "at an unknown time".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench")
}

/// This bench's own executable, for its child roles. Through `/proc/{pid}/exe`, which stays
/// valid while this process runs even if a concurrent `cargo bench` replaces the file.
fn self_exe() -> PathBuf {
    PathBuf::from(format!("/proc/{}/exe", std::process::id()))
}

/// A private copy of `aispm-projector` (and when it was built), made once per run, so that
/// every scenario measures the same build even if a concurrent `cargo build` replaces the one
/// in `target/`.
struct Pinned {
    dir: tempfile::TempDir,
    path: PathBuf,
    built_at: String,
}

static PINNED_PROJECTOR: std::sync::OnceLock<Pinned> = std::sync::OnceLock::new();

fn pinned_projector() -> Result<&'static Pinned> {
    if let Some(p) = PINNED_PROJECTOR.get() {
        return Ok(p);
    }
    let built = match std::env::var_os("AISPM_BENCH_PROJECTOR_BIN") {
        Some(p) => PathBuf::from(p),
        None => binary("aispm-projector")?,
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("aispm-projector");
    std::fs::copy(&built, &path).with_context(|| format!("copying {}", built.display()))?;
    let pinned = Pinned {
        built_at: built_at(&built),
        path,
        dir,
    };
    Ok(PINNED_PROJECTOR.get_or_init(|| pinned))
}

fn projector_binary() -> Result<PathBuf> {
    Ok(pinned_projector()?.path.clone())
}

fn suite() -> Result<()> {
    let events = env_or("AISPM_BENCH_EVENTS", 1_000_000);
    let tenants = env_or("AISPM_BENCH_TENANTS", 100) as usize;
    let entities: Vec<usize> = std::env::var("AISPM_BENCH_ENTITIES")
        .unwrap_or_else(|_| "1000,100000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    pinned_projector()?;
    if env_or("AISPM_BENCH_KSTREAMS", 1) == 1 {
        // Any Maven build of the Kafka Streams jar happens now, before anything is measured.
        if let Err(why) = kstreams_jar() {
            eprintln!("Kafka Streams: will be skipped: {why}");
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut scenarios = Vec::new();
    for e in &entities {
        scenarios.push(scenario(events, tenants, *e)?);
    }
    let memory = if env_or("AISPM_BENCH_MEMORY_EVENTS", 2_000_000) > 0 {
        eprintln!("== memory run");
        Some(memory_run()?)
    } else {
        None
    };
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let kafka = aispm_tests::broker::kafka_home()
        .ok()
        .and_then(|h| std::fs::read_to_string(h.join("VERSION")).ok())
        .map_or_else(|| "(unknown version)".to_owned(), |v| v.trim().to_owned());
    let conditions = format!(
        "{cores} cores; load average before {}, after {}; Apache Kafka {kafka} (one KRaft node) on 127.0.0.1; 6 partitions per topic; {tenants} tenants; aispm-projector built {}.",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_after
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        pinned_projector()?.built_at,
    );
    let report = json!({
        "conditions": conditions,
        "scenarios": scenarios,
        "memory": memory,
        "targets": {
            "projector_to_reader_ratio_min": 0.6,
            "apply_only_events_per_second_min": 300000,
            "rebuild_1m_seconds_max": 10,
            "peak_rss_mib_max_10m_over_100k_entities": 256,
            "projector_cpu_us_per_event_max": 2,
            "projector_cpu_to_quix_max": 0.1,
        },
    });
    let md = markdown(&report);
    println!("{md}");
    let dir = out_dir();
    // A tagged run (scripts/bench.sh with AISPM_BENCH_SCALE=1) is one point of the scale
    // table: it writes bench/scale/projector-{tag}.json and leaves the main results alone.
    if let Ok(tag) = std::env::var("AISPM_BENCH_TAG") {
        let dir = dir.join("scale");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("projector-{tag}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        std::fs::write(dir.join(format!("projector-{tag}.md")), &md)?;
        eprintln!("wrote {}", path.display());
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("projector.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(dir.join("projector.md"), &md)?;
    let results = dir.join("results.json");
    let mut all: Value = std::fs::read_to_string(&results)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    all["projector"] = report;
    std::fs::write(&results, serde_json::to_string_pretty(&all)?)?;
    eprintln!("wrote {}", dir.join("projector.json").display());
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` would too, with a filter.
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    // As every service does at start (the in-process runs stand in for the projector).
    aispm_runtime::malloc::limit_arenas();
    match std::env::var("AISPM_BENCH_ROLE").as_deref() {
        Ok("reader") => reader_child(),
        Ok("memory") => memory_child(),
        Ok("apply") => apply_child(),
        _ => {
            let result = suite();
            // Statics are not dropped: remove the pinned copy of the projector here.
            if let Some(p) = PINNED_PROJECTOR.get() {
                let _ = std::fs::remove_dir_all(p.dir.path());
            }
            result
        }
    }
}
