//! The serial bus benchmark: how much of an RS-485 bus's capacity the gateway turns into points.
//!
//!     cargo bench --bench bus                        # 9600 and 19200 baud, 30 s each
//!     cargo bench --bench bus -- --seconds 10 --bauds 9600,19200,38400
//!
//! A socat pty pair stands for the bus. On one end the project's RTU simulators serve a lift, a
//! booster pump, a fire panel and an access door (the built-in register maps) as unit ids 1-4,
//! pacing every byte at the baud rate (a pty alone moves bytes at once); on the other end the
//! gateway's own link poller polls all four as fast as the bus allows (interval 10 ms, so the
//! bus is never idle). Points per second achieved are compared with the theoretical maximum for
//! the same register maps and the same request plans: every request and reply on the wire at
//! the baud rate with the protocol's minimum of a t3.5 silence after each frame, and nothing
//! else (no slave response time, no scheduling).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use facilityd::device::{Device, DeviceSource};
use facilityd::modbus::plan::{PlanLimits, ReadRequest, plan, split_point};
use facilityd::modbus::poller::{LinkPoller, PolledDevice, RecordSink};
use facilityd::modbus::serial::BusTiming;
use facilityd::modbus::stats::DeviceStats;
use facilityd::model::Record;
use facilityd::sim::{SimBusSpec, SimDeviceSpec, SimError, SimHandle};
use tokio_util::sync::CancellationToken;

const PROFILES: [&str; 4] = ["elevator", "pump", "fire_panel", "access_door"];

