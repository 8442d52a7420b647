//! `aispm-ingest`: HTTP intake for agents, gateways and scripts that do not speak Kafka.
//!
//! `POST /v1/events` takes one JSON event, a JSON array, NDJSON or CloudEvents JSON
//! (`POST /v1/traces` takes OTLP traces, whose GenAI and MCP spans become decisions); checks the bearer token and
//! that it may write every tenant named; validates every item against the contract (all or
//! nothing); Avro-encodes the events (single-object encoding) and produces them with the
//! idempotent producer (`acks=all`), keyed by `tenant_id`, to the input topic of their type;
//! and answers `202` only once the broker acknowledged every record. Two budgets (events in
//! flight, body bytes buffered) bound memory: past them the answer is `429` with `Retry-After`.
//!
//! The binary's `emit` subcommand (the demo scenario or load, over HTTP or to Kafka) is
//! `aispm-tools`' [`aispm_tools::emit`]: the generators live in that crate, not in the service.
//!
//! # Layout
//! - [`config`]: the service's flags (`--http-addr`, body and budget limits, produce timeout).
//! - [`api`]: the `POST /v1/events` handler: auth, budgets, validation, answers.
//! - [`body`]: request bodies (JSON object, array, NDJSON) to validated events; generated ids.
//! - [`cloudevents`]: CloudEvents 1.0 envelopes to input items.
//! - [`item`]: an item of a body before validation, as the envelopes yield it.
//! - [`otlp`]: OTLP/HTTP traces (`POST /v1/traces`): GenAI and MCP spans to decisions.
//! - [`publish`]: Avro encoding, the idempotent producer, acknowledgements, budgets, the
//!   broker probe behind `/readyz`.
//! - [`metrics`]: requests and events by outcome and reason, produce latency, queue depth.
//! - [`error`]: the crate's `Error`.

#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the module map above is for developers of aispm: `cargo doc --document-private-items`"
)]

pub mod api;
pub mod body;
pub mod cloudevents;
mod config;
mod error;
mod item;
pub mod metrics;
pub mod otlp;
pub mod publish;

pub use config::Config;
pub use error::{Error, Result};

use aispm_runtime::auth::Auth;
use aispm_runtime::health::Health;
use aispm_runtime::kafka::{KafkaMetrics, TopicSpec};
use aispm_runtime::metrics::Metrics;
use aispm_runtime::supervise::Supervisor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The service's name in metrics (`aispm_ingest_*`) and logs.
pub const SERVICE: &str = "ingest";

/// Runs the ingest service until `shutdown` fires or a task fails. In-flight requests finish
/// (their records are acknowledged or refused) before it returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    config.check().map_err(Error::Config)?;
    let metrics = Metrics::new(SERVICE)?;
    let health = Health::new();
    health.set("topics", false, "creating the input topics");
    health.set("broker", false, "not probed yet");
    let tokens = config.common.tokens("POST /v1/events")?;
    let auth = Auth::new(tokens, &metrics)?;
    let ingest_metrics = metrics::IngestMetrics::new(&metrics)?;
    let publisher = Arc::new(publish::Publisher::new(
        &config,
        KafkaMetrics::new(&metrics)?,
        ingest_metrics.clone(),
        health.clone(),
    )?);
    let topics_ready = Arc::new(AtomicBool::new(false));
    let app = Arc::new(api::App::new(
        &config,
        auth,
        Arc::clone(&publisher),
        ingest_metrics,
        Arc::clone(&topics_ready),
    ));
    let listener = aispm_runtime::http::bind(config.http_addr).await?;
    tracing::info!(addr = %config.http_addr, topics = ?publisher.topics(), "Ingest is starting.");

    let mut tasks = Supervisor::new(shutdown.child_token(), health.clone());
    {
        let shutdown = tasks.token();
        let router = api::router(app);
        let health = health.clone();
        let http = config.http.clone();
        tasks.spawn("http", async move {
            aispm_runtime::http::serve(listener, router, metrics, health, shutdown, http).await?;
            Ok(())
        });
    }
    {
        let kafka = config.common.kafka();
        let topics = publisher.topics().clone();
        let shutdown = tasks.token();
        let health = health.clone();
        tasks.spawn_once("topics", async move {
            let specs = aispm_schemas::InputKind::ALL.map(|k| TopicSpec::events(k.topic(&topics)));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    created = kafka.ensure_topics(&specs, Duration::from_secs(30)) => match created {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "Cannot create the input topics yet; retrying.");
                            health.set("topics", false, e.to_string());
                        }
                    }
                }
            }
            topics_ready.store(true, Ordering::Relaxed);
            health.set("topics", true, "the input topics exist");
            tracing::info!("The input topics exist; accepting events.");
            Ok(())
        });
    }
    tasks.spawn("probe", Arc::clone(&publisher).probe(tasks.token()));

    // Any task failing (or ending early) stops the rest; the first failure is the result.
    let result = tasks.wait(Error::Task).await;
    // The HTTP server has drained: every request got its answer. Anything still queued
    // belongs to a request that was already answered with an error.
    let flush = {
        let publisher = Arc::clone(&publisher);
        tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(5))).await?
    };
    if let Err(e) = flush {
        tracing::warn!(error = %e, "Records were still queued at shutdown.");
    }
    result
}
