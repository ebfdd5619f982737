//! The MQTT connection: one task owns rumqttc's event loop; everyone else publishes through a
//! cheap [`MqttClient`] handle.
//!
//! rumqttc moves nothing unless its event loop is polled, and the polling task must never wait
//! on the request channel (a full channel would wait for itself). So the owner task only polls
//! and hands events on without waiting: device messages to the subscriber task (unbounded; the
//! broker sends at most its in-flight window of unacknowledged QoS 1 messages, and QoS 0 ones
//! are dropped by the subscriber when telemetry is full), PUBACKs to the [`PublishTracker`].
//!
//! What rumqttc leaves to us: it reconnects at once on every poll after an error,
//! so the owner sleeps with exponential backoff and jitter (0.5 s to 30 s, reset on CONNACK);
//! it does not resubscribe, so every CONNACK resubscribes; with a clean session queued QoS 1
//! messages are dropped, so the session is persistent (`clean_session = false`, a stable client
//! id) and acks are manual: the subscriber acknowledges a QoS 1 message once telemetry has it.
//! Each CONNACK publishes a retained `online` on the status topic; the last will is a retained
//! `offline`, and a clean shutdown publishes `offline` itself (a DISCONNECT cancels the will).

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, Publish, QoS,
    Request, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::MqttStats;
use super::settings::{MAX_OUTGOING_PACKET, MqttSettings};
use super::tracker::{PublishTracker, Unconfirmed};
use crate::backoff::Backoff;
use crate::events::{Event as _, LogLimiter};

/// rumqttc's request channel: publishes, acks, subscriptions waiting for the event loop.
const REQUEST_CAP: usize = 4096;
/// Reconnect backoff bounds.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a clean shutdown waits for `offline` and DISCONNECT to go out.
const GOODBYE: Duration = Duration::from_secs(2);
/// Device messages waiting for the subscriber beyond which QoS 0 ones are dropped (QoS 1 ones
/// are bounded by the broker's in-flight window: they are acknowledged only once taken).
pub const MAX_WAITING_QOS0: usize = 10_000;

/// The device messages the connection hands to the subscriber.
pub struct IncomingMessages {
    rx: mpsc::UnboundedReceiver<Publish>,
    waiting: Arc<AtomicUsize>,
}

impl IncomingMessages {
    pub async fn recv(&mut self) -> Option<Publish> {
        let p = self.rx.recv().await?;
        self.waiting.fetch_sub(1, Relaxed);
        Some(p)
    }
}

/// Why a publish did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the MQTT client's queue is full")]
    Full,
    #[error("message of {0} bytes is over the client's packet limit")]
    TooLarge(usize),
    #[error("invalid topic {0:?}")]
    InvalidTopic(String),
    #[error("not confirmed by the broker: {0}")]
    NotConfirmed(Unconfirmed),
}

struct Inner {
    client: AsyncClient,
    tracker: Mutex<PublishTracker>,
    stats: Arc<MqttStats>,
    /// The subscriptions: made on every CONNACK, changed by a configuration reload.
    filters: Mutex<Vec<String>>,
    /// SUBSCRIBEs handed to rumqttc and not yet written, oldest first; then by packet id until
    /// their SUBACK: which filters a refusal is about.
    subscribes: Mutex<Subscribes>,
}

#[derive(Default)]
struct Subscribes {
    queued: std::collections::VecDeque<Vec<String>>,
    sent: std::collections::HashMap<u16, Vec<String>>,
}

/// A handle to the running connection; cheap to clone.
#[derive(Clone)]
pub struct MqttClient {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MqttClient {
    pub fn stats(&self) -> &Arc<MqttStats> {
        &self.inner.stats
    }

    /// The subscriptions made on every CONNACK.
    pub fn subscriptions(&self) -> Vec<String> {
        lock(&self.inner.filters).clone()
    }

