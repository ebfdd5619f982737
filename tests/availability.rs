//! The availability history end to end: the simulator's lifts, pump and power room, the real
//! daemon polling them, and the spans and counter days it keeps in its SQLite database (read
//! here directly, read-only). A lift taken out of service by a scripted fault is unavailable,
//! a pump made silent is offline, a daemon restart leaves a gap that no span covers (not
//! monitored), and the power meter's energy counter shows its increase for the day, across
//! the restart.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::TimeZone;
use support::{Daemon, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_facilityd");

/// The daemon's flush period (`availability::FLUSH_INTERVAL`).
const FLUSH_MS: i64 = 10_000;
/// When the scripted faults start, after the simulator starts.
const FAULT_AT_MS: i64 = 8_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Debug, Clone, PartialEq)]
struct Span {
    asset: String,
    day: String,
    state: String,
    start: i64,
    end: i64,
}

#[derive(Debug, Clone, PartialEq)]
struct CounterDay {
    day: String,
    first: f64,
    first_ms: i64,
    last: f64,
    last_ms: i64,
    increase: f64,
}

fn open(db: &Path) -> Option<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()
}

/// Every span in the daemon's database, by asset and start (empty while it has none).
fn spans(db: &Path) -> Vec<Span> {
    let Some(c) = open(db) else {
        return Vec::new();
    };
    let Ok(mut st) = c.prepare(
        "SELECT asset, day, state, start_ms, end_ms FROM availability_spans ORDER BY asset, start_ms, id",
    ) else {
        return Vec::new();
    };
    st.query_map([], |r| {
        Ok(Span {
            asset: r.get(0)?,
            day: r.get(1)?,
            state: r.get(2)?,
            start: r.get(3)?,
            end: r.get(4)?,
        })
    })
    .map(|rows| rows.filter_map(Result::ok).collect())
    .unwrap_or_default()
}

