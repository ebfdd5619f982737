//! Durability under faults, end to end with the real binary: simulated devices
//! (facilityd's own simulators, in this process), `facilityd run` as a child process,
//! VictoriaMetrics as the database, and fault injection from the test: a database outage, a
//! `kill -9`, a full log with the database down, a damaged segment, a slow database.
//!
//! The oracle for "what the gateway accepted" is the telemetry log itself: the segment files
//! under `state_dir/telemetry/`, read with `facilityd::telemetry::log::scan_segment` after the
//! daemon stopped (forwarded history stays there for `history_retention`, 7 days by default).
//! Every line protocol line of it is turned into the samples VictoriaMetrics makes of it
//! (`<measurement>_<field>` plus the tags, timestamps cut to milliseconds) and compared with
//! `/api/v1/export`. The harness runs VictoriaMetrics with `-dedup.minScrapeInterval=1ms`, so
//! a batch resent after a crash or an outage (at least once, same timestamps) collapses into
//! one sample as in InfluxDB; a duplicate left in an export is a failure.
//!
//! The tests of this file take turns (one lock): they generate real load and measure timing,
//! which two of them at once on a 2-core machine would distort.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use facilityd::model::Value;
use facilityd::sim::{Fault, SimDeviceSpec, SimHandle, SimPortSpec, SimSpec};
use facilityd::telemetry::log::{Class, HEADER_LEN, RecordHeader, scan_segment};
use influxdb_line_protocol::FieldValue;
use serde_json::Value as Json;
use support::{Daemon, ExportedSeries, VictoriaMetrics, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_facilityd");

/// One test of this file at a time (see the module docs). A tokio mutex does not poison: a
/// failed test does not fail the others.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------

/// Simulated devices on one or more ports of an in-process simulator.
struct Fleet {
    sim: SimHandle,
    devices: Vec<FleetDevice>,
}

struct FleetDevice {
    /// Asset id in the gateway's config: `<PREFIX>-<port>-<unit>`.
    id: String,
    profile: &'static str,
    port: usize,
    unit: u8,
    addr: SocketAddr,
}

fn prefix(profile: &str) -> &'static str {
    match profile {
        "elevator" => "EL",
        "pump" => "PU",
        "fire_panel" => "FP",
        "access_door" => "DOOR",
        other => panic!("no prefix for profile {other}"),
    }
}

/// `ports` ports, each serving `per_port` (unit ids from 1, in that order). The models move
/// (not frozen): values change from poll to poll.
async fn start_fleet(ports: usize, per_port: &[&'static str]) -> Fleet {
    let spec = SimSpec {
        ports: (0..ports)
            .map(|port| SimPortSpec {
                listen: "127.0.0.1:0".parse().unwrap(),
                devices: per_port
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let mut d = SimDeviceSpec::new(i as u8 + 1, *p);
                        d.seed = (port * 100 + i) as u64;
                        d
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    };
    let sim = facilityd::sim::start(spec).await.expect("start simulators");
    let addrs = sim.addrs();
    let mut devices = Vec::new();
    for (port, addr) in addrs.iter().enumerate() {
        for (i, p) in per_port.iter().enumerate() {
            let unit = i as u8 + 1;
            devices.push(FleetDevice {
                id: format!("{}-{port}-{unit}", prefix(p)),
                profile: p,
                port,
                unit,
                addr: *addr,
            });
        }
    }
    Fleet { sim, devices }
}

impl Fleet {
    /// `[[devices]]` tables for every device.
    fn toml(&self, interval: &str, timeout: &str) -> String {
        self.devices
            .iter()
            .map(|d| {
                format!(
                    "[[devices]]\nid = \"{}\"\nprofile = \"{}\"\ninterval = \"{interval}\"\nmodbus = {{ url = \"tcp://{}\", unit = {}, timeout = \"{timeout}\" }}\n\n",
                    d.id, d.profile, d.addr, d.unit
                )
            })
            .collect()
    }

    fn find(&self, id: &str) -> &FleetDevice {
        self.devices.iter().find(|d| d.id == id).unwrap()
    }
}

/// Twelve devices per port: three of each built-in type.
const MIXED_12: [&str; 12] = [
    "elevator",
    "elevator",
    "elevator",
    "pump",
    "pump",
    "pump",
    "fire_panel",
    "fire_panel",
    "fire_panel",
    "access_door",
    "access_door",
    "access_door",
];

// ---------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------

/// A test directory: the config file, the state directory, the API address.
struct Setup {
    _dir: tempfile::TempDir,
    cfg: PathBuf,
    state: PathBuf,
    api: String,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("facilityd-durability-")
            .tempdir()
            .unwrap();
        let api_port = free_port();
        Setup {
            cfg: dir.path().join("facilityd.toml"),
            state: dir.path().join("state"),
            api: format!("http://127.0.0.1:{api_port}"),
            _dir: dir,
        }
    }

    fn telemetry_dir(&self) -> PathBuf {
        self.state.join("telemetry")
    }

    /// (Re)writes the config: gateway, API on this setup's port, then `body`.
    fn write_config(&self, body: &str) {
        let listen = self.api.trim_start_matches("http://");
        let text = format!(
            "[gateway]\nid = \"gw-dur\"\nsite = \"tower-a\"\nstate_dir = {:?}\n\n[http]\nlisten = \"{listen}\"\n\n{body}",
            self.state.display().to_string()
        );
        std::fs::write(&self.cfg, text).unwrap();
    }

    /// Starts `facilityd run` and waits until it polls and its API answers.
    async fn start(&self) -> Daemon {
        let cfg = self.cfg.display().to_string();
        let mut d = Daemon::start(BIN, &["run", "-c", &cfg], &[]);
        assert!(
            d.wait_for_output("facilityd running", Duration::from_secs(60))
                .await,
            "the daemon did not start\n{}",
            d.output()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http().get(format!("{}/healthz", self.api)).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the API at {} does not answer\n{}",
                self.api,
                d.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        d
    }
}

/// SIGTERM and wait; asserts a clean exit within `within`.
async fn stop_daemon(d: &mut Daemon, within: Duration) -> Duration {
    let t = Instant::now();
    d.sigterm();
    let status = d.wait_with_timeout(within).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the daemon did not exit cleanly within {within:?} of SIGTERM: {status:?}\n{}",
        d.output()
    );
    t.elapsed()
}

/// The `backlog_lines=N` of the daemon's last "stopped" log line.
fn backlog_at_stop(d: &Daemon) -> Option<u64> {
    let err = d.stderr();
    let line = err.lines().rev().find(|l| l.contains(" stopped "))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("backlog_lines="))
        .and_then(|v| v.parse().ok())
}

fn http() -> reqwest011::Client {
    reqwest011::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get_json(url: &str) -> (u16, Json) {
    let r = http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Json::Null))
}

