//! Validation: a profile as written ([`ProfileConfig`]) becomes a [`Profile`] once, here. Every
//! key is checked (with its path inside the profile, `points[3].bit`, for the messages), the
//! defaults are resolved, and each point gets its register read, its transform and the type of
//! its telemetry field.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{
    ByteOrder, DataType, DeviceLimits, FieldType, Point, PointConfig, PointKind, Profile,
    ProfileConfig, RESERVED_FIELDS, RegisterKind, RegisterSpec, Transform, unwritable_name,
};

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
                    for key in ["address", "bit", "bits", "length", "order"] {
                        let set = match key {
                            "address" => pc.address.is_some(),
                            "bit" => pc.bit.is_some(),
                            "bits" => pc.bits.is_some(),
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
        let limits = self.limits(&points, &mut issues);
        let mut unavailable_errors = Vec::new();
        let unavailable_when = super::unavailable::validate(
            &self.unavailable_when,
            &points,
            &text_maps,
            &mut unavailable_errors,
        );
        for (path, message) in unavailable_errors {
            err(&mut issues, path, message);
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
            limits,
            unavailable_when,
        };
        Ok((profile, issues))
    }

    /// The `modbus` table: the device model's request limits, which every point must fit.
    fn limits(&self, points: &[Point], issues: &mut Vec<ProfileIssue>) -> DeviceLimits {
        let mut limits = DeviceLimits::default();
        let Some(m) = &self.modbus else {
            return limits;
        };
        let mut err = |path: &str, message: String| {
            issues.push(ProfileIssue {
                path: path.into(),
                message,
                warning: false,
            })
        };
        limits.even_count = m.even_count.unwrap_or(false);
        if let Some(n) = m.max_registers {
            let least = if limits.even_count { 2 } else { 1 };
            if !(least..=125).contains(&n) {
                err(
                    "modbus.max_registers",
                    format!(
                        "expected {least}-125 (the most registers one read of this device model may carry), found {n}"
                    ),
                );
            }
            limits.max_registers = n.clamp(least, 125);
        }
        if limits.even_count {
            // An odd limit cannot be used in full: a read of that many would be refused.
            limits.max_registers -= limits.max_registers % 2;
        }
        for (i, p) in points.iter().enumerate() {
            if let Some(r) = p.register.as_ref().filter(|r| !r.kind.is_bit())
                && r.count > limits.max_registers
            {
                err(
                    &format!("points[{i}]"),
                    format!(
                        "point {:?} spans {} registers, more than the device model's max_registers = {}",
                        p.name, r.count, limits.max_registers
                    ),
                );
            }
        }
        limits
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
        if let Some(w) = pc.bits {
            let lowest = pc.bit.unwrap_or(0);
            if pc.bit.is_none() {
                err(
                    at("bits"),
                    "`bits` is the width of a bit field: give its lowest bit with `bit`".into(),
                );
            } else if data_type != DataType::U16 || kind.is_bit() {
                err(
                    at("type"),
                    format!(
                        "a bit field (`bits`) is read from a 16-bit register: expected type \"u16\", found {:?}",
                        data_type.as_str()
                    ),
                );
            } else if !(1..=16).contains(&w) {
                err(
                    at("bits"),
                    format!("expected a bit field width 1-16, found {w}"),
                );
            } else if u16::from(lowest) + u16::from(w) > 16 {
                err(
                    at("bits"),
                    format!(
                        "bits {lowest}-{} do not fit a 16-bit register",
                        u16::from(lowest) + u16::from(w) - 1
                    ),
                );
            }
        }
        if let Some(b) = pc.bit {
            if b > 15 {
                err(at("bit"), format!("expected a bit number 0-15, found {b}"));
            }
            if !kind.is_bit() && data_type != DataType::Bool && pc.bits.is_none() {
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
            bits: pc.bits,
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
        if let Some(super::NaConfig::Range { from, to }) = &pc.na
            && from > to
        {
            err(at("na"), format!("na.from ({from}) is above na.to ({to})"));
        }
        if pc.kind == PointKind::Counter
            && data_type.is_some_and(|t| matches!(t, DataType::Bool | DataType::String))
        {
            err(
                at("type"),
                "a counter is a number: expected an integer or a float type".into(),
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
                na: pc.na.as_ref().map(|n| n.ranges()).unwrap_or_default(),
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
