//! One simulated device: its model, register image and faults, kept together behind one lock
//! so that a read never sees half of an update.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_modbus::{ExceptionCode, Request, Response};

use super::behaviour::{Model, Signal};
use super::image::RegisterImage;
use super::{Fault, FaultChange, FaultKind, Registers, SimError};
use crate::modbus::codec::{Decoded, apply, decode_words, encode_words};
use crate::model::Value;
use crate::profile::{Point, Profile, RegisterKind, Transform};

/// A profile prepared for simulation, shared by every device that uses it.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) profile: Profile,
    index: HashMap<Arc<str>, usize>,
    empty: RegisterImage,
}

impl Layout {
    pub(crate) fn new(profile: Profile) -> Self {
        let index = profile
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| (Arc::clone(&p.name), i))
            .collect();
        let empty = RegisterImage::for_points(&profile.points);
        Layout {
            profile,
            index,
            empty,
        }
    }

    /// The index of a register point (MQTT points have no place in the image).
    pub(crate) fn register_point(&self, name: &str) -> Option<usize> {
        self.index
            .get(name)
            .copied()
            .filter(|&i| self.profile.points[i].register.is_some())
    }

    /// Checks that `value` can be written into the named point.
    pub(crate) fn check_value(&self, name: &str, value: &Value) -> Result<usize, SimError> {
        let i = self
            .register_point(name)
            .ok_or_else(|| SimError::UnknownPoint {
                profile: self.profile.name.clone(),
                point: name.to_string(),
            })?;
        let mut scratch = self.empty.clone();
        if write_point(&mut scratch, &self.profile.points[i], value) {
            Ok(i)
        } else {
            Err(SimError::BadValue {
                point: name.to_string(),
                value: value.clone(),
            })
        }
    }
}

/// Faults that change how the device answers on the wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CommFaults {
    /// No reply at all (takes precedence over the others).
    pub(crate) silent: bool,
    /// Every request answered with this exception.
    pub(crate) exception: Option<ExceptionCode>,
    /// Replies (including exceptions) sent this late.
    pub(crate) slow: Option<Duration>,
    /// Serial: reply frames corrupted.
    pub(crate) garbled: bool,
    /// Serial: replies sent under another unit id (`Some(None)`: the next one up).
    pub(crate) wrong_unit: Option<Option<u8>>,
    /// The site's supply to the device is off (a mains failure; `site.rs`): no reply, like
    /// `silent`, but set and cleared by the site, so a device's own `silent` outlasts it.
    pub(crate) unpowered: bool,
}

impl CommFaults {
    /// No reply at all: silent, or without supply.
    pub(crate) fn mute(&self) -> bool {
        self.silent || self.unpowered
    }
}

/// A point held at a value by an `out_of_range` fault.
#[derive(Debug, Clone)]
struct Pin {
    point: usize,
    /// The value before the pin, put back when the pin is cleared.
    before: Option<Value>,
}

/// Everything that changes, under the device's lock.
#[derive(Debug)]
pub(crate) struct DeviceState {
    pub(crate) model: Model,
    rng: StdRng,
    image: RegisterImage,
    /// What the model last wrote into each point; `None` makes the next publish write it.
    written: Vec<Option<Signal>>,
    pins: Vec<Pin>,
    pub(crate) comm: CommFaults,
}

impl DeviceState {
    fn new(layout: &Layout, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let model = Model::new(layout.profile.device_type, &mut rng);
        let mut state = DeviceState {
            model,
            rng,
            image: layout.empty.clone(),
            written: vec![None; layout.profile.points.len()],
            pins: Vec::new(),
            comm: CommFaults::default(),
        };
        state.publish(layout);
        state
    }

    /// Advances the model and writes what changed into the image.
    pub(crate) fn step(&mut self, layout: &Layout, dt: Duration) {
        self.model.step(dt, &mut self.rng);
        self.publish(layout);
    }

    /// Writes the model's values into the image, skipping unchanged and pinned points.
    fn publish(&mut self, layout: &Layout) {
        let DeviceState {
            model,
            image,
            written,
            pins,
            ..
        } = self;
        model.emit(&mut |name, signal| {
            let Some(&i) = layout.index.get(name) else {
                return;
            };
            if written[i] == Some(signal) || pins.iter().any(|p| p.point == i) {
                return;
            }
            if write_point(image, &layout.profile.points[i], &signal.to_value()) {
                written[i] = Some(signal);
            }
        });
    }

