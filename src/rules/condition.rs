//! The state machine shared by `threshold` and `state` rules: a raw condition (already with
//! hysteresis) becomes a work-order condition through an on-delay (`for`), an off-delay
//! (`clear_for`) and the flap guard. Pure: the engine feeds it samples and clock ticks.

use serde::{Deserialize, Serialize};

use super::evidence::{Episode, EpisodePool};
use super::flap::{FlapChange, FlapHistory, FlapSpec};
use crate::model::Value;

/// On- and off-delay, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delays {
    pub on_ns: i64,
    pub off_ns: i64,
}

/// What one evaluation produced, in the order the triggers are emitted:
/// Fire, Occurrence, Flapping(true), Flapping(false), Clear.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub fire: bool,
    pub occurrence: bool,
    pub flapping: Option<bool>,
    pub clear: bool,
    /// Persisted state changed (the engine marks the instance dirty).
    pub dirty: bool,
}

impl Outcome {
    #[inline]
    pub fn any_trigger(&self) -> bool {
        self.fire || self.occurrence || self.clear || self.flapping.is_some()
    }
}

/// One rule on one asset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// The raw condition at the last sample.
    pub raw: bool,
    /// A Fire was emitted and no Clear since.
    pub firing: bool,
    /// Raw since then, not firing yet (on-delay running).
    pub pending_since: Option<i64>,
    /// Not raw since then while firing (off-delay running).
    pub clearing_since: Option<i64>,
    #[serde(default)]
    pub flap: FlapHistory,
    /// Readings of the episode, from the raw rising edge to the Clear.
    #[serde(default)]
    pub episode: Option<Box<Episode>>,
    /// Restored from saved state and no sample seen since: a delay that ran out while the
    /// gateway was down completes only once a fresh sample confirms the condition.
    #[serde(skip_serializing, default = "restored")]
    pub restored: bool,
}

fn restored() -> bool {
    true
}

impl Condition {
    /// A sample while the rule is suppressed (`unless`, asset offline): the raw condition
    /// follows the value, nothing fires or clears, and no delay runs.
    #[inline]
    pub fn observe_suppressed(&mut self, raw: bool, pool: &mut EpisodePool) -> bool {
        let dirty =
            raw != self.raw || self.pending_since.is_some() || self.clearing_since.is_some();
        self.raw = raw;
        self.pending_since = None;
        self.clearing_since = None;
        if !raw && !self.firing {
            pool.give(self.episode.take());
        }
        dirty
    }

    /// Suppression started: pending delays stop (they restart afterwards).
    pub fn suspend(&mut self) -> bool {
        let dirty = self.pending_since.is_some() || self.clearing_since.is_some();
        self.pending_since = None;
        self.clearing_since = None;
        dirty
    }

    /// Suppression ended at `t`: delays restart from `t` with the last known condition.
    pub fn resume(&mut self, t: i64) -> bool {
        if self.raw && !self.firing {
            self.pending_since = Some(t);
            true
        } else if !self.raw && self.firing && !self.flap.flapping {
            self.clearing_since = Some(t);
            true
        } else {
            false
        }
    }

    /// One evaluation: the sample `value` at `t` with raw condition `raw`.
    #[inline]
    pub fn evaluate(
        &mut self,
        raw: bool,
        t: i64,
        value: &Value,
        delays: Delays,
        flap: Option<&FlapSpec>,
        pool: &mut EpisodePool,
    ) -> Outcome {
        self.restored = false;
        let changed = raw != self.raw;
        let rising = raw && !self.raw;
        self.raw = raw;
        let flap_change = match flap {
            Some(spec) => self.flap.record(spec, changed),
            None => FlapChange::None,
        };
        if !changed && !raw && !self.firing {
            // The common case: nothing is wrong and nothing was.
            return Outcome::default();
        }
        self.evaluate_slow(raw, rising, changed, t, value, delays, flap_change, pool)
    }

