//! `aispm-tools`: what generates events for aispm without being part of a service: the demo
//! scenario, the load generators and the `emit` command that sends them.
//!
//! The services never depend on this crate for their work: the ingest binary hands its `emit`
//! subcommand here, and the demo, the soak, the benches, the fuzz seeds and the tests take
//! their events from here.
//!
//! # Layout
//! - [`scenario`]: the demo scenario, phase by phase: every blocker kind raised, then the
//!   events that clear what a tenant can clear itself; the ids the demo and tests check.
//! - [`load`]: the one load generator, for N tenants: signed evidence, approvals that follow
//!   decisions, a security team's triage and remediation; seeded, with knobs for a bounded key
//!   space, a fixed clock and re-sent duplicates (the preset `LoadGen::keyed` of the crash
//!   tests and benches, which compare state across runs).
//! - [`records`]: a generated event as the record of its input topic.
//! - [`emit`]: `aispm-ingest emit`: the load generator at a rate, in batches, over HTTP (with
//!   `429`/`503` retries) or straight to Kafka, or as NDJSON on stdout.
//! - [`error`]: `emit`'s errors.
//!
//! One event's road: [`load::LoadGen::next_event`] (or a [`scenario`] phase) builds an
//! `InputEvent`; [`emit`] batches it and sends it as JSON to ingest, or encodes it
//! (`InputEvent::encode`) to the topic of its type (`InputKind::topic`).

pub mod emit;
pub mod error;
pub mod load;
pub mod records;
pub mod scenario;
