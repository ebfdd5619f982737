//! `[[rules]]`: parsing and validating rule configuration (DESIGN §3, §4) into [`Rule`]s.
//!
//! Each rule is decoded in two steps, because an internally tagged serde enum loses the key
//! path: `type` is read first, then the rule's keys are split into the keys every rule has
//! ([`CommonConfig`]) and the keys of its type, each decoded with `deny_unknown_fields`
//! through `serde_path_to_error`, so an error reads `file: rules[1].above: invalid type ...`.
//! Validation against the assets follows: a rule that matches no asset is an error, and so is a
//! point that no matched asset has; assets lacking it are skipped with a warning.

use std::collections::HashMap;
use std::sync::Arc;

use chrono_tz::Tz;
use config::{Value as ConfigValue, ValueKind};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};

use super::calendar::{self, CalendarSpec, Every};
use super::condition::Delays;
use super::flap::FlapSpec;
use super::matcher::AssetMatch;
use super::meter::MeterSpec;
use super::offline::OfflineSpec;
use super::state::{StateMode, StateSet, StateSpec, StateValue};
use super::template::{Placeholder, Template};
use super::threshold::ThresholdSpec;
use super::types::{AssetInfo, PointInfo, Priority, WorkOrderKind};
use crate::config::units::Duration;
use crate::config::{ConfigIssue, Issues};
use crate::model::AssetId;
use crate::profile::PointKind;

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

/// The most entries a count window may need (`count`).
pub const MAX_COUNT: u32 = 1000;

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: Arc<str>,
    /// Where it was defined, for messages.
    pub file: String,
    pub index: usize,
    pub kind: RuleKind,
    pub priority: Priority,
    pub work_order: WorkOrderKind,
    pub title: Template,
    pub description: Option<Template>,
    /// A cleared condition resolves the work order.
    pub auto_resolve: bool,
    pub unless: Option<Unless>,
    /// The flap guard (threshold and `for`-style state rules only).
    pub flap: Option<FlapSpec>,
    /// `[gateway] id`, for `{gateway}`.
    pub gateway: Arc<str>,
    /// The assets the rule runs on: matched by `match`, less those skipped with a warning.
    pub assets: Vec<AssetId>,
}

/// The type-specific part of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    Threshold(ThresholdSpec),
    State(StateSpec),
    Meter(MeterSpec),
    Calendar(CalendarSpec),
    Offline(OfflineSpec),
}

/// `unless = { point = "local_mode", equals = true }`: suppressed while the point of the same
/// asset holds one of the values.
#[derive(Debug, Clone, PartialEq)]
pub struct Unless {
    pub point: Arc<str>,
    pub equals: StateSet,
}

impl Rule {
    /// The same rule as far as its state goes: equal in everything but where it is configured
    /// and which assets it matched (a reload keeps the state of an unchanged rule on each
    /// unchanged asset it still runs on).
    pub fn same_definition(&self, other: &Rule) -> bool {
        let Rule {
            id,
            file: _,
            index: _,
            kind,
            priority,
            work_order,
            title,
            description,
            auto_resolve,
            unless,
            flap,
            gateway,
            assets: _,
        } = self;
        *id == other.id
            && *kind == other.kind
            && *priority == other.priority
            && *work_order == other.work_order
            && *title == other.title
            && *description == other.description
            && *auto_resolve == other.auto_resolve
            && *unless == other.unless
            && *flap == other.flap
            && *gateway == other.gateway
    }

    /// `threshold`, `state`, `meter`, `calendar` or `offline`.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            RuleKind::Threshold(_) => "threshold",
            RuleKind::State(_) => "state",
            RuleKind::Meter(_) => "meter",
            RuleKind::Calendar(_) => "calendar",
            RuleKind::Offline(_) => "offline",
        }
    }

    /// The point the rule watches (none for calendar and offline rules).
    pub fn point(&self) -> Option<&Arc<str>> {
        match &self.kind {
            RuleKind::Threshold(s) => Some(&s.point),
            RuleKind::State(s) => Some(&s.point),
            RuleKind::Meter(s) => Some(&s.point),
            RuleKind::Calendar(_) | RuleKind::Offline(_) => None,
        }
    }

    /// One line for `check`: the condition, then what it raises.
    pub fn describe(&self) -> String {
        let mut s = match &self.kind {
            RuleKind::Threshold(t) => t.describe(),
            RuleKind::State(t) => t.describe(),
            RuleKind::Meter(t) => t.describe(),
            RuleKind::Calendar(t) => t.describe(),
            RuleKind::Offline(t) => t.describe(),
        };
        if let Some(u) = &self.unless {
            s.push_str(&format!(", unless {} = {}", u.point, u.equals.text()));
        }
        s.push_str(&format!(
            " -> {} {}{}",
            self.priority.as_str(),
            self.work_order.as_str(),
            if self.auto_resolve {
                ", auto-resolve"
            } else {
                ""
            }
        ));
        s
    }
}

