//! The service's flags. Each also reads an `AISPM_*` environment variable; the doc comments are
//! the `--help` text.

use aispm_runtime::config::CommonArgs;
use std::net::SocketAddr;
use std::time::Duration;

/// Default `--http-addr`.
pub(crate) const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";

/// How `aispm-ingest` serves `POST /v1/events`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    /// The HTTP server's flags (TLS, failed-authentication throttling).
    #[command(flatten)]
    pub http: aispm_runtime::http::HttpArgs,

    /// Address the HTTP API listens on.
    #[arg(long, env = "AISPM_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,

    /// Largest request body accepted, in bytes; a larger body is answered 413.
    #[arg(long, env = "AISPM_INGEST_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most events accepted in one request; more is answered 413.
    #[arg(long, env = "AISPM_INGEST_MAX_BATCH_EVENTS", default_value_t = 10_000)]
    pub max_batch_events: usize,

    /// Most events in flight to the broker (sent, not yet acknowledged) across all requests.
    /// A request that would exceed it is answered 429 with Retry-After.
    #[arg(
        long,
        env = "AISPM_INGEST_MAX_IN_FLIGHT_EVENTS",
        default_value_t = 100_000
    )]
    pub max_in_flight_events: usize,

    /// Most request-body bytes held in memory (being read, parsed or produced) across all
    /// requests. A request that would exceed it is answered 429 with Retry-After. Together with
    /// `--max-in-flight-events` this bounds the service's memory under overload.
    #[arg(long, env = "AISPM_INGEST_MAX_BUFFERED_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_buffered_bytes: usize,

    /// Requests one token may have in progress at once (reading, parsing or producing); more
    /// are answered 429 with Retry-After, to that token only. With `--max-body-bytes` this
    /// bounds the share of `--max-buffered-bytes` one token can hold.
    #[arg(long, env = "AISPM_INGEST_PER_TOKEN_CONCURRENCY", default_value_t = 4)]
    pub per_token_concurrency: usize,

    /// Events per second one token may send, with a burst of one second's worth; a request
    /// over it is answered 429 with the Retry-After that would let it pass (a batch larger
    /// than the burst passes once the allowance is full). 0: no limit.
    #[arg(
        long,
        env = "AISPM_INGEST_PER_TOKEN_EVENTS_PER_SECOND",
        default_value_t = 20_000
    )]
    pub per_token_events_per_second: u32,

    /// How long a client has to send its whole request body; a slower upload is answered 408
    /// and its reservation freed, so slow clients cannot hold the byte budget.
    #[arg(long, env = "AISPM_INGEST_BODY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub body_timeout: Duration,

    /// How long the broker has to acknowledge every record of a request (librdkafka
    /// `message.timeout.ms`); past it the request is answered 503.
    #[arg(long, env = "AISPM_INGEST_PRODUCE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub produce_timeout: Duration,

    /// The Retry-After sent with 429 and 503 answers (rounded up to whole seconds).
    #[arg(long, env = "AISPM_INGEST_RETRY_AFTER", value_parser = humantime::parse_duration, default_value = "1s")]
    pub retry_after: Duration,

    /// How far an event's `occurred_at` may lie after this service's clock; a later one is
    /// answered 400 (`future_occurred_at`): future-dated events would pin views and defeat
    /// every freshness window.
    #[arg(long, env = "AISPM_FUTURE_TOLERANCE", value_parser = humantime::parse_duration, default_value = "5m")]
    pub future_tolerance: Duration,
}

impl Config {
    /// Defaults for tests and embedding: local broker, an ephemeral port, no tokens.
    pub fn local(brokers: &str) -> Self {
        Config {
            common: CommonArgs::local(brokers),
            http: aispm_runtime::http::HttpArgs::default(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_body_bytes: 4 * 1024 * 1024,
            max_batch_events: 10_000,
            max_in_flight_events: 100_000,
            max_buffered_bytes: 64 * 1024 * 1024,
            per_token_concurrency: 4,
            per_token_events_per_second: 20_000,
            body_timeout: Duration::from_secs(30),
            produce_timeout: Duration::from_secs(30),
            retry_after: Duration::from_secs(1),
            future_tolerance: aispm_schemas::time::DEFAULT_FUTURE_TOLERANCE,
        }
    }

    /// Retry-After in whole seconds (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }

    /// Rejects limits that cannot work together.
    pub fn check(&self) -> Result<(), String> {
        if self.max_body_bytes == 0 || self.max_batch_events == 0 {
            return Err("--max-body-bytes and --max-batch-events must be positive".into());
        }
        if self.max_in_flight_events < self.max_batch_events {
            return Err(format!(
                "--max-in-flight-events ({}) must be at least --max-batch-events ({}), or a full batch could never be accepted",
                self.max_in_flight_events, self.max_batch_events
            ));
        }
        if self.max_buffered_bytes < self.max_body_bytes {
            return Err(format!(
                "--max-buffered-bytes ({}) must be at least --max-body-bytes ({}), or a full body could never be accepted",
                self.max_buffered_bytes, self.max_body_bytes
            ));
        }
        if self.per_token_concurrency == 0 {
            return Err("--per-token-concurrency must be positive".into());
        }
        if self.body_timeout < Duration::from_millis(100) {
            return Err("--body-timeout must be at least 100ms".into());
        }
        if self.produce_timeout < Duration::from_millis(100) {
            return Err("--produce-timeout must be at least 100ms".into());
        }
        Ok(())
    }
}
