//! The power supply's equipment as third-party devices, not our simulator: pymodbus servers
//! (another process) with the vendors' register layouts, written here from the vendors' own
//! numbering, polled by the gateway with the built-in profiles into a real database:
//!
//! - an Eastron SDM630 meter that answers like one: float32 input registers, at most 80
//!   registers a read and never an odd count (anything else is refused with exception 3);
//! - a Deep Sea GenComm generator controller (holding registers only) with sentinels and
//!   packed 4-bit alarm states;
//! - a Socomec ATyS pM transfer switch;
//! - a Carlo Gavazzi EM24 (INT32, low word first) through the README's custom profile.
//!
//! Every value is checked exactly in the database (VictoriaMetrics for numbers; InfluxDB 1.x
//! where state names are strings).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use facilityd::device::DeviceSource;
use facilityd::gateway::Gateway;
use facilityd::modbus::plan::{PlanLimits, plan};
use facilityd::modbus::stats::DeviceStats;
use serde_json::{Value as Json, json};
use support::influxdb::InfluxDb1;
use support::{ExportedSeries, PyModbusServer, VictoriaMetrics, find_series};

/// Writes `body` as facilityd.toml into `dir` and loads it.
fn load_config(dir: &std::path::Path, body: &str) -> facilityd::settings::Settings {
    std::fs::write(dir.join("facilityd.toml"), body).unwrap();
    facilityd::settings::load_with_env(&dir.join("facilityd.toml"), Default::default())
        .unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// `[gateway]`, `[http]` and `[influxdb]` writing to VictoriaMetrics (API v2).
fn header_vm(dir: &std::path::Path, vm: &VictoriaMetrics) -> String {
    format!(
        "[gateway]\nid = \"gw-power\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[influxdb]\nurl = {:?}\norg = \"facility\"\nbucket = \"telemetry\"\ntoken = \"t\"\nflush_interval = \"200ms\"\n\n",
        dir.join("state").display().to_string(),
        vm.url()
    )
}

/// The same writing to InfluxDB 1.x (API v1), database `site`.
fn header_v1(dir: &std::path::Path, db: &InfluxDb1) -> String {
    format!(
        "[gateway]\nid = \"gw-power\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[influxdb]\napi = \"v1\"\nurl = {:?}\ndatabase = \"site\"\nflush_interval = \"200ms\"\n\n",
        dir.join("state").display().to_string(),
        db.url()
    )
}

fn device(id: &str, profile: &str, url: &str, unit: u8, extra: &str) -> String {
    format!(
        "[[devices]]\nid = \"{id}\"\nprofile = \"{profile}\"\ninterval = \"200ms\"\nmodbus = {{ url = \"{url}\", unit = {unit}, timeout = \"500ms\"{extra} }}\n\n"
    )
}

/// The gateway's `/metrics` text.
async fn metrics(gw: &Gateway) -> String {
    let mut addr = None;
    for _ in 0..100 {
        addr = gw.api_addr.get().copied();
        if addr.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addr = addr.expect("the API did not bind");
    reqwest011::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A sample's value in Prometheus text (`name{labels} value`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A float32 as the two registers of a big-endian, high-word-first (ABCD) pair.
fn f32_abcd(v: f32) -> [u16; 2] {
    let b = v.to_bits();
    [(b >> 16) as u16, (b & 0xFFFF) as u16]
}

/// A 32-bit integer as two registers, low word first (CDAB).
fn i32_cdab(v: i32) -> [u16; 2] {
    let b = v as u32;
    [(b & 0xFFFF) as u16, (b >> 16) as u16]
}

/// A 32-bit integer as two registers, high word first (GenComm).
fn u32_abcd(v: u32) -> [u16; 2] {
    [(v >> 16) as u16, (v & 0xFFFF) as u16]
}

fn put(map: &mut BTreeMap<u16, u16>, address: u16, words: &[u16]) {
    for (i, w) in words.iter().enumerate() {
        map.insert(address + i as u16, *w);
    }
}

fn table(map: &BTreeMap<u16, u16>) -> Json {
    Json::Object(map.iter().map(|(a, v)| (a.to_string(), json!(v))).collect())
}

// ---------------------------------------------------------------------------------------------
// Eastron SDM630
// ---------------------------------------------------------------------------------------------

/// The SDM630's registers as Eastron's protocol numbers them (3xxxx input, 4xxxx holding; the
/// wire address is the number minus 30001 or 40001), the float each meter unit holds (unit n
/// adds (n - 1) / 4), and the factor from the meter's unit to the profile's (W -> kW).
const SDM630: &[(&str, u32, f32, f64)] = &[
    ("voltage_l1_v", 30001, 229.87, 1.0),
    ("voltage_l2_v", 30003, 231.42, 1.0),
    ("voltage_l3_v", 30005, 228.06, 1.0),
    ("current_l1_a", 30007, 12.345, 1.0),
    ("current_l2_a", 30009, 11.9, 1.0),
    ("current_l3_a", 30011, 13.07, 1.0),
    ("power_l1_kw", 30013, 2789.5, 0.001),
    ("power_l2_kw", 30015, 2701.25, 0.001),
    ("power_l3_kw", 30017, 2950.75, 0.001),
    ("pf_l1", 30031, 0.981, 1.0),
    ("pf_l2", 30033, 0.975, 1.0),
    ("pf_l3", 30035, -0.962, 1.0),
    ("voltage_avg_v", 30043, 229.78, 1.0),
    ("current_avg_a", 30047, 12.438333, 1.0),
    ("power_total_kw", 30053, 8441.5, 0.001),
    ("apparent_power_kva", 30057, 8612.3, 0.001),
    ("reactive_power_kvar", 30061, 1702.9, 0.001),
    ("pf_total", 30063, 0.98, 1.0),
    ("frequency_hz", 30071, 49.98, 1.0),
    ("energy_import_kwh", 30073, 123456.7, 1.0),
    ("energy_export_kwh", 30075, 89.25, 1.0),
    ("reactive_import_kvarh", 30077, 23456.5, 1.0),
    ("demand_kw", 30085, 8125.0, 0.001),
    ("max_demand_kw", 30087, 11234.5, 0.001),
    ("voltage_l1_l2_v", 30201, 398.2, 1.0),
    ("voltage_l2_l3_v", 30203, 400.9, 1.0),
    ("voltage_l3_l1_v", 30205, 396.7, 1.0),
    ("energy_total_kwh", 30343, 123545.95, 1.0),
    ("demand_period_min", 40003, 15.0, 1.0),
    ("system_type", 40011, 3.0, 1.0),
];

fn sdm_value(base: f32, unit: u8) -> f32 {
    base + f32::from(unit - 1) * 0.25
}

/// One SDM630 unit: every input register 30001-30346 and holding register 40001-40032 is
/// there (0.0 where no value is set, as a meter reads for what its wiring does not use), the
/// meter's limits on, and only functions 3 and 4.
fn sdm630_unit(unit: u8) -> Json {
    let mut input: BTreeMap<u16, u16> = (0..346).map(|a| (a, 0)).collect();
    let mut holding: BTreeMap<u16, u16> = (0..32).map(|a| (a, 0)).collect();
    for (_, reg, v, _) in SDM630 {
        let words = f32_abcd(sdm_value(*v, unit));
        match reg {
            30001..=39999 => put(&mut input, (reg - 30001) as u16, &words),
            _ => put(&mut holding, (reg - 40001) as u16, &words),
        }
    }
    json!({
        "input": table(&input),
        "holding": table(&holding),
        "max_registers": 80,
        "even_count": true,
        "functions": [3, 4],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdm630_meter_values_land_exactly_and_no_read_is_refused() {
    let vm = VictoriaMetrics::start().await;
    let server = PyModbusServer::start(&json!({
        "units": { "1": sdm630_unit(1), "2": sdm630_unit(2), "3": sdm630_unit(3) }
    }))
    .await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    // PM-2 may span holes of 40 registers: only the 80-register limit splits 30001-30088.
    // PM-3 also asks for 125 registers a read: the profile's 80 still holds.
    let cfg = format!(
        "{}{}{}{}",
        header_vm(dir.path(), &vm),
        device("PM-1", "power_meter", &url, 1, ""),
        device("PM-2", "power_meter", &url, 2, ", max_gap = 40"),
        device(
            "PM-3",
            "power_meter",
            &url,
            3,
            ", max_gap = 40, max_registers = 125"
        ),
    );
    let settings = load_config(dir.path(), &cfg);

    // The table covers every point of the built-in profile.
    let profile = &settings.devices[0].profile;
    let names: BTreeSet<&str> = profile.points.iter().map(|p| &*p.name).collect();
    let ours: BTreeSet<&str> = SDM630.iter().map(|r| r.0).collect();
    assert_eq!(names, ours, "the test's SDM630 map and the profile differ");

    // Without the meter's limits PM-2 and PM-3 would read 30001-30088 at once (88 registers);
    // with them, no read is over 80 and the plan has one read more.
    let mut plan_len = Vec::new();
    for d in &settings.devices {
        let DeviceSource::Modbus(m) = &d.source else {
            panic!("{} is not a Modbus device", d.id)
        };
        assert_eq!((m.max_registers, m.even_count), (80, true), "{}", d.id);
        let limits = PlanLimits::of(m);
        let reqs = plan(&d.profile.points, limits, &Default::default());
        assert!(
            reqs.iter().all(|r| r.count <= 80 && r.count % 2 == 0),
            "{}: {reqs:?}",
            d.id
        );
        if m.max_gap == 40 {
            let unlimited = PlanLimits {
                max_registers: 125,
                even_count: false,
                ..limits
            };
            let wide = plan(&d.profile.points, unlimited, &Default::default());
            assert!(wide.iter().any(|r| r.count == 88), "{}: {wide:?}", d.id);
            assert_eq!(reqs.len(), wide.len() + 1, "{}", d.id);
        }
        plan_len.push(reqs.len() as u64);
    }

    let (gw, stop, task) = support::spawn_gateway(settings);
    let all = vm
        .wait_for_series(
            "{__name__=~\"power_meter_.+\"}",
            |s| {
                ["PM-1", "PM-2", "PM-3"].iter().all(|a| {
                    s.iter()
                        .filter(|x| x.label("asset") == Some(a) && x.values.len() >= 3)
                        .count()
                        == SDM630.len()
                })
            },
            Duration::from_secs(30),
        )
        .await;
    stop.cancel();
    task.await.unwrap().unwrap();

    for (i, asset) in ["PM-1", "PM-2", "PM-3"].into_iter().enumerate() {
        let unit = i as u8 + 1;
        for (name, reg, v, factor) in SDM630 {
            let want = f64::from(sdm_value(*v, unit)) * factor;
            let s = find_series(&all, &format!("power_meter_{name}"), &[("asset", asset)])
                .unwrap_or_else(|| panic!("{asset}.{name} (register {reg}) missing"));
            assert!(
                s.values.iter().all(|x| support::same(*x, want)),
                "{asset}.{name} (register {reg}): database {:?}, meter {want}",
                s.values
            );
            assert_eq!(s.label("device_type"), Some("power_meter"));
        }
        let stats = &gw.device_stats[i];
        assert_eq!(DeviceStats::get(&stats.exceptions), 0, "{asset}");
        assert_eq!(DeviceStats::get(&stats.splits), 0, "{asset}");
    }

    // The meter's side: every request within its limits, none refused, and the plan's reads
    // only (one abandoned cycle at shutdown may add some).
    let requests = server.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(
            matches!(r.fc, 3 | 4) && r.count % 2 == 0 && r.count <= 80 && r.refused.is_none(),
            "a request the meter refuses: {r:?}"
        );
    }
    for (i, n) in plan_len.into_iter().enumerate() {
        let polls = DeviceStats::get(&gw.device_stats[i].polls);
        let got = requests.iter().filter(|r| r.unit == i as u8 + 1).count() as u64;
        assert!(
            (n * polls..=n * (polls + 1)).contains(&got),
            "unit {}: {got} requests for {polls} cycles of {n}",
            i + 1
        );
    }
}

/// The control: the same meter polled with a profile that does not know its limits. A merged
/// read of 88 registers and a lone 16-bit register (an odd count) are refused; the merged read
/// is split after its refusal, the lone register never answers. So the server really refuses,
/// and the built-in profile's limits are what keeps the reads above clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meter_refuses_reads_a_profile_without_its_limits_plans() {
    let vm = VictoriaMetrics::start().await;
    let server = PyModbusServer::start(&json!({ "units": { "1": sdm630_unit(1) } })).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}[[profiles]]\nname = \"sdm_unlimited\"\ndevice_type = \"other\"\nmeasurement = \"meter_control\"\npoints = [\n  {{ name = \"voltage_l1_v\", kind = \"gauge\", register = \"input\", address = 0, type = \"f32\" }},\n  {{ name = \"max_demand_w\", kind = \"gauge\", register = \"input\", address = 86, type = \"f32\" }},\n  {{ name = \"system_type_low_word\", kind = \"gauge\", register = \"holding\", address = 11 }},\n]\n\n{}",
        header_vm(dir.path(), &vm),
        device(
            "CTRL-1",
            "sdm_unlimited",
            &server.url(),
            1,
            ", max_gap = 100"
        ),
    );
    let (gw, stop, task) = support::spawn_gateway(load_config(dir.path(), &cfg));
    let all = vm
        .wait_for_series(
            "{asset=\"CTRL-1\"}",
            |s| {
                find_series(s, "meter_control_max_demand_w", &[])
                    .is_some_and(|s| s.values.len() >= 3)
            },
            Duration::from_secs(30),
        )
        .await;
    let text = metrics(&gw).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let refused: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.refused.is_some())
        .collect();
    assert!(
        refused
            .iter()
            .any(|r| r.fc == 4 && r.count == 88 && r.refused == Some(3)),
        "the 88-register read was not refused: {refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r.fc == 3 && r.count == 1 && r.refused == Some(3)),
        "the odd count was not refused: {refused:?}"
    );
    let stats = &gw.device_stats[0];
    assert_eq!(DeviceStats::get(&stats.splits), 1);
    assert!(DeviceStats::get(&stats.exceptions) >= 2);
    assert!(
        sample(
            &text,
            "facilityd_modbus_errors_total{asset=\"CTRL-1\",kind=\"exception\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );
    let v = find_series(&all, "meter_control_voltage_l1_v", &[]).expect("voltage after the split");
    assert!(
        v.values
            .iter()
            .all(|x| support::same(*x, f64::from(229.87f32)))
    );
    assert!(
        find_series(&all, "meter_control_system_type_low_word", &[]).is_none(),
        "a read the meter refuses produced a value"
    );
}

// ---------------------------------------------------------------------------------------------
// Deep Sea GenComm generator and Socomec ATyS pM transfer switch
// ---------------------------------------------------------------------------------------------

/// GenComm's alarm states (page 8, 4 bits each, first alarm in the top bits): 1 not active,
/// 2 warning, 3 shutdown, 15 unimplemented.
const GENCOMM_ALARM_WORDS: [(u16, u16); 11] = [
    (2049, 0x1111), // emergency stop, low oil pressure, high coolant temp, high oil temp
    (2050, 0x1131), // under speed, over speed, FAIL TO START = 3, fail to come to rest
    (2051, 0x1111),
    (2052, 0x1111),
    (2053, 0x1111),
    (2054, 0x111F), // ..., CHARGE ALTERNATOR FAILURE = 15 (unimplemented)
    (2055, 0x1121), // low battery V, high battery V, LOW FUEL LEVEL = 2, high fuel level
    (2056, 0x1111),
    (2057, 0x1111),
    (2058, 0x1111),
    (2059, 0x1111), // ..., maintenance due, ...
];

/// A GenComm controller's pages 3-8 as this test fills them: 0xFFFF (unimplemented) wherever
/// no value is set, holding registers only (function 4 is refused).
fn gencomm_unit() -> Json {
    let mut h: BTreeMap<u16, u16> = BTreeMap::new();
    for page in [3u16, 4, 5, 6, 7, 8] {
        for offset in 0..256 {
            h.insert(page * 256 + offset, 0xFFFF);
        }
    }
    put(&mut h, 772, &[1]); // control mode: auto
    put(&mut h, 774, &[(1 << 10) | (1 << 12)]); // warning and shutdown flags, no trip
    put(&mut h, 1024, &[0xFFFC]); // oil pressure: transducer fault (open sender)
    put(&mut h, 1025, &[0x7FFF]); // coolant temperature: signed "unimplemented"
    put(&mut h, 1026, &[(-12i16) as u16]); // oil temperature, degC
    put(&mut h, 1027, &[64]); // fuel level %
    put(&mut h, 1028, &[281]); // charge alternator 28.1 V
    put(&mut h, 1029, &[247]); // battery 24.7 V
    put(&mut h, 1030, &[1500]); // rpm
    put(&mut h, 1031, &[501]); // 50.1 Hz
    put(&mut h, 1032, &u32_abcd(2301)); // L1-N 230.1 V
    put(&mut h, 1034, &u32_abcd(2298));
    put(&mut h, 1036, &u32_abcd(2305));
    put(&mut h, 1044, &u32_abcd(1234)); // L1 123.4 A
    put(&mut h, 1046, &u32_abcd(70_001)); // L2 7000.1 A: the high word counts
    put(&mut h, 1048, &u32_abcd(0xFFFF_FFFF)); // L3: no CT, unimplemented
    put(&mut h, 1408, &[3]); // engine running
    put(&mut h, 1536, &u32_abcd(-123_456i32 as u32)); // -123.456 kW (reverse power)
    put(&mut h, 1558, &[734]); // load 73.4 %
    put(&mut h, 1798, &u32_abcd(1_234_567)); // run time, seconds
    put(&mut h, 1800, &u32_abcd(987_654)); // 98765.4 kWh
    put(&mut h, 1808, &u32_abcd(1234)); // starts
    for (a, w) in GENCOMM_ALARM_WORDS {
        put(&mut h, a, &[w]);
    }
    json!({ "holding": table(&h), "functions": [3] })
}

/// An ATyS pM after a mains failure: automatic mode, on source II (the generator), source 1
/// under threshold, source 2 available.
fn atys_unit() -> Json {
    let mut h = BTreeMap::new();
    put(
        &mut h,
        20480,
        &[3, 0x10, 3, 0, 1, 1, 0, 2, 0, 4321], // network, mode, position, relays, priority, S1, S2, test, operations
    );
    json!({ "holding": table(&h), "functions": [3] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gencomm_generator_and_atys_switch_land_exactly_with_sentinels_counted() {
    let db = InfluxDb1::start().await;
    db.create_database("site").await;
    let server =
        PyModbusServer::start(&json!({ "units": { "1": gencomm_unit(), "2": atys_unit() } })).await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}{}{}",
        header_v1(dir.path(), &db),
        device("GEN-1", "generator", &url, 1, ""),
        device("ATS-1", "ats", &url, 2, ""),
    );
    let (gw, stop, task) = support::spawn_gateway(load_config(dir.path(), &cfg));
    let mut rows = Vec::new();
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let g = db
            .query_raw(
                Some("site"),
                "SELECT COUNT(\"starts_total\") FROM \"generator\"",
            )
            .await;
        let a = db
            .query_raw(Some("site"), "SELECT COUNT(\"mode\") FROM \"ats\"")
            .await;
        let n = |r: Result<Json, String>| {
            r.ok()
                .and_then(|v| InfluxDb1::rows(&v).first()?.get("count")?.as_u64())
                .unwrap_or(0)
        };
        if n(g) >= 3 && n(a) >= 3 {
            rows = vec![
                InfluxDb1::rows(&db.query("site", "SELECT * FROM \"generator\"").await),
                InfluxDb1::rows(&db.query("site", "SELECT * FROM \"ats\"").await),
            ];
            break;
        }
    }
    assert_eq!(rows.len(), 2, "no generator and ATS rows in InfluxDB");
    let text = metrics(&gw).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let generator: &[(&str, Json)] = &[
        ("control_mode", json!("auto")),
        ("warning_alarm", json!(true)),
        ("electrical_trip_alarm", json!(false)),
        ("shutdown_alarm", json!(true)),
        ("oil_temp_c", json!(-12.0)),
        ("fuel_level_pct", json!(64.0)),
        ("charge_alternator_v", json!(281.0 * 0.1)),
        ("battery_v", json!(247.0 * 0.1)),
        ("engine_speed_rpm", json!(1500.0)),
        ("frequency_hz", json!(501.0 * 0.1)),
        ("voltage_l1_v", json!(2301.0 * 0.1)),
        ("voltage_l2_v", json!(2298.0 * 0.1)),
        ("voltage_l3_v", json!(2305.0 * 0.1)),
        ("current_l1_a", json!(1234.0 * 0.1)),
        ("current_l2_a", json!(70_001.0 * 0.1)),
        ("engine_state", json!("running")),
        ("power_kw", json!(-123_456.0 * 0.001)),
        ("load_pct", json!(734.0 * 0.1)),
        ("run_hours_total", json!(1_234_567.0 / 3600.0)),
        ("energy_kwh_total", json!(987_654.0 * 0.1)),
        ("starts_total", json!(1234)),
        ("emergency_stop", json!("inactive")),
        ("low_oil_pressure", json!("inactive")),
        ("high_coolant_temp", json!("inactive")),
        ("over_speed", json!("inactive")),
        ("fail_to_start", json!("shutdown")),
        ("low_battery_voltage", json!("inactive")),
        ("low_fuel_level", json!("warning")),
        ("maintenance_due", json!("inactive")),
    ];
    let sentinels = [
        "oil_pressure_kpa",          // 0xFFFC transducer fault
        "coolant_temp_c",            // 0x7FFF
        "current_l3_a",              // 0xFFFFFFFF
        "charge_alternator_failure", // alarm state 15, unimplemented
    ];
    let ats: &[(&str, Json)] = &[
        ("network_type", json!(3)),
        ("mode", json!("auto")),
        ("switch_position", json!("pos_ii")),
        ("s1_start_relay", json!(0)),
        ("s2_start_relay", json!(1)),
        ("priority_source", json!(1)),
        ("s1_state", json!("under_threshold")),
        ("s2_state", json!("available")),
        ("test_flags", json!(0)),
        ("operations_total", json!(4321)),
    ];
    for (asset, rows, want, absent) in [
        ("GEN-1", &rows[0], generator, &sentinels[..]),
        ("ATS-1", &rows[1], ats, &[][..]),
    ] {
        assert!(rows.len() >= 3, "{asset}: {rows:?}");
        for row in rows {
            assert_eq!(row["asset"], json!(asset));
            for (field, v) in want {
                let got = &row[*field];
                let ok = match (got.as_f64(), v.as_f64()) {
                    (Some(g), Some(w)) => support::same(g, w),
                    _ => got == v,
                };
                assert!(ok, "{asset}.{field}: database {got}, device {v}");
            }
            for field in absent {
                assert!(
                    row.get(*field).is_none_or(Json::is_null),
                    "{asset}.{field}: a not-available sentinel was stored: {row:?}"
                );
            }
        }
    }
    // The four sentinels of each cycle are counted (a cycle in progress may have added some).
    let bad = sample(&text, "facilityd_bad_values_total{asset=\"GEN-1\"}").unwrap();
    let polls = sample(&text, "facilityd_modbus_polls_total{asset=\"GEN-1\"}").unwrap();
    assert!(
        polls >= 3.0 && (4.0 * polls..=4.0 * (polls + 1.0)).contains(&bad),
        "{bad} bad values for {polls} polls"
    );
    assert_eq!(
        sample(&text, "facilityd_bad_values_total{asset=\"ATS-1\"}"),
        Some(0.0)
    );
    // Holding registers only, nothing refused, nothing written.
    for r in server.requests() {
        assert!(r.fc == 3 && r.refused.is_none(), "{r:?}");
    }
    for s in &gw.device_stats {
        assert_eq!(DeviceStats::get(&s.exceptions), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// facilityd check
// ---------------------------------------------------------------------------------------------

#[test]
fn check_shows_the_meters_own_limits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("facilityd.toml");
    let url = "tcp://192.0.2.10:502";
    std::fs::write(
        &path,
        format!(
            "[gateway]\nid = \"gw\"\nstate_dir = {:?}\n\n{}{}{}{}",
            dir.path().join("state").display().to_string(),
            device("PM-1", "power_meter", url, 1, ""),
            device(
                "PM-2",
                "power_meter",
                url,
                2,
                ", max_gap = 40, max_registers = 125"
            ),
            device("GEN-1", "generator", url, 3, ""),
            device("ATS-1", "ats", url, 4, ""),
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_facilityd"));
    cmd.args(["check", "-c"]).arg(&path);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FACILITYD_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A device's lines: its header, the modbus line, the plan, up to its points.
    let section = |id: &str| -> Vec<&str> {
        text.lines()
            .skip_while(|l| !l.starts_with(&format!("  {id} (")))
            .take_while(|l| !l.trim_start().starts_with("points ("))
            .collect()
    };
    for (id, limits) in [
        (
            "PM-1",
            "(max_gap 10, max_registers 80 set by profile \"power_meter\", even register counts only)",
        ),
        (
            "PM-2",
            "(max_gap 40, max_registers 80 set by profile \"power_meter\", even register counts only)",
        ),
        ("GEN-1", "(max_gap 10, max_registers 125)"),
        ("ATS-1", "(max_gap 10, max_registers 125)"),
    ] {
        let lines = section(id);
        assert!(
            lines.get(1).is_some_and(|l| l.ends_with(limits)),
            "{id}: {lines:#?}"
        );
        if id.starts_with("PM-") {
            // The plan as shown: no read over 80 registers, none odd.
            let counts: Vec<u16> = lines
                .iter()
                .filter_map(|l| {
                    l.split_once(" regs) ")?
                        .0
                        .rsplit('(')
                        .next()?
                        .trim()
                        .parse()
                        .ok()
                })
                .collect();
            assert_eq!(counts.len(), 5, "{id}: {lines:#?}");
            assert!(
                counts.iter().all(|n| *n <= 80 && n % 2 == 0),
                "{id}: {counts:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The README's custom profile: Carlo Gavazzi EM24
// ---------------------------------------------------------------------------------------------

const EM24_PROFILE: &str = include_str!("fixtures/em24_profile.toml");

#[test]
fn the_readme_shows_the_em24_profile_the_tests_poll() {
    let readme = support::read_text(&support::repo_root().join("README.md"));
    assert!(
        readme.contains(&format!("```toml\n{EM24_PROFILE}```")),
        "README.md must show tests/fixtures/em24_profile.toml verbatim in a toml block"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn em24_custom_profile_values_land_exactly() {
    let vm = VictoriaMetrics::start().await;
    // The EM24's registers (Carlo Gavazzi's addresses): INT32 low word first, except Hz.
    let mut h: BTreeMap<u16, u16> = (0..0x50).map(|a| (a, 0)).collect();
    let want: &[(&str, u16, i32, f64)] = &[
        ("voltage_l1_v", 0x0000, 2301, 0.1),
        ("voltage_l2_v", 0x0002, 2312, 0.1),
        ("voltage_l3_v", 0x0004, 2287, 0.1),
        ("current_l1_a", 0x000C, 12_345, 0.001),
        ("current_l2_a", 0x000E, 70_123, 0.001),
        ("current_l3_a", 0x0010, 9_876, 0.001),
        ("power_l1_kw", 0x0012, 28_456, 0.0001),
        ("power_l2_kw", 0x0014, -1_234, 0.0001),
        ("power_l3_kw", 0x0016, 22_710, 0.0001),
        ("power_total_kw", 0x0028, 85_432, 0.0001),
        ("energy_import_kwh", 0x0034, 12_345_678, 0.1),
        ("energy_export_kwh", 0x004E, 4_321, 0.1),
    ];
    for (_, a, v, _) in want {
        put(&mut h, *a, &i32_cdab(*v));
    }
    put(&mut h, 0x0033, &[501]); // Hz x 10, one register
    let server =
        PyModbusServer::start(&json!({ "units": { "1": { "holding": table(&h) } } })).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}{EM24_PROFILE}\n{}",
        header_vm(dir.path(), &vm),
        device("EM-1", "em24", &server.url(), 1, "")
    );
    let (gw, stop, task) = support::spawn_gateway(load_config(dir.path(), &cfg));
    let all: Vec<ExportedSeries> = vm
        .wait_for_series(
            "{asset=\"EM-1\"}",
            |s| {
                s.iter()
                    .filter(|x| x.name().starts_with("power_meter_") && x.values.len() >= 3)
                    .count()
                    == want.len() + 1
            },
            Duration::from_secs(30),
        )
        .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let check = |name: &str, v: f64| {
        let s = find_series(&all, &format!("power_meter_{name}"), &[("asset", "EM-1")])
            .unwrap_or_else(|| panic!("EM-1.{name} missing"));
        assert!(
            s.values.iter().all(|x| support::same(*x, v)),
            "EM-1.{name}: database {:?}, meter {v}",
            s.values
        );
        assert_eq!(s.label("device_type"), Some("power_meter"));
    };
    for (name, _, raw, scale) in want {
        check(name, f64::from(*raw) * scale);
    }
    check("frequency_hz", 501.0 * 0.1);
    assert_eq!(DeviceStats::get(&gw.device_stats[0].exceptions), 0);
    assert!(server.requests().iter().all(|r| r.is_read()));
}
