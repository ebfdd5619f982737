//! The lift model (built-in profile `elevator`): a car that parks, answers calls by travelling
//! to another floor, and cycles its doors; trips, door cycles and run hours count up as it works.

use rand::Rng;

use super::{Signal, approach, chance, count, flag, name_of, noise, num, wait};
use crate::model::Value;

pub const SERVICE_MODES: &[&str] = &[
    "auto",
    "inspection",
    "fire_return",
    "firefighter",
    "attendant",
    "out_of_service",
];

/// Rated speed of the car, in floors per second (about 1.75 m/s at 3.5 m per floor).
const LIFT_FLOORS_PER_S: f64 = 0.5;
const LIFT_RATED_HZ: f64 = 50.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LiftPhase {
    /// Doors closed, waiting for a call.
    Parked,
    Travelling,
    DoorOpening,
    DoorOpen,
    DoorClosing,
}

/// A lift: parks, answers a call by travelling to another floor, opens and closes its doors.
#[derive(Debug, Clone)]
pub struct Lift {
    pub lowest: i16,
    pub highest: i16,
    /// Car position in floors (fractional while travelling).
    pub position: f64,
    pub target: i16,
    pub phase: LiftPhase,
    /// Seconds left in a timed phase.
    pub phase_left: f64,
    pub light_curtain_left: f64,
    pub trips: u64,
    pub door_cycles: u64,
    pub run_hours: f64,
    pub load_pct: f64,
    pub leveling_error_mm: f64,
    pub heatsink_c: f64,
    pub motor_current_a: f64,
    pub speed_hz: f64,
    pub service_mode: &'static str,
    pub fire_emergency: bool,
    pub fault_code: u64,
    pub fault_level: u64,
    pub trapped_alarm: bool,
    pub safety_circuit_open: bool,
    pub door_lock_open_in_run: bool,
    pub door_fault: bool,
    pub door_bypass_alarm: bool,
    pub ucm_test_active: bool,
}

