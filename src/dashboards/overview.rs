//! The site overview: devices online, open work orders by priority, active alarms, and the
//! online timeline of every device.

use serde_json::{Value, json};

use super::Equipment;
use super::grafana::{self, Board, Format, influx_target};
use super::influxql;
use super::panels::{place_variables, work_order_annotation};
use crate::profile::{FieldType, PointKind};

/// Work-order events of the chosen assets, newest first (tags selected beside the fields).
pub const WORK_ORDER_TABLE: &str = "SELECT \"id\", \"asset\", \"rule\", \"priority\", \"kind\", \"event\", \"status\", \"title\" FROM \"work_order\" WHERE \"asset\" =~ /^$asset$/ AND $timeFilter ORDER BY time DESC LIMIT 500";

/// Work orders not yet resolved at the end of the range, by priority: the last status of each
/// asset-and-rule series, counted when it is open or acknowledged. A work order opened before
/// the range and untouched since is not seen: widen the range to see it.
pub const OPEN_BY_PRIORITY: &str = "SELECT count(\"status\") FROM (SELECT last(\"status\") AS \"status\" FROM \"work_order\" WHERE \"asset\" =~ /^$asset$/ AND $timeFilter GROUP BY \"asset\", \"rule\", \"priority\") WHERE \"status\" = 'open' OR \"status\" = 'acknowledged' GROUP BY \"priority\"";

/// Devices whose last `device_status` in the range says `online` is `value`.
fn devices_online(value: bool) -> String {
    format!(
        "SELECT count(\"online\") FROM (SELECT last(\"online\") AS \"online\" FROM \"device_status\" WHERE {} AND $timeFilter GROUP BY \"asset\") WHERE \"online\" = {value}",
        influxql::ASSET
    )
}

/// The online timeline, poll time and errors of the chosen devices, under a row titled `row`.
pub fn device_status_panels(b: &mut Board, row: &str, timeline_height: u32) {
    b.row(row);
    let q = format!(
        "SELECT last(\"online\") FROM \"device_status\" WHERE {} AND $timeFilter GROUP BY time($__interval), \"asset\" fill(null)",
        influxql::ASSET
    );
    let mut s = grafana::state_timeline(
        "Online",
        "Whether each device answered its polls (device_status.online).",
        grafana::influx(),
        vec![influx_target(0, &q, Some("$tag_asset"), Format::TimeSeries)],
    );
    s["fieldConfig"]["defaults"]["mappings"] = grafana::value_mappings(&[
        ("true".into(), "online".into(), "green".into()),
        ("false".into(), "offline".into(), "red".into()),
    ]);
    b.add(24, timeline_height, s);
    let q = format!(
        "SELECT mean(\"poll_ms\") FROM \"device_status\" WHERE {} AND $timeFilter GROUP BY time($__interval), \"asset\" fill(null)",
        influxql::ASSET
    );
    let mut s = grafana::timeseries(
        "Poll time",
        "Duration of each device's poll cycle (device_status.poll_ms).",
        grafana::influx(),
        vec![influx_target(0, &q, Some("$tag_asset"), Format::TimeSeries)],
        false,
    );
    s["fieldConfig"]["defaults"]["unit"] = json!("ms");
    b.add(12, 7, s);
    let q = format!(
        "SELECT sum(\"errors\") FROM \"device_status\" WHERE {} AND $timeFilter GROUP BY time($__interval), \"asset\" fill(0)",
        influxql::ASSET
    );
    let mut s = grafana::timeseries(
        "Poll errors",
        "Failed requests and bad values per interval (device_status.errors).",
        grafana::influx(),
        vec![influx_target(0, &q, Some("$tag_asset"), Format::TimeSeries)],
        true,
    );
    s["fieldConfig"]["defaults"]["unit"] = json!("none");
    b.add(12, 7, s);
}

/// The site overview over every measurement in `equipment`.
pub fn overview(equipment: &[Equipment], uid: &str) -> Value {
    let mut b = Board::new(
        uid,
        "facilityd overview",
        "Devices online, open work orders by priority, active alarms and the online timeline of every device.",
        "now-24h",
    );
    place_variables(&mut b, "device_status", true);
    work_order_annotation(&mut b);
    b.row("Now");
    for (online, title, colour) in [
        (true, "Devices online", "green"),
        (false, "Devices offline", "red"),
    ] {
        let mut s = grafana::stat(
            title,
            "Devices whose last status in the time range is this.",
            grafana::influx(),
            vec![influx_target(
                0,
                &devices_online(online),
                Some(if online { "online" } else { "offline" }),
                Format::TimeSeries,
            )],
        );
        s["options"]["textMode"] = json!("value");
        s["fieldConfig"]["defaults"]["thresholds"] = grafana::thresholds(&[(None, colour)]);
        s["fieldConfig"]["defaults"]["unit"] = json!("none");
        b.add(4, 6, s);
    }
    let mut s = grafana::bar_gauge(
        "Open work orders by priority",
        "Work orders open or acknowledged at the end of the time range (the last event of each asset and rule in the range).",
        grafana::influx(),
        vec![influx_target(
            0,
            OPEN_BY_PRIORITY,
            Some("$tag_priority"),
            Format::TimeSeries,
        )],
    );
    s["fieldConfig"]["defaults"]["unit"] = json!("none");
    s["fieldConfig"]["defaults"]["thresholds"] =
        grafana::thresholds(&[(None, "green"), (Some(1.0), "orange")]);
    b.add(6, 6, s);
    let mut targets = Vec::new();
    for e in equipment {
        for p in e
            .points
            .iter()
            .filter(|p| p.kind == PointKind::Alarm && p.field_type() == FieldType::Boolean)
        {
            let alias = format!("$tag_asset: {}", p.name);
            targets.push(influx_target(
                targets.len(),
                &influxql::alarm_active(&e.measurement, p),
                Some(&alias),
                Format::TimeSeries,
            ));
        }
    }
    if !targets.is_empty() {
        let mut s = grafana::table(
            "Active alarms",
            "Alarm points whose last value in the time range is true, per asset.",
            grafana::influx(),
            targets,
            vec![
                json!({"id": "reduce", "options": {"mode": "seriesToRows", "reducers": ["lastNotNull"], "includeTimeField": false}}),
            ],
        );
        s["fieldConfig"]["defaults"]["mappings"] =
            grafana::value_mappings(&[("true".into(), "ALARM".into(), "red".into())]);
        b.add(10, 6, s);
    }
    device_status_panels(&mut b, "Devices", 10);
    b.row("Work orders");
    b.add(
        24,
        10,
        grafana::table(
            "Work-order events",
            "Lifecycle events of the chosen assets' work orders in the time range, newest first.",
            grafana::influx(),
            vec![influx_target(0, WORK_ORDER_TABLE, None, Format::Table)],
            vec![],
        ),
    );
    b.finish()
}
