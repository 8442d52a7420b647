//! Arbitrary bytes into the codec's `decode` for every record type, in both framings (single
//! object with any known fingerprint, Confluent with ids 1-8). Decoding must return `Err` or a
//! value, never panic, hang or allocate without bound (`-malloc_limit_mb`/`-rss_limit_mb`); a
//! value it returns must encode and decode back to itself, and the checks a consumer runs next
//! (validation, JSON for the API) must not panic on it.
//!
//! Where the framing names the record type's own schema, the codec reads the datum directly; the
//! target checks it against `apache_avro`'s `Value` path on the same datum: both fail, or both
//! succeed with equal values. The one allowed difference: the direct reader refuses a
//! non-canonical varint the `Value` path reads leniently.
#![no_main]

use aispm_fuzz::{CONFLUENT_IDS, avro_seeds, fuzz_codec, write_seeds};
use aispm_schemas::codec::{decode_datum_via_value, encode_single_object};
use aispm_schemas::*;
use libfuzzer_sys::fuzz_target;
use std::fmt::Debug;
use std::sync::LazyLock;

static CODEC: LazyLock<Codec> = LazyLock::new(fuzz_codec);

/// The datum after a header that names `T`'s own schema: the bytes the codec reads directly.
fn own_datum<T: Record>(bytes: &[u8]) -> Option<&[u8]> {
    let published = T::published();
    match bytes {
        [0xC3, 0x01, fp @ ..] if fp.starts_with(&published.fingerprint.to_le_bytes()) => {
            Some(&bytes[10..])
        }
        [0x00, a, b, c, d, datum @ ..] => {
            let id = u32::from_be_bytes([*a, *b, *c, *d]);
            CONFLUENT_IDS
                .iter()
                .any(|(known, name)| *known == id && *name == published.name)
                .then_some(datum)
        }
        _ => None,
    }
}

/// The codec's direct read of `datum` agrees with the `Value` path's.
fn same_as_value_path<T: Record + PartialEq + Debug>(
    datum: &[u8],
    direct: &Result<T, DecodeError>,
) {
    match (direct, decode_datum_via_value::<T>(datum)) {
        (Ok(a), Ok(b)) => assert_eq!(*a, b, "the direct reader and the Value path differ"),
        (Err(_), Err(_)) => {}
        (Ok(a), Err(e)) => panic!("the direct reader read {a:?}, the Value path refused: {e}"),
        (Err(e), Ok(b)) => {
            assert!(
                e.to_string().contains("varint"),
                "the direct reader refused ({e}) what the Value path read as {b:?}"
            );
            let mut canonical = Vec::new();
            b.write_avro(&mut canonical);
            assert_ne!(
                canonical, datum,
                "the direct reader refused a canonical datum"
            );
        }
    }
}

fn check<T: Record + PartialEq + Debug + serde::Serialize>(bytes: &[u8]) -> Option<T> {
    let decoded = CODEC.decode::<T>(bytes);
    if let Some(datum) = own_datum::<T>(bytes) {
        same_as_value_path(datum, &decoded);
    }
    let value = decoded.ok()?;
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
