//! The writer thread: the only one that appends. It writes batches as records into the active
//! segment and syncs them in a group commit every `fsync_interval`, firing the acks that waited
//! for that sync; keeps batches in memory and retries them while the disk refuses writes; and
//! (in `retention`) keeps the log under its bound and removes expired history. [`LogAppender`]
//! is its async handle.

mod events;
mod retention;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{error, info};

use super::record::{Class, FILE_MAGIC, HEADER_LEN, RecordHeader, encode_header};
use super::{
    LogStats, Meta, Segment, TAIL_MAX_BYTES, TelemetryLog, now_ms, segment_path, sync_dir,
};
use crate::events::{Event as _, LogLimiter};
use crate::model::Ack;
use events::{DiskLinesDropped, DiskRefused};

/// How often retention and housekeeping run.
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// Batches kept in memory while the disk refuses writes, before the oldest are dropped.
const RETRY_MAX_BYTES: usize = 32 << 20;

impl TelemetryLog {
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

/// The error of a rotation whose sync failed (already reported and handled).
#[derive(Debug, thiserror::Error)]
#[error("the telemetry log's sync failed")]
struct SyncFailed;

/// Why an append was not taken: the writer thread is gone (shutdown, or a panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the telemetry log writer has stopped")]
pub struct WriterStopped;

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
    pub async fn append(&self, parts: Vec<Part>, acks: Vec<Ack>) -> Result<(), WriterStopped> {
        if parts.is_empty() && acks.is_empty() {
            return Ok(());
        }
        self.tx
            .send_async(Cmd { parts, acks })
            .await
            .map_err(|_| WriterStopped)
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
    /// What was appended since the last good sync, by sequence number, kept to be written again
    /// if the sync fails (the kernel may have dropped those pages and report the next sync as
    /// good); once synced, handed to the log's tail for the forwarder.
    unsynced: Vec<(u64, Part)>,
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
        {
            // Nothing is appended any more: what is left to forward is read from disk.
            let mut st = self.log.lock();
            st.tail = VecDeque::new();
            st.tail_bytes = 0;
        }
        let dropped: u64 = self
            .retry
            .iter()
            .flat_map(|c| c.parts.iter())
            .map(|p| p.lines as u64)
            .sum();
        if dropped > 0 {
            DiskLinesDropped {
                stats: &self.log.stats,
                lines: dropped,
                closing: true,
            }
            .emit_if(true);
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
                Ok(true) => self.unsynced.push((self.next_seq - 1, part)),
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
        // The header, then the payload behind it, straight from the batch (not copied into one
        // buffer first). At the record's own offset: a write the disk refused halfway leaves
        // the file position anywhere, and the next record must still land where the index
        // says.
        let header = encode_header(&h, part.body.as_bytes());
        let written = self
            .file
            .write_all_at(&header, self.active_bytes)
            .and_then(|()| {
                self.file
                    .write_all_at(part.body.as_bytes(), self.active_bytes + HEADER_LEN as u64)
            });
        if let Err(e) = written {
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
        self.log.stats.fsyncs.fetch_add(1, Relaxed);
        let synced = self.next_seq;
        {
            let mut st = self.log.lock();
            st.synced = synced;
            if self.log.cfg.forwarding {
                // The batches just synced: into the tail, for the forwarder to read from
                // memory.
                for (seq, part) in self.unsynced.drain(..) {
                    if seq >= st.cursor {
                        st.tail_bytes += part.body.len();
                        st.tail.push_back((seq, part.body));
                    }
                }
                while st.tail_bytes > TAIL_MAX_BYTES
                    && let Some((_, body)) = st.tail.pop_front()
                {
                    st.tail_bytes -= body.len();
                }
            } else {
                self.unsynced.clear();
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
        let parts: Vec<Part> = std::mem::take(&mut self.unsynced)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
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
        DiskRefused {
            stats: &self.log.stats,
            error: e,
            dir: &self.log.cfg.dir,
        }
        .emit(&mut self.log_limit);
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
            DiskLinesDropped {
                stats: &self.log.stats,
                lines: dropped,
                closing: false,
            }
            .emit(&mut self.log_limit);
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
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::{Duration, Instant};

    use crate::model::Ack;
    use crate::telemetry::log::tests::{cfg, close, part};
    use crate::telemetry::log::{Class, LogStats, TelemetryLog};

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
