//! From records to the database: encode, batch by size and time, queue, forward with retry.
//!
//! Pollers hand records over a bounded channel and never wait: a full channel drops and counts
//! (see `RecordSink`). The [`Batcher`] turns records into line protocol and cuts batches of
//! `batch_size` lines or `flush_interval` age into the [`BatchQueue`], bounded in bytes; when
//! it is full the oldest batch is dropped and counted. The [`Forwarder`] writes batches in
//! order with exponential backoff and jitter. The queue is the seam where the durable on-disk
//! log goes: "accepted" is `BatchQueue::push`, "forwarded" is `BatchQueue::pop_front` after a
//! successful write.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::influx::{LineWriter, WriteError};
use super::line::LineEncoder;
use crate::modbus::stats::LogLimiter;
use crate::model::Record;

/// Counters of the telemetry path.
#[derive(Debug, Default)]
pub struct TelemetryStats {
    /// Records dropped because the poller-to-batcher channel was full.
    pub records_dropped: Arc<AtomicU64>,
    pub lines_accepted: AtomicU64,
    pub lines_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub write_errors: AtomicU64,
    /// Lines dropped because the queue was full.
    pub lines_dropped: AtomicU64,
    /// Lines the database rejected (HTTP 400), kept in the dead-letter file.
    pub lines_dead_lettered: AtomicU64,
    /// Gauges: queued bytes and batches.
    pub queue_bytes: AtomicU64,
    pub queue_batches: AtomicU64,
}

/// A batch of newline-terminated lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub body: String,
    pub lines: usize,
}

impl Batch {
    /// Splits a batch in two halves at a line boundary (for HTTP 413).
    pub fn split(self) -> (Batch, Option<Batch>) {
        if self.lines < 2 {
            return (self, None);
        }
        let half = self.lines / 2;
        let cut = self
            .body
            .match_indices('\n')
            .nth(half - 1)
            .map_or(self.body.len(), |(i, _)| i + 1);
        let (a, b) = self.body.split_at(cut);
        (
            Batch {
                body: a.to_string(),
                lines: half,
            },
            Some(Batch {
                body: b.to_string(),
                lines: self.lines - half,
            }),
        )
    }
}

/// Unwritten batches, bounded in bytes.
pub struct BatchQueue {
    inner: Mutex<VecDeque<Batch>>,
    max_bytes: u64,
    notify: Notify,
    stats: Arc<TelemetryStats>,
    closed: std::sync::atomic::AtomicBool,
}

