//! Devices: each configured device validated (identity, tags, profile, interval, how it is
//! reached), and the serial buses they share checked as a whole.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::mqtt::check_mqtt_device;
use crate::config::schema::DeviceConfig;
use crate::config::{GatewaySettings, Issues};
use crate::device::link::Link;
use crate::device::{Device, DeviceSource, ModbusSource};
use crate::profile::Profile;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// MQTT devices: how often their `device_status` is written (they publish when they like).
const DEFAULT_MQTT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// On a serial bus: what a device may take beyond the time its frames need on the wire at
/// the bus's baud rate (so the whole timeout follows from the baud rate and the read size).
const DEFAULT_SERIAL_TIMEOUT: Duration = Duration::from_millis(100);
const DEFAULT_PROBE: Duration = Duration::from_secs(30);

/// Every device on one serial port must describe the bus the same way (one task owns the port
/// with one set of line settings), and a bus's schedule should leave it some slack.
pub(super) fn check_serial_buses(devices: &[Arc<Device>], issues: &mut Issues) {
    let mut first: HashMap<&str, (&Device, &crate::device::link::SerialSettings)> = HashMap::new();
    for d in devices {
        let DeviceSource::Modbus(ModbusSource {
            link: Link::Rtu(s), ..
        }) = &d.source
        else {
            continue;
        };
        match first.get(s.path.as_str()) {
            None => {
                first.insert(&s.path, (d, s));
            }
            Some((other, theirs)) if *theirs != s => issues.err(
                &d.origin.0,
                format!("devices[{}].modbus.url", d.origin.1),
                format!(
                    "serial port {} is set up differently for device {:?} at {}: devices[{}] ({}): every device on one bus needs the same baud, parity, data, stop, frame_gap and turnaround",
                    s.path,
                    &*other.id,
                    other.origin.0,
                    other.origin.1,
                    Link::Rtu((*theirs).clone())
                ),
            ),
            Some(_) => {}
        }
    }
    if !issues.errors.is_empty() {
        return;
    }
    for load in crate::modbus::serial::bus_loads(devices) {
        if load.busy > crate::modbus::serial::BUSY_WARN {
            let Some(d) = devices.get(load.first_device) else {
                continue;
            };
            issues.warn(
                &d.origin.0,
                format!("devices[{}].modbus.url", d.origin.1),
                format!(
                    "serial bus {} is estimated {:.0} % busy ({} devices, {:.0} of {:.0} bytes/s, inter-frame silences included): polls will run late; lengthen intervals, raise the baud rate or split the bus",
                    load.link,
                    load.busy * 100.0,
                    load.devices.len(),
                    load.bytes_per_s,
                    load.capacity()
                ),
            );
        }
    }
}

fn valid_tag(s: &str) -> bool {
    !s.is_empty() && !crate::profile::unwritable_name(s) && !s.starts_with('_')
}

