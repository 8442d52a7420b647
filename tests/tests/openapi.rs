//! Each service's OpenAPI document against its router, over real HTTP: ingest, projector,
//! gatekeeper and reporter serve `GET /openapi.json` without a token; it is OpenAPI 3.1 (and
//! valid, by Python's openapi-spec-validator); every operation it documents is a route the
//! service knows (never axum's fallback, an empty 404, nor 405) and answers a status the
//! operation lists; without a token, every operation the document secures answers 401 and every
//! other one answers.

use aispm_schemas::{Risk, Stage};
use aispm_tests::demo::{Pipeline, TENANT, TENANT_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A documented path with its parameters filled: the demo tenant, `x` for every other name.
fn fill(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some((before, after)) = rest.split_once('{') {
        let (name, tail) = after.split_once('}').unwrap();
        out.push_str(before);
        out.push_str(if name == "tenant" { TENANT } else { "x" });
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Sends `method path` (a POST with the body `{}`), with `token` if any: status and body.
async fn call(
    http: &reqwest::Client,
    base: &str,
    method: &Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let mut r = http.request(method.clone(), format!("{base}{path}"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if method == Method::POST {
        r = r.json(&json!({}));
    }
    let r = r.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// Every operation of a document: method, path template, operation.
fn operations(doc: &Value) -> Vec<(Method, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            ops.push((method, path.clone(), op.clone()));
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_a_route_the_service_answers() {
    let work = tempfile::tempdir().unwrap();
    let p = Pipeline::start(work.path()).await.unwrap();
    let http = reqwest::Client::new();
    let services = [
        ("ingest", &p.ingest.http),
        ("projector", &p.projector.http),
        ("gatekeeper", &p.gatekeeper.http),
        ("reporter", &p.reporter.http),
    ];
    let mut files = Vec::new();
    let mut documents = std::collections::BTreeMap::new();
    for (name, base) in services {
        // No token needed.
        let r = http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["openapi"], "3.1.0", "{name}");
        assert_eq!(doc["info"]["title"], format!("aispm {name}"));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
        for runtime in ["/openapi.json", "/metrics", "/healthz", "/readyz"] {
            assert!(doc["paths"][runtime]["get"].is_object(), "{name} {runtime}");
        }

        // The discriminator: a route the service does not know is axum's fallback.
        let (status, body) = call(&http, base, &Method::GET, "/v1/no-such-route", None).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, ""),
            "{name}"
        );

        let ops = operations(&doc);
        for (method, path, op) in &ops {
            let url = fill(path);
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let listed = |status: StatusCode| op["responses"][status.as_str()].is_object();
            let (status, body) = call(&http, base, method, &url, Some(TENANT_TOKEN)).await;
            let what = format!("{name}: {method} {url} answered {status}: {body}");
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
            if status == StatusCode::NOT_FOUND {
                let error: Value = serde_json::from_str(&body)
                    .unwrap_or_else(|_| panic!("not a route (axum's fallback): {what}"));
                assert!(error["error"].is_string(), "{what}");
            }
            assert!(listed(status), "an undocumented status: {what}");

            // The security the document states is the one the route applies.
            let (status, body) = call(&http, base, method, &url, None).await;
            let what = format!("{name}: {method} {url} without a token answered {status}: {body}");
            if secured {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
            } else {
                assert!(status.is_success(), "{what}");
            }
        }
        println!("{name}: {} operations answered as documented", ops.len());
        let file = work.path().join(format!("{name}.openapi.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        files.push(file);
        documents.insert(name, doc);
    }

    // A few routes each document must hold, with what they take.
    let op =
        |service: &str, path: &str, method: &str| documents[service]["paths"][path][method].clone();
    assert!(op("ingest", "/v1/events", "post")["responses"]["202"].is_object());
    let findings = op("projector", "/v1/tenants/{tenant}/findings", "get");
    assert_eq!(findings["security"], json!([{"bearerAuth": ["read"]}]));
    let severity = findings["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "severity")
        .unwrap();
    let risks: Vec<&str> = Risk::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(severity["schema"]["enum"], json!(risks));
    for status in ["200", "400", "401", "403", "404", "429"] {
        assert!(findings["responses"][status].is_object(), "{status}");
    }
    assert!(op("projector", "/v1/tenants/{tenant}/coverage/{key}", "get").is_object());
    assert!(op("projector", "/v1/tenants/{tenant}/posture/trend", "get").is_object());
    let readiness = op("gatekeeper", "/v1/tenants/{tenant}/readiness", "get");
    let stages: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(readiness["parameters"][1]["schema"]["enum"], json!(stages));
    assert!(op("gatekeeper", "/v1/principal", "get").is_object());
    let create = op("reporter", "/v1/tenants/{tenant}/reports", "post");
    assert_eq!(create["security"], json!([{"bearerAuth": ["reports"]}]));
    assert!(
        op(
            "reporter",
            "/v1/tenants/{tenant}/reports/{id}/packet.zip",
            "get"
        )
        .is_object()
    );
    assert!(op("reporter", "/v1/signing-keys", "get").is_object());

    // Valid OpenAPI 3.1, by a validator that is not ours.
    let out = std::process::Command::new(aispm_tests::process::venv_python())
        .args([
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             for path in sys.argv[1:]:\n    validate(json.load(open(path)))\n    print('valid:', path)",
        ])
        .args(&files)
        .output()
        .expect("the venv's python (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "openapi-spec-validator (scripts/setup.sh installs it): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
