//! A real InfluxDB engine (Debian's InfluxDB 1.x) behind the writer: it fixes each field's
//! type per measurement and refuses a line that changes it, which VictoriaMetrics never does.
//! The demo's whole site (every built-in Modbus and MQTT profile) goes in through API v1 with
//! no line refused, every field with the type its point declares; a wrong password is held
//! and raised as a gateway work order, and everything lands once it is fixed.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use facilityd::profile::{Schema, builtin};
use facilityd::sim::{SimDeviceSpec, SimPortSpec, SimSpec};
use serde_json::Value as Json;
use support::influxdb::InfluxDb1;

/// Every field the built-in profiles and facilityd itself write, with its declared type.
fn declared_types() -> BTreeMap<(String, String), String> {
    let mut schema = Schema::new();
    for name in builtin::names() {
        let (p, _) = builtin::load(name).unwrap().unwrap().build().unwrap();
        assert!(schema.add(&p).is_empty(), "built-in {name} conflicts");
    }
    schema
        .fields()
        .map(|(k, o)| (k.clone(), o.field_type.as_str().to_string()))
        .collect()
}

async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

// Runs `facilityd demo`, which exists only with the `demo` cargo feature (on by default).
#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_site_lands_in_influxdb_1x_with_the_declared_types() {
    let db = InfluxDb1::start().await;
    db.create_database("facilityd").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo");
    let mut demo = support::Daemon::start(
        env!("CARGO_BIN_EXE_facilityd"),
        &[
            "demo",
            "--state-dir",
            &state.display().to_string(),
            "--influxdb-url",
            &db.url(),
            "--influxdb-api",
            "v1",
            "--influxdb-database",
            "facilityd",
            "--duration",
            "45s",
            "--refresh",
            "5s",
        ],
        &[("RUST_LOG", "info")],
    );
    let status = demo.wait_with_timeout(Duration::from_secs(120)).await;
    let out = demo.output();
    assert!(
        status.is_some_and(|s| s.success()),
        "the demo failed:\n{out}"
    );

    // The demo's last report: the log drained, nothing waiting. (A write that timed out on a
    // busy machine and was retried is no failure: only refused lines would be, below.)
    let last = out
        .lines()
        .rfind(|l| l.starts_with("telemetry:"))
        .unwrap_or_else(|| panic!("no telemetry line:\n{out}"));
    assert!(
        last.contains(" 0 lines waiting in the log"),
        "{last}\n{out}"
    );
    assert!(
        !state.join("dead-letter.lp").exists(),
        "lines were dead-lettered:\n{}",
        std::fs::read_to_string(state.join("dead-letter.lp")).unwrap_or_default()
    );

    // Every field the engine knows has the declared type; every built-in measurement and
    // facilityd's own are there with data.
    let declared = declared_types();
    for m in [
        "elevator",
        "pump",
        "fire_panel",
        "access_door",
        "device_status",
        "work_order",
    ] {
        let fields = db.field_types("facilityd", m).await;
        assert!(!fields.is_empty(), "no {m} fields in the database");
        for (f, t) in &fields {
            assert_eq!(
                declared.get(&(m.to_string(), f.clone())),
                Some(t),
                "{m}.{f} is stored as {t}"
            );
        }
        let counts = db.count("facilityd", m).await;
        assert!(
            counts.iter().any(|(_, n)| *n > 0),
            "no {m} points: {counts:?}"
        );
    }
    // The MQTT devices' points went into the same measurements as the Modbus ones: the MQTT
    // door's and lift's series are there, with the fields the type conflict once refused.
    for (m, asset, field) in [
        ("access_door", "DOOR-A-L2-01", "lock_current_ma"),
        ("elevator", "EL-A2", "car_floor"),
        ("elevator", "EL-A1", "car_floor"),
    ] {
        let ans = db
            .query(
                "facilityd",
                &format!("SELECT count(\"{field}\") FROM \"{m}\" WHERE \"asset\" = '{asset}'"),
            )
            .await;
        let n = InfluxDb1::rows(&ans)
            .first()
            .and_then(|r| r.values().find_map(Json::as_u64))
            .unwrap_or(0);
        assert!(n > 0, "no {m}.{field} of {asset}: {ans}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_held_and_raised_then_everything_lands() {
    let db = InfluxDb1::start_with_auth("admin", "s3cret").await;
    db.create_database("site").await;
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            devices: vec![
                SimDeviceSpec::new(1, "elevator"),
                SimDeviceSpec::new(2, "pump"),
                SimDeviceSpec::new(3, "fire_panel"),
                SimDeviceSpec::new(4, "access_door"),
            ],
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("influx-password");
    std::fs::write(&password, "wrong\n").unwrap();
    let port = support::free_port();
    let mut cfg = format!(
        "[gateway]\nid = \"gw-v1\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[influxdb]\napi = \"v1\"\nurl = \"{}\"\ndatabase = \"site\"\nretention_policy = \"autogen\"\nusername = \"admin\"\npassword_file = {:?}\nflush_interval = \"200ms\"\n\n",
        dir.path().join("state").display().to_string(),
        db.url(),
        password.display().to_string()
    );
    for (unit, profile) in [
        (1, "elevator"),
        (2, "pump"),
        (3, "fire_panel"),
        (4, "access_door"),
    ] {
        cfg.push_str(&format!(
            "[[devices]]\nid = \"D{unit}\"\nprofile = \"{profile}\"\ninterval = \"200ms\"\nmodbus = {{ url = \"tcp://{}\", unit = {unit} }}\n\n",
            sim.addrs()[0]
        ));
    }
    let path = dir.path().join("facilityd.toml");
    std::fs::write(&path, cfg).unwrap();
    let cfg = path.display().to_string();
    let api = format!("http://127.0.0.1:{port}/api/v1/work-orders?asset=gw-v1");
    let work_order = async |status: &str| {
        let Ok(r) = reqwest011::get(&api).await else {
            return false;
        };
        let list: Json = r.json().await.unwrap_or_default();
        list.as_array().is_some_and(|l| {
            l.iter()
                .any(|w| w["rule"] == "gateway_database_refused" && w["status"] == status)
        })
    };

    let mut gw = support::Daemon::start(
        env!("CARGO_BIN_EXE_facilityd"),
        &["run", "-c", &cfg],
        &[("RUST_LOG", "info")],
    );
    assert!(
        eventually(Duration::from_secs(60), async || work_order("open").await).await,
        "no gateway work order for the refused password:\n{}",
        gw.output()
    );
    assert!(gw.output().contains("status=401"), "{}", gw.output());
    gw.stop_cleanly(Duration::from_secs(20)).await;
    let held = db.count("site", "pump").await;
    assert!(held.is_empty(), "written with a wrong password? {held:?}");

    // The password fixed: what the log held lands, the work order resolves itself.
    std::fs::write(&password, "s3cret\n").unwrap();
    let mut gw = support::Daemon::start(
        env!("CARGO_BIN_EXE_facilityd"),
        &["run", "-c", &cfg],
        &[("RUST_LOG", "info")],
    );
    assert!(
        eventually(Duration::from_secs(60), async || work_order("resolved")
            .await)
        .await,
        "the gateway work order did not resolve:\n{}",
        gw.output()
    );
    let declared = declared_types();
    for m in ["elevator", "pump", "fire_panel", "access_door"] {
        let landed = eventually(Duration::from_secs(30), async || {
            db.count("site", m).await.iter().any(|(_, n)| *n > 0)
        })
        .await;
        assert!(landed, "no {m} points:\n{}", gw.output());
        for (f, t) in db.field_types("site", m).await {
            assert_eq!(
                declared.get(&(m.to_string(), f.clone())),
                Some(&t),
                "{m}.{f} is stored as {t}"
            );
        }
    }
    gw.stop_cleanly(Duration::from_secs(20)).await;
}
