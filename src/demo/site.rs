//! The demo's site: the simulated devices (Modbus and MQTT), the faults and MQTT events scripted
//! against them, the shipped default rules it runs, and the configuration file it writes for
//! them. What is here decides what the demo shows; `mod.rs` runs it.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::{DemoArgs, DemoInfluxApi};
use crate::model::Value;
use crate::sim::Fault;
use crate::sim::mqtt::{MqttSimAction, MqttSimKind};

/// A device of the demo that publishes over MQTT.
pub(super) struct DemoMqttDevice {
    pub(super) id: &'static str,
    pub(super) profile: &'static str,
    pub(super) kind: MqttSimKind,
    pub(super) building: &'static str,
    pub(super) floor: &'static str,
    pub(super) name: &'static str,
    pub(super) highlights: &'static [&'static str],
}

pub(super) const MQTT_DEVICES: &[DemoMqttDevice] = &[
    DemoMqttDevice {
        id: "DOOR-A-L2-01",
        profile: "access_door_mqtt",
        kind: MqttSimKind::Door,
        building: "A",
        floor: "L2",
        name: "Tower A level 2 office door (MQTT)",
        highlights: &[
            "door_state",
            "door_closed",
            "door_cycles_total",
            "door_forced",
        ],
    },
    DemoMqttDevice {
        id: "EL-A2",
        profile: "lift_monitor_mqtt",
        kind: MqttSimKind::Lift,
        building: "A",
        floor: "B1",
        name: "Tower A passenger lift 2 (MQTT monitoring unit)",
        highlights: &["car_floor", "run_state", "door_state", "trips_total"],
    },
];

/// The scripted MQTT events: (device, action, at seconds, what it shows).
pub(super) fn mqtt_script() -> Vec<(&'static str, MqttSimAction, u64, &'static str)> {
    let mut v = vec![(
        "DOOR-A-L2-01",
        MqttSimAction::ForceDoor,
        30,
        "MQTT door DOOR-A-L2-01 forced open (rule door-forced, at once)",
    )];
    for (k, at) in [38u64, 40, 42, 44, 46].into_iter().enumerate() {
        v.push((
            "DOOR-A-L2-01",
            MqttSimAction::HoldDoorOpen,
            at,
            if k == 4 {
                "MQTT door DOOR-A-L2-01 held open a 5th time (rule door-held-open-repeated)"
            } else {
                ""
            },
        ));
    }
    for (k, at) in [50u64, 52, 54].into_iter().enumerate() {
        v.push((
            "EL-A2",
            MqttSimAction::LiftDoorFault,
            at,
            if k == 2 {
                "MQTT lift EL-A2 reports a 3rd door fault (rule lift-door-faults)"
            } else {
                ""
            },
        ));
    }
    v
}

/// A simulated Modbus device of the demo: its asset, where it is served (port index, unit id)
/// and the points the live view shows.
pub(super) struct DemoDevice {
    pub(super) id: &'static str,
    pub(super) profile: &'static str,
    pub(super) building: &'static str,
    pub(super) floor: &'static str,
    pub(super) name: &'static str,
    pub(super) port: usize,
    pub(super) unit: u8,
    pub(super) highlights: &'static [&'static str],
}

