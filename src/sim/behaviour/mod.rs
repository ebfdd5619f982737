//! How simulated equipment moves: one pure model per device type.
//!
//! A model holds engineering state only (floors, bar, hours, counts); `step` advances it by a
//! span of time with the device's own random generator, and `emit` lists the point values by
//! the names of the built-in profiles. No I/O and no clock: the driver (`sim/server.rs`) calls
//! `step` on every tick and writes what changed into the register image.
//!
//! The dynamics are deliberately simple but keep the invariants real equipment has, because the
//! gateway's rules rely on them: counters never decrease, run hours grow only while the machine
//! runs, a stopped pump's discharge pressure sags under demand, a lift counts a trip per journey.
//!
//! The power room's models (`power_meter`, `generator`, `ats`) also take inputs: mains present,
//! the start relay, the load carried. Their site wires them together (`sim/site.rs`); alone,
//! a meter sees mains and the building's load, a generator rests in auto and a switch stays on
//! the mains.

use std::time::Duration;

use rand::Rng;

use crate::model::Value;
use crate::profile::DeviceType;

mod access_door;
mod ats;
mod elevator;
mod fire_panel;
mod generator;
mod power_meter;
mod pump;

pub use access_door::{BATTERY_HEALTH, DOOR_HELD_OPEN_S, Door, DoorPhase};
pub use ats::{
    ATS_POS0_DWELL_S, ATS_RETRANSFER_DELAY_S, ATS_START_DELAY_S, ATS_TRANSFER_DELAY_S, Ats,
    Position, SourceState,
};
pub use elevator::{Lift, LiftPhase, SERVICE_MODES};
pub use fire_panel::{FirePanel, Trouble, ZONE_STATES};
pub use generator::{
    EngineState, GEN_COOLDOWN_S, GEN_CRANK_ATTEMPTS, GEN_CRANK_REST_S, GEN_CRANK_S,
    GEN_FIRES_AFTER_S, GEN_PREHEAT_S, GEN_RATED_KW, GEN_WARMUP_S, Generator,
};
pub use power_meter::{NIGHT_KW, PEAK_KW, PowerMeter, load_shape};
pub use pump::{PUMP_CUT_IN_BAR, PUMP_CUT_OUT_BAR, Pump};

/// A point value as a model emits it: cheap to compare, allocation-free.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// A measurement or a scaled counter.
    Num(f64),
    /// A whole count.
    Count(u64),
    Flag(bool),
    /// The name of an enum state, as in the profile's `map`.
    Name(&'static str),
}

impl Signal {
    pub fn to_value(self) -> Value {
        match self {
            Signal::Num(x) => Value::Float(x),
            Signal::Count(n) => Value::Int(i64::try_from(n).unwrap_or(i64::MAX)),
            Signal::Flag(b) => Value::Bool(b),
            Signal::Name(s) => Value::Str(s.to_string()),
        }
    }
}

/// The longest span one internal step covers; longer spans are cut into such steps so a
/// test can advance an hour at once without the model jumping over its own events.
const MAX_STEP: f64 = 0.5;

/// The model of one device, chosen by its profile's device type.
#[derive(Debug, Clone)]
pub enum Model {
    Lift(Lift),
    Pump(Pump),
    FirePanel(FirePanel),
    Door(Door),
    Meter(PowerMeter),
    Generator(Generator),
    Ats(Ats),
    /// Profiles of other types: values change only when set from outside.
    Inert,
}

impl Model {
    /// A model in a plausible steady state, varied by `rng` (floors served, wear, charge).
    pub fn new<R: Rng + ?Sized>(device_type: DeviceType, rng: &mut R) -> Self {
        match device_type {
            DeviceType::Elevator => Model::Lift(Lift::new(rng)),
            DeviceType::Pump => Model::Pump(Pump::new(rng)),
            DeviceType::FirePanel => Model::FirePanel(FirePanel::new(rng)),
            DeviceType::AccessDoor => Model::Door(Door::new(rng)),
            DeviceType::PowerMeter => Model::Meter(PowerMeter::new(rng)),
            DeviceType::Generator => Model::Generator(Generator::new(rng)),
            DeviceType::Ats => Model::Ats(Ats::new(rng)),
            DeviceType::Other => Model::Inert,
        }
    }

