//! Saved state: per (asset id, rule id) as JSON, what changed since the last save, and its
//! restore at start-up; meter rules re-armed by a closed work order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{InstState, RuleEngine, Unless};
use crate::rules::calendar::CalendarState;
use crate::rules::condition::Condition;
use crate::rules::meter::MeterState;
use crate::rules::state::CountState;
use crate::rules::threshold::ThresholdState;

/// Saved state of one instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    #[serde(flatten)]
    state: InstState,
    /// The `unless` point held (`true`) or not (`false`) at the last sample (a rule with one
    /// point condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unless: Option<bool>,
    /// A list of point conditions: which were read and which held at the last sample (bit k:
    /// condition k).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unless_bits: Option<[u8; 2]>,
}

impl RuleEngine {
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
                && old.offline()
            {
                self.offline_firing[a] -= 1;
            }
            if let InstState::Offline(st) = &saved.state {
                if st.offline() {
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
            let (read, hold) = match (saved.unless_bits, saved.unless) {
                (Some([read, hold]), _) => (read, hold),
                (None, Some(h)) => (1, u8::from(h)),
                (None, None) => (0, 0),
            };
            // Only conditions whose point the asset has can have been read.
            inst.unless_read = read & inst.unless_present;
            inst.unless_hold = hold & inst.unless_read;
            inst.unless = Unless::of(
                inst.unless_n,
                inst.unless_present,
                inst.unless_read,
                inst.unless_hold,
            );
        }
        self.recompute_holds();
        self.next_deadline = i64::MIN;
    }

    fn saved(&self, i: usize) -> serde_json::Value {
        let inst = &self.instances[i];
        let mut state = inst.state.clone();
        if let InstState::Offline(st) = &mut state {
            let last = self.last_seen[inst.asset as usize];
            st.last_seen = (last != i64::MIN).then_some(last);
            st.saved_at = (self.clock_ns != i64::MIN).then_some(self.clock_ns);
        }
        let single = inst.unless_n == 1 && inst.unless_read != 0;
        let saved = Saved {
            state,
            unless: single.then_some(inst.unless_hold != 0),
            unless_bits: (inst.unless_n > 1 && inst.unless_read != 0)
                .then_some([inst.unless_read, inst.unless_hold]),
        };
        serde_json::to_value(&saved).unwrap_or(serde_json::Value::Null)
    }

    fn pristine(&self, i: usize) -> bool {
        let inst = &self.instances[i];
        if inst.unless_read != 0 {
            return false;
        }
        match &inst.state {
            InstState::Threshold(st) => *st == ThresholdState::default(),
            InstState::Hold(c) => *c == Condition::default(),
            InstState::Event => true,
            InstState::Count(st) => *st == CountState::default(),
            InstState::Meter(st) => *st == MeterState::default(),
            InstState::Calendar(st) => *st == CalendarState::default(),
            InstState::Offline(st) => {
                !st.offline()
                    && st.released_at.is_none()
                    && self.last_seen[inst.asset as usize] == i64::MIN
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
}

#[cfg(test)]
mod tests;
