//! Payloads to point values: JSON picked by JSON pointer, plain numbers and texts, `true` /
//! `false` / `ON` / `OFF`, timestamps from the payload or the time of receipt. Pure, no I/O.
//!
//! Numbers go through the same [`apply`] as Modbus registers (`scale`, `offset`, `na`,
//! `min`/`max`, `map` by integer). What a payload adds:
//! - booleans and the texts `true`/`false`/`on`/`off` (any case) on alarm, event and state
//!   points; numbers on alarm and event points are true when not 0;
//! - texts on a state point with a `map`: the map's name in any spelling (`OpenForced`,
//!   `open-forced` and `OPEN_FORCED` all read `open_forced`), or a text key of the map
//!   (`map = { "Opened Accidentally" = "open_forced" }`);
//! - on a point whose `map` has text keys, a text the map does not list belongs to another
//!   point (event streams carry many kinds of events) and gives no sample;
//! - an event point without a map is true on a text that names it (`door_forced`,
//!   `DoorForced`); other texts are other events;
//! - a map entry naming `true` or `false` gives a boolean (`DoorForcedOpen = "true"`);
//! - `null` is "not available": left out and counted, like an `na` sentinel.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::modbus::codec::{Decoded, Raw, apply};
use crate::model::Value;
use crate::profile::{PointKind, Profile, TimestampConfig, TimestampFormat, Transform};

/// Why (part of) a message was not taken, as counted in /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Not JSON (or not UTF-8) where the profile reads JSON.
    Malformed,
    /// A value of the wrong JSON type for its point (an object for a gauge, a text for a counter).
    WrongType,
    /// Over `max_payload_bytes`.
    Oversized,
    /// No device for the topic: unknown `{asset}`, a capture that differs from the device, an
    /// unknown `{point}`.
    UnknownTopic,
    /// A `timestamp` missing or unreadable: the time of receipt was used.
    BadTimestamp,
    /// A payload time older than `max_timestamp_age` or further ahead than
    /// `max_timestamp_ahead`: the message is refused, nothing of it is written.
    TimestampOutOfRange,
}

impl Cause {
    pub const ALL: [Cause; 6] = [
        Cause::Malformed,
        Cause::WrongType,
        Cause::Oversized,
        Cause::UnknownTopic,
        Cause::BadTimestamp,
        Cause::TimestampOutOfRange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Malformed => "malformed",
            Cause::WrongType => "wrong_type",
            Cause::Oversized => "oversized",
            Cause::UnknownTopic => "unknown_topic",
            Cause::BadTimestamp => "bad_timestamp",
            Cause::TimestampOutOfRange => "timestamp_out_of_range",
        }
    }
}

/// What one message gave for one device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded1 {
    pub timestamp_ns: i64,
    /// The time came from the payload (not the time of receipt).
    pub payload_time: bool,
    /// Good values, as (point index, value).
    pub values: Vec<(usize, Value)>,
    /// Values left out: `null`, `na`, out of range.
    pub bad_values: u32,
    /// State texts or numbers missing from the map (written as they came, and counted).
    pub unmapped: u32,
    /// Values of the wrong type (left out).
    pub wrong_type: u32,
    /// The payload's timestamp was missing or unreadable (receipt time used).
    pub bad_timestamp: bool,
}

/// A profile prepared for payloads.
#[derive(Debug, Clone)]
pub struct PayloadMap {
    points: Vec<PointMap>,
    timestamp: Option<TimestampConfig>,
}

#[derive(Debug, Clone)]
struct PointMap {
    name: String,
    kind: PointKind,
    /// `None`: not an MQTT point (a register point of a mixed profile).
    pointer: Option<String>,
    transform: Transform,
    /// Non-integer keys of `map`, exactly and lowercased.
    texts: BTreeMap<String, String>,
    texts_lower: BTreeMap<String, String>,
    /// `map` values by their normalized spelling.
    names: BTreeMap<String, String>,
}

/// `OpenForced`, `open-forced`, `open_forced`, `OPEN FORCED` all become `openforced`.
fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn bool_text(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "on" => Some(true),
        "false" | "off" => Some(false),
        _ => None,
    }
}

