//! The subscriber's operational events (see [`crate::events`]): device messages and values not
//! taken, counted per cause (and in the device's `errors`) and logged at most once per 10 s per
//! cause.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing::warn;

use crate::events::Event;
use crate::mqtt::MqttStats;
use crate::mqtt::payload::{Cause, TimeWindow};

/// A message not taken: oversized, for no device or point, or a payload that cannot be read.
pub(super) struct MessageRejected<'a> {
    pub stats: &'a MqttStats,
    pub cause: Cause,
    pub topic: &'a str,
    pub detail: &'a str,
    /// The device's payload errors, when the message reached a device.
    pub device_errors: Option<&'a AtomicU64>,
}

impl Event for MessageRejected<'_> {
    fn count(&self) {
        self.stats.count(self.cause, 1);
        if let Some(errors) = self.device_errors {
            errors.fetch_add(1, Relaxed);
        }
    }

    fn log(&self, suppressed: u64) {
        warn!(
            cause = self.cause.as_str(),
            topic = self.topic,
            detail = self.detail,
            suppressed,
            "MQTT message not taken"
        );
    }
}

/// A message whose payload time is outside the window taken ([mqtt] max_timestamp_age,
/// max_timestamp_ahead).
pub(super) struct TimestampRefused<'a> {
    pub stats: &'a MqttStats,
    pub device_errors: &'a AtomicU64,
    pub topic: &'a str,
    pub payload_ns: i64,
    pub received_ns: i64,
    pub window: &'a TimeWindow,
}

impl Event for TimestampRefused<'_> {
    fn count(&self) {
        self.stats.count(Cause::TimestampOutOfRange, 1);
        self.device_errors.fetch_add(1, Relaxed);
    }

    fn log(&self, suppressed: u64) {
        let ahead_s = (self.payload_ns - self.received_ns) as f64 / 1e9;
        warn!(
            cause = "timestamp_out_of_range",
            topic = self.topic,
            payload_time_minus_now_s = ahead_s,
            max_age = %humantime::format_duration(self.window.max_age),
            max_ahead = %humantime::format_duration(self.window.max_ahead),
            suppressed,
            "MQTT message refused: its payload time is too old or ahead of the clock ([mqtt] max_timestamp_age, max_timestamp_ahead)"
        );
    }
}

/// Values of a message left out because their type does not fit their point.
pub(super) struct WrongTypeValues<'a> {
    pub stats: &'a MqttStats,
    pub device_errors: &'a AtomicU64,
    pub topic: &'a str,
    pub values: u32,
}

impl Event for WrongTypeValues<'_> {
    fn count(&self) {
        self.stats.count(Cause::WrongType, u64::from(self.values));
        self.device_errors
            .fetch_add(u64::from(self.values), Relaxed);
    }

    fn log(&self, suppressed: u64) {
        warn!(
            cause = "wrong_type",
            topic = self.topic,
            values = self.values,
            suppressed,
            "MQTT values of the wrong type left out"
        );
    }
}

/// A payload timestamp missing or unreadable: the time of receipt is used.
pub(super) struct BadTimestamp<'a> {
    pub stats: &'a MqttStats,
    pub topic: &'a str,
}

impl Event for BadTimestamp<'_> {
    fn count(&self) {
        self.stats.count(Cause::BadTimestamp, 1);
    }

    fn log(&self, suppressed: u64) {
        warn!(
            cause = "bad_timestamp",
            topic = self.topic,
            suppressed,
            "MQTT payload timestamp missing or unreadable; the time of receipt is used"
        );
    }
}
