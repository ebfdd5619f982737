//! The handover baseline (承接查验): a building's equipment frozen at one moment, hashed.
//!
//! A record holds, for every asset of one building, its profile and identity, the last good
//! value of every point with its time and unit, its counters (the counter points, listed apart),
//! its online state and last good poll, each gauge's observed range over the window before the
//! record (the telemetry log's local history; see [`RANGE_WINDOW_HOURS`]), and its open work
//! orders with their evidence. The record is serialized as canonical JSON ([`canonical_json`]:
//! keys sorted, no insignificant whitespace, numbers as serde_json writes them) and its SHA-256
//! (hex) is stored beside it; [`verify`] recomputes it when the record is read back.
//!
//! The module is pure: the caller (the API) gathers the gateway's state into [`AssetInput`]s.

pub mod diff;
pub mod render;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::device::latest::DeviceLatest;
use crate::device::link::Link;
use crate::device::{Device, DeviceSource};
use crate::model::Value as PointValue;
use crate::profile::PointKind;
use crate::workorder::types::WorkOrder;

/// How far back a gauge's observed range reaches (what the telemetry log still holds of it).
pub const RANGE_WINDOW_HOURS: i64 = 24;

/// A handover record, as hashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoverRecord {
    pub building: String,
    /// RFC 3339, UTC, milliseconds.
    pub recorded_at: String,
    /// The same moment in the gateway's time zone.
    pub recorded_at_local: String,
    pub timezone: String,
    pub gateway_id: String,
    pub site: Option<String>,
    pub recorded_by: String,
    pub note: Option<String>,
    /// Start of the window the gauges' ranges were observed over (UTC).
    pub range_from: String,
    pub assets: Vec<AssetRecord>,
}

/// One asset in a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetRecord {
    pub id: String,
    pub name: Option<String>,
    pub profile: String,
    pub device_type: String,
    pub site: Option<String>,
    pub building: Option<String>,
    pub floor: Option<String>,
    /// How it is reached, without credentials (`tcp://host:port`, `rtu:///dev/ttyS0`, `mqtt`).
    pub link: String,
    pub modbus_unit: Option<u8>,
    pub mqtt_topic: Option<String>,
    pub online: Option<bool>,
    /// The last good poll (or message), UTC.
    pub last_good_at: Option<String>,
    /// Every point, in profile order (counters too).
    pub points: Vec<PointRecord>,
    /// The counter points again, apart: the baselines a warranty or meter rule starts from.
    pub counters: Vec<CounterRecord>,
    pub open_work_orders: Vec<OpenWorkOrder>,
}

/// One point's last good value and, for gauges, its observed range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRecord {
    pub name: String,
    pub kind: String,
    pub unit: Option<String>,
    /// `null`: never read since the gateway started.
    pub value: Value,
    pub at: Option<String>,
    /// Gauges: lowest and highest value seen in the window (the current value alone when the
    /// log holds none).
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Gauges: how many logged samples the range is from (0: the current value alone).
    pub samples: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterRecord {
    pub name: String,
    pub unit: Option<String>,
    pub value: Value,
    pub at: Option<String>,
}

/// An open (unresolved) work order of the asset at the moment of the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenWorkOrder {
    pub id: i64,
    pub rule: String,
    pub kind: String,
    pub priority: String,
    pub status: String,
    pub title: String,
    pub opened_at: String,
    pub due_at: String,
    pub evidence: Value,
}

/// The observed range of one gauge: (min, max, samples).
pub type Range = (f64, f64, u64);

/// What the caller gathers of one asset.
#[derive(Debug, Clone)]
pub struct AssetInput<'a> {
    pub device: &'a Device,
    pub latest: DeviceLatest,
    pub last_good: Option<DateTime<Utc>>,
    /// By point name; gauges the log holds no sample of are absent.
    pub ranges: BTreeMap<String, Range>,
    /// The asset's unresolved work orders.
    pub open: Vec<WorkOrder>,
}

/// The record's header.
#[derive(Debug, Clone)]
pub struct RecordMeta {
    pub building: String,
    pub at: DateTime<Utc>,
    /// IANA name (`Asia/Shanghai`); an unknown one is written as UTC.
    pub timezone: String,
    pub gateway_id: String,
    pub site: Option<String>,
    pub recorded_by: String,
    pub note: Option<String>,
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ns_time(ns: i64) -> Option<String> {
    (ns > 0).then(|| rfc3339(DateTime::from_timestamp_nanos(ns)))
}

/// A float to 12 significant digits: a scaled register's representation noise
/// (`3 * 0.1 = 0.30000000000000004`) is not part of the reading.
pub fn tidy(f: f64) -> f64 {
    if !f.is_finite() || f == 0.0 {
        return f;
    }
    format!("{f:.11e}").parse().unwrap_or(f)
}

pub fn point_json(v: &PointValue) -> Value {
    match v {
        PointValue::Float(f) => {
            serde_json::Number::from_f64(tidy(*f)).map_or(Value::Null, Value::Number)
        }
        PointValue::Int(i) => Value::from(*i),
        PointValue::Bool(b) => Value::Bool(*b),
        PointValue::Str(s) => Value::String(s.clone()),
    }
}

pub fn kind_str(k: PointKind) -> &'static str {
    match k {
        PointKind::Gauge => "gauge",
        PointKind::Counter => "counter",
        PointKind::State => "state",
        PointKind::Alarm => "alarm",
        PointKind::Event => "event",
    }
}

/// Drops `user:password@` from a host, should one have been written into a link.
fn without_credentials(host: &str) -> &str {
    host.rsplit_once('@').map_or(host, |(_, h)| h)
}

