//! A real Prometheus server (Debian's `prometheus` package) scraping one target, for the
//! PromQL of the gateway-health dashboard. Started on a free port with its TSDB in a temporary
//! directory; stopped with SIGTERM on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::{find_binary, free_port, send_signal, tail, wait_child_blocking};

const PROMETHEUS_MISSING: &str =
    "prometheus not found: install it with `apt-get install prometheus` (or run ./scripts/test.sh)";

pub struct Prometheus {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    http: reqwest011::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`, path `/metrics`) every second as job
    /// `facilityd`, and waits until it answers `/-/ready`.
    pub async fn start(target: &str) -> Self {
        let binary = find_binary("prometheus", &["/usr/bin/prometheus"])
            .unwrap_or_else(|| panic!("{PROMETHEUS_MISSING}"));
        let dir = tempfile::Builder::new()
            .prefix("facilityd-prometheus-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: facilityd\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let http = reqwest011::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        // free_port() can race with another test; a port taken meanwhile fails the start
        // with the reason in the log.
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let mut p = Prometheus {
            child: Some(child),
            port,
            dir,
            http,
        };
        if let Err(e) = p.wait_ready().await {
            panic!(
                "prometheus did not start: {e}\n--- log tail ---\n{}",
                p.log_tail()
            );
        }
        p
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/-/ready", self.url());
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exited with {status}"));
            }
            let ok = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if ok.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("/-/ready did not answer within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log_path(), 4096)
    }

    /// An instant query: the result vector, or the error Prometheus gave.
    pub async fn query(&self, q: &str) -> Result<Vec<Value>, String> {
        let url = format!("{}/api/v1/query", self.url());
        let resp = self
            .http
            .post(&url)
            .form(&[("query", q)])
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let json: Value =
            serde_json::from_str(&text).map_err(|e| format!("{status}: {e}: {text}"))?;
        if json["status"] != "success" {
            return Err(format!("{status}: {} {}", json["errorType"], json["error"]));
        }
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The values of `label` on the series `selector` matches (what Grafana's
    /// `label_values(selector, label)` variable asks).
    pub async fn label_values(&self, selector: &str, label: &str) -> Result<Vec<String>, String> {
        let url = format!("{}/api/v1/label/{label}/values", self.url());
        let resp = self
            .http
            .get(&url)
            .query(&[("match[]", selector)])
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if json["status"] != "success" {
            return Err(format!("{} {}", json["errorType"], json["error"]));
        }
        Ok(json["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Ok(None) = child.try_wait()
        {
            send_signal(&child, libc::SIGTERM);
            if wait_child_blocking(&mut child, Duration::from_secs(30)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
