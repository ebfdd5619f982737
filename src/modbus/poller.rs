//! Link pollers: one task owns each physical link and serves every unit id behind it.
//!
//! Modbus TCP (`tcp://`) goes through tokio-modbus's client. It has no timeouts and, after a
//! timeout, stays out of step with the device (a late reply poisons every later call with a
//! header mismatch), so every call is wrapped in a timeout and any timeout or protocol error
//! drops the connection, which is reopened with backoff. Device exceptions are the device
//! answering: they never drop the connection.
//!
//! A device that does not answer two cycles in a row is backed off to its probe schedule: one
//! request every `probe_interval`, so it costs the other devices on its link at most one
//! `timeout` per probe period.
//!
//! An RTU link is one RS-485 bus, on a local serial port (`rtu://`) or behind a serial device
//! server's TCP socket (`rtu+tcp://`), served through our own RTU master (`bus.rs`), which
//! keeps the inter-frame silence, drains late replies and discards foreign and garbled frames.
//! A timeout there is one silent unit, not a broken link: the port or socket stays open, and
//! the silent unit's cycle ends at its first timeout so that it costs the bus one timeout, not
//! one per read. Only an I/O error (the adapter unplugged, the connection dropped) closes and
//! reopens it, with backoff.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::Context;
use tokio_modbus::prelude::{Reader, Slave, SlaveContext};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::bus::{self, SerialBus};
use super::codec::{Decoded, decode_bit_point, decode_register_point};
use super::link::Link;
use super::plan::{Boundary, PlanLimits, ReadRequest, plan, plan_only, split_point};
use super::schedule;
use super::stats::DeviceStats;
use crate::backoff::Backoff;
use crate::device::{Device, DeviceSource, ModbusSource};
use crate::events::{Event as _, LogLimiter};
use crate::model::{DeviceStatus, Quality, Reading, Record, Value, now_ns};
use crate::profile::RegisterKind;
pub use crate::sink::RecordSink;

mod events;
use events::{ReadFailed, ReadRefused};

/// Consecutive unanswered cycles before a device moves to the probe schedule.
const OFFLINE_AFTER: u32 = 2;
/// Reopening a link that cannot be opened: doubling from 200 ms to 30 s, with jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why one read failed.
#[derive(Debug)]
pub enum ReadError {
    /// The device answered with an exception: the connection is fine.
    Exception(ExceptionCode),
    /// No answer in time: the connection is suspect.
    Timeout,
    /// Transport or protocol error: the connection is suspect.
    Transport(String),
    /// An answer of the wrong length.
    Malformed(String),
    /// RTU: a frame with a bad CRC (or cut short), discarded.
    Garbled(String),
    /// RTU: a well-formed frame from this other unit id, discarded.
    WrongUnit(u8),
}

/// Data returned by one read.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadData {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// An open link: a tokio-modbus client (Modbus TCP) or our RTU master on a serial bus (a
/// local port, or a device server's socket).
pub enum Connection {
    Modbus(Context),
    Rtu {
        bus: Box<SerialBus>,
        /// The unit the next reads go to.
        unit: u8,
        /// Bus time of the last read.
        last_bus_time: Duration,
    },
}

impl Connection {
    /// Addresses the following reads to `unit`.
    pub fn set_unit(&mut self, unit: u8) {
        match self {
            Connection::Modbus(ctx) => ctx.set_slave(Slave(unit)),
            Connection::Rtu { unit: u, .. } => *u = unit,
        }
    }

    /// True for our RTU master (`rtu://`, `rtu+tcp://`): it stays in step after a timeout or
    /// a discarded frame, so only a transport error is the link's fault.
    pub fn is_rtu(&self) -> bool {
        matches!(self, Connection::Rtu { .. })
    }

    /// RTU: bytes drained from the bus outside an exchange since the link was opened.
    pub fn stray_bytes(&self) -> u64 {
        match self {
            Connection::Rtu { bus, .. } => bus.stray_bytes,
            Connection::Modbus(_) => 0,
        }
    }

