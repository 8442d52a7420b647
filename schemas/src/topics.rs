//! Topic names and dead-letter headers.

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "aispm.";

/// Names of every topic in the contract, under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub decisions: String,
    pub approvals: String,
    pub registry: String,
    pub report_deliveries: String,
    pub views: String,
    /// Each finding as OCSF JSON (`crate::ocsf`), keyed `{tenant}/{finding_id}`.
    pub ocsf: String,
    pub blockers: String,
    pub readiness: String,
    pub dlq: String,
}

impl Topics {
    /// `{prefix}decisions.v1` and so on; the default prefix gives `aispm.decisions.v1`.
    pub fn with_prefix(prefix: &str) -> Self {
        let t = |name: &str| format!("{prefix}{name}.v1");
        Topics {
            decisions: t("decisions"),
            approvals: t("approvals"),
            registry: t("registry"),
            report_deliveries: t("report-deliveries"),
            views: t("views"),
            ocsf: t("ocsf"),
            blockers: t("blockers"),
            readiness: t("readiness"),
            dlq: t("dlq"),
        }
    }

    /// The input topics the projector folds (the event store).
    pub fn inputs(&self) -> [&str; 4] {
        [
            &self.decisions,
            &self.approvals,
            &self.registry,
            &self.report_deliveries,
        ]
    }

    /// Whether a topic is compacted (state) rather than retained forever (events).
    pub fn is_compacted(&self, topic: &str) -> bool {
        topic == self.views
            || topic == self.ocsf
            || topic == self.blockers
            || topic == self.readiness
    }
}

impl Default for Topics {
    fn default() -> Self {
        Topics::with_prefix(DEFAULT_PREFIX)
    }
}

/// Header names on input records.
pub mod record_headers {
    /// The authenticated principal that produced the record (ingest: the token's name; the
    /// reporter: `aispm-reporter`). Views keep it as `asserted_by`. A producer writing straight
    /// to Kafka may set it too: what it may write is then decided by the broker's ACLs.
    pub const PRINCIPAL: &str = "aispm.principal";
}

/// Header names on dead-letter records.
pub mod dlq_headers {
    /// Topic the record came from.
    pub const SOURCE_TOPIC: &str = "aispm.dlq.source.topic";
    /// Partition it came from (decimal).
    pub const SOURCE_PARTITION: &str = "aispm.dlq.source.partition";
    /// Offset it had (decimal).
    pub const SOURCE_OFFSET: &str = "aispm.dlq.source.offset";
    /// Which stage rejected it: `decode`, `validate` or `apply`.
    pub const STAGE: &str = "aispm.dlq.stage";
    /// Short stable reason label (as in metrics).
    pub const REASON: &str = "aispm.dlq.reason";
    /// The full error message.
    pub const ERROR: &str = "aispm.dlq.error";
    /// The service that dead-lettered it.
    pub const SERVICE: &str = "aispm.dlq.service";
    /// How the rejected record travels: `inline` (the dead letter's key and value are the
    /// record's) or `by_reference` (too large to carry: fetch it from the source coordinates;
    /// see `crate::limits`).
    pub const RECORD: &str = "aispm.dlq.record";
    /// By reference: the record's value size in bytes (decimal).
    pub const VALUE_BYTES: &str = "aispm.dlq.record.value.bytes";
    /// By reference: the SHA-256 of the record's value (hex).
    pub const VALUE_SHA256: &str = "aispm.dlq.record.value.sha256";
    /// By reference: the record's key size in bytes (decimal).
    pub const KEY_BYTES: &str = "aispm.dlq.record.key.bytes";
    /// By reference: the SHA-256 of the record's key (hex).
    pub const KEY_SHA256: &str = "aispm.dlq.record.key.sha256";
}
