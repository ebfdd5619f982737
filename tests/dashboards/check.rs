//! Checks on Grafana dashboard files: their structure, and their queries run as Grafana runs
//! them (variables resolved in order from their own queries, `$timeFilter`, `$__interval`,
//! multi-value and "All" as regexes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::support::influxdb::InfluxDb1;
use super::support::prometheus::Prometheus;

/// Panels allowed to show nothing on the simulated site (dashboard uid, title, why). None
/// needed: the test's faults give every panel data.
const ALLOWED_EMPTY: &[(&str, &str, &str)] = &[];

pub fn load_dashboards(dir: &Path) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(Result::unwrap)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
            (e.file_name().to_string_lossy().into_owned(), json)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Every panel, rows and the panels inside collapsed rows included.
pub fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// The panels that query something.
pub fn panels(d: &Value) -> Vec<&Value> {
    all_panels(d)
        .into_iter()
        .filter(|p| p["type"] != "row")
        .collect()
}

/// The uids of the data sources the provisioning files under `dir` define (commented
/// alternatives left out).
pub fn provisioned_uids(dir: &Path) -> BTreeSet<String> {
    let mut uids = BTreeSet::new();
    for e in std::fs::read_dir(dir.join("provisioning/datasources"))
        .unwrap()
        .map(Result::unwrap)
    {
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            if let Some(uid) = line.trim_start().strip_prefix("uid:") {
                uids.insert(uid.trim().to_string());
            }
        }
    }
    uids
}

/// `$name` and `${name}` references in a query.
fn references(q: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = q.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let start = if b.get(i + 1) == Some(&b'{') {
                i + 2
            } else {
                i + 1
            };
            let end = (start..b.len())
                .find(|&j| !(b[j].is_ascii_alphanumeric() || b[j] == b'_'))
                .unwrap_or(b.len());
            if end > start {
                out.insert(q[start..end].to_string());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

const BUILT_IN: &[&str] = &[
    "timeFilter",
    "__interval",
    "__rate_interval",
    "__range",
    "__interval_ms",
];

/// One query of a dashboard.
pub struct Query<'a> {
    pub place: String,
    pub datasource: &'a Value,
    pub text: String,
}

pub fn queries(d: &Value) -> Vec<Query<'_>> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let text = t["query"]
                .as_str()
                .or(t["expr"].as_str())
                .unwrap_or_default()
                .to_string();
            let ds = if t["datasource"].is_object() {
                &t["datasource"]
            } else {
                &p["datasource"]
            };
            out.push(Query {
                place: format!("panel {} {:?} {}", p["id"], p["title"], t["refId"]),
                datasource: ds,
                text,
            });
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        let text = a["query"].as_str().unwrap_or_default().to_string();
        out.push(Query {
            place: format!("annotation {:?}", a["name"]),
            datasource: &a["datasource"],
            text,
        });
    }
    out
}

