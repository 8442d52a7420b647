//! Report records: what was generated, where the packet is, and every delivery attempt.
//! One JSON file per report under `<state-dir>/reports/<tenant>/<id>.json`, written atomically;
//! the retry queue is the set of records still pending, so it survives restarts.

use crate::packet::Written;
use crate::{Error, Result};
use aispm_schemas::{DeliveryChannel, DeliveryOutcome, ReportType, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// Where a report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// Not delivered yet; another attempt is scheduled.
    Retrying,
    Delivered,
    /// Every attempt failed; given up.
    Failed,
}

/// One delivery attempt and the event that records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Attempt {
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
pub(crate) struct SmtpTranscript {
    pub uri: String,
    pub sha256: String,
}

/// A generated report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReportRecord {
    pub id: String,
    pub tenant_id: String,
    pub report_type: ReportType,
    pub title: String,
    pub headline: String,
    pub requested_by: String,
    pub created_at: Timestamp,
    /// The past instant the packet is as of (its state read as of then); absent: as of
    /// `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<Timestamp>,
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
    pub(crate) fn evidence_id(&self) -> String {
        format!("report/{}/manifest", self.id)
    }
}

/// Writes `bytes` to `path` atomically and durably ([`aispm_runtime::fs::write_atomic`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    aispm_runtime::fs::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

/// What a report's listing shows: small enough to keep in memory for every report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    pub id: String,
    pub report_type: ReportType,
    pub created_at: Timestamp,
    pub as_of: Option<Timestamp>,
    pub status: Status,
    pub packet_sha256: String,
    pub attempts: usize,
}

impl Summary {
    fn of(r: &ReportRecord) -> Self {
        Summary {
            id: r.id.clone(),
            report_type: r.report_type,
            created_at: r.created_at,
            as_of: r.as_of,
            status: r.status,
            packet_sha256: r.packet.zip_sha256.clone(),
            attempts: r.attempts.len(),
        }
    }
}

/// A page of a tenant's reports, newest first, and where the next page starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page {
    pub reports: Vec<Summary>,
    /// The `before` of the next page; `None` after the last.
    pub next: Option<String>,
}

/// Where a page of a tenant's listing starts: strictly before this report (its `created_at`
/// and id, as [`Page::next`] writes them: `<millis>.<id>`).
fn decode_before(cursor: &str) -> Option<(Timestamp, String)> {
    let (millis, id) = cursor.split_once('.')?;
    Some((Timestamp(millis.parse().ok()?), id.to_owned()))
}

fn encode_before(s: &Summary) -> String {
    format!("{}.{}", s.created_at.millis(), s.id)
}

/// Whether a record still has work: a delivery to retry or an event to publish.
fn has_work(r: &ReportRecord) -> bool {
    r.status == Status::Retrying || r.attempts.iter().any(|a| !a.published)
}

#[derive(Debug, Default)]
struct Memory {
    /// Every report's summary, per tenant, by (created_at, id).
    index: BTreeMap<String, BTreeMap<(Timestamp, String), Summary>>,
    /// Where each report sits in the index.
    created: HashMap<(String, String), Timestamp>,
    /// The whole records with work left; every other record is read from disk when asked for.
    live: BTreeMap<(String, String), ReportRecord>,
}

impl Memory {
    fn keep(&mut self, r: &ReportRecord) {
        let key = (r.tenant_id.clone(), r.id.clone());
        let index = self.index.entry(r.tenant_id.clone()).or_default();
        if let Some(old) = self.created.insert(key.clone(), r.created_at) {
            index.remove(&(old, r.id.clone()));
        }
        index.insert((r.created_at, r.id.clone()), Summary::of(r));
        if has_work(r) {
            self.live.insert(key, r.clone());
        } else {
            self.live.remove(&key);
        }
    }
}

/// All report records: on disk, with an index of every one and the records with work left in
/// memory (so memory grows by a summary per report, not by its manifest).
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    memory: Mutex<Memory>,
}

