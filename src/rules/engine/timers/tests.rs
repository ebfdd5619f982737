//! Ticks: delays completed without a sample, offline silence and what it holds back, calendar
//! due dates.

use proptest::prelude::*;

use crate::model::Value;
use crate::rules::engine::tests::*;

#[test]
fn tick_completes_the_on_delay_without_a_contrary_sample() {
    let mut r = Run::new(LOW_PRESSURE);
    r.offer(0, "discharge_pressure_bar", Value::Float(1.5), T0 + S);
    assert!(r.tick(T0 + 30 * S).is_empty());
    let t = r.tick(T0 + 31 * S);
    assert_eq!(kinds(&t), ["P-1/low-pressure:fire"]);
    assert_eq!(t[0].at, at(T0 + 31 * S));
    assert!(r.tick(T0 + 32 * S).is_empty());
}

#[test]
fn offline_suppresses_the_other_rules_of_the_asset() {
    let mut r = Run::new(OFFLINE_AND_LOW);
    // Both pumps report; P-1 is low and then goes silent.
    for s in 0..60 {
        let t = T0 + s * S;
        r.offer(0, "discharge_pressure_bar", Value::Float(1.5), t);
        r.offer(1, "discharge_pressure_bar", Value::Float(3.0), t);
        r.offer(2, "trips_total", Value::Int(5), t);
        r.tick(t);
    }
    let mut fired = Vec::new();
    for s in 60..(20 * 60) {
        let t = T0 + s * S;
        r.offer(1, "discharge_pressure_bar", Value::Float(3.0), t);
        r.offer(2, "trips_total", Value::Int(5), t);
        fired.extend(kinds(&r.tick(t)).into_iter().map(|k| (s, k)));
    }
    // One comm fault at 59 s + 5 min; the low-pressure delay (10 min from 0 s) never completes;
    // the daily inspection falls due at 06:00 regardless.
    assert_eq!(fired, [(359, "P-1/comm-lost:fire".to_string())]);
    // Back: the offline rule clears (auto-resolve), the low-pressure delay starts over.
    let mut back = Vec::new();
    for s in 1200..=1800 {
        let t = T0 + s * S;
        let got = r.offer(0, "discharge_pressure_bar", Value::Float(1.5), t);
        if s == 1200 {
            assert!(got[0].template.auto_resolve);
        }
        back.extend(kinds(&got).into_iter().map(|k| (s, k)));
        r.offer(1, "discharge_pressure_bar", Value::Float(3.0), t);
        r.offer(2, "trips_total", Value::Int(5), t);
        back.extend(kinds(&r.tick(t)).into_iter().map(|k| (s, k)));
    }
    assert_eq!(
        back,
        [
            (1200, "P-1/comm-lost:clear".to_string()),
            (1800, "P-1/low-pressure:fire".to_string())
        ]
    );
    let t = r.tick(T0 + 6 * 3600 * S);
    assert!(
        kinds(&t).contains(&"P-1/inspection:fire".to_string()),
        "{:?}",
        kinds(&t)
    );
}

proptest! {
    /// While an asset is offline its other rules produce nothing, whatever their state.
    #[test]
    fn offline_holds_everything_back(
        before in prop::collection::vec(0.0f64..4.0, 1..30),
        silent_s in 301i64..5000,
    ) {
        let mut r = Run::new(OFFLINE_AND_LOW.replace("for = \"10m\"", "for = \"5s\"\nclear_for = \"20s\"").as_str());
        let mut t = T0;
        for v in &before {
            t += S;
            r.offer(0, "discharge_pressure_bar", Value::Float(*v), t);
            r.tick(t);
        }
        let last = t;
        let mut offline_fired = false;
        for s in (1..silent_s).step_by(7) {
            let now = last + s * S;
            let k = kinds(&r.tick(now));
            for k in &k {
                if k == "P-1/comm-lost:fire" {
                    prop_assert!(!offline_fired);
                    offline_fired = true;
                } else if k.starts_with("P-1/low-pressure") {
                    // Before the offline rule fires, pending delays may complete.
                    prop_assert!(!offline_fired, "{} after offline", k);
                }
            }
        }
        let last_tick = (1..silent_s).step_by(7).last().unwrap_or(0);
        prop_assert_eq!(offline_fired, last_tick >= 300);
    }
}

#[test]
fn calendar_due_dates() {
    let (mut e, _) = engine(CALENDAR);
    let h = 3600 * S;
    let fires = calendar_fires(&mut e, T0, T0 + 100 * 24 * h, h);
    let got: Vec<(String, String)> = fires
        .iter()
        .map(|(t, k, d)| (at(*t).to_rfc3339(), format!("{k} due {d}")))
        .collect();
    assert_eq!(
        got[..3],
        [
            (
                "2026-01-02T08:00:00+00:00".into(),
                "EL-1/half-monthly:fire due 2026-01-04T08:00:00+00:00".into()
            ),
            (
                "2026-01-17T08:00:00+00:00".into(),
                "EL-1/half-monthly:fire due 2026-01-19T08:00:00+00:00".into()
            ),
            (
                "2026-02-01T08:00:00+00:00".into(),
                "EL-1/half-monthly:fire due 2026-02-03T08:00:00+00:00".into()
            ),
        ]
    );
    let quarterly: Vec<_> = got
        .iter()
        .filter(|(_, k)| k.contains("quarterly"))
        .collect();
    assert_eq!(quarterly.len(), 2, "{quarterly:?}");
    assert_eq!(quarterly[0].0, "2026-02-27T00:00:00+00:00");
    assert!(
        quarterly[0].1.ends_with("due 2026-02-28T00:00:00+00:00"),
        "Nov 30 + 3 months"
    );
}
