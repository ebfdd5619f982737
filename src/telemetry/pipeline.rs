//! From records to the database: encode, batch, append to the on-disk log, forward.
//!
//! Pollers hand records over a bounded channel and never wait: a full channel drops and counts
//! (see `crate::sink`, which also shows each record to the rules beside this path). The [`Batcher`] turns records into line protocol, sorted into bulk and
//! priority lines (see `LineEncoder::encode_split`), and cuts batches of `batch_size` lines or
//! `flush_interval` age into the [`TelemetryLog`](super::log::TelemetryLog); a batch holding an
//! MQTT acknowledgement is cut within [`ACK_DELAY`]. Appended and synced is "accepted". The
//! [`Forwarder`] reads the log from its cursor and writes to the database in order, moving the
//! cursor only after a 2xx; it never slows the batcher or the pollers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::dead_letter::{DeadLetter, DeadLetterStats};
use super::influx::{LineWriter, WriteError};
use super::line::LineEncoder;
use super::log::{Chunk, Class, LogAppender, Part, TelemetryLog};
use crate::backoff::Backoff;
use crate::events::{Event as _, LogLimiter};
use crate::model::{Ack, Record};

mod events;
use events::{RetryCause, WriteRefused, WriteRetried};

/// How soon a batch that holds an MQTT QoS 1 acknowledgement is cut.
pub const ACK_DELAY: Duration = Duration::from_millis(20);

/// Counters of the telemetry path (the log keeps its own, `LogStats`).
#[derive(Debug, Default)]
pub struct TelemetryStats {
    /// Records dropped because the poller-to-batcher channel was full.
    pub records_dropped: Arc<AtomicU64>,
    /// Lines handed to the log.
    pub lines_accepted: AtomicU64,
    pub lines_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub write_errors: AtomicU64,
    /// Lines the database rejected (HTTP 400, or one line too large for 413), kept in the
    /// dead-letter file.
    pub lines_dead_lettered: AtomicU64,
    /// Lines lost: the log writer was gone (only at shutdown), or the dead-letter file could
    /// not be written.
    pub lines_dropped: AtomicU64,
    /// Failed writes by the database's HTTP status (0: no answer: network error, timeout).
    pub write_failures_by_status: Mutex<std::collections::BTreeMap<u16, u64>>,
    /// The dead-letter files' size and the lines their bound removed.
    pub dead_letter: Arc<DeadLetterStats>,
}

