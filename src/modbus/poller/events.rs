//! The link poller's operational events (see [`crate::events`]): a read that failed or was
//! refused, each counted per device and logged at most once per 30 s per device.

use tokio_modbus::ExceptionCode;
use tracing::warn;

use super::ReadError;
use crate::device::Device;
use crate::events::Event;
use crate::modbus::link::Link;
use crate::modbus::plan::ReadRequest;
use crate::modbus::stats::DeviceStats;

/// A read that got no usable answer: a timeout, a transport or protocol error, a malformed
/// answer, or (RTU) a garbled frame or one from another unit. Counted by kind.
pub(super) struct ReadFailed<'a> {
    pub device: &'a Device,
    pub stats: &'a DeviceStats,
    pub link: &'a Link,
    pub unit: u8,
    pub error: &'a ReadError,
    /// The link is dropped and reopened for it.
    pub link_fault: bool,
}

impl Event for ReadFailed<'_> {
    fn count(&self) {
        let s = self.stats;
        let counter = match self.error {
            ReadError::Timeout => &s.timeouts,
            ReadError::Malformed(_) => &s.malformed,
            ReadError::Garbled(_) => &s.crc_errors,
            ReadError::WrongUnit(_) => &s.wrong_unit,
            _ => &s.transport_errors,
        };
        DeviceStats::add(counter, 1);
    }

    fn log(&self, suppressed: u64) {
        let what = if self.link_fault {
            "read failed; reopening the link"
        } else if matches!(self.error, ReadError::Timeout) {
            "no answer"
        } else {
            "answer discarded"
        };
        warn!(device = %self.device.id, link = %self.link, unit = self.unit, error = ?self.error, suppressed, "{what}");
    }
}

/// The device answered a read with an exception that says nothing about the request plan
/// (not a hole in the map, not a gateway reporting silence).
pub(super) struct ReadRefused<'a> {
    pub device: &'a Device,
    pub stats: &'a DeviceStats,
    pub req: &'a ReadRequest,
    pub code: ExceptionCode,
}

impl Event for ReadRefused<'_> {
    fn count(&self) {
        DeviceStats::add(&self.stats.exceptions, 1);
    }

    fn log(&self, suppressed: u64) {
        let req = self.req;
        warn!(device = %self.device.id, table = req.kind.as_str(), start = req.start, count = req.count, exception = ?self.code, suppressed, "read refused");
    }
}
