//! Local days in the gateway's time zone: where a span is cut, and which day a counter's
//! readings count on.

use std::sync::Arc;

use chrono::{DateTime, LocalResult, NaiveDate, TimeZone};
use chrono_tz::Tz;

/// One local day: its date and the instants it starts and ends at (Unix ms, end exclusive). A
/// day is 23 or 25 hours long where the clocks change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub label: Arc<str>,
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Day {
    /// The local day holding the instant `ms`.
    pub fn at(tz: Tz, ms: i64) -> Day {
        let utc = DateTime::from_timestamp_millis(ms).unwrap_or_default();
        let date = utc.with_timezone(&tz).date_naive();
        let next = date.succ_opt().unwrap_or(date);
        Day {
            label: date.format("%Y-%m-%d").to_string().into(),
            start_ms: first_instant(tz, date),
            end_ms: first_instant(tz, next).max(ms + 1),
        }
    }

    /// Whether `ms` lies in this day.
    #[inline]
    pub fn holds(&self, ms: i64) -> bool {
        ms >= self.start_ms && ms < self.end_ms
    }
}

/// The first instant of a local date: its midnight, or where a clock change skips midnight
/// (some zones move their clocks at 00:00), the first local time after the gap. An ambiguous
/// midnight (the clocks went back across it) is its earlier instant.
fn first_instant(tz: Tz, date: NaiveDate) -> i64 {
    let Some(midnight) = date.and_hms_opt(0, 0, 0) else {
        return 0;
    };
    let mut t = midnight;
    // Gaps are an hour at most in practice; look a few hours ahead in quarter hours.
    for _ in 0..(4 * 4) {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => return x.timestamp_millis(),
            LocalResult::None => t += chrono::Duration::minutes(15),
        }
    }
    midnight.and_utc().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn days_follow_the_zone_and_its_clock_changes() {
        let sh: Tz = "Asia/Shanghai".parse().unwrap();
        let d = Day::at(sh, ms("2026-11-30T17:00:00Z"));
        // 01:00 on 1 December in Shanghai.
        assert_eq!(&*d.label, "2026-12-01");
        assert_eq!(d.start_ms, ms("2026-11-30T16:00:00Z"));
        assert_eq!(d.end_ms - d.start_ms, 24 * 3_600_000);
        // Berlin: 29 March 2026 has 23 hours, 25 October 26.
        let be: Tz = "Europe/Berlin".parse().unwrap();
        let spring = Day::at(be, ms("2026-03-29T12:00:00Z"));
        assert_eq!(spring.end_ms - spring.start_ms, 23 * 3_600_000);
        let autumn = Day::at(be, ms("2026-10-25T12:00:00Z"));
        assert_eq!(autumn.end_ms - autumn.start_ms, 25 * 3_600_000);
        assert_eq!(autumn.start_ms, ms("2026-10-24T22:00:00Z"));
        // Havana moves its clocks at midnight: 8 March 2026 starts at 01:00 local.
        let ha: Tz = "America/Havana".parse().unwrap();
        let d = Day::at(ha, ms("2026-03-08T12:00:00Z"));
        assert_eq!(&*d.label, "2026-03-08");
        assert_eq!(d.start_ms, ms("2026-03-08T05:00:00Z"));
        assert!(d.holds(d.start_ms) && !d.holds(d.end_ms));
    }
}
