//! Report records: what was generated, where the packet is, and every delivery attempt.
//! One JSON file per report under `<state-dir>/reports/<tenant>/<id>.json`, written atomically;
//! the retry queue is the set of records still pending, so it survives restarts.

use crate::packet::Written;
use crate::{Error, Result};
use aispm_schemas::{DeliveryChannel, DeliveryOutcome, ReportType, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// Where a report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not delivered yet; another attempt is scheduled.
    Retrying,
    Delivered,
    /// Every attempt failed; given up.
    Failed,
}

/// One delivery attempt and the event that records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: i32,
    pub at: Timestamp,
    pub channel: DeliveryChannel,
    pub outcome: DeliveryOutcome,
    pub recipients: Vec<String>,
    pub approved_recipients: bool,
    pub message_id: Option<String>,
    pub server_response: Option<String>,
    pub error: Option<String>,
    /// The `ReportDeliveryEvent`'s id (deterministic: `<report id>/attempt/<n>`).
    pub event_id: String,
    /// Whether the event was acknowledged by the broker (and, with it, the provider
    /// validations of this attempt).
    pub published: bool,
    /// The report providers this delivery reached (those whose recipients were mailed): each
    /// gets a signed `report_provider` validation per environment when the reporter has a
    /// validator key. Empty for failed attempts and exports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
    /// The SMTP transcript the provider validations carry as evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<SmtpTranscript>,
}

/// Where an attempt's SMTP transcript was written and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpTranscript {
    pub uri: String,
    pub sha256: String,
}

/// A generated report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRecord {
    pub id: String,
    pub tenant_id: String,
    pub report_type: ReportType,
    pub title: String,
    pub headline: String,
    pub requested_by: String,
    pub created_at: Timestamp,
    pub packet: Written,
    /// Recipients asked for at request time (else the tenant's approved recipients).
    pub requested_recipients: Option<Vec<String>>,
    pub status: Status,
    pub attempts: Vec<Attempt>,
    pub next_attempt_at: Option<Timestamp>,
    /// The delivery evidence's signature (`aispm_schemas::signature` over this tenant, the
    /// evidence id and the manifest's SHA-256), made with the key that signed the packet.
    /// Absent in records written before it existed: signed when the event is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_signature: Option<String>,
}

impl ReportRecord {
    /// The delivery evidence id of this packet.
    pub fn evidence_id(&self) -> String {
        format!("report/{}/manifest", self.id)
    }
}

/// Writes `bytes` to `path` atomically and durably ([`aispm_runtime::fs::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    aispm_runtime::fs::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

/// All report records, in memory and on disk.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    records: Mutex<BTreeMap<(String, String), ReportRecord>>,
}

impl Store {
    /// Opens the store under `state_dir`, loading every record.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("reports");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut records = BTreeMap::new();
        for tenant in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let tenant = tenant.map_err(|e| Error::io(&dir, e))?.path();
            if !tenant.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&tenant).map_err(|e| Error::io(&tenant, e))? {
                let p = f.map_err(|e| Error::io(&tenant, e))?.path();
                if p.extension().is_some_and(|x| x == "json") {
                    let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
                    match serde_json::from_slice::<ReportRecord>(&bytes) {
                        Ok(r) => {
                            records.insert((r.tenant_id.clone(), r.id.clone()), r);
                        }
                        Err(e) => {
                            tracing::warn!(path = %p.display(), error = %e, "Skipped an unreadable report record.")
                        }
                    }
                }
            }
        }
        tracing::info!(records = records.len(), "Loaded report records.");
        Ok(Store {
            dir,
            records: Mutex::new(records),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), ReportRecord>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Saves a record (durably) and keeps it in memory.
    pub fn put(&self, r: &ReportRecord) -> Result<()> {
        let path = self.dir.join(&r.tenant_id).join(format!("{}.json", r.id));
        write_atomic(&path, &serde_json::to_vec_pretty(r)?)?;
        self.lock()
            .insert((r.tenant_id.clone(), r.id.clone()), r.clone());
        Ok(())
    }

    pub fn get(&self, tenant_id: &str, id: &str) -> Option<ReportRecord> {
        self.lock()
            .get(&(tenant_id.to_owned(), id.to_owned()))
            .cloned()
    }

    /// A tenant's reports, newest first.
    pub fn list(&self, tenant_id: &str) -> Vec<ReportRecord> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|(_, r)| r.clone())
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        v
    }

    /// Every record.
    pub fn list_all(&self) -> Vec<ReportRecord> {
        self.lock().values().cloned().collect()
    }

    /// Records with work left: a delivery attempt due by `now`, or an unpublished event.
    pub fn work(&self, now: Timestamp) -> (Vec<ReportRecord>, Option<Timestamp>) {
        let records = self.lock();
        let mut due = vec![];
        let mut next: Option<Timestamp> = None;
        for r in records.values() {
            let unpublished = r.attempts.iter().any(|a| !a.published);
            let attempt_due =
                r.status == Status::Retrying && r.next_attempt_at.is_some_and(|t| t <= now);
            if unpublished || attempt_due {
                due.push(r.clone());
            } else if r.status == Status::Retrying
                && let Some(t) = r.next_attempt_at
            {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        (due, next)
    }

    /// Records still being retried.
    pub fn pending(&self) -> usize {
        self.lock()
            .values()
            .filter(|r| r.status == Status::Retrying)
            .count()
    }
}
