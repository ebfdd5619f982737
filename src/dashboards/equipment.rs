//! The dashboards of one measurement (a device type, or a custom profile's measurement): the
//! fleet view (every asset that writes it, the points by kind) and the asset drill-down (one
//! asset, every point of its profiles).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Equipment;
use super::grafana::{self, Board, Format, influx_target};
use super::influxql::{self, ident};
use super::panels::{decorate, describe, link_to_asset, place_variables, work_order_annotation};
use crate::profile::{Point, PointKind};

/// Points engineers look at first, shown first within their kind (every point is shown).
const FIRST: &[&str] = &[
    "car_floor",
    "run_state",
    "trips_total",
    "door_fault",
    "discharge_pressure_bar",
    "vibration_mm_s",
    "run_hours_total",
    "starts_total",
    "fire_alarm",
    "trouble",
    "supervisory",
    "door_forced",
    "door_held_open",
    "voltage_l1_v",
    "power_total_kw",
    "frequency_hz",
    "energy_import_kwh",
    "engine_state",
    "load_pct",
    "fuel_level_pct",
    "battery_v",
    "switch_position",
    "s1_state",
    "s2_state",
];

fn of_kind(e: &Equipment, kind: PointKind) -> Vec<&Point> {
    let mut v: Vec<&Point> = e.points.iter().filter(|p| p.kind == kind).collect();
    v.sort_by_key(|p| !FIRST.contains(&&*p.name));
    v
}

fn one(i: usize, q: String, alias: &str) -> Vec<Value> {
    vec![influx_target(i, &q, Some(alias), Format::TimeSeries)]
}

/// Every asset that writes `e.measurement`, its points by kind.
pub fn fleet(e: &Equipment, uid: &str, drill_uid: &str) -> Value {
    let m = e.measurement.as_str();
    let mut b = Board::new(
        uid,
        &format!("facilityd {m}"),
        &format!(
            "Every asset writing the measurement \"{m}\" (profiles {}), its points by kind. Click a series for the asset's every point.",
            e.profiles.join(", ")
        ),
        "now-6h",
    );
    place_variables(&mut b, m, true);
    work_order_annotation(&mut b);
    let counters: Vec<&Point> = of_kind(e, PointKind::Counter)
        .into_iter()
        .filter(|p| influxql::numeric(p.field_type()))
        .collect();
    let events = of_kind(e, PointKind::Event);

    if !counters.is_empty() || !events.is_empty() {
        b.row("Over the time range");
        for p in &counters {
            if let Some(q) = influxql::increase_over_range(m, p) {
                let mut s = grafana::stat(
                    &format!("{}: increase", p.name),
                    &format!("Growth over the time range (max - min). {}", describe(p)),
                    grafana::influx(),
                    one(0, q, "$tag_asset"),
                );
                decorate(&mut s, p, None);
                b.add(6, 4, s);
            }
        }
        for p in &events {
            let mut s = grafana::stat(
                &format!("{}: count", p.name),
                &format!(
                    "Readings that reported the event over the time range (a held event bit counts once per poll). {}",
                    describe(p)
                ),
                grafana::influx(),
                one(0, influxql::occurrences_over_range(m, p), "$tag_asset"),
            );
            s["fieldConfig"]["defaults"]["unit"] = json!("none");
            b.add(6, 4, s);
        }
    }
    for (title, kind) in [("Alarms", PointKind::Alarm), ("States", PointKind::State)] {
        let points = of_kind(e, kind);
        if points.is_empty() {
            continue;
        }
        b.row(title);
        for p in points {
            let mut s = grafana::state_timeline(
                &p.name,
                &describe(p),
                grafana::influx(),
                one(0, influxql::series(m, p), "$tag_asset"),
            );
            decorate(&mut s, p, None);
            link_to_asset(&mut s, drill_uid);
            b.add(12, 6, s);
        }
    }
    if !events.is_empty() {
        b.row("Events");
        for p in &events {
            let mut s = grafana::timeseries(
                &format!("{} per interval", p.name),
                &format!(
                    "Readings that reported the event, per interval. {}",
                    describe(p)
                ),
                grafana::influx(),
                one(0, influxql::occurrences_per_interval(m, p), "$tag_asset"),
                true,
            );
            s["fieldConfig"]["defaults"]["unit"] = json!("none");
            link_to_asset(&mut s, drill_uid);
            b.add(12, 6, s);
        }
    }
    let gauges = of_kind(e, PointKind::Gauge);
    if !gauges.is_empty() {
        b.row("Readings");
        for p in gauges {
            let mut s = grafana::timeseries(
                &p.name,
                &describe(p),
                grafana::influx(),
                one(0, influxql::series(m, p), "$tag_asset"),
                false,
            );
            decorate(&mut s, p, None);
            link_to_asset(&mut s, drill_uid);
            b.add(12, 8, s);
        }
    }
    let all_counters = of_kind(e, PointKind::Counter);
    if !all_counters.is_empty() {
        b.row("Counters");
        for p in all_counters {
            let mut s = grafana::stat(
                &p.name,
                &format!("Last value. {}", describe(p)),
                grafana::influx(),
                one(0, influxql::last(m, p), "$tag_asset"),
            );
            decorate(&mut s, p, None);
            if p.unit.is_none() {
                s["fieldConfig"]["defaults"]["unit"] = json!("locale");
            }
            b.add(4, 6, s);
            if let Some(q) = influxql::increase_per_interval(m, p) {
                let mut s = grafana::timeseries(
                    &format!("{}: increase per interval", p.name),
                    &format!(
                        "Growth per interval; a counter reset counts as none. {}",
                        describe(p)
                    ),
                    grafana::influx(),
                    one(0, q, "$tag_asset"),
                    true,
                );
                decorate(&mut s, p, None);
                link_to_asset(&mut s, drill_uid);
                b.add(8, 6, s);
            }
        }
    }
    b.finish()
}

