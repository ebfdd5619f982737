//! The handover baseline (承接查验) end to end: the real daemon polling a frozen simulator
//! (nothing moves unless a `--fault` moves it), a record taken through the CLI, its hash
//! recomputed from the database file, its immutability through the API and in SQLite, its
//! printable HTML in headless chromium against the JSON, and `diff` after scripted changes:
//! exactly those changes and nothing else; last, a meter rule with `baseline = "handover"`
//! added by a reload counts from the record's counter.
//!
//! The script (simulator time): the pump PU-0001 runs dry from the start (a work order open at
//! the record); at CHANGE_AT its start counter jumps, its discharge pressure drops below any
//! value it had, and its fault bit rises (a second work order). PU-0002 is in building B, outside
//! the record.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Daemon, browser, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_facilityd");

/// When (after the simulator started) the scripted changes happen.
const CHANGE_AT_S: u64 = 25;
const STARTS_AFTER: f64 = 99_999.0;
const PRESSURE_AFTER: f64 = 0.5;

const RULES: &str = r#"
[[rules]]
id = "pump-dry-run"
type = "state"
match = { device_type = "pump" }
point = "dry_run"
equals = true
for = "1s"
priority = "high"
work_order = "corrective"
title = "Pump {asset} running dry"

[[rules]]
id = "pump-fault"
type = "state"
match = { device_type = "pump" }
point = "fault"
equals = true
for = "1s"
priority = "high"
work_order = "corrective"
title = "Pump {asset} fault"
"#;

struct Site {
    sim: Daemon,
    daemon: Daemon,
    api: String,
    token_file: String,
    db: std::path::PathBuf,
    dir: tempfile::TempDir,
    started: Instant,
}