// ---------------------------------------------------------------------------------------------
// The keys as written.

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
    #[serde(default)]
    unless: Option<UnlessConfig>,
    #[serde(default)]
    flap: Option<FlapConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlessConfig {
    /// A point of the same asset (a mode, a test switch).
    point: String,
    /// The value, or values, that suppress the rule.
    equals: StateValues,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdConfig {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateConfig {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeterConfig {
    /// A counter point.
    point: String,
    /// Units of the counter between work orders.
    every: Number,
    /// Raised this early: "5%" of `every` (default) or a number of units.
    #[serde(default)]
    lead: Option<Lead>,
    /// The reading at the last service, until a work order of the rule is closed (default: the
    /// first reading seen).
    #[serde(default)]
    baseline: Option<Number>,
    /// Units per hour the counter can plausibly grow (lets usage across long gaps count).
    #[serde(default)]
    max_rate: Option<Number>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarConfig {
    /// "15d", "1w", or calendar months and years: "1mo", "3mo", "6mo", "1y".
    every: String,
    /// The reference date (the last inspection): RFC 3339, or a local date or date-time in
    /// the gateway time zone. The first due date is `start + every`.
    start: String,
    /// Raised this early (default 0).
    #[serde(default)]
    lead: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfflineConfig {
    /// No good sample of the asset for this long.
    after: Duration,
}

/// A number (integer or float); strings and booleans are errors.
#[derive(Debug, Clone, Copy)]
struct Number(f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                if v.is_finite() {
                    Ok(Number(v))
                } else {
                    Err(E::custom(format!("expected a finite number, found {v}")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `equals`: a boolean, a number or a state name, or a list of them.
#[derive(Debug, Clone)]
struct StateValues(Vec<StateValue>);

struct StateValueVisitor {
    list: bool,
}

impl<'de> de::Visitor<'de> for StateValueVisitor {
    type Value = Vec<StateValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.list {
            f.write_str("a boolean, a number, a state name, or a list of them")
        } else {
            f.write_str("a boolean, a number or a state name")
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(vec![StateValue::Bool(v)])
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(vec![StateValue::Number(v as f64)])
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(vec![StateValue::Number(v as f64)])
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(vec![StateValue::Number(v)])
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(vec![StateValue::Name(v.to_string())])
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if !self.list {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut out = Vec::new();
        while let Some(one) = seq.next_element::<OneStateValue>()? {
            out.push(one.0);
        }
        if out.is_empty() {
            return Err(de::Error::custom(
                "expected at least one value, found an empty list",
            ));
        }
        Ok(out)
    }
}

struct OneStateValue(StateValue);

impl<'de> Deserialize<'de> for OneStateValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = d.deserialize_any(StateValueVisitor { list: false })?;
        Ok(OneStateValue(v.remove(0)))
    }
}

impl<'de> Deserialize<'de> for StateValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StateValueVisitor { list: true })
            .map(StateValues)
    }
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

// ---------------------------------------------------------------------------------------------
// Parsing.

/// The values of enums as the config crate names them in its messages.
const ENUM_VALUES: &[(&str, &str)] = &[
    ("Priority", "urgent, high, normal, low"),
    (
        "WorkOrderKind",
        "corrective, preventive, inspection, incident",
    ),
];

/// The config crate appends its own (garbled) location to some messages; ours is exact.
fn clean_message(msg: &str) -> String {
    let msg = msg.find(" for key `").map_or(msg, |i| &msg[..i]);
    if let Some(rest) = msg.strip_prefix("enum ")
        && let Some((name, value)) = rest.split_once(" does not have variant constructor ")
        && let Some((_, values)) = ENUM_VALUES.iter().find(|(n, _)| *n == name)
    {
        return format!("expected one of {values}, found {:?}", value.trim());
    }
    msg.to_string()
}

/// Decodes `value` as `T`; an error is located at `at` + the path inside.
fn decode<T: DeserializeOwned>(
    value: ConfigValue,
    file: &str,
    at: &str,
    keys_hint: bool,
) -> Result<T, ConfigIssue> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let inner = e.path().to_string();
        let mut path = if inner == "." || inner.is_empty() {
            at.to_string()
        } else {
            format!("{at}.{inner}")
        };
        let mut message = clean_message(&e.inner().to_string());
        if let Some(field) = message
            .strip_prefix("missing configuration field ")
            .or_else(|| message.strip_prefix("missing field "))
        {
            let field = field.trim_matches(|c| c == '"' || c == '`');
            path = format!("{path}.{field}");
            message = "required key is missing".into();
        } else if keys_hint && message.starts_with("unknown field") {
            message.push_str(&format!(
                ", or one of the keys every rule has: {}",
                COMMON_KEYS.join(", ")
            ));
        }
        ConfigIssue {
            file: file.to_string(),
            path,
            message,
        }
    })
}

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
    let tz: Result<Tz, String> = timezone
        .parse::<Tz>()
        .map_err(|_| format!("the [gateway] timezone {timezone:?} is not an IANA time zone such as \"Asia/Shanghai\" or \"UTC\""));
    let gateway: Arc<str> = Arc::from(gateway_id);
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    let mut rules = Vec::new();
    for (file, index, value) in items {
        let before = issues.errors.len();
        let parsed = parse_one(file, *index, value, assets, &gateway, &tz, &mut issues);
        if let Some(rule) = parsed {
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
            }
        }
    }
    if issues.errors.is_empty() {
        Ok((rules, issues.warnings))
    } else {
        Err(issues.errors)
    }
}

fn split_table(value: &ConfigValue) -> Option<(ConfigValue, ConfigValue, Option<String>)> {
    let ValueKind::Table(table) = &value.kind else {
        return None;
    };
    let mut common = config::Map::new();
    let mut specific = config::Map::new();
    let mut ty = None;
    for (k, v) in table {
        if k == "type" {
            ty = Some(v.clone().into_string().unwrap_or_default());
        } else if COMMON_KEYS.contains(&k.as_str()) {
            common.insert(k.clone(), v.clone());
        } else {
            specific.insert(k.clone(), v.clone());
        }
    }
    Some((
        ConfigValue::new(None, ValueKind::Table(common)),
        ConfigValue::new(None, ValueKind::Table(specific)),
        ty,
    ))
}

#[allow(clippy::too_many_arguments)]
fn parse_one(
    file: &str,
    index: usize,
    value: &ConfigValue,
    assets: &[Arc<AssetInfo>],
    gateway: &Arc<str>,
    tz: &Result<Tz, String>,
    issues: &mut Issues,
) -> Option<Rule> {
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

    // Which assets.
    let matcher = common.matcher.clone().unwrap_or_default();
    let match_path = if common.matcher.is_some() {
        format!("{at}.match")
    } else {
        at.clone()
    };
    if let Err(e) = matcher.validate() {
        issues.err(file, format!("{at}.match.device_type"), e);
        return None;
    }
    let matched: Vec<&Arc<AssetInfo>> = assets.iter().filter(|a| matcher.matches(a)).collect();
    if matched.is_empty() {
        let msg = if assets.is_empty() {
            "the rule matches no asset: no devices are configured".to_string()
        } else if common.matcher.is_some() {
            format!(
                "the rule matches no asset (of {} configured devices); check ids, profile, device_type, building, site, floor and tags",
                assets.len()
            )
        } else {
            "the rule matches no asset".to_string()
        };
        issues.err(file, match_path, msg);
        return None;
    }

    let before = issues.errors.len();
    let cx = RuleCx {
        file,
        at: &at,
        matched: &matched,
    };
    let parsed = match ty.as_str() {
        "threshold" => decode::<ThresholdConfig>(specific, file, &at, true)
            .map_err(|e| issues.errors.push(e))
            .ok()
            .and_then(|c| cx.threshold(c, issues)),
        "state" => decode::<StateConfig>(specific, file, &at, true)
            .map_err(|e| issues.errors.push(e))
            .ok()
            .and_then(|c| cx.state(c, issues)),
        "meter" => decode::<MeterConfig>(specific, file, &at, true)
            .map_err(|e| issues.errors.push(e))
            .ok()
            .and_then(|c| cx.meter(c, issues)),
        "calendar" => decode::<CalendarConfig>(specific, file, &at, true)
            .map_err(|e| issues.errors.push(e))
            .ok()
            .and_then(|c| cx.calendar(c, tz, issues)),
        "offline" => decode::<OfflineConfig>(specific, file, &at, true)
            .map_err(|e| issues.errors.push(e))
            .ok()
            .and_then(|c| cx.offline(c, issues)),
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

    // unless: assets lacking its point keep the rule, unsuppressed (DESIGN §4: an unknown
    // unless point does not suppress); a point no asset has is a typo.
    let unless = common.unless.as_ref().and_then(|u| {
        let path = format!("{at}.unless.point");
        let with: Vec<_> = kept
            .iter()
            .filter_map(|a| point_of(a, &u.point).map(|p| (a, p)))
            .collect();
        if with.is_empty() {
            issues.err(
                file,
                path,
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
                file,
                &path,
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
            issues.err(file, format!("{at}.unless.equals"), m);
            return None;
        }
        Some(Unless {
            point: Arc::from(u.point.as_str()),
            equals: StateSet(u.equals.0.clone()),
        })
    });

    // The flap guard watches conditions that come and go.
    let flap_applies = match &kind {
        RuleKind::Threshold(_) => true,
        RuleKind::State(s) => matches!(s.mode, StateMode::Hold(_)),
        _ => false,
    };
    let flap = match (&common.flap, flap_applies) {
        (Some(_), false) => {
            issues.err(
                file,
                format!("{at}.flap"),
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
                    issues.err(file, format!("{at}.flap"), e);
                    None
                }
            }
        }
    };

    let type_name = RULE_TYPES[match &kind {
        RuleKind::Threshold(_) => 0,
        RuleKind::State(_) => 1,
        RuleKind::Meter(_) => 2,
        RuleKind::Calendar(_) => 3,
        RuleKind::Offline(_) => 4,
    }];
    let default_title = match &kind {
        RuleKind::Threshold(_) => "{point} {value} {unit} beyond {threshold} at {asset}",
        RuleKind::State(_) => "{point} is {value} at {asset}",
        RuleKind::Meter(_) => "Service due at {asset}: {point} {value} (due at {threshold})",
        RuleKind::Calendar(_) => "Inspection due at {asset} on {threshold}",
        RuleKind::Offline(_) => "{asset} offline: no data for {threshold}",
    };
    let mut template = |key: &str, src: Option<&str>| -> Option<Template> {
        let src = src?;
        match Template::parse(src) {
            Ok(t) => {
                let pointless = matches!(kind, RuleKind::Calendar(_) | RuleKind::Offline(_));
                for p in t.placeholders() {
                    if pointless && matches!(p, Placeholder::Point | Placeholder::Unit) {
                        issues.warn(
                            file,
                            format!("{at}.{key}"),
                            format!(
                                "{{{}}} is empty for {type_name} rules (they watch no point)",
                                p.name()
                            ),
                        );
                    }
                }
                Some(t)
            }
            Err(e) => {
                issues.err(file, format!("{at}.{key}"), e);
                None
            }
        }
    };
    let title = template(
        "title",
        Some(common.title.as_deref().unwrap_or(default_title)),
    );
    let description = template("description", common.description.as_deref());
    if issues.errors.len() > before {
        return None;
    }

    let is_offline = matches!(kind, RuleKind::Offline(_));
    let work_order = common.work_order.unwrap_or(match kind {
        RuleKind::Meter(_) => WorkOrderKind::Preventive,
        RuleKind::Calendar(_) => WorkOrderKind::Inspection,
        _ => WorkOrderKind::Corrective,
    });
    Some(Rule {
        id: Arc::from(common.id.trim()),
        file: file.to_string(),
        index,
        kind,
        priority: common.priority.unwrap_or(Priority::Normal),
        work_order,
        title: title?,
        description,
        auto_resolve: common.auto_resolve.unwrap_or(is_offline),
        unless,
        flap,
        gateway: gateway.clone(),
        assets: kept.iter().map(|a| a.id.clone()).collect(),
    })
}

fn point_of<'a>(a: &'a AssetInfo, name: &str) -> Option<&'a PointInfo> {
    a.points.iter().find(|p| &*p.name == name)
}

