//! Errors of the `emit` tool.

use rdkafka::error::KafkaError;

/// What stops `emit`. A 429 or 503 from the ingest API is retried, not an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Plumbing: TLS settings, topic creation.
    #[error(transparent)]
    Runtime(#[from] aispm_runtime::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("encoding an event: {0}")]
    Encode(#[from] aispm_schemas::EncodeError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The ingest API refused what `emit` sent (a 4xx other than 429), or kept answering
    /// "busy" past `--retry-for`.
    #[error("the ingest API answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("configuration: {0}")]
    Config(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("a task panicked or was cancelled: {0}")]
    Join(#[from] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
