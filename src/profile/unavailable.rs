//! `unavailable_when`: the states in which a device that answers is still out of service (a lift
//! out of automatic service, a pump tripped, a fire panel in trouble, a door that cannot
//! secure). Each condition reads one point of the profile; any one that holds makes an online
//! asset "unavailable" in the availability history. A point not read yet never holds.
//!
//! Written like a state rule's `equals` (`crate::rules`): `{ point = "fault", equals = true }`,
//! `{ point = "service_mode", not_equals = "auto" }`, `{ point = "door_state", equals =
//! ["locked_no_sensor", "unlocked_no_sensor"] }`, or a numeric comparison: `{ point =
//! "fault_level", at_least = 3 }` (also `above`, `below`, `at_most`).

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::{FieldType, Point, PointKind};
use crate::model::Value;

/// One `unavailable_when` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnavailableConfig {
    /// A point of the same profile.
    pub point: String,
    #[serde(default)]
    pub equals: Option<Expected>,
    #[serde(default)]
    pub not_equals: Option<Expected>,
    #[serde(default)]
    pub above: Option<f64>,
    #[serde(default)]
    pub at_least: Option<f64>,
    #[serde(default)]
    pub below: Option<f64>,
    #[serde(default)]
    pub at_most: Option<f64>,
}

/// A value a point may hold, as written in `equals` and `not_equals`.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    Bool(bool),
    Number(f64),
    /// A state name (as the point's `map` names it) or a text.
    Name(String),
}

impl Expect {
    /// Whether a decoded value is this one. Booleans and numbers compare as numbers (`true` is
    /// 1); a name compares with the decoded text; a number also matches an enum value written
    /// as its number (one missing from the point's `map`). As a state rule's `equals`.
    #[inline]
    pub fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Expect::Name(n), Value::Str(s)) => n == s,
            (Expect::Name(n), Value::Bool(b)) => {
                n.eq_ignore_ascii_case(if *b { "true" } else { "false" })
            }
            (Expect::Name(_), _) => false,
            (Expect::Bool(b), Value::Str(s)) => {
                s.eq_ignore_ascii_case(if *b { "true" } else { "false" })
            }
            (Expect::Bool(b), v) => v.as_f64().is_some_and(|x| (x != 0.0) == *b),
            (Expect::Number(n), Value::Str(s)) => s.trim().parse::<f64>().is_ok_and(|x| x == *n),
            (Expect::Number(n), v) => v.as_f64().is_some_and(|x| x == *n),
        }
    }

    fn text(&self) -> String {
        match self {
            Expect::Bool(b) => b.to_string(),
            Expect::Number(n) => n.to_string(),
            Expect::Name(s) => format!("{s:?}"),
        }
    }
}

/// `equals` / `not_equals`: one value or a non-empty list of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected(pub Vec<Expect>);

struct ExpectVisitor {
    list: bool,
}

impl<'de> de::Visitor<'de> for ExpectVisitor {
    type Value = Vec<Expect>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.list {
            f.write_str("a boolean, a number, a state name, or a list of them")
        } else {
            f.write_str("a boolean, a number or a state name")
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(vec![Expect::Bool(v)])
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(vec![Expect::Number(v as f64)])
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(vec![Expect::Number(v as f64)])
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(vec![Expect::Number(v)])
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(vec![Expect::Name(v.to_string())])
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if !self.list {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut out = Vec::new();
        while let Some(one) = seq.next_element::<OneExpect>()? {
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

struct OneExpect(Expect);

impl<'de> Deserialize<'de> for OneExpect {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_any(ExpectVisitor { list: false })?;
        v.into_iter()
            .next()
            .map(OneExpect)
            .ok_or_else(|| de::Error::custom("expected a value"))
    }
}

impl<'de> Deserialize<'de> for Expected {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ExpectVisitor { list: true })
            .map(Expected)
    }
}

/// What a condition asks of its point's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Equals(Vec<Expect>),
    NotEquals(Vec<Expect>),
    Above(f64),
    AtLeast(f64),
    Below(f64),
    AtMost(f64),
}

