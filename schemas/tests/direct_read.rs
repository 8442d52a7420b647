//! The direct reader (`read_datum`, used when the writer schema is the reader's own) against the
//! `Value` path (`apache_avro` builds a `Value` tree, then `FromAvro::from_avro`): on valid datums
//! of every record type both decode to the value that was written; on mutated datums and random
//! bytes both fail, or both succeed with equal values.
//!
//! The one intended difference: `apache_avro` reads non-canonical varints (a redundant zero final
//! byte, bits beyond 64 in the tenth byte) leniently, the direct reader refuses them. Where only the
//! direct reader fails, its error must be about a varint and the datum must not be the canonical
//! encoding of what the `Value` path read.

mod strategies;

use aispm_schemas::avro::{ToAvro, write_bytes, write_long};
use aispm_schemas::codec::{decode_datum_via_value, read_datum};
use aispm_schemas::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;
use std::fmt::Debug;
use strategies::*;

fn datum<T: ToAvro>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.write_avro(&mut out);
    out
}

/// Both paths decode `datum` alike (see the module docs for the one difference).
fn agree<T: Record + PartialEq + Debug>(datum: &[u8]) -> Result<Option<T>, TestCaseError> {
    let direct = read_datum::<T>(datum);
    let via_value = decode_datum_via_value::<T>(datum);
    match (direct, via_value) {
        (Ok(a), Ok(b)) => {
            prop_assert_eq!(&a, &b);
            Ok(Some(a))
        }
        (Err(direct), Err(via_value)) => {
            // A datum the Value path read whole has its trailing bytes counted alike.
            if let DecodeError::Trailing(n) = via_value {
                prop_assert!(
                    direct == DecodeError::Trailing(n) || direct.to_string().contains("varint"),
                    "the Value path found {n} trailing bytes, the direct reader: {direct}"
                );
            }
            Ok(None)
        }
        (Ok(a), Err(e)) => {
            prop_assert!(
                false,
                "the direct reader read {a:?}, the Value path refused: {e}"
            );
            unreachable!()
        }
        (Err(e), Ok(b)) => {
            prop_assert!(
                e.to_string().contains("varint"),
                "the direct reader refused ({e}) what the Value path read as {b:?}"
            );
            prop_assert_ne!(
                &self::datum(&b)[..],
                datum,
                "the direct reader refused a canonical datum"
            );
            Ok(None)
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
    Append(Vec<u8>),
}

/// Bytes that mean something in Avro's binary encoding (zero, one, zig-zag -1, continuation
/// bits, the truncation sentinel), and any byte.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        select(vec![
            0x00, 0x01, 0x02, 0x03, 0x7E, 0x7F, 0x80, 0x81, 0xC3, 0xFF
        ]),
        any::<u8>(),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        4 => (any::<Index>(), byte()).prop_map(|(at, b)| Mutation::Set(at, b)),
        2 => (any::<Index>(), byte()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        2 => any::<Index>().prop_map(Mutation::Remove),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => vec(byte(), 1..4).prop_map(Mutation::Append),
    ];
    vec(one, 1..4)
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Set(at, b) if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
            Mutation::Insert(at, b) => {
                let i = at.index(bytes.len() + 1);
                bytes.insert(i, *b);
            }
            Mutation::Remove(at) if !bytes.is_empty() => {
                bytes.remove(at.index(bytes.len()));
            }
            Mutation::Truncate(at) if !bytes.is_empty() => {
                bytes.truncate(at.index(bytes.len()));
            }
            Mutation::Append(tail) => bytes.extend_from_slice(tail),
            _ => {}
        }
    }
    bytes
}

