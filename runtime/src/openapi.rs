//! OpenAPI 3.1 documents generated from the routes themselves. A service declares each route
//! once, in an [`Api`] table that both registers the axum handler and records its operation, so
//! the document it serves at `GET /openapi.json` cannot name a route the router lacks, nor miss
//! one it has. The routes [`crate::http::serve`] adds (`/metrics`, `/healthz`, `/readyz`) are in
//! every document.
//!
//! ```ignore
//! Api::new("aispm projector", env!("CARGO_PKG_VERSION"), "The read-only query API.")
//!     .get("/v1/tenants/{tenant}/findings", findings, Op::new("List findings")
//!         .query("severity", Ty::one_of(Risk::ALL.iter().map(|r| r.as_str())), "One severity.")
//!         .tenant(Scope::Read))
//!     .into_router()
//!     .with_state(api)
//! ```
//!
//! Response bodies are described as JSON objects, errors by the one shape [`ApiError`] answers.
//!
//! [`ApiError`]: crate::http::ApiError

use crate::auth::Scope;
use axum::Router;
use axum::body::Bytes;
use axum::handler::Handler;
use axum::http::header;
use axum::routing::{MethodRouter, get, post};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The route every documented service serves its document at.
pub const DOCUMENT_PATH: &str = "/openapi.json";

/// The name of the bearer-token security scheme.
pub const BEARER: &str = "bearerAuth";

/// A service's routes and their document, built together.
#[derive(Debug)]
pub struct Api<S = ()> {
    info: Value,
    router: Router<S>,
    paths: BTreeMap<String, Map<String, Value>>,
}

/// The type of a query parameter.
#[derive(Debug, Clone)]
pub enum Ty {
    String,
    Boolean,
    /// An integer between the bounds (inclusive).
    Integer {
        min: i64,
        max: i64,
    },
    /// An RFC 3339 time.
    DateTime,
    /// One of these symbols.
    OneOf(Vec<&'static str>),
}

impl Ty {
    /// One of an enum's symbols, e.g. `Ty::one_of(Risk::ALL.iter().map(|r| r.as_str()))`.
    pub fn one_of(symbols: impl IntoIterator<Item = &'static str>) -> Ty {
        Ty::OneOf(symbols.into_iter().collect())
    }

