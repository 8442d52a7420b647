//! `aispm-projector`: folds the input topics (decisions, approvals, registry, report
//! deliveries) into RocksDB views with exactly-once effects, publishes every view change to the
//! compacted views topic, and serves the views over HTTP.
//!
//! Exactly-once: the next offset of every topic-partition is written in the same RocksDB
//! `WriteBatch` as the changes its records made; on start and on every assignment the consumer
//! seeks to those offsets. Duplicated events (same `event_id`) are applied once. Views are pure
//! functions of order-free aggregates, so any batching, duplication or cross-topic
//! interleaving of the same events gives the same views.
//!
//! # Layout
//! - [`consumer`]: the Kafka loop, batching, the rebalance hook that seeks to stored offsets;
//!   [`catchup`]: a partition taken is replayed to its end before its tenants' rows publish.
//! - [`project`]: the engine: a batch of records → one atomic write + view changes + dead letters.
//! - [`apply`]: one event → aggregate updates + dirty rows; [`state`]: the aggregates.
//! - [`derive`](mod@derive): rows from aggregates; [`signatures`]: evidence and validation
//!   signatures checked against the tenant's trust roots with `aispm_schemas::signature`.
//! - [`rules`]: the finding rules, one file per family: for each rule of the catalog, the
//!   changes that make its row worth deriving again and the condition that decides it.
//! - [`batch`]: a batch's working set over RocksDB and a bounded cache; [`filter`]: which keys
//!   may exist, so that reads of keys that cannot are skipped.
//! - [`store`]: RocksDB, column families (`store/columns.rs`), keys.
//! - [`publish`]: the outbox → views topic; [`api`], [`posture`](mod@posture): the HTTP query API.
//! - [`as_of`]: the views as of a past instant, replayed from the events kept in `seen` into a
//!   scratch database (`?as_of=` on every tenant route), from the newest of [`checkpoints`]
//!   at or before it: each tenant's views as of instants along its history, kept on disk;
//!   both feed kept events into a scratch database through [`replay`].
//! - [`metrics`]: the `aispm_projector_*` metrics; [`crash`]: the crash points the kill -9 tests
//!   stop a debug build at, one per step of the commit protocol.
//!
//! # The road of one decision
//! 1. [`consumer`]: `Loop::run` polls it with the rest of a batch (up to `--batch-max-records`).
//! 2. [`project`]: `Engine::prepare` decodes it (`aispm_schemas::Codec`, dead-lettering what
//!    does not decode or validate), drops a duplicate `event_id` (asked of [`filter`] first,
//!    then of the `seen` keys), and hands it to its tenant's worker.
//! 3. [`apply`]: `apply` → `decision` folds it into the aggregates of [`state`] (coverage,
//!    controls, links, evidence…), says what changed (`rules::fire`) and raises the findings
//!    whose [`rules`] read those changes.
//! 4. [`derive`](mod@derive): each row it made dirty is derived anew from its aggregates.
//! 5. [`project`]: `Engine::commit` writes the aggregates, the changed rows, the outbox of view
//!    changes and the next offsets in one RocksDB batch ([`store`]).
//! 6. [`publish`]: `Publisher::publish` sends the outbox to `aispm.views.v1`; once every change
//!    is acknowledged the outbox is cleared and the consumer commits the offsets to Kafka. The
//!    gatekeeper's road starts there.
//!
//! # Adding a view
//! 1. Add the row record to `schemas/avro/view_change.avsc` (the `row` union) and `schemas/src/views.rs`.
//! 2. Add its column family to `store/columns.rs::VIEWS` and bump `store::VIEW_VERSION`.
//! 3. Fold events into an aggregate in `apply.rs` (commutative updates only) and mark rows dirty.
//! 4. Derive the row in `derive.rs`; serve it in `api.rs`; describe it in `docs/views.md`.

#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the module map above is for developers of aispm: `cargo doc --document-private-items`"
)]

