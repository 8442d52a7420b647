//! The JSON form of input events (the ingest API's body): the Avro field names, timestamps in
//! RFC 3339, plus a `type` field naming the event.

use crate::codec::Codec;
use crate::error::{EncodeError, FieldError};
use crate::events::{ApprovalEvent, DecisionEvent, RegistryEvent};
use crate::topics::Topics;
use crate::validate::Validate;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// An input event as submitted over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputEvent {
    Decision(DecisionEvent),
    Approval(ApprovalEvent),
    Registry(RegistryEvent),
}

/// The `type` values accepted.
pub const EVENT_TYPES: [&str; 3] = ["decision", "approval", "registry"];

/// The type of an input event, which decides its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    Decision,
    Approval,
    Registry,
}

impl InputKind {
    /// Every input event type: the topics a producer of events writes to.
    pub const ALL: [InputKind; 3] = [
        InputKind::Decision,
        InputKind::Approval,
        InputKind::Registry,
    ];

    /// The one mapping from event type to input topic, used by every producer (ingest,
    /// `emit`, the generators).
    pub fn topic(self, topics: &Topics) -> &str {
        match self {
            InputKind::Decision => &topics.decisions,
            InputKind::Approval => &topics.approvals,
            InputKind::Registry => &topics.registry,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InputKind::Decision => "decision",
            InputKind::Approval => "approval",
            InputKind::Registry => "registry",
        }
    }
}

impl InputEvent {
    /// Parses one JSON object (with `type`) and validates it. Errors name the field.
    pub fn from_json(value: Value) -> Result<Self, Vec<FieldError>> {
        let Value::Object(mut map) = value else {
            return Err(vec![FieldError::new("", "an event must be a JSON object")]);
        };
        let kind = match map.remove("type") {
            Some(Value::String(s)) => s,
            Some(_) => return Err(vec![FieldError::new("type", "must be a string")]),
            None => {
                return Err(vec![FieldError::new(
                    "type",
                    "is required (decision, approval or registry)",
                )]);
            }
        };
        let value = Value::Object(map);
        let event = match kind.as_str() {
            "decision" => InputEvent::Decision(parse(value)?),
            "approval" => InputEvent::Approval(parse(value)?),
            "registry" => InputEvent::Registry(parse(value)?),
            other => {
                return Err(vec![FieldError::new(
                    "type",
                    format!(
                        "unknown event type '{other}' (expected decision, approval or registry)"
                    ),
                )]);
            }
        };
        let errors = event.validate();
        if errors.is_empty() {
            Ok(event)
        } else {
            Err(errors)
        }
    }

    /// The JSON form, with `type`.
    pub fn to_json(&self) -> Value {
        let (kind, value) = match self {
            InputEvent::Decision(e) => ("decision", serde_json::to_value(e)),
            InputEvent::Approval(e) => ("approval", serde_json::to_value(e)),
            InputEvent::Registry(e) => ("registry", serde_json::to_value(e)),
        };
        let mut value = value.unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("type".into(), Value::String(kind.into()));
        }
        value
    }

    /// `decision`, `approval` or `registry` (the JSON `type`).
    pub fn kind(&self) -> &'static str {
        self.input_kind().as_str()
    }

    /// The input topic of its type (see [`InputKind::topic`]).
    pub fn topic<'a>(&self, topics: &'a Topics) -> &'a str {
        self.input_kind().topic(topics)
    }

    pub fn input_kind(&self) -> InputKind {
        match self {
            InputEvent::Decision(_) => InputKind::Decision,
            InputEvent::Approval(_) => InputKind::Approval,
            InputEvent::Registry(_) => InputKind::Registry,
        }
    }

    /// Its Avro bytes, framed as `codec` frames every record.
    pub fn encode(&self, codec: &Codec) -> Result<Vec<u8>, EncodeError> {
        match self {
            InputEvent::Decision(e) => codec.encode(e),
            InputEvent::Approval(e) => codec.encode(e),
            InputEvent::Registry(e) => codec.encode(e),
        }
    }

    pub fn tenant_id(&self) -> &str {
        match self {
            InputEvent::Decision(e) => &e.tenant_id,
            InputEvent::Approval(e) => &e.tenant_id,
            InputEvent::Registry(e) => &e.tenant_id,
        }
    }

    pub fn event_id(&self) -> &str {
        match self {
            InputEvent::Decision(e) => &e.event_id,
            InputEvent::Approval(e) => &e.event_id,
            InputEvent::Registry(e) => &e.event_id,
        }
    }

    pub fn occurred_at(&self) -> crate::Timestamp {
        match self {
            InputEvent::Decision(e) => e.occurred_at,
            InputEvent::Approval(e) => e.occurred_at,
            InputEvent::Registry(e) => e.occurred_at,
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        match self {
            InputEvent::Decision(e) => e.validate(),
            InputEvent::Approval(e) => e.validate(),
            InputEvent::Registry(e) => e.validate(),
        }
    }
}

fn parse<T: DeserializeOwned>(value: Value) -> Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![FieldError::new(path, e.into_inner().to_string())]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decision() -> Value {
        json!({"type":"decision","event_id":"e1","tenant_id":"acme","occurred_at":"2026-11-21T10:00:00Z",
               "source":"gw","agent_id":"a","actor":"alice","environment":"production","action_kind":"file",
               "target":"/etc/passwd","mode":"enforced","verdict":"deny","risk":"high"})
    }

    #[test]
    fn parses_and_round_trips() {
        let e = InputEvent::from_json(decision()).unwrap();
        assert_eq!(e.kind(), "decision");
        assert_eq!(InputEvent::from_json(e.to_json()).unwrap(), e);
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = decision();
        v["risk"] = json!("extreme");
        let errs = InputEvent::from_json(v).unwrap_err();
        assert_eq!(errs[0].field, "risk");
        assert!(
            errs[0].reason.contains("unknown variant"),
            "{}",
            errs[0].reason
        );

        let mut v = decision();
        v["evidence"] = json!({"evidence_id":"ev","sha256":"abc","uri":"s3://x"});
        let errs = InputEvent::from_json(v).unwrap_err();
        assert_eq!(errs[0].field, "evidence.sha256");

        let mut v = decision();
        v["tenant_id"] = json!("acme/evil");
        assert_eq!(InputEvent::from_json(v).unwrap_err()[0].field, "tenant_id");

        let mut v = decision();
        v["colour"] = json!("red");
        assert!(
            InputEvent::from_json(v).unwrap_err()[0]
                .reason
                .contains("unknown field")
        );

        let mut v = decision();
        v["type"] = json!("gossip");
        assert_eq!(InputEvent::from_json(v).unwrap_err()[0].field, "type");

        let mut v = decision();
        v["action_kind"] = json!("mcp");
        let errs = InputEvent::from_json(v).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["mcp_server", "mcp_tool"]);
    }
}