    fn schema(&self) -> Value {
        match self {
            Ty::String => json!({"type": "string"}),
            Ty::Boolean => json!({"type": "boolean"}),
            Ty::Integer { min, max } => {
                json!({"type": "integer", "minimum": min, "maximum": max})
            }
            Ty::DateTime => json!({"type": "string", "format": "date-time"}),
            Ty::OneOf(symbols) => json!({"type": "string", "enum": symbols}),
        }
    }
}

/// Who may call an operation.
#[derive(Debug, Clone)]
enum Caller {
    Anyone,
    /// Any valid token.
    AnyToken,
    /// A token bound to the path's `{tenant}` (or an operator token) with the scope.
    Tenant(Scope),
    /// An operator token (`tenants = ["*"]`) with `read`.
    Operator,
    /// A valid token with the scopes described.
    Scopes(Vec<Scope>, &'static str),
}

/// One operation: a summary, its parameters, who may call it and what it answers.
#[derive(Debug, Clone)]
pub struct Op {
    summary: &'static str,
    description: Option<&'static str>,
    path_params: BTreeMap<&'static str, &'static str>,
    query: Vec<Value>,
    body: Map<String, Value>,
    body_description: Option<&'static str>,
    caller: Caller,
    /// The success answer: status, media type, description.
    ok: (u16, &'static str, &'static str),
    /// Other success answers (JSON).
    also: Vec<(u16, &'static str)>,
    extra: Vec<(u16, &'static str)>,
}

impl Op {
    /// An operation answering `200` with a JSON object, open to anyone until told otherwise.
    pub fn new(summary: &'static str) -> Op {
        Op {
            summary,
            description: None,
            path_params: BTreeMap::new(),
            query: Vec::new(),
            body: Map::new(),
            body_description: None,
            caller: Caller::Anyone,
            ok: (200, "application/json", "OK."),
            also: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub fn describe(mut self, description: &'static str) -> Op {
        self.description = Some(description);
        self
    }

    /// Describes a path parameter (every `{name}` of the path is documented, described or not).
    pub fn path(mut self, name: &'static str, description: &'static str) -> Op {
        self.path_params.insert(name, description);
        self
    }

    /// An optional query parameter.
    pub fn query(mut self, name: &'static str, ty: Ty, description: &'static str) -> Op {
        self.query.push(json!({
            "name": name,
            "in": "query",
            "required": false,
            "description": description,
            "schema": ty.schema(),
        }));
        self
    }

    /// The `limit` and cursor (`after`, `before`) of a list route answering at most `max` rows.
    pub fn paged(self, cursor: &'static str, max: usize) -> Op {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.query("limit", Ty::Integer { min: 1, max }, "Rows per page.")
            .query(
                cursor,
                Ty::String,
                "The `next_cursor` of the page before; absent for the first page.",
            )
    }

    /// A request body of `media_type`, with its schema (the same description for every type).
    pub fn body(
        mut self,
        media_type: &'static str,
        schema: Value,
        description: &'static str,
    ) -> Op {
        self.body
            .insert(media_type.to_owned(), json!({"schema": schema}));
        self.body_description = Some(description);
        self
    }

    /// Any valid bearer token may call it.
    pub fn any_token(mut self) -> Op {
        self.caller = Caller::AnyToken;
        self
    }

    /// A bearer token bound to the path's `{tenant}` (or an operator token) with `scope`.
    pub fn tenant(mut self, scope: Scope) -> Op {
        self.caller = Caller::Tenant(scope);
        self
    }

    /// An operator token: every tenant (`tenants = ["*"]`), `read`.
    pub fn operator(mut self) -> Op {
        self.caller = Caller::Operator;
        self
    }

    /// A valid bearer token with some of `scopes`, as `description` says.
    pub fn scopes(mut self, scopes: &[Scope], description: &'static str) -> Op {
        self.caller = Caller::Scopes(scopes.to_vec(), description);
        self
    }

    /// The success answer, when it is not `200` with JSON.
    pub fn ok(mut self, status: u16, media_type: &'static str, description: &'static str) -> Op {
        self.ok = (status, media_type, description);
        self
    }

    /// Another success answer, with a JSON body.
    pub fn also(mut self, status: u16, description: &'static str) -> Op {
        self.also.push((status, description));
        self
    }

    /// Another error answer the operation may give (beyond those its parameters and caller
    /// imply: 400, 401, 403, 404, 429).
    pub fn error(mut self, status: u16, description: &'static str) -> Op {
        self.extra.push((status, description));
        self
    }

    /// The operation object for `path`.
    fn document(&self, path: &str) -> Value {
        let mut op = Map::new();
        op.insert("summary".into(), json!(self.summary));
        let mut description = self.description.unwrap_or_default().to_owned();
        let (scopes, auth): (Vec<&str>, Option<String>) = match &self.caller {
            Caller::Anyone => (Vec::new(), None),
            Caller::AnyToken => (Vec::new(), Some("Any valid bearer token.".to_owned())),
            Caller::Tenant(s) => (
                vec![s.as_str()],
                Some(format!(
                    "A bearer token bound to the tenant (or an operator token) with the `{s}` scope."
                )),
            ),
            Caller::Operator => (
                vec![Scope::Read.as_str()],
                Some("An operator token (every tenant) with the `read` scope.".to_owned()),
            ),
            Caller::Scopes(s, d) => (
                s.iter().map(|s| s.as_str()).collect(),
                Some((*d).to_owned()),
            ),
        };
        if let Some(auth) = &auth {
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str("Auth: ");
            description.push_str(auth);
            op.insert("security".into(), json!([{ BEARER: scopes }]));
        } else {
            op.insert("security".into(), json!([]));
        }
        if !description.is_empty() {
            op.insert("description".into(), json!(description));
        }
        let mut params: Vec<Value> = path_params(path)
            .map(|name| {
                let mut p = json!({
                    "name": name,
                    "in": "path",
                    "required": true,
                    "schema": {"type": "string"},
                });
                if let Some(d) = self.path_params.get(name) {
                    p["description"] = json!(d);
                }
                p
            })
            .collect();
        params.extend(self.query.iter().cloned());
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if !self.body.is_empty() {
            op.insert(
                "requestBody".into(),
                json!({
                    "required": true,
                    "description": self.body_description,
                    "content": self.body,
                }),
            );
        }
        let mut responses = Map::new();
        let (status, media, what) = self.ok;
        let schema = if media == "application/json" {
            json!({"type": "object"})
        } else {
            json!({"type": "string"})
        };
        responses.insert(
            status.to_string(),
            json!({"description": what, "content": {media: {"schema": schema}}}),
        );
        for (status, what) in &self.also {
            responses.insert(
                status.to_string(),
                json!({"description": what, "content": {"application/json": {"schema": {"type": "object"}}}}),
            );
        }
        let mut errors: Vec<(u16, &str)> = Vec::new();
        if !self.query.is_empty() || !self.body.is_empty() {
            errors.push((400, "A parameter or the body is invalid."));
        }
        if auth.is_some() {
            errors.push((401, "The bearer token is missing or not valid."));
            errors.push((
                429,
                "Too many failed authentications from this address (see Retry-After).",
            ));
        }
        if !matches!(self.caller, Caller::Anyone | Caller::AnyToken) {
            errors.push((403, "The token may not do this (tenant or scope)."));
        }
        if path.contains('{') {
            errors.push((404, "Nothing by that name."));
        }
        errors.extend(self.extra.iter().copied());
        // An operation's own description of a status (inserted last) wins over the generic one.
        for (status, what) in errors {
            responses.insert(
                status.to_string(),
                json!({
                    "description": what,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }),
            );
        }
        op.insert("responses".into(), Value::Object(responses));
        Value::Object(op)
    }
}

/// The `{name}`s of a path template, in order.
pub fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(name, _)| name))
}

impl<S: Clone + Send + Sync + 'static> Api<S> {
    /// A service's API, documenting the routes every service has.
    pub fn new(title: &str, version: &str, description: &str) -> Api<S> {
        let mut api = Api {
            info: json!({"title": title, "version": version, "description": description}),
            router: Router::new(),
            paths: BTreeMap::new(),
        };
        api.record(
            DOCUMENT_PATH,
            "get",
            &Op::new("This document: the service's API, OpenAPI 3.1"),
        );
        api.record(
            "/metrics",
            "get",
            &Op::new("Prometheus metrics").ok(200, "text/plain", "The text exposition format."),
        );
        api.record(
            "/healthz",
            "get",
            &Op::new("Liveness: the process answers").describe("`{\"status\": \"alive\"}`."),
        );
        api.record(
            "/readyz",
            "get",
            &Op::new("Readiness: every readiness condition holds")
                .describe("`{\"ready\": bool, \"conditions\": [...]}`.")
                .error(503, "Not ready: a condition does not hold yet."),
        );
        api
    }

