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
//! pending delays stop; the same while a rule's `unless` point holds. Delays restart afterwards.
//!
//! State is saved per (asset id, rule id) as JSON, so it survives restarts and configuration
//! changes that keep both ids.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::calendar::CalendarState;
use super::condition::{Condition, Outcome};
use super::config::{Rule, RuleKind};
use super::evidence::{Episode, EpisodePool, MAX_READINGS, evidence_value, reading};
use super::meter::{MeterState, Step};
use super::offline::{OfflineState, silent_since};
use super::state::{CountOutcome, CountState, StateMode, Window};
use super::template::{RenderContext, fmt_num};
use super::threshold::ThresholdState;
use super::types::{
    AssetInfo, Evidence, EvidenceValue, PointInfo, Trigger, TriggerChange, WorkOrderTemplate,
};
use crate::model::{AssetId, Value};
use crate::profile::PointKind;

const NONE: u32 = u32::MAX;

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Evaluations of a rule whose `unless` point the asset lacks or has not reported yet
    /// (the rule was not suppressed).
    pub unless_unknown: u64,
    /// Evaluations held back by `unless`.
    pub unless_suppressed: u64,
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
    /// The sample is the instance's `unless` point, not its watched point.
    unless: bool,
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

/// Saved state of one instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    #[serde(flatten)]
    state: InstState,
    /// The `unless` point held (`true`) or not (`false`) at the last sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unless: Option<bool>,
}

struct Instance {
    rule: u32,
    asset: u32,
    /// The watched point's index in the asset's profile (`NONE` for calendar and offline).
    point: u32,
    /// The watched point is an `event` point.
    event: bool,
    unless: Unless,
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
}

impl RuleEngine {
    /// Builds the routing table and one instance per (matched asset, rule). `assets` are the
    /// assets samples are offered for, by index; a rule's asset missing from them is ignored.
    pub fn new(rules: Vec<Rule>, assets: Vec<Arc<AssetInfo>>) -> Self {
        let asset_index: HashMap<AssetId, usize> = assets
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        let mut point_base = Vec::with_capacity(assets.len() + 1);
        let mut total = 0u32;
        for a in &assets {
            point_base.push(total);
            total += a.points.len() as u32;
        }
        point_base.push(total);

        // Offline rules first, so a tick sees an asset go offline before its other rules.
        let mut order: Vec<usize> = (0..rules.len()).collect();
        order.sort_by_key(|&r| !matches!(rules[r].kind, RuleKind::Offline(_)));
        let members: Vec<HashSet<&str>> = rules
            .iter()
            .map(|r| r.assets.iter().map(|a| &**a).collect())
            .collect();

        let mut per_point: Vec<Vec<Route>> = vec![Vec::new(); total as usize];
        let mut instances = Vec::new();
        let mut inst_start = Vec::with_capacity(assets.len() + 1);
        for (ai, asset) in assets.iter().enumerate() {
            inst_start.push(instances.len() as u32);
            let find = |name: &str| asset.points.iter().position(|p| &*p.name == name);
            for &ri in &order {
                let rule = &rules[ri];
                if !members[ri].contains(&*asset.id) {
                    continue;
                }
                let point = match rule.point() {
                    Some(name) => match find(name) {
                        Some(p) => p as u32,
                        None => continue,
                    },
                    None => NONE,
                };
                let event = point != NONE && asset.points[point as usize].kind == PointKind::Event;
                let state = match &rule.kind {
                    RuleKind::Threshold(_) => InstState::Threshold(ThresholdState::default()),
                    RuleKind::State(s) => match s.mode {
                        StateMode::Count { .. } => InstState::Count(CountState::default()),
                        StateMode::Hold(_) if event => InstState::Event,
                        StateMode::Hold(_) => InstState::Hold(Condition::default()),
                    },
                    RuleKind::Meter(_) => InstState::Meter(MeterState::default()),
                    RuleKind::Calendar(_) => InstState::Calendar(CalendarState::default()),
                    RuleKind::Offline(_) => InstState::Offline(OfflineState::default()),
                };
                let idx = instances.len() as u32;
                let base = point_base[ai] as usize;
                let unless = match &rule.unless {
                    None => Unless::Absent,
                    Some(u) => match find(&u.point) {
                        Some(p) => {
                            per_point[base + p].push(Route {
                                instance: idx,
                                unless: true,
                            });
                            Unless::Unread
                        }
                        None => Unless::Missing,
                    },
                };
                if point != NONE {
                    per_point[base + point as usize].push(Route {
                        instance: idx,
                        unless: false,
                    });
                }
                instances.push(Instance {
                    rule: ri as u32,
                    asset: ai as u32,
                    point,
                    event,
                    unless,
                    dirty: false,
                    marked_usage: 0.0,
                    state,
                });
            }
        }
        inst_start.push(instances.len() as u32);

        let mut route_start = Vec::with_capacity(total as usize + 1);
        let mut routes = Vec::new();
        for mut list in per_point {
            route_start.push(routes.len() as u32);
            // `unless` first: a sample that is both sees suppression up to date.
            list.sort_by_key(|r| !r.unless);
            routes.extend(list);
        }
        route_start.push(routes.len() as u32);

        let n = assets.len();
        RuleEngine {
            rules,
            assets,
            asset_index,
            point_base,
            route_start,
            routes,
            inst_start,
            instances,
            last_seen: vec![i64::MIN; n],
            counting_from: vec![i64::MIN; n],
            carried_silence: vec![0; n],
            offline_firing: vec![0; n],
            dirty: Vec::new(),
            next_deadline: i64::MIN,
            clock_ns: i64::MIN,
            started: false,
            stats: EngineStats::default(),
            pool: EpisodePool::default(),
        }
    }