mod api;
mod apply;
pub mod as_of;
mod batch;
mod catchup;
pub mod checkpoints;
mod consumer;
mod crash;
mod derive;
mod error;
mod filter;
mod metrics;
mod posture;
mod project;
mod publish;
mod replay;
mod rules;
mod signatures;
mod state;
pub mod store;

// What the projector's binary, benches and tests use besides `store`: the engine a batch goes
// through, the event-folding settings, the state rules the API names, and the posture.
pub use api::{evidence_freshness, exception_state, sla_state};
pub use error::Error;
pub use posture::compute as posture;
pub use project::{Ended, Engine, Input, Memory, Outgoing, Sink, decode_row};
pub use rules::Settings;

use crate::consumer::{Batching, Ctx, Loop, Totals};
use crate::error::Result;
use crate::publish::Publisher;
use aispm_runtime::auth::Auth;
use aispm_runtime::config::{ClockArgs, CommonArgs};
use aispm_runtime::dlq::DeadLetters;
use aispm_runtime::health::Health;
use aispm_runtime::kafka::{KafkaMetrics, TopicSpec};
use aispm_runtime::metrics::Metrics;
use aispm_runtime::supervise::Supervisor;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, Producer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The projector's configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    /// The HTTP server's flags (TLS, failed-authentication throttling).
    #[command(flatten)]
    pub http: aispm_runtime::http::HttpArgs,

    /// Address of the HTTP API (views, posture, metrics, health).
    #[arg(long, env = "AISPM_HTTP_ADDR", default_value = "127.0.0.1:8081")]
    pub http_addr: SocketAddr,

    /// Directory of the projector's RocksDB.
    #[arg(long, env = "AISPM_STATE_DIR", default_value = "state/projector")]
    pub state_dir: PathBuf,

    /// Consumer group of the projector instances.
    #[arg(long, env = "AISPM_PROJECTOR_GROUP", default_value = "aispm-projector")]
    pub group: String,

    /// Static group membership (Kafka's `group.instance.id`) for instances that restart in
    /// place (e.g. a StatefulSet pod with its own state volume): a restarted instance reclaims
    /// its partitions at once instead of waiting for the group to expire its old member.
    /// Without it, membership is dynamic: a stopped instance leaves the group and its
    /// partitions move to the others.
    #[arg(long, env = "AISPM_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Most records per batch (one RocksDB write per batch). Bigger batches cost less per
    /// event: what a batch touches many times is derived and written once.
    #[arg(long, env = "AISPM_BATCH_MAX", default_value_t = Config::DEFAULT_BATCH_MAX)]
    pub batch_max: usize,

    /// Batches are cut shorter than `--batch-max` so that one holds about this many distinct
    /// aggregates decoded in memory (about 1 KiB each; a read of one known not to exist holds
    /// none), judged from the batches before: it bounds a batch's memory when records spread
    /// over many entities.
    #[arg(long, env = "AISPM_BATCH_MAX_AGGREGATES", default_value_t = Config::DEFAULT_BATCH_MAX_AGGREGATES)]
    pub batch_max_aggregates: usize,

    /// Threads a batch is applied on, its tenants split between them (tenants share no state);
    /// 0: one per available core. Decoding, the RocksDB write and publishing stay on one
    /// thread.
    #[arg(long, env = "AISPM_APPLY_WORKERS", default_value_t = 0)]
    pub apply_workers: usize,

    /// Longest a batch waits to fill once it has a record.
    #[arg(long, env = "AISPM_BATCH_WAIT", value_parser = humantime::parse_duration, default_value = "20ms")]
    pub batch_wait: Duration,

    /// Row digests kept in memory (change detection), and a tenth as many decoded aggregates,
    /// those at most 4 KiB each on average by their estimated size (an aggregate's decoded
    /// size grows with its history); the rest is read from RocksDB.
    #[arg(long, env = "AISPM_CACHE_ENTRIES", default_value_t = 100_000)]
    pub cache_entries: usize,

    /// RocksDB block cache size in bytes.
    #[arg(long, env = "AISPM_BLOCK_CACHE_BYTES", default_value_t = Budget::DEFAULT_BLOCK_CACHE)]
    pub block_cache_bytes: usize,

    /// RocksDB's memtables, all column families together, in bytes: a flush of the state
    /// begins when they fill (or at `--flush-interval`), and an epoch's write (up to
    /// `--epoch-bytes`) is copied into them. Smaller: less memory, more flushes and
    /// compactions (at least 2 MiB; docs/operations.md, "Sizing the projector's memory").
    #[arg(long, env = "AISPM_WRITE_BUFFER_BYTES", default_value_t = Budget::DEFAULT_WRITE_BUFFERS)]
    pub write_buffer_bytes: usize,

    /// fsync every batch (survives power loss, not only a process crash); slower. Implies
    /// `--wal`.
    #[arg(long, env = "AISPM_SYNC_WRITES")]
    pub sync_writes: bool,

    /// Log every batch in RocksDB's write-ahead log. Off by default: a batch's state, rows and
    /// offsets are durable at the next flush (atomic across column families), and a crash
    /// replays the input topics from the flushed offsets, publishing what the replay changed
    /// once it reaches the end the topics had at start (`docs/reliability.md`).
    #[arg(long, env = "AISPM_WAL")]
    pub wal: bool,

    /// Without `--wal`, the longest time between two flushes of the state and its offsets
    /// (RocksDB also flushes whenever its memtables fill): what a crash makes the projector
    /// replay.
    #[arg(long, env = "AISPM_FLUSH_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
    pub flush_interval: Duration,

    /// Without `--wal`, the longest an epoch lasts while the input keeps coming: batches are
    /// applied in memory and published one by one, and what an epoch's batches changed is
    /// written to RocksDB once when it ends, each key once (an idle input, a flush, a catch-up
    /// that ends or a stop end it sooner). The API reads the state as of the last epoch
    /// written. While partitions catch up (nothing of theirs is published until they reach
    /// their end), epochs last up to `--flush-interval`.
    #[arg(long, env = "AISPM_EPOCH_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub epoch_interval: Duration,

    /// How often the rows live batches changed are derived and published: each changed row
    /// once per interval, with the values the state has then, however many batches changed it
    /// (a busy row, an agent's coverage or a control's, is derived and published once, not
    /// once per batch). A batch after a quiet interval is published at once; an idle input or
    /// an epoch's end publishes what waits. `0s` (the default): every batch, as it is applied,
    /// the lowest latency. Worth setting (e.g. `100ms`) when few tenants carry many events per
    /// second: fewer view changes for the gatekeeper and the topic (docs/performance.md).
    #[arg(long, env = "AISPM_PUBLISH_INTERVAL", value_parser = humantime::parse_duration, default_value = "0s")]
    pub publish_interval: Duration,

    /// Publish a changed row at once only when its state changed (a new or deleted row, a
    /// status, an owner, a mode, a shadow flag, a count leaving zero, a risk score…), and a
    /// change of its running counts alone (one more decision on a coverage row, one more
    /// occurrence of a finding) once, when the epoch ends (`--epoch-interval`): the views
    /// topic's contract, each changed row once per epoch. What the gatekeeper's verdicts read
    /// arrives as fast as before; a busy row's counts arrive up to an epoch later, in far
    /// fewer records (docs/performance.md). `false`: every changed row with its batch.
    #[arg(
        long,
        env = "AISPM_COUNTERS_PER_EPOCH",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub counters_per_epoch: bool,

    /// An epoch ends when what it holds in memory (aggregates decoded, rows, event ids, all
    /// estimated) passes this many bytes.
    #[arg(long, env = "AISPM_EPOCH_BYTES", default_value_t = Config::DEFAULT_EPOCH_BYTES)]
    pub epoch_bytes: usize,

    /// Decisions per agent per minute (event time) above which the agent is runaway
    /// (AISPM-RUN-001).
    #[arg(long, env = "AISPM_RUNAWAY_PER_MINUTE", default_value_t = 120)]
    pub runaway_per_minute: i64,

    /// Attempts of the same call (action kind, MCP tool and target) by one agent in a minute
    /// that make a loop (AISPM-RUN-002).
    #[arg(long, env = "AISPM_LOOP_REPEATS", default_value_t = 30, value_parser = clap::value_parser!(i64).range(2..))]
    pub loop_repeats: i64,

    /// Denied decisions of one agent in a minute that make a denial storm (AISPM-RUN-003).
    #[arg(long, env = "AISPM_DENIALS_PER_MINUTE", default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..))]
    pub denials_per_minute: i64,

    /// Attempts of a call denied at least once in a minute that make a retry burst
    /// (AISPM-RUN-004).
    #[arg(long, env = "AISPM_RETRIES_PER_MINUTE", default_value_t = 5, value_parser = clap::value_parser!(i64).range(2..))]
    pub retries_per_minute: i64,

    /// The clock rules' windows (`aispm_schemas::clock`), the gatekeeper's flags: the API's
    /// states (`sla_state`, exception `state`, evidence staleness in `/posture`) and the
    /// break-glass finding (a review later than `--break-glass-review-window` after the
    /// invocation raises one) judge with them.
    #[command(flatten)]
    pub clock: ClockArgs,

    /// How far an event's `occurred_at` may lie after its Kafka record's timestamp; a later
    /// one is dead-lettered (`future_occurred_at`). Judged against the record timestamp, not
    /// the wall clock, so a replay decides the same way.
    #[arg(long, env = "AISPM_FUTURE_TOLERANCE", value_parser = humantime::parse_duration, default_value = "5m")]
    pub future_tolerance: Duration,

    /// A scope granted to an API key and not exercised by its decisions (`scopes_used`) for
    /// this long before the key's newest use is over-privilege (AISPM-KEY-002).
    #[arg(long, env = "AISPM_UNUSED_SCOPE_WINDOW", value_parser = humantime::parse_duration, default_value = "30d")]
    pub unused_scope_window: Duration,

    /// Distinct actors an agent acted for from which the identity view calls it unusual
    /// (`many_actors`).
    #[arg(long, env = "AISPM_ACTORS_PER_AGENT", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub actors_per_agent: u64,

    /// A replay checkpoint of a tenant's views is made every this many of its events (in the
    /// order they occurred), so a request `as_of` a past instant replays about this many events
    /// plus those since the newest checkpoint instead of the whole history; 0: none are made.
    /// Each takes disk under `--state-dir` (table files are shared between a tenant's
    /// checkpoints); at most 32 are kept per tenant, evenly spaced.
    #[arg(long, env = "AISPM_AS_OF_CHECKPOINT_EVENTS", default_value_t = 100_000)]
    pub as_of_checkpoint_events: usize,

    /// How often the tenants' replay checkpoints are extended (a walk of each tenant's kept
    /// event ids).
    #[arg(long, env = "AISPM_AS_OF_CHECKPOINT_INTERVAL", value_parser = humantime::parse_duration, default_value = "5m")]
    pub as_of_checkpoint_interval: Duration,
}

