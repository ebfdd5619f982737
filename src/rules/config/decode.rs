//! Decoding the keys of a rule as written, with the key path in every error.
//!
//! serde's internally tagged enums lose the path to a bad key, so each part of a rule (the
//! common keys, the keys of its type) is decoded on its own through `serde_path_to_error`, and
//! the config crate's wording of some errors is replaced with ours.

use config::{Value as ConfigValue, ValueKind};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};

use super::COMMON_KEYS;
use crate::config::{ConfigIssue, clean_message};
use crate::rules::state::StateValue;

/// A number (integer or float); strings and booleans are errors.
#[derive(Debug, Clone, Copy)]
pub(in crate::rules) struct Number(pub f64);

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
pub(in crate::rules) struct StateValues(pub Vec<StateValue>);

impl<'de> Deserialize<'de> for StateValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::profile::unavailable::Expected::deserialize(d).map(|e| StateValues(e.0))
    }
}

/// The values of enums as the config crate names them in its messages.
const ENUM_VALUES: &[(&str, &str)] = &[
    ("Priority", "urgent, high, normal, low"),
    (
        "WorkOrderKind",
        "corrective, preventive, inspection, incident",
    ),
    ("Scope", "building, site"),
];

/// Decodes `value` as `T`; an error is located at `at` + the path inside.
pub(super) fn decode<T: DeserializeOwned>(
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
        let mut message = clean_message(&e.inner().to_string(), ENUM_VALUES);
        if let Some(field) = message
            .strip_prefix("missing configuration field ")
            .or_else(|| message.strip_prefix("missing field "))
        {
            let field = field.trim_matches(|c| c == '"' || c == '`');
            // The config crate names the whole path of a nested key.
            let field = field.rsplit('.').next().unwrap_or(field);
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

/// Splits a `[[rules]]` table into the keys every rule has, the keys of its type, and `type`.
pub(super) fn split_table(
    value: &ConfigValue,
) -> Option<(ConfigValue, ConfigValue, Option<String>)> {
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