/// A `/metrics` answer.
struct Metrics(String);

impl Metrics {
    async fn fetch(api: &str) -> Self {
        let url = format!("{api}/metrics");
        let r = http()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        Metrics(r.text().await.unwrap())
    }

    /// The value of one series, written exactly as exposed (`name` or `name{labels}`).
    fn get(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{}", self.0))
    }

    fn dropped(&self, reason: &str) -> f64 {
        self.get(&format!(
            "facilityd_log_dropped_lines_total{{reason=\"{reason}\"}}"
        ))
    }

    /// `name{asset="X"} v` for every asset.
    fn per_asset(&self, name: &str) -> BTreeMap<String, f64> {
        let head = format!("{name}{{asset=\"");
        self.0
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&head)?;
                let (asset, rest) = rest.split_once('"')?;
                let v = rest.rsplit(' ').next()?.parse().ok()?;
                Some((asset.to_string(), v))
            })
            .collect()
    }

    fn polls(&self) -> BTreeMap<String, f64> {
        self.per_asset("facilityd_modbus_polls_total")
    }

    /// Modbus errors of each asset, all kinds together.
    fn errors(&self) -> BTreeMap<String, f64> {
        let head = "facilityd_modbus_errors_total{asset=\"";
        let mut out = BTreeMap::new();
        for l in self.0.lines() {
            let Some((asset, rest)) = l.strip_prefix(head).and_then(|r| r.split_once('"')) else {
                continue;
            };
            let v: f64 = rest
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            *out.entry(asset.to_string()).or_default() += v;
        }
        out
    }
}

/// Polls `/metrics` until `done` holds; panics with `what` after `timeout`.
async fn wait_metrics(
    api: &str,
    what: &str,
    timeout: Duration,
    d: &Daemon,
    mut done: impl FnMut(&Metrics) -> bool,
) -> Metrics {
    let deadline = Instant::now() + timeout;
    loop {
        let m = Metrics::fetch(api).await;
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}\n--- /metrics (log) ---\n{}\n{}",
            m.0.lines()
                .filter(|l| l.starts_with("facilityd_log") || l.starts_with("facilityd_telemetry"))
                .collect::<Vec<_>>()
                .join("\n"),
            d.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

// ---------------------------------------------------------------------------
// The log as the oracle, and what the database holds
// ---------------------------------------------------------------------------

/// One intact record of a segment file.
#[derive(Debug, Clone)]
struct LogRecord {
    header: RecordHeader,
    payload: String,
    file: PathBuf,
    offset: u64,
}

impl LogRecord {
    fn total(&self) -> u64 {
        (HEADER_LEN + self.payload.len()) as u64
    }
}

/// What the segment files under `dir` hold: every intact record, in file and offset order,
/// and the files whose scan stopped before their end (with why).
fn read_log(dir: &Path) -> (Vec<LogRecord>, Vec<(PathBuf, String)>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    let mut records = Vec::new();
    let mut damaged = Vec::new();
    for file in files {
        // A segment removed meanwhile (bound, retention) is simply gone.
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        let scan = scan_segment(&bytes, None);
        if let Some(why) = scan.error {
            damaged.push((file.clone(), why.to_string()));
        }
        for (header, offset) in scan.records {
            let start = offset as usize + HEADER_LEN;
            let payload = String::from_utf8(bytes[start..start + header.len as usize].to_vec())
                .expect("scan_segment checked UTF-8");
            records.push(LogRecord {
                header,
                payload,
                file: file.clone(),
                offset,
            });
        }
    }
    (records, damaged)
}

/// A series as VictoriaMetrics names it: `<measurement>_<field>{tag=value,...}` (tags sorted).
type SeriesKey = String;

/// Timestamp (ms) -> value; `None` where VictoriaMetrics cannot keep the value (strings).
type Samples = BTreeMap<i64, Option<f64>>;

fn series_key(name: &str, labels: &BTreeMap<&str, &str>) -> SeriesKey {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// The samples a body of line protocol makes in VictoriaMetrics. Panics on a line it cannot
/// parse (the gateway writes only valid lines) and on a (series, ms) seen twice (one poll per
/// device per millisecond at most: a repeat would be a line accepted twice).
fn add_samples(body: &str, out: &mut BTreeMap<SeriesKey, Samples>) -> usize {
    let mut lines = 0;
    for line in influxdb_line_protocol::parse_lines(body) {
        let line = line.unwrap_or_else(|e| panic!("a log line does not parse: {e}\n{body}"));
        lines += 1;
        let ts = line.timestamp.expect("every line carries its timestamp");
        let ms = ts.div_euclid(1_000_000);
        let tags: BTreeMap<&str, &str> = line
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (&**k, &**v))
            .collect();
        for (field, value) in &line.field_set {
            let v = match value {
                FieldValue::I64(i) => Some(*i as f64),
                FieldValue::U64(u) => Some(*u as f64),
                FieldValue::F64(f) => Some(*f),
                FieldValue::Boolean(b) => Some(if *b { 1.0 } else { 0.0 }),
                FieldValue::String(_) => None,
            };
            let key = series_key(&format!("{}_{}", line.series.measurement, field), &tags);
            let prev = out.entry(key.clone()).or_default().insert(ms, v);
            assert!(
                prev.is_none(),
                "the log holds {key} at {ms} ms twice (a line accepted twice?)"
            );
        }
    }
    lines
}

fn samples_of<'a>(
    records: impl IntoIterator<Item = &'a LogRecord>,
) -> BTreeMap<SeriesKey, Samples> {
    let mut out = BTreeMap::new();
    for r in records {
        let lines = add_samples(&r.payload, &mut out);
        assert_eq!(
            lines, r.header.lines as usize,
            "record {} says {} lines, carries {lines}",
            r.header.seq, r.header.lines
        );
    }
    out
}

