//! `facilityd demo`: simulated equipment and the gateway in one process, no external services.
//!
//! The demo writes a real configuration file into its state directory (so a user can read and
//! copy it), loads it through the same path as `run`, starts simulators for the devices it
//! names, and scripts faults: a booster pump losing pressure, a passenger trapped in a lift, a
//! door controller going silent and coming back, a fire panel's gateway refusing reads.
//!
//! Two devices publish over MQTT (a door controller and a lift monitoring unit, the built-in
//! `access_door_mqtt` and `lift_monitor_mqtt` profiles), and work orders are also published to
//! MQTT. Without `--mqtt-url` the demo runs an embedded broker (rumqttd) on a free local port;
//! rumqttd has no shutdown, so it runs on its own thread for the life of the process.
//!
//! The site (devices, scripts, the configuration written) is in `site.rs`, the embedded broker
//! in `broker.rs`; this file starts them, runs the gateway and prints the live view. The demo
//! and rumqttd are compiled only with the default `demo` cargo feature.

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

use crate::gateway::{Gateway, RunOptions};
use crate::model::Value;
use crate::sim::mqtt::{MqttSimDevice, MqttSimSpec};
use crate::sim::{ScheduledFault, SimDeviceSpec, SimPortSpec, SimSpec};
use crate::telemetry::influx::{LineWriter, WriteError};

mod broker;
mod site;

use site::{DEVICES, MAINS_FAILURE, MQTT_DEVICES, RULE_FILES, demo_config, mqtt_script, script};

/// Arguments of `facilityd demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its configuration and state (a restarted demo resumes there).
    #[arg(long, default_value = "./facilityd-demo")]
    pub state_dir: PathBuf,
    /// Write telemetry to this database URL instead of only showing it: InfluxDB 2.x, 3.x or
    /// 1.8+ and VictoriaMetrics (API v2), or InfluxDB 1.x (with `--influxdb-api v1`).
    #[arg(long, value_name = "URL")]
    pub influxdb_url: Option<String>,
    /// The write API: v2 (org, bucket, token) or v1 (database; InfluxDB 1.x).
    #[arg(long, value_enum, ignore_case = true, default_value = "v2")]
    pub influxdb_api: DemoInfluxApi,
    /// API v2: the organisation and bucket.
    #[arg(long, default_value = "facility")]
    pub influxdb_org: String,
    #[arg(long, default_value = "telemetry")]
    pub influxdb_bucket: String,
    /// API v2: file holding the InfluxDB token (or set FACILITYD_INFLUXDB__TOKEN).
    #[arg(long, value_name = "FILE")]
    pub influxdb_token_file: Option<PathBuf>,
    /// API v1: the database (create it first: `influx -execute 'CREATE DATABASE facilityd'`).
    #[arg(long, default_value = "facilityd")]
    pub influxdb_database: String,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How often the live view is printed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
    /// Use this MQTT broker (mqtt://HOST:PORT) instead of the embedded one.
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
}

/// `facilityd demo --influxdb-api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoInfluxApi {
    V1,
    V2,
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

/// The API port: 9470 when it is free (so `facilityd work-orders` finds it from the config),
/// else any free port.
fn api_listen() -> SocketAddr {
    let preferred = SocketAddr::from(([127, 0, 0, 1], 9470));
    if std::net::TcpListener::bind(preferred).is_ok() {
        return preferred;
    }
    std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .and_then(|l| l.local_addr())
        .unwrap_or(preferred)
}

