//! The on-disk telemetry log: append throughput and backlog drain rate (the budgets:
//! append at least 1,000,000 points/s per core with the default fsync policy; a backlog drains at
//! least 5 times faster than the ingest rate that built it).
//!
//!     cargo bench --bench log                                   # both, default sizes
//!     cargo bench --bench log -- --points 5000000 --ingest 5000 --outage 600
//!
//! 1. Append: readings of built-in `pump` and `fire_panel` devices (gauges, counters, states,
//!    alarms) are encoded the way the batcher does (`encode_split` into bulk and priority lines),
//!    cut into batches of 5,000 lines and appended with `fsync_interval = 100ms` (the default).
//!    Figures: points (fields) per second of wall time, and per CPU-second of the process (the
//!    encoder and the writer thread together), that is per core.
//! 2. Drain: the backlog an outage of `--outage` seconds at `--ingest` points/s leaves behind is
//!    appended, then the forwarder writes it into a real VictoriaMetrics (batch_size 5000) and
//!    the drain rate is compared with the ingest rate. Every line is checked to have arrived.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use facilityd::model::{Reading, Record, Value};
use facilityd::profile::PointKind;
use facilityd::settings::Settings;
use facilityd::telemetry::influx::InfluxWriter;
use facilityd::telemetry::line::LineEncoder;
use facilityd::telemetry::log::{Class, LogAppender, LogConfig, LogStats, Part, TelemetryLog};
use facilityd::telemetry::pipeline::{Forwarder, GatewayFaults, TelemetryStats};
use tokio_util::sync::CancellationToken;

fn arg(name: &str, default: u64) -> u64 {
    let v: Vec<String> = std::env::args().collect();
    v.iter()
        .position(|a| a == name)
        .and_then(|i| v.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("log benchmark: run it with `cargo bench --bench log` (skipped under cargo test)");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        append(arg("--points", 5_000_000)).await;
        drain(arg("--ingest", 5_000), arg("--outage", 600)).await;
    });
}

/// CPU seconds (user + system) of this process so far.
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// 50 pumps and 50 fire panels, never polled: only their profiles and tags matter here.
fn settings(dir: &std::path::Path, influx: Option<&str>) -> Settings {
    let mut cfg = format!(
        "[gateway]\nid = \"bench\"\nsite = \"tower-a\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n",
        dir.join("state").display().to_string()
    );
    if let Some(url) = influx {
        let _ = write!(
            cfg,
            "[influxdb]\nurl = {url:?}\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\nbatch_size = 5000\n\n"
        );
    }
    for i in 0..100 {
        let profile = if i % 2 == 0 { "pump" } else { "fire_panel" };
        let _ = writeln!(
            cfg,
            "[[devices]]\nid = \"D{i:03}\"\nprofile = \"{profile}\"\nbuilding = \"A\"\nmodbus = {{ url = \"tcp://127.0.0.1:1\", unit = {} }}\n",
            i + 1
        );
    }
    let path = dir.join("facilityd.toml");
    std::fs::write(&path, cfg).expect("config");
    facilityd::settings::load(&path).unwrap_or_else(|e| panic!("config: {e}"))
}

/// One reading of every point of device `d` at time `ts`.
fn reading(s: &Settings, d: usize, ts: i64) -> Record {
    let values = s.devices[d]
        .profile
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let v = match p.kind {
                PointKind::Gauge => Value::Float(ts as f64 % 997.0 / 10.0 + i as f64),
                PointKind::Counter => Value::Int(ts / 1_000_000),
                PointKind::State => Value::Int(ts % 3),
                PointKind::Alarm | PointKind::Event => Value::Bool(ts % 7 == 0),
            };
            (i, v)
        })
        .collect();
    Record::Reading(Reading {
        device: d,
        timestamp_ns: ts,
        values,
    })
}

/// Encodes readings until `points` fields are appended, in batches of 5,000 lines; returns the
/// points appended.
async fn fill(s: &Settings, app: &LogAppender, points: u64, start_ns: i64, step_ns: i64) -> u64 {
    let enc = LineEncoder::new(&s.gateway.id, &s.devices);
    let (mut bulk, mut prio) = (String::new(), String::new());
    let (mut bl, mut pl) = (0u32, 0u32);
    let mut done = 0u64;
    let mut ts = start_ns;
    let mut d = 0usize;
    while done < points {
        let rec = reading(s, d, ts);
        if let Record::Reading(r) = &rec {
            done += r.values.len() as u64;
        }
        let (b, p) = enc.encode_split(&rec, &mut bulk, &mut prio);
        bl += b;
        pl += p;
        d += 1;
        if d == s.devices.len() {
            d = 0;
            ts += step_ns;
        }
        if bl + pl >= 5000 || done >= points {
            let parts = vec![
                Part {
                    class: Class::Bulk,
                    body: std::mem::take(&mut bulk),
                    lines: bl,
                    min_ts: start_ns,
                    max_ts: ts,
                },
                Part {
                    class: Class::Priority,
                    body: std::mem::take(&mut prio),
                    lines: pl,
                    min_ts: start_ns,
                    max_ts: ts,
                },
            ];
            app.append(parts, Vec::new()).await.expect("append");
            bl = 0;
            pl = 0;
        }
    }
    done
}

