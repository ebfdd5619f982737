//! `[[notify]] type = "webhook"`: POSTs each work-order event as JSON.
//!
//! Body: [`super::event_body`]. Headers: `Content-Type: application/json`,
//! `Idempotency-Key: ID:seq`, with `secret_file` `X-Facilityd-Signature: sha256=<hex
//! HMAC-SHA256 of the exact body bytes>`, and the configured `headers`. 2xx is delivered;
//! connection errors, timeouts, 5xx, 429 and 408 are retried; any other answer (other 4xx, and
//! redirects, which are not followed: a POST must not turn into a GET elsewhere) is permanent.
//!
//! The HTTP stack is reqwest 0.11 with native-tls, the one the InfluxDB writer already pulls in.

use super::{AssetDirectory, EventFilter, ItemScope, NotifierName, parse_events};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest011::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use sha2::Sha256;

use super::{DeliveryError, Notifier, event_body};
use crate::config::units::Duration as ConfigDuration;
use crate::config::{ConfigIssue, Secret, read_secret_file};
use crate::rules::matcher::AssetMatch;
use crate::workorder::types::{EventKind, WorkOrderEvent};

/// `[[notify]]` with `type = "webhook"`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `webhook`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Names the notifier in the outbox, the API and metrics; default `webhook:<N>`, N being the
    /// position in the merged `notify` list. Set it to keep the outbox state of a webhook when
    /// `notify` entries are added or reordered.
    pub id: Option<String>,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Which events to send (default: all): opened, updated, acknowledged, condition_cleared,
    /// flapping, resolved, closed, cancelled.
    pub events: Option<Vec<String>>,
    /// A file holding the HMAC secret: adds `X-Facilityd-Signature: sha256=<hex>`.
    pub secret_file: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout (default 10s).
    pub timeout: Option<ConfigDuration>,
    /// Only work orders of the matching assets.
    #[serde(rename = "match")]
    pub asset_match: Option<AssetMatch>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers the notifier sets itself.
const RESERVED_HEADERS: [&str; 4] = [
    "content-type",
    "idempotency-key",
    "x-facilityd-signature",
    "content-length",
];
/// How much of an error answer's body is kept for the log and the outbox.
const ERROR_BODY_BYTES: usize = 512;

/// A validated `type = "webhook"` item: plain data, checked as far as it can be without
/// running. [`WebhookNotifier::new`] makes the running notifier of it.
#[derive(Clone)]
pub struct WebhookSpec {
    pub name: String,
    pub url: reqwest011::Url,
    /// `None`: every event.
    pub events: Option<HashSet<EventKind>>,
    pub asset_match: Option<AssetMatch>,
    pub secret: Option<Secret>,
    /// The configured extra headers (marked sensitive).
    pub headers: HeaderMap,
    pub timeout: Duration,
}

impl fmt::Debug for WebhookSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSpec")
            .field("name", &self.name)
            .field("events", &self.events)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

impl NotifierName for WebhookSpec {
    fn name(&self) -> &str {
        &self.name
    }
}

/// A running webhook.
pub struct WebhookNotifier {
    name: String,
    url: reqwest011::Url,
    filter: EventFilter,
    secret: Option<Secret>,
    headers: HeaderMap,
    gateway: String,
    client: reqwest011::Client,
}

impl fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("name", &self.name)
            .field("events", &self.filter.events)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

/// The HTTP client of a webhook cannot be built (the TLS backend cannot start).
#[derive(Debug, thiserror::Error)]
#[error("notifier {name}: cannot build the HTTP client: {error}")]
pub struct ClientError {
    pub name: String,
    pub error: reqwest011::Error,
}

impl WebhookNotifier {
    /// The running webhook of `spec`: events of the gateway `gateway`, `match` and `{name}`
    /// against `assets`.
    pub fn new(
        spec: &WebhookSpec,
        gateway: &str,
        assets: &AssetDirectory,
    ) -> Result<WebhookNotifier, ClientError> {
        let client = http_client(spec.timeout).map_err(|error| ClientError {
            name: spec.name.clone(),
            error,
        })?;
        Ok(WebhookNotifier {
            name: spec.name.clone(),
            url: spec.url.clone(),
            filter: EventFilter {
                events: spec.events.clone(),
                asset_match: spec.asset_match.clone(),
                assets: assets.clone(),
            },
            secret: spec.secret.clone(),
            headers: spec.headers.clone(),
            gateway: gateway.to_string(),
            client,
        })
    }
}

