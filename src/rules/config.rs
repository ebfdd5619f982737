//! `[[rules]]`: parsing and validating rule configuration into [`Rule`]s.
//!
//! Each rule is decoded in two steps, because an internally tagged serde enum loses the key
//! path: `type` is read first, then the rule's keys are split into the keys every rule has
//! ([`CommonConfig`]) and the keys of its type, each decoded with `deny_unknown_fields`
//! through `serde_path_to_error`, so an error reads `file: rules[1].above: invalid type ...`.
//! Validation against the assets follows: a rule that matches no asset is an error, and so is a
//! point that no matched asset has; assets lacking it are skipped with a warning.
//!
//! This module holds the part every rule shares: the common keys (`match`, `unless`, `flap`,
//! the title and description, ...) and the dispatch by `type`, with the helpers of `decode`
//! (serde with key paths) and `validate` (checks against the matched assets). The keys of each
//! type and their checks live beside the type's state machine, each a [`TypeConfig`]:
//! `threshold/config.rs`, `state/config.rs`, `meter/config.rs`, `calendar/config.rs` and
//! `offline/config.rs`. The validated [`Rule`] is defined in `rules/rule.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use chrono_tz::Tz;
use config::Value as ConfigValue;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::calendar::config::CalendarConfig;
use super::flap::FlapSpec;
use super::matcher::AssetMatch;
use super::meter::config::MeterConfig;
use super::offline::config::OfflineConfig;
use super::state::StateMode;
use super::state::config::StateConfig;
use super::template::{Placeholder, Template};
use super::threshold::config::ThresholdConfig;
use super::types::{AssetInfo, Priority, WorkOrderKind};
use crate::config::{ConfigIssue, Issues};

mod decode;
#[cfg(test)]
pub(crate) mod tests;
mod unless;
mod validate;

pub use super::rule::{PointUnless, Rule, RuleKind, RuleUnless, Scope, Unless};
pub use super::state::config::MAX_COUNT;
pub(in crate::rules) use decode::{Number, StateValues};
use decode::{decode, split_table};
use unless::RuleRef;
use validate::UnknownTimezone;
pub(in crate::rules) use validate::{RuleCx, check_values_fit, first_misfit, kind_name, nanos};

/// The rule types, as written in `type`.
pub const RULE_TYPES: [&str; 5] = ["threshold", "state", "meter", "calendar", "offline"];

/// The keys every rule has, whatever its type.
const COMMON_KEYS: [&str; 10] = [
    "id",
    "type",
    "match",
    "priority",
    "work_order",
    "title",
    "description",
    "auto_resolve",
    "unless",
    "flap",
];

/// What the common keys depend on in a rule's type: the defaults of `title` and
/// `work_order`, and whether `flap` applies.
impl RuleKind {
    /// The title of a rule that writes none.
    fn default_title(&self) -> &'static str {
        match self {
            RuleKind::Threshold(_) => "{point} {value} {unit} beyond {threshold} at {asset}",
            RuleKind::State(_) => "{point} is {value} at {asset}",
            RuleKind::Meter(_) => "Service due at {asset}: {point} {value} (due at {threshold})",
            RuleKind::Calendar(_) => "Inspection due at {asset} on {threshold}",
            RuleKind::Offline(_) => "{asset} offline: no data for {threshold}",
        }
    }

    /// The work order of a rule that names none.
    fn default_work_order(&self) -> WorkOrderKind {
        match self {
            RuleKind::Meter(_) => WorkOrderKind::Preventive,
            RuleKind::Calendar(_) => WorkOrderKind::Inspection,
            _ => WorkOrderKind::Corrective,
        }
    }

    /// The flap guard watches conditions that come and go: thresholds and held states, not
    /// count windows, meters, calendars or silence.
    fn takes_flap(&self) -> bool {
        match self {
            RuleKind::Threshold(_) => true,
            RuleKind::State(s) => matches!(s.mode, StateMode::Hold(_)),
            _ => false,
        }
    }
}

/// The keys every rule has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonConfig {
    /// Unique across all files; the `rule` of work orders.
    id: String,
    /// Which assets: `{ ids, profile, device_type, building, site, floor, tags }`; default all.
    #[serde(rename = "match", default)]
    matcher: Option<AssetMatch>,
    /// urgent | high | normal | low (default normal).
    #[serde(default)]
    priority: Option<Priority>,
    /// corrective | preventive | inspection | incident (default: preventive for meter rules,
    /// inspection for calendar rules, corrective otherwise).
    #[serde(default)]
    work_order: Option<WorkOrderKind>,
    /// Work-order title with placeholders; a default per type.
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// A cleared condition resolves the work order (default true for offline rules).
    #[serde(default)]
    auto_resolve: Option<bool>,
    /// One condition or a list (see `config/unless.rs`).
    #[serde(default)]
    unless: Option<ConfigValue>,
    #[serde(default)]
    flap: Option<FlapConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlapConfig {
    /// Evaluations remembered (default 21, at most 64).
    #[serde(default)]
    window: Option<u8>,
    /// Held firing above this share of changes (default 0.5).
    #[serde(default)]
    high: Option<Number>,
    /// Released below this share (default 0.25).
    #[serde(default)]
    low: Option<Number>,
}

