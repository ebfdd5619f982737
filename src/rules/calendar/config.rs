//! `type = "calendar"` as written, and its validation into a [`CalendarSpec`].

use serde::Deserialize;

use super::{CalendarSpec, Every, parse_start};
use crate::config::Issues;
use crate::config::units::Duration;
use crate::rules::config::{Parsed, RuleCx, RuleKind, TypeConfig, nanos};

/// The keys of a `type = "calendar"` rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::rules) struct CalendarConfig {
    /// "15d", "1w", or calendar months and years: "1mo", "3mo", "6mo", "1y".
    every: String,
    /// The reference date (the last inspection): RFC 3339, or a local date or date-time in
    /// the gateway time zone. The first due date is `start + every`.
    start: String,
    /// Raised this early (default 0).
    #[serde(default)]
    lead: Option<Duration>,
}

impl TypeConfig for CalendarConfig {
    fn validate<'a>(self, cx: &RuleCx<'a>, issues: &mut Issues) -> Parsed<'a> {
        let tz = match cx.tz {
            Ok(tz) => *tz,
            Err(e) => {
                cx.err(issues, "start", e.to_string());
                return None;
            }
        };
        let every: Every = match self.every.parse() {
            Ok(e) => e,
            Err(e) => {
                cx.err(issues, "every", e.to_string());
                return None;
            }
        };
        let start = match parse_start(&self.start, tz) {
            Ok(s) => s,
            Err(e) => {
                cx.err(issues, "start", e.to_string());
                return None;
            }
        };
        let lead_ns = nanos(self.lead);
        let period_ns = match every {
            Every::Fixed(ns) => ns,
            // The shortest month.
            Every::Months(m) => i64::from(m).saturating_mul(28 * 86_400_000_000_000),
        };
        if lead_ns >= period_ns {
            cx.err(
                issues,
                "lead",
                format!(
                    "the lead must be shorter than the period ({}), found {}",
                    self.every,
                    humantime::format_duration(self.lead.map(|d| d.0).unwrap_or_default())
                ),
            );
            return None;
        }
        let spec = CalendarSpec {
            every,
            every_text: self.every.trim().to_string(),
            start,
            tz,
            lead_ns,
        };
        Some((RuleKind::Calendar(spec), cx.matched.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::config::tests::rule_errors as one;

    #[test]
    fn validation_errors() {
        assert_eq!(
            one("type = \"calendar\"\nevery = \"fortnightly\"\nstart = \"2026-01-01\"\n"),
            [
                "rules.toml: rules[0].every: expected a period such as \"15d\", \"1w\", or calendar months and years \"1mo\", \"3mo\", \"1y\", found \"fortnightly\""
            ]
        );
    }
}
