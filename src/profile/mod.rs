//! Device profiles: the register map and semantics of a device model.
//!
//! A profile is written in TOML (`[[profiles]]` in the config, or one of the built-in files under
//! `src/profile/builtin/`), parsed into [`ProfileConfig`], and validated once into a [`Profile`]
//! whose points carry everything the planner and the decoder need.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

pub mod builtin;
pub mod schema;

pub use schema::{FieldOwner, FieldType, RESERVED_FIELDS, Schema, SchemaConflict};

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
    Other,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Elevator => "elevator",
            DeviceType::Pump => "pump",
            DeviceType::FirePanel => "fire_panel",
            DeviceType::AccessDoor => "access_door",
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
    /// For `bool` from a register: the bit (0 = least significant).
    #[serde(default)]
    pub bit: Option<u8>,
    /// For `string`: the length in registers.
    #[serde(default)]
    pub length: Option<u16>,
    /// Engineering value = raw * scale + offset.
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub offset: Option<f64>,
    /// A raw value meaning "not available"; such readings are left out and counted.
    #[serde(default)]
    pub na: Option<i64>,
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
}

/// How to read a point from Modbus.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterSpec {
    pub kind: RegisterKind,
    pub address: u16,
    pub data_type: DataType,
    pub order: ByteOrder,
    pub bit: Option<u8>,
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
    pub na: Option<i64>,
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
        na: None,
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
}

impl Profile {
    pub fn point(&self, name: &str) -> Option<(usize, &Point)> {
        self.points
            .iter()
            .enumerate()
            .find(|(_, p)| &*p.name == name)
    }
}

/// A problem in a profile, with the key path inside the profile (`points[3].bit`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileIssue {
    pub path: String,
    pub message: String,
    /// Warnings do not stop the gateway.
    pub warning: bool,
}

