//! The finding rule catalog. Ids are stable: a finding's id is `{rule id}:{subject}`, so events
//! (assignments, resolutions, exceptions) can name a finding before or after it is raised. A
//! finding is one row per (rule, resource): the subject names the resource (an agent, a tool,
//! an endpoint, a key, an evidence item, or an agent and the control it acted under,
//! `aispm_schemas::finding_subject`), and every event that raised it is an occurrence.
//!
//! Framework mappings: OWASP Top 10 for LLM Applications (2025), MITRE ATLAS techniques, and the
//! NIST AI RMF function (GOVERN, MAP, MEASURE, MANAGE). Each rule also says what kind of finding
//! it is (what agents did at runtime, or the state of an asset or control: the OCSF class its
//! records take, [`crate::ocsf`]) and how to remediate it.
//!
//! The catalog lives here, in the contract crate, because every service reads it: the
//! projector raises the findings, the reporter and the OCSF topic describe them. What raises
//! each rule and when its finding holds live in the projector, one file per family of rules
//! (`projector/src/rules/`), checked against this catalog by a test there.

use crate::{AssetKind, Risk, finding_subject_parts};

/// What a finding is about, which decides its OCSF class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingClass {
    /// Something an agent did at runtime (OCSF Detection Finding, 2004).
    Detection,
    /// The state of an asset, control, exception or evidence (OCSF Compliance Finding, 2003).
    Compliance,
}

/// What a rule's finding subject names, and so which asset (if any) the finding is about: the
/// one place that maps a rule to its asset, for the condition that raises the finding and the
/// risk score that ranks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// One registered (or seen) asset of this kind: the subject is its id.
    Asset(AssetKind),
    /// An agent and the control it acted under (`finding_subject`): about the agent.
    AgentUnderControl,
    /// `{model endpoint}/{data class}`: about the endpoint.
    EndpointAndClass,
    /// A control id.
    Control,
    /// An evidence id.
    Evidence,
    /// An exception or break-glass id.
    Exception,
}

/// One rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Risk,
    pub frameworks: &'static [&'static str],
    pub class: FindingClass,
    /// What to do about it, for the people who own the asset.
    pub remediation: &'static str,
    /// Raised by events one by one (each an occurrence, indexed for the API), rather than
    /// derived from the state of an asset, control or exception.
    pub raised_by_events: bool,
    /// What its finding subject names.
    pub subject: Subject,
}

impl Rule {
    /// The asset key (`{asset kind}/{id}`) of the asset a finding of this rule about `subject`
    /// concerns, if it concerns one.
    pub fn asset_key(&self, subject: &str) -> Option<String> {
        let (kind, id) = match self.subject {
            Subject::Asset(kind) => (kind, subject.to_owned()),
            Subject::AgentUnderControl => (
                AssetKind::Agent,
                finding_subject_parts(subject).into_iter().next()?,
            ),
            Subject::EndpointAndClass => (
                AssetKind::ModelEndpoint,
                subject
                    .rsplit_once('/')
                    .map_or(subject, |(e, _)| e)
                    .to_owned(),
            ),
            Subject::Control | Subject::Evidence | Subject::Exception => return None,
        };
        Some(format!("{}/{id}", kind.as_str()))
    }
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
    ($($name:ident = $id:literal, $sev:ident, $class:ident, $subject:expr, $title:literal, [$($fw:literal),*], $fix:literal $(, $raised:ident)?;)+) => {
        $(pub const $name: Rule = Rule { id: $id, title: $title, severity: Risk::$sev, frameworks: &[$($fw),*], class: FindingClass::$class, remediation: $fix, raised_by_events: raised_by_events!($($raised)?), subject: $subject };)+
        /// Every rule.
        pub const ALL: &[Rule] = &[$($name),+];
    };
}

