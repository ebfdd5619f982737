//! `type = "calendar"` as written, and its validation into a [`CalendarSpec`].

use serde::Deserialize;

use std::sync::Arc;

use super::{CalendarSpec, DoneAnd, DoneWhen, Every, Limit, parse_start};
use crate::config::Issues;
use crate::config::units::Duration;
use crate::rules::config::{
    Number, Parsed, RuleCx, RuleKind, StateValues, TypeConfig, check_values_fit, kind_name, nanos,
};
use crate::rules::state::StateSet;

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
    /// What doing the job looks like: a run of the asset's own telemetry that completes the
    /// occurrence (see `calendar/done.rs`).
    #[serde(default)]
    done_when: Option<DoneWhenConfig>,
}

/// `done_when = { point, equals, for, and = { point, above | below } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DoneWhenConfig {
    /// A point of the asset (every matched asset must have it).
    point: String,
    /// The value, or values, that the job shows as.
    equals: StateValues,
    /// How long the condition must hold continuously.
    #[serde(rename = "for")]
    hold: Duration,
    /// A numeric point of the same asset that must hold too, the whole time.
    #[serde(default, rename = "and")]
    also: Option<DoneAndConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DoneAndConfig {
    point: String,
    #[serde(default)]
    above: Option<Number>,
    #[serde(default)]
    below: Option<Number>,
}

impl DoneWhenConfig {
    /// Every matched asset must have the points: a calendar rule runs on all of them, and a
    /// job it could never see done would stay open for ever.
    fn validate(self, cx: &RuleCx<'_>, issues: &mut Issues) -> Option<DoneWhen> {
        let before = issues.errors.len();
        for a in cx.matched {
            match a.points.iter().find(|p| *p.name == *self.point) {
                None => cx.err(
                    issues,
                    "done_when.point",
                    format!(
                        "asset {} (profile {}) has no point {:?}: every asset of a calendar rule with done_when must have it",
                        a.id, a.profile, self.point
                    ),
                ),
                Some(p) => {
                    if let Err(e) = check_values_fit(&self.equals.0, p) {
                        cx.err(issues, "done_when.equals", format!("asset {}: {e}", a.id));
                    }
                }
            }
        }
        let and = match self.also {
            None => None,
            Some(c) => {
                let limit = match (c.above, c.below) {
                    (Some(a), None) => Some(Limit::Above(a.0)),
                    (None, Some(b)) => Some(Limit::Below(b.0)),
                    _ => {
                        cx.err(
                            issues,
                            "done_when.and",
                            "expected exactly one of `above` and `below`",
                        );
                        None
                    }
                };
                for a in cx.matched {
                    match a.points.iter().find(|p| *p.name == *c.point) {
                        None => cx.err(
                            issues,
                            "done_when.and.point",
                            format!(
                                "asset {} (profile {}) has no point {:?}: every asset of a calendar rule with done_when must have it",
                                a.id, a.profile, c.point
                            ),
                        ),
                        Some(p) if !p.numeric => cx.err(
                            issues,
                            "done_when.and.point",
                            format!(
                                "point {:?} of asset {} is {} point, not a number: `and` compares numbers",
                                c.point,
                                a.id,
                                kind_name(p.kind)
                            ),
                        ),
                        Some(_) => {}
                    }
                }
                limit.map(|limit| DoneAnd {
                    point: Arc::from(c.point.as_str()),
                    limit,
                })
            }
        };
        if issues.errors.len() > before {
            return None;
        }
        Some(DoneWhen {
            point: Arc::from(self.point.as_str()),
            equals: StateSet(self.equals.0),
            for_ns: nanos(Some(self.hold)),
            and,
        })
    }
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
        let done_when = match self.done_when {
            Some(d) => Some(d.validate(cx, issues)?),
            None => None,
        };
        let spec = CalendarSpec {
            every,
            every_text: self.every.trim().to_string(),
            start,
            tz,
            lead_ns,
            done_when,
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

#[cfg(test)]
mod done_when_tests {
    use crate::rules::config::tests::{parse, rule_errors as one};

    #[test]
    fn parses() {
        let (rules, _) = parse(
            "[[rules]]\nid = \"run\"\ntype = \"calendar\"\nmatch = { device_type = \"pump\" }\nevery = \"1w\"\nstart = \"2026-01-05T09:00:00\"\ndone_when = { point = \"mode\", equals = [\"run\", \"auto\"], for = \"30m\", and = { point = \"discharge_pressure_bar\", above = 3 } }\n",
        )
        .unwrap();
        assert_eq!(
            rules[0].describe(),
            "every 1w from 2026-01-05T09:00:00+08:00, done when mode = run, auto for 30m and discharge_pressure_bar > 3 -> normal inspection"
        );
    }

    #[test]
    fn validation_errors() {
        let cal = "type = \"calendar\"\nevery = \"1w\"\nstart = \"2026-01-05\"\n";
        // Every matched asset must have the point (the lift has no `mode`).
        assert_eq!(
            one(&format!(
                "{cal}done_when = {{ point = \"mode\", equals = \"run\", for = \"30m\" }}\n"
            )),
            [
                "rules.toml: rules[0].done_when.point: asset EL-1 (profile elevator) has no point \"mode\": every asset of a calendar rule with done_when must have it"
            ]
        );
        let pumps = format!("{cal}match = {{ device_type = \"pump\" }}\n");
        assert_eq!(
            one(&format!(
                "{pumps}done_when = {{ point = \"fault\", equals = \"run\", for = \"30m\", and = {{ point = \"mode\", above = 1, below = 3 }} }}\n"
            )),
            [
                "rules.toml: rules[0].done_when.equals: asset P-1: point \"fault\" is an alarm point: expected true or false, found \"run\"",
                "rules.toml: rules[0].done_when.equals: asset P-2: point \"fault\" is an alarm point: expected true or false, found \"run\"",
                "rules.toml: rules[0].done_when.and: expected exactly one of `above` and `below`",
                "rules.toml: rules[0].done_when.and.point: point \"mode\" of asset P-1 is a state point, not a number: `and` compares numbers",
                "rules.toml: rules[0].done_when.and.point: point \"mode\" of asset P-2 is a state point, not a number: `and` compares numbers"
            ]
        );
        assert_eq!(
            one(&format!(
                "{pumps}done_when = {{ point = \"mode\", equals = \"run\" }}\n"
            )),
            ["rules.toml: rules[0].done_when.for: required key is missing"]
        );
    }
}
