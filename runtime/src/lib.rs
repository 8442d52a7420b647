//! Service plumbing shared by the four aispm binaries. Kept thin: no domain logic lives here.
//!
//! # Layout
//! - [`config`]: the flags every service takes (`--brokers`, `--http-addr`, …), each also an
//!   `AISPM_*` environment variable.
//! - [`telemetry`]: `tracing` set-up, text or JSON.
//! - [`metrics`]: one Prometheus registry per process, `aispm_build_info`, process metrics.
//! - [`http`]: serves a service's routes beside `/metrics`, `/healthz` and `/readyz`; API errors.
//! - [`health`]: readiness conditions a service reports (`/readyz`).
//! - [`auth`]: the tokens file and tenant-scoped bearer-token checks.
//! - [`kafka`]: librdkafka client config (with `--kafka-option` pass-through), topic creation,
//!   the statistics callback that exports consumer lag and rebalances.
//! - [`shutdown`]: the root cancellation token fired by SIGINT/SIGTERM, and the grace period.

pub mod auth;
pub mod config;
pub mod error;
pub mod health;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

pub use error::{Error, Result};
