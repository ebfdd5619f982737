//! The work-order figures: corrective work orders opened in the period (counts, response and
//! repair times against the promised times), preventive work orders due in the period (done on
//! time or not), the assets with the most faults and the oldest unresolved work orders.
//!
//! Everything is taken as of `as_of`: an acknowledgement, resolution or closing after it has
//! not happened yet.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::model::Unresolved;
use super::model::{CorrectiveFigures, FaultCount, PmFigures, PriorityFigures, TimeFigures};
use super::{LIFT_DEVICE_TYPE, ReportInputs, pct, round1};
use crate::rules::types::{Priority, WorkOrderKind};
use crate::workorder::apply::RESOLVED_BY_GATEWAY;
use crate::workorder::types::WorkOrder;

const PRIORITIES: [Priority; 4] = [
    Priority::Urgent,
    Priority::High,
    Priority::Normal,
    Priority::Low,
];

/// How many rows the "most faults" and "oldest unresolved" lists keep.
pub const TOP: usize = 10;

/// A work order as it stood at the as-of time.
struct AsOf<'a> {
    wo: &'a WorkOrder,
    ack: Option<DateTime<Utc>>,
    resolved: Option<DateTime<Utc>>,
    closed: Option<DateTime<Utc>>,
}

impl<'a> AsOf<'a> {
    fn new(wo: &'a WorkOrder, as_of: DateTime<Utc>) -> Self {
        let by = |t: Option<DateTime<Utc>>| t.filter(|t| *t <= as_of);
        AsOf {
            wo,
            ack: by(wo.acknowledged_at),
            resolved: by(wo.resolved_at),
            closed: by(wo.closed_at),
        }
    }

    /// Resolved by the gateway itself: the condition cleared and the rule resolves on that, or
    /// a calendar job was seen done. Such a resolution is not a person's response.
    fn resolved_automatically(&self) -> bool {
        self.wo.resolved_by.as_deref() == Some(RESOLVED_BY_GATEWAY)
            || (self.wo.resolved_by.is_none()
                && self.resolved.is_some()
                && self.wo.condition_cleared_at == self.resolved)
    }

    fn cancelled(&self) -> bool {
        self.resolved.is_none() && self.closed.is_some()
    }
}

/// How one work order counts in a share: on time, late, pending, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timely {
    OnTime,
    Late,
    Pending,
    NotCounted,
}

/// The response: acknowledged (or resolved by a person without an acknowledgement) within the
/// promised time for its priority.
fn response(w: &AsOf<'_>, target: chrono::Duration, as_of: DateTime<Utc>) -> (Timely, Option<i64>) {
    let deadline = w.wo.opened_at + target;
    let answered = w.ack.or(w.resolved.filter(|_| !w.resolved_automatically()));
    if let Some(t) = answered {
        let ms = (t - w.wo.opened_at).num_milliseconds();
        return (
            if t <= deadline {
                Timely::OnTime
            } else {
                Timely::Late
            },
            Some(ms),
        );
    }
    // Gone without an answer (cleared by itself, or cancelled): no answer was needed if it went
    // before the deadline.
    if let Some(gone) = w.resolved.or(w.closed) {
        return (
            if gone <= deadline {
                Timely::NotCounted
            } else {
                Timely::Late
            },
            None,
        );
    }
    (
        if deadline <= as_of {
            Timely::Late
        } else {
            Timely::Pending
        },
        None,
    )
}

/// The repair: resolved by the work order's due time.
fn repair(w: &AsOf<'_>, as_of: DateTime<Utc>) -> (Timely, Option<i64>) {
    if let Some(r) = w.resolved {
        let ms = (r - w.wo.opened_at).num_milliseconds();
        return (
            if r <= w.wo.due_at {
                Timely::OnTime
            } else {
                Timely::Late
            },
            Some(ms),
        );
    }
    if w.cancelled() {
        return (Timely::NotCounted, None);
    }
    (
        if w.wo.due_at <= as_of {
            Timely::Late
        } else {
            Timely::Pending
        },
        None,
    )
}

