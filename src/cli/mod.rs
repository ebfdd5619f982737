//! Command-line entry points (`main.rs` only parses and dispatches).

pub mod client;
pub mod dead_letters;
pub mod handover;
pub mod report;
pub mod work_orders;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::device::DeviceSource;
use crate::modbus::plan::plan;
use crate::modbus::poller::PolledDevice;
use crate::settings::Settings;

pub const DEFAULT_CONFIG: &str = "/etc/facilityd/facilityd.toml";

/// Sets up logging: `RUST_LOG` or the given default filter.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Fires on SIGTERM or Ctrl-C.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        t.cancel();
    });
    token
}

/// `facilityd check`: the text it prints, or the errors.
pub fn check_report(path: &Path) -> Result<String, crate::config::ConfigError> {
    let s = crate::settings::load(path)?;
    Ok(describe(&s))
}

/// Describes a validated configuration: devices, points and request plans. Never prints secrets.
pub fn describe(s: &Settings) -> String {
    let mut out = String::new();
    let files: Vec<String> = s.files.iter().map(|f| f.display().to_string()).collect();
    let _ = writeln!(out, "configuration OK: {}", files.join(", "));
    for w in &s.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(
        out,
        "gateway: id {} site {} state_dir {} timezone {}",
        s.gateway.id,
        s.gateway.site.as_deref().unwrap_or("-"),
        s.gateway.state_dir.display(),
        s.gateway.timezone
    );
    match &s.influxdb {
        Some(ix) => {
            let secret = match &ix.api {
                crate::config::InfluxApi::V2 { token, .. } => {
                    format!(
                        "token {}",
                        if token.0.is_empty() { "not set" } else { "set" }
                    )
                }
                crate::config::InfluxApi::V1 {
                    username, password, ..
                } => match username {
                    Some(u) => format!(
                        "user {u:?} password {}",
                        if password.0.is_empty() {
                            "not set"
                        } else {
                            "set"
                        }
                    ),
                    None => "no authentication".to_string(),
                },
            };
            let _ = writeln!(
                out,
                "influxdb: {} ({}) {secret} batch {} lines / {}",
                ix.url,
                ix.api.target(),
                ix.batch_size,
                humantime::format_duration(ix.flush_interval)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "influxdb: not configured (telemetry is not written to a database)"
            );
        }
    }
    let _ = writeln!(out, "http: {}", s.http_listen);
    let _ = writeln!(out, "devices: {}", s.devices.len());
    let mut total_requests = 0.0;
    for d in &s.devices {
        let place: Vec<&str> = [d.site.as_deref(), d.building.as_deref(), d.floor.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let _ = write!(
            out,
            "\n  {} ({}, profile {}, {} points",
            d.id,
            d.profile.device_type.as_str(),
            d.profile.name,
            d.profile.points.len()
        );
        if !place.is_empty() {
            let _ = write!(out, ", {}", place.join("/"));
        }
        let _ = writeln!(out, ")");
        if let Some(n) = &d.name {
            let _ = writeln!(out, "    name: {n}");
        }
        match &d.source {
            DeviceSource::Modbus(m) => {
                let reqs = plan(
                    &d.profile.points,
                    crate::modbus::plan::PlanLimits::of(m),
                    &Default::default(),
                );
                let per_s = reqs.len() as f64 / d.interval.as_secs_f64();
                total_requests += per_s;
                let _ = writeln!(
                    out,
                    "    modbus: {} unit {} every {} timeout {}{} (max_gap {}, max_registers {}{})",
                    m.link,
                    m.unit,
                    humantime::format_duration(d.interval),
                    humantime::format_duration(m.timeout),
                    if matches!(m.link, crate::modbus::link::Link::Rtu(_)) {
                        " + wire time"
                    } else {
                        ""
                    },
                    m.max_gap,
                    m.max_registers,
                    device_model_limits(&d.profile, m)
                );
                let _ = writeln!(
                    out,
                    "    plan: {} request{} per cycle",
                    reqs.len(),
                    if reqs.len() == 1 { "" } else { "s" }
                );
                for r in &reqs {
                    let names: Vec<&str> = r
                        .points
                        .iter()
                        .filter_map(|&i| d.profile.points.get(i))
                        .map(|p| &*p.name)
                        .collect();
                    let _ = writeln!(
                        out,
                        "      {:<8} {:>5}..{:<5} ({:>3} {}) {}",
                        r.kind.as_str(),
                        r.start,
                        r.end() - 1,
                        r.count,
                        if r.kind.is_bit() { "bits" } else { "regs" },
                        names.join(", ")
                    );
                }
            }
            DeviceSource::Mqtt { topic } => {
                let _ = writeln!(
                    out,
                    "    mqtt: {} (every {} a device_status line)",
                    topic
                        .as_deref()
                        .or(d.profile.mqtt_topic.as_deref())
                        .unwrap_or("-"),
                    humantime::format_duration(d.interval)
                );
            }
        }
        let _ = writeln!(out, "    points (name, kind, field type, source):");
        for p in &d.profile.points {
            let src = match &p.register {
                Some(r) => {
                    let mut s =
                        format!("{} {} {}", r.kind.as_str(), r.address, r.data_type.as_str());
                    match (r.bit, r.bits) {
                        (Some(b), Some(w)) => {
                            let _ = write!(s, " bits {b}-{}", u16::from(b) + u16::from(w) - 1);
                        }
                        (Some(b), None) => {
                            let _ = write!(s, " bit {b}");
                        }
                        _ => {}
                    }
                    if r.count > 1 && r.data_type != crate::profile::DataType::String {
                        let _ = write!(s, " {:?}", r.order);
                    }
                    s
                }
                None => format!("json {}", p.json.as_deref().unwrap_or("")),
            };
            let mut extra = String::new();
            if p.transform.scale != 1.0 || p.transform.offset != 0.0 {
                let _ = write!(extra, " x{} {:+}", p.transform.scale, p.transform.offset);
            }
            if let Some(u) = &p.unit {
                let _ = write!(extra, " [{u}]");
            }
            for (i, (from, to)) in p.transform.na.iter().enumerate() {
                let sep = if i == 0 { " na " } else { "," };
                if from == to {
                    let _ = write!(extra, "{sep}{from}");
                } else {
                    let _ = write!(extra, "{sep}{from}..{to}");
                }
            }
            let _ = writeln!(
                out,
                "      {:<26} {:<8} {:<8} {src}{extra}",
                p.name,
                format!("{:?}", p.kind).to_lowercase(),
                p.field_type().as_str()
            );
        }
    }
    describe_buses(&mut out, s);
    let _ = writeln!(out, "\nrules: {}", s.rules.len());
    for r in &s.rules {
        let assets: Vec<&str> = r.assets.iter().map(|a| &**a).collect();
        let shown = if assets.len() > 6 {
            format!("{} and {} more", assets[..6].join(", "), assets.len() - 6)
        } else {
            assets.join(", ")
        };
        let _ = writeln!(out, "  {} ({}): {}", r.id, r.type_name(), r.describe());
        let _ = writeln!(out, "    assets: {shown}");
    }
    let _ = writeln!(out, "\nnotifiers: {}", s.notifiers.len());
    for n in &s.notifiers {
        let _ = writeln!(out, "  {}", n.name());
    }
    let rt = &s.response_times;
    let _ = writeln!(
        out,
        "work orders: {} (due: urgent {}, high {}, normal {}, low {})",
        crate::gateway::work_order_db(s).display(),
        humantime::format_duration(rt.urgent),
        humantime::format_duration(rt.high),
        humantime::format_duration(rt.normal),
        humantime::format_duration(rt.low)
    );
    if total_requests > 0.0 {
        let _ = writeln!(
            out,
            "\nModbus requests per second, all devices: {total_requests:.1}"
        );
    }
    out
}

/// The serial buses: who is on each, and how much of it their schedule takes.
fn describe_buses(out: &mut String, s: &Settings) {
    use crate::modbus::serial::{BUSY_WARN, bus_loads};
    let loads = bus_loads(&s.devices);
    if loads.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nserial buses: {}", loads.len());
    for b in &loads {
        let t = &b.timing;
        let ids: Vec<&str> = b.devices.iter().map(|d| &**d).collect();
        let _ = writeln!(out, "  {}", b.link);
        let _ = writeln!(
            out,
            "    {} device{}: {}",
            ids.len(),
            if ids.len() == 1 { "" } else { "s" },
            ids.join(", ")
        );
        let _ = writeln!(
            out,
            "    {} baud, {} bits a character ({:.3} ms), frame gap {:.3} ms (t3.5 {:.3} ms), turnaround {}",
            t.baud,
            t.bits_per_char,
            t.char_time.as_secs_f64() * 1e3,
            t.frame_gap.as_secs_f64() * 1e3,
            t.t35.as_secs_f64() * 1e3,
            humantime::format_duration(t.turnaround)
        );
        let _ = writeln!(
            out,
            "    utilisation: {:.0} of {:.0} bytes/s ({:.0} %), {:.0} % of the bus time with the inter-frame silences; {:.1} reads/s; one round of every device {:.0} ms",
            b.bytes_per_s,
            b.capacity(),
            100.0 * b.bytes_per_s / b.capacity(),
            100.0 * b.busy,
            b.requests_per_s,
            b.round.as_secs_f64() * 1e3
        );
        if b.busy > BUSY_WARN {
            let _ = writeln!(
                out,
                "    warning: above {:.0} %: polls will run late (each device's response time comes on top); lengthen intervals, raise the baud rate or split the bus",
                BUSY_WARN * 100.0
            );
        }
    }
}

/// Plans of the configured Modbus devices (for tests and `check`).
pub fn plans(s: &Settings) -> Vec<(String, usize)> {
    s.devices
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            PolledDevice::new(i, d.clone(), Default::default())
                .map(|p| (d.id.to_string(), p.plan().len()))
        })
        .collect()
}

