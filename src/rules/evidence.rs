//! Evidence of one episode of a rule on one asset: from the reading that started it to the one
//! that cleared it, with first/last/min/max and the last readings (bounded).

use std::collections::VecDeque;

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::types::{Evidence, EvidenceReading, EvidenceValue};
use crate::model::Value;

/// Readings kept per episode: the readings that made the rule fire (the latest ones, when there
/// were more).
pub const MAX_READINGS: usize = 20;

pub fn evidence_value(v: &Value) -> EvidenceValue {
    match v {
        Value::Float(f) => EvidenceValue::Number(*f),
        Value::Int(i) => EvidenceValue::Number(*i as f64),
        Value::Bool(b) => EvidenceValue::Bool(*b),
        Value::Str(s) => EvidenceValue::Text(s.clone()),
    }
}

pub fn reading(at_ns: i64, value: EvidenceValue) -> EvidenceReading {
    EvidenceReading {
        at: DateTime::from_timestamp_nanos(at_ns),
        value,
    }
}

fn same(a: &EvidenceValue, b: &Value) -> bool {
    match (a, b) {
        (EvidenceValue::Bool(x), Value::Bool(y)) => x == y,
        (EvidenceValue::Text(x), Value::Str(y)) => x == y,
        (EvidenceValue::Number(x), v) => v.as_f64().is_some_and(|y| y == *x),
        _ => false,
    }
}

/// One episode's readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub first: EvidenceValue,
    pub last: EvidenceValue,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// (ns since epoch, value), oldest first.
    pub readings: VecDeque<(i64, EvidenceValue)>,
    /// Readings not yet sent with a trigger: each trigger carries only what is new, so a store
    /// that appends evidence does not duplicate readings.
    pub unsent: usize,
}

impl Episode {
    pub fn new(at_ns: i64, v: &Value) -> Episode {
        let ev = evidence_value(v);
        let n = v.as_f64();
        let mut readings = VecDeque::with_capacity(4);
        readings.push_back((at_ns, ev.clone()));
        Episode {
            first: ev.clone(),
            last: ev,
            min: n,
            max: n,
            readings,
            unsent: 1,
        }
    }

    /// Starts over with a first reading, keeping the allocation.
    pub fn reset(&mut self, at_ns: i64, v: &Value) {
        let ev = evidence_value(v);
        let n = v.as_f64();
        self.readings.clear();
        self.readings.push_back((at_ns, ev.clone()));
        self.first = ev.clone();
        self.last = ev;
        self.min = n;
        self.max = n;
        self.unsent = 1;
    }

    /// Adds a reading. Repeats of the last value only move `last` (a state held for an hour
    /// is one reading, not 3,600).
    pub fn record(&mut self, at_ns: i64, v: &Value) {
        if let Some(n) = v.as_f64().filter(|n| !n.is_nan()) {
            self.min = Some(self.min.map_or(n, |m| m.min(n)));
            self.max = Some(self.max.map_or(n, |m| m.max(n)));
        }
        if same(&self.last, v) && !self.readings.is_empty() {
            return;
        }
        self.last = evidence_value(v);
        if self.readings.len() == MAX_READINGS {
            self.readings.pop_front();
        }
        self.readings.push_back((at_ns, self.last.clone()));
        self.unsent = (self.unsent + 1).min(MAX_READINGS);
    }

    /// The evidence for a trigger now; marks the readings as sent.
    pub fn evidence(
        &mut self,
        point: Option<&str>,
        unit: Option<&str>,
        threshold: Option<String>,
    ) -> Evidence {
        let skip = self.readings.len() - self.unsent.min(self.readings.len());
        let readings = self
            .readings
            .iter()
            .skip(skip)
            .map(|(at, v)| reading(*at, v.clone()))
            .collect();
        self.unsent = 0;
        Evidence {
            point: point.map(str::to_string),
            value: Some(self.last.clone()),
            unit: unit.map(str::to_string),
            threshold,
            first_value: Some(self.first.clone()),
            last_value: Some(self.last.clone()),
            min: self.min,
            max: self.max,
            readings,
            ..Evidence::default()
        }
    }
}

/// Episodes no longer needed, for reuse: a condition that comes and goes without firing (an
/// on-delay cut short) then allocates nothing.
#[derive(Debug, Default)]
pub struct EpisodePool {
    // The boxes are what is reused (a condition holds its episode boxed).
    #[allow(clippy::vec_box)]
    free: Vec<Box<Episode>>,
}

impl EpisodePool {
    const MAX: usize = 4096;

    pub fn take(&mut self, at_ns: i64, v: &Value) -> Box<Episode> {
        match self.free.pop() {
            Some(mut e) => {
                e.reset(at_ns, v);
                e
            }
            None => Box::new(Episode::new(at_ns, v)),
        }
    }

    pub fn give(&mut self, e: Option<Box<Episode>>) {
        if let Some(e) = e
            && self.free.len() < Self::MAX
        {
            self.free.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_sent_once() {
        let mut e = Episode::new(0, &Value::Float(81.0));
        for i in 1..30 {
            e.record(i, &Value::Float(81.0 + i as f64));
        }
        let ev = e.evidence(Some("t"), Some("degC"), Some("80".into()));
        assert_eq!(ev.readings.len(), MAX_READINGS);
        assert_eq!(ev.first_value, Some(EvidenceValue::Number(81.0)));
        assert_eq!(ev.last_value, Some(EvidenceValue::Number(110.0)));
        assert_eq!((ev.min, ev.max), (Some(81.0), Some(110.0)));
        e.record(40, &Value::Float(70.0));
        e.record(41, &Value::Float(70.0));
        let ev = e.evidence(Some("t"), None, None);
        assert_eq!(ev.readings.len(), 1, "only the new reading, repeats folded");
        assert_eq!(ev.min, Some(70.0));
    }
}
