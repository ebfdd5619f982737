//! `type = "state"`: a point `equals` one of some values (fault bits, panel states, door
//! states), held for `for`; or a count window: `count` entries into the state `within` a
//! sliding window (three door faults a day).
//!
//! An entry is a rising edge of the condition, or, on an `event` point, every sample that
//! matches (an event is a momentary occurrence). The count window fires when it holds `count`
//! entries and clears when it no longer does; entries while it fires are occurrences.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::condition::Delays;
use super::template::fmt_num;
use super::threshold::{append_delays, fmt_duration_ns};
use super::types::EvidenceValue;
use crate::model::Value;

pub(in crate::rules) mod config;

/// One value of `equals`: the profile's value test, which `unavailable_when` uses too, so a
/// value means the same in a rule and in a profile.
pub use crate::profile::unavailable::Expect as StateValue;

/// A value of `equals` as a reader writes it: `fault`, `3`, `true`.
pub fn value_text(v: &StateValue) -> String {
    match v {
        StateValue::Bool(b) => b.to_string(),
        StateValue::Number(n) => fmt_num(*n),
        StateValue::Name(s) => s.clone(),
    }
}

/// `equals = value` or `equals = [values]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSet(pub Vec<StateValue>);

impl StateSet {
    #[inline]
    pub fn matches(&self, v: &Value) -> bool {
        self.0.iter().any(|s| s.matches(v))
    }

    /// `open`, or `fault, trip`.
    pub fn text(&self) -> String {
        self.0.iter().map(value_text).collect::<Vec<_>>().join(", ")
    }
}

/// A validated state rule.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSpec {
    pub point: Arc<str>,
    /// `None`: the point's alarm or event is true (alarm and event points only).
    pub equals: Option<StateSet>,
    pub mode: StateMode,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StateMode {
    /// The state held for `for` (then cleared after `clear_for`).
    Hold(Delays),
    /// `count` entries within `within`.
    Count { count: u32, within_ns: i64 },
}

impl StateSpec {
    #[inline]
    pub fn matches(&self, v: &Value) -> bool {
        match &self.equals {
            Some(set) => set.matches(v),
            None => v.as_f64().is_some_and(|x| x != 0.0),
        }
    }

    /// `{threshold}` and evidence: the states, or the count window.
    pub fn threshold_text(&self) -> String {
        let states = self
            .equals
            .as_ref()
            .map(StateSet::text)
            .unwrap_or_else(|| "true".into());
        match self.mode {
            StateMode::Hold(_) => states,
            StateMode::Count { count, within_ns } => {
                format!("{count} x {states} within {}", fmt_duration_ns(within_ns))
            }
        }
    }

    pub fn describe(&self) -> String {
        let states = self
            .equals
            .as_ref()
            .map(|s| {
                if s.0.len() == 1 {
                    format!("= {}", s.text())
                } else {
                    format!("in [{}]", s.text())
                }
            })
            .unwrap_or_else(|| "= true".into());
        match self.mode {
            StateMode::Hold(d) => {
                let mut s = format!("{} {states}", self.point);
                append_delays(&mut s, d);
                s
            }
            StateMode::Count { count, within_ns } => format!(
                "{} {states}: {count} times within {}",
                self.point,
                fmt_duration_ns(within_ns)
            ),
        }
    }
}

/// `count` entries `within` a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub count: u32,
    pub within_ns: i64,
}

/// A count window on one asset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CountState {
    /// The condition at the last sample (to see rising edges).
    pub raw: bool,
    pub firing: bool,
    /// The last `count` entries: (ns since epoch, value), oldest first.
    pub entries: VecDeque<(i64, EvidenceValue)>,
}

/// What a sample or tick did to a count window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountOutcome {
    pub fire: bool,
    pub occurrence: bool,
    pub clear: bool,
    pub dirty: bool,
}

impl CountState {
    fn holds(&self, w: Window, now: i64) -> bool {
        self.entries.len() >= w.count as usize
            && self
                .entries
                .front()
                .is_some_and(|(t, _)| now.saturating_sub(*t) < w.within_ns)
    }

