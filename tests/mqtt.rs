//! MQTT end to end, against a real Mosquitto (persistence on) and VictoriaMetrics: devices in
//! (topic templates, JSON pointers, timestamps), QoS 1 across gateway restarts and broker
//! restarts, bad payloads, and work-order events out (MQTT notifier and webhook).

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::{Value as Json, json};
use support::{ExportedSeries, Mosquitto, VictoriaMetrics, find_series};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// (topic, payload) of the messages a test client received.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A test MQTT client (rumqttc): publishes, counts PUBACKs, records what it receives.
struct TestClient {
    client: AsyncClient,
    acks: Arc<AtomicU64>,
    got: Received,
    stop: CancellationToken,
}

impl TestClient {
    /// Connects with a persistent session (`clean = false`) or a clean one, and subscribes
    /// to `subscribe` (QoS 1) on every connect.
    async fn connect(port: u16, id: &str, clean: bool, subscribe: &[&str]) -> TestClient {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(clean);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 10_000);
        let acks = Arc::new(AtomicU64::new(0));
        let got: Received = Arc::new(Mutex::new(Vec::new()));
        let connected = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let filters: Vec<String> = subscribe.iter().map(|s| s.to_string()).collect();
        tokio::spawn({
            let (client, acks, got, connected, stop) = (
                client.clone(),
                acks.clone(),
                got.clone(),
                connected.clone(),
                stop.clone(),
            );
            async move {
                loop {
                    let ev = tokio::select! {
                        _ = stop.cancelled() => return,
                        ev = el.poll() => ev,
                    };
                    match ev {
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                            for f in &filters {
                                let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                            }
                            connected.store(true, Ordering::SeqCst);
                        }
                        Ok(Event::Incoming(Incoming::PubAck(_))) => {
                            acks.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Event::Incoming(Incoming::Publish(p))) => {
                            got.lock()
                                .unwrap()
                                .push((p.topic.clone(), p.payload.to_vec()));
                        }
                        Ok(_) => {}
                        Err(_) => {
                            connected.store(false, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        });
        let t0 = Instant::now();
        while !connected.load(Ordering::SeqCst) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "test client {id} did not connect"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the SUBACK come back before the test publishes to what it subscribed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        TestClient {
            client,
            acks,
            got,
            stop,
        }
    }

    async fn publish(&self, topic: &str, qos1: bool, payload: impl Into<Vec<u8>>) {
        let qos = if qos1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        self.client
            .publish(topic, qos, false, payload.into())
            .await
            .expect("queue publish");
    }

    /// Waits until the broker acknowledged `n` QoS 1 publishes in total.
    async fn wait_acks(&self, n: u64, timeout: Duration) {
        let t0 = Instant::now();
        while self.acks.load(Ordering::SeqCst) < n {
            assert!(
                t0.elapsed() < timeout,
                "only {} of {n} publishes acknowledged",
                self.acks.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn received(&self) -> Vec<(String, Vec<u8>)> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl support::Running {
    async fn metrics(&self) -> String {
        reqwest011::get(format!("{}/metrics", self.api()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
    /// One sample of /metrics, e.g. `facilityd_mqtt_payload_errors_total{cause="malformed"}`.
    async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }
    async fn wait_connected(&self) {
        let t0 = Instant::now();
        while !self.gw.mqtt.connected.load(Ordering::SeqCst) {
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "gateway did not connect to MQTT"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Subscriptions go out right after the CONNACK; give the SUBACK a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn write_config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("api-token"), "test-token").unwrap();
    let text = format!(
        "[gateway]\nid = \"gw-mqtt\"\nsite = \"tower-a\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = {:?}\n\n{body}",
        dir.join("state").display().to_string(),
        dir.join("api-token").display().to_string()
    );
    let path = dir.join("facilityd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn influx(vm: &VictoriaMetrics) -> String {
    format!(
        "[influxdb]\nurl = \"{}\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\nflush_interval = \"100ms\"\n",
        vm.url()
    )
}

/// Whole milliseconds an hour ago (VictoriaMetrics keeps ms).
fn past_ms(offset_ms: i64) -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    now - 3_600_000 + offset_ms
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn series_points(series: &[ExportedSeries], name: &str, asset: &str) -> Vec<(i64, f64)> {
    find_series(series, name, &[("asset", asset)])
        .map(|s| s.points())
        .unwrap_or_default()
}

/// Polls `f` until it returns Some or `timeout` passes.
async fn wait_for<T>(timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if t0.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const PLUG_PROFILE: &str = r#"
[[profiles]]
name = "plug"
device_type = "other"
measurement = "plug"
points = [
  { name = "POWER", kind = "state", json = "", output = "boolean" },
  { name = "temp_c", kind = "gauge", json = "", scale = 0.1, unit = "degC" },
]
"#;

// ---------------------------------------------------------------------------
// Devices in
// ---------------------------------------------------------------------------

/// Profile templates pick the device by `{asset}` and check the other captures; a device's own
/// topic with `{point}` reads plain payloads; JSON pointers, scale and the payload's timestamp
/// land exactly in the database; what matches no device is counted and written nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn topic_templates_and_json_pointers_land_exactly_in_the_database() {
    let broker = Mosquitto::start().await;
    let vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            r#"{influx}
[mqtt]
url = "{url}"

{PLUG_PROFILE}

[[devices]]
id = "DOOR-1"
profile = "access_door_mqtt"
building = "A"
mqtt = {{}}

[[devices]]
id = "DOOR-2"
profile = "access_door_mqtt"
building = "B"
mqtt = {{}}

[[devices]]
id = "LIFT-1"
profile = "lift_monitor_mqtt"
building = "A"
mqtt = {{}}

[[devices]]
id = "PLUG-1"
profile = "plug"
mqtt = {{ topic = "tasmota/{{asset}}/stat/{{point}}" }}
"#,
            influx = influx(&vm),
            url = broker.url()
        ),
    );
    let gw = support::start_gateway(&path).await;
    gw.wait_connected().await;
    let pubr = TestClient::connect(broker.port(), "t-pub-1", true, &[]).await;

    let t1 = past_ms(1_001);
    let t2 = past_ms(2_002);
    let t3 = past_ms(3_003);
    pubr.publish(
        "acs/A/doors/DOOR-1/state",
        true,
        json!({"state": "OpenForced", "closed": false, "reader": {"online": true, "tamper": false},
               "controller": {"battery_v": 13.41, "mains_fail": false}, "lock": {"current_ma": 180},
               "counters": {"cycles": 10234, "granted": 5512, "denied": 17}, "ts": rfc3339(t1)})
        .to_string(),
    )
    .await;
    pubr.publish(
        "acs/B/doors/DOOR-2/state",
        true,
        json!({"state": 0, "closed": true, "counters": {"cycles": 77}, "ts": rfc3339(t2)})
            .to_string(),
    )
    .await;
    // DOOR-1 is in building A: a message claiming B is not its own.
    pubr.publish(
        "acs/B/doors/DOOR-1/state",
        true,
        json!({"counters": {"cycles": 999999}, "ts": rfc3339(t2)}).to_string(),
    )
    .await;
    // No such door.
    pubr.publish(
        "acs/A/doors/DOOR-9/state",
        true,
        json!({"counters": {"cycles": 5}}).to_string(),
    )
    .await;
    pubr.publish(
        "lifts/A/LIFT-1/status",
        true,
        json!({"ts": t3, "car": {"floor": 12, "direction": "up", "load_pct": 35},
               "counters": {"trips": 264222, "run_minutes": 246449},
               "alarms": {"trapped": false}, "fault": {"level": 0}})
        .to_string(),
    )
    .await;
    pubr.publish("tasmota/PLUG-1/stat/POWER", true, "ON").await;
    pubr.publish("tasmota/PLUG-1/stat/temp_c", true, "215")
        .await;
    pubr.wait_acks(7, Duration::from_secs(10)).await;

    let want = |s: &[ExportedSeries]| {
        !series_points(s, "access_door_door_cycles_total", "DOOR-1").is_empty()
            && !series_points(s, "access_door_door_cycles_total", "DOOR-2").is_empty()
            && !series_points(s, "elevator_car_floor", "LIFT-1").is_empty()
            && !series_points(s, "plug_POWER", "PLUG-1").is_empty()
            && !series_points(s, "plug_temp_c", "PLUG-1").is_empty()
    };
    let series = vm
        .wait_for_series(
            r#"{__name__=~"(access_door|elevator|plug)_.*"}"#,
            want,
            Duration::from_secs(20),
        )
        .await;
    assert!(want(&series), "{series:#?}");

    // Exact values at the payload's own timestamps.
    assert_eq!(
        series_points(&series, "access_door_door_cycles_total", "DOOR-1"),
        [(t1, 10234.0)]
    );
    assert_eq!(
        series_points(&series, "access_door_lock_current_ma", "DOOR-1"),
        [(t1, 180.0)]
    );
    assert_eq!(
        series_points(&series, "access_door_battery_voltage_v", "DOOR-1"),
        [(t1, 13.41)]
    );
    assert_eq!(
        series_points(&series, "access_door_reader_online", "DOOR-1"),
        [(t1, 1.0)]
    );
    assert_eq!(
        series_points(&series, "access_door_door_cycles_total", "DOOR-2"),
        [(t2, 77.0)]
    );
    assert_eq!(
        series_points(&series, "elevator_car_floor", "LIFT-1"),
        [(t3, 12.0)]
    );
    assert_eq!(
        series_points(&series, "elevator_load_pct", "LIFT-1"),
        [(t3, 35.0)]
    );
    let rh = series_points(&series, "elevator_run_hours_total", "LIFT-1");
    assert_eq!(rh.len(), 1);
    assert!((rh[0].1 - 246449.0 / 60.0).abs() < 1e-6, "{rh:?}");
    assert_eq!(series_points(&series, "plug_POWER", "PLUG-1")[0].1, 1.0);
    assert_eq!(series_points(&series, "plug_temp_c", "PLUG-1")[0].1, 21.5);
    // Tags: the device's own.
    let door1 = find_series(
        &series,
        "access_door_door_cycles_total",
        &[("asset", "DOOR-1")],
    )
    .unwrap();
    assert_eq!(door1.label("building"), Some("A"));
    assert_eq!(door1.label("site"), Some("tower-a"));
    assert_eq!(door1.label("gateway"), Some("gw-mqtt"));
    assert_eq!(door1.label("device_type"), Some("access_door"));
    // The misrouted and unknown messages reached nobody.
    vm.sync().await;
    let all = vm
        .export(r#"{__name__="access_door_door_cycles_total"}"#)
        .await;
    assert!(
        all.iter()
            .all(|s| !s.values.contains(&999999.0) && !s.values.contains(&5.0)),
        "{all:#?}"
    );
    assert_eq!(
        gw.metric("facilityd_mqtt_payload_errors_total{cause=\"unknown_topic\"}")
            .await,
        2.0
    );
    assert_eq!(gw.metric("facilityd_mqtt_connected").await, 1.0);
    // The API shows the latest values of MQTT devices like any others.
    let points: Json = reqwest011::get(format!("{}/api/v1/assets/DOOR-1/points", gw.api()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let state = points["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "door_state")
        .unwrap();
    assert_eq!(state["value"], "open_forced");
    gw.stop().await;
}

/// QoS 1 messages published while the gateway is stopped wait in its persistent session and
/// arrive after it restarts; each is acknowledged only once accepted.
#[tokio::test(flavor = "multi_thread")]
async fn qos1_messages_published_while_stopped_arrive_after_restart() {
    let broker = Mosquitto::start().await;
    let vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            "{}\n[mqtt]\nurl = \"{}\"\n\n[[devices]]\nid = \"LIFT-1\"\nprofile = \"lift_monitor_mqtt\"\nbuilding = \"A\"\nmqtt = {{}}\n",
            influx(&vm),
            broker.url()
        ),
    );
    // First run: the session and its subscription are created.
    let gw = support::start_gateway(&path).await;
    gw.wait_connected().await;
    gw.stop().await;

    let n = 200;
    let base = publish_floors(&broker, "t-pub-2", n).await;

    let gw = support::start_gateway(&path).await;
    let want =
        |s: &[ExportedSeries]| series_points(s, "elevator_car_floor", "LIFT-1").len() == n as usize;
    let series = vm
        .wait_for_series(
            r#"{__name__="elevator_car_floor"}"#,
            want,
            Duration::from_secs(30),
        )
        .await;
    let got = series_points(&series, "elevator_car_floor", "LIFT-1");
    assert_eq!(got.len(), n as usize, "{got:?}");
    for (i, (t, v)) in got.iter().enumerate() {
        assert_eq!((*t, *v), (base + i as i64, i as f64));
    }
    assert!(
        gw.metric("facilityd_mqtt_messages_total{result=\"accepted\"}")
            .await
            >= n as f64
    );
    gw.stop().await;
}

/// The broker restarts in the middle of a stream of QoS 1 messages: the gateway reconnects
/// with backoff, subscribes again, and every QoS 1 message lands; QoS 0 ones may be lost.
#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_under_load_loses_no_qos1_message() {
    let mut broker = Mosquitto::start().await;
    let vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            "{}\n[mqtt]\nurl = \"{}\"\n\n[[devices]]\nid = \"LIFT-1\"\nprofile = \"lift_monitor_mqtt\"\nbuilding = \"A\"\nmqtt = {{}}\n\n[[devices]]\nid = \"LIFT-2\"\nprofile = \"lift_monitor_mqtt\"\nbuilding = \"A\"\nmqtt = {{}}\n",
            influx(&vm),
            broker.url()
        ),
    );
    let gw = support::start_gateway(&path).await;
    gw.wait_connected().await;
    // The publisher keeps its session too, so what it queued during the outage goes out after.
    let pubr = TestClient::connect(broker.port(), "t-pub-3", false, &[]).await;
    let n: i64 = 600;
    let base = past_ms(0);
    let mut restarted = false;
    for i in 0..n {
        pubr.publish(
            "lifts/A/LIFT-1/status",
            true,
            json!({"ts": base + i, "car": {"floor": i}}).to_string(),
        )
        .await;
        pubr.publish(
            "lifts/A/LIFT-2/status",
            false,
            json!({"ts": base + i, "car": {"floor": i}}).to_string(),
        )
        .await;
        if i == n / 3 && !restarted {
            restarted = true;
            broker.stop().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            broker.restart().await;
        }
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let want =
        |s: &[ExportedSeries]| series_points(s, "elevator_car_floor", "LIFT-1").len() == n as usize;
    let series = vm
        .wait_for_series(
            r#"{__name__="elevator_car_floor"}"#,
            want,
            Duration::from_secs(60),
        )
        .await;
    let got: BTreeSet<i64> = series_points(&series, "elevator_car_floor", "LIFT-1")
        .iter()
        .map(|(t, _)| t - base)
        .collect();
    let missing: Vec<i64> = (0..n).filter(|i| !got.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "QoS 1 messages lost: {missing:?}\n{}",
        broker.log_tail()
    );
    let qos0 = series_points(&series, "elevator_car_floor", "LIFT-2").len() as i64;
    assert!(qos0 <= n && qos0 > 0, "{qos0}");
    assert!(gw.metric("facilityd_mqtt_connects_total").await >= 2.0);
    assert!(gw.metric("facilityd_mqtt_connection_errors_total").await >= 1.0);
    assert_eq!(gw.metric("facilityd_mqtt_connected").await, 1.0);
    gw.stop().await;
}

/// Malformed JSON, wrong types, oversized payloads and unknown topics are counted per cause
/// and do not disturb the good messages around them (nor stall the session: an oversized
/// QoS 1 message is acknowledged and not delivered again).
#[tokio::test(flavor = "multi_thread")]
async fn bad_payloads_are_counted_and_do_not_disturb_the_rest() {
    let mut broker = Mosquitto::start().await;
    let vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            "{}\n[mqtt]\nurl = \"{}\"\nmax_payload_bytes = \"1KiB\"\n\n[[devices]]\nid = \"LIFT-1\"\nprofile = \"lift_monitor_mqtt\"\nbuilding = \"A\"\nmqtt = {{}}\n",
            influx(&vm),
            broker.url()
        ),
    );
    let gw = support::start_gateway(&path).await;
    gw.wait_connected().await;
    let pubr = TestClient::connect(broker.port(), "t-pub-4", true, &[]).await;
    let base = past_ms(0);
    let good = |i: i64| json!({"ts": base + i, "car": {"floor": i}}).to_string();
    let topic = "lifts/A/LIFT-1/status";
    pubr.publish(topic, true, good(0)).await;
    pubr.publish(topic, true, r#"{"ts": 1, "car": {"floor": "#)
        .await; // malformed
    pubr.publish(topic, true, vec![0xff, 0xfe, 0x00]).await; // not UTF-8
    pubr.publish(topic, true, good(1)).await;
    pubr.publish(
        topic,
        true,
        json!({"ts": base + 2, "car": {"floor": "twelve", "load_pct": {"x": 1}}, "counters": {"trips": 10}}).to_string(),
    )
    .await; // two wrong types, one good value
    pubr.publish(
        topic,
        true,
        format!(r#"{{"ts": {}, "pad": "{}"}}"#, base + 3, "x".repeat(4000)),
    )
    .await; // oversized
    pubr.publish("lifts/A/NOPE/status", true, good(4)).await; // unknown asset
    pubr.publish(
        topic,
        true,
        json!({"ts": "soon", "car": {"floor": 5}}).to_string(),
    )
    .await; // bad timestamp: receipt time
    pubr.publish(
        topic,
        true,
        json!({"ts": base - 8 * 86_400_000, "car": {"floor": 8}}).to_string(),
    )
    .await; // older than max_timestamp_age (7 days): refused
    pubr.publish(
        topic,
        true,
        json!({"ts": base + 2 * 3_600_000, "car": {"floor": 9}}).to_string(),
    )
    .await; // an hour ahead of the clock: refused
    pubr.publish(topic, true, good(6)).await;
    pubr.wait_acks(11, Duration::from_secs(10)).await;

    let want = |s: &[ExportedSeries]| {
        let f = series_points(s, "elevator_car_floor", "LIFT-1");
        f.len() >= 4 && !series_points(s, "elevator_trips_total", "LIFT-1").is_empty()
    };
    let series = vm
        .wait_for_series(
            r#"{__name__=~"elevator_.*"}"#,
            want,
            Duration::from_secs(20),
        )
        .await;
    let floors = series_points(&series, "elevator_car_floor", "LIFT-1");
    let exact: Vec<(i64, f64)> = floors
        .iter()
        .copied()
        .filter(|(t, _)| *t < base + 1000)
        .collect();
    assert_eq!(
        exact,
        [(base, 0.0), (base + 1, 1.0), (base + 6, 6.0)],
        "{floors:?}"
    );
    // The bad-timestamp one landed at the time of receipt.
    assert!(
        floors
            .iter()
            .any(|(t, v)| *v == 5.0 && *t > base + 3_000_000),
        "{floors:?}"
    );
    assert!(
        !floors.iter().any(|(_, v)| *v == 8.0 || *v == 9.0),
        "a payload time outside the window was written: {floors:?}"
    );
    assert_eq!(
        series_points(&series, "elevator_trips_total", "LIFT-1"),
        [(base + 2, 10.0)]
    );

    for (cause, n) in [
        ("malformed", 2.0),
        ("wrong_type", 2.0),
        ("oversized", 1.0),
        ("unknown_topic", 1.0),
        ("bad_timestamp", 1.0),
        ("timestamp_out_of_range", 2.0),
    ] {
        let name = format!("facilityd_mqtt_payload_errors_total{{cause=\"{cause}\"}}");
        assert_eq!(gw.metric(&name).await, n, "{cause}");
    }
    // The oversized QoS 1 message was acknowledged: after a broker restart nothing comes back.
    let before = gw
        .metric("facilityd_mqtt_messages_total{result=\"received\"}")
        .await;
    broker.restart().await;
    gw.wait_connected().await;
    pubr.publish(topic, true, good(7)).await;
    let series = vm
        .wait_for_series(
            r#"{__name__="elevator_car_floor"}"#,
            |s| {
                series_points(s, "elevator_car_floor", "LIFT-1")
                    .iter()
                    .any(|(_, v)| *v == 7.0)
            },
            Duration::from_secs(20),
        )
        .await;
    assert!(
        series_points(&series, "elevator_car_floor", "LIFT-1")
            .iter()
            .any(|(_, v)| *v == 7.0)
    );
    let after = gw
        .metric("facilityd_mqtt_messages_total{result=\"received\"}")
        .await;
    assert_eq!(after - before, 1.0, "a message came back after the restart");
    assert_eq!(
        gw.metric("facilityd_mqtt_payload_errors_total{cause=\"oversized\"}")
            .await,
        1.0
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// Work orders out
// ---------------------------------------------------------------------------

/// A webhook receiver: records every request body; answers 204.
#[derive(Clone, Default)]
struct Hook {
    got: Arc<Mutex<Vec<Json>>>,
}

impl Hook {
    async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| {
                let me = me.clone();
                async move {
                    me.got
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(&body).unwrap());
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }
    fn keys(&self) -> BTreeSet<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|b| b["idempotency_key"].as_str().unwrap().to_string())
            .collect()
    }
}

fn mqtt_bodies(c: &TestClient) -> Vec<(String, Json)> {
    c.received()
        .into_iter()
        .filter(|(t, _)| t.contains("/work-orders/"))
        .map(|(t, p)| (t, serde_json::from_slice(&p).unwrap()))
        .collect()
}

fn keys_of(bodies: &[(String, Json)]) -> BTreeSet<String> {
    bodies
        .iter()
        .map(|(_, b)| b["idempotency_key"].as_str().unwrap().to_string())
        .collect()
}

/// The README's door example: an access-control system publishing door events over MQTT, the
/// shipped default door rules, a webhook and an MQTT notifier. Forced and held-open doors
/// raise their work orders, and each event reaches both.
#[tokio::test(flavor = "multi_thread")]
async fn door_events_over_mqtt_raise_work_orders_to_webhook_and_mqtt() {
    let broker = Mosquitto::start().await;
    let hook = Hook::default();
    let hook_url = hook.start().await;
    let dir = tempfile::tempdir().unwrap();
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    std::fs::copy(
        support::repo_root().join("config/rules/access_door.toml"),
        conf_d.join("40-access-door.toml"),
    )
    .unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            r#"[mqtt]
url = "{url}"

[[devices]]
id = "DOOR-A-L1-03"
profile = "access_door_mqtt"
name = "Tower A lobby door 3"
building = "A"
floor = "L1"
mqtt = {{}}

[[notify]]
type = "webhook"
id = "cmms"
url = "{hook_url}"

[[notify]]
type = "mqtt"
id = "bus"
topic = "facilityd/{{site}}/work-orders/{{asset}}"
"#,
            url = broker.url()
        ),
    );
    let sub = TestClient::connect(
        broker.port(),
        "t-cmms-sub",
        false,
        &["facilityd/+/work-orders/#"],
    )
    .await;
    let gw = support::start_gateway(&path).await;
    gw.wait_connected().await;
    let acs = TestClient::connect(broker.port(), "t-acs", true, &[]).await;

    let now = || chrono::Utc::now().to_rfc3339();
    acs.publish(
        "acs/A/doors/DOOR-A-L1-03/state",
        true,
        json!({"state": "LockedShut", "closed": true, "reader": {"online": true}, "ts": now()})
            .to_string(),
    )
    .await;
    acs.publish(
        "acs/A/doors/DOOR-A-L1-03/state",
        true,
        json!({"state": "OpenForced", "closed": false, "ts": now()}).to_string(),
    )
    .await;
    for _ in 0..5 {
        acs.publish(
            "acs/A/doors/DOOR-A-L1-03/event",
            true,
            json!({"event": "DoorHeldOpen", "ts": now()}).to_string(),
        )
        .await;
    }

    let rules = |bodies: &[Json]| -> BTreeSet<String> {
        bodies
            .iter()
            .filter(|b| b["event"] == "opened")
            .map(|b| b["work_order"]["rule"].as_str().unwrap().to_string())
            .collect()
    };
    let want: BTreeSet<String> = ["door-forced", "door-held-open-repeated"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let hooked = wait_for(Duration::from_secs(20), async || {
        let got = hook.got.lock().unwrap().clone();
        (rules(&got) == want).then_some(got)
    })
    .await
    .unwrap_or_else(|| panic!("webhook got {:#?}", hook.got.lock().unwrap()));
    let over_mqtt = wait_for(Duration::from_secs(20), async || {
        let b = mqtt_bodies(&sub);
        (keys_of(&b) == hook.keys()).then_some(b)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "MQTT got {:#?}, webhook {:?}",
            mqtt_bodies(&sub),
            hook.keys()
        )
    });
    assert_eq!(hooked.len(), over_mqtt.len());
    for (topic, body) in &over_mqtt {
        assert_eq!(topic, "facilityd/tower-a/work-orders/DOOR-A-L1-03");
        assert_eq!(body["gateway"], "gw-mqtt");
        assert_eq!(body["work_order"]["asset"], "DOOR-A-L1-03");
        // The same JSON as the webhook's.
        let same = hooked
            .iter()
            .find(|h| h["idempotency_key"] == body["idempotency_key"])
            .unwrap();
        assert_eq!(same, body);
    }
    let forced = over_mqtt
        .iter()
        .find(|(_, b)| b["work_order"]["rule"] == "door-forced")
        .unwrap();
    assert_eq!(forced.1["work_order"]["kind"], "incident");
    assert_eq!(
        gw.metric("facilityd_mqtt_published_total{kind=\"work_order\"}")
            .await,
        over_mqtt.len() as f64
    );
    gw.stop().await;
}

/// Every work-order event reaches a real MQTT subscriber, also the ones raised while the
/// broker was down: the outbox retries until the broker's PUBACK confirms each.
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_notifier_delivers_every_event_across_a_broker_outage() {
    let mut broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            r#"[mqtt]
url = "{url}"

[[devices]]
id = "LIFT-1"
profile = "lift_monitor_mqtt"
building = "A"
mqtt = {{}}

[[rules]]
id = "lift-trapped"
type = "state"
match = {{ ids = "LIFT-1" }}
point = "trapped_alarm"
priority = "urgent"
title = "Passenger trapped in {{asset}}"

[[notify]]
type = "mqtt"
topic = "facilityd/{{site}}/work-orders/{{asset}}/{{event}}"
timeout = "2s"
"#,
            url = broker.url()
        ),
    );
    let sub = TestClient::connect(broker.port(), "t-wo-sub", false, &["facilityd/#"]).await;
    let gw = support::start_gateway(&path).await;
    gw.wait_connected().await;
    let lift = TestClient::connect(broker.port(), "t-lift", false, &[]).await;
    lift.publish(
        "lifts/A/LIFT-1/status",
        true,
        json!({"ts": chrono::Utc::now().timestamp_millis(), "alarms": {"trapped": true}})
            .to_string(),
    )
    .await;
    let opened = wait_for(Duration::from_secs(15), async || {
        let b = mqtt_bodies(&sub);
        b.iter().any(|(_, b)| b["event"] == "opened").then_some(b)
    })
    .await
    .expect("opened event over MQTT");
    let id = opened[0].1["work_order"]["id"].as_i64().unwrap();
    assert_eq!(
        opened[0].0,
        format!("facilityd/tower-a/work-orders/LIFT-1/opened")
    );

    // The broker goes away; the technician works on meanwhile.
    broker.stop().await;
    let api = gw.api();
    let post = async |path: &str, body: Json| {
        let r = reqwest011::Client::new()
            .post(format!("{api}/api/v1/work-orders/{id}/{path}"))
            .bearer_auth("test-token")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    };
    post("ack", json!({"by": "ana"})).await;
    post("resolve", json!({"by": "ana", "note": "released"})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(gw.metric("facilityd_mqtt_connected").await, 0.0);
    broker.restart().await;
    post("close", json!({"by": "ana"})).await;

    let events = ["opened", "acknowledged", "resolved", "closed"];
    let want: BTreeSet<String> = (1..=events.len()).map(|s| format!("{id}:{s}")).collect();
    let got = wait_for(Duration::from_secs(60), async || {
        let b = mqtt_bodies(&sub);
        (keys_of(&b).is_superset(&want)).then_some(b)
    })
    .await
    .unwrap_or_else(|| panic!("subscriber got {:#?}", mqtt_bodies(&sub)));
    for (i, ev) in events.iter().enumerate() {
        let key = format!("{id}:{}", i + 1);
        let (topic, body) = got
            .iter()
            .find(|(_, b)| b["idempotency_key"] == key.as_str())
            .unwrap();
        assert_eq!(body["event"], *ev, "{key}");
        assert!(topic.ends_with(&format!("/{ev}")), "{topic}");
    }
    // Nothing left in the outbox.
    let pending: Json = reqwest011::get(format!("{api}/api/v1/outbox?state=pending"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pending.as_array().map(Vec::len), Some(0), "{pending:#}");
    gw.stop().await;
}

/// The status topic: retained `online` while connected, `offline` after a clean stop.
#[tokio::test(flavor = "multi_thread")]
async fn status_topic_says_online_and_offline() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &format!("[mqtt]\nurl = \"{}\"\n", broker.url()));
    let gw = support::start_gateway(&path).await;
    gw.wait_connected().await;
    let watch = TestClient::connect(
        broker.port(),
        "t-status",
        true,
        &["facilityd/gw-mqtt/status"],
    )
    .await;
    let seen = |c: &TestClient| -> Vec<String> {
        c.received()
            .into_iter()
            .map(|(_, p)| String::from_utf8_lossy(&p).into_owned())
            .collect()
    };
    assert!(
        wait_for(Duration::from_secs(5), async || seen(&watch)
            .contains(&"online".to_string())
            .then_some(()))
        .await
        .is_some(),
        "{:?}",
        seen(&watch)
    );
    gw.stop().await;
    assert!(
        wait_for(Duration::from_secs(5), async || (seen(&watch)
            .last()
            .map(String::as_str)
            == Some("offline"))
        .then_some(()))
        .await
        .is_some(),
        "{:?}",
        seen(&watch)
    );
    drop(watch);
    // Retained: a newcomer learns it at once.
    let late = TestClient::connect(
        broker.port(),
        "t-status-2",
        true,
        &["facilityd/gw-mqtt/status"],
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(5), async || (seen(&late)
            == ["offline"])
        .then_some(()))
        .await
        .is_some(),
        "{:?}",
        seen(&late)
    );
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

fn config_errors(body: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), body);
    let prefix = format!("{}: ", path.display());
    match facilityd::settings::load_with_env(&path, Default::default()) {
        Ok(_) => panic!("expected errors for:\n{body}"),
        Err(e) => {
            e.0.iter()
                .map(|i| i.to_string().replace(&prefix, "FILE: "))
                .collect()
        }
    }
}

/// MQTT settings, devices and notifiers are validated by `check` and `run` alike; every error
/// names the file and the key path.
#[test]
fn mqtt_config_errors_name_file_and_key_path() {
    assert_eq!(
        config_errors(
            "[[devices]]\nid = \"D1\"\nprofile = \"access_door_mqtt\"\nbuilding = \"A\"\nmqtt = {}\n\n\
             [[notify]]\ntype = \"mqtt\"\ntopic = \"x/{asset}\"\n"
        ),
        [
            "FILE: devices[0].mqtt: an MQTT device needs the broker: configure [mqtt] url",
            "FILE: notify[0]: an MQTT notifier publishes through the [mqtt] connection: configure [mqtt] url",
        ]
    );
    assert_eq!(
        config_errors(
            r#"[mqtt]
url = "mqtt://127.0.0.1:1"
keep_alive = "500ms"

[[profiles]]
name = "meter"
device_type = "other"
mqtt_topic = "m/{meter}"
timestamp = { json = "ts", format = "epoch_s" }
points = [{ name = "kwh", kind = "counter", json = "/kwh" }]

[[devices]]
id = "D1"
profile = "access_door_mqtt"
mqtt = {}

[[devices]]
id = "D2"
profile = "pump"
mqtt = { topic = "p/2" }

[[devices]]
id = "D3"
profile = "access_door_mqtt"
mqtt = { topic = "doors/{door}/state" }

"#
        ),
        [
            "FILE: mqtt.keep_alive: expected whole seconds from 1s to 65535s (or 0 to turn it off), found 500ms",
            "FILE: profiles[0].mqtt_topic: \"m/{meter}\": unknown placeholder {meter}: expected one of {asset}, {site}, {building}, {floor}, {gateway}, {point}",
            "FILE: profiles[0].timestamp.json: expected a JSON pointer starting with '/', found \"ts\"",
            "FILE: devices[0].building: profile \"access_door_mqtt\"'s mqtt_topic \"acs/{building}/doors/{asset}/+\" captures {building}, which must match the device's own `building`: set it",
            "FILE: devices[1].profile: profile \"pump\" has no MQTT points (`json = \"/pointer\"`): an MQTT device needs them",
            "FILE: devices[2].mqtt.topic: \"doors/{door}/state\": unknown placeholder {door}: expected one of {asset}, {site}, {building}, {floor}, {gateway}, {point}",
        ]
    );
    // Notifier errors are reported once the devices are valid.
    let e = config_errors(
        "[mqtt]\nurl = \"mqtts://broker.example\"\nca_file = \"/nonexistent/ca.pem\"\n\n\
         [[notify]]\ntype = \"mqtt\"\ntopic = \"wo/{asset}/{value}\"\nevents = [\"opened\", \"exploded\"]\n",
    );
    assert_eq!(
        e,
        [
            "FILE: mqtt.ca_file: cannot read /nonexistent/ca.pem: No such file or directory (os error 2)",
            "FILE: notify[0].topic: \"wo/{asset}/{value}\": unknown placeholder {value}: expected one of {asset}, {name}, {site}, {building}, {floor}, {device_type}, {gateway}, {rule}, {priority}, {kind}, {event}",
            "FILE: notify[0].events[1]: unknown event \"exploded\": expected one of opened, updated, acknowledged, condition_cleared, flapping, resolved, closed, cancelled",
        ]
    );
    let e = config_errors(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\n\
         [[notify]]\ntype = \"mqtt\"\ntopic = \"wo/{asset}/{value}\"\nevents = [\"opened\", \"exploded\"]\nqos = 2\n",
    );
    assert_eq!(
        e,
        [
            "FILE: notify[0].qos: unknown field `qos`, expected one of `type`, `id`, `topic`, `events`, `retain`, `timeout`, `match`"
        ]
    );
    let e = config_errors(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\n\
         [[notify]]\ntype = \"mqtt\"\ntopic = \"wo/{asset}/{value}\"\nevents = [\"opened\", \"exploded\"]\n",
    );
    assert_eq!(
        e,
        [
            "FILE: notify[0].topic: \"wo/{asset}/{value}\": unknown placeholder {value}: expected one of {asset}, {name}, {site}, {building}, {floor}, {device_type}, {gateway}, {rule}, {priority}, {kind}, {event}",
            "FILE: notify[0].events[1]: unknown event \"exploded\": expected one of opened, updated, acknowledged, condition_cleared, flapping, resolved, closed, cancelled",
        ]
    );
}

/// `publish_telemetry`: every reading republished as JSON on the device's topic.
#[tokio::test(flavor = "multi_thread")]
async fn telemetry_is_republished_per_device() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            "[mqtt]\nurl = \"{}\"\npublish_telemetry = {{ topic = \"facilityd/{{gateway}}/telemetry/{{building}}/{{asset}}\", qos = 1 }}\n\n\
             [[devices]]\nid = \"LIFT-1\"\nprofile = \"lift_monitor_mqtt\"\nbuilding = \"A\"\nmqtt = {{}}\n",
            broker.url()
        ),
    );
    let watch = TestClient::connect(
        broker.port(),
        "t-telemetry",
        true,
        &["facilityd/gw-mqtt/telemetry/#"],
    )
    .await;
    let gw = support::start_gateway(&path).await;
    gw.wait_connected().await;
    let pubr = TestClient::connect(broker.port(), "t-pub-5", true, &[]).await;
    let t = past_ms(0);
    pubr.publish(
        "lifts/A/LIFT-1/status",
        true,
        json!({"ts": t, "car": {"floor": 12, "direction": "up"}, "counters": {"trips": 7}})
            .to_string(),
    )
    .await;
    let got = wait_for(Duration::from_secs(10), async || {
        watch.received().into_iter().next()
    })
    .await
    .expect("a telemetry message");
    assert_eq!(got.0, "facilityd/gw-mqtt/telemetry/A/LIFT-1");
    let body: Json = serde_json::from_slice(&got.1).unwrap();
    assert_eq!(body["asset"], "LIFT-1");
    assert_eq!(body["measurement"], "elevator");
    assert_eq!(body["tags"]["building"], "A");
    assert_eq!(body["values"]["car_floor"], 12.0);
    assert_eq!(body["values"]["run_state"], "up");
    assert_eq!(
        body["values"]["trips_total"], 7.0,
        "a counter is a float field"
    );
    let time = chrono::DateTime::parse_from_rfc3339(body["time"].as_str().unwrap()).unwrap();
    assert_eq!(time.timestamp_millis(), t);
    assert!(
        gw.metric("facilityd_mqtt_published_total{kind=\"telemetry\"}")
            .await
            >= 1.0
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

mod certs {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509, X509NameBuilder};

    pub struct Issued {
        pub cert: X509,
        pub key: PKey<Private>,
    }

    impl Issued {
        pub fn cert_pem(&self) -> Vec<u8> {
            self.cert.to_pem().unwrap()
        }
        /// PKCS#8 PEM, as `key_file` wants it.
        pub fn key_pem(&self) -> Vec<u8> {
            self.key.private_key_to_pem_pkcs8().unwrap()
        }
    }

    /// A CA (`ca = None`), or a certificate it signs (`server`: with SAN 127.0.0.1, localhost).
    pub fn issue(cn: &str, ca: Option<&Issued>, server: bool) -> Issued {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_u32(rand::random::<u32>() >> 1)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(ca.map_or(&name, |c| c.cert.subject_name()))
            .unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        if ca.is_none() {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
        }
        if server {
            let san = SubjectAlternativeName::new()
                .ip("127.0.0.1")
                .dns("localhost")
                .build(&b.x509v3_context(ca.map(|c| &*c.cert), None))
                .unwrap();
            b.append_extension(san).unwrap();
        }
        b.sign(ca.map_or(&key, |c| &c.key), MessageDigest::sha256())
            .unwrap();
        Issued {
            cert: b.build(),
            key,
        }
    }
}

/// mqtts:// with the broker's CA and a client certificate the broker requires.
#[tokio::test(flavor = "multi_thread")]
async fn mqtts_with_ca_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::issue("facilityd test CA", None, false);
    let server = certs::issue("127.0.0.1", Some(&ca), true);
    let client = certs::issue("facilityd-gw-mqtt", Some(&ca), false);
    let file = |name: &str, bytes: Vec<u8>| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let ca_file = file("ca.pem", ca.cert_pem());
    let server_cert = file("server.pem", server.cert_pem());
    let server_key = file("server.key", server.key_pem());
    let client_cert = file("client.pem", client.cert_pem());
    let client_key = file("client.key", client.key_pem());
    let tls_port = support::free_port();
    // A plain listener for the test's own clients, a TLS one that wants a client certificate.
    let broker = Mosquitto::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {ca_file}\ncertfile {server_cert}\nkeyfile {server_key}\nrequire_certificate true\n"
    ))
    .await;
    assert!(support::wait_for_tcp(([127, 0, 0, 1], tls_port).into(), Duration::from_secs(5)).await);
    let path = write_config(
        dir.path(),
        &format!(
            "[mqtt]\nurl = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{ca_file}\"\ncert_file = \"{client_cert}\"\nkey_file = \"{client_key}\"\n\n\
             [[devices]]\nid = \"LIFT-1\"\nprofile = \"lift_monitor_mqtt\"\nbuilding = \"A\"\nmqtt = {{}}\n"
        ),
    );
    let gw = support::start_gateway(&path).await;
    gw.wait_connected().await;
    let pubr = TestClient::connect(broker.port(), "t-pub-tls", true, &[]).await;
    pubr.publish(
        "lifts/A/LIFT-1/status",
        true,
        json!({"ts": past_ms(0), "car": {"floor": 12}}).to_string(),
    )
    .await;
    let api = gw.api();
    let floor = wait_for(Duration::from_secs(10), async || {
        let points: Json = reqwest011::get(format!("{api}/api/v1/assets/LIFT-1/points"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        points["points"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == "car_floor")
            .and_then(|p| p["value"].as_f64())
    })
    .await;
    assert_eq!(floor, Some(12.0), "{}", broker.log_tail());
    gw.stop().await;

    // Without the client certificate the broker refuses the handshake: never connected, and
    // the gateway keeps running and retrying.
    let path = write_config(
        dir.path(),
        &format!("[mqtt]\nurl = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{ca_file}\"\n"),
    );
    let gw = support::start_gateway(&path).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gw.metric("facilityd_mqtt_connected").await, 0.0);
    assert!(gw.metric("facilityd_mqtt_connection_errors_total").await >= 1.0);
    gw.stop().await;
}

