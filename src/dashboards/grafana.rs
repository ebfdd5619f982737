//! Grafana's dashboard JSON model: a dashboard, its panels placed on the 24-column grid, query
//! targets, template variables and annotations. Only the keys the dashboards here use.

use serde_json::{Value, json};

/// The uid the InfluxDB data source is provisioned with; every InfluxQL panel names it.
pub const INFLUX_UID: &str = "facilityd-influxdb";
/// The uid of the Prometheus data source that scrapes the gateway's `/metrics`.
pub const PROMETHEUS_UID: &str = "facilityd-prometheus";
/// Grafana 10/11 write this version; newer Grafana migrates it on load.
pub const SCHEMA_VERSION: u64 = 39;
/// The tag every generated dashboard carries (and the dashboard links list).
pub const TAG: &str = "facilityd";

const GRID_WIDTH: u32 = 24;

pub fn influx() -> Value {
    json!({"type": "influxdb", "uid": INFLUX_UID})
}

pub fn prometheus() -> Value {
    json!({"type": "prometheus", "uid": PROMETHEUS_UID})
}

/// `A`, `B`, ..., `Z`, `AA`, `AB`, ...: Grafana's query reference ids.
pub fn ref_id(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8_lossy(&s).into_owned()
}

/// How an InfluxQL answer becomes data frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A series per tag set (named by `alias`).
    TimeSeries,
    /// Rows and columns, tags as columns.
    Table,
}

/// A raw InfluxQL query target.
pub fn influx_target(i: usize, query: &str, alias: Option<&str>, format: Format) -> Value {
    let mut t = json!({
        "refId": ref_id(i),
        "datasource": influx(),
        "rawQuery": true,
        "query": query,
        "resultFormat": match format {
            Format::TimeSeries => "time_series",
            Format::Table => "table",
        },
    });
    if let Some(a) = alias {
        t["alias"] = json!(a);
    }
    t
}

/// A PromQL target; `legend` like `{{asset}}`.
pub fn prom_target(i: usize, expr: &str, legend: &str) -> Value {
    json!({
        "refId": ref_id(i),
        "datasource": prometheus(),
        "expr": expr,
        "legendFormat": legend,
        "range": true,
        "instant": false,
    })
}

