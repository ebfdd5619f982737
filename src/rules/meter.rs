//! `type = "meter"`: a preventive work order every `every` units of a counter (`trips_total`,
//! `run_hours`) since the reading at the last closed work order of the rule, raised `lead`
//! early.
//!
//! Usage is the sum of the counter's increments that can be trusted, never `reading -
//! baseline`: a counter that resets, wraps around its register, is replaced by a new device or
//! jumps implausibly contributes only what it really counted. A step is trusted when it is no
//! larger than `max_rate` allows for the time since the previous reading (when configured),
//! else no larger than one whole interval (`every`):
//! - forward and plausible: counted;
//! - back, and the previous reading near the top of a 16- or 32-bit register with a plausible
//!   wrapped step: a wrap-around, the wrapped step is counted;
//! - back to a small value (a plausible step from zero): a reset, the new reading is counted
//!   (the counter restarted from zero);
//! - otherwise (back to a large value, or forward implausibly far): a replaced device or a
//!   garbled reading; nothing is counted and the new reading becomes the reference.
//!
//! A comm gap needs nothing special: the step across it is judged like any other.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::template::fmt_num;

pub(in crate::rules) mod config;

const NS_PER_HOUR: f64 = 3_600_000_000_000.0;

/// A validated meter rule.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSpec {
    pub point: Arc<str>,
    /// Units of the counter between work orders.
    pub every: f64,
    /// Raised this many units early.
    pub lead: f64,
    /// The reading of the last service before the gateway knew the asset.
    pub baseline: Option<f64>,
    /// `baseline = "handover"`: the first baseline of each asset is its counter in the newest
    /// handover record holding it (the rule loop hands those to the engine). An asset no record
    /// holds yet counts from its first reading, as without a baseline, and its evidence says
    /// so; a record made later does not move a baseline already taken.
    pub baseline_from_handover: bool,
    /// The fastest the counter can plausibly grow, in units per hour.
    pub max_rate: Option<f64>,
}

impl MeterSpec {
    pub fn describe(&self) -> String {
        let mut s = format!(
            "every {} of {} (raised {} early)",
            fmt_num(self.every),
            self.point,
            fmt_num(self.lead)
        );
        if let Some(b) = self.baseline {
            s.push_str(&format!(", baseline {}", fmt_num(b)));
        }
        if self.baseline_from_handover {
            s.push_str(", baseline from the handover record");
        }
        s
    }

    fn plausible(&self, step: f64, dt_ns: i64) -> bool {
        match self.max_rate {
            // A minute and 10 % of slack for clocks and polling jitter, one unit for rounding.
            Some(rate) => {
                step <= rate * (dt_ns.max(0) as f64 / NS_PER_HOUR + 1.0 / 60.0) * 1.1 + 1.0
            }
            None => step <= self.every,
        }
    }
}

/// How a reading was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first reading, or one older than the reference: nothing counted.
    First,
    Counted,
    Wrapped,
    Reset,
    /// A replaced device or an implausible jump: nothing counted.
    Untrusted,
    Stale,
}

/// The state of a meter rule on one asset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeterState {
    /// The last reading taken, and its time (ns).
    pub last: Option<(f64, i64)>,
    /// Trusted usage since the baseline.
    pub usage: f64,
    /// The reading the current interval counts from (evidence only).
    pub baseline: Option<f64>,
    /// Fired and the work order not closed yet.
    pub fired: bool,
    /// A work order of the rule was closed: the configured `baseline` no longer applies.
    pub rebased: bool,
    /// Where `baseline` came from (evidence; absent in state saved before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_from: Option<BaselineFrom>,
}

/// Where a meter's baseline came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineFrom {
    /// The rule's `baseline = N`.
    Configured,
    /// `baseline = "handover"`: the asset's counter in a handover record.
    Handover,
    /// The first reading the rule saw.
    FirstReading,
    /// `baseline = "handover"`, but no handover record held the asset's counter when the rule
    /// first saw it (or the record's value was above that reading): the first reading.
    NoHandoverRecord,
    /// The reading when a work order of the rule was closed.
    Closed,
}

impl BaselineFrom {
    /// The evidence's words for it.
    pub fn describe(self) -> &'static str {
        match self {
            BaselineFrom::Configured => "the rule's configured baseline",
            BaselineFrom::Handover => "the handover record",
            BaselineFrom::FirstReading => "the first reading seen",
            BaselineFrom::NoHandoverRecord => {
                "the first reading seen: no handover record held this counter yet (or its value was above the reading)"
            }
            BaselineFrom::Closed => "the reading when the last work order of the rule was closed",
        }
    }
}

impl MeterState {
    /// Takes a reading.
    pub fn sample(&mut self, spec: &MeterSpec, reading: f64, t: i64) -> Step {
        self.sample_with(spec, reading, t, None)
    }