    #[allow(clippy::too_many_arguments)]
    #[cold]
    fn evaluate_slow(
        &mut self,
        raw: bool,
        rising: bool,
        changed: bool,
        t: i64,
        value: &Value,
        delays: Delays,
        flap_change: FlapChange,
        pool: &mut EpisodePool,
    ) -> Outcome {
        let mut out = Outcome {
            dirty: changed,
            ..Outcome::default()
        };
        match &mut self.episode {
            Some(e) => e.record(t, value),
            None if raw || self.firing => self.episode = Some(pool.take(t, value)),
            None => {}
        }
        if self.firing {
            out.occurrence = rising;
        } else if raw {
            let since = *self.pending_since.get_or_insert(t);
            out.dirty |= since == t;
            if t.saturating_sub(since) >= delays.on_ns {
                out.fire = true;
            }
        } else {
            out.dirty |= self.pending_since.take().is_some();
            pool.give(self.episode.take());
        }
        match flap_change {
            FlapChange::Started => {
                out.flapping = Some(true);
                // Held firing: a flapping condition is a fault in itself, delay or not.
                out.fire |= !self.firing;
                if self.episode.is_none() {
                    self.episode = Some(pool.take(t, value));
                }
            }
            FlapChange::Stopped => out.flapping = Some(false),
            FlapChange::None => {}
        }
        if out.fire {
            self.firing = true;
            self.pending_since = None;
        }
        out.dirty |= out.flapping.is_some() || out.fire;
        if self.firing && !self.flap.flapping && !out.fire {
            if raw {
                out.dirty |= self.clearing_since.take().is_some();
            } else {
                let since = *self.clearing_since.get_or_insert(t);
                out.dirty |= since == t;
                if t.saturating_sub(since) >= delays.off_ns {
                    out.clear = true;
                }
            }
        } else {
            self.clearing_since = None;
        }
        if out.clear {
            self.firing = false;
            self.clearing_since = None;
        }
        out
    }

    /// A clock tick at `now`: completes the on- or off-delay when no sample contradicted it.
    pub fn tick(&mut self, now: i64, delays: Delays) -> Outcome {
        let mut out = Outcome::default();
        if self.restored {
            return out;
        }
        if !self.firing && self.raw {
            if let Some(since) = self.pending_since
                && now.saturating_sub(since) >= delays.on_ns
            {
                out.fire = true;
                self.firing = true;
                self.pending_since = None;
            }
        } else if self.firing
            && !self.raw
            && !self.flap.flapping
            && let Some(since) = self.clearing_since
            && now.saturating_sub(since) >= delays.off_ns
        {
            out.clear = true;
            self.firing = false;
            self.clearing_since = None;
        }
        out.dirty = out.fire || out.clear;
        out
    }

    /// When `tick` next has something to do.
    pub fn deadline(&self, delays: Delays) -> Option<i64> {
        if !self.firing && self.raw {
            self.pending_since.map(|s| s.saturating_add(delays.on_ns))
        } else if self.firing && !self.raw && !self.flap.flapping {
            self.clearing_since.map(|s| s.saturating_add(delays.off_ns))
        } else {
            None
        }
    }

    /// The episode's evidence source, created from `value` when there is none (a restored
    /// state, or a Clear by tick).
    pub fn episode_mut(&mut self) -> Option<&mut Episode> {
        self.episode.as_deref_mut()
    }

    /// Drops the episode after its Clear was emitted.
    pub fn end_episode(&mut self, pool: &mut EpisodePool) {
        pool.give(self.episode.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn eval(c: &mut Condition, raw: bool, t: i64, d: Delays) -> Outcome {
        c.evaluate(
            raw,
            t,
            &Value::Bool(raw),
            d,
            Some(&FlapSpec::default()),
            &mut EpisodePool::default(),
        )
    }

    #[test]
    fn on_delay_then_off_delay() {
        let d = Delays {
            on_ns: 30 * S,
            off_ns: 10 * S,
        };
        let mut c = Condition::default();
        assert!(!eval(&mut c, true, 0, d).fire);
        assert!(!eval(&mut c, true, 29 * S, d).fire);
        assert!(eval(&mut c, true, 30 * S, d).fire);
        assert!(c.firing);
        assert!(!eval(&mut c, false, 40 * S, d).clear);
        // A rising edge while firing: an occurrence, and the off-delay starts over.
        let o = eval(&mut c, true, 45 * S, d);
        assert!(o.occurrence && !o.fire);
        assert!(!eval(&mut c, false, 50 * S, d).clear);
        assert_eq!(c.deadline(d), Some(60 * S));
        assert!(c.tick(59 * S, d) == Outcome::default());
        assert!(c.tick(60 * S, d).clear);
        assert!(!c.firing);
    }

    #[test]
    fn contrary_sample_restarts_the_on_delay() {
        let d = Delays {
            on_ns: 10 * S,
            off_ns: 0,
        };
        let mut c = Condition::default();
        eval(&mut c, true, 0, d);
        eval(&mut c, false, 5 * S, d);
        eval(&mut c, true, 6 * S, d);
        assert!(c.tick(15 * S, d) == Outcome::default());
        assert!(c.tick(16 * S, d).fire);
    }
}