/// The nearest-rank percentile `p` (0-100] of sorted values: the smallest value with at least
/// p % of the values at or below it.
pub fn nearest_rank(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

fn minutes(ms: i64) -> f64 {
    round1(ms as f64 / 60_000.0)
}

#[derive(Default)]
struct TimeTally {
    ms: Vec<i64>,
    on_time: u64,
    late: u64,
    pending: u64,
}

impl TimeTally {
    fn add(&mut self, (t, ms): (Timely, Option<i64>)) {
        if let Some(ms) = ms {
            self.ms.push(ms);
        }
        match t {
            Timely::OnTime => self.on_time += 1,
            Timely::Late => self.late += 1,
            Timely::Pending => self.pending += 1,
            Timely::NotCounted => {}
        }
    }

    fn figures(mut self) -> TimeFigures {
        self.ms.sort_unstable();
        TimeFigures {
            measured: self.ms.len() as u64,
            median_min: nearest_rank(&self.ms, 50.0).map(minutes),
            p90_min: nearest_rank(&self.ms, 90.0).map(minutes),
            on_time: self.on_time,
            late: self.late,
            pending: self.pending,
            on_time_pct: pct(self.on_time as i64, (self.on_time + self.late) as i64),
        }
    }
}

/// Preventive work orders due in the period, counted as they stood at `as_of`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PmTally {
    pub due: u64,
    pub on_time: u64,
    pub late: u64,
    pub not_done: u64,
    pub cancelled: u64,
    pub pending: u64,
}

impl PmTally {
    fn add(&mut self, w: &AsOf<'_>, as_of: DateTime<Utc>) {
        self.due += 1;
        match w.resolved {
            Some(r) if r <= w.wo.due_at => self.on_time += 1,
            Some(_) => self.late += 1,
            None if w.closed.is_some() => self.cancelled += 1,
            None if w.wo.due_at <= as_of => self.not_done += 1,
            None => self.pending += 1,
        }
    }

    pub fn counted(&self) -> u64 {
        self.on_time + self.late + self.not_done
    }

    pub fn figures(&self) -> PmFigures {
        PmFigures {
            due: self.due,
            on_time: self.on_time,
            late: self.late,
            not_done: self.not_done,
            cancelled: self.cancelled,
            pending: self.pending,
            compliance_pct: pct(self.on_time as i64, self.counted() as i64),
        }
    }
}

/// Work-order counts of one row of the availability tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub corrective_opened: u64,
    pub corrective_closed: u64,
    pub pm: PmTally,
}

