//! The review cadence: reports generated and delivered for every tenant on a schedule (by
//! default a daily blockers digest, a weekly coverage and findings review, a monthly executive
//! report and a quarterly readiness archive).
//!
//! The last run of each schedule entry is kept in `<state-dir>/cadence.json`, so a restart
//! neither repeats a run nor loses one: runs missed while the reporter was down collapse into
//! one catch-up run at start. A tenant's scheduled report that fails (the reporter still
//! replaying, the projector or gatekeeper unreachable for the quarterly archive's past state, a
//! full disk) is retried with backoff, from one minute doubling to an hour, for a day; the
//! retries are kept in `<state-dir>/cadence-retries.json`, so a restart keeps them too. A
//! retried quarterly archive is as of the same quarter's end as its run.

use crate::center::{Center, Trigger};
use crate::schedule::{Entry, Period, archive_instant, backoff, next_after};
use crate::{Error, Result};
use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Last runs by entry key, persisted.
#[derive(Debug)]
struct LastRuns {
    path: PathBuf,
    runs: BTreeMap<String, i64>,
}

impl LastRuns {
    fn load(path: &Path) -> Result<Self> {
        Ok(LastRuns {
            path: path.to_owned(),
            runs: read_json(path)?,
        })
    }

    fn save(&self) -> Result<()> {
        write_json(&self.path, &self.runs)
    }
}

/// The JSON document at `path`; the default when there is none yet.
fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(b) => Ok(serde_json::from_slice(&b)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Writes `value` to `path` as JSON, atomically and durably.
fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    crate::store::write_atomic(path, &serde_json::to_vec_pretty(value)?)
}

/// How long a failed scheduled report is retried, and the backoff between attempts.
const RETRY_FOR: Duration = Duration::from_secs(24 * 3600);
const RETRY_INITIAL: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(3600);

/// One tenant's scheduled report that failed, to be tried again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Retry {
    /// The schedule entry's key (`PERIOD=TYPE`).
    entry: String,
    tenant: String,
    /// When the run that failed was made (ms): the quarterly archive is as of its quarter's end.
    run_at: i64,
    attempts: u32,
    next_at: i64,
}

/// The failed scheduled reports, persisted.
#[derive(Debug)]
struct Retries {
    path: PathBuf,
    list: Vec<Retry>,
}

impl Retries {
    fn load(path: &Path) -> Result<Self> {
        Ok(Retries {
            path: path.to_owned(),
            list: read_json(path)?,
        })
    }

    fn save(&self) -> Result<()> {
        write_json(&self.path, &self.list)
    }

    /// A run of `entry` for `tenant` at `run_at` failed (its first attempt): try again later.
    fn failed(&mut self, entry: String, tenant: String, run_at: i64) {
        self.list
            .retain(|r| !(r.entry == entry && r.tenant == tenant));
        let next_at = run_at.saturating_add(millis(backoff(1, RETRY_INITIAL, RETRY_MAX)));
        self.list.push(Retry {
            entry,
            tenant,
            run_at,
            attempts: 1,
            next_at,
        });
    }