fn counter_days(db: &Path, asset: &str, point: &str) -> Vec<CounterDay> {
    let c = open(db).expect("the work-order database");
    let mut st = c
        .prepare(
            "SELECT day, first_value, first_ms, last_value, last_ms, increase FROM counter_days
             WHERE asset = ?1 AND point = ?2 ORDER BY day",
        )
        .unwrap();
    st.query_map([asset, point], |r| {
        Ok(CounterDay {
            day: r.get(0)?,
            first: r.get(1)?,
            first_ms: r.get(2)?,
            last: r.get(3)?,
            last_ms: r.get(4)?,
            increase: r.get(5)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// One asset's spans with those cut at local midnight joined again: (state, start, end).
fn runs(all: &[Span], asset: &str) -> Vec<(String, i64, i64)> {
    let mut out: Vec<(String, i64, i64)> = Vec::new();
    for s in all.iter().filter(|s| s.asset == asset) {
        match out.last_mut() {
            Some(last) if last.0 == s.state && last.2 == s.start => last.2 = s.end,
            _ => out.push((s.state.clone(), s.start, s.end)),
        }
    }
    out
}

fn states(runs: &[(String, i64, i64)]) -> Vec<&str> {
    runs.iter().map(|r| r.0.as_str()).collect()
}

struct Site {
    cfg: PathBuf,
    db: PathBuf,
    http_port: u16,
    dir: tempfile::TempDir,
}

impl Site {
    fn new(devices: &[&support::SimDevice]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let site = Site {
            cfg: dir.path().join("facilityd.toml"),
            db: dir.path().join("state/workorders.sqlite"),
            http_port: free_port(),
            dir,
        };
        site.write(devices);
        site
    }

    /// Writes the configuration with `devices`.
    fn write(&self, devices: &[&support::SimDevice]) {
        let mut cfg = format!(
            "[gateway]\nid = \"gw-avail\"\nstate_dir = {:?}\ntimezone = \"Asia/Shanghai\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n\n",
            self.dir.path().join("state").display().to_string(),
            self.http_port,
        );
        for d in devices {
            cfg.push_str(&format!(
                "[[devices]]\nid = {:?}\nprofile = {:?}\nbuilding = \"A\"\ninterval = \"500ms\"\nmodbus = {{ url = \"tcp://{}\", unit = {}, timeout = \"300ms\", probe_interval = \"1s\" }}\n\n",
                d.name, d.device_type, d.addr, d.unit
            ));
        }
        std::fs::write(&self.cfg, cfg).unwrap();
    }

    fn start(&self) -> Daemon {
        Daemon::start(
            BIN,
            &["run", "-c", &self.cfg.display().to_string()],
            &[("RUST_LOG", "info")],
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_show_unavailable_and_offline_assets_and_a_restart_leaves_a_gap() {
    let sim_port = free_port();
    let listen = format!("127.0.0.1:{sim_port}");
    let spawned = now_ms();
    let (mut sim, devices) = support::start_simulator(
        BIN,
        &[
            "simulate",
            "--listen",
            &listen,
            "--elevators",
            "2",
            "--pumps",
            "1",
            "--fire-panels",
            "0",
            "--doors",
            "0",
            "--power-room",
            "--fault",
            "EL-0001=service_mode=out_of_service@8s",
            "--fault",
            "PU-0001=silent@8s",
        ],
        6,
    )
    .await;
    let serving = now_ms();
    let all: Vec<&support::SimDevice> = devices.iter().collect();
    let site = Site::new(&all);
    let mut daemon = site.start();

    // Wait for the faults to show in the database (written every 10 s).
    let t0 = Instant::now();
    let first = loop {
        let all = spans(&site.db);
        let lift = runs(&all, "EL-0001");
        let pump = runs(&all, "PU-0001");
        if states(&lift).contains(&"unavailable") && states(&pump).contains(&"offline") {
            break all;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(45) && daemon.is_running(),
            "no unavailable lift and offline pump after {:?}\nspans: {all:#?}\n--- daemon ---\n{}\n--- simulator ---\n{}",
            t0.elapsed(),
            daemon.output(),
            sim.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let read_at = now_ms();
    let fault_from = spawned + FAULT_AT_MS;
    // The fault fires once the simulator serves plus 8 s at the latest; the daemon sees it at
    // its next poll (500 ms, a silent reply times out after 300 ms).
    let fault_until = serving + FAULT_AT_MS + 1_500;
    for (asset, state) in [("EL-0001", "unavailable"), ("PU-0001", "offline")] {
        let r = runs(&first, asset);
        assert_eq!(states(&r), ["available", state], "{asset}: {first:#?}");
        let start = r[1].1;
        assert!(
            (fault_from..=fault_until).contains(&start),
            "{asset} {state} from {start}, the fault between {fault_from} and {fault_until}"
        );
        // The open span was written within a flush period of now.
        assert!(
            read_at - r[1].2 <= FLUSH_MS + 1_000,
            "{asset}: span written up to {}, read at {read_at}",
            r[1].2
        );
    }
    let other = runs(&first, "EL-0002");
    assert_eq!(states(&other), ["available"], "{first:#?}");
    // Every span lies in its local day (Shanghai).
    let sh: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    for s in &first {
        let day = |ms: i64| {
            sh.timestamp_millis_opt(ms)
                .unwrap()
                .format("%Y-%m-%d")
                .to_string()
        };
        assert_eq!(s.day, day(s.start), "{s:?}");
        assert!(s.end == s.start || s.day == day(s.end - 1), "{s:?}");
    }

    // A reload that removes EL-0002 ends its span then; the others go on in their rows.
    let kept: Vec<&support::SimDevice> = devices.iter().filter(|d| d.name != "EL-0002").collect();
    site.write(&kept);
    let reload_at = now_ms();
    daemon.sighup();
    assert!(
        daemon
            .wait_for_output("configuration reloaded", Duration::from_secs(10))
            .await,
        "{}",
        daemon.output()
    );
    let reloaded = now_ms();
    tokio::time::sleep(Duration::from_secs(1)).await;
    site.write(&all);

    // A clean stop ends every span at the stop.
    let stopping = now_ms();
    daemon.stop_cleanly(Duration::from_secs(15)).await;
    let stopped = now_ms();
    let before = spans(&site.db);
    let end_1 = before.iter().map(|s| s.end).max().unwrap();
    assert!(
        (stopping - 1_000..=stopped).contains(&end_1),
        "the last span ends at {end_1}, the daemon stopped between {stopping} and {stopped}"
    );

    let removed = runs(&before, "EL-0002");
    assert_eq!(states(&removed), ["available"], "{before:#?}");
    assert!(
        (reload_at..=reloaded).contains(&removed[0].2),
        "EL-0002 ends at {}, removed between {reload_at} and {reloaded}",
        removed[0].2
    );
    for (asset, state) in [("EL-0001", "unavailable"), ("PU-0001", "offline")] {
        let r = runs(&before, asset);
        assert_eq!(states(&r), ["available", state], "{asset}: {before:#?}");
        assert_eq!(r[1].2, end_1, "{asset} goes on to the stop");
    }

    // Down for 3 s, then up again (EL-0002 configured again) for a few seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted = now_ms();
    let mut daemon = site.start();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(daemon.is_running(), "{}", daemon.output());
    daemon.stop_cleanly(Duration::from_secs(15)).await;
    let after = spans(&site.db);

    // The time the daemon was down is covered by no span: not monitored.
    for asset in [
        "EL-0001", "EL-0002", "PU-0001", "PM-0001", "GEN-0001", "ATS-0001",
    ] {
        let r = runs(&after, asset);
        assert!(
            r.iter().all(|(_, s, e)| *e <= end_1 || *s >= restarted),
            "{asset}: a span covers the restart ({end_1}..{restarted}): {r:?}"
        );
        let (old, new): (Vec<_>, Vec<_>) = r.iter().partition(|(_, _, e)| *e <= end_1);
        assert!(!old.is_empty() && !new.is_empty(), "{asset}: {r:?}");
        let want = match asset {
            "EL-0001" => "unavailable",
            "PU-0001" => "offline",
            _ => "available",
        };
        assert_eq!(
            new.last().unwrap().0,
            want,
            "{asset} after the restart: {r:?}"
        );
    }

    // The meter's energy: one row for today, continued across the restart, its increase the
    // whole advance (no reset), the rise while the daemon was down included.
    let kwh = counter_days(&site.db, "PM-0001", "energy_import_kwh");
    assert!(!kwh.is_empty(), "no counter days for PM-0001");
    let today = kwh.last().unwrap();
    assert!(today.increase > 0.0, "{kwh:?}");
    assert!(
        today.first_ms < end_1 && today.last_ms >= restarted,
        "{kwh:?}"
    );
    if kwh.len() == 1 {
        assert!(
            (today.increase - (today.last - today.first)).abs() <= 1e-6 * today.last.max(1.0),
            "{kwh:?}"
        );
    }
    // The lifts' trips are counters too: a row per lift and day.
    assert!(!counter_days(&site.db, "EL-0002", "trips_total").is_empty());
    sim.sigterm();
}

/// An MQTT lift monitor, through a real broker: its state follows its messages, timed by the
/// gateway's clock when they arrive, not by the payload's own time (an hour behind here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_lift_is_timed_by_the_gateway_clock_not_its_payload() {
    use rumqttc::{AsyncClient, MqttOptions, QoS};

    let broker = support::Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("facilityd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-mqtt\"\nstate_dir = {:?}\ntimezone = \"Asia/Shanghai\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n\n\
             [mqtt]\nurl = \"{}\"\n\n[[devices]]\nid = \"LIFT-1\"\nprofile = \"lift_monitor_mqtt\"\nbuilding = \"A\"\ninterval = \"500ms\"\nmqtt = {{}}\n",
            dir.path().join("state").display().to_string(),
            free_port(),
            broker.url()
        ),
    )
    .unwrap();
    let db = dir.path().join("state/workorders.sqlite");
    let mut daemon = Daemon::start(
        BIN,
        &["run", "-c", &cfg.display().to_string()],
        &[("RUST_LOG", "info")],
    );

    let mut o = MqttOptions::new("availability-test", "127.0.0.1", broker.port());
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 100);
    let pump = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let publish = |mode: &'static str| {
        let client = client.clone();
        async move {
            let payload = format!(
                r#"{{"ts":{},"mode":"{mode}","fault":{{"code":0,"level":0}},"alarms":{{"trapped":false,"safety_circuit_open":false}}}}"#,
                now_ms() - 3_600_000
            );
            let _ = client
                .publish("lifts/A/LIFT-1/status", QoS::AtLeastOnce, false, payload)
                .await;
        }
    };
    // "normal" until the gateway has the lift available, then "inspection".
    let t0 = Instant::now();
    loop {
        publish("normal").await;
        let all = spans(&db);
        // The last run, not the only one: the subscriber may count the first message's hour-old
        // payload time as silence and mark the lift offline for a moment first (payload times
        // still drive MQTT liveness, a known fault taken up separately).
        if states(&runs(&all, "LIFT-1")).last() == Some(&"available") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30) && daemon.is_running(),
            "no available span for LIFT-1: {all:?}\n{}",
            daemon.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let switched = now_ms();
    for _ in 0..6 {
        publish("inspection").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    daemon.stop_cleanly(Duration::from_secs(15)).await;
    let stopped = now_ms();
    pump.abort();
    let all = runs(&spans(&db), "LIFT-1");
    assert!(all.len() >= 2, "{all:?}");
    let r = &all[all.len() - 2..];
    assert_eq!(states(r), ["available", "unavailable"], "{all:?}");
    assert!(
        (switched..=switched + 1_500).contains(&r[1].1),
        "unavailable from {}, switched at {switched}",
        r[1].1
    );
    assert!(
        (stopped - 3_000..=stopped).contains(&r[1].2),
        "{r:?}, stopped {stopped}"
    );
}
