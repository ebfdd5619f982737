//! Holds: `unless = { rule = "power-mains-lost", scope = "building" }`.
//!
//! A *hold group* is one named rule over one scope: the instances of the named rule on the
//! assets in scope (its *members*, the inhibitors) and the instances whose `unless` names it
//! for that scope (the *held*). The group is active while any member's condition is active
//! (fired and not cleared); while it is, its held instances are suspended like a rule whose
//! `unless` point holds: they neither fire nor clear, and their pending delays stop.
//!
//! - A held instance that would have fired (an on-delay running or completing, an event, a
//!   count entry, a meter or calendar due date, an `offline` rule's silence passing `after`) is
//!   listed, once per hold, on the work order of every active member: an `Affected` trigger.
//!   An instance already firing when the hold began is not listed: its work order predates the
//!   incident.
//! - An `offline` rule that would fire while held marks its asset offline (its other rules are
//!   suspended, as for any offline asset) without opening a work order; a good sample ends
//!   that quietly.
//! - At the release (the last member clears), delays restart from then: an on-delay runs again
//!   from the release with the last known condition, an `offline` rule counts silence from the
//!   release (a device gets its full `after` to answer once power is back), meter and calendar
//!   rules held back get their turn at the next tick.
//! - After a restart the members' saved state says whether they fire, so holds are restored
//!   with them (the held instances stay held until the release); without saved state nothing
//!   fires and nothing is held. A member on an offline asset neither fires nor clears, so its
//!   hold lasts until the asset reports again.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::DateTime;

use super::{InstState, Instance, RuleEngine, Unless};
use crate::rules::config::{Rule, Scope};
use crate::rules::types::{AffectedAsset, AssetInfo, Evidence, TriggerChange};

/// One named rule over one scope.
#[derive(Debug, Default)]
pub(super) struct HoldGroup {
    /// Instances of the named rule in scope.
    members: Vec<u32>,
    /// Instances held by it.
    held: Vec<u32>,
    /// Members whose condition is active now.
    active: u32,
}

/// Who holds whom.
#[derive(Debug, Default)]
pub(super) struct Holds {
    groups: Vec<HoldGroup>,
    /// Per member instance: its groups.
    member_of: HashMap<u32, Vec<u32>>,
    /// Per held instance: its groups.
    held_by: HashMap<u32, Vec<u32>>,
}

/// Where an asset is, for a scope: `None` for the whole site.
type Place = Option<(Option<String>, Option<String>)>;

fn place(a: &AssetInfo, scope: Scope) -> Place {
    match scope {
        Scope::Building => Some((a.site.clone(), a.building.clone())),
        Scope::Site => None,
    }
}

impl Holds {
    /// The hold groups of the instances, and which instances inhibit others.
    pub(super) fn build(
        rules: &[Rule],
        assets: &[Arc<AssetInfo>],
        instances: &mut [Instance],
    ) -> Holds {
        let mut h = Holds::default();
        if rules.iter().all(|r| r.rule_unless().next().is_none()) {
            return h;
        }
        let rule_index: HashMap<&str, u32> = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (&*r.id, i as u32))
            .collect();
        let mut index: HashMap<(u32, Scope, Place), u32> = HashMap::new();
        for (i, inst) in instances.iter().enumerate() {
            let asset = &assets[inst.asset as usize];
            for u in rules[inst.rule as usize].rule_unless() {
                let Some(&named) = rule_index.get(&*u.rule) else {
                    continue;
                };
                let key = (named, u.scope, place(asset, u.scope));
                let g = *index.entry(key).or_insert_with(|| {
                    h.groups.push(HoldGroup::default());
                    (h.groups.len() - 1) as u32
                });
                h.groups[g as usize].held.push(i as u32);
                h.held_by.entry(i as u32).or_default().push(g);
            }
        }
        for (j, inst) in instances.iter_mut().enumerate() {
            let asset = &assets[inst.asset as usize];
            for scope in [Scope::Building, Scope::Site] {
                if let Some(&g) = index.get(&(inst.rule, scope, place(asset, scope))) {
                    h.groups[g as usize].members.push(j as u32);
                    h.member_of.entry(j as u32).or_default().push(g);
                    inst.inhibits = true;
                }
            }
        }
        h
    }
}