/// A value reads back as itself both ways; mutations of its datum decode alike both ways.
fn check<T: Record + PartialEq + Debug>(
    value: &T,
    mutations: &[Mutation],
) -> Result<(), TestCaseError> {
    let bytes = datum(value);
    let back = agree::<T>(&bytes)?;
    prop_assert_eq!(back.as_ref(), Some(value));
    agree::<T>(&mutate(bytes, mutations))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn decision_events(v in decision(), m in mutations()) { check(&v, &m)? }
    #[test]
    fn approval_events(v in approval(), m in mutations()) { check(&v, &m)? }
    #[test]
    fn registry_events(v in registry(), m in mutations()) { check(&v, &m)? }
    #[test]
    fn report_delivery_events(v in delivery(), m in mutations()) { check(&v, &m)? }
    #[test]
    fn view_changes(v in view_change(), m in mutations()) { check(&v, &m)? }
    #[test]
    fn blockers(v in blocker(), m in mutations()) { check(&v, &m)? }
    #[test]
    fn readiness_records(v in readiness(), m in mutations()) { check(&v, &m)? }

    /// Longs and ints over their whole range (the shared strategies keep them plausible).
    #[test]
    fn extreme_numbers(
        d in decision(),
        a in approval(),
        r in delivery(),
        c in view_change(),
        (t, u, n) in (any::<i64>(), any::<i64>(), any::<i32>()),
        m in mutations(),
    ) {
        check(&DecisionEvent { occurred_at: Timestamp(t), ..d }, &m)?;
        check(&ApprovalEvent { due_at: Some(Timestamp(t)), expires_at: Some(Timestamp(u)), ..a }, &m)?;
        check(&ReportDeliveryEvent { attempt: n, ..r }, &m)?;
        let row = c.row.map(|row| match row {
            ViewRow::Coverage(r) => ViewRow::Coverage(CoverageRow { decisions: t, synthetic_decisions: u, ..r }),
            ViewRow::Delivery(r) => ViewRow::Delivery(DeliveryRow { attempt: n, ..r }),
            other => other,
        });
        check(&ViewChange { row, changed_at: Timestamp(u), ..c }, &m)?;
    }

    #[test]
    fn random_bytes(bytes in vec(byte(), 0..200)) {
        agree::<DecisionEvent>(&bytes)?;
        agree::<ApprovalEvent>(&bytes)?;
        agree::<RegistryEvent>(&bytes)?;
        agree::<ReportDeliveryEvent>(&bytes)?;
        agree::<ViewChange>(&bytes)?;
        agree::<Blocker>(&bytes)?;
        agree::<Readiness>(&bytes)?;
    }

    /// Arrays split into blocks as other writers may split them, some with negative counts and
    /// byte sizes, read back whole both ways.
    #[test]
    fn arrays_in_any_blocking(v in readiness(), splits in vec((1..4usize, any::<bool>()), 0..6)) {
        let mut bytes = Vec::new();
        write_bytes(v.tenant_id.as_bytes(), &mut bytes);
        v.stage.write_avro(&mut bytes);
        v.ready.write_avro(&mut bytes);
        let mut items = &v.blocker_ids[..];
        let mut splits = splits.into_iter();
        while !items.is_empty() {
            let (n, negative) = splits.next().unwrap_or((items.len(), false));
            let (block, rest) = items.split_at(n.min(items.len()));
            let mut body = Vec::new();
            for item in block {
                write_bytes(item.as_bytes(), &mut body);
            }
            if negative {
                write_long(-(block.len() as i64), &mut bytes);
                write_long(body.len() as i64, &mut bytes);
            } else {
                write_long(block.len() as i64, &mut bytes);
            }
            bytes.extend_from_slice(&body);
            items = rest;
        }
        bytes.push(0);
        v.evaluated_at.write_avro(&mut bytes);
        prop_assert_eq!(agree::<Readiness>(&bytes)?, Some(v));
    }
}

