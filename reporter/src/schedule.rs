//! The report schedule's vocabulary: periods, `--schedule` entries, and when a period next
//! runs. Pure calendar arithmetic; the loop that runs the entries is [`crate::cadence`].

use aispm_schemas::ReportType;
use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use std::time::Duration;

/// How often a report runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
    Quarterly,
    Every(Duration),
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Period::Daily => f.write_str("daily"),
            Period::Weekly => f.write_str("weekly"),
            Period::Monthly => f.write_str("monthly"),
            Period::Quarterly => f.write_str("quarterly"),
            Period::Every(d) => write!(f, "every:{}", humantime::format_duration(*d)),
        }
    }
}

/// One schedule entry: a period and the report type it produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub period: Period,
    pub report_type: ReportType,
}

impl Entry {
    /// The key under which the last run is stored: `daily=blockers_digest`.
    pub fn key(&self) -> String {
        format!("{}={}", self.period, self.report_type)
    }
}

/// A `--schedule` value: an entry, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleArg(pub Option<Entry>);

impl std::str::FromStr for ScheduleArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "none" || s.is_empty() {
            return Ok(ScheduleArg(None));
        }
        let (period, ty) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not PERIOD=TYPE"))?;
        let period = match period.trim() {
            "daily" => Period::Daily,
            "weekly" => Period::Weekly,
            "monthly" => Period::Monthly,
            "quarterly" => Period::Quarterly,
            p => match p.strip_prefix("every:") {
                Some(d) => {
                    let d = humantime::parse_duration(d).map_err(|e| format!("'{d}': {e}"))?;
                    if d < Duration::from_secs(1) {
                        return Err("an every: period must be at least 1s".into());
                    }
                    Period::Every(d)
                }
                None => {
                    return Err(format!(
                        "unknown period '{p}' (daily, weekly, monthly, quarterly or every:<duration>)"
                    ));
                }
            },
        };
        let report_type = ty.trim().parse::<ReportType>()?;
        Ok(ScheduleArg(Some(Entry {
            period,
            report_type,
        })))
    }
}

/// The schedule entries of the `--schedule` values (`none` anywhere disables all).
pub(crate) fn entries(args: &[ScheduleArg]) -> Vec<Entry> {
    if args.iter().any(|a| a.0.is_none()) {
        return vec![];
    }
    args.iter().filter_map(|a| a.0).collect()
}

fn at_hour(date: NaiveDate, hour: u32) -> DateTime<Utc> {
    let naive = date
        .and_hms_opt(hour.min(23), 0, 0)
        .unwrap_or_else(|| date.and_time(chrono::NaiveTime::MIN));
    Utc.from_utc_datetime(&naive)
}

fn first_of_month(year: i32, month: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN)
}

/// The first run of `period` strictly after `after` (calendar periods run at `hour` UTC).
pub(crate) fn next_after(period: Period, after: DateTime<Utc>, hour: u32) -> DateTime<Utc> {
    let day = after.date_naive();
    match period {
        Period::Every(d) => after + ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX),
        Period::Daily => {
            let today = at_hour(day, hour);
            if today > after {
                today
            } else {
                at_hour(day + ChronoDuration::days(1), hour)
            }
        }
        Period::Weekly => {
            let back = i64::from(day.weekday().num_days_from_monday());
            let mut monday = day - ChronoDuration::days(back);
            loop {
                let t = at_hour(monday, hour);
                if t > after {
                    return t;
                }
                monday += ChronoDuration::days(7);
            }
        }
        Period::Monthly | Period::Quarterly => {
            let step = if period == Period::Monthly { 1 } else { 3 };
            let mut year = day.year();
            let mut month = if step == 3 {
                (day.month() - 1) / 3 * 3 + 1
            } else {
                day.month()
            };
            loop {
                let t = at_hour(first_of_month(year, month), hour);
                if t > after {
                    return t;
                }
                month += step;
                if month > 12 {
                    month -= 12;
                    year += 1;
                }
            }
        }
    }
}

/// The instant a run of `period` at `run` is as of: for the quarterly archive, the last
/// millisecond of the quarter that ended before the run (the quarter's end, however late the
/// run); `None` for the other periods, which are as of their run.
pub(crate) fn archive_instant(period: Period, run: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (period == Period::Quarterly).then(|| {
        let day = run.date_naive();
        let quarter = first_of_month(day.year(), (day.month() - 1) / 3 * 3 + 1);
        Utc.from_utc_datetime(&quarter.and_time(chrono::NaiveTime::MIN))
            - ChronoDuration::milliseconds(1)
    })
}

/// When a failed attempt is retried (report deliveries, webhook messages): the delay before
/// attempt `n + 1` after attempt `n` failed, doubling from `initial` up to `max`.
pub(crate) fn backoff(n: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(n.saturating_sub(1).min(20));
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(1, s(30), s(600)), s(30));
        assert_eq!(backoff(2, s(30), s(600)), s(60));
        assert_eq!(backoff(3, s(30), s(600)), s(120));
        assert_eq!(backoff(6, s(30), s(600)), s(600));
        assert_eq!(backoff(99, s(30), s(600)), s(600));
    }
}
