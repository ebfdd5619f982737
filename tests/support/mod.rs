//! Shared harness for facilityd's integration tests: real servers, started by the
//! test on free ports with temporary data directories, stopped when done.
//!
//! Every test file that needs it says `mod support;`. All of it is async and meant
//! for `#[tokio::test(flavor = "multi_thread")]`; the `Drop` impls block briefly
//! (they must stop a process), which a multi-thread runtime tolerates.
//!
//! - [`VictoriaMetrics`]: the database (InfluxDB v2 write API, `/api/v1/export`).
//! - [`PyModbusServer`]: an independent Modbus TCP server (pymodbus, a separate
//!   process) serving a sparse register map, logging every request it receives.
//! - [`Daemon`]: the facilityd binary (or any binary) as a child process.
//! - [`Mosquitto`]: the MQTT broker, with persistence, stoppable and restartable on its port.
//! - [`pty::PtyPair`]: two pseudo-terminals joined by socat, a serial line for RTU tests.
//! - [`influxdb::InfluxDb1`]: a real InfluxDB 1.x engine (field types enforced, InfluxQL).
//! - [`prometheus::Prometheus`]: a real Prometheus scraping the daemon's `/metrics` (PromQL).
//! - [`browser`]: a real headless chromium: the DOM, console errors and a screenshot of a page.
//!
//! A missing server binary or Python package fails the test with a message saying
//! how to install it (`./scripts/test.sh` installs everything); nothing is skipped.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};

pub mod browser;
pub mod influxdb;
pub mod prometheus;
pub mod pty;
pub mod server;

use server::ServerProcess;

/// How often the `wait_*` helpers poll.
const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// Ports, files, processes
// ---------------------------------------------------------------------------

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 and released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Polls until a TCP connection to `addr` succeeds; false when `timeout` passes first.
pub async fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        );
        if let Ok(Ok(_)) = attempt.await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The crate's root directory (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The whole content of a file, lossily decoded; empty when it does not exist.
