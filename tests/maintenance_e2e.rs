//! Rules and work orders end to end: simulated and third-party devices, the gateway (in
//! process or as the real binary), its HTTP API, and a real webhook receiver.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use facilityd::model::Value;
use facilityd::sim::{Fault, SimDeviceSpec, SimHandle, SimPortSpec, SimSpec};
use hmac::{Hmac, Mac};
use serde_json::{Value as Json, json};
use sha2::Sha256;
use support::{Daemon, PyModbusServer, free_port};

/// A webhook receiver: records every request; answers 503 while `down`.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    down: Arc<AtomicBool>,
}

impl Receiver {
    async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let me = me.clone();
                async move {
                    if me.down.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    me.got.lock().unwrap().push((headers, body));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn bodies(&self) -> Vec<Json> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| serde_json::from_str(b).unwrap())
            .collect()
    }
}

fn write_config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    write_config_on(dir, body, "127.0.0.1:0")
}

fn write_config_on(dir: &std::path::Path, body: &str, listen: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("api-token"), "test-token").unwrap();
    std::fs::write(dir.join("hook-secret"), "s3cret").unwrap();
    let text = format!(
        "[gateway]\nid = \"gw-t\"\nsite = \"tower-a\"\nstate_dir = {:?}\n\n[http]\nlisten = \"{listen}\"\napi_token_file = {:?}\n\n{body}",
        dir.join("state").display().to_string(),
        dir.join("api-token").display().to_string()
    );
    let path = dir.join("facilityd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn get(url: &str) -> Json {
    reqwest011::get(url).await.unwrap().json().await.unwrap()
}

/// The newest work order, once there is one (or `None` after `timeout`).
async fn newest_work_order(api: &str, timeout: Duration) -> Option<Json> {
    wait_for(timeout, async || {
        get(&format!("{api}/api/v1/work-orders"))
            .await
            .as_array()
            .unwrap()
            .first()
            .cloned()
    })
    .await
}

