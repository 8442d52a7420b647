//! The reporter's metrics, `aispm_reporter_*`. Labels come from small fixed sets (report type,
//! trigger, channel, outcome, topic kind), never tenant or report ids.

use crate::Result;
use aispm_runtime::metrics::{Metrics, latency_buckets};
use prometheus::{Histogram, HistogramVec, IntCounterVec, IntGauge};

/// Every metric the reporter updates.
#[derive(Debug, Clone)]
pub struct ReporterMetrics {
    pub reports_generated: IntCounterVec,
    pub generation_seconds: HistogramVec,
    pub packet_bytes: Histogram,
    pub deliveries: IntCounterVec,
    pub events_published: IntCounterVec,
    pub publish_errors: IntCounterVec,
    pub deliveries_pending: IntGauge,
    pub records_followed: IntCounterVec,
    pub tenants: IntGauge,
}

impl ReporterMetrics {
    pub fn new(m: &Metrics) -> Result<Self> {
        Ok(ReporterMetrics {
            reports_generated: m.counter(
                "reports_generated_total",
                "Report packets generated, by report type and trigger (api, cadence).",
                &["type", "trigger"],
            )?,
            generation_seconds: m.histogram(
                "report_generation_seconds",
                "Time to build, render, sign and write one packet, by report type.",
                &["type"],
                latency_buckets(),
            )?,
            packet_bytes: m.histogram(
                "packet_bytes",
                "Size of packet archives.",
                &[],
                vec![1e3, 1e4, 1e5, 1e6, 1e7, 1e8],
            )?
            .with_label_values::<&str>(&[]),
            deliveries: m.counter(
                "delivery_attempts_total",
                "Delivery attempts by channel (smtp, export) and outcome (delivered, failed).",
                &["channel", "outcome"],
            )?,
            events_published: m.counter(
                "delivery_events_published_total",
                "ReportDeliveryEvents acknowledged by the broker, by outcome.",
                &["outcome"],
            )?,
            publish_errors: m.counter(
                "delivery_event_publish_errors_total",
                "ReportDeliveryEvents the broker did not acknowledge (retried), by reason.",
                &["reason"],
            )?,
            deliveries_pending: m.gauge(
                "deliveries_pending",
                "Packets not delivered yet with another attempt scheduled.",
                &[],
            )?
            .with_label_values::<&str>(&[]),
            records_followed: m.counter(
                "records_followed_total",
                "Records folded into the reporter's state, by topic (views, blockers, readiness, registry).",
                &["topic"],
            )?,
            tenants: m
                .gauge("tenants", "Tenants the reporter knows.", &[])?
                .with_label_values::<&str>(&[]),
        })
    }
}
