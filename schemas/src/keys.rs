//! Tenant ids and record keys: the one rule for what a tenant id is, and every topic's record key
//! built and parsed by the same type, so a producer and its consumers cannot disagree on the
//! grammar.
//!
//! | topic | key | type |
//! |---|---|---|
//! | `aispm.views.v1` | `{tenant}/{view}/{row key}` | [`ViewKey`] |
//! | `aispm.blockers.v1` | `{tenant}/{stage}/{blocker_id}` | [`BlockerKey`] |
//! | `aispm.readiness.v1` | `{tenant}/{stage}` | [`ReadinessKey`] |
//! | `aispm.ocsf.v1` | `{tenant}/{finding_id}` | [`FindingKey`] |
//!
//! A tenant id never contains `/` and neither does a view name or a stage, so the first
//! separators split a key unambiguously; the last part (row key, blocker id, finding id) may
//! contain `/` and is the rest of the key. Parsing checks the tenant id by [`TenantId`]'s rule:
//! a key that names no valid tenant is malformed, as its producer could never have written it.

use crate::readiness::{Blocker, Readiness, Stage};
use crate::views::{ViewChange, ViewName};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A tenant id: 1 to [`TenantId::MAX_LEN`] letters, digits, `.`, `_` or `-`, and not `.` or
/// `..` (the reporter names directories after tenants). The one rule every service applies:
/// ingest and the projector to events, the services' APIs to paths, the consumers to keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// Longest tenant id accepted, in bytes.
    pub const MAX_LEN: usize = 64;
    /// What a tenant id may be, as an error names it.
    pub const RULE: &'static str =
        "must be 1 to 64 characters of letters, digits, '.', '_' or '-', and not '.' or '..'";

    /// Whether `v` is a tenant id.
    pub fn is_valid(v: &str) -> bool {
        !v.is_empty()
            && v.len() <= Self::MAX_LEN
            && v != "."
            && v != ".."
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    /// The tenant id `v`, or why it is not one.
    pub fn parse(v: &str) -> Result<Self, InvalidTenant> {
        if Self::is_valid(v) {
            Ok(TenantId(v.to_owned()))
        } else {
            Err(InvalidTenant(v.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for TenantId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TenantId {
    type Err = InvalidTenant;
    fn from_str(s: &str) -> Result<Self, InvalidTenant> {
        Self::parse(s)
    }
}

/// Deserializing checks the rule, so a path or body field typed `TenantId` is valid once parsed.
impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A string that is not a tenant id (its first 80 characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant_id '{0}' {rule}", rule = TenantId::RULE)]
pub struct InvalidTenant(pub String);

/// A record key that does not follow its topic's grammar: a poison-pill condition (the same key
/// fails the same way on every read), so consumers dead-letter the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record key '{key}' is not {grammar}: {reason}")]
pub struct KeyError {
    pub key: String,
    pub grammar: &'static str,
    pub reason: String,
}

/// Splits `{tenant}/{rest}`, checking the tenant; `rest` must not be empty.
fn split2<'a>(key: &'a str, grammar: &'static str) -> Result<(&'a str, &'a str), KeyError> {
    let (tenant, rest) = key
        .split_once('/')
        .ok_or_else(|| bad(key, grammar, "too few parts".into()))?;
    if !TenantId::is_valid(tenant) {
        return Err(bad(key, grammar, format!("tenant_id {}", TenantId::RULE)));
    }
    if rest.is_empty() {
        return Err(bad(key, grammar, "the last part is empty".into()));
    }
    Ok((tenant, rest))
}

/// Splits `{tenant}/{symbol}/{rest}` (`rest` may contain `/`), checking the tenant and parsing
/// the symbol (a view name or a stage).
fn split3<'a, S: std::str::FromStr<Err = String>>(
    key: &'a str,
    grammar: &'static str,
) -> Result<(&'a str, S, &'a str), KeyError> {
    let (tenant, rest) = split2(key, grammar)?;
    let (symbol, rest) = rest
        .split_once('/')
        .ok_or_else(|| bad(key, grammar, "too few parts".into()))?;
    if rest.is_empty() {
        return Err(bad(key, grammar, "the last part is empty".into()));
    }
    let symbol = symbol.parse().map_err(|e| bad(key, grammar, e))?;
    Ok((tenant, symbol, rest))
}

fn bad(key: &str, grammar: &'static str, reason: String) -> KeyError {
    KeyError {
        key: key.chars().take(200).collect(),
        grammar,
        reason,
    }
}

/// The key of a view change: `{tenant}/{view}/{row key}`; compaction keeps each row's latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewKey<'a> {
    pub tenant: &'a str,
    pub view: ViewName,
    pub row: &'a str,
}

impl<'a> ViewKey<'a> {
    pub const GRAMMAR: &'static str = "{tenant}/{view}/{row key}";

    pub fn parse(key: &'a str) -> Result<Self, KeyError> {
        let (tenant, view, row) = split3(key, Self::GRAMMAR)?;
        Ok(ViewKey { tenant, view, row })
    }
}

impl fmt::Display for ViewKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.view, self.row)
    }
}

/// The key of a blocker: `{tenant}/{stage}/{blocker_id}`; its tombstone resolves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockerKey<'a> {
    pub tenant: &'a str,
    pub stage: Stage,
    pub blocker_id: &'a str,
}

