//! Device messages to readings: route the topic to its device, read the
//! payload, hand the reading to telemetry, and acknowledge a QoS 1 message only once the
//! telemetry log has synced its readings (a [`Record::Ack`] follows them down the pipeline),
//! so a crash before that leaves it with the broker, which delivers it again. Acknowledgements
//! go out in the order the messages came, from a task of their own, so that the subscriber
//! goes on reading while the log's group commit is under way.
//!
//! Bad input never stops the others: an oversized payload, a topic for no device, malformed
//! JSON or a value of the wrong type is counted per cause (/metrics), logged at most once per
//! 10 s per cause, and acknowledged (it would never read better the next time).
//!
//! A QoS 1 message waits for room in the telemetry channel (back-pressure up to the broker);
//! a QoS 0 message finding it full is dropped and counted, as QoS 0 allows.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rumqttc::{Publish, QoS};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::MqttStats;
use super::client::{IncomingMessages, MqttClient};
use super::payload::{Cause, PayloadMap, TimeWindow};
use super::settings::Routing;
use super::topic::Unrouted;
use crate::device::{Device, DeviceSource};
use crate::events::{Event as _, LogLimiter};
use crate::modbus::stats::DeviceStats;
use crate::model::{Ack, DeviceStatus, Reading, Record, now_ns};
use crate::sink::RecordSink;

mod events;
use events::{BadTimestamp, MessageRejected, TimestampRefused, WrongTypeValues};

/// How long a stopping subscriber waits for the log to sync what it has taken.
const ACK_GRACE: Duration = Duration::from_secs(3);

/// What became of a message.
enum Taken {
    /// Telemetry has closed (shutdown): leave the message unacknowledged.
    Closed,
    /// Nothing for telemetry (bad input, counted; or QoS 0): acknowledge in turn.
    Nothing,
    /// Readings handed to telemetry: acknowledge once the log has synced them.
    Records,
}

/// Acknowledges messages in the order they came, each once its readings are synced. A message
/// whose readings were lost (the log writer gone) is left unacknowledged: the broker keeps it
/// for the persistent session and delivers it again.
async fn run_acks(
    client: MqttClient,
    mut rx: mpsc::Receiver<(Publish, Option<oneshot::Receiver<()>>)>,
    stats: Arc<MqttStats>,
) {
    while let Some((p, wait)) = rx.recv().await {
        if let Some(done) = wait
            && done.await.is_err()
        {
            stats.unacked.fetch_add(1, Relaxed);
            continue;
        }
        client.ack(&p).await;
    }
}

/// The devices MQTT messages are routed to, replaced whole by a configuration reload (a
/// `watch` channel: the subscriber and the status writer always see one consistent set).
#[derive(Debug, Default)]
pub struct MqttDevices {
    /// The routing's device indexes are positions in `devices`.
    pub routing: Arc<Routing>,
    /// Every device of the configuration (Modbus ones too, for the indexes to line up).
    pub devices: Vec<MqttDevice>,
}

/// One device as the MQTT side sees it.
#[derive(Debug, Clone)]
pub struct MqttDevice {
    pub device: Arc<Device>,
    /// The `device` of its records (see `crate::reload`).
    pub slot: usize,
    pub stats: Arc<DeviceStats>,
    /// Payload errors since the last `device_status` line (kept by a reload that leaves the
    /// device unchanged).
    pub errors: Arc<AtomicU64>,
}

impl MqttDevices {
    fn get(&self, i: usize) -> Option<&MqttDevice> {
        self.devices.get(i)
    }
}

pub struct Subscriber {
    pub client: MqttClient,
    pub devices: watch::Receiver<Arc<MqttDevices>>,
    pub stats: Arc<MqttStats>,
    pub max_payload_bytes: usize,
    /// Payload times taken (others refuse the message).
    pub time_window: TimeWindow,
    pub sink: RecordSink,
}

struct Logs {
    by_cause: [LogLimiter; Cause::ALL.len()],
}

impl Logs {
    fn new() -> Self {
        Logs {
            by_cause: std::array::from_fn(|_| LogLimiter::new(Duration::from_secs(10))),
        }
    }
    fn of(&mut self, c: Cause) -> &mut LogLimiter {
        let i = Cause::ALL.iter().position(|x| *x == c).unwrap_or(0);
        &mut self.by_cause[i]
    }
}

