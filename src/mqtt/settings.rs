//! `[mqtt]` resolved: what the client needs to connect, checked once by `check` and `run`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::payload::PayloadMap;
use super::topic::{PubTemplate, Router};
use crate::config::schema::MqttSection;
use crate::config::{Secret, read_nonempty_file};

/// Default MQTT keep-alive.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Default largest device payload.
pub const DEFAULT_MAX_PAYLOAD: u64 = 64 << 10;
/// The MQTT limit of a packet's remaining length.
const MQTT_MAX_PACKET: u64 = 268_435_455;
/// Placeholders of `publish_telemetry.topic`.
pub const TELEMETRY_PLACEHOLDERS: [&str; 8] = [
    "gateway",
    "asset",
    "name",
    "site",
    "building",
    "floor",
    "device_type",
    "measurement",
];

/// TLS material, read from the configured files.
#[derive(Clone)]
pub struct TlsSettings {
    /// PEM; `None`: the system's trust store.
    pub ca: Option<Vec<u8>>,
    /// PEM certificate and PKCS#8 PEM key.
    pub identity: Option<(Vec<u8>, Secret)>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca", &self.ca.as_ref().map(|_| "custom"))
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

/// `publish_telemetry`, resolved.
#[derive(Debug, Clone)]
pub struct TelemetryTopic {
    pub topic: PubTemplate,
    pub qos1: bool,
    pub retain: bool,
}

/// Which device each subscription serves and how its payloads read.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    pub router: Router,
    /// Per device (configuration order): its payload map, for MQTT devices.
    pub maps: Vec<Option<Arc<PayloadMap>>>,
}

/// The validated `[mqtt]` section.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// The URL as configured (it carries no credentials).
    pub url: String,
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsSettings>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub keep_alive: Duration,
    pub max_payload_bytes: usize,
    /// Payload times taken.
    pub time_window: super::payload::TimeWindow,
    /// `facilityd-<gateway.id>`.
    pub client_id: String,
    /// `facilityd/<gateway.id>/status`: retained `online`, last will `offline`.
    pub status_topic: String,
    pub publish_telemetry: Option<TelemetryTopic>,
    pub routing: Arc<Routing>,
}

impl MqttSettings {
    /// The largest packet the client takes in: well above `max_payload_bytes`, so that an
    /// oversized device message is read, counted and acknowledged instead of disconnecting
    /// the client (with a persistent session it would come back on every reconnect).
    pub fn max_incoming_packet(&self) -> usize {
        (self.max_payload_bytes as u64)
            .saturating_mul(16)
            .clamp(1 << 20, MQTT_MAX_PACKET) as usize
    }
}

/// Outgoing packets: work-order events with evidence are a few KiB; this leaves room.
pub const MAX_OUTGOING_PACKET: usize = 4 << 20;

