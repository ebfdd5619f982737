//! Holds: a building's mains loss holds the offline rules of that building's devices, lists
//! them on its work order, and releases them with their delays restarted; point lists.

use std::sync::Arc;

use crate::model::Value;
use crate::rules::config::tests::pump;
use crate::rules::engine::tests::*;
use crate::rules::types::AssetInfo;

const M: i64 = 60 * S;

fn in_building(id: &str, building: &str) -> Arc<AssetInfo> {
    let mut a = (*pump(id)).clone();
    a.building = Some(building.into());
    Arc::new(a)
}

/// ATS-A watches building A's mains (its `fault` bit stands for "mains lost"); P-A1, P-A2 are
/// in building A, P-B1 in building B.
fn site() -> Vec<Arc<AssetInfo>> {
    vec![
        in_building("ATS-A", "A"),
        in_building("P-A1", "A"),
        in_building("P-A2", "A"),
        in_building("P-B1", "B"),
    ]
}

const MAINS: &str = r#"
[[rules]]
id = "power-mains-lost"
type = "state"
match = { ids = "ATS-A" }
point = "fault"
for = "5s"

[[rules]]
id = "comm-lost"
type = "offline"
match = { ids = ["P-A1", "P-A2", "P-B1"] }
after = "5m"
unless = { rule = "power-mains-lost", scope = "building" }

[[rules]]
id = "low-pressure"
type = "threshold"
match = { ids = ["P-A1", "P-A2", "P-B1"] }
point = "discharge_pressure_bar"
below = 2.0
for = "30s"
unless = { rule = "power-mains-lost" }
"#;

/// Everyone reports at 1 s; mains lost in building A at 10 s (fired at 15 s); the pumps go
/// silent after 10 s.
fn incident() -> (Run, Vec<String>) {
    let mut r = Run::with_assets(MAINS, site());
    for a in 0..4 {
        r.offer(a, "discharge_pressure_bar", Value::Float(3.0), T0 + S);
    }
    r.offer(0, "fault", Value::Bool(false), T0 + S);
    r.offer(0, "fault", Value::Bool(true), T0 + 10 * S);
    let mut all = Vec::new();
    for s in 11..=(20 * 60) {
        let t = T0 + s * S;
        all.extend(kinds(&r.offer(0, "fault", Value::Bool(true), t)));
        all.extend(kinds(&r.tick(t)));
    }
    (r, all)
}

#[test]
fn a_mains_loss_holds_its_building_and_lists_the_affected() {
    let (_, all) = incident();
    assert_eq!(
        all,
        [
            "ATS-A/power-mains-lost:fire",
            // 10 s + 5 min of silence: held, listed on the mains work order, no work order.
            "ATS-A/power-mains-lost:affected[P-A1/comm-lost]",
            "ATS-A/power-mains-lost:affected[P-A2/comm-lost]",
            // Another building: its own work order.
            "P-B1/comm-lost:fire",
        ]
    );
}

#[test]
fn after_the_release_a_silent_device_gets_its_work_order_and_a_returned_one_none() {
    let (mut r, _) = incident();
    // Power back at 20 min; P-A1 answers a minute later, P-A2 never does.
    let release = T0 + 20 * M + S;
    assert_eq!(
        kinds(&r.offer(0, "fault", Value::Bool(false), release)),
        ["ATS-A/power-mains-lost:clear"]
    );
    let mut all = Vec::new();
    for s in 1..=(10 * 60) {
        let t = release + s * S;
        if s >= 60 {
            all.extend(kinds(&r.offer(
                1,
                "discharge_pressure_bar",
                Value::Float(3.0),
                t,
            )));
        }
        all.extend(kinds(&r.tick(t)).into_iter().map(|k| format!("{s}:{k}")));
    }
    // P-A2 gets the full 5 minutes after the release; P-A1 came back quietly.
    assert_eq!(all, ["300:P-A2/comm-lost:fire"]);
}

