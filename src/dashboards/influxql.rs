//! The InfluxQL of the dashboards, decided by each field's type: numeric aggregates (`mean`,
//! `spread`, `non_negative_difference`) only on float and integer fields, `last` for booleans
//! and strings (InfluxQL refuses or answers nothing for `mean` of those).
//!
//! Raw InfluxQL is the one language InfluxDB 1.x, 2.x (through DBRP) and 3.x all answer. The
//! queries keep to what 3.x supports too: no SLIMIT/SOFFSET, INTEGRAL, SAMPLE or SHOW SERIES.
//! Every query filters `$timeFilter` (Grafana's time range, and where it appends ad hoc
//! filters) and the `asset` variable as a regex, so that multi-value and "All" work.

use crate::profile::{FieldType, Point, PointKind};

/// The asset filter of every equipment query.
pub const ASSET: &str = "\"asset\" =~ /^$asset$/";

/// A quoted identifier: `"name"`, with `"` and `\` escaped.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A string literal: `'text'`, with `'` and `\` escaped.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `SELECT <select> FROM "m" WHERE <asset> [AND <cond>] AND $timeFilter <group>`.
fn select(select: &str, measurement: &str, cond: Option<&str>, group: &str) -> String {
    let cond = cond.map(|c| format!(" AND {c}")).unwrap_or_default();
    format!(
        "SELECT {select} FROM {} WHERE {ASSET}{cond} AND $timeFilter {group}",
        ident(measurement)
    )
}

const BY_INTERVAL: &str = "GROUP BY time($__interval), \"asset\"";

/// Whether numeric aggregates apply to the field.
pub fn numeric(t: FieldType) -> bool {
    matches!(t, FieldType::Float | FieldType::Integer)
}

/// The series of a point per interval and asset: the mean of a number, else the last value.
pub fn series(measurement: &str, p: &Point) -> String {
    let f = ident(&p.name);
    if p.kind == PointKind::Gauge && numeric(p.field_type()) {
        select(
            &format!("mean({f})"),
            measurement,
            None,
            &format!("{BY_INTERVAL} fill(null)"),
        )
    } else {
        select(
            &format!("last({f})"),
            measurement,
            None,
            &format!("{BY_INTERVAL} fill(null)"),
        )
    }
}

/// The last value per asset within the range.
pub fn last(measurement: &str, p: &Point) -> String {
    select(
        &format!("last({})", ident(&p.name)),
        measurement,
        None,
        "GROUP BY \"asset\"",
    )
}

/// How much a numeric counter grew over the range, per asset (max - min: a counter reset inside
/// the range understates it).
pub fn increase_over_range(measurement: &str, p: &Point) -> Option<String> {
    numeric(p.field_type()).then(|| {
        select(
            &format!("spread({})", ident(&p.name)),
            measurement,
            None,
            "GROUP BY \"asset\"",
        )
    })
}

/// How much a numeric counter grew in each interval, per asset; a reset counts as no growth.
pub fn increase_per_interval(measurement: &str, p: &Point) -> Option<String> {
    numeric(p.field_type()).then(|| {
        select(
            &format!("non_negative_difference(last({}))", ident(&p.name)),
            measurement,
            None,
            &format!("{BY_INTERVAL} fill(null)"),
        )
    })
}

/// The condition "this point reports an occurrence": true, a non-zero code, a non-empty name.
pub fn occurred(p: &Point) -> String {
    let f = ident(&p.name);
    match p.field_type() {
        FieldType::Boolean => format!("{f} = true"),
        FieldType::Integer | FieldType::Float => format!("{f} <> 0"),
        FieldType::String => format!("{f} <> ''"),
    }
}

/// Readings in which an event was reported, per interval and asset (a held-on event bit counts
/// once per poll; a published event once).
pub fn occurrences_per_interval(measurement: &str, p: &Point) -> String {
    select(
        &format!("count({})", ident(&p.name)),
        measurement,
        Some(&occurred(p)),
        &format!("{BY_INTERVAL} fill(0)"),
    )
}

/// Readings in which an event was reported over the range, per asset.
pub fn occurrences_over_range(measurement: &str, p: &Point) -> String {
    select(
        &format!("count({})", ident(&p.name)),
        measurement,
        Some(&occurred(p)),
        "GROUP BY \"asset\"",
    )
}

/// The assets whose alarm is on at the end of the range: the last value per asset, kept when
/// true.
pub fn alarm_active(measurement: &str, p: &Point) -> String {
    let inner = select(
        &format!("last({}) AS \"active\"", ident(&p.name)),
        measurement,
        None,
        "GROUP BY \"asset\"",
    );
    format!("SELECT \"active\" FROM ({inner}) WHERE \"active\" = true GROUP BY \"asset\"")
}

/// Grafana's unit for a profile's `unit`, or a suffix when Grafana has none.
pub fn grafana_unit(unit: Option<&str>) -> Option<String> {
    let u = unit?.trim();
    if u.is_empty() {
        return None;
    }
    let id = match u {
        "degC" | "°C" | "C" => "celsius",
        "degF" | "°F" | "F" => "fahrenheit",
        "K" => "kelvin",
        "bar" => "pressurebar",
        "mbar" => "pressurembar",
        "kPa" => "pressurekpa",
        "hPa" => "pressurehpa",
        "psi" => "pressurepsi",
        "%" => "percent",
        "A" => "amp",
        "mA" => "mamp",
        "V" => "volt",
        "mV" => "mvolt",
        "kV" => "kvolt",
        "Hz" => "hertz",
        "W" => "watt",
        "kW" => "kwatt",
        "Wh" => "watth",
        "kWh" => "kwatth",
        "s" => "s",
        "ms" => "ms",
        "min" => "m",
        "h" => "h",
        "d" => "d",
        "mm" => "lengthmm",
        "m" => "lengthm",
        "km" => "lengthkm",
        "m/s" => "velocityms",
        "km/h" => "velocitykmh",
        "rpm" => "rotrpm",
        "ppm" => "ppm",
        "L/h" | "l/h" => "litreh",
        "L/min" | "l/min" => "flowlpm",
        "m3/s" => "flowcms",
        "m3/h" => return Some("suffix: m³/h".into()),
        other => return Some(format!("suffix: {other}")),
    };
    Some(id.into())
}

