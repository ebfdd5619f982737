//! The work-order store: SQLite, one transaction per change.
//!
//! Every change of a work order writes, in the same transaction, its lifecycle events to the
//! outbox (one entry each, `seq` 1, 2, ... per work order, with a delivery row per registered
//! notifier) and, for rule triggers, the rule engine's state rows. A crash therefore never
//! leaves a work order changed without its notification, or the engine's memory of a firing
//! without the work order it raised.
//!
//! The store is synchronous and owned by one thread; async code reaches it through
//! [`super::handle::StoreHandle`]. The outbox half of the store is in [`super::outbox`].

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::de::DeserializeOwned;

use super::apply::apply_one;
use super::lifecycle::{self, Action, LifecycleError};
use super::schema;
use super::types::{ConditionState, EventKind, Status, WorkOrder, WorkOrderEvent};
use crate::rules::types::{Priority, Trigger};

/// `[work_orders] response_times`: how long after opening a work order is due, by priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseTimes {
    pub urgent: Duration,
    pub high: Duration,
    pub normal: Duration,
    pub low: Duration,
}

impl Default for ResponseTimes {
    fn default() -> Self {
        const MIN: u64 = 60;
        const HOUR: u64 = 60 * MIN;
        const DAY: u64 = 24 * HOUR;
        ResponseTimes {
            urgent: Duration::from_secs(30 * MIN),
            high: Duration::from_secs(4 * HOUR),
            normal: Duration::from_secs(2 * DAY),
            low: Duration::from_secs(14 * DAY),
        }
    }
}

impl ResponseTimes {
    pub fn for_priority(&self, p: Priority) -> Duration {
        match p {
            Priority::Urgent => self.urgent,
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
        }
    }
}

/// What can go wrong in the store. The API maps `NotFound` to 404, `Lifecycle` to 409 and
/// `NoteRequired` to 422; the rest are 500s.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("work order {0} not found")]
    NotFound(i64),
    #[error("a work order that is {} cannot become {}", .from.as_str(), .to.as_str())]
    Lifecycle { from: Status, to: Status },
    #[error("closing a work order that is not resolved cancels it and needs a note")]
    NoteRequired,
    #[error("outbox entry {outbox_id} has no delivery for notifier {notifier:?}")]
    NoDelivery { outbox_id: i64, notifier: String },
    #[error(
        "the work-order database has schema version {found}, newer than this facilityd knows ({known}): \
         run a newer facilityd, or restore a backup written by this one"
    )]
    NewerSchema { found: u32, known: u32 },
    #[error("work-order database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("work-order store: {0}")]
    Io(#[from] std::io::Error),
    #[error("work-order record cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// The store's thread has stopped (see `StoreHandle`).
    #[error("the work-order store has stopped")]
    Closed,
}

impl From<LifecycleError> for StoreError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::NotAllowed { from, to } => StoreError::Lifecycle { from, to },
            LifecycleError::NoteRequired => StoreError::NoteRequired,
        }
    }
}

/// `GET /api/v1/work-orders?status=&asset=&priority=`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    /// Any of these statuses (all when `None`).
    pub status: Option<Vec<Status>>,
    pub asset: Option<String>,
    pub priority: Option<Priority>,
    pub limit: Option<usize>,
}

/// The work-order database. Synchronous; one owner (see `StoreHandle`).
pub struct WorkOrderStore {
    pub(super) conn: Connection,
    response_times: ResponseTimes,
    /// Bumped whenever deliveries become due (new outbox entries, dead letters retried).
    pub(super) outbox_writes: u64,
}

impl std::fmt::Debug for WorkOrderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkOrderStore")
            .field("path", &self.conn.path())
            .field("response_times", &self.response_times)
            .finish()
    }
}

/// The columns of a work order, in the order [`read_work_order`] expects.
pub(super) const WO_COLUMNS: &str = "id, key, asset, site, building, floor, device_type, rule, kind, priority, \
     title, description, status, condition, opened_at, acknowledged_at, condition_cleared_at, \
     resolved_at, closed_at, due_at, occurrences, last_triggered_at, flapping, evidence, \
     acknowledged_by, resolved_by, closed_by, note, last_seq";

