//! Hostile but well-formed input to the contract: unknown enum symbols (JSON and Avro), timestamps
//! far in the past and future, huge strings and arrays, deep nesting, tenants nobody knows.
//! Every case is a typed error naming the field (or, where the contract allows it, a value the
//! consumer's validation then refuses), never a panic or an unbounded allocation.

use aispm_schemas::avro::ToAvro;
use aispm_schemas::codec::{DECISION_EVENT, READINESS, encode_single_object};
use aispm_schemas::validate::{MAX_ID_LEN, MAX_ITEMS, MAX_TEXT_LEN, MAX_TIMESTAMP, MIN_TIMESTAMP};
use aispm_schemas::*;
use apache_avro::types::Value as Avro;
use serde_json::{Value, json};

fn decision() -> Value {
    json!({"type":"decision","event_id":"e1","tenant_id":"acme","occurred_at":"2026-11-21T10:00:00Z",
           "source":"gw","agent_id":"a","actor":"alice","environment":"production","action_kind":"file",
           "target":"/etc/passwd","mode":"enforced","verdict":"deny","risk":"high"})
}

fn approval() -> Value {
    json!({"type":"approval","event_id":"a1","tenant_id":"acme","occurred_at":"2026-11-21T10:05:00Z",
           "source":"approvals","kind":"finding_assigned","finding_id":"AISPM-DATA-001:x/pii",
           "actor":"lead","owner":"privacy-team","due_at":"2026-11-24T00:00:00Z"})
}

fn registry() -> Value {
    json!({"type":"registry","event_id":"r1","tenant_id":"acme","occurred_at":"2026-11-21T09:00:00Z",
           "source":"registry","asset":{"asset_kind":"mcp_tool","asset_id":"github-mcp/delete_repo",
           "status":"registered","trust":"risky","owner":"platform-team"}})
}

fn validation() -> Value {
    json!({"type":"registry","event_id":"v1","tenant_id":"acme","occurred_at":"2026-11-21T09:00:00Z",
           "source":"validator","validation":{"check_kind":"tenant_isolation","result":"pass","environment":"production"}})
}

/// Sets `path` (`a` or `a.b`) in `v`.
fn set(mut v: Value, path: &str, x: Value) -> Value {
    let mut at = &mut v;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            at[p] = x;
            break;
        }
        at = &mut at[p];
    }
    v
}

/// The fields the event's errors name.
fn refused(v: Value) -> Vec<String> {
    match InputEvent::from_json(v.clone()) {
        Ok(e) => panic!("accepted {v}: {e:?}"),
        Err(errors) => errors.into_iter().map(|e| e.field).collect(),
    }
}

fn accepted(v: Value) -> InputEvent {
    InputEvent::from_json(v.clone()).unwrap_or_else(|e| panic!("refused {v}: {e:?}"))
}

#[test]
fn the_fixtures_are_valid() {
    for v in [decision(), approval(), registry(), validation()] {
        accepted(v);
    }
}

#[test]
fn a_validation_must_name_the_environment_it_validated() {
    // A result that names no stage could be read as any stage's: it is refused.
    let mut v = validation();
    v["validation"]
        .as_object_mut()
        .unwrap()
        .remove("environment");
    assert_eq!(refused(v), ["validation.environment"]);
    let v = set(validation(), "validation.environment", json!(null));
    assert_eq!(refused(v), ["validation.environment"]);
}

#[test]
fn unknown_enum_symbols_in_json_name_their_field() {
    let cases = [
        (decision(), "environment"),
        (decision(), "action_kind"),
        (decision(), "mode"),
        (decision(), "verdict"),
        (decision(), "risk"),
        (approval(), "kind"),
        (registry(), "asset.asset_kind"),
        (registry(), "asset.status"),
        (registry(), "asset.trust"),
        (validation(), "validation.check_kind"),
        (validation(), "validation.result"),
        (validation(), "validation.environment"),
    ];
    for (base, field) in cases {
        // Unknown, empty, the right word in the wrong case or padded, not a string.
        for bad in [
            json!("apocalyptic"),
            json!(""),
            json!("HIGH"),
            json!("production "),
            json!(2),
            json!(["high"]),
            json!({"risk": "high"}),
        ] {
            let fields = refused(set(base.clone(), field, bad.clone()));
            assert_eq!(fields, [field], "{field} = {bad}");
        }
    }
}

