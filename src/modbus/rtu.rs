//! Modbus RTU framing: the CRC, read requests and their replies as bytes on a serial line.
//!
//! Pure: no I/O and no clock. The serial master (`bus.rs`) scans what it receives with
//! [`scan_reply`]; the serial simulators scan requests with [`scan_request`] and build replies
//! with [`data_reply`] and [`exception_reply`].
//!
//! A frame is `unit, function, data..., crc lo, crc hi`. Frames are delimited on the wire by
//! 3.5 characters of silence, but a USB adapter delivers bytes in bursts (an FTDI chip holds
//! them up to 16 ms), so the silence cannot be measured reliably from user space: frames are
//! cut by the length their function code implies and checked by their CRC instead.

use super::poller::ReadData;
use crate::profile::RegisterKind;

/// Bytes of a read request (FC 1-4): unit, function, address, quantity, CRC.
pub const READ_REQUEST_LEN: usize = 8;
/// Bytes of an exception reply: unit, function | 0x80, code, CRC.
pub const EXCEPTION_LEN: usize = 5;
/// The longest RTU frame (a 253-byte PDU, the unit and the CRC).
pub const MAX_FRAME: usize = 256;

/// CRC-16/MODBUS (polynomial 0x8005 reflected, initial 0xFFFF, no final XOR); sent low byte
/// first.
const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS);

/// Appends the CRC to a frame body.
pub fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let crc = CRC16.checksum(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

/// True when the last two bytes are the CRC of the rest.
pub fn crc_ok(frame: &[u8]) -> bool {
    let Some(split) = frame.len().checked_sub(2).filter(|n| *n >= 2) else {
        return false;
    };
    let (body, crc) = frame.split_at(split);
    CRC16.checksum(body) == u16::from_le_bytes([crc[0], crc[1]])
}

/// The function code that reads a table.
pub fn function_code(kind: RegisterKind) -> u8 {
    match kind {
        RegisterKind::Coil => 1,
        RegisterKind::Discrete => 2,
        RegisterKind::Holding => 3,
        RegisterKind::Input => 4,
    }
}

/// The table a read function code reads.
pub fn register_kind(fc: u8) -> Option<RegisterKind> {
    match fc {
        1 => Some(RegisterKind::Coil),
        2 => Some(RegisterKind::Discrete),
        3 => Some(RegisterKind::Holding),
        4 => Some(RegisterKind::Input),
        _ => None,
    }
}

/// Data bytes of the reply to a read of `count` registers or bits.
pub fn data_bytes(kind: RegisterKind, count: u16) -> usize {
    if kind.is_bit() {
        usize::from(count).div_ceil(8)
    } else {
        usize::from(count) * 2
    }
}

/// Bytes of the normal reply to a read: unit, function, byte count, data, CRC.
pub fn reply_len(kind: RegisterKind, count: u16) -> usize {
    5 + data_bytes(kind, count)
}

/// The request frame of a read.
pub fn read_request(
    unit: u8,
    kind: RegisterKind,
    start: u16,
    count: u16,
) -> [u8; READ_REQUEST_LEN] {
    let mut f = [0u8; READ_REQUEST_LEN];
    f[0] = unit;
    f[1] = function_code(kind);
    f[2..4].copy_from_slice(&start.to_be_bytes());
    f[4..6].copy_from_slice(&count.to_be_bytes());
    let crc = CRC16.checksum(&f[..6]);
    f[6..8].copy_from_slice(&crc.to_le_bytes());
    f
}

/// What the bytes received after a read request make of its reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyScan {
    /// Not a whole frame yet.
    Incomplete,
    /// The reply, the first `len` bytes of the buffer.
    Data { len: usize, data: ReadData },
    /// The device answered with an exception code.
    Exception { len: usize, code: u8 },
    /// A frame with a valid CRC from another unit id: not ours, discard it.
    WrongUnit { len: usize, unit: u8 },
    /// A frame whose CRC fails, or bytes no reply to this request begins with: discard.
    Garbled(String),
    /// Our unit, a valid CRC, but not the shape asked for (another byte count).
    Malformed(String),
}

/// The length of a reply frame from its first bytes, for the replies a read can meet:
/// a read's data, an exception, or (from a confused device) the echo of a single write.
/// `None`: more bytes are needed; `Some(Err)`: no reply starts like this.
fn reply_frame_len(buf: &[u8]) -> Option<Result<usize, UnknownFunction>> {
    let fc = *buf.get(1)?;
    Some(Ok(match fc {
        f if f & 0x80 != 0 => EXCEPTION_LEN,
        1..=4 => 5 + usize::from(*buf.get(2)?),
        5 | 6 | 15 | 16 => 8,
        other => return Some(Err(UnknownFunction(other))),
    }))
}

/// A frame whose function code no reply to a read has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("function code {0} in a reply")]
struct UnknownFunction(u8);

