//! The gatekeeper: continuous readiness per tenant and stage (trial, pilot, production).
//!
//! It follows the view changelog `aispm.views.v1` into per-tenant state, evaluates every blocker
//! kind of the design brief against it and the wall clock, and publishes what changed: blockers
//! to the compacted `aispm.blockers.v1` (key `{tenant}/{stage}/{blocker_id}`, a null tombstone
//! when a blocker resolves) and verdicts to the compacted `aispm.readiness.v1` (key
//! `{tenant}/{stage}`). A stage is ready only with zero blockers. Tenants are re-evaluated on
//! every relevant view change, at the exact instant a due date, expiry or window passes, and by
//! a periodic sweep. After a restart or rebalance the gatekeeper replays the compacted views and
//! reads back its own published records, so it publishes nothing that is already there.
//!
//! # Layout
//! - [`config`]: flags and environment variables: windows, stage blocker sets, HTTP address,
//!   evidence rows tracked per tenant.
//! - [`state`]: one tenant's view rows, folded from view changes: only what can block, in
//!   compact form (findings a rule iterates, the newest evidence), so memory follows what can
//!   block rather than the event volume.
//! - [`rules`]: one pure function per blocker kind: meaning, resolution, evidence ids, and the
//!   next instant time alone changes the answer.
//! - [`readiness`]: the engine: tenants, published state, timers, the diff that yields records.
//! - [`follow`]: the consumer loop: assignment and replay, folding, evaluating, committing.
//! - [`recover`]: reading the published blockers and readiness back from their topics.
//! - [`publish`]: encoding and sending records to the tenant's partition, awaiting acks.
//! - [`api`]: `GET /v1/tenants/{tenant}/readiness` and `GET /v1/readiness`; [`as_of`]: readiness
//!   as of a past instant, from the projector's rows as of then (`?as_of=`).
//! - [`metrics`]: `aispm_gatekeeper_*` (records go to the tenant's partition by `aispm_runtime::kafka::partition_for`, the Java client's murmur2).
//! - [`error`]: the crate's error type.
//!
//! # The road of one view change to a blocker
//! 1. [`follow`]: the consumer loop receives the change (key `{tenant}/{view}/{row key}`).
//! 2. [`readiness`]: `Engine::apply` folds it into the tenant's [`state`] (`TenantState::apply`)
//!    and marks the tenant due.
//! 3. [`readiness`]: `Engine::evaluate_due`, at the clock's time, runs the [`rules`] over the
//!    tenant (`rules::evaluate`: one draft per blocker) and diffs the drafts against what was
//!    published: new blockers, tombstones for resolved ones, a verdict per changed stage.
//! 4. [`publish`]: the records go to `aispm.blockers.v1` and `aispm.readiness.v1`; [`follow`]
//!    commits the view offsets once they are acknowledged.

#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the module map above is for developers of aispm: `cargo doc --document-private-items`"
)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod api;
mod as_of;
mod config;
mod error;
mod follow;
mod metrics;
mod publish;
mod readiness;
mod recover;
mod rules;
mod state;

pub use config::Config;
pub use error::{Error, Result};
// What the gatekeeper's bench, memory example and tests use: the readiness engine over the
// tenants' states and the rules it evaluates with.
pub use metrics::GatekeeperMetrics;
pub use readiness::{Engine, Verdicts};
pub use rules::{Policy, evaluate};
pub use state::TenantState;

use aispm_runtime::auth::Auth;
use aispm_runtime::clock::{SharedClock, SystemClock};
use aispm_runtime::dlq::DeadLetters;
use aispm_runtime::health::Health;
use aispm_runtime::kafka::{KafkaMetrics, TopicSpec};
use aispm_runtime::supervise::Supervisor;
use aispm_schemas::Codec;
use rdkafka::producer::FutureProducer;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs the gatekeeper until `shutdown` fires or a task fails (which stops the others).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    run_with_clock(config, SystemClock::shared(), shutdown).await
}