/// The work-order figures, and the counts per asset, building and device type that the
/// availability tables show beside their hours.
pub struct OrderFigures {
    pub corrective: CorrectiveFigures,
    pub pm: PmFigures,
    pub lift_pm: PmFigures,
    pub top_faults: Vec<FaultCount>,
    pub oldest_unresolved: Vec<Unresolved>,
    /// By (level, key): `asset`/id, `building`/name, `device_type`/type, `total`/`all`.
    pub rows: BTreeMap<(&'static str, String), RowCounts>,
}

impl OrderFigures {
    pub fn compute(inputs: &ReportInputs, as_of: DateTime<Utc>) -> Self {
        let (from, rt) = (inputs.from, &inputs.response_times);
        let in_period = |t: DateTime<Utc>| t >= from && t < as_of;
        let mut rows: BTreeMap<(&'static str, String), RowCounts> = BTreeMap::new();
        let row_keys = |wo: &WorkOrder| {
            let mut keys = vec![
                ("total", "all".to_string()),
                ("asset", wo.asset.clone()),
                ("device_type", wo.device_type.clone()),
            ];
            if let Some(b) = &wo.building {
                keys.push(("building", b.clone()));
            }
            keys
        };
        let mut per_priority: BTreeMap<Priority, (PriorityCounts, TimeTally, TimeTally)> =
            BTreeMap::new();
        let mut all = (
            PriorityCounts::default(),
            TimeTally::default(),
            TimeTally::default(),
        );
        let (mut pm, mut lift_pm) = (PmTally::default(), PmTally::default());
        let mut faults: BTreeMap<&str, (u64, u64, &str)> = BTreeMap::new();
        let mut unresolved: Vec<&WorkOrder> = Vec::new();

        for wo in inputs.work_orders.iter().filter(|w| w.opened_at < as_of) {
            let w = AsOf::new(wo, as_of);
            if w.resolved.is_none() && w.closed.is_none() {
                unresolved.push(wo);
            }
            match wo.kind {
                WorkOrderKind::Corrective => {
                    let closed_here = w.resolved.is_some_and(in_period);
                    let opened_here = in_period(wo.opened_at);
                    let target = chrono::Duration::from_std(rt.for_priority(wo.priority))
                        .unwrap_or(chrono::Duration::MAX);
                    let entry = per_priority.entry(wo.priority).or_default();
                    for (counts, resp, rep) in [
                        (&mut entry.0, &mut entry.1, &mut entry.2),
                        (&mut all.0, &mut all.1, &mut all.2),
                    ] {
                        counts.closed_in_period += u64::from(closed_here);
                        if opened_here {
                            counts.add(&w);
                            resp.add(response(&w, target, as_of));
                            rep.add(repair(&w, as_of));
                        }
                    }
                    for key in row_keys(wo) {
                        let r = rows.entry(key).or_default();
                        r.corrective_opened += u64::from(opened_here);
                        r.corrective_closed += u64::from(closed_here);
                    }
                    if opened_here {
                        let f = faults.entry(wo.asset.as_str()).or_insert((
                            0,
                            0,
                            wo.device_type.as_str(),
                        ));
                        f.0 += 1;
                        f.1 += wo.occurrences;
                    }
                }
                WorkOrderKind::Preventive if wo.due_at >= from && wo.due_at < inputs.to => {
                    pm.add(&w, as_of);
                    if wo.device_type == LIFT_DEVICE_TYPE {
                        lift_pm.add(&w, as_of);
                    }
                    for key in row_keys(wo) {
                        rows.entry(key).or_default().pm.add(&w, as_of);
                    }
                }
                _ => {}
            }
        }

        let target_min = |p: Priority| Some(round1(rt.for_priority(p).as_secs_f64() / 60.0));
        let by_priority = PRIORITIES
            .iter()
            .map(|p| {
                let (c, resp, rep) = per_priority.remove(p).unwrap_or_default();
                c.figures(p.as_str(), target_min(*p), resp, rep)
            })
            .collect();
        let total = all.0.figures("all", None, all.1, all.2);

        let mut top: Vec<FaultCount> = faults
            .into_iter()
            .map(|(asset, (n, occ, dt))| {
                let a = inputs.assets.iter().find(|a| a.id == asset);
                FaultCount {
                    asset: asset.to_string(),
                    name: a.and_then(|a| a.name.clone()),
                    building: a.and_then(|a| a.building.clone()),
                    device_type: dt.to_string(),
                    work_orders: n,
                    occurrences: occ,
                }
            })
            .collect();
        top.sort_by(|a, b| {
            (b.work_orders, b.occurrences)
                .cmp(&(a.work_orders, a.occurrences))
                .then_with(|| a.asset.cmp(&b.asset))
        });
        top.truncate(TOP);

        unresolved.sort_by_key(|w| (w.opened_at, w.id));
        let oldest_unresolved = unresolved
            .into_iter()
            .take(TOP)
            .map(|w| Unresolved {
                id: w.id,
                asset: w.asset.clone(),
                building: w.building.clone(),
                kind: w.kind.as_str().to_string(),
                priority: w.priority.as_str().to_string(),
                status: if w.acknowledged_at.is_some_and(|t| t <= as_of) {
                    "acknowledged"
                } else {
                    "open"
                }
                .to_string(),
                title: w.title.clone(),
                opened_at: inputs.local(w.opened_at),
                age_h: round1((as_of - w.opened_at).num_milliseconds() as f64 / 3_600_000.0),
            })
            .collect();

        OrderFigures {
            corrective: CorrectiveFigures { by_priority, total },
            pm: pm.figures(),
            lift_pm: lift_pm.figures(),
            top_faults: top,
            oldest_unresolved,
            rows,
        }
    }
}

#[derive(Default)]
struct PriorityCounts {
    opened: u64,
    acknowledged: u64,
    resolved: u64,
    cancelled: u64,
    unresolved: u64,
    closed_in_period: u64,
}

impl PriorityCounts {
    fn add(&mut self, w: &AsOf<'_>) {
        self.opened += 1;
        self.acknowledged += u64::from(w.ack.is_some());
        if w.resolved.is_some() {
            self.resolved += 1;
        } else if w.cancelled() {
            self.cancelled += 1;
        } else {
            self.unresolved += 1;
        }
    }

    fn figures(
        self,
        priority: &str,
        target_min: Option<f64>,
        resp: TimeTally,
        rep: TimeTally,
    ) -> PriorityFigures {
        PriorityFigures {
            priority: priority.to_string(),
            target_min,
            opened: self.opened,
            acknowledged: self.acknowledged,
            resolved: self.resolved,
            cancelled: self.cancelled,
            unresolved: self.unresolved,
            closed_in_period: self.closed_in_period,
            response: resp.figures(),
            repair: rep.figures(),
        }
    }
}
