//! Parsing `[[rules]]`: every type at once, errors with their file and key path, checks against
//! the assets. The fixtures (`pump`, `lift`, `items`, `parse`) serve the tests of the rule
//! types and of the engine too.

use std::collections::BTreeMap;
use std::sync::Arc;

use config::Value as ConfigValue;
use serde::Deserialize;

use super::*;
use crate::profile::{DeviceType, PointKind};
use crate::rules::types::PointInfo;

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
        ]
        .into(),
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
        ]
        .into(),
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

/// The errors of one rule, `id = "r"` and then `toml`, that must not parse.
pub(crate) fn rule_errors(toml: &str) -> Vec<String> {
    errors(&format!("[[rules]]\nid = \"r\"\n{toml}"))
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
    let one = rule_errors;
    assert_eq!(
        one("type = \"offline\"\nafter = \"5m\"\nmatch = { device_type = \"escalator\" }\n"),
        [format!(
            "rules.toml: rules[0].match.device_type: unknown device_type \"escalator\": expected {}",
            crate::rules::matcher::device_type_names()
        )]
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
fn a_calendar_rule_needs_the_gateway_time_zone() {
    let e = parse_rules(
        &items(
            "rules.toml",
            "[[rules]]\nid = \"c\"\ntype = \"calendar\"\nevery = \"1mo\"\nstart = \"2026-01-01\"\n",
        ),
        &[pump("P-1")],
        "gw",
        "Mars/Olympus",
    )
    .unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "rules.toml: rules[0].start: the [gateway] timezone \"Mars/Olympus\" is not an IANA time zone such as \"Asia/Shanghai\" or \"UTC\""
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
        warnings[0]
            .contains("asset P-1 (profile pump) has no point \"door_state\": the rule skips it")
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
        let points: std::sync::Arc<[PointInfo]> = p
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
    // All files at once, as from one conf.d: a rule-form `unless` may name a rule of another
    // file (`power-mains-lost`).
    let mut all = Vec::new();
    let mut files = Vec::new();
    for f in entries {
        let f = f.unwrap().path();
        let text = std::fs::read_to_string(&f).unwrap();
        files.push(f.display().to_string());
        all.extend(items(&f.display().to_string(), &text));
    }
    match parse_rules(&all, &assets, "gw", "Asia/Shanghai") {
        Ok((rules, warnings)) => {
            for f in &files {
                assert!(rules.iter().any(|r| r.file == *f), "no rule from {f}");
            }
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
    // One file per built-in device type at least: a test that read none would prove nothing.
    assert!(
        files.len() >= 4,
        "only {} rule files in {}",
        files.len(),
        dir.display()
    );
}
