//! A real InfluxDB 1.x engine (Debian's `influxdb` package, `influxd`) for the tests: it fixes
//! each field's type per measurement and shard, refuses a line that changes it (HTTP 400
//! "partial write: field type conflict"), and answers InfluxQL on `/query`, the language the
//! shipped Grafana dashboards use.
//!
//! Started on free ports (HTTP and the RPC/backup port) with its meta, data and WAL in a
//! temporary directory; stopped with SIGTERM on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::server::ServerProcess;
use super::{find_binary, free_port, tail};

const INFLUXD_MISSING: &str = "influxd not found: install InfluxDB 1.x with `apt-get install influxdb` (or run ./scripts/test.sh)";

/// An `influxd` 1.x on 127.0.0.1:<free port>.
pub struct InfluxDb1 {
    process: ServerProcess,
    binary: PathBuf,
    port: u16,
    rpc_port: u16,
    dir: TempDir,
    /// Admin credentials when started with authentication.
    auth: Option<(String, String)>,
    http: reqwest011::Client,
}

impl InfluxDb1 {
    /// Starts a fresh server without authentication and waits until `/ping` answers.
    pub async fn start() -> Self {
        Self::start_inner(None).await
    }

    /// Starts a server with `auth-enabled = true` and an admin user `user`/`password`.
    pub async fn start_with_auth(user: &str, password: &str) -> Self {
        Self::start_inner(Some((user.to_string(), password.to_string()))).await
    }

    async fn start_inner(auth: Option<(String, String)>) -> Self {
        let binary = find_binary("influxd", &["/usr/bin/influxd"])
            .unwrap_or_else(|| panic!("{INFLUXD_MISSING}"));
        let dir = tempfile::Builder::new()
            .prefix("facilityd-influxdb-")
            .tempdir()
            .expect("temp dir");
        let http = reqwest011::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let mut db = Self {
            process: ServerProcess::new("influxd", Duration::from_secs(30)),
            binary,
            port: 0,
            rpc_port: 0,
            dir,
            auth,
            http,
        };
        // free_port() races with other tests; retry on new ports if one was taken.
        for attempt in 0..3 {
            db.port = free_port();
            db.rpc_port = free_port();
            match db.spawn_and_wait().await {
                Ok(()) => break,
                Err(e) if attempt < 2 => eprintln!("influxd did not start ({e}); retrying"),
                Err(e) => panic!(
                    "influxd did not start: {e}\n--- log tail ---\n{}",
                    db.log_tail()
                ),
            }
        }
        if let Some((user, password)) = db.auth.clone() {
            // With authentication on and no user yet, InfluxDB takes this one statement
            // without credentials.
            let q =
                format!("CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES");
            db.query_raw(None, &q)
                .await
                .unwrap_or_else(|e| panic!("create the admin user: {e}"));
        }
        db
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("influxdb.conf")
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let conf = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"

[meta]
  dir = "{meta}"
  logging-enabled = false

[data]
  dir = "{data}"
  wal-dir = "{wal}"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = {auth}
  log-enabled = false
  pprof-enabled = false
  flux-enabled = false

[continuous_queries]
  enabled = false
"#,
            rpc = self.rpc_port,
            meta = d.join("meta").display(),
            data = d.join("data").display(),
            wal = d.join("wal").display(),
            port = self.port,
            auth = self.auth.is_some(),
        );
        std::fs::write(self.config_path(), conf).expect("write influxdb.conf");
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.write_config();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open influxd log");
        self.process.spawn(
            Command::new(&self.binary)
                .arg("-config")
                .arg(self.config_path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log fd"))
                .stderr(log),
        )?;
        let ping = format!("{}/ping", self.url());
        let http = &self.http;
        self.process
            .wait_ready(
                Duration::from_secs(60),
                "/ping did not answer",
                async || {
                    let answer = http.get(&ping).timeout(Duration::from_secs(2)).send().await;
                    answer.is_ok_and(|r| r.status().as_u16() == 204)
                },
            )
            .await
    }

