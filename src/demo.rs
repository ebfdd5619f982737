//! `facilityd demo`: simulated equipment and the gateway in one process, no external services.
//!
//! The demo writes a real configuration file into its state directory (so a user can read and
//! copy it), loads it through the same path as `run`, starts simulators for the devices it
//! names, and scripts faults: a booster pump losing pressure, a passenger trapped in a lift, a
//! door controller going silent and coming back, a fire panel's gateway refusing reads.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::model::Value;
use crate::runtime::{Gateway, RunOptions};
use crate::sim::{Fault, ScheduledFault, SimDeviceSpec, SimPortSpec, SimSpec};
use crate::telemetry::influx::{LineWriter, WriteError};

/// Arguments of `facilityd demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its configuration and state (a restarted demo resumes there).
    #[arg(long, default_value = "./facilityd-demo")]
    pub state_dir: PathBuf,
    /// Write telemetry to this InfluxDB v2 (or VictoriaMetrics) URL instead of only showing it.
    #[arg(long, value_name = "URL")]
    pub influxdb_url: Option<String>,
    #[arg(long, default_value = "facility")]
    pub influxdb_org: String,
    #[arg(long, default_value = "telemetry")]
    pub influxdb_bucket: String,
    /// File holding the InfluxDB token (or set FACILITYD_INFLUXDB__TOKEN).
    #[arg(long, value_name = "FILE")]
    pub influxdb_token_file: Option<PathBuf>,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How often the live view is printed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
}

struct DemoDevice {
    id: &'static str,
    profile: &'static str,
    building: &'static str,
    floor: &'static str,
    name: &'static str,
    port: usize,
    unit: u8,
    highlights: &'static [&'static str],
}

const DEVICES: &[DemoDevice] = &[
    DemoDevice {
        id: "EL-A1",
        profile: "elevator",
        building: "A",
        floor: "B1",
        name: "Tower A passenger lift 1",
        port: 0,
        unit: 1,
        highlights: &[
            "car_floor",
            "run_state",
            "door_state",
            "trips_total",
            "trapped_alarm",
        ],
    },
    DemoDevice {
        id: "PU-A1",
        profile: "pump",
        building: "A",
        floor: "B2",
        name: "Tower A booster pump 1",
        port: 0,
        unit: 2,
        highlights: &[
            "running",
            "discharge_pressure_bar",
            "flow_m3h",
            "run_hours_total",
            "starts_total",
        ],
    },
    DemoDevice {
        id: "FP-A",
        profile: "fire_panel",
        building: "A",
        floor: "G",
        name: "Tower A fire alarm panel",
        port: 0,
        unit: 3,
        highlights: &[
            "fire_alarm",
            "trouble",
            "trouble_count",
            "battery_voltage_v",
            "zone_1",
        ],
    },
    DemoDevice {
        id: "DOOR-A-L1-03",
        profile: "access_door",
        building: "A",
        floor: "L1",
        name: "Tower A lobby door 3",
        port: 0,
        unit: 4,
        highlights: &[
            "door_state",
            "door_closed",
            "door_cycles_total",
            "held_open_s",
            "door_forced",
        ],
    },
    DemoDevice {
        id: "EL-B1",
        profile: "elevator",
        building: "B",
        floor: "B1",
        name: "Tower B service lift",
        port: 1,
        unit: 1,
        highlights: &[
            "car_floor",
            "run_state",
            "door_state",
            "trips_total",
            "service_mode",
        ],
    },
    DemoDevice {
        id: "PU-B1",
        profile: "pump",
        building: "B",
        floor: "B2",
        name: "Tower B transfer pump",
        port: 1,
        unit: 2,
        highlights: &[
            "running",
            "discharge_pressure_bar",
            "vibration_mm_s",
            "bearing_temp_c",
            "run_hours_total",
        ],
    },
];