impl WorkOrderStore {
    /// Opens (creating the file if needed, not its directory) and migrates the database.
    pub fn open(path: &Path, response_times: ResponseTimes) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let _mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        // FULL: a committed work order (and its outbox entry) survives a power cut, not only
        // a process crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        schema::migrate(&mut conn)?;
        Ok(WorkOrderStore {
            conn,
            response_times,
            outbox_writes: 0,
        })
    }

    /// A store over a connection opened elsewhere (read-only, in `period`), as is.
    pub(super) fn from_connection(conn: Connection, response_times: ResponseTimes) -> Self {
        WorkOrderStore {
            conn,
            response_times,
            outbox_writes: 0,
        }
    }

    pub fn response_times(&self) -> ResponseTimes {
        self.response_times
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        schema::current_version(&self.conn)
    }

    /// Changes whenever deliveries may have become due (new outbox entries, retried dead
    /// letters): the store's owner wakes the notifiers when it moves.
    pub fn outbox_writes(&self) -> u64 {
        self.outbox_writes
    }

    /// Applies one rule trigger: the work-order change, its outbox entries and the engine's
    /// state rows for that trigger (`(rule, asset, state)`, see [`Self::save_rule_states`]), in
    /// one transaction. Returns the events written (none when nothing changed).
    pub fn apply(
        &mut self,
        trigger: &Trigger,
        rule_states: &[(String, String, serde_json::Value)],
    ) -> Result<Vec<WorkOrderEvent>, StoreError> {
        self.apply_batch(std::slice::from_ref(trigger), rule_states)
    }

    /// Applies several triggers, in order, and the engine's state rows that go with them, in
    /// one transaction: either all of them are recorded or none (the engine state never says
    /// "fired" for a trigger that was not recorded).
    pub fn apply_batch(
        &mut self,
        triggers: &[Trigger],
        rule_states: &[(String, String, serde_json::Value)],
    ) -> Result<Vec<WorkOrderEvent>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut events = Vec::new();
        for trigger in triggers {
            events.extend(apply_one(&tx, trigger, &self.response_times)?);
        }
        put_rule_states(&tx, rule_states)?;
        tx.commit()?;
        self.outbox_writes += events.len() as u64;
        Ok(events)
    }

    /// open -> acknowledged.
    pub fn acknowledge(
        &mut self,
        id: i64,
        by: Option<&str>,
        note: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(WorkOrder, Vec<WorkOrderEvent>), StoreError> {
        self.manual(id, Action::Acknowledge, by, note, at)
    }

    /// open | acknowledged -> resolved.
    pub fn resolve(
        &mut self,
        id: i64,
        by: Option<&str>,
        note: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(WorkOrder, Vec<WorkOrderEvent>), StoreError> {
        self.manual(id, Action::Resolve, by, note, at)
    }

    /// resolved -> closed (`closed`); open | acknowledged -> closed is a cancellation
    /// (`cancelled`) and needs a note.
    pub fn close(
        &mut self,
        id: i64,
        by: Option<&str>,
        note: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(WorkOrder, Vec<WorkOrderEvent>), StoreError> {
        self.manual(id, Action::Close, by, note, at)
    }

    fn manual(
        &mut self,
        id: i64,
        action: Action,
        by: Option<&str>,
        note: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(WorkOrder, Vec<WorkOrderEvent>), StoreError> {
        let by = by
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from);
        let note = note.map(str::trim).filter(|s| !s.is_empty());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (mut wo, mut seq) = load_work_order(&tx, id)?.ok_or(StoreError::NotFound(id))?;
        let t = lifecycle::transition(wo.status, action, note.is_some())?;
        wo.status = t.to;
        match action {
            Action::Acknowledge => {
                wo.acknowledged_at = Some(at);
                wo.acknowledged_by = by;
            }
            Action::Resolve => {
                wo.resolved_at = Some(at);
                wo.resolved_by = by;
            }
            Action::Close => {
                wo.closed_at = Some(at);
                wo.closed_by = by;
            }
        }
        if let Some(note) = note {
            wo.note = Some(note.to_string());
        }
        let event = emit(&tx, &wo, &mut seq, t.event, at)?;
        update_work_order(&tx, &wo, seq)?;
        tx.commit()?;
        self.outbox_writes += 1;
        Ok((wo, vec![event]))
    }

    pub fn get(&self, id: i64) -> Result<Option<WorkOrder>, StoreError> {
        Ok(load_work_order(&self.conn, id)?.map(|(wo, _)| wo))
    }

    /// Newest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<WorkOrder>, StoreError> {
        let mut sql = format!("SELECT {WO_COLUMNS} FROM work_orders WHERE 1 = 1");
        let mut args: Vec<&str> = Vec::new();
        if let Some(statuses) = &filter.status {
            if statuses.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(" AND status IN (");
            for (i, s) in statuses.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                args.push(s.as_str());
            }
            sql.push(')');
        }
        if let Some(asset) = &filter.asset {
            sql.push_str(" AND asset = ?");
            args.push(asset);
        }
        if let Some(p) = filter.priority {
            sql.push_str(" AND priority = ?");
            args.push(p.as_str());
        }
        sql.push_str(" ORDER BY id DESC");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            read_work_order(r).map(|(wo, _)| wo)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many work orders are not yet resolved (open or acknowledged), by priority, every
    /// priority listed (zeros included), most urgent first.
    pub fn unresolved_by_priority(&self) -> Result<Vec<(Priority, u64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT priority, COUNT(*) FROM work_orders
             WHERE status IN ('open', 'acknowledged') GROUP BY priority",
        )?;
        let counts = stmt
            .query_map([], |r| {
                Ok((col_enum::<Priority>(r, 0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok([
            Priority::Urgent,
            Priority::High,
            Priority::Normal,
            Priority::Low,
        ]
        .into_iter()
        .map(|p| {
            let n = counts.iter().find(|(q, _)| *q == p).map_or(0, |(_, n)| *n);
            (p, n as u64)
        })
        .collect())
    }

    /// The asset's work orders that are not yet resolved, newest first.
    /// Unresolved work orders per asset (for the assets list), counted in SQL.
    pub fn unresolved_counts_by_asset(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT asset, COUNT(*) FROM work_orders WHERE status IN ('open', 'acknowledged') GROUP BY asset")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn unresolved_for_asset(&self, asset: &str) -> Result<Vec<WorkOrder>, StoreError> {
        self.list(&ListFilter {
            status: Some(vec![Status::Open, Status::Acknowledged]),
            asset: Some(asset.to_string()),
            ..ListFilter::default()
        })
    }

    /// A work order's events, in `seq` order.
    pub fn events(&self, work_order_id: i64) -> Result<Vec<WorkOrderEvent>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, work_order_id, seq, event, occurred_at, work_order FROM outbox
             WHERE work_order_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([work_order_id], |r| read_event(r, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Saves rule-engine state rows `(rule, asset, state)` (an upsert; a JSON `null` state
    /// deletes the row). The two strings are the engine's key, stored as given.
    pub fn save_rule_states(
        &mut self,
        states: &[(String, String, serde_json::Value)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        put_rule_states(&tx, states)?;
        tx.commit()?;
        Ok(())
    }

    /// Every saved rule-engine state row, ordered by rule then asset.
    pub fn load_rule_states(&self) -> Result<Vec<(String, String, serde_json::Value)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT rule, asset, state FROM rule_states ORDER BY rule, asset")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, col_json(r, 2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Writes one event of `wo` (its state after the event) to the outbox, with a pending delivery
/// per registered notifier, and advances `seq`.
pub(super) fn emit(
    tx: &Transaction<'_>,
    wo: &WorkOrder,
    seq: &mut u64,
    event: EventKind,
    at: DateTime<Utc>,
) -> Result<WorkOrderEvent, StoreError> {
    *seq += 1;
    tx.execute(
        "INSERT INTO outbox (work_order_id, seq, event, occurred_at, work_order)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            wo.id,
            *seq as i64,
            event.as_str(),
            ts(at),
            serde_json::to_string(wo)?
        ],
    )?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO deliveries (outbox_id, notifier, work_order_id, seq, state)
         SELECT ?1, name, ?2, ?3, 'pending' FROM notifiers WHERE active = 1",
        params![id, wo.id, *seq as i64],
    )?;
    Ok(WorkOrderEvent {
        id,
        work_order_id: wo.id,
        seq: *seq,
        event,
        occurred_at: at,
        work_order: wo.clone(),
    })
}

pub(super) fn find_unresolved(
    conn: &Connection,
    key: &str,
) -> Result<Option<(WorkOrder, u64)>, StoreError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {WO_COLUMNS} FROM work_orders
                 WHERE key = ?1 AND status IN ('open', 'acknowledged')"
            ),
            [key],
            read_work_order,
        )
        .optional()?)
}

fn load_work_order(conn: &Connection, id: i64) -> Result<Option<(WorkOrder, u64)>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {WO_COLUMNS} FROM work_orders WHERE id = ?1"),
            [id],
            read_work_order,
        )
        .optional()?)
}

pub(super) fn insert_work_order(tx: &Transaction<'_>, wo: &WorkOrder) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO work_orders (key, asset, site, building, floor, device_type, rule, kind,
             priority, title, description, status, condition, opened_at, due_at, occurrences,
             last_triggered_at, flapping, evidence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
             ?18, ?19)",
        params![
            wo.key,
            wo.asset,
            wo.site,
            wo.building,
            wo.floor,
            wo.device_type,
            wo.rule,
            wo.kind.as_str(),
            wo.priority.as_str(),
            wo.title,
            wo.description,
            wo.status.as_str(),
            condition_str(wo.condition),
            ts(wo.opened_at),
            ts(wo.due_at),
            wo.occurrences as i64,
            ts(wo.last_triggered_at),
            wo.flapping,
            serde_json::to_string(&wo.evidence)?,
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Writes the fields a work order's lifecycle changes (the rest are fixed when it opens).
pub(super) fn update_work_order(
    tx: &Transaction<'_>,
    wo: &WorkOrder,
    last_seq: u64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE work_orders SET status = ?2, condition = ?3, acknowledged_at = ?4,
             condition_cleared_at = ?5, resolved_at = ?6, closed_at = ?7, occurrences = ?8,
             last_triggered_at = ?9, flapping = ?10, evidence = ?11, acknowledged_by = ?12,
             resolved_by = ?13, closed_by = ?14, note = ?15, last_seq = ?16
         WHERE id = ?1",
        params![
            wo.id,
            wo.status.as_str(),
            condition_str(wo.condition),
            wo.acknowledged_at.map(ts),
            wo.condition_cleared_at.map(ts),
            wo.resolved_at.map(ts),
            wo.closed_at.map(ts),
            wo.occurrences as i64,
            ts(wo.last_triggered_at),
            wo.flapping,
            serde_json::to_string(&wo.evidence)?,
            wo.acknowledged_by,
            wo.resolved_by,
            wo.closed_by,
            wo.note,
            last_seq as i64,
        ],
    )?;
    Ok(())
}

fn put_rule_states(
    tx: &Transaction<'_>,
    states: &[(String, String, serde_json::Value)],
) -> Result<(), StoreError> {
    for (rule, asset, state) in states {
        if state.is_null() {
            tx.execute(
                "DELETE FROM rule_states WHERE rule = ?1 AND asset = ?2",
                params![rule, asset],
            )?;
        } else {
            tx.execute(
                "INSERT INTO rule_states (rule, asset, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (rule, asset) DO UPDATE SET state = excluded.state",
                params![rule, asset, serde_json::to_string(state)?],
            )?;
        }
    }
    Ok(())
}

fn condition_str(c: ConditionState) -> &'static str {
    match c {
        ConditionState::Active => "active",
        ConditionState::Cleared => "cleared",
    }
}

