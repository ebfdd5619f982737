//! The HTTP client of the commands that talk to the running daemon (`work-orders`,
//! `handover`): where the daemon is (`--url`, or `http.listen` of the config), its token
//! (`--token-file`, or `http.api_token_file`), and one request with the API's error message.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

/// The daemon to talk to.
pub struct Target {
    pub base: String,
    pub token: Option<String>,
}

/// From `-c/--config`, `--url` and `--token-file`.
pub fn target(
    config: Option<PathBuf>,
    url: Option<&str>,
    token_file: Option<PathBuf>,
) -> anyhow::Result<Target> {
    let path = crate::cli::config_path(config);
    let settings = match crate::settings::load(&path) {
        Ok(s) => Some(s),
        Err(e) if url.is_none() => {
            return Err(anyhow!(
                "{e}\n(give --url to reach the daemon without a valid config)"
            ));
        }
        Err(_) => None,
    };
    let base = match (url, &settings) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(s)) => format!("http://{}", s.http_listen),
        (None, None) => bail!("no --url and no config"),
    };
    let token_file =
        token_file.or_else(|| settings.as_ref().and_then(|s| s.api_token_file.clone()));
    let token = match token_file {
        Some(f) => Some(
            std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read the token file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    Ok(Target { base, token })
}

/// One request; the answer's body as text (an error status becomes an error with the API's
/// message).
pub async fn call_text(
    t: &Target,
    method: reqwest011::Method,
    path: &str,
    body: Option<Value>,
    timeout: Duration,
) -> anyhow::Result<String> {
    let client = reqwest011::Client::builder().timeout(timeout).build()?;
    let mut req = client.request(method, format!("{}{path}", t.base));
    if let Some(tok) = &t.token {
        req = req.bearer_auth(tok);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {}", t.base))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        let msg = value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(text);
        bail!(
            "{} {}: {msg}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
    }
    Ok(text)
}

/// One request whose answer is JSON (10 s timeout).
pub async fn call(
    t: &Target,
    method: reqwest011::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let text = call_text(t, method, path, body, Duration::from_secs(10)).await?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}
