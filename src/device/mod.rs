//! Devices: what the gateway polls or listens to, and how each is reached. Plain data, built by
//! the configuration and shared (behind `Arc`) by the pollers, the MQTT subscriber, telemetry and
//! the rules.

pub mod latest;
pub mod link;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::model::AssetId;
use crate::profile::Profile;
use link::Link;

/// How a Modbus device is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusSource {
    pub link: Link,
    pub unit: u8,
    pub timeout: Duration,
    pub max_gap: u16,
    /// The lower of the device's and its profile's limit.
    pub max_registers: u16,
    /// The profile's device model refuses odd register counts.
    pub even_count: bool,
    pub probe_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceSource {
    Modbus(ModbusSource),
    /// MQTT devices: the device's own topic as configured; `None` when the profile's
    /// `mqtt_topic` serves it (the MQTT settings route topics to devices).
    Mqtt {
        topic: Option<String>,
    },
}

/// A validated device.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: AssetId,
    pub name: Option<String>,
    pub site: Option<String>,
    pub building: Option<String>,
    pub floor: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub profile: Arc<Profile>,
    pub interval: Duration,
    pub source: DeviceSource,
    /// Where it was configured: (file, index in that file's `devices`).
    pub origin: (String, usize),
}

impl Device {
    /// Equal in everything but where it was configured: a reload leaves such a device polling
    /// as it is (moving a device to another file, or reordering, changes nothing).
    pub fn same_settings(&self, other: &Device) -> bool {
        let Device {
            id,
            name,
            site,
            building,
            floor,
            tags,
            profile,
            interval,
            source,
            origin: _,
        } = self;
        *id == other.id
            && *name == other.name
            && *site == other.site
            && *building == other.building
            && *floor == other.floor
            && *tags == other.tags
            && (Arc::ptr_eq(profile, &other.profile) || **profile == *other.profile)
            && *interval == other.interval
            && *source == other.source
    }
}

/// Every device the running gateway has had, by slot (a reload keeps slots stable: a device it keeps keeps its slot, an added or changed one gets a new slot, a removed one's slot is retired and never reused): the
/// configuration's devices first, then one per device a reload added or changed.
#[derive(Clone, Default)]
pub struct DeviceSlots(Arc<RwLock<Vec<Arc<Device>>>>);

impl DeviceSlots {
    /// Slots `0..n` for the configuration's devices.
    pub fn new(devices: &[Arc<Device>]) -> Self {
        DeviceSlots(Arc::new(RwLock::new(devices.to_vec())))
    }

    pub fn get(&self, slot: usize) -> Option<Arc<Device>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(slot)
            .cloned()
    }

    /// Opens the next slot for `device`.
    pub fn push(&self, device: Arc<Device>) -> usize {
        let mut t = self.0.write().unwrap_or_else(|p| p.into_inner());
        t.push(device);
        t.len() - 1
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
