//! The finding rule catalog. Ids are stable: a finding's id is `{rule id}:{subject}`, so events
//! (assignments, resolutions, exceptions) can name a finding before or after it is raised. A
//! finding is one row per (rule, resource): the subject names the resource (an agent, a tool,
//! an endpoint, a key, an evidence item, or an agent and the control it acted under,
//! `aispm_schemas::finding_subject`), and every event that raised it is an occurrence.
//!
//! Framework mappings: OWASP Top 10 for LLM Applications (2025), MITRE ATLAS techniques, and the
//! NIST AI RMF function (GOVERN, MAP, MEASURE, MANAGE).

use aispm_schemas::Risk;

/// One rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Risk,
    pub frameworks: &'static [&'static str],
    /// Raised by events one by one (each an occurrence, indexed for the API), rather than
    /// derived from the state of an asset, control or exception.
    pub raised_by_events: bool,
}

macro_rules! raised_by_events {
    () => {
        false
    };
    (events) => {
        true
    };
}

macro_rules! rules {
    ($($name:ident = $id:literal, $sev:ident, $title:literal, [$($fw:literal),*] $(, $raised:ident)?;)+) => {
        $(pub const $name: Rule = Rule { id: $id, title: $title, severity: Risk::$sev, frameworks: &[$($fw),*], raised_by_events: raised_by_events!($($raised)?) };)+
        /// Every rule.
        pub const ALL: &[Rule] = &[$($name),+];
    };
}

rules! {
    UNTRUSTED_MCP_TOOL = "AISPM-MCP-001", High, "Untrusted or quarantined MCP tool invoked",
        ["OWASP-LLM03:2025 Supply Chain", "OWASP-LLM06:2025 Excessive Agency", "MITRE-ATLAS AML.T0010 ML Supply Chain Compromise", "NIST-AI-RMF MANAGE"];
    UNTRUSTED_MCP_SERVER = "AISPM-MCP-002", High, "Tool of an untrusted or quarantined MCP server invoked",
        ["OWASP-LLM03:2025 Supply Chain", "MITRE-ATLAS AML.T0010 ML Supply Chain Compromise", "NIST-AI-RMF MANAGE"];
    SHADOW_AGENT = "AISPM-SHADOW-001", High, "Decision from an unregistered agent (shadow AI)",
        ["OWASP-LLM06:2025 Excessive Agency", "MITRE-ATLAS AML.T0051 LLM Prompt Injection", "NIST-AI-RMF GOVERN"];
    SHADOW_MODEL = "AISPM-SHADOW-002", High, "Decision to an unregistered model endpoint (shadow AI)",
        ["OWASP-LLM02:2025 Sensitive Information Disclosure", "MITRE-ATLAS AML.T0040 AI Model Inference API Access", "NIST-AI-RMF MAP"];
    SHADOW_CONTROL = "AISPM-CTRL-001", High, "High or critical action allowed while its control runs in shadow mode",
        ["OWASP-LLM06:2025 Excessive Agency", "NIST-AI-RMF MANAGE"];
    NO_APPROVAL = "AISPM-APR-001", High, "High or critical action allowed without approval",
        ["OWASP-LLM06:2025 Excessive Agency", "MITRE-ATLAS AML.T0053 LLM Plugin Compromise", "NIST-AI-RMF GOVERN"], events;
    BREAK_GLASS_LATE = "AISPM-BG-001", High, "Break-glass not reviewed within the review window",
        ["OWASP-LLM06:2025 Excessive Agency", "NIST-AI-RMF GOVERN"];
    EXCEPTION_EXPIRED = "AISPM-EXC-001", Medium, "Exception expired while its finding is open",
        ["NIST-AI-RMF MANAGE"];
    PUBLIC_ENDPOINT = "AISPM-EP-001", Critical, "Public model endpoint without authentication",
        ["OWASP-LLM10:2025 Unbounded Consumption", "MITRE-ATLAS AML.T0040 AI Model Inference API Access", "NIST-AI-RMF MANAGE"];
    WILDCARD_KEY = "AISPM-KEY-001", High, "API key with wildcard or admin scopes",
        ["OWASP-LLM06:2025 Excessive Agency", "MITRE-ATLAS AML.T0012 Valid Accounts", "NIST-AI-RMF MANAGE"];
    DATA_CLASS = "AISPM-DATA-001", Critical, "PII, PHI or secret sent to a model endpoint not approved for that class",
        ["OWASP-LLM02:2025 Sensitive Information Disclosure", "MITRE-ATLAS AML.T0057 LLM Data Leakage", "NIST-AI-RMF MEASURE"];
    AGENT_UNOWNED = "AISPM-OWN-001", Medium, "Agent without an owner",
        ["NIST-AI-RMF GOVERN"];
    EVIDENCE_MISSING = "AISPM-EV-001", Medium, "High or critical decision without evidence",
        ["NIST-AI-RMF MEASURE"], events;
    EVIDENCE_UNSIGNED = "AISPM-EV-002", Medium, "Evidence is not signed",
        ["NIST-AI-RMF MEASURE"];
    EVIDENCE_SIGNATURE = "AISPM-EV-003", High, "Evidence signature does not verify against the tenant's trust roots",
        ["MITRE-ATLAS AML.T0048 External Harms", "NIST-AI-RMF MEASURE"];
    RUNAWAY_AGENT = "AISPM-RUN-001", High, "Runaway agent: tool-call rate above the threshold",
        ["OWASP-LLM10:2025 Unbounded Consumption", "MITRE-ATLAS AML.T0029 Denial of AI Service", "NIST-AI-RMF MANAGE"];
}

/// The rule with this id.
pub fn by_id(id: &str) -> Option<Rule> {
    ALL.iter().copied().find(|r| r.id == id)
}

/// `{rule id}:{subject}`.
pub fn finding_id(rule: Rule, subject: &str) -> String {
    format!("{}:{subject}", rule.id)
}

/// Splits a finding id into its rule and subject.
pub fn split_finding_id(id: &str) -> Option<(Rule, &str)> {
    let (rule, subject) = id.split_once(':')?;
    Some((by_id(rule)?, subject))
}

/// Days to remediate by severity (the SLA); the due date is `opened_at` plus this, unless an
/// assignment sets another.
pub fn sla_days(severity: Risk) -> i64 {
    match severity {
        Risk::Critical => 3,
        Risk::High => 14,
        Risk::Medium => 30,
        Risk::Low => 90,
    }
}

pub const DAY_MS: i64 = 86_400_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        let ids: std::collections::BTreeSet<_> = ALL.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), ALL.len());
        let id = finding_id(DATA_CLASS, "openai/pii");
        let (rule, subject) = split_finding_id(&id).unwrap();
        assert_eq!((rule.id, subject), ("AISPM-DATA-001", "openai/pii"));
        assert!(
            ALL.iter()
                .all(|r| r.frameworks.iter().any(|f| f.starts_with("NIST-AI-RMF")))
        );
    }
}
