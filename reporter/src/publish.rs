//! Publishes delivery outcomes as `ReportDeliveryEvent`s on `aispm.report-deliveries.v1`, and
//! the report-provider validations they prove on `aispm.registry.v1`, keyed by tenant, and
//! waits for the broker's acknowledgement.

use crate::Result;
use aispm_runtime::publish::{Outgoing, WhenFull, send_acked};
use aispm_schemas::{Codec, RegistryEvent, ReportDeliveryEvent};
use rdkafka::producer::FutureProducer;
use std::time::Duration;

/// The principal the reporter stamps on its delivery events (`asserted_by` in the views).
pub(crate) const PRINCIPAL: &str = "aispm-reporter";

/// The delivery-event producer.
#[derive(Clone)]
pub(crate) struct Publisher {
    producer: FutureProducer,
    topic: String,
    registry: String,
    codec: Codec,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Publisher {
    /// Delivery events go to `topic`, provider validations to `registry`.
    pub(crate) fn new(producer: FutureProducer, topic: &str, registry: &str) -> Self {
        Publisher {
            producer,
            topic: topic.to_owned(),
            registry: registry.to_owned(),
            codec: Codec::new(),
        }
    }

    /// Sends one event and waits until the broker acknowledged it. Its `event_id` is
    /// deterministic, so a retry after an unacknowledged send is applied once downstream.
    pub(crate) async fn publish(&self, event: &ReportDeliveryEvent) -> Result<()> {
        let bytes = self.codec.encode(event)?;
        self.send(&self.topic, &event.tenant_id, &bytes).await
    }

    /// Sends one validation result to the registry topic, acknowledged (deterministic
    /// `event_id` too).
    pub(crate) async fn publish_validation(&self, event: &RegistryEvent) -> Result<()> {
        let bytes = self.codec.encode(event)?;
        self.send(&self.registry, &event.tenant_id, &bytes).await
    }

    async fn send(&self, topic: &str, tenant: &str, bytes: &[u8]) -> Result<()> {
        let record =
            Outgoing::new(topic, Some(tenant.as_bytes()), Some(bytes)).principal(PRINCIPAL);
        send_acked(
            &self.producer,
            vec![record],
            WhenFull::Wait(Duration::from_secs(30)),
        )
        .await
        .into_result()
        .map_err(crate::Error::Kafka)
    }
}
