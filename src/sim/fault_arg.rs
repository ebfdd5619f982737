//! `--fault TARGET=FAULT[@AT[..UNTIL]]` of `facilityd simulate`, and the site-level
//! `--fault mains-failure[:VARIANT][@AT[..UNTIL]]`: the grammar, its `--help` text, and the
//! scheduled fault changes one argument makes. Which device a target names is decided where
//! the fleet is laid out (`cli.rs`).

use std::time::Duration;

use tokio_modbus::ExceptionCode;

use super::{Fault, FaultChange, FaultKind, MainsFailure, ScheduledFault};
use crate::model::Value;

/// The long help of `--fault`.
pub(super) const FAULT_HELP: &str = "\
Inject a fault into one device, or into the whole site; repeat for more.
Forms: TARGET=FAULT[@AT[..UNTIL]]  or  mains-failure[:VARIANT][@AT[..UNTIL]]

TARGET: a device name as listed at start (PU-0002), a unit id on the first port (3), or
        PORT:UNIT with the TCP port number (5021:3); with --serial, BUS:UNIT with the
        bus's place in the --serial list, from 1 (2:3).
FAULT:  silent                 the unit stops answering (requests time out)
        exception[:CODE]       every request answered with an exception; CODE is a number
                               (default 4, server device failure) or one of illegal-function,
                               illegal-address, illegal-value, device-failure, busy,
                               gateway-path, gateway-target
        slow:DELAY             every reply DELAY late (e.g. slow:800ms)
        garbled                (serial) every reply frame corrupted: its CRC fails
        wrong_unit[:N]         (serial) every reply sent as unit N (default: the next id up)
        POINT=VALUE            hold a point at a value, e.g. discharge_pressure_bar=0.5,
                               trapped_alarm=true, service_mode=out_of_service
        clear[:KIND]           end faults: all, or one of silent, exception, slow, garbled,
                               wrong_unit, out_of_range
        The generator (GEN-0001) acts on two held points: control_mode=test_on_load (an
        exercise carrying a load bank) and engine_state=running (a start, off load); the
        fault's end stops it and resets its latched alarms.
AT:     when, after start (30s, 2m; default: at start). ..UNTIL clears the fault again then.

mains-failure (no TARGET): the site loses its mains, through the power room (added to the
        fleet if --power-room is not given). The power meter reads 0 V, 0 A, 0 Hz; the
        switch (ATS-0001) sees source 1 under threshold, raises the generator's start relay
        after 3 s; the generator (GEN-0001) runs within about 6 s; the switch transfers
        (I -> 0 -> II) once it has been available 2 s, and the generator takes the building's
        load. Every other device is silent from the failure until its supply is back (on
        the generator, or on the mains). At UNTIL the mains return: after 10 s available
        the switch goes back to I and drops the start relay; the generator cools down 10 s
        and stops. A device's own `silent` outlasts the failure. The steps are logged.
        VARIANT: generator-fails-to-start  the set cranks 3 times and gives up
                                           (fail_to_start = shutdown) until UNTIL
                 ats-fails-to-transfer     the set runs, the switch stays on I
        Without a transfer the other devices stay silent until UNTIL.

Examples: --fault PU-0001=discharge_pressure_bar=0.5@20s..2m  --fault 5021:4=silent@1m
          --fault mains-failure@30s..2m  --fault mains-failure:ats-fails-to-transfer@10s..70s";

/// The device a `--fault` is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    /// By the name in the listing.
    Name(String),
    /// By unit id, on the port with this TCP port number (default: the first port).
    Unit { port: Option<u16>, unit: u8 },
    /// The whole site (a mains failure).
    Site,
}

/// A parsed `--fault`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultArg {
    pub target: FaultTarget,
    pub change: FaultChange,
    pub at: Duration,
    /// When the fault clears again.
    pub until: Option<Duration>,
    /// As written, for messages.
    pub text: String,
}

/// A `--fault` that does not parse: the argument as written and what is wrong with it (clap
/// prints this after the option's name).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{text:?}: {why} (expected TARGET=FAULT[@AT[..UNTIL]], see --help)")]
pub struct FaultArgError {
    pub text: String,
    pub why: FaultArgProblem,
}

