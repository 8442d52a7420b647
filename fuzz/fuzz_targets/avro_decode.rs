//! Arbitrary bytes into the codec's `decode` for every record type, in both framings (single
//! object with any known fingerprint, Confluent with ids 1-8). Decoding must return `Err` or a
//! value, never panic, hang or allocate without bound (`-malloc_limit_mb`/`-rss_limit_mb`); a
//! value it returns must encode and decode back to itself, and the checks a consumer runs next
//! (validation, JSON for the API) must not panic on it.
#![no_main]

use aispm_fuzz::{avro_seeds, fuzz_codec, write_seeds};
use aispm_schemas::codec::encode_single_object;
use aispm_schemas::*;
use libfuzzer_sys::fuzz_target;
use std::fmt::Debug;
use std::sync::LazyLock;

static CODEC: LazyLock<Codec> = LazyLock::new(fuzz_codec);

fn check<T: Record + PartialEq + Debug + serde::Serialize>(bytes: &[u8]) -> Option<T> {
    let value = CODEC.decode::<T>(bytes).ok()?;
    let again = encode_single_object(&value)
        .unwrap_or_else(|e| panic!("a decoded {value:?} does not encode: {e}"));
    let back = CODEC
        .decode::<T>(&again)
        .unwrap_or_else(|e| panic!("a re-encoded {value:?} does not decode: {e}"));
    assert_eq!(back, value, "decode(encode(decoded)) differs");
    let _ = serde_json::to_string(&value).expect("a decoded value has a JSON form");
    Some(value)
}

fuzz_target!(
    init: {
        write_seeds(avro_seeds());
        LazyLock::force(&CODEC);
    },
    |bytes: &[u8]| {
        if let Some(e) = check::<DecisionEvent>(bytes) {
            let _ = e.validate();
            let _ = InputEvent::Decision(e).to_json();
        }
        if let Some(e) = check::<ApprovalEvent>(bytes) {
            let _ = e.validate();
            let _ = InputEvent::Approval(e).to_json();
        }
        if let Some(e) = check::<RegistryEvent>(bytes) {
            let _ = e.validate();
            let _ = InputEvent::Registry(e).to_json();
        }
        if let Some(e) = check::<ReportDeliveryEvent>(bytes) {
            let _ = e.validate();
        }
        if let Some(v) = check::<ViewChange>(bytes) {
            let _ = v.changed_at.to_rfc3339();
        }
        if let Some(b) = check::<Blocker>(bytes) {
            let _ = b.detected_at.to_rfc3339();
        }
        check::<Readiness>(bytes);
    }
);
