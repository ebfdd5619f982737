//! The automatic transfer switch model (built-in profile `ats`, a Socomec ATyS pM): source 1
//! the mains, source 2 the generator, in auto mode.
//!
//! A source is `under_threshold` without voltage, `present` as soon as it has voltage, and
//! `available` once present for its stabilisation time. Mains lost for the start delay raises
//! the generator's start relay (`s2_start_relay` = 1); once the generator is available the
//! switch moves I → 0 → II (one operation per move); mains available again (present for the
//! retransfer delay) moves it back II → 0 → I and drops the start relay. While the mains is
//! back but not yet available, the switch does not transfer to the generator. Delays are compressed
//! for the simulator (a real site sets seconds to minutes): start delay 3 s, source 2
//! stabilisation (the transfer delay) 2 s, retransfer delay 10 s, 1 s in position 0.
//!
//! Invariants: `operations_total` never decreases and grows by one per move; the switch is in
//! position II only with source 2 available when it got there, and the start relay is down
//! whenever the switch rests on position I with mains available.

use rand::Rng;

use super::{Signal, count, name_of};
use crate::model::Value;

pub const ATS_START_DELAY_S: f64 = 3.0;
pub const ATS_TRANSFER_DELAY_S: f64 = 2.0;
pub const ATS_RETRANSFER_DELAY_S: f64 = 10.0;
pub const ATS_POS0_DWELL_S: f64 = 1.0;

pub const ATS_MODES: &[&str] = &["manual", "auto", "remote", "inhibit"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Zero,
    I,
    II,
}

impl Position {
    pub fn as_str(self) -> &'static str {
        match self {
            Position::Zero => "pos_0",
            Position::I => "pos_i",
            Position::II => "pos_ii",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    UnderThreshold,
    Present,
    Available,
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::UnderThreshold => "under_threshold",
            SourceState::Present => "present",
            SourceState::Available => "available",
        }
    }
}

/// One source as the switch sees it.
#[derive(Debug, Clone)]
pub struct Source {
    pub state: SourceState,
    /// Seconds in the state.
    pub since: f64,
    /// Present this long makes it available.
    stabilise: f64,
}

