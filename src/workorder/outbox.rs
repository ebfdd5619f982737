//! The outbox half of the store: each lifecycle event is an outbox entry with one delivery row
//! per notifier registered when it was written. A notifier delivers its rows in order per work
//! order: an earlier event of the same work order that is not yet delivered (pending, or dead
//! until retried) holds back the later ones. Delivery is at least once: a row is marked
//! delivered only after the notifier's peer confirmed it.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::store::{StoreError, WorkOrderStore, col_enum, col_ts_opt, read_event, ts};
use super::types::{EventKind, WorkOrderEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet (possibly waiting for a retry).
    Pending,
    /// Confirmed by the peer, or skipped because the notifier does not want the event.
    Delivered,
    /// Refused for good (a permanent 4xx): held until `POST /api/v1/outbox/{id}/retry`.
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
}

/// A delivery state that is not one of pending, delivered or dead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown delivery state {0:?}: expected pending, delivered or dead")]
pub struct UnknownDeliveryState(pub String);

impl FromStr for DeliveryState {
    type Err = UnknownDeliveryState;
    fn from_str(s: &str) -> Result<Self, UnknownDeliveryState> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "dead" => Ok(DeliveryState::Dead),
            _ => Err(UnknownDeliveryState(s.to_string())),
        }
    }
}

/// An event due for delivery to one notifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub event: WorkOrderEvent,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// One delivery row, for `GET /api/v1/outbox`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxRow {
    pub outbox_id: i64,
    pub work_order_id: i64,
    pub seq: u64,
    pub idempotency_key: String,
    pub event: EventKind,
    pub occurred_at: DateTime<Utc>,
    pub notifier: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A pending delivery whose work order has no earlier event still undelivered to that notifier.
const HEAD_OF_ITS_WORK_ORDER: &str = "NOT EXISTS (
    SELECT 1 FROM deliveries e
    WHERE e.notifier = d.notifier AND e.work_order_id = d.work_order_id
      AND e.seq < d.seq AND e.state <> 'delivered')";

impl WorkOrderStore {
    /// Sets the notifiers that outbox entries are written for from now on: these are (re)activated,
    /// any other is deactivated (its undelivered rows are kept, and resume if it comes back,
    /// but no longer count in [`Self::outbox`] and [`Self::outbox_backlog`]). Entries written
    /// before a notifier was registered are not delivered to it.
    pub fn register_notifiers(&mut self, names: &[String]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("UPDATE notifiers SET active = 0", [])?;
        for name in names {
            tx.execute(
                "INSERT INTO notifiers (name, active) VALUES (?1, 1)
                 ON CONFLICT (name) DO UPDATE SET active = 1",
                [name],
            )?;
        }
        tx.commit()?;
        // A notifier that comes back may have rows waiting.
        self.outbox_writes += 1;
        Ok(())
    }