impl RuleEngine {
    /// Whether an inhibitor's condition is active: it fired and has not cleared.
    fn condition_active(&self, i: usize) -> bool {
        match &self.instances[i].state {
            InstState::Threshold(st) => st.cond.firing,
            InstState::Hold(c) => c.firing,
            InstState::Count(st) => st.firing,
            InstState::Offline(st) => st.firing,
            InstState::Event | InstState::Meter(_) | InstState::Calendar(_) => false,
        }
    }

    /// After an inhibitor's trigger: a change of its condition moves its groups.
    pub(super) fn inhibitor_moved(&mut self, j: usize, t: i64, out: &mut Vec<super::Trigger>) {
        let on = self.condition_active(j);
        if on == self.instances[j].active {
            return;
        }
        self.instances[j].active = on;
        let groups = self
            .holds
            .member_of
            .get(&(j as u32))
            .cloned()
            .unwrap_or_default();
        for g in groups {
            let group = &mut self.holds.groups[g as usize];
            let fresh = if on {
                group.active += 1;
                group.active == 1
            } else {
                group.active = group.active.saturating_sub(1);
                group.active == 0
            };
            if !fresh {
                continue;
            }
            let held = group.held.clone();
            for h in held {
                if on {
                    self.hold(h as usize, t, out);
                } else {
                    self.release(h as usize, t);
                }
            }
        }
    }

    /// A group holding `i` became active.
    fn hold(&mut self, i: usize, t: i64, out: &mut Vec<super::Trigger>) {
        let inst = &mut self.instances[i];
        inst.held += 1;
        if inst.held > 1 {
            return;
        }
        let suspended = inst.unless == Unless::Holding;
        self.mark_dirty(i);
        let Some(c) = self.condition_mut(i) else {
            return;
        };
        // An on-delay that was running would have completed: listed.
        let would = c.raw && !c.firing;
        if !suspended {
            c.suspend();
        }
        if would {
            self.note_affected(i, t, out);
        }
    }

    /// The last group holding `i` released it at `t`: its delays restart from then.
    fn release(&mut self, i: usize, t: i64) {
        let inst = &mut self.instances[i];
        inst.held = inst.held.saturating_sub(1);
        if inst.held > 0 {
            return;
        }
        inst.affected = false;
        let suspended = inst.unless == Unless::Holding;
        if let InstState::Offline(st) = &mut inst.state {
            st.released_at = Some(t);
        }
        if !suspended && let Some(c) = self.condition_mut(i) {
            c.resume(t);
        }
        self.mark_dirty(i);
        self.next_deadline = i64::MIN;
    }

    /// A held instance would have fired at `t`: listed on the work orders of the active
    /// members of its groups (once per hold).
    pub(super) fn note_affected(&mut self, i: usize, t: i64, out: &mut Vec<super::Trigger>) {
        let inst = &mut self.instances[i];
        if inst.held == 0 || inst.affected {
            return;
        }
        inst.affected = true;
        let entry = AffectedAsset {
            asset: self.assets[inst.asset as usize].id.to_string(),
            rule: self.rules[inst.rule as usize].id.to_string(),
            since: DateTime::from_timestamp_nanos(t),
        };
        let mut to: Vec<u32> = Vec::new();
        for &g in self.holds.held_by.get(&(i as u32)).into_iter().flatten() {
            for &m in &self.holds.groups[g as usize].members {
                if self.instances[m as usize].active && !to.contains(&m) {
                    to.push(m);
                }
            }
        }
        for m in to {
            let evidence = Evidence {
                affected: vec![entry.clone()],
                ..Evidence::default()
            };
            self.emit(
                m as usize,
                t,
                TriggerChange::Affected { evidence },
                None,
                out,
            );
        }
    }

    /// After a restore or a rebuild: the members' saved conditions decide what is held.
    pub(super) fn recompute_holds(&mut self) {
        if self.holds.groups.is_empty() {
            return;
        }
        for i in 0..self.instances.len() {
            let active = self.instances[i].inhibits && self.condition_active(i);
            let inst = &mut self.instances[i];
            inst.active = active;
            inst.held = 0;
        }
        for g in 0..self.holds.groups.len() {
            let group = &self.holds.groups[g];
            let active = group
                .members
                .iter()
                .filter(|&&m| self.instances[m as usize].active)
                .count() as u32;
            self.holds.groups[g].active = active;
            if active == 0 {
                continue;
            }
            for h in self.holds.groups[g].held.clone() {
                self.instances[h as usize].held += 1;
                if let Some(c) = self.condition_mut(h as usize) {
                    c.suspend();
                }
            }
        }
        self.next_deadline = i64::MIN;
    }
}

#[cfg(test)]
mod tests;
