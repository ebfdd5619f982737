//! The values that flow from the pollers to the telemetry writer and the rule engine.

use std::fmt;
use std::sync::Arc;

/// An asset id as configured (`devices[].id`), cheap to clone.
pub type AssetId = Arc<str>;

/// A decoded point value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

impl Value {
    /// The value as a number, for rules and display (`true` is 1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            Value::Bool(v) => Some(if *v { 1.0 } else { 0.0 }),
            Value::Str(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Float(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(v) => write!(f, "{v}"),
        }
    }
}

/// How trustworthy a sample is. Only `Good` samples carry values into telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    /// The read failed (timeout, exception, malformed frame).
    CommError,
    /// The raw value was the point's `na` sentinel.
    NotAvailable,
    /// The value fell outside the point's `min`/`max`.
    OutOfRange,
}

/// Everything read from one device in one poll: the unit that telemetry writes as one line.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Index of the device in the running configuration.
    pub device: usize,
    /// Nanoseconds since the Unix epoch, taken when the response arrived.
    pub timestamp_ns: i64,
    /// Good values only, as (point index in the device's profile, value).
    pub values: Vec<(usize, Value)>,
}

/// Per-device poll outcome, written as the `device_status` measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStatus {
    pub device: usize,
    pub timestamp_ns: i64,
    pub online: bool,
    /// Wall time of the poll cycle in milliseconds (0 when not polled this interval).
    pub poll_ms: f64,
    /// Failed requests and bad values in this cycle.
    pub errors: u64,
}

/// What the pollers and the maintenance loop hand to telemetry.
#[derive(Debug, Clone)]
pub enum Record {
    Reading(Reading),
    Status(DeviceStatus),
    /// A work-order lifecycle event, written as a `work_order` line (Grafana annotations).
    WorkOrder(Box<WorkOrderMark>),
    /// Fires once every record sent before it is synced in the telemetry log (accepted): an
    /// MQTT QoS 1 message is acknowledged then.
    Ack(Ack),
}

/// What telemetry writes of a work-order event: who, what, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkOrderMark {
    pub id: i64,
    pub asset: String,
    pub rule: String,
    /// `corrective` or `preventive`.
    pub kind: &'static str,
    pub priority: &'static str,
    /// The work order's status after the event.
    pub status: &'static str,
    /// The event: `opened`, `acknowledged`, `resolved`, ...
    pub event: &'static str,
    pub title: String,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
}

/// A one-time signal from the telemetry log that records are accepted. Dropped unfired (the
/// batch was lost, or the gateway stopped first), its receiver sees an error.
#[derive(Debug, Clone)]
pub struct Ack(Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>);

impl Ack {
    pub fn new() -> (Ack, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Ack(Arc::new(std::sync::Mutex::new(Some(tx)))), rx)
    }

    pub fn fire(&self) {
        let tx = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
    }
}

/// The current time in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}
