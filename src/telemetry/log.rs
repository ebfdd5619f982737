//! The on-disk telemetry log (DESIGN §7): what "accepted" means.
//!
//! Batches of line protocol are appended as checksummed records to segment files under
//! `state_dir/telemetry/` by one writer thread, which syncs them in a group commit every
//! `fsync_interval`; only then do they count as accepted (the acks of MQTT QoS 1 messages fire,
//! the forwarder may read them). The forwarder reads records in sequence order from a cursor
//! that moves only after the database answered 2xx, and is persisted in `cursor`.
//!
//! The log is bounded by `log_max_bytes`. When over it, the writer frees space in this order,
//! counting everything it drops: forwarded history first (whole segments), then the oldest
//! unforwarded bulk telemetry (segments are rewritten without their bulk records), then, last,
//! the oldest lines carrying alarm, state and event points. Forwarded records stay for
//! `history_retention` and answer the history API.
//!
//! Record layout (little endian), [`HEADER_LEN`] bytes then the payload:
//! `magic u32 | crc32c u32 | len u32 | lines u32 | seq u64 | flags u64 | min_ts i64 | max_ts i64 |
//! appended_ms i64`, the CRC covering everything after itself including the payload. At start-up
//! every segment is scanned; a torn or corrupt record and everything after it in its segment is
//! cut (the file truncated), reported and counted, never replayed.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::events::LogLimiter;
use crate::model::Ack;

/// The first bytes of every segment file.
pub const FILE_MAGIC: &[u8; 8] = b"FDTLOG01";
const RECORD_MAGIC: u32 = 0x4644_5452; // "RTDF" on disk
/// Bytes of a record header.
pub const HEADER_LEN: usize = 56;
/// Largest payload a record may carry; a larger length in a header is corruption.
pub const MAX_PAYLOAD: u32 = 256 << 20;
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
const SEGMENT_EXT: &str = "seg";
/// A segment is closed after this long, so that retention can remove old data of a quiet log.
const SEGMENT_MAX_AGE: Duration = Duration::from_secs(3600);
/// How often retention and housekeeping run.
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// Batches kept in memory while the disk refuses writes, before the oldest are dropped.
const RETRY_MAX_BYTES: usize = 32 << 20;

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
    let start = out.len();
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&h.lines.to_le_bytes());
    out.extend_from_slice(&h.seq.to_le_bytes());
    let flags: u64 = match h.class {
        Class::Bulk => 0,
        Class::Priority => 1,
    };
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&h.min_ts.to_le_bytes());
    out.extend_from_slice(&h.max_ts.to_le_bytes());
    out.extend_from_slice(&h.appended_ms.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = CRC.checksum(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the record at the start of `buf`: `Ok(None)` for an empty buffer, the header and the
/// record's total length, or why the bytes are not a whole, intact record.
pub fn decode_record(buf: &[u8]) -> Result<Option<(RecordHeader, usize)>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.len() < HEADER_LEN {
        return Err(format!("torn header ({} of {HEADER_LEN} bytes)", buf.len()));
    }
    if u32_at(buf, 0) != RECORD_MAGIC {
        return Err("bad record magic".into());
    }
    let len = u32_at(buf, 8);
    if len > MAX_PAYLOAD {
        return Err(format!("impossible record length {len}"));
    }
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        return Err(format!(
            "torn record ({} of {total} bytes)",
            buf.len().min(total)
        ));
    }
    if CRC.checksum(&buf[8..total]) != u32_at(buf, 4) {
        return Err("checksum mismatch".into());
    }
    if u64_at(buf, 16) == u64::MAX {
        return Err("impossible sequence number".into());
    }
    let flags = u64_at(buf, 24);
    let class = match flags {
        0 => Class::Bulk,
        1 => Class::Priority,
        f => return Err(format!("unknown record flags {f:#x}")),
    };
    if std::str::from_utf8(&buf[HEADER_LEN..total]).is_err() {
        return Err("payload is not UTF-8".into());
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
    pub holes: Vec<(u64, u64, String)>,
    /// Why the bytes after `valid_len` are not records (a torn tail), if they are not.
    pub error: Option<String>,
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
                scan.holes.push((0, p as u64, "bad segment header".into()));
                at = p;
            }
            None => {
                scan.error = Some("bad or missing segment header".into());
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
            Ok(Some((h, _))) => format!("sequence {} after {}", h.seq, last.unwrap_or(0)),
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

/// Settings of the log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `state_dir/telemetry`.
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub fsync_interval: Duration,
    pub retention: Duration,
    /// A forwarder reads the log (`[influxdb]` configured). Without one, appended records
    /// count as forwarded at once: they are history.
    pub forwarding: bool,
}

impl LogConfig {
    /// Segment size: an eighth of the bound, so that freeing one segment is a small step.
    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8).clamp(4096, 64 << 20)
    }
}

/// Counters and gauges of the log, for /metrics and /readyz.
#[derive(Debug, Default)]
pub struct LogStats {
    pub appended_lines: AtomicU64,
    pub appended_bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    /// Gauges: bytes on disk and segments.
    pub bytes: AtomicU64,
    pub segments: AtomicU64,
    /// Gauges: not yet forwarded.
    pub backlog_bytes: AtomicU64,
    pub backlog_lines: AtomicU64,
    pub forwarded_lines: AtomicU64,
    pub forwarded_bytes: AtomicU64,
    /// Forwarded history removed to stay under the bound, and by retention (bytes).
    pub history_evicted_bytes: AtomicU64,
    pub history_expired_bytes: AtomicU64,
    /// Unforwarded lines dropped because the log was full, by class.
    pub dropped_bulk_lines: AtomicU64,
    pub dropped_priority_lines: AtomicU64,
    /// Lines dropped because the disk refused them for too long.
    pub dropped_disk_lines: AtomicU64,
    /// Lines lost to records found corrupt after they were written.
    pub dropped_corrupt_lines: AtomicU64,
    /// Start-up: torn or corrupt tails cut, and their bytes.
    pub recovery_cuts: AtomicU64,
    pub recovery_cut_bytes: AtomicU64,
    pub write_errors: AtomicU64,
    /// Gauge: 1 while the disk refuses writes.
    pub disk_failing: AtomicU64,
    /// Gauge: 1 while the writer thread runs (it stops only at shutdown, or by a bug).
    pub writer_running: AtomicU64,
    /// Lines per second forwarded recently (f64 bits), set by the forwarder.
    pub forward_rate_bits: AtomicU64,
}

impl LogStats {
    pub fn forward_rate(&self) -> f64 {
        f64::from_bits(self.forward_rate_bits.load(Relaxed))
    }
}

#[derive(Debug, Clone)]
struct Meta {
    seq: u64,
    offset: u64,
    len: u32,
    lines: u32,
    class: Class,
    min_ts: i64,
    max_ts: i64,
    appended_ms: i64,
}

impl Meta {
    fn new(h: &RecordHeader, offset: u64) -> Self {
        Meta {
            seq: h.seq,
            offset,
            len: h.len,
            lines: h.lines,
            class: h.class,
            min_ts: h.min_ts,
            max_ts: h.max_ts,
            appended_ms: h.appended_ms,
        }
    }

    fn total(&self) -> u64 {
        HEADER_LEN as u64 + self.len as u64
    }
}

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    bytes: u64,
    records: Vec<Meta>,
    opened: Instant,
}

impl Segment {
    fn last_seq(&self) -> Option<u64> {
        self.records.last().map(|m| m.seq)
    }
}

#[derive(Debug)]
struct State {
    /// Oldest first; the last one is the writer's active segment once it runs.
    segments: VecDeque<Segment>,
    next_seq: u64,
    /// Every record below this sequence number is synced.
    synced: u64,
    /// The next sequence number to forward.
    cursor: u64,
    total_bytes: u64,
    backlog_bytes: u64,
    backlog_lines: u64,
    /// Bumped whenever records move or go (compaction, removal): a reader that raced one
    /// looks its records up again.
    generation: u64,
    /// The forwarder holds the records below this sequence number (from the cursor on) in
    /// memory and is writing them: the bound does not count them as dropped.
    inflight_end: u64,
}