    /// Sets a point: the model's state when the model owns the point, otherwise the register
    /// itself, which keeps the value until the model's own value for it (if it derives one,
    /// like `full_load` from `load_pct`) changes. A pinned point stays pinned.
    pub(crate) fn set_point(
        &mut self,
        layout: &Layout,
        name: &str,
        value: &Value,
    ) -> Result<(), SimError> {
        let i = layout.check_value(name, value)?;
        let pinned = self.pins.iter().any(|p| p.point == i);
        if self.model.set(name, value) {
            self.written[i] = None;
        } else if !pinned {
            write_point(&mut self.image, &layout.profile.points[i], value);
            // Stays until the model's own value for the point changes.
            self.written[i] = self.model.value(name);
        }
        self.publish(layout);
        Ok(())
    }

    pub(crate) fn change_fault(
        &mut self,
        layout: &Layout,
        change: &FaultChange,
    ) -> Result<(), SimError> {
        match change {
            FaultChange::Set(Fault::OutOfRange { point, value }) => {
                let i = layout.check_value(point, value)?;
                // A point the model acts on (a generator's mode): the model takes it.
                if self.model.hold(point, value) {
                    self.written[i] = None;
                    self.publish(layout);
                    return Ok(());
                }
                let p = &layout.profile.points[i];
                if !self.pins.iter().any(|pin| pin.point == i) {
                    let before = current_value(&self.image, p);
                    self.pins.push(Pin { point: i, before });
                }
                write_point(&mut self.image, p, value);
            }
            FaultChange::Set(Fault::Silent) => self.comm.silent = true,
            FaultChange::Set(Fault::Exception { code }) => self.comm.exception = Some(*code),
            FaultChange::Set(Fault::Slow { delay }) => self.comm.slow = Some(*delay),
            FaultChange::Set(Fault::Garbled) => self.comm.garbled = true,
            FaultChange::Set(Fault::WrongUnit { unit }) => self.comm.wrong_unit = Some(*unit),
            FaultChange::Set(f @ Fault::MainsFailure(_)) => {
                return Err(SimError::SiteFault(f.kind().as_str()));
            }
            FaultChange::Clear(FaultKind::MainsFailure) => {
                return Err(SimError::SiteFault(FaultKind::MainsFailure.as_str()));
            }
            FaultChange::Clear(FaultKind::OutOfRange) => {
                self.model.release();
                self.unpin(layout);
            }
            FaultChange::Clear(FaultKind::Silent) => self.comm.silent = false,
            FaultChange::Clear(FaultKind::Exception) => self.comm.exception = None,
            FaultChange::Clear(FaultKind::Slow) => self.comm.slow = None,
            FaultChange::Clear(FaultKind::Garbled) => self.comm.garbled = false,
            FaultChange::Clear(FaultKind::WrongUnit) => self.comm.wrong_unit = None,
            FaultChange::ClearAll => {
                // The supply is the site's business, not the device's.
                self.comm = CommFaults {
                    unpowered: self.comm.unpowered,
                    ..CommFaults::default()
                };
                self.model.release();
                self.unpin(layout);
            }
        }
        Ok(())
    }

    /// Releases every pinned point: back to its value before the pin, then to the model's.
    fn unpin(&mut self, layout: &Layout) {
        for pin in std::mem::take(&mut self.pins) {
            if let Some(before) = &pin.before {
                write_point(&mut self.image, &layout.profile.points[pin.point], before);
            }
            self.written[pin.point] = None;
        }
        self.publish(layout);
    }

