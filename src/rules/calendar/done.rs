//! `done_when` of a calendar rule: what doing the job looks like on the asset's own telemetry.
//!
//! A *qualifying run* is the condition (`point` equals one of `equals`, and, with `and`, a
//! numeric point of the same asset above or below its limit) holding continuously for `for`.
//! A reading that breaks either part, or the asset going offline (its `offline` rule firing),
//! ends the run; the count starts again at the next reading where both parts hold. The `and`
//! part holds only once its point has been read. A run completes at the first reading or
//! clock tick that sees it held for `for`, and counts once: it must break before another run
//! can count.
//!
//! What a completed run does (the engine decides, see `engine/timers.rs`): it resolves the
//! open work order of the rule on the asset; with none open, it completes the coming due date
//! early, whose work order then opens and is resolved at once when its lead time comes.
//!
//! Across a restart the run in progress is kept; it completes only once a fresh reading
//! confirms the condition (the gateway did not see what happened while it was down).

use std::sync::Arc;

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use crate::model::Value;
use crate::rules::state::StateSet;
use crate::rules::template::fmt_num;
use crate::rules::threshold::fmt_duration_ns;
use crate::rules::types::DoneEvidence;

/// A validated `done_when`.
#[derive(Debug, Clone, PartialEq)]
pub struct DoneWhen {
    pub point: Arc<str>,
    pub equals: StateSet,
    /// How long the condition must hold (ns).
    pub for_ns: i64,
    pub and: Option<DoneAnd>,
}

/// `and = { point, above | below }`: a numeric point of the same asset that must hold too.
#[derive(Debug, Clone, PartialEq)]
pub struct DoneAnd {
    pub point: Arc<str>,
    pub limit: Limit,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Strictly above.
    Above(f64),
    /// Strictly below.
    Below(f64),
}

impl DoneAnd {
    pub fn holds(&self, v: f64) -> bool {
        match self.limit {
            Limit::Above(l) => v > l,
            Limit::Below(l) => v < l,
        }
    }
}

impl DoneWhen {
    /// `engine_state = running for 30m and load_pct > 30`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} = {} for {}",
            self.point,
            self.equals.text(),
            fmt_duration_ns(self.for_ns)
        );
        if let Some(a) = &self.and {
            let (op, l) = match a.limit {
                Limit::Above(l) => (">", l),
                Limit::Below(l) => ("<", l),
            };
            s.push_str(&format!(" and {} {op} {}", a.point, fmt_num(l)));
        }
        s
    }
}

/// A run of the condition in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// When both parts started to hold (ns).
    pub since: i64,
    /// The `and` point over the run: min, max, sum and count of its readings.
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub sum: f64,
    #[serde(default)]
    pub n: u32,
    /// Already counted for an occurrence: it must break before another run counts.
    #[serde(default)]
    pub counted: bool,
    /// Restored from saved state and no reading seen since.
    #[serde(skip_serializing, default = "yes")]
    pub restored: bool,
}

fn yes() -> bool {
    true
}

impl Run {
    fn new(since: i64, and_value: Option<f64>) -> Run {
        let mut r = Run {
            since,
            min: None,
            max: None,
            sum: 0.0,
            n: 0,
            counted: false,
            restored: false,
        };
        if let Some(v) = and_value {
            r.add(v);
        }
        r
    }

    fn add(&mut self, v: f64) {
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
        self.sum += v;
        self.n = self.n.saturating_add(1);
    }
}

/// `done_when` on one asset: the last reading of each part, the run in progress, and which
/// occurrence a completed run goes to. Saved with the calendar state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DoneProgress {
    /// The `done_when` point's last reading equals one of the values.
    #[serde(default)]
    pub main: bool,
    /// The `and` point's last reading (none yet: the `and` part does not hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Run>,
    /// The due date (ns) of the occurrence whose work order was raised and is not done yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_due: Option<i64>,
    /// A run completed before the work order of this due date (ns) was raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early: Option<(i64, DoneEvidence)>,
}

/// What a reading or tick did.
#[derive(Debug, Default)]
pub struct DoneStep {
    /// Saved state changed (a run started, broke or completed).
    pub dirty: bool,
    pub done: Option<DoneEvidence>,
}

impl DoneProgress {
    /// A reading of the `done_when` point.
    pub fn main_sample(&mut self, spec: &DoneWhen, v: &Value, t: i64) -> DoneStep {
        self.main = spec.equals.matches(v);
        self.advance(spec, t, true)
    }

    /// A reading of the `and` point.
    pub fn and_sample(&mut self, spec: &DoneWhen, v: &Value, t: i64) -> DoneStep {
        let Some(v) = v.as_f64().filter(|v| v.is_finite()) else {
            return DoneStep::default();
        };
        self.and_value = Some(v);
        let holds = spec.and.as_ref().is_some_and(|a| a.holds(v));
        if holds && let Some(r) = &mut self.run {
            r.add(v);
        }
        self.advance(spec, t, true)
    }

