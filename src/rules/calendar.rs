//! `type = "calendar"`: an inspection every `every` per matched asset, regardless of
//! telemetry, raised `lead` early.
//!
//! Due dates are `start + k * every` for k = 1, 2, ...: `start` is the reference (the last
//! inspection, or commissioning), so the first due date is one period after it. Calendar
//! periods (`1mo`, `3mo`, `1y`) are month arithmetic on the local date in the gateway time zone,
//! always counted from `start` so month ends do not drift (Jan 31, Feb 28, Mar 31, ...). Due
//! dates that passed while the gateway was down fire once at start-up, not once each.

use std::str::FromStr;

use chrono::{DateTime, Datelike, LocalResult, Months, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::threshold::fmt_duration_ns;

pub(in crate::rules) mod config;
pub mod done;

pub use done::{DoneAnd, DoneProgress, DoneWhen, Limit};

/// Why `every` is not a period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("expected a period greater than zero and at most 100 years, found {0:?}")]
    OutOfRange(String),
    #[error(
        "expected a period such as \"15d\", \"1w\", or calendar months and years \"1mo\", \"3mo\", \"1y\", found {0:?}"
    )]
    Invalid(String),
}

/// Why `start` is not a usable reference date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("expected a start between the years 1970 and 2200, found {0:?}")]
    OutOfRange(String),
    /// A local time skipped by a daylight-saving change (and the next two hours too).
    #[error("{text:?} does not exist in {tz}")]
    Nonexistent { text: String, tz: Tz },
    #[error(
        "expected an RFC 3339 date-time such as \"2026-01-01T08:00:00+08:00\", or a local date or date-time in the gateway time zone such as \"2026-01-01\" or \"2026-01-01T08:00:00\", found {0:?}"
    )]
    Invalid(String),
}

/// A period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    /// A fixed length in nanoseconds (`15d`, `1w`).
    Fixed(i64),
    /// Calendar months (`1mo`, `3mo`; `1y` is 12).
    Months(u32),
}

impl FromStr for Every {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Every, PeriodError> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let calendar = match unit.trim() {
            "mo" | "month" | "months" | "M" => Some(1),
            "y" | "yr" | "year" | "years" => Some(12),
            _ => None,
        };
        if let (Some(per), Ok(n)) = (calendar, num.parse::<u32>()) {
            return match n.checked_mul(per) {
                Some(m) if m > 0 && m <= 1200 => Ok(Every::Months(m)),
                _ => Err(PeriodError::OutOfRange(s.to_string())),
            };
        }
        let d = humantime::parse_duration(t).map_err(|_| PeriodError::Invalid(s.to_string()))?;
        match i64::try_from(d.as_nanos()) {
            Ok(ns) if ns > 0 && ns <= 100 * 366 * 86_400_000_000_000 => Ok(Every::Fixed(ns)),
            _ => Err(PeriodError::OutOfRange(s.to_string())),
        }
    }
}

/// Parses `start`: an RFC 3339 date-time with an offset, or a local date or date-time in the
/// gateway time zone (`2026-01-01`, `2026-01-01T08:00:00`, `2026-01-01 08:00`).
pub fn parse_start(s: &str, tz: Tz) -> Result<DateTime<Utc>, StartError> {
    let start = parse_start_any(s, tz)?;
    // Nanosecond arithmetic on due dates holds for 1677-2262; keep well inside it.
    if !(1970..=2200).contains(&chrono::Datelike::year(&start)) {
        return Err(StartError::OutOfRange(s.to_string()));
    }
    Ok(start)
}

fn parse_start_any(s: &str, tz: Tz) -> Result<DateTime<Utc>, StartError> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    let local = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    });
    match local {
        Some(n) => resolve_local(tz, n).ok_or_else(|| StartError::Nonexistent {
            text: s.to_string(),
            tz,
        }),
        None => Err(StartError::Invalid(s.to_string())),
    }
}

/// A local time as an instant: the earlier of an ambiguous (DST fall-back) time, and the
/// first valid time after a skipped (spring-forward) one.
fn resolve_local(tz: Tz, n: NaiveDateTime) -> Option<DateTime<Utc>> {
    for shift in 0..=4 {
        let n = n + chrono::Duration::minutes(30 * shift);
        match tz.from_local_datetime(&n) {
            LocalResult::Single(d) => return Some(d.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, _) => return Some(a.with_timezone(&Utc)),
            LocalResult::None => continue,
        }
    }
    None
}

/// A validated calendar rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CalendarSpec {
    pub every: Every,
    pub every_text: String,
    pub start: DateTime<Utc>,
    pub tz: Tz,
    pub lead_ns: i64,
    /// What doing the job looks like (see `done`).
    pub done_when: Option<DoneWhen>,
}

