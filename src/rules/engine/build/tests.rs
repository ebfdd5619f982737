//! Building the engine: rules summarised for `check`, and a rebuild on reload that keeps the
//! state of what did not change.

use std::sync::Arc;

use crate::model::Value;
use crate::rules::config::parse_rules;
use crate::rules::config::tests::items;
use crate::rules::engine::RuleEngine;
use crate::rules::engine::tests::*;
use crate::rules::types::AssetInfo;

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
