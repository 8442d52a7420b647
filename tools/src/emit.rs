//! `aispm-ingest emit` (this crate holds it; the ingest binary only parses the subcommand): sends the demo scenario or random load, over HTTP (the ingest API) or
//! straight to the Kafka input topics, or prints it as NDJSON.
//!
//! HTTP sends honour `429`/`503` and `Retry-After` and resend the same batch (event ids are
//! stable, so a resend is applied once); Kafka sends use the same idempotent producer
//! settings as the service. A summary is printed as one JSON line on stdout at the end.

use crate::error::{Error, Result};
use crate::load::LoadGen;
use crate::scenario::{self, Phase};
use aispm_runtime::config::CommonArgs;
use aispm_runtime::kafka::TopicSpec;
use aispm_runtime::publish::{Outgoing, WhenFull, send_acked};
use aispm_schemas::{Codec, InputEvent, InputKind, Timestamp, Topics};
use rdkafka::producer::FutureProducer;
use reqwest::StatusCode;
use serde::Serialize;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScenarioKind {
    /// The demo scenario for one tenant (see `--phase`).
    Demo,
    /// Random realistic events for `--tenants` tenants at `--rate`.
    Load,
}

/// Where to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// `POST {--url}/v1/events` with `--token`.
    Http,
    /// Straight to the input topics at `--brokers` (Avro single-object encoding).
    Kafka,
    /// Print NDJSON on stdout (pipe it to `curl --data-binary @-`).
    Stdout,
}

/// `aispm-ingest emit` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct EmitArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub tls: aispm_runtime::tls::ClientTlsArgs,

    /// What to emit: the demo scenario or random load.
    #[arg(long, env = "AISPM_EMIT_SCENARIO", value_enum, default_value = "demo")]
    pub scenario: ScenarioKind,

    /// Demo: which phase (open the blockers, remediate them, or both in order).
    #[arg(long, env = "AISPM_EMIT_PHASE", value_enum, default_value = "open")]
    pub phase: Phase,

    /// Demo: the tenant.
    #[arg(long, env = "AISPM_EMIT_TENANT", default_value = "acme")]
    pub tenant: String,

    /// Demo: the scenario's "now" (RFC 3339); event times are relative to it. Default: the
    /// current time.
    #[arg(long, value_parser = Timestamp::parse_rfc3339)]
    pub at: Option<Timestamp>,

    /// Load: how many tenants (`tenant-000`, `tenant-001`, …).
    #[arg(long, env = "AISPM_EMIT_TENANTS", default_value_t = 10)]
    pub tenants: usize,

    /// Load: events per second (0: as fast as the target accepts).
    #[arg(long, env = "AISPM_EMIT_RATE", default_value_t = 1000)]
    pub rate: u64,

    /// Load: stop after this many events.
    #[arg(long, env = "AISPM_EMIT_COUNT")]
    pub count: Option<u64>,

    /// Load: stop after this long (default 10s when --count is not given).
    #[arg(long, env = "AISPM_EMIT_DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Load: open items (high-risk actions allowed without approval, unreviewed break-glass)
    /// per tenant above which the oldest is resolved or reviewed, as a security team working
    /// its queue would; 0 resolves each at the next event of its tenant. Without it nothing is
    /// remediated and open findings grow with the load.
    #[arg(long, env = "AISPM_EMIT_BACKLOG")]
    pub backlog: Option<usize>,

    /// Load: draw agents, repos, tools, models and controls from about this many distinct
    /// entities in all (numbered, e.g. `coder-agent-7`), as a scale run does; without it a
    /// tenant has a few named ones.
    #[arg(long, env = "AISPM_EMIT_ENTITIES")]
    pub entities: Option<usize>,

    /// Load: the fraction of events that re-send a recent one with the same event id, as an
    /// at-least-once producer does (consumers apply each event id once).
    #[arg(long, env = "AISPM_EMIT_DUPLICATES", default_value_t = 0.0)]
    pub duplicates: f64,

    /// Load: the fraction of events that triage a finding the load raised (an owner and due
    /// date, or a day's exception).
    #[arg(long, env = "AISPM_EMIT_TRIAGE", default_value_t = 0.0)]
    pub triage: f64,

    /// Load: random seed (the same seed gives the same events).
    #[arg(long, env = "AISPM_EMIT_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Events per HTTP request or per Kafka batch.
    #[arg(long, env = "AISPM_EMIT_BATCH", default_value_t = 100)]
    pub batch: usize,

    /// Batches in flight at once (the demo always sends one at a time, in order).
    #[arg(long, env = "AISPM_EMIT_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,

    /// Where to send the events.
    #[arg(long, env = "AISPM_EMIT_TO", value_enum, default_value = "http")]
    pub to: Target,

    /// The ingest API's base URL.
    #[arg(
        long,
        env = "AISPM_INGEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,

    /// Bearer token for the ingest API (must be allowed to write every tenant sent).
    #[arg(long, env = "AISPM_INGEST_TOKEN")]
    pub token: Option<String>,

    /// Give up on a batch after this long of 429/503/connection errors.
    #[arg(long, env = "AISPM_EMIT_RETRY_FOR", value_parser = humantime::parse_duration, default_value = "60s")]
    pub retry_for: Duration,
}

