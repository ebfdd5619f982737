//! The three-phase energy meter model (built-in profile `power_meter`, an Eastron SDM630 at the
//! mains incomer): 230/400 V 3P4W at 50 Hz, the building's load following the time of day, and
//! the energy and demand registers that integrate it.
//!
//! The meter keeps a clock of its own (the hour of the day), moved by model time like every
//! other state; the simulator's driver starts it at the real local time (`sim/site.rs`), so a
//! demo at night shows the night load. The load is the building's, whether or not it flows
//! through the meter: the site reads it (`building_kw`) to load the generator when the
//! transfer switch has put the building on it.
//!
//! Invariants: L-L voltages are the L-N phasors' differences (≈ √3 × 230 V); per phase
//! P = V·I·PF; the totals are the sums (kW, kvar) and S = Σ V·I; energies never decrease and
//! integrate the power; `demand_kw` is the mean power over the last `demand_period_min`
//! (a sliding window of one-minute blocks, as the SDM630's sliding demand); `max_demand_kw`
//! never decreases. Without mains (`mains` false) everything measured reads 0.

use std::collections::VecDeque;

use rand::Rng;

use super::{approach, noise, num};
use crate::model::Value;
use crate::sim::behaviour::Signal;

/// Nominal line-to-neutral voltage and frequency.
pub const NOMINAL_V: f64 = 230.0;
pub const NOMINAL_HZ: f64 = 50.0;
/// The building's load at night and at the business-hours peak (kW).
pub const NIGHT_KW: f64 = 45.0;
pub const PEAK_KW: f64 = 160.0;
/// The demand window (minutes) and its blocks (one a minute).
pub const DEMAND_PERIOD_MIN: u32 = 15;
const BLOCK_S: f64 = 60.0;
/// `system_type` 3: three phases, four wires.
const SYSTEM_3P4W: u64 = 3;

/// The building's load shape at `hour` (0-24): 0 at night, 1 in business hours (09-17), with
/// a morning ramp from 06 and an evening one down to 22.
pub fn load_shape(hour: f64) -> f64 {
    let h = hour.rem_euclid(24.0);
    match h {
        h if h < 6.0 => 0.0,
        h if h < 9.0 => (h - 6.0) / 3.0,
        h if h < 17.0 => 1.0,
        h if h < 22.0 => 1.0 - (h - 17.0) / 5.0,
        _ => 0.0,
    }
}

#[derive(Debug, Clone)]
pub struct PowerMeter {
    /// Model clock: the hour of the day, 0-24.
    pub hour: f64,
    /// The building's deviation from its daily shape (kW), a mean-reverting walk.
    pub wander_kw: f64,
    /// Each phase's share of the load (sums to 1).
    pub share: [f64; 3],
    pub pf: [f64; 3],
    /// Each phase's slow deviation from the nominal voltage.
    pub v_drift: [f64; 3],
    pub hz_drift: f64,
    /// Input: voltage at the incomer (mains present).
    pub mains: bool,
    /// Input: the building draws through this meter (the transfer switch on position I).
    pub on_load: bool,
    pub volts: [f64; 3],
    pub amps: [f64; 3],
    pub kw: [f64; 3],
    pub hz: f64,
    pub import_kwh: f64,
    pub export_kwh: f64,
    pub kvarh: f64,
    block_kws: f64,
    block_s: f64,
    /// Mean power of the last whole blocks, newest last.
    blocks: VecDeque<f64>,
    pub demand_kw: f64,
    pub max_demand_kw: f64,
}