/// One asset at a time, every point of its profiles.
pub fn drill_down(e: &Equipment, uid: &str) -> Value {
    let m = e.measurement.as_str();
    let mut b = Board::new(
        uid,
        &format!("facilityd {m} asset"),
        &format!(
            "One asset writing \"{m}\": status, work orders and every point (profiles {}).",
            e.profiles.join(", ")
        ),
        "now-6h",
    );
    place_variables(&mut b, m, false);
    work_order_annotation(&mut b);
    super::overview::device_status_panels(&mut b, "Status", 8);
    b.add(
        24,
        6,
        grafana::table(
            "Work orders",
            "Lifecycle events of the asset's work orders in the time range, newest first.",
            grafana::influx(),
            vec![influx_target(
                0,
                super::overview::WORK_ORDER_TABLE,
                None,
                Format::Table,
            )],
            vec![],
        ),
    );
    b.row("Now");
    let current = format!(
        "SELECT last(*) FROM {} WHERE {} AND $timeFilter",
        ident(m),
        influxql::ASSET
    );
    b.add(
        24,
        8,
        grafana::table(
            "Last values",
            "The last value of every field of the asset in the time range.",
            grafana::influx(),
            vec![influx_target(0, &current, None, Format::Table)],
            vec![json!({"id": "reduce", "options": {"mode": "seriesToRows", "reducers": ["lastNotNull"], "includeTimeField": false}})],
        ),
    );
    for (title, kinds) in [
        ("Alarms", &[PointKind::Alarm][..]),
        (
            "States and events",
            &[PointKind::State, PointKind::Event][..],
        ),
    ] {
        let points: Vec<&Point> = kinds.iter().flat_map(|k| of_kind(e, *k)).collect();
        if points.is_empty() {
            continue;
        }
        let targets = series_targets(m, &points);
        let mut s =
            grafana::state_timeline(title, "One row per point.", grafana::influx(), targets);
        for p in &points {
            decorate(&mut s, p, Some(&p.name));
        }
        b.row(title);
        b.add(24, 3 + points.len() as u32, s);
    }
    // Readings grouped by unit: one axis per panel.
    let mut by_unit: BTreeMap<Option<String>, Vec<&Point>> = BTreeMap::new();
    for p in of_kind(e, PointKind::Gauge) {
        by_unit.entry(p.unit.clone()).or_default().push(p);
    }
    if !by_unit.is_empty() {
        b.row("Readings");
    }
    for (unit, points) in by_unit {
        let title = match &unit {
            Some(u) => format!("Readings in {u}"),
            None => "Readings without a unit".to_string(),
        };
        let names: Vec<&str> = points.iter().map(|p| &*p.name).collect();
        let targets = series_targets(m, &points);
        let mut s =
            grafana::timeseries(&title, &names.join(", "), grafana::influx(), targets, false);
        decorate(&mut s, points[0], None);
        b.add(12, 8, s);
    }
    let counters = of_kind(e, PointKind::Counter);
    if !counters.is_empty() {
        b.row("Counters");
        let targets = counters
            .iter()
            .enumerate()
            .map(|(i, p)| {
                influx_target(i, &influxql::last(m, p), Some(&p.name), Format::TimeSeries)
            })
            .collect();
        let mut s = grafana::stat(
            "Counters",
            "Last value of every counter.",
            grafana::influx(),
            targets,
        );
        for p in &counters {
            decorate(&mut s, p, Some(&p.name));
        }
        b.add(24, 4, s);
        for p in &counters {
            if let Some(q) = influxql::increase_per_interval(m, p) {
                let mut s = grafana::timeseries(
                    &format!("{}: increase per interval", p.name),
                    &describe(p),
                    grafana::influx(),
                    one(0, q, &p.name),
                    true,
                );
                decorate(&mut s, p, None);
                b.add(8, 6, s);
            }
        }
    }
    let events = of_kind(e, PointKind::Event);
    if !events.is_empty() {
        b.row("Events");
        let targets = events
            .iter()
            .enumerate()
            .map(|(i, p)| {
                influx_target(
                    i,
                    &influxql::occurrences_per_interval(m, p),
                    Some(&p.name),
                    Format::TimeSeries,
                )
            })
            .collect();
        let mut s = grafana::timeseries(
            "Events per interval",
            "Readings that reported each event, per interval.",
            grafana::influx(),
            targets,
            true,
        );
        s["fieldConfig"]["defaults"]["unit"] = json!("none");
        b.add(24, 6, s);
    }
    b.finish()
}

/// One time-series query per point, aliased by the point's name.
fn series_targets(m: &str, points: &[&Point]) -> Vec<Value> {
    points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            influx_target(
                i,
                &influxql::series(m, p),
                Some(&p.name),
                Format::TimeSeries,
            )
        })
        .collect()
}
