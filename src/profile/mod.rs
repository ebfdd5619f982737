//! Device profiles: the register map and semantics of a device model.
//!
//! A profile is written in TOML (`[[profiles]]` in the config, or one of the built-in files under
//! `src/profile/builtin/`), parsed into [`ProfileConfig`], and validated once into a [`Profile`]
//! whose points carry everything the planner and the decoder need. This file holds the types;
//! `validate.rs` the checks (`ProfileConfig::build`), `schema.rs` the telemetry field types.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

pub mod builtin;
pub mod schema;
pub mod unavailable;
mod validate;

pub use schema::{FieldOwner, FieldType, RESERVED_FIELDS, Schema, SchemaConflict};
pub use unavailable::{Unavailability, UnavailableConfig};
pub use validate::ProfileIssue;

/// A name that line protocol cannot carry faithfully: a backslash (InfluxDB keeps `\\`
/// literally in names, and a trailing one escapes the separator after it) or a control
/// character (tabs and line breaks split lines and fields; NUL is rejected).
pub fn unwritable_name(s: &str) -> bool {
    s.chars().any(|c| c == '\\' || c.is_control())
}

/// The equipment family of a device; selects the default measurement and the default rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    Elevator,
    Pump,
    FirePanel,
    AccessDoor,
    /// An energy meter at a supply point (incomer, riser, plant).
    PowerMeter,
    /// A standby generator set (its controller).
    Generator,
    /// An automatic transfer switch between mains and the generator.
    Ats,
    Other,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Elevator => "elevator",
            DeviceType::Pump => "pump",
            DeviceType::FirePanel => "fire_panel",
            DeviceType::AccessDoor => "access_door",
            DeviceType::PowerMeter => "power_meter",
            DeviceType::Generator => "generator",
            DeviceType::Ats => "ats",
            DeviceType::Other => "other",
        }
    }
}

/// What a point means, which decides how it is written and which rules fit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointKind {
    /// A measurement (float).
    Gauge,
    /// A count that only grows (integer).
    Counter,
    /// An enum or boolean state.
    State,
    /// A boolean condition.
    Alarm,
    /// A momentary occurrence; never "clears", feeds count windows.
    Event,
}

/// The Modbus table a point is read from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    /// Function code 3.
    Holding,
    /// Function code 4.
    Input,
    /// Function code 1.
    Coil,
    /// Function code 2.
    Discrete,
}

impl RegisterKind {
    /// Coils and discrete inputs are bit tables; the others are 16-bit registers.
    pub fn is_bit(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::Discrete)
    }

    /// The most items one request may read (Modbus application protocol v1.1b3, 6.1-6.4).
    pub fn protocol_limit(self) -> u16 {
        if self.is_bit() { 2000 } else { 125 }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RegisterKind::Holding => "holding",
            RegisterKind::Input => "input",
            RegisterKind::Coil => "coil",
            RegisterKind::Discrete => "discrete",
        }
    }
}

/// Register data types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    String,
}

impl DataType {
    /// Registers occupied (strings: `length`).
    pub fn registers(self, length: u16) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => length,
        }
    }

    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DataType::U16
                | DataType::I16
                | DataType::U32
                | DataType::I32
                | DataType::U64
                | DataType::I64
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String => "string",
        }
    }
}

/// Byte order of multi-register values, named as Telegraf does: the letters are the value's
/// bytes from most to least significant, in the order they travel on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, clap::ValueEnum)]
pub enum ByteOrder {
    /// Big-endian (the Modbus default).
    #[default]
    ABCD,
    /// Little-endian.
    DCBA,
    /// Big-endian words, bytes swapped within each word.
    BADC,
    /// Little-endian words (word swap), bytes big-endian within each word.
    CDAB,
}

/// A point as written in a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// Field name in telemetry; unique within the profile.
    pub name: String,
    /// gauge | counter | state | alarm | event.
    pub kind: PointKind,
    /// Unit of the engineering value, for display and work-order evidence.
    #[serde(default)]
    pub unit: Option<String>,
    /// Modbus table: holding | input | coil | discrete.
    #[serde(default)]
    pub register: Option<RegisterKind>,
    /// 0-based wire address.
    #[serde(default)]
    pub address: Option<u32>,
    /// Data type; default `bool` for coils and discrete inputs, `u16` for registers.
    #[serde(default, rename = "type")]
    pub data_type: Option<DataType>,
    /// Byte order of multi-register values (default ABCD).
    #[serde(default)]
    pub order: Option<ByteOrder>,
    /// For `bool` from a register: the bit (0 = least significant). With `bits`, the lowest
    /// bit of a bit field.
    #[serde(default)]
    pub bit: Option<u8>,
    /// For a `u16` bit field: its width in bits (`bit = 4, bits = 4` reads bits 4-7 as a
    /// number, as controllers that pack four 4-bit alarm states in a register need).
    #[serde(default)]
    pub bits: Option<u8>,
    /// For `string`: the length in registers.
    #[serde(default)]
    pub length: Option<u16>,
    /// Engineering value = raw * scale + offset.
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub offset: Option<f64>,
    /// Raw values meaning "not available" (one value, a list, or `{ from, to }`); such
    /// readings are left out and counted.
    #[serde(default)]
    pub na: Option<NaConfig>,
    /// Valid range of the engineering value; readings outside are left out and counted.
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// Names for integer states: `map = { 0 = "idle", 1 = "up" }`. MQTT points may also name
    /// texts (`map = { OpenForced = "open_forced", DoorForcedOpen = "true" }`).
    #[serde(default)]
    pub map: Option<BTreeMap<String, String>>,
    /// MQTT points: JSON pointer into the payload.
    #[serde(default)]
    pub json: Option<String>,
    /// The telemetry field's type when not the kind's default: `integer` for a gauge or
    /// counter that never has a fraction, `boolean`/`integer`/`float` for a state without `map`.
    #[serde(default)]
    pub output: Option<FieldType>,
}

