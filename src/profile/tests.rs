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

const UNAVAILABLE_POINTS: &str = r#"{ name = "mode", kind = "state", register = "input", address = 0, map = { 0 = "auto", 1 = "inspection", 2 = "out_of_service" } },
   { name = "fault", kind = "alarm", register = "discrete", address = 0 },
   { name = "level", kind = "state", register = "input", address = 1, output = "integer" },
   { name = "disabled", kind = "gauge", register = "input", address = 2 },
   { name = "door", kind = "state", json = "/door", map = { 0 = "shut", Ajar = "ajar", 5 = "no_sensor" } }"#;

fn unavailable(conditions: &str) -> Result<Profile, Vec<ProfileIssue>> {
    build_with(
        &format!("unavailable_when = [ {conditions} ]"),
        UNAVAILABLE_POINTS,
    )
}

/// `unavailable_when` as the built-in profiles write it: each form validates, names its point,
/// and holds on the values that mean "out of service" only.
#[test]
fn unavailable_when_conditions_hold_on_their_values() {
    let p = unavailable(
        r#"{ point = "mode", not_equals = "auto" },
           { point = "fault", equals = true },
           { point = "level", at_least = 3 },
           { point = "disabled", above = 0 },
           { point = "door", equals = ["no_sensor", "ajar"] }"#,
    )
    .unwrap();
    let c = &p.unavailable_when;
    assert_eq!(c.len(), 5);
    assert_eq!(
        c.iter().map(|c| c.point).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let s = |t: &str| Value::Str(t.into());
    assert!(c[0].holds(&s("inspection")) && !c[0].holds(&s("auto")));
    // A value missing from the map arrives as its number: not "auto" either.
    assert!(c[0].holds(&s("9")));
    assert!(c[1].holds(&Value::Bool(true)) && !c[1].holds(&Value::Bool(false)));
    assert!(
        c[2].holds(&Value::Int(3)) && c[2].holds(&Value::Int(4)) && !c[2].holds(&Value::Int(2))
    );
    assert!(c[3].holds(&Value::Float(1.0)) && !c[3].holds(&Value::Float(0.0)));
    assert!(c[4].holds(&s("ajar")) && c[4].holds(&s("no_sensor")) && !c[4].holds(&s("shut")));
    assert_eq!(c[2].describe(&p.points), "level at least 3");
    assert_eq!(c[0].describe(&p.points), "mode is not auto");
    assert_eq!(c[1].describe(&p.points), "fault");
    // Without the key, a profile declares nothing.
    assert!(
        build(UNAVAILABLE_POINTS)
            .unwrap()
            .unavailable_when
            .is_empty()
    );
}

#[test]
fn unavailable_when_errors_name_the_key_and_the_reason() {
    for (condition, at, why) in [
        (
            r#"{ point = "speed", equals = 0 }"#,
            "unavailable_when[0].point",
            "no point \"speed\" in this profile (its points: mode, fault",
        ),
        (
            r#"{ point = "mode", equals = "off" }"#,
            "unavailable_when[0].equals",
            "\"off\" is not a value of point \"mode\": its map names auto, inspection, out_of_service",
        ),
        (
            r#"{ point = "door", not_equals = ["shut", "Ajar"] }"#,
            "unavailable_when[0].not_equals",
            "\"Ajar\" is not a value of point \"door\"",
        ),
        (
            r#"{ point = "mode", equals = 1 }"#,
            "unavailable_when[0].equals",
            "1 is not a value of point \"mode\"",
        ),
        (
            r#"{ point = "mode", at_least = 1 }"#,
            "unavailable_when[0].at_least",
            "point \"mode\" is a state with named values (auto, inspection, out_of_service): a numeric comparison does not apply",
        ),
        (
            r#"{ point = "fault", above = 0 }"#,
            "unavailable_when[0].above",
            "point \"fault\" is an alarm of true or false: a numeric comparison does not apply",
        ),
        (
            r#"{ point = "fault", equals = "open" }"#,
            "unavailable_when[0].equals",
            "expected true or false, found \"open\"",
        ),
        (
            r#"{ point = "level", equals = "high" }"#,
            "unavailable_when[0].equals",
            "expected a number, found \"high\"",
        ),
        (
            r#"{ point = "level" }"#,
            "unavailable_when[0]",
            "expected one test of the point",
        ),
        (
            r#"{ point = "level", above = 1, equals = 3 }"#,
            "unavailable_when[0].above",
            "one test per condition, found equals and above",
        ),
    ] {
        let (path, msg) = first_error(unavailable(condition));
        assert_eq!(path, at, "{condition}: {msg}");
        assert!(msg.contains(why), "{condition}: {msg}");
    }
    // The second entry is located as such, after a valid first.
    let (path, _) = first_error(unavailable(
        r#"{ point = "fault", equals = true }, { point = "nope", equals = true }"#,
    ));
    assert_eq!(path, "unavailable_when[1].point");
}

/// The built-in definitions, in plain words (the README's table says the same).
#[test]
fn builtin_profiles_declare_when_they_are_unavailable() {
    let words = |name: &str| -> Vec<String> {
        let (p, _) = builtin::load(name).unwrap().unwrap().build().unwrap();
        p.unavailable_when
            .iter()
            .map(|c| c.describe(&p.points))
            .collect()
    };
    let lift = [
        "service_mode is not auto",
        "fault_level at least 3",
        "safety_circuit_open",
        "trapped_alarm",
    ];
    assert_eq!(words("elevator"), lift);
    assert_eq!(words("lift_monitor_mqtt"), lift);
    assert_eq!(words("pump"), ["fault"]);
    assert_eq!(
        words("fire_panel"),
        [
            "trouble",
            "disabled_count above 0",
            "zone_1 is disabled",
            "zone_2 is disabled",
            "zone_3 is disabled",
            "zone_4 is disabled"
        ]
    );
    let door = [
        "lock_fault",
        "door_sensor_fault",
        "door_state is locked_no_sensor or unlocked_no_sensor",
    ];
    assert_eq!(words("access_door"), door);
    assert_eq!(words("access_door_mqtt"), door);
    assert_eq!(
        words("generator"),
        [
            "shutdown_alarm",
            "electrical_trip_alarm",
            "control_mode is not auto"
        ]
    );
    assert_eq!(words("ats"), ["mode is not auto"]);
    assert!(words("power_meter").is_empty());
    // The MQTT lift monitor's "normal" mode is the profile's "auto": available.
    let (m, _) = builtin::load("lift_monitor_mqtt")
        .unwrap()
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        m.text_maps[m.point("service_mode").unwrap().0]["normal"],
        "auto"
    );
}
