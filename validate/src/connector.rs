//! The live-connector probe (`aispm-validate connector`).
//!
//! A connector is live when it reaches the live system it reads. The probe does what the
//! connector does: one `GET` of the live system's API with the connector's credentials (as
//! request headers), without following redirects (a login page is not the API). It passes only
//! on a 2xx answer with a body. It writes the transcript (the request without header values,
//! the status, the answer's size and digest, never its content) and posts one `connector_live`
//! result per environment, subject the connector, signed by the validator key over the claim
//! and the transcript's digest.
//!
//! A failed probe is posted too: a failing `connector_live` result is a blocker naming the
//! connector and the status, which is what an operator needs to see.

use crate::sign::{self, Claim, SignerArgs, Transcript, signed_result};
use aispm_schemas::{CheckKind, InputEvent, Timestamp};
use anyhow::{Context, Result, bail};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The `source` of the results the probe posts.
const SOURCE: &str = "aispm-validate";

/// `aispm-validate connector` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectorArgs {
    /// The tenant whose connector is probed.
    #[arg(long)]
    pub tenant: String,

    /// The connector's registered asset id (the result's subject).
    #[arg(long)]
    pub connector: String,

    /// The live system's API URL the connector reads (e.g. an identity provider's users API).
    #[arg(long)]
    pub url: String,

    /// A request header the connector sends, `Name: value` (repeatable): its credential, for
    /// instance `Authorization: SSWS <token>`. Values never reach the transcript.
    #[arg(long = "header")]
    pub headers: Vec<String>,

    /// Ingest token with the `validate` scope for the tenant.
    #[arg(long, env = "AISPM_VALIDATE_TOKEN", hide_env_values = true)]
    pub token: String,

    #[command(flatten)]
    pub signer: SignerArgs,

    /// Where the transcript is written.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,

    /// Time allowed for the live system to answer.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// What the probe printed and posted.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub passed: bool,
    pub connector: String,
    /// The live system's HTTP status, when it answered.
    pub status: Option<u16>,
    pub detail: String,
    pub elapsed_ms: u64,
    pub transcript: String,
    pub sha256: String,
    /// The result events posted (one per environment), each accepted by ingest (202).
    pub event_ids: Vec<String>,
}

