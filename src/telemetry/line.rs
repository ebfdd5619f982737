//! InfluxDB line protocol, encoded by hand.
//!
//! Escaping per the line-protocol reference: in measurements `,` and space; in tag keys, tag
//! values and field keys `,`, `=` and space; in string field values `"` and `\`. Backslashes
//! are not escapes in names (InfluxDB keeps `\\` as two characters there), and a name ending
//! in one would escape the separator after it, so the config rejects backslashes in names and
//! the encoder turns any that slip through into `/`. Newlines are not representable and become
//! spaces. Integers carry `i`; NaN and infinities are never written.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use crate::device::Device;
use crate::model::{DeviceStatus, Reading, Record, Value, WorkOrderMark};

fn escape(s: &str, specials: &[char], out: &mut String) {
    for c in s.chars() {
        if c == '\\' {
            out.push('/');
        } else if specials.contains(&c) {
            out.push('\\');
            out.push(c);
        } else if c.is_control() {
            // Not representable (the config rejects them in names): an escaped space.
            out.push_str("\\ ");
        } else {
            out.push(c);
        }
    }
}

pub fn escape_measurement(s: &str, out: &mut String) {
    escape(s, &[',', ' '], out)
}

/// Tag keys, tag values and field keys.
pub fn escape_key(s: &str, out: &mut String) {
    escape(s, &[',', '=', ' '], out)
}

pub fn escape_string_value(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `value` in field syntax. Returns false (and appends nothing) for NaN and infinities.
pub fn write_value(value: &Value, out: &mut String) -> bool {
    match value {
        Value::Float(f) if !f.is_finite() => return false,
        // `{:?}` keeps a decimal point or exponent, so the field stays a float, and prints the
        // shortest representation that round-trips.
        Value::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        Value::Int(i) => {
            let _ = write!(out, "{i}i");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Str(s) => escape_string_value(s, out),
    }
    true
}

/// Precomputed pieces of one device's lines.
struct DeviceLines {
    /// `measurement,tag=v,...` of the device's readings.
    reading_prefix: String,
    /// `device_status,tag=v,...`.
    status_prefix: String,
    /// The device's profile's field keys, shared by the devices of that profile.
    keys: Arc<FieldKeys>,
}

/// Per profile point: its escaped field key, and whether it is an alarm, state or event point
/// (kept longest when the log is full).
struct FieldKeys {
    profile: Arc<crate::profile::Profile>,
    fields: Vec<String>,
    priority: Vec<bool>,
}

impl FieldKeys {
    fn new(profile: &Arc<crate::profile::Profile>) -> Self {
        let fields = profile
            .points
            .iter()
            .map(|p| {
                let mut f = String::new();
                escape_key(&p.name, &mut f);
                f
            })
            .collect();
        let priority = profile
            .points
            .iter()
            .map(|p| {
                matches!(
                    p.kind,
                    crate::profile::PointKind::Alarm
                        | crate::profile::PointKind::State
                        | crate::profile::PointKind::Event
                )
            })
            .collect();
        FieldKeys {
            profile: profile.clone(),
            fields,
            priority,
        }
    }
}

/// Encodes records of the configured devices. Records name their device by slot (see
/// `crate::reload`): the configuration's devices start as slots `0..n`, and a reload opens
/// slots for added and changed devices with [`LineEncoder::open_slot`]. Clones share the
/// table, so the reload reaches the telemetry path's encoder. A slot is never reused, so a
/// record still in flight is tagged as its device was when it was read.
#[derive(Clone)]
pub struct LineEncoder {
    gateway: Arc<str>,
    devices: Arc<RwLock<Vec<Option<Arc<DeviceLines>>>>>,
}

/// The standard tags of a device plus its own, sorted by key.
pub fn device_tags(gateway: &str, d: &Device) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = vec![
        ("asset".into(), d.id.to_string()),
        ("device_type".into(), d.profile.device_type.as_str().into()),
        ("gateway".into(), gateway.into()),
    ];
    for (k, v) in [
        ("site", &d.site),
        ("building", &d.building),
        ("floor", &d.floor),
    ] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            tags.push((k.into(), v.clone()));
        }
    }
    tags.extend(
        d.tags
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    tags.sort();
    tags
}