/// What an emit run did (printed as JSON on stdout).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub sent: u64,
    pub accepted: u64,
    pub batches: u64,
    /// Resends after 429, 503 or a connection error.
    pub retries: u64,
    pub elapsed_seconds: f64,
    pub events_per_second: f64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    batches: AtomicU64,
    retries: AtomicU64,
}

/// Where batches go.
enum Sink {
    Http {
        client: reqwest::Client,
        url: String,
        token: Option<String>,
        retry_for: Duration,
    },
    Kafka {
        producer: FutureProducer,
        topics: Topics,
        codec: Codec,
    },
    Stdout,
}

impl Sink {
    async fn open(args: &EmitArgs) -> Result<Sink> {
        Ok(match args.to {
            Target::Http => Sink::Http {
                client: args
                    .tls
                    .client_builder()?
                    .timeout(Duration::from_secs(60))
                    .build()?,
                url: format!("{}/v1/events", args.url.trim_end_matches('/')),
                token: args.token.clone(),
                retry_for: args.retry_for,
            },
            Target::Kafka => {
                let kafka = args.common.kafka();
                let topics = args.common.topics();
                kafka
                    .ensure_topics(
                        &InputKind::ALL.map(|k| TopicSpec::events(k.topic(&topics))),
                        Duration::from_secs(30),
                    )
                    .await?;
                Sink::Kafka {
                    producer: kafka.producer_config().create()?,
                    topics,
                    codec: Codec::new(),
                }
            }
            Target::Stdout => Sink::Stdout,
        })
    }