/// A panel of `kind` (`timeseries`, `stat`, `state-timeline`, `table`, `bargauge`) with its
/// targets; `id` and `gridPos` are set when it is added to a [`Board`].
pub fn panel(
    kind: &str,
    title: &str,
    description: &str,
    datasource: Value,
    targets: Vec<Value>,
) -> Value {
    json!({
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource,
        "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    })
}

/// A time-series panel: lines, or bars for counts and increases.
pub fn timeseries(
    title: &str,
    description: &str,
    datasource: Value,
    targets: Vec<Value>,
    bars: bool,
) -> Value {
    let mut p = panel("timeseries", title, description, datasource, targets);
    p["fieldConfig"]["defaults"]["custom"] = if bars {
        json!({"drawStyle": "bars", "fillOpacity": 60, "lineWidth": 1, "spanNulls": false})
    } else {
        // Gaps shorter than a minute (a missed poll at a fine interval) are bridged; a device
        // that stopped answering shows as a gap.
        json!({"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0, "showPoints": "never", "spanNulls": 60000})
    };
    p["options"] = json!({
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": true},
        "tooltip": {"mode": "multi", "sort": "none"},
    });
    p
}

/// A stat panel showing each series' last value with its name.
pub fn stat(title: &str, description: &str, datasource: Value, targets: Vec<Value>) -> Value {
    let mut p = panel("stat", title, description, datasource, targets);
    p["options"] = json!({
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
        "colorMode": "value",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "value_and_name",
    });
    p
}

/// A state timeline: one row per series, coloured by value mappings or thresholds.
pub fn state_timeline(
    title: &str,
    description: &str,
    datasource: Value,
    targets: Vec<Value>,
) -> Value {
    let mut p = panel("state-timeline", title, description, datasource, targets);
    p["fieldConfig"]["defaults"]["custom"] =
        json!({"fillOpacity": 75, "lineWidth": 0, "spanNulls": 60000});
    p["options"] = json!({
        "mergeValues": true,
        "showValue": "auto",
        "alignValue": "left",
        "rowHeight": 0.9,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": false},
        "tooltip": {"mode": "single", "sort": "none"},
    });
    p
}

/// A table; `transformations` are Grafana's (`reduce`, `organize`, ...).
pub fn table(
    title: &str,
    description: &str,
    datasource: Value,
    targets: Vec<Value>,
    transformations: Vec<Value>,
) -> Value {
    let mut p = panel("table", title, description, datasource, targets);
    p["options"] = json!({"showHeader": true, "cellHeight": "sm"});
    p["transformations"] = json!(transformations);
    p
}

/// A horizontal bar gauge of each series' last value.
pub fn bar_gauge(title: &str, description: &str, datasource: Value, targets: Vec<Value>) -> Value {
    let mut p = panel("bargauge", title, description, datasource, targets);
    p["options"] = json!({
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
        "orientation": "horizontal",
        "displayMode": "basic",
        "showUnfilled": true,
    });
    p
}

/// Colour steps: `[(None, base colour), (Some(limit), colour), ...]`.
pub fn thresholds(steps: &[(Option<f64>, &str)]) -> Value {
    json!({
        "mode": "absolute",
        "steps": steps.iter().map(|(v, c)| json!({"color": c, "value": v})).collect::<Vec<_>>(),
    })
}

/// One value mapping: each (value, text, colour) shown as the text in the colour.
pub fn value_mappings(values: &[(String, String, String)]) -> Value {
    let mut options = serde_json::Map::new();
    for (i, (value, text, color)) in values.iter().enumerate() {
        options.insert(
            value.clone(),
            json!({"text": text, "color": color, "index": i}),
        );
    }
    json!([{"type": "value", "options": options}])
}

/// A query variable. `all_value` is what "All" stands for (`.*`); without it "All" is the
/// list of every option, which carries the filters the variable's query applied.
pub fn variable(
    name: &str,
    label: &str,
    datasource: Value,
    query: &str,
    multi: bool,
    all_value: Option<&str>,
) -> Value {
    let mut v = json!({
        "name": name,
        "label": label,
        "type": "query",
        "datasource": datasource,
        "query": query,
        "definition": query,
        "refresh": 1,
        "multi": multi,
        "includeAll": multi,
        "sort": 1,
        "hide": 0,
        "current": {},
        "options": [],
    });
    if let Some(a) = all_value {
        v["allValue"] = json!(a);
    }
    v
}

/// A dashboard being built: panels get unique ids and non-overlapping grid positions in the
/// order they are added, left to right, top to bottom.
pub struct Board {
    json: Value,
    panels: Vec<Value>,
    next_id: u64,
    x: u32,
    y: u32,
    line_height: u32,
}

impl Board {
    pub fn new(uid: &str, title: &str, description: &str, time_from: &str) -> Board {
        let json = json!({
            "uid": uid,
            "title": title,
            "description": description,
            "tags": [TAG],
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": true,
            "graphTooltip": 1,
            "time": {"from": time_from, "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "refresh": "30s",
            "links": [{
                "title": "facilityd",
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": true,
                "includeVars": false,
                "keepTime": true,
                "targetBlank": false,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }],
            "templating": {"list": []},
            "annotations": {"list": []},
        });
        Board {
            json,
            panels: Vec::new(),
            next_id: 1,
            x: 0,
            y: 0,
            line_height: 0,
        }
    }

    /// Starts a new line with a full-width row header.
    pub fn row(&mut self, title: &str) {
        self.new_line();
        let id = self.take_id();
        self.panels.push(json!({
            "type": "row",
            "id": id,
            "title": title,
            "collapsed": false,
            "panels": [],
            "gridPos": {"x": 0, "y": self.y, "w": GRID_WIDTH, "h": 1},
        }));
        self.y += 1;
    }

    /// Adds `panel` `w` columns wide (1-24) and `h` grid units high.
    pub fn add(&mut self, w: u32, h: u32, mut panel: Value) {
        let w = w.clamp(1, GRID_WIDTH);
        if self.x + w > GRID_WIDTH {
            self.new_line();
        }
        panel["id"] = json!(self.take_id());
        panel["gridPos"] = json!({"x": self.x, "y": self.y, "w": w, "h": h});
        self.x += w;
        self.line_height = self.line_height.max(h);
        self.panels.push(panel);
    }

    pub fn variable(&mut self, v: Value) {
        push(&mut self.json["templating"]["list"], v);
    }

    pub fn annotation(&mut self, a: Value) {
        push(&mut self.json["annotations"]["list"], a);
    }

    pub fn finish(mut self) -> Value {
        self.json["panels"] = Value::Array(self.panels);
        self.json
    }

    fn new_line(&mut self) {
        self.y += self.line_height;
        self.x = 0;
        self.line_height = 0;
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

fn push(list: &mut Value, v: Value) {
    if let Value::Array(a) = list {
        a.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_ids_count_like_spreadsheet_columns() {
        let ids: Vec<String> = [0, 1, 25, 26, 27, 51, 52, 701, 702]
            .into_iter()
            .map(ref_id)
            .collect();
        assert_eq!(ids, ["A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]);
    }

    #[test]
    fn panels_wrap_at_the_grid_width_without_overlap() {
        let mut b = Board::new("u-test-01", "t", "", "now-1h");
        b.add(12, 8, panel("stat", "a", "", influx(), vec![]));
        b.add(12, 4, panel("stat", "b", "", influx(), vec![]));
        b.add(8, 5, panel("stat", "c", "", influx(), vec![]));
        b.row("r");
        b.add(30, 2, panel("stat", "d", "", influx(), vec![]));
        let d = b.finish();
        let pos: Vec<(u64, u64, u64, u64, u64)> = d["panels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let g = &p["gridPos"];
                (
                    p["id"].as_u64().unwrap(),
                    g["x"].as_u64().unwrap(),
                    g["y"].as_u64().unwrap(),
                    g["w"].as_u64().unwrap(),
                    g["h"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            pos,
            [
                (1, 0, 0, 12, 8),
                (2, 12, 0, 12, 4),
                (3, 0, 8, 8, 5),
                (4, 0, 13, 24, 1),
                (5, 0, 14, 24, 2)
            ]
        );
    }
}
