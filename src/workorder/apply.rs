//! Rule triggers as work-order changes: what one [`Trigger`] does to the work order not yet
//! resolved under its key, inside the store's transaction.
//!
//! - `Fire` / `Occurrence`: opens a work order, or raises `occurrences` and appends evidence.
//! - `Flapping`: flags or unflags it.
//! - `Clear`: `condition = cleared`, and resolves it where the rule says `auto_resolve`.
//! - `Done` (calendar `done_when`): resolves it, by the gateway, with the run as evidence.
//! - `Affected` (rule-form `unless`): appends the held (asset, rule) pairs to its evidence.

use chrono::{DateTime, Utc};
use rusqlite::Transaction;

use super::lifecycle::{self, Action};
use super::store::{
    ResponseTimes, StoreError, emit, find_unresolved, insert_work_order, update_work_order,
};
use super::types::{ConditionState, EventKind, Status, WorkOrder, WorkOrderEvent};
use crate::rules::types::{Evidence, EvidenceValue, Trigger, TriggerChange};

/// Who resolves a work order whose `done_when` run was seen (`resolved_by`).
pub const RESOLVED_BY_GATEWAY: &str = "facilityd";

fn new_work_order(
    trigger: &Trigger,
    key: String,
    evidence: &Evidence,
    response_times: &ResponseTimes,
) -> WorkOrder {
    let a = &trigger.asset;
    let t = &trigger.template;
    let due_at = t.due_at.unwrap_or_else(|| {
        let due = chrono::Duration::from_std(response_times.for_priority(t.priority))
            .unwrap_or(chrono::Duration::MAX);
        trigger
            .at
            .checked_add_signed(due)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    });
    let mut evidence = sanitized(evidence);
    lifecycle::bound_readings(&mut evidence.readings);
    WorkOrder {
        id: 0,
        key,
        asset: a.id.to_string(),
        site: a.site.clone(),
        building: a.building.clone(),
        floor: a.floor.clone(),
        device_type: a.device_type.as_str().to_string(),
        rule: trigger.rule.to_string(),
        kind: t.kind,
        priority: t.priority,
        title: t.title.clone(),
        description: t.description.clone(),
        status: Status::Open,
        condition: ConditionState::Active,
        opened_at: trigger.at,
        acknowledged_at: None,
        condition_cleared_at: None,
        resolved_at: None,
        closed_at: None,
        due_at,
        occurrences: 1,
        last_triggered_at: trigger.at,
        flapping: false,
        evidence,
        acknowledged_by: None,
        resolved_by: None,
        closed_by: None,
        note: None,
    }
}

/// JSON has no NaN or infinity: such a reading is kept as text, and min/max dropped, so that
/// the record always reads back.
fn sanitized(e: &Evidence) -> Evidence {
    fn value(v: &EvidenceValue) -> EvidenceValue {
        match v {
            EvidenceValue::Number(n) if !n.is_finite() => EvidenceValue::Text(n.to_string()),
            v => v.clone(),
        }
    }
    let mut e = e.clone();
    for v in [&mut e.value, &mut e.first_value, &mut e.last_value]
        .into_iter()
        .flatten()
    {
        *v = value(v);
    }
    e.min = e.min.filter(|n| n.is_finite());
    e.max = e.max.filter(|n| n.is_finite());
    for r in &mut e.readings {
        r.value = value(&r.value);
    }
    if let Some(d) = &mut e.done {
        for n in [&mut d.and_min, &mut d.and_avg, &mut d.and_max] {
            *n = n.filter(|n| n.is_finite());
        }
        if !d.duration_s.is_finite() {
            d.duration_s = 0.0;
        }
    }
    e
}

/// One trigger's work-order change and outbox entries, inside the caller's transaction.
pub(super) fn apply_one(
    tx: &Transaction<'_>,
    trigger: &Trigger,
    response_times: &ResponseTimes,
) -> Result<Vec<WorkOrderEvent>, StoreError> {
    let key = trigger.key();
    let at = trigger.at;
    let current = find_unresolved(tx, &key)?;
    let mut events = Vec::new();
    match (&trigger.change, current) {
        (
            TriggerChange::Fire { evidence } | TriggerChange::Occurrence { evidence },
            Some((mut wo, mut seq)),
        ) => {
            wo.occurrences += 1;
            wo.last_triggered_at = at;
            if wo.condition == ConditionState::Cleared {
                wo.condition = ConditionState::Active;
                wo.condition_cleared_at = None;
            }
            lifecycle::merge_evidence(&mut wo.evidence, &sanitized(evidence));
            events.push(emit(tx, &wo, &mut seq, EventKind::Updated, at)?);
            update_work_order(tx, &wo, seq)?;
        }
        (TriggerChange::Fire { evidence } | TriggerChange::Occurrence { evidence }, None) => {
            let mut wo = new_work_order(trigger, key, evidence, response_times);
            wo.id = insert_work_order(tx, &wo)?;
            let mut seq = 0;
            events.push(emit(tx, &wo, &mut seq, EventKind::Opened, at)?);
            update_work_order(tx, &wo, seq)?;
        }
        (TriggerChange::Flapping { flapping }, Some((mut wo, mut seq)))
            if wo.flapping != *flapping =>
        {
            wo.flapping = *flapping;
            let kind = if *flapping {
                EventKind::Flapping
            } else {
                EventKind::Updated
            };
            events.push(emit(tx, &wo, &mut seq, kind, at)?);
            update_work_order(tx, &wo, seq)?;
        }
        (TriggerChange::Clear { evidence }, Some((mut wo, mut seq))) => {
            if wo.condition == ConditionState::Active {
                wo.condition = ConditionState::Cleared;
                wo.condition_cleared_at = Some(at);
                lifecycle::merge_evidence(&mut wo.evidence, &sanitized(evidence));
                events.push(emit(tx, &wo, &mut seq, EventKind::ConditionCleared, at)?);
            }
            if trigger.template.auto_resolve {
                let t = lifecycle::transition(wo.status, Action::Resolve, false)?;
                wo.status = t.to;
                wo.resolved_at = Some(at);
                events.push(emit(tx, &wo, &mut seq, t.event, at)?);
            }
            if !events.is_empty() {
                update_work_order(tx, &wo, seq)?;
            }
        }
        (TriggerChange::Done { evidence }, Some((mut wo, mut seq))) => {
            // One event: the record resolved, with the run in its evidence.
            lifecycle::merge_evidence(&mut wo.evidence, &sanitized(evidence));
            wo.condition = ConditionState::Cleared;
            wo.condition_cleared_at = Some(at);
            let t = lifecycle::transition(wo.status, Action::Resolve, false)?;
            wo.status = t.to;
            wo.resolved_at = Some(at);
            wo.resolved_by = Some(RESOLVED_BY_GATEWAY.to_string());
            events.push(emit(tx, &wo, &mut seq, t.event, at)?);
            update_work_order(tx, &wo, seq)?;
        }
        (TriggerChange::Affected { evidence }, Some((mut wo, mut seq))) => {
            if lifecycle::merge_affected(&mut wo.evidence.affected, &evidence.affected) {
                events.push(emit(tx, &wo, &mut seq, EventKind::Updated, at)?);
                update_work_order(tx, &wo, seq)?;
            }
        }
        // Flapping unchanged, or nothing unresolved to flag, clear, resolve or list under.
        (
            TriggerChange::Flapping { .. }
            | TriggerChange::Clear { .. }
            | TriggerChange::Done { .. }
            | TriggerChange::Affected { .. },
            _,
        ) => {}
    }
    Ok(events)
}
