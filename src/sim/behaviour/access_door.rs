//! The access-controlled door model (built-in profile `access_door`): people badge in or press
//! the exit button, open the door and let it close; now and then someone holds it open.

use rand::Rng;

use super::{Signal, approach, count, flag, name_of, noise, num, wait};
use crate::model::Value;

pub const BATTERY_HEALTH: &[&str] = &["good", "dead", "over_voltage", "cold"];
/// Seconds a door may stand open before it is "open too long" (Grosvenor default).
pub const DOOR_HELD_OPEN_S: f64 = 30.0;
/// Mean seconds between people arriving at the door.
const DOOR_ARRIVAL_MEAN_S: f64 = 45.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DoorPhase {
    Locked,
    /// Released by a card or the exit button; the person has not opened the door yet.
    Released,
    Open,
    /// Closed again, the lock re-engaging.
    Relocking,
}

/// An access-controlled door: people badge in (most are granted) or press the exit button,
/// open the door, and let it close; now and then someone holds it open.
#[derive(Debug, Clone)]
pub struct Door {
    pub phase: DoorPhase,
    pub phase_left: f64,
    pub next_arrival: f64,
    /// Whether the person who released the door will actually open it.
    pub will_open: bool,
    /// How long the door will stay open this time.
    pub open_for: f64,
    pub held_open_s: f64,
    pub door_cycles: u64,
    pub granted: u64,
    pub denied: u64,
    pub rex_left: f64,
    pub lock_current_ma: f64,
    /// Battery voltage without measurement noise.
    pub battery_v: f64,
    pub battery_noise_v: f64,
    pub battery_health: &'static str,
    pub reader_online: bool,
    pub reader_tamper: bool,
    pub controller_tamper: bool,
    pub mains_fail: bool,
    pub door_forced: bool,
    pub lock_fault: bool,
    pub door_sensor_fault: bool,
    pub rex_fault: bool,
}