impl Site {
    async fn start() -> Site {
        let listen = format!("127.0.0.1:{}", free_port());
        let started = Instant::now();
        let change = |f: &str| format!("PU-0001={f}@{CHANGE_AT_S}s");
        let faults = [
            "PU-0001=dry_run=true".to_string(),
            change(&format!("starts_total={STARTS_AFTER}")),
            change(&format!("discharge_pressure_bar={PRESSURE_AFTER}")),
            change("fault=true"),
        ];
        let mut args = vec![
            "simulate",
            "--listen",
            &listen,
            "--frozen",
            "--elevators",
            "1",
            "--pumps",
            "2",
            "--fire-panels",
            "1",
            "--doors",
            "0",
        ];
        for f in &faults {
            args.push("--fault");
            args.push(f);
        }
        let (sim, devices) = support::start_simulator(BIN, &args, 4).await;

        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let conf_d = dir.path().join("conf.d");
        std::fs::create_dir_all(&conf_d).unwrap();
        std::fs::write(conf_d.join("pumps.toml"), RULES).unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "handover-secret\n").unwrap();
        let state = dir.path().join("state");
        let mut cfg = format!(
            "[gateway]\nid = \"gw-handover\"\nsite = \"tower-a\"\ntimezone = \"Asia/Shanghai\"\nstate_dir = {:?}\n\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\napi_token_file = {:?}\n\n",
            state.display().to_string(),
            token_file.display().to_string(),
        );
        for d in &devices {
            let building = if d.name == "PU-0002" { "B" } else { "A" };
            cfg.push_str(&format!(
                "[[devices]]\nid = {:?}\nprofile = {:?}\nbuilding = {building:?}\nfloor = \"B1\"\ninterval = \"500ms\"\n\
                 modbus = {{ url = \"tcp://{}\", unit = {}, timeout = \"300ms\", probe_interval = \"1s\" }}\n\n",
                d.name, d.device_type, d.addr, d.unit
            ));
        }
        let cfg_path = dir.path().join("facilityd.toml");
        std::fs::write(&cfg_path, &cfg).unwrap();
        let daemon = Daemon::start(
            BIN,
            &["run", "-c", &cfg_path.display().to_string()],
            &[("RUST_LOG", "info")],
        );
        Site {
            sim,
            daemon,
            api: format!("http://127.0.0.1:{http_port}"),
            token_file: token_file.display().to_string(),
            db: state.join("workorders.sqlite"),
            dir,
            started,
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n--- daemon ---\n{}\n--- simulator ---\n{}",
            self.daemon.output(),
            self.sim.output()
        )
    }

    async fn get(&self, path: &str) -> (u16, String) {
        match reqwest011::get(format!("{}{path}", self.api)).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        if status != 200 {
            self.fail(&format!("GET {path}: {status} {body}"));
        }
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until `ok` holds of GET `path`.
    async fn wait(&self, path: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let (status, body) = self.get(path).await;
            if status == 200
                && let Ok(v) = serde_json::from_str::<Value>(&body)
                && ok(&v)
            {
                return v;
            }
            if t0.elapsed() > timeout {
                self.fail(&format!("GET {path} did not come right: {status} {body}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `facilityd handover ARGS` against the daemon: (success, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(BIN)
            .arg("handover")
            .args(args)
            .args(["--url", &self.api, "--token-file", &self.token_file])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let c = reqwest011::Client::new();
        let mut req = c.post(format!("{}{path}", self.api)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

fn n(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number: {v}"))
}

fn point<'a>(asset: &'a Value, name: &str) -> &'a Value {
    asset["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no point {name} in {asset}"))
}

/// The text a figure shows for a JSON value.
fn shown(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The page's figures equal the record's JSON, every one of them.
fn assert_figures_match(dom: &str, id: i64, sha: &str, rec: &Value) {
    let figs = browser::figures(dom);
    let one = |name: &str| -> String {
        let v = figs
            .get(name)
            .unwrap_or_else(|| panic!("the page has no figure {name:?}"));
        assert_eq!(v.len(), 1, "figure {name:?} shown more than once: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("id"), id.to_string());
    assert_eq!(one("sha256"), sha);
    assert_eq!(one("verified"), "true");
    for k in [
        "building",
        "recorded_at",
        "recorded_at_local",
        "gateway_id",
        "recorded_by",
        "note",
    ] {
        assert_eq!(Some(one(k)), shown(&rec[k]), "{k}");
    }
    let assets = rec["assets"].as_array().unwrap();
    assert_eq!(one("assets"), assets.len().to_string());
    let mut compared = 0;
    for a in assets {
        let id = a["id"].as_str().unwrap();
        assert_eq!(
            one(&format!("open_work_orders:{id}")),
            a["open_work_orders"].as_array().unwrap().len().to_string()
        );
        for p in a["points"].as_array().unwrap() {
            let pn = p["name"].as_str().unwrap();
            for (fig, key) in [("point", "value"), ("min", "min"), ("max", "max")] {
                let name = format!("{fig}:{id}:{pn}");
                match shown(&p[key]) {
                    Some(want) => {
                        assert_eq!(one(&name), want, "{name}");
                        compared += 1;
                    }
                    None => assert!(!figs.contains_key(&name), "{name} shown without a value"),
                }
            }
        }
        for c in a["counters"].as_array().unwrap() {
            let name = format!("counter:{id}:{}", c["name"].as_str().unwrap());
            assert_eq!(Some(one(&name)), shown(&c["value"]), "{name}");
        }
        for w in a["open_work_orders"].as_array().unwrap() {
            assert_eq!(one(&format!("work_order:{}", w["id"])), w["id"].to_string());
            assert_eq!(
                Some(one(&format!("work_order_title:{}", w["id"]))),
                shown(&w["title"])
            );
        }
    }
    assert!(compared > 40, "only {compared} point figures compared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_record_verifies_cannot_change_and_diffs_exactly_the_scripted_changes() {
    let mut site = Site::start().await;

    // The pump's dry-run work order is open, and every asset of building A has been read.
    site.wait(
        "/api/v1/work-orders?status=unresolved",
        Duration::from_secs(20),
        |v| {
            v.as_array().is_some_and(|l| {
                l.iter()
                    .any(|w| w["rule"] == "pump-dry-run" && w["asset"] == "PU-0001")
            })
        },
    )
    .await;
    site.wait("/api/v1/assets", Duration::from_secs(20), |v| {
        v.as_array()
            .is_some_and(|l| l.len() == 4 && l.iter().all(|a| a["online"] == true))
    })
    .await;

    // Refused: no token, a wrong one, an unknown building, a building left empty.
    let body = json!({"building": "A", "by": "Li Wei"});
    assert_eq!(
        site.post("/api/v1/handovers", None, body.clone()).await.0,
        401
    );
    assert_eq!(
        site.post("/api/v1/handovers", Some("wrong"), body.clone())
            .await
            .0,
        401
    );
    let (status, err) = site
        .post(
            "/api/v1/handovers",
            Some("handover-secret"),
            json!({"building": "Z", "by": "Li Wei"}),
        )
        .await;
    assert_eq!(status, 404, "{err}");
    let msg = err["error"].as_str().unwrap();
    assert!(msg.contains("\"Z\"") && msg.contains("A, B"), "{msg}");
    let (ok, _, stderr) = site.cli(&["record", "--building", "Z", "--by", "Li Wei"]);
    assert!(
        !ok && stderr.contains("no asset is configured in building \"Z\""),
        "{stderr}"
    );
    assert_eq!(
        site.get_json("/api/v1/handovers").await,
        json!([]),
        "nothing stored by refusals"
    );

    // Recorded through the CLI.
    let (ok, out, stderr) = site.cli(&[
        "record",
        "--building",
        "A",
        "--by",
        "Li Wei (Acme PM)",
        "--note",
        "Takeover from the builder",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let made: Value = serde_json::from_str(&out).unwrap();
    let id = made["id"].as_i64().unwrap();
    let sha = made["sha256"].as_str().unwrap().to_string();
    assert!(
        site.started.elapsed() < Duration::from_secs(CHANGE_AT_S - 3),
        "recorded too late for the script ({:?} after the simulator started)",
        site.started.elapsed()
    );

    // What it holds: building A's three assets, not PU-0002.
    let shown_json = site.get_json(&format!("/api/v1/handovers/{id}")).await;
    assert_eq!(shown_json["verified"], true);
    let rec = &shown_json["record"];
    assert_eq!(rec, &made["record"]);
    let ids: Vec<&str> = rec["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(
        ids.contains(&"PU-0001") && !ids.contains(&"PU-0002"),
        "{ids:?}"
    );
    assert_eq!(rec["recorded_by"], "Li Wei (Acme PM)");
    assert_eq!(rec["timezone"], "Asia/Shanghai");
    assert!(
        rec["recorded_at_local"]
            .as_str()
            .unwrap()
            .ends_with("+08:00")
    );
    let pump = rec["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "PU-0001")
        .unwrap();
    assert_eq!(pump["profile"], "pump");
    assert!(
        pump["link"]
            .as_str()
            .unwrap()
            .starts_with("tcp://127.0.0.1:")
    );
    assert_eq!(pump["online"], true);
    let counters: Vec<&str> = pump["counters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        counters,
        ["run_hours_total", "starts_total", "energy_kwh_total"]
    );
    let starts_before = n(&point(pump, "starts_total")["value"]);
    let pressure = point(pump, "discharge_pressure_bar");
    assert!(
        n(&pressure["samples"]) > 0.0,
        "the range comes from the log's history: {pressure}"
    );
    assert_eq!(
        pressure["min"], pressure["max"],
        "a frozen pump: {pressure}"
    );
    assert_eq!(pressure["unit"], "bar");
    let open: Vec<&Value> = pump["open_work_orders"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["rule"], "pump-dry-run");
    assert_eq!(open[0]["evidence"]["point"], "dry_run");

    // The hash verifies: SHA-256 of the canonical JSON as stored in the database file.
    let conn = rusqlite::Connection::open(&site.db).unwrap();
    let (text, stored_sha): (String, String) = conn
        .query_row(
            "SELECT record, sha256 FROM handovers WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(text.as_bytes())), sha);
    assert_eq!(stored_sha, sha);
    assert_eq!(&serde_json::from_str::<Value>(&text).unwrap(), rec);
    assert!(
        !text.contains(": ") && !text.contains('\n'),
        "canonical: no insignificant whitespace"
    );
    assert!(text.starts_with("{\"assets\":["), "canonical: keys sorted");

    // It cannot be altered: no route takes PUT, PATCH or DELETE, and SQLite refuses.
    let c = reqwest011::Client::new();
    for path in [
        format!("/api/v1/handovers/{id}"),
        "/api/v1/handovers".to_string(),
    ] {
        for m in [
            reqwest011::Method::PUT,
            reqwest011::Method::PATCH,
            reqwest011::Method::DELETE,
        ] {
            let r = c
                .request(m.clone(), format!("{}{path}", site.api))
                .bearer_auth("handover-secret")
                .json(&json!({"building": "A", "by": "x"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 405, "{m} {path}");
        }
    }
    for sql in [
        "UPDATE handovers SET record = '{}'",
        "DELETE FROM handovers",
    ] {
        let e = conn.execute(sql, []).unwrap_err();
        assert!(e.to_string().contains("immutable"), "{sql}: {e}");
    }
    let list = site.get_json("/api/v1/handovers").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["sha256"], sha.as_str());
    assert_eq!(list[0]["verified"], true);
    let (ok, table, _) = site.cli(&["list"]);
    assert!(
        ok && table.contains(&sha) && table.contains(" yes "),
        "{table}"
    );

    // Before the scripted changes the diff is empty.
    let before = site.get_json(&format!("/api/v1/handovers/{id}/diff")).await;
    assert!(
        site.started.elapsed() < Duration::from_secs(CHANGE_AT_S),
        "the script ran before the empty diff was taken"
    );
    for k in [
        "counters",
        "work_orders_opened",
        "work_orders_cleared",
        "alarms_changed",
        "out_of_range",
        "assets_added",
        "assets_gone",
    ] {
        assert_eq!(before[k], json!([]), "{k} before any change: {before}");
    }

    // The printable record and the CSV, through the CLI.
    let html_path = site.dir.path().join("handover.html");
    let (ok, _, stderr) = site.cli(&[
        "show",
        &id.to_string(),
        "--format",
        "html",
        "--out",
        html_path.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let html = std::fs::read_to_string(&html_path).unwrap();
    browser::assert_self_contained(&html);
    assert!(!html.contains("<script"), "no scripts in the record");
    assert!(
        html.contains("Taking over") && html.contains("Handing over") && html.contains("Witness")
    );
    let png = site.dir.path().join("handover.png");
    let page = browser::render(&html_path, &png, 1000, 1400);
    assert!(page.console_errors.is_empty(), "{:?}", page.console_errors);
    let ink = browser::ink_share(&png);
    assert!(ink > 0.02, "the page looks blank (ink {ink})");
    assert_figures_match(&page.dom, id, &sha, rec);
    if let Some(dir) = std::env::var_os("FACILITYD_WRITE_DOCS") {
        let dir = Path::new(&dir);
        std::fs::write(dir.join("sample-handover.html"), &html).unwrap();
        std::fs::copy(&png, dir.join("sample-handover.png")).unwrap();
    }
    let (ok, csv, stderr) = site.cli(&["show", &id.to_string(), "--format", "csv"]);
    assert!(ok, "{stderr}");
    let points: usize = rec["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["points"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        csv.lines().count(),
        1 + points,
        "a header and one row per asset point"
    );
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| l.starts_with(&format!("{id},A,")) && l.contains(&sha))
    );

    // After the scripted changes: exactly them.
    let diff_path = format!("/api/v1/handovers/{id}/diff");
    let d = site
        .wait(&diff_path, Duration::from_secs(CHANGE_AT_S + 20), |d| {
            !d["work_orders_opened"].as_array().unwrap().is_empty()
                && !d["counters"].as_array().unwrap().is_empty()
                && !d["out_of_range"].as_array().unwrap().is_empty()
                && !d["alarms_changed"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(
        d["counters"],
        json!([{"asset": "PU-0001", "point": "starts_total", "unit": null,
                "from": starts_before, "now": STARTS_AFTER, "delta": STARTS_AFTER - starts_before}]),
        "{d}"
    );
    let opened = d["work_orders_opened"].as_array().unwrap();
    assert_eq!(opened.len(), 1, "{d}");
    assert_eq!(
        (&opened[0]["asset"], &opened[0]["rule"]),
        (&json!("PU-0001"), &json!("pump-fault"))
    );
    assert_eq!(d["work_orders_cleared"], json!([]), "{d}");
    assert_eq!(
        d["alarms_changed"],
        json!([{"asset": "PU-0001", "point": "fault", "from": false, "now": true}]),
        "{d}"
    );
    assert_eq!(
        d["out_of_range"],
        json!([{"asset": "PU-0001", "point": "discharge_pressure_bar", "unit": "bar",
                "min": pressure["min"], "max": pressure["max"], "now": PRESSURE_AFTER}]),
        "{d}"
    );
    assert_eq!(d["assets_added"], json!([]));
    assert_eq!(d["assets_gone"], json!([]));
    assert_eq!(d["verified"], true);
    let (ok, text, stderr) = site.cli(&["diff", &id.to_string()]);
    assert!(ok, "{stderr}");
    assert!(
        text.contains("counter   PU-0001 starts_total") && text.contains("opened    PU-0001"),
        "{text}"
    );
    assert!(
        text.contains("range     PU-0001 discharge_pressure_bar: 0.5 outside"),
        "{text}"
    );

    // The record itself did not move.
    let again = site.get_json(&format!("/api/v1/handovers/{id}")).await;
    assert_eq!(&again["record"], rec);
    assert_eq!(again["sha256"], sha.as_str());

    // A meter rule added now (a reload) with `baseline = "handover"` counts PU-0001's starts
    // from the record: the jump since is exactly one interval, so it is due at once.
    let every = STARTS_AFTER - starts_before;
    std::fs::write(
        site.dir.path().join("conf.d/meter.toml"),
        format!(
            "[[rules]]\nid = \"pump-starts-service\"\ntype = \"meter\"\nmatch = {{ ids = \"PU-0001\" }}\n\
             point = \"starts_total\"\nevery = {every}\nlead = 0\nbaseline = \"handover\"\n\
             priority = \"normal\"\nwork_order = \"preventive\"\ntitle = \"Pump {{asset}} starts service\"\n"
        ),
    )
    .unwrap();
    site.daemon.sighup();
    let wos = site
        .wait(
            "/api/v1/work-orders?status=unresolved",
            Duration::from_secs(20),
            |v| {
                v.as_array()
                    .is_some_and(|l| l.iter().any(|w| w["rule"] == "pump-starts-service"))
            },
        )
        .await;
    let meter = wos
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["rule"] == "pump-starts-service")
        .unwrap();
    assert_eq!(
        meter["evidence"]["first_value"],
        json!(starts_before),
        "{meter}"
    );
    assert_eq!(
        meter["evidence"]["baseline"], "the handover record",
        "{meter}"
    );

    site.daemon.stop_cleanly(Duration::from_secs(15)).await;
    site.sim.sigterm();
}
