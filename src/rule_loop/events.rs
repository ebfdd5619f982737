//! The rule loop's operational events (see [`crate::events`]): store writes that failed (kept
//! and retried) and work-order annotations dropped, logged at most once per 10 s together.

use std::sync::atomic::Ordering::Relaxed;

use tracing::{error, warn};

use super::RuleLoopStats;
use crate::events::Event;
use crate::workorder::store::StoreError;

/// A write to the work-order store that failed; what it wrote is kept for the next attempt
/// (`facilityd_work_order_store_errors_total`).
pub(super) struct StoreFailed<'a> {
    pub stats: &'a RuleLoopStats,
    pub error: &'a StoreError,
    pub write: StoreWrite,
}

pub(super) enum StoreWrite {
    /// The engine's state rows.
    RuleState,
    /// A batch of this many triggers (with the state that goes with them).
    Triggers(usize),
}

impl Event for StoreFailed<'_> {
    fn count(&self) {
        self.stats.store_errors.fetch_add(1, Relaxed);
    }

    fn log(&self, suppressed: u64) {
        let e = self.error;
        match self.write {
            StoreWrite::RuleState => {
                warn!(error = %e, suppressed, "cannot save the rule state; keeping it for the next attempt");
            }
            StoreWrite::Triggers(triggers) => {
                error!(error = %e, triggers, suppressed, "cannot record work-order changes; retrying");
            }
        }
    }
}

/// A work order's `work_order` telemetry line dropped because the telemetry queue was full.
pub(super) struct AnnotationDropped<'a> {
    pub stats: &'a RuleLoopStats,
    pub work_order: i64,
}

impl Event for AnnotationDropped<'_> {
    fn count(&self) {
        self.stats.annotations_dropped.fetch_add(1, Relaxed);
    }

    fn log(&self, suppressed: u64) {
        warn!(
            id = self.work_order,
            suppressed, "telemetry queue full: work_order annotation dropped"
        );
    }
}