impl<'a> BlockerKey<'a> {
    pub const GRAMMAR: &'static str = "{tenant}/{stage}/{blocker_id}";

    pub fn parse(key: &'a str) -> Result<Self, KeyError> {
        let (tenant, stage, blocker_id) = split3(key, Self::GRAMMAR)?;
        Ok(BlockerKey {
            tenant,
            stage,
            blocker_id,
        })
    }
}

impl fmt::Display for BlockerKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.stage, self.blocker_id)
    }
}

/// The key of a readiness verdict: `{tenant}/{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadinessKey<'a> {
    pub tenant: &'a str,
    pub stage: Stage,
}

impl<'a> ReadinessKey<'a> {
    pub const GRAMMAR: &'static str = "{tenant}/{stage}";

    pub fn parse(key: &'a str) -> Result<Self, KeyError> {
        let (tenant, stage) = split2(key, Self::GRAMMAR)?;
        let stage = stage
            .parse()
            .map_err(|e: String| bad(key, Self::GRAMMAR, e))?;
        Ok(ReadinessKey { tenant, stage })
    }
}

impl fmt::Display for ReadinessKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.stage)
    }
}

/// The key of a finding's OCSF record: `{tenant}/{finding_id}` (the finding id is
/// `{rule}:{resource}` and may contain `/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FindingKey<'a> {
    pub tenant: &'a str,
    pub finding_id: &'a str,
}

impl<'a> FindingKey<'a> {
    pub const GRAMMAR: &'static str = "{tenant}/{finding_id}";

    pub fn parse(key: &'a str) -> Result<Self, KeyError> {
        let (tenant, finding_id) = split2(key, Self::GRAMMAR)?;
        Ok(FindingKey { tenant, finding_id })
    }
}

impl fmt::Display for FindingKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.finding_id)
    }
}

// The records' own keys live here, beside their grammar, so that `readiness` and `views` do
// not import `keys` back (a module cycle).
impl ViewChange {
    /// The record key on the views topic: `{tenant}/{view}/{key}` (compaction keeps the latest
    /// change per row).
    pub fn record_key(&self) -> String {
        ViewKey {
            tenant: &self.tenant_id,
            view: self.view,
            row: &self.key,
        }
        .to_string()
    }
}

impl Blocker {
    /// The record key on the blockers topic: `{tenant}/{stage}/{blocker_id}`.
    pub fn key(&self) -> String {
        BlockerKey {
            tenant: &self.tenant_id,
            stage: self.stage,
            blocker_id: &self.blocker_id,
        }
        .to_string()
    }
}

impl Readiness {
    /// The record key on the readiness topic: `{tenant}/{stage}`.
    pub fn key(&self) -> String {
        ReadinessKey {
            tenant: &self.tenant_id,
            stage: self.stage,
        }
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_follow_one_rule() {
        for ok in ["acme", "acme-eu.1_x", "A", &"a".repeat(64)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", "a\0", &"a".repeat(65)] {
            let e = TenantId::parse(bad).unwrap_err();
            assert!(e.to_string().contains(TenantId::RULE), "{e}");
        }
        // Deserializing applies the rule.
        assert!(serde_json::from_str::<TenantId>("\"acme\"").is_ok());
        let e = serde_json::from_str::<TenantId>("\"../etc\"").unwrap_err();
        assert!(e.to_string().contains("must be 1 to 64"), "{e}");
    }

    #[test]
    fn every_key_parses_back_to_what_built_it() {
        let v = ViewKey {
            tenant: "acme",
            view: ViewName::Findings,
            row: "AISPM-OWN-001:agent/7",
        };
        let s = v.to_string();
        assert_eq!(s, "acme/findings/AISPM-OWN-001:agent/7");
        assert_eq!(ViewKey::parse(&s), Ok(v));

        let b = BlockerKey {
            tenant: "acme",
            stage: Stage::Production,
            blocker_id: "finding_overdue/R1:jira/create",
        };
        let s = b.to_string();
        assert_eq!(BlockerKey::parse(&s), Ok(b));

        let r = ReadinessKey {
            tenant: "acme",
            stage: Stage::Pilot,
        };
        assert_eq!(ReadinessKey::parse(&r.to_string()), Ok(r));

        let f = FindingKey {
            tenant: "acme",
            finding_id: "AISPM-DATA-001:a/1",
        };
        assert_eq!(FindingKey::parse(&f.to_string()), Ok(f));
    }

    #[test]
    fn malformed_keys_name_the_grammar_and_the_reason() {
        let e = ViewKey::parse("acme/findings").unwrap_err();
        assert!(e.to_string().contains("{tenant}/{view}/{row key}"), "{e}");
        let e = ViewKey::parse("acme/nosuchview/x").unwrap_err();
        assert!(e.to_string().contains("unknown ViewName"), "{e}");
        let e = ViewKey::parse("../findings/x").unwrap_err();
        assert!(e.reason.contains("tenant_id"), "{e}");
        assert!(ViewKey::parse("acme/findings/").is_err());
        assert!(BlockerKey::parse("acme/nostage/x").is_err());
        assert!(BlockerKey::parse("acme").is_err());
        assert!(ReadinessKey::parse("acme/production/extra").is_err());
        assert!(ReadinessKey::parse("acme").is_err());
        assert!(FindingKey::parse("acme/").is_err());
        assert!(FindingKey::parse("a b/x").is_err());
    }
}
