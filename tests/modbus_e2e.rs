//! End to end with real components: the project's simulators and an independent pymodbus
//! server as devices, a real VictoriaMetrics as the database, the gateway in between.
//! Expected values are computed here from the devices' register contents, never copied.

mod support;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use facilityd::modbus::stats::DeviceStats;
use facilityd::sim::{Fault, ScheduledFault, SimDeviceSpec, SimPortSpec, SimSpec};
use serde_json::json;
use support::{Daemon, ExportedSeries, PyModbusServer, VictoriaMetrics, find_series};

fn local0() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Writes `body` as facilityd.toml (and conf.d files) into a temp dir and loads it.
fn load_config(
    dir: &std::path::Path,
    body: &str,
    conf_d: &[(&str, &str)],
) -> facilityd::settings::Settings {
    std::fs::write(dir.join("facilityd.toml"), body).unwrap();
    if !conf_d.is_empty() {
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        for (name, text) in conf_d {
            std::fs::write(dir.join("conf.d").join(name), text).unwrap();
        }
    }
    facilityd::settings::load_with_env(&dir.join("facilityd.toml"), Default::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn header(dir: &std::path::Path, vm: &VictoriaMetrics, flush: &str) -> String {
    format!(
        "[gateway]\nid = \"gw-test\"\nsite = \"tower-a\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[influxdb]\nurl = {:?}\norg = \"facility\"\nbucket = \"telemetry\"\ntoken = \"t\"\nflush_interval = {flush:?}\n\n",
        dir.join("state").display().to_string(),
        vm.url()
    )
}

fn series_of<'a>(
    all: &'a [ExportedSeries],
    measurement: &str,
    field: &str,
    asset: &str,
) -> Option<&'a ExportedSeries> {
    find_series(all, &format!("{measurement}_{field}"), &[("asset", asset)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_fleet_lands_in_victoriametrics_exactly_with_tags() {
    let vm = VictoriaMetrics::start().await;
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![
            SimPortSpec {
                listen: local0(),
                devices: vec![
                    SimDeviceSpec::new(1, "elevator"),
                    SimDeviceSpec::new(2, "pump"),
                ],
            },
            SimPortSpec {
                listen: local0(),
                devices: vec![
                    SimDeviceSpec::new(1, "fire_panel"),
                    SimDeviceSpec::new(7, "access_door"),
                ],
            },
        ],
        frozen: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let a = sim.addrs();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}[[devices]]\nid = \"EL-A1\"\nprofile = \"elevator\"\nbuilding = \"A\"\nfloor = \"B1\"\ntags = {{ vendor = \"acme\" }}\ninterval = \"250ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1, timeout = \"200ms\" }}\n\n\
         [[devices]]\nid = \"PU-A1\"\nprofile = \"pump\"\nbuilding = \"A\"\ninterval = \"250ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 2, timeout = \"200ms\" }}\n\n\
         [[devices]]\nid = \"FP-A\"\nprofile = \"fire_panel\"\nsite = \"tower-b\"\ninterval = \"250ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1, timeout = \"200ms\" }}\n\n\
         [[devices]]\nid = \"DOOR-1\"\nprofile = \"access_door\"\nfloor = \"L1\"\ninterval = \"250ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 7, timeout = \"200ms\" }}\n",
        header(dir.path(), &vm, "200ms"),
        a[0],
        a[0],
        a[1],
        a[1]
    );
    let settings = load_config(dir.path(), &cfg, &[]);
    let (gw, stop, task) = support::spawn_gateway(settings);

    let devices = [
        ("EL-A1", 0usize, 1u8),
        ("PU-A1", 0, 2),
        ("FP-A", 1, 1),
        ("DOOR-1", 1, 7),
    ];
    let all = vm
        .wait_for_series(
            "{asset=~\".+\"}",
            |s| {
                devices.iter().all(|(id, _, _)| {
                    s.iter()
                        .filter(|x| x.label("asset") == Some(id) && x.points().len() >= 2)
                        .count()
                        >= 5
                })
            },
            Duration::from_secs(20),
        )
        .await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let mut checked = 0;
    for (i, (id, port, unit)) in devices.iter().enumerate() {
        let d = &gw.settings.devices[i];
        assert_eq!(&*d.id, *id);
        for p in &d.profile.points {
            let s = series_of(&all, &d.profile.measurement, &p.name, id);
            match support::expected_from_registers(&sim, *port, *unit, p) {
                Some(Some(want)) => {
                    let s =
                        s.unwrap_or_else(|| panic!("{id}.{} missing from the database", p.name));
                    for (_, got) in s.points() {
                        assert!(
                            support::same(got, want),
                            "{id}.{}: database holds {got}, device registers say {want}",
                            p.name
                        );
                    }
                    checked += 1;
                }
                Some(None) => assert!(
                    s.is_none(),
                    "{id}.{}: a not-available sentinel was written as a value",
                    p.name
                ),
                None => assert!(s.is_some(), "{id}.{} missing from the database", p.name),
            }
        }
        // Tags: the standard set plus the device's own.
        let s = series_of(&all, "device_status", "online", id)
            .unwrap_or_else(|| panic!("no device_status for {id}"));
        assert_eq!(s.label("gateway"), Some("gw-test"));
        assert_eq!(s.label("device_type"), Some(d.profile.device_type.as_str()));
        assert!(
            s.values.iter().all(|v| *v == 1.0),
            "{id} was reported offline: {:?}",
            s.values
        );
    }
    assert!(checked > 40, "only {checked} numeric points checked");
    let el = series_of(&all, "elevator", "trips_total", "EL-A1").unwrap();
    let labels = el.labels();
    assert_eq!(labels.get("site"), Some(&"tower-a"));
    assert_eq!(labels.get("building"), Some(&"A"));
    assert_eq!(labels.get("floor"), Some(&"B1"));
    assert_eq!(labels.get("vendor"), Some(&"acme"));
    assert_eq!(
        series_of(&all, "fire_panel", "alarm_count", "FP-A")
            .unwrap()
            .label("site"),
        Some("tower-b")
    );
    assert_eq!(
        series_of(&all, "access_door", "lock_current_ma", "DOOR-1")
            .unwrap()
            .label("building"),
        None
    );
    assert_eq!(gw.telemetry.lines_dropped.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_unit_does_not_stall_the_others_on_its_link() {
    let vm = VictoriaMetrics::start().await;
    let mut dead = SimDeviceSpec::new(2, "pump");
    dead.faults = ScheduledFault::window(Fault::Silent, Duration::ZERO, None);
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: local0(),
            devices: vec![
                SimDeviceSpec::new(1, "elevator"),
                dead,
                SimDeviceSpec::new(3, "access_door"),
            ],
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("tcp://{}", sim.addrs()[0]);
    let dir = tempfile::tempdir().unwrap();
    let (interval_ms, timeout_ms) = (200u64, 150u64);
    let mut cfg = header(dir.path(), &vm, "200ms");
    for (id, profile, unit) in [
        ("EL-1", "elevator", 1),
        ("PU-DEAD", "pump", 2),
        ("DOOR-1", "access_door", 3),
    ] {
        cfg += &format!(
            "[[devices]]\nid = \"{id}\"\nprofile = \"{profile}\"\ninterval = \"{interval_ms}ms\"\nmodbus = {{ url = \"{url}\", unit = {unit}, timeout = \"{timeout_ms}ms\", probe_interval = \"1s\" }}\n\n"
        );
    }
    let (gw, stop, task) = support::spawn_gateway(load_config(dir.path(), &cfg, &[]));
    let run_for = Duration::from_secs(5);
    tokio::time::sleep(run_for).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    vm.sync().await;
    let all = vm.export("{__name__=~\"device_status_online|elevator_trips_total|access_door_door_cycles_total|pump_.*\"}").await;

    for (id, field) in [
        ("EL-1", "elevator_trips_total"),
        ("DOOR-1", "access_door_door_cycles_total"),
    ] {
        let s = find_series(&all, field, &[("asset", id)])
            .unwrap_or_else(|| panic!("no readings from {id}"));
        let ts = &s.timestamps;
        let expected = (run_for.as_millis() as u64 / interval_ms) as usize;
        assert!(
            ts.len() * 10 >= expected * 8,
            "{id}: {} readings in {run_for:?}, expected about {expected}",
            ts.len()
        );
        let worst = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        // interval + timeout, plus scheduling slack on a loaded 2-core machine.
        assert!(
            worst <= (interval_ms + timeout_ms + 60) as i64,
            "{id}: a gap of {worst} ms between polls (interval {interval_ms} + timeout {timeout_ms})"
        );
    }
    assert!(
        all.iter().all(|s| !s.name().starts_with("pump_")),
        "the silent unit produced values"
    );
    let dead = find_series(&all, "device_status_online", &[("asset", "PU-DEAD")])
        .expect("device_status while offline");
    assert!(dead.values.iter().all(|v| *v == 0.0));
    assert!(
        dead.values.len() >= 15,
        "device_status is written every interval also while offline: {}",
        dead.values.len()
    );
    let stats = &gw.device_stats[1];
    let timeouts = DeviceStats::get(&stats.timeouts);
    // Two cycles before it is declared offline, then one probe per second.
    assert!(
        (2..=2 + 6).contains(&timeouts),
        "{timeouts} timeouts for the dead unit in {run_for:?}"
    );
    assert!(!stats.online.load(Relaxed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_merged_read_is_split_once_and_remembered() {
    let vm = VictoriaMetrics::start().await;
    // Registers 0, 1 and 5 exist; 2-4 are a hole the planner merges across (max_gap 10).
    let profile_toml = "[[profiles]]\nname = \"holey\"\ndevice_type = \"other\"\npoints = [\n  { name = \"a\", kind = \"gauge\", register = \"holding\", address = 0 },\n  { name = \"b\", kind = \"gauge\", register = \"holding\", address = 1 },\n  { name = \"c\", kind = \"gauge\", register = \"holding\", address = 5, scale = 0.5 },\n]\n";
    let profile = {
        let dir = tempfile::tempdir().unwrap();
        let s = load_config(
            dir.path(),
            &format!("[gateway]\nid = \"x\"\n{profile_toml}"),
            &[],
        );
        s.profiles["holey"].as_ref().clone()
    };
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: local0(),
            devices: vec![SimDeviceSpec::new(1, profile)],
        }],
        frozen: true,
        ..Default::default()
    })
    .await
    .unwrap();
    sim.set_point(0, 1, "a", facilityd::model::Value::Float(11.0))
        .unwrap();
    sim.set_point(0, 1, "c", facilityd::model::Value::Float(21.5))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}{profile_toml}\n[[devices]]\nid = \"H-1\"\nprofile = \"holey\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1, timeout = \"200ms\" }}\n",
        header(dir.path(), &vm, "200ms"),
        sim.addrs()[0]
    );
    let (gw, stop, task) = support::spawn_gateway(load_config(dir.path(), &cfg, &[]));
    let all = vm
        .wait_for_series(
            "{asset=\"H-1\"}",
            |s| find_series(s, "other_c", &[]).is_some_and(|s| s.values.len() >= 10),
            Duration::from_secs(20),
        )
        .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let stats = &gw.device_stats[0];
    let polls = DeviceStats::get(&stats.polls);
    let served = sim.requests_served(0, 1).unwrap();
    assert!(polls >= 10);
    // One refused merged read in the first cycle, then two reads per cycle.
    assert_eq!(
        served,
        2 * polls + 1,
        "{served} requests for {polls} cycles"
    );
    assert_eq!(DeviceStats::get(&stats.exceptions), 1);
    assert_eq!(DeviceStats::get(&stats.splits), 1);
    assert_eq!(
        find_series(&all, "other_a", &[]).unwrap().last_value(),
        Some(11.0)
    );
    assert_eq!(
        find_series(&all, "other_c", &[]).unwrap().last_value(),
        Some(21.5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_from_conf_d_are_polled_too() {
    let vm = VictoriaMetrics::start().await;
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: local0(),
            devices: vec![SimDeviceSpec::new(1, "pump"), SimDeviceSpec::new(2, "pump")],
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("tcp://{}", sim.addrs()[0]);
    let dir = tempfile::tempdir().unwrap();
    let main = format!(
        "{}[[devices]]\nid = \"PU-MAIN\"\nprofile = \"pump\"\ninterval = \"200ms\"\nmodbus = {{ url = \"{url}\", unit = 1 }}\n",
        header(dir.path(), &vm, "200ms")
    );
    let extra = format!(
        "[[devices]]\nid = \"PU-CONFD\"\nprofile = \"pump\"\ninterval = \"200ms\"\nmodbus = {{ url = \"{url}\", unit = 2 }}\n"
    );
    let (_gw, stop, task) =
        support::spawn_gateway(load_config(dir.path(), &main, &[("50-pumps.toml", &extra)]));
    let all = vm
        .wait_for_series(
            "pump_discharge_pressure_bar",
            |s| {
                ["PU-MAIN", "PU-CONFD"].iter().all(|a| {
                    find_series(s, "pump_discharge_pressure_bar", &[("asset", a)]).is_some()
                })
            },
            Duration::from_secs(20),
        )
        .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    for a in ["PU-MAIN", "PU-CONFD"] {
        assert!(
            find_series(&all, "pump_discharge_pressure_bar", &[("asset", a)]).is_some(),
            "{a} not polled"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_daemon_within_5s_with_what_it_polled_written() {
    let vm = VictoriaMetrics::start().await;
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: local0(),
            devices: vec![SimDeviceSpec::new(1, "elevator")],
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A flush interval far beyond the test: the only write is the one at shutdown.
    let cfg = format!(
        "{}[[devices]]\nid = \"EL-T\"\nprofile = \"elevator\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1 }}\n",
        header(dir.path(), &vm, "1h"),
        sim.addrs()[0]
    );
    std::fs::write(dir.path().join("facilityd.toml"), &cfg).unwrap();
    let cfg_path = dir.path().join("facilityd.toml").display().to_string();
    let mut daemon = Daemon::start(
        env!("CARGO_BIN_EXE_facilityd"),
        &["run", "-c", &cfg_path],
        &[],
    );
    assert!(
        daemon
            .wait_for_output("polling link", Duration::from_secs(10))
            .await,
        "{}",
        daemon.output()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    vm.sync().await;
    assert!(
        vm.export("{asset=\"EL-T\"}").await.is_empty(),
        "written before shutdown: the test would prove nothing"
    );
    let t0 = std::time::Instant::now();
    daemon.sigterm();
    let status = daemon.wait_with_timeout(Duration::from_secs(5)).await;
    let took = t0.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("still running 5 s after SIGTERM\n{}", daemon.output()));
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        daemon.output()
    );
    let all = vm
        .wait_for_series(
            "elevator_trips_total",
            |s| !s.is_empty(),
            Duration::from_secs(10),
        )
        .await;
    let s = find_series(&all, "elevator_trips_total", &[("asset", "EL-T")])
        .unwrap_or_else(|| panic!("nothing written at shutdown\n{}", daemon.output()));
    assert!(
        s.values.len() >= 10,
        "only {} polls written",
        s.values.len()
    );
    assert!(took < Duration::from_secs(5));
}

/// A third-party Modbus server (pymodbus, another process) with its own register map, set
/// up as the configuration reference shows: mixed word orders, scaled values, bits in a register, coils,
/// discrete inputs, undefined registers between two blocks, two unit ids behind one port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_device_values_land_exactly_at_the_minimum_request_count() {
    let vm = VictoriaMetrics::start().await;
    fn unit_map(base: u32) -> serde_json::Value {
        let big: u32 = 3_000_000_000 + base; // u32 ABCD
        let neg: i32 = -123_456 - base as i32; // i32 CDAB
        let f = (21.75f32 + base as f32).to_bits(); // f32 BADC
        let d = (-1234.5678f64 - f64::from(base)).to_bits(); // f64 DCBA
        let swap = |w: u16| w.rotate_left(8);
        json!({
            "holding": {
                "0": big >> 16, "1": big & 0xFFFF,
                "2": (neg as u32) & 0xFFFF, "3": (neg as u32) >> 16,
                "4": swap((f >> 16) as u16), "5": swap((f & 0xFFFF) as u16),
                "6": 2345 + base,            // u16 x 0.1
                "7": 0b1010,                 // bits 1 and 3 set
                // 8-11 undefined: a hole the planner merges across and learns to avoid
                "12": swap((d & 0xFFFF) as u16), "13": swap(((d >> 16) & 0xFFFF) as u16),
                "14": swap(((d >> 32) & 0xFFFF) as u16), "15": swap((d >> 48) as u16),
            },
            "input": { "10": (-42i16 - base as i16) as u16, "11": 65535 },
            "coils": { "0": true, "1": base % 2 == 1 },
            "discrete": { "3": true, "4": false },
        })
    }
    let server =
        PyModbusServer::start(&json!({ "units": { "1": unit_map(0), "2": unit_map(1) } })).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"{}
[[profiles]]
name = "acme_lift_v2"
device_type = "elevator"
measurement = "elevator"
points = [
  {{ name = "trips_total", kind = "counter", register = "holding", address = 0, type = "u32", order = "ABCD" }},
  {{ name = "offset_mm", kind = "gauge", register = "holding", address = 2, type = "i32", order = "CDAB" }},
  {{ name = "cabin_temp_c", kind = "gauge", register = "holding", address = 4, type = "f32", order = "BADC", unit = "degC" }},
  {{ name = "load_kg", kind = "gauge", register = "holding", address = 6, type = "u16", scale = 0.1, unit = "kg" }},
  {{ name = "door_open", kind = "state", register = "holding", address = 7, type = "bool", bit = 1 }},
  {{ name = "overload", kind = "alarm", register = "holding", address = 7, type = "bool", bit = 2 }},
  {{ name = "in_service", kind = "state", register = "holding", address = 7, type = "bool", bit = 3 }},
  {{ name = "energy_kwh", kind = "gauge", register = "holding", address = 12, type = "f64", order = "DCBA" }},
  {{ name = "motor_temp_c", kind = "gauge", register = "input", address = 10, type = "i16", scale = 0.5, offset = 1.0, unit = "degC" }},
  {{ name = "hoistway_temp_c", kind = "gauge", register = "input", address = 11, type = "u16", na = 65535 }},
  {{ name = "door_fault", kind = "alarm", register = "discrete", address = 3 }},
  {{ name = "light_curtain", kind = "state", register = "discrete", address = 4 }},
  {{ name = "bypass", kind = "alarm", register = "coil", address = 0 }},
  {{ name = "ucm_test", kind = "state", register = "coil", address = 1 }},
]

[[devices]]
id = "EL-A1"
profile = "acme_lift_v2"
name = "Tower A passenger lift 1"
building = "A"
floor = "B1"
tags = {{ vendor = "acme" }}
interval = "200ms"
modbus = {{ url = "{url}", unit = 1, timeout = "500ms" }}

[[devices]]
id = "EL-A2"
profile = "acme_lift_v2"
building = "A"
interval = "200ms"
modbus = {{ url = "{url}", unit = 2, timeout = "500ms" }}
"#,
        header(dir.path(), &vm, "200ms"),
        url = server.url()
    );
    let settings = load_config(dir.path(), &cfg, &[]);
    // The plan before learning: holding 0-15 merged across the hole, input, discrete, coil.
    assert_eq!(
        facilityd::cli::plans(&settings),
        vec![("EL-A1".to_string(), 4), ("EL-A2".to_string(), 4)]
    );
    let (gw, stop, task) = support::spawn_gateway(settings);
    let all = vm
        .wait_for_series(
            "{asset=~\"EL-A.\"}",
            |s| {
                s.iter()
                    .filter(|x| x.name() == "elevator_energy_kwh" && x.values.len() >= 5)
                    .count()
                    == 2
            },
            Duration::from_secs(20),
        )
        .await;
    stop.cancel();
    task.await.unwrap().unwrap();

    for (unit, asset) in [(1u8, "EL-A1"), (2, "EL-A2")] {
        let base = u32::from(unit - 1);
        let want: &[(&str, f64)] = &[
            ("trips_total", f64::from(3_000_000_000 + base)),
            ("offset_mm", f64::from(-123_456 - base as i32)),
            ("cabin_temp_c", f64::from(21.75f32 + base as f32)),
            ("load_kg", f64::from(2345 + base) * 0.1),
            ("door_open", 1.0),
            ("overload", 0.0),
            ("in_service", 1.0),
            ("energy_kwh", -1234.5678 - f64::from(base)),
            ("motor_temp_c", f64::from(-42 - base as i32) * 0.5 + 1.0),
            ("door_fault", 1.0),
            ("light_curtain", 0.0),
            ("bypass", 1.0),
            ("ucm_test", if base % 2 == 1 { 1.0 } else { 0.0 }),
        ];
        for (field, v) in want {
            let s = find_series(&all, &format!("elevator_{field}"), &[("asset", asset)])
                .unwrap_or_else(|| panic!("{asset}.{field} missing"));
            assert!(
                s.values.iter().all(|x| support::same(*x, *v)),
                "{asset}.{field}: database {:?}, device {v}",
                s.values
            );
            assert_eq!(s.label("device_type"), Some("elevator"));
            assert_eq!(s.label("building"), Some("A"));
        }
        assert!(
            find_series(&all, "elevator_hoistway_temp_c", &[("asset", asset)]).is_none(),
            "the na sentinel was written"
        );
    }
    assert_eq!(
        find_series(&all, "elevator_trips_total", &[("asset", "EL-A1")])
            .unwrap()
            .label("vendor"),
        Some("acme")
    );

    // Requests: the merged holding read is refused once per unit (the hole), then 5 reads a cycle.
    // Shutdown abandons a cycle in progress, which is not counted as a poll: its requests, at most
    // one cycle's 5, may come on top.
    let requests = server.requests();
    assert!(
        requests.iter().all(|r| r.is_read()),
        "the gateway wrote to the device"
    );
    for (i, unit) in [1u8, 2].into_iter().enumerate() {
        let polls = DeviceStats::get(&gw.device_stats[i].polls);
        let n = requests.iter().filter(|r| r.unit == unit).count() as u64;
        assert!(
            (5 * polls + 1..=5 * polls + 6).contains(&n),
            "unit {unit}: {n} requests for {polls} cycles (5 a cycle, 1 refused, at most one abandoned cycle)"
        );
        assert_eq!(DeviceStats::get(&gw.device_stats[i].exceptions), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_order_events_are_written_as_work_order_lines_for_annotations() {
    let vm = VictoriaMetrics::start().await;
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: local0(),
            devices: vec![SimDeviceSpec::new(1, "elevator")],
        }],
        frozen: true,
        ..Default::default()
    })
    .await
    .unwrap();
    sim.set_point(0, 1, "trapped_alarm", facilityd::model::Value::Bool(true))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}[[devices]]\nid = \"EL-W\"\nprofile = \"elevator\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1, timeout = \"80ms\" }}\n\n[[rules]]\nid = \"trapped\"\ntype = \"state\"\npoint = \"trapped_alarm\"\nequals = true\nauto_resolve = true\npriority = \"urgent\"\nwork_order = \"corrective\"\ntitle = \"trapped in {{asset}}\"\n",
        header(dir.path(), &vm, "200ms"),
        sim.addrs()[0]
    );
    let (_gw, stop, task) = support::spawn_gateway(load_config(dir.path(), &cfg, &[]));
    tokio::time::sleep(Duration::from_millis(800)).await;
    sim.set_point(0, 1, "trapped_alarm", facilityd::model::Value::Bool(false))
        .unwrap();
    // opened, then condition_cleared and resolved: three lines of work order 1.
    let all = vm
        .wait_for_series(
            "work_order_id",
            |s| s.iter().map(|x| x.values.len()).sum::<usize>() >= 3,
            Duration::from_secs(15),
        )
        .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let s = find_series(&all, "work_order_id", &[("asset", "EL-W")])
        .unwrap_or_else(|| panic!("no work_order lines: {all:?}"));
    assert_eq!(s.label("rule"), Some("trapped"));
    assert_eq!(s.label("priority"), Some("urgent"));
    assert_eq!(s.label("kind"), Some("corrective"));
    assert_eq!(
        s.values,
        vec![1.0, 1.0, 1.0],
        "one line per lifecycle event of work order 1"
    );
}
