//! The database writer: line protocol over HTTP to InfluxDB's write APIs, behind our own
//! [`LineWriter`] seam.
//!
//! The request is ours, not the `influxdb2` crate's: that crate hides the response headers,
//! and `Retry-After` on 429 and 503 is how a database or a proxy in front of it says when to
//! come back; it also knows only `/api/v2/write`, and InfluxDB 1.x (Debian's own package
//! among them) has only `/write`. Both APIs take the same line protocol; only the path, the
//! parameters and the authentication differ.
//!
//! Every answer is sorted into a [`WriteError`] by what the forwarder must do about it:
//!
//! | answer | meaning | the forwarder |
//! | --- | --- | --- |
//! | 204 | written | moves on |
//! | 400, 422 | lines refused (syntax, a field's type, outside retention); InfluxDB writes the valid lines of the batch | bisects to the refused lines and dead-letters only those |
//! | 413 | batch too large | splits it |
//! | 401, 403, 404 | token, user, org, bucket or database wrong | holds, retries, opens a gateway work order |
//! | 429, 503 | busy | waits `Retry-After` (seconds or an HTTP date) or backs off |
//! | 408, other 5xx, network errors, timeouts | transient | backs off and retries |
//! | 500 "retention policy not found" (InfluxDB 1.x) | configuration | as 401, 403, 404 |
//! | anything else (a 3xx, 405 from a proxy, another 2xx or 4xx) | not a database answering | holds, retries, opens a gateway work order |

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use crate::config::{InfluxApi, InfluxSettings};

/// The longest `Retry-After` obeyed; a longer one is cut to this.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(600);

/// Why a write failed, sorted by what the forwarder must do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// Network trouble or a timeout (no answer): retry after a backoff.
    #[error("{0}")]
    Retryable(String),
    /// 408, 5xx other than 503: retry after a backoff.
    #[error("database error (HTTP {status}): {text}")]
    ServerError { status: u16, text: String },
    /// 429 or 503: retry after `retry_after` when the answer said, else after a backoff.
    #[error("database busy (HTTP {status}){}: {text}", retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    Throttled {
        status: u16,
        retry_after: Option<Duration>,
        text: String,
    },
    /// 400, 422: the database refuses some of these lines; retrying them will not help.
    #[error("rejected lines (HTTP {status}): {text}")]
    Rejected { status: u16, text: String },
    /// 413: the batch is too large; split it.
    #[error("batch too large (HTTP 413)")]
    TooLarge,
    /// 401, 403, 404: configuration (token, user, org, bucket, database); keep the lines and
    /// retry slowly.
    #[error("database refused the write (HTTP {status}): {text}")]
    Refused { status: u16, text: String },
    /// An answer no database gives to a write (a redirect, 405, another 2xx): keep the lines
    /// and retry slowly.
    #[error("unexpected answer to a write (HTTP {status}): {text}")]
    Unexpected { status: u16, text: String },
}

/// Why an [`InfluxWriter`] cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot build the HTTP client for InfluxDB: {0}")]
    Client(reqwest011::Error),
    #[error("bad InfluxDB URL: {0}")]
    Url(url::ParseError),
}

/// Where batches of line protocol go.
pub trait LineWriter: Send + Sync {
    fn write<'a>(
        &'a self,
        body: String,
    ) -> Pin<Box<dyn Future<Output = Result<(), WriteError>> + Send + 'a>>;
}

/// Writes line protocol to InfluxDB (or anything that speaks its write API) over HTTP.
pub struct InfluxWriter {
    http: reqwest011::Client,
    /// The write endpoint with its query parameters.
    endpoint: reqwest011::Url,
    authorization: Option<Auth>,
}

impl InfluxWriter {
    pub fn new(s: &InfluxSettings) -> Result<Self, SetupError> {
        let http = reqwest011::Client::builder()
            .timeout(s.timeout)
            .connect_timeout(s.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(30))
            // A redirect is an answer to report, not to follow: a POST turned into a GET
            // elsewhere would look like a success.
            .redirect(reqwest011::redirect::Policy::none())
            .build()
            .map_err(SetupError::Client)?;
        let (endpoint, authorization) = endpoint(&s.url, &s.api)?;
        Ok(InfluxWriter {
            http,
            endpoint,
            authorization,
        })
    }

    /// The URL writes go to (with its parameters; no secret is in it).
    pub fn endpoint(&self) -> &reqwest011::Url {
        &self.endpoint
    }
}

/// How a write authenticates.
#[derive(Clone, PartialEq)]
enum Auth {
    /// `Authorization: Token <token>` (API v2).
    Token(String),
    /// HTTP basic authentication (API v1).
    Basic(String, String),
}

