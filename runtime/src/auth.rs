//! Bearer tokens bound to tenants, from the tokens file:
//!
//! ```toml
//! [[tokens]]
//! token = "s3cr3t-acme"      # or sha256 = "<hex of the token's SHA-256>"
//! tenants = ["acme"]         # ["*"] for an operator token that reads every tenant
//! name = "acme-ci"           # optional, shown in logs instead of the token
//! ```
//!
//! Tokens are hashed on load and compared as SHA-256 digests in constant time; they are never
//! logged. A refused request is counted by reason.

use crate::http::ApiError;
use crate::metrics::Metrics;
use crate::{Error, Result};
use axum::http::{HeaderMap, StatusCode, header};
use prometheus::IntCounterVec;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;
use subtle::ConstantTimeEq;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: Option<String>,
    sha256: Option<String>,
    tenants: Vec<String>,
    name: Option<String>,
}

/// What a token may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every tenant (an operator token, `tenants = ["*"]`).
    All,
    /// The listed tenants.
    Tenants(BTreeSet<String>),
}

/// The caller behind a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub access: Access,
}

impl Principal {
    pub fn may_access(&self, tenant: &str) -> bool {
        match &self.access {
            Access::All => true,
            Access::Tenants(t) => t.contains(tenant),
        }
    }

    pub fn is_operator(&self) -> bool {
        self.access == Access::All
    }
}

/// The loaded tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Principal)>,
}

impl Tokens {
    /// No tokens: every authenticated route is refused.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Tokens {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| Error::Tokens {
            path: path.display().to_string(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        for (i, t) in file.tokens.into_iter().enumerate() {
            let digest = match (t.token, t.sha256) {
                (Some(token), None) => sha256(token.as_bytes()),
                (None, Some(hexed)) => {
                    let bytes = hex::decode(hexed.trim())
                        .map_err(|e| format!("tokens[{i}].sha256: {e}"))?;
                    bytes
                        .try_into()
                        .map_err(|_| format!("tokens[{i}].sha256: must be 32 bytes of hex"))?
                }
                _ => return Err(format!("tokens[{i}]: set exactly one of token and sha256")),
            };
            if t.tenants.is_empty() {
                return Err(format!("tokens[{i}]: tenants must not be empty"));
            }
            let access = if t.tenants.iter().any(|t| t == "*") {
                Access::All
            } else {
                Access::Tenants(t.tenants.into_iter().collect())
            };
            let name = t.name.unwrap_or_else(|| format!("token#{i}"));
            entries.push((digest, Principal { name, access }));
        }
        Ok(Tokens { entries })
    }

    /// The principal for a presented token, comparing against every entry in constant time.
    pub fn principal(&self, token: &str) -> Option<Principal> {
        let digest = sha256(token.as_bytes());
        let mut found = None;
        for (d, p) in &self.entries {
            if bool::from(d.ct_eq(&digest)) && found.is_none() {
                found = Some(p.clone());
            }
        }
        found
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Token checks for a service's HTTP API, with refusals counted by reason.
#[derive(Debug, Clone)]
pub struct Auth {
    tokens: Tokens,
    denied: IntCounterVec,
}

impl Auth {
    pub fn new(tokens: Tokens, metrics: &Metrics) -> Result<Self> {
        let denied = metrics.counter(
            "auth_denied_total",
            "HTTP requests refused by authentication or tenant scope, by reason.",
            &["reason"],
        )?;
        Ok(Auth { tokens, denied })
    }

    /// The caller, or 401 when the token is missing or unknown.
    pub fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(self.refuse(
                "missing_token",
                StatusCode::UNAUTHORIZED,
                "a bearer token is required",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(self.refuse(
                "malformed_token",
                StatusCode::UNAUTHORIZED,
                "the Authorization header must be 'Bearer <token>'",
            ));
        };
        self.tokens.principal(token).ok_or_else(|| {
            self.refuse(
                "unknown_token",
                StatusCode::UNAUTHORIZED,
                "the token is not valid",
            )
        })
    }

    /// The caller, if it may access `tenant`; 401 or 403 otherwise.
    pub fn for_tenant(&self, headers: &HeaderMap, tenant: &str) -> Result<Principal, ApiError> {
        let p = self.principal(headers)?;
        if p.may_access(tenant) {
            Ok(p)
        } else {
            tracing::warn!(principal = %p.name, "Refused a request for a tenant the token is not bound to.");
            Err(self.refuse(
                "wrong_tenant",
                StatusCode::FORBIDDEN,
                "the token may not access this tenant",
            ))
        }
    }

    /// The caller, if it is an operator (reads every tenant); 401 or 403 otherwise.
    pub fn operator(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let p = self.principal(headers)?;
        if p.is_operator() {
            Ok(p)
        } else {
            Err(self.refuse(
                "not_operator",
                StatusCode::FORBIDDEN,
                "an operator token is required",
            ))
        }
    }

    fn refuse(&self, reason: &'static str, status: StatusCode, message: &str) -> ApiError {
        self.denied.with_label_values(&[reason]).inc();
        let code = if status == StatusCode::FORBIDDEN {
            "forbidden"
        } else {
            "unauthorized"
        };
        ApiError::new(status, code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_digests() {
        let digest = hex::encode(sha256(b"ops-secret"));
        let t = Tokens::parse(&format!(
            "[[tokens]]\ntoken = \"acme-secret\"\ntenants = [\"acme\"]\n\n[[tokens]]\nsha256 = \"{digest}\"\ntenants = [\"*\"]\nname = \"ops\"\n"
        ))
        .unwrap();
        let acme = t.principal("acme-secret").unwrap();
        assert!(acme.may_access("acme") && !acme.may_access("globex") && !acme.is_operator());
        let ops = t.principal("ops-secret").unwrap();
        assert!(ops.is_operator() && ops.may_access("globex"));
        assert_eq!(ops.name, "ops");
        assert!(t.principal("acme-secre").is_none());
        assert!(Tokens::parse("[[tokens]]\ntenants=[\"a\"]\n").is_err());
        assert!(Tokens::parse("[[tokens]]\ntoken=\"x\"\ntenants=[]\n").is_err());
    }

    #[test]
    fn refusals_are_counted() {
        let m = Metrics::new("test").unwrap();
        let auth = Auth::new(
            Tokens::parse("[[tokens]]\ntoken=\"a\"\ntenants=[\"acme\"]\n").unwrap(),
            &m,
        )
        .unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(
            auth.for_tenant(&h, "acme").unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        h.insert(header::AUTHORIZATION, "Bearer a".parse().unwrap());
        assert!(auth.for_tenant(&h, "acme").is_ok());
        assert_eq!(
            auth.for_tenant(&h, "globex").unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(
            m.render()
                .contains("aispm_test_auth_denied_total{reason=\"wrong_tenant\"} 1")
        );
    }
}
