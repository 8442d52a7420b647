//! Service plumbing shared by the four aispm binaries. Kept thin: no domain logic lives here.
//!
//! # Layout
//! - [`config`]: the flags every service takes (`--brokers`, `--http-addr`, …), each also an
//!   `AISPM_*` environment variable.
//! - [`tls`]: HTTPS with rustls, the certificate re-read when its files change.
//! - [`telemetry`]: `tracing` set-up, text or JSON.
//! - [`metrics`]: one Prometheus registry per process, `aispm_build_info`, process metrics.
//! - [`http`]: serves a service's routes beside `/metrics`, `/healthz` and `/readyz`; API errors;
//!   throttles client addresses that fail authentication.
//! - [`peer`]: calls to another service's HTTP API with the caller's token (the projector's
//!   rows as of a past instant, paged); its refusals passed on.
//! - [`openapi`]: a service's route table: registers each axum route and records its OpenAPI
//!   3.1 operation, so `GET /openapi.json` documents exactly the routes served.
//! - [`clock`]: the wall clock a service reads and waits on, passed in (tests move it by hand).
//! - [`supervise`]: a service's tasks: the first to fail, panic or end early stops the rest,
//!   is shown on `/readyz` and is the service's exit error; background threads' lower CPU
//!   priority.
//! - [`dlq`]: dead letters with headers naming source, stage and error; counted.
//! - [`fs`]: durable files: atomic writes and renames that survive a power loss.
//! - [`health`]: readiness conditions a service reports (`/readyz`).
//! - [`auth`]: the tokens file and tenant-scoped bearer-token checks.
//! - [`limit`]: rate and concurrency limits per caller (token buckets, slots), bounded memory.
//! - [`kafka`]: librdkafka client config (with `--kafka-option` pass-through), topic creation,
//!   the statistics callback that exports consumer lag and rebalances, where partitions end.
//! - [`publish`]: the acknowledged send every service publishes with (records in order, every
//!   acknowledgement awaited, each record's outcome reported).
//! - [`malloc`]: caps glibc's malloc arenas before any thread starts (flat RSS over days).
//! - [`service`]: the body of every `main`: runtime, signals, grace period, exit code.
//! - [`shutdown`]: the root cancellation token fired by SIGINT/SIGTERM, and the grace period.

pub mod auth;
pub mod clock;
pub mod config;
pub mod dlq;
pub mod error;
pub mod fs;
pub mod health;
pub mod http;
pub mod kafka;
pub mod limit;
pub mod malloc;
pub mod metrics;
pub mod openapi;
pub mod peer;
pub mod publish;
pub mod service;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;
pub mod tls;

pub use error::{Error, Result};