impl DeviceLines {
    /// `known`: the slots already encoded, whose field keys a device of the same profile
    /// shares.
    fn new(gateway: &str, d: &Device, known: &[Option<Arc<DeviceLines>>]) -> Self {
        let mut tagstr = String::new();
        for (k, v) in device_tags(gateway, d) {
            tagstr.push(',');
            escape_key(&k, &mut tagstr);
            tagstr.push('=');
            escape_key(&v, &mut tagstr);
        }
        let mut reading_prefix = String::new();
        escape_measurement(&d.profile.measurement, &mut reading_prefix);
        reading_prefix.push_str(&tagstr);
        let status_prefix = format!("device_status{tagstr}");
        let keys = known
            .iter()
            .flatten()
            .map(|l| &l.keys)
            .find(|k| Arc::ptr_eq(&k.profile, &d.profile))
            .cloned()
            .unwrap_or_else(|| Arc::new(FieldKeys::new(&d.profile)));
        DeviceLines {
            reading_prefix,
            status_prefix,
            keys,
        }
    }
}

impl LineEncoder {
    /// An encoder whose slots `0..n` are `devices`.
    pub fn new(gateway: &str, devices: &[Arc<Device>]) -> Self {
        let mut table = Vec::with_capacity(devices.len());
        for d in devices {
            let lines = DeviceLines::new(gateway, d, &table);
            table.push(Some(Arc::new(lines)));
        }
        LineEncoder {
            gateway: gateway.into(),
            devices: Arc::new(RwLock::new(table)),
        }
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<Arc<DeviceLines>>>> {
        // The table is only ever extended: one poisoned by a panic elsewhere is still whole.
        self.devices.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `slot` encode `device`'s lines (a reload's added or changed device).
    pub fn open_slot(&self, slot: usize, device: &Device) {
        let mut t = self.devices.write().unwrap_or_else(|p| p.into_inner());
        let lines = Arc::new(DeviceLines::new(&self.gateway, device, &t));
        if t.len() <= slot {
            t.resize(slot + 1, None);
        }
        t[slot] = Some(lines);
    }

    /// Appends the line of `record` (with a trailing newline) and returns true, or returns
    /// false and appends nothing when the record has no writable field.
    pub fn encode(&self, record: &Record, out: &mut String) -> bool {
        match record {
            Record::Reading(r) => self.encode_reading([out, &mut String::new()], r, false)[0],
            Record::Status(s) => self.encode_status(s, out),
            Record::WorkOrder(m) => {
                encode_work_order(m, out);
                true
            }
            Record::Ack(_) => false,
        }
    }

    /// Like [`LineEncoder::encode`], but sorts by what the telemetry log drops last: gauges
    /// and counters go to `bulk`; alarm, state and event points, device status and work-order
    /// lines to `priority`. A reading with both becomes two lines with the same series and
    /// time (the database merges their fields into one point). Returns the lines appended
    /// to each.
    pub fn encode_split(
        &self,
        record: &Record,
        bulk: &mut String,
        priority: &mut String,
    ) -> (u32, u32) {
        match record {
            Record::Reading(r) => {
                let [b, p] = self.encode_reading([bulk, priority], r, true);
                (b as u32, p as u32)
            }
            other => (0, self.encode(other, priority) as u32),
        }
    }

    /// One pass over a reading's values: each field goes to `outs[0]`, or, when `split`, a
    /// priority point's to `outs[1]`; a buffer that got a field gets one line with the time.
    /// Returns which buffers got a line.
    fn encode_reading(&self, mut outs: [&mut String; 2], r: &Reading, split: bool) -> [bool; 2] {
        let table = self.table();
        let Some(Some(d)) = table.get(r.device) else {
            return [false; 2];
        };
        let marks = [outs[0].len(), outs[1].len()];
        let mut started = [false; 2];
        let mut fields = [false; 2];
        for (i, v) in &r.values {
            let Some(key) = d.keys.fields.get(*i) else {
                continue;
            };
            let k = usize::from(split && d.keys.priority.get(*i).copied().unwrap_or(false));
            let out = &mut *outs[k];
            if !started[k] {
                out.push_str(&d.reading_prefix);
                started[k] = true;
            }
            let field_mark = out.len();
            out.push(if fields[k] { ',' } else { ' ' });
            out.push_str(key);
            out.push('=');
            if write_value(v, out) {
                fields[k] = true;
            } else {
                out.truncate(field_mark);
            }
        }
        for (k, out) in outs.iter_mut().enumerate() {
            if fields[k] {
                let _ = writeln!(out, " {}", r.timestamp_ns);
            } else {
                out.truncate(marks[k]);
            }
        }
        fields
    }

    fn encode_status(&self, s: &DeviceStatus, out: &mut String) -> bool {
        let table = self.table();
        let Some(Some(d)) = table.get(s.device) else {
            return false;
        };
        let poll_ms = if s.poll_ms.is_finite() {
            s.poll_ms
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "{} online={},poll_ms={:?},errors={}i {}",
            d.status_prefix,
            s.online,
            poll_ms,
            s.errors.min(i64::MAX as u64),
            s.timestamp_ns
        );
        true
    }
}

/// The `work_order` line of a lifecycle event, for Grafana annotations: tags asset, kind,
/// priority and rule; fields id, status, event and title.
pub fn encode_work_order(m: &WorkOrderMark, out: &mut String) {
    out.push_str("work_order");
    for (k, v) in [
        ("asset", m.asset.as_str()),
        ("kind", m.kind),
        ("priority", m.priority),
        ("rule", m.rule.as_str()),
    ] {
        out.push(',');
        out.push_str(k);
        out.push('=');
        escape_key(v, out);
    }
    let _ = write!(out, " id={}i,status=", m.id);
    escape_string_value(m.status, out);
    out.push_str(",event=");
    escape_string_value(m.event, out);
    out.push_str(",title=");
    escape_string_value(&m.title, out);
    let _ = writeln!(out, " {}", m.timestamp_ns);
}

#[cfg(test)]
mod tests {
    use super::*;
    use influxdb_line_protocol::{FieldValue, parse_lines};
    use proptest::prelude::*;

