//! The settings that take effect only at start-up, in a canonical text per key path, so that a
//! reload can name the keys whose change needs a restart.

use std::collections::BTreeMap;

use crate::config::schema::{FileConfig, Secret};
use crate::config::{GatewaySettings, InfluxApi, InfluxSettings, Sourced};

/// [`Settings::restart_keys`]: what `run` reads once at start-up (the state directory, the
/// API's address and token file, the InfluxDB writer, the MQTT connection, the storage bounds,
/// response times and the notifiers). Devices, profiles and rules are not here: a reload
/// applies them. `[gateway] site` and `timezone` are not either: they reach the running
/// gateway through the devices and rules built from them.
pub(super) fn restart_keys(
    cfg: &FileConfig,
    gateway: &GatewaySettings,
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
