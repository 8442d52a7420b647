//! The producer side: Avro-encodes accepted events, sends them with the idempotent producer
//! (`acks=all`) keyed by `tenant_id` to the input topic of their type, and waits until the
//! broker acknowledged every record. Also the two budgets that bound memory under overload
//! (in-flight events, buffered body bytes) and the broker probe behind `/readyz`.

use crate::config::Config;
use crate::metrics::IngestMetrics;
use crate::{Error, Result};
use aispm_runtime::health::Health;
use aispm_runtime::kafka::{KafkaMetrics, is_transient};
use aispm_runtime::publish::{Outgoing, Sent, WhenFull, is_queue_full, send_acked};
use aispm_schemas::{Codec, InputEvent, InputKind, Topics};
use prometheus::IntGauge;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::statistics::Statistics;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How often the broker probe runs, and how many failures in a row mark the broker down.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const PROBE_FAILURES_FOR_DOWN: u32 = 2;

/// One event ready to send: its input topic, key and Avro single-object bytes.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Its type, which decides its topic.
    pub kind: InputKind,
    pub tenant_id: String,
    pub payload: Vec<u8>,
}

/// Encodes events in order.
pub fn encode(codec: &Codec, events: &[InputEvent]) -> Result<Vec<Encoded>> {
    events
        .iter()
        .map(|e| {
            Ok(Encoded {
                kind: e.input_kind(),
                payload: e.encode(codec)?,
                tenant_id: e.tenant_id().to_owned(),
            })
        })
        .collect()
}

/// Why a batch was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// librdkafka's queue was full before any record of the request was sent: come back later.
    #[error("the producer queue is full")]
    QueueFull,
    /// The broker is known to be unreachable; nothing was sent.
    #[error("the broker is unreachable: {0}")]
    BrokerDown(String),
    /// At least one record was not acknowledged (timeout, broker error). Records of the same
    /// request that were acknowledged stay written; resending the request is safe because
    /// consumers apply each `event_id` once.
    #[error("the broker did not acknowledge every record: {0}")]
    NotAcknowledged(String),
}

impl PublishError {
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::QueueFull => "producer_queue_full",
            PublishError::BrokerDown(_) => "broker_down",
            PublishError::NotAcknowledged(_) => "not_acknowledged",
        }
    }
}

/// Whether the broker answers, from the probe.
#[derive(Debug, Default)]
pub struct BrokerState {
    down: AtomicBool,
    failures: AtomicU32,
}

impl BrokerState {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }
}

/// The producer's client context: statistics to metrics, errors to the log. (A fatal error
/// arrives here with its underlying code, e.g. UnknownProducerId, not as `Fatal`: the publisher
/// asks the producer itself, see `Publisher::replace_if_fatal`.)
#[derive(Debug, Clone)]
pub struct ProducerContext {
    kafka: KafkaMetrics,
}

impl ClientContext for ProducerContext {
    fn stats(&self, statistics: Statistics) {
        self.kafka.observe(&statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            // The broker probe reports these as a state change (once), and /readyz shows it.
            tracing::debug!(%error, reason, "Kafka connection error.");
        } else {
            tracing::warn!(%error, reason, "Kafka client error.");
        }
    }
}

/// A share of a budget, released when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    gauge: IntGauge,
    n: i64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gauge.sub(self.n);
    }
}

#[derive(Debug)]
struct Budget {
    semaphore: Arc<Semaphore>,
    gauge: IntGauge,
}

impl Budget {
    fn new(size: usize, gauge: IntGauge) -> Self {
        Budget {
            semaphore: Arc::new(Semaphore::new(size.min(u32::MAX as usize))),
            gauge,
        }
    }

    fn try_reserve(&self, n: usize) -> Option<Reservation> {
        let n = u32::try_from(n).ok()?;
        let permit = Arc::clone(&self.semaphore).try_acquire_many_owned(n).ok()?;
        self.gauge.add(i64::from(n));
        Some(Reservation {
            _permit: permit,
            gauge: self.gauge.clone(),
            n: i64::from(n),
        })
    }
}

