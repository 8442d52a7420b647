//! Request bodies: one JSON event, a JSON array of events, NDJSON (one event per line),
//! CloudEvents ([`crate::cloudevents`]) or OTLP traces ([`crate::otlp`]); each item parsed and
//! validated against the contract, with generated `event_id`s where the client sent none.
//!
//! A generated id is derived from the event's content (a UUIDv8 over the SHA-256 of its JSON),
//! so resending the same body after a timeout or a 503 yields the same ids and consumers apply
//! the event once.

use aispm_runtime::auth::Scope;
use aispm_schemas::{AssetKind, FieldError, InputEvent, Timestamp};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// How the body is framed, from `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (or any `+json`): one object or an array of objects.
    Json,
    /// `application/x-ndjson` (also `application/ndjson`, `application/jsonl`,
    /// `application/x-jsonlines`): one object per line; blank lines are skipped.
    Ndjson,
    /// `application/cloudevents+json`: one CloudEvent in structured mode.
    CloudEvent,
    /// `application/cloudevents-batch+json`: an array of CloudEvents.
    CloudEventBatch,
    /// `POST /v1/traces`: an OTLP export request.
    Otlp(crate::otlp::Encoding),
}

pub use crate::item::Item;

impl Format {
    /// The format for a `Content-Type` header; a missing header means JSON.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Format, String> {
        let Some(ct) = content_type else {
            return Ok(Format::Json);
        };
        match crate::item::media_type(ct).as_str() {
            "application/json" => Ok(Format::Json),
            "application/cloudevents+json" => Ok(Format::CloudEvent),
            "application/cloudevents-batch+json" => Ok(Format::CloudEventBatch),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines" => Ok(Format::Ndjson),
            e if e.starts_with("application/") && e.ends_with("+json") => Ok(Format::Json),
            other => Err(format!(
                "unsupported content type '{other}': send application/json (one event or an array), application/x-ndjson (one event per line) or application/cloudevents+json (or -batch+json)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::CloudEvent | Format::CloudEventBatch => "cloudevents",
            Format::Otlp(_) => "otlp",
        }
    }
}

/// One reason one item of a request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemError {
    /// Position of the item in the array (0 for a single object; for NDJSON, among the
    /// non-blank lines).
    pub index: usize,
    /// NDJSON only: the 1-based line number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The item's `event_id`, when it had a usable one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The offending field (`risk`, `evidence.sha256`, …); empty for the item as a whole.
    pub field: String,
    pub reason: String,
}

/// An `event_id` the service generated for an item that had none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Generated {
    pub index: usize,
    pub event_id: String,
}

/// A parsed body: the valid events in order, the rejected items' errors, and every tenant
/// any item names (valid or not) for the authorization check.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The valid events, in order (the API drops them once they are encoded).
    pub events: Vec<InputEvent>,
    /// Where each valid event was in the body: its item index and, for NDJSON, its line.
    pub positions: Vec<(usize, Option<usize>)>,
    /// How many valid events of each type (`decision`, `approval`, `registry`).
    pub by_type: BTreeMap<&'static str, u64>,
    pub generated: Vec<Generated>,
    pub errors: Vec<ItemError>,
    /// How many items were rejected (an item may carry several errors).
    pub rejected: usize,
    pub tenants: BTreeSet<String>,
    /// The scopes the valid items need (see [`scope_for`]).
    pub scopes: BTreeSet<Scope>,
    /// OTLP: spans that were not actions, by reason.
    pub ignored: BTreeMap<&'static str, u64>,
}

impl Parsed {
    /// Items in the body, valid or not.
    pub fn items(&self) -> usize {
        self.valid() + self.rejected
    }

    /// Valid items in the body.
    pub fn valid(&self) -> usize {
        self.by_type.values().sum::<u64>() as usize
    }
}

/// At most this many item errors are listed in a 400 answer (the count is always exact).
pub const MAX_LISTED_ERRORS: usize = 1000;

/// Item errors kept per request: the answer lists at most [`MAX_LISTED_ERRORS`], and one more
/// tells it the list was cut. Without a cap, a body of many small mistakes (a huge array of
/// empty strings) would hold an error of some hundred bytes per three bytes of body.
/// [`Parsed::rejected`] still counts every rejected item.
pub const MAX_KEPT_ERRORS: usize = MAX_LISTED_ERRORS + 1;