/// `na` as written: `na = 65535`, `na = [65535, 65534]` or `na = { from = 65528, to = 65535 }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum NaConfig {
    One(i64),
    List(Vec<i64>),
    Range { from: i64, to: i64 },
}

impl NaConfig {
    /// The inclusive ranges of raw values that mean "not available".
    pub fn ranges(&self) -> Vec<(i64, i64)> {
        match self {
            NaConfig::One(v) => vec![(*v, *v)],
            NaConfig::List(l) => l.iter().map(|v| (*v, *v)).collect(),
            NaConfig::Range { from, to } => vec![(*from, *to)],
        }
    }
}

/// What a device model can answer, when it is less than the protocol allows: `modbus = {
/// max_registers = 80, even_count = true }` for a meter that returns at most 80 registers and
/// refuses odd counts. Every device of the profile is planned within it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileModbusConfig {
    #[serde(default)]
    pub max_registers: Option<u16>,
    #[serde(default)]
    pub even_count: Option<bool>,
}

/// The device model's request limits, resolved (see [`ProfileModbusConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Most registers one read may carry (1-125).
    pub max_registers: u16,
    /// Reads of registers must cover an even number of them.
    pub even_count: bool,
}

impl Default for DeviceLimits {
    fn default() -> Self {
        DeviceLimits {
            max_registers: 125,
            even_count: false,
        }
    }
}

/// Where an MQTT payload carries its time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    pub json: String,
    pub format: TimestampFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    Rfc3339,
    EpochS,
    EpochMs,
    EpochNs,
}

/// A profile as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    pub name: String,
    pub device_type: DeviceType,
    /// Telemetry measurement; defaults to the device type.
    #[serde(default)]
    pub measurement: Option<String>,
    /// Human description, shown by `check` and in the README.
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub points: Vec<PointConfig>,
    /// MQTT profiles: one subscription for all devices, `{asset}` picks the device.
    #[serde(default)]
    pub mqtt_topic: Option<String>,
    #[serde(default)]
    pub timestamp: Option<TimestampConfig>,
    /// The device model's request limits, when below the protocol's.
    #[serde(default)]
    pub modbus: Option<ProfileModbusConfig>,
    /// States in which the device answers but is out of service (see `unavailable`).
    #[serde(default)]
    pub unavailable_when: Vec<UnavailableConfig>,
}

/// How to read a point from Modbus.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterSpec {
    pub kind: RegisterKind,
    pub address: u16,
    pub data_type: DataType,
    pub order: ByteOrder,
    pub bit: Option<u8>,
    /// With `bit`: the width of a bit field read as a number (`None`: one bit, a bool).
    pub bits: Option<u8>,
    /// Registers (or bits) the point occupies.
    pub count: u16,
}

/// How a raw value becomes an engineering value.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    pub scale: f64,
    pub offset: f64,
    /// Exact integer arithmetic: an integer type with a whole-number scale and offset (MQTT:
    /// a state or event code).
    pub integer: bool,
    /// Inclusive ranges of raw values meaning "not available".
    pub na: Vec<(i64, i64)>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub map: Option<BTreeMap<i64, String>>,
    /// The field type every good value is coerced to (`None`: as decoded).
    pub output: Option<FieldType>,
}

impl Transform {
    pub const IDENTITY: Transform = Transform {
        scale: 1.0,
        offset: 0.0,
        integer: false,
        na: Vec::new(),
        min: None,
        max: None,
        map: None,
        output: None,
    };
}

/// A validated point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: Arc<str>,
    pub kind: PointKind,
    pub unit: Option<String>,
    /// Set for Modbus points.
    pub register: Option<RegisterSpec>,
    /// Set for MQTT points.
    pub json: Option<String>,
    pub transform: Transform,
}

impl Point {
    /// The type of this point's telemetry field.
    pub fn field_type(&self) -> FieldType {
        self.transform.output.unwrap_or(FieldType::Float)
    }
}

/// A validated profile (equality: a reload restarts the devices whose profile changed).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub device_type: DeviceType,
    pub measurement: String,
    pub description: Option<String>,
    pub points: Vec<Point>,
    pub mqtt_topic: Option<String>,
    pub timestamp: Option<TimestampConfig>,
    /// Per point (parallel to `points`): the texts an MQTT point's `map` names (its non-integer
    /// keys); empty for every other point.
    pub text_maps: Vec<BTreeMap<String, String>>,
    /// The device model's request limits.
    pub limits: DeviceLimits,
    /// Any of these holding makes an online asset of the profile unavailable.
    pub unavailable_when: Vec<Unavailability>,
}

impl Profile {
    pub fn point(&self, name: &str) -> Option<(usize, &Point)> {
        self.points
            .iter()
            .enumerate()
            .find(|(_, p)| &*p.name == name)
    }
}

#[cfg(test)]
mod tests;