/// The scripted faults: (device, fault, from, until, what it shows).
fn script() -> Vec<(&'static str, Fault, u64, u64, &'static str)> {
    vec![
        (
            "PU-A1",
            Fault::OutOfRange {
                point: "discharge_pressure_bar".into(),
                value: Value::Float(0.6),
            },
            15,
            75,
            "booster pump PU-A1 loses discharge pressure (0.6 bar)",
        ),
        (
            "EL-A1",
            Fault::OutOfRange {
                point: "trapped_alarm".into(),
                value: Value::Bool(true),
            },
            25,
            60,
            "passenger trapped in lift EL-A1 (alarm button)",
        ),
        (
            "DOOR-A-L1-03",
            Fault::Silent,
            35,
            70,
            "door controller DOOR-A-L1-03 stops answering",
        ),
        (
            "FP-A",
            Fault::exception(),
            45,
            55,
            "fire panel gateway FP-A answers every read with an exception",
        ),
    ]
}

/// Counts what would have been written when no database is configured.
#[derive(Default)]
struct CaptureWriter {
    lines: AtomicU64,
    last: Mutex<String>,
}

impl LineWriter for CaptureWriter {
    fn write<'a>(
        &'a self,
        body: String,
    ) -> Pin<Box<dyn Future<Output = Result<(), WriteError>> + Send + 'a>> {
        Box::pin(async move {
            self.lines.fetch_add(body.lines().count() as u64, Relaxed);
            if let Some(line) = body.lines().rfind(|l| !l.starts_with("device_status")) {
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = line.to_string();
            }
            Ok(())
        })
    }
}

fn demo_config(args: &DemoArgs, addrs: &[SocketAddr]) -> String {
    let mut cfg = String::new();
    let _ = writeln!(
        cfg,
        "# Written by `facilityd demo`: the configuration the demo runs. Copy it as a start."
    );
    let _ = writeln!(
        cfg,
        "[gateway]\nid = \"demo-gw\"\nsite = \"demo-site\"\nstate_dir = {:?}\n",
        args.state_dir.display().to_string()
    );
    let _ = writeln!(cfg, "[http]\nlisten = \"127.0.0.1:9470\"\n");
    if let Some(url) = &args.influxdb_url {
        let _ = writeln!(
            cfg,
            "[influxdb]\nurl = {url:?}\norg = {:?}\nbucket = {:?}\nbatch_size = 5000\nflush_interval = \"1s\"",
            args.influxdb_org, args.influxdb_bucket
        );
        if let Some(t) = &args.influxdb_token_file {
            let _ = writeln!(cfg, "token_file = {:?}", t.display().to_string());
        }
        cfg.push('\n');
    }
    for d in DEVICES {
        let addr = addrs
            .get(d.port)
            .map_or_else(|| "127.0.0.1:5020".to_string(), |a| a.to_string());
        let _ = writeln!(
            cfg,
            "[[devices]]\nid = {:?}\nprofile = {:?}\nname = {:?}\nbuilding = {:?}\nfloor = {:?}\ninterval = \"1s\"\nmodbus = {{ url = \"tcp://{addr}\", unit = {}, timeout = \"300ms\", probe_interval = \"10s\" }}\n",
            d.id, d.profile, d.name, d.building, d.floor, d.unit
        );
    }
    cfg
}

