//! The Grafana dashboards (`facilityd dashboards`, shipped under grafana/): the shipped files
//! are exactly what the generator writes; every dashboard is well formed (unique ids, grid
//! positions that do not overlap, data sources that the provisioning file defines, variables
//! for every `$var`, `$timeFilter` in every InfluxQL query); and every query of every
//! dashboard runs, expanded as Grafana expands it, on a real InfluxDB 1.x filled by the real
//! daemon polling the simulators (with faults injected, so that alarms, events and work orders
//! exist) and on a real Prometheus scraping that daemon.

mod support;

#[path = "dashboards/check.rs"]
mod check;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::influxdb::InfluxDb1;
use support::prometheus::Prometheus;
use support::{Daemon, Mosquitto, free_port, repo_root};

const BIN: &str = env!("CARGO_BIN_EXE_facilityd");
const REGENERATE: &str = "cargo run -- dashboards -c grafana/builtin-profiles.toml --out grafana";

/// Runs `facilityd dashboards -c config --out out`.
fn dashboards_cli(config: &Path, out: &Path) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(["dashboards", "-c"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .env_remove("RUST_LOG")
        .output()
        .expect("run facilityd dashboards")
}

/// Every file under `dir`, by path relative to it.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn generated(config: &Path) -> (tempfile::TempDir, BTreeMap<PathBuf, String>) {
    let out = tempfile::tempdir().unwrap();
    let run = dashboards_cli(config, out.path());
    assert!(
        run.status.success(),
        "facilityd dashboards failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let files = files_under(out.path());
    (out, files)
}

#[test]
fn shipped_dashboards_are_what_the_generator_writes() {
    let root = repo_root();
    let (_dir, want) = generated(&root.join("grafana/builtin-profiles.toml"));
    let shipped: BTreeMap<PathBuf, String> = files_under(&root.join("grafana"))
        .into_iter()
        .filter(|(p, _)| p.starts_with("dashboards") || p.starts_with("provisioning"))
        .collect();
    let names = |m: &BTreeMap<PathBuf, String>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&shipped),
        names(&want),
        "the files under grafana/ are not the generator's; regenerate with: {REGENERATE}"
    );
    for (path, text) in &want {
        assert!(
            shipped[path] == *text,
            "grafana/{} differs from the generator's output; regenerate with: {REGENERATE}",
            path.display()
        );
    }
    assert!(
        want.len() >= 12,
        "expected 10 dashboards and 2 provisioning files: {:?}",
        names(&want)
    );
}

#[test]
fn every_shipped_dashboard_is_well_formed() {
    let dir = repo_root().join("grafana");
    let problems = check::structure(&dir);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let dashboards = check::load_dashboards(&dir.join("dashboards"));
    let uids: Vec<&str> = dashboards
        .iter()
        .filter_map(|(_, d)| d["uid"].as_str())
        .collect();
    for uid in [
        "facilityd-overview",
        "facilityd-elevator",
        "facilityd-pump",
        "facilityd-fire_panel",
        "facilityd-access_door",
        "facilityd-asset-elevator",
        "facilityd-gateway-health",
    ] {
        assert!(uids.contains(&uid), "no dashboard {uid}: {uids:?}");
    }
}

const CUSTOM_CONFIG: &str = r#"
[gateway]
id = "gw-custom"
site = "plant"

[influxdb]
api = "v1"
url = "http://127.0.0.1:8086"
database = "plantdb"

[[profiles]]
name = "chiller_x"
device_type = "other"
measurement = "chiller"
points = [
  { name = "supply_temp_c", kind = "gauge", register = "input", address = 0, type = "i16", scale = 0.1, unit = "degC" },
  { name = "compressor_starts", kind = "counter", register = "input", address = 1, type = "u32", output = "integer" },
  { name = "mode", kind = "state", register = "input", address = 3, map = { 0 = "off", 1 = "cooling", 2 = "defrost" } },
  { name = "high_pressure_trip", kind = "alarm", register = "discrete", address = 0 },
  { name = "flow_switch_open", kind = "event", register = "discrete", address = 1 },
]

