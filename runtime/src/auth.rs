//! Bearer tokens bound to tenants and scopes, from the tokens file:
//!
//! ```toml
//! [[tokens]]
//! token = "s3cr3t-acme"      # or sha256 = "<hex of the token's SHA-256>"
//! tenants = ["acme"]         # ["*"] for an operator token that reaches every tenant
//! scopes = ["read", "emit"]  # what it may do there: read emit approve register validate admin reports
//! name = "acme-gateway"      # optional: shown in logs and stamped on what it writes
//! ```
//!
//! A token may do exactly what its scopes name, for exactly its tenants: a `*` token gets no
//! scope it does not list. Tokens are hashed on load and compared as SHA-256 digests in constant
//! time; they are never logged. A refused request is counted by reason and, for a missing scope,
//! by the scope.

use crate::http::ApiError;
use crate::metrics::Metrics;
use crate::{Error, Result};
use aispm_schemas::TenantId;
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
    scopes: Option<Vec<String>>,
    name: Option<String>,
}

/// What a token may do for its tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read views, readiness, reports and the evidence behind them.
    Read,
    /// Emit decisions.
    Emit,
    /// Emit approval events: grants, exceptions, finding assignment and resolution, risk
    /// acceptance, break-glass review.
    Approve,
    /// Register, change and retire ordinary assets.
    Register,
    /// Emit validation results.
    Validate,
    /// Register what decides trust: trust roots and validator keys, report providers and their
    /// recipients.
    Admin,
    /// Request report packets.
    Reports,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Read,
        Scope::Emit,
        Scope::Approve,
        Scope::Register,
        Scope::Validate,
        Scope::Admin,
        Scope::Reports,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Emit => "emit",
            Scope::Approve => "approve",
            Scope::Register => "register",
            Scope::Validate => "validate",
            Scope::Admin => "admin",
            Scope::Reports => "reports",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    pub scopes: BTreeSet<Scope>,
}

