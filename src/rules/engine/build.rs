//! Building the engine: the routing table and one instance per (matched asset, rule), and
//! the engine of a reloaded configuration with the state of what did not change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::holds::Holds;
use super::{EngineStats, InstState, Instance, NONE, Rebuilt, Role, Route, RuleEngine, Unless};
use crate::model::AssetId;
use crate::profile::PointKind;
use crate::rules::calendar::CalendarState;
use crate::rules::condition::Condition;
use crate::rules::config::{Rule, RuleKind};
use crate::rules::evidence::EpisodePool;
use crate::rules::meter::MeterState;
use crate::rules::offline::OfflineState;
use crate::rules::state::{CountState, StateMode};
use crate::rules::threshold::ThresholdState;
use crate::rules::types::AssetInfo;

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
                let watched = match &rule.kind {
                    RuleKind::Calendar(c) => c.done_when.as_ref().map(|d| &d.point),
                    _ => rule.point(),
                };
                let point = match watched {
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
                let (mut n, mut present) = (0u8, 0u8);
                for (k, u) in rule.point_unless().enumerate().take(8) {
                    n += 1;
                    if let Some(p) = find(&u.point) {
                        present |= 1 << k;
                        per_point[base + p].push(Route {
                            instance: idx,
                            role: Role::Unless(k as u8),
                        });
                    }
                }
                if point != NONE {
                    per_point[base + point as usize].push(Route {
                        instance: idx,
                        role: Role::Watched,
                    });
                }
                if let RuleKind::Calendar(c) = &rule.kind
                    && let Some(and) = c.done_when.as_ref().and_then(|d| d.and.as_ref())
                    && let Some(p) = find(&and.point)
                {
                    per_point[base + p].push(Route {
                        instance: idx,
                        role: Role::DoneAnd,
                    });
                }
                instances.push(Instance {
                    rule: ri as u32,
                    asset: ai as u32,
                    point,
                    event,
                    unless: Unless::of(n, present, 0, 0),
                    unless_n: n,
                    unless_present: present,
                    unless_read: 0,
                    unless_hold: 0,
                    held: 0,
                    affected: false,
                    inhibits: false,
                    active: false,
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
            list.sort_by_key(|r| r.role);
            routes.extend(list);
        }
        route_start.push(routes.len() as u32);

        let holds = Holds::build(&rules, &assets, &mut instances);
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
            holds,
            handover_baselines: HashMap::new(),
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
        next.handover_baselines = std::mem::take(&mut self.handover_baselines);
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
            to.unless_read = from.unless_read;
            to.unless_hold = from.unless_hold;
            to.marked_usage = from.marked_usage;
            if let InstState::Offline(st) = &to.state
                && st.offline()
            {
                next.offline_firing[a] += 1;
            }
            *done = true;
        }
        next.recompute_holds();
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
}

#[cfg(test)]
mod tests;