impl Config {
    /// `--batch-max`'s default.
    pub const DEFAULT_BATCH_MAX: usize = 50_000;
    /// `--batch-max-aggregates`' default.
    pub const DEFAULT_BATCH_MAX_AGGREGATES: usize = 50_000;
    /// `--epoch-bytes`' default.
    pub const DEFAULT_EPOCH_BYTES: usize = 64 * 1024 * 1024;

    /// Defaults for tests and embedding.
    pub fn local(brokers: &str, state_dir: PathBuf) -> Self {
        Config {
            common: CommonArgs::local(brokers),
            http: aispm_runtime::http::HttpArgs::default(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir,
            group: "aispm-projector".into(),
            instance_id: None,
            batch_max: Config::DEFAULT_BATCH_MAX,
            batch_max_aggregates: Config::DEFAULT_BATCH_MAX_AGGREGATES,
            apply_workers: 0,
            batch_wait: Duration::from_millis(20),
            cache_entries: 100_000,
            block_cache_bytes: Budget::DEFAULT_BLOCK_CACHE,
            write_buffer_bytes: Budget::DEFAULT_WRITE_BUFFERS,
            sync_writes: false,
            wal: false,
            flush_interval: Duration::from_secs(10),
            epoch_interval: Duration::from_secs(1),
            publish_interval: Duration::ZERO,
            counters_per_epoch: true,
            epoch_bytes: Config::DEFAULT_EPOCH_BYTES,
            runaway_per_minute: 120,
            loop_repeats: 30,
            denials_per_minute: 20,
            retries_per_minute: 5,
            clock: ClockArgs::default(),
            future_tolerance: aispm_schemas::time::DEFAULT_FUTURE_TOLERANCE,
            unused_scope_window: Duration::from_secs(30 * 86_400),
            actors_per_agent: 50,
            as_of_checkpoint_events: 100_000,
            as_of_checkpoint_interval: Duration::from_secs(300),
        }
    }

    /// When a batch's write is durable: `--sync-writes`, `--wal`, or at the next flush.
    pub fn durability(&self) -> Durability {
        if self.sync_writes {
            Durability::Synced
        } else if self.wal {
            Durability::Logged
        } else {
            Durability::Flushed
        }
    }

    /// What RocksDB may hold in memory: `--block-cache-bytes` and `--write-buffer-bytes`.
    pub fn store_budget(&self) -> Budget {
        Budget {
            block_cache: self.block_cache_bytes,
            write_buffers: self.write_buffer_bytes,
        }
    }

    /// `--apply-workers`, with 0 resolved to the available cores.
    pub fn workers(&self) -> usize {
        match self.apply_workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        }
    }

