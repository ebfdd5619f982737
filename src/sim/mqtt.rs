//! MQTT simulators: access-door controllers and lift monitoring units publishing the JSON of
//! the built-in `access_door_mqtt` and `lift_monitor_mqtt` profiles to a broker, for the demo
//! and the tests.
//!
//! A door publishes a state snapshot on `acs/<building>/doors/<asset>/state` every `interval`
//! and on each change, and its events on `.../event`: people pass now and then (open, closed,
//! counters grow). A lift publishes its status on `lifts/<building>/<asset>/status` every
//! `interval`: the car travels between floors, trips, door cycles and run minutes grow.
//! Scripted [`MqttSimAction`]s inject what the default rules look for: a forced door, a door
//! held open, a lift door fault, a trapped passenger.
//!
//! All messages are QoS 1, stamped with the simulator's clock. With a `supply` flag (the
//! Modbus simulator's site, `SimHandle::site_supply`), the devices publish nothing while it is
//! off (a mains failure), as powerless controllers would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// What a simulated device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttSimKind {
    /// `access_door_mqtt`.
    Door,
    /// `lift_monitor_mqtt`.
    Lift,
}

#[derive(Debug, Clone)]
pub struct MqttSimDevice {
    pub asset: String,
    pub building: String,
    pub kind: MqttSimKind,
}

/// A scripted occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttSimAction {
    /// Door: `OpenForced` and a `DoorForcedOpen` event; closes again 10 s later.
    ForceDoor,
    /// Door: a `DoorHeldOpen` event (state `OpenTooLong` for one snapshot).
    HoldDoorOpen,
    /// Lift: a `door_fault` event.
    LiftDoorFault,
    /// Lift: the trapped-passenger alarm on or off.
    Trapped(bool),
}

#[derive(Debug, Clone)]
pub struct MqttSimSpec {
    pub host: String,
    pub port: u16,
    pub devices: Vec<MqttSimDevice>,
    /// Snapshot / status period.
    pub interval: Duration,
    pub seed: u64,
    /// (asset, time after start, action).
    pub script: Vec<(String, Duration, MqttSimAction)>,
    /// The site's supply: while it is off, nothing is published (`None`: always on).
    pub supply: Option<Arc<AtomicBool>>,
}

#[derive(Debug, Default)]
struct DoorState {
    state: &'static str,
    closed: bool,
    cycles: u64,
    granted: u64,
    denied: u64,
    /// Ticks until a forced or passed door closes again.
    close_in: u32,
}

#[derive(Debug, Default)]
struct LiftState {
    floor: i64,
    target: i64,
    trips: u64,
    door_cycles: u64,
    run_minutes: u64,
    run_ms: u64,
    trapped: bool,
    door: &'static str,
}

