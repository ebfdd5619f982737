//! Availability tracking: each asset's state over time (available, unavailable, offline) and
//! its counters per local day, written to the work-order store for the owners' report.
//!
//! [`Availability`] wraps the pure core ([`tracker::Tracker`]) behind a mutex: the router shows
//! it every record as the inputs hand it over ([`Availability::observe`], the wall clock as the
//! time), a reload gives it the new device set ([`Availability::reconfigure`]). The flusher
//! ([`run_flusher`]) writes what changed through the [`StoreHandle`] every
//! [`FLUSH_INTERVAL`], when asked ([`AvailabilityHandle::flush`]) and once at shutdown; a failed
//! write is kept and retried with the next flush. The store keeps spans as rows
//! (`availability_spans`) that a later flush extends, and the counter days (`counter_days`).
//!
//! Time the gateway did not run has no span: the report reads it as "not monitored". After a
//! start, an asset's first span begins with its first status.

pub mod counters;
pub mod day;
mod events;
pub mod tracker;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono_tz::Tz;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::device::Device;
use crate::events::{Event, LogLimiter};
use crate::metrics_text::{Kind, MetricsText};
use crate::model::Record;
use crate::workorder::availability::{AvailState, CounterDay};
use crate::workorder::handle::StoreHandle;
use crate::workorder::store::StoreError;
pub use tracker::{MQTT_SILENCE_MS, Tracker};

/// How often the flusher writes spans and counters.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The flusher's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct AvailabilityStats {
    /// Flushes written.
    pub flushes: AtomicU64,
    /// Flushes the store refused or could not take (retried with the next one).
    pub write_failures: AtomicU64,
    /// Spans and counter days written.
    pub spans_written: AtomicU64,
    pub counter_days_written: AtomicU64,
}

impl AvailabilityStats {
    /// Its `/metrics` families.
    pub fn write_metrics(&self, out: &mut MetricsText) {
        for (name, help, v) in [
            (
                "facilityd_availability_flushes_total",
                "Writes of the availability history (spans and counters per day) to the work-order store.",
                &self.flushes,
            ),
            (
                "facilityd_availability_write_failures_total",
                "Writes of the availability history the work-order store did not take (kept and retried with the next).",
                &self.write_failures,
            ),
            (
                "facilityd_availability_spans_written_total",
                "Availability spans written (new, or extended).",
                &self.spans_written,
            ),
            (
                "facilityd_availability_counter_days_written_total",
                "Counter days written (new, or updated).",
                &self.counter_days_written,
            ),
        ] {
            out.scalar(name, Kind::Counter, help, v.load(Relaxed));
        }
    }
}

/// The tracker shared by the router (observing), a reload and the flusher.
#[derive(Debug)]
pub struct Availability {
    core: Mutex<Tracker>,
    pub stats: Arc<AvailabilityStats>,
}

impl Availability {
    /// Tracks `devices` (with their slots) in time zone `tz`, taking up the counters where
    /// the store left them (`WorkOrderStore::latest_counter_days`).
    pub fn new(tz: Tz, devices: &[(usize, Arc<Device>)], seeds: Vec<CounterDay>) -> Self {
        Availability {
            core: Mutex::new(Tracker::new(tz, devices, seeds, now_ms())),
            stats: Arc::default(),
        }
    }