/// The keys of one rule type, as written: decoded from the keys that are not common to every
/// rule, then checked against the assets the rule matched.
pub(in crate::rules) trait TypeConfig: DeserializeOwned {
    /// The type-specific part of the rule and the matched assets it runs on, or `None` once
    /// the errors are recorded.
    fn validate<'a>(self, cx: &RuleCx<'a>, issues: &mut Issues) -> Parsed<'a>;
}

/// What [`TypeConfig::validate`] gives.
pub(in crate::rules) type Parsed<'a> = Option<(RuleKind, Vec<&'a Arc<AssetInfo>>)>;

/// Parses and validates `[[rules]]` items, given as (file, index in that file, table).
///
/// Returns the rules and warnings (`file: path: message`), or every error found.
pub fn parse_rules(
    items: &[(String, usize, ConfigValue)],
    assets: &[Arc<AssetInfo>],
    gateway_id: &str,
    timezone: &str,
) -> Result<(Vec<Rule>, Vec<String>), Vec<ConfigIssue>> {
    let mut issues = Issues {
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let tz: Result<Tz, UnknownTimezone> = timezone
        .parse::<Tz>()
        .map_err(|_| UnknownTimezone(timezone.to_string()));
    let gateway: Arc<str> = Arc::from(gateway_id);
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    let mut rules = Vec::new();
    let mut refs: Vec<RuleRef> = Vec::new();
    for (file, index, value) in items {
        let before = issues.errors.len();
        let parsed = parse_one(file, *index, value, assets, &gateway, &tz, &mut issues);
        if let Some((rule, mut named)) = parsed {
            let at = format!("rules[{index}]");
            if let Some((f, i)) = seen.get(&*rule.id) {
                issues.err(
                    file,
                    format!("{at}.id"),
                    format!(
                        "duplicate rule id {:?}: also defined at {f}: rules[{i}]",
                        rule.id
                    ),
                );
                continue;
            }
            seen.insert(rule.id.to_string(), (file.clone(), *index));
            if issues.errors.len() == before {
                rules.push(rule);
                refs.append(&mut named);
            }
        }
    }
    unless::check_rule_refs(&refs, &rules, items, &mut issues);
    if issues.errors.is_empty() {
        Ok((rules, issues.warnings))
    } else {
        Err(issues.errors)
    }
}

/// One `[[rules]]` table: the common keys, the assets it matches, then the keys of its type.
fn parse_one(
    file: &str,
    index: usize,
    value: &ConfigValue,
    assets: &[Arc<AssetInfo>],
    gateway: &Arc<str>,
    tz: &Result<Tz, UnknownTimezone>,
    issues: &mut Issues,
) -> Option<(Rule, Vec<RuleRef>)> {
    let at = format!("rules[{index}]");
    let Some((common, specific, ty)) = split_table(value) else {
        issues.err(file, &at, "expected a table ([[rules]] with id, type, ...)");
        return None;
    };
    let Some(ty) = ty else {
        issues.err(
            file,
            format!("{at}.type"),
            format!(
                "required key is missing: expected one of {}",
                RULE_TYPES.join(", ")
            ),
        );
        return None;
    };
    let common: CommonConfig = match decode(common, file, &at, false) {
        Ok(c) => c,
        Err(e) => {
            issues.errors.push(e);
            return None;
        }
    };
    if common.id.trim().is_empty() {
        issues.err(file, format!("{at}.id"), "expected a non-empty rule id");
        return None;
    }
    let matched = match_assets(common.matcher.as_ref(), assets, file, &at, issues)?;

    let before = issues.errors.len();
    let cx = RuleCx {
        file,
        at: &at,
        matched: &matched,
        tz,
    };
    let parsed = match ty.as_str() {
        "threshold" => cx.parse::<ThresholdConfig>(specific, issues),
        "state" => cx.parse::<StateConfig>(specific, issues),
        "meter" => cx.parse::<MeterConfig>(specific, issues),
        "calendar" => cx.parse::<CalendarConfig>(specific, issues),
        "offline" => cx.parse::<OfflineConfig>(specific, issues),
        other => {
            issues.err(
                file,
                format!("{at}.type"),
                format!(
                    "unknown rule type {other:?}: expected one of {}",
                    RULE_TYPES.join(", ")
                ),
            );
            None
        }
    };
    let (kind, kept) = parsed?;

    let (unless, refs) = match &common.unless {
        Some(u) => cx.unless(u, &kept, issues),
        None => (Vec::new(), Vec::new()),
    };
    let flap = cx.flap(common.flap.as_ref(), &kind, issues);
    let title = common.title.as_deref().unwrap_or(kind.default_title());
    let title = cx.template("title", title, &kind, issues);
    let description = common
        .description
        .as_deref()
        .and_then(|d| cx.template("description", d, &kind, issues));
    if issues.errors.len() > before {
        return None;
    }

    let is_offline = matches!(kind, RuleKind::Offline(_));
    let rule = Rule {
        id: Arc::from(common.id.trim()),
        file: file.to_string(),
        index,
        priority: common.priority.unwrap_or(Priority::Normal),
        work_order: common
            .work_order
            .unwrap_or_else(|| kind.default_work_order()),
        kind,
        title: title?,
        description,
        auto_resolve: common.auto_resolve.unwrap_or(is_offline),
        unless,
        flap,
        gateway: gateway.clone(),
        assets: kept.iter().map(|a| a.id.clone()).collect(),
    };
    Some((rule, refs))
}

/// The assets `match` selects (all of them without one); none is an error.
fn match_assets<'a>(
    matcher: Option<&AssetMatch>,
    assets: &'a [Arc<AssetInfo>],
    file: &str,
    at: &str,
    issues: &mut Issues,
) -> Option<Vec<&'a Arc<AssetInfo>>> {
    let every = AssetMatch::default();
    let m = matcher.unwrap_or(&every);
    if let Err(e) = m.validate() {
        issues.err(file, format!("{at}.match.device_type"), e.to_string());
        return None;
    }
    let matched: Vec<&Arc<AssetInfo>> = assets.iter().filter(|a| m.matches(a)).collect();
    if matched.is_empty() {
        let msg = if assets.is_empty() {
            "the rule matches no asset: no devices are configured".to_string()
        } else if matcher.is_some() {
            format!(
                "the rule matches no asset (of {} configured devices); check ids, profile, device_type, building, site, floor and tags",
                assets.len()
            )
        } else {
            "the rule matches no asset".to_string()
        };
        let path = if matcher.is_some() {
            format!("{at}.match")
        } else {
            at.to_string()
        };
        issues.err(file, path, msg);
        return None;
    }
    Some(matched)
}