    /// Takes a reading; `handover` is the asset's counter in the newest handover record that
    /// holds it (used by `baseline = "handover"` at the first reading only).
    pub fn sample_with(
        &mut self,
        spec: &MeterSpec,
        reading: f64,
        t: i64,
        handover: Option<f64>,
    ) -> Step {
        if !reading.is_finite() {
            return Step::Stale;
        }
        let Some((prev, prev_t)) = self.last else {
            self.last = Some((reading, t));
            let (given, from) = if spec.baseline_from_handover {
                (handover, BaselineFrom::Handover)
            } else {
                (spec.baseline, BaselineFrom::Configured)
            };
            match given {
                Some(b) if !self.rebased && reading >= b => {
                    self.usage = reading - b;
                    self.baseline = Some(b);
                    self.baseline_from = Some(from);
                }
                _ => {
                    self.usage = 0.0;
                    self.baseline = Some(reading);
                    self.baseline_from = Some(if self.rebased {
                        BaselineFrom::Closed
                    } else if spec.baseline_from_handover {
                        BaselineFrom::NoHandoverRecord
                    } else {
                        BaselineFrom::FirstReading
                    });
                }
            }
            return Step::First;
        };
        if t < prev_t {
            return Step::Stale;
        }
        let dt = t - prev_t;
        let step = reading - prev;
        let kind = if step >= 0.0 {
            if spec.plausible(step, dt) {
                self.usage += step;
                Step::Counted
            } else {
                Step::Untrusted
            }
        } else if -step <= 1e-9 * prev.abs().max(1.0) {
            // Float noise of a scaled register, not a reset.
            return Step::Stale;
        } else if let Some(wrapped) = [65_536.0, 4_294_967_296.0]
            .into_iter()
            .filter(|m| prev < *m && reading >= 0.0)
            .map(|m| m - prev + reading)
            .find(|w| spec.plausible(*w, dt))
        {
            self.usage += wrapped;
            Step::Wrapped
        } else if reading >= 0.0 && spec.plausible(reading, dt) {
            self.usage += reading;
            Step::Reset
        } else {
            Step::Untrusted
        };
        self.last = Some((reading, t));
        kind
    }

    /// The rule is due (and not fired yet for this interval).
    #[inline]
    pub fn due(&self, spec: &MeterSpec) -> bool {
        !self.fired && self.last.is_some() && self.usage >= spec.every - spec.lead
    }

    /// The reading at which the interval ends (evidence `threshold`).
    pub fn due_reading(&self, spec: &MeterSpec) -> Option<f64> {
        self.last.map(|(r, _)| r + (spec.every - self.usage))
    }