impl PayloadMap {
    pub fn new(profile: &Profile) -> PayloadMap {
        let points = profile
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let texts = profile.text_maps.get(i).cloned().unwrap_or_default();
                let mut transform = p.transform.clone();
                // A state or event code from JSON is an integer, as a u16 register is.
                if matches!(p.kind, PointKind::State | PointKind::Event)
                    && transform.scale.fract() == 0.0
                    && transform.offset.fract() == 0.0
                {
                    transform.integer = true;
                }
                let names = transform
                    .map
                    .iter()
                    .flat_map(|m| m.values())
                    .chain(texts.values())
                    .filter(|v| !matches!(v.as_str(), "true" | "false"))
                    .map(|v| (normalize(v), v.clone()))
                    .collect();
                PointMap {
                    name: p.name.to_string(),
                    kind: p.kind,
                    pointer: p.json.clone(),
                    transform,
                    texts_lower: texts
                        .iter()
                        .map(|(k, v)| (k.to_lowercase(), v.clone()))
                        .collect(),
                    texts,
                    names,
                }
            })
            .collect();
        PayloadMap {
            points,
            timestamp: profile.timestamp.clone(),
        }
    }

    /// The index of a point named by a `{point}` capture (exactly, else ignoring case).
    pub fn point_named(&self, name: &str) -> Option<usize> {
        self.points
            .iter()
            .position(|p| p.pointer.is_some() && p.name == name)
            .or_else(|| {
                self.points
                    .iter()
                    .position(|p| p.pointer.is_some() && p.name.eq_ignore_ascii_case(name))
            })
    }

    /// Decodes one message for one device: every MQTT point of the profile, or only `point`
    /// when the topic names it. `Err` when the payload cannot be read at all.
    pub fn decode(
        &self,
        payload: &[u8],
        point: Option<usize>,
        received_ns: i64,
    ) -> Result<Decoded1, Cause> {
        let doc = parse(payload)?;
        let mut out = Decoded1 {
            timestamp_ns: received_ns,
            ..Default::default()
        };
        if let Some(ts) = &self.timestamp {
            match (&doc, timestamp(&doc, ts, received_ns)) {
                (Doc::Json(_), Some(t)) => {
                    out.timestamp_ns = t;
                    out.payload_time = true;
                }
                (Doc::Json(_), None) => out.bad_timestamp = true,
                // A plain value carries no time.
                (Doc::Text(_), _) => {}
            }
        }
        let wanted: Box<dyn Iterator<Item = usize>> = match point {
            Some(i) => Box::new(std::iter::once(i)),
            None => Box::new(0..self.points.len()),
        };
        let mut readable = false;
        for i in wanted {
            let Some(p) = self.points.get(i) else {
                continue;
            };
            let Some(pointer) = &p.pointer else { continue };
            let v = match &doc {
                Doc::Json(j) => j.pointer(pointer),
                // A plain payload is the value of a point that reads the whole document.
                Doc::Text(t) if pointer.is_empty() => Some(t),
                Doc::Text(_) => None,
            };
            let Some(v) = v else { continue };
            readable = true;
            match p.typed(p.value(v)) {
                Read::Good(value) => out.values.push((i, value)),
                Read::Unmapped(value) => {
                    out.unmapped += 1;
                    out.values.push((i, value));
                }
                Read::Bad => out.bad_values += 1,
                Read::WrongType => out.wrong_type += 1,
                Read::NotMine => {}
            }
        }
        if !readable && matches!(doc, Doc::Text(_)) {
            // Plain text where the profile reads JSON fields.
            return Err(Cause::Malformed);
        }
        Ok(out)
    }
}

enum Doc {
    Json(Json),
    /// Not JSON: a plain value (`ON`, `open`), as a JSON string.
    Text(Json),
}

fn parse(payload: &[u8]) -> Result<Doc, Cause> {
    match serde_json::from_slice::<Json>(payload) {
        Ok(j) => Ok(Doc::Json(j)),
        Err(_) => {
            let text = std::str::from_utf8(payload).map_err(|_| Cause::Malformed)?;
            let text = text.trim();
            // Something that tried to be JSON and failed is malformed, not a plain value.
            if text.is_empty() || text.starts_with(['{', '[', '"']) {
                return Err(Cause::Malformed);
            }
            Ok(Doc::Text(Json::String(text.to_string())))
        }
    }
}

