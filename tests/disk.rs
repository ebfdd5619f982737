//! A disk that refuses the telemetry log's writes: the real daemon under a file-size limit
//! (`prlimit --fsize`, the kernel answers EFBIG as it would ENOSPC on a full disk). The fault is
//! reported (metrics, a work order on the gateway itself) and polling goes on; once the limit is
//! lifted (`prlimit --pid`), the batches held meanwhile are written, the fault clears, and every
//! poll reaches the database.

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
    let vm = support::VictoriaMetrics::start_with_args(&["-dedup.minScrapeInterval=1ms"]).await;
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut cfg = format!(
        "[gateway]\nid = \"gw-disk\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[storage]\nfsync_interval = \"50ms\"\n\n[influxdb]\nurl = \"{}\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\nflush_interval = \"200ms\"\n\n",
        dir.path().join("state").display().to_string(),
        vm.url()
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
            "--fsize=1048576:unlimited",
            "--",
            env!("CARGO_BIN_EXE_facilityd"),
            "run",
            "-c",
            &cfg,
        ],
        &[("RUST_LOG", "info")],
    );
    let api = format!("http://127.0.0.1:{port}");
    let started_ms = chrono::Utc::now().timestamp_millis();

    let failing = eventually(Duration::from_secs(60), async || {
        metric(&api, "facilityd_log_disk_failing").await == Some(1.0)
    })
    .await;
    assert!(failing, "the disk fault was not reported:\n{}", gw.output());
    let failing_ms = chrono::Utc::now().timestamp_millis();
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

    // The disk comes back: the limit is lifted on the running daemon.
    let pid = gw.pid().expect("daemon pid").to_string();
    let lifted = std::process::Command::new(prlimit)
        .args(["--pid", &pid, "--fsize=unlimited:unlimited"])
        .status()
        .unwrap();
    assert!(lifted.success(), "prlimit --pid failed");
    let lifted_ms = chrono::Utc::now().timestamp_millis();
    let cleared = eventually(Duration::from_secs(30), async || {
        metric(&api, "facilityd_log_disk_failing").await == Some(0.0)
            && metric(&api, "facilityd_log_backlog_lines").await == Some(0.0)
    })
    .await;
    assert!(cleared, "the log did not recover:\n{}", gw.output());
    let resolved = eventually(Duration::from_secs(20), async || {
        let Ok(r) = reqwest011::get(format!("{api}/api/v1/work-orders?asset=gw-disk")).await else {
            return false;
        };
        let list: Json = r.json().await.unwrap_or_default();
        list.as_array().is_some_and(|l| {
            l.iter()
                .any(|w| w["rule"] == "gateway_log_disk" && w["status"] == "resolved")
        })
    })
    .await;
    assert!(resolved, "the gateway_log_disk work order did not resolve");
    let lost = |reason: &'static str| {
        let api = api.clone();
        async move {
            metric(
                &api,
                &format!("facilityd_log_dropped_lines_total{{reason=\"{reason}\"}}"),
            )
            .await
        }
    };
    assert_eq!(
        lost("corrupt").await,
        Some(0.0),
        "records unreadable after the fault"
    );
    assert_eq!(
        lost("disk").await,
        Some(0.0),
        "batches dropped while held in memory"
    );
    let ended_ms = lifted_ms + 1_500;
    // Every poll of the whole run, through the fault, is in the database: no gap.
    let series = vm
        .wait_for_series(
            r#"{__name__="device_status_online",asset="PU-01"}"#,
            |s| {
                s.first()
                    .and_then(|s| s.points().last().map(|p| p.0))
                    .is_some_and(|t| t >= ended_ms)
            },
            Duration::from_secs(30),
        )
        .await;
    let ts: Vec<i64> = series
        .first()
        .map(|s| s.points().iter().map(|p| p.0).collect())
        .unwrap_or_default();
    let window: Vec<i64> = ts
        .iter()
        .copied()
        .filter(|t| *t >= started_ms + 2_000 && *t <= ended_ms)
        .collect();
    // The window spans the fault, from before it was reported to after it was lifted.
    assert!(
        window.first().is_some_and(|t| *t < failing_ms - 500)
            && window.last().is_some_and(|t| *t > lifted_ms + 500),
        "samples do not span the fault ({failing_ms}..{lifted_ms}): {:?}..{:?}",
        window.first(),
        window.last()
    );
    let widest = window.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(
        widest <= 1_000,
        "a gap of {widest} ms in PU-01's polls across the disk fault"
    );

    gw.stop_cleanly(Duration::from_secs(15)).await;
}