/// Problems of every dashboard under `dir/dashboards` against the data sources of
/// `dir/provisioning`.
pub fn structure(dir: &Path) -> Vec<String> {
    let uids = provisioned_uids(dir);
    let mut problems = Vec::new();
    let mut dashboard_uids = BTreeSet::new();
    let dashboards = load_dashboards(&dir.join("dashboards"));
    if dashboards.is_empty() {
        problems.push("no dashboards".to_string());
    }
    for (file, d) in &dashboards {
        let mut fail = |m: String| problems.push(format!("{file}: {m}"));
        let uid = d["uid"].as_str().unwrap_or_default();
        if uid.is_empty() || uid.len() > 40 || !dashboard_uids.insert(uid.to_string()) {
            fail(format!("uid {uid:?} missing, too long or not unique"));
        }
        if format!("{uid}.json") != *file {
            fail(format!("file name is not the uid {uid:?}"));
        }
        if d["schemaVersion"] != 39 {
            fail(format!("schemaVersion {}", d["schemaVersion"]));
        }
        let all = all_panels(d);
        let mut ids = BTreeSet::new();
        for p in &all {
            if !ids.insert(p["id"].as_u64().unwrap_or(0)) || p["id"].as_u64().unwrap_or(0) == 0 {
                fail(format!("panel id {} missing or repeated", p["id"]));
            }
        }
        let rects: Vec<(u64, [u64; 4])> = d["panels"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let g = &p["gridPos"];
                (
                    p["id"].as_u64().unwrap_or(0),
                    ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap_or(0)),
                )
            })
            .collect();
        for (i, (id, [x, y, w, h])) in rects.iter().enumerate() {
            if *w == 0 || *h == 0 || x + w > 24 {
                fail(format!(
                    "panel {id}: gridPos {x},{y} {w}x{h} is not on the grid"
                ));
            }
            for (id2, [x2, y2, w2, h2]) in &rects[i + 1..] {
                if x < &(x2 + w2) && x2 < &(x + w) && y < &(y2 + h2) && y2 < &(y + h) {
                    fail(format!("panels {id} and {id2} overlap"));
                }
            }
        }
        let vars: Vec<&Value> = d["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let mut defined: BTreeSet<String> = BTreeSet::new();
        for v in &vars {
            let q = v["query"].as_str().unwrap_or_default();
            for r in references(q) {
                if !defined.contains(&r) {
                    fail(format!(
                        "variable {} uses ${r} before it is defined",
                        v["name"]
                    ));
                }
            }
            check_datasource(
                &v["datasource"],
                &uids,
                &format!("variable {}", v["name"]),
                &mut fail,
            );
            defined.insert(v["name"].as_str().unwrap_or_default().to_string());
        }
        for p in panels(d) {
            check_datasource(
                &p["datasource"],
                &uids,
                &format!("panel {}", p["id"]),
                &mut fail,
            );
            if p["targets"].as_array().is_none_or(Vec::is_empty) {
                fail(format!("panel {} has no query", p["id"]));
            }
        }
        for q in queries(d) {
            check_datasource(q.datasource, &uids, &q.place, &mut fail);
            if q.text.is_empty() {
                fail(format!("{}: empty query", q.place));
            }
            if q.datasource["type"] == "influxdb" && !q.text.contains("$timeFilter") {
                fail(format!("{}: no $timeFilter in {}", q.place, q.text));
            }
            for r in references(&q.text) {
                if !defined.contains(&r) && !BUILT_IN.contains(&r.as_str()) {
                    fail(format!("{}: ${r} is no variable", q.place));
                }
            }
        }
    }
    problems
}

fn check_datasource(
    ds: &Value,
    uids: &BTreeSet<String>,
    place: &str,
    fail: &mut impl FnMut(String),
) {
    let uid = ds["uid"].as_str().unwrap_or_default();
    if !uids.contains(uid) {
        fail(format!(
            "{place}: data source {ds} is not provisioned ({uids:?})"
        ));
    }
}

/// The time range and intervals the queries are expanded with.
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval: &'static str,
    pub rate_interval: &'static str,
}

/// A value as Grafana puts it in a regex: special characters escaped.
fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\^$.|?*+()[]{}/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn expand(q: &str, vars: &BTreeMap<String, String>, w: &Window) -> String {
    let mut q = q
        .replace(
            "$timeFilter",
            &format!("time >= {}ms and time <= {}ms", w.from_ms, w.to_ms),
        )
        .replace("$__rate_interval", w.rate_interval)
        .replace("$__interval", w.interval);
    // Longest names first, so that `$asset` does not eat `$assets`.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        q = q
            .replace(&format!("${{{n}}}"), &vars[n])
            .replace(&format!("${n}"), &vars[n]);
    }
    q
}

/// The series of an InfluxDB answer that hold at least one value.
fn influx_series(ans: &Value) -> usize {
    ans["results"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["series"].as_array().into_iter().flatten())
        .filter(|s| {
            s["values"].as_array().into_iter().flatten().any(|row| {
                row.as_array()
                    .into_iter()
                    .flatten()
                    .skip(1)
                    .any(|v| !v.is_null())
            })
        })
        .count()
}

pub struct Report {
    pub queries: usize,
    pub failures: Vec<String>,
}

