//! `type = "state"` as written, and its validation into a [`StateSpec`].

use std::sync::Arc;

use serde::Deserialize;

use super::{StateMode, StateSet, StateSpec};
use crate::config::Issues;
use crate::config::units::Duration;
use crate::profile::PointKind;
use crate::rules::condition::Delays;
use crate::rules::config::{
    Parsed, RuleCx, RuleKind, StateValues, TypeConfig, check_values_fit, kind_name, nanos,
};

/// The most entries a count window may need (`count`).
pub const MAX_COUNT: u32 = 1000;

/// The keys of a `type = "state"` rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::rules) struct StateConfig {
    /// A state, alarm or event point.
    point: String,
    /// Default for alarm and event points: true.
    #[serde(default)]
    equals: Option<StateValues>,
    /// Held this long (not with `count`).
    #[serde(rename = "for", default)]
    on_delay: Option<Duration>,
    /// Off-delay (not with `count`).
    #[serde(default)]
    clear_for: Option<Duration>,
    /// Entries into the state (rising edges; every matching sample of an event point)...
    #[serde(default)]
    count: Option<u32>,
    /// ...within this sliding window.
    #[serde(default)]
    within: Option<Duration>,
}

impl TypeConfig for StateConfig {
    fn validate<'a>(self, cx: &RuleCx<'a>, issues: &mut Issues) -> Parsed<'a> {
        let before = issues.errors.len();
        let mode = match (self.count, self.within) {
            (Some(_), _) if self.on_delay.is_some() => {
                cx.err(
                    issues,
                    "count",
                    "`for` and `count` do not combine: `for` holds one state for a time, `count` counts entries into it `within` a window",
                );
                return None;
            }
            (Some(_), _) if self.clear_for.is_some() => {
                cx.err(
                    issues,
                    "clear_for",
                    "`clear_for` does not apply to a count window",
                );
                return None;
            }
            (Some(n), Some(w)) => {
                if n == 0 || n > MAX_COUNT {
                    cx.err(
                        issues,
                        "count",
                        format!("expected a count from 1 to {MAX_COUNT}, found {n}"),
                    );
                    return None;
                }
                let within_ns = nanos(Some(w));
                if within_ns <= 0 {
                    cx.err(issues, "within", "expected a window longer than zero");
                    return None;
                }
                StateMode::Count {
                    count: n,
                    within_ns,
                }
            }
            (Some(_), None) => {
                cx.err(
                    issues,
                    "within",
                    "required with `count`: the window, such as \"24h\"",
                );
                return None;
            }
            (None, Some(_)) => {
                cx.err(
                    issues,
                    "count",
                    "required with `within`: how many entries, such as 3",
                );
                return None;
            }
            (None, None) => StateMode::Hold(Delays {
                on_ns: nanos(self.on_delay),
                off_ns: nanos(self.clear_for),
            }),
        };
        let with = cx.with_point(&self.point, issues)?;
        for (a, p) in &with {
            let momentary = matches!(p.kind, PointKind::Alarm | PointKind::Event);
            match &self.equals {
                None if !momentary => {
                    cx.err(
                        issues,
                        "equals",
                        format!(
                            "required: point {:?} of asset {} is {} point (only alarm and event points default to equals = true)",
                            self.point,
                            a.id,
                            kind_name(p.kind)
                        ),
                    );
                    break;
                }
                None => {}
                Some(v) => {
                    if let Err(e) = check_values_fit(&v.0, p) {
                        cx.err(issues, "equals", format!("asset {}: {e}", a.id));
                        break;
                    }
                }
            }
            if p.kind == PointKind::Event
                && matches!(mode, StateMode::Hold(d) if d != Delays::default())
            {
                cx.err(
                    issues,
                    if self.on_delay.is_some() { "for" } else { "clear_for" },
                    format!(
                        "point {:?} of asset {} is an event point (a momentary occurrence that never lasts or clears): use `count` and `within`, or neither",
                        self.point, a.id
                    ),
                );
                break;
            }
        }
        if issues.errors.len() > before {
            return None;
        }
        let spec = StateSpec {
            point: Arc::from(self.point.as_str()),
            equals: self.equals.map(|v| StateSet(v.0)),
            mode,
        };
        Some((
            RuleKind::State(spec),
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
                "type = \"state\"\npoint = \"door_state\"\nequals = \"fault\"\nfor = \"1m\"\ncount = 3\nwithin = \"1d\"\n"
            ),
            [
                "rules.toml: rules[0].count: `for` and `count` do not combine: `for` holds one state for a time, `count` counts entries into it `within` a window"
            ]
        );
        assert_eq!(
            one(
                "type = \"state\"\npoint = \"fault\"\nequals = \"open\"\nmatch = { device_type = \"pump\" }\n"
            ),
            [
                "rules.toml: rules[0].equals: asset P-1: point \"fault\" is an alarm point: expected true or false, found \"open\""
            ]
        );
    }
}
