//! Engine tests: rules from TOML, samples and ticks in, triggers out.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::*;
use crate::rules::config::parse_rules;
use crate::rules::config::tests::{items, lift, pump};
use crate::rules::types::{AssetInfo, EvidenceValue, Trigger, TriggerChange};

const S: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600 * S;

fn engine(toml: &str) -> (RuleEngine, Vec<Arc<AssetInfo>>) {
    let assets = vec![pump("P-1"), pump("P-2"), lift("EL-1")];
    let (rules, _) = parse_rules(&items("rules.toml", toml), &assets, "gw1", "UTC").unwrap();
    (RuleEngine::new(rules, assets.clone()), assets)
}

fn pidx(a: &AssetInfo, name: &str) -> usize {
    a.points.iter().position(|p| &*p.name == name).unwrap()
}

fn at(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

struct Run {
    e: RuleEngine,
    assets: Vec<Arc<AssetInfo>>,
    out: Vec<Trigger>,
}

impl Run {
    fn new(toml: &str) -> Run {
        let (e, assets) = engine(toml);
        let mut r = Run {
            e,
            assets,
            out: Vec::new(),
        };
        r.tick(T0);
        r
    }

    fn offer(&mut self, asset: usize, point: &str, v: Value, t: i64) -> Vec<Trigger> {
        let p = pidx(&self.assets[asset], point);
        self.e.offer(asset, p, &v, t, &mut self.out);
        std::mem::take(&mut self.out)
    }

    fn tick(&mut self, t: i64) -> Vec<Trigger> {
        self.e.tick(at(t), &mut self.out);
        std::mem::take(&mut self.out)
    }
}

fn kinds(ts: &[Trigger]) -> Vec<String> {
    ts.iter()
        .map(|t| {
            let k = match &t.change {
                TriggerChange::Fire { .. } => "fire".to_string(),
                TriggerChange::Occurrence { .. } => "occurrence".to_string(),
                TriggerChange::Flapping { flapping } => format!("flapping={flapping}"),
                TriggerChange::Clear { .. } => "clear".to_string(),
            };
            format!("{}/{}:{k}", t.asset.id, t.rule)
        })
        .collect()
}

fn evidence(t: &Trigger) -> &crate::rules::types::Evidence {
    match &t.change {
        TriggerChange::Fire { evidence }
        | TriggerChange::Occurrence { evidence }
        | TriggerChange::Clear { evidence } => evidence,
        TriggerChange::Flapping { .. } => panic!("no evidence"),
    }
}

const LOW_PRESSURE: &str = r#"
[[rules]]
id = "low-pressure"
type = "threshold"
match = { device_type = "pump" }
point = "discharge_pressure_bar"
below = 2.0
clear = 2.3
for = "30s"
priority = "high"
title = "Low discharge pressure at {asset}: {value} {unit} < {threshold}"
description = "{name} in building {building}, floor {floor} ({device_type}, {site}, via {gateway}); rule {rule} on {point}"
"#;

#[test]
fn threshold_fires_after_for_and_clears_with_hysteresis() {
    let mut r = Run::new(LOW_PRESSURE);
    assert!(
        r.offer(0, "discharge_pressure_bar", Value::Float(1.8), T0)
            .is_empty()
    );
    // The other pump is routed separately.
    assert!(
        r.offer(1, "discharge_pressure_bar", Value::Float(3.0), T0)
            .is_empty()
    );
    assert!(
        r.offer(0, "discharge_pressure_bar", Value::Float(1.9), T0 + 20 * S)
            .is_empty()
    );
    let t = r.offer(0, "discharge_pressure_bar", Value::Float(1.7), T0 + 30 * S);
    assert_eq!(kinds(&t), ["P-1/low-pressure:fire"]);
    let w = &t[0];
    assert_eq!(w.at, at(T0 + 30 * S));
    assert_eq!(
        w.template.title,
        "Low discharge pressure at P-1: 1.7 bar < 2"
    );
    assert_eq!(
        w.template.description.as_deref(),
        Some(
            "Pump P-1 in building A, floor B2 (pump, tower-a, via gw1); rule low-pressure on discharge_pressure_bar"
        )
    );
    assert_eq!(w.template.priority, crate::rules::types::Priority::High);
    assert_eq!(w.key(), "tower-a/P-1/low-pressure");
    let ev = evidence(w);
    assert_eq!(ev.point.as_deref(), Some("discharge_pressure_bar"));
    assert_eq!(ev.unit.as_deref(), Some("bar"));
    assert_eq!(ev.threshold.as_deref(), Some("2"));
    assert_eq!(ev.first_value, Some(EvidenceValue::Number(1.8)));
    assert_eq!(ev.last_value, Some(EvidenceValue::Number(1.7)));
    assert_eq!((ev.min, ev.max), (Some(1.7), Some(1.9)));
    assert_eq!(ev.readings.len(), 3);
    // Inside the band: still firing; above the clear level: cleared.
    assert!(
        r.offer(0, "discharge_pressure_bar", Value::Float(2.2), T0 + 40 * S)
            .is_empty()
    );
    let t = r.offer(0, "discharge_pressure_bar", Value::Float(2.4), T0 + 50 * S);
    assert_eq!(kinds(&t), ["P-1/low-pressure:clear"]);
    assert_eq!(
        evidence(&t[0]).readings.len(),
        2,
        "only the readings since the fire"
    );
}

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

const OFFLINE_AND_LOW: &str = r#"
[[rules]]
id = "comm-lost"
type = "offline"
after = "5m"

[[rules]]
id = "low-pressure"
type = "threshold"
match = { device_type = "pump" }
point = "discharge_pressure_bar"
below = 2.0
for = "10m"

[[rules]]
id = "inspection"
type = "calendar"
match = { ids = "P-1" }
every = "1d"
start = "2025-12-31T06:00:00Z"
"#;

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

const UNLESS: &str = r#"
[[rules]]
id = "low-pressure"
type = "threshold"
match = { device_type = "pump" }
point = "discharge_pressure_bar"
below = 2.0
unless = { point = "local_mode", equals = ["local", 1] }
"#;

#[test]
fn unless_suppresses_and_delays_restart_after() {
    let mut r = Run::new(&UNLESS.replace("below = 2.0", "below = 2.0\nfor = \"10s\""));
    // Never read: does not suppress, and is counted.
    r.offer(0, "discharge_pressure_bar", Value::Float(3.0), T0);
    assert_eq!(r.e.stats().unless_unknown, 1);
    r.offer(0, "local_mode", Value::Str("local".into()), T0 + S);
    for s in 2..100 {
        assert!(
            r.offer(0, "discharge_pressure_bar", Value::Float(1.0), T0 + s * S)
                .is_empty()
        );
        assert!(r.tick(T0 + s * S).is_empty());
    }
    assert!(r.e.stats().unless_suppressed >= 98);
    // Remote again at 100 s: the on-delay starts then, with the last known condition.
    r.offer(0, "local_mode", Value::Str("remote".into()), T0 + 100 * S);
    assert!(r.tick(T0 + 109 * S).is_empty());
    assert_eq!(kinds(&r.tick(T0 + 110 * S)), ["P-1/low-pressure:fire"]);
    // While held by unless, it does not clear either.
    r.offer(0, "local_mode", Value::Int(1), T0 + 111 * S);
    assert!(
        r.offer(0, "discharge_pressure_bar", Value::Float(3.0), T0 + 112 * S)
            .is_empty()
    );
    let t = r.offer(0, "local_mode", Value::Int(0), T0 + 113 * S);
    assert!(t.is_empty());
    let t = r.offer(0, "discharge_pressure_bar", Value::Float(3.0), T0 + 114 * S);
    assert_eq!(kinds(&t), ["P-1/low-pressure:clear"]);
}

proptest! {
    /// Whatever the pressure does, nothing fires or clears while the unless point holds.
    #[test]
    fn unless_holds_everything_back(values in prop::collection::vec(0.0f64..4.0, 1..100)) {
        let mut r = Run::new(UNLESS);
        r.offer(0, "local_mode", Value::Int(1), T0);
        for (i, v) in values.iter().enumerate() {
            let t = T0 + (i as i64 + 1) * S;
            prop_assert!(r.offer(0, "discharge_pressure_bar", Value::Float(*v), t).is_empty());
            prop_assert!(r.tick(t).is_empty());
        }
    }

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

const FLAPPY: &str = r#"
[[rules]]
id = "fault"
type = "state"
match = { ids = "P-1" }
point = "fault"
for = "3s"
"#;

#[test]
fn flap_guard_holds_one_fire_with_growing_occurrences() {
    let mut r = Run::new(FLAPPY);
    let mut all = Vec::new();
    // A fault bit that toggles every second for a minute, then stays off.
    for s in 0..60 {
        all.extend(kinds(&r.offer(
            0,
            "fault",
            Value::Bool(s % 2 == 0),
            T0 + s * S,
        )));
        all.extend(kinds(&r.tick(T0 + s * S)));
    }
    assert_eq!(all[0], "P-1/fault:fire", "{all:?}");
    assert_eq!(all[1], "P-1/fault:flapping=true");
    assert_eq!(all.iter().filter(|k| k.ends_with(":fire")).count(), 1);
    assert!(
        all.iter().filter(|k| k.ends_with(":occurrence")).count() >= 20,
        "{all:?}"
    );
    assert!(!all.iter().any(|k| k.ends_with(":clear")));
    let mut rest = Vec::new();
    for s in 60..120 {
        rest.extend(kinds(&r.offer(0, "fault", Value::Bool(false), T0 + s * S)));
    }
    assert_eq!(rest, ["P-1/fault:flapping=false", "P-1/fault:clear"]);
}

proptest! {
    /// Whatever a fault bit does: fires and clears alternate; while the flap guard holds the
    /// rule there is no fire and no clear, and every raw rising edge is an occurrence.
    #[test]
    fn flap_guard_holds_one_fire(bits in prop::collection::vec(any::<bool>(), 1..400)) {
        let mut r = Run::new(&FLAPPY.replace("for = \"3s\"", "for = \"0s\""));
        let (mut firing, mut flapping, mut prev) = (false, false, false);
        for (i, b) in bits.iter().enumerate() {
            let got = r.offer(0, "fault", Value::Bool(*b), T0 + i as i64 * S);
            let rising = *b && !prev;
            prev = *b;
            let mut occurrences = 0;
            for t in &got {
                match t.change {
                    TriggerChange::Fire { .. } => {
                        prop_assert!(!firing && !flapping);
                        firing = true;
                    }
                    TriggerChange::Clear { .. } => {
                        prop_assert!(firing && !flapping);
                        firing = false;
                    }
                    TriggerChange::Flapping { flapping: f } => {
                        prop_assert!(firing, "held firing");
                        prop_assert_ne!(f, flapping);
                        flapping = f;
                    }
                    TriggerChange::Occurrence { .. } => {
                        prop_assert!(firing);
                        occurrences += 1;
                    }
                }
            }
            if flapping && firing && got.iter().all(|t| !matches!(t.change, TriggerChange::Flapping { .. })) {
                prop_assert_eq!(occurrences, usize::from(rising));
            }
        }
    }
}

const DOOR_FAULTS: &str = r#"
[[rules]]
id = "door-faults"
type = "state"
match = { device_type = "elevator" }
point = "door_state"
equals = ["fault", "stuck"]
count = 3
within = "24h"
title = "{point}: {threshold} at {asset}"

[[rules]]
id = "dry-run"
type = "state"
match = { ids = "P-1" }
point = "dry_run"
"#;

#[test]
fn count_windows_and_events() {
    let mut r = Run::new(DOOR_FAULTS);
    let h = 3600 * S;
    let mut fired = Vec::new();
    for i in 0..3 {
        r.offer(2, "door_state", Value::Str("open".into()), T0 + i * h);
        fired.extend(r.offer(2, "door_state", Value::Str("fault".into()), T0 + i * h + S));
        // Holding the state is not a new entry.
        fired.extend(r.offer(
            2,
            "door_state",
            Value::Str("fault".into()),
            T0 + i * h + 2 * S,
        ));
    }
    assert_eq!(kinds(&fired), ["EL-1/door-faults:fire"]);
    assert_eq!(
        fired[0].template.title,
        "door_state: 3 x fault, stuck within 1day at EL-1"
    );
    assert_eq!(evidence(&fired[0]).readings.len(), 3);
    assert!(r.tick(T0 + 24 * h).is_empty());
    assert_eq!(kinds(&r.tick(T0 + 24 * h + S)), ["EL-1/door-faults:clear"]);
    // An event point: every true sample is its own fire.
    let a = r.offer(0, "dry_run", Value::Bool(true), T0 + S);
    let b = r.offer(0, "dry_run", Value::Bool(true), T0 + 2 * S);
    assert!(
        r.offer(0, "dry_run", Value::Bool(false), T0 + 3 * S)
            .is_empty()
    );
    assert_eq!(kinds(&a), ["P-1/dry-run:fire"]);
    assert_eq!(kinds(&b), ["P-1/dry-run:fire"]);
}

const METER: &str = r#"
[[rules]]
id = "trips"
type = "meter"
match = { ids = "EL-1" }
point = "trips_total"
every = 1000
lead = 50
"#;

#[test]
fn meter_fires_once_per_interval_and_closing_sets_the_baseline() {
    let mut r = Run::new(METER);
    assert!(r.e.is_meter_rule("trips") && !r.e.is_meter_rule("nope"));
    let mut fires = Vec::new();
    for s in 0..3000 {
        fires.extend(r.offer(2, "trips_total", Value::Int(1_200_000 + s), T0 + s * S));
    }
    assert_eq!(kinds(&fires), ["EL-1/trips:fire"], "once, until closed");
    let ev = evidence(&fires[0]);
    assert_eq!(ev.value, Some(EvidenceValue::Number(1_200_950.0)));
    assert_eq!(ev.threshold.as_deref(), Some("1201000"));
    assert!(fires[0].template.meter);
    r.e.work_order_closed("EL-1", "trips", at(T0 + 3000 * S));
    assert_eq!(r.e.take_dirty().len(), 1);
    let mut again = Vec::new();
    for s in 3000..4000 {
        again.extend(r.offer(2, "trips_total", Value::Int(1_200_000 + s), T0 + s * S));
    }
    // The baseline is the reading at the close (1,202,999): due at 1,203,999, raised at 1,203,949.
    assert_eq!(kinds(&again), ["EL-1/trips:fire"]);
    assert_eq!(
        evidence(&again[0]).value,
        Some(EvidenceValue::Number(1_203_949.0))
    );
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

/// LOW_PRESSURE and a warning level on the same point, whose `for` a reload changes.
fn pressure_rules(warning_for: &str) -> String {
    format!(
        r#"{LOW_PRESSURE}
[[rules]]
id = "pressure-warning"
type = "threshold"
match = {{ device_type = "pump" }}
point = "discharge_pressure_bar"
below = 2.5
for = "{warning_for}"
priority = "normal"
title = "pressure warning at {{asset}}"
"#
    )
}

#[test]
fn a_rebuild_keeps_the_state_of_unchanged_rules_on_unchanged_assets() {
    let mut r = Run::new(&pressure_rules("30s"));
    for pump in [0, 1] {
        assert!(
            r.offer(pump, "discharge_pressure_bar", Value::Float(1.8), T0)
                .is_empty()
        );
    }
    // A reload: `pressure-warning` changes, P-2 moves to another building, P-1 and
    // `low-pressure` stay as they are.
    let mut p2 = (*r.assets[1]).clone();
    p2.building = Some("B".into());
    let assets = vec![r.assets[0].clone(), Arc::new(p2), r.assets[2].clone()];
    let (rules, _) = parse_rules(
        &items("rules.toml", &pressure_rules("40s")),
        &assets,
        "gw1",
        "UTC",
    )
    .unwrap();
    let old = std::mem::replace(&mut r.e, RuleEngine::new(Vec::new(), Vec::new()));
    let (e, rebuilt) = old.rebuild(rules, assets.clone(), at(T0 + 10 * S));
    (r.e, r.assets) = (e, assets);
    assert_eq!(
        rebuilt.carried, 1,
        "only P-1/low-pressure is unchanged on both sides"
    );
    let mut fresh = rebuilt.fresh.clone();
    fresh.sort();
    assert_eq!(
        fresh,
        [
            ("P-1", "pressure-warning"),
            ("P-2", "low-pressure"),
            ("P-2", "pressure-warning")
        ]
        .map(|(a, r)| (a.to_string(), r.to_string()))
    );
    assert!(r.tick(T0 + 10 * S).is_empty());

    // P-1/low-pressure kept its pending delay from T0; the others start at their next sample.
    let t = r.offer(0, "discharge_pressure_bar", Value::Float(1.7), T0 + 30 * S);
    assert_eq!(kinds(&t), ["P-1/low-pressure:fire"]);
    assert!(
        r.offer(1, "discharge_pressure_bar", Value::Float(1.7), T0 + 30 * S)
            .is_empty()
    );
    assert!(
        r.offer(0, "discharge_pressure_bar", Value::Float(1.7), T0 + 60 * S)
            .is_empty()
    );
    let t = r.offer(1, "discharge_pressure_bar", Value::Float(1.7), T0 + 60 * S);
    assert_eq!(kinds(&t), ["P-2/low-pressure:fire"]);
    let t = r.offer(0, "discharge_pressure_bar", Value::Float(1.7), T0 + 70 * S);
    assert_eq!(kinds(&t), ["P-1/pressure-warning:fire"]);
    let t = r.offer(1, "discharge_pressure_bar", Value::Float(1.7), T0 + 70 * S);
    assert_eq!(kinds(&t), ["P-2/pressure-warning:fire"]);
}

#[test]
fn a_rebuild_keeps_the_silence_counted_so_far_and_offline_episodes() {
    const OFFLINE: &str = r#"
[[rules]]
id = "offline"
type = "offline"
after = "60s"
priority = "high"
title = "{asset} offline"
"#;
    let mut r = Run::new(OFFLINE);
    // P-1 is heard of at T0 + 30 s; P-2 never (its silence counts from the start, T0).
    assert!(
        r.offer(0, "discharge_pressure_bar", Value::Float(3.0), T0 + 30 * S)
            .is_empty()
    );
    let rebuild = |r: &mut Run, assets: Vec<Arc<AssetInfo>>, now: i64| {
        let (rules, _) = parse_rules(&items("rules.toml", OFFLINE), &assets, "gw1", "UTC").unwrap();
        let old = std::mem::replace(&mut r.e, RuleEngine::new(Vec::new(), Vec::new()));
        let (e, rebuilt) = old.rebuild(rules, assets.clone(), at(now));
        (r.e, r.assets) = (e, assets);
        rebuilt.carried
    };
    // A reload at T0 + 50 s removes EL-1 and leaves the pumps as they are.
    let pumps = vec![r.assets[0].clone(), r.assets[1].clone()];
    assert_eq!(rebuild(&mut r, pumps.clone(), T0 + 50 * S), 2);
    assert!(r.tick(T0 + 51 * S).is_empty());
    // Not 60 s after the reload: 60 s after the start for P-2, after its last sample for P-1.
    assert_eq!(kinds(&r.tick(T0 + 62 * S)), ["P-2/offline:fire"]);
    assert!(r.tick(T0 + 89 * S).is_empty());
    assert_eq!(kinds(&r.tick(T0 + 90 * S)), ["P-1/offline:fire"]);
    // Another reload while both fire: no second work order, and a sample still clears it.
    assert_eq!(rebuild(&mut r, pumps, T0 + 100 * S), 2);
    assert!(r.tick(T0 + 101 * S).is_empty());
    assert!(r.tick(T0 + 300 * S).is_empty());
    let t = r.offer(0, "discharge_pressure_bar", Value::Float(3.0), T0 + 301 * S);
    assert_eq!(kinds(&t), ["P-1/offline:clear"]);
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

#[test]
fn rules_summary_for_check() {
    let (e, _) = engine(&format!("{LOW_PRESSURE}{METER}"));
    let s: Vec<_> = e.rules().collect();
    assert_eq!(s[0].id, "low-pressure");
    assert_eq!(s[0].type_name, "threshold");
    assert_eq!(s[0].assets.len(), 2);
    assert_eq!(
        s[1].description,
        "every 1000 of trips_total (raised 50 early) -> normal preventive"
    );
    assert_eq!(e.instance_count(), 3);
}

const CALENDAR: &str = r#"
[[rules]]
id = "half-monthly"
type = "calendar"
match = { device_type = "elevator" }
every = "15d"
start = "2025-12-20T08:00:00Z"
lead = "2d"

[[rules]]
id = "quarterly"
type = "calendar"
match = { ids = ["P-1", "EL-1"] }
every = "3mo"
start = "2025-11-30"
lead = "1d"
"#;

fn calendar_fires(e: &mut RuleEngine, from: i64, to: i64, step: i64) -> Vec<(i64, String, String)> {
    let mut out = Vec::new();
    let mut fires = Vec::new();
    let mut t = from;
    while t < to {
        e.tick(at(t), &mut out);
        for tr in out.drain(..) {
            fires.push((
                t,
                kinds(std::slice::from_ref(&tr)).remove(0),
                evidence(&tr).threshold.clone().unwrap(),
            ));
        }
        t += step;
    }
    fires
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

#[test]
fn offer_ignores_bad_indexes() {
    let (mut e, _) = engine(&format!("{LOW_PRESSURE}{METER}{DOOR_FAULTS}"));
    let mut out = Vec::new();
    e.offer(99, 0, &Value::Float(1.0), T0, &mut out);
    e.offer(0, 99, &Value::Float(1.0), T0, &mut out);
    assert!(out.is_empty());
}
