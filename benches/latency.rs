//! End-to-end latency of a work order: from the poll whose answer crosses a threshold (the
//! reading's timestamp) to the webhook delivered to a real HTTP receiver, through the rule
//! engine, the SQLite commit with its outbox entry and the notifier. Rules without delays, so
//! the figure is what the gateway adds beyond a rule's own `for`.
//!
//!     cargo bench --bench latency                 # 20 lifts, 60 s
//!     cargo bench --bench latency -- --devices 50 --seconds 30

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use facilityd::gateway::Gateway;
use facilityd::model::Value;
use facilityd::sim::{SimDeviceSpec, SimPortSpec, SimSpec};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

/// (receipt time, body) of every webhook request.
type Received = Arc<Mutex<Vec<(DateTime<Utc>, Json)>>>;

fn arg(name: &str, default: u64) -> u64 {
    let v: Vec<String> = std::env::args().collect();
    v.iter()
        .position(|a| a == name)
        .and_then(|i| v.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "latency benchmark: run it with `cargo bench --bench latency` (skipped under cargo test)"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(arg("--devices", 20) as usize, arg("--seconds", 60)));
}

async fn run(devices: usize, seconds: u64) {
    // The receiver: records (receipt time, body).
    let got: Received = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let g = g.clone();
            async move {
                let now = Utc::now();
                if let Ok(j) = serde_json::from_str::<Json>(&body) {
                    g.lock().unwrap().push((now, j));
                }
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });

    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: "127.0.0.1:0".parse().expect("addr"),
            devices: (1..=devices as u8)
                .map(|u| SimDeviceSpec::new(u, "elevator"))
                .collect(),
        }],
        frozen: true,
        ..Default::default()
    })
    .await
    .expect("simulators");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[[rules]]\nid = \"trapped\"\ntype = \"state\"\npoint = \"trapped_alarm\"\nequals = true\nauto_resolve = true\npriority = \"urgent\"\nwork_order = \"corrective\"\ntitle = \"trapped {{asset}}\"\n\n[[notify]]\ntype = \"webhook\"\nid = \"cmms\"\nurl = {hook:?}\nevents = [\"opened\"]\n\n",
        dir.path().join("state").display().to_string()
    );
    for u in 1..=devices {
        cfg += &format!(
            "[[devices]]\nid = \"EL-{u:03}\"\nprofile = \"elevator\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{}\", unit = {u}, timeout = \"80ms\" }}\n\n",
            sim.addrs()[0]
        );
    }
    let path = dir.path().join("facilityd.toml");
    std::fs::write(&path, cfg).expect("config");
    let settings = facilityd::settings::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let gw = Gateway::new(settings);
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (gw, stop) = (gw.clone(), stop.clone());
        async move { gw.run(stop, Default::default()).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Each lift's alarm goes on for 0.5 s every 1.3 s, phases spread.
    let t0 = tokio::time::Instant::now();
    let mut step = 0u64;
    while t0.elapsed() < Duration::from_secs(seconds) {
        for u in 1..=devices as u8 {
            let phase = (step + u64::from(u) * 3) % 13;
            sim.set_point(0, u, "trapped_alarm", Value::Bool(phase < 5))
                .expect("set");
        }
        step += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for u in 1..=devices as u8 {
        sim.set_point(0, u, "trapped_alarm", Value::Bool(false))
            .expect("set");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let _ = task.await;

    let mut lat_ms: Vec<f64> = got
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(recv, b)| {
            let at: DateTime<Utc> =
                b["work_order"]["evidence"]["readings"].as_array()?.last()?["at"]
                    .as_str()?
                    .parse()
                    .ok()?;
            Some((*recv - at).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    lat_ms.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat_ms
            .get(
                ((lat_ms.len() as f64 * p).ceil() as usize)
                    .saturating_sub(1)
                    .min(lat_ms.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "latency benchmark: {devices} lifts polled every 100 ms, alarm toggled for {seconds} s, rule without delay, webhook on `opened`"
    );
    println!("  work orders delivered: {}", lat_ms.len());
    println!(
        "  poll answer -> webhook received: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat_ms.last().copied().unwrap_or(f64::NAN)
    );
}
