//! How much memory the gatekeeper's per-tenant state takes under a soak-like load (a measuring
//! example, not a timed test): applies synthetic view changes for 10 tenants to
//! [`TenantState`]s and prints the process RSS (`VmRSS`) before and after, as JSON.
//!
//! The mix follows the soak's: most decisions add an evidence row; many raise a finding, mostly
//! the medium "evidence is not signed" one, some the high "allowed without approval" one, a
//! third of which an approval later closes.
//!
//! Run: `cargo run --release -p aispm-gatekeeper --example gatekeeper_memory [view_changes]`
//! (default 300 000).

use aispm_gatekeeper::TenantState;
use aispm_schemas::views::{
    EvidenceRow, FindingRow, FindingStatus, SignatureState, ViewName, ViewRow,
};
use aispm_schemas::{Environment, Risk, Timestamp};

const TENANTS: usize = 10;
const T0: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

/// Resident set size of this process in KiB, from `/proc/self/status`.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A uuid-shaped id, as the gateways send.
fn uuid(i: u64, salt: u64) -> String {
    let x = i
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let y = x.rotate_left(29) ^ 0xA5A5_5A5A_DEAD_BEEF;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        x >> 32,
        (x >> 16) & 0xffff,
        x & 0xfff,
        y >> 52,
        y & 0xffff_ffff_ffff
    )
}

fn evidence(id: &str, event_id: &str, at: i64) -> ViewRow {
    ViewRow::Evidence(EvidenceRow {
        asserted_by: None,
        evidence_id: id.to_owned(),
        event_id: event_id.to_owned(),
        sha256: "ab".repeat(32),
        uri: format!("s3://aispm-evidence/acme/{id}.json"),
        signature_state: SignatureState::Unsigned,
        key_id: None,
        recorded_at: Timestamp(at),
        synthetic: false,
        action_kind: Some("command".into()),
        environment: Some(Environment::Production),
        agent_id: None,
        control_id: None,
    })
}

#[allow(clippy::too_many_arguments)]
fn finding(
    id: String,
    rule: &str,
    title: &str,
    severity: Risk,
    subject: &str,
    event_id: &str,
    at: i64,
    open: bool,
) -> ViewRow {
    ViewRow::Finding(FindingRow {
        asserted_by: None,
        finding_id: id,
        rule_id: rule.to_owned(),
        title: title.to_owned(),
        severity,
        status: if open {
            FindingStatus::Open
        } else {
            FindingStatus::Closed
        },
        subject: subject.to_owned(),
        owner: None,
        due_at: Some(Timestamp(at + 7 * DAY)),
        opened_at: Timestamp(at),
        closed_at: (!open).then_some(Timestamp(at + 1000)),
        resolution: (!open).then(|| "resolved".to_owned()),
        frameworks: vec![
            "OWASP-LLM06:2025 Excessive Agency".into(),
            "NIST-AI-RMF MEASURE".into(),
        ],
        event_ids: vec![event_id.to_owned()],
        occurrences: 1,
        exception_id: None,
        exception_expires_at: None,
        first_occurrence_at: Timestamp(at),
        last_occurrence_at: Timestamp(at),
        environments: Vec::new(),
        risk: Default::default(),
    })
}

/// View changes applied, and how many of them changed what a rule reads.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    changes: usize,
    applied: usize,
}

impl Counts {
    fn apply(&mut self, t: &mut TenantState, view: ViewName, key: &str, row: ViewRow) {
        self.changes += 1;
        if t.apply(view, key, Some(row)).unwrap_or(false) {
            self.applied += 1;
        }
    }
}

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300_000);
    let mut tenants: Vec<TenantState> = (0..TENANTS).map(|_| TenantState::default()).collect();
    let before = rss_kib();
    let mut event = 0u64;
    let mut n = Counts::default();
    let mut pending_close: Vec<(usize, String, String, i64)> = Vec::new();
    while n.changes < total {
        event += 1;
        let tenant = (event % TENANTS as u64) as usize;
        let t = &mut tenants[tenant];
        let at = T0 + i64::try_from(event).unwrap_or(0) * 10;
        let decision = format!("d-{}", uuid(event, 1));
        // Two independent rolls per decision, so every tenant sees the same mix.
        let roll = (event.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) % 100;
        let roll2 = (event.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 21;
        // Nine decisions in ten carry evidence.
        let ev = format!("ev-{}", uuid(event, 2));
        if roll < 90 {
            n.apply(t, ViewName::Evidence, &ev, evidence(&ev, &decision, at));
            // Four in five of those are unsigned: a medium finding each.
            if roll < 72 {
                let id = format!("AISPM-EV-002:{ev}");
                let row = finding(
                    id.clone(),
                    "AISPM-EV-002",
                    "Evidence is not signed",
                    Risk::Medium,
                    &ev,
                    &decision,
                    at,
                    true,
                );
                n.apply(t, ViewName::Findings, &id, row);
            }
        }
        // One decision in seven is a high-risk allow without approval: a high finding; an
        // approval closes every third of them a little later.
        if roll2 < 3 {
            let id = format!("AISPM-APR-001:{decision}");
            let row = finding(
                id.clone(),
                "AISPM-APR-001",
                "High or critical action allowed without approval",
                Risk::High,
                &decision,
                &decision,
                at,
                true,
            );
            n.apply(t, ViewName::Findings, &id, row);
            if roll2 == 0 {
                pending_close.push((tenant, id, decision.clone(), at));
            }
        }
        if pending_close.len() >= 64 {
            for (tenant, id, decision, at) in pending_close.drain(..) {
                let row = finding(
                    id.clone(),
                    "AISPM-APR-001",
                    "High or critical action allowed without approval",
                    Risk::High,
                    &decision,
                    &decision,
                    at,
                    false,
                );
                n.apply(&mut tenants[tenant], ViewName::Findings, &id, row);
            }
        }
    }
    let Counts { changes, applied } = n;
    let after = rss_kib();
    let kib = after.saturating_sub(before);
    println!(
        "{{\"view_changes\":{changes},\"applied\":{applied},\"decisions\":{event},\"tenants\":{TENANTS},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"growth_kib\":{kib},\"bytes_per_change\":{:.1}}}",
        (kib as f64 * 1024.0) / changes as f64
    );
    let mut rows: Vec<(&str, usize)> = Vec::new();
    for t in &tenants {
        for (i, (kind, n)) in t.row_counts().into_iter().enumerate() {
            match rows.get_mut(i) {
                Some(r) => r.1 += n,
                None => rows.push((kind, n)),
            }
        }
    }
    let rows: Vec<String> = rows.iter().map(|(k, n)| format!("\"{k}\":{n}")).collect();
    println!("{{\"state_rows\":{{{}}}}}", rows.join(","));
    // Keep the state alive until after the measurement.
    drop(tenants);
}
