//! Engine tests: rules from TOML, samples and ticks in, triggers out. The harness here (a
//! [`Run`] of the engine on two pumps and a lift, rules that several tests share) serves the
//! tests of `build`, `timers` and `persist` too; these are the tests of the hot path.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::*;
use crate::rules::config::parse_rules;
use crate::rules::config::tests::{items, lift, pump};
use crate::rules::types::{AssetInfo, EvidenceValue, Trigger, TriggerChange};

pub(super) const S: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z.
pub(super) const T0: i64 = 1_767_225_600 * S;

pub(super) fn engine(toml: &str) -> (RuleEngine, Vec<Arc<AssetInfo>>) {
    let assets = vec![pump("P-1"), pump("P-2"), lift("EL-1")];
    let (rules, _) = parse_rules(&items("rules.toml", toml), &assets, "gw1", "UTC").unwrap();
    (RuleEngine::new(rules, assets.clone()), assets)
}

pub(super) fn pidx(a: &AssetInfo, name: &str) -> usize {
    a.points.iter().position(|p| &*p.name == name).unwrap()
}

pub(super) fn at(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

pub(super) struct Run {
    pub e: RuleEngine,
    pub assets: Vec<Arc<AssetInfo>>,
    out: Vec<Trigger>,
}

impl Run {
    pub fn new(toml: &str) -> Run {
        let (e, assets) = engine(toml);
        Run::of(e, assets)
    }

    /// The rules on these assets (`parse_rules` must accept them).
    pub fn with_assets(toml: &str, assets: Vec<Arc<AssetInfo>>) -> Run {
        let (rules, _) = parse_rules(&items("rules.toml", toml), &assets, "gw1", "UTC").unwrap();
        Run::of(RuleEngine::new(rules, assets.clone()), assets)
    }

    fn of(e: RuleEngine, assets: Vec<Arc<AssetInfo>>) -> Run {
        let mut r = Run {
            e,
            assets,
            out: Vec::new(),
        };
        r.tick(T0);
        r
    }

    pub fn offer(&mut self, asset: usize, point: &str, v: Value, t: i64) -> Vec<Trigger> {
        let p = pidx(&self.assets[asset], point);
        self.e.offer(asset, p, &v, t, &mut self.out);
        std::mem::take(&mut self.out)
    }

    pub fn tick(&mut self, t: i64) -> Vec<Trigger> {
        self.e.tick(at(t), &mut self.out);
        std::mem::take(&mut self.out)
    }
}

pub(super) fn kinds(ts: &[Trigger]) -> Vec<String> {
    ts.iter()
        .map(|t| {
            let k = match &t.change {
                TriggerChange::Fire { .. } => "fire".to_string(),
                TriggerChange::Occurrence { .. } => "occurrence".to_string(),
                TriggerChange::Flapping { flapping } => format!("flapping={flapping}"),
                TriggerChange::Clear { .. } => "clear".to_string(),
                TriggerChange::Done { .. } => "done".to_string(),
                TriggerChange::Affected { evidence } => format!(
                    "affected[{}]",
                    evidence
                        .affected
                        .iter()
                        .map(|a| format!("{}/{}", a.asset, a.rule))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            format!("{}/{}:{k}", t.asset.id, t.rule)
        })
        .collect()
}

pub(super) fn evidence(t: &Trigger) -> &crate::rules::types::Evidence {
    match &t.change {
        TriggerChange::Fire { evidence }
        | TriggerChange::Occurrence { evidence }
        | TriggerChange::Clear { evidence }
        | TriggerChange::Done { evidence }
        | TriggerChange::Affected { evidence } => evidence,
        TriggerChange::Flapping { .. } => panic!("no evidence"),
    }
}

pub(super) const LOW_PRESSURE: &str = r#"
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

pub(super) const OFFLINE_AND_LOW: &str = r#"
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

pub(super) const DOOR_FAULTS: &str = r#"
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

pub(super) const METER: &str = r#"
[[rules]]
id = "trips"
type = "meter"
match = { ids = "EL-1" }
point = "trips_total"
every = 1000
lead = 50
"#;

pub(super) const CALENDAR: &str = r#"
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

pub(super) fn calendar_fires(
    e: &mut RuleEngine,
    from: i64,
    to: i64,
    step: i64,
) -> Vec<(i64, String, String)> {
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
                    TriggerChange::Done { .. } | TriggerChange::Affected { .. } => {
                        prop_assert!(false, "no done_when or holds here");
                    }
                }
            }
            if flapping && firing && got.iter().all(|t| !matches!(t.change, TriggerChange::Flapping { .. })) {
                prop_assert_eq!(occurrences, usize::from(rising));
            }
        }
    }
}

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
fn meter_baseline_from_the_handover_record_is_taken_once() {
    let toml = METER.replace("lead = 50", "lead = 50\nbaseline = \"handover\"");
    let key = || ("EL-1".to_string(), "trips_total".to_string());
    // EL-1 had made 1,199,200 trips at the handover: 800 counted at the first reading, due at
    // 1,200,200, raised 50 early.
    let mut r = Run::new(&toml);
    r.e.set_handover_baselines(HashMap::from([(key(), 1_199_200.0)]));
    let mut fires = r.offer(2, "trips_total", Value::Int(1_200_000), T0);
    // A record made later (handed over at a reload) does not move the baseline taken.
    r.e.set_handover_baselines(HashMap::from([(key(), 1_000_000.0)]));
    for s in 1..300 {
        fires.extend(r.offer(2, "trips_total", Value::Int(1_200_000 + s), T0 + s * S));
    }
    assert_eq!(kinds(&fires), ["EL-1/trips:fire"]);
    let ev = evidence(&fires[0]);
    assert_eq!(ev.value, Some(EvidenceValue::Number(1_200_150.0)));
    assert_eq!(ev.first_value, Some(EvidenceValue::Number(1_199_200.0)));
    assert_eq!(ev.baseline.as_deref(), Some("the handover record"));

    // No record holds EL-1's counter: it counts from its first reading, and says so.
    let mut r = Run::new(&toml);
    let mut fires = Vec::new();
    for s in 0..1000 {
        fires.extend(r.offer(2, "trips_total", Value::Int(1_200_000 + s), T0 + s * S));
    }
    assert_eq!(kinds(&fires), ["EL-1/trips:fire"]);
    let ev = evidence(&fires[0]);
    assert_eq!(ev.value, Some(EvidenceValue::Number(1_200_950.0)));
    assert_eq!(ev.first_value, Some(EvidenceValue::Number(1_200_000.0)));
    assert_eq!(
        ev.baseline.as_deref(),
        Some(
            "the first reading seen: no handover record held this counter yet (or its value was above the reading)"
        )
    );

    // A rule without `baseline = "handover"` ignores the records.
    let mut r = Run::new(METER);
    r.e.set_handover_baselines(HashMap::from([(key(), 1_199_200.0)]));
    let fires = r.offer(2, "trips_total", Value::Int(1_200_000), T0);
    assert!(fires.is_empty());
}

#[test]
fn offer_ignores_bad_indexes() {
    let (mut e, _) = engine(&format!("{LOW_PRESSURE}{METER}{DOOR_FAULTS}"));
    let mut out = Vec::new();
    e.offer(99, 0, &Value::Float(1.0), T0, &mut out);
    e.offer(0, 99, &Value::Float(1.0), T0, &mut out);
    assert!(out.is_empty());
}

/// The hot path walks rule instances, so their size is its speed: a large state kind inline
/// (a calendar's `done_when` progress once made every instance three times larger, and the
/// engine two to three times slower) belongs behind a `Box`.
#[test]
fn rule_instances_stay_small() {
    assert!(
        std::mem::size_of::<super::Instance>() <= 104,
        "Instance is {} bytes",
        std::mem::size_of::<super::Instance>()
    );
    assert!(
        std::mem::size_of::<super::InstState>() <= 72,
        "InstState is {} bytes",
        std::mem::size_of::<super::InstState>()
    );
}
