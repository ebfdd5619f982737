//! SIGHUP reload against the real daemon: devices added, removed and changed while an
//! unchanged device polls on without a gap (seen from the device side, in the pymodbus
//! server's request log), an invalid configuration rejected with the old one kept running,
//! reloads counted in /metrics, and keys that need a restart named.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Daemon, ModbusRequest, PyModbusServer};

const BIN: &str = env!("CARGO_BIN_EXE_facilityd");

/// KEEP-1's poll interval; the longest gap allowed between two of its polls is twice that.
const KEEP_INTERVAL_MS: u64 = 300;

fn device(id: &str, unit: u8, url: &str, interval_ms: u64) -> String {
    format!(
        "[[devices]]\nid = \"{id}\"\nprofile = \"probe\"\ninterval = \"{interval_ms}ms\"\n\
         modbus = {{ url = \"{url}\", unit = {unit}, timeout = \"100ms\" }}\n"
    )
}

fn main_config(dir: &Path, http_port: u16, url_a: &str, extra: &str) -> String {
    format!(
        r#"[gateway]
id = "gw-reload"
state_dir = {state:?}

[http]
listen = "127.0.0.1:{http_port}"

[[profiles]]
name = "probe"
device_type = "other"
points = [ {{ name = "level", kind = "gauge", register = "holding", address = 0 }} ]

{keep}
[[rules]]
id = "level-high"
type = "threshold"
match = {{ ids = ["KEEP-1"] }}
point = "level"
above = 50
for = "1h"
priority = "low"
title = "level high at {{asset}}"
{extra}"#,
        state = dir.join("state").display().to_string(),
        keep = device("KEEP-1", 1, url_a, KEEP_INTERVAL_MS),
    )
}

