//! facilityd under systemd, without systemd: the sd_notify protocol spoken to a datagram socket
//! of our own (READY=1, WATCHDOG=1, RELOADING=1 on SIGHUP, STOPPING=1), the unit file's
//! credential wiring read back by the real config loader, and the unit's hardening scored by
//! `systemd-analyze security`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use facilityd::sim::{SimDeviceSpec, SimPortSpec, SimSpec};
use tokio::net::UnixDatagram;

const BIN: &str = env!("CARGO_BIN_EXE_facilityd");

fn unit_path() -> PathBuf {
    support::repo_root().join("systemd/facilityd.service")
}

/// The next notification datagram, or None after `timeout`.
async fn recv(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(timeout, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok(Err(e)) => panic!("recv on the notify socket: {e}"),
        Err(_) => None,
    }
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_notifies_ready_feeds_the_watchdog_and_notifies_stopping() {
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
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("facilityd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-systemd\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
             [[devices]]\nid = \"PU-1\"\nprofile = \"pump\"\ninterval = \"100ms\"\n\
             modbus = {{ url = \"tcp://{}\", unit = 1, timeout = \"80ms\" }}\n",
            dir.path().join("state").display().to_string(),
            sim.addrs()[0]
        ),
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let stderr_path = dir.path().join("stderr.log");

    let mut cmd = Command::new(BIN);
    cmd.args(["run", "-c", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "info");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FACILITYD_") {
            cmd.env_remove(&key);
        }
    }
    let mut child = cmd.spawn().expect("spawn facilityd");
    let log = || support::read_text(&stderr_path);

    // READY=1 first, once the gateway is up.
    let first = recv(&sock, Duration::from_secs(20)).await;
    let Some(first) = first else {
        let _ = child.kill();
        panic!("no notification within 20 s; stderr:\n{}", log());
    };
    assert!(
        has_line(&first, "READY=1"),
        "first notification is not READY=1: {first:?}"
    );
    assert!(
        first.lines().any(|l| l.starts_with("STATUS=running")),
        "READY=1 without a STATUS: {first:?}"
    );

    // WATCHDOG=1 every half WATCHDOG_USEC (500 ms), the pollers being alive.
    let mut pings = Vec::new();
    let started = Instant::now();
    while pings.len() < 4 && started.elapsed() < Duration::from_secs(5) {
        if let Some(msg) = recv(&sock, Duration::from_secs(2)).await {
            assert!(
                has_line(&msg, "WATCHDOG=1"),
                "expected only WATCHDOG=1 while running, got {msg:?}"
            );
            pings.push(Instant::now());
        }
    }
    assert!(
        pings.len() >= 4,
        "{} WATCHDOG=1 in 5 s with WATCHDOG_USEC=1000000; stderr:\n{}",
        pings.len(),
        log()
    );
    for w in pings.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(250) && gap < Duration::from_millis(1000),
            "WATCHDOG=1 {gap:?} apart, expected about 500 ms (and within WATCHDOG_USEC)"
        );
    }

    // SIGHUP (`systemctl reload`): RELOADING=1 with MONOTONIC_USEC, then READY=1 once applied.
    support::send_signal(&child, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reloading = false;
    let mut ready = None;
    while Instant::now() < deadline && ready.is_none() {
        match recv(&sock, Duration::from_millis(500)).await {
            Some(msg) if has_line(&msg, "RELOADING=1") => {
                assert!(
                    msg.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
                    "RELOADING=1 without MONOTONIC_USEC: {msg:?}"
                );
                reloading = true;
            }
            Some(msg) if has_line(&msg, "READY=1") => ready = Some(msg),
            Some(msg) => assert!(has_line(&msg, "WATCHDOG=1"), "unexpected {msg:?}"),
            None => {}
        }
    }
    assert!(reloading, "no RELOADING=1 after SIGHUP; stderr:\n{}", log());
    let ready = ready.unwrap_or_else(|| panic!("no READY=1 after the reload; stderr:\n{}", log()));
    assert!(
        ready.contains("STATUS=running: 1 devices (configuration reloaded)"),
        "{ready:?}"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    support::send_signal(&child, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stopping = false;
    while Instant::now() < deadline {
        match recv(&sock, Duration::from_millis(500)).await {
            Some(msg) if has_line(&msg, "STOPPING=1") => {
                stopping = true;
                break;
            }
            Some(msg) => assert!(has_line(&msg, "WATCHDOG=1"), "unexpected {msg:?}"),
            None => {}
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM; stderr:\n{}", log());
    let status = support::wait_child(&mut child, Duration::from_secs(10)).await;
    let Some(status) = status else {
        let _ = child.kill();
        panic!("facilityd did not exit after SIGTERM; stderr:\n{}", log());
    };
    assert!(status.success(), "exit status {status}; stderr:\n{}", log());
    // Nothing after STOPPING=1 (the watchdog is no longer fed).
    assert_eq!(recv(&sock, Duration::from_millis(300)).await, None);
}

/// `Environment=` lines of the unit as (name, value) pairs.
fn unit_environment(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("Environment=NAME=VALUE");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The unit hands the tokens over as credentials (`LoadCredential=`) and points the config at
/// them with FACILITYD_* variables under `%d` (the credentials directory): the real config
/// loader accepts those keys and reads the token from the credential file.
#[test]
fn the_units_credential_variables_are_config_keys_that_read_the_credentials() {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    let creds = tempfile::tempdir().unwrap();
    let loaded: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("LoadCredential="))
        .map(|v| v.split_once(':').expect("LoadCredential=ID:PATH").0)
        .collect();
    assert!(loaded.contains(&"influx-token") && loaded.contains(&"api-token"));
    for id in &loaded {
        std::fs::write(creds.path().join(id), format!("secret-{id}\n")).unwrap();
    }
    let env: Vec<(String, String)> = unit_environment(&unit)
        .into_iter()
        .map(|(k, v)| {
            let v = v.replace("%d", creds.path().to_str().unwrap());
            (k, v)
        })
        .collect();
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        names.contains(&"FACILITYD_INFLUXDB__TOKEN_FILE"),
        "{names:?}"
    );
    assert!(
        names.contains(&"FACILITYD_HTTP__API_TOKEN_FILE"),
        "{names:?}"
    );
    for (_, v) in &env {
        let id = Path::new(v).file_name().unwrap().to_str().unwrap();
        assert!(
            loaded.contains(&id),
            "{v} is not a LoadCredential= id ({loaded:?})"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("facilityd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw\"\nstate_dir = {:?}\n\n[influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\n",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let check = |env: &[(String, String)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["check", "-c", cfg.to_str().unwrap()]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FACILITYD_") {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = check(&env);
    assert!(ok, "check failed with the unit's variables:\n{out}");
    assert!(out.contains("token set"), "{out}");
    assert!(!out.contains("secret-"), "a secret was printed:\n{out}");
    // Without the variables the token is not set: it really came from the credential file.
    let (ok, out) = check(&[]);
    assert!(ok && out.contains("token not set"), "{out}");
    // A missing credential is an error naming the key.
    std::fs::remove_file(creds.path().join("influx-token")).unwrap();
    let (ok, out) = check(&env);
    assert!(!ok && out.contains("influxdb.token_file"), "{out}");
}

/// The exposure `systemd-analyze security --offline=yes` gives a unit file, e.g. 1.1.
fn exposure(unit: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e} (install the Debian package systemd, or run ./scripts/test.sh)")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in systemd-analyze's output:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let tail = line.rsplit_once(':').unwrap().1.trim();
    let mut words = tail.split_whitespace();
    let score: f64 = words.next().unwrap().parse().unwrap();
    let level = words.next().unwrap();
    assert!(
        matches!(level, "OK" | "SAFE" | "PERFECT"),
        "{}: exposure {score} {level}, expected OK or better",
        unit.display()
    );
    score
}

#[test]
fn the_unit_is_hardened_to_an_ok_exposure_level_with_and_without_serial_ports() {
    let score = exposure(&unit_path());
    assert!(
        score < 2.0,
        "exposure {score}, it was 1.1 when the unit was written"
    );

    // The serial drop-in the unit and the README describe, applied on top.
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("facilityd.service");
    let mut unit = std::fs::read_to_string(unit_path()).unwrap();
    unit.push_str(
        "\n[Service]\nPrivateDevices=no\nDeviceAllow=char-ttyUSB rw\nSupplementaryGroups=dialout\n",
    );
    std::fs::write(&serial, unit).unwrap();
    let score = exposure(&serial);
    assert!(
        score < 2.0,
        "exposure with serial ports {score}, it was 1.3"
    );
}
