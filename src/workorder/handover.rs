//! Handover baselines (承接查验) as the work-order store keeps them: written once, read back,
//! never changed (the `handovers` table's triggers refuse UPDATE and DELETE, see `schema`).
//!
//! The store keeps the record's canonical JSON text and the SHA-256 computed by its builder
//! (`owners::handover`); it does not interpret either, so that reading a record back can check
//! the text against the hash exactly as it was written.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::store::{StoreError, WorkOrderStore};

/// One handover record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredHandover {
    pub id: i64,
    pub building: String,
    /// RFC 3339, UTC.
    pub recorded_at: String,
    pub recorded_by: String,
    pub note: Option<String>,
    /// The record's canonical JSON, as written.
    pub record: String,
    /// Hex SHA-256 of `record`, as written.
    pub sha256: String,
}

/// A new handover record to store.
#[derive(Debug, Clone)]
pub struct NewHandover<'a> {
    pub building: &'a str,
    pub recorded_at: &'a str,
    pub recorded_by: &'a str,
    pub note: Option<&'a str>,
    pub record: &'a str,
    pub sha256: &'a str,
}

const COLUMNS: &str = "id, building, recorded_at, recorded_by, note, record, sha256";

fn read(r: &Row<'_>) -> rusqlite::Result<StoredHandover> {
    Ok(StoredHandover {
        id: r.get(0)?,
        building: r.get(1)?,
        recorded_at: r.get(2)?,
        recorded_by: r.get(3)?,
        note: r.get(4)?,
        record: r.get(5)?,
        sha256: r.get(6)?,
    })
}

impl WorkOrderStore {
    /// Stores a handover record; returns its id.
    pub fn insert_handover(&mut self, h: &NewHandover<'_>) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO handovers (building, recorded_at, recorded_by, note, record, sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                h.building,
                h.recorded_at,
                h.recorded_by,
                h.note,
                h.record,
                h.sha256
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Every handover record, oldest first.
    pub fn handovers(&self) -> Result<Vec<StoredHandover>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM handovers ORDER BY id"))?;
        let rows = stmt.query_map([], read)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn handover(&self, id: i64) -> Result<Option<StoredHandover>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM handovers WHERE id = ?1"),
                [id],
                read,
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workorder::store::ResponseTimes;

    #[test]
    fn records_are_stored_and_cannot_be_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s =
            WorkOrderStore::open(&dir.path().join("wo.db"), ResponseTimes::default()).unwrap();
        let id = s
            .insert_handover(&NewHandover {
                building: "A",
                recorded_at: "2026-12-08T01:00:00.000Z",
                recorded_by: "Li",
                note: None,
                record: "{\"a\":1}",
                sha256: "00",
            })
            .unwrap();
        let got = s.handover(id).unwrap().unwrap();
        assert_eq!(
            (got.building.as_str(), got.record.as_str()),
            ("A", "{\"a\":1}")
        );
        assert_eq!(s.handovers().unwrap(), vec![got]);
        let upd = s
            .conn
            .execute("UPDATE handovers SET record = '{}' WHERE id = ?1", [id]);
        assert!(
            upd.unwrap_err().to_string().contains("immutable"),
            "the trigger refuses an update"
        );
        let del = s.conn.execute("DELETE FROM handovers", []);
        assert!(del.unwrap_err().to_string().contains("immutable"));
        assert!(s.handover(id + 1).unwrap().is_none());
    }
}