impl Principal {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

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
            // A tenant no event can name would bind the token to nothing: refuse it at start.
            if let Some(bad) = t
                .tenants
                .iter()
                .find(|t| *t != "*" && !TenantId::is_valid(t))
            {
                return Err(format!(
                    "tokens[{i}].tenants: '{bad}' is not a tenant id: it {}",
                    TenantId::RULE
                ));
            }
            let access = if t.tenants.iter().any(|t| t == "*") {
                Access::All
            } else {
                Access::Tenants(t.tenants.into_iter().collect())
            };
            let Some(listed) = t.scopes else {
                return Err(format!(
                    "tokens[{i}]: scopes is required: any of {}",
                    Scope::ALL.map(Scope::as_str).join(", ")
                ));
            };
            let mut scopes = BTreeSet::new();
            for s in &listed {
                scopes.insert(Scope::parse(s).ok_or_else(|| {
                    format!(
                        "tokens[{i}].scopes: unknown scope '{s}': use any of {}",
                        Scope::ALL.map(Scope::as_str).join(", ")
                    )
                })?);
            }
            if scopes.is_empty() {
                return Err(format!("tokens[{i}]: scopes must not be empty"));
            }
            let name = t.name.unwrap_or_else(|| format!("token#{i}"));
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(format!(
                    "tokens[{i}].name: must be non-empty printable text"
                ));
            }
            if entries
                .iter()
                .any(|(_, p): &([u8; 32], Principal)| p.name == name)
            {
                return Err(format!(
                    "tokens[{i}].name: '{name}' names another token too; names identify who asserted what"
                ));
            }
            entries.push((
                digest,
                Principal {
                    name,
                    access,
                    scopes,
                },
            ));
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
            "HTTP requests refused by authentication, tenant or scope, by reason and (for \
             missing_scope) the scope that was missing.",
            &["reason", "scope"],
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

    /// The caller, if it may access `tenant` with `scope`; 401 or 403 otherwise.
    pub fn for_tenant(
        &self,
        headers: &HeaderMap,
        tenant: &str,
        scope: Scope,
    ) -> Result<Principal, ApiError> {
        let p = self.principal(headers)?;
        self.check(&p, tenant, scope)?;
        Ok(p)
    }

    /// 403 unless `p` may access `tenant` with `scope`.
    pub fn check(&self, p: &Principal, tenant: &str, scope: Scope) -> Result<(), ApiError> {
        if !p.may_access(tenant) {
            tracing::warn!(principal = %p.name, "Refused a request for a tenant the token is not bound to.");
            return Err(self.refuse(
                "wrong_tenant",
                StatusCode::FORBIDDEN,
                &format!("the token may not access tenant '{tenant}'"),
            ));
        }
        self.check_scope(p, scope)
    }

    /// 403 naming the scope unless `p` has it.
    pub fn check_scope(&self, p: &Principal, scope: Scope) -> Result<(), ApiError> {
        if p.has(scope) {
            return Ok(());
        }
        tracing::warn!(principal = %p.name, scope = %scope, "Refused a request outside the token's scopes.");
        self.denied
            .with_label_values(&["missing_scope", scope.as_str()])
            .inc();
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the token lacks the '{scope}' scope"),
        ))
    }

    /// The caller, if it is an operator (reads every tenant); 401 or 403 otherwise.
    pub fn operator(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let p = self.principal(headers)?;
        if !p.is_operator() {
            return Err(self.refuse(
                "not_operator",
                StatusCode::FORBIDDEN,
                "a token for every tenant (tenants = [\"*\"]) is required",
            ));
        }
        self.check_scope(&p, Scope::Read)?;
        Ok(p)
    }

    fn refuse(&self, reason: &'static str, status: StatusCode, message: &str) -> ApiError {
        self.denied.with_label_values(&[reason, ""]).inc();
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
            "[[tokens]]\ntoken = \"acme-secret\"\ntenants = [\"acme\"]\nscopes = [\"read\", \"emit\"]\n\n[[tokens]]\nsha256 = \"{digest}\"\ntenants = [\"*\"]\nscopes = [\"read\"]\nname = \"ops\"\n"
        ))
        .unwrap();
        let acme = t.principal("acme-secret").unwrap();
        assert!(acme.may_access("acme") && !acme.may_access("globex") && !acme.is_operator());
        assert!(acme.has(Scope::Emit) && !acme.has(Scope::Approve));
        let ops = t.principal("ops-secret").unwrap();
        assert!(ops.is_operator() && ops.may_access("globex"));
        assert!(
            ops.has(Scope::Read) && !ops.has(Scope::Emit),
            "a * token gets only what it lists"
        );
        assert_eq!(ops.name, "ops");
        assert!(t.principal("acme-secre").is_none());
        assert!(Tokens::parse("[[tokens]]\ntenants=[\"a\"]\nscopes=[\"read\"]\n").is_err());
        assert!(Tokens::parse("[[tokens]]\ntoken=\"x\"\ntenants=[]\nscopes=[\"read\"]\n").is_err());
        let bad =
            Tokens::parse("[[tokens]]\ntoken=\"x\"\ntenants=[\"Acme Corp\"]\nscopes=[\"read\"]\n")
                .unwrap_err();
        assert!(
            bad.contains("tokens[0].tenants: 'Acme Corp' is not a tenant id"),
            "{bad}"
        );
        let missing = Tokens::parse("[[tokens]]\ntoken=\"x\"\ntenants=[\"a\"]\n").unwrap_err();
        assert!(missing.contains("scopes is required"), "{missing}");
        let unknown =
            Tokens::parse("[[tokens]]\ntoken=\"x\"\ntenants=[\"a\"]\nscopes=[\"write\"]\n")
                .unwrap_err();
        assert!(unknown.contains("unknown scope 'write'"), "{unknown}");
        let twice = Tokens::parse(
            "[[tokens]]\ntoken=\"x\"\ntenants=[\"a\"]\nscopes=[\"read\"]\nname=\"n\"\n[[tokens]]\ntoken=\"y\"\ntenants=[\"a\"]\nscopes=[\"read\"]\nname=\"n\"\n",
        )
        .unwrap_err();
        assert!(twice.contains("names another token"), "{twice}");
    }

    #[test]
    fn refusals_are_counted_by_reason_and_scope() {
        let m = Metrics::new("test").unwrap();
        let auth = Auth::new(
            Tokens::parse("[[tokens]]\ntoken=\"a\"\ntenants=[\"acme\"]\nscopes=[\"read\"]\n")
                .unwrap(),
            &m,
        )
        .unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(
            auth.for_tenant(&h, "acme", Scope::Read).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        h.insert(header::AUTHORIZATION, "Bearer a".parse().unwrap());
        assert!(auth.for_tenant(&h, "acme", Scope::Read).is_ok());
        assert_eq!(
            auth.for_tenant(&h, "globex", Scope::Read)
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
        let e = auth.for_tenant(&h, "acme", Scope::Approve).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("'approve'"), "{}", e.message);
        let text = m.render();
        assert!(
            text.contains("aispm_test_auth_denied_total{reason=\"wrong_tenant\",scope=\"\"} 1")
        );
        assert!(text.contains(
            "aispm_test_auth_denied_total{reason=\"missing_scope\",scope=\"approve\"} 1"
        ));
    }

    /// The example file shipped in `compose/` parses, and each role holds what its comment says.
    #[test]
    fn the_compose_example_file_parses_and_its_roles_hold() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/tokens.example.toml");
        let t = Tokens::load(&path).unwrap();
        let gateway = t.principal("change-me-acme-gateway").unwrap();
        assert!(gateway.has(Scope::Emit) && !gateway.has(Scope::Approve));
        assert!(gateway.may_access("acme") && !gateway.may_access("globex"));
        let registry = t.principal("change-me-acme-registry").unwrap();
        assert!(registry.has(Scope::Validate) && !registry.has(Scope::Admin));
        let globex = t.principal("change-me-globex").unwrap();
        assert!(globex.has(Scope::Read) && !globex.has(Scope::Emit));
        let operator = t.principal("change-me-operator").unwrap();
        assert!(operator.is_operator() && operator.has(Scope::Read));
        assert!(
            !operator.has(Scope::Emit),
            "the operator token cannot write"
        );
    }
}
