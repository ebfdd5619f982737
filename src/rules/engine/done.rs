//! Calendar rules with `done_when` (see `calendar/done.rs`): readings of its points, and what a
//! completed run does. A run completes the occurrence whose work order is open (the engine
//! resolves it: a `Done` trigger); with none open, it completes the coming due date early, and
//! that due date's work order opens and is resolved at once when its lead time comes
//! (`timers`), so every occurrence leaves a record. A run counts for one occurrence at most;
//! a second early run for the same due date counts for nothing.

use super::{InstState, RuleEngine, Trigger};
use crate::model::Value;
use crate::rules::calendar::DoneProgress;
use crate::rules::config::RuleKind;
use crate::rules::types::{DoneEvidence, Evidence, TriggerChange};

impl RuleEngine {
    /// A reading of a calendar rule's `done_when` point.
    #[cold]
    pub(super) fn done_sample(&mut self, i: usize, value: &Value, t: i64, out: &mut Vec<Trigger>) {
        self.done_step(i, t, out, |p, spec| p.main_sample(spec, value, t));
    }

    /// A reading of a calendar rule's `done_when.and` point.
    #[cold]
    pub(super) fn done_and_sample(
        &mut self,
        i: usize,
        value: &Value,
        t: i64,
        out: &mut Vec<Trigger>,
    ) {
        self.done_step(i, t, out, |p, spec| p.and_sample(spec, value, t));
    }

    fn done_step(
        &mut self,
        i: usize,
        t: i64,
        out: &mut Vec<Trigger>,
        f: impl FnOnce(
            &mut DoneProgress,
            &crate::rules::calendar::DoneWhen,
        ) -> crate::rules::calendar::done::DoneStep,
    ) {
        let inst = &mut self.instances[i];
        let (RuleKind::Calendar(spec), InstState::Calendar(st)) =
            (&self.rules[inst.rule as usize].kind, &mut inst.state)
        else {
            return;
        };
        let Some(dw) = &spec.done_when else {
            return;
        };
        let p = st.done.get_or_insert_with(Box::default);
        let step = f(p, dw);
        let deadline = p.deadline(dw);
        if step.dirty {
            self.mark_dirty(i);
        }
        self.note_deadline(deadline);
        if let Some(done) = step.done {
            self.run_done(i, done, t, out);
        }
    }

    /// A run completed at `t`: it resolves the open work order, or completes the next due date
    /// early.
    pub(super) fn run_done(
        &mut self,
        i: usize,
        done: DoneEvidence,
        t: i64,
        out: &mut Vec<Trigger>,
    ) {
        self.mark_dirty(i);
        let inst = &mut self.instances[i];
        let (RuleKind::Calendar(spec), InstState::Calendar(st)) =
            (&self.rules[inst.rule as usize].kind, &mut inst.state)
        else {
            return;
        };
        let next_due = st.next_due;
        let Some(p) = &mut st.done else {
            return;
        };
        if let Some(due) = p.open_due.take() {
            let evidence = done_evidence(spec, due, done);
            self.emit(i, t, TriggerChange::Done { evidence }, None, out);
        } else if p.early.is_none()
            && let Some(next) = next_due
        {
            p.early = Some((next, done));
        }
    }

    /// A work order of this rule on this asset was resolved, closed or cancelled (through the
    /// API or by a run): a calendar rule's occurrence is no longer open, so the next run counts
    /// for the coming due date.
    pub fn work_order_resolved(&mut self, asset: &str, rule: &str) {
        let Some(i) = self.find(asset, rule) else {
            return;
        };
        if let InstState::Calendar(st) = &mut self.instances[i].state
            && let Some(p) = &mut st.done
            && p.open_due.take().is_some()
        {
            self.mark_dirty(i);
        }
    }
}

impl RuleEngine {
    /// (asset, rule) of the calendar rules whose occurrence is open (a work order raised and
    /// not done yet): checked against the store at start-up, so a resolution the engine missed
    /// (a crash before its state was saved) frees the next run to count early.
    pub fn open_occurrences(&self) -> Vec<(String, String)> {
        (0..self.instances.len())
            .filter(|&i| {
                matches!(&self.instances[i].state, InstState::Calendar(st)
                    if st.done.as_ref().is_some_and(|p| p.open_due.is_some()))
            })
            .map(|i| self.key(i))
            .collect()
    }
}

/// The evidence of a `Done` trigger for the due date `due` (ns).
pub(super) fn done_evidence(
    spec: &crate::rules::calendar::CalendarSpec,
    due: i64,
    done: DoneEvidence,
) -> Evidence {
    Evidence {
        point: spec.done_when.as_ref().map(|d| d.point.to_string()),
        threshold: Some(spec.format(due)),
        done: Some(done),
        ..Evidence::default()
    }
}

#[cfg(test)]
mod tests;
