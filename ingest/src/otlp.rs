//! OTLP/HTTP traces in (`POST /v1/traces`): the spans agent runtimes and AI/MCP gateways
//! already emit become decision events.
//!
//! The request is an `ExportTraceServiceRequest`, protobuf (`application/x-protobuf`) or JSON
//! (`application/json`, the OTLP JSON mapping: hex trace and span ids, lowerCamelCase keys),
//! optionally gzip-compressed. Each span is one of:
//! - an **action**, which becomes a decision: a tool span (`gen_ai.operation.name` =
//!   `execute_tool`), an MCP `tools/call` or `resources/read` span (`mcp.method.name`), a model
//!   span (`chat`, `text_completion`, `generate_content`, `embeddings`), an agent span
//!   (`invoke_agent`), or any span that carries `aispm.verdict` or `aispm.action_kind`;
//! - **ignored** and counted: every other span (HTTP, database, `tools/list`, the server side of
//!   an MCP call that the client side already reports), answered in the OTLP partial-success
//!   message and in `aispm_ingest_events_total{type="span",outcome="ignored"}`.
//!
//! The verdict comes from `aispm.*` attributes set by a gateway (see `docs/producers.md` for the
//! table). An action without `aispm.verdict` was observed but not governed: it becomes a
//! decision with no control (`(none):{action_kind}` in the views), in shadow mode, allowed,
//! which counts against coverage and raises `control_missing` where its risk is high.
//! Enforcement is never assumed: `aispm.mode` defaults to `shadow`.
//!
//! Idempotent by trace and span id: the event id is derived from them, so an exporter's retry
//! of the same spans applies once.

use crate::item::Item;
use prost::Message;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// The OTLP messages ingest reads (a subset of `opentelemetry/proto`, same tags; fields it does
/// not read, such as span events and links, are skipped by the decoder).
pub mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        /// 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
        pub value: Option<any_value::Value>,
    }

    pub mod any_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            StringValue(String),
            #[prost(bool, tag = "2")]
            BoolValue(bool),
            #[prost(int64, tag = "3")]
            IntValue(i64),
            #[prost(double, tag = "4")]
            DoubleValue(f64),
            #[prost(message, tag = "5")]
            ArrayValue(super::ArrayValue),
            #[prost(message, tag = "6")]
            KvlistValue(super::KeyValueList),
            #[prost(bytes = "vec", tag = "7")]
            BytesValue(Vec<u8>),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValueList {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<ExportTracePartialSuccess>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTracePartialSuccess {
        #[prost(int64, tag = "1")]
        pub rejected_spans: i64,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }

    /// `google.rpc.Status`, the body of an OTLP/HTTP error answer.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
    }
}

/// How the request is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// The encoding for a `Content-Type` header (OTLP/HTTP requires one).
    pub fn from_content_type(content_type: Option<&str>) -> Result<Encoding, String> {
        match crate::item::media_type(content_type.unwrap_or_default()).as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            other => Err(format!(
                "unsupported content type '{other}': OTLP/HTTP traces are application/x-protobuf or application/json"
            )),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Decodes an export request.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<pb::ExportTraceServiceRequest, String> {
    match encoding {
        Encoding::Protobuf => pb::ExportTraceServiceRequest::decode(body)
            .map_err(|e| format!("not an OTLP ExportTraceServiceRequest (protobuf): {e}")),
        Encoding::Json => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| format!("the body is not valid JSON: {e}"))?;
            json_request(&value).map_err(|e| format!("not an OTLP ExportTraceServiceRequest: {e}"))
        }
    }
}

