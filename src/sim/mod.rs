//! Equipment simulators: Modbus TCP servers, and Modbus RTU slaves on serial lines, that behave
//! like lifts, pumps, fire panels and access doors, for the `demo` and `simulate` commands, the
//! tests and the benchmarks.
//!
//! Each port (a TCP port, or a serial bus: `serial.rs`) serves any number of devices, one per
//! unit id, each with the register map of a profile (normally a built-in one) and a model that
//! moves its values (`behaviour/`, one file per device type).
//!
//! What a device answers, like a real one with a sparse map:
//! - reads (FC 1-4) of addresses its points use: the current values;
//! - a read that touches an address no point uses, or runs past 65535: `IllegalDataAddress`;
//! - a quantity of 0 or over the protocol limit (125 registers, 2000 bits): `IllegalDataValue`;
//! - any write (FC 5, 6, 15, 16, 22, 23) and any other function: `IllegalFunction`;
//! - a unit id with no device on the port: no reply at all, as a serial gateway with nobody
//!   at that address (the client times out). Unit 0 and 255 are not special.
//!
//! Faults, scheduled from start ([`ScheduledFault`]) or set through the [`SimHandle`]:
//! `out_of_range` holds a point at a value (the model carries on underneath and takes over
//! again when the fault clears), `silent` stops all replies, `exception` answers every request
//! with an exception, `slow` delays every reply; on serial buses only, `garbled` corrupts every
//! reply frame (its CRC no longer matches) and `wrong_unit` answers under another unit id.
//! The wire faults combine; `silent` wins.
//!
//! A site with a power room (a `power_meter`, `generator` and `ats`; `site.rs`) wires them
//! together and to every other device: the site-level fault [`Fault::MainsFailure`] (in
//! [`SimSpec::site`], or [`SimHandle::change_site_fault`]) takes the mains away, the switch
//! starts the generator and transfers, and the other devices go silent while their supply is
//! off (a device's own `silent` fault still holds after the supply is back).
//!
//! `set_point` changes what the model owns (a pump's `running`, a lift's `service_mode`) so
//! the model carries on from there; points the model derives (`full_load`) or does not drive
//! are written as given and keep the value until the model's own value changes. With
//! `frozen`, nothing moves by itself and tests can assert exact values; runs are reproducible
//! from the seed (exactly so when frozen and moved with [`SimHandle::advance`]).

use std::net::SocketAddr;
use std::time::Duration;

use tokio_modbus::ExceptionCode;

use crate::model::Value;
use crate::profile::{DeviceType, Profile};

pub mod behaviour;
mod cli;
mod device;
mod fault_arg;
mod image;
pub mod mqtt;
mod serial;
mod server;
mod site;

pub use cli::{FleetSpec, SimulateArgs, run_simulate};
pub use fault_arg::{FaultArg, FaultTarget};
pub use serial::{SimBusSpec, start_serial};
pub use server::{SimHandle, start};
pub use site::POWER_TICK;

/// The default tick: how often the models move.
pub const DEFAULT_TICK: Duration = Duration::from_millis(100);

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimSpec {
    pub ports: Vec<SimPortSpec>,
    /// How often the models move (wall time).
    pub tick: Duration,
    /// No movement: values change only through the handle and faults.
    pub frozen: bool,
    /// Site-level faults ([`Fault::MainsFailure`]): the whole site, through its power room.
    pub site: Vec<ScheduledFault>,
}

impl Default for SimSpec {
    fn default() -> Self {
        SimSpec {
            ports: Vec::new(),
            tick: DEFAULT_TICK,
            frozen: false,
            site: Vec::new(),
        }
    }
}

/// One listening port and the devices behind it.
#[derive(Debug, Clone)]
pub struct SimPortSpec {
    /// Port 0 picks a free port; [`SimHandle::addrs`] tells which.
    pub listen: SocketAddr,
    pub devices: Vec<SimDeviceSpec>,
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct SimDeviceSpec {
    /// Unique on its port.
    pub unit: u8,
    pub profile: ProfileRef,
    /// An asset-like name for listings and logs; default `<profile>-<unit>`.
    pub name: Option<String>,
    /// Seeds the model's random generator (starting state and movement).
    pub seed: u64,
    pub faults: Vec<ScheduledFault>,
}

impl SimDeviceSpec {
    /// A device seeded by its unit id, with no faults.
    pub fn new(unit: u8, profile: impl Into<ProfileRef>) -> Self {
        SimDeviceSpec {
            unit,
            profile: profile.into(),
            name: None,
            seed: u64::from(unit),
            faults: Vec::new(),
        }
    }
}

/// The register map of a simulated device.
#[derive(Debug, Clone)]
pub enum ProfileRef {
    /// A built-in profile by name (`elevator`, `pump`, `fire_panel`, `access_door`,
    /// `power_meter`, `generator`, `ats`).
    Builtin(String),
    /// A validated profile; its `device_type` picks the model (`other`: nothing moves).
    Custom(Box<Profile>),
}

impl From<&str> for ProfileRef {
    fn from(name: &str) -> Self {
        ProfileRef::Builtin(name.to_string())
    }
}

impl From<String> for ProfileRef {
    fn from(name: String) -> Self {
        ProfileRef::Builtin(name)
    }
}

impl From<Profile> for ProfileRef {
    fn from(profile: Profile) -> Self {
        ProfileRef::Custom(Box::new(profile))
    }
}

/// A fault of one device.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Holds a point at a value, e.g. a pump's `discharge_pressure_bar` at 0.5 or a lift's
    /// `trapped_alarm` at true. The value is encoded as the point's type: a number that does
    /// not fit wraps like the register would.
    OutOfRange { point: String, value: Value },
    /// No replies at all.
    Silent,
    /// Every request answered with this exception.
    Exception { code: ExceptionCode },
    /// Every reply sent this late.
    Slow { delay: Duration },
    /// Serial buses: every reply frame corrupted (a byte flipped, so its CRC fails).
    Garbled,
    /// Serial buses: every reply sent under another unit id (`None`: the next one up).
    WrongUnit { unit: Option<u8> },
    /// The site's mains supply lost (a site-level fault, not a device's): the power meters
    /// read nothing, the transfer switch starts the generator and transfers to it, and every
    /// other device is silent while its supply is off. Clearing it restores the mains.
    MainsFailure(MainsFailure),
}

