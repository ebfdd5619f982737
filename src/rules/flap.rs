//! The flap guard, after the flap detection of Nagios and Sensu: over the last `window` evaluations
//! of a rule on one asset, a condition that changed on more than `high` of them is held firing
//! (the work order is marked `flapping`) until the rate drops under `low`.

use serde::{Deserialize, Serialize};

/// Why a `flap` table is not a usable guard.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum FlapError {
    #[error(
        "flap.window must be between 2 and {max} evaluations, found {0}",
        max = FlapSpec::MAX_WINDOW
    )]
    Window(u8),
    #[error(
        "flap needs 0 < low < high <= 1 (shares of the window), found low = {low}, high = {high}"
    )]
    Shares { low: f64, high: f64 },
}

/// `flap = { window = 21, high = 0.5, low = 0.25 }`, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlapSpec {
    /// Evaluations remembered (2..=64).
    pub window: u8,
    /// Start holding when more than this share of them changed the condition.
    pub high: f64,
    /// Stop holding when fewer than this share did.
    pub low: f64,
}

impl Default for FlapSpec {
    fn default() -> Self {
        FlapSpec {
            window: 21,
            high: 0.5,
            low: 0.25,
        }
    }
}

impl FlapSpec {
    pub const MAX_WINDOW: u8 = 64;

    pub fn validate(&self) -> Result<(), FlapError> {
        if !(2..=Self::MAX_WINDOW).contains(&self.window) {
            return Err(FlapError::Window(self.window));
        }
        if !(self.low > 0.0 && self.low < self.high && self.high <= 1.0) {
            return Err(FlapError::Shares {
                low: self.low,
                high: self.high,
            });
        }
        Ok(())
    }

    fn mask(&self) -> u64 {
        if self.window >= 64 {
            u64::MAX
        } else {
            (1u64 << self.window) - 1
        }
    }
}

/// Which of the last `window` evaluations changed the condition (bit 0 = the latest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlapHistory {
    pub changes: u64,
    pub flapping: bool,
}

/// What one evaluation did to the flap state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlapChange {
    None,
    Started,
    Stopped,
}

impl FlapHistory {
    /// Records one evaluation. Cheap enough for every sample: a shift, and a popcount only when
    /// something can change.
    #[inline]
    pub fn record(&mut self, spec: &FlapSpec, changed: bool) -> FlapChange {
        self.changes = ((self.changes << 1) | u64::from(changed)) & spec.mask();
        if !changed && !self.flapping {
            return FlapChange::None;
        }
        let rate = f64::from(self.changes.count_ones()) / f64::from(spec.window);
        if !self.flapping && rate > spec.high {
            self.flapping = true;
            FlapChange::Started
        } else if self.flapping && rate < spec.low {
            self.flapping = false;
            FlapChange::Stopped
        } else {
            FlapChange::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_above_high_and_stops_below_low() {
        let spec = FlapSpec::default();
        let mut h = FlapHistory::default();
        let mut started_at = None;
        // Alternate: every evaluation is a change; 11 changes of 21 is > 50 %.
        for i in 0..30 {
            if h.record(&spec, true) == FlapChange::Started {
                started_at = Some(i);
            }
        }
        assert_eq!(started_at, Some(10));
        assert!(h.flapping);
        // Steady: the rate falls under 25 % once at most 5 of the last 21 changed.
        let mut stopped_at = None;
        for i in 0..30 {
            if h.record(&spec, false) == FlapChange::Stopped {
                stopped_at = Some(i);
            }
        }
        assert_eq!(stopped_at, Some(15));
        assert!(!h.flapping);
    }

    #[test]
    fn validates() {
        assert!(FlapSpec::default().validate().is_ok());
        assert!(
            FlapSpec {
                window: 65,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            FlapSpec {
                low: 0.6,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn error_messages() {
        let e = |spec: FlapSpec| spec.validate().unwrap_err().to_string();
        assert_eq!(
            e(FlapSpec {
                window: 65,
                ..Default::default()
            }),
            "flap.window must be between 2 and 64 evaluations, found 65"
        );
        assert_eq!(
            e(FlapSpec {
                low: 0.6,
                ..Default::default()
            }),
            "flap needs 0 < low < high <= 1 (shares of the window), found low = 0.6, high = 0.5"
        );
    }
}
