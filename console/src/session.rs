//! Sign-in sessions: a bearer token, once checked against the gatekeeper, becomes a random
//! session id in an `HttpOnly`, `SameSite=Strict` cookie; the token itself never reaches the
//! browser again. Sessions live in memory only (a restart signs everyone out), end after
//! `--session-idle` without a request or `--session-max` in all, and carry a CSRF token that
//! every form posting to the console must echo.

use rand::RngCore;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "aispm_session";

/// Whom a session belongs to, as the gatekeeper named the token.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Principal {
    pub name: String,
    /// `"*"` for an operator token, else the tenant ids.
    pub tenants: serde_json::Value,
    pub scopes: Vec<String>,
}

impl Principal {
    pub(crate) fn is_operator(&self) -> bool {
        self.tenants.as_str() == Some("*")
    }

    /// The tenants of a tenant-bound token (empty for an operator's).
    pub(crate) fn tenant_ids(&self) -> Vec<String> {
        self.tenants
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// One signed-in viewer.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub token: String,
    pub principal: Principal,
    pub csrf: String,
    started: Instant,
    seen: Instant,
}

impl Session {
    /// Whether `form` is this session's CSRF token (compared in constant time).
    pub(crate) fn csrf_ok(&self, form: &str) -> bool {
        self.csrf.len() == form.len() && bool::from(self.csrf.as_bytes().ct_eq(form.as_bytes()))
    }
}

/// The sessions of this process.
#[derive(Debug, Clone)]
pub(crate) struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
    idle: Duration,
    max: Duration,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    pub(crate) fn new(idle: Duration, max: Duration) -> Self {
        Sessions {
            inner: Arc::default(),
            idle,
            max,
        }
    }

    /// Starts a session; returns its id (the cookie's value).
    pub(crate) fn start(&self, token: String, principal: Principal) -> String {
        let id = random_hex();
        let now = Instant::now();
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        // Expired sessions go whenever a new one starts: the map never outgrows the live ones.
        s.retain(|_, v| !self.expired(v, now));
        s.insert(
            id.clone(),
            Session {
                token,
                principal,
                csrf: random_hex(),
                started: now,
                seen: now,
            },
        );
        id
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.seen) > self.idle || now.duration_since(s.started) > self.max
    }

    /// The live session `id`, its idle timer renewed.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let live = s.get(id).is_some_and(|v| !self.expired(v, now));
        if !live {
            s.remove(id);
            return None;
        }
        let v = s.get_mut(id)?;
        v.seen = now;
        Some(v.clone())
    }

    pub(crate) fn end(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Live sessions (a gauge).
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The session id in a request's `Cookie` headers.
pub(crate) fn cookie_id(headers: &axum::http::HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The cookie that ties a sign-in form to the browser it was served to (login CSRF: another
/// site must not sign a viewer in with the attacker's token, whose views the viewer would then
/// take for their own). Double submit: the form carries the same random value as the cookie,
/// which a cross-site POST does not send (`SameSite=Strict`).
pub(crate) const SIGN_IN_COOKIE: &str = "aispm_sign_in";

/// How long a sign-in form may be used.
pub(crate) const SIGN_IN_FORM_MAX: Duration = Duration::from_secs(600);

/// A fresh value for a sign-in form and its cookie.
pub(crate) fn sign_in_nonce() -> String {
    random_hex()
}

/// The `Set-Cookie` value for a sign-in form's nonce (`None`: clear it).
pub(crate) fn sign_in_cookie(nonce: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    let (value, age) = nonce.map_or(("", 0), |n| (n, SIGN_IN_FORM_MAX.as_secs()));
    format!(
        "{SIGN_IN_COOKIE}={value}; Path=/sign-in; HttpOnly; SameSite=Strict; Max-Age={age}{secure}"
    )
}

/// Whether a posted sign-in form carries the nonce of its browser's cookie.
pub(crate) fn sign_in_nonce_ok(headers: &axum::http::HeaderMap, form: &str) -> bool {
    cookie(headers, SIGN_IN_COOKIE).is_some_and(|c| {
        !c.is_empty() && c.len() == form.len() && bool::from(c.as_bytes().ct_eq(form.as_bytes()))
    })
}

/// The `Set-Cookie` value for session `id` (`None`: clear it).
pub(crate) fn set_cookie(id: Option<&str>, secure: bool, max: Duration) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            max.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            name: "acme-dashboard".into(),
            tenants: serde_json::json!(["acme"]),
            scopes: vec!["read".into()],
        }
    }

    #[test]
    fn a_session_ends_after_its_idle_time() {
        let s = Sessions::new(Duration::from_millis(30), Duration::from_secs(60));
        let id = s.start("t".into(), principal());
        assert!(s.get(&id).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.get(&id).is_none());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn ids_and_csrf_tokens_are_random_and_checked_whole() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let a = s.start("t".into(), principal());
        let b = s.start("t".into(), principal());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let sa = s.get(&a).unwrap();
        assert!(sa.csrf_ok(&sa.csrf.clone()));
        assert!(!sa.csrf_ok(&sa.csrf[..63]));
        assert!(!sa.csrf_ok(""));
        assert!(!sa.csrf_ok(&s.get(&b).unwrap().csrf));
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let c = set_cookie(Some("abc"), true, Duration::from_secs(60));
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "x=1; aispm_session=abc; y=2".parse().unwrap());
        assert_eq!(cookie_id(&h).as_deref(), Some("abc"));
    }
}
