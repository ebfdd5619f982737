//! The on-disk format: segment files of checksummed records, how a record is encoded and
//! decoded, and the scan of a segment's bytes that keeps every intact record and resynchronizes
//! past damaged stretches.

/// The first bytes of every segment file.
pub const FILE_MAGIC: &[u8; 8] = b"FDTLOG01";
const RECORD_MAGIC: u32 = 0x4644_5452; // "RTDF" on disk
/// Bytes of a record header.
pub const HEADER_LEN: usize = 56;
/// Largest payload a record may carry; a larger length in a header is corruption.
pub const MAX_PAYLOAD: u32 = 256 << 20;
/// CRC-32C, from tables that take 16 bytes a step: the same checksum as the byte-at-a-time
/// table, several times faster, and it runs over every byte appended and read back.
pub(super) static CRC: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// What a record carries, for the drop order when the log is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Gauges and counters: dropped first (after forwarded history).
    Bulk,
    /// Lines carrying alarm, state and event points, device status and work-order events.
    Priority,
}

/// The header of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub seq: u64,
    pub len: u32,
    pub lines: u32,
    pub class: Class,
    /// Smallest and largest line timestamp (ns), for history queries.
    pub min_ts: i64,
    pub max_ts: i64,
    /// Wall-clock time of the append (ms since the epoch): backlog age and retention.
    pub appended_ms: i64,
}

/// Appends one encoded record to `out`.
pub fn encode_record(h: &RecordHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&encode_header(h, payload));
    out.extend_from_slice(payload);
}

/// The header of the record of `h` carrying `payload`, checksum included: the record is this
/// header followed by the payload (which the writer thus writes without copying it).
pub(super) fn encode_header(h: &RecordHeader, payload: &[u8]) -> [u8; HEADER_LEN] {
    let flags: u64 = match h.class {
        Class::Bulk => 0,
        Class::Priority => 1,
    };
    let mut out = [0u8; HEADER_LEN];
    out[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    out[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out[12..16].copy_from_slice(&h.lines.to_le_bytes());
    out[16..24].copy_from_slice(&h.seq.to_le_bytes());
    out[24..32].copy_from_slice(&flags.to_le_bytes());
    out[32..40].copy_from_slice(&h.min_ts.to_le_bytes());
    out[40..48].copy_from_slice(&h.max_ts.to_le_bytes());
    out[48..56].copy_from_slice(&h.appended_ms.to_le_bytes());
    let mut crc = CRC.digest();
    crc.update(&out[8..]);
    crc.update(payload);
    out[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    out
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Why bytes of a segment are not an intact record (where recovery cuts or skips).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("torn header ({got} of {HEADER_LEN} bytes)")]
    TornHeader { got: usize },
    #[error("bad record magic")]
    BadMagic,
    #[error("impossible record length {0}")]
    ImpossibleLength(u32),
    #[error("torn record ({got} of {total} bytes)")]
    TornRecord { got: usize, total: usize },
    #[error("checksum mismatch")]
    Checksum,
    #[error("impossible sequence number")]
    ImpossibleSequence,
    #[error("unknown record flags {0:#x}")]
    UnknownFlags(u64),
    #[error("payload is not UTF-8")]
    NotUtf8,
    /// An intact record whose sequence number does not follow the one before it.
    #[error("sequence {seq} after {after}")]
    OutOfOrder { seq: u64, after: u64 },
    #[error("bad segment header")]
    BadSegmentHeader,
    #[error("bad or missing segment header")]
    NoSegmentHeader,
}

/// Decodes the record at the start of `buf`: `Ok(None)` for an empty buffer, the header and the
/// record's total length, or why the bytes are not a whole, intact record.
pub fn decode_record(buf: &[u8]) -> Result<Option<(RecordHeader, usize)>, Damage> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.len() < HEADER_LEN {
        return Err(Damage::TornHeader { got: buf.len() });
    }
    if u32_at(buf, 0) != RECORD_MAGIC {
        return Err(Damage::BadMagic);
    }
    let len = u32_at(buf, 8);
    if len > MAX_PAYLOAD {
        return Err(Damage::ImpossibleLength(len));
    }
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        return Err(Damage::TornRecord {
            got: buf.len().min(total),
            total,
        });
    }
    if CRC.checksum(&buf[8..total]) != u32_at(buf, 4) {
        return Err(Damage::Checksum);
    }
    if u64_at(buf, 16) == u64::MAX {
        return Err(Damage::ImpossibleSequence);
    }
    let flags = u64_at(buf, 24);
    let class = match flags {
        0 => Class::Bulk,
        1 => Class::Priority,
        f => return Err(Damage::UnknownFlags(f)),
    };
    if std::str::from_utf8(&buf[HEADER_LEN..total]).is_err() {
        return Err(Damage::NotUtf8);
    }
    Ok(Some((
        RecordHeader {
            seq: u64_at(buf, 16),
            len,
            lines: u32_at(buf, 12),
            class,
            min_ts: u64_at(buf, 32) as i64,
            max_ts: u64_at(buf, 40) as i64,
            appended_ms: u64_at(buf, 48) as i64,
        },
        total,
    )))
}