impl BatchQueue {
    pub fn new(max_bytes: u64, stats: Arc<TelemetryStats>) -> Arc<Self> {
        Arc::new(BatchQueue {
            inner: Mutex::new(VecDeque::new()),
            max_bytes,
            notify: Notify::new(),
            stats,
            closed: false.into(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Batch>> {
        // A panic elsewhere while holding the lock leaves a queue that is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts a batch; drops the oldest batches (counted) when over the bound.
    pub fn push(&self, batch: Batch) {
        let mut q = self.lock();
        self.stats
            .lines_accepted
            .fetch_add(batch.lines as u64, Relaxed);
        self.stats
            .queue_bytes
            .fetch_add(batch.body.len() as u64, Relaxed);
        q.push_back(batch);
        let mut dropped = 0usize;
        while self.stats.queue_bytes.load(Relaxed) > self.max_bytes && q.len() > 1 {
            if let Some(old) = q.pop_front() {
                self.stats
                    .queue_bytes
                    .fetch_sub(old.body.len() as u64, Relaxed);
                dropped += old.lines;
            }
        }
        self.stats.queue_batches.store(q.len() as u64, Relaxed);
        drop(q);
        if dropped > 0 {
            self.stats.lines_dropped.fetch_add(dropped as u64, Relaxed);
            warn!(
                lines = dropped,
                max_bytes = self.max_bytes,
                "telemetry queue full: dropped the oldest lines"
            );
        }
        self.notify.notify_one();
    }

    /// The oldest batch, without removing it.
    pub fn front(&self) -> Option<Batch> {
        self.lock().front().cloned()
    }

    /// Replaces the front batch by the given ones (after a 413 split).
    pub fn replace_front(&self, parts: Vec<Batch>) {
        let mut q = self.lock();
        if let Some(old) = q.pop_front() {
            self.stats
                .queue_bytes
                .fetch_sub(old.body.len() as u64, Relaxed);
        }
        for b in parts.into_iter().rev() {
            self.stats
                .queue_bytes
                .fetch_add(b.body.len() as u64, Relaxed);
            q.push_front(b);
        }
        self.stats.queue_batches.store(q.len() as u64, Relaxed);
    }

    /// Removes the front batch once it is written.
    pub fn pop_front(&self) {
        let mut q = self.lock();
        if let Some(old) = q.pop_front() {
            self.stats
                .queue_bytes
                .fetch_sub(old.body.len() as u64, Relaxed);
        }
        self.stats.queue_batches.store(q.len() as u64, Relaxed);
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// No more batches will come.
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
        self.notify.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    async fn wait(&self) {
        self.notify.notified().await
    }
}

/// Encodes records and cuts batches.
pub struct Batcher {
    pub encoder: LineEncoder,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub queue: Arc<BatchQueue>,
}

impl Batcher {
    /// Runs until the record channel closes, then flushes and closes the queue.
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Record>,
        mut observe: impl FnMut(&Record) + Send,
    ) {
        let mut body = String::with_capacity(64 * 1024);
        let mut lines = 0usize;
        let mut deadline: Option<Instant> = None;
        loop {
            let rec = match deadline {
                Some(d) => tokio::select! {
                    r = rx.recv() => r,
                    _ = sleep_until(d) => {
                        self.flush(&mut body, &mut lines);
                        deadline = None;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(rec) = rec else { break };
            observe(&rec);
            if self.encoder.encode(&rec, &mut body) {
                lines += 1;
                deadline.get_or_insert_with(|| Instant::now() + self.flush_interval);
                if lines >= self.batch_size {
                    self.flush(&mut body, &mut lines);
                    deadline = None;
                }
            }
        }
        self.flush(&mut body, &mut lines);
        self.queue.close();
    }

    fn flush(&self, body: &mut String, lines: &mut usize) {
        if *lines == 0 {
            return;
        }
        let cap = body.capacity();
        let full = std::mem::replace(body, String::with_capacity(cap.min(4 << 20)));
        self.queue.push(Batch {
            body: full,
            lines: *lines,
        });
        *lines = 0;
    }
}

/// Writes queued batches in order.
pub struct Forwarder {
    pub writer: Arc<dyn LineWriter>,
    pub queue: Arc<BatchQueue>,
    pub stats: Arc<TelemetryStats>,
    /// Where lines the database rejects (HTTP 400) are kept.
    pub dead_letter: PathBuf,
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Forwarder {
    /// Runs until the queue is closed and drained, or until `stop` fires (then it returns at
    /// once; what is left stays queued).
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut log = LogLimiter::new(Duration::from_secs(10));
        let mut failing = false;
        loop {
            let Some(batch) = self.queue.front() else {
                if self.queue.is_closed() {
                    return;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.queue.wait() => continue,
                    // A notify can race with front(); look again now and then.
                    _ = sleep(Duration::from_millis(200)) => continue,
                }
            };
            let lines = batch.lines;
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.writer.write(batch.body.clone()) => r,
            };
            match result {
                Ok(()) => {
                    self.queue.pop_front();
                    self.stats.lines_written.fetch_add(lines as u64, Relaxed);
                    self.stats.batches_written.fetch_add(1, Relaxed);
                    backoff = BACKOFF_MIN;
                    if failing {
                        info!("database writes succeed again");
                        failing = false;
                    }
                    continue;
                }
                Err(WriteError::TooLarge) => {
                    let (a, b) = batch.split();
                    match b {
                        Some(b) => {
                            info!(
                                lines,
                                "database refused a batch as too large (413); splitting it"
                            );
                            self.queue.replace_front(vec![a, b]);
                            continue;
                        }
                        None => {
                            self.dead_letter(&a.body, "a single line is too large (HTTP 413)");
                            self.queue.pop_front();
                            continue;
                        }
                    }
                }
                Err(WriteError::Rejected(text)) => {
                    self.dead_letter(&batch.body, &text);
                    self.queue.pop_front();
                    continue;
                }
                Err(e) => {
                    self.stats.write_errors.fetch_add(1, Relaxed);
                    failing = true;
                    if let Some(held) = log.allow() {
                        let queued = self.stats.queue_bytes.load(Relaxed);
                        error!(error = %e, retry_in_ms = backoff.as_millis() as u64, queued_bytes = queued, suppressed = held, "database write failed; keeping the batch and retrying");
                    }
                }
            }
            let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sleep(wait) => {}
            }
        }
    }

    fn dead_letter(&self, body: &str, why: &str) {
        let lines = body.lines().count() as u64;
        self.stats.lines_dead_lettered.fetch_add(lines, Relaxed);
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.dead_letter)
            .and_then(|mut f| f.write_all(body.as_bytes()));
        match res {
            Ok(()) => {
                error!(lines, file = %self.dead_letter.display(), reason = why, "database rejected lines; kept them in the dead-letter file")
            }
            Err(e) => {
                error!(lines, file = %self.dead_letter.display(), reason = why, error = %e, "database rejected lines and the dead-letter file cannot be written; lines lost")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_every_line_once() {
        let b = Batch {
            body: "a 1\nb 2\nc 3\n".into(),
            lines: 3,
        };
        let (x, y) = b.split();
        let y = y.unwrap();
        assert_eq!((x.body.as_str(), x.lines), ("a 1\n", 1));
        assert_eq!((y.body.as_str(), y.lines), ("b 2\nc 3\n", 2));
    }

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let stats = Arc::new(TelemetryStats::default());
        let q = BatchQueue::new(10, stats.clone());
        q.push(Batch {
            body: "aaaaaa\n".into(),
            lines: 1,
        });
        q.push(Batch {
            body: "bbbbbb\n".into(),
            lines: 1,
        });
        assert_eq!(stats.lines_dropped.load(Relaxed), 1);
        assert_eq!(q.front().unwrap().body, "bbbbbb\n");
    }
}
