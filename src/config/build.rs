//! Validation: turns what was read into the running [`Settings`], collecting every error with
//! its file and key path.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::load::{Loaded, Sourced};
use super::schema::{DeviceConfig, Secret};
use super::{ConfigError, Issues};
use crate::modbus::link::Link;
use crate::model::AssetId;
use crate::mqtt::payload::PayloadMap;
use crate::mqtt::settings::{MqttSettings, Routing};
use crate::mqtt::topic::{Capture, RouteDevice, Router, SubTemplate};
use crate::profile::{Profile, builtin};
use crate::rules::config::{Rule, parse_rules};
use crate::rules::types::{AssetInfo, PointInfo};
use crate::workorder::notify::webhook::parse_notifiers_with_mqtt;
use crate::workorder::notify::{AssetDirectory, Notifier};
use crate::workorder::store::ResponseTimes;

/// `[gateway]`, resolved.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub id: String,
    pub site: Option<String>,
    pub state_dir: PathBuf,
    pub timezone: String,
}

/// `[influxdb]`, resolved; present only when a URL is configured.
#[derive(Debug, Clone)]
pub struct InfluxSettings {
    pub url: url::Url,
    pub api: InfluxApi,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub timeout: Duration,
}

/// Which write API the database is reached by, with its own settings.
#[derive(Debug, Clone)]
pub enum InfluxApi {
    /// `POST /api/v2/write?org=&bucket=`, `Authorization: Token`.
    V2 {
        org: String,
        bucket: String,
        token: Secret,
    },
    /// `POST /write?db=&rp=`, HTTP basic authentication when a user is set.
    V1 {
        database: String,
        retention_policy: Option<String>,
        username: Option<String>,
        password: Secret,
    },
}

impl InfluxApi {
    /// Where the lines go, for logs and `check`: `bucket "b" of org "o"`.
    pub fn target(&self) -> String {
        match self {
            InfluxApi::V2 { org, bucket, .. } => format!("API v2, org {org:?}, bucket {bucket:?}"),
            InfluxApi::V1 {
                database,
                retention_policy,
                ..
            } => match retention_policy {
                Some(rp) => format!("API v1, database {database:?}, retention policy {rp:?}"),
                None => format!("API v1, database {database:?}"),
            },
        }
    }
}

/// `[storage]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSettings {
    pub log_max_bytes: u64,
    pub history_retention: Duration,
    pub fsync_interval: Duration,
    /// Bound of `dead-letter.lp` and its rotations together.
    pub dead_letter_max_bytes: u64,
}

/// The smallest log bound accepted: a few segments of the smallest size.
pub const MIN_LOG_BYTES: u64 = 64 << 10;
/// The smallest dead-letter bound accepted: each of its four files gets a quarter.
pub const MIN_DEAD_LETTER_BYTES: u64 = 64 << 10;

/// How a Modbus device is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusSource {
    pub link: Link,
    pub unit: u8,
    pub timeout: Duration,
    pub max_gap: u16,
    pub max_registers: u16,
    pub probe_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceSource {
    Modbus(ModbusSource),
    /// MQTT devices: the device's own topic as configured; `None` when the profile's
    /// `mqtt_topic` serves it (routing: [`MqttSettings::routing`]).
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

/// The configured notifiers (not `Debug`: they may hold secrets).
#[derive(Clone, Default)]
pub struct Notifiers(pub Vec<Arc<dyn Notifier>>);

impl std::fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|n| n.name()))
            .finish()
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub files: Vec<PathBuf>,
    pub gateway: Gateway,
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
    /// Webhook and MQTT notifiers.
    pub notifiers: Notifiers,
    /// The assets the notifiers see (for `match` and `{name}`); a reload replaces them.
    pub notifier_assets: AssetDirectory,
    pub response_times: ResponseTimes,
    pub storage: StorageSettings,
    /// Warnings, already formatted with file and key path.
    pub warnings: Vec<String>,
    /// The settings that take effect only at start-up, by key path, each in a canonical text
    /// (secrets as a SHA-256): a reload compares them to name the keys that need a restart.
    pub restart_keys: BTreeMap<String, String>,
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// MQTT devices: how often their `device_status` is written (they publish when they like).
const DEFAULT_MQTT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// On a serial bus: what a device may take beyond the time its frames need on the wire at
/// the bus's baud rate (so the whole timeout follows from the baud rate and the read size).
const DEFAULT_SERIAL_TIMEOUT: Duration = Duration::from_millis(100);
const DEFAULT_PROBE: Duration = Duration::from_secs(30);

