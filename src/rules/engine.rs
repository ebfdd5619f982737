//! The rule engine: samples and clock ticks in, [`Trigger`]s out. Pure, no I/O.
//!
//! Every (asset, rule) pair the configuration matched is an *instance* with its own state.
//! Samples are routed by (asset index, point index) through a flat table built once, so the
//! hot path does no hashing and no allocation unless a trigger is produced: a sample goes only
//! to the instances that watch its point (or use it as their `unless` point).
//!
//! Timers (`for`, `clear_for`, count windows sliding, `offline`, calendar due dates) complete in
//! [`RuleEngine::tick`]. The engine keeps a lower bound of the earliest deadline so a tick with
//! nothing due costs a comparison.
//!
//! Suppression: while an asset's offline rule fires, its other rules (calendar rules excepted:
//! an inspection falls due whether or not the device talks) neither fire nor clear and their
//! pending delays stop; the same while one of a rule's `unless` points holds. Delays restart
//! afterwards.
//!
//! Holds (`unless = { rule, scope }`, see `holds`): while the named rule fires on an asset in
//! scope, the rule is held like a suppressed one; the (asset, rule) pairs that would have fired
//! are listed on the named rule's work order; at the release, delays restart from then.
//!
//! Calendar rules with `done_when` watch its points (see `calendar/done.rs`): a run that
//! completes resolves the rule's open work order, or completes the coming due date early.
//!
//! State is saved per (asset id, rule id) as JSON, so it survives restarts and configuration
//! changes that keep both ids.
//!
//! This file holds the engine's data and the hot path ([`RuleEngine::offer`]); beside it:
//! `build` (the routing table, and [`RuleEngine::rebuild`] on a reload), `emit` (triggers and
//! their evidence), `timers` ([`RuleEngine::tick`]), `holds` (rule-form `unless`), `done`
//! (calendar `done_when`) and `persist` (saved state).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::calendar::CalendarState;
use super::condition::Condition;
use super::config::{Rule, RuleKind};
use super::evidence::{Episode, EpisodePool};
use super::meter::{MeterState, Step};
use super::offline::OfflineState;
use super::state::{CountState, StateMode, Window};
use super::threshold::ThresholdState;
use super::types::{AssetInfo, PointInfo, Trigger, TriggerChange};
use crate::model::{AssetId, Value};

mod build;
mod done;
mod emit;
mod holds;
mod persist;
#[cfg(test)]
mod tests;
mod timers;

const NONE: u32 = u32::MAX;

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Evaluations of a rule whose `unless` point the asset lacks or has not reported yet
    /// (the rule was not suppressed).
    pub unless_unknown: u64,
    /// Evaluations held back by `unless`.
    pub unless_suppressed: u64,
    /// Evaluations held back by a rule-form `unless` (another rule's incident).
    pub unless_held: u64,
    /// Meter readings taken as a register wrap-around, a counter reset, or not trusted (a
    /// replaced device or an implausible jump: nothing counted).
    pub meter_wraps: u64,
    pub meter_resets: u64,
    pub meter_untrusted: u64,
}

/// What [`RuleEngine::rebuild`] carried over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Instances whose state was carried over.
    pub carried: usize,
    /// (asset id, rule id) of the instances that start afresh.
    pub fresh: Vec<(String, String)>,
}

/// What `check` prints of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSummary<'a> {
    pub id: &'a str,
    pub type_name: &'static str,
    pub description: String,
    pub assets: &'a [AssetId],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unless {
    /// The rule has no `unless`.
    Absent,
    /// The asset lacks the point: never suppresses.
    Missing,
    /// Not reported yet: does not suppress.
    Unread,
    Clear,
    Holding,
}

#[derive(Debug, Clone, Copy)]
struct Route {
    instance: u32,
    role: Role,
}

/// What a sample is to the instance it is routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// Point condition `k` of its `unless`.
    Unless(u8),
    /// The `and` point of a calendar rule's `done_when`.
    DoneAnd,
    /// The watched point (a calendar rule's: its `done_when` point).
    Watched,
}

impl Unless {
    /// The state of a rule's point conditions taken together: `n` conditions, those whose
    /// point the asset has (`present`), has reported (`read`) and that hold now (`hold`).
    fn of(n: u8, present: u8, read: u8, hold: u8) -> Unless {
        let all = if n >= 8 { u8::MAX } else { (1u8 << n) - 1 };
        if n == 0 {
            Unless::Absent
        } else if hold != 0 {
            Unless::Holding
        } else if read & all == all {
            Unless::Clear
        } else if present & !read != 0 {
            Unless::Unread
        } else {
            Unless::Missing
        }
    }
}