fn points_hint(a: Option<&Arc<AssetInfo>>) -> String {
    match a {
        Some(a) if !a.points.is_empty() => {
            let names: Vec<&str> = a.points.iter().map(|p| &*p.name).collect();
            format!(" (profile {} has: {})", a.profile, names.join(", "))
        }
        _ => String::new(),
    }
}

/// `a gauge`, `an alarm`, ...
fn kind_name(k: PointKind) -> &'static str {
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
fn check_values_fit(values: &[StateValue], p: &PointInfo) -> Result<(), String> {
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
            return Err(format!(
                "point {:?} is {} point: expected {expected}, found {}",
                p.name,
                kind_name(p.kind),
                match v {
                    StateValue::Name(s) => format!("{s:?}"),
                    other => other.text(),
                }
            ));
        }
    }
    Ok(())
}

fn nanos(d: Option<Duration>) -> i64 {
    d.map_or(0, |d| i64::try_from(d.0.as_nanos()).unwrap_or(i64::MAX))
}

/// One rule being validated against its matched assets.
struct RuleCx<'a> {
    file: &'a str,
    at: &'a str,
    matched: &'a [&'a Arc<AssetInfo>],
}

type Parsed<'a> = Option<(RuleKind, Vec<&'a Arc<AssetInfo>>)>;