    /// Bus time the last read took on an RTU bus (zero on Modbus TCP).
    pub fn last_bus_time(&self) -> Duration {
        match self {
            Connection::Rtu { last_bus_time, .. } => *last_bus_time,
            Connection::Modbus(_) => Duration::ZERO,
        }
    }

    /// Closes the link (briefly waiting for a TCP close).
    pub async fn close(self) {
        if let Connection::Modbus(mut ctx) = self {
            let _ = timeout(
                Duration::from_millis(200),
                tokio_modbus::client::Client::disconnect(&mut ctx),
            )
            .await;
        }
    }
}

/// Why a link cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Serial(#[from] bus::OpenError),
    #[error("connect to {link} timed out after {}", humantime::format_duration(*after))]
    Timeout { link: Link, after: Duration },
    #[error("connect to {link}: {error}")]
    Tcp { link: Link, error: std::io::Error },
}

/// Opens a connection to a link, addressed to `unit`.
pub async fn connect(
    link: &Link,
    unit: u8,
    connect_timeout: Duration,
) -> Result<Connection, ConnectError> {
    let rtu = |bus: SerialBus| Connection::Rtu {
        bus: Box::new(bus),
        unit,
        last_bus_time: Duration::ZERO,
    };
    match link {
        Link::Rtu(s) => Ok(rtu(bus::open(s)?)),
        Link::RtuOverTcp { host, port } => {
            let stream = connect_tcp(link, host, *port, connect_timeout).await?;
            Ok(rtu(bus::behind_socket(stream)))
        }
        Link::Tcp { host, port } => {
            let stream = connect_tcp(link, host, *port, connect_timeout).await?;
            Ok(Connection::Modbus(tokio_modbus::client::tcp::attach_slave(
                stream,
                Slave(unit),
            )))
        }
    }
}