/// The write URL and authentication of an API. A path in the base URL is kept as a prefix (a
/// database behind a reverse proxy at `/influx/`).
fn endpoint(
    base: &url::Url,
    api: &InfluxApi,
) -> Result<(reqwest011::Url, Option<Auth>), SetupError> {
    let mut base = base.as_str().to_string();
    if !base.ends_with('/') {
        base.push('/');
    }
    let base = reqwest011::Url::parse(&base).map_err(SetupError::Url)?;
    let (path, params, auth) = match api {
        InfluxApi::V2 { org, bucket, token } => (
            "api/v2/write",
            vec![("org", org.clone()), ("bucket", bucket.clone())],
            (!token.0.is_empty()).then(|| Auth::Token(token.0.clone())),
        ),
        InfluxApi::V1 {
            database,
            retention_policy,
            username,
            password,
        } => {
            let mut params = vec![("db", database.clone())];
            if let Some(rp) = retention_policy {
                params.push(("rp", rp.clone()));
            }
            let auth = username
                .as_ref()
                .map(|u| Auth::Basic(u.clone(), password.0.clone()));
            ("write", params, auth)
        }
    };
    let mut url = base.join(path).map_err(SetupError::Url)?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in &params {
            q.append_pair(k, v);
        }
        q.append_pair("precision", "ns");
    }
    Ok((url, auth))
}

/// `Retry-After` as a wait from `now`: delay-seconds (`3`, also `2.5`) or an HTTP date; `None`
/// when absent or unreadable. Capped at [`RETRY_AFTER_MAX`]; a date in the past is zero (the
/// forwarder never waits less than its backoff anyway).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    let wait = if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        Duration::from_secs_f64(secs.min(RETRY_AFTER_MAX.as_secs_f64()))
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

/// Sorts a non-204 answer (see the table at the top of this file).
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> WriteError {
    let text: String = body.trim().chars().take(300).collect();
    match status {
        400 | 422 => WriteError::Rejected { status, text },
        413 => WriteError::TooLarge,
        401 | 403 | 404 => WriteError::Refused { status, text },
        // InfluxDB 1.x answers a write to a retention policy it does not have with a 500:
        // a configuration error like a wrong database, not a transient one.
        500 if text.contains("retention policy not found") => WriteError::Refused { status, text },
        429 | 503 => WriteError::Throttled {
            status,
            retry_after,
            text,
        },
        408 | 500..=599 => WriteError::ServerError { status, text },
        _ => WriteError::Unexpected { status, text },
    }
}

impl LineWriter for InfluxWriter {
    fn write<'a>(
        &'a self,
        body: String,
    ) -> Pin<Box<dyn Future<Output = Result<(), WriteError>> + Send + 'a>> {
        Box::pin(async move {
            let mut req = self
                .http
                .post(self.endpoint.clone())
                .header("Content-Type", "text/plain; charset=utf-8")
                .body(body);
            req = match &self.authorization {
                Some(Auth::Token(t)) => req.header("Authorization", format!("Token {t}")),
                Some(Auth::Basic(u, p)) => req.basic_auth(u, Some(p)),
                None => req,
            };
            let resp = req.send().await.map_err(|e| {
                // Without the URL's parameters: they name the database, not a secret, but
                // the error text is logged often.
                WriteError::Retryable(e.without_url().to_string())
            })?;
            let status = resp.status().as_u16();
            if status == 204 {
                return Ok(());
            }
            let retry_after = resp
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            // The body explains the refusal; a huge one is not read whole.
            let text = read_some(resp, 4096).await;
            Err(classify(status, retry_after, &text))
        })
    }
}

/// The first `max` bytes of a response body, as text.
async fn read_some(mut resp: reqwest011::Response, max: usize) -> String {
    let mut buf = Vec::new();
    while buf.len() < max {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    buf.truncate(max);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn every_status_has_its_treatment() {
        let c = |s| classify(s, None, "x");
        assert!(matches!(c(400), WriteError::Rejected { status: 400, .. }));
        assert!(matches!(c(422), WriteError::Rejected { status: 422, .. }));
        assert_eq!(c(413), WriteError::TooLarge);
        for s in [401, 403, 404] {
            assert!(matches!(c(s), WriteError::Refused { .. }), "{s}");
        }
        for s in [429, 503] {
            assert!(matches!(c(s), WriteError::Throttled { .. }), "{s}");
        }
        for s in [408, 500, 502, 504, 599] {
            assert!(matches!(c(s), WriteError::ServerError { .. }), "{s}");
        }
        assert!(matches!(
            classify(500, None, r#"{"error":"retention policy not found: year"}"#),
            WriteError::Refused { status: 500, .. }
        ));
        for s in [200, 201, 202, 301, 302, 307, 405, 406, 409, 415, 418, 451] {
            assert!(matches!(c(s), WriteError::Unexpected { .. }), "{s}");
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 2.5 ", now),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_retry_after("86400", now), Some(RETRY_AFTER_MAX));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        let at = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&at, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
    }

    #[test]
    fn endpoints_of_both_apis() {
        let base = url::Url::parse("http://db.example:8086").unwrap();
        let (u, a) = endpoint(
            &base,
            &InfluxApi::V2 {
                org: "o rg".into(),
                bucket: "b".into(),
                token: Secret("t0k".into()),
            },
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "http://db.example:8086/api/v2/write?org=o+rg&bucket=b&precision=ns"
        );
        assert!(a == Some(Auth::Token("t0k".into())));
        let base = url::Url::parse("https://proxy.example/influx").unwrap();
        let (u, a) = endpoint(
            &base,
            &InfluxApi::V1 {
                database: "facilityd".into(),
                retention_policy: Some("year".into()),
                username: Some("Aladdin".into()),
                password: Secret("open sesame".into()),
            },
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://proxy.example/influx/write?db=facilityd&rp=year&precision=ns"
        );
        assert!(a == Some(Auth::Basic("Aladdin".into(), "open sesame".into())));
    }
}
