//! The I/O side of the simulators: one Modbus TCP server per port, the tick that moves the
//! models, and the schedule of faults. Thin drivers around `device.rs`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Response, SlaveRequest};

use super::device::{Layout, SimDevice};
use super::site::{POWER_TICK, PowerSite, check_site_faults, schedule_site};
use super::{
    FaultChange, FaultKind, ProfileRef, Registers, ScheduledFault, SimDeviceInfo, SimError, SimSpec,
};
use crate::model::Value;
use crate::profile::{Profile, RegisterKind, builtin};

/// The devices behind one listening port or serial bus.
#[derive(Debug)]
pub(crate) struct PortState {
    /// The bound address; unspecified (0.0.0.0:0) for a serial bus.
    addr: SocketAddr,
    /// The serial bus's device path.
    pub(crate) bus: Option<String>,
    pub(crate) devices: Vec<Arc<SimDevice>>,
    /// Unit id to index in `devices`.
    by_unit: Box<[Option<u16>; 256]>,
}

impl PortState {
    pub(crate) fn device(&self, unit: u8) -> Option<&Arc<SimDevice>> {
        let i = self.by_unit[usize::from(unit)]?;
        self.devices.get(usize::from(i))
    }
}

/// The Modbus service of one port: routes each request to its unit.
#[derive(Debug, Clone)]
struct PortService(Arc<PortState>);

type Answer = Result<Option<Response>, ExceptionCode>;

/// A reply, ready now or after the `slow` fault's delay. (tokio-modbus wants one concrete
/// future type; this keeps the common path free of boxing.)
pub(crate) struct Reply {
    delay: Option<Pin<Box<Sleep>>>,
    answer: Option<Answer>,
}

impl Reply {
    fn now(answer: Answer) -> Self {
        Reply {
            delay: None,
            answer: Some(answer),
        }
    }
}

impl Future for Reply {
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let this = self.get_mut();
        if let Some(delay) = &mut this.delay {
            if delay.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.delay = None;
        }
        // Polled again after completion: answer nothing rather than panic.
        Poll::Ready(this.answer.take().unwrap_or(Ok(None)))
    }
}

impl Service for PortService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Reply;

    fn call(&self, req: Self::Request) -> Self::Future {
        // No device with this unit id: no reply, as from a gateway whose serial line has
        // nobody at that address (the client times out).
        let Some(device) = self.0.device(req.slave) else {
            return Reply::now(Ok(None));
        };
        device.requests.fetch_add(1, Ordering::Relaxed);
        let (answer, slow) = {
            let state = device.lock();
            if state.comm.mute() {
                return Reply::now(Ok(None));
            }
            let answer = match state.comm.exception {
                Some(code) => Err(code),
                None => state.answer(&req.request).map(Some),
            };
            (answer, state.comm.slow)
        };
        match slow {
            Some(delay) if !delay.is_zero() => Reply {
                delay: Some(Box::pin(tokio::time::sleep(delay))),
                answer: Some(answer),
            },
            _ => Reply::now(answer),
        }
    }
}

