//! The reporter's errors, classified: [`Error::is_transient`] says whether retrying may help.

use std::path::PathBuf;

/// What can go wrong generating, signing, delivering or verifying a report packet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] aispm_runtime::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("zip archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("encoding a record: {0}")]
    Encode(#[from] aispm_schemas::EncodeError),
    #[error("delivery: {0}")]
    Delivery(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("view row store (RocksDB): {0}")]
    Store(#[from] rocksdb::Error),
    #[error("view row store: {0}")]
    Corrupt(String),
    #[error("a background task failed: {0}")]
    Task(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether retrying may succeed (the broker or the mail server may come back).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kafka(e) => aispm_runtime::kafka::is_transient(e),
            Error::Delivery(_) => true,
            _ => false,
        }
    }
}

/// The reporter's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
