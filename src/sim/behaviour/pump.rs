//! The booster pump model (built-in profile `pump`): a pump on a pressure switch that starts
//! below the cut-in pressure and stops above the cut-out pressure, with wear, temperatures and
//! starts counted per hour.

use std::collections::VecDeque;

use rand::Rng;

use super::{Signal, approach, count, flag, noise, num};
use crate::model::Value;

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

    pub(super) fn advance<R: Rng + ?Sized>(&mut self, h: f64, rng: &mut R) {
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

    pub(super) fn emit(&self, out: &mut dyn FnMut(&'static str, Signal)) {
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

    pub(super) fn set(&mut self, point: &str, v: &Value) -> Option<()> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::profile::DeviceType;
    use crate::sim::behaviour::Model;
    use crate::sim::behaviour::test_util::{flag_of, num_of, rng};

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
}
