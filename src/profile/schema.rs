//! The telemetry schema: each point's field type, and the check that one measurement's field
//! is never written with two types (InfluxDB fixes a field's type per measurement and refuses a
//! line that changes it).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Profile;
use crate::model::Value;

/// The type of a point's telemetry field. It is a function of the point's declaration only
/// (kind, `map`, the register's bit-ness, `output`), never of a value or a scale, because
/// InfluxDB fixes each field's type per measurement and refuses a line that changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Float,
    Integer,
    Boolean,
    String,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::Boolean => "boolean",
            FieldType::String => "string",
        }
    }

    /// `value` as this type, or `None` when it cannot be one without losing meaning (a
    /// fraction as an integer, a word as a number). Booleans become 1 and 0 as numbers.
    pub fn coerce(self, value: Value) -> Option<Value> {
        // Integers that a float carries exactly (|x| < 2^53).
        const EXACT: f64 = 9_007_199_254_740_992.0;
        match (self, value) {
            (FieldType::Float, Value::Float(f)) => f.is_finite().then_some(Value::Float(f)),
            (FieldType::Float, Value::Int(i)) => Some(Value::Float(i as f64)),
            (FieldType::Float, Value::Bool(b)) => Some(Value::Float(f64::from(u8::from(b)))),
            (FieldType::Float, Value::Str(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Value::Float),
            (FieldType::Integer, Value::Int(i)) => Some(Value::Int(i)),
            (FieldType::Integer, Value::Float(f)) => {
                (f.fract() == 0.0 && f.abs() < EXACT).then_some(Value::Int(f as i64))
            }
            (FieldType::Integer, Value::Bool(b)) => Some(Value::Int(i64::from(b))),
            (FieldType::Integer, Value::Str(s)) => s.trim().parse::<i64>().ok().map(Value::Int),
            (FieldType::Boolean, Value::Bool(b)) => Some(Value::Bool(b)),
            // Only 0 and 1 are a boolean's numbers; 2 or 0.5 means the point is not one.
            (FieldType::Boolean, Value::Int(i)) => match i {
                0 | 1 => Some(Value::Bool(i == 1)),
                _ => None,
            },
            (FieldType::Boolean, Value::Float(f)) => {
                (f == 0.0 || f == 1.0).then_some(Value::Bool(f == 1.0))
            }
            (FieldType::Boolean, Value::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
            (FieldType::String, Value::Str(s)) => Some(Value::Str(s)),
            (FieldType::String, Value::Float(f)) => {
                f.is_finite().then(|| Value::Str(f.to_string()))
            }
            (FieldType::String, v) => Some(Value::Str(v.to_string())),
        }
    }
}

/// Fields of the measurements facilityd writes itself, with their fixed types.
pub const RESERVED_FIELDS: &[(&str, &str, FieldType)] = &[
    ("device_status", "online", FieldType::Boolean),
    ("device_status", "poll_ms", FieldType::Float),
    ("device_status", "errors", FieldType::Integer),
    ("work_order", "id", FieldType::Integer),
    ("work_order", "status", FieldType::String),
    ("work_order", "event", FieldType::String),
    ("work_order", "title", FieldType::String),
];

/// Who writes a field first, for [`Schema`]'s conflict messages.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldOwner {
    pub field_type: FieldType,
    /// `profile "elevator"`, or `facilityd's own device_status`.
    pub by: String,
}

/// The telemetry schema of a set of profiles: each measurement's fields and their types. A
/// field written with two types is a conflict: InfluxDB would refuse the lines of one of them.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    fields: BTreeMap<(String, String), FieldOwner>,
}

/// A point whose field another profile (or facilityd itself) writes with another type.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaConflict {
    /// Index of the point in the profile being added.
    pub point: usize,
    pub measurement: String,
    pub field: String,
    pub field_type: FieldType,
    pub other: FieldOwner,
}

impl std::fmt::Display for SchemaConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "field {:?} of measurement {:?} would be written as {}, but {} writes it as {}; InfluxDB refuses a field with two types: set `output = \"{}\"` or use another measurement",
            self.field,
            self.measurement,
            self.field_type.as_str(),
            self.other.by,
            self.other.field_type.as_str(),
            self.other.field_type.as_str(),
        )
    }
}

impl Schema {
    /// The schema of facilityd's own measurements (`device_status`, `work_order`).
    pub fn new() -> Schema {
        let mut s = Schema::default();
        for (m, f, t) in RESERVED_FIELDS {
            s.fields.insert(
                (m.to_string(), f.to_string()),
                FieldOwner {
                    field_type: *t,
                    by: format!("facilityd's own {m}"),
                },
            );
        }
        s
    }

    /// Adds a profile's fields; returns those that conflict with fields already there (which
    /// keep their first type).
    pub fn add(&mut self, profile: &Profile) -> Vec<SchemaConflict> {
        let mut conflicts = Vec::new();
        for (i, p) in profile.points.iter().enumerate() {
            let key = (profile.measurement.clone(), p.name.to_string());
            let t = p.field_type();
            match self.fields.get(&key) {
                Some(owner) if owner.field_type != t => conflicts.push(SchemaConflict {
                    point: i,
                    measurement: key.0,
                    field: key.1,
                    field_type: t,
                    other: owner.clone(),
                }),
                Some(_) => {}
                None => {
                    self.fields.insert(
                        key,
                        FieldOwner {
                            field_type: t,
                            by: format!("profile {:?}", profile.name),
                        },
                    );
                }
            }
        }
        conflicts
    }

    /// Every field: (measurement, field) and its type and first writer, sorted.
    pub fn fields(&self) -> impl Iterator<Item = (&(String, String), &FieldOwner)> {
        self.fields.iter()
    }
}
