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
    /// Short stable label for dead-letter headers and metrics: [`FieldError::INVALID_FIELD`]
    /// unless the check names its own (`weak_key`, `invalid_key`).
    #[serde(skip)]
    pub code: &'static str,
}

impl FieldError {
    /// The label of an ordinary invalid field.
    pub const INVALID_FIELD: &'static str = "invalid_field";

    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::with_code(Self::INVALID_FIELD, field, reason)
    }

    /// An error with its own dead-letter label.
    pub fn with_code(
        code: &'static str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
            code,
        }
    }

    /// The dead-letter label of a rejected event: the first error's own label, if one has one,
    /// else `invalid_field`.
    pub fn code_of(errors: &[FieldError]) -> &'static str {
        errors
            .iter()
            .map(|e| e.code)
            .find(|c| *c != Self::INVALID_FIELD)
            .unwrap_or(Self::INVALID_FIELD)
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}
