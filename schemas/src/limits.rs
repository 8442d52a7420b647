//! The size policy, end to end: one set of numbers that every producer, topic, consumer and
//! the dead-letter path agree on, so that a record aispm accepts can always be carried, and a
//! record it cannot carry is refused at the door or dead-lettered by reference, never retried
//! forever.
//!
//! - Ingest refuses an event whose record would exceed [`MAX_EVENT_BYTES`] (400, per item).
//! - Every aispm producer sends records up to [`MAX_RECORD_BYTES`] (librdkafka
//!   `message.max.bytes`), and the topics aispm creates refuse larger ones
//!   (`max.message.bytes`), so a producer writing straight to Kafka meets the same bound.
//! - A consumer meeting an input record over [`MAX_EVENT_BYTES`] (a topic created by hand with a
//!   higher limit, a producer that ignores this policy) dead-letters it as `record_too_large`.
//! - A dead letter carries the rejected record's key and value only while they fit
//!   [`MAX_DEAD_LETTER_INLINE_BYTES`]; beyond that it carries them by reference: the source
//!   coordinates, their sizes and SHA-256, so the record can be fetched from the source topic.
//!
//! The bounds nest, and the tests below prove it: an inline dead letter (at most
//! [`MAX_DEAD_LETTER_INLINE_BYTES`] of key and value, plus at most [`MAX_DEAD_LETTER_HEADER_BYTES`]
//! of headers) fits [`MAX_RECORD_BYTES`] with room for the record batch's framing.

/// The largest event record (the Avro single-object encoding) aispm accepts on an input topic:
/// 512 KiB. Real decisions, approvals and registry events are a few kilobytes; the bound is
/// for lists (recipients, environments, data classes) that a client may make arbitrarily long.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;

/// The largest record any aispm producer sends, and the `max.message.bytes` of the topics aispm
/// creates. librdkafka's own default, made explicit so that topic and producer agree.
pub const MAX_RECORD_BYTES: usize = 1_000_000;

/// A dead letter carries the rejected record's key and value inline up to this many bytes
/// together; a larger record is dead-lettered by reference.
pub const MAX_DEAD_LETTER_INLINE_BYTES: usize = MAX_EVENT_BYTES + 16 * 1024;

/// The most header bytes a dead letter carries (the error message is cut to fit).
pub const MAX_DEAD_LETTER_HEADER_BYTES: usize = 8 * 1024;

/// Room left in a record for the record batch's framing (record and batch headers, varints).
const FRAMING_BYTES: usize = 4 * 1024;

const _: () = assert!(MAX_EVENT_BYTES < MAX_DEAD_LETTER_INLINE_BYTES);
const _: () = assert!(
    MAX_DEAD_LETTER_INLINE_BYTES + MAX_DEAD_LETTER_HEADER_BYTES + FRAMING_BYTES <= MAX_RECORD_BYTES
);

/// The reason label (metrics, dead-letter header, API error) for a record over the policy.
pub const RECORD_TOO_LARGE: &str = "record_too_large";

/// Why an input record is refused for its size, or `None` when it fits.
pub fn oversized_event(payload_len: usize) -> Option<String> {
    (payload_len > MAX_EVENT_BYTES).then(|| {
        format!(
            "{RECORD_TOO_LARGE}: the record is {payload_len} bytes; an event may take at most {MAX_EVENT_BYTES} bytes encoded"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_nest() {
        assert!(oversized_event(MAX_EVENT_BYTES).is_none());
        let why = oversized_event(MAX_EVENT_BYTES + 1).unwrap_or_default();
        assert!(why.starts_with(RECORD_TOO_LARGE), "{why}");
        assert!(why.contains(&MAX_EVENT_BYTES.to_string()), "{why}");
    }
}