impl Subscriber {
    /// Handles messages until `stop` or the connection ends.
    pub async fn run(self, mut rx: IncomingMessages, stop: CancellationToken) {
        let mut logs = Logs::new();
        let (ack_tx, ack_rx) = mpsc::channel::<(Publish, Option<oneshot::Receiver<()>>)>(4096);
        let acker = tokio::spawn(run_acks(self.client.clone(), ack_rx, self.stats.clone()));
        loop {
            let p = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                p = rx.recv() => match p { Some(p) => p, None => break },
            };
            let taken = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                t = self.take(&p, &mut logs) => t,
            };
            let wait = match taken {
                Taken::Closed => break,
                Taken::Nothing => None,
                Taken::Records => {
                    let (ack, done) = Ack::new();
                    if self.sink.send(Record::Ack(ack)).await.is_err() {
                        break;
                    }
                    Some(done)
                }
            };
            if p.qos != QoS::AtMostOnce && ack_tx.send((p, wait)).await.is_err() {
                break;
            }
        }
        // Acknowledge what the log syncs in the next moments; the rest comes again.
        drop(ack_tx);
        let _ = tokio::time::timeout(ACK_GRACE, acker).await;
    }

    fn reject(&self, logs: &mut Logs, cause: Cause, topic: &str, detail: &str) {
        MessageRejected {
            stats: &self.stats,
            cause,
            topic,
            detail,
            device_errors: None,
        }
        .emit(logs.of(cause));
    }

    /// Turns one message into readings and hands them to telemetry.
    async fn take(&self, p: &Publish, logs: &mut Logs) -> Taken {
        let received = now_ns();
        if p.payload.len() > self.max_payload_bytes {
            let detail = format!(
                "{} bytes, over max_payload_bytes = {}",
                p.payload.len(),
                self.max_payload_bytes
            );
            self.reject(logs, Cause::Oversized, &p.topic, &detail);
            return Taken::Nothing;
        }
        let view = self.devices.borrow().clone();
        let deliveries = match view.routing.router.route(&p.topic) {
            Ok(d) => d,
            Err(why) => {
                let detail = match why {
                    Unrouted::NoTemplate => "no subscription template matches".to_string(),
                    Unrouted::UnknownAsset(a) => format!("no device {a:?} for this topic"),
                    Unrouted::Mismatch { asset, capture } => format!(
                        "{{{}}} differs from device {asset:?}'s own value",
                        capture.name()
                    ),
                };
                self.reject(logs, Cause::UnknownTopic, &p.topic, &detail);
                return Taken::Nothing;
            }
        };
        let mut accepted = false;
        for d in deliveries {
            let (Some(Some(map)), Some(dev)) =
                (view.routing.maps.get(d.device), view.get(d.device))
            else {
                continue;
            };
            let point = match d.point {
                None => None,
                Some(name) => match map.point_named(name) {
                    Some(i) => Some(i),
                    None => {
                        let detail = format!("no point {name:?} in the device's profile");
                        self.reject(logs, Cause::UnknownTopic, &p.topic, &detail);
                        continue;
                    }
                },
            };
            let reading = match self.read(dev, map, &p.payload, point, received, &p.topic, logs) {
                Some(r) => r,
                None => continue,
            };
            let record = Record::Reading(reading);
            if p.qos == QoS::AtMostOnce {
                match self.sink.try_send(record) {
                    Ok(()) => accepted = true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.stats.dropped.fetch_add(1, Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Taken::Closed,
                }
            } else if self.sink.send(record).await.is_ok() {
                accepted = true;
            } else {
                return Taken::Closed;
            }
        }
        if !accepted {
            return Taken::Nothing;
        }
        self.stats.accepted.fetch_add(1, Relaxed);
        if p.qos == QoS::AtMostOnce {
            Taken::Nothing
        } else {
            Taken::Records
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        dev: &MqttDevice,
        map: &PayloadMap,
        payload: &[u8],
        point: Option<usize>,
        received: i64,
        topic: &str,
        logs: &mut Logs,
    ) -> Option<Reading> {
        let (errors, stats) = (&dev.errors, &dev.stats);
        let decoded = match map.decode(payload, point, received) {
            Ok(d) => d,
            Err(cause) => {
                MessageRejected {
                    stats: &self.stats,
                    cause,
                    topic,
                    detail: "the payload cannot be read",
                    device_errors: Some(errors),
                }
                .emit(logs.of(cause));
                return None;
            }
        };
        if decoded.payload_time && !self.time_window.accepts(decoded.timestamp_ns, received) {
            TimestampRefused {
                stats: &self.stats,
                device_errors: errors,
                topic,
                payload_ns: decoded.timestamp_ns,
                received_ns: received,
                window: &self.time_window,
            }
            .emit(logs.of(Cause::TimestampOutOfRange));
            return None;
        }
        if decoded.wrong_type > 0 {
            WrongTypeValues {
                stats: &self.stats,
                device_errors: errors,
                topic,
                values: decoded.wrong_type,
            }
            .emit(logs.of(Cause::WrongType));
        }
        if decoded.bad_timestamp {
            BadTimestamp {
                stats: &self.stats,
                topic,
            }
            .emit(logs.of(Cause::BadTimestamp));
        }
        DeviceStats::add(&stats.bad_values, u64::from(decoded.bad_values));
        DeviceStats::add(&stats.unmapped, u64::from(decoded.unmapped));
        if decoded.values.is_empty() {
            debug!(topic, "MQTT message with no value for the device's points");
            return None;
        }
        // Liveness is the time of receipt: a payload time (even one inside the window) says
        // when the device measured, not that it is talking now.
        stats.last_good_ns.fetch_max(received, Relaxed);
        Some(Reading {
            device: dev.slot,
            timestamp_ns: decoded.timestamp_ns,
            values: decoded.values,
        })
    }
}

/// Writes `device_status` for each MQTT device every `interval`: `online` while the broker
/// connection is up (the broker is the device's link; an asset's own silence is the `offline`
/// rule's business), `errors` = payload errors since the last line, `poll_ms` 0. Follows the
/// device set through reloads: an unchanged device keeps its schedule.
pub async fn run_status(
    mut devices: watch::Receiver<Arc<MqttDevices>>,
    stats: Arc<MqttStats>,
    tx: RecordSink,
    stop: CancellationToken,
) {
    // Next status line, by slot: a device that stays keeps its schedule, a new one is due now.
    let mut due: HashMap<usize, Instant> = HashMap::new();
    let mut view = devices.borrow_and_update().clone();
    let schedule = |view: &MqttDevices, due: &mut HashMap<usize, Instant>| {
        let now = Instant::now();
        let mut next: HashMap<usize, Instant> = mqtt_devices(view)
            .map(|d| (d.slot, due.get(&d.slot).copied().unwrap_or(now)))
            .collect();
        std::mem::swap(due, &mut next);
    };
    schedule(&view, &mut due);
    let mut watching = true;
    loop {
        let next = due.values().min().copied();
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = devices.changed(), if watching => {
                match changed {
                    Ok(()) => {
                        view = devices.borrow_and_update().clone();
                        schedule(&view, &mut due);
                    }
                    // The sender is gone (shutdown): keep the last set.
                    Err(_) => watching = false,
                }
                continue;
            }
            _ = sleep_until_some(next) => {}
        }
        let now = Instant::now();
        let online = stats.connected.load(Relaxed);
        for d in mqtt_devices(&view) {
            let Some(at) = due.get_mut(&d.slot) else {
                continue;
            };
            if *at > now {
                continue;
            }
            *at = now + d.device.interval;
            d.stats.online.store(online, Relaxed);
            let errors = d.errors.swap(0, Relaxed);
            let status = Record::Status(DeviceStatus {
                device: d.slot,
                timestamp_ns: now_ns(),
                online,
                poll_ms: 0.0,
                errors,
            });
            if tx.try_send(status).is_err() {
                debug!("telemetry full: device_status of an MQTT device skipped");
            }
        }
    }
}

fn mqtt_devices(view: &MqttDevices) -> impl Iterator<Item = &MqttDevice> {
    view.devices
        .iter()
        .filter(|d| matches!(d.device.source, DeviceSource::Mqtt { .. }))
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending::<()>().await,
    }
}