/// A validated `unavailable_when` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Unavailability {
    /// Index of the point in the profile's `points`.
    pub point: usize,
    pub test: Test,
}

impl Unavailability {
    /// Whether `v`, the point's latest good value, makes the asset unavailable.
    #[inline]
    pub fn holds(&self, v: &Value) -> bool {
        let num = || match v {
            Value::Str(s) => s.trim().parse::<f64>().ok(),
            other => other.as_f64(),
        };
        match &self.test {
            Test::Equals(set) => set.iter().any(|e| e.matches(v)),
            Test::NotEquals(set) => !set.iter().any(|e| e.matches(v)),
            Test::Above(x) => num().is_some_and(|n| n > *x),
            Test::AtLeast(x) => num().is_some_and(|n| n >= *x),
            Test::Below(x) => num().is_some_and(|n| n < *x),
            Test::AtMost(x) => num().is_some_and(|n| n <= *x),
        }
    }

    /// The condition in plain words, given the profile's points: `fault_level at least 3`.
    pub fn describe(&self, points: &[Point]) -> String {
        let name = points.get(self.point).map_or("?", |p| &*p.name);
        let list = |set: &[Expect]| {
            set.iter()
                .map(|e| match e {
                    Expect::Name(s) => s.clone(),
                    other => other.text(),
                })
                .collect::<Vec<_>>()
                .join(" or ")
        };
        match &self.test {
            Test::Equals(set) if set == &[Expect::Bool(true)] => name.to_string(),
            Test::Equals(set) => format!("{name} is {}", list(set)),
            Test::NotEquals(set) => format!("{name} is not {}", list(set)),
            Test::Above(x) => format!("{name} above {x}"),
            Test::AtLeast(x) => format!("{name} at least {x}"),
            Test::Below(x) => format!("{name} below {x}"),
            Test::AtMost(x) => format!("{name} at most {x}"),
        }
    }
}

/// What a point's values are, for the checks: true/false, numbers, or names.
enum Values<'a> {
    Bool,
    Number,
    /// The names its `map` gives (empty: any text).
    Names(Vec<&'a str>),
}

fn values_of<'a>(
    p: &'a Point,
    text_map: &'a std::collections::BTreeMap<String, String>,
) -> Values<'a> {
    match p.field_type() {
        FieldType::Boolean => Values::Bool,
        FieldType::Float | FieldType::Integer => Values::Number,
        FieldType::String => {
            let mut names: Vec<&str> = p
                .transform
                .map
                .iter()
                .flat_map(|m| m.values())
                .chain(text_map.values())
                .map(String::as_str)
                .collect();
            names.sort_unstable();
            names.dedup();
            Values::Names(names)
        }
    }
}

fn kind_name(k: PointKind) -> &'static str {
    match k {
        PointKind::Gauge => "a gauge",
        PointKind::Counter => "a counter",
        PointKind::State => "a state",
        PointKind::Alarm => "an alarm",
        PointKind::Event => "an event",
    }
}

