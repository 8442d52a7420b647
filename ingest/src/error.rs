//! Errors of the ingest service.

use rdkafka::error::KafkaError;

/// What can stop the service. Per-request failures (invalid events, refused
/// tokens, backpressure) are answered over HTTP and never become an `Error`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Plumbing: config, tokens file, topic creation, HTTP listener, metrics registry.
    #[error(transparent)]
    Runtime(#[from] aispm_runtime::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("encoding an event: {0}")]
    Encode(#[from] aispm_schemas::EncodeError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("a task panicked or was cancelled: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A task of the service failed or ended before shutdown.
    #[error("{0}")]
    Task(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