/// The time a payload carries, in ns; `None` when missing or unreadable. Whether it is
/// plausible (not too old, not ahead of the clock) is the subscriber's [`TimeWindow`].
fn timestamp(doc: &Doc, ts: &TimestampConfig, _received_ns: i64) -> Option<i64> {
    let Doc::Json(j) = doc else { return None };
    let v = j.pointer(&ts.json)?;
    let ns = match ts.format {
        TimestampFormat::Rfc3339 => chrono::DateTime::parse_from_rfc3339(v.as_str()?.trim())
            .ok()?
            .timestamp_nanos_opt()?,
        f => {
            let per_unit: i128 = match f {
                TimestampFormat::EpochS => 1_000_000_000,
                TimestampFormat::EpochMs => 1_000_000,
                _ => 1,
            };
            let n = match v {
                Json::Number(n) => n.clone(),
                Json::String(s) => s.trim().parse().ok()?,
                _ => return None,
            };
            if let Some(i) = n.as_i64() {
                i64::try_from(i128::from(i) * per_unit).ok()?
            } else {
                let f = n.as_f64()? * per_unit as f64;
                if !f.is_finite() || f.abs() >= 9.2e18 {
                    return None;
                }
                f.round() as i64
            }
        }
    };
    (ns > 0).then_some(ns)
}

/// The payload times taken: at most `max_age` before the time of receipt and `max_ahead`
/// after it. Anything else is a device clock or unit mistake (or a replay of old data the
/// database may no longer keep), and is refused rather than written at a wrong time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeWindow {
    pub max_age: std::time::Duration,
    pub max_ahead: std::time::Duration,
}

impl TimeWindow {
    pub const DEFAULT: TimeWindow = TimeWindow {
        max_age: std::time::Duration::from_secs(7 * 86_400),
        max_ahead: std::time::Duration::from_secs(300),
    };

    /// Whether a payload time `ts` received at `received` lies in the window.
    pub fn accepts(&self, ts: i64, received: i64) -> bool {
        let ns = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        ts >= received.saturating_sub(ns(self.max_age))
            && ts <= received.saturating_add(ns(self.max_ahead))
    }
}

enum Read {
    Good(Value),
    Unmapped(Value),
    /// `null`, `na`, out of range.
    Bad,
    WrongType,
    /// A text the point's map does not list: another point's event.
    NotMine,
}

impl PointMap {
    /// A read value as the point's field type; one that cannot have it (a fraction for an
    /// integer field, a word for a number) is a bad value.
    fn typed(&self, read: Read) -> Read {
        let Some(output) = self.transform.output else {
            return read;
        };
        match read {
            Read::Good(v) => output.coerce(v).map_or(Read::Bad, Read::Good),
            Read::Unmapped(v) => output.coerce(v).map_or(Read::Bad, Read::Unmapped),
            other => other,
        }
    }

