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

/// A control row and its view change, without the fields later schemas added.
fn plain_control_change() -> ViewChange {
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
        approvals: vec![],
    };
    ViewChange {
        tenant_id: "t".into(),
        view: ViewName::Controls,
        key: "ctl".into(),
        op: ViewOp::Upsert,
        row: Some(ViewRow::Control(row)),
        changed_at: Timestamp(5),
        cause_event_id: "d1".into(),
    }
}

/// `change` written with an older view-change schema: the current value without the control
/// row's fields that schema lacks, framed with its fingerprint.
fn written_with(older: &codec::Published, change: &ViewChange, newer_fields: &[&str]) -> Vec<u8> {
    use apache_avro::types::Value;
    let schema = apache_avro::Schema::parse_str(older.json).unwrap();
    let Value::Record(fields) = change.to_avro() else {
        unreachable!()
    };
    let stripped = Value::Record(
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
                                    .filter(|(f, _)| !newer_fields.contains(&f.as_str()))
                                    .collect(),
                            )),
                        ),
                    ),
                    other => (name, Value::Union(i, Box::new(other))),
                },
                (_, value) => (name, value),
            })
            .collect(),
    );
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&older.fingerprint.to_le_bytes());
    bytes.extend_from_slice(&apache_avro::to_avro_datum(&schema, stripped).unwrap());
    bytes
}

/// A control row written with the v3 view-change schema (before `last_enforced_at`,
/// `policies` and `approvals`) or the v4 one (before `approvals`) decodes with those
/// defaulted: a consumer of the current schema reads the views topic's older records.
#[test]
fn older_control_rows_read_with_the_newer_fields_defaulted() {
    let change = plain_control_change();
    let codec = Codec::new();
    let v3 = written_with(
        &codec::VIEW_CHANGE_V3,
        &change,
        &["last_enforced_at", "policies", "approvals"],
    );
    assert_eq!(codec.decode::<ViewChange>(&v3), Ok(change.clone()));
    let v4 = written_with(&codec::VIEW_CHANGE_V4, &change, &["approvals"]);
    assert_eq!(codec.decode::<ViewChange>(&v4), Ok(change.clone()));
    // And a row with all of them, in the current schema, round-trips.
    let Some(ViewRow::Control(mut with)) = change.row.clone() else {
        unreachable!()
    };
    with.last_enforced_at = Some(Timestamp(3));
    with.policies = vec![PolicyUse {
        policy_id: "p1".into(),
        first_seen_at: Timestamp(1),
        last_seen_at: Timestamp(3),
        decisions: 2,
    }];
    let mut month = ApprovalMonth {
        month: month_of(3),
        requested: 3,
        ..ApprovalMonth::default()
    };
    month.count_answer(90_000, true, 1);
    month.count_answer(30_000, false, 1);
    with.approvals = vec![month];
    let current = ViewChange {
        row: Some(ViewRow::Control(with)),
        ..change
    };
    assert_eq!(
        codec.decode::<ViewChange>(&codec.encode(&current).unwrap()),
        Ok(current)
    );
}

#[test]
fn months_are_utc_calendar_months_and_answers_fall_in_their_buckets() {
    // 2026-11-30T23:59:59.999Z and the next millisecond.
    let end = Timestamp::parse_rfc3339("2026-11-30T23:59:59.999Z")
        .unwrap()
        .0;
    assert_eq!(month_of(end), "2026-11");
    assert_eq!(month_of(end + 1), "2026-12");
    assert_eq!(month_index(end + 1) - month_index(end), 1);
    assert_eq!(month_of(0), "1970-01");
    assert_eq!(month_of(-1), "1969-12");
    assert_eq!(month_name(month_index(end) - 23), "2024-12");
    let mut m = ApprovalMonth {
        requested: 4,
        ..ApprovalMonth::default()
    };
    m.count_answer(60_000, true, 1); // at most a minute: bucket 0
    m.count_answer(60_001, true, 1); // bucket 1
    m.count_answer(700_000_000, false, 1); // over a week: the last bucket
    assert_eq!(m.decide_buckets, vec![1, 1, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!((m.granted, m.denied, m.pending()), (2, 1, 1));
    assert_eq!(m.quantile_bound(0.5), Some(Some(300_000)));
    assert_eq!(m.quantile_bound(1.0), Some(None));
    m.count_answer(700_000_000, false, -1); // taken back
    assert_eq!((m.denied, m.pending(), m.decide_ms_sum), (0, 2, 120_001));
    assert_eq!(ApprovalMonth::default().quantile_bound(0.5), None);
}