/// The answer to an accepted export: a partial success naming the ignored spans, if any.
pub fn response(encoding: Encoding, ignored: &BTreeMap<&'static str, u64>) -> Vec<u8> {
    let message = if ignored.is_empty() {
        String::new()
    } else {
        let total: u64 = ignored.values().sum();
        let why: Vec<String> = ignored.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        format!(
            "{total} spans were not actions and were not recorded ({})",
            why.join(", ")
        )
    };
    match encoding {
        Encoding::Protobuf => pb::ExportTraceServiceResponse {
            partial_success: (!message.is_empty()).then_some(pb::ExportTracePartialSuccess {
                rejected_spans: 0,
                error_message: message,
            }),
        }
        .encode_to_vec(),
        Encoding::Json => {
            let body = if message.is_empty() {
                json!({})
            } else {
                json!({"partialSuccess": {"rejectedSpans": 0, "errorMessage": message}})
            };
            serde_json::to_vec(&body).unwrap_or_default()
        }
    }
}

/// An error answer's body: `google.rpc.Status` for protobuf clients.
pub fn status(code: u16, message: &str) -> Vec<u8> {
    // gRPC codes: 3 INVALID_ARGUMENT, 7 PERMISSION_DENIED, 8 RESOURCE_EXHAUSTED,
    // 14 UNAVAILABLE, 16 UNAUTHENTICATED.
    let code = match code {
        401 => 16,
        403 => 7,
        413 | 429 => 8,
        500..=599 => 14,
        _ => 3,
    };
    pb::Status {
        code,
        message: message.to_owned(),
    }
    .encode_to_vec()
}

/// What the spans of a request became.
#[derive(Debug, Default)]
pub struct Spans {
    /// One item per action span, in request order.
    pub items: Vec<Item>,
    /// Spans that were not actions, by reason.
    pub ignored: BTreeMap<&'static str, u64>,
}

/// Attributes of a span over those of its resource (the span's win).
struct Attrs<'a> {
    span: &'a [pb::KeyValue],
    resource: &'a [pb::KeyValue],
}

impl<'a> Attrs<'a> {
    fn value(&self, key: &str) -> Option<&'a pb::any_value::Value> {
        find(self.span, key).or_else(|| find(self.resource, key))
    }

    /// The attribute as text (numbers and booleans printed); empty strings are absent.
    fn text(&self, key: &str) -> Option<String> {
        self.value(key).and_then(text).filter(|s| !s.is_empty())
    }

    fn first(&self, keys: &[&str]) -> Option<(String, String)> {
        keys.iter()
            .find_map(|k| self.text(k).map(|v| ((*k).to_owned(), v)))
    }

    fn span_text(&self, key: &str) -> Option<String> {
        find(self.span, key)
            .and_then(text)
            .filter(|s| !s.is_empty())
    }
}

fn find<'a>(attrs: &'a [pb::KeyValue], key: &str) -> Option<&'a pb::any_value::Value> {
    attrs
        .iter()
        .rev()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(v: &pb::any_value::Value) -> Option<String> {
    use pb::any_value::Value as V;
    match v {
        V::StringValue(s) => Some(s.clone()),
        V::BoolValue(b) => Some(b.to_string()),
        V::IntValue(i) => Some(i.to_string()),
        V::DoubleValue(d) => Some(d.to_string()),
        V::ArrayValue(_) | V::KvlistValue(_) | V::BytesValue(_) => None,
    }
}