/// Scans the bytes received after sending a read of `count` from `kind` to `unit`.
pub fn scan_reply(buf: &[u8], unit: u8, kind: RegisterKind, count: u16) -> ReplyScan {
    let len = match reply_frame_len(buf) {
        None => return ReplyScan::Incomplete,
        Some(Err(why)) => return ReplyScan::Garbled(why.to_string()),
        Some(Ok(len)) => len,
    };
    if buf.len() < len {
        return ReplyScan::Incomplete;
    }
    let frame = &buf[..len];
    if !crc_ok(frame) {
        return ReplyScan::Garbled(format!(
            "CRC mismatch in a {len}-byte frame from unit {}",
            frame[0]
        ));
    }
    if frame[0] != unit {
        return ReplyScan::WrongUnit {
            len,
            unit: frame[0],
        };
    }
    let fc = function_code(kind);
    match frame[1] {
        f if f == fc | 0x80 => ReplyScan::Exception {
            len,
            code: frame[2],
        },
        f if f == fc => {
            let want = data_bytes(kind, count);
            let data = &frame[3..len - 2];
            if data.len() != want {
                return ReplyScan::Malformed(format!(
                    "asked for {count} {} and got {} data bytes instead of {want}",
                    if kind.is_bit() { "bits" } else { "registers" },
                    data.len()
                ));
            }
            let data = if kind.is_bit() {
                ReadData::Bits(
                    (0..usize::from(count))
                        .map(|i| data[i / 8] >> (i % 8) & 1 == 1)
                        .collect(),
                )
            } else {
                ReadData::Words(
                    data.chunks_exact(2)
                        .map(|w| u16::from_be_bytes([w[0], w[1]]))
                        .collect(),
                )
            };
            ReplyScan::Data { len, data }
        }
        other => ReplyScan::Malformed(format!(
            "function code {other} in the reply to function {fc}"
        )),
    }
}

/// What the bytes received by a slave make of the next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestScan {
    /// Not a whole frame yet.
    Incomplete,
    /// A frame with a valid CRC, the first `len` bytes.
    Frame { len: usize },
    /// A frame that fails its CRC (`len` bytes), to be ignored as a slave does.
    BadCrc { len: usize },
    /// A function whose length is not known from its header: the frame ends with the
    /// silence after it.
    Unknown,
}

/// The length of a request frame from its first bytes; `None`: more bytes are needed or the
/// function is not known.
fn request_frame_len(buf: &[u8]) -> Option<Option<usize>> {
    let fc = *buf.get(1)?;
    Some(match fc {
        1..=6 | 8 => Some(8),
        7 | 11 | 12 | 17 => Some(4),
        15 | 16 => Some(9 + usize::from(*buf.get(6)?)),
        22 => Some(10),
        23 => Some(13 + usize::from(*buf.get(10)?)),
        _ => None,
    })
}

/// Scans the bytes a slave received.
pub fn scan_request(buf: &[u8]) -> RequestScan {
    match request_frame_len(buf) {
        None => RequestScan::Incomplete,
        Some(None) => RequestScan::Unknown,
        Some(Some(len)) if buf.len() < len => RequestScan::Incomplete,
        Some(Some(len)) if crc_ok(&buf[..len]) => RequestScan::Frame { len },
        Some(Some(len)) => RequestScan::BadCrc { len },
    }
}

/// A read request as a slave sees it: unit, table, start, count. `None` for other functions.
pub fn parse_read_request(frame: &[u8]) -> Option<(u8, RegisterKind, u16, u16)> {
    if frame.len() != READ_REQUEST_LEN {
        return None;
    }
    let kind = register_kind(frame[1])?;
    Some((
        frame[0],
        kind,
        u16::from_be_bytes([frame[2], frame[3]]),
        u16::from_be_bytes([frame[4], frame[5]]),
    ))
}

/// The normal reply to a read.
pub fn data_reply(unit: u8, kind: RegisterKind, data: &ReadData) -> Vec<u8> {
    let mut body = vec![unit, function_code(kind), 0];
    match data {
        ReadData::Words(words) => {
            for w in words {
                body.extend_from_slice(&w.to_be_bytes());
            }
        }
        ReadData::Bits(bits) => {
            for chunk in bits.chunks(8) {
                body.push(
                    chunk
                        .iter()
                        .enumerate()
                        .fold(0u8, |acc, (i, b)| acc | (u8::from(*b) << i)),
                );
            }
        }
    }
    // At most 250 data bytes fit a frame; a longer read was refused before it got here.
    body[2] = u8::try_from(body.len() - 3).unwrap_or(u8::MAX);
    seal(body)
}

