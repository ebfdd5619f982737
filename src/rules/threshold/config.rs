//! `type = "threshold"` as written, and its validation into a [`ThresholdSpec`].

use std::sync::Arc;

use serde::Deserialize;

use super::ThresholdSpec;
use crate::config::Issues;
use crate::config::units::Duration;
use crate::profile::PointKind;
use crate::rules::condition::Delays;
use crate::rules::config::{
    Number, Parsed, RuleCx, RuleKind, TypeConfig, first_misfit, kind_name, nanos,
};

/// The keys of a `type = "threshold"` rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::rules) struct ThresholdConfig {
    /// A numeric point (gauge, counter or numeric state).
    point: String,
    /// High limit: crossed when the value is strictly above it.
    #[serde(default)]
    above: Option<Number>,
    /// Low limit: crossed when the value is strictly below it.
    #[serde(default)]
    below: Option<Number>,
    /// With one limit: the level that clears it (default: the limit).
    #[serde(default)]
    clear: Option<Number>,
    /// With both limits: where a high excursion clears (default `above`).
    #[serde(default)]
    clear_above: Option<Number>,
    /// With both limits: where a low excursion clears (default `below`).
    #[serde(default)]
    clear_below: Option<Number>,
    /// On-delay: the condition must hold this long (default 0).
    #[serde(rename = "for", default)]
    on_delay: Option<Duration>,
    /// Off-delay: the condition must stay clear this long (default 0).
    #[serde(default)]
    clear_for: Option<Duration>,
}

impl TypeConfig for ThresholdConfig {
    fn validate<'a>(self, cx: &RuleCx<'a>, issues: &mut Issues) -> Parsed<'a> {
        let before = issues.errors.len();
        let above = self.above.map(|n| n.0);
        let below = self.below.map(|n| n.0);
        if above.is_none() && below.is_none() {
            cx.err(issues, "", "a threshold rule needs `above` and/or `below`");
            return None;
        }
        let both = above.is_some() && below.is_some();
        if both && self.clear.is_some() {
            cx.err(
                issues,
                "clear",
                "with both `above` and `below`, write `clear_above` and `clear_below` (`clear` is for one limit)",
            );
        }
        if self.clear.is_some() && (self.clear_above.is_some() || self.clear_below.is_some()) {
            cx.err(
                issues,
                "clear",
                "write `clear` or `clear_above`/`clear_below`, not both",
            );
        }
        if self.clear_above.is_some() && above.is_none() {
            cx.err(issues, "clear_above", "`clear_above` needs `above`");
        }
        if self.clear_below.is_some() && below.is_none() {
            cx.err(issues, "clear_below", "`clear_below` needs `below`");
        }
        let clear_key = |specific: &'static str| {
            if self.clear.is_some() {
                "clear"
            } else {
                specific
            }
        };
        let clear_above = match above {
            Some(a) => {
                let v = self
                    .clear_above
                    .or(self.clear.filter(|_| !both))
                    .map_or(a, |n| n.0);
                if v > a {
                    cx.err(
                        issues,
                        clear_key("clear_above"),
                        format!(
                            "with above = {a}, the clear level must be at or below {a} (the value falls back to it), found {v}"
                        ),
                    );
                }
                v
            }
            None => f64::INFINITY,
        };
        let clear_below = match below {
            Some(b) => {
                let v = self
                    .clear_below
                    .or(self.clear.filter(|_| !both))
                    .map_or(b, |n| n.0);
                if v < b {
                    cx.err(
                        issues,
                        clear_key("clear_below"),
                        format!(
                            "with below = {b}, the clear level must be at or above {b} (the value recovers to it), found {v}"
                        ),
                    );
                }
                v
            }
            None => f64::NEG_INFINITY,
        };
        if let (Some(a), Some(b)) = (above, below) {
            if b >= a {
                cx.err(
                    issues,
                    "below",
                    format!("`below` ({b}) must be less than `above` ({a})"),
                );
            } else if clear_below > clear_above {
                cx.err(
                    issues,
                    "clear_below",
                    format!(
                        "the clear levels overlap: clear_below ({clear_below}) must not exceed clear_above ({clear_above})"
                    ),
                );
            }
        }
        let with = cx.with_point(&self.point, issues)?;
        if let Some(m) = first_misfit(&with, |a, p| {
            if matches!(p.kind, PointKind::Alarm | PointKind::Event) {
                return Some(format!(
                    "point {:?} of asset {} is {} point (true or false): use type = \"state\" with equals = true",
                    self.point,
                    a.id,
                    kind_name(p.kind)
                ));
            }
            (!p.numeric).then(|| {
                format!(
                    "point {:?} of asset {} is not written as a number (a state without `output = \"integer\"` is a string): compare it with type = \"state\" and equals, or declare output = \"integer\" in its profile",
                    self.point, a.id
                )
            })
        }) {
            cx.err(issues, "point", m);
        }
        if issues.errors.len() > before {
            return None;
        }
        let spec = ThresholdSpec {
            point: Arc::from(self.point.as_str()),
            above,
            below,
            clear_above,
            clear_below,
            delays: Delays {
                on_ns: nanos(self.on_delay),
                off_ns: nanos(self.clear_for),
            },
        };
        Some((
            RuleKind::Threshold(spec),
            with.into_iter().map(|(a, _)| a).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::config::tests::rule_errors as one;

    #[test]
    fn validation_errors() {
        assert_eq!(
            one(
                "type = \"threshold\"\npoint = \"discharge_pressure_bar\"\nabove = 80\nclear = 85\n"
            ),
            [
                "rules.toml: rules[0].clear: with above = 80, the clear level must be at or below 80 (the value falls back to it), found 85"
            ]
        );
        assert_eq!(
            one(
                "type = \"threshold\"\npoint = \"discharge_pressure_bar\"\nbelow = 2\nabove = 8\nclear = 3\n"
            ),
            [
                "rules.toml: rules[0].clear: with both `above` and `below`, write `clear_above` and `clear_below` (`clear` is for one limit)"
            ]
        );
    }
}