/// The error message of the first matched asset whose point `misfit` objects to.
fn first_misfit<A: AsRef<AssetInfo>>(
    with: &[(A, &PointInfo)],
    misfit: impl Fn(&AssetInfo, &PointInfo) -> Option<String>,
) -> Option<String> {
    with.iter().find_map(|(a, p)| misfit(a.as_ref(), p))
}

impl<'a> RuleCx<'a> {
    fn err(&self, issues: &mut Issues, key: &str, msg: impl Into<String>) {
        let path = if key.is_empty() {
            self.at.to_string()
        } else {
            format!("{}.{key}", self.at)
        };
        issues.err(self.file, path, msg);
    }

    /// The matched assets that have `point`, with it; the others are skipped with a warning.
    fn with_point(
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

    fn threshold(&self, c: ThresholdConfig, issues: &mut Issues) -> Parsed<'a> {
        let before = issues.errors.len();
        let above = c.above.map(|n| n.0);
        let below = c.below.map(|n| n.0);
        if above.is_none() && below.is_none() {
            self.err(issues, "", "a threshold rule needs `above` and/or `below`");
            return None;
        }
        let both = above.is_some() && below.is_some();
        if both && c.clear.is_some() {
            self.err(
                issues,
                "clear",
                "with both `above` and `below`, write `clear_above` and `clear_below` (`clear` is for one limit)",
            );
        }
        if c.clear.is_some() && (c.clear_above.is_some() || c.clear_below.is_some()) {
            self.err(
                issues,
                "clear",
                "write `clear` or `clear_above`/`clear_below`, not both",
            );
        }
        if c.clear_above.is_some() && above.is_none() {
            self.err(issues, "clear_above", "`clear_above` needs `above`");
        }
        if c.clear_below.is_some() && below.is_none() {
            self.err(issues, "clear_below", "`clear_below` needs `below`");
        }
        let clear_key = |specific: &'static str| if c.clear.is_some() { "clear" } else { specific };
        let clear_above = match above {
            Some(a) => {
                let v = c
                    .clear_above
                    .or(c.clear.filter(|_| !both))
                    .map_or(a, |n| n.0);
                if v > a {
                    self.err(
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
                let v = c
                    .clear_below
                    .or(c.clear.filter(|_| !both))
                    .map_or(b, |n| n.0);
                if v < b {
                    self.err(
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
                self.err(
                    issues,
                    "below",
                    format!("`below` ({b}) must be less than `above` ({a})"),
                );
            } else if clear_below > clear_above {
                self.err(
                    issues,
                    "clear_below",
                    format!(
                        "the clear levels overlap: clear_below ({clear_below}) must not exceed clear_above ({clear_above})"
                    ),
                );
            }
        }
        let with = self.with_point(&c.point, issues)?;
        if let Some(m) = first_misfit(&with, |a, p| {
            if matches!(p.kind, PointKind::Alarm | PointKind::Event) {
                return Some(format!(
                    "point {:?} of asset {} is {} point (true or false): use type = \"state\" with equals = true",
                    c.point,
                    a.id,
                    kind_name(p.kind)
                ));
            }
            (!p.numeric).then(|| {
                format!(
                    "point {:?} of asset {} is not written as a number (a state without `output = \"integer\"` is a string): compare it with type = \"state\" and equals, or declare output = \"integer\" in its profile",
                    c.point, a.id
                )
            })
        }) {
            self.err(issues, "point", m);
        }
        if issues.errors.len() > before {
            return None;
        }
        let spec = ThresholdSpec {
            point: Arc::from(c.point.as_str()),
            above,
            below,
            clear_above,
            clear_below,
            delays: Delays {
                on_ns: nanos(c.on_delay),
                off_ns: nanos(c.clear_for),
            },
        };
        Some((
            RuleKind::Threshold(spec),
            with.into_iter().map(|(a, _)| a).collect(),
        ))
    }

    fn state(&self, c: StateConfig, issues: &mut Issues) -> Parsed<'a> {
        let before = issues.errors.len();
        let mode = match (c.count, c.within) {
            (Some(_), _) if c.on_delay.is_some() => {
                self.err(
                    issues,
                    "count",
                    "`for` and `count` do not combine: `for` holds one state for a time, `count` counts entries into it `within` a window",
                );
                return None;
            }
            (Some(_), _) if c.clear_for.is_some() => {
                self.err(
                    issues,
                    "clear_for",
                    "`clear_for` does not apply to a count window",
                );
                return None;
            }
            (Some(n), Some(w)) => {
                if n == 0 || n > MAX_COUNT {
                    self.err(
                        issues,
                        "count",
                        format!("expected a count from 1 to {MAX_COUNT}, found {n}"),
                    );
                    return None;
                }
                let within_ns = nanos(Some(w));
                if within_ns <= 0 {
                    self.err(issues, "within", "expected a window longer than zero");
                    return None;
                }
                StateMode::Count {
                    count: n,
                    within_ns,
                }
            }
            (Some(_), None) => {
                self.err(
                    issues,
                    "within",
                    "required with `count`: the window, such as \"24h\"",
                );
                return None;
            }
            (None, Some(_)) => {
                self.err(
                    issues,
                    "count",
                    "required with `within`: how many entries, such as 3",
                );
                return None;
            }
            (None, None) => StateMode::Hold(Delays {
                on_ns: nanos(c.on_delay),
                off_ns: nanos(c.clear_for),
            }),
        };
        let with = self.with_point(&c.point, issues)?;
        for (a, p) in &with {
            let momentary = matches!(p.kind, PointKind::Alarm | PointKind::Event);
            match &c.equals {
                None if !momentary => {
                    self.err(
                        issues,
                        "equals",
                        format!(
                            "required: point {:?} of asset {} is {} point (only alarm and event points default to equals = true)",
                            c.point,
                            a.id,
                            kind_name(p.kind)
                        ),
                    );
                    break;
                }
                None => {}
                Some(v) => {
                    if let Err(e) = check_values_fit(&v.0, p) {
                        self.err(issues, "equals", format!("asset {}: {e}", a.id));
                        break;
                    }
                }
            }
            if p.kind == PointKind::Event
                && matches!(mode, StateMode::Hold(d) if d != Delays::default())
            {
                self.err(
                    issues,
                    if c.on_delay.is_some() { "for" } else { "clear_for" },
                    format!(
                        "point {:?} of asset {} is an event point (a momentary occurrence that never lasts or clears): use `count` and `within`, or neither",
                        c.point, a.id
                    ),
                );
                break;
            }
        }
        if issues.errors.len() > before {
            return None;
        }
        let spec = StateSpec {
            point: Arc::from(c.point.as_str()),
            equals: c.equals.map(|v| StateSet(v.0)),
            mode,
        };
        Some((
            RuleKind::State(spec),
            with.into_iter().map(|(a, _)| a).collect(),
        ))
    }

    fn meter(&self, c: MeterConfig, issues: &mut Issues) -> Parsed<'a> {
        let before = issues.errors.len();
        let every = c.every.0;
        if every <= 0.0 {
            self.err(
                issues,
                "every",
                format!("expected a number of units greater than zero, found {every}"),
            );
            return None;
        }
        let lead = match c.lead.unwrap_or(Lead::Percent(5.0)) {
            Lead::Percent(p) if (0.0..100.0).contains(&p) => every * p / 100.0,
            Lead::Units(u) if u >= 0.0 && u < every => u,
            Lead::Percent(p) => {
                self.err(
                    issues,
                    "lead",
                    format!("expected a percentage from 0% to below 100%, found {p}%"),
                );
                return None;
            }
            Lead::Units(u) => {
                self.err(
                    issues,
                    "lead",
                    format!(
                        "expected a number of units from 0 to below every ({every}), found {u}"
                    ),
                );
                return None;
            }
        };
        if let Some(b) = c.baseline
            && b.0 < 0.0
        {
            self.err(
                issues,
                "baseline",
                format!("expected a counter reading (0 or more), found {}", b.0),
            );
        }
        if let Some(r) = c.max_rate
            && r.0 <= 0.0
        {
            self.err(
                issues,
                "max_rate",
                format!("expected units per hour greater than zero, found {}", r.0),
            );
        }
        let with = self.with_point(&c.point, issues)?;
        if let Some(m) = first_misfit(&with, |a, p| {
            (p.kind != PointKind::Counter).then(|| {
                format!(
                    "a meter rule needs a counter point: {:?} of asset {} is {} point",
                    c.point,
                    a.id,
                    kind_name(p.kind)
                )
            })
        }) {
            self.err(issues, "point", m);
        }
        if issues.errors.len() > before {
            return None;
        }
        let spec = MeterSpec {
            point: Arc::from(c.point.as_str()),
            every,
            lead,
            baseline: c.baseline.map(|b| b.0),
            max_rate: c.max_rate.map(|r| r.0),
        };
        Some((
            RuleKind::Meter(spec),
            with.into_iter().map(|(a, _)| a).collect(),
        ))
    }

    fn calendar(
        &self,
        c: CalendarConfig,
        tz: &Result<Tz, String>,
        issues: &mut Issues,
    ) -> Parsed<'a> {
        let tz = match tz {
            Ok(tz) => *tz,
            Err(e) => {
                self.err(issues, "start", e.clone());
                return None;
            }
        };
        let every: Every = match c.every.parse() {
            Ok(e) => e,
            Err(e) => {
                self.err(issues, "every", e);
                return None;
            }
        };
        let start = match calendar::parse_start(&c.start, tz) {
            Ok(s) => s,
            Err(e) => {
                self.err(issues, "start", e);
                return None;
            }
        };
        let lead_ns = nanos(c.lead);
        let period_ns = match every {
            Every::Fixed(ns) => ns,
            // The shortest month.
            Every::Months(m) => i64::from(m).saturating_mul(28 * 86_400_000_000_000),
        };
        if lead_ns >= period_ns {
            self.err(
                issues,
                "lead",
                format!(
                    "the lead must be shorter than the period ({}), found {}",
                    c.every,
                    humantime::format_duration(c.lead.map(|d| d.0).unwrap_or_default())
                ),
            );
            return None;
        }
        let spec = CalendarSpec {
            every,
            every_text: c.every.trim().to_string(),
            start,
            tz,
            lead_ns,
        };
        Some((RuleKind::Calendar(spec), self.matched.to_vec()))
    }

    fn offline(&self, c: OfflineConfig, issues: &mut Issues) -> Parsed<'a> {
        let after_ns = nanos(Some(c.after));
        if after_ns <= 0 {
            self.err(
                issues,
                "after",
                "expected a duration longer than zero, such as \"5m\"",
            );
            return None;
        }
        Some((
            RuleKind::Offline(OfflineSpec { after_ns }),
            self.matched.to_vec(),
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::profile::DeviceType;
    use std::collections::BTreeMap;

    pub(crate) fn point(name: &str, kind: PointKind, unit: Option<&str>) -> PointInfo {
        PointInfo {
            name: Arc::from(name),
            kind,
            unit: unit.map(Into::into),
            numeric: matches!(kind, PointKind::Gauge | PointKind::Counter),
        }
    }

    pub(crate) fn pump(id: &str) -> Arc<AssetInfo> {
        Arc::new(AssetInfo {
            id: Arc::from(id),
            name: Some(format!("Pump {id}")),
            site: Some("tower-a".into()),
            building: Some("A".into()),
            floor: Some("B2".into()),
            device_type: DeviceType::Pump,
            profile: "pump".into(),
            tags: BTreeMap::new(),
            points: vec![
                point("discharge_pressure_bar", PointKind::Gauge, Some("bar")),
                point("local_mode", PointKind::State, None),
                point("run_hours", PointKind::Counter, Some("h")),
                point("fault", PointKind::Alarm, None),
                point("dry_run", PointKind::Event, None),
                point("mode", PointKind::State, None),
            ],
        })
    }

    pub(crate) fn lift(id: &str) -> Arc<AssetInfo> {
        Arc::new(AssetInfo {
            id: Arc::from(id),
            name: None,
            site: Some("tower-a".into()),
            building: Some("A".into()),
            floor: None,
            device_type: DeviceType::Elevator,
            profile: "elevator".into(),
            tags: BTreeMap::new(),
            points: vec![
                point("trips_total", PointKind::Counter, None),
                point("door_state", PointKind::State, None),
                point("service_mode", PointKind::State, None),
            ],
        })
    }

    /// `[[rules]]` tables from TOML, as the loader hands them over.
    pub(crate) fn items(file: &str, toml: &str) -> Vec<(String, usize, ConfigValue)> {
        #[derive(Deserialize)]
        struct F {
            rules: Vec<ConfigValue>,
        }
        let f: F = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        f.rules
            .into_iter()
            .enumerate()
            .map(|(i, v)| (file.to_string(), i, v))
            .collect()
    }

    pub(crate) fn parse(toml: &str) -> Result<(Vec<Rule>, Vec<String>), Vec<ConfigIssue>> {
        parse_rules(
            &items("rules.toml", toml),
            &[pump("P-1"), pump("P-2"), lift("EL-1")],
            "gw1",
            "Asia/Shanghai",
        )
    }

    fn errors(toml: &str) -> Vec<String> {
        parse(toml)
            .expect_err("expected errors")
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn parses_every_type() {
        let (rules, warnings) = parse(
            r#"
[[rules]]
id = "pump-low-pressure"
type = "threshold"
match = { device_type = "pump" }
point = "discharge_pressure_bar"
below = 2.0
clear = 2.3
for = "30s"
unless = { point = "local_mode", equals = true }
priority = "high"
work_order = "corrective"
title = "Low discharge pressure at {asset}"

[[rules]]
id = "door-faults"
type = "state"
match = { device_type = "elevator" }
point = "door_state"
equals = ["fault", "stuck"]
count = 3
within = "24h"

[[rules]]
id = "lift-trips"
type = "meter"
match = { ids = "EL-1" }
point = "trips_total"
every = 100000
lead = "5%"

[[rules]]
id = "lift-half-monthly"
type = "calendar"
match = { device_type = "elevator" }
every = "15d"
start = 2026-01-01
lead = "2d"

[[rules]]
id = "comm-lost"
type = "offline"
after = "5m"
"#,
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(rules.len(), 5);
        let t = &rules[0];
        assert_eq!(t.type_name(), "threshold");
        assert_eq!(&*t.assets, &[Arc::from("P-1"), Arc::from("P-2")]);
        assert_eq!(t.priority, Priority::High);
        assert!(!t.auto_resolve);
        assert_eq!(
            t.describe(),
            "discharge_pressure_bar < 2 (clears >= 2.3) for 30s, unless local_mode = true -> high corrective"
        );
        let RuleKind::Meter(m) = &rules[2].kind else {
            panic!()
        };
        assert_eq!(m.lead, 5000.0);
        assert_eq!(rules[2].work_order, WorkOrderKind::Preventive);
        let RuleKind::Calendar(c) = &rules[3].kind else {
            panic!()
        };
        assert_eq!(
            c.start.to_rfc3339(),
            "2025-12-31T16:00:00+00:00",
            "local midnight in Asia/Shanghai"
        );
        assert_eq!(rules[4].assets.len(), 3);
        assert!(
            rules[4].auto_resolve,
            "offline rules auto-resolve by default"
        );
        assert!(rules[4].flap.is_none() && rules[0].flap.is_some());
    }

    #[test]
    fn errors_carry_file_and_path() {
        let e = errors(
            r#"
[[rules]]
id = "a"
type = "offline"
after = "5m"

[[rules]]
id = "b"
type = "threshold"
point = "discharge_pressure_bar"
above = "high"
"#,
        );
        assert_eq!(
            e,
            ["rules.toml: rules[1].above: invalid type: string \"high\", expected a number"]
        );

        let e = errors(
            "[[rules]]\nid = \"a\"\ntype = \"threshold\"\npoint = \"discharge_pressure_bar\"\nabove = 5\nabve = 3\n",
        );
        assert!(
            e[0].starts_with(
                "rules.toml: rules[0].abve: unknown field `abve`, expected one of `point`, `above`"
            ),
            "{e:?}"
        );
        assert!(e[0].contains("or one of the keys every rule has"), "{e:?}");

        let e = errors("[[rules]]\nid = \"a\"\ntype = \"thresold\"\n");
        assert_eq!(
            e,
            [
                "rules.toml: rules[0].type: unknown rule type \"thresold\": expected one of threshold, state, meter, calendar, offline"
            ]
        );

        let e = errors(
            "[[rules]]\nid = \"a\"\ntype = \"offline\"\nafter = \"5m\"\npriority = \"critical\"\n",
        );
        assert_eq!(
            e,
            [
                "rules.toml: rules[0].priority: expected one of urgent, high, normal, low, found \"critical\""
            ]
        );

        let e = errors("[[rules]]\nid = \"a\"\ntype = \"threshold\"\nabove = 3\n");
        assert_eq!(e, ["rules.toml: rules[0].point: required key is missing"]);

        let e = errors(
            "[[rules]]\nid = \"a\"\ntype = \"offline\"\nafter = \"5m\"\nmatch = { ids = \"P-1\", colour = \"red\" }\n",
        );
        assert!(
            e[0].starts_with("rules.toml: rules[0].match.colour: unknown field `colour`"),
            "{e:?}"
        );

        let e = errors(
            "[[rules]]\nid = \"a\"\ntype = \"offline\"\nafter = \"5m\"\ntitle = \"{asset} down {since}\"\n",
        );
        assert!(
            e[0].starts_with(
                "rules.toml: rules[0].title: unknown placeholder {since}: expected one of {asset}"
            ),
            "{e:?}"
        );

        let e = errors(
            "[[rules]]\nid = \"a\"\ntype = \"state\"\npoint = \"door_state\"\nequals = [\"open\", [1]]\n",
        );
        assert!(
            e[0].starts_with(
                "rules.toml: rules[0].equals[1]: invalid type: sequence, expected a boolean"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn validation_errors() {
        let one = |toml: &str| errors(&format!("[[rules]]\nid = \"r\"\n{toml}"));
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
        assert_eq!(
            one(
                "type = \"state\"\npoint = \"door_state\"\nequals = \"fault\"\nfor = \"1m\"\ncount = 3\nwithin = \"1d\"\n"
            ),
            [
                "rules.toml: rules[0].count: `for` and `count` do not combine: `for` holds one state for a time, `count` counts entries into it `within` a window"
            ]
        );
        assert_eq!(
            one("type = \"offline\"\nafter = \"5m\"\nmatch = { device_type = \"escalator\" }\n"),
            [
                "rules.toml: rules[0].match.device_type: unknown device_type \"escalator\": expected elevator, pump, fire_panel, access_door or other"
            ]
        );
        assert_eq!(
            one("type = \"offline\"\nafter = \"5m\"\nmatch = { building = \"Z\" }\n"),
            [
                "rules.toml: rules[0].match: the rule matches no asset (of 3 configured devices); check ids, profile, device_type, building, site, floor and tags"
            ]
        );
        let e = one("type = \"threshold\"\npoint = \"dischrge\"\nabove = 1\n");
        assert!(e[0].starts_with("rules.toml: rules[0].point: no matched asset has a point \"dischrge\" (profile pump has: discharge_pressure_bar,"), "{e:?}");
        assert_eq!(
            one("type = \"meter\"\npoint = \"discharge_pressure_bar\"\nevery = 100\n"),
            [
                "rules.toml: rules[0].point: a meter rule needs a counter point: \"discharge_pressure_bar\" of asset P-1 is a gauge point"
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
        assert_eq!(
            one("type = \"calendar\"\nevery = \"fortnightly\"\nstart = \"2026-01-01\"\n"),
            [
                "rules.toml: rules[0].every: expected a period such as \"15d\", \"1w\", or calendar months and years \"1mo\", \"3mo\", \"1y\", found \"fortnightly\""
            ]
        );
        assert_eq!(
            one("type = \"meter\"\npoint = \"run_hours\"\nevery = 100\nflap = { window = 10 }\n"),
            [
                "rules.toml: rules[0].flap: the flap guard applies to threshold rules and state rules with `equals`/`for`, not to count windows, meter, calendar or offline rules"
            ]
        );
        let e = one("type = \"offline\"\nafter = 300\n");
        assert_eq!(
            e,
            [
                "rules.toml: rules[0].after: expected a duration string with a unit such as \"300s\", found the bare number 300"
            ]
        );
    }

    #[test]
    fn duplicate_ids_name_both_files() {
        let mut it = items(
            "main.toml",
            "[[rules]]\nid = \"x\"\ntype = \"offline\"\nafter = \"5m\"\n",
        );
        it.extend(items(
            "conf.d/10-lifts.toml",
            "[[rules]]\nid = \"x\"\ntype = \"offline\"\nafter = \"1m\"\n",
        ));
        let e = parse_rules(&it, &[pump("P-1")], "gw", "UTC").unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "conf.d/10-lifts.toml: rules[0].id: duplicate rule id \"x\": also defined at main.toml: rules[0]"
        );
    }

    #[test]
    fn assets_lacking_the_point_are_skipped_with_a_warning() {
        let (rules, warnings) = parse(
            "[[rules]]\nid = \"r\"\ntype = \"state\"\npoint = \"door_state\"\nequals = \"open\"\nfor = \"10m\"\nunless = { point = \"service_mode\", equals = \"inspection\" }\n",
        )
        .unwrap();
        assert_eq!(&*rules[0].assets, &[Arc::from("EL-1")]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains(
                "asset P-1 (profile pump) has no point \"door_state\": the rule skips it"
            )
        );
    }

    /// The default rule files shipped in `config/rules/` parse, without warnings, against
    /// assets of the built-in profiles (plus a pump tagged as a fire pump).
    #[test]
    fn shipped_default_rules_parse_against_builtin_profiles() {
        let mut assets = Vec::new();
        for name in crate::profile::builtin::names() {
            let p = crate::profile::builtin::load(name)
                .expect("listed")
                .expect("valid")
                .build()
                .expect("valid profile")
                .0;
            let points: Vec<PointInfo> = p
                .points
                .iter()
                .map(|q| PointInfo {
                    name: q.name.clone(),
                    kind: q.kind,
                    unit: q.unit.clone(),
                    numeric: matches!(
                        q.field_type(),
                        crate::profile::FieldType::Float | crate::profile::FieldType::Integer
                    ),
                })
                .collect();
            let mut tags = BTreeMap::new();
            for fire in [false, true] {
                if fire {
                    if p.device_type != DeviceType::Pump {
                        continue;
                    }
                    tags.insert("role".to_string(), "fire_pump".to_string());
                }
                assets.push(Arc::new(AssetInfo {
                    id: Arc::from(format!("{name}-{fire}")),
                    name: None,
                    site: Some("s".into()),
                    building: Some("A".into()),
                    floor: None,
                    device_type: p.device_type,
                    profile: p.name.clone(),
                    tags: tags.clone(),
                    points: points.clone(),
                }));
            }
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rules");
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the shipped rules {}: {e}", dir.display()));
        let mut files = 0;
        for f in entries {
            files += 1;
            let f = f.unwrap().path();
            let text = std::fs::read_to_string(&f).unwrap();
            let it = items(&f.display().to_string(), &text);
            match parse_rules(&it, &assets, "gw", "Asia/Shanghai") {
                Ok((rules, warnings)) => {
                    assert!(!rules.is_empty(), "{}", f.display());
                    assert!(warnings.is_empty(), "{warnings:#?}");
                }
                Err(e) => panic!(
                    "{}",
                    e.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
        // One file per built-in device type at least: a test that read none would prove nothing.
        assert!(files >= 4, "only {files} rule files in {}", dir.display());
    }
}