/// What the database holds, per series; also checks that each series' timestamps strictly
/// increase (no duplicate left by a resend).
fn vm_samples(exported: &[ExportedSeries]) -> BTreeMap<SeriesKey, Samples> {
    let mut out = BTreeMap::new();
    for s in exported {
        let key = series_key(s.name(), &s.labels());
        assert!(
            s.timestamps.windows(2).all(|w| w[0] < w[1]),
            "{key}: timestamps not strictly increasing in the export (a duplicate?): {:?}",
            s.timestamps
                .windows(2)
                .filter(|w| w[0] >= w[1])
                .take(5)
                .collect::<Vec<_>>()
        );
        let samples: Samples = s
            .timestamps
            .iter()
            .zip(&s.values)
            .map(|(t, v)| (*t, Some(*v)))
            .collect();
        assert!(
            out.insert(key.clone(), samples).is_none(),
            "{key} exported twice"
        );
    }
    out
}

/// Differences between what should be in the database and what is. `exact`: the database
/// must hold nothing else either.
fn diff(
    want: &BTreeMap<SeriesKey, Samples>,
    got: &BTreeMap<SeriesKey, Samples>,
    exact: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let empty = Samples::new();
    for (key, w) in want {
        let g = got.get(key).unwrap_or(&empty);
        let missing: Vec<i64> = w.keys().filter(|t| !g.contains_key(t)).copied().collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{key}: {} of {} samples missing from the database, e.g. at {:?} ms",
                missing.len(),
                w.len(),
                &missing[..missing.len().min(5)]
            ));
        }
        for (t, wv) in w {
            if let (Some(Some(wv)), Some(Some(gv))) = (Some(wv), g.get(t))
                && !support::same(*gv, *wv)
            {
                problems.push(format!(
                    "{key} at {t} ms: database holds {gv}, the log says {wv}"
                ));
                break;
            }
        }
        if exact {
            let extra: Vec<i64> = g.keys().filter(|t| !w.contains_key(t)).copied().collect();
            if !extra.is_empty() {
                problems.push(format!(
                    "{key}: {} samples in the database that the log does not hold, e.g. at {:?} ms",
                    extra.len(),
                    &extra[..extra.len().min(5)]
                ));
            }
        }
    }
    if exact {
        for key in got.keys().filter(|k| !want.contains_key(*k)) {
            problems.push(format!("{key}: in the database, not in the log"));
        }
    }
    problems
}

fn assert_no_diff(problems: &[String], what: &str) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n{}",
        problems.len(),
        problems
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The ms timestamps of the `device_status` lines of each asset: one per poll tick.
fn ticks(samples: &BTreeMap<SeriesKey, Samples>) -> BTreeMap<String, Vec<i64>> {
    let mut out = BTreeMap::new();
    for (key, s) in samples {
        if let Some(rest) = key.strip_prefix("device_status_online{")
            && let Some(asset) = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("asset="))
                .map(|a| a.trim_end_matches('}'))
        {
            out.insert(asset.to_string(), s.keys().copied().collect());
        }
    }
    out
}