pub fn read_text(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `max_bytes` of a file (for failure messages).
pub fn tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no file {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sends `signal` (a `libc::SIG*`) to a child process.
pub fn send_signal(child: &Child, signal: i32) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Polls `try_wait` without blocking the runtime; None when `timeout` passes first.
pub async fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends SIGTERM to the server in `slot` (if running) and waits up to `within` for it to exit.
/// `Err(within)` when it did not: the child is put back for its `Drop` to kill.
pub async fn sigterm_and_wait(slot: &mut Option<Child>, within: Duration) -> Result<(), Duration> {
    let Some(mut child) = slot.take() else {
        return Ok(());
    };
    if child.try_wait().expect("try_wait").is_some() {
        return Ok(());
    }
    send_signal(&child, libc::SIGTERM);
    if wait_child(&mut child, within).await.is_none() {
        *slot = Some(child);
        return Err(within);
    }
    Ok(())
}

/// Blocking variant of [`wait_child`] for `Drop`.
fn wait_child_blocking(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `name` as an absolute path: the given candidates first, then `$PATH`.
fn find_binary(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(on_path)
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// VictoriaMetrics
// ---------------------------------------------------------------------------

/// One series from `/api/v1/export`.
///
/// Line protocol `m,tag=a f=1i` becomes the metric `m_f` with label `tag="a"`
/// (`__name__` is `<measurement>_<field>`); see tests/harness.rs for the value
/// mapping (bool -> 1/0, string -> 0, timestamps in ms).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSeries {
    /// All labels, including `__name__`.
    pub metric: BTreeMap<String, String>,
    pub values: Vec<f64>,
    /// Milliseconds since the epoch (VictoriaMetrics cuts line-protocol ns to ms).
    pub timestamps: Vec<i64>,
}

impl ExportedSeries {
    /// The metric name (`<measurement>_<field>` for line protocol).
    pub fn name(&self) -> &str {
        self.metric
            .get("__name__")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// A label's value (a line-protocol tag).
    pub fn label(&self, key: &str) -> Option<&str> {
        self.metric.get(key).map(String::as_str)
    }

    /// The labels other than `__name__`.
    pub fn labels(&self) -> BTreeMap<&str, &str> {
        self.metric
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// (timestamp ms, value) pairs, in the order exported (ascending time).
    pub fn points(&self) -> Vec<(i64, f64)> {
        self.timestamps
            .iter()
            .copied()
            .zip(self.values.iter().copied())
            .collect()
    }

    pub fn last_value(&self) -> Option<f64> {
        self.values.last().copied()
    }

    fn parse(line: &str) -> Result<Self, String> {
        let json: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let metric = json["metric"]
            .as_object()
            .ok_or_else(|| format!("no metric object: {line}"))?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let values = json["values"]
            .as_array()
            .ok_or_else(|| format!("no values: {line}"))?
            .iter()
            .map(|v| match v {
                Value::Number(n) => n.as_f64().ok_or_else(|| format!("bad value {v}")),
                // VictoriaMetrics writes special values as strings
                Value::String(s) => match s.as_str() {
                    "NaN" => Ok(f64::NAN),
                    "Inf" | "+Inf" => Ok(f64::INFINITY),
                    "-Inf" => Ok(f64::NEG_INFINITY),
                    other => other.parse().map_err(|_| format!("bad value {v}")),
                },
                _ => Err(format!("bad value {v}")),
            })
            .collect::<Result<_, _>>()?;
        let timestamps = json["timestamps"]
            .as_array()
            .ok_or_else(|| format!("no timestamps: {line}"))?
            .iter()
            .map(|t| t.as_i64().ok_or_else(|| format!("bad timestamp {t}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            metric,
            values,
            timestamps,
        })
    }
}

/// Finds the series named `name` whose labels include all of `labels`.
pub fn find_series<'a>(
    series: &'a [ExportedSeries],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a ExportedSeries> {
    series
        .iter()
        .find(|s| s.name() == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
}

const VM_MISSING: &str = "victoria-metrics not found: install it with `apt-get install victoria-metrics` (or run ./scripts/test.sh)";

/// A VictoriaMetrics single-node server on 127.0.0.1:<free port>, with its data in a
/// temporary directory that is removed on drop.
///
/// Flags: `-retentionPeriod=100y` (old timestamps are kept), `-dedup.minScrapeInterval=1ms`
/// (a point written again with the same series and timestamp replaces the old one, like
/// InfluxDB), `-search.latencyOffset=0s`, `-search.disableCache`.
///
/// Visibility: an acknowledged write becomes visible to export after up to about one
/// second (VictoriaMetrics 1.79 flushes its pending rows on a 1 s tick, which
/// `/internal/force_flush` does not shorten). A NEW series needs the force_flush as well
/// (its index entries): without it, it shows up only after about 10 s;
/// [`VictoriaMetrics::export`] always flushes first. So never export once and assert:
/// use [`VictoriaMetrics::wait_for_series`], or [`VictoriaMetrics::sync`] before checking
/// that something is absent.
///
/// Stop it with [`VictoriaMetrics::stop`] (SIGTERM, then wait): it loses acknowledged
/// writes on SIGKILL.
pub struct VictoriaMetrics {
    process: ServerProcess,
    binary: PathBuf,
    port: u16,
    dir: TempDir,
    extra_args: Vec<String>,
    http: reqwest011::Client,
    sync_seq: AtomicU64,
}

impl VictoriaMetrics {
    /// Starts a fresh server and waits until `/health` answers. Panics (with the log's
    /// tail) when it does not come up within 60 s.
    pub async fn start() -> Self {
        Self::start_with_args(&[]).await
    }

    /// Like [`start`](Self::start), with extra command-line flags.
    pub async fn start_with_args(extra_args: &[&str]) -> Self {
        let binary = find_binary("victoria-metrics", &["/usr/bin/victoria-metrics"])
            .unwrap_or_else(|| panic!("{VM_MISSING}"));
        let dir = tempfile::Builder::new()
            .prefix("facilityd-vm-")
            .tempdir()
            .expect("temp dir");
        let http = reqwest011::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let mut vm = Self {
            process: ServerProcess::new("victoria-metrics", Duration::from_secs(30)),
            binary,
            port: 0,
            dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            http,
            sync_seq: AtomicU64::new(0),
        };
        // free_port() races with other tests; retry on a new port if it was taken.
        for attempt in 0..3 {
            vm.port = free_port();
            match vm.spawn_and_wait().await {
                Ok(()) => return vm,
                Err(e) if attempt < 2 => {
                    eprintln!("victoria-metrics did not start ({e}); retrying")
                }
                Err(e) => panic!(
                    "victoria-metrics did not start: {e}\n--- log tail ---\n{}",
                    vm.log_tail()
                ),
            }
        }
        unreachable!()
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open victoria-metrics log");
        let mut cmd = Command::new(&self.binary);
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.data_dir().display()))
            .arg("-retentionPeriod=100y")
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log);
        self.process.spawn(&mut cmd)?;
        let health = format!("{}/health", self.url());
        let http = &self.http;
        self.process
            .wait_ready(
                Duration::from_secs(60),
                "/health did not answer",
                async || {
                    let answer = http
                        .get(&health)
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await;
                    answer.is_ok_and(|resp| resp.status().is_success())
                },
            )
            .await
    }

    /// Base URL, e.g. `http://127.0.0.1:34567` (the InfluxDB `url` for facilityd).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The `-storageDataPath` (kept across [`restart`](Self::restart)).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's stdout+stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("victoria-metrics.log")
    }

    /// The last 4 KiB of the server's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path(), 4096)
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// `GET /internal/force_flush`: makes new series searchable at once (else ~10 s);
    /// the rows themselves still become visible on VictoriaMetrics' 1 s flush tick.
    pub async fn force_flush(&self) {
        let url = format!("{}/internal/force_flush", self.url());
        let resp =
            self.http.get(&url).send().await.unwrap_or_else(|e| {
                panic!("GET {url}: {e}\n--- log tail ---\n{}", self.log_tail())
            });
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    }

    /// POSTs line protocol to `/api/v2/write?org=test&bucket=test&precision=ns` (as an
    /// InfluxDB v2 client would) and asserts 204.
    pub async fn write_line_protocol(&self, body: &str) {
        let url = format!(
            "{}/api/v2/write?org=test&bucket=test&precision=ns",
            self.url()
        );
        let resp = self
            .http
            .post(&url)
            .header("Authorization", "Token test")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status.as_u16(), 204, "POST {url}: {status} {text}");
    }

    /// `/api/v1/export?match[]=<selector>` over all time (after a force_flush): every
    /// matching series, sorted by name and labels. Selector examples: `m_f`,
    /// `{__name__=~"elevator_.*",asset="EL-A1"}`.
    pub async fn export(&self, selector: &str) -> Vec<ExportedSeries> {
        self.force_flush().await;
        let url = format!("{}/api/v1/export", self.url());
        // end: a day ahead, so points stamped slightly in the future are included
        let end_ms = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            + 86_400_000)
            .to_string();
        let resp = self
            .http
            .get(&url)
            .query(&[
                ("match[]", selector),
                ("start", "0"),
                ("end", end_ms.as_str()),
            ])
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}\n--- log tail ---\n{}", self.log_tail()));
        let status = resp.status();
        let text = resp.text().await.expect("export body");
        assert!(status.is_success(), "export {selector}: {status}: {text}");
        let mut series: Vec<ExportedSeries> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| ExportedSeries::parse(l).unwrap_or_else(|e| panic!("export line: {e}")))
            .collect();
        series.sort_by(|a, b| a.metric.cmp(&b.metric));
        series
    }

    /// Polls [`export`](Self::export) until `predicate` holds or `timeout` passes;
    /// returns the last result either way (the test asserts on it).
    pub async fn wait_for_series(
        &self,
        selector: &str,
        predicate: impl Fn(&[ExportedSeries]) -> bool,
        timeout: Duration,
    ) -> Vec<ExportedSeries> {
        let deadline = Instant::now() + timeout;
        loop {
            let series = self.export(selector).await;
            if predicate(&series) || Instant::now() >= deadline {
                return series;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A barrier: writes a marker point (metric `facilityd_harness_sync_seq`) and waits
    /// until it is exported, so that writes acknowledged before this call are visible
    /// (they were pending in the same flush cycle or an earlier one). Use it before
    /// asserting that something was NOT written. Panics after 30 s.
    pub async fn sync(&self) {
        let seq = self.sync_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let marker = format!("facilityd_harness_sync seq={seq}");
        self.write_line_protocol(&marker).await;
        let found = self
            .wait_for_series(
                "facilityd_harness_sync_seq",
                |s| s.iter().any(|s| s.values.contains(&(seq as f64))),
                Duration::from_secs(30),
            )
            .await;
        assert!(
            found.iter().any(|s| s.values.contains(&(seq as f64))),
            "sync marker {seq} not exported within 30 s\n--- log tail ---\n{}",
            self.log_tail()
        );
        // One more flush tick: the marker may have sat in a shard flushed before an
        // older write's shard.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    /// SIGTERM, then wait for the exit (VictoriaMetrics flushes on SIGTERM). Never SIGKILL.
    /// Panics if it has not exited after 60 s. No-op when not running.
    pub async fn stop(&mut self) {
        let log = self.log_path();
        self.process
            .stop(Duration::from_secs(60), || tail(&log, 4096))
            .await;
    }

    /// Stops it (SIGTERM) if running, and starts it again on the same port with the same
    /// data directory: for database-outage tests.
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Err(e) = self.spawn_and_wait().await {
            panic!(
                "victoria-metrics did not restart on port {}: {e}\n--- log tail ---\n{}",
                self.port,
                self.log_tail()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// pymodbus server
// ---------------------------------------------------------------------------

static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The Python that has pymodbus: `$PYMODBUS_PYTHON`, else
/// `target/test-venv/bin/python` (both set up by ./scripts/test.sh).
pub fn test_python() -> PathBuf {
    PYTHON
        .get_or_init(|| {
            let mut candidates = Vec::new();
            if let Some(p) = std::env::var_os("PYMODBUS_PYTHON") {
                candidates.push(PathBuf::from(p));
            }
            candidates.push(repo_root().join("target/test-venv/bin/python"));
            let mut tried = Vec::new();
            for python in candidates {
                let ok = Command::new(&python)
                    .args(["-c", "import pymodbus"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    return Ok(python);
                }
                tried.push(python.display().to_string());
            }
            Err(format!(
                "no Python with pymodbus (tried {}): run ./scripts/test.sh to install pymodbus",
                tried.join(", ")
            ))
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One request as logged by the pymodbus server.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusRequest {
    /// Seconds since the epoch when the request frame was decoded.
    pub t: f64,
    pub unit: u8,
    /// Function code: 1 coils, 2 discrete inputs, 3 holding, 4 input registers,
    /// 5/6/15/16 writes.
    pub fc: u8,
    /// 0-based wire address.
    pub address: u16,
    pub count: u16,
    /// The exception code the server refused the read with for its function code or its
    /// count (the protocol's limits or the unit's `max_registers`, `even_count`,
    /// `functions`), before looking at any address; `None`: not refused for those.
    pub refused: Option<u8>,
}

impl ModbusRequest {
    pub fn is_read(&self) -> bool {
        matches!(self.fc, 1..=4)
    }
    pub fn is_write(&self) -> bool {
        matches!(self.fc, 5 | 6 | 15 | 16 | 22 | 23)
    }
}

/// An independent Modbus TCP server (tests/fixtures/pymodbus_server.py, pymodbus 3.8.6)
/// in its own process, serving a sparse register map. The spec:
///
/// ```json
/// {"missing_units": "silent", "framer": "socket",
///  "units": {"1": {"holding": {"0": 1234}, "input": {"10": 7},
///                  "coils": {"0": true}, "discrete": {"3": false},
///                  "mode": "normal", "delay_ms": 0},
///            "2": {...}}}
/// ```
///
/// Addresses are 0-based wire addresses. An address not listed answers exception 2
/// (ILLEGAL DATA ADDRESS), also inside a longer read. A unit id not listed gets no
/// answer (`"missing_units": "exception"` makes it answer 0x0B instead). `mode`:
/// `normal`, `silent` (no answer), `exception:N` (every request answers code N);
/// `delay_ms` delays each answer. All of these can be changed while it runs (`set_*`).
/// Device-model limits per unit: `"max_registers": 80` and `"even_count": true` refuse
/// longer and odd-count register reads with exception 3, `"functions": [3]` refuses the
/// other read function codes with exception 1 (see [`ModbusRequest::refused`]).
/// `"framer": "rtu"` serves RTU frames (with CRC) over TCP instead of Modbus TCP, like a
/// serial device server (`rtu+tcp://` in facilityd). `"serial": "/dev/pts/N"` (with
/// `"baud"`, `"parity"`, `"stopbits"`) serves the units as RTU slaves on that serial line
/// instead, with pymodbus' serial server: several unit ids on one bus (then `port()` is 0).
/// RTU modes: `garbled` (one byte of each reply flipped: the CRC fails) and `wrong_unit:N`
/// (replies sent as unit N).
///
/// Every request frame received is logged once (unit, function code, address, count),
/// whatever the answer: [`requests`](Self::requests).
pub struct PyModbusServer {
    child: tokio::process::Child,
    port: u16,
    dir: TempDir,
    control: tokio::sync::Mutex<(ChildStdin, Lines<BufReader<ChildStdout>>)>,
}

impl PyModbusServer {
    /// Starts it on a port it picks itself (or the spec's `"port"`), waits for READY.
    pub async fn start(spec: &Value) -> Self {
        let port = spec.get("port").and_then(Value::as_u64).unwrap_or(0) as u16;
        Self::start_on(port, spec).await
    }

    /// Starts it on `port` (0: any free port), e.g. to bring a device back on the port
    /// the gateway is configured for.
    pub async fn start_on(port: u16, spec: &Value) -> Self {
        let python = test_python();
        let script = repo_root().join("tests/fixtures/pymodbus_server.py");
        let dir = tempfile::Builder::new()
            .prefix("facilityd-modbus-")
            .tempdir()
            .expect("temp dir");
        let spec_path = dir.path().join("spec.json");
        std::fs::write(&spec_path, serde_json::to_vec_pretty(spec).unwrap()).expect("write spec");
        let log_path = dir.path().join("requests.jsonl");
        std::fs::write(&log_path, b"").expect("create request log");
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr log");

        let mut child = tokio::process::Command::new(&python)
            .arg(&script)
            .arg("--spec")
            .arg(&spec_path)
            .arg("--port")
            .arg(port.to_string())
            .arg("--log")
            .arg(&log_path)
            .arg("--control")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} {}: {e}", python.display(), script.display()));
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

        let stderr_path = dir.path().join("stderr.log");
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let port = match ready {
            Ok(Ok(Some(line))) if line.starts_with("READY ") => line
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u16>().ok())
                .unwrap_or_else(|| panic!("bad READY line from pymodbus server: {line}")),
            other => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                panic!(
                    "pymodbus server did not start ({other:?})\n--- stderr ---\n{}",
                    tail(&stderr_path, 4096)
                );
            }
        };
        let server = Self {
            child,
            port,
            dir,
            control: tokio::sync::Mutex::new((stdin, lines)),
        };
        // A serial server has no port to knock on: READY means its line is open.
        if spec.get("serial").is_none() {
            assert!(
                wait_for_tcp(server.addr(), Duration::from_secs(10)).await,
                "pymodbus server said READY but {} does not accept",
                server.addr()
            );
        }
        server
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `tcp://127.0.0.1:<port>`, the `modbus.url` for facilityd's config.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub fn request_log_path(&self) -> PathBuf {
        self.dir.path().join("requests.jsonl")
    }

    /// The server's stderr (pymodbus' own log; `--verbose` is off).
    pub fn stderr(&self) -> String {
        read_text(&self.dir.path().join("stderr.log"))
    }

    /// Every request received so far, in order of arrival. The log line is written and
    /// flushed before the request is answered, so a request whose answer the client
    /// has seen is always in it.
    pub fn requests(&self) -> Vec<ModbusRequest> {
        read_text(&self.request_log_path())
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("request log line {l:?}: {e}"));
                ModbusRequest {
                    t: v["t"].as_f64().unwrap_or(0.0),
                    unit: v["unit"].as_u64().unwrap_or(0) as u8,
                    fc: v["fc"].as_u64().unwrap_or(0) as u8,
                    address: v["address"].as_u64().unwrap_or(0) as u16,
                    count: v["count"].as_u64().unwrap_or(0) as u16,
                    refused: v["refused"].as_u64().map(|c| c as u8),
                }
            })
            .collect()
    }

    /// Polls [`requests`](Self::requests) until `predicate` holds or `timeout` passes;
    /// returns the last result either way.
    pub async fn wait_for_requests(
        &self,
        predicate: impl Fn(&[ModbusRequest]) -> bool,
        timeout: Duration,
    ) -> Vec<ModbusRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if predicate(&requests) || Instant::now() >= deadline {
                return requests;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends one control command (see the script's docs) and waits for its answer.
    pub async fn command(&self, command: Value) -> Result<(), String> {
        let mut guard = self.control.lock().await;
        let (stdin, lines) = &mut *guard;
        let mut line = serde_json::to_string(&command).unwrap();
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("write command: {e}"))?;
        stdin
            .flush()
            .await
            .map_err(|e| format!("flush command: {e}"))?;
        let answer = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .map_err(|_| "no answer to command within 10 s".to_string())?
            .map_err(|e| format!("read answer: {e}"))?
            .ok_or_else(|| format!("server exited\n--- stderr ---\n{}", self.stderr()))?;
        if answer == "OK" { Ok(()) } else { Err(answer) }
    }

    async fn command_ok(&self, command: Value) {
        let text = command.to_string();
        if let Err(e) = self.command(command).await {
            panic!("pymodbus server command {text}: {e}");
        }
    }

    /// Sets (or adds) registers `address..` of `table` (`holding` or `input`) of `unit`.
    pub async fn set_registers(&self, unit: u8, table: &str, address: u16, values: &[u16]) {
        self.command_ok(serde_json::json!({
            "cmd": "set", "unit": unit, "table": table, "address": address, "values": values
        }))
        .await
    }

    /// Sets (or adds) bits `address..` of `table` (`coils` or `discrete`) of `unit`.
    pub async fn set_bits(&self, unit: u8, table: &str, address: u16, values: &[bool]) {
        self.command_ok(serde_json::json!({
            "cmd": "set", "unit": unit, "table": table, "address": address, "values": values
        }))
        .await
    }

    /// Removes addresses (they answer ILLEGAL DATA ADDRESS from now on).
    pub async fn remove(&self, unit: u8, table: &str, address: u16, count: u16) {
        self.command_ok(serde_json::json!({
            "cmd": "remove", "unit": unit, "table": table, "address": address, "count": count
        }))
        .await
    }

    /// `normal`, `silent`, `exception:N`, or on RTU framing `garbled`, `wrong_unit:N`.
    pub async fn set_mode(&self, unit: u8, mode: &str) {
        self.command_ok(serde_json::json!({"cmd": "mode", "unit": unit, "mode": mode}))
            .await
    }

    /// Delays every answer of `unit` (with data) by `delay`.
    pub async fn set_delay(&self, unit: u8, delay: Duration) {
        self.command_ok(
            serde_json::json!({"cmd": "delay", "unit": unit, "ms": delay.as_millis() as u64}),
        )
        .await
    }

    /// Kills the server (the device disappears: connections are reset).
    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

// Drop: kill_on_drop(true) kills the process; it also exits by itself when its stdin
// closes, so it never outlives the test process.

// ---------------------------------------------------------------------------
// A binary under test
// ---------------------------------------------------------------------------

static DAEMON_SEQ: AtomicU64 = AtomicU64::new(0);

/// A binary (normally `env!("CARGO_BIN_EXE_facilityd")`) run as a child process, its
/// stdout and stderr captured to files in a temporary directory.
///
/// The child gets this process's environment WITHOUT any inherited `FACILITYD_*`
/// variable (facilityd reads `FACILITYD_<SECTION>__<KEY>` as config and rejects unknown
/// keys: a developer's stray `FACILITYD_*` would break the test), plus `env`.
///
/// On drop, a still-running child is killed with SIGKILL and reaped.
pub struct Daemon {
    child: Option<Child>,
    dir: TempDir,
    status: Option<ExitStatus>,
    bin: String,
}

impl Daemon {
    /// Starts `bin args...` with `env` added, in the current directory.
    pub fn start(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(bin, args, env, None)
    }

    /// Like [`start`](Self::start), in working directory `cwd`.
    pub fn start_in(cwd: &Path, bin: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(bin, args, env, Some(cwd))
    }

    fn spawn(bin: &str, args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Self {
        let n = DAEMON_SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::Builder::new()
            .prefix(&format!("facilityd-daemon-{n}-"))
            .tempdir()
            .expect("temp dir");
        let stdout = File::create(dir.path().join("stdout.log")).expect("stdout file");
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr file");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FACILITYD_") {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(env.iter().copied());
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        Self {
            child: Some(child),
            dir,
            status: None,
            bin: bin.to_string(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("stdout.log")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_text(&self.stdout_path())
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_text(&self.stderr_path())
    }

    /// Both, labelled, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- stderr ---\n{}",
            self.bin,
            self.stdout(),
            self.stderr()
        )
    }

    /// Polls stdout+stderr until `needle` appears; false when `timeout` passes first or
    /// the process exits without printing it.
    pub async fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return true;
            }
            if !self.is_running() {
                // it may have printed it just before exiting
                return self.stdout().contains(needle) || self.stderr().contains(needle);
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// The exit status once it has exited (reaps it), else None.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.status = child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Sends a signal (`libc::SIGHUP`, ...); no-op when it has exited.
    pub fn signal(&mut self, signal: i32) {
        if self.is_running() {
            send_signal(self.child.as_ref().unwrap(), signal);
        }
    }

    pub fn sigterm(&mut self) {
        self.signal(libc::SIGTERM)
    }

    /// SIGTERM, then asserts that it exits successfully within `within` (its output in the
    /// failure message).
    pub async fn stop_cleanly(&mut self, within: Duration) {
        self.sigterm();
        let status = self.wait_with_timeout(within).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "no clean stop ({status:?}):\n{}",
            self.output()
        );
    }

    pub fn sighup(&mut self) {
        self.signal(libc::SIGHUP)
    }

    /// Waits (without blocking the runtime) for the exit; None when `timeout` passes first.
    pub async fn wait_with_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_status() {
            return Some(status);
        }
        let child = self.child.as_mut()?;
        self.status = wait_child(child, timeout).await;
        self.status
    }

    /// SIGKILL and reap (a crash, for durability tests). Returns the exit status.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(status) = self.try_status() {
            return status;
        }
        let child = self.child.as_mut().unwrap();
        send_signal(child, libc::SIGKILL);
        let status = child.wait().expect("wait after SIGKILL");
        self.status = Some(status);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Mosquitto
// ---------------------------------------------------------------------------

const MOSQUITTO_MISSING: &str =
    "mosquitto not found: install it with apt-get install mosquitto (or run ./scripts/test.sh)";

/// A Mosquitto broker on 127.0.0.1:<free port>, with its own config file and a persistent
/// store in a temporary directory (removed on drop):
///
/// ```text
/// listener PORT 127.0.0.1
/// allow_anonymous true
/// persistence true
/// persistence_location DIR/
/// max_queued_messages 1000000     (the default 1000 would drop a long outage's backlog)
/// max_inflight_messages 100
/// ```
///
/// [`stop`](Self::stop) sends SIGTERM and waits (Mosquitto saves its store on the way out), so
/// [`restart`](Self::restart) on the same port brings back the persistent sessions and the
/// QoS 1 messages queued for them.
pub struct Mosquitto {
    process: ServerProcess,
    binary: PathBuf,
    port: u16,
    dir: TempDir,
    /// Appended to the config file (more listeners, TLS settings).
    extra: String,
}

impl Mosquitto {
    /// Starts a fresh broker and waits until it accepts connections. Panics with the log's
    /// tail when it does not come up within 10 s.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Like [`start`](Self::start), with `extra` appended to the config file (for example a
    /// second `listener` with `cafile`, `certfile`, `keyfile`).
    pub async fn start_with(extra: &str) -> Self {
        let binary = find_binary("mosquitto", &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"])
            .unwrap_or_else(|| panic!("{MOSQUITTO_MISSING}"));
        let dir = tempfile::Builder::new()
            .prefix("facilityd-mosquitto-")
            .tempdir()
            .expect("temp dir");
        let mut m = Self {
            process: ServerProcess::new("mosquitto", Duration::from_secs(10)),
            binary,
            port: 0,
            dir,
            extra: extra.to_string(),
        };
        // free_port() races with other tests; retry on a new port if it was taken.
        for attempt in 0..3 {
            m.port = free_port();
            match m.spawn_and_wait().await {
                Ok(()) => return m,
                Err(e) if attempt < 2 => eprintln!("mosquitto did not start ({e}); retrying"),
                Err(e) => panic!(
                    "mosquitto did not start: {e}\n--- log tail ---\n{}",
                    m.log_tail()
                ),
            }
        }
        unreachable!()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {dir}/\n\
             max_queued_messages 1000000\nmax_inflight_messages 100\nlog_dest file {log}\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\n# keep root's rights on the temp dir when run as root\nuser root\n{extra}\n",
            port = self.port,
            dir = self.dir.path().display(),
            log = self.log_path().display(),
            extra = self.extra,
        );
        std::fs::write(self.config_path(), conf).expect("write mosquitto.conf");
        self.process.spawn(
            Command::new(&self.binary)
                .arg("-c")
                .arg(self.config_path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let addr = self.addr();
        self.process
            .wait_ready(Duration::from_secs(10), "no listener", async || {
                wait_for_tcp(addr, Duration::from_millis(200)).await
            })
            .await
    }

    /// `mqtt://127.0.0.1:PORT`: the `[mqtt] url` for facilityd.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// A directory for files the broker's config refers to (certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last 4 KiB of the broker's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path(), 4096)
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGTERM, then wait for the exit (it saves its store). Panics after 30 s. No-op when
    /// not running.
    pub async fn stop(&mut self) {
        let log = self.log_path();
        self.process
            .stop(Duration::from_secs(30), || tail(&log, 4096))
            .await;
    }

    /// Stops it (SIGTERM) if running and starts it again on the same port with the same
    /// store: for broker-outage tests. Retries for a few seconds while the port is in
    /// TIME_WAIT.
    pub async fn restart(&mut self) {
        self.stop().await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("mosquitto did not restart yet ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!(
                    "mosquitto did not restart on port {}: {e}\n--- log tail ---\n{}",
                    self.port,
                    self.log_tail()
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Expected values
// ---------------------------------------------------------------------------

/// The value the database must hold for a point, computed from the simulator's raw
/// registers with plain arithmetic (not the gateway's decoder). `None`: not written
/// (sentinel) or not comparable (strings are stored as 0 by VictoriaMetrics).
pub fn expected_from_registers(
    sim: &facilityd::sim::SimHandle,
    port: usize,
    unit: u8,
    p: &facilityd::profile::Point,
) -> Option<Option<f64>> {
    let r = p.register.as_ref()?;
    let regs = sim
        .registers(port, unit, r.kind, r.address, r.count)
        .unwrap();
    let raw: f64 = match (regs, r.data_type) {
        (facilityd::sim::Registers::Bits(b), _) => return Some(Some(if b[0] { 1.0 } else { 0.0 })),
        (facilityd::sim::Registers::Words(w), facilityd::profile::DataType::Bool) => {
            return Some(Some(f64::from((w[0] >> r.bit.unwrap()) & 1)));
        }
        (facilityd::sim::Registers::Words(w), facilityd::profile::DataType::U16) => {
            let v = i64::from(w[0]);
            if p.transform.na.iter().any(|&(a, b)| (a..=b).contains(&v)) {
                return Some(None);
            }
            f64::from(w[0])
        }
        (facilityd::sim::Registers::Words(w), facilityd::profile::DataType::I16) => {
            let v = w[0] as i16;
            if p.transform
                .na
                .iter()
                .any(|&(a, b)| (a..=b).contains(&i64::from(v)))
            {
                return Some(None);
            }
            f64::from(v)
        }
        (facilityd::sim::Registers::Words(w), facilityd::profile::DataType::U32) => {
            f64::from((u32::from(w[0]) << 16) | u32::from(w[1]))
        }
        (_, t) => panic!("test does not model {t:?}"),
    };
    if p.transform.map.is_some() {
        return None; // a string field: VictoriaMetrics stores 0
    }
    Some(Some(raw * p.transform.scale + p.transform.offset))
}

/// Equal as VictoriaMetrics can tell: it keeps floats as decimals of about 15 significant
/// digits (0.30000000000000004 comes back as 0.3), so the last bits of a scaled float may go.
/// Integers, bools and unscaled values stay exact.
pub fn same(got: f64, want: f64) -> bool {
    got == want || (got - want).abs() <= 1e-12 * want.abs().max(1.0)
}

// ---------------------------------------------------------------------------
// The gateway in this process
// ---------------------------------------------------------------------------

/// A gateway running in the test's process (`facilityd::gateway::Gateway::run`).
pub struct Running {
    pub gw: facilityd::gateway::Gateway,
    pub stop: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops it and asserts it ended cleanly.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// Base URL of its HTTP API.
    pub fn api(&self) -> String {
        format!("http://{}", self.gw.api_addr.get().expect("API bound"))
    }
}

/// Loads `path` and runs the gateway until [`Running::stop`]; returns once it is ready.
pub async fn start_gateway(path: &std::path::Path) -> Running {
    let settings = facilityd::settings::load_with_env(path, Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let gw = facilityd::gateway::Gateway::new(settings);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let (gw, stop) = (gw.clone(), stop.clone());
        async move { gw.run(stop, Default::default()).await }
    });
    let t0 = Instant::now();
    while !gw.ready.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "gateway did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Running { gw, stop, task }
}

/// A device of `facilityd simulate`'s listing.
pub struct SimDevice {
    pub addr: String,
    pub unit: u8,
    pub device_type: String,
    pub name: String,
}

pub fn sim_listing(output: &str) -> Vec<SimDevice> {
    output
        .lines()
        .skip_while(|l| !l.starts_with("ADDRESS"))
        .skip(1)
        .map_while(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 4 {
                return None;
            }
            Some(SimDevice {
                addr: f[0].to_string(),
                unit: f[1].parse().ok()?,
                device_type: f[2].to_string(),
                name: f[3].to_string(),
            })
        })
        .collect()
}

/// Runs the gateway in this process until the returned token is cancelled.
pub fn spawn_gateway(
    settings: facilityd::settings::Settings,
) -> (
    facilityd::gateway::Gateway,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let gw = facilityd::gateway::Gateway::new(settings);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let (gw, stop) = (gw.clone(), stop.clone());
        async move { gw.run(stop, Default::default()).await }
    });
    (gw, stop, task)
}

/// Starts `facilityd simulate ARGS` and waits until it serves; returns it with its device
/// listing (`expect` devices, or the test fails with the simulator's output).
pub async fn start_simulator(bin: &str, args: &[&str], expect: usize) -> (Daemon, Vec<SimDevice>) {
    let mut sim = Daemon::start(bin, args, &[]);
    assert!(
        sim.wait_for_output("serving", Duration::from_secs(30))
            .await,
        "{}",
        sim.output()
    );
    let devices = sim_listing(&sim.stdout());
    assert_eq!(devices.len(), expect, "{}", sim.output());
    (sim, devices)
}

/// Copies the shipped rule files `names` (`config/rules/NAME.toml`) into `conf_d`, creating it.
pub fn copy_shipped_rules(conf_d: &Path, names: &[&str]) {
    std::fs::create_dir_all(conf_d).unwrap();
    for name in names {
        let file = format!("{name}.toml");
        std::fs::copy(
            repo_root().join("config/rules").join(&file),
            conf_d.join(&file),
        )
        .unwrap();
    }
}