    /// A sample at `t`. `entry`: it is an entry into the state (a rising edge, or a matching
    /// event). `suppressed`: it is observed but not counted.
    pub fn sample(
        &mut self,
        matches: bool,
        event: bool,
        t: i64,
        value: &Value,
        w: Window,
        suppressed: bool,
    ) -> CountOutcome {
        let entry = matches && (event || !self.raw);
        let mut out = CountOutcome {
            dirty: matches != self.raw,
            ..Default::default()
        };
        self.raw = matches;
        if suppressed {
            return out;
        }
        if entry {
            if self.entries.len() >= w.count as usize {
                self.entries.pop_front();
            }
            self.entries
                .push_back((t, super::evidence::evidence_value(value)));
            out.dirty = true;
            if self.firing {
                out.occurrence = true;
            } else if self.holds(w, t) {
                self.firing = true;
                out.fire = true;
            }
        }
        if self.firing && !out.fire && !self.holds(w, t) {
            self.firing = false;
            out.clear = true;
        }
        out
    }

    /// A clock tick: the window slid past its oldest entry.
    pub fn tick(&mut self, now: i64, w: Window) -> CountOutcome {
        if self.firing && !self.holds(w, now) {
            self.firing = false;
            return CountOutcome {
                clear: true,
                dirty: true,
                ..Default::default()
            };
        }
        CountOutcome::default()
    }

    pub fn deadline(&self, within_ns: i64) -> Option<i64> {
        if self.firing {
            self.entries
                .front()
                .map(|(t, _)| t.saturating_add(within_ns))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000_000;

    #[test]
    fn state_values_match_decoded_samples() {
        let open = StateValue::Name("open".into());
        assert!(open.matches(&Value::Str("open".into())));
        assert!(!open.matches(&Value::Str("closed".into())));
        assert!(StateValue::Bool(true).matches(&Value::Bool(true)));
        assert!(StateValue::Bool(true).matches(&Value::Int(1)));
        assert!(!StateValue::Bool(true).matches(&Value::Bool(false)));
        assert!(StateValue::Number(3.0).matches(&Value::Int(3)));
        assert!(
            StateValue::Number(3.0).matches(&Value::Str("3".into())),
            "unmapped enum value"
        );
        let set = StateSet(vec![
            StateValue::Name("fault".into()),
            StateValue::Name("trip".into()),
        ]);
        assert!(set.matches(&Value::Str("trip".into())));
        assert_eq!(set.text(), "fault, trip");
    }

    #[test]
    fn count_window_fires_on_the_third_entry_and_clears_when_it_slides() {
        let mut c = CountState::default();
        let v = Value::Bool(true);
        let off = Value::Bool(false);
        let w = Window {
            count: 3,
            within_ns: 24 * H,
        };
        // Three rising edges in 5 hours.
        for i in 0..3 {
            let t = i * 2 * H;
            let o = c.sample(true, false, t, &v, w, false);
            assert_eq!(o.fire, i == 2, "entry {i}");
            // Holding the state is not another entry.
            assert!(!c.sample(true, false, t + 1, &v, w, false).occurrence);
            c.sample(false, false, t + H, &off, w, false);
        }
        assert!(c.firing);
        assert!(c.sample(true, false, 5 * H, &v, w, false).occurrence);
        // The window now holds entries at 2h, 4h, 5h: it clears at 26h.
        assert_eq!(c.deadline(w.within_ns), Some(26 * H));
        assert!(!c.tick(26 * H - 1, w).clear);
        assert!(c.tick(26 * H, w).clear);
        assert!(!c.firing);
    }

    #[test]
    fn events_count_every_matching_sample_and_suppressed_ones_do_not() {
        let mut c = CountState::default();
        let v = Value::Bool(true);
        let w = Window {
            count: 2,
            within_ns: H,
        };
        assert!(!c.sample(true, true, 0, &v, w, true).fire);
        assert!(!c.sample(true, true, 1, &v, w, false).fire);
        assert!(c.sample(true, true, 2, &v, w, false).fire);
    }
}
