//! The subscriptions file (`--webhooks`, TOML): who is told about what, where, and how long
//! aispm keeps trying.
//!
//! ```toml
//! [[subscription]]
//! id = "secops"                          # names the subscription in metrics, logs and files
//! url = "https://hooks.example.com/aispm"
//! secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"   # or secret_env = "SECOPS_WEBHOOK_SECRET"
//! events = ["blocker.opened", "blocker.resolved", "readiness.changed",
//!           "finding.sla_breached", "report.delivered"]
//! tenants = ["acme"]                     # omitted: every tenant
//! format = "standard"                    # or "slack" (a Slack incoming-webhook body)
//! retry_for = "24h"                      # then the message is dead-lettered
//! ```

use super::event::{Format, Kind};
use crate::{Error, Result};
use base64::Engine;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// How long a message is retried by default before it is dead-lettered.
pub(crate) const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(24 * 3600);

/// One subscription, validated.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub id: String,
    pub url: String,
    /// The HMAC key (the base64 after `whsec_`, decoded).
    pub key: Vec<u8>,
    pub events: Vec<Kind>,
    /// Empty: every tenant.
    pub tenants: Vec<String>,
    pub format: Format,
    pub retry_for: Duration,
    /// Delay before the first retry; doubles with each attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Time allowed for one attempt (connect, send, the receiver's answer).
    pub timeout: Duration,
}

impl Subscription {
    /// Whether this subscription wants `kind` for `tenant`.
    pub(crate) fn wants(&self, kind: Kind, tenant: &str) -> bool {
        self.events.contains(&kind)
            && (self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    subscription: Vec<Raw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: String,
    url: String,
    secret: Option<String>,
    secret_env: Option<String>,
    events: Vec<String>,
    #[serde(default)]
    tenants: Vec<String>,
    format: Option<Format>,
    retry_for: Option<String>,
    initial_backoff: Option<String>,
    max_backoff: Option<String>,
    timeout: Option<String>,
}

/// Reads and validates the subscriptions file; every problem is named with the subscription.
pub(crate) fn load(path: &Path) -> Result<Vec<Subscription>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, |name| std::env::var(name).ok())
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// [`load`] on the file's text; `env` reads `secret_env` variables.
pub(crate) fn parse(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Subscription>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out: Vec<Subscription> = Vec::new();
    for raw in file.subscription {
        let id = raw.id.clone();
        let s = validate(raw, &env).map_err(|e| format!("subscription '{id}': {e}"))?;
        if out.iter().any(|o| o.id == s.id) {
            return Err(format!("subscription '{id}' is defined twice"));
        }
        out.push(s);
    }
    Ok(out)
}

fn duration(v: Option<String>, field: &str, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(v) => humantime::parse_duration(&v).map_err(|e| format!("{field} '{v}': {e}")),
    }
}

fn validate(raw: Raw, env: &impl Fn(&str) -> Option<String>) -> Result<Subscription, String> {
    if raw.id.is_empty()
        || raw.id.len() > 64
        || !raw
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("id must be 1 to 64 letters, digits, '-' or '_'".into());
    }
    let url = raw.url.trim().to_owned();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(format!("url '{url}' must be http:// or https://"));
    }
    let secret = match (raw.secret, raw.secret_env) {
        (Some(s), None) => s,
        (None, Some(name)) => env(&name).ok_or(format!("secret_env {name} is not set"))?,
        _ => return Err("give exactly one of secret and secret_env".into()),
    };
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or("the secret must be whsec_ followed by base64")?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "the secret is {} bytes; Standard Webhooks secrets are 24 to 64 bytes",
            key.len()
        ));
    }
    if raw.events.is_empty() {
        return Err("events is empty".into());
    }
    let events = raw
        .events
        .iter()
        .map(|e| {
            e.parse::<Kind>()
                .map_err(|_| format!("unknown event '{e}': one of {}", Kind::names()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let retry_for = duration(raw.retry_for, "retry_for", DEFAULT_RETRY_FOR)?;
    if retry_for < Duration::from_secs(3600) {
        tracing::warn!(subscription = %raw.id, ?retry_for, "Webhook messages are retried for less than an hour before they are dead-lettered.");
    }
    let initial_backoff = duration(
        raw.initial_backoff,
        "initial_backoff",
        Duration::from_secs(5),
    )?;
    let max_backoff = duration(raw.max_backoff, "max_backoff", Duration::from_secs(30 * 60))?;
    let timeout = duration(raw.timeout, "timeout", Duration::from_secs(10))?;
    if initial_backoff.is_zero() || max_backoff < initial_backoff || timeout.is_zero() {
        return Err(
            "initial_backoff and timeout must be positive, max_backoff at least initial_backoff"
                .into(),
        );
    }
    Ok(Subscription {
        id: raw.id,
        url,
        key,
        events,
        tenants: raw.tenants,
        format: raw.format.unwrap_or(Format::Standard),
        retry_for,
        initial_backoff,
        max_backoff,
        timeout,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn a_full_subscription_parses_and_bad_ones_say_why() {
        let subs = parse(
            &format!(
                "[[subscription]]\nid = \"secops\"\nurl = \"https://h.example/x\"\nsecret = \"{SECRET}\"\nevents = [\"blocker.opened\", \"report.delivered\"]\ntenants = [\"acme\"]\nformat = \"slack\"\nretry_for = \"2h\"\n"
            ),
            |_| None,
        )
        .unwrap();
        assert_eq!(subs.len(), 1);
        let s = &subs[0];
        assert_eq!(
            (s.format, s.retry_for),
            (Format::Slack, Duration::from_secs(7200))
        );
        assert!(s.wants(Kind::BlockerOpened, "acme"));
        assert!(!s.wants(Kind::BlockerOpened, "globex"));
        assert!(!s.wants(Kind::ReadinessChanged, "acme"));

        let bad = |body: &str| {
            parse(&format!("[[subscription]]\n{body}"), |n| {
                (n == "S").then(|| SECRET.to_owned())
            })
            .unwrap_err()
        };
        let base = "id = \"a\"\nurl = \"https://h/x\"\nevents = [\"blocker.opened\"]\n";
        assert!(bad(base).contains("exactly one of secret"), "{}", bad(base));
        assert!(bad(&format!("{base}secret_env = \"NOPE\"")).contains("NOPE is not set"));
        assert!(bad(&format!("{base}secret = \"abc\"")).contains("whsec_"));
        assert!(bad(&format!("{base}secret = \"whsec_YWJj\"")).contains("24 to 64 bytes"));
        let ok = format!("{base}secret_env = \"S\"");
        assert!(
            parse(&format!("[[subscription]]\n{ok}"), |n| (n == "S")
                .then(|| SECRET.to_owned()))
            .is_ok()
        );
        assert!(
            bad(&ok.replace("blocker.opened", "blocker.exploded"))
                .contains("unknown event 'blocker.exploded'")
        );
        assert!(bad(&ok.replace("https://h/x", "ftp://h/x")).contains("http:// or https://"));
        assert!(bad(&ok.replace("id = \"a\"", "id = \"../etc\"")).contains("letters, digits"));
        assert!(bad(&format!("{ok}\ncolour = \"red\"")).contains("unknown field"));
        let twice = format!("[[subscription]]\n{ok}\n[[subscription]]\n{ok}");
        assert!(
            parse(&twice, |_| Some(SECRET.to_owned()))
                .unwrap_err()
                .contains("defined twice")
        );
    }
}