/// What start-up found.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    pub segments: usize,
    pub records: usize,
    /// Unforwarded lines found (they are forwarded now).
    pub backlog_lines: u64,
    /// Each cut: file, offset, bytes removed, why.
    pub cuts: Vec<(PathBuf, u64, u64, String)>,
}

/// Lines read for the forwarder: consecutive records from the cursor.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub body: String,
    pub lines: usize,
    /// The cursor after these records.
    pub next_seq: u64,
}

/// One sample of the history API.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistorySample {
    /// Nanoseconds since the epoch.
    pub time_ns: i64,
    pub point: String,
    pub value: serde_json::Value,
}

/// The log: its index in memory, its files on disk.
pub struct TelemetryLog {
    cfg: LogConfig,
    state: Mutex<State>,
    synced_tx: watch::Sender<u64>,
    pub stats: Arc<LogStats>,
    cursor_file: Mutex<u64>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{SEGMENT_EXT}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl TelemetryLog {
    /// Opens (creating) the log directory, scans every segment, cuts torn or corrupt tails and
    /// loads the cursor. The writer is started with [`TelemetryLog::start_writer`].
    pub fn open(cfg: LogConfig, stats: Arc<LogStats>) -> io::Result<(Arc<Self>, Recovery)> {
        fs::create_dir_all(&cfg.dir)?;
        let mut ids: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&cfg.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("tmp") {
                // A compaction interrupted by a crash: the original is still in place.
                let _ = fs::remove_file(&path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
                continue;
            }
            if let Some(id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|id| *id < u64::MAX / 2)
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut rec = Recovery::default();
        let mut segments = VecDeque::new();
        let mut last_seq: Option<u64> = None;
        for id in ids {
            let path = segment_path(&cfg.dir, id);
            let bytes = fs::read(&path)?;
            let scan = scan_segment(&bytes, last_seq);
            for (from, to, why) in &scan.holes {
                // Damage inside a segment (not a crash, which only tears the tail): the
                // intact records after it are kept; the stretch is skipped, never replayed.
                stats.recovery_cuts.fetch_add(1, Relaxed);
                stats.recovery_cut_bytes.fetch_add(to - from, Relaxed);
                warn!(file = %path.display(), offset = from, skipped_bytes = to - from, reason = %why, "telemetry log: skipped a corrupt stretch; the records after it are kept");
                rec.cuts.push((path.clone(), *from, to - from, why.clone()));
            }
            if let Some(why) = &scan.error {
                let cut = bytes.len() as u64 - scan.valid_len;
                stats.recovery_cuts.fetch_add(1, Relaxed);
                stats.recovery_cut_bytes.fetch_add(cut, Relaxed);
                warn!(file = %path.display(), offset = scan.valid_len, cut_bytes = cut, reason = %why, "telemetry log: cut a torn or corrupt tail");
                rec.cuts
                    .push((path.clone(), scan.valid_len, cut, why.clone()));
                if scan.records.is_empty() {
                    fs::remove_file(&path)?;
                    continue;
                }
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(scan.valid_len)?;
                f.sync_all()?;
            }
            if scan.records.is_empty() {
                // Only a header (a crash right after rotation): nothing to keep.
                fs::remove_file(&path)?;
                continue;
            }
            last_seq = scan.records.last().map(|(h, _)| h.seq);
            rec.records += scan.records.len();
            segments.push_back(Segment {
                id,
                path,
                bytes: scan.valid_len,
                records: scan
                    .records
                    .into_iter()
                    .map(|(h, offset)| Meta::new(&h, offset))
                    .collect(),
                opened: Instant::now(),
            });
        }
        if !rec.cuts.is_empty() {
            sync_dir(&cfg.dir)?;
        }
        rec.segments = segments.len();
        let next_seq = last_seq.map_or(1, |s| s.saturating_add(1));
        let first_seq = segments
            .front()
            .and_then(|s: &Segment| s.records.first())
            .map_or(next_seq, |m| m.seq);
        let stored = read_cursor(&cfg.dir.join("cursor"));
        let cursor = if cfg.forwarding {
            match stored {
                Ok(Some(c)) => c.max(first_seq).min(next_seq),
                Ok(None) => first_seq,
                Err(e) => {
                    warn!(error = %e, "telemetry log: the forward cursor is unreadable; forwarding everything in the log again");
                    first_seq
                }
            }
        } else {
            next_seq
        };
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let (mut backlog_bytes, mut backlog_lines) = (0u64, 0u64);
        for m in segments.iter().flat_map(|s| s.records.iter()) {
            if m.seq >= cursor {
                backlog_bytes += m.total();
                backlog_lines += m.lines as u64;
            }
        }
        rec.backlog_lines = backlog_lines;
        let (synced_tx, _) = watch::channel(next_seq);
        let log = Arc::new(TelemetryLog {
            cfg,
            state: Mutex::new(State {
                segments,
                next_seq,
                synced: next_seq,
                cursor,
                total_bytes,
                backlog_bytes,
                backlog_lines,
                generation: 0,
                inflight_end: 0,
            }),
            synced_tx,
            stats,
            cursor_file: Mutex::new(cursor),
        });
        log.publish_gauges(&log.lock());
        Ok((log, rec))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the index consistent before it can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_gauges(&self, st: &State) {
        self.stats.bytes.store(st.total_bytes, Relaxed);
        self.stats.segments.store(st.segments.len() as u64, Relaxed);
        self.stats.backlog_bytes.store(st.backlog_bytes, Relaxed);
        self.stats.backlog_lines.store(st.backlog_lines, Relaxed);
    }

    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }

    /// Every record below the watched sequence number is synced (accepted).
    pub fn subscribe_synced(&self) -> watch::Receiver<u64> {
        self.synced_tx.subscribe()
    }

    /// The next sequence number to forward.
    pub fn cursor(&self) -> u64 {
        self.lock().cursor
    }

    /// Age of the oldest unforwarded record, if any.
    pub fn oldest_backlog_age(&self) -> Option<Duration> {
        let st = self.lock();
        let m = find_from(&st, st.cursor)?;
        let ms = now_ms().saturating_sub(m.appended_ms).max(0);
        Some(Duration::from_millis(ms as u64))
    }

    /// Reads consecutive synced records from `from` (the first one at or after it), up to
    /// `max_lines` lines (at least one record). `None`: nothing synced to read.
    pub fn read_chunk(&self, from: u64, max_lines: usize) -> io::Result<Option<Chunk>> {
        loop {
            let (plan, generation) = {
                let st = self.lock();
                let mut out: Vec<(PathBuf, Meta)> = Vec::new();
                let mut lines = 0usize;
                'segs: for seg in &st.segments {
                    if seg.last_seq().is_none_or(|l| l < from) {
                        continue;
                    }
                    let start = seg.records.partition_point(|m| m.seq < from);
                    for m in &seg.records[start..] {
                        if m.seq >= st.synced
                            || (!out.is_empty() && lines + m.lines as usize > max_lines)
                        {
                            break 'segs;
                        }
                        lines += m.lines as usize;
                        out.push((seg.path.clone(), m.clone()));
                    }
                }
                (out, st.generation)
            };
            if plan.is_empty() {
                return Ok(None);
            }
            let mut body = String::new();
            let mut lines = 0usize;
            let mut next_seq = from;
            let mut file: Option<(PathBuf, File)> = None;
            let mut failed: Option<&Meta> = None;
            for (path, m) in &plan {
                if file.as_ref().is_none_or(|(p, _)| p != path) {
                    match File::open(path) {
                        Ok(f) => file = Some((path.clone(), f)),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            failed = Some(m);
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                let Some((_, f)) = &file else { break };
                let mut buf = vec![0u8; m.total() as usize];
                let ok = f.read_exact_at(&mut buf, m.offset).is_ok()
                    && matches!(decode_record(&buf), Ok(Some((h, _))) if h.seq == m.seq);
                if !ok {
                    failed = Some(m);
                    break;
                }
                // decode_record checked the payload is UTF-8.
                body.push_str(&String::from_utf8_lossy(&buf[HEADER_LEN..]));
                lines += m.lines as usize;
                next_seq = m.seq + 1;
            }
            if failed.is_none() || lines > 0 {
                // What was read is good (after a failure, the rest is looked at on the next
                // call). The generation must not have changed since the plan, or the records
                // read may have been dropped meanwhile without the bound knowing they are in
                // flight: then read again.
                let mut st = self.lock();
                if st.generation != generation {
                    continue;
                }
                st.inflight_end = next_seq;
                return Ok(Some(Chunk {
                    body,
                    lines,
                    next_seq,
                }));
            }
            let Some(bad) = failed else { continue };
            if self.lock().generation != generation {
                // A compaction or removal moved the records meanwhile: look them up again.
                continue;
            }
            // The index did not change and the first record does not read back: it is damaged
            // on disk. Skip it, counted.
            self.stats
                .dropped_corrupt_lines
                .fetch_add(bad.lines as u64, Relaxed);
            error!(
                seq = bad.seq,
                lines = bad.lines,
                "telemetry log: a record is damaged on disk; its lines are lost"
            );
            return Ok(Some(Chunk {
                body: String::new(),
                lines: 0,
                next_seq: bad.seq + 1,
            }));
        }
    }

    /// Moves the forward cursor to `next` (after a 2xx for everything below it).
    pub fn advance(&self, next: u64) {
        let mut st = self.lock();
        if next <= st.cursor {
            return;
        }
        let (mut bytes, mut lines) = (0u64, 0u64);
        let from = st.cursor;
        for seg in &st.segments {
            if seg.last_seq().is_none_or(|l| l < from) {
                continue;
            }
            let start = seg.records.partition_point(|m| m.seq < from);
            for m in &seg.records[start..] {
                if m.seq >= next {
                    break;
                }
                bytes += m.total();
                lines += m.lines as u64;
            }
        }
        st.cursor = next;
        st.backlog_bytes = st.backlog_bytes.saturating_sub(bytes);
        st.backlog_lines = st.backlog_lines.saturating_sub(lines);
        self.stats.forwarded_bytes.fetch_add(bytes, Relaxed);
        self.publish_gauges(&st);
    }

    /// Writes the cursor to disk (atomically) if it moved since the last time. Blocking.
    pub fn persist_cursor(&self) -> io::Result<()> {
        let cursor = self.cursor();
        let mut saved = self.cursor_file.lock().unwrap_or_else(|p| p.into_inner());
        if *saved == cursor {
            return Ok(());
        }
        write_cursor(&self.cfg.dir, cursor)?;
        *saved = cursor;
        Ok(())
    }

    /// Samples of one asset from the log (forwarded or not), oldest first, at most `limit`;
    /// the flag says whether more matched. Blocking (reads files).
    pub fn history(
        &self,
        asset: &str,
        point: Option<&str>,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> io::Result<(Vec<HistorySample>, bool)> {
        let plan: Vec<(PathBuf, Meta)> = {
            let st = self.lock();
            st.segments
                .iter()
                .flat_map(|s| s.records.iter().map(move |m| (s, m)))
                .filter(|(_, m)| m.max_ts >= from_ns && m.min_ts <= to_ns)
                .map(|(s, m)| (s.path.clone(), m.clone()))
                .collect()
        };
        let mut out = Vec::new();
        let mut file: Option<(PathBuf, File)> = None;
        for (path, m) in plan {
            if file.as_ref().is_none_or(|(p, _)| *p != path) {
                match File::open(&path) {
                    Ok(f) => file = Some((path.clone(), f)),
                    // Removed meanwhile (retention, bound): that history is gone.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            let Some((_, f)) = &file else { continue };
            let mut buf = vec![0u8; m.total() as usize];
            if f.read_exact_at(&mut buf, m.offset).is_err()
                || !matches!(decode_record(&buf), Ok(Some((h, _))) if h.seq == m.seq)
            {
                continue;
            }
            let text = String::from_utf8_lossy(&buf[HEADER_LEN..]);
            collect_history(&text, asset, point, from_ns, to_ns, &mut out);
            if out.len() > 2 * limit + 1 {
                // Bounded memory: only the oldest `limit` (and one, to tell there is more)
                // can be in the answer.
                sort_samples(&mut out);
                out.truncate(limit + 1);
            }
        }
        sort_samples(&mut out);
        let more = out.len() > limit;
        out.truncate(limit);
        Ok((out, more))
    }

    /// Starts the writer thread. Appends go through the returned handle.
    pub fn start_writer(self: &Arc<Self>) -> io::Result<LogAppender> {
        let (tx, rx) = flume::bounded::<Cmd>(16);
        let mut writer = Writer::new(self.clone())?;
        self.stats.writer_running.store(1, Relaxed);
        let stats = self.stats.clone();
        let thread = std::thread::Builder::new()
            .name("telemetry-log".into())
            .spawn(move || {
                // Down when the thread ends, by return or by panic.
                struct Running(Arc<LogStats>);
                impl Drop for Running {
                    fn drop(&mut self) {
                        self.0.writer_running.store(0, Relaxed);
                    }
                }
                let _running = Running(stats);
                writer.run(rx)
            })?;
        Ok(LogAppender {
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }
}

fn sort_samples(v: &mut [HistorySample]) {
    v.sort_by(|a, b| a.time_ns.cmp(&b.time_ns).then(a.point.cmp(&b.point)));
}

/// The first record at or after `seq`.
fn find_from(st: &State, seq: u64) -> Option<&Meta> {
    st.segments
        .iter()
        .filter(|s| s.last_seq().is_some_and(|l| l >= seq))
        .find_map(|s| {
            let i = s.records.partition_point(|m| m.seq < seq);
            s.records.get(i)
        })
}

fn collect_history(
    text: &str,
    asset: &str,
    point: Option<&str>,
    from_ns: i64,
    to_ns: i64,
    out: &mut Vec<HistorySample>,
) {
    use influxdb_line_protocol::FieldValue;
    for line in influxdb_line_protocol::parse_lines(text).flatten() {
        let Some(ts) = line.timestamp else { continue };
        if ts < from_ns || ts > to_ns {
            continue;
        }
        let is_asset = line
            .series
            .tag_set
            .as_ref()
            .is_some_and(|tags| tags.iter().any(|(k, v)| &**k == "asset" && &**v == asset));
        // Work-order events carry an `asset` tag too, but they are not samples of a point.
        if !is_asset || &*line.series.measurement == "work_order" {
            continue;
        }
        for (k, v) in &line.field_set {
            let name: &str = k;
            if point.is_some_and(|p| p != name) {
                continue;
            }
            let value = match v {
                FieldValue::I64(i) => serde_json::json!(i),
                FieldValue::U64(u) => serde_json::json!(u),
                FieldValue::F64(f) => serde_json::json!(f),
                FieldValue::String(s) => serde_json::json!(s.to_string()),
                FieldValue::Boolean(b) => serde_json::json!(b),
            };
            out.push(HistorySample {
                time_ns: ts,
                point: name.to_string(),
                value,
            });
        }
    }
}

fn read_cursor(path: &Path) -> io::Result<Option<u64>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() != 12 || CRC.checksum(&bytes[..8]) != u32_at(&bytes, 8) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "cursor file is damaged",
        ));
    }
    Ok(Some(u64_at(&bytes, 0)))
}

fn write_cursor(dir: &Path, cursor: u64) -> io::Result<()> {
    let mut bytes = cursor.to_le_bytes().to_vec();
    bytes.extend_from_slice(&CRC.checksum(&bytes).to_le_bytes());
    let tmp = dir.join("cursor.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join("cursor"))?;
    sync_dir(dir)
}

/// The error of a rotation whose sync failed (already reported and handled).
#[derive(Debug)]
struct SyncFailed;

impl std::fmt::Display for SyncFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the telemetry log's sync failed")
    }
}

impl std::error::Error for SyncFailed {}

/// One batch for the log: line protocol of one class.
#[derive(Debug, Clone)]
pub struct Part {
    pub class: Class,
    pub body: String,
    pub lines: u32,
    pub min_ts: i64,
    pub max_ts: i64,
}

struct Cmd {
    parts: Vec<Part>,
    /// Fired once every part is synced.
    acks: Vec<Ack>,
}

impl Cmd {
    fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.body.len()).sum()
    }
}

/// The async side of the log: appends batches, waits when the writer is behind.
#[derive(Clone)]
pub struct LogAppender {
    tx: flume::Sender<Cmd>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl LogAppender {
    /// Hands batches to the writer; `acks` fire once they are synced. Waits while the writer's
    /// queue is full (the disk is slower than the input); fails only once the writer is gone.
    pub async fn append(&self, parts: Vec<Part>, acks: Vec<Ack>) -> Result<(), String> {
        if parts.is_empty() && acks.is_empty() {
            return Ok(());
        }
        self.tx
            .send_async(Cmd { parts, acks })
            .await
            .map_err(|_| "the telemetry log writer has stopped".to_string())
    }

    /// Closes this handle; once every clone is closed the writer syncs what it has and stops.
    /// Waits for the thread (blocking: call from `spawn_blocking`).
    pub fn close_and_join(self) {
        let LogAppender { tx, thread } = self;
        drop(tx);
        let handle = thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            error!("the telemetry log writer panicked");
        }
    }
}

/// The writer thread's state.
struct Writer {
    log: Arc<TelemetryLog>,
    file: File,
    active_bytes: u64,
    active_id: u64,
    buf: Vec<u8>,
    /// Acks waiting for the sync of records below the sequence number.
    acks: Vec<(u64, Ack)>,
    unsynced_since: Option<Instant>,
    /// Batches the disk refused, retried every second.
    retry: VecDeque<Cmd>,
    retry_bytes: usize,
    last_retry: Instant,
    last_housekeeping: Instant,
    log_limit: LogLimiter,
    next_seq: u64,
    /// What was appended since the last good sync, kept to be written again if the sync fails
    /// (the kernel may have dropped those pages and report the next sync as good).
    unsynced: Vec<Part>,
    /// Unsynced batches taken back after a failed sync, to go first into the retry queue.
    recovered: Option<Cmd>,
    /// Write the next record into a new segment (the active one cannot be trusted).
    rotate_next: bool,
}

impl Writer {
    fn new(log: Arc<TelemetryLog>) -> io::Result<Self> {
        let (id, next_seq) = {
            let st = log.lock();
            (st.segments.back().map_or(1, |s| s.id + 1), st.next_seq)
        };
        let (file, path) = create_segment(&log.cfg.dir, id)?;
        {
            let mut st = log.lock();
            st.segments.push_back(Segment {
                id,
                path,
                bytes: FILE_MAGIC.len() as u64,
                records: Vec::new(),
                opened: Instant::now(),
            });
            st.total_bytes += FILE_MAGIC.len() as u64;
            log.publish_gauges(&st);
        }
        Ok(Writer {
            log,
            file,
            active_bytes: FILE_MAGIC.len() as u64,
            active_id: id,
            buf: Vec::with_capacity(1 << 20),
            acks: Vec::new(),
            unsynced_since: None,
            retry: VecDeque::new(),
            retry_bytes: 0,
            last_retry: Instant::now(),
            last_housekeeping: Instant::now(),
            log_limit: LogLimiter::new(Duration::from_secs(10)),
            next_seq,
            unsynced: Vec::new(),
            recovered: None,
            rotate_next: false,
        })
    }

