//! Serial bus timing: what one read costs on an RS-485 line, the inter-frame silence and the
//! turnaround, and how busy a bus's poll schedule keeps it. Pure arithmetic, shared by the
//! serial master (`bus.rs`), `check`, the simulators and the bus benchmark.
//!
//! A character on the wire is a start bit, the data bits, the parity bit (if any) and the stop
//! bits: 10 bits for 8N1, 11 for 8E1 or 8N2. Modbus RTU ends a frame with at least 3.5
//! characters of silence (t3.5); above 19200 baud that silence is fixed at 1.75 ms instead of
//! shrinking with the character time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::link::{Link, SerialSettings};
use super::plan::{PlanLimits, ReadRequest, plan};
use super::rtu::{READ_REQUEST_LEN, reply_len};
use crate::device::{Device, DeviceSource};

/// The silence between frames above 19200 baud, where Modbus RTU fixes t3.5 at 1.75 ms rather
/// than 3.5 characters.
pub const FAST_T35: Duration = Duration::from_micros(1750);

/// The silence kept before every request on a bus behind a serial device server
/// (`rtu+tcp://`). The server keeps the silences on its own line; this one drains what is
/// still arriving from the previous exchange (a reply that came after its timeout, or the rest
/// of a discarded frame) so that it is never taken for the next answer. It covers the server's
/// t3.5 at 9600 baud (3.6 ms), after which it forwards a frame, and a LAN's jitter.
pub const SOCKET_FRAME_GAP: Duration = Duration::from_millis(5);

/// Above this share of its time a bus is reported as overloaded by `check`.
pub const BUSY_WARN: f64 = 0.80;

/// The timing of one serial bus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BusTiming {
    pub baud: u32,
    /// Bits per character: start, data, parity, stop.
    pub bits_per_char: u32,
    /// One character on the wire.
    pub char_time: Duration,
    /// 3.5 characters (1.75 ms above 19200 baud): the silence that ends a frame.
    pub t35: Duration,
    /// The silence kept before every request (`frame_gap`, default t3.5).
    pub frame_gap: Duration,
    /// The extra pause after each answer or timeout before the next request (`turnaround`).
    pub turnaround: Duration,
}

impl BusTiming {
    pub fn new(s: &SerialSettings) -> Self {
        let parity = u32::from(s.parity != 'N');
        let bits_per_char = 1 + u32::from(s.data_bits) + parity + u32::from(s.stop_bits);
        let baud = s.baud.max(1);
        let char_time =
            Duration::from_nanos(u64::from(bits_per_char) * 1_000_000_000 / u64::from(baud));
        let t35 = if baud > 19_200 {
            FAST_T35
        } else {
            char_time * 7 / 2
        };
        BusTiming {
            baud,
            bits_per_char,
            char_time,
            t35,
            frame_gap: s.frame_gap.unwrap_or(t35),
            turnaround: s.turnaround,
        }
    }

    /// The timing of a bus behind a serial device server (`rtu+tcp://`). Its line settings
    /// are the server's, not known here, so frames count no wire time: as on Modbus TCP, the
    /// device's `timeout` covers the whole exchange. `baud` is 0 (unknown).
    pub const fn socket() -> Self {
        BusTiming {
            baud: 0,
            bits_per_char: 10,
            char_time: Duration::ZERO,
            t35: Duration::ZERO,
            frame_gap: SOCKET_FRAME_GAP,
            turnaround: Duration::ZERO,
        }
    }

    /// Time `bytes` take on the wire.
    pub fn wire(&self, bytes: usize) -> Duration {
        self.char_time * u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// Characters the bus carries per second.
    pub fn bytes_per_second(&self) -> f64 {
        f64::from(self.baud) / f64::from(self.bits_per_char)
    }

    /// Bytes one read puts on the wire: the request and the normal reply.
    pub fn read_bytes(req: &ReadRequest) -> usize {
        READ_REQUEST_LEN + reply_len(req.kind, req.count)
    }

    /// Bus time of one read as this bus runs it: the request, the t3.5 after which the slave
    /// may answer, the reply, then the frame gap and the turnaround before the next request.
    /// The slave's own response time comes on top and is not known here.
    pub fn read_time(&self, req: &ReadRequest) -> Duration {
        self.wire(Self::read_bytes(req)) + self.t35 + self.frame_gap + self.turnaround
    }

    /// The protocol's minimum for one read: the frames on the wire and a t3.5 after each.
    pub fn min_read_time(&self, req: &ReadRequest) -> Duration {
        self.wire(Self::read_bytes(req)) + self.t35 * 2
    }
}

/// The estimated load of one serial bus under its poll schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct BusLoad {
    pub link: Link,
    pub timing: BusTiming,
    /// The devices on the bus (ids), in configuration order.
    pub devices: Vec<Arc<str>>,
    /// Index in the configuration of the first device on the bus.
    pub first_device: usize,
    /// Reads per second the schedule asks for.
    pub requests_per_s: f64,
    /// Bytes per second the schedule puts on the wire.
    pub bytes_per_s: f64,
    /// Share of the bus time the schedule takes, silences and turnarounds included (1.0 =
    /// saturated; above it the schedule cannot be kept).
    pub busy: f64,
    /// The time one poll of every device on the bus takes back to back.
    pub round: Duration,
}