    fn core(&self) -> MutexGuard<'_, Tracker> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sees one record (the router calls this for every record, in the input's task).
    #[inline]
    pub fn observe(&self, record: &Record) {
        if matches!(record, Record::Reading(_) | Record::Status(_)) {
            let now = now_ms();
            self.core().observe(record, now);
        }
    }

    /// A configuration reload's device set (with slots) and time zone.
    pub fn reconfigure(&self, tz: Tz, devices: &[(usize, Arc<Device>)]) {
        self.core().reconfigure(tz, devices, now_ms());
    }

    /// Each asset's state now (`None`: not monitored yet).
    pub fn states(&self) -> Vec<(Arc<str>, Option<AvailState>)> {
        self.core().states()
    }

    /// Writes what changed through `store`; a failure keeps it for the next flush.
    pub async fn flush(&self, store: &StoreHandle) -> Result<(), StoreError> {
        let batch = self.core().take_batch(now_ms());
        if batch.is_empty() {
            return Ok(());
        }
        let spans = batch.spans.clone();
        let counters = batch.counters.clone();
        let (n_spans, n_counters) = (spans.len() as u64, counters.len() as u64);
        // Two transactions: the spans may be in while the counters failed, and the tracker
        // must know which (a span written twice would count twice).
        let result = store
            .call(move |s| Ok((s.write_spans(&spans), s.write_counter_days(&counters))))
            .await;
        let (spans, counters) = match result {
            Ok((spans, counters)) => (spans, counters),
            Err(e) => (Err(StoreError::Closed), Err(e)),
        };
        let mut core = self.core();
        core.done(batch, spans.as_deref().ok(), counters.is_ok());
        drop(core);
        if spans.is_ok() {
            self.stats.spans_written.fetch_add(n_spans, Relaxed);
        }
        if counters.is_ok() {
            self.stats
                .counter_days_written
                .fetch_add(n_counters, Relaxed);
        }
        match (spans, counters) {
            (Ok(_), Ok(())) => {
                self.stats.flushes.fetch_add(1, Relaxed);
                Ok(())
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }
}

/// What the API holds of the tracker: a flush now, the states now; cheap to clone.
#[derive(Debug, Clone)]
pub struct AvailabilityHandle {
    requests: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
    avail: Arc<Availability>,
    pub stats: Arc<AvailabilityStats>,
}

/// Why a flush asked for did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    #[error("the availability flusher is not running (the gateway is stopping)")]
    NotRunning,
    #[error("the work-order store did not take the availability history: {0}")]
    Store(String),
}

impl AvailabilityHandle {
    /// Writes the spans and counters up to now before returning (a report then includes the
    /// last seconds).
    pub async fn flush(&self) -> Result<(), FlushError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .await
            .map_err(|_| FlushError::NotRunning)?;
        rx.await
            .map_err(|_| FlushError::NotRunning)?
            .map_err(FlushError::Store)
    }

    /// Each configured asset's state now (`None`: not monitored yet since the start).
    pub fn states(&self) -> Vec<(Arc<str>, Option<AvailState>)> {
        self.avail.states()
    }
}

/// The flusher's request queue and its handle.
pub fn handle(
    avail: &Arc<Availability>,
) -> (
    AvailabilityHandle,
    mpsc::Receiver<oneshot::Sender<Result<(), String>>>,
) {
    let (requests, rx) = mpsc::channel(16);
    (
        AvailabilityHandle {
            requests,
            avail: avail.clone(),
            stats: avail.stats.clone(),
        },
        rx,
    )
}

/// Writes the tracker's changes every `every`, on request, and once more when `stop` fires
/// (then returns).
pub async fn run_flusher(
    avail: Arc<Availability>,
    store: StoreHandle,
    every: Duration,
    mut requests: mpsc::Receiver<oneshot::Sender<Result<(), String>>>,
    stop: CancellationToken,
) {
    let mut limiter = LogLimiter::new(Duration::from_secs(60));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let _ = flush_logged(&avail, &store, &mut limiter).await;
            }
            Some(reply) = requests.recv() => {
                let r = flush_logged(&avail, &store, &mut limiter).await;
                let _ = reply.send(r);
            }
        }
    }
    // The last flush: every open span ends now. A failure here is logged regardless.
    let _ = flush_logged(&avail, &store, &mut LogLimiter::new(Duration::ZERO)).await;
}

/// A flush whose failure is counted and logged (at most one line per `limiter` interval).
async fn flush_logged(
    avail: &Availability,
    store: &StoreHandle,
    limiter: &mut LogLimiter,
) -> Result<(), String> {
    let r = avail.flush(store).await;
    if let Err(e) = &r {
        events::WriteFailed {
            stats: &avail.stats,
            error: e,
        }
        .emit(limiter);
    }
    r.map_err(|e| e.to_string())
}
