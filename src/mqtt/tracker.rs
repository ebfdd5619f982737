//! Which QoS 1 publish the broker acknowledged: a pure state machine over rumqttc's events.
//!
//! rumqttc's `publish()` only queues a request (rumqtt#349): it never says which packet id the
//! publish got, nor when its PUBACK came. The event loop does report both, in order:
//! `Outgoing::Publish(pkid)` when a queued publish is written (pkid 0 for QoS 0), and
//! `Incoming::PubAck(pkid)`. Every publish goes through [`PublishTracker::enqueue`] under the
//! same lock as its `try_publish`, so the queue here is in the order rumqttc takes the requests
//! from its channel, and the n-th new `Outgoing::Publish` belongs to the n-th queued entry.
//!
//! What rumqttc does besides, and how each is recognized:
//! - after a reconnect that resumes the session it re-sends the unacknowledged publishes with
//!   their old packet ids: an `Outgoing::Publish` of an id still awaiting its PUBACK is a
//!   re-send, not a new entry;
//! - after a reconnect *without* a session (`session_present = false`) it drops what it held
//!   (the re-sends and the requests it had moved out of its channel): those entries fail;
//! - a packet id still in use (a broker acking out of order) gives `Outgoing::AwaitAck(pkid)`
//!   and the publish goes out later: its entry fails at once (the outbox retries; the late
//!   copy is a duplicate, which at-least-once delivery allows).
//!
//! Anything unexpected fails the entry rather than confirming the wrong one: a failed entry is
//! retried by the outbox, a wrongly confirmed one would be lost.

use std::collections::{HashMap, HashSet, VecDeque};

use tokio::sync::oneshot;

/// Told `Ok` once the broker has the message (PUBACK; for QoS 0, written to the socket).
pub type Waiter = oneshot::Sender<Result<(), Unconfirmed>>;

/// Why the broker did not confirm a publish (the outbox retries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unconfirmed {
    #[error("publish tracking out of step; will retry")]
    OutOfStep,
    #[error("packet id in use (broker acks out of order); will retry")]
    PacketIdInUse,
    #[error("the broker started a new session; will retry")]
    NewSession,
    #[error("the connection stopped")]
    ConnectionStopped,
    #[error("no PUBACK within {}", humantime::format_duration(*.0))]
    NoPuback(std::time::Duration),
}

#[derive(Debug)]
struct Queued {
    qos1: bool,
    waiter: Option<Waiter>,
}

#[derive(Debug, Default)]
pub struct PublishTracker {
    /// Publishes handed to rumqttc and not yet written.
    queue: VecDeque<Queued>,
    /// QoS 1 publishes written and not yet acknowledged, by packet id.
    awaiting: HashMap<u16, Option<Waiter>>,
    /// Packet ids whose publish collided and will be written after the id is free.
    collided: HashSet<u16>,
    /// Events that did not fit the queue (should stay 0).
    pub desyncs: u64,
}

fn fail(w: Option<Waiter>, why: Unconfirmed) {
    if let Some(w) = w {
        let _ = w.send(Err(why));
    }
}

impl PublishTracker {
    /// A publish about to be handed to rumqttc.
    pub fn enqueue(&mut self, qos1: bool, waiter: Option<Waiter>) {
        self.queue.push_back(Queued { qos1, waiter });
    }

    /// Takes back the entry just enqueued (rumqttc refused the request).
    pub fn unqueue_last(&mut self) -> Option<Waiter> {
        self.queue.pop_back().and_then(|q| q.waiter)
    }

    /// Publishes queued, written and not acknowledged, for /metrics and tests.
    pub fn in_flight(&self) -> (usize, usize) {
        (self.queue.len(), self.awaiting.len())
    }

    /// `Outgoing::Publish(pkid)`.
    pub fn on_outgoing_publish(&mut self, pkid: u16) {
        if pkid != 0 {
            if self.collided.remove(&pkid) {
                // The collided publish goes out now; its entry has already failed.
                self.awaiting.insert(pkid, None);
                return;
            }
            if self.awaiting.contains_key(&pkid) {
                return; // a re-send after reconnect
            }
        }
        let Some(q) = self.queue.pop_front() else {
            self.desyncs += 1;
            return;
        };
        match (q.qos1, pkid) {
            (true, 0) | (false, 1..) => {
                self.desyncs += 1;
                fail(q.waiter, Unconfirmed::OutOfStep);
            }
            (true, id) => {
                self.awaiting.insert(id, q.waiter);
            }
            (false, _) => {
                if let Some(w) = q.waiter {
                    let _ = w.send(Ok(()));
                }
            }
        }
    }

    /// `Outgoing::AwaitAck(pkid)`: the next publish collided with an unacknowledged one.
    pub fn on_await_ack(&mut self, pkid: u16) {
        match self.queue.pop_front() {
            Some(q) => fail(q.waiter, Unconfirmed::PacketIdInUse),
            None => self.desyncs += 1,
        }
        self.collided.insert(pkid);
    }