rules! {
    UNTRUSTED_MCP_TOOL = "AISPM-MCP-001", High, Detection, Subject::Asset(AssetKind::McpTool), "Untrusted or quarantined MCP tool invoked",
        ["OWASP-LLM03:2025 Supply Chain", "OWASP-LLM06:2025 Excessive Agency", "MITRE-ATLAS AML.T0010 ML Supply Chain Compromise", "NIST-AI-RMF MANAGE"],
        "Stop routing calls to the tool: deny it at the MCP gateway, or review it and register it as trusted; then resolve the finding.";
    UNTRUSTED_MCP_SERVER = "AISPM-MCP-002", High, Detection, Subject::Asset(AssetKind::McpServer), "Tool of an untrusted or quarantined MCP server invoked",
        ["OWASP-LLM03:2025 Supply Chain", "MITRE-ATLAS AML.T0010 ML Supply Chain Compromise", "NIST-AI-RMF MANAGE"],
        "Deny the server's tools at the gateway, or review the server and register it as trusted; then resolve the finding.";
    SHADOW_AGENT = "AISPM-SHADOW-001", High, Detection, Subject::Asset(AssetKind::Agent), "Decision from an unregistered agent (shadow AI)",
        ["OWASP-LLM06:2025 Excessive Agency", "MITRE-ATLAS AML.T0051 LLM Prompt Injection", "NIST-AI-RMF GOVERN"],
        "Register the agent with an owner, or shut it down; route its actions through a governed gateway.";
    SHADOW_MODEL = "AISPM-SHADOW-002", High, Detection, Subject::Asset(AssetKind::ModelEndpoint), "Decision to an unregistered model endpoint (shadow AI)",
        ["OWASP-LLM02:2025 Sensitive Information Disclosure", "MITRE-ATLAS AML.T0040 AI Model Inference API Access", "NIST-AI-RMF MAP"],
        "Register the model endpoint (with its approved data classes), or block it at the model gateway.";
    SHADOW_CONTROL = "AISPM-CTRL-001", High, Compliance, Subject::Control, "High or critical action allowed while its control runs in shadow mode",
        ["OWASP-LLM06:2025 Excessive Agency", "NIST-AI-RMF MANAGE"],
        "Switch the control from shadow to enforced mode on its high-risk paths, or grant a time-boxed exception.";
    NO_APPROVAL = "AISPM-APR-001", High, Detection, Subject::AgentUnderControl, "High or critical action allowed without approval",
        ["OWASP-LLM06:2025 Excessive Agency", "MITRE-ATLAS AML.T0053 LLM Plugin Compromise", "NIST-AI-RMF GOVERN"],
        "Require an approval for high and critical actions under this control (verdict require_approval), and review the actions already allowed.", events;
    PENDING_APPROVAL = "AISPM-APR-002", Medium, Compliance, Subject::AgentUnderControl, "Request for approval still pending past the decision window while its agent acts on",
        ["OWASP-LLM06:2025 Excessive Agency", "NIST-AI-RMF GOVERN"],
        "Answer the pending requests (approval_granted or approval_denied naming the decision), and staff or route the approval queue of this control so that requests are answered within the decision window.";
    BREAK_GLASS_LATE = "AISPM-BG-001", High, Compliance, Subject::Exception, "Break-glass not reviewed within the review window",
        ["OWASP-LLM06:2025 Excessive Agency", "NIST-AI-RMF GOVERN"],
        "Review the break-glass use (break_glass_reviewed) and record why it was needed.";
    EXCEPTION_EXPIRED = "AISPM-EXC-001", Medium, Compliance, Subject::Exception, "Exception expired while its finding is open",
        ["NIST-AI-RMF MANAGE"],
        "Fix the finding the exception covered, or renew the exception with a new expiry and owner.";
    PUBLIC_ENDPOINT = "AISPM-EP-001", Critical, Compliance, Subject::Asset(AssetKind::ModelEndpoint), "Public model endpoint without authentication",
        ["OWASP-LLM10:2025 Unbounded Consumption", "MITRE-ATLAS AML.T0040 AI Model Inference API Access", "NIST-AI-RMF MANAGE"],
        "Require authentication on the endpoint or take it off the public network.";
    WILDCARD_KEY = "AISPM-KEY-001", High, Compliance, Subject::Asset(AssetKind::ApiKey), "API key with wildcard or admin scopes",
        ["OWASP-LLM06:2025 Excessive Agency", "MITRE-ATLAS AML.T0012 Valid Accounts", "NIST-AI-RMF MANAGE"],
        "Rotate the key and reissue it with the narrowest scopes its agent needs.";
    UNUSED_SCOPE = "AISPM-KEY-002", Medium, Compliance, Subject::Asset(AssetKind::ApiKey), "API key scope granted but unused for the window while the key is in use",
        ["OWASP-LLM06:2025 Excessive Agency", "MITRE-ATLAS AML.T0012 Valid Accounts", "NIST-AI-RMF GOVERN"],
        "Reissue the key without the scopes its agent has not used (least privilege); grant them again when a task needs them.";
    DATA_CLASS = "AISPM-DATA-001", Critical, Detection, Subject::EndpointAndClass, "PII, PHI or secret sent to a model endpoint not approved for that class",
        ["OWASP-LLM02:2025 Sensitive Information Disclosure", "MITRE-ATLAS AML.T0057 LLM Data Leakage", "NIST-AI-RMF MEASURE"],
        "Block the data class for this endpoint at the gateway (redact or deny), or approve the endpoint for it after review.";
    AGENT_UNOWNED = "AISPM-OWN-001", Medium, Compliance, Subject::Asset(AssetKind::Agent), "Agent without an owner",
        ["NIST-AI-RMF GOVERN"],
        "Register an owner for the agent.";
    EVIDENCE_MISSING = "AISPM-EV-001", Medium, Detection, Subject::AgentUnderControl, "High or critical decision without evidence",
        ["NIST-AI-RMF MEASURE"],
        "Make the control emit signed evidence for every high and critical decision.", events;
    EVIDENCE_UNSIGNED = "AISPM-EV-002", Medium, Compliance, Subject::AgentUnderControl, "Decisions carry evidence that is not signed",
        ["NIST-AI-RMF MEASURE"],
        "Make the control sign its evidence with a key registered as a trust root for the tenant.", events;
    EVIDENCE_SIGNATURE = "AISPM-EV-003", High, Detection, Subject::Evidence, "Evidence signature does not verify against the tenant's trust roots",
        ["MITRE-ATLAS AML.T0048 External Harms", "NIST-AI-RMF MEASURE"],
        "Investigate the evidence (a signature that does not verify may be a forgery) and check the signing key against the trust roots.";
    RUNAWAY_AGENT = "AISPM-RUN-001", High, Detection, Subject::Asset(AssetKind::Agent), "Runaway agent: tool-call rate above the threshold",
        ["OWASP-LLM10:2025 Unbounded Consumption", "MITRE-ATLAS AML.T0029 Denial of AI Service", "NIST-AI-RMF MANAGE"],
        "Throttle or stop the agent, and look for the loop or prompt that drove the calls.";
    AGENT_LOOP = "AISPM-RUN-002", Medium, Detection, Subject::Asset(AssetKind::Agent), "Agent loop: the same call on the same target repeated within a minute",
        ["OWASP-LLM10:2025 Unbounded Consumption", "MITRE-ATLAS AML.T0029 Denial of AI Service", "NIST-AI-RMF MANAGE"],
        "Find what keeps the agent repeating the call (a tool result it cannot parse, a plan that never ends) and bound its steps.";
    DENIAL_STORM = "AISPM-RUN-003", High, Detection, Subject::Asset(AssetKind::Agent), "Denial storm: many actions of one agent denied within a minute",
        ["OWASP-LLM06:2025 Excessive Agency", "MITRE-ATLAS AML.T0051 LLM Prompt Injection", "NIST-AI-RMF MANAGE"],
        "Stop the agent and review what it attempted: a burst of denied actions is an agent probing its limits, often under injected instructions.";
    RETRY_BURST = "AISPM-RUN-004", Medium, Detection, Subject::Asset(AssetKind::Agent), "Retry burst: a denied action retried again and again within a minute",
        ["OWASP-LLM06:2025 Excessive Agency", "NIST-AI-RMF MANAGE"],
        "Make the agent treat a denial as final (no blind retries), and review whether the action should need an approval instead.";
}

