//! How simulated equipment moves: one pure model per device type.
//!
//! A model holds engineering state only (floors, bar, hours, counts); `step` advances it by a
//! span of time with the device's own random generator, and `emit` lists the point values by
//! the names of the built-in profiles. No I/O and no clock: the driver in `server.rs` calls
//! `step` on every tick and writes what changed into the register image.
//!
//! The dynamics are deliberately simple but keep the invariants real equipment has, because the
//! gateway's rules rely on them: counters never decrease, run hours grow only while the machine
//! runs, a stopped pump's discharge pressure sags under demand, a lift counts a trip per journey.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;

use crate::model::Value;
use crate::profile::DeviceType;

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
            Model::Inert => None,
        }
        .is_some()
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

// ---- lift ------------------------------------------------------------------------------

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

    fn advance<R: Rng + ?Sized>(&mut self, h: f64, rng: &mut R) {
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

    fn emit(&self, out: &mut dyn FnMut(&'static str, Signal)) {
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

    fn set(&mut self, point: &str, v: &Value) -> Option<()> {
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

// ---- pump ------------------------------------------------------------------------------

/// Pressure (bar) at which the controller starts the pump.
pub const PUMP_CUT_IN_BAR: f64 = 3.0;
/// Pressure (bar) at which it stops it again.
pub const PUMP_CUT_OUT_BAR: f64 = 4.5;
/// Pump curve: pressure at zero flow (bar) and flow at zero pressure (m³/h).
const PUMP_SHUTOFF_BAR: f64 = 5.5;
const PUMP_MAX_FLOW: f64 = 40.0;
/// Pressure change of the system (tank and pipes) per second per m³/h of net flow.
const PUMP_BAR_PER_M3H_S: f64 = 0.001;
const PUMP_RATED_KW: f64 = 7.5;
/// A pump runs at least this long once started (motor protection against short cycling).
const PUMP_MIN_RUN_S: f64 = 20.0;
const AMBIENT_C: f64 = 24.0;
const PUMP_WEAR_MM_S_PER_S: f64 = 1.0e-7;

/// A booster pump on a pressure switch: starts below the cut-in pressure, stops above the
/// cut-out pressure; while stopped, demand drains the system and the pressure sags.
#[derive(Debug, Clone)]
pub struct Pump {
    pub running: bool,
    pub discharge_bar: f64,
    pub suction_bar: f64,
    /// Water drawn by the building, m³/h (a mean-reverting random walk).
    pub demand_m3h: f64,
    pub flow_m3h: f64,
    pub speed_pct: f64,
    pub power_kw: f64,
    pub motor_temp_c: f64,
    pub bearing_temp_c: f64,
    /// Vibration of the running pump without noise (mm/s); grows slowly with wear.
    pub vibration_base: f64,
    pub vibration_mm_s: f64,
    pub run_hours: f64,
    pub starts: u64,
    /// Times (model seconds) of the starts within the last hour.
    pub recent_starts: VecDeque<f64>,
    pub clock: f64,
    pub min_run_left: f64,
    pub energy_kwh: f64,
    pub months_to_bearing_service: u64,
    pub fault: bool,
    pub local_mode: bool,
    pub alarm_code: u64,
    pub warning_code: u64,
    pub mains_fail: bool,
    pub dry_run: bool,
    pub low_tank_level: bool,
}

impl Pump {
    pub fn new<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Pump {
            running: false,
            discharge_bar: rng.random_range(3.6..4.4),
            suction_bar: 1.2,
            demand_m3h: rng.random_range(5.0..15.0),
            flow_m3h: 0.0,
            speed_pct: 0.0,
            power_kw: 0.0,
            motor_temp_c: AMBIENT_C + rng.random_range(0.0..6.0),
            bearing_temp_c: AMBIENT_C + rng.random_range(0.0..4.0),
            vibration_base: rng.random_range(1.0..1.8),
            vibration_mm_s: 0.05,
            run_hours: rng.random_range(200.0..20_000.0),
            starts: rng.random_range(1_000..60_000),
            recent_starts: VecDeque::new(),
            clock: 0.0,
            min_run_left: 0.0,
            energy_kwh: rng.random_range(1_000.0..100_000.0),
            months_to_bearing_service: 12,
            fault: false,
            local_mode: false,
            alarm_code: 0,
            warning_code: 0,
            mains_fail: false,
            dry_run: false,
            low_tank_level: false,
        }
    }

    fn start(&mut self) {
        if !self.running {
            self.running = true;
            self.starts += 1;
            self.recent_starts.push_back(self.clock);
            self.min_run_left = PUMP_MIN_RUN_S;
        }
    }

    fn stop(&mut self) {
        self.running = false;
        self.min_run_left = 0.0;
    }

    /// Flow the pump delivers against `bar` (a quadratic pump curve).
    fn curve_flow(bar: f64) -> f64 {
        (PUMP_MAX_FLOW * (1.0 - (bar / PUMP_SHUTOFF_BAR).powi(2))).max(0.0)
    }

    fn advance<R: Rng + ?Sized>(&mut self, h: f64, rng: &mut R) {
        self.clock += h;
        while self
            .recent_starts
            .front()
            .is_some_and(|t| *t <= self.clock - 3600.0)
        {
            self.recent_starts.pop_front();
        }
        self.demand_m3h = (approach(self.demand_m3h, 10.0, 900.0, h) + noise(rng, 0.6 * h.sqrt()))
            .clamp(0.5, 30.0);

        // Controller: protections first, then the pressure switch (not in local/hand mode).
        if self.fault || self.mains_fail || self.dry_run {
            self.stop();
        } else if !self.local_mode {
            if !self.running && self.discharge_bar < PUMP_CUT_IN_BAR {
                self.start();
            } else if self.running
                && self.discharge_bar >= PUMP_CUT_OUT_BAR
                && self.min_run_left <= 0.0
            {
                self.stop();
            }
        }

        let pumped = if self.running {
            Self::curve_flow(self.discharge_bar)
        } else {
            0.0
        };
        self.discharge_bar = (self.discharge_bar
            + PUMP_BAR_PER_M3H_S * (pumped - self.demand_m3h) * h)
            .clamp(0.0, PUMP_SHUTOFF_BAR);
        self.flow_m3h = pumped;
        self.suction_bar = 1.2 - 0.1 * pumped / PUMP_MAX_FLOW + noise(rng, 0.01);

        if self.running {
            self.min_run_left = (self.min_run_left - h).max(0.0);
            self.run_hours += h / 3600.0;
            self.speed_pct = 92.0 + noise(rng, 0.5);
            self.power_kw =
                PUMP_RATED_KW * (0.45 + 0.55 * pumped / PUMP_MAX_FLOW) + noise(rng, 0.05);
            self.energy_kwh += self.power_kw * h / 3600.0;
            // Wear: about 0.25 mm/s more per month of running (compressed time: real bearings
            // take longer, but a demo should see a trend).
            self.vibration_base += h * PUMP_WEAR_MM_S_PER_S;
            self.vibration_mm_s = (self.vibration_base + noise(rng, 0.08)).max(0.0);
        } else {
            self.speed_pct = 0.0;
            self.power_kw = 0.0;
            self.vibration_mm_s = 0.03 + noise(rng, 0.02);
        }
        let load = if self.running { 1.0 } else { 0.0 };
        self.motor_temp_c = approach(self.motor_temp_c, AMBIENT_C + 38.0 * load, 900.0, h)
            + noise(rng, 0.02 * h.sqrt());
        // A worn bearing runs warmer.
        let bearing_rise = load * (16.0 + 4.0 * (self.vibration_base - 1.2).max(0.0));
        self.bearing_temp_c = approach(self.bearing_temp_c, AMBIENT_C + bearing_rise, 1200.0, h)
            + noise(rng, 0.02 * h.sqrt());
    }

    fn motor_current_a(&self) -> f64 {
        // 400 V three-phase, power factor 0.85: I = P / (√3 · 400 · 0.85).
        self.power_kw * 1000.0 / (3f64.sqrt() * 400.0 * 0.85)
    }

    fn emit(&self, out: &mut dyn FnMut(&'static str, Signal)) {
        use Signal::*;
        out("discharge_pressure_bar", Num(self.discharge_bar));
        out("suction_pressure_bar", Num(self.suction_bar));
        out("flow_m3h", Num(self.flow_m3h));
        out(
            "head_m",
            Num(((self.discharge_bar - self.suction_bar) * 10.2).max(0.0)),
        );
        out("speed_pct", Num(self.speed_pct));
        out("motor_current_a", Num(self.motor_current_a()));
        out("power_kw", Num(self.power_kw));
        out("motor_temp_c", Num(self.motor_temp_c));
        out("bearing_temp_c", Num(self.bearing_temp_c));
        out("vibration_mm_s", Num(self.vibration_mm_s));
        out("running", Flag(self.running));
        out("fault", Flag(self.fault));
        out("local_mode", Flag(self.local_mode));
        out("alarm_code", Count(self.alarm_code));
        out("warning_code", Count(self.warning_code));
        out("control_mode", Name("constant_pressure"));
        out("run_hours_total", Num(self.run_hours));
        out("starts_total", Count(self.starts));
        out("starts_last_hour", Count(self.recent_starts.len() as u64));
        out(
            "months_to_bearing_service",
            Count(self.months_to_bearing_service),
        );
        out("energy_kwh_total", Count(self.energy_kwh.floor() as u64));
        out("mains_fail", Flag(self.mains_fail));
        out("dry_run", Flag(self.dry_run));
        out("low_tank_level", Flag(self.low_tank_level));
    }

    fn set(&mut self, point: &str, v: &Value) -> Option<()> {
        match point {
            "running" => {
                if flag(v)? {
                    self.start();
                } else {
                    self.stop();
                }
            }
            "discharge_pressure_bar" => self.discharge_bar = num(v)?.max(0.0),
            "suction_pressure_bar" => self.suction_bar = num(v)?,
            "bearing_temp_c" => self.bearing_temp_c = num(v)?,
            "motor_temp_c" => self.motor_temp_c = num(v)?,
            "vibration_mm_s" => {
                self.vibration_base = num(v)?.max(0.0);
                self.vibration_mm_s = self.vibration_base;
            }
            "fault" => self.fault = flag(v)?,
            "local_mode" => self.local_mode = flag(v)?,
            "alarm_code" => self.alarm_code = count(v)?,
            "warning_code" => self.warning_code = count(v)?,
            "run_hours_total" => self.run_hours = num(v)?.max(0.0),
            "starts_total" => self.starts = count(v)?,
            "energy_kwh_total" => self.energy_kwh = num(v)?.max(0.0),
            "months_to_bearing_service" => self.months_to_bearing_service = count(v)?,
            "mains_fail" => self.mains_fail = flag(v)?,
            "dry_run" => self.dry_run = flag(v)?,
            "low_tank_level" => self.low_tank_level = flag(v)?,
            _ => return None,
        }
        Some(())
    }
}

// ---- fire panel ------------------------------------------------------------------------

pub const ZONE_STATES: &[&str] = &[
    "normal",
    "mass_notification",
    "fire_alarm",
    "co_alarm",
    "supervisory_guard",
    "supervisory_equipment",
    "disabled",
    "not_present",
];

/// Trouble conditions a panel raises now and then by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    AcPowerFail,
    ChargerFault,
    GroundFault,
}

/// Mean time between spontaneous troubles of one panel, seconds.
const PANEL_TROUBLE_MEAN_S: f64 = 4.0 * 3600.0;
/// Mean time between prealarms (a dusty detector), seconds; each is latched for 5 s.
const PANEL_PREALARM_MEAN_S: f64 = 6.0 * 3600.0;
const PANEL_FLOAT_V: f64 = 27.3;
const PANEL_BATTERY_LOW_V: f64 = 24.0;

/// A fire panel: quiet, with a floating battery and the occasional self-clearing trouble.
#[derive(Debug, Clone)]
pub struct FirePanel {
    /// Battery voltage without measurement noise.
    pub battery_v: f64,
    /// Noise of the last measurement, added to `battery_v` in the reading.
    pub battery_noise_v: f64,
    pub ac_power_fail: bool,
    pub charger_fault: bool,
    pub ground_fault: bool,
    pub no_battery: bool,
    /// A spontaneous trouble and the seconds until it clears.
    pub trouble: Option<(Trouble, f64)>,
    pub fire_alarm: bool,
    pub supervisory: bool,
    pub panel_silenced: bool,
    pub in_test: bool,
    pub alarm_count: u64,
    pub supervisory_count: u64,
    pub disabled_count: u64,
    pub zones: [&'static str; 4],
    pub prealarm_left: f64,
    /// Set from outside: keeps `battery_low` on whatever the voltage.
    pub battery_low_forced: Option<bool>,
}

impl FirePanel {
    pub fn new<R: Rng + ?Sized>(rng: &mut R) -> Self {
        FirePanel {
            battery_v: PANEL_FLOAT_V + noise(rng, 0.1),
            battery_noise_v: 0.0,
            ac_power_fail: false,
            charger_fault: false,
            ground_fault: false,
            no_battery: false,
            trouble: None,
            fire_alarm: false,
            supervisory: false,
            panel_silenced: false,
            in_test: false,
            alarm_count: 0,
            supervisory_count: 0,
            disabled_count: 0,
            zones: ["normal"; 4],
            prealarm_left: 0.0,
            battery_low_forced: None,
        }
    }

    fn set_trouble(&mut self, t: Trouble, on: bool) {
        match t {
            Trouble::AcPowerFail => self.ac_power_fail = on,
            Trouble::ChargerFault => self.charger_fault = on,
            Trouble::GroundFault => self.ground_fault = on,
        }
    }

    fn battery_low(&self) -> bool {
        self.battery_low_forced
            .unwrap_or(self.battery_v < PANEL_BATTERY_LOW_V)
    }

    fn trouble_count(&self) -> u64 {
        [
            self.ac_power_fail,
            self.battery_low(),
            self.no_battery,
            self.charger_fault,
            self.ground_fault,
        ]
        .into_iter()
        .filter(|b| *b)
        .count() as u64
    }

    fn advance<R: Rng + ?Sized>(&mut self, h: f64, rng: &mut R) {
        match &mut self.trouble {
            Some((t, left)) => {
                *left -= h;
                if *left <= 0.0 {
                    let t = *t;
                    self.trouble = None;
                    self.set_trouble(t, false);
                }
            }
            None => {
                if chance(rng, 1.0 / PANEL_TROUBLE_MEAN_S, h) {
                    let t = match rng.random_range(0..3) {
                        0 => Trouble::AcPowerFail,
                        1 => Trouble::ChargerFault,
                        _ => Trouble::GroundFault,
                    };
                    self.trouble = Some((t, rng.random_range(60.0..600.0)));
                    self.set_trouble(t, true);
                }
            }
        }
        if self.prealarm_left > 0.0 {
            self.prealarm_left -= h;
        } else if chance(rng, 1.0 / PANEL_PREALARM_MEAN_S, h) {
            self.prealarm_left = 5.0;
        }
        // Mains down: the battery carries the panel (~0.15 V per hour on a healthy pack).
        // Charger fault: the battery rests at its open-circuit voltage. Otherwise it floats.
        if self.no_battery {
            self.battery_v = approach(self.battery_v, 0.0, 5.0, h);
        } else if self.ac_power_fail {
            self.battery_v -= 0.15 / 3600.0 * h;
        } else if self.charger_fault {
            self.battery_v = approach(self.battery_v, 25.6, 1800.0, h);
        } else {
            self.battery_v = approach(self.battery_v, PANEL_FLOAT_V, 600.0, h);
        }
        self.battery_v = self.battery_v.max(0.0);
        self.battery_noise_v = noise(rng, 0.03);
    }

    fn emit(&self, out: &mut dyn FnMut(&'static str, Signal)) {
        use Signal::*;
        let troubles = self.trouble_count();
        out("fire_alarm", Flag(self.fire_alarm));
        out("supervisory", Flag(self.supervisory));
        out("trouble", Flag(troubles > 0));
        out("panel_silenced", Flag(self.panel_silenced));
        out("in_test", Flag(self.in_test));
        out("alarm_count", Count(self.alarm_count));
        out("supervisory_count", Count(self.supervisory_count));
        out("trouble_count", Count(troubles));
        out("disabled_count", Count(self.disabled_count));
        out(
            "battery_voltage_v",
            Num((self.battery_v + self.battery_noise_v).max(0.0)),
        );
        out("zone_1", Name(self.zones[0]));
        out("zone_2", Name(self.zones[1]));
        out("zone_3", Name(self.zones[2]));
        out("zone_4", Name(self.zones[3]));
        out("ac_power_fail", Flag(self.ac_power_fail));
        out("battery_low", Flag(self.battery_low()));
        out("no_battery", Flag(self.no_battery));
        out("charger_fault", Flag(self.charger_fault));
        out("ground_fault", Flag(self.ground_fault));
        out("prealarm", Flag(self.prealarm_left > 0.0));
    }

    fn set(&mut self, point: &str, v: &Value) -> Option<()> {
        let zone = |i: usize, z: &mut [&'static str; 4]| -> Option<()> {
            z[i] = name_of(v, ZONE_STATES)?;
            Some(())
        };
        match point {
            // The summary bit and its count go together.
            "fire_alarm" => {
                self.fire_alarm = flag(v)?;
                self.alarm_count = if self.fire_alarm {
                    self.alarm_count.max(1)
                } else {
                    0
                };
            }
            "supervisory" => {
                self.supervisory = flag(v)?;
                self.supervisory_count = if self.supervisory {
                    self.supervisory_count.max(1)
                } else {
                    0
                };
            }
            "panel_silenced" => self.panel_silenced = flag(v)?,
            "in_test" => self.in_test = flag(v)?,
            "alarm_count" => self.alarm_count = count(v)?,
            "supervisory_count" => self.supervisory_count = count(v)?,
            "disabled_count" => self.disabled_count = count(v)?,
            "battery_voltage_v" => {
                self.battery_v = num(v)?.max(0.0);
                self.battery_noise_v = 0.0;
            }
            "zone_1" => zone(0, &mut self.zones)?,
            "zone_2" => zone(1, &mut self.zones)?,
            "zone_3" => zone(2, &mut self.zones)?,
            "zone_4" => zone(3, &mut self.zones)?,
            "battery_low" => self.battery_low_forced = Some(flag(v)?),
            "prealarm" => self.prealarm_left = if flag(v)? { 5.0 } else { 0.0 },
            "ac_power_fail" | "charger_fault" | "ground_fault" => {
                let t = match point {
                    "ac_power_fail" => Trouble::AcPowerFail,
                    "charger_fault" => Trouble::ChargerFault,
                    _ => Trouble::GroundFault,
                };
                let on = flag(v)?;
                // Set from outside, the trouble stays until cleared from outside.
                if self.trouble.is_some_and(|(cur, _)| cur == t) {
                    self.trouble = None;
                }
                self.set_trouble(t, on);
            }
            "no_battery" => self.no_battery = flag(v)?,
            _ => return None,
        }
        Some(())
    }
}

// ---- access door -----------------------------------------------------------------------

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

    fn advance<R: Rng + ?Sized>(&mut self, h: f64, rng: &mut R) {
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

    fn emit(&self, out: &mut dyn FnMut(&'static str, Signal)) {
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

    fn set(&mut self, point: &str, v: &Value) -> Option<()> {
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
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const TICK: Duration = Duration::from_millis(100);

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    /// Every counter of a model, by name.
    fn counters(m: &Model) -> Vec<(&'static str, f64)> {
        let mut out = Vec::new();
        m.emit(&mut |name, s| {
            if name.ends_with("_total") {
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

    fn num_of(m: &Model, point: &str) -> f64 {
        match m.value(point) {
            Some(Signal::Num(x)) => x,
            Some(Signal::Count(n)) => n as f64,
            other => panic!("{point}: {other:?}"),
        }
    }

    fn flag_of(m: &Model, point: &str) -> bool {
        match m.value(point) {
            Some(Signal::Flag(b)) => b,
            other => panic!("{point}: {other:?}"),
        }
    }

    #[test]
    fn counters_never_decrease() {
        for (i, t) in [
            DeviceType::Elevator,
            DeviceType::Pump,
            DeviceType::FirePanel,
            DeviceType::AccessDoor,
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = rng(i as u64);
            let mut m = Model::new(t, &mut r);
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
                // Running hours of a cycling pump and counters of a busy lift and door all move.
                assert!(grew[k], "{t:?} {name} never grew in two hours");
            }
        }
    }

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

    #[test]
    fn pump_run_hours_accumulate_only_while_running() {
        let mut r = rng(5);
        let mut pump = Pump::new(&mut r);
        let start = pump.run_hours;
        let mut running_s = 0.0;
        let mut stopped_s = 0.0;
        for _ in 0..36_000 {
            let was = pump.running;
            let before = pump.run_hours;
            pump.advance(0.1, &mut r);
            // The controller decides at the start of a step: a step that starts the pump runs it.
            if pump.running {
                running_s += 0.1;
            } else {
                stopped_s += 0.1;
                assert_eq!(
                    pump.run_hours, before,
                    "run hours grew while stopped (was running: {was})"
                );
            }
        }
        assert!(
            running_s > 60.0 && stopped_s > 60.0,
            "running {running_s} s, stopped {stopped_s} s"
        );
        assert!(((pump.run_hours - start) * 3600.0 - running_s).abs() < 1e-3);
    }

    #[test]
    fn pump_pressure_sags_when_stopped_and_recovers_when_running() {
        let mut r = rng(9);
        let mut m = Model::new(DeviceType::Pump, &mut r);
        assert!(m.set("discharge_pressure_bar", &Value::Float(4.4)));
        assert!(m.set("running", &Value::Bool(false)));
        let starts = num_of(&m, "starts_total");
        let mut last = num_of(&m, "discharge_pressure_bar");
        // Stopped above cut-in: the pressure falls every step until the controller starts the pump.
        let mut steps = 0;
        while !flag_of(&m, "running") {
            m.step(Duration::from_secs(1), &mut r);
            let p = num_of(&m, "discharge_pressure_bar");
            if !flag_of(&m, "running") {
                assert!(p < last, "pressure did not sag: {last} -> {p}");
                assert_eq!(num_of(&m, "flow_m3h"), 0.0);
                assert_eq!(num_of(&m, "power_kw"), 0.0);
            }
            last = p;
            steps += 1;
            assert!(steps < 3600, "pump never started");
        }
        assert!(last < PUMP_CUT_IN_BAR + 0.05, "started at {last} bar");
        assert_eq!(num_of(&m, "starts_total"), starts + 1.0);
        assert_eq!(num_of(&m, "starts_last_hour"), 1.0);
        // Running: the pressure recovers.
        m.step(Duration::from_secs(15), &mut r);
        assert!(flag_of(&m, "running"));
        assert!(num_of(&m, "discharge_pressure_bar") > last);
        assert!(num_of(&m, "power_kw") > 0.0 && num_of(&m, "flow_m3h") > 0.0);
    }

    #[test]
    fn pump_fault_stops_it_and_pressure_falls() {
        let mut r = rng(2);
        let mut m = Model::new(DeviceType::Pump, &mut r);
        assert!(m.set("running", &Value::Bool(true)));
        assert!(m.set("fault", &Value::Bool(true)));
        let p0 = num_of(&m, "discharge_pressure_bar");
        m.step(Duration::from_secs(600), &mut r);
        assert!(!flag_of(&m, "running"));
        assert!(num_of(&m, "discharge_pressure_bar") < p0 - 0.5);
    }

    #[test]
    fn pump_vibration_and_bearing_drift_slowly() {
        let mut r = rng(4);
        let mut m = Model::new(DeviceType::Pump, &mut r);
        m.set("local_mode", &Value::Bool(true));
        m.set("running", &Value::Bool(true));
        let Model::Pump(p) = &m else { unreachable!() };
        let base0 = p.vibration_base;
        m.step(Duration::from_secs(6 * 3600), &mut r);
        let Model::Pump(p) = &m else { unreachable!() };
        assert!(p.vibration_base > base0, "no wear drift");
        assert!(
            p.vibration_base - base0 < 0.2,
            "drifts too fast: {base0} -> {}",
            p.vibration_base
        );
        // Warmed up to a running temperature.
        assert!(p.bearing_temp_c > AMBIENT_C + 10.0);
    }

    #[test]
    fn fire_panel_battery_noise_stays_near_float() {
        let mut r = rng(1);
        let mut m = Model::new(DeviceType::FirePanel, &mut r);
        let mut values = Vec::new();
        for _ in 0..600 {
            m.step(TICK, &mut r);
            values.push(num_of(&m, "battery_voltage_v"));
        }
        assert!(values.iter().all(|v| (v - PANEL_FLOAT_V).abs() < 0.3));
        // It is noisy, not constant.
        assert!(values.windows(2).any(|w| w[0] != w[1]));
        assert!(!flag_of(&m, "fire_alarm"));
    }

    #[test]
    fn fire_panel_troubles_come_and_go() {
        let mut r = rng(6);
        let mut m = Model::new(DeviceType::FirePanel, &mut r);
        let mut seen_trouble = false;
        let mut cleared_after = false;
        // Two simulated days.
        for _ in 0..(48 * 60) {
            m.step(Duration::from_secs(60), &mut r);
            let t = flag_of(&m, "trouble");
            assert_eq!(t, num_of(&m, "trouble_count") > 0.0);
            cleared_after |= seen_trouble && !t;
            seen_trouble |= t;
        }
        assert!(seen_trouble && cleared_after);
    }

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
