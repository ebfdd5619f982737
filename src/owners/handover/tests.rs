use serde_json::json;

use super::diff::diff;
use super::render::{Sealed, csv, html};
use super::*;

#[test]
fn canonical_json_sorts_keys_and_drops_whitespace() {
    let v = json!({"b": [1, 2.5, {"z": null, "a": "x\"y"}], "a": true});
    assert_eq!(
        canonical_json(&v),
        r#"{"a":true,"b":[1,2.5,{"a":"x\"y","z":null}]}"#
    );
    let text = canonical_json(&v);
    let h = sha256_hex(&text);
    assert!(verify(&text, &h));
    assert!(!verify(&text.replace("2.5", "2.6"), &h), "a change is seen");
}

fn record(counter: f64, alarm: bool, gauge: f64, open: &[i64], assets: &[&str]) -> HandoverRecord {
    let a = |id: &str| {
        json!({
            "id": id, "name": null, "profile": "pump", "device_type": "pump", "site": null,
            "building": "A", "floor": null, "link": "tcp://127.0.0.1:502", "modbus_unit": 1,
            "mqtt_topic": null, "online": true, "last_good_at": null,
            "points": [
                {"name": "p", "kind": "gauge", "unit": "bar", "value": gauge, "at": null, "min": 3.0, "max": 4.0, "samples": 9},
                {"name": "fault", "kind": "alarm", "unit": null, "value": alarm, "at": null, "min": null, "max": null, "samples": null},
                {"name": "starts", "kind": "counter", "unit": null, "value": counter, "at": null, "min": null, "max": null, "samples": null},
            ],
            "counters": [{"name": "starts", "unit": null, "value": counter, "at": null}],
            "open_work_orders": open.iter().map(|i| json!({
                "id": i, "rule": "r", "kind": "corrective", "priority": "high", "status": "open",
                "title": format!("wo {i}"), "opened_at": "x", "due_at": "y", "evidence": {"point": "fault"}
            })).collect::<Vec<_>>(),
        })
    };
    serde_json::from_value(json!({
        "building": "A", "recorded_at": "2026-12-08T01:00:00.000Z",
        "recorded_at_local": "2026-12-08T09:00:00.000+08:00", "timezone": "Asia/Shanghai",
        "gateway_id": "gw", "site": null, "recorded_by": "Li", "note": null,
        "range_from": "2026-12-07T01:00:00.000Z",
        "assets": assets.iter().map(|x| a(x)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[test]
fn diff_lists_exactly_what_changed() {
    let then = record(100.0, false, 3.5, &[1, 2], &["P-1", "P-2"]);
    // Unchanged within range: nothing.
    let same = record(100.0, false, 3.9, &[1, 2], &["P-1", "P-2"]);
    assert!(diff(&then, &same).is_empty(), "{:?}", diff(&then, &same));

    let now = record(105.0, true, 4.5, &[2, 3], &["P-1", "P-3"]);
    let d = diff(&then, &now);
    assert_eq!(d.counters.len(), 1);
    assert_eq!(
        (d.counters[0].from, d.counters[0].now, d.counters[0].delta),
        (100.0, 105.0, 5.0)
    );
    assert_eq!(
        d.work_orders_opened
            .iter()
            .map(|w| w.id)
            .collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(
        d.work_orders_cleared
            .iter()
            .map(|w| w.id)
            .collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(d.alarms_changed.len(), 1);
    assert_eq!(
        (
            d.out_of_range[0].min,
            d.out_of_range[0].max,
            d.out_of_range[0].now
        ),
        (3.0, 4.0, 4.5)
    );
    assert_eq!(d.assets_added, ["P-3"]);
    assert_eq!(d.assets_gone, ["P-2"]);
}

#[test]
fn renderers_carry_the_figures_and_the_hash_check() {
    let r = record(100.0, false, 3.5, &[7], &["P-1"]);
    let (text, hash) = seal(&r).unwrap();
    assert!(verify(&text, &hash));
    let s = Sealed {
        id: 4,
        record: &r,
        sha256: &hash,
        verified: true,
    };
    let page = html(&s);
    assert!(
        page.contains("data-figure=\"counter:P-1:starts\">100.0<"),
        "{page}"
    );
    assert!(page.contains("data-figure=\"min:P-1:p\">3.0<"));
    assert!(page.contains(&hash));
    assert!(!page.contains("<script") && !page.contains("HASH MISMATCH"));
    let bad = html(&Sealed {
        verified: false,
        ..s.clone()
    });
    assert!(bad.contains("HASH MISMATCH"));
    let c = csv(&s);
    assert_eq!(
        c.lines().count(),
        1 + 3,
        "a header and one row per point:\n{c}"
    );
    assert!(
        c.lines()
            .nth(1)
            .unwrap()
            .starts_with("4,A,2026-12-08T01:00:00.000Z,P-1,,pump,,true,p,gauge,3.5,bar,,3.0,4.0,")
    );
}

#[test]
fn floats_lose_their_representation_noise_only() {
    assert_eq!(tidy(0.1 * 3.0), 0.3);
    assert_eq!(tidy(289.0 * 0.1), 28.9);
    assert_eq!(tidy(1_234_567.891), 1_234_567.891);
    assert_eq!(tidy(0.0), 0.0);
}