/// The demo's API token, kept across restarts in the state directory.
fn ensure_token(dir: &std::path::Path) -> anyhow::Result<()> {
    let path = dir.join("api-token");
    if path.exists() {
        return Ok(());
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    std::fs::write(&path, token).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(())
}

/// Runs the demo until Ctrl-C / SIGTERM or `--duration`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut ports = vec![
        SimPortSpec {
            listen: local,
            devices: vec![],
        },
        SimPortSpec {
            listen: local,
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
    // The site's mains fails at 80 s and returns at 2 min: the generator starts, the switch
    // transfers, and the building's mains-failure incident holds back what went quiet.
    let (from, until) = MAINS_FAILURE;
    let site = ScheduledFault::window(
        crate::sim::Fault::MainsFailure(crate::sim::MainsFailure::Transfer),
        Duration::from_secs(from),
        Some(Duration::from_secs(until)),
    );
    let sim = crate::sim::start(SimSpec {
        ports,
        site,
        ..Default::default()
    })
    .await?;
    let addrs = sim.addrs();

    let (mqtt_url, embedded) = match &args.mqtt_url {
        Some(u) => (u.clone(), false),
        None => {
            let addr = tokio::task::spawn_blocking(broker::start_embedded_broker)
                .await
                .map_err(|e| anyhow::anyhow!("embedded broker: {e}"))??;
            (format!("mqtt://{addr}"), true)
        }
    };
    let broker = url::Url::parse(&mqtt_url)
        .ok()
        .and_then(|u| Some((u.host_str()?.to_string(), u.port().unwrap_or(1883))))
        .with_context(|| format!("--mqtt-url {mqtt_url:?}: expected mqtt://HOST:PORT"))?;
    let sim_stop = CancellationToken::new();
    let mscript = mqtt_script();
    let mqtt_sim = tokio::spawn(crate::sim::mqtt::run(
        MqttSimSpec {
            host: broker.0,
            port: broker.1,
            devices: MQTT_DEVICES
                .iter()
                .map(|d| MqttSimDevice {
                    asset: d.id.into(),
                    building: d.building.into(),
                    kind: d.kind,
                })
                .collect(),
            interval: Duration::from_secs(1),
            seed: 7,
            script: mscript
                .iter()
                .map(|(id, a, at, _)| (id.to_string(), Duration::from_secs(*at), *a))
                .collect(),
            supply: sim.site_supply(),
        },
        sim_stop.clone(),
    ));

    ensure_token(&args.state_dir)?;
    let conf_d = args.state_dir.join("conf.d");
    std::fs::create_dir_all(&conf_d)
        .with_context(|| format!("cannot create {}", conf_d.display()))?;
    for (name, text) in RULE_FILES {
        std::fs::write(conf_d.join(name), text)
            .with_context(|| format!("cannot write {}", conf_d.join(name).display()))?;
    }
    let listen = api_listen();
    let cfg_path = args.state_dir.join("facilityd.toml");
    std::fs::write(&cfg_path, demo_config(&args, &addrs, listen, &mqtt_url))
        .with_context(|| format!("cannot write {}", cfg_path.display()))?;
    let settings = crate::settings::load(&cfg_path)
        .map_err(|e| anyhow::anyhow!("the demo's own configuration is invalid (a bug):\n{e}"))?;

    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    println!(
        "facilityd demo: {} simulated Modbus devices on {}, {} MQTT devices on {mqtt_url}{}, {} rules (config: {})",
        DEVICES.len(),
        list.join(", "),
        MQTT_DEVICES.len(),
        if embedded { " (embedded broker)" } else { "" },
        settings.rules.len(),
        cfg_path.display()
    );
    match (&args.influxdb_url, args.influxdb_api) {
        (Some(u), DemoInfluxApi::V2) => println!(
            "writing telemetry to {u} (API v2, org {}, bucket {})",
            args.influxdb_org, args.influxdb_bucket
        ),
        (Some(u), DemoInfluxApi::V1) => println!(
            "writing telemetry to {u} (API v1, database {})",
            args.influxdb_database
        ),
        (None, _) => {
            println!("no database: telemetry is encoded and counted; to write it, pass");
            println!(
                "  --influxdb-url http://127.0.0.1:8428                      (VictoriaMetrics)"
            );
            println!(
                "  --influxdb-url http://127.0.0.1:8086 --influxdb-token-file FILE \\\n    --influxdb-org ORG --influxdb-bucket BUCKET                (InfluxDB 2.x, 3.x)"
            );
            println!(
                "  --influxdb-url http://127.0.0.1:8086 --influxdb-api v1 \\\n    --influxdb-database facilityd                             (InfluxDB 1.x)"
            );
        }
    }
    println!("scripted faults:");
    for (_, _, from, until, what) in &script {
        println!("  {from:>3}s..{until:>3}s  {what}");
    }
    for (_, _, at, what) in mscript.iter().filter(|m| !m.3.is_empty()) {
        println!("  {at:>3}s        {what}");
    }
    println!(
        "  {from:>3}s..{until:>3}s  the site's mains fails: the generator starts, the switch transfers, and one incident (rule power-mains-lost) holds back the offline and AC-fail work orders",
        from = MAINS_FAILURE.0,
        until = MAINS_FAILURE.1
    );
    println!(
        "work orders are also published to {mqtt_url} on facilityd/demo-site/work-orders/<asset>"
    );
    println!("HTTP API on http://{listen}; work orders from another terminal:");
    println!("  facilityd work-orders -c {} list", cfg_path.display());
    println!(
        "  facilityd work-orders -c {} ack ID --by you",
        cfg_path.display()
    );
    println!(
        "  facilityd work-orders -c {} resolve ID --note \"fixed\"",
        cfg_path.display()
    );

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
    let to_db = args.influxdb_url.is_some();
    let opts = RunOptions {
        writer: if to_db {
            None
        } else {
            Some(capture.clone() as Arc<dyn LineWriter>)
        },
        flush_timeout: None,
        reload: None,
    };
    let view = tokio::spawn(live_view(
        gw.clone(),
        capture.clone(),
        args.refresh,
        stop.clone(),
        to_db,
    ));
    let result = gw.run(stop.clone(), opts).await;
    stop.cancel();
    let _ = view.await;
    print!("{}", render(&gw, &capture, to_db, Duration::ZERO));
    sim_stop.cancel();
    let _ = mqtt_sim.await;
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
            _ = tick.tick() => {
                let wos = work_orders(&gw).await;
                print!("{}{wos}", render(&gw, &capture, to_db, started.elapsed()));
            }
        }
    }
}

/// The newest work orders, through the demo's own API (as a user would see them).
async fn work_orders(gw: &Gateway) -> String {
    let Some(addr) = gw.api_addr.get() else {
        return String::new();
    };
    let url = format!("http://{addr}/api/v1/work-orders?limit=12");
    let Ok(client) = reqwest011::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return String::new();
    };
    let Ok(resp) = client.get(url).send().await else {
        return String::new();
    };
    let Ok(list) = resp.json::<Vec<serde_json::Value>>().await else {
        return String::new();
    };
    format!(
        "work orders (newest first):\n{}",
        crate::cli::work_orders::table(&list)
    )
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
            .map(|x| x.highlights)
            .or_else(|| {
                MQTT_DEVICES
                    .iter()
                    .find(|x| *x.id == *d.id)
                    .map(|x| x.highlights)
            })
            .unwrap_or(&[][..]);
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
                            // Counts and floors are floats in telemetry but whole here.
                            Value::Float(f) if f.fract() == 0.0 => format!("{f:.0}"),
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
            "telemetry: {} lines written to the database, {} lines waiting in the log, {} write errors",
            t.lines_written.load(Relaxed),
            gw.log_stats.backlog_lines.load(Relaxed),
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