/// An exception reply to function `fc`.
pub fn exception_reply(unit: u8, fc: u8, code: u8) -> Vec<u8> {
    seal(vec![unit, fc | 0x80, code])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc_matches_the_specification_example() {
        // The CRC of the bytes 02 07 is 0x1241, sent low byte first: 02 07 41 12.
        assert_eq!(CRC16.checksum(&[0x02, 0x07]), 0x1241);
        assert_eq!(seal(vec![0x02, 0x07]), [0x02, 0x07, 0x41, 0x12]);
        // A well-known frame: read 3 holding registers from 0x006B of unit 0x11.
        let f = read_request(0x11, RegisterKind::Holding, 0x006B, 3);
        assert_eq!(f, [0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87]);
        assert!(crc_ok(&f));
    }

    #[test]
    fn scans_data_exceptions_and_discards() {
        let words = ReadData::Words(vec![0x1234, 0xFFFF, 7]);
        let reply = data_reply(5, RegisterKind::Input, &words);
        assert_eq!(reply.len(), reply_len(RegisterKind::Input, 3));
        for cut in 0..reply.len() {
            assert_eq!(
                scan_reply(&reply[..cut], 5, RegisterKind::Input, 3),
                ReplyScan::Incomplete,
                "{cut}"
            );
        }
        assert_eq!(
            scan_reply(&reply, 5, RegisterKind::Input, 3),
            ReplyScan::Data {
                len: reply.len(),
                data: words.clone()
            }
        );
        // Another unit's well-formed reply.
        let other = data_reply(6, RegisterKind::Input, &words);
        assert_eq!(
            scan_reply(&other, 5, RegisterKind::Input, 3),
            ReplyScan::WrongUnit {
                len: other.len(),
                unit: 6
            }
        );
        // One bit flipped anywhere: the CRC catches it.
        for i in 0..reply.len() {
            let mut bad = reply.clone();
            bad[i] ^= 0x10;
            let scan = scan_reply(&bad, 5, RegisterKind::Input, 3);
            assert!(
                matches!(
                    scan,
                    ReplyScan::Garbled(_) | ReplyScan::Incomplete | ReplyScan::Malformed(_)
                ),
                "byte {i}: {scan:?}"
            );
            assert!(!matches!(scan, ReplyScan::Data { .. }));
        }
        let exc = exception_reply(5, 4, 2);
        assert_eq!(
            scan_reply(&exc, 5, RegisterKind::Input, 3),
            ReplyScan::Exception { len: 5, code: 2 }
        );
        // The right unit, but fewer registers than asked.
        assert!(matches!(
            scan_reply(&reply, 5, RegisterKind::Input, 4),
            ReplyScan::Malformed(_)
        ));
        assert!(matches!(
            scan_reply(&[5, 0x44, 1, 2, 3], 5, RegisterKind::Input, 1),
            ReplyScan::Garbled(_)
        ));
    }

    #[test]
    fn bits_are_packed_lsb_first() {
        let bits = vec![
            true, false, true, true, false, false, false, false, true, true,
        ];
        let reply = data_reply(1, RegisterKind::Discrete, &ReadData::Bits(bits.clone()));
        assert_eq!(&reply[..5], &[1, 2, 2, 0b0000_1101, 0b0000_0011]);
        assert_eq!(
            scan_reply(&reply, 1, RegisterKind::Discrete, 10),
            ReplyScan::Data {
                len: 7,
                data: ReadData::Bits(bits)
            }
        );
    }

    #[test]
    fn scans_requests() {
        let f = read_request(3, RegisterKind::Coil, 10, 16);
        assert_eq!(scan_request(&f[..5]), RequestScan::Incomplete);
        assert_eq!(scan_request(&f), RequestScan::Frame { len: 8 });
        assert_eq!(
            parse_read_request(&f),
            Some((3, RegisterKind::Coil, 10, 16))
        );
        let mut bad = f;
        bad[3] ^= 1;
        assert_eq!(scan_request(&bad), RequestScan::BadCrc { len: 8 });
        // Write multiple registers: 7 header bytes, 4 data bytes, CRC.
        let w = seal(vec![3, 16, 0, 1, 0, 2, 4, 0, 1, 0, 2]);
        assert_eq!(scan_request(&w[..8]), RequestScan::Incomplete);
        assert_eq!(scan_request(&w), RequestScan::Frame { len: 13 });
        assert_eq!(parse_read_request(&w[..13]), None);
        assert_eq!(scan_request(&[3, 0x2B, 14, 1]), RequestScan::Unknown);
    }

    proptest! {
        #[test]
        fn replies_round_trip(unit in 1u8..=247, words in proptest::collection::vec(any::<u16>(), 1..=125)) {
            let n = words.len() as u16;
            let data = ReadData::Words(words);
            let reply = data_reply(unit, RegisterKind::Holding, &data);
            prop_assert!(reply.len() <= MAX_FRAME);
            prop_assert_eq!(scan_reply(&reply, unit, RegisterKind::Holding, n), ReplyScan::Data { len: reply.len(), data });
        }

        #[test]
        fn noise_never_panics_or_passes_as_data_of_another_length(bytes in proptest::collection::vec(any::<u8>(), 0..300), count in 1u16..=125) {
            let _ = scan_reply(&bytes, 1, RegisterKind::Holding, count);
            let _ = scan_request(&bytes);
            if let ReplyScan::Data { data: ReadData::Words(w), .. } = scan_reply(&bytes, 1, RegisterKind::Holding, count) {
                prop_assert_eq!(w.len(), usize::from(count));
            }
        }
    }
}