/// Accepts connections on one port until aborted.
async fn serve_port(listener: TcpListener, port: Arc<PortState>) {
    let addr = port.addr;
    let server = Server::new(listener);
    let on_connected = |stream: TcpStream, peer: SocketAddr| {
        let service = PortService(Arc::clone(&port));
        // Small request/response frames: do not let Nagle hold the replies back.
        let _ = stream.set_nodelay(true);
        async move { accept_tcp_connection(stream, peer, move |_| Ok(Some(service.clone()))) }
    };
    loop {
        // `serve` returns only when accepting fails (e.g. out of file descriptors); its open
        // connections end with it. Keep the port up.
        let result = server
            .serve(
                &on_connected,
                move |err| tracing::debug!(%addr, %err, "simulator connection ended"),
            )
            .await;
        if let Err(err) = result {
            tracing::warn!(%addr, %err, "simulator port: accept failed; retrying");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Moves every model by `dt`; with a power room, in steps of at most [`POWER_TICK`] with the
/// site coupled before and settled after each.
pub(crate) fn step_all(ports: &[Arc<PortState>], site: Option<&PowerSite>, dt: Duration) {
    let Some(site) = site else {
        for port in ports {
            for device in &port.devices {
                device.lock().step(&device.layout, dt);
            }
        }
        return;
    };
    let mut left = dt;
    while !left.is_zero() {
        let h = left.min(POWER_TICK);
        left -= h;
        site.couple();
        for port in ports {
            for device in &port.devices {
                device.lock().step(&device.layout, h);
            }
        }
        site.settle();
    }
}

/// Moves every model once per tick, by the wall time that really passed.
pub(crate) async fn tick(
    ports: Vec<Arc<PortState>>,
    site: Option<Arc<PowerSite>>,
    period: Duration,
) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval.tick().await;
    let mut last = Instant::now();
    loop {
        interval.tick().await;
        let now = Instant::now();
        // A stalled process does not make the equipment jump more than a minute.
        let dt = (now - last).min(Duration::from_secs(60));
        last = now;
        step_all(&ports, site.as_deref(), dt);
    }
}

/// A fault change due at a time after start.
pub(crate) struct Due {
    pub(crate) at: Duration,
    pub(crate) device: Arc<SimDevice>,
    pub(crate) change: FaultChange,
}

pub(crate) async fn schedule_faults(mut due: Vec<Due>, started: Instant) {
    due.sort_by_key(|d| d.at);
    for d in due {
        tokio::time::sleep_until(started + d.at).await;
        let name = &d.device.name;
        match d.device.lock().change_fault(&d.device.layout, &d.change) {
            Ok(()) => {
                tracing::info!(device = %name, unit = d.device.unit, change = ?d.change, "simulator fault")
            }
            Err(err) => tracing::warn!(device = %name, %err, "simulator fault not applied"),
        }
    }
}

/// A thread serving a serial bus (blocking I/O, for exact pacing at the baud rate).
#[derive(Debug)]
pub(crate) struct BusThread {
    pub(crate) stop: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

/// Running simulators. Dropping the handle stops them (the ports close shortly after).
#[derive(Debug)]
pub struct SimHandle {
    pub(crate) ports: Vec<Arc<PortState>>,
    /// The power room and what it supplies, when the simulator has power equipment.
    pub(crate) site: Option<Arc<PowerSite>>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
    pub(crate) threads: Vec<BusThread>,
}

/// The devices of one port or bus, checked (unit ids unique, profiles known), with their
/// scheduled faults appended to `due`.
pub(crate) fn build_port(
    addr: SocketAddr,
    bus: Option<String>,
    specs: &[super::SimDeviceSpec],
    layouts: &mut Vec<(String, Arc<Layout>)>,
    due: &mut Vec<Due>,
) -> Result<PortState, SimError> {
    let mut by_unit: Box<[Option<u16>; 256]> = Box::new([None; 256]);
    let mut devices = Vec::with_capacity(specs.len());
    for (i, d) in specs.iter().enumerate() {
        let slot = &mut by_unit[usize::from(d.unit)];
        if slot.is_some() {
            return Err(match &bus {
                Some(path) => SimError::DuplicateUnitOnBus {
                    path: path.clone(),
                    unit: d.unit,
                },
                None => SimError::DuplicateUnit { addr, unit: d.unit },
            });
        }
        // At most 256 devices reach here (one per unit id), so the index fits.
        *slot = u16::try_from(i).ok();
        let layout = match &d.profile {
            ProfileRef::Builtin(name) => match layouts.iter().find(|(n, _)| n == name) {
                Some((_, l)) => Arc::clone(l),
                None => {
                    let l = Arc::new(Layout::new(load_builtin(name)?));
                    layouts.push((name.clone(), Arc::clone(&l)));
                    l
                }
            },
            ProfileRef::Custom(profile) => Arc::new(Layout::new((**profile).clone())),
        };
        let name = d
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", layout.profile.name, d.unit));
        let device = Arc::new(SimDevice::new(d.unit, name, Arc::clone(&layout), d.seed));
        for f in &d.faults {
            if let FaultChange::Set(super::Fault::OutOfRange { point, value }) = &f.change {
                layout.check_value(point, value)?;
            }
            due.push(Due {
                at: f.at,
                device: Arc::clone(&device),
                change: f.change.clone(),
            });
        }
        devices.push(device);
    }
    Ok(PortState {
        addr,
        bus,
        devices,
        by_unit,
    })
}

/// A site (if any) and the background tasks that move it.
pub(crate) type SiteTasks = (Option<Arc<PowerSite>>, Vec<JoinHandle<()>>);

/// The site of `ports` with its faults checked, those due at start applied, and the tasks
/// that move the models and apply the later faults (devices' and site's) spawned.
pub(crate) fn start_site(
    ports: &[Arc<PortState>],
    due: Vec<Due>,
    site_faults: Vec<ScheduledFault>,
    tick_every: Duration,
    frozen: bool,
) -> Result<SiteTasks, SimError> {
    let site = PowerSite::new(ports, frozen);
    check_site_faults(site.as_deref(), &site_faults)?;
    let started = Instant::now();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    // Faults due at start apply before the first request can arrive.
    let (now, later): (Vec<Due>, Vec<Due>) = due.into_iter().partition(|d| d.at.is_zero());
    for d in now {
        d.device.lock().change_fault(&d.device.layout, &d.change)?;
    }
    let (site_now, site_later): (Vec<_>, Vec<_>) =
        site_faults.into_iter().partition(|f| f.at.is_zero());
    if let Some(site) = &site {
        for f in &site_now {
            site.change(&f.change)?;
        }
        if !site_later.is_empty() {
            tasks.push(tokio::spawn(schedule_site(
                Arc::clone(site),
                site_later,
                started,
            )));
        }
    }
    if !frozen {
        tasks.push(tokio::spawn(tick(ports.to_vec(), site.clone(), tick_every)));
    }
    if !later.is_empty() {
        tasks.push(tokio::spawn(schedule_faults(later, started)));
    }
    Ok((site, tasks))
}

/// Starts the simulators of `spec`: binds every port first (so an address in use fails the
/// whole start), then serves them in background tasks on the current tokio runtime.
pub async fn start(spec: SimSpec) -> Result<SimHandle, SimError> {
    if spec.tick.is_zero() {
        return Err(SimError::ZeroTick);
    }
    let mut layouts: Vec<(String, Arc<Layout>)> = Vec::new();
    let mut ports = Vec::with_capacity(spec.ports.len());
    let mut listeners = Vec::with_capacity(spec.ports.len());
    let mut due = Vec::new();
    for port_spec in &spec.ports {
        let listener = TcpListener::bind(port_spec.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: port_spec.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: port_spec.listen,
            source,
        })?;
        ports.push(Arc::new(build_port(
            addr,
            None,
            &port_spec.devices,
            &mut layouts,
            &mut due,
        )?));
        listeners.push(listener);
    }
    let (site, mut tasks) = start_site(&ports, due, spec.site, spec.tick, spec.frozen)?;
    for (listener, port) in listeners.into_iter().zip(&ports) {
        tasks.push(tokio::spawn(serve_port(listener, Arc::clone(port))));
    }
    Ok(SimHandle {
        ports,
        site,
        tasks,
        threads: Vec::new(),
    })
}

fn load_builtin(name: &str) -> Result<Profile, SimError> {
    let config = builtin::load(name)
        .ok_or_else(|| SimError::UnknownProfile {
            name: name.to_string(),
        })?
        .map_err(|e| SimError::InvalidProfile {
            name: name.to_string(),
            message: e.to_string(),
        })?;
    let (profile, _warnings) = config.build().map_err(|issues| SimError::InvalidProfile {
        name: name.to_string(),
        message: issues
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    Ok(profile)
}

impl SimHandle {
    /// The bound address of each port, in the order of `SimSpec::ports` (unspecified for
    /// serial buses).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.ports.iter().map(|p| p.addr).collect()
    }

    /// The device path of each serial bus (empty for TCP simulators).
    pub fn buses(&self) -> Vec<String> {
        self.ports.iter().filter_map(|p| p.bus.clone()).collect()
    }

    /// Every simulated device, port by port.
    pub fn devices(&self) -> Vec<SimDeviceInfo> {
        self.ports
            .iter()
            .enumerate()
            .flat_map(|(port, p)| {
                p.devices.iter().map(move |d| SimDeviceInfo {
                    port,
                    addr: p.addr,
                    unit: d.unit,
                    name: d.name.clone(),
                    profile: d.layout.profile.name.clone(),
                    device_type: d.layout.profile.device_type,
                })
            })
            .collect()
    }

    fn device(&self, port: usize, unit: u8) -> Result<&Arc<SimDevice>, SimError> {
        let p = self.ports.get(port).ok_or(SimError::NoSuchPort { port })?;
        p.device(unit)
            .ok_or(SimError::NoSuchUnit { addr: p.addr, unit })
    }

    /// The current engineering value of every register point, as served on the wire.
    pub fn point_values(&self, port: usize, unit: u8) -> Result<Vec<(String, Value)>, SimError> {
        let d = self.device(port, unit)?;
        Ok(d.lock().values(&d.layout))
    }

    /// The raw content of the image, through the same checks as a Modbus read (a hole is
    /// `SimError::Exception(IllegalDataAddress)`); faults do not apply.
    pub fn registers(
        &self,
        port: usize,
        unit: u8,
        kind: RegisterKind,
        address: u16,
        count: u16,
    ) -> Result<Registers, SimError> {
        let d = self.device(port, unit)?;
        d.lock()
            .registers(kind, address, count)
            .map_err(SimError::Exception)
    }

    /// Sets a point's value (see [`super`] for how it interacts with the model).
    pub fn set_point(
        &self,
        port: usize,
        unit: u8,
        point: &str,
        value: Value,
    ) -> Result<(), SimError> {
        let d = self.device(port, unit)?;
        d.lock().set_point(&d.layout, point, &value)
    }

    /// Starts a fault now; `None` clears every fault of the unit.
    pub fn set_fault(
        &self,
        port: usize,
        unit: u8,
        fault: Option<super::Fault>,
    ) -> Result<(), SimError> {
        let change = match fault {
            Some(f) => FaultChange::Set(f),
            None => FaultChange::ClearAll,
        };
        self.change_fault(port, unit, change)
    }

    /// Ends one kind of fault now.
    pub fn clear_fault(&self, port: usize, unit: u8, kind: FaultKind) -> Result<(), SimError> {
        self.change_fault(port, unit, FaultChange::Clear(kind))
    }

    pub fn change_fault(&self, port: usize, unit: u8, change: FaultChange) -> Result<(), SimError> {
        let d = self.device(port, unit)?;
        d.lock().change_fault(&d.layout, &change)
    }

    /// Requests received for the unit since start, whether answered, refused or ignored.
    pub fn requests_served(&self, port: usize, unit: u8) -> Result<u64, SimError> {
        Ok(self.device(port, unit)?.requests.load(Ordering::Relaxed))
    }

    /// Moves every model by `dt` now, frozen or not (for tests that want exact steps). With a
    /// power room, in steps of [`POWER_TICK`] so its sequence keeps time.
    pub fn advance(&self, dt: Duration) {
        step_all(&self.ports, self.site.as_deref(), dt);
    }

    /// Starts or ends a site-level fault now ([`super::Fault::MainsFailure`]; `ClearAll` or
    /// `Clear(MainsFailure)` restores the mains).
    pub fn change_site_fault(&self, change: FaultChange) -> Result<(), SimError> {
        self.site
            .as_ref()
            .ok_or(SimError::NoPowerRoom)?
            .change(&change)
    }

    /// Whether the site's supply reaches the devices other than the power room (`None`: no
    /// power room, always on). The MQTT devices of `simulate` watch it.
    pub fn site_supply(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        self.site.as_ref().map(|s| s.supply())
    }

    /// Stops the servers and waits until their ports are closed.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            // A cancelled task reports `JoinError::Cancelled`: that is the point.
            let _ = t.await;
        }
        let threads = std::mem::take(&mut self.threads);
        for t in &threads {
            t.stop.store(true, Ordering::Relaxed);
        }
        let _ = tokio::task::spawn_blocking(move || {
            for mut t in threads {
                if let Some(h) = t.thread.take() {
                    let _ = h.join();
                }
            }
        })
        .await;
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Bus threads notice within one read timeout and close their ports.
        for t in &self.threads {
            t.stop.store(true, Ordering::Relaxed);
        }
    }
}