    /// Sends one batch; returns how many events the target accepted.
    async fn send(&self, events: &[InputEvent], counters: &Counters) -> Result<u64> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                for e in events {
                    serde_json::to_writer(&mut out, &e.to_json())
                        .map_err(|e| Error::Io(e.into()))?;
                    out.write_all(b"\n")?;
                }
                Ok(events.len() as u64)
            }
            Sink::Kafka {
                producer,
                topics,
                codec,
            } => {
                let payloads = events
                    .iter()
                    .map(|e| e.encode(codec))
                    .collect::<Result<Vec<_>, _>>()?;
                let records = events
                    .iter()
                    .zip(&payloads)
                    .map(|(e, p)| {
                        Outgoing::new(e.topic(topics), Some(e.tenant_id().as_bytes()), Some(p))
                    })
                    .collect();
                send_acked(producer, records, WhenFull::Wait(Duration::from_secs(30)))
                    .await
                    .into_result()
                    .map_err(Error::Kafka)?;
                Ok(events.len() as u64)
            }
            Sink::Http {
                client,
                url,
                token,
                retry_for,
            } => {
                let body: Vec<serde_json::Value> = events.iter().map(InputEvent::to_json).collect();
                let body = serde_json::to_vec(&body).map_err(|e| Error::Io(e.into()))?;
                let started = Instant::now();
                let mut backoff = Duration::from_millis(100);
                loop {
                    let mut req = client
                        .post(url)
                        .header("content-type", "application/json")
                        .body(body.clone());
                    if let Some(t) = token {
                        req = req.bearer_auth(t);
                    }
                    let wait = match req.send().await {
                        Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                            let v: serde_json::Value = resp.json().await?;
                            return Ok(v["accepted"].as_u64().unwrap_or(0));
                        }
                        Ok(resp)
                            if resp.status() == StatusCode::TOO_MANY_REQUESTS
                                || resp.status() == StatusCode::SERVICE_UNAVAILABLE =>
                        {
                            resp.headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok())
                                .map_or(backoff, Duration::from_secs)
                        }
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let body = resp.text().await.unwrap_or_default();
                            return Err(Error::Refused { status, body });
                        }
                        Err(e) if e.is_connect() || e.is_timeout() => {
                            tracing::warn!(error = %e, "Cannot reach the ingest API; retrying.");
                            backoff
                        }
                        Err(e) => return Err(e.into()),
                    };
                    if started.elapsed() + wait > *retry_for {
                        return Err(Error::Refused {
                            status: 503,
                            body: format!("gave up after {:?} of retries", started.elapsed()),
                        });
                    }
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Runs `emit` until done or `shutdown`.
pub async fn run(args: EmitArgs, shutdown: CancellationToken) -> Result<Summary> {
    if args.batch == 0 || args.concurrency == 0 {
        return Err(Error::Config(
            "--batch and --concurrency must be positive".into(),
        ));
    }
    let sink = Arc::new(Sink::open(&args).await?);
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    match args.scenario {
        ScenarioKind::Demo => {
            let at = args.at.unwrap_or_else(Timestamp::now);
            let events = scenario::demo(&args.tenant, args.phase, at);
            tracing::info!(tenant = %args.tenant, phase = ?args.phase, events = events.len(), "Emitting the demo scenario.");
            // In order, one batch at a time: the scenario is a story.
            for chunk in events.chunks(args.batch) {
                if shutdown.is_cancelled() {
                    break;
                }
                let accepted = sink.send(chunk, &counters).await?;
                counters
                    .sent
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                counters.accepted.fetch_add(accepted, Ordering::Relaxed);
                counters.batches.fetch_add(1, Ordering::Relaxed);
            }
        }
        ScenarioKind::Load => load(&args, sink, Arc::clone(&counters), shutdown).await?,
    }
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = counters.accepted.load(Ordering::Relaxed);
    Ok(Summary {
        sent: counters.sent.load(Ordering::Relaxed),
        accepted,
        batches: counters.batches.load(Ordering::Relaxed),
        retries: counters.retries.load(Ordering::Relaxed),
        elapsed_seconds: elapsed,
        events_per_second: if elapsed > 0.0 {
            accepted as f64 / elapsed
        } else {
            0.0
        },
    })
}

async fn load(
    args: &EmitArgs,
    sink: Arc<Sink>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> Result<()> {
    let run_id = format!("{:x}", Timestamp::now().millis());
    let mut generator = LoadGen::new(args.tenants, args.seed, &run_id)
        .with_duplicates(args.duplicates)
        .with_triage(args.triage);
    if let Some(entities) = args.entities {
        generator = generator.with_entities(entities);
    }
    if let Some(backlog) = args.backlog {
        generator = generator.with_backlog(backlog);
    }
    let limit = args.count.unwrap_or(u64::MAX);
    let deadline = match (args.count, args.duration) {
        (_, Some(d)) => Some(Instant::now() + d),
        (None, None) => Some(Instant::now() + Duration::from_secs(10)),
        (Some(_), None) => None,
    };
    tracing::info!(
        tenants = args.tenants,
        rate = args.rate,
        batch = args.batch,
        "Emitting load."
    );
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    let mut ticker = (args.rate > 0).then(|| {
        let period = Duration::from_secs_f64(args.batch as f64 / args.rate as f64);
        let mut t = tokio::time::interval(period.max(Duration::from_micros(100)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut generated = 0u64;
    while generated < limit && deadline.is_none_or(|d| Instant::now() < d) {
        if let Some(t) = ticker.as_mut() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = t.tick() => {}
            }
        }
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = Arc::clone(&permits).acquire_owned() => p.map_err(|e| Error::Config(e.to_string()))?,
        };
        // A failed batch ends the run.
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
        let n = (limit - generated).min(args.batch as u64) as usize;
        let batch = generator.batch(n);
        generated += n as u64;
        let sink = Arc::clone(&sink);
        let counters = Arc::clone(&counters);
        tasks.spawn(async move {
            let accepted = sink.send(&batch, &counters).await?;
            counters
                .sent
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            counters.accepted.fetch_add(accepted, Ordering::Relaxed);
            counters.batches.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
