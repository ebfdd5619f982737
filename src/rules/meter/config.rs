//! `type = "meter"` as written, and its validation into a [`MeterSpec`].

use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::MeterSpec;
use crate::config::Issues;
use crate::profile::PointKind;
use crate::rules::config::{Number, Parsed, RuleCx, RuleKind, TypeConfig, first_misfit, kind_name};

/// The keys of a `type = "meter"` rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::rules) struct MeterConfig {
    /// A counter point.
    point: String,
    /// Units of the counter between work orders.
    every: Number,
    /// Raised this early: "5%" of `every` (default) or a number of units.
    #[serde(default)]
    lead: Option<Lead>,
    /// The reading at the last service, until a work order of the rule is closed (default: the
    /// first reading seen); `"handover"`: the asset's counter in the newest handover record.
    #[serde(default)]
    baseline: Option<Baseline>,
    /// Units per hour the counter can plausibly grow (lets usage across long gaps count).
    #[serde(default)]
    max_rate: Option<Number>,
}

/// `baseline = N` or `baseline = "handover"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Baseline {
    Reading(Number),
    Word(String),
}

/// `lead = "5%"` or a number of units.
#[derive(Debug, Clone, Copy)]
enum Lead {
    Percent(f64),
    Units(f64),
}

impl<'de> Deserialize<'de> for Lead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Lead;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a percentage such as \"5%\" or a number of units")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Lead, E> {
                Ok(Lead::Units(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Lead, E> {
                Ok(Lead::Units(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Lead, E> {
                Ok(Lead::Units(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Lead, E> {
                let t = s.trim();
                let parsed = match t.strip_suffix('%') {
                    Some(p) => p.trim().parse::<f64>().map(Lead::Percent),
                    None => t.parse::<f64>().map(Lead::Units),
                };
                parsed.map_err(|_| {
                    E::custom(format!(
                        "expected a percentage such as \"5%\" or a number of units, found {s:?}"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl TypeConfig for MeterConfig {
    fn validate<'a>(self, cx: &RuleCx<'a>, issues: &mut Issues) -> Parsed<'a> {
        let before = issues.errors.len();
        let every = self.every.0;
        if every <= 0.0 {
            cx.err(
                issues,
                "every",
                format!("expected a number of units greater than zero, found {every}"),
            );
            return None;
        }
        let lead = match self.lead.unwrap_or(Lead::Percent(5.0)) {
            Lead::Percent(p) if (0.0..100.0).contains(&p) => every * p / 100.0,
            Lead::Units(u) if u >= 0.0 && u < every => u,
            Lead::Percent(p) => {
                cx.err(
                    issues,
                    "lead",
                    format!("expected a percentage from 0% to below 100%, found {p}%"),
                );
                return None;
            }
            Lead::Units(u) => {
                cx.err(
                    issues,
                    "lead",
                    format!(
                        "expected a number of units from 0 to below every ({every}), found {u}"
                    ),
                );
                return None;
            }
        };
        let (baseline, baseline_from_handover) = match self.baseline {
            None => (None, false),
            Some(Baseline::Reading(b)) if b.0 < 0.0 => {
                cx.err(
                    issues,
                    "baseline",
                    format!("expected a counter reading (0 or more), found {}", b.0),
                );
                (None, false)
            }
            Some(Baseline::Reading(b)) => (Some(b.0), false),
            Some(Baseline::Word(w)) if w.trim() == "handover" => (None, true),
            Some(Baseline::Word(w)) => {
                cx.err(
                    issues,
                    "baseline",
                    format!("expected a counter reading (0 or more) or \"handover\", found {w:?}"),
                );
                (None, false)
            }
        };
        if let Some(r) = self.max_rate
            && r.0 <= 0.0
        {
            cx.err(
                issues,
                "max_rate",
                format!("expected units per hour greater than zero, found {}", r.0),
            );
        }
        let with = cx.with_point(&self.point, issues)?;
        if let Some(m) = first_misfit(&with, |a, p| {
            (p.kind != PointKind::Counter).then(|| {
                format!(
                    "a meter rule needs a counter point: {:?} of asset {} is {} point",
                    self.point,
                    a.id,
                    kind_name(p.kind)
                )
            })
        }) {
            cx.err(issues, "point", m);
        }
        if issues.errors.len() > before {
            return None;
        }
        let spec = MeterSpec {
            point: Arc::from(self.point.as_str()),
            every,
            lead,
            baseline,
            baseline_from_handover,
            max_rate: self.max_rate.map(|r| r.0),
        };
        Some((
            RuleKind::Meter(spec),
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
            one("type = \"meter\"\npoint = \"discharge_pressure_bar\"\nevery = 100\n"),
            [
                "rules.toml: rules[0].point: a meter rule needs a counter point: \"discharge_pressure_bar\" of asset P-1 is a gauge point"
            ]
        );
        let errs = one(
            "type = \"meter\"\npoint = \"discharge_pressure_bar\"\nevery = 100\nbaseline = \"later\"\n",
        );
        assert!(
            errs.iter().any(|e| e.ends_with(
                "rules[0].baseline: expected a counter reading (0 or more) or \"handover\", found \"later\""
            )),
            "{errs:?}"
        );
    }
}
