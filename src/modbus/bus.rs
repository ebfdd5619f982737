//! The RTU master: one per RS-485 bus, owned by the bus's link poller, which serves every unit
//! id on the bus in turn through it. The bus is on a local serial port (`rtu://`) or behind a
//! serial device server (`rtu+tcp://`): a converter that puts what it receives on a TCP socket
//! onto its RS-485 line and sends back what comes from the line. Either way it is one shared
//! line with no transaction ids, so the master treats both alike: one request at a time, and
//! a reply is only accepted as the answer to the request just sent.
//!
//! Our own rather than tokio-modbus's RTU client, because on a multi-drop bus that client
//! keeps no silence between frames (a slave that has not seen the end of the previous frame
//! can miss its request), takes whatever frame comes next as the answer (a late reply from a
//! unit that timed out, or another unit's, becomes a header mismatch that poisons the
//! connection, or is taken as the answer to the next request when it has the same shape) and
//! drops a garbled frame without a word. Here:
//! - before every request the line must have been quiet for the frame gap (t3.5 by default),
//!   plus the turnaround after an answer or a timeout; bytes arriving meanwhile (late or stray
//!   frames) are drained and restart the gap, so they never end up in the next answer;
//! - the answer must come within the time the request and the reply need on the wire at the
//!   bus's baud rate plus the device's `timeout`;
//! - a frame with a bad CRC, or from another unit id, is discarded and reported as such; the
//!   bus is not reopened for it, nor for a timeout (the port is fine: a unit is silent);
//! - only an I/O error or the port closing (a USB adapter unplugged, the device server
//!   dropping the connection) ends the bus: the poller reopens it with backoff.
//!
//! It only ever sends read requests (function codes 1-4): the gateway never writes to
//! equipment.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_modbus::ExceptionCode;

use super::link::SerialSettings;
use super::plan::ReadRequest;
use super::poller::{ReadData, ReadError};
use super::rtu::{MAX_FRAME, READ_REQUEST_LEN, ReplyScan, read_request, reply_len, scan_reply};
use super::serial::BusTiming;

/// What the master reads and writes frames through: a serial port, or the TCP socket of a
/// serial device server.
pub trait Port: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Port for T {}

/// One serial bus as its master sees it.
pub struct SerialBus<S = Box<dyn Port>> {
    port: S,
    timing: BusTiming,
    /// What `port` is, for error messages ("serial port", "device server connection").
    medium: &'static str,
    /// The line has been quiet since then (the end of the last byte sent or received).
    quiet_since: Instant,
    /// The last exchange has ended (answer or timeout): the next request also waits the
    /// turnaround.
    after_exchange: bool,
    buf: Vec<u8>,
    /// Bytes drained from the line outside an exchange (late or stray frames, noise).
    pub stray_bytes: u64,
}

/// One read on the bus: its outcome and the bus time it took.
#[derive(Debug)]
pub struct Exchange {
    pub result: Result<ReadData, ReadError>,
    /// From the start of the wait for silence to the end of the answer (or the timeout).
    pub bus_time: Duration,
}

/// The serial port of a bus cannot be opened (absent, busy, no permission).
#[derive(Debug, thiserror::Error)]
#[error("open {path}: {error}")]
pub struct OpenError {
    pub path: String,
    pub error: tokio_serial::Error,
}

