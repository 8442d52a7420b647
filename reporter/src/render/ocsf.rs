//! The packet's `findings.ocsf.json`: every finding the document carries, as OCSF records, by
//! the one mapping the OCSF topic also uses ([`aispm_schemas::ocsf`]): a runtime finding is a
//! Detection Finding (2004), a control-state finding a Compliance Finding (2003).

use crate::report::Document;
use aispm_schemas::FindingRow;
use serde_json::Value;

/// Every finding the document carries (open, closed in the period, blocking), deduplicated.
pub fn findings(doc: &Document, all: &[FindingRow]) -> Value {
    Value::Array(
        all.iter()
            .map(|f| aispm_schemas::ocsf::finding(&doc.tenant_id, f))
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aispm_schemas::{FindingStatus, Timestamp};

    #[test]
    fn the_packet_uses_the_topic_mapping() {
        let doc = crate::render::tests::doc();
        let mut f = crate::render::tests::finding();
        f.status = FindingStatus::Closed;
        f.closed_at = Some(Timestamp(9));
        let v = findings(&doc, std::slice::from_ref(&f));
        assert_eq!(v[0], aispm_schemas::ocsf::finding(&doc.tenant_id, &f));
        assert_eq!(v[0]["status"], "Resolved");
        assert_eq!(
            v[0]["metadata"]["version"],
            aispm_schemas::ocsf::OCSF_VERSION
        );
    }
}
