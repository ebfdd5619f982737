//! A disk that refuses the telemetry log's writes: the real daemon under a file-size limit
//! (`prlimit --fsize`, the kernel answers EFBIG as it would ENOSPC on a full disk). The fault is
//! reported (metrics, a work order on the gateway itself) and polling goes on.

mod support;

use std::time::{Duration, Instant};

use facilityd::sim::{SimDeviceSpec, SimPortSpec, SimSpec};
use serde_json::Value as Json;

async fn metric(api: &str, name: &str) -> Option<f64> {
    let text = reqwest011::get(format!("{api}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `f` every 200 ms until it is true or `timeout` passes.
async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_refusing_the_log_is_reported_and_polling_goes_on() {
    let prlimit = "/usr/bin/prlimit";
    assert!(
        std::path::Path::new(prlimit).exists(),
        "{prlimit} is missing: install util-linux (apt-get install util-linux)"
    );
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            devices: (1..=40).map(|u| SimDeviceSpec::new(u, "pump")).collect(),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut cfg = format!(
        "[gateway]\nid = \"gw-disk\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[storage]\nfsync_interval = \"50ms\"\n\n",
        dir.path().join("state").display().to_string()
    );
    for u in 1..=40 {
        cfg.push_str(&format!(
            "[[devices]]\nid = \"PU-{u:02}\"\nprofile = \"pump\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{}\", unit = {u}, timeout = \"500ms\" }}\n\n",
            sim.addrs()[0]
        ));
    }
    let path = dir.path().join("facilityd.toml");
    std::fs::write(&path, cfg).unwrap();
    let cfg = path.display().to_string();
    // Files of at most 1 MiB: the first log segment (64 MiB by default) hits the limit within
    // seconds; the work-order database stays far below it.
    let mut gw = support::Daemon::start(
        prlimit,
        &[
            "--fsize=1048576",
            "--",
            env!("CARGO_BIN_EXE_facilityd"),
            "run",
            "-c",
            &cfg,
        ],
        &[("RUST_LOG", "info")],
    );
    let api = format!("http://127.0.0.1:{port}");

    let failing = eventually(Duration::from_secs(60), async || {
        metric(&api, "facilityd_log_disk_failing").await == Some(1.0)
    })
    .await;
    assert!(failing, "the disk fault was not reported:\n{}", gw.output());
    assert!(gw.is_running(), "the daemon died:\n{}", gw.output());
    assert!(
        metric(&api, "facilityd_log_write_errors_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        gw.output()
            .contains("telemetry log: the disk refuses writes"),
        "{}",
        gw.output()
    );

    // A work order on the gateway's own asset.
    let opened = eventually(Duration::from_secs(20), async || {
        let Ok(r) = reqwest011::get(format!("{api}/api/v1/work-orders?asset=gw-disk")).await else {
            return false;
        };
        let list: Json = r.json().await.unwrap_or_default();
        list.as_array().is_some_and(|l| {
            l.iter()
                .any(|w| w["rule"] == "gateway_log_disk" && w["status"] == "open")
        })
    })
    .await;
    assert!(opened, "no gateway_log_disk work order:\n{}", gw.output());

    // Polling goes on: every device keeps being polled while the disk refuses.
    let polls = |asset: &'static str| {
        let api = api.clone();
        async move {
            metric(
                &api,
                &format!("facilityd_modbus_polls_total{{asset=\"{asset}\"}}"),
            )
            .await
            .unwrap_or(0.0)
        }
    };
    let (a0, b0) = (polls("PU-01").await, polls("PU-40").await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (a1, b1) = (polls("PU-01").await, polls("PU-40").await);
    assert!(
        a1 - a0 >= 15.0 && b1 - b0 >= 15.0,
        "polling slowed down: PU-01 {a0} -> {a1}, PU-40 {b0} -> {b1} in 3 s at 100 ms"
    );
    assert_eq!(metric(&api, "facilityd_log_disk_failing").await, Some(1.0));
    let health = reqwest011::get(format!("{api}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);

    gw.sigterm();
    let status = gw.wait_with_timeout(Duration::from_secs(15)).await;
    assert!(status.is_some(), "no clean stop:\n{}", gw.output());
}
