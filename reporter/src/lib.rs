//! `aispm-reporter`: turns posture into signed report packets for executives, auditors and
//! operators, delivers them (SMTP to the tenant's approved recipients, or export to a
//! directory) and proves the delivery by publishing a `ReportDeliveryEvent`, which the
//! projector folds into the `report_deliveries` view so the gatekeeper can clear
//! `report_delivery_unverified`.
//!
//! The reporter follows the views, blockers, readiness and registry topics into its own
//! state (it never opens another service's RocksDB): the view rows in a RocksDB database of its
//! own under `--state-dir`, rebuilt at every start, and the rest in memory. Reports run on demand
//! (`POST /v1/tenants/{tenant}/reports`) and on a configurable cadence.
//!
//! # Layout
//! - [`config`]: flags and `AISPM_*` environment variables.
//! - [`follow`]: the consumer that replays and follows the topics; [`state`]: what it folds;
//!   [`rows`]: the view rows, kept in RocksDB so that memory does not grow with them.
//! - [`report`]: the report document: the report path's checks ([`report::checks`]), key
//!   figures and trends ([`report::kpi`]), the sections of each report type ([`report::kind`]),
//!   the monthly review's exception aging and policy drift ([`report::monthly`]).
//! - [`render`]: the document as HTML with inline SVG charts, JSON, CSV tables and OCSF.
//! - [`packet`]: the directory, the `.zip`, `manifest.json` and its signatures; `verify`.
//! - [`sign`]: Ed25519 keys (`keygen`) and signatures over SHA-256 digests.
//! - [`minisign`]: signatures and public keys in minisign's format (what `minisign -V` checks).
//! - [`keys`]: the current and previous signing keys, published; the keys a verifier pins.
//! - [`center`]: the report path end to end: generate, deliver, record, retry with backoff;
//!   [`as_of`]: a packet's state as of a past instant, read from the projector and gatekeeper.
//! - [`deliver`]: SMTP (a real mail with the packet attached) and export.
//! - [`publish`]: `ReportDeliveryEvent`s on `aispm.report-deliveries.v1`.
//! - [`store`]: report records and the retry queue under `--state-dir`.
//! - [`webhooks`]: subscriptions (`--webhooks`), the signed messages for blockers, readiness,
//!   findings past their SLA and deliveries, their outbox, retries and dead letters.
//! - [`schedule`]: the schedule's periods and entries (`--schedule`), and when each next runs;
//!   [`cadence`]: runs the daily, weekly, monthly and quarterly reports on it.
//! - [`api`]: the HTTP routes; [`metrics`]: `aispm_reporter_*`; [`error`]: the error type.

#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the module map above is for developers of aispm: `cargo doc --document-private-items`"
)]

mod api;
mod as_of;
mod cadence;
mod center;
mod config;
mod deliver;
mod error;
mod follow;
pub mod keys;
mod metrics;
pub mod minisign;
pub mod packet;
mod publish;
pub mod render;
pub mod report;
mod rows;
mod schedule;
pub mod sign;
pub mod state;
mod store;
mod webhooks;

pub use config::Config;
pub use error::{Error, Result};

use aispm_runtime::auth::Auth;
use aispm_runtime::clock::{SharedClock, SystemClock};
use aispm_runtime::dlq::DeadLetters;
use aispm_runtime::health::Health;
use aispm_runtime::kafka::{KafkaMetrics, TopicSpec};
use aispm_runtime::metrics::Metrics;
use aispm_runtime::supervise::Supervisor;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs the reporter until `shutdown` fires or a task fails (which cancels the others).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    run_with_clock(config, SystemClock::shared(), shutdown).await
}

