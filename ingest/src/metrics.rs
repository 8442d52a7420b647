//! The service's own metrics (beside the HTTP request metrics `aispm_runtime::http` records).
//! Labels come from small fixed sets: outcome, reason, event type.

use crate::Result;
use aispm_runtime::metrics::{Metrics, latency_buckets, size_buckets};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge};

/// Why a request ended the way it did (the `outcome` label of `requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Unauthorized,
    Forbidden,
    Invalid,
    TooLarge,
    UnsupportedMediaType,
    Throttled,
    Timeout,
    Unavailable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Forbidden => "forbidden",
            Outcome::Invalid => "invalid",
            Outcome::TooLarge => "too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::Throttled => "throttled",
            Outcome::Timeout => "timeout",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// The ingest metrics, registered once per process.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// `aispm_ingest_requests_total{outcome, reason}`.
    pub requests: IntCounterVec,
    /// `aispm_ingest_events_total{type, outcome, reason}`.
    pub events: IntCounterVec,
    /// `aispm_ingest_produce_duration_seconds`: from the first record sent to the last
    /// acknowledgement of a request.
    pub produce_latency: HistogramVec,
    /// `aispm_ingest_batch_events`: events per accepted request.
    pub batch_size: HistogramVec,
    /// `aispm_ingest_in_flight_events`, `aispm_ingest_buffered_bytes`,
    /// `aispm_ingest_producer_queue_messages` (librdkafka's queue, sampled).
    pub in_flight_events: IntGauge,
    pub buffered_bytes: IntGauge,
    pub producer_queue: IntGauge,
    /// `aispm_ingest_producers_replaced_total`: producers that failed fatally and were replaced.
    pub producers_replaced: IntCounter,
}

impl IngestMetrics {
    pub fn new(m: &Metrics) -> Result<Self> {
        Ok(IngestMetrics {
            requests: m.counter(
                "requests_total",
                "POST /v1/events requests by outcome and reason.",
                &["outcome", "reason"],
            )?,
            events: m.counter(
                "events_total",
                "Events by type (decision, approval, registry, unknown), outcome (accepted, rejected, failed) and reason.",
                &["type", "outcome", "reason"],
            )?,
            produce_latency: m.histogram(
                "produce_duration_seconds",
                "Time from sending a request's first record to the broker's last acknowledgement.",
                &["outcome"],
                latency_buckets(),
            )?,
            batch_size: m.histogram(
                "batch_events",
                "Events per accepted request.",
                &["format"],
                size_buckets(),
            )?,
            in_flight_events: m.gauge(
                "in_flight_events",
                "Events sent to the producer and not yet acknowledged by the broker.",
                &[],
            )?
            .with_label_values::<&str>(&[]),
            buffered_bytes: m.gauge(
                "buffered_bytes",
                "Request-body bytes reserved by requests being read, parsed or produced.",
                &[],
            )?
            .with_label_values::<&str>(&[]),
            producer_queue: m.gauge(
                "producer_queue_messages",
                "Messages in librdkafka's producer queue (waiting or in flight), sampled every second.",
                &[],
            )?
            .with_label_values::<&str>(&[]),
            producers_replaced: m
                .counter(
                    "producers_replaced_total",
                    "Kafka producers that failed fatally (e.g. UnknownProducerId after the broker lost their state) and were replaced by a new one.",
                    &[],
                )?
                .with_label_values::<&str>(&[]),
        })
    }

    /// Counts one finished request.
    pub fn request(&self, outcome: Outcome, reason: &str) {
        self.requests
            .with_label_values(&[outcome.as_str(), reason])
            .inc();
    }

    /// Counts `n` events of one type with an outcome and reason.
    pub fn events(&self, kind: &str, outcome: &str, reason: &str, n: u64) {
        if n > 0 {
            self.events
                .with_label_values(&[kind, outcome, reason])
                .inc_by(n);
        }
    }
}