impl Store {
    /// Opens the store under `state_dir`, indexing every record.
    pub(crate) fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("reports");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut memory = Memory::default();
        for tenant in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let tenant = tenant.map_err(|e| Error::io(&dir, e))?.path();
            if !tenant.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&tenant).map_err(|e| Error::io(&tenant, e))? {
                let p = f.map_err(|e| Error::io(&tenant, e))?.path();
                if p.extension().is_some_and(|x| x == "json") {
                    match read(&p) {
                        Ok(r) => memory.keep(&r),
                        Err(e) => {
                            tracing::warn!(path = %p.display(), error = %e, "Skipped an unreadable report record.")
                        }
                    }
                }
            }
        }
        tracing::info!(
            records = memory.created.len(),
            with_work = memory.live.len(),
            "Indexed report records."
        );
        Ok(Store {
            dir,
            memory: Mutex::new(memory),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, tenant_id: &str, id: &str) -> PathBuf {
        self.dir.join(tenant_id).join(format!("{id}.json"))
    }

    /// Saves a record (durably) and indexes it.
    pub(crate) fn put(&self, r: &ReportRecord) -> Result<()> {
        write_atomic(
            &self.path(&r.tenant_id, &r.id),
            &serde_json::to_vec_pretty(r)?,
        )?;
        self.lock().keep(r);
        Ok(())
    }

    /// A report, from memory while it has work left, else from disk; `None` for an id the
    /// store does not hold (only indexed ids reach the file system).
    pub(crate) fn get(&self, tenant_id: &str, id: &str) -> Result<Option<ReportRecord>> {
        let key = (tenant_id.to_owned(), id.to_owned());
        {
            let memory = self.lock();
            if let Some(r) = memory.live.get(&key) {
                return Ok(Some(r.clone()));
            }
            if !memory.created.contains_key(&key) {
                return Ok(None);
            }
        }
        read(&self.path(tenant_id, id)).map(Some)
    }

    /// A page of at most `limit` of a tenant's reports, newest first, strictly before `before`
    /// (a [`Page::next`]); `None` for a cursor this store did not write.
    pub(crate) fn list(&self, tenant_id: &str, before: Option<&str>, limit: usize) -> Option<Page> {
        let memory = self.lock();
        let Some(index) = memory.index.get(tenant_id) else {
            return before.is_none().then(|| Page {
                reports: vec![],
                next: None,
            });
        };
        let older: Box<dyn DoubleEndedIterator<Item = _>> = match before {
            None => Box::new(index.values()),
            Some(c) => Box::new(index.range(..decode_before(c)?).map(|(_, s)| s)),
        };
        let mut reports: Vec<Summary> = older.rev().take(limit + 1).cloned().collect();
        let next = (reports.len() > limit).then(|| {
            reports.truncate(limit);
            reports.last().map(encode_before)
        });
        Some(Page {
            reports,
            next: next.flatten(),
        })
    }

    /// The records with work left.
    pub(crate) fn live(&self) -> Vec<ReportRecord> {
        self.lock().live.values().cloned().collect()
    }

    /// Records with work left: a delivery attempt due by `now`, or an unpublished event.
    pub(crate) fn work(&self, now: Timestamp) -> (Vec<ReportRecord>, Option<Timestamp>) {
        let memory = self.lock();
        let mut due = vec![];
        let mut next: Option<Timestamp> = None;
        for r in memory.live.values() {
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
    pub(crate) fn pending(&self) -> usize {
        self.lock()
            .live
            .values()
            .filter(|r| r.status == Status::Retrying)
            .count()
    }
}

fn read(path: &Path) -> Result<ReportRecord> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(serde_json::from_slice(&bytes)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(tenant: &str, id: &str, created: i64, status: Status) -> ReportRecord {
        serde_json::from_value(json!({
            "id": id, "tenant_id": tenant, "report_type": "cso", "title": "t", "headline": "h",
            "requested_by": "test", "created_at": Timestamp(created), "requested_recipients": null,
            "status": status, "attempts": [], "next_attempt_at": null,
            "packet": {
                "dir": "/p", "zip": "/p.zip", "zip_sha256": format!("sha-{id}"), "zip_bytes": 1,
                "manifest_sha256": "m", "signature": "s",
                "manifest": {
                    "format": "f", "report_id": id, "tenant_id": tenant, "report_type": "cso",
                    "generated_at": "g", "generator": "g",
                    "signer": {"algorithm": "ed25519", "key_id": "k", "public_key": "p", "signs": "s"},
                    "files": [],
                },
            },
        }))
        .unwrap()
    }

    #[test]
    fn finished_records_leave_memory_and_are_read_back_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut r = record("acme", "r1", 1_000, Status::Retrying);
        store.put(&r).unwrap();
        assert_eq!(store.live().len(), 1);
        assert_eq!(store.pending(), 1);
        r.status = Status::Delivered;
        store.put(&r).unwrap();
        assert!(
            store.live().is_empty(),
            "a delivered record is not kept whole"
        );
        assert_eq!(store.pending(), 0);
        assert_eq!(store.get("acme", "r1").unwrap(), Some(r.clone()));
        // Only indexed ids reach the file system.
        assert_eq!(store.get("acme", "../acme/r1").unwrap(), None);
        assert_eq!(store.get("other", "r1").unwrap(), None);
        // A reopened store indexes what is on disk and keeps only records with work.
        store
            .put(&record("acme", "r2", 2_000, Status::Retrying))
            .unwrap();
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.get("acme", "r1").unwrap(), Some(r));
        assert_eq!(
            reopened
                .live()
                .iter()
                .map(|r| &r.id[..])
                .collect::<Vec<_>>(),
            ["r2"]
        );
    }

    #[test]
    fn a_tenants_reports_page_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            store
                .put(&record(
                    "acme",
                    id,
                    1_000 * (i as i64 % 3),
                    Status::Delivered,
                ))
                .unwrap();
        }
        store.put(&record("other", "x", 5, Status::Failed)).unwrap();
        // created_at: a=0, b=1000, c=2000, d=0, e=1000 → newest first c, e, b, d, a.
        let mut seen = vec![];
        let mut before: Option<String> = None;
        loop {
            let page = store.list("acme", before.as_deref(), 2).unwrap();
            assert!(page.reports.len() <= 2);
            seen.extend(page.reports.iter().map(|s| s.id.clone()));
            match page.next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ["c", "e", "b", "d", "a"]);
        let all = store.list("acme", None, 10).unwrap();
        assert_eq!(all.reports.len(), 5);
        assert_eq!(all.next, None);
        assert_eq!(all.reports[0].packet_sha256, "sha-c");
        assert!(store.list("acme", Some("not a cursor"), 2).is_none());
        assert_eq!(store.list("nobody", None, 2).unwrap().reports, vec![]);
    }
}
