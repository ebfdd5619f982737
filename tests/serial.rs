//! Modbus RTU on RS-485 buses, with real serial framing: pseudo-terminal pairs made by socat
//! carry RTU frames between the gateway and (a) the project's RTU simulators, which pace their
//! replies at the bus's baud rate, and (b) pymodbus' serial server in another process, an
//! independent RTU implementation. Expected values come from the devices' registers, never
//! from the gateway.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use facilityd::modbus::stats::DeviceStats;
use facilityd::sim::{Fault, SimBusSpec, SimDeviceSpec, SimHandle};
use serde_json::json;
use support::pty::PtyPair;
use support::{Daemon, ExportedSeries, PyModbusServer, VictoriaMetrics, find_series};

fn load_config(dir: &std::path::Path, body: &str) -> facilityd::settings::Settings {
    std::fs::write(dir.join("facilityd.toml"), body).unwrap();
    facilityd::settings::load_with_env(&dir.join("facilityd.toml"), Default::default())
        .unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// `[gateway]`, `[http]` and, with a database, `[influxdb]`.
fn header(dir: &std::path::Path, vm: Option<&VictoriaMetrics>) -> String {
    let mut s = format!(
        "[gateway]\nid = \"gw-serial\"\nsite = \"tower-b\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n",
        dir.join("state").display().to_string()
    );
    if let Some(vm) = vm {
        s += &format!(
            "[influxdb]\nurl = {:?}\norg = \"facility\"\nbucket = \"telemetry\"\ntoken = \"t\"\nflush_interval = \"200ms\"\n\n",
            vm.url()
        );
    }
    s
}

/// Starts the project's RTU simulators on the `a` end of `pty`: frozen, paced at `baud`.
async fn rtu_sim(pty: &PtyPair, baud: u32, devices: Vec<SimDeviceSpec>) -> SimHandle {
    facilityd::sim::start_serial(
        vec![SimBusSpec::new(
            pty.a().display().to_string(),
            baud,
            devices,
        )],
        facilityd::sim::DEFAULT_TICK,
        true,
    )
    .await
    .expect("serial simulators start")
}

fn series<'a>(
    all: &'a [ExportedSeries],
    measurement: &str,
    field: &str,
    asset: &str,
) -> Option<&'a ExportedSeries> {
    find_series(all, &format!("{measurement}_{field}"), &[("asset", asset)])
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    DeviceStats::get(c)
}

async fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The issue's "done when": three devices of different types on one simulated RS-485 bus at
/// 9600 baud, configured as the README shows, land in the database exactly; then one falls
/// silent (unplugged) and the other two stay on schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_on_one_bus_land_exactly_and_a_silent_one_keeps_the_others_on_schedule() {
    let vm = VictoriaMetrics::start().await;
    let pty = PtyPair::start().await;
    let sim = rtu_sim(
        &pty,
        9600,
        vec![
            SimDeviceSpec::new(1, "elevator"),
            SimDeviceSpec::new(2, "pump"),
            SimDeviceSpec::new(3, "fire_panel"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = pty.url_b("baud=9600&parity=N&data=8&stop=1");
    let mut cfg = header(dir.path(), Some(&vm));
    for (id, profile, unit) in [
        ("EL-B1", "elevator", 1),
        ("PU-B1", "pump", 2),
        ("FP-B", "fire_panel", 3),
    ] {
        cfg += &format!(
            "[[devices]]\nid = \"{id}\"\nprofile = \"{profile}\"\nbuilding = \"B\"\ninterval = \"1s\"\nmodbus = {{ url = \"{url}\", unit = {unit}, probe_interval = \"30s\" }}\n\n"
        );
    }
    let settings = load_config(dir.path(), &cfg);
    let report = facilityd::cli::describe(&settings);
    assert!(report.contains("serial buses: 1"), "{report}");
    assert!(report.contains("3 devices: EL-B1, PU-B1, FP-B"), "{report}");
    assert!(!report.contains("warning:"), "{report}");
    let (gw, stop, task) = support::spawn_gateway(settings);

    let ids = ["EL-B1", "PU-B1", "FP-B"];
    let all = vm
        .wait_for_series(
            "{asset=~\".+\"}",
            |s| {
                ids.iter().all(|id| {
                    s.iter()
                        .filter(|x| x.label("asset") == Some(id) && x.points().len() >= 3)
                        .count()
                        >= 5
                })
            },
            Duration::from_secs(30),
        )
        .await;
    let mut checked = 0;
    for (i, id) in ids.iter().enumerate() {
        let d = &gw.settings.devices[i];
        assert_eq!(&*d.id, *id);
        let unit = (i + 1) as u8;
        for p in &d.profile.points {
            let s = series(&all, &d.profile.measurement, &p.name, id);
            match support::expected_from_registers(&sim, 0, unit, p) {
                Some(Some(want)) => {
                    let s = s.unwrap_or_else(|| panic!("{id}.{} missing", p.name));
                    for (_, got) in s.points() {
                        assert!(
                            support::same(got, want),
                            "{id}.{}: {got} in the database, {want} in the device",
                            p.name
                        );
                    }
                    checked += 1;
                }
                Some(None) => assert!(s.is_none(), "{id}.{}: sentinel written", p.name),
                None => assert!(s.is_some(), "{id}.{} missing", p.name),
            }
        }
        let st = &gw.device_stats[i];
        // Exceptions are the simulator refusing reads across holes in its map (split once).
        assert_eq!(
            st.errors(),
            get(&st.exceptions),
            "{id}: errors on a clean bus: {st:?}"
        );
        assert!(get(&st.exceptions) <= get(&st.splits), "{st:?}");
        assert!(st.online.load(Relaxed));
        assert!(get(&st.bus_us) > 0);
    }
    assert!(checked > 40, "only {checked} points checked");

    // Unplug the pump: it stops answering.
    sim.set_fault(0, 2, Some(Fault::Silent)).unwrap();
    let pump = &gw.device_stats[1];
    // Two unanswered cycles put it on its probe schedule.
    wait_until("the pump is backed off", Duration::from_secs(5), || {
        get(&pump.timeouts) >= 2
    })
    .await;
    let before: Vec<(u64, u64)> = [0, 2]
        .iter()
        .map(|&i| {
            (
                get(&gw.device_stats[i].polls),
                get(&gw.device_stats[i].overruns),
            )
        })
        .collect();
    let pump_requests = sim.requests_served(0, 2).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (k, &i) in [0usize, 2].iter().enumerate() {
        let st = &gw.device_stats[i];
        let polls = get(&st.polls) - before[k].0;
        assert!(
            (5..=7).contains(&polls),
            "{}: {polls} polls in 6 s at a 1 s interval",
            ids[i]
        );
        assert_eq!(get(&st.overruns), before[k].1, "{}: fell behind", ids[i]);
        let cycle = get(&st.last_cycle_us);
        assert!(
            (900_000..1_150_000).contains(&cycle),
            "{}: achieved cycle {cycle} us at a 1 s interval",
            ids[i]
        );
        assert_eq!(st.errors(), get(&st.exceptions), "{}", ids[i]);
    }
    // On its probe schedule (30 s), the silent pump was not asked again.
    assert_eq!(sim.requests_served(0, 2).unwrap(), pump_requests);
    assert!(
        get(&pump.timeouts) >= 2 && get(&pump.timeouts) <= 3,
        "{pump:?}"
    );
    assert_eq!(
        get(&pump.transport_errors),
        0,
        "a silent unit reopened the port"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    sim.shutdown().await;
}

/// A garbled reply and a reply from the wrong unit are discarded and counted, cost only their
/// own read, never reopen the port; the units come back when the faults clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_and_wrong_unit_replies_are_discarded_and_counted() {
    let pty = PtyPair::start().await;
    let mut garbled = SimDeviceSpec::new(2, "pump");
    garbled.faults = facilityd::sim::ScheduledFault::window(Fault::Garbled, Duration::ZERO, None);
    let mut wrong = SimDeviceSpec::new(3, "fire_panel");
    wrong.faults = facilityd::sim::ScheduledFault::window(
        Fault::WrongUnit { unit: Some(9) },
        Duration::ZERO,
        None,
    );
    let sim = rtu_sim(
        &pty,
        19200,
        vec![SimDeviceSpec::new(1, "elevator"), garbled, wrong],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = pty.url_b("baud=19200");
    let mut cfg = header(dir.path(), None);
    for (id, profile, unit) in [
        ("EL-1", "elevator", 1),
        ("PU-1", "pump", 2),
        ("FP-1", "fire_panel", 3),
    ] {
        cfg += &format!(
            "[[devices]]\nid = \"{id}\"\nprofile = \"{profile}\"\ninterval = \"300ms\"\nmodbus = {{ url = \"{url}\", unit = {unit}, probe_interval = \"1s\" }}\n\n"
        );
    }
    let (gw, stop, task) = support::spawn_gateway(load_config(dir.path(), &cfg));
    let [el, pu, fp] = [0, 1, 2].map(|i| Arc::clone(&gw.device_stats[i]));
    wait_until("both faults are seen", Duration::from_secs(10), || {
        get(&pu.crc_errors) >= 2
            && get(&fp.wrong_unit) >= 2
            && get(&el.polls) >= 4
            && !pu.online.load(Relaxed)
            && !fp.online.load(Relaxed)
    })
    .await;
    // The discards are their own kind of error, not timeouts, and never a link fault.
    assert_eq!(get(&pu.timeouts) + get(&fp.timeouts), 0);
    for st in [&el, &pu, &fp] {
        assert_eq!(get(&st.transport_errors), 0);
    }
    // Replies that are always discarded are no answers: the units were backed off (above).
    let metrics = facilityd::api::metrics::render(&gw.view(), "");
    let line = |prefix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
    };
    assert!(line("facilityd_modbus_errors_total{asset=\"PU-1\",kind=\"crc\"}") >= 2.0);
    assert!(line("facilityd_modbus_errors_total{asset=\"FP-1\",kind=\"wrong_unit\"}") >= 2.0);
    assert!(line("facilityd_modbus_cycle_seconds{asset=\"EL-1\"}") >= 0.25);
    assert!(line("facilityd_serial_bus_seconds_total{asset=\"EL-1\",bus=\"") > 0.0);
    // The healthy lift on the same bus was never disturbed.
    assert_eq!(el.errors(), get(&el.exceptions), "{el:?}");
    assert!(el.online.load(Relaxed));
    assert_eq!(get(&el.overruns), 0, "{el:?}");

    sim.set_fault(0, 2, None).unwrap();
    sim.set_fault(0, 3, None).unwrap();
    let t0 = facilityd::model::now_ns();
    wait_until("both units answer again", Duration::from_secs(5), || {
        pu.online.load(Relaxed)
            && fp.online.load(Relaxed)
            && pu.last_good_ns.load(Relaxed) > t0
            && fp.last_good_ns.load(Relaxed) > t0
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// The USB adapter is unplugged (the pty pair vanishes) and plugged in again: the gateway
/// reopens its port and polls on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_is_reopened_after_it_disappears() {
    let mut pty = PtyPair::start().await;
    let sim = rtu_sim(&pty, 38400, vec![SimDeviceSpec::new(5, "access_door")]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}[[devices]]\nid = \"DOOR-5\"\nprofile = \"access_door\"\ninterval = \"200ms\"\nmodbus = {{ url = \"{}\", unit = 5 }}\n",
        header(dir.path(), None),
        pty.url_b("baud=38400")
    );
    let (gw, stop, task) = support::spawn_gateway(load_config(dir.path(), &cfg));
    let door = Arc::clone(&gw.device_stats[0]);
    wait_until("first readings", Duration::from_secs(5), || {
        door.last_good_ns.load(Relaxed) > 0
    })
    .await;

    pty.stop().await;
    wait_until("the lost port is noticed", Duration::from_secs(5), || {
        get(&door.transport_errors) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gone = facilityd::model::now_ns();
    pty.restart().await;
    wait_until(
        "readings after the port came back",
        Duration::from_secs(10),
        || door.last_good_ns.load(Relaxed) > gone,
    )
    .await;
    assert!(door.online.load(Relaxed));
    stop.cancel();
    task.await.unwrap().unwrap();
    sim.shutdown().await;
}

/// An independent RTU implementation (pymodbus' serial server, another process) with three
/// slaves on one bus: the answering ones read exactly at the minimum request count, a silent
/// one does not starve them, and its garbled and wrong-unit replies are discarded and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_slaves_on_one_bus_read_exactly_and_faults_are_discarded() {
    let vm = VictoriaMetrics::start().await;
    let pty = PtyPair::start().await;
    fn unit_map(base: u16) -> serde_json::Value {
        let big: u32 = 3_000_000_000 + u32::from(base);
        json!({
            "holding": { "0": big >> 16, "1": big & 0xFFFF, "2": 2345 + base, "3": 0b1010 },
            "input": { "10": (-42i16 - base as i16) as u16 },
            "coils": { "0": true, "1": base % 2 == 1 },
            "discrete": { "3": true, "4": false },
        })
    }
    let server = PyModbusServer::start(&json!({
        "serial": pty.a().display().to_string(),
        "baud": 19200,
        "units": { "1": unit_map(0), "2": unit_map(1), "3": unit_map(2) },
    }))
    .await;
    server.set_mode(3, "silent").await;
    let dir = tempfile::tempdir().unwrap();
    let url = pty.url_b("baud=19200&frame_gap=3ms&turnaround=2ms");
    let mut cfg = header(dir.path(), Some(&vm));
    cfg += r#"
[[profiles]]
name = "acme_pump_io"
device_type = "pump"
points = [
  { name = "starts_total", kind = "counter", register = "holding", address = 0, type = "u32" },
  { name = "pressure_bar", kind = "gauge", register = "holding", address = 2, type = "u16", scale = 0.01 },
  { name = "running", kind = "state", register = "holding", address = 3, type = "bool", bit = 1 },
  { name = "fault", kind = "alarm", register = "holding", address = 3, type = "bool", bit = 2 },
  { name = "motor_temp_c", kind = "gauge", register = "input", address = 10, type = "i16", scale = 0.5 },
  { name = "local_mode", kind = "state", register = "coil", address = 0 },
  { name = "remote_stop", kind = "state", register = "coil", address = 1 },
  { name = "dry_run", kind = "alarm", register = "discrete", address = 3 },
  { name = "low_tank", kind = "alarm", register = "discrete", address = 4 },
]
"#;
    for unit in 1..=3 {
        cfg += &format!(
            "\n[[devices]]\nid = \"P-{unit}\"\nprofile = \"acme_pump_io\"\ninterval = \"500ms\"\nmodbus = {{ url = \"{url}\", unit = {unit}, probe_interval = \"20s\" }}\n"
        );
    }
    let settings = load_config(dir.path(), &cfg);
    assert_eq!(
        facilityd::cli::plans(&settings),
        (1..=3).map(|u| (format!("P-{u}"), 4)).collect::<Vec<_>>()
    );
    let (gw, stop, task) = support::spawn_gateway(settings);
    let all = vm
        .wait_for_series(
            "{asset=~\"P-.\"}",
            |s| {
                ["P-1", "P-2"].iter().all(|id| {
                    series(s, "pump", "starts_total", id).is_some_and(|x| x.values.len() >= 5)
                })
            },
            Duration::from_secs(30),
        )
        .await;
    for (id, base) in [("P-1", 0u16), ("P-2", 1)] {
        let want: [(&str, f64); 9] = [
            (
                "starts_total",
                f64::from(3_000_000_000u32 + u32::from(base)),
            ),
            ("pressure_bar", f64::from(2345 + base) * 0.01),
            ("running", 1.0),
            ("fault", 0.0),
            ("motor_temp_c", f64::from(-42 - base as i16) * 0.5),
            ("local_mode", 1.0),
            ("remote_stop", f64::from(base % 2)),
            ("dry_run", 1.0),
            ("low_tank", 0.0),
        ];
        for (field, v) in want {
            let s =
                series(&all, "pump", field, id).unwrap_or_else(|| panic!("{id}.{field} missing"));
            assert!(
                s.values.iter().all(|got| support::same(*got, v)),
                "{id}.{field}: {:?}, want {v}",
                s.values
            );
        }
    }
    assert!(series(&all, "pump", "starts_total", "P-3").is_none());
    let stats: Vec<Arc<DeviceStats>> = gw.device_stats.clone();
    // The silent unit timed out twice, then went to its 20 s probe schedule: the bus log of
    // the independent server shows how little it was asked.
    let asked = server.requests().iter().filter(|r| r.unit == 3).count();
    assert!((2..=3).contains(&asked), "silent unit asked {asked} times");
    assert!(!stats[2].online.load(Relaxed));
    for st in &stats[..2] {
        assert_eq!(st.errors(), 0, "{st:?}");
        assert_eq!(get(&st.overruns), 0, "{st:?}");
    }
    assert!(
        server.requests().iter().all(|r| r.is_read()),
        "the gateway wrote"
    );

    server.set_mode(1, "garbled").await;
    server.set_mode(2, "wrong_unit:7").await;
    wait_until("discards counted", Duration::from_secs(10), || {
        get(&stats[0].crc_errors) >= 2 && get(&stats[1].wrong_unit) >= 2
    })
    .await;
    for st in &stats {
        assert_eq!(get(&st.transport_errors), 0, "{st:?}");
    }
    assert_eq!(get(&stats[0].timeouts) + get(&stats[1].timeouts), 0);
    server.set_mode(1, "normal").await;
    server.set_mode(2, "normal").await;
    let t0 = facilityd::model::now_ns();
    wait_until("answers again", Duration::from_secs(30), || {
        stats[0].last_good_ns.load(Relaxed) > t0 && stats[1].last_good_ns.load(Relaxed) > t0
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// `facilityd simulate --serial` serves the fleet as RTU slaves (the README's command), and
/// `facilityd probe rtu://...` reads them through the other end of the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_serves_rtu_on_a_pty_and_probe_reads_it() {
    let pty = PtyPair::start().await;
    let bin = env!("CARGO_BIN_EXE_facilityd");
    let a = pty.a().display().to_string();
    let mut sim = Daemon::start(
        bin,
        &[
            "simulate",
            "--serial",
            &a,
            "--baud",
            "19200",
            "--elevators",
            "1",
            "--pumps",
            "1",
            "--fire-panels",
            "1",
            "--doors",
            "0",
            "--frozen",
            "--fault",
            "2=silent",
        ],
        &[],
    );
    assert!(
        sim.wait_for_output("serving", Duration::from_secs(10))
            .await,
        "{}",
        sim.output()
    );
    assert!(sim.stdout().contains("fire_panel"), "{}", sim.output());
    let url = pty.url_b("baud=19200");
    let probe = |unit: &'static str, profile: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .args([
                    "probe",
                    &url,
                    "--unit",
                    unit,
                    "--profile",
                    profile,
                    "--timeout",
                    "300ms",
                ])
                .output()
                .expect("run probe")
        })
    };
    let out = probe("1", "elevator").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("trips_total"), "{text}");
    assert!(
        !text.contains("timeout") && !text.contains("exception"),
        "{text}"
    );
    let out = probe("2", "pump").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no answer"),
        "the silent pump answered: {text}"
    );
    sim.sigterm();
    assert!(
        sim.wait_with_timeout(Duration::from_secs(5))
            .await
            .is_some()
    );
}