/// Publishes `n` QoS 1 readings of LIFT-1's car floor (0, 1, ...) a millisecond apart from an
/// hour ago, as client `id`, and waits for the broker's PUBACKs. Returns the first timestamp.
async fn publish_floors(broker: &Mosquitto, id: &str, n: i64) -> i64 {
    let pubr = TestClient::connect(broker.port(), id, true, &[]).await;
    let base = past_ms(0);
    for i in 0..n {
        pubr.publish(
            "lifts/A/LIFT-1/status",
            true,
            json!({"ts": base + i, "car": {"floor": i}}).to_string(),
        )
        .await;
    }
    pubr.wait_acks(n as u64, Duration::from_secs(20)).await;
    base
}

/// One sample of a daemon's /metrics (0 when absent).
async fn daemon_metric(api: &str, name: &str) -> f64 {
    let Ok(resp) = reqwest011::get(format!("{api}/metrics")).await else {
        return -1.0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A QoS 1 message is acknowledged to the broker only once the telemetry log has synced its
/// samples. With a long group commit, the daemon takes 20 messages and is killed with `kill -9`
/// before the sync: the broker never got the acknowledgements, so it delivers all 20 again to
/// the restarted daemon, and every sample lands in the database exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn qos1_is_acknowledged_only_after_the_log_sync() {
    let broker = Mosquitto::start().await;
    let vm = VictoriaMetrics::start_with_args(&["-dedup.minScrapeInterval=1ms"]).await;
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let path = write_config(
        dir.path(),
        &format!(
            "{}\n[storage]\nfsync_interval = \"10s\"\n\n[mqtt]\nurl = \"{}\"\n\n[[devices]]\nid = \"LIFT-1\"\nprofile = \"lift_monitor_mqtt\"\nbuilding = \"A\"\nmqtt = {{}}\n",
            influx(&vm),
            broker.url()
        ),
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&path, text).unwrap();
    let api = format!("http://127.0.0.1:{port}");
    let cfg = path.display().to_string();
    let bin = env!("CARGO_BIN_EXE_facilityd");
    let start = || support::Daemon::start(bin, &["run", "-c", &cfg], &[("RUST_LOG", "info")]);

    let mut gw = start();
    let connected = wait_for(Duration::from_secs(20), async || {
        (daemon_metric(&api, "facilityd_mqtt_connected").await == 1.0).then_some(())
    })
    .await;
    assert!(connected.is_some(), "no MQTT connection:\n{}", gw.output());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let n = 20;
    let base = publish_floors(&broker, "t-pub-sync", n).await;
    let taken = wait_for(Duration::from_secs(20), async || {
        let v = daemon_metric(&api, "facilityd_mqtt_messages_total{result=\"accepted\"}").await;
        (v >= n as f64).then_some(())
    })
    .await;
    assert!(taken.is_some(), "messages not taken:\n{}", gw.output());
    // Taken and appended, but not synced yet: no acknowledgement has gone to the broker.
    assert_eq!(
        daemon_metric(&api, "facilityd_log_fsyncs_total").await,
        0.0,
        "the log synced before the kill; the test needs the kill inside the 10 s group commit"
    );
    gw.kill9();

    // The restarted daemon gets all 20 again from its persistent session.
    let mut gw = start();
    let again = wait_for(Duration::from_secs(30), async || {
        let v = daemon_metric(&api, "facilityd_mqtt_messages_total{result=\"received\"}").await;
        (v >= n as f64).then_some(v)
    })
    .await;
    assert!(
        again.is_some(),
        "the broker did not deliver the unacknowledged messages again:\n{}",
        gw.output()
    );
    let want =
        |s: &[ExportedSeries]| series_points(s, "elevator_car_floor", "LIFT-1").len() == n as usize;
    let series = vm
        .wait_for_series(
            r#"{__name__="elevator_car_floor"}"#,
            want,
            Duration::from_secs(40),
        )
        .await;
    let got = series_points(&series, "elevator_car_floor", "LIFT-1");
    let expected: Vec<(i64, f64)> = (0..n).map(|i| (base + i, i as f64)).collect();
    assert_eq!(got, expected);
    gw.stop_cleanly(Duration::from_secs(10)).await;
}
