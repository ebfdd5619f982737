//! The site's power: the power room (power meters at the mains incomer, the standby generator,
//! the automatic transfer switch) wired together, and to every other device, which it
//! supplies.
//!
//! Before each step the site hands the models their inputs: the meters see the mains (and
//! carry the building's load while the switch is on position I), the switch sees the mains as
//! source 1 and the generator (up to speed) as source 2, the generator gets the switch's start
//! relay and, once the switch is on position II, the building's load as the meter computes it.
//! After the step it works out whether the other devices have supply (mains with the switch on
//! I, or the running generator with it on II; without a switch, the mains) and mutes or
//! unmutes them, and logs every change of the power room's states, so `facilityd simulate`
//! shows the sequence as it happens.
//!
//! A mains failure ([`Fault::MainsFailure`]) takes the mains away until it is cleared; its
//! variants make the generator crank without firing or the switch's motor stay put. Clearing
//! it brings the mains back and ends those faults; the generator's latched `fail_to_start` is
//! reset (the operator's reset) once the switch has dropped the start relay.
//!
//! The meters' clock of day starts at the real local time (noon when frozen, so frozen runs
//! stay reproducible) and moves with model time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::behaviour::{Model, Position, Signal};
use super::device::SimDevice;
use super::server::PortState;
use super::{Fault, FaultChange, FaultKind, MainsFailure, ScheduledFault, SimError};
use crate::profile::DeviceType;

/// The longest model step between two couplings of the power room: a `SimHandle::advance` of
/// a minute is cut into such steps, so the sequence keeps its timing.
pub const POWER_TICK: Duration = Duration::from_millis(100);

/// The building's load (kW) the generator carries when the site has no meter to say.
const LOAD_WITHOUT_METER_KW: f64 = 100.0;

/// The power-room points whose changes are logged, per device type.
const WATCHED: &[(DeviceType, &[&str])] = &[
    (
        DeviceType::Ats,
        &["s1_state", "s2_start_relay", "s2_state", "switch_position"],
    ),
    (DeviceType::Generator, &["engine_state", "fail_to_start"]),
];

#[derive(Debug)]
struct SiteState {
    failure: Option<MainsFailure>,
    /// The mains is back after the generator failed to start: its latched `fail_to_start` is
    /// reset once the switch has dropped the start relay (else the reset set would start
    /// again for the rest of the retransfer delay).
    reset_pending: bool,
    /// (device, point, last value) of the watched points.
    seen: Vec<(Arc<SimDevice>, &'static str, String)>,
}

#[derive(Debug)]
pub(crate) struct PowerSite {
    meters: Vec<Arc<SimDevice>>,
    generator: Option<Arc<SimDevice>>,
    ats: Option<Arc<SimDevice>>,
    /// Every other device: supplied by the site.
    loads: Vec<Arc<SimDevice>>,
    /// Whether the loads have supply (shared with the MQTT devices).
    supply: Arc<AtomicBool>,
    state: Mutex<SiteState>,
}

fn text(s: Signal) -> String {
    match s {
        Signal::Name(n) => n.to_string(),
        Signal::Count(n) => n.to_string(),
        Signal::Flag(b) => b.to_string(),
        Signal::Num(x) => format!("{x:.1}"),
    }
}

impl PowerSite {
    /// The site of these ports: `None` when none of their devices is power equipment.
    pub(crate) fn new(ports: &[Arc<PortState>], frozen: bool) -> Option<Arc<PowerSite>> {
        let mut meters = Vec::new();
        let mut generator = None;
        let mut ats = None;
        let mut loads = Vec::new();
        for d in ports.iter().flat_map(|p| p.devices.iter()) {
            match d.layout.profile.device_type {
                DeviceType::PowerMeter => meters.push(Arc::clone(d)),
                // One generator and one switch make the sequence; further ones sit idle.
                DeviceType::Generator if generator.is_none() => generator = Some(Arc::clone(d)),
                DeviceType::Ats if ats.is_none() => ats = Some(Arc::clone(d)),
                DeviceType::Generator | DeviceType::Ats => {}
                _ => loads.push(Arc::clone(d)),
            }
        }
        if meters.is_empty() && generator.is_none() && ats.is_none() {
            return None;
        }
        let hour = if frozen {
            12.0
        } else {
            use chrono::Timelike as _;
            let now = chrono::Local::now();
            f64::from(now.hour()) + f64::from(now.minute()) / 60.0
        };
        for m in &meters {
            if let Model::Meter(pm) = &mut m.lock().model {
                pm.set_hour(hour);
            }
        }
        let mut seen = Vec::new();
        for d in ats.iter().chain(generator.iter()) {
            let points = WATCHED
                .iter()
                .find(|(t, _)| *t == d.layout.profile.device_type)
                .map_or(&[][..], |(_, p)| *p);
            let state = d.lock();
            for p in points {
                let v = state.model.value(p).map(text).unwrap_or_default();
                seen.push((Arc::clone(d), *p, v));
            }
        }
        let site = Arc::new(PowerSite {
            meters,
            generator,
            ats,
            loads,
            supply: Arc::new(AtomicBool::new(true)),
            state: Mutex::new(SiteState {
                failure: None,
                reset_pending: false,
                seen,
            }),
        });
        site.couple();
        Some(site)
    }

    fn lock(&self) -> MutexGuard<'_, SiteState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the other devices have supply (shared, for the MQTT devices).
    pub(crate) fn supply(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.supply)
    }

