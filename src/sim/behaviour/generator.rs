//! The standby generator set model (built-in profile `generator`, a Deep Sea GenComm
//! controller): at rest in auto, started by a remote start (the transfer switch's start relay)
//! or an exercise, through pre-start (preheat, cranking attempts), warming up and running, and
//! back through cooling down.
//!
//! Times are compressed for the simulator (a real set cools down for minutes): preheat 1 s,
//! cranking up to 3 s per attempt (the engine fires after 1.5 s), 2 s rest between attempts,
//! 3 attempts, warming up 3 s, cooling down 10 s; so a start request is `running` within
//! 5.5 s and a set that will not fire gives up with `fail_to_start` = shutdown after 14 s.
//! Fuel burns ten times faster than a real set (about 1 % a minute at 75 % load) so a demo
//! shows it; coolant warms towards 85 °C over a few minutes.
//!
//! Invariants: run hours, starts and kWh never decrease; run hours grow only while the engine
//! turns on its own (warming up, running, cooling down), kWh integrate `power_kw`, starts count
//! firings; fuel falls only while the engine turns. Stopped, the engine sits at its block
//! heater's temperature (~40 °C) with no oil pressure, the battery on its charger's float
//! (27.4 V) and the charge alternator at 0.

use rand::Rng;

use super::{Signal, approach, count, name_of, noise, num};
use crate::model::Value;

/// Rated output (kW at PF 0.8 of a 250 kVA set).
pub const GEN_RATED_KW: f64 = 200.0;
pub const GEN_PREHEAT_S: f64 = 1.0;
/// Cranking time after which a healthy engine fires.
pub const GEN_FIRES_AFTER_S: f64 = 1.5;
pub const GEN_CRANK_S: f64 = 3.0;
pub const GEN_CRANK_REST_S: f64 = 2.0;
pub const GEN_CRANK_ATTEMPTS: u32 = 3;
pub const GEN_WARMUP_S: f64 = 3.0;
pub const GEN_COOLDOWN_S: f64 = 10.0;
/// What a `test_on_load` exercise puts on the set when it is not feeding the building (a
/// load bank), as a fraction of rated.
const LOAD_BANK: f64 = 0.6;
/// Fuel burnt per second (% of the tank): idling, and per unit of load.
const FUEL_IDLE_PCT_S: f64 = 0.003;
const FUEL_LOAD_PCT_S: f64 = 0.018;
const BLOCK_HEATER_C: f64 = 40.0;
const RUNNING_COOLANT_C: f64 = 85.0;
const BATTERY_FLOAT_V: f64 = 27.4;
const ALTERNATOR_V: f64 = 28.0;
const LOW_FUEL_PCT: f64 = 20.0;
const SERVICE_EVERY_H: f64 = 250.0;

/// `control_mode` names, as in the profile's map.
pub const CONTROL_MODES: &[&str] = &[
    "stop",
    "auto",
    "manual",
    "test_on_load",
    "auto_manual_restore",
    "user_config",
    "test_off_load",
    "off",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineState {
    Stopped,
    /// Preheat, cranking and the rests between attempts.
    PreStart,
    WarmingUp,
    Running,
    CoolingDown,
}

impl EngineState {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineState::Stopped => "stopped",
            EngineState::PreStart => "pre_start",
            EngineState::WarmingUp => "warming_up",
            EngineState::Running => "running",
            EngineState::CoolingDown => "cooling_down",
        }
    }

    /// The engine turns on its own.
    pub fn turning(self) -> bool {
        matches!(
            self,
            EngineState::WarmingUp | EngineState::Running | EngineState::CoolingDown
        )
    }
}