fn max_gap(ts: &[i64]) -> i64 {
    ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

/// Points (fields) carried by reading lines, i.e. without `device_status` and `work_order`.
fn reading_points(records: &[LogRecord]) -> usize {
    records
        .iter()
        .flat_map(|r| r.payload.lines())
        .filter(|l| !l.starts_with("device_status,") && !l.starts_with("work_order,"))
        .map(|l| {
            let fields = l.split(' ').nth(1).unwrap_or("");
            fields.split(',').count()
        })
        .sum()
}

// ---------------------------------------------------------------------------
// A TCP proxy that delays every chunk (a slow database), or does not (a database that comes up
// at an address the gateway already uses)
// ---------------------------------------------------------------------------

struct DelayProxy {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

/// Accepts on `listener` and forwards each connection to `upstream`, each chunk in either
/// direction `delay` after it arrived (latency, not a bandwidth limit).
fn delay_proxy(
    listener: tokio::net::TcpListener,
    upstream: SocketAddr,
    delay: Duration,
) -> DelayProxy {
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((down, _)) = accepted else { continue };
                    conns.spawn(async move {
                        let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (dr, dw) = down.into_split();
                        let (ur, uw) = up.into_split();
                        tokio::join!(pipe(dr, uw, delay), pipe(ur, dw, delay));
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    DelayProxy { task }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Option<Vec<u8>>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let read = from.read(&mut buf).await;
            let due = tokio::time::Instant::now() + delay;
            match read {
                Ok(0) | Err(_) => {
                    // The end (or a reset) goes through after the data, as late.
                    let _ = tx.send((due, None));
                    break;
                }
                Ok(n) => {
                    if tx.send((due, Some(buf[..n].to_vec()))).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(c) => {
                    if to.write_all(&c).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    break;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

fn influx(url: &str, extra: &str) -> String {
    format!(
        "[influxdb]\nurl = \"{url}\"\norg = \"facility\"\nbucket = \"telemetry\"\ntoken = \"t\"\n{extra}\n"
    )
}

// ---------------------------------------------------------------------------
// 1. A database outage of a minute
// ---------------------------------------------------------------------------

/// About 5,000 points/s (48 devices of the four built-in types, 20-24 points each, every
/// 200 ms) into VictoriaMetrics; the database is stopped (SIGTERM) for 60 s and started
/// again. Afterwards the database holds exactly the samples of every line the gateway
/// accepted into its log, each once, the outage covered by polls at the usual cadence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_of_a_minute_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut vm = VictoriaMetrics::start().await;
    let fleet = start_fleet(4, &MIXED_12).await;
    let interval_ms = 200i64;
    let setup = Setup::new();
    setup.write_config(&format!(
        "{}\n[storage]\nfsync_interval = \"100ms\"\n\n{}",
        influx(&vm.url(), ""),
        fleet.toml("200ms", "150ms")
    ));
    let mut d = setup.start().await;
    let api = setup.api.clone();

    // Flowing: the first writes reached the database.
    wait_metrics(
        &api,
        "first lines forwarded",
        Duration::from_secs(30),
        &d,
        |m| m.get("facilityd_log_forwarded_lines_total") > 0.0,
    )
    .await;
    let m0 = Metrics::fetch(&api).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let m1 = Metrics::fetch(&api).await;
    let lines_per_s = (m1.get("facilityd_log_appended_lines_total")
        - m0.get("facilityd_log_appended_lines_total"))
        / t0.elapsed().as_secs_f64();

    // The outage: 60 s without the database (SIGTERM: VictoriaMetrics keeps what it acked).
    vm.stop().await;
    let down_ms = now_ms();
    let t_down = Instant::now();
    let polls_down = Metrics::fetch(&api).await.polls();
    let (mut peak_lines, mut peak_bytes, mut peak_age) = (0f64, 0f64, 0f64);
    while t_down.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let m = Metrics::fetch(&api).await;
        peak_lines = peak_lines.max(m.get("facilityd_log_backlog_lines"));
        peak_bytes = peak_bytes.max(m.get("facilityd_log_backlog_bytes"));
        peak_age = peak_age.max(m.get("facilityd_log_backlog_oldest_seconds"));
        let (status, _) = get_json(&format!("{api}/healthz")).await;
        assert_eq!(status, 200, "/healthz during the outage");
    }
    let outage = t_down.elapsed();
    let m_up = Metrics::fetch(&api).await;
    for (asset, n) in m_up.polls() {
        let grew = n - polls_down.get(&asset).copied().unwrap_or(0.0);
        let expected = outage.as_millis() as f64 / interval_ms as f64;
        assert!(
            grew >= 0.9 * expected,
            "{asset}: {grew} polls during the {outage:?} outage, expected about {expected}"
        );
    }
    assert!(
        peak_lines > 10_000.0,
        "the backlog did not build up during the outage: peak {peak_lines} lines"
    );
    vm.restart().await;
    let up_ms = now_ms();
    let t_up = Instant::now();

    // Drained: the backlog back to 0 (the forwarder may sleep up to its 30 s backoff first).
    wait_metrics(
        &api,
        "backlog drained after the outage",
        Duration::from_secs(180),
        &d,
        |m| m.get("facilityd_log_backlog_lines") == 0.0,
    )
    .await;
    let drain = t_up.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m_last = Metrics::fetch(&api).await;
    let polls_last = m_last.polls();
    let stop_took = stop_daemon(&mut d, Duration::from_secs(20)).await;
    assert_eq!(
        backlog_at_stop(&d),
        Some(0),
        "lines left unforwarded at the stop\n{}",
        d.output()
    );
    for reason in ["bulk", "priority", "disk", "corrupt"] {
        assert_eq!(m_last.dropped(reason), 0.0, "lines dropped ({reason})");
    }
    assert_eq!(m_last.get("facilityd_telemetry_records_dropped_total"), 0.0);

    // The oracle: every line of the log (all of it forwarded, all of it still there).
    let (records, damaged) = read_log(&setup.telemetry_dir());
    assert!(
        damaged.is_empty(),
        "damaged segments after a clean stop: {damaged:?}"
    );
    let want = samples_of(&records);
    vm.sync().await;
    let exported = vm.export("{asset=~\".+\"}").await;
    let got = vm_samples(&exported);
    assert_no_diff(&diff(&want, &got, true), "database vs log after the outage");

    // Every poll tick is in the database, the outage covered at the usual cadence; each tick
    // of a healthy device carries its reading (same timestamp).
    let ticks = ticks(&want);
    assert_eq!(ticks.len(), fleet.devices.len());
    let mut outage_samples = usize::MAX;
    let mut widest = 0;
    let mut total_empty_ticks = 0;
    let errors_last = m_last.errors();
    for dev in &fleet.devices {
        let t = &ticks[&dev.id];
        let polled = polls_last[&dev.id] as usize;
        assert!(
            t.len() >= polled && t.len() <= polled + 100,
            "{}: {} status lines in the log, {polled} polls counted shortly before the stop",
            dev.id,
            t.len()
        );
        let gap = max_gap(t);
        widest = widest.max(gap);
        assert!(
            gap <= 2_000,
            "{}: a gap of {gap} ms between polls (interval {interval_ms} ms)",
            dev.id
        );
        let during = t.iter().filter(|x| **x >= down_ms && **x < up_ms).count();
        outage_samples = outage_samples.min(during);
        let expected = (up_ms - down_ms) / interval_ms;
        assert!(
            during as f64 >= 0.9 * expected as f64,
            "{}: {during} samples in the {} ms outage window, expected about {expected}",
            dev.id,
            up_ms - down_ms
        );
        let measurement = dev.profile;
        let readings: BTreeSet<i64> = want
            .iter()
            .filter(|(k, _)| {
                k.starts_with(&format!("{measurement}_"))
                    && k.contains(&format!("asset={},", dev.id))
            })
            .flat_map(|(_, s)| s.keys().copied())
            .collect();
        let t_set: BTreeSet<i64> = t.iter().copied().collect();
        assert!(
            readings.is_subset(&t_set),
            "{}: readings stamped apart from any poll tick",
            dev.id
        );
        // A tick without a reading is a poll that failed as a whole: counted as an error.
        let empty_ticks = t_set.len() - readings.len();
        let errors = errors_last.get(&dev.id).copied().unwrap_or(0.0);
        assert!(
            empty_ticks as f64 <= errors,
            "{}: {empty_ticks} poll ticks without a reading, {errors} errors counted",
            dev.id
        );
        total_empty_ticks += empty_ticks;
    }

    let span_s = {
        let all: Vec<i64> = ticks.values().flatten().copied().collect();
        (all.iter().max().unwrap() - all.iter().min().unwrap()) as f64 / 1000.0
    };
    let points = reading_points(&records);
    let lines: usize = records.iter().map(|r| r.header.lines as usize).sum();
    eprintln!(
        "[outage] {} devices every {interval_ms} ms: {:.0} points/s ({points} points in {span_s:.1} s), {:.0} lines/s appended (metrics), {lines} lines in {} records",
        fleet.devices.len(),
        points as f64 / span_s,
        lines_per_s,
        records.len()
    );
    eprintln!(
        "[outage] database down {:.1} s: backlog peak {peak_lines} lines / {:.1} MB, oldest {peak_age:.1} s; drained {:.1} s after the restart; min {outage_samples} samples per device in the outage window; widest gap between polls {widest} ms; {total_empty_ticks} failed polls; SIGTERM took {:.1} s",
        outage.as_secs_f64(),
        peak_bytes / 1e6,
        drain.as_secs_f64(),
        stop_took.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// 2. kill -9 under load
// ---------------------------------------------------------------------------

async fn work_orders(api: &str) -> Vec<Json> {
    let (status, list) = get_json(&format!("{api}/api/v1/work-orders")).await;
    assert_eq!(status, 200, "GET /api/v1/work-orders: {list}");
    list.as_array().cloned().unwrap_or_default()
}

async fn wait_work_orders(api: &str, n: usize, d: &Daemon) -> Vec<Json> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = work_orders(api).await;
        if list.len() >= n {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{n} work order(s) expected, found {list:#?}\n{}",
            d.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// At most one unresolved work order per key.
fn assert_one_unresolved_per_key(list: &[Json]) {
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for w in list {
        if matches!(w["status"].as_str(), Some("open" | "acknowledged")) {
            *per_key
                .entry(w["key"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert!(
        per_key.values().all(|n| *n == 1),
        "more than one unresolved work order for a key: {per_key:?}"
    );
}

/// The same load into VictoriaMetrics, a pump fault that opens a work order, then `kill -9`
/// mid-load and a restart on the same state: every line the log held at the kill reaches the
/// database, the log and the database agree exactly, and the work order is still there, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_then_restart_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let vm = VictoriaMetrics::start().await;
    let fleet = start_fleet(4, &MIXED_12).await;
    let setup = Setup::new();
    setup.write_config(&format!(
        "{}\n[storage]\nfsync_interval = \"100ms\"\n\n{}\
         [[rules]]\nid = \"pump-fault\"\ntype = \"state\"\nmatch = {{ device_type = \"pump\" }}\npoint = \"fault\"\nequals = true\npriority = \"high\"\nwork_order = \"corrective\"\ntitle = \"Pump fault at {{asset}}\"\n",
        influx(&vm.url(), ""),
        fleet.toml("200ms", "150ms")
    ));
    let mut d = setup.start().await;
    let api = setup.api.clone();
    wait_metrics(
        &api,
        "first lines forwarded",
        Duration::from_secs(30),
        &d,
        |m| m.get("facilityd_log_forwarded_lines_total") > 0.0,
    )
    .await;

    // A work order before the crash: the pump's fault bit held on.
    let a = fleet.find("PU-0-4");
    let fault_on = |dev: &FleetDevice| {
        fleet
            .sim
            .set_fault(
                dev.port,
                dev.unit,
                Some(Fault::OutOfRange {
                    point: "fault".into(),
                    value: Value::Bool(true),
                }),
            )
            .unwrap()
    };
    fault_on(a);
    let before = wait_work_orders(&api, 1, &d).await;
    assert_eq!(before.len(), 1, "{before:#?}");
    assert_eq!(before[0]["asset"], "PU-0-4");
    let wo_a = before[0]["id"].as_i64().unwrap();

    // Mid-load: a few more seconds of polling and forwarding, then the crash.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let m = Metrics::fetch(&api).await;
    let appended_before_kill = m.get("facilityd_log_appended_lines_total");
    d.kill9();
    let (at_kill, damaged) = read_log(&setup.telemetry_dir());
    let at_kill_lines: usize = at_kill.iter().map(|r| r.header.lines as usize).sum();
    assert!(
        at_kill_lines as f64 >= appended_before_kill,
        "the log holds {at_kill_lines} lines after the kill, {appended_before_kill} were appended before"
    );
    let at_kill_samples = samples_of(&at_kill);
    // The forward cursor saved on disk (u64 LE + CRC): from there on, the restart resends.
    let cursor_at_kill = std::fs::read(setup.telemetry_dir().join("cursor"))
        .ok()
        .filter(|b| b.len() == 12)
        .map(|b| u64::from_le_bytes(b[..8].try_into().unwrap()));
    let resent_lines: u64 = at_kill
        .iter()
        .filter(|r| cursor_at_kill.is_none_or(|c| r.header.seq >= c))
        .map(|r| r.header.lines as u64)
        .sum();
    assert!(
        at_kill_samples
            .keys()
            .any(|k| k.starts_with("work_order_") && k.contains("asset=PU-0-4")),
        "the work order's `opened` line is not in the log"
    );

    // Restart on the same config and state.
    let mut d = setup.start().await;
    let reopened = d
        .stderr()
        .lines()
        .find(|l| l.contains("telemetry log open"))
        .unwrap_or_else(|| panic!("no `telemetry log open` line\n{}", d.output()))
        .to_string();
    assert!(
        !reopened.contains("cut_tails=0") || damaged.is_empty(),
        "{reopened}"
    );
    let after = work_orders(&api).await;
    assert_eq!(
        after.iter().map(|w| w["id"].as_i64()).collect::<Vec<_>>(),
        vec![Some(wo_a)],
        "work orders after the restart: {after:#?}"
    );
    assert_eq!(after[0]["status"], "open");
    assert_eq!(
        after[0]["occurrences"], before[0]["occurrences"],
        "the restart counted the still-active fault again"
    );
    // A second fault after the restart: a new work order, the first one untouched.
    let b = fleet.find("PU-1-4");
    fault_on(b);
    let both = wait_work_orders(&api, 2, &d).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let both_later = work_orders(&api).await;
    assert_eq!(both.len(), 2, "{both:#?}");
    assert_eq!(both_later.len(), 2, "{both_later:#?}");
    assert_one_unresolved_per_key(&both_later);
    let ids: BTreeSet<i64> = both_later.iter().filter_map(|w| w["id"].as_i64()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&wo_a));
    let first = both_later.iter().find(|w| w["id"] == wo_a).unwrap();
    assert_eq!(first["occurrences"], before[0]["occurrences"]);
    assert_eq!(first["opened_at"], before[0]["opened_at"]);

    wait_metrics(
        &api,
        "backlog drained after the restart",
        Duration::from_secs(60),
        &d,
        |m| m.get("facilityd_log_backlog_lines") == 0.0,
    )
    .await;
    let m_last = Metrics::fetch(&api).await;
    stop_daemon(&mut d, Duration::from_secs(20)).await;
    assert_eq!(backlog_at_stop(&d), Some(0), "{}", d.output());
    for reason in ["bulk", "priority", "disk", "corrupt"] {
        assert_eq!(m_last.dropped(reason), 0.0, "lines dropped ({reason})");
    }

    vm.sync().await;
    let got = vm_samples(&vm.export("{asset=~\".+\"}").await);
    // Everything the log held at the kill reached the database.
    assert_no_diff(
        &diff(&at_kill_samples, &got, false),
        "lines in the log at the kill vs the database",
    );
    // And the whole log after the second run, exactly (resends deduplicated, nothing extra).
    let (records, damaged_end) = read_log(&setup.telemetry_dir());
    assert!(damaged_end.is_empty(), "{damaged_end:?}");
    let want = samples_of(&records);
    assert_no_diff(
        &diff(&want, &got, true),
        "database vs log after kill -9 and restart",
    );
    eprintln!(
        "[kill-9] {at_kill_lines} lines in {} records at the kill (damaged tails: {damaged:?}), {resent_lines} of them at or after the saved forward cursor {cursor_at_kill:?}; restart: {reopened}; {} lines in the log at the end; work orders {ids:?}",
        at_kill.len(),
        records.iter().map(|r| r.header.lines as u64).sum::<u64>()
    );
}

// ---------------------------------------------------------------------------
// 3. A tiny log with the database down
// ---------------------------------------------------------------------------

/// `log_max_bytes = 256KiB` with the database down: once full, the log drops the oldest bulk
/// lines (gauges, counters) and keeps the alarm/state/event lines; it stays within its bound,
/// the gateway stays healthy and keeps polling; when a database appears at the configured
/// address, the alarm and state lines the log kept reach it (those the still-full log had to
/// drop while the forwarder waited out its backoff are counted as dropped, none is missing
/// silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_log_with_database_down_drops_oldest_bulk_keeps_alarms() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let vm = VictoriaMetrics::start().await;
    // Mostly pumps (their gauge lines are the larger half), plus a fire panel and a door
    // whose lines are mostly alarm and state points.
    let fleet = start_fleet(
        1,
        &[
            "pump",
            "pump",
            "pump",
            "pump",
            "pump",
            "fire_panel",
            "access_door",
        ],
    )
    .await;
    let interval_ms = 200i64;
    let bound: f64 = 256.0 * 1024.0;
    // Slack of one segment (an eighth of the bound): the gauge is published after each
    // append and the bound enforced once the whole batch is in, so a reader may see one batch
    // over it (250 ms of this load, ~6 KB); on disk, a compaction's temporary copy of one
    // segment exists until it is renamed over the original.
    let slack = bound / 8.0;
    // About 25 KB/s, half of it alarm/state/status lines: the log is full after ~10 s, and
    // the alarm/state lines alone would fill it only ~6 s after that (the window in which
    // bulk lines must go first; a loaded machine polls slower, which widens it).
    let db_port = free_port(); // nothing listens there: the database is down
    let setup = Setup::new();
    setup.write_config(&format!(
        "{}\n[storage]\nlog_max_bytes = \"256KiB\"\nfsync_interval = \"100ms\"\n\n{}",
        influx(
            &format!("http://127.0.0.1:{db_port}"),
            "timeout = \"2s\"\nflush_interval = \"250ms\""
        ),
        fleet.toml("200ms", "150ms")
    ));
    let mut d = setup.start().await;
    let api = setup.api.clone();

    // Until the bound bites: bulk lines dropped, and at that moment no priority line.
    let mut max_bytes = 0f64;
    let first_drop = wait_metrics(
        &api,
        "bulk lines dropped",
        Duration::from_secs(60),
        &d,
        |m| {
            max_bytes = max_bytes.max(m.get("facilityd_log_bytes"));
            m.dropped("bulk") > 0.0
        },
    )
    .await;
    assert_eq!(
        first_drop.dropped("priority"),
        0.0,
        "priority lines dropped before bulk ones"
    );
    assert!(
        d.stderr()
            .contains("dropped the oldest unforwarded bulk lines"),
        "the drop was not logged\n{}",
        d.output()
    );
    // For a while: bulk keeps going, priority stays, the bound holds, the gateway is healthy
    // and polls on.
    let polls0 = first_drop.polls();
    let t0 = Instant::now();
    let mut last = first_drop;
    while t0.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let m = Metrics::fetch(&api).await;
        max_bytes = max_bytes.max(m.get("facilityd_log_bytes"));
        assert_eq!(
            m.dropped("priority"),
            0.0,
            "priority lines dropped while bulk ones were left"
        );
        let (h, _) = get_json(&format!("{api}/healthz")).await;
        assert_eq!(h, 200, "/healthz with a full log");
        let (r, ready) = get_json(&format!("{api}/readyz")).await;
        assert_eq!(r, 200, "/readyz with a full log: {ready}");
        let log_bytes = ready["detail"]["telemetry_log"]["bytes"].as_f64().unwrap();
        assert!(log_bytes <= bound + slack, "readyz: {ready}");
        last = m;
    }
    let elapsed = t0.elapsed();
    assert!(
        last.dropped("bulk") > 0.0 && last.get("facilityd_log_backlog_lines") > 0.0,
        "{}",
        last.0
    );
    for (asset, n) in last.polls() {
        let grew = n - polls0[&asset];
        let expected = elapsed.as_millis() as f64 / interval_ms as f64;
        assert!(
            grew >= 0.8 * expected,
            "{asset}: {grew} polls in {elapsed:?} with a full log, expected about {expected}"
        );
    }
    assert!(
        max_bytes <= bound + slack,
        "facilityd_log_bytes reached {max_bytes}, bound {bound} (+{slack} slack)"
    );
    let on_disk: u64 = std::fs::read_dir(setup.telemetry_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(
        on_disk as f64 <= bound + slack,
        "{on_disk} bytes on disk, bound {bound}"
    );

    // What the log holds now: its priority records (alarm, state, event, status lines).
    let (kept, _) = read_log(&setup.telemetry_dir());
    let kept_priority: Vec<&LogRecord> = kept
        .iter()
        .filter(|r| r.header.class == Class::Priority)
        .collect();
    let kept_priority_lines: usize = kept_priority.iter().map(|r| r.header.lines as usize).sum();
    let kept_bulk_lines: usize = kept
        .iter()
        .filter(|r| r.header.class == Class::Bulk)
        .map(|r| r.header.lines as usize)
        .sum();
    let kept_priority_bytes: u64 = kept_priority.iter().map(|r| r.total()).sum();
    assert!(kept_priority_lines > 0);
    let kept_samples = samples_of(kept_priority.iter().copied());
    assert!(
        kept_samples
            .keys()
            .any(|k| k.starts_with("fire_panel_fire_alarm{"))
            && kept_samples.keys().any(|k| k.starts_with("pump_fault{"))
            && kept_samples
                .keys()
                .any(|k| k.starts_with("access_door_door_state{")),
        "alarm/state series missing from the kept lines"
    );
    let dropped_bulk = last.dropped("bulk");

    // The database comes up at the configured address.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", db_port))
        .await
        .unwrap_or_else(|e| panic!("bind the database port {db_port} again: {e}"));
    let _db = delay_proxy(listener, vm.addr(), Duration::ZERO);
    let t_up = Instant::now();
    let drained = wait_metrics(
        &api,
        "backlog drained once the database is up",
        Duration::from_secs(90),
        &d,
        |m| {
            m.get("facilityd_log_backlog_lines") == 0.0
                && m.get("facilityd_log_forwarded_lines_total") > 0.0
        },
    )
    .await;
    let drain = t_up.elapsed();
    let dropped_priority = drained.dropped("priority");
    stop_daemon(&mut d, Duration::from_secs(20)).await;
    vm.sync().await;
    let got = vm_samples(&vm.export("{asset=~\".+\"}").await);
    // The kept alarm/state lines reached the database; any that did not must have been
    // counted as dropped (the log went on filling until the forwarder's backoff let it retry).
    let problems = diff(&kept_samples, &got, false);
    let mut missing_lines = 0usize;
    for r in &kept_priority {
        let mut one = BTreeMap::new();
        add_samples(&r.payload, &mut one);
        if !diff(&one, &got, false).is_empty() {
            missing_lines += r.header.lines as usize;
        }
    }
    assert!(
        missing_lines as f64 <= dropped_priority,
        "{missing_lines} kept alarm/state lines never reached the database, {dropped_priority} counted as dropped:\n{}",
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The log's content after the drain: all forwarded, all in the database.
    let (end, _) = read_log(&setup.telemetry_dir());
    assert_no_diff(
        &diff(&samples_of(&end), &got, false),
        "the log after the drain vs the database",
    );
    eprintln!(
        "[tiny-log] bound {bound} B: max facilityd_log_bytes {max_bytes}, {on_disk} B on disk; {dropped_bulk} bulk lines dropped, 0 priority while bulk was left; kept {kept_priority_lines} priority lines ({kept_priority_bytes} B) + {kept_bulk_lines} bulk lines; database up: drained in {:.1} s, {missing_lines} kept priority lines missing, {dropped_priority} priority lines dropped in the end",
        drain.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// 4. A damaged log
// ---------------------------------------------------------------------------

/// The daemon runs with the database down (its lines stay unforwarded in the log), stops; then
/// the last record of the last segment gets bytes changed (its first line renamed to a
/// measurement `xxx...`) and garbage appended, and the segment before loses the second half
/// of its last record. On restart, with the database up: both tails are cut, reported and
/// counted; every intact line is forwarded, nothing of the cut records (and no `xxx`) is;
/// polling and writing go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_last_segment_is_cut_at_start() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let vm = VictoriaMetrics::start().await;
    let fleet = start_fleet(2, &["elevator", "pump", "fire_panel", "access_door"]).await;
    let setup = Setup::new();
    // 512 KiB: 64 KiB segments, so that a few seconds of this load fill several.
    let config = |url: &str| {
        format!(
            "{}\n[storage]\nlog_max_bytes = \"512KiB\"\nfsync_interval = \"100ms\"\n\n{}",
            influx(url, "timeout = \"1s\"\nflush_interval = \"250ms\""),
            fleet.toml("100ms", "80ms")
        )
    };
    setup.write_config(&config(&format!("http://127.0.0.1:{}", free_port())));
    let mut d = setup.start().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (records, _) = read_log(&setup.telemetry_dir());
        let files: BTreeSet<&PathBuf> = records.iter().map(|r| &r.file).collect();
        if files.len() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log did not fill 3 segments\n{}",
            d.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_daemon(&mut d, Duration::from_secs(20)).await;
    assert!(backlog_at_stop(&d).is_some_and(|n| n > 0), "{}", d.output());

    let (records, damaged) = read_log(&setup.telemetry_dir());
    assert!(damaged.is_empty(), "{damaged:?}");
    let files: Vec<&PathBuf> = records
        .iter()
        .map(|r| &r.file)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let last_file = files[files.len() - 1].clone();
    let prev_file = files[files.len() - 2].clone();
    let last_of = |f: &PathBuf| records.iter().rev().find(|r| &r.file == f).unwrap().clone();
    let flipped = last_of(&last_file);
    let torn = last_of(&prev_file);
    // The last segment: rename the first line's measurement (same length: only the checksum
    // can tell), then garbage after the record.
    let garbage = b"\x00\x01 not a record: facilityd_garbage value=1 1\n".repeat(3);
    {
        let mut bytes = std::fs::read(&last_file).unwrap();
        let start = flipped.offset as usize + HEADER_LEN;
        let name_len = flipped.payload.find(',').unwrap();
        bytes[start..start + name_len].fill(b'x');
        assert_eq!(
            bytes.len() as u64,
            flipped.offset + flipped.total(),
            "the last record is not at the end of its segment"
        );
        bytes.extend_from_slice(&garbage);
        std::fs::write(&last_file, bytes).unwrap();
    }
    // The segment before: cut in the middle of its last record.
    let torn_keep = torn.offset + torn.total() / 2;
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&prev_file)
            .unwrap();
        assert_eq!(f.metadata().unwrap().len(), torn.offset + torn.total());
        f.set_len(torn_keep).unwrap();
    }
    let marker = "x".repeat(flipped.payload.find(',').unwrap());
    // At start-up each file is cut back to the end of its last intact record: the half of
    // the torn record that is left, and the flipped record with the garbage after it.
    let cut_bytes = (torn_keep - torn.offset) + flipped.total() + garbage.len() as u64;
    let intact: Vec<&LogRecord> = records
        .iter()
        .filter(|r| r.header.seq != flipped.header.seq && r.header.seq != torn.header.seq)
        .collect();
    let intact_samples = samples_of(intact.iter().copied());
    let cut_samples = samples_of([&flipped, &torn]);

    // Restart with the database up.
    setup.write_config(&config(&vm.url()));
    let restart_ms = now_ms();
    let mut d = setup.start().await;
    let api = setup.api.clone();
    let m = Metrics::fetch(&api).await;
    assert_eq!(
        m.get("facilityd_log_recovery_cuts_total"),
        2.0,
        "{}",
        d.output()
    );
    assert_eq!(
        m.get("facilityd_log_recovery_cut_bytes_total"),
        cut_bytes as f64
    );
    let err = d.stderr();
    assert_eq!(
        err.matches("cut a torn or corrupt tail").count(),
        2,
        "the cuts were not logged once each\n{err}"
    );
    assert!(
        err.contains("checksum mismatch") && err.contains("torn record"),
        "{err}"
    );
    let polls0: f64 = m.polls().values().sum();
    wait_metrics(
        &api,
        "the backlog forwarded",
        Duration::from_secs(60),
        &d,
        |m| {
            m.get("facilityd_log_backlog_lines") == 0.0
                && m.get("facilityd_log_forwarded_lines_total") > 0.0
        },
    )
    .await;
    // Polling and writing go on: new lines, stamped after the restart, in the database.
    let fresh = vm
        .wait_for_series(
            "device_status_online",
            |s| {
                s.len() == fleet.devices.len()
                    && s.iter()
                        .all(|x| x.timestamps.iter().filter(|t| **t > restart_ms).count() >= 5)
            },
            Duration::from_secs(30),
        )
        .await;
    assert!(
        fresh.len() == fleet.devices.len()
            && fresh
                .iter()
                .all(|x| x.timestamps.iter().filter(|t| **t > restart_ms).count() >= 5),
        "no new lines after the restart\n{}",
        d.output()
    );
    let m_last = Metrics::fetch(&api).await;
    assert!(m_last.polls().values().sum::<f64>() > polls0);
    stop_daemon(&mut d, Duration::from_secs(20)).await;
    vm.sync().await;
    let got = vm_samples(&vm.export("{asset=~\".+\"}").await);
    assert_no_diff(
        &diff(&intact_samples, &got, false),
        "intact lines vs the database",
    );
    let mut leaked = Vec::new();
    for (key, s) in &cut_samples {
        if let Some(g) = got.get(key) {
            leaked.extend(
                s.keys()
                    .filter(|t| g.contains_key(t))
                    .map(|t| format!("{key}@{t}")),
            );
        }
    }
    assert!(
        leaked.is_empty(),
        "lines of the cut records reached the database: {leaked:?}"
    );
    let junk = vm
        .export(&format!(
            "{{__name__=~\"{marker}_.*|facilityd_garbage.*\"}}"
        ))
        .await;
    assert!(
        junk.is_empty(),
        "the damaged bytes reached the database: {junk:?}"
    );
    eprintln!(
        "[corrupt] cut {cut_bytes} bytes in 2 tails ({} lines of 2 records); {} intact records forwarded",
        flipped.header.lines + torn.header.lines,
        intact.len()
    );
}

// ---------------------------------------------------------------------------
// 5. A slow database
// ---------------------------------------------------------------------------

/// Every byte to and from the database 3 s late (a proxy): each write takes over 6 s and the
/// backlog waits, but the devices are polled at their interval all along, and the data
/// arrives in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_database_does_not_slow_polling() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let vm = VictoriaMetrics::start().await;
    let fleet = start_fleet(
        2,
        &["elevator", "pump", "fire_panel", "access_door"].repeat(2),
    )
    .await;
    let interval_ms = 100i64;
    let delay = Duration::from_secs(3);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let _proxy = delay_proxy(listener, vm.addr(), delay);
    let setup = Setup::new();
    setup.write_config(&format!(
        "{}\n[storage]\nfsync_interval = \"100ms\"\n\n{}",
        influx(&proxy_url, ""),
        fleet.toml("100ms", "80ms")
    ));
    let mut d = setup.start().await;
    let api = setup.api.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let m0 = Metrics::fetch(&api).await;
    let (t0, t0_ms) = (Instant::now(), now_ms());
    let mut oldest_max = 0f64;
    while t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = Metrics::fetch(&api).await;
        oldest_max = oldest_max.max(m.get("facilityd_log_backlog_oldest_seconds"));
    }
    let m1 = Metrics::fetch(&api).await;
    let (window, t1_ms) = (t0.elapsed(), now_ms());
    let expected = window.as_millis() as f64 / interval_ms as f64;
    let (p0, p1) = (m0.polls(), m1.polls());
    let mut slowest = f64::MAX;
    for (asset, n) in &p1 {
        let grew = n - p0[asset];
        slowest = slowest.min(grew);
        assert!(
            grew >= 0.9 * expected,
            "{asset}: {grew} polls in {window:?} with a slow database, expected about {expected}"
        );
    }
    assert!(
        oldest_max >= delay.as_secs_f64(),
        "the database did not look slow: oldest backlog at most {oldest_max} s"
    );

    // The data arrives: every tick of the window, in the database in the end.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        let s = vm.export("device_status_online").await;
        let complete = s.len() == fleet.devices.len()
            && s.iter()
                .all(|x| x.timestamps.last().is_some_and(|t| *t >= t1_ms));
        if complete || Instant::now() >= deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let m_end = Metrics::fetch(&api).await;
    assert_eq!(status.len(), fleet.devices.len(), "{}", d.output());
    let mut fewest = usize::MAX;
    for s in &status {
        let asset = s.label("asset").unwrap_or("?");
        let in_window: Vec<i64> = s
            .timestamps
            .iter()
            .copied()
            .filter(|t| *t >= t0_ms && *t < t1_ms)
            .collect();
        fewest = fewest.min(in_window.len());
        assert!(
            s.timestamps.last().is_some_and(|t| *t >= t1_ms),
            "{asset}: the window's data did not arrive within 90 s"
        );
        assert!(
            in_window.len() as f64 >= 0.9 * expected,
            "{asset}: {} samples in the {window:?} window, expected about {expected}",
            in_window.len()
        );
        let gap = max_gap(&in_window);
        assert!(gap <= 1_000, "{asset}: a gap of {gap} ms between polls");
    }
    for reason in ["bulk", "priority", "disk", "corrupt"] {
        assert_eq!(m_end.dropped(reason), 0.0, "lines dropped ({reason})");
    }
    // SIGTERM still stops it within a few seconds, slow database or not.
    let took = stop_daemon(&mut d, Duration::from_secs(15)).await;
    eprintln!(
        "[slow-db] {} devices every {interval_ms} ms, every byte to the database {delay:?} late: fewest polls {slowest} in {:.1} s (expected {expected:.0}), fewest samples in the window {fewest}, oldest backlog up to {oldest_max:.1} s; SIGTERM took {:.1} s",
        fleet.devices.len(),
        window.as_secs_f64(),
        took.as_secs_f64()
    );
}