    /// The switch's position and start relay (no switch: `None`, no relay).
    fn switch(&self) -> (Option<Position>, bool) {
        let Some(d) = &self.ats else {
            return (None, false);
        };
        match &d.lock().model {
            Model::Ats(a) => (Some(a.position), a.start_relay),
            _ => (None, false),
        }
    }

    fn generator_up(&self) -> bool {
        self.generator
            .as_ref()
            .is_some_and(|d| matches!(&d.lock().model, Model::Generator(g) if g.available()))
    }

    /// Hands the models their inputs from each other's state (before a step).
    pub(crate) fn couple(&self) {
        let (failure, reset) = {
            let mut state = self.lock();
            let (position, relay) = self.switch();
            let reset = state.reset_pending && !relay && position != Some(Position::II);
            if reset {
                state.reset_pending = false;
            }
            (state.failure, reset)
        };
        let mains = failure.is_none();
        let (position, relay) = self.switch();
        let generator_up = self.generator_up();
        let building_kw = self
            .meters
            .first()
            .and_then(|d| match &d.lock().model {
                Model::Meter(pm) => Some(pm.building_kw()),
                _ => None,
            })
            .unwrap_or(LOAD_WITHOUT_METER_KW);
        for d in &self.meters {
            if let Model::Meter(pm) = &mut d.lock().model {
                pm.mains = mains;
                pm.on_load = position.is_none_or(|p| p == Position::I);
            }
        }
        if let Some(d) = &self.generator
            && let Model::Generator(g) = &mut d.lock().model
        {
            if reset {
                g.fail_to_start = false;
            }
            g.remote_start = relay;
            g.site_load_kw =
                (position == Some(Position::II) && generator_up).then_some(building_kw);
            g.will_not_fire = failure == Some(MainsFailure::GeneratorFailsToStart);
        }
        if let Some(d) = &self.ats
            && let Model::Ats(a) = &mut d.lock().model
        {
            a.s1_ok = mains;
            a.s2_ok = generator_up;
            a.stuck = failure == Some(MainsFailure::AtsFailsToTransfer);
        }
    }

    /// After a step: mutes or unmutes the devices the site supplies, and logs what changed.
    pub(crate) fn settle(&self) {
        let mains = self.lock().failure.is_none();
        let (position, _) = self.switch();
        let on = match position {
            None | Some(Position::I) => mains,
            Some(Position::II) => self.generator_up(),
            Some(Position::Zero) => false,
        };
        let mut state = self.lock();
        for (d, point, last) in &mut state.seen {
            let now = d.lock().model.value(point).map(text).unwrap_or_default();
            if now != *last {
                tracing::info!(device = %d.name, "power room: {point} {last} -> {now}");
                *last = now;
            }
        }
        drop(state);
        if self.supply.swap(on, Ordering::Relaxed) != on {
            for d in &self.loads {
                d.lock().comm.unpowered = !on;
            }
            let n = self.loads.len();
            if on {
                tracing::info!("site supply back on: {n} other device(s) powered again");
            } else {
                tracing::info!("site supply off: {n} other device(s) powered down, silent");
            }
        }
    }

    /// Starts or ends a mains failure; other changes are not the site's.
    pub(crate) fn change(&self, change: &FaultChange) -> Result<(), SimError> {
        match change {
            FaultChange::Set(Fault::MainsFailure(how)) => {
                self.lock().failure = Some(*how);
                tracing::info!("mains failure ({})", how.as_str());
            }
            FaultChange::Clear(FaultKind::MainsFailure) | FaultChange::ClearAll => {
                let mut state = self.lock();
                if state.failure.take() == Some(MainsFailure::GeneratorFailsToStart) {
                    state.reset_pending = true;
                }
                drop(state);
                tracing::info!("mains restored");
            }
            FaultChange::Set(f) => return Err(not_site(f.kind())),
            FaultChange::Clear(kind) => return Err(not_site(*kind)),
        }
        self.couple();
        self.settle();
        Ok(())
    }
}

fn not_site(kind: FaultKind) -> SimError {
    SimError::Fleet(format!(
        "{} is a device's fault; the site takes mains-failure only",
        kind.as_str()
    ))
}

/// Checks that `faults` are site faults and that there is a site for them.
pub(crate) fn check_site_faults(
    site: Option<&PowerSite>,
    faults: &[ScheduledFault],
) -> Result<(), SimError> {
    for f in faults {
        match &f.change {
            FaultChange::Set(Fault::MainsFailure(_))
            | FaultChange::Clear(FaultKind::MainsFailure)
            | FaultChange::ClearAll => {}
            FaultChange::Set(other) => return Err(not_site(other.kind())),
            FaultChange::Clear(kind) => return Err(not_site(*kind)),
        }
    }
    if !faults.is_empty() && site.is_none() {
        return Err(SimError::NoPowerRoom);
    }
    Ok(())
}

/// Applies the site's scheduled faults on time.
pub(crate) async fn schedule_site(
    site: Arc<PowerSite>,
    mut due: Vec<ScheduledFault>,
    started: Instant,
) {
    due.sort_by_key(|d| d.at);
    for d in due {
        tokio::time::sleep_until(started + d.at).await;
        if let Err(err) = site.change(&d.change) {
            tracing::warn!(%err, "site fault not applied");
        }
    }
}