    /// `Incoming::PubAck(pkid)`.
    pub fn on_puback(&mut self, pkid: u16) {
        if let Some(Some(w)) = self.awaiting.remove(&pkid) {
            let _ = w.send(Ok(()));
        }
    }

    /// A CONNACK. `unsent_in_pending`: the publishes rumqttc had moved out of its channel
    /// before this connection (counted before connecting); without a session they are gone.
    pub fn on_session(&mut self, session_present: bool, unsent_in_pending: usize) {
        if session_present {
            return;
        }
        for (_, w) in self.awaiting.drain() {
            fail(w, Unconfirmed::NewSession);
        }
        for _ in 0..unsent_in_pending {
            match self.queue.pop_front() {
                Some(q) => fail(q.waiter, Unconfirmed::NewSession),
                None => break,
            }
        }
        self.collided.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter() -> (Waiter, oneshot::Receiver<Result<(), Unconfirmed>>) {
        oneshot::channel()
    }

    fn outcome(rx: &mut oneshot::Receiver<Result<(), Unconfirmed>>) -> Option<bool> {
        rx.try_recv().ok().map(|r| r.is_ok())
    }

    #[test]
    fn confirms_in_order_by_packet_id() {
        let mut t = PublishTracker::default();
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        t.enqueue(true, Some(a));
        t.enqueue(false, None); // telemetry, QoS 0
        t.enqueue(true, Some(b));
        t.on_outgoing_publish(1);
        t.on_outgoing_publish(0);
        t.on_outgoing_publish(2);
        assert_eq!(outcome(&mut ra), None);
        t.on_puback(2);
        assert_eq!(outcome(&mut rb), Some(true));
        assert_eq!(outcome(&mut ra), None);
        t.on_puback(1);
        assert_eq!(outcome(&mut ra), Some(true));
        assert_eq!(t.in_flight(), (0, 0));
        assert_eq!(t.desyncs, 0);
    }

    #[test]
    fn resent_after_reconnect_with_session() {
        let mut t = PublishTracker::default();
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        t.enqueue(true, Some(a));
        t.on_outgoing_publish(5);
        t.enqueue(true, Some(b)); // queued while the connection drops
        t.on_session(true, 1);
        t.on_outgoing_publish(5); // re-send of a
        t.on_outgoing_publish(6); // b, new
        t.on_puback(5);
        t.on_puback(6);
        assert_eq!(outcome(&mut ra), Some(true));
        assert_eq!(outcome(&mut rb), Some(true));
        assert_eq!(t.desyncs, 0);
    }

    #[test]
    fn new_session_fails_what_rumqttc_dropped() {
        let mut t = PublishTracker::default();
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        let (c, mut rc) = waiter();
        t.enqueue(true, Some(a));
        t.on_outgoing_publish(1); // written, no PUBACK
        t.enqueue(true, Some(b)); // moved to rumqttc's pending by the disconnect
        t.enqueue(true, Some(c)); // still in its channel
        t.on_session(false, 1);
        assert_eq!(outcome(&mut ra), Some(false));
        assert_eq!(outcome(&mut rb), Some(false));
        assert_eq!(outcome(&mut rc), None);
        t.on_outgoing_publish(1); // c gets packet id 1 in the new session
        t.on_puback(1);
        assert_eq!(outcome(&mut rc), Some(true));
        assert_eq!(t.desyncs, 0);
    }

    #[test]
    fn collision_fails_the_new_entry_and_keeps_the_old() {
        let mut t = PublishTracker::default();
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        t.enqueue(true, Some(a));
        t.on_outgoing_publish(3);
        t.enqueue(true, Some(b));
        t.on_await_ack(3);
        assert_eq!(outcome(&mut rb), Some(false));
        t.on_puback(3); // a's ack
        assert_eq!(outcome(&mut ra), Some(true));
        t.on_outgoing_publish(3); // b's late copy: no new entry taken
        t.on_puback(3);
        assert_eq!(t.in_flight(), (0, 0));
        assert_eq!(t.desyncs, 0);
    }

    #[test]
    fn refused_request_is_taken_back_and_mismatches_fail() {
        let mut t = PublishTracker::default();
        let (a, _ra) = waiter();
        t.enqueue(true, Some(a));
        assert!(t.unqueue_last().is_some());
        assert_eq!(t.in_flight(), (0, 0));
        let (b, mut rb) = waiter();
        t.enqueue(true, Some(b));
        t.on_outgoing_publish(0); // a QoS 0 write where a QoS 1 was expected
        assert_eq!(outcome(&mut rb), Some(false));
        t.on_outgoing_publish(0);
        assert_eq!(t.desyncs, 2);
    }
}