/// What is wrong with a `--fault`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultArgProblem {
    #[error("no '='")]
    NoEquals,
    #[error("port {0:?} is not a TCP port number")]
    Port(String),
    #[error("unit {0:?} is not a unit id 0-255")]
    Unit(String),
    #[error("target {0:?} is neither a device name nor a unit id")]
    Target(String),
    #[error("a held point needs a name: POINT=VALUE")]
    PointName,
    #[error("exception code {0:?}: expected 1-255 or a name")]
    ExceptionCode(String),
    #[error("slow delay {text:?}: {error}")]
    SlowDelay {
        text: String,
        error: humantime::DurationError,
    },
    #[error("slow needs a delay: slow:800ms")]
    SlowWithoutDelay,
    #[error("wrong_unit {0:?}: expected a unit id 0-255")]
    WrongUnit(String),
    #[error(
        "cannot clear {0:?}: expected silent, exception, slow, garbled, wrong_unit or out_of_range"
    )]
    ClearKind(String),
    #[error(
        "unknown fault {0:?}: expected silent, exception[:CODE], slow:DELAY, garbled, wrong_unit[:N], POINT=VALUE or clear[:KIND]"
    )]
    UnknownFault(String),
    #[error("time {text:?}: {error}")]
    Time {
        text: String,
        error: humantime::DurationError,
    },
    #[error("the fault must clear after it starts")]
    ClearsBeforeStart,
    #[error("..UNTIL applies to starting a fault, not to clearing")]
    UntilOnClear,
    #[error(
        "unknown mains failure {0:?}: expected mains-failure, mains-failure:generator-fails-to-start or mains-failure:ats-fails-to-transfer"
    )]
    MainsVariant(String),
}

impl FaultArg {
    /// Parses `TARGET=FAULT[@AT[..UNTIL]]`.
    pub fn parse(text: &str) -> Result<FaultArg, FaultArgError> {
        let fail = |why: FaultArgProblem| FaultArgError {
            text: text.to_string(),
            why,
        };
        let (body, timing) = match text.rsplit_once('@') {
            Some((body, timing)) => (body, Some(timing)),
            None => (text, None),
        };
        let (target, change) = match parse_site(body.trim()).map_err(&fail)? {
            Some(change) => (FaultTarget::Site, change),
            None => {
                let (target, fault) = body
                    .split_once('=')
                    .ok_or_else(|| fail(FaultArgProblem::NoEquals))?;
                let target = parse_target(target.trim()).map_err(&fail)?;
                (target, parse_change(fault.trim()).map_err(&fail)?)
            }
        };
        let (at, until) = match timing {
            None => (Duration::ZERO, None),
            Some(t) => {
                let (from, to) = match t.split_once("..") {
                    Some((from, to)) => (from, Some(to)),
                    None => (t, None),
                };
                let duration = |s: &str| {
                    humantime::parse_duration(s.trim()).map_err(|error| {
                        fail(FaultArgProblem::Time {
                            text: s.to_string(),
                            error,
                        })
                    })
                };
                let at = if from.trim().is_empty() {
                    Duration::ZERO
                } else {
                    duration(from)?
                };
                let until = to.map(duration).transpose()?;
                if let Some(u) = until {
                    if u <= at {
                        return Err(fail(FaultArgProblem::ClearsBeforeStart));
                    }
                    if !matches!(change, FaultChange::Set(_)) {
                        return Err(fail(FaultArgProblem::UntilOnClear));
                    }
                }
                (at, until)
            }
        };
        Ok(FaultArg {
            target,
            change,
            at,
            until,
            text: text.to_string(),
        })
    }

    /// The scheduled changes this argument makes.
    pub fn scheduled(&self) -> Vec<ScheduledFault> {
        match &self.change {
            FaultChange::Set(fault) => ScheduledFault::window(fault.clone(), self.at, self.until),
            other => vec![ScheduledFault {
                at: self.at,
                change: other.clone(),
            }],
        }
    }
}

/// `mains-failure[:VARIANT]` (no TARGET): a site-level fault. `None` for anything else.
fn parse_site(s: &str) -> Result<Option<FaultChange>, FaultArgProblem> {
    let (name, variant) = match s.split_once(':') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (s, None),
    };
    if !matches!(name, "mains-failure" | "mains_failure") || s.contains('=') {
        return Ok(None);
    }
    let how = match variant {
        None => MainsFailure::Transfer,
        Some("generator-fails-to-start" | "generator_fails_to_start") => {
            MainsFailure::GeneratorFailsToStart
        }
        Some("ats-fails-to-transfer" | "ats_fails_to_transfer") => MainsFailure::AtsFailsToTransfer,
        Some(other) => return Err(FaultArgProblem::MainsVariant(other.to_string())),
    };
    Ok(Some(FaultChange::Set(Fault::MainsFailure(how))))
}

fn parse_target(s: &str) -> Result<FaultTarget, FaultArgProblem> {
    if let Some((port, unit)) = s.split_once(':') {
        let port = port
            .parse::<u16>()
            .map_err(|_| FaultArgProblem::Port(port.to_string()))?;
        let unit = unit
            .parse::<u8>()
            .map_err(|_| FaultArgProblem::Unit(unit.to_string()))?;
        return Ok(FaultTarget::Unit {
            port: Some(port),
            unit,
        });
    }
    if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
        let unit = s
            .parse::<u8>()
            .map_err(|_| FaultArgProblem::Unit(s.to_string()))?;
        return Ok(FaultTarget::Unit { port: None, unit });
    }
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return Err(FaultArgProblem::Target(s.to_string()));
    }
    Ok(FaultTarget::Name(s.to_string()))
}

