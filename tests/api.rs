//! The HTTP API and the `work-orders` CLI against a running gateway: bad input gets 4xx JSON,
//! never a 500; tokens are enforced; the CLI shows and changes work orders.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use facilityd::gateway::Gateway;
use facilityd::model::Value;
use facilityd::sim::{SimDeviceSpec, SimPortSpec, SimSpec};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

async fn gateway(
    dir: &std::path::Path,
    http: &str,
    body: &str,
) -> (
    Gateway,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let path = dir.join("facilityd.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nid = \"gw\"\nstate_dir = {:?}\n\n[http]\n{http}\n\n{body}",
            dir.join("state").display().to_string()
        ),
    )
    .unwrap();
    let settings = facilityd::settings::load_with_env(&path, Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let gw = Gateway::new(settings);
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (gw, stop) = (gw.clone(), stop.clone());
        async move { gw.run(stop, Default::default()).await }
    });
    let t0 = Instant::now();
    while !gw.ready.load(Ordering::SeqCst) {
        if task.is_finished() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (gw, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_json_and_tokens_are_enforced() {
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            devices: vec![SimDeviceSpec::new(1, "elevator")],
        }],
        frozen: true,
        ..Default::default()
    })
    .await
    .unwrap();
    sim.set_point(0, 1, "trapped_alarm", Value::Bool(true))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok-123\n").unwrap();
    let http = format!(
        "listen = \"127.0.0.1:0\"\napi_token_file = {:?}",
        dir.path().join("token").display().to_string()
    );
    let body = format!(
        "[[devices]]\nid = \"EL-1\"\nprofile = \"elevator\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1, timeout = \"50ms\" }}\n\n[[rules]]\nid = \"trapped\"\ntype = \"state\"\npoint = \"trapped_alarm\"\nequals = true\npriority = \"urgent\"\nwork_order = \"corrective\"\ntitle = \"trapped in {{asset}}\"\n",
        sim.addrs()[0]
    );
    let (gw, stop, task) = gateway(dir.path(), &http, &body).await;
    let api = format!("http://{}", gw.api_addr.get().unwrap());
    let c = reqwest011::Client::new();
    let t0 = Instant::now();
    while c
        .get(format!("{api}/api/v1/work-orders/1"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(t0.elapsed() < Duration::from_secs(5), "no work order");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cases: Vec<(reqwest011::RequestBuilder, u16)> = vec![
        (c.get(format!("{api}/nope")), 404),
        (c.get(format!("{api}/api/v1/work-orders/abc")), 400),
        (c.get(format!("{api}/api/v1/work-orders/-4")), 400),
        (
            c.get(format!("{api}/api/v1/work-orders/99999999999999999999999")),
            400,
        ),
        (c.get(format!("{api}/api/v1/work-orders/42")), 404),
        (c.get(format!("{api}/api/v1/work-orders?status=bogus")), 400),
        (c.get(format!("{api}/api/v1/work-orders?priority=p1")), 400),
        (c.get(format!("{api}/api/v1/work-orders?limit=-1")), 400),
        (c.get(format!("{api}/api/v1/work-orders?color=red")), 400),
        (c.get(format!("{api}/api/v1/outbox?state=limbo")), 400),
        (c.get(format!("{api}/api/v1/assets/NOPE/points")), 404),
        (c.post(format!("{api}/api/v1/work-orders/1/ack")), 401),
        (
            c.post(format!("{api}/api/v1/work-orders/1/ack"))
                .bearer_auth("wrong"),
            401,
        ),
        (
            c.post(format!("{api}/api/v1/work-orders/1/ack"))
                .bearer_auth("tok-123")
                .body("{not json"),
            400,
        ),
        (
            c.post(format!("{api}/api/v1/work-orders/1/ack"))
                .bearer_auth("tok-123")
                .body("{\"by\": 7}"),
            400,
        ),
        (
            c.post(format!("{api}/api/v1/work-orders/1/ack"))
                .bearer_auth("tok-123")
                .body("{\"who\": \"x\"}"),
            400,
        ),
        (
            c.post(format!("{api}/api/v1/work-orders/1/close"))
                .bearer_auth("tok-123"),
            422,
        ),
        (
            c.post(format!("{api}/api/v1/work-orders/1/ack"))
                .bearer_auth("tok-123")
                .body("{\"by\": \"ana\"}"),
            200,
        ),
        (
            c.post(format!("{api}/api/v1/work-orders/1/ack"))
                .bearer_auth("tok-123"),
            409,
        ),
        (
            c.post(format!("{api}/api/v1/outbox/5/retry"))
                .bearer_auth("tok-123"),
            404,
        ),
        (c.get(format!("{api}/healthz")), 200),
        (c.get(format!("{api}/readyz")), 200),
    ];
    for (req, want) in cases {
        let req = req.build().unwrap();
        let what = format!("{} {}", req.method(), req.url());
        let resp = c.execute(req).await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, want, "{what}: {text}");
        let json: Json =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        if want >= 400 {
            assert!(
                json["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{what}: {text}"
            );
        }
    }
    let metrics = c
        .get(format!("{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("facilityd_work_orders_open{priority=\"urgent\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("facilityd_modbus_polls_total{asset=\"EL-1\"}"));
    assert!(metrics.contains("facilityd_poll_duration_seconds_bucket{asset=\"EL-1\",le=\"+Inf\"}"));

    // The CLI: a table for people, JSON for scripts, changes with the token from the config.
    let cfg = dir.path().join("cli.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw\"\n[http]\nlisten = {:?}\napi_token_file = {:?}\n",
            gw.api_addr.get().unwrap().to_string(),
            dir.path().join("token").display().to_string()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_facilityd"))
            .arg("work-orders")
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = cli(&["list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("trapped in EL-1") && out.contains("acknowledged") && out.contains("urgent"),
        "{out}"
    );
    let (code, out, _) = cli(&["--json", "list", "--status", "acknowledged"]);
    assert_eq!(code, Some(0));
    let list: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["acknowledged_by"], "ana");
    let (code, _, err) = cli(&["close", "1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("needs a note"), "{err}");
    let (code, out, err) = cli(&["close", "1", "--note", "duplicate of a call-centre ticket"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("closed"), "{out}");

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_means_403_and_a_public_address_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, stop, task) = gateway(dir.path(), "listen = \"127.0.0.1:0\"", "").await;
    let api = format!("http://{}", gw.api_addr.get().unwrap());
    let r = reqwest011::Client::new()
        .post(format!("{api}/api/v1/work-orders/1/resolve"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // A handover record too: 403, and nothing recorded.
    let r = reqwest011::Client::new()
        .post(format!("{api}/api/v1/handovers"))
        .bearer_auth("anything")
        .json(&serde_json::json!({"building": "A", "by": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let list: serde_json::Value = reqwest011::get(format!("{api}/api/v1/handovers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, serde_json::json!([]));
    stop.cancel();
    task.await.unwrap().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (_gw, _stop, task) = gateway(dir.path(), "listen = \"0.0.0.0:0\"", "").await;
    let err = task
        .await
        .unwrap()
        .expect_err("started on a public address without a token");
    assert!(err.to_string().contains("api_token_file"), "{err}");
}

/// The history API answers from the local telemetry log (here with no database at all): one
/// point or all, in a time range, oldest first, with a limit; bad input gets 4xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_comes_from_the_local_log() {
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            devices: vec![SimDeviceSpec::new(1, "pump")],
        }],
        frozen: true,
        ..Default::default()
    })
    .await
    .unwrap();
    sim.set_point(0, 1, "discharge_pressure_bar", Value::Float(4.25))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[storage]\nfsync_interval = \"10ms\"\n\n[[devices]]\nid = \"PU-1\"\nprofile = \"pump\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1, timeout = \"200ms\" }}\n",
        sim.addrs()[0]
    );
    let (gw, stop, task) = gateway(dir.path(), "listen = \"127.0.0.1:0\"", &body).await;
    let api = format!("http://{}", gw.api_addr.get().unwrap());
    let get = |path: String| {
        let api = api.clone();
        async move {
            let r = reqwest011::get(format!("{api}{path}")).await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Json>().await.unwrap())
        }
    };
    // A batch is cut every second (flush_interval): wait for a few.
    let t0 = Instant::now();
    let samples = loop {
        let (status, j) =
            get("/api/v1/assets/PU-1/history?point=discharge_pressure_bar&from=5m".into()).await;
        assert_eq!(status, 200, "{j}");
        let s = j["samples"].as_array().cloned().unwrap_or_default();
        if s.len() >= 10 {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "history stayed short: {j}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut last = String::new();
    for s in &samples {
        assert_eq!(s["point"], "discharge_pressure_bar");
        assert_eq!(s["value"], 4.25);
        let t = s["time"].as_str().unwrap().to_string();
        assert!(t > last, "not oldest first: {last} then {t}");
        last = t;
    }
    // All points of one poll time; a limit; the status line's fields.
    let (_, all) = get(format!(
        "/api/v1/assets/PU-1/history?from={}&to={}",
        samples[0]["time"].as_str().unwrap(),
        samples[0]["time"].as_str().unwrap()
    ))
    .await;
    let names: Vec<&str> = all["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["point"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"discharge_pressure_bar") && names.contains(&"running"),
        "{names:?}"
    );
    let (_, few) = get("/api/v1/assets/PU-1/history?point=online&from=5m&limit=2".into()).await;
    assert_eq!(few["samples"].as_array().unwrap().len(), 2, "{few}");
    assert_eq!(few["truncated"], true);
    // Bad input.
    let (status, j) = get("/api/v1/assets/NOPE/history".into()).await;
    assert_eq!(status, 404, "{j}");
    let (status, j) = get("/api/v1/assets/PU-1/history?point=nope".into()).await;
    assert_eq!(status, 404, "{j}");
    let (status, j) = get("/api/v1/assets/PU-1/history?from=yesterday".into()).await;
    assert_eq!(status, 400, "{j}");
    assert!(j["error"].as_str().unwrap().contains("RFC 3339"), "{j}");
    let (status, _) = get("/api/v1/assets/PU-1/history?from=1m&to=2h".into()).await;
    assert_eq!(status, 400, "from after to");
    let (status, j) = get("/api/v1/assets/PU-1/history?from=200000000y".into()).await;
    assert_eq!(status, 400, "a time out of range is bad input: {j}");
    stop.cancel();
    task.await.unwrap().unwrap();
}
