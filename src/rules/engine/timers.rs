//! Clock ticks: delays, count windows, `offline` silence and calendar due dates that complete
//! without a sample, and the offline rule's clear at the asset's next good sample.

use chrono::{DateTime, Utc};

use super::{InstState, RuleEngine, Unless};
use crate::rules::config::RuleKind;
use crate::rules::offline::silent_since;
use crate::rules::state::{StateMode, Window};
use crate::rules::types::{Evidence, EvidenceValue, Trigger, TriggerChange};

impl RuleEngine {
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
        let suppressed = inst.unless == Unless::Holding;
        let by_rule = inst.held != 0;
        let held = suppressed || by_rule;
        match (&rule.kind, &mut inst.state) {
            (RuleKind::Offline(spec), InstState::Offline(st)) => {
                if st.firing || (st.silent && by_rule) {
                    return None;
                }
                let since = silent_since(self.last_seen[a], self.counting_from[a])
                    .max(st.released_at.unwrap_or(i64::MIN));
                let deadline = since.saturating_add(spec.after_ns);
                if suppressed {
                    // The end of `unless` forces a scan.
                    return None;
                }
                if now < deadline {
                    return Some(deadline);
                }
                if by_rule {
                    // Offline, but held: no work order; the release forces a scan.
                    st.silent = true;
                    self.offline_firing[a] += 1;
                    self.mark_dirty(i);
                    self.suspend_asset(a);
                    self.note_affected(i, now, out);
                    return None;
                }
                // Silent while held and still silent `after` past the release: it fires now
                // (the asset already counts as offline).
                if std::mem::take(&mut st.silent) {
                    st.firing = true;
                } else {
                    st.firing = true;
                    self.offline_firing[a] += 1;
                }
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
                let would = by_rule
                    && st
                        .next_due
                        .is_some_and(|d| now >= d.saturating_sub(spec.lead_ns));
                let (due, mut dirty) = st.tick(spec, now, held);
                let mut deadline = if held { None } else { st.deadline(spec) };
                let mut early = None;
                let mut run = None;
                if let Some(dw) = &spec.done_when {
                    let p = st.done.get_or_insert_with(Default::default);
                    if let Some(due) = due {
                        // The occurrence is open, unless a run completed it early.
                        match p.early.take() {
                            Some((d, ev)) if d == due => early = Some(ev),
                            _ => p.open_due = Some(due),
                        }
                    }
                    let step = p.tick(dw, now);
                    dirty |= step.dirty;
                    run = step.done;
                    deadline = match (deadline, p.deadline(dw)) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                let evidence = |d: i64| Evidence {
                    threshold: Some(spec.format(d)),
                    ..Evidence::default()
                };
                let fire = due.map(|d| (d, evidence(d)));
                let early = early
                    .zip(due)
                    .map(|(ev, d)| super::done::done_evidence(spec, d, ev));
                if dirty {
                    self.mark_dirty(i);
                }
                if let Some((d, ev)) = fire {
                    self.emit_calendar_fire(i, now, d, ev, out);
                }
                if let Some(evidence) = early {
                    self.emit(i, now, TriggerChange::Done { evidence }, None, out);
                }
                if let Some(done) = run {
                    self.run_done(i, done, now, out);
                }
                if would && due.is_none() {
                    self.note_affected(i, now, out);
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

    /// The asset went offline: the pending delays of its other rules stop, and `done_when`
    /// runs end.
    fn suspend_asset(&mut self, a: usize) {
        let (s, e) = (self.inst_start[a] as usize, self.inst_start[a + 1] as usize);
        for i in s..e {
            if self.condition_mut(i).is_some_and(|c| c.suspend()) {
                self.mark_dirty(i);
            }
            if let InstState::Calendar(st) = &mut self.instances[i].state
                && st.done.as_mut().is_some_and(|p| p.gap())
            {
                self.mark_dirty(i);
            }
        }
    }

    /// A good sample from an asset whose offline rule fires: it clears.
    #[cold]
    pub(super) fn back_online(&mut self, asset: usize, at_ns: i64, out: &mut Vec<Trigger>) {
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
            st.released_at = None;
            if std::mem::take(&mut st.silent) {
                // Silent while held: back without a work order.
                self.offline_firing[asset] -= 1;
                self.mark_dirty(i);
                continue;
            }
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
}

#[cfg(test)]
mod tests;