/// The runtime signals: rules raised by an agent's decisions per minute of event time crossing a
/// threshold (the projector's `--runaway-per-minute`, `--loop-repeats`, `--denials-per-minute`,
/// `--retries-per-minute`).
pub const SIGNALS: &[Rule] = &[RUNAWAY_AGENT, AGENT_LOOP, DENIAL_STORM, RETRY_BURST];

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
    fn each_rule_names_the_asset_its_finding_is_about() {
        let pair = crate::finding_subject(&["coder-agent", "ctl/shell"]);
        let cases = [
            (UNTRUSTED_MCP_TOOL, "fs.write", Some("mcp_tool/fs.write")),
            (UNTRUSTED_MCP_SERVER, "github", Some("mcp_server/github")),
            (SHADOW_AGENT, "nb", Some("agent/nb")),
            (SHADOW_MODEL, "gpt", Some("model_endpoint/gpt")),
            (PUBLIC_ENDPOINT, "gpt", Some("model_endpoint/gpt")),
            (WILDCARD_KEY, "k1", Some("api_key/k1")),
            (UNUSED_SCOPE, "k1", Some("api_key/k1")),
            (AGENT_UNOWNED, "nb", Some("agent/nb")),
            (NO_APPROVAL, pair.as_str(), Some("agent/coder-agent")),
            (EVIDENCE_MISSING, pair.as_str(), Some("agent/coder-agent")),
            (EVIDENCE_UNSIGNED, pair.as_str(), Some("agent/coder-agent")),
            (PENDING_APPROVAL, pair.as_str(), Some("agent/coder-agent")),
            // The class is the last part: an endpoint id may hold a `/`.
            (DATA_CLASS, "eu/llm/pii", Some("model_endpoint/eu/llm")),
            (SHADOW_CONTROL, "ctl-1", None),
            (EXCEPTION_EXPIRED, "exc-1", None),
            (BREAK_GLASS_LATE, "bg-1", None),
            (EVIDENCE_SIGNATURE, "ev-1", None),
        ];
        for (rule, subject, want) in cases {
            assert_eq!(rule.asset_key(subject).as_deref(), want, "{}", rule.id);
        }
        for rule in SIGNALS {
            assert_eq!(
                rule.asset_key("a").as_deref(),
                Some("agent/a"),
                "{}",
                rule.id
            );
        }
    }

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
