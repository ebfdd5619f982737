//! The plain sections of the configuration, resolved: the gateway's identity, the database it
//! writes to and the bounds of its storage. Devices, rules, MQTT and notifiers are validated by
//! their own modules and assembled in `crate::settings`.

use std::path::PathBuf;
use std::time::Duration;

use super::schema::{FileConfig, Secret};
use super::{Issues, schema};

/// `[gateway]`, resolved.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
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

/// Why a file named in the configuration (a secret, a certificate) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file {path} is empty")]
    Empty { path: String },
    #[error("cannot read {path}: {error}")]
    Unreadable { path: String, error: std::io::Error },
}

impl FileError {
    fn unreadable(path: &str, error: std::io::Error) -> Self {
        FileError::Unreadable {
            path: path.to_string(),
            error,
        }
    }
}

/// A secret from a file, without the whitespace around it (a file ends with a newline).
pub fn read_secret_file(path: &str) -> Result<Secret, FileError> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Err(FileError::Empty {
            path: path.to_string(),
        }),
        Ok(s) => Ok(Secret(s.trim().to_string())),
        Err(e) => Err(FileError::unreadable(path, e)),
    }
}

/// A file's bytes (a certificate or a key); one holding only whitespace is refused as empty.
pub fn read_nonempty_file(path: &str) -> Result<Vec<u8>, FileError> {
    match std::fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Err(FileError::Empty {
            path: path.to_string(),
        }),
        Ok(b) => Ok(b),
        Err(e) => Err(FileError::unreadable(path, e)),
    }
}

/// `[influxdb]`: the write API with its keys (those of the other API are errors), the URL and
/// the secrets.
pub(crate) fn resolve_influxdb(
    ix: &schema::InfluxSection,
    file: &str,
    issues: &mut Issues,
) -> Option<InfluxSettings> {
    use schema::InfluxApiName;
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
            issues.err(file, format!("influxdb.{key}_file"), e.to_string());
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

/// `[gateway]` and `[http] listen`, resolved with their defaults: (gateway, listen address).
pub(crate) fn gateway(
    cfg: &FileConfig,
    main_file: &str,
    issues: &mut Issues,
) -> (GatewaySettings, String) {
    let gateway = GatewaySettings {
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
            main_file,
            "gateway.id",
            format!(
                "expected an id without backslashes or control characters, found {:?}",
                gateway.id
            ),
        );
    }
    // Calendar rules, the availability history's days and the reports use it.
    if gateway.timezone.parse::<chrono_tz::Tz>().is_err() {
        issues.err(
            main_file,
            "gateway.timezone",
            format!(
                "{:?} is not an IANA time zone such as \"Asia/Shanghai\" or \"UTC\"",
                gateway.timezone
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
            main_file,
            "http.listen",
            format!("expected an address such as 127.0.0.1:9470, found {http_listen:?}"),
        );
    }

    (gateway, http_listen)
}

/// The host name, for a gateway without `[gateway] id`.
fn default_gateway_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "facilityd".into())
}

/// `[storage]`, resolved with its defaults and bounds.
pub(crate) fn storage(cfg: &FileConfig, main_file: &str, issues: &mut Issues) -> StorageSettings {
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
            main_file,
            "storage.dead_letter_max_bytes",
            format!(
                "expected at least 64KiB, found {} bytes",
                storage.dead_letter_max_bytes
            ),
        );
    }
    if storage.log_max_bytes < MIN_LOG_BYTES {
        issues.err(
            main_file,
            "storage.log_max_bytes",
            format!(
                "expected at least 64KiB, found {} bytes",
                storage.log_max_bytes
            ),
        );
    }
    if storage.fsync_interval > Duration::from_secs(10) {
        issues.err(
            main_file,
            "storage.fsync_interval",
            "expected at most 10s: telemetry counts as accepted only once synced",
        );
    }

    storage
}