impl CalendarSpec {
    /// The k-th due date (k >= 1), ns since epoch.
    pub fn due(&self, k: i64) -> Option<i64> {
        let start = self.start.timestamp_nanos_opt()?;
        match self.every {
            Every::Fixed(ns) => start.checked_add(ns.checked_mul(k)?),
            Every::Months(m) => {
                let local = self.start.with_timezone(&self.tz).naive_local();
                let months = u32::try_from(k.checked_mul(i64::from(m))?).ok()?;
                let date = local.date().checked_add_months(Months::new(months))?;
                resolve_local(self.tz, date.and_time(local.time()))?.timestamp_nanos_opt()
            }
        }
    }

    /// The first due date strictly after `t` (never `start` itself).
    pub fn first_due_after(&self, t: i64) -> Option<i64> {
        let start = self.start.timestamp_nanos_opt()?;
        let mut k = match self.every {
            Every::Fixed(ns) => {
                if t < start {
                    1
                } else {
                    (t - start) / ns + 1
                }
            }
            Every::Months(m) => {
                let s = self.start.with_timezone(&self.tz);
                let n = DateTime::from_timestamp_nanos(t).with_timezone(&self.tz);
                let months = (i64::from(n.year()) - i64::from(s.year())) * 12
                    + i64::from(n.month())
                    - i64::from(s.month());
                (months / i64::from(m)).max(1)
            }
        };
        while k > 1 && self.due(k - 1)? > t {
            k -= 1;
        }
        while self.due(k)? <= t {
            k += 1;
        }
        self.due(k)
    }

    /// Identifies the schedule in saved state: a changed `every` or `start` starts over.
    pub fn fingerprint(&self) -> String {
        format!("{}|{}", self.every_text, self.start.to_rfc3339())
    }

    /// A due date as people there read it: RFC 3339 in the gateway time zone.
    pub fn format(&self, ns: i64) -> String {
        DateTime::from_timestamp_nanos(ns)
            .with_timezone(&self.tz)
            .to_rfc3339()
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "every {} from {}",
            self.every_text,
            self.start.with_timezone(&self.tz).to_rfc3339()
        );
        if self.lead_ns > 0 {
            s.push_str(&format!(", raised {} early", fmt_duration_ns(self.lead_ns)));
        }
        if let Some(d) = &self.done_when {
            s.push_str(&format!(", done when {}", d.describe()));
        }
        s
    }
}

/// The state of a calendar rule on one asset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CalendarState {
    /// The next due date not fired yet (ns); `None` until the first tick.
    pub next_due: Option<i64>,
    /// The schedule `next_due` belongs to ([`CalendarSpec::fingerprint`]).
    #[serde(default)]
    pub schedule: String,
    /// `done_when`: runs and the occurrences they complete. Boxed: every rule instance's state
    /// is as large as its largest kind, and this would triple it for all (the engine's hot
    /// path walks instances, so their size is its speed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<Box<DoneProgress>>,
}

impl CalendarState {
    /// A tick at `now`. Returns the due date to fire for, if any (the caller holds it back
    /// while the rule is suppressed by calling again later).
    pub fn tick(&mut self, spec: &CalendarSpec, now: i64, suppressed: bool) -> (Option<i64>, bool) {
        let mut dirty = false;
        let fp = spec.fingerprint();
        if self.next_due.is_none() || self.schedule != fp {
            // No saved state (or a changed schedule): due dates before now are not known to be
            // missed; the next one is the first ahead.
            self.next_due = spec.first_due_after(now);
            self.schedule = fp;
            dirty = true;
        }
        let Some(due) = self.next_due else {
            return (None, dirty);
        };
        if suppressed || now < due.saturating_sub(spec.lead_ns) {
            return (None, dirty);
        }
        // Fired once for this due date and any missed before now.
        self.next_due = spec.first_due_after(due.max(now));
        (Some(due), true)
    }

