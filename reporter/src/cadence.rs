//! The review cadence: reports generated and delivered for every tenant on a schedule (by
//! default a daily blockers digest, a weekly coverage and findings review, a monthly executive
//! report and a quarterly readiness archive).
//!
//! The last run of each schedule entry is kept in `<state-dir>/cadence.json`, so a restart
//! neither repeats a run nor loses one: runs missed while the reporter was down collapse into
//! one catch-up run at start.

use crate::center::{Center, Trigger};
use crate::schedule::{Entry, Period, archive_instant, next_after};
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
        let runs = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(LastRuns {
            path: path.to_owned(),
            runs,
        })
    }

    fn save(&self) -> Result<()> {
        crate::store::write_atomic(&self.path, &serde_json::to_vec_pretty(&self.runs)?)
    }
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
            // The quarterly archive is as of the quarter's end (with the cadence's token).
            let as_of = archive_instant(e.period, now).and_then(|at| {
                center
                    .as_of()
                    .cadence(aispm_schemas::Timestamp(at.timestamp_millis()))
            });
            tracing::info!(schedule = %e.key(), tenants = tenants.len(), "Running a scheduled report.");
            for tenant in tenants {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                match center
                    .generate(
                        &tenant,
                        e.report_type,
                        Trigger::Cadence(e.period),
                        None,
                        as_of.clone(),
                    )
                    .await
                {
                    Ok(r) => {
                        tracing::info!(tenant_id = %tenant, report_id = %r.id, schedule = %e.key(), "Scheduled report generated.")
                    }
                    Err(err) => {
                        tracing::warn!(tenant_id = %tenant, schedule = %e.key(), error = %err, "A scheduled report failed.")
                    }
                }
            }
            last.runs.insert(e.key(), now.timestamp_millis());
        }
        last.save()?;
        // At least 200 ms on: a clock stepped back must not make this spin.
        let soonest = clock.now().plus(Duration::from_millis(200));
        let wake = aispm_schemas::Timestamp(next.timestamp_millis()).max(soonest);
        tokio::select! {
            _ = clock.sleep_until(wake) => {}
            _ = shutdown.cancelled() => return Ok(()),
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