/// The parts every rule type shares, checked once its type-specific part is known.
impl<'a> RuleCx<'a> {
    /// Decodes the keys of type `C` from `specific` and validates them.
    fn parse<C: TypeConfig>(&self, specific: ConfigValue, issues: &mut Issues) -> Parsed<'a> {
        match decode::<C>(specific, self.file, self.at, true) {
            Ok(c) => c.validate(self, issues),
            Err(e) => {
                issues.errors.push(e);
                None
            }
        }
    }

    /// `flap`: the defaults where the guard applies, an error where it does not.
    fn flap(
        &self,
        f: Option<&FlapConfig>,
        kind: &RuleKind,
        issues: &mut Issues,
    ) -> Option<FlapSpec> {
        match (f, kind.takes_flap()) {
            (Some(_), false) => {
                self.err(
                    issues,
                    "flap",
                    "the flap guard applies to threshold rules and state rules with `equals`/`for`, not to count windows, meter, calendar or offline rules",
                );
                None
            }
            (None, true) => Some(FlapSpec::default()),
            (None, false) => None,
            (Some(f), true) => {
                let d = FlapSpec::default();
                let spec = FlapSpec {
                    window: f.window.unwrap_or(d.window),
                    high: f.high.map_or(d.high, |n| n.0),
                    low: f.low.map_or(d.low, |n| n.0),
                };
                match spec.validate() {
                    Ok(()) => Some(spec),
                    Err(e) => {
                        self.err(issues, "flap", e.to_string());
                        None
                    }
                }
            }
        }
    }

    /// A title or description; `{point}` and `{unit}` in a rule that watches no point render
    /// empty, with a warning.
    fn template(
        &self,
        key: &str,
        src: &str,
        kind: &RuleKind,
        issues: &mut Issues,
    ) -> Option<Template> {
        match Template::parse(src) {
            Ok(t) => {
                let pointless = kind.point().is_none();
                for p in t.placeholders() {
                    if pointless && matches!(p, Placeholder::Point | Placeholder::Unit) {
                        issues.warn(
                            self.file,
                            format!("{}.{key}", self.at),
                            format!(
                                "{{{}}} is empty for {} rules (they watch no point)",
                                p.name(),
                                kind.type_name()
                            ),
                        );
                    }
                }
                Some(t)
            }
            Err(e) => {
                self.err(issues, key, e.to_string());
                None
            }
        }
    }
}
