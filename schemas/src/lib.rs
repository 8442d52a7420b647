//! The aispm contract: published Avro schemas, the Rust event and view types, their JSON form,
//! the codec and the topic names. No I/O: every service and every test depends on this crate,
//! and nothing here knows about Kafka or RocksDB.
//!
//! # Layout
//! - `avro/*.avsc`: the published schemas (`avro/v1/` holds earlier versions decoders still read).
//! - [`events`]: decision, approval, registry and report-delivery events.
//! - [`views`]: view rows, `ViewChange`, and `AsOf` (what views as of a past instant include); [`readiness`]: `Blocker` and `Readiness`.
//! - [`codec`]: single-object and Confluent framing, schema resolution; [`fingerprint`]: CRC-64-AVRO.
//! - [`avro`]: the Rust ⇄ Avro mapping (direct binary writer and reader, `Value` form for schema
//!   resolution) and the `avro_record!`/`avro_enum!` macros.
//! - [`keys`]: [`TenantId`] (the one tenant id rule) and every topic's record key, built and
//!   parsed by one type each.
//! - [`json`]: the HTTP form of input events; [`validate`]: semantic checks; [`time`]: timestamps.
//! - [`clock`]: the clock rules (overdue, expired, covered, stale, review window), defined once
//!   for every service, with their windows' defaults.
//! - [`signature`]: evidence signatures (the signed message, signing, strict verification) and
//!   the public keys a trust root may register.
//! - [`topics`]: topic names and dead-letter headers.
//! - [`limits`]: the size policy (event, record and dead-letter bounds), in one place.
//! - [`rules`]: the finding rule catalog (ids, severity, frameworks, class, remediation);
//!   [`ocsf`]: a finding as an OCSF record, for the OCSF topic and the packets.
//! - [`risk`]: a finding's risk score from its explained factors, and the order findings rank in.
//!
//! # Changing the contract
//! Add fields with defaults (optional fields as `["null", T]` with default null) so old records
//! still decode; copy the previous `.avsc` into `avro/vN/` and list it in `codec.rs` so records
//! written with it resolve. Never rename or reorder enum symbols. Every enum has a `default`
//! symbol, the fail-safe one (an unknown risk reads as `critical`, an unknown mode as `shadow`,
//! an unknown check result as `fail`, an unknown delivery as `failed`), so a reader resolves a
//! symbol a newer writer added without ever reading it as more secure than it was
//! (tests/evolution.rs).

pub mod avro;
pub mod clock;
pub mod codec;
pub mod error;
pub mod events;
pub mod fingerprint;
pub mod json;
pub mod keys;
pub mod limits;
pub mod ocsf;
pub mod readiness;
pub mod risk;
pub mod rules;
pub mod signature;
pub mod time;
pub mod topics;
pub mod validate;
pub mod views;

pub use codec::{Codec, Record};
pub use error::{DecodeError, EncodeError, FieldError};
pub use events::*;
pub use json::{InputEvent, InputKind};
pub use keys::TenantId;
pub use readiness::{Blocker, BlockerKind, Readiness, Stage};
pub use risk::{RiskFactor, RiskScore};
pub use time::Timestamp;
pub use topics::Topics;
pub use validate::Validate;
pub use views::*;