/// [`run`] on `clock` (a test's [`aispm_runtime::clock::ManualClock`]).
pub async fn run_with_clock(
    config: Config,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<()> {
    let metrics = Metrics::new("reporter")?;
    let reporter_metrics = metrics::ReporterMetrics::new(&metrics)?;
    let health = Health::new();
    let kafka_metrics = KafkaMetrics::new(&metrics)?.with_health(health.clone());
    health.set("state_restored", false, "replaying the state topics");
    let tokens = config.common.tokens("the report API")?;
    let auth = Auth::new(tokens, &metrics)?;

    std::fs::create_dir_all(&config.state_dir).map_err(|e| Error::io(&config.state_dir, e))?;
    let out_dir = config.out_dir();
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
    let partial = packet::remove_partial(&out_dir);
    if partial > 0 {
        tracing::info!(
            partial,
            "Removed packets left half-written by a previous run."
        );
    }
    let key_path = config.signing_key_path();
    let (signer, created) = sign::Signer::load_or_create(&key_path)?;
    let previous = config
        .previous_signing_keys
        .iter()
        .map(|p| keys::load_public(p))
        .collect::<Result<Vec<_>>>()?;
    let keys = keys::KeyRing::new(signer, previous);
    keys.publish(&out_dir)?;
    tracing::info!(
        key = %key_path.display(), created, key_id = %keys.current_public().key_id,
        minisign_public_key = %keys.current_public().encode(),
        public_key = %keys.current().public_key_b64(),
        previous = %keys::ids(&keys.all()[1..]),
        "Loaded the packet signing key; recipients pin its minisign public key, and a trust_root asset with its public key anchors packets."
    );

    let channel = match &config.smtp_url {
        Some(url) => deliver::Channel::Smtp(Box::new(
            deliver::Smtp::new(url, &config.smtp_from, config.smtp_timeout)
                .map_err(Error::Config)?,
        )),
        None => {
            tracing::info!(out_dir = %out_dir.display(), "No --smtp-url: packets are exported to the packet directory.");
            deliver::Channel::Export
        }
    };
    let schedule = schedule::entries(&config.schedule);

    let topics = config.common.topics();
    let kafka = config.common.kafka();
    let mut specs = vec![
        TopicSpec::events(&topics.registry),
        TopicSpec::events(&topics.report_deliveries),
        TopicSpec::events(&topics.dlq),
    ];
    for t in [&topics.views, &topics.blockers, &topics.readiness] {
        specs.push(TopicSpec::compacted(t));
    }
    kafka.ensure_topics(&specs, Duration::from_secs(60)).await?;
    let producer: rdkafka::producer::FutureProducer = kafka.producer_config().create()?;
    let dead_letters = DeadLetters::new(producer.clone(), &topics.dlq, &metrics)?;
    let publisher = publish::Publisher::new(producer, &topics.report_deliveries, &topics.registry);
    let provider_check = config.provider_check()?.map(Arc::new);
    if let Some(c) = &provider_check {
        tracing::info!(
            key_id = %c.key.key_id, public_key = %c.key.public_key(),
            environments = ?c.environments,
            "Deliveries validate the report providers they reach: tenants register this key as a trust_root with scopes [\"validator\"]."
        );
    }

    let subscriptions = match &config.webhooks {
        Some(path) => webhooks::config::load(path)?,
        None => Vec::new(),
    };
    let webhooks = webhooks::Webhooks::open(
        subscriptions,
        &config.state_dir,
        clock.clone(),
        dead_letters.clone(),
        &metrics,
    )?;

    let state = state::Shared::open(&config.views_db_path())?;
    let (restored_tx, restored_rx) = tokio::sync::watch::channel(false);
    let store = store::Store::open(&config.state_dir)?;
    let center = Arc::new(center::Center::new(
        center::Settings {
            out_dir,
            windows: config.clock.windows(),
            fallback_key_id: config.key_id.clone(),
            max_attempts: config.delivery_attempts.max(1),
            retry_initial: config.retry_initial,
            retry_max: config.retry_max,
            source: config.source.clone(),
            provider_check,
            clock,
            webhooks: webhooks.clone(),
            as_of: as_of::Source::new(&config.as_of)?,
        },
        state.clone(),
        store,
        keys,
        channel,
        publisher,
        reporter_metrics.clone(),
        restored_rx,
    )?);

    let listener = aispm_runtime::http::bind(config.http_addr).await?;
    let mut set = Supervisor::new(shutdown.child_token(), health.clone());
    {
        let follower = follow::Follower {
            kafka: kafka.clone(),
            topics: topics.clone(),
            state,
            health: health.clone(),
            metrics: reporter_metrics,
            kafka_metrics,
            dead_letters,
            offsets_file: config.state_dir.join("follow-offsets.json"),
            restored: restored_tx,
            webhooks: webhooks.clone(),
        };
        set.spawn("follow", follower.run(set.token()));
    }
    {
        let center = center.clone();
        let token = set.token();
        set.spawn("retries", async move { center.run_retries(token).await });
    }
    {
        let restored = center.restored_receiver();
        set.spawn("webhooks", webhooks.run(restored, set.token()));
    }
    {
        let center = center.clone();
        let token = set.token();
        let file = config.state_dir.join("cadence.json");
        let hour = config.schedule_hour;
        set.spawn("cadence", cadence::run(center, schedule, hour, file, token));
    }
    {
        let limits = Arc::new(api::Limits::new(&config.limits, &metrics)?);
        let routes = api::routes(center, auth, limits);
        let token = set.token();
        let http = config.http.clone();
        set.spawn("http", async move {
            aispm_runtime::http::serve(listener, routes, metrics, health, token, http)
                .await
                .map_err(Error::from)
        });
    }
    set.wait(Error::Task).await
}