fn open(dir: &std::path::Path, forwarding: bool) -> (Arc<TelemetryLog>, Arc<LogStats>) {
    let stats = Arc::new(LogStats::default());
    let (log, _) = TelemetryLog::open(
        LogConfig {
            dir: dir.join("telemetry"),
            max_bytes: 8 << 30,
            fsync_interval: Duration::from_millis(100),
            retention: Duration::from_secs(86_400),
            forwarding,
        },
        stats.clone(),
    )
    .expect("open log");
    (log, stats)
}

async fn close(app: LogAppender) {
    tokio::task::spawn_blocking(move || app.close_and_join())
        .await
        .expect("join");
}

async fn append(points: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), None);
    let (log, stats) = open(dir.path(), false);
    let app = log.start_writer().expect("writer");
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let n = fill(&s, &app, points, 1_700_000_000_000_000_000, 1_000_000_000).await;
    close(app).await;
    let (cpu, wall) = (cpu_seconds() - c0, t0.elapsed().as_secs_f64());
    let bytes = stats.appended_bytes.load(Relaxed);
    println!(
        "append: {n} points ({} lines, {:.1} MiB) in {wall:.2} s wall, {cpu:.2} CPU-s, {} group commits",
        stats.appended_lines.load(Relaxed),
        bytes as f64 / (1 << 20) as f64,
        stats.fsyncs.load(Relaxed)
    );
    println!(
        "append: {:.0} points/s wall, {:.0} points/s per core (per CPU-second), {:.0} MiB/s",
        n as f64 / wall,
        n as f64 / cpu,
        bytes as f64 / (1 << 20) as f64 / wall
    );
}

async fn drain(ingest: u64, outage: u64) {
    let mut vm = support::VictoriaMetrics::start_with_args(&["-dedup.minScrapeInterval=1ms"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), Some(&vm.url()));
    let (log, stats) = open(dir.path(), true);
    let app = log.start_writer().expect("writer");
    // The backlog of the outage: `ingest` points/s for `outage` seconds (one reading per device
    // per step; the step is set so the timestamps span the outage).
    let backlog = ingest * outage;
    let per_step: u64 = s
        .devices
        .iter()
        .map(|d| d.profile.points.len() as u64)
        .sum();
    let steps = backlog.div_ceil(per_step).max(1);
    let step_ns = (outage as i64 * 1_000_000_000) / steps as i64;
    let n = fill(&s, &app, backlog, 1_700_000_000_000_000_000, step_ns.max(1)).await;
    close(app).await;
    let lines = stats.backlog_lines.load(Relaxed);
    let writer = Arc::new(InfluxWriter::new(s.influxdb.as_ref().expect("influx")).expect("writer"));
    let tstats = Arc::new(TelemetryStats::default());
    let fw = Forwarder {
        writer,
        log: log.clone(),
        stats: tstats.clone(),
        batch_size: 5000,
        dead_letter: Arc::new(facilityd::telemetry::dead_letter::DeadLetter::new(
            dir.path(),
            64 << 20,
            Arc::default(),
        )),
        faults: Arc::new(GatewayFaults::default()),
    };
    let drained = CancellationToken::new();
    drained.cancel();
    let t0 = Instant::now();
    fw.run(CancellationToken::new(), drained).await;
    let wall = t0.elapsed().as_secs_f64();
    assert_eq!(
        tstats.lines_written.load(Relaxed),
        lines,
        "every backlog line written"
    );
    assert_eq!(stats.backlog_lines.load(Relaxed), 0);
    let rate = n as f64 / wall;
    println!(
        "drain: backlog of {outage} s at {ingest} points/s = {n} points ({lines} lines) written to VictoriaMetrics in {wall:.2} s"
    );
    println!(
        "drain: {rate:.0} points/s = {:.1}x the ingest rate (budget: 5x)",
        rate / ingest as f64
    );
    vm.stop().await;
}