pub(super) const DEVICES: &[DemoDevice] = &[
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
    // The power room (tower A's basement) feeds the whole site: the simulator wires the three
    // together and to every other Modbus device (see `sim/site.rs`).
    DemoDevice {
        id: "PM-A",
        profile: "power_meter",
        building: "A",
        floor: "B2",
        name: "Site mains incomer energy meter",
        port: 0,
        unit: 5,
        highlights: &[
            "voltage_l1_v",
            "power_total_kw",
            "demand_kw",
            "frequency_hz",
            "energy_import_kwh",
        ],
    },
    DemoDevice {
        id: "GEN-A",
        profile: "generator",
        building: "A",
        floor: "B2",
        name: "Site standby generator set",
        port: 0,
        unit: 6,
        highlights: &[
            "control_mode",
            "engine_state",
            "coolant_temp_c",
            "battery_v",
            "fuel_level_pct",
            "run_hours_total",
        ],
    },
    DemoDevice {
        id: "ATS-A",
        profile: "ats",
        building: "A",
        floor: "B2",
        name: "Site mains/generator transfer switch",
        port: 0,
        unit: 7,
        highlights: &[
            "switch_position",
            "s1_state",
            "s2_state",
            "s2_start_relay",
            "operations_total",
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

/// The site's scripted mains failure (from, until; seconds): after the device faults, so the
/// first minute shows them alone.
pub(super) const MAINS_FAILURE: (u64, u64) = (80, 120);

/// The scripted faults: (device, fault, from, until, what it shows). Each trips a shipped
/// default rule within a minute of the start.
pub(super) fn script() -> Vec<(&'static str, Fault, u64, u64, &'static str)> {
    let hold = |point: &str, value: Value| Fault::OutOfRange {
        point: point.into(),
        value,
    };
    vec![
        (
            "EL-A1",
            hold("trapped_alarm", Value::Bool(true)),
            10,
            40,
            "passenger trapped in lift EL-A1 (rule lift-trapped-passenger, at once)",
        ),
        (
            "PU-A1",
            hold("dry_run", Value::Bool(true)),
            15,
            75,
            "booster pump PU-A1 runs dry (rule pump-dry-run, after 30 s)",
        ),
        (
            "DOOR-A-L1-03",
            hold("door_state", Value::Str("open_forced".into())),
            20,
            30,
            "lobby door DOOR-A-L1-03 forced open (rule door-forced, at once)",
        ),
        (
            "FP-A",
            hold("supervisory", Value::Bool(true)),
            25,
            90,
            "fire panel FP-A supervisory: a valve tamper (rule fire-supervisory, at once)",
        ),
        (
            "PU-B1",
            Fault::Silent,
            35,
            70,
            "pump controller PU-B1 stops answering (offline, probed every 10 s)",
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

/// The shipped default rules the demo runs (config/rules/).
pub(super) const RULE_FILES: &[(&str, &str)] = &[
    (
        "10-elevator.toml",
        include_str!("../../config/rules/elevator.toml"),
    ),
    ("20-pump.toml", include_str!("../../config/rules/pump.toml")),
    (
        "21-fire-pump.toml",
        include_str!("../../config/rules/fire_pump.toml"),
    ),
    (
        "30-fire-panel.toml",
        include_str!("../../config/rules/fire_panel.toml"),
    ),
    (
        "40-access-door.toml",
        include_str!("../../config/rules/access_door.toml"),
    ),
    (
        "50-power-meter.toml",
        include_str!("../../config/rules/power_meter.toml"),
    ),
    (
        "51-generator.toml",
        include_str!("../../config/rules/generator.toml"),
    ),
    ("52-ats.toml", include_str!("../../config/rules/ats.toml")),
];

pub(super) fn demo_config(
    args: &DemoArgs,
    addrs: &[SocketAddr],
    listen: SocketAddr,
    mqtt_url: &str,
) -> String {
    let mut cfg = String::new();
    let _ = writeln!(
        cfg,
        "# Written by `facilityd demo`: the configuration the demo runs. Copy it as a start."
    );
    let _ = writeln!(
        cfg,
        "# The default rules it runs are in conf.d/ beside this file."
    );
    let _ = writeln!(
        cfg,
        "[gateway]\nid = \"demo-gw\"\nsite = \"demo-site\"\nstate_dir = {:?}\n",
        args.state_dir.display().to_string()
    );
    let _ = writeln!(
        cfg,
        "[http]\nlisten = \"{listen}\"\napi_token_file = {:?}\n",
        args.state_dir.join("api-token").display().to_string()
    );
    if let Some(url) = &args.influxdb_url {
        let _ = writeln!(
            cfg,
            "[influxdb]\nurl = {url:?}\nbatch_size = 5000\nflush_interval = \"1s\""
        );
        match args.influxdb_api {
            DemoInfluxApi::V2 => {
                let _ = writeln!(
                    cfg,
                    "org = {:?}\nbucket = {:?}",
                    args.influxdb_org, args.influxdb_bucket
                );
                if let Some(t) = &args.influxdb_token_file {
                    let _ = writeln!(cfg, "token_file = {:?}", t.display().to_string());
                }
            }
            DemoInfluxApi::V1 => {
                let _ = writeln!(cfg, "api = \"v1\"\ndatabase = {:?}", args.influxdb_database);
            }
        }
        cfg.push('\n');
    }
    let _ = writeln!(cfg, "[mqtt]\nurl = {mqtt_url:?}\n");
    for d in DEVICES {
        let addr = addrs
            .get(d.port)
            .map_or_else(|| "127.0.0.1:5020".to_string(), |a| a.to_string());
        let tags = if d.id == "PU-B1" {
            "tags = { role = \"fire_pump\" }\n"
        } else {
            ""
        };
        let _ = writeln!(
            cfg,
            "[[devices]]\nid = {:?}\nprofile = {:?}\nname = {:?}\nbuilding = {:?}\nfloor = {:?}\n{tags}interval = \"1s\"\nmodbus = {{ url = \"tcp://{addr}\", unit = {}, timeout = \"300ms\", probe_interval = \"10s\" }}\n",
            d.id, d.profile, d.name, d.building, d.floor, d.unit
        );
    }
    for d in MQTT_DEVICES {
        let _ = writeln!(
            cfg,
            "[[devices]]\nid = {:?}\nprofile = {:?}\nname = {:?}\nbuilding = {:?}\nfloor = {:?}\nmqtt = {{}}   # the profile's mqtt_topic, {{asset}} = this id\n",
            d.id, d.profile, d.name, d.building, d.floor
        );
    }
    let _ = writeln!(
        cfg,
        "[[notify]]\ntype = \"mqtt\"\nid = \"work-orders-bus\"\ntopic = \"facilityd/{{site}}/work-orders/{{asset}}\""
    );
    cfg
}