/// A list attribute: a string array, or one comma-separated string.
fn list(v: Option<&pb::any_value::Value>) -> Vec<String> {
    use pb::any_value::Value as V;
    match v {
        Some(V::ArrayValue(a)) => a
            .values
            .iter()
            .filter_map(|v| v.value.as_ref().and_then(text))
            .filter(|s| !s.is_empty())
            .collect(),
        Some(V::StringValue(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// What a span did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Tool,
    Mcp,
    Model,
    Agent,
    /// A gateway's span with `aispm.*` attributes and no GenAI operation.
    Gateway,
}

const SPAN_KIND_SERVER: i32 = 2;

fn classify(span: &pb::Span, a: &Attrs<'_>) -> Result<Act, &'static str> {
    let governed = a.span_text("aispm.verdict").is_some();
    if let Some(method) = a.span_text("mcp.method.name") {
        // The server side of a call the client side reports, unless a gateway judged it there.
        if span.kind == SPAN_KIND_SERVER && !governed {
            return Err("mcp_server_side");
        }
        return match method.as_str() {
            "tools/call" | "resources/read" => Ok(Act::Mcp),
            _ => Err("mcp_not_an_action"),
        };
    }
    match a.span_text("gen_ai.operation.name").as_deref() {
        Some("execute_tool") => Ok(Act::Tool),
        Some("invoke_agent") => Ok(Act::Agent),
        Some("chat" | "text_completion" | "generate_content" | "embeddings") => Ok(Act::Model),
        _ if governed || a.span_text("aispm.action_kind").is_some() => Ok(Act::Gateway),
        Some(_) => Err("gen_ai_not_an_action"),
        None => Err("not_gen_ai"),
    }
}

/// Environment names as deployments spell them, to the three stages.
fn environment(name: &str) -> Option<&'static str> {
    match name.to_ascii_lowercase().as_str() {
        "production" | "prod" | "prd" => Some("production"),
        "pilot" | "staging" | "stage" | "preprod" | "pre-production" | "uat" => Some("pilot"),
        "trial" | "dev" | "development" | "test" | "testing" | "sandbox" | "local" => Some("trial"),
        _ => None,
    }
}

/// The event id of a span: a UUIDv8 from the SHA-256 of its trace and span ids.
pub fn span_event_id(trace_id: &[u8], span_id: &[u8]) -> String {
    crate::item::content_id(&[b"otlp-span\0", trace_id, span_id])
}

/// The spans of `request` as items: decisions for the actions (or the reason one cannot be
/// a decision), and the count of the others. `default_tenant` is used for spans that name no
/// `aispm.tenant_id` (a token bound to exactly one tenant).
pub fn spans(request: &pb::ExportTraceServiceRequest, default_tenant: Option<&str>) -> Spans {
    let mut out = Spans::default();
    for rs in &request.resource_spans {
        let resource: &[pb::KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
        // The agent each span runs under: its own, or its nearest `invoke_agent` ancestor's in
        // this request.
        let mut parents: HashMap<&[u8], &pb::Span> = HashMap::new();
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            parents.insert(span.span_id.as_slice(), span);
        }
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            let attrs = Attrs {
                span: &span.attributes,
                resource,
            };
            match classify(span, &attrs) {
                Err(reason) => *out.ignored.entry(reason).or_default() += 1,
                Ok(act) => out
                    .items
                    .push(decision(span, act, &attrs, &parents, default_tenant)),
            }
        }
    }
    out
}

fn ancestor_agent(span: &pb::Span, parents: &HashMap<&[u8], &pb::Span>) -> Option<String> {
    let mut at = parents.get(span.parent_span_id.as_slice()).copied();
    // Bounded: a cycle of parent ids in a hostile request cannot loop forever.
    for _ in 0..64 {
        let p = at?;
        for key in ["gen_ai.agent.id", "gen_ai.agent.name"] {
            if let Some(v) = find(&p.attributes, key)
                .and_then(text)
                .filter(|s| !s.is_empty())
            {
                return Some(v);
            }
        }
        at = parents.get(p.parent_span_id.as_slice()).copied();
    }
    None
}

fn rejected(event_id: Option<String>, field: &str, reason: String) -> Item {
    Item::Rejected {
        event_id,
        field: field.to_owned(),
        reason,
    }
}

fn decision(
    span: &pb::Span,
    act: Act,
    a: &Attrs<'_>,
    parents: &HashMap<&[u8], &pb::Span>,
    default_tenant: Option<&str>,
) -> Item {
    if span.trace_id.len() != 16 || span.span_id.len() != 8 {
        return rejected(
            None,
            "spanId",
            format!(
                "a span needs a 16-byte trace id and an 8-byte span id (got {} and {})",
                span.trace_id.len(),
                span.span_id.len()
            ),
        );
    }
    let event_id = span_event_id(&span.trace_id, &span.span_id);
    let id = Some(event_id.clone());
    let Some(tenant) = a
        .text("aispm.tenant_id")
        .or(default_tenant.map(str::to_owned))
    else {
        return rejected(
            id,
            "aispm.tenant_id",
            "the span names no tenant: set the aispm.tenant_id attribute (span or resource), or send with a token bound to one tenant".into(),
        );
    };
    let Some((_, env)) = a.first(&[
        "aispm.environment",
        "deployment.environment.name",
        "deployment.environment",
    ]) else {
        return rejected(
            id,
            "aispm.environment",
            "the span names no environment: set aispm.environment (trial, pilot or production) or the resource attribute deployment.environment.name".into(),
        );
    };
    let Some(environment) = environment(&env) else {
        return rejected(
            id,
            "aispm.environment",
            format!(
                "environment '{env}' is not one aispm knows: use trial, pilot or production (dev/test → trial, staging → pilot, prod → production)"
            ),
        );
    };
    let agent = a
        .span_text("aispm.agent_id")
        .or_else(|| a.span_text("gen_ai.agent.id"))
        .or_else(|| a.span_text("gen_ai.agent.name"))
        .or_else(|| ancestor_agent(span, parents))
        .or_else(|| {
            a.first(&[
                "aispm.agent_id",
                "gen_ai.agent.id",
                "gen_ai.agent.name",
                "service.name",
            ])
            .map(|(_, v)| v)
        });
    let Some(agent) = agent else {
        return rejected(
            id,
            "gen_ai.agent.id",
            "the span names no agent: set gen_ai.agent.id (or aispm.agent_id) on it, on an invoke_agent parent, or service.name on the resource".into(),
        );
    };
    let tool = a.span_text("gen_ai.tool.name");
    let model = a.span_text("gen_ai.request.model");
    let target = a.span_text("aispm.target").or_else(|| match act {
        Act::Tool => tool.clone(),
        Act::Mcp => tool.clone().or_else(|| a.span_text("mcp.resource.uri")),
        Act::Model => model.clone(),
        Act::Agent => a
            .span_text("gen_ai.agent.name")
            .or_else(|| a.span_text("gen_ai.agent.id")),
        Act::Gateway => None,
    });
    let Some(target) = target else {
        let field = match act {
            Act::Tool | Act::Mcp => "gen_ai.tool.name",
            Act::Model => "gen_ai.request.model",
            Act::Agent => "gen_ai.agent.name",
            Act::Gateway => "aispm.target",
        };
        return rejected(
            id,
            field,
            format!("the span does not say what it acted on: set {field} (or aispm.target)"),
        );
    };
    let mcp_server = a.span_text("aispm.mcp_server").or_else(|| match act {
        Act::Mcp => a.span_text("server.address").or_else(|| {
            (span.kind == SPAN_KIND_SERVER)
                .then(|| a.text("service.name"))
                .flatten()
        }),
        _ => None,
    });
    let action_kind = a.span_text("aispm.action_kind").unwrap_or_else(|| {
        match act {
            Act::Mcp => "mcp",
            Act::Model => "model",
            Act::Agent => "network",
            Act::Tool | Act::Gateway if mcp_server.is_some() => "mcp",
            Act::Tool | Act::Gateway => match a.span_text("gen_ai.tool.type").as_deref() {
                Some("extension" | "datastore") => "network",
                _ => "command",
            },
        }
        .to_owned()
    });
    let governed = a.span_text("aispm.verdict");
    let risk = a
        .span_text("aispm.risk")
        .unwrap_or_else(|| if act == Act::Model { "medium" } else { "high" }.to_owned());
    let occurred_at = i64::try_from(span.start_time_unix_nano / 1_000_000).unwrap_or(i64::MAX);
    if occurred_at <= 0 {
        return rejected(id, "startTimeUnixNano", "the span has no start time".into());
    }
    let source = a
        .text("aispm.source")
        .or_else(|| a.text("service.name").map(|s| format!("otlp:{s}")))
        .unwrap_or_else(|| "otlp".into());
    let mut m = Map::new();
    m.insert("type".into(), json!("decision"));
    m.insert("event_id".into(), json!(event_id));
    m.insert("tenant_id".into(), json!(tenant));
    m.insert(
        "occurred_at".into(),
        json!(aispm_schemas::Timestamp(occurred_at).to_rfc3339()),
    );
    m.insert("source".into(), json!(source));
    m.insert("agent_id".into(), json!(agent));
    m.insert(
        "actor".into(),
        json!(
            a.first(&["aispm.actor", "enduser.id", "user.id"])
                .map_or_else(|| "unknown".to_owned(), |(_, v)| v)
        ),
    );
    m.insert("environment".into(), json!(environment));
    m.insert("action_kind".into(), json!(action_kind));
    m.insert("target".into(), json!(target));
    let mcp_tool = match act {
        Act::Mcp => tool,
        _ => a.span_text("aispm.mcp_tool"),
    };
    let model_endpoint = a.span_text("aispm.model_endpoint").or(match act {
        Act::Model | Act::Agent => model,
        _ => None,
    });
    for (key, value) in [
        ("repo", a.span_text("aispm.repo")),
        ("workflow", a.span_text("aispm.workflow")),
        ("mcp_server", mcp_server),
        ("mcp_tool", mcp_tool),
        ("model_endpoint", model_endpoint),
        ("control_id", a.span_text("aispm.control_id")),
        ("policy_id", a.span_text("aispm.policy_id")),
        ("approval_id", a.span_text("aispm.approval_id")),
        ("api_key_id", a.span_text("aispm.api_key_id")),
    ] {
        if let Some(v) = value {
            m.insert(key.into(), json!(v));
        }
    }
    m.insert(
        "mode".into(),
        json!(a.span_text("aispm.mode").unwrap_or_else(|| "shadow".into())),
    );
    m.insert(
        "verdict".into(),
        json!(governed.unwrap_or_else(|| "allow".into())),
    );
    m.insert("risk".into(), json!(risk));
    m.insert(
        "data_classes".into(),
        json!(list(find(a.span, "aispm.data_classes"))),
    );
    let scopes = list(find(a.span, "aispm.scopes_used"));
    if !scopes.is_empty() {
        m.insert("scopes_used".into(), json!(scopes));
    }
    if a.span_text("aispm.synthetic").as_deref() == Some("true") {
        m.insert("synthetic".into(), json!(true));
    }
    if let Some(evidence_id) = a.span_text("aispm.evidence.id") {
        let mut e = Map::new();
        e.insert("evidence_id".into(), json!(evidence_id));
        for (key, attr) in [
            ("sha256", "aispm.evidence.sha256"),
            ("uri", "aispm.evidence.uri"),
            ("signature", "aispm.evidence.signature"),
            ("key_id", "aispm.evidence.key_id"),
        ] {
            if let Some(v) = a.span_text(attr) {
                e.insert(key.into(), json!(v));
            }
        }
        m.insert("evidence".into(), Value::Object(e));
    }
    Item::Value(Value::Object(m))
}

// ---- The OTLP JSON mapping (lowerCamelCase keys, snake_case accepted; hex ids; 64-bit
// integers as strings or numbers; enums as integers).

fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel)
        .or_else(|| v.get(snake))
        .filter(|v| !v.is_null())
}