#[test]
fn the_codec_reads_its_own_schema_directly_and_others_through_values() {
    // The v1 DecisionEvent has no data_classes, approval_id or evidence: it resolves.
    let v1 = apache_avro::Schema::parse_str(codec::DECISION_EVENT_V1.json).unwrap();
    let current = DecisionEvent {
        event_id: "e".into(),
        tenant_id: "t".into(),
        occurred_at: Timestamp(1),
        source: "s".into(),
        agent_id: "a".into(),
        actor: "x".into(),
        environment: Environment::Pilot,
        action_kind: ActionKind::Git,
        target: "repo".into(),
        repo: None,
        workflow: None,
        mcp_server: None,
        mcp_tool: None,
        model_endpoint: None,
        control_id: None,
        policy_id: None,
        mode: Mode::Shadow,
        verdict: Verdict::Deny,
        risk: Risk::High,
        data_classes: vec![],
        synthetic: true,
        approval_id: None,
        api_key_id: None,
        scopes_used: vec![],
        evidence: None,
    };
    let apache_avro::types::Value::Record(fields) = current.to_avro() else {
        unreachable!()
    };
    // The v2 DecisionEvent has no api_key_id or scopes_used: it resolves too.
    let v2 = apache_avro::Schema::parse_str(codec::DECISION_EVENT_V2.json).unwrap();
    let older: [(&apache_avro::Schema, &codec::Published, &[&str]); 2] = [
        (
            &v1,
            &codec::DECISION_EVENT_V1,
            &[
                "data_classes",
                "approval_id",
                "api_key_id",
                "scopes_used",
                "evidence",
            ],
        ),
        (
            &v2,
            &codec::DECISION_EVENT_V2,
            &["api_key_id", "scopes_used"],
        ),
    ];
    for (schema, published, missing) in older {
        let value = apache_avro::types::Value::Record(
            fields
                .iter()
                .filter(|(name, _)| !missing.contains(&name.as_str()))
                .cloned()
                .collect(),
        );
        let mut bytes = vec![0xC3, 0x01];
        bytes.extend_from_slice(&published.fingerprint.to_le_bytes());
        bytes.extend_from_slice(&apache_avro::to_avro_datum(schema, value).unwrap());
        assert_eq!(
            Codec::new().decode::<DecisionEvent>(&bytes),
            Ok(current.clone()),
            "{}",
            published.file
        );
    }

    // A non-canonical varint under the current fingerprint is refused by the direct reader.
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&codec::DECISION_EVENT.fingerprint.to_le_bytes());
    let mut body = datum(&current);
    // event_id "e" is `02 65`: spell the length 1 as `82 00`.
    assert_eq!(&body[..2], &[0x02, b'e']);
    body.splice(0..1, [0x82, 0x00]);
    bytes.extend_from_slice(&body);
    let err = Codec::new().decode::<DecisionEvent>(&bytes).unwrap_err();
    assert_eq!(err.reason(), "malformed", "{err}");
    assert!(err.to_string().contains("DecisionEvent.event_id"), "{err}");
}

/// A control row written with the v3 view-change schema (before `last_enforced_at` and
/// `policies`) decodes with both defaulted: a consumer of the current schema reads the views
/// topic's older records.
#[test]
fn a_v3_control_row_reads_with_no_policies() {
    let row = ControlRow {
        asserted_by: None,
        control_id: "ctl".into(),
        state: ControlState::Shadowed,
        registered: true,
        enforced_decisions: 1,
        shadow_decisions: 2,
        high_risk_decisions: 0,
        action_kinds: vec!["git".into()],
        framework_mappings: vec![],
        decision_ids: vec!["d1".into()],
        last_decision_at: Some(Timestamp(5)),
        environments: vec![],
        last_enforced_at: None,
        policies: vec![],
    };
    let change = ViewChange {
        tenant_id: "t".into(),
        view: ViewName::Controls,
        key: "ctl".into(),
        op: ViewOp::Upsert,
        row: Some(ViewRow::Control(row.clone())),
        changed_at: Timestamp(5),
        cause_event_id: "d1".into(),
    };
    let v3 = apache_avro::Schema::parse_str(codec::VIEW_CHANGE_V3.json).unwrap();
    // The current value without the two new fields of the control row.
    let strip = |v: apache_avro::types::Value| -> apache_avro::types::Value {
        use apache_avro::types::Value;
        let Value::Record(fields) = v else {
            unreachable!()
        };
        Value::Record(
            fields
                .into_iter()
                .map(|(name, value)| match (name.as_str(), value) {
                    ("row", Value::Union(i, inner)) => match *inner {
                        Value::Record(row) => (
                            name,
                            Value::Union(
                                i,
                                Box::new(Value::Record(
                                    row.into_iter()
                                        .filter(|(f, _)| f != "last_enforced_at" && f != "policies")
                                        .collect(),
                                )),
                            ),
                        ),
                        other => (name, Value::Union(i, Box::new(other))),
                    },
                    (_, value) => (name, value),
                })
                .collect(),
        )
    };
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&codec::VIEW_CHANGE_V3.fingerprint.to_le_bytes());
    bytes.extend_from_slice(&apache_avro::to_avro_datum(&v3, strip(change.to_avro())).unwrap());
    assert_eq!(
        Codec::new().decode::<ViewChange>(&bytes),
        Ok(change.clone())
    );
    // And a row with both, in the current schema, round-trips.
    let mut with = row;
    with.last_enforced_at = Some(Timestamp(3));
    with.policies = vec![PolicyUse {
        policy_id: "p1".into(),
        first_seen_at: Timestamp(1),
        last_seen_at: Timestamp(3),
        decisions: 2,
    }];
    let current = ViewChange {
        row: Some(ViewRow::Control(with)),
        ..change
    };
    let codec = Codec::new();
    assert_eq!(
        codec.decode::<ViewChange>(&codec.encode(&current).unwrap()),
        Ok(current)
    );
}
