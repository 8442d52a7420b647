//! Test support: Apache Kafka (one node or three) on 127.0.0.1, the service binaries as child
//! processes, random topic prefixes, and small Kafka helpers.
//!
//! # Layout
//! - [`broker`]: start, kill, restart and stop Apache Kafka nodes (also one secured as
//!   compose/ secures it); Kafka's own admin tools.
//! - [`compose`]: the settings of `compose/docker-compose.yml` and its Kafka ACL setup script.
//! - [`process`]: start the aispm binaries, wait for their HTTP health, kill and restart them.
//! - [`demo`]: the whole pipeline driven end to end (the demo binary and the pipeline test).
//! - [`kafka`]: producers and consumers for tests, topic prefixes.
//! - [`measure`]: what the benches measure a process by (CPU and memory from `/proc`).
//! - [`rows`]: view rows as the projector publishes them, for the gatekeeper's tests and bench.
//! - [`webhooks`]: a real webhook receiver that verifies Standard Webhooks signatures.

pub mod broker;
pub mod compose;
pub mod demo;
pub mod kafka;
pub mod measure;
pub mod process;
pub mod rows;
pub mod webhooks;

pub use broker::Broker;