impl ProfileConfig {
    /// Validates the profile and resolves defaults. Errors and warnings come back with the key
    /// path relative to the profile; the caller prefixes the file and `profiles[i]`.
    pub fn build(&self) -> Result<(Profile, Vec<ProfileIssue>), Vec<ProfileIssue>> {
        let mut issues = Vec::new();
        let mut points: Vec<Point> = Vec::with_capacity(self.points.len());
        let mut text_maps = Vec::with_capacity(self.points.len());
        let err = |issues: &mut Vec<ProfileIssue>, path: String, message: String| {
            issues.push(ProfileIssue {
                path,
                message,
                warning: false,
            })
        };
        if self.name.trim().is_empty() {
            err(
                &mut issues,
                "name".into(),
                "expected a non-empty profile name".into(),
            );
        }
        if let Some(m) = &self.measurement
            && RESERVED_FIELDS.iter().any(|(r, _, _)| r == m)
        {
            err(
                &mut issues,
                "measurement".into(),
                format!(
                    "{m:?} is facilityd's own measurement (device status, work-order events): choose another"
                ),
            );
        }
        if let Some(m) = &self.measurement
            && (m.trim().is_empty() || m.starts_with('#') || unwritable_name(m))
        {
            err(
                &mut issues,
                "measurement".into(),
                "expected a non-empty measurement name not starting with # and without backslashes or control characters".into(),
            );
        }
        let mut modicon_like = 0usize;
        let mut modbus_points = 0usize;
        for (i, pc) in self.points.iter().enumerate() {
            let at = |key: &str| format!("points[{i}].{key}");
            if pc.name.trim().is_empty() || unwritable_name(&pc.name) {
                err(
                    &mut issues,
                    at("name"),
                    format!(
                        "expected a non-empty point name without backslashes or control characters, found {:?}",
                        pc.name
                    ),
                );
            }
            if let Some(j) = self.points[..i].iter().position(|p| p.name == pc.name) {
                err(
                    &mut issues,
                    at("name"),
                    format!(
                        "duplicate point name {:?}: already used by points[{j}]",
                        pc.name
                    ),
                );
            }
            let register = match (pc.register, &pc.json) {
                (Some(_), Some(_)) => {
                    err(
                        &mut issues,
                        at("json"),
                        "a point is read either from a register or from JSON, not both".into(),
                    );
                    None
                }
                (None, None) => {
                    err(
                        &mut issues,
                        at("register"),
                        "expected `register` (holding | input | coil | discrete) with `address`, or `json` for an MQTT point".into(),
                    );
                    None
                }
                (None, Some(ptr)) => {
                    if !ptr.is_empty() && !ptr.starts_with('/') {
                        err(
                            &mut issues,
                            at("json"),
                            format!("expected a JSON pointer starting with '/', found {ptr:?}"),
                        );
                    }
                    for key in ["address", "bit", "length", "order"] {
                        let set = match key {
                            "address" => pc.address.is_some(),
                            "bit" => pc.bit.is_some(),
                            "length" => pc.length.is_some(),
                            _ => pc.order.is_some(),
                        };
                        if set {
                            err(
                                &mut issues,
                                at(key),
                                format!("`{key}` applies to register points only"),
                            );
                        }
                    }
                    None
                }
                (Some(kind), None) => {
                    modbus_points += 1;
                    match self.register_spec(pc, kind, &at, &mut issues) {
                        Some(spec) => {
                            if spec.address >= 40001
                                || (10001..20000).contains(&spec.address)
                                || (30001..40000).contains(&spec.address)
                            {
                                modicon_like += 1;
                            }
                            Some(spec)
                        }
                        None => None,
                    }
                }
            };
            let (transform, text_map) = self.transform(pc, register.as_ref(), &at, &mut issues);
            text_maps.push(text_map);
            points.push(Point {
                name: Arc::from(pc.name.as_str()),
                kind: pc.kind,
                unit: pc.unit.clone(),
                register,
                json: pc.json.clone(),
                transform,
            });
        }
        if modbus_points > 0 && modicon_like == modbus_points {
            issues.push(ProfileIssue {
                path: "points".into(),
                message: "every address looks Modicon-numbered (1xxxx/3xxxx/4xxxx); `address` is the 0-based wire address, so 40001 is usually written 0. Kept as written: SunSpec and some vendors really use wire addresses 40000+".into(),
                warning: true,
            });
        }
        if issues.iter().any(|i| !i.warning) {
            return Err(issues);
        }
        let profile = Profile {
            name: self.name.clone(),
            device_type: self.device_type,
            measurement: self
                .measurement
                .clone()
                .unwrap_or_else(|| self.device_type.as_str().to_string()),
            description: self.description.clone(),
            points,
            mqtt_topic: self.mqtt_topic.clone(),
            timestamp: self.timestamp.clone(),
            text_maps,
        };
        Ok((profile, issues))
    }