/// Colours of a state's named values, in the order its map lists them.
const PALETTE: [&str; 8] = [
    "green",
    "blue",
    "purple",
    "yellow",
    "orange",
    "super-light-blue",
    "dark-purple",
    "light-orange",
];

/// Value mappings for a point's state timeline: (value as Grafana sees it, text, colour).
/// Alarms read "ALARM"/"ok", events "EVENT"/"-", boolean states their value, named states
/// their names; integer codes are coloured by thresholds instead (see [`code_thresholds`]).
pub fn mappings(p: &Point) -> Vec<(String, String, String)> {
    let m = |v: &str, t: &str, c: &str| (v.to_string(), t.to_string(), c.to_string());
    match (p.kind, p.field_type()) {
        (PointKind::Alarm, FieldType::Boolean) => {
            vec![m("true", "ALARM", "red"), m("false", "ok", "green")]
        }
        (PointKind::Event, FieldType::Boolean) => {
            vec![m("true", "EVENT", "orange"), m("false", "-", "transparent")]
        }
        (_, FieldType::Boolean) => vec![m("true", "true", "blue"), m("false", "false", "#808080")],
        (_, FieldType::String) => {
            let mut names: Vec<&str> = Vec::new();
            let ordered = p.transform.map.iter().flat_map(|m| m.values());
            for v in ordered {
                if !names.contains(&v.as_str()) {
                    names.push(v);
                }
            }
            names
                .iter()
                .enumerate()
                .map(|(i, n)| m(n, n, PALETTE[i % PALETTE.len()]))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Numeric states and events (codes): 0 green, anything else orange.
pub fn code_thresholds(p: &Point) -> bool {
    p.kind != PointKind::Gauge && p.kind != PointKind::Counter && numeric(p.field_type())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::builtin;

    fn point(profile: &str, name: &str) -> Point {
        let cfg = builtin::load(profile).unwrap().unwrap();
        let (p, _) = cfg.build().unwrap();
        p.point(name).unwrap().1.clone()
    }

    #[test]
    fn numeric_aggregates_only_on_numbers() {
        let gauge = point("pump", "discharge_pressure_bar");
        assert!(series("pump", &gauge).starts_with("SELECT mean(\"discharge_pressure_bar\")"));
        let alarm = point("pump", "fault");
        assert!(series("pump", &alarm).starts_with("SELECT last(\"fault\")"));
        let state = point("elevator", "run_state");
        assert_eq!(state.field_type(), FieldType::String);
        assert!(series("elevator", &state).starts_with("SELECT last(\"run_state\")"));
        assert!(increase_over_range("elevator", &state).is_none());
        let trips = point("elevator", "trips_total");
        assert!(
            increase_per_interval("elevator", &trips)
                .unwrap()
                .contains("non_negative_difference(last(\"trips_total\"))")
        );
    }

    #[test]
    fn occurrences_follow_the_field_type() {
        assert_eq!(
            occurred(&point("access_door", "door_forced")),
            "\"door_forced\" = true"
        );
        assert_eq!(
            occurred(&point("elevator", "fault_code")),
            "\"fault_code\" <> 0"
        );
        assert_eq!(
            occurred(&point("elevator", "door_state")),
            "\"door_state\" <> ''"
        );
    }

    #[test]
    fn every_query_filters_the_time_range_and_the_asset() {
        let p = point("access_door", "door_forced");
        for q in [
            series("access_door", &p),
            last("access_door", &p),
            occurrences_per_interval("access_door", &p),
            occurrences_over_range("access_door", &p),
            alarm_active("access_door", &p),
        ] {
            assert!(q.contains("$timeFilter") && q.contains(ASSET), "{q}");
        }
    }

    #[test]
    fn names_are_quoted_and_escaped() {
        assert_eq!(ident("a\"b"), "\"a\\\"b\"");
        assert_eq!(literal("it's"), "'it\\'s'");
    }

    #[test]
    fn units_map_to_grafana_ids_or_suffixes() {
        assert_eq!(grafana_unit(Some("degC")).as_deref(), Some("celsius"));
        assert_eq!(grafana_unit(Some("bar")).as_deref(), Some("pressurebar"));
        assert_eq!(grafana_unit(Some("mm/s")).as_deref(), Some("suffix: mm/s"));
        assert_eq!(grafana_unit(Some("m3/h")).as_deref(), Some("suffix: m³/h"));
        assert_eq!(grafana_unit(None), None);
    }

    #[test]
    fn named_states_map_each_name_once_in_map_order() {
        let m = mappings(&point("elevator", "run_state"));
        let names: Vec<&str> = m.iter().map(|(v, _, _)| v.as_str()).collect();
        assert_eq!(names, ["idle", "up", "down"]);
        let m = mappings(&point("pump", "fault"));
        assert_eq!(m[0].1, "ALARM");
    }
}