#[test]
fn a_held_condition_restarts_its_delay_at_the_release() {
    let mut r = Run::with_assets(MAINS, site());
    r.offer(0, "fault", Value::Bool(true), T0);
    assert_eq!(
        kinds(&r.offer(0, "fault", Value::Bool(true), T0 + 5 * S)),
        ["ATS-A/power-mains-lost:fire"]
    );
    // Low pressure on P-A1 (held) and P-B1 (not held: another building).
    let mut all = Vec::new();
    for s in 6..100 {
        let t = T0 + s * S;
        all.extend(kinds(&r.offer(
            1,
            "discharge_pressure_bar",
            Value::Float(1.0),
            t,
        )));
        all.extend(kinds(&r.offer(
            3,
            "discharge_pressure_bar",
            Value::Float(1.0),
            t,
        )));
        r.offer(0, "fault", Value::Bool(true), t);
        all.extend(kinds(&r.tick(t)));
    }
    assert_eq!(
        all,
        [
            "ATS-A/power-mains-lost:affected[P-A1/low-pressure]",
            "P-B1/low-pressure:fire",
        ]
    );
    assert!(r.e.stats().unless_held >= 90, "{:?}", r.e.stats());
    // Released at 100 s: the on-delay runs from then.
    assert_eq!(
        kinds(&r.offer(0, "fault", Value::Bool(false), T0 + 100 * S)),
        ["ATS-A/power-mains-lost:clear"]
    );
    assert!(r.tick(T0 + 129 * S).is_empty());
    assert_eq!(kinds(&r.tick(T0 + 130 * S)), ["P-A1/low-pressure:fire"]);
}

#[test]
fn a_hold_survives_a_restart() {
    let (r, _) = incident();
    let saved = r.e.snapshot();
    let mut r2 = Run::with_assets(MAINS, site());
    r2.e.restore(saved);
    // Still held after the restart: the silent pumps of building A open nothing.
    for s in 0..(10 * 60) {
        let t = T0 + 21 * M + s * S;
        assert!(r2.tick(t).is_empty(), "{s}");
    }
    // The release comes from the inhibitor's next reading.
    let release = T0 + 31 * M;
    assert_eq!(
        kinds(&r2.offer(0, "fault", Value::Bool(false), release)),
        ["ATS-A/power-mains-lost:clear"]
    );
    assert!(r2.tick(release + 5 * M - S).is_empty());
    assert_eq!(
        kinds(&r2.tick(release + 5 * M)),
        ["P-A1/comm-lost:fire", "P-A2/comm-lost:fire"]
    );
}

#[test]
fn without_saved_state_nothing_is_held() {
    let mut r = Run::with_assets(MAINS, site());
    let mut all = Vec::new();
    for s in 0..=(5 * 60) {
        all.extend(kinds(&r.tick(T0 + s * S)));
    }
    assert_eq!(
        all,
        [
            "P-A1/comm-lost:fire",
            "P-A2/comm-lost:fire",
            "P-B1/comm-lost:fire",
        ]
    );
}

const FAIL_TO_TRANSFER: &str = r#"
[[rules]]
id = "ats-fail-to-transfer"
type = "state"
match = { ids = "P-1" }
point = "mode"
equals = ["under_threshold", "present"]
for = "15s"
unless = [
    { point = "local_mode", equals = ["under_threshold", "present"] },
    { point = "run_hours", equals = 2 },
]
"#;

#[test]
fn a_list_of_point_conditions_holds_while_any_holds() {
    let mut r = Run::new(FAIL_TO_TRANSFER);
    let s2 = |r: &mut Run, v: &str, t| r.offer(0, "local_mode", Value::Str(v.into()), t);
    let pos = |r: &mut Run, v: i64, t| r.offer(0, "run_hours", Value::Int(v), t);
    s2(&mut r, "present", T0);
    pos(&mut r, 1, T0);
    let mut all = Vec::new();
    for s in 1..200 {
        let t = T0 + s * S;
        if s == 50 {
            // S2 lost too, but the switch is in position II.
            s2(&mut r, "under_threshold", t);
            pos(&mut r, 2, t);
        }
        if s == 100 {
            s2(&mut r, "failed", t);
        }
        if s == 150 {
            pos(&mut r, 1, t);
        }
        let fired = kinds(&r.offer(0, "mode", Value::Str("present".into()), t));
        all.extend(fired.into_iter().map(|k| format!("{s}:{k}")));
        all.extend(kinds(&r.tick(t)).into_iter().map(|k| format!("{s}:{k}")));
    }
    // Held while either holds; free from 150 s, fired 15 s later.
    assert_eq!(all, ["165:P-1/ats-fail-to-transfer:fire"]);
    assert!(r.e.stats().unless_suppressed >= 140);
    // The conditions' states survive a restart.
    let mut r2 = Run::new(FAIL_TO_TRANSFER);
    s2(&mut r, "present", T0 + 300 * S);
    r2.e.restore(r.e.snapshot());
    assert_eq!(r2.e.snapshot(), r.e.snapshot());
}
