//! The flusher's operational events (see [`crate::events`]): a write of the availability
//! history that the work-order store did not take
//! (`facilityd_availability_write_failures_total`).

use std::sync::atomic::Ordering::Relaxed;

use tracing::error;

use super::AvailabilityStats;
use crate::events::Event;
use crate::workorder::store::StoreError;

/// A flush that failed: what it held stays in the tracker and goes with the next flush.
pub(super) struct WriteFailed<'a> {
    pub stats: &'a AvailabilityStats,
    pub error: &'a StoreError,
}

impl Event for WriteFailed<'_> {
    fn count(&self) {
        self.stats.write_failures.fetch_add(1, Relaxed);
    }

    fn log(&self, suppressed: u64) {
        error!(
            error = %self.error,
            failures = self.stats.write_failures.load(Relaxed),
            suppressed,
            "availability history not written; kept for the next flush"
        );
    }
}