/// Validates the `unavailable_when` entries against the profile's points; errors come back as
/// (key path inside the profile, message).
pub(super) fn validate(
    items: &[UnavailableConfig],
    points: &[Point],
    text_maps: &[std::collections::BTreeMap<String, String>],
    errors: &mut Vec<(String, String)>,
) -> Vec<Unavailability> {
    let mut out = Vec::with_capacity(items.len());
    let empty = std::collections::BTreeMap::new();
    for (i, c) in items.iter().enumerate() {
        let at = |key: &str| format!("unavailable_when[{i}].{key}");
        let Some((pi, p)) = points.iter().enumerate().find(|(_, p)| *p.name == c.point) else {
            let names: Vec<&str> = points.iter().map(|p| &*p.name).collect();
            errors.push((
                at("point"),
                format!(
                    "no point {:?} in this profile (its points: {})",
                    c.point,
                    names.join(", ")
                ),
            ));
            continue;
        };
        let mut tests: Vec<(&str, Test)> = Vec::new();
        if let Some(v) = &c.equals {
            tests.push(("equals", Test::Equals(v.0.clone())));
        }
        if let Some(v) = &c.not_equals {
            tests.push(("not_equals", Test::NotEquals(v.0.clone())));
        }
        for (key, v, make) in [
            ("above", c.above, Test::Above as fn(f64) -> Test),
            ("at_least", c.at_least, Test::AtLeast),
            ("below", c.below, Test::Below),
            ("at_most", c.at_most, Test::AtMost),
        ] {
            if let Some(x) = v {
                if !x.is_finite() {
                    errors.push((at(key), format!("expected a finite number, found {x}")));
                }
                tests.push((key, make(x)));
            }
        }
        let (key, test) = match tests.len() {
            1 => tests.remove(0),
            0 => {
                errors.push((
                    format!("unavailable_when[{i}]"),
                    "expected one test of the point: equals, not_equals, above, at_least, below or at_most".into(),
                ));
                continue;
            }
            _ => {
                let keys: Vec<&str> = tests.iter().map(|(k, _)| *k).collect();
                errors.push((
                    format!("unavailable_when[{i}].{}", keys[1]),
                    format!(
                        "one test per condition, found {}: write one condition for each (any one makes the asset unavailable)",
                        keys.join(" and ")
                    ),
                ));
                continue;
            }
        };
        let what = kind_name(p.kind);
        let values = values_of(p, text_maps.get(pi).unwrap_or(&empty));
        let misfit = match (&test, &values) {
            (Test::Equals(set) | Test::NotEquals(set), Values::Bool) => {
                set.iter().find(|e| !matches!(e, Expect::Bool(_))).map(|e| {
                    format!(
                        "point {:?} is {what} of true or false: expected true or false, found {}",
                        c.point,
                        e.text()
                    )
                })
            }
            (Test::Equals(set) | Test::NotEquals(set), Values::Number) => set
                .iter()
                .find(|e| !matches!(e, Expect::Number(_)))
                .map(|e| {
                    format!(
                        "point {:?} is {what} with numbers: expected a number, found {}",
                        c.point,
                        e.text()
                    )
                }),
            (Test::Equals(set) | Test::NotEquals(set), Values::Names(names)) => {
                let keys = p.transform.map.as_ref();
                set.iter()
                    .find(|e| match e {
                        Expect::Name(n) => !names.is_empty() && !names.contains(&n.as_str()),
                        // A number its map names is written as the name, never as the number.
                        Expect::Number(n) => {
                            keys.is_some_and(|m| m.keys().any(|k| *k as f64 == *n))
                        }
                        Expect::Bool(_) => !names.is_empty(),
                    })
                    .map(|e| {
                        format!(
                            "{} is not a value of point {:?}: its map names {}",
                            e.text(),
                            c.point,
                            names.join(", ")
                        )
                    })
            }
            (_, Values::Bool) => Some(format!(
                "point {:?} is {what} of true or false: a numeric comparison does not apply, use equals",
                c.point
            )),
            (_, Values::Names(names)) if names.is_empty() => Some(format!(
                "point {:?} is {what} of texts: a numeric comparison does not apply, use equals or not_equals",
                c.point
            )),
            (_, Values::Names(names)) => Some(format!(
                "point {:?} is {what} with named values ({}): a numeric comparison does not apply, use equals or not_equals",
                c.point,
                names.join(", ")
            )),
            (_, Values::Number) => None,
        };
        match misfit {
            Some(m) => errors.push((at(key), m)),
            None => out.push(Unavailability { point: pi, test }),
        }
    }
    out
}