    /// Answers a request from the image (faults are the caller's business).
    pub(crate) fn answer(&self, request: &Request<'_>) -> Result<Response, ExceptionCode> {
        match request {
            Request::ReadCoils(a, n) => self
                .image
                .read_bits(RegisterKind::Coil, *a, *n)
                .map(|b| Response::ReadCoils(b.to_vec())),
            Request::ReadDiscreteInputs(a, n) => self
                .image
                .read_bits(RegisterKind::Discrete, *a, *n)
                .map(|b| Response::ReadDiscreteInputs(b.to_vec())),
            Request::ReadHoldingRegisters(a, n) => self
                .image
                .read_words(RegisterKind::Holding, *a, *n)
                .map(|w| Response::ReadHoldingRegisters(w.to_vec())),
            Request::ReadInputRegisters(a, n) => self
                .image
                .read_words(RegisterKind::Input, *a, *n)
                .map(|w| Response::ReadInputRegisters(w.to_vec())),
            // Every write (5, 6, 15, 16, 22, 23) and everything else: a monitoring point
            // refuses what it does not serve.
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    pub(crate) fn registers(
        &self,
        kind: RegisterKind,
        address: u16,
        count: u16,
    ) -> Result<Registers, ExceptionCode> {
        if kind.is_bit() {
            self.image
                .read_bits(kind, address, count)
                .map(|b| Registers::Bits(b.to_vec()))
        } else {
            self.image
                .read_words(kind, address, count)
                .map(|w| Registers::Words(w.to_vec()))
        }
    }

    /// The engineering value of every register point, decoded from the image as a gateway
    /// would (but without dropping `na` or out-of-range readings: they are what is served).
    pub(crate) fn values(&self, layout: &Layout) -> Vec<(String, Value)> {
        layout
            .profile
            .points
            .iter()
            .filter_map(|p| Some((p.name.to_string(), current_value(&self.image, p)?)))
            .collect()
    }
}

/// A device on a port.
#[derive(Debug)]
pub(crate) struct SimDevice {
    pub(crate) unit: u8,
    pub(crate) name: String,
    pub(crate) layout: Arc<Layout>,
    state: Mutex<DeviceState>,
    /// Requests received for this unit, answered or not.
    pub(crate) requests: AtomicU64,
}

impl SimDevice {
    pub(crate) fn new(unit: u8, name: String, layout: Arc<Layout>, seed: u64) -> Self {
        let state = Mutex::new(DeviceState::new(&layout, seed));
        SimDevice {
            unit,
            name,
            layout,
            state,
            requests: AtomicU64::new(0),
        }
    }

    /// The device's state. A panic while holding the lock leaves consistent data (every
    /// update is a plain field write), so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, DeviceState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes an engineering value into a point's place in the image. False when the value does
/// not fit the point (a name missing from its `map`, text into a number) or the point has no
/// register.
fn write_point(image: &mut RegisterImage, point: &Point, value: &Value) -> bool {
    let Some(spec) = &point.register else {
        return false;
    };
    if spec.kind.is_bit() {
        let on = match value {
            Value::Bool(b) => *b,
            Value::Str(_) => return false,
            other => other.as_f64().is_some_and(|x| x != 0.0),
        };
        match image
            .bits_mut(spec.kind)
            .and_then(|t| t.get_mut(spec.address, 1))
            .and_then(|c| c.first_mut())
        {
            Some(cell) => {
                *cell = on;
                true
            }
            None => false,
        }
    } else {
        let Some(cells) = image
            .words_mut(spec.kind)
            .and_then(|t| t.get_mut(spec.address, spec.count))
        else {
            return false;
        };
        match encode_words(spec, &point.transform, value, cells) {
            Some(words) if words.len() == cells.len() => {
                cells.copy_from_slice(&words);
                true
            }
            _ => false,
        }
    }
}

/// Decodes a point from the image, keeping `na` and out-of-range values.
fn current_value(image: &RegisterImage, point: &Point) -> Option<Value> {
    let spec = point.register.as_ref()?;
    if spec.kind.is_bit() {
        let bit = image.bits(spec.kind)?.get(spec.address, 1)?.first()?;
        return Some(Value::Bool(*bit));
    }
    let words = image.words(spec.kind)?.get(spec.address, spec.count)?;
    let raw = decode_words(spec, words)?;
    let transform = Transform {
        na: Vec::new(),
        min: None,
        max: None,
        ..point.transform.clone()
    };
    match apply(&transform, Some(spec.data_type), raw) {
        Decoded::Good(v) | Decoded::Unmapped(v) => Some(v),
        Decoded::Bad(_) => None,
    }
}
