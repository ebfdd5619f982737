//! `facilityd dead-letters list|resend` against a real InfluxDB 1.x, while the daemon runs:
//! lines the database refuses because of a field-type conflict stay dead letters, with the new
//! reason, and the valid ones land; once the cause is fixed, everything lands and no dead-letter
//! file is left.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use facilityd::gateway::Gateway;
use facilityd::telemetry::dead_letter::read_entries;
use serde_json::Value;
use support::influxdb::InfluxDb1;
use tokio_util::sync::CancellationToken;

const DB: &str = "facility";
const T0: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn facilityd(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_facilityd"))
        .args(args)
        .output()
        .await
        .expect("run facilityd");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The dead-letter files left in `state`: everything but the two lock files.
fn dead_letter_files(state: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dead-letter") && !n.ends_with(".lock"))
        .collect();
    v.sort();
    v
}

async fn write(db: &InfluxDb1, body: &str) {
    let resp = reqwest011::Client::new()
        .post(format!("{}/write?db={DB}&precision=ns", db.url()))
        .body(body.to_string())
        .send()
        .await
        .expect("POST /write");
    assert_eq!(
        resp.status().as_u16(),
        204,
        "{}",
        resp.text().await.unwrap()
    );
}

/// `SELECT "field" FROM "measurement" WHERE asset = ...` as (asset, value) pairs, by time.
async fn values(db: &InfluxDb1, measurement: &str, field: &str) -> Vec<(String, Value)> {
    let ans = db
        .query(
            DB,
            &format!("SELECT \"{field}\", \"asset\" FROM \"{measurement}\""),
        )
        .await;
    InfluxDb1::rows(&ans)
        .into_iter()
        .map(|r| {
            (
                r["asset"].as_str().unwrap_or_default().to_string(),
                r[field].clone(),
            )
        })
        .collect()
}

fn line(measurement: &str, asset: &str, field: &str, value: &str, i: i64) -> String {
    format!(
        "{measurement},asset={asset} {field}={value} {}\n",
        T0 + i * 1_000_000_000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_lines_stay_until_the_cause_is_fixed_then_all_land() {
    let db = InfluxDb1::start().await;
    db.create_database(DB).await;
    // The database knows `pump.pressure` as a float: string values of it are refused (HTTP 400).
    write(&db, &line("pump", "P-0", "pressure", "6.1", 0)).await;

    let dir = tempfile::tempdir().unwrap();
    let state: PathBuf = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let config = dir.path().join("facilityd.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nid = \"gw\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[influxdb]\napi = \"v1\"\nurl = \"{}\"\ndatabase = \"{DB}\"\nbatch_size = 4\n",
            state.display().to_string(),
            db.url()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();

    // Dead letters as the daemon keeps them: an older rotation and the current file, valid
    // lines (refused once for a reason since fixed) among the conflicting ones.
    let old = "# 2026-01-01T00:00:10.000Z HTTP 503: the database was restarting\n";
    let refused = "# 2026-01-01T00:01:00.000Z HTTP 400: unable to parse\n";
    std::fs::write(
        state.join("dead-letter.lp.1"),
        format!(
            "{old}{}{}{}",
            line("pump", "P-1", "pressure", "6.5", 1),
            line("pump", "P-2", "pressure", "\"high\"", 2),
            line("lift", "L-1", "trips", "3i", 3),
        ),
    )
    .unwrap();
    std::fs::write(
        state.join("dead-letter.lp"),
        format!(
            "{refused}{}{}{}{}{}",
            line("lift", "L-2", "trips", "4i", 4),
            line("pump", "P-3", "pressure", "7.25", 5),
            line("pump", "P-4", "pressure", "\"low\"", 6),
            line("lift", "L-3", "trips", "5i", 7),
            line("pump", "P-5", "pressure", "5.5", 8),
        ),
    )
    .unwrap();
    let bytes_before: u64 = ["dead-letter.lp.1", "dead-letter.lp"]
        .iter()
        .map(|f| std::fs::metadata(state.join(f)).unwrap().len())
        .sum();

    // The daemon runs throughout, with the same state directory and database.
    let settings = facilityd::settings::load_with_env(&config, Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let gw = Gateway::new(settings);
    let stop = CancellationToken::new();
    let daemon = tokio::spawn({
        let (gw, stop) = (gw.clone(), stop.clone());
        async move { gw.run(stop, Default::default()).await }
    });
    let t0 = Instant::now();
    while !gw.ready.load(Ordering::SeqCst) {
        assert!(!daemon.is_finished(), "the daemon stopped");
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the daemon never got ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The files found at start-up are in the gauge.
    let metrics = facilityd::api::metrics::render(&gw.view(), "");
    assert!(
        metrics.contains(&format!(
            "\nfacilityd_telemetry_dead_letter_bytes {bytes_before}\n"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("\nfacilityd_telemetry_dead_letter_dropped_lines_total 0\n"));

    let list = facilityd(&["dead-letters", "list", "-c", cfg]).await;
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    let row = |out: &str, first: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{first} ")))
            .unwrap_or_else(|| panic!("no row {first}:\n{out}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row(&list.stdout, "dead-letter.lp.1")[2], "3");
    assert_eq!(row(&list.stdout, "dead-letter.lp")[2], "5");
    assert_eq!(row(&list.stdout, "total")[2], "8");
    assert!(list.stdout.contains("reasons: 2"), "{}", list.stdout);
    let r = row(&list.stdout, "5");
    assert_eq!(
        r[1..3],
        ["2026-01-01T00:01:00.000Z", "2026-01-01T00:01:00.000Z"]
    );
    assert_eq!(r[3..].join(" "), "HTTP 400: unable to parse");

    // --dry-run sends and moves nothing.
    let dry = facilityd(&["dead-letters", "resend", "--dry-run", "-c", cfg]).await;
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert!(
        dry.stdout
            .starts_with("would re-send 8 lines from 2 files in 2 batches of up to 4 lines"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        dead_letter_files(&state),
        ["dead-letter.lp", "dead-letter.lp.1"]
    );
    assert_eq!(values(&db, "lift", "trips").await, []);

    // First resend: the six valid lines land, the two strings are refused again.
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let first = facilityd(&["dead-letters", "resend", "-c", cfg]).await;
    assert_eq!(first.code, Some(0), "{}\n{}", first.stdout, first.stderr);
    assert!(
        first.stdout.contains("re-sent 6 lines from 2 files"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("refused again: 2 lines"),
        "{}",
        first.stdout
    );
    assert!(first.stdout.contains("left: 0 lines"), "{}", first.stdout);
    let pumps = values(&db, "pump", "pressure").await;
    let pump_values: Vec<(&str, f64)> = pumps
        .iter()
        .map(|(a, v)| (a.as_str(), v.as_f64().unwrap_or(f64::NAN)))
        .collect();
    assert_eq!(
        pump_values,
        [("P-0", 6.1), ("P-1", 6.5), ("P-3", 7.25), ("P-5", 5.5)]
    );
    let lifts = values(&db, "lift", "trips").await;
    assert_eq!(
        lifts,
        [
            ("L-1".to_string(), Value::from(3)),
            ("L-2".to_string(), Value::from(4)),
            ("L-3".to_string(), Value::from(5)),
        ]
    );
    assert_eq!(dead_letter_files(&state), ["dead-letter.lp"]);
    let kept = read_entries(&state.join("dead-letter.lp")).unwrap();
    let lines: Vec<&str> = kept
        .iter()
        .flat_map(|e| &e.lines)
        .map(String::as_str)
        .collect();
    assert_eq!(
        lines,
        [
            line("pump", "P-2", "pressure", "\"high\"", 2).trim_end(),
            line("pump", "P-4", "pressure", "\"low\"", 6).trim_end(),
        ]
    );
    for e in &kept {
        assert!(
            e.reason().starts_with("HTTP 400: ") && e.reason().contains("field type conflict"),
            "{e:?}"
        );
        // The new comment has the time of the resend, not the first refusal's.
        assert!(e.time().is_some_and(|t| t >= before), "{e:?}");
    }
    let list = facilityd(&["dead-letters", "list", "-c", cfg]).await;
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    assert_eq!(row(&list.stdout, "total")[2], "2");
    assert!(
        list.stdout.contains("field type conflict"),
        "{}",
        list.stdout
    );
    assert!(!list.stdout.contains("unable to parse"), "{}", list.stdout);

    // The cause fixed (the measurement dropped, so the field's type is free again): both land.
    db.query(DB, "DROP MEASUREMENT \"pump\"").await;
    let second = facilityd(&["dead-letters", "resend", "-c", cfg]).await;
    assert_eq!(second.code, Some(0), "{}\n{}", second.stdout, second.stderr);
    assert!(
        second.stdout.contains("re-sent 2 lines from 1 file to"),
        "{}",
        second.stdout
    );
    assert!(
        second.stdout.contains("refused again: 0 lines"),
        "{}",
        second.stdout
    );
    let pumps = values(&db, "pump", "pressure").await;
    assert_eq!(
        pumps,
        [
            ("P-2".to_string(), Value::from("high")),
            ("P-4".to_string(), Value::from("low")),
        ]
    );
    assert_eq!(dead_letter_files(&state), Vec::<String>::new());
    let list = facilityd(&["dead-letters", "list", "-c", cfg]).await;
    assert!(
        list.stdout.starts_with("no dead letters in "),
        "{}",
        list.stdout
    );

    stop.cancel();
    daemon.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_out_of_reach_stops_the_resend_and_keeps_every_line() {
    // A port nothing listens on: the first write fails.
    let port = support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let config = dir.path().join("facilityd.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nid = \"gw\"\nstate_dir = {:?}\n\n[influxdb]\napi = \"v1\"\nurl = \"http://127.0.0.1:{port}\"\ndatabase = \"{DB}\"\nbatch_size = 2\n",
            state.display().to_string()
        ),
    )
    .unwrap();
    let body = format!(
        "# 2026-01-01T00:01:00.000Z HTTP 400: unable to parse\n{}{}{}",
        line("pump", "P-1", "pressure", "6.5", 1),
        line("pump", "P-2", "pressure", "6.6", 2),
        line("pump", "P-3", "pressure", "6.7", 3),
    );
    std::fs::write(state.join("dead-letter.lp"), &body).unwrap();
    let run = facilityd(&["dead-letters", "resend", "-c", config.to_str().unwrap()]).await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("left: 3 lines"), "{}", run.stdout);
    assert!(
        run.stderr.contains("error: the resend stopped:"),
        "{}",
        run.stderr
    );
    // Put back as it was, comment included; nothing taken is left behind.
    assert_eq!(
        std::fs::read_to_string(state.join("dead-letter.lp")).unwrap(),
        body
    );
    assert_eq!(dead_letter_files(&state), ["dead-letter.lp"]);
}
