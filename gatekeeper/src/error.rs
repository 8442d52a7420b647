//! The gatekeeper's error type. Poison records never surface here (they are dead-lettered and
//! counted); what does is either transient (the broker went away: retried by the caller) or
//! fatal (configuration, a topic that cannot exist, an HTTP port in use).

/// What can stop the gatekeeper.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] aispm_runtime::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("encoding a {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("recovering published state from {topic}: {reason}")]
    Recover { topic: String, reason: String },
    #[error("topic {0} does not exist")]
    MissingTopic(String),
    #[error("task failed: {0}")]
    Task(String),
}

impl Error {
    /// Whether retrying may help (the broker may come back).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kafka(e) => aispm_runtime::kafka::is_transient(e),
            Error::Runtime(aispm_runtime::Error::Kafka(e)) => aispm_runtime::kafka::is_transient(e),
            Error::Recover { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
