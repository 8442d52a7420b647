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

/// Every enum of every published schema has a default symbol (one of its own), so a reader
/// of today resolves a symbol a newer writer added instead of failing the record.
#[test]
fn every_published_enum_has_a_default_symbol() {
    fn walk(v: &serde_json::Value, missing: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                if o.get("type").and_then(|t| t.as_str()) == Some("enum") {
                    let symbols = o["symbols"].as_array().unwrap();
                    if !o.get("default").is_some_and(|d| symbols.contains(d)) {
                        missing.push(o["name"].to_string());
                    }
                }
                o.values().for_each(|v| walk(v, missing));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, missing)),
            _ => {}
        }
    }
    for p in aispm_schemas::codec::published_schemas()
        .into_iter()
        .filter(|p| !p.file.starts_with("v1/"))
    {
        let mut missing = Vec::new();
        walk(&serde_json::from_str(p.json).unwrap(), &mut missing);
        assert!(
            missing.is_empty(),
            "{}: enums without a default: {missing:?}",
            p.file
        );
    }
}

/// A newer writer added symbols (a verdict `quarantine`, a risk `catastrophic`): this reader
/// decodes its records with its own defaults for them (`allow`, read as no block, and
/// `critical`), found through the writer's registry id.
#[test]
fn an_older_reader_reads_a_newer_writers_new_symbols_as_its_defaults() {
    let newer = DECISION_EVENT
        .json
        .replacen(
            r#""break_glass""#,
            r#""break_glass",
          "quarantine""#,
            1,
        )
        .replacen(
            r#""critical""#,
            r#""critical",
          "catastrophic""#,
            1,
        );
    assert_ne!(newer, DECISION_EVENT.json);
    let schema = apache_avro::Schema::parse_str(&newer).unwrap();
    let s = |v: &str| Value::String(v.into());
    let none = || Value::Union(0, Box::new(Value::Null));
    let record = Value::Record(vec![
        ("event_id".into(), s("d-2")),
        ("tenant_id".into(), s("acme")),
        (
            "occurred_at".into(),
            Value::TimestampMillis(1_763_719_200_000),
        ),
        ("source".into(), s("gateway-next")),
        ("agent_id".into(), s("agent-7")),
        ("actor".into(), s("alice")),
        ("environment".into(), Value::Enum(2, "production".into())),
        ("action_kind".into(), Value::Enum(3, "mcp".into())),
        ("target".into(), s("github/create_pr")),
        ("repo".into(), none()),
        ("workflow".into(), none()),
        ("mcp_server".into(), none()),
        ("mcp_tool".into(), none()),
        ("model_endpoint".into(), none()),
        ("control_id".into(), none()),
        ("policy_id".into(), none()),
        ("mode".into(), Value::Enum(0, "enforced".into())),
        ("verdict".into(), Value::Enum(4, "quarantine".into())),
        ("risk".into(), Value::Enum(4, "catastrophic".into())),
        ("data_classes".into(), Value::Array(vec![])),
        ("synthetic".into(), Value::Boolean(false)),
        ("approval_id".into(), none()),
        ("api_key_id".into(), none()),
        ("scopes_used".into(), Value::Array(vec![])),
        ("evidence".into(), none()),
    ]);
    let mut bytes = vec![0, 0, 0, 0, 42];
    bytes.extend(apache_avro::to_avro_datum(&schema, record).expect("valid newer record"));
    let codec = Codec::new();
    codec.register_schema_id(42, &newer).unwrap();
    let event = codec
        .decode::<DecisionEvent>(&bytes)
        .expect("the new symbols resolve");
    assert_eq!(
        (event.verdict, event.risk),
        (Verdict::Allow, Risk::Critical)
    );
    assert_eq!(
        event.mode,
        Mode::Enforced,
        "known symbols stay what they were"
    );
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