impl Door {
    pub fn new<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let cycles = rng.random_range(2_000..200_000);
        Door {
            phase: DoorPhase::Locked,
            phase_left: 0.0,
            next_arrival: wait(rng, DOOR_ARRIVAL_MEAN_S),
            will_open: false,
            open_for: 0.0,
            held_open_s: 0.0,
            door_cycles: cycles,
            granted: cycles * 3 / 4,
            denied: cycles / 40,
            rex_left: 0.0,
            lock_current_ma: 280.0,
            battery_v: 13.6 + noise(rng, 0.1),
            battery_noise_v: 0.0,
            battery_health: "good",
            reader_online: true,
            reader_tamper: false,
            controller_tamper: false,
            mains_fail: false,
            door_forced: false,
            lock_fault: false,
            door_sensor_fault: false,
            rex_fault: false,
        }
    }

    fn release<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        self.phase = DoorPhase::Released;
        self.phase_left = 5.0;
        self.will_open = rng.random_bool(0.95);
        self.open_for = if rng.random_bool(0.03) {
            rng.random_range(35.0..120.0)
        } else {
            rng.random_range(2.0..8.0)
        };
    }

    fn open(&mut self) {
        self.phase = DoorPhase::Open;
        self.held_open_s = 0.0;
    }

    fn close(&mut self) {
        self.door_cycles += 1;
        self.held_open_s = 0.0;
        self.door_forced = false;
        self.phase = DoorPhase::Relocking;
        self.phase_left = 1.0;
    }

    pub(super) fn advance<R: Rng + ?Sized>(&mut self, h: f64, rng: &mut R) {
        if self.rex_left > 0.0 {
            self.rex_left -= h;
        }
        match self.phase {
            DoorPhase::Locked => {
                self.next_arrival -= h;
                if self.next_arrival <= 0.0 {
                    self.next_arrival = wait(rng, DOOR_ARRIVAL_MEAN_S);
                    if rng.random_bool(0.25) {
                        // Leaving: the exit button releases the door, nothing is counted.
                        self.rex_left = 1.0;
                        self.release(rng);
                    } else if self.reader_online && rng.random_bool(0.93) {
                        self.granted += 1;
                        self.release(rng);
                    } else if self.reader_online {
                        self.denied += 1;
                        // A denied person often tries again shortly.
                        if rng.random_bool(0.5) {
                            self.next_arrival = rng.random_range(3.0..10.0);
                        }
                    }
                }
            }
            DoorPhase::Released => {
                self.phase_left -= h;
                if self.will_open && self.phase_left <= 5.0 - 1.5 {
                    self.open();
                } else if self.phase_left <= 0.0 {
                    self.phase = DoorPhase::Locked;
                }
            }
            DoorPhase::Open => {
                self.held_open_s += h;
                if self.held_open_s >= self.open_for {
                    self.close();
                }
            }
            DoorPhase::Relocking => {
                self.phase_left -= h;
                if self.phase_left <= 0.0 {
                    self.phase = DoorPhase::Locked;
                }
            }
        }
        let locked = self.phase == DoorPhase::Locked;
        // A fail-safe maglock draws current while it holds.
        self.lock_current_ma = if locked && !self.lock_fault {
            280.0 + noise(rng, 3.0)
        } else {
            0.0
        };
        let battery_target = if self.mains_fail { 12.2 } else { 13.6 };
        self.battery_v = approach(self.battery_v, battery_target, 1800.0, h);
        self.battery_noise_v = noise(rng, 0.02);
    }

    fn door_state(&self) -> &'static str {
        match self.phase {
            DoorPhase::Open if self.door_forced => "open_forced",
            DoorPhase::Open if self.held_open_s >= DOOR_HELD_OPEN_S => "open_too_long",
            DoorPhase::Open => "open",
            DoorPhase::Locked => "locked_shut",
            DoorPhase::Released | DoorPhase::Relocking => "unlock_shut",
        }
    }

    pub(super) fn emit(&self, out: &mut dyn FnMut(&'static str, Signal)) {
        use Signal::*;
        let open = self.phase == DoorPhase::Open;
        out("door_state", Name(self.door_state()));
        out("lock_current_ma", Num(self.lock_current_ma));
        out(
            "battery_voltage_v",
            Num((self.battery_v + self.battery_noise_v).max(0.0)),
        );
        out("held_open_s", Num(self.held_open_s.floor()));
        out("door_cycles_total", Count(self.door_cycles));
        out("access_granted_total", Count(self.granted));
        out("access_denied_total", Count(self.denied));
        out("battery_health", Name(self.battery_health));
        out("door_closed", Flag(!open));
        out("rex", Flag(self.rex_left > 0.0));
        out("reader_online", Flag(self.reader_online));
        out("reader_tamper", Flag(self.reader_tamper));
        out("controller_tamper", Flag(self.controller_tamper));
        out("mains_fail", Flag(self.mains_fail));
        out("door_forced", Flag(open && self.door_forced));
        out(
            "door_held_open",
            Flag(open && self.held_open_s >= DOOR_HELD_OPEN_S),
        );
        out("lock_fault", Flag(self.lock_fault));
        out("door_sensor_fault", Flag(self.door_sensor_fault));
        out("rex_fault", Flag(self.rex_fault));
        out("lock_relay", Flag(self.phase == DoorPhase::Locked));
    }

    pub(super) fn set(&mut self, point: &str, v: &Value) -> Option<()> {
        match point {
            "door_closed" => {
                let closed = flag(v)?;
                if closed && self.phase == DoorPhase::Open {
                    self.close();
                } else if !closed && self.phase != DoorPhase::Open {
                    self.open();
                    self.open_for = f64::INFINITY;
                }
            }
            "door_forced" => {
                if flag(v)? {
                    self.open();
                    self.door_forced = true;
                    self.open_for = 10.0;
                } else {
                    self.door_forced = false;
                }
            }
            "held_open_s" => {
                let s = num(v)?.max(0.0);
                if self.phase != DoorPhase::Open {
                    self.open();
                }
                self.held_open_s = s;
                self.open_for = f64::INFINITY;
            }
            "door_cycles_total" => self.door_cycles = count(v)?,
            "access_granted_total" => self.granted = count(v)?,
            "access_denied_total" => self.denied = count(v)?,
            "battery_voltage_v" => {
                self.battery_v = num(v)?.max(0.0);
                self.battery_noise_v = 0.0;
            }
            "battery_health" => self.battery_health = name_of(v, BATTERY_HEALTH)?,
            "reader_online" => self.reader_online = flag(v)?,
            "reader_tamper" => self.reader_tamper = flag(v)?,
            "controller_tamper" => self.controller_tamper = flag(v)?,
            "mains_fail" => self.mains_fail = flag(v)?,
            "lock_fault" => self.lock_fault = flag(v)?,
            "door_sensor_fault" => self.door_sensor_fault = flag(v)?,
            "rex_fault" => self.rex_fault = flag(v)?,
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
    use crate::sim::behaviour::test_util::{flag_of, rng};

    #[test]
    fn door_cycles_and_access_counts() {
        let mut r = rng(8);
        let mut door = Door::new(&mut r);
        let (c0, g0, d0) = (door.door_cycles, door.granted, door.denied);
        let mut states = std::collections::BTreeSet::new();
        for _ in 0..36_000 {
            let open_before = door.phase == DoorPhase::Open;
            let cycles_before = door.door_cycles;
            door.advance(0.1, &mut r);
            states.insert(door.door_state());
            // A cycle is counted exactly when the door shuts.
            let shut_now = open_before && door.phase != DoorPhase::Open;
            assert_eq!(door.door_cycles - cycles_before, u64::from(shut_now));
        }
        assert!(
            door.door_cycles - c0 >= 30,
            "only {} cycles in an hour",
            door.door_cycles - c0
        );
        assert!(door.granted > g0 && door.denied > d0);
        for s in ["locked_shut", "unlock_shut", "open"] {
            assert!(states.contains(s), "never {s}: {states:?}");
        }
    }

    #[test]
    fn door_set_held_open() {
        let mut r = rng(8);
        let mut m = Model::new(DeviceType::AccessDoor, &mut r);
        assert!(m.set("door_closed", &Value::Bool(false)));
        m.step(Duration::from_secs(31), &mut r);
        assert_eq!(m.value("door_state"), Some(Signal::Name("open_too_long")));
        assert!(flag_of(&m, "door_held_open"));
        assert!(m.set("door_closed", &Value::Bool(true)));
        assert!(!flag_of(&m, "door_held_open"));
    }
}
