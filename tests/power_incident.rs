//! One incident per mains failure, end to end: the simulator's power room (`facilityd
//! simulate --fault mains-failure...`) with a lift, pumps, a fire panel and a door in one building, the real
//! daemon polling them with the shipped power rules, and its work orders read over the API.
//!
//! Offline rules here wait 15 s (the shipped ones wait 5 minutes) so the scenario takes about a
//! minute; everything else is the shipped `ats.toml`, `generator.toml` and `power_meter.toml`.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value as Json;
use support::{Daemon, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_facilityd");

/// The shipped offline rules (id, device type, title), with a 15 s `after`, each held by the
/// building's mains failure as the shipped ones are.
const OFFLINE_RULES: &[(&str, &str, &str)] = &[
    (
        "pump-offline",
        "pump",
        "Pump {asset} controller not answering",
    ),
    (
        "lift-offline",
        "elevator",
        "Lift {asset} monitoring unit not answering",
    ),
    (
        "fire-panel-offline",
        "fire_panel",
        "Fire panel {asset} not answering",
    ),
    (
        "door-controller-offline",
        "access_door",
        "Door controller {asset} not answering",
    ),
];

fn offline_rules() -> String {
    OFFLINE_RULES
        .iter()
        .map(|(id, device_type, title)| {
            format!(
                "[[rules]]\nid = {id:?}\ntype = \"offline\"\nmatch = {{ device_type = {device_type:?} }}\nafter = \"15s\"\n\
                 unless = {{ rule = \"power-mains-lost\", scope = \"building\" }}\npriority = \"high\"\n\
                 work_order = \"corrective\"\ntitle = {title:?}\n\n"
            )
        })
        .collect()
}

struct Site {
    sim: Daemon,
    daemon: Daemon,
    api: String,
    _dir: tempfile::TempDir,
}

impl Site {
    /// The simulated site with `faults`, and the daemon polling it.
    async fn start(faults: &[&str]) -> Site {
        let sim_port = free_port();
        let listen = format!("127.0.0.1:{sim_port}");
        let mut args = vec![
            "simulate",
            "--listen",
            &listen,
            "--elevators",
            "1",
            "--pumps",
            "2",
            "--fire-panels",
            "1",
            "--doors",
            "1",
            "--power-room",
        ];
        for f in faults {
            args.push("--fault");
            args.push(f);
        }
        let (sim, devices) = support::start_simulator(BIN, &args, 8).await;

        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let conf_d = dir.path().join("conf.d");
        support::copy_shipped_rules(&conf_d, &["ats", "generator", "power_meter"]);
        std::fs::write(conf_d.join("offline.toml"), offline_rules()).unwrap();
        let mut cfg = format!(
            "[gateway]\nid = \"gw-power\"\nsite = \"tower-a\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n",
            dir.path().join("state").display().to_string(),
        );
        for d in &devices {
            cfg.push_str(&format!(
                "[[devices]]\nid = {:?}\nprofile = {:?}\nbuilding = \"A\"\ninterval = \"500ms\"\nmodbus = {{ url = \"tcp://{}\", unit = {}, timeout = \"300ms\", probe_interval = \"1s\" }}\n\n",
                d.name, d.device_type, d.addr, d.unit
            ));
        }
        let cfg_path = dir.path().join("facilityd.toml");
        std::fs::write(&cfg_path, &cfg).unwrap();
        let daemon = Daemon::start(
            BIN,
            &["run", "-c", &cfg_path.display().to_string()],
            &[("RUST_LOG", "info")],
        );
        Site {
            sim,
            daemon,
            api: format!("http://127.0.0.1:{http_port}"),
            _dir: dir,
        }
    }

    /// Every work order (an empty list while the API is not up yet).
    async fn work_orders(&self) -> Vec<Json> {
        let Ok(r) = reqwest011::get(format!("{}/api/v1/work-orders?limit=1000", self.api)).await
        else {
            return Vec::new();
        };
        r.json::<Json>()
            .await
            .ok()
            .and_then(|j| j.as_array().cloned())
            .unwrap_or_default()
    }

    async fn of_rule(&self, rule: &str) -> Vec<Json> {
        self.work_orders()
            .await
            .into_iter()
            .filter(|w| w["rule"] == rule)
            .collect()
    }

    /// Waits until `rule` has a work order (on `asset`, when given); panics with both
    /// processes' output after `timeout`.
    async fn wait_for(&mut self, rule: &str, asset: Option<&str>, timeout: Duration) -> Json {
        let t0 = Instant::now();
        loop {
            if let Some(w) = self
                .of_rule(rule)
                .await
                .into_iter()
                .find(|w| asset.is_none_or(|a| w["asset"] == a))
            {
                return w;
            }
            if t0.elapsed() > timeout || !self.daemon.is_running() {
                panic!(
                    "no {rule} work order{} after {timeout:?}\nwork orders: {:#?}\n--- daemon ---\n{}\n--- simulator ---\n{}",
                    asset.map(|a| format!(" on {a}")).unwrap_or_default(),
                    self.work_orders().await,
                    self.daemon.output(),
                    self.sim.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The corrective and incident work orders (calendar inspections may come due on any
    /// day the test runs), as (rule, asset).
    async fn raised(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .work_orders()
            .await
            .iter()
            .filter(|w| matches!(w["kind"].as_str(), Some("corrective" | "incident")))
            .map(|w| {
                (
                    w["rule"].as_str().unwrap_or("").to_string(),
                    w["asset"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    async fn stop(mut self) {
        self.daemon.stop_cleanly(Duration::from_secs(15)).await;
        self.sim.sigterm();
    }
}

/// The (asset, rule) pairs an incident's work order lists as held.
/// The offline work orders among `raised`.
fn offline(raised: &[(String, String)]) -> Vec<&(String, String)> {
    raised
        .iter()
        .filter(|(r, _)| r.ends_with("-offline"))
        .collect()
}

/// How many of `raised` are of `rule`.
fn count(raised: &[(String, String)], rule: &str) -> usize {
    raised.iter().filter(|(r, _)| r == rule).count()
}

fn affected(w: &Json) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = w["evidence"]["affected"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["asset"].as_str().unwrap_or("").to_string(),
                        x["rule"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

/// The assets an incident lists for their offline rules.
fn affected_offline(w: &Json) -> Vec<String> {
    affected(w)
        .into_iter()
        .filter(|(_, r)| r.ends_with("-offline"))
        .map(|(a, _)| a)
        .collect()
}

/// The generator does not start: the building stays dark until the mains returns. One
/// mains-failure incident lists the devices that went quiet, the generator's own failure has
/// its work order, and no device gets an offline work order for the outage; after the mains
/// returns, the one pump whose supply did not come back (held silent) gets its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mains_failure_without_the_generator_is_one_incident_and_a_fail_to_start() {
    let mut site = Site::start(&[
        "mains-failure:generator-fails-to-start@15s..60s",
        "PU-0002=silent@15s",
    ])
    .await;
    let incident = site
        .wait_for("power-mains-lost", None, Duration::from_secs(60))
        .await;
    assert_eq!(incident["asset"], "ATS-0001");
    site.wait_for(
        "generator-fail-to-start",
        Some("GEN-0001"),
        Duration::from_secs(60),
    )
    .await;

    // The outage lasts 45 s, three times the offline rules' 15 s: every quiet device is held.
    let t0 = Instant::now();
    let mut listed = Vec::new();
    while t0.elapsed() < Duration::from_secs(40) {
        let raised = site.raised().await;
        let offline = offline(&raised);
        assert!(
            offline.is_empty(),
            "offline work orders during the outage: {offline:?}\n{}",
            site.daemon.output()
        );
        if let Some(w) = site.of_rule("power-mains-lost").await.first() {
            listed = affected_offline(w);
        }
        if listed.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        listed,
        ["DOOR-0001", "EL-0001", "FP-0001", "PU-0001", "PU-0002"],
        "the incident's affected assets: {:#?}",
        site.of_rule("power-mains-lost").await
    );
    // The meter at the incomer read 0 V: its voltage rules were held and are listed too, and
    // nothing of the power room itself went offline.
    let incident = site.of_rule("power-mains-lost").await.remove(0);
    let held = affected(&incident);
    assert!(
        held.iter()
            .any(|(a, r)| a == "PM-0001" && r.starts_with("power-voltage-")),
        "{held:?}"
    );
    assert!(
        !held
            .iter()
            .any(|(a, _)| matches!(a.as_str(), "GEN-0001" | "ATS-0001")),
        "{held:?}"
    );

    // Power returns at 60 s: PU-0002 stays silent and gets its own work order 15 s after the
    // release; the devices that answer again get none.
    let pu2 = site
        .wait_for("pump-offline", Some("PU-0002"), Duration::from_secs(90))
        .await;
    assert_eq!(pu2["status"], "open");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let raised = site.raised().await;
    assert_eq!(count(&raised, "power-mains-lost"), 1, "{raised:?}");
    let offline = offline(&raised);
    assert_eq!(
        offline,
        [&("pump-offline".to_string(), "PU-0002".to_string())],
        "{raised:?}"
    );
    assert!(
        count(&raised, "ats-fail-to-transfer") == 0,
        "the switch had nothing to transfer to: {raised:?}"
    );
    site.stop().await;
}

/// The generator runs but the switch does not move: a fail-to-transfer work order, and still
/// one incident and no offline work orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_that_does_not_transfer_raises_fail_to_transfer() {
    let mut site = Site::start(&["mains-failure:ats-fails-to-transfer@15s..70s"]).await;
    site.wait_for("power-mains-lost", None, Duration::from_secs(60))
        .await;
    let w = site
        .wait_for(
            "ats-fail-to-transfer",
            Some("ATS-0001"),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(w["priority"], "urgent");
    // Until the mains returns at 70 s and 20 s beyond (the offline rules' 15 s after release).
    tokio::time::sleep(Duration::from_secs(45)).await;
    let raised = site.raised().await;
    let offline = offline(&raised);
    assert!(offline.is_empty(), "{raised:?}\n{}", site.daemon.output());
    assert!(count(&raised, "generator-fail-to-start") == 0, "{raised:?}");
    assert_eq!(count(&raised, "power-mains-lost"), 1, "{raised:?}");
    site.stop().await;
}

/// The generator starts and the switch transfers: the building is back on the generator within
/// seconds, the only work order is the incident, and the set's run is in the telemetry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mains_failure_carried_by_the_generator_is_one_incident_only() {
    let mut site = Site::start(&["mains-failure@15s..50s"]).await;
    site.wait_for("power-mains-lost", None, Duration::from_secs(60))
        .await;
    // Through the restoration (50 s), the retransfer (10 s) and the offline rules' 15 s.
    tokio::time::sleep(Duration::from_secs(50)).await;
    let raised = site.raised().await;
    assert_eq!(
        raised,
        [("power-mains-lost".to_string(), "ATS-0001".to_string())],
        "{}",
        site.daemon.output()
    );
    site.stop().await;
}