    /// A clock tick: completes a run that has held for `for` without a contrary reading.
    pub fn tick(&mut self, spec: &DoneWhen, now: i64) -> DoneStep {
        match &self.run {
            Some(_) => self.advance(spec, now, false),
            None => DoneStep::default(),
        }
    }

    /// The asset went offline: the run ends.
    pub fn gap(&mut self) -> bool {
        self.run.take().is_some()
    }

    /// When `tick` next has something to do.
    pub fn deadline(&self, spec: &DoneWhen) -> Option<i64> {
        self.run
            .as_ref()
            .filter(|r| !r.counted && !r.restored)
            .map(|r| r.since.saturating_add(spec.for_ns))
    }

    fn holds(&self, spec: &DoneWhen) -> bool {
        self.main
            && spec
                .and
                .as_ref()
                .is_none_or(|a| self.and_value.is_some_and(|v| a.holds(v)))
    }

    fn advance(&mut self, spec: &DoneWhen, t: i64, sample: bool) -> DoneStep {
        let mut step = DoneStep::default();
        if !self.holds(spec) {
            step.dirty = self.run.take().is_some();
            return step;
        }
        let and_value = self.and_value.filter(|_| spec.and.is_some());
        let run = match &mut self.run {
            Some(r) => r,
            None => {
                step.dirty = true;
                self.run.insert(Run::new(t, and_value))
            }
        };
        if sample {
            run.restored = false;
        }
        if !run.counted && !run.restored && t.saturating_sub(run.since) >= spec.for_ns {
            run.counted = true;
            step.dirty = true;
            let and = spec.and.as_ref();
            step.done = Some(DoneEvidence {
                condition: spec.describe(),
                started_at: DateTime::from_timestamp_nanos(run.since),
                completed_at: DateTime::from_timestamp_nanos(t),
                duration_s: t.saturating_sub(run.since) as f64 / 1e9,
                and_point: and.map(|a| a.point.to_string()),
                and_min: and.and(run.min),
                and_avg: and.and((run.n > 0).then(|| run.sum / f64::from(run.n))),
                and_max: and.and(run.max),
            });
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::state::StateValue;

    const M: i64 = 60_000_000_000;

    fn spec() -> DoneWhen {
        DoneWhen {
            point: Arc::from("engine_state"),
            equals: StateSet(vec![StateValue::Name("running".into())]),
            for_ns: 30 * M,
            and: Some(DoneAnd {
                point: Arc::from("load_pct"),
                limit: Limit::Above(30.0),
            }),
        }
    }

    fn running(p: &mut DoneProgress, s: &DoneWhen, t: i64) -> DoneStep {
        p.main_sample(s, &Value::Str("running".into()), t)
    }

    #[test]
    fn both_parts_for_the_whole_time() {
        let s = spec();
        let mut p = DoneProgress::default();
        // Running, but the load is not read yet: no run.
        assert!(running(&mut p, &s, 0).done.is_none());
        assert!(p.run.is_none());
        p.and_sample(&s, &Value::Float(40.0), M);
        assert_eq!(p.run.as_ref().map(|r| r.since), Some(M));
        p.and_sample(&s, &Value::Float(60.0), 10 * M);
        assert!(p.tick(&s, 30 * M).done.is_none());
        assert_eq!(p.deadline(&s), Some(31 * M));
        let done = p.tick(&s, 31 * M).done.expect("completed");
        assert_eq!(done.duration_s, 1800.0);
        assert_eq!(
            done.condition,
            "engine_state = running for 30m and load_pct > 30"
        );
        assert_eq!(
            (done.and_min, done.and_avg, done.and_max),
            (Some(40.0), Some(50.0), Some(60.0))
        );
        // Counted once: holding on does not count again.
        assert!(p.tick(&s, 90 * M).done.is_none());
        assert!(running(&mut p, &s, 91 * M).done.is_none());
    }

    #[test]
    fn a_contrary_reading_or_a_gap_restarts_the_count() {
        let s = spec();
        let mut p = DoneProgress::default();
        p.and_sample(&s, &Value::Float(40.0), 0);
        running(&mut p, &s, 0);
        p.and_sample(&s, &Value::Float(20.0), 20 * M);
        assert!(p.run.is_none());
        p.and_sample(&s, &Value::Float(40.0), 21 * M);
        assert!(p.tick(&s, 50 * M).done.is_none());
        assert!(p.gap());
        running(&mut p, &s, 52 * M);
        assert!(p.tick(&s, 81 * M).done.is_none());
        assert!(p.tick(&s, 82 * M).done.is_some());
    }
}