/// Why a body as a whole cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the body must be a JSON object (one event) or an array of objects")]
    Shape,
    #[error("{0}")]
    Envelope(String),
    #[error("the body decompresses to more than {max} bytes; split it into smaller requests")]
    Inflated { max: usize },
    #[error("the body holds no events")]
    Empty,
    #[error("the body holds {count} events; at most {max} are accepted per request")]
    TooManyEvents { count: usize, max: usize },
}

/// The scope a token needs to write `event`: decisions need `emit`; approval events
/// `approve`; validation results `validate`; trust roots (and validator keys, which are trust
/// roots) and report providers (which carry the approved recipients) `admin`; every other asset
/// `register`.
pub fn scope_for(event: &InputEvent) -> Scope {
    match event {
        InputEvent::Decision(_) => Scope::Emit,
        InputEvent::Approval(_) => Scope::Approve,
        InputEvent::Registry(r) => match (&r.asset, &r.validation) {
            (_, Some(_)) => Scope::Validate,
            (Some(a), None)
                if matches!(
                    a.asset_kind,
                    AssetKind::TrustRoot | AssetKind::ReportProvider
                ) || !a.recipients.is_empty() =>
            {
                Scope::Admin
            }
            _ => Scope::Register,
        },
    }
}

/// Parses and validates every item of `body`. An item dated after `latest` (the service's
/// clock plus the tolerance) is rejected as `future_occurred_at`.
pub fn parse(
    body: &[u8],
    format: Format,
    max_events: usize,
    latest: Timestamp,
) -> Result<Parsed, BodyError> {
    parse_with(body, format, max_events, latest, None)
}

/// As [`parse`], with the tenant of OTLP spans that name none (`default_tenant`: the token's,
/// when it is bound to exactly one).
pub fn parse_with(
    body: &[u8],
    format: Format,
    max_events: usize,
    latest: Timestamp,
    default_tenant: Option<&str>,
) -> Result<Parsed, BodyError> {
    let mut parsed = Parsed::default();
    let items = match format {
        Format::Json | Format::CloudEvent | Format::CloudEventBatch => {
            let value: Value =
                serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))?;
            let values = match (format, value) {
                (Format::Json, Value::Array(items)) => items,
                (Format::Json, v @ Value::Object(_)) => vec![v],
                (Format::CloudEventBatch, Value::Array(items)) => items,
                (Format::CloudEvent, v @ Value::Object(_)) => vec![v],
                (Format::CloudEventBatch, _) => {
                    return Err(BodyError::Envelope(
                        "a CloudEvents batch must be a JSON array of CloudEvents".into(),
                    ));
                }
                (Format::CloudEvent, _) => {
                    return Err(BodyError::Envelope(
                        "a CloudEvent must be a JSON object".into(),
                    ));
                }
                _ => return Err(BodyError::Shape),
            };
            if values.len() > max_events {
                return Err(BodyError::TooManyEvents {
                    count: values.len(),
                    max: max_events,
                });
            }
            if format == Format::Json {
                values.into_iter().map(Item::Value).collect()
            } else {
                values.into_iter().map(crate::cloudevents::item).collect()
            }
        }
        Format::Otlp(encoding) => {
            let request = crate::otlp::decode(body, encoding).map_err(BodyError::Envelope)?;
            let spans = crate::otlp::spans(&request, default_tenant);
            if spans.items.len() > max_events {
                return Err(BodyError::TooManyEvents {
                    count: spans.items.len(),
                    max: max_events,
                });
            }
            parsed.ignored = spans.ignored;
            spans.items
        }
        Format::Ndjson => Vec::new(),
    };
    parsed.events.reserve(items.len());
    for (index, item) in items.into_iter().enumerate() {
        match item {
            Item::Value(item) => parse_item(&mut parsed, index, None, item, latest),
            Item::Rejected {
                event_id,
                field,
                reason,
            } => {
                parsed.rejected += 1;
                if parsed.errors.len() < MAX_KEPT_ERRORS {
                    parsed.errors.push(ItemError {
                        index,
                        line: None,
                        event_id,
                        field,
                        reason,
                    });
                }
            }
        }
    }
    if format == Format::Ndjson {
        {
            let lines: Vec<(usize, &[u8])> = body
                .split(|b| *b == b'\n')
                .enumerate()
                .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
                .map(|(n, l)| (n + 1, l))
                .collect();
            if lines.len() > max_events {
                return Err(BodyError::TooManyEvents {
                    count: lines.len(),
                    max: max_events,
                });
            }
            parsed.events.reserve(lines.len());
            for (index, (line, bytes)) in lines.into_iter().enumerate() {
                match serde_json::from_slice::<Value>(bytes) {
                    Ok(item) => parse_item(&mut parsed, index, Some(line), item, latest),
                    Err(e) => {
                        parsed.rejected += 1;
                        if parsed.errors.len() < MAX_KEPT_ERRORS {
                            parsed.errors.push(ItemError {
                                index,
                                line: Some(line),
                                event_id: None,
                                field: String::new(),
                                reason: format!("not valid JSON: {e}"),
                            });
                        }
                    }
                }
            }
        }
    }
    // An OTLP export of spans none of which is an action is accepted as it is: nothing to
    // record, and the answer says what was ignored.
    if parsed.items() == 0 && parsed.ignored.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(parsed)
}

