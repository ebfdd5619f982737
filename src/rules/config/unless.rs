//! `unless`: one condition or a list of them (the rule is held while any holds). A condition is
//! a point of the same asset (`{ point, equals }`) or another rule's active condition
//! (`{ rule, scope }`). A named rule must exist, must have a condition that stays active
//! (threshold, state or offline), and may not be held by a rule-form `unless` itself: no
//! chains, so no cycles.

use std::collections::HashSet;
use std::sync::Arc;

use config::{Value as ConfigValue, ValueKind};
use serde::Deserialize;

use super::decode::{StateValues, decode};
use super::validate::{RuleCx, check_values_fit, first_misfit, point_of, points_hint};
use super::{PointUnless, Rule, RuleKind, RuleUnless, Scope, Unless};
use crate::config::Issues;
use crate::rules::state::StateSet;
use crate::rules::types::AssetInfo;

/// Most point conditions in one `unless` list.
pub const MAX_POINT_UNLESS: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PointUnlessConfig {
    /// A point of the same asset (a mode, a test switch).
    point: String,
    /// The value, or values, that suppress the rule.
    equals: StateValues,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleUnlessConfig {
    /// The id of another rule.
    rule: String,
    /// `building` (default) or `site`.
    #[serde(default)]
    scope: Option<Scope>,
}

/// A rule-form `unless`, to check once every rule is known.
#[derive(Debug, Clone)]
pub(super) struct RuleRef {
    pub file: String,
    /// `rules[N].unless.rule` or `rules[N].unless[K].rule`.
    pub path: String,
    pub name: String,
}

impl RuleCx<'_> {
    /// `unless` as written: the conditions, and the rules they name (checked later).
    pub(super) fn unless(
        &self,
        value: &ConfigValue,
        kept: &[&Arc<AssetInfo>],
        issues: &mut Issues,
    ) -> (Vec<Unless>, Vec<RuleRef>) {
        let items: Vec<(String, &ConfigValue)> = match &value.kind {
            ValueKind::Array(list) => {
                if list.is_empty() {
                    self.err(
                        issues,
                        "unless",
                        "expected a condition or a list of conditions, found an empty list",
                    );
                }
                list.iter()
                    .enumerate()
                    .map(|(k, v)| (format!("unless[{k}]"), v))
                    .collect()
            }
            _ => vec![("unless".to_string(), value)],
        };
        let mut out = Vec::new();
        let mut refs = Vec::new();
        for (key, v) in items {
            let ValueKind::Table(t) = &v.kind else {
                self.err(
                    issues,
                    &key,
                    "expected a table: { point = \"...\", equals = ... } or { rule = \"...\", scope = \"building\" }",
                );
                continue;
            };
            let at = format!("{}.{key}", self.at);
            if t.contains_key("rule") {
                match decode::<RuleUnlessConfig>(v.clone(), self.file, &at, false) {
                    Ok(r) => {
                        refs.push(RuleRef {
                            file: self.file.to_string(),
                            path: format!("{at}.rule"),
                            name: r.rule.trim().to_string(),
                        });
                        out.push(Unless::Rule(RuleUnless {
                            rule: Arc::from(r.rule.trim()),
                            scope: r.scope.unwrap_or(Scope::Building),
                        }));
                    }
                    Err(e) => issues.errors.push(e),
                }
            } else {
                match decode::<PointUnlessConfig>(v.clone(), self.file, &at, false) {
                    Ok(p) => {
                        if let Some(u) = self.point_unless(&key, &p, kept, issues) {
                            out.push(Unless::Point(u));
                        }
                    }
                    Err(e) => issues.errors.push(e),
                }
            }
        }
        let points = out.iter().filter(|u| matches!(u, Unless::Point(_))).count();
        if points > MAX_POINT_UNLESS {
            self.err(
                issues,
                "unless",
                format!("at most {MAX_POINT_UNLESS} point conditions, found {points}"),
            );
        }
        (out, refs)
    }

    /// A point condition: assets lacking its point keep the rule, unsuppressed (a point the
    /// asset does not have never holds the rule back); a point no asset of the rule has is a
    /// typo.
    fn point_unless(
        &self,
        key: &str,
        u: &PointUnlessConfig,
        kept: &[&Arc<AssetInfo>],
        issues: &mut Issues,
    ) -> Option<PointUnless> {
        let with: Vec<_> = kept
            .iter()
            .filter_map(|a| point_of(a, &u.point).map(|p| (a, p)))
            .collect();
        if with.is_empty() {
            self.err(
                issues,
                &format!("{key}.point"),
                format!(
                    "no asset of the rule has a point {:?}{}",
                    u.point,
                    points_hint(kept.first().copied())
                ),
            );
            return None;
        }
        for a in kept.iter().filter(|a| point_of(a, &u.point).is_none()) {
            issues.warn(
                self.file,
                format!("{}.{key}.point", self.at),
                format!(
                    "asset {} (profile {}) has no point {:?}: the rule is not suppressed there",
                    a.id, a.profile, u.point
                ),
            );
        }
        if let Some(m) = first_misfit(&with, |a, p| {
            check_values_fit(&u.equals.0, p)
                .err()
                .map(|e| format!("asset {}: {e}", a.id))
        }) {
            self.err(issues, &format!("{key}.equals"), m);
            return None;
        }
        Some(PointUnless {
            point: Arc::from(u.point.as_str()),
            equals: StateSet(u.equals.0.clone()),
        })
    }
}

