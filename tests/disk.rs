//! A disk that refuses the telemetry log's writes: the real daemon under a file-size limit
//! (`prlimit --fsize`, the kernel answers EFBIG as it would ENOSPC on a full disk). The fault is
//! reported (metrics, a work order on the gateway itself) and polling goes on; once the limit is
//! lifted (`prlimit --pid`), the batches held meanwhile are written, the fault clears, and every
//! poll reaches the database.

mod support;

use std::time::{Duration, Instant};

use facilityd::model::Value;
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

/// Stops the thread named `name` of process `pid` for `hold`, as a disk hung in a write or an
/// fsync holds the thread that issued it, while the rest of the process runs on. ptrace
/// (PTRACE_SEIZE, then PTRACE_INTERRUPT) stops one thread, where SIGSTOP would stop them all;
/// every request must come from the tracing thread, so this runs on a thread of its own and
/// returns once the thread is stopped.
fn stall_thread(pid: u32, name: &str, hold: Duration) -> std::thread::JoinHandle<()> {
    let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the daemon's threads")
        .filter_map(|e| e.ok())
        .find(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .and_then(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .unwrap_or_else(|| panic!("no thread named {name} in process {pid}"));
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
    let tracer = std::thread::spawn(move || {
        // SAFETY: plain ptrace/waitpid system calls on a thread id read from /proc; no memory
        // is shared with the tracee.
        unsafe {
            assert_eq!(
                libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0),
                0,
                "PTRACE_SEIZE of thread {tid}: {} (the tests run as root, or with ptrace allowed)",
                std::io::Error::last_os_error()
            );
            assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
            let mut status = 0;
            assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
            stopped_tx.send(()).unwrap();
            std::thread::sleep(hold);
            libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0);
        }
    });
    stopped_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the thread did not stop");
    tracer
}

/// The rules are fed beside the telemetry log, not behind it: with the log's writer thread
/// held for 10 s (its queue fills and the batcher waits), a threshold crossing still opens its
/// work order within the rule's delay plus one poll, and the log catches up afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_writer_does_not_delay_a_work_order() {
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            devices: (1..=10).map(|u| SimDeviceSpec::new(u, "pump")).collect(),
        }],
        frozen: true,
        ..Default::default()
    })
    .await
    .unwrap();
    sim.set_point(0, 1, "discharge_pressure_bar", Value::Float(3.5))
        .unwrap();
    let vm = support::VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    // Batches every 20 ms: the writer's queue fills within a second of the stall.
    let mut cfg = format!(
        "[gateway]\nid = \"gw-stall\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[influxdb]\nurl = \"{}\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\nflush_interval = \"20ms\"\n\n\
         [[rules]]\nid = \"low-pressure\"\ntype = \"threshold\"\nmatch = {{ device_type = \"pump\" }}\npoint = \"discharge_pressure_bar\"\nbelow = 2.0\nclear = 2.3\nfor = \"1s\"\npriority = \"high\"\nwork_order = \"corrective\"\n\n",
        dir.path().join("state").display().to_string(),
        vm.url()
    );
    for u in 1..=10 {
        cfg.push_str(&format!(
            "[[devices]]\nid = \"PU-{u:02}\"\nprofile = \"pump\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{}\", unit = {u}, timeout = \"500ms\" }}\n\n",
            sim.addrs()[0]
        ));
    }
    let path = dir.path().join("facilityd.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut gw = support::Daemon::start(
        env!("CARGO_BIN_EXE_facilityd"),
        &["run", "-c", &path.display().to_string()],
        &[("RUST_LOG", "info")],
    );
    let api = format!("http://127.0.0.1:{port}");
    let ready = eventually(Duration::from_secs(20), async || {
        metric(&api, "facilityd_log_bytes").await.unwrap_or(0.0) > 0.0
    })
    .await;
    assert!(ready, "the gateway did not start logging:\n{}", gw.output());

    let pid = gw.pid().expect("the daemon's pid");
    let tracer = stall_thread(pid, "telemetry-log", Duration::from_secs(10));
    let stalled_at = Instant::now();
    // Let the writer's queue fill, so that whatever waits on the log waits now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log_bytes = metric(&api, "facilityd_log_bytes").await;

    let crossed = Instant::now();
    sim.set_point(0, 1, "discharge_pressure_bar", Value::Float(1.2))
        .unwrap();
    let opened = eventually(Duration::from_secs(8), async || {
        let Ok(r) = reqwest011::get(format!("{api}/api/v1/work-orders?asset=PU-01")).await else {
            return false;
        };
        let list: Json = r.json().await.unwrap_or_default();
        list.as_array()
            .is_some_and(|l| l.iter().any(|w| w["rule"] == "low-pressure"))
    })
    .await;
    let took = crossed.elapsed();
    assert!(opened, "no work order during the stall:\n{}", gw.output());
    // `for` (1 s), one poll (100 ms) and slack; a rule fed
    // behind the log would wait for the stall's end (9 s more).
    assert!(took < Duration::from_secs(3), "work order after {took:?}");
    // The writer was held all along: the log did not grow.
    assert!(stalled_at.elapsed() < Duration::from_secs(9));
    assert_eq!(
        metric(&api, "facilityd_log_bytes").await,
        log_bytes,
        "the log writer was not stalled"
    );

    tracer.join().unwrap();
    let grew = eventually(Duration::from_secs(20), async || {
        metric(&api, "facilityd_log_bytes").await > log_bytes
    })
    .await;
    assert!(
        grew,
        "the log did not catch up after the stall:\n{}",
        gw.output()
    );
    gw.stop_cleanly(Duration::from_secs(15)).await;
}