/// Resolves `[mqtt]`; errors come back as (key path, message).
pub fn resolve(m: &MqttSection, gateway_id: &str) -> Result<MqttSettings, Vec<(String, String)>> {
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut err = |k: &str, msg: String| errors.push((format!("mqtt.{k}"), msg));

    let url_s = m.url.clone().unwrap_or_default();
    let mut tls_on = false;
    let (mut host, mut port) = (String::new(), 1883u16);
    if url_s.trim().is_empty() {
        err(
            "url",
            "expected `url` in [mqtt], such as mqtt://127.0.0.1:1883".into(),
        );
    } else {
        match url::Url::parse(&url_s) {
            Ok(u) if matches!(u.scheme(), "mqtt" | "mqtts") => {
                tls_on = u.scheme() == "mqtts";
                port = u.port().unwrap_or(if tls_on { 8883 } else { 1883 });
                match u.host_str() {
                    Some(h) if !h.is_empty() => {
                        host = h.trim_start_matches('[').trim_end_matches(']').to_string()
                    }
                    _ => err("url", format!("the URL {url_s:?} has no host")),
                }
                if !u.username().is_empty() || u.password().is_some() {
                    err(
                        "url",
                        "credentials do not go in the URL: set `username` and `password_file`"
                            .into(),
                    );
                }
                if !matches!(u.path(), "" | "/") || u.query().is_some() {
                    err(
                        "url",
                        format!(
                            "expected mqtt://HOST[:PORT] with no path or query, found {url_s:?}"
                        ),
                    );
                }
            }
            Ok(u) => err(
                "url",
                format!(
                    "expected an mqtt:// or mqtts:// URL, found scheme {:?}",
                    u.scheme()
                ),
            ),
            Err(e) => err(
                "url",
                format!("expected an mqtt:// or mqtts:// URL such as mqtt://127.0.0.1:1883 ({e})"),
            ),
        }
    }

    let mut tls = None;
    if tls_on {
        let ca = match &m.ca_file {
            None => None,
            Some(f) => match read_nonempty_file(f) {
                Ok(b) if native_tls::Certificate::from_pem(&b).is_ok() => Some(b),
                Ok(_) => {
                    err("ca_file", format!("{f} is not a PEM certificate"));
                    None
                }
                Err(e) => {
                    err("ca_file", e.to_string());
                    None
                }
            },
        };
        let identity = match (&m.cert_file, &m.key_file) {
            (None, None) => None,
            (Some(_), None) => {
                err(
                    "key_file",
                    "`cert_file` needs `key_file` (its PKCS#8 PEM key)".into(),
                );
                None
            }
            (None, Some(_)) => {
                err("cert_file", "`key_file` needs `cert_file`".into());
                None
            }
            (Some(c), Some(k)) => match (read_nonempty_file(c), read_nonempty_file(k)) {
                (Ok(cert), Ok(key)) => {
                    if native_tls::Identity::from_pkcs8(&cert, &key).is_err() {
                        err(
                            "key_file",
                            format!("{c} and {k} are not a PEM certificate and its PKCS#8 PEM key"),
                        );
                    }
                    Some((cert, Secret(String::from_utf8_lossy(&key).into_owned())))
                }
                (Err(e), _) => {
                    err("cert_file", e.to_string());
                    None
                }
                (_, Err(e)) => {
                    err("key_file", e.to_string());
                    None
                }
            },
        };
        tls = Some(TlsSettings { ca, identity });
    } else if !url_s.trim().is_empty() {
        for (k, v) in [
            ("ca_file", &m.ca_file),
            ("cert_file", &m.cert_file),
            ("key_file", &m.key_file),
        ] {
            if v.is_some() {
                err(k, "TLS files need an mqtts:// url".into());
            }
        }
    }

    let password = match (&m.username, &m.password_file) {
        (None, Some(_)) => {
            err("password_file", "a password needs `username`".into());
            None
        }
        (_, Some(f)) => match read_nonempty_file(f) {
            Ok(b) => Some(Secret(String::from_utf8_lossy(&b).trim().to_string())),
            Err(e) => {
                err("password_file", e.to_string());
                None
            }
        },
        _ => None,
    };
    if m.username.as_deref().is_some_and(str::is_empty) {
        err("username", "must not be empty".into());
    }

    let default_window = super::payload::TimeWindow::DEFAULT;
    let time_window = super::payload::TimeWindow {
        max_age: m.max_timestamp_age.map_or(default_window.max_age, |d| d.0),
        max_ahead: m
            .max_timestamp_ahead
            .map_or(default_window.max_ahead, |d| d.0),
    };
    if time_window.max_age.is_zero() {
        err(
            "max_timestamp_age",
            "expected a duration above zero (payload times are refused when older)".into(),
        );
    }
    let keep_alive = m.keep_alive.map_or(DEFAULT_KEEP_ALIVE, |d| d.0);
    if !keep_alive.is_zero()
        && (keep_alive < Duration::from_secs(1)
            || keep_alive.subsec_nanos() != 0
            || keep_alive.as_secs() > u64::from(u16::MAX))
    {
        err(
            "keep_alive",
            format!(
                "expected whole seconds from 1s to 65535s (or 0 to turn it off), found {}",
                humantime::format_duration(keep_alive)
            ),
        );
    }

    let max_payload = m.max_payload_bytes.map_or(DEFAULT_MAX_PAYLOAD, |b| b.0);
    if max_payload == 0 || max_payload > MQTT_MAX_PACKET / 16 {
        err(
            "max_payload_bytes",
            format!("expected 1B to 16MiB, found {max_payload} bytes"),
        );
    }

    let publish_telemetry = m.publish_telemetry.as_ref().and_then(|p| {
        let topic = p
            .topic
            .clone()
            .unwrap_or_else(|| "facilityd/{gateway}/telemetry/{asset}".into());
        let qos1 = match p.qos.unwrap_or(0) {
            0 => false,
            1 => true,
            q => {
                err(
                    "publish_telemetry.qos",
                    format!("expected 0 or 1, found {q}"),
                );
                false
            }
        };
        match PubTemplate::parse(&topic, &TELEMETRY_PLACEHOLDERS) {
            Ok(t) => Some(TelemetryTopic {
                topic: t,
                qos1,
                retain: p.retain.unwrap_or(false),
            }),
            Err(e) => {
                err("publish_telemetry.topic", e.to_string());
                None
            }
        }
    });

    if !errors.is_empty() {
        return Err(errors);
    }
    let level = |s: &str| -> String {
        s.chars()
            .map(|c| if matches!(c, '/' | '+' | '#') { '_' } else { c })
            .collect()
    };
    Ok(MqttSettings {
        url: url_s,
        host,
        port,
        tls,
        username: m.username.clone(),
        password,
        keep_alive,
        max_payload_bytes: max_payload as usize,
        time_window,
        client_id: format!("facilityd-{gateway_id}"),
        status_topic: format!("facilityd/{}/status", level(gateway_id)),
        publish_telemetry,
        routing: Arc::new(Routing::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::{ByteSize, Duration as D};

    fn section(url: &str) -> MqttSection {
        MqttSection {
            url: Some(url.into()),
            ..Default::default()
        }
    }

    fn errors(m: &MqttSection) -> Vec<String> {
        resolve(m, "gw")
            .unwrap_err()
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect()
    }

    #[test]
    fn defaults_and_ids() {
        let s = resolve(&section("mqtt://127.0.0.1"), "tower/a").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 1883));
        assert_eq!(s.client_id, "facilityd-tower/a");
        assert_eq!(s.status_topic, "facilityd/tower_a/status");
        assert_eq!(s.keep_alive, DEFAULT_KEEP_ALIVE);
        assert_eq!(s.max_payload_bytes, 64 << 10);
        assert_eq!(s.max_incoming_packet(), 1 << 20);
        assert!(s.tls.is_none() && s.publish_telemetry.is_none());
        let s = resolve(&section("mqtts://broker.example"), "gw").unwrap();
        assert_eq!(s.port, 8883);
        assert!(s.tls.is_some());
    }

    #[test]
    fn rejects_what_cannot_work() {
        assert_eq!(
            errors(&section("http://x")),
            ["mqtt.url: expected an mqtt:// or mqtts:// URL, found scheme \"http\""]
        );
        assert_eq!(
            errors(&section("mqtt://u:p@x")),
            ["mqtt.url: credentials do not go in the URL: set `username` and `password_file`"]
        );
        let mut m = section("mqtt://x");
        m.keep_alive = Some(D::from_millis(500));
        m.max_payload_bytes = Some(ByteSize(0));
        m.ca_file = Some("/nonexistent".into());
        m.password_file = Some("/nonexistent".into());
        m.publish_telemetry = Some(crate::config::schema::PublishTelemetryConfig {
            topic: Some("t/{nope}".into()),
            qos: Some(2),
            retain: None,
        });
        let e = errors(&m);
        assert_eq!(e.len(), 6, "{e:#?}");
        assert!(e[0].starts_with("mqtt.ca_file: TLS files need an mqtts:// url"));
        assert!(e[1].starts_with("mqtt.password_file: a password needs `username`"));
        assert!(e[2].starts_with("mqtt.keep_alive: expected whole seconds"));
        assert!(e[3].starts_with("mqtt.max_payload_bytes"));
        assert!(e[4].starts_with("mqtt.publish_telemetry.qos"));
        assert!(e[5].contains("unknown placeholder {nope}"));
        let mut m = section("mqtts://x");
        m.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(errors(&m)[0].starts_with("mqtt.ca_file: cannot read /nonexistent/ca.pem"));
    }
}