/// The DecisionEvent schema with a fifth `Risk` symbol, as a newer producer might write it.
fn schema_with_an_extra_risk_symbol() -> (String, apache_avro::Schema) {
    let json = DECISION_EVENT
        .json
        .replacen("\"critical\"", "\"critical\", \"apocalyptic\"", 1);
    assert_ne!(json, DECISION_EVENT.json);
    let schema = apache_avro::Schema::parse_str(&json).unwrap();
    (json, schema)
}

/// A valid decision's datum with `risk` set to the fifth symbol.
fn datum_with_risk_index_4(schema: &apache_avro::Schema) -> Vec<u8> {
    let InputEvent::Decision(d) = accepted(decision()) else {
        unreachable!()
    };
    let Avro::Record(mut fields) = d.to_avro() else {
        unreachable!()
    };
    for (name, v) in &mut fields {
        if name == "risk" {
            *v = Avro::Enum(4, "apocalyptic".into());
        }
    }
    apache_avro::to_avro_datum(schema, Avro::Record(fields)).unwrap()
}

#[test]
fn unknown_enum_symbols_resolve_to_the_default_or_are_typed_errors() {
    let (json, schema) = schema_with_an_extra_risk_symbol();
    let datum = datum_with_risk_index_4(&schema);

    // Written with a schema that has the symbol (a newer producer): the reader's enum default
    // stands for it, the fail-safe one (an unknown risk is critical; tests/evolution.rs).
    let codec = Codec::new();
    codec.register_schema_id(99, &json).unwrap();
    let mut framed = vec![0, 0, 0, 0, 99];
    framed.extend_from_slice(&datum);
    let event = codec.decode::<DecisionEvent>(&framed).unwrap();
    assert_eq!(event.risk, Risk::Critical);

    // The same datum claiming the current schema: index 4 of a 4-symbol enum is malformed.
    let mut single = vec![0xC3, 0x01];
    single.extend_from_slice(&DECISION_EVENT.fingerprint.to_le_bytes());
    single.extend_from_slice(&datum);
    let err = codec.decode::<DecisionEvent>(&single).unwrap_err();
    assert_eq!(err.reason(), "malformed", "{err}");
}

#[test]
fn timestamps_far_in_the_past_and_future_are_refused_in_json() {
    let day_ms = 86_400_000;
    for (at, ok) in [
        (json!("2000-01-01T00:00:00Z"), true),
        (json!("2100-01-01T00:00:00Z"), true),
        (json!(MIN_TIMESTAMP.0), true),
        (json!("1999-12-31T23:59:59.999Z"), false),
        (json!("2100-01-01T00:00:00.001Z"), false),
        (json!("1970-01-01T00:00:00Z"), false),
        (json!("0000-01-01T00:00:00Z"), false),
        (json!("9999-12-31T23:59:59Z"), false),
        (json!("+275760-09-13T00:00:00Z"), false),
        (json!("2026-13-45T25:61:61Z"), false),
        (json!(MAX_TIMESTAMP.0 + day_ms), false),
        (json!(-1), false),
        (json!(i64::MIN), false),
        (json!(i64::MAX), false),
        (json!(u64::MAX), false),
        (json!(1.763_719_2e12), false),
        (json!("1763719200000"), false),
    ] {
        let v = set(decision(), "occurred_at", at.clone());
        if ok {
            accepted(v);
        } else {
            assert_eq!(refused(v), ["occurred_at"], "occurred_at = {at}");
        }
    }
    // Optional timestamps are bounded too.
    for field in ["due_at", "expires_at"] {
        for at in [json!("1970-01-01T00:00:00Z"), json!(i64::MAX)] {
            assert_eq!(refused(set(approval(), field, at)), [field]);
        }
    }
}

#[test]
fn timestamps_far_in_the_past_and_future_decode_from_avro_and_fail_validation() {
    let InputEvent::Decision(mut d) = accepted(decision()) else {
        unreachable!()
    };
    for t in [i64::MIN, -1, 0, MAX_TIMESTAMP.0 + 1, i64::MAX] {
        d.occurred_at = Timestamp(t);
        let bytes = encode_single_object(&d).unwrap();
        let back: DecisionEvent = Codec::new().decode(&bytes).unwrap();
        assert_eq!(back, d);
        let fields: Vec<String> = back.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["occurred_at"], "occurred_at = {t}");
        // Rendering it for logs, the API or a dead letter never panics.
        let _ = back.occurred_at.to_string();
        let json = InputEvent::Decision(back).to_json();
        assert_eq!(refused(json), ["occurred_at"]);
    }
}

