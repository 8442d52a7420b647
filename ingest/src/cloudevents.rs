//! CloudEvents 1.0 in, structured JSON mode: `application/cloudevents+json` (one event) and
//! `application/cloudevents-batch+json` (an array), on `POST /v1/events`.
//!
//! The envelope's `type` names the aispm event (`aispm.decision.v1`, `aispm.approval.v1`,
//! `aispm.registry.v1`) and `data` is that event's JSON, as `POST /v1/events` takes it, without
//! its `type`. Envelope attributes fill what `data` leaves out: `time` is `occurred_at`,
//! `source` is `source`, and the event id is derived from (`source`, `id`), which the
//! CloudEvents spec makes unique, so a redelivered CloudEvent applies once. The extension
//! attribute `tenantid` may name the tenant instead of `data.tenant_id`.

use crate::item::Item;
use serde_json::Value;

/// The CloudEvents `type` of each aispm event type.
pub const TYPES: [(&str, &str); 3] = [
    ("aispm.decision.v1", "decision"),
    ("aispm.approval.v1", "approval"),
    ("aispm.registry.v1", "registry"),
];

/// One CloudEvent (structured mode) as an input item, or the reason it cannot be one.
pub fn item(envelope: Value) -> Item {
    let Value::Object(mut ce) = envelope else {
        return reject(None, "", "a CloudEvent must be a JSON object".into());
    };
    let text = |ce: &serde_json::Map<String, Value>, k: &str| {
        ce.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match text(&ce, "specversion").as_deref() {
        Some("1.0") => {}
        Some(v) => {
            return reject(
                None,
                "specversion",
                format!("specversion '{v}' is not supported: send CloudEvents 1.0"),
            );
        }
        None => return reject(None, "specversion", "specversion is required (1.0)".into()),
    }
    let (Some(id), Some(source), Some(kind)) =
        (text(&ce, "id"), text(&ce, "source"), text(&ce, "type"))
    else {
        return reject(
            None,
            "",
            "a CloudEvent needs the attributes id, source and type".into(),
        );
    };
    let event_id = event_id(&source, &id);
    let Some((_, aispm_type)) = TYPES.iter().find(|(t, _)| *t == kind) else {
        let known: Vec<&str> = TYPES.iter().map(|(t, _)| *t).collect();
        return reject(
            Some(event_id),
            "type",
            format!(
                "type '{kind}' is not an aispm event: use one of {}",
                known.join(", ")
            ),
        );
    };
    if let Some(ct) = text(&ce, "datacontenttype") {
        let essence = crate::item::media_type(&ct);
        if essence != "application/json" && !essence.ends_with("+json") {
            return reject(
                Some(event_id),
                "datacontenttype",
                format!("datacontenttype '{ct}': the data must be JSON"),
            );
        }
    }
    if ce.contains_key("data_base64") {
        return reject(
            Some(event_id),
            "data_base64",
            "binary data is not accepted: send the event as JSON in data".into(),
        );
    }
    let Some(Value::Object(mut data)) = ce.remove("data") else {
        return reject(
            Some(event_id),
            "data",
            "data must be the event as a JSON object".into(),
        );
    };
    data.insert("type".into(), Value::String((*aispm_type).to_owned()));
    data.entry("event_id").or_insert(Value::String(event_id));
    if let Some(time) = ce.remove("time") {
        data.entry("occurred_at").or_insert(time);
    }
    data.entry("source").or_insert(Value::String(source));
    if let Some(tenant) = ce.remove("tenantid") {
        data.entry("tenant_id").or_insert(tenant);
    }
    Item::Value(Value::Object(data))
}

/// The event id of the CloudEvent (`source`, `id`) when its data carries none: a UUIDv8 from
/// their SHA-256.
pub fn event_id(source: &str, id: &str) -> String {
    crate::item::content_id(&[b"cloudevent\0", source.as_bytes(), b"\0", id.as_bytes()])
}

fn reject(event_id: Option<String>, field: &str, reason: String) -> Item {
    Item::Rejected {
        event_id,
        field: field.to_owned(),
        reason,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_attributes_fill_the_event() {
        let ce = json!({"specversion": "1.0", "id": "42", "source": "//gw/eu", "type": "aispm.approval.v1",
            "time": "2026-12-01T10:00:00Z", "tenantid": "acme",
            "data": {"kind": "finding_resolved", "finding_id": "f", "actor": "bob"}});
        let Item::Value(v) = item(ce.clone()) else {
            panic!()
        };
        assert_eq!(v["type"], "approval");
        assert_eq!(v["tenant_id"], "acme");
        assert_eq!(v["occurred_at"], "2026-12-01T10:00:00Z");
        assert_eq!(v["source"], "//gw/eu");
        let Item::Value(again) = item(ce) else {
            panic!()
        };
        assert_eq!(
            v["event_id"], again["event_id"],
            "idempotent by (source, id)"
        );
    }

    #[test]
    fn bad_envelopes_say_why() {
        let field = |ce: Value| match item(ce) {
            Item::Rejected { field, .. } => field,
            Item::Value(v) => panic!("accepted {v}"),
        };
        let ok = json!({"specversion": "1.0", "id": "1", "source": "s", "type": "aispm.decision.v1", "data": {}});
        let with = |k: &str, v: Value| {
            let mut c = ok.clone();
            c[k] = v;
            c
        };
        assert_eq!(field(with("specversion", json!("0.3"))), "specversion");
        assert_eq!(field(with("type", json!("com.example.x"))), "type");
        assert_eq!(field(with("data", json!("text"))), "data");
        assert_eq!(
            field(with("datacontenttype", json!("text/xml"))),
            "datacontenttype"
        );
        assert_eq!(field(with("id", json!(""))), "");
        assert_eq!(field(json!([1])), "");
    }
}
