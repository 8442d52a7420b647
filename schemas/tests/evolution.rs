//! Records written with an older schema version decode with the current one.

use aispm_schemas::codec::{DECISION_EVENT, DECISION_EVENT_V1};
use aispm_schemas::*;
use apache_avro::types::Value;

/// A DecisionEvent as a v1 producer (no data_classes, approval_id, evidence) would have written it.
fn v1_datum() -> Vec<u8> {
    let s = |v: &str| Value::String(v.into());
    let none = || Value::Union(0, Box::new(Value::Null));
    let some = |v: &str| Value::Union(1, Box::new(Value::String(v.into())));
    let record = Value::Record(vec![
        ("event_id".into(), s("d-1")),
        ("tenant_id".into(), s("acme")),
        (
            "occurred_at".into(),
            Value::TimestampMillis(1_763_719_200_000),
        ),
        ("source".into(), s("gateway-eu")),
        ("agent_id".into(), s("agent-7")),
        ("actor".into(), s("alice")),
        ("environment".into(), Value::Enum(2, "production".into())),
        ("action_kind".into(), Value::Enum(3, "mcp".into())),
        ("target".into(), s("github/create_pr")),
        ("repo".into(), some("acme/app")),
        ("workflow".into(), none()),
        ("mcp_server".into(), some("github")),
        ("mcp_tool".into(), some("create_pr")),
        ("model_endpoint".into(), none()),
        ("control_id".into(), some("ctl-mcp")),
        ("policy_id".into(), none()),
        ("mode".into(), Value::Enum(0, "enforced".into())),
        ("verdict".into(), Value::Enum(0, "allow".into())),
        ("risk".into(), Value::Enum(2, "high".into())),
        ("synthetic".into(), Value::Boolean(false)),
    ]);
    apache_avro::to_avro_datum(&DECISION_EVENT_V1.schema, record).expect("valid v1 record")
}

fn check(event: DecisionEvent) {
    assert_eq!(event.event_id, "d-1");
    assert_eq!(event.action_kind, ActionKind::Mcp);
    assert_eq!(event.mcp_tool.as_deref(), Some("create_pr"));
    assert_eq!(event.risk, Risk::High);
    // Fields added after v1 take their defaults.
    assert_eq!(event.data_classes, Vec::<String>::new());
    assert_eq!(event.approval_id, None);
    assert_eq!(event.evidence, None);
}

#[test]
fn v1_single_object_records_resolve_to_the_current_schema() {
    assert_ne!(DECISION_EVENT_V1.fingerprint, DECISION_EVENT.fingerprint);
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&DECISION_EVENT_V1.fingerprint.to_le_bytes());
    bytes.extend_from_slice(&v1_datum());
    check(
        Codec::new()
            .decode::<DecisionEvent>(&bytes)
            .expect("v1 resolves"),
    );
}

#[test]
fn v1_confluent_records_resolve_once_the_registry_id_is_known() {
    let codec = Codec::new();
    let mut bytes = vec![0, 0, 0, 0, 7];
    bytes.extend_from_slice(&v1_datum());
    assert_eq!(
        codec.decode::<DecisionEvent>(&bytes),
        Err(DecodeError::UnknownSchemaId(7))
    );
    codec.register_schema_id(7, DECISION_EVENT_V1.json).unwrap();
    check(codec.decode::<DecisionEvent>(&bytes).expect("v1 resolves"));
}

#[test]
fn published_schemas_have_docs_on_every_field() {
    fn walk(v: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::Array(fields)) = m.get("fields") {
                    for f in fields {
                        let name = f["name"].as_str().unwrap_or("?");
                        if f.get("doc")
                            .and_then(|d| d.as_str())
                            .is_none_or(str::is_empty)
                        {
                            missing.push(format!("{path}.{name}"));
                        }
                        walk(&f["type"], &format!("{path}.{name}"), missing);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, path, missing)),
            _ => {}
        }
    }
    for p in aispm_schemas::codec::published_schemas() {
        let json: serde_json::Value = serde_json::from_str(p.json).unwrap();
        let mut missing = vec![];
        walk(&json, p.file, &mut missing);
        assert!(missing.is_empty(), "fields without doc: {missing:?}");
    }
}