/// Runs the demo until Ctrl-C / SIGTERM or `--duration`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
    let mut ports = vec![
        SimPortSpec {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            devices: vec![],
        },
        SimPortSpec {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            devices: vec![],
        },
    ];
    let script = script();
    for (i, d) in DEVICES.iter().enumerate() {
        let mut spec = SimDeviceSpec::new(d.unit, d.profile);
        spec.name = Some(d.id.to_string());
        spec.seed = 7 + i as u64;
        for (id, fault, from, until, _) in &script {
            if *id == d.id {
                spec.faults.extend(ScheduledFault::window(
                    fault.clone(),
                    Duration::from_secs(*from),
                    Some(Duration::from_secs(*until)),
                ));
            }
        }
        ports[d.port].devices.push(spec);
    }
    let sim = crate::sim::start(SimSpec {
        ports,
        ..Default::default()
    })
    .await?;
    let addrs = sim.addrs();

    let cfg_path = args.state_dir.join("facilityd.toml");
    std::fs::write(&cfg_path, demo_config(&args, &addrs))
        .with_context(|| format!("cannot write {}", cfg_path.display()))?;
    let settings = config::load(&cfg_path)
        .map_err(|e| anyhow::anyhow!("the demo's own configuration is invalid (a bug):\n{e}"))?;

    println!(
        "facilityd demo: {} simulated devices on {} (config: {})",
        DEVICES.len(),
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        cfg_path.display()
    );
    match &args.influxdb_url {
        Some(u) => println!(
            "writing telemetry to {u} (org {}, bucket {})",
            args.influxdb_org, args.influxdb_bucket
        ),
        None => println!(
            "no database: telemetry is encoded and counted; pass --influxdb-url to write it"
        ),
    }
    println!("scripted faults:");
    for (_, _, from, until, what) in &script {
        println!("  {from:>3}s..{until:>3}s  {what}");
    }

    let capture = Arc::new(CaptureWriter::default());
    let gw = Gateway::new(settings);
    let stop = crate::cli::shutdown_on_signals();
    if let Some(d) = args.duration {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.cancel();
        });
    }
    let opts = RunOptions {
        writer: if args.influxdb_url.is_none() {
            Some(capture.clone() as Arc<dyn LineWriter>)
        } else {
            None
        },
        flush_timeout: None,
    };
    let view = tokio::spawn(live_view(
        gw.clone(),
        capture.clone(),
        args.refresh,
        stop.clone(),
        args.influxdb_url.is_some(),
    ));
    let result = gw.run(stop.clone(), opts).await;
    stop.cancel();
    let _ = view.await;
    print!(
        "{}",
        render(&gw, &capture, args.influxdb_url.is_some(), Duration::ZERO)
    );
    sim.shutdown().await;
    result
}

async fn live_view(
    gw: Gateway,
    capture: Arc<CaptureWriter>,
    every: Duration,
    stop: CancellationToken,
    to_db: bool,
) {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(200)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => print!("{}", render(&gw, &capture, to_db, started.elapsed())),
        }
    }
}

fn render(gw: &Gateway, capture: &CaptureWriter, to_db: bool, elapsed: Duration) -> String {
    let mut out = String::new();
    if elapsed.is_zero() {
        let _ = writeln!(out, "\n== final state ==");
    } else {
        let _ = writeln!(out, "\n== {}s ==", elapsed.as_secs());
    }
    for (i, d) in gw.settings.devices.iter().enumerate() {
        let Some(latest) = gw.latest.device(i) else {
            continue;
        };
        let stats = &gw.device_stats[i];
        let state = match latest.online {
            Some(true) => "online ",
            Some(false) => "OFFLINE",
            None => "-      ",
        };
        let highlights = DEVICES
            .iter()
            .find(|x| *x.id == *d.id)
            .map_or(&[][..], |x| x.highlights);
        let mut vals = Vec::new();
        for h in highlights {
            if let Some((pi, p)) = d.profile.point(h) {
                let v =
                    latest
                        .points
                        .get(pi)
                        .cloned()
                        .flatten()
                        .map_or("-".to_string(), |(v, _)| match v {
                            Value::Float(f) => format!("{f:.2}"),
                            v => v.to_string(),
                        });
                vals.push(format!(
                    "{}={}{}",
                    p.name,
                    v,
                    p.unit
                        .as_deref()
                        .map(|u| format!(" {u}"))
                        .unwrap_or_default()
                ));
            }
        }
        let _ = writeln!(
            out,
            "{:<13} {:<11} {state} poll {:>5.1}ms errors {:<3} {}",
            d.id,
            d.profile.device_type.as_str(),
            latest.last_poll_ms,
            stats.errors(),
            vals.join("  ")
        );
    }
    let t = &gw.telemetry;
    if to_db {
        let _ = writeln!(
            out,
            "telemetry: {} lines written to the database, {} queued bytes, {} write errors",
            t.lines_written.load(Relaxed),
            t.queue_bytes.load(Relaxed),
            t.write_errors.load(Relaxed)
        );
    } else {
        let _ = writeln!(
            out,
            "telemetry: {} lines encoded (no database configured)",
            capture.lines.load(Relaxed)
        );
        let last = capture
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !last.is_empty() {
            let shown: String = last.chars().take(200).collect();
            let _ = writeln!(
                out,
                "last line: {shown}{}",
                if last.len() > 200 { " ..." } else { "" }
            );
        }
    }
    out
}