    /// Replaces the subscriptions (a configuration reload): subscribes to the new filters and
    /// unsubscribes from those no longer wanted, now (queued until the connection is up) and on
    /// every later CONNACK. Returns (added, removed).
    pub fn set_subscriptions(&self, filters: Vec<String>) -> (Vec<String>, Vec<String>) {
        let mut current = lock(&self.inner.filters);
        let added: Vec<String> = filters
            .iter()
            .filter(|f| !current.contains(f))
            .cloned()
            .collect();
        let removed: Vec<String> = current
            .iter()
            .filter(|f| !filters.contains(f))
            .cloned()
            .collect();
        *current = filters;
        drop(current);
        if !added.is_empty() && !self.subscribe(added.clone()) {
            warn!(
                filters = added.len(),
                "MQTT request queue full: the new subscriptions are made at the next reconnect"
            );
        }
        for f in &removed {
            if self.inner.client.try_unsubscribe(f.clone()).is_err() {
                warn!(filter = %f, "MQTT request queue full: not unsubscribed");
            }
        }
        (added, removed)
    }

    /// Queues one SUBSCRIBE of `filters` (QoS 1); false when rumqttc's queue is full.
    fn subscribe(&self, filters: Vec<String>) -> bool {
        let mut subs = lock(&self.inner.subscribes);
        let req = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        match self.inner.client.try_subscribe_many(req) {
            Ok(()) => {
                // Bounded: a SUBSCRIBE lost with a connection never shows up as written.
                if subs.queued.len() >= 64 {
                    subs.queued.pop_front();
                }
                subs.queued.push_back(filters);
                true
            }
            Err(_) => false,
        }
    }

    /// Queues a publish without waiting (telemetry, status): `Full` when rumqttc's channel is.
    pub fn try_publish(
        &self,
        topic: &str,
        qos1: bool,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        self.enqueue(topic, qos1, retain, payload, None)
            .map_err(|(e, _)| e)
    }

    fn enqueue(
        &self,
        topic: &str,
        qos1: bool,
        retain: bool,
        payload: Vec<u8>,
        waiter: Option<super::tracker::Waiter>,
    ) -> Result<(), (PublishError, Option<super::tracker::Waiter>)> {
        // rumqttc fails the whole connection on an outgoing packet over its limit, and then
        // re-sends it after every reconnect: never hand it one.
        let size = topic.len() + payload.len() + 16;
        if size > MAX_OUTGOING_PACKET {
            return Err((PublishError::TooLarge(size), waiter));
        }
        let qos = if qos1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        if topic.is_empty() || !rumqttc::valid_topic(topic) {
            return Err((PublishError::InvalidTopic(topic.to_string()), waiter));
        }
        // Enqueue and hand over under one lock: the tracker's queue is in rumqttc's order.
        let mut t = lock(&self.inner.tracker);
        t.enqueue(qos1, waiter);
        match self.inner.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => Ok(()),
            Err(_) => Err((PublishError::Full, t.unqueue_last())),
        }
    }

    /// Publishes with QoS 1 and returns once the broker acknowledged it (PUBACK), or with an
    /// error after `timeout`. A message not confirmed may still arrive later (a duplicate of
    /// the retry), which at-least-once delivery allows.
    pub async fn publish_confirmed(
        &self,
        topic: &str,
        retain: bool,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), PublishError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        let mut waiter = Some(tx);
        loop {
            match self.enqueue(topic, true, retain, payload.clone(), waiter.take()) {
                Ok(()) => break,
                Err((PublishError::Full, w)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(PublishError::Full);
                    }
                    waiter = w;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(PublishError::NotConfirmed(e)),
            Ok(Err(_)) => Err(PublishError::NotConfirmed(Unconfirmed::ConnectionStopped)),
            Err(_) => Err(PublishError::NotConfirmed(Unconfirmed::NoPuback(timeout))),
        }
    }

    /// Acknowledges a device message (manual acks; QoS 0 needs none).
    pub async fn ack(&self, p: &Publish) {
        if p.qos != QoS::AtMostOnce {
            let _ = self.inner.client.ack(p).await;
        }
    }
}

/// The owner of the event loop, ready to run.
pub struct MqttConnection {
    eventloop: EventLoop,
    client: MqttClient,
    incoming: mpsc::UnboundedSender<Publish>,
    waiting: Arc<AtomicUsize>,
    status_topic: String,
    url: String,
}

/// Why the client cannot be built: its TLS settings (checked when the configuration is read,
/// so this is rare).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("ca_file: {0}")]
    CaFile(native_tls::Error),
    #[error("cert_file/key_file: {0}")]
    Identity(native_tls::Error),
    #[error("TLS: {0}")]
    Tls(native_tls::Error),
}