    pub fn settings(&self) -> rules::Settings {
        rules::Settings {
            runaway_per_minute: self.runaway_per_minute,
            loop_repeats: self.loop_repeats,
            denials_per_minute: self.denials_per_minute,
            retries_per_minute: self.retries_per_minute,
            break_glass_review_ms: i64::try_from(self.clock.break_glass_review_window.as_millis())
                .unwrap_or(i64::MAX),
            future_tolerance: self.future_tolerance,
            unused_scope_ms: i64::try_from(self.unused_scope_window.as_millis())
                .unwrap_or(i64::MAX),
            approval_decision_ms: i64::try_from(self.clock.approval_decision_window.as_millis())
                .unwrap_or(i64::MAX),
        }
    }
}

struct Parts {
    metrics: Metrics,
    health: Health,
    engine: Engine,
    consumer: BaseConsumer<Ctx>,
    publisher: Publisher,
    dead_letters: DeadLetters,
    pm: metrics::ProjectorMetrics,
}

impl Parts {
    fn into_loop(
        self,
        config: &Config,
        until: Option<std::collections::BTreeMap<(String, i32), i64>>,
    ) -> Loop {
        Loop {
            consumer: self.consumer,
            engine: self.engine,
            publisher: self.publisher,
            dead_letters: self.dead_letters,
            metrics: self.pm,
            batching: Batching {
                max_records: config.batch_max,
                max_aggregates: config.batch_max_aggregates,
                max_wait: config.batch_wait,
                epoch_interval: config.epoch_interval,
                epoch_bytes: config.epoch_bytes,
            },
            flush_interval: config.flush_interval,
            outbox_left: true,
            durable: std::collections::HashMap::new(),
            flushing: None,
            gauged: Vec::new(),
            handle: tokio::runtime::Handle::current(),
            until,
            posture: None,
            catch_up: catchup::CatchUp::default(),
        }
    }
}