    pub fn deadline(&self, spec: &CalendarSpec) -> Option<i64> {
        self.next_due.map(|d| d.saturating_sub(spec.lead_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: i64 = 1_000_000_000;
    const D: i64 = 86_400 * S;

    fn spec(every: &str, start: &str, tz: &str, lead_ns: i64) -> CalendarSpec {
        let tz: Tz = tz.parse().unwrap();
        CalendarSpec {
            every: every.parse().unwrap(),
            every_text: every.into(),
            start: parse_start(start, tz).unwrap(),
            tz,
            lead_ns,
            done_when: None,
        }
    }

    fn ns(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn parses_periods() {
        assert_eq!("15d".parse(), Ok(Every::Fixed(15 * D)));
        assert_eq!("1w".parse(), Ok(Every::Fixed(7 * D)));
        assert_eq!("3mo".parse(), Ok(Every::Months(3)));
        assert_eq!("1y".parse(), Ok(Every::Months(12)));
        assert!("0d".parse::<Every>().is_err());
        assert!("soon".parse::<Every>().is_err());
    }

    #[test]
    fn months_in_the_gateway_time_zone_do_not_drift() {
        let s = spec("1mo", "2026-01-31T09:00:00", "Asia/Shanghai", 0);
        assert_eq!(s.due(1), Some(ns("2026-02-28T09:00:00+08:00")));
        assert_eq!(s.due(2), Some(ns("2026-03-31T09:00:00+08:00")));
        assert_eq!(s.due(13), Some(ns("2027-02-28T09:00:00+08:00")));
        assert_eq!(
            s.first_due_after(ns("2026-03-31T09:00:00+08:00")),
            Some(ns("2026-04-30T09:00:00+08:00"))
        );
        assert_eq!(
            s.first_due_after(ns("2020-01-01T00:00:00Z")),
            Some(ns("2026-02-28T09:00:00+08:00")),
            "the first due date is one period after start"
        );
        // Across a DST change, the local time stays.
        let s = spec("1mo", "2026-02-15", "Europe/Berlin", 0);
        assert_eq!(s.due(1), Some(ns("2026-03-15T00:00:00+01:00")));
        assert_eq!(s.due(2), Some(ns("2026-04-15T00:00:00+02:00")));
    }

    #[test]
    fn start_forms() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        assert_eq!(
            parse_start("2026-01-01", tz).unwrap(),
            parse_start("2025-12-31T16:00:00Z", tz).unwrap()
        );
        assert_eq!(
            parse_start("2026-01-01 08:30", tz).unwrap(),
            parse_start("2026-01-01T08:30:00+08:00", tz).unwrap()
        );
        assert!(parse_start("next monday", tz).is_err());
    }

    #[test]
    fn error_messages() {
        let every = |s: &str| s.parse::<Every>().unwrap_err().to_string();
        assert_eq!(
            every("0d"),
            "expected a period greater than zero and at most 100 years, found \"0d\""
        );
        assert_eq!(
            every("1201mo"),
            "expected a period greater than zero and at most 100 years, found \"1201mo\""
        );
        assert_eq!(
            every("soon"),
            "expected a period such as \"15d\", \"1w\", or calendar months and years \"1mo\", \"3mo\", \"1y\", found \"soon\""
        );
        let start = |s: &str| parse_start(s, Tz::UTC).unwrap_err().to_string();
        assert_eq!(
            start("next monday"),
            "expected an RFC 3339 date-time such as \"2026-01-01T08:00:00+08:00\", or a local date or date-time in the gateway time zone such as \"2026-01-01\" or \"2026-01-01T08:00:00\", found \"next monday\""
        );
        assert_eq!(
            start("1900-01-01"),
            "expected a start between the years 1970 and 2200, found \"1900-01-01\""
        );
    }

    #[test]
    fn missed_due_dates_fire_once_at_start_up() {
        let s = spec("15d", "2026-01-01T00:00:00Z", "UTC", D);
        let mut st = CalendarState::default();
        let t0 = ns("2026-01-05T00:00:00Z");
        assert_eq!(st.tick(&s, t0, false), (None, true));
        assert_eq!(st.next_due, Some(ns("2026-01-16T00:00:00Z")));
        // Raised a day early.
        assert_eq!(st.tick(&s, ns("2026-01-14T23:59:59Z"), false).0, None);
        assert_eq!(
            st.tick(&s, ns("2026-01-15T00:00:00Z"), false).0,
            Some(ns("2026-01-16T00:00:00Z"))
        );
        assert_eq!(st.next_due, Some(ns("2026-01-31T00:00:00Z")));
        // Down from Jan 20 to Mar 10: Jan 31, Feb 15, Mar 2 passed; one fire, then Mar 17.
        let back = ns("2026-03-10T00:00:00Z");
        assert_eq!(st.tick(&s, back, false).0, Some(ns("2026-01-31T00:00:00Z")));
        assert_eq!(st.next_due, Some(ns("2026-03-17T00:00:00Z")));
        assert_eq!(st.tick(&s, back + S, false).0, None);
    }

    proptest! {
        /// Every due date after `t` found by `first_due_after` is a schedule date, the
        /// smallest one after `t`.
        #[test]
        fn first_due_after_is_the_next_schedule_date(
            months in 1u32..25,
            day in 1u32..29,
            offset_days in -400i64..4000,
        ) {
            let every = format!("{months}mo");
            let s = spec(&every, &format!("2024-01-{day:02}T10:00:00"), "America/New_York", 0);
            let t = s.start.timestamp_nanos_opt().unwrap() + offset_days * D;
            let next = s.first_due_after(t).unwrap();
            prop_assert!(next > t);
            let k = (1..2000).find(|k| s.due(*k) == Some(next));
            prop_assert!(k.is_some());
            let k = k.unwrap();
            if k > 1 {
                prop_assert!(s.due(k - 1).unwrap() <= t);
            }
        }
    }
}