    fn value(&self, v: &Json) -> Read {
        match v {
            Json::Null => Read::Bad,
            Json::Bool(b) => match self.kind {
                PointKind::Gauge | PointKind::Counter => Read::WrongType,
                _ if self.transform.map.is_some() => self.number(Raw::Int(i128::from(*b))),
                _ => Read::Good(Value::Bool(*b)),
            },
            Json::Number(n) => {
                let raw = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => Raw::Int(i128::from(i)),
                    (None, Some(u), _) => Raw::Int(i128::from(u)),
                    (None, None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                        Raw::Int(f as i128)
                    }
                    // A counter (or state code) with a fraction: not an integer.
                    (None, None, Some(_)) if self.transform.integer => return Read::WrongType,
                    (None, None, Some(f)) => Raw::Float(f),
                    _ => return Read::WrongType,
                };
                match self.kind {
                    PointKind::Alarm | PointKind::Event if self.transform.map.is_none() => {
                        match raw {
                            Raw::Int(i) => Read::Good(Value::Bool(i != 0)),
                            _ => Read::WrongType,
                        }
                    }
                    _ => self.number(raw),
                }
            }
            Json::String(s) => self.text(s),
            Json::Array(_) | Json::Object(_) => Read::WrongType,
        }
    }

    fn number(&self, raw: Raw) -> Read {
        match apply(&self.transform, None, raw) {
            Decoded::Good(v) => Read::Good(named(v)),
            Decoded::Unmapped(v) => Read::Unmapped(v),
            Decoded::Bad(_) => Read::Bad,
        }
    }

    fn text(&self, s: &str) -> Read {
        let t = s.trim();
        if !self.texts.is_empty() {
            let hit = self
                .texts
                .get(t)
                .or_else(|| self.texts_lower.get(&t.to_lowercase()));
            return match hit {
                Some(name) => Read::Good(named(Value::Str(name.clone()))),
                None => match self.names.get(&normalize(t)) {
                    Some(name) => Read::Good(Value::Str(name.clone())),
                    None => Read::NotMine,
                },
            };
        }
        match self.kind {
            PointKind::Gauge | PointKind::Counter => match t.parse::<f64>() {
                Ok(_) => match serde_json::from_str::<Json>(t) {
                    Ok(n @ Json::Number(_)) => self.value(&n),
                    _ => Read::WrongType,
                },
                Err(_) => Read::WrongType,
            },
            PointKind::Alarm => match bool_text(t) {
                Some(b) => Read::Good(Value::Bool(b)),
                None => match t.parse::<i64>() {
                    Ok(i) => Read::Good(Value::Bool(i != 0)),
                    Err(_) => Read::WrongType,
                },
            },
            PointKind::Event if self.transform.map.is_none() => {
                if let Some(b) = bool_text(t) {
                    Read::Good(Value::Bool(b))
                } else if let Ok(i) = t.parse::<i64>() {
                    Read::Good(Value::Bool(i != 0))
                } else if normalize(t) == normalize(&self.name) {
                    Read::Good(Value::Bool(true))
                } else {
                    Read::NotMine
                }
            }
            PointKind::State | PointKind::Event => {
                if self.transform.map.is_some() {
                    if let Some(name) = self.names.get(&normalize(t)) {
                        return Read::Good(Value::Str(name.clone()));
                    }
                    if let Ok(i) = t.parse::<i64>() {
                        return self.number(Raw::Int(i128::from(i)));
                    }
                    return Read::Unmapped(Value::Str(t.to_string()));
                }
                match bool_text(t) {
                    Some(b) => Read::Good(Value::Bool(b)),
                    None => match t.parse::<i64>() {
                        Ok(i) => self.number(Raw::Int(i128::from(i))),
                        Err(_) => Read::Good(Value::Str(t.to_string())),
                    },
                }
            }
        }
    }
}