/// Sends batches of events and waits for their acknowledgement.
pub struct Publisher {
    /// Replaced by a new one when it fails fatally (see [`Publisher::replace_if_fatal`]).
    producer: RwLock<FutureProducer<ProducerContext>>,
    client: ClientConfig,
    context: ProducerContext,
    topics: Topics,
    codec: Codec,
    in_flight: Budget,
    buffered: Budget,
    state: Arc<BrokerState>,
    health: Health,
    metrics: IngestMetrics,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(
        config: &Config,
        kafka: KafkaMetrics,
        metrics: IngestMetrics,
        health: Health,
    ) -> Result<Self> {
        let kafka_config = config.common.kafka();
        let mut client = kafka_config.producer_config();
        let queue = config
            .max_in_flight_events
            .saturating_add(1000)
            .max(100_000);
        // Ours, unless the operator set them with --kafka-option.
        let defaults = [
            (
                "message.timeout.ms",
                config.produce_timeout.as_millis().to_string(),
            ),
            ("statistics.interval.ms", "1000".to_owned()),
            ("queue.buffering.max.messages", queue.to_string()),
            ("client.id", "aispm-ingest".to_owned()),
        ];
        for (k, v) in defaults {
            if !kafka_config.options.iter().any(|(o, _)| o == k) {
                client.set(k, v);
            }
        }
        let context = ProducerContext { kafka };
        let producer: FutureProducer<ProducerContext> =
            client.create_with_context(context.clone())?;
        Ok(Publisher {
            producer: RwLock::new(producer),
            client,
            context,
            topics: config.common.topics(),
            codec: Codec::new(),
            in_flight: Budget::new(
                config.max_in_flight_events,
                metrics.in_flight_events.clone(),
            ),
            buffered: Budget::new(config.max_buffered_bytes, metrics.buffered_bytes.clone()),
            state: Arc::default(),
            health,
            metrics,
        })
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn state(&self) -> &Arc<BrokerState> {
        &self.state
    }

    /// The current producer (a cheap handle).
    fn producer(&self) -> FutureProducer<ProducerContext> {
        self.producer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces `used` with a new producer if it failed fatally. librdkafka's idempotent
    /// producer fails fatally when it can no longer guarantee its sequence (e.g. the broker
    /// answered UnknownProducerId after losing the producer's state) and then refuses every
    /// record for good; a new producer gets a new producer id. Records the old one did not get
    /// acknowledged were answered 503: their senders resend them, with the same event ids.
    /// Returns whether it was replaced (by this call or another).
    fn replace_if_fatal(&self, used: &FutureProducer<ProducerContext>) -> bool {
        let Some((code, reason)) = used.client().fatal_error() else {
            return false;
        };
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current.client().native_ptr() != used.client().native_ptr() {
            return true;
        }
        match self
            .client
            .create_with_context::<_, FutureProducer<ProducerContext>>(self.context.clone())
        {
            Ok(fresh) => {
                tracing::error!(
                    ?code,
                    reason,
                    "The Kafka producer failed fatally; replaced it with a new one. Requests it had not delivered were answered 503."
                );
                self.metrics.producers_replaced.inc();
                *current = fresh;
                true
            }
            Err(e) => {
                tracing::error!(?code, reason, error = %e, "The Kafka producer failed fatally and a new one cannot be created yet.");
                false
            }
        }
    }

    /// Reserves room for `n` events in flight, or `None` when the budget is spent (429).
    pub fn try_reserve_events(&self, n: usize) -> Option<Reservation> {
        self.in_flight.try_reserve(n)
    }

    /// Reserves room for `n` body bytes, or `None` when the budget is spent (429).
    pub fn try_reserve_bytes(&self, n: usize) -> Option<Reservation> {
        self.buffered.try_reserve(n)
    }

    /// Sends every record, stamped with the principal that asserted it, and waits until the
    /// broker acknowledged all of them.
    pub async fn publish(&self, records: &[Encoded], principal: &str) -> Result<(), PublishError> {
        if self.state.is_down() {
            return Err(PublishError::BrokerDown(
                "the broker probe has failed; no record was sent".into(),
            ));
        }
        let started = Instant::now();
        let producer = self.producer();
        let outgoing = records
            .iter()
            .map(|r| {
                Outgoing::new(
                    r.kind.topic(&self.topics),
                    Some(r.tenant_id.as_bytes()),
                    Some(&r.payload),
                )
                .principal(principal)
            })
            .collect();
        // A full queue is answered at once ("busy"), not waited out by the request. What was
        // sent before a refusal is still awaited: it occupies the queue (and the reservation)
        // until the broker answers.
        let Sent { delivered, refused } = send_acked(&producer, outgoing, WhenFull::Refuse).await;
        let sent = delivered.len();
        let failure = delivered.into_iter().find_map(|d| {
            d.err().map(|e| match e {
                KafkaError::Canceled => "the producer was closed".to_owned(),
                e => e.to_string(),
            })
        });
        let result = match (refused, failure) {
            // Refused before anything was sent: nothing of the request is written.
            (Some(e), _) if sent == 0 && is_queue_full(&e) => Err(PublishError::QueueFull),
            (Some(e), _) if is_queue_full(&e) => Err(PublishError::NotAcknowledged(format!(
                "the producer queue filled up after {sent} of {} records were sent",
                records.len()
            ))),
            (Some(e), _) => Err(PublishError::NotAcknowledged(if is_transient(&e) {
                format!("{e} (transient)")
            } else {
                e.to_string()
            })),
            (None, Some(f)) => Err(PublishError::NotAcknowledged(f)),
            (None, None) => Ok(()),
        };
        if result.is_err() {
            self.replace_if_fatal(&producer);
        }
        let outcome = if result.is_ok() {
            "acknowledged"
        } else {
            "failed"
        };
        self.metrics
            .produce_latency
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Probes the broker (a metadata request) until `shutdown`, keeping `/readyz` and the
    /// fail-fast flag current, and samples the producer queue depth.
    pub async fn probe(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let producer = self.producer();
            // Also when no request comes: a fatal producer is replaced before the next one.
            self.replace_if_fatal(&producer);
            self.metrics
                .producer_queue
                .set(i64::from(producer.in_flight_count()));
            let me = Arc::clone(&self);
            let probe = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(Some(&me.topics.decisions), PROBE_TIMEOUT)
                    .map(|m| m.brokers().len())
            })
            .await?;
            match probe {
                Ok(brokers) => {
                    self.state.failures.store(0, Ordering::Relaxed);
                    if self.state.down.swap(false, Ordering::Relaxed) {
                        tracing::info!(brokers, "The broker answers again.");
                    }
                    self.health
                        .set("broker", true, format!("{brokers} broker(s) answer"));
                }
                Err(e) => {
                    let failures = self.state.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if failures >= PROBE_FAILURES_FOR_DOWN {
                        if !self.state.down.swap(true, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "The broker does not answer; refusing events until it does.");
                        }
                        self.health.set("broker", false, e.to_string());
                    }
                }
            }
        }
    }

    /// Waits for every queued record to be acknowledged (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer().flush(timeout).map_err(Error::Kafka)
    }
}
