//! Semantic validation beyond the schema's types. Deterministic (no clock), so an event valid at
//! ingest is valid at every replay.

use crate::error::FieldError;
use crate::events::*;
use crate::keys::TenantId;
use crate::signature;
use crate::time::Timestamp;

/// Longest id (event, tenant, agent, asset, …) accepted.
pub const MAX_ID_LEN: usize = 256;
/// Longest free-text field accepted.
pub const MAX_TEXT_LEN: usize = 8 * 1024;
/// Most items in one array field.
pub const MAX_ITEMS: usize = 256;
/// Earliest `occurred_at` accepted: 2000-01-01T00:00:00Z.
pub const MIN_TIMESTAMP: Timestamp = Timestamp(946_684_800_000);
/// Latest `occurred_at` accepted: 2100-01-01T00:00:00Z.
pub const MAX_TIMESTAMP: Timestamp = Timestamp(4_102_444_800_000);

/// Checks an event's content; an empty list means valid.
pub trait Validate {
    fn validate(&self) -> Vec<FieldError>;
}

#[derive(Default)]
struct Check(Vec<FieldError>);

impl Check {
    fn fail(&mut self, field: &str, reason: impl Into<String>) {
        self.0.push(FieldError::new(field, reason));
    }

    fn id(&mut self, field: &str, v: &str) {
        if v.is_empty() {
            self.fail(field, "must not be empty");
        } else if v.len() > MAX_ID_LEN {
            self.fail(field, format!("longer than {MAX_ID_LEN} bytes"));
        } else if v.chars().any(char::is_control) {
            self.fail(field, "contains control characters");
        }
    }

    fn opt_id(&mut self, field: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.id(field, v);
        }
    }

    fn required(&mut self, field: &str, v: &Option<String>, why: &str) {
        match v {
            None => self.fail(field, format!("is required {why}")),
            Some(v) => self.id(field, v),
        }
    }

    fn text(&mut self, field: &str, v: &str) {
        if v.len() > MAX_TEXT_LEN {
            self.fail(field, format!("longer than {MAX_TEXT_LEN} bytes"));
        }
    }

    fn tenant(&mut self, v: &str) {
        if !TenantId::is_valid(v) {
            self.fail("tenant_id", TenantId::RULE);
        }
    }

    fn time(&mut self, field: &str, t: Timestamp) {
        if t < MIN_TIMESTAMP || t > MAX_TIMESTAMP {
            self.fail(field, "must be between 2000-01-01 and 2100-01-01");
        }
    }

    fn items(&mut self, field: &str, v: &[String]) {
        if v.len() > MAX_ITEMS {
            // One error for the array: an error per item of a huge array would cost far more
            // memory than the request's bytes.
            self.fail(field, format!("more than {MAX_ITEMS} items"));
            return;
        }
        for (i, item) in v.iter().enumerate() {
            self.id(&format!("{field}[{i}]"), item);
        }
    }

    fn sha256(&mut self, field: &str, v: &str) {
        if v.len() != 64 || !v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            self.fail(field, "must be 64 lower-case hex characters");
        }
    }

    fn evidence(&mut self, field: &str, e: &Option<Evidence>) {
        let Some(e) = e else { return };
        self.id(&format!("{field}.evidence_id"), &e.evidence_id);
        self.sha256(&format!("{field}.sha256"), &e.sha256);
        self.text(&format!("{field}.uri"), &e.uri);
        if let Some(sig) = &e.signature {
            self.text(&format!("{field}.signature"), sig);
            if e.key_id.is_none() {
                self.fail(&format!("{field}.key_id"), "is required with a signature");
            }
        }
        self.opt_id(&format!("{field}.key_id"), &e.key_id);
    }

    fn common(&mut self, event_id: &str, tenant_id: &str, occurred_at: Timestamp, source: &str) {
        self.id("event_id", event_id);
        self.tenant(tenant_id);
        self.time("occurred_at", occurred_at);
        self.id("source", source);
    }
}

impl Validate for DecisionEvent {
    fn validate(&self) -> Vec<FieldError> {
        let mut c = Check::default();
        c.common(
            &self.event_id,
            &self.tenant_id,
            self.occurred_at,
            &self.source,
        );
        c.id("agent_id", &self.agent_id);
        c.id("actor", &self.actor);
        if self.target.is_empty() {
            c.fail("target", "must not be empty");
        }
        c.text("target", &self.target);
        for (f, v) in [
            ("repo", &self.repo),
            ("workflow", &self.workflow),
            ("control_id", &self.control_id),
            ("policy_id", &self.policy_id),
            ("approval_id", &self.approval_id),
            ("api_key_id", &self.api_key_id),
        ] {
            c.opt_id(f, v);
        }
        match self.action_kind {
            ActionKind::Mcp => {
                c.required("mcp_server", &self.mcp_server, "for mcp actions");
                c.required("mcp_tool", &self.mcp_tool, "for mcp actions");
            }
            ActionKind::Model => {
                c.required("model_endpoint", &self.model_endpoint, "for model actions");
            }
            _ => {
                c.opt_id("mcp_server", &self.mcp_server);
                c.opt_id("mcp_tool", &self.mcp_tool);
                c.opt_id("model_endpoint", &self.model_endpoint);
            }
        }
        c.items("data_classes", &self.data_classes);
        c.items("scopes_used", &self.scopes_used);
        if !self.scopes_used.is_empty() && self.api_key_id.is_none() {
            c.fail(
                "api_key_id",
                "is required with scopes_used (the key whose scopes they are)",
            );
        }
        c.evidence("evidence", &self.evidence);
        c.0
    }
}