/// `check` prints each bus's estimated utilisation and warns above 80 %.
#[test]
fn check_prints_bus_utilisation_and_warns_when_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = header(dir.path(), None);
    for i in 1..=3 {
        cfg += &format!(
            "[[devices]]\nid = \"EL-{i}\"\nprofile = \"elevator\"\ninterval = \"1s\"\nmodbus = {{ url = \"rtu:///dev/ttyUSB0?baud=9600\", unit = {i} }}\n"
        );
    }
    let report = facilityd::cli::describe(&load_config(dir.path(), &cfg));
    assert!(report.contains("serial buses: 1\n  rtu:///dev/ttyUSB0?baud=9600&parity=N&data=8&stop=1\n    3 devices: EL-1, EL-2, EL-3"), "{report}");
    assert!(report.contains("utilisation:"), "{report}");
    assert!(!report.contains("busy"), "{report}");
    // Twelve lifts every 250 ms at 9600 baud do not fit.
    let mut cfg = header(dir.path(), None);
    for i in 1..=12 {
        cfg += &format!(
            "[[devices]]\nid = \"EL-{i}\"\nprofile = \"elevator\"\ninterval = \"250ms\"\nmodbus = {{ url = \"rtu:///dev/ttyUSB0?baud=9600\", unit = {i} }}\n"
        );
    }
    let report = facilityd::cli::describe(&load_config(dir.path(), &cfg));
    assert!(
        report.contains("facilityd.toml: devices[0].modbus.url: serial bus rtu:///dev/ttyUSB0"),
        "{report}"
    );
    assert!(report.contains("% busy"), "{report}");
    assert!(report.contains("    warning: above 80 %"), "{report}");
    // One bus, two descriptions of it: an error naming both devices.
    let mut cfg = header(dir.path(), None);
    cfg += "[[devices]]\nid = \"A\"\nprofile = \"pump\"\nmodbus = { url = \"rtu:///dev/ttyUSB0?baud=9600\", unit = 1 }\n";
    cfg += "[[devices]]\nid = \"B\"\nprofile = \"pump\"\nmodbus = { url = \"rtu:///dev/ttyUSB0?baud=19200\", unit = 2 }\n";
    std::fs::write(dir.path().join("facilityd.toml"), &cfg).unwrap();
    let err =
        facilityd::settings::load_with_env(&dir.path().join("facilityd.toml"), Default::default())
            .unwrap_err()
            .to_string();
    assert!(
        err.contains(
            "devices[1].modbus.url: serial port /dev/ttyUSB0 is set up differently for device \"A\""
        ),
        "{err}"
    );
}
