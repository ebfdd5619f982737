//! Grafana dashboards generated from the device profiles in use: a site overview, one fleet
//! dashboard and one asset drill-down per measurement (a device type, or a custom profile's
//! measurement), and the gateway's health from its Prometheus metrics; plus the provisioning
//! files that define the data sources they name. Panels are decided by each point's kind and
//! field type, never by its name.
//!
//! Everything here is pure; [`run`] is the `facilityd dashboards` command (load the
//! configuration, write the files).

pub mod equipment;
pub mod grafana;
pub mod health;
pub mod influxql;
pub mod overview;
pub mod panels;
pub mod provisioning;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::config::ConfigError;
use crate::profile::{Point, Profile};
use crate::settings::Settings;

/// The InfluxDB database the data-source file names when the configuration has no
/// `[influxdb]` (the shipped files).
pub const DEFAULT_DATABASE: &str = "facilityd";

/// The database name InfluxQL queries go to: the 1.x database written to, or for the v2 API
/// the bucket (InfluxDB 2.x maps a bucket to a database of its name unless a DBRP mapping
/// says otherwise).
fn database(s: &Settings) -> &str {
    match s.influxdb.as_ref().map(|i| &i.api) {
        Some(crate::config::InfluxApi::V1 { database, .. }) => database,
        Some(crate::config::InfluxApi::V2 { bucket, .. }) => bucket,
        None => DEFAULT_DATABASE,
    }
}

/// The points written to one measurement, over every profile in use that writes it.
#[derive(Debug, Clone)]
pub struct Equipment {
    pub measurement: String,
    /// The profiles, in the order first seen.
    pub profiles: Vec<String>,
    /// Each field once, in the order first seen (`check` guarantees that profiles sharing a
    /// measurement give a field one type).
    pub points: Vec<Point>,
}

/// Groups the profiles by measurement, sorted by measurement name.
pub fn equipment<'a>(profiles: impl IntoIterator<Item = &'a Profile>) -> Vec<Equipment> {
    let mut out: Vec<Equipment> = Vec::new();
    for p in profiles {
        let i = match out.iter().position(|e| e.measurement == p.measurement) {
            Some(i) => i,
            None => {
                out.push(Equipment {
                    measurement: p.measurement.clone(),
                    profiles: Vec::new(),
                    points: Vec::new(),
                });
                out.len() - 1
            }
        };
        let e = &mut out[i];
        if !e.profiles.contains(&p.name) {
            e.profiles.push(p.name.clone());
        }
        for pt in &p.points {
            if !e.points.iter().any(|q| q.name == pt.name) {
                e.points.push(pt.clone());
            }
        }
    }
    out.sort_by(|a, b| a.measurement.cmp(&b.measurement));
    out
}

/// A generated dashboard.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub uid: String,
    pub json: Value,
}

impl Dashboard {
    pub fn file_name(&self) -> String {
        format!("{}.json", self.uid)
    }