[[devices]]
id = "CH-1"
profile = "chiller_x"
building = "B"
modbus = { url = "tcp://127.0.0.1:5020", unit = 1 }
"#;

#[test]
fn cli_writes_a_dashboard_for_a_custom_measurement_with_its_points() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("facilityd.toml");
    std::fs::write(&cfg, CUSTOM_CONFIG).unwrap();
    let out = dir.path().join("out");
    let run = dashboards_cli(&cfg, &out);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for f in [
        "dashboards/facilityd-chiller.json",
        "dashboards/facilityd-asset-chiller.json",
        "dashboards/facilityd-overview.json",
        "dashboards/facilityd-gateway-health.json",
        "provisioning/datasources/facilityd.yaml",
        "provisioning/dashboards/facilityd.yaml",
    ] {
        assert!(out.join(f).is_file(), "{f} not written");
        assert!(
            stdout.contains(&out.join(f).display().to_string()),
            "{f} not reported: {stdout}"
        );
    }
    // Grafana queries the database the daemon writes.
    let ds = std::fs::read_to_string(out.join("provisioning/datasources/facilityd.yaml")).unwrap();
    assert!(ds.contains("\n      dbName: \"plantdb\"\n"), "{ds}");
    // Only the measurements in use: no built-in device type's dashboard.
    assert!(!out.join("dashboards/facilityd-elevator.json").exists());
    let problems = check::structure(&out);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("dashboards/facilityd-chiller.json")).unwrap(),
    )
    .unwrap();
    let panels = check::panels(&d);
    let query_of = |title: &str| -> String {
        let p = panels
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| {
                panic!(
                    "no panel {title:?} in {:?}",
                    panels.iter().map(|p| &p["title"]).collect::<Vec<_>>()
                )
            });
        p["targets"][0]["query"].as_str().unwrap().to_string()
    };
    // Each point, by its kind and field type.
    let q = query_of("supply_temp_c");
    assert!(
        q.starts_with("SELECT mean(\"supply_temp_c\") FROM \"chiller\""),
        "{q}"
    );
    let temp = panels
        .iter()
        .find(|p| p["title"] == "supply_temp_c")
        .unwrap();
    assert_eq!(temp["type"], "timeseries");
    assert_eq!(temp["fieldConfig"]["defaults"]["unit"], "celsius");
    assert!(query_of("high_pressure_trip").starts_with("SELECT last(\"high_pressure_trip\")"));
    let mode = panels.iter().find(|p| p["title"] == "mode").unwrap();
    assert_eq!(mode["type"], "state-timeline");
    let mapped: Vec<&str> = mode["fieldConfig"]["defaults"]["mappings"][0]["options"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(mapped, ["cooling", "defrost", "off"]);
    assert!(query_of("compressor_starts: increase").contains("spread(\"compressor_starts\")"));
    assert!(
        query_of("compressor_starts: increase per interval")
            .contains("non_negative_difference(last(\"compressor_starts\"))")
    );
    assert!(
        query_of("flow_switch_open: count")
            .contains("WHERE \"asset\" =~ /^$asset$/ AND \"flow_switch_open\" = true")
    );
    let assets = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "asset")
        .unwrap();
    assert!(
        assets["query"]
            .as_str()
            .unwrap()
            .contains("FROM \"chiller\"")
    );

    // The drill-down shows every point of the profile.
    let drill =
        std::fs::read_to_string(out.join("dashboards/facilityd-asset-chiller.json")).unwrap();
    for point in [
        "supply_temp_c",
        "compressor_starts",
        "mode",
        "high_pressure_trip",
        "flow_switch_open",
    ] {
        assert!(
            drill.contains(&format!("\\\"{point}\\\"")),
            "{point} not queried in the drill-down"
        );
    }
    // The overview's active alarms include the custom alarm.
    let overview = std::fs::read_to_string(out.join("dashboards/facilityd-overview.json")).unwrap();
    assert!(overview.contains("last(\\\"high_pressure_trip\\\") AS \\\"active\\\""));
}

