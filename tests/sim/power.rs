//! The power room over Modbus: a mains failure across the site, its two failing variants, and
//! a device held silent through it. Registers are read with tokio-modbus and decoded by hand
//! from the built-in maps (SDM630 f32 input registers, GenComm and ATyS holding registers,
//! GenComm's 4-bit alarm fields), so the simulator's encoding is checked too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use facilityd::sim::{
    Fault, FaultArg, FaultChange, FleetSpec, MainsFailure, SimDeviceInfo, SimHandle, start,
};
use tokio_modbus::Slave;
use tokio_modbus::client::{Reader, tcp};

use super::{NO_REPLY, any_port};

/// EL-0001, PU-0001, PU-0002 and the power room, on one port.
fn fleet(frozen: bool, faults: &[&str]) -> FleetSpec {
    let mut f = FleetSpec::new(any_port());
    f.elevators = 1;
    f.pumps = 2;
    f.fire_panels = 0;
    f.doors = 0;
    f.power_room = true;
    f.frozen = frozen;
    f.faults = faults
        .iter()
        .map(|t| FaultArg::parse(t).expect("valid fault"))
        .collect();
    f
}

fn device(h: &SimHandle, name: &str) -> SimDeviceInfo {
    h.devices()
        .into_iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

/// Reads `n` registers (input or holding); `None` when the device does not answer in time.
async fn read(addr: SocketAddr, unit: u8, input: bool, at: u16, n: u16) -> Option<Vec<u16>> {
    let mut ctx = tcp::connect_slave(addr, Slave(unit)).await.ok()?;
    let r = if input {
        tokio::time::timeout(NO_REPLY, ctx.read_input_registers(at, n)).await
    } else {
        tokio::time::timeout(NO_REPLY, ctx.read_holding_registers(at, n)).await
    };
    match r {
        Ok(Ok(Ok(words))) => Some(words),
        Ok(other) => panic!("unit {unit} at {at}: {other:?}"),
        Err(_) => None,
    }
}

async fn answers(h: &SimHandle, name: &str) -> bool {
    let d = device(h, name);
    let input = d.profile == "elevator";
    read(d.addr, d.unit, input, 0, 1).await.is_some()
}

/// What the tests look at, read over Modbus.
#[derive(Debug, Clone, PartialEq)]
struct Room {
    meter_v: f32,
    meter_a: f32,
    meter_hz: f32,
    /// ATS: 1 pos_0, 2 pos_i, 3 pos_ii.
    position: u16,
    start_relay: u16,
    /// 0 under_threshold, 1 present, 2 available.
    s1: u16,
    s2: u16,
    operations: u16,
    /// GenComm engine state: 0 stopped, 1 pre_start, 2 warming_up, 3 running, 4 cooling_down.
    engine: u16,
    gen_kw: f64,
    /// The 4-bit alarm state: 1 inactive, 3 shutdown.
    fail_to_start: u16,
    /// Bits 8-11 of the same register as `fail_to_start`.
    over_speed: u16,
    shutdown_alarm: bool,
}

fn f32_at(w: &[u16], i: usize) -> f32 {
    f32::from_bits((u32::from(w[i]) << 16) | u32::from(w[i + 1]))
}

async fn room(h: &SimHandle) -> Room {
    let pm = device(h, "PM-0001");
    let gen_ = device(h, "GEN-0001");
    let ats = device(h, "ATS-0001");
    let m = read(pm.addr, pm.unit, true, 0, 8)
        .await
        .expect("meter answers");
    let hz = read(pm.addr, pm.unit, true, 70, 2)
        .await
        .expect("meter answers");
    let a = read(ats.addr, ats.unit, false, 20482, 8)
        .await
        .expect("ATS answers");
    let ops = read(ats.addr, ats.unit, false, 20489, 1)
        .await
        .expect("ATS answers");
    let g = |at, n| read(gen_.addr, gen_.unit, false, at, n);
    let engine = g(1408, 1).await.expect("generator answers")[0];
    let kw = g(1536, 2).await.expect("generator answers");
    let alarms = g(2050, 1).await.expect("generator answers")[0];
    let status = g(774, 1).await.expect("generator answers")[0];
    Room {
        meter_v: f32_at(&m, 0),
        meter_a: f32_at(&m, 6),
        meter_hz: f32_at(&hz, 0),
        position: a[0],
        start_relay: a[2],
        s1: a[4],
        s2: a[5],
        operations: ops[0],
        engine,
        gen_kw: f64::from(((u32::from(kw[0]) << 16) | u32::from(kw[1])) as i32) / 1000.0,
        fail_to_start: (alarms >> 4) & 0xF,
        over_speed: (alarms >> 8) & 0xF,
        shutdown_alarm: status & (1 << 12) != 0,
    }
}

/// Polls until `done` (every 100 ms), for at most `limit`.
async fn until(h: &SimHandle, limit: Duration, what: &str, done: impl Fn(&Room) -> bool) -> Room {
    let deadline = Instant::now() + limit;
    loop {
        let r = room(h).await;
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn mains_failure_transfers_to_the_generator_and_back() {
    // The scheduled scenario in real time, and a pump whose own supply fault outlasts it.
    let h = start(
        fleet(false, &["mains-failure@1s..15s", "PU-0002=silent@1s"])
            .build()
            .expect("fits"),
    )
    .await
    .expect("starts");
    let t0 = Instant::now();
    let before = room(&h).await;
    assert!((225.0..235.0).contains(&before.meter_v), "{before:?}");
    assert!(before.meter_a > 10.0, "the building's load: {before:?}");
    assert_eq!((before.position, before.s1, before.engine), (2, 2, 0));
    assert_eq!((before.start_relay, before.fail_to_start), (0, 1));
    assert!(answers(&h, "EL-0001").await && answers(&h, "PU-0002").await);

    // The failure: the meter at the incomer reads nothing, the switch sees source 1 go.
    let r = until(&h, Duration::from_secs(3), "mains lost", |r| r.s1 == 0).await;
    assert_eq!((r.meter_v, r.meter_a, r.meter_hz), (0.0, 0.0, 0.0));
    assert_eq!(r.position, 2, "still on I: nothing to transfer to yet");
    assert!(!answers(&h, "EL-0001").await, "the lift has no supply");
    assert!(!answers(&h, "PU-0001").await, "the pump has no supply");

    // Start relay, the set runs, the switch transfers.
    until(&h, Duration::from_secs(5), "start relay", |r| {
        r.start_relay == 1
    })
    .await;
    let r = until(&h, Duration::from_secs(15), "transfer", |r| r.position == 3).await;
    let transferred = t0.elapsed();
    assert!(
        (Duration::from_secs(8)..Duration::from_secs(15)).contains(&transferred),
        "on the generator after {transferred:?}"
    );
    assert_eq!((r.engine, r.s2), (3, 2), "{r:?}");
    assert_eq!(r.operations, before.operations + 2, "I -> 0 -> II");
    let r = until(&h, Duration::from_secs(2), "load on the set", |r| {
        r.gen_kw > 0.0
    })
    .await;
    assert!(
        (20.0..200.0).contains(&r.gen_kw),
        "the building's load: {r:?}"
    );
    assert_eq!(r.meter_v, 0.0, "still no mains");
    assert!(answers(&h, "EL-0001").await, "supply back on the generator");
    assert!(answers(&h, "PU-0001").await);
    assert!(!answers(&h, "PU-0002").await, "its own fault holds");

    // Mains back at 15 s: present, then available after the retransfer delay; back to I.
    let r = until(&h, Duration::from_secs(6), "mains back", |r| r.s1 != 0).await;
    assert!(
        r.meter_v > 220.0 && r.meter_a == 0.0,
        "voltage, no load yet: {r:?}"
    );
    assert_eq!(r.position, 3);
    let r = until(&h, Duration::from_secs(15), "retransfer", |r| {
        r.position == 2
    })
    .await;
    assert!(
        t0.elapsed() >= Duration::from_secs(25),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!((r.start_relay, r.s1), (0, 2));
    assert_eq!(r.operations, before.operations + 4);
    let r = until(&h, Duration::from_secs(2), "meter on load", |r| {
        r.meter_a > 10.0
    })
    .await;
    assert_eq!(r.gen_kw, 0.0);
    until(&h, Duration::from_secs(3), "cooling down", |r| {
        r.engine == 4
    })
    .await;
    until(&h, Duration::from_secs(13), "stopped", |r| r.engine == 0).await;
    assert!(answers(&h, "EL-0001").await && answers(&h, "PU-0001").await);
    assert!(
        !answers(&h, "PU-0002").await,
        "a device held silent stays silent"
    );
}

/// Frozen: moved by `advance` in the power room's steps.
async fn frozen_site() -> SimHandle {
    start(fleet(true, &[]).build().expect("fits"))
        .await
        .expect("starts")
}

fn fail(h: &SimHandle, how: MainsFailure) {
    h.change_site_fault(FaultChange::Set(Fault::MainsFailure(how)))
        .expect("a site");
}

#[tokio::test]
async fn generator_fails_to_start_and_the_site_stays_dark() {
    let h = frozen_site().await;
    let before = room(&h).await;
    fail(&h, MainsFailure::GeneratorFailsToStart);
    assert!(!answers(&h, "EL-0001").await);
    h.advance(Duration::from_secs(4));
    let r = room(&h).await;
    assert_eq!((r.start_relay, r.engine), (1, 1), "cranking: {r:?}");
    h.advance(Duration::from_secs(16));
    let r = room(&h).await;
    assert_eq!(r.fail_to_start, 3, "fail_to_start = shutdown: {r:?}");
    assert_eq!(r.over_speed, 1, "its neighbour in the word stays inactive");
    assert!(r.shutdown_alarm);
    assert_eq!((r.engine, r.s2, r.position), (0, 0, 2));
    assert_eq!(r.operations, before.operations);
    h.advance(Duration::from_secs(30));
    assert_eq!(room(&h).await.fail_to_start, 3, "latched");
    assert!(!answers(&h, "EL-0001").await && !answers(&h, "PU-0001").await);
    // Restored: back on the mains at once (the switch never left I), the alarm reset.
    h.change_site_fault(FaultChange::ClearAll).expect("a site");
    assert!(answers(&h, "EL-0001").await && answers(&h, "PU-0001").await);
    // The start relay stays up for the retransfer delay: the reset set starts meanwhile,
    // then cools down and stops.
    h.advance(Duration::from_secs(11));
    let r = room(&h).await;
    assert_eq!(
        (r.fail_to_start, r.shutdown_alarm),
        (1, false),
        "reset: {r:?}"
    );
    assert_eq!((r.start_relay, r.s1, r.position), (0, 2, 2));
    h.advance(Duration::from_secs(11));
    assert_eq!(room(&h).await.engine, 0);
}

#[tokio::test]
async fn ats_fails_to_transfer_and_the_switch_stays_on_the_mains() {
    let h = frozen_site().await;
    let before = room(&h).await;
    fail(&h, MainsFailure::AtsFailsToTransfer);
    h.advance(Duration::from_secs(20));
    let r = room(&h).await;
    assert_eq!(
        (r.engine, r.s2),
        (3, 2),
        "the set runs and is available: {r:?}"
    );
    assert_eq!(
        (r.position, r.operations),
        (2, before.operations),
        "never moved"
    );
    assert_eq!(r.gen_kw, 0.0, "carries nothing");
    assert!(!answers(&h, "EL-0001").await && !answers(&h, "PU-0002").await);
    h.change_site_fault(FaultChange::ClearAll).expect("a site");
    assert!(answers(&h, "EL-0001").await);
    // Mains available after the retransfer delay: relay down, the set cools down and stops.
    h.advance(Duration::from_secs(11));
    assert_eq!(room(&h).await.start_relay, 0);
    h.advance(Duration::from_secs(11));
    assert_eq!(room(&h).await.engine, 0);
}

#[tokio::test]
async fn generator_exercise_on_a_held_mode() {
    let h = start(
        fleet(true, &["GEN-0001=control_mode=test_on_load"])
            .build()
            .expect("fits"),
    )
    .await
    .expect("starts");
    h.advance(Duration::from_secs(8));
    let r = room(&h).await;
    assert_eq!((r.engine, r.position), (3, 2), "{r:?}");
    assert!(
        (r.gen_kw - 120.0).abs() < 1e-3,
        "a load bank at 60 %: {r:?}"
    );
    assert!(answers(&h, "EL-0001").await, "the site stays on the mains");
    let g = device(&h, "GEN-0001");
    assert_eq!(
        h.point_values(g.port, g.unit)
            .expect("unit")
            .into_iter()
            .find(|(n, _)| n == "control_mode")
            .map(|(_, v)| v),
        Some(facilityd::model::Value::Str("test_on_load".into()))
    );
    h.clear_fault(g.port, g.unit, facilityd::sim::FaultKind::OutOfRange)
        .expect("unit");
    h.advance(Duration::from_secs(11));
    assert_eq!(room(&h).await.engine, 0);
}

#[tokio::test]
async fn site_faults_need_a_power_room() {
    let mut f = fleet(true, &["mains-failure@1s"]);
    f.power_room = false;
    assert!(f.build().is_err());
    let h = start(fleet(true, &[]).build().expect("fits"))
        .await
        .expect("starts");
    assert!(
        h.change_site_fault(FaultChange::Set(Fault::Silent))
            .is_err()
    );
    let g = device(&h, "GEN-0001");
    assert!(
        h.set_fault(
            g.port,
            g.unit,
            Some(Fault::MainsFailure(MainsFailure::Transfer))
        )
        .is_err()
    );
}