    /// The engine of a new configuration (a reload), with this one's state carried over for
    /// every (asset, rule) whose rule is unchanged ([`Rule::same_definition`]) and whose asset
    /// is unchanged (equal [`AssetInfo`]): pending delays, count windows, meter baselines, flap
    /// history, offline and `unless` state. An unchanged asset also keeps its last good sample
    /// and the silence counted so far. New and changed rules, and the rules of new and changed
    /// assets, start afresh. The counters carry over. Call it between two ticks, after
    /// [`Self::take_dirty`].
    pub fn rebuild(
        mut self,
        rules: Vec<Rule>,
        assets: Vec<Arc<AssetInfo>>,
        now: DateTime<Utc>,
    ) -> (RuleEngine, Rebuilt) {
        let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        let mut next = RuleEngine::new(rules, assets);
        // Per new asset: the old one, when unchanged.
        let same_asset: Vec<Option<usize>> = next
            .assets
            .iter()
            .map(|a| {
                self.asset_index
                    .get(&a.id)
                    .copied()
                    .filter(|&old| *self.assets[old] == **a)
            })
            .collect();
        let same_rule: Vec<bool> = next
            .rules
            .iter()
            .map(|r| {
                self.rules
                    .iter()
                    .any(|o| o.id == r.id && o.same_definition(r))
            })
            .collect();
        for (a, old) in same_asset.iter().enumerate() {
            let Some(old) = *old else { continue };
            next.last_seen[a] = self.last_seen[old];
            // The first tick counts silence from then, less what this engine had counted.
            next.carried_silence[a] = if self.started {
                now_ns.saturating_sub(self.counting_from[old]).max(0)
            } else {
                self.carried_silence[old]
            };
        }
        let mut carried = vec![false; next.instances.len()];
        for (i, done) in carried.iter_mut().enumerate() {
            let (a, r) = (
                next.instances[i].asset as usize,
                next.instances[i].rule as usize,
            );
            let Some(old_asset) = same_asset[a] else {
                continue;
            };
            if !same_rule[r] {
                continue;
            }
            let Some(old) = self.find(&self.assets[old_asset].id, &next.rules[r].id) else {
                continue;
            };
            if !self.instances[old]
                .state
                .same_variant(&next.instances[i].state)
            {
                continue;
            }
            let from = &mut self.instances[old];
            let to = &mut next.instances[i];
            to.state = std::mem::replace(&mut from.state, InstState::Event);
            to.unless = from.unless;
            to.marked_usage = from.marked_usage;
            if let InstState::Offline(st) = &to.state
                && st.firing
            {
                next.offline_firing[a] += 1;
            }
            *done = true;
        }
        next.clock_ns = self.clock_ns;
        next.stats = self.stats;
        next.pool = std::mem::take(&mut self.pool);
        let fresh = (0..next.instances.len())
            .filter(|&i| !carried[i])
            .map(|i| next.key(i))
            .collect();
        let carried = carried.iter().filter(|&&c| c).count();
        (next, Rebuilt { carried, fresh })
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
            if route.unless {
                self.unless_sample(route.instance as usize, value, at_ns);
            } else {
                self.evaluate(route.instance as usize, value, at_ns, out);
            }
        }
    }

    #[inline]
    fn evaluate(&mut self, i: usize, value: &Value, t: i64, out: &mut Vec<Trigger>) {
        let inst = &mut self.instances[i];
        let rule = &self.rules[inst.rule as usize];
        // The asset's offline rules cleared before the routes ran (`offer`), so only `unless`
        // can suppress here.
        let suppressed = match inst.unless {
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
                    if st.cond.observe_suppressed(raw, &mut self.pool) {
                        self.mark_dirty(i);
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
                    if cond.observe_suppressed(raw, &mut self.pool) {
                        self.mark_dirty(i);
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
            }
            (RuleKind::Meter(spec), InstState::Meter(st)) => {
                let Some(r) = value.as_f64() else {
                    return;
                };
                let step = st.sample(spec, r, t);
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
                let due = st.due(spec) && !suppressed;
                if dirty {
                    inst.marked_usage = st.usage;
                    self.mark_dirty(i);
                }
                if due {
                    self.fire_meter(i, t, out);
                }
            }
            _ => {}
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

    /// Builds and pushes a trigger. `shown`: what to render for a Flapping trigger.
    fn emit(
        &self,
        i: usize,
        at_ns: i64,
        change: TriggerChange,
        shown: Option<&Evidence>,
        out: &mut Vec<Trigger>,
    ) {
        let inst = &self.instances[i];
        let rule = &self.rules[inst.rule as usize];
        let asset = &self.assets[inst.asset as usize];
        let ev = match &change {
            TriggerChange::Fire { evidence }
            | TriggerChange::Occurrence { evidence }
            | TriggerChange::Clear { evidence } => Some(evidence),
            TriggerChange::Flapping { .. } => shown,
        };
        let value = ev.and_then(|e| e.value.as_ref()).map(value_text);
        let cx = RenderContext {
            rule: &rule.id,
            gateway: &rule.gateway,
            point: ev.and_then(|e| e.point.as_deref()),
            value: value.as_deref(),
            unit: ev.and_then(|e| e.unit.as_deref()),
            threshold: ev.and_then(|e| e.threshold.as_deref()),
        };
        out.push(Trigger {
            asset: asset.clone(),
            rule: rule.id.clone(),
            at: DateTime::from_timestamp_nanos(at_ns),
            template: WorkOrderTemplate {
                kind: rule.work_order,
                priority: rule.priority,
                title: rule.title.render(asset, &cx),
                description: rule.description.as_ref().map(|d| d.render(asset, &cx)),
                auto_resolve: rule.auto_resolve,
                meter: matches!(rule.kind, RuleKind::Meter(_)),
            },
            change,
        });
    }

    /// Emits what a threshold or held-state condition produced, in order.
    #[cold]
    fn after_condition(&mut self, i: usize, o: Outcome, at_ns: i64, out: &mut Vec<Trigger>) {
        if o.dirty || o.any_trigger() {
            self.mark_dirty(i);
        }
        let inst = &self.instances[i];
        let rule = &self.rules[inst.rule as usize];
        let (threshold, delays) = match (&rule.kind, &inst.state) {
            (RuleKind::Threshold(spec), InstState::Threshold(st)) => {
                (spec.limit_text(st.side), spec.delays)
            }
            (RuleKind::State(spec), InstState::Hold(_)) => match spec.mode {
                StateMode::Hold(d) => (spec.threshold_text(), d),
                StateMode::Count { .. } => return,
            },
            _ => return,
        };
        let point = rule.point().cloned();
        let unit = self.unit(i).map(str::to_string);
        let evidence = |engine: &mut RuleEngine| -> Evidence {
            match engine.condition_mut(i).and_then(Condition::episode_mut) {
                Some(e) => e.evidence(point.as_deref(), unit.as_deref(), Some(threshold.clone())),
                None => Evidence {
                    point: point.as_deref().map(str::to_string),
                    unit: unit.clone(),
                    threshold: Some(threshold.clone()),
                    ..Evidence::default()
                },
            }
        };
        if o.fire {
            let ev = evidence(self);
            self.emit(i, at_ns, TriggerChange::Fire { evidence: ev }, None, out);
        }
        if o.occurrence {
            let ev = evidence(self);
            self.emit(
                i,
                at_ns,
                TriggerChange::Occurrence { evidence: ev },
                None,
                out,
            );
        }
        if let Some(flapping) = o.flapping {
            let shown = self
                .condition_mut(i)
                .and_then(Condition::episode_mut)
                .map(|e| Evidence {
                    point: point.as_deref().map(str::to_string),
                    value: Some(e.last.clone()),
                    unit: unit.clone(),
                    threshold: Some(threshold.clone()),
                    ..Evidence::default()
                });
            self.emit(
                i,
                at_ns,
                TriggerChange::Flapping { flapping },
                shown.as_ref(),
                out,
            );
        }
        if o.clear {
            let ev = evidence(self);
            let mut pool = std::mem::take(&mut self.pool);
            if let Some(c) = self.condition_mut(i) {
                c.end_episode(&mut pool);
            }
            self.pool = pool;
            self.emit(i, at_ns, TriggerChange::Clear { evidence: ev }, None, out);
        }
        let d = self.condition_mut(i).and_then(|c| c.deadline(delays));
        self.note_deadline(d);
    }

    fn condition_mut(&mut self, i: usize) -> Option<&mut Condition> {
        match &mut self.instances[i].state {
            InstState::Threshold(st) => Some(&mut st.cond),
            InstState::Hold(c) => Some(c),
            _ => None,
        }
    }

    #[cold]
    fn after_count(
        &mut self,
        i: usize,
        o: CountOutcome,
        at_ns: i64,
        value: Option<&Value>,
        out: &mut Vec<Trigger>,
    ) {
        self.mark_dirty(i);
        let inst = &self.instances[i];
        let rule = &self.rules[inst.rule as usize];
        let (RuleKind::State(spec), InstState::Count(st)) = (&rule.kind, &inst.state) else {
            return;
        };
        let StateMode::Count { within_ns, .. } = spec.mode else {
            return;
        };
        let point = Some(spec.point.to_string());
        let unit = self.unit(i).map(str::to_string);
        let threshold = Some(spec.threshold_text());
        let current = value
            .map(evidence_value)
            .or_else(|| st.entries.back().map(|(_, v)| v.clone()));
        let numbers = st.entries.iter().filter_map(|(_, v)| match v {
            EvidenceValue::Number(n) => Some(*n),
            EvidenceValue::Bool(b) => Some(f64::from(u8::from(*b))),
            EvidenceValue::Text(_) => None,
        });
        let (min, max) = numbers.fold((None, None), |(lo, hi): (Option<f64>, Option<f64>), n| {
            (
                Some(lo.map_or(n, |m| m.min(n))),
                Some(hi.map_or(n, |m| m.max(n))),
            )
        });
        let base = Evidence {
            point,
            value: current.clone(),
            unit,
            threshold,
            first_value: st.entries.front().map(|(_, v)| v.clone()),
            last_value: current,
            min,
            max,
            readings: Vec::new(),
        };
        let entries = |n: usize| {
            st.entries
                .iter()
                .skip(st.entries.len().saturating_sub(n.min(MAX_READINGS)))
                .map(|(t, v)| reading(*t, v.clone()))
                .collect::<Vec<_>>()
        };
        let mut triggers = Vec::new();
        if o.fire {
            triggers.push(TriggerChange::Fire {
                evidence: Evidence {
                    readings: entries(st.entries.len()),
                    ..base.clone()
                },
            });
        }
        if o.occurrence {
            triggers.push(TriggerChange::Occurrence {
                evidence: Evidence {
                    readings: entries(1),
                    ..base.clone()
                },
            });
        }
        if o.clear {
            triggers.push(TriggerChange::Clear { evidence: base });
        }
        let d = st.deadline(within_ns);
        for change in triggers {
            self.emit(i, at_ns, change, None, out);
        }
        self.note_deadline(d);
    }

    #[cold]
    fn fire_meter(&mut self, i: usize, at_ns: i64, out: &mut Vec<Trigger>) {
        let unit = self.unit(i).map(str::to_string);
        let inst = &mut self.instances[i];
        let rule = &self.rules[inst.rule as usize];
        let (RuleKind::Meter(spec), InstState::Meter(st)) = (&rule.kind, &mut inst.state) else {
            return;
        };
        st.fired = true;
        let Some((r, t)) = st.last else {
            return;
        };
        let evidence = Evidence {
            point: Some(spec.point.to_string()),
            value: Some(EvidenceValue::Number(r)),
            unit,
            threshold: st.due_reading(spec).map(fmt_num),
            first_value: st.baseline.map(EvidenceValue::Number),
            last_value: Some(EvidenceValue::Number(r)),
            min: None,
            max: None,
            readings: vec![reading(t, EvidenceValue::Number(r))],
        };
        inst.marked_usage = st.usage;
        self.mark_dirty(i);
        self.emit(i, at_ns, TriggerChange::Fire { evidence }, None, out);
    }

    /// A sample of an instance's `unless` point.
    #[cold]
    fn unless_sample(&mut self, i: usize, value: &Value, t: i64) {
        let inst = &mut self.instances[i];
        let Some(u) = &self.rules[inst.rule as usize].unless else {
            return;
        };
        let holding = u.equals.matches(value);
        let was = inst.unless;
        let now = if holding {
            Unless::Holding
        } else {
            Unless::Clear
        };
        if was == now {
            return;
        }
        inst.unless = now;
        if holding {
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
        self.mark_dirty(i);
    }

    /// A good sample from an asset whose offline rule fires: it clears.
    #[cold]
    fn back_online(&mut self, asset: usize, at_ns: i64, out: &mut Vec<Trigger>) {
        let (s, e) = (
            self.inst_start[asset] as usize,
            self.inst_start[asset + 1] as usize,
        );
        for i in s..e {
            let rule = &self.rules[self.instances[i].rule as usize];
            let RuleKind::Offline(spec) = &rule.kind else {
                continue;
            };
            let after = spec.after_ns;
            let threshold = spec.threshold_text();
            let InstState::Offline(st) = &mut self.instances[i].state else {
                continue;
            };
            if !st.firing {
                continue;
            }
            st.firing = false;
            self.offline_firing[asset] -= 1;
            self.mark_dirty(i);
            let evidence = Evidence {
                value: Some(EvidenceValue::Text(
                    DateTime::from_timestamp_nanos(at_ns).to_rfc3339(),
                )),
                threshold: Some(threshold),
                ..Evidence::default()
            };
            self.emit(i, at_ns, TriggerChange::Clear { evidence }, None, out);
            self.note_deadline(Some(at_ns.saturating_add(after)));
        }
    }

    /// Timers: pending `for`/`clear_for` delays that elapsed without a contrary sample, count
    /// windows that slid past their entries, `offline` (`after` passed with no good sample),
    /// calendar due dates, meter rules held back by `unless`. Call about once a second.
    pub fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Trigger>) {
        let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        if now_ns > self.clock_ns {
            self.clock_ns = now_ns;
        }
        if !self.started {
            self.started = true;
            for a in 0..self.assets.len() {
                self.counting_from[a] = now_ns.saturating_sub(self.carried_silence[a]);
            }
            self.next_deadline = i64::MIN;
        }
        if now_ns < self.next_deadline {
            return;
        }
        let mut next = i64::MAX;
        for a in 0..self.assets.len() {
            let (s, e) = (self.inst_start[a] as usize, self.inst_start[a + 1] as usize);
            for i in s..e {
                if let Some(d) = self.tick_instance(a, i, now_ns, out) {
                    next = next.min(d);
                }
            }
        }
        // A deadline set while ticking (by `emit` paths) is already in `next`.
        self.next_deadline = next;
    }

    /// One instance at a tick; returns its next deadline.
    fn tick_instance(
        &mut self,
        a: usize,
        i: usize,
        now: i64,
        out: &mut Vec<Trigger>,
    ) -> Option<i64> {
        let offline = self.offline_firing[a] != 0;
        let inst = &mut self.instances[i];
        let rule = &self.rules[inst.rule as usize];
        let held = inst.unless == Unless::Holding;
        match (&rule.kind, &mut inst.state) {
            (RuleKind::Offline(spec), InstState::Offline(st)) => {
                if st.firing {
                    return None;
                }
                let since = silent_since(self.last_seen[a], self.counting_from[a]);
                let deadline = since.saturating_add(spec.after_ns);
                if held {
                    // The end of `unless` forces a scan.
                    return None;
                }
                if now < deadline {
                    return Some(deadline);
                }
                st.firing = true;
                self.offline_firing[a] += 1;
                let last = self.last_seen[a];
                let evidence = Evidence {
                    value: (last != i64::MIN).then(|| {
                        EvidenceValue::Text(DateTime::from_timestamp_nanos(last).to_rfc3339())
                    }),
                    threshold: Some(spec.threshold_text()),
                    ..Evidence::default()
                };
                self.mark_dirty(i);
                self.emit(i, now, TriggerChange::Fire { evidence }, None, out);
                self.suspend_asset(a);
                None
            }
            (RuleKind::Calendar(spec), InstState::Calendar(st)) => {
                let (due, dirty) = st.tick(spec, now, held);
                let deadline = if held { None } else { st.deadline(spec) };
                let due_text = due.map(|d| spec.format(d));
                if dirty {
                    self.mark_dirty(i);
                }
                if let Some(due) = due_text {
                    let evidence = Evidence {
                        threshold: Some(due),
                        ..Evidence::default()
                    };
                    self.emit(i, now, TriggerChange::Fire { evidence }, None, out);
                }
                deadline
            }
            _ if offline || held => None,
            (RuleKind::Threshold(spec), InstState::Threshold(st)) => {
                let delays = spec.delays;
                let o = st.cond.tick(now, delays);
                let d = st.cond.deadline(delays);
                if o.any_trigger() {
                    self.after_condition(i, o, now, out);
                }
                d
            }
            (RuleKind::State(spec), InstState::Hold(c)) => {
                let StateMode::Hold(delays) = spec.mode else {
                    return None;
                };
                let o = c.tick(now, delays);
                let d = c.deadline(delays);
                if o.any_trigger() {
                    self.after_condition(i, o, now, out);
                }
                d
            }
            (RuleKind::State(spec), InstState::Count(st)) => {
                let StateMode::Count { count, within_ns } = spec.mode else {
                    return None;
                };
                let o = st.tick(now, Window { count, within_ns });
                let d = st.deadline(within_ns);
                if o.clear {
                    self.after_count(i, o, now, None, out);
                }
                d
            }
            (RuleKind::Meter(spec), InstState::Meter(st)) => {
                if st.due(spec) {
                    self.fire_meter(i, now, out);
                }
                None
            }
            _ => None,
        }
    }

    /// The asset went offline: the pending delays of its other rules stop.
    fn suspend_asset(&mut self, a: usize) {
        let (s, e) = (self.inst_start[a] as usize, self.inst_start[a + 1] as usize);
        for i in s..e {
            if self.condition_mut(i).is_some_and(|c| c.suspend()) {
                self.mark_dirty(i);
            }
        }
    }

    /// A work order of a meter rule was closed: the counter's latest reading becomes the
    /// baseline and the next interval starts.
    pub fn work_order_closed(&mut self, asset: &str, rule: &str, _at: DateTime<Utc>) {
        let Some(i) = self.find(asset, rule) else {
            return;
        };
        if let InstState::Meter(st) = &mut self.instances[i].state {
            st.close();
            self.instances[i].marked_usage = 0.0;
            self.mark_dirty(i);
        }
    }

    /// (asset, rule) of the meter rules that have fired and wait for their work order to be
    /// closed: checked against the store at start-up, so a close the engine missed (a crash
    /// between the close and the baseline) re-arms the meter.
    pub fn fired_meters(&self) -> Vec<(String, String)> {
        (0..self.instances.len())
            .filter(|&i| matches!(&self.instances[i].state, InstState::Meter(st) if st.fired))
            .map(|i| self.key(i))
            .collect()
    }

    fn find(&self, asset: &str, rule: &str) -> Option<usize> {
        let a = *self.asset_index.get(asset)?;
        (self.inst_start[a] as usize..self.inst_start[a + 1] as usize)
            .find(|&i| &*self.rules[self.instances[i].rule as usize].id == rule)
    }

    fn saved(&self, i: usize) -> serde_json::Value {
        let inst = &self.instances[i];
        let mut state = inst.state.clone();
        if let InstState::Offline(st) = &mut state {
            let last = self.last_seen[inst.asset as usize];
            st.last_seen = (last != i64::MIN).then_some(last);
            st.saved_at = (self.clock_ns != i64::MIN).then_some(self.clock_ns);
        }
        let saved = Saved {
            state,
            unless: match inst.unless {
                Unless::Holding => Some(true),
                Unless::Clear => Some(false),
                _ => None,
            },
        };
        serde_json::to_value(&saved).unwrap_or(serde_json::Value::Null)
    }

    fn key(&self, i: usize) -> (String, String) {
        let inst = &self.instances[i];
        (
            self.assets[inst.asset as usize].id.to_string(),
            self.rules[inst.rule as usize].id.to_string(),
        )
    }

    /// The state of every instance that has any, keyed by (asset id, rule id).
    pub fn snapshot(&self) -> Vec<(String, String, serde_json::Value)> {
        (0..self.instances.len())
            .filter(|&i| !self.pristine(i))
            .map(|i| {
                let (a, r) = self.key(i);
                (a, r, self.saved(i))
            })
            .collect()
    }

    fn pristine(&self, i: usize) -> bool {
        let inst = &self.instances[i];
        if matches!(inst.unless, Unless::Holding | Unless::Clear) {
            return false;
        }
        match &inst.state {
            InstState::Threshold(st) => *st == ThresholdState::default(),
            InstState::Hold(c) => *c == Condition::default(),
            InstState::Event => true,
            InstState::Count(st) => *st == CountState::default(),
            InstState::Meter(st) => *st == MeterState::default(),
            InstState::Calendar(st) => *st == CalendarState::default(),
            InstState::Offline(st) => !st.firing && self.last_seen[inst.asset as usize] == i64::MIN,
        }
    }

    /// The instances whose state changed since the last call (to persist with the triggers
    /// they came with). Progress that a restart recovers from the next reading (a counter's
    /// every increment, the last-sample time) is not "changed": persist [`Self::snapshot`] at
    /// shutdown and now and then.
    pub fn take_dirty(&mut self) -> Vec<(String, String, serde_json::Value)> {
        // The list keeps its capacity: marking an instance dirty on the hot path then does not
        // allocate.
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut out = Vec::with_capacity(dirty.len());
        for &i in &dirty {
            let i = i as usize;
            self.instances[i].dirty = false;
            let (a, r) = self.key(i);
            out.push((a, r, self.saved(i)));
        }
        dirty.clear();
        self.dirty = dirty;
        out
    }

    /// Restores saved state (before the first tick). Entries for assets or rules that no longer
    /// exist, or whose rule changed type, are ignored.
    pub fn restore(&mut self, states: Vec<(String, String, serde_json::Value)>) {
        for (asset, rule, json) in states {
            let Some(i) = self.find(&asset, &rule) else {
                continue;
            };
            let Ok(saved) = serde_json::from_value::<Saved>(json) else {
                continue;
            };
            let a = self.instances[i].asset as usize;
            if !saved.state.same_variant(&self.instances[i].state) {
                continue;
            }
            let inst = &mut self.instances[i];
            if let InstState::Offline(old) = &inst.state
                && old.firing
            {
                self.offline_firing[a] -= 1;
            }
            if let InstState::Offline(st) = &saved.state {
                if st.firing {
                    self.offline_firing[a] += 1;
                }
                if let Some(last) = st.last_seen {
                    self.last_seen[a] = self.last_seen[a].max(last);
                    if let Some(saved_at) = st.saved_at {
                        self.carried_silence[a] =
                            self.carried_silence[a].max(saved_at.saturating_sub(last).max(0));
                    }
                }
            }
            if let InstState::Meter(st) = &saved.state {
                inst.marked_usage = st.usage;
            }
            inst.state = saved.state;
            if inst.unless != Unless::Absent && inst.unless != Unless::Missing {
                inst.unless = match saved.unless {
                    Some(true) => Unless::Holding,
                    Some(false) => Unless::Clear,
                    None => Unless::Unread,
                };
            }
        }
        self.next_deadline = i64::MIN;
    }
}

fn value_text(v: &EvidenceValue) -> String {
    match v {
        EvidenceValue::Bool(b) => b.to_string(),
        EvidenceValue::Number(n) => fmt_num(*n),
        EvidenceValue::Text(s) => s.clone(),
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
