//! The MQTT side of devices and profiles: topics that can reach each device, and the routing of
//! incoming topics to devices and payload maps.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::GatewaySettings;
use crate::config::Issues;
use crate::config::schema::DeviceConfig;
use crate::device::{Device, DeviceSource};
use crate::mqtt::payload::PayloadMap;
use crate::mqtt::settings::Routing;
use crate::mqtt::topic::{Capture, RouteDevice, Router, SubTemplate, TopicError};
use crate::profile::Profile;

/// A device's value for a topic placeholder (`None`: not set on the device).
fn capture_value(c: Capture, d: &Device) -> Option<String> {
    match c {
        Capture::Asset => Some(d.id.to_string()),
        Capture::Site => d.site.clone(),
        Capture::Building => d.building.clone(),
        Capture::Floor => d.floor.clone(),
        // Bound by the caller; `{point}` stays a placeholder.
        Capture::Gateway | Capture::Point => None,
    }
}

/// Why a device's own topic cannot be bound to the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum DeviceTopicError {
    #[error("the topic uses {{{name}}}, but the device has no `{name}`", name = .0.name())]
    NoValue(Capture),
    #[error(transparent)]
    Topic(#[from] TopicError),
}

/// A device's own topic with its placeholders filled (all but `{point}`).
fn bind_device_topic(
    t: &SubTemplate,
    d: &Device,
    gateway: &str,
) -> Result<SubTemplate, DeviceTopicError> {
    for c in t.captures() {
        if !matches!(c, Capture::Point | Capture::Gateway) && capture_value(c, d).is_none() {
            return Err(DeviceTopicError::NoValue(c));
        }
    }
    Ok(t.bind(|c| match c {
        Capture::Gateway => Some(gateway.to_string()),
        c => capture_value(c, d),
    })?)
}

/// `mqtt_topic` and `timestamp` of a configured profile.
pub(super) fn check_profile_mqtt(
    file: &str,
    at: &str,
    p: &crate::profile::ProfileConfig,
    issues: &mut Issues,
) {
    if let Some(t) = &p.mqtt_topic
        && let Err(e) = SubTemplate::parse(t)
    {
        issues.err(file, format!("{at}.mqtt_topic"), e.to_string());
    }
    if let Some(ts) = &p.timestamp
        && !ts.json.starts_with('/')
    {
        issues.err(
            file,
            format!("{at}.timestamp.json"),
            format!(
                "expected a JSON pointer starting with '/', found {:?}",
                ts.json
            ),
        );
    }
}

/// An MQTT device: its profile reads MQTT, and its topic (own or the profile's) can reach it.
pub(super) fn check_mqtt_device(
    file: &str,
    at: &str,
    d: &DeviceConfig,
    topic: Option<&str>,
    p: &Profile,
    gateway: &GatewaySettings,
    issues: &mut Issues,
) {
    if !p.points.iter().any(|pt| pt.json.is_some()) {
        issues.err(
            file,
            format!("{at}.profile"),
            format!(
                "profile {:?} has no MQTT points (`json = \"/pointer\"`): an MQTT device needs them",
                p.name
            ),
        );
        return;
    }
    let site = d.site.clone().or_else(|| gateway.site.clone());
    let value = |c: Capture| -> Option<String> {
        match c {
            Capture::Asset => Some(d.id.clone()),
            Capture::Site => site.clone(),
            Capture::Building => d.building.clone(),
            Capture::Floor => d.floor.clone(),
            Capture::Gateway | Capture::Point => Some(String::new()),
        }
    };
    match (topic, &p.mqtt_topic) {
        (Some(t), _) => match SubTemplate::parse(t) {
            Err(e) => issues.err(file, format!("{at}.mqtt.topic"), e.to_string()),
            Ok(tpl) => {
                for c in tpl.captures() {
                    if value(c).is_none() {
                        issues.err(
                            file,
                            format!("{at}.mqtt.topic"),
                            format!("the topic uses {{{0}}}, but the device has no `{0}`", c.name()),
                        );
                    }
                }
            }
        },
        (None, Some(t)) => match SubTemplate::parse(t) {
            // A configured profile's error is reported at the profile.
            Err(_) => {}
            Ok(tpl) if !tpl.has(Capture::Asset) => issues.err(
                file,
                format!("{at}.mqtt"),
                format!(
                    "profile {:?}'s mqtt_topic {t:?} has no {{asset}} to tell its devices apart: give the device its own `topic`",
                    p.name
                ),
            ),
            Ok(tpl) => {
                for c in tpl.captures() {
                    if value(c).is_none() {
                        issues.err(
                            file,
                            format!("{at}.{}", c.name()),
                            format!(
                                "profile {:?}'s mqtt_topic {t:?} captures {{{1}}}, which must match the device's own `{1}`: set it",
                                p.name,
                                c.name()
                            ),
                        );
                    }
                }
            }
        },
        (None, None) => issues.err(
            file,
            format!("{at}.mqtt.topic"),
            format!(
                "expected `topic`: profile {:?} has no mqtt_topic to inherit",
                p.name
            ),
        ),
    }
}

/// Subscriptions and payload maps of the MQTT devices.
pub(super) fn routing(devices: &[Arc<Device>], gateway: &str) -> Routing {
    let mut router = Router::new(
        gateway,
        devices
            .iter()
            .map(|d| RouteDevice {
                asset: d.id.to_string(),
                site: d.site.clone(),
                building: d.building.clone(),
                floor: d.floor.clone(),
            })
            .collect(),
    );
    let mut maps_by_profile: HashMap<String, Arc<PayloadMap>> = HashMap::new();
    let mut maps = Vec::with_capacity(devices.len());
    // Profile templates, in the order of their first device.
    let mut templates: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let DeviceSource::Mqtt { topic } = &d.source else {
            maps.push(None);
            continue;
        };
        maps.push(Some(
            maps_by_profile
                .entry(d.profile.name.clone())
                .or_insert_with(|| Arc::new(PayloadMap::new(&d.profile)))
                .clone(),
        ));
        match topic {
            Some(t) => {
                if let Ok(b) = SubTemplate::parse(t)
                    .map_err(DeviceTopicError::from)
                    .and_then(|t| bind_device_topic(&t, d, gateway))
                {
                    router.add_device_topic(b, i);
                }
            }
            None => match templates.iter_mut().find(|(n, _)| *n == d.profile.name) {
                Some((_, v)) => v.push(i),
                None => templates.push((d.profile.name.clone(), vec![i])),
            },
        }
    }
    for (name, idx) in templates {
        let tpl = devices
            .get(idx[0])
            .and_then(|d| d.profile.mqtt_topic.as_deref())
            .and_then(|t| SubTemplate::parse(t).ok());
        if let Some(t) = tpl {
            router.add_template(t, &idx);
        } else {
            tracing::debug!(profile = %name, "no usable mqtt_topic");
        }
    }
    Routing { router, maps }
}
