//! The owners' report end to end: the real daemon polling simulated equipment with faults
//! injected (`facilityd simulate --fault`), the work orders they open worked through the API
//! (acknowledged and resolved with the token), then `facilityd report` over the last minutes,
//! read from the daemon's database while it runs, and `GET /api/v1/reports/engineering` for the
//! same period: the two agree, and show what happened.

mod support;

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use support::{Daemon, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_facilityd");

async fn get(url: &str) -> reqwest011::Response {
    reqwest011::get(url).await.unwrap()
}

async fn post(api: &str, path: &str, body: Value) -> u16 {
    reqwest011::Client::new()
        .post(format!("{api}{path}"))
        .bearer_auth("report-token")
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_the_last_minutes_shows_the_faults_worked_through_the_api() {
    // Whole seconds: the period's start is printed to the second.
    let start = Utc::now() - chrono::Duration::seconds(2);
    let start = start.to_rfc3339_opts(SecondsFormat::Secs, true);
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
            "1",
            "--fire-panels",
            "0",
            "--doors",
            "0",
            "--fault",
            "EL-0001=trapped_alarm=true",
            "--fault",
            "PU-0001=fault=true",
        ],
        2,
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api-token"), "report-token").unwrap();
    let http_port = free_port();
    let mut cfg = format!(
        "[gateway]\nid = \"gw-e2e\"\nsite = \"harbour-view\"\nstate_dir = {:?}\ntimezone = \"Asia/Shanghai\"\n\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\napi_token_file = {:?}\n\n\
         [[rules]]\nid = \"trapped\"\ntype = \"state\"\nmatch = {{ device_type = \"elevator\" }}\npoint = \"trapped_alarm\"\nequals = true\npriority = \"urgent\"\nwork_order = \"corrective\"\ntitle = \"Passenger trapped in {{asset}}\"\n\n\
         [[rules]]\nid = \"pump-fault\"\ntype = \"state\"\nmatch = {{ device_type = \"pump\" }}\npoint = \"fault\"\nequals = true\npriority = \"high\"\nwork_order = \"corrective\"\ntitle = \"Pump {{asset}} fault\"\n\n",
        dir.path().join("state").display().to_string(),
        dir.path().join("api-token").display().to_string(),
    );
    for d in &devices {
        let building = if d.device_type == "elevator" {
            "Tower A"
        } else {
            "Tower B"
        };
        cfg.push_str(&format!(
            "[[devices]]\nid = {:?}\nprofile = {:?}\nbuilding = \"{building}\"\ninterval = \"300ms\"\nmodbus = {{ url = \"tcp://{}\", unit = {}, timeout = \"300ms\" }}\n\n",
            d.name, d.device_type, d.addr, d.unit
        ));
    }
    let cfg_path = dir.path().join("facilityd.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let cfg_arg = cfg_path.display().to_string();
    let mut daemon = Daemon::start(BIN, &["run", "-c", &cfg_arg], &[("RUST_LOG", "info")]);
    let api = format!("http://127.0.0.1:{http_port}");

    // Both faults open a work order.
    let t0 = Instant::now();
    let orders = loop {
        assert!(daemon.is_running(), "{}", daemon.output());
        if let Ok(r) = reqwest011::get(format!("{api}/api/v1/work-orders")).await
            && let Ok(list) = r.json::<Vec<Value>>().await
            && list.len() >= 2
        {
            break list;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no work orders: {}",
            daemon.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let id_of = |asset: &str| {
        orders
            .iter()
            .find(|w| w["asset"] == asset)
            .unwrap_or_else(|| panic!("no work order for {asset}: {orders:?}"))["id"]
            .as_i64()
            .unwrap()
    };
    let (lift, pump) = (id_of("EL-0001"), id_of("PU-0001"));

    // The lift's is acknowledged then resolved; the pump's resolved by a person at once.
    let by = json!({"by": "wang", "note": "on site"});
    assert_eq!(
        post(&api, &format!("/api/v1/work-orders/{lift}/ack"), by.clone()).await,
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        post(
            &api,
            &format!("/api/v1/work-orders/{lift}/resolve"),
            by.clone()
        )
        .await,
        200
    );
    assert_eq!(
        post(&api, &format!("/api/v1/work-orders/{pump}/resolve"), by).await,
        200
    );
    // Let the equipment be watched a little longer, then end the period now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);

    // The API first (it has the tracker write the last seconds), then the command: both read
    // the period up to `to`, so they agree.
    let url = format!("{api}/api/v1/reports/engineering?from={start}&to={to}");
    let r = get(&url).await;
    assert_eq!(r.status(), 200);
    let from_api: Value = r.json().await.unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "report", "-c", &cfg_arg, "--from", &start, "--to", &to, "--format", "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut from_cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    from_cli["period"]["generated_at"] = from_api["period"]["generated_at"].clone();
    assert_eq!(from_cli, from_api, "the command and the API disagree");

    // What happened is in it.
    let c = &from_api["corrective"];
    assert_eq!(c["total"]["opened"], 2);
    assert_eq!(c["total"]["resolved"], 2);
    assert_eq!(c["total"]["closed_in_period"], 2);
    assert_eq!(c["total"]["unresolved"], 0);
    let urgent = &c["by_priority"][0];
    assert_eq!(
        (
            &urgent["priority"],
            &urgent["opened"],
            &urgent["acknowledged"],
            &urgent["resolved"]
        ),
        (&json!("urgent"), &json!(1), &json!(1), &json!(1))
    );
    assert_eq!(urgent["response"]["on_time"], 1, "answered within 30 min");
    assert_eq!(urgent["response"]["on_time_pct"], 100.0);
    assert_eq!(urgent["repair"]["on_time"], 1);
    let high = &c["by_priority"][1];
    assert_eq!(
        (&high["opened"], &high["acknowledged"], &high["resolved"]),
        (&json!(1), &json!(0), &json!(1))
    );
    // Resolved by a person without an acknowledgement: that is the response.
    assert_eq!(high["response"]["measured"], 1);
    assert_eq!(high["response"]["on_time"], 1);
    let faults: Vec<&str> = from_api["top_faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["asset"].as_str().unwrap())
        .collect();
    assert_eq!(faults, ["EL-0001", "PU-0001"]);
    assert_eq!(from_api["oldest_unresolved"], json!([]));
    assert_eq!(from_api["period"]["timezone"], "Asia/Shanghai");
    assert_eq!(from_api["period"]["closed"], true);

    // The equipment was watched during the period (the availability tracker's spans): each
    // asset has monitored time, and the lift's trapped alarm is not counted as available.
    for a in from_api["availability"]["assets"].as_array().unwrap() {
        let monitored = a["available_s"].as_i64().unwrap()
            + a["unavailable_s"].as_i64().unwrap()
            + a["offline_s"].as_i64().unwrap();
        assert!(monitored > 0, "{} has no monitored time: {a}", a["key"]);
    }

    // The other forms, and mistakes.
    let r = get(&format!("{url}&format=html")).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(
        html.contains("data-figure=\"/corrective/total/opened\">2<"),
        "{html}"
    );
    let r = get(&format!("{url}&format=csv&building=Tower%20B")).await;
    assert_eq!(r.status(), 200);
    let csv = r.text().await.unwrap();
    assert!(
        csv.lines().any(|l| l.starts_with("asset,PU-0001,")),
        "{csv}"
    );
    assert!(!csv.contains("EL-0001"), "{csv}");
    let r = get(&format!("{url}&building=Tower%20C")).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("unknown building"),
        "{body}"
    );
    let r = get(&format!(
        "{api}/api/v1/reports/engineering?from=yesterday&to={to}"
    ))
    .await;
    assert_eq!(r.status(), 400);
    let r = get(&format!(
        "{api}/api/v1/reports/engineering?month=2026-11&shape=round"
    ))
    .await;
    assert_eq!(r.status(), 400, "an unknown parameter is refused");

    daemon.sigterm();
}
