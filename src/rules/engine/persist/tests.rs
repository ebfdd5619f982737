//! Saved state: restarts keep episodes, delays, offline silence and calendar schedules; saved
//! state that no longer fits is ignored.

use proptest::prelude::*;

use crate::model::Value;
use crate::rules::engine::tests::*;
use crate::rules::types::EvidenceValue;

#[test]
fn no_offline_storm_after_the_gateway_was_down() {
    let (mut e, _) = engine(OFFLINE_AND_LOW);
    let mut out = Vec::new();
    e.tick(at(T0), &mut out);
    e.offer(0, 0, &Value::Float(3.0), T0 + S, &mut out);
    e.offer(1, 0, &Value::Float(3.0), T0 + S, &mut out);
    e.tick(at(T0 + 2 * S), &mut out);
    let saved = e.snapshot();
    // Down for an hour.
    let (mut e2, _) = engine(OFFLINE_AND_LOW);
    e2.restore(saved);
    e2.tick(at(T0 + 3600 * S), &mut out);
    assert!(out.is_empty(), "{:?}", kinds(&out));
    // The silence before the shutdown (1 s) counts, the downtime does not.
    e2.tick(at(T0 + 3600 * S + 298 * S), &mut out);
    assert!(out.is_empty());
    e2.tick(at(T0 + 3600 * S + 299 * S), &mut out);
    assert_eq!(kinds(&out), ["P-1/comm-lost:fire", "P-2/comm-lost:fire"]);
    out.clear();
    // The lift never reported: counted from this start.
    e2.tick(at(T0 + 3600 * S + 300 * S), &mut out);
    assert_eq!(kinds(&out), ["EL-1/comm-lost:fire"]);
}

#[test]
fn an_offline_episode_survives_a_restart() {
    let (mut e, _) = engine(OFFLINE_AND_LOW);
    let mut out = Vec::new();
    e.tick(at(T0), &mut out);
    e.tick(at(T0 + 300 * S), &mut out);
    assert_eq!(out.len(), 3, "all three silent since start");
    out.clear();
    let saved = e.take_dirty();
    assert_eq!(saved.iter().filter(|(_, r, _)| r == "comm-lost").count(), 3);
    let (mut e2, _) = engine(OFFLINE_AND_LOW);
    e2.restore(saved);
    e2.tick(at(T0 + 4000 * S), &mut out);
    assert!(out.is_empty(), "not fired again: {:?}", kinds(&out));
    e2.offer(2, 0, &Value::Int(1), T0 + 4001 * S, &mut out);
    assert_eq!(kinds(&out), ["EL-1/comm-lost:clear"]);
}

#[test]
fn threshold_state_survives_a_restart() {
    let mut r = Run::new(LOW_PRESSURE);
    r.offer(0, "discharge_pressure_bar", Value::Float(1.0), T0);
    let t = r.offer(0, "discharge_pressure_bar", Value::Float(1.0), T0 + 30 * S);
    assert_eq!(kinds(&t), ["P-1/low-pressure:fire"]);
    let dirty = r.e.take_dirty();
    assert!(
        dirty
            .iter()
            .any(|(a, rule, _)| a == "P-1" && rule == "low-pressure")
    );
    let (mut e2, assets) = engine(LOW_PRESSURE);
    e2.restore(r.e.snapshot());
    let mut out = Vec::new();
    e2.tick(at(T0 + 100 * S), &mut out);
    // Still firing: no new fire for a value still low, a clear when it recovers.
    e2.offer(
        0,
        pidx(&assets[0], "discharge_pressure_bar"),
        &Value::Float(1.0),
        T0 + 101 * S,
        &mut out,
    );
    assert!(out.is_empty());
    e2.offer(
        0,
        pidx(&assets[0], "discharge_pressure_bar"),
        &Value::Float(2.5),
        T0 + 102 * S,
        &mut out,
    );
    assert_eq!(kinds(&out), ["P-1/low-pressure:clear"]);
    // The evidence of the whole episode came along.
    assert_eq!(
        evidence(&out[0]).first_value,
        Some(EvidenceValue::Number(1.0))
    );
}

#[test]
fn restore_ignores_unknown_and_changed_rules() {
    let (mut e, _) = engine(LOW_PRESSURE);
    e.restore(vec![
        (
            "P-9".into(),
            "low-pressure".into(),
            serde_json::json!({"type": "threshold"}),
        ),
        ("P-1".into(), "gone".into(), serde_json::json!({})),
        (
            "P-1".into(),
            "low-pressure".into(),
            serde_json::json!({"type": "meter", "state": {}}),
        ),
        (
            "P-1".into(),
            "low-pressure".into(),
            serde_json::json!("garbage"),
        ),
    ]);
    assert!(e.snapshot().is_empty());
}

proptest! {
    /// Snapshot and restore mid-way gives the same fires as an uninterrupted run.
    #[test]
    fn calendar_fires_on_schedule_across_a_restart(split_h in 1i64..(200 * 24), step_m in 1i64..180) {
        let step = step_m * 60 * S;
        let end = T0 + 200 * 24 * 3600 * S;
        let split = T0 + split_h * 3600 * S;
        let (mut whole, _) = engine(CALENDAR);
        let expected = calendar_fires(&mut whole, T0, end, step);
        let (mut first, _) = engine(CALENDAR);
        let mut got = calendar_fires(&mut first, T0, split, step);
        let (mut second, _) = engine(CALENDAR);
        second.restore(first.snapshot());
        // Resume on the same grid.
        let resume = T0 + (split - T0 + step - 1) / step * step;
        got.extend(calendar_fires(&mut second, resume, end, step));
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn calendar_due_dates_missed_while_down_fire_once() {
    let (mut e, _) = engine(CALENDAR);
    let h = 3600 * S;
    let before = calendar_fires(&mut e, T0, T0 + 24 * h, h);
    assert!(before.is_empty());
    let (mut e2, _) = engine(CALENDAR);
    e2.restore(e.snapshot());
    // Down 58 days: four half-monthly dates passed; one fire at start-up.
    let fires = calendar_fires(&mut e2, T0 + 58 * 24 * h, T0 + 59 * 24 * h, h);
    let half: Vec<_> = fires
        .iter()
        .filter(|f| f.1.contains("half-monthly"))
        .collect();
    assert_eq!(half.len(), 1, "{fires:?}");
    assert_eq!(
        half[0].2, "2026-01-04T08:00:00+00:00",
        "the first missed due date"
    );
}