async fn connect_tcp(
    link: &Link,
    host: &str,
    port: u16,
    connect_timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let stream = timeout(connect_timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| ConnectError::Timeout {
            link: link.clone(),
            after: connect_timeout,
        })?
        .map_err(|error| ConnectError::Tcp {
            link: link.clone(),
            error,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Performs one read with a timeout, checking the answer's length. On an RTU bus `limit` is
/// what the device may take beyond the time the frames need on the wire (behind a device
/// server, whose line speed is not known, the whole exchange).
pub async fn read(
    conn: &mut Connection,
    req: &ReadRequest,
    limit: Duration,
) -> Result<ReadData, ReadError> {
    match conn {
        Connection::Modbus(ctx) => read_modbus(ctx, req, limit).await,
        Connection::Rtu {
            bus,
            unit,
            last_bus_time,
        } => {
            let exchange = bus.read(*unit, req, limit).await;
            *last_bus_time = exchange.bus_time;
            exchange.result
        }
    }
}

async fn read_modbus(
    ctx: &mut Context,
    req: &ReadRequest,
    limit: Duration,
) -> Result<ReadData, ReadError> {
    let (start, count) = (req.start, req.count);
    macro_rules! call {
        ($fut:expr) => {
            match timeout(limit, $fut).await {
                Err(_) => Err(ReadError::Timeout),
                Ok(Err(e)) => Err(ReadError::Transport(e.to_string())),
                Ok(Ok(Err(code))) => Err(ReadError::Exception(code)),
                Ok(Ok(Ok(data))) => Ok(data),
            }
        };
    }
    match req.kind {
        RegisterKind::Holding | RegisterKind::Input => {
            let words = if req.kind == RegisterKind::Holding {
                call!(ctx.read_holding_registers(start, count))?
            } else {
                call!(ctx.read_input_registers(start, count))?
            };
            if words.len() != usize::from(count) {
                return Err(ReadError::Malformed(format!(
                    "asked for {count} registers at {start}, got {}",
                    words.len()
                )));
            }
            Ok(ReadData::Words(words))
        }
        RegisterKind::Coil | RegisterKind::Discrete => {
            let mut bits = if req.kind == RegisterKind::Coil {
                call!(ctx.read_coils(start, count))?
            } else {
                call!(ctx.read_discrete_inputs(start, count))?
            };
            // Bits come padded to whole bytes; fewer than asked is malformed.
            if bits.len() < usize::from(count) {
                return Err(ReadError::Malformed(format!(
                    "asked for {count} bits at {start}, got {}",
                    bits.len()
                )));
            }
            bits.truncate(usize::from(count));
            Ok(ReadData::Bits(bits))
        }
    }
}

/// Decodes the points a read serves, appending good values and counting bad ones.
pub fn decode_points(
    device: &Device,
    req: &ReadRequest,
    data: &ReadData,
    stats: &DeviceStats,
    out: &mut Vec<(usize, Value)>,
) -> u64 {
    let mut bad = 0;
    for &i in &req.points {
        let Some(point) = device.profile.points.get(i) else {
            continue;
        };
        let decoded = match data {
            ReadData::Words(w) => decode_register_point(point, req.start, w),
            ReadData::Bits(b) => decode_bit_point(point, req.start, b),
        };
        match decoded {
            Decoded::Good(v) => out.push((i, v)),
            Decoded::Unmapped(v) => {
                DeviceStats::add(&stats.unmapped, 1);
                out.push((i, v));
            }
            Decoded::Bad(Quality::NotAvailable | Quality::OutOfRange) => {
                DeviceStats::add(&stats.bad_values, 1);
                bad += 1;
            }
            Decoded::Bad(_) => {
                DeviceStats::add(&stats.malformed, 1);
                bad += 1;
            }
        }
    }
    bad
}

/// One device as its link's poller sees it.
pub struct PolledDevice {
    /// Index of the device in the configuration (the `device` of the records it produces).
    pub index: usize,
    pub device: Arc<Device>,
    pub source: ModbusSource,
    pub stats: Arc<DeviceStats>,
    plan: Vec<ReadRequest>,
    boundaries: BTreeSet<Boundary>,
    next_due: Instant,
    unanswered: u32,
    next_probe: Option<Instant>,
    /// When its last poll started (for the achieved cycle time).
    last_started: Option<Instant>,
    log: LogLimiter,
}

impl PolledDevice {
    /// `None` for a device that is not read over Modbus.
    pub fn new(index: usize, device: Arc<Device>, stats: Arc<DeviceStats>) -> Option<Self> {
        let DeviceSource::Modbus(source) = &device.source else {
            return None;
        };
        let source = source.clone();
        let plan = plan(&device.profile.points, limits(&source), &BTreeSet::new());
        stats.online.store(true, Relaxed);
        Some(PolledDevice {
            index,
            device,
            source,
            stats,
            plan,
            boundaries: BTreeSet::new(),
            next_due: Instant::now(),
            unanswered: 0,
            next_probe: None,
            last_started: None,
            log: LogLimiter::new(Duration::from_secs(30)),
        })
    }

    /// The current request plan (it changes when a refused read is split).
    pub fn plan(&self) -> &[ReadRequest] {
        &self.plan
    }

    fn offline(&self) -> bool {
        self.next_probe.is_some()
    }
}

fn limits(s: &ModbusSource) -> PlanLimits {
    PlanLimits::of(s)
}

/// A change to a running link poller's devices (a configuration reload), applied between two
/// polls: the other devices on the link keep their schedule, state and connection.
pub struct LinkChange {
    /// Devices to stop polling, by index (`PolledDevice::index`).
    pub remove: Vec<usize>,
    /// Devices to start polling.
    pub add: Vec<PolledDevice>,
}

/// The task that owns one link.
pub struct LinkPoller {
    link: Link,
    devices: Vec<PolledDevice>,
    sink: RecordSink,
    /// Where reloads send [`LinkChange`]s (none: the device set is fixed).
    control: Option<mpsc::UnboundedReceiver<LinkChange>>,
    ctx: Option<Connection>,
    backoff: Backoff,
    down_until: Option<Instant>,
    connect_log: LogLimiter,
    /// RTU: stray bytes already reported, and their log limiter.
    stray_seen: u64,
    stray_log: LogLimiter,
}

enum CycleEnd {
    /// The device answered (data or exceptions).
    Answered,
    /// No answer: timeout, transport or protocol error.
    Silent,
    /// The link could not be opened.
    LinkDown,
}

impl LinkPoller {
    pub fn new(link: Link, devices: Vec<PolledDevice>, sink: RecordSink) -> Self {
        let mut devices = devices;
        // Spread the first polls over each interval so devices on a link do not all fall due at once.
        let n = devices.len().max(1) as u32;
        let now = Instant::now();
        for (i, d) in devices.iter_mut().enumerate() {
            d.next_due = now + d.device.interval / n * i as u32;
        }
        LinkPoller {
            link,
            devices,
            sink,
            control: None,
            ctx: None,
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            down_until: None,
            connect_log: LogLimiter::new(Duration::from_secs(30)),
            stray_seen: 0,
            stray_log: LogLimiter::new(Duration::from_secs(60)),
        }
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Takes device changes from `control` while it runs (see [`LinkChange`]).
    pub fn with_control(mut self, control: mpsc::UnboundedReceiver<LinkChange>) -> Self {
        self.control = Some(control);
        self
    }

    /// Polls until `cancel` fires (or, without a control channel, when it has no device).
    pub async fn run(mut self, cancel: CancellationToken) {
        if self.devices.is_empty() && self.control.is_none() {
            return;
        }
        info!(link = %self.link, devices = self.devices.len(), "polling link");
        loop {
            let next = (0..self.devices.len()).min_by_key(|&i| self.devices[i].next_due);
            if next.is_none() && self.control.is_none() {
                break;
            }
            // Woken on the shared grid (see `schedule`), so that devices falling due together
            // cost the process one wake-up.
            let due = next.map(|i| {
                let d = &self.devices[i];
                schedule::wake_at(d.next_due, d.device.interval)
            });
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                change = next_change(&mut self.control) => {
                    self.apply(change);
                    continue;
                }
                _ = sleep_until_some(due) => {}
            }
            let Some(i) = next else { continue };
            // A cycle in progress is abandoned on shutdown; its connection is closed below.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = self.tick(i) => {}
            }
        }
        if let Some(conn) = self.ctx.take() {
            conn.close().await;
        }
        debug!(link = %self.link, "link poller stopped");
    }

    /// Applies a reload's change between two polls.
    fn apply(&mut self, change: LinkChange) {
        let before = self.devices.len();
        self.devices.retain(|d| !change.remove.contains(&d.index));
        let removed = before - self.devices.len();
        let added = change.add.len();
        // Spread the new devices' first polls over their interval, like at start-up.
        let n = added.max(1) as u32;
        let now = Instant::now();
        for (k, mut d) in change.add.into_iter().enumerate() {
            d.next_due = now + d.device.interval / n * k as u32;
            self.devices.push(d);
        }
        info!(link = %self.link, added, removed, devices = self.devices.len(), "link devices changed by a configuration reload");
    }

    async fn tick(&mut self, i: usize) {
        let now = Instant::now();
        let (probe_due, interval) = {
            let d = &self.devices[i];
            (d.next_probe.is_none_or(|p| p <= now), d.device.interval)
        };
        let ts = now_ns();
        let mut status = DeviceStatus {
            device: self.devices[i].index,
            timestamp_ns: ts,
            online: false,
            poll_ms: 0.0,
            errors: 0,
        };
        if probe_due {
            let started = Instant::now();
            {
                let d = &mut self.devices[i];
                if let Some(prev) = d.last_started.replace(started) {
                    d.stats
                        .last_cycle_us
                        .store((started - prev).as_micros() as u64, Relaxed);
                }
            }
            let (end, reading, errors) = self.poll_device(i).await;
            status.poll_ms = started.elapsed().as_secs_f64() * 1000.0;
            status.errors = errors;
            if let Some(r) = reading {
                status.timestamp_ns = r.timestamp_ns;
                self.sink.offer(Record::Reading(r));
            }
            let d = &mut self.devices[i];
            DeviceStats::add(&d.stats.polls, 1);
            d.stats.observe_poll(started.elapsed());
            match end {
                CycleEnd::Answered => {
                    if d.offline() {
                        info!(device = %d.device.id, "device answers again");
                    }
                    d.unanswered = 0;
                    d.next_probe = None;
                    status.online = true;
                }
                CycleEnd::Silent => {
                    d.unanswered += 1;
                    if d.unanswered >= OFFLINE_AFTER {
                        if !d.offline() {
                            warn!(device = %d.device.id, link = %self.link, unit = d.source.unit, probe = %humantime::format_duration(d.source.probe_interval), "device stopped answering; probing it on a slow schedule");
                        }
                        d.next_probe = Some(Instant::now() + d.source.probe_interval);
                    }
                }
                // A link that cannot be opened says nothing about the device: keep its schedule.
                CycleEnd::LinkDown => {}
            }
            d.stats.online.store(status.online, Relaxed);
        }
        self.sink.offer(Record::Status(status));
        let d = &mut self.devices[i];
        d.next_due += interval;
        let now = Instant::now();
        if d.next_due <= now {
            // The link was busy past this device's next tick: skip missed ticks, keep the phase.
            let behind = now - d.next_due;
            let skip = (behind.as_nanos() / interval.as_nanos().max(1)) as u32 + 1;
            DeviceStats::add(&d.stats.overruns, u64::from(skip));
            d.next_due += interval * skip;
        }
    }

    async fn ensure_connected(&mut self, unit: u8, connect_timeout: Duration) -> bool {
        if self.ctx.is_some() {
            return true;
        }
        if self.down_until.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        match connect(&self.link, unit, connect_timeout).await {
            Ok(ctx) => {
                if self.down_until.is_some() {
                    info!(link = %self.link, "link connected");
                }
                self.ctx = Some(ctx);
                self.backoff.reset();
                self.down_until = None;
                true
            }
            Err(e) => {
                let wait = self.backoff.next_wait();
                self.down_until = Some(Instant::now() + wait);
                if let Some(held) = self.connect_log.allow() {
                    warn!(link = %self.link, error = %e, retry_in = %humantime::format_duration(Duration::from_millis(wait.as_millis() as u64)), suppressed = held, "cannot open link");
                }
                false
            }
        }
    }

    /// One poll cycle of device `i`: its whole plan, or only the first read while it is on
    /// the probe schedule. Returns how it ended, the reading and the errors of the cycle.
    async fn poll_device(&mut self, i: usize) -> (CycleEnd, Option<Reading>, u64) {
        let (unit, limit) = {
            let d = &self.devices[i];
            (d.source.unit, d.source.timeout)
        };
        if !self
            .ensure_connected(unit, limit.max(Duration::from_secs(1)))
            .await
        {
            return (CycleEnd::LinkDown, None, 1);
        }
        let Some(ctx) = self.ctx.as_mut() else {
            return (CycleEnd::LinkDown, None, 1);
        };
        ctx.set_unit(unit);
        let rtu = ctx.is_rtu();
        let d = &mut self.devices[i];
        let probing = d.offline();
        let mut queue: VecDeque<ReadRequest> = d.plan.iter().cloned().collect();
        let mut values = Vec::with_capacity(d.device.profile.points.len());
        let mut timestamp = None;
        let mut errors = 0u64;
        let mut answered = false;
        let mut drop_link = false;
        while let Some(req) = queue.pop_front() {
            DeviceStats::add(&d.stats.requests, 1);
            let result = read(ctx, &req, limit).await;
            DeviceStats::add(&d.stats.bus_us, ctx.last_bus_time().as_micros() as u64);
            match result {
                Ok(data) => {
                    answered = true;
                    timestamp.get_or_insert_with(now_ns);
                    errors += decode_points(&d.device, &req, &data, &d.stats, &mut values);
                }
                Err(ReadError::Exception(code)) => {
                    errors += 1;
                    // A gateway reporting that the device behind it did not answer is silence, not an answer.
                    if matches!(
                        code,
                        ExceptionCode::GatewayTargetDevice | ExceptionCode::GatewayPathUnavailable
                    ) {
                        DeviceStats::add(&d.stats.exceptions, 1);
                        break;
                    }
                    answered = true;
                    // Only "no such address" says the map has a hole; a device failure or busy
                    // answer says nothing about the plan and must not fragment it.
                    let hole = matches!(
                        code,
                        ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalDataValue
                    );
                    if let Some(cut) = split_point(&req, &d.device.profile.points).filter(|_| hole)
                    {
                        DeviceStats::add(&d.stats.exceptions, 1);
                        d.boundaries.insert(cut);
                        d.plan = plan(&d.device.profile.points, limits(&d.source), &d.boundaries);
                        DeviceStats::add(&d.stats.splits, 1);
                        info!(device = %d.device.id, table = req.kind.as_str(), start = req.start, count = req.count, exception = ?code, split_at = cut.1, "merged read refused; split and remembered");
                        let sub = plan_only(
                            &d.device.profile.points,
                            Some(&req.points),
                            limits(&d.source),
                            &d.boundaries,
                        );
                        for r in sub.into_iter().rev() {
                            queue.push_front(r);
                        }
                    } else {
                        ReadRefused {
                            device: &d.device,
                            stats: &d.stats,
                            req: &req,
                            code,
                        }
                        .emit(&mut d.log);
                    }
                }
                Err(e) => {
                    errors += 1;
                    // On an RTU bus only an I/O error is the link's fault; a timeout is a
                    // silent unit and a discarded frame costs just this read.
                    let link_fault = !rtu || matches!(e, ReadError::Transport(_));
                    ReadFailed {
                        device: &d.device,
                        stats: &d.stats,
                        link: &self.link,
                        unit,
                        error: &e,
                        link_fault,
                    }
                    .emit(&mut d.log);
                    if link_fault {
                        drop_link = true;
                        break;
                    }
                    if matches!(e, ReadError::Timeout) {
                        // A silent unit: its other reads would only time out as well.
                        break;
                    }
                }
            }
            if probing && answered {
                // The probe was answered: read the rest of the plan in this cycle.
                continue;
            }
            if probing {
                break;
            }
        }
        let stray = ctx.stray_bytes();
        if stray > self.stray_seen {
            // Late answers after a timeout are expected now and then; a steady stream means
            // another master on the bus or a device answering too late.
            if let Some(held) = self.stray_log.allow() {
                warn!(link = %self.link, bytes = stray - self.stray_seen, suppressed = held, "bytes on the bus outside an exchange (late answers, noise, or another master on the bus); dropped");
            }
            self.stray_seen = stray;
        }
        if drop_link {
            // tokio-modbus keeps a context that saw a timeout out of step: never reuse it.
            self.ctx = None;
            self.stray_seen = 0;
        }
        let reading = match timestamp {
            Some(ts) if !values.is_empty() => {
                d.stats.last_good_ns.store(ts, Relaxed);
                Some(Reading {
                    device: d.index,
                    timestamp_ns: ts,
                    values,
                })
            }
            _ => None,
        };
        let end = if answered {
            CycleEnd::Answered
        } else {
            CycleEnd::Silent
        };
        (end, reading, errors)
    }
}

/// The next change from a control channel; pending forever without one (or once it closed).
async fn next_change(control: &mut Option<mpsc::UnboundedReceiver<LinkChange>>) -> LinkChange {
    loop {
        match control {
            Some(rx) => match rx.recv().await {
                Some(c) => return c,
                None => *control = None,
            },
            None => std::future::pending::<()>().await,
        }
    }
}

/// Sleeps until `due`; pending forever without one.
async fn sleep_until_some(due: Option<Instant>) {
    match due {
        Some(d) => sleep_until(d).await,
        None => std::future::pending::<()>().await,
    }
}

/// Groups the Modbus devices of a configuration by link.
pub fn group_by_link(devices: Vec<PolledDevice>) -> Vec<(Link, Vec<PolledDevice>)> {
    let mut out: Vec<(Link, Vec<PolledDevice>)> = Vec::new();
    for d in devices {
        match out.iter_mut().find(|(l, _)| l.same_port(&d.source.link)) {
            Some((_, v)) => v.push(d),
            None => out.push((d.source.link.clone(), vec![d])),
        }
    }
    out
}