    fn record(&mut self, path: &str, method: &str, op: &Op) {
        let previous = self
            .paths
            .entry(path.to_owned())
            .or_default()
            .insert(method.to_owned(), op.document(path));
        assert!(previous.is_none(), "{method} {path} is declared twice");
    }

    fn route(mut self, path: &str, method: &str, handler: MethodRouter<S>, op: &Op) -> Api<S> {
        self.record(path, method, op);
        self.router = self.router.route(path, handler);
        self
    }

    /// `GET path`, answered by `handler`, documented as `op`.
    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H, op: Op) -> Api<S> {
        self.route(path, "get", get(handler), &op)
    }

    /// `POST path`, answered by `handler`, documented as `op`.
    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H, op: Op) -> Api<S> {
        self.route(path, "post", post(handler), &op)
    }

    /// The OpenAPI document of the routes declared so far (and of the runtime's).
    pub fn document(&self) -> Value {
        json!({
            "openapi": "3.1.0",
            "info": self.info,
            "paths": self.paths,
            "components": {
                "securitySchemes": {
                    BEARER: {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A token from the service's tokens file (`--tokens-file`), bound to tenants (or every tenant: an operator token) and scopes. Each operation names the scope it needs.",
                    },
                },
                "schemas": {
                    "Error": {
                        "type": "object",
                        "required": ["error", "message"],
                        "properties": {
                            "error": {"type": "string", "description": "A stable code, e.g. `not_found`."},
                            "message": {"type": "string"},
                            "details": {},
                        },
                    },
                },
            },
        })
    }

