//! The log writer's operational events (see [`crate::events`]): writes the disk refused, and
//! the lines lost when it refused them for too long. Logged at most once per 10 s.

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use tracing::error;

use crate::events::Event;
use crate::telemetry::log::LogStats;

/// A write or sync of the log the disk refused: the batches are kept in memory and retried
/// (`facilityd_log_write_errors_total`; `facilityd_log_disk_failing` until a sync succeeds).
pub(super) struct DiskRefused<'a> {
    pub stats: &'a LogStats,
    pub error: &'a io::Error,
    pub dir: &'a Path,
}

impl Event for DiskRefused<'_> {
    fn count(&self) {
        self.stats.write_errors.fetch_add(1, Relaxed);
        self.stats.disk_failing.store(1, Relaxed);
    }

    fn log(&self, suppressed: u64) {
        error!(error = %self.error, dir = %self.dir.display(), suppressed, "telemetry log: the disk refuses writes; keeping batches in memory and retrying (polling goes on)");
    }
}

/// Lines the disk refused for too long, dropped: the oldest waiting ones once the memory
/// bound is reached, or what is still waiting when the writer stops (`closing`; always logged).
/// `facilityd_log_dropped_lines_total{reason="disk"}`.
pub(super) struct DiskLinesDropped<'a> {
    pub stats: &'a LogStats,
    pub lines: u64,
    pub closing: bool,
}

impl Event for DiskLinesDropped<'_> {
    fn count(&self) {
        self.stats.dropped_disk_lines.fetch_add(self.lines, Relaxed);
    }

    fn log(&self, suppressed: u64) {
        let lines = self.lines;
        if self.closing {
            error!(
                lines,
                "telemetry log: stopping with batches the disk refused; they are lost"
            );
        } else {
            error!(
                lines,
                suppressed,
                "telemetry log: the disk has refused writes for too long; dropped the oldest waiting lines"
            );
        }
    }
}
