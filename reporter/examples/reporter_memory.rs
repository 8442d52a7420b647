//! Resident memory of the reporter's state while it folds many view changes: not a test, a
//! measurement. Prints one JSON line per sample and a summary line.
//!
//! ```sh
//! cargo run --release -p aispm-reporter --example reporter_memory -- [rocksdb|memory] [changes] [tenants]
//! ```
//!
//! `rocksdb` is the reporter's state ([`Shared`], rows in RocksDB); `memory` folds the same rows
//! into in-memory maps, as the reporter did before the rows moved to RocksDB (the baseline).
//! Each simulated event upserts one evidence row and one finding row, both new keys, the way a
//! steady stream of real decisions does.

use aispm_reporter::state::{Shared, TenantState, Update};
use aispm_schemas::{
    Environment, EvidenceRow, FindingRow, FindingStatus, Risk, SignatureState, Timestamp,
    ViewChange, ViewName, ViewOp, ViewRow,
};
use std::collections::BTreeMap;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn changes(i: u64, tenants: u64) -> [ViewChange; 2] {
    let tenant = format!("tenant-{:03}", i % tenants);
    let event_id = format!("0195f3a2-7c4e-7d21-9a3b-{i:012x}");
    let at = Timestamp(1_763_719_200_000 + i as i64);
    let evidence_id = format!("ev-{i:012x}");
    let finding_id = format!("unsigned_evidence:agent-{i:08}");
    let evidence = EvidenceRow {
        asserted_by: None,
        evidence_id: evidence_id.clone(),
        event_id: event_id.clone(),
        sha256: format!("{:064x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15),
        uri: format!("s3://aispm-evidence/{tenant}/2025/11/21/{evidence_id}.json"),
        signature_state: SignatureState::Verified,
        key_id: Some("gateway-signing-key-2025".into()),
        recorded_at: at,
        synthetic: false,
        action_kind: Some("command".into()),
        environment: Some(Environment::Production),
        agent_id: None,
        control_id: None,
    };
    let finding = FindingRow {
        asserted_by: None,
        finding_id: finding_id.clone(),
        rule_id: "unsigned_evidence".into(),
        title: "Evidence without a verified signature on a high-risk action".into(),
        severity: Risk::High,
        status: FindingStatus::Open,
        subject: format!("agent-{i:08}"),
        owner: Some("secops@example.com".into()),
        due_at: Some(Timestamp(at.0 + 7 * 86_400_000)),
        opened_at: at,
        closed_at: None,
        resolution: None,
        frameworks: vec!["soc2:CC7.2".into(), "iso27001:A.8.15".into()],
        event_ids: vec![event_id.clone()],
        occurrences: 1,
        exception_id: None,
        exception_expires_at: None,
        first_occurrence_at: at,
        last_occurrence_at: at,
        environments: Vec::new(),
        risk: Default::default(),
    };
    let change = |view, key: String, row| ViewChange {
        tenant_id: tenant.clone(),
        view,
        key,
        op: ViewOp::Upsert,
        row: Some(row),
        changed_at: at,
        cause_event_id: event_id.clone(),
    };
    [
        change(ViewName::Evidence, evidence_id, ViewRow::Evidence(evidence)),
        change(ViewName::Findings, finding_id, ViewRow::Finding(finding)),
    ]
}

/// The pre-RocksDB fold: every row kept in the tenant's maps.
fn fold_in_memory(tenants: &mut BTreeMap<String, TenantState>, vc: ViewChange) {
    let t = tenants.entry(vc.tenant_id).or_default();
    match vc.row {
        Some(ViewRow::Evidence(r)) => {
            t.evidence.insert(vc.key, r);
        }
        Some(ViewRow::Finding(r)) => {
            t.findings.insert(vc.key, r);
        }
        _ => {}
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "rocksdb".into());
    let total: u64 = args.next().map_or(Ok(300_000), |a| a.parse())?;
    let tenants: u64 = args.next().map_or(Ok(10), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let shared = match mode.as_str() {
        "rocksdb" => Some(Shared::open(&dir.path().join("views-db"))?),
        "memory" => None,
        other => return Err(format!("unknown mode {other}: rocksdb or memory").into()),
    };
    let mut memory: BTreeMap<String, TenantState> = BTreeMap::new();
    let start_rss = rss_bytes();
    let sample_every = (total / 10).max(2);
    let mut applied = 0u64;
    let mut peak = start_rss;
    let mut i = 0u64;
    while applied < total {
        // Batches of 1000 changes, like the follower's.
        let mut batch = Vec::with_capacity(1000);
        while batch.len() < 1000 && applied + (batch.len() as u64) < total {
            batch.extend(changes(i, tenants));
            i += 1;
        }
        applied += batch.len() as u64;
        match &shared {
            Some(s) => {
                s.apply_all(batch.into_iter().map(Update::View))?;
            }
            None => {
                for vc in batch {
                    fold_in_memory(&mut memory, vc);
                }
            }
        }
        if applied % sample_every < 1000 || applied >= total {
            let rss = rss_bytes();
            peak = peak.max(rss);
            let db = shared.as_ref().map(|s| s.rows().memory().total());
            println!(
                "{{\"mode\":\"{mode}\",\"changes\":{applied},\"rss_bytes\":{rss},\"db_memory_bytes\":{}}}",
                db.map_or("null".into(), |b| b.to_string())
            );
        }
    }
    let end_rss = rss_bytes();
    let disk = shared.as_ref().map_or(0, |s| s.rows().disk_bytes());
    // A report materializes one tenant's rows for the packet; measure that transient too.
    let (report_rows, report_rss) = match &shared {
        Some(s) => {
            let t = s.tenant("tenant-000")?.ok_or("tenant-000 missing")?;
            let rows = t.evidence.len() + t.findings.len();
            let rss = rss_bytes();
            drop(t);
            (rows, rss)
        }
        None => {
            let t = memory.get("tenant-000").cloned().unwrap_or_default();
            (t.evidence.len() + t.findings.len(), rss_bytes())
        }
    };
    println!(
        "{{\"summary\":true,\"mode\":\"{mode}\",\"changes\":{total},\"tenants\":{tenants},\"start_rss_bytes\":{start_rss},\"end_rss_bytes\":{end_rss},\"peak_rss_bytes\":{peak},\"growth_bytes_per_change\":{:.1},\"one_tenant_rows\":{report_rows},\"rss_while_one_tenant_materialized\":{report_rss},\"views_db_disk_bytes\":{disk}}}",
        end_rss.saturating_sub(start_rss) as f64 / total as f64
    );
    Ok(())
}
