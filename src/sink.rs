//! Where the producers of records (the Modbus pollers, the MQTT subscriber) hand them over.
//!
//! A record goes two ways at once. Its observers (the latest values, the rule engine, the MQTT
//! republisher) see it as it is handed over, without waiting for anything; then it joins the
//! queue to the telemetry log. So a disk slow to take the log's writes holds up telemetry, never
//! a work order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendError, TrySendError};

use crate::model::Record;

/// Sees every record handed to a [`RecordSink`], before it is queued for the log. It must not
/// block: it runs in the producer's task.
pub trait Observer: Send + Sync {
    fn observe(&self, record: &Record);
}

/// The producers' handle: the queue to the telemetry log and the observers beside it.
#[derive(Clone)]
pub struct RecordSink {
    tx: mpsc::Sender<Record>,
    /// Records the log's queue had no room for ([`RecordSink::offer`]).
    dropped: Arc<AtomicU64>,
    observer: Option<Arc<dyn Observer>>,
}

impl RecordSink {
    pub fn new(tx: mpsc::Sender<Record>, dropped: Arc<AtomicU64>) -> Self {
        RecordSink {
            tx,
            dropped,
            observer: None,
        }
    }

    /// The same queue, with `observer` seeing every record first.
    pub fn observed_by(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn observe(&self, record: &Record) {
        if let Some(o) = &self.observer {
            o.observe(record);
        }
    }

    /// Hands a poll's record over without waiting. When the log's queue is full it is not
    /// logged and is counted (the next poll brings fresh values); the observers saw it anyway.
    pub fn offer(&self, record: Record) {
        self.observe(&record);
        if let Err(TrySendError::Full(_)) = self.tx.try_send(record) {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Like [`RecordSink::offer`], but the caller counts a full queue itself (an MQTT QoS 0
    /// message).
    pub fn try_send(&self, record: Record) -> Result<(), TrySendError<Record>> {
        self.observe(&record);
        self.tx.try_send(record)
    }

    /// Waits for room in the log's queue (an MQTT QoS 1 message, acknowledged only once
    /// logged). The observers see the record at once, before the wait.
    pub async fn send(&self, record: Record) -> Result<(), SendError<Record>> {
        self.observe(&record);
        self.tx.send(record).await
    }
}