/// The state of one rule on one asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "state", rename_all = "snake_case")]
enum InstState {
    Threshold(ThresholdState),
    /// A state rule with `equals` (and `for`).
    Hold(Condition),
    /// A state rule on an event point without a count window: each matching event fires.
    Event,
    Count(CountState),
    Meter(MeterState),
    Calendar(CalendarState),
    Offline(OfflineState),
}

impl InstState {
    fn same_variant(&self, other: &InstState) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

struct Instance {
    rule: u32,
    asset: u32,
    /// The watched point's index in the asset's profile (`NONE` for calendar and offline).
    point: u32,
    /// The watched point is an `event` point.
    event: bool,
    /// Its point conditions of `unless` taken together.
    unless: Unless,
    /// Per point condition of `unless` (bit k: condition k): how many, whose point the asset
    /// has, that were read, that hold now.
    unless_n: u8,
    unless_present: u8,
    unless_read: u8,
    unless_hold: u8,
    /// Holds (rule-form `unless`) now active on it.
    held: u16,
    /// Held, and already listed as affected during this hold.
    affected: bool,
    /// Named by a rule-form `unless`: its fires and clears move holds.
    inhibits: bool,
    /// Its condition is active (an inhibitor's fired and not cleared).
    active: bool,
    dirty: bool,
    /// Meter rules: usage when the state was last marked dirty (not saved).
    marked_usage: f64,
    state: InstState,
}

/// The rule engine. See the module documentation.
pub struct RuleEngine {
    rules: Vec<Rule>,
    assets: Vec<Arc<AssetInfo>>,
    asset_index: HashMap<AssetId, usize>,
    /// Per asset: the index of its first point in `route_start` (length: assets + 1).
    point_base: Vec<u32>,
    /// Per (asset, point): the first route (length: all points + 1).
    route_start: Vec<u32>,
    routes: Vec<Route>,
    /// Per asset: its first instance; an asset's instances are contiguous, offline rules first.
    inst_start: Vec<u32>,
    instances: Vec<Instance>,
    /// Per asset: the last good sample (ns), `i64::MIN` for none.
    last_seen: Vec<i64>,
    /// Per asset: when silence started to count (engine start, less silence carried over a
    /// restart), `i64::MIN` before the first tick.
    counting_from: Vec<i64>,
    carried_silence: Vec<i64>,
    /// Per asset: its offline rules now firing.
    offline_firing: Vec<u16>,
    dirty: Vec<u32>,
    /// No timer is due before this (a lower bound).
    next_deadline: i64,
    /// The latest time seen (tick or sample), for saved state.
    clock_ns: i64,
    started: bool,
    stats: EngineStats,
    pool: EpisodePool,
    /// Rule-form `unless`: who holds whom.
    holds: holds::Holds,
    /// `baseline = "handover"`: (asset, counter point) -> its value in the newest handover
    /// record holding it (see [`Self::set_handover_baselines`]).
    handover_baselines: HashMap<(String, String), f64>,
}

impl RuleEngine {
    /// The counters of the handover records, for meter rules with `baseline = "handover"`:
    /// (asset, counter point) -> its value in the newest record that holds it. Used at a meter's
    /// first reading on an asset only; a baseline already taken does not move.
    pub fn set_handover_baselines(&mut self, baselines: HashMap<(String, String), f64>) {
        self.handover_baselines = baselines;
    }

    /// (asset id, rule id) of every instance.
    pub fn instance_keys(&self) -> Vec<(String, String)> {
        (0..self.instances.len()).map(|i| self.key(i)).collect()
    }

    /// The rules, for `check`: id, type, condition and the assets each runs on.
    pub fn rules(&self) -> impl Iterator<Item = RuleSummary<'_>> {
        self.rules.iter().map(|r| RuleSummary {
            id: &r.id,
            type_name: r.type_name(),
            description: r.describe(),
            assets: &r.assets,
        })
    }

    /// The validated rules.
    pub fn rule_list(&self) -> &[Rule] {
        &self.rules
    }

    /// Rule instances (matched asset x rule).
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    pub fn is_meter_rule(&self, rule: &str) -> bool {
        self.rules
            .iter()
            .any(|r| &*r.id == rule && matches!(r.kind, RuleKind::Meter(_)))
    }