struct Args {
    seconds: u64,
    warmup: u64,
    bauds: Vec<u32>,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 30,
        warmup: 3,
        bauds: vec![9600, 19200],
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = v.get(i + 1);
        match (v[i].as_str(), next) {
            ("--seconds", Some(n)) => a.seconds = n.parse().unwrap_or(a.seconds),
            ("--warmup", Some(n)) => a.warmup = n.parse().unwrap_or(a.warmup),
            ("--bauds", Some(list)) => {
                a.bauds = list
                    .split(',')
                    .filter_map(|b| b.trim().parse().ok())
                    .collect()
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// The plan the poller ends up with: its first plan, split wherever the device refuses a
/// merged read (the simulated maps have holes), as the poller learns it.
fn learned_plan(device: &Device, sim: &SimHandle, unit: u8) -> Vec<ReadRequest> {
    let DeviceSource::Modbus(m) = &device.source else {
        return Vec::new();
    };
    let limits = PlanLimits::of(m);
    let points = &device.profile.points;
    let mut cuts = BTreeSet::new();
    loop {
        let reqs = plan(points, limits, &cuts);
        let refused =
            reqs.iter()
                .find_map(|r| match sim.registers(0, unit, r.kind, r.start, r.count) {
                    Err(SimError::Exception(_)) => split_point(r, points),
                    _ => None,
                });
        match refused {
            Some(cut) if cuts.insert(cut) => continue,
            _ => return reqs,
        }
    }
}

struct Outcome {
    baud: u32,
    points_per_s: f64,
    max_points_per_s: f64,
    requests_per_s: f64,
    max_requests_per_s: f64,
    errors: u64,
}

async fn measure(baud: u32, a: &Args) -> Outcome {
    let pty = support::pty::PtyPair::start().await;
    let devices: Vec<SimDeviceSpec> = PROFILES
        .iter()
        .enumerate()
        .map(|(i, p)| SimDeviceSpec::new(i as u8 + 1, *p))
        .collect();
    let sim = facilityd::sim::start_serial(
        vec![SimBusSpec::new(
            pty.a().display().to_string(),
            baud,
            devices,
        )],
        facilityd::sim::DEFAULT_TICK,
        true,
    )
    .await
    .expect("simulators");

    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = {:?}\n",
        dir.path().display().to_string()
    );
    let url = pty.url_b(&format!("baud={baud}"));
    for (i, p) in PROFILES.iter().enumerate() {
        cfg += &format!(
            "[[devices]]\nid = \"D{}\"\nprofile = \"{p}\"\ninterval = \"10ms\"\nmodbus = {{ url = \"{url}\", unit = {} }}\n",
            i + 1,
            i + 1
        );
    }
    std::fs::write(dir.path().join("facilityd.toml"), cfg).expect("config");
    let settings =
        facilityd::settings::load_with_env(&dir.path().join("facilityd.toml"), Default::default())
            .unwrap_or_else(|e| panic!("{e}"));

    // The theoretical maximum for these maps and plans.
    let DeviceSource::Modbus(m) = &settings.devices[0].source else {
        unreachable!("modbus devices")
    };
    let facilityd::modbus::link::Link::Rtu(line) = &m.link else {
        unreachable!("a serial link")
    };
    let timing = BusTiming::new(line);
    let mut round = Duration::ZERO;
    let (mut round_points, mut round_requests) = (0usize, 0usize);
    for (i, d) in settings.devices.iter().enumerate() {
        for r in learned_plan(d, &sim, i as u8 + 1) {
            round += timing.min_read_time(&r);
            round_points += r.points.len();
            round_requests += 1;
        }
    }
    let max_points_per_s = round_points as f64 / round.as_secs_f64();
    let max_requests_per_s = round_requests as f64 / round.as_secs_f64();

    let stats: Vec<Arc<DeviceStats>> = settings.devices.iter().map(|_| Arc::default()).collect();
    let polled: Vec<PolledDevice> = settings
        .devices
        .iter()
        .enumerate()
        .filter_map(|(i, d)| PolledDevice::new(i, d.clone(), stats[i].clone()))
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Record>(4096);
    let sink = RecordSink::new(tx, Arc::new(AtomicU64::new(0)));
    let good = Arc::new(AtomicU64::new(0));
    let counter = tokio::spawn({
        let good = good.clone();
        async move {
            while let Some(r) = rx.recv().await {
                if let Record::Reading(r) = r {
                    good.fetch_add(r.values.len() as u64, Relaxed);
                }
            }
        }
    });
    let poller = LinkPoller::new(m.link.clone(), polled, sink.clone());
    let stop = CancellationToken::new();
    let task = tokio::spawn(poller.run(stop.clone()));

    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
    let served = |st: &[Arc<DeviceStats>]| -> (u64, u64, u64) {
        let bad: u64 = st.iter().map(|s| DeviceStats::get(&s.bad_values)).sum();
        let reqs: u64 = st.iter().map(|s| DeviceStats::get(&s.requests)).sum();
        let errors: u64 = st.iter().map(|s| s.errors()).sum();
        (good.load(Relaxed) + bad, reqs, errors)
    };
    let (p0, r0, e0) = served(&stats);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let (p1, r1, e1) = served(&stats);
    let secs = t0.elapsed().as_secs_f64();
    stop.cancel();
    let _ = task.await;
    drop(sink);
    let _ = counter.await;
    sim.shutdown().await;
    Outcome {
        baud,
        points_per_s: (p1 - p0) as f64 / secs,
        max_points_per_s,
        requests_per_s: (r1 - r0) as f64 / secs,
        max_requests_per_s,
        errors: e1 - e0,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bus benchmark: run it with `cargo bench --bench bus` (skipped under cargo test)");
        return;
    }
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let outcomes: Vec<Outcome> = rt.block_on(async {
        let mut out = Vec::new();
        for &baud in &a.bauds {
            out.push(measure(baud, &a).await);
        }
        out
    });
    println!(
        "serial bus efficiency: lift, pump, fire panel and door (built-in maps) on one paced bus, {} s measured after {} s warm-up",
        a.seconds, a.warmup
    );
    println!(
        "{:>6}  {:>13}  {:>13}  {:>7}  {:>11}  {:>11}  {:>6}",
        "baud", "points/s", "max points/s", "share", "reads/s", "max reads/s", "errors"
    );
    let mut all_met = true;
    for o in &outcomes {
        let share = o.points_per_s / o.max_points_per_s;
        all_met &= share >= 0.85;
        println!(
            "{:>6}  {:>13.1}  {:>13.1}  {:>6.1}%  {:>11.2}  {:>11.2}  {:>6}",
            o.baud,
            o.points_per_s,
            o.max_points_per_s,
            share * 100.0,
            o.requests_per_s,
            o.max_requests_per_s,
            o.errors
        );
    }
    println!(
        "budget: at least 85 % of the theoretical maximum: {}",
        if all_met { "met" } else { "NOT met" }
    );
}