enum Model {
    Door(DoorState),
    Lift(LiftState),
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Publishes until `stop`. Connection trouble is retried every second (the broker may start
/// after the simulators); a message that cannot be queued is skipped.
pub async fn run(spec: MqttSimSpec, stop: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let id = format!("facilityd-sim-{:08x}", rng.random::<u32>());
    let mut o = MqttOptions::new(id, spec.host.clone(), spec.port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(o, 1024);
    let poll_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = poll_stop.cancelled() => return,
                ev = eventloop.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => debug!("MQTT simulator connected"),
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "MQTT simulator: broker not reachable; retrying");
                    tokio::select! {
                        _ = poll_stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    });

    let mut models: Vec<Model> = spec
        .devices
        .iter()
        .map(|d| match d.kind {
            MqttSimKind::Door => Model::Door(DoorState {
                state: "LockedShut",
                closed: true,
                cycles: rng.random_range(1_000..50_000),
                granted: rng.random_range(500..20_000),
                denied: rng.random_range(0..200),
                close_in: 0,
            }),
            MqttSimKind::Lift => Model::Lift(LiftState {
                floor: 0,
                target: 0,
                trips: rng.random_range(100_000..900_000),
                door_cycles: rng.random_range(200_000..1_500_000),
                run_minutes: rng.random_range(100_000..400_000),
                door: "closed",
                ..Default::default()
            }),
        })
        .collect();
    let mut script = spec.script.clone();
    script.sort_by_key(|(_, at, _)| *at);
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(spec.interval.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let publish = |topic: String, body: serde_json::Value| {
        if client
            .try_publish(topic, QoS::AtLeastOnce, false, body.to_string())
            .is_err()
        {
            warn!("MQTT simulator: queue full, message skipped");
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if spec
            .supply
            .as_ref()
            .is_some_and(|on| !on.load(Ordering::Relaxed))
        {
            continue;
        }
        let elapsed = started.elapsed();
        // Scripted actions that are due.
        while script.first().is_some_and(|(_, at, _)| *at <= elapsed) {
            let (asset, _, action) = script.remove(0);
            let Some(i) = spec.devices.iter().position(|d| d.asset == asset) else {
                continue;
            };
            let d = &spec.devices[i];
            match (&mut models[i], action) {
                (Model::Door(s), MqttSimAction::ForceDoor) => {
                    s.state = "OpenForced";
                    s.closed = false;
                    s.close_in = (10_000 / spec.interval.as_millis().max(1)) as u32;
                    publish(
                        door_topic(d, "event"),
                        json!({"event": "DoorForcedOpen", "ts": now_rfc3339()}),
                    );
                }
                (Model::Door(s), MqttSimAction::HoldDoorOpen) => {
                    s.state = "OpenTooLong";
                    s.closed = false;
                    s.close_in = 1;
                    publish(
                        door_topic(d, "event"),
                        json!({"event": "DoorHeldOpen", "ts": now_rfc3339()}),
                    );
                }
                (Model::Lift(_), MqttSimAction::LiftDoorFault) => {
                    publish(
                        lift_topic(d, "event"),
                        json!({"event": "door_fault", "ts": now_ms()}),
                    );
                }
                (Model::Lift(s), MqttSimAction::Trapped(on)) => s.trapped = on,
                _ => {}
            }
        }
        for (i, d) in spec.devices.iter().enumerate() {
            match &mut models[i] {
                Model::Door(s) => {
                    if s.close_in > 0 {
                        s.close_in -= 1;
                        if s.close_in == 0 {
                            s.state = "LockedShut";
                            s.closed = true;
                            s.cycles += 1;
                        }
                    } else if s.closed && rng.random_bool(0.15) {
                        s.state = "Open";
                        s.closed = false;
                        s.granted += 1;
                        s.close_in = 1;
                    } else if rng.random_bool(0.02) {
                        s.denied += 1;
                    }
                    publish(
                        door_topic(d, "state"),
                        json!({
                            "state": s.state,
                            "closed": s.closed,
                            "rex": false,
                            "reader": {"online": true, "tamper": false},
                            "controller": {"tamper": false, "mains_fail": false,
                                           "battery_v": 13.2 + rng.random_range(0.0..0.3), "battery": "good"},
                            "lock": {"current_ma": if s.closed { 180 + rng.random_range(0..20) } else { 0 }, "fault": false},
                            "faults": {"door_sensor": false, "rex": false},
                            "held_open_s": if s.state == "OpenTooLong" { 45 } else { 0 },
                            "counters": {"cycles": s.cycles, "granted": s.granted, "denied": s.denied},
                            "ts": now_rfc3339(),
                        }),
                    );
                }
                Model::Lift(s) => {
                    let step_ms = spec.interval.as_millis() as u64;
                    let direction = if s.trapped {
                        s.door = "closed";
                        "stopped"
                    } else if s.floor == s.target {
                        s.target = rng.random_range(0..20);
                        s.door = "open";
                        s.door_cycles += 1;
                        "stopped"
                    } else {
                        s.door = "closed";
                        s.floor += (s.target - s.floor).signum();
                        s.run_ms += step_ms;
                        if s.floor == s.target {
                            s.trips += 1;
                        }
                        if s.target > s.floor { "up" } else { "down" }
                    };
                    s.run_minutes += s.run_ms / 60_000;
                    s.run_ms %= 60_000;
                    publish(
                        lift_topic(d, "status"),
                        json!({
                            "ts": now_ms(),
                            "car": {"floor": s.floor, "direction": direction,
                                    "load_pct": rng.random_range(0..60), "leveling_mm": rng.random_range(-3..4)},
                            "doors": {"state": s.door},
                            "mode": "normal",
                            "counters": {"trips": s.trips, "door_cycles": s.door_cycles, "run_minutes": s.run_minutes},
                            "alarms": {"trapped": s.trapped, "safety_circuit_open": false, "overload": false},
                            "fault": {"code": 0, "level": 0},
                            "drive": {"heatsink_c": 38.0 + rng.random_range(0.0..6.0),
                                      "motor_current_a": if direction == "stopped" { 0.0 } else { 11.0 + rng.random_range(0.0..3.0) }},
                        }),
                    );
                }
            }
        }
    }
}

fn door_topic(d: &MqttSimDevice, leaf: &str) -> String {
    format!("acs/{}/doors/{}/{leaf}", d.building, d.asset)
}

fn lift_topic(d: &MqttSimDevice, leaf: &str) -> String {
    format!("lifts/{}/{}/{leaf}", d.building, d.asset)
}