impl PowerMeter {
    pub fn new<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let a: f64 = rng.random_range(0.31..0.35);
        let b: f64 = rng.random_range(0.31..0.35);
        let mut m = PowerMeter {
            hour: 12.0,
            wander_kw: rng.random_range(-5.0..5.0),
            share: [a, b, 1.0 - a - b],
            pf: [
                rng.random_range(0.93..0.96),
                rng.random_range(0.93..0.96),
                rng.random_range(0.93..0.96),
            ],
            v_drift: [
                rng.random_range(-2.0..2.0),
                rng.random_range(-2.0..2.0),
                rng.random_range(-2.0..2.0),
            ],
            hz_drift: 0.0,
            mains: true,
            on_load: true,
            volts: [0.0; 3],
            amps: [0.0; 3],
            kw: [0.0; 3],
            hz: 0.0,
            import_kwh: rng.random_range(50_000.0..400_000.0),
            export_kwh: 0.0,
            kvarh: 0.0,
            block_kws: 0.0,
            block_s: 0.0,
            blocks: VecDeque::new(),
            demand_kw: 0.0,
            max_demand_kw: PEAK_KW * rng.random_range(1.05..1.2),
        };
        m.kvarh = m.import_kwh * 0.3;
        m.set_hour(12.0);
        m
    }

    /// Sets the clock, and the demand window as if the load had followed the day until now.
    pub fn set_hour(&mut self, hour: f64) {
        self.hour = hour.rem_euclid(24.0);
        let demand = self.building_kw();
        self.blocks = std::iter::repeat_n(demand, DEMAND_PERIOD_MIN as usize).collect();
        self.demand_kw = demand;
        self.max_demand_kw = self.max_demand_kw.max(demand);
        self.measure([0.0; 3]);
    }

    /// What the building draws now (kW), fed through this meter or not.
    pub fn building_kw(&self) -> f64 {
        (NIGHT_KW + (PEAK_KW - NIGHT_KW) * load_shape(self.hour) + self.wander_kw).max(5.0)
    }

    pub fn total_kw(&self) -> f64 {
        self.kw.iter().sum()
    }

    fn kva(&self) -> [f64; 3] {
        [0, 1, 2].map(|i| self.volts[i] * self.amps[i] / 1000.0)
    }

    fn kvar(&self) -> [f64; 3] {
        let s = self.kva();
        [0, 1, 2].map(|i| (s[i] * s[i] - self.kw[i] * self.kw[i]).max(0.0).sqrt())
    }

    /// Voltages (with this measurement noise), currents and powers from the state.
    fn measure(&mut self, v_noise: [f64; 3]) {
        let building = self.building_kw();
        for (i, dv) in v_noise.into_iter().enumerate() {
            if self.mains {
                self.volts[i] = NOMINAL_V + self.v_drift[i] + dv;
            } else {
                self.volts[i] = 0.0;
            }
            if self.mains && self.on_load {
                self.kw[i] = building * self.share[i];
                self.amps[i] = self.kw[i] * 1000.0 / (self.volts[i] * self.pf[i]);
            } else {
                self.kw[i] = 0.0;
                self.amps[i] = 0.0;
            }
        }
        self.hz = if self.mains {
            NOMINAL_HZ + self.hz_drift
        } else {
            0.0
        };
    }

    pub(super) fn advance<R: Rng + ?Sized>(&mut self, h: f64, rng: &mut R) {
        self.hour = (self.hour + h / 3600.0).rem_euclid(24.0);
        let span = 0.1 * PEAK_KW;
        self.wander_kw = (approach(self.wander_kw, 0.0, 600.0, h) + noise(rng, 1.5 * h.sqrt()))
            .clamp(-span, span);
        for i in 0..3 {
            self.pf[i] = (approach(self.pf[i], 0.945, 300.0, h) + noise(rng, 0.002 * h.sqrt()))
                .clamp(0.92, 0.97);
            self.v_drift[i] = (approach(self.v_drift[i], 0.0, 300.0, h)
                + noise(rng, 0.2 * h.sqrt()))
            .clamp(-4.0, 4.0);
        }
        self.hz_drift = (approach(self.hz_drift, 0.0, 30.0, h) + noise(rng, 0.01 * h.sqrt()))
            .clamp(-0.05, 0.05);
        self.measure([0.0; 3].map(|_: f64| noise(rng, 0.3)));
        let kw = self.total_kw();
        let kvar: f64 = self.kvar().iter().sum();
        self.import_kwh += kw * h / 3600.0;
        self.kvarh += kvar * h / 3600.0;
        // Sliding demand: the mean of the last whole one-minute blocks.
        self.block_kws += kw * h;
        self.block_s += h;
        if self.block_s >= BLOCK_S {
            self.blocks.push_back(self.block_kws / self.block_s);
            while self.blocks.len() > DEMAND_PERIOD_MIN as usize {
                self.blocks.pop_front();
            }
            self.block_kws = 0.0;
            self.block_s = 0.0;
            self.demand_kw = self.blocks.iter().sum::<f64>() / self.blocks.len() as f64;
            self.max_demand_kw = self.max_demand_kw.max(self.demand_kw);
        }
    }

    pub(super) fn emit(&self, out: &mut dyn FnMut(&'static str, Signal)) {
        use Signal::*;
        let names = [
            ("voltage_l1_v", "current_l1_a", "power_l1_kw", "pf_l1"),
            ("voltage_l2_v", "current_l2_a", "power_l2_kw", "pf_l2"),
            ("voltage_l3_v", "current_l3_a", "power_l3_kw", "pf_l3"),
        ];
        let kva = self.kva();
        let kvar = self.kvar();
        for (i, (v, a, p, pf)) in names.into_iter().enumerate() {
            out(v, Num(self.volts[i]));
            out(a, Num(self.amps[i]));
            out(p, Num(self.kw[i]));
            // A meter with no current shows a unity power factor.
            out(
                pf,
                Num(if kva[i] > 0.0 {
                    self.kw[i] / kva[i]
                } else {
                    1.0
                }),
            );
        }
        // L-L from the L-N phasors 120° apart: |Va - Vb|² = Va² + Vb² + Va·Vb.
        let ll = |a: f64, b: f64| (a * a + b * b + a * b).sqrt();
        let [v1, v2, v3] = self.volts;
        out("voltage_l1_l2_v", Num(ll(v1, v2)));
        out("voltage_l2_l3_v", Num(ll(v2, v3)));
        out("voltage_l3_l1_v", Num(ll(v3, v1)));
        out("voltage_avg_v", Num((v1 + v2 + v3) / 3.0));
        out("current_avg_a", Num(self.amps.iter().sum::<f64>() / 3.0));
        let p = self.total_kw();
        let s: f64 = kva.iter().sum();
        out("power_total_kw", Num(p));
        out("apparent_power_kva", Num(s));
        out("reactive_power_kvar", Num(kvar.iter().sum()));
        out("pf_total", Num(if s > 0.0 { p / s } else { 1.0 }));
        out("frequency_hz", Num(self.hz));
        out("energy_import_kwh", Num(self.import_kwh));
        out("energy_export_kwh", Num(self.export_kwh));
        out("reactive_import_kvarh", Num(self.kvarh));
        out("energy_total_kwh", Num(self.import_kwh + self.export_kwh));
        out("demand_kw", Num(self.demand_kw));
        out("max_demand_kw", Num(self.max_demand_kw));
        out("demand_period_min", Count(u64::from(DEMAND_PERIOD_MIN)));
        out("system_type", Count(SYSTEM_3P4W));
    }

    pub(super) fn set(&mut self, point: &str, v: &Value) -> Option<()> {
        match point {
            "energy_import_kwh" => self.import_kwh = num(v)?.max(0.0),
            "energy_export_kwh" => self.export_kwh = num(v)?.max(0.0),
            "reactive_import_kvarh" => self.kvarh = num(v)?.max(0.0),
            "max_demand_kw" => self.max_demand_kw = num(v)?.max(0.0),
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

    fn meter_at(hour: f64, seed: u64) -> (Model, rand::rngs::StdRng) {
        let mut r = rng(seed);
        let mut m = Model::new(DeviceType::PowerMeter, &mut r);
        if let Model::Meter(pm) = &mut m {
            pm.set_hour(hour);
        }
        (m, r)
    }

    #[test]
    fn meter_phases_are_consistent() {
        let (mut m, mut r) = meter_at(11.0, 3);
        m.step(Duration::from_secs(5), &mut r);
        let mut p_sum = 0.0;
        for l in 1..=3 {
            let v = num_of(&m, &format!("voltage_l{l}_v"));
            let a = num_of(&m, &format!("current_l{l}_a"));
            let p = num_of(&m, &format!("power_l{l}_kw"));
            let pf = num_of(&m, &format!("pf_l{l}"));
            assert!((225.0..235.0).contains(&v), "L{l} {v} V");
            assert!((0.92..=0.97).contains(&pf), "L{l} pf {pf}");
            assert!((v * a * pf / 1000.0 - p).abs() < 1e-6, "L{l}: P = V·I·PF");
            p_sum += p;
        }
        let ll = num_of(&m, "voltage_l1_l2_v");
        assert!(
            (ll / num_of(&m, "voltage_l1_v") - 3f64.sqrt()).abs() < 0.03,
            "L-L {ll}"
        );
        let p = num_of(&m, "power_total_kw");
        let s = num_of(&m, "apparent_power_kva");
        let q = num_of(&m, "reactive_power_kvar");
        assert!((p - p_sum).abs() < 1e-9);
        assert!(
            (s * s - p * p - q * q).abs() / (s * s) < 0.01,
            "S² = P² + Q²"
        );
        assert!((num_of(&m, "pf_total") - p / s).abs() < 1e-9);
        assert!((num_of(&m, "frequency_hz") - 50.0).abs() <= 0.05);
        assert_eq!(num_of(&m, "system_type"), 3.0);
        assert_eq!(num_of(&m, "demand_period_min"), 15.0);
    }

    #[test]
    fn meter_load_follows_the_day() {
        let (night, _) = meter_at(3.0, 4);
        let (noon, _) = meter_at(12.0, 4);
        let n = num_of(&night, "power_total_kw");
        let d = num_of(&noon, "power_total_kw");
        assert!(n < 0.5 * d, "night {n} kW, noon {d} kW");
        assert!((NIGHT_KW - 10.0..NIGHT_KW + 10.0).contains(&n));
    }

    #[test]
    fn meter_energy_integrates_power_and_demand_settles() {
        let (mut m, mut r) = meter_at(10.0, 5);
        let mut energy = num_of(&m, "energy_import_kwh");
        let mut max_demand = num_of(&m, "max_demand_kw");
        let mut integral = 0.0;
        // Half an hour in 100 ms ticks: energy never decreases and follows ∫P dt.
        for _ in 0..18_000 {
            m.step(Duration::from_millis(100), &mut r);
            integral += num_of(&m, "power_total_kw") * 0.1 / 3600.0;
            let e = num_of(&m, "energy_import_kwh");
            let md = num_of(&m, "max_demand_kw");
            assert!(e >= energy && md >= max_demand);
            (energy, max_demand) = (e, md);
        }
        let Model::Meter(pm) = &m else { unreachable!() };
        let start = energy - integral;
        assert!(integral > 40.0, "half an hour at ~150 kW: {integral} kWh");
        assert!((pm.import_kwh - start - integral).abs() < 1e-6);
        // Demand is the mean over the last 15 minutes: near the present load.
        let d = num_of(&m, "demand_kw");
        assert!((d / pm.building_kw() - 1.0).abs() < 0.15, "demand {d}");
    }

    #[test]
    fn meter_without_mains_reads_zero_and_energy_stops() {
        let (mut m, mut r) = meter_at(12.0, 6);
        if let Model::Meter(pm) = &mut m {
            pm.mains = false;
        }
        m.step(Duration::from_secs(1), &mut r);
        let e = num_of(&m, "energy_import_kwh");
        m.step(Duration::from_secs(120), &mut r);
        for p in [
            "voltage_l1_v",
            "voltage_l1_l2_v",
            "current_l2_a",
            "power_total_kw",
            "frequency_hz",
        ] {
            assert_eq!(num_of(&m, p), 0.0, "{p}");
        }
        assert_eq!(num_of(&m, "energy_import_kwh"), e);
        // Mains back, building on the generator: voltage, no current.
        if let Model::Meter(pm) = &mut m {
            pm.mains = true;
            pm.on_load = false;
        }
        m.step(Duration::from_secs(1), &mut r);
        assert!(num_of(&m, "voltage_l2_v") > 220.0);
        assert_eq!(num_of(&m, "current_l2_a"), 0.0);
    }
}
