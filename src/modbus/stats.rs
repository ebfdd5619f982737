//! Per-device counters, shared between a link's poller and whoever reports them (`demo`, the
//! HTTP API's /metrics).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the poll-duration histogram buckets ([`DeviceStats::poll_hist`]
/// has one more, +Inf).
pub const POLL_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Counters of one polled device. Monotonic except the gauges noted.
#[derive(Debug, Default)]
pub struct DeviceStats {
    pub polls: AtomicU64,
    pub requests: AtomicU64,
    pub timeouts: AtomicU64,
    pub exceptions: AtomicU64,
    /// Transport and protocol errors (connection reset, header mismatch).
    pub transport_errors: AtomicU64,
    /// Responses of the wrong length or shape.
    pub malformed: AtomicU64,
    /// RTU (`rtu://`, `rtu+tcp://`): reply frames discarded for a bad CRC (or cut short).
    pub crc_errors: AtomicU64,
    /// RTU: well-formed reply frames from another unit id, discarded.
    pub wrong_unit: AtomicU64,
    /// RTU: bus time the device's reads took (frames, silences, turnaround, waiting for the
    /// answer), microseconds. Summed over a bus, its rate is the bus's utilisation.
    pub bus_us: AtomicU64,
    /// Readings left out: `na` sentinels and out-of-range values.
    pub bad_values: AtomicU64,
    /// Enum values missing from the point's map.
    pub unmapped: AtomicU64,
    /// Merged reads refused and split.
    pub splits: AtomicU64,
    /// Poll ticks skipped because the link was busy past the next due time.
    pub overruns: AtomicU64,
    /// Gauge: the last poll cycle's duration in microseconds.
    pub last_poll_us: AtomicU64,
    /// Gauge: the achieved cycle time, from the start of the previous poll to the start of
    /// the last one, microseconds (0 until polled twice). Above the interval when its link
    /// cannot keep the schedule.
    pub last_cycle_us: AtomicU64,
    /// Gauge: answering (true) or backed off to the probe schedule.
    pub online: AtomicBool,
    /// Gauge: time of the last good reading, ns since the epoch (0 = never).
    pub last_good_ns: AtomicI64,
    /// Poll-cycle durations: counts per bucket of [`POLL_BUCKETS`] (+Inf last).
    pub poll_hist: [AtomicU64; POLL_BUCKETS.len() + 1],
    /// Sum of poll-cycle durations, microseconds.
    pub poll_us_sum: AtomicU64,
}

impl DeviceStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
    /// Records one poll cycle's duration.
    pub fn observe_poll(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = POLL_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(POLL_BUCKETS.len());
        self.poll_hist[i].fetch_add(1, Relaxed);
        self.poll_us_sum.fetch_add(d.as_micros() as u64, Relaxed);
        self.last_poll_us.store(d.as_micros() as u64, Relaxed);
    }

    pub fn errors(&self) -> u64 {
        Self::get(&self.timeouts)
            + Self::get(&self.exceptions)
            + Self::get(&self.transport_errors)
            + Self::get(&self.malformed)
            + Self::get(&self.crc_errors)
            + Self::get(&self.wrong_unit)
    }
}