impl TelemetryStats {
    fn count_failure(&self, status: u16) {
        self.write_errors.fetch_add(1, Relaxed);
        *self
            .write_failures_by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status)
            .or_default() += 1;
    }

    /// Failed writes by HTTP status, for `/metrics`.
    pub fn failures_by_status(&self) -> Vec<(u16, u64)> {
        self.write_failures_by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

/// Faults of the gateway itself, raised as work orders on the gateway's own asset.
#[derive(Debug, Default)]
pub struct GatewayFaults {
    /// The database refuses our writes (HTTP 401, 403, 404): what it said.
    pub database_refused: Mutex<Option<String>>,
    /// Writes get an answer no database gives (a redirect, 405, an unexpected 2xx): what.
    pub database_unexpected: Mutex<Option<String>>,
    /// The database refused every line of a batch (HTTP 400/422): the last such answer.
    pub database_rejecting: Mutex<Option<String>>,
    /// A write has succeeded since start-up.
    pub database_written: std::sync::atomic::AtomicBool,
}

fn get(m: &Mutex<Option<String>>) -> Option<String> {
    m.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn set(m: &Mutex<Option<String>>, why: Option<String>) {
    *m.lock().unwrap_or_else(|p| p.into_inner()) = why;
}

impl GatewayFaults {
    pub fn set_database_refused(&self, why: Option<String>) {
        set(&self.database_refused, why)
    }

    pub fn set_database_unexpected(&self, why: Option<String>) {
        set(&self.database_unexpected, why)
    }

    /// The database has taken a write since start-up (and none fails for a held reason now).
    pub fn database_ok(&self) -> bool {
        self.database_written.load(Relaxed)
            && self.database_refused().is_none()
            && self.database_unexpected().is_none()
    }

    pub fn database_refused(&self) -> Option<String> {
        get(&self.database_refused)
    }

    pub fn database_unexpected(&self) -> Option<String> {
        get(&self.database_unexpected)
    }

    pub fn set_database_rejecting(&self, why: Option<String>) {
        set(&self.database_rejecting, why)
    }

    pub fn database_rejecting(&self) -> Option<String> {
        get(&self.database_rejecting)
    }
}

/// A batch of newline-terminated lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub body: String,
    pub lines: usize,
}

impl Batch {
    /// Splits a batch in two halves at a line boundary (for HTTP 413 and 400).
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

/// Lines of one class being gathered.
#[derive(Default)]
struct Pending {
    body: String,
    lines: u32,
    min_ts: i64,
    max_ts: i64,
}

impl Pending {
    fn note(&mut self, added: u32, ts: i64) {
        if added == 0 {
            return;
        }
        if self.lines == 0 {
            self.min_ts = ts;
            self.max_ts = ts;
        } else {
            self.min_ts = self.min_ts.min(ts);
            self.max_ts = self.max_ts.max(ts);
        }
        self.lines += added;
    }

    fn take(&mut self, class: Class) -> Option<Part> {
        if self.lines == 0 {
            return None;
        }
        let cap = self.body.capacity().min(4 << 20);
        let part = Part {
            class,
            body: std::mem::replace(&mut self.body, String::with_capacity(cap)),
            lines: self.lines,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
        };
        self.lines = 0;
        Some(part)
    }
}

fn record_time(r: &Record) -> i64 {
    match r {
        Record::Reading(r) => r.timestamp_ns,
        Record::Status(s) => s.timestamp_ns,
        Record::WorkOrder(m) => m.timestamp_ns,
        Record::Ack(_) => crate::model::now_ns(),
    }
}

/// Encodes records and cuts batches into the log.
pub struct Batcher {
    pub encoder: LineEncoder,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub log: LogAppender,
    pub stats: Arc<TelemetryStats>,
}

impl Batcher {
    /// Runs until the record channel closes, then flushes and closes its log handle.
    pub async fn run(self, mut rx: mpsc::Receiver<Record>) {
        let mut bulk = Pending::default();
        let mut prio = Pending::default();
        let mut acks: Vec<Ack> = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            let rec = match deadline {
                Some(d) => tokio::select! {
                    r = rx.recv() => r,
                    _ = sleep_until(d) => {
                        self.flush(&mut bulk, &mut prio, &mut acks).await;
                        deadline = None;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(rec) = rec else { break };
            if let Record::Ack(a) = rec {
                acks.push(a);
                let soon = Instant::now() + ACK_DELAY.min(self.flush_interval);
                deadline = Some(deadline.map_or(soon, |d| d.min(soon)));
                continue;
            }
            let (b, p) = self
                .encoder
                .encode_split(&rec, &mut bulk.body, &mut prio.body);
            if b + p == 0 {
                continue;
            }
            let ts = record_time(&rec);
            bulk.note(b, ts);
            prio.note(p, ts);
            deadline.get_or_insert_with(|| Instant::now() + self.flush_interval);
            if (bulk.lines + prio.lines) as usize >= self.batch_size {
                self.flush(&mut bulk, &mut prio, &mut acks).await;
                deadline = None;
            }
        }
        self.flush(&mut bulk, &mut prio, &mut acks).await;
    }

    async fn flush(&self, bulk: &mut Pending, prio: &mut Pending, acks: &mut Vec<Ack>) {
        let parts: Vec<Part> = [bulk.take(Class::Bulk), prio.take(Class::Priority)]
            .into_iter()
            .flatten()
            .collect();
        let lines: u64 = parts.iter().map(|p| p.lines as u64).sum();
        match self.log.append(parts, std::mem::take(acks)).await {
            Ok(()) => {
                self.stats.lines_accepted.fetch_add(lines, Relaxed);
            }
            Err(e) => {
                self.stats.lines_dropped.fetch_add(lines, Relaxed);
                error!(lines, error = %e, "telemetry lines lost");
            }
        }
    }
}

/// Writes the log's records to the database in order.
pub struct Forwarder {
    pub writer: Arc<dyn LineWriter>,
    pub log: Arc<TelemetryLog>,
    pub stats: Arc<TelemetryStats>,
    /// Lines per write (several log records are joined up to it).
    pub batch_size: usize,
    /// Where lines the database rejects (HTTP 400) are kept.
    pub dead_letter: Arc<DeadLetter>,
    pub faults: Arc<GatewayFaults>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest wait between retries: a database back from an outage is found within it (a
/// refused connection costs nothing; a hung one costs the write timeout anyway).
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the forward cursor is persisted (a crash resends at most this much).
const CURSOR_PERSIST: Duration = Duration::from_secs(1);
/// The window of the forward rate gauge.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Lines forwarded per second over the last window.
struct Rate {
    since: Instant,
    lines: u64,
}

impl Rate {
    fn add(&mut self, lines: u64, stats: &super::log::LogStats) {
        self.lines += lines;
        self.roll(stats);
    }

    fn roll(&mut self, stats: &super::log::LogStats) {
        let dt = self.since.elapsed();
        if dt >= RATE_WINDOW {
            let rate = self.lines as f64 / dt.as_secs_f64();
            stats.forward_rate_bits.store(rate.to_bits(), Relaxed);
            self.since = Instant::now();
            self.lines = 0;
        }
    }
}

enum Outcome {
    Written,
    Stopped,
}

impl Forwarder {
    /// Runs until `stop` fires (then it returns at once; the cursor says what was written), or
    /// until `drain` fires and everything synced is written.
    pub async fn run(self, stop: CancellationToken, drain: CancellationToken) {
        let mut synced = self.log.subscribe_synced();
        let mut cursor = self.log.cursor();
        let mut persisted = Instant::now();
        let mut rate = Rate {
            since: Instant::now(),
            lines: 0,
        };
        let mut log_limit = LogLimiter::new(Duration::from_secs(10));
        loop {
            let from = cursor;
            let max = self.batch_size.max(1);
            // Records synced moments ago are still in memory: no blocking thread, no file.
            let chunk = match self.log.read_chunk_in_memory(from, max) {
                Some(answer) => Ok(Ok(answer)),
                None => {
                    let log = self.log.clone();
                    tokio::task::spawn_blocking(move || log.read_chunk(from, max)).await
                }
            };
            let chunk = match chunk {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    if let Some(held) = log_limit.allow() {
                        error!(error = %e, suppressed = held, "cannot read the telemetry log; retrying");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = sleep(Duration::from_secs(1)) => continue,
                    }
                }
                Err(_) => break,
            };
            let Some(chunk) = chunk else {
                rate.roll(&self.log.stats);
                if drain.is_cancelled() {
                    break;
                }
                if persisted.elapsed() >= CURSOR_PERSIST {
                    self.persist().await;
                    persisted = Instant::now();
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = drain.cancelled() => {}
                    _ = synced.changed() => {}
                    _ = sleep(Duration::from_secs(1)) => {}
                }
                continue;
            };
            let Chunk {
                body,
                lines,
                next_seq,
            } = chunk;
            if lines > 0 {
                match self.write_all(Batch { body, lines }, &stop).await {
                    Outcome::Written => {}
                    Outcome::Stopped => break,
                }
            }
            self.log.advance(next_seq);
            cursor = next_seq;
            rate.add(lines as u64, &self.log.stats);
            self.log
                .stats
                .forwarded_lines
                .fetch_add(lines as u64, Relaxed);
            if persisted.elapsed() >= CURSOR_PERSIST {
                self.persist().await;
                persisted = Instant::now();
            }
        }
        self.persist().await;
    }

    async fn persist(&self) {
        let log = self.log.clone();
        match tokio::task::spawn_blocking(move || log.persist_cursor()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "cannot save the telemetry forward cursor (a restart resends more)")
            }
            Err(_) => {}
        }
    }

    /// Writes one chunk, splitting on 413 and bisecting on 400/422 (the refused lines go to the
    /// dead-letter file), holding and retrying everything else until it goes through or
    /// `stop` fires.
    async fn write_all(&self, batch: Batch, stop: &CancellationToken) -> Outcome {
        let total = batch.lines;
        // Lines of this chunk the database refused (HTTP 400/422), and the last answer.
        let mut refused = 0usize;
        let mut last_refusal = String::new();
        let mut parts = VecDeque::from([batch]);
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut log = LogLimiter::new(Duration::from_secs(10));
        let mut failing = false;
        while let Some(part) = parts.pop_front() {
            let lines = part.lines;
            let result = tokio::select! {
                _ = stop.cancelled() => return Outcome::Stopped,
                r = self.writer.write(part.body.clone()) => r,
            };
            let retry = match result {
                Ok(()) => {
                    self.stats.lines_written.fetch_add(lines as u64, Relaxed);
                    self.stats.batches_written.fetch_add(1, Relaxed);
                    backoff.reset();
                    self.faults.database_written.store(true, Relaxed);
                    if failing {
                        info!("database writes succeed again");
                        failing = false;
                    }
                    if self.faults.database_refused().is_some()
                        || self.faults.database_unexpected().is_some()
                    {
                        info!("the database takes our writes again");
                        self.faults.set_database_refused(None);
                        self.faults.set_database_unexpected(None);
                    }
                    continue;
                }
                Err(WriteError::TooLarge) => {
                    self.stats.count_failure(413);
                    match part.split() {
                        (a, Some(b)) => {
                            info!(
                                lines,
                                "database refused a batch as too large (413); splitting it"
                            );
                            parts.push_front(b);
                            parts.push_front(a);
                        }
                        (a, None) => {
                            self.dead_letter(&a.body, "a single line is too large (HTTP 413)")
                                .await;
                        }
                    }
                    continue;
                }
                // Bisect down to the lines the database refuses; the others are written
                // (InfluxDB writes the valid lines of a refused batch too; a line written
                // twice is overwritten in place).
                Err(WriteError::Rejected { status, text }) => {
                    self.stats.count_failure(status);
                    match part.split() {
                        (a, Some(b)) => {
                            parts.push_front(b);
                            parts.push_front(a);
                        }
                        (a, None) => {
                            last_refusal = format!("HTTP {status}: {text}");
                            refused += a.lines;
                            self.dead_letter(&a.body, &last_refusal).await;
                        }
                    }
                    continue;
                }
                // Held: the lines stay, the gateway's own work order says why (one cause at a
                // time: the other clears).
                Err(WriteError::Refused { status, text }) => {
                    self.hold(status, &text, true);
                    if !self.wait(&mut backoff, None, stop).await {
                        return Outcome::Stopped;
                    }
                    parts.push_front(part);
                    continue;
                }
                Err(WriteError::Unexpected { status, text }) => {
                    self.hold(status, &text, false);
                    if !self.wait(&mut backoff, None, stop).await {
                        return Outcome::Stopped;
                    }
                    parts.push_front(part);
                    continue;
                }
                Err(WriteError::Throttled {
                    status,
                    retry_after,
                    text,
                }) => {
                    self.retried(
                        &backoff,
                        RetryCause::Busy {
                            status,
                            text: &text,
                            retry_after,
                        },
                    )
                    .emit(&mut log);
                    if !self.wait(&mut backoff, retry_after, stop).await {
                        return Outcome::Stopped;
                    }
                    parts.push_front(part);
                    continue;
                }
                Err(WriteError::ServerError { status, text }) => {
                    self.retried(
                        &backoff,
                        RetryCause::ServerError {
                            status,
                            text: &text,
                        },
                    )
                    .emit(&mut log);
                    failing = true;
                    parts.push_front(part);
                    if !self.wait(&mut backoff, None, stop).await {
                        return Outcome::Stopped;
                    }
                    continue;
                }
                Err(e) => {
                    self.retried(&backoff, RetryCause::NoAnswer { error: &e })
                        .emit(&mut log);
                    part
                }
            };
            failing = true;
            parts.push_front(retry);
            if !self.wait(&mut backoff, None, stop).await {
                return Outcome::Stopped;
            }
        }
        // Every line of a chunk refused is rarely the lines' fault (a proxy's 400, a schema
        // change): the lines are in the dead-letter file, and a person should look.
        if total >= 2 && refused == total {
            if self.faults.database_rejecting().is_none() {
                error!(lines = total, reason = %last_refusal, "the database refused every line of a batch; they are in the dead-letter file (facilityd dead-letters resend once the cause is fixed)");
            }
            self.faults.set_database_rejecting(Some(format!(
                "every line of a batch of {total} refused, last: {last_refusal}"
            )));
        } else if refused < total && self.faults.database_rejecting().is_some() {
            info!("the database takes lines again");
            self.faults.set_database_rejecting(None);
        }
        Outcome::Written
    }

    /// A write held for a configuration cause: `refused` (401, 403, 404: credentials, org,
    /// bucket, database) or not (an answer no database gives). The gateway's own work order
    /// says why; one cause at a time, so the other clears.
    fn hold(&self, status: u16, text: &str, refused: bool) {
        let why = Some(format!("HTTP {status}: {text}"));
        let (slot, other) = if refused {
            (
                &self.faults.database_refused,
                &self.faults.database_unexpected,
            )
        } else {
            (
                &self.faults.database_unexpected,
                &self.faults.database_refused,
            )
        };
        let changed = get(slot) != why;
        WriteRefused {
            stats: &self.stats,
            status,
            text,
            refused,
        }
        .emit_if(changed);
        if changed {
            set(slot, why);
            set(other, None);
        }
    }

    /// A failed write to retry, with the backoff's next step for its log line.
    fn retried<'a>(&'a self, backoff: &Backoff, cause: RetryCause<'a>) -> WriteRetried<'a> {
        WriteRetried {
            stats: &self.stats,
            log_stats: &self.log.stats,
            retry_in: backoff.step(),
            cause,
        }
    }

    /// Waits before a retry: the backoff's step with jitter (50-100 %), which then doubles up
    /// to [`BACKOFF_MAX`], or `exactly` when the database said how long (`Retry-After`) and
    /// that is longer. False when `stop` fires first.
    async fn wait(
        &self,
        backoff: &mut Backoff,
        exactly: Option<Duration>,
        stop: &CancellationToken,
    ) -> bool {
        // Nothing goes through while this lasts.
        self.log
            .stats
            .forward_rate_bits
            .store(0f64.to_bits(), Relaxed);
        // The backoff always grows, and a `Retry-After` shorter than it (0, or a date our
        // clock already passed) does not make the retry come sooner.
        let jittered = backoff.next_wait();
        let wait = exactly.map_or(jittered, |d| d.max(jittered));
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = sleep(wait) => true,
        }
    }

    async fn dead_letter(&self, body: &str, why: &str) {
        let lines = body.lines().count() as u64;
        let dead_letter = self.dead_letter.clone();
        let (data, reason) = (body.to_string(), why.to_string());
        let res = tokio::task::spawn_blocking(move || dead_letter.append(&data, &reason))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let file = self.dead_letter.path();
        match res {
            Ok(_) => {
                self.stats.lines_dead_lettered.fetch_add(lines, Relaxed);
                error!(lines, file = %file.display(), reason = why, "database rejected lines; kept them in the dead-letter file")
            }
            Err(e) => {
                self.stats.lines_dropped.fetch_add(lines, Relaxed);
                error!(lines, file = %file.display(), reason = why, error = %e, "database rejected lines and the dead-letter file cannot be written; lines lost")
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
}
