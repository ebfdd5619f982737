//! Counters per local day: for every `kind = "counter"` point of an asset, the first and last
//! reading of the day and its increase, the sum of the counter's rises. A counter that goes
//! back was reset: its new value counts from 0. The rise since the last reading before (the
//! night's, or the rise while the gateway was down) counts on the day it is first seen, so
//! the increases of consecutive days add up to the counter's whole advance.

use std::collections::HashMap;
use std::sync::Arc;

use super::day::Day;
use crate::workorder::availability::CounterDay;

/// Today's row of one counter.
#[derive(Debug, Clone)]
struct Row {
    day: Arc<str>,
    first_value: f64,
    first_ms: i64,
    last_value: f64,
    last_ms: i64,
    increase: f64,
}

/// One counter point of one asset.
#[derive(Debug, Clone)]
pub(super) struct CounterTrack {
    /// Index of the point in the profile.
    pub point: usize,
    /// The last reading taken (this run, or where the store left off).
    last: Option<f64>,
    row: Option<Row>,
    /// Earlier days' rows not handed to the store yet (a day ended between two flushes).
    ended: Vec<Row>,
    /// `row` changed since it was last handed to the store.
    pub dirty: bool,
}

impl CounterTrack {
    /// A counter taking up where `seed` (its newest stored day) left it.
    pub fn new(point: usize, seed: Option<(CounterDay, bool)>, day: &Day) -> Self {
        let mut t = CounterTrack {
            point,
            last: None,
            row: None,
            ended: Vec::new(),
            dirty: false,
        };
        if let Some((s, dirty)) = seed {
            t.last = Some(s.last_value);
            t.dirty = dirty;
            // Today's row goes on; an older day's only gives the last reading.
            if *s.day == *day.label {
                t.row = Some(Row {
                    day: day.label.clone(),
                    first_value: s.first_value,
                    first_ms: s.first_ms,
                    last_value: s.last_value,
                    last_ms: s.last_ms,
                    increase: s.increase,
                });
            }
        }
        t
    }

    /// Takes a reading `x` at `now_ms`, on `day`.
    #[inline]
    pub fn observe(&mut self, x: f64, now_ms: i64, day: &Day) {
        if !x.is_finite() {
            return;
        }
        let rise = match self.last {
            None => 0.0,
            Some(l) if x >= l => x - l,
            // Float noise of a scaled register going back a hair: not a reset.
            Some(l) if l - x <= 1e-9 * l.abs().max(1.0) => {
                if let Some(r) = self.row.as_mut().filter(|r| *r.day == *day.label) {
                    r.last_ms = now_ms;
                }
                return;
            }
            // Reset: the counter started again from 0.
            Some(_) => x.max(0.0),
        };
        // A counter that stands still changes nothing worth a write: its row's last time moves
        // in memory and reaches the store with the next rise (or the day's end).
        if rise == 0.0
            && let Some(r) = self.row.as_mut().filter(|r| *r.day == *day.label)
        {
            r.last_ms = now_ms;
            return;
        }
        self.last = Some(x);
        let was_dirty = std::mem::replace(&mut self.dirty, true);
        match self.row.as_mut() {
            Some(r) if *r.day == *day.label => {
                r.increase += rise;
                r.last_value = x;
                r.last_ms = now_ms;
            }
            _ => {
                let old = self.row.replace(Row {
                    day: day.label.clone(),
                    first_value: x,
                    first_ms: now_ms,
                    last_value: x,
                    last_ms: now_ms,
                    increase: rise,
                });
                if let Some(old) = old.filter(|_| was_dirty) {
                    self.ended.push(old);
                }
            }
        }
    }

    pub fn has_row(&self) -> bool {
        self.row.is_some()
    }

    /// The current row for the store.
    pub fn row(&self, asset: &str, point: &str) -> Option<CounterDay> {
        self.row.as_ref().map(|r| r.for_store(asset, point))
    }

    /// Takes the rows of days that ended before they were handed to the store.
    pub fn take_ended(&mut self, asset: &str, point: &str, out: &mut Vec<CounterDay>) {
        out.extend(self.ended.drain(..).map(|r| r.for_store(asset, point)));
    }
}

impl Row {
    fn for_store(&self, asset: &str, point: &str) -> CounterDay {
        CounterDay {
            asset: asset.to_string(),
            point: point.to_string(),
            day: self.day.to_string(),
            first_value: self.first_value,
            first_ms: self.first_ms,
            last_value: self.last_value,
            last_ms: self.last_ms,
            increase: self.increase,
        }
    }
}

/// Where counters take up: the newest stored day of each (asset, point), and the rows of
/// assets a reload removed or changed (with whether they still need writing).
#[derive(Debug, Default)]
pub(super) struct Seeds(HashMap<(String, String), (CounterDay, bool)>);

impl Seeds {
    pub fn new(days: Vec<CounterDay>) -> Self {
        let mut s = Seeds::default();
        for d in days {
            s.put(d, false);
        }
        s
    }

    /// Keeps the newest day of `d`'s counter.
    pub fn put(&mut self, d: CounterDay, dirty: bool) {
        let key = (d.asset.clone(), d.point.clone());
        match self.0.get(&key) {
            Some((old, _)) if old.day > d.day => {}
            _ => {
                self.0.insert(key, (d, dirty));
            }
        }
    }

    pub fn take(&mut self, asset: &str, point: &str) -> Option<(CounterDay, bool)> {
        self.0.remove(&(asset.to_string(), point.to_string()))
    }
}
