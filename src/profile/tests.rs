//! Field types, their checks and the schema of the built-in profiles.
use super::*;
use crate::model::Value;

fn build(points: &str) -> Result<Profile, Vec<ProfileIssue>> {
    build_with("", points)
}

fn types(points: &str) -> Vec<FieldType> {
    build(points)
        .unwrap()
        .points
        .iter()
        .map(Point::field_type)
        .collect()
}

#[test]
fn field_types_follow_the_declaration_not_the_register() {
    use FieldType::*;
    assert_eq!(
        types(
            r#"{ name = "a", kind = "gauge", register = "input", address = 0, type = "i16" },
                   { name = "b", kind = "gauge", register = "input", address = 1, type = "f32" },
                   { name = "c", kind = "counter", register = "input", address = 3, type = "u32" },
                   { name = "d", kind = "counter", register = "input", address = 5, type = "u32", output = "integer" },
                   { name = "e", kind = "alarm", register = "discrete", address = 0 },
                   { name = "f", kind = "state", register = "coil", address = 0 },
                   { name = "g", kind = "state", register = "input", address = 7, map = { 0 = "off", 1 = "on" } },
                   { name = "h", kind = "state", register = "input", address = 8 },
                   { name = "i", kind = "event", register = "discrete", address = 1 },
                   { name = "j", kind = "gauge", json = "/j" },
                   { name = "k", kind = "state", json = "/k", output = "boolean" },
                   { name = "l", kind = "event", json = "/l", map = { Forced = "true" } },
                   { name = "m", kind = "state", json = "/m", map = { 0 = "idle", run = "running" } }"#
        ),
        [
            Float, Float, Float, Integer, Boolean, Boolean, String, String, Boolean, Float,
            Boolean, Boolean, String
        ]
    );
}

#[test]
fn impossible_outputs_are_refused_with_the_reason() {
    for (point, why) in [
        (
            r#"{ name = "a", kind = "gauge", register = "input", address = 0, type = "f32", output = "integer" }"#,
            "can produce a fraction",
        ),
        (
            r#"{ name = "a", kind = "gauge", register = "input", address = 0, scale = 0.1, output = "integer" }"#,
            "can produce a fraction",
        ),
        (
            r#"{ name = "a", kind = "gauge", json = "/a", scale = 0.5, output = "integer" }"#,
            "can produce a fraction",
        ),
        (
            r#"{ name = "a", kind = "alarm", register = "discrete", address = 0, output = "integer" }"#,
            "an alarm is written as a boolean",
        ),
        (
            r#"{ name = "a", kind = "state", register = "input", address = 0, map = { 0 = "x" }, output = "integer" }"#,
            "with `map`",
        ),
        (
            r#"{ name = "a", kind = "state", register = "coil", address = 0, output = "string" }"#,
            "a bit",
        ),
        (
            r#"{ name = "a", kind = "gauge", json = "/a", output = "boolean" }"#,
            "a gauge is a number",
        ),
    ] {
        let errs = build(point).expect_err(point);
        assert!(
            errs.iter()
                .any(|e| e.path == "points[0].output" && e.message.contains(why)),
            "{point}: {errs:?}"
        );
    }
}

#[test]
fn coercion_keeps_the_type_or_refuses() {
    use FieldType::*;
    assert_eq!(Float.coerce(Value::Int(3)), Some(Value::Float(3.0)));
    assert_eq!(Integer.coerce(Value::Float(3.0)), Some(Value::Int(3)));
    assert_eq!(Integer.coerce(Value::Float(3.5)), None);
    assert_eq!(Integer.coerce(Value::Float(1e300)), None);
    assert_eq!(Boolean.coerce(Value::Int(1)), Some(Value::Bool(true)));
    assert_eq!(Boolean.coerce(Value::Int(2)), None);
    assert_eq!(Boolean.coerce(Value::Float(0.5)), None);
    assert_eq!(Boolean.coerce(Value::Str("maybe".into())), None);
    assert_eq!(String.coerce(Value::Int(9)), Some(Value::Str("9".into())));
    assert_eq!(Float.coerce(Value::Float(f64::NAN)), None);
    assert_eq!(Float.coerce(Value::Str("inf".into())), None);
}

#[test]
fn every_builtin_profile_agrees_on_every_field() {
    let mut schema = Schema::new();
    let mut by_name = BTreeMap::new();
    for name in builtin::names() {
        let (p, _) = builtin::load(name).unwrap().unwrap().build().unwrap();
        assert_eq!(schema.add(&p), [], "built-in profile {name}");
        by_name.insert(name, p);
    }
    // The fields that two profiles (Modbus and MQTT) share were the ones that conflicted.
    for (m, f, t) in [
        ("elevator", "car_floor", FieldType::Float),
        ("elevator", "load_pct", FieldType::Float),
        ("elevator", "fault_level", FieldType::Integer),
        ("elevator", "trips_total", FieldType::Float),
        ("access_door", "lock_current_ma", FieldType::Float),
        ("access_door", "held_open_s", FieldType::Float),
        ("access_door", "door_closed", FieldType::Boolean),
        ("access_door", "door_state", FieldType::String),
    ] {
        let owner = schema
            .fields()
            .find(|((mm, ff), _)| mm == m && ff == f)
            .map(|(_, o)| o.field_type);
        assert_eq!(owner, Some(t), "{m}.{f}");
    }
}

