//! The work-order database schema and its migrations.
//!
//! Versioned from day one: `schema_version` records each migration applied; migrations run in
//! order, each in its own transaction; a database written by a newer facilityd (a version this
//! code does not know) is refused rather than guessed at.

use rusqlite::{Connection, TransactionBehavior};

use super::store::StoreError;

/// The ordered migrations; version N is `MIGRATIONS[N - 1]`. Append only: never edit one that
/// has shipped.
pub const MIGRATIONS: &[&str] = &[V1, V2];

/// The schema version this code writes.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// Timestamps are RFC 3339 text in UTC with nanoseconds (`2024-05-01T08:00:00.000000000Z`):
/// readable in the sqlite3 shell, exact, and fixed-width so that text order is time order.
const V1: &str = r#"
CREATE TABLE work_orders (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    key                  TEXT NOT NULL,             -- site/asset/rule
    asset                TEXT NOT NULL,
    site                 TEXT,
    building             TEXT,
    floor                TEXT,
    device_type          TEXT NOT NULL,
    rule                 TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    priority             TEXT NOT NULL CHECK (priority IN ('urgent', 'high', 'normal', 'low')),
    title                TEXT NOT NULL,
    description          TEXT,
    status               TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved', 'closed')),
    condition            TEXT NOT NULL CHECK (condition IN ('active', 'cleared')),
    opened_at            TEXT NOT NULL,
    acknowledged_at      TEXT,
    condition_cleared_at TEXT,
    resolved_at          TEXT,
    closed_at            TEXT,
    due_at               TEXT NOT NULL,
    occurrences          INTEGER NOT NULL,
    last_triggered_at    TEXT NOT NULL,
    flapping             INTEGER NOT NULL DEFAULT 0,
    evidence             TEXT NOT NULL,             -- JSON
    acknowledged_by      TEXT,
    resolved_by          TEXT,
    closed_by            TEXT,
    note                 TEXT,
    last_seq             INTEGER NOT NULL DEFAULT 0 -- seq of its latest event
);
-- At most one work order per key is not yet resolved.
CREATE UNIQUE INDEX work_orders_one_unresolved ON work_orders (key)
    WHERE status IN ('open', 'acknowledged');
CREATE INDEX work_orders_asset ON work_orders (asset, status);
CREATE INDEX work_orders_status ON work_orders (status, priority);

-- One row per lifecycle event, written in the transaction of the change.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    work_order_id INTEGER NOT NULL REFERENCES work_orders (id),
    seq           INTEGER NOT NULL,
    event         TEXT NOT NULL,
    occurred_at   TEXT NOT NULL,
    work_order    TEXT NOT NULL,                    -- JSON: the record after this event
    UNIQUE (work_order_id, seq)
);

-- The notifiers deliveries are written for; `active` = registered by the running config.
CREATE TABLE notifiers (
    name   TEXT PRIMARY KEY,
    active INTEGER NOT NULL DEFAULT 1
);

-- One row per outbox entry per notifier registered when the entry was written.
CREATE TABLE deliveries (
    outbox_id       INTEGER NOT NULL REFERENCES outbox (id),
    notifier        TEXT NOT NULL REFERENCES notifiers (name),
    work_order_id   INTEGER NOT NULL,               -- copied from outbox: per-work-order order
    seq             INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at TEXT,                           -- NULL: due now
    delivered_at    TEXT,
    PRIMARY KEY (outbox_id, notifier)
);
-- Per-work-order order (is an earlier event still undelivered?) and the queue of due ones.
CREATE INDEX deliveries_by_work_order ON deliveries (notifier, work_order_id, seq);
CREATE INDEX deliveries_by_state ON deliveries (notifier, state, next_attempt_at);

-- The rule engine's state (timers, windows, baselines, flap history), opaque JSON.
CREATE TABLE rule_states (
    rule       TEXT NOT NULL,
    asset      TEXT NOT NULL,
    state      TEXT NOT NULL,
    PRIMARY KEY (rule, asset)
);
"#;

/// The owners' evidence: availability history, counters per day, handover baselines.
const V2: &str = r#"
-- Each asset's state over time, as spans that never cross a local midnight (`day` is the
-- date in `gateway.timezone`), so that seconds per asset and day are one GROUP BY. Time no
-- span covers is time the gateway did not monitor the asset (it was not running, or the
-- asset was not configured or not heard from yet); it is never counted as available.
CREATE TABLE availability_spans (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    asset    TEXT NOT NULL,
    day      TEXT NOT NULL,                         -- YYYY-MM-DD, gateway time zone
    state    TEXT NOT NULL CHECK (state IN ('available', 'unavailable', 'offline')),
    start_ms INTEGER NOT NULL,                      -- Unix milliseconds
    end_ms   INTEGER NOT NULL CHECK (end_ms >= start_ms)
);
CREATE INDEX availability_spans_by_day ON availability_spans (day, asset);
CREATE INDEX availability_spans_by_end ON availability_spans (end_ms);

-- Each counter point per asset and local day: the first and last good value, and the
-- increase over the day (the sum of its rises; after a reset the new value counts from 0).
CREATE TABLE counter_days (
    asset       TEXT NOT NULL,
    point       TEXT NOT NULL,
    day         TEXT NOT NULL,                      -- YYYY-MM-DD, gateway time zone
    first_value REAL NOT NULL,
    first_ms    INTEGER NOT NULL,
    last_value  REAL NOT NULL,
    last_ms     INTEGER NOT NULL,
    increase    REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (asset, point, day)
);

-- Handover baselines: written once, never changed (the triggers refuse it).
CREATE TABLE handovers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    building    TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    note        TEXT,
    record      TEXT NOT NULL,                      -- canonical JSON
    sha256      TEXT NOT NULL                       -- hex SHA-256 of `record`
);
CREATE TRIGGER handovers_no_update BEFORE UPDATE ON handovers
BEGIN SELECT RAISE(ABORT, 'handover records are immutable'); END;
CREATE TRIGGER handovers_no_delete BEFORE DELETE ON handovers
BEGIN SELECT RAISE(ABORT, 'handover records are immutable'); END;
"#;

/// Brings the database up to [`CURRENT_VERSION`]; a no-op when it is there already.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
         )",
    )?;
    loop {
        // IMMEDIATE: a second process opening the same file waits instead of racing us.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = current_version(&tx)?;
        if version > CURRENT_VERSION {
            return Err(StoreError::NewerSchema {
                found: version,
                known: CURRENT_VERSION,
            });
        }
        if version == CURRENT_VERSION {
            return Ok(());
        }
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [version + 1],
        )?;
        tx.commit()?;
    }
}

/// The highest migration applied (0 for a fresh file).
pub fn current_version(conn: &Connection) -> Result<u32, StoreError> {
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?)
}