/// A map entry naming `true` or `false` is a boolean.
fn named(v: Value) -> Value {
    match v {
        Value::Str(s) if s == "true" => Value::Bool(true),
        Value::Str(s) if s == "false" => Value::Bool(false),
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileConfig;

    fn profile(toml: &str) -> Profile {
        let cfg: ProfileConfig = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        cfg.build().unwrap_or_else(|e| panic!("{e:?}")).0
    }

    fn door() -> PayloadMap {
        PayloadMap::new(&profile(
            r#"
            name = "d"
            device_type = "access_door"
            timestamp = { json = "/ts", format = "rfc3339" }
            points = [
              { name = "door_state", kind = "state", json = "/state", map = { 0 = "locked_shut", 2 = "open", 4 = "open_forced" } },
              { name = "lock_current_ma", kind = "gauge", json = "/lock/current", unit = "mA" },
              { name = "battery_voltage_v", kind = "gauge", json = "/battery_mv", scale = 0.001 },
              { name = "door_cycles_total", kind = "counter", json = "/cycles" },
              { name = "reader_tamper", kind = "alarm", json = "/reader/tamper" },
              { name = "door_forced", kind = "event", json = "/event", map = { DoorForcedOpen = "true", "Opened Accidentally" = "true" } },
              { name = "door_held_open", kind = "event", json = "/event" },
              { name = "mode", kind = "state", json = "/mode" },
            ]
            "#,
        ))
    }

    const T0: i64 = 1_768_000_000_000_000_000;

    #[test]
    fn json_pointer_scale_map_and_timestamp() {
        let d = door();
        let got = d
            .decode(
                br#"{"state":"OpenForced","lock":{"current":180},"battery_mv":13450,"cycles":10234,
                    "reader":{"tamper":"OFF"},"mode":"auto","ts":"2026-01-05T10:00:00.250Z"}"#,
                None,
                T0,
            )
            .unwrap();
        assert_eq!(got.timestamp_ns, 1_767_607_200_250_000_000);
        assert!(!got.bad_timestamp);
        assert_eq!(
            got.values,
            [
                (0, Value::Str("open_forced".into())),
                (1, Value::Float(180.0)),
                (2, Value::Float(13.450000000000001)),
                (3, Value::Float(10234.0)),
                (4, Value::Bool(false)),
                (7, Value::Str("auto".into())),
            ]
        );
    }

    #[test]
    fn event_streams() {
        let d = door();
        let got = d
            .decode(br#"{"event":"DoorForcedOpen"}"#, None, T0)
            .unwrap();
        assert_eq!(got.values, [(5, Value::Bool(true))]);
        assert!(got.bad_timestamp, "no ts in the payload");
        assert_eq!(got.timestamp_ns, T0);
        let got = d
            .decode(br#"{"event":"opened accidentally"}"#, None, T0)
            .unwrap();
        assert_eq!(got.values, [(5, Value::Bool(true))]);
        let got = d.decode(br#"{"event":"DoorHeldOpen"}"#, None, T0).unwrap();
        assert_eq!(got.values, [(6, Value::Bool(true))]);
        let got = d.decode(br#"{"event":"AccessGranted"}"#, None, T0).unwrap();
        assert!(got.values.is_empty() && got.wrong_type == 0);
    }

    #[test]
    fn states_by_code_and_unknown_names() {
        let d = door();
        let got = d.decode(br#"{"state":4}"#, None, T0).unwrap();
        assert_eq!(got.values, [(0, Value::Str("open_forced".into()))]);
        let got = d.decode(br#"{"state":"4"}"#, None, T0).unwrap();
        assert_eq!(got.values, [(0, Value::Str("open_forced".into()))]);
        let got = d.decode(br#"{"state":"Ajar"}"#, None, T0).unwrap();
        assert_eq!(got.values, [(0, Value::Str("Ajar".into()))]);
        assert_eq!(got.unmapped, 1);
        let got = d.decode(br#"{"state":9}"#, None, T0).unwrap();
        assert_eq!(got.values, [(0, Value::Str("9".into()))]);
        assert_eq!(got.unmapped, 1);
    }

    #[test]
    fn wrong_types_and_nulls_are_counted_not_fatal() {
        let d = door();
        let got = d
            .decode(
                br#"{"lock":{"current":"high"},"cycles":12.5,"reader":{"tamper":[1]},"battery_mv":null,"state":"open"}"#,
                None,
                T0,
            )
            .unwrap();
        // A counter is a float field: a fraction is a good value.
        assert_eq!(
            got.values,
            [(0, Value::Str("open".into())), (3, Value::Float(12.5))]
        );
        assert_eq!(got.wrong_type, 2);
        assert_eq!(got.bad_values, 1);
    }

    #[test]
    fn the_time_window_takes_a_week_back_and_five_minutes_ahead() {
        let w = TimeWindow::DEFAULT;
        let now = T0;
        let s = 1_000_000_000i64;
        assert!(w.accepts(now, now));
        assert!(w.accepts(now - 7 * 86_400 * s, now));
        assert!(!w.accepts(now - 7 * 86_400 * s - 1, now));
        assert!(w.accepts(now + 300 * s, now));
        assert!(!w.accepts(now + 300 * s + 1, now));
        assert!(!w.accepts(i64::MAX, now) && !w.accepts(1, now));
        // The payload's own time is reported as such (the subscriber applies the window).
        let d = door();
        let got = d
            .decode(br#"{"ts":"1999-01-01T00:00:00Z","state":2}"#, None, T0)
            .unwrap();
        assert!(got.payload_time && !got.bad_timestamp);
        assert!(!w.accepts(got.timestamp_ns, T0));
    }

    #[test]
    fn values_take_the_declared_field_type() {
        let p = PayloadMap::new(&profile(
            r#"
            name = "typed"
            device_type = "other"
            points = [
              { name = "count", kind = "counter", json = "/n", output = "integer" },
              { name = "level", kind = "gauge", json = "/level" },
              { name = "closed", kind = "state", json = "/closed", output = "boolean" },
              { name = "mode", kind = "state", json = "/mode" },
            ]
            "#,
        ));
        // The same values spelt as integers, floats and texts give the same fields.
        for doc in [
            &br#"{"n":7,"level":3,"closed":true,"mode":2}"#[..],
            br#"{"n":7.0,"level":3.0,"closed":1,"mode":"2"}"#,
            br#"{"n":"7","level":"3","closed":"on","mode":2.0}"#,
        ] {
            let got = p.decode(doc, None, T0).unwrap();
            assert_eq!(
                got.values,
                [
                    (0, Value::Int(7)),
                    (1, Value::Float(3.0)),
                    (2, Value::Bool(true)),
                    (3, Value::Str("2".into())),
                ],
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        // A fraction for an integer field is a counted bad value, never a float.
        let got = p.decode(br#"{"n":7.5}"#, None, T0).unwrap();
        assert!(got.values.is_empty());
        assert_eq!(got.bad_values + got.wrong_type, 1);
    }

    #[test]
    fn malformed_payloads() {
        let d = door();
        for p in [
            &br#"{"state":"#[..],
            b"[1,2",
            b"\xff\xfe",
            b"",
            b"   ",
            b"OPEN",
        ] {
            assert_eq!(d.decode(p, None, T0), Err(Cause::Malformed), "{p:?}");
        }
        // Valid JSON that is not an object: no pointer resolves, nothing taken, no error.
        assert!(d.decode(b"42", None, T0).unwrap().values.is_empty());
    }

    #[test]
    fn plain_payloads_and_point_topics() {
        let p = PayloadMap::new(&profile(
            r#"
            name = "plug"
            device_type = "other"
            points = [
              { name = "POWER", kind = "state", json = "", output = "boolean" },
              { name = "temp_c", kind = "gauge", json = "", scale = 0.1 },
              { name = "fault", kind = "alarm", json = "" },
            ]
            "#,
        ));
        let i = p.point_named("power").unwrap();
        assert_eq!(
            p.decode(b"ON", Some(i), T0).unwrap().values,
            [(0, Value::Bool(true))]
        );
        assert_eq!(
            p.decode(b"off", Some(i), T0).unwrap().values,
            [(0, Value::Bool(false))]
        );
        let i = p.point_named("temp_c").unwrap();
        assert_eq!(
            p.decode(b"215", Some(i), T0).unwrap().values,
            [(1, Value::Float(21.5))]
        );
        assert_eq!(p.decode(b"warm", Some(i), T0).unwrap().wrong_type, 1);
        let i = p.point_named("fault").unwrap();
        assert_eq!(
            p.decode(b"1", Some(i), T0).unwrap().values,
            [(2, Value::Bool(true))]
        );
        assert_eq!(
            p.decode(b"true", Some(i), T0).unwrap().values,
            [(2, Value::Bool(true))]
        );
        assert!(p.point_named("nope").is_none());
    }

    #[test]
    fn epoch_timestamps() {
        let mk = |fmt: &str| {
            PayloadMap::new(&profile(&format!(
                r#"
                name = "l"
                device_type = "elevator"
                timestamp = {{ json = "/t", format = "{fmt}" }}
                points = [{{ name = "car_floor", kind = "gauge", json = "/floor" }}]
                "#
            )))
        };
        let at = |m: &PayloadMap, t: &str| {
            m.decode(format!(r#"{{"t":{t},"floor":3}}"#).as_bytes(), None, T0)
                .unwrap()
        };
        assert_eq!(
            at(&mk("epoch_s"), "1767000000").timestamp_ns,
            1_767_000_000_000_000_000
        );
        assert_eq!(
            at(&mk("epoch_s"), "1767000000.5").timestamp_ns,
            1_767_000_000_500_000_000
        );
        assert_eq!(
            at(&mk("epoch_ms"), "1767000000123").timestamp_ns,
            1_767_000_000_123_000_000
        );
        assert_eq!(
            at(&mk("epoch_ms"), "\"1767000000123\"").timestamp_ns,
            1_767_000_000_123_000_000
        );
        assert_eq!(
            at(&mk("epoch_ns"), "1767000000123456789").timestamp_ns,
            1_767_000_000_123_456_789
        );
        // Milliseconds given as seconds: thousands of years ahead, taken as unreadable.
        let bad = at(&mk("epoch_s"), "1767000000123");
        assert!(bad.bad_timestamp);
        assert_eq!(bad.timestamp_ns, T0);
        assert!(at(&mk("rfc3339"), "\"yesterday\"").bad_timestamp);
        assert!(at(&mk("epoch_ms"), "true").bad_timestamp);
    }
}
