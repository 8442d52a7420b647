//! Every contract type survives encode → decode in both framings, and hostile bytes give typed
//! errors, never panics.

mod strategies;

use aispm_schemas::codec::{encode_confluent, encode_single_object, write_datum_via_value};
use aispm_schemas::*;
use proptest::prelude::*;
use strategies::*;

fn round_trip<T: Record + PartialEq + std::fmt::Debug>(value: &T) {
    let codec = Codec::new();
    let bytes = encode_single_object(value).expect("encodes");
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(
        bytes.capacity(),
        bytes.len(),
        "no room left over from growing"
    );
    assert_eq!(&codec.decode::<T>(&bytes).expect("decodes"), value);

    codec.use_schema_id::<T>(42);
    let framed = codec.encode(value).expect("encodes");
    assert_eq!(framed, encode_confluent(42, value).expect("encodes"));
    assert_eq!(
        framed.capacity(),
        framed.len(),
        "no room left over from growing"
    );
    assert_eq!(&framed[..5], &[0, 0, 0, 0, 42]);
    assert_eq!(&framed[5..], &bytes[10..], "same datum under both framings");
    assert_eq!(&codec.decode::<T>(&framed).expect("decodes"), value);

    // The direct encoder writes exactly what apache_avro writes from the schema-checked value.
    assert_eq!(
        &bytes[10..],
        &write_datum_via_value(value).expect("the value matches the published schema")[..],
        "direct encoding equals apache_avro's"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn decision_events(v in decision()) { round_trip(&v) }
    #[test]
    fn approval_events(v in approval()) { round_trip(&v) }
    #[test]
    fn registry_events(v in registry()) { round_trip(&v) }
    #[test]
    fn report_delivery_events(v in delivery()) { round_trip(&v) }
    #[test]
    fn view_changes(v in view_change()) { round_trip(&v) }
    #[test]
    fn blockers(v in blocker()) { round_trip(&v) }
    #[test]
    fn readiness_records(v in readiness()) { round_trip(&v) }

    #[test]
    fn input_events_round_trip_through_json(d in decision(), a in approval(), r in registry()) {
        for event in [InputEvent::Decision(d), InputEvent::Approval(a), InputEvent::Registry(r)] {
            let json = event.to_json();
            let back: serde_json::Value = serde_json::from_str(&json.to_string()).unwrap();
            // Content rules may reject a random event; the shape must never be what fails.
            match InputEvent::from_json(back) {
                Ok(parsed) => prop_assert_eq!(parsed, event),
                Err(errors) => for e in errors {
                    prop_assert!(!e.reason.contains("invalid type"), "{e}");
                    prop_assert!(!e.reason.contains("unknown field"), "{e}");
                },
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let codec = Codec::new();
        let _ = codec.decode::<DecisionEvent>(&bytes);
        let _ = codec.decode::<ViewChange>(&bytes);
    }

    #[test]
    fn corrupted_records_give_typed_errors(v in decision(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let codec = Codec::new();
        let mut bytes = encode_single_object(&v).unwrap();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = codec.decode::<DecisionEvent>(&bytes);
        let good = encode_single_object(&v).unwrap();
        let truncated = &good[..cut.index(good.len())];
        prop_assert!(codec.decode::<DecisionEvent>(truncated).is_err());
    }
}

#[test]
fn framing_errors_are_typed() {
    let codec = Codec::new();
    assert_eq!(codec.decode::<Readiness>(&[]), Err(DecodeError::Empty));
    assert_eq!(
        codec.decode::<Readiness>(b"{\"json\":1}"),
        Err(DecodeError::Framing(b'{'))
    );
    assert!(matches!(
        codec.decode::<Readiness>(&[0xC3, 0x01, 1, 2]),
        Err(DecodeError::Truncated(_))
    ));
    assert_eq!(
        codec.decode::<Readiness>(&[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0]),
        Err(DecodeError::UnknownFingerprint(u64::from_le_bytes([
            1, 2, 3, 4, 5, 6, 7, 8
        ])))
    );
    assert_eq!(
        codec.decode::<Readiness>(&[0, 0, 0, 0, 9, 0]),
        Err(DecodeError::UnknownSchemaId(9))
    );
}

#[test]
fn a_record_of_another_type_is_incompatible_not_garbage() {
    let blocker = Blocker {
        tenant_id: "acme".into(),
        stage: Stage::Production,
        blocker_id: "evidence_stale".into(),
        kind: BlockerKind::EvidenceStale,
        meaning: "m".into(),
        resolution: "r".into(),
        subject: None,
        evidence: vec![],
        detected_at: Timestamp(1),
    };
    let bytes = encode_single_object(&blocker).unwrap();
    let err = Codec::new().decode::<Readiness>(&bytes).unwrap_err();
    assert_eq!(err.reason(), "incompatible_schema", "{err}");
}

#[test]
fn trailing_bytes_are_rejected() {
    let r = Readiness {
        tenant_id: "t".into(),
        stage: Stage::Trial,
        ready: true,
        blocker_ids: vec![],
        evaluated_at: Timestamp(5),
    };
    let mut bytes = encode_single_object(&r).unwrap();
    bytes.push(0);
    assert_eq!(
        Codec::new().decode::<Readiness>(&bytes),
        Err(DecodeError::Trailing(1))
    );
}

#[test]
fn a_huge_declared_string_is_refused_without_allocating_it() {
    // A Readiness whose tenant_id claims to be 2^40 bytes long.
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&aispm_schemas::codec::READINESS.fingerprint.to_le_bytes());
    let mut n: u64 = 1 << 41; // zig-zag of 2^40
    while n >= 0x80 {
        bytes.push((n as u8) | 0x80);
        n >>= 7;
    }
    bytes.push(n as u8);
    let err = Codec::new().decode::<Readiness>(&bytes).unwrap_err();
    assert_eq!(err.reason(), "malformed", "{err}");
}