/// `facilityd run`.
pub async fn run(path: &Path) -> anyhow::Result<()> {
    let settings = crate::settings::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(config = %path.display(), devices = settings.devices.len(), gateway = %settings.gateway.id, "facilityd starting");
    let gw = crate::gateway::Gateway::new(settings);
    let stop = shutdown_on_signals();
    // SIGHUP reloads the configuration (`systemctl reload facilityd`).
    let (reloads, reload_rx) = tokio::sync::mpsc::channel(1);
    crate::gateway::reload::spawn_sighup_handler(path.to_path_buf(), gw.clone(), reloads);
    // Under systemd (Type=notify): READY=1, the watchdog, STOPPING=1. Nothing without NOTIFY_SOCKET.
    let notifier = crate::gateway::service::start(&gw, stop.clone());
    let opts = crate::gateway::RunOptions {
        reload: Some(reload_rx),
        ..Default::default()
    };
    let result = gw.run(stop, opts).await;
    if let Some(n) = notifier {
        n.stopped();
    }
    result
}

/// The config path: `-c FILE`, else /etc/facilityd/facilityd.toml. (Not an environment
/// variable: every FACILITYD_* variable is a configuration key.)
pub fn config_path(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

/// What the device model itself limits, as `check` shows it beside the device's settings: a
/// profile's `max_registers` below the device's, and even register counts.
fn device_model_limits(
    profile: &crate::profile::Profile,
    m: &crate::device::ModbusSource,
) -> String {
    let mut out = String::new();
    if profile.limits.max_registers < 125 && m.max_registers == profile.limits.max_registers {
        out.push_str(&format!(" set by profile {:?}", profile.name));
    }
    if m.even_count {
        out.push_str(", even register counts only");
    }
    out
}