fn tls_transport(s: &MqttSettings) -> Result<Option<Transport>, ConnectError> {
    let Some(tls) = &s.tls else { return Ok(None) };
    let mut b = native_tls::TlsConnector::builder();
    if let Some(ca) = &tls.ca {
        let cert = native_tls::Certificate::from_pem(ca).map_err(ConnectError::CaFile)?;
        b.add_root_certificate(cert);
    }
    if let Some((cert, key)) = &tls.identity {
        let id = native_tls::Identity::from_pkcs8(cert, key.0.as_bytes())
            .map_err(ConnectError::Identity)?;
        b.identity(id);
    }
    let connector = b.build().map_err(ConnectError::Tls)?;
    Ok(Some(Transport::tls_with_config(
        TlsConfiguration::NativeConnector(connector),
    )))
}

/// Builds the client and its connection (not yet connected): the handle for publishers, the
/// connection for [`MqttConnection::run`], and the stream of device messages for the subscriber.
pub fn connect(
    s: &MqttSettings,
    stats: Arc<MqttStats>,
) -> Result<(MqttClient, MqttConnection, IncomingMessages), ConnectError> {
    let mut o = MqttOptions::new(s.client_id.clone(), s.host.clone(), s.port);
    o.set_keep_alive(s.keep_alive);
    o.set_clean_session(false);
    o.set_manual_acks(true);
    o.set_max_packet_size(s.max_incoming_packet(), MAX_OUTGOING_PACKET);
    o.set_last_will(LastWill::new(
        s.status_topic.clone(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &s.username {
        let password = s.password.as_ref().map(|p| p.0.clone()).unwrap_or_default();
        o.set_credentials(user.clone(), password);
    }
    if let Some(t) = tls_transport(s)? {
        o.set_transport(t);
    }
    let (client, eventloop) = AsyncClient::new(o, REQUEST_CAP);
    let client = MqttClient {
        inner: Arc::new(Inner {
            client,
            tracker: Mutex::new(PublishTracker::default()),
            stats,
            filters: Mutex::new(s.routing.router.filters()),
            subscribes: Mutex::default(),
        }),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    Ok((
        client.clone(),
        MqttConnection {
            eventloop,
            client,
            incoming: tx,
            waiting: waiting.clone(),
            status_topic: s.status_topic.clone(),
            url: s.url.clone(),
        },
        IncomingMessages { rx, waiting },
    ))
}

/// A connection attempt that failed, or a connection lost; a backoff follows either
/// (`facilityd_mqtt_connection_errors_total`). A lost connection is always logged, failed
/// attempts at most once per 30 s (see [`crate::events`]).
struct ConnectionFailed<'a> {
    stats: &'a MqttStats,
    broker: &'a str,
    error: &'a rumqttc::ConnectionError,
    retry_in: Duration,
    /// The connection was up.
    lost: bool,
}

impl crate::events::Event for ConnectionFailed<'_> {
    fn count(&self) {
        self.stats.connection_errors.fetch_add(1, Relaxed);
        self.stats.connected.store(false, Relaxed);
    }

    fn log(&self, suppressed: u64) {
        let (broker, e) = (self.broker, self.error);
        let retry_in_ms = self.retry_in.as_millis() as u64;
        if self.lost {
            warn!(broker = %broker, error = %e, retry_in_ms, "MQTT connection lost");
        } else {
            warn!(broker = %broker, error = %e, retry_in_ms, suppressed, "cannot connect to the MQTT broker");
        }
    }
}

/// Publishes rumqttc moved out of its channel but has not written (packet id still 0): they
/// are dropped when the broker has no session for us.
fn unsent_in_pending(el: &EventLoop) -> usize {
    el.pending
        .iter()
        .filter(|r| matches!(r, Request::Publish(p) if p.pkid == 0))
        .count()
}

impl MqttConnection {
    /// Polls the event loop until `stop`, then publishes `offline` and disconnects.
    pub async fn run(mut self, stop: CancellationToken) {
        let stats = self.client.inner.stats.clone();
        // Doubling with jitter (50-100 % of the step).
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut log = LogLimiter::new(Duration::from_secs(30));
        let mut connected = false;
        let mut need_subscribe = false;
        let mut need_online = false;
        loop {
            let unsent = if self.eventloop.network.is_none() {
                unsent_in_pending(&self.eventloop)
            } else {
                0
            };
            let event = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                e = self.eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    connected = true;
                    backoff.reset();
                    stats.connected.store(true, Relaxed);
                    stats.connects.fetch_add(1, Relaxed);
                    lock(&self.client.inner.tracker).on_session(ack.session_present, unsent);
                    let subscriptions = lock(&self.client.inner.filters).len();
                    // SUBACKs of the last connection will not come.
                    lock(&self.client.inner.subscribes).sent.clear();
                    info!(broker = %self.url, session_present = ack.session_present,
                        subscriptions, "MQTT connected");
                    need_subscribe = subscriptions > 0;
                    need_online = true;
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    stats.received.fetch_add(1, Relaxed);
                    if p.qos == QoS::AtMostOnce && self.waiting.load(Relaxed) >= MAX_WAITING_QOS0 {
                        stats.dropped.fetch_add(1, Relaxed);
                    } else {
                        // Never waits. Once the subscriber has stopped (shutdown) the message
                        // is simply not acknowledged: the broker delivers it again next time.
                        self.waiting.fetch_add(1, Relaxed);
                        if self.incoming.send(p).is_err() {
                            self.waiting.fetch_sub(1, Relaxed);
                        }
                    }
                }
                Ok(Event::Incoming(Incoming::PubAck(a))) => {
                    lock(&self.client.inner.tracker).on_puback(a.pkid);
                }
                Ok(Event::Incoming(Incoming::SubAck(s))) => {
                    let filters = lock(&self.client.inner.subscribes).sent.remove(&s.pkid);
                    for (i, code) in s.return_codes.iter().enumerate() {
                        if matches!(code, SubscribeReasonCode::Failure) {
                            let filter = filters
                                .as_ref()
                                .and_then(|f| f.get(i))
                                .map_or("?", String::as_str);
                            error!(
                                filter,
                                "the broker refused the subscription (check its ACL)"
                            );
                        }
                    }
                }
                Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                    let mut subs = lock(&self.client.inner.subscribes);
                    if let Some(f) = subs.queued.pop_front() {
                        subs.sent.insert(pkid, f);
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    lock(&self.client.inner.tracker).on_outgoing_publish(pkid);
                }
                Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                    lock(&self.client.inner.tracker).on_await_ack(pkid);
                }
                Ok(_) => {}
                Err(e) => {
                    let wait = backoff.next_wait();
                    let event = ConnectionFailed {
                        stats: &stats,
                        broker: &self.url,
                        error: &e,
                        retry_in: wait,
                        lost: connected,
                    };
                    if connected {
                        event.emit_if(true);
                    } else {
                        event.emit(&mut log);
                    }
                    connected = false;
                    need_subscribe = false;
                    need_online = false;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            }
            if need_subscribe {
                let filters = lock(&self.client.inner.filters).clone();
                if filters.is_empty() || self.client.subscribe(filters) {
                    need_subscribe = false;
                } else {
                    debug!("request queue full; subscribing after the next event");
                }
            }
            if need_online
                && self
                    .client
                    .try_publish(&self.status_topic, true, true, b"online".to_vec())
                    .is_ok()
            {
                need_online = false;
                stats.published_status.fetch_add(1, Relaxed);
            }
        }
        self.goodbye(connected).await;
        stats.connected.store(false, Relaxed);
    }

    /// `offline` (retained) and DISCONNECT, polled out for at most [`GOODBYE`].
    async fn goodbye(&mut self, connected: bool) {
        if !connected {
            return;
        }
        if self
            .client
            .try_publish(&self.status_topic, true, true, b"offline".to_vec())
            .is_ok()
        {
            self.client
                .inner
                .stats
                .published_status
                .fetch_add(1, Relaxed);
        }
        let _ = self.client.inner.client.try_disconnect();
        let done = async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        lock(&self.client.inner.tracker).on_outgoing_publish(pkid)
                    }
                    Ok(_) => {}
                }
            }
        };
        if tokio::time::timeout(GOODBYE, done).await.is_err() {
            warn!("MQTT: could not say goodbye within 2 s (the broker publishes the last will)");
        } else {
            info!("MQTT disconnected");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut b = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let first = b.next_wait();
        assert!(first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN);
        let mut last = first;
        for _ in 0..20 {
            last = b.next_wait();
            assert!(last <= BACKOFF_MAX);
        }
        assert!(last >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.next_wait() <= BACKOFF_MIN);
    }
}
