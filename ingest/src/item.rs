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