/// Opens the serial port of a bus (exclusively: one master per bus).
pub fn open(s: &SerialSettings) -> Result<SerialBus, OpenError> {
    use tokio_serial::SerialPortBuilderExt;
    let parity = match s.parity {
        'E' => tokio_serial::Parity::Even,
        'O' => tokio_serial::Parity::Odd,
        _ => tokio_serial::Parity::None,
    };
    let data_bits = match s.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let stop_bits = if s.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    let port = tokio_serial::new(&s.path, s.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
        .map_err(|error| OpenError {
            path: s.path.clone(),
            error,
        })?;
    Ok(SerialBus::new(
        Box::new(port) as Box<dyn Port>,
        BusTiming::new(s),
    ))
}

/// The master of a bus behind a serial device server, on a connected socket.
pub fn behind_socket(stream: TcpStream) -> SerialBus {
    SerialBus::new(Box::new(stream) as Box<dyn Port>, BusTiming::socket())
        .medium("device server connection")
}

impl<S: AsyncRead + AsyncWrite + Unpin> SerialBus<S> {
    pub fn new(port: S, timing: BusTiming) -> Self {
        SerialBus {
            port,
            timing,
            medium: "serial port",
            quiet_since: Instant::now(),
            after_exchange: false,
            buf: Vec::with_capacity(MAX_FRAME),
            stray_bytes: 0,
        }
    }

    /// Names what the port is in error messages.
    pub fn medium(mut self, medium: &'static str) -> Self {
        self.medium = medium;
        self
    }

    pub fn timing(&self) -> &BusTiming {
        &self.timing
    }

    /// Waits until the line has been quiet for the frame gap (and the turnaround after an
    /// exchange), draining whatever arrives meanwhile.
    async fn wait_quiet(&mut self) -> Result<(), ReadError> {
        let pause = self.timing.frame_gap
            + if self.after_exchange {
                self.timing.turnaround
            } else {
                Duration::ZERO
            };
        let mut scratch = [0u8; MAX_FRAME];
        loop {
            // Polled at least once even when the pause is over: stale bytes are drained too.
            match timeout_at(self.quiet_since + pause, self.port.read(&mut scratch)).await {
                Err(_) => return Ok(()),
                Ok(Ok(0)) => return Err(self.closed()),
                Ok(Ok(n)) => {
                    self.stray_bytes += n as u64;
                    self.quiet_since = Instant::now();
                }
                Ok(Err(e)) => {
                    return Err(ReadError::Transport(format!("{} read: {e}", self.medium)));
                }
            }
        }
    }

    /// Reads `req` from `unit`. `timeout` is what the device may take beyond the time the
    /// request and its reply need on the wire.
    pub async fn read(&mut self, unit: u8, req: &ReadRequest, timeout: Duration) -> Exchange {
        let began = Instant::now();
        let result = self.exchange(unit, req, timeout).await;
        self.after_exchange = true;
        Exchange {
            result,
            bus_time: began.elapsed(),
        }
    }

    fn closed(&self) -> ReadError {
        ReadError::Transport(format!("the {} closed", self.medium))
    }

    async fn exchange(
        &mut self,
        unit: u8,
        req: &ReadRequest,
        timeout: Duration,
    ) -> Result<ReadData, ReadError> {
        self.wait_quiet().await?;
        let frame = read_request(unit, req.kind, req.start, req.count);
        let request_wire = self.timing.wire(READ_REQUEST_LEN);
        let write_by = Instant::now() + request_wire + timeout;
        match timeout_at(write_by, async {
            self.port.write_all(&frame).await?;
            self.port.flush().await
        })
        .await
        {
            Err(_) => {
                return Err(ReadError::Transport(format!(
                    "{} write timed out",
                    self.medium
                )));
            }
            Ok(Err(e)) => {
                return Err(ReadError::Transport(format!("{} write: {e}", self.medium)));
            }
            Ok(Ok(())) => {}
        }
        // The request is on the wire until then; the slave may answer a t3.5 later.
        let request_end = Instant::now() + request_wire;
        self.quiet_since = request_end;
        let deadline = request_end
            + self.timing.t35
            + self.timing.wire(reply_len(req.kind, req.count))
            + timeout;
        self.buf.clear();
        let mut chunk = [0u8; MAX_FRAME];
        loop {
            match scan_reply(&self.buf, unit, req.kind, req.count) {
                ReplyScan::Incomplete => {}
                ReplyScan::Data { data, .. } => return Ok(data),
                ReplyScan::Exception { code, .. } => {
                    return Err(ReadError::Exception(ExceptionCode::new(code)));
                }
                ReplyScan::WrongUnit { unit, .. } => return Err(ReadError::WrongUnit(unit)),
                ReplyScan::Garbled(why) => return Err(ReadError::Garbled(why)),
                ReplyScan::Malformed(why) => return Err(ReadError::Malformed(why)),
            }
            match timeout_at(deadline, self.port.read(&mut chunk)).await {
                Err(_) if self.buf.is_empty() => return Err(ReadError::Timeout),
                Err(_) => {
                    return Err(ReadError::Garbled(format!(
                        "{} bytes but no whole frame by the deadline",
                        self.buf.len()
                    )));
                }
                Ok(Ok(0)) => return Err(self.closed()),
                Ok(Ok(n)) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.quiet_since = Instant::now();
                }
                Ok(Err(e)) => {
                    return Err(ReadError::Transport(format!("{} read: {e}", self.medium)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::link::SerialSettings;
    use crate::modbus::rtu::{data_reply, exception_reply, seal};
    use crate::profile::RegisterKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    fn timing() -> BusTiming {
        BusTiming::new(&SerialSettings {
            path: "/dev/null".into(),
            baud: 115_200,
            parity: 'N',
            data_bits: 8,
            stop_bits: 1,
            frame_gap: Some(Duration::from_millis(5)),
            turnaround: Duration::from_millis(5),
        })
    }

    fn req() -> ReadRequest {
        ReadRequest {
            kind: RegisterKind::Holding,
            start: 10,
            count: 2,
            points: vec![],
        }
    }

    /// A slave that answers each request with the next scripted frame (or nothing).
    async fn slave(mut end: DuplexStream, script: Vec<Option<Vec<u8>>>) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        for reply in script {
            let mut req = [0u8; 8];
            if end.read_exact(&mut req).await.is_err() {
                break;
            }
            seen.push(req.to_vec());
            if let Some(bytes) = reply {
                let _ = end.write_all(&bytes).await;
            }
        }
        seen
    }

    #[tokio::test]
    async fn discards_garbled_and_wrong_unit_frames_and_keeps_the_bus() {
        let (master, end) = duplex(1024);
        let good = data_reply(7, RegisterKind::Holding, &ReadData::Words(vec![1, 2]));
        let mut garbled = good.clone();
        garbled[4] ^= 0xFF;
        let wrong = data_reply(8, RegisterKind::Holding, &ReadData::Words(vec![1, 2]));
        let slave = tokio::spawn(slave(
            end,
            vec![
                Some(garbled),
                Some(wrong),
                None,
                Some(exception_reply(7, 3, 2)),
                Some(good),
            ],
        ));
        let mut bus = SerialBus::new(master, timing());
        let r = bus.read(7, &req(), Duration::from_millis(50)).await;
        assert!(matches!(r.result, Err(ReadError::Garbled(_))), "{r:?}");
        let r = bus.read(7, &req(), Duration::from_millis(50)).await;
        assert!(matches!(r.result, Err(ReadError::WrongUnit(8))), "{r:?}");
        let r = bus.read(7, &req(), Duration::from_millis(50)).await;
        assert!(matches!(r.result, Err(ReadError::Timeout)), "{r:?}");
        assert!(r.bus_time >= Duration::from_millis(50));
        let r = bus.read(7, &req(), Duration::from_millis(50)).await;
        assert!(
            matches!(
                r.result,
                Err(ReadError::Exception(ExceptionCode::IllegalDataAddress))
            ),
            "{r:?}"
        );
        let r = bus.read(7, &req(), Duration::from_millis(50)).await;
        assert_eq!(r.result.ok(), Some(ReadData::Words(vec![1, 2])));
        let seen = slave.await.unwrap();
        assert_eq!(seen.len(), 5);
        assert!(
            seen.iter()
                .all(|f| f[..] == read_request(7, RegisterKind::Holding, 10, 2))
        );
    }

    #[tokio::test]
    async fn stray_bytes_are_drained_and_the_gap_is_kept() {
        let (master, mut end) = duplex(1024);
        let mut bus = SerialBus::new(master, timing());
        // A late frame sits on the line before the request.
        end.write_all(&seal(vec![3, 3, 2, 0, 9])).await.unwrap();
        let t0 = Instant::now();
        let reader = tokio::spawn(async move {
            let mut req = [0u8; 8];
            end.read_exact(&mut req).await.unwrap();
            let at = Instant::now();
            end.write_all(&data_reply(
                7,
                RegisterKind::Holding,
                &ReadData::Words(vec![5, 6]),
            ))
            .await
            .unwrap();
            (at, end)
        });
        let r = bus.read(7, &req(), Duration::from_millis(50)).await;
        assert_eq!(r.result.ok(), Some(ReadData::Words(vec![5, 6])));
        assert_eq!(bus.stray_bytes, 7);
        let (at, mut end) = reader.await.unwrap();
        // The request waited for the frame gap after the stray frame was drained.
        assert!(at - t0 >= Duration::from_millis(5));
        // The next request also waits the turnaround after the answer.
        let t1 = Instant::now();
        let reader = tokio::spawn(async move {
            let mut req = [0u8; 8];
            end.read_exact(&mut req).await.unwrap();
            Instant::now()
        });
        let _ = bus.read(7, &req(), Duration::from_millis(1)).await;
        assert!(reader.await.unwrap() - t1 >= Duration::from_millis(10));
    }

    #[tokio::test]
    async fn a_closed_port_is_a_transport_error() {
        let (master, end) = duplex(64);
        drop(end);
        let mut bus = SerialBus::new(master, timing());
        let r = bus.read(1, &req(), Duration::from_millis(20)).await;
        assert!(matches!(r.result, Err(ReadError::Transport(_))), "{r:?}");
    }
}