/// A work order row (columns [`WO_COLUMNS`]) and its `last_seq`.
pub(super) fn read_work_order(r: &Row<'_>) -> rusqlite::Result<(WorkOrder, u64)> {
    let wo = WorkOrder {
        id: r.get(0)?,
        key: r.get(1)?,
        asset: r.get(2)?,
        site: r.get(3)?,
        building: r.get(4)?,
        floor: r.get(5)?,
        device_type: r.get(6)?,
        rule: r.get(7)?,
        kind: col_enum(r, 8)?,
        priority: col_enum(r, 9)?,
        title: r.get(10)?,
        description: r.get(11)?,
        status: col_enum(r, 12)?,
        condition: col_enum(r, 13)?,
        opened_at: col_ts(r, 14)?,
        acknowledged_at: col_ts_opt(r, 15)?,
        condition_cleared_at: col_ts_opt(r, 16)?,
        resolved_at: col_ts_opt(r, 17)?,
        closed_at: col_ts_opt(r, 18)?,
        due_at: col_ts(r, 19)?,
        occurrences: r.get::<_, i64>(20)? as u64,
        last_triggered_at: col_ts(r, 21)?,
        flapping: r.get(22)?,
        evidence: col_json(r, 23)?,
        acknowledged_by: r.get(24)?,
        resolved_by: r.get(25)?,
        closed_by: r.get(26)?,
        note: r.get(27)?,
    };
    Ok((wo, r.get::<_, i64>(28)? as u64))
}

/// An outbox row: `id, work_order_id, seq, event, occurred_at, work_order` from column `at`.
pub(super) fn read_event(r: &Row<'_>, at: usize) -> rusqlite::Result<WorkOrderEvent> {
    Ok(WorkOrderEvent {
        id: r.get(at)?,
        work_order_id: r.get(at + 1)?,
        seq: r.get::<_, i64>(at + 2)? as u64,
        event: col_enum(r, at + 3)?,
        occurred_at: col_ts(r, at + 4)?,
        work_order: col_json(r, at + 5)?,
    })
}

/// The stored form of a timestamp (see the schema).
pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn bad_column(i: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e))
}

pub(super) fn col_ts(r: &Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    let s: String = r.get(i)?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| bad_column(i, e))
}

pub(super) fn col_ts_opt(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(_) => col_ts(r, i).map(Some),
    }
}

fn col_json<T: DeserializeOwned>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s).map_err(|e| bad_column(i, e))
}

/// A snake_case enum stored as its name.
pub(super) fn col_enum<T: DeserializeOwned>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    serde_json::from_value(serde_json::Value::String(s)).map_err(|e| bad_column(i, e))
}