impl Source {
    fn update(&mut self, ok: bool, h: f64) {
        self.since += h;
        let next = match (ok, self.state) {
            (false, _) => SourceState::UnderThreshold,
            (true, SourceState::UnderThreshold) => SourceState::Present,
            (true, SourceState::Present) if self.since >= self.stabilise => SourceState::Available,
            (true, s) => s,
        };
        if next != self.state {
            self.state = next;
            self.since = 0.0;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ats {
    pub mode: &'static str,
    /// Inputs: voltage on source 1 (mains) and source 2 (the generator up to speed).
    pub s1_ok: bool,
    pub s2_ok: bool,
    /// Input: the switch's motor does not move (a failed transfer).
    pub stuck: bool,
    pub s1: Source,
    pub s2: Source,
    pub position: Position,
    /// In position 0 on the way to this one, for this many seconds more.
    pub moving_to: Option<(Position, f64)>,
    pub start_relay: bool,
    pub operations: u64,
}

impl Ats {
    pub fn new<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Ats {
            mode: "auto",
            s1_ok: true,
            s2_ok: false,
            stuck: false,
            s1: Source {
                state: SourceState::Available,
                since: 0.0,
                stabilise: ATS_RETRANSFER_DELAY_S,
            },
            s2: Source {
                state: SourceState::UnderThreshold,
                since: 0.0,
                stabilise: ATS_TRANSFER_DELAY_S,
            },
            position: Position::I,
            moving_to: None,
            start_relay: false,
            operations: rng.random_range(40..1_500),
        }
    }

    fn begin_move(&mut self, to: Position) {
        if self.stuck || self.position == to {
            return;
        }
        if self.position != Position::Zero {
            self.position = Position::Zero;
            self.operations += 1;
        }
        self.moving_to = Some((to, ATS_POS0_DWELL_S));
    }

    pub(super) fn advance<R: Rng + ?Sized>(&mut self, h: f64, _rng: &mut R) {
        self.s1.update(self.s1_ok, h);
        self.s2.update(self.s2_ok, h);
        if self.mode != "auto" {
            return;
        }
        // The generator's start relay.
        if self.s1.state == SourceState::UnderThreshold && self.s1.since >= ATS_START_DELAY_S {
            self.start_relay = true;
        }
        // Finish a move through position 0.
        if let Some((to, left)) = self.moving_to {
            let left = left - h;
            if left > 0.0 {
                self.moving_to = Some((to, left));
            } else {
                self.moving_to = None;
                let usable = match to {
                    Position::I => self.s1.state == SourceState::Available,
                    Position::II => self.s2.state == SourceState::Available,
                    Position::Zero => true,
                };
                if usable && !self.stuck {
                    self.position = to;
                    self.operations += 1;
                }
            }
        }
        if self.moving_to.is_none() {
            // Transfer away from the mains only when it is gone (not while it is coming back
            // and stabilising), and back as soon as it is available.
            let want = if self.s1.state == SourceState::Available {
                Some(Position::I)
            } else if self.s1.state == SourceState::UnderThreshold
                && self.s2.state == SourceState::Available
            {
                Some(Position::II)
            } else {
                None
            };
            if let Some(to) = want {
                self.begin_move(to);
            }
        }
        if self.position == Position::I
            && self.moving_to.is_none()
            && self.s1.state == SourceState::Available
        {
            self.start_relay = false;
        }
    }

    pub(super) fn emit(&self, out: &mut dyn FnMut(&'static str, Signal)) {
        use Signal::*;
        out("mode", Name(self.mode));
        out("switch_position", Name(self.position.as_str()));
        out("s1_start_relay", Count(0));
        out("s2_start_relay", Count(u64::from(self.start_relay)));
        out("priority_source", Count(1));
        out("s1_state", Name(self.s1.state.as_str()));
        out("s2_state", Name(self.s2.state.as_str()));
        out("test_flags", Count(0));
        out("operations_total", Count(self.operations));
    }

    pub(super) fn set(&mut self, point: &str, v: &Value) -> Option<()> {
        match point {
            "mode" => self.mode = name_of(v, ATS_MODES)?,
            "operations_total" => self.operations = count(v)?,
            _ => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::behaviour::test_util::rng;

    fn run(a: &mut Ats, seconds: f64) {
        let mut r = rng(0);
        let mut t = 0.0;
        while t < seconds - 1e-9 {
            a.advance(0.1, &mut r);
            t += 0.1;
        }
    }

    #[test]
    fn ats_transfers_to_the_generator_and_back() {
        let mut a = Ats::new(&mut rng(1));
        let ops = a.operations;
        a.s1_ok = false;
        run(&mut a, 0.2);
        assert_eq!(a.s1.state, SourceState::UnderThreshold);
        assert!(!a.start_relay, "before the start delay");
        run(&mut a, 3.0);
        assert!(a.start_relay, "start relay after the start delay");
        assert_eq!(a.position, Position::I);
        // The generator comes up: present, then available after the transfer delay.
        a.s2_ok = true;
        run(&mut a, 1.0);
        assert_eq!(a.s2.state, SourceState::Present);
        assert_eq!(a.position, Position::I);
        run(&mut a, 1.5);
        assert_eq!(a.position, Position::Zero);
        assert_eq!(a.operations, ops + 1);
        run(&mut a, 1.2);
        assert_eq!(a.position, Position::II);
        assert_eq!(a.operations, ops + 2);
        // Mains back: present for the retransfer delay, then back to I.
        a.s1_ok = true;
        run(&mut a, 5.0);
        assert_eq!(a.s1.state, SourceState::Present);
        assert_eq!(a.position, Position::II);
        assert!(a.start_relay);
        run(&mut a, 7.5);
        assert_eq!(a.position, Position::I);
        assert_eq!(a.operations, ops + 4);
        assert!(!a.start_relay, "start relay dropped");
    }

    #[test]
    fn stuck_ats_never_moves() {
        let mut a = Ats::new(&mut rng(2));
        let ops = a.operations;
        a.stuck = true;
        a.s1_ok = false;
        a.s2_ok = true;
        run(&mut a, 30.0);
        assert_eq!(a.s2.state, SourceState::Available);
        assert!(a.start_relay);
        assert_eq!((a.position, a.operations), (Position::I, ops));
    }
}