impl Validate for ApprovalEvent {
    fn validate(&self) -> Vec<FieldError> {
        use ApprovalKind::*;
        let mut c = Check::default();
        c.common(
            &self.event_id,
            &self.tenant_id,
            self.occurred_at,
            &self.source,
        );
        c.id("actor", &self.actor);
        let why = format!("for {}", self.kind);
        match self.kind {
            ApprovalGranted | ApprovalDenied | BreakGlassInvoked => {
                c.required("decision_id", &self.decision_id, &why)
            }
            ExceptionGranted => {
                if self.finding_id.is_none() && self.control_id.is_none() {
                    c.fail("finding_id", format!("or control_id is required {why}"));
                }
                c.required("owner", &self.owner, &why);
                if self.expires_at.is_none() {
                    c.fail("expires_at", format!("is required {why}"));
                }
            }
            ExceptionRevoked => c.required("exception_id", &self.exception_id, &why),
            BreakGlassReviewed => {
                if self.exception_id.is_none() && self.decision_id.is_none() {
                    c.fail("exception_id", format!("or decision_id is required {why}"));
                }
            }
            FindingAssigned => {
                c.required("finding_id", &self.finding_id, &why);
                c.required("owner", &self.owner, &why);
            }
            FindingResolved => c.required("finding_id", &self.finding_id, &why),
            RiskAccepted => {
                c.required("finding_id", &self.finding_id, &why);
                c.required("owner", &self.owner, &why);
                if self.expires_at.is_none() {
                    c.fail("expires_at", format!("is required {why}"));
                }
            }
        }
        for (f, v) in [
            ("decision_id", &self.decision_id),
            ("finding_id", &self.finding_id),
            ("control_id", &self.control_id),
            ("exception_id", &self.exception_id),
            ("owner", &self.owner),
        ] {
            c.opt_id(f, v);
        }
        if let Some(r) = &self.reason {
            c.text("reason", r);
        }
        for (f, t) in [("due_at", self.due_at), ("expires_at", self.expires_at)] {
            if let Some(t) = t {
                c.time(f, t);
            }
        }
        c.0
    }
}

impl Validate for RegistryEvent {
    fn validate(&self) -> Vec<FieldError> {
        let mut c = Check::default();
        c.common(
            &self.event_id,
            &self.tenant_id,
            self.occurred_at,
            &self.source,
        );
        match (&self.asset, &self.validation) {
            (Some(_), Some(_)) => c.fail("asset", "and validation are exclusive: set one"),
            (None, None) => c.fail("asset", "or validation is required"),
            _ => {}
        }
        if let Some(a) = &self.asset {
            c.id("asset.asset_id", &a.asset_id);
            c.opt_id("asset.owner", &a.owner);
            c.items("asset.scopes", &a.scopes);
            c.items("asset.approved_data_classes", &a.approved_data_classes);
            c.items("asset.recipients", &a.recipients);
            c.items("asset.framework_mappings", &a.framework_mappings);
            if a.attributes.len() > MAX_ITEMS {
                c.fail("asset.attributes", format!("more than {MAX_ITEMS} entries"));
            } else {
                for (k, v) in &a.attributes {
                    c.id(&format!("asset.attributes.{k}"), k);
                    c.text(&format!("asset.attributes.{k}"), v);
                }
            }
            if a.asset_kind == AssetKind::TrustRoot
                && a.status == AssetStatus::Registered
                && a.public_key.is_none()
            {
                c.fail("asset.public_key", "is required for a trust_root");
            }
            // Any asset registering a key (a trust root, a validator) registers a usable one: a
            // weak key would let one signature verify for every message.
            match &a.public_key {
                Some(k) if a.status == AssetStatus::Registered => {
                    if let Err(e) = signature::public_key(k) {
                        c.0.push(FieldError::with_code(
                            e.reason(),
                            "asset.public_key",
                            e.to_string(),
                        ));
                    }
                }
                Some(k) => c.text("asset.public_key", k),
                None => {}
            }
        }
        if let Some(v) = &self.validation {
            c.opt_id("validation.subject", &v.subject);
            if let Some(d) = &v.detail {
                c.text("validation.detail", d);
            }
            c.evidence("validation.evidence", &v.evidence);
            if v.environment.is_none() {
                c.fail(
                    "validation.environment",
                    "is required: the stage (trial, pilot or production) whose deployment was validated",
                );
            }
        }
        c.0
    }
}