    /// A work order of the rule was closed: the latest reading is the new baseline.
    pub fn close(&mut self) {
        self.fired = false;
        self.rebased = true;
        self.usage = 0.0;
        self.baseline = self.last.map(|(r, _)| r);
        self.baseline_from = Some(BaselineFrom::Closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: i64 = 1_000_000_000;

    fn spec(every: f64, lead: f64) -> MeterSpec {
        MeterSpec {
            point: "trips_total".into(),
            every,
            lead,
            baseline: None,
            baseline_from_handover: false,
            max_rate: None,
        }
    }

    #[test]
    fn first_reading_is_the_baseline_unless_configured() {
        let s = spec(100_000.0, 5_000.0);
        let mut m = MeterState::default();
        m.sample(&s, 1_200_000.0, 0);
        assert!(
            !m.due(&s),
            "a lift at 1.2 million trips is not overdue on day one"
        );
        m.sample(&s, 1_294_999.0, S);
        assert!(!m.due(&s));
        m.sample(&s, 1_295_000.0, 2 * S);
        assert!(m.due(&s));
        assert_eq!(m.due_reading(&s), Some(1_300_000.0));

        let s = MeterSpec {
            baseline: Some(1_150_000.0),
            ..spec(100_000.0, 5_000.0)
        };
        let mut m = MeterState::default();
        m.sample(&s, 1_260_000.0, 0);
        assert!(m.due(&s), "configured baseline: overdue at once");
    }

    #[test]
    fn handover_baseline_at_the_first_reading_only() {
        let s = MeterSpec {
            baseline_from_handover: true,
            ..spec(100_000.0, 5_000.0)
        };
        let mut m = MeterState::default();
        m.sample_with(&s, 1_260_000.0, 0, Some(1_150_000.0));
        assert!(m.due(&s), "counted from the handover record's reading");
        assert_eq!(m.baseline_from, Some(BaselineFrom::Handover));
        m.sample_with(&s, 1_260_001.0, S, Some(0.0));
        assert_eq!(m.usage, 110_001.0, "a later record does not move it");

        let mut m = MeterState::default();
        m.sample_with(&s, 1_260_000.0, 0, None);
        assert_eq!(
            (m.usage, m.baseline_from),
            (0.0, Some(BaselineFrom::NoHandoverRecord))
        );
        // A record above the reading (another counter, a replaced device) is not trusted.
        let mut m = MeterState::default();
        m.sample_with(&s, 1_000.0, 0, Some(2_000.0));
        assert_eq!(
            (m.usage, m.baseline_from),
            (0.0, Some(BaselineFrom::NoHandoverRecord))
        );
        // A plain rule ignores records.
        let mut m = MeterState::default();
        m.sample_with(&spec(100.0, 5.0), 1_000.0, 0, Some(900.0));
        assert_eq!(
            (m.usage, m.baseline_from),
            (0.0, Some(BaselineFrom::FirstReading))
        );
    }

    #[test]
    fn resets_wraps_and_replacements() {
        let s = spec(10_000.0, 0.0);
        let mut m = MeterState::default();
        m.sample(&s, 65_000.0, 0);
        assert_eq!(m.sample(&s, 65_500.0, S), Step::Counted);
        assert_eq!(m.sample(&s, 100.0, 2 * S), Step::Wrapped);
        assert_eq!(m.usage, 500.0 + 136.0);
        assert_eq!(
            m.sample(&s, 30_000.0, 3 * S),
            Step::Untrusted,
            "implausible jump"
        );
        assert_eq!(m.sample(&s, 20.0, 4 * S), Step::Reset);
        assert_eq!(m.usage, 656.0);
        assert_eq!(
            m.sample(&s, 5_000_000.0, 5 * S),
            Step::Untrusted,
            "new device"
        );
        assert_eq!(m.sample(&s, 5_000_010.0, 6 * S), Step::Counted);
        assert_eq!(m.usage, 666.0);
        // A 32-bit register rolls over.
        let mut m = MeterState::default();
        m.sample(&s, 4_294_967_000.0, 0);
        assert_eq!(m.sample(&s, 200.0, S), Step::Wrapped);
        assert_eq!(m.usage, 496.0);
        // Float noise of a scaled register going back a hair is not a reset.
        assert_eq!(m.sample(&s, 199.999_999_999_9, 2 * S), Step::Stale);
        assert_eq!(m.usage, 496.0);
    }

    #[test]
    fn max_rate_lets_a_long_gap_count() {
        let s = MeterSpec {
            max_rate: Some(1.0),
            ..spec(2_000.0, 100.0)
        };
        let mut m = MeterState::default();
        m.sample(&s, 10_000.0, 0);
        // Three months without a reading: 2,160 h of running is plausible for 2,160 h.
        let gap = 2_160 * 3_600 * S;
        assert_eq!(m.sample(&s, 12_160.0, gap), Step::Counted);
        assert!(m.due(&s));
        // But 100 h in one hour is not.
        assert_eq!(m.sample(&s, 12_260.0, gap + 3_600 * S), Step::Untrusted);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Inc(u32),
        Reset,
        Replace(u32),
        Close,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u32..400).prop_map(Op::Inc),
            1 => Just(Op::Reset),
            1 => (0u32..1_000_000).prop_map(Op::Replace),
            2 => Just(Op::Close),
        ]
    }

    proptest! {
        /// Fires once per interval of true usage, across 16-bit wrap-around, resets and
        /// replaced devices, with baselines reset by closing the work order.
        #[test]
        fn fires_once_per_interval_of_true_usage(
            start in 0u32..65_536,
            ops in prop::collection::vec(op(), 1..400),
        ) {
            let every = 1_000.0;
            let s = spec(every, 0.0);
            let mut m = MeterState::default();
            let mut t = 0;
            // The device: a 16-bit register.
            let mut register = start;
            m.sample(&s, f64::from(register), t);
            let (mut fires, mut oracle_fires) = (0, 0);
            let mut oracle_usage = 0.0;
            let mut oracle_fired = false;
            for op in ops {
                t += S;
                match op {
                    Op::Inc(k) => {
                        register = (register + k) % 65_536;
                        oracle_usage += f64::from(k);
                    }
                    // Resets that look like a wrap (near the top of the register) are
                    // ambiguous by nature; the generator avoids them.
                    Op::Reset if register < 65_536 - 2_000 => register = 0,
                    Op::Reset => {}
                    // A replacement device: its counter is far from the old one (one that
                    // lands within an interval of it is indistinguishable from usage).
                    Op::Replace(r) => {
                        let r = r % 65_536;
                        if r >= 2_000 && r.abs_diff(register) > 2_000 {
                            register = r;
                        }
                    }
                    Op::Close => {
                        if m.fired {
                            m.close();
                            prop_assert!(oracle_fired);
                            oracle_usage = 0.0;
                            oracle_fired = false;
                        }
                        continue;
                    }
                }
                m.sample(&s, f64::from(register), t);
                if m.due(&s) {
                    m.fired = true;
                    fires += 1;
                }
                if !oracle_fired && oracle_usage >= every {
                    oracle_fired = true;
                    oracle_fires += 1;
                }
                prop_assert_eq!(m.usage, oracle_usage);
            }
            prop_assert_eq!(fires, oracle_fires);
        }
    }
}