fn parse_change(s: &str) -> Result<FaultChange, FaultArgProblem> {
    if let Some((point, value)) = s.split_once('=') {
        let point = point.trim();
        if point.is_empty() {
            return Err(FaultArgProblem::PointName);
        }
        return Ok(FaultChange::Set(Fault::OutOfRange {
            point: point.to_string(),
            value: parse_value(value.trim()),
        }));
    }
    let (name, arg) = match s.split_once(':') {
        Some((n, a)) => (n, Some(a.trim())),
        None => (s, None),
    };
    match (name, arg) {
        ("silent", None) => Ok(FaultChange::Set(Fault::Silent)),
        ("exception", None) => Ok(FaultChange::Set(Fault::exception())),
        ("exception", Some(code)) => Ok(FaultChange::Set(Fault::Exception {
            code: parse_exception(code)?,
        })),
        ("slow", Some(d)) => {
            let delay =
                humantime::parse_duration(d).map_err(|error| FaultArgProblem::SlowDelay {
                    text: d.to_string(),
                    error,
                })?;
            Ok(FaultChange::Set(Fault::Slow { delay }))
        }
        ("slow", None) => Err(FaultArgProblem::SlowWithoutDelay),
        ("garbled", None) => Ok(FaultChange::Set(Fault::Garbled)),
        ("wrong_unit" | "wrong-unit", None) => {
            Ok(FaultChange::Set(Fault::WrongUnit { unit: None }))
        }
        ("wrong_unit" | "wrong-unit", Some(n)) => {
            let unit = n
                .parse::<u8>()
                .map_err(|_| FaultArgProblem::WrongUnit(n.to_string()))?;
            Ok(FaultChange::Set(Fault::WrongUnit { unit: Some(unit) }))
        }
        ("clear", None) => Ok(FaultChange::ClearAll),
        ("clear", Some(kind)) => {
            let kind = [
                FaultKind::Silent,
                FaultKind::Exception,
                FaultKind::Slow,
                FaultKind::Garbled,
                FaultKind::WrongUnit,
                FaultKind::OutOfRange,
            ]
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| FaultArgProblem::ClearKind(kind.to_string()))?;
            Ok(FaultChange::Clear(kind))
        }
        _ => Err(FaultArgProblem::UnknownFault(s.to_string())),
    }
}

fn parse_exception(s: &str) -> Result<ExceptionCode, FaultArgProblem> {
    let code = match s {
        "illegal-function" => ExceptionCode::IllegalFunction,
        "illegal-address" => ExceptionCode::IllegalDataAddress,
        "illegal-value" => ExceptionCode::IllegalDataValue,
        "device-failure" => ExceptionCode::ServerDeviceFailure,
        "busy" => ExceptionCode::ServerDeviceBusy,
        "gateway-path" => ExceptionCode::GatewayPathUnavailable,
        "gateway-target" => ExceptionCode::GatewayTargetDevice,
        n => match n.parse::<u8>() {
            Ok(c) if c >= 1 => ExceptionCode::new(c),
            _ => return Err(FaultArgProblem::ExceptionCode(s.to_string())),
        },
    };
    Ok(code)
}