async fn setup(config: &Config, group: bool) -> Result<Parts> {
    crash::check()?;
    // Its `malloc` is jemalloc (`main.rs`), which reports its own statistics.
    let metrics = aispm_jemalloc::metrics("projector")?;
    let health = Health::new();
    health.set("partitions_assigned", false, "waiting for the group");
    let topics = config.common.topics();
    let kafka = config.common.kafka();
    let mut specs: Vec<TopicSpec> = topics
        .inputs()
        .iter()
        .map(|t| TopicSpec::events(t))
        .collect();
    specs.push(TopicSpec::events(&topics.dlq));
    specs.push(TopicSpec::compacted(&topics.views));
    specs.push(TopicSpec::compacted(&topics.ocsf));
    kafka.ensure_topics(&specs, Duration::from_secs(60)).await?;
    health.set("broker", true, "topics exist");

    let store = Arc::new(Store::open_with(
        &config.state_dir,
        config.store_budget(),
        config.durability(),
    )?);
    if store.check_version()? {
        tracing::info!("Views will be rebuilt from the input topics.");
    }
    let engine = Engine::new(
        Arc::clone(&store),
        topics.clone(),
        config.settings(),
        config.cache_entries,
    )?
    .with_workers(config.workers())?
    .with_publish_interval(config.publish_interval)
    .with_counters_per_epoch(config.counters_per_epoch);
    tracing::info!(
        apply_workers = engine.workers(),
        batch_max = config.batch_max,
        batch_max_aggregates = config.batch_max_aggregates,
        counters_per_epoch = config.counters_per_epoch,
        "Engine ready."
    );
    let kafka_metrics = KafkaMetrics::new(&metrics)?.with_health(health.clone());
    let ctx = Ctx::new(kafka_metrics, Arc::default(), health.clone());
    *ctx.offsets
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = engine.next_offsets.clone();
    let mut cc = kafka.consumer_config(&config.group);
    cc.set("fetch.wait.max.ms", "50")
        .set("queued.max.messages.kbytes", "65536");
    if !group {
        cc.set("group.id", format!("{}-rebuild", config.group));
    }
    if let (true, Some(id)) = (group, &config.instance_id) {
        cc.set("group.instance.id", id);
    }
    let consumer: BaseConsumer<Ctx> = cc.create_with_context(ctx)?;
    let producer: FutureProducer = kafka.producer_config().create()?;
    let md = producer
        .client()
        .fetch_metadata(Some(&topics.views), Duration::from_secs(10))?;
    let partitions = md
        .topics()
        .first()
        .map(|t| i32::try_from(t.partitions().len()).unwrap_or(1))
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::Other(format!("topic {} has no partitions", topics.views)))?;
    // The views get a producer of their own, driven by the loop's thread (see `publish`).
    let publisher = Publisher::new(
        &kafka.producer_config(),
        topics.views.clone(),
        topics.ocsf.clone(),
        partitions,
    )?;
    let dead_letters = DeadLetters::new(producer, &topics.dlq, &metrics)?;
    let pm = metrics::ProjectorMetrics::new(&metrics)?;
    Ok(Parts {
        metrics,
        health,
        engine,
        consumer,
        publisher,
        dead_letters,
        pm,
    })
}

