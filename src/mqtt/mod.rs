//! MQTT: devices in, work orders and telemetry out, over one client connection.
//!
//! - [`settings`]: `[mqtt]` resolved (URL, TLS, credentials, client id, limits).
//! - [`topic`]: subscription templates and routing to devices; publish topic templates.
//! - [`payload`]: payloads to point values (JSON pointer, plain values, timestamps).
//! - [`tracker`]: which QoS 1 publish the broker acknowledged (pure state machine).
//! - [`client`]: the task that owns the connection (reconnect with backoff, resubscribe,
//!   status and last will) and the cheap handle others publish through.
//! - [`subscriber`]: incoming messages to readings; a QoS 1 message is acknowledged only once
//!   its readings are accepted by telemetry.
//! - [`notifier`]: `[[notify]] type = "mqtt"`, confirmed by the broker's PUBACK.
//! - [`republish`]: telemetry republished per device (`publish_telemetry`, off by default).

pub mod client;
pub mod notifier;
pub mod payload;
pub mod republish;
pub mod settings;
pub mod subscriber;
pub mod topic;
pub mod tracker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::metrics_text::{Kind, MetricsText};

pub use client::MqttClient;
pub use payload::Cause;
pub use settings::MqttSettings;

/// Counters of the MQTT client, for /metrics.
#[derive(Debug, Default)]
pub struct MqttStats {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub connection_errors: AtomicU64,
    pub received: AtomicU64,
    /// Messages that became readings handed to telemetry.
    pub accepted: AtomicU64,
    /// QoS 0 messages dropped because telemetry was full (QoS 1 ones wait instead).
    pub dropped: AtomicU64,
    /// QoS 1 messages left unacknowledged because the log lost their readings (they come again).
    pub unacked: AtomicU64,
    pub malformed: AtomicU64,
    pub wrong_type: AtomicU64,
    pub oversized: AtomicU64,
    pub unknown_topic: AtomicU64,
    pub bad_timestamp: AtomicU64,
    pub timestamp_out_of_range: AtomicU64,
    pub published_telemetry: AtomicU64,
    pub published_work_orders: AtomicU64,
    pub published_status: AtomicU64,
    /// Telemetry not republished because the client's queue was full.
    pub telemetry_dropped: AtomicU64,
    /// Work-order publishes not confirmed (retried by the outbox).
    pub work_order_failures: AtomicU64,
}

impl MqttStats {
    pub fn count(&self, cause: Cause, n: u64) {
        let c = match cause {
            Cause::Malformed => &self.malformed,
            Cause::WrongType => &self.wrong_type,
            Cause::Oversized => &self.oversized,
            Cause::UnknownTopic => &self.unknown_topic,
            Cause::BadTimestamp => &self.bad_timestamp,
            Cause::TimestampOutOfRange => &self.timestamp_out_of_range,
        };
        c.fetch_add(n, Relaxed);
    }

    pub fn get(&self, cause: Cause) -> u64 {
        match cause {
            Cause::Malformed => &self.malformed,
            Cause::WrongType => &self.wrong_type,
            Cause::Oversized => &self.oversized,
            Cause::UnknownTopic => &self.unknown_topic,
            Cause::BadTimestamp => &self.bad_timestamp,
            Cause::TimestampOutOfRange => &self.timestamp_out_of_range,
        }
        .load(Relaxed)
    }

    /// Prometheus text of these counters.
    pub fn render(&self, out: &mut MetricsText) {
        let get = |c: &AtomicU64| c.load(Relaxed);
        out.scalar(
            "facilityd_mqtt_connected",
            Kind::Gauge,
            "1 while the MQTT client is connected to the broker.",
            u64::from(self.connected.load(Relaxed)),
        );
        out.scalar(
            "facilityd_mqtt_connects_total",
            Kind::Counter,
            "Connections to the broker (CONNACK received).",
            get(&self.connects),
        );
        out.scalar(
            "facilityd_mqtt_connection_errors_total",
            Kind::Counter,
            "Failed connection attempts and lost connections (each followed by a backoff).",
            get(&self.connection_errors),
        );
        out.labelled(
            "facilityd_mqtt_messages_total",
            Kind::Counter,
            "Device messages received, accepted into telemetry, and dropped (QoS 0 while telemetry was full).",
            "result",
            &[
                ("received", get(&self.received)),
                ("accepted", get(&self.accepted)),
                ("dropped", get(&self.dropped)),
                ("unacked", get(&self.unacked)),
            ],
        );
        let causes: Vec<(&str, u64)> = Cause::ALL
            .iter()
            .map(|c| (c.as_str(), self.get(*c)))
            .collect();
        out.labelled(
            "facilityd_mqtt_payload_errors_total",
            Kind::Counter,
            "Device messages or values not taken, by cause (a bad timestamp falls back to the time of receipt).",
            "cause",
            &causes,
        );
        out.labelled(
            "facilityd_mqtt_published_total",
            Kind::Counter,
            "Messages published: work-order events (confirmed by PUBACK), telemetry, status.",
            "kind",
            &[
                ("work_order", get(&self.published_work_orders)),
                ("telemetry", get(&self.published_telemetry)),
                ("status", get(&self.published_status)),
            ],
        );
        out.labelled(
            "facilityd_mqtt_publish_failures_total",
            Kind::Counter,
            "Publishes that failed: telemetry dropped (queue full), work-order events not confirmed (retried).",
            "kind",
            &[
                ("telemetry", get(&self.telemetry_dropped)),
                ("work_order", get(&self.work_order_failures)),
            ],
        );
    }
}
