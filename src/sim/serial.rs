//! Simulators on serial lines: the devices of a bus served as Modbus RTU slaves on a serial
//! device or pseudo-terminal, several unit ids per bus, with the same faults as over TCP plus
//! the serial ones (`garbled`, `wrong_unit`).
//!
//! A pseudo-terminal moves bytes at once whatever baud rate is set, so a bus is modelled here:
//! with `pace`, a request is taken to have been on the wire for its length at the bus's baud
//! rate from the moment its first byte arrived, the slave answers a t3.5 after its end (plus a
//! `slow` delay), and the reply leaves byte by byte, each when its last bit would have. The
//! master on the other end then sees the timing of a real RS-485 bus. Each bus is served by a
//! thread of its own with blocking I/O, whose sleeps are exact to a few tens of microseconds
//! (tokio's timer works in whole milliseconds, which is a character at 9600 baud).
//!
//! A bus whose device disappears (the pty's other end closed, a USB adapter unplugged) is
//! reopened every 100 ms until it is back.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_modbus::{ExceptionCode, Request, Response};

use super::server::{BusThread, Due, PortState, SimHandle, build_port, start_site};
use super::{ScheduledFault, SimDeviceSpec, SimError};
use crate::modbus::link::SerialSettings;
use crate::modbus::poller::ReadData;
use crate::modbus::rtu::{
    RequestScan, data_reply, exception_reply, parse_read_request, scan_request,
};
use crate::modbus::serial::BusTiming;
use crate::profile::RegisterKind;

/// How long a blocking read waits before the thread looks at its stop flag.
const READ_POLL: Duration = Duration::from_millis(20);
const REOPEN_EVERY: Duration = Duration::from_millis(100);

/// One simulated serial bus.
#[derive(Debug, Clone)]
pub struct SimBusSpec {
    /// The device path (`line.path`: a pty such as /dev/pts/3, or a socat link) and the line
    /// settings; `frame_gap` and `turnaround` are the master's business and ignored here.
    pub line: SerialSettings,
    /// Pace replies at the baud rate (see the module docs); off, replies go out at once.
    pub pace: bool,
    pub devices: Vec<SimDeviceSpec>,
}

impl SimBusSpec {
    /// A paced bus at `baud`, 8N1, with `devices`.
    pub fn new(path: impl Into<String>, baud: u32, devices: Vec<SimDeviceSpec>) -> Self {
        SimBusSpec {
            line: SerialSettings {
                path: path.into(),
                baud,
                parity: 'N',
                data_bits: 8,
                stop_bits: 1,
                frame_gap: None,
                turnaround: Duration::ZERO,
            },
            pace: true,
            devices,
        }
    }
}

/// Starts simulators on serial buses: the devices are built and checked first (as [`super::start`]
/// does for ports), then each bus is served by its own thread. A bus device that cannot be
/// opened yet is retried, so the bus may appear later. The models move every `tick` unless
/// `frozen`. Ports of the handle are the buses, in order.
pub async fn start_serial(
    buses: Vec<SimBusSpec>,
    tick_every: Duration,
    frozen: bool,
) -> Result<SimHandle, SimError> {
    start_serial_site(buses, tick_every, frozen, Vec::new()).await
}

/// [`start_serial`] with site-level faults (a mains failure; see [`super::SimSpec::site`]).
pub(crate) async fn start_serial_site(
    buses: Vec<SimBusSpec>,
    tick_every: Duration,
    frozen: bool,
    site_faults: Vec<ScheduledFault>,
) -> Result<SimHandle, SimError> {
    if tick_every.is_zero() {
        return Err(SimError::ZeroTick);
    }
    let mut layouts = Vec::new();
    let mut due: Vec<Due> = Vec::new();
    let mut ports = Vec::with_capacity(buses.len());
    for bus in &buses {
        ports.push(Arc::new(build_port(
            SocketAddr::from(([0, 0, 0, 0], 0)),
            Some(bus.line.path.clone()),
            &bus.devices,
            &mut layouts,
            &mut due,
        )?));
    }
    let (site, tasks) = start_site(&ports, due, site_faults, tick_every, frozen)?;
    let mut threads = Vec::with_capacity(buses.len());
    for (bus, port) in buses.into_iter().zip(&ports) {
        let stop = Arc::new(AtomicBool::new(false));
        let port = Arc::clone(port);
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("sim-bus {}", bus.line.path))
            .spawn(move || serve_bus(&port, &bus, &flag))
            .map_err(|e| {
                for t in &tasks {
                    t.abort();
                }
                SimError::Fleet(format!("cannot start a bus thread: {e}"))
            })?;
        threads.push(BusThread {
            stop,
            thread: Some(thread),
        });
    }
    Ok(SimHandle {
        ports,
        site,
        tasks,
        threads,
    })
}

