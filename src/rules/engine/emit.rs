//! Triggers: what a rule's state machine produced, with its evidence and rendered work-order
//! template.

use chrono::{DateTime, Utc};

use super::{InstState, RuleEngine};
use crate::model::Value;
use crate::rules::condition::{Condition, Outcome};
use crate::rules::config::RuleKind;
use crate::rules::evidence::{MAX_READINGS, evidence_value, reading};
use crate::rules::state::{CountOutcome, StateMode};
use crate::rules::template::{RenderContext, fmt_num};
use crate::rules::types::{Evidence, EvidenceValue, Trigger, TriggerChange, WorkOrderTemplate};

impl RuleEngine {
    /// Builds and pushes a trigger. `shown`: what to render for a Flapping trigger. The fire
    /// or clear of a rule named by a rule-form `unless` moves the holds on others.
    pub(super) fn emit(
        &mut self,
        i: usize,
        at_ns: i64,
        change: TriggerChange,
        shown: Option<&Evidence>,
        out: &mut Vec<Trigger>,
    ) {
        let moves = self.instances[i].inhibits
            && matches!(
                change,
                TriggerChange::Fire { .. } | TriggerChange::Clear { .. }
            );
        self.render(i, at_ns, change, shown, None, out);
        if moves {
            self.inhibitor_moved(i, at_ns, out);
        }
    }

    /// A calendar rule's fire for the due date `due` (ns): the work order is due then.
    pub(super) fn emit_calendar_fire(
        &mut self,
        i: usize,
        at_ns: i64,
        due: i64,
        evidence: Evidence,
        out: &mut Vec<Trigger>,
    ) {
        let due_at = Some(DateTime::from_timestamp_nanos(due));
        self.render(
            i,
            at_ns,
            TriggerChange::Fire { evidence },
            None,
            due_at,
            out,
        );
    }

    fn render(
        &self,
        i: usize,
        at_ns: i64,
        change: TriggerChange,
        shown: Option<&Evidence>,
        due_at: Option<DateTime<Utc>>,
        out: &mut Vec<Trigger>,
    ) {
        let inst = &self.instances[i];
        let rule = &self.rules[inst.rule as usize];
        let asset = &self.assets[inst.asset as usize];
        let ev = match &change {
            TriggerChange::Fire { evidence }
            | TriggerChange::Occurrence { evidence }
            | TriggerChange::Clear { evidence }
            | TriggerChange::Done { evidence }
            | TriggerChange::Affected { evidence } => Some(evidence),
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
                due_at,
            },
            change,
        });
    }

    /// Emits what a threshold or held-state condition produced, in order.
    #[cold]
    pub(super) fn after_condition(
        &mut self,
        i: usize,
        o: Outcome,
        at_ns: i64,
        out: &mut Vec<Trigger>,
    ) {
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

    #[cold]
    pub(super) fn after_count(
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
            ..Evidence::default()
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
    pub(super) fn fire_meter(&mut self, i: usize, at_ns: i64, out: &mut Vec<Trigger>) {
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
            baseline: st.baseline_from.map(|b| b.describe().to_string()),
            last_value: Some(EvidenceValue::Number(r)),
            min: None,
            max: None,
            readings: vec![reading(t, EvidenceValue::Number(r))],
            ..Evidence::default()
        };
        inst.marked_usage = st.usage;
        self.mark_dirty(i);
        self.emit(i, at_ns, TriggerChange::Fire { evidence }, None, out);
    }
}

fn value_text(v: &EvidenceValue) -> String {
    match v {
        EvidenceValue::Bool(b) => b.to_string(),
        EvidenceValue::Number(n) => fmt_num(*n),
        EvidenceValue::Text(s) => s.clone(),
    }
}