use crate::store::{Budget, Durability, Store};

/// The directory under `--state-dir` that replays as of a past instant use (`as_of.rs`).
const AS_OF_DIR: &str = "as-of";

/// Runs the projector until `shutdown`, then finishes and commits the batch in flight.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let parts = setup(&config, true).await?;
    // Ready once the state stands where the input topics did at start (`Loop::drain_outbox`):
    // a crash without the WAL leaves it behind what the views API had served.
    parts
        .health
        .set("state_restored", false, "catching up with the input topics");
    let tokens = config.common.tokens("the views API")?;
    let auth = Auth::new(tokens, &parts.metrics)?;
    let keeper = Arc::new(posture::Keeper::new(
        Arc::clone(parts.engine.store()),
        config.clock.windows(),
    ));
    let mut tasks = Supervisor::new(shutdown.child_token(), parts.health.clone());
    let posture = Arc::clone(&keeper).run(tasks.token());
    tasks.spawn("posture", async move {
        posture.await;
        Ok(())
    });
    let history = Arc::new(as_of::History::new(
        Arc::clone(parts.engine.store()),
        config.common.topics(),
        config.settings(),
        &config.state_dir.join(AS_OF_DIR),
        config.as_of_checkpoint_events,
    )?);
    let checkpoints = Arc::clone(&history).keep_checkpoints(
        config.as_of_checkpoint_interval,
        parts.pm.as_of_checkpoints.clone(),
        tasks.token(),
    );
    tasks.spawn("as-of checkpoints", async move {
        checkpoints.await;
        Ok(())
    });
    let routes = api::routes(api::Api {
        store: Arc::clone(parts.engine.store()),
        auth,
        identity: api::IdentityLimits {
            unused_scope_ms: config.settings().unused_scope_ms,
            actors_per_agent: config.actors_per_agent,
        },
        windows: config.clock.windows(),
        codec: Arc::new(aispm_schemas::Codec::new()),
        posture: Arc::clone(&keeper),
        history: Arc::clone(&history),
        as_of: None,
    });
    let listener = aispm_runtime::http::bind(config.http_addr).await?;
    let serve = aispm_runtime::http::serve(
        listener,
        routes,
        parts.metrics.clone(),
        parts.health.clone(),
        tasks.token(),
        config.http.clone(),
    );
    tasks.spawn("http", async move { Ok(serve.await?) });

    let topics = config.common.topics();
    let inputs: Vec<String> = topics.inputs().iter().map(|t| (*t).to_owned()).collect();
    let input_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    parts.consumer.subscribe(&input_refs)?;
    let mut looper = parts.into_loop(&config, None);
    looper.posture = Some(keeper);
    let stop = tasks.token();
    tasks.spawn("consumer", async move {
        let totals = tokio::task::spawn_blocking(move || looper.run(&stop))
            .await
            .map_err(|e| Error::Other(format!("consumer loop panicked: {e}")))??;
        tracing::info!(
            applied = totals.applied,
            batches = totals.batches,
            "The consumer loop stopped after committing its last batch."
        );
        Ok(())
    });
    tasks.wait(Error::Other).await
}