    /// Advances the model by `dt`.
    pub fn step<R: Rng + ?Sized>(&mut self, dt: Duration, rng: &mut R) {
        let mut left = dt.as_secs_f64();
        while left > 0.0 {
            let h = left.min(MAX_STEP);
            left -= h;
            match self {
                Model::Lift(m) => m.advance(h, rng),
                Model::Pump(m) => m.advance(h, rng),
                Model::FirePanel(m) => m.advance(h, rng),
                Model::Door(m) => m.advance(h, rng),
                Model::Meter(m) => m.advance(h, rng),
                Model::Generator(m) => m.advance(h, rng),
                Model::Ats(m) => m.advance(h, rng),
                Model::Inert => return,
            }
        }
    }

    /// Lists every point value the model drives, by point name.
    pub fn emit(&self, out: &mut dyn FnMut(&'static str, Signal)) {
        match self {
            Model::Lift(m) => m.emit(out),
            Model::Pump(m) => m.emit(out),
            Model::FirePanel(m) => m.emit(out),
            Model::Door(m) => m.emit(out),
            Model::Meter(m) => m.emit(out),
            Model::Generator(m) => m.emit(out),
            Model::Ats(m) => m.emit(out),
            Model::Inert => {}
        }
    }

    /// Sets the state behind a point, so the model carries on from there. Returns false for
    /// points the model does not own (derived ones such as `full_load`, or unknown names) and
    /// for values of the wrong kind.
    pub fn set(&mut self, point: &str, value: &Value) -> bool {
        match self {
            Model::Lift(m) => m.set(point, value),
            Model::Pump(m) => m.set(point, value),
            Model::FirePanel(m) => m.set(point, value),
            Model::Door(m) => m.set(point, value),
            Model::Meter(m) => m.set(point, value),
            Model::Generator(m) => m.set(point, value),
            Model::Ats(m) => m.set(point, value),
            Model::Inert => None,
        }
        .is_some()
    }

    /// A point held by an `out_of_range` fault that the model acts on rather than having it
    /// pinned in the register: a generator's `control_mode` (a `test_on_load` exercise) or
    /// `engine_state` (`running`: a start). False for every other point: the register is held.
    pub fn hold(&mut self, point: &str, value: &Value) -> bool {
        match self {
            Model::Generator(m) => m.hold(point, value).is_some(),
            _ => false,
        }
    }

    /// The holds end (the fault cleared): the model goes back to its own course, and a
    /// generator's latched alarms are reset.
    pub fn release(&mut self) {
        if let Model::Generator(m) = self {
            m.release();
        }
    }

    /// The current value of one point, for tests.
    pub fn value(&self, point: &str) -> Option<Signal> {
        let mut found = None;
        self.emit(&mut |name, s| {
            if name == point {
                found = Some(s);
            }
        });
        found
    }
}

// ---- small numeric helpers -------------------------------------------------------------

/// Uniform noise in `[-amp, amp]`.
fn noise<R: Rng + ?Sized>(rng: &mut R, amp: f64) -> f64 {
    if amp > 0.0 {
        rng.random_range(-amp..=amp)
    } else {
        0.0
    }
}

/// First-order lag towards `target` with time constant `tau` seconds.
fn approach(x: f64, target: f64, tau: f64, h: f64) -> f64 {
    x + (target - x) * (1.0 - (-h / tau).exp())
}

/// Whether an event with `rate` occurrences per second happens within `h` seconds.
fn chance<R: Rng + ?Sized>(rng: &mut R, rate: f64, h: f64) -> bool {
    rng.random_bool((1.0 - (-rate * h).exp()).clamp(0.0, 1.0))
}

/// An exponentially distributed wait with the given mean, in seconds.
fn wait<R: Rng + ?Sized>(rng: &mut R, mean: f64) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    -u.ln() * mean
}

fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Str(_) => None,
        other => other.as_f64().map(|x| x != 0.0),
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Bool(_) | Value::Str(_) => None,
        other => other.as_f64().filter(|x| x.is_finite()),
    }
}

fn count(v: &Value) -> Option<u64> {
    num(v).filter(|x| *x >= 0.0).map(|x| x.round() as u64)
}

/// A name from `names`, given by itself or by its position.
fn name_of(v: &Value, names: &[&'static str]) -> Option<&'static str> {
    match v {
        Value::Str(s) => names.iter().copied().find(|n| n == s),
        other => names.get(count(other)? as usize).copied(),
    }
}

/// What the tests of every model use: a seeded generator and readings of emitted points.
#[cfg(test)]
mod test_util {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::{Model, Signal};

    pub(super) const TICK: std::time::Duration = std::time::Duration::from_millis(100);

    pub(super) fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    /// Every counter of a model, by name: `*_total` (not the meter's `pf_total`) and the
    /// meter's energy registers.
    pub(super) fn counters(m: &Model) -> Vec<(&'static str, f64)> {
        let mut out = Vec::new();
        m.emit(&mut |name, s| {
            let counter = (name.ends_with("_total") && name != "pf_total")
                || name.ends_with("_kwh")
                || name.ends_with("_kvarh");
            if counter {
                let v = match s {
                    Signal::Num(x) => x,
                    Signal::Count(n) => n as f64,
                    _ => f64::NAN,
                };
                out.push((name, v));
            }
        });
        out
    }

    pub(super) fn num_of(m: &Model, point: &str) -> f64 {
        match m.value(point) {
            Some(Signal::Num(x)) => x,
            Some(Signal::Count(n)) => n as f64,
            other => panic!("{point}: {other:?}"),
        }
    }

    pub(super) fn flag_of(m: &Model, point: &str) -> bool {
        match m.value(point) {
            Some(Signal::Flag(b)) => b,
            other => panic!("{point}: {other:?}"),
        }
    }
}

/// The invariants every model keeps, and reproducibility from the seed.
#[cfg(test)]
mod tests {
    use super::test_util::{TICK, counters, rng};
    use super::*;

    #[test]
    fn counters_never_decrease() {
        for (i, t) in [
            DeviceType::Elevator,
            DeviceType::Pump,
            DeviceType::FirePanel,
            DeviceType::AccessDoor,
            DeviceType::PowerMeter,
            DeviceType::Generator,
            DeviceType::Ats,
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = rng(i as u64);
            let mut m = Model::new(t, &mut r);
            // A set at rest and a switch on the mains have nothing to count: run the set.
            if let Model::Generator(g) = &mut m {
                g.remote_start = true;
                g.site_load_kw = Some(50.0);
            }
            let mut before = counters(&m);
            assert!(
                !before.is_empty() || t == DeviceType::FirePanel,
                "{t:?} has counters"
            );
            let mut grew = vec![false; before.len()];
            // Two simulated hours in 100 ms ticks.
            for _ in 0..72_000 {
                m.step(TICK, &mut r);
                let now = counters(&m);
                for (k, ((name, a), (_, b))) in before.iter().zip(&now).enumerate() {
                    assert!(b >= a, "{t:?} {name} went from {a} to {b}");
                    grew[k] |= b > a;
                }
                before = now;
            }
            for (k, (name, _)) in before.iter().enumerate() {
                // Running hours of a cycling pump and counters of a busy lift and door all move
                // (a switch on healthy mains does not operate, a meter exports nothing).
                assert!(
                    grew[k] || t == DeviceType::Ats || *name == "energy_export_kwh",
                    "{t:?} {name} never grew in two hours"
                );
            }
        }
    }

    #[test]
    fn same_seed_same_story() {
        let run = |seed| {
            let mut r = rng(seed);
            let mut m = Model::new(DeviceType::Elevator, &mut r);
            m.step(Duration::from_secs(900), &mut r);
            counters(&m)
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}