    fn register_spec(
        &self,
        pc: &PointConfig,
        kind: RegisterKind,
        at: &dyn Fn(&str) -> String,
        issues: &mut Vec<ProfileIssue>,
    ) -> Option<RegisterSpec> {
        let mut ok = true;
        let mut err = |path: String, message: String| {
            ok = false;
            issues.push(ProfileIssue {
                path,
                message,
                warning: false,
            });
        };
        let Some(address) = pc.address else {
            err(
                at("address"),
                "expected `address`, the 0-based wire address (0-65535)".into(),
            );
            return None;
        };
        let data_type = pc.data_type.unwrap_or(if kind.is_bit() {
            DataType::Bool
        } else {
            DataType::U16
        });
        if kind.is_bit() && data_type != DataType::Bool {
            err(
                at("type"),
                format!(
                    "a {} holds single bits: expected type \"bool\", found {:?}",
                    kind.as_str(),
                    data_type.as_str()
                ),
            );
        }
        if kind.is_bit() && pc.bit.is_some() {
            err(
                at("bit"),
                format!(
                    "`bit` selects a bit of a register; a {} is already one bit",
                    kind.as_str()
                ),
            );
        }
        if !kind.is_bit() && data_type == DataType::Bool && pc.bit.is_none() {
            err(
                at("bit"),
                "a bool read from a register needs `bit` (0-15)".into(),
            );
        }
        if let Some(b) = pc.bit {
            if b > 15 {
                err(at("bit"), format!("expected a bit number 0-15, found {b}"));
            }
            if !kind.is_bit() && data_type != DataType::Bool {
                err(
                    at("type"),
                    format!(
                        "`bit` reads a bool: expected type \"bool\", found {:?}",
                        data_type.as_str()
                    ),
                );
            }
        }
        let length = match (data_type, pc.length) {
            (DataType::String, Some(l)) if l >= 1 => l,
            (DataType::String, _) => {
                err(
                    at("length"),
                    "a string needs `length`, its size in registers (1-125)".into(),
                );
                1
            }
            (_, Some(_)) => {
                err(at("length"), "`length` applies to strings only".into());
                1
            }
            _ => 1,
        };
        let count = if kind.is_bit() {
            1
        } else {
            data_type.registers(length)
        };
        if count > kind.protocol_limit() {
            err(
                at("length"),
                format!(
                    "{count} registers exceed what one Modbus read returns (at most {})",
                    kind.protocol_limit()
                ),
            );
        }
        if address > 65535 || address + u32::from(count) > 65536 {
            err(
                at("address"),
                format!(
                    "expected a wire address 0-65535 with room for {count} register(s), found {address}"
                ),
            );
        }
        if pc.order.is_some() && !matches!(count, 2 | 4) && data_type != DataType::String {
            err(
                at("order"),
                format!(
                    "`order` applies to 32- and 64-bit values, not {}",
                    data_type.as_str()
                ),
            );
        }
        if data_type == DataType::String
            && matches!(pc.order, Some(ByteOrder::DCBA | ByteOrder::CDAB))
        {
            err(
                at("order"),
                "strings take order ABCD or BADC (bytes swapped within each register)".into(),
            );
        }
        ok.then(|| RegisterSpec {
            kind,
            address: address as u16,
            data_type,
            order: pc.order.unwrap_or_default(),
            bit: pc.bit,
            count,
        })
    }

    fn transform(
        &self,
        pc: &PointConfig,
        spec: Option<&RegisterSpec>,
        at: &dyn Fn(&str) -> String,
        issues: &mut Vec<ProfileIssue>,
    ) -> (Transform, BTreeMap<String, String>) {
        let mut err = |path: String, message: String| {
            issues.push(ProfileIssue {
                path,
                message,
                warning: false,
            })
        };
        let scale = pc.scale.unwrap_or(1.0);
        let offset = pc.offset.unwrap_or(0.0);
        if !scale.is_finite() || scale == 0.0 {
            err(
                at("scale"),
                format!("expected a finite, non-zero scale, found {scale}"),
            );
        }
        if !offset.is_finite() {
            err(
                at("offset"),
                format!("expected a finite offset, found {offset}"),
            );
        }
        let data_type = spec.map(|s| s.data_type);
        let numeric = data_type.is_none_or(|t| !matches!(t, DataType::Bool | DataType::String));
        if !numeric && (pc.scale.is_some() || pc.offset.is_some()) {
            err(
                at("scale"),
                "`scale` and `offset` apply to numbers, not bools or strings".into(),
            );
        }
        let mut map = None;
        let mut text_map = BTreeMap::new();
        // MQTT points (no register) read texts too: their `map` may name texts, and an alarm
        // may map texts to true and false (`ReaderTamper = "true"`).
        let json = spec.is_none() && pc.json.is_some();
        if let Some(m) = &pc.map {
            let mut parsed = BTreeMap::new();
            for (k, v) in m {
                match k.trim().parse::<i64>() {
                    Ok(n) => {
                        parsed.insert(n, v.clone());
                    }
                    Err(_) if json && !k.is_empty() => {
                        text_map.insert(k.clone(), v.clone());
                    }
                    Err(_) => err(
                        at(&format!("map.{k}")),
                        format!("expected an integer key, found {k:?}"),
                    ),
                }
            }
            if data_type.is_some_and(|t| !t.is_integer()) {
                err(
                    at("map"),
                    "`map` names integer values: use an integer type".into(),
                );
            }
            if json && pc.kind == PointKind::Alarm {
                if let Some(v) = m.values().find(|v| !matches!(v.as_str(), "true" | "false")) {
                    err(
                        at("map"),
                        format!(
                            "an alarm is true or false: expected map values \"true\" or \"false\", found {v:?}"
                        ),
                    );
                }
            } else if pc.kind != PointKind::State && pc.kind != PointKind::Event {
                err(
                    at("map"),
                    "`map` names the values of a state or event point: set kind = \"state\"".into(),
                );
            }
            map = Some(parsed);
        }
        if let (Some(lo), Some(hi)) = (pc.min, pc.max)
            && lo > hi
        {
            err(at("min"), format!("min ({lo}) is above max ({hi})"));
        }
        if pc.kind == PointKind::Counter && data_type.is_some_and(|t| !t.is_integer()) {
            err(
                at("type"),
                "a counter is an integer: expected u16, u32, u64, i16, i32 or i64".into(),
            );
        }
        if matches!(pc.kind, PointKind::Alarm) && data_type.is_some_and(|t| t != DataType::Bool) {
            err(
                at("kind"),
                "an alarm is a bool condition: read it from a coil, a discrete input or a `bit`"
                    .into(),
            );
        }
        let whole = |x: f64| x.fract() == 0.0 && x.abs() < 9.0e15;
        let output = self.output(pc, data_type, scale, offset, at, issues);
        // Integer registers with a whole-number scale are scaled exactly, in integers (the
        // field's type is `output`, decided apart); MQTT points (no register type) when they
        // are written as integers.
        let integer = whole(scale)
            && whole(offset)
            && match data_type {
                Some(t) => t.is_integer(),
                None => output == FieldType::Integer,
            };
        (
            Transform {
                scale,
                offset,
                integer,
                na: pc.na,
                min: pc.min,
                max: pc.max,
                map,
                output: Some(output),
            },
            text_map,
        )
    }