fn parse_item(
    parsed: &mut Parsed,
    index: usize,
    line: Option<usize>,
    mut item: Value,
    latest: Timestamp,
) {
    let mut generated = None;
    let mut event_id = None;
    if let Value::Object(map) = &mut item {
        if let Some(Value::String(t)) = map.get("tenant_id") {
            parsed.tenants.insert(t.clone());
        }
        match map.get("event_id") {
            None | Some(Value::Null) => {
                map.remove("event_id");
                let id = derive_event_id(&item);
                generated = Some(id.clone());
                if let Value::Object(map) = &mut item {
                    map.insert("event_id".into(), Value::String(id));
                }
            }
            Some(Value::String(id)) => event_id = Some(id.clone()),
            Some(_) => {}
        }
    }
    let event = InputEvent::from_json(item).and_then(|event| {
        if event.occurred_at() > latest {
            Err(vec![FieldError::new(
                "occurred_at",
                format!(
                    "future_occurred_at: {} is later than this service's clock allows (latest accepted: {latest}); send the time the event happened",
                    event.occurred_at()
                ),
            )])
        } else {
            Ok(event)
        }
    });
    match event {
        Ok(event) => {
            parsed.scopes.insert(scope_for(&event));
            if let Some(event_id) = generated {
                parsed.generated.push(Generated { index, event_id });
            }
            *parsed.by_type.entry(event.kind()).or_insert(0) += 1;
            parsed.positions.push((index, line));
            parsed.events.push(event);
        }
        Err(errors) => {
            parsed.rejected += 1;
            let event_id = event_id.or(generated);
            let room = MAX_KEPT_ERRORS.saturating_sub(parsed.errors.len());
            parsed.errors.extend(errors.into_iter().take(room).map(
                |FieldError { field, reason, .. }| ItemError {
                    index,
                    line,
                    event_id: event_id.clone(),
                    field,
                    reason,
                },
            ));
        }
    }
}

/// Rejects the valid events whose encoded records (`sizes`, in the order of
/// [`Parsed::events`]) exceed the size policy (`aispm_schemas::limits`): each becomes an item
/// error, so the request is refused with the reason, before anything is produced.
pub fn check_sizes(parsed: &mut Parsed, sizes: &[usize]) {
    for (i, size) in sizes.iter().enumerate() {
        let Some(why) = aispm_schemas::limits::oversized_event(*size) else {
            continue;
        };
        let (index, line) = parsed.positions.get(i).copied().unwrap_or((i, None));
        let event = parsed.events.get(i);
        if let Some(n) = event.and_then(|e| parsed.by_type.get_mut(e.kind())) {
            *n = n.saturating_sub(1);
        }
        parsed.rejected += 1;
        if parsed.errors.len() < MAX_KEPT_ERRORS {
            parsed.errors.push(ItemError {
                index,
                line,
                event_id: event.map(|e| e.event_id().to_owned()),
                field: String::new(),
                reason: format!("{why}: send smaller lists or split the event"),
            });
        }
    }
    parsed.by_type.retain(|_, n| *n > 0);
}

