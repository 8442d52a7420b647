//! Errors of the projector, classified: poison records are dead-lettered by the consumer loop
//! and never surface here; what surfaces here is fatal (storage, broker set-up).

/// A fatal projector error: the process stops without committing, and a restart resumes from
/// the offsets stored with the last committed batch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RocksDB: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Runtime(#[from] aispm_runtime::Error),
    #[error("encoding a view change: {0}")]
    Encode(#[from] aispm_schemas::EncodeError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