impl Validate for ReportDeliveryEvent {
    fn validate(&self) -> Vec<FieldError> {
        let mut c = Check::default();
        c.common(
            &self.event_id,
            &self.tenant_id,
            self.occurred_at,
            &self.source,
        );
        c.id("report_id", &self.report_id);
        c.sha256("packet_sha256", &self.packet_sha256);
        c.items("recipients", &self.recipients);
        if self.attempt < 1 {
            c.fail("attempt", "must be at least 1");
        }
        c.evidence("evidence", &self.evidence);
        c.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust_root(status: AssetStatus, key: Option<&str>) -> RegistryEvent {
        RegistryEvent {
            event_id: "r1".into(),
            tenant_id: "acme".into(),
            occurred_at: Timestamp(1_763_719_200_000),
            source: "registry".into(),
            asset: Some(Asset {
                status,
                public_key: key.map(Into::into),
                ..Asset::registered(AssetKind::TrustRoot, "root-1")
            }),
            validation: None,
        }
    }

    /// The public key of seed 07×32.
    const GOOD: &str = "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";
    /// The identity point, 01 00 … 00: of small order.
    const WEAK: &str = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn registered_keys_must_be_usable_and_name_their_reason() {
        assert_eq!(
            trust_root(AssetStatus::Registered, Some(GOOD)).validate(),
            []
        );

        let errors = trust_root(AssetStatus::Registered, Some(WEAK)).validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "asset.public_key");
        assert!(errors[0].reason.contains("small order"), "{errors:?}");
        assert_eq!(errors[0].code, "weak_key");
        assert_eq!(FieldError::code_of(&errors), "weak_key");

        for bad in ["a2V5", "not base64!", &format!("{GOOD}\n")] {
            let errors = trust_root(AssetStatus::Registered, Some(bad)).validate();
            assert_eq!(FieldError::code_of(&errors), "invalid_key", "{bad:?}");
            assert_eq!(errors[0].field, "asset.public_key");
        }

        // Any asset kind that carries a key is held to the same rule.
        let mut validator = trust_root(AssetStatus::Registered, Some(WEAK));
        validator.asset.as_mut().unwrap().asset_kind = AssetKind::Connector;
        assert_eq!(FieldError::code_of(&validator.validate()), "weak_key");

        // A trust root needs a key; retiring one never depends on the key it had.
        let errors = trust_root(AssetStatus::Registered, None).validate();
        assert_eq!(FieldError::code_of(&errors), "invalid_field");
        assert_eq!(trust_root(AssetStatus::Retired, Some(WEAK)).validate(), []);
    }

    #[test]
    fn ingest_refuses_a_weak_key_naming_the_field_and_reason() {
        // The parse ingest runs on every HTTP item (a 400 lists these errors).
        let item = serde_json::json!({
            "type": "registry", "event_id": "r1", "tenant_id": "acme",
            "occurred_at": "2026-11-21T10:00:00Z", "source": "security-team",
            "asset": {"asset_kind": "trust_root", "asset_id": "root-1", "status": "registered",
                      "public_key": WEAK}
        });
        let errors = crate::InputEvent::from_json(item).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "asset.public_key");
        assert!(errors[0].reason.contains("weak"), "{errors:?}");
    }

    #[test]
    fn scopes_without_their_key_are_refused_naming_the_field() {
        // A gateway claiming scopes with no key could not be judged over-privileged.
        let decision = |key: Option<&str>| {
            serde_json::json!({
                "type": "decision", "event_id": "d1", "tenant_id": "acme",
                "occurred_at": "2026-11-21T10:00:00Z", "source": "gw", "agent_id": "a1",
                "actor": "alice", "environment": "production", "action_kind": "git",
                "target": "acme/api", "mode": "enforced", "verdict": "allow", "risk": "low",
                "api_key_id": key, "scopes_used": ["repo:write"]
            })
        };
        let errors = crate::InputEvent::from_json(decision(None)).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "api_key_id");
        assert!(errors[0].reason.contains("scopes_used"), "{errors:?}");
        assert!(crate::InputEvent::from_json(decision(Some("k1"))).is_ok());
    }

    #[test]
    fn the_dead_letter_reason_is_the_first_named_one() {
        let plain = FieldError::new("tenant_id", "bad");
        let weak = FieldError::with_code("weak_key", "asset.public_key", "weak");
        assert_eq!(FieldError::code_of(&[]), "invalid_field");
        assert_eq!(
            FieldError::code_of(std::slice::from_ref(&plain)),
            "invalid_field"
        );
        assert_eq!(FieldError::code_of(&[plain, weak]), "weak_key");
    }
}
