//! The report's period in the gateway's time zone: `--month YYYY-MM`, or `--from`/`--to` as
//! RFC 3339 times or `YYYY-MM-DD` dates (local midnight).

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// A bad period, said plainly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("{0:?} is not a month: expected YYYY-MM, e.g. 2026-11")]
    Month(String),
    #[error(
        "{0:?} is not a time: expected RFC 3339 (2026-11-01T08:00:00+08:00) or a date (2026-11-01, local midnight)"
    )]
    Time(String),
    #[error("the period is empty: from ({from}) must be before to ({to})")]
    Empty { from: String, to: String },
    #[error("give either --month or both --from and --to")]
    Missing,
    #[error("unknown time zone {0:?} (gateway.timezone)")]
    TimeZone(String),
}

/// The gateway's time zone (`gateway.timezone`).
pub fn time_zone(name: &str) -> Result<Tz, PeriodError> {
    name.parse::<Tz>()
        .map_err(|_| PeriodError::TimeZone(name.to_string()))
}

/// Local midnight at the start of `date`. Where a time-zone change skips midnight, the first
/// local time of that day.
pub fn local_midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let mut t = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..4 {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => return x.with_timezone(&Utc),
            LocalResult::Ambiguous(a, _) => return a.with_timezone(&Utc),
            LocalResult::None => t += Duration::minutes(30),
        }
    }
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// `YYYY-MM`: local midnight of the 1st to local midnight of the next month's 1st.
pub fn month(tz: Tz, s: &str) -> Result<(DateTime<Utc>, DateTime<Utc>), PeriodError> {
    let bad = || PeriodError::Month(s.to_string());
    let (y, m) = s.trim().split_once('-').ok_or_else(bad)?;
    let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let first = NaiveDate::from_ymd_opt(y, m, 1).ok_or_else(bad)?;
    let next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    }
    .ok_or_else(bad)?;
    Ok((local_midnight(tz, first), local_midnight(tz, next)))
}

/// An RFC 3339 time, or a `YYYY-MM-DD` date meaning its local midnight.
pub fn time(tz: Tz, s: &str) -> Result<DateTime<Utc>, PeriodError> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| local_midnight(tz, d))
        .map_err(|_| PeriodError::Time(s.to_string()))
}

/// The period from the command line's or the query's arguments.
pub fn resolve(
    tz: Tz,
    month_arg: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), PeriodError> {
    let (f, t) = match (month_arg, from, to) {
        (Some(m), None, None) => month(tz, m)?,
        (None, Some(f), Some(t)) => (time(tz, f)?, time(tz, t)?),
        _ => return Err(PeriodError::Missing),
    };
    if f >= t {
        return Err(PeriodError::Empty {
            from: f.to_rfc3339(),
            to: t.to_rfc3339(),
        });
    }
    Ok((f, t))
}

/// The local days (`YYYY-MM-DD`, inclusive) that `[from, to)` touches.
pub fn local_days(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> (String, String) {
    let first = from.with_timezone(&tz).date_naive();
    let last_instant = if to > from {
        to - Duration::milliseconds(1)
    } else {
        from
    };
    let last = last_instant.with_timezone(&tz).date_naive();
    let f = |d: NaiveDate| format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
    (f(first), f(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_runs_from_local_midnight_to_local_midnight() {
        let tz = time_zone("Asia/Shanghai").unwrap();
        let (f, t) = month(tz, "2026-11").unwrap();
        assert_eq!(f.to_rfc3339(), "2026-10-31T16:00:00+00:00");
        assert_eq!(t.to_rfc3339(), "2026-11-30T16:00:00+00:00");
        assert_eq!(
            local_days(tz, f, t),
            ("2026-11-01".to_string(), "2026-11-30".to_string())
        );
        let (_, t) = month(tz, "2026-12").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-31T16:00:00+00:00");
        assert_eq!(
            time(tz, "2026-11-02").unwrap().to_rfc3339(),
            "2026-11-01T16:00:00+00:00"
        );
        assert_eq!(
            time(tz, "2026-11-02T08:00:00+08:00").unwrap().to_rfc3339(),
            "2026-11-02T00:00:00+00:00"
        );
    }

    #[test]
    fn bad_periods_are_refused_with_a_reason() {
        let tz = time_zone("UTC").unwrap();
        assert!(matches!(month(tz, "2026-13"), Err(PeriodError::Month(_))));
        assert!(matches!(time(tz, "yesterday"), Err(PeriodError::Time(_))));
        assert!(matches!(
            resolve(tz, None, Some("2026-11-02"), Some("2026-11-01")),
            Err(PeriodError::Empty { .. })
        ));
        assert_eq!(
            resolve(tz, None, Some("2026-11-02"), None),
            Err(PeriodError::Missing)
        );
        assert!(time_zone("Mars/Olympus").is_err());
    }
}