/// How a mains failure goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MainsFailure {
    /// The generator starts and the switch transfers: the site is back on the generator.
    Transfer,
    /// The generator cranks and never fires: `fail_to_start` shutdown, the site stays dark.
    GeneratorFailsToStart,
    /// The generator starts, but the switch never moves: the site stays dark.
    AtsFailsToTransfer,
}

impl MainsFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            MainsFailure::Transfer => "mains-failure",
            MainsFailure::GeneratorFailsToStart => "mains-failure:generator-fails-to-start",
            MainsFailure::AtsFailsToTransfer => "mains-failure:ats-fails-to-transfer",
        }
    }
}

impl Fault {
    /// The exception fault with its usual code, `ServerDeviceFailure` (4).
    pub fn exception() -> Self {
        Fault::Exception {
            code: ExceptionCode::ServerDeviceFailure,
        }
    }

    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::OutOfRange { .. } => FaultKind::OutOfRange,
            Fault::Silent => FaultKind::Silent,
            Fault::Exception { .. } => FaultKind::Exception,
            Fault::Slow { .. } => FaultKind::Slow,
            Fault::Garbled => FaultKind::Garbled,
            Fault::WrongUnit { .. } => FaultKind::WrongUnit,
            Fault::MainsFailure(_) => FaultKind::MainsFailure,
        }
    }
}

/// The kinds of fault, for clearing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Clearing it releases every held point.
    OutOfRange,
    Silent,
    Exception,
    Slow,
    Garbled,
    WrongUnit,
    /// The site's: mains back.
    MainsFailure,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::OutOfRange => "out_of_range",
            FaultKind::Silent => "silent",
            FaultKind::Exception => "exception",
            FaultKind::Slow => "slow",
            FaultKind::Garbled => "garbled",
            FaultKind::WrongUnit => "wrong_unit",
            FaultKind::MainsFailure => "mains_failure",
        }
    }
}

/// Starting or ending a fault.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultChange {
    Set(Fault),
    Clear(FaultKind),
    ClearAll,
}

/// A fault change at a time after start.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledFault {
    pub at: Duration,
    pub change: FaultChange,
}

impl ScheduledFault {
    /// `fault` from `from` to `until` (or to the end).
    pub fn window(fault: Fault, from: Duration, until: Option<Duration>) -> Vec<ScheduledFault> {
        let kind = fault.kind();
        let mut out = vec![ScheduledFault {
            at: from,
            change: FaultChange::Set(fault),
        }];
        if let Some(until) = until {
            out.push(ScheduledFault {
                at: until,
                change: FaultChange::Clear(kind),
            });
        }
        out
    }
}

/// Raw content of a device's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registers {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// A device being simulated, for listings.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDeviceInfo {
    /// Index of its port in the spec.
    pub port: usize,
    pub addr: SocketAddr,
    pub unit: u8,
    pub name: String,
    pub profile: String,
    pub device_type: DeviceType,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "unknown built-in profile {name:?} (expected one of: elevator, pump, fire_panel, access_door, power_meter, generator, ats)"
    )]
    UnknownProfile { name: String },
    #[error("profile {name}: {message}")]
    InvalidProfile { name: String, message: String },
    #[error("unit {unit} appears twice on {addr}")]
    DuplicateUnit { addr: SocketAddr, unit: u8 },
    #[error("unit {unit} appears twice on serial bus {path}")]
    DuplicateUnitOnBus { path: String, unit: u8 },
    #[error("the tick must be longer than zero")]
    ZeroTick,
    #[error("no port {port} in the simulator")]
    NoSuchPort { port: usize },
    #[error("no unit {unit} on {addr}")]
    NoSuchUnit { addr: SocketAddr, unit: u8 },
    #[error("profile {profile} has no register point {point:?}")]
    UnknownPoint { profile: String, point: String },
    #[error("value {value:?} does not fit point {point}")]
    BadValue { point: String, value: Value },
    #[error("the device answers: {0}")]
    Exception(ExceptionCode),
    #[error("{0}")]
    Fleet(String),
    #[error("{0} is a site-level fault: it applies to the whole site, not to one device")]
    SiteFault(&'static str),
    #[error(
        "a mains failure needs a power room (a power_meter, generator or ats) in the simulator"
    )]
    NoPowerRoom,
}