    /// Hot path. `asset`/`point` are indexes into the assets given to [`RuleEngine::new`] and
    /// their `points`. Only good samples are offered. `at_ns`: sample time, ns since epoch.
    #[inline]
    pub fn offer(
        &mut self,
        asset: usize,
        point: usize,
        value: &Value,
        at_ns: i64,
        out: &mut Vec<Trigger>,
    ) {
        let (Some(&base), Some(&end)) =
            (self.point_base.get(asset), self.point_base.get(asset + 1))
        else {
            return;
        };
        let gp = base as usize + point;
        if gp >= end as usize {
            return;
        }
        if at_ns > self.clock_ns {
            self.clock_ns = at_ns;
        }
        if at_ns > self.last_seen[asset] {
            self.last_seen[asset] = at_ns;
        }
        if self.offline_firing[asset] != 0 {
            self.back_online(asset, at_ns, out);
        }
        let (start, stop) = (
            self.route_start[gp] as usize,
            self.route_start[gp + 1] as usize,
        );
        for r in start..stop {
            let route = self.routes[r];
            match route.role {
                Role::Watched => self.evaluate(route.instance as usize, value, at_ns, out),
                Role::Unless(k) => self.unless_sample(route.instance as usize, k, value, at_ns),
                Role::DoneAnd => self.done_and_sample(route.instance as usize, value, at_ns, out),
            }
        }
    }

    #[inline]
    fn evaluate(&mut self, i: usize, value: &Value, t: i64, out: &mut Vec<Trigger>) {
        let inst = &mut self.instances[i];
        let rule = &self.rules[inst.rule as usize];
        // The asset's offline rules cleared before the routes ran (`offer`), so only `unless`
        // can suppress here: a point condition, or a hold.
        let held = inst.held != 0;
        let suppressed = match inst.unless {
            _ if held => {
                self.stats.unless_held += 1;
                true
            }
            Unless::Absent | Unless::Clear => false,
            Unless::Holding => {
                self.stats.unless_suppressed += 1;
                true
            }
            Unless::Missing | Unless::Unread => {
                self.stats.unless_unknown += 1;
                false
            }
        };
        match (&rule.kind, &mut inst.state) {
            (RuleKind::Threshold(spec), InstState::Threshold(st)) => {
                let Some(v) = value.as_f64().filter(|v| !v.is_nan()) else {
                    return;
                };
                let raw = spec.raw(st, v);
                if suppressed {
                    let would = raw && !st.cond.firing;
                    if st.cond.observe_suppressed(raw, &mut self.pool) {
                        self.mark_dirty(i);
                    }
                    if held && would {
                        self.note_affected(i, t, out);
                    }
                    return;
                }
                let o = st.cond.evaluate(
                    raw,
                    t,
                    value,
                    spec.delays,
                    rule.flap.as_ref(),
                    &mut self.pool,
                );
                if o.dirty || o.any_trigger() {
                    self.after_condition(i, o, t, out);
                }
            }
            (RuleKind::State(spec), InstState::Hold(cond)) => {
                let raw = spec.matches(value);
                if suppressed {
                    let would = raw && !cond.firing;
                    if cond.observe_suppressed(raw, &mut self.pool) {
                        self.mark_dirty(i);
                    }
                    if held && would {
                        self.note_affected(i, t, out);
                    }
                    return;
                }
                let StateMode::Hold(delays) = spec.mode else {
                    return;
                };
                let o = cond.evaluate(raw, t, value, delays, rule.flap.as_ref(), &mut self.pool);
                if o.dirty || o.any_trigger() {
                    self.after_condition(i, o, t, out);
                }
            }
            (RuleKind::State(spec), InstState::Event) if held && spec.matches(value) => {
                self.note_affected(i, t, out);
            }
            (RuleKind::State(spec), InstState::Event) if !suppressed && spec.matches(value) => {
                let evidence = Episode::new(t, value).evidence(
                    Some(&spec.point),
                    self.unit(i),
                    Some(spec.threshold_text()),
                );
                self.emit(i, t, TriggerChange::Fire { evidence }, None, out);
            }
            (RuleKind::State(spec), InstState::Count(st)) => {
                let StateMode::Count { count, within_ns } = spec.mode else {
                    return;
                };
                let matches = spec.matches(value);
                let w = Window { count, within_ns };
                let o = st.sample(matches, inst.event, t, value, w, suppressed);
                if o.dirty || o.fire || o.occurrence || o.clear {
                    self.after_count(i, o, t, Some(value), out);
                }
                if held && matches {
                    self.note_affected(i, t, out);
                }
            }
            (RuleKind::Meter(spec), InstState::Meter(st)) => {
                let Some(r) = value.as_f64() else {
                    return;
                };
                let handover = if spec.baseline_from_handover && st.last.is_none() {
                    let asset = self.assets[inst.asset as usize].id.to_string();
                    self.handover_baselines
                        .get(&(asset, spec.point.to_string()))
                        .copied()
                } else {
                    None
                };
                let step = st.sample_with(spec, r, t, handover);
                let mut dirty = match step {
                    Step::Counted | Step::Stale => false,
                    Step::First => true,
                    Step::Wrapped => {
                        self.stats.meter_wraps += 1;
                        true
                    }
                    Step::Reset => {
                        self.stats.meter_resets += 1;
                        true
                    }
                    Step::Untrusted => {
                        self.stats.meter_untrusted += 1;
                        true
                    }
                };
                // Progress is saved every 1 % of the interval, so a crash loses little.
                dirty |= st.usage - inst.marked_usage >= spec.every * 0.01;
                let would = st.due(spec);
                let due = st.due(spec) && !suppressed;
                if dirty {
                    inst.marked_usage = st.usage;
                    self.mark_dirty(i);
                }
                if due {
                    self.fire_meter(i, t, out);
                } else if held && would {
                    self.note_affected(i, t, out);
                }
            }
            (RuleKind::Calendar(_), InstState::Calendar(_)) => self.done_sample(i, value, t, out),
            _ => {}
        }
    }