/// A webhook's HTTP client: `timeout` per request, redirects not followed.
fn http_client(timeout: Duration) -> reqwest011::Result<reqwest011::Client> {
    reqwest011::Client::builder()
        .timeout(timeout.max(Duration::from_millis(1)))
        .connect_timeout(timeout.clamp(Duration::from_millis(1), Duration::from_secs(5)))
        .redirect(reqwest011::redirect::Policy::none())
        .user_agent(concat!("facilityd/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Validates the webhooks of the `notify` items (`(file, index in that file, item)`),
/// leaving `type = "mqtt"` items out; [`parse_notifiers_with`] takes both.
pub fn parse_notifiers(
    items: &[(String, usize, config::Value)],
) -> Result<Vec<WebhookSpec>, Vec<ConfigIssue>> {
    parse_notifiers_with(items, &|w| w, None)
}

/// Validates a `type = "mqtt"` item: (file, key path of the item, its position among all
/// items, the item). MQTT lives above this module, so whoever assembles the settings passes
/// its validator in.
pub type ItemBuilder<'a, T> =
    &'a dyn Fn(&str, &str, usize, config::Value) -> Result<T, Vec<ConfigIssue>>;

/// Validates the `notify` items (`(file, index in that file, item)`) into specs `T`: webhooks
/// here (made a `T` by `webhook`), `type = "mqtt"` items by `mqtt` (`None` leaves them out).
/// Every error is collected, with its file and key path (`notify[1].url`); names must be
/// unique.
pub fn parse_notifiers_with<T: NotifierName>(
    items: &[(String, usize, config::Value)],
    webhook: &dyn Fn(WebhookSpec) -> T,
    mqtt: Option<ItemBuilder<'_, T>>,
) -> Result<Vec<T>, Vec<ConfigIssue>> {
    let mut out: Vec<T> = Vec::new();
    let mut errors = Vec::new();
    // name -> where it was configured
    let mut names: HashMap<String, (String, usize)> = HashMap::new();
    for (position, (file, index, value)) in items.iter().enumerate() {
        let base = format!("notify[{index}]");
        let issue = |path: String, message: String| ConfigIssue {
            file: file.clone(),
            path,
            message,
        };
        let kind = match value.clone().into_table() {
            Err(_) => {
                errors.push(issue(base, "expected a table".into()));
                continue;
            }
            Ok(t) => t.get("type").cloned().map(|v| v.into_string()),
        };
        let built: Result<T, Vec<ConfigIssue>> = match kind {
            Some(Ok(k)) if k == "webhook" => {
                validate(file, &base, position, value.clone()).map(webhook)
            }
            Some(Ok(k)) if k == "mqtt" => match mqtt {
                None => continue,
                Some(validate_mqtt) => validate_mqtt(file, &base, position, value.clone()),
            },
            Some(Ok(k)) => {
                errors.push(issue(
                    format!("{base}.type"),
                    format!("unknown notifier type {k:?}: expected webhook or mqtt"),
                ));
                continue;
            }
            Some(Err(_)) => {
                errors.push(issue(
                    format!("{base}.type"),
                    "expected a string: webhook or mqtt".into(),
                ));
                continue;
            }
            None => {
                errors.push(issue(
                    base,
                    "missing key `type`: expected webhook or mqtt".into(),
                ));
                continue;
            }
        };
        match built {
            Ok(n) => {
                if let Some((f, i)) = names.get(n.name()) {
                    errors.push(issue(
                        format!("{base}.id"),
                        format!(
                            "duplicate notifier id {:?}: also {f}: notify[{i}]",
                            n.name()
                        ),
                    ));
                    continue;
                }
                names.insert(n.name().to_string(), (file.clone(), *index));
                out.push(n);
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn validate(
    file: &str,
    base: &str,
    position: usize,
    value: config::Value,
) -> Result<WebhookSpec, Vec<ConfigIssue>> {
    let scope = ItemScope {
        file,
        base,
        position,
    };
    let issue = |path: &str, message: String| scope.issue(path, message);
    let cfg: WebhookConfig = scope.deserialize(value)?;
    let mut errors = Vec::new();
    let name = scope.name(cfg.id.as_deref(), "webhook", &mut errors);

    let url = match reqwest011::Url::parse(&cfg.url) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            errors.push(issue(
                "url",
                format!(
                    "expected an http:// or https:// URL, found scheme {:?}",
                    u.scheme()
                ),
            ));
            None
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            errors.push(issue("url", "the URL has no host".into()));
            None
        }
        Ok(u) => Some(u),
        Err(e) => {
            errors.push(issue(
                "url",
                format!("expected an http:// or https:// URL ({e})"),
            ));
            None
        }
    };

    let events = match parse_events(cfg.events.as_deref()) {
        Ok(e) => e,
        Err((path, message)) => {
            errors.push(issue(&path, message));
            None
        }
    };

    let secret = match &cfg.secret_file {
        None => None,
        // Trailing newlines are how files end, not part of the secret.
        Some(path) => match read_secret_file(path) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(issue("secret_file", e.to_string()));
                None
            }
        },
    };

    let mut headers = HeaderMap::new();
    for (k, v) in &cfg.headers {
        let path = format!("headers.{k}");
        if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
            errors.push(issue(
                &path,
                format!("{k} is set by facilityd and cannot be configured"),
            ));
            continue;
        }
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(name), Ok(mut value)) => {
                // Extra headers often carry tokens: keep them out of any debug output.
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            (Err(_), _) => errors.push(issue(&path, format!("{k:?} is not a valid header name"))),
            (_, Err(_)) => errors.push(issue(
                &path,
                "not a valid header value (visible ASCII and spaces only)".into(),
            )),
        }
    }

    let timeout = cfg.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
    if timeout.is_zero() {
        errors.push(issue("timeout", "must be more than zero".into()));
    }

    if let Some(m) = &cfg.asset_match
        && let Err(e) = m.validate()
    {
        errors.push(issue("match", e.to_string()));
    }

    // The client is built when the gateway starts; building one now reports a TLS backend
    // that cannot start where `check` shows it.
    if let Err(e) = http_client(timeout) {
        errors.push(issue("", format!("cannot build the HTTP client: {e}")));
    }

    match url {
        Some(url) if errors.is_empty() => Ok(WebhookSpec {
            name,
            url,
            events,
            asset_match: cfg.asset_match,
            secret,
            headers,
            timeout,
        }),
        _ => Err(errors),
    }
}

/// The config crate appends its own (garbled) location to some messages; ours is exact.
pub(crate) fn clean_message(msg: &str) -> String {
    match msg.find(" for key `") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`: the `X-Facilityd-Signature` value.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl WebhookNotifier {
    async fn post(&self, event: &WorkOrderEvent) -> Result<(), DeliveryError> {
        let body = event_body(event, &self.gateway);
        let mut req = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest011::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", event.idempotency_key());
        if let Some(secret) = &self.secret {
            req = req.header(
                "X-Facilityd-Signature",
                signature(secret.0.as_bytes(), &body),
            );
        }
        let mut resp = match req.body(body).send().await {
            Ok(r) => r,
            // The URL may carry credentials: keep it out of the error.
            Err(e) if e.is_builder() => {
                return Err(DeliveryError::Permanent(error_chain(e.without_url())));
            }
            Err(e) => return Err(DeliveryError::Retryable(error_chain(e.without_url()))),
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let mut text = Vec::new();
        while text.len() < ERROR_BODY_BYTES {
            match resp.chunk().await {
                Ok(Some(c)) => text.extend_from_slice(&c),
                _ => break,
            }
        }
        text.truncate(ERROR_BODY_BYTES);
        let text = String::from_utf8_lossy(&text);
        let message = format!("HTTP {}: {}", status.as_u16(), text.trim());
        Err(classify(status.as_u16(), message))
    }
}

/// 5xx, 429 and 408 are worth retrying; anything else that is not 2xx is permanent.
pub fn classify(status: u16, message: String) -> DeliveryError {
    match status {
        408 | 429 | 500..=599 => DeliveryError::Retryable(message),
        _ => DeliveryError::Permanent(message),
    }
}

fn error_chain(e: reqwest011::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

impl Notifier for WebhookNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, event: &WorkOrderEvent) -> bool {
        self.filter.wants(event)
    }

    fn deliver<'a>(
        &'a self,
        event: &'a WorkOrderEvent,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(self.post(event))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use config::{Config, File, FileFormat};

    /// The `[[notify]]` items of `toml`, as read from `f.toml`.
    pub(crate) fn items(toml: &str) -> Vec<(String, usize, config::Value)> {
        #[derive(Deserialize)]
        struct F {
            notify: Vec<config::Value>,
        }
        let f: F = Config::builder()
            .add_source(File::from_str(toml, FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        f.notify
            .into_iter()
            .enumerate()
            .map(|(i, v)| ("f.toml".to_string(), i, v))
            .collect()
    }

    fn parse(toml: &str) -> Result<Vec<WebhookSpec>, Vec<ConfigIssue>> {
        parse_notifiers(&items(toml))
    }

    fn errors(toml: &str) -> Vec<String> {
        match parse(toml) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.iter().map(|i| i.to_string()).collect(),
        }
    }

    #[test]
    fn errors_name_file_and_path() {
        assert_eq!(
            errors(
                r#"
                [[notify]]
                type = "webhook"
                url = "https://ok.example/"
                [[notify]]
                type = "webhook"
                url = "ftp://x/"
                events = ["opened", "exploded"]
                headers = { "Idempotency-Key" = "mine", "Bad Header" = "x" }
                match = { device_type = "toaster" }
                "#
            ),
            [
                "f.toml: notify[1].url: expected an http:// or https:// URL, found scheme \"ftp\"".to_string(),
                "f.toml: notify[1].events[1]: unknown event \"exploded\": expected one of opened, updated, acknowledged, condition_cleared, flapping, resolved, closed, cancelled".to_string(),
                "f.toml: notify[1].headers.Bad Header: \"Bad Header\" is not a valid header name".to_string(),
                "f.toml: notify[1].headers.Idempotency-Key: Idempotency-Key is set by facilityd and cannot be configured".to_string(),
                format!(
                    "f.toml: notify[1].match: unknown device_type \"toaster\": expected {}",
                    crate::rules::matcher::device_type_names()
                ),
            ]
        );
    }

    #[test]
    fn unknown_keys_types_and_missing_url() {
        assert_eq!(
            errors("[[notify]]\ntype = \"webhook\"\nurl = \"http://x/\"\nretries = 3\n"),
            [
                "f.toml: notify[0].retries: unknown field `retries`, expected one of `type`, `id`, `url`, `events`, `secret_file`, `headers`, `timeout`, `match`"
            ]
        );
        assert_eq!(
            errors("[[notify]]\ntype = \"pager\"\n"),
            ["f.toml: notify[0].type: unknown notifier type \"pager\": expected webhook or mqtt"]
        );
        assert_eq!(
            errors("[[notify]]\ntype = \"webhook\"\n"),
            ["f.toml: notify[0]: missing configuration field \"url\""]
        );
        assert_eq!(
            errors("[[notify]]\ntype = \"webhook\"\nurl = \"http://x/\"\ntimeout = 5\n"),
            [
                "f.toml: notify[0].timeout: expected a duration string with a unit such as \"5s\", found the bare number 5"
            ]
        );
        assert_eq!(
            errors("[[notify]]\ntype = \"webhook\"\nurl = \"http://x/\"\nsecret_file = \"/nonexistent/secret\"\n")
                .len(),
            1
        );
        assert_eq!(
            errors(
                "[[notify]]\ntype = \"webhook\"\nid = \"a\"\nurl = \"http://x/\"\n\
                 [[notify]]\ntype = \"webhook\"\nid = \"a\"\nurl = \"http://y/\"\n"
            ),
            ["f.toml: notify[1].id: duplicate notifier id \"a\": also f.toml: notify[0]"]
        );
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn status_classes() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(classify(s, String::new()), DeliveryError::Retryable(_)),
                "{s}"
            );
        }
        for s in [301, 400, 401, 403, 404, 410, 413, 422] {
            assert!(
                matches!(classify(s, String::new()), DeliveryError::Permanent(_)),
                "{s}"
            );
        }
    }
}