struct Api {
    base: String,
    http: reqwest011::Client,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, String) {
        match self.http.get(format!("{}{path}", self.base)).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    }

    async fn asset_ids(&self) -> Vec<String> {
        let (status, body) = self.get("/api/v1/assets").await;
        if status != 200 {
            return Vec::new();
        }
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let mut ids: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["id"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    /// The latest value of `level` of an asset, once read.
    async fn level(&self, asset: &str) -> Option<f64> {
        let (status, body) = self.get(&format!("/api/v1/assets/{asset}/points")).await;
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        v["points"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == "level")?["value"]
            .as_f64()
    }

    async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Polls `f` until it holds; panics with `what` and the daemon's output after `timeout`.
    async fn wait<F, Fut>(&self, daemon: &Daemon, what: &str, timeout: Duration, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let t0 = Instant::now();
        while !f().await {
            assert!(
                t0.elapsed() < timeout,
                "timed out waiting for: {what}\n{}",
                daemon.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn count(daemon: &Daemon, needle: &str) -> usize {
    daemon.stderr().matches(needle).count()
}

/// Sends SIGHUP and waits until the daemon logged the `n`th applied or rejected reload.
async fn sighup(daemon: &mut Daemon, needle: &str, n: usize) {
    daemon.sighup();
    let t0 = Instant::now();
    while count(daemon, needle) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no {needle:?} #{n} after SIGHUP\n{}",
            daemon.output()
        );
        assert!(daemon.is_running(), "daemon died\n{}", daemon.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn times(requests: &[ModbusRequest], unit: u8) -> Vec<f64> {
    requests
        .iter()
        .filter(|r| r.unit == unit && r.is_read())
        .map(|r| r.t)
        .collect()
}

fn largest_gap(t: &[f64]) -> f64 {
    t.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_device_changes_without_a_gap_and_rejects_an_invalid_config() {
    // Two "sites": KEEP-1 and GONE-2 behind server A, NEW-3 behind server B.
    let server_a = PyModbusServer::start(&json!({
        "units": { "1": { "holding": { "0": 101 } }, "2": { "holding": { "0": 102 } } }
    }))
    .await;
    let server_b = PyModbusServer::start(&json!({
        "units": { "3": { "holding": { "0": 103 } } }
    }))
    .await;
    let (url_a, url_b) = (server_a.url(), server_b.url());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("facilityd.toml");
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    let http_port = support::free_port();
    std::fs::write(&cfg, main_config(dir.path(), http_port, &url_a, "")).unwrap();
    std::fs::write(
        conf_d.join("10-gone.toml"),
        device("GONE-2", 2, &url_a, 300),
    )
    .unwrap();

    let mut daemon = Daemon::start(
        BIN,
        &["run", "-c", cfg.to_str().unwrap()],
        &[("RUST_LOG", "info")],
    );
    let api = Api {
        base: format!("http://127.0.0.1:{http_port}"),
        http: reqwest011::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    };
    api.wait(
        &daemon,
        "both devices read",
        Duration::from_secs(20),
        || async {
            api.level("KEEP-1").await == Some(101.0) && api.level("GONE-2").await == Some(102.0)
        },
    )
    .await;
    assert_eq!(api.asset_ids().await, ["GONE-2", "KEEP-1"]);
    assert_eq!(count(&daemon, "polling link"), 1, "{}", daemon.output());
    // Polls over a few cycles before the first reload, for the gap check.
    tokio::time::sleep(Duration::from_millis(3 * KEEP_INTERVAL_MS)).await;

    // (a) A device added in conf.d: it appears in the API and is polled, on a new link.
    std::fs::write(conf_d.join("20-new.toml"), device("NEW-3", 3, &url_b, 200)).unwrap();
    sighup(&mut daemon, "configuration reloaded", 1).await;
    let out = daemon.stderr();
    assert!(out.contains("devices_added=1"), "{out}");
    assert!(out.contains("devices_unchanged=2"), "{out}");
    assert!(out.contains("added=NEW-3"), "{out}");
    // The unchanged rule on the unchanged device kept its state (a pending `for`).
    assert!(out.contains("rule_states_carried=1"), "{out}");
    api.wait(&daemon, "NEW-3 read", Duration::from_secs(10), || async {
        api.level("NEW-3").await == Some(103.0)
    })
    .await;
    assert_eq!(api.asset_ids().await, ["GONE-2", "KEEP-1", "NEW-3"]);
    assert!(!times(&server_b.requests(), 3).is_empty());
    api.wait(
        &daemon,
        "NEW-3 in /metrics",
        Duration::from_secs(5),
        || async {
            api.metric("facilityd_modbus_polls_total{asset=\"NEW-3\"}")
                .await
                .is_some_and(|n| n > 0.0)
        },
    )
    .await;
    // One task per link: server A's kept running, server B's is new.
    assert_eq!(count(&daemon, "polling link"), 2, "{}", daemon.output());

    // (b) A device removed, another changed (its interval), and a key that needs a restart.
    std::fs::remove_file(conf_d.join("10-gone.toml")).unwrap();
    std::fs::write(conf_d.join("20-new.toml"), device("NEW-3", 3, &url_b, 600)).unwrap();
    std::fs::write(
        &cfg,
        main_config(
            dir.path(),
            http_port,
            &url_a,
            "\n[work_orders]\nresponse_times = { low = \"20d\" }\n",
        ),
    )
    .unwrap();
    sighup(&mut daemon, "configuration reloaded", 2).await;
    let removed_at = now_s();
    let out = daemon.stderr();
    assert!(out.contains("removed=GONE-2"), "{out}");
    assert!(out.contains("changed=NEW-3"), "{out}");
    assert!(
        out.contains("take effect only after a restart")
            && out.contains("work_orders.response_times"),
        "{out}"
    );
    assert_eq!(api.asset_ids().await, ["KEEP-1", "NEW-3"]);
    assert_eq!(api.get("/api/v1/assets/GONE-2/points").await.0, 404);
    let metrics = api.get("/metrics").await.1;
    assert!(!metrics.contains("asset=\"GONE-2\""), "{metrics}");
    assert!(
        metrics.contains("facilityd_config_restart_required 1"),
        "{metrics}"
    );
    // The link to server A and its task stayed; no new task for NEW-3's changed settings.
    assert_eq!(count(&daemon, "polling link"), 2, "{}", daemon.output());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after: Vec<f64> = times(&server_a.requests(), 2)
        .into_iter()
        .filter(|&t| t > removed_at + 0.05)
        .collect();
    assert!(after.is_empty(), "GONE-2 still polled at {after:?}");
    // NEW-3 restarted with its new interval.
    let new3: Vec<f64> = times(&server_b.requests(), 3)
        .into_iter()
        .filter(|&t| t > removed_at + 0.05)
        .collect();
    assert!(new3.len() >= 3, "NEW-3 polls after the change: {new3:?}");
    let shortest = new3
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::MAX, f64::min);
    assert!(shortest > 0.45, "NEW-3 still polled every 200 ms: {new3:?}");

    // (c) An invalid file: rejected, logged with its file and key path, counted; the old
    // configuration keeps running.
    std::fs::write(
        conf_d.join("30-bad.toml"),
        device("BAD-9", 9, &url_a, 300).replace("\"probe\"", "\"no-such-profile\""),
    )
    .unwrap();
    sighup(&mut daemon, "configuration reload rejected", 1).await;
    let out = daemon.stderr();
    assert!(out.contains("the old configuration keeps running"), "{out}");
    let bad_line = out
        .lines()
        .find(|l| l.contains("30-bad.toml") && l.contains("devices[0].profile"))
        .unwrap_or_else(|| panic!("no error naming the file and key: {out}"));
    assert!(bad_line.contains("ERROR"), "{bad_line}");
    assert_eq!(
        api.metric("facilityd_config_reloads_total{result=\"error\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        api.metric("facilityd_config_reloads_total{result=\"ok\"}")
            .await,
        Some(2.0)
    );
    assert_eq!(
        api.metric("facilityd_config_last_reload_successful").await,
        Some(0.0)
    );
    assert_eq!(api.asset_ids().await, ["KEEP-1", "NEW-3"]);
    let rejected_at = now_s();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        times(&server_b.requests(), 3)
            .iter()
            .any(|&t| t > rejected_at),
        "NEW-3 not polled after the rejected reload"
    );

    // KEEP-1 was never restarted: its polls, as server A saw them, have no gap longer than
    // twice its interval, from before the first reload to after the last.
    let keep = times(&server_a.requests(), 1);
    assert!(keep.len() >= 15, "KEEP-1 polls: {keep:?}");
    assert!(keep.last().is_some_and(|&t| t > rejected_at));
    let gap = largest_gap(&keep);
    assert!(
        gap <= 2.0 * KEEP_INTERVAL_MS as f64 / 1000.0,
        "KEEP-1 had a gap of {gap:.3} s between polls (interval {KEEP_INTERVAL_MS} ms)"
    );
    assert_eq!(api.level("KEEP-1").await, Some(101.0));

    daemon.sigterm();
    let status = daemon.wait_with_timeout(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{}",
        daemon.output()
    );
    // The gateway never wrote to the equipment.
    assert!(server_a.requests().iter().all(|r| !r.is_write()));
    assert!(server_b.requests().iter().all(|r| !r.is_write()));
}

/// Publishes `{"held_open_s": value}` to each (topic, value) every 100 ms until dropped.
struct Publisher {
    stop: tokio_util::sync::CancellationToken,
}

impl Publisher {
    fn start(port: u16, messages: Vec<(&'static str, u32)>) -> Publisher {
        let mut o = rumqttc::MqttOptions::new("reload-test-publisher", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = rumqttc::AsyncClient::new(o, 1000);
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        ev = el.poll() => if ev.is_err() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        },
                    }
                }
            }
        });
        tokio::spawn({
            let stop = stop.clone();
            async move {
                while !stop.is_cancelled() {
                    for (topic, value) in &messages {
                        let _ = client.try_publish(
                            *topic,
                            rumqttc::QoS::AtMostOnce,
                            false,
                            format!("{{\"held_open_s\": {value}}}"),
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Publisher { stop }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn door(id: &str) -> String {
    format!(
        "[[devices]]\nid = \"{id}\"\nprofile = \"door_json\"\nmqtt = {{ topic = \"site/doors/{id}\" }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_subscribes_to_added_mqtt_devices_and_unsubscribes_removed_ones() {
    let broker = support::Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("facilityd.toml");
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    let http_port = support::free_port();
    std::fs::write(
        &cfg,
        format!(
            r#"[gateway]
id = "gw-reload-mqtt"
state_dir = {state:?}

[http]
listen = "127.0.0.1:{http_port}"

[mqtt]
url = "{url}"

[[profiles]]
name = "door_json"
device_type = "access_door"
points = [ {{ name = "held_open_s", kind = "gauge", json = "/held_open_s" }} ]
"#,
            state = dir.path().join("state").display().to_string(),
            url = broker.url(),
        ),
    )
    .unwrap();
    std::fs::write(conf_d.join("10-door1.toml"), door("DOOR-1")).unwrap();
    let _publisher = Publisher::start(
        broker.port(),
        vec![("site/doors/DOOR-1", 11), ("site/doors/DOOR-2", 22)],
    );
    let mut daemon = Daemon::start(
        BIN,
        &["run", "-c", cfg.to_str().unwrap()],
        &[("RUST_LOG", "info")],
    );
    let api = Api {
        base: format!("http://127.0.0.1:{http_port}"),
        http: reqwest011::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    };
    let held = |asset: &'static str| {
        let api = &api;
        async move {
            let (status, body) = api.get(&format!("/api/v1/assets/{asset}/points")).await;
            if status != 200 {
                return None;
            }
            let v: Value = serde_json::from_str(&body).ok()?;
            v["points"][0]["value"].as_f64()
        }
    };
    api.wait(
        &daemon,
        "DOOR-1's messages",
        Duration::from_secs(20),
        || async { held("DOOR-1").await == Some(11.0) },
    )
    .await;
    assert_eq!(api.asset_ids().await, ["DOOR-1"]);

    // An MQTT device added: its topic is subscribed to and its messages reach the API.
    std::fs::write(conf_d.join("20-door2.toml"), door("DOOR-2")).unwrap();
    sighup(&mut daemon, "configuration reloaded", 1).await;
    assert!(
        daemon
            .stderr()
            .contains("subscribed=site/doors/DOOR-2 unsubscribed="),
        "{}",
        daemon.output()
    );
    api.wait(
        &daemon,
        "DOOR-2's messages",
        Duration::from_secs(10),
        || async { held("DOOR-2").await == Some(22.0) },
    )
    .await;
    assert_eq!(api.asset_ids().await, ["DOOR-1", "DOOR-2"]);

    // One removed: it leaves the API, and its topic is unsubscribed (its messages stop
    // arriving, so they stop being counted as for no device).
    std::fs::remove_file(conf_d.join("10-door1.toml")).unwrap();
    sighup(&mut daemon, "configuration reloaded", 2).await;
    assert!(
        daemon
            .stderr()
            .contains("subscribed= unsubscribed=site/doors/DOOR-1"),
        "{}",
        daemon.output()
    );
    assert_eq!(api.asset_ids().await, ["DOOR-2"]);
    let unknown = "facilityd_mqtt_payload_errors_total{cause=\"unknown_topic\"}";
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = api.metric(unknown).await;
    assert!(before.is_some(), "no {unknown} in /metrics");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        api.metric(unknown).await,
        before,
        "DOOR-1's topic still delivered"
    );
    let metrics = api.get("/metrics").await.1;
    assert!(!metrics.contains("asset=\"DOOR-1\""), "{metrics}");

    daemon.sigterm();
    let status = daemon.wait_with_timeout(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{}",
        daemon.output()
    );
}