/// A device's link as a URL without credentials, its Modbus unit and its MQTT topic.
pub fn link_of(d: &Device) -> (String, Option<u8>, Option<String>) {
    match &d.source {
        DeviceSource::Modbus(m) => {
            let url = match &m.link {
                Link::Tcp { host, port } => format!("tcp://{}:{port}", without_credentials(host)),
                Link::RtuOverTcp { host, port } => {
                    format!("rtu+tcp://{}:{port}", without_credentials(host))
                }
                Link::Rtu(s) => format!(
                    "rtu://{}?baud={}&parity={}&data_bits={}&stop_bits={}",
                    s.path, s.baud, s.parity, s.data_bits, s.stop_bits
                ),
            };
            (url, Some(m.unit), None)
        }
        DeviceSource::Mqtt { topic } => ("mqtt".into(), None, topic.clone()),
    }
}

fn local_time(at: DateTime<Utc>, tz: &str) -> (String, String) {
    match tz.parse::<chrono_tz::Tz>() {
        Ok(z) => (
            at.with_timezone(&z)
                .to_rfc3339_opts(SecondsFormat::Millis, false),
            tz.to_string(),
        ),
        Err(_) => (rfc3339(at), "UTC".into()),
    }
}

fn open_work_order(w: &WorkOrder) -> OpenWorkOrder {
    OpenWorkOrder {
        id: w.id,
        rule: w.rule.clone(),
        kind: serde_json::to_value(w.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        priority: w.priority.as_str().to_string(),
        status: w.status.as_str().to_string(),
        title: w.title.clone(),
        opened_at: rfc3339(w.opened_at),
        due_at: rfc3339(w.due_at),
        evidence: serde_json::to_value(&w.evidence).unwrap_or(Value::Null),
    }
}

/// One asset's part of a record.
pub fn asset_record(a: &AssetInput<'_>) -> AssetRecord {
    let d = a.device;
    let (link, modbus_unit, mqtt_topic) = link_of(d);
    let mut points = Vec::with_capacity(d.profile.points.len());
    let mut counters = Vec::new();
    for (i, p) in d.profile.points.iter().enumerate() {
        let (value, at) = match a.latest.points.get(i).cloned().flatten() {
            Some((v, ts)) => (point_json(&v), ns_time(ts)),
            None => (Value::Null, None),
        };
        let (min, max, samples) = if p.kind == PointKind::Gauge {
            match (a.ranges.get(&*p.name), value.as_f64()) {
                (Some(&(lo, hi, n)), now) => {
                    // The current value belongs to the range even if the log has not got it yet.
                    let (lo, hi) = now.map_or((lo, hi), |v| (lo.min(v), hi.max(v)));
                    (Some(tidy(lo)), Some(tidy(hi)), Some(n))
                }
                (None, Some(v)) => (Some(v), Some(v), Some(0)),
                (None, None) => (None, None, Some(0)),
            }
        } else {
            (None, None, None)
        };
        if p.kind == PointKind::Counter {
            counters.push(CounterRecord {
                name: p.name.to_string(),
                unit: p.unit.clone(),
                value: value.clone(),
                at: at.clone(),
            });
        }
        points.push(PointRecord {
            name: p.name.to_string(),
            kind: kind_str(p.kind).to_string(),
            unit: p.unit.clone(),
            value,
            at,
            min,
            max,
            samples,
        });
    }
    let mut open: Vec<OpenWorkOrder> = a.open.iter().map(open_work_order).collect();
    open.sort_by_key(|w| w.id);
    AssetRecord {
        id: d.id.to_string(),
        name: d.name.clone(),
        profile: d.profile.name.clone(),
        device_type: d.profile.device_type.as_str().to_string(),
        site: d.site.clone(),
        building: d.building.clone(),
        floor: d.floor.clone(),
        link,
        modbus_unit,
        mqtt_topic,
        online: a.latest.online,
        last_good_at: a.last_good.map(rfc3339),
        points,
        counters,
        open_work_orders: open,
    }
}

/// The record of `assets` at `meta.at`, assets sorted by id.
pub fn build(meta: &RecordMeta, assets: &[AssetInput<'_>]) -> HandoverRecord {
    let (local, timezone) = local_time(meta.at, &meta.timezone);
    let mut assets: Vec<AssetRecord> = assets.iter().map(asset_record).collect();
    assets.sort_by(|a, b| a.id.cmp(&b.id));
    HandoverRecord {
        building: meta.building.clone(),
        recorded_at: rfc3339(meta.at),
        recorded_at_local: local,
        timezone,
        gateway_id: meta.gateway_id.clone(),
        site: meta.site.clone(),
        recorded_by: meta.recorded_by.clone(),
        note: meta.note.clone(),
        range_from: rfc3339(meta.at - chrono::Duration::hours(RANGE_WINDOW_HOURS)),
        assets,
    }
}

/// Canonical JSON: object keys sorted (by their UTF-8 bytes), no whitespace between tokens,
/// strings and numbers exactly as serde_json writes them.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

pub use crate::workorder::handover::sha256_hex;

/// A record's canonical JSON and its hash.
pub fn seal(record: &HandoverRecord) -> Result<(String, String), serde_json::Error> {
    let text = canonical_json(&serde_json::to_value(record)?);
    let hash = sha256_hex(&text);
    Ok((text, hash))
}

/// Whether a stored record's text still has the stored hash.
pub fn verify(record_text: &str, sha256: &str) -> bool {
    sha256_hex(record_text).eq_ignore_ascii_case(sha256.trim())
}

#[cfg(test)]
mod tests;
