//! What a webhook tells: one [`Notification`] per change worth a message, and its body in each
//! [`Format`].

use aispm_schemas::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The body a subscription receives (its `format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Format {
    /// Standard Webhooks: `{"type", "timestamp", "data"}`.
    Standard,
    /// A Slack incoming webhook: `{"text", "blocks"}`.
    Slack,
}

/// The events a subscription can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// A blocker appeared on the blockers topic for a tenant and stage.
    #[serde(rename = "blocker.opened")]
    BlockerOpened,
    /// A blocker's tombstone: it no longer holds.
    #[serde(rename = "blocker.resolved")]
    BlockerResolved,
    /// A stage's verdict flipped (ready or not), or a stage got its first verdict.
    #[serde(rename = "readiness.changed")]
    ReadinessChanged,
    /// An open finding passed its due date without an exception covering it.
    #[serde(rename = "finding.sla_breached")]
    FindingSlaBreached,
    /// A report packet reached its recipients (or its export directory).
    #[serde(rename = "report.delivered")]
    ReportDelivered,
}

impl Kind {
    pub(crate) const ALL: [Kind; 5] = [
        Kind::BlockerOpened,
        Kind::BlockerResolved,
        Kind::ReadinessChanged,
        Kind::FindingSlaBreached,
        Kind::ReportDelivered,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::BlockerOpened => "blocker.opened",
            Kind::BlockerResolved => "blocker.resolved",
            Kind::ReadinessChanged => "readiness.changed",
            Kind::FindingSlaBreached => "finding.sla_breached",
            Kind::ReportDelivered => "report.delivered",
        }
    }

    pub(crate) fn names() -> String {
        Kind::ALL.map(Kind::as_str).join(", ")
    }
}

impl std::str::FromStr for Kind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or(())
    }
}

/// One change to tell subscribers about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Notification {
    /// Stable for the change: derived from what caused it (a record's topic, partition and
    /// offset; a finding and its due date; a report attempt), so a replay or a restart that
    /// sees the same change again yields the same id, and the same `webhook-id`.
    pub id: String,
    pub kind: Kind,
    pub tenant_id: String,
    /// When the change happened (event time).
    pub at: Timestamp,
    /// A one-line summary for people (the Slack text, the log line).
    pub summary: String,
    pub data: Value,
}

impl Notification {
    /// A notification whose id derives from `origin` (any string unique to the change).
    pub(crate) fn new(
        kind: Kind,
        tenant_id: &str,
        at: Timestamp,
        origin: &str,
        summary: String,
        data: Value,
    ) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{}\0{tenant_id}\0{origin}", kind.as_str()));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let id = uuid::Builder::from_custom_bytes(bytes)
            .into_uuid()
            .simple()
            .to_string();
        Notification {
            id: format!("msg_{id}"),
            kind,
            tenant_id: tenant_id.to_owned(),
            at,
            summary,
            data,
        }
    }

    /// The request body for `format`.
    pub(crate) fn body(&self, format: Format) -> Vec<u8> {
        let v = match format {
            Format::Standard => json!({
                "type": self.kind.as_str(),
                "timestamp": self.at.to_rfc3339(),
                "data": self.data,
            }),
            Format::Slack => json!({
                "text": format!("[aispm] {}", self.summary),
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}* · tenant `{}`\n{}", self.kind.as_str(), self.tenant_id, self.summary)}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("{} · {}", self.at.to_rfc3339(), self.id)}]}
                ],
            }),
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_bodies_carry_the_type() {
        let n = |origin: &str| {
            Notification::new(
                Kind::BlockerOpened,
                "acme",
                Timestamp(0),
                origin,
                "s".into(),
                json!({"tenant_id": "acme"}),
            )
        };
        assert_eq!(n("blockers/0/7").id, n("blockers/0/7").id);
        assert_ne!(n("blockers/0/7").id, n("blockers/0/8").id);
        assert!(n("x").id.starts_with("msg_"));
        let body: Value = serde_json::from_slice(&n("x").body(Format::Standard)).unwrap();
        assert_eq!(body["type"], "blocker.opened");
        assert_eq!(body["data"]["tenant_id"], "acme");
        let slack: Value = serde_json::from_slice(&n("x").body(Format::Slack)).unwrap();
        assert_eq!(slack["text"], "[aispm] s");
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
