//! A handover record against the building's state now: what changed since the baseline.
//!
//! Reported, and nothing else (so that each entry is a change someone has to answer for):
//! - counters whose value changed (`from` -> `now`, `delta`; a negative delta is a counter
//!   that was reset or replaced);
//! - work orders open now that were not open in the record (opened), and work orders open in
//!   the record that are no longer open (cleared);
//! - alarm points whose value changed;
//! - gauges whose value now lies outside the range the record observed for them;
//! - assets of the building added since, or gone.
//!
//! Values, states and times that moved within their recorded range are not differences.

use serde::Serialize;
use serde_json::Value;

use super::{AssetRecord, HandoverRecord, OpenWorkOrder};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HandoverDiff {
    /// The record's time, and the state's.
    pub recorded_at: String,
    pub now: String,
    pub counters: Vec<CounterChange>,
    pub work_orders_opened: Vec<WorkOrderChange>,
    pub work_orders_cleared: Vec<WorkOrderChange>,
    pub alarms_changed: Vec<AlarmChange>,
    pub out_of_range: Vec<OutOfRange>,
    pub assets_added: Vec<String>,
    pub assets_gone: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CounterChange {
    pub asset: String,
    pub point: String,
    pub unit: Option<String>,
    pub from: f64,
    pub now: f64,
    pub delta: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkOrderChange {
    pub asset: String,
    pub id: i64,
    pub rule: String,
    pub title: String,
    pub priority: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmChange {
    pub asset: String,
    pub point: String,
    pub from: Value,
    pub now: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutOfRange {
    pub asset: String,
    pub point: String,
    pub unit: Option<String>,
    pub min: f64,
    pub max: f64,
    pub now: f64,
}

impl HandoverDiff {
    /// No change at all.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
            && self.work_orders_opened.is_empty()
            && self.work_orders_cleared.is_empty()
            && self.alarms_changed.is_empty()
            && self.out_of_range.is_empty()
            && self.assets_added.is_empty()
            && self.assets_gone.is_empty()
    }
}

/// Outside `[min, max]` by more than the representation noise of a scaled register (the same
/// register value read back through a text log can differ in its last binary digit).
fn outside(v: f64, min: f64, max: f64) -> bool {
    let slack = |x: f64| 1e-9 * x.abs().max(1.0);
    v < min - slack(min) || v > max + slack(max)
}

fn wo_change(asset: &str, w: &OpenWorkOrder) -> WorkOrderChange {
    WorkOrderChange {
        asset: asset.to_string(),
        id: w.id,
        rule: w.rule.clone(),
        title: w.title.clone(),
        priority: w.priority.clone(),
    }
}

fn one_asset(then: &AssetRecord, now: &AssetRecord, d: &mut HandoverDiff) {
    for c in &then.counters {
        let Some(n) = now.counters.iter().find(|x| x.name == c.name) else {
            continue;
        };
        if let (Some(from), Some(to)) = (c.value.as_f64(), n.value.as_f64())
            && from != to
        {
            d.counters.push(CounterChange {
                asset: then.id.clone(),
                point: c.name.clone(),
                unit: c.unit.clone(),
                from,
                now: to,
                delta: to - from,
            });
        }
    }
    for p in &then.points {
        let Some(n) = now.points.iter().find(|x| x.name == p.name) else {
            continue;
        };
        match p.kind.as_str() {
            "alarm" if !n.value.is_null() && n.value != p.value => {
                d.alarms_changed.push(AlarmChange {
                    asset: then.id.clone(),
                    point: p.name.clone(),
                    from: p.value.clone(),
                    now: n.value.clone(),
                });
            }
            "gauge" => {
                if let (Some(min), Some(max), Some(v)) = (p.min, p.max, n.value.as_f64())
                    && outside(v, min, max)
                {
                    d.out_of_range.push(OutOfRange {
                        asset: then.id.clone(),
                        point: p.name.clone(),
                        unit: p.unit.clone(),
                        min,
                        max,
                        now: v,
                    });
                }
            }
            _ => {}
        }
    }
    for w in &now.open_work_orders {
        if !then.open_work_orders.iter().any(|x| x.id == w.id) {
            d.work_orders_opened.push(wo_change(&now.id, w));
        }
    }
    for w in &then.open_work_orders {
        if !now.open_work_orders.iter().any(|x| x.id == w.id) {
            d.work_orders_cleared.push(wo_change(&then.id, w));
        }
    }
}

/// `then` (a stored record) against `now` (a record of the same building built from the
/// state now; its ranges are not used).
pub fn diff(then: &HandoverRecord, now: &HandoverRecord) -> HandoverDiff {
    let mut d = HandoverDiff {
        recorded_at: then.recorded_at.clone(),
        now: now.recorded_at.clone(),
        counters: Vec::new(),
        work_orders_opened: Vec::new(),
        work_orders_cleared: Vec::new(),
        alarms_changed: Vec::new(),
        out_of_range: Vec::new(),
        assets_added: Vec::new(),
        assets_gone: Vec::new(),
    };
    for a in &then.assets {
        match now.assets.iter().find(|x| x.id == a.id) {
            Some(n) => one_asset(a, n, &mut d),
            None => d.assets_gone.push(a.id.clone()),
        }
    }
    for n in &now.assets {
        if !then.assets.iter().any(|a| a.id == n.id) {
            d.assets_added.push(n.id.clone());
        }
    }
    d
}