/// A deterministic id for an event without one: UUIDv8 from the SHA-256 of its JSON.
pub fn derive_event_id(item: &Value) -> String {
    crate::item::content_id(&[&serde_json::to_vec(item).unwrap_or_default()])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const LATEST: Timestamp = Timestamp(1_900_000_000_000);

    fn decision(id: Option<&str>, tenant: &str) -> Value {
        let mut v = json!({"type":"decision","tenant_id":tenant,"occurred_at":"2026-11-21T10:00:00Z",
            "source":"gw","agent_id":"a","actor":"alice","environment":"production","action_kind":"file",
            "target":"/etc/passwd","mode":"enforced","verdict":"deny","risk":"high"});
        if let Some(id) = id {
            v["event_id"] = json!(id);
        }
        v
    }

    #[test]
    fn content_types() {
        assert_eq!(Format::from_content_type(None), Ok(Format::Json));
        assert_eq!(
            Format::from_content_type(Some("application/json; charset=utf-8")),
            Ok(Format::Json)
        );
        assert_eq!(
            Format::from_content_type(Some("Application/X-NDJSON")),
            Ok(Format::Ndjson)
        );
        assert!(Format::from_content_type(Some("text/plain")).is_err());
        assert!(Format::from_content_type(Some("application/x-www-form-urlencoded")).is_err());
    }

    #[test]
    fn object_array_and_ndjson() {
        let one = serde_json::to_vec(&decision(Some("e1"), "acme")).unwrap();
        let p = parse(&one, Format::Json, 10, LATEST).unwrap();
        assert_eq!((p.events.len(), p.rejected), (1, 0));
        assert_eq!(p.events[0].event_id(), "e1");

        let arr = serde_json::to_vec(&json!([
            decision(Some("e1"), "acme"),
            decision(Some("e2"), "globex")
        ]))
        .unwrap();
        let p = parse(&arr, Format::Json, 10, LATEST).unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(
            p.tenants.iter().map(String::as_str).collect::<Vec<_>>(),
            ["acme", "globex"]
        );

        let nd = format!(
            "{}\n\n{}\n",
            decision(Some("e1"), "acme"),
            decision(Some("e2"), "acme")
        );
        let p = parse(nd.as_bytes(), Format::Ndjson, 10, LATEST).unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.events[1].event_id(), "e2");
    }

    #[test]
    fn errors_carry_index_line_and_field() {
        let mut bad = decision(Some("e2"), "acme");
        bad["risk"] = json!("extreme");
        let arr = serde_json::to_vec(&json!([decision(Some("e1"), "acme"), bad, 7])).unwrap();
        let p = parse(&arr, Format::Json, 10, LATEST).unwrap();
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.rejected, 2);
        assert_eq!(p.errors[0].index, 1);
        assert_eq!(p.errors[0].field, "risk");
        assert_eq!(p.errors[0].event_id.as_deref(), Some("e2"));
        assert_eq!(p.errors[1].index, 2);

        let nd = format!("{}\n{{not json\n", decision(Some("e1"), "acme"));
        let p = parse(nd.as_bytes(), Format::Ndjson, 10, LATEST).unwrap();
        assert_eq!(p.rejected, 1);
        assert_eq!((p.errors[0].index, p.errors[0].line), (1, Some(2)));
    }

    #[test]
    fn whole_body_errors() {
        assert!(matches!(
            parse(b"{", Format::Json, 10, LATEST),
            Err(BodyError::Json(_))
        ));
        assert_eq!(
            parse(b"\"x\"", Format::Json, 10, LATEST).unwrap_err(),
            BodyError::Shape
        );
        assert_eq!(
            parse(b"[]", Format::Json, 10, LATEST).unwrap_err(),
            BodyError::Empty
        );
        assert_eq!(
            parse(b"\n \n", Format::Ndjson, 10, LATEST).unwrap_err(),
            BodyError::Empty
        );
        let arr = serde_json::to_vec(&json!([decision(None, "a"), decision(None, "a")])).unwrap();
        assert_eq!(
            parse(&arr, Format::Json, 1, LATEST).unwrap_err(),
            BodyError::TooManyEvents { count: 2, max: 1 }
        );
    }

    #[test]
    fn generated_ids_are_deterministic_and_reported() {
        let body = serde_json::to_vec(&json!([
            decision(None, "acme"),
            decision(Some("mine"), "acme")
        ]))
        .unwrap();
        let a = parse(&body, Format::Json, 10, LATEST).unwrap();
        let b = parse(&body, Format::Json, 10, LATEST).unwrap();
        assert_eq!(a.generated.len(), 1);
        assert_eq!(a.generated[0].index, 0);
        assert_eq!(a.generated, b.generated, "the same body gets the same ids");
        assert_eq!(a.events[0].event_id(), a.generated[0].event_id);
        assert_eq!(a.events[1].event_id(), "mine");
        let mut other = decision(None, "acme");
        other["target"] = json!("/etc/shadow");
        assert_ne!(
            derive_event_id(&other),
            derive_event_id(&decision(None, "acme"))
        );
        // A null event_id counts as missing.
        let mut null_id = decision(None, "acme");
        null_id["event_id"] = Value::Null;
        let p = parse(
            &serde_json::to_vec(&null_id).unwrap(),
            Format::Json,
            10,
            LATEST,
        )
        .unwrap();
        assert_eq!(p.generated.len(), 1);
    }

    #[test]
    fn events_dated_after_the_latest_instant_are_rejected() {
        let mut late = decision(Some("late"), "acme");
        late["occurred_at"] = json!("2099-01-01T00:00:00Z");
        let body = serde_json::to_vec(&json!([decision(Some("ok"), "acme"), late])).unwrap();
        let p = parse(&body, Format::Json, 10, LATEST).unwrap();
        assert_eq!((p.events.len(), p.rejected), (1, 1));
        assert_eq!(p.errors[0].field, "occurred_at");
        assert!(p.errors[0].reason.starts_with("future_occurred_at"));
        assert_eq!(p.errors[0].event_id.as_deref(), Some("late"));
    }

    #[test]
    fn each_item_names_the_scope_it_needs() {
        let reg = |asset: Value| {
            json!({"type":"registry","event_id":"r","tenant_id":"acme","occurred_at":"2026-11-21T10:00:00Z",
                "source":"registry","asset":asset})
        };
        let body = serde_json::to_vec(&json!([
            decision(Some("d"), "acme"),
            {"type":"approval","event_id":"a","tenant_id":"acme","occurred_at":"2026-11-21T10:00:00Z",
             "source":"approvals","kind":"finding_resolved","finding_id":"f","actor":"bob"},
            reg(json!({"asset_kind":"agent","asset_id":"a1","status":"registered"})),
        ]))
        .unwrap();
        let p = parse(&body, Format::Json, 10, LATEST).unwrap();
        assert_eq!(
            p.scopes.iter().copied().collect::<Vec<_>>(),
            [Scope::Emit, Scope::Approve, Scope::Register]
        );
        for asset in [
            json!({"asset_kind":"connector","asset_id":"c","status":"registered","recipients":["ciso@acme.example"]}),
            json!({"asset_kind":"report_provider","asset_id":"smtp","status":"registered"}),
        ] {
            let p = parse(
                &serde_json::to_vec(&reg(asset)).unwrap(),
                Format::Json,
                10,
                LATEST,
            )
            .unwrap();
            assert_eq!(p.scopes.iter().copied().collect::<Vec<_>>(), [Scope::Admin]);
        }
        let validation = json!({"type":"registry","event_id":"v","tenant_id":"acme",
            "occurred_at":"2026-11-21T10:00:00Z","source":"probe",
            "validation":{"check_kind":"tenant_isolation","result":"pass","environment":"production"}});
        let p = parse(
            &serde_json::to_vec(&validation).unwrap(),
            Format::Json,
            10,
            LATEST,
        )
        .unwrap();
        assert_eq!(
            p.scopes.iter().copied().collect::<Vec<_>>(),
            [Scope::Validate]
        );
    }
}
