//! The fire alarm panel model (built-in profile `fire_panel`): a quiet panel with a floating
//! battery, the occasional self-clearing trouble and prealarm, and zones set from outside.

use rand::Rng;

use super::{Signal, approach, chance, count, flag, name_of, noise, num};
use crate::model::Value;

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

    pub(super) fn advance<R: Rng + ?Sized>(&mut self, h: f64, rng: &mut R) {
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

    pub(super) fn emit(&self, out: &mut dyn FnMut(&'static str, Signal)) {
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

    pub(super) fn set(&mut self, point: &str, v: &Value) -> Option<()> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::profile::DeviceType;
    use crate::sim::behaviour::Model;
    use crate::sim::behaviour::test_util::{TICK, flag_of, num_of, rng};

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
}