fn array<'a>(v: &'a Value, camel: &str, snake: &str) -> Result<&'a [Value], String> {
    match field(v, camel, snake) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("{camel} must be an array")),
    }
}

fn hex_id(v: &Value, camel: &str, snake: &str) -> Result<Vec<u8>, String> {
    match field(v, camel, snake) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => {
            hex::decode(s).map_err(|_| format!("{camel} must be a hex string, not '{s}'"))
        }
        Some(_) => Err(format!("{camel} must be a hex string")),
    }
}

fn int64(v: &Value, camel: &str, snake: &str) -> Result<i64, String> {
    match field(v, camel, snake) {
        None => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_u64().and_then(|u| i64::try_from(u).ok()))
            .ok_or_else(|| format!("{camel} must be an integer")),
        Some(Value::String(s)) => s
            .parse::<i64>()
            .or_else(|_| {
                s.parse::<u64>()
                    .map(|u| i64::try_from(u).unwrap_or(i64::MAX))
            })
            .map_err(|_| format!("{camel} must be an integer, not '{s}'")),
        Some(_) => Err(format!("{camel} must be an integer")),
    }
}

fn json_request(v: &Value) -> Result<pb::ExportTraceServiceRequest, String> {
    if !v.is_object() {
        return Err("the body must be a JSON object".into());
    }
    let resource_spans = array(v, "resourceSpans", "resource_spans")?
        .iter()
        .map(|rs| {
            let resource = field(rs, "resource", "resource")
                .map(|r| {
                    Ok::<_, String>(pb::Resource {
                        attributes: json_attributes(r)?,
                    })
                })
                .transpose()?;
            let scope_spans = array(rs, "scopeSpans", "scope_spans")?
                .iter()
                .map(|ss| {
                    Ok(pb::ScopeSpans {
                        spans: array(ss, "spans", "spans")?
                            .iter()
                            .map(json_span)
                            .collect::<Result<_, String>>()?,
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(pb::ResourceSpans {
                resource,
                scope_spans,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(pb::ExportTraceServiceRequest { resource_spans })
}

fn json_span(s: &Value) -> Result<pb::Span, String> {
    Ok(pb::Span {
        trace_id: hex_id(s, "traceId", "trace_id")?,
        span_id: hex_id(s, "spanId", "span_id")?,
        parent_span_id: hex_id(s, "parentSpanId", "parent_span_id")?,
        name: field(s, "name", "name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        kind: i32::try_from(int64(s, "kind", "kind")?).map_err(|_| "kind out of range")?,
        start_time_unix_nano: u64::try_from(int64(s, "startTimeUnixNano", "start_time_unix_nano")?)
            .map_err(|_| "startTimeUnixNano must not be negative")?,
        attributes: json_attributes(s)?,
    })
}

fn json_attributes(v: &Value) -> Result<Vec<pb::KeyValue>, String> {
    array(v, "attributes", "attributes")?
        .iter()
        .map(json_key_value)
        .collect()
}

fn json_key_value(kv: &Value) -> Result<pb::KeyValue, String> {
    let key = field(kv, "key", "key")
        .and_then(Value::as_str)
        .ok_or("an attribute needs a string key")?
        .to_owned();
    let value = field(kv, "value", "value")
        .map(json_any_value)
        .transpose()?;
    Ok(pb::KeyValue { key, value })
}

fn json_any_value(v: &Value) -> Result<pb::AnyValue, String> {
    use pb::any_value::Value as V;
    let value = if let Some(s) = field(v, "stringValue", "string_value") {
        Some(V::StringValue(
            s.as_str().ok_or("stringValue must be a string")?.to_owned(),
        ))
    } else if let Some(b) = field(v, "boolValue", "bool_value") {
        Some(V::BoolValue(
            b.as_bool().ok_or("boolValue must be a boolean")?,
        ))
    } else if field(v, "intValue", "int_value").is_some() {
        Some(V::IntValue(int64(v, "intValue", "int_value")?))
    } else if let Some(d) = field(v, "doubleValue", "double_value") {
        Some(V::DoubleValue(
            d.as_f64().ok_or("doubleValue must be a number")?,
        ))
    } else if let Some(a) = field(v, "arrayValue", "array_value") {
        Some(V::ArrayValue(pb::ArrayValue {
            values: array(a, "values", "values")?
                .iter()
                .map(json_any_value)
                .collect::<Result<_, String>>()?,
        }))
    } else if let Some(l) = field(v, "kvlistValue", "kvlist_value") {
        Some(V::KvlistValue(pb::KeyValueList {
            values: array(l, "values", "values")?
                .iter()
                .map(json_key_value)
                .collect::<Result<_, String>>()?,
        }))
    } else if let Some(b) = field(v, "bytesValue", "bytes_value") {
        use base64::Engine as _;
        Some(V::BytesValue(
            base64::engine::general_purpose::STANDARD
                .decode(b.as_str().ok_or("bytesValue must be base64")?)
                .map_err(|_| "bytesValue must be base64")?,
        ))
    } else {
        None
    };
    Ok(pb::AnyValue { value })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> pb::KeyValue {
        pb::KeyValue {
            key: key.into(),
            value: Some(pb::AnyValue {
                value: Some(pb::any_value::Value::StringValue(value.into())),
            }),
        }
    }

    fn span(id: u8, parent: Option<u8>, kind: i32, attrs: &[(&str, &str)]) -> pb::Span {
        pb::Span {
            trace_id: vec![7; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: "s".into(),
            kind,
            start_time_unix_nano: 1_764_000_000_000_000_000,
            attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        }
    }

    fn request(spans: Vec<pb::Span>) -> pb::ExportTraceServiceRequest {
        pb::ExportTraceServiceRequest {
            resource_spans: vec![pb::ResourceSpans {
                resource: Some(pb::Resource {
                    attributes: vec![
                        kv("service.name", "support-bot"),
                        kv("deployment.environment.name", "prod"),
                    ],
                }),
                scope_spans: vec![pb::ScopeSpans { spans }],
            }],
        }
    }

    fn values(s: &Spans) -> Vec<&Value> {
        s.items
            .iter()
            .filter_map(|i| match i {
                Item::Value(v) => Some(v),
                Item::Rejected { .. } => None,
            })
            .collect()
    }

    #[test]
    fn genai_and_mcp_spans_become_decisions_and_the_rest_is_counted() {
        let req = request(vec![
            span(
                1,
                None,
                1,
                &[
                    ("gen_ai.operation.name", "invoke_agent"),
                    ("gen_ai.agent.id", "triage"),
                ],
            ),
            span(
                2,
                Some(1),
                1,
                &[
                    ("gen_ai.operation.name", "chat"),
                    ("gen_ai.request.model", "gpt-4o"),
                ],
            ),
            span(
                3,
                Some(2),
                3,
                &[
                    ("gen_ai.operation.name", "execute_tool"),
                    ("mcp.method.name", "tools/call"),
                    ("gen_ai.tool.name", "create_issue"),
                    ("server.address", "github-mcp"),
                    ("aispm.verdict", "deny"),
                    ("aispm.control_id", "ctl-mcp"),
                    ("aispm.mode", "enforced"),
                    ("aispm.risk", "critical"),
                    ("aispm.api_key_id", "triage-github-key"),
                    ("aispm.scopes_used", "issues:write,repo:read"),
                ],
            ),
            span(
                4,
                Some(3),
                2,
                &[
                    ("mcp.method.name", "tools/call"),
                    ("gen_ai.tool.name", "create_issue"),
                ],
            ),
            span(5, Some(1), 3, &[("http.request.method", "GET")]),
            span(6, Some(1), 3, &[("mcp.method.name", "tools/list")]),
        ]);
        let s = spans(&req, Some("acme"));
        let v = values(&s);
        assert_eq!(v.len(), 3, "{:?}", s.items);
        assert_eq!(v[0]["action_kind"], "network");
        assert_eq!(v[1]["action_kind"], "model");
        assert_eq!(
            v[1]["agent_id"], "triage",
            "the agent comes from the invoke_agent parent"
        );
        assert_eq!(v[1]["model_endpoint"], "gpt-4o");
        assert_eq!(v[1]["risk"], "medium");
        assert_eq!(v[1]["mode"], "shadow", "enforcement is never assumed");
        assert!(v[1].get("control_id").is_none(), "ungoverned");
        assert_eq!(v[2]["action_kind"], "mcp");
        assert_eq!(v[2]["mcp_server"], "github-mcp");
        assert_eq!(v[2]["mcp_tool"], "create_issue");
        assert_eq!(v[2]["verdict"], "deny");
        assert_eq!(v[2]["control_id"], "ctl-mcp");
        assert_eq!(v[2]["environment"], "production");
        assert_eq!(v[2]["tenant_id"], "acme");
        assert_eq!(v[2]["source"], "otlp:support-bot");
        assert_eq!(v[2]["api_key_id"], "triage-github-key");
        assert_eq!(v[2]["scopes_used"], json!(["issues:write", "repo:read"]));
        assert!(v[1].get("scopes_used").is_none(), "no key, no scopes");
        assert_eq!(
            s.ignored,
            BTreeMap::from([
                ("mcp_not_an_action", 1),
                ("mcp_server_side", 1),
                ("not_gen_ai", 1)
            ])
        );
        // Idempotent: the same span is the same event.
        assert_eq!(
            values(&spans(&req, Some("acme")))[2]["event_id"],
            v[2]["event_id"]
        );
    }

    #[test]
    fn spans_that_cannot_be_decisions_say_why() {
        let mut req = request(vec![span(
            1,
            None,
            1,
            &[("gen_ai.operation.name", "execute_tool")],
        )]);
        let s = spans(&req, None);
        let Item::Rejected { field, .. } = &s.items[0] else {
            panic!("{:?}", s.items)
        };
        assert_eq!(field, "aispm.tenant_id");
        let s = spans(&req, Some("acme"));
        let Item::Rejected { field, .. } = &s.items[0] else {
            panic!("{:?}", s.items)
        };
        assert_eq!(field, "gen_ai.tool.name");
        req.resource_spans[0].resource = None;
        let s = spans(&req, Some("acme"));
        let Item::Rejected { field, .. } = &s.items[0] else {
            panic!("{:?}", s.items)
        };
        assert_eq!(field, "aispm.environment");
    }

    #[test]
    fn json_and_protobuf_decode_to_the_same_request() {
        let req = request(vec![span(
            3,
            Some(2),
            3,
            &[
                ("gen_ai.operation.name", "execute_tool"),
                ("gen_ai.tool.name", "bash"),
            ],
        )]);
        let proto = decode(&req.encode_to_vec(), Encoding::Protobuf).unwrap();
        assert_eq!(proto, req);
        let json = json!({"resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "support-bot"}},
                {"key": "deployment.environment.name", "value": {"stringValue": "prod"}}]},
            "scopeSpans": [{"scope": {"name": "x"}, "spans": [{
                "traceId": "07070707070707070707070707070707", "spanId": "0303030303030303",
                "parentSpanId": "0202020202020202", "name": "s", "kind": 3,
                "startTimeUnixNano": "1764000000000000000",
                "attributes": [
                    {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
                    {"key": "gen_ai.tool.name", "value": {"stringValue": "bash"}}]}]}]}]});
        let from_json = decode(json.to_string().as_bytes(), Encoding::Json).unwrap();
        assert_eq!(from_json, req);
        assert!(decode(b"\xff\xff", Encoding::Protobuf).is_err());
        assert!(decode(br#"{"resourceSpans": 3}"#, Encoding::Json).is_err());
        assert!(
            decode(
                br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}"#,
                Encoding::Json
            )
            .is_err()
        );
    }
}