/// Parses `Name: value` headers.
fn headers(raw: &[String]) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for h in raw {
        let Some((name, value)) = h.split_once(':') else {
            bail!("--header '{}': expected `Name: value`", redacted_name(h));
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("--header: '{}' is not a header name", name.trim()))?;
        let mut value = HeaderValue::from_str(value.trim())
            .with_context(|| format!("--header {name}: the value is not a valid header value"))?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

/// The part of a malformed `--header` that may be printed: up to the first space.
fn redacted_name(h: &str) -> &str {
    h.split_whitespace().next().unwrap_or("")
}

/// The URL without credentials in it (`user:pass@`), for the transcript.
fn public_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Runs the probe and posts the results.
pub async fn run(args: &ConnectorArgs) -> Result<Summary> {
    let (key, environments) = args.signer.load()?;
    let url: reqwest::Url = args
        .url
        .parse()
        .with_context(|| format!("--url '{}'", args.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--url: the live system is probed over http or https");
    }
    let header_map = headers(&args.headers)?;
    let live = reqwest::Client::builder()
        .timeout(args.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let nonce = uuid::Uuid::now_v7().simple().to_string();
    let started_at = Timestamp::now();
    let started = Instant::now();
    let answer = live
        .get(url.clone())
        .headers(header_map.clone())
        .send()
        .await;
    let (status, content_type, body, error) = match answer {
        Ok(r) => {
            let status = r.status().as_u16();
            let content_type = r
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match r.bytes().await {
                Ok(b) => (Some(status), content_type, b.to_vec(), None),
                Err(e) => (
                    Some(status),
                    content_type,
                    vec![],
                    Some(format!("reading the answer: {e}")),
                ),
            }
        }
        // Without the URL: reqwest's message names it, and it may carry credentials.
        Err(e) => (None, None, vec![], Some(e.without_url().to_string())),
    };
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let passed =
        error.is_none() && status.is_some_and(|s| (200..300).contains(&s)) && !body.is_empty();
    let host = url.host_str().unwrap_or("?").to_owned();
    let detail = match (status, &error) {
        _ if passed => format!(
            "GET {host}{} answered {} with {} bytes in {elapsed_ms} ms",
            url.path(),
            status.unwrap_or(0),
            body.len()
        ),
        (_, Some(e)) => format!("GET {host}{} failed: {e}", url.path()),
        (Some(s), None) if (200..300).contains(&s) => {
            format!("GET {host}{} answered {s} with an empty body", url.path())
        }
        (Some(s), None) => format!(
            "GET {host}{} answered {s}: the connector cannot read the live system",
            url.path()
        ),
        (None, None) => format!("GET {host}{} got no answer", url.path()),
    };
    let transcript = json!({
        "probe": "connector_live",
        "nonce": nonce,
        "tenant": args.tenant,
        "connector": args.connector,
        "environments": environments.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        "started_at": started_at.to_rfc3339(),
        "request": {
            "method": "GET",
            "url": public_url(&url),
            "follow_redirects": false,
            // Names only: the values are the connector's credentials.
            "headers": header_map.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        },
        "response": {
            "status": status,
            "content_type": content_type,
            "body_bytes": body.len(),
            "body_sha256": hex::encode(Sha256::digest(&body)),
            "error": error,
        },
        "elapsed_ms": elapsed_ms,
        "passed": passed,
        "detail": detail,
    });
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let path = args.out.join(format!("connector-{nonce}.json"));
    let bytes = serde_json::to_vec_pretty(&transcript)?;
    let evidence = Transcript::write(&path, &format!("connector-{nonce}"), &bytes)?;

    let ingest = args.signer.http_client(Duration::from_secs(10))?;
    let at = Timestamp::now();
    let mut event_ids = Vec::new();
    for environment in environments {
        let claim = Claim {
            source: SOURCE,
            event_id: format!("connector-{nonce}-{environment}"),
            tenant: &args.tenant,
            check_kind: CheckKind::ConnectorLive,
            environment,
            subject: Some(&args.connector),
            passed,
            detail: detail.clone(),
            at,
        };
        // One evidence item per environment (each row counts for its own stage), all naming
        // the same transcript.
        let item = Transcript {
            evidence_id: format!("{}-{environment}", evidence.evidence_id),
            ..evidence.clone()
        };
        let result = signed_result(&key, &claim, &item)?;
        sign::post(
            &ingest,
            &args.signer.ingest,
            &args.token,
            &InputEvent::Registry(result),
        )
        .await?;
        event_ids.push(claim.event_id);
    }
    Ok(Summary {
        passed,
        connector: args.connector.clone(),
        status,
        detail,
        elapsed_ms,
        transcript: evidence.uri,
        sha256: evidence.sha256,
        event_ids,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_sensitive_and_malformed_ones_are_not_echoed() {
        let map = headers(&["Authorization: SSWS secret-token".into()]).unwrap();
        let v = map.get("authorization").unwrap();
        assert!(v.is_sensitive());
        assert!(!format!("{map:?}").contains("secret-token"));
        let e = headers(&["Authorization=SSWS secret-token".into()]).unwrap_err();
        assert!(!format!("{e:#}").contains("secret-token"), "{e:#}");
    }

    #[test]
    fn the_transcript_url_carries_no_credentials() {
        let u: reqwest::Url = "https://svc:hunter2@idp.example/api/v1/users?limit=1"
            .parse()
            .unwrap();
        let p = public_url(&u);
        assert_eq!(p, "https://idp.example/api/v1/users?limit=1");
    }
}
