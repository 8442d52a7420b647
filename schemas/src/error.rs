//! Errors of the contract crate.

/// Why bytes could not be decoded into a contract type. Every variant is a poison-pill condition:
/// retrying the same bytes gives the same error, so consumers dead-letter the record.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error(
        "unknown framing: first byte 0x{0:02x} is neither single-object (0xc3 0x01) nor Confluent (0x00)"
    )]
    Framing(u8),
    #[error("payload truncated: {0}")]
    Truncated(&'static str),
    #[error("unknown writer schema fingerprint {0:016x}")]
    UnknownFingerprint(u64),
    #[error("unknown schema registry id {0}")]
    UnknownSchemaId(u32),
    #[error("writer schema does not resolve to {reader}: {reason}")]
    Incompatible {
        reader: &'static str,
        reason: String,
    },
    #[error("malformed Avro datum: {0}")]
    Datum(String),
    #[error("{0} trailing bytes after the datum")]
    Trailing(usize),
    #[error("{0}")]
    Shape(String),
}

impl DecodeError {
    /// Names the field an error is about (the `Value` path's shape errors, the direct reader's
    /// malformed bytes).
    pub(crate) fn within(self, record: &str, field: &str) -> Self {
        match self {
            DecodeError::Shape(s) => DecodeError::Shape(format!("{record}.{field}: {s}")),
            DecodeError::Datum(s) => DecodeError::Datum(format!("{record}.{field}: {s}")),
            other => other,
        }
    }

    /// A short, stable label for metrics and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Framing(_) => "framing",
            DecodeError::Truncated(_) => "truncated",
            DecodeError::UnknownFingerprint(_) | DecodeError::UnknownSchemaId(_) => {
                "unknown_schema"
            }
            DecodeError::Incompatible { .. } => "incompatible_schema",
            DecodeError::Datum(_) | DecodeError::Trailing(_) => "malformed",
            DecodeError::Shape(_) => "shape",
        }
    }
}

/// Why a value could not be encoded (a bug: the value does not fit its own schema).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {record}: {reason}")]
pub struct EncodeError {
    pub record: &'static str,
    pub reason: String,
}

/// One reason an event is invalid, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}
