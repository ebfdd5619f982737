//! The validated configuration of the whole gateway: the plain sections `crate::config` reads,
//! with the devices, profiles, rules, MQTT settings and notifiers each validated by their own
//! module. `check` prints it and `run` runs it; both go through [`load`], so what `check`
//! accepts, `run` runs.

mod build;
pub mod current;
mod devices;
mod mqtt;
mod notifiers;
mod restart;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{ConfigError, GatewaySettings, InfluxSettings, StorageSettings};
use crate::device::Device;
use crate::mqtt::settings::MqttSettings;
use crate::profile::Profile;
use crate::rules::config::Rule;
use crate::rules::types::AssetInfo;
use crate::workorder::store::ResponseTimes;

pub use build::asset_info;
pub use notifiers::NotifierSpec;

/// Loads and validates the configuration at `path` with the process environment.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("FACILITYD_"))
        .collect();
    load_with_env(path, env)
}

/// Like [`load`], with the FACILITYD_* variables given explicitly (tests, `check`).
pub fn load_with_env(path: &Path, env: HashMap<String, String>) -> Result<Settings, ConfigError> {
    let loaded = crate::config::read_all(path, env)?;
    build::build(loaded)
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub files: Vec<PathBuf>,
    pub gateway: GatewaySettings,
    pub http_listen: String,
    pub api_token_file: Option<PathBuf>,
    pub influxdb: Option<InfluxSettings>,
    /// `[mqtt]`, with the routing of MQTT devices' messages.
    pub mqtt: Option<MqttSettings>,
    pub devices: Vec<Arc<Device>>,
    pub profiles: BTreeMap<String, Arc<Profile>>,
    /// The assets (devices) as the rule engine and the work-order store see them, in the order
    /// of `devices`.
    pub assets: Vec<Arc<AssetInfo>>,
    pub rules: Vec<Rule>,
    /// Webhook and MQTT notifiers, validated (the gateway runs them; their `Debug` hides
    /// secrets).
    pub notifiers: Vec<NotifierSpec>,
    pub response_times: ResponseTimes,
    pub storage: StorageSettings,
    /// Warnings, already formatted with file and key path.
    pub warnings: Vec<String>,
    /// The settings that take effect only at start-up, by key path, each in a canonical text
    /// (secrets as a SHA-256): a reload compares them to name the keys that need a restart.
    pub restart_keys: BTreeMap<String, String>,
}
