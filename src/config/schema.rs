//! The configuration file's types: the serde types *are* the documented keys.
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
    /// Which write API: `v2` (default: `/api/v2/write` with org, bucket and token; InfluxDB
    /// 2.x, 3.x, 1.8+, VictoriaMetrics) or `v1` (`/write` with database and retention policy;
    /// InfluxDB 1.x).
    pub api: Option<InfluxApiName>,
    /// Base URL of the database, e.g. http://127.0.0.1:8086 (a path is kept as a prefix).
    pub url: Option<String>,
    pub org: Option<String>,
    pub bucket: Option<String>,
    /// `api = "v1"`: the database and, optionally, its retention policy.
    pub database: Option<String>,
    pub retention_policy: Option<String>,
    /// `api = "v1"` with authentication: the user, and the password (prefer `password_file`
    /// or FACILITYD_INFLUXDB__PASSWORD).
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<String>,
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
}

/// `[influxdb] api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApiName {
    V1,
    V2,
}

/// `[mqtt]`: the broker that MQTT devices publish to, and MQTT notifiers and telemetry publish
/// through (one client, one connection; client id `facilityd-<gateway.id>`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `mqtt://host[:1883]`, or `mqtts://host[:8883]` for TLS.
    pub url: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (mqtts://; default: the
    /// system's trust store).
    pub ca_file: Option<String>,
    /// PEM client certificate and its PKCS#8 PEM key, for brokers that want one (mqtts://).
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub username: Option<String>,
    /// File holding the password (systemd credentials); needs `username`.
    pub password_file: Option<String>,
    /// MQTT keep-alive (default 30s; 0 turns it off; whole seconds, at least 1s).
    pub keep_alive: Option<Duration>,
    /// Largest device payload taken (default 64KiB); larger ones are counted and dropped.
    pub max_payload_bytes: Option<ByteSize>,
    /// Payload times older than this are refused (default 7d).
    pub max_timestamp_age: Option<Duration>,
    /// Payload times further ahead of the gateway's clock than this are refused (default 5m).
    pub max_timestamp_ahead: Option<Duration>,
    /// Republish telemetry per device (off by default).
    pub publish_telemetry: Option<PublishTelemetryConfig>,
}

/// `[mqtt] publish_telemetry = { topic = ..., qos = 0 }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishTelemetryConfig {
    /// Default `facilityd/{gateway}/telemetry/{asset}`; placeholders `{gateway} {asset} {name}
    /// {site} {building} {floor} {device_type} {measurement}`.
    pub topic: Option<String>,
    /// 0 (default) or 1.
    pub qos: Option<u8>,
    /// Retain the last reading of each device on its topic (default false).
    pub retain: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Bound of the on-disk telemetry log (default 1GiB).
    pub log_max_bytes: Option<ByteSize>,
    /// How long forwarded telemetry stays queryable locally (default 7d).
    pub history_retention: Option<Duration>,
    /// Group commit: how often appended telemetry is synced (default 100ms; 0 syncs every batch).
    pub fsync_interval: Option<Duration>,
    /// Bound of the dead-letter file and its rotations together (default 64MiB).
    pub dead_letter_max_bytes: Option<ByteSize>,
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

/// `mqtt = { topic = ... }` of a device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttDeviceConfig {
    /// The device's own topic (`+` and a last `#` allowed; `{asset}`, `{site}`, `{building}`,
    /// `{floor}`, `{gateway}` are filled from the device, `{point}` names the point). Default:
    /// the profile's `mqtt_topic`, which serves all its devices with one subscription.
    pub topic: Option<String>,
}
