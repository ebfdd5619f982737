//! Handover baselines (承接查验) as the work-order store keeps them: written once, read back,
//! never changed (the `handovers` table's triggers refuse UPDATE and DELETE, see `schema`).
//!
//! The store keeps the record's canonical JSON text and the SHA-256 computed by its builder
//! (`owners::handover`); it does not interpret either, so that reading a record back can check
//! the text against the hash exactly as it was written.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

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

/// Hex SHA-256 of `text`: the hash a record is stored with.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl StoredHandover {
    /// The stored text still has the stored hash.
    pub fn verified(&self) -> bool {
        sha256_hex(&self.record).eq_ignore_ascii_case(self.sha256.trim())
    }
}

/// The counters of the handover records, for meter rules with `baseline = "handover"`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandoverCounters {
    /// (asset, counter point) -> its value in the newest record that holds it.
    pub values: HashMap<(String, String), f64>,
    /// Records whose text no longer has their hash: not used.
    pub unverified: Vec<i64>,
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

    /// The counters of every verified record, the newest record winning for each (asset,
    /// counter point). Reads the record's `assets[].counters[]` (`name`, numeric `value`).
    pub fn handover_counters(&self) -> Result<HandoverCounters, StoreError> {
        let mut out = HandoverCounters::default();
        for h in self.handovers()? {
            if !h.verified() {
                out.unverified.push(h.id);
                continue;
            }
            let Ok(rec) = serde_json::from_str::<serde_json::Value>(&h.record) else {
                out.unverified.push(h.id);
                continue;
            };
            let assets = rec["assets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            for a in assets {
                let Some(asset) = a["id"].as_str() else {
                    continue;
                };
                let counters = a["counters"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                for c in counters {
                    if let (Some(name), Some(v)) = (c["name"].as_str(), c["value"].as_f64()) {
                        out.values.insert((asset.to_string(), name.to_string()), v);
                    }
                }
            }
        }
        Ok(out)
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

    #[test]
    fn counters_come_from_the_newest_verified_record_holding_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut s =
            WorkOrderStore::open(&dir.path().join("wo.db"), ResponseTimes::default()).unwrap();
        let rec = |asset: &str, v: f64| {
            format!(
                r#"{{"assets":[{{"counters":[{{"name":"trips_total","value":{v}}}],"id":"{asset}"}}]}}"#
            )
        };
        let mut put = |text: String, sha: Option<&str>| {
            let hash = sha.map_or_else(|| sha256_hex(&text), str::to_string);
            s.insert_handover(&NewHandover {
                building: "A",
                recorded_at: "2026-12-08T01:00:00.000Z",
                recorded_by: "Li",
                note: None,
                record: &text,
                sha256: &hash,
            })
            .unwrap()
        };
        put(rec("EL-1", 100.0), None);
        put(rec("EL-2", 7.0), None);
        put(rec("EL-1", 250.0), None);
        let bad = put(rec("EL-1", 999.0), Some("00"));
        let c = s.handover_counters().unwrap();
        let key = |a: &str| (a.to_string(), "trips_total".to_string());
        assert_eq!(
            c.values.get(&key("EL-1")),
            Some(&250.0),
            "the newest verified"
        );
        assert_eq!(
            c.values.get(&key("EL-2")),
            Some(&7.0),
            "a record without EL-1 keeps EL-2's"
        );
        assert_eq!(c.unverified, [bad]);
    }
}
