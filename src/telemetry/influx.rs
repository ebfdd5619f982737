//! The InfluxDB v2 writer: the `influxdb2` crate behind our own [`LineWriter`] seam.
//!
//! Why the workarounds: `influxdb2::Client::new` panics on a bad URL (validated in config
//! first), has no request timeout of its own (set through its reqwest 0.11 builder), drops
//! response headers (no Retry-After: the forwarder backs off with jitter instead), and maps
//! every non-204 answer to `RequestError::Http { status, text }`, which is enough to sort
//! status codes.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::InfluxSettings;

/// Why a write failed, sorted by what the forwarder must do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// Network trouble, timeouts, 5xx, 429: retry after a backoff.
    #[error("{0}")]
    Retryable(String),
    /// 400: the database refuses these lines; retrying will not help.
    #[error("rejected lines (HTTP 400): {0}")]
    Rejected(String),
    /// 413: the batch is too large; split it.
    #[error("batch too large (HTTP 413)")]
    TooLarge,
    /// 401, 403, 404: configuration (token, org, bucket); keep buffering and retry slowly.
    #[error("database refused the write (HTTP {status}): {text}")]
    Refused { status: u16, text: String },
}

/// Where batches of line protocol go.
pub trait LineWriter: Send + Sync {
    fn write<'a>(
        &'a self,
        body: String,
    ) -> Pin<Box<dyn Future<Output = Result<(), WriteError>> + Send + 'a>>;
}

/// Writes through the `influxdb2` crate.
pub struct InfluxWriter {
    client: influxdb2::Client,
    org: String,
    bucket: String,
}

impl InfluxWriter {
    pub fn new(s: &InfluxSettings) -> Result<Self, String> {
        let http = reqwest011::Client::builder()
            .timeout(s.timeout)
            .connect_timeout(s.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(30));
        let client = influxdb2::ClientBuilder::with_builder(
            http,
            s.url.as_str(),
            s.org.clone(),
            s.token.0.clone(),
        )
        .build()
        .map_err(|e| format!("cannot build the InfluxDB client: {e}"))?;
        Ok(InfluxWriter {
            client,
            org: s.org.clone(),
            bucket: s.bucket.clone(),
        })
    }
}

fn classify(e: influxdb2::RequestError) -> WriteError {
    match e {
        influxdb2::RequestError::Http { status, text } => {
            let code = status.as_u16();
            let text: String = text.chars().take(300).collect();
            match code {
                400 => WriteError::Rejected(text),
                413 => WriteError::TooLarge,
                401 | 403 | 404 => WriteError::Refused { status: code, text },
                _ => WriteError::Retryable(format!("HTTP {code}: {text}")),
            }
        }
        other => WriteError::Retryable(other.to_string()),
    }
}

impl LineWriter for InfluxWriter {
    fn write<'a>(
        &'a self,
        body: String,
    ) -> Pin<Box<dyn Future<Output = Result<(), WriteError>> + Send + 'a>> {
        Box::pin(async move {
            self.client
                .write_line_protocol(&self.org, &self.bucket, body)
                .await
                .map_err(classify)
        })
    }
}
