//! Checks of a rule against the assets it matched, shared by the rule types.

use std::sync::Arc;

use chrono_tz::Tz;

use crate::config::Issues;
use crate::config::units::Duration;
use crate::profile::PointKind;
use crate::rules::state::StateValue;
use crate::rules::types::{AssetInfo, PointInfo};

/// One rule being validated against its matched assets.
pub(in crate::rules) struct RuleCx<'a> {
    pub file: &'a str,
    /// `rules[N]`: the rule's key path in its file.
    pub at: &'a str,
    pub matched: &'a [&'a Arc<AssetInfo>],
    /// The gateway time zone (`[gateway] timezone`), or why it is not one.
    pub tz: &'a Result<Tz, UnknownTimezone>,
}

/// `[gateway] timezone` is not a time zone (calendar rules need one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the [gateway] timezone {0:?} is not an IANA time zone such as \"Asia/Shanghai\" or \"UTC\""
)]
pub(in crate::rules) struct UnknownTimezone(pub String);

/// A value of `equals` that the point can never hold.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("point {point:?} is {kind} point: expected {expected}, found {found}")]
pub(in crate::rules) struct ValueMisfit {
    point: Arc<str>,
    /// `a gauge`, `an alarm`, ...
    kind: &'static str,
    /// What the point's values are: `true or false`, `numbers`.
    expected: &'static str,
    /// The value, as written.
    found: String,
}

pub(super) fn point_of<'a>(a: &'a AssetInfo, name: &str) -> Option<&'a PointInfo> {
    a.points.iter().find(|p| &*p.name == name)
}

pub(super) fn points_hint(a: Option<&Arc<AssetInfo>>) -> String {
    match a {
        Some(a) if !a.points.is_empty() => {
            let names: Vec<&str> = a.points.iter().map(|p| &*p.name).collect();
            format!(" (profile {} has: {})", a.profile, names.join(", "))
        }
        _ => String::new(),
    }
}

/// `a gauge`, `an alarm`, ...
pub(in crate::rules) fn kind_name(k: PointKind) -> &'static str {
    match k {
        PointKind::Gauge => "a gauge",
        PointKind::Counter => "a counter",
        PointKind::State => "a state",
        PointKind::Alarm => "an alarm",
        PointKind::Event => "an event",
    }
}

/// Whether `equals` values can ever match the point: alarms and events are true or false;
/// gauges and counters are numbers; states take anything (names are not known here).
pub(in crate::rules) fn check_values_fit(
    values: &[StateValue],
    p: &PointInfo,
) -> Result<(), ValueMisfit> {
    for v in values {
        let ok = match (p.kind, v) {
            (PointKind::Alarm | PointKind::Event, StateValue::Bool(_)) => true,
            (PointKind::Alarm | PointKind::Event, StateValue::Number(n)) => *n == 0.0 || *n == 1.0,
            (PointKind::Alarm | PointKind::Event, StateValue::Name(_)) => false,
            (PointKind::Gauge | PointKind::Counter, StateValue::Name(_)) => false,
            (PointKind::Gauge | PointKind::Counter, _) => true,
            (PointKind::State, _) => true,
        };
        if !ok {
            let expected = match p.kind {
                PointKind::Alarm | PointKind::Event => "true or false",
                _ => "numbers",
            };
            return Err(ValueMisfit {
                point: p.name.clone(),
                kind: kind_name(p.kind),
                expected,
                found: match v {
                    StateValue::Name(s) => format!("{s:?}"),
                    other => crate::rules::state::value_text(other),
                },
            });
        }
    }
    Ok(())
}

pub(in crate::rules) fn nanos(d: Option<Duration>) -> i64 {
    d.map_or(0, |d| i64::try_from(d.0.as_nanos()).unwrap_or(i64::MAX))
}

/// The error message of the first matched asset whose point `misfit` objects to.
pub(in crate::rules) fn first_misfit<A: AsRef<AssetInfo>>(
    with: &[(A, &PointInfo)],
    misfit: impl Fn(&AssetInfo, &PointInfo) -> Option<String>,
) -> Option<String> {
    with.iter().find_map(|(a, p)| misfit(a.as_ref(), p))
}

impl<'a> RuleCx<'a> {
    /// An error at the rule's path, or at `key` under it.
    pub(in crate::rules) fn err(&self, issues: &mut Issues, key: &str, msg: impl Into<String>) {
        let path = if key.is_empty() {
            self.at.to_string()
        } else {
            format!("{}.{key}", self.at)
        };
        issues.err(self.file, path, msg);
    }

    /// The matched assets that have `point`, with it; the others are skipped with a warning.
    pub(in crate::rules) fn with_point(
        &self,
        point: &str,
        issues: &mut Issues,
    ) -> Option<Vec<(&'a Arc<AssetInfo>, &'a PointInfo)>> {
        let with: Vec<_> = self
            .matched
            .iter()
            .filter_map(|a| point_of(a, point).map(|p| (*a, p)))
            .collect();
        if with.is_empty() {
            self.err(
                issues,
                "point",
                format!(
                    "no matched asset has a point {point:?}{}",
                    points_hint(self.matched.first().copied())
                ),
            );
            return None;
        }
        for a in self.matched.iter().filter(|a| point_of(a, point).is_none()) {
            issues.warn(
                self.file,
                format!("{}.point", self.at),
                format!(
                    "asset {} (profile {}) has no point {point:?}: the rule skips it",
                    a.id, a.profile
                ),
            );
        }
        Some(with)
    }
}