    /// The notifiers registered now.
    pub fn notifiers(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM notifiers WHERE active = 1 ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deliveries due for `notifier` at `now`: at most one per work order (the oldest one not
    /// yet delivered, when it is pending and its retry time has come), oldest entries first.
    pub fn next_deliveries(
        &self,
        notifier: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT d.attempts, o.id, o.work_order_id, o.seq, o.event, o.occurred_at, o.work_order
             FROM deliveries d JOIN outbox o ON o.id = d.outbox_id
             WHERE d.notifier = ?1 AND d.state = 'pending'
               AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?2)
               AND {HEAD_OF_ITS_WORK_ORDER}
             ORDER BY d.outbox_id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![notifier, ts(now), limit.min(i64::MAX as usize) as i64],
            |r| {
                Ok(Delivery {
                    attempts: r.get(0)?,
                    event: read_event(r, 1)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the earliest delivery of `notifier` waiting for a retry is due (`None`: nothing
    /// waits for a retry; a dead letter waits for the API, not for time).
    pub fn next_retry_at(&self, notifier: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT MIN(d.next_attempt_at) FROM deliveries d
             WHERE d.notifier = ?1 AND d.state = 'pending' AND d.next_attempt_at IS NOT NULL
               AND {HEAD_OF_ITS_WORK_ORDER}"
        ))?;
        Ok(stmt.query_row([notifier], |r| col_ts_opt(r, 0))?)
    }

    /// The peer confirmed the delivery.
    pub fn mark_delivered(&mut self, outbox_id: i64, notifier: &str) -> Result<(), StoreError> {
        self.mark(
            outbox_id,
            notifier,
            "state = 'delivered', attempts = attempts + 1, last_error = NULL,
             next_attempt_at = NULL, delivered_at = ?3",
            &ts(Utc::now()),
        )
    }

    /// The notifier does not want this event (its `events` or `match` filter): done, without
    /// an attempt.
    pub fn mark_skipped(&mut self, outbox_id: i64, notifier: &str) -> Result<(), StoreError> {
        self.mark(
            outbox_id,
            notifier,
            "state = 'delivered', next_attempt_at = NULL, delivered_at = ?3",
            &ts(Utc::now()),
        )
    }

    /// A retryable failure: try again at `next_attempt_at`.
    pub fn mark_retry(
        &mut self,
        outbox_id: i64,
        notifier: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?3, next_attempt_at = ?4
                 WHERE outbox_id = ?1 AND notifier = ?2 AND state = 'pending'",
                params![outbox_id, notifier, error, ts(next_attempt_at)],
            )
            .map_err(StoreError::from)
            .and_then(|n| self.check_marked(n, outbox_id, notifier))
    }

    /// A permanent failure: the delivery is dead until [`Self::retry_dead`], and holds back the
    /// later events of its work order for this notifier.
    pub fn mark_dead(
        &mut self,
        outbox_id: i64,
        notifier: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        self.mark(
            outbox_id,
            notifier,
            "state = 'dead', attempts = attempts + 1, last_error = ?3, next_attempt_at = NULL",
            error,
        )
    }

    fn mark(
        &mut self,
        outbox_id: i64,
        notifier: &str,
        set: &str,
        arg: &str,
    ) -> Result<(), StoreError> {
        let n = self.conn.execute(
            &format!(
                "UPDATE deliveries SET {set} WHERE outbox_id = ?1 AND notifier = ?2 AND state = 'pending'"
            ),
            params![outbox_id, notifier, arg],
        )?;
        self.check_marked(n, outbox_id, notifier)
    }

    /// Only pending rows are marked; a row that is no longer pending (marked twice) is left
    /// alone, a row that does not exist is an error.
    fn check_marked(
        &self,
        changed: usize,
        outbox_id: i64,
        notifier: &str,
    ) -> Result<(), StoreError> {
        if changed > 0 {
            return Ok(());
        }
        let exists = self
            .conn
            .query_row(
                "SELECT 1 FROM deliveries WHERE outbox_id = ?1 AND notifier = ?2",
                params![outbox_id, notifier],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if exists {
            Ok(())
        } else {
            Err(StoreError::NoDelivery {
                outbox_id,
                notifier: notifier.to_string(),
            })
        }
    }

    /// `POST /api/v1/outbox/{id}/retry`: every dead delivery of the entry becomes pending, due
    /// now. `false` when none was dead.
    pub fn retry_dead(&mut self, outbox_id: i64) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = NULL
             WHERE outbox_id = ?1 AND state = 'dead'",
            [outbox_id],
        )?;
        if n > 0 {
            self.outbox_writes += 1;
        }
        Ok(n > 0)
    }

    /// Delivery rows of the registered notifiers (all states when `state` is `None`), oldest
    /// entries first.
    pub fn outbox(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.id, o.work_order_id, o.seq, o.event, o.occurred_at, d.notifier, d.state,
                    d.attempts, d.last_error, d.next_attempt_at, d.delivered_at
             FROM deliveries d
             JOIN outbox o ON o.id = d.outbox_id
             JOIN notifiers n ON n.name = d.notifier AND n.active = 1
             WHERE ?1 IS NULL OR d.state = ?1
             ORDER BY d.outbox_id, d.notifier LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![
                state.map(DeliveryState::as_str),
                limit.min(i64::MAX as usize) as i64
            ],
            |r| {
                let work_order_id: i64 = r.get(1)?;
                let seq = r.get::<_, i64>(2)? as u64;
                Ok(OutboxRow {
                    outbox_id: r.get(0)?,
                    work_order_id,
                    seq,
                    idempotency_key: format!("{work_order_id}:{seq}"),
                    event: col_enum(r, 3)?,
                    occurred_at: super::store::col_ts(r, 4)?,
                    notifier: r.get(5)?,
                    state: col_enum(r, 6)?,
                    attempts: r.get(7)?,
                    last_error: r.get(8)?,
                    next_attempt_at: col_ts_opt(r, 9)?,
                    delivered_at: col_ts_opt(r, 10)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// For `/metrics`: per registered notifier, how many deliveries are pending and dead
    /// (zeros included).
    pub fn outbox_backlog(&self) -> Result<Vec<(String, DeliveryState, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT n.name, s.state,
                    (SELECT COUNT(*) FROM deliveries d WHERE d.notifier = n.name AND d.state = s.state)
             FROM notifiers n, (SELECT 'pending' AS state UNION ALL SELECT 'dead') s
             WHERE n.active = 1
             ORDER BY n.name, s.state DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, col_enum(r, 1)?, r.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