impl Lift {
    pub fn new<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let lowest = -rng.random_range(0..=2);
        let highest = rng.random_range(6..=32);
        let floor = rng.random_range(lowest..=highest);
        Lift {
            lowest,
            highest,
            position: f64::from(floor),
            target: floor,
            phase: LiftPhase::Parked,
            phase_left: rng.random_range(1.0..10.0),
            light_curtain_left: 0.0,
            trips: rng.random_range(10_000..400_000),
            door_cycles: 0,
            run_hours: rng.random_range(500.0..9000.0),
            load_pct: 0.0,
            leveling_error_mm: 0.0,
            heatsink_c: rng.random_range(26.0..32.0),
            motor_current_a: 0.3,
            speed_hz: 0.0,
            service_mode: "auto",
            fire_emergency: false,
            fault_code: 0,
            fault_level: 0,
            trapped_alarm: false,
            safety_circuit_open: false,
            door_lock_open_in_run: false,
            door_fault: false,
            door_bypass_alarm: false,
            ucm_test_active: false,
        }
        .with_door_cycles()
    }

    /// Doors open and close once per trip, plus the odd re-open: start the two counters consistent.
    fn with_door_cycles(mut self) -> Self {
        self.door_cycles = self.trips + self.trips / 20;
        self
    }

    fn floor(&self) -> i16 {
        self.position.round() as i16
    }

    /// A lift takes no calls outside normal service or with a safety chain problem.
    fn in_service(&self) -> bool {
        self.service_mode == "auto"
            && !self.trapped_alarm
            && !self.safety_circuit_open
            && !self.fire_emergency
    }

    pub(super) fn advance<R: Rng + ?Sized>(&mut self, h: f64, rng: &mut R) {
        let running = self.phase == LiftPhase::Travelling;
        match self.phase {
            LiftPhase::Parked => {
                self.phase_left -= h;
                if self.phase_left <= 0.0 && self.in_service() && self.highest > self.lowest {
                    let mut target = rng.random_range(self.lowest..self.highest);
                    if target >= self.floor() {
                        target += 1;
                    }
                    self.target = target;
                    self.phase = LiftPhase::Travelling;
                    self.speed_hz = LIFT_RATED_HZ * 0.1;
                }
            }
            LiftPhase::Travelling => {
                let remaining = f64::from(self.target) - self.position;
                // Slow down over the last floor; never below a creep speed, so the car arrives.
                let want_hz = LIFT_RATED_HZ * (remaining.abs() / 0.8).clamp(0.15, 1.0);
                self.speed_hz = approach(self.speed_hz, want_hz, 1.2, h).max(LIFT_RATED_HZ * 0.1);
                let travel = LIFT_FLOORS_PER_S * self.speed_hz / LIFT_RATED_HZ * h;
                if remaining.abs() <= travel {
                    self.position = f64::from(self.target);
                    self.trips += 1;
                    self.speed_hz = 0.0;
                    self.leveling_error_mm = noise(rng, 4.0).round();
                    self.phase = LiftPhase::DoorOpening;
                    self.phase_left = 2.0;
                } else {
                    self.position += travel * remaining.signum();
                }
            }
            LiftPhase::DoorOpening => {
                self.phase_left -= h;
                if self.phase_left <= 0.0 {
                    self.phase = LiftPhase::DoorOpen;
                    self.phase_left = rng.random_range(3.0..8.0);
                    // Passengers leave and board.
                    self.load_pct = if rng.random_bool(0.005) {
                        rng.random_range(101.0..115.0)
                    } else {
                        (self.load_pct + noise(rng, 40.0)).clamp(0.0, 95.0)
                    };
                }
            }
            LiftPhase::DoorOpen => {
                if self.light_curtain_left > 0.0 {
                    self.light_curtain_left -= h;
                } else if chance(rng, 0.05, h) {
                    self.light_curtain_left = 1.5;
                }
                if self.load_pct > 100.0 {
                    // The car will not leave overloaded: someone steps out.
                    if chance(rng, 0.3, h) {
                        self.load_pct -= 20.0;
                    }
                } else if self.light_curtain_left <= 0.0 {
                    self.phase_left -= h;
                }
                if self.phase_left <= 0.0 {
                    self.phase = LiftPhase::DoorClosing;
                    self.phase_left = 2.5;
                }
            }
            LiftPhase::DoorClosing => {
                self.phase_left -= h;
                if self.phase_left <= 0.0 {
                    self.door_cycles += 1;
                    self.phase = LiftPhase::Parked;
                    self.phase_left = if rng.random_bool(0.3) {
                        rng.random_range(60.0..240.0)
                    } else {
                        wait(rng, 10.0)
                    };
                }
            }
        }
        if running {
            self.run_hours += h / 3600.0;
        }
        let drive_on = self.phase == LiftPhase::Travelling;
        self.heatsink_c = approach(
            self.heatsink_c,
            if drive_on { 44.0 } else { 29.0 },
            300.0,
            h,
        ) + noise(rng, 0.03 * h.sqrt());
        self.motor_current_a = match self.phase {
            LiftPhase::Travelling => 6.0 + 0.12 * self.load_pct + noise(rng, 0.3),
            LiftPhase::DoorOpening | LiftPhase::DoorClosing => 0.9 + noise(rng, 0.05),
            _ => 0.3 + noise(rng, 0.02),
        }
        .max(0.0);
        if !drive_on {
            self.speed_hz = 0.0;
        }
    }

    fn run_state(&self) -> &'static str {
        match self.phase {
            LiftPhase::Travelling if f64::from(self.target) > self.position => "up",
            LiftPhase::Travelling => "down",
            _ => "idle",
        }
    }

    fn door_state(&self) -> &'static str {
        match self.phase {
            LiftPhase::Parked | LiftPhase::Travelling => "closed",
            LiftPhase::DoorOpening => "opening",
            LiftPhase::DoorOpen if self.light_curtain_left > 0.0 => "hold",
            LiftPhase::DoorOpen => "open",
            LiftPhase::DoorClosing => "closing",
        }
    }

    pub(super) fn emit(&self, out: &mut dyn FnMut(&'static str, Signal)) {
        use Signal::*;
        out("car_floor", Num(f64::from(self.floor())));
        out("run_state", Name(self.run_state()));
        out("door_state", Name(self.door_state()));
        out("service_mode", Name(self.service_mode));
        out("light_curtain_blocked", Flag(self.light_curtain_left > 0.0));
        out("full_load", Flag(self.load_pct >= 80.0));
        out("overload", Flag(self.load_pct > 100.0));
        out("fire_emergency", Flag(self.fire_emergency));
        out("trips_total", Count(self.trips));
        out("door_cycles_total", Count(self.door_cycles));
        out("run_hours_total", Num(self.run_hours));
        out("load_pct", Num(self.load_pct.round()));
        out("leveling_error_mm", Num(self.leveling_error_mm));
        out("heatsink_temp_c", Num(self.heatsink_c));
        out("fault_code", Count(self.fault_code));
        out("fault_level", Count(self.fault_level));
        out("motor_current_a", Num(self.motor_current_a));
        out("speed_hz", Num(self.speed_hz));
        out("trapped_alarm", Flag(self.trapped_alarm));
        out("safety_circuit_open", Flag(self.safety_circuit_open));
        out("door_lock_open_in_run", Flag(self.door_lock_open_in_run));
        out("door_fault", Flag(self.door_fault));
        out("door_bypass_alarm", Flag(self.door_bypass_alarm));
        out("ucm_test_active", Flag(self.ucm_test_active));
    }

    pub(super) fn set(&mut self, point: &str, v: &Value) -> Option<()> {
        match point {
            "car_floor" => {
                let floor = num(v)?.round().clamp(-32768.0, 32767.0) as i16;
                self.lowest = self.lowest.min(floor);
                self.highest = self.highest.max(floor);
                self.position = f64::from(floor);
                self.target = floor;
                self.phase = LiftPhase::Parked;
            }
            "service_mode" => self.service_mode = name_of(v, SERVICE_MODES)?,
            "fire_emergency" => self.fire_emergency = flag(v)?,
            "trips_total" => self.trips = count(v)?,
            "door_cycles_total" => self.door_cycles = count(v)?,
            "run_hours_total" => self.run_hours = num(v)?.max(0.0),
            "load_pct" => self.load_pct = num(v)?.max(0.0),
            "leveling_error_mm" => self.leveling_error_mm = num(v)?,
            "heatsink_temp_c" => self.heatsink_c = num(v)?,
            "fault_code" => self.fault_code = count(v)?,
            "fault_level" => self.fault_level = count(v)?,
            "motor_current_a" => self.motor_current_a = num(v)?,
            "trapped_alarm" => self.trapped_alarm = flag(v)?,
            "safety_circuit_open" => self.safety_circuit_open = flag(v)?,
            "door_lock_open_in_run" => self.door_lock_open_in_run = flag(v)?,
            "door_fault" => self.door_fault = flag(v)?,
            "door_bypass_alarm" => self.door_bypass_alarm = flag(v)?,
            "ucm_test_active" => self.ucm_test_active = flag(v)?,
            _ => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::profile::DeviceType;
    use crate::sim::behaviour::Model;
    use crate::sim::behaviour::test_util::{num_of, rng};

    #[test]
    fn lift_counts_trips_as_it_travels() {
        let mut r = rng(7);
        let mut lift = Lift::new(&mut r);
        let trips0 = lift.trips;
        let cycles0 = lift.door_cycles;
        let mut floors = std::collections::BTreeSet::new();
        let mut door_states = std::collections::BTreeSet::new();
        let mut moved_up = false;
        let mut moved_down = false;
        for _ in 0..36_000 {
            lift.advance(0.1, &mut r);
            floors.insert(lift.floor());
            door_states.insert(lift.door_state());
            moved_up |= lift.run_state() == "up";
            moved_down |= lift.run_state() == "down";
            // Doors are shut whenever the car moves.
            if lift.phase == LiftPhase::Travelling {
                assert_eq!(lift.door_state(), "closed");
                assert!(lift.speed_hz > 0.0);
            }
            assert!(
                lift.position >= f64::from(lift.lowest) && lift.position <= f64::from(lift.highest)
            );
        }
        let trips = lift.trips - trips0;
        assert!(trips >= 20, "only {trips} trips in an hour");
        // One door cycle per trip (give or take the one in progress).
        assert!((lift.door_cycles - cycles0).abs_diff(trips) <= 1);
        assert!(floors.len() >= 3, "visited {floors:?}");
        assert!(moved_up && moved_down);
        for s in ["closed", "opening", "open", "closing"] {
            assert!(door_states.contains(s), "never {s}: {door_states:?}");
        }
    }

    #[test]
    fn lift_run_hours_accumulate_only_while_travelling() {
        let mut r = rng(3);
        let mut lift = Lift::new(&mut r);
        let mut travelling = 0.0;
        let start = lift.run_hours;
        for _ in 0..18_000 {
            let before = lift.run_hours;
            let moving = lift.phase == LiftPhase::Travelling;
            lift.advance(0.1, &mut r);
            if !moving {
                assert_eq!(
                    lift.run_hours, before,
                    "run hours grew while {:?}",
                    lift.phase
                );
            } else {
                travelling += 0.1;
            }
        }
        assert!(travelling > 0.0);
        // (Summing 0.1 s steps onto thousands of hours loses a little to rounding.)
        assert!(((lift.run_hours - start) * 3600.0 - travelling).abs() < 1e-3);
    }

    #[test]
    fn lift_out_of_service_stays_parked() {
        let mut r = rng(11);
        let mut m = Model::new(DeviceType::Elevator, &mut r);
        assert!(m.set("service_mode", &Value::Str("inspection".into())));
        assert!(!m.set("service_mode", &Value::Str("party".into())));
        let trips = num_of(&m, "trips_total");
        m.step(Duration::from_secs(3600), &mut r);
        assert_eq!(num_of(&m, "trips_total"), trips);
        assert_eq!(m.value("run_state"), Some(Signal::Name("idle")));
    }
}