    /// Takes the retries due at `now`.
    fn take_due(&mut self, now: i64) -> Vec<Retry> {
        let (due, rest) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|r| r.next_at <= now);
        self.list = rest;
        due
    }

    /// `r` failed again at `now`: retried after the next backoff, or given up (returned
    /// `false`) once a day has passed since its run.
    fn again(&mut self, mut r: Retry, now: i64) -> bool {
        if now.saturating_sub(r.run_at) >= millis(RETRY_FOR) {
            return false;
        }
        r.attempts += 1;
        r.next_at = now.saturating_add(millis(backoff(r.attempts, RETRY_INITIAL, RETRY_MAX)));
        self.list.push(r);
        true
    }

    /// When the next retry is due.
    fn next_at(&self) -> Option<i64> {
        self.list.iter().map(|r| r.next_at).min()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Which entries are due at `now`, given their last runs; entries never run start their
/// clock at `now` (a fresh reporter does not send every report at once).
fn due(
    entries: &[Entry],
    last: &mut BTreeMap<String, i64>,
    now: DateTime<Utc>,
    hour: u32,
) -> (Vec<Entry>, DateTime<Utc>) {
    let mut due = vec![];
    let mut next = now + ChronoDuration::hours(1);
    for e in entries {
        let key = e.key();
        let last_run = *last.entry(key).or_insert(now.timestamp_millis());
        let last_run = Utc.timestamp_millis_opt(last_run).single().unwrap_or(now);
        let at = next_after(e.period, last_run, hour);
        if at <= now {
            due.push(*e);
            next = next.min(next_after(e.period, now, hour));
        } else {
            next = next.min(at);
        }
    }
    (due, next)
}

/// Runs the schedule until `shutdown`: waits for the follower's state, then, whenever an entry
/// is due, generates and delivers its report for every tenant.
pub(crate) async fn run(
    center: Arc<Center>,
    entries: Vec<Entry>,
    hour: u32,
    state_file: PathBuf,
    shutdown: CancellationToken,
) -> Result<()> {
    if entries.is_empty() {
        tracing::info!("No report cadence configured.");
        shutdown.cancelled().await;
        return Ok(());
    }
    let mut last = LastRuns::load(&state_file)?;
    let mut retries = Retries::load(&state_file.with_file_name("cadence-retries.json"))?;
    tokio::select! {
        _ = center.restored() => {}
        _ = shutdown.cancelled() => return Ok(()),
    }
    tracing::info!(
        entries = %entries.iter().map(Entry::key).collect::<Vec<_>>().join(","),
        hour,
        "Report cadence started."
    );
    if entries.iter().any(|e| e.period == Period::Quarterly) && !center.as_of().has_read_token() {
        tracing::warn!(
            "No --read-token-file: the quarterly archive is made as of its run, not as of the quarter's end."
        );
    }
    let clock = Arc::clone(center.clock());
    let wall = |t: aispm_schemas::Timestamp| {
        Utc.timestamp_millis_opt(t.millis())
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    };
    loop {
        let now = wall(clock.now());
        let (due, next) = due(&entries, &mut last.runs, now, hour);
        for e in &due {
            let tenants = center.tenant_ids();
            tracing::info!(schedule = %e.key(), tenants = tenants.len(), "Running a scheduled report.");
            for tenant in tenants {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                if !scheduled(&center, e, &tenant, now).await {
                    retries.failed(e.key(), tenant, now.timestamp_millis());
                }
            }
            last.runs.insert(e.key(), now.timestamp_millis());
        }
        for r in retries.take_due(now.timestamp_millis()) {
            if shutdown.is_cancelled() {
                // Kept for the next start.
                retries.list.push(r);
                continue;
            }
            // An entry no longer scheduled is not retried.
            let Some(e) = entries.iter().find(|e| e.key() == r.entry) else {
                continue;
            };
            let run = Utc.timestamp_millis_opt(r.run_at).single().unwrap_or(now);
            if !scheduled(&center, e, &r.tenant, run).await {
                let (entry, tenant, attempts) = (r.entry.clone(), r.tenant.clone(), r.attempts);
                if !retries.again(r, wall(clock.now()).timestamp_millis()) {
                    tracing::error!(tenant_id = %tenant, schedule = %entry, attempts, "A scheduled report failed for a day; given up.");
                }
            }
        }
        retries.save()?;
        last.save()?;
        // At least 200 ms on: a clock stepped back must not make this spin.
        let soonest = clock.now().plus(Duration::from_millis(200));
        let next = retries
            .next_at()
            .map_or(next.timestamp_millis(), |r| r.min(next.timestamp_millis()));
        let wake = aispm_schemas::Timestamp(next).max(soonest);
        tokio::select! {
            _ = clock.sleep_until(wake) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Generates and delivers `e`'s report for `tenant`, for a run made at `run` (the quarterly
/// archive as of that quarter's end); whether it was generated.
async fn scheduled(center: &Center, e: &Entry, tenant: &str, run: DateTime<Utc>) -> bool {
    let as_of = archive_instant(e.period, run).and_then(|at| {
        center
            .as_of()
            .cadence(aispm_schemas::Timestamp(at.timestamp_millis()))
    });
    match center
        .generate(
            tenant,
            e.report_type,
            Trigger::Cadence(e.period),
            None,
            as_of,
        )
        .await
    {
        Ok(r) => {
            tracing::info!(tenant_id = %tenant, report_id = %r.id, schedule = %e.key(), "Scheduled report generated.");
            true
        }
        Err(err) => {
            tracing::warn!(tenant_id = %tenant, schedule = %e.key(), error = %err, "A scheduled report failed; it is retried.");
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::schedule::{Period, ScheduleArg, entries};
    use aispm_schemas::ReportType;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn calendar_periods() {
        // Saturday 2026-11-21 10:00.
        let sat = t("2026-11-21T10:00:00Z");
        assert_eq!(next_after(Period::Daily, sat, 6), t("2026-11-22T06:00:00Z"));
        assert_eq!(
            next_after(Period::Daily, sat, 12),
            t("2026-11-21T12:00:00Z")
        );
        assert_eq!(
            next_after(Period::Weekly, sat, 6),
            t("2026-11-23T06:00:00Z")
        );
        assert_eq!(
            next_after(Period::Weekly, t("2026-11-23T06:00:00Z"), 6),
            t("2026-11-30T06:00:00Z")
        );
        assert_eq!(
            next_after(Period::Monthly, sat, 6),
            t("2026-12-01T06:00:00Z")
        );
        assert_eq!(
            next_after(Period::Monthly, t("2026-12-15T00:00:00Z"), 6),
            t("2027-01-01T06:00:00Z")
        );
        assert_eq!(
            next_after(Period::Quarterly, sat, 6),
            t("2027-01-01T06:00:00Z")
        );
        assert_eq!(
            next_after(Period::Quarterly, t("2027-01-01T05:59:00Z"), 6),
            t("2027-01-01T06:00:00Z")
        );
        assert_eq!(
            next_after(Period::Every(Duration::from_secs(90)), sat, 6),
            t("2026-11-21T10:01:30Z")
        );
    }

    #[test]
    fn the_quarterly_archive_is_as_of_the_quarter_end() {
        let end = |run: &str| archive_instant(Period::Quarterly, t(run));
        // The run on the quarter's first day, and a catch-up run weeks later: the same end.
        assert_eq!(
            end("2027-01-01T06:00:00Z"),
            Some(t("2026-12-31T23:59:59.999Z"))
        );
        assert_eq!(
            end("2027-02-17T13:00:00Z"),
            Some(t("2026-12-31T23:59:59.999Z"))
        );
        assert_eq!(
            end("2026-10-01T06:00:00Z"),
            Some(t("2026-09-30T23:59:59.999Z"))
        );
        assert_eq!(
            end("2026-07-01T00:00:00Z"),
            Some(t("2026-06-30T23:59:59.999Z"))
        );
        // The other periods are as of their run.
        for p in [Period::Daily, Period::Weekly, Period::Monthly] {
            assert_eq!(archive_instant(p, t("2027-01-01T06:00:00Z")), None);
        }
    }

    #[test]
    fn a_failed_scheduled_report_is_retried_with_backoff_for_a_day_and_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cadence-retries.json");
        let mut r = Retries::load(&path).unwrap();
        let run = 1_000_000_000;
        let min = 60_000;
        r.failed("quarterly=production_readiness".into(), "acme".into(), run);
        r.failed(
            "quarterly=production_readiness".into(),
            "globex".into(),
            run,
        );
        // Failing again replaces, never duplicates, a tenant's retry.
        r.failed("quarterly=production_readiness".into(), "acme".into(), run);
        assert_eq!(r.list.len(), 2);
        assert_eq!(r.next_at(), Some(run + min));
        assert!(r.take_due(run + min - 1).is_empty());
        r.save().unwrap();
        // After a restart the retries are still there, due a minute after the run.
        let mut r = Retries::load(&path).unwrap();
        let due = r.take_due(run + min);
        assert_eq!(due.len(), 2);
        assert_eq!(
            due[0].run_at, run,
            "a retry keeps its run (its quarter's end)"
        );
        assert!(r.list.is_empty());
        // Each failure doubles the wait: 2 min after the second attempt, then 4, … up to an hour.
        let mut retry = due[0].clone();
        let mut at = run + min;
        let mut waits = vec![];
        while r.again(retry, at) {
            retry = r.take_due(i64::MAX).pop().unwrap();
            waits.push((retry.next_at - at) / min);
            at = retry.next_at;
        }
        assert_eq!(&waits[..7], &[2, 4, 8, 16, 32, 60, 60]);
        assert!(at - run >= 24 * 60 * min, "given up only after a day");
        assert!(at - run < 25 * 60 * min);
    }

    #[test]
    fn schedule_arguments() {
        let a: ScheduleArg = "weekly=coverage_findings".parse().unwrap();
        assert_eq!(
            a.0,
            Some(Entry {
                period: Period::Weekly,
                report_type: ReportType::CoverageFindings
            })
        );
        let e: ScheduleArg = "every:2s=blockers_digest".parse().unwrap();
        assert_eq!(e.0.unwrap().key(), "every:2s=blockers_digest");
        assert!("hourly=cso".parse::<ScheduleArg>().is_err());
        assert!("daily=weekly_thing".parse::<ScheduleArg>().is_err());
        assert!("every:0s=cso".parse::<ScheduleArg>().is_err());
        assert!(entries(&[a, "none".parse().unwrap()]).is_empty());
    }

    #[test]
    fn missed_runs_collapse_into_one_and_fresh_entries_wait() {
        let daily = Entry {
            period: Period::Daily,
            report_type: ReportType::BlockersDigest,
        };
        let mut last = BTreeMap::new();
        let now = t("2026-11-21T10:00:00Z");
        let (d, next) = due(&[daily], &mut last, now, 6);
        assert!(d.is_empty(), "a new entry waits for its first due time");
        assert_eq!(
            next,
            t("2026-11-21T11:00:00Z").min(t("2026-11-22T06:00:00Z"))
        );
        // Three days later (the reporter was down): due once.
        let later = t("2026-11-24T10:00:00Z");
        let (d, _) = due(&[daily], &mut last, later, 6);
        assert_eq!(d, [daily]);
    }
}