impl BusLoad {
    /// Bytes per second the baud rate carries.
    pub fn capacity(&self) -> f64 {
        self.timing.bytes_per_second()
    }
}

/// The load of every `rtu://` bus in a configuration, in the order the buses first appear.
pub fn bus_loads(devices: &[Arc<Device>]) -> Vec<BusLoad> {
    let mut by_path: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out: Vec<BusLoad> = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let DeviceSource::Modbus(m) = &d.source else {
            continue;
        };
        let Link::Rtu(serial) = &m.link else {
            continue;
        };
        let reqs = plan(&d.profile.points, PlanLimits::of(m), &Default::default());
        let slot = *by_path.entry(serial.path.as_str()).or_insert_with(|| {
            out.push(BusLoad {
                link: m.link.clone(),
                timing: BusTiming::new(serial),
                devices: Vec::new(),
                first_device: i,
                requests_per_s: 0.0,
                bytes_per_s: 0.0,
                busy: 0.0,
                round: Duration::ZERO,
            });
            out.len() - 1
        });
        let load = &mut out[slot];
        let per_s = 1.0 / d.interval.as_secs_f64().max(1e-3);
        let bytes: usize = reqs.iter().map(BusTiming::read_bytes).sum();
        let time: Duration = reqs.iter().map(|r| load.timing.read_time(r)).sum();
        load.devices.push(d.id.clone());
        load.requests_per_s += reqs.len() as f64 * per_s;
        load.bytes_per_s += bytes as f64 * per_s;
        load.busy += time.as_secs_f64() * per_s;
        load.round += time;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::RegisterKind;

    fn serial(baud: u32, parity: char) -> SerialSettings {
        SerialSettings {
            path: "/dev/ttyUSB0".into(),
            baud,
            parity,
            data_bits: 8,
            stop_bits: 1,
            frame_gap: None,
            turnaround: Duration::ZERO,
        }
    }

    #[test]
    fn character_times_and_silences() {
        let t = BusTiming::new(&serial(9600, 'N'));
        assert_eq!(t.bits_per_char, 10);
        assert_eq!(t.char_time, Duration::from_nanos(1_041_666));
        assert_eq!(t.t35, Duration::from_nanos(3_645_831));
        assert_eq!(t.frame_gap, t.t35);
        let t = BusTiming::new(&serial(19200, 'E'));
        assert_eq!(t.bits_per_char, 11);
        assert_eq!(t.t35, Duration::from_nanos(572_916 * 7 / 2));
        let t = BusTiming::new(&serial(115_200, 'N'));
        assert_eq!(t.t35, FAST_T35);
        let mut s = serial(9600, 'N');
        s.frame_gap = Some(Duration::from_millis(10));
        s.turnaround = Duration::from_millis(5);
        let t = BusTiming::new(&s);
        assert_eq!(
            (t.frame_gap, t.turnaround),
            (Duration::from_millis(10), Duration::from_millis(5))
        );
    }

    #[test]
    fn a_bus_behind_a_device_server_counts_no_wire_time() {
        let t = BusTiming::socket();
        assert_eq!(t.wire(crate::modbus::rtu::MAX_FRAME), Duration::ZERO);
        assert_eq!(
            (t.t35, t.frame_gap, t.turnaround),
            (Duration::ZERO, SOCKET_FRAME_GAP, Duration::ZERO)
        );
    }

    #[test]
    fn a_full_read_at_9600_takes_about_270_ms() {
        // 125 registers at 9600 baud (8N1): the request (8 bytes) and the reply (255) are 263
        // characters of 1.04 ms, about 274 ms on the wire, and 281 ms with a t3.5 after each.
        let t = BusTiming::new(&serial(9600, 'N'));
        let req = ReadRequest {
            kind: RegisterKind::Holding,
            start: 0,
            count: 125,
            points: vec![],
        };
        assert_eq!(BusTiming::read_bytes(&req), 8 + 255);
        let wire_ms = t.wire(263).as_secs_f64() * 1000.0;
        assert!((273.0..275.0).contains(&wire_ms), "{wire_ms}");
        let ms = t.min_read_time(&req).as_secs_f64() * 1000.0;
        assert!((280.0..282.0).contains(&ms), "{ms}");
        assert!(t.read_time(&req) >= t.min_read_time(&req));
    }
}