async fn post(url: &str, body: Json) -> (u16, Json) {
    let r = reqwest011::Client::new()
        .post(url)
        .bearer_auth("test-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Json::Null))
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sim(devices: Vec<SimDeviceSpec>) -> SimHandle {
    facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            devices,
        }],
        frozen: true,
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_fault_opens_one_work_order_and_one_signed_webhook_per_event() {
    let receiver = Receiver::default();
    let hook = receiver.start().await;
    let s = sim(vec![SimDeviceSpec::new(1, "pump")]).await;
    s.set_point(0, 1, "discharge_pressure_bar", Value::Float(3.5))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[devices]]\nid = \"PU-1\"\nprofile = \"pump\"\nbuilding = \"A\"\ninterval = \"200ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1, timeout = \"150ms\" }}\n\n\
             [[rules]]\nid = \"low-pressure\"\ntype = \"threshold\"\nmatch = {{ device_type = \"pump\" }}\npoint = \"discharge_pressure_bar\"\nbelow = 2.0\nclear = 2.3\nfor = \"1s\"\npriority = \"high\"\nwork_order = \"corrective\"\ntitle = \"Low discharge pressure at {{asset}}: {{value}} bar\"\n\n\
             [[notify]]\ntype = \"webhook\"\nid = \"cmms\"\nurl = {hook:?}\nsecret_file = {:?}\n",
            s.addrs()[0],
            dir.path().join("hook-secret").display().to_string()
        ),
    );
    let gw = support::start_gateway(&cfg).await;
    let api = gw.api();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        get(&format!("{api}/api/v1/work-orders"))
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );

    let crossed = Instant::now();
    s.set_point(0, 1, "discharge_pressure_bar", Value::Float(1.2))
        .unwrap();
    let wo = newest_work_order(&api, Duration::from_secs(5))
        .await
        .expect("no work order");
    let took = crossed.elapsed();
    // `for` (1 s) plus at most one poll interval (200 ms), plus commit and scheduling slack.
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(1600),
        "work order after {took:?}"
    );
    assert_eq!(wo["rule"], "low-pressure");
    assert_eq!(wo["key"], "tower-a/PU-1/low-pressure");
    assert_eq!(wo["priority"], "high");
    assert_eq!(wo["title"], "Low discharge pressure at PU-1: 1.2 bar");
    assert_eq!(wo["evidence"]["point"], "discharge_pressure_bar");
    assert_eq!(wo["evidence"]["value"], 1.2);
    assert_eq!(wo["evidence"]["unit"], "bar");

    // Clear, then resolve and close through the API: one webhook per event, in order, signed.
    s.set_point(0, 1, "discharge_pressure_bar", Value::Float(3.0))
        .unwrap();
    wait_for(Duration::from_secs(5), async || {
        (get(&format!("{api}/api/v1/work-orders/1")).await["condition"] == "cleared").then_some(())
    })
    .await
    .expect("not cleared");
    assert_eq!(
        post(
            &format!("{api}/api/v1/work-orders/1/resolve"),
            json!({"by": "tech", "note": "replaced check valve"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        post(&format!("{api}/api/v1/work-orders/1/close"), json!({}))
            .await
            .0,
        200
    );
    let got = wait_for(Duration::from_secs(5), async || {
        (receiver.bodies().len() >= 4).then(|| receiver.bodies())
    })
    .await
    .expect("webhooks missing");
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.stop().await;
    let events: Vec<&str> = got.iter().map(|b| b["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["opened", "condition_cleared", "resolved", "closed"],
        "exactly one delivery per event"
    );
    assert_eq!(receiver.got.lock().unwrap().len(), 4);
    for (i, (headers, body)) in receiver.got.lock().unwrap().iter().enumerate() {
        let b: Json = serde_json::from_str(body).unwrap();
        assert_eq!(b["seq"], i as u64 + 1);
        assert_eq!(b["idempotency_key"], format!("1:{}", i + 1));
        assert_eq!(headers["idempotency-key"], format!("1:{}", i + 1).as_str());
        assert_eq!(b["gateway"], "gw-t");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body.as_bytes());
        assert_eq!(
            headers["x-facilityd-signature"],
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())).as_str()
        );
    }
    assert_eq!(got[3]["work_order"]["status"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_input_yields_one_work_order_with_growing_occurrences() {
    let s = sim(vec![SimDeviceSpec::new(1, "pump")]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[devices]]\nid = \"PU-F\"\nprofile = \"pump\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1, timeout = \"100ms\" }}\n\n\
             [[rules]]\nid = \"pump-fault\"\ntype = \"state\"\npoint = \"fault\"\nequals = true\npriority = \"high\"\nwork_order = \"corrective\"\ntitle = \"Pump {{asset}} fault\"\n",
            s.addrs()[0]
        ),
    );
    let gw = support::start_gateway(&cfg).await;
    let api = gw.api();
    // The fault bit toggles about every poll for 4 s: a condition that changes on most
    // evaluations, which the flap guard must hold as one work order.
    for i in 0..40 {
        s.set_point(0, 1, "fault", Value::Bool(i % 2 == 0)).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.set_point(0, 1, "fault", Value::Bool(false)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = get(&format!("{api}/api/v1/work-orders")).await;
    gw.stop().await;
    let list = list.as_array().unwrap();
    assert_eq!(
        list.len(),
        1,
        "a flapping input opened several work orders: {list:#?}"
    );
    let occ = list[0]["occurrences"].as_u64().unwrap();
    assert!(occ >= 6, "occurrences {occ}");
    assert_eq!(list[0]["flapping"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_outage_delays_but_loses_nothing_in_order() {
    let receiver = Receiver::default();
    receiver.down.store(true, Ordering::SeqCst);
    let hook = receiver.start().await;
    let s = sim(vec![
        SimDeviceSpec::new(1, "elevator"),
        SimDeviceSpec::new(2, "access_door"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[devices]]\nid = \"EL-1\"\nprofile = \"elevator\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{0}\", unit = 1, timeout = \"100ms\" }}\n\n\
             [[devices]]\nid = \"DOOR-1\"\nprofile = \"access_door\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{0}\", unit = 2, timeout = \"100ms\" }}\n\n\
             [[rules]]\nid = \"trapped\"\ntype = \"state\"\nmatch = {{ device_type = \"elevator\" }}\npoint = \"trapped_alarm\"\nequals = true\nauto_resolve = true\npriority = \"urgent\"\nwork_order = \"corrective\"\ntitle = \"Trapped in {{asset}}\"\n\n\
             [[rules]]\nid = \"forced\"\ntype = \"state\"\nmatch = {{ device_type = \"access_door\" }}\npoint = \"door_state\"\nequals = \"open_forced\"\npriority = \"high\"\nwork_order = \"incident\"\ntitle = \"Door {{asset}} forced\"\n\n\
             [[notify]]\ntype = \"webhook\"\nid = \"cmms\"\nurl = {hook:?}\n",
            s.addrs()[0]
        ),
    );
    let gw = support::start_gateway(&cfg).await;
    for _ in 0..3 {
        s.set_point(0, 1, "trapped_alarm", Value::Bool(true))
            .unwrap();
        s.set_point(0, 2, "door_state", Value::Str("open_forced".into()))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.set_point(0, 1, "trapped_alarm", Value::Bool(false))
            .unwrap();
        s.set_point(0, 2, "door_state", Value::Str("locked_shut".into()))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let api = gw.api();
    let outbox = get(&format!("{api}/api/v1/outbox?state=pending")).await;
    assert!(
        outbox.as_array().unwrap().len() >= 6,
        "events are queued while the receiver is down: {outbox}"
    );
    receiver.down.store(false, Ordering::SeqCst);
    let pending_gone = wait_for(Duration::from_secs(20), async || {
        get(&format!("{api}/api/v1/outbox?state=pending"))
            .await
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    gw.stop().await;
    assert!(
        pending_gone.is_some(),
        "backlog not delivered after the outage"
    );
    let bodies = receiver.bodies();
    let mut keys: Vec<String> = bodies
        .iter()
        .map(|b| b["idempotency_key"].as_str().unwrap().to_string())
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "an event was delivered twice");
    // Per work order: seq 1, 2, 3, ... in delivery order.
    let mut per: std::collections::BTreeMap<i64, Vec<u64>> = Default::default();
    for b in &bodies {
        per.entry(b["work_order"]["id"].as_i64().unwrap())
            .or_default()
            .push(b["seq"].as_u64().unwrap());
    }
    assert!(
        per.len() >= 4,
        "expected several work orders (trapped auto-resolves and reopens): {per:?}"
    );
    for (id, seqs) in per {
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "work order {id} out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_device_gets_one_work_order_and_no_secondary_ones() {
    let s = sim(vec![SimDeviceSpec::new(1, "pump")]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[devices]]\nid = \"PU-O\"\nprofile = \"pump\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1, timeout = \"100ms\", probe_interval = \"500ms\" }}\n\n\
             [[rules]]\nid = \"offline\"\ntype = \"offline\"\nafter = \"1s\"\npriority = \"high\"\nwork_order = \"corrective\"\ntitle = \"{{asset}} not answering\"\n\n\
             [[rules]]\nid = \"low-pressure\"\ntype = \"threshold\"\npoint = \"discharge_pressure_bar\"\nbelow = 2.0\npriority = \"high\"\nwork_order = \"corrective\"\ntitle = \"low\"\n\n\
             [[rules]]\nid = \"not-running\"\ntype = \"state\"\npoint = \"running\"\nequals = false\nfor = \"2s\"\npriority = \"low\"\nwork_order = \"corrective\"\ntitle = \"stopped\"\n",
            s.addrs()[0]
        ),
    );
    s.set_point(0, 1, "discharge_pressure_bar", Value::Float(3.0))
        .unwrap();
    s.set_point(0, 1, "running", Value::Bool(true)).unwrap();
    let gw = support::start_gateway(&cfg).await;
    let api = gw.api();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.set_fault(0, 1, Some(Fault::Silent)).unwrap();
    // While it is silent the values it would report would fire both rules.
    s.set_point(0, 1, "discharge_pressure_bar", Value::Float(0.5))
        .unwrap();
    s.set_point(0, 1, "running", Value::Bool(false)).unwrap();
    let wo = newest_work_order(&api, Duration::from_secs(6))
        .await
        .expect("no offline work order");
    assert_eq!(wo["rule"], "offline");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let list = get(&format!("{api}/api/v1/work-orders")).await;
    let assets = get(&format!("{api}/api/v1/assets")).await;
    gw.stop().await;
    let list = list.as_array().unwrap();
    assert_eq!(
        list.len(),
        1,
        "secondary work orders while offline: {list:#?}"
    );
    assert_eq!(assets[0]["online"], false);
    assert_eq!(assets[0]["open_work_orders"], 1);
}

/// Runs `facilityd run` as a child process.
fn daemon(cfg: &std::path::Path) -> Daemon {
    Daemon::start(
        env!("CARGO_BIN_EXE_facilityd"),
        &["run", "-c", &cfg.display().to_string()],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_loses_and_duplicates_nothing_and_timers_resume() {
    let receiver = Receiver::default();
    let hook = receiver.start().await;
    let s = sim(vec![
        SimDeviceSpec::new(1, "pump"),
        SimDeviceSpec::new(2, "elevator"),
    ])
    .await;
    s.set_point(0, 1, "vibration_mm_s", Value::Float(1.0))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config_on(
        dir.path(),
        &format!(
            "[[devices]]\nid = \"PU-K\"\nprofile = \"pump\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{0}\", unit = 1, timeout = \"100ms\" }}\n\n\
             [[devices]]\nid = \"EL-K\"\nprofile = \"elevator\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{0}\", unit = 2, timeout = \"100ms\" }}\n\n\
             [[rules]]\nid = \"vibration\"\ntype = \"threshold\"\npoint = \"vibration_mm_s\"\nabove = 4.5\nclear = 4.0\nfor = \"6s\"\npriority = \"high\"\nwork_order = \"corrective\"\ntitle = \"{{asset}} vibration\"\n\n\
             [[rules]]\nid = \"trapped\"\ntype = \"state\"\npoint = \"trapped_alarm\"\nequals = true\npriority = \"urgent\"\nwork_order = \"corrective\"\ntitle = \"trapped {{asset}}\"\n\n\
             [[notify]]\ntype = \"webhook\"\nid = \"cmms\"\nurl = {hook:?}\n",
            s.addrs()[0]
        ),
        &format!("127.0.0.1:{port}"),
    );
    let api = format!("http://127.0.0.1:{port}");
    let mut d = daemon(&cfg);
    assert!(
        d.wait_for_output("facilityd running", Duration::from_secs(10))
            .await,
        "{}",
        d.output()
    );
    // A work order opened before the crash.
    s.set_point(0, 2, "trapped_alarm", Value::Bool(true))
        .unwrap();
    wait_for(Duration::from_secs(5), async || {
        (receiver.bodies().len() == 1).then_some(())
    })
    .await
    .expect("no webhook before the crash");
    // A pending on-delay that the crash interrupts: vibration high from t0, `for` 6 s.
    let t0 = chrono::Utc::now();
    s.set_point(0, 1, "vibration_mm_s", Value::Float(6.0))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    d.kill9();
    let mut d = daemon(&cfg);
    assert!(
        d.wait_for_output("facilityd running", Duration::from_secs(10))
            .await,
        "{}",
        d.output()
    );
    let vib = wait_for(Duration::from_secs(10), async || {
        let list = reqwest011::get(format!("{api}/api/v1/work-orders?asset=PU-K"))
            .await
            .ok()?
            .json::<Json>()
            .await
            .ok()?;
        list.as_array()?.first().cloned()
    })
    .await
    .unwrap_or_else(|| panic!("the interrupted on-delay never fired\n{}", d.output()));
    let opened: chrono::DateTime<chrono::Utc> = vib["opened_at"].as_str().unwrap().parse().unwrap();
    let delay = (opened - t0).num_milliseconds();
    // Resumed: about 6 s after the condition began, not 6 s after the restart (~8.5 s+).
    assert!(
        (5_500..8_000).contains(&delay),
        "opened {delay} ms after the condition began"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let all: Json = get(&format!("{api}/api/v1/work-orders")).await;
    d.stop_cleanly(Duration::from_secs(5)).await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2, "{all:#?}");
    let trapped = all.iter().find(|w| w["rule"] == "trapped").unwrap();
    assert_eq!(
        trapped["occurrences"], 1,
        "the restart counted the still-active alarm again"
    );
    let keys: Vec<String> = receiver
        .bodies()
        .iter()
        .map(|b| b["idempotency_key"].as_str().unwrap().to_string())
        .collect();
    let mut uniq = keys.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), keys.len(), "duplicate deliveries: {keys:?}");
    assert_eq!(uniq.len(), 2, "one `opened` per work order: {keys:?}");
}

/// A third-party device (pymodbus) crossing a threshold opens exactly one work order with its evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_threshold_crossing_opens_one_work_order_with_evidence() {
    let server =
        PyModbusServer::start(&json!({ "units": { "5": { "input": { "0": 650, "1": 1 } } } }))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[profiles]]\nname = \"acme_drive\"\ndevice_type = \"elevator\"\npoints = [\n  {{ name = \"heatsink_temp_c\", kind = \"gauge\", register = \"input\", address = 0, type = \"i16\", scale = 0.1, unit = \"degC\" }},\n  {{ name = \"ready\", kind = \"state\", register = \"input\", address = 1, type = \"bool\", bit = 0 }},\n]\n\n\
             [[devices]]\nid = \"EL-TP\"\nprofile = \"acme_drive\"\ninterval = \"100ms\"\nmodbus = {{ url = \"{}\", unit = 5, timeout = \"300ms\" }}\n\n\
             [[rules]]\nid = \"heatsink-hot\"\ntype = \"threshold\"\npoint = \"heatsink_temp_c\"\nabove = 70.0\nclear = 65.0\nfor = \"500ms\"\npriority = \"normal\"\nwork_order = \"corrective\"\ntitle = \"{{asset}} heatsink {{value}} {{unit}} over {{threshold}}\"\n",
            server.url()
        ),
    );
    let gw = support::start_gateway(&cfg).await;
    let api = gw.api();
    tokio::time::sleep(Duration::from_millis(800)).await;
    for raw in [712u16, 735, 748] {
        server.set_registers(5, "input", 0, &[raw]).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let wo = newest_work_order(&api, Duration::from_secs(5))
        .await
        .expect("no work order");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = get(&format!("{api}/api/v1/work-orders")).await;
    gw.stop().await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    // `{value}` is the reading that completed the on-delay; the first one stays in the evidence.
    assert_eq!(wo["title"], "EL-TP heatsink 73.5 degC over 70");
    let ev = &list[0]["evidence"];
    assert_eq!(ev["point"], "heatsink_temp_c");
    assert_eq!(ev["unit"], "degC");
    assert_eq!(ev["first_value"], 71.2);
    // The readings that made it fire: from the crossing to the end of the on-delay.
    assert_eq!(ev["max"], 73.5);
    assert_eq!(ev["threshold"], "70");
    let readings: Vec<f64> = ev["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert!(
        readings.contains(&71.2) && readings.contains(&73.5),
        "{readings:?}"
    );
}

/// The work order of `rule` on `asset`, if any.
async fn work_order_of(api: &str, asset: &str, rule: &str) -> Option<Json> {
    get(&format!("{api}/api/v1/work-orders?asset={asset}"))
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["rule"] == rule)
        .cloned()
}

fn time(v: &Json) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .to_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_building_mains_loss_holds_its_devices_offline_work_orders_and_lists_them() {
    let s = sim((1..=4).map(|u| SimDeviceSpec::new(u, "pump")).collect()).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = s.addrs()[0];
    let device = |id: &str, building: &str, unit: u8| {
        format!(
            "[[devices]]\nid = \"{id}\"\nprofile = \"pump\"\nbuilding = \"{building}\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{addr}\", unit = {unit}, timeout = \"100ms\", probe_interval = \"300ms\" }}\n\n"
        )
    };
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}{}{}{}\
             [[rules]]\nid = \"power-mains-lost\"\ntype = \"state\"\nmatch = {{ ids = \"ATS-A\" }}\npoint = \"mains_fail\"\npriority = \"urgent\"\nwork_order = \"incident\"\ntitle = \"Mains lost in building {{building}}\"\n\n\
             [[rules]]\nid = \"offline\"\ntype = \"offline\"\nmatch = {{ ids = [\"PU-A1\", \"PU-A2\", \"PU-B1\"] }}\nafter = \"2s\"\nunless = {{ rule = \"power-mains-lost\", scope = \"building\" }}\ntitle = \"{{asset}} not answering\"\n",
            device("ATS-A", "A", 1),
            device("PU-A1", "A", 2),
            device("PU-A2", "A", 3),
            device("PU-B1", "B", 4),
        ),
    );
    for u in 1..=4 {
        s.set_point(0, u, "discharge_pressure_bar", Value::Float(3.0))
            .unwrap();
    }
    let gw = support::start_gateway(&cfg).await;
    let api = gw.api();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Mains lost in building A; its pumps and the one in building B go silent.
    s.set_point(0, 1, "mains_fail", Value::Bool(true)).unwrap();
    let mains = wait_for(Duration::from_secs(5), async || {
        work_order_of(&api, "ATS-A", "power-mains-lost").await
    })
    .await
    .expect("no mains work order");
    for u in 2..=4 {
        s.set_fault(0, u, Some(Fault::Silent)).unwrap();
    }
    wait_for(Duration::from_secs(8), async || {
        work_order_of(&api, "PU-B1", "offline").await
    })
    .await
    .expect("another building's device opens its own work order");
    let listed = wait_for(Duration::from_secs(5), async || {
        let w = get(&format!("{api}/api/v1/work-orders/{}", mains["id"])).await;
        let affected = w["evidence"]["affected"].as_array()?.clone();
        (affected.len() == 2).then_some(affected)
    })
    .await
    .expect("the mains work order lists the held devices");
    let mut names: Vec<&str> = listed
        .iter()
        .map(|a| a["asset"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["PU-A1", "PU-A2"]);
    assert!(listed.iter().all(|a| a["rule"] == "offline"));
    for a in ["PU-A1", "PU-A2"] {
        assert!(work_order_of(&api, a, "offline").await.is_none(), "{a}");
    }

    // Power back: PU-A2 answers again, PU-A1 does not.
    s.set_fault(0, 3, None).unwrap();
    s.set_point(0, 1, "mains_fail", Value::Bool(false)).unwrap();
    let cleared = wait_for(Duration::from_secs(5), async || {
        let w = get(&format!("{api}/api/v1/work-orders/{}", mains["id"])).await;
        (w["condition"] == "cleared").then_some(w)
    })
    .await
    .expect("the mains condition clears");
    let silent = wait_for(Duration::from_secs(8), async || {
        work_order_of(&api, "PU-A1", "offline").await
    })
    .await
    .expect("a device still silent after the release gets its work order");
    // Its `after` ran again from the release.
    let waited = time(&silent["opened_at"]) - time(&cleared["condition_cleared_at"]);
    assert!(
        waited >= chrono::Duration::milliseconds(1900),
        "opened {waited} after the release"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let back = work_order_of(&api, "PU-A2", "offline").await;
    let metrics = reqwest011::get(format!("{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    gw.stop().await;
    assert!(
        back.is_none(),
        "a device that came back gets none: {back:?}"
    );
    assert!(metrics.contains("facilityd_rule_unless_held_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_job_seen_done_resolves_its_work_order_with_the_run() {
    let s = sim(vec![SimDeviceSpec::new(1, "pump")]).await;
    let dir = tempfile::tempdir().unwrap();
    // Due in an hour, raised two hours early: the work order opens at start-up.
    let due = chrono::Utc::now() + chrono::Duration::hours(1);
    let start = (due - chrono::Duration::days(1)).to_rfc3339();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[devices]]\nid = \"FP-1\"\nprofile = \"pump\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1, timeout = \"100ms\" }}\n\n\
             [[rules]]\nid = \"fire-pump-run\"\ntype = \"calendar\"\nevery = \"1d\"\nstart = \"{start}\"\nlead = \"2h\"\n\
             done_when = {{ point = \"running\", equals = true, for = \"2s\", and = {{ point = \"discharge_pressure_bar\", above = 5.0 }} }}\n\
             priority = \"high\"\ntitle = \"Fire pump {{asset}}: run due {{threshold}}\"\n",
            s.addrs()[0]
        ),
    );
    s.set_point(0, 1, "discharge_pressure_bar", Value::Float(3.0))
        .unwrap();
    s.set_point(0, 1, "running", Value::Bool(false)).unwrap();
    let gw = support::start_gateway(&cfg).await;
    let api = gw.api();
    let wo = wait_for(Duration::from_secs(5), async || {
        work_order_of(&api, "FP-1", "fire-pump-run").await
    })
    .await
    .expect("the calendar work order opens");
    assert_eq!(wo["status"], "open");
    // Due on the calendar date, not after the priority's response time.
    let off = time(&wo["due_at"]) - due;
    assert!(
        off.num_milliseconds().abs() < 1000,
        "due_at {}",
        wo["due_at"]
    );
    let url = format!("{api}/api/v1/work-orders/{}", wo["id"]);

    // Running on pressure for a second only: not done.
    s.set_point(0, 1, "discharge_pressure_bar", Value::Float(6.0))
        .unwrap();
    s.set_point(0, 1, "running", Value::Bool(true)).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.set_point(0, 1, "running", Value::Bool(false)).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get(&url).await["status"], "open");

    // A full run resolves it, with the run as evidence.
    s.set_point(0, 1, "running", Value::Bool(true)).unwrap();
    let done = wait_for(Duration::from_secs(6), async || {
        let w = get(&url).await;
        (w["status"] == "resolved").then_some(w)
    })
    .await
    .expect("the run resolves the work order");
    gw.stop().await;
    assert_eq!(done["resolved_by"], "facilityd");
    let run = &done["evidence"]["done"];
    assert!(run["duration_s"].as_f64().unwrap() >= 2.0, "{run}");
    assert_eq!(run["and_point"], "discharge_pressure_bar");
    assert!(run["and_min"].as_f64().unwrap() > 5.0, "{run}");
    assert_eq!(
        run["condition"],
        "running = true for 2s and discharge_pressure_bar > 5"
    );
}
