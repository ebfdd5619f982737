//! The on-disk telemetry log: what "accepted" means.
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
//!
//! The parts: `record` is the on-disk format (record header, encoding, decoding, the scan of
//! a segment that resynchronizes past damage); `recovery` is the start-up scan that cuts torn
//! or corrupt tails, and the forward cursor's file; `writer` is the writer thread (group commit,
//! the retry queue while the disk refuses writes, the bound, compaction and retention) and its
//! async handle [`LogAppender`]; `history` answers history queries from the records. This file
//! holds the handle [`TelemetryLog`] with its index in memory, and the forwarder's reads.

mod history;
mod record;
mod recovery;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::error;

pub use history::HistorySample;
pub use record::{
    Class, Damage, FILE_MAGIC, HEADER_LEN, MAX_PAYLOAD, RecordHeader, SegmentScan, decode_record,
    encode_record, scan_segment,
};
pub use recovery::Recovery;
use recovery::write_cursor;
pub use writer::{LogAppender, Part, WriterStopped};

const SEGMENT_EXT: &str = "seg";
/// Payloads of synced, unforwarded records kept in memory for the forwarder (see
/// `State::tail`), at most this many bytes.
const TAIL_MAX_BYTES: usize = 4 << 20;

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
    /// The payloads of the newest synced records not yet forwarded, by sequence number, oldest
    /// first: the writer moves each batch here at its group commit, so that the forwarder,
    /// which reads it moments later, gets it from memory instead of reading back and
    /// checking the file. Only a cache: the index says which records exist; a record missing
    /// here is read from disk. Trimmed as the cursor moves, and to `TAIL_MAX_BYTES`.
    tail: VecDeque<(u64, String)>,
    tail_bytes: usize,
}

/// Lines read for the forwarder: consecutive records from the cursor.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub body: String,
    pub lines: usize,
    /// The cursor after these records.
    pub next_seq: u64,
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
        if let Some(answer) = self.read_chunk_in_memory(from, max_lines) {
            return Ok(answer);
        }
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

    /// [`TelemetryLog::read_chunk`]'s answer when it needs no file: `Some(None)` when nothing
    /// synced is there to read, `Some(Some(chunk))` when every record of the chunk is still in
    /// memory (synced moments ago, not yet forwarded). `None`: the records must be read from
    /// disk, with `read_chunk` (which blocks). Never blocks on I/O.
    pub fn read_chunk_in_memory(&self, from: u64, max_lines: usize) -> Option<Option<Chunk>> {
        let mut st = self.lock();
        // The same records as read_chunk plans, each looked up in the tail.
        let mut found: Vec<&str> = Vec::new();
        let (mut lines, mut next_seq) = (0usize, from);
        let mut at = st.tail.partition_point(|(seq, _)| *seq < from);
        'segs: for seg in &st.segments {
            if seg.last_seq().is_none_or(|l| l < from) {
                continue;
            }
            let start = seg.records.partition_point(|m| m.seq < from);
            for m in &seg.records[start..] {
                if m.seq >= st.synced || (!found.is_empty() && lines + m.lines as usize > max_lines)
                {
                    break 'segs;
                }
                while st.tail.get(at).is_some_and(|(seq, _)| *seq < m.seq) {
                    at += 1;
                }
                let (seq, body) = st.tail.get(at)?;
                if *seq != m.seq || body.len() != m.len as usize {
                    return None;
                }
                found.push(body);
                lines += m.lines as usize;
                next_seq = m.seq + 1;
            }
        }
        if found.is_empty() {
            return Some(None);
        }
        let mut body = String::with_capacity(found.iter().map(|b| b.len()).sum());
        for b in found {
            body.push_str(b);
        }
        st.inflight_end = next_seq;
        Some(Some(Chunk {
            body,
            lines,
            next_seq,
        }))
    }

    /// Moves the forward cursor to `next` (after a 2xx for everything below it).
    pub fn advance(&self, next: u64) {
        let mut st = self.lock();
        if next <= st.cursor {
            return;
        }
        while let Some((seq, body)) = st.tail.front()
            && *seq < next
        {
            st.tail_bytes -= body.len();
            st.tail.pop_front();
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