fn read_secret_file(path: &str) -> Result<Secret, String> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Err(format!("the file {path} is empty")),
        Ok(s) => Ok(Secret(s.trim().to_string())),
        Err(e) => Err(format!("cannot read {path}: {e}")),
    }
}

pub(crate) fn build(loaded: Loaded) -> Result<Settings, ConfigError> {
    let mut issues = Issues {
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let main_file = loaded
        .files
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let cfg = &loaded.main;

    let gateway = Gateway {
        id: cfg
            .gateway
            .id
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(default_gateway_id),
        site: cfg.gateway.site.clone(),
        state_dir: PathBuf::from(
            cfg.gateway
                .state_dir
                .clone()
                .unwrap_or_else(|| "/var/lib/facilityd".into()),
        ),
        timezone: cfg.gateway.timezone.clone().unwrap_or_else(|| "UTC".into()),
    };
    if crate::profile::unwritable_name(&gateway.id) {
        issues.err(
            &main_file,
            "gateway.id",
            format!(
                "expected an id without backslashes or control characters, found {:?}",
                gateway.id
            ),
        );
    }
    let http_listen = cfg
        .http
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:9470".into());
    if http_listen.parse::<std::net::SocketAddr>().is_err() {
        issues.err(
            &main_file,
            "http.listen",
            format!("expected an address such as 127.0.0.1:9470, found {http_listen:?}"),
        );
    }

    let influxdb = cfg
        .influxdb
        .as_ref()
        .and_then(|ix| resolve_influxdb(ix, &main_file, &mut issues));

    let mut mqtt =
        cfg.mqtt
            .as_ref()
            .and_then(|m| match crate::mqtt::settings::resolve(m, &gateway.id) {
                Ok(s) => Some(s),
                Err(errs) => {
                    for (path, message) in errs {
                        issues.err(&main_file, path, message);
                    }
                    None
                }
            });
    let mqtt_configured = cfg.mqtt.is_some();

    // Profiles: built-ins, then the configured ones (which may not reuse a name).
    // The schema: one type per field of a measurement, whoever writes it (the built-ins
    // agree; a configured profile that disagrees is refused).
    let mut schema = crate::profile::Schema::new();
    let mut profiles: BTreeMap<String, Arc<Profile>> = BTreeMap::new();
    for name in builtin::names() {
        match builtin::load(name).map(|r| r.map(|c| c.build())) {
            Some(Ok(Ok((p, _)))) => {
                for c in schema.add(&p) {
                    issues.err("built-in profiles", name, c.to_string());
                }
                profiles.insert(name.to_string(), Arc::new(p));
            }
            other => issues.err(
                "built-in profiles",
                name,
                format!("failed to load: {other:?}"),
            ),
        }
    }
    let mut profile_origin: HashMap<String, (String, usize)> = HashMap::new();
    let mut invalid_profiles: Vec<String> = Vec::new();
    for Sourced { file, index, item } in &loaded.profiles {
        let at = format!("profiles[{index}]");
        if builtin::names().any(|n| n == item.name) {
            issues.err(
                file,
                format!("{at}.name"),
                format!(
                    "{:?} is a built-in profile; give yours another name",
                    item.name
                ),
            );
            continue;
        }
        if let Some((f, i)) = profile_origin.get(&item.name) {
            issues.err(
                file,
                format!("{at}.name"),
                format!(
                    "duplicate profile name {:?}: also defined at {f}: profiles[{i}]",
                    item.name
                ),
            );
            continue;
        }
        profile_origin.insert(item.name.clone(), (file.clone(), *index));
        check_profile_mqtt(file, &at, item, &mut issues);
        match item.build() {
            Ok((p, warns)) => {
                for w in warns {
                    issues.warn(file, format!("{at}.{}", w.path), w.message);
                }
                for c in schema.add(&p) {
                    issues.err(
                        file,
                        format!("{at}.points[{}].output", c.point),
                        c.to_string(),
                    );
                }
                profiles.insert(item.name.clone(), Arc::new(p));
            }
            Err(errs) => {
                invalid_profiles.push(item.name.clone());
                for e in errs {
                    if e.warning {
                        issues.warn(file, format!("{at}.{}", e.path), e.message);
                    } else {
                        issues.err(file, format!("{at}.{}", e.path), e.message);
                    }
                }
            }
        }
    }

    let mut devices = Vec::with_capacity(loaded.devices.len());
    let mut seen: HashMap<&str, (&str, usize)> = HashMap::new();
    for Sourced { file, index, item } in &loaded.devices {
        let at = format!("devices[{index}]");
        if let Some((f, i)) = seen.get(item.id.as_str()) {
            issues.err(
                file,
                format!("{at}.id"),
                format!(
                    "duplicate device id {:?}: also defined at {f}: devices[{i}]",
                    item.id
                ),
            );
            continue;
        }
        seen.insert(&item.id, (file, *index));
        if invalid_profiles.contains(&item.profile) {
            // Its profile's own errors are reported already.
            continue;
        }
        if let Some(d) = build_device(
            file,
            &at,
            *index,
            item,
            &gateway,
            &profiles,
            mqtt_configured,
            &mut issues,
        ) {
            devices.push(Arc::new(d));
        }
    }
    check_serial_buses(&devices, &mut issues);

    let assets: Vec<Arc<AssetInfo>> = devices.iter().map(|d| Arc::new(asset_info(d))).collect();
    let rule_items: Vec<(String, usize, config::Value)> = loaded
        .rules
        .iter()
        .map(|s| (s.file.clone(), s.index, s.item.clone()))
        .collect();
    let rules = if issues.errors.is_empty() {
        match parse_rules(&rule_items, &assets, &gateway.id, &gateway.timezone) {
            Ok((rules, warnings)) => {
                issues.warnings.extend(warnings);
                rules
            }
            Err(errs) => {
                issues.errors.extend(errs);
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let notify_items: Vec<(String, usize, config::Value)> = loaded
        .notify
        .iter()
        .map(|s| (s.file.clone(), s.index, s.item.clone()))
        .collect();
    if let Some(m) = &mut mqtt {
        m.routing = Arc::new(routing(&devices, &gateway.id));
    }
    let by_id: HashMap<String, Arc<AssetInfo>> = assets
        .iter()
        .map(|a| (a.id.to_string(), a.clone()))
        .collect();
    // An [mqtt] section with errors of its own (reported above) still counts as configured,
    // so MQTT notifiers are checked on their own merits.
    let unusable = crate::mqtt::MqttPort::default();
    let port = mqtt
        .as_ref()
        .map(|m| &m.port_handle)
        .or(mqtt_configured.then_some(&unusable));
    let notifier_assets = AssetDirectory::new(by_id);
    let notifiers =
        match parse_notifiers_with_mqtt(&notify_items, &gateway.id, &notifier_assets, port) {
            Ok(n) => Notifiers(n),
            Err(errs) => {
                issues.errors.extend(errs);
                Notifiers::default()
            }
        };
    let mut response_times = ResponseTimes::default();
    if let Some(rt) = &cfg.work_orders.response_times {
        for (k, v) in rt {
            if v.0.is_zero() || v.0 > Duration::from_secs(10 * 366 * 86_400) {
                issues.err(
                    &main_file,
                    format!("work_orders.response_times.{k}"),
                    format!("expected a response time above zero and at most 10 years, found {v}"),
                );
                continue;
            }
            match k.as_str() {
                "urgent" => response_times.urgent = v.0,
                "high" => response_times.high = v.0,
                "normal" => response_times.normal = v.0,
                "low" => response_times.low = v.0,
                other => issues.err(
                    &main_file,
                    format!("work_orders.response_times.{other}"),
                    "unknown priority: expected urgent, high, normal or low",
                ),
            }
        }
    }

    let st = &cfg.storage;
    let storage = StorageSettings {
        log_max_bytes: st.log_max_bytes.map_or(1 << 30, |b| b.0),
        history_retention: st
            .history_retention
            .map_or(Duration::from_secs(7 * 86_400), |d| d.0),
        fsync_interval: st
            .fsync_interval
            .map_or(Duration::from_millis(100), |d| d.0),
        dead_letter_max_bytes: st.dead_letter_max_bytes.map_or(64 << 20, |b| b.0),
    };
    if storage.dead_letter_max_bytes < MIN_DEAD_LETTER_BYTES {
        issues.err(
            &main_file,
            "storage.dead_letter_max_bytes",
            format!(
                "expected at least 64KiB, found {} bytes",
                storage.dead_letter_max_bytes
            ),
        );
    }
    if storage.log_max_bytes < MIN_LOG_BYTES {
        issues.err(
            &main_file,
            "storage.log_max_bytes",
            format!(
                "expected at least 64KiB, found {} bytes",
                storage.log_max_bytes
            ),
        );
    }
    if storage.fsync_interval > Duration::from_secs(10) {
        issues.err(
            &main_file,
            "storage.fsync_interval",
            "expected at most 10s: telemetry counts as accepted only once synced",
        );
    }

    if !issues.errors.is_empty() {
        return Err(ConfigError(issues.errors));
    }
    let restart_keys = restart_keys(
        cfg,
        &gateway,
        &http_listen,
        influxdb.as_ref(),
        &loaded.notify,
    );
    Ok(Settings {
        files: loaded.files,
        gateway,
        http_listen,
        api_token_file: cfg.http.api_token_file.clone().map(PathBuf::from),
        influxdb,
        mqtt,
        devices,
        profiles,
        assets,
        rules,
        notifiers,
        notifier_assets,
        response_times,
        storage,
        warnings: issues.warnings,
        restart_keys,
    })
}

/// `[influxdb]`: the write API with its keys (those of the other API are errors), the URL and
/// the secrets.
fn resolve_influxdb(
    ix: &super::schema::InfluxSection,
    file: &str,
    issues: &mut Issues,
) -> Option<InfluxSettings> {
    use super::schema::InfluxApiName;
    let api_name = ix.api.unwrap_or(InfluxApiName::V2);
    let mut missing = false;
    let mut need = |issues: &mut Issues, key: &str, v: &Option<String>| -> String {
        match v {
            Some(s) if !s.trim().is_empty() => s.clone(),
            _ => {
                missing = true;
                issues.err(
                    file,
                    format!("influxdb.{key}"),
                    format!("expected `{key}` in [influxdb]"),
                );
                String::new()
            }
        }
    };
    let url_s = need(issues, "url", &ix.url);
    let other_api = |issues: &mut Issues, keys: &[(&str, bool)], api: &str| {
        for (key, set) in keys {
            if *set {
                issues.err(
                    file,
                    format!("influxdb.{key}"),
                    format!("`{key}` belongs to api = \"{api}\"; set api = \"{api}\" or remove it"),
                );
            }
        }
    };
    let secret = |issues: &mut Issues,
                  key: &str,
                  inline: &Option<Secret>,
                  from: &Option<String>| match (inline, from) {
        (Some(_), Some(_)) => {
            issues.err(
                file,
                format!("influxdb.{key}_file"),
                format!(
                    "set either `{key}` (or FACILITYD_INFLUXDB__{}) or `{key}_file`, not both",
                    key.to_uppercase()
                ),
            );
            Secret::default()
        }
        (Some(t), None) => t.clone(),
        (None, Some(f)) => read_secret_file(f).unwrap_or_else(|e| {
            issues.err(file, format!("influxdb.{key}_file"), e);
            Secret::default()
        }),
        (None, None) => Secret::default(),
    };
    let api = match api_name {
        InfluxApiName::V2 => {
            other_api(
                issues,
                &[
                    ("database", ix.database.is_some()),
                    ("retention_policy", ix.retention_policy.is_some()),
                    ("username", ix.username.is_some()),
                    ("password", ix.password.is_some()),
                    ("password_file", ix.password_file.is_some()),
                ],
                "v1",
            );
            let org = need(issues, "org", &ix.org);
            let bucket = need(issues, "bucket", &ix.bucket);
            let token = secret(issues, "token", &ix.token, &ix.token_file);
            InfluxApi::V2 { org, bucket, token }
        }
        InfluxApiName::V1 => {
            other_api(
                issues,
                &[
                    ("org", ix.org.is_some()),
                    ("bucket", ix.bucket.is_some()),
                    ("token", ix.token.is_some()),
                    ("token_file", ix.token_file.is_some()),
                ],
                "v2",
            );
            let database = need(issues, "database", &ix.database);
            let password = secret(issues, "password", &ix.password, &ix.password_file);
            let username = ix.username.clone().filter(|u| !u.is_empty());
            if username.is_none() && !password.0.is_empty() {
                issues.err(file, "influxdb.username", "a password needs `username`");
            }
            InfluxApi::V1 {
                database,
                retention_policy: ix.retention_policy.clone().filter(|r| !r.is_empty()),
                username,
                password,
            }
        }
    };
    let url = match url::Url::parse(&url_s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        _ if missing => None,
        _ => {
            issues.err(file, "influxdb.url", format!("expected an http:// or https:// URL such as http://127.0.0.1:8086, found {url_s:?}"));
            None
        }
    };
    if let Some(u) = &url
        && (!u.username().is_empty() || u.password().is_some())
    {
        // Not echoed: the URL holds a secret.
        issues.err(file, "influxdb.url", "credentials do not go in the URL (it is printed and logged): use `token_file` (v2) or `username` and `password_file` (v1)");
    }
    if let Some(u) = &url
        && (u.query().is_some() || u.fragment().is_some())
    {
        issues.err(file, "influxdb.url", "expected a base URL without a query or fragment: facilityd adds the write API's path and parameters");
    }
    let batch_size = ix.batch_size.unwrap_or(5000);
    if batch_size == 0 {
        issues.err(
            file,
            "influxdb.batch_size",
            "expected at least 1 line per batch",
        );
    }
    let flush_interval = ix.flush_interval.map_or(Duration::from_secs(1), |d| d.0);
    if flush_interval.is_zero() {
        issues.err(
            file,
            "influxdb.flush_interval",
            "expected a duration above zero",
        );
    }
    Some(InfluxSettings {
        url: url?,
        api,
        batch_size,
        flush_interval,
        timeout: ix.timeout.map_or(Duration::from_secs(10), |d| d.0),
    })
}

/// [`Settings::restart_keys`]: what `run` reads once at start-up (the state directory, the
/// API's address and token file, the InfluxDB writer, the MQTT connection, the storage bounds,
/// response times and the notifiers). Devices, profiles and rules are not here: a reload
/// applies them. `[gateway] site` and `timezone` are not either: they reach the running
/// gateway through the devices and rules built from them.
fn restart_keys(
    cfg: &super::schema::FileConfig,
    gateway: &Gateway,
    http_listen: &str,
    influxdb: Option<&InfluxSettings>,
    notify: &[Sourced<config::Value>],
) -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        keys.insert(key.to_string(), value);
    };
    put("gateway.id", gateway.id.clone());
    put("gateway.state_dir", gateway.state_dir.display().to_string());
    put("http.listen", http_listen.to_string());
    put(
        "http.api_token_file",
        format!("{:?}", cfg.http.api_token_file),
    );
    match (&cfg.influxdb, influxdb) {
        (Some(ix), Some(resolved)) => {
            put("influxdb.url", resolved.url.to_string());
            put("influxdb.api", resolved.api.target());
            match &resolved.api {
                InfluxApi::V2 { token, .. } => {
                    put("influxdb.token", secret_digest(token));
                    put("influxdb.token_file", format!("{:?}", ix.token_file));
                }
                InfluxApi::V1 {
                    username, password, ..
                } => {
                    put("influxdb.username", format!("{username:?}"));
                    put("influxdb.password", secret_digest(password));
                    put("influxdb.password_file", format!("{:?}", ix.password_file));
                }
            }
            put("influxdb.batch_size", resolved.batch_size.to_string());
            put(
                "influxdb.flush_interval",
                format!("{:?}", resolved.flush_interval),
            );
            put("influxdb.timeout", format!("{:?}", resolved.timeout));
        }
        _ => put("influxdb", "not configured".into()),
    }
    match &cfg.mqtt {
        Some(m) => {
            put("mqtt.url", format!("{:?}", m.url));
            put("mqtt.ca_file", format!("{:?}", m.ca_file));
            put("mqtt.cert_file", format!("{:?}", m.cert_file));
            put("mqtt.key_file", format!("{:?}", m.key_file));
            put("mqtt.username", format!("{:?}", m.username));
            put("mqtt.password_file", format!("{:?}", m.password_file));
            put("mqtt.keep_alive", format!("{:?}", m.keep_alive));
            put(
                "mqtt.max_payload_bytes",
                format!("{:?}", m.max_payload_bytes),
            );
            put(
                "mqtt.publish_telemetry",
                format!("{:?}", m.publish_telemetry),
            );
        }
        None => put("mqtt", "not configured".into()),
    }
    let st = &cfg.storage;
    put("storage.log_max_bytes", format!("{:?}", st.log_max_bytes));
    put(
        "storage.history_retention",
        format!("{:?}", st.history_retention),
    );
    put("storage.fsync_interval", format!("{:?}", st.fsync_interval));
    put(
        "storage.dead_letter_max_bytes",
        format!("{:?}", st.dead_letter_max_bytes),
    );
    put(
        "work_orders.response_times",
        format!("{:?}", cfg.work_orders.response_times),
    );
    let mut text = String::new();
    for n in notify {
        canonical_value(&n.item, &mut text);
        text.push('\n');
    }
    put("notify", text);
    keys
}

/// A secret's SHA-256 (hex): compared, never shown.
fn secret_digest(s: &Secret) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(s.0.as_bytes()))
}

