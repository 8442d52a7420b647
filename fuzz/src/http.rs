//! The HTTP request the `http_ingest` target sends, built from a fuzz input:
//!
//! `[n][n header bytes][body]`. The header bytes are read with [`arbitrary::Unstructured`]: one
//! selector byte each for the method, path, `Authorization`, `Content-Type`, `Content-Length`,
//! the body's chunking and flags, then whatever the "raw" choices and extra headers take. A
//! selector of 0 is the ordinary request (`POST /v1/events` with the `acme` token, JSON, an
//! exact `Content-Length`, one chunk), so `[0] + body` is a well-formed request for `body`.

use arbitrary::Unstructured;
use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, header};

/// The tokens file of the fuzzed service.
pub const TOKENS: &str = r#"
[[tokens]]
token = "s3cr3t-acme"
tenants = ["acme"]
scopes = ["read", "emit", "approve", "register", "validate", "admin", "reports"]
name = "acme"

[[tokens]]
token = "s3cr3t-globex"
tenants = ["globex", "tenant-000"]
scopes = ["read", "emit", "approve", "register", "validate", "admin", "reports"]
name = "globex"

[[tokens]]
token = "ops-secret"
tenants = ["*"]
scopes = ["read", "emit", "approve", "register", "validate", "admin", "reports"]
name = "ops"
"#;

pub const METHOD_POST: u8 = 0;
pub const METHOD_GET: u8 = 1;
pub const AUTH_TENANT: u8 = 0;
pub const AUTH_OPERATOR: u8 = 2;
pub const AUTH_OTHER_TENANT: u8 = 3;
pub const AUTH_MISSING: u8 = 4;
pub const CT_JSON: u8 = 0;
pub const CT_NDJSON: u8 = 2;
pub const CT_JSONL: u8 = 4;
pub const CT_TEXT: u8 = 8;
pub const LENGTH_EXACT: u8 = 0;
pub const LENGTH_MISSING: u8 = 1;
/// Flag: the service is still starting (its input topics are not ready).
pub const FLAG_STARTING: u8 = 1;
/// Flag: add extra headers drawn from the rest of the header bytes.
pub const FLAG_EXTRA_HEADERS: u8 = 2;
/// Flag: `Content-Encoding: gzip` (the body is decompressed, bounded, or refused).
pub const FLAG_GZIP: u8 = 4;

/// The selectors of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub method: u8,
    pub path: u8,
    pub auth: u8,
    pub content_type: u8,
    pub length: u8,
    /// 0: the body in one piece; k: a stream of k-byte chunks (no size hint).
    pub chunk: u8,
    pub flags: u8,
}

impl Shape {
    /// The fuzz input for this shape and `body`.
    pub fn encode(&self, body: &[u8]) -> Vec<u8> {
        let mut out = vec![
            7,
            self.method,
            self.path,
            self.auth,
            self.content_type,
            self.length,
            self.chunk,
            self.flags,
        ];
        out.extend_from_slice(body);
        out
    }
}

/// A request built from a fuzz input, and what it was meant to be.
#[derive(Debug)]
pub struct Built {
    pub request: Request<Body>,
    pub shape: Shape,
    pub body_len: usize,
}

