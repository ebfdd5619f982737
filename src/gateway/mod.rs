//! The running gateway: pollers, the MQTT client, telemetry pipeline, rules and notifiers, and
//! their orderly shutdown.

mod notifiers;
pub mod reload;
mod router;
mod run;
pub mod service;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::api::GatewayView;
use crate::device::latest::LatestValues;
use crate::gateway::reload::ReloadRequest;
use crate::modbus::stats::DeviceStats;
use crate::mqtt::MqttStats;
use crate::rule_loop::RuleLoopStats;
use crate::settings::Settings;
use crate::settings::current::{CurrentDevices, DeviceSet, ReloadStats};
use crate::telemetry::influx::LineWriter;
use crate::telemetry::log::{LogStats, TelemetryLog};
use crate::telemetry::pipeline::{GatewayFaults, TelemetryStats};
use crate::workorder::notify::AssetDirectory;

/// Capacity of the poller-to-telemetry channel, in records.
const RECORD_CHANNEL: usize = 65_536;
/// Capacity of the channel to the rule engine, in readings.
const RULE_CHANNEL: usize = 65_536;
/// Capacity of the channel to the MQTT telemetry republisher, in readings.
const REPUBLISH_CHANNEL: usize = 4096;

/// Handles to the running gateway's shared state.
#[derive(Clone)]
pub struct Gateway {
    /// The configuration the gateway started with. After a reload, [`Gateway::current`] holds
    /// the one in force.
    pub settings: Arc<Settings>,
    /// Per device of `settings`, in configuration order (a reload keeps those of the devices
    /// it keeps; [`Gateway::current`] has the counters of the devices in force).
    pub device_stats: Vec<Arc<DeviceStats>>,
    /// The devices in force, their slots and counters (changed by a reload).
    pub current: CurrentDevices,
    /// Configuration reloads, for /metrics.
    pub reloads: Arc<ReloadStats>,
    pub telemetry: Arc<TelemetryStats>,
    pub maintenance: Arc<RuleLoopStats>,
    /// The MQTT client's counters (zero without `[mqtt]`).
    pub mqtt: Arc<MqttStats>,
    pub latest: Arc<LatestValues>,
    /// The HTTP API's bound address, once it listens (`http.listen` may use port 0).
    pub api_addr: Arc<OnceLock<SocketAddr>>,
    /// Config loaded and stores open.
    pub ready: Arc<AtomicBool>,
    /// The on-disk telemetry log's counters, and the log once it is open.
    pub log_stats: Arc<LogStats>,
    pub log: Arc<OnceLock<Arc<TelemetryLog>>>,
    /// The assets the notifiers see (their `match` and `{name}`); a reload replaces them.
    pub notifier_assets: AssetDirectory,
    /// The gateway's own faults, raised as work orders on its own asset.
    pub faults: Arc<GatewayFaults>,
}

/// Options the caller can set on top of the configuration.
#[derive(Default)]
pub struct RunOptions {
    /// Replaces the InfluxDB writer (used by `demo` to show what would be written).
    pub writer: Option<Arc<dyn LineWriter>>,
    /// How long shutdown may take to flush telemetry.
    pub flush_timeout: Option<Duration>,
    /// Configuration reloads to apply while running (`facilityd run`: SIGHUP).
    pub reload: Option<mpsc::Receiver<ReloadRequest>>,
}

/// The work-order database file under `state_dir`.
pub fn work_order_db(settings: &Settings) -> std::path::PathBuf {
    settings.gateway.state_dir.join("workorders.sqlite")
}

impl Gateway {
    pub fn new(settings: Settings) -> Self {
        let settings = Arc::new(settings);
        let device_stats: Vec<Arc<DeviceStats>> = settings
            .devices
            .iter()
            .map(|_| Arc::new(DeviceStats::default()))
            .collect();
        let latest = Arc::new(LatestValues::new(
            settings.devices.iter().map(|d| d.profile.points.len()),
        ));
        let notifier_assets = AssetDirectory::new(notifiers::asset_directory(&settings.assets));
        Gateway {
            current: CurrentDevices::new(DeviceSet::initial(
                settings.clone(),
                device_stats.clone(),
            )),
            reloads: Arc::default(),
            settings,
            device_stats,
            telemetry: Arc::new(TelemetryStats::default()),
            maintenance: Arc::new(RuleLoopStats::default()),
            mqtt: Arc::new(MqttStats::default()),
            latest,
            api_addr: Arc::new(OnceLock::new()),
            ready: Arc::new(AtomicBool::new(false)),
            log_stats: Arc::new(LogStats::default()),
            log: Arc::new(OnceLock::new()),
            notifier_assets,
            faults: Arc::new(GatewayFaults::default()),
        }
    }

    /// What the HTTP API reads of the gateway.
    pub fn view(&self) -> GatewayView {
        GatewayView {
            current: self.current.clone(),
            latest: self.latest.clone(),
            telemetry: self.telemetry.clone(),
            log_stats: self.log_stats.clone(),
            log: self.log.clone(),
            faults: self.faults.clone(),
            maintenance: self.maintenance.clone(),
            reloads: self.reloads.clone(),
            mqtt: self.settings.mqtt.is_some().then(|| self.mqtt.clone()),
            state_dir: self.settings.gateway.state_dir.clone(),
            availability: None,
        }
    }
}
