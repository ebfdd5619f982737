//! The fleet benchmark: the gateway process polling 1,000 simulated devices x 50 points every
//! second (50,000 points/s) from simulators in another process, writing to a real
//! VictoriaMetrics. Reports the gateway's CPU (core-seconds per second) and peak RSS.
//!
//!     cargo bench --bench fleet                      # 1000 devices, 50 points, 60 s measured
//!     cargo bench --bench fleet -- --devices 200 --seconds 20
//!
//! The simulators run in a second process (this benchmark re-executing itself), the gateway is
//! the release `facilityd run` binary in a third, so its figures are its own.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use facilityd::sim::{SimDeviceSpec, SimPortSpec, SimSpec};

struct Args {
    devices: usize,
    points: usize,
    ports: usize,
    seconds: u64,
    warmup: u64,
}

fn args() -> Args {
    let mut a = Args {
        devices: 1000,
        points: 50,
        ports: 10,
        seconds: 60,
        warmup: 10,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = v.get(i + 1).and_then(|s| s.parse::<u64>().ok());
        match (v[i].as_str(), next) {
            ("--devices", Some(n)) => a.devices = n as usize,
            ("--points", Some(n)) => a.points = n as usize,
            ("--ports", Some(n)) => a.ports = n as usize,
            ("--seconds", Some(n)) => a.seconds = n,
            ("--warmup", Some(n)) => a.warmup = n,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// A 50-point profile: 40 registers of mixed types (one read) and 10 discrete inputs (one read).
fn profile_toml(points: usize) -> String {
    let mut s =
        String::from("[[profiles]]\nname = \"bench\"\ndevice_type = \"pump\"\npoints = [\n");
    let bits = points / 5;
    let regs = points - bits;
    let mut addr = 0;
    for i in 0..regs {
        let (ty, width, extra) = match i % 4 {
            0 => ("u16", 1, ", scale = 0.01"),
            1 => ("i16", 1, ", scale = 0.1"),
            2 => ("u32", 2, ""),
            _ => ("u16", 1, ""),
        };
        let kind = if ty == "u32" { "counter" } else { "gauge" };
        let _ = writeln!(
            s,
            "  {{ name = \"r{i}\", kind = \"{kind}\", register = \"holding\", address = {addr}, type = \"{ty}\"{extra} }},"
        );
        addr += width;
    }
    for i in 0..bits {
        let _ = writeln!(
            s,
            "  {{ name = \"b{i}\", kind = \"alarm\", register = \"discrete\", address = {i} }},"
        );
    }
    s.push_str("]\n");
    s
}

fn bench_profile(points: usize) -> facilityd::profile::Profile {
    let cfg: facilityd::profile::ProfileConfig = config::Config::builder()
        .add_source(config::File::from_str(
            &profile_toml(points).replace("[[profiles]]\n", ""),
            config::FileFormat::Toml,
        ))
        .build()
        .and_then(|c| c.try_deserialize())
        .expect("bench profile");
    cfg.build().expect("valid bench profile").0
}

/// Child mode: serve the simulators, print their ports, run until stdin closes.
fn simulator_child(a: &Args) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let profile = bench_profile(a.points);
        let per_port = a.devices.div_ceil(a.ports);
        let mut ports = Vec::new();
        for p in 0..a.ports {
            let devices = (0..per_port)
                .filter(|u| p * per_port + u < a.devices)
                .map(|u| SimDeviceSpec::new(u as u8 + 1, profile.clone()))
                .collect();
            ports.push(SimPortSpec {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                devices,
            });
        }
        let sim = facilityd::sim::start(SimSpec {
            ports,
            tick: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .expect("simulators");
        let list: Vec<String> = sim.addrs().iter().map(|a| a.to_string()).collect();
        println!("READY {}", list.join(","));
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await
        .ok();
        drop(sim);
    });
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of /proc/PID/stat (utime, stime); index 11/12 after the command name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, and
    // a minute-long measurement has no place in the test run.
    if !std::env::args().any(|a| a == "--bench") && std::env::var_os("FLEET_SIM_CHILD").is_none() {
        println!(
            "fleet benchmark: run it with `cargo bench --bench fleet` (skipped under cargo test)"
        );
        return;
    }
    let a = args();
    if std::env::var_os("FLEET_SIM_CHILD").is_some() {
        simulator_child(&a);
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(a));
}

async fn run(a: Args) {
    let vm = support::VictoriaMetrics::start().await;
    let mut sim = Command::new(std::env::current_exe().expect("own path"))
        .args(std::env::args().skip(1))
        .env("FLEET_SIM_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulator process");
    let mut ready = String::new();
    BufReader::new(sim.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("READY");
    let addrs: Vec<String> = ready
        .trim()
        .trim_start_matches("READY ")
        .split(',')
        .map(str::to_string)
        .collect();
    assert_eq!(addrs.len(), a.ports, "simulator said {ready:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = format!(
        "[gateway]\nid = \"bench\"\nsite = \"bench\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[influxdb]\nurl = {:?}\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\nbatch_size = 5000\nflush_interval = \"1s\"\n\n{}\n",
        dir.path().join("state").display().to_string(),
        vm.url(),
        profile_toml(a.points)
    );
    let per_port = a.devices.div_ceil(a.ports);
    for d in 0..a.devices {
        let (port, unit) = (d / per_port, d % per_port + 1);
        let _ = writeln!(
            cfg,
            "[[devices]]\nid = \"D{d:04}\"\nprofile = \"bench\"\ninterval = \"1s\"\nmodbus = {{ url = \"tcp://{}\", unit = {unit}, timeout = \"500ms\" }}\n",
            addrs[port]
        );
    }
    let cfg_path = dir.path().join("facilityd.toml");
    std::fs::write(&cfg_path, cfg).expect("config");
    let cfg_s = cfg_path.display().to_string();
    let mut gw = support::Daemon::start(
        env!("CARGO_BIN_EXE_facilityd"),
        &["run", "-c", &cfg_s],
        &[("RUST_LOG", "warn")],
    );
    let pid = gw.pid().expect("gateway pid");

    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    let from_ms = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let (c1, wall) = (cpu_seconds(pid), t0.elapsed().as_secs_f64());
    let to_ms = chrono::Utc::now().timestamp_millis();
    let hwm = status_kb(pid, "VmHWM:");
    let rss = status_kb(pid, "VmRSS:");
    gw.sigterm();
    let _ = gw.wait_with_timeout(Duration::from_secs(10)).await;
    let _ = sim.kill();
    let _ = sim.wait();

    // What reached the database in the measured window: polls per device per second.
    let status = vm
        .wait_for_series(
            "device_status_online",
            |s| s.len() >= a.devices,
            Duration::from_secs(20),
        )
        .await;
    let polls: usize = status
        .iter()
        .map(|s| {
            s.timestamps
                .iter()
                .filter(|t| **t >= from_ms && **t < to_ms)
                .count()
        })
        .sum();
    let online: usize = status
        .iter()
        .map(|s| {
            s.points()
                .iter()
                .filter(|(t, v)| *t >= from_ms && *t < to_ms && *v == 1.0)
                .count()
        })
        .sum();
    let window = (to_ms - from_ms) as f64 / 1000.0;
    let cores = (c1 - c0) / wall;
    println!(
        "fleet benchmark: {} devices x {} points every 1 s on {} ports ({} points/s offered)",
        a.devices,
        a.points,
        a.ports,
        a.devices * a.points
    );
    println!("  measured {wall:.0} s after {} s warm-up", a.warmup);
    println!("  gateway CPU: {cores:.3} cores (core-seconds per second)");
    println!(
        "  gateway peak RSS: {:.1} MB (VmHWM), RSS at end {:.1} MB",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    println!(
        "  polls in the database: {:.1} per device per second ({} of {} online)",
        polls as f64 / a.devices as f64 / window,
        online,
        polls
    );
    println!(
        "  points/s delivered: {:.0}",
        online as f64 * a.points as f64 / window
    );
    if !gw.stderr().trim().is_empty() {
        println!(
            "  gateway log (warnings):\n{}",
            support::tail(&gw.stderr_path(), 2000)
        );
    }
}
