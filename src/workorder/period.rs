//! Reading the store for a period (the owners' report), and opening it read-only: the report
//! command reads the daemon's database while the daemon runs (SQLite WAL lets a reader in
//! beside the writer), and must neither migrate nor write it.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};

use super::schema;
use super::store::{ResponseTimes, StoreError, WO_COLUMNS, WorkOrderStore, read_work_order, ts};
use super::types::WorkOrder;

/// Why the database cannot be read for a report.
#[derive(Debug, thiserror::Error)]
pub enum ReadOnlyError {
    #[error("no work-order database at {0}: start the daemon once (facilityd run) to create it")]
    Missing(String),
    #[error(
        "the work-order database {path} has schema version {found}, older than this facilityd \
         reads ({known}): start the daemon (facilityd run) once to upgrade it"
    )]
    OlderSchema {
        path: String,
        found: u32,
        known: u32,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WorkOrderStore {
    /// Opens an existing database for reading only: no migration, no write, not even the
    /// journal mode (the daemon set WAL). A database of another schema version is refused.
    pub fn open_read_only(
        path: &Path,
        response_times: ResponseTimes,
    ) -> Result<Self, ReadOnlyError> {
        if !path.exists() {
            return Err(ReadOnlyError::Missing(path.display().to_string()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(StoreError::from)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(StoreError::from)?;
        let has_versions: bool = conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .map_err(StoreError::from)?;
        let found = if has_versions {
            schema::current_version(&conn)?
        } else {
            0
        };
        if found > schema::CURRENT_VERSION {
            return Err(StoreError::NewerSchema {
                found,
                known: schema::CURRENT_VERSION,
            }
            .into());
        }
        if found < schema::CURRENT_VERSION {
            return Err(ReadOnlyError::OlderSchema {
                path: path.display().to_string(),
                found,
                known: schema::CURRENT_VERSION,
            });
        }
        Ok(WorkOrderStore::from_connection(conn, response_times))
    }

    /// The work orders that can count in a report of `[from, as_of)`: opened before `as_of`,
    /// and opened, due, resolved or closed at or after `from`, or still unresolved then (the
    /// report decides how each counts). Oldest first.
    pub fn work_orders_for_period(
        &self,
        from: DateTime<Utc>,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<WorkOrder>, StoreError> {
        // Timestamps are stored as fixed-width UTC RFC 3339 text: text order is time order.
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {WO_COLUMNS} FROM work_orders
             WHERE opened_at < ?2
               AND (opened_at >= ?1 OR due_at >= ?1 OR resolved_at IS NULL
                    OR resolved_at >= ?1 OR (closed_at IS NOT NULL AND closed_at >= ?1))
             ORDER BY opened_at, id"
        ))?;
        let rows = stmt.query_map([ts(from), ts(as_of)], |r| {
            read_work_order(r).map(|(wo, _)| wo)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_old_database_gets_a_clear_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wo.sqlite");
        let e = WorkOrderStore::open_read_only(&path, ResponseTimes::default()).unwrap_err();
        assert!(e.to_string().contains("start the daemon once"), "{e}");
        assert!(!path.exists(), "a read-only open created the file");

        // Version 1 only: the report refuses it instead of migrating it.
        let mut conn = Connection::open(&path).unwrap();
        schema::migrate(&mut conn).unwrap();
        conn.execute("DELETE FROM schema_version WHERE version > 1", [])
            .unwrap();
        drop(conn);
        let e = WorkOrderStore::open_read_only(&path, ResponseTimes::default()).unwrap_err();
        assert!(
            matches!(e, ReadOnlyError::OlderSchema { found: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("start the daemon"), "{e}");
    }

    #[test]
    fn a_read_only_store_reads_beside_a_writer_and_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wo.sqlite");
        let _writer = WorkOrderStore::open(&path, ResponseTimes::default()).unwrap();
        let mut reader = WorkOrderStore::open_read_only(&path, ResponseTimes::default()).unwrap();
        let t = Utc::now();
        assert!(reader.work_orders_for_period(t, t).unwrap().is_empty());
        assert!(reader.save_rule_states(&[]).is_ok()); // an empty transaction writes nothing
        let e = reader
            .save_rule_states(&[("r".into(), "a".into(), serde_json::json!(1))])
            .unwrap_err();
        assert!(e.to_string().contains("readonly"), "{e}");
    }
}
