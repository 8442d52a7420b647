//! Generated events as the records of their input topics: what the crash, fault and scale
//! tests and the benches produce straight to Kafka.

use aispm_schemas::codec::encode_single_object;
use aispm_schemas::*;

/// One generated record.
#[derive(Debug, Clone)]
pub struct Generated {
    pub kind: InputKind,
    pub tenant: String,
    pub bytes: Vec<u8>,
}

impl Generated {
    /// The record of an event: its input topic, key and Avro single-object bytes.
    pub fn of(event: &InputEvent) -> Generated {
        let (kind, bytes) = match event {
            InputEvent::Decision(d) => (InputKind::Decision, encode_single_object(d)),
            InputEvent::Approval(a) => (InputKind::Approval, encode_single_object(a)),
            InputEvent::Registry(r) => (InputKind::Registry, encode_single_object(r)),
        };
        Generated {
            kind,
            tenant: event.tenant_id().to_owned(),
            bytes: bytes.expect("encodes"),
        }
    }
}