    /// The routes, with `GET /openapi.json` answering the document.
    pub fn into_router(self) -> Router<S> {
        let body = Bytes::from(self.document().to_string());
        self.router.route(
            DOCUMENT_PATH,
            get(move || {
                let body = body.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    fn api() -> Api {
        Api::new("aispm test", "1.2.3", "A test.")
            .get(
                "/v1/tenants/{tenant}/things/{id}",
                || async { "thing" },
                Op::new("One thing")
                    .path("id", "The thing's id.")
                    .query("kind", Ty::one_of(["a", "b"]), "One kind.")
                    .tenant(Scope::Read),
            )
            .post(
                "/v1/tenants/{tenant}/things/{id}",
                || async { "made" },
                Op::new("Make a thing")
                    .tenant(Scope::Admin)
                    .ok(201, "application/json", "Made."),
            )
    }

    #[test]
    fn the_document_names_each_operation_with_its_parameters_and_caller() {
        let d = api().document();
        assert_eq!(d["openapi"], "3.1.0");
        assert_eq!(d["info"]["version"], "1.2.3");
        let get = &d["paths"]["/v1/tenants/{tenant}/things/{id}"]["get"];
        let names: Vec<&str> = get["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["tenant", "id", "kind"]);
        assert_eq!(get["parameters"][2]["schema"]["enum"], json!(["a", "b"]));
        assert_eq!(get["security"], json!([{"bearerAuth": ["read"]}]));
        for status in ["200", "400", "401", "403", "404", "429"] {
            assert!(get["responses"][status].is_object(), "{status}");
        }
        let post = &d["paths"]["/v1/tenants/{tenant}/things/{id}"]["post"];
        assert!(post["responses"]["201"].is_object());
        assert!(post["responses"]["400"].is_null());
        for runtime in ["/openapi.json", "/metrics", "/healthz", "/readyz"] {
            assert_eq!(
                d["paths"][runtime]["get"]["security"],
                json!([]),
                "{runtime}"
            );
        }
    }

    #[tokio::test]
    async fn the_router_serves_the_document_and_each_method() {
        let api = api();
        let document = api.document();
        let router = api.into_router();
        let call = |method: &str, uri: &str| {
            let router = router.clone();
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            async move { router.oneshot(req).await.unwrap() }
        };
        let r = call("GET", "/openapi.json").await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), document);
        assert_eq!(
            call("POST", "/v1/tenants/acme/things/x").await.status(),
            StatusCode::OK
        );
        assert_eq!(
            call("DELETE", "/v1/tenants/acme/things/x").await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    #[should_panic(expected = "declared twice")]
    fn a_route_declared_twice_is_refused() {
        let _ = api().get(
            "/v1/tenants/{tenant}/things/{id}",
            || async { "" },
            Op::new("Again"),
        );
    }
}