#[test]
fn a_second_type_for_a_field_is_a_conflict_naming_both() {
    let mut schema = Schema::new();
    let (lift, _) = builtin::load("elevator").unwrap().unwrap().build().unwrap();
    assert!(schema.add(&lift).is_empty());
    let mut custom = build(
            r#"{ name = "car_floor", kind = "gauge", register = "input", address = 0, output = "integer" },
               { name = "online", kind = "gauge", register = "input", address = 1 }"#,
        )
        .unwrap();
    custom.name = "my_lift".into();
    custom.measurement = "elevator".into();
    let c = schema.add(&custom);
    assert_eq!(c.len(), 1, "{c:?}");
    let msg = c[0].to_string();
    assert!(
        msg.contains("\"car_floor\"")
            && msg.contains("profile \"elevator\"")
            && msg.contains("integer")
            && msg.contains("float"),
        "{msg}"
    );
    custom.measurement = "device_status".into();
    let c = schema.add(&custom);
    assert!(
        c.iter()
            .any(|c| c.field == "online" && c.other.by.contains("device_status")),
        "{c:?}"
    );
}

fn build_with(head: &str, points: &str) -> Result<Profile, Vec<ProfileIssue>> {
    let toml = format!("name = \"p\"\ndevice_type = \"other\"\n{head}\npoints = [\n{points}\n]\n");
    let cfg: ProfileConfig = config::Config::builder()
        .add_source(config::File::from_str(&toml, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    cfg.build().map(|(p, _)| p)
}

fn first_error(r: Result<Profile, Vec<ProfileIssue>>) -> (String, String) {
    let issues = r.expect_err("expected the profile to be refused");
    let i = issues.iter().find(|i| !i.warning).unwrap();
    (i.path.clone(), i.message.clone())
}

/// A device model's request limits are settings of its profile: resolved (an odd limit of an
/// even-count device rounds down), and a point that cannot fit one read is refused.
#[test]
fn device_model_limits_are_profile_settings() {
    let p = build_with(
        "modbus = { max_registers = 81, even_count = true }",
        r#"{ name = "v", kind = "gauge", register = "input", address = 0, type = "f32" }"#,
    )
    .unwrap();
    assert_eq!(
        p.limits,
        DeviceLimits {
            max_registers: 80,
            even_count: true
        }
    );
    assert_eq!(
        build("{ name = \"v\", kind = \"gauge\", register = \"input\", address = 0 }")
            .unwrap()
            .limits,
        DeviceLimits::default()
    );
    let (path, msg) = first_error(build_with(
        "modbus = { max_registers = 1, even_count = true }",
        r#"{ name = "v", kind = "gauge", register = "input", address = 0 }"#,
    ));
    assert_eq!(path, "modbus.max_registers");
    assert!(msg.contains("expected 2-125"), "{msg}");
    let (path, msg) = first_error(build_with(
        "modbus = { max_registers = 4 }",
        r#"{ name = "s", kind = "state", register = "input", address = 0, type = "string", length = 8 }"#,
    ));
    assert_eq!(path, "points[0]");
    assert!(msg.contains("spans 8 registers"), "{msg}");
}

#[test]
fn bit_fields_and_sentinel_ranges_are_checked() {
    let p = build(
        r#"{ name = "f", kind = "state", register = "holding", address = 2050, type = "u16", bit = 4, bits = 4, na = 15, map = { 1 = "inactive", 3 = "shutdown" } },
           { name = "o", kind = "gauge", register = "holding", address = 1024, na = { from = 65528, to = 65535 } },
           { name = "l", kind = "gauge", register = "holding", address = 1025, na = [65535, 65532] }"#,
    )
    .unwrap();
    let spec = p.points[0].register.as_ref().unwrap();
    assert_eq!((spec.bit, spec.bits), (Some(4), Some(4)));
    assert_eq!(p.points[1].transform.na, vec![(65528, 65535)]);
    assert_eq!(
        p.points[2].transform.na,
        vec![(65535, 65535), (65532, 65532)]
    );
    for (point, at, why) in [
        (
            r#"{ name = "f", kind = "state", register = "holding", address = 0, bits = 4 }"#,
            "points[0].bits",
            "give its lowest bit",
        ),
        (
            r#"{ name = "f", kind = "state", register = "holding", address = 0, bit = 14, bits = 4 }"#,
            "points[0].bits",
            "do not fit",
        ),
        (
            r#"{ name = "f", kind = "state", register = "holding", address = 0, bit = 0, bits = 0 }"#,
            "points[0].bits",
            "width 1-16, found 0",
        ),
        (
            r#"{ name = "f", kind = "state", register = "holding", address = 0, type = "u32", bit = 0, bits = 4 }"#,
            "points[0].type",
            "16-bit register",
        ),
        (
            r#"{ name = "o", kind = "gauge", register = "holding", address = 0, na = { from = 9, to = 1 } }"#,
            "points[0].na",
            "above na.to",
        ),
    ] {
        let (path, msg) = first_error(build(point));
        assert_eq!(path, at, "{point}");
        assert!(msg.contains(why), "{point}: {msg}");
    }
}
