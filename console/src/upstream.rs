//! The services' read-only APIs, called with the signed-in viewer's own token: the console
//! holds no token of its own, so a viewer sees exactly what its token may read.

use aispm_runtime::config::ReadApis;
use serde_json::Value;
use std::time::Duration;

/// The service a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Projector,
    Gatekeeper,
    Reporter,
}

/// Why a call brought no data.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// 401: the token is no longer valid (revoked since sign-in).
    #[error("the token is no longer accepted")]
    Unauthorized,
    /// 403: the token may not read this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// 400 or 422: what was asked is not accepted (a bad instant, an unapproved recipient).
    #[error("{1}")]
    Invalid(u16, String),
    /// 429: the service is busy for this caller; `Retry-After` seconds, if it said.
    #[error("{0}")]
    Busy(String, Option<u64>),
    /// 503, or the service could not be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

/// A query string of `pairs`, each value percent-encoded; pairs without a value or with an
/// empty one are left out.
pub(crate) fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> String {
    pairs
        .into_iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", encode(v.filter(|v| !v.is_empty())?))))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes one path segment or query value (every byte but the unreserved ones), so an
/// id holding `/`, `:` or `?` stays one segment.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The services' base URLs and one HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    http: reqwest::Client,
    projector: String,
    gatekeeper: String,
    reporter: String,
}

impl Upstream {
    /// Reads the services in `apis` with clients from `builder` (which trusts `--ca-cert`).
    pub(crate) fn new(apis: &ReadApis, builder: reqwest::ClientBuilder, timeout: Duration) -> Self {
        Upstream {
            http: builder
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            projector: apis.projector.trim_end_matches('/').to_owned(),
            gatekeeper: apis.gatekeeper.trim_end_matches('/').to_owned(),
            reporter: apis.reporter.trim_end_matches('/').to_owned(),
        }
    }

    fn base(&self, s: Service) -> &str {
        match s {
            Service::Projector => &self.projector,
            Service::Gatekeeper => &self.gatekeeper,
            Service::Reporter => &self.reporter,
        }
    }

    /// GETs `path` of `s` with the viewer's `token`.
    pub(crate) async fn get(
        &self,
        s: Service,
        path: &str,
        token: &str,
    ) -> Result<Value, UpstreamError> {
        let url = format!("{}{path}", self.base(s));
        let r = self.http.get(&url).bearer_auth(token).send().await;
        Self::answer(r).await
    }

    /// POSTs `body` to `path` of `s` with the viewer's `token`.
    pub(crate) async fn post(
        &self,
        s: Service,
        path: &str,
        token: &str,
        body: &Value,
    ) -> Result<Value, UpstreamError> {
        let url = format!("{}{path}", self.base(s));
        let r = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await;
        Self::answer(r).await
    }

    async fn answer(r: reqwest::Result<reqwest::Response>) -> Result<Value, UpstreamError> {
        let r = r.map_err(|e| UpstreamError::Unavailable(e.without_url().to_string()))?;
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let message = || {
            body["message"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or("")
                .to_owned()
        };
        match status {
            200..=299 => Ok(body),
            401 => Err(UpstreamError::Unauthorized),
            403 => Err(UpstreamError::Forbidden(message())),
            404 => Err(UpstreamError::NotFound(message())),
            400 | 422 => Err(UpstreamError::Invalid(status, message())),
            429 => Err(UpstreamError::Busy(message(), retry_after)),
            502..=504 => Err(UpstreamError::Unavailable(message())),
            _ => Err(UpstreamError::Other(format!("{status}: {}", message()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_one_segment() {
        assert_eq!(
            encode("AISPM-DATA-001:openai-gpt-4o/pii"),
            "AISPM-DATA-001%3Aopenai-gpt-4o%2Fpii"
        );
        assert_eq!(encode("a b?c#"), "a%20b%3Fc%23");
    }
}