/// Resolves the variables, then runs every query: none may fail, every panel must show data
/// (but those in [`ALLOWED_EMPTY`]), the overview's work-order annotations must find events.
pub async fn run_dashboard(d: &Value, w: &Window, influx: &InfluxDb1, prom: &Prometheus) -> Report {
    let uid = d["uid"].as_str().unwrap_or_default();
    let mut r = Report {
        queries: 0,
        failures: Vec::new(),
    };
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_string();
        let q = expand(v["query"].as_str().unwrap_or_default(), &vars, w);
        r.queries += 1;
        let values: Result<Vec<String>, String> = if v["datasource"]["type"] == "prometheus" {
            match q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .and_then(|s| s.rsplit_once(','))
            {
                Some((selector, label)) => prom.label_values(selector.trim(), label.trim()).await,
                None => Err(format!("not label_values(selector, label): {q}")),
            }
        } else {
            influx.query_raw(Some("facilityd"), &q).await.map(|ans| {
                InfluxDb1::rows(&ans)
                    .iter()
                    .filter_map(|row| row["value"].as_str().map(str::to_string))
                    .collect()
            })
        };
        let values = match values {
            Ok(v) if !v.is_empty() => v,
            Ok(_) => {
                r.failures
                    .push(format!("variable {name}: no values from {q}"));
                return r;
            }
            Err(e) => {
                r.failures.push(format!("variable {name}: {e}\n    {q}"));
                return r;
            }
        };
        let value = match (
            v["multi"].as_bool().unwrap_or(false),
            v["allValue"].as_str(),
        ) {
            (true, Some(all)) => all.to_string(),
            (true, None) => format!(
                "({})",
                values
                    .iter()
                    .map(|s| regex_escape(s))
                    .collect::<Vec<_>>()
                    .join("|")
            ),
            (false, _) => regex_escape(&values[0]),
        };
        vars.insert(name, value);
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        let q = expand(a["query"].as_str().unwrap_or_default(), &vars, w);
        r.queries += 1;
        match influx.query_raw(Some("facilityd"), &q).await {
            Ok(ans) if influx_series(&ans) == 0 && uid == "facilityd-overview" => r.failures.push(
                format!("annotation {}: no work-order events\n    {q}", a["name"]),
            ),
            Ok(_) => {}
            Err(e) => r
                .failures
                .push(format!("annotation {}: {e}\n    {q}", a["name"])),
        }
    }
    for p in panels(d) {
        let title = p["title"].as_str().unwrap_or_default();
        let mut series = 0;
        for t in p["targets"].as_array().into_iter().flatten() {
            r.queries += 1;
            let place = format!("panel {title:?} {}", t["refId"]);
            if t["datasource"]["type"] == "prometheus" {
                let q = expand(t["expr"].as_str().unwrap_or_default(), &vars, w);
                match prom.query(&q).await {
                    Ok(v) => series += v.len(),
                    Err(e) => r.failures.push(format!("{place}: {e}\n    {q}")),
                }
            } else {
                let q = expand(t["query"].as_str().unwrap_or_default(), &vars, w);
                match influx.query_raw(Some("facilityd"), &q).await {
                    Ok(ans) => series += influx_series(&ans),
                    Err(e) => r.failures.push(format!("{place}: {e}\n    {q}")),
                }
            }
        }
        let allowed = ALLOWED_EMPTY
            .iter()
            .any(|(u, t, _)| *u == uid && *t == title);
        if series == 0 && !allowed {
            r.failures.push(format!("panel {title:?}: no data"));
        }
    }
    r
}

/// Every `facilityd_*` metric the health dashboard's PromQL names appears in `/metrics`.
pub fn health_metric_names_exist(dir: &Path, metrics: &str) -> Vec<String> {
    // A family declared by `# TYPE` exists even while it has no sample (a counter by label
    // that nothing has incremented yet).
    let exported: BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(t) => t.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .collect();
    let mut missing = Vec::new();
    let mut used = 0;
    for (file, d) in load_dashboards(dir) {
        for q in queries(&d)
            .into_iter()
            .filter(|q| q.datasource["type"] == "prometheus")
        {
            let mut rest = q.text.as_str();
            while let Some(i) = rest.find("facilityd_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                used += 1;
                if !exported.contains(name.as_str()) {
                    missing.push(format!(
                        "{file}: {}: metric {name} is not in /metrics",
                        q.place
                    ));
                }
            }
        }
    }
    if used == 0 {
        missing.push("no facilityd_* metric in any Prometheus query".into());
    }
    missing
}