fn open(line: &SerialSettings) -> Result<Box<dyn tokio_serial::SerialPort>, tokio_serial::Error> {
    let parity = match line.parity {
        'E' => tokio_serial::Parity::Even,
        'O' => tokio_serial::Parity::Odd,
        _ => tokio_serial::Parity::None,
    };
    let data_bits = match line.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let stop_bits = if line.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    tokio_serial::new(&line.path, line.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .flow_control(tokio_serial::FlowControl::None)
        .timeout(READ_POLL)
        .open()
}

/// Serves one bus until `stop` is set, reopening its device whenever it goes away.
fn serve_bus(port: &PortState, bus: &SimBusSpec, stop: &AtomicBool) {
    let timing = BusTiming::new(&bus.line);
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        let mut line = match open(&bus.line) {
            Ok(l) => {
                tracing::debug!(bus = %bus.line.path, "simulator bus open");
                warned = false;
                l
            }
            Err(e) => {
                if !warned {
                    tracing::info!(bus = %bus.line.path, error = %e, "simulator bus cannot be opened; retrying");
                    warned = true;
                }
                std::thread::sleep(REOPEN_EVERY);
                continue;
            }
        };
        if let Err(e) = serve_line(port, bus, &timing, line.as_mut(), stop) {
            tracing::info!(bus = %bus.line.path, error = %e, "simulator bus lost; reopening");
        }
        drop(line);
        std::thread::sleep(REOPEN_EVERY);
    }
}

/// Reads requests and answers them until an I/O error or `stop`.
fn serve_line(
    port: &PortState,
    bus: &SimBusSpec,
    timing: &BusTiming,
    line: &mut dyn tokio_serial::SerialPort,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    // A frame whose length its header does not tell ends with the silence after it.
    let silence = (timing.t35 * 4).max(Duration::from_millis(20));
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut first_at = Instant::now();
    let mut last_at = Instant::now();
    let mut chunk = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        match line.read(&mut chunk) {
            Ok(0) => return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed")),
            Ok(n) => {
                let now = Instant::now();
                if buf.is_empty() {
                    first_at = now;
                }
                buf.extend_from_slice(&chunk[..n]);
                last_at = now;
            }
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                if !buf.is_empty() && last_at.elapsed() >= silence {
                    buf.clear();
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        loop {
            match scan_request(&buf) {
                RequestScan::Incomplete | RequestScan::Unknown => break,
                RequestScan::BadCrc { .. } => {
                    // A slave ignores a damaged frame; what follows is resynchronised on.
                    buf.clear();
                    break;
                }
                RequestScan::Frame { len } => {
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    answer(port, bus, timing, &frame, first_at, line)?;
                    // Anything after it arrived with it (a pty delivers at once).
                    first_at = Instant::now();
                }
            }
        }
    }
    Ok(())
}

/// Answers one request frame (if it is for a unit on this bus), paced.
fn answer(
    port: &PortState,
    bus: &SimBusSpec,
    timing: &BusTiming,
    frame: &[u8],
    arrived: Instant,
    line: &mut dyn tokio_serial::SerialPort,
) -> std::io::Result<()> {
    let unit = frame[0];
    // Another slave's request, or a broadcast: not ours to answer.
    let Some(device) = port.device(unit).filter(|_| unit != 0) else {
        return Ok(());
    };
    device.requests.fetch_add(1, Ordering::Relaxed);
    let fc = frame[1];
    let (reply, slow) = {
        let state = device.lock();
        if state.comm.mute() {
            return Ok(());
        }
        let read = parse_read_request(frame);
        let answer = match (state.comm.exception, read) {
            (Some(code), _) => Err(code),
            (None, Some((_, kind, start, count))) => state
                .answer(&request(kind, start, count))
                .map(|r| (kind, data_of(r))),
            (None, None) => Err(ExceptionCode::IllegalFunction),
        };
        let from = match state.comm.wrong_unit {
            Some(Some(other)) => other,
            Some(None) => unit.wrapping_add(1),
            None => unit,
        };
        let mut reply = match answer {
            Ok((kind, data)) => data_reply(from, kind, &data),
            Err(code) => exception_reply(from, fc, u8::from(code)),
        };
        if state.comm.garbled {
            // The last byte before the CRC: the length stays, the CRC fails.
            let i = reply.len() - 3;
            reply[i] ^= 0x5A;
        }
        (reply, state.comm.slow.unwrap_or_default())
    };
    let start = if bus.pace {
        arrived + timing.wire(frame.len()) + timing.t35
    } else {
        Instant::now()
    } + slow;
    sleep_until(start);
    if !bus.pace {
        line.write_all(&reply)?;
        return line.flush();
    }
    // Each byte leaves when its last bit would be on the wire.
    let mut sent = 0;
    while sent < reply.len() {
        let elapsed = Instant::now().saturating_duration_since(start);
        let done = usize::try_from(elapsed.as_nanos() / timing.char_time.as_nanos().max(1))
            .unwrap_or(usize::MAX)
            .min(reply.len());
        if done > sent {
            line.write_all(&reply[sent..done])?;
            sent = done;
        } else {
            sleep_until(start + timing.wire(sent + 1));
        }
    }
    line.flush()
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn request(kind: RegisterKind, start: u16, count: u16) -> Request<'static> {
    match kind {
        RegisterKind::Coil => Request::ReadCoils(start, count),
        RegisterKind::Discrete => Request::ReadDiscreteInputs(start, count),
        RegisterKind::Holding => Request::ReadHoldingRegisters(start, count),
        RegisterKind::Input => Request::ReadInputRegisters(start, count),
    }
}

fn data_of(r: Response) -> ReadData {
    match r {
        Response::ReadCoils(b) | Response::ReadDiscreteInputs(b) => ReadData::Bits(b),
        Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => ReadData::Words(w),
        // `answer` gives only read responses to read requests.
        _ => ReadData::Words(Vec::new()),
    }
}