#[derive(Debug, Clone)]
pub struct Generator {
    /// The controller's mode (`auto` at rest).
    pub mode: &'static str,
    /// An operator's run (`Some(true)`) or stop (`Some(false)`) request: a held `engine_state`.
    pub run_request: Option<bool>,
    /// Input: the remote start (the transfer switch's start relay).
    pub remote_start: bool,
    /// Input: the building's load (kW) while the set feeds it.
    pub site_load_kw: Option<f64>,
    /// Input: the engine cranks but never fires.
    pub will_not_fire: bool,
    pub state: EngineState,
    /// Seconds in the current state (or pre-start step).
    pub timer: f64,
    /// Pre-start: cranking now (else preheating or resting).
    pub cranking: bool,
    pub attempts: u32,
    /// Latched until reset (a cleared fault).
    pub fail_to_start: bool,
    pub rpm: f64,
    pub volts: [f64; 3],
    pub power_kw: f64,
    pub oil_kpa: f64,
    pub coolant_c: f64,
    pub oil_c: f64,
    pub battery_v: f64,
    pub charge_v: f64,
    pub fuel_pct: f64,
    pub run_s: f64,
    pub energy_kwh: f64,
    pub starts: u64,
    /// Run hours at the last service.
    pub serviced_at_h: f64,
}