    /// The file's text: pretty JSON with a final newline.
    pub fn text(&self) -> String {
        let mut s = serde_json::to_string_pretty(&self.json).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Grafana uids are at most 40 characters of `[A-Za-z0-9_-]`: the measurement lowercased,
/// other characters as `-`, cut to fit, and numbered when two measurements come out alike.
fn slug(measurement: &str, room: usize) -> String {
    let mut s: String = measurement
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(room);
    if s.trim_matches('-').is_empty() {
        s = "measurement".into();
    }
    s
}

fn unique(uid: String, taken: &mut BTreeSet<String>) -> String {
    let mut candidate = uid.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{uid}-{n}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

/// Every dashboard for these measurements: overview, per measurement the fleet view and the
/// asset drill-down, gateway health.
pub fn dashboards(equipment: &[Equipment]) -> Vec<Dashboard> {
    let mut taken: BTreeSet<String> = ["facilityd-overview", "facilityd-gateway-health"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut out = vec![Dashboard {
        uid: "facilityd-overview".into(),
        json: overview::overview(equipment, "facilityd-overview"),
    }];
    for e in equipment {
        // "facilityd-asset-" leaves 24 characters, and 3 for a number.
        let s = slug(&e.measurement, 21);
        let fleet_uid = unique(format!("facilityd-{s}"), &mut taken);
        let drill_uid = unique(format!("facilityd-asset-{s}"), &mut taken);
        out.push(Dashboard {
            json: equipment::fleet(e, &fleet_uid, &drill_uid),
            uid: fleet_uid,
        });
        out.push(Dashboard {
            json: equipment::drill_down(e, &drill_uid),
            uid: drill_uid,
        });
    }
    out.push(Dashboard {
        uid: "facilityd-gateway-health".into(),
        json: health::health("facilityd-gateway-health"),
    });
    out
}

/// The profiles of the configured devices, each once.
pub fn profiles_in_use(s: &Settings) -> Vec<&Profile> {
    let mut v: Vec<&Profile> = Vec::new();
    for d in &s.devices {
        if !v.iter().any(|p| p.name == d.profile.name) {
            v.push(&d.profile);
        }
    }
    v
}

/// Grafana's smallest `$__interval`: the longest poll interval in whole seconds (at least 1 s).
fn min_interval(s: &Settings) -> String {
    let longest = s
        .devices
        .iter()
        .map(|d| d.interval)
        .max()
        .unwrap_or(Duration::from_secs(1));
    format!("{}s", longest.as_secs_f64().ceil().max(1.0) as u64)
}

/// Every file `facilityd dashboards` writes: (path relative to the output directory, text).
pub fn files(s: &Settings) -> Vec<(PathBuf, String)> {
    let eq = equipment(profiles_in_use(s));
    let mut out: Vec<(PathBuf, String)> = dashboards(&eq)
        .iter()
        .map(|d| (Path::new("dashboards").join(d.file_name()), d.text()))
        .collect();
    out.push((
        Path::new("provisioning/datasources/facilityd.yaml").to_path_buf(),
        provisioning::datasources(database(s), &min_interval(s)),
    ));
    out.push((
        Path::new("provisioning/dashboards/facilityd.yaml").to_path_buf(),
        provisioning::dashboards(),
    ));
    out
}

#[derive(Debug, thiserror::Error)]
pub enum DashboardsError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `facilityd dashboards -c FILE --out DIR`: loads and validates the configuration as `check`
/// does, writes the files under `out`, and returns the lines to print.
pub fn run(config_path: &Path, out: &Path) -> Result<String, DashboardsError> {
    let s = crate::settings::load(config_path)?;
    let mut report = String::new();
    for (rel, text) in files(&s) {
        let path = out.join(&rel);
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, text)
        };
        write().map_err(|source| DashboardsError::Write {
            path: path.clone(),
            source,
        })?;
        report.push_str(&format!("wrote {}\n", path.display()));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::builtin;

    fn built(name: &str) -> Profile {
        builtin::load(name).unwrap().unwrap().build().unwrap().0
    }

    #[test]
    fn profiles_sharing_a_measurement_make_one_equipment_with_each_field_once() {
        let (a, b, c) = (built("elevator"), built("lift_monitor_mqtt"), built("pump"));
        let eq = equipment([&a, &b, &c]);
        assert_eq!(eq.len(), 2);
        assert_eq!(eq[0].measurement, "elevator");
        assert_eq!(eq[0].profiles, ["elevator", "lift_monitor_mqtt"]);
        assert_eq!(eq[0].points.len(), a.points.len());
        assert_eq!(eq[1].measurement, "pump");
    }

    #[test]
    fn uids_are_unique_short_and_grafana_safe() {
        let mut p = built("pump");
        let mut q = built("pump");
        p.measurement = "Overview".into();
        q.name = "other".into();
        q.measurement = "a very long measurement name, with spaces and commas".into();
        let mut r = q.clone();
        r.name = "third".into();
        r.measurement = "a very long measurement name, with spaces and semicolons".into();
        let d = dashboards(&equipment([&p, &q, &r]));
        let uids: BTreeSet<&str> = d.iter().map(|d| d.uid.as_str()).collect();
        assert_eq!(uids.len(), d.len());
        for u in uids {
            assert!(
                u.len() <= 40
                    && u.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{u}"
            );
        }
    }
}
