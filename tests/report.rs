//! The owners' engineering report against a scripted month with known answers: work orders
//! opened, acknowledged, resolved and cancelled at chosen times in a real SQLite store (through
//! the store's own calls), availability spans with an outage and a gateway restart, a month in
//! Asia/Shanghai with a work order open across local midnight of the 1st. Then the same month
//! through the `facilityd report` command, and the HTML page in a real headless chromium.
//!
//! `docs/sample-report.html` is this month's page; `UPDATE_SAMPLES=1 cargo test --test report`
//! writes it (and its screenshot) again.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Asia::Shanghai;
use serde_json::{Value, json};

use facilityd::owners::report::load::{ReportRequest, report};
use facilityd::owners::report::{EngineeringReport, Format, render};
use facilityd::profile::DeviceType;
use facilityd::rules::types::{
    AssetInfo, Evidence, Priority, Trigger, TriggerChange, WorkOrderKind, WorkOrderTemplate,
};
use facilityd::settings::Settings;
use facilityd::workorder::availability::{AvailState, CounterDay, SpanWrite};
use facilityd::workorder::store::WorkOrderStore;

/// A local time in Asia/Shanghai: `(month, day, hour, minute)` of 2026.
fn at(month: u32, day: u32, hour: u32, min: u32) -> DateTime<Utc> {
    Shanghai
        .with_ymd_and_hms(2026, month, day, hour, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// The generation time of the scripted report: after the month ended.
fn generated() -> DateTime<Utc> {
    at(12, 3, 9, 0)
}

fn asset(id: &str, building: &str, device_type: DeviceType) -> Arc<AssetInfo> {
    Arc::new(AssetInfo {
        id: Arc::from(id),
        name: None,
        site: Some("harbour-view".into()),
        building: Some(building.into()),
        floor: None,
        device_type,
        profile: device_type.as_str().into(),
        tags: BTreeMap::new(),
        points: Default::default(),
    })
}

struct Month {
    _dir: tempfile::TempDir,
    config: PathBuf,
    db: PathBuf,
    settings: Settings,
    /// Work order ids by script name.
    ids: BTreeMap<&'static str, i64>,
}

fn write_config(dir: &Path) -> PathBuf {
    let mut cfg = format!(
        "[gateway]\nid = \"gw-report\"\nsite = \"harbour-view\"\nstate_dir = {:?}\ntimezone = \"Asia/Shanghai\"\n\n\
         [work_orders]\nresponse_times = {{ urgent = \"30m\", high = \"2h\", normal = \"2d\", low = \"14d\" }}\n\n",
        dir.display().to_string()
    );
    for (id, name, profile, building, floor) in [
        ("EL-1", "Lift 1 (east)", "elevator", "Tower A", "core"),
        ("EL-2", "Lift 2 (west)", "elevator", "Tower A", "core"),
        ("PU-1", "Domestic water pump", "pump", "Tower B", "B2"),
        ("PM-1", "Main incomer meter", "power_meter", "Tower A", "B1"),
    ] {
        cfg.push_str(&format!(
            "[[devices]]\nid = \"{id}\"\nname = \"{name}\"\nprofile = \"{profile}\"\nbuilding = \"{building}\"\nfloor = \"{floor}\"\n\
             modbus = {{ url = \"tcp://127.0.0.1:1\", unit = 1 }}\n\n"
        ));
    }
    let path = dir.join("facilityd.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Spans of one state from `start` to `end`, cut at local midnights as the tracker writes them.
fn spans(
    asset: &str,
    state: AvailState,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<SpanWrite> {
    let mut out = Vec::new();
    let mut s = start;
    while s < end {
        let local = s.with_timezone(&Shanghai).date_naive();
        let next_midnight =
            facilityd::owners::report::period::local_midnight(Shanghai, local.succ_opt().unwrap());
        let e = end.min(next_midnight);
        out.push(SpanWrite {
            id: None,
            asset: asset.into(),
            day: local.format("%Y-%m-%d").to_string(),
            state,
            start_ms: s.timestamp_millis(),
            end_ms: e.timestamp_millis(),
        });
        s = e;
    }
    out
}

fn script() -> Month {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let settings = facilityd::settings::load(&config).unwrap();
    let db = facilityd::gateway::work_order_db(&settings);
    let mut s = WorkOrderStore::open(&db, settings.response_times).unwrap();
    let el1 = asset("EL-1", "Tower A", DeviceType::Elevator);
    let el2 = asset("EL-2", "Tower A", DeviceType::Elevator);
    let pu1 = asset("PU-1", "Tower B", DeviceType::Pump);
    let mut ids = BTreeMap::new();

    let template = |kind, priority, auto_resolve, due_at| WorkOrderTemplate {
        kind,
        priority,
        title: match kind {
            WorkOrderKind::Preventive => "15-day maintenance".into(),
            _ => "Fault".into(),
        },
        description: None,
        auto_resolve,
        meter: false,
        due_at,
    };
    let mut fire = |s: &mut WorkOrderStore,
                    name: &'static str,
                    a: &Arc<AssetInfo>,
                    when: DateTime<Utc>,
                    t: WorkOrderTemplate| {
        let ev = s
            .apply(
                &Trigger {
                    asset: a.clone(),
                    rule: Arc::from(name),
                    at: when,
                    change: TriggerChange::Fire {
                        evidence: Evidence::default(),
                    },
                    template: t,
                },
                &[],
            )
            .unwrap();
        ids.insert(name, ev[0].work_order_id);
        ev[0].work_order_id
    };
    use Priority::*;
    use WorkOrderKind::*;
    let by = Some("wang");

    // W1: opened before the month (local 31 Oct 23:50), answered and resolved after midnight
    // of the 1st: October's work order, November's resolution.
    let w = fire(
        &mut s,
        "w1",
        &el1,
        at(10, 31, 23, 50),
        template(Corrective, Urgent, false, None),
    );
    s.acknowledge(w, by, None, at(11, 1, 0, 10)).unwrap();
    s.resolve(w, by, None, at(11, 1, 1, 0)).unwrap();
    // W2: urgent, answered in 20 min, repaired in 2 h (late); it fired three times.
    let w = fire(
        &mut s,
        "w2",
        &el1,
        at(11, 3, 10, 0),
        template(Corrective, Urgent, false, None),
    );
    for m in [5, 9] {
        s.apply(
            &Trigger {
                asset: el1.clone(),
                rule: Arc::from("w2"),
                at: at(11, 3, 10, m),
                change: TriggerChange::Occurrence {
                    evidence: Evidence::default(),
                },
                template: template(Corrective, Urgent, false, None),
            },
            &[],
        )
        .unwrap();
    }
    s.acknowledge(w, by, None, at(11, 3, 10, 20)).unwrap();
    s.resolve(w, by, None, at(11, 3, 12, 0)).unwrap();
    // W3: urgent, answered after 60 min (late), repaired after 90 min.
    let w = fire(
        &mut s,
        "w3",
        &el2,
        at(11, 5, 8, 0),
        template(Corrective, Urgent, false, None),
    );
    s.acknowledge(w, by, None, at(11, 5, 9, 0)).unwrap();
    s.resolve(w, by, None, at(11, 5, 9, 30)).unwrap();
    // W4: high (2 h), resolved by a person after 60 min without an acknowledgement.
    let w = fire(
        &mut s,
        "w4",
        &pu1,
        at(11, 10, 14, 0),
        template(Corrective, High, false, None),
    );
    s.resolve(w, by, None, at(11, 10, 15, 0)).unwrap();
    // W9: high, answered in 30 min, then cancelled.
    let w = fire(
        &mut s,
        "w9",
        &el2,
        at(11, 12, 10, 0),
        template(Corrective, High, false, None),
    );
    s.acknowledge(w, by, None, at(11, 12, 10, 30)).unwrap();
    s.close(w, by, Some("duplicate call"), at(11, 12, 11, 0))
        .unwrap();
    // W8: normal, never answered: late on both counts by the end of the month.
    fire(
        &mut s,
        "w8",
        &pu1,
        at(11, 15, 8, 0),
        template(Corrective, Normal, false, None),
    );
    // W6: normal, cleared by itself after 10 min (auto-resolve): no response needed.
    fire(
        &mut s,
        "w6",
        &el1,
        at(11, 20, 9, 0),
        template(Corrective, Normal, true, None),
    );
    s.apply(
        &Trigger {
            asset: el1.clone(),
            rule: Arc::from("w6"),
            at: at(11, 20, 9, 10),
            change: TriggerChange::Clear {
                evidence: Evidence::default(),
            },
            template: template(Corrective, Normal, true, None),
        },
        &[],
    )
    .unwrap();
    // W7: low (14 days), unanswered, its time not yet passed at the end of the month.
    fire(
        &mut s,
        "w7",
        &el2,
        at(11, 25, 12, 0),
        template(Corrective, Low, false, None),
    );
    // W5: high, opened at 23:30 on the 30th, answered and resolved in December: November's
    // work order, pending at the end of the month.
    let w = fire(
        &mut s,
        "w5",
        &pu1,
        at(11, 30, 23, 30),
        template(Corrective, High, false, None),
    );
    s.acknowledge(w, by, None, at(12, 1, 0, 30)).unwrap();
    s.resolve(w, by, None, at(12, 1, 2, 0)).unwrap();

    // Preventive: lifts every 15 days, and a pump.
    let pm = |due| template(Preventive, Normal, false, Some(due));
    // P7: due in October, done on 2 November: not November's.
    let w = fire(&mut s, "p7", &el1, at(10, 25, 8, 0), pm(at(10, 31, 20, 0)));
    s.resolve(w, by, None, at(11, 2, 9, 0)).unwrap();
    // P1: on time.
    let w = fire(&mut s, "p1", &el1, at(11, 1, 8, 0), pm(at(11, 5, 0, 0)));
    s.resolve(w, by, None, at(11, 4, 16, 0)).unwrap();
    // P2: done a day late.
    let w = fire(&mut s, "p2", &el2, at(11, 10, 8, 0), pm(at(11, 15, 0, 0)));
    s.resolve(w, by, None, at(11, 16, 10, 0)).unwrap();
    // P3: not done.
    fire(&mut s, "p3", &el1, at(11, 16, 8, 0), pm(at(11, 20, 0, 0)));
    // P4: due at midnight of 1 December: the next month's.
    fire(&mut s, "p4", &el2, at(11, 27, 8, 0), pm(at(12, 1, 0, 0)));
    // P5: the pump's, on time; P6: cancelled.
    let w = fire(&mut s, "p5", &pu1, at(11, 20, 8, 0), pm(at(11, 25, 0, 0)));
    s.resolve(w, by, None, at(11, 24, 15, 0)).unwrap();
    let w = fire(&mut s, "p6", &pu1, at(11, 21, 8, 0), pm(at(11, 28, 0, 0)));
    s.close(w, by, Some("pump replaced"), at(11, 26, 9, 0))
        .unwrap();

    // Availability. The gateway was down on the 14th from 00:00 to 06:00 (no spans: not
    // monitored). EL-1: a fault (unavailable 2 h), an outage (offline 4 h); its spans begin
    // before the month and end after it. EL-2: unavailable 1.5 h. PU-1: offline 1 h. PM-1: never
    // seen.
    use AvailState::*;
    let mut w = Vec::new();
    w.extend(spans(
        "EL-1",
        Available,
        at(10, 31, 20, 0),
        at(11, 3, 10, 0),
    ));
    w.extend(spans(
        "EL-1",
        Unavailable,
        at(11, 3, 10, 0),
        at(11, 3, 12, 0),
    ));
    w.extend(spans("EL-1", Available, at(11, 3, 12, 0), at(11, 14, 0, 0)));
    w.extend(spans("EL-1", Available, at(11, 14, 6, 0), at(11, 20, 9, 0)));
    w.extend(spans("EL-1", Offline, at(11, 20, 9, 0), at(11, 20, 13, 0)));
    w.extend(spans("EL-1", Available, at(11, 20, 13, 0), at(12, 1, 2, 0)));
    w.extend(spans("EL-2", Available, at(11, 1, 0, 0), at(11, 5, 8, 0)));
    w.extend(spans(
        "EL-2",
        Unavailable,
        at(11, 5, 8, 0),
        at(11, 5, 9, 30),
    ));
    w.extend(spans("EL-2", Available, at(11, 5, 9, 30), at(11, 14, 0, 0)));
    w.extend(spans("EL-2", Available, at(11, 14, 6, 0), at(12, 1, 0, 0)));
    w.extend(spans("PU-1", Available, at(11, 1, 0, 0), at(11, 10, 14, 0)));
    w.extend(spans("PU-1", Offline, at(11, 10, 14, 0), at(11, 10, 15, 0)));
    w.extend(spans(
        "PU-1",
        Available,
        at(11, 10, 15, 0),
        at(11, 14, 0, 0),
    ));
    w.extend(spans("PU-1", Available, at(11, 14, 6, 0), at(12, 1, 0, 0)));
    s.write_spans(&w).unwrap();

    // Energy: the meter's daily rises; 31 October and 1 December are outside.
    let day = |d: NaiveDate, inc: f64| CounterDay {
        asset: "PM-1".into(),
        point: "energy_import_kwh".into(),
        day: d.format("%Y-%m-%d").to_string(),
        first_value: 0.0,
        first_ms: 0,
        last_value: inc,
        last_ms: 0,
        increase: inc,
    };
    let ymd = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
    s.write_counter_days(&[
        day(ymd(10, 31), 50.0),
        day(ymd(11, 1), 120.5),
        day(ymd(11, 15), 200.25),
        day(ymd(11, 30), 79.25),
        day(ymd(12, 1), 999.0),
    ])
    .unwrap();
    drop(s);
    Month {
        _dir: dir,
        config,
        db,
        settings,
        ids,
    }
}

fn november(m: &Month, building: Option<&str>, now: DateTime<Utc>) -> EngineeringReport {
    let store = WorkOrderStore::open_read_only(&m.db, m.settings.response_times).unwrap();
    let req = ReportRequest {
        month: Some("2026-11".into()),
        building: building.map(Into::into),
        ..ReportRequest::default()
    };
    report(&store, &m.settings, &req, now).unwrap()
}

fn to_json(r: &EngineeringReport) -> Value {
    serde_json::to_value(r).unwrap()
}

#[test]
fn the_scripted_month_has_the_known_figures() {
    let m = script();
    let r = november(&m, None, generated());
    let j = to_json(&r);

    assert_eq!(
        j["period"],
        json!({
            "from": "2026-11-01T00:00:00+08:00", "to": "2026-12-01T00:00:00+08:00",
            "as_of": "2026-12-01T00:00:00+08:00", "generated_at": "2026-12-03T09:00:00+08:00",
            "timezone": "Asia/Shanghai", "seconds": 2_592_000, "closed": true
        })
    );
    assert_eq!(
        j["gateway"],
        json!({"id": "gw-report", "site": "harbour-view"})
    );

    // Headline: lift maintenance P1 on time, P2 late, P3 not done (P4 is December's, P7
    // October's).
    assert_eq!(
        j["lift_maintenance"],
        json!({"due": 3, "on_time": 1, "late": 1, "not_done": 1, "cancelled": 0, "pending": 0,
               "compliance_pct": 33.3})
    );
    assert_eq!(
        j["preventive"],
        json!({"due": 5, "on_time": 2, "late": 1, "not_done": 1, "cancelled": 1, "pending": 0,
               "compliance_pct": 50.0})
    );

    let c = &j["corrective"];
    let urgent = &c["by_priority"][0];
    assert_eq!(urgent["priority"], "urgent");
    assert_eq!(urgent["target_min"], 30.0);
    // W2 and W3 opened; W1 (October's) is only resolved in the period.
    assert_eq!(
        (
            &urgent["opened"],
            &urgent["acknowledged"],
            &urgent["resolved"],
            &urgent["closed_in_period"]
        ),
        (&json!(2), &json!(2), &json!(2), &json!(3))
    );
    assert_eq!(
        urgent["response"],
        json!({"measured": 2, "median_min": 20.0, "p90_min": 60.0, "on_time": 1, "late": 1,
               "pending": 0, "on_time_pct": 50.0})
    );
    assert_eq!(
        urgent["repair"],
        json!({"measured": 2, "median_min": 90.0, "p90_min": 120.0, "on_time": 0, "late": 2,
               "pending": 0, "on_time_pct": 0.0})
    );
    // High (2 h): W4 resolved by a person without an acknowledgement (60 min), W9 answered in
    // 30 min then cancelled, W5 open across midnight of the 1st: answered only in December,
    // so pending at the end of November.
    let high = &c["by_priority"][1];
    assert_eq!(high["target_min"], 120.0);
    assert_eq!(
        [
            &high["opened"],
            &high["acknowledged"],
            &high["resolved"],
            &high["cancelled"],
            &high["unresolved"],
            &high["closed_in_period"]
        ],
        [
            &json!(3),
            &json!(1),
            &json!(1),
            &json!(1),
            &json!(1),
            &json!(1)
        ]
    );
    assert_eq!(
        high["response"],
        json!({"measured": 2, "median_min": 30.0, "p90_min": 60.0, "on_time": 2, "late": 0,
               "pending": 1, "on_time_pct": 100.0})
    );
    assert_eq!(
        high["repair"],
        json!({"measured": 1, "median_min": 60.0, "p90_min": 60.0, "on_time": 1, "late": 0,
               "pending": 1, "on_time_pct": 100.0})
    );
    // Normal: W6 cleared by itself in 10 min (no response counted), W8 never answered.
    let normal = &c["by_priority"][2];
    assert_eq!(
        normal["response"],
        json!({"measured": 0, "median_min": null, "p90_min": null, "on_time": 0, "late": 1,
               "pending": 0, "on_time_pct": 0.0})
    );
    assert_eq!(
        normal["repair"],
        json!({"measured": 1, "median_min": 10.0, "p90_min": 10.0, "on_time": 1, "late": 1,
               "pending": 0, "on_time_pct": 50.0})
    );
    let low = &c["by_priority"][3];
    assert_eq!(
        (
            &low["opened"],
            &low["response"]["pending"],
            &low["response"]["on_time_pct"]
        ),
        (&json!(1), &json!(1), &Value::Null)
    );
    let total = &c["total"];
    assert_eq!(
        [
            &total["opened"],
            &total["acknowledged"],
            &total["resolved"],
            &total["cancelled"],
            &total["unresolved"],
            &total["closed_in_period"]
        ],
        [
            &json!(8),
            &json!(3),
            &json!(4),
            &json!(1),
            &json!(3),
            &json!(5)
        ]
    );
    // Responses 20, 30, 60, 60 min; repairs 10, 60, 90, 120 min (nearest rank).
    assert_eq!(
        total["response"],
        json!({"measured": 4, "median_min": 30.0, "p90_min": 60.0, "on_time": 3, "late": 2,
               "pending": 2, "on_time_pct": 60.0})
    );
    assert_eq!(
        total["repair"],
        json!({"measured": 4, "median_min": 60.0, "p90_min": 120.0, "on_time": 2, "late": 3,
               "pending": 2, "on_time_pct": 40.0})
    );

    // Availability: EL-1 708 h available, 2 h unavailable, 4 h offline, 6 h not monitored
    // (the gateway's restart); EL-2 712.5 / 1.5 / 0 / 6; PU-1 713 / 0 / 1 / 6; PM-1 never seen.
    let a = &j["availability"];
    let assets: Vec<&str> = a["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        assets,
        ["EL-1", "EL-2", "PM-1", "PU-1"],
        "by building, type, id"
    );
    let el1 = &a["assets"][0];
    assert_eq!(
        [
            &el1["available_s"],
            &el1["unavailable_s"],
            &el1["offline_s"],
            &el1["not_monitored_s"]
        ],
        [
            &json!(708 * 3600),
            &json!(2 * 3600),
            &json!(4 * 3600),
            &json!(6 * 3600)
        ]
    );
    assert_eq!(
        [
            &el1["availability_pct"],
            &el1["monitored_pct"],
            &el1["offline_h"],
            &el1["not_monitored_h"]
        ],
        [&json!(99.7), &json!(99.2), &json!(4.0), &json!(6.0)]
    );
    assert_eq!(
        [
            &el1["corrective_opened"],
            &el1["corrective_closed"],
            &el1["preventive_due"],
            &el1["preventive_on_time"],
            &el1["pm_compliance_pct"]
        ],
        [&json!(2), &json!(3), &json!(2), &json!(1), &json!(50.0)]
    );
    assert_eq!(el1["name"], "Lift 1 (east)");
    assert_eq!(a["assets"][1]["availability_pct"], 99.8);
    assert_eq!(a["assets"][3]["availability_pct"], 100.0);
    let pm1 = &a["assets"][2];
    assert_eq!(
        [
            &pm1["availability_pct"],
            &pm1["monitored_pct"],
            &pm1["not_monitored_h"]
        ],
        [&Value::Null, &json!(0.0), &json!(720.0)],
        "never seen: no data, not 100 %"
    );
    // Tower A: EL-1, EL-2, PM-1 over 2160 asset-hours.
    let tower_a = &a["buildings"][0];
    assert_eq!(
        (&tower_a["key"], &tower_a["assets"]),
        (&json!("Tower A"), &json!(3))
    );
    assert_eq!(
        [
            &tower_a["availability_pct"],
            &tower_a["monitored_pct"],
            &tower_a["offline_h"],
            &tower_a["not_monitored_h"]
        ],
        [&json!(99.8), &json!(66.1), &json!(4.0), &json!(732.0)]
    );
    let lifts = &a["device_types"][0];
    assert_eq!(
        [
            &lifts["key"],
            &lifts["availability_pct"],
            &lifts["monitored_pct"],
            &lifts["corrective_opened"],
            &lifts["pm_compliance_pct"]
        ],
        [
            &json!("elevator"),
            &json!(99.8),
            &json!(99.2),
            &json!(5),
            &json!(33.3)
        ]
    );
    assert_eq!(
        [
            &a["total"]["assets"],
            &a["total"]["availability_pct"],
            &a["total"]["monitored_pct"],
            &a["total"]["offline_h"],
            &a["total"]["not_monitored_h"]
        ],
        [
            &json!(4),
            &json!(99.8),
            &json!(74.4),
            &json!(5.0),
            &json!(738.0)
        ]
    );

    // The most faults: EL-2 and PU-1 three each, EL-1 two (W2 fired three times).
    let top: Vec<(String, u64, u64)> = r
        .top_faults
        .iter()
        .map(|f| (f.asset.clone(), f.work_orders, f.occurrences))
        .collect();
    assert_eq!(
        top,
        [
            ("EL-2".into(), 3, 3),
            ("PU-1".into(), 3, 3),
            ("EL-1".into(), 2, 4)
        ]
    );
    // Unresolved at the end of November, oldest first, with their age in hours.
    let old: Vec<(i64, f64, &str)> = r
        .oldest_unresolved
        .iter()
        .map(|u| (u.id, u.age_h, u.status.as_str()))
        .collect();
    assert_eq!(
        old,
        [
            (m.ids["w8"], 376.0, "open"),
            (m.ids["p3"], 352.0, "open"),
            (m.ids["w7"], 132.0, "open"),
            (m.ids["p4"], 88.0, "open"),
            (m.ids["w5"], 0.5, "open"),
        ]
    );
    // Energy: 1, 15 and 30 November.
    assert_eq!(
        j["energy"],
        json!({"from_day": "2026-11-01", "to_day": "2026-11-30",
               "buildings": [{"building": "Tower A", "meters": 1, "kwh": 400.0}], "total_kwh": 400.0})
    );
}

#[test]
fn an_ended_month_prints_the_same_figures_later_and_a_building_limits_it() {
    let m = script();
    let first = to_json(&november(&m, None, generated()));
    // Later, W7 is answered and resolved: November's report does not change.
    let mut s = WorkOrderStore::open(&m.db, m.settings.response_times).unwrap();
    s.acknowledge(m.ids["w7"], Some("li"), None, at(12, 4, 8, 0))
        .unwrap();
    s.resolve(m.ids["w7"], Some("li"), None, at(12, 4, 9, 0))
        .unwrap();
    drop(s);
    let mut again = to_json(&november(&m, None, at(12, 20, 0, 0)));
    assert_eq!(again["period"]["generated_at"], "2026-12-20T00:00:00+08:00");
    again["period"]["generated_at"] = first["period"]["generated_at"].clone();
    assert_eq!(again, first);

    let b = november(&m, Some("Tower B"), generated());
    assert_eq!(b.building.as_deref(), Some("Tower B"));
    assert_eq!(b.availability.assets.len(), 1);
    assert_eq!(b.corrective.total.opened, 3, "W4, W5, W8");
    assert_eq!(b.lift_maintenance.due, 0);
    assert_eq!(b.lift_maintenance.compliance_pct, None);
    assert_eq!(b.preventive.due, 2);
    assert!(b.energy.is_none(), "no meter in Tower B");
}

fn facilityd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_facilityd"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_report_command_reads_the_store_read_only_in_every_format() {
    let m = script();
    let cfg = m.config.to_str().unwrap();
    let out = facilityd(&[
        "report", "-c", cfg, "--month", "2026-11", "--format", "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = to_json(&november(&m, None, generated()));
    got["period"]["generated_at"] = want["period"]["generated_at"].clone();
    assert_eq!(got, want);

    // --from/--to with dates (local midnight) is the same month.
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("nov.csv");
    let out = facilityd(&[
        "report",
        "-c",
        cfg,
        "--from",
        "2026-11-01",
        "--to",
        "2026-12-01",
        "--format",
        "csv",
        "--out",
        csv_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], facilityd::owners::report::csv::HEADER);
    assert_eq!(
        lines.len(),
        1 + 1 + 2 + 3 + 4,
        "total, 2 buildings, 3 types, 4 assets"
    );
    assert!(
        lines[1].starts_with("total,all,,,,,4,2026-11-01T00:00:00+08:00,"),
        "{}",
        lines[1]
    );
    let el1 = lines.iter().find(|l| l.starts_with("asset,EL-1,")).unwrap();
    assert!(
        el1.ends_with(",2548800,7200,14400,21600,99.7,99.2,4,6,2,3,2,1,50"),
        "{el1}"
    );
    let pm1 = lines.iter().find(|l| l.starts_with("asset,PM-1,")).unwrap();
    assert!(
        pm1.contains(",0,0,0,2592000,,0,0,720,"),
        "no data is an empty cell: {pm1}"
    );

    // Mistakes are named.
    let out = facilityd(&[
        "report",
        "-c",
        cfg,
        "--month",
        "2026-11",
        "--building",
        "Tower C",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown building \"Tower C\"") && err.contains("Tower A, Tower B"),
        "{err}"
    );
    let out = facilityd(&["report", "-c", cfg, "--month", "2026-13"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a month"));
    let out = facilityd(&[
        "report",
        "-c",
        cfg,
        "--from",
        "2026-12-01",
        "--to",
        "2026-11-01",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the period is empty"));

    // An old database is not migrated by a report: it says to start the daemon.
    let conn = rusqlite::Connection::open(&m.db).unwrap();
    conn.execute("DELETE FROM schema_version WHERE version > 1", [])
        .unwrap();
    drop(conn);
    let out = facilityd(&["report", "-c", cfg, "--month", "2026-11"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schema version 1") && err.contains("start the daemon"),
        "{err}"
    );
    let conn = rusqlite::Connection::open(&m.db).unwrap();
    let v: u32 = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 1, "the report wrote to the database");
}

/// The JSON value a `data-figure` pointer names, as the page must print it.
fn expected_text(v: &Value) -> String {
    match v {
        Value::Null => "no data".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap();
            if n.is_f64() {
                f.to_string()
            } else {
                n.to_string()
            }
        }
        other => panic!("a figure is a scalar, not {other}"),
    }
}

#[test]
fn the_html_report_renders_in_chromium_and_every_figure_equals_the_json() {
    let m = script();
    let r = november(&m, None, generated());
    let html = render(&r, Format::Html);
    let j = to_json(&r);
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).unwrap();
    let png = dir.path().join("report.png");
    let shot = support::browser::render(&page, &png, 1100, 1600);
    assert!(shot.console_errors.is_empty(), "{:?}", shot.console_errors);
    let ink = support::browser::ink_share(&png);
    assert!(ink > 0.02, "the screenshot is blank ({ink})");
    support::browser::assert_self_contained(&shot.dom);

    let figures = support::browser::figures(&shot.dom);
    assert!(figures.len() > 150, "only {} figures marked", figures.len());
    for (pointer, texts) in &figures {
        let v = j
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{pointer} is not in the JSON"));
        for t in texts {
            assert_eq!(t, &expected_text(v), "{pointer}");
        }
    }
    // The figures an owner looks for first are there.
    for p in [
        "/lift_maintenance/compliance_pct",
        "/availability/total/availability_pct",
        "/corrective/total/response/on_time_pct",
        "/corrective/by_priority/0/repair/p90_min",
        "/availability/assets/2/availability_pct",
        "/energy/total_kwh",
        "/period/as_of",
    ] {
        assert!(figures.contains_key(p), "{p} is not in the page");
    }
    assert_eq!(
        figures["/lift_maintenance/compliance_pct"],
        ["33.3", "33.3"]
    );
    // PM-1, never seen, in its table row and beside its bar.
    assert_eq!(
        figures["/availability/assets/2/availability_pct"],
        ["no data", "no data"]
    );
    assert!(
        html.contains("nearest rank"),
        "the percentile method is defined"
    );

    // The sample under docs/ is this page.
    let docs = support::repo_root().join("docs");
    let sample = docs.join("sample-report.html");
    if std::env::var_os("UPDATE_SAMPLES").is_some() {
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(&sample, &html).unwrap();
        // The whole page, for the README.
        support::browser::render(&sample, &docs.join("sample-report.png"), 1100, 3300);
    }
    let kept = std::fs::read_to_string(&sample).unwrap_or_default();
    assert!(
        kept == html,
        "docs/sample-report.html is not the current rendering: run UPDATE_SAMPLES=1 cargo test --test report"
    );
}
