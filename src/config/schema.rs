//! The configuration file's types: the serde types *are* the documented keys (DESIGN §3).
//!
//! Every section is fully defaulted so that a `conf.d` file may set a single key; keys that are
//! required once everything is merged are checked in [`super::build`].

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::units::{ByteSize, Duration};
use crate::profile::ProfileConfig;

/// A secret value: never printed, not even by `Debug`.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One configuration file (or the merged result).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub influxdb: Option<InfluxSection>,
    #[serde(default)]
    pub mqtt: Option<MqttSection>,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub work_orders: WorkOrdersSection,
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    #[serde(default)]
    pub profiles: Vec<ProfileConfig>,
    /// Rules are parsed by the rule engine; kept as written here.
    #[serde(default)]
    pub rules: Vec<config::Value>,
    /// Notifiers are parsed by the work-order notifiers; kept as written here.
    #[serde(default)]
    pub notify: Vec<config::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Gateway id: MQTT client id suffix and the `gateway` telemetry tag (default: the host name).
    pub id: Option<String>,
    /// Default `site` tag of every device.
    pub site: Option<String>,
    /// Telemetry log and work-order database (default /var/lib/facilityd).
    pub state_dir: Option<String>,
    /// IANA time zone for calendar rules and reports (default UTC).
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address of the HTTP API (default 127.0.0.1:9470).
    pub listen: Option<String>,
    /// File holding the bearer token for POST routes.
    pub api_token_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxSection {
    /// Base URL of the InfluxDB v2 write API, e.g. http://127.0.0.1:8086.
    pub url: Option<String>,
    pub org: Option<String>,
    pub bucket: Option<String>,
    /// The API token (prefer `token_file` or FACILITYD_INFLUXDB__TOKEN).
    pub token: Option<Secret>,
    /// File holding the API token (systemd credentials).
    pub token_file: Option<String>,
    /// Lines per write (default 5000).
    pub batch_size: Option<usize>,
    /// Longest a line waits before it is written (default 1s).
    pub flush_interval: Option<Duration>,
    /// Timeout of one write request (default 10s).
    pub timeout: Option<Duration>,
    /// Bound of the in-memory queue of unwritten telemetry (default 64MiB).
    pub queue_max_bytes: Option<ByteSize>,
}

/// `[mqtt]`: consumed by the MQTT client; validated here for unknown keys only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    pub url: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub keep_alive: Option<Duration>,
    pub max_payload_bytes: Option<ByteSize>,
    pub publish_telemetry: Option<config::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub log_max_bytes: Option<ByteSize>,
    pub history_retention: Option<Duration>,
    pub fsync_interval: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkOrdersSection {
    pub response_times: Option<BTreeMap<String, Duration>>,
}

/// `[[devices]]`: one asset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Asset id: unique, the `asset` tag.
    pub id: String,
    /// A built-in profile or one defined under `[[profiles]]`.
    pub profile: String,
    pub name: Option<String>,
    /// Overrides `gateway.site`.
    pub site: Option<String>,
    pub building: Option<String>,
    pub floor: Option<String>,
    /// Extra telemetry tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Poll interval (default 1s).
    pub interval: Option<Duration>,
    pub modbus: Option<ModbusDeviceConfig>,
    pub mqtt: Option<MqttDeviceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDeviceConfig {
    /// `tcp://host:502`, `rtu+tcp://host:4001` or `rtu:///dev/ttyUSB0?baud=9600&parity=N&stop=1`.
    pub url: String,
    /// Unit id: 0-255 on tcp:// (default 1), 1-247 on rtu:// and rtu+tcp://.
    pub unit: Option<i64>,
    /// Timeout of one request (default 1s).
    pub timeout: Option<Duration>,
    /// Largest hole, in registers, that one request reads across to save a request (default 10).
    pub max_gap: Option<u16>,
    /// Most registers one request may read (default and protocol limit 125).
    pub max_registers: Option<u16>,
    /// How often a device that stopped answering is probed (default 30s).
    pub probe_interval: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttDeviceConfig {
    pub topic: Option<String>,
}