#[test]
fn cli_refuses_an_invalid_configuration_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("facilityd.toml");
    std::fs::write(
        &cfg,
        CUSTOM_CONFIG.replace("profile = \"chiller_x\"", "profile = \"no_such_profile\""),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = dashboards_cli(&cfg, &out);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no_such_profile") && stderr.contains("configuration invalid"),
        "{stderr}"
    );
    assert!(!out.exists(), "files written for an invalid configuration");
}

// ---------------------------------------------------------------------------
// Real servers
// ---------------------------------------------------------------------------

/// Polls `cond` every 250 ms until it holds; panics with `what` after `timeout`, or at once
/// when `daemon` exits.
async fn wait_until<F, Fut>(what: &str, timeout: Duration, daemon: &mut Daemon, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = daemon.try_status() {
            panic!(
                "{what}: the daemon exited with {status}\n{}",
                daemon.output()
            );
        }
        let last = cond().await;
        match last {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}: {e}\n{}", daemon.output())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn influx_count(db: &InfluxDb1, q: &str) -> Result<u64, String> {
    let ans = db.query_raw(Some("facilityd"), q).await?;
    Ok(InfluxDb1::rows(&ans)
        .iter()
        .flat_map(|r| {
            r.iter()
                .filter(|(k, _)| *k != "time")
                .filter_map(|(_, v)| v.as_u64())
        })
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_runs_on_influxdb_and_prometheus_filled_by_the_daemon() {
    let influx = InfluxDb1::start().await;
    influx.create_database("facilityd").await;
    let broker = Mosquitto::start().await;
    let started = chrono::Utc::now();

    // The simulated site: faults make alarms, events, an offline device and work orders.
    let sim_port = free_port();
    let (_sim, devices) = support::start_simulator(
        BIN,
        &[
            "simulate",
            "--listen",
            &format!("127.0.0.1:{sim_port}"),
            "--elevators",
            "1",
            "--pumps",
            "2",
            "--fire-panels",
            "1",
            "--doors",
            "1",
            "--power-room",
            "--fault",
            "EL-0001=trapped_alarm=true",
            "--fault",
            "EL-0001=door_fault=true",
            "--fault",
            "PU-0001=fault=true",
            "--fault",
            "PU-0001=local_mode=false",
            "--fault",
            "PU-0002=silent",
            "--fault",
            "FP-0001=fire_alarm=true",
            "--fault",
            "FP-0001=prealarm=true",
            "--fault",
            "DOOR-0001=door_state=open_forced",
            "--fault",
            "DOOR-0001=door_forced=true",
            "--fault",
            "DOOR-0001=door_held_open=true",
            "--fault",
            "PM-0001=frequency_hz=51.2",
            "--fault",
            "GEN-0001=shutdown_alarm=true",
            "--fault",
            "ATS-0001=s1_state=present",
            "--fault",
            "ATS-0001=s2_state=available",
        ],
        8,
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    support::copy_shipped_rules(
        &dir.path().join("conf.d"),
        &[
            "elevator",
            "pump",
            "fire_panel",
            "access_door",
            "power_meter",
            "generator",
            "ats",
        ],
    );
    let mut cfg = format!(
        "[gateway]\nid = \"gw-dash\"\nsite = \"tower-a\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n{}\n[mqtt]\nurl = {:?}\n\n\
         [[notify]]\ntype = \"webhook\"\nid = \"cmms\"\nurl = \"http://127.0.0.1:{}/hook\"\n\n",
        dir.path().join("state").display().to_string(),
        influx_section(&influx),
        broker.url(),
        free_port(),
    );
    for d in &devices {
        // The door has no building: "All" buildings must still reach it.
        let building = if d.device_type == "access_door" {
            ""
        } else {
            "building = \"A\"\n"
        };
        cfg.push_str(&format!(
            "[[devices]]\nid = {:?}\nprofile = {:?}\n{building}floor = \"L1\"\ninterval = \"500ms\"\nmodbus = {{ url = \"tcp://{}\", unit = {}, timeout = \"300ms\", probe_interval = \"1s\" }}\n\n",
            d.name, d.device_type, d.addr, d.unit
        ));
    }
    let cfg_path = dir.path().join("facilityd.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let mut daemon = Daemon::start(
        BIN,
        &["run", "-c", &cfg_path.display().to_string()],
        &[("RUST_LOG", "info")],
    );

    // Wait for what the dashboards show: every measurement, several intervals of counters,
    // the offline pump, and work orders.
    wait_until("telemetry and work orders in InfluxDB", Duration::from_secs(180), &mut daemon, || async {
        for (what, q, min) in [
            ("lift polls", "SELECT count(\"trips_total\") FROM \"elevator\"", 20),
            ("pump polls", "SELECT count(\"discharge_pressure_bar\") FROM \"pump\"", 20),
            ("panel polls", "SELECT count(\"trouble\") FROM \"fire_panel\"", 20),
            ("door polls", "SELECT count(\"door_forced\") FROM \"access_door\"", 20),
            ("offline pump", "SELECT count(\"online\") FROM \"device_status\" WHERE \"asset\" = 'PU-0002' AND \"online\" = false", 2),
            ("urgent work orders", "SELECT count(\"id\") FROM \"work_order\" WHERE \"priority\" = 'urgent'", 1),
            ("door work order", "SELECT count(\"id\") FROM \"work_order\" WHERE \"rule\" = 'door-forced'", 1),
            ("pump work order", "SELECT count(\"id\") FROM \"work_order\" WHERE \"rule\" = 'pump-fault'", 1),
            ("meter work order", "SELECT count(\"id\") FROM \"work_order\" WHERE \"rule\" = 'power-frequency'", 1),
            ("generator work order", "SELECT count(\"id\") FROM \"work_order\" WHERE \"rule\" = 'generator-shutdown'", 1),
            ("switch work order", "SELECT count(\"id\") FROM \"work_order\" WHERE \"rule\" = 'ats-fail-to-transfer'", 1),
        ] {
            let n = influx_count(&influx, q).await?;
            if n < min {
                return Err(format!("{what}: {n} < {min}"));
            }
        }
        Ok(())
    })
    .await;

    let prometheus = Prometheus::start(&format!("127.0.0.1:{http_port}")).await;
    wait_until(
        "Prometheus scrapes",
        Duration::from_secs(120),
        &mut daemon,
        || async {
            let r = prometheus
                .query("min(count_over_time(facilityd_modbus_polls_total[30s]))")
                .await?;
            let n: f64 = r
                .first()
                .and_then(|s| s["value"][1].as_str())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            if n >= 10.0 {
                Ok(())
            } else {
                Err(format!("{n} scrapes"))
            }
        },
    )
    .await;

    let window = check::Window {
        from_ms: (started - chrono::Duration::minutes(5)).timestamp_millis(),
        to_ms: (chrono::Utc::now() + chrono::Duration::minutes(1)).timestamp_millis(),
        interval: "2s",
        rate_interval: "20s",
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for (file, d) in check::load_dashboards(&repo_root().join("grafana/dashboards")) {
        let report = check::run_dashboard(&d, &window, &influx, &prometheus).await;
        checked += report.queries;
        failures.extend(report.failures.into_iter().map(|f| format!("{file}: {f}")));
    }
    let metrics = reqwest011::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    failures.extend(check::health_metric_names_exist(
        &repo_root().join("grafana/dashboards"),
        &metrics,
    ));
    daemon.sigterm();
    assert!(
        daemon
            .wait_with_timeout(Duration::from_secs(10))
            .await
            .is_some(),
        "{}",
        daemon.output()
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} queries:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 200, "only {checked} queries ran");
}

/// The `[influxdb]` section that makes the daemon write to `influx`'s database `facilityd`.
fn influx_section(influx: &InfluxDb1) -> String {
    format!(
        "[influxdb]\napi = \"v1\"\nurl = {:?}\ndatabase = \"facilityd\"\nflush_interval = \"200ms\"\n",
        influx.url()
    )
}