#[test]
fn huge_strings_are_refused_naming_the_field() {
    let id_fields = [
        "event_id",
        "source",
        "agent_id",
        "actor",
        "repo",
        "control_id",
    ];
    for field in id_fields {
        accepted(set(decision(), field, json!("x".repeat(MAX_ID_LEN))));
        for len in [MAX_ID_LEN + 1, 1 << 20] {
            assert_eq!(
                refused(set(decision(), field, json!("x".repeat(len)))),
                [field],
                "{field}: {len} bytes"
            );
        }
    }
    accepted(set(decision(), "target", json!("x".repeat(MAX_TEXT_LEN))));
    assert_eq!(
        refused(set(decision(), "target", json!("x".repeat(1 << 20)))),
        ["target"]
    );
    // Multi-byte characters count in bytes.
    assert_eq!(
        refused(set(decision(), "agent_id", json!("é".repeat(MAX_ID_LEN)))),
        ["agent_id"]
    );
    assert_eq!(
        refused(set(
            registry(),
            "asset.asset_id",
            json!("x".repeat(1 << 20))
        )),
        ["asset.asset_id"]
    );
}

#[test]
fn huge_arrays_are_refused_with_a_bounded_list_of_errors() {
    accepted(set(
        decision(),
        "data_classes",
        json!(vec!["pii"; MAX_ITEMS]),
    ));
    let fields = refused(set(
        decision(),
        "data_classes",
        json!(vec!["pii"; MAX_ITEMS + 1]),
    ));
    assert_eq!(fields, ["data_classes"]);
    // A huge array of invalid items: one error for the array, not one per item (an error list
    // many times the size of the body would multiply the memory a request costs).
    let fields = refused(set(decision(), "data_classes", json!(vec![""; 100_000])));
    assert!(
        fields.len() <= MAX_ITEMS + 1,
        "{} errors for one array",
        fields.len()
    );
    assert_eq!(fields[0], "data_classes");
    let attributes: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("bad key\n{i}"), json!("v")))
        .collect();
    let fields = refused(set(
        registry(),
        "asset.attributes",
        Value::Object(attributes),
    ));
    assert!(
        fields.len() <= MAX_ITEMS + 1,
        "{} errors for one map",
        fields.len()
    );
    assert_eq!(fields[0], "asset.attributes");
}

#[test]
fn deep_nesting_inside_a_field_is_a_type_error() {
    let mut deep = json!("pii");
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let fields = refused(set(decision(), "data_classes", json!([deep])));
    assert_eq!(fields, ["data_classes[0]"]);
    let mut deep = json!({});
    for _ in 0..100 {
        deep = json!({ "x": deep });
    }
    assert_eq!(refused(set(decision(), "target", deep.clone())), ["target"]);
    // Evidence is a closed record: the nested object is an unknown field.
    assert_eq!(refused(set(decision(), "evidence", deep)), ["evidence.x"]);
}

#[test]
fn tenants_are_well_formed_names_whoever_they_are() {
    // The contract accepts a tenant nobody configured (authorization is the services' job)...
    for t in ["unknown-tenant", "a", "x.y_z-0", &"t".repeat(64)] {
        accepted(set(decision(), "tenant_id", json!(t)));
    }
    // ...but only as a plain name: nothing that could address another tenant's keys or paths.
    for t in [
        "",
        "acme/evil",
        "../acme",
        "acme globex",
        "acme\u{0}globex",
        "acmé",
        "*",
        &"t".repeat(65),
    ] {
        assert_eq!(
            refused(set(decision(), "tenant_id", json!(t))),
            ["tenant_id"],
            "{t:?}"
        );
    }
}

#[test]
fn a_huge_declared_array_is_refused_without_allocating_it() {
    // A Readiness whose blocker_ids claims 2^40 items: tenant "t", stage 0, ready, then the count.
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&READINESS.fingerprint.to_le_bytes());
    bytes.extend_from_slice(&[0x02, b't', 0x00, 0x01]);
    let mut n: u64 = 1 << 41; // zig-zag of 2^40
    while n >= 0x80 {
        bytes.push((n as u8) | 0x80);
        n >>= 7;
    }
    bytes.push(n as u8);
    let err = Codec::new().decode::<Readiness>(&bytes).unwrap_err();
    assert_eq!(err.reason(), "malformed", "{err}");
    // A negative count announces a block size: also huge, also refused.
    bytes.truncate(14);
    bytes.extend_from_slice(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x40, 0xFE, 0xFF, 0x01]);
    assert!(Codec::new().decode::<Readiness>(&bytes).is_err());
}