/// A config value as text with its tables' keys sorted (the config crate's tables have no
/// stable order).
fn canonical_value(v: &config::Value, out: &mut String) {
    use config::ValueKind;
    use std::fmt::Write as _;
    match &v.kind {
        ValueKind::Nil => out.push_str("nil"),
        ValueKind::Boolean(b) => {
            let _ = write!(out, "{b}");
        }
        ValueKind::I64(n) => {
            let _ = write!(out, "{n}");
        }
        ValueKind::I128(n) => {
            let _ = write!(out, "{n}");
        }
        ValueKind::U64(n) => {
            let _ = write!(out, "{n}");
        }
        ValueKind::U128(n) => {
            let _ = write!(out, "{n}");
        }
        ValueKind::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        ValueKind::String(s) => {
            let _ = write!(out, "{s:?}");
        }
        ValueKind::Table(t) => {
            let mut entries: Vec<(&String, &config::Value)> = t.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (k, v) in entries {
                let _ = write!(out, "{k:?}=");
                canonical_value(v, out);
                out.push(',');
            }
            out.push('}');
        }
        ValueKind::Array(a) => {
            out.push('[');
            for v in a {
                canonical_value(v, out);
                out.push(',');
            }
            out.push(']');
        }
    }
}

/// Every device on one serial port must describe the bus the same way (one task owns the port
/// with one set of line settings), and a bus's schedule should leave it some slack.
fn check_serial_buses(devices: &[Arc<Device>], issues: &mut Issues) {
    let mut first: HashMap<&str, (&Device, &crate::modbus::link::SerialSettings)> = HashMap::new();
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

/// What the rule engine and the work-order store know of a device.
pub fn asset_info(d: &Device) -> AssetInfo {
    AssetInfo {
        id: d.id.clone(),
        name: d.name.clone(),
        site: d.site.clone(),
        building: d.building.clone(),
        floor: d.floor.clone(),
        device_type: d.profile.device_type,
        profile: d.profile.name.clone(),
        tags: d.tags.clone(),
        points: d
            .profile
            .points
            .iter()
            .map(|p| PointInfo {
                name: p.name.clone(),
                kind: p.kind,
                unit: p.unit.clone(),
                numeric: matches!(
                    p.field_type(),
                    crate::profile::FieldType::Float | crate::profile::FieldType::Integer
                ),
            })
            .collect(),
    }
}

fn default_gateway_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "facilityd".into())
}