/// What a scan of one segment's bytes found.
#[derive(Debug, Default)]
pub struct SegmentScan {
    /// Intact records in order, with their offsets.
    pub records: Vec<(RecordHeader, u64)>,
    /// Bytes up to the end of the last intact record (what to keep).
    pub valid_len: u64,
    /// Damaged stretches between intact records (a bad sector, a flipped bit): (start, end,
    /// why). The records after one are kept.
    pub holes: Vec<(u64, u64, Damage)>,
    /// Why the bytes after `valid_len` are not records (a torn tail), if they are not.
    pub error: Option<Damage>,
}

/// The next offset at or after `from` where an intact record with a sequence number above
/// `last` starts.
fn resync(bytes: &[u8], from: usize, last: Option<u64>) -> Option<usize> {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut at = from;
    while at + HEADER_LEN <= bytes.len() {
        let off = bytes[at..].windows(4).position(|w| w == magic)?;
        at += off;
        if let Ok(Some((h, _))) = decode_record(&bytes[at..])
            && last.is_none_or(|l| h.seq > l)
        {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Scans a whole segment file's bytes. Records must carry increasing sequence numbers above
/// `after_seq`. A damaged stretch followed by intact records is a hole (the records after it
/// are kept); damage with no intact record after it is a torn tail, ending the segment at
/// `valid_len`.
pub fn scan_segment(bytes: &[u8], after_seq: Option<u64>) -> SegmentScan {
    let mut scan = SegmentScan::default();
    let head = FILE_MAGIC.len();
    let mut at = head.min(bytes.len());
    if bytes.len() < head || &bytes[..head] != FILE_MAGIC {
        // A damaged header: the records may still be there.
        match resync(bytes, 0, after_seq) {
            Some(p) => {
                scan.holes.push((0, p as u64, Damage::BadSegmentHeader));
                at = p;
            }
            None => {
                scan.error = Some(Damage::NoSegmentHeader);
                return scan;
            }
        }
    }
    scan.valid_len = at as u64;
    let mut last = after_seq;
    loop {
        let why = match decode_record(&bytes[at..]) {
            Ok(None) => break,
            Ok(Some((h, total))) if last.is_none_or(|l| h.seq > l) => {
                last = Some(h.seq);
                scan.records.push((h, at as u64));
                at += total;
                scan.valid_len = at as u64;
                continue;
            }
            Ok(Some((h, _))) => Damage::OutOfOrder {
                seq: h.seq,
                after: last.unwrap_or(0),
            },
            Err(e) => e,
        };
        match resync(bytes, at + 1, last) {
            Some(p) => {
                scan.holes.push((at as u64, p as u64, why));
                at = p;
            }
            None => {
                scan.error = Some(why);
                break;
            }
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::log::tests::header;

    #[test]
    fn record_round_trips() {
        let mut buf = Vec::new();
        let mut h = header(7);
        h.len = 4;
        h.class = Class::Priority;
        encode_record(&h, b"a 1\n", &mut buf);
        let (got, total) = decode_record(&buf).unwrap().unwrap();
        assert_eq!(got, h);
        assert_eq!(total, buf.len());
    }

    #[test]
    fn every_flipped_bit_and_every_cut_is_detected() {
        let mut seg = FILE_MAGIC.to_vec();
        let mut h = header(1);
        h.len = 6;
        encode_record(&h, b"m v=1\n", &mut seg);
        let whole = seg.len();
        for cut in FILE_MAGIC.len() + 1..whole {
            let scan = scan_segment(&seg[..cut], None);
            assert!(scan.records.is_empty(), "cut at {cut}");
            assert!(scan.error.is_some());
            assert_eq!(scan.valid_len, FILE_MAGIC.len() as u64);
        }
        for byte in FILE_MAGIC.len()..whole {
            for bit in 0..8 {
                let mut bad = seg.clone();
                bad[byte] ^= 1 << bit;
                let scan = scan_segment(&bad, None);
                assert!(scan.records.is_empty(), "flip {byte}.{bit}");
            }
        }
    }
}
