//! The configuration in force: what a reload swaps while the gateway runs. Readers (the API,
//! the service watchdog, `/metrics`) take a snapshot with [`CurrentDevices::get`].

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use super::Settings;
use crate::device::Device;
use crate::modbus::stats::DeviceStats;

/// The devices in force: the running configuration, and each device's slot and counters.
#[derive(Debug)]
pub struct DeviceSet {
    /// The configuration in force: the last one loaded, less what needs a restart (which keeps
    /// the values the gateway started with).
    pub settings: Arc<Settings>,
    /// Per device of `settings.devices`: its slot.
    pub slots: Vec<usize>,
    /// Per device of `settings.devices`: its counters (kept by a reload that keeps the id).
    pub stats: Vec<Arc<DeviceStats>>,
    /// Reloads applied so far.
    pub generation: u64,
}

impl DeviceSet {
    /// The configuration the gateway starts with: slots `0..n`.
    pub fn initial(settings: Arc<Settings>, stats: Vec<Arc<DeviceStats>>) -> Self {
        DeviceSet {
            slots: (0..settings.devices.len()).collect(),
            settings,
            stats,
            generation: 0,
        }
    }

    /// The device with this id: (its index in `settings.devices`, the device).
    pub fn find(&self, id: &str) -> Option<(usize, &Arc<Device>)> {
        self.settings
            .devices
            .iter()
            .enumerate()
            .find(|(_, d)| &*d.id == id)
    }
}

/// The shared handle to the [`DeviceSet`] in force.
#[derive(Clone, Debug)]
pub struct CurrentDevices(Arc<RwLock<Arc<DeviceSet>>>);

impl CurrentDevices {
    pub fn new(set: DeviceSet) -> Self {
        CurrentDevices(Arc::new(RwLock::new(Arc::new(set))))
    }

    pub fn get(&self) -> Arc<DeviceSet> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, set: DeviceSet) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }
}

/// Reload counters, for /metrics.
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub ok: AtomicU64,
    pub error: AtomicU64,
    /// Whether the last attempt succeeded (true before any).
    pub last_failed: AtomicBool,
    /// Unix time (s) of the last successful reload; 0 before any.
    pub last_ok_unix: AtomicI64,
    /// The loaded configuration changes settings that need a restart.
    pub restart_required: AtomicBool,
}

impl ReloadStats {
    pub fn succeeded(&self, restart_required: bool) {
        self.ok.fetch_add(1, Relaxed);
        self.last_failed.store(false, Relaxed);
        self.last_ok_unix
            .store(chrono::Utc::now().timestamp(), Relaxed);
        self.restart_required.store(restart_required, Relaxed);
    }

    pub fn failed(&self) {
        self.error.fetch_add(1, Relaxed);
        self.last_failed.store(true, Relaxed);
    }
}