fn valid_tag(s: &str) -> bool {
    !s.is_empty() && !crate::profile::unwritable_name(s) && !s.starts_with('_')
}

#[allow(clippy::too_many_arguments)]
fn build_device(
    file: &str,
    at: &str,
    index: usize,
    d: &DeviceConfig,
    gateway: &Gateway,
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
                    issues.err(file, format!("{at}.modbus.url"), e);
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
                        Some(r) if !r.kind.is_bit() && r.count > max_registers => issues.err(
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
                    max_registers: max_registers.clamp(1, 125),
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

/// A device's own topic with its placeholders filled (all but `{point}`).
fn bind_device_topic(t: &SubTemplate, d: &Device, gateway: &str) -> Result<SubTemplate, String> {
    for c in t.captures() {
        if !matches!(c, Capture::Point | Capture::Gateway) && capture_value(c, d).is_none() {
            return Err(format!(
                "the topic uses {{{}}}, but the device has no `{}`",
                c.name(),
                c.name()
            ));
        }
    }
    t.bind(|c| match c {
        Capture::Gateway => Some(gateway.to_string()),
        c => capture_value(c, d),
    })
}

/// `mqtt_topic` and `timestamp` of a configured profile.
fn check_profile_mqtt(
    file: &str,
    at: &str,
    p: &crate::profile::ProfileConfig,
    issues: &mut Issues,
) {
    if let Some(t) = &p.mqtt_topic
        && let Err(e) = SubTemplate::parse(t)
    {
        issues.err(file, format!("{at}.mqtt_topic"), e);
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
fn check_mqtt_device(
    file: &str,
    at: &str,
    d: &DeviceConfig,
    topic: Option<&str>,
    p: &Profile,
    gateway: &Gateway,
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
            Err(e) => issues.err(file, format!("{at}.mqtt.topic"), e),
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
fn routing(devices: &[Arc<Device>], gateway: &str) -> Routing {
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
                if let Ok(b) = SubTemplate::parse(t).and_then(|t| bind_device_topic(&t, d, gateway))
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