    /// A sample of point condition `k` of an instance's `unless`.
    #[cold]
    fn unless_sample(&mut self, i: usize, k: u8, value: &Value, t: i64) {
        let inst = &mut self.instances[i];
        let Some(u) = self.rules[inst.rule as usize]
            .point_unless()
            .nth(usize::from(k))
        else {
            return;
        };
        let bit = 1u8 << k;
        let (read, hold) = (inst.unless_read, inst.unless_hold);
        inst.unless_read |= bit;
        if u.equals.matches(value) {
            inst.unless_hold |= bit;
        } else {
            inst.unless_hold &= !bit;
        }
        if (read, hold) == (inst.unless_read, inst.unless_hold) {
            return;
        }
        let was = inst.unless;
        let now = Unless::of(
            inst.unless_n,
            inst.unless_present,
            inst.unless_read,
            inst.unless_hold,
        );
        inst.unless = now;
        let held = inst.held != 0;
        self.mark_dirty(i);
        if was == now || held {
            // A hold keeps it suspended; its release resumes it.
            return;
        }
        if now == Unless::Holding {
            if let Some(c) = self.condition_mut(i) {
                c.suspend();
            }
        } else if was == Unless::Holding {
            // Delays restart now; meter and calendar rules held back get their turn at the
            // next tick.
            if let Some(c) = self.condition_mut(i) {
                c.resume(t);
            }
            self.next_deadline = i64::MIN;
        }
    }

    /// The watched point's unit on this instance's asset.
    fn unit(&self, i: usize) -> Option<&str> {
        self.point_info(i).and_then(|p| p.unit.as_deref())
    }

    fn point_info(&self, i: usize) -> Option<&PointInfo> {
        let inst = &self.instances[i];
        self.assets[inst.asset as usize]
            .points
            .get(inst.point as usize)
    }

    fn mark_dirty(&mut self, i: usize) {
        let inst = &mut self.instances[i];
        if !inst.dirty {
            inst.dirty = true;
            self.dirty.push(i as u32);
        }
    }

    fn note_deadline(&mut self, d: Option<i64>) {
        if let Some(d) = d
            && d < self.next_deadline
        {
            self.next_deadline = d;
        }
    }

    fn condition_mut(&mut self, i: usize) -> Option<&mut Condition> {
        match &mut self.instances[i].state {
            InstState::Threshold(st) => Some(&mut st.cond),
            InstState::Hold(c) => Some(c),
            _ => None,
        }
    }

    fn find(&self, asset: &str, rule: &str) -> Option<usize> {
        let a = *self.asset_index.get(asset)?;
        (self.inst_start[a] as usize..self.inst_start[a + 1] as usize)
            .find(|&i| &*self.rules[self.instances[i].rule as usize].id == rule)
    }

    fn key(&self, i: usize) -> (String, String) {
        let inst = &self.instances[i];
        (
            self.assets[inst.asset as usize].id.to_string(),
            self.rules[inst.rule as usize].id.to_string(),
        )
    }
}