    /// The point's field type: `output` when it is allowed, else the kind's default.
    fn output(
        &self,
        pc: &PointConfig,
        data_type: Option<DataType>,
        scale: f64,
        offset: f64,
        at: &dyn Fn(&str) -> String,
        issues: &mut Vec<ProfileIssue>,
    ) -> FieldType {
        let bool_source = data_type == Some(DataType::Bool);
        let string_source = data_type == Some(DataType::String);
        let map_bool = pc.map.as_ref().is_some_and(|m| {
            !m.is_empty() && m.values().all(|v| matches!(v.as_str(), "true" | "false"))
        });
        let default = match pc.kind {
            PointKind::Gauge | PointKind::Counter => FieldType::Float,
            PointKind::Alarm => FieldType::Boolean,
            PointKind::State | PointKind::Event if map_bool => FieldType::Boolean,
            PointKind::State | PointKind::Event if pc.map.is_some() => FieldType::String,
            _ if bool_source => FieldType::Boolean,
            _ if string_source => FieldType::String,
            PointKind::State => FieldType::String,
            PointKind::Event => FieldType::Boolean,
        };
        let Some(want) = pc.output else {
            return default;
        };
        let refusal = match pc.kind {
            _ if want == default => None,
            PointKind::Alarm => Some("an alarm is written as a boolean".to_string()),
            PointKind::State | PointKind::Event if pc.map.is_some() => Some(format!(
                "a point with `map` is written as the {} its map names",
                default.as_str()
            )),
            _ if bool_source => Some("a bit (coil, discrete input, `bit`) is written as a boolean".to_string()),
            _ if string_source => Some("a string register is written as a string".to_string()),
            PointKind::Gauge | PointKind::Counter if matches!(want, FieldType::Boolean | FieldType::String) => Some(format!(
                "a {} is a number: expected output \"float\" or \"integer\"",
                if pc.kind == PointKind::Gauge { "gauge" } else { "counter" }
            )),
            _ if want == FieldType::Integer
                && (matches!(data_type, Some(DataType::F32 | DataType::F64))
                    || scale.fract() != 0.0
                    || offset.fract() != 0.0) =>
            {
                Some("this source can produce a fraction (a float register, or a scale or offset with a fraction): expected output \"float\"".to_string())
            }
            _ => None,
        };
        match refusal {
            Some(why) => {
                issues.push(ProfileIssue {
                    path: at("output"),
                    message: format!("output {:?} is not possible: {why}", want.as_str()),
                    warning: false,
                });
                default
            }
            None => want,
        }
    }
}

#[cfg(test)]
mod tests;