impl Generator {
    pub fn new<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let run_h = rng.random_range(50.0..2_000.0);
        Generator {
            mode: "auto",
            run_request: None,
            remote_start: false,
            site_load_kw: None,
            will_not_fire: false,
            state: EngineState::Stopped,
            timer: 0.0,
            cranking: false,
            attempts: 0,
            fail_to_start: false,
            rpm: 0.0,
            volts: [0.0; 3],
            power_kw: 0.0,
            oil_kpa: 0.0,
            coolant_c: BLOCK_HEATER_C + rng.random_range(-1.5..1.5),
            oil_c: BLOCK_HEATER_C - 2.0 + rng.random_range(-1.5..1.5),
            battery_v: BATTERY_FLOAT_V,
            charge_v: 0.0,
            fuel_pct: rng.random_range(85.0..98.0),
            run_s: run_h * 3600.0,
            energy_kwh: run_h * rng.random_range(40.0..90.0),
            starts: (run_h * rng.random_range(1.0..3.0)) as u64,
            serviced_at_h: run_h - rng.random_range(0.0..SERVICE_EVERY_H * 0.9),
        }
    }

    /// Whether the controller wants the engine running.
    fn wants_run(&self) -> bool {
        if self.fail_to_start || self.fuel_pct <= 0.0 || self.run_request == Some(false) {
            return false;
        }
        match self.mode {
            "stop" | "off" => false,
            "test_on_load" | "test_off_load" | "manual" => true,
            _ => self.remote_start || self.run_request == Some(true),
        }
    }

    /// Up to speed and voltage: a source the transfer switch may use.
    pub fn available(&self) -> bool {
        self.state == EngineState::Running
    }

    /// The load the set carries now (kW).
    fn load_kw(&self) -> f64 {
        if self.state != EngineState::Running {
            return 0.0;
        }
        match self.site_load_kw {
            Some(kw) => kw.clamp(0.0, GEN_RATED_KW * 1.1),
            None if self.mode == "test_on_load" => GEN_RATED_KW * LOAD_BANK,
            None => 0.0,
        }
    }

    fn enter(&mut self, state: EngineState) {
        self.state = state;
        self.timer = 0.0;
        self.cranking = false;
    }

    /// The controller's sequence.
    fn sequence(&mut self, h: f64) {
        self.timer += h;
        let want = self.wants_run();
        match self.state {
            EngineState::Stopped => {
                if want {
                    self.attempts = 0;
                    self.enter(EngineState::PreStart);
                }
            }
            EngineState::PreStart if !want => self.enter(EngineState::Stopped),
            EngineState::PreStart if !self.cranking => {
                // Preheat before the first attempt, a rest before the others.
                let wait = if self.attempts == 0 {
                    GEN_PREHEAT_S
                } else {
                    GEN_CRANK_REST_S
                };
                if self.timer >= wait {
                    self.cranking = true;
                    self.timer = 0.0;
                }
            }
            EngineState::PreStart => {
                if !self.will_not_fire && self.timer >= GEN_FIRES_AFTER_S {
                    self.starts += 1;
                    self.enter(EngineState::WarmingUp);
                } else if self.timer >= GEN_CRANK_S {
                    self.attempts += 1;
                    self.cranking = false;
                    self.timer = 0.0;
                    if self.attempts >= GEN_CRANK_ATTEMPTS {
                        self.fail_to_start = true;
                        self.enter(EngineState::Stopped);
                    }
                }
            }
            EngineState::WarmingUp if !want => self.enter(EngineState::CoolingDown),
            EngineState::WarmingUp if self.timer >= GEN_WARMUP_S => {
                self.enter(EngineState::Running)
            }
            EngineState::WarmingUp => {}
            EngineState::Running if !want => self.enter(EngineState::CoolingDown),
            EngineState::Running => {}
            EngineState::CoolingDown if want && self.fuel_pct > 0.0 => {
                self.enter(EngineState::Running)
            }
            EngineState::CoolingDown if self.timer >= GEN_COOLDOWN_S => {
                self.enter(EngineState::Stopped)
            }
            EngineState::CoolingDown => {}
        }
        // Out of fuel: the engine dies whatever it was doing.
        if self.state.turning() && self.fuel_pct <= 0.0 {
            self.enter(EngineState::Stopped);
        }
    }

    pub(super) fn advance<R: Rng + ?Sized>(&mut self, h: f64, rng: &mut R) {
        self.sequence(h);
        let turning = self.state.turning();
        let cranking = self.state == EngineState::PreStart && self.cranking;
        self.power_kw = self.load_kw();
        let load = self.power_kw / GEN_RATED_KW;
        // Speed and voltage.
        let (rpm_target, tau) = match self.state {
            EngineState::WarmingUp | EngineState::Running | EngineState::CoolingDown => {
                (1500.0, 0.5)
            }
            EngineState::PreStart if cranking => (200.0, 0.2),
            _ => (0.0, 0.3),
        };
        self.rpm = approach(self.rpm, rpm_target, tau, h);
        if self.state == EngineState::Running {
            self.rpm = 1500.0 + noise(rng, 2.0);
        } else if rpm_target == 0.0 && self.rpm < 5.0 {
            self.rpm = 0.0;
        }
        for v in &mut self.volts {
            *v = if turning && self.rpm > 600.0 {
                (230.0 * (self.rpm / 1500.0)).min(240.0) + noise(rng, 0.8)
            } else {
                0.0
            };
        }
        // Lubrication and temperatures.
        let oil_target = if turning {
            (450.0 - 100.0 * ((self.oil_c - BLOCK_HEATER_C) / 55.0).clamp(0.0, 1.0) + 20.0 * load)
                .clamp(300.0, 450.0)
        } else if cranking {
            80.0
        } else {
            0.0
        };
        self.oil_kpa = approach(self.oil_kpa, oil_target, 0.7, h);
        if turning {
            self.oil_kpa += noise(rng, 2.0);
        } else if self.oil_kpa < 1.0 {
            self.oil_kpa = 0.0;
        }
        if turning {
            self.coolant_c = approach(self.coolant_c, RUNNING_COOLANT_C + 4.0 * load, 90.0, h);
            self.oil_c = approach(self.oil_c, 95.0 + 5.0 * load, 150.0, h);
        } else {
            self.coolant_c = approach(self.coolant_c, BLOCK_HEATER_C, 900.0, h);
            self.oil_c = approach(self.oil_c, BLOCK_HEATER_C - 2.0, 1200.0, h);
        }
        // Battery: sags while cranking, on its charger at rest, on the alternator running.
        self.charge_v = if turning && self.rpm > 600.0 {
            ALTERNATOR_V + noise(rng, 0.1)
        } else {
            0.0
        };
        let battery_target = if cranking {
            21.5
        } else if self.state == EngineState::PreStart {
            26.2 // preheat plugs
        } else if turning {
            27.8
        } else {
            BATTERY_FLOAT_V
        };
        self.battery_v = approach(
            self.battery_v,
            battery_target,
            if cranking { 0.15 } else { 2.0 },
            h,
        ) + noise(rng, 0.01);
        // Accumulations.
        if turning {
            self.run_s += h;
            self.fuel_pct =
                (self.fuel_pct - (FUEL_IDLE_PCT_S + FUEL_LOAD_PCT_S * load) * h).max(0.0);
            self.energy_kwh += self.power_kw * h / 3600.0;
        }
    }

    fn alarm(active: bool, level: &'static str) -> &'static str {
        if active { level } else { "inactive" }
    }

    pub(super) fn emit(&self, out: &mut dyn FnMut(&'static str, Signal)) {
        use Signal::*;
        let turning = self.state.turning();
        let low_fuel = self.fuel_pct < LOW_FUEL_PCT;
        let low_battery = !self.cranking && self.battery_v < 24.0;
        let service_due = self.run_s / 3600.0 - self.serviced_at_h >= SERVICE_EVERY_H;
        out("control_mode", Name(self.mode));
        out(
            "warning_alarm",
            Flag(low_fuel || low_battery || service_due),
        );
        out("electrical_trip_alarm", Flag(false));
        out("shutdown_alarm", Flag(self.fail_to_start));
        out("oil_pressure_kpa", Num(self.oil_kpa.max(0.0)));
        out("coolant_temp_c", Num(self.coolant_c));
        out("oil_temp_c", Num(self.oil_c));
        out("fuel_level_pct", Num(self.fuel_pct));
        out("charge_alternator_v", Num(self.charge_v));
        out("battery_v", Num(self.battery_v));
        out("engine_speed_rpm", Num(self.rpm));
        out(
            "frequency_hz",
            Num(if turning { self.rpm / 30.0 } else { 0.0 }),
        );
        let amps = |v: f64| {
            if v > 0.0 {
                self.power_kw * 1000.0 / (3.0 * v * 0.9)
            } else {
                0.0
            }
        };
        out("voltage_l1_v", Num(self.volts[0]));
        out("voltage_l2_v", Num(self.volts[1]));
        out("voltage_l3_v", Num(self.volts[2]));
        out("current_l1_a", Num(amps(self.volts[0])));
        out("current_l2_a", Num(amps(self.volts[1])));
        out("current_l3_a", Num(amps(self.volts[2])));
        out("engine_state", Name(self.state.as_str()));
        out("power_kw", Num(self.power_kw));
        out("load_pct", Num(100.0 * self.power_kw / GEN_RATED_KW));
        out("run_hours_total", Num(self.run_s / 3600.0));
        out("energy_kwh_total", Num(self.energy_kwh));
        out("starts_total", Count(self.starts));
        for name in [
            "emergency_stop",
            "low_oil_pressure",
            "high_coolant_temp",
            "over_speed",
            "charge_alternator_failure",
        ] {
            out(name, Name("inactive"));
        }
        out(
            "fail_to_start",
            Name(Self::alarm(self.fail_to_start, "shutdown")),
        );
        out(
            "low_battery_voltage",
            Name(Self::alarm(low_battery, "warning")),
        );
        out("low_fuel_level", Name(Self::alarm(low_fuel, "warning")));
        out("maintenance_due", Name(Self::alarm(service_due, "warning")));
    }

    pub(super) fn set(&mut self, point: &str, v: &Value) -> Option<()> {
        match point {
            "control_mode" => self.mode = name_of(v, CONTROL_MODES)?,
            "fuel_level_pct" => self.fuel_pct = num(v)?.clamp(0.0, 100.0),
            "coolant_temp_c" => self.coolant_c = num(v)?,
            "oil_temp_c" => self.oil_c = num(v)?,
            "battery_v" => self.battery_v = num(v)?.max(0.0),
            "run_hours_total" => self.run_s = num(v)?.max(0.0) * 3600.0,
            "energy_kwh_total" => self.energy_kwh = num(v)?.max(0.0),
            "starts_total" => self.starts = count(v)?,
            _ => return None,
        }
        Some(())
    }

    /// A held point the controller acts on: `control_mode` (an operator's mode: a
    /// `test_on_load` exercise) or `engine_state` (`running`: a start, `stopped`: a stop).
    pub(super) fn hold(&mut self, point: &str, v: &Value) -> Option<()> {
        match point {
            "control_mode" => self.mode = name_of(v, CONTROL_MODES)?,
            "engine_state" => {
                self.run_request = match v {
                    Value::Str(s) if s == "stopped" || s == "cooling_down" => Some(false),
                    Value::Str(s) if s == "running" || s == "warming_up" || s == "pre_start" => {
                        Some(true)
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// Ends the holds and resets the latched alarms (the operator's reset).
    pub(super) fn release(&mut self) {
        self.mode = "auto";
        self.run_request = None;
        self.fail_to_start = false;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sim::behaviour::test_util::{counters, rng};
    use crate::sim::behaviour::{Model, test_util::num_of};

    fn state(m: &Model) -> &'static str {
        match m.value("engine_state") {
            Some(Signal::Name(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    fn gen_model(seed: u64) -> (Model, rand::rngs::StdRng) {
        let mut r = rng(seed);
        let m = Model::new(crate::profile::DeviceType::Generator, &mut r);
        (m, r)
    }

    fn with<T>(m: &mut Model, f: impl FnOnce(&mut Generator) -> T) -> T {
        match m {
            Model::Generator(g) => f(g),
            _ => unreachable!(),
        }
    }

    /// Steps in 100 ms ticks until `done` or `limit` seconds; returns the seconds taken.
    fn run_until(
        m: &mut Model,
        r: &mut rand::rngs::StdRng,
        limit: f64,
        mut done: impl FnMut(&Model) -> bool,
    ) -> f64 {
        let mut t = 0.0;
        while !done(m) {
            m.step(Duration::from_millis(100), r);
            t += 0.1;
            assert!(t < limit, "not done within {limit} s (state {})", state(m));
        }
        t
    }

    #[test]
    fn generator_at_rest_in_auto() {
        let (mut m, mut r) = gen_model(1);
        m.step(Duration::from_secs(600), &mut r);
        assert_eq!(state(&m), "stopped");
        assert_eq!(m.value("control_mode"), Some(Signal::Name("auto")));
        assert_eq!(num_of(&m, "oil_pressure_kpa"), 0.0);
        assert_eq!(num_of(&m, "charge_alternator_v"), 0.0);
        assert!((num_of(&m, "battery_v") - 27.4).abs() < 0.1);
        assert!((num_of(&m, "coolant_temp_c") - 40.0).abs() < 2.0);
        assert_eq!(m.value("fail_to_start"), Some(Signal::Name("inactive")));
    }

    #[test]
    fn generator_starts_runs_and_stops_on_the_remote_start() {
        let (mut m, mut r) = gen_model(2);
        let starts = num_of(&m, "starts_total");
        with(&mut m, |g| g.remote_start = true);
        let mut sagged = false;
        let t = run_until(&mut m, &mut r, 10.0, |m| {
            sagged |= num_of(m, "battery_v") < 24.0;
            state(m) == "running"
        });
        assert!((5.0..=8.0).contains(&t), "running after {t} s");
        assert!(sagged, "the battery sags while cranking");
        assert_eq!(num_of(&m, "starts_total"), starts + 1.0);
        with(&mut m, |g| g.site_load_kw = Some(150.0));
        m.step(Duration::from_secs(2), &mut r);
        assert!((num_of(&m, "engine_speed_rpm") - 1500.0).abs() < 5.0);
        assert!((num_of(&m, "frequency_hz") - 50.0).abs() < 0.2);
        assert!((225.0..235.0).contains(&num_of(&m, "voltage_l1_v")));
        assert!((300.0..=450.0).contains(&num_of(&m, "oil_pressure_kpa")));
        assert!((num_of(&m, "charge_alternator_v") - 28.0).abs() < 0.3);
        assert!((num_of(&m, "power_kw") - 150.0).abs() < 1e-9);
        assert!((num_of(&m, "load_pct") - 75.0).abs() < 1e-9);
        // Warms towards 85 °C over minutes.
        let c0 = num_of(&m, "coolant_temp_c");
        m.step(Duration::from_secs(600), &mut r);
        let c1 = num_of(&m, "coolant_temp_c");
        assert!(c1 > c0 + 20.0 && (80.0..95.0).contains(&c1), "{c0} -> {c1}");
        // Stop: cooling down, then stopped.
        with(&mut m, |g| {
            g.remote_start = false;
            g.site_load_kw = None;
        });
        m.step(Duration::from_millis(200), &mut r);
        assert_eq!(state(&m), "cooling_down");
        assert_eq!(num_of(&m, "power_kw"), 0.0);
        run_until(&mut m, &mut r, 12.0, |m| state(m) == "stopped");
        m.step(Duration::from_secs(5), &mut r);
        assert_eq!(num_of(&m, "engine_speed_rpm"), 0.0);
        assert_eq!(num_of(&m, "oil_pressure_kpa"), 0.0);
    }

    #[test]
    fn generator_burns_fuel_and_counts_hours_only_while_running() {
        let (mut m, mut r) = gen_model(3);
        let fuel0 = num_of(&m, "fuel_level_pct");
        let hours0 = num_of(&m, "run_hours_total");
        let kwh0 = num_of(&m, "energy_kwh_total");
        m.step(Duration::from_secs(1800), &mut r);
        assert_eq!(num_of(&m, "fuel_level_pct"), fuel0, "burnt fuel at rest");
        assert_eq!(num_of(&m, "run_hours_total"), hours0, "run hours at rest");
        assert_eq!(num_of(&m, "energy_kwh_total"), kwh0);

        with(&mut m, |g| g.remote_start = true);
        run_until(&mut m, &mut r, 10.0, |m| state(m) == "running");
        with(&mut m, |g| g.site_load_kw = Some(0.75 * GEN_RATED_KW));
        let (fuel1, hours1, kwh1) = (
            num_of(&m, "fuel_level_pct"),
            num_of(&m, "run_hours_total"),
            num_of(&m, "energy_kwh_total"),
        );
        let mut before = counters(&m);
        for _ in 0..6000 {
            m.step(Duration::from_millis(100), &mut r);
            let now = counters(&m);
            for ((name, a), (_, b)) in before.iter().zip(&now) {
                assert!(b >= a, "{name} went from {a} to {b}");
            }
            before = now;
        }
        // Ten minutes at 75 % load: about 10 % of the tank (compressed), 150 kW × 1/6 h.
        let burnt = fuel1 - num_of(&m, "fuel_level_pct");
        assert!((8.0..12.0).contains(&burnt), "burnt {burnt} %");
        let ran = num_of(&m, "run_hours_total") - hours1;
        assert!((ran * 3600.0 - 600.0).abs() < 0.5, "ran {ran} h");
        let kwh = num_of(&m, "energy_kwh_total") - kwh1;
        assert!((kwh - 25.0).abs() < 0.1, "{kwh} kWh");
    }

    #[test]
    fn generator_that_will_not_fire_gives_up_until_reset() {
        let (mut m, mut r) = gen_model(4);
        let starts = num_of(&m, "starts_total");
        with(&mut m, |g| {
            g.will_not_fire = true;
            g.remote_start = true;
        });
        let t = run_until(&mut m, &mut r, 20.0, |m| {
            m.value("fail_to_start") == Some(Signal::Name("shutdown"))
        });
        assert!((12.0..15.0).contains(&t), "gave up after {t} s");
        assert_eq!(state(&m), "stopped");
        assert_eq!(m.value("shutdown_alarm"), Some(Signal::Flag(true)));
        assert_eq!(num_of(&m, "starts_total"), starts);
        // Latched: it does not try again while the start request stays.
        m.step(Duration::from_secs(30), &mut r);
        assert_eq!(state(&m), "stopped");
        // Reset (the fault cleared), the engine healthy: it starts.
        m.release();
        with(&mut m, |g| g.will_not_fire = false);
        run_until(&mut m, &mut r, 10.0, |m| state(m) == "running");
        assert_eq!(m.value("fail_to_start"), Some(Signal::Name("inactive")));
    }

    #[test]
    fn generator_exercises_on_held_points() {
        let (mut m, mut r) = gen_model(5);
        assert!(m.hold("control_mode", &Value::Str("test_on_load".into())));
        run_until(&mut m, &mut r, 10.0, |m| state(m) == "running");
        m.step(Duration::from_secs(1), &mut r);
        assert!((num_of(&m, "load_pct") - 60.0).abs() < 1e-9, "load bank");
        m.release();
        m.step(Duration::from_millis(200), &mut r);
        assert_eq!(state(&m), "cooling_down");
        run_until(&mut m, &mut r, 12.0, |m| state(m) == "stopped");
        assert!(m.hold("engine_state", &Value::Str("running".into())));
        run_until(&mut m, &mut r, 10.0, |m| state(m) == "running");
        assert_eq!(num_of(&m, "power_kw"), 0.0, "off load");
        assert!(!m.hold("fuel_level_pct", &Value::Int(3)));
    }
}