    /// Base URL, e.g. `http://127.0.0.1:34567` (facilityd's `[influxdb] url`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("influxd.log")
    }

    /// The last 4 KiB of the server's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path(), 4096)
    }

    /// Runs an InfluxQL statement (POST `/query`, times as RFC 3339) and returns the JSON
    /// answer; `Err` with the status and body when the server refuses it, or with the
    /// statement's own `error` when it failed.
    pub async fn query_raw(&self, db: Option<&str>, q: &str) -> Result<Value, String> {
        let url = format!("{}/query", self.url());
        let mut form: Vec<(&str, &str)> = vec![("q", q)];
        if let Some(db) = db {
            form.push(("db", db));
        }
        let mut req = self.http.post(&url).form(&form);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        let json: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        let errors: Vec<String> = json["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["error"].as_str().map(str::to_string))
            .chain(json["error"].as_str().map(str::to_string))
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(json)
    }

    /// [`query_raw`](Self::query_raw) that panics on an error, with the log's tail.
    pub async fn query(&self, db: &str, q: &str) -> Value {
        match self.query_raw(Some(db), q).await {
            Ok(v) => v,
            Err(e) => panic!(
                "InfluxQL {q:?} on {db}: {e}\n--- log tail ---\n{}",
                self.log_tail()
            ),
        }
    }

    /// `CREATE DATABASE` (idempotent).
    pub async fn create_database(&self, db: &str) {
        self.query_raw(None, &format!("CREATE DATABASE \"{db}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {db}: {e}"));
    }

    /// The rows of the first series of the first statement's answer, as (column name ->
    /// value) maps; empty when there is no series.
    pub fn rows(answer: &Value) -> Vec<serde_json::Map<String, Value>> {
        let series = &answer["results"][0]["series"];
        let mut out = Vec::new();
        for s in series.as_array().into_iter().flatten() {
            let columns: Vec<&str> = s["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for row in s["values"].as_array().into_iter().flatten() {
                let mut m = serde_json::Map::new();
                for (c, v) in columns.iter().zip(row.as_array().into_iter().flatten()) {
                    m.insert(c.to_string(), v.clone());
                }
                out.push(m);
            }
        }
        out
    }

    /// `SHOW FIELD KEYS FROM "<measurement>"`: each field and its type (`float`, `integer`,
    /// `boolean`, `string`) as the engine fixed it.
    pub async fn field_types(&self, db: &str, measurement: &str) -> Vec<(String, String)> {
        let ans = self
            .query(db, &format!("SHOW FIELD KEYS FROM \"{measurement}\""))
            .await;
        Self::rows(&ans)
            .into_iter()
            .map(|r| {
                (
                    r["fieldKey"].as_str().unwrap_or_default().to_string(),
                    r["fieldType"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// `SELECT COUNT(*) FROM "<measurement>"`: per field, the points stored.
    pub async fn count(&self, db: &str, measurement: &str) -> Vec<(String, u64)> {
        let ans = self
            .query(db, &format!("SELECT COUNT(*) FROM \"{measurement}\""))
            .await;
        Self::rows(&ans)
            .into_iter()
            .flat_map(|r| {
                r.into_iter()
                    .filter(|(k, _)| k != "time")
                    .map(|(k, v)| {
                        (
                            k.trim_start_matches("count_").to_string(),
                            v.as_u64().unwrap_or(0),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// SIGTERM, then wait for the exit. Panics if it has not exited after 60 s.
    pub async fn stop(&mut self) {
        let log = self.log_path();
        self.process
            .stop(Duration::from_secs(60), || tail(&log, 4096))
            .await;
    }

    /// Stops it if running and starts it again on the same ports with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Err(e) = self.spawn_and_wait().await {
            panic!(
                "influxd did not restart on port {}: {e}\n--- log tail ---\n{}",
                self.port,
                self.log_tail()
            );
        }
    }
}