/// The rules named by rule-form `unless`: each should exist (a warning otherwise), and must have
/// a condition that stays active and not be held by a rule-form `unless` of its own.
pub(super) fn check_rule_refs(
    refs: &[RuleRef],
    rules: &[Rule],
    items: &[(String, usize, ConfigValue)],
    issues: &mut Issues,
) {
    if refs.is_empty() {
        return;
    }
    // Every id written, parsed or not: a rule with errors of its own is not "unknown".
    let declared: HashSet<String> = items
        .iter()
        .filter_map(|(_, _, v)| match &v.kind {
            ValueKind::Table(t) => t.get("id").and_then(|id| id.clone().into_string().ok()),
            _ => None,
        })
        .map(|id| id.trim().to_string())
        .collect();
    for r in refs {
        let Some(named) = rules.iter().find(|x| *x.id == *r.name) else {
            // A warning, not an error: the shipped files for lifts, pumps, panels and doors
            // name the transfer switch's `power-mains-lost`, and a site without a monitored
            // switch copies them all the same. Such an `unless` never holds.
            if !declared.contains(&r.name) {
                issues.warn(
                    &r.file,
                    &r.path,
                    format!(
                        "unknown rule {:?}: no rule has this id, so this unless never holds (a typo, or a rule file not copied)",
                        r.name
                    ),
                );
            }
            continue;
        };
        if !matches!(
            named.kind,
            RuleKind::Threshold(_) | RuleKind::State(_) | RuleKind::Offline(_)
        ) {
            issues.err(
                &r.file,
                &r.path,
                format!(
                    "rule {:?} is a {} rule: only threshold, state and offline rules have a condition that stays active",
                    r.name,
                    named.type_name()
                ),
            );
            continue;
        }
        if let Some(inner) = named.rule_unless().next() {
            issues.err(
                &r.file,
                &r.path,
                format!(
                    "rule {:?} is itself held by rule {:?} (its unless): a rule named by unless may not be held by another rule, so that holds never chain or loop",
                    r.name, inner.rule
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::config::tests::parse;

    fn errors(toml: &str) -> Vec<String> {
        parse(toml)
            .expect_err("expected errors")
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    const MAINS: &str = r#"
[[rules]]
id = "mains-lost"
type = "state"
match = { ids = "P-1" }
point = "fault"
"#;

    #[test]
    fn lists_and_rule_forms_parse() {
        let (rules, _) = parse(&format!(
            "{MAINS}
[[rules]]
id = \"held\"
type = \"offline\"
after = \"5m\"
unless = [{{ point = \"local_mode\", equals = \"local\" }}, {{ rule = \"mains-lost\" }}, {{ rule = \"mains-lost\", scope = \"site\" }}]
"
        ))
        .unwrap();
        assert_eq!(
            rules[1].describe(),
            "no good sample for 5m, unless local_mode = local or rule mains-lost is active in the building or rule mains-lost is active in the site -> normal corrective, auto-resolve"
        );
    }

    #[test]
    fn a_named_rule_must_exist_hold_a_condition_and_not_be_held_itself() {
        // Unknown: a warning (a site without the named rule's file), and the rule still runs.
        let (rules, warnings) = parse(
            "[[rules]]\nid = \"r\"\ntype = \"offline\"\nafter = \"5m\"\nunless = { rule = \"power-mains-lsot\" }\n",
        )
        .unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("rules[0].unless.rule")
                && warnings[0].contains("unknown rule \"power-mains-lsot\": no rule has this id, so this unless never holds"),
            "{warnings:?}"
        );
        // A cycle: each is held by the other.
        assert_eq!(
            errors(
                "[[rules]]\nid = \"a\"\ntype = \"offline\"\nafter = \"5m\"\nunless = { rule = \"b\" }\n\n[[rules]]\nid = \"b\"\ntype = \"offline\"\nafter = \"1m\"\nunless = [{ point = \"local_mode\", equals = 1 }, { rule = \"a\", scope = \"site\" }]\n"
            ),
            [
                "rules.toml: rules[0].unless.rule: rule \"b\" is itself held by rule \"a\" (its unless): a rule named by unless may not be held by another rule, so that holds never chain or loop",
                "rules.toml: rules[1].unless[1].rule: rule \"a\" is itself held by rule \"b\" (its unless): a rule named by unless may not be held by another rule, so that holds never chain or loop"
            ]
        );
        assert_eq!(
            errors(
                "[[rules]]\nid = \"self\"\ntype = \"offline\"\nafter = \"5m\"\nunless = { rule = \"self\" }\n"
            ),
            [
                "rules.toml: rules[0].unless.rule: rule \"self\" is itself held by rule \"self\" (its unless): a rule named by unless may not be held by another rule, so that holds never chain or loop"
            ]
        );
        assert_eq!(
            errors(
                "[[rules]]\nid = \"cal\"\ntype = \"calendar\"\nevery = \"1y\"\nstart = \"2026-01-01\"\n\n[[rules]]\nid = \"r\"\ntype = \"offline\"\nafter = \"5m\"\nunless = { rule = \"cal\" }\n"
            ),
            [
                "rules.toml: rules[1].unless.rule: rule \"cal\" is a calendar rule: only threshold, state and offline rules have a condition that stays active"
            ]
        );
    }

    #[test]
    fn list_errors_name_the_item() {
        assert_eq!(
            errors(&format!(
                "{MAINS}
[[rules]]
id = \"r\"
type = \"offline\"
after = \"5m\"
unless = [{{ rule = \"mains-lost\", scope = \"floor\" }}, {{ point = \"nope\", equals = 1 }}, 3]
"
            )),
            [
                "rules.toml: rules[1].unless[0].scope: expected one of building, site, found \"floor\"",
                "rules.toml: rules[1].unless[1].point: no asset of the rule has a point \"nope\" (profile pump has: discharge_pressure_bar, local_mode, run_hours, fault, dry_run, mode)",
                "rules.toml: rules[1].unless[2]: expected a table: { point = \"...\", equals = ... } or { rule = \"...\", scope = \"building\" }"
            ]
        );
        assert_eq!(
            errors("[[rules]]\nid = \"r\"\ntype = \"offline\"\nafter = \"5m\"\nunless = []\n"),
            [
                "rules.toml: rules[0].unless: expected a condition or a list of conditions, found an empty list"
            ]
        );
    }
}
