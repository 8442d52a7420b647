//! One item of a request body before validation, as the envelopes ([`crate::cloudevents`],
//! [`crate::otlp`]) hand it to [`crate::body`].

use serde_json::Value;

/// An event's JSON, or why the envelope around it (a CloudEvent, a span) could not yield one.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Value(Value),
    Rejected {
        event_id: Option<String>,
        field: String,
        reason: String,
    },
}

/// A content-derived event id: a UUIDv8 from the SHA-256 of `parts` in order. The same parts
/// always give the same id, so a producer that sends an event again (an event without an id, a
/// CloudEvent, a span) is deduplicated like one that sends its own id.
pub(crate) fn content_id(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The essence of a media type (`type/subtype`, lowercase, parameters dropped):
/// `Application/JSON; charset=utf-8` is `application/json`.
pub(crate) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}