/// What `rebuild` did.
#[derive(Debug, Clone, Copy)]
pub struct RebuildReport {
    pub totals: Totals,
    pub elapsed: Duration,
}

/// Wipes the views and replays the input topics up to their current end, then returns.
pub async fn rebuild(config: Config, shutdown: CancellationToken) -> Result<RebuildReport> {
    {
        let store = Store::open_with(
            &config.state_dir,
            config.store_budget(),
            config.durability(),
        )?;
        store.wipe()?;
    }
    catch_up(config, shutdown).await
}

/// Applies the input topics from the stored offsets up to their current end, then returns.
pub async fn catch_up(config: Config, shutdown: CancellationToken) -> Result<RebuildReport> {
    let started = Instant::now();
    let parts = setup(&config, false).await?;
    let topics = config.common.topics();
    let inputs = topics.inputs();
    let until: std::collections::BTreeMap<_, _> = aispm_runtime::kafka::partition_ends(
        &config.common.kafka(),
        &inputs,
        Duration::from_secs(30),
    )?
    .into_iter()
    .filter(|(_, end)| *end > 0)
    .collect();
    consumer::assign_all(&parts.consumer, &inputs, &parts.engine.next_offsets)?;
    let looper = parts.into_loop(&config, Some(until));
    let totals = tokio::task::spawn_blocking(move || looper.run(&shutdown))
        .await
        .map_err(|e| Error::Other(format!("consumer loop panicked: {e}")))??;
    Ok(RebuildReport {
        totals,
        elapsed: started.elapsed(),
    })
}