    fn run(&mut self, rx: flume::Receiver<Cmd>) {
        let interval = self.log.cfg.fsync_interval;
        loop {
            let wait = match self.unsynced_since {
                Some(t) => (t + interval).saturating_duration_since(Instant::now()),
                None if !self.retry.is_empty() => Duration::from_secs(1),
                None => HOUSEKEEPING,
            };
            match rx.recv_timeout(wait) {
                Ok(cmd) => {
                    self.submit(cmd);
                    // Whatever else is queued joins this group commit, up to its deadline:
                    // a steady stream must not hold the sync back.
                    while self.unsynced_since.is_none_or(|t| t.elapsed() < interval) {
                        match rx.try_recv() {
                            Ok(cmd) => self.submit(cmd),
                            Err(_) => break,
                        }
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => break,
            }
            if self.unsynced_since.is_some_and(|t| t.elapsed() >= interval) {
                self.commit();
            }
            // Whatever a failed sync took back goes first into the retry queue.
            self.requeue_recovered();
            if !self.retry.is_empty() && self.last_retry.elapsed() >= Duration::from_secs(1) {
                self.last_retry = Instant::now();
                self.retry_pending();
            }
            if self.last_housekeeping.elapsed() >= HOUSEKEEPING {
                self.last_housekeeping = Instant::now();
                self.housekeeping();
            }
        }
        // Closing: write what is left, once, and sync.
        self.retry_pending();
        self.commit();
        self.requeue_recovered();
        let dropped: u64 = self
            .retry
            .iter()
            .flat_map(|c| c.parts.iter())
            .map(|p| p.lines as u64)
            .sum();
        if dropped > 0 {
            self.log
                .stats
                .dropped_disk_lines
                .fetch_add(dropped, Relaxed);
            error!(
                lines = dropped,
                "telemetry log: stopping with batches the disk refused; they are lost"
            );
        }
    }

    fn submit(&mut self, cmd: Cmd) {
        // Batches a failed sync took back come before this one.
        self.requeue_recovered();
        if !self.retry.is_empty() {
            self.queue_retry(cmd);
            return;
        }
        if let Err((cmd, e)) = self.write_cmd(cmd) {
            self.disk_failed(&e);
            self.queue_retry(cmd);
        }
        self.requeue_recovered();
    }

    /// Puts the batches a failed sync took back at the head of the retry queue: they were
    /// appended before anything waiting there.
    fn requeue_recovered(&mut self) {
        if let Some(r) = self.recovered.take() {
            self.retry_bytes += r.bytes();
            self.retry.push_front(r);
        }
    }

    /// Writes every part of `cmd`; on failure returns what is left of it.
    fn write_cmd(&mut self, mut cmd: Cmd) -> Result<(), (Cmd, io::Error)> {
        while !cmd.parts.is_empty() {
            let part = cmd.parts.remove(0);
            match self.write_part(&part) {
                // Kept (not copied) until the sync: a failed one writes it again.
                Ok(true) => self.unsynced.push(part),
                Ok(false) => {}
                Err(e) => {
                    cmd.parts.insert(0, part);
                    return Err((cmd, e));
                }
            }
        }
        if self.unsynced_since.is_none() {
            // Everything before these acks is synced already.
            for a in cmd.acks {
                a.fire();
            }
        } else {
            for a in cmd.acks {
                self.acks.push((self.next_seq, a));
            }
        }
        if self.log.lock().total_bytes > self.log.cfg.max_bytes {
            self.enforce_bound();
        }
        Ok(())
    }

    /// Appends one record; false when there was nothing to append.
    fn write_part(&mut self, part: &Part) -> io::Result<bool> {
        if part.lines == 0 || part.body.is_empty() {
            return Ok(false);
        }
        let seg_bytes = self.log.cfg.segment_bytes();
        let rec_len = (HEADER_LEN + part.body.len()) as u64;
        if self.rotate_next
            || (self.active_bytes > FILE_MAGIC.len() as u64
                && self.active_bytes + rec_len > seg_bytes)
        {
            self.rotate()?;
        }
        let h = RecordHeader {
            seq: self.next_seq,
            len: part.body.len() as u32,
            lines: part.lines,
            class: part.class,
            min_ts: part.min_ts,
            max_ts: part.max_ts,
            appended_ms: now_ms(),
        };
        self.buf.clear();
        encode_record(&h, part.body.as_bytes(), &mut self.buf);
        // At the record's own offset: a write the disk refused halfway leaves the file
        // position anywhere, and the next record must still land where the index says.
        if let Err(e) = self.file.write_all_at(&self.buf, self.active_bytes) {
            // Cut what part of the record made it, so the file ends on a record boundary; a
            // file that cannot even be cut is left for a new one.
            if self.file.set_len(self.active_bytes).is_err() {
                self.rotate_next = true;
            }
            return Err(e);
        }
        let meta = Meta::new(&h, self.active_bytes);
        self.active_bytes += rec_len;
        self.next_seq += 1;
        self.unsynced_since.get_or_insert_with(Instant::now);
        let stats = &self.log.stats;
        stats.appended_lines.fetch_add(h.lines as u64, Relaxed);
        stats.appended_bytes.fetch_add(rec_len, Relaxed);
        let mut st = self.log.lock();
        if let Some(seg) = st.segments.back_mut() {
            seg.records.push(meta);
            seg.bytes = self.active_bytes;
        }
        st.next_seq = self.next_seq;
        st.total_bytes += rec_len;
        st.backlog_bytes += rec_len;
        st.backlog_lines += h.lines as u64;
        self.log.publish_gauges(&st);
        Ok(true)
    }

    /// Syncs the active segment: everything appended is accepted now. False when the sync
    /// failed: the unsynced batches are then taken back (see [`Writer::abandon_unsynced`]).
    fn commit(&mut self) -> bool {
        if self.unsynced_since.is_none() {
            return true;
        }
        if let Err(e) = self.file.sync_data() {
            self.disk_failed(&e);
            self.abandon_unsynced();
            return false;
        }
        self.unsynced_since = None;
        self.unsynced.clear();
        self.log.stats.fsyncs.fetch_add(1, Relaxed);
        let synced = self.next_seq;
        {
            let mut st = self.log.lock();
            st.synced = synced;
            if !self.log.cfg.forwarding {
                drop(st);
                self.log.advance(synced);
            }
        }
        self.log.synced_tx.send_replace(synced);
        let acks = std::mem::take(&mut self.acks);
        for (seq, a) in acks {
            if seq <= synced {
                a.fire();
            } else {
                self.acks.push((seq, a));
            }
        }
        if self.retry.is_empty() && self.log.stats.disk_failing.swap(0, Relaxed) == 1 {
            info!("telemetry log: the disk takes writes again");
        }
        true
    }

    /// After a failed sync, nothing appended since the last good one can be trusted: Linux may
    /// have dropped those pages and report the next sync as good. The records leave the index
    /// (nobody has read them: the forwarder reads synced records only), the file is cut back,
    /// and the batches, kept in memory, are written again into a new segment by the retry
    /// path; their acks wait for that.
    fn abandon_unsynced(&mut self) {
        let parts = std::mem::take(&mut self.unsynced);
        let acks: Vec<Ack> = std::mem::take(&mut self.acks)
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        let mut cut_to = self.active_bytes;
        {
            let mut st = self.log.lock();
            let first = st.synced;
            let (mut bytes, mut lines) = (0u64, 0u64);
            if let Some(seg) = st.segments.back_mut() {
                let keep = seg.records.partition_point(|m| m.seq < first);
                if let Some(m) = seg.records.get(keep) {
                    cut_to = m.offset;
                }
                for m in seg.records.split_off(keep) {
                    bytes += m.total();
                    lines += m.lines as u64;
                }
                seg.bytes = seg.bytes.saturating_sub(bytes);
            }
            st.total_bytes = st.total_bytes.saturating_sub(bytes);
            st.backlog_bytes = st.backlog_bytes.saturating_sub(bytes);
            st.backlog_lines = st.backlog_lines.saturating_sub(lines);
            st.generation += 1;
            self.log.publish_gauges(&st);
        }
        let _ = self.file.set_len(cut_to);
        self.active_bytes = cut_to;
        self.rotate_next = true;
        self.unsynced_since = None;
        if !parts.is_empty() || !acks.is_empty() {
            let mut cmd = Cmd { parts, acks };
            if let Some(r) = self.recovered.take() {
                cmd.parts.extend(r.parts);
                cmd.acks.extend(r.acks);
            }
            self.recovered = Some(cmd);
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        // The closing segment's records are synced (accepted) first.
        if !self.commit() {
            return Err(io::Error::other(SyncFailed));
        }
        let id = self.active_id + 1;
        let (file, path) = create_segment(&self.log.cfg.dir, id)?;
        self.file = file;
        self.active_id = id;
        self.active_bytes = FILE_MAGIC.len() as u64;
        self.rotate_next = false;
        let mut st = self.log.lock();
        st.segments.push_back(Segment {
            id,
            path,
            bytes: self.active_bytes,
            records: Vec::new(),
            opened: Instant::now(),
        });
        st.total_bytes += self.active_bytes;
        self.log.publish_gauges(&st);
        Ok(())
    }

    fn disk_failed(&mut self, e: &io::Error) {
        if e.get_ref().is_some_and(|inner| inner.is::<SyncFailed>()) {
            // Reported where the sync failed.
            return;
        }
        self.log.stats.write_errors.fetch_add(1, Relaxed);
        self.log.stats.disk_failing.store(1, Relaxed);
        if let Some(held) = self.log_limit.allow() {
            error!(error = %e, dir = %self.log.cfg.dir.display(), suppressed = held, "telemetry log: the disk refuses writes; keeping batches in memory and retrying (polling goes on)");
        }
        // A full disk (or quota, or file-size limit): room may come from forwarded history.
        // Not on any other error: the history API would lose it for nothing.
        let full = matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge
        ) || matches!(e.raw_os_error(), Some(27 | 28 | 122));
        if full {
            self.evict_history(true);
        }
    }

    fn queue_retry(&mut self, cmd: Cmd) {
        self.retry_bytes += cmd.bytes();
        self.retry.push_back(cmd);
        let mut dropped = 0u64;
        while self.retry_bytes > RETRY_MAX_BYTES && self.retry.len() > 1 {
            if let Some(old) = self.retry.pop_front() {
                self.retry_bytes -= old.bytes();
                dropped += old.parts.iter().map(|p| p.lines as u64).sum::<u64>();
                // Its acks are dropped unfired: those MQTT messages come again.
            }
        }
        if dropped > 0 {
            self.log
                .stats
                .dropped_disk_lines
                .fetch_add(dropped, Relaxed);
            if let Some(held) = self.log_limit.allow() {
                error!(
                    lines = dropped,
                    suppressed = held,
                    "telemetry log: the disk has refused writes for too long; dropped the oldest waiting lines"
                );
            }
        }
    }

    fn retry_pending(&mut self) {
        self.commit();
        self.requeue_recovered();
        while let Some(cmd) = self.retry.pop_front() {
            self.retry_bytes -= cmd.bytes();
            if let Err((cmd, e)) = self.write_cmd(cmd) {
                self.disk_failed(&e);
                self.retry_bytes += cmd.bytes();
                self.retry.push_front(cmd);
                self.requeue_recovered();
                return;
            }
            self.requeue_recovered();
        }
    }

    fn housekeeping(&mut self) {
        // Rotate an old active segment so that retention can remove it later.
        let old_active = {
            let st = self.log.lock();
            st.segments
                .back()
                .is_some_and(|s| !s.records.is_empty() && s.opened.elapsed() >= SEGMENT_MAX_AGE)
        };
        if old_active {
            if let Err(e) = self.rotate() {
                self.disk_failed(&e);
            }
            self.requeue_recovered();
        }
        self.expire_history();
    }

    /// Removes forwarded segments older than `history_retention`.
    fn expire_history(&mut self) {
        let limit = now_ms()
            .saturating_sub(self.log.cfg.retention.as_millis().min(i64::MAX as u128) as i64);
        let mut removed = Vec::new();
        {
            let mut st = self.log.lock();
            while st.segments.len() > 1 {
                let Some(first) = st.segments.front() else {
                    break;
                };
                let forwarded = first.last_seq().is_none_or(|l| l < st.cursor);
                let old = first.records.last().is_none_or(|m| m.appended_ms < limit);
                if !(forwarded && old) {
                    break;
                }
                if let Some(seg) = st.segments.pop_front() {
                    st.total_bytes = st.total_bytes.saturating_sub(seg.bytes);
                    st.generation += 1;
                    self.log
                        .stats
                        .history_expired_bytes
                        .fetch_add(seg.bytes, Relaxed);
                    removed.push(seg.path);
                }
            }
            self.log.publish_gauges(&st);
        }
        for p in removed {
            if let Err(e) = fs::remove_file(&p) {
                warn!(file = %p.display(), error = %e, "telemetry log: cannot remove an expired segment");
            }
        }
    }

    /// Removes whole forwarded segments, oldest first: until the log is under its bound, or
    /// `all` of them (the disk is full).
    fn evict_history(&mut self, all: bool) {
        let mut removed = Vec::new();
        let mut freed = 0u64;
        {
            let mut st = self.log.lock();
            while all || st.total_bytes > self.log.cfg.max_bytes {
                // Never the active segment (the last one).
                if st.segments.len() < 2 {
                    break;
                }
                let Some(first) = st.segments.front() else {
                    break;
                };
                if first.last_seq().is_some_and(|l| l >= st.cursor) {
                    break;
                }
                if let Some(seg) = st.segments.pop_front() {
                    st.total_bytes = st.total_bytes.saturating_sub(seg.bytes);
                    st.generation += 1;
                    freed += seg.bytes;
                    removed.push(seg.path);
                }
            }
            self.log.publish_gauges(&st);
        }
        if freed > 0 {
            self.log
                .stats
                .history_evicted_bytes
                .fetch_add(freed, Relaxed);
            info!(
                bytes = freed,
                "telemetry log: removed forwarded history to make room"
            );
        }
        for p in removed {
            if let Err(e) = fs::remove_file(&p) {
                warn!(file = %p.display(), error = %e, "telemetry log: cannot remove a segment");
            }
        }
    }

    /// Brings the log under `log_max_bytes`: forwarded history first, then the oldest
    /// unforwarded bulk lines, then the oldest priority lines. Every drop is counted and logged.
    fn enforce_bound(&mut self) {
        let max = self.log.cfg.max_bytes;
        self.evict_history(false);
        if self.log.lock().total_bytes > max && self.compact_bulk() {
            // Still over: the active segment may hold the bulk lines left; close it so it can
            // be compacted too, rather than drop priority lines before them.
            let active_has_bulk = {
                let st = self.log.lock();
                st.total_bytes > max
                    && st.segments.back().is_some_and(|s| {
                        s.records
                            .iter()
                            .any(|m| m.seq < st.cursor || m.class == Class::Bulk)
                    })
            };
            // Only once the active segment is worth it: rotating a small one on every append
            // would make a new file (and half a dozen syncs) per batch.
            if active_has_bulk && self.active_bytes >= self.log.cfg.segment_bytes() / 2 {
                match self.rotate() {
                    Ok(()) => {
                        self.compact_bulk();
                    }
                    Err(e) => self.disk_failed(&e),
                }
            }
        }
        // Bulk lines still in a small active segment are dropped once it is worth closing;
        // until then the log may exceed its bound by up to half a segment rather than lose
        // priority lines before them.
        let slack = {
            let st = self.log.lock();
            let active_bulk = st.segments.back().is_some_and(|s| {
                s.records
                    .iter()
                    .any(|m| m.seq >= st.cursor && m.class == Class::Bulk)
            });
            if active_bulk {
                self.log.cfg.segment_bytes() / 2
            } else {
                0
            }
        };
        if self.log.lock().total_bytes <= max.saturating_add(slack) {
            return;
        }
        // Last resort: whole closed segments, oldest first, whatever they carry.
        let (mut prio, mut bulk) = (0u64, 0u64);
        let mut removed = Vec::new();
        {
            let mut st = self.log.lock();
            while st.total_bytes > max.saturating_add(slack) && st.segments.len() > 1 {
                let Some(seg) = st.segments.pop_front() else {
                    break;
                };
                st.total_bytes = st.total_bytes.saturating_sub(seg.bytes);
                st.generation += 1;
                let (cursor, inflight) = (st.cursor, st.inflight_end);
                for m in seg.records.iter().filter(|m| m.seq >= cursor) {
                    // In the forwarder's hands: delivered by it, not dropped.
                    if m.seq >= inflight {
                        match m.class {
                            Class::Priority => prio += m.lines as u64,
                            Class::Bulk => bulk += m.lines as u64,
                        }
                    }
                    st.backlog_bytes = st.backlog_bytes.saturating_sub(m.total());
                    st.backlog_lines = st.backlog_lines.saturating_sub(m.lines as u64);
                }
                removed.push(seg.path);
            }
            self.log.publish_gauges(&st);
        }
        for p in removed {
            let _ = fs::remove_file(&p);
        }
        let stats = &self.log.stats;
        stats.dropped_bulk_lines.fetch_add(bulk, Relaxed);
        stats.dropped_priority_lines.fetch_add(prio, Relaxed);
        if prio + bulk > 0 {
            warn!(
                priority_lines = prio,
                bulk_lines = bulk,
                max_bytes = max,
                "telemetry log full: dropped the oldest segments whole, alarm, state and event lines too (bulk lines could not be dropped first)"
            );
        }
    }

    /// Compacts closed segments, oldest first, until the log is under its bound. False when
    /// the disk refused.
    fn compact_bulk(&mut self) -> bool {
        let ids: Vec<u64> = {
            let st = self.log.lock();
            let closed = st.segments.len().saturating_sub(1);
            st.segments
                .iter()
                .take(closed)
                .filter(|seg| {
                    seg.records
                        .iter()
                        .any(|m| m.seq < st.cursor || m.class == Class::Bulk)
                })
                .map(|seg| seg.id)
                .collect()
        };
        for id in ids {
            if self.log.lock().total_bytes <= self.log.cfg.max_bytes {
                break;
            }
            if let Err(e) = self.compact(id) {
                self.disk_failed(&e);
                return false;
            }
        }
        true
    }

    /// Rewrites segment `id` without its forwarded and its bulk records.
    fn compact(&mut self, id: u64) -> io::Result<()> {
        let (path, metas, cursor, inflight) = {
            let st = self.log.lock();
            let Some(seg) = st.segments.iter().find(|s| s.id == id) else {
                return Ok(());
            };
            (
                seg.path.clone(),
                seg.records.clone(),
                st.cursor,
                st.inflight_end,
            )
        };
        let src = File::open(&path)?;
        let mut out = FILE_MAGIC.to_vec();
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for m in &metas {
            // Forwarded history goes, and bulk lines the forwarder is not writing right now.
            if m.seq < cursor || (m.class == Class::Bulk && m.seq >= inflight) {
                dropped.push(m);
                continue;
            }
            let mut buf = vec![0u8; m.total() as usize];
            src.read_exact_at(&mut buf, m.offset)?;
            let mut k = m.clone();
            k.offset = out.len() as u64;
            out.extend_from_slice(&buf);
            kept.push(k);
        }
        let new_len = out.len() as u64;
        let removed_all = kept.is_empty();
        let tmp = path.with_extension("tmp");
        if !removed_all {
            let written = File::create(&tmp).and_then(|mut f| {
                f.write_all(&out)?;
                f.sync_all()
            });
            if let Err(e) = written {
                // A full disk must not be made fuller by what was meant to free it.
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        let (mut bulk_lines, mut history_bytes) = (0u64, 0u64);
        {
            // The file and the index change together, under the lock: a reader either planned
            // before (and reads the old file it has open, or finds the generation changed) or
            // plans after.
            let mut st = self.log.lock();
            if !removed_all && let Err(e) = fs::rename(&tmp, &path) {
                drop(st);
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            // The forwarder may have moved on during the rewrite: what it wrote meanwhile is
            // history, not a drop (and is off the backlog already); what it has taken into
            // memory since is delivered by it, not dropped (but leaves the backlog here, as
            // its cursor will not find it in the index).
            let (cursor_now, inflight_now) = (st.cursor, st.inflight_end);
            let (mut backlog_bytes, mut backlog_lines, mut old_bytes) = (0u64, 0u64, 0u64);
            for m in dropped {
                if m.seq < cursor_now {
                    history_bytes += m.total();
                    continue;
                }
                backlog_bytes += m.total();
                backlog_lines += m.lines as u64;
                if m.seq >= inflight_now {
                    bulk_lines += m.lines as u64;
                }
            }
            if removed_all {
                if let Some(pos) = st.segments.iter().position(|s| s.id == id) {
                    old_bytes = st.segments.remove(pos).map_or(0, |s| s.bytes);
                }
                st.total_bytes = st.total_bytes.saturating_sub(old_bytes);
            } else if let Some(seg) = st.segments.iter_mut().find(|s| s.id == id) {
                old_bytes = seg.bytes;
                seg.bytes = new_len;
                seg.records = kept;
                st.total_bytes = st.total_bytes.saturating_sub(old_bytes) + new_len;
            }
            st.backlog_bytes = st.backlog_bytes.saturating_sub(backlog_bytes);
            st.backlog_lines = st.backlog_lines.saturating_sub(backlog_lines);
            st.generation += 1;
            self.log.publish_gauges(&st);
        }
        if removed_all {
            // Out of the index first: a reader finds the file gone and the generation changed.
            if let Err(e) = fs::remove_file(&path) {
                warn!(file = %path.display(), error = %e, "telemetry log: cannot remove a compacted segment");
            }
        }
        sync_dir(&self.log.cfg.dir)?;
        let stats = &self.log.stats;
        stats
            .history_evicted_bytes
            .fetch_add(history_bytes, Relaxed);
        if bulk_lines > 0 {
            stats.dropped_bulk_lines.fetch_add(bulk_lines, Relaxed);
            warn!(
                lines = bulk_lines,
                max_bytes = self.log.cfg.max_bytes,
                "telemetry log full: dropped the oldest unforwarded bulk lines (alarm, state and event lines kept)"
            );
        }
        Ok(())
    }
}

fn create_segment(dir: &Path, id: u64) -> io::Result<(File, PathBuf)> {
    let path = segment_path(dir, id);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .append(false)
        .open(&path)?;
    f.write_all(FILE_MAGIC)?;
    f.sync_data()?;
    sync_dir(dir)?;
    Ok((f, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u64) -> RecordHeader {
        RecordHeader {
            seq,
            len: 0,
            lines: 1,
            class: Class::Bulk,
            min_ts: 1,
            max_ts: 2,
            appended_ms: 3,
        }
    }

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

    fn cfg(dir: &Path, max_bytes: u64, forwarding: bool) -> LogConfig {
        LogConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            fsync_interval: Duration::from_millis(5),
            retention: Duration::from_secs(3600),
            forwarding,
        }
    }

    fn part(class: Class, tag: &str, from: usize, n: usize) -> Part {
        let body: String = (from..from + n)
            .map(|i| format!("m,asset={tag} v={i}i {}\n", 1_000 + i))
            .collect();
        Part {
            class,
            body,
            lines: n as u32,
            min_ts: 1_000 + from as i64,
            max_ts: 1_000 + (from + n) as i64 - 1,
        }
    }

    async fn close(app: LogAppender) {
        tokio::task::spawn_blocking(move || app.close_and_join())
            .await
            .unwrap();
    }

    fn read_all(log: &TelemetryLog, from: u64) -> (String, u64) {
        let mut body = String::new();
        let mut at = from;
        while let Some(c) = log.read_chunk(at, 1000).unwrap() {
            body.push_str(&c.body);
            at = c.next_seq;
        }
        (body, at)
    }

    #[tokio::test]
    async fn appended_records_survive_a_reopen_and_acks_wait_for_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (log, rec) =
            TelemetryLog::open(cfg(dir.path(), 1 << 20, true), Default::default()).unwrap();
        assert_eq!(rec.records, 0);
        let app = log.start_writer().unwrap();
        let (ack, done) = Ack::new();
        app.append(
            vec![
                part(Class::Bulk, "a", 0, 3),
                part(Class::Priority, "a", 3, 2),
            ],
            vec![ack],
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("ack not fired")
            .expect("ack dropped");
        // The ack fired: both records are synced and readable.
        let (body, next) = read_all(&log, log.cursor());
        assert_eq!(body.lines().count(), 5);
        log.advance(next);
        log.persist_cursor().unwrap();
        app.append(vec![part(Class::Bulk, "a", 5, 4)], Vec::new())
            .await
            .unwrap();
        close(app).await;
        drop(log);

        let (log, rec) =
            TelemetryLog::open(cfg(dir.path(), 1 << 20, true), Default::default()).unwrap();
        assert_eq!(rec.records, 3);
        assert!(rec.cuts.is_empty());
        assert_eq!(
            rec.backlog_lines, 4,
            "only the unforwarded record is backlog"
        );
        let (body, _) = read_all(&log, log.cursor());
        assert_eq!(body, part(Class::Bulk, "a", 5, 4).body);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_at_start_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) =
            TelemetryLog::open(cfg(dir.path(), 1 << 20, true), Default::default()).unwrap();
        let app = log.start_writer().unwrap();
        for i in 0..3 {
            app.append(vec![part(Class::Bulk, "a", i * 10, 10)], Vec::new())
                .await
                .unwrap();
        }
        close(app).await;
        drop(log);
        let seg = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == SEGMENT_EXT))
            .unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        // A crash in the middle of the third record.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 7)
            .unwrap();
        let stats = Arc::new(LogStats::default());
        let (log, rec) = TelemetryLog::open(cfg(dir.path(), 1 << 20, true), stats.clone()).unwrap();
        assert_eq!(rec.cuts.len(), 1);
        assert_eq!(rec.records, 2);
        assert_eq!(stats.recovery_cuts.load(Relaxed), 1);
        let (body, _) = read_all(&log, log.cursor());
        assert_eq!(body.lines().count(), 20);
        // Appending goes on after the cut, with fresh sequence numbers.
        let app = log.start_writer().unwrap();
        app.append(vec![part(Class::Bulk, "a", 30, 1)], Vec::new())
            .await
            .unwrap();
        close(app).await;
        let (body, _) = read_all(&log, log.cursor());
        assert_eq!(body.lines().count(), 21);
    }

    #[tokio::test]
    async fn a_full_log_drops_history_then_bulk_and_keeps_priority_lines() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(LogStats::default());
        let max = 64 << 10;
        let (log, _) = TelemetryLog::open(cfg(dir.path(), max, true), stats.clone()).unwrap();
        let app = log.start_writer().unwrap();
        // Some forwarded history first.
        app.append(vec![part(Class::Bulk, "h", 0, 50)], Vec::new())
            .await
            .unwrap();
        let (ack, done) = Ack::new();
        app.append(Vec::new(), vec![ack]).await.unwrap();
        done.await.unwrap();
        let (_, next) = read_all(&log, log.cursor());
        log.advance(next);
        // Then far more than the bound, never forwarded (the database is down).
        let mut prio_lines = 0;
        for i in 0..400 {
            let mut parts = vec![part(Class::Bulk, "b", i * 20, 20)];
            if i % 4 == 0 {
                parts.push(part(Class::Priority, "p", i, 1));
                prio_lines += 1;
            }
            app.append(parts, Vec::new()).await.unwrap();
        }
        close(app).await;
        let seg = log.cfg.segment_bytes();
        assert!(
            stats.bytes.load(Relaxed) <= max + seg,
            "{} bytes over the bound {max}",
            stats.bytes.load(Relaxed)
        );
        assert!(stats.history_evicted_bytes.load(Relaxed) > 0);
        assert!(stats.dropped_bulk_lines.load(Relaxed) > 0);
        assert_eq!(stats.dropped_priority_lines.load(Relaxed), 0);
        let (body, _) = read_all(&log, log.cursor());
        let kept_prio = body.lines().filter(|l| l.contains("asset=p")).count();
        assert_eq!(kept_prio, prio_lines, "every priority line kept");
        assert!(!body.contains("asset=h"), "history went first");
        // What is left of the bulk lines is the newest, in order.
        let bulk: Vec<i64> = body
            .lines()
            .filter(|l| l.contains("asset=b"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(bulk.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*bulk.last().unwrap(), 1_000 + 400 * 20 - 1);
        let dropped = stats.dropped_bulk_lines.load(Relaxed);
        assert_eq!(
            dropped as usize + bulk.len(),
            400 * 20,
            "every drop counted"
        );
    }

    #[tokio::test]
    async fn history_reads_one_asset_and_point_in_a_time_range() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) =
            TelemetryLog::open(cfg(dir.path(), 1 << 20, false), Default::default()).unwrap();
        let app = log.start_writer().unwrap();
        app.append(
            vec![
                part(Class::Bulk, "a", 0, 10),
                part(Class::Bulk, "b", 0, 10),
                Part {
                    class: Class::Priority,
                    body: "work_order,asset=a id=1i 1003\nm,asset=a on=true 1004\n".into(),
                    lines: 2,
                    min_ts: 1003,
                    max_ts: 1004,
                },
            ],
            Vec::new(),
        )
        .await
        .unwrap();
        close(app).await;
        let (got, more) = log.history("a", Some("v"), 1_002, 1_005, 100).unwrap();
        let times: Vec<i64> = got.iter().map(|h| h.time_ns).collect();
        assert_eq!(times, vec![1_002, 1_003, 1_004, 1_005]);
        assert_eq!(got[0].value, serde_json::json!(2));
        assert!(!more);
        let (all, _) = log.history("a", None, 1_004, 1_004, 100).unwrap();
        assert_eq!(all.len(), 2, "v and on, not the work order: {all:?}");
        let (few, more) = log.history("a", Some("v"), 0, 2_000, 3).unwrap();
        assert_eq!((few.len(), more), (3, true));
    }

    /// Compacting a segment away must not skip the next one: with two bulk-only segments
    /// after a large priority record, both bulk records go before the priority one.
    #[tokio::test]
    async fn every_bulk_segment_is_compacted_before_a_priority_line_goes() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(LogStats::default());
        let (log, _) = TelemetryLog::open(cfg(dir.path(), 65_536, true), stats.clone()).unwrap();
        let app = log.start_writer().unwrap();
        let big = |class: Class, bytes: usize, tag: &str| {
            let line = format!("m,asset={tag} v=1i 1700000000000000000\n");
            let n = bytes / line.len();
            Part {
                class,
                body: line.repeat(n),
                lines: n as u32,
                min_ts: 1,
                max_ts: 1,
            }
        };
        for p in [
            big(Class::Priority, 40_000, "p"),
            big(Class::Bulk, 7_000, "b1"),
            big(Class::Bulk, 7_000, "b2"),
            big(Class::Bulk, 20_000, "b3"),
        ] {
            app.append(vec![p], Vec::new()).await.unwrap();
        }
        close(app).await;
        assert_eq!(stats.dropped_priority_lines.load(Relaxed), 0);
        assert!(stats.dropped_bulk_lines.load(Relaxed) > 0);
        let (body, _) = read_all(&log, log.cursor());
        assert!(body.contains("asset=p"));
        assert!(!body.contains("asset=b1") && !body.contains("asset=b2"));
    }