/// [`run`] on `clock` (a test's [`aispm_runtime::clock::ManualClock`]).
pub async fn run_with_clock(
    config: Config,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<()> {
    // Its `malloc` is jemalloc (`main.rs`), which reports its own statistics.
    let metrics = aispm_jemalloc::metrics("gatekeeper")?;
    let health = Health::new();
    health.set("topics", false, "creating the topics");
    let tokens = config.common.tokens("the readiness API")?;
    let auth = Auth::new(tokens, &metrics)?;
    let gk_metrics = metrics::GatekeeperMetrics::new(&metrics)?;
    let kafka_metrics = KafkaMetrics::new(&metrics)?.with_health(health.clone());
    let verdicts = readiness::Verdicts::default();
    let listener = aispm_runtime::http::bind(config.http_addr).await?;

    let mut tasks = Supervisor::new(shutdown.child_token(), health.clone());
    {
        let source = as_of::Source {
            projector: aispm_runtime::peer::Peer::new(
                "projector",
                &config.projector_url,
                config
                    .client_tls
                    .client_builder()?
                    .timeout(config.as_of_timeout)
                    .build()
                    .map_err(|e| Error::Task(format!("the projector's HTTP client: {e}")))?,
            ),
            policy: rules::Policy::new(config.windows.clock(), &config.stages),
            tracked_evidence: config.tracked_evidence_per_tenant,
        };
        let routes = api::routes(auth, verdicts.clone(), source);
        let (m, h, s) = (metrics.clone(), health.clone(), tasks.token());
        let http = config.http.clone();
        tasks.spawn("http", async move {
            aispm_runtime::http::serve(listener, routes, m, h, s, http).await?;
            Ok(())
        });
    }

    let topics = config.common.topics();
    let kafka = config.common.kafka();
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
    let (views_partitions, blockers_partitions, readiness_partitions) = {
        let (k, t) = (kafka.clone(), topics.clone());
        tokio::task::spawn_blocking(move || {
            Ok::<_, Error>((
                recover::partition_count(&k, &t.views)?,
                recover::partition_count(&k, &t.blockers)?,
                recover::partition_count(&k, &t.readiness)?,
            ))
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??
    };
    health.set(
        "topics",
        true,
        format!("{} ({views_partitions} partitions)", topics.views),
    );

    let mut producer_config = kafka.producer_config();
    if !kafka
        .options
        .iter()
        .any(|(k, _)| k == "statistics.interval.ms")
    {
        // The producer has no statistics context: without this librdkafka logs them.
        producer_config.set("statistics.interval.ms", "0");
    }
    if !kafka.options.iter().any(|(k, _)| k == "linger.ms") {
        // Each batch is awaited before the next: waiting to fill it only adds latency.
        producer_config.set("linger.ms", "1");
    }
    let producer: FutureProducer = producer_config.create()?;
    let dead_letters = DeadLetters::new(producer.clone(), &topics.dlq, &metrics)?;
    let publisher = publish::Publisher::new(
        producer.clone(),
        Codec::new(),
        (topics.blockers.clone(), blockers_partitions),
        (topics.readiness.clone(), readiness_partitions),
        gk_metrics.clone(),
    );
    let policy = rules::Policy::new(config.windows.clock(), &config.stages);
    tracing::info!(
        views = %topics.views, blockers = %topics.blockers, readiness = %topics.readiness,
        production_freshness = %humantime::format_duration(config.windows.clock.production_evidence_freshness),
        evaluation_interval = %humantime::format_duration(config.windows.evaluation_interval),
        "Following the views."
    );
    let engine = readiness::Engine::new(policy, gk_metrics.clone(), verdicts.clone())
        .tracked_evidence(config.tracked_evidence_per_tenant);
    let parts = follow::Parts {
        kafka,
        group_id: config.group_id.clone(),
        topics,
        engine,
        publisher,
        dead_letters,
        health,
        metrics: gk_metrics,
        kafka_metrics,
        verdicts,
        views_partitions,
        sweep_every: config.windows.evaluation_interval,
        clock,
    };
    tasks.spawn("follow", follow::run(parts, tasks.token()));
    let result = tasks.wait(Error::Task).await;
    // Nothing is in flight after the loop (it awaits every acknowledgement), but flush anyway.
    let _ = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        producer.flush(Duration::from_secs(5))
    })
    .await;
    result
}