#[allow(clippy::too_many_arguments)]
pub(super) fn build_device(
    file: &str,
    at: &str,
    index: usize,
    d: &DeviceConfig,
    gateway: &GatewaySettings,
    profiles: &BTreeMap<String, Arc<Profile>>,
    mqtt_configured: bool,
    issues: &mut Issues,
) -> Option<Device> {
    let before = issues.errors.len();
    if d.id.trim().is_empty() || d.id.contains('/') || crate::profile::unwritable_name(&d.id) {
        issues.err(
            file,
            format!("{at}.id"),
            format!(
                "expected a non-empty asset id without '/', '\\' or newlines, found {:?}",
                d.id
            ),
        );
    }
    for (k, v) in &d.tags {
        if !valid_tag(k) || v.is_empty() || crate::profile::unwritable_name(v) {
            issues.err(file, format!("{at}.tags.{k}"), "expected a non-empty tag key (not starting with '_') and a non-empty value, without newlines or backslashes");
        }
        if matches!(
            k.as_str(),
            "asset" | "site" | "building" | "floor" | "device_type" | "gateway"
        ) {
            issues.err(
                file,
                format!("{at}.tags.{k}"),
                format!("`{k}` is a standard tag set from the device's own keys; use another name"),
            );
        }
    }
    for (key, v) in [
        ("name", &d.name),
        ("site", &d.site),
        ("building", &d.building),
        ("floor", &d.floor),
    ] {
        if let Some(v) = v
            && (v.is_empty() || crate::profile::unwritable_name(v))
        {
            issues.err(
                file,
                format!("{at}.{key}"),
                "expected a non-empty value without newlines or backslashes",
            );
        }
    }
    let profile = match profiles.get(&d.profile) {
        Some(p) => Some(p.clone()),
        None => {
            let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
            issues.err(
                file,
                format!("{at}.profile"),
                format!(
                    "unknown profile {:?}: expected one of {}",
                    d.profile,
                    known.join(", ")
                ),
            );
            None
        }
    };
    let interval = d.interval.map_or(
        if d.mqtt.is_some() && d.modbus.is_none() {
            DEFAULT_MQTT_INTERVAL
        } else {
            DEFAULT_INTERVAL
        },
        |i| i.0,
    );
    if interval < Duration::from_millis(10) {
        issues.err(
            file,
            format!("{at}.interval"),
            format!(
                "expected an interval of at least 10ms, found {}",
                humantime::format_duration(interval)
            ),
        );
    }
    let source = match (&d.modbus, &d.mqtt) {
        (Some(_), Some(_)) => {
            issues.err(
                file,
                format!("{at}.mqtt"),
                "a device is read over Modbus or MQTT, not both",
            );
            None
        }
        (None, None) => {
            issues.err(
                file,
                at,
                "expected a `modbus = { url = ..., unit = ... }` or `mqtt = { topic = ... }` table",
            );
            None
        }
        (None, Some(m)) => {
            if !mqtt_configured {
                issues.err(
                    file,
                    format!("{at}.mqtt"),
                    "an MQTT device needs the broker: configure [mqtt] url",
                );
            }
            if let Some(p) = &profile {
                check_mqtt_device(file, at, d, m.topic.as_deref(), p, gateway, issues);
            }
            Some(DeviceSource::Mqtt {
                topic: m.topic.clone(),
            })
        }
        (Some(m), None) => {
            let link = match Link::parse(&m.url) {
                Ok(l) => Some(l),
                Err(e) => {
                    issues.err(file, format!("{at}.modbus.url"), e.to_string());
                    None
                }
            };
            let rtu = link.as_ref().is_some_and(Link::is_rtu);
            let unit = m.unit.unwrap_or(1);
            let (lo, hi, why) = if rtu {
                (1, 247, "on an RTU link (0 is broadcast, 248-255 reserved)")
            } else {
                (0, 255, "on tcp://")
            };
            if !(lo..=hi).contains(&unit) {
                issues.err(
                    file,
                    format!("{at}.modbus.unit"),
                    format!("expected a unit id {lo}-{hi} {why}, found {unit}"),
                );
            }
            let serial = matches!(link, Some(Link::Rtu(_)));
            let default_timeout = if serial {
                DEFAULT_SERIAL_TIMEOUT
            } else {
                DEFAULT_TIMEOUT
            };
            let timeout = m.timeout.map_or(default_timeout.min(interval / 2), |t| t.0);
            if timeout < Duration::from_millis(1) {
                issues.err(
                    file,
                    format!("{at}.modbus.timeout"),
                    "expected a timeout above zero",
                );
            } else if timeout >= interval {
                issues.warn(file, format!("{at}.modbus.timeout"), format!("timeout {} is not below the interval {}: a silent device delays its link by a whole interval", humantime::format_duration(timeout), humantime::format_duration(interval)));
            }
            let max_registers = m.max_registers.unwrap_or(125);
            let model = profile.as_ref().map(|p| p.limits).unwrap_or_default();
            if !(1..=125).contains(&max_registers) {
                issues.err(
                    file,
                    format!("{at}.modbus.max_registers"),
                    format!(
                        "expected 1-125 (the Modbus limit for one read), found {max_registers}"
                    ),
                );
            }
            let max_gap = m.max_gap.unwrap_or(10);
            if max_gap > 125 {
                issues.err(
                    file,
                    format!("{at}.modbus.max_gap"),
                    format!("expected 0-125 registers, found {max_gap}"),
                );
            }
            if let Some(p) = &profile {
                for (i, pt) in p.points.iter().enumerate() {
                    match &pt.register {
                        None => issues.err(file, format!("{at}.profile"), format!("profile {:?} point {:?} (points[{i}]) has no register: a Modbus device needs a register map", p.name, pt.name)),
                        Some(r) if !r.kind.is_bit() && r.count > max_registers.min(model.max_registers) => issues.err(
                            file,
                            format!("{at}.modbus.max_registers"),
                            format!("point {:?} of profile {:?} spans {} registers, more than max_registers = {max_registers}", pt.name, p.name, r.count),
                        ),
                        _ => {}
                    }
                }
            }
            let probe_interval = m
                .probe_interval
                .map_or(DEFAULT_PROBE.max(interval), |p| p.0);
            link.map(|link| {
                DeviceSource::Modbus(ModbusSource {
                    link,
                    unit: unit.clamp(0, 255) as u8,
                    timeout,
                    max_gap,
                    max_registers: max_registers.clamp(1, 125).min(model.max_registers),
                    even_count: model.even_count,
                    probe_interval,
                })
            })
        }
    };
    if issues.errors.len() > before {
        return None;
    }
    Some(Device {
        id: Arc::from(d.id.as_str()),
        name: d.name.clone(),
        site: d.site.clone().or_else(|| gateway.site.clone()),
        building: d.building.clone(),
        floor: d.floor.clone(),
        tags: d.tags.clone(),
        profile: profile?,
        interval,
        source: source?,
        origin: (file.to_string(), index),
    })
}
