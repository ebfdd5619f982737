//! Pieces the InfluxDB dashboards share: the variables, the work-order annotations, and a
//! point's panel decorations (unit, value mappings, code thresholds).

use serde_json::{Value, json};

use super::grafana::{self, Board};
use super::influxql::{self, ident};
use crate::profile::Point;

/// `site`, `building` and `asset` variables, chained: buildings of the chosen sites, assets of
/// the chosen buildings that write `measurement`. Site and building "All" match any value (and
/// devices without the tag); asset "All" is the list of the assets offered, so it carries the
/// site and building choice into every query, the work-order annotations included.
pub fn place_variables(b: &mut Board, measurement: &str, multi_asset: bool) {
    b.variable(grafana::variable(
        "site",
        "Site",
        grafana::influx(),
        "SHOW TAG VALUES FROM \"device_status\" WITH KEY = \"site\"",
        true,
        Some(".*"),
    ));
    b.variable(grafana::variable(
        "building",
        "Building",
        grafana::influx(),
        "SHOW TAG VALUES FROM \"device_status\" WITH KEY = \"building\" WHERE \"site\" =~ /^$site$/",
        true,
        Some(".*"),
    ));
    let assets = format!(
        "SHOW TAG VALUES FROM {} WITH KEY = \"asset\" WHERE \"site\" =~ /^$site$/ AND \"building\" =~ /^$building$/",
        ident(measurement)
    );
    b.variable(grafana::variable(
        "asset",
        "Asset",
        grafana::influx(),
        &assets,
        multi_asset,
        None,
    ));
}

/// The query of the work-order annotations: every lifecycle event of the chosen assets.
pub const WORK_ORDER_EVENTS: &str = "SELECT \"title\", \"event\", \"status\", \"priority\", \"rule\" FROM \"work_order\" WHERE \"asset\" =~ /^$asset$/ AND $timeFilter";

/// Work-order lifecycle events as annotations: the title as text, event, priority and rule
/// as tags. Written both ways Grafana has read InfluxDB annotations (the query on the
/// annotation, and as its target).
pub fn work_order_annotation(b: &mut Board) {
    let q = WORK_ORDER_EVENTS;
    let cols =
        json!({"textColumn": "title", "tagsColumn": "event,priority,rule", "titleColumn": ""});
    let mut a = json!({
        "name": "Work orders",
        "enable": true,
        "hide": false,
        "iconColor": "orange",
        "datasource": grafana::influx(),
        "query": q,
        "target": {"refId": "Anno", "query": q, "rawQuery": true, "resultFormat": "table"},
    });
    for (k, v) in cols.as_object().into_iter().flatten() {
        a[k] = v.clone();
        a["target"][k] = v.clone();
    }
    b.annotation(a);
}

/// Unit, value mappings and thresholds of a point's panel (or of one point's series in a panel
/// with several: pass the series name as `field` to get an override instead).
pub fn decorate(panel: &mut Value, p: &Point, field: Option<&str>) {
    let mut props: Vec<Value> = Vec::new();
    if let Some(u) = influxql::grafana_unit(p.unit.as_deref()) {
        props.push(json!({"id": "unit", "value": u}));
    }
    let m = influxql::mappings(p);
    if !m.is_empty() {
        props.push(json!({"id": "mappings", "value": grafana::value_mappings(&m)}));
    }
    if influxql::code_thresholds(p) {
        props.push(json!({"id": "color", "value": {"mode": "thresholds"}}));
        props.push(json!({"id": "thresholds", "value": grafana::thresholds(&[(None, "green"), (Some(1.0), "orange")])}));
    }
    match field {
        None => {
            for prop in props {
                let key = prop["id"].as_str().unwrap_or_default().to_string();
                panel["fieldConfig"]["defaults"][key] = prop["value"].clone();
            }
        }
        Some(name) if !props.is_empty() => {
            let o = json!({"matcher": {"id": "byName", "options": name}, "properties": props});
            if let Value::Array(a) = &mut panel["fieldConfig"]["overrides"] {
                a.push(o);
            }
        }
        Some(_) => {}
    }
}

/// A link from each series of a fleet panel to the asset's drill-down dashboard.
pub fn link_to_asset(panel: &mut Value, drill_uid: &str) {
    panel["fieldConfig"]["defaults"]["links"] = json!([{
        "title": "${__field.labels.asset}: every point",
        "url": format!("/d/{drill_uid}?var-asset=${{__field.labels.asset}}&${{__url_time_range}}"),
    }]);
}

/// Describes a point for its panel's description.
pub fn describe(p: &Point) -> String {
    let kind = format!("{:?}", p.kind).to_lowercase();
    let unit = p
        .unit
        .as_deref()
        .map(|u| format!(", unit {u}"))
        .unwrap_or_default();
    format!(
        "Field \"{}\": {kind}, {}{unit}.",
        p.name,
        p.field_type().as_str()
    )
}