/// `true`/`false`, an integer, a number, or else a name (for `map` states).
fn parse_value(s: &str) -> Value {
    match s {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => s
            .parse::<i64>()
            .map(Value::Int)
            .or_else(|_| s.parse::<f64>().map(Value::Float))
            .unwrap_or_else(|_| Value::Str(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fault_forms() {
        let f = FaultArg::parse("PU-0001=discharge_pressure_bar=0.5@20s..2m").expect("valid");
        assert_eq!(f.target, FaultTarget::Name("PU-0001".into()));
        assert_eq!(
            f.change,
            FaultChange::Set(Fault::OutOfRange {
                point: "discharge_pressure_bar".into(),
                value: Value::Float(0.5)
            })
        );
        assert_eq!(
            (f.at, f.until),
            (Duration::from_secs(20), Some(Duration::from_secs(120)))
        );
        assert_eq!(f.scheduled().len(), 2);
        assert_eq!(
            f.scheduled()[1].change,
            FaultChange::Clear(FaultKind::OutOfRange)
        );

        let f = FaultArg::parse("5021:4=silent@1m").expect("valid");
        assert_eq!(
            f.target,
            FaultTarget::Unit {
                port: Some(5021),
                unit: 4
            }
        );
        assert_eq!(f.change, FaultChange::Set(Fault::Silent));
        assert_eq!(f.at, Duration::from_secs(60));

        let f = FaultArg::parse("3=exception").expect("valid");
        assert_eq!(
            f.target,
            FaultTarget::Unit {
                port: None,
                unit: 3
            }
        );
        assert_eq!(
            f.change,
            FaultChange::Set(Fault::Exception {
                code: ExceptionCode::ServerDeviceFailure
            })
        );
        assert_eq!(f.at, Duration::ZERO);
        let f = FaultArg::parse("3=exception:busy").expect("valid");
        assert_eq!(
            f.change,
            FaultChange::Set(Fault::Exception {
                code: ExceptionCode::ServerDeviceBusy
            })
        );
        let f = FaultArg::parse("3=exception:11").expect("valid");
        assert_eq!(
            f.change,
            FaultChange::Set(Fault::Exception {
                code: ExceptionCode::GatewayTargetDevice
            })
        );
        let f = FaultArg::parse("3=slow:800ms").expect("valid");
        assert_eq!(
            f.change,
            FaultChange::Set(Fault::Slow {
                delay: Duration::from_millis(800)
            })
        );
        let f = FaultArg::parse("EL-0002=trapped_alarm=true@10s").expect("valid");
        assert_eq!(
            f.change,
            FaultChange::Set(Fault::OutOfRange {
                point: "trapped_alarm".into(),
                value: Value::Bool(true)
            })
        );
        let f = FaultArg::parse("EL-0002=service_mode=out_of_service").expect("valid");
        assert_eq!(
            f.change,
            FaultChange::Set(Fault::OutOfRange {
                point: "service_mode".into(),
                value: Value::Str("out_of_service".into())
            })
        );
        assert_eq!(
            FaultArg::parse("3=clear:slow@2m").expect("valid").change,
            FaultChange::Clear(FaultKind::Slow)
        );
        assert_eq!(
            FaultArg::parse("3=clear").expect("valid").change,
            FaultChange::ClearAll
        );
        assert_eq!(
            FaultArg::parse("3=garbled@5s").expect("valid").change,
            FaultChange::Set(Fault::Garbled)
        );
        assert_eq!(
            FaultArg::parse("3=wrong_unit").expect("valid").change,
            FaultChange::Set(Fault::WrongUnit { unit: None })
        );
        let f = FaultArg::parse("2:3=wrong_unit:9").expect("valid");
        assert_eq!(
            (f.target, f.change),
            (
                FaultTarget::Unit {
                    port: Some(2),
                    unit: 3
                },
                FaultChange::Set(Fault::WrongUnit { unit: Some(9) })
            )
        );
        assert_eq!(
            FaultArg::parse("3=clear:wrong_unit").expect("valid").change,
            FaultChange::Clear(FaultKind::WrongUnit)
        );
    }

    #[test]
    fn parses_site_faults() {
        let f = FaultArg::parse("mains-failure@30s..2m").expect("valid");
        assert_eq!(f.target, FaultTarget::Site);
        assert_eq!(
            f.change,
            FaultChange::Set(Fault::MainsFailure(MainsFailure::Transfer))
        );
        assert_eq!(
            (f.at, f.until),
            (Duration::from_secs(30), Some(Duration::from_secs(120)))
        );
        assert_eq!(
            f.scheduled()[1].change,
            FaultChange::Clear(FaultKind::MainsFailure)
        );
        for (text, how) in [
            (
                "mains-failure:generator-fails-to-start@5s",
                MainsFailure::GeneratorFailsToStart,
            ),
            (
                "mains-failure:ats-fails-to-transfer",
                MainsFailure::AtsFailsToTransfer,
            ),
        ] {
            let f = FaultArg::parse(text).expect("valid");
            assert_eq!(
                (f.target, f.change),
                (
                    FaultTarget::Site,
                    FaultChange::Set(Fault::MainsFailure(how))
                )
            );
        }
        for bad in [
            "mains-failure:meteor@1s",
            "mains-failure@2m..1m",
            "mains@1s",
        ] {
            assert!(FaultArg::parse(bad).is_err(), "{bad} was accepted");
        }
        // A device may be called mains-failure.
        assert_eq!(
            FaultArg::parse("mains-failure=silent")
                .expect("valid")
                .target,
            FaultTarget::Name("mains-failure".into())
        );
    }

    #[test]
    fn rejects_bad_faults() {
        for bad in [
            "silent",
            "3=",
            "3=melt",
            "3=slow",
            "3=slow:fast",
            "3=exception:0",
            "3=exception:x",
            "3=silent@soon",
            "3=silent@2m..1m",
            "3=clear@1m..2m",
            "3=clear:everything",
            "3=wrong_unit:x",
            "3=garbled:1",
            "300=silent",
            "x:3=silent",
            "=silent",
            "3==1",
        ] {
            assert!(FaultArg::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
