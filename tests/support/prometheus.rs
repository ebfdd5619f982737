//! A real Prometheus server (Debian's `prometheus` package) scraping one target, for the
//! PromQL of the gateway-health dashboard. Started on a free port with its TSDB in a temporary
//! directory; stopped with SIGTERM on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::server::ServerProcess;
use super::{find_binary, free_port, tail};

const PROMETHEUS_MISSING: &str =
    "prometheus not found: install it with `apt-get install prometheus` (or run ./scripts/test.sh)";

pub struct Prometheus {
    process: ServerProcess,
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
        let mut process = ServerProcess::new("prometheus", Duration::from_secs(30));
        let spawned = process.spawn(
            Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log fd"))
                .stderr(log),
        );
        let mut p = Prometheus {
            process,
            port,
            dir,
            http,
        };
        let ready = format!("{}/-/ready", p.url());
        let started = match spawned {
            Err(e) => Err(e),
            Ok(()) => {
                let http = &p.http;
                p.process
                    .wait_ready(
                        Duration::from_secs(60),
                        "/-/ready did not answer",
                        async || {
                            http.get(&ready)
                                .timeout(Duration::from_secs(2))
                                .send()
                                .await
                                .is_ok_and(|r| r.status().is_success())
                        },
                    )
                    .await
            }
        };
        if let Err(e) = started {
            panic!(
                "prometheus did not start: {e}\n--- log tail ---\n{}",
                p.log_tail()
            );
        }
        p
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