    /// Names: every character that needs escaping, but no newlines or backslashes (which the
    /// config rejects in names).
    fn arb_text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-zA-Z0-9 ,=\"_.°/-]{1,12}")
            .unwrap()
            .prop_filter("not a comment", |s| !s.starts_with('#'))
    }

    /// String field values may hold backslashes and quotes.
    fn arb_value() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-zA-Z0-9 ,=\"\\\\_.°/-]{0,12}").unwrap()
    }

    proptest! {
        #[test]
        fn escaping_round_trips_through_an_independent_parser(
            m in arb_text(), tk in arb_text(), tv in arb_text(), fk in arb_text(), sv in arb_value(),
            i in any::<i64>(), f in proptest::num::f64::NORMAL | proptest::num::f64::ZERO, b in any::<bool>(),
        ) {
            let mut line = String::new();
            escape_measurement(&m, &mut line);
            line.push(',');
            escape_key(&tk, &mut line);
            line.push('=');
            escape_key(&tv, &mut line);
            let keys = [format!("{fk}_s"), format!("{fk}_i"), format!("{fk}_f"), format!("{fk}_b")];
            let vals = [Value::Str(sv.clone()), Value::Int(i), Value::Float(f), Value::Bool(b)];
            for (n, (k, v)) in keys.iter().zip(&vals).enumerate() {
                line.push(if n == 0 { ' ' } else { ',' });
                escape_key(k, &mut line);
                line.push('=');
                prop_assert!(write_value(v, &mut line));
            }
            line.push_str(" 1700000000000000000");
            let parsed: Vec<_> = parse_lines(&line).collect();
            prop_assert_eq!(parsed.len(), 1);
            let p = parsed.into_iter().next().unwrap().map_err(|e| TestCaseError::fail(format!("{e} in {line}")))?;
            prop_assert_eq!(p.series.measurement.to_string(), m);
            let tags = p.series.tag_set.unwrap_or_default();
            prop_assert_eq!(tags.len(), 1);
            prop_assert_eq!(tags[0].0.to_string(), tk);
            prop_assert_eq!(tags[0].1.to_string(), tv);
            prop_assert_eq!(p.field_set.len(), 4);
            for ((k, v), (pk, pv)) in keys.iter().zip(&vals).zip(p.field_set.iter()) {
                prop_assert_eq!(pk.to_string(), k.clone());
                match (v, pv) {
                    (Value::Str(s), FieldValue::String(ps)) => prop_assert_eq!(ps.to_string(), s.clone()),
                    (Value::Int(x), FieldValue::I64(px)) => prop_assert_eq!(px, x),
                    (Value::Float(x), FieldValue::F64(px)) => prop_assert_eq!(px, x),
                    (Value::Bool(x), FieldValue::Boolean(px)) => prop_assert_eq!(px, x),
                    other => prop_assert!(false, "type changed: {:?}", other),
                }
            }
            prop_assert_eq!(p.timestamp, Some(1_700_000_000_000_000_000));
        }
    }

    /// A pump (the built-in profile) with this id and building.
    fn pump(id: &str, building: Option<&str>) -> Arc<Device> {
        let (profile, _) = crate::profile::builtin::load("pump")
            .unwrap()
            .unwrap()
            .build()
            .unwrap();
        Arc::new(Device {
            id: id.into(),
            name: None,
            site: None,
            building: building.map(String::from),
            floor: None,
            tags: Default::default(),
            profile: Arc::new(profile),
            interval: std::time::Duration::from_secs(1),
            source: crate::device::DeviceSource::Mqtt { topic: None },
            origin: ("f.toml".into(), 0),
        })
    }

    #[test]
    fn a_slot_opened_later_encodes_its_device_and_old_slots_keep_theirs() {
        let enc = LineEncoder::new("gw", &[pump("P-1", Some("A"))]);
        // A reload changes P-1's building: a new slot; records of slot 0 in flight keep "A".
        let shared = enc.clone();
        shared.open_slot(1, &pump("P-1", Some("B")));
        let status = |device| {
            Record::Status(DeviceStatus {
                device,
                timestamp_ns: 1,
                online: true,
                poll_ms: 1.0,
                errors: 0,
            })
        };
        let mut out = String::new();
        assert!(enc.encode(&status(0), &mut out));
        assert!(enc.encode(&status(1), &mut out));
        assert!(!enc.encode(&status(2), &mut out), "no such slot");
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("device_status,asset=P-1,building=A,"),
            "{out}"
        );
        assert!(
            lines[1].starts_with("device_status,asset=P-1,building=B,"),
            "{out}"
        );
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn never_writes_nan_or_inf() {
        let mut s = String::new();
        assert!(!write_value(&Value::Float(f64::NAN), &mut s));
        assert!(!write_value(&Value::Float(f64::INFINITY), &mut s));
        assert!(s.is_empty());
        assert!(write_value(&Value::Float(2.0), &mut s));
        assert_eq!(s, "2.0");
    }

    #[test]
    fn split_sends_priority_points_to_their_own_line_with_the_same_series_and_time() {
        let devices = [pump("P1", None)];
        let points = &devices[0].profile.points;
        let idx = |n: &str| points.iter().position(|p| &*p.name == n).unwrap();
        let enc = LineEncoder::new("gw", &devices);
        let reading = |values: Vec<(usize, Value)>| {
            Record::Reading(Reading {
                device: 0,
                timestamp_ns: 7,
                values,
            })
        };
        let (mut bulk, mut prio) = (String::new(), String::new());
        let both = reading(vec![
            (idx("discharge_pressure_bar"), Value::Float(6.5)),
            (idx("fault"), Value::Bool(true)),
            (idx("running"), Value::Bool(false)),
        ]);
        assert_eq!(enc.encode_split(&both, &mut bulk, &mut prio), (1, 1));
        let prefix = bulk.split(' ').next().unwrap().to_string();
        assert_eq!(bulk, format!("{prefix} discharge_pressure_bar=6.5 7\n"));
        assert_eq!(prio, format!("{prefix} fault=true,running=false 7\n"));
        // The plain encoding has every field on one line.
        let mut one = String::new();
        assert!(enc.encode(&both, &mut one));
        assert_eq!(
            one,
            format!("{prefix} discharge_pressure_bar=6.5,fault=true,running=false 7\n")
        );
        // A class whose only value cannot be written gets no line at all.
        let (mut bulk, mut prio) = (String::new(), String::new());
        let nan = reading(vec![
            (idx("discharge_pressure_bar"), Value::Float(f64::NAN)),
            (idx("fault"), Value::Bool(false)),
        ]);
        assert_eq!(enc.encode_split(&nan, &mut bulk, &mut prio), (0, 1));
        assert!(bulk.is_empty());
    }
}