/// Builds the request, or `None` when the input names something `http` cannot represent
/// (an invalid method, URI or header value: a real client could not send it either).
pub fn build(data: &[u8]) -> Option<Built> {
    let (&n, rest) = data.split_first()?;
    let n = usize::from(n).min(rest.len());
    let (head, body) = rest.split_at(n);
    let mut u = Unstructured::new(head);
    let byte = |u: &mut Unstructured<'_>| u.arbitrary::<u8>().unwrap_or(0);
    let shape = Shape {
        method: byte(&mut u),
        path: byte(&mut u),
        auth: byte(&mut u),
        content_type: byte(&mut u),
        length: byte(&mut u),
        chunk: byte(&mut u),
        flags: byte(&mut u),
    };
    let raw_string = |u: &mut Unstructured<'_>| u.arbitrary::<String>().unwrap_or_default();
    let raw_bytes = |u: &mut Unstructured<'_>| u.arbitrary::<Vec<u8>>().unwrap_or_default();

    let method = match shape.method % 8 {
        0 => Method::POST,
        1 => Method::GET,
        2 => Method::PUT,
        3 => Method::DELETE,
        4 => Method::HEAD,
        5 => Method::OPTIONS,
        6 => Method::PATCH,
        _ => Method::from_bytes(raw_string(&mut u).as_bytes()).ok()?,
    };
    let path = match shape.path % 8 {
        0 => "/v1/events".to_owned(),
        1 => "/v1/events/".to_owned(),
        2 => "/v1/events?tenant=acme&x=%ff".to_owned(),
        3 => "/V1/EVENTS".to_owned(),
        4 => "/v1/traces".to_owned(),
        5 => "//v1/events".to_owned(),
        6 => "/v1/events/../events".to_owned(),
        _ => raw_string(&mut u),
    };
    let mut builder = Request::builder().method(method).uri(path.as_str());
    let auth: Option<Vec<u8>> = match shape.auth % 9 {
        0 => Some(b"Bearer s3cr3t-acme".to_vec()),
        1 => Some(b"bearer  s3cr3t-acme ".to_vec()),
        2 => Some(b"Bearer ops-secret".to_vec()),
        3 => Some(b"Bearer s3cr3t-globex".to_vec()),
        4 => None,
        5 => Some(b"Bearer not-a-token".to_vec()),
        6 => Some(b"Basic YWNtZTpzM2NyM3QtYWNtZQ==".to_vec()),
        7 => Some(b"Bearer ".to_vec()),
        _ => Some(raw_bytes(&mut u)),
    };
    if let Some(auth) = auth {
        builder = builder.header(header::AUTHORIZATION, HeaderValue::from_bytes(&auth).ok()?);
    }
    let content_type: Option<Vec<u8>> = match shape.content_type % 13 {
        0 => Some(b"application/json".to_vec()),
        1 => Some(b"application/json; charset=utf-8".to_vec()),
        2 => Some(b"application/x-ndjson".to_vec()),
        3 => Some(b"Application/NDJSON".to_vec()),
        4 => Some(b"application/jsonl".to_vec()),
        5 => Some(b"application/x-jsonlines".to_vec()),
        6 => Some(b"application/cloudevents+json".to_vec()),
        7 => None,
        8 => Some(b"text/plain".to_vec()),
        9 => Some(b"application/cloudevents-batch+json".to_vec()),
        10 => Some(b"application/x-protobuf".to_vec()),
        11 => Some(b"application/protobuf".to_vec()),
        _ => Some(raw_bytes(&mut u)),
    };
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, HeaderValue::from_bytes(&ct).ok()?);
    }
    let length: Option<Vec<u8>> = match shape.length % 6 {
        0 => Some(body.len().to_string().into_bytes()),
        1 => None,
        2 => Some((body.len() / 2).to_string().into_bytes()),
        3 => Some((body.len() + 1).to_string().into_bytes()),
        4 => Some(u64::MAX.to_string().into_bytes()),
        _ => Some(raw_bytes(&mut u)),
    };
    if let Some(length) = length {
        builder = builder.header(
            header::CONTENT_LENGTH,
            HeaderValue::from_bytes(&length).ok()?,
        );
    }
    if shape.flags & FLAG_GZIP != 0 {
        builder = builder.header(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if shape.flags & FLAG_EXTRA_HEADERS != 0 {
        for _ in 0..4 {
            let name = raw_bytes(&mut u);
            let value = raw_bytes(&mut u);
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&name),
                HeaderValue::from_bytes(&value),
            ) {
                builder = builder.header(name, value);
            }
        }
    }
    let body_len = body.len();
    let http_body = if shape.chunk == 0 {
        Body::from(body.to_vec())
    } else {
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(usize::from(shape.chunk))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    };
    let request = builder.body(http_body).ok()?;
    Some(Built {
        request,
        shape,
        body_len,
    })
}