    fn only_segment(dir: &Path) -> PathBuf {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == SEGMENT_EXT))
            .unwrap()
    }

    /// A record damaged on disk while running: the intact records before it are read and
    /// forwarded, only the damaged one is skipped (and counted), and the ones after it too are
    /// read.
    #[tokio::test]
    async fn a_damaged_record_costs_only_its_own_lines() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(LogStats::default());
        let (log, _) = TelemetryLog::open(cfg(dir.path(), 1 << 20, true), stats.clone()).unwrap();
        let app = log.start_writer().unwrap();
        for i in 0..4 {
            app.append(vec![part(Class::Bulk, "a", i * 10, 10)], Vec::new())
                .await
                .unwrap();
        }
        close(app).await;
        // Flip a payload byte of the third record.
        let seg = only_segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        let scan = scan_segment(&bytes, None);
        let (_, off) = scan.records[2];
        bytes[off as usize + HEADER_LEN + 3] ^= 0x20;
        fs::write(&seg, &bytes).unwrap();
        let first = log.read_chunk(1, 1000).unwrap().unwrap();
        assert_eq!((first.lines, first.next_seq), (20, 3));
        let skipped = log.read_chunk(3, 1000).unwrap().unwrap();
        assert_eq!((skipped.lines, skipped.next_seq), (0, 4));
        assert_eq!(stats.dropped_corrupt_lines.load(Relaxed), 10);
        let last = log.read_chunk(4, 1000).unwrap().unwrap();
        assert_eq!(last.body, part(Class::Bulk, "a", 30, 10).body);
        // At start-up the damaged record is a hole: the one after it is kept.
        drop(log);
        let (log, rec) =
            TelemetryLog::open(cfg(dir.path(), 1 << 20, true), Default::default()).unwrap();
        assert_eq!(rec.records, 3);
        assert_eq!(rec.cuts.len(), 1);
        let (body, _) = read_all(&log, 1);
        assert_eq!(body.lines().count(), 30);
    }

    /// A forwarder reading and advancing while the writer compacts at the bound: every line is
    /// forwarded, dropped or left exactly once, and none is taken for damaged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forwarding_during_compaction_counts_every_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(LogStats::default());
        let (log, _) = TelemetryLog::open(cfg(dir.path(), 64 << 10, true), stats.clone()).unwrap();
        let app = log.start_writer().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (log, stop, seen) = (log.clone(), stop.clone(), stats.clone());
            std::thread::spawn(move || {
                let mut forwarded = 0u64;
                // Not a line read before the bound is first hit: however fast this thread
                // runs on a loaded machine, compaction then races the reads that follow.
                while seen.dropped_bulk_lines.load(Relaxed) == 0 && !stop.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                loop {
                    let done = stop.load(Relaxed);
                    match log.read_chunk(log.cursor(), 50).unwrap() {
                        Some(c) => {
                            forwarded += c.lines as u64;
                            log.advance(c.next_seq);
                        }
                        None if done => return forwarded,
                        None => std::thread::sleep(Duration::from_millis(1)),
                    }
                    // Slower than the writer, so that the bound is hit.
                    std::thread::sleep(Duration::from_micros(300));
                }
            })
        };
        let mut appended = 0u64;
        for i in 0..3000 {
            let mut parts = vec![part(Class::Bulk, "b", i * 10, 10)];
            appended += 10;
            if i % 10 == 0 {
                parts.push(part(Class::Priority, "p", i, 1));
                appended += 1;
            }
            app.append(parts, Vec::new()).await.unwrap();
        }
        close(app).await;
        stop.store(true, Relaxed);
        let forwarded = reader.join().unwrap();
        let dropped =
            stats.dropped_bulk_lines.load(Relaxed) + stats.dropped_priority_lines.load(Relaxed);
        let left = stats.backlog_lines.load(Relaxed);
        assert_eq!(stats.dropped_corrupt_lines.load(Relaxed), 0);
        assert!(dropped > 0, "the bound was never hit");
        assert_eq!(forwarded + dropped + left, appended);
        assert_eq!(left, 0);
    }

    #[test]
    fn an_impossible_sequence_number_is_damage_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = FILE_MAGIC.to_vec();
        let mut h = header(7);
        h.len = 4;
        encode_record(&h, b"a 1\n", &mut seg);
        h.seq = u64::MAX;
        encode_record(&h, b"a 2\n", &mut seg);
        fs::write(dir.path().join("00000000000000000001.seg"), &seg).unwrap();
        write_cursor(dir.path(), 5).unwrap();
        let (log, rec) =
            TelemetryLog::open(cfg(dir.path(), 1 << 20, true), Default::default()).unwrap();
        assert_eq!(rec.records, 1);
        assert_eq!(log.cursor(), 7);
    }

    /// An ack fires only with the group commit that syncs its records, not before.
    #[tokio::test]
    async fn an_ack_waits_for_the_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), 1 << 20, true);
        c.fsync_interval = Duration::from_secs(1);
        let stats = Arc::new(LogStats::default());
        let (log, _) = TelemetryLog::open(c, stats.clone()).unwrap();
        let app = log.start_writer().unwrap();
        let (ack, mut done) = Ack::new();
        let t0 = Instant::now();
        app.append(vec![part(Class::Bulk, "a", 0, 3)], vec![ack])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(done.try_recv().is_err(), "acked before the sync");
        assert_eq!(stats.fsyncs.load(Relaxed), 0);
        assert!(
            log.read_chunk(1, 100).unwrap().is_none(),
            "unsynced records readable"
        );
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("ack not fired")
            .expect("ack dropped");
        assert!(t0.elapsed() >= Duration::from_millis(900));
        assert_eq!(stats.fsyncs.load(Relaxed), 1);
        close(app).await;
    }
}
