//! `type = "threshold"`: a numeric point above and/or below limits, with hysteresis (`clear`,
//! `clear_above`, `clear_below`), an on-delay (`for`) and an off-delay (`clear_for`).
//!
//! A high limit is crossed when the value is strictly above `above` and cleared when it falls
//! to `clear_above` or lower; a low limit is crossed strictly below `below` and cleared at
//! `clear_below` or higher. Noise inside the band between the limit and its clear level
//! changes nothing.

use serde::{Deserialize, Serialize};

use super::condition::{Condition, Delays};
use super::template::fmt_num;

pub(in crate::rules) mod config;

/// A validated threshold rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdSpec {
    pub point: std::sync::Arc<str>,
    pub above: Option<f64>,
    pub below: Option<f64>,
    /// Where a high excursion clears (default: `above`).
    pub clear_above: f64,
    /// Where a low excursion clears (default: `below`).
    pub clear_below: f64,
    pub delays: Delays,
}

/// Which limit an excursion crossed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    #[default]
    High,
    Low,
}

/// The state of a threshold rule on one asset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdState {
    pub high: bool,
    pub low: bool,
    /// The limit of the current or last excursion (evidence `threshold`).
    #[serde(default)]
    pub side: Side,
    pub cond: Condition,
}

impl ThresholdSpec {
    /// The raw condition after hysteresis; updates the excursion flags.
    #[inline]
    pub fn raw(&self, st: &mut ThresholdState, v: f64) -> bool {
        if let Some(a) = self.above {
            if st.high {
                if v <= self.clear_above {
                    st.high = false;
                }
            } else if v > a {
                st.high = true;
                st.side = Side::High;
            }
        }
        if let Some(b) = self.below {
            if st.low {
                if v >= self.clear_below {
                    st.low = false;
                }
            } else if v < b {
                st.low = true;
                st.side = Side::Low;
            }
        }
        st.high || st.low
    }

    /// The limit crossed, as text (`{threshold}` and evidence).
    pub fn limit_text(&self, side: Side) -> String {
        match (side, self.above, self.below) {
            (Side::High, Some(a), _) | (Side::Low, Some(a), None) => fmt_num(a),
            (_, _, Some(b)) => fmt_num(b),
            (_, None, None) => String::new(),
        }
    }

    /// For `check`: `> 80 (clear <= 75) for 30s`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = self.above {
            let mut s = format!("{} > {}", self.point, fmt_num(a));
            if self.clear_above != a {
                s.push_str(&format!(" (clears <= {})", fmt_num(self.clear_above)));
            }
            parts.push(s);
        }
        if let Some(b) = self.below {
            let mut s = format!("{} < {}", self.point, fmt_num(b));
            if self.clear_below != b {
                s.push_str(&format!(" (clears >= {})", fmt_num(self.clear_below)));
            }
            parts.push(s);
        }
        let mut s = parts.join(" or ");
        append_delays(&mut s, self.delays);
        s
    }
}

pub(crate) fn append_delays(s: &mut String, d: Delays) {
    if d.on_ns > 0 {
        s.push_str(&format!(" for {}", fmt_duration_ns(d.on_ns)));
    }
    if d.off_ns > 0 {
        s.push_str(&format!(", clear after {}", fmt_duration_ns(d.off_ns)));
    }
}

pub(crate) fn fmt_duration_ns(ns: i64) -> String {
    humantime::format_duration(std::time::Duration::from_nanos(ns.max(0) as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;
    use crate::rules::flap::FlapSpec;
    use proptest::prelude::*;

    const S: i64 = 1_000_000_000;

    fn spec(
        above: Option<f64>,
        clear_above: f64,
        below: Option<f64>,
        clear_below: f64,
    ) -> ThresholdSpec {
        ThresholdSpec {
            point: "p".into(),
            above,
            below,
            clear_above,
            clear_below,
            delays: Delays::default(),
        }
    }

    #[test]
    fn hysteresis_both_limits() {
        let s = spec(Some(80.0), 75.0, Some(2.0), 2.3);
        let mut st = ThresholdState::default();
        assert!(!s.raw(&mut st, 80.0), "at the limit is not above it");
        assert!(s.raw(&mut st, 80.1));
        assert_eq!(s.limit_text(st.side), "80");
        assert!(s.raw(&mut st, 76.0), "inside the band it holds");
        assert!(!s.raw(&mut st, 75.0), "clears at the clear level");
        assert!(s.raw(&mut st, 1.9));
        assert_eq!(s.limit_text(st.side), "2");
        assert!(s.raw(&mut st, 2.2));
        assert!(!s.raw(&mut st, 2.3));
        assert_eq!(
            s.describe(),
            "p > 80 (clears <= 75) or p < 2 (clears >= 2.3)"
        );
    }

    proptest! {
        /// Noise inside the band never changes the condition, whichever side it started on.
        #[test]
        fn noise_inside_the_band_never_flaps(
            start_high in any::<bool>(),
            noise in prop::collection::vec(75.0f64..=80.0, 1..200),
        ) {
            let s = spec(Some(80.0), 75.0 - 1e-9, None, 0.0);
            let mut st = ThresholdState::default();
            let first = s.raw(&mut st, if start_high { 90.0 } else { 10.0 });
            prop_assert_eq!(first, start_high);
            let mut c = Condition::default();
            let d = Delays::default();
            let flap = FlapSpec::default();
            let mut pool = crate::rules::evidence::EpisodePool::default();
            c.evaluate(first, 0, &Value::Float(0.0), d, Some(&flap), &mut pool);
            for (i, v) in noise.iter().enumerate() {
                let raw = s.raw(&mut st, *v);
                prop_assert_eq!(raw, start_high);
                let o = c.evaluate(raw, (i as i64 + 1) * S, &Value::Float(*v), d, Some(&flap), &mut pool);
                prop_assert!(!o.any_trigger());
            }
        }

        /// `for` fires at the first sample at or after start + for, never before.
        #[test]
        fn on_delay_is_exact(
            for_s in 0i64..120,
            gaps in prop::collection::vec(1i64..20_000, 1..60),
        ) {
            let d = Delays { on_ns: for_s * S, off_ns: 0 };
            let s = spec(Some(10.0), 10.0, None, 0.0);
            let mut st = ThresholdState::default();
            let mut c = Condition::default();
            let mut t = 5 * S;
            let start = t;
            let mut fired_at = None;
            let mut times = vec![t];
            for g in &gaps {
                times.push(times.last().unwrap() + g * 1_000_000);
            }
            for &at in &times {
                t = at;
                let raw = s.raw(&mut st, 11.0);
                let o = c.evaluate(raw, t, &Value::Float(11.0), d, None, &mut Default::default());
                if o.fire {
                    prop_assert!(fired_at.is_none());
                    fired_at = Some(t);
                }
            }
            let expected = times.iter().copied().find(|&x| x - start >= for_s * S);
            prop_assert_eq!(fired_at, expected);
            let _ = t;
        }
    }
}
